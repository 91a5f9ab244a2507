"""One initializer for each small constant of an ONNX graph, so ONNX Runtime merges the nodes that read it.

The exporter writes a constant (a quantizer's scale of 1, its uint8 zero point 128, a layer norm's
epsilon) once per node that uses it, each under its own name. ONNX Runtime's common-subexpression
elimination merges two nodes only when their inputs are the same names, so the query, key and value
projections of a layer, which read the same activations, each quantized them again. After
:func:`share_small_initializers` they read one set of constants and ORT computes the codes once.

Example::

    >>> import numpy as np, onnx
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> one = [numpy_helper.from_array(np.array(1.0, np.float32), name) for name in ("a", "b")]
    >>> nodes = [helper.make_node("Mul", ["x", name], [f"y_{name}"]) for name in ("a", "b")]
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    >>> outputs = [helper.make_tensor_value_info(f"y_{n}", TensorProto.FLOAT, [2]) for n in ("a", "b")]
    >>> model = helper.make_model(helper.make_graph(nodes, "g", [x], outputs, one))
    >>> share_small_initializers(model), [n.input[1] for n in model.graph.node]
    (1, ['a', 'a'])
"""

from __future__ import annotations

from typing import Any

#: Initializers of at most this many elements are compared by value (larger ones are weights, all distinct).
SMALL = 16


def share_small_initializers(model: Any) -> int:
    """Point every node of ``model`` (an ``onnx.ModelProto``, changed in place) that reads a small initializer
    at the first one with the same type, shape and values, and drop the copies; returns how many were dropped.
    Graphs with subgraphs (which may read an initializer by name) are left alone."""
    from onnx import AttributeProto, numpy_helper

    graph = model.graph
    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return 0
    inputs = {i.name for i in graph.input}
    first: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    renamed: dict[str, str] = {}
    for tensor in graph.initializer:
        if tensor.name in inputs:
            continue
        values = numpy_helper.to_array(tensor)
        if values.size > SMALL:
            continue
        key = (tensor.data_type, tuple(tensor.dims), values.tobytes())
        renamed[tensor.name] = first.setdefault(key, tensor.name)
    renamed = {old: new for old, new in renamed.items() if old != new}
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    outputs = {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name not in renamed or t.name in outputs]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(renamed)
