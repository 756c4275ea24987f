"""A node that does not fit the NPU's memories runs on the host: the compile never aborts (issue 10).

Each test builds the smallest graph that aborted the compile before, and checks the result against
onnxruntime."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from helpers import assert_matches, make_model, weights

RNG = np.random.default_rng(3)


def targets(out) -> dict[str, str]:
    return {L["name"]: L["target"] for L in out["executor"].manifest["compiler"]["report"]["layers"]}


def swish(size: int):
    """Conv -> x * tanh(x): the Mul reads the Conv's output from a MULVRF (64 vectors on tiny).  (x * sigmoid(x)
    itself is one activation instruction now, compiler/passes/activations.py.)"""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Tanh", ["c"], ["s"], name="sigmoid"),
             helper.make_node("Mul", ["c", "s"], ["y"], name="mul")]
    return make_model(nodes, {"x": [1, 8, size, size]}, {"y": None}, {"W": weights(RNG, 16, 8, 3, 3)})


def test_mul_of_two_activations_too_big_for_the_mulvrf_goes_to_the_host():
    """12 x 12 x 16 channels = 288 vectors > the 64 of tiny's MULVRF: it aborted with 'does not fit MULVRF'."""
    out = assert_matches(swish(12), "tiny", npu_only=False)
    t = targets(out)
    assert t["conv"] == "npu" and t["mul"] == "host"


def test_small_swish_stays_on_the_npu():
    out = assert_matches(swish(2), "tiny")
    assert set(targets(out).values()) == {"npu"}


def test_graph_input_too_big_for_every_vector_memory_goes_to_the_host():
    """A 40 x 40 x 8 input is 1,600 vectors > tiny's IVRF (512) and DRAM (1,024); the buffer belongs to no
    node, and the capacity error used to abort the compile."""
    out = assert_matches(swish(40), "tiny", npu_only=False)
    assert targets(out)["conv"] == "host"


def test_node_without_inputs_does_not_break_pixel_grouping():
    """plan_pixel_groups read node.inputs[0] of every node: RandomNormal has none (IndexError)."""
    nodes = [helper.make_node("RandomNormal", [], ["r"], shape=[1, 8, 4, 4], seed=1.0, dtype=TensorProto.FLOAT),
             helper.make_node("Mul", ["r", "zero"], ["r0"]),
             helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["c", "r0"], ["y"])]
    model = make_model(nodes, {"x": [1, 8, 4, 4]}, {"y": None},
                       {"W": weights(RNG, 8, 8, 3, 3), "zero": np.zeros(1, np.float32)})
    out = assert_matches(model, "tiny", npu_only=False)
    assert targets(out)["conv"] == "npu"
