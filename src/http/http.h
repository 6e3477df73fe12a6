/* http.h — the OpenAI-compatible HTTP API (libevent evhttp): POST /v1/completions and
 * /v1/chat/completions (plain JSON or Server-Sent Events), GET /v1/models, /v1/models/ID, /health and
 * /metrics, with OpenAI-style errors. It runs on an event loop it is given and never blocks it: the
 * generation itself is done by a *backend* — the verification server's scheduler (server.c: the
 * same batches as edge sessions) or the edge's worker pool (edge/edge_http.c: local drafting,
 * remote verification) — which reports tokens back on the loop thread.
 *
 * Per request: authenticate (Bearer key, constant-time), parse and validate (http/oai.h), render
 * the chat template (http/chat.h), tokenise, check prompt + max_tokens against the context, then
 * backend->start. Tokens come back through es_http_on_tokens; they are detokenised incrementally
 * without splitting UTF-8 characters (tokenizer/detok.h) and matched against the stop strings (text
 * that may start one is held back; a match ends the reply and backend->cancel frees the session).
 * Streaming replies are `data: {chunk}\n\n` events, a final chunk with finish_reason, a usage chunk
 * when stream_options.include_usage, then `data: [DONE]`. A client that goes away (closed socket,
 * streaming or not) has its generation cancelled at once, so its KV pages return to the pool.
 *
 * Status codes: 400 (invalid JSON, wrong types, values out of range, prompt + max_tokens beyond the
 * context), 401 (--api-key: missing or wrong bearer token), 404 (unknown path or model), 405 (wrong
 * method; Allow says which), 413 (body above max_body: answered by evhttp itself, so its body is
 * libevent's HTML, not JSON), 503 (the backend is full and the queue too, or the request waited in
 * the queue past queue_timeout_s: Retry-After: 1; or still loading), 500.
 * Queue: a completion the backend refuses as busy waits (FIFO, at most max_queue) and is started when
 * a session ends (es_http_on_end, or es_http_kick from the backend); a client that goes away while
 * queued leaves the queue at once. Queued requests count in /metrics edgespec_queued_requests, and
 * their wait in edgespec_queue_time_seconds.
 * CORS (p.cors): allowed origins get Access-Control-Allow-Origin (and Vary: Origin) on every reply, and
 * an OPTIONS preflight (Access-Control-Request-Method present) on a known path is answered 204 with
 * the allowed methods and headers, before any api key check (browsers send no credentials there).
 * /health and /metrics need no key; everything under /v1 does when a key is set. Several keys may be
 * accepted (api_key plus api_keys, transport/keys.h); refusals are counted in /metrics
 * (edgespec_auth_failures_total{listener="http"}). With `tls` the listener speaks HTTPS only.
 *
 * Threads: every function here runs on the loop's thread, except es_http_listen and the loading
 * responder (es_http_loading_*), which have their own. */
#ifndef ES_SERVER_HTTP_H
#define ES_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"
#include "http/metrics.h"
#include "specdec/spec.h"

struct event_base;
typedef struct es_http es_http;

/* One generation asked of the backend. */
typedef struct es_http_gen {
    uint64_t id;                 /* unique for the life of the es_http (never 0) */
    const int32_t *prompt;       /* token ids, BOS included as the vocabulary asks */
    int n_prompt;
    int max_tokens;
    es_sampler_params sampling;  /* temperature 0 = greedy */
    bool seeded;                 /* the request named its seed: its sampled text must follow from the seed
                                    alone, whatever is drafted (the edge then verifies by the match rule) */
    const int32_t *stop;         /* stop token ids besides the model's EOS (which always stops) */
    int n_stop;
    /* the request's stop strings and what the front end matches them on (valid during start): a backend
       that can stop generating where it generates runs an es_stopwatch (http/oai.h) over them */
    char *const *stop_strings;
    int n_stop_strings;
    const int32_t *skip;         /* ids never shown as text */
    int n_skip;
    bool logprobs;               /* the request wants each token's log-probability (backend->logprobs) */
    int top_logprobs;            /* ... and this many alternatives (0..ES_OAI_MAX_TOP_LOGPROBS) */
    const struct es_grammar *grammar; /* response_format JSON: constrain the output (grammar/grammar.h);
                                    valid during start only (a backend copies it); NULL: free text */
} es_http_gen;

typedef struct es_http_backend {
    /* Starts a generation. ES_ERR_BUSY: full now (503); ES_ERR_RANGE: does not fit the context
     * (400); ES_ERR_INVALID_ARG: refused (400); anything else 500. On ES_OK *granted is the
     * max_tokens actually granted; results then arrive through es_http_on_tokens / es_http_on_end. */
    es_status (*start)(void *ud, const es_http_gen *g, int *granted, es_err *err);
    /* Ends a generation early: nothing more may be delivered for it after this returns. */
    void (*cancel)(void *ud, uint64_t id);
    /* Fills the backend's part of the metrics. */
    void (*metrics)(void *ud, es_metrics *m);
    /* Optional: whether requests can be served now (/health 200 vs 503, edgespec_ready), with a word on
     * the upstream for /health's "upstream" field (a static string). NULL: always ready. */
    bool (*health)(void *ud, const char **upstream);
    void *ud;
    bool logprobs;               /* it can report the target's log-probabilities (es_http_on_tokens_lp);
                                    without, requests asking for logprobs get 400 */
    bool grammar;                /* it can constrain output to es_http_gen.grammar; without, requests with a
                                    JSON response_format get 400 */
} es_http_backend;

typedef struct es_http_params {
    struct event_base *base;
    const char *host;            /* where to listen (default 127.0.0.1) unless fd >= 0 */
    int port;                    /* 0: an ephemeral port */
    int fd;                      /* >= 0: a listening socket to take over (es_http_listen) */
    const char *api_key;         /* NULL or "": none */
    const char *model_name;      /* the model id listed and echoed (default "edgespec") */
    const char *owned_by;        /* /v1/models owned_by (default "edgespec") */
    size_t max_body;             /* request body limit (default 1 MiB) */
    double timeout_s;            /* evhttp's read/write timeout per connection (default 600) */
    int max_connections;         /* open connections on this port; more are answered 503 and closed
                                    (default 1024) */
    double request_timeout_s;    /* a connection must deliver a complete request (headers and body)
                                    within this long of opening or of its previous reply, however the
                                    bytes trickle in; else 408 and closed (default 60; 0: off) */
    const es_tokenizer *tok;
    int n_ctx;                   /* positions per session: prompt + max_tokens must fit */
    int chat_family;             /* es_chat_family: a built-in template; -1: the Jinja template (below, or
                                    the tokenizer's) when it parses, else the family detected from it */
    const char *chat_template;   /* a Jinja chat template's source (--chat-template-file; copied), NULL:
                                    the tokenizer's tokenizer.chat_template */
    es_http_backend backend;
    es_log_fn log;               /* optional */
    void *log_ud;
    const char *const *api_keys; /* more accepted keys besides api_key [n_api_keys] (transport/keys.h) */
    int n_api_keys;
    struct ssl_ctx_st *tls;      /* non-NULL: serve HTTPS with this server context (transport/tls.h); the
                                    caller keeps it alive until es_http_free */
    int max_queue;               /* completions the backend refuses as busy wait in a FIFO queue of this
                                    many, admitted as sessions end (es_http_kick); beyond it 503 with
                                    Retry-After (default 64; 0: no queue, busy is 503 at once) */
    double queue_timeout_s;      /* a queued request waiting longer gets 503 with Retry-After (default
                                    60; <= 0: waits as long as it takes) */
    const char *cors;            /* NULL or "": no CORS headers (default); "*" any origin; else a comma
                                    list of origins (scheme://host[:port]) allowed to call the API from a
                                    browser: Access-Control-Allow-Origin on replies, OPTIONS preflight 204 */
} es_http_params;

es_http_params es_http_default_params(void);

typedef struct es_http_stats {
    int64_t requests, errors;    /* replies sent; those with a status >= 400 */
    int64_t completions;         /* completion / chat requests that generated */
    int64_t prompt_tokens, completion_tokens;
    int64_t disconnects;         /* clients that went away before their reply was complete */
    int64_t conns_refused;       /* connections beyond max_connections */
    int64_t conns_timed_out;     /* connections cut by request_timeout_s */
    int conns_open;
    int active;                  /* requests generating now */
    int queued;                  /* requests waiting in the queue now */
    int64_t queue_full, queue_timeouts; /* 503s: the queue was full; a request waited past queue_timeout_s */
} es_http_stats;

/* Starts listening on p->base (the loop may already run, on the calling thread). A socket given in
 * p->fd belongs to the es_http from here on (closed on failure too). */
es_status es_http_start(const es_http_params *p, es_http **out, es_err *err);
int es_http_port(const es_http *h);
/* The backend's results for generation `id` (unknown ids are ignored: the request is gone).
 * n_generated: tokens generated so far, stop tokens included (the usage count). */
void es_http_on_tokens(es_http *h, uint64_t id, const int32_t *toks, int n, int n_generated);
/* The same with each token's log-probabilities (lp[n]; NULL: none), for requests that asked for them. */
void es_http_on_tokens_lp(es_http *h, uint64_t id, const int32_t *toks, const es_token_logprob *lp, int n, int n_generated);
/* The generation ended: stop is an es_proto_stop; ES_STOP_ERROR with an HTTP status and message. */
void es_http_on_end(es_http *h, uint64_t id, int stop, int n_generated, int status, const char *msg);
/* Capacity may have freed up (a session of another kind ended): queued requests are tried again on
 * the loop's next turn. The front end kicks itself when one of its own requests ends. */
void es_http_kick(es_http *h);
/* Stops accepting and ends every request in flight (503, or an error event on a stream).
 * Returns the number of requests that were in flight. */
int es_http_shutdown(es_http *h);
void es_http_get_stats(const es_http *h, es_http_stats *out);
/* Loop thread: new completions get 503 `draining` (with Retry-After), /health 503 {"status":
 * "draining"}; requests in flight run to their end. */
void es_http_drain(es_http *h);
/* Frees everything (the loop must not be running callbacks of it: call on the loop's thread or after
 * the loop stopped). Cancels generations still open. */
void es_http_free(es_http *h);

/* Binds and listens on host:port (port 0: ephemeral); *port_out gets the port. */
es_status es_http_listen(const char *host, int port, int *fd_out, int *port_out, es_err *err);

/* While a model loads: answers every request on the listening socket fd with 503 ({"status":
 * "loading"} on /health) from a thread of its own. es_http_loading_stop leaves fd open and
 * listening, so connections that arrive meanwhile wait in the backlog for the real server. */
typedef struct es_http_loading es_http_loading;
/* tls: the server's TLS context (NULL: plain), kept alive by the caller until stop. */
es_status es_http_loading_start(int fd, struct ssl_ctx_st *tls, es_http_loading **out, es_err *err);
void es_http_loading_stop(es_http_loading *l);

#endif
