"""Physically remove pruned output units and attention heads before export, and replay it at load.

A unit whose weight row and bias are exactly zero outputs ``f(0) = 0`` through a zero-preserving
activation (ReLU, GELU, SiLU, ...), so it can be deleted together with the matching input columns
of the layer that consumes it, without changing the model's function; in a gated MLP
(``act(gate(x)) * up(x)``) a unit goes when either row is zero. An attention head whose value rows
are zero has a zero context, so its query/key/value rows and the output projection's columns go
(with grouped-query attention: a key/value head with the query heads that share it). Producers
and consumers come from :func:`lit_opt.blocks.find_blocks` (module shapes and head sizes: BERT,
Llama/Qwen2/Mistral and GPT-2 alike) and, for ``nn.Sequential``, a Linear followed by the next
Linear with only zero-preserving activations, dropout or identities between them.

Layers whose rows were pruned but that no rule recognises stay in place (masked, stored sparse), and
export says so. The removal slices export's records (channels first, so transformers' ``Conv1D``
too): integer codes keep the scales they were trained with (removed inputs only ever multiplied
zeros), so the loaded model computes what the masked one did; a per-group scale that spans kept and
removed inputs keeps those inputs in place. Per-layer widths may then differ; :func:`shrink`
rebuilds them at load, with the attention modules' head counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from lit_opt.blocks import ZERO_PRESERVING, Block, find_blocks, head_attributes
from lit_opt.export.records import Record
from lit_opt.module_types import layout_of, linear_weight, out_features
from lit_opt.nn.remapped_embedding import RemappedEmbedding, check_remap
from lit_opt.parametrizations.mask import Mask
from lit_opt.submodules import replace_submodule

log = logging.getLogger(__name__)


@dataclass
class Removal:
    """Kept indices per layer: a producer keeps rows (dim 0 of its channels-first weight, and its
    bias), the consumer keeps input columns (dim 1)."""

    producers: dict[str, Tensor]
    consumer: str
    consumer_keep: Tensor
    attention: str | None = None  # the attention module whose head counts shrink
    attributes: dict[str, int] = field(default_factory=dict)


def _dead_rows(module: nn.Module) -> Tensor:
    """Output units whose effective weight row and bias are exactly zero."""
    with torch.no_grad():
        weight = linear_weight(module)
        dead = weight.reshape(weight.shape[0], -1).eq(0).all(dim=1)
        bias = getattr(module, "bias", None)
        if bias is not None:
            dead &= bias.eq(0)
    return dead


def _unit_rows(alive: Tensor, per_unit: int, sections: int = 1) -> Tensor:
    """Indices of the rows of the ``alive`` units, ``per_unit`` rows apiece, in ``sections`` runs."""
    units = len(alive)
    rows = torch.arange(sections * units * per_unit).reshape(sections, units, per_unit)
    return rows[:, alive].reshape(-1)


def _mlp_removal(model: nn.Module, block: Block) -> Removal | None:
    dead = torch.zeros(block.units, dtype=torch.bool)
    for piece in block.producers:
        rows = _dead_rows(model.get_submodule(piece.module))
        dead = dead | rows if block.gated else rows
    keep = torch.nonzero(~dead).flatten()
    if not 0 < len(keep) < block.units:
        return None
    return Removal({p.module: keep for p in block.producers}, block.consumer.module, keep)


def _attention_removal(model: nn.Module, block: Block) -> Removal | None:
    """Key/value heads whose value rows are zero go with their query groups; with grouped-query attention,
    query heads whose output-projection columns are zero go too when every kept group loses as many."""
    fused = block.value is None
    rows = _dead_rows(model.get_submodule(block.value or block.producers[0].module))
    if fused:  # the value section of query | key | value
        rows = rows.reshape(3, -1)[2]
    alive = ~rows.reshape(block.units, -1).all(dim=1)  # (kv units,)
    consumer = linear_weight(model.get_submodule(block.consumer.module))
    query_alive = ~consumer.eq(0).all(dim=0).reshape(block.units, block.group, -1).all(
        dim=-1
    )  # (units, group)
    counts = query_alive[alive].sum(dim=1)
    group = block.group
    if len(counts) and bool((counts == counts[0]).all()) and 0 < int(counts[0]) < group:
        group, query_keep = int(counts[0]), query_alive & alive[:, None]
    else:
        query_keep = alive[:, None].expand(block.units, block.group)
    kept = int(alive.sum())
    if kept == 0 or (kept == block.units and group == block.group):
        return None
    query_rows = _unit_rows(query_keep.reshape(-1), block.head_dim)
    producers = {}
    for index, piece in enumerate(block.producers):
        if piece.sections > 1:  # fused query | key | value (one query head per key/value head)
            per_unit = out_features(model.get_submodule(piece.module)) // (piece.sections * block.units)
            producers[piece.module] = _unit_rows(alive, per_unit, piece.sections)
        else:
            producers[piece.module] = query_rows if index == 0 else _unit_rows(alive, block.head_dim)
    attention = model.get_submodule(block.name)
    attributes = head_attributes(attention, kept * group, kept, block.head_dim, group)
    return Removal(producers, block.consumer.module, query_rows, block.name, attributes)


def _sequential(model: nn.Module) -> list[Removal]:
    removals = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for i, (child_name, child) in enumerate(children):
            if not isinstance(child, nn.Linear):
                continue
            for next_name, follower in children[i + 1 :]:
                if isinstance(follower, nn.Linear):
                    prefix = f"{name}." if name else ""
                    keep = torch.nonzero(~_dead_rows(child)).flatten()
                    if 0 < len(keep) < child.out_features:
                        removals.append(Removal({prefix + child_name: keep}, prefix + next_name, keep))
                    break
                if not isinstance(follower, ZERO_PRESERVING):
                    break
    return removals


def _find(model: nn.Module) -> list[Removal]:
    removals = _sequential(model)
    covered = {name for r in removals for name in [*r.producers, r.consumer]}
    for block in find_blocks(model):
        if any(s.module in covered for s in block.slices):
            continue  # an nn.Sequential chain already covers it
        removal = _mlp_removal(model, block) if block.kind == "mlp" else _attention_removal(model, block)
        if removal is not None:
            removals.append(removal)
    return removals


def _unrecognised(model: nn.Module, removals: list[Removal]) -> list[str]:
    """Masked layers with whole dead rows that no removal covers (they stay in place)."""
    covered = {name for r in removals for name in r.producers}
    left = []
    for name, module in model.named_modules():
        if name in covered or layout_of(module) is None or isinstance(module, nn.Embedding):
            continue
        plist = getattr(module, "parametrizations", None)
        if plist is None or "weight" not in plist or not any(isinstance(p, Mask) for p in plist["weight"]):
            continue
        if bool(_dead_rows(module).any()):
            left.append(name)
    return left


def _slice(record: Record, keep: Tensor, dim: int) -> Record | None:
    """``record`` keeping ``keep`` along ``dim``; None where a per-group scale would straddle the cut."""
    value = record.value.index_select(dim, keep)
    mask = None if record.keep is None else record.keep.index_select(dim, keep)
    if record.quant is None:
        return Record(value, mask, codebook=record.codebook, transposed=record.transposed)
    scale, zero_point = cast(Tensor, record.scale), cast(Tensor, record.zero_point)  # (C, G)
    granularity, group_size = record.quant["granularity"], record.quant["group_size"]
    if dim == 0 and granularity != "per_tensor":
        scale, zero_point = scale[keep], zero_point[keep]
    elif dim == 1 and granularity == "per_group":
        kept = torch.zeros(record.value.shape[1], dtype=torch.bool)
        kept[keep] = True
        per_group = kept.reshape(-1, group_size)  # (G, g)
        if not bool((per_group.all(dim=1) | ~per_group.any(dim=1)).all()):
            return None
        groups = torch.nonzero(per_group.all(dim=1)).flatten()
        scale, zero_point = scale[:, groups], zero_point[:, groups]
    return Record(value, mask, record.quant, scale, zero_point, transposed=record.transposed)


def remove_dead_units(model: nn.Module, records: dict[str, Record]) -> list[dict[str, Any]]:
    """Drop dead units and heads of ``model`` from ``records``; returns the plan :func:`shrink` replays.

    The codes keep the scales they were trained with: removed inputs only ever multiplied zeros.

    Example::

        >>> from lit_opt.export.records import collect
        >>> mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with torch.no_grad():
        ...     mlp[0].weight[1] = 0
        ...     mlp[0].bias[1] = 0
        >>> records, _ = collect(mlp)
        >>> plan = remove_dead_units(mlp, records)
        >>> list(records["0.weight"].value.shape), list(records["2.weight"].value.shape)
        ([2, 4], [2, 2])
    """
    plan: list[dict[str, Any]] = []
    removals = _find(model)
    for removal in removals:
        cut: dict[str, tuple[Tensor, int]] = {}
        for producer, keep in removal.producers.items():
            cut.update(
                {f"{producer}.{t}": (keep, 0) for t in ("weight", "bias") if f"{producer}.{t}" in records}
            )
        cut[f"{removal.consumer}.weight"] = (removal.consumer_keep, 1)
        sliced = {key: _slice(records[key], keep, dim) for key, (keep, dim) in cut.items()}
        if any(r is None for r in sliced.values()):
            log.info("export: %s keeps its dead inputs (a per-group scale spans them)", removal.consumer)
            continue
        records.update(cast(dict[str, Record], sliced))
        for name in [*removal.producers, removal.consumer]:
            shape = records[f"{name}.weight"].value.shape  # channels first
            plan.append({"module": name, "in_features": int(shape[1]), "out_features": int(shape[0])})
        if removal.attributes:
            plan.append({"module": removal.attention, "attributes": removal.attributes})
    left = _unrecognised(model, removals)
    if left:
        log.warning(
            "export: rows pruned in %s stay in place (masked, stored sparse): lit_opt found no layer that "
            "consumes them (it recognises BERT, Llama-style and GPT-2 MLP/attention blocks and nn.Sequential)",
            ", ".join(left[:5]) + (", ..." if len(left) > 5 else ""),
        )
    return plan


def remapped_embeddings(model: nn.Module, records: dict[str, Record]) -> list[dict[str, Any]]:
    """Plan steps that rebuild each :class:`RemappedEmbedding` of ``model`` at load.

    Each ``remap`` record is narrowed to int16 where the compact rows fit (half the bytes).

    Example::

        >>> from lit_opt.export.records import collect
        >>> model = nn.Sequential(RemappedEmbedding(3, 4, vocab_size=10))
        >>> records, _ = collect(model)
        >>> remapped_embeddings(model, records), records["0.remap"].value.dtype
        ([{'module': '0', 'remap': {'num_embeddings': 3, 'embedding_dim': 4, 'vocab_size': 10, 'padding_idx': None}}], torch.int16)
    """
    plan: list[dict[str, Any]] = []
    for name, module in model.named_modules():
        if not isinstance(module, RemappedEmbedding):
            continue
        key = f"{name}.remap"
        if module.num_embeddings <= torch.iinfo(torch.int16).max + 1:  # row indices < 32768
            records[key] = Record(records[key].value.to(torch.int16))
        sizes = {
            "num_embeddings": module.num_embeddings,
            "embedding_dim": module.embedding_dim,
            "vocab_size": module.vocab_size,
            "padding_idx": module.padding_idx,
        }
        plan.append({"module": name, "remap": sizes})
    return plan


def check_remaps(plan: list[dict[str, Any]], tensors: dict[str, Tensor], where: str) -> None:
    """Raise ``ValueError`` unless every remap the plan rebuilds is stored, integer and in range."""
    for step in plan:
        if "remap" in step:
            key = f"{step['module']}.remap"
            if key not in tensors:
                raise ValueError(
                    f"{where} rebuilds {step['module']!r} with a remap, but holds no tensor {key!r}."
                )
            sizes = step["remap"]
            check_remap(
                tensors[key], sizes["vocab_size"], sizes["num_embeddings"], f"{where}: tensor {key!r}"
            )


def _remapped(module: nn.Module, name: str, sizes: dict[str, Any]) -> RemappedEmbedding:
    """A :class:`RemappedEmbedding` standing in for the skeleton's embedding ``module``."""
    rows, dim, vocab, pad = (
        sizes.get(k) for k in ("num_embeddings", "embedding_dim", "vocab_size", "padding_idx")
    )
    if not isinstance(module, nn.Embedding):
        raise ValueError(
            f"the artifact prunes the vocabulary of {name!r}, but the skeleton's module is a "
            f"{type(module).__name__}, not an Embedding."
        )
    own_vocab = module.vocab_size if isinstance(module, RemappedEmbedding) else module.num_embeddings
    if (own_vocab, module.embedding_dim) != (vocab, dim):
        raise ValueError(
            f"the artifact prunes the vocabulary of {name!r} ({vocab} tokens x {dim}), but the skeleton's "
            f"module is {module}. HINT: build the skeleton with the exported model's configuration."
        )
    if (
        isinstance(rows, bool)
        or not isinstance(rows, int)
        or not 0 < rows <= own_vocab
        or not (pad is None or (isinstance(pad, int) and 0 <= pad < rows))
    ):
        raise ValueError(
            f"the artifact keeps {rows!r} rows (padding row {pad!r}) of {name!r}'s {vocab}: out of range."
        )
    if isinstance(module, RemappedEmbedding) and module.num_embeddings == rows:
        return module
    return RemappedEmbedding.like(module, rows, pad)


def shrink(model: nn.Module, plan: list[dict[str, Any]]) -> None:
    """Give a freshly built skeleton the shapes :func:`remove_dead_units` produced (weights come later)."""
    for step in plan:
        module = model.get_submodule(step["module"])
        if "remap" in step:
            replace_submodule(model, step["module"], _remapped(module, step["module"], step["remap"]))
        elif "attributes" in step:
            for attribute, value in step["attributes"].items():
                if not isinstance(getattr(module, attribute, None), int):
                    raise ValueError(
                        f"the artifact sets {attribute!r} of {step['module']!r}, which the skeleton's "
                        f"{type(module).__name__} lacks."
                    )
                setattr(module, attribute, int(value))
        elif "num_attention_heads" in step:  # artifacts written before lit_opt knew decoder blocks
            setattr(module, "num_attention_heads", int(step["num_attention_heads"]))  # noqa: B010
            setattr(module, "all_head_size", int(step["num_attention_heads"]) * int(step["head_size"]))  # noqa: B010
        elif isinstance(module, nn.Linear) or getattr(layout_of(module), "transposed", False):
            resized = _resized(module, int(step["in_features"]), int(step["out_features"]))
            replace_submodule(model, step["module"], resized)
        else:
            raise ValueError(
                f"the artifact shrinks {step['module']!r}, which is a {type(module).__name__} in the skeleton."
            )


def _resized(module: nn.Module, in_features: int, out_features: int) -> nn.Module:
    """A fresh layer of ``module``'s type (Linear or Conv1D) with the given widths (weights come later)."""
    weight = cast(Tensor, module.weight)
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        return nn.Linear(in_features, out_features, bias=bias, device=weight.device, dtype=weight.dtype)
    resized = type(module)(out_features, in_features)  # transformers' Conv1D(nf=out, nx=in)
    return resized.to(device=weight.device, dtype=weight.dtype)
