"""Knowledge distillation: the ``DistillationModule`` LightningModule."""

from lit_opt.distillation.module import DistillationModule

__all__ = ["DistillationModule"]
