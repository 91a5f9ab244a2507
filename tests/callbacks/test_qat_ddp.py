"""QATCallback under DDP (two CPU processes, gloo): identical quantizer state on every rank."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lit_opt import QATCallback
from tests.helpers.models import BoringClassifier
from tests.helpers.trainer import tiny_trainer


def _quantizer_state(module):
    return {
        k: v.clone()
        for k, v in module.state_dict().items()
        if isinstance(v, torch.Tensor) and ("input_quantizer" in k or ".parametrizations." in k)
    }


class RecordQuantizerState(Callback):
    """Each rank writes its quantizer buffers after every step (picklable: module level)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        path = Path(self.out) / f"rank{trainer.global_rank}-step{trainer.global_step}.pt"
        torch.save(_quantizer_state(pl_module), path)


@pytest.mark.ddp
def test_static_ranges_and_scales_identical_on_both_ranks_and_returned_to_parent(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    qat = QATCallback(activations="static", symmetric=False, freeze_observers_step=3)
    trainer = tiny_trainer(
        tmp_path,
        strategy="ddp_spawn",
        devices=2,
        max_steps=5,
        callbacks=[qat, RecordQuantizerState(str(tmp_path))],
    )
    trainer.fit(model)
    for step in range(1, 6):
        rank0 = torch.load(tmp_path / f"rank0-step{step}.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"rank1-step{step}.pt", weights_only=True)
        assert rank0.keys() == rank1.keys() and "net.fc1.input_quantizer.running_max" in rank0
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (step, key)
    # the ranks saw different halves of the data, so a per-rank range would have differed: the
    # shared range is the all-reduced one, at least as wide as either rank's own batches
    assert rank0["net.fc1.input_quantizer.running_max"] > 0
    # ddp_spawn: the launching process's model holds the trained, quantized state
    final = torch.load(tmp_path / "rank0-step5.pt", weights_only=True)
    parent = _quantizer_state(model)
    assert parent.keys() == final.keys()
    for key in final:
        assert torch.equal(parent[key], final[key]), key
