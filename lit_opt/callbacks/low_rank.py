"""``LowRankCallback``: factorize linear layers by truncated SVD at a given step, then keep training."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, cast

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torch.nn.utils import parametrize
from typing_extensions import override

from lit_opt._checks import check_int
from lit_opt.callbacks._base import CompressionCallback
from lit_opt.functional.low_rank import parameter_saving, svd_factors
from lit_opt.module_types import (
    in_features,
    linear_weight,
    out_features,
    supported_types,
    tied_groups,
    warn_unsupported,
)
from lit_opt.nn.activation_quantizer import INPUT_QUANTIZER
from lit_opt.nn.low_rank import LowRankLinear
from lit_opt.restore import install_low_rank, low_rank_layers
from lit_opt.submodules import replace_submodule
from lit_opt.targets import select_modules, validate_patterns

log = logging.getLogger(__name__)
_HOOKED = "_lit_opt_low_rank_hook"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ranks(ranks: dict[Any, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in ranks.items()}


class LowRankCallback(CompressionCallback):
    """Replace each targeted ``nn.Linear`` (or transformers ``Conv1D``, read as the Linear it computes) by
    its truncated SVD (two thin linears) at ``at_step``. A layer whose weight is tied to another's (an
    LM head tied to the input embedding) stays dense, with a warning: factors cannot stay tied.

    ``W`` (out x in) becomes :class:`~lit_opt.nn.LowRankLinear` ``second @ first`` with ``first``
    (r x in) and ``second`` (out x r); the rank is ``rank``, or the smallest one keeping
    ``energy`` of the squared singular values. Layers where the factors would save less than
    ``min_saving`` of the weight's parameters stay dense. Rank 0 computes the factors and
    broadcasts them, so every DDP process holds the same ones.

    With ``at_step=0`` the swap happens in ``setup``, before optimizers and DDP exist (list this
    callback before a ``QATCallback`` or ``IterativePruningCallback`` and they compress the
    factors). With ``at_step > 0`` it happens before that optimizer step: the optimizers are
    rebuilt from ``configure_optimizers`` (hyperparameters such as a scheduled learning rate,
    the state of untouched parameters and the LR schedulers' progress carry over; the factors start
    with fresh optimizer state) and a DDP model is wrapped again. A checkpoint taken after the swap
    resumes exactly: a ``load_state_dict`` pre-hook on the LightningModule, installed in ``setup``,
    reshapes the factorized layers to the shapes the checkpoint records before its tensors load
    (Lightning restores weights after ``setup`` but callback state only after the weights).

    Args:
        rank: a fixed inner width for every targeted layer (``None``: chosen by ``energy``).
        energy: with ``rank=None``, the share of ``sum(s**2)`` the kept singular values hold, in (0, 1].
        at_step: the optimizer step (``trainer.global_step``) at which to factorize.
        targets: fnmatch patterns over qualified module names; they must match ``nn.Linear`` modules.
        exclude: patterns of layers to leave dense.
        min_saving: the least share of a weight's parameters the factors must save, in [0, 1).

    Raises:
        ValueError: an argument outside the accepted values (at construction); targets that match
            nothing or no ``nn.Linear``, a ``rank`` above a layer's ``min(out, in)``, or a mid-run
            swap of a layer that already carries quantizers or masks (at setup / fit start).

    Example::

        trainer = Trainer(max_steps=2000, callbacks=[
            LowRankCallback(energy=0.9, at_step=500, targets=["*.intermediate.dense", "*.output.dense"]),
        ])
    """

    identity = ("targets", "exclude", "rank", "energy")
    progress = {"done": bool, "ranks": _ranks}

    def __init__(
        self,
        rank: int | None = None,
        energy: float = 0.9,
        at_step: int = 0,
        targets: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        min_saving: float = 0.1,
    ) -> None:
        super().__init__()
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(
                f"rank={rank!r} is not accepted; expected an integer >= 1 or None. "
                "HINT: rank=None chooses each layer's rank from energy=..."
            )
        if not _is_number(energy) or not 0 < energy <= 1:
            raise ValueError(
                f"energy={energy!r} is not accepted; expected a share of the squared singular values in (0, 1]. "
                "HINT: 0.9 keeps 90%; 1.0 keeps every non-negligible singular value."
            )
        check_int("at_step", at_step, 0)
        if not _is_number(min_saving) or not 0 <= min_saving < 1:
            raise ValueError(
                f"min_saving={min_saving!r} is not accepted; expected a share of parameters in [0, 1). "
                "HINT: 0.1 factorizes a layer only if it saves at least 10% of its weight."
            )
        self.rank, self.energy, self.at_step, self.min_saving = (
            rank,
            float(energy),
            at_step,
            float(min_saving),
        )
        self.targets = validate_patterns(targets, "targets")
        self.exclude = validate_patterns(exclude, "exclude")
        if not self.targets:
            raise ValueError(
                "targets=[] selects no layer. HINT: use targets=['*'] to factorize every Linear."
            )
        self.ranks: dict[str, int] = {}  # factorized layer -> rank
        self.done = False

    def _select(self, model: nn.Module) -> dict[str, nn.Module]:
        """The targeted Linear/Conv1D layers, the factors of already factorized layers and tied weights left out."""
        selected = select_modules(model, self.targets, self.exclude, types=supported_types("low_rank"))
        warn_unsupported(model, self.targets, self.exclude, "low_rank")
        low = [name for name, m in model.named_modules() if isinstance(m, LowRankLinear)]
        tied = {name: group for group in tied_groups(model) for name in group}
        left = sorted(name for name in selected if name in tied)
        if left:
            warnings.warn(
                f"LowRankCallback: {left} share their weight with {sorted({n for x in left for n in tied[x]} - set(left))} "
                "(tied embeddings) and stay dense: factors cannot stay tied. HINT: exclude them to silence this.",
                UserWarning,
                stacklevel=2,
            )
        return {
            name: m
            for name, m in selected.items()
            if name not in tied and not any(name.startswith(f"{prefix}.") for prefix in low)
        }

    def _check_plain(self, layers: dict[str, nn.Module]) -> None:
        for name, module in layers.items():
            if parametrize.is_parametrized(module) or hasattr(module, INPUT_QUANTIZER):
                raise ValueError(
                    f"LowRankCallback(at_step={self.at_step}) would factorize {name!r}, which already carries "
                    "quantizers or masks that the factors would lose. HINT: use at_step=0 and list "
                    "LowRankCallback before QATCallback/IterativePruningCallback (they then compress the "
                    "factors), or exclude the layer."
                )

    def _check_rank(self, layers: dict[str, nn.Module]) -> None:
        for name, module in layers.items():
            out, inputs = out_features(module), in_features(module)
            if self.rank is not None and self.rank > min(out, inputs):
                raise ValueError(
                    f"rank={self.rank} exceeds min(out_features, in_features) = {min(out, inputs)} of layer "
                    f"{name!r} ({out}x{inputs}). HINT: lower rank, use energy=... instead, or exclude the layer."
                )

    def _factors(self, layers: dict[str, nn.Module]) -> dict[str, tuple[Tensor, Tensor]]:
        """The factors (on CPU) of the layers that save at least ``min_saving``, one SVD per layer."""
        factors = {}
        for name, module in layers.items():
            first, second = svd_factors(linear_weight(module), self.rank, self.energy)
            rank = first.shape[0]
            if parameter_saving(out_features(module), in_features(module), rank) >= self.min_saving:
                factors[name] = (first.cpu(), second.cpu())
            else:
                log.info(
                    "LowRankCallback: %s stays dense (rank %d saves < %.2f)", name, rank, self.min_saving
                )
        return factors

    def _factorize(self, trainer: pl.Trainer, model: nn.Module) -> None:
        """Swap the targeted layers for their factors, computed on rank 0 and broadcast."""
        layers = self._select(model)
        self._check_plain(layers)
        factors = self._factors(layers) if trainer.is_global_zero else None
        factors = cast(dict[str, Any], trainer.strategy.broadcast(factors, src=0))
        for name, (first, second) in factors.items():
            linear = layers[name]
            weight, bias = cast(Tensor, linear.weight), cast(Tensor | None, linear.bias)
            low = LowRankLinear(
                in_features(linear),
                out_features(linear),
                first.shape[0],
                bias is not None,
                device=weight.device,
                dtype=weight.dtype,
            )
            low.load_factors(first, second, bias)
            replace_submodule(model, name, low)
        self.ranks = {name: int(first.shape[0]) for name, (first, _) in factors.items()}
        self.done = True
        dense = sum(cast(Tensor, layers[n].weight).numel() for n in self.ranks)
        kept = sum(r * (in_features(layers[n]) + out_features(layers[n])) for n, r in self.ranks.items())
        log.info(
            "LowRankCallback: factorized %d of %d layers (%d -> %d weight parameters) at step %d",
            len(self.ranks),
            len(layers),
            dense,
            kept,
            trainer.global_step,
        )

    @staticmethod
    def _rebuild_optimizers(trainer: pl.Trainer) -> None:
        """New optimizers over the factorized model, carrying over hyperparameters, state and schedulers."""
        strategy = trainer.strategy
        old_optimizers, old_schedulers = strategy.optimizers, strategy.lr_scheduler_configs
        strategy.setup_optimizers(trainer)
        counts = (len(old_optimizers), len(old_schedulers))
        if counts != (len(strategy.optimizers), len(strategy.lr_scheduler_configs)):
            raise ValueError(
                f"configure_optimizers returned {len(strategy.optimizers)} optimizers and "
                f"{len(strategy.lr_scheduler_configs)} schedulers after LowRankCallback's swap, {counts[0]} and "
                f"{counts[1]} before. HINT: return the same optimizers whatever the model's layers are."
            )
        for old_config, new_config in zip(old_schedulers, strategy.lr_scheduler_configs, strict=True):
            new_config.scheduler.load_state_dict(old_config.scheduler.state_dict())
        for old, new in zip(old_optimizers, strategy.optimizers, strict=True):
            if len(old.param_groups) != len(new.param_groups):
                log.warning(
                    "LowRankCallback: configure_optimizers gave %d parameter groups after the swap, %d before; "
                    "hyperparameters were not carried over",
                    len(new.param_groups),
                    len(old.param_groups),
                )
            else:
                for old_group, new_group in zip(old.param_groups, new.param_groups, strict=True):
                    new_group.update({k: v for k, v in old_group.items() if k != "params"})
            for group in new.param_groups:
                for p in group["params"]:
                    if p in old.state:
                        new.state[p] = old.state[p]

    @staticmethod
    def _rewrap_ddp(trainer: pl.Trainer) -> None:
        """Wrap the LightningModule in a new DDP so gradients of the factors are all-reduced."""
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and strategy.model is not strategy.lightning_module:
            strategy.model = strategy._setup_model(strategy.lightning_module)  # type: ignore[arg-type]
            strategy._register_ddp_hooks()

    def _reshape_from_checkpoint(
        self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
    ) -> None:
        """``load_state_dict`` pre-hook: factorize the layers the incoming state dict holds as factors."""
        install_low_rank(module, low_rank_layers(state_dict, prefix))

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not getattr(pl_module, _HOOKED, False):
            pl_module.register_load_state_dict_pre_hook(self._reshape_from_checkpoint)
            setattr(pl_module, _HOOKED, True)
        if self.done:
            return
        layers = self._select(pl_module)  # targets errors surface here, before training
        self._check_rank(layers)  # a rank too large for a layer fails now
        if stage == "fit" and self.at_step == 0:
            self._factorize(trainer, pl_module)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.done:
            self._check_plain(self._select(pl_module))

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.done or trainer.global_step < self.at_step:
            return
        self._factorize(trainer, pl_module)
        self._rebuild_optimizers(trainer)
        self._rewrap_ddp(trainer)
