"""The FPGA shell: the unchanged NPU core (rtl/npu.py) behind an AXI4-Lite slave, with an interrupt.

The host sees 32-bit registers (the table of :mod:`npu.hostregs`: control, status, program length, a 64-bit cycle
counter, the step count, an ID and the configuration fingerprint) and a staging window through which it loads
and reads back every memory of :class:`rtl.layout.MemoryMap` (the program memory is memory 0) and pushes and
pops the network queues: the core's load port and queue streams, driven by ``LD_CMD`` commands.  ``irq`` is
high while an enabled cause of ``IRQ_STATUS`` (the program completed, an error bit rose) is set; the host
clears it by writing 1 to the cause.

The AXI4-Lite slave takes one write and one read at a time: ``AWREADY``/``WREADY`` fall once the address or the
data of a write has been taken and rise again after its response; a write's response (``BVALID``) comes when
the register is written or the ``LD_CMD`` command is done (a ``READ`` takes one cycle more, a ``PUSH`` waits for
room in the input queue, a ``POP`` for a vector in the output queue); a read's data comes the cycle after its
address.  ``BRESP``/``RRESP`` are always OKAY, ``WSTRB`` and ``AxPROT`` are ignored (writes are whole words) and
an unmapped address reads 0.  The interface is ``s_axil_*`` (cocotbext-axi's naming).

The bulk loader (``DMA_ADDR``, ``DMA_COUNT``, ``DMA_CTRL``) moves blocks of words between external memory and the
memories over an AXI4 master (``m_axi_*``, :data:`AXI_SIGNALS`): per word, one INCR burst of
``npu.hostregs.bus_beats(width)`` beats (several of at most 256 for wider words) at ``DMA_ADDR + k *
word_stride(width)``, through the staging buffer and the load port, one burst outstanding at a time.  It serves
the host's loads and read-backs; the core's own weight and vector DRAM stay on-chip arrays with the fixed timing
of rtl/dma.py (the cycle-exact contract with the simulator is for those).

The core's timing is untouched: ``CTRL.START`` drives the core's ``start`` for one cycle, so ``CYCLES`` is the
core's cycle count, equal to the simulator's.  Besides the host interface the shell passes the core's commit
trace (``commit``, ``commit_pc``, ``cycles``; ``dma_commit*`` on the pipelined machine) out as a debug port for
the test bench, which compares every step's completion cycle; a system leaves it unconnected.

:func:`write_shell_verilog` writes ``npu_shell.v`` (the units of rtl/units.py, then the shell with the core
inside) for rtl/cosim.py's ``build(..., toplevel=SHELL_TOPLEVEL)``.
"""
from __future__ import annotations

from pathlib import Path

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig
from npu.hostregs import (ADDR_BITS, BUS_ADDR_BITS, BUS_BITS, BY_NAME, ID_VALUE, REG_BITS, STAGE_OFFSET, bus_beats,
                          check_map, stage_words, word_stride)
from rtl.generate import RtlParams, make_top, write_design

#: Verilog module name of the shell.
SHELL_TOPLEVEL = "npu_shell"

#: The AXI4-Lite slave's signals: name -> (direction seen from the shell, width).
AXIL_SIGNALS = {
    "awaddr": ("in", ADDR_BITS), "awprot": ("in", 3), "awvalid": ("in", 1), "awready": ("out", 1),
    "wdata": ("in", REG_BITS), "wstrb": ("in", REG_BITS // 8), "wvalid": ("in", 1), "wready": ("out", 1),
    "bresp": ("out", 2), "bvalid": ("out", 1), "bready": ("in", 1),
    "araddr": ("in", ADDR_BITS), "arprot": ("in", 3), "arvalid": ("in", 1), "arready": ("out", 1),
    "rdata": ("out", REG_BITS), "rresp": ("out", 2), "rvalid": ("out", 1), "rready": ("in", 1),
}

#: Port name prefix of the AXI4-Lite slave.
AXIL_PREFIX = "s_axil"

#: The AXI4 master of the bulk loader: name -> (direction seen from the shell, width).  One ID (0), INCR bursts of
#: BUS_BITS-wide beats; no lock, cache, prot, qos, region or user signals.
AXI_SIGNALS = {
    "awid": ("out", 1), "awaddr": ("out", BUS_ADDR_BITS), "awlen": ("out", 8), "awsize": ("out", 3),
    "awburst": ("out", 2), "awvalid": ("out", 1), "awready": ("in", 1),
    "wdata": ("out", BUS_BITS), "wstrb": ("out", BUS_BITS // 8), "wlast": ("out", 1), "wvalid": ("out", 1),
    "wready": ("in", 1),
    "bid": ("in", 1), "bresp": ("in", 2), "bvalid": ("in", 1), "bready": ("out", 1),
    "arid": ("out", 1), "araddr": ("out", BUS_ADDR_BITS), "arlen": ("out", 8), "arsize": ("out", 3),
    "arburst": ("out", 2), "arvalid": ("out", 1), "arready": ("in", 1),
    "rid": ("in", 1), "rdata": ("in", BUS_BITS), "rresp": ("in", 2), "rlast": ("in", 1), "rvalid": ("in", 1),
    "rready": ("out", 1),
}

#: Port name prefix of the AXI4 master.
AXI_PREFIX = "m_axi"


def config_id(config: NpuConfig) -> int:
    """The CONFIG register: the first 32 bits of the configuration fingerprint."""
    return int(config.fingerprint()[:8], 16)


class Shell(wiring.Component):
    """The NPU core for ``config`` (built by rtl.generate.make_top with ``params``) behind the host interface.

    Members
    -------
    s_axil_* : the AXI4-Lite slave (:data:`AXIL_SIGNALS`)
    irq : Out(1)   the interrupt (level)
    commit, commit_pc, cycles (dma_commit, dma_commit_pc) : Out   the core's trace, for the test bench
    """

    def __init__(self, config: NpuConfig, params: RtlParams | None = None):
        self.core = make_top(config, params)
        self.config = config
        self.memmap = self.core.memmap
        check_map(self.memmap.data_bits)
        self.stage_words = stage_words(self.memmap.data_bits)
        members = {f"{AXIL_PREFIX}_{name}": (In if d == "in" else Out)(w) for name, (d, w) in AXIL_SIGNALS.items()}
        members.update({f"{AXI_PREFIX}_{name}": (In if d == "in" else Out)(w) for name, (d, w) in AXI_SIGNALS.items()})
        members["irq"] = Out(1)
        depth = self.core.program_depth
        members.update({"commit": Out(1), "commit_pc": Out(range(depth)), "cycles": Out(32)})
        if config.pipelined:
            members.update({"dma_commit": Out(1), "dma_commit_pc": Out(range(depth))})
        super().__init__(members)

    def _axi(self, name):
        return getattr(self, f"{AXIL_PREFIX}_{name}")

    def _master(self, name):
        return getattr(self, f"{AXI_PREFIX}_{name}")

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        mm, a, x = self.memmap, self._axi, self._master
        R = BY_NAME
        n16 = 16 * self.config.native_dim

        # registers
        start, irq_en, done = Signal(), Signal(), Signal()
        irq_st = Signal(2)
        prog_len = Signal.like(core.prog_len)
        ld_sel, ld_addr = Signal.like(core.ld_sel), Signal.like(core.ld_addr)
        max_beats = bus_beats(mm.data_bits)
        stage = Signal(max(REG_BITS * self.stage_words, BUS_BITS * max_beats))
        cycles_hi, commits = Signal(32), Signal(32)
        busy_d, err_d = Signal(), Signal()
        m.d.comb += [core.start.eq(start), core.prog_len.eq(prog_len), core.ld_sel.eq(ld_sel),
                     core.ld_addr.eq(ld_addr), core.ld_data.eq(stage[:mm.data_bits])]

        # the trace port
        m.d.comb += [self.commit.eq(core.commit), self.commit_pc.eq(core.commit_pc), self.cycles.eq(core.cycles)]
        steps_done = core.commit
        if self.config.pipelined:
            m.d.comb += [self.dma_commit.eq(core.dma_commit), self.dma_commit_pc.eq(core.dma_commit_pc)]
            steps_done = core.commit + core.dma_commit

        # status, interrupt causes, counters
        finished = busy_d & ~core.busy
        erred = (core.error != 0) & ~err_d
        m.d.sync += [busy_d.eq(core.busy), err_d.eq(core.error != 0)]
        with m.If(start):
            m.d.sync += [done.eq(0), cycles_hi.eq(0), commits.eq(0)]
        with m.Else():
            with m.If(finished):
                m.d.sync += done.eq(1)
            with m.If(core.busy & (core.cycles == 0xFFFF_FFFF)):
                m.d.sync += cycles_hi.eq(cycles_hi + 1)
            m.d.sync += commits.eq(commits + steps_done)
        irq_clear = Signal(2)
        m.d.sync += irq_st.eq((irq_st & ~irq_clear) | (finished | (erred << 1)))
        m.d.comb += self.irq.eq(irq_en & (irq_st != 0))

        # the write channel: one write at a time
        aw_ok, w_ok, bvalid = Signal(), Signal(), Signal()
        aw_addr, w_data = Signal(ADDR_BITS), Signal(REG_BITS)
        m.d.comb += [a("awready").eq(~aw_ok), a("wready").eq(~w_ok), a("bvalid").eq(bvalid), a("bresp").eq(0)]
        with m.If(a("awvalid") & ~aw_ok):
            m.d.sync += [aw_ok.eq(1), aw_addr.eq(a("awaddr"))]
        with m.If(a("wvalid") & ~w_ok):
            m.d.sync += [w_ok.eq(1), w_data.eq(a("wdata"))]
        with m.If(bvalid & a("bready")):
            m.d.sync += [bvalid.eq(0), aw_ok.eq(0), w_ok.eq(0)]
        go = Signal()
        word = aw_addr[2:]
        cmd = R["LD_CMD"]

        # the bulk loader: per memory, its beats per word and its word stride in external memory
        dma_addr, dma_count = Signal(BUS_ADDR_BITS), Signal(32)
        ext, left, dma_err = Signal(BUS_ADDR_BITS), Signal(32), Signal()
        beat, last = Signal(range(max_beats + 1)), Signal(range(max_beats + 1))
        beats = Array(Const(bus_beats(i.width), range(max_beats + 1)) for i in mm.memories)[ld_sel]
        stride = Array(Const(word_stride(i.width), BUS_ADDR_BITS) for i in mm.memories)[ld_sel]
        rest = beats - 1 - beat
        burst_len = Mux(rest > 255, 255, rest)  # beats of the next burst, less one (AXI4: at most 256)
        burst_addr = ext + (beat << (BUS_BITS // 8).bit_length() - 1)
        dma = R["DMA_CTRL"]
        for ch in ("aw", "ar"):
            m.d.comb += [x(f"{ch}id").eq(0), x(f"{ch}addr").eq(burst_addr), x(f"{ch}len").eq(burst_len),
                         x(f"{ch}size").eq((BUS_BITS // 8).bit_length() - 1), x(f"{ch}burst").eq(1)]
        m.d.comb += [x("wdata").eq(stage.word_select(beat, BUS_BITS)), x("wstrb").eq((1 << BUS_BITS // 8) - 1),
                     x("wlast").eq(beat == last)]

        def next_word(to):
            """The word moved: step to the next, or answer the DMA_CTRL write after the last."""
            m.d.sync += [ld_addr.eq(ld_addr + 1), ext.eq(ext + stride), left.eq(left - 1), beat.eq(0)]
            with m.If(left == 1):
                m.d.sync += bvalid.eq(1)
                m.next = "IDLE"
            with m.Else():
                m.next = to

        def bit(name):
            return w_data[cmd.field(name).lsb]

        def respond():
            m.d.sync += bvalid.eq(1)
            with m.If(bit("INC")):
                m.d.sync += ld_addr.eq(ld_addr + 1)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += go.eq(aw_ok & w_ok & ~bvalid)
                with m.If(go & (word == cmd.offset // 4) & (w_data & 0xF).any()):
                    with m.If(bit("WRITE")):
                        m.d.comb += core.ld_we.eq(1)
                        respond()
                    with m.Elif(bit("READ")):  # the load port's read data comes a cycle later
                        m.next = "READ"
                    with m.Elif(bit("PUSH")):
                        m.next = "PUSH"
                    with m.Else():
                        m.next = "POP"
                with m.Elif(go & (word == dma.offset // 4) & (w_data[:2] != 0) & (dma_count != 0)):
                    m.d.sync += [ext.eq(dma_addr), left.eq(dma_count), beat.eq(0), dma_err.eq(0)]
                    with m.If(w_data[dma.field("IN").lsb]):
                        m.next = "IN_AR"
                    with m.Else():
                        m.next = "OUT_RD"
                with m.Elif(go):
                    m.d.sync += bvalid.eq(1)
                    with m.Switch(word):
                        with m.Case(R["CTRL"].offset // 4):
                            m.d.comb += start.eq(w_data[R["CTRL"].field("START").lsb])
                            m.d.sync += irq_en.eq(w_data[R["CTRL"].field("IRQ_EN").lsb])
                        with m.Case(R["IRQ_STATUS"].offset // 4):
                            m.d.comb += irq_clear.eq(w_data[:2])
                        with m.Case(R["PROG_LEN"].offset // 4):
                            m.d.sync += prog_len.eq(w_data)
                        with m.Case(R["LD_SEL"].offset // 4):
                            m.d.sync += ld_sel.eq(w_data)
                        with m.Case(R["LD_ADDR"].offset // 4):
                            m.d.sync += ld_addr.eq(w_data)
                        with m.Case(R["DMA_ADDR"].offset // 4):
                            m.d.sync += dma_addr.eq(w_data)
                        with m.Case(R["DMA_COUNT"].offset // 4):
                            m.d.sync += dma_count.eq(w_data)
                        for k in range(self.stage_words):
                            with m.Case(STAGE_OFFSET // 4 + k):
                                m.d.sync += stage.word_select(k, REG_BITS).eq(w_data)
            with m.State("READ"):
                m.d.sync += stage.eq(core.ld_rdata)
                respond()
                m.next = "IDLE"
            with m.State("PUSH"):
                m.d.comb += [core.inq.valid.eq(1), core.inq.payload.eq(stage[:n16])]
                with m.If(core.inq.ready):
                    respond()
                    m.next = "IDLE"
            # external memory -> the memory LD_SEL: a burst (or several) per word into the staging buffer, then
            # the load port's write
            with m.State("IN_AR"):
                m.d.comb += x("arvalid").eq(1)
                with m.If(x("arready")):
                    m.next = "IN_R"
            with m.State("IN_R"):
                m.d.comb += x("rready").eq(1)
                with m.If(x("rvalid")):
                    m.d.sync += [stage.word_select(beat, BUS_BITS).eq(x("rdata")), beat.eq(beat + 1)]
                    with m.If(x("rresp") != 0):
                        m.d.sync += dma_err.eq(1)
                    with m.If(x("rlast")):
                        with m.If(beat + 1 == beats):
                            m.next = "IN_WR"
                        with m.Else():
                            m.next = "IN_AR"
            with m.State("IN_WR"):
                m.d.comb += core.ld_we.eq(1)
                next_word("IN_AR")
            # the memory LD_SEL -> external memory: the load port's read into the staging buffer, then bursts
            with m.State("OUT_RD"):
                m.next = "OUT_CAP"
            with m.State("OUT_CAP"):
                m.d.sync += stage.eq(core.ld_rdata)
                m.next = "OUT_AW"
            with m.State("OUT_AW"):
                m.d.comb += x("awvalid").eq(1)
                with m.If(x("awready")):
                    m.d.sync += last.eq(beat + burst_len)
                    m.next = "OUT_W"
            with m.State("OUT_W"):
                m.d.comb += x("wvalid").eq(1)
                with m.If(x("wready")):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == last):
                        m.next = "OUT_B"
            with m.State("OUT_B"):
                m.d.comb += x("bready").eq(1)
                with m.If(x("bvalid")):
                    with m.If(x("bresp") != 0):
                        m.d.sync += dma_err.eq(1)
                    with m.If(beat == beats):
                        next_word("OUT_RD")
                    with m.Else():
                        m.next = "OUT_AW"
            with m.State("POP"):
                m.d.comb += core.outq.ready.eq(1)
                with m.If(core.outq.valid):
                    m.d.sync += stage.eq(core.outq.payload)
                    respond()
                    m.next = "IDLE"

        # the read channel: data the cycle after the address
        rvalid, rdata, rd = Signal(), Signal(REG_BITS), Signal(REG_BITS)
        m.d.comb += [a("arready").eq(~rvalid), a("rvalid").eq(rvalid), a("rdata").eq(rdata), a("rresp").eq(0)]
        with m.If(a("arvalid") & ~rvalid):
            m.d.sync += [rvalid.eq(1), rdata.eq(rd)]
        with m.If(rvalid & a("rready")):
            m.d.sync += rvalid.eq(0)
        st, geo = R["STATUS"], R["GEOMETRY"]
        status = Signal(REG_BITS)
        m.d.comb += status.eq(core.busy << st.field("BUSY").lsb | done << st.field("DONE").lsb
                              | core.error << st.field("ERROR").lsb | core.inq.ready << st.field("INQ_READY").lsb
                              | core.outq.valid << st.field("OUTQ_VALID").lsb | dma_err << st.field("DMA_ERROR").lsb)
        geometry = geo.bits(STAGE_WORDS=self.stage_words, MEMORIES=len(mm.memories), ADDR_BITS=mm.addr_bits)
        values = {"ID": Const(ID_VALUE, REG_BITS), "CONFIG": Const(config_id(self.config), REG_BITS),
                  "CTRL": irq_en << R["CTRL"].field("IRQ_EN").lsb, "STATUS": status, "IRQ_STATUS": irq_st,
                  "PROG_LEN": prog_len, "CYCLES_LO": core.cycles, "CYCLES_HI": cycles_hi, "LD_SEL": ld_sel,
                  "LD_ADDR": ld_addr, "GEOMETRY": Const(geometry, REG_BITS), "COMMITS": commits,
                  "DMA_ADDR": dma_addr, "DMA_COUNT": dma_count}
        assert set(values) | {"LD_CMD", "DMA_CTRL"} == set(BY_NAME), "every register of npu.hostregs has a value"
        with m.Switch(a("araddr")[2:]):
            for name, value in values.items():
                with m.Case(R[name].offset // 4):
                    m.d.comb += rd.eq(value)
            for k in range(self.stage_words):
                with m.Case(STAGE_OFFSET // 4 + k):
                    m.d.comb += rd.eq(stage.word_select(k, REG_BITS))
        return m


def write_shell_verilog(config: NpuConfig, outdir: str | Path, params: RtlParams | None = None) -> Path:
    """Write ``npu_shell.v`` (every unit of rtl/units.py defined once, then the shell and the core) and
    ``report.json`` (rtl.generate.report of the core, with the shell's ports) into outdir; returns the path."""
    from amaranth.hdl import Shape

    shell = Shell(config, params)
    ports = [{"name": "__".join(map(str, p)), "dir": mem.flow.value, "width": Shape.cast(mem.shape).width}
             for p, mem in shell.signature.members.flatten() if mem.is_port]
    return write_design(shell, shell.core, SHELL_TOPLEVEL, outdir, toplevel=SHELL_TOPLEVEL, ports=ports)
