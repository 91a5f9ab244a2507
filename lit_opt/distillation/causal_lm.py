"""``CausalLMDistillationModule``: distil a causal language model (Llama, Qwen2, Mistral, GPT-2 families)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric
from typing_extensions import override

from lit_opt.distillation.module import INDEX, DistillationModule
from lit_opt.functional.distillation import IGNORE_INDEX, causal_lm_cross_entropy, causal_lm_distillation_loss

STAGES = ("val", "test")


def _lm_vocabulary(name: str, model: nn.Module) -> int | None:
    """Rows of a Hugging Face model's causal-LM head; None for a plain module (checked on its first batch).

    Raises:
        ValueError: a Hugging Face model without a causal-LM head (a classifier, a masked LM, a bare encoder).
    """
    if getattr(model, "config", None) is None or not hasattr(model, "get_output_embeddings"):
        return None
    head: Any = cast(Any, model).get_output_embeddings()
    can_generate = getattr(model, "can_generate", None)
    if head is None or not callable(can_generate) or not can_generate():
        raise ValueError(
            f"{name}={type(model).__name__} has no causal-LM head: its logits are not (batch, seq, vocab) "
            "next-token predictions. HINT: load it with AutoModelForCausalLM (e.g. LlamaForCausalLM, "
            "GPT2LMHeadModel); classifiers distil with DistillationModule."
        )
    return int(head.weight.shape[0])


def _tokenizer_vocabulary(tokenizer: Any) -> dict[str, int]:
    """A tokenizer's ``get_vocab()``; a string is a local tokenizer directory."""
    if isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    return dict(tokenizer.get_vocab())


class CausalLMDistillationModule(DistillationModule):
    """Distil a causal LM: next-token cross-entropy plus ``T²·KL(teacher ‖ student)`` per token.

    The loss is :func:`~lit_opt.functional.causal_lm_distillation_loss` (position ``i`` predicts token
    ``i + 1``; ``alpha * T² * KL + (1 - alpha) * CE``, each averaged over the batch's kept target
    tokens), computed ``chunk_size`` tokens at a time so no ``batch x seq x vocab`` float32 copy is
    made. Everything else is :class:`~lit_opt.distillation.module.DistillationModule`'s: the frozen
    teacher left out of checkpoints, ``hidden_weight`` with ``layer_map`` (student hidden state ->
    teacher hidden state, through a learned projection when the widths differ; padded positions
    excluded), the teacher cache (``cache_top_k`` keeps the teacher's top-k logits per token; see
    :class:`~lit_opt.distillation.cache.TeacherCache` for its size), export of the student alone.

    Batches are dicts ``{input_ids, attention_mask, labels, idx}`` (``labels`` unshifted with ``-100``
    where no loss is wanted; without ``labels``, the input ids with padding set to ``-100``;
    ``idx`` only for the cache), or ``(input_ids, labels[, idx])`` tuples for plain modules that
    return ``(batch, seq, vocab)`` logits.

    Validation and test log ``{stage}_loss``, the mean next-token cross-entropy over every target
    token of the whole set (summed over batches and DDP ranks before dividing), and
    ``{stage}_perplexity``, its exponential (not a mean of per-batch perplexities).

    Args:
        student: a causal LM (Hugging Face ``...ForCausalLM``, or a module returning logits).
        teacher: the causal LM to imitate, with the student's vocabulary.
        temperature: softmax temperature ``T`` (> 0).
        alpha: weight of the soft term in [0, 1]; ``1 - alpha`` weighs cross-entropy with the text.
        hidden_weight: weight of the hidden-state MSE (0 disables it).
        layer_map: ``{student_hidden_state: teacher_hidden_state}`` (0 is the embedding output);
            default evenly spaced.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        lr_schedule: ``"constant"`` or ``"linear"`` (warmup, then down to 0 at the fit's last step).
        warmup: with ``lr_schedule="linear"``, the share of the steps spent warming up, in [0, 1).
        teacher_cache: directory of the teacher-output cache (needs ``idx`` in batches), or None.
        cache_top_k: logits kept per token in the cache (0: all; costly for a large vocabulary).
        chunk_size: tokens per chunk of the loss (float32 memory ~ six ``chunk_size x vocab`` tensors).
        student_tokenizer: the student's tokenizer (object or local directory), compared with
            ``teacher_tokenizer`` when both are given.
        teacher_tokenizer: the teacher's tokenizer (object or local directory).

    Raises:
        ValueError: (before any work) a Hugging Face student or teacher without a causal-LM head,
            student and teacher with different vocabulary sizes, tokenizers with different
            vocabularies, ``chunk_size < 1``, and every argument error of ``DistillationModule``.

    Example::

        teacher = AutoModelForCausalLM.from_pretrained("outputs/smollm2")
        student = students.select_layers(teacher, [0, 10, 20, 29])
        module = CausalLMDistillationModule(student, teacher, temperature=2.0, alpha=0.5)
        Trainer(max_steps=1000).fit(module, datamodule)   # logs val_perplexity
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        temperature: float = 2.0,
        alpha: float = 0.5,
        hidden_weight: float = 0.0,
        layer_map: dict[int, int] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        lr_schedule: str = "constant",
        warmup: float = 0.0,
        teacher_cache: str | None = None,
        cache_top_k: int = 0,
        chunk_size: int = 256,
        student_tokenizer: Any = None,
        teacher_tokenizer: Any = None,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(
                f"chunk_size={chunk_size!r} must be an integer >= 1: tokens per chunk of the loss. HINT: 256."
            )
        self.chunk_size = chunk_size
        self._tokenizers = (student_tokenizer, teacher_tokenizer)
        super().__init__(
            student,
            teacher,
            temperature=temperature,
            alpha=alpha,
            hidden_weight=hidden_weight,
            layer_map=layer_map,
            lr=lr,
            weight_decay=weight_decay,
            lr_schedule=lr_schedule,
            warmup=warmup,
            teacher_cache=teacher_cache,
            cache_top_k=cache_top_k,
        )
        self._tokenizers = (None, None)  # checked; not kept (nor saved as hyperparameters)
        self.save_hyperparameters(ignore=["student", "teacher", "student_tokenizer", "teacher_tokenizer"])

    @override
    def _check_models(self, student: nn.Module, teacher: nn.Module) -> None:
        vocab_s, vocab_t = _lm_vocabulary("student", student), _lm_vocabulary("teacher", teacher)
        if vocab_s is not None and vocab_t is not None and vocab_s != vocab_t:
            raise ValueError(
                f"the student predicts {vocab_s} tokens but the teacher {vocab_t}: token-level distillation "
                "needs one vocabulary. HINT: build the student from the teacher (students.select_layers) or "
                "with the teacher's tokenizer and vocab_size."
            )
        tokenizer_s, tokenizer_t = self._tokenizers
        if tokenizer_s is not None and tokenizer_t is not None:
            words_s, words_t = _tokenizer_vocabulary(tokenizer_s), _tokenizer_vocabulary(tokenizer_t)
            if words_s != words_t:
                differ = sorted(set(words_s.items()) ^ set(words_t.items()))[:3]
                raise ValueError(
                    f"student_tokenizer ({len(words_s)} tokens) and teacher_tokenizer ({len(words_t)} tokens) "
                    f"have different vocabularies, e.g. (token, id) pairs {differ} are in one only. HINT: the "
                    "student must read the teacher's token ids: give both the teacher's tokenizer."
                )

    @override
    def _build_metrics(self) -> None:
        self.token_nll = nn.ModuleDict({stage: MeanMetric() for stage in STAGES})  # weighted by target tokens

    @staticmethod
    def _split(batch: Any) -> tuple[Any, Tensor, Tensor | None]:
        if isinstance(batch, Mapping) and "labels" not in batch:
            inputs = {k: v for k, v in batch.items() if k != INDEX}
            labels = inputs["input_ids"]
            if "attention_mask" in inputs:
                labels = labels.masked_fill(inputs["attention_mask"] == 0, IGNORE_INDEX)
            return inputs, labels, batch.get(INDEX)
        return DistillationModule._split(batch)

    @override
    def _labels_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return causal_lm_cross_entropy(logits, labels, self.chunk_size)[0]

    @override
    def _output_loss(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, teacher_indices: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        return causal_lm_distillation_loss(
            student_logits,
            teacher_logits,
            labels,
            self.temperature,
            self.alpha,
            chunk_size=self.chunk_size,
            teacher_indices=teacher_indices,
        )

    def _token_metric(self, stage: str) -> MeanMetric:
        return cast(MeanMetric, self.token_nll[stage])

    def _evaluate_tokens(self, batch: Any, stage: str) -> Tensor:
        inputs, labels, _ = self._split(batch)
        loss, count = causal_lm_cross_entropy(self(inputs), labels, self.chunk_size)
        self._token_metric(stage).update(loss.detach(), count)
        return loss

    def _log_tokens(self, stage: str) -> None:
        metric = self._token_metric(stage)
        mean = metric.compute()  # sums over batches and DDP ranks, then divides by the token count
        metric.reset()
        self._log({f"{stage}_loss": mean, f"{stage}_perplexity": torch.exp(mean)}, prog_bar=True)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate_tokens(batch, "val")

    @override
    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate_tokens(batch, "test")

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_tokens("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_tokens("test")
