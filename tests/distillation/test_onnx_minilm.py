"""paraphrase-MiniLM-L3-v2 converted from ONNX: hidden states equal onnxruntime's; cached; usable as a student."""

import numpy as np
import pytest
import torch

from lit_opt.distillation.onnx_minilm import bert_from_onnx, convert_minilm_l3, paraphrase_minilm_l3_onnx
from lit_opt.distillation.students import minilm_l3, minilm_l6_dir

pytest.importorskip("onnxruntime")
SENTENCES = [
    "A quiet, moving film.",
    "The plot collapses under its own weight, and the jokes fall flat.",
    "Fine.",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert_minilm_l3(cache_dir=str(tmp_path_factory.mktemp("students")))


def test_converted_hidden_states_match_onnxruntime(converted):
    import onnxruntime
    from transformers import AutoTokenizer, BertModel

    tokens = AutoTokenizer.from_pretrained(minilm_l6_dir())(SENTENCES, padding=True, return_tensors="np")
    session = onnxruntime.InferenceSession(
        str(paraphrase_minilm_l3_onnx()), providers=["CPUExecutionProvider"]
    )
    rank3 = [o.name for o in session.get_outputs() if len(o.shape) == 3]  # (B, T, H): the token embeddings
    inputs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    (expected,) = session.run(rank3, inputs)
    model = BertModel.from_pretrained(str(converted)).eval()
    assert (model.config.num_hidden_layers, model.config.num_attention_heads) == (3, 12)
    assert (model.config.hidden_size, model.config.intermediate_size, model.config.vocab_size) == (
        384,
        1536,
        30522,
    )
    with torch.no_grad():
        got = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)  # (B, T, 384), padding included; ~1e-6 seen


def test_conversion_is_cached_and_builds_a_student(converted):
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert convert_minilm_l3(cache_dir=str(converted.parent)) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    student = minilm_l3(num_labels=3, cache_dir=str(converted.parent))
    assert student.config.num_labels == 3 and len(student.bert.encoder.layer) == 3
    _, state = bert_from_onnx(paraphrase_minilm_l3_onnx())
    assert torch.equal(
        student.bert.encoder.layer[2].output.dense.weight, state["encoder.layer.2.output.dense.weight"]
    )


def test_bad_paths(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    with pytest.raises(ValueError, match=r"cache_dir='' must be a non-empty path"):
        convert_minilm_l3(cache_dir="")
    with pytest.raises(ValueError, match=r"onnx_path='missing.onnx' is not a file"):
        convert_minilm_l3(cache_dir=str(tmp_path), onnx_path="missing.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(
        ValueError, match=r"is not a BERT encoder export: no initializer ends in 'embeddings.word"
    ):
        bert_from_onnx(tmp_path / "other.onnx")
