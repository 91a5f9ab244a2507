"""Runtimes for one compressed student: ONNX Runtime graphs (integer ops or QDQ, int4 or fp32 embeddings) against
lit_opt.load's kernels, torch.compile and torch.export, beside the teacher in eager fp32 and in ONNX Runtime.

The student is MiniLM's first 3 layers (the recipe's shape; ``--quick``: a tiny random BERT) with half its heads
and FFN neurons removed, int8 per-channel weights with dynamic activations (post-training, through
``lit_opt.export``) and int4 word embeddings (groups of 128); the teacher is the whole fp32 model. Every row
runs the same synthetic token ids, interleaved round by round; sizes are the bytes of what each row loads.
ONNX graphs compute the last layer for the [CLS] token alone (``export_onnx``'s default) unless a row says
"last layer for every token", and run attention as one ``MultiHeadAttention`` node per layer (``export_onnx``'s
default) unless a row says "attention as traced". "per row" quantizes activations as they were trained (``export_onnx``'s default),
"per tensor" with ONNX's ``DynamicQuantizeLinear`` (one range per batch). "QDQ" writes the same int8 codes as
``DequantizeLinear`` initializers before a float ``MatMul`` (the alternative to integer products the ONNX export
was chosen against; not shipped).
"""

import argparse
import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lit_opt
from benchmarks.common import VOCAB, classifier, time_batches
from benchmarks.harness import Run, main
from lit_opt.export import onnx_graph
from lit_opt.export.onnx import quantize_onnx_dynamic
from lit_opt.inference.measure import synthetic_batch
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from lit_opt.quantization import QuantizationConfig, prepare_quantization

SETTINGS = dict(
    model="minilm",
    layers=(3, 1),
    threads=2,
    batch_sizes=([1, 32], [2]),
    seq_len=(128, 16),
    repeats=(15, 2),
    compile_kernels=(["packed_int8", "bf16"], []),
    export_bf16=True,
    settle_ms=50.0,
)
HELP = {
    "settle_ms": "pause before each timed call, so ONNX Runtime's busy-waiting threads do not slow the next model",
    "compile_kernels": "lit_opt.load kernels also timed under torch.compile (compiling takes minutes)",
    "export_bf16": "also time torch.export of lit_opt.load(kernel='bf16')",
}


@contextlib.contextmanager
def qdq_matmuls() -> Iterator[None]:
    """While open, ``export_onnx`` writes dynamic int8 layers as QDQ: DequantizeLinear(codes) -> MatMul."""

    def symbolic(g: Any, x: Any, codes_t: Any, w_scale: Any, bias: Any) -> Any:
        weight = g.op("DequantizeLinear", codes_t, w_scale, axis_i=1)
        q, scale, zero_point = g.op("DynamicQuantizeLinear", x, outputs=3)
        out = g.op("MatMul", g.op("DequantizeLinear", q, scale, zero_point), weight)
        return out if bias is None else g.op("Add", out, bias)  # attention projections: the attention adds it

    original = onnx_graph._DynamicInt8MatMul.symbolic
    onnx_graph._DynamicInt8MatMul.symbolic = staticmethod(symbolic)  # type: ignore[method-assign]
    try:
        yield
    finally:
        onnx_graph._DynamicInt8MatMul.symbolic = original  # type: ignore[method-assign]


def student(teacher: nn.Module, layers: int) -> nn.Module:
    """The teacher's first ``layers`` layers, half the heads and FFN neurons masked, int8/int4 quantizers on."""
    model = copy.deepcopy(teacher)
    model.bert.encoder.layer = model.bert.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    for structure, targets in (("heads", ["*.attention.self"]), ("rows", ["*.intermediate.dense"])):
        config = PruningConfig(0.5, structure=structure, scope="local", targets=targets)
        update_masks(prepare_pruning(model, config), config, 0.5, step=0)
    int8 = QuantizationConfig(weight_bits=8, activations="dynamic", targets=["bert.encoder.*"])
    prepare_quantization(model, int8)
    group = min(128, model.config.hidden_size)
    int4 = dict(granularity="per_group", group_size=group, targets=["*word_embeddings"])
    prepare_quantization(model, QuantizationConfig(weight_bits=4, **int4), owner="embeddings")
    return model.eval()


def loaded_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.name in ("model.onnx", "model.safetensors"))


def run(s: argparse.Namespace, out: Run) -> None:
    teacher, work = classifier(s.model).eval(), out.work_dir
    artifact = lit_opt.export(student(teacher, s.layers), work / "student")
    graphs = {
        "ORT int8 per row, int4 embeddings gathered": lit_opt.export_onnx(artifact, work / "onnx_gather")
    }
    every_token = lit_opt.export_onnx(artifact, work / "onnx_every_token", first_token_only=False)
    graphs["ORT int8 per row, int4 embeddings gathered, last layer for every token"] = every_token
    traced = lit_opt.export_onnx(artifact, work / "onnx_traced_attention", fuse_attention=False)
    graphs["ORT int8 per row, int4 embeddings gathered, attention as traced"] = traced
    fp32 = lit_opt.export_onnx(artifact, work / "onnx_fp32_embeddings", int4_embeddings="dequantize")
    graphs["ORT int8 per row, fp32 embeddings"] = fp32
    per_tensor = lit_opt.export_onnx(artifact, work / "onnx_per_tensor", dynamic_activations="per_tensor")
    graphs["ORT int8 per tensor (DynamicQuantizeLinear), int4 embeddings gathered"] = per_tensor
    with qdq_matmuls():
        qdq = lit_opt.export_onnx(artifact, work / "onnx_qdq", dynamic_activations="per_tensor")
        graphs["ORT QDQ per tensor (DequantizeLinear + MatMul)"] = qdq
    graphs["teacher ORT fp32"] = lit_opt.export_onnx(teacher, work / "teacher_onnx")
    whole_teacher = lit_opt.export_onnx(teacher, work / "teacher_onnx_every_token", first_token_only=False)
    graphs["teacher ORT fp32, last layer for every token"] = whole_teacher
    int8_graph = quantize_onnx_dynamic(graphs["teacher ORT fp32"], work / "teacher_onnx_int8")
    graphs["teacher ORT int8 (quantize_dynamic)"] = int8_graph
    models: dict[str, Any] = {"teacher eager fp32": teacher}
    sizes = {"teacher eager fp32": sum(p.numel() * 4 for p in teacher.parameters())}
    for kernel in ("packed_int8", "bf16"):
        models[f"load {kernel}"] = lit_opt.load(artifact, kernel=kernel)
    models |= {name: lit_opt.load_onnx(path, threads=s.threads) for name, path in graphs.items()}
    for kernel in s.compile_kernels:
        compiled = torch.compile(lit_opt.load(artifact, kernel=kernel), dynamic=False)
        models[f"torch.compile(load {kernel})"] = compiled
    if s.export_bf16:  # torch.export runs only the bf16 kernel (packed_int8's prepacked weights and the
        # reference kernel's data-dependent quantizer flags do not export)
        positions = teacher.config.max_position_embeddings
        batch, seq = torch.export.Dim("batch", max=1024), torch.export.Dim("seq", min=2, max=positions)
        example = synthetic_batch(2, s.seq_len, VOCAB)
        shapes = {k: {0: batch, 1: seq} for k in example}
        bf16 = lit_opt.load(artifact, kernel="bf16")
        exported = torch.export.export(bf16, (), kwargs=dict(example), dynamic_shapes=shapes, strict=False)
        models["torch.export(load bf16)"] = exported.module()
    sizes |= {name: loaded_bytes(graphs.get(name, artifact)) for name in models if name not in sizes}
    # 3 untimed calls each first (torch.compile compiles here)
    repeats = dict.fromkeys(s.batch_sizes, s.repeats)
    timings = time_batches(models, "teacher eager fp32", repeats, s.seq_len, 3, settle_ms=s.settle_ms)
    for b, stats in timings.items():
        out.rows += [{"runtime": name, "batch": b, "bytes": sizes[name], **t} for name, t in stats.items()]
    cells = [
        (
            r["runtime"],
            r["batch"],
            f"{r['bytes'] / 1e6:.2f}",
            f"{r['median_ms']:.2f}",
            f"{1 / r['ratio']:.2f}x",
        )
        for r in out.rows
    ]
    out.table(
        f"Runtimes of one compressed student ({s.model} shape, {s.layers} layers, seq {s.seq_len}, "
        f"{s.threads} threads, {s.repeats} interleaved rounds)",
        cells,
        plot="vs teacher eager fp32",
        columns=("runtime", "batch", "MB loaded", "median ms", "vs teacher eager fp32"),
    )


if __name__ == "__main__":
    raise SystemExit(main(__name__))
