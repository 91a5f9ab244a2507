"""The one table of module types lit_opt compresses, and the facts about each that the plugins need.

Every plugin learns from here which types it handles (:func:`supported_types`), which weight
dimension holds a layer's output units (``out_dim``: 0 for ``nn.Linear``, 1 for transformers'
``Conv1D``, whose weight is stored transposed as ``(in, out)``), and the layer's widths. A targets
pattern that matches weight layers a plugin cannot handle is reported by :func:`warn_unsupported`.

Example::

    >>> from torch import nn
    >>> layout_of(nn.Linear(4, 3)).out_dim, out_features(nn.Linear(4, 3)), in_features(nn.Linear(4, 3))
    (0, 3, 4)
    >>> "low_rank" in layout_of(nn.Embedding(10, 4)).plugins
    False
"""

from __future__ import annotations

import fnmatch
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from torch import Tensor, nn

__all__ = [
    "PLUGINS",
    "Layout",
    "in_features",
    "layout_of",
    "linear_weight",
    "out_features",
    "supported_types",
    "tied_groups",
    "warn_unsupported",
    "with_tied",
]

#: the plugins that consult this table, by the name used in :attr:`Layout.plugins`
PLUGINS: dict[str, str] = {
    "qat": "QATCallback",
    "pruning": "IterativePruningCallback",
    "sharing": "WeightSharingCallback",
    "low_rank": "LowRankCallback",
}


@dataclass(frozen=True)
class Layout:
    """What lit_opt knows about one module type.

    Attributes:
        cls: the module class.
        out_dim: the weight dimension indexing output units (channels, rows of a Linear, embedding
            rows); the other dimensions are its inputs.
        plugins: the plugins (keys of :data:`PLUGINS`) that handle this type.
    """

    cls: type[nn.Module]
    out_dim: int
    plugins: frozenset[str]

    @property
    def transposed(self) -> bool:
        """Whether the weight is stored ``(in, out)``: export writes it ``(out, in)``, load serves it as a Linear."""
        return self.out_dim == 1


_ALL = frozenset(PLUGINS)
_TORCH_TABLE: tuple[Layout, ...] = (
    Layout(nn.Linear, 0, _ALL),
    Layout(nn.Conv1d, 0, frozenset({"qat", "pruning", "sharing"})),
    Layout(nn.Conv2d, 0, frozenset({"qat", "pruning", "sharing"})),
    Layout(nn.Embedding, 0, frozenset({"qat", "sharing"})),
)


def _table() -> tuple[Layout, ...]:
    """The table; transformers' ``Conv1D`` joins it once transformers defined it (a model holding one
    has imported it), so importing lit_opt does not import transformers."""
    utils = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(utils, "Conv1D", None)
    if not isinstance(conv1d, type):
        return _TORCH_TABLE
    return (*_TORCH_TABLE, Layout(conv1d, 1, _ALL))


def layout_of(module: nn.Module) -> Layout | None:
    """The table's entry for ``module`` (subclasses included), or None for an unknown type."""
    for layout in _table():
        if isinstance(module, layout.cls):
            return layout
    return None


def supported_types(plugin: str) -> tuple[type[nn.Module], ...]:
    """The module classes ``plugin`` (a key of :data:`PLUGINS`) handles (``Conv1D`` once transformers is
    imported)."""
    return tuple(layout.cls for layout in _table() if plugin in layout.plugins)


def _layout(module: nn.Module) -> Layout:
    layout = layout_of(module)
    if layout is None:
        raise ValueError(f"{type(module).__name__} is not a module type lit_opt compresses.")
    return layout


def out_features(module: nn.Module) -> int:
    """Output units of a weight layer (Linear rows, Conv channels, Conv1D's ``nf``, embedding rows)."""
    return int(cast(Tensor, module.weight).shape[_layout(module).out_dim])


def in_features(module: nn.Module) -> int:
    """Inputs per output unit (for a convolution: in channels x kernel size)."""
    weight = cast(Tensor, module.weight)
    return weight.numel() // int(weight.shape[_layout(module).out_dim])


def linear_weight(module: nn.Module) -> Tensor:
    """The weight as ``(out, in)`` (a transposed view for Conv1D), as ``F.linear`` would take it."""
    weight = cast(Tensor, module.weight)
    return weight.t() if _layout(module).transposed else weight


def _holds_weight(module: nn.Module) -> bool:
    weight = module._parameters.get("weight")
    return isinstance(weight, Tensor) and weight.dim() >= 2


def warn_unsupported(
    model: nn.Module, targets: Sequence[str], exclude: Sequence[str], plugin: str
) -> list[str]:
    """Warn about the weight layers ``targets`` match that ``plugin`` leaves alone; returns their names.

    Only modules that hold a 2-D (or larger) weight of their own count, so containers, norms and
    activations that a wildcard matches stay quiet.

    Example::

        >>> model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
        >>> with warnings.catch_warnings(record=True):
        ...     warn_unsupported(model, ["*"], [], "low_rank")
        ['0']
    """
    supported = supported_types(plugin)
    left = {}
    for name, module in model.named_modules():
        if not name or isinstance(module, supported) or not _holds_weight(module):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in targets) and not any(
            fnmatch.fnmatchcase(name, p) for p in exclude
        ):
            left[name] = type(module).__name__
    if left:
        kinds = sorted(set(left.values()))
        shown = ", ".join(repr(n) for n in list(left)[:5]) + (", ..." if len(left) > 5 else "")
        warnings.warn(
            f"{PLUGINS[plugin]}: targets match {len(left)} module(s) of type {'/'.join(kinds)} that it does not "
            f"compress ({shown}); they stay as they are. It handles "
            f"{'/'.join(t.__name__ for t in supported)}. HINT: add them to exclude to silence this.",
            UserWarning,
            stacklevel=3,
        )
    return list(left)


def _weight_tensor(module: nn.Module) -> Tensor | None:
    """The tensor behind ``module.weight``: its parameter, or the original under parametrizations."""
    parametrizations = getattr(module, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return cast(Tensor, parametrizations["weight"].original)
    weight = module._parameters.get("weight")
    return weight if isinstance(weight, Tensor) else None


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Names of modules that hold one and the same weight tensor (tied input/output embeddings), in
    ``named_modules`` order; only groups of two or more.

    Example::

        >>> model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
        >>> model[1].weight = model[0].weight
        >>> tied_groups(model)
        [['0', '1']]
    """
    by_tensor: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = _weight_tensor(module) if name else None
        if weight is not None:
            by_tensor.setdefault(id(weight), []).append(name)
    return [names for names in by_tensor.values() if len(names) > 1]


def with_tied(model: nn.Module, selected: dict[str, nn.Module], plugin: str) -> list[list[str]]:
    """``selected`` as groups of names that must share one parametrization: a selected module's tied
    partners join it (a tied weight has one value for all its users), with a warning when the targets
    left one out. Returns the groups, each in ``named_modules`` order.

    Raises:
        ValueError: tied modules whose weights differ in layout (e.g. one stored transposed).
    """
    ties = {name: group for group in tied_groups(model) for name in group}
    groups: list[list[str]] = []
    seen: set[str] = set()
    for name in selected:
        if name in seen:
            continue
        group = ties.get(name, [name])
        modules = [model.get_submodule(n) for n in group]
        layouts = {
            (getattr(layout_of(m), "out_dim", None), tuple(cast(Tensor, m.weight).shape)) for m in modules
        }
        if len(layouts) > 1:
            raise ValueError(
                f"{PLUGINS[plugin]}: modules {group} share one weight but store it in different layouts "
                f"({', '.join(type(m).__name__ for m in modules)}). HINT: exclude all of them."
            )
        added = [n for n in group if n not in selected]
        if added:
            warnings.warn(
                f"{PLUGINS[plugin]}: {name!r} shares its weight with {added} (tied embeddings); they are "
                "compressed together, as one tensor.",
                UserWarning,
                stacklevel=3,
            )
        seen.update(group)
        groups.append(group)
    return groups
