"""Epoch time of DistillationModule with and without the teacher-output cache (CPU).

Teacher all-MiniLM-L6-v2 (a fresh 2-class head: the time, not the accuracy, is measured here), student
the pretrained 3-layer paraphrase-MiniLM-L3-v2 (``students.minilm_l3``), on the first ``examples``
Rotten Tomatoes snippets (``max_length`` 64, batch 32, no validation). Three runs, each from the same
student initialisation with the same batches: ``no cache`` (the teacher runs on every batch), ``cache``
(a new cache directory: the first epoch computes and stores the teacher's logits, later ones read them)
and ``later run`` (a new module and Trainer on run 2's directory, one epoch: all reads).
"""

import csv
import shutil
from typing import Any

import lightning as L

from benchmarks.common import SEED, Clock, classifier, csv_rows, small_student, text_data, trainer
from benchmarks.harness import Run, Settings, main
from lit_opt import DistillationModule

SETTINGS = dict(model="minilm", data="rotten_tomatoes", examples=(320, 128), epochs=2, top_k=0, threads=1)
HELP = {
    "top_k": "cache_top_k (0: every logit)",
    "threads": "torch threads (1 is steadier on a shared machine)",
}


def epochs(s: Settings, out: Run, teacher: Any, cache: str | None, count: int) -> list[float]:
    """Per-epoch seconds of one fit."""
    L.seed_everything(SEED, verbose=False)
    split = dict(val_fraction=0.05, test_fraction=0.05, return_index=True)
    dm = text_data(s, out.work_dir, path=out.work_dir / "subset.csv", max_length=64, batch_size=32, **split)
    cached = dict(teacher_cache=cache, cache_top_k=s.top_k)
    module = DistillationModule(small_student(s.model), teacher, lr=5e-5, **cached)
    clock = Clock()
    trainer([clock], max_epochs=count, default_root_dir=str(out.work_dir)).fit(module, datamodule=dm)
    return clock.wall


def run(s: Settings, out: Run) -> None:
    rows = csv_rows(s.data, out.work_dir)[: s.examples]  # the first ``examples`` rows
    with open(out.work_dir / "subset.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0].keys(), *(row.values() for row in rows)])
    teacher, cache = classifier(s.model), out.work_dir / "teacher_cache"
    shutil.rmtree(cache, ignore_errors=True)
    runs = (("no cache", None, s.epochs), ("cache", str(cache), s.epochs), ("later run", str(cache), 1))
    results = {name: epochs(s, out, teacher, cache_dir, count) for name, cache_dir, count in runs}
    baseline = sum(results["no cache"]) / len(results["no cache"])
    cells = []
    for name, seconds in results.items():
        for epoch, sec in enumerate(seconds, 1):
            row = {"run": name, "epoch": epoch, "seconds": sec}
            out.rows.append(row | {"speedup_vs_no_cache": baseline / sec})
            cells.append((f"{name}, epoch {epoch}", f"{sec:.2f}", f"{baseline / sec:.2f}x faster"))
    out.table(
        f"Teacher cache ({s.model} teacher, {s.examples} examples, cache_top_k={s.top_k}, {s.threads} thread(s))",
        cells,
        notes="vs no cache: the mean epoch of the uncached run over this epoch.",
        plot="epoch seconds",
        columns=("run", "epoch seconds", "vs no cache"),
    )


if __name__ == "__main__":
    raise SystemExit(main(__name__))
