"""``Mask``: a parametrization that zeroes pruned entries of a weight (or bias)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Mask(nn.Module):
    """Multiplies the tensor it parametrizes by a persistent boolean ``mask`` buffer.

    The original ``Parameter`` keeps its values; the effective tensor is exactly zero where the
    mask is False, whatever the optimizer does, and the gradient there is zero. Optional
    ``score`` / ``score_count`` buffers hold data-dependent importance (accumulated movement,
    summed |activation| per output unit) so that a resumed run continues from the same scores.

    Args:
        shape: shape of the tensor.
        score_shape: shape of the ``score`` buffer, or None when the criterion needs no state.
        owner: ``state_key`` of the callback that installed it.

    Example::

        >>> from torch.nn.utils import parametrize
        >>> layer = torch.nn.Linear(2, 2)
        >>> mask = Mask((2, 2))
        >>> mask.mask[0, 1] = False
        >>> _ = parametrize.register_parametrization(layer, "weight", mask)
        >>> layer.weight[0, 1].item()
        0.0
    """

    mask: Tensor
    score: Tensor
    score_count: Tensor

    def __init__(
        self,
        shape: tuple[int, ...] | list[int] | torch.Size,
        score_shape: list[int] | None = None,
        owner: str = "",
    ) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.score_shape = None if score_shape is None else [int(d) for d in score_shape]
        self.owner = owner
        self.register_buffer("mask", torch.ones(self.shape, dtype=torch.bool))
        if self.score_shape is not None:
            self.register_buffer("score", torch.zeros(self.score_shape))
            self.register_buffer("score_count", torch.tensor(0.0))

    def config(self) -> dict[str, Any]:
        """Primitives that rebuild this module (stored as its extra state)."""
        return {
            "kind": type(self).__name__,
            "shape": list(self.shape),
            "score_shape": self.score_shape,
            "owner": self.owner,
        }

    def get_extra_state(self) -> dict[str, Any]:
        return self.config()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("shape") != list(self.shape) or state.get("score_shape") != self.score_shape:
            raise ValueError(
                f"the checkpoint's pruning mask {state} does not match this model's {self.config()}. "
                "HINT: resume with the same IterativePruningCallback arguments the checkpoint was trained with."
            )

    @property
    def sparsity(self) -> float:
        """Fraction of entries pruned."""
        return 1.0 - float(self.mask.float().mean())

    def forward(self, w: Tensor) -> Tensor:
        return w * self.mask

    def extra_repr(self) -> str:
        return f"shape={self.shape}, sparsity={self.sparsity:.3f}"
