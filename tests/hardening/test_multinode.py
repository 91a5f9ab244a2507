"""A two-node DDP job launched by torchrun (both "nodes" on localhost): same state on both, one artifact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lit_opt
from tests.helpers.ddp import find_free_port
from tests.helpers.models import BoringClassifier

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ddp
@pytest.mark.slow
def test_two_nodes_launched_by_torchrun_agree_and_export_once(tmp_path: Path) -> None:
    port = find_free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}",
                "-m", "tests.hardening.multinode_job", str(tmp_path),
            ],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]

    saved = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(s["node_rank"], s["world_size"]) for s in saved] == [(0, 2), (1, 2)]
    state0, state1 = saved[0]["state"], saved[1]["state"]
    assert state0.keys() == state1.keys() and any(k.endswith(".mask") for k in state0)
    for key, value in state0.items():  # weights, masks, quantizer buffers (and configs, as extra state)
        same = torch.equal(value, state1[key]) if isinstance(value, torch.Tensor) else value == state1[key]
        assert same, key
    assert sorted(p.name for p in tmp_path.iterdir() if "artifact" in p.name) == ["artifact"]
    trained = lit_opt.restore(BoringClassifier("mlp"), state0).eval()
    assert float((trained.net.fc1.weight == 0).all(dim=1).float().mean()) == 0.5  # half the rows pruned
    loaded = lit_opt.load(tmp_path / "artifact", kernel="reference")
    x = torch.randn(8, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x), atol=1e-5, rtol=0)
