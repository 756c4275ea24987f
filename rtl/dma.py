"""The DMA engine: weight tiles between the weight region of DRAM and the MRF banks."""
from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig
from rtl.layout import MemoryMap
from rtl.step import StepPort, check_config, check_memmap, layouts_for


class Dma(wiring.Component):
    """Copies ``count`` weight tiles (``m_rd``: DRAM to MRF; ``m_wr``: MRF to DRAM).

    One tile word moves per cycle, every part of it at once (rtl/layout.py),
    MRF tile ``a`` in bank ``a % tile_engines``.  The transfer holds the DRAM
    for ``count x tile bytes / bandwidth`` cycles (at least as long as the
    copy) and completes ``dram_latency`` cycles after that.

    Parameters
    ----------
    config : NpuConfig
        The architecture.
    memmap : MemoryMap
        The memories: every part of the weight DRAM and of each MRF bank is read and written through
        ``read`` and ``write``.

    Members
    -------
    step : In(StepPort(Layouts.dma))
        The running transfer.
    done : Out(1)
        The transfer completes in this cycle.
    ending : Out(1)
        The transfer's last cycle: it completes in the next (the pipelined machine's issue unit frees the
        DMA engine and the transfer's scoreboard entry for a step whose first cycle is the completion's).
    read : In(MemoryMap.read_ports(every tile memory))
        Read ports of the weight DRAM's and the MRF banks' parts.
    write : In(MemoryMap.write_ports(every tile memory))
        Write ports of the same.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap):
        check_config(config)
        check_memmap(memmap, config)
        self.config = config
        self.memmap = memmap
        parts = range(memmap.tile_parts)
        self._wdram = [memmap.tile_memory("wdram", p) for p in parts]
        self._banks = [[memmap.tile_memory(f"mrf{b}", p) for b in range(config.tile_engines)] for p in parts]
        names = self._wdram + [name for bank in self._banks for name in bank]
        super().__init__({
            "step": In(StepPort(layouts_for(config).dma)),
            "done": Out(1),
            "ending": Out(1),
            "read": In(memmap.read_ports(names)),
            "write": In(memmap.write_ports(names)),
        })

    def elaborate(self, platform):
        m = Module()
        c, mm = self.config, self.memmap
        ex, start = self.step.desc, self.step.start
        T, cpt = c.tile_engines, mm.cpt
        live = self.step.active & ~start  # from the cycle after the step's first until it completes
        need, credit = Signal(32), Signal(32)  # bytes to move; bytes the DRAM has moved so far
        q, g = Signal(16), Signal(range(max(cpt, 2)))  # tile, word within it
        tail = Signal(range(c.dram_latency + 2))
        copying, moved = Signal(), Signal()
        m.d.comb += [need.eq(ex.count * c.tile_bytes), copying.eq(live & (q < ex.count)),
                     moved.eq(live & (credit >= need))]
        with m.If(start):
            m.d.sync += [credit.eq(0), q.eq(0), g.eq(0), tail.eq(0)]
        with m.If(copying):
            with m.If(g == cpt - 1):
                m.d.sync += [g.eq(0), q.eq(q + 1)]
            with m.Else():
                m.d.sync += g.eq(g + 1)
        with m.If(live & ~moved):
            m.d.sync += credit.eq(credit + c.dram_bytes_per_cycle)
        with m.If(moved & ~copying):
            m.d.sync += tail.eq(tail + 1)
        m.d.comb += self.done.eq(moved & ~copying & (tail == c.dram_latency - 1))
        # the same completion, counted down from the first cycle: max(transfer, copy) + dram_latency cycles
        left = Signal(48)
        duration = Signal(48)
        transfer = (need + (c.dram_bytes_per_cycle - 1)) // c.dram_bytes_per_cycle
        copy = ex.count * cpt
        m.d.comb += duration.eq(Mux(transfer > copy, transfer, copy) + c.dram_latency)
        with m.If(start):
            m.d.sync += left.eq(duration - 1)
        with m.Elif(live & (left != 0)):
            m.d.sync += left.eq(left - 1)
        m.d.comb += self.ending.eq(live & (left == 1))

        dram_word, mrf_word = Signal(mm.addr_bits + 8), Signal(mm.addr_bits + 8)
        mrf_tile, bank = Signal(16), Signal(range(max(T, 2)))
        m.d.comb += [dram_word.eq((ex.tile + q) * cpt + g), mrf_tile.eq(ex.mrf + q),
                     bank.eq(mrf_tile % T if T > 1 else 0),
                     mrf_word.eq((mrf_tile // T if T > 1 else mrf_tile) * cpt + g)]
        for wdram, banks in zip(self._wdram, self._banks):  # every part of a tile word moves in the same cycle
            wd_r, wd_w = getattr(self.read, wdram), getattr(self.write, wdram)
            m.d.comb += [wd_r.addr.eq(dram_word), wd_w.addr.eq(dram_word)]
            bank_data = []
            for b, name in enumerate(banks):
                rp, wp = getattr(self.read, name), getattr(self.write, name)
                m.d.comb += [rp.addr.eq(mrf_word), wp.addr.eq(mrf_word), wp.data.eq(wd_r.data),
                             wp.en.eq(copying & ex.to_mrf & (bank == b))]
                bank_data.append(rp.data)
            m.d.comb += [wd_w.data.eq(Array(bank_data)[bank]), wd_w.en.eq(copying & ~ex.to_mrf)]
        return m
