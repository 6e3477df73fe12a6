/* bench_util.h — helpers shared by the benchmark programs (each bench/ source file is its own executable,
 * so shared code lives here as static functions): a monotonic clock and a memory read-bandwidth
 * probe, the yardstick for memory-bound kernels. */
#ifndef ES_BENCH_UTIL_H
#define ES_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/threadpool.h"

static inline double es_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct es_bw_task {
    const uint8_t *buf;
    size_t bytes; /* a multiple of 64 * nth */
    uint64_t sums[64][8]; /* per-thread result, a cache line each, so the reads are not optimised away */
} es_bw_task;

/* Sums this thread's contiguous slice of 64-bit words with eight independent accumulators (the
 * compiler vectorises it; even scalar, two 8-byte loads per cycle are far above DRAM bandwidth, so
 * the probe measures memory). */
static void es_bw_worker(void *ud, int ith, int nth) {
    es_bw_task *t = ud;
    const size_t per = t->bytes / (size_t)nth / 64 * 64;
    const uint64_t *p = (const uint64_t *)(const void *)(t->buf + per * (size_t)ith);
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (size_t i = 0; i < per / 8; i += 8) {
        a0 += p[i], a1 += p[i + 1], a2 += p[i + 2], a3 += p[i + 3];
        a4 += p[i + 4], a5 += p[i + 5], a6 += p[i + 6], a7 += p[i + 7];
    }
    if (ith < 64) t->sums[ith][0] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

/* Read bandwidth in GB/s (1e9 bytes) over `bytes` with the pool's threads (NULL: one thread), best
 * of `reps` passes. Returns 0 if the buffer cannot be allocated. */
static inline double es_bw_probe(es_threadpool *tp, size_t bytes, int reps) {
    uint8_t *buf = aligned_alloc(4096, bytes);
    if (!buf) return 0;
    memset(buf, 1, bytes); /* fault the pages in */
    es_bw_task *t = calloc(1, sizeof(*t));
    if (!t) { free(buf); return 0; }
    t->buf = buf;
    t->bytes = bytes;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = es_bench_now();
        es_threadpool_run(tp, es_bw_worker, t);
        double dt = es_bench_now() - t0;
        if (dt < best) best = dt;
    }
    const int nth = es_threadpool_n_threads(tp);
    const double read = (double)(bytes / (size_t)nth / 64 * 64) * nth;
    free(t);
    free(buf);
    return read / best * 1e-9;
}

#endif
