"""The numerics contract against independent references (Python integers and Fractions)."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npu import numerics as nm
from npu.errors import FormatError

FORMATS = [nm.get_bfp_format(n) for n in ("ms-fp8", "ms-fp9", "msfp12", "msfp16", "bfp-e8m7b8", "bfp-e6m4b4")]


def fraction_to_fp16(fr: Fraction) -> np.float16:
    """Correct IEEE binary16 round-to-nearest-even of an exact rational, by integer arithmetic."""
    if fr == 0:
        return np.float16(0.0)
    sign = -1 if fr < 0 else 1
    a = abs(fr)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, -14)                        # subnormals share the smallest exponent
    quantum = Fraction(2) ** (e - 10)
    q, rem = divmod(a, quantum)
    if rem > quantum / 2 or (rem == quantum / 2 and q % 2 == 1):
        q += 1
    value = q * quantum
    if value > 65504:
        return np.float16(sign * np.inf)
    return np.float16(sign * float(value))


def reference_quantize(x, fmt, block):
    """Per-element reference of bfp_quantize (plain Python)."""
    mant, exps = [], []
    for b in range(0, len(x), block):
        blk = [float(v) for v in x[b:b + block]]
        amax = max(abs(v) for v in blk)
        e = fmt.emin if amax == 0 else math.frexp(amax)[1] - 1
        e = min(max(e, fmt.emin), fmt.emax)
        exps.append(e)
        for v in blk:
            m = round(v / 2.0 ** (e - fmt.mant_bits + 1))  # Python round: half to even
            mant.append(max(-fmt.max_mantissa, min(fmt.max_mantissa, m)))
    return np.array(mant), np.array(exps)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_quantize_matches_reference_and_is_idempotent(fmt, rng):
    block = fmt.block_size(32)
    x = (rng.normal(size=(4, 64)) * 2.0 ** rng.integers(-20, 12, size=(4, 1))).astype(np.float16)
    m, e = nm.bfp_quantize(x, fmt, block)
    for row in range(4):
        rm, re_ = reference_quantize(x[row], fmt, block)
        np.testing.assert_array_equal(m[row], rm)
        np.testing.assert_array_equal(e[row], re_)
    v = nm.bfp_values(m, e, fmt, block)
    m2, e2 = nm.bfp_quantize(v, fmt, block)
    np.testing.assert_array_equal(nm.bfp_values(m2, e2, fmt, block), v)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_quantization_error_bound(fmt, rng):
    block = fmt.block_size(32)
    x = rng.normal(size=(50, 64))
    m, e = nm.bfp_quantize(x, fmt, block)
    err = np.abs(nm.bfp_values(m, e, fmt, block) - x).reshape(50, -1, block)
    amax = np.abs(x).reshape(50, -1, block).max(-1, keepdims=True)
    # half a quantum of 2**(e - mant_bits + 1), e = floor(log2 amax); saturation costs at most one quantum
    assert (err <= amax * 2.0 ** (1 - fmt.mant_bits)).all()


def test_ties_round_to_even_and_saturation():
    fmt = nm.get_bfp_format("bfp-e8m3b4")  # quantum 2**(e-2)
    x = np.array([[4.0, 0.5, 1.5, 2.5]])  # e = 2, quantum 1: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    m, e = nm.bfp_quantize(x, fmt, 4)
    assert e.tolist() == [[2]] and m.tolist() == [[4, 0, 2, 2]]
    x = np.array([[7.9, 0, 0, 0]])  # 7.9 / 1 rounds to 8 > 7: saturates at the largest mantissa
    m, e = nm.bfp_quantize(x, fmt, 4)
    assert m.tolist() == [[7, 0, 0, 0]] and e.tolist() == [[2]]


def test_exponent_choice_clamps_and_handles_specials():
    fmt = nm.get_bfp_format("ms-fp9")  # 5-bit exponent: [-15, 16]
    m, e = nm.bfp_quantize(np.array([[2.0 ** -20, 0, 0, 0], [0, 0, 0, 0], [np.inf, np.nan, 1, 0]]), fmt, 4)
    assert e[:, 0].tolist() == [-15, -15, 16]
    assert m[0].tolist() == [0, 0, 0, 0]          # underflow flushes gradually to zero
    assert m[2, 0] == fmt.max_mantissa and m[2, 1] == 0  # inf saturates, NaN reads as 0


def test_unknown_format_lists_presets():
    with pytest.raises(FormatError, match="presets: ms-fp8"):
        nm.get_bfp_format("fp7")
    assert nm.get_bfp_format("bfp-e5m3").block is None


def test_flush_windows_keep_products_within_53_bits():
    for w in FORMATS:
        for a in FORMATS:
            if w.exp_bits != a.exp_bits:
                continue
            dw, da = nm.flush_windows(w, a)
            assert dw + da + w.mant_bits + a.mant_bits + nm.MAX_DOT_BITS == 53


def _exact_dot(xm, xe, wm, we, afmt, wfmt, block):
    total = Fraction(0)
    for k in range(len(xm)):
        total += (Fraction(int(xm[k])) * Fraction(2) ** (int(xe[k // block]) - afmt.mant_bits + 1)
                  * Fraction(int(wm[k])) * Fraction(2) ** (int(we[k // block]) - wfmt.mant_bits + 1))
    return total


@pytest.mark.parametrize("name", ["msfp16", "ms-fp9", "bfp-e8m7b8"])
def test_mvm_is_the_exact_sum_rounded_once(name, rng):
    """The float64 GEMM path equals integer arithmetic, even across wide exponent ranges."""
    fmt = nm.get_bfp_format(name)
    block = fmt.block_size(32)
    K, R = 128, 6
    # activations spanning 2**-24 .. 2**14 so the flush window and underflow are exercised
    x = (rng.normal(size=(3, K)) * 2.0 ** rng.integers(-24, 14, size=(3, K // block)).repeat(block, 1))
    x = np.clip(x, -60000, 60000).astype(np.float16)
    w = rng.normal(size=(R, K)) * 2.0 ** rng.integers(-12, 2, size=(R, K // block)).repeat(block, 1)
    wwin, awin = nm.flush_windows(fmt, fmt)
    wm, we = nm.quantize_weights(w, fmt, block, wwin)
    assert nm.weight_span_ok(wm, we, block, wwin).all()
    y = nm.mvm_reference(x, wm, we, fmt, fmt, block)
    xm, xe = nm.bfp_quantize(x, fmt, block)
    xm = nm.flush_blocks(xm, xe, block, awin)
    for i in range(3):
        for r in range(R):
            expect = fraction_to_fp16(_exact_dot(xm[i], xe[i], wm[r], we[r], fmt, fmt, block))
            assert y[i, r].view(np.uint16) == expect.view(np.uint16), (i, r)


fp16_values = st.integers(0, 0xFFFF).map(lambda b: np.array(b, np.uint16).view(np.float16)).filter(
    lambda v: np.isfinite(v))


@settings(max_examples=400, deadline=None)
@given(a=fp16_values, b=fp16_values)
def test_fp16_add_mul_are_correctly_rounded(a, b):
    for got, exact in ((nm.fp16_add(a, b), Fraction(float(a)) + Fraction(float(b))),
                       (nm.fp16_sub(a, b), Fraction(float(a)) - Fraction(float(b))),
                       (nm.fp16_mul(a, b), Fraction(float(a)) * Fraction(float(b)))):
        expect = fraction_to_fp16(exact)
        got = np.float16(got)
        if exact == 0:
            assert got == 0
        else:
            assert got.view(np.uint16) == expect.view(np.uint16), (a, b, got, expect)


def test_nan_is_canonical_and_max_min_relu_rules():
    nan = np.array([np.nan], np.float16)
    inf = np.array([np.inf], np.float16)
    assert nm.fp16_add(inf, -inf).view(np.uint16)[0] == 0x7E00
    assert nm.fp16_max(nan, np.float16(1)).view(np.uint16)[0] == 0x7E00
    assert nm.fp16_min(np.float16(1), nan).view(np.uint16)[0] == 0x7E00
    a, b = np.array([-0.0], np.float16), np.array([0.0], np.float16)
    assert nm.fp16_max(a, b).view(np.uint16)[0] == 0x8000  # equal: keeps the chain value
    assert nm.fp16_relu(np.array([np.nan, -0.0, -1, 2], np.float16)).tolist() == [0, 0, 0, 2]
    assert nm.fp16_relu(np.array([-0.0], np.float16)).view(np.uint16)[0] == 0


@pytest.mark.parametrize("fn, exact", [("sigm", lambda v: 0.5 * (1 + np.tanh(v / 2))), ("tanh", np.tanh)])
def test_activation_tables_are_accurate_and_saturate(fn, exact):
    bits = np.arange(0x10000, dtype=np.uint16)
    x = bits.view(np.float16)
    x = x[np.isfinite(x)]
    y = nm.fp16_activation(fn, x).astype(np.float64)
    assert np.abs(y - exact(x.astype(np.float64))).max() < 1.5e-3
    assert nm.activation_table(fn)[0].size == nm.ACT_TABLE_SIZE
    sat = nm.fp16_activation(fn, np.array([np.inf, -np.inf, 1e4, np.nan], np.float16))
    lo = 0.0 if fn == "sigm" else -1.0
    assert sat[:3].tolist() == [1.0, lo, 1.0] and sat.view(np.uint16)[3] == 0x7E00


def test_activation_is_the_documented_table_formula(rng):
    """y = fp16(fp16(a[i] * d) + b[i]), d = x - x0 on a segment (x0: x with its low fraction bits cleared),
    x on the linear and saturating entries and for sigmoid and tanh, a zero product +0: recomputed here with
    float64 arithmetic."""
    x = (rng.normal(size=2000) * 4).astype(np.float16)
    bits = x.view(np.uint16)
    x0 = (bits & ~np.uint16((1 << (10 - nm.ACT_SEG_BITS)) - 1)).view(np.float16)
    for fn in nm.ACT_FUNCTIONS:
        a, b = nm.activation_table(fn)
        i = nm.activation_index(x)
        seg = (i % nm.ACT_ENTRIES_PER_SIGN < nm.ACT_SEGMENTS) & (fn not in nm.ACT_ABSOLUTE)
        d = np.where(seg, x.astype(np.float64) - x0.astype(np.float64), x.astype(np.float64))
        prod = (a[i].astype(np.float64) * d).astype(np.float16).astype(np.float64)
        prod[(a[i] == 0) | (d == 0)] = 0.0
        with np.errstate(over="ignore"):  # exp overflows to inf, as fp16 does
            expect = (prod + b[i].astype(np.float64)).astype(np.float16)
        np.testing.assert_array_equal(nm.fp16_activation(fn, x).view(np.uint16), expect.view(np.uint16))
