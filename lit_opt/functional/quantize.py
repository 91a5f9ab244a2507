"""Affine integer quantization: ranges, parameters, fake quantization and bit packing.

Pure tensor math (imports only torch). Every quantized value in lit_opt goes through these
functions, in training (fake quantization) and in export/load (real codes), so the two agree
bit for bit:

.. math::

    q = \\mathrm{clamp}(\\mathrm{round}(x / s) + z, q_{min}, q_{max}), \\qquad \\hat x = (q - z)\\, s

Weights are viewed as ``(C, G, g)`` blocks (channels, groups per channel, group length); one
scale and zero point per block. ``per_tensor`` is ``(1, 1, numel)``, ``per_channel`` is
``(C, 1, numel / C)`` and ``per_group`` is ``(C, numel / (C * g), g)``.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    >>> scale, zp = weight_qparams(w, bits=8, symmetric=True, granularity="per_channel")
    >>> torch.allclose(scale.flatten(), torch.tensor([1.0, 2.0]) / 127)
    True
    >>> fake_quantize_weight(w, scale, zp, bits=8, symmetric=True, granularity="per_channel")[0, 1].item()
    -1.0
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lit_opt.functional.packing import pack_codes, unpack_codes

Granularity = Literal["per_tensor", "per_channel", "per_group"]
GRANULARITIES: tuple[str, ...] = ("per_tensor", "per_channel", "per_group")
EPS = torch.finfo(torch.float32).eps


def quant_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range of signed ``bits``-bit codes; symmetric drops the most negative code.

    Example:
        >>> quant_range(8, True), quant_range(4, False)
        ((-127, 127), (-8, 7))
    """
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if symmetric else -qmax - 1), qmax


def qparams_from_range(min_val: Tensor, max_val: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """Scale and zero point that map ``[min_val, max_val]`` (widened to contain 0) onto the codes.

    The zero point is a float tensor holding integers, so the same arithmetic serves training and
    export.
    """
    qmin, qmax = quant_range(bits, symmetric)
    min_val = torch.clamp(min_val, max=0.0)
    max_val = torch.clamp(max_val, min=0.0)
    if symmetric:
        scale = torch.maximum(-min_val, max_val) / qmax
        scale = torch.clamp(scale, min=EPS)
        return scale, torch.zeros_like(scale)
    scale = torch.clamp((max_val - min_val) / (qmax - qmin), min=EPS)
    zero_point = torch.clamp(qmin - torch.round(min_val / scale), qmin, qmax)
    return scale, zero_point


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
    """Integer codes of ``x`` (as a float tensor holding integers)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(codes: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """Real values of integer ``codes`` (any integer or float dtype)."""
    return (codes.to(scale.dtype) - zero_point) * scale


class _FakeQuantize(torch.autograd.Function):
    """Quantize-dequantize with a straight-through gradient, zero where ``x`` was clipped."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:  # type: ignore[override]
        unclamped = torch.round(x / scale) + zero_point
        inside = (unclamped >= qmin) & (unclamped <= qmax)
        ctx.save_for_backward(inside)
        return (torch.clamp(unclamped, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
    """``dequantize(quantize(x))`` in one pass, with a straight-through estimator for gradients.

    Its value equals ``dequantize(quantize(x, ...), ...)`` exactly (same float operations).

    Example:
        >>> x = torch.tensor([0.3, 5.0], requires_grad=True)
        >>> y = fake_quantize(x, torch.tensor(0.1), torch.tensor(0.0), -8, 7)
        >>> [round(v, 4) for v in y.tolist()], torch.autograd.grad(y.sum(), x)[0].tolist()
        ([0.3, 0.7], [1.0, 0.0])
    """
    if not (x.requires_grad and torch.is_grad_enabled()):
        return dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)
    return _FakeQuantize.apply(x, scale, zero_point, qmin, qmax)


class _RoundThrough(torch.autograd.Function):
    """``round(x / scale) * scale`` with the gradient passed through unchanged (nothing can clip)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        return torch.round(x / scale).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, None


def fake_quantize_symmetric(x: Tensor, scale: Tensor) -> Tensor:
    """:func:`fake_quantize` for a symmetric ``scale`` taken from ``x``'s own absolute maximum.

    Then no value can fall outside the codes, the zero point is 0 and the clamp is a no-op, so
    the value equals :func:`fake_quantize`'s exactly in three passes instead of nine, and the
    straight-through gradient needs no mask. Used for weights and dynamic activations, the hot
    path of QAT.

    Example:
        >>> x = torch.tensor([0.5, -1.27, 0.3])
        >>> s = x.abs().amax() / 127
        >>> torch.equal(fake_quantize_symmetric(x, s), fake_quantize(x, s, torch.tensor(0.0), -127, 127))
        True
    """
    if not (x.requires_grad and torch.is_grad_enabled()):
        return torch.round(x / scale).mul_(scale)
    return _RoundThrough.apply(x, scale)


def weight_blocks(w: Tensor, granularity: str, group_size: int | None = None) -> Tensor:
    """View ``w`` (channels first) as ``(C, G, g)`` quantization blocks; see the module docstring.

    Raises:
        ValueError: if ``group_size`` does not divide the elements of one channel.
    """
    if granularity == "per_tensor":
        return w.reshape(1, 1, -1)
    per_channel = w.reshape(w.shape[0], -1)  # (C, numel / C)
    if granularity == "per_channel":
        return per_channel.unsqueeze(1)
    if granularity == "per_group":
        if group_size is None or group_size <= 0 or per_channel.shape[1] % group_size:
            raise ValueError(
                f"group_size={group_size} must be a positive divisor of the {per_channel.shape[1]} "
                f"elements of each channel of a weight of shape {tuple(w.shape)}."
            )
        return per_channel.reshape(w.shape[0], -1, group_size)
    raise ValueError(f"granularity={granularity!r} is not one of {GRANULARITIES}.")


def weight_qparams(
    w: Tensor, bits: int, symmetric: bool, granularity: str, group_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Scale and zero point of each block of ``w``, both of shape ``(C, G)``."""
    blocks = weight_blocks(w.detach(), granularity, group_size)  # (C, G, g)
    return qparams_from_range(blocks.amin(dim=-1), blocks.amax(dim=-1), bits, symmetric)


def quantize_weight(
    w: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    bits: int,
    symmetric: bool,
    granularity: str,
    group_size: int | None = None,
) -> Tensor:
    """Integer codes of ``w`` as int8, shaped like ``w`` (``scale``/``zero_point``: ``(C, G)``)."""
    qmin, qmax = quant_range(bits, symmetric)
    blocks = weight_blocks(w, granularity, group_size)
    codes = quantize(blocks, scale.unsqueeze(-1), zero_point.unsqueeze(-1), qmin, qmax)
    return codes.to(torch.int8).reshape(w.shape)


def dequantize_weight(
    codes: Tensor, scale: Tensor, zero_point: Tensor, granularity: str, group_size: int | None = None
) -> Tensor:
    """Real weight from int8 ``codes`` shaped like the weight; inverse of :func:`quantize_weight`."""
    blocks = weight_blocks(codes, granularity, group_size)
    return dequantize(blocks, scale.unsqueeze(-1), zero_point.unsqueeze(-1)).reshape(codes.shape)


def fake_quantize_weight(
    w: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    bits: int,
    symmetric: bool,
    granularity: str,
    group_size: int | None = None,
) -> Tensor:
    """Fake-quantized ``w``; equals ``dequantize_weight(quantize_weight(w, ...), ...)`` exactly.

    ``scale`` and ``zero_point`` must be :func:`weight_qparams` of ``w`` (as the parametrization
    computes them): a symmetric scale then covers every value, which the fast path relies on.
    """
    blocks = weight_blocks(w, granularity, group_size)
    if symmetric:  # the scale covers each block's own absolute maximum
        return fake_quantize_symmetric(blocks, scale.unsqueeze(-1)).reshape(w.shape)
    qmin, qmax = quant_range(bits, symmetric)
    out = fake_quantize(blocks, scale.unsqueeze(-1), zero_point.unsqueeze(-1), qmin, qmax)
    return out.reshape(w.shape)


def dynamic_qparams(x: Tensor, dims: tuple[int, ...], symmetric: bool = True) -> tuple[Tensor, Tensor]:
    """Int8 scale and zero point of ``x`` reduced over ``dims`` (kept), as a dynamic kernel computes them."""
    x = x.detach()
    return qparams_from_range(x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True), 8, symmetric)


def pack_int4(codes: Tensor) -> Tensor:
    """Pack int4 codes (int8 tensor, values in [-8, 7]) two per byte, low nibble first.

    An odd count gets one padding nibble. Returns a flat uint8 tensor of ``ceil(n / 2)`` bytes.

    Example:
        >>> unpack_int4(pack_int4(torch.tensor([-8, 7, 3], dtype=torch.int8)), 3).tolist()
        [-8, 7, 3]
    """
    return pack_codes((codes.reshape(-1).to(torch.int16) + 8).to(torch.uint8), 4)


def unpack_int4(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_int4`: flat int8 codes of length ``numel``."""
    return (unpack_codes(packed, 4, numel).to(torch.int16) - 8).to(torch.int8)
