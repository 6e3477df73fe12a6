/* http.c — the OpenAI-compatible HTTP API on an event loop, with a pluggable generation backend
 * (see http.h for the contract).
 *
 * A request that generates is an `hreq` on the es_http's list, with one `hchoice` per choice (n):
 * choice i is the backend's generation id + i. A request the backend refuses as busy waits in the
 * es_http's FIFO queue (its choices that did start generate meanwhile) and is tried again when a
 * session ends (es_http_kick, deferred to the loop's next turn through the `pump` event, so the
 * backend is never re-entered from its own callback), and once a second. It ends in one of four
 * ways, each of which frees it exactly once:
 *  - the backend finishes its last choice (es_http_on_end) or a stop string ends it (backend->cancel,
 *    then the choice is complete), and the reply is completed; a failure of one choice fails all;
 *  - the queue gives up on it (full, or queue_timeout_s);
 *  - the client goes away: evhttp's close callback (streams: evhttp reads while it sends) or our own
 *    watch on the socket (plain replies: evhttp does not read while a request is pending, so a peek
 *    on the socket tells a hang-up from a pipelined request) — backend->cancel at once;
 *  - shutdown / free.
 * The close callback is cleared before a reply is completed, so it never fires for a freed hreq. */
#include "http/http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "grammar/grammar.h"
#include "http/chat.h"
#include "http/oai.h"
#include "tokenizer/detok.h"
#include "tokenizer/tokenizer.h"
#include "transport/keys.h"
#include "transport/listen.h"
#include "transport/tls.h"
#include "util/clock.h"
#include "util/err.h"
#include "wire/proto.h"

#define HTTP_MAX_BODY_DEFAULT ((size_t)1 << 20)
#define HTTP_MAX_KEY 256
#define HTTP_MAX_STOP_IDS 8
#define HTTP_MAX_OUTPUT ((size_t)8 << 20) /* unread SSE bytes before a client counts as gone */
#define HTTP_TPS_WINDOW 11                /* one-second samples: tokens/s over the last 10 s */

static const char *const EP_COMPLETIONS = "/v1/completions";
static const char *const EP_CHAT = "/v1/chat/completions";
static const char *const EP_MODELS = "/v1/models";
static const char *const EP_HEALTH = "/health";
static const char *const EP_METRICS = "/metrics";
static const char *const EP_TOKENIZE = "/tokenize";
static const char *const EP_DETOKENIZE = "/detokenize";
static const char *const EP_PAGE = "/";
static const char *const EP_OTHER = "other";

/* the chat page, src/http/page/chat.html embedded at build time (cmake/embed-file.cmake) */
extern const unsigned char es_chat_page[];
extern const size_t es_chat_page_len;

typedef struct lpent {
    es_token_logprob lp;
    int32_t id, prev;
    size_t start, end;            /* its text in the choice's reply: [start, end) */
} lpent;

_Static_assert(ES_OAI_MAX_TOP_LOGPROBS == ES_SPEC_MAX_TOP_LOGPROBS, "one limit for top logprobs");

/* One choice of a request (n > 1: several, each its own generation of the backend). */
typedef struct hchoice {
    uint64_t id;                  /* its generation's id: the request's id + its index */
    bool running;                 /* the backend took it and it has not ended or been cancelled */
    bool done;                    /* its text is complete */
    const char *fin;              /* its finish_reason once done */
    es_detok dt;
    es_stopstr ss;
    es_str piece;                 /* detokenised, before the stop-string check */
    es_str out;                   /* streams: the next chunk's text; plain: the whole text */
    int n_generated;
    double t_last;                /* its latest tokens (inter-token latency) */
    /* logprobs: one entry per token shown as text, with where its text lies in the choice's reply
       (before stop strings cut it); streams send an entry with the chunk that completes its text */
    lpent *lp;
    int n_lp, cap_lp, lp_sent;
    size_t text_pos;              /* bytes of text the tokens so far made */
    size_t sent_pos;              /* streams: bytes of text sent */
    int32_t lp_prev;              /* the token before the next one (for its piece) */
    es_str held;                  /* streams with tools: text held back, a tool call or perhaps the start of one */
    bool in_call;                 /* held text has a <tool_call>: nothing more streams as content */
    char *tool_calls;             /* the calls parsed from the reply (JSON array), NULL when none */
} hchoice;

typedef struct hreq {
    struct es_http *h;
    struct hreq *prev, *next;
    uint64_t id;                  /* choice i's generation is id + i */
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *watch;          /* plain replies: notices a client hanging up */
    const char *endpoint;
    int kind;
    bool stream, include_usage;
    bool include_speculation;     /* streams: the "speculation" object on chunks of tokens */
    bool started;                 /* streams: the 200 and the event-stream headers went out (they wait
                                     for the first tokens, so a failure before any is a plain error) */
    char rid[48];
    int64_t created;
    char *model;
    char *stop[ES_OAI_MAX_STOP];
    int n_stop;
    int32_t skip[HTTP_MAX_STOP_IDS + 2]; /* ids never shown as text: EOS, BOS, end-of-turn */
    int n_skip;
    int n_prompt;
    /* what backend->start is given (per choice: its id and seed), kept while the request waits */
    es_http_gen g;                /* points into this hreq (prompt, stop_ids, stop, skip) */
    int32_t *prompt;              /* owned until the backend took every choice */
    struct es_grammar *grammar;   /* response_format JSON (owned until the backend took every choice) */
    int32_t stop_ids[HTTP_MAX_STOP_IDS];
    bool queued;                  /* waiting in h's queue for sessions for its choices from n_started on */
    struct hreq *qnext;
    struct event *qtimer;         /* queue_timeout_s */
    /* latency (es_now_s): arrival, admission of every choice */
    double t_arrive, t_admit;
    bool got_tokens;
    bool logprobs;
    int top_logprobs;
    bool tools;                   /* chat with tools: calls in the reply become tool_calls */
    char *tools_json;             /* then the request's tools (a bare JSON call must name one) */
    int n_choices, n_started, n_done;
    hchoice *ch;                  /* [n_choices] */
} hreq;

struct es_http {
    es_http_params p;
    char model_name[256], owned_by[64];
    es_keys keys;                 /* accepted api keys (none: no key needed) */
    int64_t auth_failures;        /* requests answered 401 */
    _Atomic int64_t tls_failures; /* failed TLS handshakes (loop thread) */
    int chat_family;
    es_jinja *jinja;              /* the chat template when it is Jinja (else the family renders) */
    bool jinja_tools;             /* that template shows the model `tools` */
    char *bos_text, *eos_text;    /* the templates' bos_token and eos_token ("" when none) */
    int32_t eot;                  /* the chat template's end-of-turn token, -1 if none */
    int32_t bos, eos;
    int n_vocab;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *relisten;      /* re-enables the paused listener (accept ran out of descriptors) */
    struct hconn *conns;         /* every connection evhttp holds (or has just freed) */
    int n_conns;
    int64_t accept_fails;        /* accept failures, and those not yet reported (one log line per 10 s) */
    int64_t accept_fails_unlogged;
    double accept_logged_at;
    int port;
    struct evbuffer *chunk;       /* scratch for one SSE event */
    struct event *tick;
    hreq *reqs;
    int n_active;                 /* requests on reqs: generating or queued */
    hreq *q_head, *q_tail;        /* the queue, oldest first */
    int n_queued;
    struct event *pump;           /* tries the queue again on the loop's next turn (es_http_kick) */
    char cors[1024];              /* "" off; "*"; or ",origin,origin," for a bounded substring match */
    uint64_t next_id, salt;
    double t_start;
    bool shutting_down;
    bool draining;                /* es_http_drain: new completions 503, /health 503 "draining" */
    es_metrics m;                 /* front-end counters (the backend's part is filled per scrape) */
    es_http_stats st;
    double tps_t[HTTP_TPS_WINDOW];
    int64_t tps_tok[HTTP_TPS_WINDOW];
    int tps_n, tps_at;
};

/* splitmix64: ids and default seeds that differ between runs and requests */
static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

#define hlog(h, level, ...) es_logf((h)->p.log, (h)->p.log_ud, level, __VA_ARGS__)

es_http_params es_http_default_params(void) {
    es_http_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.fd = -1;
    p.model_name = "edgespec";
    p.owned_by = "edgespec";
    p.max_body = HTTP_MAX_BODY_DEFAULT;
    p.timeout_s = 600;
    p.max_connections = 1024;
    p.request_timeout_s = 60;
    p.chat_family = -1;
    p.max_queue = 64;
    p.queue_timeout_s = 60;
    return p;
}

/* ---- replies ---- */

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static void count(es_http *h, const char *endpoint, int status) {
    es_metrics_count_request(&h->m, endpoint, status);
    h->st.requests++;
    if (status >= 400) h->st.errors++;
}

static void reply_body(es_http *h, struct evhttp_request *req, const char *endpoint, int status, const char *ctype,
                       const char *body) {
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "Content-Type", ctype);
    struct evbuffer *b = evbuffer_new();
    if (b && body) evbuffer_add(b, body, strlen(body));
    evhttp_send_reply(req, status, reason(status), b);
    if (b) evbuffer_free(b);
    count(h, endpoint, status);
}

static void reply_json(es_http *h, struct evhttp_request *req, const char *endpoint, int status, const char *json) {
    reply_body(h, req, endpoint, status, "application/json", json ? json : "{}");
}

static void reply_error(es_http *h, struct evhttp_request *req, const char *endpoint, const es_oai_error *e) {
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    if (e->status == 401) evhttp_add_header(oh, "WWW-Authenticate", "Bearer");
    if (e->status == 503 || e->status == 429) evhttp_add_header(oh, "Retry-After", "1");
    char *j = es_oai_error_json(e);
    reply_json(h, req, endpoint, e->status, j ? j : "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
    free(j);
}

static void reply_errorf(es_http *h, struct evhttp_request *req, const char *endpoint, int status, const char *type,
                         const char *code, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void reply_errorf(es_http *h, struct evhttp_request *req, const char *endpoint, int status, const char *type,
                         const char *code, const char *fmt, ...) {
    es_oai_error e;
    memset(&e, 0, sizeof e);
    e.status = status;
    e.type = type;
    e.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    reply_error(h, req, endpoint, &e);
}

/* ---- requests in flight ---- */

/* The running choice whose generation is `id` (and its request), or NULL: the request is gone, or
 * that choice has ended or was cancelled. */
static hchoice *find_choice(es_http *h, uint64_t id, hreq **out) {
    for (hreq *r = h->reqs; r; r = r->next)
        if (id >= r->id && id - r->id < (uint64_t)r->n_choices) {
            hchoice *c = &r->ch[id - r->id];
            *out = r;
            return c->running ? c : NULL;
        }
    return NULL;
}

static int req_generated(const hreq *r) {
    int n = 0;
    for (int i = 0; i < r->n_choices; i++) n += r->ch[i].n_generated;
    return n;
}

/* Takes r out of the queue (it stays on the request list). */
static void queue_remove(hreq *r) {
    es_http *h = r->h;
    for (hreq **pp = &h->q_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->qnext)
        if (*pp == r) {
            *pp = r->qnext;
            if (h->q_tail == r) h->q_tail = prev;
            break;
        }
    r->qnext = NULL;
    r->queued = false;
    h->n_queued--;
    if (r->qtimer) event_del(r->qtimer);
}

/* Unlinks and frees; the evhttp request must already be answered or gone, and no choice running. */
static void req_free(hreq *r) {
    es_http *h = r->h;
    if (r->n_started > 0) es_http_kick(h); /* its sessions are ending: the next may start */
    if (r->prev) r->prev->next = r->next;
    else if (h->reqs == r) h->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    h->n_active--;
    if (r->queued) queue_remove(r);
    if (r->qtimer) event_free(r->qtimer);
    free(r->prompt);
    es_grammar_free(r->grammar);
    for (int i = 0; r->ch && i < r->n_choices; i++) {
        hchoice *c = &r->ch[i];
        free(c->lp);
        es_stopstr_free(&c->ss);
        es_str_free(&c->piece);
        es_str_free(&c->out);
        es_str_free(&c->held);
        free(c->tool_calls);
    }
    free(r->ch);
    if (r->watch) event_free(r->watch);
    free(r->model);
    free(r->tools_json);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r);
}

/* Stops watching the client: from here on the reply is being completed by us. */
static void req_detach(hreq *r) {
    if (r->evcon) evhttp_connection_set_closecb(r->evcon, NULL, NULL);
    if (r->watch) {
        event_free(r->watch);
        r->watch = NULL;
    }
}

/* One SSE event: "data: TEXT\n\n". */
static void sse(hreq *r, const char *data) {
    es_http *h = r->h;
    evbuffer_add(h->chunk, "data: ", 6);
    evbuffer_add(h->chunk, data, strlen(data));
    evbuffer_add(h->chunk, "\n\n", 2);
    evhttp_send_reply_chunk(r->req, h->chunk); /* drains h->chunk */
}

/* The JSON builders' view of choice c's entries [from, to): token pieces in `arena`, *view malloc'd
 * (free it). */
static bool lp_view(const hreq *r, const hchoice *c, int from, int to, es_oai_logprobs *out, es_oai_lp_token **view,
                    es_str *arena) {
    es_http *h = r->h;
    const int n = to - from;
    memset(out, 0, sizeof *out);
    out->top = r->top_logprobs > 0;
    *view = n > 0 ? calloc((size_t)n, sizeof **view) : NULL;
    if (n > 0 && !*view) return false;
    /* pieces first (the arena moves as it grows), offsets stored in the text pointers meanwhile */
    char piece[512];
    for (int i = 0; i < n; i++) {
        const lpent *e = &c->lp[from + i];
        es_oai_lp_token *t = &(*view)[i];
        int k = es_token_to_piece(h->p.tok, e->prev, e->id, piece, (int)sizeof piece);
        t->text = (const char *)(uintptr_t)arena->len;
        t->len = (size_t)(k > 0 ? k : 0);
        if (!es_str_append(arena, piece, t->len)) return false;
        t->logprob = e->lp.logprob;
        t->offset = (int64_t)e->start;
        t->n_top = e->lp.n_top < r->top_logprobs ? e->lp.n_top : r->top_logprobs;
        for (int j = 0; j < t->n_top; j++) {
            k = es_token_to_piece(h->p.tok, e->prev, e->lp.top_id[j], piece, (int)sizeof piece);
            t->top[j].text = (const char *)(uintptr_t)arena->len;
            t->top[j].len = (size_t)(k > 0 ? k : 0);
            t->top[j].logprob = e->lp.top_logprob[j];
            if (!es_str_append(arena, piece, t->top[j].len)) return false;
        }
    }
    const char *base = es_str_cstr(arena);
    for (int i = 0; i < n; i++) {
        es_oai_lp_token *t = &(*view)[i];
        t->text = base + (uintptr_t)t->text;
        for (int j = 0; j < t->n_top; j++) t->top[j].text = base + (uintptr_t)t->top[j].text;
    }
    out->tok = *view;
    out->n = n;
    return true;
}

/* A stream chunk of choice c (NULL: choice 0 without logprobs); with logprobs, those of its entries
 * [lp_sent, upto). */
static void sse_chunk_lp_ext(hreq *r, hchoice *c, const char *role, const char *text, const char *finish, int upto, const char *ext);
static void sse_chunk_lp(hreq *r, hchoice *c, const char *role, const char *text, const char *finish, int upto) {
    sse_chunk_lp_ext(r, c, role, text, finish, upto, NULL);
}

/* ... with `ext`, members added to the chunk object (the "speculation" extension), when not NULL */
static void sse_chunk_lp_ext(hreq *r, hchoice *c, const char *role, const char *text, const char *finish, int upto, const char *ext) {
    es_oai_logprobs lp;
    es_oai_lp_token *view = NULL;
    es_str arena = {0};
    const bool with = c && r->logprobs && upto >= c->lp_sent && lp_view(r, c, c->lp_sent, upto, &lp, &view, &arena);
    char *j = es_oai_chunk_json_ex(r->kind, r->rid, r->created, r->model, c ? (int)(c - r->ch) : 0, role, text, finish,
                                   with ? &lp : NULL);
    const size_t jn = j ? strlen(j) : 0;
    if (j && ext && jn > 1 && j[jn - 1] == '}') { /* the chunk is one compact JSON object: members go before its '}' */
        char *x = malloc(jn + strlen(ext) + 2);
        if (x) snprintf(x, jn + strlen(ext) + 2, "%.*s,%s}", (int)(jn - 1), j, ext);
        free(j);
        j = x;
    }
    if (j) sse(r, j);
    free(j);
    free(view);
    es_str_free(&arena);
    if (with) c->lp_sent = upto;
}

/* Choice c's entries whose text lies within the first `len` bytes of its text (whole tokens sent so
 * far); at the end (`final`), every entry that made any of it — all of them unless a stop string cut
 * the text. */
static int lp_upto(const hchoice *c, size_t len, bool final, bool cut) {
    int k = c->lp_sent;
    while (k < c->n_lp && (final ? (!cut || c->lp[k].start < len) : c->lp[k].end <= len)) k++;
    return k;
}

static const char *finish_name(int stop) {
    return stop == ES_STOP_LENGTH || stop == ES_STOP_CONTEXT ? "length" : "stop";
}

/* Ends choice c's generation in the backend (nothing more is taken from it). */
static void choice_cancel(hreq *r, hchoice *c) {
    es_http *h = r->h;
    if (!c->running) return;
    c->running = false;
    if (h->p.backend.cancel) h->p.backend.cancel(h->p.backend.ud, c->id);
}

static void req_cancel(hreq *r) {
    for (int i = 0; i < r->n_choices; i++) choice_cancel(r, &r->ch[i]);
}

/* The client is gone: free the sessions at once; the reply cannot be delivered. */
static void req_abandon(hreq *r, const char *why) {
    es_http *h = r->h;
    req_cancel(r);
    const int gen = req_generated(r);
    h->st.disconnects++;
    h->st.completion_tokens += gen;
    h->m.http_completion_tokens += gen;
    if (!r->started) count(h, r->endpoint, 499); /* a started stream was counted with its 200 */
    hlog(h, 3, "request %s: client gone (%s) after %d tokens", r->rid, why, gen);
}

static void on_close(struct evhttp_connection *evcon, void *arg) {
    (void)evcon;
    hreq *r = arg;
    /* A request whose reply was not complete when its connection failed is detached from it by
     * evhttp and left to us; one still attached is freed with the connection. */
    if (r->req && !evhttp_request_get_connection(r->req)) evhttp_request_free(r->req);
    r->req = NULL;
    r->evcon = NULL;
    req_abandon(r, "connection closed");
    req_free(r);
}

/* Plain replies: the socket became readable while we generate. A peek tells a hang-up (0 bytes or
 * an error) from the client's next pipelined request (data: stop watching, evhttp reads it later). */
static void watch_cb(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    hreq *r = arg;
    char c;
    const ssize_t k = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (k > 0) {
        event_free(r->watch);
        r->watch = NULL;
        return;
    }
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    struct evhttp_request *req = r->req;
    req_detach(r);
    req_abandon(r, k == 0 ? "hung up" : strerror(errno));
    /* evhttp still owns the request: answering it makes evhttp find the dead socket and clean up */
    if (req) evhttp_send_reply(req, 499, reason(499), NULL);
    req_free(r);
}

/* Streams: the first tokens came (or the end, without any): the 200, the event-stream headers and
 * the chat's role chunk of every choice go out now. Until then the request was watched as a plain
 * one, so a failure before the first token is still an ordinary error status with an OpenAI error
 * object. */
static void stream_start(hreq *r) {
    if (!r->stream || r->started) return;
    es_http *h = r->h;
    r->started = true;
    if (r->watch) { /* evhttp reads a streaming connection itself: its close callback takes over */
        event_free(r->watch);
        r->watch = NULL;
    }
    if (r->evcon) { /* each event leaves at once (Nagle would hold it for the peer's delayed ACK) */
        struct bufferevent *bev = evhttp_connection_get_bufferevent(r->evcon);
        const evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
        const int one = 1;
        if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    struct evkeyvalq *oh = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(oh, "Content-Type", "text/event-stream");
    evhttp_add_header(oh, "Cache-Control", "no-cache");
    evhttp_add_header(oh, "X-Accel-Buffering", "no");
    evhttp_send_reply_start(r->req, 200, "OK");
    count(h, r->endpoint, 200);
    for (int i = 0; r->kind == ES_OAI_CHAT && i < r->n_choices; i++) sse_chunk_lp(r, &r->ch[i], "assistant", "", NULL, -1);
}

/* Every choice is done: the usage, and the reply completes (streams: [DONE]; plain: all choices). */
static void req_complete(hreq *r) {
    es_http *h = r->h;
    const int gen = req_generated(r);
    const es_oai_usage u = {r->n_prompt, gen};
    es_metrics_observe(&h->m.e2e, es_now_s() - r->t_arrive);
    h->st.completion_tokens += gen;
    h->m.http_completion_tokens += gen;
    stream_start(r);
    req_detach(r);
    if (r->stream) {
        if (r->include_usage) {
            char *j = es_oai_usage_chunk_json(r->kind, r->rid, r->created, r->model, &u);
            if (j) sse(r, j);
            free(j);
        }
        sse(r, "[DONE]");
        evhttp_send_reply_end(r->req);
    } else {
        es_oai_logprobs lp[ES_OAI_MAX_N];
        es_oai_lp_token *view[ES_OAI_MAX_N] = {0};
        es_str arena[ES_OAI_MAX_N];
        es_oai_choice ch[ES_OAI_MAX_N];
        bool ok = true;
        memset(arena, 0, sizeof arena);
        for (int i = 0; i < r->n_choices; i++) {
            hchoice *c = &r->ch[i];
            ok = ok && (!r->logprobs || lp_view(r, c, 0, lp_upto(c, c->out.len, true, c->ss.matched), &lp[i], &view[i], &arena[i]));
            ch[i] = (es_oai_choice){es_str_cstr(&c->out), c->fin, r->logprobs ? &lp[i] : NULL, c->tool_calls};
        }
        char *j = ok ? es_oai_response_json_n(r->kind, r->rid, r->created, r->model, ch, r->n_choices, &u) : NULL;
        for (int i = 0; i < r->n_choices; i++) {
            free(view[i]);
            es_str_free(&arena[i]);
        }
        if (j) reply_json(h, r->req, r->endpoint, 200, j);
        else reply_errorf(h, r->req, r->endpoint, 500, "server_error", NULL, "out of memory");
        free(j);
    }
    hlog(h, 3, "request %s: done, %d prompt + %d generated tokens in %d choice%s, finish %s", r->rid, r->n_prompt, gen, r->n_choices,
         r->n_choices == 1 ? "" : "s", r->ch[0].fin);
    req_free(r);
}

/* A chat reply with tools is complete: its <tool_call> blocks become c->tool_calls, finish_reason
 * "tool_calls", and the text before them stays the content (streams: c->out is what remains to send).
 * A reply without a well-formed call is all content. */
static void tools_settle(hreq *r, hchoice *c) {
    if (r->stream) { /* the held text, then what came last */
        if (!es_str_append(&c->held, c->out.s ? c->out.s : "", c->out.len)) return;
        es_str_clear(&c->out);
        es_str tmp = c->out;
        c->out = c->held;
        c->held = tmp;
    }
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%.40s_%d", strchr(r->rid, '-') ? strchr(r->rid, '-') + 1 : r->rid, (int)(c - r->ch));
    size_t content_len = 0;
    char *calls = NULL;
    if (!es_chat_parse_tool_calls(es_str_cstr(&c->out), c->out.len, r->tools_json, prefix, &content_len, &calls)) return;
    c->tool_calls = calls;
    c->out.len = content_len;
    if (c->out.s) c->out.s[content_len] = 0;
    c->fin = "tool_calls";
}

/* Choice c is complete (stop: es_proto_stop, or a stop string matched): its text held back goes out,
 * with its finish reason; the reply completes with the last choice. */
static void choice_end(hreq *r, hchoice *c, int stop) {
    c->running = false;
    es_http_kick(r->h); /* its session is free: a queued request (or this one's next choice) may start */
    es_detok_flush(&c->dt, &c->piece);
    bool oom = false;
    if (c->piece.len) es_stopstr_feed(&c->ss, c->piece.s, c->piece.len, &c->out, &oom);
    es_str_clear(&c->piece);
    es_stopstr_flush(&c->ss, &c->out);
    const bool cut = c->ss.matched;
    c->fin = cut ? "stop" : finish_name(stop);
    if (r->tools) tools_settle(r, c);
    c->done = true;
    r->n_done++;
    if (r->stream) {
        stream_start(r);
        c->sent_pos += c->out.len;
        const int upto = lp_upto(c, c->sent_pos, true, cut);
        if (c->out.len || (r->logprobs && upto > c->lp_sent)) sse_chunk_lp(r, c, NULL, c->out.s ? c->out.s : "", NULL, upto);
        es_str_clear(&c->out);
        if (c->tool_calls) {
            char *j = es_oai_tool_calls_chunk_json(r->rid, r->created, r->model, (int)(c - r->ch), c->tool_calls);
            if (j) sse(r, j);
            free(j);
        }
        if (r->kind == ES_OAI_CHAT) sse_chunk_lp(r, c, NULL, NULL, c->fin, -1);
        else sse_chunk_lp(r, c, NULL, "", c->fin, -1);
    }
    if (r->n_done == r->n_choices) req_complete(r);
}

/* A failure after the request was accepted: an error reply, or an error event on a stream. Every
 * choice must be cancelled already. */
static void req_fail(hreq *r, int status, const char *msg) {
    es_http *h = r->h;
    es_oai_error e;
    es_oai_error_set(&e, status > 0 ? status : 500, status == 503 ? "server_error" : status < 500 ? "invalid_request_error" : "server_error",
                     NULL, NULL, "%s", msg && *msg ? msg : "generation failed");
    const int gen = req_generated(r);
    h->st.completion_tokens += gen;
    h->m.http_completion_tokens += gen;
    req_detach(r);
    if (r->started) {
        char *j = es_oai_error_json(&e);
        if (j) sse(r, j);
        free(j);
        sse(r, "[DONE]");
        evhttp_send_reply_end(r->req);
        h->st.errors++;
    } else {
        reply_error(h, r->req, r->endpoint, &e);
    }
    hlog(h, 1, "request %s failed: %s", r->rid, e.message);
    req_free(r);
}

static bool is_skip(const hreq *r, int32_t t) {
    for (int i = 0; i < r->n_skip; i++)
        if (r->skip[i] == t) return true;
    return false;
}

void es_http_on_tokens(es_http *h, uint64_t id, const int32_t *toks, int n, int n_generated) {
    es_http_on_tokens_lp(h, id, toks, NULL, n, n_generated);
}

void es_http_on_tokens_lp(es_http *h, uint64_t id, const int32_t *toks, const es_token_logprob *lps, int n, int n_generated) {
    hreq *r = NULL;
    hchoice *c = find_choice(h, id, &r);
    if (!c) return;
    if (n_generated > c->n_generated) c->n_generated = n_generated;
    if (n > 0) {
        const double t = es_now_s();
        if (!r->got_tokens) es_metrics_observe(&h->m.ttft, t - r->t_arrive);
        else if (c->t_last > 0)
            for (int i = 0; i < n; i++) es_metrics_observe(&h->m.itl, (t - c->t_last) / n);
        r->got_tokens = true;
        c->t_last = t;
    }
    bool oom = false;
    /* one call is one step of the generator: every token but the last was drafted and accepted, the
       last is the target's (its correction or bonus token); a skipped last token (EOS, end of turn)
       leaves every shown token a drafted one */
    int shown = 0;
    size_t last_bytes = 0;
    bool last_skipped = false;
    for (int i = 0; i < n; i++) {
        if (is_skip(r, toks[i])) {
            last_skipped = true;
            continue;
        }
        const size_t before = c->piece.len;
        if (!es_detok_push(&c->dt, toks[i], &c->piece)) oom = true;
        const size_t made = c->piece.len - before;
        shown++;
        last_bytes = made;
        last_skipped = false;
        if (r->logprobs && lps) {
            if (c->n_lp == c->cap_lp) {
                const int cap = c->cap_lp ? 2 * c->cap_lp : 16;
                lpent *p = realloc(c->lp, (size_t)cap * sizeof *p);
                if (p) {
                    c->lp = p;
                    c->cap_lp = cap;
                }
            }
            if (c->n_lp < c->cap_lp) c->lp[c->n_lp++] = (lpent){lps[i], toks[i], c->lp_prev, c->text_pos, c->text_pos + made};
            else oom = true;
        }
        c->text_pos += made;
        c->lp_prev = toks[i];
    }
    if (c->piece.len) es_stopstr_feed(&c->ss, c->piece.s, c->piece.len, &c->out, &oom);
    es_str_clear(&c->piece);
    if (oom) {
        req_cancel(r);
        req_fail(r, 500, "out of memory");
        return;
    }
    if (c->ss.matched) { /* the stop string ends it: free the session now */
        choice_cancel(r, c);
        choice_end(r, c, ES_STOP_EOS);
        return;
    }
    stream_start(r);
    if (r->stream && r->tools && c->out.len) { /* a tool call is sent whole at the end, not as content */
        if (!es_str_append(&c->held, c->out.s, c->out.len)) oom = true;
        es_str_clear(&c->out);
        const size_t k = c->in_call ? 0 : es_chat_tool_content_len(es_str_cstr(&c->held), c->held.len, c->sent_pos == 0, &c->in_call);
        if (k && es_str_append(&c->out, c->held.s, k)) es_str_consume(&c->held, k);
        if (oom) {
            req_cancel(r);
            req_fail(r, 500, "out of memory");
            return;
        }
    }
    char spec[128] = "";
    if (r->stream && r->include_speculation && shown > 0)
        snprintf(spec, sizeof spec, "\"speculation\":{\"tokens\":%d,\"drafted\":%d,\"target_bytes\":%zu}", shown,
                 last_skipped ? shown : shown - 1, last_skipped ? (size_t)0 : last_bytes);
    if (r->stream && spec[0] && !c->out.len) /* the step's text is held back (a stop string, a split character): its counts still go */
        sse_chunk_lp_ext(r, c, NULL, NULL, NULL, -1, spec);
    if (r->stream && c->out.len) {
        c->sent_pos += c->out.len;
        sse_chunk_lp_ext(r, c, NULL, c->out.s, NULL, lp_upto(c, c->sent_pos, false, false), spec[0] ? spec : NULL);
        es_str_clear(&c->out);
        /* a client that does not read holds our memory: treat it as gone */
        struct bufferevent *bev = r->evcon ? evhttp_connection_get_bufferevent(r->evcon) : NULL;
        if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > HTTP_MAX_OUTPUT) {
            struct evhttp_connection *evcon = r->evcon;
            req_detach(r);
            req_abandon(r, "not reading (slow consumer)");
            req_free(r);
            evhttp_connection_free(evcon);
        }
    }
}

void es_http_on_end(es_http *h, uint64_t id, int stop, int n_generated, int status, const char *msg) {
    hreq *r = NULL;
    hchoice *c = find_choice(h, id, &r);
    if (!c) { /* a cancelled generation has let go of its session or worker only now */
        es_http_kick(h);
        return;
    }
    if (n_generated > c->n_generated) c->n_generated = n_generated;
    if (stop == ES_STOP_ERROR && status == 503 && c->n_generated > 0) {
        /* the server ran out of room after tokens were made: they are the client's, so the choice ends
           as a generation cut short ("length"), as the README promises, not as an error that loses them */
        hlog(h, 1, "request %s: cut after %d tokens: %s", r->rid, c->n_generated, msg ? msg : "");
        choice_end(r, c, ES_STOP_LENGTH);
    } else if (stop == ES_STOP_ERROR) {
        c->running = false;
        req_cancel(r); /* the other choices */
        req_fail(r, status, msg);
    } else {
        choice_end(r, c, stop);
    }
}

/* ---- admission: the backend, or the queue ---- */

/* Asks the backend for sessions for r's choices not started yet, in order, until one is refused.
 * ES_OK: every choice is generating. */
static es_status req_start(hreq *r, es_err *err) {
    es_http *h = r->h;
    int granted = 0;
    while (r->n_started < r->n_choices) {
        hchoice *c = &r->ch[r->n_started];
        es_http_gen g = r->g;
        g.id = c->id;
        /* choices that sample differ: choice 0 is the n = 1 request, the others get seeds mixed from it */
        if (r->n_started > 0) g.sampling.seed = mix64(r->g.sampling.seed + (uint64_t)r->n_started);
        es_status st = h->p.backend.start ? h->p.backend.start(h->p.backend.ud, &g, &granted, err)
                                          : es_fail(err, ES_ERR_INTERNAL, "no backend");
        if (st != ES_OK) return st;
        c->running = true;
        r->n_started++;
    }
    free(r->prompt); /* the backend copied it */
    r->prompt = NULL;
    r->g.prompt = NULL;
    es_grammar_free(r->grammar); /* and its grammar */
    r->grammar = NULL;
    r->g.grammar = NULL;
    r->t_admit = es_now_s();
    es_metrics_observe(&h->m.queue_time, r->t_admit - r->t_arrive);
    h->st.completions++;
    h->st.prompt_tokens += r->n_prompt;
    h->m.http_prompt_tokens += r->n_prompt;
    hlog(h, 3, "request %s: %s, %d prompt tokens, max %d (granted %d), %d choice%s, %s%s", r->rid, r->endpoint, r->n_prompt,
         r->g.max_tokens, granted, r->n_choices, r->n_choices == 1 ? "" : "s", r->stream ? "streaming" : "plain",
         r->t_admit - r->t_arrive > 1e-3 ? ", after waiting in the queue" : "");
    return ES_OK;
}

/* The backend refused r for good: its started choices are cancelled, the error reply goes out, and r
 * is freed. */
static void req_refuse(hreq *r, es_status st, const es_err *err) {
    es_http *h = r->h;
    req_cancel(r);
    if (r->started) { /* choices that started have streamed already: an error event ends the stream */
        req_fail(r, st == ES_ERR_BUSY || st == ES_ERR_FULL ? 503 : 500, err->msg);
        return;
    }
    struct evhttp_request *req = r->req;
    const char *ep = r->endpoint;
    req_detach(r);
    req_free(r);
    if (st == ES_ERR_BUSY || st == ES_ERR_FULL)
        reply_errorf(h, req, ep, 503, "server_error", "server_busy", "the server is busy: %s", err->msg);
    else if (st == ES_ERR_RANGE)
        reply_errorf(h, req, ep, 400, "invalid_request_error", "context_length_exceeded", "%s", err->msg);
    else if (st == ES_ERR_INVALID_ARG)
        reply_errorf(h, req, ep, 400, "invalid_request_error", "invalid_value", "%s", err->msg);
    else if (st == ES_ERR_IO || st == ES_ERR_TIMEOUT)
        reply_errorf(h, req, ep, 502, "server_error", "upstream_unavailable", "%s", err->msg);
    else reply_errorf(h, req, ep, 500, "server_error", NULL, "%s", err->msg);
}

/* Watches the client from here on: a close (or, for plain replies and streams before their first
 * tokens, a hang-up seen on the socket) abandons the request, queued or generating. */
static void req_watch(hreq *r) {
    es_http *h = r->h;
    if (!r->evcon) return;
    evhttp_connection_set_closecb(r->evcon, on_close, r);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(r->evcon);
    const evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd >= 0 && (r->watch = event_new(h->p.base, fd, EV_READ | EV_PERSIST, watch_cb, r))) event_add(r->watch, NULL);
}

/* A queued request waited past queue_timeout_s: 503 with Retry-After (choices that started meanwhile
 * are cancelled). */
static void queue_timeout_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    hreq *r = arg;
    es_http *h = r->h;
    h->m.queue_timeouts++;
    h->st.queue_timeouts++;
    hlog(h, 2, "request %s: no session within --queue-timeout %.3g s", r->rid, h->p.queue_timeout_s);
    es_err err;
    snprintf(err.msg, sizeof err.msg, "the request waited %.3g s in the queue (--queue-timeout) without a free session",
             h->p.queue_timeout_s);
    req_cancel(r);
    if (r->started) {
        req_fail(r, 503, err.msg);
        return;
    }
    struct evhttp_request *req = r->req;
    const char *ep = r->endpoint;
    req_detach(r);
    req_free(r);
    reply_errorf(h, req, ep, 503, "server_error", "queue_timeout", "the server is busy: %s", err.msg);
}

static void queue_add(hreq *r) {
    es_http *h = r->h;
    r->queued = true;
    r->qnext = NULL;
    if (h->q_tail) h->q_tail->qnext = r;
    else h->q_head = r;
    h->q_tail = r;
    h->n_queued++;
    if (h->p.queue_timeout_s > 0 && (r->qtimer || (r->qtimer = evtimer_new(h->p.base, queue_timeout_cb, r)))) {
        const double t = h->p.queue_timeout_s;
        struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
        evtimer_add(r->qtimer, &tv);
    }
    hlog(h, 3, "request %s: queued (%d waiting)", r->rid, h->n_queued);
}

/* Starts queued requests, oldest first, until the backend is busy again. */
static void queue_pump(es_http *h) {
    while (h->q_head && !h->shutting_down) {
        hreq *r = h->q_head;
        es_err err = {{0}};
        const es_status st = req_start(r, &err);
        if (st == ES_ERR_BUSY || st == ES_ERR_FULL) return;
        queue_remove(r);
        if (st != ES_OK) req_refuse(r, st, &err);
    }
}

static void pump_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    queue_pump(arg);
}

void es_http_kick(es_http *h) {
    if (h && h->q_head && h->pump) event_active(h->pump, EV_TIMEOUT, 0);
}

/* ---- the endpoints ---- */

static bool auth_ok(const es_http *h, struct evhttp_request *req) {
    if (h->keys.n == 0) return true;
    const char *a = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    const char *tok = "";
    if (a && strncasecmp(a, "Bearer ", 7) == 0) {
        tok = a + 7;
        while (*tok == ' ') tok++;
    }
    return es_keys_match(&h->keys, tok, strnlen(tok, HTTP_MAX_KEY + 1)); /* constant time (transport/keys.h) */
}

/* Tokenises text (BOS as the vocabulary asks). NULL with *n = 0 on failure (message in err). */
static int32_t *tokenize(es_http *h, const char *text, bool special, int *n, es_err *err) {
    const size_t len = strlen(text);
    int cap = len < (size_t)INT32_MAX - 16 ? (int)len + 8 : 0, got = 0;
    *n = 0;
    if (cap == 0) {
        es_fail(err, ES_ERR_RANGE, "the prompt is too long");
        return NULL;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *ids = malloc((size_t)cap * sizeof *ids);
        if (!ids) {
            es_fail(err, ES_ERR_NOMEM, "out of memory");
            return NULL;
        }
        if (es_tokenize(h->p.tok, text, len, true, special, ids, cap, &got, err) != ES_OK) {
            free(ids);
            return NULL;
        }
        if (got <= cap) {
            *n = got;
            return ids;
        }
        free(ids);
        cap = got;
    }
    es_fail(err, ES_ERR_INTERNAL, "tokenisation did not converge");
    return NULL;
}

/* tools and the assistant's tool_calls in the history need a template that shows them to the model
 * (tool results render in every template, as they always did); a call the server cannot force is
 * refused, never ignored. */
static bool chat_tools_ok(const es_http *h, const es_oai_request *q, es_oai_error *e) {
    bool calls = false;
    for (int i = 0; i < q->n_messages; i++) calls = calls || q->messages[i].tool_calls;
    if ((q->tools || calls) && !h->jinja_tools) {
        es_oai_error_set(e, 400, "invalid_request_error", "unsupported_parameter", q->tools ? "tools" : "messages",
                         "%s: the chat template in use does not take tools (a model whose tokenizer.chat_template does, "
                         "served with --chat-template auto, or --chat-template-file FILE)",
                         q->tools ? "'tools'" : "tool_calls in 'messages'");
        return false;
    }
    if (!q->tools && (q->tool_choice == ES_OAI_TOOLS_REQUIRED || q->tool_choice == ES_OAI_TOOLS_NAMED)) {
        es_oai_error_set(e, 400, "invalid_request_error", "invalid_value", "tool_choice", "'tool_choice' asks for a tool call but 'tools' is empty");
        return false;
    }
    return true;
}

/* tool_choice "required" or a named function, enforced by constrained decoding: the reply must be
 * one JSON call {"name": N, "arguments": {...}} with N a requested tool (or the named one). When one
 * tool is possible (named, or the only one) its arguments follow its parameters schema where the
 * grammar takes it; with several, or outside the grammar's subset, any object (the schemas of several
 * tools all start with '{', which the grammar's alternatives cannot tell apart). The reply parser
 * (es_chat_parse_tool_calls) reads such a bare call as a tool call. */
static bool tool_choice_grammar(es_oai_request *q, es_oai_error *e) {
    if (!q->tools || (q->tool_choice != ES_OAI_TOOLS_REQUIRED && q->tool_choice != ES_OAI_TOOLS_NAMED)) return true;
    if (q->grammar) {
        es_oai_error_set(e, 400, "invalid_request_error", "invalid_value", "tool_choice",
                         "'tool_choice' asking for a call cannot be combined with a JSON response_format");
        return false;
    }
    cJSON *tools = cJSON_Parse(q->tools), *names = cJSON_CreateArray(), *params = NULL;
    bool found = false;
    for (const cJSON *t = tools ? tools->child : NULL; t && names; t = t->next) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (!cJSON_IsString(n)) continue;
        if (q->tool_choice == ES_OAI_TOOLS_NAMED && strcmp(n->valuestring, q->tool_choice_name)) continue;
        cJSON_AddItemToArray(names, cJSON_CreateString(n->valuestring));
        const cJSON *pa = cJSON_GetObjectItemCaseSensitive(f, "parameters");
        if (!found && cJSON_IsObject(pa)) params = cJSON_Duplicate(pa, true);
        else if (found) { /* several tools: their schemas cannot be told apart by a first byte */
            cJSON_Delete(params);
            params = NULL;
        }
        found = true;
    }
    if (!found) {
        cJSON_Delete(tools);
        cJSON_Delete(names);
        cJSON_Delete(params);
        es_oai_error_set(e, 400, "invalid_request_error", "invalid_value", "tool_choice", "'tool_choice' names '%.64s', which is not in 'tools'",
                         q->tool_choice_name ? q->tool_choice_name : "");
        return false;
    }
    es_err err = {{0}};
    es_status st = ES_ERR_NOMEM;
    /* first with the tool's parameters schema, then (outside the grammar's subset) any object */
    for (int pass = params ? 0 : 1; pass < 2 && st != ES_OK; pass++) {
        cJSON *schema = cJSON_CreateObject(), *props = cJSON_CreateObject(), *name = cJSON_CreateObject(), *req = cJSON_CreateArray();
        cJSON *args = pass == 0 ? cJSON_Duplicate(params, true) : cJSON_CreateObject();
        if (!schema || !props || !name || !req || !args) {
            cJSON_Delete(schema); cJSON_Delete(props); cJSON_Delete(name); cJSON_Delete(req); cJSON_Delete(args);
            break;
        }
        if (pass == 1) cJSON_AddStringToObject(args, "type", "object");
        cJSON_AddItemToObject(name, "enum", cJSON_Duplicate(names, true));
        cJSON_AddItemToObject(props, "name", name);
        cJSON_AddItemToObject(props, "arguments", args);
        cJSON_AddStringToObject(schema, "type", "object");
        cJSON_AddItemToObject(schema, "properties", props);
        cJSON_AddItemToArray(req, cJSON_CreateString("name"));
        cJSON_AddItemToArray(req, cJSON_CreateString("arguments"));
        cJSON_AddItemToObject(schema, "required", req);
        cJSON_AddBoolToObject(schema, "additionalProperties", false);
        char *txt = cJSON_PrintUnformatted(schema);
        cJSON_Delete(schema);
        st = txt ? es_grammar_from_schema(txt, strlen(txt), &q->grammar, &err) : ES_ERR_NOMEM;
        free(txt);
    }
    cJSON_Delete(tools);
    cJSON_Delete(names);
    cJSON_Delete(params);
    if (st != ES_OK) {
        es_oai_error_set(e, st == ES_ERR_NOMEM ? 500 : 400, "invalid_request_error", "invalid_value", "tool_choice",
                         "'tool_choice' cannot be enforced: %s", err.msg[0] ? err.msg : "out of memory");
        return false;
    }
    return true;
}

/* 503 while the server stops or drains; false after that reply. */
static bool accepting(es_http *h, struct evhttp_request *req, const char *endpoint) {
    if (h->shutting_down) {
        reply_errorf(h, req, endpoint, 503, "server_error", "shutting_down", "the server is stopping");
        return false;
    }
    if (h->draining) {
        reply_errorf(h, req, endpoint, 503, "server_error", "draining", "this server is draining: retry on another replica");
        return false;
    }
    return true;
}

/* What a well-formed request (es_oai_parse_request) may still ask in vain here: tokens outside the
 * vocabulary, logprobs or constrained decoding from a backend without them, tools the chat template
 * does not show. A tool_choice that asks for a call becomes q->grammar on the way. */
static bool request_supported(es_http *h, int kind, es_oai_request *q, es_oai_error *e) {
    for (int i = 0; i < q->n_bias; i++)
        if (q->bias[i].id >= h->n_vocab) {
            es_oai_error_set(e, 400, "invalid_request_error", "invalid_value", "logit_bias",
                             "'logit_bias' names token %d, outside the vocabulary (0..%d)", q->bias[i].id, h->n_vocab - 1);
            return false;
        }
    if (q->logprobs && !h->p.backend.logprobs) {
        es_oai_error_set(e, 400, "invalid_request_error", "unsupported_parameter", "logprobs",
                         "'logprobs' is not available here: the target model's probabilities are computed on the "
                         "verification server (ask its HTTP API, serve --http-port)");
        return false;
    }
    if (kind == ES_OAI_CHAT && !tool_choice_grammar(q, e)) return false;
    if (q->grammar && !h->p.backend.grammar) {
        const bool by_tools = q->tools && (q->tool_choice == ES_OAI_TOOLS_REQUIRED || q->tool_choice == ES_OAI_TOOLS_NAMED);
        es_oai_error_set(e, 400, "invalid_request_error", "unsupported_parameter", by_tools ? "tool_choice" : "response_format",
                         "%s is not available here: constrained decoding runs where the target verifies (ask the "
                         "server's HTTP API, serve --http-port)",
                         by_tools ? "'tool_choice' asking for a call" : "JSON response_format");
        return false;
    }
    if (kind == ES_OAI_CHAT && !chat_tools_ok(h, q, e)) return false;
    return true;
}

/* A completion's prompt as token ids and the ids that end its choices. */
typedef struct hprompt {
    int32_t *ids;                        /* malloc'd; the request in flight takes it */
    int n;
    int max_tokens;                      /* the request's, or the default of its kind */
    int32_t stop_ids[HTTP_MAX_STOP_IDS];
    int n_stop_ids;
    bool tools;                          /* a chat with tools the model may call */
} hprompt;

/* A chat's messages through the chat template: the Jinja one (the model's, or --chat-template-file),
 * else the built-in family. The caller frees *text either way. */
static bool render_chat(es_http *h, const es_oai_request *q, bool tools, es_str *text, es_oai_error *e) {
    if (!h->jinja) {
        if (es_chat_render((es_chat_family)h->chat_family, q->messages, q->n_messages, text)) return true;
        es_oai_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return false;
    }
    es_err err = {{0}};
    const es_status rs = es_chat_render_jinja(h->jinja, q->messages, q->n_messages, tools ? q->tools : NULL, h->bos_text, h->eos_text,
                                              (int64_t)time(NULL), text, &err);
    if (rs != ES_OK) {
        if (rs == ES_ERR_NOMEM || rs == ES_ERR_INTERNAL) es_oai_error_set(e, 500, "server_error", NULL, NULL, "%s", err.msg);
        else es_oai_error_set(e, 400, "invalid_request_error", "invalid_value", NULL, "the model's chat template: %s", err.msg);
        return false;
    }
    /* the template writes BOS itself (Llama 3, Mistral, Gemma) where the tokenizer adds one too */
    const size_t bl = strlen(h->bos_text);
    if (bl && h->bos >= 0 && es_tokenizer_add_bos(h->p.tok) && text->len >= bl && !memcmp(text->s, h->bos_text, bl)) es_str_consume(text, bl);
    return true;
}

/* The prompt of q as token ids (a chat rendered and tokenised, a text tokenised, or ids checked against
 * the vocabulary: q's are taken), and max_tokens resolved and checked against the context. On failure
 * the caller frees p->ids. */
static bool request_prompt(es_http *h, int kind, es_oai_request *q, hprompt *p, es_oai_error *e) {
    es_err err = {{0}};
    if (h->bos >= 0 && h->bos != h->eos) p->stop_ids[p->n_stop_ids++] = h->bos; /* as `edgespec run`: BOS ends a story */
    p->tools = kind == ES_OAI_CHAT && q->tools && q->tool_choice != ES_OAI_TOOLS_NONE;
    if (kind == ES_OAI_CHAT) {
        es_str text = {0};
        if (!render_chat(h, q, p->tools, &text, e)) {
            es_str_free(&text);
            return false;
        }
        /* the template's markers are control tokens; the fallback transcript is plain text, tokenised
         * exactly as `edgespec run` would tokenise it */
        p->ids = tokenize(h, es_str_cstr(&text), h->jinja || h->chat_family != ES_CHAT_FALLBACK, &p->n, &err);
        es_str_free(&text);
        if (h->eot >= 0) p->stop_ids[p->n_stop_ids++] = h->eot;
    } else if (q->prompt) {
        p->ids = tokenize(h, q->prompt, false, &p->n, &err);
    } else {
        for (int i = 0; i < q->n_prompt_ids; i++)
            if (q->prompt_ids[i] >= h->n_vocab) {
                es_oai_error_set(e, 400, "invalid_request_error", "invalid_value", "prompt",
                                 "prompt token %d: id %d is outside the vocabulary (0..%d)", i, q->prompt_ids[i], h->n_vocab - 1);
                return false;
            }
        p->ids = q->prompt_ids;
        p->n = q->n_prompt_ids;
        q->prompt_ids = NULL;
    }
    if (!p->ids || p->n < 1) {
        if (err.msg[0]) es_oai_error_set(e, 400, "invalid_request_error", "invalid_value", NULL, "cannot tokenise the prompt: %s", err.msg);
        else es_oai_error_set(e, 400, "invalid_request_error", "invalid_value", NULL, "the prompt is empty");
        return false;
    }
    p->max_tokens = q->max_tokens;
    if (p->max_tokens == 0) p->max_tokens = kind == ES_OAI_CHAT ? h->p.n_ctx - p->n : ES_OAI_COMPLETION_DEFAULT_MAX_TOKENS;
    if (p->max_tokens < 1) p->max_tokens = 1; /* a prompt that fills the context: the check below says so */
    return es_oai_check_context(p->n, p->max_tokens, h->p.n_ctx, e);
}

/* The request in flight for q and its prompt p, linked into h's list; it takes over q's model, stop
 * strings, tools and grammar, and p's ids. NULL when out of memory (nothing taken then). */
static hreq *req_new(es_http *h, struct evhttp_request *req, int kind, const char *endpoint, es_oai_request *q, hprompt *p,
                     double t_arrive) {
    hreq *r = calloc(1, sizeof *r);
    hchoice *ch = r ? calloc((size_t)q->n, sizeof *ch) : NULL;
    if (!r || !ch) {
        free(r);
        return NULL;
    }
    r->h = h;
    r->id = h->next_id;
    h->next_id += (uint64_t)q->n;
    r->ch = ch;
    r->n_choices = q->n;
    r->req = req;
    r->evcon = evhttp_request_get_connection(req);
    r->endpoint = endpoint;
    r->kind = kind;
    r->stream = q->stream;
    r->include_usage = q->stream && q->include_usage;
    r->include_speculation = q->stream && q->include_speculation;
    r->created = (int64_t)time(NULL);
    r->t_arrive = t_arrive;
    snprintf(r->rid, sizeof r->rid, "%s-%016llx", kind == ES_OAI_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)mix64(h->salt ^ r->id));
    r->model = q->model ? q->model : strdup(h->model_name);
    q->model = NULL;
    for (int i = 0; i < q->n_stop; i++) {
        r->stop[i] = q->stop[i];
        q->stop[i] = NULL;
    }
    r->n_stop = q->n_stop;
    q->n_stop = 0;
    r->n_prompt = p->n;
    r->prompt = p->ids;
    p->ids = NULL;
    r->logprobs = q->logprobs;
    r->top_logprobs = q->top_logprobs;
    r->tools = p->tools;
    if (p->tools) { /* taken over from the request */
        r->tools_json = q->tools;
        q->tools = NULL;
    }
    r->grammar = q->grammar;
    q->grammar = NULL;
    memcpy(r->stop_ids, p->stop_ids, (size_t)p->n_stop_ids * sizeof *p->stop_ids);
    if (h->eos >= 0) r->skip[r->n_skip++] = h->eos;
    for (int i = 0; i < p->n_stop_ids; i++) r->skip[r->n_skip++] = p->stop_ids[i];
    for (int i = 0; i < r->n_choices; i++) {
        hchoice *c = &r->ch[i];
        c->id = r->id + (uint64_t)i;
        c->lp_prev = r->prompt[r->n_prompt - 1];
        es_detok_init(&c->dt, h->p.tok, r->prompt[r->n_prompt - 1]);
        es_stopstr_init(&c->ss, r->stop, r->n_stop);
    }
    r->next = h->reqs;
    if (h->reqs) h->reqs->prev = r;
    h->reqs = r;
    h->n_active++;
    return r;
}

/* What the backend is given for each of r's choices (es_http_gen): the sampling values of q, the stops
 * and the grammar r holds. */
static void req_set_gen(hreq *r, const es_oai_request *q, const hprompt *p) {
    es_http *h = r->h;
    es_http_gen *g = &r->g;
    g->id = r->id;
    g->prompt = r->prompt;
    g->n_prompt = r->n_prompt;
    g->max_tokens = p->max_tokens;
    g->sampling = es_sampler_default_params();
    g->sampling.temperature = (float)q->temperature;
    g->sampling.top_p = (float)q->top_p;
    g->sampling.top_k = q->top_k;
    g->sampling.min_p = (float)q->min_p;
    g->sampling.repeat_penalty = (float)q->repeat_penalty;
    g->sampling.presence_penalty = (float)q->presence_penalty;
    g->sampling.frequency_penalty = (float)q->frequency_penalty;
    if (q->has_repeat_last_n) g->sampling.repeat_last_n = q->repeat_last_n < 0 ? h->p.n_ctx : q->repeat_last_n;
    g->sampling.n_bias = q->n_bias;
    for (int i = 0; i < q->n_bias; i++) {
        g->sampling.bias[i].id = q->bias[i].id;
        g->sampling.bias[i].bias = q->bias[i].bias;
    }
    g->sampling.seed = q->has_seed ? q->seed : mix64(h->salt + 0x5eed + r->id);
    g->seeded = q->has_seed;
    g->stop = r->stop_ids;
    g->n_stop = p->n_stop_ids;
    g->stop_strings = r->stop;
    g->n_stop_strings = r->n_stop;
    g->skip = r->skip;
    g->n_skip = r->n_skip;
    g->logprobs = q->logprobs;
    g->top_logprobs = q->top_logprobs;
    g->grammar = r->grammar;
}

/* First come, first served: r starts its choices now, or, while others wait or no session is free,
 * joins the back of the queue (its choices that started generate meanwhile); refused when the queue
 * is full. */
static void req_begin(hreq *r) {
    es_http *h = r->h;
    es_err err = {{0}};
    es_status st = h->q_head ? ES_ERR_BUSY : req_start(r, &err);
    if (st == ES_ERR_BUSY || st == ES_ERR_FULL) {
        if (h->n_queued < h->p.max_queue) {
            queue_add(r);
            req_watch(r);
            return;
        }
        h->m.queue_full++;
        h->st.queue_full++;
        if (h->p.max_queue > 0) {
            snprintf(err.msg, sizeof err.msg, "%d requests are already waiting (--max-queue %d)", h->n_queued, h->p.max_queue);
        }
    }
    if (st != ES_OK) {
        req_refuse(r, st, &err);
        return;
    }
    req_watch(r);
}

/* POST /v1/completions and /v1/chat/completions: the request checked, its prompt made, then it starts
 * or waits in the queue; the replies come from the backend's events. */
static void handle_completion(es_http *h, struct evhttp_request *req, int kind, const char *endpoint) {
    const double t_arrive = es_now_s();
    if (!accepting(h, req, endpoint)) return;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const size_t blen = evbuffer_get_length(in);
    const char *body = blen ? (const char *)evbuffer_pullup(in, -1) : "";
    es_oai_request q;
    es_oai_error e;
    memset(&e, 0, sizeof e);
    if (!es_oai_parse_request(kind, body, blen, &q, &e)) {
        reply_error(h, req, endpoint, &e);
        return;
    }
    hprompt p;
    memset(&p, 0, sizeof p);
    hreq *r = NULL;
    if (!request_supported(h, kind, &q, &e) || !request_prompt(h, kind, &q, &p, &e)) goto refuse;
    if (!(r = req_new(h, req, kind, endpoint, &q, &p, t_arrive))) {
        es_oai_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        goto refuse;
    }
    req_set_gen(r, &q, &p);
    es_oai_request_free(&q);
    req_begin(r);
    return;
refuse:
    es_oai_request_free(&q);
    free(p.ids);
    reply_error(h, req, endpoint, &e);
}

static void handle_models(es_http *h, struct evhttp_request *req, const char *path) {
    const int64_t created = (int64_t)time(NULL) - (int64_t)(es_now_s() - h->t_start);
    if (!strcmp(path, EP_MODELS)) {
        char *j = es_oai_models_json(h->model_name, created, h->owned_by);
        reply_json(h, req, EP_MODELS, j ? 200 : 500, j);
        free(j);
        return;
    }
    const char *id = path + strlen(EP_MODELS) + 1; /* /v1/models/ID */
    char *dec = evhttp_uridecode(id, 0, NULL);
    if (!dec || strcmp(dec, h->model_name) != 0) {
        reply_errorf(h, req, EP_MODELS, 404, "invalid_request_error", "model_not_found", "The model '%.200s' does not exist",
                     dec ? dec : id);
        free(dec);
        return;
    }
    free(dec);
    /* the single model object: the list's element */
    char *j = es_oai_models_json(h->model_name, created, h->owned_by);
    char *at = j ? strstr(j, "[{") : NULL;
    if (at) {
        size_t n = strlen(at + 1);
        memmove(j, at + 1, n + 1);
        char *end = strrchr(j, ']');
        if (end) *end = 0;
    }
    reply_json(h, req, EP_MODELS, at ? 200 : 500, at ? j : NULL);
    free(j);
}

/* POST /tokenize {"content": TEXT, "add_special": BOOL (default true: BOS as the vocabulary asks),
 * "parse_special": BOOL (default false)} -> {"tokens": [ids]}; POST /detokenize {"tokens": [ids]} ->
 * {"content": TEXT} (llama.cpp's server: the ids a prompt costs, the text ids stand for). The model's
 * own tokenizer, as completions use it; text follows the same rules as prompts (NUL refused). */
static void handle_tokenize(es_http *h, struct evhttp_request *req, const char *ep) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const size_t blen = evbuffer_get_length(in);
    const char *body = blen ? (const char *)evbuffer_pullup(in, -1) : "";
    es_oai_error e;
    memset(&e, 0, sizeof e);
    es_oai_tok q;
    if (!es_oai_parse_tokenize(ep == EP_TOKENIZE, body, blen, &q, &e)) {
        reply_error(h, req, ep, &e);
        return;
    }
    es_str out = {0};
    bool ok = true;
    if (ep == EP_TOKENIZE) {
        const size_t len = strlen(q.content);
        int cap = len < (size_t)INT32_MAX - 16 ? (int)len + 8 : 0, n = 0;
        int32_t *ids = cap ? malloc((size_t)cap * sizeof *ids) : NULL;
        es_err err = {{0}};
        if (!ids || es_tokenize(h->p.tok, q.content, len, q.add_special, q.parse_special, ids, cap, &n, &err) != ES_OK || n > cap) {
            free(ids);
            es_oai_tok_free(&q);
            reply_errorf(h, req, ep, ids ? 400 : 500, ids ? "invalid_request_error" : "server_error", NULL, "cannot tokenise: %s",
                         err.msg[0] ? err.msg : "out of memory");
            return;
        }
        ok = es_str_puts(&out, "{\"tokens\":[");
        for (int i = 0; i < n && ok; i++) ok = es_str_printf(&out, "%s%d", i ? "," : "", ids[i]);
        ok = ok && es_str_puts(&out, "]}");
        free(ids);
    } else {
        for (int i = 0; i < q.n_ids; i++)
            if (q.ids[i] >= h->n_vocab) {
                reply_errorf(h, req, ep, 400, "invalid_request_error", "invalid_value", "token %d: id %d is outside the vocabulary (0..%d)", i,
                             q.ids[i], h->n_vocab - 1);
                es_oai_tok_free(&q);
                return;
            }
        es_detok dt;
        es_detok_init(&dt, h->p.tok, -1);
        es_str text = {0};
        for (int i = 0; i < q.n_ids && ok; i++) ok = es_detok_push(&dt, q.ids[i], &text);
        ok = ok && es_detok_flush(&dt, &text);
        char *j = ok ? es_oai_content_json(es_str_cstr(&text)) : NULL;
        ok = j && es_str_puts(&out, j);
        free(j);
        es_str_free(&text);
    }
    es_oai_tok_free(&q);
    if (ok) reply_json(h, req, ep, 200, es_str_cstr(&out));
    else reply_errorf(h, req, ep, 500, "server_error", NULL, "out of memory");
    es_str_free(&out);
}

static void handle_metrics(es_http *h, struct evhttp_request *req) {
    es_metrics m = h->m;
    m.http_active = h->n_active - h->n_queued;
    m.queue_depth = h->n_queued;
    m.uptime_seconds = es_now_s() - h->t_start;
    const char *up = NULL;
    m.ready = !h->shutting_down && (!h->p.backend.health || h->p.backend.health(h->p.backend.ud, &up));
    if (h->tps_n >= 2) {
        const int last = (h->tps_at + HTTP_TPS_WINDOW - 1) % HTTP_TPS_WINDOW;
        const int first = h->tps_n < HTTP_TPS_WINDOW ? 0 : h->tps_at;
        const double dt = h->tps_t[last] - h->tps_t[first];
        m.tokens_per_second = dt > 0 ? (double)(h->tps_tok[last] - h->tps_tok[first]) / dt : 0;
    }
    m.auth_failures_http = h->auth_failures;
    m.http_conns_open = h->n_conns;
    m.http_conns_refused = h->st.conns_refused;
    m.http_conns_timed_out = h->st.conns_timed_out;
    m.http_accept_failures = h->accept_fails;
    if (h->p.tls) m.tls_failures_http = atomic_load(&h->tls_failures);
    if (h->p.backend.metrics) h->p.backend.metrics(h->p.backend.ud, &m);
    /* this scrape counts itself, so two scrapes always see the counter move */
    count(h, EP_METRICS, 200);
    es_metrics_count_request(&m, EP_METRICS, 200);
    es_str out = {0};
    if (!es_metrics_render(&m, &out)) {
        es_str_free(&out);
        reply_errorf(h, req, EP_METRICS, 500, "server_error", NULL, "out of memory");
        return;
    }
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    struct evbuffer *b = evbuffer_new();
    if (b) evbuffer_add(b, out.s, out.len);
    evhttp_send_reply(req, 200, "OK", b);
    if (b) evbuffer_free(b);
    es_str_free(&out);
}

/* Tokens generated so far, sampled once a second for the tokens/s gauge. */
/* ---- connections: a cap, and a deadline for each request however its bytes trickle in ----
 * evhttp (libevent 2.1) has neither: its timeout is per read, so one byte every few seconds keeps a
 * connection forever, and it accepts as many as descriptors allow. It asks us for each accepted
 * connection's bufferevent (conn_bev_cb), and we keep a reference to it: evhttp frees a connection
 * by bufferevent_free, which clears the callbacks, and the bufferevent (with its socket) lives on
 * until our sweep sees that and drops the reference (at the next accept or tick, within a second). */
typedef struct hconn {
    struct hconn *next;
    es_http *h;
    struct bufferevent *bev;
    struct event *act;           /* refuse or time out this connection, on the loop */
    double since;                /* accepted, or its previous reply completed */
    int busy;                    /* complete requests received and not yet answered */
    bool refused, cut;
    bool rewriting;              /* out_cb is replacing an error page (its own changes are not looked at) */
    struct evbuffer_cb_entry *out_cb;
} hconn;

/* evhttp answers what never reaches our handler — a malformed request line or header, an unknown
 * method (501), a body or headers over the limit (413 / 400) — with a fixed HTML page. The API's
 * errors are OpenAI JSON objects, so this callback on the connection's output buffer replaces that
 * page, once evhttp has written it whole, by the same status with a JSON body. The page's last line
 * cannot occur in anything we send ourselves (our bodies are JSON, with newlines escaped). */
static const char k_html_tail[] = "</BODY></HTML>\n";

static void out_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg) {
    hconn *c = arg;
    const size_t tl = sizeof k_html_tail - 1, len = evbuffer_get_length(b);
    /* an error page is small and comes alone or after a short pipelined reply: larger buffers (a
       stream's backlog) are not looked at, so the check costs nothing where it cannot match */
    if (c->rewriting || info->n_added == 0 || len < tl || len > 8192) return;
    const char *all = (const char *)evbuffer_pullup(b, -1);
    if (!all || memcmp(all + len - tl, k_html_tail, tl) != 0) return;
    /* the page's status line: the last "HTTP/1." in the buffer (a pipelined reply may precede it) */
    size_t start = len;
    for (const char *q = all; (q = memmem(q, len - (size_t)(q - all), "HTTP/1.", 7)); q++) start = (size_t)(q - all);
    if (start == len || len - start < 12) return;
    const int status = atoi(all + start + 9);
    if (status < 400 || status > 599) return;
    const char *msg = status == 413 ? "the request is too large (body or headers over the server's limits)"
                      : status == 501 ? "this HTTP method is not implemented"
                      : status == 400 ? "malformed HTTP request"
                                      : reason(status);
    char body[256];
    snprintf(body, sizeof body, "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":%s}}", msg,
             status == 413 ? "\"request_too_large\"" : "null");
    c->rewriting = true;
    /* keep what precedes the page, replace the page */
    struct evbuffer *keep = evbuffer_new();
    if (keep && evbuffer_remove_buffer(b, keep, start) == (int)start) {
        evbuffer_drain(b, evbuffer_get_length(b));
        evbuffer_add_buffer(b, keep);
        evbuffer_add_printf(b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                            status, reason(status), strlen(body), body);
    }
    if (keep) evbuffer_free(keep);
    c->rewriting = false;
}

static void conn_free(hconn *c) {
    if (c->out_cb) evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
    if (c->act) event_free(c->act);
    bufferevent_decref(c->bev); /* the last reference: the socket closes */
    free(c);
}

/* Drops the connections evhttp has freed. A live connection always has evhttp's event callback
 * (its read callback is NULL while a reply is being written); bufferevent_free clears them all. */
static void conn_sweep(es_http *h) {
    for (hconn **pp = &h->conns; *pp;) {
        hconn *c = *pp;
        bufferevent_event_cb ecb = NULL;
        bufferevent_getcb(c->bev, NULL, NULL, &ecb, NULL);
        if (ecb) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        h->n_conns--;
        conn_free(c);
    }
}

static hconn *conn_of(es_http *h, struct evhttp_request *req) {
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    for (hconn *c = h->conns; c && bev; c = c->next)
        if (c->bev == bev) return c;
    return NULL;
}

/* A refused or timed-out connection: a last word in plain HTTP (TLS ones just close), then the
 * socket is shut down, so evhttp sees the end and frees the connection. */
static void conn_act_cb(evutil_socket_t fd_unused, short what, void *arg) {
    (void)fd_unused;
    (void)what;
    hconn *c = arg;
    const evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd < 0) return;
    if (!c->h->p.tls) {
        const char *body = c->refused ? "{\"error\":{\"message\":\"too many connections; retry later\",\"type\":\"server_error\","
                                        "\"param\":null,\"code\":\"too_many_connections\"}}"
                                      : "{\"error\":{\"message\":\"the request did not arrive in time\",\"type\":"
                                        "\"invalid_request_error\",\"param\":null,\"code\":\"request_timeout\"}}";
        char msg[512];
        const int n = snprintf(msg, sizeof msg, "HTTP/1.1 %s\r\nContent-Type: application/json\r\n%sConnection: close\r\n"
                               "Content-Length: %zu\r\n\r\n%s", c->refused ? "503 Service Unavailable" : "408 Request Timeout",
                               c->refused ? "Retry-After: 1\r\n" : "", strlen(body), body);
        if (n > 0 && (size_t)n < sizeof msg) (void)!send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    shutdown(fd, SHUT_RDWR);
}

static void conn_tick(es_http *h, double now) {
    conn_sweep(h);
    if (h->p.request_timeout_s <= 0) return;
    for (hconn *c = h->conns; c; c = c->next)
        if (!c->busy && !c->cut && now - c->since > h->p.request_timeout_s) {
            c->cut = true;
            h->st.conns_timed_out++;
            hlog(h, 2, "HTTP connection cut: no complete request within %.3g s", h->p.request_timeout_s);
            event_active(c->act, EV_TIMEOUT, 0);
        }
}

/* A reply is out (evhttp calls this while the connection still holds the request): the next
 * request's deadline starts now. The connection is looked up again rather than remembered. */
static void req_complete_cb(struct evhttp_request *req, void *arg) {
    hconn *c = conn_of(arg, req);
    if (!c) return;
    if (c->busy > 0) c->busy--;
    c->since = es_now_s();
}

/* evhttp asks for each accepted connection's bufferevent (it sets the socket afterwards): a plain
 * one, or an accepting TLS one. */
static struct bufferevent *conn_bev_cb(struct event_base *base, void *arg) {
    es_http *h = arg;
    conn_sweep(h);
    struct bufferevent *b = es_accepted_bev(base, -1, h->p.tls, &h->tls_failures);
    if (!b) return NULL;
    hconn *c = calloc(1, sizeof *c);
    if (c) c->act = event_new(base, -1, 0, conn_act_cb, c);
    if (!c || !c->act) { /* untracked, but served: better than refusing for want of a few bytes */
        if (c) free(c);
        return b;
    }
    bufferevent_incref(b);
    c->h = h;
    c->bev = b;
    c->out_cb = evbuffer_add_cb(bufferevent_get_output(b), out_cb, c);
    c->since = es_now_s();
    c->next = h->conns;
    h->conns = c;
    h->n_conns++;
    if (h->n_conns > h->p.max_connections) {
        c->refused = true;
        h->st.conns_refused++;
        hlog(h, 2, "HTTP connection refused: %d open (limit %d)", h->n_conns - 1, h->p.max_connections);
        event_active(c->act, EV_TIMEOUT, 0); /* runs once evhttp has given the bufferevent its socket */
    }
    return b;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_http *h = arg;
    conn_tick(h, es_now_s());
    /* a safety net under the kicks: capacity can also come back without an event (the scheduler reaps
       slots of sessions closed during a long step when that step ends) */
    if (h->q_head) queue_pump(h);
    es_metrics m;
    es_metrics_init(&m);
    if (h->p.backend.metrics) h->p.backend.metrics(h->p.backend.ud, &m);
    const int64_t tok = m.generated_tokens >= 0 ? m.generated_tokens : h->m.http_completion_tokens;
    h->tps_t[h->tps_at] = es_now_s();
    h->tps_tok[h->tps_at] = tok;
    h->tps_at = (h->tps_at + 1) % HTTP_TPS_WINDOW;
    if (h->tps_n < HTTP_TPS_WINDOW) h->tps_n++;
}

/* ---- running out of descriptors ----
 * evhttp accepts on its own listener, whose error callback gets the evhttp, not us: the es_http is
 * found among the base's events by its tick timer (only on an accept error, which is rare). Without
 * this callback libevent logs every failed accept and retries at once: a listener out of
 * descriptors spins at full CPU and floods stderr while /health and the edge port starve. */
typedef struct find_ctx {
    const struct evhttp *http;
    es_http *found;
} find_ctx;

static int find_by_tick(const struct event_base *base, const struct event *ev, void *arg) {
    (void)base;
    find_ctx *f = arg;
    if (event_get_callback(ev) != tick_cb) return 0;
    es_http *h = event_get_callback_arg(ev);
    if (h->http != f->http) return 0;
    f->found = h;
    return 1;
}

static void relisten_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_http *h = arg;
    if (h->bound) evconnlistener_enable(evhttp_bound_socket_get_listener(h->bound));
}

static void accept_error_cb(struct evconnlistener *l, void *arg) {
    const int e = EVUTIL_SOCKET_ERROR();
    find_ctx f = {arg, NULL};
    event_base_foreach_event(evconnlistener_get_base(l), find_by_tick, &f);
    es_http *h = f.found;
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        /* pause for 100 ms: the connections waiting in the backlog stay there until descriptors free up */
        evconnlistener_disable(l);
        struct timeval tv = {0, 100000};
        if (h) event_add(h->relisten, &tv);
        else evconnlistener_enable(l); /* cannot happen: our tick timer is always there */
    }
    if (!h) return;
    h->accept_fails++;
    h->accept_fails_unlogged++;
    const double now = es_now_s();
    if (h->accept_logged_at == 0 || now - h->accept_logged_at >= 10) {
        hlog(h, 1, "HTTP API: accept failed: %s (%lld failures in all; pausing 100 ms at a time while descriptors run out)",
             evutil_socket_error_to_string(e), (long long)h->accept_fails);
        h->accept_logged_at = now;
        h->accept_fails_unlogged = 0;
    }
}

static const char *method_name(enum evhttp_cmd_type cmd) {
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "?";
    }
}

/* Whether a browser page from `origin` may call the API (--cors). */
static bool cors_allowed(const es_http *h, const char *origin) {
    if (!h->cors[0] || !origin || !*origin) return false;
    if (!strcmp(h->cors, "*")) return true;
    char key[520];
    const size_t n = strlen(origin);
    if (n + 3 > sizeof key || strchr(origin, ',')) return false;
    snprintf(key, sizeof key, ",%s,", origin);
    return strstr(h->cors, key) != NULL;
}

/* CORS headers on a reply to an allowed origin; true when the request is a preflight (answer 204). */
static bool cors_headers(es_http *h, struct evhttp_request *req, enum evhttp_cmd_type cmd) {
    struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
    const char *origin = evhttp_find_header(ih, "Origin");
    if (!h->cors[0]) return false;
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    if (strcmp(h->cors, "*") != 0) evhttp_add_header(oh, "Vary", "Origin"); /* the answer depends on it */
    const bool preflight = cmd == EVHTTP_REQ_OPTIONS && evhttp_find_header(ih, "Access-Control-Request-Method");
    if (!cors_allowed(h, origin)) return preflight; /* answered without the headers: the browser refuses */
    evhttp_add_header(oh, "Access-Control-Allow-Origin", !strcmp(h->cors, "*") ? "*" : origin);
    if (!preflight) {
        evhttp_add_header(oh, "Access-Control-Expose-Headers", "Retry-After");
        return false;
    }
    evhttp_add_header(oh, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    const char *want = evhttp_find_header(ih, "Access-Control-Request-Headers");
    /* any request header is fine (the api key decides access): the ones asked for are allowed */
    evhttp_add_header(oh, "Access-Control-Allow-Headers", want && *want && strlen(want) < 1024 ? want : "Authorization, Content-Type");
    evhttp_add_header(oh, "Access-Control-Max-Age", "86400");
    return true;
}

static void handle(struct evhttp_request *req, void *arg) {
    es_http *h = arg;
    hconn *hc = conn_of(h, req);
    if (hc) { /* a complete request: the deadline waits until its reply is out */
        hc->busy++;
        evhttp_request_set_on_complete_cb(req, req_complete_cb, h);
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path) path = "/";
    const enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD, post = cmd == EVHTTP_REQ_POST;
    const char *ep = EP_OTHER;
    bool want_post = false;
    int kind = -1;
    /* llama.cpp and vLLM also answer without the /v1 prefix (clients given a bare host use those) */
    char v1[96];
    if (!strncmp(path, "/completions", 12) || !strncmp(path, "/chat/completions", 17) || !strncmp(path, "/models", 7)) {
        if (strlen(path) + 3 < sizeof v1) {
            snprintf(v1, sizeof v1, "/v1%s", path);
            path = v1;
        }
    }
    if (!strcmp(path, EP_COMPLETIONS)) {
        ep = EP_COMPLETIONS;
        want_post = true;
        kind = ES_OAI_COMPLETION;
    } else if (!strcmp(path, EP_CHAT)) {
        ep = EP_CHAT;
        want_post = true;
        kind = ES_OAI_CHAT;
    } else if (!strcmp(path, EP_MODELS) || !strncmp(path, "/v1/models/", 11)) ep = EP_MODELS;
    else if (!strcmp(path, EP_HEALTH)) ep = EP_HEALTH;
    else if (!strcmp(path, EP_METRICS)) ep = EP_METRICS;
    else if (!strcmp(path, EP_PAGE) || !strcmp(path, "/index.html")) ep = EP_PAGE;
    else if (!strcmp(path, EP_TOKENIZE) || !strcmp(path, "/v1/tokenize")) ep = EP_TOKENIZE, want_post = true;
    else if (!strcmp(path, EP_DETOKENIZE) || !strcmp(path, "/v1/detokenize")) ep = EP_DETOKENIZE, want_post = true;
    const bool preflight = cors_headers(h, req, cmd);
    if (preflight && ep != EP_OTHER) {
        evhttp_send_reply(req, 204, "No Content", NULL);
        count(h, ep, 204);
        return;
    }
    if (ep == EP_OTHER) {
        reply_errorf(h, req, ep, 404, "invalid_request_error", "unknown_url", "Unknown request URL: %s %.200s",
                     method_name(cmd), path);
        return;
    }
    if (want_post ? !post : !get) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", want_post ? "POST" : "GET, HEAD");
        reply_errorf(h, req, ep, 405, "invalid_request_error", "method_not_allowed", "%s %s is not allowed; use %s",
                     method_name(cmd), path, want_post ? "POST" : "GET");
        return;
    }
    if (ep == EP_HEALTH) {
        const char *up = NULL;
        const bool ready = !h->p.backend.health || h->p.backend.health(h->p.backend.ud, &up);
        char body[256];
        if (h->shutting_down) snprintf(body, sizeof body, "{\"status\":\"stopping\"}");
        else if (h->draining) snprintf(body, sizeof body, "{\"status\":\"draining\"}");
        else if (up) snprintf(body, sizeof body, "{\"status\":\"%s\",\"upstream\":\"%s\"}", ready ? "ok" : "unavailable", up);
        else snprintf(body, sizeof body, "{\"status\":\"ok\"}");
        const bool down = h->shutting_down || h->draining || !ready;
        if (!h->shutting_down && down) evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
        reply_json(h, req, ep, down ? 503 : 200, body);
        return;
    }
    if (ep == EP_METRICS) {
        handle_metrics(h, req);
        return;
    }
    if (ep == EP_PAGE) { /* static and public, like /health: the page asks for the API key itself */
        struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
        evhttp_add_header(oh, "Content-Type", "text/html; charset=utf-8");
        evhttp_add_header(oh, "Cache-Control", "no-cache");
        struct evbuffer *b = evbuffer_new();
        if (b) evbuffer_add_reference(b, es_chat_page, es_chat_page_len, NULL, NULL);
        evhttp_send_reply(req, b ? 200 : 500, reason(b ? 200 : 500), b);
        if (b) evbuffer_free(b);
        count(h, ep, b ? 200 : 500);
        return;
    }
    if (!auth_ok(h, req)) {
        h->auth_failures++;
        const char *a = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        reply_errorf(h, req, ep, 401, "invalid_request_error", "invalid_api_key", "%s",
                     a ? "Incorrect API key provided." : "You didn't provide an API key (Authorization: Bearer KEY).");
        return;
    }
    if (ep == EP_MODELS) handle_models(h, req, path);
    else if (ep == EP_TOKENIZE || ep == EP_DETOKENIZE) handle_tokenize(h, req, ep);
    else handle_completion(h, req, kind, ep);
}

/* ---- start / stop ---- */

static es_status take_port(es_http *h, evutil_socket_t fd) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) h->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6) h->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return ES_OK;
}

es_status es_http_listen(const char *host, int port, int *fd_out, int *port_out, es_err *err) {
    return es_listen_tcp(host && *host ? host : "127.0.0.1", port, "HTTP", fd_out, port_out, err);
}

static void configure(struct evhttp *http, size_t max_body, double timeout_s) {
    evhttp_set_max_body_size(http, (ev_ssize_t)max_body);
    evhttp_set_max_headers_size(http, 64 * 1024);
    /* every method reaches the handler, which answers 405 in JSON with an Allow header */
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                         EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    struct timeval tv = {(time_t)timeout_s, (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    evhttp_set_timeout_tv(http, &tv);
}

/* A token's text (the templates' bos_token / eos_token), "" for none; NULL when memory runs out. */
static char *token_text_dup(const es_tokenizer *tok, int32_t id) {
    size_t n = 0;
    const char *t = id >= 0 ? es_tokenizer_token_text(tok, id, &n) : NULL;
    char *c = malloc(t ? n + 1 : 1);
    if (!c) return NULL;
    if (t) memcpy(c, t, n);
    c[t ? n : 0] = 0;
    return c;
}

/* The Jinja chat template becomes the one in use when it parses and renders a plain conversation (a
 * template outside the subset fails here, once, rather than on every request); else a warning, and
 * the built-in family detected from its markers serves. */
static void chat_jinja_init(es_http *h, const char *tmpl) {
    es_err e = {{0}};
    es_status st = es_jinja_parse(tmpl, strlen(tmpl), &h->jinja, &e);
    if (st == ES_OK) {
        char role[] = "user", content[] = "hi";
        const es_oai_message probe = {.role = role, .content = content};
        es_str out = {0};
        st = es_chat_render_jinja(h->jinja, &probe, 1, NULL, h->bos_text, h->eos_text, 0, &out, &e);
        if (st != ES_OK) {
            es_jinja_free(h->jinja);
            h->jinja = NULL;
        }
        es_str_free(&out);
    }
    if (st != ES_OK) {
        hlog(h, 1, "the chat template cannot be used as Jinja (%s): chat requests use the built-in %s template instead", e.msg,
             es_chat_family_name((es_chat_family)h->chat_family));
        return;
    }
    h->jinja_tools = es_chat_jinja_takes_tools(tmpl);
}

/* h's copy of the parameters (the strings it keeps are copied; the api keys go into h->keys), its
 * defaults, and the --cors list kept as ",a,b," so that a lookup of ",ORIGIN," matches whole entries
 * only. */
static es_status take_params(es_http *h, const es_http_params *p, es_err *err) {
    h->p = *p;
    snprintf(h->model_name, sizeof h->model_name, "%s", p->model_name && *p->model_name ? p->model_name : "edgespec");
    snprintf(h->owned_by, sizeof h->owned_by, "%s", p->owned_by && *p->owned_by ? p->owned_by : "edgespec");
    h->p.model_name = h->model_name;
    h->p.owned_by = h->owned_by;
    if (!h->p.max_body) h->p.max_body = HTTP_MAX_BODY_DEFAULT;
    if (!(h->p.timeout_s > 0)) h->p.timeout_s = 600;
    if (h->p.max_queue < 0) h->p.max_queue = 0;
    if (p->cors && *p->cors) {
        es_str c = {0};
        bool ok = es_str_puts(&c, ",");
        for (const char *q = p->cors; *q && ok; q++)
            if (*q != ' ') ok = es_str_append(&c, q, 1);
        ok = ok && es_str_puts(&c, ",");
        if (!ok || c.len >= sizeof h->cors) {
            es_str_free(&c);
            return es_fail(err, ES_ERR_INVALID_ARG, "--cors: the origin list is longer than %zu bytes", sizeof h->cors - 3);
        }
        snprintf(h->cors, sizeof h->cors, "%s", !strcmp(c.s, ",*,") ? "*" : c.s);
        es_str_free(&c);
    }
    h->p.cors = NULL;
    es_status kst = ES_OK;
    if (p->api_key && *p->api_key) kst = es_keys_add(&h->keys, p->api_key, err);
    for (int i = 0; kst == ES_OK && i < p->n_api_keys; i++) kst = es_keys_add(&h->keys, p->api_keys[i], err);
    if (kst != ES_OK) return kst;
    h->p.api_key = NULL;
    h->p.api_keys = NULL;
    h->p.n_api_keys = 0;
    return ES_OK;
}

/* The chat template tmpl (the given one, else the tokenizer's): Jinja when it parses, else the built-in
 * family its markers name (or the one given); the texts of BOS and EOS the templates see; the
 * end-of-turn marker, which stops generation when it is one token. */
static es_status init_chat(es_http *h, const char *tmpl, es_err *err) {
    const es_http_params *p = &h->p;
    h->bos = es_tokenizer_bos(p->tok);
    h->eos = es_tokenizer_eos(p->tok);
    h->n_vocab = es_tokenizer_n_vocab(p->tok);
    h->chat_family = p->chat_family >= 0 ? p->chat_family : (int)es_chat_detect(tmpl);
    h->p.chat_template = NULL; /* not kept: parsed here */
    if (!(h->bos_text = token_text_dup(p->tok, h->bos)) || !(h->eos_text = token_text_dup(p->tok, h->eos)))
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    if (p->chat_family < 0 && tmpl && *tmpl) chat_jinja_init(h, tmpl);
    h->eot = -1;
    const char *eot = h->jinja ? es_chat_jinja_end_of_turn(tmpl) : es_chat_end_of_turn((es_chat_family)h->chat_family);
    if (eot) {
        int32_t ids[4];
        int n = 0;
        es_err e2;
        if (es_tokenize(p->tok, eot, strlen(eot), false, true, ids, 4, &n, &e2) == ES_OK && n == 1) h->eot = ids[0];
    }
    return ES_OK;
}

/* evhttp on the caller's loop, with h's own events (the tick, re-listening, the queue's pump). */
static es_status init_events(es_http *h, es_err *err) {
    struct event_base *base = h->p.base;
    es_metrics_init(&h->m);
    h->chunk = evbuffer_new();
    h->http = evhttp_new(base);
    h->tick = event_new(base, -1, EV_PERSIST, tick_cb, h);
    h->relisten = event_new(base, -1, 0, relisten_cb, h);
    h->pump = event_new(base, -1, 0, pump_cb, h);
    if (!h->chunk || !h->http || !h->tick || !h->relisten || !h->pump) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    configure(h->http, h->p.max_body, h->p.timeout_s);
    evhttp_set_bevcb(h->http, conn_bev_cb, h);
    evhttp_set_gencb(h->http, handle, h);
    return ES_OK;
}

/* evhttp accepts on the caller's socket (p->fd), or on one opened here on host:port. *fd_taken: the
 * socket is h's (closed by it) from then on. */
static es_status listen_on(es_http *h, bool *fd_taken, es_err *err) {
    int fd = h->p.fd;
    if (fd < 0) {
        es_status st = es_http_listen(h->p.host, h->p.port, &fd, NULL, err);
        if (st != ES_OK) return st;
    }
    *fd_taken = true;
    h->bound = evhttp_accept_socket_with_handle(h->http, fd);
    if (!h->bound) {
        close(fd);
        return es_fail(err, ES_ERR_IO, "HTTP API: libevent refused the listening socket");
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(h->bound), accept_error_cb);
    take_port(h, fd);
    return ES_OK;
}

static es_status http_start(const es_http_params *p, es_http **out, bool *fd_taken, es_err *err) {
    *out = NULL;
    if (!p || !p->base || !p->tok) return es_fail(err, ES_ERR_INVALID_ARG, "HTTP API: an event loop and a tokenizer are required");
    if (p->n_ctx < 2) return es_fail(err, ES_ERR_INVALID_ARG, "HTTP API: context of %d positions", p->n_ctx);
    if (p->api_key && strlen(p->api_key) > HTTP_MAX_KEY) return es_fail(err, ES_ERR_INVALID_ARG, "api key longer than %d bytes", HTTP_MAX_KEY);
    if (p->chat_family >= ES_CHAT_FAMILY_COUNT) return es_fail(err, ES_ERR_INVALID_ARG, "unknown chat template family %d", p->chat_family);
    es_http *h = calloc(1, sizeof *h);
    if (!h) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    h->next_id = 1;
    h->salt = mix64((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)h);
    h->t_start = es_now_s();
    const char *tmpl = p->chat_template ? p->chat_template : es_tokenizer_chat_template(p->tok);
    es_status st;
    if ((st = take_params(h, p, err)) != ES_OK || (st = init_chat(h, tmpl, err)) != ES_OK || (st = init_events(h, err)) != ES_OK ||
        (st = listen_on(h, fd_taken, err)) != ES_OK) {
        es_http_free(h);
        return st;
    }
    struct timeval one = {1, 0};
    event_add(h->tick, &one);
    hlog(h, 2, "HTTP API on port %d (model \"%s\", chat template %s%s)", h->port, h->model_name,
         h->jinja ? "jinja" : es_chat_family_name((es_chat_family)h->chat_family), h->jinja_tools ? ", with tools" : "");
    if (p->chat_family < 0 && tmpl && *tmpl && !h->jinja && h->chat_family == ES_CHAT_FALLBACK) /* said once, not per request */
        hlog(h, 1, "the model's chat template is not one of the known families (chatml, llama2, llama3, zephyr): chat "
                   "requests get a plain \"role: text\" transcript; choose one with --chat-template FAMILY or "
                   "--chat-template-file FILE");
    *out = h;
    return ES_OK;
}
es_status es_http_start(const es_http_params *p, es_http **out, es_err *err) {
    bool taken = false;
    es_status st = http_start(p, out, &taken, err);
    if (st != ES_OK && !taken && p && p->fd >= 0) close(p->fd);
    return st;
}

int es_http_port(const es_http *h) { return h ? h->port : 0; }

int es_http_shutdown(es_http *h) {
    if (!h || h->shutting_down) return 0;
    h->shutting_down = true;
    if (h->bound) {
        evhttp_del_accept_socket(h->http, h->bound);
        h->bound = NULL;
    }
    int n = 0;
    while (h->reqs) {
        hreq *r = h->reqs;
        req_cancel(r);
        req_fail(r, 503, "the server is stopping");
        n++;
    }
    return n;
}

void es_http_drain(es_http *h) {
    if (h) h->draining = true;
}

void es_http_get_stats(const es_http *h, es_http_stats *out) {
    memset(out, 0, sizeof *out);
    if (!h) return;
    *out = h->st;
    out->active = h->n_active - h->n_queued;
    out->queued = h->n_queued;
    out->conns_open = h->n_conns;
}

void es_http_free(es_http *h) {
    if (!h) return;
    while (h->reqs) { /* the evhttp requests go with evhttp_free */
        hreq *r = h->reqs;
        req_cancel(r);
        if (r->evcon) evhttp_connection_set_closecb(r->evcon, NULL, NULL);
        req_free(r);
    }
    if (h->tick) event_free(h->tick);
    if (h->pump) event_free(h->pump);
    if (h->relisten) event_free(h->relisten);
    if (h->http) evhttp_free(h->http);
    while (h->conns) { /* evhttp has freed every connection: drop our references */
        hconn *c = h->conns;
        h->conns = c->next;
        conn_free(c);
    }
    if (h->chunk) evbuffer_free(h->chunk);
    es_keys_free(&h->keys);
    es_jinja_free(h->jinja);
    free(h->bos_text);
    free(h->eos_text);
    free(h);
}

/* ---- while loading ---- */

struct es_http_loading {
    struct event_base *base;
    struct evhttp *http;
    struct event *stop_ev;
    int pipe_fd[2];
    pthread_t th;
    bool started;
};

static void loading_handle(struct evhttp_request *req, void *arg) {
    (void)arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *body = path && !strcmp(path, EP_HEALTH)
                           ? "{\"status\":\"loading\"}"
                           : "{\"error\":{\"message\":\"the model is loading\",\"type\":\"server_error\",\"param\":null,\"code\":\"model_loading\"}}";
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "Content-Type", "application/json");
    evhttp_add_header(oh, "Retry-After", "1");
    struct evbuffer *b = evbuffer_new();
    if (b) evbuffer_add(b, body, strlen(body));
    evhttp_send_reply(req, 503, reason(503), b);
    if (b) evbuffer_free(b);
}

static void loading_stop_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    es_http_loading *l = arg;
    event_base_loopbreak(l->base);
}

static void *loading_main(void *arg) {
    es_http_loading *l = arg;
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void loading_free(es_http_loading *l) {
    if (l->stop_ev) event_free(l->stop_ev);
    if (l->http) evhttp_free(l->http); /* closes its duplicate of the listening socket */
    if (l->base) event_base_free(l->base);
    if (l->pipe_fd[0] >= 0) close(l->pipe_fd[0]);
    if (l->pipe_fd[1] >= 0) close(l->pipe_fd[1]);
    free(l);
}

static struct bufferevent *loading_tls_bev_cb(struct event_base *base, void *arg) {
    return es_accepted_bev(base, -1, arg, NULL);
}


es_status es_http_loading_start(int fd, struct ssl_ctx_st *tls, es_http_loading **out, es_err *err) {
    *out = NULL;
    es_http_loading *l = calloc(1, sizeof *l);
    if (!l) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    l->pipe_fd[0] = l->pipe_fd[1] = -1;
    const int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0 || pipe2(l->pipe_fd, O_NONBLOCK | O_CLOEXEC) != 0) {
        if (dfd >= 0) close(dfd);
        loading_free(l);
        return es_fail(err, ES_ERR_IO, "cannot set up the loading responder: %s", strerror(errno));
    }
    l->base = event_base_new();
    l->http = l->base ? evhttp_new(l->base) : NULL;
    l->stop_ev = l->base ? event_new(l->base, l->pipe_fd[0], EV_READ, loading_stop_cb, l) : NULL;
    if (!l->http || !l->stop_ev || !evhttp_accept_socket_with_handle(l->http, dfd)) {
        close(dfd); /* evhttp took nothing */
        loading_free(l);
        return es_fail(err, ES_ERR_NOMEM, "cannot set up the loading responder");
    }
    configure(l->http, 64 * 1024, 10);
    if (tls) evhttp_set_bevcb(l->http, loading_tls_bev_cb, tls);
    evhttp_set_gencb(l->http, loading_handle, l);
    event_add(l->stop_ev, NULL);
    if (pthread_create(&l->th, NULL, loading_main, l) != 0) {
        loading_free(l);
        return es_fail(err, ES_ERR_NOMEM, "cannot start the loading responder thread");
    }
    l->started = true;
    *out = l;
    return ES_OK;
}

void es_http_loading_stop(es_http_loading *l) {
    if (!l) return;
    if (l->started) {
        const char c = 1;
        ssize_t k = write(l->pipe_fd[1], &c, 1);
        (void)k;
        pthread_join(l->th, NULL);
    }
    loading_free(l);
}
