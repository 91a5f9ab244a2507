"""``export_onnx``: a lit_opt artifact (or a trained model) as an ONNX graph that ONNX Runtime runs.

The graph is traced from the model :func:`lit_opt.load` rebuilds with the reference kernel (pruned
heads and neurons already removed, the vocabulary remap in place), with every quantized layer
swapped for a stand-in of :mod:`lit_opt.export.onnx_graph`: the artifact's int8 codes and scales go
into the graph as they are, never re-quantized. ONNX Runtime's graph optimizations are then applied
once and the optimized graph is saved (``model.onnx``, dynamic batch and sequence axes) with
``lit_opt_onnx.json`` (what was exported, the files' hashes, the measured agreement with the loaded
model) and the artifact's tokenizer files beside it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from lit_opt._checks import check_flag, check_path
from lit_opt.export.exporter import export
from lit_opt.export.first_token import first_token_last_layer
from lit_opt.export.format import MANIFEST, WEIGHTS, read_artifact, sha256, write_atomically
from lit_opt.export.loader import load
from lit_opt.export.onnx_attention import fuse_self_attention
from lit_opt.export.onnx_graph import DYNAMIC_ACTIVATIONS, OnnxInt8Linear, OnnxQuantizedEmbedding
from lit_opt.export.onnx_initializers import share_small_initializers
from lit_opt.export.onnx_layer_norm import decompose_layer_norms
from lit_opt.nn.activation_quantizer import INPUT_QUANTIZER
from lit_opt.nn.quantized import QuantizedEmbedding, QuantizedLinear
from lit_opt.submodules import replace_submodule

log = logging.getLogger(__name__)
ONNX_FILE = "model.onnx"
ONNX_MANIFEST = "lit_opt_onnx.json"
ONNX_FORMAT = "lit_opt.onnx"
ONNX_FORMAT_VERSION = 1
OPSET = 17
TOKEN_INPUTS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
#: Largest |ONNX - loaded reference| logit difference export accepts on its check inputs: dynamic
#: int8 activations are rounded per tensor (uint8) by ONNX Runtime, per row (int8) by the reference.
TOLERANCE = 0.25


def require_onnxruntime() -> tuple[ModuleType, ModuleType]:
    """``(onnx, onnxruntime)``, or an ``ImportError`` that names the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            f"ONNX export and ONNX Runtime need the 'onnx' and 'onnxruntime' packages ({err}). "
            "HINT: pip install 'lit_opt[onnx]'"
        ) from None
    return onnx, onnxruntime


class _Without(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _without_log(logger: logging.Logger, prefix: str) -> Iterator[None]:
    """``logger`` drops messages starting with ``prefix`` for the duration."""
    dropped = _Without(prefix)
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


def _artifact(source: Any, scratch: Path) -> Path:
    """The artifact directory ``source`` names, or one exported from the model ``source`` into ``scratch``."""
    if isinstance(source, nn.Module):
        # a float model (a teacher) is a normal source here: no "carries no quantizer" advice
        with _without_log(logging.getLogger("lit_opt.export.exporter"), "export: %s carries no quantizer"):
            return export(source, scratch / "artifact")
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(
            f"source={source!r} is not accepted; expected a trained model (nn.Module) or a lit_opt artifact "
            "directory. HINT: e.g. lit_opt.export_onnx('artifacts/minilm-int8', 'artifacts/minilm-onnx')."
        )
    root = Path(source)
    if not (root / MANIFEST).is_file():
        raise ValueError(
            f"source={str(source)!r} is not a lit_opt artifact (no {MANIFEST} in it). "
            "HINT: pass the directory lit_opt.export wrote, or the trained model itself."
        )
    read_artifact(root)  # a truncated or tampered artifact fails here, with the reason
    return root


def _swap(model: nn.Module, int4_embeddings: str, dynamic_activations: str) -> dict[str, str]:
    """Replace quantized layers by their ONNX stand-ins; returns {initializer name: artifact tensor key}."""
    codes: dict[str, str] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantizedLinear):
            replace_submodule(model, name, OnnxInt8Linear.from_quantized(module, name, dynamic_activations))
            codes[f"{name}.codes_t"] = f"{name}.weight"
        elif isinstance(module, QuantizedEmbedding):
            if int4_embeddings == "dequantize":
                table = nn.Embedding.from_pretrained(module.weight.float(), freeze=True)
                remap = module.remap
                replacement: nn.Module = table if remap is None else _Remapped(table, remap)
            else:
                replacement = OnnxQuantizedEmbedding.from_quantized(module, bits=4)
                codes[f"{name}.codes"] = f"{name}.weight"
            replace_submodule(model, name, replacement)
    for name, module in model.named_modules():
        if hasattr(module, INPUT_QUANTIZER):  # e.g. a quantized convolution: no integer ONNX operator here
            raise ValueError(
                f"export_onnx cannot express layer {name!r}: a {type(module).__name__} with quantized inputs "
                "(ONNX integer operators cover Linear layers and embeddings). HINT: exclude it from QATCallback."
            )
    return codes


class _Remapped(nn.Module):
    """A dequantized table read through a pruned vocabulary's remap."""

    remap: Tensor

    def __init__(self, table: nn.Embedding, remap: Tensor) -> None:
        super().__init__()
        self.table = table
        self.register_buffer("remap", remap.to(torch.int64).unsqueeze(-1))

    def forward(self, ids: Tensor) -> Tensor:
        return self.table(nn.functional.embedding(ids, self.remap).squeeze(-1))


def _token_inputs(model: nn.Module, vocab: int, batch: int, length: int, seed: int) -> dict[str, Tensor]:
    import inspect

    accepted = inspect.signature(model.forward).parameters
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length // 2 :] = 0  # one padded row: the mask is part of what is checked
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {k: v for k, v in inputs.items() if k in accepted}


def _output_names(output: Any) -> list[str]:
    if isinstance(output, dict):
        return [k for k, v in output.items() if isinstance(v, Tensor)]
    return ["output"]


def _attention_shape(model: nn.Module) -> tuple[int, int]:
    """``(heads, hidden)`` for ORT's attention fusion when every attention keeps the config's heads, else
    ``(0, 0)`` (ORT then detects them; layers with pruned heads differ, and are left unfused)."""
    config: Any = getattr(model, "config", None)
    heads = {getattr(m, "num_attention_heads", None) for m in model.modules()} - {None}
    expected, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if isinstance(expected, int) and isinstance(hidden, int) and heads == {expected}:
        return expected, hidden
    return 0, 0


def _optimize(ort: ModuleType, raw: Path, target: Path, heads: int, hidden: int) -> str:
    """ORT's transformer fusions (attention, LayerNorm, GELU, SkipLayerNorm) where they load, else its session
    optimizer."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        # its fusions log warnings that are expected here (its shape inference does not know ORT's own
        # MatMulIntegerToFloat, which the per-row graphs use); silenced for the call
        previous = logging.root.manager.disable
        logging.disable(max(previous, logging.WARNING))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optimized = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden)
        finally:
            logging.disable(previous)
        optimized.save_model_to_file(str(target))
        return "onnxruntime.transformers.optimizer (model_type=bert)"
    except Exception as err:  # noqa: BLE001 - any failure of the optional fusions falls back to ORT's own
        log.info("export_onnx: transformer fusions unavailable (%s); using ORT's session optimizer", err)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    return "onnxruntime session graph optimization (ORT_ENABLE_EXTENDED)"


def export_onnx(
    source: nn.Module | str | os.PathLike,
    dirpath: str | os.PathLike,
    int4_embeddings: Literal["gather", "dequantize"] = "gather",
    optimize: bool = True,
    overwrite: bool = True,
    decompose_layer_norm: bool = True,
    first_token_only: bool = True,
    dynamic_activations: Literal["per_row", "per_tensor"] = "per_row",
    fuse_attention: bool = True,
) -> Path:
    """Write ``source`` as ``model.onnx`` plus ``lit_opt_onnx.json`` and the tokenizer files into ``dirpath``.

    Args:
        source: a lit_opt artifact directory, or a trained model (exported with :func:`lit_opt.export`
            first: its QAT codes, pruning and vocabulary remap).
        dirpath: the directory to write (under a temporary name, renamed when complete).
        int4_embeddings: ``"gather"`` keeps int4 embedding codes packed in the graph and dequantizes the
            rows a batch reads; ``"dequantize"`` stores the table as float32 (8x the bytes).
        optimize: apply ONNX Runtime's graph optimizations once and save the optimized graph.
        overwrite: replace an existing ``dirpath``.
        decompose_layer_norm: write layer normalizations as primitive operators after the fusions
            (:mod:`lit_opt.export.onnx_layer_norm`: ONNX Runtime's own kernel measured 3x slower on
            this project's CPU); ``False`` keeps ``LayerNormalization``/``SkipLayerNormalization``.
        first_token_only: for a BERT sequence classifier, compute the last encoder layer for the first
            token alone, the only one its pooler reads (:mod:`lit_opt.export.first_token`; the
            logits are the same maths). Other models are exported whole either way.
        dynamic_activations: how layers trained with dynamic activations quantize them in the graph:
            ``"per_row"`` as they were trained (symmetric int8 per row: the reference kernel's codes,
            a row's logits independent of its batch); ``"per_tensor"``, ONNX Runtime's fused dynamic
            quantization (one uint8 range per batch; faster at large batches, less faithful).
        fuse_attention: write each encoder self-attention that ONNX Runtime's optimizer cannot fuse
            (integer projections, or heads pruned per layer) as one ``MultiHeadAttention`` node
            (:mod:`lit_opt.export.onnx_attention`); ``False`` leaves it as traced.

    Returns:
        ``dirpath``, which holds ``model.onnx``.

    Raises:
        ValueError: a missing or invalid source, a model that is not a token model (Hugging Face),
            a layer the ONNX integer operators cannot express, or a graph whose outputs disagree
            with the loaded model beyond :data:`TOLERANCE`.
        ImportError: onnx or onnxruntime is not installed.

    Example::

        >>> path = lit_opt.export_onnx("artifacts/minilm-int8", "artifacts/minilm-onnx")  # doctest: +SKIP
        >>> model = lit_opt.load_onnx(path)  # doctest: +SKIP
        >>> model(**tokenizer(["a fine film"], return_tensors="pt")).logits  # doctest: +SKIP
    """
    check_path("dirpath", dirpath)
    check_flag("first_token_only", first_token_only)
    if int4_embeddings not in ("gather", "dequantize"):
        raise ValueError(
            f"int4_embeddings={int4_embeddings!r} is not one of ('gather', 'dequantize'). "
            "HINT: 'gather' keeps the file small."
        )
    if dynamic_activations not in DYNAMIC_ACTIVATIONS:
        raise ValueError(
            f"dynamic_activations={dynamic_activations!r} is not one of {DYNAMIC_ACTIVATIONS}. HINT: 'per_row' "
            "computes what QATCallback(activations='dynamic') trained."
        )
    onnx, ort = require_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="lit_opt_onnx-") as scratch_name:
        scratch = Path(scratch_name)
        artifact = _artifact(source, scratch)
        manifest, _ = read_artifact(artifact)
        recipe = manifest.get("architecture") or {}
        vocab = (recipe.get("config") or {}).get("vocab_size")
        if recipe.get("type") != "huggingface" or not isinstance(vocab, int):
            raise ValueError(
                f"source={str(source) if not isinstance(source, nn.Module) else type(source).__name__!r} is not a "
                "Hugging Face token model; export_onnx writes graphs that take input_ids and attention_mask. "
                "HINT: export other models with torch.onnx.export on lit_opt.load(..., kernel='reference')."
            )
        reference = load(artifact, kernel="reference")
        if hasattr(reference, "set_attn_implementation"):
            cast(Any, reference).set_attn_implementation(
                "eager"
            )  # plain MatMul/Softmax, the pattern ORT fuses
        model = copy.deepcopy(reference)
        codes = _swap(model, int4_embeddings, dynamic_activations)
        heads, hidden = _attention_shape(reference)
        # ORT fuses float attention itself (one product for Q, K and V) when every layer keeps its heads
        fused_attention = fuse_self_attention(model, leave_float=heads > 0) if fuse_attention else 0
        first_token = first_token_only and first_token_last_layer(model)
        example = _token_inputs(reference, vocab, 2, 16, seed=0)
        with torch.inference_mode():
            names = _output_names(reference(**example))
        raw = scratch / "raw.onnx"
        axes = {k: {0: "batch", 1: "sequence"} for k in example}
        axes.update({k: {0: "batch"} for k in names})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (),
                str(raw),
                kwargs=example,
                input_names=list(example),
                output_names=names,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
        graph_file = scratch / ONNX_FILE
        how = "none"
        if optimize:
            how = _optimize(ort, raw, graph_file, heads, hidden)
        else:
            shutil.copyfile(raw, graph_file)
        graph = onnx.load(str(graph_file))
        decomposed = decompose_layer_norms(graph) if decompose_layer_norm else 0
        share_small_initializers(graph)  # Q, K and V then quantize their shared input once
        onnx.save(graph, str(graph_file))
        check = _token_inputs(reference, vocab, 4, 32, seed=1)
        difference, agreement = _compare(ort, graph_file, reference, check, names[0])
        if difference > TOLERANCE:
            raise ValueError(
                f"export_onnx: the ONNX graph's {names[0]} differ from the loaded model's by up to {difference:.3g} "
                f"(tolerance {TOLERANCE}); the graph is not written. HINT: report this with the artifact's {MANIFEST}."
            )
        onnx_manifest = {
            "format": ONNX_FORMAT,
            "format_version": ONNX_FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": list(example),
            "outputs": names,
            "opset": OPSET,
            "onnxruntime_version": ort.__version__,
            "optimization": how,
            "int4_embeddings": int4_embeddings,
            "layer_norm": f"decomposed ({decomposed} nodes)" if decomposed else "onnxruntime kernels",
            "last_layer": "first token only" if first_token else "every token",
            "attention": f"MultiHeadAttention ({fused_attention} layers)" if fused_attention else "as traced",
            "dynamic_activations": dynamic_activations,
            "int8_initializers": codes,
            "check": {
                "max_abs_difference": difference,
                "top1_agreement": agreement,
                "against": "lit_opt.load(kernel='reference')",
            },
            "architecture": manifest.get("architecture"),
            "source": {"format_version": manifest.get("format_version"), "plan": manifest.get("plan")},
        }
        extras = [p for p in artifact.iterdir() if p.is_file() and p.name not in (MANIFEST, WEIGHTS)]

        def fill(tmp: Path) -> None:
            shutil.copyfile(graph_file, tmp / ONNX_FILE)
            for extra in extras:  # the tokenizer's files
                shutil.copyfile(extra, tmp / extra.name)
            onnx_manifest["files"] = {
                ONNX_FILE: {"bytes": (tmp / ONNX_FILE).stat().st_size, "sha256": sha256(tmp / ONNX_FILE)}
            }
            (tmp / ONNX_MANIFEST).write_text(json.dumps(onnx_manifest, indent=2, sort_keys=True))

        path = write_atomically(Path(dirpath), fill, overwrite)
    log.info(
        "export_onnx: wrote %s (max |difference| %.3g, top-1 agreement %.3f)", path, difference, agreement
    )
    return path


def _compare(
    ort: ModuleType, graph_file: Path, reference: nn.Module, inputs: dict[str, Tensor], output: str
) -> tuple[float, float]:
    """Largest absolute difference and top-1 agreement of the graph's first output with ``reference``'s."""
    session = ort.InferenceSession(str(graph_file), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run([output], {k: v.numpy() for k, v in inputs.items()})[0])
    with torch.inference_mode():
        expected = reference(**inputs)[output].float()
    agreement = float((got.argmax(-1) == expected.argmax(-1)).float().mean())
    return float((got - expected).abs().max()), agreement


def quantize_onnx_dynamic(
    onnx_dir: str | os.PathLike, dirpath: str | os.PathLike, overwrite: bool = True
) -> Path:
    """ONNX Runtime's own post-training int8 of an :func:`export_onnx` graph (``quantize_dynamic``,
    per-channel int8 weights, dynamic uint8 activations): what one call of Optimum's quantizer gives.

    Used as a peer: its weights are re-quantized from the float graph, unlike :func:`export_onnx`'s.

    Example::

        >>> quantize_onnx_dynamic("artifacts/teacher-onnx", "artifacts/teacher-onnx-int8")  # doctest: +SKIP
    """
    from lit_opt.export.onnx_runtime import _read

    root, manifest = _read(onnx_dir)
    _, ort = require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def fill(tmp: Path) -> None:
        # ORT advises pre-processing on the root logger: the graph is already optimized
        with (
            warnings.catch_warnings(),
            _without_log(logging.getLogger(), "Please consider"),
        ):
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(root / ONNX_FILE),
                str(tmp / ONNX_FILE),
                per_channel=True,
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": 1},  # float: the fused ORT operators' outputs
            )
        for extra in root.iterdir():
            if extra.is_file() and extra.name not in (ONNX_FILE, ONNX_MANIFEST):
                shutil.copyfile(extra, tmp / extra.name)
        graph = tmp / ONNX_FILE
        updated = {
            **manifest,
            "quantization": "onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8)",
            "check": None,
            "int8_initializers": {},
            "files": {ONNX_FILE: {"bytes": graph.stat().st_size, "sha256": sha256(graph)}},
        }
        (tmp / ONNX_MANIFEST).write_text(json.dumps(updated, indent=2, sort_keys=True))

    return write_atomically(Path(dirpath), fill, overwrite)
