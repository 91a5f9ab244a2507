"""Distillation losses (pure torch).

.. math::

    \\mathcal{L} = \\alpha\\, T^2\\, \\mathrm{KL}\\big(\\mathrm{softmax}(t / T)\\,\\|\\,\\mathrm{softmax}(s / T)\\big)
                 + (1 - \\alpha)\\, \\mathrm{CE}(s, y)

with the KL divergence summed over classes and averaged over examples (``batchmean``), and the
:math:`T^2` factor of Hinton et al. (2015) that keeps the soft term's gradients on the scale of
the hard term's as :math:`T` grows.

Example:
    >>> import torch
    >>> s, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    >>> soft_target_loss(s, t, temperature=4.0).item()
    0.0
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: what :func:`hidden_state_loss` can measure between two tokens' states
HIDDEN_METRICS: tuple[str, ...] = ("mse", "cosine")


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` summed over classes, averaged over rows.

    Leading dimensions (batch, sequence) are flattened into rows.
    """
    classes = student_logits.shape[-1]
    log_student = F.log_softmax(student_logits.reshape(-1, classes).float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.reshape(-1, classes).float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2


def top_k_soft_target_loss(
    student_logits: Tensor, teacher_values: Tensor, teacher_indices: Tensor, temperature: float
) -> Tensor:
    """:func:`soft_target_loss` from the teacher's ``k`` largest logits only (a teacher-output cache's).

    The teacher's distribution is renormalized over its kept classes, :math:`p = \\mathrm{softmax}(v / T)`
    over the ``k`` values; the student's is its full :math:`\\log q = \\log\\mathrm{softmax}(s / T)` over
    every class, read at the kept classes:

    .. math::

        T^2 \\sum_{j \\in \\text{top-}k} p_j (\\log p_j - \\log q_j)

    averaged over rows. It is >= 0 (the student's kept probabilities sum to at most 1), it pushes the
    student's mass onto the teacher's top classes, and with every class kept (``k = C``, any order)
    it equals :func:`soft_target_loss`.

    Args:
        student_logits: ``(..., C)``.
        teacher_values: ``(..., k)`` the teacher's kept logits.
        teacher_indices: ``(..., k)`` their class indices (int64).
        temperature: ``T`` (> 0).

    Example:
        >>> import torch
        >>> s, t = torch.tensor([[1.0, 3.0, 0.0]]), torch.tensor([[2.0, 0.5, -1.0]])
        >>> values, indices = t.topk(3)
        >>> bool(torch.isclose(top_k_soft_target_loss(s, values, indices, 2.0), soft_target_loss(s, t, 2.0)))
        True
    """
    classes, kept = student_logits.shape[-1], teacher_values.shape[-1]
    log_student = F.log_softmax(student_logits.reshape(-1, classes).float() / temperature, dim=-1)  # (N, C)
    log_student = log_student.gather(1, teacher_indices.reshape(-1, kept))  # (N, k)
    log_teacher = F.log_softmax(teacher_values.reshape(-1, kept).float() / temperature, dim=-1)  # (N, k)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float,
    alpha: float,
    teacher_indices: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``alpha * soft + (1 - alpha) * hard``; returns ``(total, soft, hard)``.

    With ``teacher_indices``, ``teacher_logits`` are the teacher's top-k values at those classes
    (:func:`top_k_soft_target_loss`).
    """
    if teacher_indices is None:
        soft = soft_target_loss(student_logits, teacher_logits, temperature)
    else:
        soft = top_k_soft_target_loss(student_logits, teacher_logits, teacher_indices, temperature)
    hard = F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]).float(), labels.reshape(-1))
    return alpha * soft + (1 - alpha) * hard, soft, hard


def hidden_state_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    mask: Tensor | None = None,
    center: bool = False,
    metric: str = "mse",
) -> Tensor:
    """Distance between (projected) hidden states ``(B, L, H)``, averaged over the positions ``mask`` keeps.

    ``metric="mse"`` (TinyBERT) is the squared error averaged over features; ``"cosine"`` is
    ``1 - cos`` of each token's two vectors (DistilBERT), blind to their lengths. With ``center``,
    each side first loses its per-feature mean over the kept positions of the batch, so only how the
    states vary between tokens and inputs is matched, not a component they all share.

    Example:
        >>> import torch
        >>> s, t = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), torch.tensor([[[0.0, 0.0], [10.0, 10.0]]])
        >>> hidden_state_loss(s, t).item(), hidden_state_loss(s, t, center=True).item()
        (22.5, 16.0)
        >>> round(hidden_state_loss(s, t, center=True, metric="cosine").item(), 6)
        0.0
    """
    if metric not in HIDDEN_METRICS:
        raise ValueError(
            f"metric={metric!r} is not one of {HIDDEN_METRICS}. HINT: 'mse' matches the states' values, "
            "'cosine' their directions."
        )
    weights = (student_hidden.new_ones(student_hidden.shape[:2]) if mask is None else mask).float()  # (B, L)
    count = weights.sum().clamp(min=1)
    student, teacher = student_hidden.float(), teacher_hidden.float()
    if center:
        kept = weights.unsqueeze(-1)
        student, teacher = (x - (x * kept).sum((0, 1)) / count for x in (student, teacher))
    if metric == "cosine":
        per_token = 1 - F.cosine_similarity(student, teacher, dim=-1)  # (B, L)
    else:
        per_token = (student - teacher).pow(2).mean(dim=-1)  # (B, L)
    return (per_token * weights).sum() / count


def attention_map_loss(student_attention: Tensor, teacher_attention: Tensor) -> Tensor:
    """Mean squared error between attention probability maps ``(B, heads, L, L)`` (TinyBERT).

    With different head counts the maps are averaged over heads first.

    Example:
        >>> import torch
        >>> a = torch.full((1, 2, 3, 3), 1 / 3)
        >>> attention_map_loss(a, a[:, :1]).item()
        0.0
    """
    if student_attention.shape[1] != teacher_attention.shape[1]:
        student_attention = student_attention.mean(dim=1, keepdim=True)
        teacher_attention = teacher_attention.mean(dim=1, keepdim=True)
    return (student_attention.float() - teacher_attention.float()).pow(2).mean()


IGNORE_INDEX = -100


def next_token_targets(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows, positions, targets)`` of the kept next-token targets of Hugging Face causal-LM ``labels``.

    Position ``i`` of row ``b`` predicts ``labels[b, i + 1]``; targets equal to ``-100`` are dropped
    (so is every row's last position, which predicts nothing).

    Example:
        >>> import torch
        >>> rows, positions, targets = next_token_targets(torch.tensor([[5, 6, -100, 7]]))
        >>> positions.tolist(), targets.tolist()
        ([0, 2], [6, 7])
    """
    shifted = labels[:, 1:]  # (B, L - 1): the token each position predicts
    rows, positions = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)  # (N,) each
    return rows, positions, shifted[rows, positions]


class _ChunkedCausalLMLoss(torch.autograd.Function):
    """Soft and hard terms over the kept positions, ``chunk_size`` positions at a time.

    The gradient is computed chunk by chunk in the forward pass (``T (q_T - p) alpha / N`` for the
    soft term, ``(q_1 - onehot) (1 - alpha) / N`` for cross-entropy) into one tensor shaped and
    typed like the student's logits, so autograd keeps no per-chunk float32 copies alive.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student: Tensor,
        teacher: Tensor | None,
        teacher_indices: Tensor | None,
        rows: Tensor,
        positions: Tensor,
        targets: Tensor,
        temperature: float,
        alpha: float,
        chunk_size: int,
        needs_grad: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        kept = rows.numel()
        soft_sum = torch.zeros((), dtype=torch.float64, device=student.device)
        hard_sum = torch.zeros((), dtype=torch.float64, device=student.device)
        grad = torch.zeros_like(student) if needs_grad and kept else None
        soft_scale, hard_scale = alpha * temperature / max(kept, 1), (1 - alpha) / max(kept, 1)
        for start in range(0, kept, chunk_size):
            r, c = rows[start : start + chunk_size], positions[start : start + chunk_size]
            y = targets[start : start + chunk_size]  # (n,)
            logits = student[r, c].float()  # (n, V): the one float32 copy of this chunk's student logits
            log_q = logits.log_softmax(dim=-1)  # (n, V)
            hard_sum += -log_q.gather(1, y[:, None]).sum(dtype=torch.float64)
            g = None
            if grad is not None and hard_scale:
                g = log_q.exp_()  # q_1 (n, V)
                g[torch.arange(len(y), device=g.device), y] -= 1.0
                g.mul_(hard_scale)
            del log_q
            if teacher is not None and alpha > 0:
                log_q = logits.div_(temperature).log_softmax(dim=-1)  # (n, V) student at T
                del logits
                # (n, V), or (n, k) from a top-k teacher: renormalized over its kept tokens
                log_p = teacher[r, c].float().div_(temperature).log_softmax(dim=-1)
                kept_at = None if teacher_indices is None else teacher_indices[r, c]  # (n, k)
                log_q_kept = log_q if kept_at is None else log_q.gather(1, kept_at)
                p = log_p.exp()
                soft_sum += torch.sub(log_p, log_q_kept).mul_(p).sum(dtype=torch.float64)
                del log_p, log_q_kept
                if grad is not None:
                    q = log_q.exp_()  # q_T (n, V)
                    if kept_at is None:
                        q.sub_(p)
                    else:
                        q.scatter_add_(1, kept_at, -p)
                    g = q.mul_(soft_scale) if g is None else g.add_(q, alpha=soft_scale)
            else:
                del logits
            if grad is not None and g is not None:
                grad[r, c] = g.to(grad.dtype)
        n = max(kept, 1)  # no kept target: both terms are 0
        soft = (soft_sum * temperature**2 / n).float()
        hard = (hard_sum / n).float()
        total = alpha * soft + (1 - alpha) * hard
        ctx.mark_non_differentiable(soft, hard)
        ctx.save_for_backward(grad)
        return total, soft, hard

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        if grad is not None:  # in place (no second batch x seq x vocab tensor); a second backward is refused
            grad.mul_(grad_total.to(grad.dtype))
        return (grad, *([None] * 9))


def _check_causal_shapes(
    student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor, teacher_indices: Tensor | None
) -> None:
    if student_logits.dim() != 3:
        raise ValueError(
            f"student_logits has shape {tuple(student_logits.shape)}; expected (batch, seq, vocab). HINT: pass "
            "a causal LM's `.logits`, not a classifier's (batch, classes)."
        )
    if labels.shape != student_logits.shape[:2]:
        raise ValueError(
            f"labels has shape {tuple(labels.shape)}; expected {tuple(student_logits.shape[:2])} (batch, seq) like "
            "the logits. HINT: labels are the unshifted input ids with -100 where no loss is wanted."
        )
    if teacher_logits is None:
        return
    expected = student_logits.shape if teacher_indices is None else (*student_logits.shape[:2], -1)
    if teacher_logits.dim() != 3 or any(
        e not in (-1, g) for e, g in zip(expected, teacher_logits.shape, strict=True)
    ):
        raise ValueError(
            f"teacher_logits has shape {tuple(teacher_logits.shape)}; expected {tuple(student_logits.shape)} like "
            "student_logits (batch, seq, k with teacher_indices). HINT: student and teacher need the same "
            "vocabulary and the same batch."
        )
    if teacher_indices is not None and teacher_indices.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher_indices has shape {tuple(teacher_indices.shape)}; expected {tuple(teacher_logits.shape)}, "
            "the shape of the top-k values in teacher_logits. HINT: pass both halves of logits.topk(k)."
        )


def causal_lm_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = 2.0,
    alpha: float = 0.5,
    chunk_size: int = 256,
    teacher_indices: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Token-level distillation of a causal LM; returns ``(total, soft, hard)``.

    Position ``i`` predicts token ``i + 1`` (``labels`` are unshifted, as given to a Hugging Face
    causal LM; ``-100`` is ignored). Over the ``N`` kept targets of the whole batch (every kept
    token weighs the same, however the tokens are spread over rows):

    .. math::

        \\text{soft} = \\frac{T^2}{N} \\sum_{(b, i)} \\mathrm{KL}\\big(\\mathrm{softmax}(t_{b,i}/T)
                       \\,\\|\\, \\mathrm{softmax}(s_{b,i}/T)\\big), \\quad
        \\text{hard} = \\frac{1}{N} \\sum_{(b, i)} -\\log \\mathrm{softmax}(s_{b,i})_{y_{b,i+1}}

    and ``total = alpha * soft + (1 - alpha) * hard``. With no kept target all three are 0.

    Memory: the kept positions are processed ``chunk_size`` at a time; float32 copies of the logits
    (student, teacher, softmaxes) exist for one chunk only, never for the whole ``batch x seq x
    vocab``. The gradient with respect to ``student_logits`` is computed chunk by chunk in the
    forward pass into one tensor of the logits' shape and dtype (returned by ``backward``), so
    autograd keeps nothing else; ``backward`` scales it in place, so it runs once per call (autograd
    refuses a second ``backward(retain_graph=True)``). Only ``total`` carries a gradient (``soft`` and
    ``hard`` are for logging); ``teacher_logits`` are constants. Peak memory besides that gradient:
    about six float32 ``chunk_size x vocab`` tensors.

    With ``teacher_indices`` (a teacher cache's top-k), ``teacher_logits`` are the teacher's ``k``
    kept logits per position (``(batch, seq, k)``) at the vocabulary indices ``teacher_indices``.
    The teacher's tail mass is dropped: its distribution is renormalized over the ``k`` kept tokens,
    while the student's log-probabilities come from its full vocabulary, read at those tokens
    (:func:`top_k_soft_target_loss`, per token). The soft term stays >= 0, pushes the student's mass
    onto the teacher's top tokens (its tail is pushed down, not matched), and equals the full KL
    when ``k`` is the vocabulary size.

    Args:
        student_logits: ``(batch, seq, vocab)``, any float dtype.
        teacher_logits: ``(batch, seq, vocab)``, or ``(batch, seq, k)`` with ``teacher_indices``.
        labels: ``(batch, seq)`` token ids, ``-100`` where no loss is wanted (padding, prompts).
        temperature: ``T`` (> 0).
        alpha: weight of the soft term in [0, 1].
        chunk_size: kept positions processed at once (float32 memory ~ a few ``chunk_size x vocab``).
        teacher_indices: ``(batch, seq, k)`` int64 vocabulary indices of ``teacher_logits``, or None.

    Raises:
        ValueError: shapes that do not fit together, ``temperature <= 0``, ``alpha`` outside [0, 1]
            or ``chunk_size < 1``.

    Example:
        >>> import torch
        >>> s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
        >>> labels = torch.randint(0, 11, (2, 5))
        >>> total, soft, hard = causal_lm_distillation_loss(s, t, labels, temperature=2.0, alpha=0.5)
        >>> bool(torch.isclose(total, 0.5 * soft + 0.5 * hard))
        True
    """
    if not temperature > 0:
        raise ValueError(
            f"temperature={temperature!r} must be > 0. HINT: 1 to 4 is usual for language models."
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r} must be in [0, 1]: the weight of the teacher's soft targets.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(
            f"chunk_size={chunk_size!r} must be an integer >= 1. HINT: 256 keeps a 49k vocabulary's float32 "
            "copies near 50 MB each."
        )
    _check_causal_shapes(student_logits, teacher_logits, labels, teacher_indices)
    rows, positions, targets = next_token_targets(labels)
    indices = None if teacher_indices is None else teacher_indices.long()
    total, soft, hard = _ChunkedCausalLMLoss.apply(
        student_logits, teacher_logits.detach(), indices, rows, positions, targets,
        float(temperature), float(alpha), chunk_size, torch.is_grad_enabled() and student_logits.requires_grad,
    )  # fmt: skip
    return total, soft, hard


def causal_lm_cross_entropy(logits: Tensor, labels: Tensor, chunk_size: int = 256) -> tuple[Tensor, Tensor]:
    """``(mean next-token cross-entropy, number of kept targets)`` of a causal LM, chunked like
    :func:`causal_lm_distillation_loss` (its ``hard`` term; differentiable). ``exp`` of the mean is the
    perplexity; over several batches, sum ``mean * count`` and ``count`` before dividing.

    Example:
        >>> import torch
        >>> loss, count = causal_lm_cross_entropy(torch.zeros(1, 4, 8), torch.tensor([[1, 2, -100, 3]]))
        >>> round(loss.exp().item(), 4), int(count)
        (8.0, 2)
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be an integer >= 1.")
    _check_causal_shapes(logits, None, labels, None)
    rows, positions, targets = next_token_targets(labels)
    needs_grad = torch.is_grad_enabled() and logits.requires_grad
    total, _, _ = _ChunkedCausalLMLoss.apply(
        logits, None, None, rows, positions, targets, 1.0, 0.0, chunk_size, needs_grad
    )
    return total, torch.tensor(rows.numel(), device=logits.device)
