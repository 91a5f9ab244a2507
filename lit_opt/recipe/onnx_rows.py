"""The recipe's ONNX Runtime rows: the teacher's graph in fp32 and after ORT's own int8, and lit_opt's compressed graph.

- ``teacher-onnx-fp32``: the fine-tuned teacher through :func:`lit_opt.export_onnx` (ORT's transformer
  fusions applied and saved);
- ``teacher-onnx-int8``: that graph quantized by ``onnxruntime.quantization.quantize_dynamic``
  (per-channel int8 weights, dynamic activations), what one call of Optimum's quantizer gives;
- ``lit-opt-compressed-onnx``: the compressed artifact's graph, its trained int8 codes as they are.

All three run with :func:`lit_opt.load_onnx` (``threads`` intra-op threads) and are measured in the
same interleaved loop as the PyTorch rows.
"""

from __future__ import annotations

import time
from pathlib import Path

from torch import nn

from lit_opt.export.onnx import export_onnx, quantize_onnx_dynamic
from lit_opt.export.onnx_runtime import load_onnx
from lit_opt.recipe.evaluation import Candidate

TEACHER_FP32, TEACHER_INT8, COMPRESSED_ONNX = (
    "teacher-onnx-fp32",
    "teacher-onnx-int8",
    "lit-opt-compressed-onnx",
)


def onnx_candidates(
    teacher: nn.Module, teacher_params: int, artifact: Path, artifact_params: int, run_dir: Path, threads: int
) -> tuple[list[Candidate], float]:
    """The three ONNX rows, and the seconds :func:`export_onnx` took for the compressed artifact."""
    teacher_dir = export_onnx(teacher, run_dir / "teacher_onnx")
    teacher_int8 = quantize_onnx_dynamic(teacher_dir, run_dir / "teacher_onnx_int8")
    start = time.perf_counter()
    compressed = export_onnx(artifact, run_dir / "compressed_onnx")
    export_seconds = time.perf_counter() - start
    rows = [
        Candidate(
            TEACHER_FP32,
            load_onnx(teacher_dir, threads=threads),
            teacher_dir,
            teacher_params,
            f"the teacher exported with lit_opt.export_onnx (ONNX Runtime transformer fusions), fp32, ORT {threads} threads",
        ),
        Candidate(
            TEACHER_INT8,
            load_onnx(teacher_int8, threads=threads),
            teacher_int8,
            teacher_params,
            "teacher-onnx-fp32's graph quantized by onnxruntime quantize_dynamic (per-channel int8 weights, "
            "dynamic uint8 activations)",
        ),
        Candidate(
            COMPRESSED_ONNX,
            load_onnx(compressed, threads=threads),
            compressed,
            artifact_params,
            "lit-opt-compressed's artifact exported with lit_opt.export_onnx: its trained int8 codes as MatMulInteger "
            f"initializers, int4 embeddings gathered packed; exported in {export_seconds:.1f} s",
        ),
    ]
    return rows, export_seconds
