"""A tiny, quiet, deterministic CPU ``Trainer`` for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from lightning.pytorch.loops.fit_loop import _FitLoop


def tiny_trainer(tmp_path: str | Path, **overrides: Any) -> L.Trainer:
    """Return a one-CPU ``Trainer`` that runs 4 optimizer steps and writes only under ``tmp_path``.

    Logging, progress bar, model summary, checkpointing and the sanity validation loop are off;
    any keyword in ``overrides`` replaces the default (e.g. ``enable_checkpointing=True``,
    ``callbacks=[...]``, ``strategy="ddp_spawn", devices=2``).
    """
    kwargs: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": 4,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "deterministic": True,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(tmp_path),
    }
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


@contextlib.contextmanager
def modes_at_training_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Record, for every ``fit`` inside the block, the LightningModule's submodules in eval mode as training starts.

    Hooks the check Lightning itself makes there (its "Found N module(s) in eval mode" warning), so it sees
    the modes the first training step will run with. Yields a list that gets one list of names per fit.

    Example::

        with modes_at_training_start(monkeypatch) as fits:
            trainer.fit(module)
        assert fits == [[]]          # one fit, every module in training mode
    """
    fits: list[list[str]] = []
    original = _FitLoop._warn_if_modules_in_eval_mode

    def record(loop: _FitLoop) -> None:
        module = loop.trainer.lightning_module
        fits.append([name for name, m in module.named_modules() if not m.training])
        original(loop)

    with monkeypatch.context() as patch:
        patch.setattr(_FitLoop, "_warn_if_modules_in_eval_mode", record)
        yield fits
