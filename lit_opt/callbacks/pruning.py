"""``IterativePruningCallback``: gradual pruning with fine-tuning between pruning steps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from typing_extensions import override

from lit_opt.callbacks._base import CompressionCallback
from lit_opt.functional.sparsity import is_pruning_step, sparsity_at
from lit_opt.pruning import (
    PrunableGroup,
    PruningConfig,
    accumulate_movement,
    forget_zeroed,
    mask_grads,
    prepare_pruning,
    sparsity_report,
    sync_scores,
    update_masks,
    zero_pruned,
)

#: torch optimizers that update each entry from its own gradient and state alone: a pruned entry's
#: gradient cannot change how they move the kept weights (LAMB/LARS trust ratios, Adafactor and LBFGS can)
PER_ENTRY_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adagrad,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
)

log = logging.getLogger(__name__)


class IterativePruningCallback(CompressionCallback):
    """Prune gradually while training: masks tighten on a schedule, the model fine-tunes in between.

    At ``setup`` (before checkpoint restore, DDP and optimizers) every targeted tensor gets a
    :class:`~lit_opt.parametrizations.Mask` parametrization; afterwards only mask values change.
    Masks are checkpointed with the model, so a resumed run continues exactly; data-dependent
    scores are all-reduced so every DDP rank holds the same masks. A pruned weight stays exactly
    zero through optimizer steps, and with :class:`~lit_opt.QATCallback` on the same weights the
    mask comes first, so zeros reach the quantizer as zeros.

    During ``fit`` with automatic optimization, pruned weights are zeroed in place after every
    optimizer step, and the masks skip their multiply in training forwards (a 90%-pruned MiniLM step:
    1.02x dense instead of 1.05-1.10x). Anything else that changes a weight between steps (except an
    edit through ``.data``, which PyTorch does not count) brings the multiply back; validation and
    everything after ``fit`` multiply. See ``mask_gradients`` for what the optimizer sees.

    Args:
        target_sparsity: fraction of weights (or rows/heads) removed at ``end_step``, in [0, 1).
        schedule: ``"cubic"`` (Zhu & Gupta 2017), ``"linear"``, or ``"constant"`` (one shot at
            ``start_step``).
        start_step: first optimizer step that prunes.
        end_step: step at which ``target_sparsity`` is reached (``None``: the last step of
            training as the Trainer knows it).
        every_n_steps: steps between pruning steps (the model fine-tunes in between).
        criterion: ``"magnitude"``, ``"activation"`` (mean |output| of each unit over the batches
            since the last pruning step), ``"movement"`` (accumulated ``-W * dL/dW``; a pruning step
            before any optimizer step has accumulated it, e.g. at step 0, scores by magnitude: start
            later to give movement a warm-up; it needs long fine-tuning: after 60 steps of scores it
            pruned MiniLM almost at random, see the README) or ``"random"``.
        structure: ``"unstructured"``, ``"rows"`` (output units with their bias; a gated MLP's targeted
            gate and up projections prune the same units), ``"heads"`` (attention heads of BERT,
            Llama/Qwen2/Mistral or GPT-2 blocks, found from module shapes: query/key/value rows and
            output-projection columns; with grouped-query attention a key/value head goes with the
            query heads that share it), ``"query_heads"`` (grouped-query attention only: query heads,
            the same number from every key/value group, so the grouping stays valid), or
            ``"N:M"`` such as ``"2:4"`` (keep N of every M inputs; ``target_sparsity`` must be 1 - N/M).
        scope: ``"global"`` (one threshold across all targets, on scores divided by each layer's mean
            score, so a layer on a smaller scale, e.g. a freshly initialised pooler, is not wiped
            out) or ``"local"`` (the same sparsity in every tensor/layer).
        targets: fnmatch patterns over qualified module names (Linear/Conv layers and transformers
            ``Conv1D``, or attention modules for ``heads``). A tied weight (LM head and input
            embedding) is pruned as one tensor: one mask for both modules.
        exclude: patterns of modules to leave dense.
        seed: seed of the ``random`` criterion.
        mask_gradients: zero pruned entries' gradients before each optimizer step (ahead of gradient
            clipping). ``None`` (auto) does so when the Trainer clips gradients or an optimizer is not
            one of :data:`PER_ENTRY_OPTIMIZERS`; otherwise those gradients move nothing (the weights
            are re-zeroed), and leaving them spares a pass over the weights (and exact zeros made
            AdamW's ``sqrt``, and its step, 30 ms slower on a 2-core AVX2 CPU). With manual
            optimization the masks always multiply, so gradients are masked in backward.

    Raises:
        ValueError: any argument outside the accepted values (at construction); targets matching
            nothing, ``heads`` without attention heads, ``heads`` on a block with a single key/value
            head or whose head counts break grouped-query attention, or N:M on an incompatible layer
            (at setup).

    Example::

        trainer = Trainer(max_steps=3000, callbacks=[
            IterativePruningCallback(target_sparsity=0.9, schedule="cubic", start_step=200,
                                     end_step=2500, every_n_steps=100, exclude=["*classifier*"]),
        ])
    """

    identity = ("config.targets", "config.exclude", "config.structure")
    progress = {"current_sparsity": float, "last_pruned_step": int}
    installs = "prunes %d groups"

    def __init__(
        self,
        target_sparsity: float = 0.5,
        schedule: Literal["cubic", "linear", "constant"] = "cubic",
        start_step: int = 0,
        end_step: int | None = None,
        every_n_steps: int = 100,
        criterion: Literal["magnitude", "activation", "movement", "random"] = "magnitude",
        structure: str = "unstructured",
        scope: Literal["global", "local"] = "global",
        targets: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        seed: int = 0,
        mask_gradients: bool | None = None,
    ) -> None:
        super().__init__()
        if mask_gradients is not None and not isinstance(mask_gradients, bool):
            raise ValueError(
                f"mask_gradients={mask_gradients!r} is not accepted; expected True, False or None (auto: "
                "mask when the Trainer clips gradients or the optimizer is not a per-entry one)."
            )
        self.mask_gradients = mask_gradients
        self._mask_gradients_now = True
        self.config = PruningConfig(
            target_sparsity,
            schedule,
            start_step,
            end_step,
            every_n_steps,
            criterion,
            structure,
            scope,
            targets,
            exclude,
            seed,
        )
        self.groups: list[PrunableGroup] = []
        self.current_sparsity = 0.0
        self.last_pruned_step = -1
        self._end_step = end_step
        self._step_hooks: list[Any] = []

    @property
    def end_step(self) -> int:
        """The step at which ``target_sparsity`` is reached (resolved from the Trainer when None)."""
        return self.config.start_step if self._end_step is None else self._end_step

    @override
    def install(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[PrunableGroup]:
        self.groups = prepare_pruning(pl_module, self.config, owner=self.state_key)
        return self.groups

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.config.end_step is None:
            total = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)
            self._end_step = max(self.config.start_step, total - 1)
        self._stop_zeroing()
        if not pl_module.automatic_optimization:  # the user clips before any hook: masks multiply, as before
            return
        auto = bool(trainer.gradient_clip_val) or any(
            type(optimizer) not in PER_ENTRY_OPTIMIZERS for optimizer in trainer.optimizers
        )
        self._mask_gradients_now = auto if self.mask_gradients is None else self.mask_gradients
        self._step_hooks = [
            optimizer.register_step_post_hook(lambda *_: zero_pruned(self.groups))
            for optimizer in trainer.optimizers
        ]
        zero_pruned(self.groups)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_zeroing()

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop_zeroing()

    def _stop_zeroing(self) -> None:
        for handle in self._step_hooks:
            handle.remove()
        self._step_hooks = []
        forget_zeroed(self.groups)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step, config = trainer.global_step, self.config
        if step == self.last_pruned_step or not is_pruning_step(
            step, config.schedule, config.start_step, self.end_step, config.every_n_steps
        ):
            return
        self.current_sparsity = sparsity_at(
            step, config.target_sparsity, config.schedule, config.start_step, self.end_step
        )
        update_masks(self.groups, config, self.current_sparsity, step)
        if self._step_hooks:
            zero_pruned(self.groups)
        self.last_pruned_step = step
        report = sparsity_report(self.groups)
        if trainer.logger is not None:
            metrics = {
                f"pruning/sparsity/{name}": value for name, value in report.items() if name != "global"
            }
            trainer.logger.log_metrics({"pruning/sparsity": report["global"], **metrics}, step=step)
        log.debug("pruned to %.4f at step %d (scheduled %.4f)", report["global"], step, self.current_sparsity)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        sync_scores(self.groups, self.config)  # every step: checkpoints hold the same scores on every rank

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._step_hooks and self._mask_gradients_now:  # before Lightning clips
            mask_grads(self.groups)
        if self.config.criterion == "movement":
            accumulate_movement(self.groups)
