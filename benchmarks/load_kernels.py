"""Latency of each ``lit_opt.load`` kernel on one device, against the same weights in eager fp32 and bf16.

A BertForSequenceClassification of all-MiniLM-L6-v2's shape (6 layers, hidden 384; random weights: the
timing does not depend on them) gets int8 per-channel weights with dynamic activations (post-training,
through ``lit_opt.export``); the artifact is loaded with every kernel the device can run and all models
are timed round by round (interleaved, medians) on synthetic token ids. ``--device cuda`` on a GPU.
"""

import copy

import torch
from transformers import BertConfig, BertForSequenceClassification

import lit_opt
from benchmarks.common import SHAPES, VOCAB, time_batches
from benchmarks.harness import Run, Settings, main

SETTINGS = dict(
    model="minilm", device="", threads=2, batch_sizes=([1, 32], [2]), seq_len=(128, 16), repeats=(20, 2)
)
HELP = {"device": "cpu or cuda (default: cuda when available)"}


def run(s: Settings, out: Run) -> None:
    device = torch.device(s.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    fp32 = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, num_labels=2, **SHAPES[s.model])).eval()
    int8 = {"weight_bits": 8, "activations": "dynamic"}
    artifact = lit_opt.export(fp32, out.work_dir / "int8", quantization=int8)
    kernels = ["reference", "bf16", "int8"] + (["packed_int8"] if device.type == "cpu" else [])
    models = {"eager fp32": fp32.to(device), "eager bf16": copy.deepcopy(fp32).to(device, torch.bfloat16)}
    models |= {f"load {k}": lit_opt.load(artifact, device=device, kernel=k) for k in kernels}
    repeats = dict.fromkeys(s.batch_sizes, s.repeats)  # after 3 untimed calls each (kernel selection, caches)
    for b, stats in time_batches(models, "eager fp32", repeats, s.seq_len, 3, device).items():
        out.rows += [{"model": name, "batch": b, **t} for name, t in stats.items()]
    cells = [(r["model"], r["batch"], f"{r['median_ms']:.2f}", f"{1 / r['ratio']:.2f}x") for r in out.rows]
    threads = f"cpu, {torch.get_num_threads()} threads"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    title = f"Load kernels ({s.model} shape, int8 per-channel + dynamic activations; {where}; "
    title += f"{s.repeats} interleaved rounds)"
    columns = ("model", "batch", f"median ms (seq {s.seq_len})", "vs eager fp32")
    out.table(title, cells, plot="vs eager fp32", columns=columns)


if __name__ == "__main__":
    raise SystemExit(main(__name__))
