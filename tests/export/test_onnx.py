"""ONNX export of lit_opt artifacts and the ONNX Runtime wrapper: equivalence, trained codes kept, bad input."""

import json
import logging
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

import lit_opt
from lit_opt.export.onnx import ONNX_FILE, ONNX_MANIFEST, TOLERANCE, quantize_onnx_dynamic
from lit_opt.functional.quantize import pack_int4
from lit_opt.inference import DynamicBatcher
from lit_opt.nn.quantized import QuantizedEmbedding, QuantizedLinear
from lit_opt.pruning import PruningConfig, prepare_pruning, update_masks
from lit_opt.quantization import QuantizationConfig, prepare_quantization
from lit_opt.vocabulary import prune_vocabulary
from tests.helpers.models import BERT_VOCAB, TinyMLP, tiny_bert

STATIC = Path(__file__).parents[1] / "fixtures" / "artifact_v1"  # heads/rows removed, static int8, int4 vocab


def _dynamic_student():
    """tiny BERT: half its heads and FFN rows pruned, int8 QAT (dynamic activations), int4 pruned-vocabulary embeddings."""
    model = tiny_bert()
    prune_vocabulary(model, list(range(0, 80)), unk_token_id=1)
    for structure, targets in (("heads", ["*.attention.self"]), ("rows", ["*.intermediate.dense"])):
        config = PruningConfig(0.5, structure=structure, scope="local", targets=targets)
        update_masks(prepare_pruning(model, config), config, 0.5, step=0)
    prepare_quantization(
        model, QuantizationConfig(weight_bits=8, activations="dynamic", targets=["bert.encoder.*"])
    )
    embeddings = QuantizationConfig(
        weight_bits=4, granularity="per_group", group_size=16, targets=["*word_embeddings"]
    )
    prepare_quantization(model, embeddings, owner="embeddings")
    return model.eval()


@pytest.fixture(scope="module")
def dynamic_artifact(tmp_path_factory):
    return lit_opt.export(_dynamic_student(), tmp_path_factory.mktemp("dyn") / "artifact")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, dynamic_artifact):
    root = tmp_path_factory.mktemp("onnx")
    return {
        "static": lit_opt.export_onnx(STATIC, root / "static"),
        "dynamic": lit_opt.export_onnx(dynamic_artifact, root / "dynamic"),
    }


def _inputs(batch=5, length=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, BERT_VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, length // 3 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _source(kind, dynamic_artifact):
    return STATIC if kind == "static" else dynamic_artifact


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize(("batch", "length"), [(1, 5), (5, 12), (3, 30)])
def test_onnx_outputs_equal_the_loaded_reference_model(exported, dynamic_artifact, kind, batch, length):
    onnx_model = lit_opt.load_onnx(exported[kind], threads=1)
    reference = lit_opt.load(_source(kind, dynamic_artifact), kernel="reference")
    inputs = _inputs(batch, length)
    got = onnx_model(**inputs).logits
    with torch.inference_mode():
        expected = reference(**inputs).logits
    assert got.shape == expected.shape == (batch, 2)
    # static ranges and per-row dynamic ones: the same integer codes as the reference kernel, so equal up to
    # float summation order
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (
        json.loads((exported[kind] / ONNX_MANIFEST).read_text())["check"]["max_abs_difference"] <= TOLERANCE
    )


def test_every_int8_initializer_is_the_artifacts_trained_codes(exported, dynamic_artifact):
    for kind, path in exported.items():
        graph = onnx.load(str(path / ONNX_FILE)).graph
        named = json.loads((path / ONNX_MANIFEST).read_text())["int8_initializers"]
        reference = lit_opt.load(_source(kind, dynamic_artifact), kernel="reference")
        integer = {
            i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
            for i in graph.initializer
            if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(i.dims) == 2
        }
        quantized = {
            name: m
            for name, m in reference.named_modules()
            if isinstance(m, (QuantizedLinear, QuantizedEmbedding))
        }
        assert set(integer) == set(named) and len(named) == len(
            quantized
        )  # nothing re-quantized, nothing left out
        for initializer, key in named.items():
            module = quantized[key.removesuffix(".weight")]
            if isinstance(module, QuantizedLinear):
                expected = module.codes.t()  # MatMulInteger's B: (in, out)
            else:  # int4 codes kept packed two per byte, row by row
                expected = pack_int4(module.codes).reshape(module.codes.shape[0], -1)
            assert torch.equal(integer[initializer], expected), initializer


def test_pruned_structure_is_in_the_graph(exported):
    graph = onnx.load(str(exported["dynamic"] / ONNX_FILE)).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    prefix = "bert.encoder.layer.0"
    assert shapes[f"{prefix}.attention.self.query.codes_t"] == [32, 16]  # one head of two
    assert shapes[f"{prefix}.intermediate.dense.codes_t"] == [32, 32]  # half the FFN
    assert shapes["bert.embeddings.word_embeddings.codes"] == [
        80,
        16,
    ]  # 80 kept tokens (UNK among them), int4 packed
    for kind in ("static", "dynamic"):
        ops = {n.op_type for n in onnx.load(str(exported[kind] / ONNX_FILE)).graph.node}
        assert {"QuantizeLinear", "MatMulIntegerToFloat"} <= ops and "DynamicQuantizeLinear" not in ops


def test_per_row_activations_make_each_row_independent_of_its_batch(exported):
    model = lit_opt.load_onnx(exported["dynamic"], threads=1)
    inputs = _inputs(batch=3)
    louder = dict(inputs, input_ids=inputs["input_ids"].clone())
    louder["input_ids"][1:] = torch.arange(1, 13).repeat(2, 1)  # other rows, other activation ranges
    alone = model(**{k: v[:1] for k, v in inputs.items()}).logits
    torch.testing.assert_close(model(**inputs).logits[:1], alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(model(**louder).logits[:1], alone, atol=1e-6, rtol=0)


def test_per_tensor_activations_are_onnx_runtimes_fused_dynamic_quantization(tmp_path, dynamic_artifact):
    path = lit_opt.export_onnx(dynamic_artifact, tmp_path / "per_tensor", dynamic_activations="per_tensor")
    ops = {n.op_type for n in onnx.load(str(path / ONNX_FILE)).graph.node}
    assert "DynamicQuantizeMatMul" in ops or {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    inputs = _inputs()
    with torch.inference_mode():
        expected = lit_opt.load(dynamic_artifact, kernel="reference")(**inputs).logits
    # ONNX Runtime rounds activations to uint8 with one range for the whole batch, the reference kernel per row
    torch.testing.assert_close(lit_opt.load_onnx(path)(**inputs).logits, expected, atol=0.02, rtol=0)
    assert json.loads((path / ONNX_MANIFEST).read_text())["dynamic_activations"] == "per_tensor"


def test_a_trained_model_exports_directly_and_dequantized_embeddings_are_bigger(tmp_path, exported):
    path = lit_opt.export_onnx(_dynamic_student(), tmp_path / "direct", int4_embeddings="dequantize")
    inputs = _inputs()
    gathered = lit_opt.load_onnx(exported["dynamic"])(**inputs).logits
    torch.testing.assert_close(lit_opt.load_onnx(path)(**inputs).logits, gathered, atol=1e-5, rtol=0)
    assert (path / ONNX_FILE).stat().st_size > (exported["dynamic"] / ONNX_FILE).stat().st_size


def test_the_wrapper_serves_a_dynamic_batcher(exported):
    model = lit_opt.load_onnx(exported["static"], threads=1)
    assert model.config.vocab_size == BERT_VOCAB
    expected = model(input_ids=torch.tensor([[5, 6, 7]])).logits[0]
    with DynamicBatcher(model, max_wait_ms=1) as batcher:
        out = batcher.submit({"input_ids": [5, 6, 7]}).result(timeout=30)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=0)


def test_ort_quantize_dynamic_peer_runs(tmp_path, exported, caplog):
    caplog.set_level(logging.INFO)
    path = quantize_onnx_dynamic(exported["static"], tmp_path / "int8")
    assert lit_opt.load_onnx(path)(**_inputs()).logits.shape == (5, 2)
    assert "Please consider" not in caplog.text  # ORT's pre-processing advice: the graph is already optimized


def test_a_float_model_exports_without_the_no_compression_advice(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    lit_opt.export_onnx(tiny_bert(), tmp_path / "teacher")
    assert "carries no quantizer" not in caplog.text
    lit_opt.export(tiny_bert(), tmp_path / "artifact")  # export() itself still says so
    assert "carries no quantizer" in caplog.text


# -- bad input ------------------------------------------------------------------------------------


def test_missing_or_foreign_source_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"source='.*nowhere' is not a lit_opt artifact"):
        lit_opt.export_onnx(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match=r"source=42 is not accepted; expected a trained model"):
        lit_opt.export_onnx(42, tmp_path / "out")
    with pytest.raises(ValueError, match="int4_embeddings='packed' is not one of"):
        lit_opt.export_onnx(STATIC, tmp_path / "out", int4_embeddings="packed")
    with pytest.raises(
        ValueError, match=r"dynamic_activations='per_token' is not one of \('per_row', 'per_tensor'\)"
    ):
        lit_opt.export_onnx(STATIC, tmp_path / "out", dynamic_activations="per_token")


def test_a_model_without_token_inputs_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="is not a Hugging Face token model; export_onnx writes graphs"):
        lit_opt.export_onnx(TinyMLP(), tmp_path / "out")


def test_a_layer_the_integer_operators_cannot_express_is_named(tmp_path):
    model = tiny_bert()
    prepare_quantization(
        model, QuantizationConfig(weight_bits=8, granularity="per_group", group_size=16, targets=["*.query"])
    )
    with pytest.raises(
        ValueError, match=r"cannot express layer 'bert.encoder.layer.0.attention.self.query': per_group"
    ):
        lit_opt.export_onnx(model.eval(), tmp_path / "out")


def test_missing_tampered_or_foreign_graphs_are_rejected(tmp_path, exported):
    import shutil

    copy = Path(shutil.copytree(exported["static"], tmp_path / "copy"))
    with pytest.raises(ValueError, match="does not exist"):
        lit_opt.load_onnx(tmp_path / "nowhere")
    graph = copy / ONNX_FILE
    graph.write_bytes(graph.read_bytes()[:-10])
    with pytest.raises(ValueError, match="does not match the size and SHA-256 recorded"):
        lit_opt.load_onnx(copy)
    graph.unlink()
    with pytest.raises(ValueError, match=r"model.onnx is missing"):
        lit_opt.load_onnx(copy)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copyfile(exported["static"] / ONNX_FILE, foreign / ONNX_FILE)
    with pytest.raises(
        ValueError, match="has no lit_opt_onnx.json: its model.onnx is not an ONNX export of lit_opt"
    ):
        lit_opt.load_onnx(foreign / ONNX_FILE)
    with pytest.raises(ValueError, match="threads=0 is not accepted"):
        lit_opt.load_onnx(exported["static"], threads=0)


def test_mismatched_input_names_are_rejected(exported):
    model = lit_opt.load_onnx(exported["static"])
    with pytest.raises(ValueError, match=r"unknown \['pixel_values'\]; it takes \['input_ids'"):
        model(input_ids=torch.tensor([[1, 2]]), pixel_values=torch.zeros(1))
    with pytest.raises(ValueError, match="input_ids is missing"):
        model(attention_mask=torch.tensor([[1, 1]]))


def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'lit_opt\[onnx\]'"):
        lit_opt.export_onnx(STATIC, tmp_path / "out")
    with pytest.raises(ImportError, match=r"pip install 'lit_opt\[onnx\]'"):
        lit_opt.load_onnx(tmp_path)


def test_a_quantized_convolution_is_named(tmp_path):
    from transformers import ConvBertConfig, ConvBertForSequenceClassification

    torch.manual_seed(0)
    config = ConvBertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        embedding_size=32,
        max_position_embeddings=64,
    )
    model = ConvBertForSequenceClassification(config).eval()
    prepare_quantization(
        model, QuantizationConfig(weight_bits=8, activations="dynamic", targets=["*.depthwise"])
    )
    with pytest.raises(
        ValueError, match=r"cannot express layer '.*key_conv_attn_layer.depthwise': a Conv1d with quantized"
    ):
        lit_opt.export_onnx(model, tmp_path / "out")


@pytest.mark.parametrize(("first_token_only", "fused"), [(True, 1), (False, 2)])
def test_an_unpruned_model_gets_ort_attention_fusion(tmp_path, first_token_only, fused):
    path = lit_opt.export_onnx(tiny_bert(), tmp_path / "plain", first_token_only=first_token_only)
    # one per layer; the last layer computed for the first token alone has its own, smaller pattern
    assert [n.op_type for n in onnx.load(str(path / ONNX_FILE)).graph.node].count("Attention") == fused
    inputs = _inputs()
    with torch.inference_mode():
        expected = tiny_bert()(**inputs).logits
    torch.testing.assert_close(lit_opt.load_onnx(path)(**inputs).logits, expected, atol=1e-5, rtol=0)


def test_layer_norms_are_primitive_operators_unless_asked_otherwise(tmp_path, exported, dynamic_artifact):
    fused = {"LayerNormalization", "SkipLayerNormalization"}
    graph = onnx.load(str(exported["dynamic"] / ONNX_FILE)).graph
    assert not {n.op_type for n in graph.node} & fused and "ReduceMean" in {n.op_type for n in graph.node}
    manifest = json.loads((exported["dynamic"] / ONNX_MANIFEST).read_text())
    assert manifest["layer_norm"].startswith("decomposed (")
    kept = lit_opt.export_onnx(dynamic_artifact, tmp_path / "kept", decompose_layer_norm=False)
    assert {n.op_type for n in onnx.load(str(kept / ONNX_FILE)).graph.node} & fused
    assert json.loads((kept / ONNX_MANIFEST).read_text())["layer_norm"] == "onnxruntime kernels"
    inputs = _inputs()
    torch.testing.assert_close(
        lit_opt.load_onnx(kept)(**inputs).logits,
        lit_opt.load_onnx(exported["dynamic"])(**inputs).logits,
        atol=0.02,
        rtol=0,
    )
