# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hot kernels of the functional model, in C.

``quantize_fp16`` is npu.numerics.bfp_quantize + bfp_values fused for fp16
input, in one pass over the data: the contract stays in npu/numerics.py and
tests/sim/test_kernels.py checks the two agree bit for bit.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport fmax, fmin, ldexp

cnp.import_array()

# fp16 bits -> float32, the lookup both kernels use
_HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline float npu_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
    static inline uint32_t npu_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
    /* 2**k for a normal double exponent, -1022 <= k <= 1023 */
    static inline double npu_pow2(int k) { uint64_t u = (uint64_t)(k + 1023) << 52; double d; memcpy(&d, &u, 8); return d; }
    /* float32 -> fp16, round to nearest even, overflow to inf, every NaN -> 0x7E00
       (after F. Giesen's float_to_half_fast3_rtne). */
    static inline uint16_t npu_f32_to_f16(float value) {
        uint32_t x = npu_f32_to_bits(value);
        uint32_t sign = x & 0x80000000u;
        uint16_t o;
        x ^= sign;
        if (x > 0x7F800000u) return 0x7E00;
        if (x >= (143u << 23)) {                 /* >= 2**16: infinity */
            o = 0x7C00;
        } else if (x < (113u << 23)) {           /* < 2**-14: subnormal (or zero) */
            float f = npu_bits_to_f32(x) + 0.5f; /* the FPU rounds to a 2**-24 quantum */
            o = (uint16_t)(npu_f32_to_bits(f) - 0x3F000000u);
        } else {
            uint32_t odd = (x >> 13) & 1u;
            x += 0xC8000FFFu + odd;              /* rebias the exponent (-112 << 23) and round */
            o = (uint16_t)(x >> 13);
        }
        return o | (uint16_t)(sign >> 16);
    }
    """
    float npu_bits_to_f32(unsigned int u) nogil
    double npu_pow2(int k) nogil
    unsigned short npu_f32_to_f16(float value) nogil


cdef double RNE_MAGIC = 6755399441055744.0


cdef inline int fp16_floor_log2(unsigned int a) nogil:
    """floor(log2(|x|)) of a nonzero finite fp16 magnitude given by its bits (sign cleared)."""
    cdef unsigned int e = a >> 10
    cdef int p
    if e:
        return <int>e - 15
    # subnormal: value = m * 2**-24, m = a (10 bits)
    p = -1
    while a:
        a >>= 1
        p += 1
    return p - 24


def quantize_fp16(cnp.ndarray x not None, int block, int mant_bits, int emin, int emax):
    """Quantize fp16 vectors [V, N] in blocks along N.

    Returns (values float64 [V, N], exponents int16 [V, N/block], nonzero uint8 [V, N/block]) exactly as
    ``bfp_values(*bfp_quantize(x))`` and the "block has a nonzero mantissa" flags.
    """
    bits_np = np.ascontiguousarray(x, dtype=np.float16).view(np.uint16).reshape(x.shape[0], -1)
    cdef const unsigned short[:, ::1] bits = bits_np
    cdef Py_ssize_t V = bits.shape[0], N = bits.shape[1], nb = N // block
    vals_np = np.empty((V, N), dtype=np.float64)
    exps_np = np.empty((V, nb), dtype=np.int16)
    nz_np = np.empty((V, nb), dtype=np.uint8)
    cdef double[:, ::1] vals = vals_np
    cdef short[:, ::1] exps = exps_np
    cdef unsigned char[:, ::1] nz = nz_np
    cdef Py_ssize_t v, b, k, j
    cdef unsigned int a, amax
    cdef int e
    cdef double scale, inv, m, mmax = (1 << mant_bits) - 1
    cdef bint any_nz, special
    cdef const float[::1] fp16_to_f32 = _HALF_TO_FLOAT
    with nogil:
        for v in range(V):
            for b in range(nb):
                amax = 0
                for k in range(block):
                    a = bits[v, b * block + k] & 0x7FFF
                    amax = a if a > amax else amax
                special = amax >= 0x7C00
                if special:             # inf or NaN in the block: NaN reads as 0, inf as the largest magnitude
                    amax = 0
                    for k in range(block):
                        a = bits[v, b * block + k] & 0x7FFF
                        if a <= 0x7C00 and a > amax:
                            amax = a
                if amax == 0:
                    e = emin
                elif amax == 0x7C00:    # inf: the largest finite magnitude (float64 max) -> e = 1023
                    e = emax
                else:
                    e = fp16_floor_log2(amax)
                    if e < emin:
                        e = emin
                    elif e > emax:
                        e = emax
                exps[v, b] = e
                scale = npu_pow2(mant_bits - 1 - e)
                inv = npu_pow2(e - (mant_bits - 1))
                any_nz = 0
                if not special:         # the hot path, branch-free: (xv + MAGIC) - MAGIC is never -0
                    for k in range(block):
                        j = b * block + k
                        # round half to even: adding and subtracting 1.5 * 2**52 rounds |xv| < 2**51 in the
                        # default rounding mode (strict IEEE arithmetic: the compiler may not fold it)
                        m = (fp16_to_f32[bits[v, j]] * scale + RNE_MAGIC) - RNE_MAGIC
                        m = fmin(fmax(m, -mmax), mmax)
                        any_nz |= m != 0.0
                        vals[v, j] = m * inv
                else:
                    for k in range(block):
                        j = b * block + k
                        a = bits[v, j]
                        if (a & 0x7FFF) > 0x7C00:
                            m = 0.0
                        elif (a & 0x7FFF) == 0x7C00:
                            m = -mmax if a & 0x8000 else mmax
                        else:
                            m = (fp16_to_f32[a] * scale + RNE_MAGIC) - RNE_MAGIC
                            m = fmin(fmax(m, -mmax), mmax)
                        any_nz |= m != 0.0
                        vals[v, j] = m * inv    # m is +0, never -0: integer mantissas have no -0
                nz[v, b] = any_nz
    return vals_np, exps_np, nz_np


def fp16_binary(a, b, int op):
    """fp16 ``a + b`` (op 0), ``a - b`` (1) or ``a * b`` (2), elementwise; ``b`` may be smaller than ``a``
    and repeat along its leading axes (a bias).

    Computed in float32 and rounded once to fp16 (innocuous double rounding: 24 >= 2*11 + 2), NaNs
    canonical: the same results as npu.numerics.fp16_add/sub/mul (tests/sim/test_kernels.py).
    """
    av = np.ascontiguousarray(a, dtype=np.float16)
    bv = np.ascontiguousarray(b, dtype=np.float16)
    while bv.ndim and bv.shape[0] == 1 and bv.ndim >= av.ndim:
        bv = bv[0]
    if av.shape[av.ndim - bv.ndim:] != bv.shape:  # not a repetition along leading axes
        bv = np.ascontiguousarray(np.broadcast_to(bv, av.shape))
    out_np = np.empty(av.shape, dtype=np.float16)
    cdef const unsigned short[::1] x = av.reshape(-1).view(np.uint16)
    cdef const unsigned short[::1] y = bv.reshape(-1).view(np.uint16)
    cdef unsigned short[::1] o = out_np.reshape(-1).view(np.uint16)
    cdef const float[::1] h2f = _HALF_TO_FLOAT
    cdef Py_ssize_t i, k, r, base, n = x.shape[0], m = y.shape[0]
    with nogil:
        for r in range(n // m):
            base = r * m
            if op == 0:
                for k in range(m):
                    i = base + k
                    o[i] = npu_f32_to_f16(h2f[x[i]] + h2f[y[k]])
            elif op == 1:
                for k in range(m):
                    i = base + k
                    o[i] = npu_f32_to_f16(h2f[x[i]] - h2f[y[k]])
            else:
                for k in range(m):
                    i = base + k
                    o[i] = npu_f32_to_f16(h2f[x[i]] * h2f[y[k]])
    return out_np
