"""Measuring the recipe's rows alike: test accuracy, bytes shipped, parameters, latency and throughput.

Latency uses synthetic token ids (``latency.seq_len`` tokens, full attention mask) and runs every row
in rounds (each round one call of every row at every batch size), so the load of a shared machine
falls on all rows alike, with a pause before each call so that one runtime's busy-waiting threads do not
slow the next row (``latency.settle_ms``); the medians are reported.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_opt.inference.measure import call_model, synthetic_batch, time_round_robin
from lit_opt.recipe.config import LatencyConfig
from lit_opt.recipe.task import Candidate
from lit_opt.recipe.training import RecipeDataModule, model_inputs

#: The batch sizes latency is measured at.
BATCH_SIZES: tuple[int, ...] = (1, 32)
#: The files of a model a user ships (weights and manifest or config); the tokenizer's, shared by all rows, are not.
SHIPPED_FILES: tuple[str, ...] = (
    "model.safetensors",
    "lit_opt.json",
    "config.json",
    "model.pt",
    "model.onnx",
    "lit_opt_onnx.json",
)


def shipped_bytes(directory: Path) -> int:
    """Bytes on disk of the :data:`SHIPPED_FILES` in ``directory``.

    Raises:
        ValueError: the directory holds none of them.
    """
    files = [directory / name for name in SHIPPED_FILES if (directory / name).is_file()]
    if not files:
        raise ValueError(f"{directory} holds none of {list(SHIPPED_FILES)}; nothing to measure.")
    return sum(f.stat().st_size for f in files)


def accuracy(model: nn.Module, dm: RecipeDataModule) -> tuple[float, int]:
    """Accuracy of ``model`` on the held-out test split, and the number of test examples."""
    model.eval()
    right = total = 0
    with torch.inference_mode():
        for batch in dm.test_dataloader():
            predicted = model(**model_inputs(batch)).logits.argmax(dim=-1)
            right += int((predicted == batch["labels"]).sum())
            total += len(batch["labels"])
    return right / total, total


def measure_latency(candidates: list[Candidate], vocab_size: int, config: LatencyConfig) -> None:
    """Median latency (ms) at each batch size and throughput at the largest, into each ``measured``.

    Calls run under ``torch.inference_mode`` with ``config.threads`` threads, every row and batch size
    interleaved round by round, ``config.settle_ms`` apart.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        inputs = {b: synthetic_batch(b, config.seq_len, vocab_size) for b in BATCH_SIZES}
        calls = {
            (c.name, b): functools.partial(call_model, c.model, batch)
            for b, batch in inputs.items()
            for c in candidates
        }
        with torch.inference_mode():
            timings = time_round_robin(calls, config.warmup, config.repeats, settle_ms=config.settle_ms)
    finally:
        torch.set_num_threads(previous)
    largest = max(BATCH_SIZES)
    for candidate in candidates:
        for batch_size in BATCH_SIZES:
            candidate.measured[f"latency_ms_b{batch_size}"] = timings[candidate.name, batch_size].median_ms
        candidate.measured[f"throughput_b{largest}"] = largest / (
            candidate.measured[f"latency_ms_b{largest}"] / 1e3
        )


def measure(
    candidates: list[Candidate], dm: RecipeDataModule, vocab_size: int, config: LatencyConfig
) -> list[dict[str, Any]]:
    """Every row measured in this process: accuracy, size, parameters, latency; the report's rows."""
    for candidate in candidates:
        candidate.measured["accuracy"], candidate.measured["test_examples"] = accuracy(candidate.model, dm)
        candidate.measured["size_bytes"] = shipped_bytes(candidate.directory)
    measure_latency(candidates, vocab_size, config)
    return [
        {"name": c.name, "params": c.params, **c.measured, "how": c.how, "directory": c.directory.name}
        for c in candidates
    ]
