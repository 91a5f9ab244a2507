"""``QATCallback``: quantization-aware training on any LightningModule."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn
from typing_extensions import override

from lit_opt.callbacks._base import CompressionCallback
from lit_opt.quantization import (
    QuantizationConfig,
    prepare_quantization,
    quantizer_input,
    set_quantization_state,
    weight_quantizers,
)

PHASES: tuple[str, ...] = ("float", "observing", "quantized")


def _check_step(value: Any, argument: str, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{argument}={value!r} must be a non-negative integer (an optimizer step, trainer.global_step)"
            + (" or None." if allow_none else ".")
        )


class QATCallback(CompressionCallback):
    """Quantization-aware training: fake-quantize weights (int8/int4) and activations (int8).

    At ``setup`` (before checkpoint restore, DDP wrapping and optimizers) each targeted
    ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d``, ``nn.Embedding`` and transformers ``Conv1D`` (GPT-2's
    blocks; scales per output channel, i.e. per column of its ``(in, out)`` weight) gets a
    :class:`~lit_opt.parametrizations.WeightFakeQuant` on its weight (tied input/output embeddings
    share one: one set of codes, stored once) and, unless
    ``activations="none"`` (or it is an embedding), an :class:`~lit_opt.nn.ActivationQuantizer`
    on its input. Afterwards the schedule only flips buffers, so checkpoints resume exactly and
    every DDP rank holds the same scales. Export with :func:`lit_opt.export` or
    :class:`lit_opt.ExportCallback`.

    Args:
        weight_bits: 8 or 4.
        activations: ``"dynamic"``, ``"static"`` or ``"none"``; see :class:`lit_opt.quantization.QuantizationConfig`.
        granularity: ``"per_channel"``, ``"per_tensor"`` or ``"per_group"``.
        group_size: inputs per group with ``per_group`` (e.g. 32, 64, 128).
        symmetric: symmetric (zero point 0) or asymmetric codes.
        targets: fnmatch patterns over qualified module names.
        exclude: patterns of modules to leave in float.
        start_step: first optimizer step with fake quantization on (before it, the quantizers
            are installed but pass values through).
        freeze_observers_step: step from which static activation ranges stop moving
            (``None``: they observe until the end).
        freeze_bn_step: step from which BatchNorm layers among the targets stop updating their
            statistics and normalize with them (``None``: never).

    Raises:
        ValueError: any argument outside the accepted values (at construction), or targets that
            match no quantizable module, or a ``group_size`` that does not divide a layer (at setup).

    Example::

        trainer = Trainer(max_steps=1000, callbacks=[
            QATCallback(weight_bits=8, activations="dynamic", exclude=["classifier*"]),
            QATCallback(weight_bits=4, granularity="per_group", group_size=32,
                        activations="none", targets=["*embeddings.word_embeddings"]),
        ])
    """

    identity = ("config.targets", "config.exclude", "config.weight_bits")
    progress = {"phase": str, "last_step": int}
    installs = "quantizes %d modules"

    def __init__(
        self,
        weight_bits: Literal[4, 8] = 8,
        activations: Literal["dynamic", "static", "none"] = "dynamic",
        granularity: Literal["per_channel", "per_tensor", "per_group"] = "per_channel",
        group_size: int | None = None,
        symmetric: bool = True,
        targets: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        start_step: int = 0,
        freeze_observers_step: int | None = None,
        freeze_bn_step: int | None = None,
    ) -> None:
        super().__init__()
        self.config = QuantizationConfig(
            weight_bits,
            activations,
            granularity,
            group_size,
            symmetric,
            targets,
            exclude,  # type: ignore[arg-type]
        )
        _check_step(start_step, "start_step", allow_none=False)
        _check_step(freeze_observers_step, "freeze_observers_step", allow_none=True)
        _check_step(freeze_bn_step, "freeze_bn_step", allow_none=True)
        if freeze_observers_step is not None and activations != "static":
            raise ValueError(
                f"freeze_observers_step={freeze_observers_step} only applies to activations='static', "
                f"not activations={activations!r}. HINT: drop it, or use activations='static'."
            )
        if freeze_observers_step is not None and freeze_observers_step < start_step:
            raise ValueError(
                f"freeze_observers_step={freeze_observers_step} is before start_step={start_step}: the observers "
                "would freeze before they see any data. HINT: set it to a later step than start_step."
            )
        self.start_step = start_step
        self.freeze_observers_step = freeze_observers_step
        self.freeze_bn_step = freeze_bn_step
        self.quantized_modules: list[str] = []
        self._batchnorms: list[nn.Module] = []
        self._model: nn.Module | None = None
        self.phase = "float" if start_step > 0 else self._phase(0)
        self.last_step = -1

    def _phase(self, step: int) -> str:
        if step < self.start_step:
            return "float"
        observing = self.config.activations == "static" and (
            self.freeze_observers_step is None or step < self.freeze_observers_step
        )
        return "observing" if observing else "quantized"

    def _apply_schedule(self, step: int) -> None:
        self.phase = self._phase(step)
        if self._model is None:
            return
        set_quantization_state(
            self._model, self.state_key, enabled=self.phase != "float", observing=self.phase == "observing"
        )
        if self.freeze_bn_step is not None and step >= self.freeze_bn_step:
            for bn in self._batchnorms:
                bn.eval()

    @override
    def install(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str]:
        self.quantized_modules = prepare_quantization(pl_module, self.config, owner=self.state_key)
        self._model = pl_module
        self._batchnorms = [
            m
            for name, m in pl_module.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and any(fnmatch.fnmatchcase(name, p) for p in self.config.targets)
            and not any(fnmatch.fnmatchcase(name, p) for p in self.config.exclude)
        ]
        self._apply_schedule(trainer.global_step)
        return self.quantized_modules

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply_schedule(trainer.global_step)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply_schedule(trainer.global_step)
        self.last_step = trainer.global_step

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.logger is None or trainer.global_step % max(getattr(trainer, "log_every_n_steps", 50), 1):
            return
        prefix = f"qat[{','.join(self.config.targets)}]"
        pl_module.log(f"{prefix}/phase", float(PHASES.index(self.phase)), on_step=True, on_epoch=False)
        pl_module.log(f"{prefix}/weight_error", self.weight_error(pl_module), on_step=True, on_epoch=False)

    def weight_error(self, model: nn.Module) -> float:
        """Mean relative error ``||q(w) - w|| / ||w||`` over this callback's quantized weights."""
        errors = []
        with torch.no_grad():
            for _, module, quantizer in weight_quantizers(model):
                if quantizer.owner == self.state_key:
                    w = quantizer_input(module, quantizer)
                    q = quantizer(w) if bool(quantizer.enabled) else w
                    errors.append(
                        float(torch.linalg.vector_norm(q - w) / torch.linalg.vector_norm(w).clamp_min(1e-12))
                    )
        return sum(errors) / max(len(errors), 1)
