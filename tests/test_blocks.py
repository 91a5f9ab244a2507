"""MLP and attention blocks found from module shapes and head sizes (BERT, Llama with GQA, GPT-2)."""

from __future__ import annotations

import pytest
from torch import nn

from lit_opt.blocks import find_blocks, head_attributes
from tests.helpers.models import tiny_bert, tiny_gpt2, tiny_llama


def _summary(model: nn.Module) -> list[tuple]:
    return [
        (
            b.name,
            b.kind,
            b.units,
            b.group,
            [(s.module.rpartition(".")[2], s.role, s.sections) for s in b.slices],
        )
        for b in find_blocks(model)
    ]


def test_llama_gqa_attention_and_gated_mlp() -> None:
    found = _summary(tiny_llama())
    assert found[0] == (
        "model.layers.0.self_attn",
        "attention",
        2,  # key/value heads: the units
        2,  # query heads per key/value head
        [
            ("q_proj", "producer", 1),
            ("k_proj", "producer", 1),
            ("v_proj", "producer", 1),
            ("o_proj", "consumer", 1),
        ],
    )
    assert found[2] == (
        "model.layers.0.mlp",
        "mlp",
        64,
        1,
        [("gate_proj", "producer", 1), ("up_proj", "producer", 1), ("down_proj", "consumer", 1)],
    )
    assert len(found) == 4 and find_blocks(tiny_llama())[2].gated


def test_gpt2_fused_attention_and_conv1d_mlp() -> None:
    found = _summary(tiny_gpt2())
    assert found[0] == (
        "transformer.h.0.attn",
        "attention",
        4,
        1,
        [("c_attn", "producer", 3), ("c_proj", "consumer", 1)],
    )
    assert found[2] == (
        "transformer.h.0.mlp",
        "mlp",
        128,
        1,
        [("c_fc", "producer", 1), ("c_proj", "consumer", 1)],
    )


def test_bert_attention_output_lives_in_the_parent() -> None:
    found = _summary(tiny_bert())
    assert found[0][0] == "bert.encoder.layer.0.attention.self"
    assert found[0][4][-1] == ("dense", "consumer", 1)
    assert find_blocks(tiny_bert())[0].consumer.module == "bert.encoder.layer.0.attention.output.dense"
    assert found[2][:3] == ("bert.encoder.layer.0", "mlp", 64)


def test_non_zero_preserving_activation_has_no_mlp_block() -> None:
    model = tiny_llama()
    model.config.hidden_act = "sigmoid"  # sigmoid(0) = 0.5: a zero row still feeds the consumer
    assert [b.kind for b in find_blocks(model)] == ["attention", "attention"]


def test_head_counts_that_break_gqa_are_refused() -> None:
    model = tiny_llama()
    attention = model.model.layers[0].self_attn
    attention.k_proj = nn.Linear(32, 24, bias=False)  # 3 key heads for 4 query heads
    attention.v_proj = nn.Linear(32, 24, bias=False)
    with pytest.raises(ValueError, match="4 query heads and 3 key/value heads.*breaks grouped-query.*HINT"):
        find_blocks(model)


def test_without_a_config_the_block_modules_decide_the_activation() -> None:
    assert [b.kind for b in find_blocks(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)))] == [
        "mlp"
    ]
    assert find_blocks(nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 4))) == []
    assert find_blocks(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 4))) == []  # no activation at all


def test_head_attributes_only_those_the_module_has() -> None:
    gpt2_attention = tiny_gpt2().transformer.h[0].attn
    assert head_attributes(gpt2_attention, 2, 2, 8) == {"num_heads": 2, "split_size": 16}
    bert_self = tiny_bert().bert.encoder.layer[0].attention.self
    assert head_attributes(bert_self, 1, 1, 16) == {"num_attention_heads": 1, "all_head_size": 16}


class _Attention(nn.Module):
    """Grouped-query attention under names no rule knows: 6 query heads, 2 key/value heads of size 4."""

    def __init__(self) -> None:
        super().__init__()
        self.head_dim = 4
        self.wq, self.wk, self.wv = nn.Linear(16, 24), nn.Linear(16, 8), nn.Linear(16, 8)
        self.wo = nn.Linear(24, 16)


def test_blocks_are_found_by_shape_not_by_name() -> None:
    model = nn.Module()
    model.mixer = _Attention()
    model.ffn = nn.Sequential(nn.Linear(16, 40), nn.GELU(), nn.Linear(40, 16))
    attention, mlp = find_blocks(model)
    assert (attention.name, attention.units, attention.group, attention.consumer.module) == (
        "mixer",
        2,
        3,
        "mixer.wo",
    )
    assert [s.module for s in attention.producers] == ["mixer.wq", "mixer.wk", "mixer.wv"]
    assert (mlp.name, mlp.units, mlp.gated) == ("ffn", 40, False)
