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


def macs(model) -> dict[str, int]:
    from compiler.frontend import load_model, to_graph
    from compiler.ops import node_macs

    g = to_graph(load_model(model))
    return {n.name: node_macs(g, n) for n in g.nodes.values()}


def test_host_linear_algebra_macs():
    """Output elements x the reduced dimension, whatever the rank, transposition or spelling."""
    nodes = [helper.make_node("MatMul", ["a", "b"], ["ab"], name="batched"),                 # [2,3,4] @ [4,5]
             helper.make_node("Gemm", ["at", "c"], ["atc"], transA=1, name="gemm_ta"),      # [4,3]^T @ [4,6]
             helper.make_node("Einsum", ["a", "d"], ["ad"], equation="bij,bjk->bik", name="einsum"),
             helper.make_node("Einsum", ["e", "f"], ["ef"], equation="...ij,jk->...ik", name="ellipsis"),
             helper.make_node("Einsum", ["a"], ["tr"], equation="bij->bji", name="transpose")]
    model = make_model(nodes, {"a": [2, 3, 4], "b": [4, 5], "at": [4, 3], "c": [4, 6], "d": [2, 4, 7],
                               "e": [5, 2, 3], "f": [3, 4]},
                       {"ab": None, "atc": None, "ad": None, "ef": None, "tr": None})
    assert macs(model) == {"batched": 2 * 3 * 5 * 4, "gemm_ta": 3 * 6 * 4, "einsum": 2 * 3 * 4 * 7,
                           "ellipsis": 5 * 2 * 3 * 4, "transpose": 0}
