"""Channel concatenation against onnxruntime (concatenation groups: tests/compiler/passes/)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(0)


def w(*shape, scale=None):
    return weights(RNG, *shape, scale=scale)


def test_concat_channels():
    nodes = [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Sigmoid", ["b"], ["rb"]),
             helper.make_node("Concat", ["ra", "rb"], ["c"], axis=1),
             helper.make_node("Conv", ["c", "W"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"a": [1, 5, 4, 4], "b": [1, 6, 4, 4]}, {"y": None}, {"W": w(4, 11, 3, 3)})
    assert_matches(model, "tiny")
