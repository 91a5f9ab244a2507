"""DistillationModule on Rotten Tomatoes (CPU): student accuracy against the teacher, and the teacher cache.

On ``train_rows`` of the training split (``common.epoch_data``: the same batches in every run): the teacher,
all-MiniLM-L6-v2, fine-tuned for ``epochs``; then 3-layer students on the same steps, distilled on logits
from two initialisations (``keep_layers`` of the teacher and the pretrained ``minilm_l3()``; the better by
*validation* accuracy is used for the rest), on labels only (no teacher), on logits + hidden states, and on
logits with ``teacher_cache`` (its first epoch stores the teacher's logits, its second reads them: timed
against the uncached run). Test accuracy of each, and McNemar's paired test of distilled vs labels only.
"""

import math
import shutil
from typing import Any

import lightning as L

from benchmarks import common
from benchmarks.common import pct
from benchmarks.harness import Run, Settings, main
from lit_opt import DistillationModule
from lit_opt.distillation import students

SETTINGS = common.EPOCH_SETTINGS | common.DISTILL_SETTINGS
SETTINGS |= dict(train_rows=(4000, 64), test_rows=(0, 32), student_lr=1e-4, keep_layers=([0, 2, 4], [0]))
HELP = {
    "test_rows": "test examples (0: all)",
    "threads": "torch threads (2 on 2 shared cores made a step ~5x slower)",
}
MINIMUM = {"epochs": (2, "the teacher cache's second epoch, its reads, is timed.")}


def mcnemar(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Paired comparison of two rows on the same test examples: ``a`` right and ``b`` wrong, the reverse, and
    the exact two-sided binomial p-value of that split (McNemar's exact test)."""
    right = {i: (y == p, b["test"][i][0] == b["test"][i][1]) for i, (y, p) in a["test"].items()}
    only_a = sum(1 for x, y in right.values() if x and not y)
    only_b = sum(1 for x, y in right.values() if y and not x)
    n, k = only_a + only_b, min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2**n)
    names = {"first": a["name"], "second": b["name"]}
    return names | {"only_first_right": only_a, "only_second_right": only_b, "p_value": p}


def student(s: Settings, out: Run, name: str, init: str, **loss: Any) -> dict:
    """Train a 3-layer student (``init``: ``keep_layers`` or ``minilm_l3``) distilled from the saved teacher on
    logits (``s.alpha``) and ``loss`` (``hidden_weight``, ``cache``), or on labels alone (``labels_only``)."""
    teacher_dir = out.work_dir / "teacher"  # where common.fine_tune_teacher saved it
    L.seed_everything(common.SEED, verbose=False)  # the same new head in every run
    if init == "keep_layers":
        model = students.keep_layers(str(teacher_dir), s.keep_layers, num_labels=2)
        label = f"keep_layers(teacher, {s.keep_layers})"
    else:
        model, label = common.small_student(s.model), "minilm_l3() (new pooler and head)"
    module: L.LightningModule
    if loss.get("labels_only"):  # no teacher at all
        module = common.Classifier(model, lr=s.student_lr)
        text = f"cross-entropy only (Classifier, AdamW lr {s.student_lr:g}; no teacher)"
    else:
        alpha, hidden, cache = s.alpha, loss.get("hidden_weight", 0.0), loss.get("cache", False)
        teacher = students.pretrained(str(teacher_dir), num_labels=2)
        cache_dir = str(out.work_dir / "teacher_cache") if cache else None
        weights = dict(temperature=s.temperature, alpha=alpha, hidden_weight=hidden)
        module = DistillationModule(model, teacher, **weights, lr=s.student_lr, teacher_cache=cache_dir)
        text = f"{alpha:g}·T²·KL (T={s.temperature:g}) + {1 - alpha:g}·CE"
        text += f" + {hidden:g}·hidden MSE (layers {dict(module.layer_map)})" if hidden else ""
        text += " [teacher cache]" if cache else ""
    layers = f"{len(model.bert.encoder.layer)} layers"
    row = {"name": name, "model_desc": layers, "init": label, "init_key": init, "loss": text}
    return row | common.fit_epochs(s, out.work_dir, module) | common.evaluate(s, out.work_dir, model)


def run(s: Settings, out: Run) -> None:
    shutil.rmtree(out.work_dir / "teacher_cache", ignore_errors=True)
    _, measured, _ = common.fine_tune_teacher(s, out.work_dir)
    desc = "6 layers" if s.model == "minilm" else "tiny"
    teacher: dict[str, Any] = {"name": "teacher", "model_desc": desc, "init": "pretrained + new head"}
    teacher |= {"loss": f"cross-entropy (Classifier, AdamW lr {s.teacher_lr:g})"} | measured
    candidates = [student(s, out, "distilled logits", i) for i in ("keep_layers", "minilm_l3")]
    # the better by validation accuracy (keep_layers on a tie) is chosen for the other students
    c, o = sorted(candidates, key=lambda r: (r["val_acc"], r["init_key"] == "keep_layers"), reverse=True)
    choice = f"val {pct(c['val_acc'])} vs {pct(o['val_acc'])} for {o['init_key']}; "
    choice += f"test {pct(c['test_acc'])} vs {pct(o['test_acc'])}"
    o["name"] = "distilled logits (other init)"
    labels = student(s, out, "labels only", c["init_key"], labels_only=True)
    hidden = student(s, out, "distilled logits + hidden", c["init_key"], hidden_weight=s.hidden_weight)
    cached = student(s, out, "distilled logits (cached)", c["init_key"], cache=True)
    rows = [teacher, labels, c, hidden, o, cached]
    for r in rows:
        if r["steps"] != teacher["steps"]:
            raise RuntimeError(f"{r['name']} ran {r['steps']} steps, the teacher {teacher['steps']}")
    paired = [mcnemar(r, labels) for r in (c, hidden)]
    out.rows += [{k: v for k, v in r.items() if k != "test"} for r in rows]
    out.rows.append({"name": "paired", "tests": paired})
    se = common.standard_error(sum(r["test_acc"] for r in rows) / len(rows), teacher["test_n"])
    tests = "; ".join(
        f"{p['first']} vs {p['second']}: {p['only_first_right']} only-first-right, "
        f"{p['only_second_right']} only-second-right, p={p['p_value']:.3g}"
        for p in paired
    )
    out.table(
        f"Accuracy ({s.data}: {teacher['train_rows']} train rows, {teacher['test_n']} test rows, max_length "
        f"{s.max_length}, batch {s.batch_size}, {s.epochs} epochs = {teacher['steps']} steps each)",
        [
            (r["name"], r["init"], r["loss"], r["steps"], pct(r["val_acc"]), pct(r["test_acc"]))
            + (f"{100 * r['test_acc'] / teacher['test_acc']:.1f}%", f"{r['fit_wall_s']:.0f}")
            for r in rows
        ],
        notes=f"Student initialisation chosen by validation accuracy: **{c['init']}** ({choice}). Paired test "
        f"comparisons (McNemar exact p): {tests}. One seed: test accuracy's standard error is about {pct(se)}.",
        plot="test acc",
        columns=("model", "init", "loss", "steps", "val acc", "test acc", "% of teacher (test)", "fit s"),
    )
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
            (label, e, f"{w:.1f}", f"{cpu:.2f}", f"{baseline / w:.2f}x")
            for label, r in runs.items()
            for e, (w, cpu) in enumerate(zip(r["epoch_wall_s"], r["epoch_cpu_per_wall"], strict=True), 1)
        ],
        notes="The cache stores every logit (float32, cache_top_k=0), so the cached run trains on the same targets.",
        columns=("run", "epoch", "wall s", "cpu/wall", "uncached distilled epoch / this"),
    )
    for r in (c, hidden):
        name, ratio = r["name"], r["test_acc"] / teacher["test_acc"]
        versus = f"{pct(r['test_acc'])} vs {pct(labels['test_acc'])}"
        measured = f"{100 * ratio:.1f}% ({pct(r['test_acc'])} / {pct(teacher['test_acc'])})"
        out.goal(f"{name} recovers >= 97% of the teacher's test accuracy", measured, ratio >= 0.97)
        diff = f"{versus} ({100 * (r['test_acc'] - labels['test_acc']):+.2f} pts)"
        out.goal(f"{name} beats labels only (test)", diff, r["test_acc"] > labels["test_acc"])
    same = abs(cached["test_acc"] - c["test_acc"]) < 1e-9
    versus = f"{pct(cached['test_acc'])} vs {pct(c['test_acc'])}"
    out.goal("cached run reaches the uncached run's test accuracy", versus, same)


if __name__ == "__main__":
    raise SystemExit(main(__name__))
