"""The NPU's repeated datapath units, each its own component, converted to Verilog once per configuration.

The MVM (rtl/mvm.py) and the MFU stages (rtl/mfu.py) instantiate these with
``amaranth.hdl.Instance`` under the fixed module names of :data:`UNIT_NAMES`
(N, N / block or N per MFU stage copies), so Python elaboration, Yosys and
Verilator each see one definition per unit instead of every copy flattened
into its user; rtl/generate.py writes the definitions next to the top.

* :class:`MvmRow` -- one output row of the MVM: the ``T x lanes`` products of
  a MAC cycle, the row's exact fixed-point accumulator with its running weight
  exponent, and the final fp16 rounding (``npu_mvm_row``, N instances).
* :class:`BfpBlock` -- quantizes one BFP block of the MVM's input vector
  (``npu_bfp_block``, N / block instances).
* :data:`MFU_UNITS` -- one element of each MFU stage (:data:`npu.config.MFU_STAGES`):
  :class:`MfuAddSub`, :class:`MfuMul`, :class:`MfuAct` (``npu_mfu_addsub``,
  ``npu_mfu_mul``, ``npu_mfu_act``, N per stage).  An ``op`` port takes the
  operation's code within its stage (:data:`npu.isa.STAGE_CODES`).
* :class:`Fp16Reduce` -- one node of an MFU stage's reduction tree across the lanes
  (:class:`Fp16Reduce`: ``npu_mfu_sum``, ``npu_mfu_max``, N - 1 per tree), so the trees
  too are instances of one definition rather than N - 1 adders flattened into their stage.

All arithmetic comes from rtl/fp16.py; every width from the configuration.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from npu.config import MFU_STAGES, MfuUnit, NpuConfig, bits_for
from npu.isa import ACT_TABLE_OPS, STAGE_CODES, STAGE_OPS
from npu.numerics import (ACCUMULATOR_BITS, ACT_ABSOLUTE, ACT_ENTRIES_PER_SIGN, ACT_FUNCTIONS, ACT_LINEAR, ACT_SATURATE,
                          ACT_SEG_BITS, ALL_ACTIVATIONS, SCALED_SEG_BITS, activation_table, flush_windows,
                          fp16_bits, scaled_table)
from rtl import fp16 as F
from rtl.layout import MemoryMap

#: Verilog module name of each unit (fixed: the build of one configuration holds one definition of each).
UNIT_NAMES = {"mvm_row": "npu_mvm_row", "bfp_block": "npu_bfp_block", **{s: f"npu_mfu_{s}" for s in MFU_STAGES},
              "reduce_sum": "npu_mfu_sum", "reduce_max": "npu_mfu_max"}


def stage_op_bits(stage: str) -> int:
    """Bits of an MFU stage's operation code: 0 (bypassed) .. the number of the stage's operations."""
    return bits_for(len(STAGE_OPS[stage]) + 1)


class MvmRow(wiring.Component):
    """One output row of the MVM (see :class:`rtl.mvm.Mvm`).

    Shared by all rows (driven once by the MAC sequencer): ``x`` the activation
    mantissas of this cycle (engine b, lane l at ``(b * lanes + l) * (ma + 1)``),
    ``xb`` their block exponents and ``xkeep`` whether each (engine, sub-group)
    block is inside the flush window, per (engine, sub-group); ``exmax`` the
    iteration's largest activation block exponent; ``first``/``term``/``clear``
    the sequencer's row-start, product-cycle and row-clear strobes; ``e_exmax``
    the exponent of the row being rounded.  Per row: ``w`` the weight
    mantissas and ``ew`` the weight block exponents of this cycle.  ``y`` is
    the rounded fp16 result of the accumulator (0 for an all-zero row).
    """

    def __init__(self, config: NpuConfig, memmap: MemoryMap):
        c = self.config = config
        self.T, self.L = c.tile_engines, c.dpe_lanes
        self.S, self.nsub = memmap.sub, memmap.nsub
        self.ma, self.mw, self.eb = c.act_fmt.mant_bits, c.weight_fmt.mant_bits, c.weight_fmt.exp_bits
        T, L, nsub, eb = self.T, self.L, self.nsub, self.eb
        self.slots = c.mvm_row_slots
        if self.slots == 1:
            control = {"first": In(1), "term": In(1), "clear": In(1)}
        else:  # one accumulator per row slot, each summing the engines of its mask; rows leave one per cycle
            control = {"term": In(1), "mask": In(self.slots * T), "sfirst": In(self.slots),
                       "osel": In(range(self.slots)), "oshadow": In(1), "ocap": In(1)}
        super().__init__({
            "w": In(T * L * (self.mw + 1)), "ew": In(T * nsub * eb),
            "x": In(T * L * (self.ma + 1)), "xb": In(T * nsub * eb), "xkeep": In(T * nsub),
            "exmax": In(signed(eb + 2)), "e_exmax": In(signed(eb + 2)),
            **control,
            "y": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        T, L, S, nsub = self.T, self.L, self.S, self.nsub
        ma, mw, eb = self.ma, self.mw, self.eb
        emin = c.weight_fmt.emin
        wwin, awin = flush_windows(c.weight_fmt, c.act_fmt)
        terms = []  # (t, xb, ew) of every engine and sub-group
        for b in range(T):
            for s in range(nsub):
                g = b * nsub + s
                lane0 = b * L + s * S
                ws = [self.w[(lane0 + l) * (mw + 1):(lane0 + l + 1) * (mw + 1)].as_signed() for l in range(S)]
                xs = [self.x[(lane0 + l) * (ma + 1):(lane0 + l + 1) * (ma + 1)].as_signed() for l in range(S)]
                xblk = self.xb[g * eb:(g + 1) * eb]
                ew = self.ew[g * eb:(g + 1) * eb]
                prod = ws[0] * xs[0]
                for l in range(1, S):
                    prod = prod + ws[l] * xs[l]
                t = Signal(signed((ma + 1) + (mw + 1) + bits_for(S) + 1), name=f"t{b}_{s}")
                m.d.comb += t.eq(Mux(self.xkeep[g], prod, 0))
                terms.append((t, xblk, ew))

        if self.slots == 1:
            acc, ewr, ewv = self._accumulate(m, terms, self.first, self.term, self.clear, "")
        else:
            acc, ewr, ewv = self._slots(m, terms)

        # ---- the row's result, rounded once to fp16
        pexp = Signal(signed(eb + 4))
        m.d.comb += pexp.eq(self.e_exmax + emin - awin + ewr.as_unsigned() + emin - wwin - (ma - 1) - (mw - 1))
        acc_bits = ACCUMULATOR_BITS + 1
        neg = acc < 0
        mag = Signal(acc_bits + 1)
        m.d.comb += mag.eq(Mux(neg, -acc, acc))
        y = F.round_fp16(m, neg, mag, pexp, name="mvr")
        m.d.comb += self.y.eq(Mux(ewv, y, 0))
        return m

    def _accumulate(self, m, terms, first, term, clear, sfx: str):
        """The exact accumulator of ``terms`` ((product, activation block exponent, weight block exponent) per
        engine and sub-group): the running quantum only rises, by an exact right shift.  Returns its registers
        (accumulator, weight exponent, any nonzero term so far)."""
        c = self.config
        eb = self.eb
        wwin, awin = flush_windows(c.weight_fmt, c.act_fmt)
        acc_bits = ACCUMULATOR_BITS + 1
        win = awin + wwin
        acc = Signal(signed(acc_bits + 2), name=f"acc{sfx}")
        ewr = Signal(eb, name=f"ewr{sfx}")
        ewv = Signal(name=f"ewv{sfx}")
        exmax = self.exmax
        old_acc = Mux(first, 0, acc)
        old_v = ~first & ewv
        new_ew = Mux(old_v, ewr, 0)
        new_v = old_v
        for idx, (t, xb, ew) in enumerate(terms):
            take = (t != 0) & (~new_v | (ew > new_ew))
            step_ew = Signal(eb, name=f"new_ew{sfx}{idx}")  # a Signal per step: no exponential expression tree
            m.d.comb += step_ew.eq(Mux(take, ew, new_ew))
            new_ew = step_ew
            step_v = Signal(name=f"new_v{sfx}{idx}")
            m.d.comb += step_v.eq(new_v | (t != 0))
            new_v = step_v
        ne = Signal(eb, name=f"ne{sfx}")
        nv = Signal(name=f"nv{sfx}")
        m.d.comb += [ne.eq(new_ew), nv.eq(new_v)]
        delta = Signal(eb + 1, name=f"delta{sfx}")
        m.d.comb += delta.eq(Mux(old_v, ne - ewr, 0))
        shifted = Signal.like(acc, name=f"accs{sfx}")
        m.d.comb += shifted.eq(Mux(delta > acc_bits + 1, Mux(old_acc < 0, -1, 0), old_acc >> delta[:7]))
        total = shifted
        for idx, (t, xb, ew) in enumerate(terms):
            k = Signal(signed(eb + 3), name=f"k{sfx}{idx}")
            m.d.comb += k.eq(xb.as_unsigned() - exmax + awin + ew.as_unsigned() - ne + wwin)
            kc = Signal(range(win + 1), name=f"kc{sfx}{idx}")
            m.d.comb += kc.eq(Mux(k < 0, 0, Mux(k > win, win, k[:len(kc)])))
            total = total + Mux(t != 0, t << kc, 0)
        with m.If(term):
            m.d.sync += [acc.eq(total), ewr.eq(ne), ewv.eq(nv)]
        if clear is not None:
            with m.Elif(clear):
                m.d.sync += [acc.eq(0), ewv.eq(0)]
        return acc, ewr, ewv

    def _slots(self, m, terms):
        """``mvm_row_slots`` accumulators, slot s summing the terms of the engines in its ``mask`` and starting
        a new row with ``sfirst[s]``; on ``ocap`` every slot is copied into its shadow (the rows a round
        completed wait there for their turn to leave).  Returns the registers of slot ``osel``, from the
        shadows with ``oshadow``."""
        T, nsub = self.T, self.nsub
        live, shadow = [], []
        for s in range(self.slots):
            masked = []
            for g, (t, xb, ew) in enumerate(terms):
                ts = Signal.like(t, name=f"t_s{s}_{g}")
                m.d.comb += ts.eq(Mux(self.mask[s * T + g // nsub], t, 0))
                masked.append((ts, xb, ew))
            regs = self._accumulate(m, masked, self.sfirst[s], self.term, None, f"_s{s}_")
            held = [Signal.like(r, name=f"{r.name}h") for r in regs]
            with m.If(self.ocap):
                m.d.sync += [h.eq(r) for h, r in zip(held, regs)]
            live.append(regs)
            shadow.append(held)
        out = [Signal.like(r, name=f"out_{r.name}") for r in live[0]]
        with m.Switch(self.osel):
            for s in range(self.slots):
                with m.Case(s):
                    m.d.comb += [o.eq(Mux(self.oshadow, h, r)) for o, h, r in zip(out, shadow[s], live[s])]
        return out


class BfpBlock(wiring.Component):
    """One BFP block of the MVM's input: ``x`` (block fp16 elements) -> ``mant`` (two's complement, element k
    at ``k * (ma + 1)``), ``e`` (biased shared exponent), ``nz`` (any mantissa nonzero)."""

    def __init__(self, config: NpuConfig):
        self.config = config
        self.block = config.block
        self.ma, self.eb = config.act_fmt.mant_bits, config.weight_fmt.exp_bits
        super().__init__({"x": In(16 * self.block), "mant": Out(self.block * (self.ma + 1)),
                          "e": Out(self.eb), "nz": Out(1)})

    def elaborate(self, platform):
        m = Module()
        elems = [self.x[16 * k:16 * (k + 1)] for k in range(self.block)]
        mants, e, nz = F.bfp_block(m, elems, self.eb, self.ma, name="cv")
        m.d.comb += [self.mant.eq(Cat(*[x.as_unsigned() for x in mants])), self.e.eq(e), self.nz.eq(nz)]
        return m


class MfuAddSub(wiring.Component):
    """One element of an add/sub/max/min stage: ``y = op(x, b)`` (0 passes x)."""

    stage = MfuUnit.ADDSUB.value

    def __init__(self):
        super().__init__({"x": In(16), "b": In(16), "op": In(stage_op_bits(self.stage)), "y": Out(16)})

    def elaborate(self, platform):
        m = Module()
        x, b, op = self.x, self.b, self.op
        code = STAGE_CODES
        # one adder: a_sub_b adds -b, b_sub_a adds -x
        xa = Mux(op == code["vv_b_sub_a"], x ^ 0x8000, x)
        ba = Mux(op == code["vv_a_sub_b"], b ^ 0x8000, b)
        add = F.fp16_add(m, xa, ba, name="add")
        mm = F.fp16_maxmin(m, x, b, None, name="mm", is_max_sig=op == code["vv_max"])
        is_mm = (op == code["vv_max"]) | (op == code["vv_min"])
        m.d.comb += self.y.eq(Mux(op == 0, x, Mux(is_mm, mm, add)))
        return m


class MfuMul(wiring.Component):
    """One element of a multiply stage: ``y = x * b`` (the stage's one operation: no ``op``)."""

    stage = MfuUnit.MUL.value

    def __init__(self):
        assert len(STAGE_OPS[self.stage]) == 1, STAGE_OPS[self.stage]  # one operation: nothing to select
        super().__init__({"x": In(16), "b": In(16), "y": Out(16)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.y.eq(F.fp16_mul(m, self.x, self.b, name="mul"))
        return m


class MfuAct(wiring.Component):
    """A pair of elements of an activation stage: ``y[k] = act(x[k])`` (0 passes x; ``alpha`` the leaky-ReLU
    slope), one cycle after ``x`` (:attr:`latency`).

    The table functions (npu.numerics.ALL_ACTIVATIONS) share one multiplier and one adder per element, and the
    pair shares one ROM of ``slope | intercept << 16`` words holding every function's table one after another
    (:func:`act_rom`), read through two registered ports: the shape of one block RAM.  The first cycle computes
    each element's table address from ``x`` and ``op``; the second the line, the scaling and the result from the
    registered table word and registered copies of ``x``, ``op`` and ``alpha``.  The stage (rtl/mfu.py) delays
    the result one cycle less, so the stage's latency, and every cycle count, is what it was."""

    stage = MfuUnit.ACT.value
    #: elements per unit: the two read ports of the shared ROM
    lanes = 2
    #: cycles from ``x`` to ``y`` (the registered ROM read)
    latency = 1

    def __init__(self):
        super().__init__({"x": In(16 * self.lanes), "op": In(stage_op_bits(self.stage)), "alpha": In(16),
                          "y": Out(16 * self.lanes)})

    def elaborate(self, platform):
        m = Module()
        slopes, icpts, bases = act_rom()
        rom = memory.Memory(shape=32, depth=len(slopes), init=[a | b << 16 for a, b in zip(slopes, icpts)])
        m.submodules.rom_ab = rom  # slope | intercept (the name marks the ROM: tests/rtl/test_rtl_small.py)
        code = STAGE_CODES
        # ---- cycle 1: each element's table address, from x and op as they come in
        base = Signal(range(len(slopes) + 1), name="base")
        with m.Switch(self.op):
            for mn, fn in ACT_TABLE_OPS.items():
                with m.Case(code[mn]):
                    m.d.comb += base.eq(bases[fn])
        is_scaled_in = (self.op == code["v_recip"]) | (self.op == code["v_rsqrt"])
        op = Signal.like(self.op, name="op_r")
        alpha = Signal(16, name="alpha_r")
        m.d.sync += [op.eq(self.op), alpha.eq(self.alpha)]
        for k in range(self.lanes):
            x_in = self.x[16 * k:16 * (k + 1)]
            port = rom.read_port(domain="sync")
            idx_in = F.activation_index(m, x_in, name=f"idx_in{k}")
            _, _, _, sidx_in = _scaled_index(m, F.Fp16Fields(x_in), self.op == code["v_rsqrt"], f"in{k}")
            m.d.comb += port.addr.eq(base + Mux(is_scaled_in, sidx_in, idx_in))
            x = Signal(16, name=f"x{k}_r")
            idx = Signal.like(idx_in, name=f"idx{k}_r")
            m.d.sync += [x.eq(x_in), idx.eq(idx_in)]
            # ---- cycle 2: the element on the registered word and inputs
            m.d.comb += self.y[16 * k:16 * (k + 1)].eq(
                _act_element(m, x, idx, op, alpha, port.data[:16], port.data[16:], f"e{k}_"))
        return m


def _scaled_index(m, xf, is_rsqrt, name: str):
    """The scaled functions' (recip, rsqrt) view of x = mant * 2**e, subnormals normalized: (e, nfrac, odd, the
    table index)."""
    h = F.msb_index(m, xf.frac, name=f"h{name}")
    sub = xf.field == 0
    e = Signal(signed(7), name=f"e{name}")
    m.d.comb += e.eq(Mux(sub, Cat(h, Const(0, 3)).as_signed() - 24, Cat(xf.field, Const(0, 2)).as_signed() - 15))
    shamt = Signal(range(11), name=f"shamt{name}")
    m.d.comb += shamt.eq(10 - h)
    nfrac = Signal(10, name=f"nfrac{name}")
    m.d.comb += nfrac.eq(Mux(sub, (xf.frac << shamt)[:10], xf.frac))
    odd = is_rsqrt & e[0]
    sidx = Signal(range(2 << SCALED_SEG_BITS), name=f"sidx{name}")
    m.d.comb += sidx.eq(Cat(nfrac[10 - SCALED_SEG_BITS:], odd))
    return e, nfrac, odd, sidx


def _act_element(m, x, idx, op, alpha, slope, icpt, name: str):
    """One activation element after its table read: ``x``, its table index ``idx`` (npu.numerics.activation_index),
    the operation, alpha and the table word's slope and intercept -> the fp16 result."""
    code = STAGE_CODES
    xf = F.Fp16Fields(x)
    pos = F.fp16_gt_zero(x)
    # ---- piecewise-linear functions of x: the offset d = x - x0 on a segment
    seg = Signal(name=f"{name}seg")
    m.d.comb += seg.eq(~((idx == ACT_LINEAR) | (idx == ACT_SATURATE) | (idx == ACT_LINEAR + ACT_ENTRIES_PER_SIGN)
                         | (idx == ACT_SATURATE + ACT_ENTRIES_PER_SIGN)))
    low = xf.frac[:10 - ACT_SEG_BITS]
    d = F.round_fp16(m, xf.sign, low, Cat(xf.field, Const(0, 3)).as_signed() - 25, name=f"{name}d")
    # ---- scaled functions (recip, rsqrt)
    is_rsqrt = op == code["v_rsqrt"]
    is_scaled = (op == code["v_recip"]) | is_rsqrt
    e, nfrac, odd, _ = _scaled_index(m, xf, is_rsqrt, name)
    dm = F.round_fp16(m, 0, nfrac[:10 - SCALED_SEG_BITS], Mux(odd, -9, -10).as_signed(), name=f"{name}dm")
    # one multiplier serves lrelu (x * alpha) and the lines (a * d)
    is_lrelu = op == code["v_lrelu"]
    offset = Signal(name=f"{name}offset")  # a function whose segment lines are in d (not ACT_ABSOLUTE's)
    m.d.comb += offset.eq(Cat(*[op == code[mn] for mn, fn in ACT_TABLE_OPS.items()
                                if fn in ACT_FUNCTIONS and fn not in ACT_ABSOLUTE]).any())
    mul_x = Signal(16, name=f"{name}mul_x")
    m.d.comb += mul_x.eq(Mux(is_scaled, dm, Mux(seg & offset, d, x)))
    mul_b = Mux(is_lrelu, alpha, slope)
    prod = F.fp16_mul(m, mul_x, mul_b, name=f"{name}mul")
    zero = (slope[:15] == 0) | (mul_x[:15] == 0)
    pwl = F.fp16_add(m, Mux(zero, 0, prod), icpt, name=f"{name}add")
    # ---- scaled result: pwl * 2**k, rounded once
    k = Signal(signed(8), name=f"{name}k")
    m.d.comb += k.eq(Mux(is_rsqrt, -((e - odd) >> 1), -e))
    rf = F.Fp16Fields(pwl)
    rsign = ~is_rsqrt & xf.sign
    scaled = F.round_fp16(m, rsign, rf.sig, (rf.exp - 25 + k).as_signed(), name=f"{name}scl")
    scaled_y = Mux(xf.is_nan | (is_rsqrt & xf.sign & ~xf.is_zero), F.NAN,
                   Mux(xf.is_zero, Cat(Const(F.FP16_INF, 15), rsign),
                       Mux(xf.is_inf, Cat(Const(0, 15), rsign), scaled)))
    y = Signal(16, name=f"{name}y")
    with m.Switch(op):
        with m.Case(code["v_relu"]):
            m.d.comb += y.eq(Mux(pos, x, 0))
        with m.Case(code["v_lrelu"]):
            m.d.comb += y.eq(Mux(pos, x, prod))
        with m.Case(code["v_recip"], code["v_rsqrt"]):
            m.d.comb += y.eq(scaled_y)
        with m.Case(*[code[mn] for mn, fn in ACT_TABLE_OPS.items() if fn in ACT_FUNCTIONS]):
            m.d.comb += y.eq(Mux(xf.is_nan, F.NAN, pwl))
        with m.Default():
            m.d.comb += y.eq(x)
    return y


def act_rom() -> tuple[list[int], list[int], dict[str, int]]:
    """The activation unit's ROM contents: slopes and intercepts (fp16 bits) of every table function,
    the piecewise-linear ones (ACT_TABLE_SIZE entries each) then the scaled ones, and each one's base."""
    slopes, icpts, bases = [], [], {}
    for fn in ALL_ACTIVATIONS:
        a, b = activation_table(fn) if fn in ACT_FUNCTIONS else scaled_table(fn)
        bases[fn] = len(slopes)
        slopes += [int(v) for v in fp16_bits(a)]
        icpts += [int(v) for v in fp16_bits(b)]
    return slopes, icpts, bases


#: The unit of each MFU stage, by stage name.
class Fp16Reduce(wiring.Component):
    """One node of a reduction tree (npu.numerics.reduction_tree): ``y = a + b`` (``kind`` "sum") or the
    maximum of the two (``kind`` "max"), combinational."""

    def __init__(self, kind: str):
        if kind not in ("sum", "max"):
            raise ValueError(f"kind must be 'sum' or 'max', not {kind!r}")
        self.kind = kind
        super().__init__({"a": In(16), "b": In(16), "y": Out(16)})

    def elaborate(self, platform):
        m = Module()
        if self.kind == "sum":
            m.d.comb += self.y.eq(F.fp16_add(m, self.a, self.b, name="add"))
        else:
            m.d.comb += self.y.eq(F.fp16_maxmin(m, self.a, self.b, True, name="max"))
        return m


MFU_UNITS = {unit.stage: unit for unit in (MfuAddSub, MfuMul, MfuAct)}
assert set(MFU_UNITS) == set(MFU_STAGES), (sorted(MFU_UNITS), MFU_STAGES)


def make_units(config: NpuConfig, memmap: MemoryMap) -> dict[str, wiring.Component]:
    """One component per unit, keyed by its Verilog module name."""
    return {UNIT_NAMES["mvm_row"]: MvmRow(config, memmap), UNIT_NAMES["bfp_block"]: BfpBlock(config),
            **{UNIT_NAMES[s]: MFU_UNITS[s]() for s in MFU_STAGES},
            **{UNIT_NAMES[f"reduce_{kind}"]: Fp16Reduce(kind) for kind in ("sum", "max")}}


def instance(unit: wiring.Component, module_name: str, *, sync: bool = False, **connections):
    """An ``Instance`` of ``unit``'s Verilog module with its ports (signature member names) connected."""
    from amaranth.hdl import ClockSignal, Instance, ResetSignal

    args = {}
    if sync:
        args["i_clk"] = ClockSignal()
        args["i_rst"] = ResetSignal()
    for name, member in unit.signature.members.items():
        prefix = "i_" if member.flow == In else "o_"
        args[prefix + name] = connections.pop(name)
    if connections:
        raise TypeError(f"{module_name} has no ports {sorted(connections)}")
    return Instance(module_name, **args)
