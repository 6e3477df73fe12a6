/* edge_http.c — the edge's local OpenAI-compatible API: evhttp front end on a loop thread, a pool of
 * es_edge workers (see edge_http.h).
 *
 * Locks: `mu` guards the job queue, every worker's current job, the statistics and the stop flag;
 * the worker -> loop event queue (an es_wakeq, util/wakeq.h) has its own lock. Neither is held
 * while a generation runs or while the loop calls into the HTTP front end. A job is owned by the queue until a worker takes it (under mu),
 * then by that worker until it posts the end event and frees it (under mu). Cancelling (loop thread,
 * under mu) removes a queued job, or sets the cancel request of the es_edge running it; the worker
 * clears that request under mu when it takes its next job, so a late cancel never reaches the wrong
 * generation. Events of a cancelled request still in flight are purged or, arriving later, ignored by
 * the front end (it no longer knows the id). */
#include "edge/edge_http.h"

#include <event2/event.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grammar/grammar.h"
#include "http/oai.h"
#include "util/err.h"
#include "util/sig.h"
#include "util/wakeq.h"

#define EH_MAX_STOP 8

typedef struct ejob {
    struct ejob *next;
    uint64_t id;
    int32_t *prompt;
    int n_prompt;
    int max_tokens;
    es_sampler_params sampling;
    bool seeded;               /* the request named its seed (es_http_gen.seeded) */
    int32_t stop[EH_MAX_STOP];
    int n_stop;
    int n_gen;                 /* tokens handed to the loop so far (worker only) */
    es_stopwatch *watch;       /* the request's stop strings (NULL: none): the worker stops where one completes */
    int top_logprobs;          /* -1: no logprobs */
    es_grammar *grammar;       /* response_format (owned), or NULL */
    const es_token_logprob *lp_now; /* the log-probabilities of the tokens on_tokens gets next (worker only) */
    int n_lp_now;
    es_edge *e;                /* the worker's edge while it runs the job */
    struct es_edge_http *s;
} ejob;

typedef struct eworker {
    struct es_edge_http *s;
    es_edge *e;
    pthread_t th;
    bool started;
    ejob *job;                 /* the generation running now (under mu) */
    bool up;                   /* its edge holds a live connection to the server (under mu) */
    double backoff_s;          /* the next reconnection waits this long (worker only) */
    double next_try;           /* when an idle worker without a connection tries again (worker only) */
} eworker;

#define EH_BACKOFF_MIN_S 0.1
#define EH_BACKOFF_MAX_S 5.0
#define EH_CHECK_S 0.5 /* how often an idle, connected worker looks whether its connection still lives */

enum { EV_TOKENS = 1, EV_END = 2 };

typedef struct eev {
    es_wakeq_node node;        /* first: queue link; key = the request id */
    int type;
    int stop, n_generated, status;
    char msg[sizeof(((es_err *)0)->msg)];
    int n;
    bool has_lp;               /* es_token_logprob[n] follow the tokens */
    int32_t toks[];
} eev;

static const es_token_logprob *eev_logprobs(const eev *e) {
    return e->has_lp ? (const es_token_logprob *)(const void *)(e->toks + e->n) : NULL;
}

static void job_free(ejob *j) {
    es_stopwatch_free(j->watch);
    es_grammar_free(j->grammar);
    free(j->prompt);
    free(j);
}

struct es_edge_http {
    es_edge_http_params p;
    char host[256], model_name[256], api_key[257];
    int rule_sampled;          /* the acceptance rule for requests that sample */
    int n_ctx;
    const es_tokenizer *tok;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool mu_ok;
    ejob *q_head, *q_tail;
    int q_len;
    bool stop;
    es_edge_http_stats st;

    es_wakeq evq;              /* worker -> loop events (eev) */
    atomic_bool stop_loop;     /* set before a wake-up: the loop ends the requests and returns */

    struct event_base *base;
    struct event *wake_ev, *tick_ev, *deadline_ev;
    es_http *http;
    bool shutting_down;
    pthread_t loop_th;
    bool loop_started;

    eworker *w;
    int n_w;
};

#define ehlog(s, level, ...) es_logf((s)->p.log, (s)->p.log_ud, level, __VA_ARGS__)

es_edge_http_params es_edge_http_default_params(void) {
    es_edge_http_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.port = 8081;
    p.edge = es_edge_default_params();
    p.workers = 4;
    p.queue = 64;
    p.queue_timeout_s = 60;
    p.model_name = "edgespec";
    p.chat_family = -1;
    return p;
}

/* ---- worker -> loop events ---- */

static void post(es_edge_http *s, eev *e) { es_wakeq_push(&s->evq, &e->node); }

static void purge(es_edge_http *s, uint64_t id) { es_wakeq_purge(&s->evq, id, free); }

/* Worker thread: the log-probabilities of the tokens on_tokens is called with next (the edge calls
 * both from one place, this first). */
static void on_logprobs(void *ud, const es_token_logprob *lp, int n) {
    ejob *j = ud;
    j->lp_now = lp;
    j->n_lp_now = n;
}

/* Worker thread: confirmed tokens of the running job (stop tokens are not passed on by the edge).
 * An allocation failure drops the piece; the usage count at the end stays right. */
static void on_tokens(void *ud, const int32_t *toks, int n, double t_s) {
    (void)t_s;
    ejob *j = ud;
    j->n_gen += n;
    const bool has_lp = j->lp_now && j->n_lp_now == n;
    const es_token_logprob *lp = j->lp_now;
    j->lp_now = NULL;
    eev *e = malloc(sizeof *e + (size_t)n * sizeof(int32_t) + (has_lp ? (size_t)n * sizeof(es_token_logprob) : 0));
    if (!e) return;
    memset(e, 0, sizeof *e);
    e->type = EV_TOKENS;
    e->node.key = j->id;
    e->n_generated = j->n_gen;
    e->n = n;
    e->has_lp = has_lp;
    memcpy(e->toks, toks, (size_t)n * sizeof(int32_t));
    if (has_lp) memcpy((void *)eev_logprobs(e), lp, (size_t)n * sizeof(es_token_logprob));
    post(j->s, e);
    /* a completed stop string ends the generation at these tokens (the front end cuts the text at the
       same token with its own matcher) */
    if (es_stopwatch_feed(j->watch, toks, n)) es_edge_cancel(j->e, true);
}

/* The HTTP status an edge failure stands for. */
static int fail_status(es_status st) {
    switch (st) {
    case ES_ERR_BUSY:
    case ES_ERR_FULL: return 503;
    case ES_ERR_RANGE:
    case ES_ERR_INVALID_ARG: return 400;
    case ES_ERR_IO:
    case ES_ERR_TIMEOUT:
    case ES_ERR_PROTOCOL:
    case ES_ERR_MISMATCH:
    case ES_ERR_UNSUPPORTED: return 502;
    default: return 500;
    }
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* After a generation or a reconnection attempt: whether the worker's edge is connected, and when an
 * idle worker without a connection tries again (capped exponential backoff, for as long as the
 * process runs). Worker thread, mu not held; `tried`: a reconnection attempt just failed. */
static void worker_link(eworker *w, bool tried) {
    const bool up = es_edge_connected(w->e);
    if (up) w->backoff_s = EH_BACKOFF_MIN_S;
    else if (tried) w->backoff_s = fmin(w->backoff_s * 2, EH_BACKOFF_MAX_S);
    w->next_try = mono_s() + (up ? EH_CHECK_S : w->backoff_s);
    pthread_mutex_lock(&w->s->mu);
    w->up = up;
    pthread_mutex_unlock(&w->s->mu);
}

/* An idle worker looks at its connection now and then (a server that went away is noticed here, for
 * /health) and, without one, tries again once its backoff has passed. mu held on entry and exit,
 * released while connecting. Returns false when it is not time yet (then it waits for work until
 * next_try). */
static bool worker_reconnect(eworker *w) {
    es_edge_http *s = w->s;
    if (mono_s() < w->next_try) return false;
    pthread_mutex_unlock(&s->mu);
    if (es_edge_connected(w->e)) {
        worker_link(w, false);
        pthread_mutex_lock(&s->mu);
        return true;
    }
    es_err err = {{0}};
    const es_status rc = es_edge_reconnect(w->e, &err);
    if (rc == ES_OK) ehlog(s, 1, "connected to the server %s:%d", s->p.edge.host, s->p.edge.port);
    else if (w->backoff_s >= EH_BACKOFF_MAX_S && w == &s->w[0]) ehlog(s, 3, "the server is still unreachable: %s", err.msg);
    worker_link(w, rc != ES_OK);
    pthread_mutex_lock(&s->mu);
    return true;
}

static void *worker_main(void *arg) {
    eworker *w = arg;
    es_edge_http *s = w->s;
    es_thread_block_sigpipe(); /* the embedding program handles signals (cmd_edge waits for them) */
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        ejob *j = s->q_head;
        if (!j) {
            if (worker_reconnect(w)) continue;
            { /* woken by work, or at the next look at the connection */
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                const double wait = fmax(0.0, w->next_try - mono_s());
                until.tv_sec += (time_t)wait;
                until.tv_nsec += (long)((wait - floor(wait)) * 1e9);
                if (until.tv_nsec >= 1000000000L) {
                    until.tv_sec++;
                    until.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&s->cv, &s->mu, &until);
            }
            continue;
        }
        s->q_head = j->next;
        if (!s->q_head) s->q_tail = NULL;
        s->q_len--;
        w->job = j;
        j->e = w->e;
        es_edge_cancel(w->e, false); /* a cancel aimed at the previous job must not hit this one */
        pthread_mutex_unlock(&s->mu);

        es_err err = {{0}};
        es_edge_stats st;
        memset(&st, 0, sizeof st);
        int32_t *out = malloc(((size_t)j->max_tokens + 1) * sizeof *out);
        es_status rc = out ? ES_OK : es_fail(&err, ES_ERR_NOMEM, "out of memory");
        /* A request that names its seed is verified by sample-then-match: the target draws once per
           emitted token, in order, so the text is the one autoregressive sampling with that seed gives
           (the server's API's too), whatever the draft proposed; rejection sampling accepts more but
           draws per tried child, so its text depends on the drafts. */
        const int rule = j->sampling.temperature == 0 ? ES_ACCEPT_GREEDY : j->seeded ? ES_ACCEPT_MATCH : s->rule_sampled;
        if (rc == ES_OK) rc = es_edge_set_sampling(w->e, rule, &j->sampling, &err);
        if (rc == ES_OK) {
            const es_edge_request rq = {j->top_logprobs, j->grammar, on_logprobs};
            rc = es_edge_set_request(w->e, &rq, &err);
        }
        if (rc == ES_OK)
            rc = es_edge_generate(w->e, j->prompt, j->n_prompt, j->max_tokens, j->stop, j->n_stop, out, &st, on_tokens, j, &err);
        free(out);
        eev *e = calloc(1, sizeof *e);
        if (e) {
            e->type = EV_END;
            e->node.key = j->id;
            e->n_generated = st.n_generated > j->n_gen ? st.n_generated : j->n_gen;
            e->stop = rc == ES_OK ? st.stop : ES_STOP_ERROR;
            e->status = rc == ES_OK ? 200 : fail_status(rc);
            snprintf(e->msg, sizeof e->msg, "%s", rc == ES_OK ? "" : err.msg);
        }
        if (rc != ES_OK) ehlog(s, 1, "generation failed: %s", err.msg);
        worker_link(w, false);

        /* the worker is free before the end is posted: the front end, on that event, starts the next
           queued request, which must find a free worker */
        pthread_mutex_lock(&s->mu);
        w->job = NULL;
        s->st.generations++;
        if (rc != ES_OK) s->st.failures++;
        s->st.prompt_tokens += j->n_prompt;
        s->st.generated_tokens += st.n_generated;
        s->st.rounds += st.rounds;
        s->st.drafted += st.drafted;
        s->st.accepted += st.accepted;
        job_free(j);
        pthread_mutex_unlock(&s->mu);
        if (e) post(s, e);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the HTTP front end's backend (loop thread) ---- */

static es_status be_start(void *ud, const es_http_gen *g, int *granted, es_err *err) {
    es_edge_http *s = ud;
    if (g->n_stop + 1 > EH_MAX_STOP) return es_fail(err, ES_ERR_INTERNAL, "too many stop tokens");
    ejob *j = calloc(1, sizeof *j);
    int32_t *prompt = malloc((size_t)g->n_prompt * sizeof(int32_t));
    if (!j || !prompt) {
        free(j);
        free(prompt);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    memcpy(prompt, g->prompt, (size_t)g->n_prompt * sizeof(int32_t));
    j->id = g->id;
    j->prompt = prompt;
    j->n_prompt = g->n_prompt;
    j->max_tokens = g->max_tokens;
    j->sampling = g->sampling;
    j->seeded = g->seeded;
    j->top_logprobs = g->logprobs ? g->top_logprobs : -1;
    j->s = s;
    if (g->grammar && !(j->grammar = es_grammar_clone(g->grammar))) {
        free(prompt);
        free(j);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    memcpy(j->stop, g->stop, (size_t)g->n_stop * sizeof(int32_t));
    j->n_stop = g->n_stop;
    if (g->n_stop_strings > 0 && !(j->watch = es_stopwatch_new(s->tok, g->prompt[g->n_prompt - 1], g->stop_strings,
                                                               g->n_stop_strings, g->skip, g->n_skip))) {
        job_free(j);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    const int32_t eos = es_tokenizer_eos(s->tok);
    if (eos >= 0) j->stop[j->n_stop++] = eos;
    pthread_mutex_lock(&s->mu);
    int busy = 0; /* workers generating; queued jobs wait for the others */
    for (int i = 0; i < s->n_w; i++) busy += s->w[i].job != NULL;
    if (busy + s->q_len >= s->n_w) { /* the front end queues it (es_http_params.max_queue = p.queue) */
        pthread_mutex_unlock(&s->mu);
        job_free(j);
        return es_fail(err, ES_ERR_BUSY, "all %d workers are busy", s->n_w);
    }
    if (s->q_tail) s->q_tail->next = j;
    else s->q_head = j;
    s->q_tail = j;
    s->q_len++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *granted = g->max_tokens;
    return ES_OK;
}

static void be_cancel(void *ud, uint64_t id) {
    es_edge_http *s = ud;
    pthread_mutex_lock(&s->mu);
    ejob **pp = &s->q_head, *last = NULL;
    bool found = false;
    while (*pp) { /* still waiting: it never starts */
        ejob *j = *pp;
        if (j->id == id) {
            *pp = j->next;
            s->q_len--;
            job_free(j);
            found = true;
        } else {
            last = j;
            pp = &j->next;
        }
    }
    s->q_tail = last;
    for (int i = 0; i < s->n_w && !found; i++)
        if (s->w[i].job && s->w[i].job->id == id) {
            es_edge_cancel(s->w[i].e, true);
            found = true;
        }
    pthread_mutex_unlock(&s->mu);
    purge(s, id);
}

/* /health and edgespec_ready: the upstream server, unless the draft alone answers meanwhile. */
static bool be_health(void *ud, const char **upstream) {
    es_edge_http *s = ud;
    bool up = false;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_w; i++) up |= s->w[i].up;
    pthread_mutex_unlock(&s->mu);
    *upstream = up ? "connected" : s->p.edge.fallback_local ? "unreachable (answering with the draft model alone)" : "unreachable";
    return up || s->p.edge.fallback_local;
}

static void be_metrics(void *ud, es_metrics *m) {
    es_edge_http *s = ud;
    pthread_mutex_lock(&s->mu);
    m->prompt_tokens = s->st.prompt_tokens;
    m->generated_tokens = s->st.generated_tokens;
    es_http_stats hs;
    es_http_get_stats(s->http, &hs);
    m->refused = hs.queue_full + hs.queue_timeouts; /* the front end's queue turned them away */
    m->drafts = s->st.rounds;
    m->draft_tokens = s->st.drafted;
    m->accepted_tokens = s->st.accepted;
    m->queue_depth = (m->queue_depth > 0 ? m->queue_depth : 0) + s->q_len; /* the front end's queue + jobs not yet taken */
    pthread_mutex_unlock(&s->mu);
}

/* ---- the loop ---- */

static void deadline_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_edge_http *s = arg;
    event_base_loopbreak(s->base);
}

static void snapshot(es_edge_http *s) {
    es_http_stats hs;
    es_http_get_stats(s->http, &hs);
    pthread_mutex_lock(&s->mu);
    s->st.http = hs;
    s->st.refused = hs.queue_full + hs.queue_timeouts;
    pthread_mutex_unlock(&s->mu);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    snapshot(arg);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_edge_http *s = arg;
    es_wakeq_drain(&s->evq);
    eev *list = (eev *)es_wakeq_pop_all(&s->evq);
    const bool stop = atomic_load(&s->stop_loop);
    while (list) {
        eev *e = list;
        list = (eev *)e->node.next;
        const uint64_t id = e->node.key;
        if (e->type == EV_TOKENS) es_http_on_tokens_lp(s->http, id, e->toks, eev_logprobs(e), e->n, e->n_generated);
        else es_http_on_end(s->http, id, e->stop, e->n_generated, e->status, e->msg);
        free(e);
    }
    if (stop && !s->shutting_down) {
        s->shutting_down = true;
        const int open = es_http_shutdown(s->http);
        snapshot(s);
        if (open == 0) {
            event_base_loopbreak(s->base);
        } else { /* let the last replies leave */
            struct timeval tv = {0, 300000};
            event_add(s->deadline_ev, &tv);
        }
    }
}

static void *loop_main(void *arg) {
    es_edge_http *s = arg;
    es_thread_block_sigpipe();
    event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* ---- start / free ---- */

/* s's copy of the parameters (the strings copied) and the rule of sampled requests. */
static void take_params(es_edge_http *s, const es_edge_http_params *p) {
    s->p = *p;
    snprintf(s->host, sizeof s->host, "%s", p->host && *p->host ? p->host : "127.0.0.1");
    snprintf(s->model_name, sizeof s->model_name, "%s", p->model_name && *p->model_name ? p->model_name : "edgespec");
    snprintf(s->api_key, sizeof s->api_key, "%s", p->api_key ? p->api_key : "");
    s->p.host = s->host;
    s->p.model_name = s->model_name;
    s->p.api_key = s->api_key;
    s->tok = es_model_tokenizer(p->edge.draft);
    /* sampled requests use the rule the edge was started with, unless that is greedy */
    s->rule_sampled = p->edge.rule == ES_ACCEPT_GREEDY ? ES_ACCEPT_REJECTION : p->edge.rule;
    s->p.edge.rule = ES_ACCEPT_GREEDY;
    s->p.edge.sampling.temperature = 0;
}

/* Every worker's client, connected now: a refusal (vocabulary, version, key) fails the start. A server
 * that cannot be reached does too, unless the draft may answer alone (fallback_local): then the API
 * starts, serves locally and the workers keep trying to connect. Then the context the API offers: the
 * server's, at most the draft's. */
static es_status connect_workers(es_edge_http *s, es_err *err) {
    const es_edge_http_params *p = &s->p;
    s->w = calloc((size_t)p->workers, sizeof *s->w);
    if (!s->w) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    bool offline = false;
    for (int i = 0; i < p->workers; i++) {
        eworker *w = &s->w[i];
        w->s = s;
        w->backoff_s = EH_BACKOFF_MIN_S;
        es_status st = es_edge_init(&s->p.edge, &w->e, err);
        if (st != ES_OK) return st;
        s->n_w = i + 1;
        if (offline) continue;
        es_err why = {{0}};
        st = es_edge_reconnect(w->e, &why);
        if (st == ES_OK) {
            w->up = true;
            continue;
        }
        if ((st == ES_ERR_IO || st == ES_ERR_TIMEOUT) && p->edge.fallback_local) {
            ehlog(s, 1, "the server %s:%d cannot be reached (%s): answering with the draft model alone until it can",
                  p->edge.host, p->edge.port, why.msg);
            offline = true;
            continue;
        }
        if (err) *err = why;
        return st;
    }
    for (int i = 0; i < s->n_w; i++) s->w[i].next_try = mono_s() + s->w[i].backoff_s;
    const es_msg_welcome *wl = es_edge_server_info(s->w[0].e);
    s->n_ctx = wl->n_ctx > 0 ? (int)wl->n_ctx : es_model_n_ctx_train(p->edge.draft);
    const int n_ctx_draft = p->edge.n_ctx > 0 ? p->edge.n_ctx : es_model_n_ctx_train(p->edge.draft);
    if (n_ctx_draft < s->n_ctx) s->n_ctx = n_ctx_draft;
    return ES_OK;
}

/* The event loop: the workers' event queue, the one-second tick, the stop deadline. */
static es_status init_loop(es_edge_http *s, es_err *err) {
    s->base = event_base_new();
    s->wake_ev = s->base ? event_new(s->base, es_wakeq_fd(&s->evq), EV_READ | EV_PERSIST, wake_cb, s) : NULL;
    s->tick_ev = s->base ? event_new(s->base, -1, EV_PERSIST, tick_cb, s) : NULL;
    s->deadline_ev = s->base ? event_new(s->base, -1, 0, deadline_cb, s) : NULL;
    if (!s->wake_ev || !s->tick_ev || !s->deadline_ev) return es_fail(err, ES_ERR_NOMEM, "cannot create an event loop");
    event_add(s->wake_ev, NULL);
    struct timeval one = {1, 0};
    event_add(s->tick_ev, &one);
    return ES_OK;
}

/* The OpenAI front end (src/http) on s's loop, with the workers as its backend. */
static es_status start_http(es_edge_http *s, es_err *err) {
    const es_edge_http_params *p = &s->p;
    es_http_params hp = es_http_default_params();
    hp.base = s->base;
    hp.host = s->host;
    hp.port = p->port;
    hp.api_key = s->api_key[0] ? s->api_key : NULL;
    hp.model_name = s->model_name;
    hp.owned_by = "edgespec-edge";
    if (p->max_body) hp.max_body = p->max_body;
    if (p->max_connections > 0) hp.max_connections = p->max_connections;
    if (p->request_timeout_s != 0) hp.request_timeout_s = p->request_timeout_s > 0 ? p->request_timeout_s : 0;
    hp.tok = s->tok;
    hp.n_ctx = s->n_ctx;
    hp.chat_family = p->chat_family;
    hp.chat_template = p->chat_template;
    hp.max_queue = p->queue;
    hp.queue_timeout_s = p->queue_timeout_s;
    hp.cors = p->cors;
    hp.backend.start = be_start;
    hp.backend.cancel = be_cancel;
    hp.backend.metrics = be_metrics;
    hp.backend.health = be_health;
    hp.backend.ud = s;
    /* both through the server's verification (protocol version 4; an older server refuses the
       generation, which the client sees as a 502 naming the version) */
    hp.backend.logprobs = true;
    hp.backend.grammar = true;
    hp.log = p->log;
    hp.log_ud = p->log_ud;
    return es_http_start(&hp, &s->http, err);
}

static es_status start_threads(es_edge_http *s, es_err *err) {
    for (int i = 0; i < s->n_w; i++) {
        if (pthread_create(&s->w[i].th, NULL, worker_main, &s->w[i]) != 0)
            return es_fail(err, ES_ERR_NOMEM, "cannot start a worker thread");
        s->w[i].started = true;
    }
    if (pthread_create(&s->loop_th, NULL, loop_main, s) != 0) return es_fail(err, ES_ERR_NOMEM, "cannot start the event-loop thread");
    s->loop_started = true;
    return ES_OK;
}

es_status es_edge_http_start(const es_edge_http_params *p, es_edge_http **out, es_err *err) {
    *out = NULL;
    if (!p || !p->edge.draft) return es_fail(err, ES_ERR_INVALID_ARG, "the edge's HTTP API needs a draft model (it also tokenises)");
    if (p->workers < 1 || p->workers > 1024) return es_fail(err, ES_ERR_INVALID_ARG, "workers must be in 1..1024, got %d", p->workers);
    if (p->queue < 0) return es_fail(err, ES_ERR_INVALID_ARG, "queue must be >= 0");
    if (p->port < 0 || p->port > 65535) return es_fail(err, ES_ERR_INVALID_ARG, "port %d outside 0..65535", p->port);
    es_edge_http *s = calloc(1, sizeof *s);
    if (!s) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    take_params(s, p);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->mu_ok = true;
    es_status st;
    if ((st = es_wakeq_init(&s->evq, err)) != ES_OK || (st = connect_workers(s, err)) != ES_OK || (st = init_loop(s, err)) != ES_OK ||
        (st = start_http(s, err)) != ES_OK || (st = start_threads(s, err)) != ES_OK) {
        es_edge_http_free(s);
        return st;
    }
    ehlog(s, 2, "local API on %s:%d, %d workers, server %s:%d", s->host, es_http_port(s->http), s->n_w, p->edge.host, p->edge.port);
    *out = s;
    return ES_OK;
}

int es_edge_http_port(const es_edge_http *s) { return s && s->http ? es_http_port(s->http) : 0; }

void es_edge_http_get_stats(es_edge_http *s, es_edge_http_stats *out) {
    memset(out, 0, sizeof *out);
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

void es_edge_http_free(es_edge_http *s) {
    if (!s) return;
    if (s->loop_started) { /* the loop ends the requests in flight, then stops */
        atomic_store(&s->stop_loop, true);
        es_wakeq_wake(&s->evq);
        pthread_join(s->loop_th, NULL);
    }
    if (s->mu_ok) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        for (int i = 0; i < s->n_w; i++)
            if (s->w[i].job) es_edge_cancel(s->w[i].e, true);
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    for (int i = 0; i < s->n_w; i++)
        if (s->w[i].started) pthread_join(s->w[i].th, NULL);
    es_http_free(s->http);
    for (int i = 0; i < s->n_w; i++) es_edge_free(s->w[i].e);
    free(s->w);
    while (s->q_head) {
        ejob *j = s->q_head;
        s->q_head = j->next;
        job_free(j);
    }
    if (s->wake_ev) event_free(s->wake_ev);
    if (s->tick_ev) event_free(s->tick_ev);
    if (s->deadline_ev) event_free(s->deadline_ev);
    if (s->base) event_base_free(s->base);
    es_wakeq_free(&s->evq, free);
    if (s->mu_ok) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
    }
    free(s);
}
