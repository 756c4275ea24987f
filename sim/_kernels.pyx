# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hot kernels of the functional model, in C.

``quantize_fp16`` is npu.numerics.bfp_quantize + bfp_values fused for fp16
input, in one pass over the data: the contract stays in npu/numerics.py and
tests/sim/test_kernels.py checks the two agree bit for bit.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport ldexp

cnp.import_array()


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


def quantize_fp16(cnp.ndarray x not None, int block, int mant_bits, int emin, int emax, float[::1] fp16_to_f32):
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
    cdef double scale, inv, m, mmax = (1 << mant_bits) - 1, xv
    cdef bint any_nz
    with nogil:
        for v in range(V):
            for b in range(nb):
                amax = 0
                for k in range(block):
                    a = bits[v, b * block + k] & 0x7FFF
                    if a > 0x7C00:      # NaN reads as 0
                        a = 0
                    if a > amax:
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
                scale = ldexp(1.0, mant_bits - 1 - e)
                inv = ldexp(1.0, e - (mant_bits - 1))
                any_nz = 0
                for k in range(block):
                    j = b * block + k
                    a = bits[v, j]
                    if (a & 0x7FFF) > 0x7C00:
                        m = 0.0
                    elif (a & 0x7FFF) == 0x7C00:
                        m = -mmax if a & 0x8000 else mmax
                    else:
                        xv = fp16_to_f32[a] * scale
                        # round half to even: adding and subtracting 1.5 * 2**52 rounds |xv| < 2**51 in the
                        # default rounding mode (strict IEEE arithmetic: the compiler may not fold it)
                        m = (xv + RNE_MAGIC) - RNE_MAGIC
                        if m > mmax:
                            m = mmax
                        elif m < -mmax:
                            m = -mmax
                    if m != 0.0:
                        any_nz = 1
                        vals[v, j] = m * inv
                    else:
                        vals[v, j] = 0.0    # integer mantissas have no -0
                nz[v, b] = any_nz
    return vals_np, exps_np, nz_np
