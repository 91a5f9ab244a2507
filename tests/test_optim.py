"""The shared AdamW and its learning-rate schedules: hand-computed factors, the lr a fit really uses, resume."""

import lightning as L
import pytest
import torch

from lit_opt import DistillationModule
from lit_opt.optim import adamw, check_schedule, lr_factor
from tests.helpers.models import TinyMLP, random_dataloader
from tests.helpers.trainer import tiny_trainer


@pytest.mark.parametrize(
    "step,total,warmup_steps,expected",
    [
        (0, 10, 0, 1.0),  # no warmup: the full lr on the first step ...
        (5, 10, 0, 0.5),
        (9, 10, 0, 0.1),  # ... and a tenth of it on the last of 10
        (0, 10, 2, 0.5),  # warmup over 2 steps: 1/2, 2/2
        (1, 10, 2, 1.0),
        (2, 10, 2, 1.0),  # then (10 - 2) / (10 - 2)
        (6, 10, 2, 0.5),  # (10 - 6) / 8
        (9, 10, 2, 0.125),
        (12, 10, 0, 0.0),  # never negative past the end
    ],
)
def test_linear_factor_matches_hand_computed_values(step, total, warmup_steps, expected):
    assert lr_factor(step, total, warmup_steps) == pytest.approx(expected)


class _RecordLR(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])


def _distillation(**kwargs):
    torch.manual_seed(0)
    return DistillationModule(TinyMLP(hidden=8), TinyMLP(hidden=64), lr=0.1, **kwargs)


def test_a_linear_fit_steps_the_lr_down_to_a_last_step_of_lr_over_total(tmp_path):
    record = _RecordLR()
    module = _distillation(lr_schedule="linear", warmup=0.25)
    tiny_trainer(tmp_path, max_steps=8, callbacks=[record]).fit(module, random_dataloader("mlp"))
    # 8 steps, 2 of warmup: 0.1 * [1/2, 1, 6/6, 5/6, 4/6, 3/6, 2/6, 1/6]
    expected = [0.05, 0.1, 0.1, 0.1 * 5 / 6, 0.1 * 4 / 6, 0.05, 0.1 * 2 / 6, 0.1 / 6]
    assert record.lrs == pytest.approx(expected)


def test_a_warmup_that_would_fill_a_short_fit_leaves_its_last_step_to_decay(tmp_path):
    # 1 step, warmup 0.6: round(0.6) = 1 warmup step would leave none, and the scheduler's step after it 0/0
    record = _RecordLR()
    module = _distillation(lr_schedule="linear", warmup=0.6)
    tiny_trainer(tmp_path, max_steps=1, callbacks=[record]).fit(module, random_dataloader("mlp"))
    assert record.lrs == pytest.approx([0.1])


def test_constant_is_the_default_and_keeps_the_lr(tmp_path):
    record = _RecordLR()
    tiny_trainer(tmp_path, max_steps=3, callbacks=[record]).fit(_distillation(), random_dataloader("mlp"))
    assert record.lrs == pytest.approx([0.1, 0.1, 0.1])


def test_a_resumed_linear_fit_continues_the_schedule_where_it_stopped(tmp_path):
    whole = _RecordLR()
    tiny_trainer(tmp_path / "a", max_steps=6, callbacks=[whole]).fit(
        _distillation(lr_schedule="linear"), random_dataloader("mlp")
    )
    first = tiny_trainer(tmp_path / "b", max_steps=6, callbacks=[_StopAt(3)])
    first.fit(_distillation(lr_schedule="linear"), random_dataloader("mlp"))
    first.save_checkpoint(tmp_path / "half.ckpt")
    rest = _RecordLR()
    tiny_trainer(tmp_path / "b", max_steps=6, callbacks=[rest]).fit(
        _distillation(lr_schedule="linear"), random_dataloader("mlp"), ckpt_path=tmp_path / "half.ckpt"
    )
    assert rest.lrs == pytest.approx(whole.lrs[3:])


class _StopAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        trainer.should_stop = trainer.global_step >= self.step


def test_adamw_without_a_trainer_gives_the_bare_optimizer():
    model = TinyMLP(hidden=8)
    optimizer = adamw(model.parameters(), lr=0.01, weight_decay=0.0)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lr_schedule": "cosine"}, r"lr_schedule='cosine' is not one of \('constant', 'linear'\)"),
        (
            {"lr_schedule": "linear", "warmup": 1.0},
            r"warmup=1.0 is not accepted; expected a number in \[0, 1\)",
        ),
        ({"lr_schedule": "linear", "warmup": -0.1}, r"warmup=-0.1 is not accepted"),
        ({"warmup": 0.1}, r"warmup=0.1 only applies to lr_schedule='linear'"),
    ],
)
def test_bad_schedules_are_refused_with_the_argument_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_schedule(kwargs.get("lr_schedule", "constant"), kwargs.get("warmup", 0.0))
    with pytest.raises(ValueError, match=match):
        _distillation(**kwargs)
