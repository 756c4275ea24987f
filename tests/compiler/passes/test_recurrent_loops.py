"""Keras recurrent layers exported by tf2onnx (ONNX Loops; tests/compiler/data/keras, made by its export.py)
become LSTM/GRU/RNN nodes and run on the NPU, against onnxruntime on the original Loop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler import compile_report
from compiler.frontend import load_model
from compiler.passes.recurrent_loops import rewrite_recurrent_loops
from helpers import cosine, random_inputs, reference, run_npu

DATA = Path(__file__).resolve().parents[1] / "data" / "keras"
EXPECT = {"lstm": ["LSTM"], "gru": ["GRU"], "simplernn": ["RNN"], "bilstm": ["LSTM", "LSTM"], "gru_ra0": ["GRU"],
          "lstm_last": ["LSTM"]}


def keras_model(name: str) -> onnx.ModelProto:
    return onnx.load(str(DATA / f"{name}.onnx"))


@pytest.mark.parametrize("name", list(EXPECT))
def test_the_loop_becomes_its_recurrent_node(name):
    model = load_model(keras_model(name))
    assert "Loop" in [n.op_type for n in model.graph.node]
    ops = [n.op_type for n in rewrite_recurrent_loops(model).graph.node]
    assert "Loop" not in ops and [o for o in ops if o in ("LSTM", "GRU", "RNN")] == EXPECT[name]
    gru = [n for n in rewrite_recurrent_loops(model).graph.node if n.op_type == "GRU"]
    if gru:  # Keras reset_after=True is ONNX linear_before_reset=1; reset_after=False is 0
        lbr = next(a.i for a in gru[0].attribute if a.name == "linear_before_reset")
        assert lbr == (0 if name == "gru_ra0" else 1)


@pytest.mark.parametrize("name", list(EXPECT))
def test_keras_recurrent_layers_run_on_the_npu(name):
    """All their MACs on the NPU, and the outputs follow the input as onnxruntime's do."""
    model = keras_model(name)
    assert compile_report(model, config="small").npu_mac_share == 1.0
    f1, f2 = random_inputs(model, 1), random_inputs(model, 2)
    (o1, _), _ = run_npu(model, f1, "small")
    (o2, _), _ = run_npu(model, f2, "small")
    r1, r2 = reference(model, f1), reference(model, f2)
    for k in r1:
        assert cosine(o1[k], r1[k]) > 0.999
        assert cosine(o1[k] - o2[k], r1[k] - r2[k]) > 0.999  # what depends on the input


def test_a_cell_the_npu_does_not_have_keeps_its_loop():
    """Keras LSTM(activation="relu"): no default-activation LSTM matches it, so the Loop stays (on the host)
    and the model still gives onnxruntime's outputs."""
    model = keras_model("lstm_relu")
    assert "Loop" in [n.op_type for n in rewrite_recurrent_loops(load_model(model)).graph.node]
    feeds = random_inputs(model, 3)
    (got, _), ex = run_npu(model, feeds, "small")
    want = reference(model, feeds)
    assert all(np.allclose(got[k], want[k], atol=1e-5) for k in want)
    assert {s["kind"] for s in ex.manifest["plan"]} == {"host"}


def test_a_model_without_loops_is_returned_as_is():
    model = load_model(keras_model("lstm_relu"))
    del model.graph.node[:]
    assert rewrite_recurrent_loops(model) is model


@pytest.mark.parametrize("swap", [("Tanh", "Sigmoid"), ("Add", "Mul"), ("Sigmoid", "Tanh")])
def test_a_loop_one_op_away_from_the_cell_keeps_its_loop(swap):
    """The proposal is checked, not trusted: an LSTM loop with one operation changed matches no recurrent node."""
    model = load_model(keras_model("lstm"))
    body = next(n for n in model.graph.node if n.op_type == "Loop").attribute[0].g
    node = [n for n in body.node if n.op_type == swap[0]][-1]  # the last one: inside the cell's update
    node.op_type = swap[1]
    assert "Loop" in [n.op_type for n in rewrite_recurrent_loops(model).graph.node]
