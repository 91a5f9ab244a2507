"""causal_lm_distillation_loss against loops over tokens: shift, -100, reduction, chunked gradients, memory, top-k."""

import math

import pytest
import torch

from lit_opt.functional.distillation import (
    causal_lm_cross_entropy,
    causal_lm_distillation_loss,
    next_token_targets,
    top_k_soft_target_loss,
)
from tests.helpers.memory import LiveBytes


def _softmax(row, T):
    z = sum(math.exp(v / T) for v in row)
    return [math.exp(v / T) / z for v in row]


def _reference(s, t, labels, T, alpha, k=None):
    """Loops and math.exp: position i predicts labels[i + 1]; mean over kept (not -100) targets."""
    kl_sum, ce_sum, kept = 0.0, 0.0, 0
    for b in range(len(labels)):
        for i in range(len(labels[b]) - 1):
            y = labels[b][i + 1]
            if y == -100:
                continue
            kept += 1
            q = _softmax(s[b][i], T)
            if k is None:
                p = _softmax(t[b][i], T)
                kl_sum += sum(pj * (math.log(pj) - math.log(qj)) for pj, qj in zip(p, q, strict=True))
            else:  # the teacher's k largest, renormalized; the student's full softmax at those tokens
                top = sorted(range(len(t[b][i])), key=lambda j: -t[b][i][j])[:k]
                p = _softmax([t[b][i][j] for j in top], T)
                kl_sum += sum(pj * (math.log(pj) - math.log(q[j])) for pj, j in zip(p, top, strict=True))
            ce_sum += -math.log(_softmax(s[b][i], 1.0)[y])
    if kept == 0:
        return 0.0
    return alpha * T**2 * kl_sum / kept + (1 - alpha) * ce_sum / kept


def _batch(seed=0, shape=(3, 6, 7)):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(shape, generator=g) * 3, torch.randn(shape, generator=g) * 3
    labels = torch.randint(0, shape[-1], shape[:2], generator=g)
    labels[0, 4:] = -100  # right padding
    labels[1, :] = -100  # a row with no target at all
    labels[2, 2] = -100  # a hole (e.g. a prompt token)
    return s, t, labels


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (2.0, 0.9), (4.0, 0.0), (3.0, 1.0)])
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_matches_a_loop_over_tokens(T, alpha, chunk_size):
    s, t, labels = _batch(int(T * 10))
    total, soft, hard = causal_lm_distillation_loss(s, t, labels, T, alpha, chunk_size=chunk_size)
    expected = _reference(s.tolist(), t.tolist(), labels.tolist(), T, alpha)
    assert total.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert total.item() == pytest.approx(alpha * soft.item() + (1 - alpha) * hard.item(), rel=1e-6)


def test_mean_is_over_kept_tokens_not_over_rows():
    s, t, labels = _batch()
    kept = int((labels[:, 1:] != -100).sum())
    _, _, hard = causal_lm_distillation_loss(s, t, labels, 2.0, 0.5)
    per_token = torch.nn.functional.cross_entropy(
        s[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
    )
    assert hard.item() == pytest.approx(per_token.item() / kept, rel=1e-6)


def test_no_kept_target_gives_zero_and_a_zero_gradient():
    s, t, _ = _batch()
    s.requires_grad_(True)
    labels = torch.full((3, 6), -100)
    labels[:, 0] = 5  # the first token is never a target
    total, soft, hard = causal_lm_distillation_loss(s, t, labels)
    assert (total.item(), soft.item(), hard.item()) == (0.0, 0.0, 0.0)
    total.backward()
    assert s.grad is None or not s.grad.any()


def _autograd_reference(s, t, labels, T, alpha):
    """The same loss written with plain differentiable formulas over the whole batch at once."""
    keep = labels[:, 1:] != -100  # (B, L-1)
    s_kept, t_kept = s[:, :-1][keep].float(), t[:, :-1][keep].float()  # (N, V)
    log_q, log_p = (s_kept / T).log_softmax(-1), (t_kept / T).log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean() * T**2
    ce = torch.nn.functional.cross_entropy(s_kept, labels[:, 1:][keep])
    return alpha * kl + (1 - alpha) * ce


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gradient_through_chunks_equals_the_unchunked_reference(chunk_size, dtype):
    s0, t, labels = _batch(shape=(3, 9, 11))
    s_a = s0.to(dtype).requires_grad_(True)
    s_b = s0.to(dtype).requires_grad_(True)
    (causal_lm_distillation_loss(s_a, t, labels, 2.0, 0.3, chunk_size=chunk_size)[0] * 2.5).backward()
    (_autograd_reference(s_b, t, labels, 2.0, 0.3) * 2.5).backward()
    assert s_a.grad.dtype == dtype
    tolerance = {"rtol": 1e-2, "atol": 1e-3} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(s_a.grad, s_b.grad, **tolerance)
    assert not s_a.grad[1].any()  # the row with no target


def test_backward_twice_is_refused_not_wrong():
    """The stored gradient is scaled in place; autograd's version counter refuses a second backward."""
    s, t, labels = _batch()
    s.requires_grad_(True)
    total, _, _ = causal_lm_distillation_loss(s, t, labels)
    total.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation"):
        total.backward()


def test_memory_stays_within_one_chunk_besides_the_gradient():
    B, L, V, chunk = 4, 64, 1000, 16
    s = torch.randn(B, L, V, requires_grad=True)
    t, labels = torch.randn(B, L, V), torch.randint(0, V, (B, L))
    full, chunk_copy = s.nbytes, chunk * V * 4  # one float32 copy of all logits / of one chunk

    def peak(size, grad=True):
        s.grad = None
        with torch.set_grad_enabled(grad), LiveBytes() as probe:
            total, _, _ = causal_lm_distillation_loss(s, t, labels, chunk_size=size)
            if grad:
                total.backward()
        return probe.peak

    chunked = peak(chunk)
    # the gradient (one tensor like the logits, which becomes s.grad) plus a few chunk-sized temporaries
    assert full <= chunked <= full + 8 * chunk_copy
    assert peak(chunk, grad=False) <= 8 * chunk_copy  # evaluation: no full-size tensor at all
    assert peak(B * L) > 4 * full  # one chunk of every token: several full float32 copies at once


def test_top_k_teacher_matches_the_reference_and_every_token_kept_equals_full():
    s, t, labels = _batch(3)
    values, indices = t.topk(3, dim=-1)
    total, _, _ = causal_lm_distillation_loss(
        s, values, labels, 2.0, 0.6, chunk_size=2, teacher_indices=indices
    )
    expected = _reference(s.tolist(), t.tolist(), labels.tolist(), 2.0, 0.6, k=3)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    all_values, all_indices = t.topk(7, dim=-1)  # every token, in another order
    full = causal_lm_distillation_loss(s, t, labels, 2.0, 0.6)[0]
    top = causal_lm_distillation_loss(s, all_values, labels, 2.0, 0.6, teacher_indices=all_indices)[0]
    assert top.item() == pytest.approx(full.item(), rel=1e-6)


def test_top_k_gradient_and_the_classification_top_k_loss_agree():
    s0, t, labels = _batch(4)
    values, indices = t.topk(4, dim=-1)
    s_a, s_b = s0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
    soft = causal_lm_distillation_loss(s_a, values, labels, 2.0, 1.0, chunk_size=3, teacher_indices=indices)[
        0
    ]
    soft.backward()
    rows, positions, _ = next_token_targets(labels)  # the same loss per kept token, with autograd
    reference = top_k_soft_target_loss(
        s_b[rows, positions], values[rows, positions], indices[rows, positions], 2.0
    )
    reference.backward()
    assert soft.item() == pytest.approx(reference.item(), rel=1e-6)
    torch.testing.assert_close(s_a.grad, s_b.grad, rtol=1e-5, atol=1e-6)


def test_cross_entropy_and_perplexity_aggregate_by_tokens():
    s, _, labels = _batch(5)
    loss, count = causal_lm_cross_entropy(s, labels, chunk_size=2)
    expected = torch.nn.functional.cross_entropy(s[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert (
        loss.item() == pytest.approx(expected.item(), rel=1e-6) and int(count) == 7
    )  # 3 + 0 + 4 kept targets


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": 0.0}, r"temperature=0.0 must be > 0"),
        ({"alpha": -0.1}, r"alpha=-0.1 must be in \[0, 1\]"),
        ({"chunk_size": 0}, r"chunk_size=0 must be an integer >= 1"),
    ],
)
def test_bad_arguments(kwargs, match):
    s, t, labels = _batch()
    with pytest.raises(ValueError, match=match):
        causal_lm_distillation_loss(s, t, labels, **kwargs)


def test_bad_shapes():
    s, t, labels = _batch()
    with pytest.raises(
        ValueError, match=r"student_logits has shape \(3, 7\); expected \(batch, seq, vocab\)"
    ):
        causal_lm_distillation_loss(s[:, 0], t[:, 0], labels)
    with pytest.raises(ValueError, match=r"labels has shape \(3, 5\); expected \(3, 6\)"):
        causal_lm_distillation_loss(s, t, labels[:, :5])
    with pytest.raises(
        ValueError, match=r"teacher_logits has shape \(3, 6, 8\); expected \(3, 6, 7\).*same vocabulary"
    ):
        causal_lm_distillation_loss(s, torch.randn(3, 6, 8), labels)
    values, indices = t.topk(2, dim=-1)
    with pytest.raises(ValueError, match=r"teacher_indices has shape \(3, 6, 1\); expected \(3, 6, 2\)"):
        causal_lm_distillation_loss(s, values, labels, teacher_indices=indices[..., :1])
