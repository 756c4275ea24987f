"""A convolution that writes a concatenation part writes one pixel per iteration (issue 10).

GoogLeNet's branch convolutions read pixel-grouped inputs (32 channels, four pixels per vector on
N = 128), which made them compute four output pixels per iteration and write them as one run of
vectors, straight across the neighbouring parts' lanes of the shared concatenation buffer: the
program checker rejected it ("iteration hazard: iteration 1 reads asvrf address 206, which an
earlier iteration of the same chain wrote")."""
from __future__ import annotations

import numpy as np
from onnx import helper

from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(11)


def test_branch_conv_on_grouped_pixels_into_a_concatenation():
    nodes = [helper.make_node("Conv", ["x", "W0"], ["s"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["s"], ["stem"]),
             helper.make_node("Conv", ["stem", "W1"], ["a"], kernel_shape=[1, 1]),          # part 1: 64 ch
             helper.make_node("Conv", ["stem", "W2"], ["r"], kernel_shape=[1, 1]),          # 32 ch, grouped
             helper.make_node("Relu", ["r"], ["rr"]),
             helper.make_node("Conv", ["rr", "W3"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),  # part 2
             helper.make_node("Concat", ["a", "b"], ["y"], axis=1)]
    inits = {"W0": weights(RNG, 64, 64, 1, 1), "W1": weights(RNG, 64, 64, 1, 1), "W2": weights(RNG, 32, 64, 1, 1),
             "W3": weights(RNG, 96, 32, 3, 3)}
    model = make_model(nodes, {"x": [1, 64, 8, 8]}, {"y": None}, inits)
    assert_matches(model, "brainslice-128")
