"""Stand-ins for the loaded model's quantized modules that trace to ONNX integer operators.

:func:`lit_opt.export_onnx` swaps each :class:`~lit_opt.nn.QuantizedLinear` and
:class:`~lit_opt.nn.QuantizedEmbedding` of a model loaded with ``kernel="reference"`` for one of
these, then traces the model. Their eager forward computes what the ONNX graph computes (so a test
can compare the two), and their ``symbolic`` writes the graph:

- :class:`OnnxInt8Linear`: the artifact's int8 codes (transposed to ``(in, out)``) and per-channel
  scales as initializers. The input is quantized as the layer was trained: dynamic activations
  symmetric int8 per row (``|x|``'s row maximum / 127, the codes shifted to uint8, the fast
  u8 x s8 path of the integer kernels), calibrated static ones with the trained range
  (``QuantizeLinear``); then ONNX Runtime's ``MatMulIntegerToFloat`` multiplies the codes and scales the
  result per row and column (the bias is added after it, so the kernel does not scale it, or by the
  attention node that takes the layer over: :mod:`lit_opt.export.onnx_attention`). The
  same codes as the reference kernel, so the same logits up to float summation order, whatever
  else is in the batch. ``dynamic="per_tensor"`` writes ONNX's ``DynamicQuantizeLinear`` (uint8, one
  range for the whole batch) -> ``MatMulInteger`` instead, which ONNX Runtime fuses into one kernel:
  faster at large batches, but a row's result then depends on the rows batched with it. A layer
  trained with weight-only QAT (no activation quantizer) gets dynamic activations too: the integer
  product needs integer inputs.
- :class:`OnnxQuantizedEmbedding`: ``Gather`` over the stored codes (int4 kept packed two per
  byte and unpacked after the gather, so the file holds half a byte per weight), then the rows'
  scales: the table is never dequantized as a whole.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_opt.functional.quantize import EPS, dynamic_qparams, pack_int4, quant_range, quantize, weight_blocks
from lit_opt.nn.activation_quantizer import ActivationQuantizer
from lit_opt.nn.quantized import QuantizedEmbedding, QuantizedLinear

FLOAT = 1  # onnx.TensorProto.FLOAT
#: How a layer trained with dynamic activations quantizes them in the graph: symmetric int8 per row (as
#: trained), or ONNX's ``DynamicQuantizeLinear`` (uint8, one range for the whole batch).
DYNAMIC_ACTIVATIONS = ("per_row", "per_tensor")


def _const(g: Any, value: float | int, dtype: torch.dtype = torch.float32) -> Any:
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def _dynamic_uint8(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ONNX ``DynamicQuantizeLinear``: uint8 codes (as float), scale and zero point of the whole tensor."""
    low, high = x.min().clamp(max=0), x.max().clamp(min=0)
    scale = (high - low) / 255
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero_point = torch.round(-low / scale).clamp(0, 255)
    return torch.round(x / scale).add(zero_point).clamp(0, 255), scale, zero_point


def typed(value: Any, like: Any, last: int | None) -> Any:
    """``value`` (an exporter graph value of an ONNX Runtime operator, whose shape the exporter cannot infer)
    typed as float, ``like``'s shape with the last dimension ``last``: no "shape inference ... is missing"
    warning, and the shapes after it stay known."""
    sizes = like.type().varyingSizes()
    if sizes is not None:
        value.setType(like.type().with_dtype(torch.float32).with_sizes([*sizes[:-1], last]))
    return value


def _plus(x: Tensor, bias: Tensor | None) -> Tensor:
    return x if bias is None else x + bias


class _DynamicInt8MatMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, codes_t: Tensor, w_scale: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        q, scale, zero_point = _dynamic_uint8(x.float())
        return _plus((q - zero_point) @ codes_t.float() * (scale * w_scale), bias)

    @staticmethod
    def symbolic(g: Any, x: Any, codes_t: Any, w_scale: Any, bias: Any) -> Any:
        q, scale, zero_point = g.op("DynamicQuantizeLinear", x, outputs=3)
        acc = g.op("MatMulInteger", q, codes_t, zero_point)
        out = g.op("Mul", g.op("Cast", acc, to_i=FLOAT), g.op("Mul", scale, w_scale))
        return out if bias is None else g.op("Add", out, bias)


class _RowInt8MatMul(torch.autograd.Function):
    """Per-row symmetric int8 activations, as ``QATCallback(activations="dynamic")`` trained them."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, codes_t: Tensor, w_scale: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        x = x.float()
        scale, zero = dynamic_qparams(x, (-1,), symmetric=True)
        return _plus(
            quantize(x, scale, zero, *quant_range(8, True)) @ codes_t.float() * scale * w_scale, bias
        )

    @staticmethod
    def symbolic(g: Any, x: Any, codes_t: Any, w_scale: Any, bias: Any) -> Any:
        amax = g.op("ReduceMax", g.op("Abs", x), axes_i=[-1], keepdims_i=1)
        scale = g.op("Max", g.op("Div", amax, _const(g, 127.0)), _const(g, EPS))
        # int8 codes shifted to uint8: the integer kernels' fast u8 x s8 path
        zero = _const(g, 128, torch.uint8)
        q = g.op("QuantizeLinear", g.op("Div", x, scale), _const(g, 1.0), zero)
        # ONNX Runtime's integer product scaled per row and per column in one kernel (it would scale a bias
        # too, so the bias is added after)
        out = g.op("com.microsoft::MatMulIntegerToFloat", q, codes_t, scale, w_scale, zero)
        out = typed(out, x, codes_t.type().sizes()[1])
        return out if bias is None else g.op("Add", out, bias)


class _StaticInt8MatMul(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        codes_t: Tensor,
        w_scale: Tensor,
        bias: Tensor | None,
        x_scale: Tensor,
        x_zero: Tensor,
        low: Tensor,
        high: Tensor,
    ) -> Tensor:
        q = torch.round(x.float().clamp(low, high) / x_scale).add(x_zero.float()).clamp(0, 255)
        return _plus((q - x_zero.float()) @ codes_t.float() * (x_scale * w_scale), bias)

    @staticmethod
    def symbolic(
        g: Any, x: Any, codes_t: Any, w_scale: Any, bias: Any, x_scale: Any, x_zero: Any, low: Any, high: Any
    ) -> Any:
        q = g.op("QuantizeLinear", g.op("Clip", x, low, high), x_scale, x_zero)
        operands = [q, codes_t, x_scale, w_scale, x_zero, _const(g, 0, torch.int8)]
        out = g.op("com.microsoft::MatMulIntegerToFloat", *operands, *([] if bias is None else [bias]))
        return typed(out, x, codes_t.type().sizes()[1])


class OnnxInt8Linear(nn.Module):
    """A :class:`~lit_opt.nn.QuantizedLinear` as ONNX integer operators (see the module docstring).

    Example::

        >>> codes = torch.tensor([[127, -64]], dtype=torch.int8)
        >>> layer = QuantizedLinear(codes, torch.tensor([[0.01]]), torch.zeros(1, 1), None, "per_channel")
        >>> OnnxInt8Linear.from_quantized(layer, "fc").codes_t.tolist()
        [[127], [-64]]
    """

    codes_t: Tensor
    weight_scale: Tensor
    bias: Tensor | None
    input_scale: Tensor
    input_zero_point: Tensor
    clip_low: Tensor
    clip_high: Tensor

    def __init__(
        self,
        codes: Tensor,
        scale: Tensor,
        bias: Tensor | None,
        quantizer: ActivationQuantizer | None,
        dynamic: str = "per_row",
    ) -> None:
        super().__init__()
        self.per_row = dynamic == "per_row"
        self.out_features, self.in_features = codes.shape
        self.register_buffer("codes_t", codes.t().contiguous())  # (in, out) int8: MatMulInteger's B
        self.register_buffer("weight_scale", scale.reshape(-1).float().expand(self.out_features).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.static = quantizer is not None and quantizer.mode == "static"
        if self.static:
            q = quantizer  # a trained range: clip to the codes the reference kernel uses
            qmin, qmax = quant_range(8, q.symmetric)  # type: ignore[union-attr]
            x_scale, x_zero = q.scale.reshape(()).float(), q.zero_point.reshape(()).float()  # type: ignore[union-attr]
            self.register_buffer("input_scale", x_scale.clone())
            self.register_buffer("input_zero_point", (x_zero + 128).to(torch.uint8))  # codes shifted to uint8
            self.register_buffer("clip_low", (qmin - x_zero) * x_scale)
            self.register_buffer("clip_high", (qmax - x_zero) * x_scale)

    @classmethod
    def from_quantized(cls, layer: QuantizedLinear, name: str, dynamic: str = "per_row") -> OnnxInt8Linear:
        """The stand-in for ``layer`` (named ``name`` in errors); ``dynamic`` as in :data:`DYNAMIC_ACTIVATIONS`.

        Raises:
            ValueError: per-group or asymmetric weights, or dynamic asymmetric activations.
        """
        why = []
        if layer.granularity == "per_group":
            why.append("per_group weights (MatMulInteger rescales whole output channels)")
        if bool(layer.zero_point.any()):
            why.append("asymmetric weights")
        if why:
            raise ValueError(
                f"export_onnx cannot express layer {name!r}: {', '.join(why)}. HINT: train it with "
                "QATCallback(granularity='per_channel', symmetric=True), or exclude it from quantization."
            )
        return cls(layer.codes, layer.scale, layer.bias, layer.input_quantizer, dynamic)

    def forward(self, x: Tensor) -> Tensor:
        if self.static:
            return _StaticInt8MatMul.apply(
                x,
                self.codes_t,
                self.weight_scale,
                self.bias,
                self.input_scale,
                self.input_zero_point,
                self.clip_low,
                self.clip_high,
            )
        if self.per_row:
            return _RowInt8MatMul.apply(x, self.codes_t, self.weight_scale, self.bias)
        return _DynamicInt8MatMul.apply(x, self.codes_t, self.weight_scale, self.bias)


class OnnxQuantizedEmbedding(nn.Module):
    """A :class:`~lit_opt.nn.QuantizedEmbedding` as ``Gather`` over its codes (int4 stays packed).

    Example::

        >>> codes = torch.tensor([[1, -2], [3, 4]], dtype=torch.int8)
        >>> emb = QuantizedEmbedding(codes, torch.tensor([[0.5], [1.0]]), torch.zeros(2, 1), "per_channel")
        >>> OnnxQuantizedEmbedding.from_quantized(emb, bits=4)(torch.tensor([0])).tolist()
        [[0.5, -1.0]]
    """

    codes: Tensor
    scale: Tensor
    zero_point: Tensor
    remap: Tensor | None

    def __init__(self, layer: QuantizedEmbedding, bits: int) -> None:
        super().__init__()
        rows, dim = layer.codes.shape
        self.bits, self.embedding_dim = bits, dim
        self.groups = weight_blocks(layer.codes, layer.granularity, layer.group_size).shape[1]
        if bits == 4:  # (rows, dim / 2) uint8: entry 2i in the low nibble, 2i + 1 in the high one
            self.register_buffer("codes", pack_int4(layer.codes).reshape(rows, dim // 2))
        else:
            self.register_buffer("codes", layer.codes.clone())
        scale, zero = layer.scale, layer.zero_point  # (C, G): C is 1 (per_tensor) or rows
        self.register_buffer("scale", scale.expand(rows, self.groups).unsqueeze(-1).clone())  # (rows, G, 1)
        self.register_buffer("zero_point", zero.expand(rows, self.groups).unsqueeze(-1).clone())
        self.register_buffer("remap", None if layer.remap is None else layer.remap.to(torch.int64))

    @classmethod
    def from_quantized(cls, layer: QuantizedEmbedding, bits: int) -> OnnxQuantizedEmbedding:
        """The stand-in for ``layer``; ``bits=4`` packs codes in [-8, 7] two per byte."""
        if bits == 4 and (
            layer.embedding_dim % 2 or int(layer.codes.min()) < -8 or int(layer.codes.max()) > 7
        ):
            bits = 8
        return cls(layer, bits)

    def forward(self, ids: Tensor) -> Tensor:
        if self.remap is not None:
            ids = F.embedding(ids, self.remap.unsqueeze(-1)).squeeze(-1)  # original ids -> compact rows
        rows = F.embedding(ids, self.codes).float()  # (..., dim) or (..., dim / 2) packed
        if self.bits == 4:
            high = torch.floor(rows / 16)
            rows = torch.stack((rows - 16 * high, high), dim=-1).reshape(*ids.shape, self.embedding_dim) - 8
        rows = rows.reshape(*ids.shape, self.groups, -1)  # (..., G, g)
        scale = F.embedding(ids, self.scale.squeeze(-1)).unsqueeze(-1)  # (..., G, 1)
        zero = F.embedding(ids, self.zero_point.squeeze(-1)).unsqueeze(-1)
        return ((rows - zero) * scale).reshape(*ids.shape, self.embedding_dim)
