"""Fixtures shared by the whole suite: tiny models, synthetic data and a tiny Trainer.

The builders themselves live in :mod:`tests.helpers` so that spawned DDP processes can import
them; these fixtures only wrap them. Typical use::

    def test_fit(make_trainer, boring_mlp):
        trainer = make_trainer(max_steps=2)
        trainer.fit(boring_mlp)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

from tests.helpers.models import (
    BoringClassifier,
    HFClassifier,
    TinyConvNet,
    TinyEmbeddingNet,
    TinyMLP,
    build_net,
    hf_dataloader,
    random_dataloader,
    tiny_bert,
)
from tests.helpers.trainer import tiny_trainer

__all__ = [
    "BoringClassifier",
    "HFClassifier",
    "TinyConvNet",
    "TinyEmbeddingNet",
    "TinyMLP",
    "build_net",
    "hf_dataloader",
    "random_dataloader",
    "tiny_bert",
    "tiny_trainer",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Rerun a ``ddp`` test (twice at most) when a spawned rank aborted, and only then: a rank can abort at
    interpreter exit after its work finished ("terminate called without an active exception", gloo's threads
    torn down late; seen in a few of many CI runs)."""
    for item in items:
        if item.get_closest_marker("ddp"):
            item.add_marker(pytest.mark.flaky(reruns=2, only_rerun=["ProcessExitedException"]))


@pytest.fixture(autouse=True)
def _seed_and_quiet() -> Iterator[None]:
    """Seed torch before every test and keep Lightning's info logs out of the output."""
    torch.manual_seed(0)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    yield


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., L.Trainer]:
    """A factory: ``make_trainer(**overrides)`` is ``tiny_trainer(tmp_path, **overrides)``."""

    def factory(**overrides: Any) -> L.Trainer:
        return tiny_trainer(tmp_path, **overrides)

    return factory


@pytest.fixture
def tiny_mlp() -> nn.Module:
    return build_net("mlp", seed=0)


@pytest.fixture
def tiny_convnet() -> nn.Module:
    return build_net("conv", seed=0)


@pytest.fixture
def tiny_embedding_net() -> nn.Module:
    return build_net("embedding", seed=0)


@pytest.fixture
def boring_mlp() -> BoringClassifier:
    return BoringClassifier(net="mlp", lr=0.1, seed=0)


@pytest.fixture
def boring_conv() -> BoringClassifier:
    return BoringClassifier(net="conv", lr=0.1, seed=0)


@pytest.fixture
def hf_classifier() -> HFClassifier:
    return HFClassifier(num_labels=2, seed=0)
