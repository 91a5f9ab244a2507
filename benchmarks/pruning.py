"""Pruning all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (CPU): accuracy, training-step cost, exported speed.

Every row fine-tunes the classifier for ``steps`` optimizer steps (``epochs`` short epochs) on the same
fixed length-bucketed batches in the same order with the same dropout seed (``common.fixed_batches``):

- unstructured rows (dense first): test accuracy at each of ``sparsities`` of the encoder's Linear weights
  (embeddings, pooler and classifier stay dense) for lit_opt's ``IterativePruningCallback`` with cubic
  magnitude and movement scores and for Lightning's ``ModelPruning("l1_unstructured")`` with per-epoch
  amounts on the same cubic curve (``torch.nn.utils.prune`` amounts compose on what is left; same weights
  and ``scope``; no lottery-ticket rewinding); the measured sparsity; the step cost against the dense
  run on the same steps (from ``prune_end`` on, pruning steps left out) and the pruning events' cost;
- the training-step cost again, interleaved (one step of each variant per round, the same batches) with
  90% masks in place: dense, lit_opt's masks (zeroed after each optimizer step, as the callback does),
  the same plus movement scores, and ``torch.nn.utils.prune``'s hooks as ModelPruning leaves them;
- structured rows: 50% of the FFN rows and 50% of the heads (magnitude, local), exported and loaded
  (kernels ``auto`` and ``reference``): parameters and widths, file size, latency at batch 1 and 32 (seq
  128, all models interleaved) against the dense model exported and loaded the same way and in eager
  fp32, and the loaded model's accuracy next to the masked one's. The sparsest magnitude row is
  exported too (sparse encoding: a smaller file, no speedup expected).

Every row fine-tunes densely for one epoch (``prune_start``, 0: one epoch) and reaches its target at
``prune_end`` (0: half the steps, an epoch boundary); lit_opt prunes every ``prune_every`` steps,
ModelPruning at epoch ends.
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn.utils import prune

import lit_opt
from benchmarks.common import (
    ENCODER_EXCLUDE,
    ENCODER_TARGETS,
    VOCAB,
    Classifier,
    StepClock,
    accuracy,
    classifier,
    fit_batches,
    fixed_batches,
    logit_diff,
)
from benchmarks.harness import Benchmark, Run, compare
from lit_opt.functional.sparsity import is_pruning_step, sparsity_at
from lit_opt.inference.measure import (
    call_model,
    dir_bytes,
    file_bytes,
    percentile,
    synthetic_batch,
    time_round_robin,
)
from lit_opt.pruning import PruningConfig, accumulate_movement, prepare_pruning, update_masks, zero_pruned
from lit_opt.targets import select_modules

STRUCTURED = {
    "rows": "50% of FFN rows",
    "heads": "50% of heads",
    "rows+heads": "50% of FFN rows + 50% of heads",
}
LOAD_KERNELS = ("auto", "reference")  # "auto": bf16 on CPUs with native bf16
STEP_VARIANTS = [
    "dense",
    "lit_opt Mask parametrizations (magnitude)",
    "lit_opt Mask + movement scores",
    "ModelPruning (torch.nn.utils.prune hooks)",
]


def check(s: argparse.Namespace) -> None:
    """Fill the ``prune_start``/``prune_end`` defaults and check the schedule.

    Raises:
        ValueError: steps not a multiple of epochs, a schedule outside the steps, a sparsity outside (0, 1).
    """
    if s.steps % s.epochs or s.steps // s.epochs < 2:
        raise ValueError(
            f"steps={s.steps} is not accepted with epochs={s.epochs}; expected a multiple with >= 2 steps per "
            "epoch. HINT: ModelPruning prunes at epoch ends, so every row trains equal epochs."
        )
    s.steps_per_epoch = s.steps // s.epochs
    s.prune_start = s.prune_start or s.steps_per_epoch
    s.prune_end = s.prune_end or s.steps_per_epoch * max(2, round(s.epochs / 2))
    if not 0 <= s.prune_start < s.prune_end < s.steps:
        raise ValueError(
            f"prune_start={s.prune_start} and prune_end={s.prune_end} are not accepted; expected 0 <= start < end "
            f"< steps={s.steps}. HINT: leave them 0 for one dense epoch and the target at half the steps."
        )
    if any(not 0 < x < 1 for x in s.sparsities):
        raise ValueError(
            f"sparsities={s.sparsities} is not accepted; expected fractions in (0, 1). HINT: e.g. 0.5 0.9."
        )


def targeted(module: nn.Module) -> dict[str, nn.Module]:
    """The Linear layers every unstructured row prunes (lit_opt's own selection)."""
    return select_modules(module, ENCODER_TARGETS, ENCODER_EXCLUDE, types=(nn.Linear,))


def cubic_amounts(s: argparse.Namespace, target: float) -> list[float]:
    """Per-epoch ModelPruning ``amount``: the fraction of the remaining weights that puts the cumulative
    sparsity on lit_opt's cubic curve at each epoch end (``1 - (1 - s_e) / (1 - s_{e-1})``)."""
    amounts, previous = [], 0.0
    for epoch in range(s.epochs):
        step = (epoch + 1) * s.steps_per_epoch  # global_step after the epoch's last optimizer step
        current = (
            sparsity_at(step, target, "cubic", s.prune_start, s.prune_end)
            if step <= s.prune_end
            else previous
        )
        amounts.append(1.0 - (1.0 - current) / (1.0 - previous))
        previous = current
    return amounts


def callbacks_of(row: dict[str, Any], module: nn.Module, s: argparse.Namespace) -> list[L.Callback]:
    schedule = {
        "schedule": "cubic",
        "start_step": s.prune_start,
        "end_step": s.prune_end,
        "every_n_steps": s.prune_every,
    }
    if row["kind"] == "lit_opt":
        return [
            lit_opt.IterativePruningCallback(
                target_sparsity=row["target"], criterion=row["criterion"], scope=s.scope,
                targets=ENCODER_TARGETS, exclude=ENCODER_EXCLUDE, **schedule,
            )
        ]  # fmt: skip
    if row["kind"] == "model_pruning":
        from lightning.pytorch.callbacks import ModelPruning

        amounts = row["model_pruning_amounts"] = cubic_amounts(s, row["target"])
        return [
            ModelPruning(
                "l1_unstructured", parameters_to_prune=[(m, "weight") for m in targeted(module).values()],
                parameter_names=["weight"], use_global_unstructured=s.scope == "global",
                amount=lambda epoch: amounts[epoch], use_lottery_ticket_hypothesis=False,
                make_pruning_permanent=True, verbose=0,
            )
        ]  # fmt: skip
    common = {"target_sparsity": 0.5, "scope": "local", "criterion": "magnitude", **schedule}
    structure = row.get("structure", "")
    return [
        lit_opt.IterativePruningCallback(structure=kind, targets=[pattern], **common)
        for kind, pattern in (("rows", "*.intermediate.dense"), ("heads", "*.attention.self"))
        if kind in structure
    ]


class EpochEndMark(L.Callback):
    """Appends the time at each epoch end to ``marks``: listed first and last, consecutive pairs bracket
    the other callbacks' epoch-end hooks (where ModelPruning prunes)."""

    def __init__(self, marks: list[float]) -> None:
        self.marks = marks

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.marks.append(time.perf_counter())


def train_row(
    row: dict[str, Any], base: nn.Module, data: dict[str, Any], s: argparse.Namespace
) -> Classifier:
    """Fine-tune a copy of ``base`` with ``row``'s callbacks; fills ``row`` with its measurements."""
    module = Classifier(copy.deepcopy(base).train(), lr=s.lr)
    callbacks, clock, marks = callbacks_of(row, module, s), StepClock(s.threads), []
    order = [
        clock,
        EpochEndMark(marks),
        *callbacks,
        EpochEndMark(marks),
    ]  # clock first: its window has the hooks
    row["fit_s"] = fit_batches(module, data, data["batches"], s.epochs, callbacks=order)
    torch.set_num_threads(s.threads)
    steps = set()
    for cb in callbacks:
        if isinstance(cb, lit_opt.IterativePruningCallback):
            c = cb.config
            steps |= {
                t
                for t in range(s.steps)
                if is_pruning_step(t, c.schedule, c.start_step, cb.end_step, c.every_n_steps)
            }
    row.update(
        step_of_batch=clock.steps,
        step_ms=clock.wall_ms,
        step_cpu_ms=clock.cpu_ms,
        pruning_steps=sorted(steps),
    )
    row["epoch_end_ms"] = [(b - a) * 1e3 for a, b in zip(marks[::2], marks[1::2], strict=True)]
    zeros = total = 0
    row["layer_sparsity"] = {}
    with torch.no_grad():
        for name, layer in targeted(module).items():
            z = int((layer.weight == 0).sum())
            row["layer_sparsity"][name.removeprefix("model.bert.")] = z / layer.weight.numel()
            zeros, total = zeros + z, total + layer.weight.numel()
    row["sparsity_targeted"] = zeros / total
    row["accuracy"] = accuracy(module.model, data)
    return module


def step_overhead(row: dict[str, Any], dense: dict[str, Any], s: argparse.Namespace) -> None:
    """Step cost vs dense from ``prune_end`` on (every callback holds its final masks), pruning steps left
    out: ``ratio_of_medians`` and ``paired_median_ratio`` (per-step ratios: the same batch in both runs)."""
    late = [i for i, step in enumerate(row["step_of_batch"]) if step >= s.prune_end]
    pairs = [
        (row["step_ms"][i], dense["step_ms"][i])
        for i in late
        if row["step_of_batch"][i] not in row["pruning_steps"]
    ]
    row["step_median_ms"] = statistics.median(t for t, _ in pairs)
    row["step_p90_ms"] = percentile([t for t, _ in pairs], 90)
    row["ratio_of_medians"] = row["step_median_ms"] / statistics.median(d for _, d in pairs)
    row["paired_median_ratio"] = statistics.median(t / d for t, d in pairs)
    row["cpu_per_wall"] = sum(row["step_cpu_ms"][i] for i in late) / sum(row["step_ms"][i] for i in late)
    if row["pruning_steps"]:
        timed = dict(zip(row["step_of_batch"], row["step_ms"], strict=True))
        events = [timed[t] for t in row["pruning_steps"] if t in timed]
    else:
        amounts = row.get("model_pruning_amounts", [])
        events = [t for t, a in zip(row["epoch_end_ms"], amounts, strict=False) if a > 0]
    row["pruning_events"], row["pruning_median_ms"] = (
        len(events),
        statistics.median(events) if events else None,
    )


def step_cost(base: nn.Module, data: dict[str, Any], s: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Training-step cost with 90% masks in place, every variant interleaved round by round (no pruning event)."""
    batches = [data["collate"]([data["train"][i] for i in b]) for b in data["batches"][:4]]

    def make(variant: str) -> Any:
        holder = nn.Module()
        holder.model = copy.deepcopy(base).train()  # names as in the Classifier: "model.bert..."
        after_backward = None
        optimizer = torch.optim.AdamW(holder.parameters(), lr=s.lr)
        if variant.startswith("lit_opt"):
            criterion = "movement" if "movement" in variant else "magnitude"
            config = PruningConfig(
                0.9, criterion=criterion, scope=s.scope, targets=ENCODER_TARGETS, exclude=ENCODER_EXCLUDE
            )
            groups = prepare_pruning(holder, config)
            update_masks(groups, config, 0.9, 0)
            zero_pruned(groups)  # as the callback does after each mask update and optimizer step
            optimizer.register_step_post_hook(lambda *_: zero_pruned(groups))
            if criterion == "movement":
                after_backward = functools.partial(accumulate_movement, groups)
        elif variant.startswith("ModelPruning"):
            params = [(m, "weight") for m in targeted(holder).values()]
            if s.scope == "global":
                prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.9)
            else:
                for m, name in params:
                    prune.l1_unstructured(m, name, amount=0.9)
        counter = iter(range(1 << 30))

        def step() -> None:
            holder.model(**batches[next(counter) % len(batches)]).loss.backward()
            if after_backward is not None:
                after_backward()
            optimizer.step()
            optimizer.zero_grad()

        return step

    torch.manual_seed(0)
    return compare(time_round_robin({v: make(v) for v in STEP_VARIANTS}, s.warmup, s.step_rounds), "dense")


def architecture(model: nn.Module) -> dict[str, Any]:
    """Parameters and per-layer widths of a (possibly loaded) BERT classifier."""
    layers = model.bert.encoder.layer
    heads = []
    for layer in layers:
        attention = layer.attention.self
        head_dim = getattr(attention, "attention_head_size", None) or getattr(attention, "head_dim", None)
        heads.append(int(attention.query.weight.shape[0]) // int(head_dim))
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "nonzero_params": sum(int((p != 0).sum()) for p in model.parameters()),
        "ffn_width": [int(layer.intermediate.dense.weight.shape[0]) for layer in layers],
        "heads": heads,
    }


def export_rows(
    name: str, model: nn.Module, data: dict[str, Any], out: Run, masked: float
) -> list[dict[str, Any]]:
    """Export ``model`` (masks and all), load it with each of ``LOAD_KERNELS``: one row per kernel."""
    model = model.eval()
    path = lit_opt.export(
        model, out.work_dir / "artifacts" / name.replace(" ", "_").replace("%", "pct").replace("+", "_")
    )
    rows = []
    for kernel in LOAD_KERNELS:
        loaded = lit_opt.load(path, kernel=kernel)
        rows.append(
            {
                "name": f"{name} (load {kernel})", "source": name, "kernel": kernel, "masked_accuracy": masked,
                "bytes": file_bytes(path / "model.safetensors"), "artifact_dir_bytes": dir_bytes(path),
                "dtype": str(next(loaded.parameters()).dtype).removeprefix("torch."),
                "max_abs_logit_diff_vs_masked": logit_diff(loaded, model), "accuracy": accuracy(loaded, data),
                "_model": loaded, **architecture(loaded),
            }
        )  # fmt: skip
    return rows


def time_models(rows: list[dict[str, Any]], s: argparse.Namespace) -> None:
    """Latency of every model at batch 1 and 32 (seq 128), interleaved round by round."""
    by = {r["name"]: r for r in rows}
    for batch, repeats in ((1, s.repeats_b1), (32, s.repeats)):
        inputs = synthetic_batch(batch, 128, VOCAB, seed=0)
        calls = {
            r["name"]: functools.partial(call_model, r.pop("_model") if batch == 32 else r["_model"], inputs)
            for r in rows
        }
        with torch.inference_mode():
            stats = compare(time_round_robin(calls, s.warmup, repeats), "dense eager fp32")
        for name, t in stats.items():
            by[name].update({f"b{batch}_{k}": v for k, v in t.items()})


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def step_cost_table(out: Run, costs: dict[str, dict[str, float]]) -> None:
    out.rows += [{"name": f"step cost: {n}", **c} for n, c in costs.items()]
    cells = [
        [
            n,
            f"{c['median_ms']:.0f}",
            f"{c['p90_ms']:.0f}",
            f"{c['ratio']:.3f}x",
            f"{c['paired_ratio']:.3f}x",
            f"{c['cpu_per_wall']:.2f}",
        ]
        for n, c in costs.items()
    ]
    rounds = costs["dense"]["rounds"]
    out.table(
        f"Training-step cost with 90% masks in place (batch 32, interleaved: {rounds} rounds of one step per variant)",
        [
            "variant",
            "step median ms",
            "step p90 ms",
            "vs dense (ratio of medians)",
            "vs dense (paired median)",
            "cpu/wall",
        ],
        cells,
        plot="vs dense (ratio of medians)",
    )
    worst = max((n for n in costs if n.startswith("lit_opt")), key=lambda n: costs[n]["ratio"])
    w = costs[worst]
    out.goal(
        "lit_opt step overhead <= 5% (interleaved, no pruning event)",
        f"worst {worst}: {w['ratio']:.3f}x (paired {w['paired_ratio']:.3f}x)",
        w["ratio"] <= 1.05,
    )


def run(s: argparse.Namespace, out: Run) -> None:
    check(s)
    torch.set_flush_denormal(True)  # every row alike: no slow path for subnormal optimizer state
    data = fixed_batches(s, out.work_dir, s.steps)
    base = classifier(s.model)
    step_cost_table(out, step_cost(base, data, s))
    if s.step_cost_only:
        return
    rows: list[dict[str, Any]] = [{"name": "dense", "kind": "dense", "target": None}]
    for t in s.sparsities:
        rows += [
            {"name": f"lit_opt magnitude {t:.0%}", "kind": "lit_opt", "criterion": "magnitude", "target": t},
            {"name": f"lit_opt movement {t:.0%}", "kind": "lit_opt", "criterion": "movement", "target": t},
            {"name": f"ModelPruning l1 {t:.0%}", "kind": "model_pruning", "target": t},
        ]
    rows += [
        {"name": f"structured {STRUCTURED[x]}", "kind": "structured", "structure": x, "target": None}
        for x in s.structured
    ]
    exports: list[dict[str, Any]] = []
    for row in rows:
        model = train_row(row, base, data, s).model.eval()
        if row["kind"] == "dense":
            dense_arch = architecture(model)
            acc = row["accuracy"]
            exports.append(
                {"name": "dense eager fp32", "dtype": "float32", "masked_accuracy": acc, "accuracy": acc}
            )
            exports[-1].update(kernel=None, bytes=None, _model=model, **dense_arch)
            exports += export_rows("dense", model, data, out, row["accuracy"])
        elif row["kind"] == "structured" or row["name"] == f"lit_opt magnitude {max(s.sparsities):.0%}":
            exports += [
                {**e, "structure": row.get("structure")}
                for e in export_rows(row["name"], model, data, out, row["accuracy"])
            ]
    for row in rows:
        step_overhead(row, rows[0], s)
    time_models(exports, s)
    for e in exports:
        e["physical"] = e["params"] < dense_arch["params"]
    out.rows += [
        {k: v for k, v in r.items() if k not in ("step_ms", "step_cpu_ms", "step_of_batch")} for r in rows
    ] + exports
    report(out, s, rows, exports, data)


def report(
    out: Run,
    s: argparse.Namespace,
    rows: list[dict[str, Any]],
    exports: list[dict[str, Any]],
    data: dict[str, Any],
) -> None:
    dense, n_test = rows[0], data["sizes"]["test"]
    cells = []
    for r in rows:
        layers = r["layer_sparsity"]
        sparsest = max(layers, key=layers.__getitem__)
        events = f"{r['pruning_events']} ({r['pruning_median_ms']:.0f})" if r["pruning_events"] else "-"
        cells.append(
            [
                r["name"],
                fmt(r["target"], ".0%"),
                f"{100 * r['sparsity_targeted']:.2f}%",
                f"{100 * r['accuracy']:.2f}%",
            ]
            + [
                f"{100 * (r['accuracy'] - dense['accuracy']):+.2f}",
                f"{r['step_median_ms']:.0f}",
                f"{r['ratio_of_medians']:.3f}x",
            ]
            + [f"{r['paired_median_ratio']:.3f}x", events, f"{r['fit_s']:.0f}", f"{r['cpu_per_wall']:.2f}"]
            + [f"{sparsest} {layers[sparsest]:.1%}"]
        )
    se = 100 * (dense["accuracy"] * (1 - dense["accuracy"]) / n_test) ** 0.5
    out.table(
        f"Fine-tuning rows ({s.model}, {s.steps} steps x batch 32, max_length 64, AdamW lr {s.lr:g}, unstructured scope "
        f"{s.scope}, {s.epochs} epochs of {s.steps_per_epoch} steps, target reached at step {s.prune_end}; test n={n_test})",
        [
            "row",
            "target",
            "measured sparsity",
            "test acc",
            "vs dense (pts)",
            "step median ms",
            "step vs dense (ratio of medians)",
        ]
        + [
            "step vs dense (paired median)",
            "pruning events (median ms each)",
            "fit s",
            "cpu/wall",
            "sparsest layer",
        ],
        cells,
        notes=f"One seed: binomial standard error ~{se:.1f} pts per row. Sparsity: exact zeros in the effective encoder "
        "Linear weights. Step times: the Lightning step (forward, backward, AdamW) with the callbacks' per-batch hooks, "
        "over steps >= prune_end that are not lit_opt pruning steps (ModelPruning prunes between epochs).",
        plot="test acc",
    )
    by = {e["name"]: e for e in exports}
    eager = by["dense eager fp32"]
    cells = []
    for e in exports:
        same = by.get(f"dense (load {e.get('kernel')})")
        cells.append(
            [e["name"], e["dtype"], fmt(e.get("masked_accuracy"), ".2%"), f"{100 * e['accuracy']:.2f}%"]
            + [
                fmt(e.get("max_abs_logit_diff_vs_masked"), ".2g"),
                f"{e['params']:,}",
                f"{e['nonzero_params']:,}",
            ]
            + [
                "/".join(map(str, sorted(set(e["ffn_width"]))))
                + " / "
                + "/".join(map(str, sorted(set(e["heads"]))))
            ]
            + [
                fmt(e.get("bytes") and e["bytes"] / 1e6, ".1f"),
                f"{e['b1_median_ms']:.1f}",
                f"{e['b32_median_ms']:.0f}",
            ]
            + [f"{eager['b32_median_ms'] / e['b32_median_ms']:.2f}x"]
            + [
                f"{same['b32_median_ms'] / e['b32_median_ms']:.2f}x" if same else "n/a",
                f"{e['b32_cpu_per_wall']:.2f}",
            ]
        )
    out.table(
        f"Structured pruning, exported and loaded (latency: seq 128, {s.threads} threads, medians, interleaved)",
        [
            "row",
            "dtype",
            "masked acc",
            "loaded acc",
            "max abs logit diff loaded vs masked",
            "params",
            "nonzero params",
        ]
        + ["FFN width / heads per layer", "file MB", "b1 ms", "b32 ms", "b32 speedup vs dense eager fp32"]
        + ["b32 speedup vs dense loaded same kernel", "b32 cpu/wall"],
        cells,
        notes=f"Structured export physical: {any(e['physical'] for e in exports if e.get('structure'))}. "
        "Latency inputs are random token ids, full attention mask.",
        plot="b32 speedup vs dense eager fp32",
    )
    at90 = [r for r in rows if r["target"] == 0.9]
    lit, mp = [r for r in at90 if r["kind"] == "lit_opt"], [r for r in at90 if r["kind"] == "model_pruning"]
    if lit and mp:
        best = max(lit, key=lambda r: r["accuracy"])
        margin = 100 * (best["accuracy"] - mp[0]["accuracy"])
        measured = f"{best['name']} {100 * best['accuracy']:.2f}% vs {100 * mp[0]['accuracy']:.2f}% ({margin:+.2f} pts)"
        out.goal("lit_opt best at 90% >= ModelPruning + 2 pts", measured, margin >= 2.0)
    for kernel in LOAD_KERNELS:
        structured = [e for e in exports if e.get("structure") and e["kernel"] == kernel]
        if structured:
            best = min(structured, key=lambda e: e["b32_median_ms"])
            speed = by[f"dense (load {kernel})"]["b32_median_ms"] / best["b32_median_ms"]
            measured = f"{best['name']}: {speed:.2f}x ({eager['b32_median_ms'] / best['b32_median_ms']:.2f}x vs dense eager fp32; physical removal: {best['physical']})"
            out.goal(
                f"structured >= 1.5x faster than dense at b32 (both loaded with {kernel})",
                measured,
                speed >= 1.5,
            )


BENCH = Benchmark(
    "pruning",
    __doc__,
    settings={
        "model": "minilm",
        "data": "rotten_tomatoes",
        "threads": 2,
        "steps": 180,
        "epochs": 6,
        "prune_every": 10,
        "prune_start": 0,
        "prune_end": 0,
        "lr": 2e-4,
        "scope": "global",
        "sparsities": [0.5, 0.7, 0.9],
        "structured": ["rows+heads"],
        "test_size": 100_000,
        "repeats": 8,
        "repeats_b1": 30,
        "step_rounds": 12,
        "warmup": 2,
        "step_cost_only": False,
    },
    quick={
        "steps": 12,
        "epochs": 3,
        "prune_every": 2,
        "sparsities": [0.9],
        "test_size": 32,
        "repeats": 1,
        "repeats_b1": 2,
        "step_rounds": 2,
        "warmup": 1,
    },
    run=run,
    help={
        "scope": "unstructured threshold per layer (local) or one for all (global; lit_opt compares scores "
        "relative to each layer's mean, ModelPruning raw magnitudes)",
        "structured": "rows, heads and/or rows+heads",
        "step_cost_only": "measure the interleaved training-step cost alone",
        "prune_start": "first pruning step (0: after one epoch)",
        "prune_end": "step reaching the target (0: half the steps)",
    },
)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
