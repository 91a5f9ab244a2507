"""A small compression job for the fault tests: run it, SIGKILL it at a chosen point, resume it.

``python -m tests.hardening.fault_job OUT [--kill-at POINT] [--resume]`` trains ``BoringClassifier``
(MLP) for 3 epochs of 8 steps with gradual magnitude pruning (every 3 steps from 2 to 20), int8 QAT
from step 4 with static activation ranges frozen at step 12, a checkpoint at every epoch end (``OUT/ckpt``, plus
``last.ckpt``) and an ``ExportCallback`` (``OUT/artifact``). ``--resume`` continues from
``last.ckpt`` if there is one. ``--kill-at`` sends SIGKILL to the job itself:

- ``pruning``: inside the fourth pruning step (step 11), after the new masks are set, before the step ends;
- ``checkpoint``: right after the second epoch-end checkpoint (step 16) (and ``last.ckpt``) is written;
- ``observer_freeze``: at the step where QAT freezes its activation observers;
- ``export``: inside the export, after the weights file is written, before the manifest and rename.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lit_opt
from lit_opt.callbacks import pruning as pruning_callback_module
from lit_opt.export import exporter as exporter_module
from tests.helpers.models import BoringClassifier
from tests.helpers.trainer import tiny_trainer

POINTS = ("pruning", "checkpoint", "observer_freeze", "export")
FREEZE_STEP = 12


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_on_call(owner: Any, name: str, nth: int) -> None:
    """Replace ``owner.name`` by a wrapper that runs it, then kills the process on its ``nth`` call."""
    original, calls = getattr(owner, name), [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == nth:
            _die()
        return result

    setattr(owner, name, wrapper)


class _KillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            _die()


class _KillAfterSecondCheckpoint(ModelCheckpoint):
    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if trainer.global_step == 16:
            _die()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill-at", choices=POINTS)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    if args.kill_at == "pruning":
        _kill_on_call(pruning_callback_module, "update_masks", nth=4)
    if args.kill_at == "export":
        _kill_on_call(exporter_module, "save_file", nth=1)
    checkpoint_cls = _KillAfterSecondCheckpoint if args.kill_at == "checkpoint" else ModelCheckpoint
    callbacks: list[Callback] = [
        lit_opt.IterativePruningCallback(0.75, start_step=2, end_step=20, every_n_steps=3),
        lit_opt.QATCallback(
            weight_bits=8, activations="static", start_step=4, freeze_observers_step=FREEZE_STEP
        ),
        checkpoint_cls(
            dirpath=args.out / "ckpt",
            every_n_epochs=1,
            save_top_k=-1,
            save_last=True,
            save_on_train_epoch_end=True,
        ),
        lit_opt.ExportCallback(dirpath=str(args.out / "artifact")),
    ]
    if args.kill_at == "observer_freeze":
        callbacks.insert(2, _KillAtStep(FREEZE_STEP))  # after QATCallback has frozen the observers
    trainer = tiny_trainer(
        args.out, max_epochs=3, max_steps=-1, enable_checkpointing=True, callbacks=callbacks
    )
    trainer.fit(BoringClassifier("mlp", lr=0.05, momentum=0.9), ckpt_path="last" if args.resume else None)


if __name__ == "__main__":
    main()
