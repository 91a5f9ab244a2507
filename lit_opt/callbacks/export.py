"""``ExportCallback``: write the compressed artifact when ``fit`` ends (global rank 0 only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lit_opt.callbacks._strategy import require_whole_weights
from lit_opt.export.exporter import DTYPES, export

log = logging.getLogger(__name__)


class ExportCallback(Callback):
    """Export the trained model with :func:`lit_opt.export` at the end of ``fit``.

    Only global rank 0 writes; the other ranks wait at a barrier so no process moves on before
    the artifact exists.

    Args:
        dirpath: artifact directory (written atomically; an existing one is replaced).
        submodule: attribute of the LightningModule to export instead of the whole module, e.g.
            ``"model"`` for a wrapped Hugging Face model (its config then travels in the artifact).
        dtype: cast the tensors left in floating point (``"float16"``/``"bfloat16"``).

    Example::

        trainer = Trainer(callbacks=[QATCallback(), ExportCallback("artifacts/mlp-int8")])
    """

    def __init__(
        self,
        dirpath: str = "artifacts/model",
        submodule: str | None = None,
        dtype: Literal["float32", "float16", "bfloat16"] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(dirpath, (str, Path)) or not str(dirpath):
            raise ValueError(f"dirpath={dirpath!r} must be a non-empty path. HINT: e.g. 'artifacts/model'.")
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not one of {sorted(DTYPES)} or None.")
        self.dirpath = str(dirpath)
        self.submodule = submodule
        self.dtype = dtype
        self.path: Path | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_whole_weights(trainer, self)
        if self.submodule is not None and not hasattr(pl_module, self.submodule):
            children = [name for name, _ in pl_module.named_children()]
            raise ValueError(
                f"submodule={self.submodule!r} is not an attribute of {type(pl_module).__name__}; "
                f"its children are {children}. HINT: leave it None to export the whole module."
            )

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            model = getattr(pl_module, self.submodule) if self.submodule else pl_module
            tokenizer = getattr(pl_module, "tokenizer", None)
            self.path = export(model, self.dirpath, dtype=self.dtype, tokenizer=tokenizer)
            log.info("ExportCallback wrote %s", self.path)
        trainer.strategy.barrier("lit_opt_export")
