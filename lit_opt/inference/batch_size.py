"""Choose a batch size by measurement: the best throughput, or the largest within a latency budget."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lit_opt.inference.measure import PeakMemory, available_memory, call_model, synthetic_batch, time_forward

log = logging.getLogger(__name__)


@dataclass
class BatchSizeTrial:
    """One measured batch size: latency (ms), throughput (examples per second), peak memory rise (bytes)."""

    batch_size: int
    median_ms: float
    p90_ms: float
    throughput: float
    peak_delta_bytes: int


@dataclass
class BatchSizeChoice:
    """The chosen batch size, every trial in order, and why the search stopped growing."""

    batch_size: int
    trials: list[BatchSizeTrial] = field(default_factory=list)
    stopped: str = ""


def _candidates(max_batch_size: int) -> list[int]:
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size]
    return sizes if sizes[-1] == max_batch_size else [*sizes, max_batch_size]


def _vocab_size(model: nn.Module) -> int:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not isinstance(vocab, int):
        raise ValueError(
            f"{type(model).__name__} has no config.vocab_size to draw synthetic token ids from. "
            "HINT: pass make_inputs=lambda batch_size: <a batch of that size>."
        )
    return vocab


def find_batch_size(
    model: nn.Module,
    seq_len: int = 128,
    latency_budget_ms: float | None = None,
    max_batch_size: int = 256,
    make_inputs: Callable[[int], Any] | None = None,
    warmup: int = 2,
    repeats: int = 5,
    patience: int = 2,
    memory_fraction: float = 0.8,
    device: str | torch.device = "cpu",
) -> BatchSizeChoice:
    """Measure batch sizes 1, 2, 4, ... up to ``max_batch_size`` and pick one.

    Without ``latency_budget_ms`` the pick is the batch size with the best throughput (median latency
    over ``repeats`` calls after ``warmup``); growing stops once ``patience`` sizes in a row fall short of
    the best so far. With a budget, the pick is the largest batch size whose median latency stays within
    it; growing stops at the first one over it. Either way growing stops, without running out of memory,
    when a forward pass raises ``RuntimeError`` (out-of-memory included; the size is skipped) or when
    the next size's predicted peak memory (the last one's rise, scaled by the batch size) exceeds
    ``memory_fraction`` of the memory still available.

    Args:
        model: The model, e.g. from :func:`lit_opt.load`.
        seq_len: Tokens per example of the synthetic inputs.
        latency_budget_ms: The most median latency a batch may take; None picks the best throughput.
        max_batch_size: The largest batch size to try.
        make_inputs: ``make_inputs(batch_size)`` returns a batch (a dict of keyword inputs or a tensor);
            default: random token ids of ``seq_len`` from the model config's vocabulary.
        warmup: Untimed calls per batch size.
        repeats: Timed calls per batch size.
        patience: Sizes in a row without a better throughput before growing stops (throughput mode).
        memory_fraction: Share of the available memory a predicted peak may take.
        device: Where the model runs (CUDA memory is read from its allocator).

    Returns:
        The choice, with every trial and the reason growing stopped.

    Raises:
        ValueError: If an argument is out of range, or even batch size 1 exceeds the latency budget.
        RuntimeError: If batch size 1 cannot run at all.

    Example::

        >>> model = torch.nn.Sequential(torch.nn.Linear(32, 32))
        >>> choice = find_batch_size(model, make_inputs=lambda b: torch.randn(b, 32), max_batch_size=8)
        >>> choice.batch_size in (1, 2, 4, 8)
        True
    """
    for name, value in (("seq_len", seq_len), ("max_batch_size", max_batch_size), ("repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= 1.")
    if latency_budget_ms is not None and not latency_budget_ms > 0:
        raise ValueError(
            f"latency_budget_ms={latency_budget_ms!r} is not accepted; expected a number > 0 or None "
            "(None picks the best throughput)."
        )
    if make_inputs is None:
        vocab = _vocab_size(model)

        def make_inputs(batch_size: int) -> dict[str, torch.Tensor]:
            return {k: v.to(device) for k, v in synthetic_batch(batch_size, seq_len, vocab).items()}

    model.eval()
    trials: list[BatchSizeTrial] = []
    stopped = f"reached max_batch_size={max_batch_size}"
    for batch_size in _candidates(max_batch_size):
        if trials and not _fits_in_memory(trials[-1], batch_size, memory_fraction, device):
            stopped = f"batch size {batch_size} would exceed {memory_fraction:.0%} of the available memory"
            break
        try:
            trial = _measure(model, make_inputs(batch_size), batch_size, warmup, repeats, device)
        except RuntimeError as err:  # out of memory (torch.OutOfMemoryError is a RuntimeError) or similar
            if not trials:
                raise
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
            stopped = f"batch size {batch_size} failed: {type(err).__name__}: {str(err)[:200]}"
            break
        trials.append(trial)
        log.info(
            "batch size %d: %.2f ms median, %.1f examples/s", batch_size, trial.median_ms, trial.throughput
        )
        if latency_budget_ms is not None and trial.median_ms > latency_budget_ms:
            stopped = f"batch size {batch_size} took {trial.median_ms:.2f} ms > {latency_budget_ms} ms"
            break
        best = max(trials, key=lambda t: t.throughput)
        if latency_budget_ms is None and len(trials) - 1 - trials.index(best) >= patience:
            stopped = f"{patience} sizes in a row without a better throughput"
            break
    if latency_budget_ms is None:
        chosen = max(trials, key=lambda t: t.throughput)
    else:
        within = [t for t in trials if t.median_ms <= latency_budget_ms]
        if not within:
            raise ValueError(
                f"latency_budget_ms={latency_budget_ms!r} is not met even by batch size 1 "
                f"({trials[0].median_ms:.2f} ms). HINT: raise the budget, shorten seq_len or use a faster kernel."
            )
        chosen = within[-1]
    log.info("chose batch size %d (%s)", chosen.batch_size, stopped)
    return BatchSizeChoice(chosen.batch_size, trials, stopped)


def _measure(
    model: nn.Module, inputs: Any, batch_size: int, warmup: int, repeats: int, device: str | torch.device
) -> BatchSizeTrial:
    timing = time_forward(model, inputs, warmup, repeats)
    with PeakMemory(device) as peak, torch.inference_mode():
        call_model(model, inputs)
    return BatchSizeTrial(
        batch_size=batch_size,
        median_ms=timing.median_ms,
        p90_ms=timing.p90_ms,
        throughput=batch_size / (timing.median_ms / 1e3),
        peak_delta_bytes=peak.delta_bytes,
    )


def _fits_in_memory(
    last: BatchSizeTrial, batch_size: int, fraction: float, device: str | torch.device
) -> bool:
    available = available_memory(device)
    if available is None:
        return True
    predicted = last.peak_delta_bytes * batch_size / last.batch_size
    return predicted <= fraction * available
