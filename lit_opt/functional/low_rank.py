"""Truncated-SVD factorization of a weight matrix: pure tensor math.

A weight ``W`` (out x in) with singular values ``s`` is approximated by ``second @ first``, where
``first`` is (r x in) and ``second`` is (out x r); each factor takes the square root of ``s`` so the
two are on the same scale (better conditioned for training than putting ``s`` on one side).

Example::

    >>> import torch
    >>> w = torch.randn(6, 4)
    >>> first, second = svd_factors(w, 4)
    >>> bool(torch.allclose(second @ first, w, atol=1e-5))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["energy_rank", "parameter_saving", "singular_values", "svd_factors"]


def energy_rank(singular_values: Tensor, energy: float) -> int:
    """The smallest rank whose leading singular values keep ``energy`` of ``sum(s**2)``.

    Example::

        >>> energy_rank(torch.tensor([3.0, 1.0, 0.0]), 0.9)  # 9 / 10 = 0.9
        1
    """
    squared = singular_values.double().square()  # (k,)
    kept = squared.cumsum(0) / squared.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return min(int((kept < energy).sum()) + 1, singular_values.numel())


def parameter_saving(out_features: int, in_features: int, rank: int) -> float:
    """Share of the weight's parameters that factors of ``rank`` save: ``1 - r (out + in) / (out in)``.

    Example::

        >>> parameter_saving(100, 100, 10)
        0.8
    """
    return 1.0 - rank * (out_features + in_features) / (out_features * in_features)


def svd_factors(weight: Tensor, rank: int | None = None, energy: float = 1.0) -> tuple[Tensor, Tensor]:
    """Factors ``(first (r x in), second (out x r))`` with ``second @ first`` the best rank-``r`` fit.

    ``r`` is ``rank``, or (``rank=None``) :func:`energy_rank` of ``weight``'s singular values, from the
    same decomposition. Computed in float64 (so a full-rank factorization reproduces ``weight`` to
    float32 precision) and returned in ``weight``'s dtype.
    """
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)  # (o,k) (k,) (k,i)
    rank = energy_rank(s, energy) if rank is None else rank
    root = s[:rank].sqrt()
    first = root.unsqueeze(1) * vh[:rank]  # (r, in)
    second = u[:, :rank] * root.unsqueeze(0)  # (out, r)
    return first.to(weight.dtype).contiguous(), second.to(weight.dtype).contiguous()


def singular_values(weight: Tensor) -> Tensor:
    """The singular values of ``weight``, largest first (float64)."""
    return torch.linalg.svdvals(weight.detach().double())
