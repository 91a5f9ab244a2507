"""A small multilayer perceptron classifier: the model the digits recipes compress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= {minimum}.")


class MLPClassifier(LightningModule):
    """Linear layers with optional BatchNorm, ReLU and dropout between them, trained with cross-entropy.

    The layers live in one ``nn.Sequential`` named ``net``, so their qualified names are ``net.0``, ``net.1``,
    ... and compression callbacks select them with patterns such as ``targets: ["net.*"]``. With the defaults
    (``hidden=[128, 64]``, ``batchnorm=True``, ``dropout=0.0``) the layout is::

        net.0 Linear(64, 128)   net.1 BatchNorm1d(128)   net.2 ReLU
        net.3 Linear(128, 64)   net.4 BatchNorm1d(64)    net.5 ReLU
        net.6 Linear(64, 10)

    Batches are ``(x, y)`` with ``x`` of shape ``(B, in_features)`` and ``y`` of class indices ``(B,)``.
    It logs ``train_loss``, ``val_loss``, ``val_acc``, ``test_loss`` and ``test_acc``; ``predict_step``
    returns the predicted class indices.

    :meth:`configure_optimizers` gives AdamW with ``lr`` and ``weight_decay``. Under ``lit-opt`` an
    ``optimizer:`` or ``lr_scheduler:`` section of the YAML config replaces it.

    Args:
        in_features: Size of each input vector.
        hidden: Widths of the hidden layers, in order; an empty list gives a linear classifier.
        num_classes: Number of classes (size of the output logits).
        lr: Learning rate of the default AdamW optimizer.
        weight_decay: Weight decay of the default AdamW optimizer.
        dropout: Dropout probability after each hidden activation, in ``[0, 1)``; ``0`` adds no Dropout layer.
        batchnorm: Whether each hidden Linear is followed by a ``BatchNorm1d`` (which QAT can freeze).

    Raises:
        ValueError: If an argument is out of range.

    Example::

        >>> model = MLPClassifier(in_features=64, hidden=[32], num_classes=10)
        >>> model(torch.rand(4, 64)).shape
        torch.Size([4, 10])
        >>> [name for name, _ in model.net.named_children()]
        ['0', '1', '2', '3']
    """

    def __init__(
        self,
        in_features: int = 64,
        hidden: Sequence[int] = (128, 64),
        num_classes: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        _check_int("in_features", in_features, minimum=1)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise ValueError(
                f"hidden={hidden!r} is not accepted; expected a list of integers >= 1, e.g. [128, 64]."
            )
        for width in hidden:
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise ValueError(
                    f"hidden={list(hidden)!r} is not accepted: {width!r} is not an integer >= 1; "
                    "expected a list of layer widths, e.g. [128, 64]."
                )
        _check_int("num_classes", num_classes, minimum=2)
        if not lr > 0:
            raise ValueError(f"lr={lr!r} is not accepted; expected a float > 0, e.g. 1e-3.")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay={weight_decay!r} is not accepted; expected a float >= 0.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} is not accepted; expected a probability in [0, 1).")
        self.save_hyperparameters()

        layers: list[nn.Module] = []
        width_in = in_features
        for width in hidden:
            layers.append(nn.Linear(width_in, width))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        self.net = nn.Sequential(*layers)

        self.val_accuracy = MulticlassAccuracy(num_classes=num_classes)
        self.test_accuracy = MulticlassAccuracy(num_classes=num_classes)
        # Two rows, so the summary's forward works with BatchNorm in train mode too.
        self.example_input_array = torch.zeros(2, in_features)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, in_features) -> (B, num_classes) logits

    @override
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_accuracy(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", self.val_accuracy, prog_bar=True)

    @override
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_accuracy(logits, y)
        self.log("test_loss", F.cross_entropy(logits, y))
        self.log("test_acc", self.test_accuracy)

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch  # (x, y) or a bare x
        return self(x).argmax(dim=-1)  # (B,) class indices

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
