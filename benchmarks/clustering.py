"""Time WeightSharingCallback's clustering step on all-MiniLM-L6-v2 (CPU).

Installs codebooks on every Linear and Embedding weight of the classifier (``targets=["*"]``) and
times :func:`lit_opt.sharing.cluster_weights` (the whole k-means step at ``start_step``) for each
``clusters`` and ``inits``: the median over ``repeats`` runs, each on a fresh copy. The baseline,
measured in the same run: a plain ``torch.sort`` of every targeted weight (the first step of a
sort-based exact 1-D k-means). Also the mean relative RMS error of the shared weights.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import classifier
from benchmarks.harness import Benchmark, Run
from lit_opt.sharing import SharingConfig, cluster_weights, codebooks, prepare_sharing


def median_seconds(fn: Callable[[Any], Any], prepare: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn(prepare())`` over ``repeats`` runs; ``prepare`` is not timed."""
    times = []
    for _ in range(repeats):
        state = prepare()
        start = time.perf_counter()
        fn(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(s: argparse.Namespace, out: Run) -> None:
    base = classifier(s.model).eval()
    probe = copy.deepcopy(base)
    prepare_sharing(probe, SharingConfig())
    originals = [module.parametrizations.weight.original.detach() for _, module, _ in codebooks(probe)]
    shared = sum(w.numel() for w in originals)
    sort_s = median_seconds(lambda ws: [w.reshape(-1).sort() for w in ws], lambda: originals, s.repeats)
    out.rows.append(
        {"name": "torch.sort baseline", "seconds": sort_s, "weights": len(originals), "values": shared}
    )
    cells = [{"n_clusters": "-", "init": "torch.sort of every weight (baseline)",
              "clustering s (median)": f"{sort_s:.2f}", "vs sort-only baseline": "1.00x",
              "mean relative weight error": "-"}]  # fmt: skip
    for k in s.clusters:
        for init in s.inits:
            config = SharingConfig(n_clusters=k, init=init)
            models: list[torch.nn.Module] = []

            def prepare(config: SharingConfig = config, models: list = models) -> torch.nn.Module:
                models.append(copy.deepcopy(base))
                prepare_sharing(models[-1], config)
                return models[-1]

            seconds = median_seconds(lambda m, c=config: cluster_weights(m, c), prepare, s.repeats)
            with torch.no_grad():
                errors = [
                    float(
                        (m.weight - m.parametrizations.weight.original).norm()
                        / m.parametrizations.weight.original.norm()
                    )
                    for _, m, _ in codebooks(models[-1])
                ]
            error = statistics.mean(errors)
            out.rows.append(
                {"n_clusters": k, "init": init, "seconds": seconds, "vs_sort": seconds / sort_s, "mean_relative_error": error}
            )  # fmt: skip
            cells.append({"n_clusters": k, "init": init, "clustering s (median)": f"{seconds:.2f}",
                          "vs sort-only baseline": f"{seconds / sort_s:.2f}x",
                          "mean relative weight error": f"{error:.4f}"})  # fmt: skip
    params = sum(p.numel() for p in base.parameters())
    out.table(
        f"Clustering step ({s.model}: {params / 1e6:.2f}M parameters, {len(originals)} shared weights, "
        f"{shared / 1e6:.2f}M values; median of {s.repeats})",
        cells,
        plot="clustering s (median)",
    )


BENCH = Benchmark(
    "clustering",
    __doc__,
    settings={"model": "minilm", "clusters": [16, 256], "inits": ["kmeans++", "linear"], "repeats": 3, "threads": 2},
    quick={"clusters": [4], "repeats": 1},
    run=run,
    help={"model": "minilm or tiny (random, 2 layers)"},
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
