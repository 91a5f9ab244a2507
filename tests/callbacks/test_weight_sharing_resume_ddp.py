"""WeightSharingCallback: exact resume before and after clustering, identical codebooks on two DDP ranks."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_opt import WeightSharingCallback
from tests.helpers.models import BoringClassifier
from tests.helpers.trainer import tiny_trainer

STEPS, CKPT_STEP = 12, 8  # 8 steps per epoch: the checkpoint closes epoch 0


def _tensors(module):
    return {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("start_step", [3, 10], ids=["clustered-before-checkpoint", "clustered-after-resume"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, start_step):
    sharing = lambda: WeightSharingCallback(n_clusters=8, start_step=start_step)  # noqa: E731
    full = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, save_on_train_epoch_end=True
    )
    tiny_trainer(
        tmp_path, callbacks=[sharing(), checkpoints], max_steps=STEPS, enable_checkpointing=True
    ).fit(full)
    path = tmp_path / f"epoch=0-step={CKPT_STEP}.ckpt"
    ckpt = torch.load(path, weights_only=True)
    resumed_sharing = sharing()
    assert ckpt["callbacks"][resumed_sharing.state_key]["clustered_step"] == (
        start_step if start_step < 8 else -1
    )
    assert ckpt["state_dict"]["net.fc1.parametrizations.weight.0.indices"].dtype == torch.uint8

    resumed = BoringClassifier("mlp", lr=0.05, momentum=0.9)
    tiny_trainer(tmp_path / "resumed", callbacks=[resumed_sharing], max_steps=STEPS).fit(
        resumed, ckpt_path=path
    )
    expected, got = _tensors(full), _tensors(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert resumed_sharing.clustered_step == start_step
    assert len(torch.unique(resumed.net.fc1.weight.detach())) <= 8


class RecordCodebooks(Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        state = {
            k: v
            for k, v in pl_module.state_dict().items()
            if ".parametrizations.weight.0." in k and isinstance(v, torch.Tensor)
        }
        torch.save(state, Path(self.out) / f"rank{trainer.global_rank}-step{trainer.global_step}.pt")


@pytest.mark.ddp
@pytest.mark.slow
def test_codebooks_identical_on_both_ranks_and_returned_to_parent(tmp_path):
    model = BoringClassifier("mlp", lr=0.05)
    sharing = WeightSharingCallback(n_clusters=4, start_step=1)
    trainer = tiny_trainer(
        tmp_path,
        strategy="ddp_spawn",
        devices=2,
        max_steps=4,
        callbacks=[sharing, RecordCodebooks(str(tmp_path))],
    )
    trainer.fit(model)
    for step in range(1, 5):
        rank0 = torch.load(tmp_path / f"rank0-step{step}.pt", weights_only=True)
        rank1 = torch.load(tmp_path / f"rank1-step{step}.pt", weights_only=True)
        assert rank0.keys() == rank1.keys()
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (step, key)
    final = torch.load(tmp_path / "rank0-step4.pt", weights_only=True)
    book = model.net.fc1.parametrizations.weight[0]  # the launching process holds the trained codebook
    assert bool(book.clustered)
    assert torch.equal(book.indices, final["net.fc1.parametrizations.weight.0.indices"])
    assert torch.equal(book.centroids.detach(), final["net.fc1.parametrizations.weight.0.centroids"])


def _cluster_on_rank(rank, world_size):
    from lit_opt.sharing import SharingConfig, cluster_weights, prepare_sharing

    torch.manual_seed(rank)  # different weights on each rank: rank 0's clustering must win
    layer = torch.nn.Sequential(torch.nn.Linear(8, 8))
    config = SharingConfig(n_clusters=4)
    prepare_sharing(layer, config)
    cluster_weights(layer, config)
    book = layer[0].parametrizations.weight[0]
    return book.centroids.detach().clone(), book.indices.clone()


@pytest.mark.ddp
def test_rank_zero_clustering_is_broadcast():
    from tests.helpers.ddp import run_ddp

    (c0, i0), (c1, i1) = run_ddp(_cluster_on_rank, world_size=2)
    assert torch.equal(c0, c1) and torch.equal(i0, i1)
