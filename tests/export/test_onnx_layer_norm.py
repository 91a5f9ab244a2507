"""Layer norms as primitive ONNX operators: the same outputs under ONNX Runtime, and what is left alone."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lit_opt.export.onnx_layer_norm import LAYER_NORM_FUSIONS, decompose_layer_norms

WIDTH = 16


def _model(nodes: list, outputs: list[str]) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {name: rng.normal(size=WIDTH).astype(np.float32) for name in ("gamma", "beta", "bias")}
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", "s", WIDTH]) for n in ("x", "skip")]
    results = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    graph = helper.make_graph(
        nodes, "g", inputs, results, [numpy_helper.from_array(v, k) for k, v in weights.items()]
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _run(model: onnx.ModelProto, disabled: tuple[str, ...] = ()) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    feed = {n: (rng.normal(size=(2, 5, WIDTH)) * 3 + 1).astype(np.float32) for n in ("x", "skip")}
    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled)
    )
    return session.run(None, feed)


def test_decomposed_layer_norms_give_onnx_runtimes_outputs() -> None:
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["plain"], epsilon=1e-5),
        helper.make_node("LayerNormalization", ["x", "gamma"], ["no_beta"], epsilon=1e-3),
        helper.make_node(
            "SkipLayerNormalization",
            ["x", "skip", "gamma", "beta", "bias"],
            ["skipped"],
            domain="com.microsoft",
            epsilon=1e-12,
        ),
    ]
    model = _model(nodes, ["plain", "no_beta", "skipped"])
    expected = _run(model)
    assert decompose_layer_norms(model) == 3
    assert not {n.op_type for n in model.graph.node} & {"LayerNormalization", "SkipLayerNormalization"}
    for got, want in zip(_run(model, LAYER_NORM_FUSIONS), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("node", "why"),
    [
        (
            helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y", "mean"], axis=-1),
            "its mean output is used",
        ),
        (helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], axis=1), "another axis"),
    ],
)
def test_nodes_the_rewrite_cannot_express_are_kept(node: onnx.NodeProto, why: str) -> None:
    model = _model([node], list(node.output))
    assert decompose_layer_norms(model) == 0, why
    assert [n.op_type for n in model.graph.node] == ["LayerNormalization"]
