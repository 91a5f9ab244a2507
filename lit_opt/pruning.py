"""What to prune and how: the configuration, the prunable groups, their scores and their masks.

A :class:`PrunableGroup` is a set of tensors whose entries are pruned together: one weight
(``unstructured``, ``"N:M"``), the output rows of a layer with its bias (``rows``; a gated MLP's
gate and up projections together), or the heads of an attention block: query/key/value rows and
biases plus the output projection's columns (``heads``; with grouped-query attention a key/value
head with the query heads that share it). Blocks are found from module shapes
(:mod:`lit_opt.blocks`); transformers' ``Conv1D`` (weight ``(in, out)``) has its units on dim 1. Each tensor carries a :class:`~lit_opt.parametrizations.Mask`; data-dependent scores
live in the masks' ``score`` buffers and are all-reduced across DDP ranks before any mask is
chosen. ``IterativePruningCallback`` is a thin adapter over these functions.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> config = PruningConfig(target_sparsity=0.5, structure="rows", scope="local", targets=["0"])
    >>> groups = prepare_pruning(model, config)
    >>> update_masks(groups, config, sparsity=0.5, step=0)
    >>> int(model[0].weight.abs().sum(dim=1).eq(0).sum())
    4
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_opt.blocks import find_blocks
from lit_opt.functional.sparsity import SCHEDULES, global_masks, n_m_mask, parse_n_m, unstructured_mask
from lit_opt.module_types import (
    in_features,
    layout_of,
    out_features,
    supported_types,
    tied_groups,
    warn_unsupported,
)
from lit_opt.parametrizations.mask import Mask
from lit_opt.parametrizations.ordering import register_in_order
from lit_opt.targets import select_modules, validate_patterns

CRITERIA: tuple[str, ...] = ("magnitude", "activation", "movement", "random")
STRUCTURES: tuple[str, ...] = ("unstructured", "rows", "heads", "query_heads", "N:M (e.g. '2:4')")
HEAD_STRUCTURES: tuple[str, ...] = ("heads", "query_heads")
SCOPES: tuple[str, ...] = ("global", "local")


def _check_int(value: Any, argument: str, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{argument}={value!r} must be an integer >= {minimum}" + (" or None." if allow_none else ".")
        )


@dataclass
class PruningConfig:
    """How to prune; see :class:`lit_opt.IterativePruningCallback` for the meaning of each field.

    Raises:
        ValueError: an argument outside the accepted values, with the fix in the message.
    """

    target_sparsity: float = 0.5
    schedule: str = "cubic"
    start_step: int = 0
    end_step: int | None = None
    every_n_steps: int = 100
    criterion: str = "magnitude"
    structure: str = "unstructured"
    scope: str = "global"
    targets: Sequence[str] = field(default_factory=lambda: ["*"])
    exclude: Sequence[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        sparsity = self.target_sparsity
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
            raise ValueError(
                f"target_sparsity={sparsity!r} must be a number in [0, 1): the fraction of weights removed. "
                "HINT: 0.9 prunes 90%."
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not one of {SCHEDULES}.")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion={self.criterion!r} is not one of {CRITERIA}.")
        n_m = parse_n_m(self.structure) if isinstance(self.structure, str) else None
        if self.structure not in STRUCTURES[:4] and n_m is None:
            raise ValueError(
                f"structure={self.structure!r} is not one of {STRUCTURES}. HINT: N:M is written as two "
                "integers with a colon, N kept of every M, e.g. '2:4'."
            )
        if n_m is not None:
            n, m = n_m
            if not 0 < n < m:
                raise ValueError(
                    f"structure={self.structure!r} needs 0 < N < M (keep N of every M), e.g. '2:4'."
                )
            if not math.isclose(sparsity, 1 - n / m):
                raise ValueError(
                    f"target_sparsity={sparsity} does not match structure={self.structure!r}, which removes "
                    f"{1 - n / m:g} of each group. HINT: set target_sparsity={1 - n / m:g}."
                )
        if self.scope not in SCOPES:
            raise ValueError(f"scope={self.scope!r} is not one of {SCOPES}.")
        if self.structure in HEAD_STRUCTURES and self.criterion == "activation":
            raise ValueError(
                f"criterion='activation' scores output units and is not defined for structure={self.structure!r}. "
                "HINT: use 'magnitude' or 'movement' for heads."
            )
        _check_int(self.start_step, "start_step", 0)
        _check_int(self.end_step, "end_step", 0, allow_none=True)
        _check_int(self.every_n_steps, "every_n_steps", 1)
        _check_int(self.seed, "seed", 0)
        if self.end_step is not None and self.end_step <= self.start_step and self.schedule != "constant":
            raise ValueError(
                f"end_step={self.end_step} must be after start_step={self.start_step}. "
                "HINT: leave end_step=None to end the schedule with training, or use schedule='constant'."
            )
        self.targets = validate_patterns(self.targets, "targets")
        self.exclude = validate_patterns(self.exclude, "exclude")

    @property
    def n_m(self) -> tuple[int, int] | None:
        """``(N, M)`` for an N:M structure, else None."""
        return parse_n_m(self.structure)


class Member(NamedTuple):
    """One tensor of a group: its units lie along ``dim``, in ``sections`` consecutive runs (a fused
    query/key/value projection has 3: unit ``u`` owns the ``u``-th slice of each run)."""

    module: nn.Module
    tensor_name: str
    dim: int
    sections: int = 1


@dataclass
class PrunableGroup:
    """Tensors pruned together; units lie along each member's ``dim`` (each member has its own number
    of entries per unit, e.g. a query group's rows and a key head's rows).

    ``units`` is None for element-wise structures (unstructured, N:M: a single member).
    ``scored`` is the module whose output activations score the units (activation criterion).
    """

    name: str
    members: list[Member]
    units: int | None = None
    scored: nn.Module | None = None
    #: units come in runs of this many that must all keep the same count (query heads of one key/value
    #: head under ``query_heads``, so grouped-query attention stays valid)
    even_runs: int = 1

    def masks(self) -> list[Mask]:
        return [_mask_of(m.module, m.tensor_name) for m in self.members]


def _per_unit(tensor: Tensor, member: Member, units: int) -> Tensor:
    """``tensor`` (shaped like the member's) as ``(units, entries per unit)``."""
    runs = tensor.movedim(member.dim, 0).reshape(member.sections, units, -1)  # (sections, units, ...)
    return runs.transpose(0, 1).reshape(units, -1)


def _expand(keep: Tensor, member: Member, shape: torch.Size) -> Tensor:
    """A per-unit ``keep`` (units,) broadcast to a mask of ``shape`` for ``member``."""
    length = shape[member.dim]
    per_run = keep.repeat_interleave(length // (member.sections * len(keep)))  # (length / sections,)
    line = per_run.repeat(member.sections)  # (length,)
    view = [1] * len(shape)
    view[member.dim] = -1
    return line.reshape(view).expand(shape)


def _mask_of(module: nn.Module, tensor_name: str) -> Mask:
    for p in cast(Any, module).parametrizations[tensor_name]:
        if isinstance(p, Mask):
            return p
    raise ValueError(f"{module!r}.{tensor_name} carries no pruning mask.")


def _matches(name: str, config: PruningConfig) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in config.targets) and not any(
        fnmatch.fnmatchcase(name, p) for p in config.exclude
    )


def _rows(module: nn.Module) -> list[Member]:
    """A layer's output rows with its bias (a Conv1D's rows are its weight's columns)."""
    layout = layout_of(module)
    members = [Member(module, "weight", layout.out_dim if layout else 0)]
    if getattr(module, "bias", None) is not None:
        members.append(Member(module, "bias", 0))
    return members


def _head_groups(model: nn.Module, config: PruningConfig) -> list[PrunableGroup]:
    """Attention blocks (:func:`lit_opt.blocks.find_blocks`) the targets select, one group each: key/value
    heads with their query groups (``heads``) or query heads, evenly per group (``query_heads``)."""
    query = config.structure == "query_heads"
    groups = []
    for block in find_blocks(model):
        if block.kind != "attention" or not _matches(block.name, config):
            continue
        if query and block.group < 2:
            raise ValueError(
                f"structure='query_heads' needs grouped-query attention (several query heads per key/value "
                f"head), but attention block {block.name!r} has one query head per key/value head, so removing "
                "one would break the grouping. HINT: use structure='heads' for this model."
            )
        if not query and block.units < 2:
            raise ValueError(
                f"structure='heads' cannot prune attention block {block.name!r}: it has a single key/value "
                f"head ({block.group} query heads share it), and removing it would leave the layer with no "
                "heads. HINT: use structure='query_heads' (query heads within the group), exclude the block "
                "(exclude=[...]) or prune its rows instead."
            )
        members: list[Member] = []
        for piece in block.slices[:1] if query else block.slices[:-1]:  # query only, or all producers
            members += [m._replace(sections=piece.sections) for m in _rows(model.get_submodule(piece.module))]
        consumer = model.get_submodule(block.consumer.module)
        members.append(Member(consumer, "weight", 1 - cast(Any, layout_of(consumer)).out_dim))
        scored = model.get_submodule(block.value) if block.value else None
        if query:
            groups.append(PrunableGroup(block.name, members, block.units * block.group, None, block.group))
        else:
            groups.append(PrunableGroup(block.name, members, block.units, scored))
    return groups


def _even(keep: Tensor, score: Tensor, runs: int) -> Tensor:
    """``keep`` rebalanced so each run of ``runs`` units keeps the same number (at least one), the best
    scored of each run; ``score`` is -inf for pruned units, so pruning stays monotone."""
    per_run = max(1, round(int(keep.sum()) * runs / len(keep)))
    ranked = score.reshape(-1, runs).argsort(dim=1, descending=True)[:, :per_run]  # (run count, per_run)
    even = torch.zeros(len(keep) // runs, runs, dtype=torch.bool, device=keep.device)
    return even.scatter_(1, ranked, True).reshape(-1)


def _row_groups(model: nn.Module, selected: dict[str, nn.Module]) -> list[PrunableGroup]:
    """One group per selected layer, except a gated MLP's selected gate and up projections: one group."""
    partners: dict[str, list[str]] = {}
    for block in find_blocks(model):
        names = [p.module for p in block.producers]
        if block.kind == "mlp" and block.gated and all(n in selected for n in names):
            partners.update({n: names for n in names})
    groups, done = [], set()
    for name, module in selected.items():
        if name in done:
            continue
        names = partners.get(name, [name])
        done.update(names)
        members = [m for n in names for m in _rows(model.get_submodule(n))]
        groups.append(PrunableGroup("+".join(names), members, out_features(module), module))
    return groups


def _score_shape(
    group: PrunableGroup, module: nn.Module, tensor_name: str, config: PruningConfig
) -> list[int] | None:
    tensor = cast(Tensor, getattr(module, tensor_name))
    if config.criterion == "movement":
        return list(tensor.shape)
    if config.criterion == "activation" and module is group.scored and tensor_name == "weight":
        return [out_features(module)]  # summed |output| per output unit
    return None


def _record_activation(module: nn.Module, args: tuple, output: Tensor) -> None:
    if not module.training:
        return
    mask = _mask_of(module, "weight")
    layout = layout_of(module)
    linear = isinstance(module, nn.Linear) or (layout is not None and layout.transposed)
    unit_dim = -1 if linear else 1  # Linear, Conv1D: (..., out); Conv: (N, C, ...)
    with torch.no_grad():
        per_unit = output.detach().abs().float().movedim(unit_dim, 0)  # (out, everything else)
        mask.score += per_unit.reshape(per_unit.shape[0], -1).sum(dim=1)
        mask.score_count += per_unit[0].numel()


def prepare_pruning(model: nn.Module, config: PruningConfig, owner: str = "") -> list[PrunableGroup]:
    """Install a :class:`Mask` on every tensor ``config`` prunes; returns the groups (idempotent per owner).

    Raises:
        ValueError: targets matching nothing, ``heads`` on a model without attention heads, N:M on
            a layer whose width is not a multiple of M, or tensors already pruned by another owner.
    """
    if config.structure in HEAD_STRUCTURES:
        groups = _head_groups(model, config)
        if not groups:
            raise ValueError(
                f"structure={config.structure!r} found no attention block among targets={list(config.targets)} "
                f"(exclude={list(config.exclude)}): a module with a head size (head_dim or "
                "attention_head_size) and query/key/value projections (or one fused projection) from the "
                "hidden size, as in BERT, Llama or GPT-2. HINT: use structure='rows' for other models, or "
                "target the attention modules (e.g. '*.self_attn', '*.attention.self', '*.attn')."
            )
    else:
        selected = select_modules(model, config.targets, config.exclude, types=supported_types("pruning"))
        warn_unsupported(model, config.targets, config.exclude, "pruning")
        if config.structure == "rows":
            groups = _row_groups(model, selected)
        else:
            groups = [PrunableGroup(name, [Member(m, "weight", 0)], None, m) for name, m in selected.items()]
    n_m = config.n_m
    for group in groups:
        width = in_features(group.members[0].module)
        if n_m is not None and width % n_m[1]:
            raise ValueError(
                f"structure={config.structure!r} needs the {width} inputs per row of module {group.name!r} to be "
                f"a multiple of M={n_m[1]}. HINT: exclude the module."
            )
    partners = _tie_partners(model)
    for group in groups:
        for module, tensor_name, *_ in group.members:
            existing = [p for p in _parametrizations(module, tensor_name) if isinstance(p, Mask)]
            if existing:
                if existing[0].owner != owner:
                    raise ValueError(
                        f"{group.name}.{tensor_name} is already pruned by {existing[0].owner}; {owner} prunes it too. "
                        "HINT: give each pruning callback disjoint targets."
                    )
                continue
            tensor = cast(Tensor, getattr(module, tensor_name))
            mask = Mask(tensor.shape, _score_shape(group, module, tensor_name, config), owner).to(
                tensor.device
            )
            register_in_order(module, tensor_name, mask)
            if tensor_name == "weight":
                for partner in partners.get(id(module), []):  # tied embeddings: one mask, one tensor
                    register_in_order(partner, "weight", mask)
            if mask.score_shape is not None and config.criterion == "activation":
                module.register_forward_hook(_record_activation)
    return groups


def _tie_partners(model: nn.Module) -> dict[int, list[nn.Module]]:
    """For each module of a tied group (by ``id``), the other modules that hold its weight."""
    partners: dict[int, list[nn.Module]] = {}
    for names in tied_groups(model):
        modules = [model.get_submodule(n) for n in names]
        for module in modules:
            partners[id(module)] = [m for m in modules if m is not module]
    return partners


def _parametrizations(module: nn.Module, tensor_name: str) -> list[nn.Module]:
    if not parametrize.is_parametrized(module, tensor_name):
        return []
    return list(cast(Any, module).parametrizations[tensor_name])


def accumulate_movement(groups: list[PrunableGroup]) -> None:
    """Add ``-W * dL/dW`` (Sanh et al., 2020) to every mask's movement score; call after backward.

    ``score_count`` counts the accumulated steps: until the first one, movement has no information
    and :func:`update_masks` scores by magnitude instead (a pruning step at step 0 is a warm-up).
    """
    with torch.no_grad():
        for group in groups:
            for module, tensor_name, *_ in group.members:
                original = cast(Any, module).parametrizations[tensor_name].original
                if original.grad is not None:
                    mask = _mask_of(module, tensor_name)
                    mask.score.addcmul_(original, original.grad, value=-1.0)
                    mask.score_count += 1


def _leading_masks(groups: list[PrunableGroup]) -> list[tuple[Mask, Tensor]]:
    """Each member's mask with the original, where the mask is the first parametrization (so zeroing the
    original in place where it is False leaves the effective tensor as it is)."""
    pairs = []
    for group in groups:
        for module, tensor_name, *_ in group.members:
            plist = cast(Any, module).parametrizations[tensor_name]
            if isinstance(plist[0], Mask):
                pairs.append((plist[0], plist.original))
    return pairs


def zero_pruned(groups: list[PrunableGroup]) -> None:
    """Zero the pruned entries of every original in place, so masks skip their multiply until the
    originals change (:meth:`Mask.zero_pruned`); call after each mask update and optimizer step."""
    for mask, original in _leading_masks(groups):
        mask.zero_pruned(original)


def forget_zeroed(groups: list[PrunableGroup]) -> None:
    """Make every mask multiply on each forward again (:meth:`Mask.forget_zeroed`); call when training ends."""
    for mask, _ in _leading_masks(groups):
        mask.forget_zeroed()


def mask_grads(groups: list[PrunableGroup]) -> None:
    """Zero the gradient of every pruned entry in place (the unmultiplied forward does not); call before
    gradient clipping."""
    with torch.no_grad():
        for mask, original in _leading_masks(groups):
            mask.mask_grad(original)


def _effective(module: nn.Module, tensor_name: str) -> Tensor:
    """The masked tensor (before any sharing or quantization that follows the mask)."""
    plist = cast(Any, module).parametrizations[tensor_name]
    return plist.original.detach() * _mask_of(module, tensor_name).mask


def _unit_scores(group: PrunableGroup, config: PruningConfig, step: int) -> Tensor:
    """Importance per unit (rows/heads) or per element; pruned units score -inf (pruning is monotone)."""
    if config.criterion == "activation":
        mask = _mask_of(cast(nn.Module, group.scored), "weight")
        row = mask.score / mask.score_count.clamp(min=1)  # mean |activation| per output unit
        if group.units is None:
            view = [1] * mask.mask.dim()
            view[cast(Any, layout_of(group.members[0].module)).out_dim] = -1
            return _effective(group.members[0].module, "weight").abs() * row.reshape(view)
        return row
    if config.criterion == "random":
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        shape = (group.units,) if group.units is not None else group.masks()[0].mask.shape
        return torch.rand(shape, generator=generator).to(group.masks()[0].mask.device)
    # movement before any score accumulated (a pruning step at the first step): magnitude instead
    movement = config.criterion == "movement" and any(bool(m.score_count > 0) for m in group.masks())
    per_member = []
    for member in group.members:
        module, tensor_name = member.module, member.tensor_name
        values = _mask_of(module, tensor_name).score if movement else _effective(module, tensor_name).abs()
        if group.units is None:
            return values
        per_unit = _per_unit(values, member, group.units)  # (units, entries per unit)
        per_member.append(per_unit.sum(dim=1) if movement else per_unit.mean(dim=1))
    return torch.stack(per_member).sum(dim=0)


def _unit_mask(group: PrunableGroup) -> Tensor:
    """Which units are still alive (read from the first member's mask)."""
    member = group.members[0]
    mask = _mask_of(member.module, member.tensor_name).mask
    if group.units is None:
        return mask
    return _per_unit(mask, member, group.units).any(dim=1)


def sync_scores(groups: list[PrunableGroup], config: PruningConfig) -> None:
    """Average activation statistics across DDP ranks (one all-reduce), so every rank holds the same scores.

    A score is used as ``score / score_count``, which averaging leaves as pooled over all ranks; and
    averaging equal values changes nothing, so calling this after every step (as the callback does,
    keeping checkpoints identical on every rank) counts each rank's statistics exactly once.
    Movement scores need no reduction: they are built from gradients DDP has already averaged.
    """
    if config.criterion != "activation" or not (dist.is_available() and dist.is_initialized()):
        return
    masks = [_mask_of(cast(nn.Module, group.scored), "weight") for group in groups]
    if not masks:
        return
    flat = torch.cat([t.reshape(-1) for m in masks for t in (m.score, m.score_count)])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for m in masks:
        for t in (m.score, m.score_count):
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def update_masks(groups: list[PrunableGroup], config: PruningConfig, sparsity: float, step: int) -> None:
    """Recompute every group's masks for ``sparsity`` (one threshold with ``scope='global'``)."""
    scores = []
    for group in groups:
        score = _unit_scores(group, config, step).float().clone()
        alive = _unit_mask(group)
        if config.scope == "global" and config.criterion != "random" and bool(alive.any()):
            # scores live on each layer's own scale (a freshly initialised layer's weights are small):
            # one threshold over raw scores would wipe such a layer out, so compare relative importance
            score /= score[alive].abs().mean().clamp(min=1e-12)
        score[~alive] = -math.inf
        scores.append(score)
    n_m = config.n_m
    if n_m is not None:  # groups of M inputs: along a Conv1D weight's rows, so transpose it there and back
        flips = [bool(getattr(layout_of(g.members[0].module), "transposed", False)) for g in groups]
        keeps = [
            n_m_mask(s.t(), *n_m, sparsity=sparsity).t() if flip else n_m_mask(s, *n_m, sparsity=sparsity)
            for s, flip in zip(scores, flips, strict=True)
        ]
    elif config.scope == "global":
        keeps = global_masks(scores, sparsity)
    else:
        keeps = [unstructured_mask(s, sparsity) for s in scores]
    with torch.no_grad():
        for group, keep, score in zip(groups, keeps, scores, strict=True):
            if group.even_runs > 1:
                keep = _even(keep, score, group.even_runs)
            if group.units is not None and not bool(keep.any()):
                keep[
                    int(torch.argmax(torch.where(keep, -math.inf, _unit_scores(group, config, step).float())))
                ] = True
            for member, mask in zip(group.members, group.masks(), strict=True):
                if group.units is None:
                    mask.mask.copy_(keep)
                else:
                    mask.mask.copy_(_expand(keep, member, mask.mask.shape))
            if config.criterion == "activation" and group.scored is not None:
                scored = _mask_of(group.scored, "weight")
                scored.score.zero_()
                scored.score_count.zero_()


def sparsity_report(groups: list[PrunableGroup]) -> dict[str, float]:
    """Fraction of zeros in each group's weights, and ``"global"`` over all of them."""
    report, zeros, total = {}, 0, 0
    for group in groups:
        masks = [
            m.mask
            for member, m in zip(group.members, group.masks(), strict=True)
            if member.tensor_name == "weight"
        ]
        group_zeros = sum(int((~m).sum()) for m in masks)
        group_total = sum(m.numel() for m in masks)
        report[group.name] = group_zeros / max(group_total, 1)
        zeros, total = zeros + group_zeros, total + group_total
    report["global"] = zeros / max(total, 1)
    return report
