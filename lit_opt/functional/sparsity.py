"""Sparsity schedules and mask selection (pure torch).

Schedules give the sparsity at an optimizer step; mask functions turn importance scores into
boolean keep-masks with an exact count of pruned elements (``round(sparsity * n)``), ties broken
by position so every process computes the same mask from the same scores.

Cubic schedule (Zhu & Gupta, 2017), with :math:`f = \\mathrm{clamp}((t - t_0) / (t_{end} - t_0), 0, 1)`:

.. math::

    s_t = s_f + (s_i - s_f)\\,(1 - f)^3

Example:
    >>> round(sparsity_at(50, target=0.8, schedule="cubic", start_step=0, end_step=100), 6)
    0.7
    >>> unstructured_mask(torch.tensor([3.0, 1.0, 2.0, 0.5]), 0.5).tolist()
    [True, False, True, False]
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from lit_opt.functional.packing import pack_codes, unpack_codes

SCHEDULES: tuple[str, ...] = ("cubic", "linear", "constant")
_NM = re.compile(r"^(\d+):(\d+)$")


def sparsity_at(
    step: int, target: float, schedule: str, start_step: int, end_step: int, initial: float = 0.0
) -> float:
    """The scheduled sparsity at optimizer step ``step`` (0 before ``start_step``)."""
    if step < start_step:
        return 0.0
    if schedule == "constant" or end_step <= start_step:
        return target
    fraction = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    if schedule == "linear":
        return initial + (target - initial) * fraction
    if schedule == "cubic":
        return target + (initial - target) * (1.0 - fraction) ** 3
    raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}.")


def is_pruning_step(step: int, schedule: str, start_step: int, end_step: int, every_n_steps: int) -> bool:
    """Whether masks are recomputed at ``step``: every ``every_n_steps`` from ``start_step``, and at ``end_step``."""
    if schedule == "constant":
        return step == start_step
    if step < start_step or step > end_step:
        return False
    return (step - start_step) % every_n_steps == 0 or step == end_step


def parse_n_m(structure: str) -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)`` (keep N of every M); None for other structures."""
    match = _NM.match(structure)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _keep_largest(scores: Tensor, n_pruned: int) -> Tensor:
    """Bool mask of ``scores``' shape pruning exactly the ``n_pruned`` smallest (ties: lower index first)."""
    flat = scores.reshape(-1).float()
    order = torch.sort(flat, stable=True).indices
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[order[:n_pruned]] = False
    return keep.reshape(scores.shape)


def unstructured_mask(scores: Tensor, sparsity: float) -> Tensor:
    """Keep-mask pruning the ``round(sparsity * numel)`` lowest-scoring elements of one tensor."""
    return _keep_largest(scores, round(sparsity * scores.numel()))


def global_masks(scores: list[Tensor], sparsity: float) -> list[Tensor]:
    """Keep-masks for several tensors under one threshold: ``round(sparsity * total)`` pruned in all.

    Example:
        >>> [m.tolist() for m in global_masks([torch.tensor([1.0, 5.0]), torch.tensor([2.0, 3.0])], 0.5)]
        [[False, True], [False, True]]
    """
    flat = torch.cat([s.reshape(-1).float() for s in scores])
    keep = _keep_largest(flat, round(sparsity * flat.numel()))
    return [
        part.reshape(s.shape) for part, s in zip(keep.split([s.numel() for s in scores]), scores, strict=True)
    ]


def n_m_mask(scores: Tensor, n: int, m: int, sparsity: float | None = None) -> Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive inputs of each row.

    With ``sparsity`` below ``1 - n / m`` (a gradual schedule) each group keeps
    ``m - round(sparsity * m)`` (at least ``n``) instead.

    Raises:
        ValueError: the row length is not a multiple of ``m``.

    Example:
        >>> n_m_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0]]), 2, 4).tolist()
        [[True, False, True, False]]
    """
    rows = scores.reshape(scores.shape[0], -1)
    if rows.shape[1] % m:
        raise ValueError(f"N:M sparsity needs rows whose length {rows.shape[1]} is a multiple of M={m}.")
    keep_count = n if sparsity is None else max(n, m - round(sparsity * m))
    groups = rows.reshape(rows.shape[0], -1, m).float()  # (rows, groups, m)
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., :keep_count], True)
    return keep.reshape(scores.shape)


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a boolean tensor into a flat uint8 tensor, 8 entries a byte, least significant bit first.

    Example:
        >>> unpack_bits(pack_bits(torch.tensor([True, False, True] * 3)), 9).tolist() == [True, False, True] * 3
        True
    """
    return pack_codes(mask, 1)


def unpack_bits(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_bits`: a flat bool tensor of length ``numel``."""
    return unpack_codes(packed, 1, numel).bool()
