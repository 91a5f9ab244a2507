"""Latency of each ``lit_opt.load`` kernel on one device, against the same weights in eager fp32 and bf16.

A BertForSequenceClassification of all-MiniLM-L6-v2's shape (6 layers, hidden 384; random weights: the
timing does not depend on them) gets int8 per-channel weights with dynamic activations (post-training,
through ``lit_opt.export``); the artifact is loaded with every kernel the device can run and all models
are timed round by round (interleaved, medians) on synthetic token ids. ``--device cuda`` on a GPU.
"""

from __future__ import annotations

import argparse
import copy

import torch
from transformers import BertConfig, BertForSequenceClassification

import lit_opt
from benchmarks.common import VOCAB
from benchmarks.harness import Benchmark, Run, time_models
from lit_opt.inference.measure import synthetic_batch

SHAPES = {  # hidden size, layers, heads, FFN width
    "minilm": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
}  # fmt: skip


def run(s: argparse.Namespace, out: Run) -> None:
    device = torch.device(s.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    fp32 = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, num_labels=2, **SHAPES[s.model])).eval()
    artifact = lit_opt.export(
        fp32, out.work_dir / "int8", quantization={"weight_bits": 8, "activations": "dynamic"}
    )
    kernels = ["reference", "bf16", "int8"] + (["packed_int8"] if device.type == "cpu" else [])
    models = {"eager fp32": fp32.to(device), "eager bf16": copy.deepcopy(fp32).to(device, torch.bfloat16)}
    models.update({f"load {k}": lit_opt.load(artifact, device=device, kernel=k) for k in kernels})
    cells = []
    for batch_size in s.batch_sizes:
        inputs = {k: v.to(device) for k, v in synthetic_batch(batch_size, s.seq_len, VOCAB).items()}
        # 3 untimed calls each first (kernel selection, caches)
        stats = time_models(models, inputs, "eager fp32", warmup=3, repeats=s.repeats)
        for name, t in stats.items():
            out.rows.append({"model": name, "batch": batch_size, **t})
            cells.append({"model": name, "batch": batch_size, f"median ms (seq {s.seq_len})": f"{t['median_ms']:.2f}",
                          "vs eager fp32": f"{1 / t['ratio']:.2f}x"})  # fmt: skip
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    out.table(
        f"Load kernels ({s.model} shape, int8 per-channel + dynamic activations; {where}; {s.repeats} interleaved rounds)",
        cells,
        plot="vs eager fp32",
    )


BENCH = Benchmark(
    "load_kernels",
    __doc__,
    settings={"model": "minilm", "device": "", "threads": 2, "batch_sizes": [1, 32], "seq_len": 128, "repeats": 20},
    quick={"batch_sizes": [2], "seq_len": 16, "repeats": 2},
    run=run,
    help={"device": "cpu or cuda (default: cuda when available)"},
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
