"""The network link of the pipelined machine: it fills the input FIFO and drains the output FIFO at its rate."""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig
from npu.spaces import Space
from rtl.step import check_config, layouts_for


class Link(wiring.Component):
    """The network link beside compute (docs/pipeline.md, "The network queues"), ``P = port_cost(NETQ)``
    cycles a vector each way, counted from the run's first cycle (cycle 0, the one after ``start``).

    Input: the bench presents the whole input at once in the input queue FIFO (``rtl/npu.py``); the link
    paces it.  Input vector ``k`` of the run has arrived from cycle ``(k + 1) * P`` on: ``in_ready`` says that
    a vector has arrived which no read has taken (``in_take``, one per queue read issued).

    Output: the write stage writes into a FIFO of ``config.netq_fifo`` vectors (``w``).  Its writes never
    find it full: a chain reserves room (``reserve``, vectors) when it reads, and ``free`` is what no
    reservation holds.  The link takes the FIFO's head in cycle ``S`` (at the earliest the cycle after it was
    written, and ``P`` cycles after the previous take), frees its room then, and hands it to the bench's
    output queue (``o``) in cycle ``S + P``, when it is sent; it is ``busy`` until then (``S + P`` counts as a
    step's completion cycle does: the run ends ``drain`` cycles after the last).

    Members
    -------
    start : In(1), running : In(1)
        A new run starts (everything clears); the run is on.
    in_take : In(1), in_ready : Out(1)
        A queue read issues; an arrived vector is not yet taken.
    reserve : In(imm), free : Out(range(netq_fifo + 1))
        Output-FIFO room reserved in this cycle; room no reservation holds.
    w : In(stream.Signature(16 * N))
        The write stage's queue writes.
    o : Out(stream.Signature(16 * N))
        Vectors the link has sent, to the bench's output queue.
    overflow : Out(1)
        The bench's output queue could not take a sent vector.
    busy : Out(1)
        Vectors in the output FIFO or on the link.
    """

    def __init__(self, *, config: NpuConfig):
        check_config(config)
        self.config = config
        n = 16 * config.native_dim
        super().__init__({
            "start": In(1),
            "running": In(1),
            "in_take": In(1),
            "in_ready": Out(1),
            "reserve": In(layouts_for(config).imm),
            "free": Out(range(config.netq_fifo + 1)),
            "w": In(stream.Signature(n)),
            "o": Out(stream.Signature(n)),
            "overflow": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        P, D = c.port_cost(Space.NETQ), c.netq_fifo
        # input: vectors arrived and not taken (phase counts the cycles of the vector on the link)
        phase = Signal(range(P))
        arrived = Signal(32)
        tick = Signal()
        m.d.comb += [tick.eq(self.running & (phase == P - 1)), self.in_ready.eq(arrived != 0)]
        with m.If(self.running):
            m.d.sync += phase.eq(phase + 1 if P > 1 else 0)
            with m.If(tick):
                m.d.sync += phase.eq(0)
        m.d.sync += arrived.eq(arrived + tick - self.in_take)
        # output: the FIFO, the room reservations hold, the vector on the link and its cycles left
        m.submodules.fifo = q = fifo.SyncFIFO(width=16 * c.native_dim, depth=D)
        held = Signal(range(D + 1))
        left = Signal(range(P + 1))
        data = Signal(16 * c.native_dim)
        take = Signal()
        m.d.comb += [q.w_data.eq(self.w.payload), q.w_en.eq(self.w.valid), self.w.ready.eq(q.w_rdy),
                     take.eq(q.r_rdy & (left <= 1)), q.r_en.eq(take), self.free.eq(D - held),
                     self.o.valid.eq(left == 1), self.o.payload.eq(data), self.overflow.eq(self.o.valid & ~self.o.ready),
                     self.busy.eq(q.r_rdy | (left != 0))]
        m.d.sync += held.eq(held + self.reserve - take)
        with m.If(take):
            m.d.sync += [left.eq(P), data.eq(q.r_data)]
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
        with m.If(self.start):
            m.d.sync += [phase.eq(0), arrived.eq(0), held.eq(0), left.eq(0)]
        return m
