"""The last BERT layer computed for the first token only: same logits, used by export_onnx and load, refused elsewhere."""

import copy
import json
from pathlib import Path

import pytest
import torch

import lit_opt
from lit_opt.export.first_token import FirstTokenLayer, first_token_last_layer
from lit_opt.export.onnx import ONNX_MANIFEST
from tests.helpers.models import BERT_VOCAB, TinyMLP, tiny_bert

STATIC = Path(__file__).parents[1] / "fixtures" / "artifact_v1"  # heads/rows removed, static int8, int4 vocab


def _padded_inputs(batch=4, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, BERT_VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0  # padded rows: the first token must not attend to them
    mask[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("source", ["float", "loaded"])
def test_the_logits_are_the_whole_models(source):
    """On a padded batch, for a float model and for a loaded artifact with pruned heads and static int8."""
    if source == "float":
        model = tiny_bert(num_layers=3).eval()
        model.set_attn_implementation("eager")
    else:
        model = lit_opt.load(STATIC, kernel="reference")
    inputs = _padded_inputs()
    swapped = copy.deepcopy(model)
    assert first_token_last_layer(swapped)
    assert isinstance(swapped.bert.encoder.layer[-1], FirstTokenLayer)
    assert dict(swapped.named_parameters()).keys() == dict(model.named_parameters()).keys()  # names kept
    with torch.inference_mode():
        expected, got = model(**inputs).logits, swapped(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_boolean_mask_is_read_as_keep():
    model = tiny_bert().eval()
    layer = FirstTokenLayer(model.bert.encoder.layer[-1])
    hidden = torch.randn(2, 5, 32)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)[
        :, None, None, :
    ]  # (B, 1, 1, L)
    additive = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    with torch.inference_mode():
        torch.testing.assert_close(layer(hidden, keep), layer(hidden, additive))
        # the padded keys are ignored: the second row equals its unpadded first two tokens alone
        torch.testing.assert_close(layer(hidden[1:, :2], None), layer(hidden, keep)[1:], atol=1e-6, rtol=0)


def test_other_models_are_left_whole():
    mlp = TinyMLP()
    assert not first_token_last_layer(mlp)
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    masked_lm = BertForMaskedLM(config)  # its head reads every token
    assert not first_token_last_layer(masked_lm)
    assert type(masked_lm.bert.encoder.layer[0]).__name__ == "BertLayer"


def test_export_onnx_records_it_and_can_export_every_token(tmp_path):
    model = tiny_bert(num_layers=3)
    first = lit_opt.export_onnx(model, tmp_path / "first")
    whole = lit_opt.export_onnx(model, tmp_path / "whole", first_token_only=False)
    assert json.loads((first / ONNX_MANIFEST).read_text())["last_layer"] == "first token only"
    assert json.loads((whole / ONNX_MANIFEST).read_text())["last_layer"] == "every token"
    inputs = _padded_inputs()
    torch.testing.assert_close(
        lit_opt.load_onnx(first)(**inputs).logits,
        lit_opt.load_onnx(whole)(**inputs).logits,
        atol=1e-5,
        rtol=0,
    )


def test_a_non_boolean_switch_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="first_token_only='yes' is not accepted; expected true or false"):
        lit_opt.export_onnx(tiny_bert(), tmp_path / "out", first_token_only="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("kernel", ["reference", "bf16", "packed_int8"])
def test_load_computes_the_last_layer_for_the_first_token_when_asked(kernel):
    whole = lit_opt.load(STATIC, kernel=kernel)
    first = lit_opt.load(STATIC, kernel=kernel, first_token_only=True)
    assert isinstance(first.bert.encoder.layer[-1], FirstTokenLayer)
    assert not isinstance(whole.bert.encoder.layer[-1], FirstTokenLayer)  # opt-in
    inputs = _padded_inputs()
    with torch.inference_mode():
        torch.testing.assert_close(first(**inputs).logits, whole(**inputs).logits, atol=1e-5, rtol=0)


def test_load_first_token_only_is_a_flag():
    with pytest.raises(ValueError, match="first_token_only='yes' is not accepted; expected true or false"):
        lit_opt.load(STATIC, first_token_only="yes")  # type: ignore[arg-type]
