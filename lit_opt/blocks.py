"""Find a transformer's MLP and attention blocks from module shapes and head sizes, not from names.

Structured pruning prunes these blocks' units together, and export removes them physically; both
learn the blocks from :func:`find_blocks`. The rules (BERT, Llama/Qwen2/Mistral and GPT-2 are
tested cases):

- **Attention**: a module with a head size (``head_dim`` or ``attention_head_size``, else its
  hidden size over ``num_heads``/``num_attention_heads``) whose weight children (``nn.Linear`` or
  transformers' ``Conv1D``) are three input projections from the hidden size, query first with
  ``heads x head_dim`` outputs and key then value with ``kv_heads x head_dim`` each (grouped-query
  attention when ``kv_heads < heads``), or one fused projection with ``3 x heads x head_dim``
  outputs (query, key, value sections). The output projection takes ``heads x head_dim`` inputs to
  the hidden size: a child of the module, or else the first such layer after it in its parent.
  A unit is one key/value head with the query heads that share it.
- **MLP**: a module whose weight layers (children and grandchildren, attention blocks aside) are one
  or two producers from the hidden size ``H`` to a width ``I != H`` (two of the same shape: a gated
  MLP, ``act(gate(x)) * up(x)``) then one consumer from ``I`` back to ``H``, with an activation
  that maps 0 to 0: the model config's ``hidden_act``/``activation_function``, or, without a
  config, the block's other modules, all in :data:`ZERO_PRESERVING` (at least one). A unit is one
  of the ``I`` intermediate features.

Example::

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                      num_attention_heads=4, num_key_value_heads=2, vocab_size=50)
    >>> [(b.name, b.units) for b in find_blocks(LlamaForCausalLM(config))]
    [('model.layers.0.self_attn', 2), ('model.layers.0.mlp', 64)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lit_opt.module_types import in_features, layout_of, out_features

__all__ = ["ZERO_PRESERVING", "Block", "Slice", "find_blocks", "head_attributes"]

#: modules that map 0 to 0 (activations, dropout, identity): a zero unit stays zero through them
ZERO_PRESERVING: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.GELU,
    nn.Tanh,
    nn.SiLU,
    nn.LeakyReLU,
    nn.Dropout,
    nn.Identity,
    nn.Hardtanh,
    nn.ReLU6,
)


@dataclass(frozen=True)
class Slice:
    """Where a block's units lie in one layer.

    ``module`` is a qualified name; ``role`` is ``"producer"`` (units are its output rows, with its
    bias) or ``"consumer"`` (units are its input columns); ``sections`` > 1 for a fused projection
    whose outputs are ``sections`` consecutive runs of the units (query, key, value).
    """

    module: str
    role: str
    sections: int = 1


@dataclass
class Block:
    """An MLP or attention block: its ``units`` and the slices of every layer they span."""

    name: str
    kind: str  # "mlp" or "attention"
    units: int
    slices: list[Slice]
    #: attention: query heads per unit (GQA group), head size, and whether the value rows decide
    group: int = 1
    head_dim: int = 1
    value: str | None = None  # attention: the layer whose rows hold the values (None: fused, section 2)
    gated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def producers(self) -> list[Slice]:
        return [s for s in self.slices if s.role == "producer"]

    @property
    def consumer(self) -> Slice:
        return next(s for s in self.slices if s.role == "consumer")


def _weight_children(module: nn.Module, depth: int = 1) -> list[tuple[str, nn.Module]]:
    """Linear/Conv1D layers under ``module`` down to ``depth`` levels, in registration order."""
    found = []
    for name, child in module.named_children():
        layout = layout_of(child)
        if isinstance(child, nn.Linear) or (layout is not None and layout.transposed):
            found.append((name, child))
        elif depth > 1:
            found.extend((f"{name}.{n}", m) for n, m in _weight_children(child, depth - 1))
    return found


def _int_attr(obj: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _head_dim(module: nn.Module, hidden: int) -> int | None:
    size = _int_attr(module, "head_dim", "attention_head_size")
    if size is not None:
        return size
    heads = _int_attr(module, "num_heads", "num_attention_heads")
    if heads is None:
        heads = _int_attr(getattr(module, "config", None), "num_attention_heads")
    return hidden // heads if heads and hidden % heads == 0 else None


def _attention(model: nn.Module, name: str, module: nn.Module) -> Block | None:
    children = _weight_children(module)
    if not children:
        return None
    hidden = in_features(children[0][1])
    head_dim = _head_dim(module, hidden)
    if head_dim is None:
        return None
    inputs = [(n, m) for n, m in children if in_features(m) == hidden]
    prefix = f"{name}." if name else ""
    if len(inputs) >= 3 and all(out_features(m) % head_dim == 0 for _, m in inputs[:3]):
        (q_name, q), (k_name, k), (v_name, v) = inputs[:3]
        heads, kv_heads = out_features(q) // head_dim, out_features(k) // head_dim
        if out_features(k) != out_features(v) or heads % kv_heads:
            raise ValueError(
                f"attention block {name!r} has {heads} query heads and {kv_heads} key/value heads of size "
                f"{head_dim}: a query head count that is not a multiple of the key/value head count breaks "
                "grouped-query attention. HINT: exclude the block from structure='heads'."
            )
        producers = [Slice(prefix + n, "producer") for n in (q_name, k_name, v_name)]
        value: str | None = prefix + v_name
        rest = children[children.index(inputs[2]) + 1 :]
    elif (
        len(children) == 2
        and in_features(children[0][1]) == hidden
        and out_features(children[0][1]) == 3 * in_features(children[1][1])
        and in_features(children[1][1]) % head_dim == 0
    ):
        heads = kv_heads = in_features(children[1][1]) // head_dim
        producers, value = [Slice(prefix + children[0][0], "producer", 3)], None
        rest = children[1:]
    else:
        return None
    width = heads * head_dim
    output = next(
        (prefix + n for n, m in rest if in_features(m) == width and out_features(m) == hidden), None
    )
    if output is None:  # BERT: the projection lives beside the attention module, in its parent
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        seen_self = False
        for n, m in parent.named_modules():
            if m is module:
                seen_self = True
            elif (
                seen_self
                and not n.startswith(name.rpartition(".")[2] + ".")
                and layout_of(m) is not None
                and (in_features(m), out_features(m)) == (width, hidden)
            ):
                output = f"{parent_name}.{n}" if parent_name else n
                break
    if output is None or kv_heads < 1:
        return None
    slices = [*producers, Slice(output, "consumer")]
    return Block(name, "attention", kv_heads, slices, heads // kv_heads, head_dim, value)


def _zero_preserving(model: nn.Module) -> bool | None:
    """Whether the activation of the (first) model config inside ``model`` maps 0 to 0 (None when no
    config names one)."""
    configs = (getattr(m, "config", None) for m in model.modules())
    acts = (getattr(c, "hidden_act", None) or getattr(c, "activation_function", None) for c in configs)
    act = next((a for a in acts if a is not None), None)
    if not isinstance(act, str):
        return None
    try:
        from transformers.activations import ACT2FN

        return bool(ACT2FN[act](torch.zeros(1)).eq(0).all())
    except (ImportError, KeyError):
        return False


def _leaves_zero_preserving(module: nn.Module) -> bool:
    """Whether ``module``'s leaves other than its weight layers are all zero-preserving (at least one)."""
    leaves = [m for m in module.modules() if not list(m.children()) and layout_of(m) is None]
    return bool(leaves) and all(isinstance(m, ZERO_PRESERVING) for m in leaves)


def _mlp(name: str, module: nn.Module, claimed: set[str], zero_ok: bool | None) -> Block | None:
    if zero_ok is False or (zero_ok is None and not _leaves_zero_preserving(module)):
        return None
    prefix = f"{name}." if name else ""
    layers = [(prefix + n, m) for n, m in _weight_children(module, depth=2) if prefix + n not in claimed]
    if len(layers) not in (2, 3):
        return None
    *producers, (consumer_name, consumer) = layers
    hidden, width = in_features(producers[0][1]), out_features(producers[0][1])
    if (
        width == hidden
        or any((in_features(m), out_features(m)) != (hidden, width) for _, m in producers)
        or (in_features(consumer), out_features(consumer)) != (width, hidden)
    ):
        return None
    slices = [*(Slice(n, "producer") for n, _ in producers), Slice(consumer_name, "consumer")]
    return Block(name, "mlp", width, slices, gated=len(producers) == 2)


def find_blocks(model: nn.Module) -> list[Block]:
    """Every attention and MLP block of ``model`` (attention first, then MLPs, each in module order).

    Raises:
        ValueError: an attention block whose head counts break grouped-query attention.
    """
    attention = []
    for name, module in model.named_modules():
        block = _attention(model, name, module)
        if block is not None:
            attention.append(block)
    claimed = {s.module for block in attention for s in block.slices}
    mlps = []
    zero_ok = _zero_preserving(model)
    for name, module in reversed(list(model.named_modules())):  # the innermost module that holds one
        block = _mlp(name, module, claimed, zero_ok)
        if block is not None:
            mlps.append(block)
            claimed.update(s.module for s in block.slices)
    return attention + mlps[::-1]


def head_attributes(
    module: nn.Module, heads: int, kv_heads: int, head_dim: int, group: int = 1
) -> dict[str, int]:
    """The width attributes an attention module of ``heads`` query heads (``group`` per key/value head)
    reads in its forward, as a pruned one needs them (only those the module has)."""
    values = {
        "num_heads": heads,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "num_key_value_groups": group,
        "all_head_size": heads * head_dim,
        "split_size": heads * head_dim,
    }
    return {k: v for k, v in values.items() if isinstance(getattr(module, k, None), int)}
