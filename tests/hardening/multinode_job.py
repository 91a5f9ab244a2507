"""One process of a two-node job, as ``torchrun`` starts it on each node (both nodes on localhost here).

``python -m torch.distributed.run --nnodes=2 --nproc-per-node=1 --node-rank=R --master-addr=127.0.0.1
--master-port=P -m tests.hardening.multinode_job OUT`` trains ``BoringClassifier`` with activation
pruning (scores all-reduced across nodes), static int8 QAT and an ``ExportCallback`` under
``Trainer(num_nodes=2, devices=1, strategy="ddp")``; Lightning reads torchrun's environment. Each
process saves its final state to ``OUT/rank{global_rank}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

import lit_opt
from tests.helpers.models import BoringClassifier
from tests.helpers.trainer import tiny_trainer


class _SaveState(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module) -> None:
        info = {"node_rank": trainer.node_rank, "world_size": trainer.world_size}
        torch.save({"state": pl_module.state_dict(), **info}, self.out / f"rank{trainer.global_rank}.pt")


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    callbacks = [
        lit_opt.IterativePruningCallback(
            0.5,
            criterion="activation",
            structure="rows",
            scope="local",
            start_step=1,
            end_step=6,
            every_n_steps=1,
        ),
        lit_opt.QATCallback(weight_bits=8, activations="static", start_step=2),
        _SaveState(out),
        lit_opt.ExportCallback(dirpath=str(out / "artifact")),
    ]
    trainer = tiny_trainer(out, num_nodes=2, devices=1, strategy="ddp", max_steps=8, callbacks=callbacks)
    trainer.fit(BoringClassifier("mlp", lr=0.05))


if __name__ == "__main__":
    main()
