/* edge.h — the edge client: drafts locally with a small model, has the server verify, streams the
 * confirmed tokens. One es_edge = one connection (handshake done at connect) running one session at a
 * time; several es_edge objects may share one draft es_model (each has its own draft context).
 *
 * A round: draft a tree under the root (es_drafter), send VERIFY, receive the VERDICT, apply it
 * (es_drafter_accept), emit path tokens + bonus. Proactive drafting (SpecEdge): right after sending,
 * bet that the tree's most likely root-to-leaf path (first child at every level) is accepted, predict
 * the bonus with the draft's argmax after that leaf, and draft the next tree under that bet while the
 * verdict is in flight; on a hit (whole path accepted and bonus as predicted) that tree is sent at
 * once, on a miss the draft cache is rewound to the real verdict and the bet dropped.
 *
 * Without a draft model (mode ES_MODE_AR or ES_MODE_SERVER_SPEC) the edge is a plain client: it sends
 * OPEN and streams the server's TOKENS frames.
 *
 * WAN emulation: emulate_rtt_ms delays every outgoing frame by rtt/2 and every incoming frame by
 * rtt/2, emulate_bandwidth_kbps adds size*8/kbps to each direction — in-process, so loopback tests
 * see WAN timing; the draft work overlaps these delays exactly as it would a real network.
 * If the server goes away mid-generation the edge reconnects with exponential backoff and resumes by
 * re-opening the session with prompt + tokens confirmed so far; with fallback_local it instead
 * continues with the draft model alone (saying so through the log callback), trying to reach the
 * server between tokens (backoff 100 ms doubling to 5 s) and going back to verified generation, from
 * everything confirmed so far, once it answers. A generation that starts without a connection tries
 * once to connect; with fallback_local (and a draft) it then starts locally. */
#ifndef ES_EDGE_EDGE_H
#define ES_EDGE_EDGE_H

#include <stdbool.h>
#include <stdint.h>

#include "edgespec.h"
#include "wire/proto.h"
#include "specdec/spec.h"

typedef struct es_edge es_edge;

/* Which path a proactive bet stands on (es_edge_params.bet). SpecEdge bets on its best leaf; here the
 * first-child path hits more often (measured: hit ratio 0.29-0.31 against 0.16 with the best leaf,
 * stories260K target, draft-mid, 12 prompts, RTT 10 and 30 ms; README "Proactive drafting"), so it
 * is the default. */
typedef enum es_bet_rule {
    ES_BET_FIRST = 0,     /* the first child at every level: the draft's greedy path to its deepest leaf */
    ES_BET_BEST_LEAF = 1, /* SpecEdge: the path to the leaf of best score (log-probability + log 0.9 per level) */
} es_bet_rule;

/* es_edge_params.early_follow */
typedef enum { ES_EARLY_FOLLOW_ADAPTIVE = 0, ES_EARLY_FOLLOW_ALWAYS = 1 } es_early_follow;

typedef struct es_edge_params {
    const char *host;               /* server address (default 127.0.0.1) */
    int port;                       /* default 7700 */
    const es_model *draft;          /* NULL: plain client (mode must be AR or SERVER_SPEC) */
    int mode;                       /* es_session_mode */
    int rule;                       /* es_accept_rule */
    es_sampler_params sampling;     /* the target's sampling (temperature 0 = greedy) */
    es_drafter_params draft_params; /* chain/tree shape; adaptive length */
    bool proactive;
    int bet;                        /* es_bet_rule: which path a proactive bet stands on */
    /* ask for EARLY frames (protocol version 2; servers started with exit heads): the round's
     * provisional verdict from an exit layer arrives before the final one, and the next tree is
     * drafted from it (instead of, or replacing, the proactive bet); kept when the verdict agrees */
    bool early_exit;
    /* es_early_follow: when an EARLY frame's path differs from a standing bet, ADAPTIVE (default)
     * follows it only while EARLY frames have agreed with the final verdict more often than the bets
     * have (both measured over this edge's recent rounds; the first rounds always follow), ALWAYS
     * follows every one */
    int early_follow;
    bool adapt_to_server;           /* follow the server's suggested_budget hints (default true) */
    int n_threads;                  /* draft compute threads (default 1) */
    int n_ctx;                      /* 0: the draft model's context, capped by the server's */
    es_kv_type kv_type;             /* the draft context's KV cache rows (default ES_KV_F16) */
    double emulate_rtt_ms;          /* 0: off */
    double emulate_bandwidth_kbps;  /* 0: off */
    const char *api_key;
    int reconnect_attempts;         /* default 5; the first at once, then 100 ms doubling to 5 s */
    bool fallback_local;            /* continue with the draft alone when the server is gone */
    double io_timeout_s;            /* give up on a silent server after this long (default 60) */
    es_log_fn log;
    void *log_ud;
    /* TLS (the server runs `serve --tls-cert/--tls-key`): the same frames inside TLS 1.2+. The server's
     * certificate is verified against the system CA store, or only tls_ca (PEM) when given, and must
     * name tls_server_name (default: host; an address matches the certificate's IP entries).
     * tls_insecure skips the verification (tests only: anyone in the path can then read the traffic). */
    bool tls;
    const char *tls_ca;
    bool tls_insecure;
    const char *tls_server_name;
} es_edge_params;

es_edge_params es_edge_default_params(void);

#define ES_EDGE_MAX_RESUMES 16
#define ES_EDGE_MAX_LEADS 1024 /* early-exit lead times kept per generation (for the median) */
typedef struct es_edge_stats {
    int n_prompt, n_generated;
    int stop;                        /* es_proto_stop */
    int rounds;
    long drafted, accepted;
    long accepted_at_depth[ES_SPEC_MAX_PATH + 1];
    long proactive_attempts, proactive_hits;
    long proactive_cut;           /* hits whose tree was cut to a smaller hint from the verdict */
    long proactive_stopped;       /* bets whose drafting stopped early because the verdict came */
    long proactive_resumed;       /* of those that hit, trees finished after the verdict before they went out */
    long trees[ES_TREE_ORIGINS];  /* trees sent, by how they were drafted (es_tree_origin: fresh, under a
                                     bet that hit, after a bet that missed, from an EARLY frame) */
    long early_frames;            /* EARLY frames received */
    long early_agreed;            /* of them, equal to their round's final verdict */
    long early_kept;              /* next trees drafted from an EARLY and used */
    long early_ignored;           /* EARLY frames not followed: the standing bet has been the better guess */
    int n_early_lead;             /* lead times recorded (at most ES_EDGE_MAX_LEADS; later ones dropped) */
    float early_lead_ms[ES_EDGE_MAX_LEADS];    /* ms from each EARLY to its final verdict */
    int64_t bytes_sent, bytes_received; /* wire bytes incl. headers, handshake excluded */
    int64_t frames_sent, frames_received;
    double ttft_s;                   /* open sent -> first generated token confirmed */
    double total_s;
    double draft_seconds, wait_seconds; /* drafting (incl. proactive) / waiting for the server */
    int reconnects;
    int fallback_tokens;             /* tokens produced by the draft alone after the server left */
    /* after each reconnection (not local fallback): seconds from losing the server to the first token
       the new session confirmed — the outage a user sees (the first ES_EDGE_MAX_RESUMES) */
    int n_resumes;
    double resume_s[ES_EDGE_MAX_RESUMES];
} es_edge_stats;

/* The median of st->early_lead_ms (0 when there is none). */
double es_edge_early_lead_p50(const es_edge_stats *st);

/* Connects and handshakes: ES_ERR_MISMATCH (message names the first differing fact) when the draft's
 * vocabulary differs from the target's, ES_ERR_PROTOCOL / ES_ERR_IO / ES_ERR_BUSY otherwise. A
 * connection made but closed before the server's WELCOME (a balancer's replica dying or draining) is
 * tried again up to p->reconnect_attempts times; nothing listening, or a silent server, fails at once. */
es_status es_edge_connect(const es_edge_params *p, es_edge **out, es_err *err);
/* es_edge_connect without the connection: validates, sets up the draft context; the server is
 * reached later (es_edge_reconnect, or the next generation, which tries once). */
es_status es_edge_init(const es_edge_params *p, es_edge **out, es_err *err);
/* A fresh connection and handshake (the old one, if any, is dropped). Errors as es_edge_connect.
 * Not while a generation runs. */
es_status es_edge_reconnect(es_edge *e, es_err *err);
/* Whether the edge holds a live connection (false before the first handshake and once it broke). */
bool es_edge_connected(const es_edge *e);
void es_edge_free(es_edge *e);
/* The server's handshake answer (n_ctx, limits, fingerprint). */
const es_msg_welcome *es_edge_server_info(const es_edge *e);

/* Sets (cancel = true) or clears the request to stop the generation: while it is set, a running
 * es_edge_generate* ends at the next confirmed tokens, or at once while it waits for the server's
 * verdict or tokens, with stop ES_STOP_CLIENT (closing its server session), and one that starts
 * returns at once with no tokens. Only the caller clears it.
 * Thread-safe; may be called from the on_tokens callback. */
void es_edge_cancel(es_edge *e, bool cancel);
/* The target's sampling and the acceptance rule for the next generations (the draft samples at the
 * same temperature, with the same seed). Not while a generation runs. */
es_status es_edge_set_sampling(es_edge *e, int rule, const es_sampler_params *sampling, es_err *err);

/* What the next generations report and how their output is constrained, beyond sampling (the OpenAI
 * API's logprobs and response_format; protocol version 4 — a server that speaks less refuses such a
 * generation with ES_ERR_UNSUPPORTED). */
typedef struct es_edge_request {
    /* -1: none; 0..ES_SPEC_MAX_TOP_LOGPROBS: each confirmed token's log-probability under the target
       (from the server's verification) and this many most likely alternatives, passed to on_logprobs */
    int top_logprobs;
    /* the output is one JSON value of this grammar (grammar/grammar.h; NULL: free text): the server
       masks the target's sampling with it, and the edge drafts under the same mask so speculation still
       pays (copied; its schema text is what the server compiles) */
    const struct es_grammar *grammar;
    /* called on the generating thread right before on_tokens with the same tokens' entries (generated
       locally after the server left: the draft's own log-probabilities) */
    void (*on_logprobs)(void *ud, const es_token_logprob *lp, int n);
} es_edge_request;

/* For the next generations (not while one runs). ES_ERR_NOMEM, or ES_ERR_INVALID_ARG for values out of
 * range or a grammar without a draft or over a vocabulary it cannot be used with. */
es_status es_edge_set_request(es_edge *e, const es_edge_request *rq, es_err *err);

/* Generates up to max_tokens after the prompt (token ids, BOS included by the caller). Confirmed tokens
 * go to out (capacity max_tokens, stop token included) and, as they are confirmed, to on_tokens
 * (stop token excluded) with the time since the generation started. */
es_status es_edge_generate(es_edge *e, const int32_t *prompt, int n_prompt, int max_tokens, const int32_t *stop,
                           int n_stop, int32_t *out, es_edge_stats *st,
                           void (*on_tokens)(void *ud, const int32_t *toks, int n, double t_s), void *ud,
                           es_err *err);

/* A plain client (mode AR or SERVER_SPEC) without a local tokenizer: the server tokenises `text`
 * (adding BOS as its vocabulary asks); st->n_prompt is the server's count. A lost connection can be
 * resumed only before the first token (resuming needs the prompt's ids). */
es_status es_edge_generate_text(es_edge *e, const char *text, int max_tokens, const int32_t *stop, int n_stop, int32_t *out,
                                es_edge_stats *st, void (*on_tokens)(void *ud, const int32_t *toks, int n, double t_s),
                                void *ud, es_err *err);

#endif
