"""A tiny, quiet, deterministic CPU ``Trainer`` for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L


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
