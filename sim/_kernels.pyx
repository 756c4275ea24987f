# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hot kernels of the functional model, in C.

``quantize_fp16`` is npu.numerics.bfp_quantize + bfp_values fused for fp16
input, in one pass over the data: the contract stays in npu/numerics.py and
tests/sim/test_kernels.py checks the two agree bit for bit.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport fabs, fmax, fmin

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
    #include <math.h>
    /* The BFP mantissa of a finite fp16 magnitude ``a`` (bits, sign cleared) under block exponent ``e``:
       round(|x| * 2**(mant_bits - 1 - e)) to nearest even, saturated to mmax.  |x| = s * 2**(ex - 25)
       with s the 11-bit significand, so the scaled value is s shifted right by 26 - mant_bits + e - ex. */
    static inline int npu_bfp_mant(uint32_t a, int e, int mant_bits, int mmax) {
        int ex = (int)(a >> 10);
        int32_t s = (int32_t)(a & 0x3FF) + (ex ? 1024 : 0), q;
        int sh;
        ex = ex ? ex : 1;
        sh = 26 - mant_bits + e - ex;
        if (sh <= 0) {
            q = sh < -20 ? (s ? mmax : 0) : s << (-sh);
        } else if (sh > 12) {
            q = 0;                                    /* below half a quantum */
        } else {
            int32_t rem = s & ((1 << sh) - 1), half = 1 << (sh - 1);
            q = s >> sh;
            q += (rem > half) | ((rem == half) & (q & 1));
        }
        return q < mmax ? q : mmax;
    }
    /* float64 -> fp16, one rounding to nearest even: to float32 rounding to odd (24 >= 11 + 2 bits, so the
       second rounding is exact), then float32 -> fp16. */
    static inline uint16_t npu_f64_to_f16(double v) {
        float f = (float)v;
        if ((double)f != v) {
            uint32_t u = npu_f32_to_bits(f);
            if (fabs((double)f) > fabs(v)) u -= 1;   /* truncate toward zero, then set the sticky bit */
            f = npu_bits_to_f32(u | 1u);
        }
        return npu_f32_to_f16(f);
    }
    /* One MFU element operation on fp16 bits (codes: sim._kernels.MFU_CODES); h2f maps fp16 bits to float32.
       Arithmetic in float32 rounded once to fp16 (innocuous double rounding: 24 >= 2*11 + 2); max/min
       return an operand's own bits, NaN in either gives the canonical NaN; relu ignores b. */
    static inline uint16_t npu_mfu_op(int op, uint16_t a, uint16_t b, const float *h2f) {
        float fa = h2f[a], fb = h2f[b];
        switch (op) {
        case 0: return npu_f32_to_f16(fa + fb);
        case 1: return npu_f32_to_f16(fa - fb);
        case 2: return npu_f32_to_f16(fa * fb);
        case 3: return (fa != fa || fb != fb) ? 0x7E00 : (fb > fa ? b : a);
        case 4: return (fa != fa || fb != fb) ? 0x7E00 : (fb < fa ? b : a);
        case 5: return npu_f32_to_f16(fb - fa);
        default: return (a >= 1 && a <= 0x7C00) ? a : 0;   /* relu: a > 0, NaN gives +0 */
        }
    }
    """
    float npu_bits_to_f32(unsigned int u) nogil
    double npu_pow2(int k) nogil
    unsigned short npu_mfu_op(int op, unsigned short a, unsigned short b, const float *h2f) nogil
    unsigned short npu_f32_to_f16(float value) nogil
    int npu_bfp_mant(unsigned int a, int e, int mant_bits, int mmax) nogil
    unsigned short npu_f64_to_f16(double v) nogil




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

    Returns (mantissas int16 [V, N], exponents int16 [V, N/block], block max |mantissa| uint16
    [V, N/block]) exactly as ``bfp_quantize(x)`` and the largest mantissa magnitude of each block
    (0: an all-zero block).
    """
    bits_np = np.ascontiguousarray(x, dtype=np.float16).view(np.uint16).reshape(x.shape[0], -1)
    cdef const unsigned short[:, ::1] bits = bits_np
    cdef Py_ssize_t V = bits.shape[0], N = bits.shape[1], nb = N // block
    mant_np = np.empty((V, N), dtype=np.int16)
    exps_np = np.empty((V, nb), dtype=np.int16)
    bmax_np = np.empty((V, nb), dtype=np.uint16)
    cdef short[:, ::1] mant = mant_np
    cdef short[:, ::1] exps = exps_np
    cdef unsigned short[:, ::1] bmax = bmax_np
    cdef Py_ssize_t v, b, k, j
    cdef unsigned int a, amax
    cdef int e
    cdef int q, qmax, imax = (1 << mant_bits) - 1
    cdef bint special
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
                qmax = 0
                if not special:         # the hot path: integer arithmetic on the fp16 bits
                    for k in range(block):
                        j = b * block + k
                        a = bits[v, j]
                        q = npu_bfp_mant(a & 0x7FFF, e, mant_bits, imax)
                        qmax = q if q > qmax else qmax
                        mant[v, j] = <short>(-q if a & 0x8000 else q)
                else:
                    for k in range(block):
                        j = b * block + k
                        a = bits[v, j]
                        if (a & 0x7FFF) > 0x7C00:
                            q = 0
                        elif (a & 0x7FFF) == 0x7C00:
                            q = imax
                        else:
                            q = npu_bfp_mant(a & 0x7FFF, e, mant_bits, imax)
                        qmax = q if q > qmax else qmax
                        mant[v, j] = <short>(-q if a & 0x8000 else q)
                bmax[v, b] = <unsigned short>qmax
    return mant_np, exps_np, bmax_np


#: Activation digits are balanced base 2**ACT_DIGIT_BITS (stored with +ACT_DIGIT_ZERO as uint8): at most
#: 64 in magnitude, so a pair of u8 x s8 products never saturates a 16-bit intermediate (2 * 127 * 128).
ACT_DIGIT_BITS = 7
ACT_DIGIT_ZERO = 64


def gather_digits(const short[:, ::1] mant, const short[:, ::1] exps, const unsigned short[:, ::1] bmax,
                  const long long[:, ::1] idx, int block, int window):
    """The MVM's input matrix as exact integers in balanced base-128 digits.

    Row ``i`` of the matrix is the concatenation of source vectors ``idx[i, :]`` (of the quantized
    ``mant``/``exps``/``bmax`` of :func:`quantize_fp16`).  Per row, blocks more than ``window`` exponent
    steps below the row's largest nonzero block are flushed (npu.numerics.flush_blocks); the kept
    values are the integers ``mant << (e - row_exp)`` times ``2**(row_exp - (mant_bits - 1))``, where
    ``row_exp`` is the row's smallest kept block exponent.

    Returns (digits uint8 [M, D, K], row_exp int32 [M]): ``value = sum_d (digits[:, d] - 64) * 128**d``
    with the fewest digits D that hold every row.  An all-zero row has row_exp 0 and zero digits.
    """
    cdef Py_ssize_t M = idx.shape[0], W = idx.shape[1], N = mant.shape[1], nb = N // block
    cdef Py_ssize_t K = W * N, i, w, b, k, d, src
    cdef int e, eref, emin_row, D = 1
    cdef long long v, r, vmax = 0, hi
    row_np = np.zeros(M, dtype=np.int32)
    cdef int[::1] row_exp = row_np
    keep_np = np.zeros((M, W, nb), dtype=np.uint8)
    cdef unsigned char[:, :, ::1] keep = keep_np
    with nogil:
        for i in range(M):
            eref = -32768
            for w in range(W):
                src = idx[i, w]
                for b in range(nb):
                    if bmax[src, b] and exps[src, b] > eref:
                        eref = exps[src, b]
            if eref == -32768:
                continue
            emin_row = eref
            for w in range(W):
                src = idx[i, w]
                for b in range(nb):
                    if bmax[src, b] and exps[src, b] >= eref - window:
                        keep[i, w, b] = 1
                        if exps[src, b] < emin_row:
                            emin_row = exps[src, b]
            row_exp[i] = emin_row
            for w in range(W):
                src = idx[i, w]
                for b in range(nb):
                    if keep[i, w, b]:
                        v = (<long long>bmax[src, b]) << (exps[src, b] - emin_row)
                        vmax = v if v > vmax else vmax
        # D balanced digits hold [-64 * (128**D - 1) / 127, 63 * (128**D - 1) / 127]
        hi = 63
        while hi < vmax:
            hi = hi * 128 + 63
            D += 1
    out_np = np.full((M, D, K), ACT_DIGIT_ZERO, dtype=np.uint8)
    cdef unsigned char[:, :, ::1] out = out_np
    cdef int sh
    with nogil:
        for i in range(M):
            for w in range(W):
                src = idx[i, w]
                for b in range(nb):
                    if not keep[i, w, b]:
                        continue
                    sh = exps[src, b] - row_exp[i]
                    for k in range(block):
                        v = (<long long>mant[src, b * block + k]) * ((<long long>1) << sh)
                        for d in range(D):
                            r = ((v + 64) & 127) - 64
                            out[i, d, w * N + b * block + k] = <unsigned char>(r + 64)
                            v = (v - r) >> 7  # exact: v - r is a multiple of 128
    return out_np, row_np


#: C codes of the MFU operations the kernels run (npu_mfu_op); sim.functional maps mnemonics to them.
MFU_CODES = {"vv_add": 0, "vv_a_sub_b": 1, "vv_mul": 2, "vv_max": 3, "vv_min": 4, "vv_b_sub_a": 5, "v_relu": 6}
cdef enum:
    MAX_EPILOGUE = 8


def digit_products_to_fp16(const int[:, :, :, ::1] prods, const int[::1] row_k, const int[::1] col_k,
                           int row_digit_bits, int col_digit_bits, epilogue=()):
    """Sum digit products exactly, round once to fp16, then apply MFU operations.

    ``prods[i, d, e, j]`` is row digit d times column digit e of output (i, j); the exact output is
    ``sum_de prods[i, d, e, j] << (d * row_digit_bits + e * col_digit_bits)``, times
    ``2**(row_k[i] + col_k[j])``.  ``epilogue`` is a sequence of ``(code, operand)`` (codes of
    :data:`MFU_CODES`; operand fp16 [M, N] or [1, N] for one row used by every row, None for relu)
    applied in order.  Returns fp16 [M, N] (an exact zero is +0).
    """
    cdef Py_ssize_t M = prods.shape[0], D = prods.shape[1], E = prods.shape[2], N = prods.shape[3]
    cdef Py_ssize_t i, d, e, j, t, nops = len(epilogue)
    cdef long long scale
    cdef int opcode[MAX_EPILOGUE]
    cdef const unsigned short *optr[MAX_EPILOGUE]
    cdef Py_ssize_t ostride[MAX_EPILOGUE]
    cdef const unsigned short *bp
    cdef unsigned short *orow
    cdef cnp.ndarray arr
    if nops > MAX_EPILOGUE:
        raise ValueError(f"at most {MAX_EPILOGUE} fused MFU operations")
    held = []
    for t, (code, operand) in enumerate(epilogue):
        opcode[t] = code
        if operand is None:
            optr[t], ostride[t] = NULL, 0
        else:
            arr = np.ascontiguousarray(operand, dtype=np.float16).view(np.uint16).reshape(-1, N)
            if arr.shape[0] not in (1, M):
                raise ValueError(f"epilogue operand of {arr.shape[0]} rows for {M} outputs")
            held.append(arr)
            optr[t] = <const unsigned short *>cnp.PyArray_DATA(arr)
            ostride[t] = 0 if arr.shape[0] == 1 else N
    out_np = np.empty((M, N), dtype=np.uint16)
    acc_np = np.empty(N, dtype=np.int64)
    cdef unsigned short[:, ::1] out = out_np
    cdef long long[::1] acc = acc_np
    cdef const float[::1] h2f = _HALF_TO_FLOAT
    with nogil:
        for i in range(M):
            for j in range(N):
                acc[j] = prods[i, 0, 0, j]
            for d in range(D):
                for e in range(E):
                    if d or e:
                        scale = (<long long>1) << (d * row_digit_bits + e * col_digit_bits)
                        for j in range(N):
                            acc[j] += prods[i, d, e, j] * scale
            orow = &out[i, 0]
            for j in range(N):
                # |acc| < 2**53 (npu.numerics.flush_windows): exact in float64, and so is the power of two
                orow[j] = npu_f64_to_f16(<double>acc[j] * npu_pow2(row_k[i] + col_k[j]))
            for t in range(nops):
                bp = optr[t] + i * ostride[t]
                if bp == NULL:
                    for j in range(N):
                        orow[j] = npu_mfu_op(opcode[t], orow[j], 0, &h2f[0])
                else:
                    for j in range(N):
                        orow[j] = npu_mfu_op(opcode[t], orow[j], bp[j], &h2f[0])
    return out_np.view(np.float16)


def fp16_binary(a, b, int op):
    """The MFU binary operation ``op`` (a code of :data:`MFU_CODES`) elementwise on fp16 ``a`` and ``b``;
    ``b`` may be smaller than ``a`` and repeat along its leading axes (a bias).

    The same results as npu.numerics.fp16_add/sub/mul/max/min (tests/sim/test_kernels.py).
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
    if n == 0:
        return out_np
    with nogil:
        for r in range(n // m):
            base = r * m
            for k in range(m):
                i = base + k
                o[i] = npu_mfu_op(op, x[i], y[k], &h2f[0])
    return out_np
