"""Layout-only operators (Reshape, Flatten, Transpose, ...) against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(0)


def w(*shape, scale=None):
    return weights(RNG, *shape, scale=scale)


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
