"""MLPClassifier: layout, training lowers the loss, steps and argument errors."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import pytest
import torch
from torch import nn

from lit_opt.models import MLPClassifier


def test_layout_and_names() -> None:
    model = MLPClassifier()
    names = {name: type(module) for name, module in model.net.named_children()}
    assert names == {
        "0": nn.Linear,
        "1": nn.BatchNorm1d,
        "2": nn.ReLU,
        "3": nn.Linear,
        "4": nn.BatchNorm1d,
        "5": nn.ReLU,
        "6": nn.Linear,
    }
    assert model.net[0].in_features == 64 and model.net[6].out_features == 10
    assert dict(model.hparams) == {
        "in_features": 64,
        "hidden": (128, 64),
        "num_classes": 10,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "dropout": 0.0,
        "batchnorm": True,
    }


def test_layout_without_batchnorm_with_dropout() -> None:
    model = MLPClassifier(in_features=8, hidden=[16], num_classes=3, dropout=0.2, batchnorm=False)
    assert [type(m) for m in model.net] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert MLPClassifier(hidden=[]).net[0].in_features == 64  # a linear classifier


def test_training_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = MLPClassifier(in_features=16, hidden=[32], num_classes=4, lr=1e-2)
    x = torch.randn(64, 16)
    y = torch.randint(0, 4, (64,))
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    model.train()
    losses = []
    for step in range(10):
        loss = model.training_step((x, y), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_predict_step_returns_class_indices() -> None:
    model = MLPClassifier(hidden=[8]).eval()
    x = torch.rand(5, 64)
    expected = model(x).argmax(dim=-1)
    assert torch.equal(model.predict_step((x, torch.zeros(5, dtype=torch.int64)), 0), expected)
    assert torch.equal(model.predict_step(x, 0), expected)


def test_fit_and_test_log_metrics(make_trainer: Callable[..., L.Trainer]) -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.rand(32, 64, generator=g), torch.randint(0, 10, (32,), generator=g)
    )
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    trainer = make_trainer(max_steps=-1, max_epochs=1)
    model = MLPClassifier(hidden=[8])
    trainer.fit(model, loader, loader)
    assert {"train_loss", "val_loss", "val_acc"} <= set(trainer.callback_metrics)
    (results,) = trainer.test(model, loader, verbose=False)
    assert set(results) == {"test_loss", "test_acc"}
    assert 0.0 <= results["test_acc"] <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_features": 0}, r"in_features=0 is not accepted; expected an integer >= 1"),
        ({"hidden": 128}, r"hidden=128 is not accepted; expected a list of integers >= 1"),
        ({"hidden": "128"}, r"hidden='128' is not accepted; expected a list of integers >= 1"),
        ({"hidden": [128, 0]}, r"hidden=\[128, 0\] is not accepted: 0 is not an integer >= 1"),
        ({"num_classes": 1}, r"num_classes=1 is not accepted; expected an integer >= 2"),
        ({"lr": 0.0}, r"lr=0.0 is not accepted; expected a float > 0"),
        ({"weight_decay": -0.1}, r"weight_decay=-0.1 is not accepted; expected a float >= 0"),
        ({"dropout": 1.0}, r"dropout=1.0 is not accepted; expected a probability in \[0, 1\)"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**kwargs)
