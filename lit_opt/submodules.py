"""Swap a submodule by its qualified name: shared by export, load, restore and the low-rank swap.

Example::

    replace_submodule(model, "encoder.layer.0.output.dense", nn.Linear(64, 32))
"""

from __future__ import annotations

from torch import nn


def replace_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the qualified ``name`` inside ``model`` (``name`` non-empty)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
