/* edge_http.h — the edge's local OpenAI-compatible API (`edgespec edge --listen 127.0.0.1:8081`): the
 * same endpoints as the server's (http/http.h), served on this machine; each completion request is
 * generated speculatively — drafted here with the draft model, verified by the remote server — so an
 * application that points its OpenAI base URL at the edge gets speculative serving without knowing.
 *
 * Threads: a loop thread runs evhttp and the HTTP front end; a pool of worker threads each owns one
 * es_edge (its own connection to the server and its own draft context over the shared draft model)
 * and runs one generation at a time. Requests wait in a bounded queue for a free worker (beyond it:
 * 503). Workers hand confirmed tokens to the loop through a mutex-protected queue and a wake-up pipe,
 * as the server's compute thread does, so the loop never drafts and the workers never touch a socket
 * of the HTTP side. A cancelled request (client gone, stop string) asks its worker to stop at the
 * next confirmed tokens (es_edge_cancel), which closes the server session. */
#ifndef ES_EDGE_EDGE_HTTP_H
#define ES_EDGE_EDGE_HTTP_H

#include <stddef.h>

#include "edge/edge.h"
#include "http/http.h"

typedef struct es_edge_http es_edge_http;

typedef struct es_edge_http_params {
    const char *host;          /* where the local API listens (default 127.0.0.1) */
    int port;                  /* default 8081; 0: an ephemeral port */
    es_edge_params edge;       /* how each worker connects and drafts (edge.draft is required: it
                                  also tokenises the prompts and detokenises the replies) */
    int workers;               /* generations at once (default 4) */
    int queue;                 /* requests waiting for a worker (all busy) before 503 (default 64): the
                                  front end's queue (es_http_params.max_queue) */
    double queue_timeout_s;    /* longest wait in it before 503 (default 60; <= 0: no limit) */
    const char *cors;          /* es_http_params.cors: NULL (default) no CORS; "*" or a comma list */
    const char *api_key;       /* the local API's key (NULL or "": none) */
    const char *model_name;    /* default "edgespec" */
    size_t max_body;           /* default 1 MiB */
    int max_connections;       /* open HTTP connections (0: default 1024) */
    double request_timeout_s;  /* a complete request within this long (0: default 60; < 0: off) */
    int chat_family;           /* a built-in es_chat_family; -1: the Jinja template (below, or the draft
                                  model's) when it parses, else the family its markers name */
    const char *chat_template; /* a Jinja chat template's source (--chat-template-file), NULL: the model's */
    es_log_fn log;
    void *log_ud;
} es_edge_http_params;

es_edge_http_params es_edge_http_default_params(void);

typedef struct es_edge_http_stats {
    es_http_stats http;
    int64_t generations, failures, refused;
    int64_t prompt_tokens, generated_tokens;
    int64_t rounds, drafted, accepted;
} es_edge_http_stats;

/* Connects every worker to the server, then listens. Fails fast on a refusal (vocabulary mismatch,
 * version, key) and on a server that cannot be reached, except with edge.fallback_local: then it
 * starts anyway and answers with the draft model alone until the server can be reached. A worker
 * whose connection is gone (server restarted, network down) reconnects on its own while idle, with
 * backoff from 100 ms doubling to 5 s, for as long as the API runs, and a request that finds it
 * disconnected tries once more at once. /health is 503 while no worker is connected, unless
 * fallback_local serves. */
es_status es_edge_http_start(const es_edge_http_params *p, es_edge_http **out, es_err *err);
int es_edge_http_port(const es_edge_http *s);
/* A snapshot (the HTTP part refreshed every second while running). */
void es_edge_http_get_stats(es_edge_http *s, es_edge_http_stats *out);
/* Ends requests in flight (503 / error event), stops the workers and the loop, frees everything. */
void es_edge_http_free(es_edge_http *s);

#endif
