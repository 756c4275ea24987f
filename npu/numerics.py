"""The numerics contract: block floating point, MVM accumulation, MFU arithmetic, activations.

This module *is* the definition the simulator and the RTL meet bit for bit;
docs/numerics.md explains it with the reasoning.  In short:

* Every vector memory holds IEEE 754 binary16 (fp16) values.
* The MVM converts its input vector to the activation BFP format, multiplies by
  BFP weights, accumulates *exactly*, and rounds once (round-to-nearest-even) to
  fp16.  Exactness is guaranteed by the flush windows (:func:`flush_windows`).
* MFU operations are IEEE fp16 operations with round-to-nearest-even, gradual
  underflow (subnormals kept) and overflow to +-inf; every NaN leaving an MFU is
  the canonical quiet NaN 0x7E00.
* The activation unit's functions are piecewise-linear in fp16: ``y = fp16(fp16(a*x) + b)``
  with ``(a, b)`` from a 388-entry table per function indexed by the bits of ``x``; 1/x and
  1/sqrt(x) use a table over the mantissa and scale the result by a power of two.

Everything here is whole-array numpy; nothing loops over elements.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from npu.errors import FormatError

#: The only MFU/vector-memory format implemented so far.
MFU_FORMATS = {"fp16": np.float16}
CANONICAL_NAN = np.uint16(0x7E00)
FP16_MAX = 65504.0

#: Longest dot product one mv_mul may compute (elements).  With the flush
#: windows below it bounds every exact sum under 2**53 (see flush_windows).
MAX_DOT_BITS = 17
MAX_DOT_LENGTH = 1 << MAX_DOT_BITS

#: float64 holds integers exactly up to 2**53: the accumulator width the
#: flush windows are sized for, so the simulator's float64 GEMM is exact.
ACCUMULATOR_BITS = 53


# ------------------------------------------------------------------ BFP formats
@dataclass(frozen=True)
class BfpFormat:
    """Block floating point: ``block`` elements share an ``exp_bits`` exponent.

    Each element is a sign and ``mant_bits`` magnitude bits (no implicit one):
    ``value = m * 2**(e - (mant_bits - 1))`` with ``|m| <= 2**mant_bits - 1`` and
    ``e`` in ``[emin, emax]``.  ``block=None`` shares one exponent per native
    vector (Brainwave's ms-fp8/ms-fp9).
    """

    name: str
    exp_bits: int
    mant_bits: int
    block: int | None

    def __post_init__(self):
        if not 2 <= self.exp_bits <= 8:
            raise FormatError(f"{self.name}: exponent bits must be 2..8, not {self.exp_bits}")
        if not 1 <= self.mant_bits <= 10:
            raise FormatError(f"{self.name}: mantissa bits must be 1..10, not {self.mant_bits}")
        if self.block is not None and self.block < 1:
            raise FormatError(f"{self.name}: block must be positive, not {self.block}")

    def block_size(self, native_dim: int) -> int:
        return native_dim if self.block is None else self.block

    @property
    def emin(self) -> int:
        return -(1 << (self.exp_bits - 1)) + 1

    @property
    def emax(self) -> int:
        return 1 << (self.exp_bits - 1)

    @property
    def max_mantissa(self) -> int:
        return (1 << self.mant_bits) - 1

    @property
    def bits_per_element(self) -> float:
        """Storage cost: sign + mantissa, plus the shared exponent spread over the block."""
        return 1 + self.mant_bits


BFP_PRESETS = {
    # Fowers et al., ISCA 2018: 5-bit exponent shared per native vector.
    "ms-fp8": BfpFormat("ms-fp8", exp_bits=5, mant_bits=2, block=None),
    "ms-fp9": BfpFormat("ms-fp9", exp_bits=5, mant_bits=3, block=None),
    # Darvish Rouhani et al., NeurIPS 2020 (MSFP): 8-bit exponent, block 16.
    "msfp12": BfpFormat("msfp12", exp_bits=8, mant_bits=3, block=16),
    "msfp16": BfpFormat("msfp16", exp_bits=8, mant_bits=7, block=16),
}

_GENERIC = re.compile(r"^bfp-e(\d+)m(\d+)(?:b(\d+|n))?$")


@lru_cache(maxsize=None)
def get_bfp_format(name: str) -> BfpFormat:
    """A preset name, or ``bfp-e<E>m<M>b<B>`` (``b`` omitted or ``bn``: per native vector)."""
    if isinstance(name, BfpFormat):
        return name
    if name in BFP_PRESETS:
        return BFP_PRESETS[name]
    m = _GENERIC.match(str(name))
    if not m:
        raise FormatError(f"unknown BFP format {name!r}; presets: {', '.join(BFP_PRESETS)}, "
                          "or bfp-e<exp bits>m<mantissa bits>b<block> such as bfp-e8m7b16")
    block = None if m.group(3) in (None, "n") else int(m.group(3))
    return BfpFormat(str(name), int(m.group(1)), int(m.group(2)), block)


def flush_windows(weight: BfpFormat, act: BfpFormat) -> tuple[int, int]:
    """(weight window, activation window) in exponent steps.

    Within one dot product, a nonzero weight block whose exponent lies more than
    ``weight window`` below the largest nonzero weight block exponent of its row
    is illegal (the quantizer flushes it to zero), and an activation block more
    than ``activation window`` below the vector's largest is flushed to zero by
    the MVM.  Then every product is an integer multiple of
    ``q = 2**(ex_max - Dx + ew_max - Dw - ma - mw + 2)`` and the sum of at most
    ``2**MAX_DOT_BITS`` products stays below ``2**53 * q``: any summation order
    is exact in a 53-bit accumulator (and in float64).
    """
    total = ACCUMULATOR_BITS - MAX_DOT_BITS - weight.mant_bits - act.mant_bits
    if total < 2:
        raise FormatError(f"formats {weight.name}/{act.name} leave no exponent window in a "
                          f"{ACCUMULATOR_BITS}-bit accumulator")
    w = total // 3
    return w, total - w


# ------------------------------------------------------------------ fp16 helpers
def to_fp16(x) -> np.ndarray:
    """float32/float64 -> fp16, round-to-nearest-even (numpy converts directly, one rounding)."""
    with np.errstate(over="ignore"):  # overflow to +-inf is the defined result
        return np.asarray(x).astype(np.float16)


def canonicalize_nan(v: np.ndarray) -> np.ndarray:
    """Replace every NaN by the canonical quiet NaN 0x7E00 (in place when possible)."""
    v = np.asarray(v, dtype=np.float16)
    nan = (np.ascontiguousarray(v).view(np.uint16) & 0x7FFF) > 0x7C00
    if nan.any():
        v = np.array(v, dtype=np.float16, copy=True)
        v.view(np.uint16)[nan] = CANONICAL_NAN
    return v


def fp16_bits(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v, dtype=np.float16).view(np.uint16)


# ------------------------------------------------------------------ quantization
def bfp_quantize(x: np.ndarray, fmt: BfpFormat, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize along the last axis in blocks of ``block`` elements.

    Rules (the contract):

    * NaN is treated as 0 and +-inf as the largest finite magnitude.
    * The shared exponent is ``floor(log2(max |x|))`` of the block, clamped to
      ``[emin, emax]``; an all-zero block gets ``emin``.
    * Mantissas are ``x / 2**(e - mant_bits + 1)`` rounded to nearest, ties to
      even, then saturated to ``+-(2**mant_bits - 1)``.

    Returns ``(mantissas int16 [..., L], exponents int16 [..., L // block])``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] % block:
        raise FormatError(f"length {x.shape[-1]} is not a multiple of the BFP block {block}")
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
    xb = x.reshape(*x.shape[:-1], x.shape[-1] // block, block)
    amax = np.abs(xb).max(axis=-1)
    _, p = np.frexp(amax)  # amax = f * 2**p, f in [0.5, 1): floor(log2 amax) = p - 1
    e = np.where(amax > 0, p - 1, fmt.emin)
    e = np.clip(e, fmt.emin, fmt.emax)
    scale = np.ldexp(1.0, (fmt.mant_bits - 1) - e)[..., None]
    m = np.rint(xb * scale)  # np.rint: round half to even
    m = np.clip(m, -fmt.max_mantissa, fmt.max_mantissa)
    return m.reshape(x.shape).astype(np.int16), e.astype(np.int16)


def bfp_values(mant: np.ndarray, exp: np.ndarray, fmt: BfpFormat, block: int) -> np.ndarray:
    """The exact float64 values of BFP data (mantissas [..., L], exponents [..., L // block])."""
    mant = np.asarray(mant)
    scale = np.ldexp(1.0, np.asarray(exp, dtype=np.int64) - (fmt.mant_bits - 1))  # exact powers of two
    v = mant.reshape(*mant.shape[:-1], -1, block) * scale[..., None]
    return v.reshape(mant.shape)


def flush_blocks(mant: np.ndarray, exp: np.ndarray, block: int, window: int) -> np.ndarray:
    """Zero the blocks whose exponent is more than ``window`` below the largest
    exponent among blocks with a nonzero mantissa, per leading index.

    ``mant`` is [..., L] and ``exp`` [..., L // block]; returns new mantissas.
    """
    mb = mant.reshape(*mant.shape[:-1], exp.shape[-1], block)
    nonzero = (mb != 0).any(axis=-1)
    eref = np.where(nonzero, exp, np.iinfo(np.int16).min).max(axis=-1, keepdims=True)
    keep = exp >= eref - window
    return (mb * keep[..., None]).reshape(mant.shape)


def quantize_weights(w: np.ndarray, fmt: BfpFormat, block: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize a weight matrix [rows, cols] along cols and flush each row to the window."""
    m, e = bfp_quantize(w, fmt, block)
    return flush_blocks(m, e, block, window).astype(np.int16), e


def weight_span_ok(mant: np.ndarray, exp: np.ndarray, block: int, window: int) -> np.ndarray:
    """Per row: True where every nonzero block lies within ``window`` of the row's largest."""
    mb = mant.reshape(*mant.shape[:-1], exp.shape[-1], block)
    nonzero = (mb != 0).any(axis=-1)
    hi = np.where(nonzero, exp, np.iinfo(np.int16).min).max(axis=-1)
    lo = np.where(nonzero, exp, np.iinfo(np.int16).max).min(axis=-1)
    return ~nonzero.any(axis=-1) | (hi - lo <= window)


# ------------------------------------------------------------------ MVM
def mvm_reference(x_fp16: np.ndarray, w_mant: np.ndarray, w_exp: np.ndarray,
                  wfmt: BfpFormat, afmt: BfpFormat, block: int) -> np.ndarray:
    """Reference matrix-vector products: ``x_fp16`` [batch, K], weights [R, K] -> fp16 [batch, R].

    The activation vector is quantized, flushed to the activation window, then
    multiplied exactly and rounded once to fp16.  The float64 GEMM is exact by
    the flush-window argument in :func:`flush_windows`, whatever order BLAS sums in.
    """
    _, awin = flush_windows(wfmt, afmt)
    xm, xe = bfp_quantize(x_fp16, afmt, block)
    xm = flush_blocks(xm, xe, block, awin)
    xv = bfp_values(xm, xe, afmt, block)
    wv = bfp_values(w_mant, w_exp, wfmt, block)
    return to_fp16(xv @ wv.T)


# ------------------------------------------------------------------ MFU operations
def _where_nan(out: np.ndarray, *inputs: np.ndarray) -> np.ndarray:
    nan = np.isnan(inputs[0])
    for other in inputs[1:]:
        nan = nan | np.isnan(other)
    if nan.any():
        out = out.copy()
        out.view(np.uint16)[nan] = CANONICAL_NAN
    return out


def fp16_add(a, b):
    # float32 holds 24 >= 2*11 + 2 bits: rounding the float32 sum to fp16 is a
    # single correct rounding (double rounding is innocuous), which is what
    # numpy's float16 arithmetic does.
    with np.errstate(all="ignore"):  # inf - inf, overflow: defined IEEE results
        return canonicalize_nan(np.add(a, b, dtype=np.float16))


def fp16_sub(a, b):
    with np.errstate(all="ignore"):  # inf - inf, overflow: defined IEEE results
        return canonicalize_nan(np.subtract(a, b, dtype=np.float16))


def fp16_mul(a, b):
    with np.errstate(all="ignore"):  # inf - inf, overflow: defined IEEE results
        return canonicalize_nan(np.multiply(a, b, dtype=np.float16))


def fp16_max(a, b):
    """``b if b > a else a``; NaN in either operand gives the canonical NaN."""
    return _where_nan(np.where(b > a, b, a).astype(np.float16), a, b)


def fp16_min(a, b):
    """``b if b < a else a``; NaN in either operand gives the canonical NaN."""
    return _where_nan(np.where(b < a, b, a).astype(np.float16), a, b)


def fp16_relu(a):
    """``a if a > 0 else +0`` (NaN gives +0: it is a comparison)."""
    bits = np.ascontiguousarray(a, dtype=np.float16).view(np.uint16)
    # x > 0 exactly when the sign is clear and the bits are nonzero and not a NaN (<= +inf)
    return np.where((bits >= 1) & (bits <= 0x7C00), bits, np.uint16(0)).view(np.float16)


def fp16_lrelu(a, alpha: np.float16):
    """``a if a > 0 else fp16(a * alpha)``."""
    with np.errstate(all="ignore"):
        return canonicalize_nan(np.where(a > 0, a, np.multiply(a, alpha, dtype=np.float16)).astype(np.float16))


# ------------------------------------------------------------------ activations
#: Piecewise-linear activations: |x| in [2**ACT_EMIN, 2**(ACT_EMAX+1)) is split
#: into 2**ACT_SEG_BITS segments per octave (indexed by the top mantissa bits);
#: below it a linear entry, above it a saturating entry.
ACT_EMIN = -8
ACT_EMAX = 3
ACT_SEG_BITS = 4
_OCTAVES = ACT_EMAX - ACT_EMIN + 1
ACT_SEGMENTS = _OCTAVES << ACT_SEG_BITS          # per sign
ACT_LINEAR = ACT_SEGMENTS                         # index of the small-|x| entry
ACT_SATURATE = ACT_SEGMENTS + 1                   # index of the large-|x| entry
ACT_ENTRIES_PER_SIGN = ACT_SEGMENTS + 2
ACT_TABLE_SIZE = 2 * ACT_ENTRIES_PER_SIGN         # sign 0 first, then sign 1

_SQRT2 = np.sqrt(2.0)
_GELU_TANH_K = np.sqrt(2.0 / np.pi)


def _erf(x: np.ndarray) -> np.ndarray:
    """float64 erf without scipy: math.erf elementwise (the tables have a few hundred entries)."""
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


#: The exact (float64) function behind each table, by the short name the
#: instruction ``v_<name>`` carries: the reference the tables approximate and the
#: tests compare with.
ACT_EXACT = {
    "sigm": _sigmoid,
    "tanh": np.tanh,
    "exp": np.exp,
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / _SQRT2)),
    "gelut": lambda x: 0.5 * x * (1.0 + np.tanh(_GELU_TANH_K * (x + 0.044715 * x ** 3))),
    "hswish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hsigm": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "swish": lambda x: x * _sigmoid(x),
}
#: The piecewise-linear functions, in table order (the RTL's ROM holds them one after another).
ACT_FUNCTIONS = tuple(ACT_EXACT)
#: The functions whose segment lines are in x itself, ``y = fp16(fp16(a*x) + b)`` with the secant through the
#: segment's ends (sigmoid and tanh, as they were first defined: models compiled before keep their bits);
#: the others' lines are in the offset from the segment's start with a balanced intercept, which avoids
#: the cancellation (and exp's overflow) of ``a*x + b`` far from zero.
ACT_ABSOLUTE = ("sigm", "tanh")

#: (slope, intercept) of the small-|x| entry (|x| < 2**ACT_EMIN, zero and subnormals) and of the
#: saturating entry (|x| >= 2**(ACT_EMAX+1), infinities), per sign (+, -).  A slope of 0 ignores x
#: (so inf * 0 gives no NaN).
_ACT_ENDS = {
    #           linear +      linear -      saturate +        saturate -
    "sigm":   ((0.25, 0.5), (0.25, 0.5), (0.0, 1.0), (0.0, 0.0)),
    "tanh":   ((1.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, -1.0)),
    "exp":    ((1.0, 1.0), (1.0, 1.0), (0.0, np.inf), (0.0, 0.0)),
    "gelu":   ((0.5, 0.0), (0.5, 0.0), (1.0, 0.0), (0.0, 0.0)),
    "gelut":  ((0.5, 0.0), (0.5, 0.0), (1.0, 0.0), (0.0, 0.0)),
    "hswish": ((0.5, 0.0), (0.5, 0.0), (1.0, 0.0), (0.0, 0.0)),
    "hsigm":  ((1 / 6, 0.5), (1 / 6, 0.5), (0.0, 1.0), (0.0, 0.0)),
    "swish":  ((0.5, 0.0), (0.5, 0.0), (1.0, 0.0), (0.0, 0.0)),
}
assert set(_ACT_ENDS) == set(ACT_EXACT)


def _segment_lines(exact, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment [lo, hi): the slope of the secant and the intercept at ``lo`` that balances the
    line's largest error above and below the exact function (float64, sampled at 65 points)."""
    slope = (exact(hi) - exact(lo)) / (hi - lo)
    t = np.linspace(0.0, 1.0, 65)[:, None]
    d = t * (hi - lo)
    err = exact(lo + d) - (exact(lo) + slope * d)
    return slope, exact(lo) + (err.max(axis=0) + err.min(axis=0)) / 2


@lru_cache(maxsize=None)
def activation_table(fn: str) -> tuple[np.ndarray, np.ndarray]:
    """(slopes, intercepts) as fp16 arrays of :data:`ACT_TABLE_SIZE` entries.

    Segment k of octave o covers ``|x|`` in ``[x0, x1)`` with
    ``x0 = 2**(ACT_EMIN+o) * (1 + k/2**ACT_SEG_BITS)``.  Its line is in the offset ``d = x - x0``
    (``x0`` carrying x's sign): slope the secant of the exact function through both ends, intercept
    the function at ``x0`` moved by half the line's error so the error is balanced; computed in
    float64 and rounded to fp16.
    """
    if fn not in ACT_FUNCTIONS:
        raise FormatError(f"unknown activation {fn!r}; known: {ACT_FUNCTIONS}")
    exact = ACT_EXACT[fn]
    a = np.zeros(ACT_TABLE_SIZE)
    b = np.zeros(ACT_TABLE_SIZE)
    o, k = np.divmod(np.arange(ACT_SEGMENTS), 1 << ACT_SEG_BITS)
    x0 = np.ldexp(1.0 + k / (1 << ACT_SEG_BITS), ACT_EMIN + o)
    x1 = np.ldexp(1.0 + (k + 1) / (1 << ACT_SEG_BITS), ACT_EMIN + o)
    lin_p, lin_n, sat_p, sat_n = _ACT_ENDS[fn]
    with np.errstate(over="ignore", invalid="ignore"):
        for sign, s, lin, sat in ((0, 1.0, lin_p, sat_p), (1, -1.0, lin_n, sat_n)):
            base = sign * ACT_ENTRIES_PER_SIGN
            if fn in ACT_ABSOLUTE:  # the line in x itself: the secant through the segment's ends
                lo, hi = s * x0, s * x1
                slope = (exact(hi) - exact(lo)) / (hi - lo)
                icpt = exact(lo) - slope * lo
            else:
                slope, icpt = _segment_lines(exact, s * x0, s * x1)
            # a slope past the largest fp16 (exp near its overflow) is clamped (inf * d would make x0 itself
            # NaN-free but its neighbours all inf); an intercept past it is inf: the function overflows there
            a[base:base + ACT_SEGMENTS] = np.clip(slope, -FP16_MAX, FP16_MAX)
            b[base:base + ACT_SEGMENTS] = icpt
            a[base + ACT_LINEAR], b[base + ACT_LINEAR] = lin
            a[base + ACT_SATURATE], b[base + ACT_SATURATE] = sat
    return to_fp16(a), to_fp16(b)


def activation_index(x: np.ndarray) -> np.ndarray:
    """Table index of each fp16 value (vectorized bit manipulation)."""
    bits = fp16_bits(x).astype(np.int32)
    sign = bits >> 15
    e = ((bits >> 10) & 0x1F) - 15  # unbiased; subnormals and zero give -15
    top = (bits & 0x3FF) >> (10 - ACT_SEG_BITS)
    seg = ((e - ACT_EMIN) << ACT_SEG_BITS) + top
    seg = np.where(e < ACT_EMIN, ACT_LINEAR, np.where(e > ACT_EMAX, ACT_SATURATE, seg))
    return sign * ACT_ENTRIES_PER_SIGN + seg


def activation_offset(x: np.ndarray, fn: str | None = None) -> np.ndarray:
    """What the line of x's table entry multiplies: on a segment the offset ``x - x0`` from the
    segment's start (x with its top ACT_SEG_BITS fraction bits kept is x0; the difference is exact),
    on the linear and saturating entries, and for the functions of :data:`ACT_ABSOLUTE`, x itself."""
    x = np.asarray(x, dtype=np.float16)
    if fn in ACT_ABSOLUTE:
        return x
    bits = fp16_bits(x)
    x0 = (bits & np.uint16(0xFFFF ^ ((1 << (10 - ACT_SEG_BITS)) - 1))).view(np.float16)
    seg = activation_index(x) % ACT_ENTRIES_PER_SIGN < ACT_SEGMENTS
    with np.errstate(all="ignore"):
        return np.where(seg, np.subtract(x, x0, dtype=np.float16), x).astype(np.float16)


def _pwl(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``fp16(fp16(a * d) + b)``, the product taken as +0 where ``a`` or ``d`` is zero (so inf * 0
    gives no NaN and a zero product has one sign)."""
    with np.errstate(all="ignore"):
        prod = np.multiply(a, d, dtype=np.float16)
        zero = (fp16_bits(a) & 0x7FFF == 0) | (fp16_bits(d) & 0x7FFF == 0)
        prod = np.where(zero, np.float16(0), prod)
        return np.add(prod, b, dtype=np.float16)


def fp16_activation(fn: str, x: np.ndarray) -> np.ndarray:
    """``fp16(fp16(a[i] * d) + b[i])`` with ``i = activation_index(x)``, ``d = activation_offset(x)``;
    NaN gives the canonical NaN.  ``recip`` and ``rsqrt`` are :func:`fp16_scaled_activation`'s."""
    if fn in SCALED_FUNCTIONS:
        return fp16_scaled_activation(fn, x)
    x = np.asarray(x, dtype=np.float16)
    a, b = activation_table(fn)
    idx = activation_index(x)
    return _where_nan(_pwl(a[idx], b[idx], activation_offset(x, fn)), x)


# ------------------------------------------------------------------ reciprocal and its square root
#: 1/x and 1/sqrt(x) are scale-invariant: x = m * 2**e with m in [1, 2) (subnormals normalized),
#: a piecewise-linear table over the mantissa (2**SCALED_SEG_BITS segments per octave; rsqrt takes
#: m in [1, 4), two octaves, so that e - (e & 1) is even) gives r = fp16(fp16(a*dm) + b) in [0.5, 1]
#: (dm = m - m0, the offset of m in its segment: the fraction's low bits, times 2 for rsqrt's upper octave),
#: and the result is r * 2**k (k = -e, resp. -(e - (e & 1)) / 2) rounded once to fp16.
SCALED_SEG_BITS = 6
SCALED_FUNCTIONS = ("recip", "rsqrt")
SCALED_EXACT = {"recip": lambda x: 1.0 / x, "rsqrt": lambda x: 1.0 / np.sqrt(x)}
#: Entries of each table: recip one octave, rsqrt two.
SCALED_OCTAVES = {"recip": 1, "rsqrt": 2}


@lru_cache(maxsize=None)
def scaled_table(fn: str) -> tuple[np.ndarray, np.ndarray]:
    """(slopes, intercepts) as fp16 arrays: segment k (of ``SCALED_OCTAVES[fn] << SCALED_SEG_BITS``)
    covers m in ``2**o * [1 + j/2**bits, 1 + (j+1)/2**bits)``, o, j = divmod(k, 2**bits); a line in the
    offset of m from the segment's start, made as :func:`activation_table`'s."""
    if fn not in SCALED_FUNCTIONS:
        raise FormatError(f"unknown scaled activation {fn!r}; known: {SCALED_FUNCTIONS}")
    o, j = np.divmod(np.arange(SCALED_OCTAVES[fn] << SCALED_SEG_BITS), 1 << SCALED_SEG_BITS)
    lo = np.ldexp(1.0 + j / (1 << SCALED_SEG_BITS), o)
    hi = np.ldexp(1.0 + (j + 1) / (1 << SCALED_SEG_BITS), o)
    f = SCALED_EXACT[fn]
    slope, icpt = _segment_lines(f, lo, hi)
    return to_fp16(slope), to_fp16(icpt)


def fp16_scaled_activation(fn: str, x: np.ndarray) -> np.ndarray:
    """1/x (``recip``) or 1/sqrt(x) (``rsqrt``) as described at :data:`SCALED_FUNCTIONS`.

    Special values: recip(+-0) = +-inf, recip(+-inf) = +-0; rsqrt(+-0) = +inf, rsqrt(+inf) = +0,
    rsqrt(x < 0) and NaN give the canonical NaN.
    """
    x = np.asarray(x, dtype=np.float16)
    bits = fp16_bits(x)
    sign = (bits >> 15).astype(np.int64)
    mag = np.abs(x.astype(np.float64))
    finite = np.isfinite(mag) & (mag > 0)
    f, p = np.frexp(np.where(finite, mag, 1.0))        # mag = f * 2**p, f in [0.5, 1)
    e = p - 1
    m = 2.0 * f                                        # [1, 2), exact in fp16 (x's 11 bits)
    scaled = (m - 1.0) * (1 << SCALED_SEG_BITS)
    top = np.floor(scaled).astype(np.int64)
    dm = (scaled - top) / (1 << SCALED_SEG_BITS)      # m - m0: x's low fraction bits, exact
    if fn == "rsqrt":
        odd = e & 1
        dm = dm * (1 + odd)
        idx = (odd << SCALED_SEG_BITS) + top
        k = -((e - odd) >> 1)
    else:
        idx = top
        k = -e
    a, b = scaled_table(fn)
    r = _pwl(a[idx], b[idx], dm.astype(np.float16))
    with np.errstate(all="ignore"):
        y = to_fp16(np.ldexp(r.astype(np.float64), k))  # exact power-of-two scaling, one rounding
    inf, zero = np.float16(np.inf), np.float16(0)
    if fn == "recip":
        y = np.where(mag == 0, inf, np.where(np.isinf(mag), zero, y)).astype(np.float16)
        y = np.where(sign == 1, -y, y).astype(np.float16)
        return _where_nan(y, x)
    y = np.where(mag == 0, inf, np.where(np.isinf(mag), zero, y)).astype(np.float16)
    out = np.asarray(y, dtype=np.float16).copy()
    out.view(np.uint16)[(sign == 1) & (mag > 0) | np.isnan(x)] = CANONICAL_NAN
    return out


#: Every activation-unit function by name: the piecewise-linear ones, then the scaled ones.
ALL_ACTIVATIONS = ACT_FUNCTIONS + SCALED_FUNCTIONS


def activation_exact(fn: str, x: np.ndarray) -> np.ndarray:
    """The float64 function an activation approximates (the tests' reference)."""
    return (ACT_EXACT | SCALED_EXACT)[fn](np.asarray(x, dtype=np.float64))


#: The stated error bound of each table function against the exact float64 function f, over every finite
#: fp16 x whose fp16(f(x)) is finite (docs/numerics.md; tests/npu/test_activations.py checks each):
#: ``|y - f(x)| <= rel * |f(x)| + abs``, or with ``"unit"`` ``|y - f(x)| <= rel * max(1, |f(x)|)``.
#: exp is bounded for x < EXP_ACCURATE_BELOW (its table's last segments may overflow a little early).
ACT_ERROR_BOUNDS = {
    "sigm": ("unit", 1e-3, 0.0), "tanh": ("unit", 1e-3, 0.0), "gelu": ("unit", 1e-3, 0.0),
    "gelut": ("unit", 1e-3, 0.0), "hswish": ("unit", 1e-3, 0.0), "hsigm": ("unit", 1e-3, 0.0),
    "swish": ("unit", 1e-3, 0.0),
    "exp": ("rel", 2.1e-2, 5e-6),
    "recip": ("rel", 1e-3, 2.0 ** -25), "rsqrt": ("rel", 1e-3, 2.0 ** -25),
}
EXP_ACCURATE_BELOW = 11.0
assert set(ACT_ERROR_BOUNDS) == set(ALL_ACTIVATIONS)


# ------------------------------------------------------------------ reductions across a vector
def reduction_tree(n: int) -> list[list[tuple[int, int]]]:
    """The fixed pairwise order of a reduction of ``n`` lanes: per level, the (left, right) positions of the
    previous level's values that are combined; an odd last value passes up unchanged.  For n = 8:
    [(0,1),(2,3),(4,5),(6,7)], [(0,1),(2,3)], [(0,1)]."""
    levels = []
    while n > 1:
        levels.append([(2 * i, 2 * i + 1) for i in range(n // 2)])
        n = n // 2 + n % 2
    return levels


def fp16_reduce(kind: str, x: np.ndarray) -> np.ndarray:
    """``vr_sum`` / ``vr_max``: the sum (fp16 adds, RNE, canonical NaN) or the largest value (``fp16_max``'s
    rule: ``b if b > a else a``) of the last axis's N lanes, combined as :func:`reduction_tree` says, and
    broadcast to every lane."""
    x = np.asarray(x, dtype=np.float16)
    op = {"sum": fp16_add, "max": fp16_max}[kind]
    v = x
    while v.shape[-1] > 1:
        n = v.shape[-1]
        pair = op(v[..., 0:n - 1:2], v[..., 1:n:2])
        v = np.concatenate([pair, v[..., n - 1:]], axis=-1) if n % 2 else pair
    return np.broadcast_to(v, x.shape).astype(np.float16)
