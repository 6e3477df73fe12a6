/* server.c — the verification server's network side (see server.h).
 *
 * Threads. The loop thread owns the event_base and everything reachable from a connection: sockets,
 * bufferevents, per-connection session sets, the encode/decode scratch buffers. The compute thread
 * runs es_sched_run and touches nothing here except the event queue: its on_event callback copies the
 * event into a node and pushes it on an es_wakeq (util/wakeq.h), which writes one byte to a
 * non-blocking pipe the loop watches when the queue was empty. The loop drains the pipe, takes the
 * whole queue and encodes
 * each event into a frame for its connection. No libevent object is ever used from two threads, so
 * libevent needs no locking (evthread_use_pthreads is never called).
 *
 * Session keys given to the scheduler are (connection id << 32) | client session id; connection ids
 * are never reused, so an event whose connection is gone finds nothing and is dropped. When the loop
 * closes a session itself (client CLOSE, connection gone) it calls es_sched_close, after which the
 * scheduler emits nothing more for that key, and then purges any of its events still queued: so a
 * client that re-opens the same session id never sees a stale event of the old one.
 *
 * HTTP requests (http/http.h) are sessions of the same scheduler with keys SERVER_HTTP_KEY | request
 * id (the top bit is never set in an edge key: connection ids stay below 2^31); their events go to the
 * HTTP front end, which runs on this loop too. Cancelling one (client gone, stop string) is
 * es_sched_close + purge, as for an edge session.
 *
 * Connections die in two steps: conn_drop unlinks a connection (no more events, sessions closed) and
 * parks it on a dead list; a deferred event frees it once the current callback has returned, so no
 * callback ever runs on freed memory. */
#include "server/server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "grammar/grammar.h"
#include "transport/keys.h"
#include "transport/listen.h"
#include "wire/proto.h"
#include "transport/tls.h"
#include "http/metrics.h"
#include "http/oai.h"
#include "server/server_fuzz.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/sig.h"
#include "util/wakeq.h"

#define ES_SERVER_MAX_OUTPUT_DEFAULT ((size_t)8 << 20)
#define ES_SERVER_CONN_BUCKETS 1024 /* hash buckets of the connection table (power of two) */
#define ES_SERVER_OBUF_CAP ((size_t)64 << 10) /* one outgoing frame: TOKENS of 4096 ids is ~16 KiB, of 256
                                                   with 20 log-probabilities each ~43 KiB */
#define ES_SERVER_CLOSE_GRACE_S 2.0 /* a closing connection gets this long to take its last frames */
#define ES_SERVER_SHUTDOWN_GRACE_S 1.0
#define SERVER_HTTP_KEY (1ull << 63) /* session keys of HTTP requests */

_Static_assert(ES_SCHED_BATCH_HIST == ES_METRICS_BATCH_BUCKETS, "the batch histogram buckets must agree");
_Static_assert(ES_SCHED_MAX_STOP == ES_PROTO_MAX_STOP, "an OPEN's stop tokens must fit a session");

/* ---- events crossing from the compute thread ---- */

typedef struct es_sev {
    es_wakeq_node node;                         /* first: queue link; key = the session key */
    int type;
    uint32_t round;
    int stop, n_generated;
    uint32_t queue_us, verify_us;
    uint16_t suggested_budget;
    int code;
    char msg[ES_PROTO_MAX_MSG + 1];
    int exit_layer;                             /* EARLY */
    int n_path;                                 /* VERDICT / EARLY: path length */
    int n_tokens;
    bool has_lp;                                /* TOKENS / VERDICT: es_token_logprob[n_tokens] follow the tokens */
    int32_t data[];                             /* VERDICT: path[n_path] then tokens; TOKENS: tokens */
} es_sev;

/* The log-probabilities a session asked for, after the event's tokens (NULL: none). */
static const es_token_logprob *sev_logprobs(const es_sev *e) {
    return e->has_lp ? (const es_token_logprob *)(const void *)(e->data + e->n_path + e->n_tokens) : NULL;
}

/* ---- connections ---- */

enum { CONN_HANDSHAKE = 0, CONN_READY, CONN_CLOSING, CONN_DEAD };

typedef struct es_conn_sess {
    uint32_t id;
    int n_generated;
    double t_active; /* last OPEN / VERIFY from the client or event from the scheduler */
} es_conn_sess;

typedef struct es_conn {
    struct es_server *srv;
    uint32_t id;
    int state;
    struct bufferevent *bev;
    struct es_conn *hnext;            /* hash chain */
    struct es_conn *prev, *next;      /* list of live connections; dead list uses next */
    double t_open, t_active, t_closing;
    es_conn_sess *sess;               /* open sessions [n_sess] */
    int n_sess, cap_sess;
    int level;                        /* protocol version chosen at HELLO (ES_PROTO_LEVEL_*) */
    char peer[64];
} es_conn;

struct es_server {
    /* configuration (resolved defaults) */
    es_server_params p;
    char host[256];
    es_keys keys;                      /* accepted api keys (none: no key needed) */
    _Atomic int64_t tls_failures;      /* failed edge-port TLS handshakes (counted on the loop thread) */
    int n_ctx, n_vocab, max_tree_nodes, max_new_tokens, max_prompt;
    uint64_t fingerprint;
    int32_t bos, eos;
    int tok_n_vocab;
    size_t max_output;
    int max_connections;
    int port;

    es_sched *sched;

    /* shared with the compute thread, under mu */
    es_wakeq q;                        /* compute thread -> loop events (es_sev), and the loop's wake-ups */
    pthread_mutex_t mu;                /* guards the fields below */
    bool mu_ok;
    bool stop_requested;
    bool drain_requested;       /* es_server_drain (guarded by mu; acted on by the loop thread) */
    bool draining;              /* loop thread: new sessions go elsewhere */
    es_status compute_status;
    char compute_msg[sizeof(((es_err *)0)->msg)];
    bool compute_reported;

    /* stop-string watches of HTTP requests (http/oai.h es_stopwatch), under watch_mu: added by the
       loop before the session opens, fed on the compute thread inside the event callback, dropped by
       the loop when the request ends (cancel, or its DONE / ERROR delivered) */
    pthread_mutex_t watch_mu;
    bool watch_mu_ok;
    struct swatch *watches;

    /* statistics, under stats_mu (written by the loop, read by anyone) */
    pthread_mutex_t stats_mu;
    bool stats_mu_ok;
    es_server_stats st;

    /* loop-thread state */
    struct event_base *base;
    struct evconnlistener *listener;
    int64_t accept_fails;       /* failed accepts (loop thread), logged at most once per 10 s */
    double accept_logged_at;
    struct event *wake_ev, *tick_ev, *reap_ev, *deadline_ev, *relisten_ev;
    es_conn *conns;                    /* live list (handshake, ready, closing) */
    es_conn *dead;                     /* dropped, freed by reap_cb */
    es_conn *buckets[ES_SERVER_CONN_BUCKETS];
    int n_conns;
    uint32_t next_conn_id;
    bool shutting_down;
    uint8_t *obuf;                     /* encode scratch [ES_SERVER_OBUF_CAP] */
    int32_t *prompt_buf;               /* [max_prompt] */
    es_spec_tree *tree;                /* decode scratch */

    es_http *http;                     /* the OpenAI API (NULL without one) */
    int http_port;
    char http_host[256], model_name[256], device_name[256];

    pthread_t loop_thread, compute_thread;
    bool loop_started, compute_started;
};

#define slog(s, level, ...) es_logf((s)->p.log, (s)->p.log_ud, level, __VA_ARGS__)

static uint64_t sess_key(const es_conn *c, uint32_t sid) { return ((uint64_t)c->id << 32) | sid; }

es_server_params es_server_default_params(void) {
    es_server_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.port = 7700;
    p.sched = es_sched_default_params();
    p.max_payload = ES_PROTO_MAX_PAYLOAD_DEFAULT;
    p.max_prompt_tokens = 0;
    p.idle_timeout_s = 300;
    p.handshake_timeout_s = 10;
    p.max_connections = 1024;
    p.max_output_bytes = ES_SERVER_MAX_OUTPUT_DEFAULT;
    p.http_fd = -1;
    p.chat_family = -1;
    p.http_server_spec = true;
    p.http_max_queue = 64;
    p.http_queue_timeout_s = 60;
    return p;
}

/* ---- the compute side: queueing events ---- */

/* Called on the compute thread: copies the event (valid only during the call) and wakes the loop.
 * An allocation failure loses the event; the session then stalls until its idle timeout. */
typedef struct swatch {
    struct swatch *next;
    uint64_t key;
    es_stopwatch *w;
} swatch;

static void watch_drop(es_server *s, uint64_t key) {
    pthread_mutex_lock(&s->watch_mu);
    for (swatch **pp = &s->watches; *pp; pp = &(*pp)->next)
        if ((*pp)->key == key) {
            swatch *x = *pp;
            *pp = x->next;
            es_stopwatch_free(x->w);
            free(x);
            break;
        }
    pthread_mutex_unlock(&s->watch_mu);
}

/* Compute thread, inside the event callback: an HTTP session whose tokens complete a stop string is
 * closed here, so the next step generates nothing more for it. Its tokens still go to the front end,
 * whose own matcher ends the reply at the same token. */
static bool watch_tokens(es_server *s, const es_sched_event *ev) {
    bool matched = false;
    pthread_mutex_lock(&s->watch_mu);
    for (swatch *x = s->watches; x; x = x->next)
        if (x->key == ev->session) {
            matched = es_stopwatch_feed(x->w, ev->tokens, ev->n_tokens);
            break;
        }
    pthread_mutex_unlock(&s->watch_mu);
    if (!matched || ev->stop != ES_STOP_NONE) return false;
    es_sched_close(s->sched, ev->session);
    return true;
}

static void on_sched_event(void *ud, const es_sched_event *ev) {
    es_server *s = ud;
    const bool stopped = (ev->session & SERVER_HTTP_KEY) && ev->type == ES_EV_TOKENS && ev->tokens && ev->n_tokens > 0 &&
                         watch_tokens(s, ev);
    int n_path = 0, n_tok = 0;
    const int32_t *path = NULL, *tok = NULL;
    if ((ev->type == ES_EV_VERDICT || ev->type == ES_EV_EARLY) && ev->verdict) {
        n_path = ev->verdict->n_accepted;
        n_tok = ev->verdict->n_tokens;
        path = ev->verdict->path;
        tok = ev->verdict->tokens;
        if (n_path < 0 || n_path > ES_SPEC_MAX_PATH) n_path = 0;
        if (n_tok < 0 || n_tok > ES_SPEC_MAX_PATH + 1) n_tok = 0;
    } else if (ev->type == ES_EV_TOKENS && ev->tokens && ev->n_tokens > 0) {
        n_tok = ev->n_tokens;
        tok = ev->tokens;
    }
    const bool has_lp = (ev->type == ES_EV_TOKENS || ev->type == ES_EV_VERDICT) && ev->logprobs && n_tok > 0;
    es_sev *e = malloc(sizeof *e + ((size_t)n_path + (size_t)n_tok) * sizeof(int32_t) +
                       (has_lp ? (size_t)n_tok * sizeof(es_token_logprob) : 0));
    if (!e) return;
    e->has_lp = has_lp;
    e->node.key = ev->session;
    e->type = ev->type;
    e->round = ev->round;
    e->stop = ev->stop;
    e->n_generated = ev->n_generated;
    e->queue_us = ev->queue_us;
    e->verify_us = ev->verify_us;
    e->suggested_budget = ev->suggested_budget;
    /* the scheduler speaks es_status; the wire and the HTTP status are derived here */
    e->code = ev->type != ES_EV_ERROR                                  ? 0
              : (ev->code == ES_ERR_FULL || ev->code == ES_ERR_RANGE) ? ES_PERR_CONTEXT
              : ev->code == ES_ERR_INVALID_ARG                        ? ES_PERR_INVALID /* e.g. output that leaves the grammar */
                                                                      : ES_PERR_INTERNAL;
    e->exit_layer = ev->exit_layer;
    e->msg[0] = 0;
    if (ev->msg) snprintf(e->msg, sizeof e->msg, "%s", ev->msg);
    e->n_path = n_path;
    e->n_tokens = n_tok;
    if (n_path) memcpy(e->data, path, (size_t)n_path * sizeof(int32_t));
    if (n_tok) memcpy(e->data + n_path, tok, (size_t)n_tok * sizeof(int32_t));
    if (has_lp) memcpy((void *)sev_logprobs(e), ev->logprobs, (size_t)n_tok * sizeof(es_token_logprob));

    es_wakeq_push(&s->q, &e->node);
    es_sev *done = stopped ? calloc(1, sizeof *done) : NULL;
    if (done) { /* the session closed on its stop string: its end, should the front end not get there itself */
        done->node.key = ev->session;
        done->type = ES_EV_DONE;
        done->stop = ES_STOP_EOS;
        done->n_generated = ev->n_generated;
        es_wakeq_push(&s->q, &done->node);
    }
}

/* Drops every queued event of one session (after es_sched_close nothing new can arrive for it). */
static void purge_session_events(es_server *s, uint64_t key) { es_wakeq_purge(&s->q, key, free); }

static void *compute_main(void *arg) {
    es_server *s = arg;
    es_err err = {{0}};
    es_status st = es_sched_run(s->sched, &err);
    if (st != ES_OK) {
        pthread_mutex_lock(&s->mu);
        s->compute_status = st;
        snprintf(s->compute_msg, sizeof s->compute_msg, "%s", err.msg);
        pthread_mutex_unlock(&s->mu);
        es_wakeq_wake(&s->q);
    }
    return NULL;
}

/* ---- statistics ---- */

static void stat_add(es_server *s, int64_t *field, int64_t v) {
    pthread_mutex_lock(&s->stats_mu);
    *field += v;
    pthread_mutex_unlock(&s->stats_mu);
}

/* ---- connection table ---- */

static es_conn *conn_find(es_server *s, uint32_t id) {
    for (es_conn *c = s->buckets[id & (ES_SERVER_CONN_BUCKETS - 1)]; c; c = c->hnext)
        if (c->id == id) return c;
    return NULL;
}

static void conn_unlink(es_server *s, es_conn *c) {
    es_conn **pp = &s->buckets[c->id & (ES_SERVER_CONN_BUCKETS - 1)];
    while (*pp && *pp != c) pp = &(*pp)->hnext;
    if (*pp) *pp = c->hnext;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = c->hnext = NULL;
    s->n_conns--;
}

static int sess_find(const es_conn *c, uint32_t sid) {
    for (int i = 0; i < c->n_sess; i++)
        if (c->sess[i].id == sid) return i;
    return -1;
}

static void sess_remove(es_conn *c, int i) {
    c->sess[i] = c->sess[c->n_sess - 1];
    c->n_sess--;
}

/* Ends session i of a connection now: the scheduler frees it and nothing queued for it is sent. */
static void conn_end_session(es_conn *c, int i) {
    uint64_t key = sess_key(c, c->sess[i].id);
    es_sched_close(c->srv->sched, key);
    purge_session_events(c->srv, key);
    sess_remove(c, i);
    es_http_kick(c->srv->http); /* a queued HTTP request may take its place */
}

/* Ends every session of a connection in the scheduler at once (KV blocks free before the next step). */
static void conn_close_sessions(es_conn *c) {
    es_server *s = c->srv;
    for (int i = 0; i < c->n_sess; i++) {
        uint64_t key = sess_key(c, c->sess[i].id);
        es_sched_close(s->sched, key);
        purge_session_events(s, key);
    }
    if (c->n_sess > 0) es_http_kick(s->http);
    c->n_sess = 0;
}

static void conn_free(es_conn *c) {
    struct ssl_st *ssl = c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
    if (ssl && SSL_is_init_finished(ssl)) { /* close_notify, one non-blocking attempt; freed with the bufferevent */
        (void)SSL_shutdown(ssl);
        ERR_clear_error(); /* nothing of it may linger on this thread's queue for the next connection */
    }
    if (c->bev) bufferevent_free(c->bev);
    free(c->sess);
    free(c);
}

/* Unlinks a connection at once (its sessions closed, events for it ignored from now on) and frees
 * it from a deferred callback. Safe to call from any of its own callbacks. */
static void conn_drop(es_conn *c, const char *why) {
    if (c->state == CONN_DEAD) return;
    es_server *s = c->srv;
    conn_close_sessions(c);
    conn_unlink(s, c);
    c->state = CONN_DEAD;
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    c->next = s->dead;
    s->dead = c;
    event_active(s->reap_ev, 0, 0);
    stat_add(s, &s->st.connections_open, -1);
    slog(s, 3, "connection %u (%s) closed: %s", c->id, c->peer, why);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_server *s = arg;
    while (s->dead) {
        es_conn *c = s->dead;
        s->dead = c->next;
        conn_free(c);
    }
    if (s->shutting_down && s->n_conns == 0) event_base_loopbreak(s->base);
}

/* ---- output ---- */

/* Appends an encoded frame to the connection's output; a consumer that lets more than max_output
 * bytes pile up is dropped (it would otherwise hold server memory without bound). */
static void conn_write(es_conn *c, const es_wbuf *w) {
    if (c->state == CONN_DEAD) return;
    es_server *s = c->srv;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_add(out, w->data, w->len) != 0) {
        conn_drop(c, "out of memory for output");
        return;
    }
    c->t_active = es_now_s();
    pthread_mutex_lock(&s->stats_mu);
    s->st.frames_out++;
    s->st.bytes_out += (int64_t)w->len;
    pthread_mutex_unlock(&s->stats_mu);
    if (evbuffer_get_length(out) > s->max_output) {
        slog(s, 1, "connection %u (%s): dropped, more than %zu bytes of output unread (slow consumer)", c->id, c->peer,
             s->max_output);
        conn_drop(c, "slow consumer");
    }
}

static void wbuf_begin(es_server *s, es_wbuf *w) { es_wbuf_init(w, s->obuf, ES_SERVER_OBUF_CAP); }

static void send_encoded(es_conn *c, es_wbuf *w, es_status st, const es_err *err, const char *what) {
    if (st != ES_OK) {
        slog(c->srv, 0, "connection %u: cannot encode %s: %s", c->id, what, err->msg);
        return;
    }
    conn_write(c, w);
}

static bool is_protocol_error(int code) {
    return code == ES_PERR_MALFORMED || code == ES_PERR_TOO_LARGE || code == ES_PERR_STATE ||
           code == ES_PERR_NO_SESSION || code == ES_PERR_INVALID;
}

static void send_error(es_conn *c, uint32_t sid, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void send_error(es_conn *c, uint32_t sid, int code, const char *fmt, ...) {
    es_server *s = c->srv;
    es_msg_error m;
    memset(&m, 0, sizeof m);
    m.code = (uint16_t)code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.msg, sizeof m.msg, fmt, ap);
    va_end(ap);
    if (is_protocol_error(code)) stat_add(s, &s->st.protocol_errors, 1);
    slog(s, 3, "connection %u session %u: error %s: %s", c->id, sid, es_proto_err_name(code), m.msg);
    es_wbuf w;
    wbuf_begin(s, &w);
    es_err err = {{0}};
    send_encoded(c, &w, es_proto_put_error(&w, sid, &m, &err), &err, "ERROR");
}

static void closing_write_cb(struct bufferevent *bev, void *arg) {
    es_conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) conn_drop(c, "closed after error");
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* Stops reading, closes the sessions, and drops the connection once what was queued for it has been
 * written (or after a grace period, enforced by tick_cb). */
static void conn_close_after_flush(es_conn *c) {
    if (c->state == CONN_DEAD || c->state == CONN_CLOSING) return;
    conn_close_sessions(c);
    c->state = CONN_CLOSING;
    c->t_closing = es_now_s();
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, closing_write_cb, conn_event_cb, c);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) conn_drop(c, "closed");
}

/* A connection-level error that ends the connection: ERROR (session 0), then close. */
static void conn_fail(es_conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_fail(es_conn *c, int code, const char *fmt, ...) {
    char msg[ES_PROTO_MAX_MSG + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    send_error(c, 0, code, "%s", msg);
    conn_close_after_flush(c);
}

/* An error about one session (docs/PROTOCOL.md, "what an error closes"): the session, if open, ends
 * with it, so a client never has to guess whether a session it got an ERROR for still holds memory. */
static void session_error(es_conn *c, uint32_t sid, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void session_error(es_conn *c, uint32_t sid, int code, const char *fmt, ...) {
    char msg[ES_PROTO_MAX_MSG + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int si = sess_find(c, sid);
    if (si >= 0) conn_end_session(c, si);
    send_error(c, sid, code, "%s", msg);
}

/* ---- events from the scheduler -> frames ---- */

/* An event of an HTTP request's session, to the HTTP front end. */
static void http_deliver(es_server *s, const es_sev *e) {
    if (!s->http) return;
    const uint64_t id = e->node.key & ~SERVER_HTTP_KEY;
    if (e->type == ES_EV_DONE || e->type == ES_EV_ERROR) watch_drop(s, e->node.key); /* its last event */
    switch (e->type) {
    case ES_EV_TOKENS: es_http_on_tokens_lp(s->http, id, e->data, sev_logprobs(e), e->n_tokens, e->n_generated); break;
    case ES_EV_DONE: es_http_on_end(s->http, id, e->stop, e->n_generated, 0, NULL); break;
    case ES_EV_ERROR:
        /* the context was checked at admission: a CONTEXT error now is the KV pool running out, the
           server's condition (503, retry later), not the request's */
        es_http_on_end(s->http, id, ES_STOP_ERROR, e->n_generated, e->code == ES_PERR_CONTEXT ? 503 : 500,
                       e->msg[0] ? e->msg : "session failed");
        break;
    default: break;
    }
}

static void deliver_event(es_server *s, const es_sev *e) {
    if (e->node.key & SERVER_HTTP_KEY) {
        http_deliver(s, e);
        return;
    }
    /* an edge session that ends frees room for a queued HTTP request */
    if (e->type == ES_EV_DONE || e->type == ES_EV_ERROR) es_http_kick(s->http);
    es_conn *c = conn_find(s, (uint32_t)(e->node.key >> 32));
    if (!c || c->state != CONN_READY) return;
    uint32_t sid = (uint32_t)e->node.key;
    int si = sess_find(c, sid);
    if (si < 0) return; /* closed by the client meanwhile */
    if (e->n_generated > c->sess[si].n_generated) c->sess[si].n_generated = e->n_generated;
    c->sess[si].t_active = es_now_s();
    es_wbuf w;
    es_err err = {{0}};
    switch (e->type) {
    case ES_EV_VERDICT: {
        es_msg_verdict m;
        memset(&m, 0, sizeof m);
        m.round = e->round;
        m.stop = (uint8_t)e->stop;
        m.v.n_accepted = e->n_path;
        memcpy(m.v.path, e->data, (size_t)e->n_path * sizeof(int32_t));
        m.v.n_tokens = e->n_tokens;
        memcpy(m.v.tokens, e->data + e->n_path, (size_t)e->n_tokens * sizeof(int32_t));
        m.v.bonus = e->n_tokens > 0 ? m.v.tokens[e->n_tokens - 1] : -1;
        m.queue_us = e->queue_us;
        m.verify_us = e->verify_us;
        m.suggested_budget = e->suggested_budget;
        m.has_lp = e->has_lp;
        if (e->has_lp) memcpy(m.lp, sev_logprobs(e), (size_t)e->n_tokens * sizeof(es_token_logprob));
        wbuf_begin(s, &w);
        send_encoded(c, &w, es_proto_put_verdict(&w, sid, &m, &err), &err, "VERDICT");
        break;
    }
    case ES_EV_EARLY: { /* (only sessions opened with the flag, on a version-2 connection, get these) */
        es_msg_early m;
        memset(&m, 0, sizeof m);
        m.round = e->round;
        m.layer = (uint16_t)(e->exit_layer > 0 && e->exit_layer <= UINT16_MAX ? e->exit_layer : 1);
        m.v.n_accepted = e->n_path;
        memcpy(m.v.path, e->data, (size_t)e->n_path * sizeof(int32_t));
        m.v.n_tokens = e->n_tokens;
        memcpy(m.v.tokens, e->data + e->n_path, (size_t)e->n_tokens * sizeof(int32_t));
        m.v.bonus = e->n_tokens > 0 ? m.v.tokens[e->n_tokens - 1] : -1;
        wbuf_begin(s, &w);
        send_encoded(c, &w, es_proto_put_early(&w, sid, &m, &err), &err, "EARLY");
        break;
    }
    case ES_EV_TOKENS: {
        /* More tokens than one frame holds are split; only the last piece carries the stop reason. */
        const int per_frame = e->has_lp ? ES_PROTO_MAX_LP_TOKENS : ES_PROTO_MAX_TOKENS_FRAME;
        int off = 0;
        do {
            int n = e->n_tokens - off;
            if (n > per_frame) n = per_frame;
            es_msg_tokens m;
            m.n = (uint16_t)n;
            m.tokens = (int32_t *)(e->data + off);
            m.has_lp = e->has_lp;
            m.lp = e->has_lp ? (es_token_logprob *)(sev_logprobs(e) + off) : NULL;
            off += n;
            m.stop = off >= e->n_tokens ? (uint8_t)e->stop : (uint8_t)ES_STOP_NONE;
            wbuf_begin(s, &w);
            send_encoded(c, &w, es_proto_put_tokens(&w, sid, &m, &err), &err, "TOKENS");
        } while (off < e->n_tokens && c->state == CONN_READY);
        break;
    }
    case ES_EV_DONE: {
        es_msg_close m = {.stop = (uint8_t)e->stop, .n_generated = (uint32_t)c->sess[si].n_generated};
        sess_remove(c, si);
        wbuf_begin(s, &w);
        send_encoded(c, &w, es_proto_put_close(&w, sid, &m, &err), &err, "CLOSE");
        break;
    }
    case ES_EV_ERROR:
        sess_remove(c, si);
        send_error(c, sid, e->code ? e->code : ES_PERR_INTERNAL, "%s", e->msg[0] ? e->msg : "session failed");
        break;
    default:
        break;
    }
}

static void begin_shutdown(es_server *s);

static void wake_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_server *s = arg;
    es_wakeq_drain(&s->q);
    es_sev *list = (es_sev *)es_wakeq_pop_all(&s->q);
    pthread_mutex_lock(&s->mu);
    bool stop = s->stop_requested;
    const bool drain = s->drain_requested;
    bool report = s->compute_status != ES_OK && !s->compute_reported;
    if (report) s->compute_reported = true;
    pthread_mutex_unlock(&s->mu);
    if (report) slog(s, 0, "compute thread stopped: %s", s->compute_msg);
    while (list) {
        es_sev *e = list;
        list = (es_sev *)e->node.next;
        if (!s->shutting_down) deliver_event(s, e);
        free(e);
    }
    if (drain && !s->draining) {
        s->draining = true;
        if (s->http) es_http_drain(s->http);
        slog(s, 1, "draining: new sessions are refused, running ones finish");
    }
    if (stop && !s->shutting_down) begin_shutdown(s);
}

/* ---- incoming frames ---- */

static void handle_hello(es_conn *c, const uint8_t *p, uint32_t n) {
    es_server *s = c->srv;
    es_msg_hello h;
    es_err err = {{0}};
    if (es_proto_get_hello(p, n, &h, &err) != ES_OK) {
        stat_add(s, &s->st.connections_refused, 1);
        conn_fail(c, ES_PERR_MALFORMED, "HELLO: %s", err.msg);
        return;
    }
    if (h.version_min > ES_PROTO_LEVEL_MAX || h.version_max < ES_PROTO_LEVEL_MIN) {
        stat_add(s, &s->st.connections_refused, 1);
        conn_fail(c, ES_PERR_VERSION, "no common protocol version: the client speaks %u..%u, the server %d..%d", h.version_min,
                  h.version_max, ES_PROTO_LEVEL_MIN, ES_PROTO_LEVEL_MAX);
        return;
    }
    /* the highest both speak: a version-1 edge never gets a frame it does not know */
    c->level = h.version_max < ES_PROTO_LEVEL_MAX ? h.version_max : ES_PROTO_LEVEL_MAX;
    if (s->keys.n > 0 && !es_keys_match(&s->keys, h.api_key, strnlen(h.api_key, ES_PROTO_MAX_KEY))) {
        /* (constant time over every accepted key: transport/keys.h) */
        pthread_mutex_lock(&s->stats_mu);
        s->st.connections_refused++;
        s->st.auth_failures++;
        pthread_mutex_unlock(&s->stats_mu);
        slog(s, 1, "connection %u (%s): refused, %s api key", c->id, c->peer, h.api_key[0] ? "wrong" : "missing");
        conn_fail(c, ES_PERR_AUTH, "%s api key", h.api_key[0] ? "wrong" : "missing");
        return;
    }
    if (h.has_draft) {
        char msg[ES_PROTO_MAX_MSG + 1];
        int len = 0;
        msg[0] = 0;
#define DIFF(...) \
    if (len < (int)sizeof msg) len += snprintf(msg + len, sizeof msg - (size_t)len, __VA_ARGS__)
        if (h.draft_fingerprint != s->fingerprint)
            DIFF("%stoken fingerprint %016llx (draft) vs %016llx (target)", len ? ", " : "",
                 (unsigned long long)h.draft_fingerprint, (unsigned long long)s->fingerprint);
        if ((int64_t)h.draft_n_vocab != s->tok_n_vocab)
            DIFF("%sn_vocab %u vs %d", len ? ", " : "", h.draft_n_vocab, s->tok_n_vocab);
        if (h.draft_bos != s->bos) DIFF("%sbos %d vs %d", len ? ", " : "", h.draft_bos, s->bos);
        if (h.draft_eos != s->eos) DIFF("%seos %d vs %d", len ? ", " : "", h.draft_eos, s->eos);
#undef DIFF
        if (msg[0]) {
            stat_add(s, &s->st.connections_refused, 1);
            slog(s, 2, "connection %u (%s): refused, draft vocabulary differs: %s", c->id, c->peer, msg);
            conn_fail(c, ES_PERR_VOCAB, "the draft's vocabulary differs from the target's: %s", msg);
            return;
        }
    }
    es_msg_welcome w;
    memset(&w, 0, sizeof w);
    w.version = (uint16_t)c->level;
    char desc[128], name[160];
    es_model_desc(s->p.target, desc, sizeof desc);
    int nl = snprintf(name, sizeof name, "edgespec %s %s", ES_VERSION_STRING, desc);
    if (nl < 0) nl = 0;
    if (nl > ES_PROTO_MAX_NAME) nl = ES_PROTO_MAX_NAME;
    memcpy(w.name, name, (size_t)nl);
    w.name[nl] = 0;
    w.target_fingerprint = s->fingerprint;
    w.n_vocab = (uint32_t)s->tok_n_vocab;
    w.bos = s->bos;
    w.eos = s->eos;
    w.n_ctx = (uint32_t)s->n_ctx;
    w.max_tree_nodes = (uint32_t)s->max_tree_nodes;
    w.max_new_tokens = (uint32_t)s->max_new_tokens;
    w.max_payload = s->p.max_payload;
    w.rules = (1u << ES_ACCEPT_GREEDY) | (1u << ES_ACCEPT_MATCH) | (1u << ES_ACCEPT_REJECTION);
    w.has_server_draft = s->p.sched.draft != NULL;
    es_wbuf wb;
    wbuf_begin(s, &wb);
    es_status st = es_proto_put_welcome(&wb, &w, &err);
    if (st != ES_OK) {
        conn_fail(c, ES_PERR_INTERNAL, "cannot encode WELCOME: %s", err.msg);
        return;
    }
    c->state = CONN_READY;
    conn_write(c, &wb);
    slog(s, 3, "connection %u (%s): handshake done (client \"%s\", %s)", c->id, c->peer, h.name,
         h.has_draft ? "with a draft" : "no draft");
}

/* OPEN's decoding and the wire's own rules about it (session ids, protocol levels, text prompts of EDGE
 * sessions); everything about the session itself (mode, rule, sampling values, stop and prompt tokens,
 * sizes) is validated once, by es_sched_open, whose status send_open_refusal maps to the wire's code.
 * The prompt's ids land in s->prompt_buf. False after an ERROR went out. */
static bool open_decode(es_conn *c, uint32_t sid, const uint8_t *p, uint32_t n, es_msg_open *m) {
    es_server *s = c->srv;
    if (sid != 0 && sess_find(c, sid) >= 0) {
        send_error(c, sid, ES_PERR_STATE, "session %u is already open on this connection", sid);
        return false;
    }
    memset(m, 0, sizeof *m);
    m->prompt = s->prompt_buf;
    es_err err = {{0}};
    es_status st = es_proto_get_open(p, n, m, (uint32_t)s->max_prompt, &err);
    if (st == ES_ERR_RANGE) {
        send_error(c, sid, ES_PERR_CONTEXT, "prompt longer than the server's limit of %d tokens", s->max_prompt);
        return false;
    }
    if (st != ES_OK) {
        send_error(c, sid, ES_PERR_MALFORMED, "OPEN: %s", err.msg);
        return false;
    }
    if (sid == 0) {
        send_error(c, sid, ES_PERR_INVALID, "session id 0 is reserved for the connection");
        return false;
    }
    if ((m->flags & ES_OPEN_EARLY_EXIT) && (c->level < ES_PROTO_LEVEL_EARLY || m->mode != ES_MODE_EDGE)) {
        send_error(c, sid, ES_PERR_INVALID, "early exits are for EDGE sessions on protocol version %d or later (this "
                                            "connection: %d)", ES_PROTO_LEVEL_EARLY, c->level);
        return false;
    }
    if ((m->flags & (ES_OPEN_LOGPROBS | ES_OPEN_GRAMMAR)) && c->level < ES_PROTO_LEVEL_API) {
        send_error(c, sid, ES_PERR_INVALID, "logprobs and constrained decoding need protocol version %d or later (this "
                                            "connection: %d)", ES_PROTO_LEVEL_API, c->level);
        return false;
    }
    if ((m->flags & ES_OPEN_PROMPT_TEXT) && m->mode == ES_MODE_EDGE) {
        /* the edge drafts from token ids, and its draft and the target must agree on them: a text
           prompt is for AR and SERVER_SPEC sessions (PROTOCOL.md, OPEN) */
        send_error(c, sid, ES_PERR_INVALID, "an EDGE session sends its prompt as token ids (text prompts are for AR and "
                                            "SERVER_SPEC sessions)");
        return false;
    }
    return true;
}

/* The prompt's length in s->prompt_buf: OPEN's ids, or its text tokenised here. False after an ERROR
 * went out. */
static bool open_prompt(es_conn *c, uint32_t sid, const es_msg_open *m, int *n_prompt) {
    es_server *s = c->srv;
    if (!(m->flags & ES_OPEN_PROMPT_TEXT)) {
        *n_prompt = (int)m->n_prompt;
        return true;
    }
    es_err err = {{0}};
    es_status st = es_tokenize(s->p.target_tok, m->text ? m->text : "", m->text_len, true, false, s->prompt_buf, s->max_prompt,
                               n_prompt, &err);
    if (st != ES_OK) {
        send_error(c, sid, ES_PERR_INVALID, "cannot tokenise the prompt: %s", err.msg);
        return false;
    }
    if (*n_prompt > s->max_prompt) {
        send_error(c, sid, ES_PERR_CONTEXT, "prompt of %d tokens is longer than the server's limit of %d", *n_prompt,
                   s->max_prompt);
        return false;
    }
    return true;
}

/* The scheduler's session for OPEN m, as session sid of connection c. */
static es_sched_session_params open_session_params(es_conn *c, uint32_t sid, const es_msg_open *m) {
    es_sched_session_params sp;
    memset(&sp, 0, sizeof sp);
    sp.id = sess_key(c, sid);
    sp.mode = m->mode;
    sp.rule = m->rule;
    sp.sampling = es_sampler_default_params();
    sp.sampling.temperature = m->temperature;
    sp.sampling.top_k = m->top_k;
    sp.sampling.top_p = m->top_p;
    sp.sampling.min_p = m->min_p;
    sp.sampling.repeat_penalty = m->repeat_penalty;
    sp.sampling.repeat_last_n = m->repeat_last_n;
    sp.sampling.presence_penalty = m->presence_penalty;
    sp.sampling.frequency_penalty = m->frequency_penalty;
    sp.sampling.n_bias = m->n_bias;
    memcpy(sp.sampling.bias, m->bias, (size_t)m->n_bias * sizeof m->bias[0]);
    sp.sampling.seed = m->seed;
    sp.max_tokens = m->max_tokens > (uint32_t)INT32_MAX ? INT32_MAX : (int)m->max_tokens;
    sp.stop = m->stop;
    sp.n_stop = m->n_stop;
    sp.early_exit = (m->flags & ES_OPEN_EARLY_EXIT) != 0; /* no EARLY without exit heads: the edge just waits for verdicts */
    sp.logprobs = (m->flags & ES_OPEN_LOGPROBS) != 0;
    sp.top_logprobs = m->top_logprobs;
    return sp;
}

/* OPEN's grammar compiled here (the scheduler copies it at open; the caller frees it): *g NULL when
 * none was asked. False after an ERROR went out (a schema outside what the grammar enforces is refused
 * with its reason, never ignored). */
static bool open_grammar(es_conn *c, uint32_t sid, const es_msg_open *m, es_grammar **g) {
    *g = NULL;
    if (!(m->flags & ES_OPEN_GRAMMAR)) return true;
    es_err err = {{0}};
    const es_status st = m->grammar_kind == ES_PROTO_GRAMMAR_JSON_OBJECT ? es_grammar_json_object(g, &err)
                                                                         : es_grammar_from_schema(m->schema, m->schema_len, g, &err);
    if (st == ES_OK) return true;
    send_error(c, sid, st == ES_ERR_NOMEM ? ES_PERR_BUSY : ES_PERR_INVALID, "response format: %s", err.msg);
    return false;
}

/* Room in c's session list for one more; false after a BUSY went out. */
static bool sess_reserve(es_conn *c, uint32_t sid) {
    if (c->n_sess < c->cap_sess) return true;
    int cap = c->cap_sess ? c->cap_sess * 2 : 4;
    es_conn_sess *ns = realloc(c->sess, (size_t)cap * sizeof *ns);
    if (!ns) {
        send_error(c, sid, ES_PERR_BUSY, "out of memory");
        return false;
    }
    c->sess = ns;
    c->cap_sess = cap;
    return true;
}

/* es_sched_open's refusal as the wire's ERROR code. */
static void send_open_refusal(es_conn *c, uint32_t sid, es_status st, const es_err *err) {
    switch (st) {
    case ES_ERR_BUSY:
    case ES_ERR_FULL: send_error(c, sid, ES_PERR_BUSY, "%s", err->msg[0] ? err->msg : "server busy"); return;
    case ES_ERR_RANGE: send_error(c, sid, ES_PERR_CONTEXT, "%s", err->msg); return;
    case ES_ERR_INVALID_ARG: send_error(c, sid, ES_PERR_INVALID, "%s", err->msg); return;
    case ES_ERR_UNSUPPORTED: send_error(c, sid, ES_PERR_UNSUPPORTED, "%s", err->msg); return;
    default: send_error(c, sid, ES_PERR_INTERNAL, "%s", err->msg); return;
    }
}

/* OPEN: decoded and checked, its prompt made, the session opened in the scheduler, OPENED sent. */
static void handle_open(es_conn *c, uint32_t sid, const uint8_t *p, uint32_t n) {
    if (c->srv->draining) { /* SHUTDOWN is recoverable: the edge reconnects (through a balancer, elsewhere) */
        send_error(c, sid, ES_PERR_SHUTDOWN, "this server is draining: open the session on another replica");
        return;
    }
    es_server *s = c->srv;
    es_msg_open m;
    int n_prompt = 0;
    es_grammar *grammar = NULL;
    if (!open_decode(c, sid, p, n, &m) || !open_prompt(c, sid, &m, &n_prompt) || !open_grammar(c, sid, &m, &grammar)) return;
    es_sched_session_params sp = open_session_params(c, sid, &m);
    sp.grammar = grammar;
    sp.grammar_done = grammar ? (int)m.grammar_done : 0;
    if (!sess_reserve(c, sid)) {
        es_grammar_free(grammar);
        return;
    }
    int granted = 0;
    es_err err = {{0}};
    es_status st = es_sched_open(s->sched, &sp, s->prompt_buf, n_prompt, &granted, &err);
    es_grammar_free(grammar); /* the scheduler keeps its own copy */
    if (st != ES_OK) {
        send_open_refusal(c, sid, st, &err);
        return;
    }
    c->sess[c->n_sess].id = sid;
    c->sess[c->n_sess].n_generated = 0;
    c->sess[c->n_sess].t_active = es_now_s();
    c->n_sess++;
    es_msg_opened o = {.n_prompt = (uint32_t)n_prompt,
                       .max_tokens = granted > 0 ? (uint32_t)granted : m.max_tokens,
                       .n_ctx = (uint32_t)s->n_ctx};
    es_wbuf w;
    wbuf_begin(s, &w);
    send_encoded(c, &w, es_proto_put_opened(&w, sid, &o, &err), &err, "OPENED");
    slog(s, 3, "connection %u session %u: opened (mode %u, %d prompt tokens, %d max)", c->id, sid, m.mode, n_prompt,
         (int)o.max_tokens);
}

static void handle_verify(es_conn *c, uint32_t sid, const uint8_t *p, uint32_t n) {
    es_server *s = c->srv;
    es_msg_verify m = {.round = 0, .tree = s->tree};
    es_err err = {{0}};
    es_status st = es_proto_get_verify(p, n, &m, s->max_tree_nodes, &err);
    if (st == ES_ERR_RANGE) {
        session_error(c, sid, ES_PERR_INVALID, "tree larger than the server's limit of %d nodes", s->max_tree_nodes);
        return;
    }
    if (st != ES_OK) {
        session_error(c, sid, ES_PERR_MALFORMED, "VERIFY: %s", err.msg);
        return;
    }
    if (m.drafted != ES_TREE_FRESH && c->level < ES_PROTO_LEVEL_BET) {
        session_error(c, sid, ES_PERR_MALFORMED, "VERIFY: drafted %u is for protocol version %d or later (this connection: %d)",
                      m.drafted, ES_PROTO_LEVEL_BET, c->level);
        return;
    }
    int si = sess_find(c, sid);
    if (si < 0) {
        send_error(c, sid, ES_PERR_NO_SESSION, "no session %u on this connection", sid);
        return;
    }
    st = es_sched_verify(s->sched, sess_key(c, sid), m.round, s->tree, &err);
    switch (st) {
    case ES_OK:
        c->sess[si].t_active = es_now_s();
        pthread_mutex_lock(&s->stats_mu);
        s->st.trees[m.drafted]++; /* a round the scheduler took: the counts sum to the edge rounds */
        pthread_mutex_unlock(&s->stats_mu);
        break;
    case ES_ERR_PROTOCOL: session_error(c, sid, ES_PERR_STATE, "%s", err.msg); break;
    case ES_ERR_FORMAT:
    case ES_ERR_RANGE: session_error(c, sid, ES_PERR_INVALID, "%s", err.msg); break;
    /* The scheduler ended it meanwhile (its DONE / ERROR is queued): the client hears no_session. */
    case ES_ERR_INVALID_ARG: session_error(c, sid, ES_PERR_NO_SESSION, "%s", err.msg); break;
    case ES_ERR_BUSY:
    case ES_ERR_FULL: session_error(c, sid, ES_PERR_BUSY, "%s", err.msg); break;
    default: session_error(c, sid, ES_PERR_INTERNAL, "%s", err.msg); break;
    }
}

static void handle_close(es_conn *c, uint32_t sid, const uint8_t *p, uint32_t n) {
    es_server *s = c->srv;
    es_msg_close m;
    es_err err = {{0}};
    if (es_proto_get_close(p, n, &m, &err) != ES_OK) {
        session_error(c, sid, ES_PERR_MALFORMED, "CLOSE: %s", err.msg);
        return;
    }
    int si = sess_find(c, sid);
    if (si < 0) return; /* it ended already (its CLOSE / ERROR crossed this one): nothing to say */
    /* Acknowledge, so the client knows nothing more will come for this id and may reuse it. */
    es_msg_close ack = {.stop = ES_STOP_CLIENT, .n_generated = (uint32_t)c->sess[si].n_generated};
    conn_end_session(c, si);
    es_wbuf w;
    wbuf_begin(s, &w);
    send_encoded(c, &w, es_proto_put_close(&w, sid, &ack, &err), &err, "CLOSE");
}

static void handle_frame(es_conn *c, const es_frame_header *h, const uint8_t *p) {
    es_server *s = c->srv;
    es_err err = {{0}};
    if (c->state == CONN_HANDSHAKE) {
        if (h->type != ES_FRAME_HELLO) {
            stat_add(s, &s->st.connections_refused, 1);
            conn_fail(c, ES_PERR_STATE, "expected HELLO first, got %s", es_frame_type_name(h->type));
            return;
        }
        handle_hello(c, p, h->len);
        return;
    }
    switch (h->type) {
    case ES_FRAME_HELLO: send_error(c, 0, ES_PERR_STATE, "HELLO twice on one connection"); break;
    case ES_FRAME_OPEN: handle_open(c, h->session, p, h->len); break;
    case ES_FRAME_VERIFY: handle_verify(c, h->session, p, h->len); break;
    case ES_FRAME_CLOSE: handle_close(c, h->session, p, h->len); break;
    case ES_FRAME_PING: {
        es_msg_ping m;
        if (es_proto_get_ping(p, h->len, &m, &err) != ES_OK) {
            conn_fail(c, ES_PERR_MALFORMED, "PING: %s", err.msg);
            break;
        }
        es_wbuf w;
        wbuf_begin(s, &w);
        send_encoded(c, &w, es_proto_put_ping(&w, ES_FRAME_PONG, &m, &err), &err, "PONG");
        break;
    }
    case ES_FRAME_PONG: break;
    case ES_FRAME_ERROR: {
        /* A client reporting a failure of one of its sessions ends that session; of the connection, ends it. */
        es_msg_error m;
        if (es_proto_get_error(p, h->len, &m, &err) != ES_OK) {
            if (h->session == 0) conn_fail(c, ES_PERR_MALFORMED, "ERROR: %s", err.msg);
            else session_error(c, h->session, ES_PERR_MALFORMED, "ERROR: %s", err.msg);
            break;
        }
        slog(s, 2, "connection %u session %u: client error %s: %s", c->id, h->session, es_proto_err_name(m.code), m.msg);
        if (h->session == 0) {
            conn_close_after_flush(c);
        } else {
            int si = sess_find(c, h->session);
            if (si >= 0) conn_end_session(c, si);
        }
        break;
    }
    default:
        if (h->session == 0) send_error(c, 0, ES_PERR_STATE, "%s is not a frame a client sends", es_frame_type_name(h->type));
        else session_error(c, h->session, ES_PERR_STATE, "%s is not a frame a client sends", es_frame_type_name(h->type));
        break;
    }
}

/* Takes every complete frame off the input. A header that breaks framing ends the connection; a
 * session frame whose payload does not decode ends that session only (framing is intact). */
static void conn_read_cb(struct bufferevent *bev, void *arg) {
    es_conn *c = arg;
    es_server *s = c->srv;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (c->state == CONN_HANDSHAKE || c->state == CONN_READY) {
        size_t avail = evbuffer_get_length(in), frame_len = 0;
        if (avail < ES_PROTO_HEADER_SIZE) break;
        uint8_t hb[ES_PROTO_HEADER_SIZE];
        evbuffer_copyout(in, hb, sizeof hb);
        es_frame_header h;
        memset(&h, 0, sizeof h);
        es_err err = {{0}};
        es_status st = es_proto_frame_next(hb, avail, s->p.max_payload, &h, &frame_len, &err);
        if (st != ES_OK) {
            evbuffer_drain(in, avail);
            if (c->state == CONN_HANDSHAKE) stat_add(s, &s->st.connections_refused, 1);
            if (h.version != ES_PROTO_VERSION)
                conn_fail(c, ES_PERR_VERSION, "frame version %u; this server speaks version %d", h.version,
                          ES_PROTO_VERSION);
            else if (st == ES_ERR_RANGE)
                conn_fail(c, ES_PERR_TOO_LARGE, "payload of %u bytes above the limit of %u", h.len, s->p.max_payload);
            else
                conn_fail(c, ES_PERR_MALFORMED, "bad frame header: %s", err.msg);
            break;
        }
        if (frame_len == 0) break; /* wait for the whole payload */
        evbuffer_drain(in, ES_PROTO_HEADER_SIZE);
        static const uint8_t empty[1] = {0};
        const uint8_t *payload = h.len ? evbuffer_pullup(in, (ev_ssize_t)h.len) : empty;
        if (!payload) {
            conn_drop(c, "out of memory for input");
            break;
        }
        c->t_active = es_now_s();
        pthread_mutex_lock(&s->stats_mu);
        s->st.frames_in++;
        s->st.bytes_in += ES_PROTO_HEADER_SIZE + (int64_t)h.len;
        pthread_mutex_unlock(&s->stats_mu);
        handle_frame(c, &h, payload);
        if (c->state != CONN_DEAD) evbuffer_drain(in, h.len);
    }
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg) {
    (void)bev;
    es_conn *c = arg;
    /* EOF: the peer sends nothing more, so its sessions end now; what is already queued for it is
     * still written (a client may half-close after its last frame). An error: nothing can be written. */
    if (what & BEV_EVENT_ERROR) conn_drop(c, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    else if (what & BEV_EVENT_EOF) {
        if (c->state == CONN_CLOSING) conn_drop(c, "peer closed");
        else conn_close_after_flush(c);
    }
}

/* ---- accepting ---- */

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg) {
    (void)l;
    (void)salen;
    es_server *s = arg;
    if (s->shutting_down) {
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    es_conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = c ? es_accepted_bev(s->base, fd, s->p.tls, &s->tls_failures) : NULL;
    if (!bev) {
        free(c);
        evutil_closesocket(fd);
        slog(s, 0, "out of memory accepting a connection");
        return;
    }
    c->srv = s;
    c->bev = bev;
    if (++s->next_conn_id >= 0x80000000u) s->next_conn_id = 1; /* the key's top bit marks HTTP sessions */
    c->id = s->next_conn_id;
    c->state = CONN_HANDSHAKE;
    c->t_open = c->t_active = es_now_s();
    char addr[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
        port = ntohs(in->sin_port);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
        port = ntohs(in6->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", addr, port);
    es_conn **b = &s->buckets[c->id & (ES_SERVER_CONN_BUCKETS - 1)];
    c->hnext = *b;
    *b = c;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    pthread_mutex_lock(&s->stats_mu);
    s->st.connections_total++;
    s->st.connections_open++;
    pthread_mutex_unlock(&s->stats_mu);
    bufferevent_setcb(bev, conn_read_cb, NULL, conn_event_cb, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    slog(s, 3, "connection %u from %s", c->id, c->peer);
    if (s->n_conns > s->max_connections) {
        stat_add(s, &s->st.connections_refused, 1);
        conn_fail(c, ES_PERR_BUSY, "too many connections (limit %d)", s->max_connections);
    }
}

static void relisten_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_server *s = arg;
    if (s->listener && !s->shutting_down) evconnlistener_enable(s->listener);
}

/* Out of descriptors: pause accepting for 100 ms instead of spinning on a listener that stays ready,
 * and say so at most once per 10 s (a flood of identical lines would fill the operator's disk). */
static void accept_error_cb(struct evconnlistener *l, void *arg) {
    es_server *s = arg;
    int e = EVUTIL_SOCKET_ERROR();
    s->accept_fails++;
    const double now = es_now_s();
    if (s->accept_logged_at == 0 || now - s->accept_logged_at >= 10) {
        slog(s, 1, "accept failed: %s (%lld failures in all; pausing 100 ms at a time while descriptors run out)",
             evutil_socket_error_to_string(e), (long long)s->accept_fails);
        s->accept_logged_at = now;
    }
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        evconnlistener_disable(l);
        struct timeval tv = {0, 100000};
        event_add(s->relisten_ev, &tv);
    }
}

/* ---- timers and shutdown ---- */

/* Handshake and idle timeouts, and closing connections that never took their last frames. */
static void http_snapshot(es_server *s) {
    if (!s->http) return;
    es_http_stats hs;
    es_http_get_stats(s->http, &hs);
    pthread_mutex_lock(&s->stats_mu);
    s->st.http = hs;
    pthread_mutex_unlock(&s->stats_mu);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_server *s = arg;
    double t = es_now_s();
    http_snapshot(s);
    es_conn *next;
    for (es_conn *c = s->conns; c; c = next) {
        next = c->next;
        if (c->state == CONN_HANDSHAKE && s->p.handshake_timeout_s > 0 && t - c->t_open > s->p.handshake_timeout_s) {
            stat_add(s, &s->st.connections_refused, 1);
            conn_fail(c, ES_PERR_TIMEOUT, "no HELLO within %.3g s", s->p.handshake_timeout_s);
        } else if (c->state == CONN_READY && s->p.idle_timeout_s > 0 && t - c->t_active > s->p.idle_timeout_s) {
            conn_fail(c, ES_PERR_TIMEOUT, "idle for %.3g s", s->p.idle_timeout_s);
        } else if (c->state == CONN_READY && s->p.idle_timeout_s > 0) {
            /* A session nobody drives holds KV memory: end it even if the connection keeps pinging. */
            for (int i = 0; i < c->n_sess && c->state == CONN_READY;) {
                if (t - c->sess[i].t_active <= s->p.idle_timeout_s) {
                    i++;
                    continue;
                }
                uint32_t sid = c->sess[i].id;
                conn_end_session(c, i);
                send_error(c, sid, ES_PERR_TIMEOUT, "session idle for %.3g s", s->p.idle_timeout_s);
            }
        } else if (c->state == CONN_CLOSING && t - c->t_closing > ES_SERVER_CLOSE_GRACE_S) {
            conn_drop(c, "closing connection did not take its last frames");
        }
    }
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_server *s = arg;
    event_base_loopbreak(s->base);
}

/* Runs on the loop thread: no new connections; every open session is told SHUTDOWN and every
 * connection closes once its output is written (or after a grace period). */
static void begin_shutdown(es_server *s) {
    s->shutting_down = true;
    if (s->listener) {
        evconnlistener_free(s->listener);
        s->listener = NULL;
    }
    const int http_open = s->http ? es_http_shutdown(s->http) : 0;
    http_snapshot(s);
    es_conn *next;
    for (es_conn *c = s->conns; c; c = next) {
        next = c->next;
        if (c->state == CONN_READY) {
            for (int i = 0; i < c->n_sess && c->state == CONN_READY; i++)
                send_error(c, c->sess[i].id, ES_PERR_SHUTDOWN, "server is stopping");
        }
        if (c->state == CONN_READY || c->state == CONN_HANDSHAKE) conn_fail(c, ES_PERR_SHUTDOWN, "server is stopping");
    }
    if (s->n_conns == 0 && http_open == 0) {
        event_base_loopbreak(s->base);
        return;
    }
    /* (HTTP replies just sent get the grace period to leave too) */
    struct timeval tv = {(time_t)ES_SERVER_SHUTDOWN_GRACE_S,
                         (suseconds_t)((ES_SERVER_SHUTDOWN_GRACE_S - (double)(time_t)ES_SERVER_SHUTDOWN_GRACE_S) * 1e6)};
    event_add(s->deadline_ev, &tv);
}

static void *loop_main(void *arg) {
    es_server *s = arg;
    es_thread_block_sigpipe();
    event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* ---- start / free ---- */

static es_status open_listener(es_server *s, es_err *err) {
    int fd = -1;
    es_status st = es_listen_tcp(s->host, s->p.port, NULL, &fd, &s->port, err);
    if (st != ES_OK) return st;
    s->listener = evconnlistener_new(s->base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (!s->listener) {
        close(fd);
        return es_fail(err, ES_ERR_IO, "cannot listen on %s:%d: libevent refused the socket", s->host, s->p.port);
    }
    evconnlistener_set_error_cb(s->listener, accept_error_cb);
    return ES_OK;
}

/* ---- the HTTP API's backend: HTTP requests are scheduler sessions ---- */

static es_status http_start(void *ud, const es_http_gen *g, int *granted, es_err *err) {
    es_server *s = ud;
    es_sched_session_params sp;
    memset(&sp, 0, sizeof sp);
    sp.id = SERVER_HTTP_KEY | g->id;
    sp.mode = s->p.sched.draft && s->p.http_server_spec ? ES_MODE_SERVER_SPEC : ES_MODE_AR;
    /* server-side speculation keeps the target's output: greedy at temperature 0, else the match rule */
    sp.rule = g->sampling.temperature == 0 ? ES_ACCEPT_GREEDY : ES_ACCEPT_MATCH;
    sp.sampling = g->sampling;
    sp.max_tokens = g->max_tokens;
    sp.stop = g->stop;
    sp.n_stop = g->n_stop;
    sp.logprobs = g->logprobs;
    sp.top_logprobs = g->top_logprobs;
    sp.grammar = g->grammar;
    /* the watch is in place before the first event can come; without memory for it, the front end
       still cuts the text (the session only runs on to max_tokens) */
    swatch *x = g->n_stop_strings > 0 ? calloc(1, sizeof *x) : NULL;
    if (x && !(x->w = es_stopwatch_new(s->p.target_tok, g->prompt[g->n_prompt - 1], g->stop_strings, g->n_stop_strings,
                                       g->skip, g->n_skip))) {
        free(x);
        x = NULL;
    }
    if (x) {
        x->key = sp.id;
        pthread_mutex_lock(&s->watch_mu);
        x->next = s->watches;
        s->watches = x;
        pthread_mutex_unlock(&s->watch_mu);
    }
    es_status st = es_sched_open(s->sched, &sp, g->prompt, g->n_prompt, granted, err);
    if (st != ES_OK && x) watch_drop(s, sp.id);
    return st;
}

static void http_cancel(void *ud, uint64_t id) {
    es_server *s = ud;
    const uint64_t key = SERVER_HTTP_KEY | id;
    es_sched_close(s->sched, key);
    purge_session_events(s, key);
    watch_drop(s, key); /* after the close: no callback can be feeding it any more */
}

/* The scheduler's part of /metrics (loop thread: the connection list is ours). */
static void http_metrics(void *ud, es_metrics *m) {
    es_server *s = ud;
    es_sched_stats k;
    es_sched_get_stats(s->sched, &k);
    int edge = 0;
    for (const es_conn *c = s->conns; c; c = c->next) edge += c->n_sess;
    m->edge_active = edge;
    m->prompt_tokens = k.prompt_tokens;
    m->generated_tokens = k.tokens_generated;
    m->refused = k.sessions_refused;
    m->drafts = k.rounds;
    m->draft_tokens = k.drafted;
    m->accepted_tokens = k.accepted;
    m->early_frames = k.exit_layer > 0 ? k.early_frames : -1;
    m->early_agreed = k.early_agreed;
    _Static_assert(ES_METRICS_ACCEPT_DEPTHS == ES_SCHED_ACCEPT_DEPTHS, "one depth count");
    for (int d = 0; d < ES_METRICS_ACCEPT_DEPTHS; d++) m->accept_depth[d] = k.accept_depth[d];
    m->accept_depth_known = true;
    m->kv_blocks_used = k.kv_blocks_used;
    m->kv_blocks_total = k.kv_blocks_total;
    for (int b = 0; b < ES_METRICS_BATCH_BUCKETS; b++) m->batch_buckets[b] = k.batch_hist[b];
    m->batch_count = k.steps;
    m->batch_sum = k.batch_rows;
    m->pass_sessions = k.pass_sessions;
    m->busy_seconds = k.busy_seconds;
    m->idle_seconds = k.idle_seconds;
    m->groups = k.groups;
    m->trial_rate_one = k.trial_rate_one;
    m->trial_rate_split = k.trial_rate_split;
    _Static_assert(ES_SESSION_MODES <= ES_METRICS_KINDS, "a metrics slot per session kind");
    m->n_kinds = ES_SESSION_MODES;
    for (int md = 0; md < ES_SESSION_MODES; md++) {
        m->kinds[md].kind = es_session_mode_name(md);
        m->kinds[md].sessions = k.by_mode[md].sessions_opened;
        m->kinds[md].prompt_tokens = k.by_mode[md].prompt_tokens;
        m->kinds[md].generated_tokens = k.by_mode[md].tokens_generated;
        m->kinds[md].drafts = k.by_mode[md].rounds;
        m->kinds[md].draft_tokens = k.by_mode[md].drafted;
        m->kinds[md].accepted_tokens = k.by_mode[md].accepted;
        m->kinds[md].active = k.by_mode[md].sessions_active;
    }
    m->device_backend = s->p.sched.backend == ES_BACKEND_VULKAN ? "vulkan" : "cpu";
    m->device_index = s->p.sched.backend == ES_BACKEND_VULKAN ? s->p.sched.device : 0;
    m->device_name = s->p.device_name;
    m->device_memory_bytes = s->p.device_memory_bytes;
    m->prefix_hit_tokens = k.prefix_hit_tokens;
    m->prefix_blocks = k.prefix_cached_blocks;
    m->tiered = k.tiered;
    m->device_kv_blocks_used = k.device_kv_blocks_used;
    m->device_kv_blocks_cached = k.device_kv_blocks_cached;
    m->device_kv_blocks_total = k.device_kv_blocks_total;
    m->host_tier_now = k.host_tier_now;
    m->host_tier_sessions = k.host_tier_sessions;
    m->tier_moves_to_host = k.tier_moves_to_host;
    m->tier_moves_to_device = k.tier_moves_to_device;
    m->tier_copies_async = k.tier_copies_async;
    m->tier_copy_waits = k.tier_copy_waits;
    for (int i = 0; i < 3; i++) m->plans[i] = k.plans[i];
    m->prediction_error_p50 = k.prediction_error_p50;
    pthread_mutex_lock(&s->stats_mu);
    m->auth_failures_edge = s->st.auth_failures;
    for (int o = 0; o < ES_TREE_ORIGINS; o++) m->trees[o] = s->st.trees[o];
    m->trees_known = true;
    pthread_mutex_unlock(&s->stats_mu);
    if (s->p.tls) m->tls_failures_edge = atomic_load(&s->tls_failures);
}

static es_status start_http(es_server *s, es_err *err) {
    es_http_params hp = es_http_default_params();
    hp.base = s->base;
    snprintf(s->http_host, sizeof s->http_host, "%s", s->p.http_host && *s->p.http_host ? s->p.http_host : s->host);
    snprintf(s->model_name, sizeof s->model_name, "%s", s->p.model_name && *s->p.model_name ? s->p.model_name : "edgespec");
    hp.host = s->http_host;
    hp.port = s->p.http_port;
    hp.fd = s->p.http_fd;
    hp.api_key = NULL;
    const char **keys = NULL;
    if (s->keys.n > 0) { /* es_http_start copies them */
        if (!(keys = malloc((size_t)s->keys.n * sizeof *keys))) return es_fail(err, ES_ERR_NOMEM, "out of memory");
        for (int i = 0; i < s->keys.n; i++) keys[i] = s->keys.k[i];
    }
    hp.api_keys = keys;
    hp.n_api_keys = s->keys.n;
    hp.tls = s->p.tls;
    hp.model_name = s->model_name;
    hp.owned_by = "edgespec";
    if (s->p.http_max_body) hp.max_body = s->p.http_max_body;
    if (s->p.http_max_connections > 0) hp.max_connections = s->p.http_max_connections;
    if (s->p.http_request_timeout_s != 0) hp.request_timeout_s = s->p.http_request_timeout_s > 0 ? s->p.http_request_timeout_s : 0;
    if (s->p.idle_timeout_s > 0) hp.timeout_s = s->p.idle_timeout_s;
    hp.max_queue = s->p.http_max_queue;
    hp.queue_timeout_s = s->p.http_queue_timeout_s;
    hp.cors = s->p.http_cors;
    hp.tok = s->p.target_tok;
    hp.n_ctx = s->n_ctx;
    hp.chat_family = s->p.chat_family;
    hp.chat_template = s->p.chat_template;
    hp.backend.start = http_start;
    hp.backend.cancel = http_cancel;
    hp.backend.metrics = http_metrics;
    hp.backend.logprobs = true;
    hp.backend.grammar = true;
    hp.backend.ud = s;
    hp.log = s->p.log;
    hp.log_ud = s->p.log_ud;
    es_status st = es_http_start(&hp, &s->http, err);
    free(keys);
    s->p.http_fd = -1; /* taken over (or closed) either way */
    if (st == ES_OK) s->http_port = es_http_port(s->http);
    return st;
}

/* Stops the loop (shutdown with its grace period) and the compute thread; idempotent. */
static void server_stop(es_server *s) {
    if (s->loop_started) {
        pthread_mutex_lock(&s->mu);
        s->stop_requested = true;
        pthread_mutex_unlock(&s->mu);
        es_wakeq_wake(&s->q);
        pthread_join(s->loop_thread, NULL);
        s->loop_started = false;
    }
    if (s->compute_started) {
        /* es_sched_stop may race with es_sched_run starting up; repeat until the thread is gone. */
        for (;;) {
            es_sched_stop(s->sched);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_timedjoin_np(s->compute_thread, NULL, &ts) == 0) break;
        }
        s->compute_started = false;
    }
}

static void server_destroy(es_server *s) {
    if (!s) return;
    server_stop(s);
    while (s->conns) {
        es_conn *c = s->conns;
        s->conns = c->next;
        conn_free(c);
    }
    while (s->dead) {
        es_conn *c = s->dead;
        s->dead = c->next;
        conn_free(c);
    }
    if (s->listener) evconnlistener_free(s->listener);
    es_http_free(s->http); /* before the scheduler: it cancels what is still open */
    s->http = NULL;
    if (s->wake_ev) event_free(s->wake_ev);
    if (s->tick_ev) event_free(s->tick_ev);
    if (s->reap_ev) event_free(s->reap_ev);
    if (s->deadline_ev) event_free(s->deadline_ev);
    if (s->relisten_ev) event_free(s->relisten_ev);
    if (s->base) event_base_free(s->base);
    if (s->sched) es_sched_free(s->sched);
    es_wakeq_free(&s->q, free);
    if (s->mu_ok) pthread_mutex_destroy(&s->mu);
    if (s->stats_mu_ok) pthread_mutex_destroy(&s->stats_mu);
    while (s->watches) {
        swatch *x = s->watches;
        s->watches = x->next;
        es_stopwatch_free(x->w);
        free(x);
    }
    if (s->watch_mu_ok) pthread_mutex_destroy(&s->watch_mu);
    free(s->obuf);
    free(s->prompt_buf);
    free(s->tree);
    es_keys_free(&s->keys);
    free(s);
}

/* The parameters es_server_start refuses outright. */
static es_status check_params(const es_server_params *p, es_err *err) {
    if (!p || !p->target) return es_fail(err, ES_ERR_INVALID_ARG, "es_server_start: a target model is required");
    if (p->port < 0 || p->port > 65535) return es_fail(err, ES_ERR_INVALID_ARG, "port %d outside 0..65535", p->port);
    if (!(p->idle_timeout_s >= 0) || !(p->handshake_timeout_s >= 0))
        return es_fail(err, ES_ERR_INVALID_ARG, "timeouts must be >= 0");
    if (p->max_payload != 0 && p->max_payload < 64)
        return es_fail(err, ES_ERR_INVALID_ARG, "max_payload %u is too small (at least 64 bytes)", p->max_payload);
    if (p->max_prompt_tokens < 0) return es_fail(err, ES_ERR_INVALID_ARG, "max_prompt_tokens must be >= 0");
    return ES_OK;
}

/* s's copy of the parameters (the caller's strings are not kept: the host, the device's name and the
 * keys are copied), its defaults, and what the WELCOME says about the target's tokenizer. */
static es_status take_params(es_server *s, const es_server_params *p, es_err *err) {
    s->p = *p;
    snprintf(s->host, sizeof s->host, "%s", p->host && *p->host ? p->host : "127.0.0.1");
    s->p.host = s->host;
    snprintf(s->device_name, sizeof s->device_name, "%s", p->device_name ? p->device_name : "");
    s->p.device_name = s->device_name[0] ? s->device_name : NULL;
    es_status st = ES_OK;
    if (p->api_key && *p->api_key) st = es_keys_add(&s->keys, p->api_key, err);
    for (int i = 0; st == ES_OK && i < p->n_api_keys; i++) st = es_keys_add(&s->keys, p->api_keys[i], err);
    if (st != ES_OK) return st;
    s->p.api_key = NULL;
    s->p.api_keys = NULL;
    s->p.n_api_keys = 0;
    if (!s->p.target_tok) s->p.target_tok = es_model_tokenizer(p->target);
    if (!s->p.max_payload) s->p.max_payload = ES_PROTO_MAX_PAYLOAD_DEFAULT;
    s->max_output = p->max_output_bytes ? p->max_output_bytes : ES_SERVER_MAX_OUTPUT_DEFAULT;
    s->max_connections = p->max_connections > 0 ? p->max_connections : 1024;
    s->n_vocab = es_model_n_vocab(p->target);
    const es_tokenizer *tok = s->p.target_tok;
    if (!tok) return es_fail(err, ES_ERR_INVALID_ARG, "the target model has no tokenizer");
    s->fingerprint = es_tokenizer_fingerprint(tok);
    s->tok_n_vocab = es_tokenizer_n_vocab(tok);
    s->bos = es_tokenizer_bos(tok);
    s->eos = es_tokenizer_eos(tok);
    return ES_OK;
}

static es_status init_locks(es_server *s, es_err *err) {
    if (pthread_mutex_init(&s->mu, NULL) != 0) return es_fail(err, ES_ERR_NOMEM, "cannot create a mutex");
    s->mu_ok = true;
    if (pthread_mutex_init(&s->stats_mu, NULL) != 0) return es_fail(err, ES_ERR_NOMEM, "cannot create a mutex");
    s->stats_mu_ok = true;
    if (pthread_mutex_init(&s->watch_mu, NULL) != 0) return es_fail(err, ES_ERR_NOMEM, "cannot create a mutex");
    s->watch_mu_ok = true;
    return ES_OK;
}

/* The scheduler, the limits the WELCOME advertises (the scheduler's own, as it resolved them: a tree
 * is clamped to one pass), and the buffers sized from them. */
static es_status init_sched(es_server *s, es_err *err) {
    es_sched_params sp = s->p.sched;
    sp.on_event = on_sched_event;
    sp.ud = s;
    es_status st = es_sched_init(s->p.target, &sp, &s->sched, err);
    if (st != ES_OK) return st;
    es_sched_limits lim;
    es_sched_get_limits(s->sched, &lim);
    s->n_ctx = lim.n_ctx;
    s->max_tree_nodes = lim.max_tree_nodes;
    s->max_new_tokens = lim.max_new_tokens;
    s->max_prompt = s->p.max_prompt_tokens > 0 ? s->p.max_prompt_tokens : s->n_ctx - 1;
    if (s->max_prompt < 1) s->max_prompt = 1;
    s->obuf = malloc(ES_SERVER_OBUF_CAP);
    s->prompt_buf = malloc((size_t)s->max_prompt * sizeof(int32_t));
    s->tree = malloc(sizeof *s->tree);
    if (!s->obuf || !s->prompt_buf || !s->tree) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    return ES_OK;
}

/* The event loop: the compute thread's wake-up queue, the timeout tick and the one-shot events. */
static es_status init_loop(es_server *s, es_err *err) {
    es_status st = es_wakeq_init(&s->q, err);
    if (st != ES_OK) return st;
    s->base = event_base_new();
    if (!s->base) return es_fail(err, ES_ERR_NOMEM, "cannot create an event loop");
    s->wake_ev = event_new(s->base, es_wakeq_fd(&s->q), EV_READ | EV_PERSIST, wake_cb, s);
    s->tick_ev = event_new(s->base, -1, EV_PERSIST, tick_cb, s);
    s->reap_ev = event_new(s->base, -1, 0, reap_cb, s);
    s->deadline_ev = event_new(s->base, -1, 0, deadline_cb, s);
    s->relisten_ev = event_new(s->base, -1, 0, relisten_cb, s);
    if (!s->wake_ev || !s->tick_ev || !s->reap_ev || !s->deadline_ev || !s->relisten_ev)
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    /* The tick checks timeouts at a quarter of the shortest one, between 20 ms and 1 s. */
    double tick = 1.0;
    if (s->p.handshake_timeout_s > 0 && s->p.handshake_timeout_s / 4 < tick) tick = s->p.handshake_timeout_s / 4;
    if (s->p.idle_timeout_s > 0 && s->p.idle_timeout_s / 4 < tick) tick = s->p.idle_timeout_s / 4;
    if (tick < 0.02) tick = 0.02;
    struct timeval tv = {(time_t)tick, (suseconds_t)((tick - floor(tick)) * 1e6)};
    event_add(s->wake_ev, NULL);
    event_add(s->tick_ev, &tv);
    return ES_OK;
}

static es_status start_threads(es_server *s, es_err *err) {
    if (pthread_create(&s->compute_thread, NULL, compute_main, s) != 0)
        return es_fail(err, ES_ERR_NOMEM, "cannot start the compute thread");
    s->compute_started = true;
    if (pthread_create(&s->loop_thread, NULL, loop_main, s) != 0)
        return es_fail(err, ES_ERR_NOMEM, "cannot start the event-loop thread");
    s->loop_started = true;
    return ES_OK;
}

/* test_mode (server_fuzz.h): no listener, no HTTP API, no threads; the caller pumps the loop and the
 * scheduler itself. *http_fd_taken: the HTTP socket is the server's (closed by it) from then on. */
static es_status server_start(const es_server_params *p, es_server **out, bool *http_fd_taken, bool test_mode,
                              es_err *err) {
    if (!out) return es_fail(err, ES_ERR_INVALID_ARG, "es_server_start: out is NULL");
    *out = NULL;
    es_status st = check_params(p, err);
    if (st != ES_OK) return st;
    es_server *s = calloc(1, sizeof *s);
    if (!s) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    if ((st = take_params(s, p, err)) != ES_OK || (st = init_locks(s, err)) != ES_OK || (st = init_sched(s, err)) != ES_OK ||
        (st = init_loop(s, err)) != ES_OK)
        goto fail;
    if (test_mode) {
        *out = s;
        return ES_OK;
    }
    if ((st = open_listener(s, err)) != ES_OK) goto fail;
    *http_fd_taken = true;
    if (p->http && (st = start_http(s, err)) != ES_OK) goto fail;
    if ((st = start_threads(s, err)) != ES_OK) goto fail;
    slog(s, 2, "listening on %s:%d", s->host, s->port);
    *out = s;
    return ES_OK;

fail:
    server_destroy(s);
    return st;
}

es_status es_server_start(const es_server_params *p, es_server **out, es_err *err) {
    bool taken = false;
    es_status st = server_start(p, out, &taken, false, err);
    if (st != ES_OK && !taken && p && p->http && p->http_fd >= 0) close(p->http_fd);
    return st;
}

int es_server_port(const es_server *s) { return s ? s->port : 0; }

int es_server_http_port(const es_server *s) { return s ? s->http_port : 0; }

void es_server_get_stats(es_server *s, es_server_stats *out) {
    memset(out, 0, sizeof *out);
    if (!s) return;
    pthread_mutex_lock(&s->stats_mu);
    *out = s->st;
    pthread_mutex_unlock(&s->stats_mu);
    out->tls_handshake_failures = atomic_load(&s->tls_failures);
    es_sched_get_stats(s->sched, &out->sched);
}

void es_server_stop(es_server *s) {
    if (s) server_stop(s);
}

void es_server_drain(es_server *s) {
    if (!s || !s->loop_started) return;
    pthread_mutex_lock(&s->mu);
    s->drain_requested = true;
    pthread_mutex_unlock(&s->mu);
    es_wakeq_wake(&s->q);
}

void es_server_free(es_server *s) { server_destroy(s); }

/* ---- synchronous test / fuzz hooks (server_fuzz.h) ---- */

es_status es_server_test_new(const es_server_params *p, es_server **out, es_err *err) {
    if (p && p->http) return es_fail(err, ES_ERR_INVALID_ARG, "es_server_test_new: no HTTP API in test mode");
    bool taken = false;
    return server_start(p, out, &taken, true, err);
}

es_status es_server_test_connect(es_server *s, struct bufferevent **peer, es_err *err) {
    *peer = NULL;
    struct bufferevent *pair[2];
    if (bufferevent_pair_new(s->base, 0, pair) != 0) return es_fail(err, ES_ERR_NOMEM, "cannot create a bufferevent pair");
    es_conn *c = calloc(1, sizeof *c);
    if (!c) {
        bufferevent_free(pair[0]);
        bufferevent_free(pair[1]);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    /* The same bookkeeping as accept_cb, on one end of the pair. */
    c->srv = s;
    c->bev = pair[0];
    if (++s->next_conn_id >= 0x80000000u) s->next_conn_id = 1;
    c->id = s->next_conn_id;
    c->state = CONN_HANDSHAKE;
    c->t_open = c->t_active = es_now_s();
    snprintf(c->peer, sizeof c->peer, "test-pair");
    es_conn **b = &s->buckets[c->id & (ES_SERVER_CONN_BUCKETS - 1)];
    c->hnext = *b;
    *b = c;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    pthread_mutex_lock(&s->stats_mu);
    s->st.connections_total++;
    s->st.connections_open++;
    pthread_mutex_unlock(&s->stats_mu);
    bufferevent_setcb(pair[0], conn_read_cb, NULL, conn_event_cb, c);
    bufferevent_enable(pair[0], EV_READ | EV_WRITE);
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    *peer = pair[1];
    return ES_OK;
}

void es_server_test_poll(es_server *s) { event_base_loop(s->base, EVLOOP_NONBLOCK); }

int es_server_test_pump(es_server *s, es_err *err) {
    event_base_loop(s->base, EVLOOP_NONBLOCK);
    int rows = es_sched_step(s->sched, err);
    event_base_loop(s->base, EVLOOP_NONBLOCK);
    return rows;
}

int es_server_test_n_conns(const es_server *s) {
    int n = s->n_conns;
    for (const es_conn *c = s->dead; c; c = c->next) n++;
    return n;
}
