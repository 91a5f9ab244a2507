"""Vocabulary pruning: the pruned model equals the original on kept ids, and survives QAT, export, load, restore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import lit_opt
from lit_opt import QATCallback, prune_vocabulary, token_ids_in_use
from lit_opt.nn import QuantizedEmbedding, RemappedEmbedding
from tests.helpers.models import BERT_VOCAB, HFClassifier, hf_dataloader, tiny_bert

UNK = 1
WORD = "model.bert.embeddings.word_embeddings"


def kept_ids() -> list[int]:
    """Ids of the training batches' first rows: about half the tiny vocabulary."""
    batches = [batch["input_ids"][:3] for batch in hf_dataloader()]
    return token_ids_in_use(batches, special_ids=[0, UNK])


def inputs(seed: int = 5) -> dict[str, torch.Tensor]:
    return next(iter(hf_dataloader(n=8, batch_size=8, seed=seed)))


def logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return (out.logits if hasattr(out, "logits") else out).float()


def unk_mapped(batch: dict[str, torch.Tensor], keep: list[int]) -> dict[str, torch.Tensor]:
    ids = batch["input_ids"].clone()
    ids[~torch.isin(ids, torch.tensor(keep))] = UNK
    return {**batch, "input_ids": ids}


# token_ids_in_use


@pytest.mark.parametrize(
    "corpus",
    [
        {"input_ids": [[101, 7, 102], [101, 9, 102]]},
        torch.tensor([[101, 7, 102], [101, 9, 102]]),
        [np.array([101, 7, 102]), np.array([101, 9])],
        iter([[101, 7], [9, 102]]),
    ],
    ids=["batch-encoding", "tensor", "numpy", "iterator"],
)
def test_token_ids_in_use_accepts_tokenizer_output_tensors_and_iterables(corpus: Any) -> None:
    assert token_ids_in_use(corpus, special_ids=[0, 100]) == [0, 7, 9, 100, 101, 102]


@pytest.mark.parametrize(
    ("corpus", "special", "pattern"),
    [
        ("a fine film", (), r"input_ids='a fine film' is not accepted.*token_ids_in_use\(tokenizer"),
        ([[1.5, 2]], (), r"input_ids holds 1.5 \(float\); expected integer token ids"),
        ([[1]], ["[UNK]"], r"special_ids holds '\[UNK\]'"),
    ],
)
def test_token_ids_in_use_rejects_non_ids(corpus: Any, special: Any, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        token_ids_in_use(corpus, special_ids=special)


# prune_vocabulary


def test_pruned_model_equals_original_on_kept_ids_and_reads_unk_for_the_rest() -> None:
    original, pruned = tiny_bert(), tiny_bert()
    keep = kept_ids()
    assert prune_vocabulary(pruned, keep, unk_token_id=UNK) is pruned
    emb = pruned.bert.embeddings.word_embeddings
    assert isinstance(emb, RemappedEmbedding)
    assert emb.weight.shape == (len(keep), 32) and emb.remap.shape == (BERT_VOCAB,)
    assert emb.remap.dtype == torch.int32 and emb.padding_idx == 0
    batch = inputs()
    assert not torch.isin(batch["input_ids"], torch.tensor(keep)).all()  # some ids are dropped
    torch.testing.assert_close(
        logits(pruned, batch), logits(original, unk_mapped(batch, keep)), rtol=0, atol=0
    )


def test_unk_and_padding_rows_are_kept_even_when_not_listed() -> None:
    model = prune_vocabulary(tiny_bert(), [5, 6], unk_token_id=3)
    emb = model.bert.embeddings.word_embeddings
    assert emb.num_embeddings == 4  # pad 0, unk 3, 5, 6
    assert emb.remap[[0, 3, 5, 6, 7]].tolist() == [0, 1, 2, 3, 1]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"keep_token_ids": []}, ValueError, r"keep_token_ids=\[\] keeps no token.*token_ids_in_use"),
        ({"keep_token_ids": [5, 100, 250]}, ValueError, r"ids \[100, 250\] outside module .*\[0, 100\)"),
        ({"keep_token_ids": "abc"}, ValueError, r"keep_token_ids='abc' is not accepted"),
        ({"unk_token_id": 100}, ValueError, r"unk_token_id=100 is not a token id.*tokenizer.unk_token_id"),
        ({"unk_token_id": None}, ValueError, r"unk_token_id=None is not a token id"),
        (
            {"module": "*token_embeddings"},
            ValueError,
            r"module=\['\*token_embeddings'\] matched no Embedding",
        ),
        (
            {"module": "*.query"},
            ValueError,
            r"module=\['\*.query'\] matched 2 module\(s\) but no Embedding.*Linear",
        ),
        (
            {"module": ["*word_embeddings"]},
            ValueError,
            r"module=\['\*word_embeddings'\] must be one fnmatch pattern",
        ),
    ],
)
def test_prune_vocabulary_bad_input(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    args = {"keep_token_ids": [2, 3], "unk_token_id": UNK, **kwargs}
    with pytest.raises(error, match=pattern):
        prune_vocabulary(tiny_bert(), **args)


def test_prune_vocabulary_refuses_tied_parametrized_or_pruned_embeddings() -> None:
    from transformers import BertConfig, BertForMaskedLM

    lm = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1))
    with pytest.raises(ValueError, match=r"shares its weight with 'cls.predictions.decoder.weight'.*untie"):
        prune_vocabulary(lm, [2, 3], UNK)
    pruned = prune_vocabulary(tiny_bert(), [2, 3], UNK)
    with pytest.raises(ValueError, match=r"already a pruned vocabulary"):
        prune_vocabulary(pruned, [2, 3], UNK)
    quantized = tiny_bert()
    lit_opt.quantization.prepare_quantization(
        quantized, lit_opt.QuantizationConfig(targets=["*word_embeddings"])
    )
    with pytest.raises(ValueError, match=r"already carries parametrizations.*before Trainer.fit"):
        prune_vocabulary(quantized, [2, 3], UNK)


# QAT, export, load, restore


QAT = {
    "int8-per_channel": {"weight_bits": 8},
    "int4-per_group16": {"weight_bits": 4, "granularity": "per_group", "group_size": 16},
}


@pytest.mark.parametrize("qat", QAT, ids=str)
def test_qat_export_load_and_restore_reproduce_the_trained_pruned_model(
    qat: str, make_trainer: Any, tmp_path: Path
) -> None:
    module = HFClassifier()
    keep = kept_ids()
    prune_vocabulary(module, keep, unk_token_id=UNK)
    callbacks = [
        QATCallback(**QAT[qat], activations="none", targets=["*word_embeddings"]),
        QATCallback(weight_bits=8, targets=["*.dense", "*.query", "*.key", "*.value"]),
    ]
    trainer = make_trainer(callbacks=callbacks, enable_checkpointing=True, max_steps=3)
    trainer.fit(module)
    trained = logits(module.eval(), inputs())

    path = lit_opt.export(module, tmp_path / "artifact")
    manifest = json.loads((path / "lit_opt.json").read_text())
    entry = manifest["tensors"][f"{WORD}.weight"]
    assert entry["shape"] == [len(keep), 32] and entry["encoding"] == f"int{QAT[qat]['weight_bits']}"
    assert manifest["tensors"][f"{WORD}.remap"]["dtype"] == "int16"
    assert manifest["plan"]["structure"][0] == {
        "module": WORD,
        "remap": {
            "num_embeddings": len(keep),
            "embedding_dim": 32,
            "vocab_size": BERT_VOCAB,
            "padding_idx": 0,
        },
    }
    loaded = lit_opt.load(path, kernel="reference")  # rebuilt from the manifest's import path
    emb = loaded.get_submodule(WORD)
    assert isinstance(emb, QuantizedEmbedding) and emb.remap is not None
    torch.testing.assert_close(logits(loaded, inputs()), trained, rtol=0, atol=0)
    bf16 = lit_opt.load(path, kernel="bf16")
    assert (logits(bf16, inputs()).argmax(-1) == trained.argmax(-1)).float().mean() >= 0.75

    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    restored = lit_opt.restore(HFClassifier(), ckpt["state_dict"]).eval()
    assert isinstance(restored.get_submodule(WORD), RemappedEmbedding)
    torch.testing.assert_close(logits(restored, inputs()), trained, rtol=0, atol=0)


def test_post_training_int4_export_of_a_pruned_model(tmp_path: Path) -> None:
    model = prune_vocabulary(tiny_bert(), kept_ids(), UNK)
    config = {"weight_bits": 4, "granularity": "per_group", "group_size": 32, "activations": "none"}
    path = lit_opt.export(model, tmp_path / "ptq", quantization={**config, "targets": ["*word_embeddings"]})
    loaded = lit_opt.load(path, kernel="reference")
    reference = tiny_bert()
    expected = lit_opt.load(
        lit_opt.export(
            reference, tmp_path / "full", quantization={**config, "targets": ["*word_embeddings"]}
        ),
        kernel="reference",
    )
    batch = inputs()  # int4 groups are per row: the kept rows quantize as in the full table
    torch.testing.assert_close(
        logits(loaded, batch), logits(expected, unk_mapped(batch, kept_ids())), rtol=0, atol=0
    )
    tensors = load_file(str(path / "model.safetensors"))
    assert (
        tensors["bert.embeddings.word_embeddings.weight"].numel() == len(kept_ids()) * 32 // 2
    )  # int4 packed
    assert tensors["bert.embeddings.word_embeddings.remap"].dtype == torch.int16


def test_float_export_of_a_pruned_model_loads_into_a_plain_skeleton(tmp_path: Path) -> None:
    model = prune_vocabulary(tiny_bert(), kept_ids(), UNK)
    path = lit_opt.export(model, tmp_path / "float")
    loaded = lit_opt.load(path, model=tiny_bert(seed=9), kernel="reference")
    assert isinstance(loaded.bert.embeddings.word_embeddings, RemappedEmbedding)
    torch.testing.assert_close(logits(loaded, inputs()), logits(model, inputs()), rtol=0, atol=0)


def _tamper(path: Path, remap: torch.Tensor | None = None, plan: dict[str, Any] | None = None) -> None:
    """Rewrite the artifact's remap tensor or plan step, re-signing the file so only the content is wrong."""
    from lit_opt.export.format import sha256

    weights, manifest_path = path / "model.safetensors", path / "lit_opt.json"
    manifest = json.loads(manifest_path.read_text())
    if remap is not None:
        tensors = load_file(str(weights))
        tensors["bert.embeddings.word_embeddings.remap"] = remap
        save_file(tensors, str(weights), metadata={"format": "lit_opt"})
        manifest["tensors"]["bert.embeddings.word_embeddings.remap"]["dtype"] = str(remap.dtype)[6:]
        manifest["files"]["model.safetensors"] = {"bytes": weights.stat().st_size, "sha256": sha256(weights)}
    if plan is not None:
        manifest["plan"]["structure"][0]["remap"].update(plan)
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("remap", "plan", "pattern"),
    [
        (
            torch.full((BERT_VOCAB,), 10_000, dtype=torch.int16),
            None,
            r"remap points at rows 10000..10000, outside",
        ),
        (torch.full((BERT_VOCAB,), -1, dtype=torch.int16), None, r"remap points at rows -1..-1, outside"),
        (torch.zeros(BERT_VOCAB), None, r"remap has dtype torch.float32; expected an integer"),
        (None, {"num_embeddings": 10**9}, r"keeps 1000000000 rows.*out of range"),
        (
            None,
            {"vocab_size": 10**9},
            r"prunes the vocabulary of .*1000000000 tokens.*HINT: build the skeleton",
        ),
    ],
    ids=["row-too-large", "negative", "float", "rows", "vocab"],
)
def test_load_rejects_a_damaged_remap(
    remap: torch.Tensor | None, plan: dict[str, Any] | None, pattern: str, tmp_path: Path
) -> None:
    path = lit_opt.export(prune_vocabulary(tiny_bert(), kept_ids(), UNK), tmp_path / "a")
    _tamper(path, remap, plan)
    with pytest.raises(ValueError, match=pattern):
        lit_opt.load(path)


def test_restore_rejects_a_remap_outside_the_table() -> None:
    state = prune_vocabulary(tiny_bert(), [2, 3], UNK).state_dict()
    state["bert.embeddings.word_embeddings.remap"][5] = 99
    with pytest.raises(
        ValueError, match=r"state_dict key 'bert.embeddings.word_embeddings.remap': the remap points"
    ):
        lit_opt.restore(tiny_bert(), state)


def test_load_into_a_pruned_skeleton(tmp_path: Path) -> None:
    model = prune_vocabulary(tiny_bert(), kept_ids(), UNK)
    path = lit_opt.export(model, tmp_path / "float", quantization={"weight_bits": 8, "activations": "none"})
    skeleton = prune_vocabulary(tiny_bert(seed=9), kept_ids(), UNK)
    loaded = lit_opt.load(path, model=skeleton, kernel="reference")
    reference = lit_opt.load(path, kernel="reference")
    torch.testing.assert_close(logits(loaded, inputs()), logits(reference, inputs()), rtol=0, atol=0)
