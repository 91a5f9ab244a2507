"""choose_layers: greedy block removal by calibration loss, checked against a brute force over select_layers copies."""

from __future__ import annotations

import itertools

import pytest
import torch

from lit_opt.distillation.layer_search import choose_layers, label_loss, next_token_loss
from lit_opt.distillation.students import select_layers
from tests.helpers.lm import tiny_llama
from tests.helpers.models import tiny_bert, tiny_gpt2


def lm_batches(vocab: int = 300, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 3, 16), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 0, 12:] = 0  # a padded row: its tail is not a target
    return [{"input_ids": i, "attention_mask": m} for i, m in zip(ids, mask, strict=True)]


def reference_costs(model, batches, loss, candidates) -> dict[tuple[int, ...], float]:
    """Mean loss of each candidate layer set, on an independent copy made by select_layers."""
    costs = {}
    with torch.inference_mode():
        for kept in candidates:
            copy = select_layers(model, list(kept)).eval()
            costs[tuple(kept)] = sum(float(loss(copy, b)) for b in batches) / len(batches)
    return costs


def test_one_block_removed_is_the_cheapest_single_removal() -> None:
    model, batches = tiny_llama(layers=5), lm_batches()
    costs = reference_costs(model, batches, next_token_loss, itertools.combinations(range(5), 4))
    assert choose_layers(model, 4, batches) == list(min(costs, key=costs.__getitem__))


def test_greedy_rounds_match_a_step_by_step_reference() -> None:
    model, batches = tiny_llama(layers=5), lm_batches(seed=1)
    kept = list(range(5))
    while len(kept) > 2:  # one block per round: the best single removal from what is left
        costs = reference_costs(model, batches, next_token_loss, itertools.combinations(kept, len(kept) - 1))
        kept = list(min(costs, key=costs.__getitem__))
    assert choose_layers(model, 2, batches, drop_fraction=0.01) == kept


def test_drop_fraction_one_drops_every_block_in_one_round_by_single_removal_cost() -> None:
    model, batches = tiny_llama(layers=5), lm_batches(seed=2)
    singles = reference_costs(model, batches, next_token_loss, itertools.combinations(range(5), 4))
    removed = {next(i for i in range(5) if i not in kept): cost for kept, cost in singles.items()}
    worst_two = sorted(removed, key=removed.__getitem__)[:2]
    expected = [i for i in range(5) if i not in worst_two]
    assert choose_layers(model, 3, batches, drop_fraction=1.0) == expected


def test_classifier_search_uses_the_labels() -> None:
    model = tiny_bert(num_layers=4, vocab_size=100)
    generator = torch.Generator().manual_seed(0)
    batches = [
        {
            "input_ids": torch.randint(1, 100, (8, 12), generator=generator),
            "attention_mask": torch.ones(8, 12, dtype=torch.long),
            "labels": torch.randint(0, 2, (8,), generator=generator),
        }
        for _ in range(2)
    ]
    costs = reference_costs(model, batches, label_loss, itertools.combinations(range(4), 3))
    assert choose_layers(model, 3, batches, task="classification") == list(min(costs, key=costs.__getitem__))


def test_the_model_is_left_as_it_was() -> None:
    model, batches = tiny_gpt2(), lm_batches(vocab=64)
    model.train()
    blocks = model.transformer.h
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = choose_layers(model, 1, batches)
    assert kept in ([0], [1])
    assert model.transformer.h is blocks and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, r"count=0 is not a number of blocks to keep of LlamaForCausalLM's 3\. HINT: .*1\.\.3"),
        ({"count": 4}, r"count=4 .* HINT: an integer in 1\.\.3"),
        ({"count": True}, r"count=True"),
        ({"batches": []}, r"batches=\[\] holds no calibration batch"),
        ({"task": "translation"}, r"task='translation' is not one of \['causal_lm', 'classification'\]"),
        ({"drop_fraction": 0.0}, r"drop_fraction=0.0 must be in \(0, 1\]"),
        ({"drop_fraction": 1.5}, r"drop_fraction=1.5 must be in \(0, 1\]"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message) -> None:
    arguments = {"count": 2, "batches": lm_batches(), "task": "causal_lm", "drop_fraction": 0.25, **kwargs}
    with pytest.raises(ValueError, match=message):
        choose_layers(tiny_llama(layers=3), **arguments)
