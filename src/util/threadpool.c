/* threadpool.c — n_threads-1 persistent workers plus the caller as thread 0.
 *
 * A region is published by bumping a generation counter; workers notice it by spinning briefly and
 * otherwise sleep on a condition variable. Completion is a countdown of the workers still running,
 * which the caller waits on the same way. The spins are bounded in time (ES_TP_SPIN_NS) and yield
 * the CPU once past a few hundred pauses, because this runs on small machines shared with other
 * work (2 cores): an unbounded spin would starve the very thread everyone is waiting for.
 *
 * Sleeping without lost wake-ups: a worker re-checks the generation under the mutex before it waits,
 * and the caller, after bumping the generation, always takes the mutex to broadcast; the last worker
 * to finish likewise always takes it to signal completion. The mutex orders the two sides, so no
 * store-then-load ordering between plain atomics is relied on: an earlier version skipped the lock
 * when no one had registered as asleep (a Dekker handshake on two seq_cst atomics), and under
 * qemu-user on an x86-64 host, whose translation of aarch64's STLR/LDAR pair does not keep a store
 * before a later load, both sides missed each other and every thread slept. An uncontended lock and a
 * broadcast without waiters cost tens of nanoseconds against a region of ~100 µs. */
#include "util/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "util/err.h"

/* How long a waiting thread spins before it sleeps. A matmul region on a 1B model is ~100 µs and
 * the gaps between regions (norms, attention) are tens of µs, so this keeps workers awake across a
 * forward pass and lets them sleep between tokens. */
#define ES_TP_SPIN_NS 100000
/* Pure `pause` iterations before the spin starts yielding to other runnable threads. */
#define ES_TP_PAUSE_ITERS 256

typedef struct es_worker {
    es_threadpool *tp;
    int ith;
    _Atomic int64_t cpu_ns; /* this worker's CPU time (CLOCK_THREAD_CPUTIME_ID) as last noted */
    int64_t noted_at;       /* monotonic ns of that note (the worker's own) */
} es_worker;

struct es_threadpool {
    int n_threads;
    pthread_t *threads; /* [n_threads - 1] */
    es_worker *workers; /* [n_threads - 1] */
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* a new generation (or stop) was published */
    pthread_cond_t cv_done; /* pending reached 0 */

    es_task_fn fn; /* the current region; written before gen is bumped */
    void *ud;
    _Atomic unsigned gen;
    _Atomic int pending; /* workers that have not finished the current region */
    _Atomic int stop;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until *v != old (returns true) or the spin budget is spent (returns false). */
static bool spin_while_eq_uint(_Atomic unsigned *v, unsigned old) {
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(v, memory_order_acquire) != old) return true;
        if (i < ES_TP_PAUSE_ITERS) { cpu_relax(); continue; }
        if ((i & 15) == 0) {
            int64_t t = now_ns();
            if (t0 == 0) t0 = t;
            else if (t - t0 > ES_TP_SPIN_NS) return false;
        }
        sched_yield();
    }
}

static bool spin_while_nonzero(_Atomic int *v) {
    int64_t t0 = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(v, memory_order_acquire) == 0) return true;
        if (i < ES_TP_PAUSE_ITERS) { cpu_relax(); continue; }
        if ((i & 15) == 0) {
            int64_t t = now_ns();
            if (t0 == 0) t0 = t;
            else if (t - t0 > ES_TP_SPIN_NS) return false;
        }
        sched_yield();
    }
}

/* Publishes the calling worker's CPU time so far. Reading a thread CPU clock is a system call (about
 * a microsecond, as long as a small region), so after a region it is read at most once per
 * ES_TP_CPU_NOTE_NS; before sleeping always, so an idle pool's total is exact. */
#define ES_TP_CPU_NOTE_NS 1000000
static void note_cpu(es_worker *w, bool force) {
    const int64_t t = now_ns();
    if (!force && t - w->noted_at < ES_TP_CPU_NOTE_NS) return;
    w->noted_at = t;
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        atomic_store_explicit(&w->cpu_ns, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, memory_order_relaxed);
}

static void *worker_main(void *arg) {
    es_worker *w = arg;
    es_threadpool *tp = w->tp;
    unsigned seen = 0; /* generation 0 is "no region yet" */
    for (;;) {
        if (!spin_while_eq_uint(&tp->gen, seen)) {
            note_cpu(w, true); /* the spin before sleeping counts too */
            pthread_mutex_lock(&tp->mu);
            while (atomic_load(&tp->gen) == seen) pthread_cond_wait(&tp->cv_work, &tp->mu);
            pthread_mutex_unlock(&tp->mu);
        }
        seen = atomic_load(&tp->gen);
        if (atomic_load(&tp->stop)) break;
        tp->fn(tp->ud, w->ith, tp->n_threads);
        note_cpu(w, false);
        if (atomic_fetch_sub(&tp->pending, 1) == 1) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->cv_done);
            pthread_mutex_unlock(&tp->mu);
        }
    }
    return NULL;
}

/* Publishes the next generation and wakes sleeping workers. */
static void publish(es_threadpool *tp) {
    atomic_fetch_add(&tp->gen, 1);
    pthread_mutex_lock(&tp->mu);
    pthread_cond_broadcast(&tp->cv_work);
    pthread_mutex_unlock(&tp->mu);
}

es_status es_threadpool_init(int n_threads, es_threadpool **out, es_err *err) {
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return es_fail(err, ES_ERR_INVALID_ARG, "thread count %d out of range 1..1024", n_threads);
    es_threadpool *tp = calloc(1, sizeof(*tp));
    if (!tp) return es_fail(err, ES_ERR_NOMEM, "out of memory allocating the thread pool");
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv_work, NULL);
    pthread_cond_init(&tp->cv_done, NULL);
    if (n_threads > 1) {
        tp->threads = calloc((size_t)n_threads - 1, sizeof(*tp->threads));
        tp->workers = calloc((size_t)n_threads - 1, sizeof(*tp->workers));
        if (!tp->threads || !tp->workers) {
            es_threadpool_free(tp);
            return es_fail(err, ES_ERR_NOMEM, "out of memory allocating the thread pool");
        }
    }
    for (int i = 0; i < n_threads - 1; i++) {
        tp->workers[i].tp = tp;
        tp->workers[i].ith = i + 1;
        atomic_init(&tp->workers[i].cpu_ns, 0);
        tp->workers[i].noted_at = 0;
        int rc = pthread_create(&tp->threads[i], NULL, worker_main, &tp->workers[i]);
        if (rc != 0) {
            es_threadpool_free(tp);
            return es_fail(err, ES_ERR_INTERNAL, "could not start worker thread %d of %d (error %d)", i + 1,
                           n_threads, rc);
        }
        tp->n_started++;
    }
    *out = tp;
    return ES_OK;
}

void es_threadpool_free(es_threadpool *tp) {
    if (!tp) return;
    if (tp->n_started > 0) {
        atomic_store(&tp->stop, 1);
        pthread_mutex_lock(&tp->mu);
        atomic_fetch_add(&tp->gen, 1);
        pthread_cond_broadcast(&tp->cv_work);
        pthread_mutex_unlock(&tp->mu);
        for (int i = 0; i < tp->n_started; i++) pthread_join(tp->threads[i], NULL);
    }
    pthread_cond_destroy(&tp->cv_done);
    pthread_cond_destroy(&tp->cv_work);
    pthread_mutex_destroy(&tp->mu);
    free(tp->threads);
    free(tp->workers);
    free(tp);
}

int es_threadpool_n_threads(const es_threadpool *tp) { return tp ? tp->n_threads : 1; }

double es_threadpool_cpu_seconds(es_threadpool *tp) {
    if (!tp) return 0;
    int64_t ns = 0;
    for (int i = 0; i < tp->n_started; i++) ns += atomic_load_explicit(&tp->workers[i].cpu_ns, memory_order_relaxed);
    return (double)ns * 1e-9;
}

void es_threadpool_run(es_threadpool *tp, es_task_fn fn, void *ud) {
    if (!tp || tp->n_threads == 1) {
        fn(ud, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->ud = ud;
    atomic_store(&tp->pending, tp->n_threads - 1);
    publish(tp);

    fn(ud, 0, tp->n_threads);

    if (!spin_while_nonzero(&tp->pending)) {
        pthread_mutex_lock(&tp->mu);
        while (atomic_load(&tp->pending) != 0) pthread_cond_wait(&tp->cv_done, &tp->mu);
        pthread_mutex_unlock(&tp->mu);
    }
}
