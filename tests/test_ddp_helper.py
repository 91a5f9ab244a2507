"""The two-process gloo helper and a two-process ``ddp_spawn`` fit both work on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.helpers.ddp import run_ddp
from tests.helpers.models import BoringClassifier
from tests.helpers.trainer import tiny_trainer


def _all_reduce_sum(rank: int, world_size: int, scale: float) -> dict[str, object]:
    t = torch.tensor([float(rank + 1)]) * scale
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {"rank": rank, "world_size": world_size, "sum": t}


def _raise_on_rank_one(rank: int, world_size: int) -> None:
    if rank == 1:
        raise RuntimeError("boom on rank 1")


@pytest.mark.ddp
def test_run_ddp_all_reduce_sum() -> None:
    results = run_ddp(_all_reduce_sum, 2.0, world_size=2)
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world_size"] == 2 for r in results)
    for r in results:
        torch.testing.assert_close(r["sum"], torch.tensor([6.0]))  # (1 + 2) * 2


@pytest.mark.ddp
def test_run_ddp_propagates_errors() -> None:
    with pytest.raises(RuntimeError, match="(?s)rank1.*boom on rank 1"):
        run_ddp(_raise_on_rank_one, world_size=2, timeout_s=20.0)


@pytest.mark.ddp  # rerun if a rank aborts at exit (tests/conftest.py)
def test_ddp_spawn_fit_returns_trained_weights(tmp_path: Path) -> None:
    model = BoringClassifier(net="mlp", lr=0.1, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = tiny_trainer(tmp_path, strategy="ddp_spawn", devices=2, max_steps=2)
    trainer.fit(model)
    # The launching process gets the weights back, not the trainer's loop state.
    assert trainer.state.finished
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
