import pytest
import torch
from torch import nn

from lit_opt.nn.activation_quantizer import ActivationQuantizer
from lit_opt.quantization import QuantizationConfig, prepare_quantization, weight_quantizers
from tests.helpers.models import TinyConvNet, TinyEmbeddingNet, TinyMLP, tiny_bert


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weight_bits": 3}, r"weight_bits=3 is not supported; accepted: 4 or 8"),
        ({"weight_bits": True}, r"weight_bits=True is not supported"),
        ({"activations": "int8"}, r"activations='int8' is not one of \('dynamic', 'static', 'none'\)"),
        (
            {"granularity": "per_row"},
            r"granularity='per_row' is not one of \('per_tensor', 'per_channel', 'per_group'\)",
        ),
        (
            {"granularity": "per_group"},
            r"group_size=None must be a positive integer with granularity='per_group'",
        ),
        ({"granularity": "per_group", "group_size": 0}, r"group_size=0 must be a positive integer"),
        ({"granularity": "per_group", "group_size": -32}, r"group_size=-32 must be a positive integer"),
        ({"group_size": 32}, r"group_size=32 is only used with granularity='per_group'"),
        ({"symmetric": "yes"}, r"symmetric='yes' must be True or False"),
        ({"targets": []}, r"targets=\[\] selects no module"),
        ({"targets": "encoder.*"}, r"HINT: write targets=\['encoder.\*'\]"),
    ],
)
def test_config_errors_name_argument_value_and_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantizationConfig(**kwargs)


def test_prepare_selects_linear_conv_embedding_and_skips_embedding_inputs():
    assert prepare_quantization(TinyMLP(), QuantizationConfig()) == ["fc1", "fc2"]
    conv = TinyConvNet()
    assert prepare_quantization(conv, QuantizationConfig()) == ["conv", "fc"]
    assert conv.conv.input_quantizer.per_sample and not conv.fc.input_quantizer.per_sample
    emb = TinyEmbeddingNet()
    prepare_quantization(emb, QuantizationConfig(weight_bits=4, granularity="per_group", group_size=8))
    assert not hasattr(emb.embedding, "input_quantizer")
    assert isinstance(emb.fc.input_quantizer, ActivationQuantizer)


def test_prepare_is_idempotent_per_owner_and_refuses_a_second_owner():
    model = TinyMLP()
    prepare_quantization(model, QuantizationConfig(), owner="a")
    prepare_quantization(model, QuantizationConfig(), owner="a")
    assert len(model.fc1.parametrizations.weight) == 1
    with pytest.raises(
        ValueError, match=r"module 'fc1' is already quantized by a; b targets it too. HINT: give each"
    ):
        prepare_quantization(model, QuantizationConfig(targets=["fc1"]), owner="b")


def test_group_size_must_divide_every_selected_layer():
    model = TinyMLP()  # fc1: 16 inputs, fc2: 32 inputs
    with pytest.raises(
        ValueError, match=r"group_size=12 does not divide the 16 inputs per channel of module 'fc1'"
    ):
        prepare_quantization(model, QuantizationConfig(granularity="per_group", group_size=12))
    assert not any(True for _ in weight_quantizers(model))  # nothing half-installed


def test_targets_matching_nothing_lists_near_misses():
    with pytest.raises(ValueError, match=r"targets=\['\*.mlp.\*'\] matched no .*bert.encoder.layer"):
        prepare_quantization(tiny_bert(), QuantizationConfig(targets=["*.mlp.*"]))


def test_hf_attention_and_embeddings_are_selected_by_pattern():
    model = tiny_bert()
    names = prepare_quantization(model, QuantizationConfig(targets=["*.attention.*", "*word_embeddings"]))
    assert "bert.embeddings.word_embeddings" in names
    assert "bert.encoder.layer.1.attention.self.query" in names
    assert all("intermediate" not in n for n in names)
    ids = torch.randint(1, 100, (2, 8))
    assert model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (2, 2)


def test_quantizers_follow_the_weight_device_and_keep_state_dict_keys():
    model = nn.Sequential(nn.Linear(4, 4))
    prepare_quantization(model, QuantizationConfig(activations="static"))
    keys = set(model.state_dict())
    assert {
        "0.parametrizations.weight.original",
        "0.parametrizations.weight.0.scale",
        "0.input_quantizer.scale",
    } <= keys
