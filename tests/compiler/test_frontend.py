"""Loading ONNX: errors that say how to fix them, input shapes, external data, Q/DQ folding."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from compiler import compile_model
from compiler.frontend import load_model, parse_input_shapes, to_graph
from helpers import assert_matches, make_model
from npu.errors import CompileError


def gemm_model(batch="N"):
    g = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 8])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, 4])],
                          initializer=[onnx.numpy_helper.from_array(np.ones((4, 8), np.float32), "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(CompileError, match="not a valid ONNX model"):
        compile_model(p, config="tiny")


def test_missing_file(tmp_path):
    with pytest.raises(CompileError, match="no such file"):
        load_model(tmp_path / "nope.onnx")


def test_dynamic_shape_needs_input_shape():
    with pytest.raises(CompileError, match=r"dynamic shape.*\n  hint: fix it with --input-shape x=1,8"):
        compile_model(gemm_model(), config="tiny")


def test_input_shape_fixes_dynamic_dims():
    model = load_model(gemm_model(), ["x=2,8"])
    g = to_graph(model)
    assert g.shape("x") == (2, 8) and g.shape("y") == (2, 4)


@pytest.mark.parametrize("spec,match", [("x=", "not NAME="), ("nope=1,8", "not a model input"),
                                        ("x=1,2,3", "dimensions")])
def test_bad_input_shape(spec, match):
    with pytest.raises(CompileError, match=match):
        load_model(gemm_model(), [spec])


def test_parse_input_shapes():
    assert parse_input_shapes(["a=1,3,224,224", "b=4x5"]) == {"a": (1, 3, 224, 224), "b": (4, 5)}


def test_old_opset_rejected():
    m = gemm_model(1)
    m.opset_import[0].version = 7
    with pytest.raises(CompileError, match="opset 7"):
        load_model(m)


def test_external_data(tmp_path):
    m = make_model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"x": [1, 64]}, {"y": [1, 64]},
                   {"W": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)})
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.data",
              size_threshold=0)
    assert (tmp_path / "m.data").exists()
    assert_matches(onnx.load(str(path)), "small")  # loaded in memory
    data = compile_model(path, config="small")  # from the path, data beside it
    assert data[:2] == b"PK"


def test_qdq_pairs_fold_to_float():
    rng = np.random.default_rng(0)
    inits = {"W": rng.standard_normal((6, 8)).astype(np.float32), "s": np.array(0.05, np.float32),
             "z": np.array(0, np.int8), "Wq": rng.integers(-100, 100, (6, 8)).astype(np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["Wq", "s", "z"], ["Wd"]),
             helper.make_node("Gemm", ["xd", "Wd"], ["y"], transB=1)]
    model = make_model(nodes, {"x": [1, 8]}, {"y": None}, inits)
    # the NPU computes in float; compare against the model without the activation fake-quantization
    out = assert_matches(model, "tiny", cos_min=0.99, rel_max=0.15)
    assert [L["op"] for L in out["executor"].manifest["compiler"]["report"]["layers"]] == ["Gemm"]


def test_a_tensor_larger_than_any_machine_is_a_named_error_not_out_of_memory():
    from onnx import TensorProto

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10 ** 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10 ** 12])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(CompileError, match=r"tensor 'x' of shape \[1, 1000000000000\] has more than"):
        compile_model(model, config="tiny")
