"""Loop, Scan and If run on the host; their MACs are their bodies' (times the trip count)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from compiler.frontend import load_model, to_graph
from compiler.ops import node_macs
from helpers import assert_matches, make_model

RNG = np.random.default_rng(0)


def report(out) -> dict:
    return out["executor"].manifest["compiler"]["report"]


def test_loop_counts_its_body_times_its_trip_count():
    """h = Relu(h @ W) five times, W an initializer of the outer graph the body reads, then a Gemm on the NPU."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "W"], ["m"]), helper.make_node("Relu", ["m"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Loop", ["M", "", "x"], ["h"], body=body, name="loop"),
             helper.make_node("Gemm", ["h", "W2"], ["y"], name="fc")]
    inits = {"M": np.array(5, np.int64), "W": (RNG.standard_normal((16, 16)) / 4).astype(np.float32),
             "W2": RNG.standard_normal((16, 10)).astype(np.float32)}
    out = assert_matches(make_model(nodes, {"x": [1, 16]}, {"y": None}, inits), "tiny", npu_only=False)
    rep = report(out)
    assert rep["macs_host"] == 5 * 16 * 16 and rep["macs_npu"] == 16 * 10
    assert [L["target"] for L in rep["layers"]] == ["host", "npu"]
    assert rep["npu_mac_share"] == pytest.approx(160 / (160 + 1280))


def test_scan_counts_its_body_per_scanned_element():
    """h_t = h_{t-1} + x_t @ W over six rows of x (the scan axis 1 of a [8, 6] input)."""
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x_t", "axis0"], ["row"]), helper.make_node("MatMul", ["row", "W"], ["m"]),
         helper.make_node("Add", ["h_in", "m"], ["h_out"]), helper.make_node("Identity", ["h_out"], ["y_t"])],
        "body", [helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 8]),
                 helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [8])],
        [helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [1, 8])])
    nodes = [helper.make_node("Scan", ["h0", "xs"], ["h", "ys"], body=body, num_scan_inputs=1,
                              scan_input_axes=[1], name="scan")]
    inits = {"W": (RNG.standard_normal((8, 8)) / 3).astype(np.float32), "axis0": np.array([0], np.int64)}
    out = assert_matches(make_model(nodes, {"h0": [1, 8], "xs": [8, 6]}, {"h": None, "ys": None}, inits),
                         "tiny", npu_only=False)
    assert report(out)["macs_host"] == 6 * 8 * 8 and report(out)["npu_mac_share"] == 0.0


def test_if_counts_its_larger_branch():
    branch = lambda k: helper.make_graph(  # noqa: E731
        [helper.make_node("MatMul", ["x", f"W{k}"], [f"y{k}"])], f"b{k}", [],
        [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None)])
    m = make_model([helper.make_node("If", ["c"], ["y"], then_branch=branch(1), else_branch=branch(2))],
                   {"x": [2, 3]}, {"y": [2, None]}, {"c": np.array(True), "W1": np.ones((3, 4), np.float32),
                                                    "W2": np.ones((3, 7), np.float32)})
    g = to_graph(load_model(m))
    assert node_macs(g, next(iter(g.nodes.values()))) == 2 * 3 * 7
