/* membw.c — the memory read-bandwidth probe (see membw.h). */
#include "util/membw.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static double es_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define ES_BENCH_BW_DEFAULT_BYTES ((size_t)1 << 30)

/* 16-byte vectors of two words: plain SSE2 on baseline x86-64, NEON on arm64. */
typedef uint64_t es_bench_u64x2 __attribute__((vector_size(16)));

/* One thread's slice of the probe buffer: n vectors at p. */
typedef struct es_bench_bw_part {
    es_bench_u64x2 *p;
    size_t n;
    int init;       /* 1: write the slice (first touch); 0: read and sum it */
    uint64_t sum;   /* the read pass's result, kept so the loads cannot be optimised away */
} es_bench_bw_part;

static void *es_bench_bw_worker(void *arg) {
    es_bench_bw_part *w = arg;
    if (w->init) {
        for (size_t i = 0; i < w->n; i++) w->p[i] = (es_bench_u64x2){i, ~i};
        return NULL;
    }
    /* Four independent accumulators of 16 bytes: 64 bytes (a cache line) per iteration, no loop-
     * carried latency on one register. */
    es_bench_u64x2 a0 = {0, 0}, a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 4 <= w->n; i += 4) {
        a0 += w->p[i];
        a1 += w->p[i + 1];
        a2 += w->p[i + 2];
        a3 += w->p[i + 3];
    }
    for (; i < w->n; i++) a0 += w->p[i];
    es_bench_u64x2 a = a0 + a1 + a2 + a3;
    w->sum = a[0] + a[1];
    return NULL;
}

/* Runs one pass (init or read) over all parts, part 0 on the calling thread. A thread that cannot
 * be created has its part run on the caller afterwards, so the pass always completes. */
static void es_bench_bw_pass(es_bench_bw_part *parts, int n_threads, int init) {
    pthread_t th[256];
    int started[256] = {0};
    for (int t = 0; t < n_threads; t++) parts[t].init = init;
    for (int t = 1; t < n_threads; t++) started[t] = pthread_create(&th[t], NULL, es_bench_bw_worker, &parts[t]) == 0;
    es_bench_bw_worker(&parts[0]);
    for (int t = 1; t < n_threads; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else es_bench_bw_worker(&parts[t]);
    }
}

/* Memory read bandwidth in GB/s (1e9 bytes/s): sums a buffer of `bytes` (0: 1 GiB) with n_threads
 * threads (clamped to [1, 256]), each reading a contiguous slice, and reports the best of 3 passes.
 * The buffer is written first, by the same slices, so its pages are real (and, on NUMA machines,
 * local to the threads that read them). Thread start-up is inside the timing; it is negligible next
 * to reading a buffer much larger than the caches. Returns a negative value when the buffer cannot
 * be allocated. */
static double read_bandwidth(int n_threads, size_t bytes, int reps) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    if (bytes == 0) bytes = ES_BENCH_BW_DEFAULT_BYTES;
    const size_t n_vec = bytes / sizeof(es_bench_u64x2);
    if (n_vec < (size_t)n_threads) return -1.0;
    es_bench_u64x2 *buf = NULL;
    if (posix_memalign((void **)&buf, 64, n_vec * sizeof *buf) != 0) return -1.0;

    es_bench_bw_part parts[256];
    for (int t = 0; t < n_threads; t++) {
        const size_t lo = n_vec * (size_t)t / (size_t)n_threads, hi = n_vec * (size_t)(t + 1) / (size_t)n_threads;
        parts[t] = (es_bench_bw_part){.p = buf + lo, .n = hi - lo};
    }
    es_bench_bw_pass(parts, n_threads, 1);

    double best = 0.0;
    volatile uint64_t sink = 0;
    for (int rep = 0; rep < reps; rep++) {
        const double t0 = es_bench_now();
        es_bench_bw_pass(parts, n_threads, 0);
        const double dt = es_bench_now() - t0;
        for (int t = 0; t < n_threads; t++) sink += parts[t].sum;
        if (dt > 0.0 && (best == 0.0 || dt < best)) best = dt;
    }
    (void)sink;
    free(buf);
    return best > 0.0 ? (double)(n_vec * sizeof *buf) / best / 1e9 : -1.0;
}


double es_membw_read_gbs(size_t bytes, int n_threads, int reps) {
    return read_bandwidth(n_threads, bytes, reps < 1 ? 1 : reps);
}
