/* bench_util.h — helpers shared by the benchmark programs in bench/: a monotonic clock and a memory
 * read-bandwidth probe, the roofline for memory-bound decoding (tokens/s <= bandwidth / weight bytes).
 * Header-only (static inline) so each benchmark stays one translation unit; results are printed as
 * JSON lines with cJSON by the programs themselves. */
#ifndef ES_BENCH_UTIL_H
#define ES_BENCH_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "util/membw.h"
#include "util/threadpool.h"

/* Seconds on the monotonic clock (arbitrary origin). */
static inline double es_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Nanoseconds on the monotonic clock (arbitrary origin). */
static inline uint64_t es_bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Memory read bandwidth in GB/s (1e9 bytes/s): sums a buffer of `bytes` (0: 1 GiB) with n_threads
 * threads, best of 3 passes (the library's probe, src/util/membw.c). Negative if the buffer cannot be
 * allocated or is smaller than one 16-byte vector per thread. */
static inline double es_bench_read_bandwidth_gbs(int n_threads, size_t bytes) {
    return es_membw_read_gbs(bytes, n_threads, 3);
}

/* The probe with as many threads as a pool has (NULL: one), best of `reps`. */
static inline double es_bw_probe(es_threadpool *tp, size_t bytes, int reps) {
    return es_membw_read_gbs(bytes, tp ? es_threadpool_n_threads(tp) : 1, reps);
}

#endif
