"""The executor: run control, and which step runs next."""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig
from rtl.step import ChainEnd, FetchControl, StepKind, StepPort, check_config, check_positive, layouts_for

#: ``error`` output bits.
ERR_UNSUPPORTED = 1  # a chain the RTL does not implement (too many v_wr, two writes to the output queue)
ERR_OVERFLOW = 2     # the output queue overflowed (the bench did not drain it)


class Executor(wiring.Component):
    """Runs the queued steps one at a time, and the program from ``start`` until nothing is left.

    A step is taken from the front end's queue when no step runs; from the
    next cycle on its descriptor is handed to the components (``start`` in
    that first cycle) until the write stage reports the chain done, or the DMA
    engine the transfer.  The step then commits, and the next may be taken in
    the following cycle.  The run ends when the front end is drained and no
    step runs.  This is the one place that decides what runs when; the
    components only run what they are handed.

    Parameters
    ----------
    config : NpuConfig
        The architecture.
    program_depth : int
        Instruction words the program memory holds (the width of a step's pc).

    Members
    -------
    start : In(1)
        Pulse: start a run (the front end from pc 0, the cycle count from 0, errors cleared).
    running : Out(1)
        High while the run is on.
    cycles : Out(32)
        Cycles since the last start (stops when the run ends).
    error : Out(2)
        ERR_UNSUPPORTED | ERR_OVERFLOW, sticky until start.
    fetch : Out(FetchControl)
        Run control of the front end.
    steps : In(stream.Signature(Layouts.step(program_depth)))
        The front end's queue of steps.
    read, mvm, mfu, write : Out(StepPort(Layouts.chain))
        The running chain, for the read sequencer, the MVM, the MFU chain and the write stage.
    dma : Out(StepPort(Layouts.dma))
        The running transfer, for the DMA engine.
    chain_end : In(ChainEnd)
        The write stage's report on the running chain.
    dma_done : In(1)
        The DMA engine completed the running transfer.
    commit : Out(1), commit_pc : Out(range(program_depth))
        A step completed in this cycle; the pc of its last instruction.
    """

    def __init__(self, *, config: NpuConfig, program_depth: int):
        check_config(config)
        check_positive("program_depth", program_depth)
        self.config = config
        self.program_depth = program_depth
        lay = layouts_for(config)
        self._step = lay.step(program_depth)
        super().__init__({
            "start": In(1),
            "running": Out(1),
            "cycles": Out(32),
            "error": Out(2),
            "fetch": Out(FetchControl()),
            "steps": In(stream.Signature(self._step)),
            "read": Out(StepPort(lay.chain)),
            "mvm": Out(StepPort(lay.chain)),
            "mfu": Out(StepPort(lay.chain)),
            "write": Out(StepPort(lay.chain)),
            "dma": Out(StepPort(lay.dma)),
            "chain_end": In(ChainEnd()),
            "dma_done": In(1),
            "commit": Out(1),
            "commit_pc": Out(range(program_depth)),
        })

    def elaborate(self, platform):
        m = Module()
        # ---- the run
        running = Signal()
        busy = Signal()  # a step runs
        error = Signal(2)
        m.d.comb += [self.running.eq(running), self.error.eq(error),
                     self.fetch.start.eq(self.start), self.fetch.running.eq(running)]
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.start):
            m.d.sync += [running.eq(1), self.cycles.eq(0), error.eq(0)]
        with m.Elif(running & self.fetch.drained & ~busy):
            m.d.sync += running.eq(0)
        # Later assignments win: the order of these is the order of priority.
        with m.If(self.fetch.unsupported):
            m.d.sync += error.eq(error | ERR_UNSUPPORTED)
        with m.If(self.chain_end.overflow):
            m.d.sync += error.eq(error | ERR_OVERFLOW)
        with m.If(self.chain_end.unsupported):
            m.d.sync += error.eq(error | ERR_UNSUPPORTED)

        # ---- steps, one at a time
        step = Signal(self._step)
        first = Signal()  # the step's first cycle: the cycle after it was taken
        take = Signal()
        done = Signal()
        m.d.comb += [self.steps.ready.eq(~busy), take.eq(~busy & self.steps.valid),
                     done.eq(self.chain_end.done | self.dma_done),
                     self.commit.eq(done), self.commit_pc.eq(step.pc)]
        with m.If(take):
            m.d.sync += [step.eq(self.steps.payload), busy.eq(1)]
        with m.Elif(done):
            m.d.sync += busy.eq(0)
        m.d.sync += first.eq(take)
        for port in (self.read, self.mvm, self.mfu, self.write):
            m.d.comb += [port.desc.eq(step.chain), port.start.eq(first),
                         port.active.eq(busy & (step.kind == StepKind.CHAIN))]
        m.d.comb += [self.dma.desc.eq(step.dma), self.dma.start.eq(first),
                     self.dma.active.eq(busy & (step.kind == StepKind.DMA))]
        return m
