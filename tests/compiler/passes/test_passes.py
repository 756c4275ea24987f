"""Each graph pass on a small graph."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler.frontend import load_model, to_graph
from compiler.passes.canonicalize import canonicalize_linear
from compiler.passes.fold_batchnorm import fold_batchnorm
from compiler.passes.fold_constants import fold_constants
from compiler.passes.fold_qdq import fold_qdq
from compiler.passes.fuse_epilogues import fuse_epilogues
from compiler.passes.layout import plan_padding
from compiler.passes.partition import partition, segments
from compiler.passes.simplify import remove_identities
from helpers import assert_matches, make_model

RNG = np.random.default_rng(0)


def graph(nodes, inputs, outputs, inits=None):
    return to_graph(load_model(make_model(nodes, inputs, outputs, inits)))


def test_fold_constants_evaluates_constant_subgraphs_and_shape():
    nodes = [helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Mul", ["r", "c"], ["y"])]
    g = graph(nodes, {"x": [1, 4]}, {"y": [1, 4]}, {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)})
    assert fold_constants(g) == 2
    assert np.array_equal(g.value("c"), np.full(4, 2.0)) and list(g.value("s")) == [1, 4]
    assert sorted(n.op for n in g.nodes.values()) == ["Mul", "Reshape"]


def test_remove_identities():
    nodes = [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Dropout", ["i"], ["d"]),
             helper.make_node("Relu", ["d"], ["y"])]
    g = graph(nodes, {"x": [1, 4]}, {"y": [1, 4]})
    assert remove_identities(g) == 2
    assert [(n.op, n.inputs) for n in g.nodes.values()] == [("Relu", ["x"])]


def test_fold_qdq_drops_activation_pairs():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s"], ["d"]), helper.make_node("Relu", ["d"], ["y"])]
    g = graph(nodes, {"x": [1, 4]}, {"y": [1, 4]}, {"s": np.array(0.1, np.float32)})
    assert fold_qdq(g) == 1
    assert [(n.op, n.inputs) for n in g.nodes.values()] == [("Relu", ["x"])]


def test_canonicalize_matmul_and_gemm():
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Gemm", ["h", "W2", "C"], ["y"], alpha=2.0, beta=0.5)]
    g = graph(nodes, {"x": [1, 4]}, {"y": [1, 2]},
              {"W": w, "W2": np.ones((3, 2), np.float32), "C": np.ones(2, np.float32)})
    assert canonicalize_linear(g) == 2
    mm, gemm = g.nodes.values()
    assert mm.op == "Gemm" and np.allclose(g.value(mm.inputs[1]), w.T)
    assert np.allclose(g.value(gemm.inputs[1]), 2.0) and np.allclose(g.value(gemm.inputs[2]), 0.5)


def test_fold_batchnorm_into_conv():
    c = 4
    inits = {"W": RNG.standard_normal((c, 2, 3, 3)).astype(np.float32), "s": np.full(c, 2.0, np.float32),
             "b": np.ones(c, np.float32), "m": np.zeros(c, np.float32), "v": np.full(c, 1.0 - 1e-5, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    g = graph(nodes, {"x": [1, 2, 5, 5]}, {"y": [1, c, 3, 3]}, inits)
    assert fold_batchnorm(g) == 1
    (conv,) = g.nodes.values()
    assert conv.outputs == ["y"] and np.allclose(g.value(conv.inputs[1]), inits["W"] * 2, atol=1e-5)
    assert np.allclose(g.value(conv.inputs[2]), 1.0)


def test_batchnorm_after_concat_is_not_folded():
    c = 2
    bn = {k: np.ones(2 * c, np.float32) for k in ("s", "b", "m", "v")}
    nodes = [helper.make_node("Concat", ["a", "x"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "s", "b", "m", "v"], ["y"])]
    g = graph(nodes, {"a": [1, c, 2, 2], "x": [1, c, 2, 2]}, {"y": [1, 2 * c, 2, 2]}, bn)
    assert fold_batchnorm(g) == 0


def test_fuse_epilogues_bias_residual_relu():
    c = 4
    inits = {"W": RNG.standard_normal((c, c, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "W"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    g = graph(nodes, {"x": [1, c, 3, 3]}, {"y": [1, c, 3, 3]}, inits)
    partition(g)
    fuse_epilogues(g)
    ops = {n.op: n for n in g.nodes.values()}
    assert set(ops) == {"Eltwise", "Conv"}
    assert [(e.kind, e.tensor) for e in ops["Conv"].epilogue] == [("add", "r"), ("relu", None)]
    assert ops["Conv"].outputs == ["y"]


def test_partition_and_segments_keep_runs_together():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Softmax", ["a"], ["b"]),
             helper.make_node("Sigmoid", ["x"], ["c"]), helper.make_node("Add", ["b", "c"], ["y"])]
    g = graph(nodes, {"x": [1, 4]}, {"y": [1, 4]})
    partition(g)
    assert {n.op: n.target for n in g.nodes.values()} == {"Relu": "npu", "Softmax": "host", "Sigmoid": "npu",
                                                          "Add": "npu"}
    segs = segments(g)
    assert [t for t, _ in segs] == ["npu", "host", "npu"]
    assert [n.op for n in segs[0][1]] == ["Relu", "Sigmoid"]


def test_plan_padding_neg_inf_for_maxpool():
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    g = graph(nodes, {"x": [1, 2, 6, 6]}, {"y": None})
    partition(g)
    req = plan_padding(g)["x"]
    assert req.pad == (1, 1, 1, 1) and req.fill == float("-inf")


def test_plan_padding_takes_the_largest_window_and_zeros_when_readers_disagree():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
             helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "p"], ["y"])]
    g = graph(nodes, {"x": [1, 2, 6, 6]}, {"y": None}, {"W": np.ones((2, 2, 5, 5), np.float32)})
    partition(g)
    req = plan_padding(g)["x"]
    assert req.pad == (2, 2, 2, 2) and req.fill == 0.0
    # end to end: the MaxPool moves to the host, the results still match
    out = assert_matches(make_model(nodes, {"x": [1, 2, 6, 6]}, {"y": None},
                                    {"W": np.ones((2, 2, 5, 5), np.float32)}), "tiny", npu_only=False)
    assert {L["op"]: L["target"] for L in out["executor"].manifest["compiler"]["report"]["layers"]}["MaxPool"] == "host"


def nonfinite_model():
    """A Conv with a NaN weight, a Gemm with an inf bias, and a clean Conv between them."""
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w1[1, 0, 1, 1] = np.nan
    bias = np.zeros(5, np.float32)
    bias[2] = np.inf
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="nan_conv"),
             helper.make_node("Conv", ["x", "W2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="clean_conv"),
             helper.make_node("Flatten", ["b"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "B"], ["y"], transB=1, name="inf_gemm")]
    inits = {"W1": w1, "W2": rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
             "G": (rng.standard_normal((5, 2 * 4 * 4)) / 6).astype(np.float32), "B": bias}
    return make_model(nodes, {"x": [1, 3, 4, 4]}, {"a": None, "y": None}, inits)


def test_nan_or_inf_weights_run_on_the_host():
    """The NPU's formats would quantize NaN and inf to other values: such nodes run on the host, with the
    reason in the report, and the outputs are onnxruntime's, NaN and inf included."""
    from helpers import random_inputs, reference, run_npu

    model = nonfinite_model()
    feeds = random_inputs(model)
    (got, _), ex = run_npu(model, feeds)
    ref = reference(model, feeds)
    for name in ("a", "y"):
        assert np.isnan(ref[name]).any() if name == "a" else np.isinf(ref[name]).any()
        np.testing.assert_allclose(got[name], ref[name], rtol=0.05, atol=0.05)  # NaN and inf where onnxruntime has them
    layers = {L["name"]: L for L in ex.manifest["compiler"]["report"]["layers"]}
    assert (layers["nan_conv"]["target"], layers["nan_conv"]["reason"]) == ("host", "constant 'W1' holds NaN or inf")
    assert (layers["inf_gemm"]["target"], layers["inf_gemm"]["reason"]) == ("host", "constant 'inf_gemm.bias' holds NaN or inf")
    assert layers["clean_conv"]["target"] == "npu"


def test_nan_or_inf_weights_without_host_fallback_name_the_node():
    from compiler import compile_model
    from npu.errors import CompileError

    with pytest.raises(CompileError, match="node 'nan_conv' \\(Conv\\): cannot run on the NPU: constant 'W1' holds NaN"):
        compile_model(nonfinite_model(), config="tiny", host_fallback=False)


def test_a_constant_beyond_fp16_sends_its_node_to_the_host():
    """An elementwise constant of 1e5 would be inf in the MFUs' fp16: the node runs on the host, exactly."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "k"], ["y"])]
    model = make_model(nodes, {"x": [1, 16]}, {"y": [1, 16]}, {"k": np.full(16, 1e5, np.float32)})
    out = assert_matches(model, npu_only=False)
    layers = {L["op"]: L for L in out["executor"].manifest["compiler"]["report"]["layers"]}
    assert layers["Mul"]["target"] == "host" and "fp16" in layers["Mul"]["reason"]
