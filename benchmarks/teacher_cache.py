"""Epoch time of DistillationModule with and without the teacher-output cache (CPU).

Teacher all-MiniLM-L6-v2 (a fresh 2-class head: the time, not the accuracy, is measured here), student
the pretrained 3-layer paraphrase-MiniLM-L3-v2 (``students.minilm_l3``), on the first ``examples``
Rotten Tomatoes snippets (``max_length`` 64, batch 32, no validation). Three runs, each from the same
student initialisation with the same batches: ``no cache`` (the teacher runs on every batch), ``cache``
(a new cache directory: the first epoch computes and stores the teacher's logits, later ones read them)
and ``later run`` (a new module and Trainer on run 2's directory, one epoch: all reads).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from benchmarks.common import SEED, Clock, TextData, classifier, csv_path, small_student, trainer
from benchmarks.harness import Benchmark, Run
from lit_opt import DistillationModule


def subset_csv(source: Path, n: int, directory: Path) -> Path:
    """The first ``n`` rows of ``source``, as a CSV of their own."""
    with open(source) as f:
        rows = list(itertools.islice(csv.DictReader(f), n))
    path = directory / f"first_{n}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def epochs(
    s: argparse.Namespace, out: Run, data: Path, teacher: Any, cache: str | None, count: int
) -> list[float]:
    """Per-epoch seconds of one fit."""
    L.seed_everything(SEED, verbose=False)
    dm = TextData(
        path=str(data),
        max_length=64,
        batch_size=32,
        val_fraction=0.05,
        test_fraction=0.05,
        return_index=True,
        cache_dir=str(out.work_dir / "tokenized") if s.data == "synthetic" else None,
    )
    module = DistillationModule(
        small_student(s.model), teacher, lr=5e-5, teacher_cache=cache, cache_top_k=s.top_k
    )
    clock = Clock()
    trainer([clock], max_epochs=count, default_root_dir=str(out.work_dir)).fit(module, datamodule=dm)
    return clock.wall


def run(s: argparse.Namespace, out: Run) -> None:
    teacher = classifier(s.model)
    data = subset_csv(csv_path(s.data, out.work_dir), s.examples, out.work_dir)
    cache = out.work_dir / "teacher_cache"
    shutil.rmtree(cache, ignore_errors=True)
    results = {
        "no cache": epochs(s, out, data, teacher, None, s.epochs),
        "cache": epochs(s, out, data, teacher, str(cache), s.epochs),
        "later run": epochs(s, out, data, teacher, str(cache), 1),
    }
    baseline = sum(results["no cache"]) / len(results["no cache"])
    cells = []
    for name, seconds in results.items():
        for epoch, sec in enumerate(seconds, 1):
            out.rows.append(
                {"run": name, "epoch": epoch, "seconds": sec, "speedup_vs_no_cache": baseline / sec}
            )
            cells.append({"run": f"{name}, epoch {epoch}", "epoch seconds": f"{sec:.2f}",
                          "vs no cache": f"{baseline / sec:.2f}x faster"})  # fmt: skip
    out.table(
        f"Teacher cache ({s.model} teacher, {s.examples} examples, cache_top_k={s.top_k}, {s.threads} thread(s))",
        cells,
        notes="vs no cache: the mean epoch of the uncached run over this epoch.",
        plot="epoch seconds",
    )


BENCH = Benchmark(
    "teacher_cache",
    __doc__,
    settings={"model": "minilm", "data": "rotten_tomatoes", "examples": 320, "epochs": 2, "top_k": 0, "threads": 1},
    quick={"examples": 128},
    run=run,
    help={"top_k": "cache_top_k (0: every logit)", "threads": "torch threads (1 is steadier on a shared machine)"},
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
