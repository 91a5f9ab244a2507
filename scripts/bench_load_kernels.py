#!/usr/bin/env python
"""Latency of each ``lit_opt.load`` kernel on one device, against the same weights in eager fp32 and bf16.

A BertForSequenceClassification of all-MiniLM-L6-v2's shape (6 layers, hidden 384, random weights: the
timing does not depend on them) gets int8 per-channel weights with dynamic activations
(post-training, through ``lit_opt.export``); the artifact is loaded with every kernel the device can
run and all models are timed round by round (interleaved, medians), on synthetic token ids.
Prints a markdown table of median milliseconds and speedups over eager fp32.

Usage::

    python scripts/bench_load_kernels.py --device cuda            # on a GPU
    python scripts/bench_load_kernels.py --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import copy
import functools
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

import lit_opt
from lit_opt.inference.measure import environment, synced_forward, synthetic_batch, time_round_robin

MINILM = {
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "num_labels": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    fp32 = BertForSequenceClassification(BertConfig(**MINILM)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        artifact = lit_opt.export(
            fp32, Path(tmp) / "int8", quantization={"weight_bits": 8, "activations": "dynamic"}
        )
        kernels = ["reference", "bf16", "int8"] + (["packed_int8"] if device.type == "cpu" else [])
        models = {"eager fp32": fp32.to(device), "eager bf16": copy.deepcopy(fp32).to(device, torch.bfloat16)}
        models.update({f"load {k}": lit_opt.load(artifact, device=device, kernel=k) for k in kernels})
    print(
        environment(args.threads),
        "device:",
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    )
    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        inputs = {k: v.to(device) for k, v in synthetic_batch(batch_size, args.seq_len, 30522).items()}
        calls = {name: functools.partial(synced_forward, model, inputs) for name, model in models.items()}
        with torch.inference_mode():  # 3 untimed calls each first (kernel selection, caches)
            timings = time_round_robin(calls, warmup=3, repeats=args.repeats)
        base = timings["eager fp32"].median_ms
        for name, timing in timings.items():
            rows.append(
                f"| {name} | {batch_size} | {timing.median_ms:.2f} | {base / timing.median_ms:.2f}x |"
            )
    print(f"\n| model | batch | median ms (seq {args.seq_len}) | vs eager fp32 |\n|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
