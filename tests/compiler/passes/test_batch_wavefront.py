"""Batch wavefront (compiler/passes/batch_wavefront.py): batched Gemm layers run sequence by sequence in a
wavefront on the pipelined machine, bit for bit what the whole-batch chains compute, and only where exact."""
from __future__ import annotations

import numpy as np
from onnx import helper

import compiler.passes.lower as lower
from compiler.chain_ir import Buffer, ChainSpec, Ref, WeightChunk
from compiler.passes.batch_wavefront import SKEW, wavefront_batches
from helpers import assert_matches, make_model, random_inputs, weights
from npu.modelfile import read_model

RNG = np.random.default_rng(7)


def mlp(width: int = 20, batch: int = 4, layers: int = 3):
    nodes, inits, prev = [], {}, "x"
    for k in range(layers):
        out = "y" if k == layers - 1 else f"h{k}"
        inits[f"w{k}"], inits[f"b{k}"] = weights(RNG, width, width), weights(RNG, width, scale=0.1)
        nodes.append(helper.make_node("Gemm", [prev, f"w{k}", f"b{k}"], [out], transB=1))
        if k < layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"r{k}"]))
            out = f"r{k}"
        prev = out
    return make_model(nodes, {"x": [batch, width]}, {"y": [batch, width]}, inits)


def pipelined(name="tiny"):
    from npu.config import get_config

    return get_config(name).as_pipelined()


def compile_both(model, monkeypatch, config):
    from compiler import compile_model

    on = compile_model(model, config=config)
    with monkeypatch.context() as m:
        m.setattr(lower, "wavefront_batches", lambda steps, gemms, p: steps)
        off = compile_model(model, config=config)
    return on, off


def test_an_mlp_batch_runs_sequence_by_sequence_bit_for_bit(monkeypatch):
    from runtime.executor import Executor

    model = mlp()
    on, off = compile_both(model, monkeypatch, pipelined())
    feeds = random_inputs(model, 2)
    a, sa = Executor(read_model(on)).run(feeds)
    b, sb = Executor(read_model(off)).run(feeds)
    assert np.array_equal(a["y"], b["y"])
    assert sa.npu_cycles < sb.npu_cycles  # the layers overlap across the batch
    assert_matches(model, pipelined())
    assert_matches(model, pipelined("small"))


def _chain(buf_in, buf_out, si_in, si_out, B=4, region="g", at=0):
    ch = WeightChunk(np.zeros((8, 8)), 1, 1, "w")
    return ChainSpec(Ref(buf_in, at, 0, si_in), 1, (1, B), 1, weights=ch, writes=[Ref(buf_out, 0, 0, si_out)],
                     region=region)


def test_the_wavefront_order_and_one_chain_per_sequence():
    a, h, y = Buffer("a", 4), Buffer("h", 4), Buffer("y", 4)
    steps = [_chain(a, h, 1, 1), _chain(h, y, 1, 1)]
    out = wavefront_batches(steps, {"g"}, True)
    assert [s.iters for s in out] == [(1, 1)] * 8
    order = [(0 if s.read.buf is a else 1, s.read.offset) for s in out]
    assert order == sorted(order, key=lambda jb: (jb[1] + SKEW * jb[0], -jb[0]))
    assert all(s.writes[0].offset == s.read.offset for s in out)  # sequence b reads and writes its own vector


def test_left_alone_where_not_exact_or_not_pipelined():
    a, h, y = Buffer("a", 4), Buffer("h", 4), Buffer("y", 4)
    first = [_chain(a, h, 1, 1), _chain(h, y, 0, 1)]  # the second layer reads h's first vector every iteration:
    assert len(wavefront_batches(first, {"g"}, True)) == 8  # made by sequence 0's first layer, which stays first
    last = [_chain(a, h, 1, 1), _chain(h, y, 0, 1, at=3)]  # its last vector: sequence 3's first layer makes it
    assert wavefront_batches(last, {"g"}, True) == last  # and sequence 0's second layer would read it before
    steps = [_chain(a, h, 1, 1), _chain(h, y, 1, 1)]
    assert wavefront_batches(steps, {"g"}, False) == steps  # the one-step machine
    assert wavefront_batches(steps, {"other"}, True) == steps  # not Gemm layers
    assert wavefront_batches(steps[:1], {"g"}, True) == steps[:1]  # one layer
