"""Register parametrizations in one fixed order (docs/architecture.md, rule 2): mask, then share, then quantize.

Whatever order callbacks run their ``setup`` in, a weight's parametrizations end up sorted by
:data:`ORDER`, so pruned zeros reach the quantizer as zeros and stay exactly zero.
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn
from torch.nn.utils import parametrize

ORDER: dict[str, int] = {"Mask": 0, "Codebook": 1, "WeightFakeQuant": 2}


def register_in_order(module: nn.Module, tensor_name: str, parametrization: nn.Module) -> None:
    """``register_parametrization``, then move it to its place in :data:`ORDER` (stable for equal ranks).

    Example::

        >>> from lit_opt.parametrizations import Mask, WeightFakeQuant
        >>> layer = nn.Linear(4, 2)
        >>> register_in_order(layer, "weight", WeightFakeQuant((2, 4)))
        >>> register_in_order(layer, "weight", Mask((2, 4)))
        >>> [type(p).__name__ for p in layer.parametrizations.weight]
        ['Mask', 'WeightFakeQuant']
    """
    parametrize.register_parametrization(module, tensor_name, parametrization)
    plist = cast(Any, module).parametrizations[tensor_name]
    ordered = sorted(plist, key=lambda p: ORDER.get(type(p).__name__, len(ORDER)))
    if ordered != list(plist):
        for index, p in enumerate(ordered):
            plist[index] = p
