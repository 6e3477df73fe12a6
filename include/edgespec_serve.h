/* edgespec_serve.h — what the serving stack (scheduler, server, edge, wire protocol) shares above
 * the engine API of edgespec.h. */
#ifndef EDGESPEC_SERVE_H
#define EDGESPEC_SERVE_H

#include "edgespec.h"

/* How a session's tokens are produced. The values are the OPEN frame's mode byte
 * (docs/PROTOCOL.md): never renumber. */
typedef enum es_session_mode {
    ES_MODE_EDGE = 0,        /* the edge drafts and sends VERIFY frames */
    ES_MODE_AR = 1,          /* the server generates autoregressively and streams TOKENS */
    ES_MODE_SERVER_SPEC = 2, /* the server drafts with its own draft model and streams TOKENS */
} es_session_mode;
#define ES_SESSION_MODES 3

/* "edge", "autoregressive", "server_draft"; "unknown" otherwise (the `kind` label of /metrics). */
static inline const char *es_session_mode_name(int mode) {
    return mode == ES_MODE_EDGE ? "edge" : mode == ES_MODE_AR ? "autoregressive" : mode == ES_MODE_SERVER_SPEC ? "server_draft" : "unknown";
}

/* The scheduler's tree-size hint (VERDICT's suggested_budget) meaning: the server is compute-bound;
 * send empty trees (root only, i.e. plain autoregressive rounds) until the hint changes. Older
 * clients read it as "no limit". */
#define ES_HINT_NO_DRAFT 0xFFFFu

#endif
