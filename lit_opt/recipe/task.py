"""What a recipe task supplies to the shared stages: data, the models each stage trains, the metric, the report's columns.

:func:`~lit_opt.recipe.run_recipe` runs the same stages for every task (data → teacher → distil →
compress → PTQ peer → evaluate → report), prints them, keeps the output directory complete or absent
and writes ``report.json``/``report.md`` and the plots. A :class:`Task` fills each stage in:
sequence classification (:mod:`lit_opt.recipe.classification`) and causal language modelling
(:mod:`lit_opt.recipe.causal_lm`).

Example::

    class MyTask(Task):
        metric, metric_label = "accuracy", "test accuracy (%)"
        ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn


def announce(line: str) -> None:
    """Print one line of the recipe's console output (``[lit-opt recipe] ...``), flushed."""
    print(f"[lit-opt recipe] {line}", flush=True)


@dataclass
class Candidate:
    """One row of the report: a runnable model, where its shipped files are, and how it was made."""

    name: str
    model: nn.Module
    directory: Path
    params: int
    how: str
    measured: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trained:
    """What the training stages made, handed to :meth:`Task.candidates`."""

    teacher: nn.Module
    teacher_dir: Path
    distilled: nn.Module
    artifact: Path
    peer: Candidate
    run_dir: Path


class Task(ABC):
    """The task-specific half of the recipe; the shared half is :func:`~lit_opt.recipe.run_recipe`.

    Class attributes name the metric every row gets (``metric``, a key of the rows, plotted against size
    and latency as ``metric_scale * value``, labelled ``metric_label``), what each stage does (``stages``, printed as it starts) and the plots
    (``plots``: ``(x key of the rows, axis label, file name)``).
    """

    metric: ClassVar[str]
    metric_label: ClassVar[str]
    metric_scale: ClassVar[float] = 1.0
    stages: ClassVar[dict[str, str]]
    plots: ClassVar[tuple[tuple[str, str, str], ...]]

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def make_data(self) -> Any:
        """The data module, set up; bad data raises ``ValueError`` here, before any output exists."""

    @abstractmethod
    def teacher(self, dm: Any, run_dir: Path) -> tuple[nn.Module, Path]:
        """The teacher in eval mode and the directory it is saved in (under ``run_dir``)."""

    @abstractmethod
    def distill(self, dm: Any, teacher: nn.Module, teacher_dir: Path, run_dir: Path) -> nn.Module:
        """The student distilled from the teacher, saved under ``run_dir/student_distilled``."""

    @abstractmethod
    def compress(self, dm: Any, distilled: nn.Module, teacher: nn.Module, run_dir: Path) -> Path:
        """Compress a copy of the distilled student while it trains; returns the exported artifact."""

    @abstractmethod
    def peer(self, dm: Any, distilled: nn.Module, teacher: nn.Module, run_dir: Path) -> Candidate:
        """The post-training-quantization peer row (its name starts with ``ptq``)."""

    @abstractmethod
    def candidates(self, dm: Any, trained: Trained) -> list[Candidate]:
        """The report's rows, in order, before measurement."""

    @abstractmethod
    def evaluate(self, candidates: list[Candidate], dm: Any) -> list[dict[str, Any]]:
        """Every row measured in this process (metric, size, parameters, speed): the report's rows."""

    @abstractmethod
    def goals(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The goals for ``lit-opt-compressed``: ``{"goal", "measured", "met"}`` each."""

    @abstractmethod
    def table(self, rows: list[dict[str, Any]]) -> str:
        """The rows as a Markdown table (the report's columns)."""

    @abstractmethod
    def data_summary(self, dm: Any) -> dict[str, Any]:
        """``report["data"]``: the splits' sizes and the source."""

    @abstractmethod
    def method(self, report: dict[str, Any]) -> str:
        """``report.md``'s first paragraph: the data and how each column was measured."""

    def extra_stage(self) -> tuple[str, str] | None:
        """``(name, what it does)`` of a stage run after :meth:`candidates` that adds rows; none by default."""
        return None

    def extra_candidates(self, dm: Any, trained: Trained) -> list[Candidate]:
        """The rows :meth:`extra_stage` adds (called only when it names a stage)."""
        return []

    def report_extras(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Task-specific top-level entries of ``report.json``; none by default."""
        return {}

    def sections(self, report: dict[str, Any]) -> list[str]:
        """Extra ``report.md`` lines after the rows (e.g. sample outputs); none by default."""
        return []
