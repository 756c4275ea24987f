"""Depthwise convolutions on the MFUs (compiler/ops/conv.py, _conv_depthwise) against onnxruntime.

Each model is MobileNet's pattern: a 1x1 convolution (so the depthwise one reads an NPU tensor, not im2col
vectors from the host), the depthwise convolution with its epilogue, and a 1x1 projection.  Outputs are
compared on the input-sensitive part too: out(x1) - out(x2) against onnxruntime's.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers import assert_matches, cosine, make_model, reference, run_npu, weights

RNG = np.random.default_rng(10)


def w(*shape, scale=None):
    return weights(RNG, *shape, scale=scale)


def dw_model(c, hw, k, stride=1, pads=None, dilation=1, act=None, cin=None, project=True):
    """x [1, cin, hw, hw] -> 1x1 conv to c channels -> Relu -> depthwise kxk (+ act) -> 1x1 conv (or not)."""
    cin = cin or c
    pads = pads if pads is not None else [(k - 1) * dilation // 2] * 4
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["a"], ["a2"]),
             helper.make_node("Conv", ["a2", "Wd", "Bd"], ["d"], kernel_shape=[k, k], strides=[stride, stride],
                              pads=pads, dilations=[dilation, dilation], group=c, name="dw")]
    inits = {"W1": w(c, cin, 1, 1), "B1": w(c, scale=0.1), "Wd": w(c, 1, k, k), "Bd": w(c, scale=0.1)}
    last = "d"
    if act == "relu6":
        inits.update(lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))
        nodes.append(helper.make_node("Clip", ["d", "lo", "hi"], ["e"]))
        last = "e"
    elif act:
        nodes.append(helper.make_node(act, ["d"], ["e"]))
        last = "e"
    if project:
        nodes.append(helper.make_node("Conv", [last, "W3"], ["y"], kernel_shape=[1, 1]))
        inits["W3"] = w(cin, c, 1, 1)
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    return make_model(nodes, {"x": [1, cin, hw, hw]}, {"y": None}, inits)


def assert_input_sensitive(model, config, cos_min=0.999):
    """The simulator's out(x1) - out(x2) against onnxruntime's."""
    rng = np.random.default_rng(1)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x1, x2 = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    (g1, _), ex = run_npu(model, {"x": x1}, config)
    g2, _ = ex.run({"x": x2})
    r1, r2 = reference(model, {"x": x1})["y"], reference(model, {"x": x2})["y"]
    c = cosine(g1["y"] - g2["y"], r1 - r2)
    assert c >= cos_min, f"input-sensitive cosine {c:.6f} < {cos_min}"
    return ex


def layer(ex, name="dw"):
    return next(L for L in ex.manifest["compiler"]["report"]["layers"] if L["name"] == name)


CASES = [
    (8, 8, 3, 1, None, 1, "relu6"),            # MobileNetV2's block: ReLU6 takes a chain of its own
    (12, 9, 3, 2, None, 1, "Relu"),            # stride 2, channels not a multiple of N (Ct = 2 on tiny)
    (6, 11, 5, 1, None, 1, None),              # 5x5 (EfficientNet)
    (5, 10, 5, 2, [1, 2, 2, 1], 1, "relu6"),   # 5x5 stride 2, asymmetric padding
    (16, 10, 3, 1, None, 2, "Relu"),           # dilation 2
    (8, 7, 3, 1, [0, 0, 0, 0], 1, "Sigmoid"),  # no padding
    (10, 6, 1, 1, [0, 0, 0, 0], 1, "relu6"),   # 1x1: a per-channel scale, one chain (and ReLU6's)
]


@pytest.mark.parametrize("config,c,hw,k,stride,pads,dilation,act",
                         [("tiny", *case) for case in CASES] + [("small", *case) for case in CASES]
                         + [("small", 40, 10, 5, 2, [1, 2, 2, 1], 1, "relu6"),   # Ct = 2 on small, 5x5
                            ("small", 70, 6, 3, 1, None, 1, "LeakyRelu")])      # Ct = 3
def test_depthwise_on_mfus(config, c, hw, k, stride, pads, dilation, act):
    model = dw_model(c, hw, k, stride, pads, dilation, act)
    out = assert_matches(model, config)
    ex = out["executor"]
    assert layer(ex)["tiles"] == 0  # mapped on the MFUs: no weight tiles, the taps are MULVRF vectors
    assert_input_sensitive(model, config)


def test_depthwise_accumulates_in_bands():
    """A grid whose accumulator exceeds a quarter of the ASVRF runs in bands of output rows (tiny: 128 vectors)."""
    model = dw_model(16, 14, 3, act="relu6", project=False)  # 14 x 14 x 2 vectors
    out = assert_matches(model, "tiny")
    assert layer(out["executor"])["tiles"] == 0
    assert_input_sensitive(model, "tiny")


def test_depthwise_numerics_are_fp16_taps():
    """The MFU mapping's result is the fp16 sum of fp16 products, tap by tap in (ky, kx) order, bias first."""
    from compiler import compile_model
    from npu.modelfile import read_model
    from runtime.executor import Executor

    c, hw, k = 8, 5, 3
    wd, bd = w(c, 1, k, k), w(c, scale=0.1)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "Wd", "Bd"], ["y"], kernel_shape=[k, k], pads=[1] * 4, group=c,
                              name="dw")]
    model = make_model(nodes, {"x": [1, c, hw, hw]}, {"y": None}, {"Wd": wd, "Bd": bd})
    x = np.abs(RNG.standard_normal((1, c, hw, hw))).astype(np.float32)
    ex = Executor(read_model(compile_model(model, config="tiny")))
    got, _ = ex.run({"x": x})
    assert layer(ex)["tiles"] == 0
    f = np.float16
    xp = np.pad(x.astype(f), ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((1, c, hw, hw), f)
    for ky in range(k):
        for kx in range(k):
            prod = (xp[:, :, ky:ky + hw, kx:kx + hw].astype(np.float64)
                    * wd[:, 0, ky, kx].astype(f).astype(np.float64)[None, :, None, None]).astype(f)
            acc = (prod.astype(np.float64) + (bd.astype(f)[None, :, None, None] if (ky, kx) == (0, 0) else acc)
                   .astype(np.float64)).astype(f)
    np.testing.assert_array_equal(got["y"], acc.astype(np.float32))


def test_channel_multiplier_stays_dense():
    """group == Cin with two outputs per channel moves lanes, which the MFUs cannot: the MVM takes it."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "Wd"], ["y"], kernel_shape=[3, 3], pads=[1] * 4, group=8, name="dw")]
    model = make_model(nodes, {"x": [1, 8, 6, 6]}, {"y": None}, {"Wd": w(16, 1, 3, 3)})
    out = assert_matches(model, "tiny")
    assert layer(out["executor"])["tiles"] > 0


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_depthwise_with_a_fused_residual(config):
    """An Add of the depthwise input fuses into the last tap's chains as an MFU operand read pixel for pixel."""
    c, hw = 12, 7
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["a"], ["a2"]),
             helper.make_node("Conv", ["a2", "Wd", "Bd"], ["d"], kernel_shape=[3, 3], pads=[1] * 4, group=c, name="dw"),
             helper.make_node("Add", ["d", "a2"], ["s"]),
             helper.make_node("Conv", ["s", "W3"], ["y"], kernel_shape=[1, 1])]
    model = make_model(nodes, {"x": [1, c, hw, hw]}, {"y": None},
                       {"W1": w(c, c, 1, 1), "Wd": w(c, 1, 3, 3), "Bd": w(c, scale=0.1), "W3": w(c, c, 1, 1)})
    out = assert_matches(model, config)
    assert layer(out["executor"])["tiles"] == 0
    assert_input_sensitive(model, config)


def test_depthwise_writing_a_concatenation_part():
    """A depthwise result that is the first part of a shared concatenation buffer (passes/layout.py) is merged
    into it by a chain over the accumulator (vv_add with the buffer on the last MFU)."""
    c, hw = 8, 6
    nodes = [helper.make_node("Conv", ["x", "W1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["a"], ["a2"]),
             helper.make_node("Conv", ["a2", "Wd"], ["d"], kernel_shape=[3, 3], pads=[1] * 4, group=c, name="dw"),
             helper.make_node("Conv", ["a2", "W2"], ["e"], kernel_shape=[1, 1]),
             helper.make_node("Concat", ["d", "e"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "W3"], ["y"], kernel_shape=[1, 1])]
    model = make_model(nodes, {"x": [1, c, hw, hw]}, {"y": None},
                       {"W1": w(c, c, 1, 1), "Wd": w(c, 1, 3, 3), "W2": w(4, c, 1, 1), "W3": w(6, c + 4, 1, 1)})
    out = assert_matches(model, "tiny")
    assert layer(out["executor"])["tiles"] == 0
    assert_input_sensitive(model, "tiny")
