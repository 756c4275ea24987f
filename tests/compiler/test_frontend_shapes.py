"""Shapes the frontend learns by running the graph are only those that do not depend on the input's
values; zero-size dimensions are named as such (issue 10)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler import compile_model
from compiler.frontend import load_model, to_graph
from helpers import make_model, reference, run_npu
from npu.errors import CompileError


def range_model():
    """y = relu(float(range(0, int(|max(x)| + 3)))): y's length depends on x's values."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
             helper.make_node("Abs", ["mx"], ["ab"]),
             helper.make_node("Add", ["ab", "three"], ["n"]),
             helper.make_node("Cast", ["n"], ["ni"], to=TensorProto.INT64),
             helper.make_node("Range", ["zero", "ni", "one"], ["r"]),
             helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
             helper.make_node("Relu", ["rf"], ["y"], name="relu")]
    return make_model(nodes, {"x": [1, 4]}, {"y": None},
                      {"three": np.float32(3.0), "zero": np.int64(0), "one": np.int64(1)})


def test_a_value_dependent_shape_is_not_taken_from_one_run_on_zeros():
    """Zeros gave Range 3 elements, recorded as static: the NPU laid out 3 and the run crashed on 8."""
    model = range_model()
    g = to_graph(load_model(model))
    assert g.shape("rf") is None and g.shape("y") is None
    feeds = {"x": np.array([[1, 5, 2, 3]], np.float32)}
    (got, _), ex = run_npu(model, feeds, "tiny")
    np.testing.assert_array_equal(got["y"], reference(model, feeds)["y"])
    assert got["y"].shape == (8,)


def test_shapes_that_do_not_depend_on_values_are_still_learned():
    """An ai.onnx.ml operator stops shape inference; the two probe runs agree on its output's shape."""
    node = helper.make_node("Normalizer", ["x"], ["n"], norm="L2", domain="ai.onnx.ml")
    graph = helper.make_graph([node, helper.make_node("Relu", ["n"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    g = to_graph(load_model(model))
    assert g.shape("n") == (2, 6)


def test_zero_size_input_dimension_is_named_not_called_dynamic():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 0, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 0, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(CompileError, match="zero-size dimension") as exc:
        compile_model(m, config="tiny")
    assert "dynamic" not in str(exc.value) and "x=1,1,4" in str(exc.value)
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    compile_model(m2, config="tiny", input_shapes={"x": (1, 2, 4)})  # a positive size fixes it
