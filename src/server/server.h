/* server.h — the verification server's network side: a libevent loop that speaks the wire protocol
 * (wire/proto.h) on TCP, and a compute thread running the scheduler (sched/sched.h). The loop never
 * runs a forward pass; the compute thread never touches a socket. Results cross back through a
 * mutex-protected queue and a wake-up pipe watched by the loop.
 *
 * Per connection: HELLO -> WELCOME (or ERROR + close on version / vocabulary / key mismatch), then any
 * number of sessions (OPEN -> OPENED, VERIFY -> VERDICT or server-generated TOKENS, CLOSE), PING ->
 * PONG. A malformed, oversized or out-of-order frame gets an ERROR frame; a frame that breaks framing
 * (bad header, oversized payload) or a connection-level frame that does not decode also closes that
 * connection, and an ERROR about a session ends that session (docs/PROTOCOL.md, "what an error
 * closes"); an OPEN for an id already open is refused without touching the open session. Nothing one connection sends can
 * touch another's sessions. A connection that goes away has all its sessions closed at once (their
 * KV blocks return to the pool before the next step). Idle sessions/connections time out.
 *
 * Security: with `tls` both listeners (this port and the HTTP API's) accept TLS 1.2+ only; the frames
 * inside are the same. Keys (api_key and api_keys) are checked in constant time on both listeners. */
#ifndef ES_SERVER_SERVER_H
#define ES_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"
#include "http/http.h"
#include "sched/sched.h"

typedef struct es_server es_server;

typedef struct es_server_params {
    const char *host;            /* default "127.0.0.1" */
    int port;                    /* 0: an ephemeral port (read it back with es_server_port) */
    const es_model *target;
    const es_tokenizer *target_tok;
    es_sched_params sched;       /* on_event/ud are set by the server */
    uint32_t max_payload;        /* frame payload limit (default ES_PROTO_MAX_PAYLOAD_DEFAULT) */
    int max_prompt_tokens;       /* default: n_ctx - 1 */
    double idle_timeout_s;       /* close connections silent this long, and sessions neither driven by
                                    the client nor advanced by the scheduler this long (default 300;
                                    0: never) */
    double handshake_timeout_s;  /* HELLO must arrive within (default 10) */
    const char *api_key;         /* NULL or "": none required */
    es_log_fn log;               /* optional: connection/session events */
    void *log_ud;
    int max_connections;         /* beyond this, a new connection gets ERROR busy (default 1024) */
    size_t max_output_bytes;     /* unread output a connection may pile up before it is dropped as a
                                    slow consumer (default 8 MiB) */
    /* The OpenAI-compatible HTTP API (http/http.h) on the same loop and the same scheduler: each
     * completion request is a session (autoregressive, or server-side speculation with sched.draft). */
    bool http;                   /* serve it (default false) */
    /* The device the target runs on, for /metrics' edgespec_device_info (sched.backend / sched.device
       say which; the caller names it, from es_devices): NULL / 0 when unknown or on the CPU. */
    const char *device_name;
    int64_t device_memory_bytes;
    const char *http_host;       /* default: host */
    int http_port;               /* 0: an ephemeral port (es_server_http_port) */
    int http_fd;                 /* >= 0: a listening socket to take over (es_http_listen; closed by
                                    es_server_start on failure too); default -1 */
    size_t http_max_body;        /* request body limit (default 1 MiB) */
    int http_max_connections;    /* open HTTP connections (0: es_http's default, 1024) */
    double http_request_timeout_s; /* a complete HTTP request within this long (0: default 60; < 0: off) */
    int http_max_queue;          /* HTTP completions waiting for a session when the scheduler is full
                                    (es_http_params.max_queue; default 64; 0: 503 at once) */
    double http_queue_timeout_s; /* longest wait in that queue before 503 (default 60; <= 0: no limit) */
    const char *http_cors;       /* es_http_params.cors: NULL (default) no CORS; "*" or a comma list */
    const char *model_name;      /* the model id the HTTP API reports (default "edgespec") */
    int chat_family;             /* a built-in es_chat_family; -1 (default): the Jinja template (below, or
                                    the model's) when it parses, else the family its markers name */
    const char *chat_template;   /* a Jinja chat template's source (--chat-template-file), NULL: the model's */
    bool http_server_spec;       /* with a draft model: HTTP sessions draft on the server (default true) */
    const char *const *api_keys; /* more accepted keys besides api_key [n_api_keys], on both listeners
                                    (transport/keys.h: es_keys_load_file reads an --api-keys-file) */
    int n_api_keys;
    struct ssl_ctx_st *tls;      /* non-NULL: both listeners speak TLS only, with this server context
                                    (transport/tls.h: es_tls_server_ctx); kept alive by the caller until
                                    es_server_free */
} es_server_params;

es_server_params es_server_default_params(void);

typedef struct es_server_stats {
    es_sched_stats sched;
    int64_t connections_total, connections_open, connections_refused;
    int64_t frames_in, frames_out, bytes_in, bytes_out;
    int64_t protocol_errors;     /* malformed / oversized / out-of-order frames answered with ERROR */
    es_http_stats http;          /* the HTTP API (a snapshot refreshed every second while running) */
    int64_t auth_failures;       /* connections refused for a missing or wrong api key (also counted
                                    in connections_refused) */
    int64_t tls_handshake_failures; /* edge-port TLS handshakes that failed */
    int64_t trees[ES_TREE_ORIGINS]; /* edge trees verified, by how the edge drafted them (es_tree_origin,
                                       from VERIFY; edges below protocol version 3 count as fresh) */
} es_server_stats;

/* Binds, listens, starts the loop thread and the compute thread; returns once accepting. */
es_status es_server_start(const es_server_params *p, es_server **out, es_err *err);
int es_server_port(const es_server *s);
/* The HTTP API's port (0 without one). */
int es_server_http_port(const es_server *s);
void es_server_get_stats(es_server *s, es_server_stats *out);
/* Stops accepting, tells open sessions ES_PERR_SHUTDOWN (HTTP requests get 503 / an error event),
 * and joins the threads; the statistics stay readable until es_server_free. */
void es_server_stop(es_server *s);
/* Starts draining (thread-safe, returns at once): sessions already open run to their end, new ones
 * are refused — OPEN with ES_PERR_SHUTDOWN, which edges treat as "reconnect", so through a load
 * balancer they go to another replica; HTTP completions get 503 `draining` and /health answers 503
 * {"status":"draining"}, so a balancer's health check takes the replica out. es_server_get_stats's
 * sched.sessions_active says when nothing is left; es_server_stop ends it at any time. */
void es_server_drain(es_server *s);
/* es_server_stop if still running, then frees everything. */
void es_server_free(es_server *s);

#endif
