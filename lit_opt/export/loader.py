"""``load``: rebuild a runnable model from an artifact, with quantized layers on fast kernels."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from lit_opt._checks import check_device, check_flag, check_module, check_path
from lit_opt.export import architecture, structure
from lit_opt.export import codebook as codebook_encoding
from lit_opt.export.first_token import first_token_last_layer
from lit_opt.export.format import MANIFEST, read_artifact
from lit_opt.functional.quantize import dequantize_weight, unpack_int4, weight_blocks
from lit_opt.functional.sparsity import unpack_bits
from lit_opt.module_types import layout_of
from lit_opt.nn.activation_quantizer import INPUT_QUANTIZER, ActivationQuantizer, attach_input_quantizer
from lit_opt.nn.quantized import (
    KERNELS,
    QuantizedEmbedding,
    QuantizedLinear,
    kernel_problems,
    packed_int8_available,
    vnni_available,
)
from lit_opt.nn.remapped_embedding import RemappedEmbedding
from lit_opt.quantization import weight_quantizers
from lit_opt.restore import install_low_rank
from lit_opt.submodules import replace_submodule

log = logging.getLogger(__name__)
#: The dtypes ``load(dtype=...)`` keeps a model in.
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 in hardware (GPUs; CPUs with AVX-512 BF16 or AMX)."""
    if device.type == "cuda":
        return True
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def best_kernel(device: torch.device, generates: bool = False) -> str:
    """The fastest kernel measured for ``device``: bf16 where the hardware has it (GPUs, AMX CPUs), else
    the quantized engine's packed int8 matmuls (AVX2 CPUs), else reference fp32. A causal LM
    (``generates``) on a CPU with VNNI gets ``packed_int8``: decoding multiplies a few rows per step,
    where moving the weights costs more than the arithmetic, and the engine reproduces training's grid.

    Measured on all-MiniLM-L6-v2 (2 threads, seq 128): with AMX, bf16 3.1x fp32 at batch 32; on an
    AVX2-only CPU (AMD EPYC), bf16 is emulated (5.5x slower than fp32), ``torch._int_mm`` 28x slower,
    and ``packed_int8`` 1.5x faster than fp32. On an H200 (``python -m benchmarks.load_kernels``, seq 128):
    ``bf16`` 2.3x eager fp32 at batch 256 (launch-bound, about 0.9x, at batch 1 and 32), ``int8`` 0.9x.
    An AMD EPYC with AVX-512 BF16 and VNNI (no AMX) also runs bf16 natively: a MiniLM-sized Linear
    (384 -> 1536, 4096 tokens, 2 threads) took 34-39 ms in bf16, 40-45 ms in torch.ao dynamic int8,
    79-84 ms in fp32; for one row (decoding) a SmolLM2 MLP Linear (576 -> 1536) took 0.02 ms packed int8
    against 0.07-0.08 ms in bf16 or fp32, and its 49,152-row LM head 0.36 ms against 3.1 ms in bf16.
    """
    if device.type == "cpu" and generates and packed_int8_available() and vnni_available():
        return "packed_int8"
    if bf16_native(device):
        return "bf16"
    return "packed_int8" if device.type == "cpu" and packed_int8_available() else "reference"


def _auto_layer_kernel(
    model_kernel: str,
    device: torch.device,
    granularity: str,
    zero_point: Tensor,
    quantizer: ActivationQuantizer | None,
    group_size: int | None,
    codes: Tensor,
) -> str:
    """``kernel="auto"`` for one Linear: the model's kernel where it can run the layer, else, where the
    hardware has bf16 (outputs in the model's dtype), ``packed_int4`` on a CPU for int4 groups it takes and
    ``bf16`` for the rest, else ``reference``.

    Measured on an AMD EPYC with AVX-512 BF16 (2 threads), SmolLM2's int4 LM head (576 -> 49,152, groups
    of 32): 0.9-1.0 ms packed int4 against 3.1 ms bf16 for one row, 45 ms against 21 ms for 128 rows.
    """
    if not kernel_problems(model_kernel, granularity, zero_point, quantizer, group_size, codes):
        return model_kernel
    if not bf16_native(device):
        return "reference"
    if device.type == "cpu" and not kernel_problems(
        "packed_int4", granularity, zero_point, quantizer, group_size, codes
    ):
        return "packed_int4"
    return "bf16"


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):  # includes transformers' ModelOutput
        for key in list(value.keys()):
            value[key] = _cast_floats(value[key], dtype)
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    return value


def _inputs_to(dtype: torch.dtype) -> Callable[[nn.Module, tuple, dict], tuple[tuple, dict]]:
    """A forward pre-hook casting floating-point inputs to ``dtype``."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _cast_floats(args, dtype), _cast_floats(kwargs, dtype)

    return hook


def _outputs_to_fp32(module: nn.Module, args: tuple, output: Any) -> Any:
    return _cast_floats(output, torch.float32)


def _weight_codes(
    key: str, entry: dict[str, Any], tensors: dict[str, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    scale = tensors[entry["scale"]].float()
    zero_point = tensors[entry["zero_point"]].float() if entry.get("zero_point") else torch.zeros_like(scale)
    blocks = weight_blocks(
        torch.empty(entry["shape"], device="meta"), entry["granularity"], entry["group_size"]
    )
    zero_codes = zero_point.unsqueeze(-1).expand(blocks.shape).reshape(entry["shape"]).to(torch.int8)
    return _dense(key, entry, tensors, zero_codes), scale, zero_point


def _dense(key: str, entry: dict[str, Any], tensors: dict[str, Tensor], fill: Tensor) -> Tensor:
    """The stored values of ``key`` at full size: as stored, or scattered into ``fill`` through the packed mask."""
    shape = torch.Size(entry["shape"])
    data = tensors[key]
    count = entry["nnz"] if entry.get("mask") else shape.numel()
    values = unpack_int4(data, count) if entry["encoding"] == "int4" else data.reshape(-1)
    if not entry.get("mask"):
        return values.reshape(shape)
    keep = unpack_bits(tensors[entry["mask"]], shape.numel())
    if int(keep.sum()) != count:
        raise ValueError(
            f"the mask of tensor {key!r} keeps {int(keep.sum())} entries, not the {count} stored."
        )
    out = fill.reshape(-1).clone()
    out[keep] = values.to(out.dtype)
    return out.reshape(shape)


def _input_quantizer(
    name: str, spec: dict[str, Any], tensors: dict[str, Tensor]
) -> ActivationQuantizer | None:
    if spec.get("activations", "none") == "none":
        return None
    quantizer = ActivationQuantizer(spec["activations"], spec["per_sample"], spec["symmetric"])
    if quantizer.mode == "static":
        prefix = f"{name}." if name else ""
        quantizer.scale.copy_(tensors[f"{prefix}{INPUT_QUANTIZER}.scale"].reshape(()))
        quantizer.zero_point.copy_(tensors[f"{prefix}{INPUT_QUANTIZER}.zero_point"].reshape(()))
        quantizer.initialized.fill_(True)
        quantizer.observing.fill_(False)
    return quantizer.eval()


def _quantized_module(
    name: str,
    original: nn.Module,
    weight: tuple[Tensor, Tensor, Tensor],
    entry: dict[str, Any],
    spec: dict[str, Any],
    tensors: dict[str, Tensor],
    kernel: str,
    auto: bool,
    device: torch.device,
) -> nn.Module:
    codes, scale, zero_point = weight
    input_quantizer = _input_quantizer(name, spec, tensors)
    layout = layout_of(original)
    if isinstance(original, nn.Linear) or (layout is not None and layout.transposed):
        # a transposed Conv1D computes x @ W + b = F.linear(x, W.t(), b): the stored (out, in) codes
        if auto:
            kernel = _auto_layer_kernel(
                kernel, device, entry["granularity"], zero_point, input_quantizer, entry["group_size"], codes
            )
        return QuantizedLinear(
            codes,
            scale,
            zero_point,
            cast(Tensor | None, original.bias),
            entry["granularity"],
            entry["group_size"],
            kernel,
            input_quantizer,
        )
    if isinstance(original, nn.Embedding):
        out_dtype = torch.bfloat16 if kernel == "bf16" else torch.float32
        return QuantizedEmbedding(
            codes,
            scale,
            zero_point,
            entry["granularity"],
            entry["group_size"],
            original.padding_idx,
            out_dtype,
            original.remap if isinstance(original, RemappedEmbedding) else None,
        )
    if isinstance(original, (nn.Conv1d, nn.Conv2d)):
        # no integer convolution kernel: dequantized weights, activations quantized as in training
        dense = dequantize_weight(codes, scale, zero_point, entry["granularity"], entry["group_size"])
        original.weight = nn.Parameter(dense, requires_grad=False)
        if input_quantizer is not None and (kernel != "bf16" or input_quantizer.mode == "static"):
            attach_input_quantizer(original, input_quantizer)
        return original
    raise ValueError(
        f"{MANIFEST} quantizes module {name!r}, but the skeleton's is a {type(original).__name__}."
    )


def _tie(model: nn.Module, ties: dict[str, str], entries: dict[str, Any], where: str) -> None:
    """Make each tied weight the very parameter of the weight it is stored under (one tensor in memory)."""
    for key, source in ties.items():
        if source not in entries:
            raise ValueError(f"{where} ties {key!r} to {source!r}, which it does not hold.")
        owner, _, tensor_name = key.rpartition(".")
        source_owner, _, source_name = source.rpartition(".")
        module, source_module = model.get_submodule(owner), model.get_submodule(source_owner)
        value = getattr(source_module, source_name)
        if tuple(getattr(module, tensor_name).shape) != tuple(value.shape):
            raise ValueError(
                f"{where} ties {key!r} to {source!r}, but the skeleton's shapes differ. "
                "HINT: build the skeleton with the exported model's configuration."
            )
        setattr(module, tensor_name, value)


def load(
    dirpath: str | os.PathLike,
    model: nn.Module | None = None,
    device: str | torch.device = "cpu",
    kernel: Literal["auto", "reference", "int8", "bf16", "packed_int8", "packed_int4"] = "auto",
    dtype: Literal["float16", "bfloat16"] | None = None,
    first_token_only: bool = False,
) -> nn.Module:
    """Load an artifact written by :func:`lit_opt.export` into a runnable model (in eval mode).

    Args:
        dirpath: the artifact directory.
        model: a plain skeleton of the architecture (modified in place); optional when the artifact
            records a Hugging Face config or an importable class.
        device: where to run.
        kernel: ``"auto"`` (the fastest measured for ``device`` and the model's workload: ``"bf16"`` on
            CPUs with native bf16 and GPUs, ``"packed_int8"`` on other x86 CPUs and for causal LMs on
            CPUs with VNNI (decoding); a layer it cannot run gets ``"bf16"`` where the hardware has
            it, else ``"reference"``),
            ``"reference"`` (fp32, reproduces the fake-quantized model bit for bit), ``"int8"``
            (integer matmuls with dynamic int8 activations) or ``"bf16"`` (int8/int4 codes
            dequantized once to bf16; the whole model runs in bf16, inputs and outputs stay fp32,
            activations are not quantized) or ``"packed_int8"`` (symmetric per-channel/per-tensor codes
            prepacked for PyTorch's x86 quantized engine; activations on training's int8 grid with VNNI,
            else quantized per tensor to 7 bits on the fly) or ``"packed_int4"`` (int4 per-group codes,
            groups of 32-256, on PyTorch's CPU weight-only int4 matmul, activations in bf16).
        dtype: keep the model in ``"float16"`` or ``"bfloat16"``: its float tensors, the dequantized
            weights and the outputs (fast on GPUs); None (default) returns fp32 outputs. With
            ``kernel="auto"``, ``"float16"`` dequantizes to fp16 with the reference kernel where ``"bf16"``
            would have been chosen.
        first_token_only: for a BERT sequence classifier, compute the last encoder layer for the first
            token alone, the only row its pooler reads (:mod:`lit_opt.export.first_token`): the same
            logits, about a quarter fewer matrix products in a 3-layer encoder; that layer's rows of
            ``hidden_states``/``last_hidden_state`` then hold the first token only. Other models load
            whole either way.

    Returns:
        The model, its quantized layers replaced by :class:`~lit_opt.nn.QuantizedLinear` /
        :class:`~lit_opt.nn.QuantizedEmbedding`.

    Raises:
        FileNotFoundError: ``dirpath`` does not exist.
        ValueError: a truncated, modified or foreign artifact, or a skeleton that doesn't match it.
            Whatever the damage, the error is a ``ValueError`` naming the artifact (never a bare
            ``KeyError`` from deep inside); the artifact is untrusted input.

    Example::

        model = lit_opt.load("artifacts/minilm-int8")           # Hugging Face: no skeleton needed
        logits = model(**tokenizer(["a fine film"], return_tensors="pt")).logits
    """
    check_path("dirpath", dirpath)
    check_flag("first_token_only", first_token_only)
    if model is not None:
        check_module("model", model, "HINT: pass a plain skeleton of the architecture, or None.")
    device = check_device("device", device)
    if kernel not in ("auto", *KERNELS):
        raise ValueError(f"kernel={kernel!r} is not one of {('auto', *KERNELS)}.")
    if kernel in ("packed_int8", "packed_int4") and device.type != "cpu":
        raise ValueError(
            f"kernel={kernel!r} runs on the CPU only, not device={str(device)!r}. HINT: use kernel='auto'."
        )
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(
            f"dtype={dtype!r} is not one of {sorted(DTYPES)} or None. HINT: None loads fp32 outputs."
        )
    if dtype == "float16" and kernel == "bf16":
        raise ValueError(
            "dtype='float16' with kernel='bf16' asks for two dtypes. HINT: use dtype='bfloat16', or "
            "kernel='reference' to run fp16."
        )
    try:
        loaded = _load(dirpath, model, device, kernel, None if dtype is None else DTYPES[dtype])
    except (KeyError, IndexError, TypeError, AttributeError, RuntimeError, OverflowError) as err:
        raise ValueError(
            f"{Path(dirpath) / MANIFEST} describes a model that cannot be assembled ({type(err).__name__}: "
            f"{err}); the artifact is corrupt or was written by an incompatible lit_opt version."
        ) from err
    if first_token_only:
        first_token_last_layer(loaded)
    return loaded


def _load(
    dirpath: str | os.PathLike,
    model: nn.Module | None,
    device: torch.device,
    kernel: str,
    dtype: torch.dtype | None,
) -> nn.Module:
    """:func:`load` after its argument checks, without the translation of unexpected errors."""
    manifest, tensors = read_artifact(dirpath)
    where = str(Path(dirpath) / MANIFEST)
    if model is None:
        model = architecture.rebuild(manifest.get("architecture"), where)
    chosen = best_kernel(device, architecture.is_causal_lm(model)) if kernel == "auto" else kernel
    if chosen == "bf16" and dtype == torch.float16:
        chosen = "reference"  # kernel="auto": codes dequantized to fp16 instead of bf16
    elif any(True for _ in weight_quantizers(model)):
        raise ValueError(
            "model=... already carries lit_opt quantizers. HINT: pass a plain skeleton (the model as constructed)."
        )
    low_rank = manifest.get("plan", {}).get("low_rank", {})
    install_low_rank(model, low_rank)
    plan = manifest.get("plan", {}).get("structure", [])
    structure.shrink(model, plan)
    own = model.state_dict()
    entries: dict[str, Any] = manifest["tensors"]
    ties: dict[str, str] = manifest.get("plan", {}).get("tied", {})
    for key, entry in entries.items():
        if key not in own:
            raise ValueError(
                f"{where} holds tensor {key!r}, which the skeleton ({type(model).__name__}) lacks."
            )
        if list(own[key].shape) != list(entry["shape"])[:: -1 if entry.get("transposed") else 1]:
            raise ValueError(
                f"{where}: tensor {key!r} has shape {entry['shape']} but the skeleton's is {list(own[key].shape)}. "
                "HINT: build the skeleton with the same configuration as the exported model."
            )
    raw = {
        key: _dense(key, entry, tensors, torch.zeros(entry["shape"], dtype=tensors[key].dtype))
        for key, entry in entries.items()
        if entry["encoding"] == "raw"
    }
    raw.update(
        {
            key: codebook_encoding.decode(key, entry, tensors, where)
            for key, entry in entries.items()
            if entry["encoding"] == codebook_encoding.ENCODING
        }
    )
    structure.check_remaps(plan, raw, where)
    raw = {key: value.t() if entries[key].get("transposed") else value for key, value in raw.items()}
    raw.update(
        {f"{name}._extra_state" if name else "_extra_state": config for name, config in low_rank.items()}
    )
    missing = set(model.load_state_dict(raw, strict=False).missing_keys) - set(entries) - set(ties)
    if missing:
        raise ValueError(f"{where} lacks tensors the skeleton needs, e.g. {sorted(missing)[:3]}.")
    _tie(model, ties, entries, where)
    codes: dict[str, tuple[Tensor, Tensor, Tensor]] = {}  # tied modules share one set of codes
    for name, spec in manifest.get("modules", {}).items():
        key = f"{name}.weight" if name else "weight"
        key = ties.get(key, key)
        if key not in entries or not entries[key]["encoding"].startswith("int"):
            continue
        if key not in codes:
            codes[key] = _weight_codes(key, entries[key], tensors)
        replacement = _quantized_module(
            name,
            model.get_submodule(name),
            codes[key],
            entries[key],
            spec,
            tensors,
            chosen,
            kernel == "auto",
            device,
        )
        if name:
            replace_submodule(model, name, replacement)
        else:
            model = replacement
    if chosen == "bf16" or dtype is not None:
        model.to(dtype or torch.bfloat16)
        for module in model.modules():
            if isinstance(module, QuantizedEmbedding):
                module.out_dtype = dtype or torch.bfloat16
        model.register_forward_pre_hook(_inputs_to(dtype or torch.bfloat16), with_kwargs=True)
        if dtype is None:
            model.register_forward_hook(_outputs_to_fp32)
    log.info("load: %s with kernel=%s", dirpath, chosen)
    return model.to(device).eval()
