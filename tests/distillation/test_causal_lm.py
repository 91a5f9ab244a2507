"""CausalLMDistillationModule: token-level loss, hidden states, perplexity over a whole set (and DDP), bad input."""

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_opt import CausalLMDistillationModule
from lit_opt.functional.distillation import causal_lm_distillation_loss
from tests.helpers.ddp import run_ddp
from tests.helpers.models import LM_VOCAB, lm_ids, tiny_bert, tiny_gpt2, tiny_llama
from tests.helpers.trainer import tiny_trainer


def _batch(batch=4, seq_len=12, seed=0):
    ids = lm_ids(batch, seq_len, seed)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # right padding
    mask[1:2, 3:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def test_training_step_is_the_token_level_loss_with_padding_ignored():
    student, teacher = tiny_llama(seed=1), tiny_llama(seed=2)
    module = CausalLMDistillationModule(student, teacher, temperature=2.0, alpha=0.3, chunk_size=5)
    batch = _batch()
    loss = module.training_step(batch, 0)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        s, t = student(**batch).logits, teacher(**batch).logits
    expected = causal_lm_distillation_loss(s, t, labels, 2.0, 0.3)[0]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    explicit = module.training_step({**batch, "labels": labels}, 0)  # labels given: the same
    assert explicit.item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert student.model.layers[0].mlp.up_proj.weight.grad is not None
    assert teacher.model.layers[0].mlp.up_proj.weight.grad is None


def test_hidden_states_of_a_narrower_gpt2_student_through_a_projection(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=LM_VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=64, bos_token_id=1, eos_token_id=2
    )
    narrow = GPT2LMHeadModel(config)
    module = CausalLMDistillationModule(narrow, tiny_gpt2(), hidden_weight=0.5, layer_map={1: 2}, lr=1e-2)
    assert list(module.projections) == ["1"] and module.projections["1"].in_features == 16
    parts = module.losses(_batch())
    assert set(parts) == {"loss", "soft_loss", "hard_loss", "hidden_loss"}
    expected = 0.5 * parts["soft_loss"] + 0.5 * parts["hard_loss"] + 0.5 * parts["hidden_loss"]
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    before = module.projections["1"].weight.detach().clone()
    data = [_batch(seed=i) for i in range(4)]
    tiny_trainer(tmp_path, max_steps=4).fit(
        module,
        train_dataloaders=DataLoader(data, batch_size=None),
        val_dataloaders=DataLoader(data, batch_size=None),
    )
    assert not torch.equal(module.projections["1"].weight, before)  # the projection trains with the student


def _per_batch(model, batches):
    """(sum of token CE, tokens) per batch, by plain cross-entropy on shifted labels."""
    out = []
    for batch in batches:
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        logits = model(**batch).logits
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, LM_VOCAB), labels[:, 1:].reshape(-1), reduction="sum"
        )
        out.append((ce.item(), int((labels[:, 1:] != -100).sum())))
    return out


def test_validation_perplexity_is_over_every_token_of_the_set(tmp_path):
    student = tiny_llama(seed=1)
    batches = [_batch(seed=0), _batch(batch=1, seq_len=4, seed=1)]  # 31 and 3 target tokens
    module = CausalLMDistillationModule(student, tiny_llama(seed=2))
    trainer = tiny_trainer(tmp_path)
    (metrics,) = trainer.validate(module, DataLoader(batches, batch_size=None), verbose=False)
    with torch.no_grad():
        sums = _per_batch(student, batches)
    expected = math.exp(sum(s for s, _ in sums) / sum(n for _, n in sums))
    assert metrics["val_perplexity"] == pytest.approx(expected, rel=1e-5)
    assert metrics["val_loss"] == pytest.approx(math.log(expected), rel=1e-5)
    mean_of_batches = sum(math.exp(s / n) for s, n in sums) / len(sums)
    assert abs(mean_of_batches - expected) > 1.0  # what a per-batch average would have logged
    (tested,) = trainer.test(module, DataLoader(batches, batch_size=None), verbose=False)
    assert tested["test_perplexity"] == pytest.approx(expected, rel=1e-5)


def _ddp_perplexity(rank, world_size):
    module = CausalLMDistillationModule(tiny_llama(seed=1), tiny_llama(seed=2))
    batch = _batch(seed=0) if rank == 0 else _batch(batch=1, seq_len=4, seed=1)
    with torch.no_grad():
        module.validation_step(batch, 0)
    return torch.exp(module.token_nll["val"].compute()).item()


@pytest.mark.ddp
@pytest.mark.slow  # two spawned processes: ~30 s on 2 shared cores
def test_perplexity_sums_tokens_over_ranks():
    with torch.no_grad():
        sums = _per_batch(tiny_llama(seed=1), [_batch(seed=0), _batch(batch=1, seq_len=4, seed=1)])
    expected = math.exp(sum(s for s, _ in sums) / sum(n for _, n in sums))
    assert run_ddp(_ddp_perplexity) == pytest.approx([expected, expected], rel=1e-5)


def test_a_model_without_a_causal_lm_head_is_refused():
    from transformers import BertConfig, BertForMaskedLM

    with pytest.raises(
        ValueError, match=r"student=BertForSequenceClassification has no causal-LM head.*HINT"
    ):
        CausalLMDistillationModule(tiny_bert(), tiny_llama())
    masked = BertForMaskedLM(
        BertConfig(vocab_size=LM_VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(ValueError, match=r"teacher=BertForMaskedLM has no causal-LM head"):
        CausalLMDistillationModule(tiny_llama(), masked)


def test_a_plain_module_without_sequence_logits_is_refused_on_its_first_batch():
    from tests.helpers.models import TinyEmbeddingNet

    module = CausalLMDistillationModule(TinyEmbeddingNet(), TinyEmbeddingNet())
    ids = torch.randint(0, 50, (2, 12))
    with pytest.raises(
        ValueError, match=r"student_logits has shape \(2, 3\); expected \(batch, seq, vocab\)"
    ):
        module.training_step((ids, ids), 0)


def test_different_vocabularies_are_refused():
    student = tiny_llama()
    student.resize_token_embeddings(LM_VOCAB + 4)
    with pytest.raises(ValueError, match=r"the student predicts 100 tokens but the teacher 96.*HINT"):
        CausalLMDistillationModule(student, tiny_llama())


def _tokenizer(words):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<unk>", *words])}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")), unk_token="<unk>"
    )


def test_different_tokenizers_are_refused_and_equal_ones_accepted(tmp_path):
    same, other = _tokenizer(["a", "b", "c"]), _tokenizer(["a", "c", "b"])
    same.save_pretrained(tmp_path / "tok")
    CausalLMDistillationModule(
        tiny_llama(), tiny_llama(), student_tokenizer=same, teacher_tokenizer=str(tmp_path / "tok")
    )
    with pytest.raises(
        ValueError,
        match=r"student_tokenizer \(4 tokens\) and teacher_tokenizer \(4 tokens\) have different vocabularies",
    ):
        CausalLMDistillationModule(
            tiny_llama(), tiny_llama(), student_tokenizer=same, teacher_tokenizer=other
        )


def test_bad_chunk_size():
    with pytest.raises(ValueError, match=r"chunk_size=0 must be an integer >= 1"):
        CausalLMDistillationModule(tiny_llama(), tiny_llama(), chunk_size=0)


def test_labels_only_skips_the_teacher():
    teacher = tiny_llama(seed=2)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    module = CausalLMDistillationModule(tiny_llama(seed=1), teacher, alpha=0.0)
    parts = module.losses(_batch())
    assert (
        not calls and parts["soft_loss"].item() == 0.0 and parts["loss"].item() == parts["hard_loss"].item()
    )


class _IndexedText(L.LightningDataModule):
    """16 blocks of 12 token ids, shuffled, as ``{input_ids, attention_mask, idx}`` dicts, with a fingerprint."""

    fingerprint = "indexed-lm-16x12"

    def train_dataloader(self):
        ids = lm_ids(16, 12, seed=3)
        rows = [
            {"input_ids": ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "idx": i}
            for i in range(16)
        ]
        return DataLoader(rows, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))


def _fit_lm(tmp_path, teacher, cache=None, top_k=0, epochs=2):
    calls = []
    hook = teacher.register_forward_hook(lambda *_: calls.append(1))
    module = CausalLMDistillationModule(
        tiny_llama(seed=1), teacher, lr=1e-2, alpha=0.8, teacher_cache=cache, cache_top_k=top_k, chunk_size=7
    )
    tiny_trainer(tmp_path, max_epochs=epochs, max_steps=-1).fit(module, datamodule=_IndexedText())
    hook.remove()
    return module.student, len(calls)


def test_cache_of_every_logit_trains_as_the_live_teacher_and_top_k_close(tmp_path):
    teacher, start = tiny_llama(seed=2), tiny_llama(seed=1).lm_head.weight.detach().clone()
    with torch.no_grad():  # a peaked teacher, as trained LMs are (a random one is near uniform)
        teacher.model.norm.weight.mul_(40.0)
    live, live_calls = _fit_lm(tmp_path, teacher)
    full, full_calls = _fit_lm(tmp_path, teacher, cache=str(tmp_path / "all"), top_k=LM_VOCAB)
    assert (live_calls, full_calls) == (8, 4)  # 4 batches an epoch; cached: the first epoch only
    for a, b in zip(live.parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    moved = (live.lm_head.weight - start).norm()
    distance = {}  # from the live-teacher run, relative to how far that run moved (measured: 0.19, 0.11)
    for k in (4, 16):
        top, _ = _fit_lm(tmp_path, teacher, cache=str(tmp_path / f"top{k}"), top_k=k)
        distance[k] = ((top.lm_head.weight - live.lm_head.weight).norm() / moved).item()
    assert distance[16] < 0.2 and distance[16] < distance[4]
