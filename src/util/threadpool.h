/* threadpool.h — a fixed set of worker threads created once; each parallel region runs one function
 * on every thread (ith = 0..nth-1, the caller being thread 0) and returns when all are done.
 * Workers spin briefly, then sleep on a condition variable, so back-to-back regions (one per matmul)
 * cost microseconds, not a thread creation. */
#ifndef ES_UTIL_THREADPOOL_H
#define ES_UTIL_THREADPOOL_H

#include "edgespec.h"

typedef struct es_threadpool es_threadpool;
typedef void (*es_task_fn)(void *ud, int ith, int nth);

es_status es_threadpool_init(int n_threads, es_threadpool **out, es_err *err);
void es_threadpool_free(es_threadpool *tp);
int es_threadpool_n_threads(const es_threadpool *tp);
/* CPU seconds the worker threads (not the caller, thread 0) have used since the pool started: exact
 * once they sleep, at most about a millisecond per worker behind while they are busy. Any thread may
 * call it; the caller measures its own time with CLOCK_THREAD_CPUTIME_ID. */
double es_threadpool_cpu_seconds(es_threadpool *tp);
/* Runs fn(ud, ith, nth) on all nth threads and waits. tp == NULL runs fn(ud, 0, 1) inline. Not
 * re-entrant: one region at a time per pool. */
void es_threadpool_run(es_threadpool *tp, es_task_fn fn, void *ud);

/* Splits [0, n) into nth near-equal contiguous parts; part ith is [*lo, *hi). */
static inline void es_split_range(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = n / nth, rem = n % nth;
    *lo = ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}

#endif
