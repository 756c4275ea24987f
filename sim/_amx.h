/* The MVM's digit GEMMs on Intel AMX, with the output pass fused (sim/intgemm.py drives it).
 *
 * Same arithmetic as the onnxruntime path: activation digits u8 (balanced base 128 plus a zero point of 64,
 * rows [M][D][K]), weight digits s8 (balanced base 256), every digit pair multiplied with exact int32
 * accumulation (TDPBUSD: 4-way u8 x s8 sums into int32, no saturation).  A 16 x 16 output block keeps its
 * D x E digit products in AMX tiles; they go to a 16 x 16 x D*E int32 buffer in L1, lose the zero point,
 * are added and rounded to fp16 (AVX-512, or npu_combine_row) and pass through the fused MFU operations
 * there, so the products never travel through memory.  Weight tiles that are zero are skipped.  Rows are
 * split over threads.
 *
 * Used only where the CPU has AMX-INT8 and AVX-512 and the OS grants the tile state (npu_amx_init), with
 * K % 64 == 0 (callers pad) and R % 16 == 0; the probe in sim/intgemm.py checks the results once per
 * process.
 */
#ifndef NPU_AMX_H
#define NPU_AMX_H

#include "_kernels.h"
#include "_parallel.h"

/* AMX intrinsics: GCC 11 and clang 12 on */
#if NPU_X86 && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#include <sys/syscall.h>
#include <unistd.h>
#include <cpuid.h>
#define NPU_AMX 1
#else
#define NPU_AMX 0
#endif

enum { NPU_AMX_KB = 64,             /* K per tile step: 16 rows x 64 u8 */
       NPU_AMX_JB = 16,             /* output columns per tile */
       NPU_AMX_TILE = 1024,         /* bytes per packed weight tile: 16 rows x 64 bytes */
       NPU_AMX_MAX_T = 16 };        /* digit products per output: D * E */

static int npu_amx_state = -1;      /* -1 unknown, 0 unavailable, 1 usable */

/* Whether AMX-INT8 runs here: CPUID says so, the OS saves the tile state (XCR0 bits 17-18) and grants
   this process the tile data (arch_prctl ARCH_REQ_XCOMP_PERM). */
static int npu_amx_init(void) {
    if (npu_amx_state >= 0) return npu_amx_state;
    int ok = 0;
#if NPU_AMX
    unsigned a, b, c, d;
    __builtin_cpu_init();
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25))
        && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 27))) {          /* AMX-TILE, AMX-INT8, OSXSAVE */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        if ((lo & (3u << 17)) == (3u << 17) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
            ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
    }
#endif
    npu_amx_state = ok;
    return ok;
}

/* One MVM. */
typedef struct {
    const uint8_t *a;           /* activation digits [M][D][K] */
    const int8_t *w;            /* packed weight digits [E][R/16][K/64][16][64] (VNNI: 4 K values per int32) */
    const uint8_t *nz;          /* [R/16][K/64]: 0 where that weight tile is zero for every digit (skipped) */
    const int32_t *zero;        /* [E][R]: 64 * column sums of weight digit e (the activations' zero point) */
    uint8_t *tail;              /* 16 rows of digits: the last partial block of rows, zero-padded */
    int M, D, E, K, R;
    npu_output_pass o;          /* c [D*E] d major, row_k [M], cs [R], out fp16 [M][R] */
} npu_amx_job;

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) npu_amx_config;

#if NPU_AMX
/* Tiles 0-3 accumulate products (d0, e0), (d0, e0+1), (d0+1, e0), (d0+1, e0+1); 4-5 hold activation digits
   d0, d0+1 (a0, a1: 16 rows astride bytes apart); 6-7 weight digits e0, e0+1.  nd, ne (1 or 2) say which
   exist.  The products go to buf [16 rows][T][16] (product t = d * E + e of row r at (r * T + t) * 16). */
__attribute__((target("amx-tile,amx-int8")))
static void npu_amx_block(const uint8_t *a0, const uint8_t *a1, ptrdiff_t astride, const int8_t *w0,
                          const int8_t *w1, const uint8_t *nz, int nd, int ne, int kblocks, int32_t *buf, int T,
                          int E, int d0, int e0) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int kb = 0; kb < kblocks; kb++) {
        if (!nz[kb]) continue;                          /* padding channels: zero weights */
        const ptrdiff_t ka = (ptrdiff_t)kb * NPU_AMX_KB, kw = (ptrdiff_t)kb * NPU_AMX_TILE;
        _tile_loadd(4, a0 + ka, astride);
        _tile_loadd(6, w0 + kw, 64);
        _tile_dpbusd(0, 4, 6);
        if (ne > 1) {
            _tile_loadd(7, w1 + kw, 64);
            _tile_dpbusd(1, 4, 7);
        }
        if (nd > 1) {
            _tile_loadd(5, a1 + ka, astride);
            _tile_dpbusd(2, 5, 6);
            if (ne > 1) _tile_dpbusd(3, 5, 7);
        }
    }
    const ptrdiff_t bstride = (ptrdiff_t)T * 16 * 4;
    _tile_stored(0, buf + (d0 * E + e0) * 16, bstride);
    if (ne > 1) _tile_stored(1, buf + (d0 * E + e0 + 1) * 16, bstride);
    if (nd > 1) _tile_stored(2, buf + ((d0 + 1) * E + e0) * 16, bstride);
    if (nd > 1 && ne > 1) _tile_stored(3, buf + ((d0 + 1) * E + e0 + 1) * 16, bstride);
}

/* Weight columns per pass over the rows: their packed digits (E * K * cols bytes) stay in L2. */
static inline int npu_amx_column_group(int E, int K, int R) {
    int cols = (int)((1 << 20) / ((ptrdiff_t)E * K)) / NPU_AMX_JB * NPU_AMX_JB;
    cols = cols < NPU_AMX_JB ? NPU_AMX_JB : cols;
    return cols > R ? R : cols;
}

/* Output block (rows i.., columns jb..) from its digit products in buf: drop the zero point, add and round to
   fp16, apply the fused MFU operations. */
static void npu_amx_finish(const npu_amx_job *j, int32_t *buf, int i, int rows, int jb) {
    const int T = j->D * j->E, E = j->E, R = j->R;
    for (int r = 0; r < rows; r++) {
        int32_t *p = buf + (ptrdiff_t)r * T * 16;
        for (int t = 0; t < T; t++) {
            const int32_t *z = j->zero + (ptrdiff_t)(t % E) * R + jb;
            for (int c = 0; c < 16; c++) p[t * 16 + c] -= z[c];
        }
        const npu_output_pass *q = &j->o;
        uint16_t *o = q->out + (ptrdiff_t)(i + r) * R + jb;
        npu_combine_row(p, T, 16, q->c, npu_pow2(q->row_k[i + r]), q->cs + jb, o, q->exact53);
        for (int t = 0; t < q->nops; t++)
            npu_mfu_row(q->opcode[t], o, q->optr[t] ? q->optr[t] + (i + r) * q->ostride[t] + jb : NULL, 16);
    }
}

/* The same for a whole block of 16 rows with AVX-512 (every AMX CPU has it), when the float64 sum is exact.
   The digit products of a row are 16 int32 lanes per product; their sum is formed in two vectors of 8 doubles,
   scaled, rounded to float32 by truncation with a sticky bit (round to odd: as npu_f64_to_f16) and to fp16
   by the hardware's round to nearest even; the fused MFU operations follow in float32 as npu_mfu_op. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))
static inline __m256i npu_amx_mfu16(int op, __m256i a, const uint16_t *bp) {
    const int rnd = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    if (op == NPU_RELU) {                                   /* 1 <= a <= 0x7C00 as int16 */
        __mmask16 keep = _mm256_cmpgt_epi16_mask(a, _mm256_setzero_si256())
                       & _mm256_cmplt_epi16_mask(a, _mm256_set1_epi16(0x7C01));
        return _mm256_maskz_mov_epi16(keep, a);
    }
    const __m256i b = _mm256_loadu_si256((const __m256i *)bp);
    const __m512 fa = _mm512_cvtph_ps(a), fb = _mm512_cvtph_ps(b);
    const __m256i qnan = _mm256_set1_epi16(0x7E00);
    if (op == NPU_MAX || op == NPU_MIN) {
        __mmask16 take = op == NPU_MAX ? _mm512_cmp_ps_mask(fb, fa, _CMP_GT_OQ) : _mm512_cmp_ps_mask(fb, fa, _CMP_LT_OQ);
        __mmask16 nan = _mm512_cmp_ps_mask(fa, fb, _CMP_UNORD_Q);
        return _mm256_mask_mov_epi16(_mm256_mask_mov_epi16(a, take, b), nan, qnan);
    }
    __m512 fr = op == NPU_ADD ? _mm512_add_ps(fa, fb)
              : op == NPU_A_SUB_B ? _mm512_sub_ps(fa, fb)
              : op == NPU_MUL ? _mm512_mul_ps(fa, fb) : _mm512_sub_ps(fb, fa);
    __m256i r = _mm512_cvtps_ph(fr, rnd);
    __mmask16 nan = _mm256_cmpgt_epi16_mask(_mm256_and_si256(r, _mm256_set1_epi16(0x7FFF)), _mm256_set1_epi16(0x7C00));
    return _mm256_mask_mov_epi16(r, nan, qnan);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))
static void npu_amx_finish_avx512(const npu_amx_job *j, int32_t *buf, int i, int rows, int jb) {
    const int T = j->D * j->E, E = j->E, R = j->R;
    __m512i zero[NPU_AMX_MAX_T];
    __m512d ct[NPU_AMX_MAX_T];
    for (int t = 0; t < T; t++) {
        zero[t] = _mm512_loadu_si512((const void *)(j->zero + (ptrdiff_t)(t % E) * R + jb));
        ct[t] = _mm512_set1_pd(j->o.c[t]);
    }
    const npu_output_pass *q = &j->o;
    const __m512d cs0 = _mm512_loadu_pd(q->cs + jb), cs1 = _mm512_loadu_pd(q->cs + jb + 8);
    for (int r = 0; r < rows; r++) {
        const int32_t *p = buf + (ptrdiff_t)r * T * 16;
        __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
        for (int t = 0; t < T; t++) {
            __m512i v = _mm512_sub_epi32(_mm512_load_si512((const void *)(p + t * 16)), zero[t]);
            a0 = _mm512_fmadd_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(v)), ct[t], a0);
            a1 = _mm512_fmadd_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(v, 1)), ct[t], a1);
        }
        const __m512d rs = _mm512_set1_pd(npu_pow2(q->row_k[i + r]));
        a0 = _mm512_mul_pd(_mm512_mul_pd(a0, rs), cs0);
        a1 = _mm512_mul_pd(_mm512_mul_pd(a1, rs), cs1);
        /* round to odd: truncate toward zero, set the last bit where that was inexact */
        __m256 f0 = _mm512_cvt_roundpd_ps(a0, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __m256 f1 = _mm512_cvt_roundpd_ps(a1, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __mmask8 x0 = _mm512_cmp_pd_mask(_mm512_cvtps_pd(f0), a0, _CMP_NEQ_OQ);
        __mmask8 x1 = _mm512_cmp_pd_mask(_mm512_cvtps_pd(f1), a1, _CMP_NEQ_OQ);
        __m512i fb = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_castps_si256(f0)), _mm256_castps_si256(f1), 1);
        fb = _mm512_mask_or_epi32(fb, (__mmask16)(x0 | (x1 << 8)), fb, _mm512_set1_epi32(1));
        __m256i h = _mm512_cvtps_ph(_mm512_castsi512_ps(fb), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        for (int t = 0; t < q->nops; t++)
            h = npu_amx_mfu16(q->opcode[t], h, q->optr[t] ? q->optr[t] + (i + r) * q->ostride[t] + jb : NULL);
        _mm256_storeu_si256((__m256i *)(q->out + (ptrdiff_t)(i + r) * R + jb), h);
    }
}

/* Rows [i0, i1) of the MVM (npu_rows_fn; i0 a multiple of 16). */
__attribute__((target("amx-tile,amx-int8")))
static void npu_amx_rows(void *arg, ptrdiff_t i0, ptrdiff_t i1, int tid) {
    const npu_amx_job *j = (const npu_amx_job *)arg;
    (void)tid;
    const int D = j->D, E = j->E, K = j->K, R = j->R, T = D * E, kblocks = K / NPU_AMX_KB;
    const ptrdiff_t row = (ptrdiff_t)D * K;             /* bytes from one row's digits to the next's */
    /* Two product buffers: a block's products are read back only after the next block's tiles are issued,
       because loads right after tile stores of the same lines wait for them. */
    int32_t bufs[2][16 * NPU_AMX_MAX_T * 16] __attribute__((aligned(64)));
    int pending = 0, pi = 0, prows = 0, pjb = 0, cur = 0;
    npu_amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    const int group = npu_amx_column_group(E, K, R);
    void (*finish)(const npu_amx_job *, int32_t *, int, int, int) =
        j->o.exact53 && npu_simd() ? npu_amx_finish_avx512 : npu_amx_finish;
    for (int g = 0; g < R; g += group) {
        const int gend = g + group < R ? g + group : R;
        for (int i = (int)i0; i < i1; i += 16) {
            const int rows = i1 - i < 16 ? (int)(i1 - i) : 16;
            const uint8_t *a = j->a + (ptrdiff_t)i * row;
            if (rows < 16) {
                memcpy(j->tail, a, (size_t)rows * row);   /* only the thread with the last block gets here */
                a = j->tail;
            }
            for (int jb = g; jb < gend; jb += NPU_AMX_JB) {
                for (int d0 = 0; d0 < D; d0 += 2)
                    for (int e0 = 0; e0 < E; e0 += 2) {
                        const int8_t *w0 = j->w + (((ptrdiff_t)e0 * (R / 16) + jb / 16) * kblocks) * NPU_AMX_TILE;
                        const int8_t *w1 = w0 + (ptrdiff_t)(R / 16) * kblocks * NPU_AMX_TILE;
                        npu_amx_block(a + (ptrdiff_t)d0 * K, a + (ptrdiff_t)(d0 + 1) * K, row, w0, w1,
                                      j->nz + (ptrdiff_t)(jb / 16) * kblocks, D - d0 < 2 ? 1 : 2, E - e0 < 2 ? 1 : 2, kblocks, bufs[cur], T, E, d0, e0);
                    }
                if (pending) finish(j, bufs[cur ^ 1], pi, prows, pjb);
                pending = 1, pi = i, prows = rows, pjb = jb, cur ^= 1;
            }
        }
    }
    if (pending) finish(j, bufs[cur ^ 1], pi, prows, pjb);
    _tile_release();
}
#endif

/* The whole MVM on up to ``threads`` threads (blocks of 16 rows, each thread at least about 2**24 MACs).
   Returns 0, or -1 when AMX is not usable here (nothing written). */
static int npu_amx_mvm(npu_amx_job job, int threads) {
#if NPU_AMX
    if (!npu_amx_init() || job.K <= 0 || job.R <= 0) return -1;
    npu_dispatch_init();
    job.tail = NULL;
    if (job.M % 16 && !(job.tail = (uint8_t *)calloc((size_t)16 * job.D * job.K, 1))) return -1;
    ptrdiff_t work = (ptrdiff_t)job.D * job.E * job.K * job.R, min_rows = ((1 << 24) / (work ? work : 1) + 15) / 16 * 16;
    npu_parallel_rows(npu_amx_rows, &job, job.M, 16, min_rows < 16 ? 16 : min_rows, threads);
    free(job.tail);
    return 0;
#else
    (void)job;
    (void)threads;
    return -1;
#endif
}

#endif
