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

/* How the edge drafted the tree one VERIFY carries (protocol version 3, docs/PROTOCOL.md: the values
 * are on the wire, never renumber). A proactive edge drafts the next tree under a bet while a
 * verification is in flight; the verdict keeps or drops it. */
typedef enum es_tree_origin {
    ES_TREE_FRESH = 0,     /* drafted after the previous verdict, no bet made */
    ES_TREE_BET_HIT = 1,   /* drafted under a bet on the previous tree that its verdict confirmed */
    ES_TREE_BET_MISS = 2,  /* drafted after the previous verdict, which missed the bet drafted under */
    ES_TREE_EARLY_HIT = 3, /* drafted from an EARLY frame's provisional verdict that the verdict confirmed */
} es_tree_origin;
#define ES_TREE_ORIGINS 4

/* "fresh", "bet_hit", "bet_miss", "early_hit"; "unknown" otherwise (the `drafted` label of /metrics). */
static inline const char *es_tree_origin_name(int o) {
    static const char *const names[ES_TREE_ORIGINS] = {"fresh", "bet_hit", "bet_miss", "early_hit"};
    return o >= 0 && o < ES_TREE_ORIGINS ? names[o] : "unknown";
}

/* The scheduler's tree-size hint (VERDICT's suggested_budget) meaning: the server is compute-bound;
 * send empty trees (root only, i.e. plain autoregressive rounds) until the hint changes. Older
 * clients read it as "no limit". */
#define ES_HINT_NO_DRAFT 0xFFFFu

#endif
