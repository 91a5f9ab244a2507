"""Stand-ins that make a shipped LightningCLI config a few-second smoke run: a tiny model, a tiny file, short schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers.models import tiny_bert

#: Callback arguments that count optimizer steps, and the value each takes in a smoke run of a few steps.
SHORT_SCHEDULE: dict[str, int] = {
    "start_step": 1,
    "end_step": 2,
    "every_n_steps": 1,
    "at_step": 1,
    "freeze_observers_step": 2,
}
TEXT_DATA = "lit_opt.data.TextClassificationDataModule"


def write_tiny_minilm(directory: Path) -> Path:
    """A 6-layer, 32-wide random BERT with all-MiniLM-L6-v2's vocabulary size, saved as a model directory."""
    tiny_bert(vocab_size=30522, num_layers=6).save_pretrained(str(directory))
    return directory


#: Student-builder arguments that size a model, and their value in a smoke run.
TINY_SIZES: dict[str, int] = {"hidden_size": 32, "bottleneck_size": 16, "embedding_size": 16}


def _model_overrides(section: dict[str, Any], prefix: str, model_dir: Path) -> list[str]:
    """Overrides of every nested ``init_args.path`` (to ``model_dir``) and size (:data:`TINY_SIZES`) of a model section."""
    found = []
    for key, value in (section.get("init_args") or {}).items():
        if key == "path":
            found.append(f"--{prefix}.init_args.path={model_dir}")
        elif key in TINY_SIZES:
            found.append(f"--{prefix}.init_args.{key}={TINY_SIZES[key]}")
        elif isinstance(value, dict) and "class_path" in value:
            found.extend(_model_overrides(value, f"{prefix}.init_args.{key}", model_dir))
    return found


def smoke_config(config: Path, out: Path, model_dir: Path, data: Path, cache: Path) -> tuple[Path, list[str]]:
    """``config`` rewritten for a smoke run, and the command-line overrides that go with it.

    Step-counted callback arguments shrink to :data:`SHORT_SCHEDULE` (so pruning, clustering, the
    low-rank swap and observer freezing all happen within a few steps); a config on text data reads
    ``data`` instead of Rotten Tomatoes, every model ``path`` becomes ``model_dir`` and a student
    builder's widths shrink to :data:`TINY_SIZES`.
    """
    loaded = yaml.safe_load(config.read_text())
    for callback in loaded.get("trainer", {}).get("callbacks") or []:
        args = callback.get("init_args") or {}
        for key, value in SHORT_SCHEDULE.items():
            if args.get(key) is not None:
                args[key] = value
    out.write_text(yaml.safe_dump(loaded))
    overrides = []
    if loaded.get("data", {}).get("class_path") == TEXT_DATA:
        overrides += [f"--data.init_args.path={data}", f"--data.init_args.cache_dir={cache}"]
        overrides += _model_overrides(loaded["model"], "model", model_dir)
    return out, overrides
