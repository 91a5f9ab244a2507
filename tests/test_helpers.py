"""The shared tiny models, data and trainer behave as the rest of the suite assumes."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import pytest
import torch

from tests.helpers.models import (
    BoringClassifier,
    HFClassifier,
    build_net,
    hf_dataloader,
    random_dataloader,
)


@pytest.mark.parametrize("kind", ["mlp", "conv", "embedding"])
def test_dataloader_matches_net_and_is_deterministic(kind: str) -> None:
    net = build_net(kind, seed=0)
    batches = list(random_dataloader(kind, n=16, batch_size=8, seed=3))
    again = list(random_dataloader(kind, n=16, batch_size=8, seed=3))
    assert len(batches) == 2
    for (x, y), (x2, y2) in zip(batches, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        logits = net(x)  # (B, C)
        assert logits.shape[0] == 8
        assert int(y.max()) < logits.shape[1]


def test_build_net_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = build_net("mlp", seed=0), build_net("mlp", seed=0), build_net("mlp", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)


def test_build_net_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"net='resnet' is not one of \['conv', 'embedding', 'mlp'\]"):
        build_net("resnet")


@pytest.mark.parametrize("net", ["mlp", "conv", "embedding"])
def test_boring_classifier_learns(net: str, make_trainer: Callable[..., L.Trainer]) -> None:
    model = BoringClassifier(net=net, lr=0.1, seed=0)
    x, y = next(iter(random_dataloader(net, n=64, batch_size=64)))
    before = torch.nn.functional.cross_entropy(model(x), y).item()
    make_trainer(max_steps=24).fit(model)
    after = torch.nn.functional.cross_entropy(model(x), y).item()
    assert after < before


def test_boring_classifier_runs_validation(make_trainer: Callable[..., L.Trainer]) -> None:
    trainer = make_trainer(max_steps=8, limit_val_batches=1)
    trainer.fit(BoringClassifier())
    assert "val_loss" in trainer.callback_metrics


def test_fits_are_reproducible(make_trainer: Callable[..., L.Trainer]) -> None:
    models = [BoringClassifier(net="conv", seed=0) for _ in range(2)]
    for m in models:
        make_trainer(max_steps=4).fit(m)
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(p, q)


def test_hf_batches_are_dicts_with_padding() -> None:
    batch = next(iter(hf_dataloader(n=8, batch_size=4, seq_len=16)))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 16)
    assert torch.all(batch["input_ids"][batch["attention_mask"] == 0] == 0)


def test_hf_classifier_fits_with_keyword_inputs(make_trainer: Callable[..., L.Trainer]) -> None:
    model = HFClassifier(num_labels=2, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = make_trainer(max_steps=2)
    trainer.fit(model)
    assert trainer.global_step == 2
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    out = model(**next(iter(hf_dataloader(n=4, batch_size=4))))
    assert out.logits.shape == (4, 2)
