"""Generation speed of causal LMs: prefill latency, greedy decode tokens/s with the KV cache, peak memory.

Used by ``lit-opt bench`` (for a causal-LM artifact) and by the causal-LM recipe's evaluation: one
measurement, so both report the same numbers. Prompts are synthetic token ids; every model runs every
configuration once per round (:func:`~lit_opt.inference.measure.time_round_robin`), so the load of a
shared machine falls on all alike, and medians are reported.

Decode speed is the time of ``generate`` with ``new_tokens`` greedy tokens minus the time with one
(which is the prefill plus its first token), over the ``new_tokens - 1`` decode steps: tokens per
second of the decode loop alone, at each batch size (``batch × (new_tokens - 1)`` tokens).

Example::

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
    ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)).eval()
    >>> figures = measure_generation({"tiny": model}, vocab_size=64, prompt_len=8, new_tokens=4,
    ...     batch_sizes=[1, 2], repeats=1, warmup=0)
    >>> sorted(figures["tiny"])
    ['decode_tokens_per_s_b1', 'decode_tokens_per_s_b2', 'peak_bytes', 'prefill_ms_b1']
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lit_opt.export.architecture import is_causal_lm
from lit_opt.inference.measure import PeakMemory, synthetic_batch, time_round_robin

log = logging.getLogger(__name__)


def _prefill(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode():
            return model(**inputs, use_cache=True)

    return call


def _generate(model: nn.Module, inputs: dict[str, torch.Tensor], new_tokens: int) -> Callable[[], Any]:
    def call() -> Any:
        with torch.inference_mode():
            return model.generate(  # type: ignore[operator]
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
            )

    return call


def measure_generation(
    models: dict[str, nn.Module],
    vocab_size: int,
    prompt_len: int = 128,
    new_tokens: int = 64,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 3,
    warmup: int = 1,
) -> dict[str, dict[str, float]]:
    """Per model: ``prefill_ms_b1``, ``decode_tokens_per_s_b{B}`` for each batch size and ``peak_bytes``.

    Args:
        models: Causal LMs by name (Hugging Face models, or what :func:`lit_opt.load` returns for one).
        vocab_size: The prompts' token ids are drawn from ``[1, vocab_size)``.
        prompt_len: Prompt tokens (prefill is measured at batch 1 with this many).
        new_tokens: Greedy tokens generated per decode measurement (at least 2).
        batch_sizes: Batch sizes decode speed is measured at.
        repeats: Timed rounds; medians are reported.
        warmup: Untimed rounds first.

    Returns:
        ``{name: {"prefill_ms_b1": ..., "decode_tokens_per_s_b1": ..., ..., "peak_bytes": ...}}``;
        ``peak_bytes`` is the peak memory (process RSS on CPU) of one ``generate`` at the largest batch.
        A decode time within the timing noise (not positive) gives NaN tokens/s and a warning.

    Raises:
        ValueError: If ``new_tokens < 2`` or a model is not a causal LM.
    """
    if new_tokens < 2:
        raise ValueError(
            f"new_tokens={new_tokens!r} is not accepted; expected >= 2 (decode speed is the time of "
            "new_tokens minus that of one)."
        )
    for name, model in models.items():
        if not is_causal_lm(model):
            raise ValueError(
                f"{name}: {type(model).__name__} is not a causal LM with generate(). HINT: generation figures "
                "are for *ForCausalLM / *LMHeadModel models."
            )
    prompts = {b: synthetic_batch(b, prompt_len, vocab_size) for b in sorted({1, *batch_sizes})}
    calls: dict[str, Callable[[], Any]] = {}
    for name, model in models.items():
        calls[f"{name}|prefill"] = _prefill(model, prompts[1])
        for b in batch_sizes:
            calls[f"{name}|one|{b}"] = _generate(model, prompts[b], 1)
            calls[f"{name}|all|{b}"] = _generate(model, prompts[b], new_tokens)
    timings = time_round_robin(calls, warmup=warmup, repeats=repeats)
    figures: dict[str, dict[str, float]] = {}
    for name in models:
        row = {"prefill_ms_b1": timings[f"{name}|prefill"].median_ms}
        for b in batch_sizes:
            decode_ms = timings[f"{name}|all|{b}"].median_ms - timings[f"{name}|one|{b}"].median_ms
            if decode_ms <= 0:  # noise larger than the decode steps: too few new_tokens for this machine
                log.warning(
                    "%s: decode time at batch %d is within noise (%.2f ms); use more new_tokens",
                    name,
                    b,
                    decode_ms,
                )
            row[f"decode_tokens_per_s_b{b}"] = (
                b * (new_tokens - 1) / (decode_ms / 1e3) if decode_ms > 0 else math.nan
            )
        with PeakMemory() as peak:
            calls[f"{name}|all|{max(batch_sizes)}"]()
        row["peak_bytes"] = peak.peak_bytes
        figures[name] = row
    return figures
