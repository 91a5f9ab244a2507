"""Quantization on all-MiniLM-L6-v2 (CPU): inference latency, size and fidelity of each format, and QAT's step cost.

On the classifier (pretrained encoder, a head from a fixed seed) at sequence length ``seq_len``:

- inference rows: fp32 eager, bf16 eager, the ``torch.ao`` dynamic int8 peer, and lit_opt's exported
  int8 (kernels ``auto``, ``int8``, ``reference``) and int4 g32 (kernel ``auto``) artifacts: latency at
  each batch size (median, p90; all rows interleaved round by round), throughput at the largest,
  file size, logit error and top-1 agreement vs fp32 on real tokenized sentences (half padded);
- training rows: a Lightning step (forward + backward + AdamW) at batch 32, plain vs ``QATCallback()``.
"""

import copy
import warnings
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

import lit_opt
from benchmarks.common import Classifier, Clock, classifier, logits, minilm_tokenizer, trainer
from benchmarks.harness import Run, Settings, main, time_models
from lit_opt.export.loader import best_kernel
from lit_opt.inference.measure import Timing, dir_bytes, file_bytes

SETTINGS = dict(
    model="minilm",
    threads=2,
    seq_len=(128, 32),
    batches=([1, 32], [1, 4]),
    repeats=(10, 1),
    repeats_b1=(50, 3),
    warmup=(2, 1),
    train_steps=(8, 3),
)
HELP = {"repeats": "timed rounds at the larger batches", "train_steps": "steps per training run (>= 3)"}
MINIMUM = {"train_steps": (3, "the first 2 steps are warm-up and not timed.")}
SENTENCES = [
    "The film was a quiet triumph, patient and warm from the first scene to the last.",
    "I would not recommend this restaurant; the soup was cold and the service slow.",
    "Quantization stores each weight in eight bits instead of thirty-two.",
    "A gentle rain fell over the harbour while the ferries waited for the tide.",
    "The committee postponed its decision until the budget report is published.",
    "She trained for months and finished the marathon in under three hours.",
    "This phone's battery barely lasts a day, which is frankly disappointing.",
    "Transformers attend to every token, so long inputs cost quadratic time.",
    "The museum's new wing displays sculptures from the early bronze age.",
    "Honestly the sequel was worse than the original in every possible way.",
    "Our team shipped the release on Friday after fixing the last flaky test.",
    "The recipe calls for two cups of flour, a pinch of salt and fresh yeast.",
    "Researchers measured the latency of each model on a small CPU machine.",
    "He forgot his umbrella again and arrived at the office soaked to the bone.",
    "The orchestra played Brahms with a clarity I had never heard before.",
    "Prices rose sharply in the third quarter, surprising most analysts.",
]
INT8 = {"weight_bits": 8, "activations": "dynamic", "granularity": "per_channel"}
INT4 = {"weight_bits": 4, "granularity": "per_group", "group_size": 32, "activations": "none"}


def make_inputs(batch: int, seq: int) -> dict[str, torch.Tensor]:
    """``batch`` rows of real token ids: each sentence repeated to ``seq`` tokens (even rows) or to a length
    in ``[seq/2, seq)`` (odd rows, padded)."""
    tok = minilm_tokenizer()
    ids = torch.full((batch, seq), tok.pad_token_id, dtype=torch.long)
    for row in range(batch):
        body = tok(SENTENCES[row % len(SENTENCES)], add_special_tokens=False)["input_ids"]
        length = seq if row % 2 == 0 else seq // 2 + (row * 13) % (seq // 2)
        tokens = [tok.cls_token_id] + body * (seq // len(body) + 1)
        ids[row, :length] = torch.tensor(tokens[: length - 1] + [tok.sep_token_id])
    return {"input_ids": ids, "attention_mask": (ids != tok.pad_token_id).long()}


def variants(base: nn.Module, work: Any) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """Each inference row: its model, and its file size (and how that was measured)."""
    rows: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
    for name, model in (("fp32", base), ("bf16", copy.deepcopy(base).to(torch.bfloat16).eval())):
        model.save_pretrained(str(work / name), safe_serialization=True)
        size = file_bytes(work / name / "model.safetensors")
        rows[name] = (model, {"bytes": size, "size_how": "save_pretrained model.safetensors"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = torch.ao.quantization.quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)
    torch.save(ao.state_dict(), work / "torch_ao_int8.pt")
    how = "torch.save(state_dict) (packed int8 Linear params; embeddings stay fp32)"
    size = {"bytes": file_bytes(work / "torch_ao_int8.pt"), "size_how": how}
    rows["torch.ao dynamic int8"] = (ao.eval(), size)
    int8 = lit_opt.export(base, work / "lit_opt_int8", quantization=INT8)
    int4 = lit_opt.export(base, work / "lit_opt_int4_g32", quantization=INT4)
    auto = best_kernel(torch.device("cpu"))
    for label, path, kernel in (
        (f"lit_opt int8 (auto={auto})", int8, "auto"),
        ("lit_opt int8 (kernel=int8)", int8, "int8"),
        ("lit_opt int8 (kernel=reference)", int8, "reference"),
        (f"lit_opt int4 g32 (auto={auto})", int4, "auto"),
    ):
        size = {"bytes": file_bytes(path / "model.safetensors"), "artifact_dir_bytes": dir_bytes(path)}
        info = {**size, "kernel": kernel, "size_how": "model.safetensors"}
        rows[label] = (lit_opt.load(path, kernel=kernel), info)
    return rows


def inference(s: Settings, out: Run, base: nn.Module) -> list[dict[str, Any]]:
    """Each variant's row: fidelity to fp32, latency at each batch size (interleaved), throughput, size."""
    inputs, big = {b: make_inputs(b, s.seq_len) for b in s.batches}, max(s.batches)
    reference = logits(base, inputs[big])
    rows, models = [], {}
    for name, (model, info) in variants(base, out.work_dir).items():
        try:
            got = logits(model, inputs[big])
        except Exception as err:  # the torch.ao peer needs a quantized engine: record why it is missing
            rows.append({"name": name, "available": False, "reason": f"{type(err).__name__}: {err}", **info})
            continue
        models[name] = model
        agree = float((got.argmax(-1) == reference.argmax(-1)).float().mean())
        fidelity = {"max_abs_logit_diff": float((got - reference).abs().max()), "top1_agreement": agree}
        rows.append({"name": name, "available": True, **fidelity, **info})
    by = {r["name"]: r for r in rows}
    for b in s.batches:
        stats = time_models(models, inputs[b], "fp32", s.warmup, s.repeats_b1 if b == 1 else s.repeats)
        for name, t in stats.items():
            by[name].update({f"b{b}_{k}": v for k, v in t.items()} | {f"speedup_b{b}": 1 / t["ratio"]})
    for r in rows:
        r["size_pct_of_fp32"] = 100 * r["bytes"] / by["fp32"]["bytes"]
        if r["available"]:
            r[f"b{big}_throughput_seq_s"] = big / (r[f"b{big}_median_ms"] / 1e3)
    return rows


def inference_cells(r: dict[str, Any], batches: list[int]) -> dict[str, Any]:
    """An inference row of the table: latency, throughput and speedup per batch size, size and fidelity."""
    if not r["available"]:
        return {"row": r["name"], f"b{batches[0]} median ms": f"unavailable: {r['reason']}"}
    big, agree = max(batches), f"{100 * r['top1_agreement']:.1f}%"
    return (
        {"row": r["name"]}
        | {f"b{b} {k} ms": f"{r[f'b{b}_{k}_ms']:.2f}" for b in batches for k in ("median", "p90")}
        | {f"b{big} seq/s": f"{r[f'b{big}_throughput_seq_s']:.1f}"}
        | {f"speedup b{b}": f"{r[f'speedup_b{b}']:.2f}x" for b in batches}
        | {"file bytes": f"{r['bytes']:,}", "% of fp32": f"{r['size_pct_of_fp32']:.1f}%"}
        | {"max abs logit diff": f"{r['max_abs_logit_diff']:.4f}", "top-1 agree": agree}
        | {f"b{big} cpu/wall": f"{r[f'b{big}_cpu_per_wall']:.2f}"}
    )


def step_times(base: nn.Module, qat: bool, s: Settings) -> dict[str, Any]:
    """Median step of a Lightning fit (batch 32 of the tokenized sentences, AdamW lr 1e-5), 2 warm-up steps skipped."""
    inputs = make_inputs(32, s.seq_len)
    examples = [{k: v[j] for k, v in inputs.items()} | {"labels": torch.tensor(j % 2)} for j in range(32)]
    clock = Clock()  # first, so its window includes the QAT hooks
    callbacks = [clock, lit_opt.QATCallback()] if qat else [clock]
    loader = DataLoader(examples * (s.train_steps + 1), batch_size=32)
    trainer(callbacks, max_steps=s.train_steps).fit(Classifier(copy.deepcopy(base).train(), lr=1e-5), loader)
    t = Timing(clock.wall_ms[2:], sum(clock.cpu_ms[2:]) / sum(clock.wall_ms[2:]))
    times = {"step_median_ms": t.median_ms, "step_p90_ms": t.p90_ms, "cpu_per_wall": t.cpu_per_wall}
    return {"qat": qat, "steps": s.train_steps, **times}


def run(s: Settings, out: Run) -> None:
    base = classifier(s.model).eval()
    rows = inference(s, out, base)
    plain, qat = step_times(base, False, s), step_times(base, True, s)
    ratio = qat["step_median_ms"] / plain["step_median_ms"]
    out.rows += [*rows, {"name": "training plain", **plain}]
    out.rows.append({"name": "training QAT", **qat, "qat_over_plain": ratio})
    big = max(s.batches)
    out.table(
        f"Inference ({s.model}, seq {s.seq_len}, {s.threads} threads, rows interleaved)",
        [inference_cells(r, s.batches) for r in rows],
        notes="Sizes: fp32/bf16 = `save_pretrained` model.safetensors; torch.ao = `torch.save(state_dict)` (packed "
        "params, embeddings fp32); lit_opt = the artifact's model.safetensors. Logit diff and top-1 agreement are vs "
        f"fp32 eager on the same {big} tokenized rows (half padded); the head is random (seed 0), so agreement "
        "measures fidelity to fp32, not task accuracy. cpu/wall ~ threads on an idle machine.",
        plot=f"speedup b{big}",
    )
    cells = [
        (name, f"{r['step_median_ms']:.0f}", f"{r['step_p90_ms']:.0f}", f"{r['cpu_per_wall']:.2f}")
        for name, r in (("plain", plain), ("QATCallback() (int8 dynamic)", qat))
    ]
    out.table(
        f"Training step (batch 32, seq {s.seq_len}, AdamW, Lightning, {s.train_steps} steps, first 2 skipped)",
        [*cells, ("ratio QAT/plain", f"{ratio:.3f}", "", "")],
        columns=("run", "step median ms", "step p90 ms", "cpu/wall"),
    )
    by = {r["name"]: r for r in rows}
    lit = next(r for r in rows if r["name"].startswith("lit_opt int8 (auto"))
    kernel, ao = by["lit_opt int8 (kernel=int8)"], by["torch.ao dynamic int8"]
    speed, ms = f"speedup_b{big}", f"b{big}_median_ms"
    measured = f"{lit[speed]:.2f}x ({lit['name']}; kernel=int8 {kernel[speed]:.2f}x)"
    out.goal(f"exported int8 >= 2x fp32 at b{big}", measured, lit[speed] >= 2)
    if ao["available"]:
        b1 = f" (b1 ao/lit_opt {ao['b1_median_ms'] / lit['b1_median_ms']:.2f})" if 1 in s.batches else ""
        versus = f"ao/lit_opt {ao[ms] / lit[ms]:.2f}; kernel=int8 {ao[ms] / kernel[ms]:.2f}"
        measured, passed = f"{lit[ms]:.1f} ms vs {ao[ms]:.1f} ms ({versus}){b1}", lit[ms] <= ao[ms]
    else:
        measured, passed = f"peer unavailable: {ao['reason']}", None
    out.goal(f"int8 no slower than torch.ao at b{big}", measured, passed)
    share = f"{lit['size_pct_of_fp32']:.1f}% ({lit['bytes']:,} / {by['fp32']['bytes']:,} bytes)"
    out.goal("int8 file <= 27% of fp32", share, lit["size_pct_of_fp32"] <= 27)
    out.goal("QAT adds <= 15% to a training step", f"{ratio:.3f}x", ratio <= 1.15)


if __name__ == "__main__":
    raise SystemExit(main(__name__))
