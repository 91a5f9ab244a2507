"""The recipe's ONNX Runtime rows: the teacher's graph in fp32 and after ORT's own int8, and lit_opt's compressed graph.

- ``teacher-onnx-fp32``: the fine-tuned teacher through :func:`lit_opt.export_onnx` (ORT's transformer
  fusions applied and saved);
- ``teacher-onnx-int8``: that graph quantized by ``onnxruntime.quantization.quantize_dynamic``
  (per-channel int8 weights, dynamic activations), what one call of Optimum's quantizer gives;
- ``lit-opt-compressed-onnx``: the compressed artifact's graph, its trained int8 codes as they are and its
  activations quantized per row, as trained.

All three run with :func:`lit_opt.load_onnx` (``threads`` intra-op threads) and are measured in the
same interleaved loop as the PyTorch rows.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from lit_opt.export.loader import load
from lit_opt.export.onnx import export_onnx, quantize_onnx_dynamic
from lit_opt.export.onnx_runtime import load_onnx
from lit_opt.recipe.task import Candidate
from lit_opt.recipe.training import RecipeDataModule, model_inputs

TEACHER_FP32, TEACHER_INT8, COMPRESSED_ONNX = (
    "teacher-onnx-fp32",
    "teacher-onnx-int8",
    "lit-opt-compressed-onnx",
)


def top1_agreement(model: nn.Module, reference: nn.Module, dm: RecipeDataModule) -> float:
    """Share of the test split on which ``model`` and ``reference`` predict the same class."""
    same = total = 0
    with torch.inference_mode():
        for batch in dm.test_dataloader():
            inputs = model_inputs(batch)
            same += int((model(**inputs).logits.argmax(-1) == reference(**inputs).logits.argmax(-1)).sum())
            total += len(batch["labels"])
    return same / total


def onnx_candidates(
    teacher: nn.Module,
    teacher_params: int,
    artifact: Path,
    artifact_params: int,
    run_dir: Path,
    threads: int,
    dm: RecipeDataModule,
) -> tuple[list[Candidate], float]:
    """The three ONNX rows, and the seconds :func:`export_onnx` took for the compressed artifact.

    The compressed graph's row records its top-1 agreement with ``lit_opt.load(kernel="reference")`` on the
    test split (``top1_agreement_vs_reference``).
    """
    teacher_dir = export_onnx(teacher, run_dir / "teacher_onnx")
    teacher_int8 = quantize_onnx_dynamic(teacher_dir, run_dir / "teacher_onnx_int8")
    start = time.perf_counter()
    compressed = export_onnx(artifact, run_dir / "compressed_onnx")
    export_seconds = time.perf_counter() - start
    compressed_model = load_onnx(compressed, threads=threads)
    agreement = top1_agreement(compressed_model, load(artifact, kernel="reference"), dm)
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
            compressed_model,
            compressed,
            artifact_params,
            "lit-opt-compressed's artifact exported with lit_opt.export_onnx: its trained int8 codes as initializers of "
            "ORT's integer matrix product, activations int8 per row as trained, int4 embeddings gathered packed; "
            f"exported in {export_seconds:.1f} s; top-1 agreement "
            f"with lit_opt.load(kernel='reference') on the test split {100 * agreement:.2f}%",
            {"top1_agreement_vs_reference": agreement},
        ),
    ]
    return rows, export_seconds
