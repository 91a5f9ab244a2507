"""``load_onnx``: run a graph written by :func:`lit_opt.export_onnx` with ONNX Runtime, called like a loaded model.

The wrapper is an ``nn.Module`` without parameters: ``model(input_ids=..., attention_mask=...)``
returns an :class:`OnnxOutput` whose fields are the graph's outputs as torch tensors (``.logits``),
so :class:`~lit_opt.inference.DynamicBatcher`, ``lit-opt bench`` and the recipe's evaluation run it
as they run :func:`lit_opt.load`'s models. The session's threads are set explicitly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lit_opt._checks import check_int, check_path
from lit_opt.export import architecture
from lit_opt.export.format import sha256
from lit_opt.export.onnx import (
    ONNX_FILE,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    ONNX_MANIFEST,
    require_onnxruntime,
)
from lit_opt.export.onnx_layer_norm import LAYER_NORM_FUSIONS

#: What an input the caller leaves out defaults to (as in Hugging Face models).
DEFAULT_INPUTS = {"attention_mask": torch.ones_like, "token_type_ids": torch.zeros_like}


class OnnxOutput(dict):
    """The graph's outputs by name, also readable as attributes (``output.logits``), like a ``ModelOutput``.

    Example::

        >>> OnnxOutput(logits=torch.zeros(1, 2)).logits.shape
        torch.Size([1, 2])
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the ONNX graph has no output {name!r}; it has {list(self)}.") from None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())


class OnnxModel(nn.Module):
    """An ONNX Runtime session with a loaded model's call interface (build it with :func:`load_onnx`).

    Attributes:
        config: the Hugging Face config of the exported model (``vocab_size``, ``max_position_embeddings``, ...).
        input_names, output_names: the graph's.
        directory: where ``model.onnx`` lies.
    """

    def __init__(self, session: Any, manifest: dict[str, Any], directory: Path) -> None:
        super().__init__()
        self.session, self.manifest, self.directory = session, manifest, directory
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        recipe = manifest.get("architecture")
        self.config = architecture.hf_config(recipe) if recipe else None

    def forward(self, **inputs: Any) -> OnnxOutput:
        unknown = sorted(set(inputs) - set(self.input_names))
        if unknown or "input_ids" not in inputs:
            raise ValueError(
                f"inputs {sorted(inputs)} do not fit the ONNX graph in {self.directory}: "
                f"{f'unknown {unknown}' if unknown else 'input_ids is missing'}; it takes {self.input_names}. "
                "HINT: call model(input_ids=..., attention_mask=...) with the tokenizer's tensors."
            )
        ids = torch.as_tensor(inputs["input_ids"])
        feed = {}
        for name in self.input_names:
            value = inputs[name] if name in inputs else DEFAULT_INPUTS[name](ids)
            feed[name] = np.ascontiguousarray(torch.as_tensor(value).detach().cpu().numpy().astype(np.int64))
        outputs = self.session.run(self.output_names, feed)
        return OnnxOutput(
            {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs, strict=True)}
        )

    def extra_repr(self) -> str:
        return f"{self.directory / ONNX_FILE}, inputs={self.input_names}, outputs={self.output_names}"


def _read(dirpath: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The directory and its checked manifest; ``ValueError`` for anything lit_opt did not write."""
    root = Path(dirpath)
    if root.suffix == ".onnx":
        root = root.parent
    graph, manifest_path = root / ONNX_FILE, root / ONNX_MANIFEST
    if not root.is_dir():
        raise ValueError(
            f"dirpath={str(dirpath)!r} does not exist. HINT: pass the directory lit_opt.export_onnx wrote."
        )
    if not manifest_path.is_file():
        raise ValueError(
            f"{root} has no {ONNX_MANIFEST}: {'its ' + ONNX_FILE if graph.is_file() else 'it'} is not an ONNX "
            "export of lit_opt. HINT: write one with lit_opt.export_onnx (or `lit-opt export --format onnx`)."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{manifest_path} is not valid JSON ({err}); the export is corrupt.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ONNX_FORMAT:
        raise ValueError(f"{manifest_path} is not a lit_opt ONNX manifest (format {ONNX_FORMAT!r} expected).")
    if manifest.get("format_version") != ONNX_FORMAT_VERSION:
        raise ValueError(
            f"{manifest_path} has format_version {manifest.get('format_version')!r}; this lit_opt reads "
            f"{ONNX_FORMAT_VERSION}. HINT: export it again with this lit_opt version."
        )
    if not graph.is_file():
        raise ValueError(f"{graph} is missing from {root}. HINT: export it again with lit_opt.export_onnx.")
    recorded = (manifest.get("files") or {}).get(ONNX_FILE) or {}
    if graph.stat().st_size != recorded.get("bytes") or sha256(graph) != recorded.get("sha256"):
        raise ValueError(
            f"{graph} does not match the size and SHA-256 recorded in {ONNX_MANIFEST}: the file was modified "
            "or replaced. HINT: export it again with lit_opt.export_onnx."
        )
    return root, manifest


def load_onnx(dirpath: str | os.PathLike, threads: int | None = None) -> OnnxModel:
    """Open an ONNX export of lit_opt with ONNX Runtime (CPU), all graph optimizations on.

    Args:
        dirpath: the directory :func:`lit_opt.export_onnx` wrote (or its ``model.onnx``).
        threads: intra-op threads of the session (default: ``torch.get_num_threads()``); inter-op 1.

    Returns:
        An :class:`OnnxModel`: ``model(input_ids=..., attention_mask=...).logits``.

    Raises:
        ValueError: a missing directory, a missing or modified ``model.onnx``, a graph lit_opt did not
            write, or a bad ``threads``.
        ImportError: onnxruntime is not installed.

    Example::

        >>> model = lit_opt.load_onnx("artifacts/minilm-onnx", threads=2)  # doctest: +SKIP
        >>> model(**tokenizer(["a fine film"], return_tensors="pt")).logits.argmax(-1)  # doctest: +SKIP
    """
    check_path("dirpath", dirpath)
    if threads is not None:
        check_int("threads", threads, 1)
    _, ort = require_onnxruntime()
    root, manifest = _read(dirpath)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        # a graph with decomposed layer norms stays decomposed (ORT's fused kernel is the slower one)
        fusions = (
            list(LAYER_NORM_FUSIONS) if str(manifest.get("layer_norm", "")).startswith("decomposed") else []
        )
        session = ort.InferenceSession(
            str(root / ONNX_FILE), options, providers=["CPUExecutionProvider"], disabled_optimizers=fusions
        )
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types for a bad graph
        raise ValueError(f"ONNX Runtime cannot open {root / ONNX_FILE}: {err}") from None
    return OnnxModel(session, manifest, root)
