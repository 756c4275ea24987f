"""Combinational fp16 and BFP arithmetic, as Amaranth expressions built into a Module.

Every operation follows npu/numerics.py bit for bit, by one idea: compute the
*exact* result as a (sign, integer magnitude, power-of-two exponent) triple,
then round once to fp16 with :func:`round_fp16` (round-to-nearest-even,
subnormals kept, overflow to infinity).  The MVM's exact accumulator, the MFU
adder and the multiplier all share that rounding step, so there is one place
where the fp16 encoding is written.

The helpers take the Module ``m`` they add their ``comb`` logic to and return
Values; they are used inside the NPU's stages (rtl/npu.py, rtl/mvm.py).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Signal, signed

from npu.numerics import (ACT_EMAX, ACT_EMIN, ACT_ENTRIES_PER_SIGN, ACT_LINEAR, ACT_SATURATE, ACT_SEG_BITS,
                          CANONICAL_NAN)

FP16_INF = 0x7C00
NAN = int(CANONICAL_NAN)


def msb_index(m, value, name: str = "msb") -> Signal:
    """Index of the highest set bit of an unsigned value (0 for 0)."""
    width = len(value)
    idx = Signal(range(max(width, 2)), name=name)
    expr = Const(0, len(idx))
    for k in range(width):
        expr = Mux(value[k], k, expr)
    m.d.comb += idx.eq(expr)
    return idx


def round_fp16(m, sign, mag, exp, name: str = "rnd") -> Signal:
    """fp16 bits of ``(-1)**sign * mag * 2**exp`` rounded to nearest even.

    ``mag`` is an unsigned integer, ``exp`` a signed Value.  A zero magnitude
    gives a zero of the given sign; the caller picks that sign.
    """
    w = len(mag)
    h = msb_index(m, mag, name=f"{name}_h")
    ew = max(len(exp), 8) + 3
    e_lead = Signal(signed(ew), name=f"{name}_e")
    m.d.comb += e_lead.eq(exp + h)
    lsb = Signal(signed(ew), name=f"{name}_lsb")  # exponent of the result's last place
    m.d.comb += lsb.eq(Mux(e_lead - 10 > -24, e_lead - 10, -24))
    # Right shift by (lsb - exp), done as a shift of mag << 11 by (lsb - exp + 11) >= 0.
    pre = 11
    v = Signal(w + pre, name=f"{name}_v")
    m.d.comb += v.eq(mag << pre)
    cap = w + pre + 1
    rs_raw = Signal(signed(ew + 1), name=f"{name}_rsr")
    m.d.comb += rs_raw.eq(lsb - exp + pre)
    rs = Signal(range(cap + 1), name=f"{name}_rs")
    m.d.comb += rs.eq(Mux(rs_raw < 0, 0, Mux(rs_raw > cap, cap, rs_raw[:len(rs)])))
    q = Signal(w + pre, name=f"{name}_q")
    m.d.comb += q.eq(v >> rs)
    rem = Signal(w + pre + 1, name=f"{name}_rem")
    m.d.comb += rem.eq(v - (q << rs)[:w + pre + 1])
    half = Signal(w + pre + 1, name=f"{name}_half")
    m.d.comb += half.eq((Const(1, w + pre + 2) << rs)[1:w + pre + 2])
    up = Signal(name=f"{name}_up")
    m.d.comb += up.eq((rs > 0) & ((rem > half) | ((rem == half) & q[0])))
    field = Signal(signed(ew + 2), name=f"{name}_fld")
    m.d.comb += field.eq(lsb + 24)
    total = Signal(signed(ew + 16), name=f"{name}_tot")
    m.d.comb += total.eq((field << 10) + q + up)
    out = Signal(16, name=name)
    m.d.comb += out.eq(Cat(Mux(mag == 0, 0, Mux(total >= FP16_INF, FP16_INF, total[:15])), sign))
    return out


class Fp16Fields:
    """The parts of an fp16 Value: sign, biased exponent field, fraction and its class."""

    def __init__(self, x):
        self.bits = x
        self.sign = x[15]
        self.field = x[10:15]
        self.frac = x[:10]
        self.is_nan = (self.field == 31) & (self.frac != 0)
        self.is_inf = (self.field == 31) & (self.frac == 0)
        self.is_zero = x[:15] == 0
        # value = sig * 2**(exp - 25) for finite x
        self.sig = Cat(self.frac, self.field != 0)
        self.exp = Mux(self.field == 0, 1, self.field)           # value = sig * 2**(exp - 25)
        self.shift = Mux(self.field == 0, 0, self.field - 1)[:5]  # exp - 1, unsigned


def fp16_add(m, a, b, name: str = "add") -> Signal:
    """IEEE fp16 a + b (RNE); NaN results are the canonical NaN."""
    fa, fb = Fp16Fields(a), Fp16Fields(b)
    va = Signal(signed(42), name=f"{name}_va")
    vb = Signal(signed(42), name=f"{name}_vb")
    m.d.comb += [
        va.eq(Mux(fa.sign, -(fa.sig << fa.shift), fa.sig << fa.shift)),
        vb.eq(Mux(fb.sign, -(fb.sig << fb.shift), fb.sig << fb.shift)),
    ]
    s = Signal(signed(43), name=f"{name}_s")
    m.d.comb += s.eq(va + vb)
    neg = s < 0
    mag = Signal(42, name=f"{name}_mag")
    m.d.comb += mag.eq(Mux(neg, -s, s))
    # An exact zero sum is +0 unless both operands are -0 (IEEE, round-to-nearest).
    zsign = fa.sign & fb.sign
    r = round_fp16(m, Mux(s == 0, zsign, neg), mag, Const(-24, signed(8)), name=f"{name}_r")
    out = Signal(16, name=name)
    m.d.comb += out.eq(
        Mux(fa.is_nan | fb.is_nan | (fa.is_inf & fb.is_inf & (fa.sign != fb.sign)), NAN,
            Mux(fa.is_inf, a, Mux(fb.is_inf, b, r))))
    return out


def fp16_mul(m, a, b, name: str = "mul") -> Signal:
    """IEEE fp16 a * b (RNE); NaN results are the canonical NaN."""
    fa, fb = Fp16Fields(a), Fp16Fields(b)
    sign = fa.sign ^ fb.sign
    prod = Signal(22, name=f"{name}_p")
    m.d.comb += prod.eq(fa.sig * fb.sig)
    e = Signal(signed(8), name=f"{name}_e")
    m.d.comb += e.eq(fa.exp + fb.exp - 50)
    r = round_fp16(m, sign, prod, e, name=f"{name}_r")
    out = Signal(16, name=name)
    m.d.comb += out.eq(
        Mux(fa.is_nan | fb.is_nan | (fa.is_inf & fb.is_zero) | (fb.is_inf & fa.is_zero), NAN,
            Mux(fa.is_inf | fb.is_inf, Cat(Const(FP16_INF, 15), sign), r)))
    return out


def fp16_key(x):
    """A signed integer ordering fp16 values numerically (+0 and -0 equal); NaN not handled."""
    mag = x[:15]
    k = Cat(mag, Const(0, 2)).as_signed()
    return Mux(x[15], -k, k)


def fp16_maxmin(m, a, b, is_max: bool | None, name: str = "mm", is_max_sig=None) -> Signal:
    """numerics.fp16_max / fp16_min: ``b if b > a else a`` (resp. <); NaN in -> canonical NaN.

    ``is_max`` chooses at generation time, or ``is_max_sig`` (a Value) at run time.
    """
    fa, fb = Fp16Fields(a), Fp16Fields(b)
    ka, kb = fp16_key(a), fp16_key(b)
    if is_max_sig is not None:
        pick_b = Mux(is_max_sig, kb > ka, kb < ka)
    else:
        pick_b = (kb > ka) if is_max else (kb < ka)
    out = Signal(16, name=name)
    m.d.comb += out.eq(Mux(fa.is_nan | fb.is_nan, NAN, Mux(pick_b, b, a)))
    return out


def fp16_gt_zero(x):
    """x > 0 as an fp16 comparison (False for zeros, negatives and NaN)."""
    f = Fp16Fields(x)
    return ~f.sign & ~f.is_zero & ~f.is_nan


def activation_index(m, x, name: str = "aidx") -> Signal:
    """npu.numerics.activation_index in hardware."""
    f = Fp16Fields(x)
    e = Signal(signed(7), name=f"{name}_e")
    m.d.comb += e.eq(Cat(f.field, Const(0, 2)).as_signed() - 15)
    top = f.frac[10 - ACT_SEG_BITS:]
    seg = Signal(16, name=f"{name}_seg")
    m.d.comb += seg.eq(Mux(e < ACT_EMIN, ACT_LINEAR,
                           Mux(e > ACT_EMAX, ACT_SATURATE,
                               (((e - ACT_EMIN) << ACT_SEG_BITS) + top)[:16])))
    idx = Signal(16, name=name)
    m.d.comb += idx.eq(Mux(f.sign, seg + ACT_ENTRIES_PER_SIGN, seg))
    return idx


def bfp_block(m, elems, exp_bits: int, mant_bits: int, name: str = "bfp"):
    """Quantize one block of fp16 Values as npu.numerics.bfp_quantize does.

    Returns ``(mantissas, biased_exponent, nonzero)``: two's-complement
    mantissas of ``mant_bits + 1`` bits, the shared exponent biased by
    ``-emin`` (so it fits ``exp_bits`` unsigned bits), and whether any
    mantissa is nonzero.
    """
    emin = -(1 << (exp_bits - 1)) + 1
    emax = 1 << (exp_bits - 1)
    maxm = (1 << mant_bits) - 1
    fs = [Fp16Fields(x) for x in elems]
    # floor(log2 |x|) per element; NaN and zero are "no magnitude", inf the largest.
    lg = []
    for k, f in enumerate(fs):
        l = Signal(signed(10), name=f"{name}_lg{k}")
        sub = msb_index(m, f.frac, name=f"{name}_sm{k}")
        m.d.comb += l.eq(Mux(f.is_nan | f.is_zero, -512,
                             Mux(f.is_inf, 511,
                                 Mux(f.field == 0, sub - 24, Cat(f.field, Const(0, 2)).as_signed() - 15))))
        lg.append(l)
    mx = lg[0]
    for k, l in enumerate(lg[1:]):
        # a Signal per step: a Value used twice per step would be lowered twice per step (2**block copies)
        nxt = Signal(signed(10), name=f"{name}_mx{k}")
        m.d.comb += nxt.eq(Mux(l > mx, l, mx))
        mx = nxt
    e = Signal(signed(10), name=f"{name}_e")
    m.d.comb += e.eq(Mux(mx < emin, emin, Mux(mx > emax, emax, mx)))
    mants = []
    for k, f in enumerate(fs):
        # |x| / 2**(e - mant_bits + 1) = sig * 2**-r with r = e - mant_bits + 26 - exp >= -12
        r = Signal(signed(11), name=f"{name}_r{k}")
        m.d.comb += r.eq(e - mant_bits + 26 - f.exp)
        # v < 2**23, so any shift past 24 rounds to 0 like 24 does.
        rs = Signal(range(25), name=f"{name}_rs{k}")
        m.d.comb += rs.eq(Mux(r + 12 > 24, 24, (r + 12)[:5]))
        v = Signal(23, name=f"{name}_v{k}")
        m.d.comb += v.eq(f.sig << 12)
        q = Signal(23, name=f"{name}_q{k}")
        m.d.comb += q.eq(v >> rs)
        rem = Signal(24, name=f"{name}_rem{k}")
        m.d.comb += rem.eq(v - (q << rs)[:24])
        half = Signal(24, name=f"{name}_half{k}")
        m.d.comb += half.eq((Const(1, 26) << rs)[1:25])
        up = (rs > 0) & ((rem > half) | ((rem == half) & q[0]))
        mag = Signal(24, name=f"{name}_mag{k}")
        m.d.comb += mag.eq(Mux(f.is_nan | f.is_zero, 0, Mux(f.is_inf, maxm, q + up)))
        sat = Mux(mag > maxm, maxm, mag)
        mm = Signal(signed(mant_bits + 1), name=f"{name}_m{k}")
        m.d.comb += mm.eq(Mux(f.sign, -sat, sat))
        mants.append(mm)
    eb = Signal(exp_bits, name=f"{name}_eb")
    m.d.comb += eb.eq(e - emin)
    nz = Signal(name=f"{name}_nz")
    m.d.comb += nz.eq(Cat(*[mm != 0 for mm in mants]).any())
    return mants, eb, nz
