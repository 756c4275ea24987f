"""LSTM, GRU and RNN against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers import assert_matches, make_model


def rnn_model(op, T, I, H, bias=True, outputs=("Y",), lbr=1, direction="forward", batch=1, h0=False):
    rng = np.random.default_rng(1)
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    D = 2 if direction == "bidirectional" else 1
    inits = {"W": (rng.standard_normal((D, G * H, I)) / np.sqrt(I)).astype(np.float32),
             "R": (rng.standard_normal((D, G * H, H)) / np.sqrt(H)).astype(np.float32)}
    ins = ["x", "W", "R"]
    if bias:
        inits["B"] = (rng.standard_normal((D, 2 * G * H)) * 0.1).astype(np.float32)
        ins.append("B")
    if h0:  # a constant initial state per direction and sequence
        ins += [""] * (4 - len(ins)) + ["", "h0"]
        inits["h0"] = (rng.standard_normal((D, batch, H)) * 0.5).astype(np.float32)
    names = [o if o in outputs else "" for o in ("Y", "Y_h", "Y_c")][:3 if op == "LSTM" else 2]
    attrs = {"hidden_size": H, "direction": direction}
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    node = helper.make_node(op, ins, names, **attrs)
    return make_model([node], {"x": [T, batch, I]}, {o: None for o in outputs}, inits)


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("T,I,H", [(3, 8, 8), (5, 12, 10), (2, 5, 20)])
def test_rnn(config, op, T, I, H):
    assert_matches(rnn_model(op, T, I, H), config)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_rnn_final_state_and_no_bias(op):
    assert_matches(rnn_model(op, 4, 8, 8, bias=False, outputs=("Y", "Y_h")), "tiny")


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("T,I,H,direction", [(3, 8, 8, "forward"), (5, 12, 10, "reverse"), (2, 5, 20, "bidirectional")])
def test_gru_linear_before_reset_0_on_the_npu(config, T, I, H, direction):
    """ONNX's default GRU (and Brainwave's): r multiplies h before R_n, a second mv_mul per timestep."""
    assert_matches(rnn_model("GRU", T, I, H, lbr=0, outputs=("Y", "Y_h"), direction=direction), config)


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("T,I,H,direction", [(3, 8, 8, "forward"), (4, 12, 10, "bidirectional")])
def test_onnx_rnn_on_the_npu(config, T, I, H, direction):
    assert_matches(rnn_model("RNN", T, I, H, outputs=("Y", "Y_h"), direction=direction), config)


def test_explicit_default_activations_as_keras_writes_them():
    m = rnn_model("LSTM", 3, 8, 8, direction="bidirectional")
    helper_attr = helper.make_attribute("activations", ["Sigmoid", "Tanh", "Tanh"] * 2)
    m.graph.node[0].attribute.append(helper_attr)
    assert_matches(m, "tiny")


def test_rnn_runs_twice_identically():
    out = assert_matches(rnn_model("LSTM", 4, 8, 8), "tiny")
    ex = out["executor"]
    x = np.random.default_rng(3).standard_normal((4, 1, 8)).astype(np.float32)
    a, _ = ex.run({"x": x})
    b, _ = ex.run({"x": x})
    assert np.array_equal(a["Y"], b["Y"])


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_rnn_single_timestep(op):
    assert_matches(rnn_model(op, 1, 8, 8, outputs=("Y", "Y_h")), "tiny")


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("kind", ["input", "constant"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_rnn_initial_state(op, kind, direction):
    T, I, H = 3, 8, 8
    D = 2 if direction == "bidirectional" else 1
    m = rnn_model(op, T, I, H, outputs=("Y", "Y_h"), direction=direction)
    rng = np.random.default_rng(5)
    node = m.graph.node[0]
    names = ["h0", "c0"] if op == "LSTM" else ["h0"]
    while len(node.input) < 5:
        node.input.append("")
    node.input.extend(names)
    from onnx import TensorProto, numpy_helper

    for nm in names:
        if kind == "input":
            m.graph.input.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, [D, 1, H]))
        else:
            m.graph.initializer.append(numpy_helper.from_array(
                rng.standard_normal((D, 1, H)).astype(np.float32), nm))
    assert_matches(m, "tiny")


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_rnn_directions(config, op, direction):
    assert_matches(rnn_model(op, 4, 12, 10, outputs=("Y", "Y_h"), direction=direction), config)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_cell_state_output_and_full_sequence_lens(direction):
    m = rnn_model("LSTM", 3, 8, 8, outputs=("Y", "Y_h", "Y_c"), direction=direction)
    from onnx import numpy_helper

    node = m.graph.node[0]
    node.input.append("lens")
    m.graph.initializer.append(numpy_helper.from_array(np.full(1, 3, np.int32), "lens"))
    assert_matches(m, "tiny")


def layers(out) -> dict:
    return {L["op"]: L for L in out["executor"].manifest["compiler"]["report"]["layers"]}


@pytest.mark.parametrize("op,direction", [("LSTM", "forward"), ("LSTM", "bidirectional"), ("RNN", "forward")])
def test_host_rnn_counts_its_macs(op, direction):
    """An LSTM or RNN with non-default activations runs on the host and its MACs count: the
    report's NPU share is that of the Gemm in front of it, not 100 %."""
    T, I, H = 5, 8, 6
    D, G = (2 if direction == "bidirectional" else 1), (4 if op == "LSTM" else 1)
    rng = np.random.default_rng(2)
    attrs = {"hidden_size": H, "direction": direction}
    attrs["activations"] = (["Sigmoid", "Relu", "Relu"] if op == "LSTM" else ["Relu"]) * D
    nodes = [helper.make_node("Gemm", ["x", "Wg"], ["g"]), helper.make_node("Reshape", ["g", "shape"], ["s"]),
             helper.make_node(op, ["s", "W", "R"], ["y"], **attrs)]
    inits = {"Wg": (rng.standard_normal((I, I)) / 3).astype(np.float32), "shape": np.array([T, 1, I], np.int64),
             "W": (rng.standard_normal((D, G * H, I)) / 3).astype(np.float32),
             "R": (rng.standard_normal((D, G * H, H)) / 3).astype(np.float32)}
    out = assert_matches(make_model(nodes, {"x": [T, I]}, {"y": None}, inits), "tiny", npu_only=False)
    report = out["executor"].manifest["compiler"]["report"]
    rnn_macs = T * D * G * H * (I + H)  # per timestep and direction: W [G*H, I] x_t and R [G*H, H] h
    assert layers(out)[op]["target"] == "host" and layers(out)[op]["macs"] == rnn_macs
    assert report["macs_host"] == rnn_macs and report["macs_npu"] == T * I * I
    assert report["npu_mac_share"] == pytest.approx(T * I * I / (T * I * I + rnn_macs))


def test_npu_lstm_counts_both_directions():
    m = rnn_model("LSTM", 4, 12, 10, outputs=("Y", "Y_h"), direction="bidirectional")
    out = assert_matches(m, "tiny")
    assert layers(out)["LSTM"]["macs"] == 4 * 2 * 4 * 10 * (12 + 10)


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("op,lbr,direction,batch", [("LSTM", 1, "forward", 3), ("GRU", 0, "forward", 2),
                                                    ("GRU", 1, "reverse", 3), ("RNN", 1, "bidirectional", 4),
                                                    ("LSTM", 1, "bidirectional", 2)])
def test_a_batch_of_sequences_on_the_npu(config, op, lbr, direction, batch):
    """B sequences share each timestep's chains (one iteration each): every sequence's Y, Y_h (and Y_c) match
    onnxruntime's, so no sequence reads another's state."""
    outputs = ("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h")
    m = rnn_model(op, 4, 12, 10, outputs=outputs, lbr=lbr, direction=direction, batch=batch)
    out = assert_matches(m, config)
    for name, ref in out["ref"].items():  # each sequence on its own (the batch axis is 1 for Y_h, 2 for Y)
        axis = 2 if name == "Y" else 1
        for b in range(batch):
            got, want = np.take(out["got"][name], b, axis), np.take(ref, b, axis)
            assert np.abs(got - want).max() <= 0.05 * np.abs(want).max(), (name, b)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_a_batch_with_a_constant_initial_state(op):
    assert_matches(rnn_model(op, 3, 8, 10, outputs=("Y", "Y_h"), batch=3, h0=True), "tiny")


def test_a_batch_reuses_each_weight_tile_across_its_sequences():
    """Batch 3 multiplies three times the MACs with the same weight tiles and pipeline fills: cycles grow
    well under 3x (one chain per sequence would take 3x), utilization rises."""
    one = assert_matches(rnn_model("LSTM", 4, 12, 10), "tiny")["stats"]
    three = assert_matches(rnn_model("LSTM", 4, 12, 10, batch=3), "tiny")["stats"]
    assert three.macs == 3 * one.macs and three.npu_cycles < 2.5 * one.npu_cycles
    assert three.utilization > one.utilization


def test_layout_1_sequences_stay_on_the_host():
    """Batch-major sequences ([B, T, I]) are not read as [T, B, I] (onnxruntime cannot run them either)."""
    from compiler import compile_report

    m = rnn_model("LSTM", 3, 8, 8)
    m.graph.node[0].attribute.append(helper.make_attribute("layout", 1))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = 1, 3
    out = m.graph.output[0].type.tensor_type.shape
    out.ClearField("dim")
    for d in (1, 3, 1, 8):  # Y [B, T, dirs, H]
        out.dim.add().dim_value = d
    layer = next(L for L in compile_report(m, config="tiny").layers if L.op == "LSTM")
    assert layer.target == "host" and "layout" in layer.reason


def _bypass(name):
    """``name`` as the pipelined design with the MVM bypass: recurrent layers split their input projections
    (compiler/ops/rnn.py, _Recurrence.split_gates) and an RNN batch interleaves its halves."""
    from npu.config import get_config

    return get_config(name).as_pipelined()


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("op, T, I, H, batch, direction", [
    ("LSTM", 5, 12, 10, 1, "forward"), ("LSTM", 4, 8, 20, 3, "bidirectional"), ("RNN", 5, 40, 40, 1, "forward"),
    ("RNN", 4, 12, 10, 4, "reverse"), ("RNN", 4, 12, 10, 3, "forward"), ("RNN", 3, 16, 20, 2, "bidirectional"),
    ("GRU", 4, 12, 10, 2, "forward")])
def test_recurrent_layers_on_the_pipelined_design_with_the_bypass(config, op, T, I, H, batch, direction):
    cfg = _bypass(config)
    model = rnn_model(op, T, I, H, outputs=("Y", "Y_h"), lbr=0, direction=direction, batch=batch,
                      h0=batch > 1 and op != "LSTM")
    assert_matches(model, cfg)


def test_the_split_lstm_has_mvm_only_chains_one_step_ahead():
    from compiler import driver
    from compiler.passes.lower import NpuSegment
    from npu.program import analyze
    from sim.timing import TimingModel

    cfg = _bypass("tiny")
    c = driver.compile_graph(rnn_model("LSTM", 5, 12, 10), cfg)
    (seg,) = [s for s in c.segments if isinstance(s, NpuSegment)]
    steps = analyze(seg.program)
    tm = TimingModel(cfg)
    assert sum(tm.bypasses(s) for s in steps) == 5  # one input projection per timestep
    plain = driver.compile_graph(rnn_model("LSTM", 5, 12, 10), cfg.replace(name="tiny-nobyp", mvm_bypass=False))
    (seg0,) = [s for s in plain.segments if isinstance(s, NpuSegment)]
    assert not any(TimingModel(cfg).bypasses(s) for s in analyze(seg0.program))


def test_a_batch_rnn_runs_sequence_by_sequence_its_projections_reading_the_queue():
    """On the bypass design an RNN batch splits each (step, sequence) into W x (an MVM-only chain reading x
    straight from the input queue: no copy chain) and R h + b + W x (tanh, writing h and the output queue)."""
    from compiler import driver
    from compiler.passes.lower import NpuSegment
    from npu.isa import Space
    from npu.program import analyze
    from sim.timing import TimingModel

    T, B = 4, 3
    cfg = _bypass("tiny")
    c = driver.compile_graph(rnn_model("RNN", T, 12, 10, batch=B), cfg)
    (seg,) = [s for s in c.segments if isinstance(s, NpuSegment)]
    tm = TimingModel(cfg)
    steps = analyze(seg.program)
    assert sum(tm.bypasses(s) for s in steps) == T * B
    chains = [s for s in seg.steps if hasattr(s, "weights")]
    projections = [s for s in chains if s.weights is not None and not s.ops]
    assert len(projections) == T * B and all(s.read.buf is None and s.read.space == Space.NETQ for s in projections)
    assert not [s for s in chains if s.weights is None and s.read.buf is None and s.read.space == Space.NETQ]


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("op, T, batch, h0", [("LSTM", 4, 2, True), ("LSTM", 2, 3, False), ("LSTM", 5, 4, False),
                                              ("RNN", 2, 3, False), ("GRU", 3, 2, False)])
def test_batches_on_the_bypass_design_with_and_without_an_initial_state(config, op, T, batch, h0):
    """A batch's split recurrences (compiler/ops/rnn.py batch_steps, sequence_steps) from a zero state (step 0's
    recurrent product skipped) and from a constant one, two steps (the first is the last but one)."""
    model = rnn_model(op, T, 12, 10, outputs=("Y", "Y_h"), lbr=0, batch=batch, h0=h0)
    assert_matches(model, _bypass(config))


@pytest.mark.parametrize("h0", [False, True])
def test_a_zero_initial_state_skips_the_first_recurrent_product(h0):
    """R h_{-1} = 0 from a zero initial state: a batch LSTM on the bypass design multiplies W x every step and R h
    from step 1 on (whole batch, the last step sequence by sequence); from a constant state at step 0 too."""
    from compiler import driver
    from compiler.passes.lower import NpuSegment

    T, B = 4, 3
    c = driver.compile_graph(rnn_model("LSTM", T, 12, 10, batch=B, h0=h0), _bypass("tiny"))
    (seg,) = [s for s in c.segments if isinstance(s, NpuSegment)]
    products = [s for s in seg.steps if getattr(s, "weights", None) is not None]
    assert len(products) == T + (T - 2) + B + (1 if h0 else 0)
    assert all(not s.ops for s in products)  # every product an MVM-only chain (the bypass)


def test_a_batch_rnn_fuses_its_product_where_that_takes_fewer_mac_rounds():
    """On small (two tile engines) one hidden tile's [W R] [x; h] takes one round against W x and R h's two, and
    the MVM, not the link, bounds it (compiler/ops/rnn.py _fused_pays): one MVM-only product per (step,
    sequence) over [x; h] (step 0 from the zero state over x only), x copied from the queue into its row."""
    from compiler import driver
    from compiler.ops.rnn import _fused_pays
    from compiler.passes.lower import NpuSegment
    from npu.isa import Space

    T, B = 4, 3
    cfg = _bypass("small")
    assert _fused_pays(cfg, 1, 1) and not _fused_pays(_bypass("tiny"), 1, 1)
    c = driver.compile_graph(rnn_model("RNN", T, 12, 10, batch=B), cfg)
    (seg,) = [s for s in c.segments if isinstance(s, NpuSegment)]
    products = [s for s in seg.steps if getattr(s, "weights", None) is not None]
    assert [s.cols for s in products] == [1] * B + [2] * (T - 1) * B and not any(s.ops for s in products)
    copies = [s for s in seg.steps if getattr(s, "weights", 0) is None and s.read.buf is None
              and s.read.space == Space.NETQ]
    assert len(copies) == T * B
