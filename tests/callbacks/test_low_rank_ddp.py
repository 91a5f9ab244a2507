"""LowRankCallback under DDP (two CPU processes, gloo): the same factors on both ranks, and the
factors' gradients are all-reduced after a mid-run swap (the model is wrapped in DDP again)."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lit_opt import LowRankCallback
from lit_opt.nn import LowRankLinear
from tests.helpers.models import BoringClassifier
from tests.helpers.trainer import tiny_trainer

SWAP, STEPS = 2, 4


class RecordGradients(Callback):
    """Each rank writes its parameters, gradients and loss before every optimizer step."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        state = {f"{n}.grad": p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}
        state.update({n: p.detach().clone() for n, p in pl_module.named_parameters()})
        state["loss"] = trainer.callback_metrics["train_loss"].clone()
        torch.save(state, Path(self.out) / f"rank{trainer.global_rank}-step{trainer.global_step}.pt")


@pytest.mark.ddp
@pytest.mark.slow
def test_mid_run_swap_keeps_ranks_identical_and_gradients_synced(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    trainer = tiny_trainer(
        tmp_path,
        strategy="ddp_spawn",
        devices=2,
        max_steps=STEPS,
        callbacks=[LowRankCallback(energy=0.8, at_step=SWAP), RecordGradients(str(tmp_path))],
    )
    trainer.fit(model)
    for step in range(STEPS):
        rank0 = torch.load(tmp_path / f"rank0-step{step}.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"rank1-step{step}.pt", weights_only=True)
        assert not torch.equal(rank0.pop("loss"), rank1.pop("loss"))  # each rank saw its own data
        assert rank0.keys() == rank1.keys()
        assert ("net.fc1.first.weight.grad" in rank0) == (step >= SWAP)
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (step, key)
    # ddp_spawn: the launching process's model is factorized and holds the trained factors
    assert isinstance(model.net.fc1, LowRankLinear)
    final = torch.load(tmp_path / f"rank0-step{STEPS - 1}.pt", weights_only=True)
    assert final["net.fc1.first.weight"].shape == model.net.fc1.first.weight.shape
