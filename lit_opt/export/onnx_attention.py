"""BERT self-attention written as ONNX Runtime's fused ``MultiHeadAttention`` kernel.

ONNX Runtime's transformer optimizer fuses a BERT attention block into one ``Attention`` node only
when its query, key and value projections are float ``MatMul``s. The integer projections of a
quantized model (``MatMulIntegerToFloat``) stop that fusion, and the attention is left as a dozen
primitive nodes per layer: reshapes and transposes of the heads, the scaled scores, the mask, the
softmax, the weighted sum. :func:`fuse_self_attention` swaps such blocks for :class:`OnnxSelfAttention`,
which keeps the projections (integer or not) and writes the rest as one
``com.microsoft::MultiHeadAttention`` node, with the projections' biases folded into it and the
attention mask passed as its additive bias.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertModel
    >>> config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                     intermediate_size=64, attn_implementation="eager")
    >>> model = BertModel(config).eval()
    >>> ids = torch.randint(0, 50, (2, 7))
    >>> before = model(input_ids=ids).last_hidden_state
    >>> fuse_self_attention(model)
    1
    >>> torch.allclose(model(input_ids=ids).last_hidden_state, before, atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_opt.export.onnx_graph import typed


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """An attention mask as the additive bias the scores get: boolean masks (``True`` keeps a key) become
    ``0`` / the dtype's lowest value; additive ones pass through."""
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros((), dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)


def attention_context(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, head_size: int, scale: float
) -> Tensor:
    """``softmax(q k^T * scale + mask) v`` per head of ``head_size``: ``(B, Lq, heads * d)`` queries over
    ``(B, Lk, heads * d)`` keys and values, ``mask`` additive and broadcast to ``(B, heads, Lq, Lk)``."""

    def split(x: Tensor) -> Tensor:  # (B, L, heads * d) -> (B, heads, L, d)
        return x.view(x.shape[0], x.shape[1], -1, head_size).transpose(1, 2)

    scores = split(query) @ split(key).transpose(-1, -2) * scale
    if mask is not None:
        scores = scores + mask
    context = scores.softmax(dim=-1) @ split(value)
    return context.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)


class _MultiHeadAttention(torch.autograd.Function):
    """:func:`attention_context` after the projections' ``bias`` (``3 * heads * d``) is added; one
    ``MultiHeadAttention`` node in the graph."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, mask: Tensor, heads: int, scale: float
    ) -> Tensor:
        q_bias, k_bias, v_bias = bias.chunk(3)
        return attention_context(q + q_bias, k + k_bias, v + v_bias, mask, q.shape[-1] // heads, scale)

    @staticmethod
    def symbolic(g: Any, q: Any, k: Any, v: Any, bias: Any, mask: Any, heads: int, scale: float) -> Any:
        no_padding_mask = g.op("prim::Constant")
        no_padding_mask.setType(torch._C.OptionalType.ofTensor())
        out = g.op(
            "com.microsoft::MultiHeadAttention", q, k, v, bias, no_padding_mask, mask,
            num_heads_i=heads, scale_f=scale,
        )  # fmt: skip
        return typed(out, q, (v.type().varyingSizes() or [None])[-1])


def _take_bias(layer: Any) -> Tensor:
    """``layer``'s bias (zeros when it has none), removed from it: the attention node adds it."""
    bias = getattr(layer, "bias", None)
    out_features = int(layer.out_features)
    layer.bias = None
    return torch.zeros(out_features) if bias is None else bias.detach().float()


class OnnxSelfAttention(nn.Module):
    """A BERT-style self-attention (``query``, ``key``, ``value`` projections) whose attention is one
    ``MultiHeadAttention`` node in the graph; returns ``(context, None)`` as the block it replaces."""

    qkv_bias: Tensor

    def __init__(self, attention: Any) -> None:
        super().__init__()
        self.query: nn.Module
        self.key: nn.Module
        self.value: nn.Module
        self.query, self.key, self.value = attention.query, attention.key, attention.value
        biases = [_take_bias(projection) for projection in (self.query, self.key, self.value)]
        self.register_buffer("qkv_bias", torch.cat(biases))
        self.attention_head_size = int(attention.attention_head_size)
        self.num_attention_heads = int(attention.num_attention_heads)
        self.scaling = float(getattr(attention, "scaling", self.attention_head_size**-0.5))

    def attend(self, queries: Tensor, keys: Tensor, mask: Tensor | None) -> Tensor:
        """The context of ``queries`` (``(B, Lq, hidden)``) over ``keys`` (``(B, Lk, hidden)``)."""
        if mask is None:
            mask = queries.new_zeros(1, 1, queries.shape[1], keys.shape[1])
        mask = additive_mask(mask, torch.float32)
        if mask.shape[-2] != queries.shape[1]:  # one row for every query: MultiHeadAttention's bias shape
            mask = mask.expand(-1, -1, queries.shape[1], -1)
        return _MultiHeadAttention.apply(
            self.query(queries),
            self.key(keys),
            self.value(keys),
            self.qkv_bias,
            mask.float(),
            self.num_attention_heads,
            self.scaling,
        )

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        return self.attend(hidden_states, hidden_states, attention_mask), None


def _is_bert_self_attention(module: nn.Module) -> bool:
    parts = ("query", "key", "value", "attention_head_size", "num_attention_heads")
    return (
        type(module).__name__.endswith("SelfAttention")
        and all(hasattr(module, p) for p in parts)
        and not getattr(module, "is_decoder", False)
        and not getattr(module, "is_causal", False)
    )


def fuse_self_attention(model: nn.Module, leave_float: bool = False) -> int:
    """Swap BERT-style encoder self-attentions of ``model`` for :class:`OnnxSelfAttention`; returns how
    many were swapped. Decoder and causal attentions are left alone, and with ``leave_float`` so are
    those whose projections are all float ``nn.Linear`` (ONNX Runtime's own ``Attention`` fusion, one
    matrix product for query, key and value, handles them when every layer keeps the config's heads)."""
    swapped = 0
    for parent in list(model.modules()):
        child = getattr(parent, "self", None)
        if not isinstance(child, nn.Module) or not _is_bert_self_attention(child):
            continue
        if leave_float and all(isinstance(getattr(child, p), nn.Linear) for p in ("query", "key", "value")):
            continue
        parent.self = OnnxSelfAttention(child)
        swapped += 1
    return swapped
