"""IterativePruningCallback: exact resume mid-schedule, and identical masks on two DDP ranks."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lit_opt
from lit_opt import IterativePruningCallback
from tests.helpers.models import BoringClassifier
from tests.helpers.trainer import tiny_trainer

STEPS, CKPT_STEP = 16, 8  # 8 steps per epoch: the checkpoint closes epoch 0, mid-schedule


def _pruning(criterion="movement"):
    return IterativePruningCallback(0.75, criterion=criterion, start_step=2, end_step=14, every_n_steps=3)


def _tensors(module):
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def test_resume_mid_schedule_reproduces_the_uninterrupted_run(tmp_path):
    full = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True
    )
    tiny_trainer(
        tmp_path, callbacks=[_pruning(), checkpoints], max_steps=STEPS, enable_checkpointing=True
    ).fit(full)
    path = tmp_path / f"epoch=0-step={CKPT_STEP}.ckpt"
    ckpt = torch.load(path, weights_only=True)
    pruning = _pruning()
    assert ckpt["callbacks"][pruning.state_key]["last_pruned_step"] == 5  # pruned at steps 2, 5; 8 comes next
    assert "net.fc1.parametrizations.weight.0.score" in ckpt["state_dict"]  # movement scores travel too

    resumed = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    tiny_trainer(tmp_path / "resumed", callbacks=[pruning], max_steps=STEPS).fit(resumed, ckpt_path=path)
    expected, got = _tensors(full), _tensors(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert pruning.current_sparsity == 0.75 and pruning.last_pruned_step == 14

    # outside the Trainer: restore() rebuilds the masks from the checkpoint
    model = lit_opt.restore(BoringClassifier("mlp"), ckpt["state_dict"])
    assert torch.equal(
        model.net.fc1.parametrizations.weight[0].mask,
        ckpt["state_dict"]["net.fc1.parametrizations.weight.0.mask"],
    )


class RecordMasks(Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        masks = {
            k: v for k, v in pl_module.state_dict().items() if k.endswith(".mask") or k.endswith(".score")
        }
        torch.save(masks, Path(self.out) / f"rank{trainer.global_rank}-step{trainer.global_step}.pt")


@pytest.mark.ddp
def test_activation_masks_identical_on_both_ranks_and_returned_to_parent(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    pruning = IterativePruningCallback(
        0.5,
        criterion="activation",
        structure="rows",
        scope="local",
        start_step=1,
        end_step=4,
        every_n_steps=1,
    )
    trainer = tiny_trainer(
        tmp_path,
        strategy="ddp_spawn",
        devices=2,
        max_steps=5,
        callbacks=[pruning, RecordMasks(str(tmp_path))],
    )
    trainer.fit(model)
    for step in range(1, 6):
        rank0 = torch.load(tmp_path / f"rank0-step{step}.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"rank1-step{step}.pt", weights_only=True)
        for key in rank0:
            if key.endswith(".mask"):
                assert torch.equal(rank0[key], rank1[key]), (step, key)
    final = torch.load(tmp_path / "rank0-step5.pt", weights_only=True)
    assert torch.equal(
        model.net.fc1.parametrizations.weight[0].mask, final["net.fc1.parametrizations.weight.0.mask"]
    )
    assert float((model.net.fc1.weight == 0).float().mean()) > 0.2


def _prune_rows_on_rank(rank, world_size):
    from lit_opt.pruning import PruningConfig, prepare_pruning, sync_scores, update_masks

    layer = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False))
    torch.nn.init.eye_(layer[0].weight)
    config = PruningConfig(0.5, criterion="activation", structure="rows", scope="local")
    groups = prepare_pruning(layer, config)
    # rank 0 alone would keep units 0, 1; summed over both ranks units 2, 3 are more active
    layer(torch.tensor([[10.0, 10.0, 1.0, 1.0]]) if rank == 0 else torch.tensor([[1.0, 1.0, 12.0, 12.0]]))
    sync_scores(groups, config)
    update_masks(groups, config, 0.5, step=0)
    return layer[0].parametrizations.weight[0].mask.all(dim=1).tolist()


@pytest.mark.ddp
def test_activation_scores_are_all_reduced_before_choosing():
    from tests.helpers.ddp import run_ddp

    assert run_ddp(_prune_rows_on_rank, world_size=2) == [[False, False, True, True]] * 2
