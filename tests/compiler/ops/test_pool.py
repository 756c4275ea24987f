"""MaxPool, AveragePool and the global pools against onnxruntime."""
from __future__ import annotations

import pytest
from onnx import helper

from helpers import assert_matches, make_model


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
