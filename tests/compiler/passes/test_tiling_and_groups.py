"""Tiling helpers and DenseNet-style concatenation groups."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler.chain_ir import LoweringError
from compiler.frontend import load_model, to_graph
from compiler.lowering import row_chunk, split_columns
from compiler.passes.fuse_epilogues import fuse_epilogues
from compiler.passes.layout import plan_concat_groups
from compiler.passes.partition import partition
from compiler.passes.tiling import estimate_tiles
from helpers import assert_matches, make_model
from npu.config import get_config


def test_split_columns_keeps_units_whole():
    assert split_columns(10, 3, 64) == [(0, 10)]
    assert split_columns(36, 12, 32) == [(0, 24), (24, 12)]
    assert split_columns(50, 1, 32) == [(0, 32), (32, 18)]
    with pytest.raises(LoweringError, match="exceed the MRF share"):
        split_columns(100, 40, 32)


def test_row_chunk():
    assert row_chunk(4, 36, 64) == 1 and row_chunk(8, 8, 64) == 8 and row_chunk(16, 8, 64) == 8


def dense_block(growth=3, layers=3, c0=5, hw=4):
    """x0 -> layers (Relu, 3x3 conv) each reading the concatenation of every earlier output, as DenseNet."""
    rng = np.random.default_rng(0)
    nodes, inits, feats = [], {}, ["x0"]
    nodes.append(helper.make_node("Relu", ["x"], ["x0"]))
    channels = c0
    for k in range(layers):
        src = feats[0] if len(feats) == 1 else f"cat{k}"
        if len(feats) > 1:
            nodes.append(helper.make_node("Concat", list(feats), [src], axis=1))
        inits[f"W{k}"] = (rng.standard_normal((growth, channels, 3, 3)) * 0.3).astype(np.float32)
        nodes.append(helper.make_node("Relu" if k % 2 else "Sigmoid", [src], [f"a{k}"]))
        nodes.append(helper.make_node("Conv", [f"a{k}", f"W{k}"], [f"f{k}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        feats.append(f"f{k}")
        channels += growth
    nodes.append(helper.make_node("Concat", list(feats), ["y"], axis=1))
    return make_model(nodes, {"x": [1, c0, hw, hw]}, {"y": None}, inits)


def test_concat_group_plan():
    g = to_graph(load_model(dense_block()))
    partition(g)
    fuse_epilogues(g)
    plan = plan_concat_groups(g, 8)
    gid = next(iter(plan["groups"]))
    assert plan["parts"] == {"x0": (gid, 0), "f0": (gid, 5), "f1": (gid, 8), "f2": (gid, 11)}
    assert len(plan["concats"]) == 3 and plan["groups"][gid] == (4, 4, 14)


def test_concat_group_refused_when_a_producer_reads_the_group():
    m = dense_block()
    for n in m.graph.node:  # conv k reads the concatenation directly
        if n.op_type == "Conv":
            n.input[0] = n.input[0].replace("a", "cat") if n.input[0] != "a0" else "x0"
    g = to_graph(load_model(m))
    partition(g)
    fuse_epilogues(g)
    assert plan_concat_groups(g, 8)["groups"] == {}
    assert_matches(m, "tiny")


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_concat_group_runs_without_copies(config):
    out = assert_matches(dense_block(), config)
    # parts add into their lanes of one buffer: no copy chains, the Concats are free
    report = out["executor"].manifest["compiler"]["report"]
    assert all(L["instructions"] == 0 for L in report["layers"] if L["op"] == "Concat")


def test_estimate_tiles():
    g = to_graph(load_model(dense_block()))
    assert estimate_tiles(g, get_config("tiny")) == 9 * 1 + 9 * 1 + 9 * 2


def test_pixel_groups_keep_bfp_blocks_inside_a_pixel():
    from compiler.passes.layout import plan_pixel_groups

    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "W1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "W2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    inits = {"W1": np.ones((4, 8, 1, 1), np.float32), "W2": np.ones((8, 4, 3, 3), np.float32)}
    g = to_graph(load_model(make_model(nodes, {"x": [1, 8, 8, 8]}, {"y": None}, inits)))
    partition(g)
    fuse_epilogues(g)
    assert plan_pixel_groups(g, 8, None, bfp_block=4) == {"a": 2}
    assert plan_pixel_groups(g, 8, None, bfp_block=8) == {}  # one exponent per vector: no sharing pixels
