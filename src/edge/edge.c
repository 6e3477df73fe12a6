/* edge.c — the edge client: local drafting, remote verification over the wire protocol.
 *
 * Two layers:
 *  - the wire: one TCP connection (non-blocking socket) served by an I/O thread that polls it,
 *    writes queued frames once they are due and parses incoming frames into a queue, each held until
 *    its due time. Due times implement the WAN emulation: a frame leaves after the emulated link has
 *    serialised it (size*8/kbps, frames queue behind each other) and arrives rtt/2 later, in both
 *    directions. Because the thread keeps time while the caller drafts, drafting overlaps the delay
 *    as it would on a real network. Without emulation frames are written at once.
 *    With TLS the handshake runs on the caller's thread before the I/O thread starts (blocking, within
 *    the I/O timeout); afterwards every SSL_read / SSL_write happens on the I/O thread only (one SSL
 *    object is not safe to use from two threads), so frames are never written from the caller's.
 *  - the session logic (caller's thread): handshake, OPEN, draft/VERIFY/VERDICT rounds with the
 *    proactive bet, or TOKENS streaming for plain clients; reconnection and local fallback.
 *
 * Draft cache bookkeeping follows spec.h: the cache holds the confirmed tokens except the root. */
#include "edge/edge.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "grammar/grammar.h"
#include "sample/sampler.h"
#include "transport/tls.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/sig.h"
#include "util/wakeq.h"

#define EDGE_NAME "edgespec-edge " ES_VERSION_STRING
#define EDGE_OBUF (ES_PROTO_HEADER_SIZE + ES_PROTO_MAX_PAYLOAD_DEFAULT)
/* What the edge keeps queued in either direction before it drops the connection, as the server caps
 * a connection's unread output: a server that floods PINGs and never reads the PONGs, or sends
 * frames faster than the edge takes them, must not grow the edge's memory without bound. */
#define EDGE_QUEUE_MAX ((size_t)8 << 20)
/* the largest context a server may announce (the scheduler's own limit) */
#define ES_EDGE_MAX_CTX (1 << 24)

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ================================================================================================
 * The wire: socket + I/O thread + emulated WAN
 * ============================================================================================== */

/* One frame in a queue. Outgoing: data = header + payload, off = bytes written so far. Incoming:
 * data = payload, h = its parsed header. */
typedef struct qframe {
    struct qframe *next;
    double due;
    es_frame_header h;
    size_t len, off;
    uint8_t data[];
} qframe;

typedef struct wire {
    int fd;
    struct ssl_st *ssl;         /* TLS on fd (NULL: plain TCP); I/O thread only once it runs */
    bool ssl_read_wants_write;  /* the last SSL_read waits for the socket to take data (I/O thread) */
    es_wake wake;               /* caller -> I/O thread ("look at the queue again") */
    pthread_t th;
    bool th_started;
    pthread_mutex_t mu;         /* guards everything below except rbuf */
    pthread_cond_t cv;          /* signalled when a frame arrives or the connection dies */
    qframe *out_head, *out_tail, *in_head, *in_tail;
    size_t out_bytes, in_bytes; /* queued in each direction (capped at EDGE_QUEUE_MAX) */
    bool dead, stop;
    char why[256];              /* why the connection died */
    double half_rtt_s, kbps;    /* emulation (0: off) */
    double out_free, in_free;   /* emulated link busy until (serialisation queue) */
    /* I/O thread only */
    uint8_t *rbuf;
    size_t rlen, rcap;
} wire;

static void qfree_list(qframe *f) {
    while (f) {
        qframe *n = f->next;
        free(f);
        f = n;
    }
}

/* Seconds the emulated link needs to serialise `bytes`. */
static double link_time(const wire *w, size_t bytes) { return w->kbps > 0 ? (double)bytes * 8.0 / (w->kbps * 1000.0) : 0.0; }

/* Caller holds mu. */
static void wire_die(wire *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wire_die(wire *w, const char *fmt, ...) {
    if (!w->dead) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->why, sizeof w->why, fmt, ap);
        va_end(ap);
        w->dead = true;
    }
    pthread_cond_broadcast(&w->cv);
}

/* Writes due outgoing frames. Caller holds mu. Returns true if the socket would block. */
static bool wire_flush(wire *w, double now) {
    while (w->out_head && w->out_head->due <= now) {
        qframe *f = w->out_head;
        bool ww = false;
        ssize_t k = w->ssl ? es_tls_write(w->ssl, f->data + f->off, f->len - f->off, &ww)
                           : send(w->fd, f->data + f->off, f->len - f->off, MSG_NOSIGNAL);
        if (k > 0) {
            f->off += (size_t)k;
            if (f->off == f->len) {
                w->out_head = f->next;
                if (!w->out_head) w->out_tail = NULL;
                w->out_bytes -= f->len;
                free(f);
            }
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        wire_die(w, "sending to the server failed: %s", k < 0 ? strerror(errno) : "connection closed");
        return false;
    }
    return false;
}

/* Reads what the socket has and queues every complete frame. I/O thread; takes mu to queue.
 * Frames that arrived before the peer closed are still delivered. */
static void wire_read(wire *w) {
    for (;;) {
        if (w->rcap - w->rlen < 4096) {
            size_t cap = w->rcap ? w->rcap * 2 : 65536;
            if (cap > EDGE_OBUF + 65536) cap = EDGE_OBUF + 65536;
            if (cap <= w->rlen) { /* cannot happen: a frame is parsed as soon as it is complete */
                pthread_mutex_lock(&w->mu);
                wire_die(w, "receive buffer overflow");
                pthread_mutex_unlock(&w->mu);
                return;
            }
            uint8_t *nb = realloc(w->rbuf, cap);
            if (!nb) {
                pthread_mutex_lock(&w->mu);
                wire_die(w, "out of memory");
                pthread_mutex_unlock(&w->mu);
                return;
            }
            w->rbuf = nb;
            w->rcap = cap;
        }
        w->ssl_read_wants_write = false;
        ssize_t k = w->ssl ? es_tls_read(w->ssl, w->rbuf + w->rlen, w->rcap - w->rlen, &w->ssl_read_wants_write)
                           : recv(w->fd, w->rbuf + w->rlen, w->rcap - w->rlen, 0);
        const double now = es_now_s();
        bool eof = false;
        if (k < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            pthread_mutex_lock(&w->mu);
            wire_die(w, "the connection to the server broke: %s", strerror(errno));
            pthread_mutex_unlock(&w->mu);
            return;
        }
        if (k == 0) eof = true;
        w->rlen += (size_t)k;
        /* parse complete frames */
        size_t at = 0;
        pthread_mutex_lock(&w->mu);
        while (w->rlen - at >= ES_PROTO_HEADER_SIZE) {
            es_frame_header h;
            es_err err;
            size_t frame_len = 0;
            if (es_proto_frame_next(w->rbuf + at, w->rlen - at, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h, &frame_len, &err) != ES_OK) {
                wire_die(w, "the server sent a bad frame header: %s", err.msg);
                pthread_mutex_unlock(&w->mu);
                return;
            }
            if (frame_len == 0) break;
            if (w->in_bytes + h.len + ES_PROTO_HEADER_SIZE > EDGE_QUEUE_MAX) {
                wire_die(w, "the server sent more than %zu MiB that the edge has not taken", EDGE_QUEUE_MAX >> 20);
                pthread_mutex_unlock(&w->mu);
                return;
            }
            qframe *f = malloc(sizeof *f + h.len + 1);
            if (!f) {
                wire_die(w, "out of memory");
                pthread_mutex_unlock(&w->mu);
                return;
            }
            f->next = NULL;
            f->h = h;
            f->len = h.len;
            f->off = 0;
            memcpy(f->data, w->rbuf + at + ES_PROTO_HEADER_SIZE, h.len);
            w->in_bytes += ES_PROTO_HEADER_SIZE + h.len;
            const double rx = fmax(now, w->in_free) + link_time(w, ES_PROTO_HEADER_SIZE + h.len);
            w->in_free = rx;
            f->due = rx + w->half_rtt_s;
            if (w->in_tail) w->in_tail->next = f;
            else w->in_head = f;
            w->in_tail = f;
            at += ES_PROTO_HEADER_SIZE + h.len;
        }
        if (eof) wire_die(w, "the server closed the connection");
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        if (at > 0) {
            memmove(w->rbuf, w->rbuf + at, w->rlen - at);
            w->rlen -= at;
        }
        if (eof) return;
    }
}

static void *wire_thread(void *arg) {
    wire *w = arg;
    es_thread_block_sigpipe(); /* TLS writes with write(): a vanished server must not raise SIGPIPE */
    pthread_mutex_lock(&w->mu);
    while (!w->stop && !w->dead) {
        const double now = es_now_s();
        const bool blocked = wire_flush(w, now);
        if (w->dead) break;
        struct timespec ts, *tsp = NULL;
        if (w->out_head && !blocked) {
            double dt = w->out_head->due - now;
            if (dt < 0) dt = 0;
            ts.tv_sec = (time_t)dt;
            ts.tv_nsec = (long)((dt - floor(dt)) * 1e9);
            tsp = &ts;
        }
        pthread_mutex_unlock(&w->mu);
        const bool want_out = blocked || w->ssl_read_wants_write;
        struct pollfd pf[2] = {{w->fd, (short)(POLLIN | (want_out ? POLLOUT : 0)), 0}, {es_wake_fd(&w->wake), POLLIN, 0}};
        const int r = ppoll(pf, 2, tsp, NULL);
        if (r < 0 && errno != EINTR) {
            pthread_mutex_lock(&w->mu);
            wire_die(w, "poll: %s", strerror(errno));
            break;
        }
        if (r > 0 && (pf[1].revents & POLLIN)) es_wake_drain(&w->wake);
        if (r > 0 && ((pf[0].revents & (POLLIN | POLLHUP | POLLERR)) ||
                      (w->ssl_read_wants_write && (pf[0].revents & POLLOUT))))
            wire_read(w);
        pthread_mutex_lock(&w->mu);
    }
    /* a clean goodbye (close_notify) on the thread that owns the SSL; nothing more is written */
    if (w->ssl && !w->dead) {
        es_tls_close(w->ssl);
        w->ssl = NULL;
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void wire_poke(wire *w) { es_wake_poke(&w->wake); }

static void wire_close(wire *w) {
    if (!w) return;
    if (w->th_started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_mutex_unlock(&w->mu);
        wire_poke(w);
        pthread_join(w->th, NULL);
    }
    es_tls_free(w->ssl);
    if (w->fd >= 0) close(w->fd);
    es_wake_free(&w->wake);
    qfree_list(w->out_head);
    qfree_list(w->in_head);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w->rbuf);
    free(w);
}

/* Connects (within timeout_s), runs the TLS handshake naming tls_name when tls is given, and starts
 * the I/O thread. */
static es_status wire_open(const char *host, int port, double timeout_s, double rtt_ms, double kbps, struct ssl_ctx_st *tls,
                           const char *tls_name, wire **out, es_err *err) {
    *out = NULL;
    const double t_start = es_now_s();
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gr = getaddrinfo(host, ports, &hints, &res);
    if (gr != 0) return es_fail(err, ES_ERR_IO, "cannot resolve %s: %s", host, gai_strerror(gr));
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { last_errno = errno; continue; }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) { last_errno = errno; close(fd); fd = -1; continue; }
            struct pollfd pf = {fd, POLLOUT, 0};
            int r;
            do r = poll(&pf, 1, (int)(timeout_s * 1000)); while (r < 0 && errno == EINTR);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (r <= 0) soerr = r == 0 ? ETIMEDOUT : errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) soerr = errno;
            if (soerr) { last_errno = soerr; close(fd); fd = -1; continue; }
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return es_fail(err, ES_ERR_IO, "cannot connect to %s:%d: %s", host, port, strerror(last_errno));
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct ssl_st *ssl = NULL;
    if (tls) {
        es_status ts = es_tls_client_connect(tls, fd, tls_name, t_start + timeout_s, &ssl, err);
        if (ts != ES_OK) {
            close(fd);
            return ts;
        }
    }
    wire *w = calloc(1, sizeof *w);
    if (!w) { es_tls_free(ssl); close(fd); return es_fail(err, ES_ERR_NOMEM, "out of memory"); }
    w->fd = fd;
    w->ssl = ssl;
    w->half_rtt_s = rtt_ms > 0 ? rtt_ms / 2000.0 : 0.0;
    w->kbps = kbps > 0 ? kbps : 0.0;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    es_status st = es_wake_init(&w->wake, err);
    if (st != ES_OK) {
        wire_close(w);
        return st;
    }
    if (pthread_create(&w->th, NULL, wire_thread, w) != 0) {
        wire_close(w);
        return es_fail(err, ES_ERR_IO, "cannot start the I/O thread");
    }
    w->th_started = true;
    *out = w;
    return ES_OK;
}

/* Queues one whole frame (header + payload); ES_ERR_IO if the connection is gone. */
static es_status wire_send(wire *w, const uint8_t *frame, size_t len, es_err *err) {
    pthread_mutex_lock(&w->mu);
    if (w->dead) {
        es_status st = es_fail(err, ES_ERR_IO, "%s", w->why);
        pthread_mutex_unlock(&w->mu);
        return st;
    }
    if (w->out_bytes + len > EDGE_QUEUE_MAX) {
        wire_die(w, "the server does not read what the edge sends (more than %zu MiB queued)", EDGE_QUEUE_MAX >> 20);
        es_status st = es_fail(err, ES_ERR_IO, "%s", w->why);
        pthread_mutex_unlock(&w->mu);
        return st;
    }
    const double now = es_now_s();
    double due = now;
    if (w->half_rtt_s > 0 || w->kbps > 0) {
        const double tx = fmax(now, w->out_free) + link_time(w, len);
        w->out_free = tx;
        due = tx + w->half_rtt_s;
    }
    qframe *f = malloc(sizeof *f + len);
    if (!f) {
        pthread_mutex_unlock(&w->mu);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    f->next = NULL;
    f->due = due;
    memset(&f->h, 0, sizeof f->h);
    f->len = len;
    f->off = 0;
    memcpy(f->data, frame, len);
    w->out_bytes += len;
    const bool was_empty = w->out_head == NULL;
    if (w->out_tail) w->out_tail->next = f;
    else w->out_head = f;
    w->out_tail = f;
    /* nothing queued ahead and due now: write from here (saves a thread wake-up per frame); with TLS
     * only the I/O thread touches the SSL */
    const bool blocked = was_empty && due <= now && !w->ssl ? wire_flush(w, now) : false;
    const bool poke = w->out_head != NULL || blocked;
    pthread_mutex_unlock(&w->mu);
    if (poke) wire_poke(w);
    return ES_OK;
}

/* Takes the next incoming frame once due, waiting until `deadline` (monotonic seconds).
 * ES_ERR_TIMEOUT when the deadline passes, ES_ERR_IO when the connection is gone (after every frame
 * that arrived before has been delivered). The caller frees the frame. */
/* Whether wire_recv would return at once: a frame is due, or the connection is gone. */
static bool wire_ready(wire *w) {
    pthread_mutex_lock(&w->mu);
    const bool r = (w->in_head && w->in_head->due <= es_now_s()) || w->dead;
    pthread_mutex_unlock(&w->mu);
    return r;
}

/* cancel (optional): when it turns true the wait ends with ES_OK and *out NULL; whoever sets it
 * broadcasts w->cv under w->mu (es_edge_cancel), so the flag is seen without polling. */
static es_status wire_recv(wire *w, double deadline, const atomic_bool *cancel, qframe **out, es_err *err) {
    *out = NULL;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (cancel && atomic_load(cancel)) {
            pthread_mutex_unlock(&w->mu);
            return ES_OK;
        }
        const double now = es_now_s();
        if (w->in_head && w->in_head->due <= now) {
            qframe *f = w->in_head;
            w->in_head = f->next;
            if (!w->in_head) w->in_tail = NULL;
            w->in_bytes -= ES_PROTO_HEADER_SIZE + f->len;
            pthread_mutex_unlock(&w->mu);
            f->next = NULL;
            *out = f;
            return ES_OK;
        }
        if (!w->in_head && w->dead) {
            es_status st = es_fail(err, ES_ERR_IO, "%s", w->why);
            pthread_mutex_unlock(&w->mu);
            return st;
        }
        if (now >= deadline) {
            pthread_mutex_unlock(&w->mu);
            return es_fail(err, ES_ERR_TIMEOUT, "the server sent nothing for too long");
        }
        double until = deadline;
        if (w->in_head && w->in_head->due < until) until = w->in_head->due;
        struct timespec ts = {(time_t)until, (long)((until - floor(until)) * 1e9)};
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
}

/* ================================================================================================
 * The edge
 * ============================================================================================== */

struct es_edge {
    es_edge_params p;
    char *host, *api_key;          /* owned copies of the params' strings */
    struct ssl_ctx_st *tls;        /* client TLS context (NULL: plain TCP) */
    char *tls_name;                /* the name the server's certificate must carry */
    wire *w;
    es_msg_welcome welcome;
    es_ctx *dctx;                  /* draft context (NULL without a draft) */
    int dseq;
    int n_ctx_draft;
    uint32_t next_session;
    uint8_t *obuf;                 /* (EDGE_OBUF) frame encoding */
    int32_t *tokbuf;               /* (ES_PROTO_MAX_TOKENS_FRAME) TOKENS decoding */
    es_spec_tree tree, next;       /* the round's tree; the tree drafted under a bet */
    es_spec_verdict bet;           /* the bet path as a made-up verdict */
    /* how often each guess at a round's verdict was right, recent rounds weighing most: the
       proactive bet as placed, and the EARLY frame (es_edge_params.early_follow) */
    double bet_rate, early_rate;
    int n_bet_seen, n_early_seen;
    es_edge_stats *st;             /* stats of the running generation (wire counters), or NULL */
    atomic_bool cancel;            /* es_edge_cancel: stop at the next confirmed tokens, or while a verdict is awaited */
    /* es_edge_set_request */
    int top_logprobs;              /* -1: none */
    void (*on_logprobs)(void *ud, const es_token_logprob *lp, int n);
    es_grammar *grammar;           /* owned copy, or NULL */
    es_grammar_vocab *gvocab;      /* the draft's vocabulary as grammars see it (built at the first grammar) */
    es_token_logprob *lpbuf;       /* (ES_PROTO_MAX_LP_TOKENS) TOKENS decoding, with log-probabilities */
    pthread_mutex_t wmu;           /* guards the pointer e->w against es_edge_cancel's wake-up from another
                                      thread (the generating thread swaps it on reconnection) */
};

static void edge_log(const es_edge *e, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void edge_log(const es_edge *e, int level, const char *fmt, ...) {
    if (!e->p.log) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    es_defang(msg);
    e->p.log(e->p.log_ud, level, msg);
}

es_edge_params es_edge_default_params(void) {
    es_edge_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.port = 7700;
    p.mode = ES_MODE_EDGE;
    p.rule = ES_ACCEPT_GREEDY;
    p.sampling = es_sampler_default_params();
    p.sampling.temperature = 0.0f;
    p.sampling.top_k = 0;
    p.sampling.top_p = 1.0f;
    p.sampling.min_p = 0.0f;
    p.sampling.repeat_penalty = 1.0f;
    p.sampling.seed = 42;
    p.draft_params = es_drafter_default_params();
    p.proactive = true;
    p.bet = ES_BET_FIRST;
    p.adapt_to_server = true;
    p.n_threads = 1;
    p.reconnect_attempts = 5;
    p.io_timeout_s = 60.0;
    return p;
}

/* The es_status a server error code stands for. */
static es_status perr_status(int code) {
    switch (code) {
    case ES_PERR_VOCAB: return ES_ERR_MISMATCH;
    case ES_PERR_BUSY: return ES_ERR_BUSY;
    case ES_PERR_TIMEOUT: return ES_ERR_TIMEOUT;
    case ES_PERR_CONTEXT:
    case ES_PERR_TOO_LARGE: return ES_ERR_RANGE;
    case ES_PERR_VERSION:
    case ES_PERR_UNSUPPORTED: return ES_ERR_UNSUPPORTED;
    case ES_PERR_INVALID:
    case ES_PERR_AUTH: return ES_ERR_INVALID_ARG;
    case ES_PERR_SHUTDOWN: return ES_ERR_IO;
    default: return ES_ERR_PROTOCOL;
    }
}

/* Server errors after which a new connection may succeed: the connection is treated as lost. */
static bool perr_recoverable(int code) { return code == ES_PERR_SHUTDOWN || code == ES_PERR_TIMEOUT; }

static void wbuf_reset(es_edge *e, es_wbuf *w) {
    w->data = e->obuf;
    w->cap = EDGE_OBUF;
    w->len = 0;
    w->overflow = 0;
}

/* Sends an encoded frame, counting it in the running generation's stats. */
static es_status edge_send(es_edge *e, const es_wbuf *w, es_err *err) {
    if (w->overflow) return es_fail(err, ES_ERR_INTERNAL, "frame did not fit the encode buffer");
    if (!e->w) return es_fail(err, ES_ERR_IO, "not connected to the server");
    if (w->len > ES_PROTO_HEADER_SIZE + (size_t)e->welcome.max_payload && e->welcome.max_payload > 0)
        return es_fail(err, ES_ERR_RANGE, "a %zu-byte frame exceeds the server's payload limit of %u bytes", w->len,
                       e->welcome.max_payload);
    es_status s = wire_send(e->w, w->data, w->len, err);
    if (s == ES_OK && e->st) {
        e->st->bytes_sent += (int64_t)w->len;
        e->st->frames_sent++;
    }
    return s;
}

/* The next frame for `session` (or a connection-level one), answering PINGs and dropping stale
 * frames of finished sessions. A connection-level ERROR is returned as its status (recoverable
 * ones as ES_ERR_IO). cancellable: es_edge_cancel ends the wait with ES_OK and *out NULL (a client
 * that left must not wait for a slow or stalled server's next frame). */
static es_status edge_next(es_edge *e, uint32_t session, bool cancellable, qframe **out, es_err *err) {
    *out = NULL;
    if (!e->w) return es_fail(err, ES_ERR_IO, "not connected to the server");
    /* one deadline for the frame awaited: PINGs and stale frames of other sessions do not restart
       it, or a server that keeps talking without answering would hold the edge forever */
    const double deadline = es_now_s() + (e->p.io_timeout_s > 0 ? e->p.io_timeout_s : 60.0);
    for (;;) {
        qframe *f = NULL;
        es_status s = wire_recv(e->w, deadline, cancellable ? &e->cancel : NULL, &f, err);
        if (s != ES_OK || !f) return s;
        if (e->st) {
            e->st->bytes_received += (int64_t)(ES_PROTO_HEADER_SIZE + f->len);
            e->st->frames_received++;
        }
        if (f->h.type == ES_FRAME_PING) {
            es_msg_ping pm;
            if (es_proto_get_ping(f->data, f->len, &pm, err) == ES_OK) {
                es_wbuf w;
                wbuf_reset(e, &w);
                if (es_proto_put_ping(&w, ES_FRAME_PONG, &pm, err) == ES_OK) (void)edge_send(e, &w, err);
            }
            free(f);
            continue;
        }
        if (f->h.type == ES_FRAME_PONG) { free(f); continue; }
        if (f->h.session == 0 && f->h.type == ES_FRAME_ERROR) {
            es_msg_error em;
            s = es_proto_get_error(f->data, f->len, &em, err);
            free(f);
            if (s != ES_OK) return es_fail(err, ES_ERR_PROTOCOL, "the server sent a malformed ERROR frame");
            return es_fail(err, perr_recoverable(em.code) ? ES_ERR_IO : perr_status(em.code), "server error (%s): %s",
                           es_proto_err_name(em.code), em.msg);
        }
        if (f->h.session != 0 && f->h.session != session) { free(f); continue; } /* an earlier session's */
        *out = f;
        return ES_OK;
    }
}

/* HELLO -> WELCOME on a fresh connection. */
static es_status edge_handshake(es_edge *e, es_err *err) {
    pthread_mutex_lock(&e->wmu);
    wire *old = e->w;
    e->w = NULL;
    pthread_mutex_unlock(&e->wmu);
    wire_close(old);
    wire *nw = NULL;
    es_status s = wire_open(e->host, e->p.port, e->p.io_timeout_s > 0 ? e->p.io_timeout_s : 60.0, e->p.emulate_rtt_ms,
                            e->p.emulate_bandwidth_kbps, e->tls, e->tls_name, &nw, err);
    if (s != ES_OK) return s;
    pthread_mutex_lock(&e->wmu);
    e->w = nw;
    pthread_mutex_unlock(&e->wmu);
    es_msg_hello h;
    memset(&h, 0, sizeof h);
    h.version_min = ES_PROTO_LEVEL_MIN;
    h.version_max = ES_PROTO_LEVEL_MAX;
    snprintf(h.name, sizeof h.name, "%s", EDGE_NAME);
    const es_tokenizer *tok = e->p.draft ? es_model_tokenizer(e->p.draft) : NULL;
    if (tok) {
        h.has_draft = 1;
        h.draft_fingerprint = es_tokenizer_fingerprint(tok);
        h.draft_n_vocab = (uint32_t)es_tokenizer_n_vocab(tok);
        h.draft_bos = es_tokenizer_bos(tok);
        h.draft_eos = es_tokenizer_eos(tok);
    }
    if (e->api_key) snprintf(h.api_key, sizeof h.api_key, "%s", e->api_key);
    es_wbuf w;
    wbuf_reset(e, &w);
    if ((s = es_proto_put_hello(&w, &h, err)) != ES_OK) return s;
    es_edge_stats *saved = e->st; /* the handshake is not counted */
    e->st = NULL;
    s = edge_send(e, &w, err);
    qframe *f = NULL;
    while (s == ES_OK) {
        if ((s = edge_next(e, 0, false, &f, err)) != ES_OK) break;
        if (f->h.type == ES_FRAME_WELCOME) {
            s = es_proto_get_welcome(f->data, f->len, &e->welcome, err);
            if (s != ES_OK) s = es_fail(err, ES_ERR_PROTOCOL, "malformed WELCOME: %s", err ? err->msg : "");
            break;
        }
        if (f->h.type == ES_FRAME_ERROR) {
            es_msg_error em;
            if (es_proto_get_error(f->data, f->len, &em, err) != ES_OK) s = es_fail(err, ES_ERR_PROTOCOL, "malformed ERROR frame");
            else s = es_fail(err, perr_status(em.code), "the server refused the connection (%s): %s", es_proto_err_name(em.code), em.msg);
            break;
        }
        s = es_fail(err, ES_ERR_PROTOCOL, "expected WELCOME, got %s", es_frame_type_name(f->h.type));
    }
    free(f);
    e->st = saved;
    if (s != ES_OK && !e->tls && (s == ES_ERR_IO || s == ES_ERR_PROTOCOL) && err) {
        /* a TLS server answers a plain HELLO with an alert or a reset */
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        es_fail(err, s, "%.200s (if the server uses TLS, connect with --tls)", why);
    }
    if (s != ES_OK) return s;
    if (e->welcome.version < ES_PROTO_LEVEL_MIN || e->welcome.version > ES_PROTO_LEVEL_MAX)
        return es_fail(err, ES_ERR_UNSUPPORTED, "the server chose protocol version %u, this edge speaks %d..%d", e->welcome.version,
                       ES_PROTO_LEVEL_MIN, ES_PROTO_LEVEL_MAX);
    if (tok && e->welcome.target_fingerprint != es_tokenizer_fingerprint(tok))
        return es_fail(err, ES_ERR_MISMATCH, "the target's vocabulary (%u tokens, fingerprint %016llx) differs from the draft's (%d tokens, %016llx)",
                       e->welcome.n_vocab, (unsigned long long)e->welcome.target_fingerprint, es_tokenizer_n_vocab(tok),
                       (unsigned long long)es_tokenizer_fingerprint(tok));
    return ES_OK;
}

es_status es_edge_init(const es_edge_params *p, es_edge **out, es_err *err) {
    *out = NULL;
    if (!p) return es_fail(err, ES_ERR_INVALID_ARG, "no parameters");
    if (p->mode != ES_MODE_EDGE && p->mode != ES_MODE_AR && p->mode != ES_MODE_SERVER_SPEC)
        return es_fail(err, ES_ERR_INVALID_ARG, "unknown session mode %d", p->mode);
    if (p->mode == ES_MODE_EDGE && !p->draft) return es_fail(err, ES_ERR_INVALID_ARG, "edge mode needs a draft model");
    if (p->port <= 0 || p->port > 65535) return es_fail(err, ES_ERR_INVALID_ARG, "port %d out of range", p->port);
    if (p->rule < ES_ACCEPT_GREEDY || p->rule > ES_ACCEPT_REJECTION)
        return es_fail(err, ES_ERR_INVALID_ARG, "acceptance rule %d is not available to edges", p->rule);
    if (p->api_key && strlen(p->api_key) > ES_PROTO_MAX_KEY) return es_fail(err, ES_ERR_INVALID_ARG, "the api key is longer than %d bytes", ES_PROTO_MAX_KEY);
    es_edge *e = calloc(1, sizeof *e);
    if (!e) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    e->p = *p;
    pthread_mutex_init(&e->wmu, NULL);
    e->dseq = -1;
    e->next_session = 1;
    e->top_logprobs = -1;
    e->host = strdup(p->host && *p->host ? p->host : "127.0.0.1");
    e->api_key = p->api_key && *p->api_key ? strdup(p->api_key) : NULL;
    e->obuf = malloc(EDGE_OBUF);
    e->tokbuf = malloc(ES_PROTO_MAX_TOKENS_FRAME * sizeof(int32_t));
    e->p.host = e->host;
    e->p.api_key = e->api_key;
    e->tls_name = p->tls ? strdup(p->tls_server_name && *p->tls_server_name ? p->tls_server_name : e->host ? e->host : "") : NULL;
    e->p.tls_ca = e->p.tls_server_name = NULL; /* the caller's strings are not kept */
    if (!e->host || (p->api_key && *p->api_key && !e->api_key) || !e->obuf || !e->tokbuf || (p->tls && !e->tls_name)) {
        es_edge_free(e);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    es_status s;
    if (p->tls && (s = es_tls_client_ctx(p->tls_ca, p->tls_insecure, &e->tls, err)) != ES_OK) {
        es_edge_free(e);
        return s;
    }
    if (p->draft) {
        es_ctx_params cp = es_ctx_default_params();
        cp.n_threads = p->n_threads > 0 ? p->n_threads : 1;
        cp.n_ctx = p->n_ctx > 0 ? p->n_ctx : 0;
        cp.n_seq_max = 1;
        cp.n_batch_max = ES_SPEC_MAX_NODES + 1;
        cp.kv_type = p->kv_type;
        if ((s = es_ctx_init(p->draft, &cp, &e->dctx, err)) != ES_OK || (s = es_seq_open(e->dctx, &e->dseq, err)) != ES_OK) {
            es_edge_free(e);
            return s;
        }
        e->n_ctx_draft = p->n_ctx > 0 ? p->n_ctx : es_model_n_ctx_train(p->draft);
    }
    *out = e;
    return ES_OK;
}

/* The reconnection schedule shared by the handshake and a lost session: attempt 1 at once, then a
 * pause of *backoff, 100 ms doubling to 5 s. */
static void reconnect_pause(int attempt, double *backoff) {
    if (attempt <= 1) return;
    sleep_s(*backoff);
    *backoff = *backoff * 2 < 5.0 ? *backoff * 2 : 5.0;
}

/* edge_handshake, again when the connection was made but closed before WELCOME: behind a balancer the
 * replica it reached may have died or be draining, and the next attempt lands on a live one. Retried
 * as a lost session is (p.reconnect_attempts, the first at once, then 100 ms doubling); nothing
 * listening (no connection made) and a server that stays silent (a timeout) fail at once. */
static es_status handshake_retrying(es_edge *e, es_err *err) {
    es_status s = edge_handshake(e, err);
    double backoff = 0.1;
    for (int a = 1; a <= e->p.reconnect_attempts && s == ES_ERR_IO && e->w; a++) {
        edge_log(e, 1, "lost the server during the handshake (%s); reconnecting in %.1f s (attempt %d of %d)",
                 err ? err->msg : "", a == 1 ? 0.0 : backoff, a, e->p.reconnect_attempts);
        reconnect_pause(a, &backoff);
        s = edge_handshake(e, err);
    }
    return s;
}

es_status es_edge_connect(const es_edge_params *p, es_edge **out, es_err *err) {
    es_status s = es_edge_init(p, out, err);
    if (s != ES_OK) return s;
    if ((s = handshake_retrying(*out, err)) != ES_OK) {
        es_edge_free(*out);
        *out = NULL;
    }
    return s;
}

es_status es_edge_reconnect(es_edge *e, es_err *err) {
    if (!e) return es_fail(err, ES_ERR_INVALID_ARG, "no edge");
    return handshake_retrying(e, err);
}

bool es_edge_connected(const es_edge *e) {
    if (!e || !e->w) return false;
    pthread_mutex_lock(&e->w->mu);
    const bool dead = e->w->dead;
    pthread_mutex_unlock(&e->w->mu);
    return !dead;
}

void es_edge_free(es_edge *e) {
    if (!e) return;
    wire_close(e->w);
    pthread_mutex_destroy(&e->wmu);
    es_ctx_free(e->dctx);
    free(e->obuf);
    free(e->tokbuf);
    free(e->lpbuf);
    es_grammar_free(e->grammar);
    es_grammar_vocab_free(e->gvocab);
    free(e->host);
    free(e->api_key);
    es_tls_ctx_free(e->tls);
    free(e->tls_name);
    free(e);
}

const es_msg_welcome *es_edge_server_info(const es_edge *e) { return &e->welcome; }

void es_edge_cancel(es_edge *e, bool cancel) {
    if (!e) return;
    atomic_store(&e->cancel, cancel);
    if (!cancel) return;
    /* wake a generation waiting in wire_recv: it checks the flag under w->mu before each wait */
    pthread_mutex_lock(&e->wmu);
    if (e->w) {
        pthread_mutex_lock(&e->w->mu);
        pthread_cond_broadcast(&e->w->cv);
        pthread_mutex_unlock(&e->w->mu);
    }
    pthread_mutex_unlock(&e->wmu);
}

es_status es_edge_set_sampling(es_edge *e, int rule, const es_sampler_params *sampling, es_err *err) {
    if (!e || !sampling) return es_fail(err, ES_ERR_INVALID_ARG, "null edge or sampling parameters");
    if (rule < ES_ACCEPT_GREEDY || rule > ES_ACCEPT_REJECTION)
        return es_fail(err, ES_ERR_INVALID_ARG, "acceptance rule %d is not available to edges", rule);
    if (rule == ES_ACCEPT_GREEDY && sampling->temperature != 0)
        return es_fail(err, ES_ERR_INVALID_ARG, "the greedy rule needs temperature 0");
    if (sampling->n_bias < 0 || sampling->n_bias > ES_SAMPLER_MAX_BIAS)
        return es_fail(err, ES_ERR_INVALID_ARG, "at most %d logit-bias entries", ES_SAMPLER_MAX_BIAS);
    e->p.rule = rule;
    e->p.sampling = *sampling;
    e->p.draft_params.temperature = sampling->temperature > 0 ? sampling->temperature : 1.0f;
    e->p.draft_params.seed = sampling->seed;
    return ES_OK;
}

es_status es_edge_set_request(es_edge *e, const es_edge_request *rq, es_err *err) {
    if (!e || !rq) return es_fail(err, ES_ERR_INVALID_ARG, "null edge or request");
    if (rq->top_logprobs < -1 || rq->top_logprobs > ES_SPEC_MAX_TOP_LOGPROBS)
        return es_fail(err, ES_ERR_INVALID_ARG, "top_logprobs %d outside -1..%d", rq->top_logprobs, ES_SPEC_MAX_TOP_LOGPROBS);
    size_t slen = 0;
    if (rq->grammar && es_grammar_source(rq->grammar, &slen) && (slen < 1 || slen > ES_PROTO_MAX_SCHEMA))
        return es_fail(err, ES_ERR_INVALID_ARG, "a JSON schema of %zu bytes (the wire carries 1..%d)", slen, ES_PROTO_MAX_SCHEMA);
    es_grammar *g = NULL;
    if (rq->grammar && !(g = es_grammar_clone(rq->grammar))) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    if (g && e->dctx && !e->gvocab) { /* once per edge: tens of ms on a large vocabulary */
        const es_status s = es_grammar_vocab_init(es_model_tokenizer(e->p.draft), &e->gvocab, err);
        if (s != ES_OK) {
            es_grammar_free(g);
            return s;
        }
    }
    if ((rq->top_logprobs >= 0 && e->p.mode != ES_MODE_EDGE) && !e->lpbuf &&
        !(e->lpbuf = malloc(ES_PROTO_MAX_LP_TOKENS * sizeof *e->lpbuf))) {
        es_grammar_free(g);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    es_grammar_free(e->grammar);
    e->grammar = g;
    e->top_logprobs = rq->top_logprobs;
    e->on_logprobs = rq->on_logprobs;
    return ES_OK;
}

/* ---- one generation ------------------------------------------------------------------------- */

typedef struct gen {
    es_edge *e;
    const int32_t *prompt;         /* token ids, or NULL when the server tokenises `text` */
    int n_prompt;
    const char *text;
    int max_tokens;
    const int32_t *stop;
    int n_stop;
    int32_t *out;
    int n;                         /* tokens generated */
    es_edge_stats *st;
    void (*cb)(void *, const int32_t *, int, double);
    void *ud;
    double t0, t_open;
    bool first_seen;
    bool done;
    bool resumed;                  /* run_local found the server again: verified generation goes on */
    int stop_reason;
    int32_t *conf;                 /* prompt + generated (resumption, local fallback) */
    /* the current server session */
    uint32_t session;
    int n_ctx;                     /* positions usable: min(session's, draft's) */
    uint16_t hint;                 /* the server's suggested tree size (0: none) */
    es_drafter *d;
    es_gmatcher *gm;               /* the drafter's grammar matcher (NULL: free text) */
    double t_lost;                 /* when the server was lost, until a new session confirms a token (0: none) */
} gen;

static bool is_stop(const gen *g, int32_t t) {
    for (int j = 0; j < g->n_stop; j++)
        if (t == g->stop[j]) return true;
    return false;
}

/* Confirms tokens: into out (max_tokens at most; a stop token ends the generation and is kept in out
 * but not passed on), then to the callbacks (lp: their log-probabilities, or NULL). */
static void emit(gen *g, const int32_t *toks, int n, const es_token_logprob *lp) {
    const int first = g->n;
    int shown = 0;
    for (int k = 0; k < n && !g->done; k++) {
        if (g->n >= g->max_tokens) { g->done = true; g->stop_reason = ES_STOP_LENGTH; break; }
        g->out[g->n] = toks[k];
        g->conf[g->n_prompt + g->n] = toks[k];
        g->n++;
        if (is_stop(g, toks[k])) { g->done = true; g->stop_reason = ES_STOP_EOS; break; }
        shown++;
        if (g->n >= g->max_tokens) { g->done = true; g->stop_reason = ES_STOP_LENGTH; }
    }
    if (g->n > first && g->t_lost > 0) { /* the first tokens since a reconnection */
        if (g->st->n_resumes < ES_EDGE_MAX_RESUMES) g->st->resume_s[g->st->n_resumes++] = es_now_s() - g->t_lost;
        g->t_lost = 0;
    }
    if (g->n > first && !g->first_seen) {
        g->first_seen = true;
        g->st->ttft_s = es_now_s() - (g->t_open > 0 ? g->t_open : g->t0); /* not opened: generated locally */
    }
    if (shown > 0 && lp && g->e->on_logprobs) g->e->on_logprobs(g->ud, lp, shown);
    if (shown > 0 && g->cb) g->cb(g->ud, g->out + first, shown, es_now_s() - g->t0);
    if (!g->done && atomic_load(&g->e->cancel)) { /* the caller stopped it (possibly from the callback) */
        g->done = true;
        g->stop_reason = ES_STOP_CLIENT;
    }
}

/* Whether this server can take the session as asked (before anything is sent). */
static es_status open_check(const gen *g, es_err *err) {
    const es_edge *e = g->e;
    const es_msg_welcome *wl = &e->welcome;
    if (!e->w) return es_fail(err, ES_ERR_IO, "not connected to the server"); /* the welcome below is not known */
    if (e->p.mode == ES_MODE_EDGE && !(wl->rules & (1u << e->p.rule)))
        return es_fail(err, ES_ERR_UNSUPPORTED, "the server does not support the %s acceptance rule", es_accept_rule_name((es_accept_rule)e->p.rule));
    if (e->p.mode == ES_MODE_SERVER_SPEC && !wl->has_server_draft)
        return es_fail(err, ES_ERR_UNSUPPORTED, "the server has no draft model of its own (server-spec mode)");
    if (!g->prompt && g->n > 0)
        return es_fail(err, ES_ERR_IO, "cannot resume a text-prompt generation after %d tokens without a local tokenizer", g->n);
    if ((e->top_logprobs >= 0 || e->grammar) && wl->version < ES_PROTO_LEVEL_API)
        return es_fail(err, ES_ERR_UNSUPPORTED, "the server speaks protocol version %u: logprobs and JSON output need %d", wl->version,
                       ES_PROTO_LEVEL_API);
    return ES_OK;
}

/* The OPEN message for the rest of the generation (prompt + tokens so far). */
static void open_msg(const gen *g, es_msg_open *m) {
    const es_edge *e = g->e;
    memset(m, 0, sizeof *m);
    m->mode = (uint8_t)e->p.mode;
    m->rule = (uint8_t)e->p.rule;
    m->max_tokens = (uint32_t)(g->max_tokens - g->n);
    m->temperature = e->p.sampling.temperature;
    m->top_p = e->p.sampling.top_p;
    m->min_p = e->p.sampling.min_p;
    m->top_k = e->p.sampling.top_k;
    m->seed = e->p.sampling.seed;
    m->repeat_penalty = e->p.sampling.repeat_penalty;
    m->repeat_last_n = e->p.sampling.repeat_last_n;
    m->presence_penalty = e->p.sampling.presence_penalty;
    m->frequency_penalty = e->p.sampling.frequency_penalty;
    m->n_bias = (uint16_t)e->p.sampling.n_bias;
    memcpy(m->bias, e->p.sampling.bias, (size_t)e->p.sampling.n_bias * sizeof m->bias[0]);
    m->n_stop = (uint16_t)g->n_stop;
    for (int j = 0; j < g->n_stop; j++) m->stop[j] = g->stop[j];
    if (e->top_logprobs >= 0) {
        m->flags |= ES_OPEN_LOGPROBS;
        m->top_logprobs = (uint8_t)e->top_logprobs;
    }
    if (e->grammar) { /* resumed sessions too: the server's matcher is fed the tokens so far with the prompt */
        size_t len = 0;
        m->schema = es_grammar_source(e->grammar, &len);
        m->schema_len = (uint32_t)len;
        m->grammar_kind = m->schema ? ES_PROTO_GRAMMAR_SCHEMA : ES_PROTO_GRAMMAR_JSON_OBJECT;
        m->grammar_done = g->prompt ? (uint32_t)g->n : 0; /* (a text prompt is never resumed past a token) */
        m->flags |= ES_OPEN_GRAMMAR;
    }
    if (g->prompt) {
        m->n_prompt = (uint32_t)(g->n_prompt + g->n);
        m->prompt = g->conf;
        /* early exits need version 2 (an older server is served without them) */
        if (e->p.early_exit && e->p.mode == ES_MODE_EDGE && e->welcome.version >= ES_PROTO_LEVEL_EARLY)
            m->flags |= ES_OPEN_EARLY_EXIT;
    } else {
        m->flags = ES_OPEN_PROMPT_TEXT;
        m->text = g->text;
        m->text_len = (uint32_t)strlen(g->text);
    }
}

/* Waits for the server's answer to OPEN: OPENED into *op, or the refusal as an error. */
static es_status await_opened(gen *g, es_msg_opened *op, es_err *err) {
    es_edge *e = g->e;
    es_status s;
    qframe *f = NULL;
    for (;;) {
        if ((s = edge_next(e, g->session, false, &f, err)) != ES_OK) return s;
        if (f->h.type == ES_FRAME_OPENED) break;
        if (f->h.type == ES_FRAME_ERROR) {
            es_msg_error em;
            if (es_proto_get_error(f->data, f->len, &em, err) != ES_OK) s = es_fail(err, ES_ERR_PROTOCOL, "malformed ERROR frame");
            else s = es_fail(err, perr_recoverable(em.code) ? ES_ERR_IO : perr_status(em.code), "the server refused the session (%s): %s",
                             es_proto_err_name(em.code), em.msg);
            free(f);
            return s;
        }
        if (f->h.type == ES_FRAME_CLOSE) { free(f); continue; } /* a stale close of this id: cannot be, but harmless */
        s = es_fail(err, ES_ERR_PROTOCOL, "expected OPENED, got %s", es_frame_type_name(f->h.type));
        free(f);
        return s;
    }
    s = es_proto_get_opened(f->data, f->len, op, err);
    free(f);
    if (s != ES_OK) return es_fail(err, ES_ERR_PROTOCOL, "malformed OPENED: %s", err ? err->msg : "");
    return ES_OK;
}

/* Sends OPEN for the rest of the generation (prompt + tokens so far) and waits for OPENED. */
static es_status open_session(gen *g, es_err *err) {
    es_edge *e = g->e;
    es_status s = open_check(g, err);
    if (s != ES_OK) return s;
    es_msg_open m;
    open_msg(g, &m);
    g->session = e->next_session++;
    if (e->next_session == 0) e->next_session = 1;
    es_wbuf w;
    wbuf_reset(e, &w);
    if ((s = es_proto_put_open(&w, g->session, &m, err)) != ES_OK) return s;
    if (g->t_open == 0) g->t_open = es_now_s();
    if ((s = edge_send(e, &w, err)) != ES_OK) return s;
    es_msg_opened op;
    if ((s = await_opened(g, &op, err)) != ES_OK) return s;
    /* the server's numbers against what was asked, before any is used (a cast of a huge grant
       would turn it negative) */
    const uint32_t asked = (uint32_t)(g->max_tokens - g->n);
    if (op.max_tokens < 1 || op.max_tokens > asked)
        return es_fail(err, ES_ERR_PROTOCOL, "the server granted %u tokens when %u were asked", op.max_tokens, asked);
    if (op.n_ctx > ES_EDGE_MAX_CTX)
        return es_fail(err, ES_ERR_PROTOCOL, "the server announced a context of %u positions (at most %d)", op.n_ctx, ES_EDGE_MAX_CTX);
    if (op.n_prompt > ES_EDGE_MAX_CTX)
        return es_fail(err, ES_ERR_PROTOCOL, "the server counted %u prompt tokens", op.n_prompt);
    if (!g->prompt && g->st->n_prompt == 0) g->st->n_prompt = (int)op.n_prompt;
    g->n_ctx = op.n_ctx > 0 ? (int)op.n_ctx : 1 << 30;
    if (e->dctx && e->n_ctx_draft < g->n_ctx) g->n_ctx = e->n_ctx_draft;
    if (op.max_tokens < asked) {
        edge_log(e, 2, "the server granted %u of %d tokens", op.max_tokens, g->max_tokens - g->n);
        g->max_tokens = g->n + (int)op.max_tokens;
    }
    g->hint = 0;
    return ES_OK;
}

/* Ends the server session early (we stopped before the server did). Errors are ignored: the
 * generation is complete either way. */
static void close_session(gen *g) {
    es_msg_close c = {ES_STOP_CLIENT, (uint32_t)g->n};
    es_wbuf w;
    es_err err;
    wbuf_reset(g->e, &w);
    if (es_proto_put_close(&w, g->session, &c, &err) == ES_OK) (void)edge_send(g->e, &w, &err);
}

/* The server's frame for the session turned out to be an ERROR or a CLOSE: the status to return.
 * CLOSE ends the generation with its stop reason (ES_OK). */
static es_status session_frame_end(gen *g, const qframe *f, es_err *err) {
    if (f->h.type == ES_FRAME_CLOSE) {
        es_msg_close c;
        if (es_proto_get_close(f->data, f->len, &c, err) != ES_OK) return es_fail(err, ES_ERR_PROTOCOL, "malformed CLOSE frame");
        g->done = true;
        g->stop_reason = c.stop;
        if (c.stop == ES_STOP_ERROR) return es_fail(err, ES_ERR_PROTOCOL, "the server closed the session with an error");
        return ES_OK;
    }
    if (f->h.type == ES_FRAME_ERROR) {
        es_msg_error em;
        if (es_proto_get_error(f->data, f->len, &em, err) != ES_OK) return es_fail(err, ES_ERR_PROTOCOL, "malformed ERROR frame");
        return es_fail(err, perr_recoverable(em.code) ? ES_ERR_IO : perr_status(em.code), "server error (%s): %s",
                       es_proto_err_name(em.code), em.msg);
    }
    return es_fail(err, ES_ERR_PROTOCOL, "unexpected %s frame in a session", es_frame_type_name(f->h.type));
}

/* Back to the server from local generation: a new connection and a session re-opened with everything
 * confirmed so far. True when verified generation can go on. */
static bool try_resume(gen *g) {
    es_edge *e = g->e;
    es_err why = {{0}};
    if (edge_handshake(e, &why) != ES_OK || open_session(g, &why) != ES_OK) return false;
    g->st->reconnects++;
    edge_log(e, 1, "the server is back: verified generation resumes after %d tokens", g->n);
    return true;
}

/* Generates with the draft model alone from the confirmed tokens, until the generation ends or the
 * server can be reached again (g->resumed; tried with capped exponential backoff, 100 ms doubling to
 * 5 s, between tokens). The draft cache must hold a prefix of the confirmed tokens (kv_len). */
static es_status run_local(gen *g, int kv_len, es_err *err) {
    es_edge *e = g->e;
    edge_log(e, 1, "the server is gone: continuing with the draft model alone after %d tokens (output is the draft's, not the target's)", g->n);
    double backoff = 0.1, next_try = es_now_s() + backoff;
    const int n_vocab = es_model_n_vocab(e->p.draft);
    es_sampler *smp = NULL;
    es_status s = es_sampler_init(&e->p.sampling, n_vocab, &smp, err);
    if (s != ES_OK) return s;
    /* a response format holds here too: the draft samples under the grammar's mask (the sampler's
       own constrained decoding), from where the output stands */
    if (g->gm) {
        es_gmatcher_reset(g->gm);
        for (int i = 0; i < g->n; i++) es_gmatcher_accept(g->gm, g->out[i]);
    }
    if ((s = es_seq_truncate(e->dctx, e->dseq, kv_len, err)) != ES_OK) { es_sampler_free(smp); return s; }
    int32_t pos[ES_SPEC_MAX_NODES + 1], seq[ES_SPEC_MAX_NODES + 1];
    int at = kv_len;
    const int n_ctx = e->n_ctx_draft;
    while (!g->done) {
        const int len = g->n_prompt + g->n;
        if (len >= n_ctx) { g->done = true; g->stop_reason = ES_STOP_CONTEXT; break; }
        const float *logits = NULL;
        while (at < len) { /* feed the confirmed tokens the cache lacks, in chunks */
            const int m = len - at < ES_SPEC_MAX_NODES + 1 ? len - at : ES_SPEC_MAX_NODES + 1;
            for (int i = 0; i < m; i++) { pos[i] = at + i; seq[i] = e->dseq; }
            es_batch b = {m, g->conf + at, pos, seq, NULL, NULL, NULL};
            if ((s = es_decode(e->dctx, &b, err)) != ES_OK) { es_sampler_free(smp); return s; }
            logits = es_ctx_logits(e->dctx, m - 1);
            at += m;
        }
        if (g->gm) {
            const uint64_t *mask = es_gmatcher_mask(g->gm);
            bool any = false;
            for (int w = 0; w < (n_vocab + 63) / 64 && !any; w++) any = mask[w] != 0;
            if (!any) { g->done = true; g->stop_reason = ES_STOP_EOS; break; } /* the document is complete */
            es_sampler_set_mask(smp, mask);
        }
        const int32_t t = es_sampler_sample(smp, logits);
        es_sampler_accept(smp, t);
        if (g->gm) es_gmatcher_accept(g->gm, t);
        es_token_logprob lp; /* the draft's own: the target is not there to ask */
        if (e->top_logprobs >= 0) es_token_logprob_compute(logits, n_vocab, t, e->top_logprobs, &lp);
        g->st->fallback_tokens++;
        emit(g, &t, 1, e->top_logprobs >= 0 ? &lp : NULL);
        if (!g->done && es_now_s() >= next_try) {
            if (try_resume(g)) {
                g->resumed = true;
                break;
            }
            backoff = backoff * 2 < 5.0 ? backoff * 2 : 5.0;
            next_try = es_now_s() + backoff;
        }
    }
    es_sampler_free(smp);
    return ES_OK;
}

/* The connection died mid-generation: fall back to the draft, or reconnect with backoff and re-open
 * the session. `kv_len`: the confirmed tokens the draft cache still holds (fallback). Returns ES_OK
 * when the generation can go on (or finished locally). */
static es_status recover(gen *g, int kv_len, const es_err *why, es_err *err) {
    es_edge *e = g->e;
    if (e->p.fallback_local && e->dctx) {
        g->resumed = false;
        const int n_before = g->n;
        es_status s = run_local(g, kv_len, err);
        if (g->d) es_drafter_feed_grammar(g->d, g->out + n_before, g->n - n_before); /* the tokens made locally */
        /* the local tokens were decoded past the drafter's bookkeeping: back to its kv_len, the rest
           (all confirmed but the new root) queued for its next draft */
        if (s == ES_OK && g->resumed && g->d)
            s = es_drafter_rewind(g->d, kv_len, g->conf + kv_len, g->n_prompt + g->n - 1 - kv_len, err);
        return s;
    }
    double backoff = 0.1;
    if (g->t_lost <= 0) g->t_lost = es_now_s();
    es_err last;
    snprintf(last.msg, sizeof last.msg, "%s", why ? why->msg : "connection lost");
    for (int a = 1; a <= e->p.reconnect_attempts; a++) {
        /* the first attempt at once: behind a balancer the connection lands on a live replica, and
           every millisecond here is a stall the user sees; then 100 ms doubling to 5 s */
        const double wait = a == 1 ? 0 : backoff;
        edge_log(e, 1, "lost the server (%s); reconnecting in %.1f s (attempt %d of %d)", last.msg, wait, a, e->p.reconnect_attempts);
        reconnect_pause(a, &backoff);
        es_status s = edge_handshake(e, &last);
        if (s == ES_OK) s = open_session(g, &last);
        if (s == ES_OK) {
            g->st->reconnects++;
            edge_log(e, 2, "reconnected; resuming after %d tokens", g->n);
            return ES_OK;
        }
        if (s != ES_ERR_IO && s != ES_ERR_TIMEOUT && s != ES_ERR_BUSY) {
            if (err) *err = last;
            return s;
        }
    }
    return es_fail(err, ES_ERR_IO, "the server is unreachable after %d reconnection attempts: %s", e->p.reconnect_attempts, last.msg);
}

static bool lost(es_status s) { return s == ES_ERR_IO || s == ES_ERR_TIMEOUT; }

/* The log-probabilities of n confirmed tokens from the server (lp NULL: none came): there exactly when
 * they were asked for, with as many alternatives as asked and every id inside the vocabulary. */
static es_status check_logprobs(const es_edge *e, const es_token_logprob *lp, int n, const char *what, es_err *err) {
    if ((lp != NULL) != (e->top_logprobs >= 0))
        return es_fail(err, ES_ERR_PROTOCOL, "%s %s log-probabilities", what, lp ? "carries unasked-for" : "lacks the asked-for");
    for (int i = 0; lp && i < n; i++) {
        if (lp[i].n_top > e->top_logprobs)
            return es_fail(err, ES_ERR_PROTOCOL, "%s: %d alternatives for token %d (%d asked for)", what, lp[i].n_top, i, e->top_logprobs);
        for (int k = 0; k < lp[i].n_top; k++)
            if (e->welcome.n_vocab && (uint32_t)lp[i].top_id[k] >= e->welcome.n_vocab)
                return es_fail(err, ES_ERR_PROTOCOL, "%s: alternative token %d is outside the vocabulary", what, lp[i].top_id[k]);
    }
    return ES_OK;
}

/* Plain client: the server generates and streams TOKENS. */
static es_status run_plain(gen *g, es_err *err) {
    es_edge *e = g->e;
    es_status s = open_session(g, err);
    while (s == ES_OK && !g->done) {
        qframe *f = NULL;
        const double t = es_now_s();
        s = edge_next(e, g->session, true, &f, err);
        g->st->wait_seconds += es_now_s() - t;
        if (s == ES_OK && !f) { /* cancelled while the server computes: end the server's session too */
            g->done = true;
            g->stop_reason = ES_STOP_CLIENT;
            close_session(g);
            break;
        }
        if (s == ES_OK) {
            if (f->h.type == ES_FRAME_TOKENS) {
                es_msg_tokens tm;
                tm.tokens = e->tokbuf;
                tm.lp = e->top_logprobs >= 0 ? e->lpbuf : NULL; /* a block nobody asked for is refused */
                s = es_proto_get_tokens(f->data, f->len, &tm, err);
                if (s != ES_OK) s = es_fail(err, ES_ERR_PROTOCOL, "malformed TOKENS: %s", err ? err->msg : "");
                else {
                    for (int k = 0; k < tm.n; k++)
                        if (tm.tokens[k] < 0 || (e->welcome.n_vocab && (uint32_t)tm.tokens[k] >= e->welcome.n_vocab))
                            s = es_fail(err, ES_ERR_PROTOCOL, "the server sent token %d, outside the vocabulary", tm.tokens[k]);
                    if (s == ES_OK && tm.n > 0)
                        s = check_logprobs(e, tm.has_lp ? tm.lp : NULL, tm.n, "TOKENS", err);
                    if (s == ES_OK) {
                        g->st->rounds++;
                        emit(g, tm.tokens, tm.n, tm.has_lp ? tm.lp : NULL);
                        if (tm.stop != ES_STOP_NONE) {
                            if (!g->done) g->stop_reason = tm.stop;
                            g->done = true;
                        } else if (g->done) close_session(g);
                    }
                }
            } else s = session_frame_end(g, f, err);
            free(f);
        }
        if (lost(s) && !g->done) {
            es_err why = err ? *err : (es_err){{0}};
            s = recover(g, 0, &why, err);
        }
    }
    return s;
}

/* The bet path. ES_BET_FIRST (default): the first child at every level, the draft's most likely
 * child, down to the deepest leaf on that line. ES_BET_BEST_LEAF (SpecEdge): the path to the leaf the
 * draft scores highest, its cumulative log-probability plus log 0.9 per level (SpecEdge's node score);
 * ties go to the deeper leaf. The draft's probabilities understate how often the target follows its
 * greedy line, so the best leaf is often a shallow sibling that the target rejects: it hit about half
 * as often in our measurement (es_bet_rule). Without scores (a chain; a tree no longer in the
 * drafter) the first-child path. */
static int bet_path(const es_spec_tree *t, const es_drafter *d, int rule, int32_t *path) {
    int best = -1;
    if (rule == ES_BET_BEST_LEAF) {
        bool has_child[ES_SPEC_MAX_NODES] = {false};
        for (int i = 0; i < t->n; i++)
            if (t->parent[i] >= 0) has_child[t->parent[i]] = true;
        float best_v = -INFINITY;
        for (int i = 0; i < t->n; i++) {
            if (has_child[i]) continue;
            const float sc = es_drafter_node_score(d, i);
            if (isnan(sc)) { best = -1; break; }
            const float v = sc + (float)t->depth[i] * -0.10536052f; /* log 0.9 */
            if (v > best_v || (v == best_v && best >= 0 && t->depth[i] > t->depth[best])) { best_v = v; best = i; }
        }
    }
    int n = 0;
    if (best >= 0) {
        int rev[ES_SPEC_MAX_NODES];
        for (int at = best; at >= 0; at = t->parent[at]) rev[n++] = at;
        for (int k = 0; k < n; k++) path[k] = rev[n - 1 - k];
        return n;
    }
    int at = -1;
    for (int i = 0; i < t->n; i++)
        if (t->parent[i] == at) { path[n++] = i; at = i; }
    return n;
}

/* Tree size for the round whose root is confirmed token number conf_len - 1, after n_done tokens. */
static int round_budget(const gen *g, int n_done, int conf_len) {
    int m = g->max_tokens - n_done - 1;
    const int room = g->n_ctx - conf_len - 1;
    if (m > room) m = room;
    if (m > ES_SPEC_MAX_NODES) m = ES_SPEC_MAX_NODES;
    if (g->e->welcome.max_tree_nodes > 0 && m > (int)g->e->welcome.max_tree_nodes) m = (int)g->e->welcome.max_tree_nodes;
    if (g->e->p.adapt_to_server && g->hint == ES_HINT_NO_DRAFT) m = 0; /* the server is saturated */
    else if (g->e->p.adapt_to_server && g->hint > 0 && m > g->hint) m = g->hint;
    return m > 0 ? m : 0;
}

/* Checks a verdict against the tree it answers. */
static es_status check_verdict(const es_edge *e, const es_spec_tree *t, const es_msg_verdict *m, uint32_t round, es_err *err) {
    const es_spec_verdict *v = &m->v;
    if (m->round != round) return es_fail(err, ES_ERR_PROTOCOL, "verdict for round %u while round %u is pending", m->round, round);
    if (v->n_accepted < 0 || v->n_accepted > t->n)
        return es_fail(err, ES_ERR_PROTOCOL, "verdict accepts %d nodes of a %d-node tree", v->n_accepted, t->n);
    if (v->n_tokens != v->n_accepted + 1) return es_fail(err, ES_ERR_PROTOCOL, "verdict has %d tokens for %d accepted nodes", v->n_tokens, v->n_accepted);
    int parent = -1;
    for (int k = 0; k < v->n_accepted; k++) {
        const int idx = v->path[k];
        if (idx < 0 || idx >= t->n || t->parent[idx] != parent)
            return es_fail(err, ES_ERR_PROTOCOL, "verdict path step %d (node %d) is not a child of the previous step", k, idx);
        if (v->tokens[k] != t->token[idx])
            return es_fail(err, ES_ERR_PROTOCOL, "verdict token %d differs from node %d's token %d", v->tokens[k], idx, t->token[idx]);
        parent = idx;
    }
    const int32_t bonus = v->tokens[v->n_accepted];
    if (bonus < 0 || (e->welcome.n_vocab && (uint32_t)bonus >= e->welcome.n_vocab))
        return es_fail(err, ES_ERR_PROTOCOL, "verdict bonus token %d is outside the vocabulary", bonus);
    return ES_OK;
}

/* The drafter's abort hook while it drafts under a bet: stop once the real verdict (or anything
 * else) has arrived, so betting never delays the answer to it. */
static bool bet_abort(void *ud) { return wire_ready(((es_edge *)ud)->w); }

/* One round of edge mode after its tree went out: the bet placed while the tree travels, and the
 * provisional verdict of an EARLY frame. The bet path (a made-up verdict) is e->bet, the tree drafted
 * after it e->next. */
typedef struct edge_round {
    uint32_t id;                 /* the round number its verdict must carry */
    int conf_len;                /* confirmed tokens (prompt + generated) when the tree was drafted */
    int base;                    /* the drafter's KV length before the bet (the root's slot) */
    bool bet;                    /* the drafter stands on the bet path e->bet.path[0 .. pl) + bonus_bet */
    bool bet_tree, bet_cut;      /* a tree was drafted after the bet into e->next; bet_abort cut it short */
    int pl;
    int32_t bonus_bet;
    es_drafter_state snap;       /* the drafter before the bet */
    bool early_seen;             /* an EARLY frame came ... */
    bool from_early;             /* ... and the bet stands on its provisional verdict */
    double t_early;
    int early_n;                 /* the provisional verdict: path early_path[0 .. early_n), bonus */
    int32_t early_path[ES_SPEC_MAX_PATH], early_bonus;
    bool placed;                 /* a bet was placed this round: its path placed_path[0 .. placed_n), bonus */
    int placed_n;
    int32_t placed_path[ES_SPEC_MAX_PATH], placed_bonus;
} edge_round;

/* The weight of the newest round in the guesses' hit rates, and the rounds an edge follows EARLY
 * frames before it compares (the rates mean little before). */
#define EDGE_RATE_ALPHA 0.125
#define EDGE_EARLY_WARMUP 4

/* Whether a verdict's path and bonus are the guess's. */
static bool guess_hit(const es_spec_verdict *v, const int32_t *path, int n, int32_t bonus) {
    bool hit = v->n_accepted == n && v->bonus == bonus;
    for (int k = 0; hit && k < n; k++) hit = v->path[k] == path[k];
    return hit;
}

/* The drafter over the prompt (all but its last token, the first root, which *root gets) and the
 * server session; a server lost already is recovered from (tokens may be made locally meanwhile). */
static es_status edge_begin(gen *g, int32_t *root, es_err *err) {
    es_edge *e = g->e;
    es_drafter_params dp = e->p.draft_params;
    dp.sample = e->p.rule == ES_ACCEPT_REJECTION;
    es_status s = es_seq_truncate(e->dctx, e->dseq, 0, err);
    if (s != ES_OK) return s;
    if ((s = es_drafter_init(e->dctx, e->dseq, &dp, &g->d, err)) != ES_OK) return s;
    if ((s = es_drafter_set_bias(g->d, e->p.sampling.bias, e->p.sampling.n_bias, err)) != ES_OK) return s; /* as the target's sampler */
    if (e->grammar) { /* drafts under the response format's mask, so the masked target accepts them */
        if ((s = es_gmatcher_init(e->grammar, e->gvocab, g->stop, g->n_stop < ES_GRAMMAR_MAX_END ? g->n_stop : ES_GRAMMAR_MAX_END,
                                  &g->gm, err)) != ES_OK)
            return s;
        if ((s = es_drafter_set_grammar(g->d, g->gm, err)) != ES_OK) return s;
    }
    if ((s = es_drafter_prefill(g->d, g->prompt, g->n_prompt - 1, err)) != ES_OK) return s;
    *root = g->prompt[g->n_prompt - 1];
    if ((s = open_session(g, err)) != ES_OK && !lost(s)) return s;
    if (lost(s)) {
        es_err why = err ? *err : (es_err){{0}};
        if ((s = recover(g, 0, &why, err)) != ES_OK) return s;
        if (g->done) return ES_OK;
        *root = g->conf[g->n_prompt + g->n - 1]; /* tokens may have been made locally meanwhile */
    }
    return ES_OK;
}

/* The round's tree into e->tree: drafted from root, or (ready) the one drafted under the winning bet. */
static es_status draft_tree(gen *g, bool ready, int32_t root, int conf_len, es_err *err) {
    es_edge *e = g->e;
    const double t = es_now_s();
    if (ready) {
        /* a tree drafted under the bet and stopped when the verdict came is finished first (the
         * tree it would have been uncut), then: drafted with the hint of the round before, the
         * verdict since may have asked for smaller trees (or none). Nodes come parents first, so
         * the first m are a tree. */
        if (es_drafter_aborted(g->d)) {
            const es_status s = es_drafter_resume(g->d, &e->next, err);
            if (s != ES_OK) return s;
            g->st->proactive_resumed++;
        }
        memcpy(&e->tree, &e->next, sizeof e->tree);
        const int m = round_budget(g, g->n, conf_len);
        if (e->tree.n > m) {
            e->tree.n = m;
            g->st->proactive_cut++;
        }
    } else {
        es_status s = es_drafter_draft(g->d, root, round_budget(g, g->n, conf_len), &e->tree, err);
        if (s != ES_OK) return s;
    }
    g->st->draft_seconds += es_now_s() - t;
    return ES_OK;
}

/* The next tree, after the bet (root rd->bonus_bet, n_done tokens and conf_len confirmed by then),
 * into e->next; the drafter stops when anything arrives from the server (bet_abort). */
static es_status draft_after_bet(gen *g, edge_round *rd, int n_done, int conf_len, es_err *err) {
    es_drafter_set_abort(g->d, bet_abort, g->e);
    es_status s = es_drafter_draft(g->d, rd->bonus_bet, round_budget(g, n_done, conf_len), &g->e->next, err);
    es_drafter_set_abort(g->d, NULL, NULL);
    if (s != ES_OK) return s;
    rd->bet_cut = es_drafter_aborted(g->d);
    rd->bet_tree = true;
    return ES_OK;
}

/* The proactive bet, while the tree travels: the drafter accepts the bet path (bet_path) as if the
 * verdict had, predicts the bonus token, and drafts the next tree from it. No bet on a path that holds
 * a stop token or would end past max_tokens or the context. */
static es_status place_bet(gen *g, edge_round *rd, es_err *err) {
    es_edge *e = g->e;
    es_drafter *d = g->d;
    const double t = es_now_s();
    rd->pl = bet_path(&e->tree, d, e->p.bet, e->bet.path);
    bool has_stop = false;
    for (int k = 0; k < rd->pl; k++) has_stop |= is_stop(g, e->tree.token[e->bet.path[k]]);
    if (!has_stop && g->n + rd->pl + 1 < g->max_tokens && rd->conf_len + rd->pl + 1 < g->n_ctx) {
        es_drafter_save(d, &rd->snap);
        e->bet.n_accepted = rd->pl;
        /* the path's tokens move the grammar (es_drafter_predict adds the bonus it guesses) */
        for (int k = 0; k < rd->pl; k++) e->bet.tokens[k] = e->tree.token[e->bet.path[k]];
        e->bet.n_tokens = rd->pl;
        es_status s;
        if ((s = es_drafter_accept(d, &e->tree, &e->bet, err)) != ES_OK) return s;
        if ((s = es_drafter_predict(d, &rd->bonus_bet, err)) != ES_OK) return s;
        rd->bet = true;
        rd->placed = true;
        rd->placed_n = rd->pl;
        memcpy(rd->placed_path, e->bet.path, (size_t)rd->pl * sizeof(int32_t));
        rd->placed_bonus = rd->bonus_bet;
        g->st->proactive_attempts++;
        if (!is_stop(g, rd->bonus_bet)) {
            if ((s = draft_after_bet(g, rd, g->n + rd->pl + 1, rd->conf_len + rd->pl + 1, err)) != ES_OK) return s;
            if (rd->bet_cut) g->st->proactive_stopped++;
        }
    }
    g->st->draft_seconds += es_now_s() - t;
    return ES_OK;
}

/* An EARLY frame (f, freed here), the provisional verdict of a session that asked for early exits,
 * range-checked like the verdict it stands for. Unless the bet already stands on its path with a whole
 * tree, the drafter moves onto that path (root and the prefix shared with the bet stay) and drafts the
 * next tree from it instead of the bet's. */
static es_status take_early(gen *g, edge_round *rd, qframe *f, es_err *err) {
    es_edge *e = g->e;
    es_drafter *d = g->d;
    es_msg_early em;
    es_status s = es_proto_get_early(f->data, f->len, &em, err);
    free(f);
    if (s != ES_OK) {
        char why[sizeof err->msg]; /* (not err->msg itself: es_fail writes there) */
        snprintf(why, sizeof why, "%s", err ? err->msg : "");
        return es_fail(err, ES_ERR_PROTOCOL, "malformed EARLY: %.400s", why);
    }
    if (!e->p.early_exit || rd->early_seen)
        return es_fail(err, ES_ERR_PROTOCOL, "%s EARLY frame for round %u", rd->early_seen ? "a second" : "an unasked-for", em.round);
    const es_msg_verdict as_v = {.round = em.round, .v = em.v};
    if ((s = check_verdict(e, &e->tree, &as_v, rd->id, err)) != ES_OK)
        return es_fail(err, s, "EARLY frame: %s", err ? err->msg : ""); /* (es_fail formats before it copies) */
    rd->early_seen = true;
    rd->t_early = es_now_s();
    g->st->early_frames++;
    const es_spec_verdict *pv = &em.v;
    const int pn = pv->n_accepted;
    rd->early_n = pn;
    memcpy(rd->early_path, pv->path, (size_t)pn * sizeof(int32_t));
    rd->early_bonus = pv->bonus;
    bool has_stop = false;
    for (int k = 0; k <= pn; k++) has_stop |= is_stop(g, pv->tokens[k]);
    if (has_stop || g->n + pn + 1 >= g->max_tokens || rd->conf_len + pn + 1 >= g->n_ctx) return ES_OK;
    /* the bet already stands on this path: its tree is kept — finished if this frame's arrival
       stopped it (until the verdict comes) */
    bool same = rd->bet && rd->pl == pn && rd->bonus_bet == pv->bonus;
    for (int k = 0; same && k < pn; k++) same = e->bet.path[k] == pv->path[k];
    if (same) {
        rd->from_early = true;
        if (rd->bet_tree && rd->bet_cut) {
            const double t = es_now_s();
            es_drafter_set_abort(d, bet_abort, e);
            s = es_drafter_resume(d, &e->next, err);
            es_drafter_set_abort(d, NULL, NULL);
            if (s != ES_OK) return s;
            rd->bet_cut = es_drafter_aborted(d);
            g->st->draft_seconds += es_now_s() - t;
        }
        return ES_OK;
    }
    /* another path than the bet's: follow it only while EARLY frames have been the better guess
       (an exit head that seldom agrees would throw away bets that would have hit) */
    if (rd->bet && e->p.early_follow == ES_EARLY_FOLLOW_ADAPTIVE && e->n_early_seen >= EDGE_EARLY_WARMUP &&
        e->early_rate <= e->bet_rate) {
        g->st->early_ignored++;
        return ES_OK;
    }
    const double t = es_now_s();
    if (rd->bet) { /* off the bet's path: root + the shared prefix stay, the rest is queued */
        int j = 0;
        while (j < pn && j < rd->pl && pv->path[j] == e->bet.path[j]) j++;
        if ((s = es_drafter_rewind(d, rd->base + 1 + j, pv->tokens + j, pn - j, err)) != ES_OK) return s;
        es_drafter_restore(d, &rd->snap);
        es_drafter_adapt(d, e->tree.n, pn);
        es_drafter_feed_grammar(d, pv->tokens, pv->n_tokens);
    } else {
        es_drafter_save(d, &rd->snap);
        e->bet.n_accepted = pn;
        memcpy(e->bet.path, pv->path, (size_t)pn * sizeof(int32_t));
        memcpy(e->bet.tokens, pv->tokens, (size_t)pv->n_tokens * sizeof(int32_t)); /* bonus included */
        e->bet.n_tokens = pv->n_tokens;
        if ((s = es_drafter_accept(d, &e->tree, &e->bet, err)) != ES_OK) return s;
    }
    memcpy(e->bet.path, pv->path, (size_t)pn * sizeof(int32_t));
    e->bet.n_accepted = rd->pl = pn;
    rd->bonus_bet = pv->bonus;
    rd->bet = true;
    rd->from_early = true;
    if ((s = draft_after_bet(g, rd, g->n + pn + 1, rd->conf_len + pn + 1, err)) != ES_OK) return s;
    g->st->draft_seconds += es_now_s() - t;
    return ES_OK;
}

/* The server was lost during the round: the drafter goes back to the state before the round's bet
 * (the cache holds the confirmed tokens but the root, which the next draft evaluates again), then a
 * new session; *root is the last confirmed token (tokens may have been made locally meanwhile). */
static es_status recover_round(gen *g, edge_round *rd, int32_t *root, es_err *err) {
    if (rd->bet) {
        es_status s2 = es_drafter_rewind(g->d, rd->base, NULL, 0, err);
        if (s2 != ES_OK) return s2;
        es_drafter_restore(g->d, &rd->snap);
    }
    es_err why = err ? *err : (es_err){{0}};
    es_status s = recover(g, rd->base, &why, err);
    if (s != ES_OK) return s;
    *root = g->conf[g->n_prompt + g->n - 1];
    return ES_OK;
}

/* The round's VERDICT (f, freed here), checked against the tree and counted. A bet it confirms is kept
 * (*ready: its tree is the next round's); otherwise the drafter moves to the verdict's path. Then its
 * tokens are confirmed, and *root is the next round's root. */
static es_status take_verdict(gen *g, edge_round *rd, qframe *f, bool *ready, int32_t *root, es_err *err) {
    es_edge *e = g->e;
    es_drafter *d = g->d;
    es_edge_stats *st = g->st;
    es_msg_verdict vr;
    es_status s = es_proto_get_verdict(f->data, f->len, &vr, err);
    free(f);
    if (s != ES_OK) return es_fail(err, ES_ERR_PROTOCOL, "malformed VERDICT: %s", err ? err->msg : "");
    if ((s = check_verdict(e, &e->tree, &vr, rd->id, err)) != ES_OK) return s;
    if ((s = check_logprobs(e, vr.has_lp ? vr.lp : NULL, vr.v.n_tokens, "VERDICT", err)) != ES_OK) return s;
    const es_spec_verdict *v = &vr.v;
    if (rd->early_seen) {
        if (st->n_early_lead < ES_EDGE_MAX_LEADS) st->early_lead_ms[st->n_early_lead++] = (float)(1000.0 * (es_now_s() - rd->t_early));
        /* agreement is the provisional verdict against the final one, whatever was drafted */
        const bool agree = guess_hit(v, rd->early_path, rd->early_n, rd->early_bonus);
        st->early_agreed += agree;
        e->early_rate += EDGE_RATE_ALPHA * ((agree ? 1.0 : 0.0) - e->early_rate);
        e->n_early_seen++;
    }
    if (rd->placed) { /* the bet as placed, whatever an EARLY frame made of it */
        e->bet_rate += EDGE_RATE_ALPHA * ((guess_hit(v, rd->placed_path, rd->placed_n, rd->placed_bonus) ? 1.0 : 0.0) - e->bet_rate);
        e->n_bet_seen++;
    }
    st->rounds++;
    st->drafted += e->tree.n;
    st->accepted += v->n_accepted;
    for (int k = 1; k <= v->n_accepted; k++) st->accepted_at_depth[k]++;
    g->hint = vr.suggested_budget;
    if (rd->bet) {
        const int pl = rd->pl;
        int j = 0;
        while (j < v->n_accepted && j < pl && v->path[j] == e->bet.path[j]) j++;
        /* (a bet tree cut short is finished before it is sent — es_drafter_resume: the tree it would
           have been uncut, the same random draws — so a sampled run stays token-identical to one
           without bets) */
        if (v->n_accepted == pl && j == pl && v->tokens[pl] == rd->bonus_bet) {
            if (rd->from_early) st->early_kept += rd->bet_tree;
            else st->proactive_hits++;
            *ready = rd->bet_tree;
        } else {
            /* miss: keep root + the shared prefix of the path, queue the rest */
            if ((s = es_drafter_rewind(d, rd->base + 1 + j, v->tokens + j, v->n_accepted - j, err)) != ES_OK) return s;
            es_drafter_restore(d, &rd->snap);
            es_drafter_adapt(d, e->tree.n, v->n_accepted);
            es_drafter_feed_grammar(d, v->tokens, v->n_tokens);
        }
    } else if ((s = es_drafter_accept(d, &e->tree, v, err)) != ES_OK) return s;
    emit(g, v->tokens, v->n_tokens, vr.has_lp ? vr.lp : NULL);
    if (vr.stop != ES_STOP_NONE) {
        if (!g->done) g->stop_reason = vr.stop;
        g->done = true;
    } else if (g->done) close_session(g);
    *root = v->tokens[v->n_accepted];
    return ES_OK;
}

/* Edge mode: draft locally, verify remotely, with the proactive bet. Each round: the tree is drafted
 * (or taken from a winning bet) and sent; the bet is placed while it travels; the verdict is awaited
 * (an EARLY frame before it may move the bet); a lost server is recovered from, else the verdict is
 * taken. */
static es_status run_edge(gen *g, es_err *err) {
    es_edge *e = g->e;
    int32_t root;
    es_status s = edge_begin(g, &root, err);
    if (s != ES_OK || g->done) return s;
    uint32_t round = 0;
    bool ready = false; /* e->next holds a tree drafted under a winning bet */
    es_tree_origin origin = ES_TREE_FRESH; /* how the round's tree came to be (VERIFY tells version 3 servers) */
    while (!g->done) {
        const int conf_len = g->n_prompt + g->n;
        if (conf_len >= g->n_ctx) { g->done = true; g->stop_reason = ES_STOP_CONTEXT; close_session(g); break; }
        if ((s = draft_tree(g, ready, root, conf_len, err)) != ES_OK) return s;
        ready = false;
        edge_round rd = {.id = round, .conf_len = conf_len, .base = es_drafter_kv_len(g->d), .bonus_bet = -1, .early_bonus = -1};
        es_msg_verify vm = {round, &e->tree, e->welcome.version >= ES_PROTO_LEVEL_BET ? (uint8_t)origin : ES_TREE_FRESH};
        g->st->trees[origin]++;
        es_wbuf w;
        wbuf_reset(e, &w);
        if ((s = es_proto_put_verify(&w, g->session, &vm, err)) != ES_OK) return s;
        s = edge_send(e, &w, err);
        if (s == ES_OK && e->p.proactive && e->tree.n > 0) {
            const es_status bs = place_bet(g, &rd, err);
            if (bs != ES_OK) return bs;
        }
        /* the verdict (and, before it, the EARLY of a session that asked: the next tree is drafted
           from the provisional verdict instead of the bet) */
        qframe *f = NULL;
        while (s == ES_OK) {
            const double t = es_now_s();
            s = edge_next(e, g->session, true, &f, err);
            g->st->wait_seconds += es_now_s() - t;
            if (s != ES_OK || !f || f->h.type != ES_FRAME_EARLY) break;
            const es_status es = take_early(g, &rd, f, err);
            f = NULL;
            if (es != ES_OK) return es;
        }
        if (s == ES_OK && !f) { /* cancelled while the verdict is awaited: end the server's session too */
            g->done = true;
            g->stop_reason = ES_STOP_CLIENT;
            close_session(g);
            break;
        }
        if (s == ES_OK && f->h.type != ES_FRAME_VERDICT) {
            s = session_frame_end(g, f, err);
            free(f);
            f = NULL;
            if (s == ES_OK) break; /* the server closed the session */
        }
        if (s != ES_OK) {
            if (!lost(s) || (s = recover_round(g, &rd, &root, err)) != ES_OK) return s;
            round = 0;
            origin = ES_TREE_FRESH;
            continue;
        }
        if ((s = take_verdict(g, &rd, f, &ready, &root, err)) != ES_OK) return s;
        /* a tree drafted under a bet (or an EARLY frame) is either the next one or was dropped */
        origin = ready ? (rd.from_early ? ES_TREE_EARLY_HIT : ES_TREE_BET_HIT) : rd.bet_tree ? ES_TREE_BET_MISS : ES_TREE_FRESH;
        round++;
    }
    return ES_OK;
}

static es_status generate(es_edge *e, const int32_t *prompt, int n_prompt, const char *text, int max_tokens, const int32_t *stop,
                          int n_stop, int32_t *out, es_edge_stats *st,
                          void (*on_tokens)(void *ud, const int32_t *toks, int n, double t_s), void *ud, es_err *err) {
    memset(st, 0, sizeof *st);
    if (max_tokens < 1) return es_fail(err, ES_ERR_INVALID_ARG, "max_tokens must be at least 1");
    if (n_stop < 0 || n_stop > ES_PROTO_MAX_STOP) return es_fail(err, ES_ERR_INVALID_ARG, "at most %d stop tokens", ES_PROTO_MAX_STOP);
    if (prompt && n_prompt < 1) return es_fail(err, ES_ERR_INVALID_ARG, "the prompt must hold at least one token");
    if (!prompt && (!text || e->p.mode == ES_MODE_EDGE)) return es_fail(err, ES_ERR_INVALID_ARG, "edge mode needs prompt token ids");
    if (!es_edge_connected(e)) { /* lost earlier, or never reached: one attempt now */
        es_err why = {{0}};
        const es_status hs = edge_handshake(e, &why);
        if (hs != ES_OK && !lost(hs)) { /* refused (vocabulary, version, key): no fallback hides that */
            if (err) *err = why;
            return hs;
        }
        if (hs != ES_OK && !(e->p.fallback_local && e->dctx && prompt))
            return es_fail(err, ES_ERR_IO, "the server is unreachable: %s", why.msg);
        if (hs != ES_OK) { /* a refused handshake may leave a live connection: generate without it */
            wire_close(e->w);
            e->w = NULL;
        }
    }
    if (atomic_load(&e->cancel)) { /* cancelled before it began */
        st->n_prompt = prompt ? n_prompt : 0;
        st->stop = ES_STOP_CLIENT;
        return ES_OK;
    }
    gen g;
    memset(&g, 0, sizeof g);
    g.e = e;
    g.prompt = prompt;
    g.n_prompt = prompt ? n_prompt : 0;
    g.text = text;
    g.max_tokens = max_tokens;
    g.stop = stop;
    g.n_stop = n_stop;
    g.out = out;
    g.st = st;
    g.cb = on_tokens;
    g.ud = ud;
    g.t0 = es_now_s();
    st->n_prompt = g.n_prompt;
    uint64_t cap;
    if (!es_add_ok((uint64_t)g.n_prompt, (uint64_t)max_tokens + 1, &cap) || cap > (1u << 28))
        return es_fail(err, ES_ERR_RANGE, "prompt + max_tokens too large");
    g.conf = malloc((size_t)cap * sizeof(int32_t));
    if (!g.conf) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    if (prompt) memcpy(g.conf, prompt, (size_t)n_prompt * sizeof(int32_t));
    e->st = st;
    es_status s = e->p.mode == ES_MODE_EDGE ? run_edge(&g, err) : run_plain(&g, err);
    e->st = NULL;
    es_drafter_free(g.d);
    es_gmatcher_free(g.gm);
    free(g.conf);
    st->n_generated = g.n;
    st->stop = g.stop_reason;
    st->total_s = es_now_s() - g.t0;
    return s;
}

es_status es_edge_generate(es_edge *e, const int32_t *prompt, int n_prompt, int max_tokens, const int32_t *stop, int n_stop,
                           int32_t *out, es_edge_stats *st,
                           void (*on_tokens)(void *ud, const int32_t *toks, int n, double t_s), void *ud, es_err *err) {
    if (!prompt) return es_fail(err, ES_ERR_INVALID_ARG, "no prompt");
    return generate(e, prompt, n_prompt, NULL, max_tokens, stop, n_stop, out, st, on_tokens, ud, err);
}

es_status es_edge_generate_text(es_edge *e, const char *text, int max_tokens, const int32_t *stop, int n_stop, int32_t *out,
                                es_edge_stats *st, void (*on_tokens)(void *ud, const int32_t *toks, int n, double t_s), void *ud,
                                es_err *err) {
    if (!text) return es_fail(err, ES_ERR_INVALID_ARG, "no prompt");
    return generate(e, NULL, 0, text, max_tokens, stop, n_stop, out, st, on_tokens, ud, err);
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

double es_edge_early_lead_p50(const es_edge_stats *st) {
    const int n = st->n_early_lead < ES_EDGE_MAX_LEADS ? st->n_early_lead : ES_EDGE_MAX_LEADS;
    if (n <= 0) return 0;
    float v[ES_EDGE_MAX_LEADS];
    memcpy(v, st->early_lead_ms, (size_t)n * sizeof(float));
    qsort(v, (size_t)n, sizeof v[0], cmp_float);
    return n % 2 ? v[n / 2] : 0.5 * ((double)v[n / 2 - 1] + v[n / 2]);
}
