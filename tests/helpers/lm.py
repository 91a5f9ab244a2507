"""A tiny byte-level BPE tokenizer and tiny random causal LMs (Llama, GPT-2) for the causal-LM tests; no download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WORDS = ["good", "bad", "film", "plot", "actor", "scene", "story", "music", "long", "short", "dull", "bright"]


def lm_texts(n: int = 60) -> list[str]:
    """``n`` texts of 1..40 words from a small vocabulary (skewed to short ones)."""
    out = []
    for i in range(n):
        length = 1 + (i * 7) % 9 if i % 5 else 10 + (i * 3) % 30
        out.append(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(length)))
    return out


def tiny_lm_tokenizer(directory: Path) -> str:
    """A byte-level BPE tokenizer (vocabulary 300, ``<|endoftext|>`` as EOS and pad) saved to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if (directory / "tokenizer.json").is_file():
        return str(directory)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lm_texts(200), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.save_pretrained(str(directory))
    return str(directory)


def tiny_llama(vocab_size: int = 300, layers: int = 3, seed: int = 0, **overrides: Any) -> Any:
    """``LlamaForCausalLM``: hidden 32, GQA 4 query / 2 KV heads, MLP 64, 64 positions, tied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **overrides,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return LlamaForCausalLM(config).eval()
    finally:
        torch.random.set_rng_state(state)
