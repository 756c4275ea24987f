/* Rows of a kernel split over threads (POSIX threads; the kernels release the GIL around them).
 *
 * fn(ctx, lo, hi, tid) runs on [lo, hi) slices of [0, n) in multiples of ``grain`` rows, one per thread,
 * the calling thread taking the first.  Threads are made per call: a call costs tens of microseconds, so
 * callers only split work of a millisecond or more (``min_rows``).
 */
#ifndef NPU_PARALLEL_H
#define NPU_PARALLEL_H

#include <stddef.h>

enum { NPU_MAX_THREADS = 16 };

typedef void (*npu_rows_fn)(void *ctx, ptrdiff_t lo, ptrdiff_t hi, int tid);

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>

typedef struct {
    npu_rows_fn fn;
    void *ctx;
    ptrdiff_t lo, hi;
    int tid;
} npu_rows_part;

static void *npu_rows_thread(void *arg) {
    npu_rows_part *p = (npu_rows_part *)arg;
    p->fn(p->ctx, p->lo, p->hi, p->tid);
    return NULL;
}
#endif

/* How many threads npu_parallel_rows would use (1 .. NPU_MAX_THREADS); tid is below it. */
static inline int npu_thread_count(ptrdiff_t n, ptrdiff_t grain, ptrdiff_t min_rows, int threads) {
    ptrdiff_t units = (n + grain - 1) / grain, most = n / (min_rows > 1 ? min_rows : 1);
    threads = threads < 1 ? 1 : (threads > NPU_MAX_THREADS ? NPU_MAX_THREADS : threads);
    if (threads > units) threads = (int)(units > 0 ? units : 1);
    if (threads > most) threads = (int)(most > 0 ? most : 1);
    return threads;
}

static void npu_parallel_rows(npu_rows_fn fn, void *ctx, ptrdiff_t n, ptrdiff_t grain, ptrdiff_t min_rows,
                              int threads) {
    threads = npu_thread_count(n, grain, min_rows, threads);
#if defined(__unix__) || defined(__APPLE__)
    if (threads > 1) {
        npu_rows_part parts[NPU_MAX_THREADS];
        pthread_t tid[NPU_MAX_THREADS];
        ptrdiff_t units = (n + grain - 1) / grain;
        for (int t = 0; t < threads; t++) {
            parts[t].fn = fn, parts[t].ctx = ctx, parts[t].tid = t;
            parts[t].lo = units * t / threads * grain;
            parts[t].hi = units * (t + 1) / threads * grain;
            if (parts[t].hi > n) parts[t].hi = n;
        }
        int started[NPU_MAX_THREADS] = {0};
        for (int t = 1; t < threads; t++) started[t] = pthread_create(&tid[t], NULL, npu_rows_thread, &parts[t]) == 0;
        fn(ctx, parts[0].lo, parts[0].hi, 0);
        for (int t = 1; t < threads; t++) {
            if (started[t]) pthread_join(tid[t], NULL);
            else fn(ctx, parts[t].lo, parts[t].hi, t);      /* no thread to be had: do it here */
        }
        return;
    }
#endif
    fn(ctx, 0, n, 0);
}

#endif
