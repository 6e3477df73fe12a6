/* metrics.h — the /metrics page in the Prometheus text exposition format (version 0.0.4): for each
 * metric family a `# HELP` and a `# TYPE` line, then its samples, all lines of a family together.
 *
 * The HTTP front end (requests, HTTP tokens, HTTP sessions, tokens per second) and its backend (the
 * server's scheduler: KV pool, batches, drafts, edge sessions; or the edge's worker pool) each fill
 * their part of one es_metrics; es_metrics_render writes the page. A value < 0 means "not
 * applicable here" and its family is left out (e.g. the KV pool on an edge). */
#ifndef ES_SERVER_METRICS_H
#define ES_SERVER_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "edgespec_serve.h"
#include "util/str.h"

#define ES_METRICS_MAX_REQ 64      /* distinct (endpoint, status) pairs counted */
#define ES_METRICS_BATCH_BUCKETS 12
#define ES_METRICS_ACCEPT_DEPTHS 16 /* = ES_SCHED_ACCEPT_DEPTHS */ /* batch-size histogram: le 1, 2, 4, ..., 1024, +Inf */

/* Latency histograms (seconds): upper bounds of the buckets, the last one +Inf. */
#define ES_METRICS_LAT_BUCKETS 18
extern const double es_metrics_lat_le[ES_METRICS_LAT_BUCKETS - 1];

#define ES_METRICS_KINDS 4 /* session kinds a backend may split its counters by */

typedef struct es_metrics_hist {
    int64_t bucket[ES_METRICS_LAT_BUCKETS]; /* non-cumulative counts per bucket */
    int64_t count;
    double sum;
} es_metrics_hist;

/* Adds one observation of `seconds` (negative ones count as 0). */
void es_metrics_observe(es_metrics_hist *hst, double seconds);

typedef struct es_metrics_kind {
    const char *kind; /* a static string */
    int64_t sessions, prompt_tokens, generated_tokens, drafts, draft_tokens, accepted_tokens;
    int active;
} es_metrics_kind;

typedef struct es_metrics_req {
    const char *endpoint;  /* a static string: "/v1/completions", ..., "other" */
    int status;
    int64_t count;
} es_metrics_req;

typedef struct es_metrics {
    /* ---- the HTTP front end ---- */
    es_metrics_req req[ES_METRICS_MAX_REQ];
    int n_req;
    int64_t http_prompt_tokens, http_completion_tokens;
    int http_active;               /* HTTP requests generating now */
    double tokens_per_second;      /* generated tokens per second over the last few seconds */
    double uptime_seconds;
    bool ready;
    int http_conns_open;           /* HTTP connections open now */
    int64_t http_conns_refused;    /* beyond --http-max-connections */
    int64_t http_conns_timed_out;  /* cut by --http-request-timeout */
    int64_t http_accept_failures;  /* accepts that failed (descriptors ran out) */
    es_metrics_hist queue_time;    /* completion requests: arrival to admission by the backend */
    es_metrics_hist ttft;          /* arrival to the first generated token */
    es_metrics_hist itl;           /* between generated tokens (a delivery of n tokens after a gap g counts
                                      n observations of g / n) */
    es_metrics_hist e2e;           /* arrival to the end of the reply (completed requests only) */
    int64_t queue_full, queue_timeouts; /* 503s of the request queue: full, waited too long */
    /* ---- the backend (< 0: not applicable) ---- */
    int edge_active;               /* edge-protocol sessions on the server */
    int64_t prompt_tokens;         /* every session's prompt tokens (server: edge + HTTP) */
    int64_t generated_tokens;      /* every session's generated tokens */
    int64_t refused;               /* sessions refused: no slot or no KV room (server), queue full (edge) */
    int64_t drafts, draft_tokens, accepted_tokens; /* verification rounds, drafted tokens, accepted ones */
    int64_t early_frames, early_agreed; /* EARLY frames sent, and of them equal to the final verdict (< 0: off) */
    int64_t accept_depth[ES_METRICS_ACCEPT_DEPTHS]; /* rounds whose accepted path reached depth k + 1 (last:
                                                       that depth or more), when accept_depth_known */
    bool accept_depth_known;       /* the backend counts them (the server's scheduler) */
    int64_t kv_blocks_used, kv_blocks_total;
    int64_t batch_buckets[ES_METRICS_BATCH_BUCKETS]; /* non-cumulative counts per bucket */
    int64_t batch_count;           /* forward passes (< 0: no batch histogram) */
    int64_t batch_sum;             /* rows over all of them */
    int64_t pass_sessions;         /* sessions with rows in a pass, summed over the passes */
    double busy_seconds, idle_seconds; /* the compute thread in passes / waiting for work (< 0: n/a) */
    int groups;                    /* edge groups of the pipeline now (< 0: n/a) */
    double trial_rate_one, trial_rate_split; /* the pipeline's measured check of its split: edge tokens per
                                      second under one group / the split (0: not measured; groups < 0: n/a) */
    int64_t prefix_hit_tokens;     /* prompt tokens adopted from the prefix cache (< 0: n/a) */
    int64_t prefix_blocks;         /* KV pages in the prefix cache now */
    int queue_depth;               /* requests waiting for a worker (edge) */
    /* two KV tiers (APEX); tiered false: none of these */
    bool tiered;
    int64_t device_kv_blocks_used, device_kv_blocks_total, device_kv_blocks_cached;
    int host_tier_now;             /* sessions whose KV is in host memory now */
    int64_t host_tier_sessions;    /* sessions that ran in the host tier at least once */
    int64_t tier_moves_to_host, tier_moves_to_device;
    int64_t tier_copies_async, tier_copy_waits; /* copies up not waited for / waits for their staging */
    int64_t plans[3];              /* steps by plan: device_only, asymmetric, async_overlap */
    double prediction_error_p50;
    /* the backend's counters by session kind (the server's scheduler: "edge", "autoregressive",
       "server_draft"); n_kinds 0: not split */
    es_metrics_kind kinds[ES_METRICS_KINDS];
    int n_kinds;
    int64_t trees[ES_TREE_ORIGINS]; /* edge trees verified, by es_tree_origin, when trees_known */
    bool trees_known;              /* the backend counts them (the server, from VERIFY frames) */
    const char *device_backend;    /* where the target's forward pass runs: "cpu", "vulkan" (NULL: n/a) */
    int device_index;              /* N of vulkan:N */
    const char *device_name;       /* the driver's name (NULL: unknown) */
    int64_t device_memory_bytes;   /* its largest device-local heap (<= 0: unknown) */
    /* ---- security, per listener (< 0: no such listener, or no TLS on it) ---- */
    int64_t auth_failures_edge;    /* edge connections refused for a missing or wrong api key */
    int64_t auth_failures_http;    /* HTTP requests answered 401 */
    int64_t tls_failures_edge, tls_failures_http; /* TLS handshakes that failed */
} es_metrics;

/* Every backend value set to "not applicable". */
void es_metrics_init(es_metrics *m);
/* Adds one request to the (endpoint, status) counters (endpoint must be a static string). */
void es_metrics_count_request(es_metrics *m, const char *endpoint, int status);
/* The bucket a forward pass of `rows` rows falls in. */
int es_metrics_batch_bucket(int64_t rows);
/* Writes the whole page. False when memory runs out. */
bool es_metrics_render(const es_metrics *m, es_str *out);

#endif
