# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hot kernels of the functional model: Python entry points over the C row kernels of _kernels.h.

The contract stays in npu/numerics.py; tests/sim/test_kernels.py and
tests/sim/test_intgemm.py check these kernels against it bit for bit (scalar
and AVX2 + F16C versions alike).
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.string cimport memset

cnp.import_array()


cdef extern from "_parallel.h":
    enum:
        NPU_MAX_THREADS
    ctypedef void (*npu_rows_fn)(void *ctx, Py_ssize_t lo, Py_ssize_t hi, int tid) noexcept nogil
    void npu_parallel_rows(npu_rows_fn fn, void *ctx, Py_ssize_t n, Py_ssize_t grain, Py_ssize_t min_rows,
                           int threads) nogil


cdef extern from "_kernels.h":
    enum:
        NPU_ADD, NPU_A_SUB_B, NPU_MUL, NPU_MAX, NPU_MIN, NPU_B_SUB_A, NPU_RELU
        NPU_ACT_DIGIT_BITS, NPU_ACT_DIGIT_ZERO
    int npu_simd() nogil
    void npu_set_simd(int on) nogil
    void npu_dispatch_init() nogil
    void npu_mfu_row(int op, unsigned short *a, const unsigned short *b, int n) nogil
    ctypedef struct npu_output_pass:
        const double *c
        const double *cs
        const int *row_k
        const int *opcode
        const unsigned short *const *optr
        const Py_ssize_t *ostride
        unsigned short *out
        int nops, exact53
    ctypedef struct npu_combine_job:
        const int *p
        int T, n
        npu_output_pass o
    void npu_combine_rows(void *arg, Py_ssize_t lo, Py_ssize_t hi, int tid) nogil
    ctypedef struct npu_quantize_job:
        const unsigned short *x
        short *mant
        short *exps
        unsigned short *bmax
        int n, block, mant_bits, emin, emax
    void npu_quantize_rows(void *arg, Py_ssize_t lo, Py_ssize_t hi, int tid) nogil
    ctypedef struct npu_gather_job:
        const short *mant
        const short *exps
        const unsigned short *bmax
        const int64_t *idx
        Py_ssize_t W, N
        int block, window
        unsigned char *keep
        int *row_exp
        int64_t vmax[NPU_MAX_THREADS]
        unsigned char *out
        Py_ssize_t Kp
        int D, fits32
        int64_t offset
    void npu_gather_scan(void *arg, Py_ssize_t lo, Py_ssize_t hi, int tid) nogil
    void npu_gather_write(void *arg, Py_ssize_t lo, Py_ssize_t hi, int tid) nogil


cdef extern from "_amx.h":
    enum:
        NPU_AMX_KB, NPU_AMX_JB, NPU_AMX_MAX_T
    ctypedef struct npu_amx_job:
        const unsigned char *a
        const signed char *w
        const unsigned char *nz
        const int *zero
        unsigned char *tail
        int M, D, E, K, R
        npu_output_pass o
    int npu_amx_init() nogil
    int npu_amx_mvm(npu_amx_job job, int threads) nogil


def simd() -> bool:
    """Whether the AVX2 + F16C versions of the kernels run here (NPU_SIM_SCALAR=1 turns them off)."""
    return bool(npu_simd())


def use_simd(on: bool) -> bool:
    """Use the AVX2 + F16C kernels where the CPU has them (True) or the scalar ones (False, as on
    CPUs without them); returns whether the vector kernels now run.  For tests and measurements."""
    npu_set_simd(1 if on else 0)
    return bool(npu_simd())


def quantize_fp16(cnp.ndarray x not None, int block, int mant_bits, int emin, int emax, int threads=1,
                  Py_ssize_t min_rows=0):
    """Quantize fp16 vectors [V, N] in blocks along N.

    Returns (mantissas int16 [V, N], exponents int16 [V, N/block], block max |mantissa| uint16
    [V, N/block]) exactly as ``bfp_quantize(x)`` and the largest mantissa magnitude of each block
    (0: an all-zero block).  Vectors are split over up to ``threads`` threads, each with at least
    ``min_rows`` vectors (0: about 64 K values).
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
    cdef npu_quantize_job job
    if V == 0 or N == 0:
        return mant_np, exps_np, bmax_np
    job.x, job.mant, job.exps, job.bmax = &bits[0, 0], &mant[0, 0], &exps[0, 0], &bmax[0, 0]
    job.n, job.block, job.mant_bits, job.emin, job.emax = N, block, mant_bits, emin, emax
    with nogil:
        npu_dispatch_init()
        npu_parallel_rows(npu_quantize_rows, &job, V, 1, min_rows if min_rows > 0 else max(1, (1 << 16) // N),
                          threads)
    return mant_np, exps_np, bmax_np


#: Activation digits are balanced base 2**ACT_DIGIT_BITS (stored with +ACT_DIGIT_ZERO as uint8): at most
#: 64 in magnitude, so a pair of u8 x s8 products never saturates a 16-bit intermediate (2 * 127 * 128).
ACT_DIGIT_BITS = NPU_ACT_DIGIT_BITS
ACT_DIGIT_ZERO = NPU_ACT_DIGIT_ZERO


cpdef int balanced_digits(long long vmax, int bits) noexcept nogil:
    """The fewest balanced base-2**bits digits (each in -2**(bits-1) .. 2**(bits-1) - 1) that hold every
    integer of magnitude up to ``vmax``: D digits reach (2**(bits-1) - 1) * (2**(bits*D) - 1) / (2**bits - 1)."""
    cdef long long top = (1LL << (bits - 1)) - 1, hi = top
    cdef int D = 1
    while hi < vmax:
        hi = (hi << bits) + top
        D += 1
    return D


def gather_digits(const short[:, ::1] mant, const short[:, ::1] exps, const unsigned short[:, ::1] bmax,
                  const long long[:, ::1] idx, int block, int window, int threads=1, Py_ssize_t min_rows=0,
                  Py_ssize_t k_pad=0):
    """The MVM's input matrix as exact integers in balanced base-128 digits.

    Row ``i`` of the matrix is the concatenation of source vectors ``idx[i, :]`` (of the quantized
    ``mant``/``exps``/``bmax`` of :func:`quantize_fp16`).  Per row, blocks more than ``window`` exponent
    steps below the row's largest nonzero block are flushed (npu.numerics.flush_blocks); the kept
    values are the integers ``mant << (e - row_exp)`` times ``2**(row_exp - (mant_bits - 1))``, where
    ``row_exp`` is the row's smallest kept block exponent.  Rows are split over up to ``threads`` threads,
    each with at least ``min_rows`` rows (0: about 256 KB of digits).

    Returns (digits uint8 [M, D, K], row_exp int32 [M]): ``value = sum_d (digits[:, d] - 64) * 128**d``
    with the fewest digits D that hold every row.  An all-zero row has row_exp 0 and zero digits.  With
    ``k_pad`` > K the rows are ``k_pad`` long, zero digits after K.
    """
    cdef Py_ssize_t M = idx.shape[0], W = idx.shape[1], N = mant.shape[1], nb = N // block
    cdef Py_ssize_t K = W * N, t, Kp = max(W * N, k_pad)
    cdef long long vmax = 0, offset = 0
    cdef int D
    row_np = np.zeros(M, dtype=np.int32)
    cdef int[::1] row_exp = row_np
    keep_np = np.empty((M, W, nb), dtype=np.uint8)
    cdef unsigned char[:, :, ::1] keep = keep_np
    cdef npu_gather_job job
    if M == 0 or K == 0:
        return np.full((M, 1, Kp), NPU_ACT_DIGIT_ZERO, dtype=np.uint8), row_np
    if min_rows <= 0:
        min_rows = max(1, (1 << 18) // K)
    memset(&job, 0, sizeof(job))
    job.mant, job.exps, job.bmax, job.idx = &mant[0, 0], &exps[0, 0], &bmax[0, 0], <const int64_t *>&idx[0, 0]
    job.W, job.N, job.block, job.window = W, N, block, window
    job.keep, job.row_exp = &keep[0, 0, 0], &row_exp[0]
    with nogil:
        npu_dispatch_init()
        npu_parallel_rows(npu_gather_scan, &job, M, 1, min_rows, threads)
        for t in range(NPU_MAX_THREADS):
            vmax = job.vmax[t] if job.vmax[t] > vmax else vmax
        D = balanced_digits(vmax, NPU_ACT_DIGIT_BITS)
    # adding offset = 64 * (128**D - 1) / 127 turns every digit into its stored value (digit + 64) in 0..127
    for t in range(D):
        offset = (offset << NPU_ACT_DIGIT_BITS) + NPU_ACT_DIGIT_ZERO
    out_np = np.empty((M, D, Kp), dtype=np.uint8)
    cdef unsigned char[:, :, ::1] out = out_np
    job.out, job.Kp, job.D, job.offset, job.fits32 = &out[0, 0, 0], Kp, D, offset, vmax + offset < (1 << 31)
    with nogil:
        npu_parallel_rows(npu_gather_write, &job, M, 1, min_rows, threads)
    return out_np, row_np


#: C codes of the MFU operations the kernels run (npu_mfu_op in _kernels.h); sim.functional maps mnemonics to them.
MFU_CODES = {"vv_add": NPU_ADD, "vv_a_sub_b": NPU_A_SUB_B, "vv_mul": NPU_MUL, "vv_max": NPU_MAX, "vv_min": NPU_MIN,
             "vv_b_sub_a": NPU_B_SUB_A, "v_relu": NPU_RELU}
cdef enum:
    MAX_EPILOGUE = 8


def _shift_scales(Py_ssize_t D, Py_ssize_t E, int row_digit_bits, int col_digit_bits, max_abs):
    """2**shift of each digit product (d major) and whether the float64 sum of any data is exact."""
    shifts = [d * row_digit_bits + e * col_digit_bits for d in range(D) for e in range(E)]
    if max(shifts) > 62:
        raise ValueError(f"digit products shifted by up to {max(shifts)} bits do not fit int64")
    exact53 = sum(2.0 ** sh for sh in shifts) * max_abs < 2.0 ** 53
    return np.array([2.0 ** sh for sh in shifts], dtype=np.float64), int(exact53)


cdef object _output_pass(npu_output_pass *o, epilogue, Py_ssize_t M, Py_ssize_t N, const int *row_k, col_k,
                         Py_ssize_t D, Py_ssize_t E, int row_digit_bits, int col_digit_bits, max_abs,
                         unsigned short *out):
    """Describe an MVM's output pass (npu_output_pass in _kernels.h) for M x N outputs of D x E digit products;
    returns the arrays it points into, which the caller keeps alive while the kernel runs."""
    cdef cnp.ndarray arr
    if len(epilogue) > MAX_EPILOGUE:
        raise ValueError(f"at most {MAX_EPILOGUE} fused MFU operations")
    opcode = np.zeros(max(1, len(epilogue)), dtype=np.intc)
    optr = np.zeros(max(1, len(epilogue)), dtype=np.uintp)
    ostride = np.zeros(max(1, len(epilogue)), dtype=np.intp)
    held = [opcode, optr, ostride]
    for t, (code, operand) in enumerate(epilogue):
        opcode[t] = code
        if operand is None:
            if code != NPU_RELU:
                raise ValueError(f"MFU operation {code} takes an operand")
        else:
            arr = np.ascontiguousarray(operand, dtype=np.float16).view(np.uint16).reshape(-1, N)
            if arr.shape[0] not in (1, M):
                raise ValueError(f"epilogue operand of {arr.shape[0]} rows for {M} outputs")
            held.append(arr)
            optr[t] = <size_t>cnp.PyArray_DATA(arr)
            ostride[t] = 0 if arr.shape[0] == 1 else N
    c, exact = _shift_scales(D, E, row_digit_bits, col_digit_bits, max_abs)
    cs = np.ldexp(1.0, np.asarray(col_k, dtype=np.int64))
    held += [c, cs]
    o.c = <const double *>cnp.PyArray_DATA(c)
    o.cs = <const double *>cnp.PyArray_DATA(cs)
    o.row_k, o.out, o.nops, o.exact53 = row_k, out, len(epilogue), exact
    o.opcode = <const int *>cnp.PyArray_DATA(opcode)
    o.optr = <const unsigned short *const *>cnp.PyArray_DATA(optr)
    o.ostride = <const Py_ssize_t *>cnp.PyArray_DATA(ostride)
    return held


def digit_products_to_fp16(const int[:, :, :, ::1] prods, const int[::1] row_k, const int[::1] col_k,
                           int row_digit_bits, int col_digit_bits, epilogue=(), max_abs=None, out=None,
                           int threads=1, Py_ssize_t min_rows=0):
    """Sum digit products exactly, round once to fp16, then apply MFU operations.

    ``prods[i, d, e, j]`` is row digit d times column digit e of output (i, j); the exact output is
    ``sum_de prods[i, d, e, j] << (d * row_digit_bits + e * col_digit_bits)``, times
    ``2**(row_k[i] + col_k[j])``.  ``epilogue`` is a sequence of ``(code, operand)`` (codes of
    :data:`MFU_CODES`; operand fp16 [M, N] or [1, N] for one row used by every row, None for relu)
    applied in order.  ``max_abs`` bounds ``|prods|`` (measured when not given).  Returns fp16 [M, N] (an
    exact zero is +0), written into ``out`` (C-contiguous fp16 [M, N]) when given.  Rows are split over up
    to ``threads`` threads, each with at least ``min_rows`` rows (0: about 64 K outputs).
    """
    cdef Py_ssize_t M = prods.shape[0], D = prods.shape[1], E = prods.shape[2], N = prods.shape[3]
    if row_k.shape[0] != M or col_k.shape[0] != N:
        raise ValueError(f"{row_k.shape[0]} row and {col_k.shape[0]} column exponents for {M} x {N} outputs")
    out_np = np.empty((M, N), dtype=np.uint16) if out is None else out.view(np.uint16)
    cdef unsigned short[:, ::1] res = out_np
    if max_abs is None:
        max_abs = int(np.abs(np.asarray(prods, dtype=np.int64)).max()) if prods.size else 0
    cdef npu_combine_job job
    held = _output_pass(&job.o, epilogue, M, N, &row_k[0] if M else NULL, col_k, D, E, row_digit_bits,
                        col_digit_bits, max_abs, &res[0, 0] if M and N else NULL)
    if M == 0 or N == 0:
        return out_np.view(np.float16)
    job.p, job.T, job.n = &prods[0, 0, 0, 0], <int>(D * E), <int>N
    with nogil:
        npu_dispatch_init()
        npu_parallel_rows(npu_combine_rows, &job, M, 1, min_rows if min_rows > 0 else max(1, (1 << 16) // N),
                          threads)
    return out_np.view(np.float16)


# ------------------------------------------------------------------ AMX (sim/_amx.h)
#: Shapes the AMX kernel takes: K a multiple of AMX_K_MULTIPLE, R of AMX_R_MULTIPLE, at most AMX_MAX_PRODUCTS
#: digit products per output.
AMX_K_MULTIPLE = NPU_AMX_KB
AMX_R_MULTIPLE = NPU_AMX_JB
AMX_MAX_PRODUCTS = NPU_AMX_MAX_T


def amx_available() -> bool:
    """Whether this CPU and OS run AMX-INT8 tiles (with NPU_SIM_SCALAR=1 the AMX kernel still runs, its output
    pass in scalar code)."""
    return bool(npu_amx_init())


def amx_pack(const signed char[:, :, ::1] rows):
    """Weight digit rows int8 [E, R, K] (digit e of output r's weights) in the AMX kernel's layout: (packed int8
    [E, R/16, Kp/64, 16, 64], zero int32 [E, R]: 64 times each output's digit sum, nonzero uint8 [R/16, Kp/64]:
    which tiles the kernel multiplies), K padded with zero weights to Kp, a multiple of 64 (the activation
    digits then need the same padding)."""
    d = np.asarray(rows)
    E, R, K = d.shape[0], d.shape[1], d.shape[2]
    zero = d.sum(axis=2, dtype=np.int64) * NPU_ACT_DIGIT_ZERO
    if K % 64:
        d = np.concatenate([d, np.zeros((E, R, 64 - K % 64), np.int8)], axis=2)
        K = d.shape[2]
    # tile row kk, byte 4 * j + q holds digit (k = 64 * kb + 4 * kk + q, output 16 * jb + j)
    packed = np.ascontiguousarray(d.reshape(E, R // 16, 16, K // 64, 16, 4).transpose(0, 1, 3, 4, 2, 5))
    packed = packed.reshape(E, R // 16, K // 64, 16, 64)
    nonzero = packed.reshape(E, R // 16, K // 64, -1).any(axis=(0, 3)).astype(np.uint8)
    return packed, zero.astype(np.int32), nonzero


def amx_mvm(const unsigned char[:, :, ::1] digits, const int[::1] row_k, const signed char[:, :, :, :, ::1] packed,
            const int[:, ::1] zero, const unsigned char[:, ::1] nonzero, const int[::1] col_k, int row_digit_bits, int col_digit_bits, epilogue,
            max_abs, out, int threads):
    """The MVM of activation digits [M, D, K] (gather_digits) by packed weight digits (amx_pack) on AMX:
    the same results as MatMulInteger followed by :func:`digit_products_to_fp16` with the same arguments,
    written into ``out`` (fp16 [M, R]).  Returns False (nothing written) where AMX is not usable."""
    cdef Py_ssize_t M = digits.shape[0], D = digits.shape[1], K = digits.shape[2]
    cdef Py_ssize_t E = packed.shape[0], R = packed.shape[1] * NPU_AMX_JB
    if (K == 0 or K % NPU_AMX_KB or packed.shape[2] * NPU_AMX_KB != K or D * E > NPU_AMX_MAX_T
            or nonzero.shape[0] != packed.shape[1] or nonzero.shape[1] != packed.shape[2]):
        raise ValueError(f"AMX MVM: K {K}, D {D}, E {E} out of range")
    if row_k.shape[0] != M or col_k.shape[0] != R or zero.shape[0] != E or zero.shape[1] != R:
        raise ValueError(f"AMX MVM: {row_k.shape[0]} row and {col_k.shape[0]} column exponents, zero points "
                         f"{zero.shape[0]} x {zero.shape[1]} for {M} x {R} outputs of {E} weight digits")
    res_np = out.view(np.uint16)
    cdef unsigned short[:, ::1] res = res_np
    if res.shape[0] != M or res.shape[1] != R:
        raise ValueError(f"AMX MVM: output {res.shape[0]} x {res.shape[1]} for {M} x {R}")
    cdef npu_amx_job job
    held = _output_pass(&job.o, epilogue, M, R, &row_k[0] if M else NULL, col_k, D, E, row_digit_bits,
                        col_digit_bits, max_abs, &res[0, 0] if M else NULL)
    if M == 0:
        return True
    job.a = &digits[0, 0, 0]
    job.w = &packed[0, 0, 0, 0, 0]
    job.nz = &nonzero[0, 0]
    job.zero = &zero[0, 0]
    job.M, job.D, job.E, job.K, job.R = M, D, E, K, R
    cdef int rc
    with nogil:
        rc = npu_amx_mvm(job, threads)
    return rc == 0


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
    np.copyto(out_np, av)
    cdef unsigned short[::1] o = out_np.reshape(-1).view(np.uint16)
    cdef const unsigned short[::1] y = bv.reshape(-1).view(np.uint16)
    cdef Py_ssize_t r, n = o.shape[0], m = y.shape[0]
    if n == 0:
        return out_np
    with nogil:
        for r in range(n // m):
            npu_mfu_row(op, &o[r * m], &y[0], <int>m)
    return out_np
