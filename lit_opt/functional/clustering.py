"""One-dimensional k-means over a tensor's values, as weight sharing (Han et al. 2016) uses it.

The values are first binned by their float16 bit pattern: one ``bincount`` over at most 65,536
bins, ``O(n)``. The centroids are stored in float16, so clustering the float16-rounded values
(relative rounding 2**-11) changes nothing that survives export. In one dimension every cluster is
an interval of the sorted bins, so Lloyd's algorithm needs no distance matrix: each iteration
finds the boundaries (midpoints between neighbouring centroids) by binary search and the new
means from prefix sums of the histogram, ``O(k log 65536)``. The final assignment is a table
lookup per value. All passes over the values run in chunks, so memory stays bounded; a
30M-parameter model clusters in seconds on a CPU.

Example:
    >>> import torch
    >>> values = torch.tensor([0.0, 0.1, 2.5, 2.6, 5.0, 5.2])
    >>> centroids, indices = kmeans_1d(values, 3, init="linear")
    >>> [round(c, 2) for c in centroids.tolist()], indices.tolist()
    ([0.05, 2.55, 5.1], [0, 0, 1, 1, 2, 2])
"""

from __future__ import annotations

import torch
from torch import Tensor

INITS: tuple[str, ...] = ("kmeans++", "linear")
_BINS = 1 << 16  # float16 bit patterns
_FP16_MAX = 65504.0
_CHUNK = 1 << 22
_SEED_POINTS = 2048


def _bin_codes(flat: Tensor) -> list[Tensor]:
    """The float16 bit pattern of each value as an int32 bin number in [0, 65536), in chunks."""
    chunks = []
    for start in range(0, flat.numel(), _CHUNK):
        half = flat[start : start + _CHUNK].detach().clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16)
        chunks.append(half.view(torch.int16).to(torch.int32) & (_BINS - 1))
    return chunks


def _histogram(codes: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Sorted distinct float16 values ``(m,)`` (float64) and how often each occurs ``(m,)`` (float64)."""
    counts = torch.zeros(_BINS, dtype=torch.long, device=codes[0].device)
    for chunk in codes:
        counts += torch.bincount(chunk, minlength=_BINS)
    patterns = torch.arange(_BINS, dtype=torch.int32, device=counts.device).to(torch.int16)
    values = patterns.view(torch.float16).double()  # (65536,) every float16 value, NaN/inf never counted
    used = counts > 0
    values, order = values[used].sort()
    return values, counts[used][order].double()


def _kmeans_pp_init(
    prefix_count: Tensor, prefix_sum: Tensor, n_clusters: int, generator: torch.Generator
) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) over the values, grouped into equal-count quantiles.

    Seeding draws ``n_clusters`` times, each over every point: it runs on at most
    ``_SEED_POINTS`` quantile groups (their means, weighted by their counts) instead of the
    distinct values, which keeps it cheap at 256 clusters; Lloyd's iterations then use every value.
    """
    total = float(prefix_count[-1])
    targets = torch.linspace(0, total, _SEED_POINTS + 1, dtype=torch.float64, device=prefix_count.device)
    edges = torch.unique(torch.searchsorted(prefix_count, targets).clamp(max=prefix_count.numel() - 1))
    counts = (prefix_count[edges[1:]] - prefix_count[edges[:-1]]).cpu()  # (g,)
    means = ((prefix_sum[edges[1:]] - prefix_sum[edges[:-1]]).cpu() / counts.clamp(min=1))[counts > 0]
    counts = counts[counts > 0]
    draws = torch.rand(n_clusters, generator=generator, dtype=torch.float64)
    weights = counts  # the first draw is proportional to the counts alone
    centroids: list[float] = []
    distance = torch.full_like(means, float("inf"))  # squared distance to the nearest chosen centroid
    for draw in draws.tolist():
        cumulative = weights.cumsum(0)
        if float(cumulative[-1]) <= 0:
            break  # every value already is a centroid
        chosen = int(
            torch.searchsorted(cumulative, cumulative[-1] * draw, right=True).clamp(max=len(means) - 1)
        )
        centroids.append(float(means[chosen]))
        distance = torch.minimum(distance, (means - centroids[-1]) ** 2)
        weights = distance * counts
    centroids += [centroids[-1]] * (n_clusters - len(centroids))  # fewer distinct values than clusters
    return torch.tensor(sorted(centroids), dtype=torch.float64)


def kmeans_1d(
    values: Tensor,
    n_clusters: int,
    init: str = "kmeans++",
    max_iter: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Cluster the entries of ``values`` (rounded to float16) into ``n_clusters`` groups with Lloyd's algorithm.

    Args:
        values: any shape, floating point; it is flattened.
        n_clusters: number of centroids (at least 1).
        init: ``"kmeans++"`` (seeded by ``generator``) or ``"linear"`` (evenly spaced between the
            minimum and the maximum, Han et al.'s recommendation).
        max_iter: Lloyd iterations at most; stops earlier when no value changes cluster.
        generator: CPU random generator of the k-means++ seeding (deterministic when seeded).

    Returns:
        ``(centroids, indices)``: sorted centroids ``(n_clusters,)`` in ``values``' dtype and device,
        and the int64 index of each value's centroid, shaped like ``values``. A cluster that ends up
        empty keeps its last centroid.

    Raises:
        ValueError: an unknown ``init``, ``n_clusters < 1`` or empty ``values``.
    """
    if init not in INITS:
        raise ValueError(f"init={init!r} is not one of {INITS}.")
    if n_clusters < 1 or values.numel() == 0:
        raise ValueError(
            f"kmeans_1d needs n_clusters >= 1 and values, got {n_clusters} and {values.numel()}."
        )
    codes = _bin_codes(values.reshape(-1))  # chunks of (n,) bin numbers, computed once
    points, counts = _histogram(codes)  # (m,), (m,)
    zero = counts.new_zeros(1)
    prefix_count = torch.cat([zero, counts.cumsum(0)])  # (m+1,)
    prefix_sum = torch.cat([zero, (points * counts).cumsum(0)])
    if init == "linear":
        centroids = torch.linspace(float(points[0]), float(points[-1]), n_clusters, dtype=torch.float64)
    else:
        seeds = generator or torch.Generator().manual_seed(0)
        centroids = _kmeans_pp_init(prefix_count, prefix_sum, n_clusters, seeds)
    centroids = centroids.to(points.device)
    ends = None
    for _ in range(max_iter):
        boundaries = (centroids[1:] + centroids[:-1]) / 2  # (k-1,)
        new_ends = torch.searchsorted(points, boundaries, right=True)  # first point of the next cluster
        if ends is not None and torch.equal(new_ends, ends):
            break
        ends = new_ends
        stops = torch.cat([ends, ends.new_tensor([points.numel()])])  # (k,)
        starts = torch.cat([ends.new_zeros(1), ends])
        members = prefix_count[stops] - prefix_count[starts]
        means = (prefix_sum[stops] - prefix_sum[starts]) / members.clamp(min=1)
        centroids = torch.where(members > 0, means, centroids).sort().values
    # every float16 bit pattern -> its cluster (the same boundaries Lloyd's last step used)
    patterns = torch.arange(_BINS, dtype=torch.int32, device=points.device).to(torch.int16)
    table = torch.bucketize(
        patterns.view(torch.float16).double(), (centroids[1:] + centroids[:-1]) / 2, right=True
    )
    indices = torch.cat([table[chunk] for chunk in codes])
    return centroids.to(values.dtype), indices.reshape(values.shape)
