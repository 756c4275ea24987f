"""Convolutions against onnxruntime, across attribute variations, on the tiny and small configs.

tests/compiler/ops/ holds one test module per module of compiler/ops/."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(0)


def w(*shape, scale=None):
    return weights(RNG, *shape, scale=scale)


def conv_model(cin, cout, hw, k, stride=1, pad=0, dilation=1, group=1, bias=True, act=None, auto_pad=None):
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], dilations=[dilation, dilation], group=group)
    if auto_pad:
        attrs["auto_pad"] = auto_pad
    else:
        attrs["pads"] = [pad] * 4
    inits = {"W": w(cout, cin // group, k, k)}
    ins = ["x", "W"]
    if bias:
        inits["B"] = w(cout, scale=0.1)
        ins.append("B")
    nodes = [helper.make_node("Conv", ins, ["y" if act is None else "c"], **attrs)]
    if act:
        nodes.append(helper.make_node(act, ["c"], ["y"]))
    return make_model(nodes, {"x": [1, cin, hw, hw]}, {"y": None}, inits)


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("cin,cout,hw,k,stride,pad,dilation,group", [
    (3, 8, 8, 3, 1, 1, 1, 1),      # first layer (im2col from the host)
    (8, 8, 8, 3, 1, 1, 1, 1),
    (12, 20, 9, 3, 2, 1, 1, 1),    # stride 2, channels not a multiple of N
    (16, 8, 7, 1, 1, 0, 1, 1),     # 1x1
    (8, 8, 10, 3, 1, 2, 2, 1),     # dilation
    (8, 8, 8, 3, 1, 1, 1, 8),      # depthwise
    (16, 16, 6, 3, 1, 1, 1, 4),    # grouped
    (8, 16, 11, 5, 2, 2, 1, 1),    # 5x5 stride 2
])
def test_conv(config, cin, cout, hw, k, stride, pad, dilation, group):
    assert_matches(conv_model(cin, cout, hw, k, stride, pad, dilation, group), config)


def test_conv_first_layer_chained_with_second():
    m = conv_model(3, 8, 8, 3, pad=1, act="Relu")
    nodes = list(m.graph.node) + [helper.make_node("Conv", ["y"], ["z"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    nodes[-1].input.append("W2")
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, {"z": None},
                       {"W": w(8, 3, 3, 3), "B": w(8, scale=0.1), "W2": w(4, 8, 3, 3)})
    assert_matches(model, "tiny")


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad(auto_pad):
    assert_matches(conv_model(8, 8, 7, 3, stride=2, auto_pad=auto_pad), "tiny")


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Tanh"])
def test_conv_fused_activation(act):
    assert_matches(conv_model(8, 8, 6, 3, pad=1, act=act), "tiny")


def test_segment_inputs_from_the_host_and_outputs_read_on_the_npu():
    """NPU -> host (Softmax) -> NPU (im2col conv of a host tensor), with an NPU tensor that is also an output."""
    inits = {"W": w(3, 4, 1, 1), "W2": w(5, 3, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Softmax", ["c"], ["s"], axis=1),
             helper.make_node("Conv", ["s", "W2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": [1, 4, 5, 5]}, {"y": None, "c": None}, inits)
    out = assert_matches(model, "tiny", npu_only=False)
    plan = out["executor"].manifest["plan"]
    assert [s["kind"] for s in plan] == ["npu", "host", "npu"]
    assert plan[2]["inputs"][0]["kind"] == "im2col"


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("mid,hw,k2,s2,residual", [
    (4, 8, 3, 1, True),    # ResNet bottleneck: 1x1 -> 3x3 -> 1x1 (+ residual), middle grouped
    (4, 8, 3, 2, False),   # stride 2 inside the grouped pair
    (2, 8, 3, 1, False),   # four (tiny) or eight (small) pixels per vector
    (3, 6, 5, 1, True),    # channels that do not fill the lanes, 5x5
    (4, 12, 1, 2, False),  # 1x1 stride 2 reading grouped pixels
])
def test_grouped_pixels(config, mid, hw, k2, s2, residual):
    """Narrow tensors between convolutions hold several pixels per vector (passes/layout.py)."""
    from compiler.driver import compile_graph

    c = 8 if config == "tiny" else 32
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "W1", "B1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["a"], ["a2"]),
             helper.make_node("Conv", ["a2", "W2", "B2"], ["b"], kernel_shape=[k2, k2], pads=[k2 // 2] * 4,
                              strides=[s2, s2]),
             helper.make_node("Conv", ["b", "W3"], ["c"], kernel_shape=[1, 1])]
    if residual:
        nodes += [helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    else:
        nodes += [helper.make_node("Relu", ["c"], ["y"])]
    inits = {"W1": w(mid, c, 1, 1), "B1": w(mid, scale=0.1), "W2": w(mid, mid, k2, k2), "B2": w(mid, scale=0.1),
             "W3": w(c, mid, 1, 1)}
    model = make_model(nodes, {"x": [1, c, hw, hw]}, {"y": None}, inits)
    # tiny's format shares an exponent per 8-lane vector; 4-lane blocks let pixels share a vector
    fmt = "bfp-e8m7b4" if config == "tiny" else None
    assert_matches(model, config, fmt=fmt)
    placements = compile_graph(model, config, fmt)
    from compiler.passes.layout import plan_pixel_groups

    cfg = placements.config
    assert plan_pixel_groups(placements.graph, cfg.native_dim, None, cfg.block)  # the layout really was used


@pytest.mark.parametrize("config,hw,k,s,p,block", [("small", 16, 7, 2, 3, 2), ("tiny", 12, 3, 1, 1, 1),
                                                   ("small", 10, 5, 2, 2, 1)])
def test_first_layer_blocks_of_output_pixels(config, hw, k, s, p, block):
    """The host sends the union of P adjacent receptive fields; the conv writes P pixels per mv_mul."""
    model = conv_model(3, 8, hw, k, stride=s, pad=p, act="Relu")
    out = assert_matches(model, config)
    (step,) = [st for st in out["executor"].manifest["plan"] if st["kind"] == "npu"]
    assert step["inputs"][0]["kind"] == "im2col"
    assert step["inputs"][0]["im2col"]["block"] == block


@pytest.mark.parametrize("hw,k,s", [(12, 3, 1), (16, 7, 2)])
def test_first_layer_writes_grouped_pixels(hw, k, s):
    """A first convolution (im2col from the host) writes G pixels per vector when its reader is a convolution:
    VGG's conv1_1 -> conv1_2.  Each block of output pixels is a whole number of output vectors."""
    from compiler.driver import compile_graph
    from compiler.passes.layout import plan_pixel_groups

    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["a"], kernel_shape=[k, k], pads=[k // 2] * 4, strides=[s, s]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "W2"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)]
    model = make_model(nodes, {"x": [1, 3, hw, hw]}, {"y": None},
                       {"W": w(8, 3, k, k), "B": w(8, scale=0.1), "W2": w(6, 8, 3, 3)})
    out = assert_matches(model, "small")
    (step,) = [st for st in out["executor"].manifest["plan"] if st["kind"] == "npu"]
    assert step["inputs"][0]["kind"] == "im2col"
    cfg_graph = compile_graph(model, "small")
    groups = plan_pixel_groups(cfg_graph.graph, cfg_graph.config.native_dim, None, cfg_graph.config.block)
    G = groups["r"]
    assert G > 1 and step["inputs"][0]["im2col"]["block"] % G == 0


def test_host_im2col_matches_direct_patches():
    from npu.plan import im2col

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 9, 10)).astype(np.float32)
    x[0, 0, 0, :3] = [1e-8, 7e4, 1 + 2 ** -11]  # rounds to fp16 as the input queue would: 0, inf, a tie to even
    kh = kw = 3
    for P, sw, pads in [(1, 1, [1, 1, 1, 1]), (2, 2, [1, 1, 1, 1]), (3, 1, [0, 2, 0, 0])]:
        oh = (9 + pads[0] + pads[2] - kh) // 1 + 1
        ow = (10 + pads[1] + pads[3] - kw) // sw + 1
        ow -= ow % P
        U = (P - 1) * sw + kw if P > 1 else kw
        kt = -(-(kh * U * 3) // 8)
        spec = dict(kh=kh, kw=kw, sh=1, sw=sw, dh=1, dw=1, pads=pads, oh=oh, ow=ow, kt=kt, block=P, union=U)
        vec = im2col(x, spec, 8).reshape(oh, ow // P, kt * 8)
        with np.errstate(over="ignore"):
            xp = np.pad(x[0].astype(np.float16), ((0, 0), (pads[0], 4), (pads[1], 8)))
        for y in range(oh):
            for j in range(ow // P):
                patch = xp[:, y:y + kh, j * P * sw:j * P * sw + U].transpose(1, 2, 0).reshape(-1)
                assert vec.dtype == np.float16 and np.array_equal(vec[y, j, :patch.size], patch)


def test_convolution_macs():
    """Output elements x input channels per group x taps; ConvTranspose: input elements x its weight's slice."""
    from compiler.frontend import load_model, to_graph
    from compiler.ops import node_macs

    nodes = [helper.make_node("Conv", ["x", "W"], ["g"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4,
                              name="grouped"),
             helper.make_node("ConvTranspose", ["x", "T"], ["t"], kernel_shape=[2, 2], strides=[2, 2],
                              name="transposed")]
    model = make_model(nodes, {"x": [1, 8, 5, 5]}, {"g": None, "t": None},
                       {"W": w(12, 2, 3, 3), "T": w(8, 3, 2, 2)})
    g = to_graph(load_model(model))
    assert {n.name: node_macs(g, n) for n in g.nodes.values()} == {
        "grouped": 12 * 5 * 5 * (2 * 3 * 3), "transposed": 8 * 5 * 5 * (3 * 2 * 2)}
