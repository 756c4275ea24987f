"""The issue unit of the pipelined NPU (docs/pipeline.md): the scoreboard, in-order issue, the chain table.

On the pipelined machine (``scoreboard_entries > 1``) this replaces the
one-step-at-a-time executor (rtl/executor.py).  Every rule here is a rule of
the cycle model (sim/_dispatch.pyx ``schedule_pipelined``), in the same
cycle: the model's issue cycle ``t`` of a step is the step's first cycle
here, the cycle after the one it is taken from the front end's queue in.

Time values (the cycle a read sequencer becomes free, the write cycle of the
previous chain's last beat, ...) are absolute cycle numbers of the run's
cycle counter, held as signed :data:`TIME_BITS`-bit values ("never" is a
large negative number).
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from npu.config import MFU_STAGES, NpuConfig, bits_for
from npu.spaces import Space
from rtl.executor import ERR_OVERFLOW, ERR_UNSUPPORTED
from rtl.spread import spread_rounds
from rtl.step import FetchControl, StepKind, check_config, check_positive, cost_bits, layouts_for, space_table, \
    stage_vrf, write_cost

#: Bits of an absolute cycle number (signed: "never" is negative).
TIME_BITS = 40
NEVER = -(1 << (TIME_BITS - 2))
#: Bits of an interval bound (addresses and tiles, without wrap-around).
BOUND_BITS = 40


def stage_order(config: NpuConfig) -> list[tuple[int, str]]:
    """The MFU stages in pipeline order (MFU by MFU, stages in MFU_STAGES order): bit i of a stage mask."""
    return [(k, st) for k, units in enumerate(config.mfus) for st in MFU_STAGES if st in units]


def memory_ids(config: NpuConfig) -> dict:
    """A number per memory the scoreboard tracks (the same as sim.timing.TimingModel.memory_ids)."""
    n = config.n_mfus
    ids = {(Space.IVRF, 0): 0, (Space.DRAM, 0): 1}
    ids.update({(Space.ASVRF, k): 2 + k for k in range(n)})
    ids.update({(Space.MULVRF, k): 2 + n + k for k in range(n)})
    ids.update({"mrf": 2 + 2 * n, "wdram": 3 + 2 * n})
    return ids


def interval_layout(config: NpuConfig) -> data.StructLayout:
    return data.StructLayout({"valid": 1, "mem": bits_for(4 + 2 * config.n_mfus), "lo": BOUND_BITS,
                              "hi": BOUND_BITS})


def read_slots(config: NpuConfig) -> int:
    """Intervals a step reads: the v_rd, every binary MFU stage's operand, the MRF tiles of an mv_mul."""
    return 2 + sum(stage_vrf(st) is not None for _, st in stage_order(config))


def entry_layout(config: NpuConfig) -> data.StructLayout:
    iv = interval_layout(config)
    return data.StructLayout({"reads": data.ArrayLayout(iv, read_slots(config)),
                              "writes": data.ArrayLayout(iv, config.write_slots)})


@dataclass
class ChainFacts:
    """Per-chain constants of the issue rules, computed from a chain descriptor (sim/timing.py's table)."""

    width: Signal   # vectors read per iteration
    p: Signal       # cycles per read slot
    lat: Signal     # read latency of the v_rd space
    tail: Signal    # cycles from the MFU entrance to the write
    mask: Signal    # MFU stages used, bit i = stage i of stage_order
    rowp: Signal    # MAC cycles of a row tile (paced by the write port)
    mac: Signal     # MAC cycles of an iteration
    spill: Signal | None = None  # spread rounds (mvm_row_slots > 1): rows the last round completes, less one


def chain_facts(m, config: NpuConfig, chain, name: str) -> ChainFacts:
    c, lat = config, config.latencies
    imm = layouts_for(c).imm
    T, cpt = c.tile_engines, c.cycles_per_tile
    f = ChainFacts(width=Signal(imm, name=f"{name}_width"), p=Signal(cost_bits(c), name=f"{name}_p"),
                   lat=Signal(range(max(c.read_latency(s) for s in Space) + 1), name=f"{name}_lat"),
                   tail=Signal(16, name=f"{name}_tail"),
                   mask=Signal(len(stage_order(c)), name=f"{name}_mask"), rowp=Signal(2 * imm, name=f"{name}_rowp"),
                   mac=Signal(3 * imm, name=f"{name}_mac"))
    p_read = space_table(m, chain.read.space, {s: c.slot_cost(s) for s in Space}, cost_bits(c), f"{name}_pread")
    p_write = write_cost(m, c, chain.write, f"{name}_pwrite")
    used = [chain.mfu[k][st].op != 0 for k, st in stage_order(c)]
    ops = sum(u.as_unsigned() for u in used) if used else Const(0)
    rounds = (chain.cols + (T - 1)) // T if T > 1 else chain.cols
    term = Signal(2 * imm, name=f"{name}_term")
    m.d.comb += [
        f.width.eq(Mux(chain.mvm, chain.cols, chain.rows)),
        f.p.eq(Mux(chain.mvm, p_read, Mux(p_write > p_read, p_write, p_read))),
        f.lat.eq(space_table(m, chain.read.space, {s: c.read_latency(s) for s in Space}, len(f.lat),
                             f"{name}_rlat")),
        f.tail.eq(ops * lat.mfu_stage + lat.vrf_write),
        f.mask.eq(Cat(*used) if used else 0),
        term.eq(rounds * cpt),
        f.rowp.eq(Mux(p_write > term, p_write, term)),
    ]
    if c.mvm_row_slots == 1:
        m.d.comb += f.mac.eq(chain.rows * f.rowp)
    else:  # every write a VRF: the rounds spread over row tiles (rtl.spread); else paced rows
        rounds, spill = spread_rounds(m, c, chain.rows, chain.cols, name)
        f.spill = Signal.like(spill, name=f"{name}_spill")
        m.d.comb += [f.mac.eq(Mux(p_write == 1, rounds * cpt, chain.rows * f.rowp)),
                     f.spill.eq(Mux(p_write == 1, spill, 0))]
    return f


#: the memories the bypass write port writes (docs/pipeline.md unit 11; sim.timing._BYPASS_SPACES)
BYPASS_SPACES = (Space.IVRF, Space.ASVRF, Space.MULVRF)


def bypasses(m, config: NpuConfig, chain, mask, name: str) -> Signal:
    """Whether a chain writes through the MVM's bypass write port (sim.timing.TimingModel.bypasses): the design
    has it (``mvm_bypass``), the chain multiplies, uses no MFU stage (``mask`` 0) and writes vector memories only."""
    out = Signal(name=name)
    if not config.mvm_bypass:
        return out
    vrf_only = []
    for k in range(config.write_slots):
        w = chain.write[k]
        ok = Signal(name=f"{name}_w{k}")
        m.d.comb += ok.eq(~w.valid | Cat(*[w.space == int(s) for s in BYPASS_SPACES]).any())
        vrf_only.append(ok)
    m.d.comb += out.eq(chain.mvm & (mask == 0) & Cat(*vrf_only).all())
    return out


def overtake(m, config: NpuConfig, mask_c, mask_p, name: str) -> Signal:
    """Cycles a chain's first beat must be written later than right behind the previous chain's last one so
    that the two meet at no MFU stage (sim/_dispatch.pyx ``_overtake``): mfu_stage x the largest excess of
    stages the chain uses over those the previous one uses, over every suffix of the pipeline."""
    n = len(stage_order(config))
    worst = Const(0, signed(8))
    nc = np_ = Const(0, signed(8))
    for i in range(n - 1, -1, -1):
        nc = nc + mask_c[i]
        np_ = np_ + mask_p[i]
        d = Signal(signed(8), name=f"{name}_d{i}")
        w = Signal(signed(8), name=f"{name}_w{i}")
        m.d.comb += [d.eq(nc - np_), w.eq(Mux(d > worst, d, worst))]
        worst = w
    out = Signal(16, name=name)
    m.d.comb += out.eq(worst.as_unsigned() * config.latencies.mfu_stage)
    return out


def step_intervals(m, config: NpuConfig, step, facts: ChainFacts, name: str):
    """The read and write intervals of a queued step (a View of Layouts.step), as an entry_layout signal."""
    c = config
    ids = memory_ids(c)
    out = Signal(entry_layout(c), name=name)
    ch, dma = step.chain, step.dma
    is_dma = step.kind == StepKind.DMA
    mem_bits = len(out.reads[0].mem)

    def mem_of(space, mfu):
        valid, mem = Signal(name=f"{name}_mv{len(names)}"), Signal(mem_bits, name=f"{name}_m{len(names)}")
        names.append(mem)
        with m.Switch(space):
            for s in (Space.IVRF, Space.DRAM):
                with m.Case(int(s)):
                    m.d.comb += [valid.eq(1), mem.eq(ids[(s, 0)])]
            for s in (Space.ASVRF, Space.MULVRF):
                with m.Case(int(s)):
                    m.d.comb += [valid.eq(1), mem.eq(ids[(s, 0)] + mfu)]
        return valid, mem

    names = []

    def span(op, width):
        return op.addr + (ch.io - 1) * op.so + (ch.ii - 1) * op.si + width - 1

    def put(slot, valid, mem, lo, hi):
        m.d.comb += [slot.valid.eq(valid), slot.mem.eq(mem), slot.lo.eq(lo), slot.hi.eq(hi)]

    # the v_rd, window included: (width / run - 1) * pitch + run vectors from each iteration's base
    rd = ch.read
    runs = Signal.like(facts.width, name=f"{name}_runs")
    m.d.comb += runs.eq(Mux(rd.run != 0, facts.width // Mux(rd.run != 0, rd.run, 1), 0))
    rwidth = Mux(rd.run != 0, (runs - 1) * rd.pitch + rd.run, facts.width)
    v, mem = mem_of(rd.space, rd.mfu)
    wdram, mrf = ids["wdram"], ids["mrf"]
    with m.If(is_dma):
        with m.If(dma.to_mrf):
            put(out.reads[0], 1, wdram, dma.tile, dma.tile + dma.count - 1)
            put(out.writes[0], 1, mrf, dma.mrf, dma.mrf + dma.count - 1)
        with m.Else():
            put(out.reads[0], 1, mrf, dma.mrf, dma.mrf + dma.count - 1)
            put(out.writes[0], 1, wdram, dma.tile, dma.tile + dma.count - 1)
    with m.Else():
        put(out.reads[0], v, mem, rd.addr, span(rd, rwidth))
        put(out.reads[1], ch.mvm, mrf, ch.mrf, ch.mrf + ch.rows * ch.cols - 1)
        slot = 2
        for k, st in stage_order(c):
            space = stage_vrf(st)
            if space is None:
                continue
            sc = ch.mfu[k][st]
            put(out.reads[slot], sc.op != 0, ids[(space, 0)] + (k if space in (Space.ASVRF, Space.MULVRF) else 0),
                sc.opnd.addr, span(sc.opnd, ch.rows))
            slot += 1
        for k in range(c.write_slots):
            w = ch.write[k]
            wv, wm = mem_of(w.space, w.mfu)
            put(out.writes[k], w.valid & wv, wm, w.addr, span(w, ch.rows))
    return out


def conflict(m, a, b) -> Signal:
    """Whether step intervals ``a`` conflict with an in-flight step's ``b``: a memory both touch, one writes."""
    terms = []
    pairs = [(x, y) for x in a.reads for y in b.writes] + [(x, y) for x in a.writes for y in b.reads] \
        + [(x, y) for x in a.writes for y in b.writes]
    for x, y in pairs:
        terms.append(x.valid & y.valid & (x.mem == y.mem) & (x.lo <= y.hi) & (y.lo <= x.hi))
    out = Signal()
    m.d.comb += out.eq(Cat(*terms).any())
    return out


class IssueUnit(wiring.Component):
    """Run control, the scoreboard and in-order issue of the pipelined machine (docs/pipeline.md).

    The head of the front end's step queue is taken in the first cycle ``T``
    in which every issue condition holds for its first cycle ``T + 1`` (the
    model's issue cycle ``t``):

    * fewer than ``scoreboard_entries`` steps are in flight (a step whose last
      write or transfer cycle is ``T`` counts as done: the model's ``t >= end``);
    * no in-flight step's intervals conflict with the step's (RAW, WAR, WAW on
      one memory's bounding intervals);
    * a chain: the read sequencer has issued the previous chain's last read
      ``L`` and ``t >= L + chain_setup``; its first read's data leaves memory
      after the previous chain's last (``t + p + lat - 1 > L + lat' - 1``); a
      chain without ``mv_mul`` writes its first beat at least ``1 + overtake``
      cycles after the previous chain's last (one with ``mv_mul`` holds the MAC
      start of its first iteration instead: ``behind``, kept per chain);
    * a DMA transfer: the DMA engine is free (or finishes in ``T``).

    Chains get the next entry of a table of ``scoreboard_entries`` chain
    descriptors (their *tag*, which their beats carry); they complete in order
    (their beats never meet), so the table is a ring.  The write cycle of the
    previous chain's last beat comes from its last read's issue for a chain
    without ``mv_mul`` (its reads may wait for the network link; the next
    chain issues after that read anyway), and from a prediction of its MAC schedule, updated as each
    iteration's last read issues (the MVM then runs exactly that schedule).

    Members
    -------
    start, running, cycles, error, fetch, steps : as rtl.executor.Executor's.
    descs : Out(ArrayLayout(Layouts.chain, entries))
        The chain table.
    behind : Out(ArrayLayout(signed(TIME_BITS), entries))
        Per chain, the first cycle its first iteration's MACs may start.
    now : Out(TIME_BITS)
        The cycle counter, as a time value.
    rd_desc : Out(Layouts.chain), rd_tag : Out(tag), rd_start : Out(1)
        The chain the read sequencer runs, and the pulse of its first cycle.
    rd_issue, rd_iter_end, rd_first_iter, rd_chain_end : In(1)
        The read sequencer issued a read; the last of an iteration; the iteration is the chain's first; the
        chain's last read.
    wr_head : Out(tag)
        The oldest chain in flight (the one the write stage writes).
    wr_completing : In(1)
        Its last beat is written in this cycle.
    dma : Out(StepPort(Layouts.dma))
        The transfer for the DMA engine.
    dma_ending : In(1)
        The transfer's last cycle (it completes in the next).
    overflow, unsupported : In(1)
        Errors from the write stage and the network link.
    link_busy : In(1)
        The network link has output vectors to send (rtl/link.py): the run ends after them.
    commit, commit_pc, dma_commit, dma_commit_pc : Out
        A chain / a transfer completed in this cycle; the pc of its last instruction.
    byp, byp_head, byp_completing, byp_commit, byp_commit_pc : with ``mvm_bypass`` only
        The entries whose chains bypass the MFUs (bit per tag); the oldest bypass chain in flight (the one the
        bypass write stage writes) and its last write; a bypass chain completed in this cycle and its pc.
        Chains then complete out of program order (each class in order: MFU-path chains through the write
        stage, bypass chains through the bypass write stage), so each class keeps its tags in a queue of its
        own and a chain issues only into a free entry of the ring (the chain ``entries`` chains earlier has
        completed).
    """

    def __init__(self, *, config: NpuConfig, program_depth: int):
        check_config(config)
        check_positive("program_depth", program_depth)
        from rtl.step import StepPort

        self.config = config
        self.program_depth = program_depth
        lay = layouts_for(config)
        self._step = lay.step(program_depth)
        K = config.scoreboard_entries
        super().__init__({
            "start": In(1),
            "running": Out(1),
            "cycles": Out(32),
            "error": Out(2),
            "fetch": Out(FetchControl()),
            "steps": In(stream.Signature(self._step)),
            "descs": Out(data.ArrayLayout(lay.chain, K)),
            "behind": Out(data.ArrayLayout(signed(TIME_BITS), K)),
            "now": Out(signed(TIME_BITS)),
            "rd_desc": Out(lay.chain),
            "rd_tag": Out(lay.tag),
            "rd_start": Out(1),
            "rd_issue": In(1),
            "rd_iter_end": In(1),
            "rd_first_iter": In(1),
            "rd_chain_end": In(1),
            "wr_head": Out(lay.tag),
            "wr_completing": In(1),
            "dma": Out(StepPort(lay.dma)),
            "dma_ending": In(1),
            "overflow": In(1),
            "unsupported": In(1),
            "link_busy": In(1),
            "commit": Out(1),
            "commit_pc": Out(range(program_depth)),
            "dma_commit": Out(1),
            "dma_commit_pc": Out(range(program_depth)),
            # the MVM bypass (docs/pipeline.md unit 11): which entries bypass, the bypass write stage's chain
            **({"byp": Out(K), "byp_head": Out(lay.tag), "byp_completing": In(1), "byp_commit": Out(1),
                "byp_commit_pc": Out(range(program_depth))} if config.mvm_bypass else {}),
        })

    def elaborate(self, platform):
        m = Module()
        c, lat = self.config, self.config.latencies
        K = c.scoreboard_entries
        lay = layouts_for(c)
        tagw = lay.tag

        # ---- the run
        running = Signal()
        error = Signal(2)
        busy = Signal()
        m.d.comb += [self.running.eq(running), self.error.eq(error), self.fetch.start.eq(self.start),
                     self.fetch.running.eq(running), self.now.eq(self.cycles)]
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.start):
            m.d.sync += [running.eq(1), self.cycles.eq(0), error.eq(0)]
        with m.Elif(running & self.fetch.drained & ~busy):
            m.d.sync += running.eq(0)
        with m.If(self.fetch.unsupported | self.unsupported):
            m.d.sync += error.eq(error | ERR_UNSUPPORTED)
        with m.If(self.overflow):
            m.d.sync += error.eq(error | ERR_OVERFLOW)

        # ---- the scoreboard: K chain entries in a ring, one DMA entry
        ent = Signal(data.ArrayLayout(entry_layout(c), K))
        valid = Signal(K)
        pcs = Signal(data.ArrayLayout(unsigned(len(self.commit_pc)), K))
        head, tail = Signal(tagw), Signal(tagw)
        n_chains = Signal(range(K + 1))
        dma_ent = Signal(entry_layout(c))
        dma_busy, dma_pc = Signal(), Signal.like(self.dma_commit_pc)
        completing = self.wr_completing
        byp_on = c.mvm_bypass
        step = self.steps.payload
        is_chain = step.kind == StepKind.CHAIN
        f = chain_facts(m, c, step.chain, "hd")
        ivs = step_intervals(m, c, step, f, "hd_iv")
        hd_byp = bypasses(m, c, step.chain, f.mask, "hd_byp")
        live = Signal(K)  # entries in flight after this cycle's completion
        in_flight = Signal(range(K + 2))
        if byp_on:  # two completion sources, each in order: a queue of tags per class
            b_completing = self.byp_completing
            oq = [Signal(tagw, name=f"oq{k}") for k in range(K)]
            bq = [Signal(tagw, name=f"bq{k}") for k in range(K)]
            oq_h, oq_t, bq_h, bq_t = (Signal(range(K), name=n) for n in ("oq_h", "oq_t", "bq_h", "bq_t"))
            wr_head, byp_head = Signal(tagw), Signal(tagw)
            m.d.comb += [wr_head.eq(Array(oq)[oq_h]), byp_head.eq(Array(bq)[bq_h]), self.byp_head.eq(byp_head)]
            done_bits = Mux(completing, Const(1, K) << wr_head, 0) | Mux(b_completing, Const(1, K) << byp_head, 0)
            m.d.comb += [live.eq(valid & ~done_bits),
                         in_flight.eq(n_chains - completing - b_completing + (dma_busy & ~self.dma_ending))]
        else:
            wr_head = head
            m.d.comb += [live.eq(valid & ~Mux(completing, Const(1, K) << head, 0)),
                         in_flight.eq(n_chains - completing + (dma_busy & ~self.dma_ending))]
        m.d.comb += [self.wr_head.eq(wr_head),
                     busy.eq((n_chains != 0) | dma_busy | self.commit | self.dma_commit | self.link_busy
                             | (self.byp_commit if byp_on else 0))]
        hazards = [conflict(m, ivs, ent[k]) & live[k] for k in range(K)]
        hazards.append(conflict(m, ivs, dma_ent) & dma_busy & ~self.dma_ending)

        # ---- the read sequencer, the previous chain, the MAC prediction
        now = self.now
        reading = Signal()
        rd_free, ret_last, last_w, pred_free = (Signal(signed(TIME_BITS), init=NEVER, name=n)
                                                for n in ("rd_free", "ret_last", "last_w", "pred_free"))
        prev_mask = Signal(len(f.mask))
        rd_byp = Signal()
        rd_lat, rd_mac, rd_tail = Signal.like(f.lat), Signal.like(f.mac), Signal.like(f.tail)
        rd_behind = Signal(signed(TIME_BITS))
        mvm_lat = lat.mvm + lat.mvm_reduce
        ov = overtake(m, c, f.mask, prev_mask, "hd_ov")
        chain_ok = Signal()
        entry_free = ~live.bit_select(tail, 1) if byp_on else 1  # implied by the count without the bypass
        m.d.comb += chain_ok.eq(~reading & (now + 1 >= rd_free) & (now + f.p + f.lat >= ret_last + 1)
                                & (step.chain.mvm | (now + f.p + f.lat + f.tail >= last_w + 1 + ov)) & entry_free)
        ok = Signal()
        m.d.comb += ok.eq((in_flight < K) & ~Cat(*hazards).any()
                          & Mux(is_chain, chain_ok, ~dma_busy | self.dma_ending))
        take = Signal()
        m.d.comb += [take.eq(running & self.steps.valid & ok), self.steps.ready.eq(take)]

        m.d.sync += [self.rd_start.eq(take & is_chain), self.dma.start.eq(take & ~is_chain)]
        behind = Signal(signed(TIME_BITS))
        m.d.comb += behind.eq(last_w + 3 + ov - f.tail - mvm_lat - f.rowp)
        with m.If(take & is_chain):
            m.d.sync += [ent[tail].eq(ivs), pcs[tail].eq(step.pc), self.descs[tail].eq(step.chain),
                         tail.eq(Mux(tail == K - 1, 0, tail + 1)),
                         self.rd_desc.eq(step.chain), self.rd_tag.eq(tail), reading.eq(1),
                         rd_lat.eq(f.lat), rd_mac.eq(f.mac), rd_tail.eq(f.tail)]
            if byp_on:  # a bypass chain is held by nobody's beats and is nobody's previous chain
                m.d.sync += [self.byp.bit_select(tail, 1).eq(hd_byp), rd_byp.eq(hd_byp)]
                with m.If(hd_byp):
                    m.d.sync += [self.behind[tail].eq(NEVER), rd_behind.eq(NEVER),
                                 Array(bq)[bq_t].eq(tail), bq_t.eq(Mux(bq_t == K - 1, 0, bq_t + 1))]
                with m.Else():
                    m.d.sync += [self.behind[tail].eq(behind), rd_behind.eq(behind), prev_mask.eq(f.mask),
                                 Array(oq)[oq_t].eq(tail), oq_t.eq(Mux(oq_t == K - 1, 0, oq_t + 1))]
            else:
                m.d.sync += [self.behind[tail].eq(behind), rd_behind.eq(behind), prev_mask.eq(f.mask)]
        with m.If(take & ~is_chain):
            m.d.sync += [dma_ent.eq(ivs), dma_pc.eq(step.pc), self.dma.desc.eq(step.dma), dma_busy.eq(1)]
        with m.Elif(self.dma_ending):
            m.d.sync += dma_busy.eq(0)
        m.d.comb += self.dma.active.eq(dma_busy)
        set_bit = Mux(take & is_chain, Const(1, K) << tail, 0)
        if byp_on:
            # a chain may take the entry a completion frees in this cycle: the new one wins
            m.d.sync += [valid.eq((valid & ~done_bits) | set_bit),
                         n_chains.eq(n_chains + (take & is_chain) - completing - b_completing)]
            with m.If(completing):
                m.d.sync += oq_h.eq(Mux(oq_h == K - 1, 0, oq_h + 1))
            with m.If(b_completing):
                m.d.sync += bq_h.eq(Mux(bq_h == K - 1, 0, bq_h + 1))
            m.d.sync += [self.byp_commit.eq(b_completing), self.byp_commit_pc.eq(pcs[byp_head])]
        else:
            clr_bit = Mux(completing, Const(1, K) << head, 0)
            # a full ring takes the next chain into the entry its head frees in this cycle: the new one wins
            m.d.sync += [valid.eq((valid & ~clr_bit) | set_bit),
                         n_chains.eq(n_chains + (take & is_chain) - completing)]
            with m.If(completing):
                m.d.sync += head.eq(Mux(head == K - 1, 0, head + 1))
        m.d.sync += [self.commit.eq(completing), self.commit_pc.eq(pcs[wr_head]),
                     self.dma_commit.eq(self.dma_ending), self.dma_commit_pc.eq(dma_pc)]

        # the read sequencer's progress: when it is free, when its last data returns, the MAC schedule
        with m.If(self.rd_chain_end):
            m.d.sync += [reading.eq(0), rd_free.eq(now + lat.chain_setup), ret_last.eq(now + rd_lat - 1)]
            with m.If(~self.rd_desc.mvm):  # its last beat is written lat - 1 + tail cycles after its last read
                m.d.sync += last_w.eq(now + rd_lat - 1 + rd_tail)
        start_at = Signal(signed(TIME_BITS))
        a = Signal(signed(TIME_BITS))
        m.d.comb += [a.eq(Mux(now + rd_lat > pred_free, now + rd_lat, pred_free)),
                     start_at.eq(Mux(self.rd_first_iter & (rd_behind > a), rd_behind, a))]
        rd_spill = 0
        if f.spill is not None:  # the last round's rows leave the MVM one per cycle
            rd_spill = Signal.like(f.spill)
            with m.If(take & is_chain):
                m.d.sync += rd_spill.eq(f.spill)
        with m.If(self.rd_iter_end & self.rd_desc.mvm):
            m.d.sync += pred_free.eq(start_at + rd_mac)
            with m.If(self.rd_chain_end & ~rd_byp):
                m.d.sync += last_w.eq(start_at + rd_mac - 2 + mvm_lat + rd_tail + rd_spill)

        with m.If(self.start):  # a new run: nothing in flight
            m.d.sync += [valid.eq(0), n_chains.eq(0), head.eq(0), tail.eq(0), dma_busy.eq(0), reading.eq(0),
                         rd_free.eq(NEVER), ret_last.eq(NEVER), last_w.eq(NEVER), pred_free.eq(NEVER),
                         prev_mask.eq(0)]
            if byp_on:
                m.d.sync += [oq_h.eq(0), oq_t.eq(0), bq_h.eq(0), bq_t.eq(0), rd_byp.eq(0)]
        return m
