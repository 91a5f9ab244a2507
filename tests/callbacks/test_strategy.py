"""lit_opt callbacks refuse strategies that shard parameters (FSDP, DeepSpeed, ModelParallel), before changing anything."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import (
    DDPStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
)

import lit_opt
from tests.helpers.models import BoringClassifier

CALLBACKS = [
    lambda: lit_opt.QATCallback(),
    lambda: lit_opt.IterativePruningCallback(),
    lambda: lit_opt.ExportCallback(),
]


class DeepSpeedStrategy(DDPStrategy):
    """Stands in for Lightning's DeepSpeedStrategy (matched by class name; deepspeed is not installed)."""


@pytest.mark.parametrize("make", CALLBACKS, ids=["qat", "pruning", "export"])
@pytest.mark.parametrize(
    "strategy", [FSDPStrategy, ModelParallelStrategy, DeepSpeedStrategy], ids=lambda s: s.__name__
)
def test_sharding_strategies_are_refused_at_setup(make, strategy) -> None:
    callback, model = make(), BoringClassifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = SimpleNamespace(strategy=strategy())
    with pytest.raises(
        ValueError,
        match=rf"{type(callback).__name__} does not support the {strategy.__name__} strategy.*strategy='ddp'",
    ):
        callback.setup(trainer, model, "fit")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("strategy", [DDPStrategy(), SingleDeviceStrategy("cpu")], ids=["ddp", "single"])
def test_replicating_strategies_are_accepted(strategy) -> None:
    callback = lit_opt.IterativePruningCallback()
    callback.setup(SimpleNamespace(strategy=strategy), BoringClassifier(), "fit")
    assert callback.groups
