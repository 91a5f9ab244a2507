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


def _bin_codes(flat: Tensor) -> Tensor:
    """The float16 bit pattern of each value as an int64 bin number in [0, 65536)."""
    half = flat.detach().clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16)
    return half.view(torch.int16).long() & (_BINS - 1)


def _histogram(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted distinct float16 values ``(m,)`` (float64) and how often each occurs ``(m,)`` (float64)."""
    counts = torch.zeros(_BINS, dtype=torch.long, device=flat.device)
    for start in range(0, flat.numel(), _CHUNK):
        counts += torch.bincount(_bin_codes(flat[start : start + _CHUNK]), minlength=_BINS)
    patterns = torch.arange(_BINS, dtype=torch.int32, device=flat.device).to(torch.int16)
    values = patterns.view(torch.float16).double()  # (65536,) every float16 value, NaN/inf never counted
    used = counts > 0
    values, order = values[used].sort()
    return values, counts[used][order].double()


def _kmeans_pp_init(values: Tensor, counts: Tensor, n_clusters: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) over the weighted distinct values."""
    values, counts = values.cpu(), counts.cpu()
    first = int(torch.multinomial(counts, 1, generator=generator))
    centroids = [float(values[first])]
    distance = (values - centroids[0]) ** 2  # squared distance to the nearest chosen centroid
    while len(centroids) < n_clusters and float((distance * counts).sum()) > 0:
        chosen = float(values[int(torch.multinomial(distance * counts, 1, generator=generator))])
        centroids.append(chosen)
        distance = torch.minimum(distance, (values - chosen) ** 2)
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
    flat = values.detach().reshape(-1)
    points, counts = _histogram(flat)  # (m,), (m,)
    zero = counts.new_zeros(1)
    prefix_count = torch.cat([zero, counts.cumsum(0)])  # (m+1,)
    prefix_sum = torch.cat([zero, (points * counts).cumsum(0)])
    if init == "linear":
        centroids = torch.linspace(float(points[0]), float(points[-1]), n_clusters, dtype=torch.float64)
    else:
        centroids = _kmeans_pp_init(points, counts, n_clusters, generator or torch.Generator().manual_seed(0))
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
    indices = torch.cat([table[_bin_codes(flat[i : i + _CHUNK])] for i in range(0, flat.numel(), _CHUNK)])
    return centroids.to(values.dtype), indices.reshape(values.shape)
