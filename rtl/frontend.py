"""The front end: fetch and decode of the program into step descriptors."""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig
from npu.isa import BY_MNEMONIC, MFU_OPS, OPCODES, REG_RESET, STAGE_CODES, Reg, encoding_for
from rtl.layout import MemoryMap, instruction_layout
from rtl.step import FetchControl, StepKind, check_config, check_memmap, layouts_for


class FrontEnd(wiring.Component):
    """Fetch and decode, one instruction per cycle, into a queue of step descriptors.

    The program memory is read at ``pc`` and viewed through
    :func:`rtl.layout.instruction_layout` (derived from npu.isa.Encoding).
    ``s_wr`` sets a scalar register; ``v_rd`` opens a chain descriptor
    (:attr:`rtl.step.Layouts.chain`) that snapshots the registers, ``mv_mul``,
    the MFU operations and ``v_wr`` fill it in, ``end_chain`` queues it;
    ``m_rd`` and ``m_wr`` queue a DMA descriptor.  The queue holds
    ``config.step_queue`` steps, so decoding runs ahead of execution, and a full
    queue stalls decoding (the timing model, sim/timing.py, counts on this depth).

    Parameters
    ----------
    config : NpuConfig
        The architecture.
    memmap : MemoryMap
        The memories: the program memory ("prog") is read through ``prog``; its depth bounds ``prog_len``
        and sets the width of a step's pc.

    Members
    -------
    run : In(FetchControl)
        Start of a run and the running flag from the executor; ``drained`` and
        ``unsupported`` back to it.
    prog : In(MemoryMap.read_port("prog"))
        The program memory's read port.
    prog_len : In(range(program depth + 1))
        Instructions in the program.
    steps : Out(stream.Signature(Layouts.step(program depth)))
        The queued steps, oldest first.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap):
        check_config(config)
        check_memmap(memmap, config)
        self.config = config
        self.program_depth = memmap.by_name["prog"].depth
        self._layouts = layouts_for(config)
        self._step = self._layouts.step(self.program_depth)
        super().__init__({
            "run": In(FetchControl()),
            "prog": In(memmap.read_port("prog")),
            "prog_len": In(range(self.program_depth + 1)),
            "steps": Out(stream.Signature(self._step)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        queue = fifo.SyncFIFOBuffered(width=self._step.size, depth=c.step_queue)
        m.submodules.queue = queue
        wiring.connect(m, queue.r_stream, wiring.flipped(self.steps))

        pc = Signal(range(self.program_depth + 1))
        in_chain = Signal()
        cur = Signal(self._step)  # the chain being decoded
        push = data.View(self._step, queue.w_data)
        m.d.comb += [self.prog.addr.eq(pc), push.eq(cur), push.pc.eq(pc)]
        m.d.comb += self.run.drained.eq(~(pc < self.prog_len) & ~in_chain & (queue.level == 0))
        regs = {r: Signal(self._layouts.imm, name=f"reg_{r.name.lower()}") for r in Reg}
        with m.If(self.run.start):
            m.d.sync += [pc.eq(0), in_chain.eq(0)]
            m.d.sync += [regs[r].eq(v) for r, v in REG_RESET.items()]
        with m.Elif(self.run.running & (pc < self.prog_len)):
            m.d.sync += pc.eq(pc + 1)  # every instruction but a push to a full queue advances
            self._decode(m, pc, regs, cur, in_chain, queue, push)
        return m

    def _decode(self, m, pc, regs, cur, in_chain, queue, push):
        c = self.config
        word = data.View(instruction_layout(c), self.prog.data)
        nwr = Signal(range(c.write_slots + 1))  # v_wr decoded in the open chain
        chain = cur.chain
        with m.Switch(self.prog.data[:encoding_for(c).opcode_bits]):
            with m.Case(OPCODES["s_wr"]):
                with m.Switch(word.s_wr.reg):
                    for r in Reg:
                        with m.Case(int(r)):
                            m.d.sync += regs[r].eq(word.s_wr.imm)
            with m.Case(OPCODES["v_rd"]):
                f = word.v_rd
                new = Signal(self._step)  # fields not set here are 0: no mv_mul, no MFU op, no write
                m.d.comb += [
                    new.kind.eq(StepKind.CHAIN), new.chain.rows.eq(regs[Reg.ROWS]), new.chain.cols.eq(regs[Reg.COLS]),
                    new.chain.io.eq(regs[Reg.ITER_OUTER]), new.chain.ii.eq(regs[Reg.ITER_INNER]),
                    new.chain.alpha.eq(regs[Reg.ALPHA]),
                    new.chain.read.run.eq(regs[Reg.WIN_RUN]), new.chain.read.pitch.eq(regs[Reg.WIN_PITCH]),
                    new.chain.read.space.eq(f.space), new.chain.read.mfu.eq(f.mfu),
                    new.chain.read.addr.eq(f.addr), new.chain.read.so.eq(f.so), new.chain.read.si.eq(f.si),
                ]
                m.d.sync += [cur.eq(new), in_chain.eq(1), nwr.eq(0)]
            with m.Case(OPCODES["mv_mul"]):
                m.d.sync += [chain.mvm.eq(1), chain.mrf.eq(word.mv_mul.mrf)]
            for mnem in MFU_OPS:
                d = BY_MNEMONIC[mnem]
                with m.Case(OPCODES[mnem]):
                    f = getattr(word, mnem)
                    for k in range(c.n_mfus):
                        with m.If(f.mfu == k):
                            stage = chain.mfu[k][d.stage]
                            m.d.sync += stage.op.eq(STAGE_CODES[mnem])
                            if d.vrf is not None:
                                m.d.sync += [stage.opnd.addr.eq(f.addr), stage.opnd.so.eq(f.so),
                                             stage.opnd.si.eq(f.si)]
            with m.Case(OPCODES["v_wr"]):
                f = word.v_wr
                for k in range(c.write_slots):
                    with m.If(nwr == k):
                        w = chain.write[k]
                        m.d.sync += [w.valid.eq(1), w.space.eq(f.space), w.mfu.eq(f.mfu), w.addr.eq(f.addr),
                                     w.so.eq(f.so), w.si.eq(f.si)]
                with m.If(nwr == c.write_slots):
                    m.d.comb += self.run.unsupported.eq(1)
                with m.Else():
                    m.d.sync += nwr.eq(nwr + 1)
            with m.Case(OPCODES["end_chain"]):
                m.d.comb += queue.w_en.eq(1)
                with m.If(queue.w_rdy):
                    m.d.sync += in_chain.eq(0)
            for mnem in ("m_rd", "m_wr"):
                with m.Case(OPCODES[mnem]):
                    f = getattr(word, mnem)
                    m.d.comb += [push.kind.eq(StepKind.DMA), push.dma.to_mrf.eq(mnem == "m_rd"),
                                 push.dma.tile.eq(f.tile), push.dma.count.eq(f.count), push.dma.mrf.eq(f.mrf),
                                 queue.w_en.eq(1)]
        with m.If(queue.w_en & ~queue.w_rdy):
            m.d.sync += pc.eq(pc)
