"""Small constants shared across an exported graph: ORT then quantizes a shared input once."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import lit_opt
from lit_opt.export.onnx import ONNX_FILE
from lit_opt.export.onnx_initializers import share_small_initializers
from tests.export.test_onnx_attention import _quantized


def _model(initializers, nodes, outputs=("y_a", "y_b")):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2]) for o in outputs]
    return helper.make_model(helper.make_graph(nodes, "g", [x], outs, initializers))


def test_equal_small_constants_become_one_and_others_stay():
    constants = {"a": 1.0, "b": 1.0, "c": 2.0}
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in constants.items()]
    inits.append(numpy_helper.from_array(np.array(1, np.int64), "d"))  # same value, other type
    weight = np.ones(17, np.float32)  # over SMALL: weights are not compared
    inits += [numpy_helper.from_array(weight, "w1"), numpy_helper.from_array(weight, "w2")]
    nodes = [helper.make_node("Mul", ["x", k], [f"y_{k}"]) for k in ("a", "b", "c")]
    model = _model(inits, nodes, outputs=("y_a", "y_b", "y_c"))
    assert share_small_initializers(model) == 1
    assert [n.input[1] for n in model.graph.node] == ["a", "a", "c"]
    assert [t.name for t in model.graph.initializer] == ["a", "c", "d", "w1", "w2"]
    onnx.checker.check_model(model)


def test_graphs_with_subgraphs_are_left_alone():
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), k) for k in ("a", "b")]
    branch = helper.make_graph([helper.make_node("Identity", ["b"], ["z"])], "branch", [], [
        helper.make_tensor_value_info("z", TensorProto.FLOAT, [])])  # fmt: skip
    cond = helper.make_node("If", ["c"], ["y_a"], then_branch=branch, else_branch=branch)
    model = _model(inits, [cond], outputs=("y_a",))
    assert share_small_initializers(model) == 0 and len(model.graph.initializer) == 2


def test_the_exported_graph_quantizes_each_input_once(tmp_path):
    path = lit_opt.export_onnx(_quantized(), tmp_path / "onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "session.onnx")
    ort.InferenceSession(str(path / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    quantized = [
        n.input[0]
        for n in onnx.load(str(tmp_path / "session.onnx")).graph.node
        if n.op_type == "QuantizeLinear"
    ]
    assert quantized and len(quantized) == len(set(quantized))  # query, key and value share their codes
