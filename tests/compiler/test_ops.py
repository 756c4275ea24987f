"""Every NPU operation against onnxruntime, across attribute variations, on the tiny and small configs."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers import assert_matches, make_model

RNG = np.random.default_rng(0)


def w(*shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (RNG.standard_normal(shape) * (scale or np.sqrt(2.0 / fan_in))).astype(np.float32)


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


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("batch,k,m", [(1, 20, 10), (1, 64, 40), (3, 24, 17)])
def test_gemm(config, batch, k, m):
    model = make_model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)],
                       {"x": [batch, k]}, {"y": None}, {"W": w(m, k), "B": w(m, scale=0.1)})
    assert_matches(model, config)


@pytest.mark.parametrize("trans_b,alpha,beta", [(0, 1.0, 1.0), (1, 0.5, 2.0), (0, 2.0, 0.0)])
def test_gemm_attributes(trans_b, alpha, beta):
    wt = w(12, 16)
    model = make_model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=trans_b, alpha=alpha, beta=beta)],
                       {"x": [1, 16]}, {"y": None}, {"W": wt if trans_b else wt.T.copy(), "B": w(12, scale=0.1)})
    assert_matches(model, "tiny")


def test_matmul_add():
    model = make_model([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
                       {"x": [2, 16]}, {"y": None}, {"W": w(16, 9), "B": w(9, scale=0.1)})
    assert_matches(model, "tiny")


def test_gemm_columns_split_with_partial_sums():
    # 16 x 400 on tiny: 2 x 50 tiles > the 64-tile MRF: streamed and split along columns
    model = make_model([helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)],
                       {"x": [1, 400]}, {"y": None}, {"W": w(16, 400), "B": w(16, scale=0.1)})
    out = assert_matches(model, "tiny")
    assert out["executor"].manifest["weights"]["mode"] == "streaming"


@pytest.mark.parametrize("op,kwargs", [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Sigmoid", {}), ("Tanh", {}),
])
def test_unary(op, kwargs):
    model = make_model([helper.make_node(op, ["x"], ["y"], **kwargs)], {"x": [1, 10, 3, 3]}, {"y": None})
    assert_matches(model, "tiny", rel_max=0.06)


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


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("op,k,s,p,ceil", [
    ("MaxPool", 3, 2, 1, 0), ("MaxPool", 2, 2, 0, 0), ("MaxPool", 3, 2, 0, 1), ("MaxPool", 3, 1, 1, 0),
    ("AveragePool", 2, 2, 0, 0), ("AveragePool", 3, 1, 0, 0),
    ("AveragePool", 3, 1, 1, 0), ("AveragePool", 3, 2, 1, 1),  # padding excluded from the count
])
def test_pool(config, op, k, s, p, ceil):
    model = make_model([helper.make_node(op, ["x"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                                         ceil_mode=ceil)], {"x": [1, 10, 9, 9]}, {"y": None})
    assert_matches(model, config)


@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("k,s,p,hw", [(3, 2, 1, 9), (3, 2, 0, 8), (2, 2, 0, 7)])
def test_avgpool_ceil_mode_partial_windows(cip, k, s, p, hw):
    model = make_model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s],
                                         pads=[p] * 4, ceil_mode=1, count_include_pad=cip)],
                       {"x": [1, 6, hw, hw]}, {"y": None})
    assert_matches(model, "tiny")


def test_avgpool_count_include_pad():
    model = make_model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1] * 4,
                                         count_include_pad=1)], {"x": [1, 6, 5, 5]}, {"y": None})
    assert_matches(model, "tiny")


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (4, 1), (7, 7)])
def test_global_pool(op, hw):
    model = make_model([helper.make_node(op, ["x"], ["y"])], {"x": [1, 12, *hw]}, {"y": None})
    assert_matches(model, "tiny")


def test_concat_channels():
    nodes = [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Sigmoid", ["b"], ["rb"]),
             helper.make_node("Concat", ["ra", "rb"], ["c"], axis=1),
             helper.make_node("Conv", ["c", "W"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"a": [1, 5, 4, 4], "b": [1, 6, 4, 4]}, {"y": None}, {"W": w(4, 11, 3, 3)})
    assert_matches(model, "tiny")


@pytest.mark.parametrize("view", ["Flatten", "Reshape", "Transpose"])
def test_views_before_gemm(view):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    inits = {"W": w(6, 4, 3, 3), "G": w(5, 6 * 3 * 3)}
    if view == "Flatten":
        nodes.append(helper.make_node("Flatten", ["c"], ["f"]))
    elif view == "Reshape":
        inits["shape"] = np.array([1, -1], np.int64)
        nodes.append(helper.make_node("Reshape", ["c", "shape"], ["f"]))
    else:
        inits["shape"] = np.array([1, -1], np.int64)
        nodes += [helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
                  helper.make_node("Reshape", ["t", "shape"], ["f"])]
    nodes.append(helper.make_node("Gemm", ["f", "G"], ["y"], transB=1))
    model = make_model(nodes, {"x": [1, 4, 3, 3]}, {"y": None}, inits)
    assert_matches(model, "tiny")


def test_view_as_output():
    inits = {"W": w(6, 4, 1, 1), "shape": np.array([1, 6, 4], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["y"])]
    model = make_model(nodes, {"x": [1, 4, 2, 2]}, {"y": None}, inits)
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


def test_gemm_reads_a_padded_feature_map():
    """A conv output read both by a padded 3x3 conv and by Flatten -> Gemm: the Gemm reads pixel rows
    of the padded buffer with a window (and splits its columns along whole rows on tiny's MRF)."""
    inits = {"W": w(8, 4, 3, 3), "W2": w(4, 8, 3, 3), "G": w(6, 8 * 6 * 6), "G2": w(6, 4 * 6 * 6)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "W2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "G"], ["y1"], transB=1),
             helper.make_node("Flatten", ["c2"], ["f2"]), helper.make_node("Gemm", ["f2", "G2"], ["y2"], transB=1)]
    model = make_model(nodes, {"x": [1, 4, 6, 6]}, {"y1": None, "y2": None}, inits)
    assert_matches(model, "tiny")
    assert_matches(model, "small")


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


@pytest.mark.parametrize("op", ["Sum", "Max", "Min"])
def test_variadic(op):
    shape = [1, 6, 3, 3]
    model = make_model([helper.make_node(op, ["a", "b", "c", "d"], ["y"])],
                       {k: shape for k in "abcd"}, {"y": None})
    assert_matches(model, "tiny")


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


@pytest.mark.parametrize("config,hw,k,s,p,block", [("small", 16, 7, 2, 3, 2), ("tiny", 12, 3, 1, 1, 1),
                                                   ("small", 10, 5, 2, 2, 1)])
def test_first_layer_blocks_of_output_pixels(config, hw, k, s, p, block):
    """The host sends the union of P adjacent receptive fields; the conv writes P pixels per mv_mul."""
    model = conv_model(3, 8, hw, k, stride=s, pad=p, act="Relu")
    out = assert_matches(model, config)
    (step,) = [st for st in out["executor"].manifest["plan"] if st["kind"] == "npu"]
    assert step["inputs"][0]["kind"] == "im2col"
    assert step["inputs"][0]["im2col"]["block"] == block


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
