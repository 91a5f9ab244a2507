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

import torch.nn.functional as F
from torch import Tensor


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


def hidden_state_loss(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between (projected) hidden states, over the positions ``mask`` keeps."""
    squared = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(dim=-1)  # (B, L)
    if mask is None:
        return squared.mean()
    weights = mask.to(squared.dtype)
    return (squared * weights).sum() / weights.sum().clamp(min=1)


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
