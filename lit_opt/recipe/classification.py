"""The sequence-classification task: fine-tune MiniLM on labelled texts, distil, compress; rows ranked by test accuracy.

Example::

    from lit_opt.recipe import load_config, run_recipe
    run_recipe(load_config("configs/recipes/rotten_tomatoes.yaml"))  # task: classification
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lit_opt import load
from lit_opt.export.format import MANIFEST
from lit_opt.export.loader import best_kernel
from lit_opt.recipe import report as report_lib
from lit_opt.recipe.config import RecipeConfig
from lit_opt.recipe.evaluation import measure
from lit_opt.recipe.onnx_rows import onnx_candidates
from lit_opt.recipe.task import Candidate, Task, Trained
from lit_opt.recipe.training import (
    RecipeDataModule,
    compress_student,
    distill_student,
    fine_tune_teacher,
    make_data,
    ptq_peer,
    vocabulary,
)


def params(model: nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def artifact_params(directory: Path) -> int:
    """Weights an artifact stores (float tensors at their stored shapes; index buffers such as a remap excluded)."""
    entries = json.loads((directory / MANIFEST).read_text())["tensors"].values()
    return sum(math.prod(e["shape"]) for e in entries if str(e["dtype"]).startswith(("float", "bfloat")))


class ClassificationTask(Task):
    """Sequence classification (``task: classification``, :class:`~lit_opt.recipe.config.RecipeConfig`)."""

    config: RecipeConfig
    metric, metric_label, metric_scale = "accuracy", "test accuracy (%)", 100.0
    stages = {
        "data": "reading, checking, tokenizing and splitting the data",
        "teacher": "fine-tuning the teacher",
        "distill": "distilling the student",
        "compress": "structured pruning + QAT of the student, then export",
        "ptq_peer": "the peer: the same pruning without QAT, then torch.ao dynamic int8",
        "evaluate": "accuracy on the test split, sizes and latency of every row",
    }
    plots = (
        ("size_bytes", "file size (MB, log)", "accuracy_vs_size.png"),
        ("latency_ms_b32", "latency at batch 32 (ms, log)", "accuracy_vs_latency.png"),
    )

    def __init__(self, config: RecipeConfig) -> None:
        super().__init__(config)
        #: The token ids the compressed student's embeddings keep (None: all), set by :meth:`compress`.
        self.keep: list[int] | None = None
        #: Seconds ``export_onnx`` of the compressed student took (None: no ONNX rows), set by :meth:`extra_candidates`.
        self.export_seconds: float | None = None

    def make_data(self) -> RecipeDataModule:
        return make_data(self.config.data)

    def teacher(self, dm: RecipeDataModule, run_dir: Path) -> tuple[nn.Module, Path]:
        return fine_tune_teacher(self.config, dm, run_dir)

    def distill(
        self, dm: RecipeDataModule, teacher: nn.Module, teacher_dir: Path, run_dir: Path
    ) -> nn.Module:
        distilled = distill_student(self.config, dm, teacher, teacher_dir, run_dir)
        cast(Any, distilled).save_pretrained(str(run_dir / "student_distilled"), safe_serialization=True)
        return distilled

    def compress(self, dm: RecipeDataModule, distilled: nn.Module, teacher: nn.Module, run_dir: Path) -> Path:
        self.keep = vocabulary(dm) if self.config.compress.prune_vocabulary else None
        return compress_student(self.config, dm, distilled, teacher, run_dir, self.keep)

    def peer(
        self, dm: RecipeDataModule, distilled: nn.Module, teacher: nn.Module, run_dir: Path
    ) -> Candidate:
        peer, peer_params, peer_how, peer_dir = ptq_peer(self.config, dm, distilled, teacher, run_dir)
        c = self.config.compress
        return Candidate(
            "ptq-int8-torch-ao",
            peer,
            peer_dir,
            peer_params,
            f"the distilled student pruned like lit-opt-compressed (FFN {c.ffn_sparsity:.0%}, heads {c.head_sparsity:.0%}) "
            f"and fine-tuned without QAT, then {peer_how}; embeddings fp32",
        )

    def candidates(self, dm: RecipeDataModule, trained: Trained) -> list[Candidate]:
        config, c, run_dir = self.config, self.config.compress, trained.run_dir
        teacher, distilled, artifact, keep = trained.teacher, trained.distilled, trained.artifact, self.keep
        teacher_bf16: Any = copy.deepcopy(teacher).to(torch.bfloat16).eval()
        teacher_bf16.save_pretrained(str(run_dir / "teacher_bf16"), safe_serialization=True)
        compressed = load(artifact, kernel=config.latency.kernel, first_token_only=True)
        kernel = (
            best_kernel(torch.device("cpu")) if config.latency.kernel == "auto" else config.latency.kernel
        )
        return [
            Candidate(
                "teacher-fp32",
                teacher,
                trained.teacher_dir,
                params(teacher),
                "the fine-tuned teacher, fp32, eager",
            ),
            Candidate(
                "teacher-bf16",
                teacher_bf16,
                run_dir / "teacher_bf16",
                params(teacher),
                "the same teacher cast to bf16, eager; bf16 "
                + (
                    "native"
                    if torch.ops.mkldnn._is_mkldnn_bf16_supported()
                    else "emulated (this CPU has no native bf16)"
                ),
            ),
            Candidate(
                "student-distilled-fp32",
                distilled,
                run_dir / "student_distilled",
                params(distilled),
                f"{config.student.init} student ({cast(Any, distilled).config.num_hidden_layers} layers) distilled "
                f"(T={config.student.temperature:g}, alpha={config.student.alpha:g}), fp32",
            ),
            trained.peer,
            Candidate(
                "lit-opt-compressed",
                compressed,
                artifact,
                artifact_params(artifact),
                f"the distilled student pruned (FFN {c.ffn_sparsity:.0%}, heads {c.head_sparsity:.0%}, physically removed), "
                f"int{c.weight_bits} QAT (activations {c.activations}) on encoder and pooler, int{c.embedding_bits} "
                f"per-group ({c.embedding_group_size}) word embeddings"
                + (
                    f", vocabulary pruned to {len(keep)} tokens of the training split"
                    if keep is not None
                    else ""
                )
                + f", other tensors {c.export_dtype}; exported and loaded with lit_opt.load (kernel {kernel}, "
                "last layer for the [CLS] token alone)",
            ),
        ]

    def extra_stage(self) -> tuple[str, str] | None:
        if not self.config.latency.onnx:
            return None
        return "onnx", "ONNX export of the teacher and the compressed student, ORT int8 of the teacher"

    def extra_candidates(self, dm: RecipeDataModule, trained: Trained) -> list[Candidate]:
        rows, self.export_seconds = onnx_candidates(
            trained.teacher,
            params(trained.teacher),
            trained.artifact,
            artifact_params(trained.artifact),
            trained.run_dir,
            self.config.latency.threads,
            dm,
        )
        return rows

    def report_extras(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"fastest": report_lib.fastest(rows)}

    def evaluate(self, candidates: list[Candidate], dm: RecipeDataModule) -> list[dict[str, Any]]:
        vocab_size = int(cast(Any, candidates[0].model).config.vocab_size)
        return measure(candidates, dm, vocab_size, self.config.latency)

    def goals(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return report_lib.goals(rows) + report_lib.onnx_goals(rows, self.export_seconds)

    def table(self, rows: list[dict[str, Any]]) -> str:
        return report_lib.table(rows)

    def data_summary(self, dm: RecipeDataModule) -> dict[str, Any]:
        return {
            "train": len(dm.splits["train"]),
            "val": len(dm.splits["val"]),
            "test": len(dm.splits["test"]),
            "classes": dm.num_classes,
            "labels": dm.label_names,
            "source": self.config.data.path or "Rotten Tomatoes critic snippets (default)",
        }

    def method(self, report: dict[str, Any]) -> str:
        s, data = report["config"], report["data"]
        return (
            f"Data: {data['source']} ({data['train']} train / {data['val']} val / "
            f"{data['test']} test examples, {data['classes']} classes). Accuracy on the test split; "
            f"size = bytes of {', '.join(report['size_files'])} (tokenizer excluded); latency = median of "
            f"{s['latency']['repeats']} calls, seq {s['latency']['seq_len']}, {s['latency']['threads']} threads, all rows "
            f"timed in the same rounds, {s['latency'].get('settle_ms', 0):g} ms apart."
        )
