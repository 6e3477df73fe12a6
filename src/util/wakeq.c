/* wakeq.c — self-pipe wake-ups and a locked FIFO handed to the woken thread (see wakeq.h). */
#include "util/wakeq.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/err.h"

es_status es_wake_init(es_wake *w, es_err *err) {
    w->live = false;
    if (pipe2(w->fd, O_NONBLOCK | O_CLOEXEC) != 0) {
        w->fd[0] = w->fd[1] = -1;
        return es_fail(err, ES_ERR_IO, "cannot create a pipe: %s", strerror(errno));
    }
    w->live = true;
    return ES_OK;
}

void es_wake_free(es_wake *w) {
    if (!w->live) return;
    close(w->fd[0]);
    close(w->fd[1]);
    w->fd[0] = w->fd[1] = -1;
    w->live = false;
}

void es_wake_poke(es_wake *w) {
    const uint8_t one = 1;
    /* EAGAIN means a full pipe, which already holds a wake-up; nothing else can fail that matters. */
    ssize_t k = write(w->fd[1], &one, 1);
    (void)k;
}

void es_wake_drain(es_wake *w) {
    uint8_t junk[256];
    while (read(w->fd[0], junk, sizeof junk) > 0) {
    }
}

es_status es_wakeq_init(es_wakeq *q, es_err *err) {
    memset(q, 0, sizeof *q);
    if (pthread_mutex_init(&q->mu, NULL) != 0) return es_fail(err, ES_ERR_NOMEM, "cannot create a mutex");
    es_status st = es_wake_init(&q->wake, err);
    if (st != ES_OK) {
        pthread_mutex_destroy(&q->mu);
        return st;
    }
    q->live = true;
    return ES_OK;
}

void es_wakeq_free(es_wakeq *q, es_wakeq_free_fn free_fn) {
    if (!q->live) return;
    es_wakeq_node *n = q->head;
    while (n) {
        es_wakeq_node *next = n->next;
        (free_fn ? free_fn : free)(n);
        n = next;
    }
    q->head = q->tail = NULL;
    es_wake_free(&q->wake);
    pthread_mutex_destroy(&q->mu);
    q->live = false;
}

void es_wakeq_push(es_wakeq *q, es_wakeq_node *n) {
    n->next = NULL;
    pthread_mutex_lock(&q->mu);
    const bool was_empty = q->head == NULL;
    if (q->tail) q->tail->next = n;
    else q->head = n;
    q->tail = n;
    pthread_mutex_unlock(&q->mu);
    if (was_empty) es_wake_poke(&q->wake);
}

es_wakeq_node *es_wakeq_pop_all(es_wakeq *q) {
    pthread_mutex_lock(&q->mu);
    es_wakeq_node *list = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return list;
}

void es_wakeq_purge(es_wakeq *q, uint64_t key, es_wakeq_free_fn free_fn) {
    pthread_mutex_lock(&q->mu);
    es_wakeq_node **pp = &q->head, *last = NULL;
    while (*pp) {
        es_wakeq_node *n = *pp;
        if (n->key == key) {
            *pp = n->next;
            (free_fn ? free_fn : free)(n);
        } else {
            last = n;
            pp = &n->next;
        }
    }
    q->tail = last;
    pthread_mutex_unlock(&q->mu);
}
