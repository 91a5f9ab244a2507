"""Structured pruning of decoder blocks (Llama GQA, GPT-2) and its physical removal at export:
the masked model and the physically pruned, loaded one compute the same logits."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

import lit_opt
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from tests.helpers.models import lm_ids, tiny_gpt2, tiny_llama


def _prune(model: nn.Module, structure: str, targets: list[str], sparsity: float = 0.5) -> None:
    config = PruningConfig(target_sparsity=sparsity, structure=structure, targets=targets, scope="local")
    groups = prepare_pruning(model, config, owner=f"{structure}{targets}")
    update_masks(groups, config, sparsity, step=0)


def _plan(path) -> list[dict]:
    return json.loads((path / "lit_opt.json").read_text())["plan"]["structure"]


def test_llama_heads_remove_a_kv_head_with_its_query_group(tmp_path) -> None:
    model = tiny_llama()
    _prune(model, "heads", ["*.self_attn"])
    attention = model.model.layers[0].self_attn
    v_dead = attention.v_proj.weight.eq(0).all(dim=1).reshape(2, 8).all(dim=1)  # per key/value head
    q_dead = attention.q_proj.weight.eq(0).all(dim=1).reshape(4, 8).all(dim=1)  # per query head
    assert v_dead.tolist().count(True) == 1
    assert torch.equal(q_dead, v_dead.repeat_interleave(2))  # the group of the removed kv head
    assert torch.equal(attention.o_proj.weight.eq(0).all(dim=0).reshape(4, 8).all(dim=1), q_dead)

    path = lit_opt.export(model, tmp_path / "a")
    loaded = lit_opt.load(path, kernel="reference")
    shrunk = loaded.model.layers[0].self_attn
    assert (shrunk.q_proj.out_features, shrunk.k_proj.out_features, shrunk.o_proj.in_features) == (16, 8, 16)
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_llama_rows_prune_gate_and_up_together_and_remove_down_columns(tmp_path) -> None:
    model = tiny_llama()
    _prune(model, "rows", ["*.gate_proj", "*.up_proj"], sparsity=0.25)
    mlp = model.model.layers[1].mlp
    gate_dead, up_dead = mlp.gate_proj.weight.eq(0).all(dim=1), mlp.up_proj.weight.eq(0).all(dim=1)
    assert int(gate_dead.sum()) == 16 and torch.equal(gate_dead, up_dead)

    path = lit_opt.export(model, tmp_path / "a")
    widths = {s["module"]: s["out_features"] for s in _plan(path) if "out_features" in s}
    assert widths["model.layers.1.mlp.up_proj"] == 48
    loaded = lit_opt.load(path, kernel="reference")
    assert loaded.model.layers[1].mlp.down_proj.in_features == 48
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_gpt2_heads_and_mlp_rows_through_fused_conv1d(tmp_path) -> None:
    model = tiny_gpt2()
    _prune(model, "heads", ["*.attn"])
    _prune(model, "rows", ["*.c_fc"])
    c_attn = model.transformer.h[0].attn.c_attn.weight  # (in, 3 x 4 heads x 8)
    dead = c_attn.eq(0).all(dim=0).reshape(3, 4, 8).all(dim=-1)  # (q/k/v, heads)
    assert bool((dead == dead[0]).all()) and int(dead[0].sum()) == 2

    path = lit_opt.export(model, tmp_path / "a")
    loaded = lit_opt.load(path, kernel="reference")
    attention = loaded.transformer.h[0].attn
    assert (attention.num_heads, attention.split_size, tuple(attention.c_attn.weight.shape)) == (
        2,
        16,
        (32, 48),
    )
    assert tuple(loaded.transformer.h[0].mlp.c_proj.weight.shape) == (64, 32)
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_layers_pruned_differently_load_with_their_own_widths(tmp_path) -> None:
    model = tiny_llama(kv_heads=4)  # plain multi-head attention: 4 units per layer
    _prune(model, "heads", ["*.self_attn"], sparsity=0.5)
    with torch.no_grad():  # one more head of layer 1 goes
        layer1 = model.model.layers[1].self_attn
        alive = ~layer1.v_proj.weight.eq(0).all(dim=1).reshape(4, 8).all(dim=1)
        head = int(torch.nonzero(alive)[0])
        for proj in (layer1.q_proj, layer1.k_proj, layer1.v_proj):
            proj.parametrizations.weight[0].mask[head * 8 : (head + 1) * 8] = False
        layer1.o_proj.parametrizations.weight[0].mask[:, head * 8 : (head + 1) * 8] = False
    loaded = lit_opt.load(lit_opt.export(model, tmp_path / "a"), kernel="reference")
    assert [layer.self_attn.o_proj.in_features for layer in loaded.model.layers] == [16, 8]
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_heads_on_a_single_kv_head_is_refused() -> None:
    with pytest.raises(ValueError, match="single key/value head.*no heads.*HINT"):
        _prune(tiny_llama(kv_heads=1), "heads", ["*.self_attn"])


def test_heads_without_attention_blocks_names_the_rule() -> None:
    with pytest.raises(ValueError, match="found no attention block.*Llama or GPT-2.*HINT"):
        _prune(tiny_llama(), "heads", ["*.mlp"])


def test_unrecognised_producer_keeps_its_masks_and_export_says_so(tmp_path, caplog) -> None:
    class Odd(nn.Module):  # rows feed a consumer through a residual sum: no rule can remove them
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)

        def forward(self, x):
            return self.b(x + self.a(x))

    torch.manual_seed(0)
    model = Odd()
    _prune(model, "rows", ["a"])
    x = torch.randn(3, 8)
    with caplog.at_level(logging.WARNING, logger="lit_opt.export.structure"):
        path = lit_opt.export(model, tmp_path / "a")
    assert "rows pruned in a stay in place (masked, stored sparse)" in caplog.text
    assert _plan(path) == []
    torch.manual_seed(0)
    loaded = lit_opt.load(path, model=Odd(), kernel="reference")
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_qwen2_heads_remove_query_key_value_biases_too(tmp_path) -> None:
    model = tiny_llama(family="qwen2")
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    _prune(model, "heads", ["*.self_attn"])
    loaded = lit_opt.load(lit_opt.export(model, tmp_path / "a"), kernel="reference")
    attention = loaded.model.layers[0].self_attn
    assert (attention.q_proj.bias.shape[0], attention.k_proj.bias.shape[0]) == (16, 8)
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel", ["int8", "packed_int8", "bf16"])
def test_quantized_pruned_gpt2_runs_on_every_kernel(tmp_path, kernel) -> None:
    from lit_opt.quantization import QuantizationConfig, prepare_quantization

    model = tiny_gpt2()
    prepare_quantization(model, QuantizationConfig(weight_bits=8))
    _prune(model, "heads", ["*.attn"])
    path = lit_opt.export(model, tmp_path / "a")
    loaded = lit_opt.load(path, kernel=kernel)
    assert loaded.transformer.h[0].attn.c_attn.kernel == kernel
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0.05)
    assert loaded.generate(ids[:1, :4], max_new_tokens=4, do_sample=False, pad_token_id=0).shape == (1, 8)


def test_query_heads_prune_evenly_within_groups_and_load_with_fewer_per_group(tmp_path) -> None:
    model = tiny_llama(kv_heads=2, heads=8)  # 4 query heads of size 4 per key/value head
    _prune(model, "query_heads", ["*.self_attn"], sparsity=0.5)
    attention = model.model.layers[0].self_attn
    dead = attention.o_proj.weight.eq(0).all(dim=0).reshape(2, 4, 4).all(dim=-1)  # (kv head, query head)
    assert dead.sum(dim=1).tolist() == [2, 2]
    assert torch.equal(attention.q_proj.weight.eq(0).all(dim=1).reshape(2, 4, 4).all(dim=-1), dead)
    assert not bool(attention.k_proj.weight.eq(0).any()) and not bool(attention.v_proj.weight.eq(0).any())

    loaded = lit_opt.load(lit_opt.export(model, tmp_path / "a"), kernel="reference")
    shrunk = loaded.model.layers[0].self_attn
    assert shrunk.num_key_value_groups == 2
    assert (shrunk.q_proj.out_features, shrunk.k_proj.out_features, shrunk.o_proj.in_features) == (16, 8, 16)
    ids = lm_ids()
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    options = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(loaded.generate(ids[:1, :4], **options), model.generate(ids[:1, :4], **options))


def test_query_heads_serve_a_single_kv_head() -> None:
    model = tiny_llama(kv_heads=1)
    _prune(model, "query_heads", ["*.self_attn"], sparsity=0.75)
    dead = model.model.layers[1].self_attn.o_proj.weight.eq(0).all(dim=0).reshape(4, 8).all(dim=-1)
    assert int(dead.sum()) == 3  # one query head stays


def test_query_heads_without_grouped_query_attention_is_refused() -> None:
    with pytest.raises(ValueError, match="structure='query_heads' needs grouped-query attention.*'heads'"):
        _prune(tiny_gpt2(), "query_heads", ["*.attn"])


def test_query_heads_refuse_the_activation_criterion() -> None:
    with pytest.raises(ValueError, match="criterion='activation'.*structure='query_heads'"):
        PruningConfig(structure="query_heads", criterion="activation")
