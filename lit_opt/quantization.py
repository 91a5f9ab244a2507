"""Which layers get quantized, and how: the configuration QAT and post-training quantization share.

:class:`QuantizationConfig` validates the arguments once; :func:`prepare_quantization` installs the
quantizers (a :class:`~lit_opt.parametrizations.WeightFakeQuant` on each weight, an
:class:`~lit_opt.nn.ActivationQuantizer` on each input); :func:`set_quantization_state` moves
their flags. ``QATCallback`` and ``export``'s post-training path are both thin users of these.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> prepare_quantization(model, QuantizationConfig(weight_bits=4, granularity="per_group", group_size=4))
    ['0', '2']
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_opt.functional.quantize import GRANULARITIES
from lit_opt.module_types import in_features, layout_of, supported_types, warn_unsupported, with_tied
from lit_opt.nn.activation_quantizer import (
    ACTIVATION_MODES,
    INPUT_QUANTIZER,
    ActivationQuantizer,
    attach_input_quantizer,
)
from lit_opt.parametrizations.ordering import register_in_order
from lit_opt.parametrizations.weight_fake_quant import WeightFakeQuant
from lit_opt.targets import select_modules, validate_patterns

WEIGHT_BITS: tuple[int, ...] = (4, 8)


@dataclass
class QuantizationConfig:
    """How to quantize: bits, granularity and activation mode, and which modules (fnmatch patterns).

    Args:
        weight_bits: 8 (int8) or 4 (int4, packed two per byte on export).
        activations: ``"dynamic"`` (per-row int8 at run time), ``"static"`` (observed ranges,
            frozen later) or ``"none"`` (weight-only). Embeddings never quantize their input.
        granularity: ``"per_channel"`` (one scale per output channel / embedding row),
            ``"per_tensor"`` or ``"per_group"`` (one scale per ``group_size`` inputs of a channel).
        group_size: elements per group; required by, and only allowed with, ``per_group``.
        symmetric: symmetric codes (zero point 0) or asymmetric.
        targets: fnmatch patterns over qualified module names; Linear, Conv1d/2d, Embedding and
            transformers' ``Conv1D`` modules that match are quantized (per output channel: a
            ``Conv1D``'s columns). Tied weights (input/output embeddings) share one quantizer.
        exclude: patterns of modules to leave alone.

    Raises:
        ValueError: an argument outside the accepted values; the message says which and the fix.
    """

    weight_bits: int = 8
    activations: str = "dynamic"
    granularity: str = "per_channel"
    group_size: int | None = None
    symmetric: bool = True
    targets: Sequence[str] = field(default_factory=lambda: ["*"])
    exclude: Sequence[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.weight_bits, bool) or self.weight_bits not in WEIGHT_BITS:
            raise ValueError(
                f"weight_bits={self.weight_bits!r} is not supported; accepted: 4 or 8. "
                "HINT: use 8 for int8 weights, 4 for int4 (with granularity='per_group')."
            )
        if self.activations not in ACTIVATION_MODES:
            raise ValueError(
                f"activations={self.activations!r} is not one of {ACTIVATION_MODES}. "
                "HINT: 'dynamic' quantizes each row at run time, 'static' uses observed ranges, "
                "'none' quantizes weights only."
            )
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r} is not one of {GRANULARITIES}.")
        if self.granularity == "per_group":
            if (
                isinstance(self.group_size, bool)
                or not isinstance(self.group_size, int)
                or self.group_size <= 0
            ):
                raise ValueError(
                    f"group_size={self.group_size!r} must be a positive integer with granularity='per_group'. "
                    "HINT: 32, 64 or 128 divide the widths of most transformer layers."
                )
        elif self.group_size is not None:
            raise ValueError(
                f"group_size={self.group_size!r} is only used with granularity='per_group', "
                f"not granularity={self.granularity!r}. HINT: drop group_size or set granularity='per_group'."
            )
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric={self.symmetric!r} must be True or False.")
        self.targets = validate_patterns(self.targets, "targets")
        self.exclude = validate_patterns(self.exclude, "exclude")
        if not self.targets:
            raise ValueError("targets=[] selects no module. HINT: use targets=['*'] to quantize every layer.")


def weight_quantizers(model: nn.Module) -> Iterator[tuple[str, nn.Module, WeightFakeQuant]]:
    """Yield ``(module_name, module, quantizer)`` for every weight carrying a ``WeightFakeQuant``."""
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations["weight"]:
                if isinstance(p, WeightFakeQuant):
                    yield name, module, p


def activation_quantizers(model: nn.Module) -> Iterator[tuple[str, ActivationQuantizer]]:
    """Yield ``(module_name, quantizer)`` for every module whose input is quantized."""
    for name, module in model.named_modules():
        quantizer = getattr(module, INPUT_QUANTIZER, None)
        if isinstance(quantizer, ActivationQuantizer):
            yield name, quantizer


def prepare_quantization(model: nn.Module, config: QuantizationConfig, owner: str = "") -> list[str]:
    """Install fake quantizers on the modules ``config`` selects; returns their names.

    Idempotent for the same ``owner`` (Lightning calls ``setup`` once per stage).

    Raises:
        ValueError: targets that match nothing, a ``group_size`` that does not divide a layer's
            input width, or a module already quantized by another owner.
    """
    selected = select_modules(model, config.targets, config.exclude, types=supported_types("qat"))
    warn_unsupported(model, config.targets, config.exclude, "qat")
    groups = with_tied(model, selected, "qat")
    existing = {name: q for name, _, q in weight_quantizers(model)}
    todo = []
    for group in groups:
        if any(name in existing for name in group):
            holder = next(existing[name] for name in group if name in existing)
            if holder.owner != owner:
                raise ValueError(
                    f"module {group[0]!r} is already quantized by {holder.owner or 'another quantizer'}; "
                    f"{owner or 'this configuration'} targets it too. HINT: give each QATCallback disjoint "
                    "`targets`/`exclude` patterns."
                )
            continue
        module = model.get_submodule(group[0])
        weight = cast(Tensor, module.weight)
        width = in_features(module)
        if config.granularity == "per_group" and width % config.group_size:  # type: ignore[operator]
            raise ValueError(
                f"group_size={config.group_size} does not divide the {width} inputs per channel of module "
                f"{group[0]!r} (weight shape {tuple(weight.shape)}). HINT: choose a divisor of {width} "
                "or exclude the module."
            )
        todo.append((group, module, weight))
    for group, module, weight in todo:
        layout = layout_of(module)
        quantizer = WeightFakeQuant(
            weight.shape,
            config.weight_bits,
            config.symmetric,
            config.granularity,
            config.group_size,
            owner,
            transposed=layout is not None and layout.transposed,
        ).to(weight.device)
        for name in group:  # tied modules: one quantizer, so one set of codes
            member = model.get_submodule(name)
            register_in_order(member, "weight", quantizer)
            if config.activations != "none" and not isinstance(member, nn.Embedding):
                per_sample = isinstance(member, (nn.Conv1d, nn.Conv2d))
                act = ActivationQuantizer(config.activations, per_sample, config.symmetric, owner=owner)
                attach_input_quantizer(member, act.to(weight.device))
    return [name for group in groups for name in group]


def set_quantization_state(
    model: nn.Module, owner: str, enabled: bool | None = None, observing: bool | None = None
) -> None:
    """Switch ``owner``'s quantizers on/off and its static observers between observing and frozen."""
    for _, _, quantizer in weight_quantizers(model):
        if quantizer.owner == owner and enabled is not None:
            quantizer.enabled.fill_(enabled)
    for _, act in activation_quantizers(model):
        if act.owner != owner:
            continue
        if enabled is not None:
            act.enabled.fill_(enabled)
        if observing is not None and act.mode == "static":
            act.observing.fill_(observing)


def quantizer_input(module: nn.Module, quantizer: nn.Module, tensor_name: str = "weight") -> Tensor:
    """The tensor ``quantizer`` receives: the original weight through the parametrizations before it."""
    plist = cast(Any, module).parametrizations[tensor_name]
    value = plist.original
    for p in plist:
        if p is quantizer:
            return value
        value = p(value)
    raise ValueError(f"{quantizer!r} does not parametrize {tensor_name!r} of {module!r}.")
