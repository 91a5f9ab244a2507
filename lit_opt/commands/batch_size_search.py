"""``lit-opt bench --find-batch-size``: the batch size an artifact serves best, and the curve it was chosen from.

For each sequence length, :func:`~lit_opt.inference.find_batch_size` measures batch sizes 1, 2, 4, ...
and picks the largest within ``--latency-budget-ms`` (or, without a budget, the best throughput). The
trials are printed as a table (the chosen row marked) and plotted (latency and throughput against
batch size, the budget drawn as a line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_opt.inference.batch_size import find_batch_size


def check_latency_budget(latency_budget_ms: Any, find: bool) -> float | None:
    """``latency_budget_ms`` as a float (or None), checked against ``--find-batch-size``.

    Raises:
        ValueError: A budget that is not a number > 0, or a budget without ``find``.

    Example::

        >>> check_latency_budget(50, find=True)
        50.0
    """
    if latency_budget_ms is None:
        return None
    if (
        isinstance(latency_budget_ms, bool)
        or not isinstance(latency_budget_ms, (int, float))
        or not latency_budget_ms > 0
    ):
        raise ValueError(
            f"latency_budget_ms={latency_budget_ms!r} is not accepted; expected a number of milliseconds > 0. "
            "HINT: e.g. --latency-budget-ms 50, or leave it out to pick the batch size with the best throughput."
        )
    if not find:
        raise ValueError(
            f"latency_budget_ms={latency_budget_ms!r} only applies to the batch-size search. "
            "HINT: add --find-batch-size."
        )
    return float(latency_budget_ms)


def search(
    name: str,
    model: nn.Module,
    seq_lens: Sequence[int],
    latency_budget_ms: float | None,
    max_batch_size: int,
    warmup: int,
    repeats: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    """One :func:`find_batch_size` per sequence length: ``[{"model", "seq_len", "batch_size", "stopped", "trials"}]``."""
    results = []
    for seq_len in seq_lens:
        # synthetic token ids from the model config's vocabulary, as the grid's rows use
        choice = find_batch_size(
            model, seq_len, latency_budget_ms, max_batch_size, None, warmup, repeats, device=device
        )
        results.append(
            {
                "model": name,
                "seq_len": seq_len,
                "batch_size": choice.batch_size,
                "stopped": choice.stopped,
                "trials": [asdict(t) for t in choice.trials],
            }
        )
    return results


def format_search(results: list[dict[str, Any]], latency_budget_ms: float | None) -> str:
    """The chosen batch size per sequence length, then the curve (``*`` marks the choice).

    Example::

        >>> trial = {"batch_size": 1, "median_ms": 2.0, "p90_ms": 2.5, "throughput": 500.0, "peak_delta_bytes": 0}
        >>> result = {"model": "artifact", "seq_len": 8, "batch_size": 1, "stopped": "x", "trials": [trial]}
        >>> print(format_search([result], 5.0))
        artifact, seq 8: batch size 1 (largest within 5.0 ms; stopped: x)
          batch  median ms  p90 ms  seq/s
        *     1       2.00    2.50  500.0
    """
    goal = f"largest within {latency_budget_ms} ms" if latency_budget_ms is not None else "best throughput"
    lines = []
    for result in results:
        lines.append(
            f"{result['model']}, seq {result['seq_len']}: batch size {result['batch_size']} ({goal}; stopped: {result['stopped']})"
        )
        lines.append("  batch  median ms  p90 ms  seq/s")
        for t in result["trials"]:
            mark = "*" if t["batch_size"] == result["batch_size"] else " "
            lines.append(
                f"{mark} {t['batch_size']:>5}  {t['median_ms']:>9.2f}  {t['p90_ms']:>6.2f}  {t['throughput']:.1f}"
            )
    return "\n".join(lines)


def plot_search(results: list[dict[str, Any]], latency_budget_ms: float | None, path: Path) -> None:
    """Median latency and throughput against batch size, one line per model and sequence length (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    FigureCanvasAgg(figure)
    latency, throughput = figure.subplots(1, 2)
    for result in results:
        sizes, label = (
            [t["batch_size"] for t in result["trials"]],
            f"{result['model']}, seq {result['seq_len']}",
        )
        latency.plot(sizes, [t["median_ms"] for t in result["trials"]], "-o", label=label)
        throughput.plot(sizes, [t["throughput"] for t in result["trials"]], "-o", label=label)
    if latency_budget_ms is not None:
        latency.axhline(latency_budget_ms, color="gray", linestyle="--", label="budget")
    for axes, label in ((latency, "median latency (ms)"), (throughput, "throughput (sequences / s)")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("batch size")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle("lit-opt bench --find-batch-size")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
