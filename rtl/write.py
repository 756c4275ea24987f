"""The write stage: a chain's vectors into its destinations."""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig
from npu.spaces import Space
from rtl.layout import MemoryMap
from rtl.step import ChainEnd, StepPort, address, beat_stream, check_config, check_memmap, delay, layouts_for


class WriteStage(wiring.Component):
    """Writes each beat, ``vrf_write`` cycles after it arrives, to every destination of the chain.

    A chain has up to ``write_slots`` destinations (its ``v_wr``), all written
    in the same cycle: each vector memory has one write port per slot, and
    row ``r`` of iteration ``(i, j)`` goes to ``addr + i*so + j*si + r``.  The
    output queue takes the beat when a slot names it; it cannot wait, so a
    full queue loses the beat and says so.  The chain is done when all its
    ``iterations x rows`` beats are written.

    Parameters
    ----------
    config : NpuConfig
        The architecture.
    memmap : MemoryMap
        The memories: every vector memory is written through ``write_slots`` ports of ``vrf``.

    Members
    -------
    step : In(StepPort(Layouts.chain))
        The running chain.
    beat : In(stream.Signature(Layouts.beat, always_ready=True))
        Beats from the MFU chain.
    vrf : In(Signature({"slot0": Out(MemoryMap.write_ports(every vector memory)), "slot1": ..}))
        Write ports of the vector memories, slot by slot.
    outq : Out(stream.Signature(16 * N))
        The network output queue.
    end : Out(ChainEnd)
        The chain is done; errors.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap):
        lay, vrfs = self._bind(config, memmap)
        super().__init__({
            "step": In(StepPort(lay.chain)),
            "beat": In(beat_stream(lay.beat)),
            "vrf": In(wiring.Signature({f"slot{k}": Out(memmap.write_ports(vrfs)) for k in range(config.write_slots)})),
            "outq": Out(stream.Signature(16 * config.native_dim)),
            "end": Out(ChainEnd()),
        })

    def _bind(self, config: NpuConfig, memmap: MemoryMap):
        """Check the parameters and keep them (this and the pipelined stage); the layouts and the vector memories."""
        check_config(config)
        check_memmap(memmap, config)
        self.config = config
        self.memmap = memmap
        return layouts_for(config), [name for names in memmap.vector_memories.values() for name in names]

    def _vrf_writes(self, m: Module, ex, beat, enable):
        """Drive every write slot's VRF ports from the chain descriptor ``ex`` and ``beat`` when ``enable``;
        returns the slots that name the output queue (one bit each)."""
        vaddr = layouts_for(self.config).vaddr
        to_netq = []
        for slot in range(self.config.write_slots):
            w = ex.write[slot]
            addr = Signal(vaddr, name=f"waddr{slot}")
            m.d.comb += addr.eq(address(w, beat.i, beat.j, vaddr) + beat.r)
            for space, names in self.memmap.vector_memories.items():
                for k, name in enumerate(names):
                    port = getattr(getattr(self.vrf, f"slot{slot}"), name)
                    hit = w.valid & (w.space == int(space))
                    if len(names) > 1:
                        hit = hit & (w.mfu == k)
                    m.d.comb += [port.addr.eq(addr), port.data.eq(beat.data), port.en.eq(enable & hit)]
            to_netq.append(w.valid & (w.space == int(Space.NETQ)))
        return Cat(*to_netq)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        ex, start, active = self.step.desc, self.step.start, self.step.active
        imm = layouts_for(c).imm
        valid, beat = delay(m, self.beat.valid, self.beat.payload, c.latencies.vrf_write - 1, "wdelay")
        iters, total, written = Signal(2 * imm), Signal(3 * imm), Signal(3 * imm)
        m.d.comb += [iters.eq(ex.io * ex.ii), total.eq(iters * ex.rows)]
        with m.If(start):
            m.d.sync += written.eq(0)
        with m.Elif(valid):
            m.d.sync += written.eq(written + 1)
        netq = self._vrf_writes(m, ex, beat, valid & active)
        m.d.comb += [self.outq.payload.eq(beat.data), self.outq.valid.eq(valid & active & netq.any()),
                     self.end.overflow.eq(self.outq.valid & ~self.outq.ready),
                     self.end.unsupported.eq(active & ~start & (netq & (netq - 1)).any()),
                     self.end.done.eq(active & ~start & (written == total))]
        return m


class PipelinedWriteStage(WriteStage):
    """The write stage of the pipelined machine: each beat goes to the destinations of its chain (by its
    tag); chains complete in order (their beats never meet), so one count of vectors written serves the
    oldest chain in flight (``head``), and ``completing`` marks the cycle its last vector is written.

    Members: ``descs`` (the chain table), ``head`` (In(tag)), ``completing``, ``overflow``, ``unsupported``
    (Out(1)); ``beat``, ``vrf``, ``outq`` as WriteStage's.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap):
        lay, vrfs = self._bind(config, memmap)
        wiring.Component.__init__(self, {
            "descs": In(data.ArrayLayout(lay.chain, config.scoreboard_entries)),
            "head": In(lay.tag),
            "beat": In(beat_stream(lay.beat)),
            "vrf": In(wiring.Signature({f"slot{k}": Out(memmap.write_ports(vrfs)) for k in range(config.write_slots)})),
            "outq": Out(stream.Signature(16 * config.native_dim)),
            "completing": Out(1),
            "overflow": Out(1),
            "unsupported": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        imm = layouts_for(c).imm
        valid, beat = delay(m, self.beat.valid, self.beat.payload, c.latencies.vrf_write - 1, "wdelay")
        ex = self.descs[beat.tag]
        hd = self.descs[self.head]
        total, written = Signal(3 * imm), Signal(3 * imm)
        m.d.comb += total.eq(hd.io * hd.ii * hd.rows)
        m.d.comb += self.completing.eq(valid & (written + 1 == total))
        with m.If(self.completing):
            m.d.sync += written.eq(0)
        with m.Elif(valid):
            m.d.sync += written.eq(written + 1)
        netq = self._vrf_writes(m, ex, beat, valid)
        m.d.comb += [self.outq.payload.eq(beat.data), self.outq.valid.eq(valid & netq.any()),
                     self.overflow.eq(self.outq.valid & ~self.outq.ready),
                     self.unsupported.eq(valid & (netq & (netq - 1)).any())]
        return m
