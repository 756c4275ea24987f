"""MatMul of an activation of any rank by constant weights on the NPU (a Transformer's nn.Linear):
rows = the product of the leading dimensions, one batch of vectors through the same weights."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler import compile_report
from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(7)


def w(*shape, scale=None):
    return weights(RNG, *shape, scale=scale)


def npu_macs_share(model, config="tiny") -> float:
    layers = compile_report(model, config=config).to_dict()["layers"]
    total = sum(L["macs"] for L in layers)
    return sum(L["macs"] for L in layers if L["target"] == "npu") / total


@pytest.mark.parametrize("shape", [[1, 8, 16], [2, 5, 16], [1, 2, 3, 16]])
def test_matmul_of_a_rank_n_activation_runs_on_the_npu(shape):
    """[..., T, K] @ W[K, M] + b[M] (torch.onnx.export's Linear), the bias folded into the Gemm."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])]
    model = make_model(nodes, {"x": shape}, {"y": None}, {"W": w(24, 16).T.copy(), "B": w(24, scale=0.5)})
    out = assert_matches(model, "tiny", npu_only=False)
    layers = out["executor"].manifest["compiler"]["report"]["layers"]
    gemm = [L for L in layers if L["op"] == "Gemm"]
    assert len(gemm) == 1 and gemm[0]["target"] == "npu"
    assert not any(L["op"] in ("MatMul", "Add") for L in layers)   # the Add became the Gemm's bias
    assert npu_macs_share(model) == 1.0


def test_two_linear_layers_of_a_sequence_with_a_bias_broadcast_from_the_left():
    """Linear -> Relu -> Linear on [1, T, K]; the second bias is [1, 1, K] and comes first in its Add."""
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"]), helper.make_node("Add", ["a", "B1"], ["ab"]),
             helper.make_node("Relu", ["ab"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["m"]),
             helper.make_node("Add", ["B2", "m"], ["y"])]
    model = make_model(nodes, {"x": [1, 8, 16]}, {"y": None},
                       {"W1": w(32, 16).T.copy(), "B1": w(32, scale=0.1), "W2": w(16, 32).T.copy(),
                        "B2": w(1, 1, 16, scale=0.1)})
    out = assert_matches(model, "tiny", npu_only=False)
    report = out["executor"].manifest["compiler"]["report"]
    assert [L["target"] for L in report["layers"] if L["op"] == "Gemm"] == ["npu", "npu"]
    assert npu_macs_share(model) == 1.0


def test_matmul_whose_bias_is_not_per_column_keeps_the_add():
    """An Add of a [T, M] constant is not a bias of the Gemm: it stays an Add (and the result is right)."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "C"], ["y"])]
    model = make_model(nodes, {"x": [1, 4, 16]}, {"y": None}, {"W": w(8, 16).T.copy(), "C": w(4, 8, scale=0.5)})
    out = assert_matches(model, "tiny", npu_only=False)
    ops = [L["op"] for L in out["executor"].manifest["compiler"]["report"]["layers"]]
    assert "Gemm" in ops and "MatMul" not in ops


def test_product_of_two_activations_stays_on_the_host():
    """Attention's Q @ K^T multiplies two activations: no constant weights, so the host runs it."""
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["q", "kt"], ["y"])]
    model = make_model(nodes, {"q": [1, 4, 8], "k": [1, 4, 8]}, {"y": None})
    out = assert_matches(model, "tiny", npu_only=False)
    layers = out["executor"].manifest["compiler"]["report"]["layers"]
    assert [L["target"] for L in layers if L["op"] == "MatMul"] == ["host"]


def test_gelu_between_two_linear_layers_computes_on_rows():
    """Linear -> GELU (erf form, as exported) -> Linear on [1, T, K]: the second Gemm's flatten moves in
    front of GELU, so the NPU's multiplications write the rows the Gemm reads (it went to the host with
    'batched Gemm input is not one pixel per row')."""
    c = {"sqrt2": np.float32(np.sqrt(2.0)), "one": np.float32(1.0), "half": np.float32(0.5)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"]), helper.make_node("Add", ["a", "B1"], ["h"]),
             helper.make_node("Div", ["h", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["h", "e1"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["gelu"]),
             helper.make_node("MatMul", ["gelu", "W2"], ["b"]), helper.make_node("Add", ["b", "B2"], ["y"])]
    model = make_model(nodes, {"x": [1, 6, 16]}, {"y": None},
                       {"W1": w(32, 16).T.copy(), "B1": w(32, scale=0.1), "W2": w(16, 32).T.copy(),
                        "B2": w(16, scale=0.1), **c})
    out = assert_matches(model, "tiny", npu_only=False)
    layers = out["executor"].manifest["compiler"]["report"]["layers"]
    assert [L["target"] for L in layers if L["op"] == "Gemm"] == ["npu", "npu"]
    # the GELU idiom is one activation-unit instruction (compiler/passes/activations.py)
    assert [L["op"] for L in layers if L["target"] == "host"] == ["Reshape"]  # the graph input's flatten
    assert npu_macs_share(model) == 1.0


def test_scaling_between_host_operators_stays_on_the_host():
    """Attention: Q.K^T (host) -> Div by sqrt(d) -> Softmax (host): the Div alone on the NPU would cost a
    round trip and a segment, so it runs on the host; the projections stay on the NPU."""
    nodes = [helper.make_node("MatMul", ["x", "Wq"], ["q"]), helper.make_node("MatMul", ["x", "Wk"], ["k"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Div", ["s", "scale"], ["sd"], name="scale"),
             helper.make_node("Softmax", ["sd"], ["y"], axis=-1)]
    model = make_model(nodes, {"x": [1, 4, 8]}, {"y": None},
                       {"Wq": w(8, 8).T.copy(), "Wk": w(8, 8).T.copy(), "scale": np.float32(np.sqrt(8.0))})
    out = assert_matches(model, "tiny", npu_only=False)
    layers = {L["name"]: L for L in out["executor"].manifest["compiler"]["report"]["layers"]}
    assert layers["scale"]["target"] == "host" and "round trip" in layers["scale"]["reason"]
    assert [L["target"] for L in layers.values() if L["op"] == "Gemm"] == ["npu", "npu"]
