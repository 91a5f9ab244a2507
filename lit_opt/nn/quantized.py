"""Inference modules that :func:`lit_opt.load` builds from int8/int4 codes.

Three kernels, chosen per model at load time:

- ``"reference"``: dequantizes the codes to fp32 once and fake-quantizes activations with the
  very functions used in training, so the loaded model reproduces the QAT model bit for bit.
- ``"int8"``: integer matrix products (``torch._int_mm``) on dynamically quantized int8
  activations, int32 accumulation, then one rescale (symmetric codes only).
- ``"bf16"``: codes dequantized once to bf16 weights, activations in bf16; on CPUs with AMX (and
  on GPUs) the fastest path we measured, while the file keeps int8/int4 bytes.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_opt.functional.quantize import (
    dequantize,
    dequantize_weight,
    dynamic_qparams,
    quant_range,
    weight_blocks,
)
from lit_opt.nn.activation_quantizer import ActivationQuantizer

KERNELS: tuple[str, ...] = ("reference", "int8", "bf16")


class QuantizedLinear(nn.Module):
    """A Linear layer holding int8 weight codes (int4 codes unpacked to int8) and their scales.

    Args:
        codes: int8 codes shaped like the weight ``(out, in)``.
        scale, zero_point: ``(C, G)`` block parameters (see :mod:`lit_opt.functional.quantize`).
        bias: float bias or None.
        granularity, group_size: how the blocks cover the weight.
        kernel: ``"reference"``, ``"int8"`` or ``"bf16"``.
        input_quantizer: the activation quantizer: applied as trained by the reference and int8
            kernels; the bf16 kernel applies static ranges (their clipping matters) and skips
            dynamic per-row rounding (noise below bf16's own, at a cost that would double the layer).

    Example::

        >>> codes = torch.tensor([[127, -64]], dtype=torch.int8)
        >>> layer = QuantizedLinear(codes, torch.tensor([[0.01]]), torch.zeros(1, 1), None, "per_channel")
        >>> layer(torch.tensor([[1.0, 1.0]]))
        tensor([[0.6300]])
    """

    codes: Tensor
    scale: Tensor
    zero_point: Tensor
    weight: Tensor
    codes_t: Tensor
    channel_scale: Tensor
    input_quantizer: ActivationQuantizer | None

    def __init__(
        self,
        codes: Tensor,
        scale: Tensor,
        zero_point: Tensor,
        bias: Tensor | None,
        granularity: str,
        group_size: int | None = None,
        kernel: str = "reference",
        input_quantizer: ActivationQuantizer | None = None,
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.granularity, self.group_size, self.kernel = granularity, group_size, kernel
        self.register_buffer("codes", codes.to(torch.int8))
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", zero_point.float())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.input_quantizer = input_quantizer
        weight = dequantize_weight(self.codes, self.scale, self.zero_point, granularity, group_size)
        if kernel == "int8":
            self._check_int8()
            self.register_buffer(
                "codes_t", self.codes.t().contiguous().t(), persistent=False
            )  # (out, in), column-major
            self.register_buffer("channel_scale", self.scale.reshape(1, -1), persistent=False)  # (1, out)
        elif kernel == "bf16":
            self.register_buffer("weight", weight.to(torch.bfloat16), persistent=False)
        else:
            self.register_buffer("weight", weight, persistent=False)

    def _check_int8(self) -> None:
        quantizer = self.input_quantizer
        problems = []
        if self.granularity == "per_group":
            problems.append("per_group weights (the integer product needs one scale per output channel)")
        if bool(self.zero_point.any()):
            problems.append("asymmetric weights")
        if quantizer is None or not quantizer.symmetric:
            problems.append("unquantized or asymmetric activations")
        if problems:
            raise ValueError(
                f"kernel='int8' cannot run a layer with {', '.join(problems)}. "
                "HINT: use kernel='bf16' or kernel='reference' for this artifact."
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel == "int8":
            return self._int8_forward(x)
        quantizer = self.input_quantizer
        if quantizer is not None and (self.kernel == "reference" or quantizer.mode == "static"):
            x = quantizer(x)
        return F.linear(
            x.to(self.weight.dtype),
            self.weight,
            None if self.bias is None else self.bias.to(self.weight.dtype),
        )

    def _int8_forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (M, in)
        quantizer = cast(ActivationQuantizer, self.input_quantizer)  # checked by _check_int8
        if quantizer.mode == "static":  # symmetric: zero point 0, values may clip
            x_scale = quantizer.scale  # scalar
            x_codes = torch.round(rows / x_scale).clamp_(*quant_range(8, True)).to(torch.int8)
        else:  # the row's own range: nothing clips
            x_scale = dynamic_qparams(rows, (-1,), symmetric=True)[0]  # (M, 1)
            x_codes = torch.round(rows / x_scale).to(torch.int8)
        acc = torch._int_mm(x_codes, self.codes_t.t())  # (M, out) int32, exact
        out = torch.mul(acc, x_scale).mul_(self.channel_scale)  # (M, out) float
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


class QuantizedEmbedding(nn.Module):
    """An Embedding holding int8 codes; looked-up rows are dequantized on the fly.

    With ``remap`` (a pruned vocabulary, see :class:`~lit_opt.nn.RemappedEmbedding`) token ids
    are first mapped to the compact rows.

    The dequantization is elementwise, so each row equals the fake-quantized table's row exactly.

    Example::

        >>> emb = QuantizedEmbedding(torch.tensor([[10, -20], [5, 5]], dtype=torch.int8),
        ...                          torch.tensor([[0.1], [1.0]]), torch.zeros(2, 1), "per_channel")
        >>> emb(torch.tensor([0]))
        tensor([[ 1., -2.]])
    """

    codes: Tensor
    scale: Tensor
    zero_point: Tensor
    remap: Tensor | None

    def __init__(
        self,
        codes: Tensor,
        scale: Tensor,
        zero_point: Tensor,
        granularity: str,
        group_size: int | None = None,
        padding_idx: int | None = None,
        out_dtype: torch.dtype = torch.float32,
        remap: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = codes.shape
        self.granularity, self.group_size, self.padding_idx = granularity, group_size, padding_idx
        self.out_dtype = out_dtype
        self.register_buffer("codes", codes.to(torch.int8))
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", zero_point.float())
        self.register_buffer("remap", None if remap is None else remap.to(torch.int32))

    @property
    def weight(self) -> Tensor:
        """The dequantized table (for code that reads ``embedding.weight``, e.g. its dtype)."""
        table = dequantize_weight(self.codes, self.scale, self.zero_point, self.granularity, self.group_size)
        return table.to(self.out_dtype)

    def forward(self, ids: Tensor) -> Tensor:
        if self.remap is not None:  # a pruned vocabulary: original ids -> compact rows
            ids = self.remap[ids]
        groups = weight_blocks(self.codes, self.granularity, self.group_size).shape[1]
        rows = F.embedding(ids, self.codes).reshape(*ids.shape, groups, -1)  # (..., G, g)
        if self.granularity == "per_tensor":
            scale, zero = self.scale.reshape(1), self.zero_point.reshape(1)
        else:
            scale, zero = (
                F.embedding(ids, self.scale).unsqueeze(-1),
                F.embedding(ids, self.zero_point).unsqueeze(-1),
            )
        return dequantize(rows, scale, zero).reshape(*ids.shape, self.embedding_dim).to(self.out_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, granularity={self.granularity}"
