"""Encoder self-attention as ONNX Runtime's MultiHeadAttention: same maths eagerly and in the graph."""

import json

import onnx
import pytest
import torch
from onnx import helper

import lit_opt
from lit_opt.export.onnx import ONNX_FILE, ONNX_MANIFEST
from lit_opt.export.onnx_attention import OnnxSelfAttention, additive_mask, fuse_self_attention
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from tests.helpers.models import BERT_VOCAB, tiny_bert


def _inputs(batch=3, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, BERT_VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, length // 2 :] = 0  # a padded row: the mask reaches the fused node
    return {"input_ids": ids, "attention_mask": mask}


def _quantized(heads_sparsity=0.0):
    model = tiny_bert(num_layers=3)
    if heads_sparsity:
        config = PruningConfig(
            heads_sparsity, structure="heads", scope="global", targets=["*.attention.self"]
        )
        update_masks(prepare_pruning(model, config), config, heads_sparsity, step=0)
    prepare_quantization(
        model, QuantizationConfig(weight_bits=8, activations="dynamic", targets=["bert.encoder.*"])
    )
    return model.eval()


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_the_swapped_attention_computes_what_bert_computes(implementation):
    model = tiny_bert()
    model.set_attn_implementation(implementation)
    inputs = _inputs()
    with torch.inference_mode():
        expected = model(**inputs).logits
        assert fuse_self_attention(model) == 2
        assert all(isinstance(layer.attention.self, OnnxSelfAttention) for layer in model.bert.encoder.layer)
        torch.testing.assert_close(model(**inputs).logits, expected, atol=1e-5, rtol=0)


def test_biases_move_into_the_attention_node():
    model = tiny_bert()
    attention = model.bert.encoder.layer[0].attention.self
    q, k, v = (attention.query.bias.clone(), attention.key.bias.clone(), attention.value.bias.clone())
    fuse_self_attention(model)
    fused = model.bert.encoder.layer[0].attention.self
    assert fused.query.bias is None and fused.key.bias is None and fused.value.bias is None
    torch.testing.assert_close(fused.qkv_bias, torch.cat((q, k, v)))


def test_boolean_masks_become_additive_and_additive_ones_pass():
    keep = torch.tensor([[True, False]])
    assert additive_mask(keep, torch.float32).tolist() == [[0.0, torch.finfo(torch.float32).min]]
    additive = torch.tensor([[0.0, -5.0]])
    assert additive_mask(additive, torch.float32) is additive


def test_float_attention_is_left_to_onnx_runtime_when_asked(tmp_path):
    assert fuse_self_attention(tiny_bert(), leave_float=True) == 0
    loaded = lit_opt.load(lit_opt.export(_quantized(), tmp_path / "artifact"), kernel="reference")
    assert fuse_self_attention(loaded, leave_float=True) == 3  # integer projections: ORT cannot fuse them


def test_decoder_attention_is_left_alone():
    from transformers import BertConfig, BertLMHeadModel

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, is_decoder=True)  # fmt: skip
    assert fuse_self_attention(BertLMHeadModel(config)) == 0


def _graph_ops(path):
    return [n for n in onnx.load(str(path / ONNX_FILE)).graph.node]


@pytest.mark.parametrize("heads_sparsity", [0.0, 0.5])
def test_a_quantized_encoder_exports_one_attention_node_per_layer(tmp_path, heads_sparsity):
    model = _quantized(heads_sparsity)
    path = lit_opt.export_onnx(model, tmp_path / "fused")
    nodes = _graph_ops(path)
    attention = [n for n in nodes if n.op_type == "MultiHeadAttention"]
    assert len(attention) == 3 and "Softmax" not in {n.op_type for n in nodes}
    reference = lit_opt.load(lit_opt.export(model, tmp_path / "artifact"), kernel="reference")
    heads = [layer.attention.self.num_attention_heads for layer in reference.bert.encoder.layer]
    assert [
        helper.get_attribute_value(a) for n in attention for a in n.attribute if a.name == "num_heads"
    ] == heads
    assert json.loads((path / ONNX_MANIFEST).read_text())["attention"] == "MultiHeadAttention (3 layers)"
    inputs = _inputs()
    with torch.inference_mode():
        expected = reference(**inputs).logits
    torch.testing.assert_close(lit_opt.load_onnx(path)(**inputs).logits, expected, atol=1e-5, rtol=0)


def test_fuse_attention_false_keeps_the_traced_attention(tmp_path):
    model = _quantized()
    traced = lit_opt.export_onnx(model, tmp_path / "traced", fuse_attention=False)
    fused = lit_opt.export_onnx(model, tmp_path / "fused")
    assert "MultiHeadAttention" not in {n.op_type for n in _graph_ops(traced)}
    assert "Softmax" in {n.op_type for n in _graph_ops(traced)}
    assert json.loads((traced / ONNX_MANIFEST).read_text())["attention"] == "as traced"
    inputs = _inputs()
    torch.testing.assert_close(
        lit_opt.load_onnx(traced)(**inputs).logits,
        lit_opt.load_onnx(fused)(**inputs).logits,
        atol=1e-5,
        rtol=0,
    )


def test_export_prints_no_missing_shape_inference_warnings(tmp_path, capfd):
    lit_opt.export_onnx(_quantized(), tmp_path / "onnx")
    assert "shape inference of com.microsoft" not in capfd.readouterr().err  # ORT operators are typed
