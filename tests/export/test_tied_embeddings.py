"""Tied input/output embeddings (GPT-2, Llama with tie_word_embeddings) stay one tensor through QAT,
pruning, weight sharing, export (stored once) and load (one tensor in memory)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import lit_opt
from lit_opt.nn import QuantizedEmbedding, QuantizedLinear
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from lit_opt.sharing import SharingConfig, cluster_weights, prepare_sharing
from tests.helpers.models import lm_ids, tiny_gpt2, tiny_llama


def _stored(path) -> set[str]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return set(f.keys())


def _tied_in_manifest(path) -> dict[str, str]:
    return json.loads((path / "lit_opt.json").read_text())["plan"]["tied"]


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_qat_one_quantizer_one_copy_shared_codes(tmp_path, build) -> None:
    model = build()
    prepare_quantization(model, QuantizationConfig(weight_bits=4, granularity="per_group", group_size=16))
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert embedding.parametrizations.weight[0] is head.parametrizations.weight[0]
    assert embedding.parametrizations.weight.original is head.parametrizations.weight.original

    path = lit_opt.export(model, tmp_path / "a")
    source = _tied_in_manifest(path)["lm_head.weight"]
    assert "lm_head.weight" not in _stored(path) and source in _stored(path)
    loaded = lit_opt.load(path, kernel="reference")
    embedding, head = loaded.get_input_embeddings(), loaded.get_output_embeddings()
    assert isinstance(embedding, QuantizedEmbedding) and isinstance(head, QuantizedLinear)
    assert embedding.codes is head.codes and embedding.scale is head.scale
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_pruning_the_head_masks_the_embedding_with_the_same_mask(tmp_path) -> None:
    model = tiny_gpt2()
    config = PruningConfig(target_sparsity=0.5, scope="local")
    with pytest.warns(UserWarning, match="Embedding that it does not compress.*'transformer.wte'"):
        groups = prepare_pruning(model, config)
    update_masks(groups, config, 0.5, step=0)
    wte, head = model.transformer.wte, model.lm_head
    assert wte.parametrizations.weight[0] is head.parametrizations.weight[0]
    assert torch.equal(wte.weight, head.weight) and bool(wte.weight.eq(0).any())
    assert sum(g.name.startswith("transformer.h.") for g in groups) == 8  # the blocks' Conv1D weights

    path = lit_opt.export(model, tmp_path / "a")
    assert "lm_head.weight" not in _stored(path)
    loaded = lit_opt.load(path, kernel="reference")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_weight_sharing_one_codebook_for_both(tmp_path) -> None:
    model = tiny_llama()
    config = SharingConfig(n_clusters=16, init="linear", targets=["lm_head"])
    with pytest.warns(UserWarning, match="'lm_head' shares its weight with \\['model.embed_tokens'\\]"):
        assert prepare_sharing(model, config) == ["model.embed_tokens", "lm_head"]
    assert cluster_weights(model, config) == 1
    assert len(torch.unique(model.model.embed_tokens.weight)) <= 16

    path = lit_opt.export(model, tmp_path / "a")
    assert {k for k in _stored(path) if k.startswith("lm_head")} == set()
    loaded = lit_opt.load(path, kernel="reference")
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_untouched_tied_model_is_stored_once(tmp_path) -> None:
    model = tiny_llama()
    path = lit_opt.export(model, tmp_path / "a")
    assert _tied_in_manifest(path) == {"lm_head.weight": "model.embed_tokens.weight"}
    assert "lm_head.weight" not in _stored(path)


def test_a_tie_to_a_missing_tensor_is_refused(tmp_path) -> None:
    path = lit_opt.export(tiny_llama(), tmp_path / "a")
    manifest = json.loads((path / "lit_opt.json").read_text())
    manifest["plan"]["tied"] = {"lm_head.weight": "model.nope.weight"}
    (path / "lit_opt.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match="ties 'lm_head.weight' to 'model.nope.weight', which it does not hold"
    ):
        lit_opt.load(path, kernel="reference")


def test_low_rank_leaves_a_tied_head_dense_and_says_so(tmp_path) -> None:
    callback = lit_opt.LowRankCallback(rank=4, targets=["lm_head", "*.mlp.down_proj"])
    model = tiny_llama()
    with pytest.warns(UserWarning, match=r"\['lm_head'\] share their weight.*stay dense"):
        selected = callback._select(model)
    assert "lm_head" not in selected and len(selected) == 2
