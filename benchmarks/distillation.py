"""DistillationModule on Rotten Tomatoes (CPU): student accuracy against the teacher, and the teacher cache.

On ``train_rows`` of the training split (``common.epoch_data``: the same batches in every run): the teacher,
all-MiniLM-L6-v2, fine-tuned for ``epochs``; then 3-layer students on the same steps, distilled on logits
from two initialisations (``keep_layers`` of the teacher and the pretrained ``minilm_l3()``; the better by
*validation* accuracy is used for the rest), on labels only (no teacher), on logits + hidden states, and on
logits with ``teacher_cache`` (its first epoch stores the teacher's logits, its second reads them: timed
against the uncached run). Test accuracy of each, and McNemar's paired test of distilled vs labels only.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from benchmarks.common import (
    EPOCH_QUICK,
    EPOCH_SETTINGS,
    SEED,
    Classifier,
    evaluate,
    fine_tune_teacher,
    fit_epochs,
    pct,
    small_student,
    standard_error,
)
from benchmarks.harness import Benchmark, Run, reject
from lit_opt import DistillationModule
from lit_opt.distillation import students


def mcnemar(a: dict[int, tuple[int, int]], b: dict[int, tuple[int, int]]) -> dict[str, Any]:
    """Paired comparison on the same examples: ``a`` right and ``b`` wrong, the reverse, and the exact
    two-sided binomial p-value of that split (McNemar's exact test)."""
    right = {i: (y == p, b[i][0] == b[i][1]) for i, (y, p) in a.items()}
    only_a = sum(1 for x, y in right.values() if x and not y)
    only_b = sum(1 for x, y in right.values() if y and not x)
    n, k = only_a + only_b, min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n)
    return {"only_first_right": only_a, "only_second_right": only_b, "p_value": p}


def student(
    s: argparse.Namespace, out: Run, name: str, init: str, teacher_dir: Path, alpha: float, hidden: float = 0.0,
    cache: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Train a 3-layer student (``init``: ``keep_layers`` or ``minilm_l3``; ``alpha`` 0: labels only): one row."""
    L.seed_everything(SEED, verbose=False)  # the same new head in every run
    if init == "keep_layers":
        model = students.keep_layers(str(teacher_dir), s.keep_layers, num_labels=2)
        label = f"keep_layers(teacher, {s.keep_layers})"
    else:
        model, label = small_student(s.model), "minilm_l3() (new pooler and head)"
    module: L.LightningModule
    if alpha == 0.0:  # labels only: no teacher at all
        module = Classifier(model, lr=s.student_lr)
        loss = f"cross-entropy only (Classifier, AdamW lr {s.student_lr:g}; no teacher)"
    else:
        module = DistillationModule(
            model, students.pretrained(str(teacher_dir), num_labels=2), temperature=s.temperature, alpha=alpha,
            hidden_weight=hidden, lr=s.student_lr, teacher_cache=str(out.work_dir / "teacher_cache") if cache else None,
        )  # fmt: skip
        loss = f"{alpha:g}·T²·KL (T={s.temperature:g}) + {1 - alpha:g}·CE"
        loss += f" + {hidden:g}·hidden MSE (layers {dict(module.layer_map)})" if hidden else ""
        loss += " [teacher cache]" if cache else ""
    row = {
        "name": name,
        "model_desc": f"{len(model.bert.encoder.layer)} layers",
        "init": label,
        "init_key": init,
    }
    return row | {"loss": loss} | fit_epochs(s, out.work_dir, module) | evaluate(s, out.work_dir, model)


def run(s: argparse.Namespace, out: Run) -> None:
    """Raises ValueError: ``epochs`` < 2 (the cache's second epoch is what is timed)."""
    if s.epochs < 2:
        reject("epochs", s.epochs, "2 or more", "the teacher cache's second epoch, its reads, is timed.")
    shutil.rmtree(out.work_dir / "teacher_cache", ignore_errors=True)
    _, measured, teacher_dir = fine_tune_teacher(s, out.work_dir)
    teacher = {"name": "teacher", "model_desc": "6 layers" if s.model == "minilm" else "tiny",
               "init": "pretrained + new head", "loss": f"cross-entropy (Classifier, AdamW lr {s.teacher_lr:g})",
               **measured}  # fmt: skip
    candidates = {
        i: student(s, out, "distilled logits", i, teacher_dir, s.alpha) for i in ("keep_layers", "minilm_l3")
    }
    chosen = max(candidates, key=lambda k: (candidates[k]["val_acc"], k == "keep_layers"))
    other = next(k for k in candidates if k != chosen)
    c, o = candidates[chosen], candidates[other]
    choice = f"val {pct(c['val_acc'])} vs {pct(o['val_acc'])} for {other}; test {pct(c['test_acc'])} vs {pct(o['test_acc'])}"
    o["name"] = "distilled logits (other init)"
    labels = student(s, out, "labels only", chosen, teacher_dir, alpha=0.0)
    hidden = student(s, out, "distilled logits + hidden", chosen, teacher_dir, s.alpha, s.hidden_weight)
    cached = student(s, out, "distilled logits (cached)", chosen, teacher_dir, s.alpha, cache=True)
    rows = [teacher, labels, c, hidden, o, cached]
    for r in rows:
        if r["steps"] != teacher["steps"]:
            raise RuntimeError(f"{r['name']} ran {r['steps']} steps, the teacher {teacher['steps']}")
    distilled = {"distilled logits": c, "distilled logits + hidden": hidden}
    paired = [
        {"first": n, "second": "labels only", **mcnemar(r["test"], labels["test"])}
        for n, r in distilled.items()
    ]
    out.rows += [{k: v for k, v in r.items() if k != "test"} for r in rows]
    out.rows.append({"name": "paired", "tests": paired})
    se = standard_error(sum(r["test_acc"] for r in rows) / len(rows), teacher["test_n"])
    out.table(
        f"Accuracy ({s.data}: {teacher['train_rows']} train rows, {teacher['test_n']} test rows, max_length "
        f"{s.max_length}, batch {s.batch_size}, {s.epochs} epochs = {teacher['steps']} steps each)",
        [
            {"model": r["name"], "init": r["init"], "loss": r["loss"], "steps": r["steps"], "val acc": pct(r["val_acc"]),
             "test acc": pct(r["test_acc"]), "% of teacher (test)": f"{100 * r['test_acc'] / teacher['test_acc']:.1f}%",
             "fit s": f"{r['fit_wall_s']:.0f}"}
            for r in rows
        ],
        notes=f"Student initialisation chosen by validation accuracy: **{c['init']}** ({choice}). Paired test "
        "comparisons (McNemar exact p): "
        + "; ".join(
            f"{p['first']} vs {p['second']}: {p['only_first_right']} only-first-right, "
            f"{p['only_second_right']} only-second-right, p={p['p_value']:.3g}"
            for p in paired
        )
        + f". One seed: test accuracy's standard error is about {pct(se)}.",
        plot="test acc",
    )  # fmt: skip
    runs = {
        "distilled logits, no cache": c,
        "distilled logits, teacher_cache (epoch 1 fills it)": cached,
        "labels only (plain Classifier, no teacher: the floor)": labels,
        "distilled + hidden states (cache not possible)": hidden,
    }
    baseline = sum(c["epoch_wall_s"]) / len(c["epoch_wall_s"])
    out.table(
        "Epoch time, teacher cache (the chosen student, same batches)",
        [
            {"run": label, "epoch": e, "wall s": f"{w:.1f}", "cpu/wall": f"{cpu:.2f}", "uncached distilled epoch / this": f"{baseline / w:.2f}x"}
            for label, r in runs.items()
            for e, (w, cpu) in enumerate(zip(r["epoch_wall_s"], r["epoch_cpu_per_wall"], strict=True), 1)
        ],
        notes="The cache stores every logit (float32, cache_top_k=0), so the cached run trains on the same targets.",
    )  # fmt: skip
    for name, r in distilled.items():
        ratio = r["test_acc"] / teacher["test_acc"]
        measured = f"{100 * ratio:.1f}% ({pct(r['test_acc'])} / {pct(teacher['test_acc'])})"
        out.goal(f"{name} recovers >= 97% of the teacher's test accuracy", measured, ratio >= 0.97)
        diff = f"{pct(r['test_acc'])} vs {pct(labels['test_acc'])} ({100 * (r['test_acc'] - labels['test_acc']):+.2f} pts)"
        out.goal(f"{name} beats labels only (test)", diff, r["test_acc"] > labels["test_acc"])
    same = abs(cached["test_acc"] - c["test_acc"]) < 1e-9
    goal = "cached run reaches the uncached run's test accuracy"
    out.goal(goal, f"{pct(cached['test_acc'])} vs {pct(c['test_acc'])}", same)


BENCH = Benchmark(
    "distillation",
    __doc__,
    settings={
        **EPOCH_SETTINGS, "train_rows": 4000, "test_rows": 0, "epochs": 2, "teacher_lr": 1e-4, "student_lr": 1e-4,
        "temperature": 2.0, "alpha": 0.7, "hidden_weight": 1.0, "keep_layers": [0, 2, 4],
    },
    quick={**EPOCH_QUICK, "keep_layers": [0]},
    run=run,
    help={
        "test_rows": "test examples (0: all)",
        "threads": "torch threads (2 on 2 shared cores made a step ~5x slower)",
    },
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
