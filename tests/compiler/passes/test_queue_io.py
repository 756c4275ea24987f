"""Queue streaming (compiler/passes/queue_io.py): the queue copies fold into the chains that use them only where
the values and the queue order stay exactly the same."""
from __future__ import annotations

import numpy as np
from onnx import helper

import compiler.passes.lower as lower
from helpers import assert_matches, make_model, random_inputs, weights
from npu.asm import disassemble
from npu.modelfile import read_model

RNG = np.random.default_rng(5)


def two_gemms(width: int = 40, batch: int = 3):
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)]
    inits = {"w1": weights(RNG, width, width), "b1": weights(RNG, width, scale=0.1), "w2": weights(RNG, 24, width)}
    return make_model(nodes, {"x": [batch, width]}, {"y": [batch, 24]}, inits)


def program_text(data: bytes) -> list[str]:
    mf = read_model(data)
    seg = next(s for s in mf.manifest["plan"] if s["kind"] == "npu")
    return disassemble(mf.program(seg["program"]).instructions).splitlines()


def chains(lines: list[str]) -> list[list[str]]:
    out, cur = [], []
    for line in lines:
        cur.append(line.split()[0] + (" " + line.split()[1] if line.startswith(("v_rd", "v_wr")) else ""))
        if line.startswith("end_chain"):
            out.append(cur)
            cur = []
    return out


def compile_both(model, monkeypatch, config="tiny"):
    """The model compiled with the pass and without it (the copies stay): the fused program must give the
    unfused one's outputs bit for bit."""
    from compiler import compile_model

    fused = compile_model(model, config=config)
    with monkeypatch.context() as m:
        m.setattr(lower, "stream_queues", lambda steps: steps)
        plain = compile_model(model, config=config)
    return fused, plain


def test_the_first_layer_reads_the_queue_and_the_last_writes_it(monkeypatch):
    from runtime.executor import Executor

    model = two_gemms()
    fused, plain = compile_both(model, monkeypatch)
    cf, cp = chains(program_text(fused)), chains(program_text(plain))
    assert len(cf) == len(cp) - 2  # both copies gone
    assert "v_rd netq" in cf[0] and "mv_mul" in cf[0]
    assert "v_wr netq" in cf[-1] and "mv_mul" in cf[-1]
    feeds = random_inputs(model, 1)
    a, sa = Executor(read_model(fused)).run(feeds)
    b, sb = Executor(read_model(plain)).run(feeds)
    assert np.array_equal(a["y"], b["y"])  # the same values travel, through the queue instead of a copy
    assert sa.npu_cycles < sb.npu_cycles
    assert_matches(model)


def test_an_input_read_by_two_layers_keeps_its_copy(monkeypatch):
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["a"], transB=1), helper.make_node("Gemm", ["x", "w2"], ["b"], transB=1),
             helper.make_node("Add", ["a", "b"], ["y"])]
    model = make_model(nodes, {"x": [2, 32]}, {"y": [2, 16]},
                       {"w1": weights(RNG, 16, 32), "w2": weights(RNG, 16, 32)})
    fused, plain = compile_both(model, monkeypatch)
    first = chains(program_text(fused))[0]
    assert "v_rd netq" in first and "mv_mul" not in first  # the copy
    assert_matches(model)


def test_an_output_also_used_inside_the_segment_keeps_its_copy(monkeypatch):
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y2"]),
             helper.make_node("Gemm", ["y2", "w2"], ["y"], transB=1)]
    model = make_model(nodes, {"x": [2, 32]}, {"y": [2, 16], "y2": [2, 32]},
                       {"w1": weights(RNG, 32, 32), "w2": weights(RNG, 16, 32)})
    fused, _ = compile_both(model, monkeypatch)
    writers = [c for c in chains(program_text(fused)) if "v_wr netq" in c]
    assert len(writers) == 2 and any("mv_mul" not in c for c in writers)  # y2 still leaves through a copy
    assert_matches(model)


def test_an_rnn_reads_its_sequence_from_the_queue(monkeypatch):
    """The recurrence's [x_t; h] rows are filled straight from the queue: fewer copies, the same bits."""
    from compiler.zoo import build
    from runtime.executor import Executor

    model = build("tiny_rnn", seed=3)
    fused, plain = compile_both(model, monkeypatch)
    assert len(chains(program_text(fused))) < len(chains(program_text(plain)))
    feeds = random_inputs(model, 2)
    a, sa = Executor(read_model(fused)).run(feeds)
    b, sb = Executor(read_model(plain)).run(feeds)
    assert all(np.array_equal(a[k], b[k]) for k in b) and sa.npu_cycles < sb.npu_cycles


def test_a_recurrent_layer_takes_each_timestep_from_the_queue_and_sends_each_h(monkeypatch):
    """An LSTM's sequence arrives timestep by timestep: x_t is read from the queue by its own chain just before
    step t needs it, and h_t leaves by the chain that makes it, so on the pipelined machine (queue FIFOs beside
    compute) the recurrence overlaps the transfers. The same bits as with the copies."""
    from runtime.executor import Executor

    T, I, H = 6, 16, 16
    w, r = weights(RNG, 1, 4 * H, I, scale=0.3), weights(RNG, 1, 4 * H, H, scale=0.3)
    model = make_model([helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=H)],
                       {"x": [T, 1, I]}, {"y": [T, 1, 1, H]}, {"w": w, "r": r})
    fused, plain = compile_both(model, monkeypatch)
    cf = chains(program_text(fused))
    readers = [k for k, c in enumerate(cf) if "v_rd netq" in c]
    writers = [k for k, c in enumerate(cf) if "v_wr netq" in c]
    gates = [k for k, c in enumerate(cf) if "mv_mul" in c]
    assert len(readers) == len(writers) == len(gates) == T
    # x_0 before the first gate chain, x_{t+1} right after step t's gate chain; h_t written by step t
    assert readers[0] < gates[0] and all(gates[t] < readers[t + 1] < gates[t + 1] for t in range(T - 1))
    assert all(gates[t] < writers[t] < gates[t + 1] for t in range(T - 1))
    feeds = random_inputs(model, 4)
    a, _ = Executor(read_model(fused)).run(feeds)
    b, _ = Executor(read_model(plain)).run(feeds)
    assert np.array_equal(a["y"], b["y"])
    assert_matches(model)
