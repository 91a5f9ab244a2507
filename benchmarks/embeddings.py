"""Embedding compression on all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (CPU): vocabulary pruning, int4.

The classifier fine-tuned for ``epochs`` on ``train_rows`` (``common.epoch_data``) is the fp32 baseline; only
its word embeddings (11.7M of 22.7M parameters) are then compressed, exported and loaded with
``kernel="reference"`` (fp32 math: the accuracy cost is the compression's alone): vocabulary pruning to the
token ids of the training split or of the fine-tuning subset (other ids read UNK), int8 per-channel, int4
per-group, pruning then int4, and with ``--qat`` pruning before an int4 QAT fine-tune. Per variant: test
accuracy, predictions changed vs fp32, the bytes of the embedding tensors and of the whole artifact.
"""

import copy
from typing import Any

from safetensors.torch import load_file
from torch import nn

import lit_opt
from benchmarks import common
from benchmarks.common import pct
from benchmarks.harness import Run, Settings, main
from lit_opt.inference.measure import dir_bytes

SETTINGS = common.EPOCH_SETTINGS | dict(
    train_rows=(1200, 64), test_rows=(0, 32), epochs=1, lr=1e-4, qat=(False, True), group_size=(128, 32)
)
HELP = {"qat": "add the pruned + int4 QAT fine-tune (doubles the time)", "test_rows": "test rows (0: all)"}
EMBEDDINGS = ["*word_embeddings"]
INT8 = {"weight_bits": 8, "granularity": "per_channel", "activations": "none", "targets": EMBEDDINGS}
INT4 = {"weight_bits": 4, "granularity": "per_group", "activations": "none", "targets": EMBEDDINGS}


def measure(s: Settings, out: Run, name: str, model: nn.Module, config: Any = None) -> dict:
    """Export ``model`` (its embeddings quantized with ``config``, if given), load it, evaluate it."""
    path = lit_opt.export(model, out.work_dir / "artifacts" / name.replace(" ", "_"), quantization=config)
    tensors = load_file(str(path / "model.safetensors"))
    words = "bert.embeddings.word_embeddings."
    emb = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith(words))
    test = common.evaluate(s, out.work_dir, lit_opt.load(path, kernel="reference"))
    rows = model.get_input_embeddings().weight.shape[0]
    row = {"name": name, "embedding_bytes": emb, "file_bytes": dir_bytes(path), "rows": rows}
    return row | {k: test[k] for k in ("test_acc", "test_n", "test")}


def run(s: Settings, out: Run) -> None:
    tok = common.minilm_tokenizer()
    model = common.classifier(s.model)
    trained = common.fit_epochs(s, out.work_dir, common.Classifier(model, lr=s.lr))
    model.eval()
    # one data module with the whole training split: the fine-tune subset is its first train_rows
    whole = common.epoch_data(Settings(**{**vars(s), "train_rows": 0}), out.work_dir)
    train_ids, test_ids = ([list(ids) for ids in whole.splits[k]["input_ids"]] for k in ("train", "test"))
    special = set(tok.all_special_ids)
    vocab: dict[str, dict[str, Any]] = {}
    pruned: dict[str, nn.Module] = {}
    for label, rows in (("train split", None), ("fine-tune subset", s.train_rows)):
        keep = lit_opt.token_ids_in_use(train_ids[:rows], special_ids=tok.all_special_ids)
        tokens = sum(1 for row in test_ids for i in row if i not in special)
        dropped = [sum(1 for i in row if i not in set(keep)) for row in test_ids]
        unk = {"unk_tokens": sum(dropped) / tokens, "unk_examples": sum(map(bool, dropped)) / len(test_ids)}
        vocab[label] = {"name": label, "rows": len(keep), "keep": keep, **unk}
        pruned[label] = lit_opt.prune_vocabulary(copy.deepcopy(model), keep, tok.unk_token_id)
    int4, g = {**INT4, "group_size": s.group_size}, f"g{s.group_size}"
    results = [
        measure(s, out, "fp32", model),
        measure(s, out, "int8 per_channel", model, INT8),
        measure(s, out, f"int4 {g}", model, int4),
        measure(s, out, "pruned (train split)", pruned["train split"]),
        measure(s, out, "pruned (fine-tune subset)", pruned["fine-tune subset"]),
        measure(s, out, f"pruned (train split) + int4 {g}", pruned["train split"], int4),
    ]
    if s.qat:
        keep = vocab["train split"]["keep"]
        qat_model = lit_opt.prune_vocabulary(common.classifier(s.model), keep, unk_token_id=tok.unk_token_id)
        qat = lit_opt.QATCallback(**int4)
        common.fit_epochs(s, out.work_dir, common.Classifier(qat_model, lr=s.lr), [qat])
        results.append(measure(s, out, f"pruned (train split) + int4 {g} QAT", qat_model.eval()))
    fp32, base = results[0], results[0]["test"]
    for r in results:
        r["changed"] = sum(p != base[i][1] for i, (_, p) in r.pop("test").items())
    out.rows += results + [{k: v for k, v in v.items() if k != "keep"} for v in vocab.values()]
    out.rows.append({"name": "fine-tune", "steps": trained["steps"], "fit_wall_s": trained["fit_wall_s"]})
    acc = fp32["test_acc"]
    out.table(
        f"Embedding compression ({s.model} on {s.data}: {s.train_rows} fine-tune rows, {s.epochs} epoch(s) = "
        f"{trained['steps']} steps; {fp32['test_n']} test rows)",
        [
            {
                "variant": r["name"],
                "kept rows": r["rows"],
                "embedding bytes": f"{r['embedding_bytes']:,}",
                "x smaller": f"{fp32['embedding_bytes'] / r['embedding_bytes']:.1f}x",
                "file bytes": f"{r['file_bytes']:,}",
                "test acc": pct(r["test_acc"]),
                "vs fp32 (pts)": f"{100 * (r['test_acc'] - acc):+.2f}",
                "predictions changed": r["changed"],
            }
            for r in results
        ],
        notes="Embedding bytes: the word-embedding tensors in model.safetensors (codes, scales, remap); file bytes: "
        "the whole artifact (the rest stays fp32). Accuracies from lit_opt.load(kernel='reference'). One seed: "
        f"standard error ~{pct(common.standard_error(acc, fp32['test_n']))}.",
        plot="x smaller",
    )
    cells = [(v["name"], v["rows"], pct(v["unk_tokens"]), pct(v["unk_examples"])) for v in vocab.values()]
    unk_columns = ("test tokens -> UNK (of non-special tokens)", "test examples with an UNK")
    out.table("Vocabulary kept", cells, columns=("vocabulary kept", "kept rows", *unk_columns))


if __name__ == "__main__":
    raise SystemExit(main(__name__))
