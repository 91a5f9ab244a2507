"""Between a trained model and the bytes on disk: one :class:`Record` per tensor.

:func:`collect` reads a model into records (integer codes and their scales for quantized weights,
effective values for the rest, and pruning masks), :mod:`lit_opt.export.structure` may slice
them, and :func:`encode` writes each record in its smallest honest encoding: int8 codes, int4
codes packed two per byte, or raw values, each either dense or as a bit-packed mask plus the kept
entries, whichever is smaller; a shared weight (weight sharing) as a float16 codebook plus
bit-packed indices (:mod:`lit_opt.export.codebook`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_opt.export import codebook as codebook_encoding
from lit_opt.functional.quantize import pack_int4, quantize_weight
from lit_opt.functional.sparsity import pack_bits
from lit_opt.module_types import layout_of, tied_groups
from lit_opt.nn.activation_quantizer import INPUT_QUANTIZER
from lit_opt.parametrizations.codebook import Codebook
from lit_opt.parametrizations.mask import Mask
from lit_opt.quantization import activation_quantizers, quantizer_input, weight_quantizers

_ORIGINAL = re.compile(r"^(?:(.*)\.)?parametrizations\.([^.]+)\.original$")


@dataclass
class Record:
    """One tensor as export sees it.

    ``value`` is the full-shape int8 codes of a quantized weight (then ``quant``, ``scale`` and
    ``zero_point``, shaped ``(C, G)``, describe them) or the tensor's effective value. ``keep`` is
    its pruning mask, if any; pruned entries of ``value`` hold the encoding of zero. For a shared
    weight ``value`` holds the uint8 indices into ``codebook`` (the shared values, in the weight's dtype).
    """

    value: Tensor
    keep: Tensor | None = None
    quant: dict[str, Any] | None = None
    scale: Tensor | None = None
    zero_point: Tensor | None = None
    codebook: Tensor | None = None
    transposed: bool = False  # the module stores the tensor as value.t() (transformers' Conv1D weight)


def _mask(module: nn.Module, tensor_name: str) -> Tensor | None:
    if not parametrize.is_parametrized(module, tensor_name):
        return None
    masks = [p.mask for p in cast(Any, module).parametrizations[tensor_name] if isinstance(p, Mask)]
    return masks[0] if masks else None


def _shared(module: nn.Module, tensor_name: str) -> Record | None:
    """The indices and codebook of a clustered :class:`Codebook` on ``tensor_name``, if any."""
    books = [p for p in cast(Any, module).parametrizations[tensor_name] if isinstance(p, Codebook)]
    if not books or not bool(books[0].clustered):
        return None
    codebook, indices = books[0].encoded(quantizer_input(module, books[0], tensor_name))
    weight = cast(Tensor, getattr(module, tensor_name))
    return Record(indices, _mask(module, tensor_name), codebook=codebook.to(weight.dtype))


def _transposed(module: nn.Module, tensor_name: str) -> bool:
    layout = layout_of(module)
    return tensor_name == "weight" and layout is not None and layout.transposed


def tied_keys(model: nn.Module) -> dict[str, str]:
    """``{key: key it is stored under}`` for each weight that shares its tensor with an earlier module's."""
    return {f"{name}.weight": f"{group[0]}.weight" for group in tied_groups(model) for name in group[1:]}


def collect(model: nn.Module, dtype: torch.dtype | None = None) -> tuple[dict[str, Record], dict[str, Any]]:
    """Records of every tensor of ``model`` (keys as in a plain model's state dict) and per-module specs.

    ``dtype`` casts the floating-point tensors that are not quantized. A tied weight is recorded once,
    under its first module's key (:func:`tied_keys` names the others); a transposed weight (``Conv1D``)
    is recorded channels first, ``(out, in)``, with ``transposed`` set.
    """
    prefix = lambda name: f"{name}." if name else ""  # noqa: E731
    records: dict[str, Record] = {}
    modules: dict[str, Any] = {}
    ties = tied_keys(model)
    for name, module, quantizer in weight_quantizers(model):
        modules[name] = {"type": type(module).__name__.removeprefix("Parametrized"), "activations": "none"}
        if f"{prefix(name)}weight" in ties:
            continue
        w = quantizer_input(module, quantizer).detach()
        codes, scale, zero_point = quantizer.codes(w)  # channels first
        quant = {
            k: v
            for k, v in quantizer.config().items()
            if k in ("bits", "symmetric", "granularity", "group_size")
        }
        keep = _mask(module, "weight")
        transposed = _transposed(module, "weight")
        if keep is not None and transposed:
            keep = keep.t()
        records[f"{prefix(name)}weight"] = Record(
            codes, keep, quant, scale, zero_point, transposed=transposed
        )
    for name, act in activation_quantizers(model):
        modules.setdefault(name, {}).update(
            {"activations": act.mode, "per_sample": act.per_sample, "symmetric": act.symmetric}
        )
    for key, value in model.state_dict().items():
        keep = None
        owner_name, _, tensor_name = key.rpartition(".")
        if match := _ORIGINAL.match(key):
            owner_name, tensor_name = match.group(1) or "", match.group(2)
            key = f"{prefix(owner_name)}{tensor_name}"
            if key in records or key in ties:
                continue  # quantized above, or stored under the weight it is tied to
            owner = model.get_submodule(owner_name)
            value = cast(Tensor, getattr(owner, tensor_name))  # masked: pruned entries are exactly zero
            keep = _mask(owner, tensor_name)
            shared = _shared(owner, tensor_name)
            if shared is not None:
                if dtype is not None:
                    shared.codebook = cast(Tensor, shared.codebook).to(dtype)
                records[key] = _channels_first(shared, _transposed(owner, tensor_name))
                continue
        elif ".parametrizations." in f".{key}" or f"{INPUT_QUANTIZER}." in key:
            continue  # quantizer and mask state, encoded above
        elif key in ties:
            continue
        if not isinstance(value, Tensor):
            continue
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        transposed = value.dim() == 2 and _transposed(model.get_submodule(owner_name), tensor_name)
        records[key] = _channels_first(Record(value.detach(), keep), transposed)
    return records, modules


def _channels_first(record: Record, transposed: bool) -> Record:
    """``record`` with its value and mask transposed to ``(out, in)`` when the module stores ``(in, out)``."""
    if not transposed:
        return record
    keep = None if record.keep is None else record.keep.t()
    return Record(
        record.value.t(), keep, record.quant, record.scale, record.zero_point, record.codebook, True
    )


def _zero_codes(record: Record) -> Tensor:
    quant = cast(dict[str, Any], record.quant)
    zeros = torch.zeros(record.value.shape, device=record.value.device)
    return quantize_weight(
        zeros,
        cast(Tensor, record.scale),
        cast(Tensor, record.zero_point),
        quant["bits"],
        quant["symmetric"],
        quant["granularity"],
        quant["group_size"],
    )


def encode(records: dict[str, Record]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors for ``model.safetensors`` and the manifest's per-tensor entries."""
    tensors: dict[str, Tensor] = {}
    entries: dict[str, Any] = {}
    for key, record in records.items():
        if record.codebook is not None:
            book_tensors, entries[key] = codebook_encoding.encode(
                key, record.codebook, record.value, record.codebook.dtype
            )
            if record.transposed:
                entries[key]["transposed"] = True
            tensors.update(book_tensors)
            continue
        value, quant = record.value, record.quant
        bits = quant["bits"] if quant else value.element_size() * 8
        entry: dict[str, Any] = {
            "encoding": f"int{bits}" if quant else "raw",
            "shape": list(value.shape),
            "dtype": "float32" if quant else str(value.dtype).removeprefix("torch."),
        }
        if record.transposed:
            entry["transposed"] = True  # stored (out, in); the module holds the transpose
        if record.keep is not None:
            kept = int(record.keep.sum())
            if math.ceil(value.numel() / 8) + math.ceil(kept * bits / 8) < math.ceil(
                value.numel() * bits / 8
            ):
                if quant and not bool((value[~record.keep] == _zero_codes(record)[~record.keep]).all()):
                    raise ValueError(
                        f"export: pruned entries of {key!r} do not encode zero; mask and codes disagree."
                    )
                tensors[f"{key}.mask"] = pack_bits(record.keep).cpu()
                entry.update(mask=f"{key}.mask", nnz=kept)
                value = value[record.keep]
        tensors[key] = (
            (pack_int4(value) if quant and bits == 4 else value).detach().cpu().contiguous().clone()
        )
        if quant:
            tensors[f"{key}.scale"] = cast(Tensor, record.scale).float().cpu().contiguous()
            entry.update(
                granularity=quant["granularity"],
                group_size=quant["group_size"],
                symmetric=quant["symmetric"],
                scale=f"{key}.scale",
                zero_point=None,
            )
            if not quant["symmetric"]:
                tensors[f"{key}.zero_point"] = (
                    cast(Tensor, record.zero_point).to(torch.int8).cpu().contiguous()
                )
                entry["zero_point"] = f"{key}.zero_point"
        entries[key] = entry
    return tensors, entries


def activation_ranges(model: nn.Module) -> dict[str, Tensor]:
    """Static input ranges, stored as ``<module>.input_quantizer.scale`` / ``.zero_point`` tensors."""
    tensors = {}
    for name, act in activation_quantizers(model):
        if act.mode == "static":
            key = f"{name}.{INPUT_QUANTIZER}" if name else INPUT_QUANTIZER
            tensors[f"{key}.scale"] = act.scale.float().cpu().reshape(1)
            tensors[f"{key}.zero_point"] = act.zero_point.float().cpu().reshape(1)
    return tensors
