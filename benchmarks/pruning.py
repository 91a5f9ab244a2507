"""Pruning all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (CPU): accuracy, training-step cost, exported speed.

Every row fine-tunes the classifier for ``steps`` optimizer steps (``epochs`` short epochs, dense until
``prune_start``, the target reached at ``prune_end``) on the same fixed batches (``common.fixed_batches``):

- unstructured rows: test accuracy at each of ``sparsities`` of the encoder's Linear weights for lit_opt's
  ``IterativePruningCallback`` (cubic schedule, magnitude and movement scores, every ``prune_every`` steps)
  and Lightning's ``ModelPruning("l1_unstructured")`` (per-epoch amounts on the same cubic curve), with the
  measured sparsity, the step cost against dense after ``prune_end`` and the pruning events' cost;
- the training-step cost with 90% masks in place, all variants interleaved one step per round;
- structured rows (50% of FFN rows and/or heads), exported and loaded (kernels ``auto`` and ``reference``):
  parameters, file size, accuracy, latency at batch 1 and 32 against dense exported the same way and in
  eager fp32 (all models interleaved). The sparsest magnitude row is exported too (a smaller file only).
"""

import copy
import itertools
import statistics
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LambdaCallback, ModelPruning
from torch import nn

import lit_opt
from benchmarks import common
from benchmarks.common import pct
from benchmarks.harness import Run, Settings, compare, main, reject
from lit_opt.blocks import find_blocks
from lit_opt.functional.sparsity import is_pruning_step, sparsity_at
from lit_opt.inference.measure import Timing, dir_bytes, file_bytes, time_round_robin
from lit_opt.pruning import PruningConfig, accumulate_movement, prepare_pruning, update_masks, zero_pruned
from lit_opt.recipe.evaluation import accuracy
from lit_opt.targets import select_modules

SETTINGS = common.FIXED_SETTINGS | dict(
    steps=(180, 12),
    epochs=(6, 3),
    prune_every=(10, 2),
    prune_start=0,
    prune_end=0,
    lr=2e-4,
    scope="global",
    sparsities=([0.5, 0.7, 0.9], [0.9]),
    structured=["rows+heads"],
    test_size=(100_000, 32),
    repeats=(8, 1),
    repeats_b1=(30, 2),
    step_rounds=(12, 2),
    step_cost_only=False,
)
HELP = {
    "scope": "unstructured threshold per layer (local) or one for all (global; lit_opt compares scores "
    "relative to each layer's mean, ModelPruning raw magnitudes)",
    "structured": "rows, heads and/or rows+heads",
    "step_cost_only": "measure the interleaved training-step cost alone",
    "prune_start": "first pruning step (0: after one epoch)",
    "prune_end": "step reaching the target (0: half the steps)",
}
STRUCTURED = dict(rows="50% of FFN rows", heads="50% of heads")  # "rows+heads": both
LOAD_KERNELS = ("auto", "reference")  # "auto": bf16 on CPUs with native bf16
STEP_VARIANTS = [
    "dense",
    "lit_opt Mask parametrizations (magnitude)",
    "lit_opt Mask + movement scores",
    "ModelPruning (torch.nn.utils.prune hooks)",
]


def check(s: Settings) -> None:
    """Fill the ``prune_start``/``prune_end`` defaults and check the schedule.

    Raises:
        ValueError: steps not a multiple of epochs, a schedule outside the steps, a sparsity outside (0, 1).
    """
    if s.steps % s.epochs or s.steps // s.epochs < 2:
        hint = "ModelPruning prunes at epoch ends, so every row trains equal epochs."
        reject("steps", f"{s.steps} with epochs={s.epochs}", "a multiple with >= 2 steps per epoch", hint)
    s.steps_per_epoch = s.steps // s.epochs
    s.prune_start = s.prune_start or s.steps_per_epoch
    s.prune_end = s.prune_end or s.steps_per_epoch * max(2, round(s.epochs / 2))
    if not 0 <= s.prune_start < s.prune_end < s.steps:
        hint = "leave them 0 for one dense epoch and the target at half the steps."
        bounds = f"0 <= start < end < steps={s.steps}"
        reject(f"prune_start={s.prune_start} and prune_end", s.prune_end, bounds, hint)
    if any(not 0 < x < 1 for x in s.sparsities):
        reject("sparsities", s.sparsities, "fractions in (0, 1)", "e.g. 0.5 0.9.")


def l1_pruning(module: nn.Module, s: Settings, **options: Any) -> ModelPruning:
    """Lightning's ``ModelPruning("l1_unstructured")`` of the Linear layers every unstructured row prunes (lit_opt's
    own selection), over all of them at once (``scope`` global) or per layer."""
    layers = [(m, "weight") for m in select_modules(module, **common.ENCODER, types=(nn.Linear,)).values()]
    scope = dict(parameter_names=["weight"], use_global_unstructured=s.scope == "global", verbose=0)
    return ModelPruning("l1_unstructured", layers, **scope, **options)


def cubic_amounts(s: Settings, target: float) -> list[float]:
    """Per-epoch ModelPruning ``amount``: the fraction of the remaining weights that puts the cumulative
    sparsity on lit_opt's cubic curve at each epoch end (``1 - (1 - s_e) / (1 - s_{e-1})``)."""
    last = s.prune_end // s.steps_per_epoch  # the last epoch to end by prune_end; later ones prune no more
    steps = [min(epoch, last) * s.steps_per_epoch for epoch in range(s.epochs + 1)]  # global_step, epoch ends
    ends = [sparsity_at(step, target, "cubic", s.prune_start, s.prune_end) for step in steps]
    return [1.0 - (1.0 - now) / (1.0 - previous) for previous, now in itertools.pairwise(ends)]


def cubic_schedule(s: Settings) -> dict[str, Any]:
    """The schedule every lit_opt callback prunes on, as ``IterativePruningCallback`` (and ``is_pruning_step``)
    arguments: cubic from ``prune_start`` to ``prune_end``, every ``prune_every`` steps."""
    return dict(schedule="cubic", start_step=s.prune_start, end_step=s.prune_end, every_n_steps=s.prune_every)


def callbacks_of(row: dict[str, Any], module: nn.Module, s: Settings) -> list[L.Callback]:
    schedule = cubic_schedule(s)
    if row["kind"] == "lit_opt":
        config = {"target_sparsity": row["target"], "criterion": row["criterion"], "scope": s.scope}
        return [lit_opt.IterativePruningCallback(**config, **common.ENCODER, **schedule)]
    if row["kind"] == "model_pruning":
        amounts = row["model_pruning_amounts"] = cubic_amounts(s, row["target"])
        permanent = dict(use_lottery_ticket_hypothesis=False, make_pruning_permanent=True)
        return [l1_pruning(module, s, amount=amounts.__getitem__, **permanent)]  # amount: the epoch's
    structured = {"target_sparsity": 0.5, "scope": "local", "criterion": "magnitude", **schedule}
    kinds = (("rows", "*.intermediate.dense"), ("heads", "*.attention.self"))
    return [
        lit_opt.IterativePruningCallback(structure=kind, targets=[pattern], **structured)
        for kind, pattern in kinds
        if kind in row.get("structure", "")
    ]


def train_row(row: dict[str, Any], base: nn.Module, data: dict, s: Settings) -> common.Classifier:
    """Fine-tune a copy of ``base`` with ``row``'s callbacks; fills ``row`` with its measurements."""
    module = common.Classifier(copy.deepcopy(base).train(), lr=s.lr)
    callbacks, clock, marks = callbacks_of(row, module, s), common.Clock(), []
    mark = LambdaCallback(on_train_epoch_end=lambda *_: marks.append(time.perf_counter()))
    # the clock first: its window has the other callbacks' per-batch hooks; the marks bracket their epoch ends
    order = [clock, mark, *callbacks, mark]
    row["fit_s"] = common.fit_batches(module, data, data["batches"], s.epochs, callbacks=order)
    row.update(step_of_batch=clock.steps, step_ms=clock.wall_ms, step_cpu_ms=clock.cpu_ms)
    pruned = any(isinstance(cb, lit_opt.IterativePruningCallback) for cb in callbacks)
    row["pruning_steps"] = [t for t in range(s.steps) if pruned and is_pruning_step(t, **cubic_schedule(s))]
    row["epoch_end_ms"] = [(b - a) * 1e3 for a, b in zip(marks[::2], marks[1::2], strict=True)]
    layers = select_modules(module, **common.ENCODER, types=(nn.Linear,))
    weights = {name.removeprefix("model.bert."): layer.weight for name, layer in layers.items()}
    zeros = {name: int((w == 0).sum()) for name, w in weights.items()}
    row["layer_sparsity"] = {name: zeros[name] / w.numel() for name, w in weights.items()}
    row["sparsity_targeted"] = sum(zeros.values()) / sum(w.numel() for w in weights.values())
    row["accuracy"] = accuracy(module.model, data["dm"])[0]
    return module


def step_overhead(row: dict[str, Any], dense: dict[str, Any], s: Settings) -> None:
    """Step cost vs dense from ``prune_end`` on (every callback holds its final masks), pruning steps left
    out: ``ratio_of_medians`` and ``paired_median_ratio`` (per-step ratios: the same batch in both runs)."""
    late = [i for i, step in enumerate(row["step_of_batch"]) if step >= s.prune_end]
    kept = [i for i in late if row["step_of_batch"][i] not in row["pruning_steps"]]
    steps = {name: Timing([r["step_ms"][i] for i in kept]) for name, r in (("row", row), ("dense", dense))}
    c = compare(steps, "dense")["row"]
    row |= {"step_median_ms": c["median_ms"], "step_p90_ms": c["p90_ms"], "ratio_of_medians": c["ratio"]}
    row["paired_median_ratio"] = c["paired_ratio"]
    row["cpu_per_wall"] = sum(row["step_cpu_ms"][i] for i in late) / sum(row["step_ms"][i] for i in late)
    if row["pruning_steps"]:
        timed = dict(zip(row["step_of_batch"], row["step_ms"], strict=True))
        events = [timed[t] for t in row["pruning_steps"] if t in timed]
    else:
        amounts = row.get("model_pruning_amounts", [])
        events = [t for t, a in zip(row["epoch_end_ms"], amounts, strict=False) if a > 0]
    row["pruning_events"] = len(events)
    row["pruning_median_ms"] = statistics.median(events) if events else None


def step_cost(out: Run, base: nn.Module, data: dict[str, Any], s: Settings) -> None:
    """Training-step cost with 90% masks in place, the variants interleaved (no pruning event): rows, table, goal."""
    batches = [data["collate"]([data["train"][i] for i in b]) for b in data["batches"][:4]]

    def make(variant: str) -> Any:
        holder = common.Classifier(copy.deepcopy(base), lr=s.lr)  # the module and optimizer the rows train
        optimizer = holder.configure_optimizers()
        if variant.startswith("lit_opt"):
            criterion = "movement" if "movement" in variant else "magnitude"
            config = PruningConfig(0.9, criterion=criterion, scope=s.scope, **common.ENCODER)
            groups = prepare_pruning(holder, config)
            update_masks(groups, config, 0.9, 0)
            zero_pruned(groups)  # as the callback does after each mask update and optimizer step
            optimizer.register_step_post_hook(lambda *_: zero_pruned(groups))
            if criterion == "movement":  # after the backward pass, as the callback does before each step
                optimizer.register_step_pre_hook(lambda *_: accumulate_movement(groups))
        elif variant.startswith("ModelPruning"):  # what its callback does at an epoch end
            l1_pruning(holder, s).apply_pruning(0.9)
        return common.step_call(holder.model, batches, optimizer)

    torch.manual_seed(0)
    costs = compare(time_round_robin({v: make(v) for v in STEP_VARIANTS}, s.warmup, s.step_rounds), "dense")
    out.rows += [{"name": f"step cost: {n}", **c} for n, c in costs.items()]
    out.table(
        f"Training-step cost with 90% masks in place (batch 32, interleaved: {costs['dense']['rounds']} rounds of "
        "one step per variant)",
        [
            {
                "variant": n,
                "step median ms": f"{c['median_ms']:.0f}",
                "step p90 ms": f"{c['p90_ms']:.0f}",
                "vs dense (ratio of medians)": f"{c['ratio']:.3f}x",
                "vs dense (paired median)": f"{c['paired_ratio']:.3f}x",
                "cpu/wall": f"{c['cpu_per_wall']:.2f}",
            }
            for n, c in costs.items()
        ],
        plot="vs dense (ratio of medians)",
    )
    worst = max((n for n in costs if n.startswith("lit_opt")), key=lambda n: costs[n]["ratio"])
    w = costs[worst]
    measured = f"worst {worst}: {w['ratio']:.3f}x (paired {w['paired_ratio']:.3f}x)"
    out.goal("lit_opt step overhead <= 5% (interleaved, no pruning event)", measured, w["ratio"] <= 1.05)


def architecture(model: nn.Module) -> dict[str, Any]:
    """Parameters and per-layer widths of a (possibly loaded) BERT classifier."""
    layers = model.bert.encoder.layer
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "nonzero_params": sum(int((p != 0).sum()) for p in model.parameters()),
        "ffn_width": [int(layer.intermediate.dense.weight.shape[0]) for layer in layers],
        # lit_opt's own view of the attention blocks (in layer order): each unit a head here (group 1)
        "heads": [block.units * block.group for block in find_blocks(model) if block.kind == "attention"],
    }


def export_rows(name: str, model: nn.Module, data: dict, out: Run, masked: float, models: dict) -> list[dict]:
    """Export ``model`` (masks and all), load it with each of ``LOAD_KERNELS`` into ``models``: a row per kernel."""
    slug = name.replace(" ", "_").replace("%", "pct").replace("+", "_")
    path = lit_opt.export(model.eval(), out.work_dir / "artifacts" / slug)
    rows = []
    for kernel in LOAD_KERNELS:
        loaded = models[f"{name} (load {kernel})"] = lit_opt.load(path, kernel=kernel)
        size = {"bytes": file_bytes(path / "model.safetensors"), "artifact_dir_bytes": dir_bytes(path)}
        row = {"name": f"{name} (load {kernel})", "source": name, "kernel": kernel, "masked_accuracy": masked}
        row |= size | {"dtype": str(next(loaded.parameters()).dtype).removeprefix("torch.")}
        row["max_abs_logit_diff_vs_masked"] = common.logit_diff(loaded, model)
        rows.append(row | {"accuracy": accuracy(loaded, data["dm"])[0]} | architecture(loaded))
    return rows


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def run(s: Settings, out: Run) -> None:
    check(s)
    torch.set_flush_denormal(True)  # every row alike: no slow path for subnormal optimizer state
    data, base = common.fixed_batches(s, out.work_dir, s.steps), common.classifier(s.model)
    step_cost(out, base, data, s)
    if s.step_cost_only:
        return
    rows: list[dict[str, Any]] = [{"name": "dense", "kind": "dense", "target": None}]
    for t in s.sparsities:
        for c in ("magnitude", "movement"):
            rows.append({"name": f"lit_opt {c} {t:.0%}", "kind": "lit_opt", "criterion": c, "target": t})
        rows.append({"name": f"ModelPruning l1 {t:.0%}", "kind": "model_pruning", "target": t})
    for x in s.structured:
        name = "structured " + " + ".join(STRUCTURED[part] for part in x.split("+"))
        rows.append({"name": name, "kind": "structured", "structure": x, "target": None})
    exports: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}  # every exported row's model, timed together
    for row in rows:
        model = train_row(row, base, data, s).model.eval()
        step_overhead(row, rows[0], s)  # the dense row trains first
        if row["kind"] == "dense":
            acc, models["dense eager fp32"] = row["accuracy"], model
            eager = {"name": "dense eager fp32", "dtype": "float32", "masked_accuracy": acc, "accuracy": acc}
            exports.append(eager | {"kernel": None, "bytes": None, **architecture(model)})
            exports += export_rows("dense", model, data, out, acc, models)
        elif row["kind"] == "structured" or row["name"] == f"lit_opt magnitude {max(s.sparsities):.0%}":
            exported = export_rows(row["name"], model, data, out, row["accuracy"], models)
            exports += [{**e, "structure": row.get("structure")} for e in exported]
    by = {e["name"]: e for e in exports}
    repeats = {1: s.repeats_b1, 32: s.repeats}
    timed = common.time_batches(models, "dense eager fp32", repeats, s.latency_seq_len, s.warmup)
    for batch, stats in timed.items():
        for name, t in stats.items():
            by[name].update({f"b{batch}_{k}": v for k, v in t.items()})
    for e in exports:
        e["physical"] = e["params"] < exports[0]["params"]
    per_step = ("step_ms", "step_cpu_ms", "step_of_batch")
    out.rows += [{k: v for k, v in r.items() if k not in per_step} for r in rows] + exports
    report(out, s, rows, exports, data["sizes"]["test"])


def row_cells(r: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuning row of the table."""
    layers = r["layer_sparsity"]
    sparsest = max(layers, key=layers.__getitem__)
    events = f"{r['pruning_events']} ({r['pruning_median_ms']:.0f})" if r["pruning_events"] else "-"
    return {
        "row": r["name"],
        "target": fmt(r["target"], ".0%"),
        "measured sparsity": pct(r["sparsity_targeted"]),
        "test acc": pct(r["accuracy"]),
        "vs dense (pts)": f"{100 * (r['accuracy'] - dense['accuracy']):+.2f}",
        "step median ms": f"{r['step_median_ms']:.0f}",
        "step vs dense (ratio of medians)": f"{r['ratio_of_medians']:.3f}x",
        "step vs dense (paired median)": f"{r['paired_median_ratio']:.3f}x",
        "pruning events (median ms each)": events,
        "fit s": f"{r['fit_s']:.0f}",
        "cpu/wall": f"{r['cpu_per_wall']:.2f}",
        "sparsest layer": f"{sparsest} {layers[sparsest]:.1%}",
    }


def export_cells(e: dict[str, Any], by: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An exported row of the table; speedups against dense in eager fp32 and loaded with the same kernel."""
    same, b32 = by.get(f"dense (load {e.get('kernel')})"), e["b32_median_ms"]
    widths = [sorted(set(e["ffn_width"])), sorted(set(e["heads"]))]
    return {
        "row": e["name"],
        "dtype": e["dtype"],
        "masked acc": fmt(e.get("masked_accuracy"), ".2%"),
        "loaded acc": pct(e["accuracy"]),
        "max abs logit diff loaded vs masked": fmt(e.get("max_abs_logit_diff_vs_masked"), ".2g"),
        "params": f"{e['params']:,}",
        "nonzero params": f"{e['nonzero_params']:,}",
        "FFN width / heads per layer": " / ".join("/".join(map(str, w)) for w in widths),
        "file MB": fmt(e.get("bytes") and e["bytes"] / 1e6, ".1f"),
        "b1 ms": f"{e['b1_median_ms']:.1f}",
        "b32 ms": f"{b32:.0f}",
        "b32 speedup vs dense eager fp32": f"{by['dense eager fp32']['b32_median_ms'] / b32:.2f}x",
        "b32 speedup vs dense loaded same kernel": f"{same['b32_median_ms'] / b32:.2f}x" if same else "n/a",
        "b32 cpu/wall": f"{e['b32_cpu_per_wall']:.2f}",
    }


def report(out: Run, s: Settings, rows: list[dict], exports: list[dict], n_test: int) -> None:
    dense, by = rows[0], {e["name"]: e for e in exports}
    se = 100 * common.standard_error(dense["accuracy"], n_test)
    out.table(
        f"Fine-tuning rows ({s.model}, {s.steps} steps x batch 32, max_length 64, AdamW lr {s.lr:g}, unstructured "
        f"scope {s.scope}, {s.epochs} epochs of {s.steps_per_epoch} steps, target reached at step {s.prune_end}; "
        f"test n={n_test})",
        [row_cells(r, dense) for r in rows],
        notes=f"One seed: binomial standard error ~{se:.1f} pts per row. Sparsity: exact zeros in the effective "
        "encoder Linear weights. Step times: the Lightning step (forward, backward, AdamW) with the callbacks' "
        "per-batch hooks, over steps >= prune_end that are not lit_opt pruning steps (ModelPruning prunes between "
        "epochs).",
        plot="test acc",
    )
    physical = any(e["physical"] for e in exports if e.get("structure"))
    out.table(
        f"Structured pruning, exported and loaded (latency: seq {s.latency_seq_len}, {s.threads} threads, medians, "
        "interleaved)",
        [export_cells(e, by) for e in exports],
        notes=f"Structured export physical: {physical}. Latency inputs are random token ids, full attention mask.",
        plot="b32 speedup vs dense eager fp32",
    )
    at90 = [r for r in rows if r["target"] == 0.9]
    lit, mp = [r for r in at90 if r["kind"] == "lit_opt"], [r for r in at90 if r["kind"] == "model_pruning"]
    if lit and mp:
        best = max(lit, key=lambda r: r["accuracy"])
        margin = 100 * (best["accuracy"] - mp[0]["accuracy"])
        measured = f"{best['name']} {best['accuracy']:.2%} vs {mp[0]['accuracy']:.2%} ({margin:+.2f} pts)"
        out.goal("lit_opt best at 90% >= ModelPruning + 2 pts", measured, margin >= 2.0)
    for kernel in LOAD_KERNELS:
        structured = [e for e in exports if e.get("structure") and e["kernel"] == kernel]
        if structured:
            best = min(structured, key=lambda e: e["b32_median_ms"])
            speed = by[f"dense (load {kernel})"]["b32_median_ms"] / best["b32_median_ms"]
            vs_eager = by["dense eager fp32"]["b32_median_ms"] / best["b32_median_ms"]
            measured = f"{best['name']}: {speed:.2f}x ({vs_eager:.2f}x vs dense eager fp32; "
            measured += f"physical removal: {best['physical']})"
            goal = f"structured >= 1.5x faster than dense at b32 (both loaded with {kernel})"
            out.goal(goal, measured, speed >= 1.5)


if __name__ == "__main__":
    raise SystemExit(main(__name__))
