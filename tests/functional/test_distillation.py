"""Distillation losses against a hand-written reference."""

import math

import pytest
import torch

from lit_opt.functional.distillation import distillation_loss, hidden_state_loss, soft_target_loss


def _reference(s, t, y, T, alpha):
    """Loops and math.exp: KL(p_t || p_s) summed over classes, averaged over examples, times T^2."""
    total_kl, total_ce = 0.0, 0.0
    for row_s, row_t, label in zip(s.tolist(), t.tolist(), y.tolist(), strict=True):
        zs = sum(math.exp(v / T) for v in row_s)
        zt = sum(math.exp(v / T) for v in row_t)
        p_s = [math.exp(v / T) / zs for v in row_s]
        p_t = [math.exp(v / T) / zt for v in row_t]
        total_kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
        z = sum(math.exp(v) for v in row_s)
        total_ce += -math.log(math.exp(row_s[label]) / z)
    n = len(y)
    return alpha * T**2 * total_kl / n + (1 - alpha) * total_ce / n


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.5), (2.0, 0.9), (8.0, 0.0), (3.0, 1.0)])
def test_matches_hand_written_reference(T, alpha):
    g = torch.Generator().manual_seed(int(T * 10 + alpha * 100))
    s, t = (
        torch.randn(6, 5, generator=g, dtype=torch.float64) * 3,
        torch.randn(6, 5, generator=g, dtype=torch.float64) * 3,
    )
    y = torch.randint(0, 5, (6,), generator=g)
    total, _, _ = distillation_loss(s.double(), t.double(), y, T, alpha)
    assert total.item() == pytest.approx(_reference(s, t, y, T, alpha), abs=1e-6)


def test_batchmean_and_t_squared():
    s, t = torch.tensor([[0.0, 1.0]] * 4), torch.tensor([[1.0, 0.0]] * 4)
    one = soft_target_loss(s[:1], t[:1], 2.0)
    assert soft_target_loss(s, t, 2.0).item() == pytest.approx(
        one.item()
    )  # averaged over examples, not summed
    assert one.item() > 0


def test_sequence_logits_flatten_to_rows_and_hidden_mask():
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert soft_target_loss(s, t, 2.0).item() == pytest.approx(
        soft_target_loss(s.reshape(6, 4), t.reshape(6, 4), 2.0).item()
    )
    h_s, h_t = torch.zeros(1, 2, 3), torch.tensor([[[1.0, 1.0, 1.0], [5.0, 5.0, 5.0]]])
    assert hidden_state_loss(h_s, h_t, torch.tensor([[1, 0]])).item() == 1.0  # the padded position is ignored
    assert hidden_state_loss(h_s, h_t).item() == 13.0


def test_attention_map_loss_by_hand():
    from lit_opt.functional.distillation import attention_map_loss

    s = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # (B=1, heads=1, 2, 2)
    t = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    assert attention_map_loss(s, t).item() == pytest.approx(0.5)  # (1 + 1 + 0 + 0) / 4
    two_heads = torch.cat([s, t], dim=1)  # averaged over heads: [[0.5, 0.5], [0.5, 0.5]]
    assert attention_map_loss(two_heads, t).item() == pytest.approx(0.125)


def test_centered_hidden_state_loss_by_hand():
    h_s = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # kept-position means (2, 3)
    h_t = torch.tensor([[[0.0, 0.0], [10.0, 10.0]]])  # means (5, 5)
    # centered: s -> [[-1, -1], [1, 1]], t -> [[-5, -5], [5, 5]]; every squared difference is 16
    assert hidden_state_loss(h_s, h_t, center=True).item() == 16.0
    assert hidden_state_loss(h_s, h_t).item() == 22.5  # uncentered: (1 + 4 + 49 + 36) / 4


def test_centered_hidden_state_loss_ignores_constant_offsets_and_padded_positions():
    torch.manual_seed(0)
    h_s, h_t = torch.randn(2, 5, 8), torch.randn(2, 5, 12).narrow(-1, 0, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    reference = hidden_state_loss(h_s, h_t, mask, center=True)
    offset = torch.randn(8)
    assert hidden_state_loss(h_s + offset, h_t - 3 * offset, mask, center=True).item() == pytest.approx(
        reference.item(), rel=1e-5
    )
    padded = h_s.clone()
    padded[mask == 0] = 1e4  # padding holds anything: it enters neither the means nor the error
    assert hidden_state_loss(padded, h_t, mask, center=True).item() == pytest.approx(
        reference.item(), rel=1e-5
    )
    assert hidden_state_loss(h_s, h_t, torch.tensor([[1, 0, 0, 0, 0]] * 2), center=True).item() > 0


def test_cosine_hidden_state_loss_by_hand():
    h_s = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    h_t = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])
    # token 1: same direction, 1 - cos = 0; token 2: cos((0, 2), (1, 1)) = 1 / sqrt(2)
    expected = (1 - 2**-0.5) / 2
    assert hidden_state_loss(h_s, h_t, metric="cosine").item() == pytest.approx(expected, abs=1e-6)
    # centered first: s -> (0.5, -1), (-0.5, 1); t -> (0.5, -0.5), (-0.5, 0.5); cos = 0.75 / sqrt(1.25 * 0.5)
    centered = 1 - 0.75 / (1.25 * 0.5) ** 0.5
    assert hidden_state_loss(h_s, h_t, center=True, metric="cosine").item() == pytest.approx(
        centered, abs=1e-6
    )
    assert hidden_state_loss(h_s, h_t, torch.tensor([[1, 0]]), metric="cosine").item() == pytest.approx(
        0.0, abs=1e-6
    )


def test_cosine_hidden_state_loss_ignores_scale_and_rejects_other_metrics():
    torch.manual_seed(0)
    h_s, h_t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    reference = hidden_state_loss(h_s, h_t, mask, center=True, metric="cosine")
    assert 0 < reference.item() < 2
    scaled = hidden_state_loss(10 * h_s, 0.1 * h_t, mask, center=True, metric="cosine")
    assert scaled.item() == pytest.approx(reference.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"metric='l1' is not one of \('mse', 'cosine'\)"):
        hidden_state_loss(h_s, h_t, metric="l1")
