"""Sparsity schedules and masks against hand-computed references."""

import pytest
import torch

from lit_opt.functional.sparsity import (
    global_masks,
    is_pruning_step,
    n_m_mask,
    parse_n_m,
    sparsity_at,
    unstructured_mask,
)


def test_cubic_schedule_by_hand():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with s_i = 0, s_f = 0.9, t0 = 10, n dt = 100
    expected = {0: 0.0, 9: 0.0, 10: 0.0, 35: 0.9 - 0.9 * 0.75**3, 60: 0.9 - 0.9 * 0.5**3, 110: 0.9, 500: 0.9}
    for step, value in expected.items():
        assert sparsity_at(step, 0.9, "cubic", 10, 110) == pytest.approx(value, abs=1e-12)


def test_linear_and_constant_schedules():
    assert sparsity_at(60, 0.8, "linear", 10, 110) == pytest.approx(0.4)
    assert sparsity_at(9, 0.8, "constant", 10, 110) == 0.0
    assert sparsity_at(10, 0.8, "constant", 10, 110) == 0.8


def test_pruning_steps():
    steps = [t for t in range(0, 40) if is_pruning_step(t, "cubic", 5, 27, 10)]
    assert steps == [5, 15, 25, 27]  # every 10 from the start, and the end step itself
    assert [t for t in range(40) if is_pruning_step(t, "constant", 5, 27, 10)] == [5]


def test_exact_counts_and_deterministic_ties():
    scores = torch.ones(10)
    mask = unstructured_mask(scores, 0.3)
    assert mask.tolist() == [False] * 3 + [True] * 7  # ties: lower index pruned first
    assert int((~unstructured_mask(torch.randn(7, 9), 0.5)).sum()) == round(0.5 * 63)


def test_global_masks_share_one_threshold():
    a, b = torch.tensor([[0.1, 0.9], [0.2, 0.8]]), torch.tensor([0.3, 5.0, 0.05])
    masks = global_masks([a, b], 3 / 7)
    assert masks[0].tolist() == [[False, True], [False, True]]
    assert masks[1].tolist() == [True, True, False]


def test_n_m_keeps_n_of_every_m():
    scores = torch.tensor([[1.0, 4.0, 3.0, 2.0, 8.0, 5.0, 7.0, 6.0]])
    assert n_m_mask(scores, 2, 4).tolist() == [[False, True, True, False, True, False, True, False]]
    gradual = n_m_mask(scores, 2, 4, sparsity=0.25)  # 3 of 4 kept on the way to 2:4
    assert gradual.reshape(2, 4).sum(dim=1).tolist() == [3, 3]
    with pytest.raises(ValueError, match=r"rows whose length 6 is a multiple of M=4"):
        n_m_mask(torch.ones(2, 6), 2, 4)


def test_parse_n_m():
    assert parse_n_m("2:4") == (2, 4)
    assert parse_n_m("rows") is None and parse_n_m("2:4:8") is None


def _sort_reference(scores: torch.Tensor, n_pruned: int) -> torch.Tensor:
    """Prune the ``n_pruned`` smallest by a full stable sort (ties: lower index first)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[torch.sort(scores.reshape(-1), stable=True).indices[:n_pruned]] = False
    return keep.reshape(scores.shape)


@pytest.mark.parametrize("seed", range(20))
def test_kthvalue_threshold_equals_a_stable_sort(seed):
    generator = torch.Generator().manual_seed(seed)
    # few distinct values (many ties), and -inf for already pruned entries
    scores = torch.randint(0, 4, (13, 11), generator=generator).float()
    scores[torch.rand(scores.shape, generator=generator) < 0.2] = -torch.inf
    for sparsity in (0.0, 0.1, 0.37, 0.5, 0.9, 0.99):
        mask = unstructured_mask(scores, sparsity)
        assert int((~mask).sum()) == round(sparsity * scores.numel())
        assert torch.equal(mask, _sort_reference(scores, round(sparsity * scores.numel())))


def test_kthvalue_threshold_edge_counts():
    assert unstructured_mask(torch.ones(4), 0.0).all()
    assert not unstructured_mask(torch.tensor([1.0, 2.0]), 0.99).any()  # round(1.98) = 2: all pruned
