"""Export of pruned models: sparse storage, physical removal of rows and heads, and equivalence."""

import json

import pytest
import torch
from torch import nn

import lit_opt
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from tests.helpers.models import BERT_VOCAB, TinyMLP, tiny_bert


def _prune(model, sparsity=0.5, **kwargs):
    config = PruningConfig(sparsity, **kwargs)
    update_masks(prepare_pruning(model, config), config, sparsity, step=0)
    return model


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))


def _bert_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, BERT_VOCAB, (8, 16), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("quantized", [False, True])
def test_rows_of_a_sequential_mlp_are_removed_and_outputs_unchanged(tmp_path, quantized):
    model = _prune(_mlp(), structure="rows", scope="local", targets=["0", "2"])
    if quantized:
        prepare_quantization(model, QuantizationConfig(weight_bits=8))
    model.eval()
    x = torch.randn(64, 16)
    expected = model(x)
    path = lit_opt.export(model, tmp_path / "a")
    loaded = lit_opt.load(path, model=_mlp(), kernel="reference")
    assert [loaded[0].out_features, loaded[2].in_features, loaded[2].out_features, loaded[4].in_features] == [
        16,
        16,
        16,
        16,
    ]
    torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-5)
    assert model[0].weight.shape == (32, 16)  # the caller's model is untouched
    plan = json.loads((path / "lit_opt.json").read_text())["plan"]["structure"]
    assert {"module": "2", "in_features": 16, "out_features": 16} in plan


@pytest.mark.parametrize("quantized", [False, True])
def test_bert_heads_and_ffn_rows_are_removed(tmp_path, quantized):
    model = tiny_bert()
    _prune(model, structure="heads", scope="local", targets=["*.attention.self"])
    _prune(model, structure="rows", scope="local", targets=["*.intermediate.dense"])
    if quantized:
        prepare_quantization(model, QuantizationConfig(weight_bits=8, exclude=["*embeddings*"]))
    model.eval()
    inputs = _bert_inputs()
    expected = model(**inputs).logits
    path = lit_opt.export(model, tmp_path / "bert")
    loaded = lit_opt.load(path, kernel="reference")  # rebuilt from the stored config, then shrunk
    layer = loaded.bert.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 1
    assert layer.attention.self.query.out_features == 16 and layer.attention.output.dense.in_features == 16
    assert layer.intermediate.dense.out_features == 32 and layer.output.dense.in_features == 32
    torch.testing.assert_close(loaded(**inputs).logits, expected, atol=1e-5, rtol=1e-5)
    dense = sum(p.numel() for p in tiny_bert().bert.encoder.parameters())
    kept = sum(t.numel() for t in loaded.bert.encoder.state_dict().values() if isinstance(t, torch.Tensor))
    assert kept < 0.6 * dense


@pytest.mark.parametrize("quantized", [False, True])
def test_unstructured_sparsity_is_stored_packed(tmp_path, quantized):
    torch.manual_seed(0)
    dense_model = nn.Sequential(nn.Linear(256, 256, bias=False))
    dense_size = (lit_opt.export(dense_model, tmp_path / "dense") / "model.safetensors").stat().st_size
    model = _prune(nn.Sequential(nn.Linear(256, 256, bias=False)), 0.9)
    model[0].load_state_dict(dense_model[0].state_dict(), strict=False)
    if quantized:
        prepare_quantization(model, QuantizationConfig(weight_bits=8, activations="none"))
    model.eval()
    path = lit_opt.export(model, tmp_path / "sparse")
    size = (path / "model.safetensors").stat().st_size
    assert size <= (0.08 if quantized else 0.25) * dense_size  # 90% sparse: mask bits + 10% of the values
    manifest = json.loads((path / "lit_opt.json").read_text())
    assert manifest["tensors"]["0.weight"]["nnz"] == round(0.1 * 256 * 256)
    assert "no speedup" in manifest["plan"]["notes"][0]
    x = torch.randn(8, 256)
    assert torch.equal(
        lit_opt.load(path, model=nn.Sequential(nn.Linear(256, 256, bias=False)), kernel="reference")(x),
        model(x),
    )


def test_n_m_and_rows_without_a_known_consumer_stay_masked(tmp_path):
    model = _prune(
        TinyMLP(), structure="rows", scope="local", targets=["fc1"]
    )  # attributes, not a Sequential
    _prune(model, structure="2:4", targets=["fc2"])
    prepare_quantization(model, QuantizationConfig(weight_bits=4, granularity="per_group", group_size=8))
    model.eval()
    path = lit_opt.export(model, tmp_path / "a")
    loaded = lit_opt.load(path, model=TinyMLP(), kernel="reference")
    assert loaded.fc1.out_features == 32  # no removal: the consumer of fc1 is unknown
    x = torch.randn(16, 16)
    assert torch.equal(loaded(x), model(x))


def test_per_group_quantizer_across_dead_inputs_keeps_the_columns(tmp_path):
    model = _mlp()
    config = PruningConfig(0.5, structure="rows", scope="local", targets=["0"])
    groups = prepare_pruning(model, config)
    update_masks(groups, config, 0.5, step=0)
    prepare_quantization(
        model, QuantizationConfig(weight_bits=4, granularity="per_group", group_size=8, targets=["2"])
    )
    model.eval()
    alive = model[0].parametrizations.weight[0].mask.all(dim=1)
    path = lit_opt.export(model, tmp_path / "a")
    loaded = lit_opt.load(path, model=_mlp(), kernel="reference")
    aligned = bool((alive.reshape(-1, 8).all(dim=1) | (~alive.reshape(-1, 8)).all(dim=1)).all())
    assert (loaded[0].out_features == 16) == aligned
    x = torch.randn(8, 16)
    torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)
