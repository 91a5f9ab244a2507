"""Stand-ins that make a shipped LightningCLI config a few-second smoke run: a tiny model, a tiny file, short schedules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.lm import lm_texts, tiny_llama, tiny_lm_tokenizer
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
LM_DATA = "lit_opt.data.CausalLMDataModule"
#: Tokens per block in a causal-LM smoke run (the tiny Llama has 64 positions).
SMOKE_BLOCK_SIZE = 16


@dataclass(frozen=True)
class StandIns:
    """What a smoke run reads instead of the real models and data."""

    minilm: Path  #: a tiny MiniLM-shaped model directory
    reviews: Path  #: a small CSV of labelled reviews
    cache: Path  #: the data cache
    llama: Path  #: a tiny SmolLM2-shaped Llama directory with its tokenizer
    texts: Path  #: a small plain-text file, one text per line


def write_tiny_minilm(directory: Path) -> Path:
    """A 6-layer, 32-wide random BERT with all-MiniLM-L6-v2's vocabulary size, saved as a model directory."""
    tiny_bert(vocab_size=30522, num_layers=6).save_pretrained(str(directory))
    return directory


def write_tiny_smollm2(directory: Path) -> Path:
    """A 30-layer, 32-wide random Llama (tied embeddings, GQA 4/2 heads) saved with the tiny tokenizer."""
    tiny_lm_tokenizer(directory)
    tiny_llama(layers=30).save_pretrained(str(directory))
    return directory


def write_texts(path: Path, n: int = 200) -> Path:
    """``n`` short texts, one per line."""
    path.write_text("\n".join(lm_texts(n)) + "\n")
    return path


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


def smoke_config(config: Path, out: Path, stand_ins: StandIns) -> tuple[Path, list[str]]:
    """``config`` rewritten for a smoke run, and the command-line overrides that go with it.

    Step-counted callback arguments shrink to :data:`SHORT_SCHEDULE` (so pruning, clustering, the
    low-rank swap and observer freezing all happen within a few steps); a config on labelled text reads
    the stand-in reviews instead of Rotten Tomatoes, every model ``path`` becomes the tiny MiniLM and a
    student builder's widths shrink to :data:`TINY_SIZES`; a causal-LM config reads the stand-in texts
    in :data:`SMOKE_BLOCK_SIZE`-token blocks with the tiny Llama (and its tokenizer) as every model.
    """
    loaded = yaml.safe_load(config.read_text())
    for callback in loaded.get("trainer", {}).get("callbacks") or []:
        args = callback.get("init_args") or {}
        for key, value in SHORT_SCHEDULE.items():
            if args.get(key) is not None:
                args[key] = value
    out.write_text(yaml.safe_dump(loaded))
    overrides = []
    data = loaded.get("data", {}).get("class_path")
    if data == TEXT_DATA:
        overrides += [
            f"--data.init_args.path={stand_ins.reviews}",
            f"--data.init_args.cache_dir={stand_ins.cache}",
        ]
        overrides += _model_overrides(loaded["model"], "model", stand_ins.minilm)
    elif data == LM_DATA:
        overrides += [
            f"--data.init_args.path={stand_ins.texts}",
            f"--data.init_args.cache_dir={stand_ins.cache}",
            f"--data.init_args.tokenizer={stand_ins.llama}",
            f"--data.init_args.block_size={SMOKE_BLOCK_SIZE}",
        ]
        overrides += _model_overrides(loaded["model"], "model", stand_ins.llama)
    return out, overrides
