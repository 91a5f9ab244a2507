"""``WeightSharingCallback``: k-means weight clustering with a trainable codebook on any LightningModule."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from typing_extensions import override

from lit_opt._checks import check_int
from lit_opt.callbacks._base import CompressionCallback
from lit_opt.sharing import SharingConfig, cluster_weights, codebooks, prepare_sharing

log = logging.getLogger(__name__)


class WeightSharingCallback(CompressionCallback):
    """Weight sharing (Han et al. 2016): each targeted weight keeps only ``n_clusters`` distinct values.

    At ``setup`` (before checkpoint restore, DDP wrapping and optimizers) each targeted
    ``nn.Linear``, ``nn.Conv1d``/``nn.Conv2d``, ``nn.Embedding`` and transformers ``Conv1D`` weight gets a
    :class:`~lit_opt.parametrizations.Codebook` (tied embeddings share one) whose trainable centroids exist from the start, so
    the optimizer holds them. At ``start_step`` k-means (per layer, over the weight's values)
    fills the codebooks; from then on the weight is ``centroids[indices]``, each centroid trains on
    the sum of its members' gradients, and the original weight is no longer used. Centroids stay
    float16-representable, so :func:`lit_opt.export` (float16 codebook, indices bit-packed at
    ``ceil(log2(n_clusters))`` bits) adds no error.

    Composition: a pruning mask comes first (pruned zeros form their own cluster, pinned at zero,
    and the kept values share the other ``n_clusters - 1``); a QAT fake quantizer comes after the
    codebook (it quantizes the shared values; export then writes the integer codes).

    Args:
        n_clusters: shared values per weight, 2 to 256.
        start_step: optimizer step at which the weights are clustered (before it they train as usual).
        targets: fnmatch patterns over qualified module names.
        exclude: patterns of modules to leave unshared.
        init: ``"kmeans++"`` or ``"linear"`` (evenly spaced between the weight's extremes).
        max_iter: Lloyd iterations per layer at most.
        seed: seed of the ``kmeans++`` initialization.

    Raises:
        ValueError: any argument outside the accepted values (at construction); targets that match
            nothing or no module with a shareable weight (at setup).

    Example::

        trainer = Trainer(max_steps=1000, callbacks=[
            WeightSharingCallback(n_clusters=16, start_step=200, exclude=["classifier*"]),
        ])
    """

    identity = ("config.targets", "config.exclude", "config.n_clusters")
    progress = {"clustered_step": int}
    installs = "shares %d weights"

    def __init__(
        self,
        n_clusters: int = 16,
        start_step: int = 0,
        targets: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        init: Literal["kmeans++", "linear"] = "kmeans++",
        max_iter: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.config = SharingConfig(n_clusters, init, targets, exclude, max_iter, seed)
        check_int("start_step", start_step, 0)
        self.start_step = start_step
        self.shared_modules: list[str] = []
        self.clustered_step = -1
        self._done = False

    @override
    def install(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str]:
        self.shared_modules = prepare_sharing(pl_module, self.config, owner=self.state_key)
        return self.shared_modules

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step < self.start_step or self._done:
            return
        start = time.perf_counter()
        count = cluster_weights(pl_module, self.config, owner=self.state_key)
        self._done = True  # later steps need no scan (a resumed checkpoint holds clustered codebooks)
        if not count:
            return
        # The centroids' optimizer state (zero-gradient moments, a step count) describes the
        # placeholder they were before clustering: start them fresh, as a new parameter would.
        mine = [book.centroids for _, _, book in codebooks(pl_module) if book.owner == self.state_key]
        for optimizer in trainer.optimizers:
            for centroids in mine:
                optimizer.state.pop(centroids, None)
        self.clustered_step = trainer.global_step
        log.info(
            "WeightSharingCallback clustered %d weights into %d values each at step %d in %.2f s",
            count,
            self.config.n_clusters,
            trainer.global_step,
            time.perf_counter() - start,
        )
