"""Time WeightSharingCallback's clustering step on all-MiniLM-L6-v2 (CPU).

Installs codebooks on every Linear and Embedding weight of the classifier (``targets=["*"]``) and
times :func:`lit_opt.sharing.cluster_weights` (the whole k-means step at ``start_step``) for each
``clusters`` and ``inits``: the median over ``repeats`` runs, each on a fresh copy. The baseline,
measured in the same run: a plain ``torch.sort`` of every targeted weight (the first step of a
sort-based exact 1-D k-means). Also the mean relative RMS error of the shared weights.
"""

import copy
import functools
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from benchmarks.common import classifier
from benchmarks.harness import Run, Settings, main
from lit_opt.sharing import SharingConfig, cluster_weights, codebooks, prepare_sharing

SETTINGS = dict(
    model="minilm", clusters=([16, 256], [4]), inits=["kmeans++", "linear"], repeats=(3, 1), threads=2
)
HELP = {"model": "minilm or tiny (random, 2 layers)"}


def median_seconds(fn: Callable[[Any], Any], states: Iterable[Any]) -> tuple[float, Any]:
    """Median seconds of ``fn(state)`` over ``states`` (made as they are needed, not timed), the last state."""
    times = []
    for state in states:
        start = time.perf_counter()
        fn(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times), state


def shared(base: torch.nn.Module, config: SharingConfig) -> torch.nn.Module:
    model = copy.deepcopy(base)
    prepare_sharing(model, config)
    return model


def run(s: Settings, out: Run) -> None:
    base = classifier(s.model).eval()
    layers = [module for _, module, _ in codebooks(shared(base, SharingConfig()))]
    originals = [m.parametrizations.weight.original.detach() for m in layers]
    values = sum(w.numel() for w in originals)
    sort_s, _ = median_seconds(lambda ws: [w.reshape(-1).sort() for w in ws], [originals] * s.repeats)
    row = {"name": "torch.sort baseline", "seconds": sort_s}
    out.rows.append(row | {"weights": len(originals), "values": values})
    table = [("-", "torch.sort of every weight (baseline)", sort_s, "-")]
    for k in s.clusters:
        for init in s.inits:
            config = SharingConfig(n_clusters=k, init=init)
            cluster = functools.partial(cluster_weights, config=config)
            seconds, model = median_seconds(cluster, (shared(base, config) for _ in range(s.repeats)))
            with torch.no_grad():
                weights = [(m.weight, m.parametrizations.weight.original) for _, m, _ in codebooks(model)]
                error = statistics.mean(float((w - o).norm() / o.norm()) for w, o in weights)
            row = {"n_clusters": k, "init": init, "seconds": seconds, "vs_sort": seconds / sort_s}
            out.rows.append(row | {"mean_relative_error": error})
            table.append((k, init, seconds, f"{error:.4f}"))
    params = sum(p.numel() for p in base.parameters())
    out.table(
        f"Clustering step ({s.model}: {params / 1e6:.2f}M parameters, {len(originals)} shared weights, "
        f"{values / 1e6:.2f}M values; median of {s.repeats})",
        [(k, init, f"{sec:.2f}", f"{sec / sort_s:.2f}x", error) for k, init, sec, error in table],
        plot="clustering s (median)",
        columns=(
            "n_clusters",
            "init",
            "clustering s (median)",
            "vs sort-only baseline",
            "mean relative weight error",
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main(__name__))
