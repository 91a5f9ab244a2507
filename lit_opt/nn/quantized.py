"""Inference modules that :func:`lit_opt.load` builds from int8/int4 codes.

Four kernels, chosen per model at load time:

- ``"reference"``: dequantizes the codes to fp32 once and fake-quantizes activations with the
  very functions used in training, so the loaded model reproduces the QAT model bit for bit.
- ``"int8"``: integer matrix products (``torch._int_mm``) on dynamically quantized int8
  activations, int32 accumulation, then one rescale (symmetric codes only).
- ``"bf16"``: codes dequantized once to bf16 weights, activations in bf16; on CPUs with AMX (and
  on GPUs) the fastest path we measured, while the file keeps int8/int4 bytes.
- ``"packed_int8"``: the codes prepacked for PyTorch's quantized CPU engine (fbgemm/x86); on x86
  CPUs the fastest path we measured at small batches (decode), and on AVX2 CPUs at every batch, where
  bf16 is emulated and ``torch._int_mm`` has no fast kernel. On a CPU with VNNI the engine reproduces
  training's activation grid in one call (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``,
  uint8 codes, fp32 out): calibrated static activations at their scale; dynamic symmetric ones by
  dividing each row by its own scale, quantizing at scale 1 and multiplying the output rows back.
  Otherwise (no VNNI, or no activation quantizer) ``quantized::linear_dynamic`` quantizes activations
  per tensor to 7 bits on the fly.
- ``"packed_int4"``: int4 per-group codes (groups of 32-256 inputs) packed for PyTorch's CPU weight-only
  int4 matmul (``aten._weight_int4pack_mm_for_cpu``), activations in bf16, outputs in the input's
  dtype; a large int4 LM head reads a quarter of bf16's bytes per decoded token.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_opt.functional.quantize import (
    EPS,
    dequantize,
    dequantize_weight,
    dynamic_qparams,
    quant_range,
    weight_blocks,
)
from lit_opt.nn.activation_quantizer import ActivationQuantizer

KERNELS: tuple[str, ...] = ("reference", "int8", "bf16", "packed_int8", "packed_int4")
#: Group sizes the CPU int4 matmul takes.
INT4_GROUP_SIZES = (32, 64, 128, 256)


def packed_int8_available() -> bool:
    """Whether this PyTorch build can run :class:`QuantizedLinear` with ``kernel="packed_int8"``."""
    engines = getattr(torch.backends.quantized, "supported_engines", [])
    return any(engine in engines for engine in ("x86", "fbgemm")) and hasattr(
        torch.ops.quantized, "linear_dynamic"
    )


def kernel_problems(
    kernel: str,
    granularity: str,
    zero_point: Tensor,
    quantizer: ActivationQuantizer | None,
    group_size: int | None = None,
    codes: Tensor | None = None,
) -> list[str]:
    """Why ``kernel`` cannot run a layer quantized this way (empty when it can)."""
    problems = []
    if kernel in ("int8", "packed_int8"):
        if granularity == "per_group":
            problems.append("per_group weights (the integer product needs one scale per output channel)")
        if bool(zero_point.any()):
            problems.append("asymmetric weights")
    if kernel == "int8" and (quantizer is None or not quantizer.symmetric):
        problems.append("unquantized or asymmetric activations")
    if kernel == "packed_int8" and not packed_int8_available():
        problems.append("a PyTorch build without the x86/fbgemm quantized engine")
    if kernel == "packed_int4":
        if granularity != "per_group" or group_size not in INT4_GROUP_SIZES:
            problems.append(
                f"{granularity} weights (it takes per_group weights, groups of {INT4_GROUP_SIZES})"
            )
        if codes is not None and (int(codes.min()) < -8 or int(codes.max()) > 7 or len(codes) % 16):
            problems.append("codes outside int4, or outputs not a multiple of 16")
        if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
            problems.append("a PyTorch build without the CPU int4 matmul")
    return problems


class QuantizedLinear(nn.Module):
    """A Linear layer holding int8 weight codes (int4 codes unpacked to int8) and their scales.

    Args:
        codes: int8 codes shaped like the weight ``(out, in)``.
        scale, zero_point: ``(C, G)`` block parameters (see :mod:`lit_opt.functional.quantize`).
        bias: float bias or None.
        granularity, group_size: how the blocks cover the weight.
        kernel: one of :data:`KERNELS`.
        input_quantizer: the activation quantizer: applied as trained by the reference and int8
            kernels; the bf16 and packed_int8 kernels apply static ranges (their clipping matters) and
            skip dynamic per-row rounding (bf16: noise below bf16's own, at a cost that would double
            the layer; packed_int8 quantizes activations per tensor itself).

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
        problems = kernel_problems(
            kernel, granularity, self.zero_point, input_quantizer, group_size, self.codes
        )
        if problems:
            raise ValueError(
                f"kernel={kernel!r} cannot run a layer with {', '.join(problems)}. "
                "HINT: use kernel='auto', 'bf16' or 'reference' for this artifact."
            )
        if kernel == "int8":
            self.register_buffer(
                "codes_t", self.codes.t().contiguous().t(), persistent=False
            )  # (out, in), column-major
            self.register_buffer("channel_scale", self.scale.reshape(1, -1), persistent=False)  # (1, out)
        elif kernel == "bf16":
            self.register_buffer("weight", weight.to(torch.bfloat16), persistent=False)
        elif kernel == "packed_int8":  # the bias is added after the engine's call (rows are rescaled first)
            self._packed = _prepack(self.codes, self.scale, None)
        elif kernel == "packed_int4":  # w = (q - 8) * scale + zero with q = code + 8 in [0, 15]
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.codes.int() + 8, 1)
            scales_zeros = torch.stack([self.scale.t(), (-self.zero_point * self.scale).t()], dim=-1)
            self.register_buffer("int4_packed", packed, persistent=False)
            self.register_buffer("int4_scales_zeros", scales_zeros.to(torch.bfloat16), persistent=False)
        else:
            self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel == "int8":
            return self._int8_forward(x)
        if self.kernel == "packed_int4":
            return self._int4_forward(x)
        quantizer = self.input_quantizer
        if self.kernel == "packed_int8":
            return self._packed_forward(x)
        if quantizer is not None and (self.kernel == "reference" or quantizer.mode == "static"):
            x = quantizer(x)
        out = F.linear(
            x.to(self.weight.dtype),
            self.weight,
            None if self.bias is None else self.bias.to(self.weight.dtype),
        )
        return out.to(x.dtype)  # a bf16 layer in an fp32 model (kernel="auto") hands fp32 on

    def _packed_forward(self, x: Tensor) -> Tensor:
        """The ``packed_int8`` kernel: training's activation grid where the engine reproduces it exactly."""
        quantizer, rows = self.input_quantizer, x.float()
        if quantizer is not None and _exact_packed_grid(quantizer):
            if quantizer.mode == "static":  # the calibrated scale: no range to compute
                out = _engine_on_grid(rows, float(quantizer.scale), self._packed)
            else:  # each row at its own scale: rows divided by it sit on the unit grid
                # dynamic_qparams' symmetric scale in three operations (max |x| is the inf-norm) (decode runs this per token and layer)
                amax = torch.linalg.vector_norm(
                    rows, float("inf"), dim=quantizer.reduce_dims(rows), keepdim=True
                )
                row_scale = amax.div_(quant_range(8, True)[1]).clamp_(min=EPS)
                out = _engine_on_grid(rows / row_scale, 1.0, self._packed).mul_(row_scale)
        else:
            if quantizer is not None and quantizer.mode == "static":
                rows = quantizer(rows)
            # reduce_range: 7-bit activations, as x86 engines need to avoid saturating AVX2 products
            out = torch.ops.quantized.linear_dynamic(rows, self._packed, True)
        if self.bias is not None:
            out += self.bias
        return out.to(x.dtype)

    def _int4_forward(self, x: Tensor) -> Tensor:
        """bf16 rows times the packed int4 weight (weight-only: activations are not quantized)."""
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.int4_packed, self.group_size, self.int4_scales_zeros
        )
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _int8_forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (M, in)
        quantizer = cast(ActivationQuantizer, self.input_quantizer)  # checked by kernel_problems
        if quantizer.mode == "static":  # symmetric: zero point 0, values may clip
            x_scale = quantizer.scale  # scalar
            x_codes = torch.round(rows / x_scale).clamp_(*quant_range(8, True)).to(torch.int8)
        else:  # the row's own range: nothing clips
            x_scale = dynamic_qparams(rows, (-1,), symmetric=True)[0]  # (M, 1)
            x_codes = torch.round(rows / x_scale).to(torch.int8)
        if x_codes.is_cuda:
            acc = _cuda_int_mm(x_codes, self.codes)
        else:
            acc = torch._int_mm(x_codes, self.codes_t.t())  # (M, out) int32, exact
        out = torch.mul(acc, x_scale).mul_(self.channel_scale)  # (M, out) float
        if self.bias is not None:
            out += self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


@functools.cache
def vnni_available() -> bool:
    """Whether this CPU multiplies uint8 by int8 without 16-bit saturation (AVX-512 VNNI, AVX-VNNI or AMX).

    Without it, x86 engines saturate full-range uint8 activations, which is why the dynamic path uses
    7-bit activations (``reduce_range``) and the static path (8-bit, calibrated) needs this.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _exact_packed_grid(quantizer: ActivationQuantizer) -> bool:
    """Whether the ``packed_int8`` kernel reproduces ``quantizer``'s int8 grid exactly: symmetric, enabled,
    dynamic or calibrated static, on a CPU whose quantized engine multiplies full-range uint8 (VNNI)."""
    return (
        quantizer.symmetric
        and bool(quantizer.enabled)
        and (quantizer.mode == "dynamic" or bool(quantizer.initialized))
        and vnni_available()
        and hasattr(torch.ops.quantized, "linear_with_input_q_dq_qweight_dq_output_fp32")
    )


def _engine_on_grid(rows: Tensor, x_scale: float, packed: Any) -> Tensor:
    """``rows`` quantized at ``x_scale`` (uint8, zero point 128: the symmetric int8 grid) times the packed
    int8 weight, fp32 out, in one quantized-engine call; rows of any leading shape."""
    flat = rows.reshape(-1, rows.shape[-1])
    out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(flat, x_scale, 128, packed)
    return out.reshape(*rows.shape[:-1], -1)


def _cuda_int_mm(x_codes: Tensor, codes: Tensor) -> Tensor:
    """``x_codes @ codes.T`` in int32 through cuBLASLt, which takes more than 16 rows, both inner and output
    sizes a multiple of 8, and the weight column-major: zero rows and columns pad the operands, then are cut.

    Example (on a GPU)::

        >>> _cuda_int_mm(torch.ones(1, 3, dtype=torch.int8, device="cuda"),
        ...              torch.ones(2, 3, dtype=torch.int8, device="cuda")).tolist()  # doctest: +SKIP
        [[3, 3]]
    """
    rows, inner = x_codes.shape
    outputs = codes.shape[0]
    pad_inner, pad_out = -inner % 8, -outputs % 8
    if pad_inner or rows <= 16:
        x_codes = F.pad(x_codes, (0, pad_inner, 0, max(17 - rows, 0)))  # (max(M, 17), in + pad)
    if pad_inner or pad_out:
        codes = F.pad(codes, (0, pad_inner, 0, pad_out))  # (out + pad, in + pad), row-major
    return torch._int_mm(x_codes, codes.t())[:rows, :outputs]


def _prepack(codes: Tensor, scale: Tensor, bias: Tensor | None) -> Any:
    """Symmetric int8 codes and their ``(C, 1)`` or ``(1, 1)`` scales as the quantized engine's packed weight."""
    with warnings.catch_warnings():  # quantized tensors are deprecated; the packed result is not one
        warnings.simplefilter("ignore", UserWarning)
        if scale.numel() == 1:
            weight = torch._make_per_tensor_quantized_tensor(codes, float(scale), 0)
        else:
            weight = torch._make_per_channel_quantized_tensor(
                codes, scale.reshape(-1).double(), torch.zeros(len(codes), dtype=torch.long), 0
            )
    return torch.ops.quantized.linear_prepack(weight, None if bias is None else bias.detach().float())


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
