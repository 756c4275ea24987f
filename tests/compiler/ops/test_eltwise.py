"""Elementwise operators, BatchNormalization and their fusion into chains, against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(0)


def w(*shape, scale=None):
    return weights(RNG, *shape, scale=scale)


@pytest.mark.parametrize("op,kwargs", [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Sigmoid", {}), ("Tanh", {}),
])
def test_unary(op, kwargs):
    model = make_model([helper.make_node(op, ["x"], ["y"], **kwargs)], {"x": [1, 10, 3, 3]}, {"y": None})
    assert_matches(model, "tiny", rel_max=0.06)


def test_neg_fuses_into_the_producers_chain():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Neg", ["c"], ["y"])]
    out = assert_matches(make_model(nodes, {"x": [1, 6, 4, 4]}, {"y": None}, {"W": w(8, 6, 3, 3)}), "tiny")
    assert [L["op"] for L in out["executor"].manifest["compiler"]["report"]["layers"]] == ["Conv"]
    assert_matches(make_model([helper.make_node("Neg", ["x"], ["y"])], {"x": [1, 6, 4, 4]}, {"y": None}), "tiny")


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-0.5, 0.5), (None, 1.0)])
def test_clip(lo, hi):
    inputs = ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""]
    inits = {}
    if lo is not None:
        inits["lo"] = np.array(lo, np.float32)
    if hi is not None:
        inits["hi"] = np.array(hi, np.float32)
    model = make_model([helper.make_node("Clip", inputs, ["y"])], {"x": [1, 6, 4, 4]}, {"y": None}, inits)
    assert_matches(model, "tiny")


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Max", "Min"])
@pytest.mark.parametrize("operand", ["tensor", "channel", "scalar"])
def test_binary(op, operand):
    shape = [1, 10, 3, 4]
    ins = {"a": shape}
    inits = {}
    if operand == "tensor":
        ins["b"] = shape
    elif operand == "channel":
        inits["b"] = w(10, 1, 1, scale=1.0)
    else:
        inits["b"] = np.array(0.7, np.float32)
    model = make_model([helper.make_node(op, ["a", "b"], ["y"])], ins, {"y": None}, inits)
    assert_matches(model, "tiny")


def test_constant_first_operand_sub():
    model = make_model([helper.make_node("Sub", ["b", "a"], ["y"])], {"a": [1, 5]}, {"y": None},
                       {"b": w(5, scale=1.0)})
    assert_matches(model, "tiny")


def test_residual_add_relu_fused():
    c = 8
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    model = make_model(nodes, {"x": [1, c, 6, 6]}, {"y": None}, {"W1": w(c, c, 3, 3), "W2": w(c, c, 3, 3)})
    out = assert_matches(model, "tiny")
    layers = {L["name"]: L for L in out["executor"].manifest["compiler"]["report"]["layers"]}
    assert len(layers) == 2  # conv+relu, conv+add+relu


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_batchnorm_standalone(config):
    c = 10
    inits = {"s": w(c, scale=1.0), "b": w(c, scale=1.0), "m": w(c, scale=0.5),
             "v": np.abs(w(c, scale=1.0)) + 0.5}
    model = make_model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])],
                       {"x": [1, c, 4, 4]}, {"y": None}, inits)
    assert_matches(model, config)


def test_batchnorm_folded_into_conv():
    c = 8
    inits = {"W": w(c, c, 3, 3), "s": w(c, scale=1.0), "b": w(c, scale=1.0), "m": w(c, scale=0.5),
             "v": np.abs(w(c, scale=1.0)) + 0.5}
    model = make_model([helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3]),
                        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])],
                       {"x": [1, c, 5, 5]}, {"y": None}, inits)
    out = assert_matches(model, "tiny")
    assert [L["op"] for L in out["executor"].manifest["compiler"]["report"]["layers"]] == ["Conv"]


@pytest.mark.parametrize("op", ["Sum", "Max", "Min"])
def test_variadic(op):
    shape = [1, 6, 3, 3]
    model = make_model([helper.make_node(op, ["a", "b", "c", "d"], ["y"])],
                       {k: shape for k in "abcd"}, {"y": None})
    assert_matches(model, "tiny")


@pytest.mark.parametrize("cin", [8, 64])  # 64 on tiny: 72 column tiles, split with fp16 partial sums
def test_epilogue_longer_than_one_chain(cin):
    """bias + residual + Clip(max, min) + LeakyRelu needs more add/sub stages than two MFUs have."""
    inits = {"W": w(8, cin, 3, 3), "B": w(8, scale=0.1), "lo": np.array(-1.0, np.float32),
             "hi": np.array(1.5, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "r"], ["s"]),
             helper.make_node("Clip", ["s", "lo", "hi"], ["k"]),
             helper.make_node("LeakyRelu", ["k"], ["y"], alpha=0.3)]
    model = make_model(nodes, {"x": [1, cin, 5, 5], "r": [1, 8, 5, 5]}, {"y": None}, inits)
    assert_matches(model, "tiny")


def test_exporter_idioms_pad_reducemean_div():
    """tf2onnx/PyTorch spellings: Pad before Conv, ReduceMean over H, W, Div by a constant."""
    inits = {"W": w(6, 4, 3, 3), "pads": np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64), "d": np.array(4.0, np.float32),
             "axes": np.array([2, 3], np.int64)}
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]),
             helper.make_node("Conv", ["p", "W"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Div", ["c", "d"], ["q"]),
             helper.make_node("ReduceMean", ["q", "axes"], ["y"], keepdims=0)]
    model = make_model(nodes, {"x": [1, 4, 6, 6]}, {"y": None}, inits, opset=18)
    out = assert_matches(model, "tiny")
    ops = [L["op"] for L in out["executor"].manifest["compiler"]["report"]["layers"]]
    assert "Pad" not in ops and "ReduceMean" not in ops
