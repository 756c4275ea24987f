"""The matrix-vector multiplier: BFP conversion, the circular input buffer, the MAC sequencer and the rows."""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from npu.config import NpuConfig, bits_for
from npu.numerics import flush_windows
from rtl.layout import MemoryMap
from rtl.step import (BufferCredit, StepPort, beat_stream, check_config, check_memmap, delay, layouts_for,
                      write_cost)
from rtl.units import UNIT_NAMES, instance


@dataclass
class _Macs:
    """The MAC sequencer's state and strobes, as the term fetch and the rows use them."""

    it: Signal      # iteration being multiplied
    r: Signal       # output row within it
    i: Signal       # its outer and inner loop indices
    j: Signal
    k: Signal       # round of tile_engines tiles within the row
    g: Signal       # lane group within the round's tiles
    base: Signal    # the iteration's first vector in the buffer
    exmax: Signal   # the iteration's largest activation block exponent (biased; -1: all zero)
    active: Signal  # the sequencer works in this cycle
    term: Signal    # a cycle of products
    first: Signal   # the row's first cycle
    row_end: Signal
    freed: Signal   # the iteration's last row ends: its vectors leave the buffer


@dataclass
class _Round:
    """The geometry of a spread MAC round (docs/pipeline.md, unit 6): the round takes up to ``tile_engines``
    consecutive tiles of the iteration from pair (``_Macs.r``, ``c``), but no tile of a row tile beyond the
    ``eff``-th it touches (``mvm_row_slots``, or 1 for a chain paced by its write port)."""

    c: Signal            # column tile of the round's first tile (its row tile is _Macs.r)
    col: list            # per offset o = 0 .. tile_engines: column tile of the round's o-th tile
    dr: list             # ... and its row tile, counted from the round's first
    valid: list          # per offset o < tile_engines: the round takes its o-th tile
    slot: Signal         # the row slot of the round's first row tile (row tile mod mvm_row_slots)
    n_done: Signal       # row tiles the round completes (the round's first n_done)
    complete: Signal     # they are complete in this cycle (the round's, or its paced row's, last cycle)
    engine_dr: list      # per engine, the row offset of its tile in this round (filled by Mvm._terms)
    engine_ok: list      # per engine, whether it multiplies a tile of this round in this cycle


class Mvm(wiring.Component):
    """The MVM of a chain with ``mv_mul``; other chains' vectors pass through its input register.

    Each arriving vector is converted to the activation BFP format (one
    :class:`rtl.units.BfpBlock` per block) into a circular buffer of
    ``config.mvm_buffer`` vectors, and the largest nonzero block exponent of
    each iteration goes into a ring with one entry per buffer slot.  Once an
    iteration's whole input is there, the MAC sequencer walks output rows; per
    row, rounds of ``tile_engines`` tiles (consecutive MRF addresses, one per
    bank) times ``N / lanes`` lane groups, each cycle ``tile_engines x N x
    lanes`` multiplies.  In each of the N :class:`rtl.units.MvmRow` units,
    block products are integers; each is shifted onto the row's running
    quantum and added to a signed fixed-point accumulator of
    ``ACCUMULATOR_BITS`` bits plus sign (the quantum only rises, by an exact
    right shift, when a larger weight exponent arrives: the flush-window
    argument of npu.numerics.flush_windows makes every step exact).  At the end
    of a row the accumulator is rounded once to fp16.  Reading the next
    iterations overlaps the MACs of the current one, as far as the buffer has
    room; the read sequencer asks for room through ``credit``.

    Parameters
    ----------
    config : NpuConfig
        The architecture.
    memmap : MemoryMap
        The memories: the MRF banks are read through ``mrf``.
    units : dict
        The unit components of :func:`rtl.units.make_units`, instantiated by their module names.

    Members
    -------
    step : In(StepPort(Layouts.chain))
        The running chain.
    vec : In(stream.Signature(Layouts.vec, always_ready=True))
        The read sequencer's vectors.
    credit : In(BufferCredit)
        Room in the buffer.
    mrf : In(MemoryMap.read_ports(every part of every MRF bank))
        Read ports of the MRF.
    beat : Out(stream.Signature(Layouts.beat, always_ready=True))
        Rounded rows (with ``mv_mul``), or the vectors one cycle after they arrived (without); ``mvm +
        mvm_reduce`` cycles after a row's last MAC cycle.
    """

    def _setup(self, config: NpuConfig, memmap: MemoryMap, units: dict):
        """What every MVM (this one and the pipelined one) keeps: the configuration, the units, the MRF banks."""
        check_config(config)
        check_memmap(memmap, config)
        for name in (UNIT_NAMES["mvm_row"], UNIT_NAMES["bfp_block"]):
            if name not in units:
                raise ValueError(f"units must hold {name}, not only {sorted(units)}")
        self.config = config
        self.memmap = memmap
        self._row, self._bfp = units[UNIT_NAMES["mvm_row"]], units[UNIT_NAMES["bfp_block"]]
        self._layouts = layouts_for(config)
        self._banks = [[memmap.tile_memory(f"mrf{b}", p) for p in range(memmap.tile_parts)]
                       for b in range(config.tile_engines)]
        return self._layouts

    def _row_units(self, m: Module, s, words, x, xb, xkeep, e_exmax) -> list:
        """The N row units (MvmRow) on the MRF words of every tile engine; their fp16 outputs."""
        c, mm = self.config, self.memmap
        clear = Signal()
        m.d.comb += clear.eq(s.active & s.first)
        ys = []
        for r in range(c.native_dim):
            y = Signal(16, name=f"mvr{r}")
            p, mpos, epos = mm.row_fields(r)
            w = Cat(*[words[b][p][mpos:mpos + mm.row_mant_bits] for b in range(c.tile_engines)])
            ew = Cat(*[words[b][p][epos:epos + mm.row_exp_bits] for b in range(c.tile_engines)])
            m.submodules[f"row{r}"] = instance(self._row, UNIT_NAMES["mvm_row"], sync=True, w=w, ew=ew, x=x,
                                               xb=xb, xkeep=xkeep, exmax=s.exmax, e_exmax=e_exmax,
                                               first=s.first, term=s.term, clear=clear, y=y)
            ys.append(y)
        return ys

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap, units: dict):
        lay = self._setup(config, memmap, units)
        super().__init__({
            "step": In(StepPort(lay.chain)),
            "vec": In(beat_stream(lay.vec)),
            "credit": In(BufferCredit()),
            "mrf": In(memmap.read_ports([name for parts in self._banks for name in parts])),
            "beat": Out(beat_stream(lay.beat)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        ma, eb, nb = c.act_fmt.mant_bits, c.weight_fmt.exp_bits, c.native_dim // c.block
        buf = memory.Memory(shape=unsigned(c.native_dim * (ma + 1) + nb * eb), depth=c.mvm_buffer, init=[])
        # One entry per iteration in flight: every iteration holds at least one buffer slot until its
        # MACs finish, so at most mvm_buffer iterations are in flight (a shorter ring let the read sequencer,
        # running ahead of slow MACs, overwrite the exponent of an iteration not yet multiplied).
        ring = memory.Memory(shape=unsigned(eb + 2), depth=c.mvm_buffer, init=[])
        m.submodules.buffer = buf
        m.submodules.exmax = ring
        arrived = self._fill(m, buf, ring)
        macs = self._sequencer(m, arrived, ring)
        words, x, xb, xkeep = self._terms(m, macs, buf)
        emit, rows = self._rows(m, macs, words, x, xb, xkeep)
        self._output(m, emit, rows)
        return m

    def _store(self, m, buf, when):
        """Each arriving vector (``when``) converted to BFP blocks and written to the buffer at ``pos`` (the
        caller advances it); returns (arrive, pos, block exponents, block nonzero flags)."""
        c, vec = self.config, self.vec
        block, eb, ma = c.block, c.weight_fmt.exp_bits, c.act_fmt.mant_bits
        mants, exps, nonzero = [], [], []
        for b in range(c.native_dim // block):
            mant = Signal(block * (ma + 1), name=f"cv{b}_mant")
            e, nz = Signal(eb, name=f"cv{b}_e"), Signal(name=f"cv{b}_nz")
            m.submodules[f"cv{b}"] = instance(self._bfp, UNIT_NAMES["bfp_block"], mant=mant, e=e, nz=nz,
                                              x=vec.payload.data[16 * b * block:16 * (b + 1) * block])
            mants.append(mant)
            exps.append(e)
            nonzero.append(nz)
        arrive = Signal()
        m.d.comb += arrive.eq(when)
        pos = Signal(range(c.mvm_buffer))
        bwp = buf.write_port()
        m.d.comb += [bwp.addr.eq(pos), bwp.data.eq(Cat(*mants, *exps)), bwp.en.eq(arrive)]
        return arrive, pos, exps, nonzero

    def _iteration_max(self, m, exps, nonzero, run_max):
        """The largest nonzero block exponent of the iteration with this vector's (``run_max``: before it)."""
        eb = self.config.weight_fmt.exp_bits
        vm = Const(-1, signed(eb + 2))
        for b, (e, nz) in enumerate(zip(exps, nonzero)):
            step = Signal(signed(eb + 2), name=f"vec_max{b}")  # a Signal per step: no exponential tree
            m.d.comb += step.eq(Mux(nz & (e > vm), e, vm))
            vm = step
        return Mux(vm > run_max, vm, run_max)

    def _fill(self, m, buf, ring) -> Signal:
        """Arriving vectors into the buffer, each iteration's largest block exponent into the ring; returns
        the count of iterations wholly arrived."""
        c = self.config
        ex, start, vec = self.step.desc, self.step.start, self.vec
        eb = c.weight_fmt.exp_bits
        arrive, pos, exps, nonzero = self._store(m, buf, vec.valid & ex.mvm & self.step.active)
        # largest nonzero block exponent of the iteration so far (biased; -1: none yet)
        run_max = Signal(signed(eb + 2))
        new_max = self._iteration_max(m, exps, nonzero, run_max)
        arrived = Signal(32)
        ring_w = ring.write_port()
        m.d.comb += [ring_w.addr.eq(arrived[:len(ring_w.addr)]), ring_w.data.eq(new_max.as_unsigned()),
                     ring_w.en.eq(~start & arrive & vec.payload.last)]
        with m.If(start):
            m.d.sync += [pos.eq(0), run_max.eq(-1), arrived.eq(0)]
        with m.Elif(arrive):
            m.d.sync += pos.eq(pos + 1)
            with m.If(vec.payload.last):
                m.d.sync += [arrived.eq(arrived + 1), run_max.eq(-1)]
            with m.Else():
                m.d.sync += run_max.eq(new_max)
        return arrived

    def _sequencer(self, m, arrived, ring) -> _Macs:
        """Rows of each arrived iteration, each ``max(rounds x N / lanes, write cost)`` cycles long."""
        c = self.config
        ex, start = self.step.desc, self.step.start
        T, cpt, imm, eb = c.tile_engines, c.cycles_per_tile, self._layouts.imm, c.weight_fmt.exp_bits
        iters = Signal(2 * imm)
        rounds = Signal(imm)
        term_cycles = Signal(imm + bits_for(cpt) + 1)
        row_cycles = Signal.like(term_cycles)
        # the per-row period also respects the write ports' per-vector cost
        wcost = write_cost(m, c, ex.write, "mvm_wcost")
        m.d.comb += [iters.eq(ex.io * ex.ii), rounds.eq((ex.cols + (T - 1)) // T if T > 1 else ex.cols),
                     term_cycles.eq(rounds * cpt), row_cycles.eq(Mux(wcost > term_cycles, wcost, term_cycles))]
        s = _Macs(it=Signal(32), r=Signal(imm), i=Signal(imm), j=Signal(imm), k=Signal(imm),
                  g=Signal(range(max(cpt, 2))), base=Signal(range(c.mvm_buffer)), exmax=Signal(signed(eb + 2)),
                  active=Signal(), term=Signal(), first=Signal(), row_end=Signal(), freed=Signal())
        cyc = Signal.like(row_cycles)
        ring_r = ring.read_port(domain="comb")
        m.d.comb += [ring_r.addr.eq(s.it[:len(ring_r.addr)]), s.exmax.eq(ring_r.data.as_signed())]
        waiting = (s.r == 0) & (cyc == 0) & (s.it >= arrived)
        m.d.comb += [s.active.eq(self.step.active & ex.mvm & ~start & (s.it < iters) & ~waiting),
                     s.term.eq(s.active & (cyc < term_cycles)), s.first.eq(cyc == 0),
                     s.row_end.eq(s.active & (cyc == row_cycles - 1)), s.freed.eq(s.row_end & (s.r == ex.rows - 1))]
        with m.If(start):
            m.d.sync += [s.it.eq(0), s.r.eq(0), cyc.eq(0), s.k.eq(0), s.g.eq(0), s.i.eq(0), s.j.eq(0), s.base.eq(0)]
        with m.Elif(s.active):
            with m.If(s.row_end):
                m.d.sync += [cyc.eq(0), s.k.eq(0), s.g.eq(0)]
                with m.If(s.r == ex.rows - 1):
                    m.d.sync += [s.r.eq(0), s.it.eq(s.it + 1), s.base.eq(s.base + ex.cols)]
                    with m.If(s.j == ex.ii - 1):
                        m.d.sync += [s.j.eq(0), s.i.eq(s.i + 1)]
                    with m.Else():
                        m.d.sync += s.j.eq(s.j + 1)
                with m.Else():
                    m.d.sync += s.r.eq(s.r + 1)
            with m.Else():
                m.d.sync += cyc.eq(cyc + 1)
                with m.If(s.term):
                    with m.If(s.g == cpt - 1):
                        m.d.sync += [s.g.eq(0), s.k.eq(s.k + 1)]
                    with m.Else():
                        m.d.sync += s.g.eq(s.g + 1)
        # buffer occupancy: +1 per issued read, -cols when an iteration's MACs finish
        used = Signal(range(c.mvm_buffer + 1))
        m.d.comb += self.credit.room.eq(used < c.mvm_buffer)
        with m.If(start):
            m.d.sync += used.eq(0)
        with m.Else():
            m.d.sync += used.eq(used + (self.credit.take & ex.mvm) - Mux(s.freed, ex.cols, 0))
        return s

    def _terms(self, m, s: _Macs, buf, ex=None, spread=None):
        """One cycle of terms: per engine (bank) b, the tile of this round in bank b, and the activations it
        multiplies with their block exponents and flush-window keep bits (shared by all rows).  ``ex`` is the
        descriptor of the chain multiplied (the running step's by default); ``spread`` the round's geometry
        of a spread MVM (:class:`_Round`; then the engines' row offsets go into ``spread.engine_dr``)."""
        c = self.config
        mm = self.memmap
        ex = self.step.desc if ex is None else ex
        n, T, L, block, cpt = c.native_dim, c.tile_engines, c.dpe_lanes, c.block, c.cycles_per_tile
        S, imm = mm.sub, self._layouts.imm
        ma, eb = c.act_fmt.mant_bits, c.weight_fmt.exp_bits
        _, awin = flush_windows(c.weight_fmt, c.act_fmt)
        a0 = Signal(mm.addr_bits + imm + 8)
        if spread is None:
            m.d.comb += a0.eq(ex.mrf + s.r * ex.cols + s.k * T)
        else:  # the round's first tile: pair (r, c) of the iteration
            m.d.comb += a0.eq(ex.mrf + s.r * ex.cols + spread.c)
        words, xs, xbs, xkeeps = [], [], [], []
        for b in range(T):
            off = Signal(range(max(T, 2)), name=f"off{b}")
            if T > 1:  # the address of this round that lands in bank b
                m.d.comb += off.eq((b + T - a0 % T) % T)
            col, ok = Signal(imm + 1, name=f"col{b}"), Signal(name=f"ok{b}")
            a, word_addr = Signal.like(a0, name=f"a{b}"), Signal(mm.addr_bits, name=f"wa{b}")
            if spread is None:
                m.d.comb += [col.eq(s.k * T + off), ok.eq(s.term & (col < ex.cols)), a.eq(a0 + off),
                             word_addr.eq((a // T if T > 1 else a) * cpt + s.g)]
            else:  # the round's tile at offset `off` (column col, dr row tiles below the round's first)
                dr = Signal.like(spread.dr[0], name=f"dr{b}")
                m.d.comb += [col.eq(Array(spread.col[:T])[off]), ok.eq(s.term & Array(spread.valid)[off]),
                             dr.eq(Array(spread.dr[:T])[off]), a.eq(a0 + off),
                             word_addr.eq((a // T if T > 1 else a) * cpt + s.g)]
                spread.engine_dr.append(dr)
                spread.engine_ok.append(ok)
            parts = []  # the tile word of bank b, part by part (rtl/layout.py)
            for name in self._banks[b]:
                port = getattr(self.mrf, name)
                m.d.comb += port.addr.eq(word_addr)
                parts.append(port.data)
            words.append(parts)
            brp = buf.read_port(domain="comb")
            m.d.comb += brp.addr.eq((s.base + col)[:len(brp.addr)])
            xword = brp.data
            for sub in range(mm.nsub):
                lane0 = sub * S  # within the lane group
                # activation sub-group: columns g*L + lane0 .. + S - 1 of input vector `col`
                for l in range(S):
                    sel = Array(xword[(q * L + lane0 + l) * (ma + 1):(q * L + lane0 + l + 1) * (ma + 1)]
                                for q in range(cpt))
                    x = Signal(ma + 1, name=f"x{b}_{sub}_{l}")
                    m.d.comb += x.eq(sel[s.g])
                    xs.append(x)
                xblk = Signal(eb, name=f"xblk{b}_{sub}")
                m.d.comb += xblk.eq(Array(xword[n * (ma + 1) + ((q * L + lane0) // block) * eb:
                                                n * (ma + 1) + ((q * L + lane0) // block + 1) * eb]
                                          for q in range(cpt))[s.g])
                xbs.append(xblk)
                xkeep = Signal(name=f"xkeep{b}_{sub}")
                m.d.comb += xkeep.eq(ok & (xblk + awin >= s.exmax))
                xkeeps.append(xkeep)
        return words, Cat(*xs), Cat(*xbs), Cat(*xkeeps)

    def _rows(self, m, s: _Macs, words, x, xb, xkeep):
        """The N row units; their results (valid one cycle after a row's last cycle) as a beat."""
        c = self.config
        imm, eb = self._layouts.imm, c.weight_fmt.exp_bits
        emit = Signal()
        e_r, e_i, e_j = Signal(imm), Signal(imm), Signal(imm)
        e_exmax = Signal(signed(eb + 2))
        m.d.sync += [emit.eq(s.row_end & ~self.step.start), e_r.eq(s.r), e_i.eq(s.i), e_j.eq(s.j),
                     e_exmax.eq(s.exmax)]
        ys = self._row_units(m, s, words, x, xb, xkeep, e_exmax)
        out = Signal(self._layouts.beat)
        m.d.comb += [out.r.eq(e_r), out.i.eq(e_i), out.j.eq(e_j), out.data.eq(Cat(*ys))]
        return emit, out

    def _output(self, m, emit, rows):
        """The beat: the rows through the rest of the MVM's latency, or the arrived vector, registered."""
        c = self.config
        valid, beat = delay(m, emit & ~self.step.start, rows, c.latencies.mvm + c.latencies.mvm_reduce - 1,
                            "mvdelay")
        vec = self.vec.payload
        read_valid = Signal()
        read = Signal(self._layouts.beat)
        m.d.sync += [read_valid.eq(self.vec.valid & ~self.step.desc.mvm), read.r.eq(vec.r), read.i.eq(vec.i),
                     read.j.eq(vec.j), read.data.eq(vec.data)]
        ex = self.step.desc
        m.d.comb += [self.beat.valid.eq(Mux(ex.mvm, valid, read_valid)),
                     self.beat.payload.eq(Mux(ex.mvm, beat.as_value(), read.as_value()))]


class PipelinedMvm(Mvm):
    """The MVM of the pipelined machine (docs/pipeline.md): iterations of consecutive chains in one buffer.

    Vectors of chains with ``mv_mul`` (``vec.mvm``) go into the circular
    buffer in arrival order, whatever their chain; the read sequencer reserves
    an iteration's ``cols`` slots when its first read's slot starts (``free``
    counts the slots neither reserved nor holding an iteration not yet
    multiplied).  When an iteration's last vector arrives, its largest block
    exponent, its chain's tag and loop indices go into a ring, and the MAC
    sequencer takes the iterations in that order: iteration ``k`` starts when it
    has arrived, iteration ``k - 1`` finished, and, the first iteration of a
    chain, not before the chain's ``behind`` cycle (the MFU overtaking rule,
    computed by the issue unit).  Rows are paced as on the one-step machine
    (``max(write cost, ceil(cols / tile_engines) x N / lanes)`` cycles).  The
    vectors of a chain without ``mv_mul`` pass by, registered, tagged.

    Members
    -------
    descs : In(ArrayLayout(Layouts.chain, entries)), behind : In(ArrayLayout(signed, entries)), now : In
        The chain table, each chain's earliest MAC start, the cycle counter (rtl/issue.py).
    vec : In(stream.Signature(Layouts.vec, always_ready=True))
        The read sequencer's vectors.
    free : Out(range(mvm_buffer + 1)), reserve : In(1), reserve_n : In(imm)
        Buffer credit.
    mrf : In(MemoryMap.read_ports(every part of every MRF bank))
        Read ports of the MRF.
    beat : Out(stream.Signature(Layouts.beat, always_ready=True))
        Rows, ``mvm + mvm_reduce`` cycles after their last MAC cycle, and the vectors passing by.
    byp : In(entries), bypass : Out(stream.Signature(Layouts.beat, always_ready=True))  (``mvm_bypass`` only)
        The chains that bypass the MFUs (a bit per tag, rtl/issue.py), and their rows, in the cycle they would
        have entered the MFUs.
    """

    def __init__(self, *, config: NpuConfig, memmap: MemoryMap, units: dict):
        from rtl.issue import TIME_BITS

        lay = self._setup(config, memmap, units)
        K = config.scoreboard_entries
        wiring.Component.__init__(self, {
            "descs": In(data.ArrayLayout(lay.chain, K)),
            "behind": In(data.ArrayLayout(signed(TIME_BITS), K)),
            "now": In(signed(TIME_BITS)),
            "vec": In(beat_stream(lay.vec)),
            "free": Out(range(config.mvm_buffer + 1)),
            "reserve": In(1),
            "reserve_n": In(lay.imm),
            "mrf": In(memmap.read_ports([name for parts in self._banks for name in parts])),
            "beat": Out(beat_stream(lay.beat)),
            # the MVM bypass (docs/pipeline.md unit 11): rows of the chains whose `byp` bit is set leave here
            **({"byp": In(K), "bypass": Out(beat_stream(lay.beat))} if config.mvm_bypass else {}),
        })

    def _ring_layout(self):
        lay = self._layouts
        return data.StructLayout({"exmax": self.config.weight_fmt.exp_bits + 2, "tag": lay.tag, "i": lay.imm,
                                  "j": lay.imm})

    def elaborate(self, platform):
        m = Module()
        c = self.config
        ma, eb, nb = c.act_fmt.mant_bits, c.weight_fmt.exp_bits, c.native_dim // c.block
        buf = memory.Memory(shape=unsigned(c.native_dim * (ma + 1) + nb * eb), depth=c.mvm_buffer, init=[])
        ring = memory.Memory(shape=self._ring_layout(), depth=c.mvm_buffer, init=[])
        m.submodules.buffer = buf
        m.submodules.exmax = ring
        arrived = self._fill_tagged(m, buf, ring)
        if c.mvm_row_slots == 1:
            macs, ex, tag = self._sequencer_tagged(m, arrived, ring)
            words, x, xb, xkeep = self._terms(m, macs, buf, ex)
            emit, rows = self._rows_tagged(m, macs, words, x, xb, xkeep, tag)
        else:
            macs, ex, tag, rnd = self._sequencer_spread(m, arrived, ring)
            words, x, xb, xkeep = self._terms(m, macs, buf, ex, rnd)
            emit, rows = self._rows_spread(m, macs, words, x, xb, xkeep, tag, rnd)
        self._output_tagged(m, emit, rows)
        return m

    def _fill_tagged(self, m, buf, ring) -> Signal:
        c = self.config
        vec = self.vec
        eb = c.weight_fmt.exp_bits
        arrive, pos, exps, nonzero = self._store(m, buf, vec.valid & vec.payload.mvm)
        run_max = Signal(signed(eb + 2), init=-1)
        new_max = self._iteration_max(m, exps, nonzero, run_max)
        arrived = Signal(32)
        ring_w = ring.write_port()
        m.d.comb += [ring_w.addr.eq(arrived[:len(ring_w.addr)]), ring_w.data.exmax.eq(new_max.as_unsigned()),
                     ring_w.data.tag.eq(vec.payload.tag), ring_w.data.i.eq(vec.payload.i),
                     ring_w.data.j.eq(vec.payload.j), ring_w.en.eq(arrive & vec.payload.last)]
        with m.If(arrive):
            m.d.sync += pos.eq(pos + 1)
            with m.If(vec.payload.last):
                m.d.sync += [arrived.eq(arrived + 1), run_max.eq(-1)]
            with m.Else():
                m.d.sync += run_max.eq(new_max)
        return arrived

    def _ring_head(self, m, ring):
        """The MAC sequencer's state and the ring entry it works on (the iteration ``s.it``): (state, entry,
        its tag, its chain's descriptor); both sequencers (one row tile a round, spread rounds) start here."""
        c = self.config
        imm, cpt, eb = self._layouts.imm, c.cycles_per_tile, c.weight_fmt.exp_bits
        s = _Macs(it=Signal(32), r=Signal(imm), i=Signal(imm), j=Signal(imm), k=Signal(imm),
                  g=Signal(range(max(cpt, 2))), base=Signal(range(c.mvm_buffer)), exmax=Signal(signed(eb + 2)),
                  active=Signal(), term=Signal(), first=Signal(), row_end=Signal(), freed=Signal())
        ring_r = ring.read_port(domain="comb")
        entry = ring_r.data
        tag = Signal(self._layouts.tag)
        ex = Signal(self._layouts.chain)
        m.d.comb += [ring_r.addr.eq(s.it[:len(ring_r.addr)]), s.exmax.eq(entry.exmax.as_signed()),
                     tag.eq(entry.tag), s.i.eq(entry.i), s.j.eq(entry.j), ex.eq(self.descs[tag])]
        return s, entry, tag, ex

    def _sequencer_tagged(self, m, arrived, ring):
        c = self.config
        T, cpt, imm = c.tile_engines, c.cycles_per_tile, self._layouts.imm
        s, entry, tag, ex = self._ring_head(m, ring)
        rounds = Signal(imm)
        term_cycles = Signal(imm + bits_for(cpt) + 1)
        row_cycles = Signal.like(term_cycles)
        wcost = write_cost(m, c, ex.write, "mvm_wcost")
        m.d.comb += [rounds.eq((ex.cols + (T - 1)) // T if T > 1 else ex.cols),
                     term_cycles.eq(rounds * cpt), row_cycles.eq(Mux(wcost > term_cycles, wcost, term_cycles))]
        cyc = Signal.like(row_cycles)
        begin = (s.r == 0) & (cyc == 0)
        first_iter = (entry.i == 0) & (entry.j == 0)
        waiting = begin & ((s.it >= arrived) | (first_iter & (self.now < self.behind[tag])))
        m.d.comb += [s.active.eq((s.it < arrived) & ~waiting),
                     s.term.eq(s.active & (cyc < term_cycles)), s.first.eq(cyc == 0),
                     s.row_end.eq(s.active & (cyc == row_cycles - 1)), s.freed.eq(s.row_end & (s.r == ex.rows - 1))]
        with m.If(s.active):
            with m.If(s.row_end):
                m.d.sync += [cyc.eq(0), s.k.eq(0), s.g.eq(0)]
                with m.If(s.r == ex.rows - 1):
                    m.d.sync += [s.r.eq(0), s.it.eq(s.it + 1), s.base.eq(s.base + ex.cols)]
                with m.Else():
                    m.d.sync += s.r.eq(s.r + 1)
            with m.Else():
                m.d.sync += cyc.eq(cyc + 1)
                with m.If(s.term):
                    with m.If(s.g == cpt - 1):
                        m.d.sync += [s.g.eq(0), s.k.eq(s.k + 1)]
                    with m.Else():
                        m.d.sync += s.g.eq(s.g + 1)
        # buffer slots: reserved by the read sequencer, freed when an iteration's MACs finish
        used = Signal(range(c.mvm_buffer + 1))
        m.d.comb += self.free.eq(c.mvm_buffer - used)
        m.d.sync += used.eq(used + Mux(self.reserve, self.reserve_n, 0) - Mux(s.freed, ex.cols, 0))
        return s, ex, tag

    def _rows_tagged(self, m, s: _Macs, words, x, xb, xkeep, tag):
        c = self.config
        imm, eb = self._layouts.imm, c.weight_fmt.exp_bits
        emit = Signal()
        e_r, e_i, e_j, e_tag = Signal(imm), Signal(imm), Signal(imm), Signal.like(tag)
        e_exmax = Signal(signed(eb + 2))
        m.d.sync += [emit.eq(s.row_end), e_r.eq(s.r), e_i.eq(s.i), e_j.eq(s.j), e_tag.eq(tag), e_exmax.eq(s.exmax)]
        ys = self._row_units(m, s, words, x, xb, xkeep, e_exmax)
        out = Signal(self._layouts.beat)
        m.d.comb += [out.r.eq(e_r), out.i.eq(e_i), out.j.eq(e_j), out.tag.eq(e_tag), out.data.eq(Cat(*ys))]
        return emit, out

    def _output_tagged(self, m, emit, rows):
        c = self.config
        valid, beat = delay(m, emit, rows, c.latencies.mvm + c.latencies.mvm_reduce - 1, "mvdelay")
        vec = self.vec.payload
        read_valid = Signal()
        read = Signal(self._layouts.beat)
        m.d.sync += [read_valid.eq(self.vec.valid & ~vec.mvm), read.r.eq(vec.r), read.i.eq(vec.i),
                     read.j.eq(vec.j), read.tag.eq(vec.tag), read.data.eq(vec.data)]
        if c.mvm_bypass:  # a bypass chain's rows go to the bypass write stage, beside the MFUs' beats
            byp = Signal()
            m.d.comb += [byp.eq(valid & self.byp.bit_select(beat.tag, 1)), self.bypass.valid.eq(byp),
                         self.bypass.payload.eq(beat)]
            valid = valid & ~byp
        m.d.comb += [self.beat.valid.eq(valid | read_valid),
                     self.beat.payload.eq(Mux(valid, beat.as_value(), read.as_value()))]

    def _sequencer_spread(self, m, arrived, ring):
        """MAC rounds over the (row tile, column tile) pairs of each arrived iteration (docs/pipeline.md, unit 6).

        A round lasts ``cycles_per_tile`` cycles and takes the next up-to-``tile_engines`` pairs in MRF
        address order, touching at most ``mvm_row_slots`` row tiles (spread mode: every write of the chain
        costs one cycle) or one (paced mode: then a row tile's rounds are padded to the write port's cost, as on
        the one-row MVM).  The rows a round completes are reported by ``complete``/``n_done``.
        """
        c = self.config
        T, cpt, S, imm = c.tile_engines, c.cycles_per_tile, c.mvm_row_slots, self._layouts.imm
        s, entry, tag, ex = self._ring_head(m, ring)
        rounds = Signal(imm)
        term_cycles = Signal(imm + bits_for(cpt) + 1)
        row_cycles = Signal.like(term_cycles)
        pad_need = Signal.like(term_cycles)
        wcost = write_cost(m, c, ex.write, "mvm_wcost")
        eff = Signal(range(S + 1))
        m.d.comb += [rounds.eq((ex.cols + (T - 1)) // T if T > 1 else ex.cols),
                     term_cycles.eq(rounds * cpt), row_cycles.eq(Mux(wcost > term_cycles, wcost, term_cycles)),
                     pad_need.eq(row_cycles - term_cycles), eff.eq(Mux(wcost == 1, S, 1))]
        # the round's tiles: offsets o = 0 .. T from pair (r, c0), wrapping into the next row tile at cols
        c0 = Signal(imm)
        drw = bits_for(T + 1)
        col, dr, valid = [c0], [Const(0, drw)], []
        for o in range(1, T + 1):
            co, do = Signal(imm, name=f"rcol{o}"), Signal(drw, name=f"rdr{o}")
            wrap = col[-1] == ex.cols - 1
            m.d.comb += [co.eq(Mux(wrap, 0, col[-1] + 1)), do.eq(dr[-1] + wrap)]
            col.append(co)
            dr.append(do)
        for o in range(T):
            v = Signal(name=f"rvalid{o}")
            m.d.comb += v.eq((dr[o] < eff) & (s.r + dr[o] < ex.rows))
            valid.append(v)
        n_done, ncol = dr[T], col[T]  # the first tile the round does not take (its count is monotone in o)
        for o in reversed(range(T)):
            n_done, ncol = Mux(valid[o], n_done, dr[o]), Mux(valid[o], ncol, col[o])
        rnd = _Round(c=c0, col=col, dr=dr, valid=valid, slot=Signal(range(max(S, 2))), n_done=Signal(drw),
                     complete=Signal(), engine_dr=[], engine_ok=[])
        next_c = Signal(imm)
        next_r = Signal(imm + 1)
        m.d.comb += [rnd.n_done.eq(n_done), next_c.eq(ncol), next_r.eq(s.r + rnd.n_done)]
        pad, pcyc = Signal(), Signal.like(row_cycles)
        begin = (s.r == 0) & (c0 == 0) & (s.g == 0) & ~pad
        first_iter = (entry.i == 0) & (entry.j == 0)
        waiting = begin & ((s.it >= arrived) | (first_iter & (self.now < self.behind[tag])))
        round_end, enter_pad, pad_end, adv = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [s.active.eq((s.it < arrived) & ~waiting), s.term.eq(s.active & ~pad), s.first.eq(s.g == 0),
                     round_end.eq(s.term & (s.g == cpt - 1)),
                     enter_pad.eq(round_end & (rnd.n_done != 0) & (pad_need != 0)),
                     pad_end.eq(s.active & pad & (pcyc == pad_need - 1)),
                     adv.eq((round_end & ~enter_pad) | pad_end),
                     rnd.complete.eq(adv & (rnd.n_done != 0)), s.freed.eq(adv & (next_r == ex.rows))]
        with m.If(s.term):
            m.d.sync += s.g.eq(Mux(s.g == cpt - 1, 0, s.g + 1))
        with m.If(enter_pad):
            m.d.sync += [pad.eq(1), pcyc.eq(0)]
        with m.Elif(pad_end):
            m.d.sync += pad.eq(0)
        with m.Elif(pad & s.active):
            m.d.sync += pcyc.eq(pcyc + 1)
        slot_sum = rnd.slot + rnd.n_done
        with m.If(adv):
            with m.If(next_r == ex.rows):
                m.d.sync += [s.r.eq(0), c0.eq(0), rnd.slot.eq(0), s.it.eq(s.it + 1), s.base.eq(s.base + ex.cols)]
            with m.Else():
                m.d.sync += [s.r.eq(next_r), c0.eq(next_c), rnd.slot.eq(Mux(slot_sum >= S, slot_sum - S, slot_sum))]
        # buffer slots: reserved by the read sequencer, freed when an iteration's MACs finish
        used = Signal(range(c.mvm_buffer + 1))
        m.d.comb += self.free.eq(c.mvm_buffer - used)
        m.d.sync += used.eq(used + Mux(self.reserve, self.reserve_n, 0) - Mux(s.freed, ex.cols, 0))
        return s, ex, tag, rnd


    def _rows_spread(self, m, s: _Macs, words, x, xb, xkeep, tag, rnd: _Round):
        """The N row units with one accumulator per row slot (slot = row tile mod mvm_row_slots, so the row
        tiles of a round have distinct slots and a row continued from the previous round keeps its own), and
        the serializer: the rows a round completes leave one per cycle in row order from the next cycle on (the
        first straight from its accumulator, the others from the shadows taken in that cycle)."""
        c, mm = self.config, self.memmap
        T, S, imm, eb = c.tile_engines, c.mvm_row_slots, self._layouts.imm, c.weight_fmt.exp_bits
        mask, sfirst = Signal(S * T), Signal(S)
        firsts = [[] for _ in range(S)]
        for b in range(T):
            sum_b = rnd.slot + rnd.engine_dr[b]
            slot_b = Signal(range(max(2 * S, T + S)), name=f"eslot{b}")
            m.d.comb += slot_b.eq(Mux(sum_b >= S, sum_b - S, sum_b))
            new_b = (rnd.engine_dr[b] != 0) | (rnd.c == 0)  # the tile's row tile starts in this round
            for sl in range(S):
                m.d.comb += mask[sl * T + b].eq(slot_b == sl)
                firsts[sl].append(rnd.engine_ok[b] & new_b & (slot_b == sl))
        m.d.comb += sfirst.eq(Cat(*[Cat(*f).any() & s.first for f in firsts]))
        sv, sq, sn = Signal(), Signal(range(S + 1)), Signal(range(S + 1))
        sslot, srow, si, sj, stag = Signal(range(max(S, 2))), Signal(imm), Signal(imm), Signal(imm), Signal.like(tag)
        sexmax = Signal(signed(eb + 2))
        with m.If(rnd.complete):
            m.d.sync += [sv.eq(1), sq.eq(0), sn.eq(rnd.n_done), sslot.eq(rnd.slot), srow.eq(s.r), si.eq(s.i),
                         sj.eq(s.j), stag.eq(tag), sexmax.eq(s.exmax)]
        with m.Elif(sv):
            m.d.sync += [sv.eq(sq + 1 < sn), sq.eq(sq + 1), srow.eq(srow + 1),
                         sslot.eq(Mux(sslot == S - 1, 0, sslot + 1))]
        ys = []
        for r in range(c.native_dim):
            y = Signal(16, name=f"mvr{r}")
            p, mpos, epos = mm.row_fields(r)
            w = Cat(*[words[b][p][mpos:mpos + mm.row_mant_bits] for b in range(T)])
            ew = Cat(*[words[b][p][epos:epos + mm.row_exp_bits] for b in range(T)])
            m.submodules[f"row{r}"] = instance(self._row, UNIT_NAMES["mvm_row"], sync=True, w=w, ew=ew, x=x, xb=xb,
                                               xkeep=xkeep, exmax=s.exmax, e_exmax=sexmax, term=s.term, mask=mask,
                                               sfirst=sfirst, osel=sslot[:bits_for(S)] if S > 1 else 0,
                                               oshadow=sq != 0, ocap=sv & (sq == 0), y=y)
            ys.append(y)
        out = Signal(self._layouts.beat)
        m.d.comb += [out.r.eq(srow), out.i.eq(si), out.j.eq(sj), out.tag.eq(stag), out.data.eq(Cat(*ys))]
        return sv, out
