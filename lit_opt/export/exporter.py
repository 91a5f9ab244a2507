"""``export``: write a model's weights in their compressed encodings (the artifact of DESIGN.md)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from lit_opt.export import architecture
from lit_opt.export.format import FORMAT, FORMAT_VERSION, WEIGHTS, sha256, write_atomically, write_manifest
from lit_opt.functional.quantize import pack_int4
from lit_opt.nn.activation_quantizer import INPUT_QUANTIZER
from lit_opt.quantization import (
    QuantizationConfig,
    activation_quantizers,
    prepare_quantization,
    quantizer_input,
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


def _encode(
    model: nn.Module, dtype: torch.dtype | None
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """Split ``model``'s state into encoded tensors, per-tensor manifest entries and per-module entries."""
    tensors: dict[str, Tensor] = {}
    entries: dict[str, Any] = {}
    modules: dict[str, Any] = {}
    prefix = lambda name: f"{name}." if name else ""  # noqa: E731
    for name, module, quantizer in weight_quantizers(model):
        key = f"{prefix(name)}weight"
        w = quantizer_input(module, quantizer).detach()
        codes, scale, zero_point = quantizer.codes(w)
        encoded = pack_int4(codes) if quantizer.bits == 4 else codes
        tensors[key] = encoded.cpu().contiguous()
        tensors[f"{key}.scale"] = scale.float().cpu().contiguous()
        entry = {
            "encoding": f"int{quantizer.bits}",
            "shape": list(w.shape),
            "dtype": str(w.dtype).removeprefix("torch."),
            "granularity": quantizer.granularity,
            "group_size": quantizer.group_size,
            "symmetric": quantizer.symmetric,
            "scale": f"{key}.scale",
            "zero_point": None,
        }
        if not quantizer.symmetric:
            tensors[f"{key}.zero_point"] = zero_point.to(torch.int8).cpu().contiguous()
            entry["zero_point"] = f"{key}.zero_point"
        entries[key] = entry
        modules[name] = {"type": type(module).__name__.removeprefix("Parametrized"), "activations": "none"}
    for name, act in activation_quantizers(model):
        spec = {"activations": act.mode, "per_sample": act.per_sample, "symmetric": act.symmetric}
        if act.mode == "static":
            tensors[f"{prefix(name)}{INPUT_QUANTIZER}.scale"] = act.scale.float().cpu().reshape(1)
            tensors[f"{prefix(name)}{INPUT_QUANTIZER}.zero_point"] = act.zero_point.float().cpu().reshape(1)
        modules.setdefault(name, {}).update(spec)
    original = "parametrizations.weight.original"
    for key, value in model.state_dict().items():
        if key.endswith(original):
            key = key[: -len(original)] + "weight"
            if key in entries:
                continue  # written above as codes
        elif ".parametrizations." in f".{key}" or f"{INPUT_QUANTIZER}." in key:
            continue  # quantizer state: encoded above
        if not isinstance(value, Tensor):
            continue
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.detach().cpu().contiguous().clone()
        entries[key] = {
            "encoding": "raw",
            "shape": list(value.shape),
            "dtype": str(value.dtype).removeprefix("torch."),
        }
    return tensors, entries, modules


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
        model: the trained model (the compressed layers may sit anywhere inside it).
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
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {sorted(DTYPES)} or None.")
    if isinstance(quantization, dict):
        quantization = QuantizationConfig(**quantization)
    source = "post-training" if quantization is not None else "qat"
    if quantization is not None:
        model = _post_training_quantize(model, quantization, calibration)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tensors, entries, modules = _encode(model, DTYPES[dtype] if dtype else None)
    finally:
        model.train(was_training)
    if not modules:
        log.warning(
            "export: %s carries no quantizer; its tensors are written as they are.", type(model).__name__
        )

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
                "plan": {"quantization": source if modules else None},
                "files": {
                    WEIGHTS: {"bytes": (tmp / WEIGHTS).stat().st_size, "sha256": sha256(tmp / WEIGHTS)}
                },
            },
        )

    path = write_atomically(Path(dirpath), fill, overwrite)
    log.info("export: wrote %s (%d quantized modules)", path, len(modules))
    return path
