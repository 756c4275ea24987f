"""Allocation, DMA scheduling, emission and MFU stage assignment on hand-made steps."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.chain_ir import NETQ, Buffer, CapacityError, ChainOp, ChainSpec, DmaSpec, Ref, WeightChunk
from compiler.ir import EpOp
from compiler.lowering import Lowering, Shared
from compiler.passes.allocate import allocate_buffers, allocate_constants, allocate_weights
from compiler.passes.emit import emit
from compiler.passes.schedule import schedule_dma
from npu.config import get_config
from npu.isa import Space
from npu.program import Program, analyze

TINY = get_config("tiny")


def copy(src: Buffer, dst: Buffer, n: int = 4) -> ChainSpec:
    return ChainSpec(Ref(src), n, writes=[Ref(dst)])


def test_first_fit_reuses_dead_buffers_and_honours_required_spaces():
    a, b, c = Buffer("a", 4), Buffer("b", 4), Buffer("c", 4)
    d = Buffer("d", 4)
    d.require(Space.ASVRF, 1)
    steps = [ChainSpec(NETQ, 4, writes=[Ref(a)]), copy(a, b), copy(b, c), copy(c, d), ChainSpec(Ref(d), 4, writes=[Ref(None)])]
    allocate_buffers(steps, TINY, {})
    assert (a.space, a.addr, b.addr) == (Space.IVRF, 0, 4)
    assert c.addr == 0  # a is dead by then
    assert (d.space, d.mfu, d.addr) == (Space.ASVRF, 1, 0)


def test_buffers_spill_to_dram_then_fail_with_capacity_error():
    big = [Buffer(f"b{k}", 400) for k in range(3)]
    steps = [ChainSpec(NETQ, 1, writes=[Ref(b) for b in big]), ChainSpec(Ref(big[0]), 1, writes=[Ref(big[1]), Ref(big[2])])]
    allocate_buffers(steps, TINY, {})
    assert [b.space for b in big] == [Space.IVRF, Space.DRAM, Space.DRAM]
    huge = Buffer("huge", 5000)
    huge.owner = "layer"
    with pytest.raises(CapacityError, match="out of vector memory") as exc:
        allocate_buffers([ChainSpec(NETQ, 1, writes=[Ref(huge)])], TINY, {})
    assert exc.value.node == "layer"


def test_constants_sit_at_the_bottom():
    c1 = Buffer("c1", 2, const=np.zeros((2, 8)))
    c1.require(Space.ASVRF, 0)
    c2 = Buffer("c2", 3, const=np.zeros((3, 8)))
    c2.require(Space.ASVRF, 0)
    top = allocate_constants([c1, c2], TINY)
    assert (c1.addr, c2.addr) == (0, 2) and top[(int(Space.ASVRF), 0)] == 5


def test_weights_pinned_or_streamed():
    chunks = [WeightChunk(np.zeros((8, 16)), 1, 2), WeightChunk(np.zeros((8, 8)), 1, 1)]
    allocate_weights(chunks, TINY, streaming=False)
    assert [c.mrf for c in chunks] == [0, 2]
    allocate_weights(chunks, TINY, streaming=True)
    assert [c.tile for c in chunks] == [0, 2]


def test_double_buffering_order():
    chunks = [WeightChunk(np.zeros((8, 8)), 1, 1, name=f"w{k}") for k in range(4)]
    buf = Buffer("x", 1)
    steps = [ChainSpec(Ref(buf), 1, weights=c, writes=[Ref(buf)]) for c in chunks]
    out = schedule_dma(steps, TINY, streaming=True)
    kinds = [("dma", s.chunk.name, s.mrf) if isinstance(s, DmaSpec) else ("chain", s.weights.name, s.mrf_override)
             for s in out]
    assert kinds == [("dma", "w0", 0), ("dma", "w1", 32), ("chain", "w0", 0), ("dma", "w2", 0),
                     ("chain", "w1", 32), ("dma", "w3", 32), ("chain", "w2", 0), ("chain", "w3", 32)]


def test_emit_writes_registers_only_on_change_and_passes_analysis():
    a, b = Buffer("a", 8), Buffer("b", 8)
    chunk = WeightChunk(np.zeros((8, 16)), 1, 2)
    chunk.mrf = 0
    steps = [ChainSpec(NETQ, 2, (1, 4), writes=[Ref(a, 0, 0, 2)]),
             ChainSpec(Ref(a, 0, 0, 2), 1, (1, 4), 2, weights=chunk, writes=[Ref(b, 0, 0, 1)]),
             ChainSpec(Ref(b, 0, 0, 1), 1, (1, 4), ops=[ChainOp("v_relu", 1)], writes=[Ref(None)])]
    allocate_buffers(steps, TINY, {})
    instructions, regions = emit(steps, TINY)
    text = [str(i) for i in instructions]
    assert text.count("s_wr iter_inner 4") == 1 and text.count("s_wr rows 1") == 1
    analyze(Program(TINY, instructions))


def test_stage_assignment_splits_what_does_not_fit():
    lw = Lowering(None, TINY, Shared(), {}, TINY.mrf_tiles)
    groups = lw.assign([EpOp("add"), EpOp("relu"), EpOp("add"), EpOp("mul"), EpOp("sigm"), EpOp("add")])
    assert [[(op.kind, m, s) for op, m, s in g] for g in groups] == [
        [("add", 0, "addsub"), ("relu", 0, "act"), ("add", 1, "addsub"), ("mul", 1, "mul"), ("sigm", 1, "act")],
        [("add", 0, "addsub")]]
    merge = lw.assign([EpOp("merge", tensor="t")])
    assert merge[0][0][1] == TINY.n_mfus - 1  # concatenation merges always use the last MFU
