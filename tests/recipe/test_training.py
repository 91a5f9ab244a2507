"""The recipe's training stages: training mode (dropout on) whatever mode their models load in; each
section's learning-rate schedule."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from lit_opt.recipe import load_config, training
from lit_opt.recipe.training import compress_student, distill_student, fine_tune_teacher, make_data, ptq_peer
from tests.helpers.models import tiny_bert
from tests.helpers.trainer import modes_at_training_start
from tests.recipe.test_recipe import CONFIG, tiny, write_reviews


def _tiny_teacher_dir(path: Path) -> Path:
    """A tiny BERT reading all-MiniLM-L6-v2's token ids (the data's tokenizer), saved as a directory."""
    tiny_bert(vocab_size=30522).save_pretrained(str(path))
    return path


def _run_stages(tmp_path: Path, steps: int, *extra: str) -> None:
    """The teacher's fine-tune, distillation, compression and the PTQ peer, ``steps`` optimizer steps each."""
    data = write_reviews(tmp_path / "reviews.csv", rows=80)
    overrides = [*tiny(tmp_path, data), f"--teacher.path={_tiny_teacher_dir(tmp_path / 'init')}"]
    limits = [f"--{stage}.max_steps={steps}" for stage in ("teacher", "student", "compress")]
    config = load_config(CONFIG, [*overrides, *limits, "--compress.embedding_group_size=32", *extra])
    run_dir = tmp_path / "run"
    dm = make_data(config.data)
    teacher, teacher_dir = fine_tune_teacher(config, dm, run_dir)
    distilled = distill_student(config, dm, teacher, teacher_dir, run_dir)
    compress_student(config, dm, distilled, teacher, run_dir, None)
    ptq_peer(config, dm, distilled, teacher, run_dir)


def test_every_training_stage_starts_in_training_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with modes_at_training_start(monkeypatch) as fits:
        _run_stages(tmp_path, 1)
    assert len(fits) == 4  # teacher, distill, compress, peer
    assert fits[0] == []  # the teacher's fine-tune: every module trains
    for in_eval in fits[1:]:  # distillation stages: only the frozen teacher is in eval mode, deliberately
        assert in_eval and all(name.startswith("teacher") for name in in_eval), in_eval


class _RecordLR(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:  # type: ignore[no-untyped-def]
        self.lrs.append(optimizer.param_groups[0]["lr"])


def test_each_stage_follows_its_sections_lr_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lrs: dict[str, list[float]] = {}
    real_fit = training.fit

    def recording_fit(config, run_dir, stage, module, dm, epochs, max_steps, callbacks=()):  # type: ignore[no-untyped-def]
        record = _RecordLR()
        trainer = real_fit(config, run_dir, stage, module, dm, epochs, max_steps, [*callbacks, record])
        lrs[stage] = record.lrs
        return trainer

    monkeypatch.setattr(training, "fit", recording_fit)
    _run_stages(
        tmp_path,
        4,
        "--teacher.lr=0.1",
        "--teacher.lr_schedule=linear",
        "--teacher.warmup=0.5",
        "--student.lr=0.2",
        "--student.lr_schedule=constant",
        "--student.warmup=0",
        "--compress.lr=0.4",
        "--compress.lr_schedule=linear",
        "--compress.warmup=0",
    )
    assert lrs["teacher"] == pytest.approx([0.05, 0.1, 0.1, 0.05])  # 2 steps up, then down towards 0
    assert lrs["distill"] == pytest.approx([0.2] * 4)
    assert lrs["compress"] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert lrs["ptq_peer"] == lrs["compress"]  # the peer trains as the compressed student does
