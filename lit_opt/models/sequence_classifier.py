"""A Hugging Face sequence classifier as a LightningModule: what the MiniLM configs compress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lit_opt._checks import check_module, check_number

#: Batch keys that are not model inputs (labels, and the row numbers a teacher cache keys on).
NOT_INPUTS = ("labels", "idx")


class SequenceClassifier(LightningModule):
    """Fine-tune a Hugging Face ``...ForSequenceClassification`` model on dict batches with cross-entropy.

    Batches are dicts (``input_ids``, ``attention_mask``, ..., ``labels``, as
    :class:`~lit_opt.data.TextClassificationDataModule` gives them); everything but ``labels`` and ``idx``
    is passed to the model as keyword arguments and ``.logits`` is read. The model is held as ``model``,
    so compression callbacks select its layers with patterns such as ``"model.*.encoder.*"``, and
    :func:`lit_opt.export` writes the model alone. It is put in training mode here: ``from_pretrained``
    returns eval mode, and Lightning keeps each module's mode (dropout would be off all ``fit`` long).

    Logs ``train_loss``, ``val_loss``, ``val_acc``, ``test_loss`` and ``test_acc``. :meth:`configure_optimizers`
    gives AdamW; an ``optimizer:`` section of a LightningCLI config replaces it.

    Args:
        model: The classifier, e.g. ``lit_opt.distillation.students.pretrained`` in YAML.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.

    Raises:
        ValueError: ``model`` is not an ``nn.Module`` with ``config.num_labels``, or ``lr``/``weight_decay``
            out of range.

    Example (YAML)::

        model:
          class_path: lit_opt.models.SequenceClassifier
          init_args:
            model: {class_path: lit_opt.distillation.students.pretrained, init_args: {num_labels: 2}}
            lr: 5.0e-05
    """

    def __init__(self, model: nn.Module, lr: float = 5e-5, weight_decay: float = 0.01) -> None:
        super().__init__()
        check_module(
            "model", model, "HINT: e.g. lit_opt.distillation.students.pretrained(path, num_labels=2)."
        )
        check_number("lr", lr, 0.0, inclusive=False)
        check_number("weight_decay", weight_decay, 0.0)
        classes = getattr(getattr(model, "config", None), "num_labels", None)
        if not isinstance(classes, int):
            raise ValueError(
                f"model={type(model).__name__} has no config.num_labels. HINT: pass a Hugging Face "
                "...ForSequenceClassification model (students.pretrained builds one from a directory)."
            )
        self.save_hyperparameters(ignore=["model"])
        self.model = model.train()
        self.lr, self.weight_decay = lr, weight_decay
        self.val_accuracy = MulticlassAccuracy(num_classes=classes)
        self.test_accuracy = MulticlassAccuracy(num_classes=classes)

    def export_module(self) -> nn.Module:
        """What :func:`lit_opt.export` writes for this module: the Hugging Face model."""
        return self.model

    @override
    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.model(**{k: v for k, v in inputs.items() if k not in NOT_INPUTS}).logits

    @override
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        loss = F.cross_entropy(self(batch).float(), batch["labels"])
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: Mapping[str, Tensor], stage: str, metric: MulticlassAccuracy) -> Tensor:
        logits = self(batch)
        metric.update(logits.argmax(dim=-1), batch["labels"])
        loss = F.cross_entropy(logits.float(), batch["labels"])
        self.log_dict({f"{stage}_loss": loss, f"{stage}_acc": metric}, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val", self.val_accuracy)

    @override
    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test", self.test_accuracy)

    @override
    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Any:
        return self(batch).argmax(dim=-1)

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
