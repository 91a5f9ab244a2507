"""``export``: write a model's weights in their compressed encodings (the artifact specified in docs/format.md)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from lit_opt._checks import check_module, check_path
from lit_opt.export import architecture, structure
from lit_opt.export.format import FORMAT, FORMAT_VERSION, WEIGHTS, sha256, write_atomically, write_manifest
from lit_opt.export.records import activation_ranges, collect, encode, tied_keys
from lit_opt.nn.low_rank import LowRankLinear
from lit_opt.parametrizations.mask import Mask
from lit_opt.quantization import (
    QuantizationConfig,
    activation_quantizers,
    prepare_quantization,
    set_quantization_state,
    weight_quantizers,
)

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _calibrate(model: nn.Module, batches: Iterable[Any]) -> int:
    """Run ``batches`` through ``model`` with static observers observing; returns the batch count."""
    quantizers = [q for _, q in activation_quantizers(model)]
    model.eval()
    for q in quantizers:
        q.train()
    count = 0
    with torch.no_grad():
        for batch in batches:
            if isinstance(batch, dict):
                model(**batch)
            elif isinstance(batch, (tuple, list)):
                model(batch[0])
            else:
                model(batch)
            count += 1
    for q in quantizers:
        q.eval()
    return count


def _post_training_quantize(
    model: nn.Module, config: QuantizationConfig, calibration: Iterable[Any] | None
) -> nn.Module:
    if any(True for _ in weight_quantizers(model)):
        raise ValueError(
            "quantization=... asks for post-training quantization, but the model already carries quantizers "
            "(it was trained with QATCallback). HINT: export it without quantization=..."
        )
    if config.activations == "static" and calibration is None:
        raise ValueError(
            "quantization.activations='static' needs calibration batches to observe ranges. "
            "HINT: pass calibration=[batch, ...] (a few batches of your validation data) or use 'dynamic'."
        )
    quantized = copy.deepcopy(model)
    prepare_quantization(quantized, config, owner="post-training")
    if config.activations == "static":
        seen = _calibrate(quantized, calibration)  # type: ignore[arg-type]
        if not seen:
            raise ValueError("calibration=... yielded no batch. HINT: pass at least one batch.")
        set_quantization_state(quantized, "post-training", observing=False)
    return quantized


def _quantization_config(options: dict[str, Any]) -> QuantizationConfig:
    """``QuantizationConfig(**options)``, with unknown keys named in a ``ValueError``."""
    accepted = sorted(field.name for field in dataclasses.fields(QuantizationConfig))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"quantization={options!r} has unknown keys {unknown}; accepted: {accepted}. "
            "HINT: e.g. quantization={'weight_bits': 8, 'activations': 'dynamic'}."
        )
    return QuantizationConfig(**options)


def export(
    model: nn.Module,
    dirpath: str | Path,
    quantization: QuantizationConfig | dict[str, Any] | None = None,
    calibration: Iterable[Any] | None = None,
    dtype: Literal["float32", "float16", "bfloat16"] | None = None,
    tokenizer: Any = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` as a lit_opt artifact: int8/int4 codes plus scales, the rest as it is.

    A model trained with ``QATCallback`` is written with the quantization it learned. A plain
    model can be quantized on the way out (post-training quantization) by passing
    ``quantization`` (the arguments of :class:`~lit_opt.quantization.QuantizationConfig`; static
    activations need ``calibration`` batches: dicts are passed as keyword arguments, tuples give
    their first element). The model itself is never modified.

    Args:
        model: the trained model (the compressed layers may sit anywhere inside it). A module with
            an ``export_module()`` method (``DistillationModule``) exports what it returns.
        dirpath: directory to write; written under a temporary name, then renamed.
        quantization: post-training quantization settings, for a model trained without QAT.
        calibration: batches for static activation ranges (post-training only).
        dtype: cast the tensors left in floating point (``"float16"``/``"bfloat16"``).
        tokenizer: a Hugging Face tokenizer to save beside the weights.
        overwrite: replace an existing artifact at ``dirpath``.

    Returns:
        The artifact's directory.

    Raises:
        ValueError: invalid ``quantization``/``dtype``, or post-training quantization of a model that
            already carries quantizers.

    Example::

        >>> import torch, tempfile
        >>> model = torch.nn.Sequential(torch.nn.Linear(16, 8))
        >>> path = export(model, tempfile.mkdtemp() + "/mlp", quantization={"weight_bits": 8})
        >>> sorted(p.name for p in path.iterdir())
        ['lit_opt.json', 'model.safetensors']
    """
    check_module("model", model, "HINT: pass the trained model or LightningModule.")
    check_path("dirpath", dirpath)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {sorted(DTYPES)} or None.")
    export_module = getattr(model, "export_module", None)
    if callable(export_module):  # e.g. DistillationModule: the student, with names relative to it
        model = export_module()
    if isinstance(quantization, dict):
        quantization = _quantization_config(quantization)
    source = "post-training" if quantization is not None else "qat"
    if quantization is not None:
        model = _post_training_quantize(model, quantization, calibration)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            records, modules = collect(model, DTYPES[dtype] if dtype else None)
            pruned = any(isinstance(m, Mask) for m in model.modules())
            plan: dict[str, Any] = {
                "structure": structure.remapped_embeddings(model, records)
                + (structure.remove_dead_units(model, records) if pruned else []),
                "notes": [],
            }
            ties = tied_keys(model)
            if ties:  # stored once, under the first module's key; load() ties them again
                plan["tied"] = ties
            low_rank = {n: m.config() for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
            if low_rank:  # the factorized layers load() rebuilds before the tensors go in
                plan["low_rank"] = low_rank
            tensors, entries = encode(records)
            tensors.update(activation_ranges(model))
    finally:
        model.train(was_training)
    shared = any(entry["encoding"] == "codebook" for entry in entries.values())
    if not modules and not plan["structure"] and not shared and not low_rank:
        log.warning(
            "export: %s carries no quantizer, pruning, weight sharing or factorization; its tensors are written as they are.",
            type(model).__name__,
        )
    if any(entry.get("mask") for entry in entries.values()):
        plan["notes"].append(
            "sparse tensors are stored as a packed mask plus their kept values (a smaller file) and loaded "
            "dense: unstructured and N:M sparsity give no speedup with CPU kernels; prune rows or heads for speed"
        )
    if shared:
        plan["notes"].append(
            "shared weights are stored as a float16 codebook plus bit-packed indices (a smaller file) and loaded "
            "dense as codebook[indices]: weight sharing gives no speedup"
        )
    for note in plan["notes"]:
        log.warning("export: %s", note)

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        from lit_opt import __version__

        write_manifest(
            tmp,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "lit_opt_version": __version__,
                "torch_version": torch.__version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "architecture": architecture.describe(model),
                "tensors": entries,
                "modules": modules,
                "plan": {"quantization": source if modules else None, **plan},
                "files": {
                    WEIGHTS: {"bytes": (tmp / WEIGHTS).stat().st_size, "sha256": sha256(tmp / WEIGHTS)}
                },
            },
        )

    path = write_atomically(Path(dirpath), fill, overwrite)
    log.info("export: wrote %s (%d quantized modules)", path, len(modules))
    return path
