"""Which of a model's transformer blocks a shallower student should keep, chosen by measured loss.

Evenly spaced layers are a poor start for a deep cut: SmolLM2-135M keeping 10 of its 30 layers
evenly spaced has a perplexity of about 400,000 on held-out text before any training, and about
3,500 with the layers :func:`choose_layers` keeps (chosen on 768 training tokens). The search is
greedy: each round scores the removal of every remaining block by the model's loss on a few
calibration batches and drops the blocks whose removal costs least. Blocks are removed by
swapping the model's block list for a shorter one (restored afterwards), so any model that
:func:`~lit_opt.distillation.students.select_layers` handles can be searched.

Example::

    batches = [next(iter(datamodule.train_dataloader()))]
    layers = choose_layers(teacher, 10, batches)   # e.g. [0, 1, 2, 8, 11, 21, 24, 27, 28, 29]
    student = select_layers(teacher, layers)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lit_opt.distillation.causal_lm import CausalLMDistillationModule
from lit_opt.distillation.module import DistillationModule
from lit_opt.distillation.students import Task, _layer_list, only_blocks
from lit_opt.functional.distillation import causal_lm_cross_entropy

log = logging.getLogger(__name__)

Loss = Callable[[nn.Module, Mapping[str, Tensor]], Tensor]


def next_token_loss(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """Mean next-token cross-entropy of a causal LM on ``batch`` (``labels``, else the unpadded input ids).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
        ...     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2))
        >>> float(next_token_loss(model, {"input_ids": torch.tensor([[1, 2, 3, 4]])})) > 0
        True
    """
    inputs, labels, _ = CausalLMDistillationModule._split(batch)
    return causal_lm_cross_entropy(model(**inputs, use_cache=False).logits, labels)[0]


def label_loss(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """Mean cross-entropy of a classifier's logits against ``batch["labels"]``."""
    inputs, labels, _ = DistillationModule._split(batch)
    return F.cross_entropy(model(**inputs).logits.float(), labels)


LOSSES: dict[str, Loss] = {"causal_lm": next_token_loss, "classification": label_loss}


def choose_layers(
    model: nn.Module,
    count: int,
    batches: Sequence[Mapping[str, Tensor]],
    task: Task = "causal_lm",
    drop_fraction: float = 0.25,
) -> list[int]:
    """The ``count`` blocks of ``model`` to keep, found by greedy removal with the lowest loss on ``batches``.

    Each round drops ``max(1, floor(drop_fraction * (kept - count)))`` blocks: those whose removal,
    one at a time from the blocks still kept, raises the mean loss over ``batches`` least. A small
    ``drop_fraction`` removes one block per round (the plain greedy search, ``kept`` evaluations per
    round); 0.25 needs about half the evaluations for a 30 -> 10 cut. The model is left as it was
    (all blocks, its train/eval mode); it runs in eval mode without gradients.

    Args:
        model: a Hugging Face model (classifier or causal LM) with its blocks in one ``ModuleList``.
        count: blocks to keep, ``1 <= count <=`` the model's blocks.
        batches: calibration batches (dicts of ``input_ids``, ``attention_mask``, ``labels``...).
        task: ``"causal_lm"`` scores next-token cross-entropy, ``"classification"`` cross-entropy
            against ``labels``.
        drop_fraction: share of the blocks still to remove that one round drops, in ``(0, 1]``.

    Returns:
        The kept block indices, ascending.

    Raises:
        ValueError: ``count`` outside the model's blocks, no batches, an unknown ``task``, or
            ``drop_fraction`` outside ``(0, 1]``.
    """
    total = len(_layer_list(model)[1])
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= total:
        raise ValueError(
            f"count={count!r} is not a number of blocks to keep of {type(model).__name__}'s {total}. "
            f"HINT: an integer in 1..{total}."
        )
    if not batches:
        raise ValueError("batches=[] holds no calibration batch. HINT: pass one or more training batches.")
    if task not in LOSSES:
        raise ValueError(f"task={task!r} is not one of {sorted(LOSSES)}.")
    if not 0 < drop_fraction <= 1:
        raise ValueError(
            f"drop_fraction={drop_fraction!r} must be in (0, 1]: the share of the blocks still to remove "
            "that one round drops. HINT: 0.25, or 0.01 for one block per round."
        )
    loss = LOSSES[task]
    training = model.training

    def score(kept: list[int]) -> float:
        with only_blocks(model, kept):
            return sum(float(loss(model, batch)) for batch in batches) / len(batches)

    kept = list(range(total))
    model.eval()
    try:
        with torch.inference_mode():
            while len(kept) > count:
                drops = max(1, math.floor(drop_fraction * (len(kept) - count)))
                costs = sorted((score([j for j in kept if j != i]), i) for i in kept)
                dropped = sorted(i for _, i in costs[:drops])
                kept = [i for i in kept if i not in dropped]
                log.info(
                    "layer search: dropped %s, %d kept (loss %.4f without the first)",
                    dropped,
                    len(kept),
                    costs[0][0],
                )
    finally:
        model.train(training)
    return kept
