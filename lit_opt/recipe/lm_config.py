"""The causal-LM recipe's settings (``task: causal_lm``), read and overridden like the classification recipe's.

Example::

    >>> from lit_opt.recipe import load_config
    >>> config = load_config(None, ["--task=causal_lm", "--student.layers=[0, 15, 29]"])
    >>> type(config).__name__, config.student.layers, config.data.block_size
    ('CausalLMRecipeConfig', [0, 15, 29], 128)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lit_opt.recipe.config import check_ranges


@dataclass
class LMDataConfig:
    """The text (:class:`~lit_opt.data.CausalLMDataModule`'s arguments); ``path: null`` is Rotten Tomatoes.

    ``max_texts`` keeps the first texts of the shuffled file (a quick run); ``eval_blocks`` caps the
    held-out blocks perplexity is measured on (null: the whole test split).
    """

    path: str | None = None
    text_column: str = "text"
    block_size: int = 128
    batch_size: int = 8
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    max_texts: int | None = None
    eval_blocks: int | None = None
    cache_dir: str | None = None


@dataclass
class LMTeacherConfig:
    """The teacher, used as it is: a Hugging Face causal-LM directory saved with its tokenizer; ``null`` is
    SmolLM2-135M-Instruct from its Q4_1 GGUF file."""

    path: str | None = None


@dataclass
class LMStudentConfig:
    """The student keeps some of the teacher's layers (embeddings and head copied) and is distilled on the training split.

    ``layers`` is either the teacher's layer indices to keep, or a number of layers, chosen by
    :func:`~lit_opt.distillation.layer_search.choose_layers`: greedy removal of the layers whose
    absence raises next-token loss least on the first ``search_batches`` training batches (on
    SmolLM2, 10 of 30 layers: held-out perplexity about 4,900 before distillation, against about
    400,000 for the evenly spaced ``[0, 3, ..., 24, 29]``). The teacher's logits are computed for
    every batch (fp32, no gradients).
    """

    layers: list[int] | int = 10
    search_batches: int = 1
    epochs: int = 1
    max_steps: int = -1
    lr: float = 3.0e-4
    lr_schedule: Literal["constant", "linear"] = "constant"
    warmup: float = 0.0
    temperature: float = 2.0
    alpha: float = 0.5


@dataclass
class LMCompressConfig:
    """Compressing the distilled student while it keeps distilling: MLP rows, attention heads, QAT, embeddings.

    ``mlp_sparsity`` removes that share of each MLP's intermediate neurons, ``head_sparsity`` of each
    layer's KV groups (0 disables either). Decoder Linear layers get ``weight_bits`` QAT; the tied
    embedding / LM head ``embedding_bits`` per group of ``embedding_group_size``.
    """

    epochs: int = 1
    max_steps: int = -1
    lr: float = 2.0e-4
    lr_schedule: Literal["constant", "linear"] = "constant"
    warmup: float = 0.0
    mlp_sparsity: float = 0.0
    head_sparsity: float = 0.0
    prune_fraction_of_training: float = 0.5
    weight_bits: Literal[4, 8] = 8
    activations: Literal["dynamic", "static", "none"] = "dynamic"
    embedding_bits: Literal[4, 8] = 4
    embedding_group_size: int = 32
    export_dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"


@dataclass
class GenerationLatencyConfig:
    """Generation speed: prefill of ``prompt_len`` tokens at batch 1, greedy decode of ``new_tokens`` at each batch size.

    Rows are interleaved (each repeat runs every row once), medians reported. ``samples`` held-out
    prompts of ``sample_prompt_tokens`` tokens are continued greedily by every row for ``report.md``.
    """

    threads: int = 2
    prompt_len: int = 128
    new_tokens: int = 64
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    repeats: int = 3
    warmup: int = 1
    kernel: Literal["auto", "reference", "int8", "bf16", "packed_int8", "packed_int4"] = "auto"
    samples: int = 3
    sample_prompt_tokens: int = 16
    sample_new_tokens: int = 24


@dataclass
class CausalLMRecipeConfig:
    """Everything the causal-LM recipe runs (see ``configs/recipes/smollm2_rotten_tomatoes.yaml``)."""

    task: Literal["causal_lm"] = "causal_lm"
    output_dir: str = "outputs/recipe_lm"
    seed: int = 0
    progress: bool = True
    data: LMDataConfig = field(default_factory=LMDataConfig)
    teacher: LMTeacherConfig = field(default_factory=LMTeacherConfig)
    student: LMStudentConfig = field(default_factory=LMStudentConfig)
    compress: LMCompressConfig = field(default_factory=LMCompressConfig)
    latency: GenerationLatencyConfig = field(default_factory=GenerationLatencyConfig)

    def check(self) -> None:
        """Raise ``ValueError`` for a value out of its range (types are checked when the config is built)."""
        minimums = [
            ("data.block_size", self.data.block_size, 2),
            ("data.batch_size", self.data.batch_size, 1),
            ("data.max_texts", self.data.max_texts or 3, 3),
            ("data.eval_blocks", self.data.eval_blocks or 1, 1),
            ("student.epochs", self.student.epochs, 1),
            ("student.search_batches", self.student.search_batches, 1),
            ("compress.epochs", self.compress.epochs, 1),
            ("compress.embedding_group_size", self.compress.embedding_group_size, 1),
            ("latency.threads", self.latency.threads, 1),
            ("latency.prompt_len", self.latency.prompt_len, 1),
            ("latency.new_tokens", self.latency.new_tokens, 1),
            ("latency.repeats", self.latency.repeats, 1),
            ("latency.warmup", self.latency.warmup, 0),
            ("latency.samples", self.latency.samples, 0),
            ("latency.sample_prompt_tokens", self.latency.sample_prompt_tokens, 1),
            ("latency.sample_new_tokens", self.latency.sample_new_tokens, 1),
        ]
        layers, sizes = self.student.layers, self.latency.batch_sizes
        if isinstance(layers, int):
            minimums.append(("student.layers", layers, 1))
        elif not layers or min(layers) < 0 or len(set(layers)) != len(layers):
            raise ValueError(
                f"student.layers={layers!r} is not accepted; expected distinct layer indices >= 0, e.g. [0, 15, 29], "
                "or a number of layers to choose by search, e.g. 10."
            )
        if not sizes or min(sizes) < 1:
            raise ValueError(
                f"latency.batch_sizes={sizes!r} is not accepted; expected batch sizes >= 1, e.g. [1, 8]."
            )
        sparsities = [
            ("compress.mlp_sparsity", self.compress.mlp_sparsity),
            ("compress.head_sparsity", self.compress.head_sparsity),
        ]
        stages = {"student": self.student, "compress": self.compress}
        check_ranges(minimums, sparsities, self.compress.prune_fraction_of_training, self.output_dir, stages)
