"""The recipe's training stages train in training mode (dropout on), whatever mode their models load in."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_opt.recipe import load_config
from lit_opt.recipe.training import compress_student, distill_student, fine_tune_teacher, make_data, ptq_peer
from tests.helpers.models import tiny_bert
from tests.helpers.trainer import modes_at_training_start
from tests.recipe.test_recipe import CONFIG, tiny, write_reviews


def _tiny_teacher_dir(path: Path) -> Path:
    """A tiny BERT reading all-MiniLM-L6-v2's token ids (the data's tokenizer), saved as a directory."""
    tiny_bert(vocab_size=30522).save_pretrained(str(path))
    return path


def test_every_training_stage_starts_in_training_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_reviews(tmp_path / "reviews.csv", rows=80)
    overrides = [*tiny(tmp_path, data), f"--teacher.path={_tiny_teacher_dir(tmp_path / 'init')}"]
    config = load_config(
        CONFIG,
        [
            *overrides,
            "--teacher.max_steps=1",
            "--student.max_steps=1",
            "--compress.max_steps=1",
            "--compress.embedding_group_size=32",
        ],
    )
    run_dir = tmp_path / "run"
    dm = make_data(config.data)
    with modes_at_training_start(monkeypatch) as fits:
        teacher, teacher_dir = fine_tune_teacher(config, dm, run_dir)
        distilled = distill_student(config, dm, teacher, teacher_dir, run_dir)
        compress_student(config, dm, distilled, teacher, run_dir, None)
        ptq_peer(config, dm, distilled, teacher, run_dir)
    assert len(fits) == 4  # teacher, distill, compress, peer
    assert fits[0] == []  # the teacher's fine-tune: every module trains
    for in_eval in fits[1:]:  # distillation stages: only the frozen teacher is in eval mode, deliberately
        assert in_eval and all(name.startswith("teacher") for name in in_eval), in_eval
