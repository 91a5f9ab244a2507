#!/usr/bin/env python
"""Benchmark length bucketing and the DynamicBatcher on Rotten Tomatoes with all-MiniLM-L6-v2 (CPU).

Two measurements, one run:

1. **Bucketing.** ``TextClassificationDataModule`` (Rotten Tomatoes critic snippets, ``max_length``
   tokens) with and without ``bucketing=True``: padding fraction over the whole training epoch, and
   the time of the first ``--batches`` training steps (forward + backward + AdamW, batch 32) of the
   same fp32 ``BertForSequenceClassification`` (same initial weights, same number of batches), plus
   the forward-only time over those batches. Padding to ``max_length`` is shown for reference.
2. **Dynamic batching.** The model exported with ``lit_opt.export(..., quantization={"weight_bits": 8})``
   and loaded with ``lit_opt.load``; ``--clients`` threads each send ``--requests`` Rotten Tomatoes test
   texts in a closed loop (send, wait, send the next). Served by a ``DynamicBatcher`` and, as the
   batch-1 baseline, by the same batcher with ``max_batch_size=1`` (one request per forward pass,
   the same clients), and by sequential direct calls. Reports p50/p99 latency and throughput.

Both measurements interleave their variants (training steps batch by batch; servers round by round,
``--rounds``), so that the load of a shared machine hits every variant alike.

Usage::

    python scripts/bench_batching.py                  # ~5 minutes on 2 cores
    python scripts/bench_batching.py --quick          # smoke run
    python scripts/bench_batching.py --skip-bucketing --artifact outputs/bench_batching/minilm-int8 \
        --device cuda                                 # serving only, an existing artifact, on a GPU
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import os
import statistics
import sys
import threading
import time
from itertools import islice
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import lit_opt  # noqa: E402
from lit_opt.data import TextClassificationDataModule  # noqa: E402
from lit_opt.data.rotten_tomatoes import rotten_tomatoes_csv  # noqa: E402
from lit_opt.data.text_classification import default_tokenizer  # noqa: E402
from lit_opt.inference import DynamicBatcher  # noqa: E402
from lit_opt.inference.measure import environment, loadavg, percentile  # noqa: E402

log = logging.getLogger("bench_batching")
SEED = 0


def build_model(num_labels: int) -> nn.Module:
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(SEED)
    return BertForSequenceClassification.from_pretrained(default_tokenizer(), num_labels=num_labels).float()


# --------------------------------------------------------------------------- bucketing


def epoch_padding(dm: TextClassificationDataModule) -> float:
    """Padding fraction over every batch of one training epoch (no model needed)."""
    loader = dm.train_dataloader()
    pad = real = 0
    for batch in loader:
        mask = batch["attention_mask"]
        pad += mask.numel() - int(mask.sum())
        real += int(mask.sum())
    return pad / (pad + real)


def timed_steps(
    model: nn.Module, variants: dict[str, list[dict[str, torch.Tensor]]]
) -> dict[str, dict[str, float]]:
    """Per variant, seconds of its training steps (AdamW, one per batch), then of its forward passes.

    Each variant trains its own copy of ``model`` on its own batches; the variants take turns batch by
    batch (one step of each per round), so a change in the load of a shared machine hits them alike.
    """
    names = list(variants)
    models = {name: copy.deepcopy(model).train() for name in names}
    optimizers = {name: torch.optim.AdamW(models[name].parameters(), lr=2e-5) for name in names}

    def step(name: str, batch: dict[str, torch.Tensor]) -> None:
        models[name](**batch).loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    for name in names:
        step(name, variants[name][0])  # untimed warm-up: optimizer state, allocator
    train_s = dict.fromkeys(names, 0.0)
    forward_s = dict.fromkeys(names, 0.0)
    rounds = min(len(batches) for batches in variants.values())
    for i in range(rounds):
        for name in names:
            start = time.perf_counter()
            step(name, variants[name][i])
            train_s[name] += time.perf_counter() - start
    with torch.inference_mode():
        for name in names:
            models[name].eval()
        for i in range(rounds):
            for name in names:
                start = time.perf_counter()
                models[name](**variants[name][i])
                forward_s[name] += time.perf_counter() - start
    return {name: {"train_s": train_s[name], "forward_s": forward_s[name]} for name in names}


def bucketing_rows(args: argparse.Namespace, model: nn.Module) -> list[dict[str, Any]]:
    modules, batches = {}, {}
    for bucketing in (False, True):
        dm = TextClassificationDataModule(
            max_length=args.max_length, batch_size=32, bucketing=bucketing, seed=SEED
        )
        dm.setup("fit")
        torch.manual_seed(SEED)  # the plain loader's shuffling
        modules[bucketing] = dm
        batches[bucketing] = list(islice(iter(dm.train_dataloader()), args.batches))
    times = timed_steps(model, {str(b): batches[b] for b in batches})
    rows = []
    for bucketing, dm in modules.items():
        masks = [b["attention_mask"] for b in batches[bucketing]]
        tokens = sum(int(m.sum()) for m in masks)
        positions = sum(m.numel() for m in masks)
        rows.append(
            {
                "bucketing": bucketing,
                "batches": len(masks),
                "examples": sum(len(m) for m in masks),
                "padding_fraction_measured_batches": 1 - tokens / positions,
                "padding_fraction_epoch": epoch_padding(dm),
                "padded_positions": positions,
                "real_tokens": tokens,
                **times[str(bucketing)],
                "loadavg": loadavg(),
            }
        )
        log.info("bucketing=%s: %s", bucketing, rows[-1])
    lengths = [len(ids) for ids in dm.splits["train"]["input_ids"]]
    rows.append(
        {
            "bucketing": "pad to max_length (reference)",
            "padding_fraction_epoch": 1 - sum(lengths) / (args.max_length * len(lengths)),
            "median_tokens": statistics.median(lengths),
        }
    )
    return rows


# --------------------------------------------------------------------------- dynamic batching


def closed_loop(serve: Any, texts: list[str], clients: int, per_client: int) -> tuple[list[float], float]:
    """``clients`` threads each send ``per_client`` texts one after another: latencies (ms) and seconds."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        mine = [texts[(c * per_client + i) % len(texts)] for i in range(per_client)]
        barrier.wait()
        for text in mine:
            start = time.perf_counter()
            serve(text)
            with lock:
                latencies.append((time.perf_counter() - start) * 1e3)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start


def summarize(latencies: list[float], elapsed: float) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "elapsed_s": elapsed,
        "throughput_req_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "loadavg": loadavg(),
    }


class PassRecorder(nn.Module):
    """Runs ``model`` and, while ``recording``, keeps each forward pass's inputs to replay them alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)  # the batcher's max_length and pad id defaults
        self.recording = False
        self.passes: list[dict[str, torch.Tensor]] = []

    def forward(self, **inputs: torch.Tensor) -> Any:
        if self.recording:
            self.passes.append(inputs)
        return self.model(**inputs)

    def replay_seconds(self) -> float:
        """Seconds the recorded passes take run back to back, alone (outputs taken to the host)."""
        start = time.perf_counter()
        with torch.inference_mode():
            for inputs in self.passes:
                self.model(**inputs).logits.cpu()
        return time.perf_counter() - start


def serving_rows(args: argparse.Namespace, artifact: Path, texts: list[str]) -> list[dict[str, Any]]:
    """Sequential calls, batch-1 serving and the DynamicBatcher, taking turns for ``--rounds`` rounds.

    ``artifact`` (with its tokenizer) is loaded on ``--device``; every client takes its logits to the
    host, so a GPU's asynchronous work is inside the measured latency. Every server is warmed up
    first (a full untimed round creates the oneDNN kernels for the shapes it meets, as a long-running
    server would have done already); then each round runs every server once on the same texts, so a
    change in the load of a shared machine hits them alike. The DynamicBatcher's timed passes are then
    replayed alone: their time is what a batcher without any overhead of its own would take.
    """
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    loaded = lit_opt.load(artifact, device=args.device)
    per_round = max(args.requests // args.rounds, 1)

    def direct(text: str) -> Any:
        inputs = tokenizer(text, truncation=True, max_length=args.max_length, return_tensors="pt")
        with torch.inference_mode():
            return loaded(**inputs.to(args.device))

    def to_host(serve: Any) -> Any:
        return lambda text: serve(text).logits.cpu()

    recorder = PassRecorder(loaded)

    def batcher(max_batch_size: int) -> DynamicBatcher:
        return DynamicBatcher(
            loaded if max_batch_size == 1 else recorder,
            tokenizer=tokenizer,
            max_batch_size=max_batch_size,
            max_wait_ms=args.max_wait_ms,
            max_length=args.max_length,
            pad_to_multiple_of=args.pad_to_multiple_of,
            pass_cost=args.pass_cost,
        )

    wait = f"max_wait_ms={args.max_wait_ms}"
    batchers = {
        f"batch-1 serving (max_batch_size=1, {wait})": batcher(1),
        f"DynamicBatcher (max_batch_size={args.max_batch_size}, {wait})": batcher(args.max_batch_size),
    }
    servers: dict[str, tuple[Any, int]] = {
        "sequential direct calls (batch 1, no queue)": (to_host(direct), 1)
    }
    servers.update({name: (to_host(b), args.clients) for name, b in batchers.items()})
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    elapsed = dict.fromkeys(servers, 0.0)
    try:
        for serve, clients in servers.values():
            closed_loop(serve, texts, clients, per_round * args.clients // clients)  # warm-up
        before = {name: b.stats for name, b in batchers.items()}
        recorder.recording = True
        for r in range(args.rounds):
            for name, (serve, clients) in servers.items():
                got, seconds = closed_loop(serve, texts, clients, per_round * args.clients // clients)
                latencies[name] += got
                elapsed[name] += seconds
            log.info("serving round %d/%d done", r + 1, args.rounds)
        after = {name: b.stats for name, b in batchers.items()}
        recorder.recording = False
    finally:
        for b in batchers.values():
            b.close()
    replay_s = recorder.replay_seconds()
    rows = []
    for name, (_, clients) in servers.items():
        row: dict[str, Any] = {"server": name, "clients": clients}
        if name in batchers:
            served = after[name]["requests"] - before[name]["requests"]
            row["mean_batch_size"] = served / max(after[name]["batches"] - before[name]["batches"], 1)
            if batchers[name].model is recorder:
                row["passes_alone_s"] = replay_s
                row["passes_alone_req_s"] = served / replay_s
        else:
            row["mean_batch_size"] = 1.0
        rows.append({**row, **summarize(latencies[name], elapsed[name])})
        log.info("%s", rows[-1])
    return rows


# --------------------------------------------------------------------------- report


def batched_row(serving: list[dict[str, Any]]) -> dict[str, Any]:
    return next(r for r in serving if r["server"].startswith("DynamicBatcher"))


def markdown(report: dict[str, Any]) -> str:
    a = report["settings"]
    lines: list[str] = []
    if report["bucketing"]:
        lines += [
            f"## Length bucketing (Rotten Tomatoes train split, max_length {a['max_length']}, batch 32, "
            f"first {a['batches']} batches, fp32 all-MiniLM-L6-v2 + 2-label head, {a['threads']} threads)",
            "",
            "| loader | padding (measured batches) | padding (whole epoch) | padded positions | train s | forward s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
    for r in report["bucketing"]:
        if "train_s" not in r:
            lines.append(f"| {r['bucketing']} | | {100 * r['padding_fraction_epoch']:.1f}% | | | |")
            continue
        name = "bucketing=True" if r["bucketing"] else "bucketing=False (random batches, dynamic padding)"
        lines.append(
            f"| {name} | {100 * r['padding_fraction_measured_batches']:.1f}% | {100 * r['padding_fraction_epoch']:.1f}% "
            f"| {r['padded_positions']:,} | {r['train_s']:.1f} | {r['forward_s']:.2f} |"
        )
    s = report["serving"]
    lines += [
        "",
        f"## Dynamic batching ({a['artifact'] or 'lit_opt int8 artifact'}, lit_opt.load kernel auto on {a['device']}, "
        f"{a['threads']} CPU threads; {a['clients']} closed-loop clients x "
        f"{a['requests']} Rotten Tomatoes test texts in {a['rounds']} interleaved rounds; p99 budget {a['p99_budget_ms']} ms)",
        "",
        "| server | clients | requests | throughput req/s | p50 ms | p99 ms | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s:
        lines.append(
            f"| {r['server']} | {r['clients']} | {r['requests']} | {r['throughput_req_s']:.1f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r.get('mean_batch_size', 1.0):.1f} |"
        )
    g = report["goal"]
    lines += [
        "",
        f"Goal: DynamicBatcher throughput >= 3x batch-1 serving with p99 <= {a['p99_budget_ms']} ms: "
        f"{g['speedup']:.2f}x, p99 {g['p99_ms']:.1f} ms -> {'PASS' if g['pass'] else 'FAIL'}. "
        f"The batcher's forward passes, replayed alone, take {g['passes_alone_s']:.2f} s of its "
        f"{batched_row(report['serving'])['elapsed_s']:.2f} s: a batcher with no overhead of its own (and clients that take "
        f"no CPU) would reach {g['passes_alone_speedup']:.2f}x. "
        f"Load average at start {report['env']['loadavg_start']}, at end {report['env']['loadavg']}.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench_batching"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12, help="training batches timed per loader")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=24, help="requests per client, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="rounds in which the servers take turns")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--p99-budget-ms", type=float, default=500.0)
    parser.add_argument("--pad-to-multiple-of", type=int, default=1)
    parser.add_argument("--pass-cost", type=int, help="DynamicBatcher(pass_cost=...); default: its own")
    parser.add_argument(
        "--no-cudnn-attention",
        action="store_true",
        help="turn off torch's cuDNN attention, which builds a plan for every new (batch, length) shape",
    )
    parser.add_argument("--device", default="cpu", help="where the served model runs, e.g. cuda")
    parser.add_argument(
        "--artifact",
        type=Path,
        help="serve this lit_opt artifact (with its tokenizer) instead of exporting one",
    )
    parser.add_argument("--skip-bucketing", action="store_true", help="measure dynamic batching only")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 batches, 4 clients x 4 requests")
    args = parser.parse_args(argv)
    if args.max_batch_size < 2:
        parser.error(
            f"--max-batch-size {args.max_batch_size}: expected 2 or more, to compare with batch-1 serving"
        )
    if args.quick:
        args.batches, args.clients, args.requests, args.rounds = 3, 4, 4, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("lit_opt", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    started = time.perf_counter()
    loadavg_start = loadavg()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    bucketing: list[dict[str, Any]] = []
    artifact = args.artifact
    if not args.skip_bucketing or artifact is None:
        model = build_model(num_labels=2)
        bucketing = [] if args.skip_bucketing else bucketing_rows(args, model)
        if artifact is None:
            tokenizer = AutoTokenizer.from_pretrained(default_tokenizer())
            artifact = lit_opt.export(
                model.eval(), out / "minilm-int8", quantization={"weight_bits": 8}, tokenizer=tokenizer
            )
    # cached by the data module, or made here (offline, carry ~/.cache/lit_opt/rotten_tomatoes.csv along)
    with open(rotten_tomatoes_csv(), newline="", encoding="utf-8") as f:
        all_texts = [row["text"] for row in csv.DictReader(f)]
    serve_texts = all_texts[-args.clients * args.requests :]  # a fixed slice of real snippets
    serving = serving_rows(args, Path(artifact), serve_texts)
    batched = batched_row(serving)
    batch1 = next(r for r in serving if r["server"].startswith("batch-1"))
    speedup = batched["throughput_req_s"] / batch1["throughput_req_s"]
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "bucketing": bucketing,
        "serving": serving,
        "goal": {
            "speedup": speedup,
            "p99_ms": batched["p99_ms"],
            "pass": speedup >= 3.0 and batched["p99_ms"] <= args.p99_budget_ms,
            "passes_alone_s": batched["passes_alone_s"],
            "passes_alone_speedup": batched["passes_alone_req_s"] / batch1["throughput_req_s"],
        },
        "env": {**environment(args.threads), "loadavg_start": loadavg_start},
        "wall_s": time.perf_counter() - started,
    }
    text = markdown(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(text)
    print(text)
    log.info("wrote %s in %.0f s", out / "report.md", report["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
