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
* Sigmoid and tanh are piecewise-linear in fp16: ``y = fp16(fp16(a*x) + b)``
  with ``(a, b)`` from a 388-entry table indexed by the bits of ``x``.

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
#: Piecewise-linear sigmoid/tanh: |x| in [2**ACT_EMIN, 2**(ACT_EMAX+1)) is split
#: into 2**ACT_SEG_BITS segments per octave (indexed by the top mantissa bits);
#: below it a linear entry, above it a saturating entry.
ACT_EMIN = -8
ACT_EMAX = 3
ACT_SEG_BITS = 4
ACT_FUNCTIONS = ("sigm", "tanh")
_OCTAVES = ACT_EMAX - ACT_EMIN + 1
ACT_SEGMENTS = _OCTAVES << ACT_SEG_BITS          # per sign
ACT_LINEAR = ACT_SEGMENTS                         # index of the small-|x| entry
ACT_SATURATE = ACT_SEGMENTS + 1                   # index of the large-|x| entry
ACT_ENTRIES_PER_SIGN = ACT_SEGMENTS + 2
ACT_TABLE_SIZE = 2 * ACT_ENTRIES_PER_SIGN         # sign 0 first, then sign 1


def _exact(fn: str, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x)) if fn == "sigm" else np.tanh(x)


@lru_cache(maxsize=None)
def activation_table(fn: str) -> tuple[np.ndarray, np.ndarray]:
    """(slopes, intercepts) as fp16 arrays of :data:`ACT_TABLE_SIZE` entries.

    Segment k of octave o covers ``|x|`` in ``[x0, x1)`` with
    ``x0 = 2**(ACT_EMIN+o) * (1 + k/2**ACT_SEG_BITS)``; its line is the secant of
    the exact function through both ends, computed in float64 and rounded to fp16.
    """
    if fn not in ACT_FUNCTIONS:
        raise FormatError(f"unknown activation {fn!r}; known: {ACT_FUNCTIONS}")
    a = np.zeros(ACT_TABLE_SIZE)
    b = np.zeros(ACT_TABLE_SIZE)
    o, k = np.divmod(np.arange(ACT_SEGMENTS), 1 << ACT_SEG_BITS)
    x0 = np.ldexp(1.0 + k / (1 << ACT_SEG_BITS), ACT_EMIN + o)
    x1 = np.ldexp(1.0 + (k + 1) / (1 << ACT_SEG_BITS), ACT_EMIN + o)
    for sign, s in ((0, 1.0), (1, -1.0)):
        base = sign * ACT_ENTRIES_PER_SIGN
        lo, hi = s * x0, s * x1
        slope = (_exact(fn, hi) - _exact(fn, lo)) / (hi - lo)
        a[base:base + ACT_SEGMENTS] = slope
        b[base:base + ACT_SEGMENTS] = _exact(fn, lo) - slope * lo
        if fn == "sigm":
            a[base + ACT_LINEAR], b[base + ACT_LINEAR] = 0.25, 0.5
            b[base + ACT_SATURATE] = 1.0 if sign == 0 else 0.0
        else:
            a[base + ACT_LINEAR], b[base + ACT_LINEAR] = 1.0, 0.0
            b[base + ACT_SATURATE] = s
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


def fp16_activation(fn: str, x: np.ndarray) -> np.ndarray:
    """``fp16(fp16(a[i] * x) + b[i])`` with ``i = activation_index(x)``; NaN stays canonical NaN."""
    x = np.asarray(x, dtype=np.float16)
    a, b = activation_table(fn)
    idx = activation_index(x)
    with np.errstate(all="ignore"):
        prod = np.multiply(a[idx], x, dtype=np.float16)
        # inf * 0 on the saturating entry would be NaN: the saturating entry ignores x.
        prod = np.where(idx % ACT_ENTRIES_PER_SIGN == ACT_SATURATE, np.float16(0), prod)
        y = np.add(prod, b[idx], dtype=np.float16)
    return _where_nan(y, x)
