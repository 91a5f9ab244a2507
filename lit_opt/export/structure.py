"""Physically remove pruned output units and attention heads before export, and replay it at load.

A unit whose weight row and bias are exactly zero outputs ``f(0) = 0`` through a zero-preserving
activation (ReLU, GELU, tanh, ...), so it can be deleted together with the matching input columns
of the layer that consumes it, without changing the model's function. The same holds for an
attention head whose value rows are zero: its context is zero, so its query/key/value rows and
the output projection's columns go. The consumer of a unit is found by pattern, not by tracing a
graph (which would need example inputs and breaks on Hugging Face models' control flow):

- BERT-style feed-forward blocks: ``<layer>.intermediate.dense`` rows feed ``<layer>.output.dense``;
- BERT-style attention: ``<block>.self.{query,key,value}`` heads feed ``<block>.output.dense``;
- ``nn.Sequential``: a Linear feeds the next Linear when only zero-preserving activations, dropout
  or identities lie between them.

Anything else stays in place (masked, stored sparse). The removal slices export's records:
integer codes keep the scales they were trained with (removed inputs only ever multiplied zeros),
so the loaded model computes what the masked one did; a per-group scale that spans kept and
removed inputs keeps those inputs in place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from lit_opt.export.records import Record
from lit_opt.nn.remapped_embedding import RemappedEmbedding, check_remap
from lit_opt.submodules import replace_submodule

log = logging.getLogger(__name__)
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


@dataclass
class Removal:
    """Units of ``producers`` (rows, dim 0) that go, with the matching input columns of ``consumer``."""

    producers: list[str]
    consumer: str
    keep: Tensor  # indices of the kept units, along the producers' dim 0 and the consumer's dim 1
    attention: str | None = None  # the attention module whose head count shrinks
    heads_kept: int | None = None


def _dead_rows(linear: nn.Linear) -> Tensor:
    """Rows whose effective weight and bias are exactly zero."""
    with torch.no_grad():
        dead = linear.weight.reshape(linear.out_features, -1).eq(0).all(dim=1)
        if linear.bias is not None:
            dead &= linear.bias.eq(0)
    return dead


def _find(model: nn.Module) -> list[Removal]:
    modules = dict(model.named_modules())
    removals: list[Removal] = []
    for name, module in modules.items():
        value = getattr(module, "value", None)
        parent = name.rpartition(".")[0]
        output = modules.get(f"{parent}.output.dense" if parent else "output.dense")
        if isinstance(value, nn.Linear) and isinstance(getattr(module, "num_attention_heads", None), int):
            heads = cast(int, module.num_attention_heads)
            if isinstance(output, nn.Linear) and name.endswith(".self"):
                head_size = value.out_features // heads
                alive = ~_dead_rows(value).reshape(heads, head_size).all(dim=1)
                if 0 < int(alive.sum()) < heads:
                    keep = torch.arange(value.out_features).reshape(heads, head_size)[alive].reshape(-1)
                    producers = [f"{name}.{p}" for p in ("query", "key", "value")]
                    removals.append(
                        Removal(producers, f"{parent}.output.dense", keep, name, int(alive.sum()))
                    )
        elif name.endswith(".intermediate.dense") and isinstance(module, nn.Linear):
            layer = name[: -len(".intermediate.dense")]
            consumer = modules.get(f"{layer}.output.dense")
            if isinstance(consumer, nn.Linear):
                removals.append(
                    Removal([name], f"{layer}.output.dense", torch.nonzero(~_dead_rows(module)).flatten())
                )
        elif isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for i, (child_name, child) in enumerate(children):
                if not isinstance(child, nn.Linear):
                    continue
                for next_name, follower in children[i + 1 :]:
                    if isinstance(follower, nn.Linear):
                        prefix = f"{name}." if name else ""
                        keep = torch.nonzero(~_dead_rows(child)).flatten()
                        removals.append(Removal([prefix + child_name], prefix + next_name, keep))
                        break
                    if not isinstance(follower, ZERO_PRESERVING):
                        break
    return [r for r in removals if 0 < len(r.keep) < cast(nn.Linear, modules[r.producers[0]]).out_features]


def _slice(record: Record, keep: Tensor, dim: int) -> Record | None:
    """``record`` keeping ``keep`` along ``dim``; None where a per-group scale would straddle the cut."""
    value = record.value.index_select(dim, keep)
    mask = None if record.keep is None else record.keep.index_select(dim, keep)
    if record.quant is None:
        return Record(value, mask, codebook=record.codebook)
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
    return Record(value, mask, record.quant, scale, zero_point)


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
    for removal in _find(model):
        cut = {f"{p}.{t}": 0 for p in removal.producers for t in ("weight", "bias") if f"{p}.{t}" in records}
        cut[f"{removal.consumer}.weight"] = 1
        sliced = {key: _slice(records[key], removal.keep, dim) for key, dim in cut.items()}
        if any(r is None for r in sliced.values()):
            log.info("export: %s keeps its dead inputs (a per-group scale spans them)", removal.consumer)
            continue
        records.update(cast(dict[str, Record], sliced))
        for name in [*removal.producers, removal.consumer]:
            shape = records[f"{name}.weight"].value.shape
            plan.append({"module": name, "in_features": int(shape[1]), "out_features": int(shape[0])})
        if removal.attention is not None:
            heads = cast(int, removal.heads_kept)
            plan.append(
                {
                    "module": removal.attention,
                    "num_attention_heads": heads,
                    "head_size": len(removal.keep) // heads,
                }
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
        elif "num_attention_heads" in step:
            setattr(module, "num_attention_heads", int(step["num_attention_heads"]))  # noqa: B010
            setattr(module, "all_head_size", int(step["num_attention_heads"]) * int(step["head_size"]))  # noqa: B010
        elif isinstance(module, nn.Linear):
            weight = module.weight
            new = nn.Linear(
                int(step["in_features"]),
                int(step["out_features"]),
                bias=module.bias is not None,
                device=weight.device,
                dtype=weight.dtype,
            )
            replace_submodule(model, step["module"], new)
        else:
            raise ValueError(
                f"the artifact shrinks {step['module']!r}, which is a {type(module).__name__} in the skeleton."
            )
