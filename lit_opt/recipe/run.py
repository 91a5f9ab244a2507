"""``run_recipe``: the stages every task shares: teacher → distilled student → compressed student and its PTQ peer → measured report.

The task (:class:`~lit_opt.recipe.task.Task`, chosen by the config's ``task``) supplies each stage's
data, models, metric and the report's columns; this module prints the stages, times them and writes
the report.

Everything is written into a hidden ``.<name>.incomplete-*`` directory beside ``output_dir`` and
renamed to ``output_dir`` only when the report is complete, so an interrupted or failed run never
leaves a directory that looks finished. Bad data (missing columns, one class, an empty file) fails
before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lit_opt.inference.measure import environment, loadavg
from lit_opt.recipe import report as report_lib
from lit_opt.recipe.evaluation import SHIPPED_FILES
from lit_opt.recipe.task import Task, Trained, announce

log = logging.getLogger(__name__)


class StageClock:
    """Wall-clock seconds of each named stage, printed as each one starts and ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        announce(f"{name}: {what}")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        announce(f"{name} done in {self.seconds[name]:.0f} s")

    def total(self) -> float:
        return time.perf_counter() - self._start


def _publish(run_dir: Path, out: Path) -> None:
    """Rename the finished ``run_dir`` to ``out``, replacing an earlier run's directory."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(run_dir, out)


def make_task(config: Any) -> Task:
    """The :class:`Task` that runs ``config`` (chosen by its ``task`` field)."""
    from lit_opt.recipe.classification import ClassificationTask

    tasks: dict[str, type[Task]] = {"classification": ClassificationTask}
    if config.task == "causal_lm":
        from lit_opt.recipe.causal_lm import CausalLMTask

        tasks["causal_lm"] = CausalLMTask
    return tasks[config.task](config)


def run_recipe(config: Any) -> dict[str, Any]:
    """Run the recipe of ``config``'s task; returns the report also written to ``<output_dir>/report.json``.

    Raises:
        ValueError: bad data (see the task's data module), before any output.

    Example::

        >>> from lit_opt.recipe import load_config
        >>> report = run_recipe(load_config("configs/recipes/rotten_tomatoes.yaml"))  # doctest: +SKIP
        >>> [r["name"] for r in report["rows"]]  # doctest: +SKIP
        ['teacher-fp32', 'teacher-bf16', 'student-distilled-fp32', 'ptq-int8-torch-ao', 'lit-opt-compressed']
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    task = make_task(config)
    env = {**environment(config.latency.threads), "loadavg_start": loadavg()}
    clock = StageClock()
    with clock.stage("data", task.stages["data"]):
        dm = task.make_data()
    out = Path(config.output_dir).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.incomplete-", dir=out.parent))
    announce(f"working in {run_dir} (renamed to {out} when complete)")
    with clock.stage("teacher", task.stages["teacher"]):
        teacher, teacher_dir = task.teacher(dm, run_dir)
    with clock.stage("distill", task.stages["distill"]):
        distilled = task.distill(dm, teacher, teacher_dir, run_dir)
    with clock.stage("compress", task.stages["compress"]):
        artifact = task.compress(dm, distilled, teacher, run_dir)
    with clock.stage("ptq_peer", task.stages["ptq_peer"]):
        peer = task.peer(dm, distilled, teacher, run_dir)
    trained = Trained(teacher, teacher_dir, distilled, artifact, peer, run_dir)
    candidates = task.candidates(dm, trained)
    extra = task.extra_stage()
    if extra is not None:
        with clock.stage(*extra):
            candidates += task.extra_candidates(dm, trained)
    with clock.stage("evaluate", task.stages["evaluate"]):
        rows = task.evaluate(candidates, dm)
    env["loadavg_end"] = loadavg()
    goal_rows = task.goals(rows)
    report = {
        "rows": rows,
        "goals": goal_rows,
        "goals_summary": report_lib.summary(goal_rows),
        **task.report_extras(rows),
        "stage_seconds": {**clock.seconds, "total": clock.total()},
        "data": task.data_summary(dm),
        "size_files": list(SHIPPED_FILES),
        "config": asdict(config),
        "env": env,
    }
    report_lib.write(report, run_dir, task)
    _publish(run_dir, out)
    print(task.table(rows))
    print(report["goals_summary"])
    plots = ", ".join(name for _, _, name in task.plots)
    announce(f"report: {out / 'report.md'} (and report.json, {plots})")
    return report
