"""What newer exporters write, folded into what the NPU maps (issue 10): opset-18 ReduceMean over the
spatial axes is a GlobalAveragePool, an explicit Pad before a MaxPool becomes the pool's padding where
the result is the same."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(5)


def layers(out) -> list[tuple[str, str]]:
    return [(L["op"], L["target"]) for L in out["executor"].manifest["compiler"]["report"]["layers"]]


@pytest.mark.parametrize("axes,keepdims", [([2, 3], 1), ([-1, -2], 1), ([2, 3], 0)])
def test_opset18_reduce_mean_is_a_global_average_pool(axes, keepdims):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c", "axes"], ["p"], keepdims=keepdims),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "b"], ["y"], transB=1)]
    model = make_model(nodes, {"x": [1, 8, 4, 4]}, {"y": None},
                       {"W": weights(RNG, 8, 8, 3, 3), "axes": np.array(axes, np.int64), "G": weights(RNG, 4, 8),
                        "b": np.zeros(4, np.float32)}, opset=18)
    out = assert_matches(model, "tiny")
    assert ("GlobalAveragePool", "npu") in layers(out)


def pad_maxpool(value, relu: bool, pads=(1, 1), kernel=3):
    inits = {"W": weights(RNG, 8, 8, 3, 3), "pads": np.array([0, 0, pads[0], pads[1], 0, 0, pads[0], pads[1]], np.int64)}
    pad_in = ["a", "pads"]
    if value is not None:
        inits["v"] = np.array(value, np.float32)
        pad_in.append("v")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    nodes.append(helper.make_node("Relu", ["c"], ["a"]) if relu else helper.make_node("Identity", ["c"], ["a"]))
    nodes += [helper.make_node("Pad", pad_in, ["p"]),
              helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[kernel, kernel], strides=[2, 2])]
    return make_model(nodes, {"x": [1, 8, 8, 8]}, {"y": None}, inits, opset=18)


@pytest.mark.parametrize("value,relu", [(-np.inf, False), (0.0, True), (None, True)])
def test_pad_before_maxpool_folds_where_the_result_is_the_same(value, relu):
    out = assert_matches(pad_maxpool(value, relu), "tiny")
    assert "Pad" not in [op for op, _ in layers(out)]


@pytest.mark.parametrize("value,relu,pads", [(0.0, False, (1, 1)),   # zeros can win a max over negatives
                                             (1.0, True, (1, 1))])    # so can ones over a Relu's output
def test_pad_before_maxpool_stays_where_folding_would_change_the_result(value, relu, pads):
    out = assert_matches(pad_maxpool(value, relu, pads), "tiny", npu_only=False)
    assert ("Pad", "host") in layers(out)


def test_zero_size_pad_is_removed():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Pad", ["c", "pads"], ["y"])]
    model = make_model(nodes, {"x": [1, 8, 4, 4]}, {"y": None},
                       {"W": weights(RNG, 8, 8, 3, 3), "pads": np.zeros(8, np.int64)})
    out = assert_matches(model, "tiny")
    assert [op for op, _ in layers(out)] == ["Conv"]


@pytest.mark.parametrize("count_include_pad,folds", [(1, True), (0, False)])
def test_zero_pad_before_average_pool_folds_only_when_the_pool_counts_padding(count_include_pad, folds):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Pad", ["c", "pads"], ["p"]),
             helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              count_include_pad=count_include_pad)]
    model = make_model(nodes, {"x": [1, 8, 8, 8]}, {"y": None},
                       {"W": weights(RNG, 8, 8, 3, 3), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})
    out = assert_matches(model, "tiny", npu_only=folds)
    assert ("Pad" in [op for op, _ in layers(out)]) != folds
