#!/usr/bin/env python
"""Benchmark embedding compression on all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (CPU): accuracy cost
and embedding bytes of vocabulary pruning, int4 per-group embeddings, and both.

The word embeddings are 11.7M of the teacher's 22.7M parameters (30522 x 384). One run:

1. fine-tunes all-MiniLM-L6-v2 (``students.pretrained(None, num_labels=2)``) for ``--epochs`` on the
   first ``--train-rows`` of the stratified training split (the data, model and training loop of
   ``scripts/bench_distillation.py``, imported from it): the fp32 baseline;
2. compresses only its word embeddings, each variant written with :func:`lit_opt.export` and read
   back with :func:`lit_opt.load` (``kernel="reference"``: fp32 math on the dequantized codes, so the
   accuracy cost is the compression's alone):

   - vocabulary pruning (:func:`lit_opt.prune_vocabulary`) to the token ids of the whole training
     split, and to those of the fine-tuning subset, plus the special tokens; other ids read UNK;
   - int8 per-channel and int4 per-group (group 128) post-training quantization of the embeddings
     (``export(quantization=...)``);
   - pruning followed by int4 quantization;
   - with ``--qat``: pruning before a second fine-tune with ``QATCallback`` (int4, group 128) on the
     pruned embeddings, same steps and batches as the baseline (the recipe's path);

3. evaluates each on the held-out test split: accuracy, predictions changed vs the baseline, the
   bytes of the embedding tensors in ``model.safetensors`` (table, scales, remap) and the whole file.

Vocabulary pruning after fine-tuning gives the model pruning before it would give: rows of the
training tokens train the same either way (only weight decay touches the unused rows).

Usage::

    nice -n 5 python scripts/bench_embeddings.py --qat    # ~14 minutes on 2 shared cores
    nice -n 5 python scripts/bench_embeddings.py --quick  # smoke run (~3 minutes)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from bench_distillation import Classifier, fit, make_data, pct, predictions  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch import nn  # noqa: E402

import lit_opt  # noqa: E402
from lit_opt.data.text_classification import default_tokenizer  # noqa: E402
from lit_opt.distillation import students  # noqa: E402
from lit_opt.inference.measure import environment, loadavg  # noqa: E402

log = logging.getLogger("bench_embeddings")
WORD = "bert.embeddings.word_embeddings"
EMBEDDINGS = ["*word_embeddings"]


def int4(group_size: int) -> dict[str, Any]:
    return {"weight_bits": 4, "granularity": "per_group", "group_size": group_size, "activations": "none"}


INT8 = {"weight_bits": 8, "granularity": "per_channel", "activations": "none"}


def test_predictions(args: argparse.Namespace, model: nn.Module) -> dict[int, tuple[int, int]]:
    """``{example idx: (label, predicted)}`` over the test split."""
    dm = make_data(args)
    dm.setup("test")
    index, labels, predicted = predictions(model, dm.test_dataloader())
    return dict(zip(index, zip(labels, predicted, strict=True), strict=True))


def split_ids(args: argparse.Namespace, split: str, train_rows: int | None = None) -> list[list[int]]:
    """The token ids of every example of ``split`` (the training split cut to ``train_rows`` if given)."""
    dm = make_data(argparse.Namespace(**{**vars(args), "train_rows": train_rows or 10**9}))
    dm.setup("fit")
    return [list(ids) for ids in dm.splits[split]["input_ids"]]


def unk_share(ids: list[list[int]], keep: set[int], special: set[int]) -> tuple[float, float]:
    """Share of the (non-special) tokens, and of the examples with at least one token, outside ``keep``."""
    tokens = sum(1 for row in ids for i in row if i not in special)
    dropped = [sum(1 for i in row if i not in keep) for row in ids]
    return sum(dropped) / tokens, sum(1 for d in dropped if d) / len(ids)


def embedding_bytes(path: Path) -> tuple[int, int]:
    """Bytes of the word-embedding tensors (codes, scales, remap) in the artifact, and of the whole artifact."""
    tensors = load_file(str(path / "model.safetensors"))
    emb = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith(f"{WORD}."))
    total = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return emb, total


def measure(
    args: argparse.Namespace,
    name: str,
    model: nn.Module,
    out: Path,
    quantization: dict[str, Any] | None = None,
    keep: list[int] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (pruned to ``keep`` first, on a copy), load it back, evaluate it on the test split."""
    started = time.perf_counter()
    if keep is not None:
        model = lit_opt.prune_vocabulary(copy.deepcopy(model), keep, unk_token_id=args.unk_id)
    config = None if quantization is None else {**quantization, "targets": EMBEDDINGS}
    path = lit_opt.export(model, out / "artifacts" / name.replace(" ", "_"), quantization=config)
    emb, total = embedding_bytes(path)
    right = test_predictions(args, lit_opt.load(path, kernel="reference"))
    log.info("%s: %.1f s", name, time.perf_counter() - started)
    return {
        "name": name,
        "embedding_bytes": emb,
        "file_bytes": total,
        "rows": keep and len(keep),
        "test": right,
    }


def qat_run(args: argparse.Namespace, keep: list[int], out: Path) -> dict[str, Any]:
    """Prune the pretrained teacher's vocabulary, then fine-tune it like the baseline with int4 QAT on it."""
    L.seed_everything(args.seed, verbose=False)
    model = students.pretrained(None, num_labels=2)
    lit_opt.prune_vocabulary(model, keep, unk_token_id=args.unk_id)
    qat = lit_opt.QATCallback(**int4(128), targets=EMBEDDINGS)
    fit(args, Classifier(model, lr=args.lr), out, callbacks=[qat])
    path = lit_opt.export(model, out / "artifacts" / "pruned_qat_int4_g128")
    emb, total = embedding_bytes(path)
    right = test_predictions(args, lit_opt.load(path, kernel="reference"))
    name = "pruned (train split) + int4 g128 QAT"
    return {"name": name, "embedding_bytes": emb, "file_bytes": total, "rows": len(keep), "test": right}


def markdown(report: dict[str, Any]) -> str:
    s, rows = report["settings"], report["rows"]
    base = rows[0]
    lines = [
        f"## Embedding compression, all-MiniLM-L6-v2 on Rotten Tomatoes ({s['train_rows']} fine-tune rows, "
        f"{s['epochs']} epoch(s) = {report['steps']} steps; {base['test_n']} test rows)",
        "",
        "| variant | kept rows | embedding bytes | x smaller | file bytes | test acc | vs fp32 (pts) | predictions changed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['rows'] or 30522} | {r['embedding_bytes']:,} | "
            f"{base['embedding_bytes'] / r['embedding_bytes']:.1f}x | {r['file_bytes']:,} | {pct(r['test_acc'])} | "
            f"{100 * (r['test_acc'] - base['test_acc']):+.2f} | {r['changed']} |"
        )
    lines += [
        "",
        "| vocabulary kept | kept rows | test tokens -> UNK (of non-special tokens) | test examples with an UNK |",
        "|---|---:|---:|---:|",
    ]
    for v in report["vocabularies"]:
        lines.append(f"| {v['name']} | {v['rows']} | {pct(v['unk_tokens'])} | {pct(v['unk_examples'])} |")
    env = report["env"]
    lines += [
        "",
        "Embedding bytes: the word-embedding tensors in model.safetensors (codes, scales, remap); file bytes: the "
        "whole artifact (the rest of the model stays fp32 here). Accuracies from lit_opt.load(kernel='reference'), "
        f"so only the embedding compression differs. Test accuracy's standard error is ~{pct(report['test_acc_se'])}; "
        "'predictions changed' counts test examples whose predicted class differs from the fp32 model's. "
        f"One seed; the machine is shared (load average {env['loadavg_start']} at start, {env['loadavg']} at end, "
        f"{env['cpu_count']} CPUs, {env['threads']} torch thread). Total wall {report['wall_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench_embeddings"))
    parser.add_argument("--quick", action="store_true", help="smoke run on a few hundred rows")
    parser.add_argument(
        "--train-rows", type=int, default=None, help="fine-tune rows (default 1200; quick 128)"
    )
    parser.add_argument("--test-rows", type=int, default=None, help="test rows (default all; quick 128)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument(
        "--qat", action="store_true", help="add the pruned + int4 QAT fine-tune (doubles the time)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train_rows is None:
        args.train_rows = 128 if args.quick else 1200
    if args.test_rows is None and args.quick:
        args.test_rows = 128
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "lit_opt", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    torch.set_num_threads(args.threads)
    started, loadavg_start = time.perf_counter(), loadavg()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(default_tokenizer())
    args.unk_id = tokenizer.unk_token_id

    log.info("fine-tune the fp32 baseline on %d rows", args.train_rows)
    L.seed_everything(args.seed, verbose=False)
    model = students.pretrained(None, num_labels=2)
    trained = fit(args, Classifier(model, lr=args.lr), out)
    model.eval()

    test_ids = split_ids(args, "test")[: args.test_rows]
    vocabularies = {}
    for label, rows in (("train split", None), ("fine-tune subset", args.train_rows)):
        keep = lit_opt.token_ids_in_use(split_ids(args, "train", rows), special_ids=tokenizer.all_special_ids)
        unk_tokens, unk_examples = unk_share(test_ids, set(keep), set(tokenizer.all_special_ids))
        vocabularies[label] = {
            "name": label,
            "rows": len(keep),
            "keep": keep,
            "unk_tokens": unk_tokens,
            "unk_examples": unk_examples,
        }
    keep = vocabularies["train split"]["keep"]
    rows = [
        measure(args, "fp32", model, out),
        measure(args, "int8 per_channel", model, out, INT8),
        measure(args, "int4 g128", model, out, int4(128)),
        measure(args, "pruned (train split)", model, out, keep=keep),
        measure(args, "pruned (fine-tune subset)", model, out, keep=vocabularies["fine-tune subset"]["keep"]),
        measure(args, "pruned (train split) + int4 g128", model, out, int4(128), keep=keep),
    ]
    if args.qat:
        rows.append(qat_run(args, keep, out))
    base = rows[0]["test"]
    for r in rows:
        right = r.pop("test")
        r["test_acc"] = sum(y == p for y, p in right.values()) / len(right)
        r["test_n"] = len(right)
        r["changed"] = sum(right[i][1] != base[i][1] for i in right)
    acc = rows[0]["test_acc"]
    report: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps": trained["steps"],
        "fit_wall_s": trained["fit_wall_s"],
        "rows": rows,
        "vocabularies": [{k: v for k, v in voc.items() if k != "keep"} for voc in vocabularies.values()],
        "test_acc_se": (acc * (1 - acc) / rows[0]["test_n"]) ** 0.5,
        "env": {**environment(args.threads), "loadavg_start": loadavg_start},
        "wall_s": time.perf_counter() - started,
    }
    text = markdown(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
