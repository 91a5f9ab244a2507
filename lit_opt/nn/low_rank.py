"""``LowRankLinear``: a linear layer held as two thin factors, ``second(first(x))``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_opt.functional.low_rank import svd_factors

KIND = "LowRankLinear"


class LowRankLinear(nn.Module):
    """``y = second(first(x))`` with ``first`` = Linear(in, r, no bias), ``second`` = Linear(r, out, bias).

    Both factors are plain :class:`torch.nn.Linear` modules, so QAT, pruning and export treat them
    like any other linear layer. The layer's shape travels as extra state
    (``<name>._extra_state``), which is how :func:`lit_opt.restore` and a resumed run learn to
    rebuild it from a checkpoint.

    Args:
        in_features: input width of the layer it replaces.
        out_features: output width.
        rank: inner width ``r``.
        bias: whether ``second`` has a bias.

    Example::

        >>> layer = nn.Linear(64, 32)
        >>> low = LowRankLinear.from_linear(layer, rank=32)  # full rank: the same function
        >>> x = torch.randn(5, 64)
        >>> bool(torch.allclose(low(x), layer(x), atol=1e-5))
        True
        >>> low.first.weight.shape, low.second.weight.shape
        (torch.Size([32, 64]), torch.Size([32, 32]))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"rank={rank} must be between 1 and min(out_features, in_features) = "
                f"{min(in_features, out_features)} for a {out_features}x{in_features} layer."
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.second = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """The truncated-SVD factorization of ``linear`` at ``rank`` (bias copied), on its device and dtype."""
        weight = linear.weight
        low = cls(
            linear.in_features,
            linear.out_features,
            rank,
            linear.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        low.load_factors(*svd_factors(weight, rank), linear.bias)
        return low

    @torch.no_grad()
    def load_factors(self, first: Tensor, second: Tensor, bias: Tensor | None) -> None:
        """Copy ``first`` (r x in), ``second`` (out x r) and ``bias`` into the factors."""
        self.first.weight.copy_(first)
        self.second.weight.copy_(second)
        if bias is not None and self.second.bias is not None:
            self.second.bias.copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))  # (..., in) -> (..., r) -> (..., out)

    def config(self) -> dict[str, Any]:
        """The JSON-able arguments that rebuild this layer (weights apart)."""
        return {
            "kind": KIND,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.second.bias is not None,
        }

    def get_extra_state(self) -> dict[str, Any]:
        return self.config()

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != KIND:
            raise ValueError(f"{state!r} is not the extra state of a {KIND}.")
        if {k: state.get(k) for k in ("in_features", "out_features", "rank")} != {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
        }:
            raise ValueError(
                f"a checkpoint's {KIND} {state} does not match this layer {self.config()}. "
                "HINT: load it with lit_opt.restore(model, state_dict), or resume with the same LowRankCallback."
            )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
