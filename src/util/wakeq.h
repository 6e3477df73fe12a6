/* wakeq.h — handing work from other threads to a thread that sleeps in poll()/an event loop.
 *
 * es_wake is a self-pipe: any thread pokes it (one byte, non-blocking; a full pipe already holds a
 * wake-up), the sleeper polls its read fd and drains it before looking at what it was woken for.
 *
 * es_wakeq adds a mutex-protected FIFO of caller-defined nodes. A caller's event struct embeds an
 * es_wakeq_node as its FIRST member (so a node pointer is the event pointer, and free() of either
 * frees the event). Producers push; the consumer, when the read fd is readable, drains the pipe and
 * takes the whole list at once with es_wakeq_pop_all. The pipe is written only when a push finds the
 * queue empty: the consumer's next pop_all takes everything pushed after that anyway.
 *
 * The structs are visible so that they can live inside their owner; touch them only through these
 * functions. A zero-filled struct (calloc) is safe to pass to the _free function before _init. */
#ifndef ES_UTIL_WAKEQ_H
#define ES_UTIL_WAKEQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "edgespec.h"

typedef struct es_wake {
    int fd[2];          /* [0] read end (poll it), [1] write end; valid only when live */
    bool live;
} es_wake;

/* Creates the pipe (both ends non-blocking and close-on-exec). ES_ERR_IO on failure. */
es_status es_wake_init(es_wake *w, es_err *err);
/* Closes the pipe; a no-op on a zeroed or already freed es_wake. */
void es_wake_free(es_wake *w);
/* Any thread: makes the read fd readable (until drained). Never blocks. */
void es_wake_poke(es_wake *w);
/* The sleeper: reads every pending byte, so the fd stops being readable until the next poke. */
void es_wake_drain(es_wake *w);
/* The read end, for poll() or event_new(). */
static inline int es_wake_fd(const es_wake *w) { return w->fd[0]; }

typedef struct es_wakeq_node {
    struct es_wakeq_node *next;
    uint64_t key;       /* what es_wakeq_purge matches (e.g. a session or request id) */
} es_wakeq_node;

typedef struct es_wakeq {
    pthread_mutex_t mu; /* guards head and tail */
    es_wakeq_node *head, *tail;
    es_wake wake;
    bool live;
} es_wakeq;

/* Disposes of one node; `free` itself fits when the node heads a plain malloc'd struct. */
typedef void (*es_wakeq_free_fn)(void *node);

es_status es_wakeq_init(es_wakeq *q, es_err *err);
/* Frees every node still queued (with free_fn; NULL means free) and the pipe and mutex. No other
 * thread may use q any more. A no-op on a zeroed or already freed es_wakeq. */
void es_wakeq_free(es_wakeq *q, es_wakeq_free_fn free_fn);
/* Any thread: appends n (the queue owns it from now on) and pokes the pipe if the queue was empty. */
void es_wakeq_push(es_wakeq *q, es_wakeq_node *n);
/* The consumer: takes the whole queue, oldest first (NULL-terminated through next); the caller owns it. */
es_wakeq_node *es_wakeq_pop_all(es_wakeq *q);
/* Any thread: removes and frees (free_fn; NULL means free) every queued node whose key is key. */
void es_wakeq_purge(es_wakeq *q, uint64_t key, es_wakeq_free_fn free_fn);
/* Any thread: wakes the consumer without queueing anything (e.g. after setting a stop flag). */
static inline void es_wakeq_wake(es_wakeq *q) { es_wake_poke(&q->wake); }
/* The consumer: drains the pipe; call before es_wakeq_pop_all so that no push is missed. */
static inline void es_wakeq_drain(es_wakeq *q) { es_wake_drain(&q->wake); }
static inline int es_wakeq_fd(const es_wakeq *q) { return es_wake_fd(&q->wake); }

#endif
