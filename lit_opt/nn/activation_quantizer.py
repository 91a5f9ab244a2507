"""``ActivationQuantizer``: int8 fake quantization of a layer's input, driven by a forward pre-hook."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lit_opt.functional.quantize import (
    dynamic_qparams,
    fake_quantize,
    fake_quantize_symmetric,
    qparams_from_range,
    quant_range,
)
from lit_opt.parametrizations.extra_state import ConfigExtraState

ACTIVATION_MODES: tuple[str, ...] = ("dynamic", "static", "none")
INPUT_QUANTIZER = "input_quantizer"


class ActivationQuantizer(ConfigExtraState):
    """Fake-quantizes activations to int8, as the exported kernel will.

    ``mode="dynamic"`` computes a scale per row (the last dimension; per sample for convolutions)
    at run time, exactly as the dynamic int8 kernel does. ``mode="static"`` observes a moving
    average of the per-batch min/max while ``observing`` is set (all-reduced across DDP ranks
    first, so every rank holds the same range) and quantizes with the ``scale``/``zero_point``
    buffers, which stop moving when the observer is frozen. Before the first observation a static
    quantizer passes its input through.

    Args:
        mode: ``"dynamic"`` or ``"static"``.
        per_sample: reduce over all non-batch dimensions (convolutions) instead of the last one.
        symmetric: symmetric codes (zero point 0).
        momentum: weight of the newest batch in the moving average (static).
        owner: ``state_key`` of the callback that installed it.

    Example::

        >>> q = ActivationQuantizer("dynamic")
        >>> x = torch.tensor([[0.0, 1.0, -2.0]])  # row scale 2/127
        >>> bool((q(x) - x).abs().max() <= 1 / 127)
        True
    """

    what, callback, checked = "activation quantizer", "QATCallback", ("mode", "per_sample", "symmetric")
    fields = ("mode", "per_sample", "symmetric", "momentum", "owner")
    enabled: Tensor
    observing: Tensor
    initialized: Tensor
    running_min: Tensor
    running_max: Tensor
    scale: Tensor
    zero_point: Tensor

    def __init__(
        self,
        mode: str = "dynamic",
        per_sample: bool = False,
        symmetric: bool = True,
        momentum: float = 0.1,
        owner: str = "",
    ) -> None:
        super().__init__()
        if mode not in ("dynamic", "static"):
            raise ValueError(f"mode={mode!r} is not one of ('dynamic', 'static').")
        self.mode = mode
        self.per_sample = bool(per_sample)
        self.symmetric = bool(symmetric)
        self.momentum = float(momentum)
        self.owner = owner
        self.qmin, self.qmax = quant_range(8, self.symmetric)
        self.register_buffer("enabled", torch.tensor(True))
        if mode == "static":
            self.register_buffer("observing", torch.tensor(True))
            self.register_buffer("initialized", torch.tensor(False))
            self.register_buffer("running_min", torch.tensor(0.0))
            self.register_buffer("running_max", torch.tensor(0.0))
            self.register_buffer("scale", torch.tensor(1.0))
            self.register_buffer("zero_point", torch.tensor(0.0))

    def reduce_dims(self, x: Tensor) -> tuple[int, ...]:
        """Dimensions one dynamic scale covers: the last, or all but the batch dimension."""
        return tuple(range(1, x.dim())) if self.per_sample else (-1,)

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        """Fold this batch's min/max (all-reduced across ranks) into the moving average."""
        batch = torch.stack([-x.detach().min().float(), x.detach().max().float()])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch, op=dist.ReduceOp.MAX)  # -min and max: one MAX gives both
        new_min, new_max = -batch[0], batch[1]
        if bool(self.initialized):
            new_min = torch.lerp(self.running_min, new_min, self.momentum)
            new_max = torch.lerp(self.running_max, new_max, self.momentum)
        self.running_min.copy_(new_min)
        self.running_max.copy_(new_max)
        self.initialized.fill_(True)
        scale, zero_point = qparams_from_range(self.running_min, self.running_max, 8, self.symmetric)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)

    def forward(self, x: Tensor) -> Tensor:
        if not bool(self.enabled):
            return x
        if self.mode == "dynamic":
            scale, zero_point = dynamic_qparams(x.float(), self.reduce_dims(x), self.symmetric)
            if self.symmetric:  # the row's own range: nothing clips
                return fake_quantize_symmetric(x.float(), scale).to(x.dtype)
        else:
            if self.training and bool(self.observing):
                self.observe(x)
            if not bool(self.initialized):
                return x
            scale, zero_point = self.scale, self.zero_point
        return fake_quantize(x.float(), scale, zero_point, self.qmin, self.qmax).to(x.dtype)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, per_sample={self.per_sample}, symmetric={self.symmetric}"


def _quantize_input(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    quantizer = getattr(module, INPUT_QUANTIZER)
    if args:
        return (quantizer(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "input": quantizer(kwargs["input"])}


def attach_input_quantizer(module: nn.Module, quantizer: ActivationQuantizer) -> None:
    """Install ``quantizer`` as ``module.input_quantizer`` and quantize the module's input with it."""
    module.add_module(INPUT_QUANTIZER, quantizer)
    module.register_forward_pre_hook(_quantize_input, with_kwargs=True)
