"""``run_recipe``: teacher → distilled student → compressed student and its PTQ peer → measured report.

Everything is written into a hidden ``.<name>.incomplete-*`` directory beside ``output_dir`` and
renamed to ``output_dir`` only when the report is complete, so an interrupted or failed run never
leaves a directory that looks finished. Bad data (missing columns, one class, an empty file) fails
before anything is written.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from lit_opt import load
from lit_opt.export.format import MANIFEST
from lit_opt.export.loader import best_kernel
from lit_opt.inference.measure import environment, loadavg
from lit_opt.recipe import report as report_lib
from lit_opt.recipe.config import RecipeConfig
from lit_opt.recipe.evaluation import SHIPPED_FILES, Candidate, measure
from lit_opt.recipe.onnx_rows import onnx_candidates
from lit_opt.recipe.training import (
    compress_student,
    distill_student,
    fine_tune_teacher,
    make_data,
    ptq_peer,
    vocabulary,
)

log = logging.getLogger(__name__)


class StageClock:
    """Wall-clock seconds of each named stage, printed as each one starts and ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        print(f"[lit-opt recipe] {name}: {what}", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        print(f"[lit-opt recipe] {name} done in {self.seconds[name]:.0f} s", flush=True)

    def total(self) -> float:
        return time.perf_counter() - self._start


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _artifact_params(directory: Path) -> int:
    """Weights an artifact stores (float tensors at their stored shapes; index buffers such as a remap excluded)."""
    entries = json.loads((directory / MANIFEST).read_text())["tensors"].values()
    return sum(math.prod(e["shape"]) for e in entries if str(e["dtype"]).startswith(("float", "bfloat")))


def _publish(run_dir: Path, out: Path) -> None:
    """Rename the finished ``run_dir`` to ``out``, replacing an earlier run's directory."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(run_dir, out)


def run_recipe(config: RecipeConfig) -> dict[str, Any]:
    """Run the recipe; returns the report also written to ``<output_dir>/report.json``.

    Raises:
        ValueError: bad data (see :class:`~lit_opt.data.TextClassificationDataModule`), before any output.

    Example::

        >>> from lit_opt.recipe import load_config
        >>> report = run_recipe(load_config("configs/recipes/rotten_tomatoes.yaml"))  # doctest: +SKIP
        >>> [r["name"] for r in report["rows"]]  # doctest: +SKIP
        ['teacher-fp32', 'teacher-bf16', 'student-distilled-fp32', 'ptq-int8-torch-ao', 'lit-opt-compressed']
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    env = {**environment(config.latency.threads), "loadavg_start": loadavg()}
    clock = StageClock()
    with clock.stage("data", "reading, checking, tokenizing and splitting the data"):
        dm = make_data(config.data)
    out = Path(config.output_dir).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.incomplete-", dir=out.parent))
    print(f"[lit-opt recipe] working in {run_dir} (renamed to {out} when complete)", flush=True)
    with clock.stage("teacher", "fine-tuning the teacher"):
        teacher, teacher_dir = fine_tune_teacher(config, dm, run_dir)
    with clock.stage("distill", "distilling the student"):
        distilled = distill_student(config, dm, teacher, teacher_dir, run_dir)
        distilled.save_pretrained(str(run_dir / "student_distilled"), safe_serialization=True)
    with clock.stage("compress", "structured pruning + QAT of the student, then export"):
        keep = vocabulary(dm) if config.compress.prune_vocabulary else None
        artifact = compress_student(config, dm, distilled, teacher, run_dir, keep)
    with clock.stage("ptq_peer", "the peer: the same pruning without QAT, then torch.ao dynamic int8"):
        peer, peer_params, peer_how, peer_dir = ptq_peer(config, dm, distilled, teacher, run_dir)
    teacher_bf16 = copy.deepcopy(teacher).to(torch.bfloat16).eval()
    teacher_bf16.save_pretrained(str(run_dir / "teacher_bf16"), safe_serialization=True)
    compressed = load(artifact, kernel=config.latency.kernel)
    kernel = best_kernel(torch.device("cpu")) if config.latency.kernel == "auto" else config.latency.kernel
    c = config.compress
    candidates = [
        Candidate(
            "teacher-fp32", teacher, teacher_dir, _params(teacher), "the fine-tuned teacher, fp32, eager"
        ),
        Candidate(
            "teacher-bf16",
            teacher_bf16,
            run_dir / "teacher_bf16",
            _params(teacher),
            "the same teacher cast to bf16, eager; bf16 "
            + ("native" if env["mkldnn_bf16_supported"] else "emulated (this CPU has no native bf16)"),
        ),
        Candidate(
            "student-distilled-fp32",
            distilled,
            run_dir / "student_distilled",
            _params(distilled),
            f"{config.student.init} student ({distilled.config.num_hidden_layers} layers) distilled "
            f"(T={config.student.temperature:g}, alpha={config.student.alpha:g}), fp32",
        ),
        Candidate(
            "ptq-int8-torch-ao",
            peer,
            peer_dir,
            peer_params,
            f"the distilled student pruned like lit-opt-compressed (FFN {c.ffn_sparsity:.0%}, heads {c.head_sparsity:.0%}) "
            f"and fine-tuned without QAT, then {peer_how}; embeddings fp32",
        ),
        Candidate(
            "lit-opt-compressed",
            compressed,
            artifact,
            _artifact_params(artifact),
            f"the distilled student pruned (FFN {c.ffn_sparsity:.0%}, heads {c.head_sparsity:.0%}, physically removed), "
            f"int{c.weight_bits} QAT (activations {c.activations}) on encoder and pooler, int{c.embedding_bits} "
            f"per-group ({c.embedding_group_size}) word embeddings"
            + (f", vocabulary pruned to {len(keep)} tokens of the training split" if keep is not None else "")
            + f", other tensors {c.export_dtype}; exported and loaded with lit_opt.load (kernel {kernel})",
        ),
    ]
    export_seconds = None
    if config.latency.onnx:
        with clock.stage(
            "onnx", "ONNX export of the teacher and the compressed student, ORT int8 of the teacher"
        ):
            onnx_rows, export_seconds = onnx_candidates(
                teacher,
                _params(teacher),
                artifact,
                _artifact_params(artifact),
                run_dir,
                config.latency.threads,
                dm,
            )
        candidates += onnx_rows
    vocab_size = int(teacher.config.vocab_size)
    with clock.stage("evaluate", "accuracy on the test split, sizes and latency of every row"):
        rows = measure(candidates, dm, vocab_size, config.latency)
    env["loadavg_end"] = loadavg()
    goal_rows = report_lib.goals(rows) + report_lib.onnx_goals(rows, export_seconds)
    report = {
        "rows": rows,
        "goals": goal_rows,
        "goals_summary": report_lib.summary(goal_rows),
        "fastest": report_lib.fastest(rows),
        "stage_seconds": {**clock.seconds, "total": clock.total()},
        "data": {
            "train": len(dm.splits["train"]),
            "val": len(dm.splits["val"]),
            "test": len(dm.splits["test"]),
            "classes": dm.num_classes,
            "labels": dm.label_names,
            "source": config.data.path or "Rotten Tomatoes critic snippets (default)",
        },
        "size_files": list(SHIPPED_FILES),
        "config": asdict(config),
        "env": env,
    }
    report_lib.write(report, run_dir)
    _publish(run_dir, out)
    print(report_lib.table(rows))
    print(report["goals_summary"])
    print(
        f"[lit-opt recipe] report: {out / 'report.md'} (and report.json, accuracy_vs_size.png, accuracy_vs_latency.png)"
    )
    return report
