"""The NPU, generated for any :class:`npu.config.NpuConfig`: its memories, and its components wired together.

With ``scoreboard_entries = mvm_row_slots = 1`` one step (a chain or a DMA transfer) runs at a time, as
sim/timing.py models it; with more scoreboard entries the pipelined machine of docs/pipeline.md runs
(:meth:`Npu._pipelined`: the issue unit of rtl/issue.py and the tagged components).
The components of the one-step machine, each a ``wiring.Component`` in a module of its own:

* :class:`rtl.frontend.FrontEnd` -- pc, the scalar registers, the chain being
  decoded, the queue of step descriptors.
* :class:`rtl.executor.Executor` -- the run flag, cycle count and error bits;
  the running step and its first-cycle strobe: which step runs, and when the
  run ends.
* :class:`rtl.readseq.ReadSequencer` -- the two-level hardware loop, window and
  slot counters, input-queue credit, the request delay line, the read data.
* :class:`rtl.mvm.Mvm` -- BFP conversion, the circular input buffer, the
  exponent ring, the MAC sequencer, N row units, the output delay.
* :class:`rtl.mfu.MfuChain` -- the stages of every MFU (:class:`rtl.mfu.MfuStage`).
* :class:`rtl.write.WriteStage` -- the write ports' addresses and enables, the
  count of vectors written.
* :class:`rtl.dma.Dma` -- the transfer's counters, DRAM credit, completion delay.

:class:`Npu` itself holds every memory of :class:`rtl.layout.MemoryMap` with
its load port, and the network input and output queues.

The front end queues step descriptors (:mod:`rtl.step`) for the executor,
which hands the running step to the components through a
:class:`rtl.step.StepPort` each.  A chain's vectors flow read sequencer ->
MVM -> MFU chain -> write stage as beats on always-ready streams; the read
sequencer asks the MVM for buffer room through a :class:`rtl.step.BufferCredit`
and the write stage reports the chain's end (:class:`rtl.step.ChainEnd`).
The components reach the memories through ports of
:meth:`rtl.layout.MemoryMap.read_ports` and ``write_ports`` signatures.

The bench talks to the NPU through its signature only: ``start``,
``prog_len``, ``busy``, ``cycles``, ``error``, the load port (``ld_*``) that
writes or reads back any memory of :class:`rtl.layout.MemoryMap`, the network
input and output queues (``amaranth.lib.stream`` interfaces) and a ``commit``
pulse with the end pc of every completed step.
"""
from __future__ import annotations

from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig
from npu.errors import ConfigError
from rtl.dma import Dma
from rtl.executor import Executor
from rtl.frontend import FrontEnd
from rtl.issue import IssueUnit
from rtl.layout import MAX_WORD_BITS, MemoryMap
from rtl.link import Link
from rtl.mfu import MfuChain, PipelinedMfuChain
from rtl.mvm import Mvm, PipelinedMvm
from rtl.readseq import PipelinedReadSequencer, ReadSequencer
from rtl.step import check_config, check_positive
from rtl.units import make_units
from rtl.write import PipelinedWriteStage, WriteStage


class Npu(wiring.Component):
    """One NPU instance.

    Parameters
    ----------
    config : NpuConfig
        The architecture; every width, depth, format and latency comes from it.
    program_depth : int
        Instruction words the program memory holds.
    queue_depth : int
        Native vectors the input and output queue FIFOs hold.
    max_word_bits : int
        The widest memory word: weight tile words wider than this are stored
        by rows in several memories (:class:`rtl.layout.MemoryMap`).

    Members
    -------
    start : In(1)          pulse: run the loaded program from pc 0 (scalar registers reset)
    prog_len : In          instructions in the program
    busy : Out(1)          high while the program runs
    cycles : Out(32)       cycles since the last start (stops when the program completes)
    error : Out(2)         rtl.executor.ERR_UNSUPPORTED | ERR_OVERFLOW, sticky until start
    ld_sel, ld_addr, ld_data, ld_we : In   load port: write word ld_addr of memory ld_sel
    ld_rdata : Out         load port read data (memory ld_sel, word ld_addr, one cycle later)
    inq : In(stream.Signature(16 * N))   network input queue (native vectors of fp16)
    outq : Out(stream.Signature(16 * N)) network output queue
    commit : Out(1), commit_pc : Out     a step completed; the pc of its last instruction
    """

    def __init__(self, config: NpuConfig, *, program_depth: int = 4096, queue_depth: int = 512,
                 max_word_bits: int = MAX_WORD_BITS):
        check_config(config)
        for name, value in (("program_depth", program_depth), ("queue_depth", queue_depth),
                            ("max_word_bits", max_word_bits)):
            check_positive(name, value)
        if config.vrf_ports != 1:
            raise ConfigError("vrf_ports", f"the RTL implements one vector per cycle per VRF port, not {config.vrf_ports}")
        lanes, block = config.dpe_lanes, config.block
        if lanes % block and block % lanes:
            raise ConfigError("dpe_lanes", f"the RTL needs lanes ({lanes}) and the BFP block ({block}) to divide "
                                           "one another")
        lat = config.latencies
        for name in ("vrf_read", "mfu_stage", "vrf_write"):
            if getattr(lat, name) < 1:
                raise ConfigError(f"latencies.{name}", f"the RTL needs at least 1 cycle, not {getattr(lat, name)}")
        if lat.mvm + lat.mvm_reduce < 2:
            raise ConfigError("latencies.mvm", "the RTL needs mvm + mvm_reduce >= 2 cycles")
        if config.dram_latency < 1 or config.netq_latency < 1:
            raise ConfigError("dram_latency", "the RTL needs DRAM and queue latencies of at least 1 cycle")
        self.config = config
        self.program_depth = program_depth
        self.queue_depth = queue_depth
        self.mvm_buffer = config.mvm_buffer
        self.memmap = MemoryMap(config, program_depth, max_word_bits)
        #: the repeated datapath units (rtl/units.py), by Verilog module name; instantiated, not inlined
        self.units = make_units(config, self.memmap)
        n = config.native_dim
        super().__init__({
            "start": In(1),
            "prog_len": In(range(program_depth + 1)),
            "busy": Out(1),
            "cycles": Out(32),
            "error": Out(2),
            "ld_sel": In(range(len(self.memmap.memories))),
            "ld_addr": In(self.memmap.addr_bits),
            "ld_data": In(self.memmap.data_bits),
            "ld_we": In(1),
            "ld_rdata": Out(self.memmap.data_bits),
            "inq": In(stream.Signature(16 * n)),
            "outq": Out(stream.Signature(16 * n)),
            "commit": Out(1),
            "commit_pc": Out(range(program_depth)),
            # the pipelined machine: a transfer may complete in the cycle a chain does
            **({"dma_commit": Out(1), "dma_commit_pc": Out(range(program_depth))} if config.pipelined else {}),
            # the MVM bypass: a bypass chain may complete in the cycle another chain and a transfer do
            **({"byp_commit": Out(1), "byp_commit_pc": Out(range(program_depth))} if config.mvm_bypass else {}),
        })

    def elaborate(self, platform):
        m = Module()
        c, mm = self.config, self.memmap
        # The load port's write port is each memory's first, so it is created before the components' ports.
        mems = self._memories(m)
        m.submodules.inq = inq = fifo.SyncFIFOBuffered(width=16 * c.native_dim, depth=self.queue_depth)
        m.submodules.outq = outq = fifo.SyncFIFOBuffered(width=16 * c.native_dim, depth=self.queue_depth)
        wiring.connect(m, wiring.flipped(self.inq), inq.w_stream)
        wiring.connect(m, outq.r_stream, wiring.flipped(self.outq))

        if c.pipelined:
            self._pipelined(m, mems, inq, outq)
            return m
        m.submodules.executor = ex = Executor(config=c, program_depth=self.program_depth)
        m.submodules.frontend = fe = FrontEnd(config=c, memmap=mm)
        m.submodules.readseq = rs = ReadSequencer(config=c, memmap=mm, queue_depth=self.queue_depth)
        m.submodules.mvm = mvm = Mvm(config=c, memmap=mm, units=self.units)
        m.submodules.mfu = mfu = MfuChain(config=c, memmap=mm, units=self.units)
        m.submodules.write = wr = WriteStage(config=c, memmap=mm)
        m.submodules.dma = dma = Dma(config=c, memmap=mm)

        # control: the bench's ports, the front end, the step ports
        m.d.comb += [ex.start.eq(self.start), self.busy.eq(ex.running), self.cycles.eq(ex.cycles),
                     self.error.eq(ex.error), self.commit.eq(ex.commit), self.commit_pc.eq(ex.commit_pc),
                     fe.prog_len.eq(self.prog_len), ex.dma_done.eq(dma.done)]
        wiring.connect(m, ex.fetch, fe.run)
        wiring.connect(m, fe.steps, ex.steps)
        for port, component in ((ex.read, rs), (ex.mvm, mvm), (ex.mfu, mfu), (ex.write, wr), (ex.dma, dma)):
            wiring.connect(m, port, component.step)
        wiring.connect(m, wr.end, ex.chain_end)

        # a chain's datapath
        m.d.comb += rs.inq_level.eq(inq.level)
        wiring.connect(m, inq.r_stream, rs.inq)
        wiring.connect(m, rs.mvm, mvm.credit)
        wiring.connect(m, rs.vec, mvm.vec)
        wiring.connect(m, mvm.beat, mfu.i)
        wiring.connect(m, mfu.o, wr.beat)
        wiring.connect(m, wr.outq, outq.w_stream)

        self._memory_ports(m, mems, fe, rs, mvm, mfu, wr, dma)
        return m

    def _memory_ports(self, m, mems, fe, rs, mvm, mfu, wr, dma, byp=None) -> None:
        """The components' memory ports (either machine's): the program, the read ports, then the write ports
        (``byp``: the bypass write stage's, after the DMA's)."""
        wiring.connect(m, fe.prog, mems["prog"].read_port(domain="comb"))
        for ports in (rs.vrf, mvm.mrf, mfu.vrf, dma.read):
            _connect(m, ports, lambda name: mems[name].read_port(domain="comb"))
        # a memory's write ports in slot order: a later port wins when two write one address (the scoreboard
        # keeps the chains in flight on disjoint write intervals, so with the bypass two never do)
        slots = range(self.config.write_slots)
        extra = [] if byp is None else [getattr(byp.vrf, f"slot{k}") for k in slots]
        for ports in [getattr(wr.vrf, f"slot{k}") for k in slots] + [dma.write] + extra:
            _connect(m, ports, lambda name: mems[name].write_port())

    def _pipelined(self, m, mems, inq, outq):
        """The pipelined machine (docs/pipeline.md): the issue unit instead of the executor; the chain table
        to every component a beat passes; the DMA engine beside the chains; the network link
        (rtl/link.py) between the queue FIFOs the bench sees and the chains."""
        c, mm = self.config, self.memmap
        m.submodules.issue = iu = IssueUnit(config=c, program_depth=self.program_depth)
        m.submodules.frontend = fe = FrontEnd(config=c, memmap=mm)
        m.submodules.readseq = rs = PipelinedReadSequencer(config=c, memmap=mm, queue_depth=self.queue_depth)
        m.submodules.mvm = mvm = PipelinedMvm(config=c, memmap=mm, units=self.units)
        m.submodules.mfu = mfu = PipelinedMfuChain(config=c, memmap=mm, units=self.units)
        m.submodules.write = wr = PipelinedWriteStage(config=c, memmap=mm)
        m.submodules.dma = dma = Dma(config=c, memmap=mm)
        m.submodules.link = link = Link(config=c)

        m.d.comb += [iu.start.eq(self.start), self.busy.eq(iu.running), self.cycles.eq(iu.cycles),
                     self.error.eq(iu.error), self.commit.eq(iu.commit), self.commit_pc.eq(iu.commit_pc),
                     self.dma_commit.eq(iu.dma_commit), self.dma_commit_pc.eq(iu.dma_commit_pc),
                     fe.prog_len.eq(self.prog_len)]
        wiring.connect(m, iu.fetch, fe.run)
        wiring.connect(m, fe.steps, iu.steps)
        # the read sequencer
        m.d.comb += [rs.desc.eq(iu.rd_desc), rs.tag.eq(iu.rd_tag), rs.start.eq(iu.rd_start),
                     iu.rd_issue.eq(rs.issue), iu.rd_iter_end.eq(rs.iter_end), iu.rd_first_iter.eq(rs.first_iter),
                     iu.rd_chain_end.eq(rs.chain_end), rs.inq_level.eq(inq.level)]
        wiring.connect(m, inq.r_stream, rs.inq)
        # the network link: it paces the input queue and drains the output FIFO into the output queue
        m.d.comb += [link.start.eq(self.start), link.running.eq(iu.running), link.in_take.eq(rs.in_take),
                     rs.link_in.eq(link.in_ready), link.reserve.eq(rs.out_reserve), rs.out_free.eq(link.free),
                     iu.link_busy.eq(link.busy)]
        # the MVM, the MFUs, the write stage
        m.d.comb += [mvm.descs.eq(iu.descs), mvm.behind.eq(iu.behind), mvm.now.eq(iu.now),
                     rs.free.eq(mvm.free), mvm.reserve.eq(rs.reserve), mvm.reserve_n.eq(rs.reserve_n),
                     mfu.descs.eq(iu.descs), wr.descs.eq(iu.descs), wr.head.eq(iu.wr_head),
                     iu.wr_completing.eq(wr.completing), iu.overflow.eq(wr.overflow | link.overflow),
                     iu.unsupported.eq(wr.unsupported)]
        wiring.connect(m, rs.vec, mvm.vec)
        wiring.connect(m, mvm.beat, mfu.i)
        wiring.connect(m, mfu.o, wr.beat)
        wiring.connect(m, wr.outq, link.w)
        wiring.connect(m, link.o, outq.w_stream)
        # the DMA engine
        wiring.connect(m, iu.dma, dma.step)
        m.d.comb += iu.dma_ending.eq(dma.ending)
        byp = None
        if c.mvm_bypass:  # the bypass write stage: MVM-only chains' rows, straight from the MVM (unit 11)
            m.submodules.bypass = byp = PipelinedWriteStage(config=c, memmap=mm)
            m.d.comb += [mvm.byp.eq(iu.byp), byp.descs.eq(iu.descs), byp.head.eq(iu.byp_head),
                         iu.byp_completing.eq(byp.completing), self.byp_commit.eq(iu.byp_commit),
                         self.byp_commit_pc.eq(iu.byp_commit_pc)]
            wiring.connect(m, mvm.bypass, byp.beat)
        self._memory_ports(m, mems, fe, rs, mvm, mfu, wr, dma, byp)

    def _memories(self, m) -> dict[str, memory.Memory]:
        """Every memory of the map, with the load port: write port and a registered read port on each."""
        mems, ld_read = {}, []
        for info in self.memmap.memories:
            mem = memory.Memory(shape=unsigned(info.width), depth=info.depth, init=[])
            m.submodules[f"mem_{info.name}"] = mems[info.name] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.ld_addr), wp.data.eq(self.ld_data),
                         wp.en.eq(self.ld_we & (self.ld_sel == info.id))]
            rp = mem.read_port()
            m.d.comb += rp.addr.eq(self.ld_addr)
            ld_read.append(rp.data)
        sel = Signal.like(self.ld_sel)
        m.d.sync += sel.eq(self.ld_sel)
        m.d.comb += self.ld_rdata.eq(Array(ld_read)[sel])
        return mems


def _connect(m, ports, port_of):
    """Joins each member of a component's memory ports (named by memory) to ``port_of(memory name)``."""
    for name in ports.signature.members:
        wiring.connect(m, getattr(ports, name), port_of(name))
