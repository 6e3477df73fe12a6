/* test_wakeq.c — the self-pipe queue (util/wakeq.h): FIFO order, purge by key, a pipe byte only on
 * empty -> non-empty, free of what is still queued, and a producer thread feeding a consumer that
 * sleeps in poll() without losing or reordering anything. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "util/wakeq.h"

typedef struct tev {
    es_wakeq_node node; /* first, as the module requires */
    int seq;
} tev;

static int n_freed;

static void count_free(void *p) {
    n_freed++;
    free(p);
}

static tev *mk(uint64_t key, int seq) {
    tev *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->node.key = key;
    e->seq = seq;
    return e;
}

/* Bytes waiting in the pipe, read without blocking (and thereby drained). */
static int pipe_bytes(es_wakeq *q) {
    char buf[64];
    int n = 0;
    ssize_t k;
    while ((k = read(es_wakeq_fd(q), buf, sizeof buf)) > 0) n += (int)k;
    return n;
}

static int readable(es_wakeq *q, int timeout_ms) {
    struct pollfd pf = {es_wakeq_fd(q), POLLIN, 0};
    return poll(&pf, 1, timeout_ms) == 1 && (pf.revents & POLLIN);
}

static void test_basic(void) {
    es_wakeq q;
    es_err err = {{0}};
    CHECK_OK(es_wakeq_init(&q, &err), &err);
    CHECK(es_wakeq_fd(&q) >= 0);
    int fl = fcntl(es_wakeq_fd(&q), F_GETFL);
    CHECK(fl >= 0 && (fl & O_NONBLOCK));
    CHECK(fcntl(es_wakeq_fd(&q), F_GETFD) & FD_CLOEXEC);
    CHECK(es_wakeq_pop_all(&q) == NULL);
    CHECK(!readable(&q, 0));

    /* one byte for the first push, none for the rest while the queue stays non-empty */
    for (int i = 0; i < 5; i++) es_wakeq_push(&q, &mk(i % 2, i)->node);
    CHECK(pipe_bytes(&q) == 1);
    es_wakeq_node *l = es_wakeq_pop_all(&q);
    int seq = 0;
    for (es_wakeq_node *n = l; n; seq++) {
        CHECK(((tev *)n)->seq == seq);
        es_wakeq_node *next = n->next;
        free(n);
        n = next;
    }
    CHECK(seq == 5);
    CHECK(es_wakeq_pop_all(&q) == NULL);

    /* emptied by pop_all: the next push wakes again */
    es_wakeq_push(&q, &mk(7, 0)->node);
    CHECK(readable(&q, 0));
    es_wakeq_drain(&q);
    CHECK(!readable(&q, 0));
    es_wakeq_push(&q, &mk(7, 1)->node);
    CHECK(!readable(&q, 0));
    l = es_wakeq_pop_all(&q);
    CHECK(l && ((tev *)l)->seq == 0 && l->next && ((tev *)l->next)->seq == 1 && !l->next->next);
    if (l) {
        free(l->next);
        free(l);
    }
    es_wakeq_wake(&q); /* a wake-up without an event */
    CHECK(readable(&q, 0));
    es_wakeq_drain(&q);

    es_wakeq_free(&q, NULL);
    es_wakeq_free(&q, NULL); /* idempotent */
}

static void test_purge(void) {
    es_wakeq q;
    es_err err = {{0}};
    CHECK_OK(es_wakeq_init(&q, &err), &err);
    /* keys: 1 2 1 3 1 — purge 1 (head, middle, tail), then append: the tail must be right */
    const uint64_t keys[5] = {1, 2, 1, 3, 1};
    for (int i = 0; i < 5; i++) es_wakeq_push(&q, &mk(keys[i], i)->node);
    n_freed = 0;
    es_wakeq_purge(&q, 1, count_free);
    CHECK(n_freed == 3);
    es_wakeq_purge(&q, 99, count_free);
    CHECK(n_freed == 3);
    es_wakeq_push(&q, &mk(4, 5)->node);
    const int want[3] = {1, 3, 5};
    int k = 0;
    es_wakeq_node *n = es_wakeq_pop_all(&q);
    while (n) {
        CHECK(k < 3 && ((tev *)n)->seq == want[k]);
        k++;
        es_wakeq_node *next = n->next;
        free(n);
        n = next;
    }
    CHECK(k == 3);

    /* purging everything leaves an empty queue whose next push wakes the reader */
    es_wakeq_push(&q, &mk(5, 0)->node);
    es_wakeq_push(&q, &mk(5, 1)->node);
    es_wakeq_drain(&q);
    es_wakeq_purge(&q, 5, count_free);
    CHECK(es_wakeq_pop_all(&q) == NULL);
    es_wakeq_push(&q, &mk(6, 0)->node);
    CHECK(readable(&q, 0));

    /* free disposes of what is still queued */
    es_wakeq_push(&q, &mk(6, 1)->node);
    n_freed = 0;
    es_wakeq_free(&q, count_free);
    CHECK(n_freed == 2);
}

/* A zeroed struct may be freed without init (owners calloc and free on any failure path). */
static void test_zeroed(void) {
    es_wakeq q;
    memset(&q, 0, sizeof q);
    es_wakeq_free(&q, NULL);
    es_wake w;
    memset(&w, 0, sizeof w);
    es_wake_free(&w);
    es_err err = {{0}};
    CHECK_OK(es_wake_init(&w, &err), &err);
    es_wake_poke(&w);
    es_wake_poke(&w);
    struct pollfd pf = {es_wake_fd(&w), POLLIN, 0};
    CHECK(poll(&pf, 1, 0) == 1);
    es_wake_drain(&w);
    CHECK(poll(&pf, 1, 0) == 0);
    es_wake_free(&w);
    CHECK(!w.live);
}

/* ---- producer thread, consumer in poll() ---- */

#define N_PROD 20000
#define KEYS 4

typedef struct {
    es_wakeq *q;
} prod_ctx;

static void *producer(void *arg) {
    prod_ctx *c = arg;
    for (int i = 0; i < N_PROD; i++) {
        es_wakeq_push(c->q, &mk((uint64_t)(i % KEYS), i)->node);
        if (i % 1000 == 999) usleep(200); /* let the consumer catch up and find the queue empty */
    }
    return NULL;
}

static void test_threads(void) {
    es_wakeq q;
    es_err err = {{0}};
    CHECK_OK(es_wakeq_init(&q, &err), &err);
    prod_ctx c = {&q};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, producer, &c) == 0);
    int got = 0, next_seq = 0, wakes = 0, timeouts = 0;
    bool in_order = true;
    while (got < N_PROD && timeouts < 50) {
        struct pollfd pf = {es_wakeq_fd(&q), POLLIN, 0};
        int r = poll(&pf, 1, 100);
        if (r == 0) {
            timeouts++; /* a lost wake-up shows as events left while nothing is readable */
            continue;
        }
        wakes++;
        es_wakeq_drain(&q);
        es_wakeq_node *n = es_wakeq_pop_all(&q);
        while (n) {
            if (((tev *)n)->seq != next_seq) in_order = false;
            next_seq = ((tev *)n)->seq + 1;
            got++;
            es_wakeq_node *nx = n->next;
            free(n);
            n = nx;
        }
    }
    pthread_join(th, NULL);
    CHECK_MSG(got == N_PROD, "got %d of %d events (%d timeouts)", got, N_PROD, timeouts);
    CHECK(in_order);
    CHECK(wakes >= 1 && wakes <= N_PROD);
    CHECK(es_wakeq_pop_all(&q) == NULL);
    es_wakeq_free(&q, NULL);
}

int main(void) {
    test_basic();
    test_purge();
    test_zeroed();
    test_threads();
    return es_test_finish("wakeq");
}
