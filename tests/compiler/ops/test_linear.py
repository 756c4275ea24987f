"""Gemm and MatMul against onnxruntime, and the MACs of the host's linear algebra."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(0)


def w(*shape, scale=None):
    return weights(RNG, *shape, scale=scale)


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
