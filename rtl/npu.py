"""The NPU as one Amaranth component, generated for any :class:`npu.config.NpuConfig`.

Micro-architecture (what sim/timing.py models):

* **Fetch/decode** reads one instruction per cycle from the program memory,
  viewed through :func:`rtl.layout.instruction_layout` (derived from
  npu.isa.Encoding).  ``s_wr`` updates the scalar registers; ``v_rd`` ..
  ``end_chain`` are collected into a *step descriptor* that snapshots the
  registers; ``m_rd``/``m_wr`` are DMA descriptors.  Descriptors queue in a
  small FIFO, so decoding runs ahead of execution.
* **The executor** runs one step at a time.  A chain is a fixed-latency
  pipeline: the *read sequencer* walks the two-level hardware loop (outer i,
  inner j, every operand at ``addr + i*so + j*si``, the read gathered in
  windows of ``win_run`` vectors ``win_pitch`` apart) and issues one vector per
  slot of ``p`` cycles, ``p`` the slowest per-vector cost of the chain's ports
  (a VRF takes 1 cycle, DRAM and the queues ``vector bytes / bandwidth``).
  Reads arrive after the source's latency and flow through the MVM (if any),
  then each MFU stage the chain uses (``mfu_stage`` cycles each, bypassed
  stages cost nothing), then the write stage (``vrf_write``), which writes up
  to ``write_slots`` destinations in the same cycle.
* **The MVM** converts each input vector to the activation BFP format as it
  arrives into a circular buffer and records the largest nonzero block
  exponent of each iteration.  Once an iteration's whole input is there, the
  MAC sequencer walks output rows; per row, rounds of ``tile_engines`` tiles
  (consecutive MRF addresses, one per bank) times ``N / lanes`` lane groups,
  each cycle ``tile_engines x N x lanes`` multiplies.  Block products are
  integers; each is shifted onto the row's running quantum and added to a
  signed fixed-point accumulator of ``ACCUMULATOR_BITS`` bits plus sign (the
  quantum only rises, by an exact right shift, when a larger weight exponent
  arrives: the flush-window argument of npu.numerics.flush_windows makes every
  step exact).  At the end of a row the accumulator is rounded once to fp16.
  Reading the next iteration overlaps the MACs of the current one.
* **DMA** (``m_rd``/``m_wr``) copies tile words between the weight region of
  DRAM and the MRF banks, holding the DRAM for ``tile bytes / bandwidth``
  cycles and completing ``dram_latency`` cycles later.

The bench talks to the component through its signature only: ``start``,
``prog_len``, ``busy``, ``cycles``, ``error``, the load port (``ld_*``) that
writes or reads back any memory of :class:`rtl.layout.MemoryMap`, the network
input and output queues (``amaranth.lib.stream`` interfaces) and a ``commit``
pulse with the end pc of every completed step.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig, bits_for
from npu.errors import ConfigError
from npu.isa import OPCODES, Kind, Reg, Space, encoding_for
from npu.numerics import flush_windows
from rtl.layout import MAX_WORD_BITS, MemoryMap, instruction_layout
from rtl.units import ACT_OPS, AS_OPS, UNIT_NAMES, instance, make_units

#: ``error`` output bits.
ERR_UNSUPPORTED = 1  # a chain the RTL does not implement (too many v_wr, two writes to the output queue)
ERR_OVERFLOW = 2     # the output queue overflowed (the bench did not drain it)

STEP_CHAIN, STEP_MRD, STEP_MWR = 0, 1, 2


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
    error : Out(2)         ERR_UNSUPPORTED | ERR_OVERFLOW, sticky until start
    ld_sel, ld_addr, ld_data, ld_we : In   load port: write word ld_addr of memory ld_sel
    ld_rdata : Out         load port read data (memory ld_sel, word ld_addr, one cycle later)
    inq : In(stream.Signature(16 * N))   network input queue (native vectors of fp16)
    outq : Out(stream.Signature(16 * N)) network output queue
    commit : Out(1), commit_pc : Out     a step completed; the pc of its last instruction
    """

    def __init__(self, config: NpuConfig, *, program_depth: int = 4096, queue_depth: int = 512,
                 max_word_bits: int = MAX_WORD_BITS):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"config must be an NpuConfig, not {config!r}")
        for name, value in (("program_depth", program_depth), ("queue_depth", queue_depth),
                            ("max_word_bits", max_word_bits)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
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
        self.write_slots = config.write_slots
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
        })

    # ------------------------------------------------------------------ layouts
    def _layouts(self):
        c = self.config
        kb = encoding_for(c).kind_bits
        self.imm_bits = kb[Kind.IMM]
        self.vaddr_bits = kb[Kind.VADDR]
        opnd = data.StructLayout({"addr": kb[Kind.VADDR], "so": kb[Kind.STRIDE], "si": kb[Kind.STRIDE]})
        vec = data.StructLayout({"space": kb[Kind.SPACE], "mfu": kb[Kind.MFU], "addr": kb[Kind.VADDR],
                                 "so": kb[Kind.STRIDE], "si": kb[Kind.STRIDE]})
        wr = data.StructLayout({"valid": 1, "space": kb[Kind.SPACE], "mfu": kb[Kind.MFU], "addr": kb[Kind.VADDR],
                                "so": kb[Kind.STRIDE], "si": kb[Kind.STRIDE]})
        imm = kb[Kind.IMM]
        m = c.n_mfus
        self.desc_layout = data.StructLayout({
            "kind": 2, "pc": bits_for(self.program_depth),
            "rows": imm, "cols": imm, "io": imm, "ii": imm, "run": imm, "pitch": imm, "alpha": 16,
            "rd": vec, "mvm": 1, "mrf": kb[Kind.MRF],
            "as_op": data.ArrayLayout(3, m), "as_opnd": data.ArrayLayout(opnd, m),
            "mul_op": data.ArrayLayout(1, m), "mul_opnd": data.ArrayLayout(opnd, m),
            "act_op": data.ArrayLayout(3, m),
            "wr": data.ArrayLayout(wr, self.write_slots),
            "tile": kb[Kind.TILE], "count": kb[Kind.COUNT], "dmrf": kb[Kind.MRF],
        })
        self.beat_layout = data.StructLayout({"valid": 1, "r": imm, "i": imm, "j": imm,
                                              "data": 16 * c.native_dim})

    # ------------------------------------------------------------------ elaborate
    def elaborate(self, platform):
        c = self.config
        n = c.native_dim
        self._layouts()
        mm = self.memmap
        m = Module()
        imm = self.imm_bits

        # -------------------------------------------------------------- memories
        mems = {}
        for info in mm.memories:
            mem = memory.Memory(shape=unsigned(info.width), depth=info.depth, init=[])
            m.submodules[f"mem_{info.name}"] = mem
            mems[info.name] = mem
        ld_read = []
        for info in mm.memories:
            mem = mems[info.name]
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.ld_addr), wp.data.eq(self.ld_data),
                         wp.en.eq(self.ld_we & (self.ld_sel == info.id))]
            rp = mem.read_port()
            m.d.comb += rp.addr.eq(self.ld_addr)
            ld_read.append(rp.data)
        sel_q = Signal.like(self.ld_sel)
        m.d.sync += sel_q.eq(self.ld_sel)
        m.d.comb += self.ld_rdata.eq(Array(ld_read)[sel_q])

        vec_mems = {Space.IVRF: [mems["ivrf"]], Space.DRAM: [mems["dram"]],
                    Space.ASVRF: [mems[f"asvrf{k}"] for k in range(c.n_mfus)],
                    Space.MULVRF: [mems[f"mulvrf{k}"] for k in range(c.n_mfus)]}

        # -------------------------------------------------------------- queues
        inq = fifo.SyncFIFOBuffered(width=16 * n, depth=self.queue_depth)
        outq = fifo.SyncFIFOBuffered(width=16 * n, depth=self.queue_depth)
        m.submodules.inq = inq
        m.submodules.outq = outq
        wiring.connect(m, wiring.flipped(self.inq), inq.w_stream)
        wiring.connect(m, outq.r_stream, wiring.flipped(self.outq))

        # -------------------------------------------------------------- control
        running = Signal()
        pc = Signal(range(self.program_depth + 1))
        error = Signal(2)
        m.d.comb += [self.busy.eq(running), self.error.eq(error)]
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)

        prog_rp = mems["prog"].read_port(domain="comb")
        m.d.comb += prog_rp.addr.eq(pc)
        word = data.View(instruction_layout(c), prog_rp.data)
        opcode = prog_rp.data[:encoding_for(c).opcode_bits]

        regs = {r: Signal(imm, name=f"reg_{r.name.lower()}") for r in Reg}
        from npu.isa import REG_RESET
        # the timing model (sim/timing.py) counts on this depth: a full queue stalls decoding
        steps = fifo.SyncFIFOBuffered(width=self.desc_layout.size, depth=c.step_queue)
        m.submodules.steps = steps
        cur = Signal(self.desc_layout)
        in_chain = Signal()
        nwr = Signal(range(self.write_slots + 1))
        push = data.View(self.desc_layout, steps.w_data)
        m.d.comb += push.eq(cur)
        m.d.comb += push.pc.eq(pc)

        ex_busy = Signal()
        with m.If(self.start):
            m.d.sync += [pc.eq(0), running.eq(1), self.cycles.eq(0), error.eq(0), in_chain.eq(0)]
            m.d.sync += [regs[r].eq(v) for r, v in REG_RESET.items()]
        with m.Elif(running & (pc < self.prog_len)):
            with m.Switch(opcode):
                with m.Case(OPCODES["nop"]):
                    m.d.sync += pc.eq(pc + 1)
                with m.Case(OPCODES["s_wr"]):
                    with m.Switch(word.s_wr.reg):
                        for r in Reg:
                            with m.Case(int(r)):
                                m.d.sync += regs[r].eq(word.s_wr.imm)
                    m.d.sync += pc.eq(pc + 1)
                with m.Case(OPCODES["v_rd"]):
                    newdesc = Signal(self.desc_layout)
                    m.d.comb += [
                        newdesc.kind.eq(STEP_CHAIN), newdesc.rows.eq(regs[Reg.ROWS]), newdesc.cols.eq(regs[Reg.COLS]),
                        newdesc.io.eq(regs[Reg.ITER_OUTER]), newdesc.ii.eq(regs[Reg.ITER_INNER]),
                        newdesc.run.eq(regs[Reg.WIN_RUN]), newdesc.pitch.eq(regs[Reg.WIN_PITCH]),
                        newdesc.alpha.eq(regs[Reg.ALPHA]),
                        newdesc.rd.space.eq(word.v_rd.space), newdesc.rd.mfu.eq(word.v_rd.mfu),
                        newdesc.rd.addr.eq(word.v_rd.addr), newdesc.rd.so.eq(word.v_rd.so), newdesc.rd.si.eq(word.v_rd.si),
                    ]
                    m.d.sync += [cur.eq(newdesc), in_chain.eq(1), nwr.eq(0), pc.eq(pc + 1)]
                with m.Case(OPCODES["mv_mul"]):
                    m.d.sync += [cur.mvm.eq(1), cur.mrf.eq(word.mv_mul.mrf), pc.eq(pc + 1)]
                for mnem, code in AS_OPS.items():
                    with m.Case(OPCODES[mnem]):
                        f = getattr(word, mnem)
                        for k in range(c.n_mfus):
                            with m.If(f.mfu == k):
                                m.d.sync += [cur.as_op[k].eq(code), cur.as_opnd[k].addr.eq(f.addr),
                                             cur.as_opnd[k].so.eq(f.so), cur.as_opnd[k].si.eq(f.si)]
                        m.d.sync += pc.eq(pc + 1)
                with m.Case(OPCODES["vv_mul"]):
                    f = word.vv_mul
                    for k in range(c.n_mfus):
                        with m.If(f.mfu == k):
                            m.d.sync += [cur.mul_op[k].eq(1), cur.mul_opnd[k].addr.eq(f.addr),
                                         cur.mul_opnd[k].so.eq(f.so), cur.mul_opnd[k].si.eq(f.si)]
                    m.d.sync += pc.eq(pc + 1)
                for mnem, code in ACT_OPS.items():
                    with m.Case(OPCODES[mnem]):
                        f = getattr(word, mnem)
                        for k in range(c.n_mfus):
                            with m.If(f.mfu == k):
                                m.d.sync += cur.act_op[k].eq(code)
                        m.d.sync += pc.eq(pc + 1)
                with m.Case(OPCODES["v_wr"]):
                    f = word.v_wr
                    for k in range(self.write_slots):
                        with m.If(nwr == k):
                            m.d.sync += [cur.wr[k].valid.eq(1), cur.wr[k].space.eq(f.space),
                                         cur.wr[k].mfu.eq(f.mfu), cur.wr[k].addr.eq(f.addr),
                                         cur.wr[k].so.eq(f.so), cur.wr[k].si.eq(f.si)]
                    with m.If(nwr == self.write_slots):
                        m.d.sync += error.eq(error | ERR_UNSUPPORTED)
                    with m.Else():
                        m.d.sync += nwr.eq(nwr + 1)
                    m.d.sync += pc.eq(pc + 1)
                with m.Case(OPCODES["end_chain"]):
                    m.d.comb += steps.w_en.eq(1)
                    with m.If(steps.w_rdy):
                        m.d.sync += [pc.eq(pc + 1), in_chain.eq(0)]
                for mnem, kind in (("m_rd", STEP_MRD), ("m_wr", STEP_MWR)):
                    with m.Case(OPCODES[mnem]):
                        f = getattr(word, mnem)
                        m.d.comb += [push.kind.eq(kind), push.tile.eq(f.tile), push.count.eq(f.count),
                                     push.dmrf.eq(f.mrf), steps.w_en.eq(1)]
                        with m.If(steps.w_rdy):
                            m.d.sync += pc.eq(pc + 1)
                with m.Default():
                    m.d.sync += pc.eq(pc + 1)
        with m.Elif(running & ~in_chain & (steps.level == 0) & ~ex_busy):
            m.d.sync += running.eq(0)

        # -------------------------------------------------------------- executor
        ex = Signal(self.desc_layout)
        done_step = Signal()
        m.d.comb += steps.r_en.eq(~ex_busy)
        start_step = Signal()
        m.d.comb += start_step.eq(~ex_busy & steps.r_rdy)
        with m.If(start_step):
            m.d.sync += [ex.eq(steps.r_data), ex_busy.eq(1)]
        with m.Elif(done_step):
            m.d.sync += ex_busy.eq(0)
        m.d.comb += [self.commit.eq(done_step), self.commit_pc.eq(ex.pc)]
        is_chain = ex_busy & (ex.kind == STEP_CHAIN)
        # `fresh` is high in the first cycle of a step: every per-step counter is cleared then.
        fresh = Signal()
        m.d.sync += fresh.eq(start_step)

        cost = {s: c.port_cost(s) for s in Space}
        rlat = {s: c.read_latency(s) for s in Space}

        def space_const(space_sig, table, width):
            out = Signal(width, name="spc")
            with m.Switch(space_sig):
                for s, v in table.items():
                    with m.Case(int(s)):
                        m.d.comb += out.eq(v)
            return out

        pbits = max(bits_for(max(cost.values()) + 1), 2)
        p_read = space_const(ex.rd.space, cost, pbits)
        p_write = Signal(pbits)
        wcosts = []
        for k in range(self.write_slots):
            wc = space_const(ex.wr[k].space, cost, pbits)
            wcosts.append(Mux(ex.wr[k].valid, wc, 1))
        pw = wcosts[0]
        for wc in wcosts[1:]:
            pw = Mux(wc > pw, wc, pw)
        m.d.comb += p_write.eq(pw)
        period = Signal(pbits)
        m.d.comb += period.eq(Mux(ex.mvm, p_read, Mux(p_write > p_read, p_write, p_read)))

        width = Signal(imm)
        m.d.comb += width.eq(Mux(ex.mvm, ex.cols, ex.rows))
        iters = Signal(2 * imm)
        m.d.comb += iters.eq(ex.io * ex.ii)

        def base(opnd, i, j):
            """addr + i*so + j*si, wrapped to the address width."""
            return (opnd.addr + i * opnd.so + j * opnd.si)[:self.vaddr_bits]

        # ---------------- read sequencer
        rd_i, rd_j, rd_v = Signal(imm), Signal(imm), Signal(imm)
        rd_runpos, rd_runbase = Signal(imm), Signal(self.vaddr_bits + imm)
        rd_done = Signal()
        slot = Signal(pbits)
        buf_used = Signal(range(self.mvm_buffer + 1))  # vectors issued into the MVM buffer, not yet freed
        inflight_pops = Signal(range(256))
        can_issue = Signal()
        issue = Signal()
        netq_read = ex.rd.space == Space.NETQ
        m.d.comb += can_issue.eq(Mux(netq_read, inq.level > inflight_pops, 1)
                                 & Mux(ex.mvm, buf_used < self.mvm_buffer, 1))
        m.d.comb += issue.eq(is_chain & ~fresh & ~rd_done & (slot == period - 1) & can_issue)
        with m.If(fresh):
            m.d.sync += [rd_i.eq(0), rd_j.eq(0), rd_v.eq(0), rd_runpos.eq(0), rd_runbase.eq(0), rd_done.eq(0),
                         slot.eq(0)]
        with m.Elif(is_chain & ~rd_done):
            with m.If(slot != period - 1):
                m.d.sync += slot.eq(slot + 1)
            with m.Elif(can_issue):
                m.d.sync += slot.eq(0)
                last_v = rd_v == width - 1
                with m.If(last_v):
                    m.d.sync += [rd_v.eq(0), rd_runpos.eq(0), rd_runbase.eq(0)]
                    with m.If(rd_j == ex.ii - 1):
                        m.d.sync += rd_j.eq(0)
                        with m.If(rd_i == ex.io - 1):
                            m.d.sync += rd_done.eq(1)
                        with m.Else():
                            m.d.sync += rd_i.eq(rd_i + 1)
                    with m.Else():
                        m.d.sync += rd_j.eq(rd_j + 1)
                with m.Else():
                    m.d.sync += rd_v.eq(rd_v + 1)
                    with m.If((ex.run != 0) & (rd_runpos == ex.run - 1)):
                        m.d.sync += [rd_runpos.eq(0), rd_runbase.eq(rd_runbase + ex.pitch)]
                    with m.Else():
                        m.d.sync += rd_runpos.eq(rd_runpos + 1)
        rd_addr = Signal(self.vaddr_bits)
        m.d.comb += rd_addr.eq((base(ex.rd, rd_i, rd_j) + rd_runbase + rd_runpos)[:self.vaddr_bits])

        # request delay line: the read happens L - 1 cycles after issue, data is registered at L
        req_layout = data.StructLayout({"valid": 1, "addr": self.vaddr_bits, "r": imm, "i": imm, "j": imm,
                                        "last": 1})
        req0 = Signal(req_layout)
        m.d.comb += [req0.valid.eq(issue), req0.addr.eq(rd_addr), req0.r.eq(rd_v), req0.i.eq(rd_i),
                     req0.j.eq(rd_j), req0.last.eq(rd_v == width - 1)]
        lmax = max(rlat.values())
        line = [req0]
        for k in range(lmax - 1):
            nxt = Signal(req_layout, name=f"req{k + 1}")
            m.d.sync += nxt.eq(line[-1])
            line.append(nxt)
        tap = space_const(ex.rd.space, {s: v - 1 for s, v in rlat.items()}, bits_for(lmax + 1))
        req = Signal(req_layout)
        m.d.comb += req.eq(Array(line)[tap])
        with m.If(fresh):
            for s in line[1:]:
                m.d.sync += s.valid.eq(0)
        pop = Signal()
        m.d.comb += pop.eq(req.valid & netq_read)
        m.d.comb += inq.r_en.eq(pop)
        with m.If(fresh):
            m.d.sync += inflight_pops.eq(0)
        with m.Else():
            m.d.sync += inflight_pops.eq(inflight_pops + (issue & netq_read) - pop)

        rdata = Signal(16 * n)
        rd_ports = {}
        for space, lst in vec_mems.items():
            for k, mem in enumerate(lst):
                rp = mem.read_port(domain="comb")
                m.d.comb += rp.addr.eq(req.addr)
                rd_ports[(space, k)] = rp.data
        with m.Switch(ex.rd.space):
            for space, lst in vec_mems.items():
                with m.Case(int(space)):
                    if len(lst) == 1:
                        m.d.comb += rdata.eq(rd_ports[(space, 0)])
                    else:
                        m.d.comb += rdata.eq(Array(rd_ports[(space, k)] for k in range(len(lst)))[ex.rd.mfu])
            with m.Case(int(Space.NETQ)):
                m.d.comb += rdata.eq(inq.r_data)
            with m.Default():
                m.d.comb += rdata.eq(0)

        # beat from the read path (chains without mv_mul)
        read_beat = Signal(self.beat_layout)
        m.d.sync += [read_beat.valid.eq(req.valid & ~ex.mvm & ~fresh), read_beat.r.eq(req.r), read_beat.i.eq(req.i),
                     read_beat.j.eq(req.j), read_beat.data.eq(rdata)]

        # ---------------- MVM
        mvm_beat = self._mvm(m, ex, fresh, is_chain, req, rdata, buf_used, issue, mems)

        # ---------------- MFU pipeline
        beat = Signal(self.beat_layout)
        m.d.comb += beat.eq(Mux(ex.mvm, mvm_beat.as_value(), read_beat.as_value()))
        for k, units in enumerate(c.mfus):
            for unit in ("addsub", "mul", "act"):
                if unit in units:
                    beat = self._mfu_stage(m, ex, k, unit, beat, vec_mems, base)

        # ---------------- write stage
        wb = beat
        for k in range(c.latencies.vrf_write - 1):
            nxt = Signal(self.beat_layout, name=f"wdelay{k}")
            m.d.sync += nxt.eq(wb)
            wb = nxt
        written = Signal(2 * imm + imm)
        total = Signal(3 * imm)
        m.d.comb += total.eq(iters * ex.rows)
        with m.If(fresh):
            m.d.sync += written.eq(0)
        with m.Elif(wb.valid):
            m.d.sync += written.eq(written + 1)
        wport = {(space, k): [mem.write_port() for _ in range(self.write_slots)]
                 for space, lst in vec_mems.items() for k, mem in enumerate(lst)}
        netq_writes = []
        for slot_i in range(self.write_slots):
            w = ex.wr[slot_i]
            waddr = Signal(self.vaddr_bits, name=f"waddr{slot_i}")
            m.d.comb += waddr.eq(base(w, wb.i, wb.j) + wb.r)
            for (space, k), ports in wport.items():
                p = ports[slot_i]
                hit = w.valid & (w.space == int(space))
                if len(vec_mems[space]) > 1:
                    hit = hit & (w.mfu == k)
                m.d.comb += [p.addr.eq(waddr), p.data.eq(wb.data), p.en.eq(wb.valid & is_chain & hit)]
            netq_writes.append(w.valid & (w.space == int(Space.NETQ)))
        any_netq = Cat(*netq_writes).any()
        m.d.comb += [outq.w_data.eq(wb.data), outq.w_en.eq(wb.valid & is_chain & any_netq)]
        with m.If(wb.valid & is_chain & any_netq & ~outq.w_rdy):
            m.d.sync += error.eq(error | ERR_OVERFLOW)
        with m.If(is_chain & ~fresh & (Cat(*netq_writes) & (Cat(*netq_writes) - 1)).any()):
            m.d.sync += error.eq(error | ERR_UNSUPPORTED)
        chain_done = is_chain & ~fresh & (written == total)

        # ---------------- DMA
        dma_done = self._dma(m, ex, fresh, mems)
        m.d.comb += done_step.eq(chain_done | dma_done)
        return m

    # ------------------------------------------------------------------ MVM
    def _mvm(self, m, ex, fresh, is_chain, req, rdata, buf_used, issue, mems):
        c = self.config
        n, T, L = c.native_dim, c.tile_engines, c.dpe_lanes
        mm = self.memmap
        imm = self.imm_bits
        afmt, wfmt = c.act_fmt, c.weight_fmt
        ma, eb = afmt.mant_bits, wfmt.exp_bits
        block = c.block
        nb = n // block
        wwin, awin = flush_windows(wfmt, afmt)
        D = self.mvm_buffer
        S, nsub, cpt = mm.sub, mm.nsub, mm.cpt

        # ---- conversion into the circular buffer (one BFP quantizer unit per block)
        bfp_unit = self.units[UNIT_NAMES["bfp_block"]]
        xm, xe, xnz = [], [], []
        for b in range(nb):
            mant = Signal(block * (ma + 1), name=f"cv{b}_mant")
            e = Signal(eb, name=f"cv{b}_e")
            nz = Signal(name=f"cv{b}_nz")
            m.submodules[f"cv{b}"] = instance(bfp_unit, UNIT_NAMES["bfp_block"],
                                              x=rdata[16 * b * block:16 * (b + 1) * block], mant=mant, e=e, nz=nz)
            xm.append(mant)
            xe.append(e)
            xnz.append(nz)
        buf_w = n * (ma + 1) + nb * eb
        buf = memory.Memory(shape=unsigned(buf_w), depth=D, init=[])
        m.submodules.mvm_buf = buf
        bwp = buf.write_port()
        wr_pos = Signal(range(D))
        arrive = Signal()
        m.d.comb += arrive.eq(req.valid & ex.mvm & is_chain & ~fresh)
        m.d.comb += [bwp.addr.eq(wr_pos), bwp.data.eq(Cat(*xm, *xe)), bwp.en.eq(arrive)]
        # largest nonzero block exponent of the iteration so far (biased; -1: none yet)
        ex_run = Signal(signed(eb + 2))
        vec_max = Signal(signed(eb + 2))
        vm = Const(-1, signed(eb + 2))
        for b in range(nb):
            step = Signal(signed(eb + 2), name=f"vec_max{b}")  # a Signal per step: no exponential tree
            m.d.comb += step.eq(Mux(xnz[b] & (xe[b] > vm), xe[b], vm))
            vm = step
        m.d.comb += vec_max.eq(vm)
        new_max = Mux(vec_max > ex_run, vec_max, ex_run)
        # One entry per iteration in flight: every iteration holds at least one buffer slot until its
        # MACs finish, so at most D iterations are in flight (a shorter ring let the read sequencer,
        # running ahead of slow MACs, overwrite the exponent of an iteration not yet multiplied).
        ring = memory.Memory(shape=unsigned(eb + 2), depth=D, init=[])
        m.submodules.mvm_exmax = ring
        ring_w = ring.write_port()
        ring_r = ring.read_port(domain="comb")
        arrived = Signal(32)
        m.d.comb += [ring_w.addr.eq(arrived[:len(ring_w.addr)]), ring_w.data.eq(new_max.as_unsigned()),
                     ring_w.en.eq(~fresh & arrive & req.last)]
        with m.If(fresh):
            m.d.sync += [wr_pos.eq(0), ex_run.eq(-1), arrived.eq(0)]
        with m.Elif(arrive):
            m.d.sync += wr_pos.eq(wr_pos + 1)
            with m.If(req.last):
                m.d.sync += [arrived.eq(arrived + 1), ex_run.eq(-1)]
            with m.Else():
                m.d.sync += ex_run.eq(new_max)

        # ---- MAC sequencer
        iters = Signal(2 * imm)
        m.d.comb += iters.eq(ex.io * ex.ii)
        rounds = Signal(imm)
        m.d.comb += rounds.eq((ex.cols + (T - 1)) // T if T > 1 else ex.cols)
        term_cycles = Signal(imm + bits_for(cpt) + 1)
        m.d.comb += term_cycles.eq(rounds * cpt)
        rowp = Signal.like(term_cycles)
        pw = Signal(8)
        # the per-row period also respects the write ports' per-vector cost
        cost = {s: c.port_cost(s) for s in Space}
        pws = []
        for k in range(self.write_slots):
            w = ex.wr[k]
            wc = Signal(8, name=f"mwc{k}")
            with m.Switch(w.space):
                for s, v in cost.items():
                    with m.Case(int(s)):
                        m.d.comb += wc.eq(v)
            pws.append(Mux(w.valid, wc, 1))
        p = pws[0]
        for x in pws[1:]:
            p = Mux(x > p, x, p)
        m.d.comb += pw.eq(p)
        m.d.comb += rowp.eq(Mux(pw > term_cycles, pw, term_cycles))

        mac_it = Signal(32)
        mac_r = Signal(imm)
        cyc = Signal.like(rowp)
        mk = Signal(imm)
        mg = Signal(range(max(cpt, 2)))
        mac_i, mac_j = Signal(imm), Signal(imm)
        mac_base = Signal(range(D))
        exmax = Signal(signed(eb + 2))
        m.d.comb += [ring_r.addr.eq(mac_it[:len(ring_r.addr)]), exmax.eq(ring_r.data.as_signed())]
        waiting = (mac_r == 0) & (cyc == 0) & (mac_it >= arrived)
        active = Signal()
        m.d.comb += active.eq(is_chain & ex.mvm & ~fresh & (mac_it < iters) & ~waiting)
        term = Signal()
        m.d.comb += term.eq(active & (cyc < term_cycles))
        first = Signal()
        m.d.comb += first.eq((cyc == 0))
        row_end = Signal()
        m.d.comb += row_end.eq(active & (cyc == rowp - 1))
        freed = Signal()
        m.d.comb += freed.eq(row_end & (mac_r == ex.rows - 1))
        with m.If(fresh):
            m.d.sync += [mac_it.eq(0), mac_r.eq(0), cyc.eq(0), mk.eq(0), mg.eq(0), mac_i.eq(0), mac_j.eq(0),
                         mac_base.eq(0)]
        with m.Elif(active):
            with m.If(row_end):
                m.d.sync += [cyc.eq(0), mk.eq(0), mg.eq(0)]
                with m.If(mac_r == ex.rows - 1):
                    m.d.sync += [mac_r.eq(0), mac_it.eq(mac_it + 1), mac_base.eq(mac_base + ex.cols)]
                    with m.If(mac_j == ex.ii - 1):
                        m.d.sync += [mac_j.eq(0), mac_i.eq(mac_i + 1)]
                    with m.Else():
                        m.d.sync += mac_j.eq(mac_j + 1)
                with m.Else():
                    m.d.sync += mac_r.eq(mac_r + 1)
            with m.Else():
                m.d.sync += cyc.eq(cyc + 1)
                with m.If(term):
                    with m.If(mg == cpt - 1):
                        m.d.sync += [mg.eq(0), mk.eq(mk + 1)]
                    with m.Else():
                        m.d.sync += mg.eq(mg + 1)
        # buffer occupancy: +1 per issued read, -cols when an iteration's MACs finish
        with m.If(fresh):
            m.d.sync += buf_used.eq(0)
        with m.Else():
            m.d.sync += buf_used.eq(buf_used + (issue & ex.mvm) - Mux(freed, ex.cols, 0))

        # ---- one cycle of terms: per engine (bank) b, the tile of this round in bank b; the activations and
        # their block exponents are shared by all rows, the weights are per row (one MvmRow unit per row)
        a0 = Signal(self.memmap.addr_bits + imm + 8)
        m.d.comb += a0.eq(ex.mrf + mac_r * ex.cols + mk * T)
        wwords, xs, xbs, xkeeps = [], [], [], []
        for b in range(T):
            off = Signal(range(max(T, 2)), name=f"off{b}")
            if T > 1:  # the address of this round that lands in bank b
                m.d.comb += off.eq((b + T - a0 % T) % T)
            col = Signal(imm + 1, name=f"col{b}")
            m.d.comb += col.eq(mk * T + off)
            ok = Signal(name=f"ok{b}")
            m.d.comb += ok.eq(term & (col < ex.cols))
            a = Signal.like(a0, name=f"a{b}")
            m.d.comb += a.eq(a0 + off)
            word_addr = Signal(mm.addr_bits, name=f"wa{b}")
            m.d.comb += word_addr.eq((a // T if T > 1 else a) * cpt + mg)
            parts = []  # the tile word of bank b, part by part (rtl/layout.py)
            for p in range(mm.tile_parts):
                mrp = mems[mm.tile_memory(f"mrf{b}", p)].read_port(domain="comb")
                m.d.comb += mrp.addr.eq(word_addr)
                parts.append(mrp.data)
            brp = buf.read_port(domain="comb")
            m.d.comb += brp.addr.eq((mac_base + col)[:len(brp.addr)])
            wwords.append(parts)
            xword = brp.data
            for s in range(nsub):
                lane0 = s * S  # within the lane group
                # activation sub-group: columns g*L + lane0 .. + S - 1 of input vector `col`
                for l in range(S):
                    sel = Array(xword[(q * L + lane0 + l) * (ma + 1):(q * L + lane0 + l + 1) * (ma + 1)]
                                for q in range(cpt))
                    xsel = Signal(ma + 1, name=f"x{b}_{s}_{l}")
                    m.d.comb += xsel.eq(sel[mg])
                    xs.append(xsel)
                xblk = Signal(eb, name=f"xblk{b}_{s}")
                m.d.comb += xblk.eq(Array(xword[n * (ma + 1) + ((q * L + lane0) // block) * eb:
                                                n * (ma + 1) + ((q * L + lane0) // block + 1) * eb]
                                          for q in range(cpt))[mg])
                xbs.append(xblk)
                xkeep = Signal(name=f"xkeep{b}_{s}")
                m.d.comb += xkeep.eq(ok & (xblk + awin >= exmax))
                xkeeps.append(xkeep)

        # ---- per row: accumulate, then round once to fp16 one cycle after the row's last cycle
        emit = Signal()
        e_r, e_i, e_j = Signal(imm), Signal(imm), Signal(imm)
        e_exmax = Signal(signed(eb + 2))
        m.d.sync += [emit.eq(row_end & ~fresh), e_r.eq(mac_r), e_i.eq(mac_i), e_j.eq(mac_j), e_exmax.eq(exmax)]
        clear = Signal()
        m.d.comb += clear.eq(active & first)
        row_unit = self.units[UNIT_NAMES["mvm_row"]]
        x_all, xb_all, xkeep_all = Cat(*xs), Cat(*xbs), Cat(*xkeeps)
        outs = []
        for r in range(n):
            y = Signal(16, name=f"mvr{r}")
            p, mpos, epos = mm.row_fields(r)
            w_r = Cat(*[wwords[b][p][mpos:mpos + mm.row_mant_bits] for b in range(T)])
            ew_r = Cat(*[wwords[b][p][epos:epos + mm.row_exp_bits] for b in range(T)])
            m.submodules[f"row{r}"] = instance(row_unit, UNIT_NAMES["mvm_row"], sync=True, w=w_r, ew=ew_r,
                                               x=x_all, xb=xb_all, xkeep=xkeep_all, exmax=exmax, e_exmax=e_exmax,
                                               first=first, term=term, clear=clear, y=y)
            outs.append(y)
        first_beat = Signal(self.beat_layout)
        m.d.sync += [first_beat.valid.eq(emit & ~fresh), first_beat.r.eq(e_r), first_beat.i.eq(e_i),
                     first_beat.j.eq(e_j), first_beat.data.eq(Cat(*outs))]
        out = first_beat
        for k in range(c.latencies.mvm + c.latencies.mvm_reduce - 2):
            nxt = Signal(self.beat_layout, name=f"mvdelay{k}")
            m.d.sync += nxt.eq(out)
            out = nxt
        return out

    # ------------------------------------------------------------------ MFU stage
    def _mfu_stage(self, m, ex, k, unit, beat_in, vec_mems, base):
        c = self.config
        n = c.native_dim
        name = f"mfu{k}_{unit}"
        if unit == "addsub":
            op = ex.as_op[k]
            opnd = ex.as_opnd[k]
            mem = vec_mems[Space.ASVRF][k]
        elif unit == "mul":
            op = ex.mul_op[k]
            opnd = ex.mul_opnd[k]
            mem = vec_mems[Space.MULVRF][k]
        else:
            op = ex.act_op[k]
            opnd = None
            mem = None
        if mem is not None:
            rp = mem.read_port(domain="comb")
            m.d.comb += rp.addr.eq(base(opnd, beat_in.i, beat_in.j) + beat_in.r)
        unit_c = self.units[UNIT_NAMES[unit]]
        outs = []
        for e in range(n):
            y = Signal(16, name=f"{name}_y{e}")
            ports = {"x": beat_in.data[16 * e:16 * (e + 1)], "y": y}
            if unit in ("addsub", "mul"):
                ports["b"] = rp.data[16 * e:16 * (e + 1)]
            if unit in ("addsub", "act"):
                ports["op"] = op
            if unit == "act":
                ports["alpha"] = ex.alpha
            m.submodules[f"{name}_{e}"] = instance(unit_c, UNIT_NAMES[unit], **ports)
            outs.append(y)
        stage = Signal(self.beat_layout, name=f"{name}_s0")
        # A bypassed stage holds no valid beats: the next chain may use it while the last beats of this one
        # would still be in it (mfu_stage > chain_setup), and they would be written again.
        m.d.sync += [stage.valid.eq(beat_in.valid & (op != 0)), stage.r.eq(beat_in.r), stage.i.eq(beat_in.i),
                     stage.j.eq(beat_in.j), stage.data.eq(Cat(*outs))]
        out = stage
        for d in range(c.latencies.mfu_stage - 1):
            nxt = Signal(self.beat_layout, name=f"{name}_s{d + 1}")
            m.d.sync += nxt.eq(out)
            out = nxt
        sel = Signal(self.beat_layout, name=f"{name}_out")
        m.d.comb += sel.eq(Mux(op != 0, out.as_value(), beat_in.as_value()))
        return sel

    # ------------------------------------------------------------------ DMA
    def _dma(self, m, ex, fresh, mems):
        c = self.config
        mm = self.memmap
        T, cpt = c.tile_engines, mm.cpt
        is_dma = Signal()
        m.d.comb += is_dma.eq((ex.kind == STEP_MRD) | (ex.kind == STEP_MWR))
        busy = Signal()
        tb = c.tile_bytes
        need = Signal(32)
        m.d.comb += need.eq(ex.count * tb)
        credit = Signal(32)
        q = Signal(16)   # tile offset
        g = Signal(range(max(cpt, 2)))
        copying = Signal()
        tail = Signal(range(c.dram_latency + 2))
        done = Signal()
        with m.If(fresh):
            m.d.sync += [credit.eq(0), q.eq(0), g.eq(0), tail.eq(0)]
        # the step is live from the cycle after it was taken (fresh) until done
        live = Signal()
        m.d.sync += live.eq(Mux(fresh, is_dma & (ex.kind != STEP_CHAIN), Mux(done, 0, live)))
        m.d.comb += copying.eq(live & (q < ex.count))
        with m.If(copying):
            with m.If(g == cpt - 1):
                m.d.sync += [g.eq(0), q.eq(q + 1)]
            with m.Else():
                m.d.sync += g.eq(g + 1)
        transfer_done = live & (credit >= need)
        with m.If(live & ~transfer_done):
            m.d.sync += credit.eq(credit + c.dram_bytes_per_cycle)
        with m.If(live & transfer_done & ~copying):
            m.d.sync += tail.eq(tail + 1)
        m.d.comb += done.eq(live & transfer_done & ~copying & (tail == c.dram_latency - 1))
        # addresses
        dram_word = Signal(mm.addr_bits + 8)
        m.d.comb += dram_word.eq((ex.tile + q) * cpt + g)
        mrf_tile = Signal(16)
        m.d.comb += mrf_tile.eq(ex.dmrf + q)
        bank = Signal(range(max(T, 2)))
        m.d.comb += bank.eq(mrf_tile % T if T > 1 else 0)
        mrf_word = Signal(mm.addr_bits + 8)
        m.d.comb += mrf_word.eq((mrf_tile // T if T > 1 else mrf_tile) * cpt + g)
        for p in range(mm.tile_parts):  # every part of a tile word moves in the same cycle
            wd = mems[mm.tile_memory("wdram", p)]
            wd_rp = wd.read_port(domain="comb")
            wd_wp = wd.write_port()
            m.d.comb += [wd_rp.addr.eq(dram_word), wd_wp.addr.eq(dram_word)]
            bank_data = []
            for b in range(T):
                mem = mems[mm.tile_memory(f"mrf{b}", p)]
                rp = mem.read_port(domain="comb")
                wp = mem.write_port()
                m.d.comb += [rp.addr.eq(mrf_word), wp.addr.eq(mrf_word), wp.data.eq(wd_rp.data),
                             wp.en.eq(copying & (ex.kind == STEP_MRD) & (bank == b))]
                bank_data.append(rp.data)
            m.d.comb += [wd_wp.data.eq(Array(bank_data)[bank]), wd_wp.en.eq(copying & (ex.kind == STEP_MWR))]
        return done
