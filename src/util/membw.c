#include "util/membw.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} bw_part;

/* Four independent accumulators so the loop is bound by loads, not by an add chain. */
static void *bw_read(void *ud) {
    bw_part *b = ud;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= b->n; i += 4) {
        s0 += b->p[i];
        s1 += b->p[i + 1];
        s2 += b->p[i + 2];
        s3 += b->p[i + 3];
    }
    for (; i < b->n; i++) s0 += b->p[i];
    b->sum = s0 + s1 + s2 + s3;
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double es_membw_read_gbs(size_t bytes, int n_threads, int reps) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 64) n_threads = 64;
    const size_t n = bytes / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof(uint64_t));
    if (!buf) return -1;
    for (size_t i = 0; i < n; i++) buf[i] = i; /* real pages, not the shared zero page */
    double best = 0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        pthread_t th[64];
        bw_part parts[64];
        const double t0 = now_s();
        for (int t = 0; t < n_threads; t++) {
            size_t lo = n * (size_t)t / (size_t)n_threads, hi = n * (size_t)(t + 1) / (size_t)n_threads;
            parts[t] = (bw_part){buf + lo, hi - lo, 0};
            if (t > 0) pthread_create(&th[t], NULL, bw_read, &parts[t]);
        }
        bw_read(&parts[0]);
        for (int t = 1; t < n_threads; t++) pthread_join(th[t], NULL);
        const double dt = now_s() - t0;
        for (int t = 0; t < n_threads; t++) sink += parts[t].sum;
        const double gbs = (double)(n * sizeof(uint64_t)) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    (void)sink;
    free(buf);
    return best;
}
