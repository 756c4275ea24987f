/* Row kernels of the functional model (sim/_kernels.pyx drives them over rows, on sim/_parallel.h's threads).
 *
 * Each kernel has a portable scalar version, the definition, and an AVX2 + F16C version used when the CPU
 * has both (the activation digits also an AVX-512 one), chosen at run time with no build flags.  They give
 * the same bits: tests/sim/test_kernels.py and tests/sim/test_intgemm.py compare them against npu.numerics,
 * and NPU_SIM_SCALAR=1 forces the scalar versions.
 */
#ifndef NPU_KERNELS_H
#define NPU_KERNELS_H

#include "_isa.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_parallel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NPU_X86 1
#else
#define NPU_X86 0
#endif

/* ------------------------------------------------------------------ scalar helpers */
static inline float npu_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t npu_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
/* 2**k for a normal double exponent, -1022 <= k <= 1023 */
static inline double npu_pow2(int k) { uint64_t u = (uint64_t)(k + 1023) << 52; double d; memcpy(&d, &u, 8); return d; }

/* fp16 bits -> float32 (exact) */
static inline float npu_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, ex = (h >> 10) & 0x1F, man = h & 0x3FF;
    if (ex == 0x1F) return npu_bits_to_f32(sign | 0x7F800000u | (man << 13));
    if (ex == 0) {                               /* zero or subnormal: man * 2**-24 */
        float f = (float)man * 5.9604644775390625e-08f;
        return sign ? -f : f;
    }
    return npu_bits_to_f32(sign | ((ex + 112) << 23) | (man << 13));
}

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

/* floor(log2(|x|)) of a nonzero finite fp16 magnitude given by its bits (sign cleared) */
static inline int npu_f16_floor_log2(uint32_t a) {
    uint32_t e = a >> 10;
    if (e) return (int)e - 15;
    return (31 - __builtin_clz(a)) - 24;      /* subnormal: a * 2**-24 */
}

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

/* MFU operation codes (sim._kernels.MFU_CODES): the instructions' opcodes, from the ISA table (_isa.h) */
enum { NPU_ADD = NPU_OP_VV_ADD, NPU_A_SUB_B = NPU_OP_VV_A_SUB_B, NPU_MUL = NPU_OP_VV_MUL, NPU_MAX = NPU_OP_VV_MAX,
       NPU_MIN = NPU_OP_VV_MIN, NPU_B_SUB_A = NPU_OP_VV_B_SUB_A, NPU_RELU = NPU_OP_V_RELU };

/* One MFU element operation on fp16 bits.  Arithmetic in float32 rounded once to fp16 (innocuous double
   rounding: 24 >= 2*11 + 2); max/min return an operand's own bits, NaN in either gives the canonical NaN;
   relu ignores b. */
static inline uint16_t npu_mfu_op(int op, uint16_t a, uint16_t b) {
    float fa = npu_f16_to_f32(a), fb = npu_f16_to_f32(b);
    switch (op) {
    case NPU_ADD: return npu_f32_to_f16(fa + fb);
    case NPU_A_SUB_B: return npu_f32_to_f16(fa - fb);
    case NPU_MUL: return npu_f32_to_f16(fa * fb);
    case NPU_MAX: return (fa != fa || fb != fb) ? 0x7E00 : (fb > fa ? b : a);
    case NPU_MIN: return (fa != fa || fb != fb) ? 0x7E00 : (fb < fa ? b : a);
    case NPU_B_SUB_A: return npu_f32_to_f16(fb - fa);
    default: return (a >= 1 && a <= 0x7C00) ? a : 0;   /* relu: a > 0, NaN gives +0 */
    }
}

/* ------------------------------------------------------------------ dispatch */
static int npu_simd_state = -1;   /* -1 unknown, 0 scalar, 1 AVX2 + F16C + FMA */

static inline int npu_simd(void) {
    if (npu_simd_state < 0) {
        int ok = 0;
#if NPU_X86
        __builtin_cpu_init();
        ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
#endif
        const char *force = getenv("NPU_SIM_SCALAR");
        if (force && force[0] && force[0] != '0') ok = 0;
        npu_simd_state = ok;
    }
    return npu_simd_state;
}

/* Use the vector kernels where the CPU has them (on = 1) or the scalar ones everywhere (on = 0). */
static inline void npu_set_simd(int on) {
    npu_simd_state = -1;
    if (npu_simd() && !on) npu_simd_state = 0;
}

/* ------------------------------------------------------------------ BFP quantization of one block */
/* Block of ``block`` fp16 values -> mantissas, returns the exponent and sets *bmax (largest |mantissa|).
   Rules of npu.numerics.bfp_quantize: NaN reads as 0, +-inf as the largest magnitude. */
static int npu_quantize_block_scalar(const uint16_t *x, int block, int mant_bits, int emin, int emax,
                                     int16_t *mant, uint16_t *bmax) {
    int mmax = (1 << mant_bits) - 1, e, k, q, qmax = 0, special;
    uint32_t a, amax = 0;
    for (k = 0; k < block; k++) {
        a = x[k] & 0x7FFF;
        amax = a > amax ? a : amax;
    }
    special = amax >= 0x7C00;
    if (special) {
        amax = 0;
        for (k = 0; k < block; k++) {
            a = x[k] & 0x7FFF;
            if (a <= 0x7C00 && a > amax) amax = a;
        }
    }
    if (amax == 0) e = emin;
    else if (amax == 0x7C00) e = emax;        /* inf: the largest finite magnitude (float64 max) */
    else {
        e = npu_f16_floor_log2(amax);
        e = e < emin ? emin : (e > emax ? emax : e);
    }
    for (k = 0; k < block; k++) {
        a = x[k] & 0x7FFF;
        if (a > 0x7C00) q = 0;
        else if (a == 0x7C00) q = mmax;
        else q = npu_bfp_mant(a, e, mant_bits, mmax);
        qmax = q > qmax ? q : qmax;
        mant[k] = (int16_t)((x[k] & 0x8000) ? -q : q);
    }
    *bmax = (uint16_t)qmax;
    return e;
}

#if NPU_X86
__attribute__((target("avx2,f16c,fma")))
static void npu_quantize_vec_avx2(const uint16_t *x, int n, int block, int mant_bits, int emin, int emax,
                                  int16_t *mant, int16_t *exps, uint16_t *bmax) {
    const int mmax = (1 << mant_bits) - 1;
    const __m256 hi = _mm256_set1_ps((float)mmax), lo = _mm256_set1_ps(-(float)mmax);
    const __m128i absmask = _mm_set1_epi16(0x7FFF);
    int b, k, e;
    for (b = 0; b < n / block; b++) {
        const uint16_t *xb = x + (ptrdiff_t)b * block;
        int16_t *mb = mant + (ptrdiff_t)b * block;
        __m128i mx = _mm_setzero_si128();
        for (k = 0; k < block; k += 8)
            mx = _mm_max_epu16(mx, _mm_and_si128(_mm_loadu_si128((const __m128i *)(xb + k)), absmask));
        mx = _mm_max_epu16(mx, _mm_srli_si128(mx, 8));
        mx = _mm_max_epu16(mx, _mm_srli_si128(mx, 4));
        mx = _mm_max_epu16(mx, _mm_srli_si128(mx, 2));
        uint32_t amax = (uint32_t)_mm_extract_epi16(mx, 0);
        if (amax == 0) {
            memset(mb, 0, sizeof(int16_t) * block);
            exps[b] = (int16_t)emin;
            bmax[b] = 0;
            continue;
        }
        e = npu_f16_floor_log2(amax);
        if (amax >= 0x7C00 || e > emax) {      /* inf/NaN, or a clamped exponent: the rare cases */
            exps[b] = (int16_t)npu_quantize_block_scalar(xb, block, mant_bits, emin, emax, mb, &bmax[b]);
            continue;
        }
        e = e < emin ? emin : e;
        exps[b] = (int16_t)e;
        /* |x| * 2**(mant_bits - 1 - e) < 2**mant_bits and fp16 has 11 significant bits: exact in float32 */
        const __m256 scale = _mm256_set1_ps((float)npu_pow2(mant_bits - 1 - e));
        for (k = 0; k < block; k += 8) {
            __m256 f = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xb + k))), scale);
            f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            f = _mm256_min_ps(_mm256_max_ps(f, lo), hi);
            __m256i q = _mm256_cvtps_epi32(f);
            _mm_storeu_si128((__m128i *)(mb + k),
                             _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)));
        }
        bmax[b] = (uint16_t)npu_bfp_mant(amax, e, mant_bits, mmax);
    }
}
#endif

/* One vector of n fp16 values (n a multiple of block) -> mantissas [n], exponents and block maxima [n/block] */
static void npu_quantize_vec(const uint16_t *x, int n, int block, int mant_bits, int emin, int emax,
                             int16_t *mant, int16_t *exps, uint16_t *bmax) {
#if NPU_X86
    if (block % 8 == 0 && npu_simd()) {
        npu_quantize_vec_avx2(x, n, block, mant_bits, emin, emax, mant, exps, bmax);
        return;
    }
#endif
    for (int b = 0; b < n / block; b++)
        exps[b] = (int16_t)npu_quantize_block_scalar(x + (ptrdiff_t)b * block, block, mant_bits, emin, emax,
                                                     mant + (ptrdiff_t)b * block, &bmax[b]);
}

/* Vectors [lo, hi) of a quantization (npu_rows_fn): x [V][n] fp16 bits -> mant [V][n], exps/bmax [V][n/block] */
typedef struct {
    const uint16_t *x;
    int16_t *mant, *exps;
    uint16_t *bmax;
    int n, block, mant_bits, emin, emax;
} npu_quantize_job;

static void npu_quantize_rows(void *arg, ptrdiff_t lo, ptrdiff_t hi, int tid) {
    const npu_quantize_job *q = (const npu_quantize_job *)arg;
    const ptrdiff_t n = q->n, nb = n / q->block;
    (void)tid;
    for (ptrdiff_t v = lo; v < hi; v++)
        npu_quantize_vec(q->x + v * n, q->n, q->block, q->mant_bits, q->emin, q->emax, q->mant + v * n,
                         q->exps + v * nb, q->bmax + v * nb);
}

/* ------------------------------------------------------------------ activation digits of one block */
/* Activation digits: balanced base 2**NPU_ACT_DIGIT_BITS, digit + NPU_ACT_DIGIT_ZERO stored as uint8 */
enum { NPU_ACT_DIGIT_BITS = 7, NPU_ACT_DIGIT_ZERO = 64, NPU_ACT_DIGIT_MASK = (1 << NPU_ACT_DIGIT_BITS) - 1 };
/* Stored digit d of v = (m[k] << sh) + offset is (v >> (NPU_ACT_DIGIT_BITS * d)) & NPU_ACT_DIGIT_MASK;
   plane d starts at out + d * plane. */
static void npu_digits_block_scalar(const int16_t *m, int block, int sh, int64_t offset, int D, uint8_t *out,
                                    ptrdiff_t plane) {
    for (int d = 0; d < D; d++)
        for (int k = 0; k < block; k++) {
            int64_t v = (int64_t)m[k] * ((int64_t)1 << sh) + offset;
            out[d * plane + k] = (uint8_t)((v >> (NPU_ACT_DIGIT_BITS * d)) & NPU_ACT_DIGIT_MASK);
        }
}

#if NPU_X86
__attribute__((target("avx2")))
static void npu_digits_block_avx2(const int16_t *m, int block, int sh, int32_t offset, int D, uint8_t *out,
                                  ptrdiff_t plane) {
    const __m128i count = _mm_cvtsi32_si128(sh);
    const __m256i off = _mm256_set1_epi32(offset), low7 = _mm256_set1_epi32(NPU_ACT_DIGIT_MASK);
    for (int k = 0; k < block; k += 8) {
        __m256i v = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(m + k)));
        v = _mm256_add_epi32(_mm256_sll_epi32(v, count), off);     /* >= 0 and < 2**31: checked by the caller */
        for (int d = 0; d < D; d++) {
            __m256i dig = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(NPU_ACT_DIGIT_BITS * d)), low7);
            __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(dig), _mm256_extracti128_si256(dig, 1));
            _mm_storel_epi64((__m128i *)(out + d * plane + k), _mm_packus_epi16(w16, w16));
        }
    }
}
#endif

/* ``fits32``: every (m << sh) + offset of the call's data is below 2**31 */
static inline void npu_digits_block(const int16_t *m, int block, int sh, int64_t offset, int D, uint8_t *out,
                                    ptrdiff_t plane, int fits32) {
#if NPU_X86
    if (fits32 && block % 8 == 0 && npu_simd()) {
        npu_digits_block_avx2(m, block, sh, (int32_t)offset, D, out, plane);
        return;
    }
#endif
    npu_digits_block_scalar(m, block, sh, offset, D, out, plane);
}

#if NPU_X86
__attribute__((target("avx512f,avx512bw,avx512vl")))
static void npu_digits_block_avx512(const int16_t *m, int sh, int32_t offset, int D, uint8_t *out, ptrdiff_t plane) {
    /* one block of 16 */
    __m512i v = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)m));
    v = _mm512_add_epi32(_mm512_sll_epi32(v, _mm_cvtsi32_si128(sh)), _mm512_set1_epi32(offset));
    const __m512i low7 = _mm512_set1_epi32(NPU_ACT_DIGIT_MASK);
    for (int d = 0; d < D; d++) {
        __m512i dig = _mm512_and_si512(_mm512_srl_epi32(v, _mm_cvtsi32_si128(NPU_ACT_DIGIT_BITS * d)), low7);
        _mm_storeu_si128((__m128i *)(out + d * plane), _mm512_cvtepi32_epi8(dig));
    }
}

static int npu_avx512_state = -1;   /* -1 unknown, else whether the CPU has AVX-512 F/BW/VL */

/* AVX-512 kernels run where the CPU has them and the vector kernels are on (npu_set_simd). */
static inline int npu_avx512(void) {
    if (npu_avx512_state < 0) {
        __builtin_cpu_init();
        npu_avx512_state = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                           && __builtin_cpu_supports("avx512vl");
    }
    return npu_avx512_state && npu_simd();
}
#endif

/* Settle the lazily detected dispatch before kernels run on several threads (which would all race to set
   it, harmlessly but undefined in C). */
static inline void npu_dispatch_init(void) {
    npu_simd();
#if NPU_X86
    npu_avx512();
#endif
}

/* ------------------------------------------------------------------ the MVM's input as digits */
/* Rows of the MVM's input matrix (sim._kernels.gather_digits): row i is source vectors idx[i, :W] of the
   quantized mant/exps/bmax [V][N] (nb = N / block blocks each). */
typedef struct {
    const int16_t *mant, *exps;
    const uint16_t *bmax;
    const int64_t *idx;
    ptrdiff_t W, N;
    int block, window;
    uint8_t *keep;            /* [M][W][nb]: pass 1 marks the blocks kept */
    int32_t *row_exp;         /* [M] */
    int64_t vmax[NPU_MAX_THREADS]; /* per thread: the largest |kept integer| */
    uint8_t *out;             /* pass 2: [M][D][Kp], Kp >= K = W * N; digits K.. are zero (stored 64) */
    ptrdiff_t Kp;
    int D, fits32;
    int64_t offset;
} npu_gather_job;

/* Pass 1 (npu_rows_fn): which blocks each row keeps, its exponent, the largest integer. */
static void npu_gather_scan(void *arg, ptrdiff_t lo, ptrdiff_t hi, int tid) {
    npu_gather_job *g = (npu_gather_job *)arg;
    const ptrdiff_t W = g->W, nb = g->N / g->block;
    int64_t vmax = 0;
    for (ptrdiff_t i = lo; i < hi; i++) {
        const int64_t *src = g->idx + i * W;
        uint8_t *keep = g->keep + i * W * nb;
        int eref = -32768, emin = 32767;
        for (ptrdiff_t w = 0; w < W; w++) {
            const int16_t *e = g->exps + src[w] * nb;
            const uint16_t *b = g->bmax + src[w] * nb;
            for (ptrdiff_t k = 0; k < nb; k++)
                if (b[k] && e[k] > eref) eref = e[k];
        }
        if (eref == -32768) {                       /* an all-zero row */
            memset(keep, 0, (size_t)(W * nb));
            g->row_exp[i] = 0;
            continue;
        }
        for (ptrdiff_t w = 0; w < W; w++) {
            const int16_t *e = g->exps + src[w] * nb;
            const uint16_t *b = g->bmax + src[w] * nb;
            for (ptrdiff_t k = 0; k < nb; k++) {
                int kept = b[k] && e[k] >= eref - g->window;
                keep[w * nb + k] = (uint8_t)kept;
                if (kept && e[k] < emin) emin = e[k];
            }
        }
        g->row_exp[i] = emin;
        for (ptrdiff_t w = 0; w < W; w++) {
            const int16_t *e = g->exps + src[w] * nb;
            const uint16_t *b = g->bmax + src[w] * nb;
            for (ptrdiff_t k = 0; k < nb; k++)
                if (keep[w * nb + k]) {
                    int64_t v = (int64_t)b[k] << (e[k] - emin);
                    vmax = v > vmax ? v : vmax;
                }
        }
    }
    if (vmax > g->vmax[tid]) g->vmax[tid] = vmax;
}

/* Pass 2 (npu_rows_fn): the digits of each row. */
static void npu_gather_write(void *arg, ptrdiff_t lo, ptrdiff_t hi, int tid) {
    npu_gather_job *g = (npu_gather_job *)arg;
    const ptrdiff_t W = g->W, N = g->N, block = g->block, nb = N / block, K = g->Kp;
    const int D = g->D;
    (void)tid;
#if NPU_X86
    const int wide = g->fits32 && block == 16 && npu_avx512();
#endif
    for (ptrdiff_t i = lo; i < hi; i++) {
        const int64_t *src = g->idx + i * W;
        const uint8_t *keep = g->keep + i * W * nb;
        uint8_t *row = g->out + i * D * K;
        const int re = g->row_exp[i];
        if (K > W * N)
            for (int d = 0; d < D; d++) memset(row + d * K + W * N, NPU_ACT_DIGIT_ZERO, (size_t)(K - W * N));
        for (ptrdiff_t w = 0; w < W; w++) {
            const int16_t *m = g->mant + src[w] * N;
            const int16_t *e = g->exps + src[w] * nb;
            for (ptrdiff_t k = 0; k < nb; k++) {
                uint8_t *o = row + w * N + k * block;
                if (!keep[w * nb + k]) {
                    for (int d = 0; d < D; d++) memset(o + d * K, NPU_ACT_DIGIT_ZERO, (size_t)block);
                    continue;
                }
#if NPU_X86
                if (wide) {
                    npu_digits_block_avx512(m + k * block, e[k] - re, (int32_t)g->offset, D, o, K);
                    continue;
                }
#endif
                npu_digits_block(m + k * block, (int)block, e[k] - re, g->offset, D, o, K, g->fits32);
            }
        }
    }
}

/* ------------------------------------------------------------------ digit products -> fp16, one row */
/* p: [T = D*E][n] int32 digit products of one output row (plane t at p + t * stride);
   c[t]: 2**(shift of product t) as double; row and col scales: powers of two.  ``exact53``: sum_t |p| * c < 2**53 for any data of this call, so
   every partial sum in float64 is an exact integer. */
static void npu_combine_row_scalar(const int32_t *p, int T, int n, ptrdiff_t stride, const double *c,
                                   double rs, const double *cs, uint16_t *out) {
    for (int j = 0; j < n; j++) {
        int64_t acc = 0;
        for (int t = 0; t < T; t++) acc += (int64_t)p[t * stride + j] * (int64_t)c[t];
        /* |acc| < 2**53 (npu.numerics.flush_windows): exact in float64, and so are the powers of two */
        out[j] = npu_f64_to_f16((double)acc * rs * cs[j]);
    }
}

#if NPU_X86
__attribute__((target("avx2,fma")))
static inline __m128i npu_narrow_mask(__m256d m) {
    return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_castpd_si256(m),
                                                              _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)));
}

/* float64 -> float32 rounding to odd (see npu_f64_to_f16) */
__attribute__((target("avx2,fma")))
static inline __m128 npu_round_to_odd_ps(__m256d v) {
    const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7FFFFFFFFFFFFFFFLL));
    __m128 f = _mm256_cvtpd_ps(v);
    __m256d back = _mm256_cvtps_pd(f);
    __m256d inexact = _mm256_cmp_pd(back, v, _CMP_NEQ_OQ);
    __m256d away = _mm256_and_pd(inexact, _mm256_cmp_pd(_mm256_and_pd(back, absmask), _mm256_and_pd(v, absmask),
                                                        _CMP_GT_OQ));
    __m128i u = _mm_add_epi32(_mm_castps_si128(f), npu_narrow_mask(away));          /* -1 where rounded away */
    u = _mm_or_si128(u, _mm_and_si128(npu_narrow_mask(inexact), _mm_set1_epi32(1)));
    return _mm_castsi128_ps(u);
}

__attribute__((target("avx2,f16c,fma")))
static void npu_combine_row_avx2(const int32_t *p, int T, int n, const double *c, double rs, const double *cs,
                                 uint16_t *out) {
    const __m256d rsv = _mm256_set1_pd(rs);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
        for (int t = 0; t < T; t++) {
            const int32_t *q = p + (ptrdiff_t)t * n + j;
            const __m256d ct = _mm256_set1_pd(c[t]);
            a0 = _mm256_fmadd_pd(_mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)q)), ct, a0);
            a1 = _mm256_fmadd_pd(_mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(q + 4))), ct, a1);
        }
        a0 = _mm256_mul_pd(_mm256_mul_pd(a0, rsv), _mm256_loadu_pd(cs + j));
        a1 = _mm256_mul_pd(_mm256_mul_pd(a1, rsv), _mm256_loadu_pd(cs + j + 4));
        __m256 f = _mm256_set_m128(npu_round_to_odd_ps(a1), npu_round_to_odd_ps(a0));
        _mm_storeu_si128((__m128i *)(out + j), _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    if (j < n) npu_combine_row_scalar(p + j, T, n - j, n, c, rs, cs + j, out + j);
}
#endif

static inline void npu_combine_row(const int32_t *p, int T, int n, const double *c, double rs, const double *cs,
                                   uint16_t *out, int exact53) {
#if NPU_X86
    if (exact53 && npu_simd()) {
        npu_combine_row_avx2(p, T, n, c, rs, cs, out);
        return;
    }
#endif
    npu_combine_row_scalar(p, T, n, n, c, rs, cs, out);
}

/* ------------------------------------------------------------------ MFU operation over a row */
/* a[j] = op(a[j], b[j]) for j < n (b unused by relu) */
static void npu_mfu_row_scalar(int op, uint16_t *a, const uint16_t *b, int n) {
    for (int j = 0; j < n; j++) a[j] = npu_mfu_op(op, a[j], b ? b[j] : 0);
}

#if NPU_X86
__attribute__((target("avx2,f16c")))
static void npu_mfu_row_avx2(int op, uint16_t *a, const uint16_t *b, int n) {
    const __m128i absmask = _mm_set1_epi16(0x7FFF), inf = _mm_set1_epi16(0x7C00), qnan = _mm_set1_epi16(0x7E00);
    const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m128i ha = _mm_loadu_si128((const __m128i *)(a + j)), r;
        if (op == NPU_RELU) {   /* as int16: 1 <= a <= 0x7C00 */
            __m128i keep = _mm_and_si128(_mm_cmpgt_epi16(ha, _mm_setzero_si128()),
                                         _mm_cmplt_epi16(ha, _mm_set1_epi16(0x7C01)));
            r = _mm_and_si128(ha, keep);
        } else {
            __m128i hb = _mm_loadu_si128((const __m128i *)(b + j));
            __m256 fa = _mm256_cvtph_ps(ha), fb = _mm256_cvtph_ps(hb);
            if (op == NPU_MAX || op == NPU_MIN) {
                __m256 take = op == NPU_MAX ? _mm256_cmp_ps(fb, fa, _CMP_GT_OQ) : _mm256_cmp_ps(fb, fa, _CMP_LT_OQ);
                __m256 nan = _mm256_cmp_ps(fa, fb, _CMP_UNORD_Q);
                __m128i t16 = _mm_packs_epi32(_mm256_castsi256_si128(_mm256_castps_si256(take)),
                                              _mm256_extracti128_si256(_mm256_castps_si256(take), 1));
                __m128i n16 = _mm_packs_epi32(_mm256_castsi256_si128(_mm256_castps_si256(nan)),
                                              _mm256_extracti128_si256(_mm256_castps_si256(nan), 1));
                r = _mm_blendv_epi8(_mm_blendv_epi8(ha, hb, t16), qnan, n16);
            } else {
                __m256 fr = op == NPU_ADD ? _mm256_add_ps(fa, fb)
                          : op == NPU_A_SUB_B ? _mm256_sub_ps(fa, fb)
                          : op == NPU_MUL ? _mm256_mul_ps(fa, fb) : _mm256_sub_ps(fb, fa);
                r = _mm256_cvtps_ph(fr, rnd);
                r = _mm_blendv_epi8(r, qnan, _mm_cmpgt_epi16(_mm_and_si128(r, absmask), inf));
            }
        }
        _mm_storeu_si128((__m128i *)(a + j), r);
    }
    if (j < n) npu_mfu_row_scalar(op, a + j, b ? b + j : NULL, n - j);
}
#endif

static inline void npu_mfu_row(int op, uint16_t *a, const uint16_t *b, int n) {
#if NPU_X86
    if (npu_simd()) {
        npu_mfu_row_avx2(op, a, b, n);
        return;
    }
#endif
    npu_mfu_row_scalar(op, a, b, n);
}

/* ------------------------------------------------------------------ the output pass over rows */
/* What an MVM's output pass does with the digit products of output (i, j): add them scaled by c[t], times
   2**row_k[i] * cs[j], round once to fp16 into out[i][j] (rows of the output's width), then the fused MFU
   operations (operand t's row i at optr[t] + i * ostride[t]; NULL for relu). */
typedef struct {
    const double *c, *cs;
    const int32_t *row_k;
    const int *opcode;
    const uint16_t *const *optr;
    const ptrdiff_t *ostride;
    uint16_t *out;
    int nops, exact53;
} npu_output_pass;

/* Rows [lo, hi) of digit_products_to_fp16 (npu_rows_fn): row i's T digit-product planes of n int32 at
   p + i * T * n. */
typedef struct {
    const int32_t *p;
    int T, n;
    npu_output_pass o;
} npu_combine_job;

static void npu_combine_rows(void *arg, ptrdiff_t lo, ptrdiff_t hi, int tid) {
    const npu_combine_job *j = (const npu_combine_job *)arg;
    const npu_output_pass *q = &j->o;
    const ptrdiff_t n = j->n;
    (void)tid;
    for (ptrdiff_t i = lo; i < hi; i++) {
        uint16_t *o = q->out + i * n;
        npu_combine_row(j->p + i * j->T * n, j->T, j->n, q->c, npu_pow2(q->row_k[i]), q->cs, o, q->exact53);
        for (int t = 0; t < q->nops; t++)
            npu_mfu_row(q->opcode[t], o, q->optr[t] ? q->optr[t] + i * q->ostride[t] : NULL, j->n);
    }
}

#endif
