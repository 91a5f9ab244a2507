"""The optimizer of the distillation modules and the recipes' stages: AdamW, with a constant or a linear
learning rate.

A linear schedule (BERT's fine-tuning schedule) rises over the first ``warmup`` share of the fit's
optimizer steps and falls to zero at its last step. The reason to fall to zero under QAT: at a constant
rate, weights near a rounding boundary keep crossing it until the very last step. (On the classification
recipe's compress stage the measured gain was within seed noise: see the README.)

Example::

    def configure_optimizers(self):
        return adamw(self.parameters(), lr=1e-4, weight_decay=0.01, lr_schedule="linear",
                     warmup=0.1, trainer=self.trainer)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
import torch

LR_SCHEDULES = ("constant", "linear")


def check_schedule(lr_schedule: Any, warmup: Any, prefix: str = "") -> None:
    """Raise ``ValueError`` naming the argument (after ``prefix``, e.g. ``"compress."``) unless
    ``lr_schedule``/``warmup`` are a valid pair."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(
            f"{prefix}lr_schedule={lr_schedule!r} is not one of {LR_SCHEDULES}. HINT: 'linear' decays the learning rate "
            "to 0 over the fit (after `warmup`), 'constant' keeps it."
        )
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
        raise ValueError(
            f"{prefix}warmup={warmup!r} is not accepted; expected a number in [0, 1): the share of the fit's "
            "optimizer steps over which the learning rate rises to `lr`."
        )
    if warmup and lr_schedule != "linear":
        raise ValueError(
            f"{prefix}warmup={warmup!r} only applies to {prefix}lr_schedule='linear'. HINT: set "
            f"{prefix}lr_schedule='linear', or {prefix}warmup=0."
        )


def lr_factor(step: int, total: int, warmup_steps: int) -> float:
    """The linear schedule's multiplier of ``lr`` at optimizer step ``step`` (0-based) of ``total``.

    Example: ``lr_factor(6, total=10, warmup_steps=2) == 0.5``; the last step gets ``1 / (total - warmup_steps)``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / (total - warmup_steps))


def adamw(
    params: Iterable[Any],
    lr: float,
    weight_decay: float,
    lr_schedule: str = "constant",
    warmup: float = 0.0,
    trainer: pl.Trainer | None = None,
) -> Any:
    """AdamW over ``params``, as ``configure_optimizers`` returns it: the optimizer alone for a constant
    rate; with ``lr_schedule="linear"`` also a per-step ``LambdaLR`` over ``trainer.estimated_stepping_batches``.
    """
    check_schedule(lr_schedule, warmup)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if lr_schedule == "constant":
        return optimizer
    total = math.inf if trainer is None else trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ValueError(
            "lr_schedule='linear' needs the fit's length (trainer.estimated_stepping_batches), but there is no "
            "Trainer or it sets neither max_steps nor max_epochs. HINT: fit with max_steps or max_epochs, or use "
            "lr_schedule='constant'."
        )
    steps = int(total)
    warmup_steps = min(
        round(warmup * steps), steps - 1
    )  # at least one step decays (and no 0/0 after the last)
    factor = functools.partial(lr_factor, total=steps, warmup_steps=warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
