"""``WeightFakeQuant``: a parametrization that fake-quantizes a weight to int8/int4 codes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_opt.functional.quantize import fake_quantize_weight, quantize_weight, weight_blocks, weight_qparams
from lit_opt.parametrizations.extra_state import ConfigExtraState


class WeightFakeQuant(ConfigExtraState):
    """Fake-quantizes the weight it parametrizes; its observer is the weight's own min/max.

    Registered with :func:`torch.nn.utils.parametrize.register_parametrization`, so the original
    ``Parameter`` (and the optimizer state tied to it) is kept. ``scale`` and ``zero_point`` (shape
    ``(C, G)``: channels by groups) and ``enabled`` are persistent buffers; the configuration is
    the module's extra state, so a checkpoint alone says how to rebuild it (see
    :func:`lit_opt.restore`).

    Args:
        shape: shape of the weight (channels first).
        bits: 8 or 4.
        symmetric: symmetric codes (zero point 0) or asymmetric.
        granularity: ``"per_tensor"``, ``"per_channel"`` or ``"per_group"``.
        group_size: elements per group along a channel (``per_group`` only).
        owner: ``state_key`` of the callback that installed it.
        transposed: the weight is stored ``(in, out)`` (transformers' ``Conv1D``): channels are its
            columns, so scales, zero points and :meth:`codes` are those of ``w.t()``.

    Example::

        >>> import torch
        >>> from torch.nn.utils import parametrize
        >>> layer = torch.nn.Linear(4, 2)
        >>> parametrize.register_parametrization(layer, "weight", WeightFakeQuant((2, 4), bits=4))
        ParametrizedLinear(...)
        >>> len(torch.unique(layer.weight[0])) <= 15
        True
    """

    what, callback = "weight quantizer", "QATCallback"  # every key of config() but the owner must match
    fields = ("shape", "bits", "symmetric", "granularity", "group_size", "owner")
    scale: Tensor
    zero_point: Tensor
    enabled: Tensor

    def __init__(
        self,
        shape: tuple[int, ...] | list[int] | torch.Size,
        bits: int = 8,
        symmetric: bool = True,
        granularity: str = "per_channel",
        group_size: int | None = None,
        owner: str = "",
        transposed: bool = False,
    ) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.transposed = bool(transposed)
        self.bits = int(bits)
        self.symmetric = bool(symmetric)
        self.granularity = granularity
        self.group_size = group_size
        self.owner = owner
        channels, groups = weight_blocks(
            torch.empty(self.shape[::-1] if self.transposed else self.shape, device="meta"),
            granularity,
            group_size,
        ).shape[:2]
        self.register_buffer("scale", torch.ones(channels, groups))
        self.register_buffer("zero_point", torch.zeros(channels, groups))
        self.register_buffer("enabled", torch.tensor(True))

    def config(self) -> dict[str, Any]:
        """Primitives that rebuild this module (stored as its extra state)."""
        extra = {"transposed": True} if self.transposed else {}  # absent in checkpoints of Linear layers
        return extra | super().config()

    def qparams(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Scale and zero point of ``w`` as the forward pass computes them."""
        w = w.t() if self.transposed else w
        return weight_qparams(w, self.bits, self.symmetric, self.granularity, self.group_size)

    def codes(self, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Int8 codes (channels first: ``(out, in)`` for a transposed weight), scale and zero point of ``w``
        (the input of this parametrization), for export."""
        scale, zero_point = self.qparams(w)
        w = w.t() if self.transposed else w
        codes = quantize_weight(
            w, scale, zero_point, self.bits, self.symmetric, self.granularity, self.group_size
        )
        return codes, scale, zero_point

    def forward(self, w: Tensor) -> Tensor:
        if not bool(self.enabled):
            return w
        scale, zero_point = self.qparams(w)
        with torch.no_grad():
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point)
        rows = w.t() if self.transposed else w  # channels first
        out = fake_quantize_weight(
            rows, scale, zero_point, self.bits, self.symmetric, self.granularity, self.group_size
        )
        return out.t() if self.transposed else out

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.granularity == "per_group" else ""
        transposed = ", transposed=True" if self.transposed else ""
        return (
            f"bits={self.bits}, symmetric={self.symmetric}, granularity={self.granularity}{group}{transposed}"
        )
