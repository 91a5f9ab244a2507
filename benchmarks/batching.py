"""Length bucketing and the DynamicBatcher on Rotten Tomatoes with all-MiniLM-L6-v2 (CPU, or a GPU for serving).

1. **Bucketing.** The data module (``max_length`` tokens, batch 32) with and without ``bucketing=True``:
   padding over the training epoch, and the time of its first ``batches`` training steps, then forward
   passes, of the same fp32 classifier, the two loaders taking turns batch by batch.
2. **Dynamic batching.** The model exported as int8 (or ``artifact``) loaded on ``device``; ``clients``
   threads each send ``requests`` texts in a closed loop to a ``DynamicBatcher``, to batch-1 serving
   (``max_batch_size=1``, the baseline) and to sequential direct calls, taking turns for ``rounds`` rounds.
   The batcher's forward passes are then replayed alone: what a batcher without overhead would reach.
"""

import copy
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer

import lit_opt
from benchmarks.common import SEED, classifier, csv_rows, minilm_tokenizer, step_call, text_data
from benchmarks.harness import Run, Settings, main
from lit_opt.inference import DynamicBatcher
from lit_opt.inference.measure import percentile, time_round_robin

SETTINGS = dict(
    model="minilm",
    data="rotten_tomatoes",
    threads=2,
    max_length=64,
    batches=(12, 3),
    clients=(32, 4),
    requests=(24, 4),
    rounds=(4, 2),
    max_batch_size=32,
    max_wait_ms=10.0,
    p99_budget_ms=500.0,
    pad_to_multiple_of=1,
    pass_cost=0,
    no_cudnn_attention=False,
    device="cpu",
    artifact="",
    skip_bucketing=False,
)
HELP = {
    "pass_cost": "DynamicBatcher(pass_cost=...); 0: its own",
    "no_cudnn_attention": "turn off cuDNN attention (a plan per new (batch, length) shape)",
    "artifact": "serve this lit_opt artifact (with its tokenizer) instead of exporting one",
    "skip_bucketing": "measure dynamic batching only",
}
MINIMUM = {"max_batch_size": (2, "batch-1 serving is the baseline.")}


def timed_steps(model: nn.Module, variants: dict[str, list[dict[str, torch.Tensor]]]) -> dict[str, dict]:
    """Per variant, seconds of its training steps over its batches (its own copy of ``model``, AdamW, one step
    per batch after an untimed one, the variants taking turns), then of its forward passes likewise."""
    models = {name: copy.deepcopy(model).train() for name in variants}
    optimizers = {name: torch.optim.AdamW(models[name].parameters(), lr=2e-5) for name in variants}
    rounds = min(len(b) for b in variants.values())
    seconds: dict[str, dict[str, float]] = {name: {} for name in variants}
    for key, train in (("train_s", True), ("forward_s", False)):
        optimizer = optimizers if train else dict.fromkeys(variants)  # no optimizer: forward passes
        calls = {n: step_call(models[n].train(train), b[:rounds], optimizer[n]) for n, b in variants.items()}
        with torch.inference_mode(not train):
            for name, timing in time_round_robin(calls, warmup=1, repeats=rounds).items():
                seconds[name][key] = sum(timing.times_ms) / 1e3
    return seconds


def bucketing(s: Settings, out: Run, model: nn.Module) -> None:
    dms, batches = {}, {}
    for bucketed in (False, True):
        dms[bucketed] = text_data(s, out.work_dir, max_length=s.max_length, batch_size=32, bucketing=bucketed)
        torch.manual_seed(SEED)  # the plain loader's shuffling
        batches[bucketed] = list(itertools.islice(iter(dms[bucketed].train_dataloader()), s.batches))
    times = timed_steps(model, {str(b): batches[b] for b in batches})
    cells = []
    for bucketed, dm in dms.items():
        masks = [b["attention_mask"] for b in batches[bucketed]]
        tokens, positions = sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks)
        epoch = [b["attention_mask"] for b in dm.train_dataloader()]
        padding = 1 - sum(int(m.sum()) for m in epoch) / sum(m.numel() for m in epoch)
        measured = 1 - tokens / positions
        row = {"bucketing": bucketed, "batches": len(masks), "padding_fraction_measured_batches": measured}
        row |= {"padding_fraction_epoch": padding, "padded_positions": positions, "real_tokens": tokens}
        out.rows.append(row | times[str(bucketed)])
        loader = "bucketing=True" if bucketed else "bucketing=False (random batches, dynamic padding)"
        cells.append((loader, f"{100 * measured:.1f}%", f"{100 * padding:.1f}%", f"{positions:,}"))
        cells[-1] += (f"{out.rows[-1]['train_s']:.1f}", f"{out.rows[-1]['forward_s']:.2f}")
    lengths = [len(ids) for ids in dms[True].splits["train"]["input_ids"]]
    padded = 1 - sum(lengths) / (s.max_length * len(lengths))
    out.rows.append({"bucketing": "pad to max_length (reference)", "padding_fraction_epoch": padded})
    cells.append(("pad to max_length (reference)", "", f"{100 * padded:.1f}%", "", "", ""))
    padding_columns = ("padding (measured batches)", "padding (whole epoch)", "padded positions")
    out.table(
        f"Length bucketing ({s.data} train split, max_length {s.max_length}, batch 32, first {s.batches} batches, "
        f"fp32 {s.model} + 2-label head, {s.threads} threads)",
        cells,
        plot="train s",
        columns=("loader", *padding_columns, "train s", "forward s"),
    )


def closed_loop(serve: Any, texts: list[str], clients: int, requests: int) -> tuple[list[float], float]:
    """``clients`` threads send ``requests`` texts in all, each the next once the last is answered (logits taken
    to the host): latencies (ms) and seconds."""
    latencies: list[float] = []
    lock, barrier = threading.Lock(), threading.Barrier(clients + 1)
    per_client = requests // clients

    def client(c: int) -> None:
        mine = [texts[(c * per_client + i) % len(texts)] for i in range(per_client)]
        barrier.wait()
        for text in mine:
            start = time.perf_counter()
            serve(text).logits.cpu()
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


class PassRecorder(nn.Module):
    """Runs ``model`` and, while ``recording``, keeps each forward pass's inputs to replay them alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, getattr(model, "config", None)  # the batcher's defaults
        self.recording, self.passes = False, []

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


def serving(s: Settings, out: Run, artifact: Path, texts: list[str]) -> None:
    """Sequential calls, batch-1 serving and the DynamicBatcher, taking turns for ``rounds`` rounds."""
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    loaded = lit_opt.load(artifact, device=s.device)
    per_round = max(s.requests // s.rounds, 1) * s.clients  # requests per round, all clients together

    def direct(text: str) -> Any:
        inputs = tokenizer(text, truncation=True, max_length=s.max_length, return_tensors="pt")
        with torch.inference_mode():
            return loaded(**inputs.to(s.device))

    recorder = PassRecorder(loaded)
    options = dict(tokenizer=tokenizer, max_wait_ms=s.max_wait_ms, max_length=s.max_length)
    options |= dict(pad_to_multiple_of=s.pad_to_multiple_of, pass_cost=s.pass_cost or None)  # None: its own
    wait = f"max_wait_ms={s.max_wait_ms:g}"
    with (
        DynamicBatcher(loaded, max_batch_size=1, **options) as single,
        DynamicBatcher(recorder, max_batch_size=s.max_batch_size, **options) as batcher,
    ):
        servers = {
            "sequential direct calls (batch 1, no queue)": (direct, 1),
            f"batch-1 serving (max_batch_size=1, {wait})": (single, s.clients),
            f"DynamicBatcher (max_batch_size={s.max_batch_size}, {wait})": (batcher, s.clients),
        }
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        elapsed = dict.fromkeys(servers, 0.0)
        for serve, clients in servers.values():  # warm-up: kernels for the shapes a server meets
            closed_loop(serve, texts, clients, per_round)
        recorder.recording = True
        for _ in range(s.rounds):
            for name, (serve, clients) in servers.items():
                got, seconds = closed_loop(serve, texts, clients, per_round)
                latencies[name] += got
                elapsed[name] += seconds
        recorder.recording = False
    replay_s = recorder.replay_seconds()
    for name, (serve, clients) in servers.items():
        lat = latencies[name]
        row = {"server": name, "clients": clients, "requests": len(lat), "elapsed_s": elapsed[name]}
        row |= {"throughput_req_s": len(lat) / elapsed[name], "p50_ms": percentile(lat, 50)}
        row |= {"p99_ms": percentile(lat, 99), "max_ms": max(lat), "mean_batch_size": 1.0}
        if serve is batcher:  # the recorded DynamicBatcher; the other servers run one request per pass
            row["mean_batch_size"] = len(lat) / max(len(recorder.passes), 1)  # the passes of the timed rounds
            row |= {"passes_alone_s": replay_s, "passes_alone_req_s": len(lat) / replay_s}
        out.rows.append(row)
    _, batch1, batched = out.rows[-3:]  # sequential calls, batch-1 serving, the DynamicBatcher
    out.table(
        f"Dynamic batching ({s.artifact or 'lit_opt int8 artifact'}, lit_opt.load kernel auto on {s.device}, "
        f"{s.threads} CPU threads; {s.clients} closed-loop clients x {s.requests} test texts in {s.rounds} "
        "interleaved rounds)",
        [
            (r["server"], r["clients"], r["requests"], f"{r['throughput_req_s']:.1f}")
            + (f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['mean_batch_size']:.1f}")
            for r in out.rows[-3:]
        ],
        notes=f"The batcher's forward passes, replayed alone, take {replay_s:.2f} s of its {batched['elapsed_s']:.2f} s: "
        f"a batcher with no overhead of its own (and clients that take no CPU) would reach "
        f"{batched['passes_alone_req_s'] / batch1['throughput_req_s']:.2f}x batch-1 serving.",
        plot="throughput req/s",
        columns=("server", "clients", "requests", "throughput req/s", "p50 ms", "p99 ms", "mean batch"),
    )
    speedup = batched["throughput_req_s"] / batch1["throughput_req_s"]
    goal = f"DynamicBatcher throughput >= 3x batch-1 serving with p99 <= {s.p99_budget_ms:g} ms"
    passed = speedup >= 3.0 and batched["p99_ms"] <= s.p99_budget_ms
    out.goal(goal, f"{speedup:.2f}x, p99 {batched['p99_ms']:.1f} ms", passed)


def run(s: Settings, out: Run) -> None:
    if s.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    artifact = Path(s.artifact) if s.artifact else None
    model = None if s.skip_bucketing and artifact else classifier(s.model)
    if not s.skip_bucketing:
        bucketing(s, out, model)
    if artifact is None:
        path, int8 = out.work_dir / "int8", {"weight_bits": 8}
        artifact = lit_opt.export(model.eval(), path, quantization=int8, tokenizer=minilm_tokenizer())
    texts = [row["text"] for row in csv_rows(s.data, out.work_dir)]
    serving(s, out, artifact, texts[-s.clients * s.requests :])  # a fixed slice of real snippets


if __name__ == "__main__":
    raise SystemExit(main(__name__))
