/* test_threadpool.c — many tiny regions must each run exactly once on every thread, with the right
 * ith/nth, and return only after all threads are done; a NULL pool runs inline. */
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "util/threadpool.h"

#define MAX_T 8

typedef struct {
    int64_t slot[MAX_T][16]; /* per-thread counters, one cache line apart */
    int bad_nth;
    int nth_expected;
    _Atomic int64_t in_region; /* threads inside the current region */
    _Atomic int64_t total;
} tiny_ctx;

static void tiny(void *ud, int ith, int nth) {
    tiny_ctx *c = ud;
    if (nth != c->nth_expected || ith < 0 || ith >= nth) c->bad_nth++;
    else c->slot[ith][0] += ith + 1;
    atomic_fetch_add(&c->total, ith + 1);
}

/* A region where every thread waits for all others to have entered: fails (hangs) unless all
 * threads really run concurrently, and checks the completion barrier (the caller must not return
 * before the last worker decremented). */
typedef struct {
    _Atomic int arrived;
    _Atomic int left;
    int nth;
} meet_ctx;

static void meet(void *ud, int ith, int nth) {
    meet_ctx *c = ud;
    atomic_fetch_add(&c->arrived, 1);
    while (atomic_load(&c->arrived) < nth) {
    }
    atomic_fetch_add(&c->left, 1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void run_many(int n_threads, int n_regions) {
    es_err err = {0};
    es_threadpool *tp = NULL;
    es_err *errp = &err;
    CHECK_OK(es_threadpool_init(n_threads, &tp, &err), errp);
    if (!tp) return;
    CHECK(es_threadpool_n_threads(tp) == n_threads);

    static tiny_ctx c;
    memset(&c, 0, sizeof(c));
    c.nth_expected = n_threads;
    double t0 = now_s();
    for (int i = 0; i < n_regions; i++) es_threadpool_run(tp, tiny, &c);
    double dt = now_s() - t0;
    CHECK(c.bad_nth == 0);
    int64_t want_total = (int64_t)n_regions * n_threads * (n_threads + 1) / 2;
    CHECK_MSG(atomic_load(&c.total) == want_total, "total %lld want %lld", (long long)atomic_load(&c.total),
              (long long)want_total);
    for (int t = 0; t < n_threads; t++)
        CHECK_MSG(c.slot[t][0] == (int64_t)n_regions * (t + 1), "thread %d sum %lld", t, (long long)c.slot[t][0]);
    printf("threads=%d regions=%d: %.2f us/region\n", n_threads, n_regions, dt * 1e6 / n_regions);

    /* Regions after a long idle gap: the workers have gone to sleep and must be woken. */
    for (int rep = 0; rep < 3; rep++) {
        struct timespec ts = {0, 3 * 1000 * 1000};
        nanosleep(&ts, NULL);
        meet_ctx m = {0};
        m.nth = n_threads;
        es_threadpool_run(tp, meet, &m);
        CHECK(atomic_load(&m.left) == n_threads);
    }
    /* Back-to-back barrier regions: each return implies all threads left. */
    for (int rep = 0; rep < 200; rep++) {
        meet_ctx m = {0};
        es_threadpool_run(tp, meet, &m);
        CHECK(atomic_load(&m.left) == n_threads);
    }
    es_threadpool_free(tp);
}

int main(void) {
    /* NULL pool: inline, ith 0 of 1. */
    tiny_ctx c;
    memset(&c, 0, sizeof(c));
    c.nth_expected = 1;
    es_threadpool_run(NULL, tiny, &c);
    CHECK(c.bad_nth == 0 && c.slot[0][0] == 1);
    CHECK(es_threadpool_n_threads(NULL) == 1);

    es_err err = {0};
    es_threadpool *tp = (es_threadpool *)&c;
    CHECK(es_threadpool_init(0, &tp, &err) == ES_ERR_INVALID_ARG);
    CHECK(tp == NULL);
    CHECK(err.msg[0] != 0);
    es_threadpool_free(NULL);

    /* Create and free without ever running a region. */
    es_err *errp = &err;
    CHECK_OK(es_threadpool_init(3, &tp, &err), errp);
    es_threadpool_free(tp);

#ifdef ES_EMULATED /* qemu: emulated threads are much slower, and the spinning barriers oversubscribe the host */
    const int n_regions = 5000;
#else
    const int n_regions = 100000;
#endif
    run_many(1, n_regions);
    run_many(2, n_regions);
    run_many(4, n_regions);
    return es_test_finish("test_threadpool");
}
