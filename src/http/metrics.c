/* metrics.c — Prometheus text exposition (see metrics.h). Label values here are endpoint paths and
 * fixed words, which never need escaping beyond what esc() does for safety. */
#include "http/metrics.h"

#include <stddef.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "edgespec.h"

void es_metrics_init(es_metrics *m) {
    memset(m, 0, sizeof *m);
    m->edge_active = -1;
    m->prompt_tokens = m->generated_tokens = m->refused = -1;
    m->drafts = m->draft_tokens = m->accepted_tokens = -1;
    m->early_frames = m->early_agreed = -1;
    m->kv_blocks_used = m->kv_blocks_total = -1;
    m->batch_count = -1;
    m->busy_seconds = m->idle_seconds = -1;
    m->groups = -1;
    m->prefix_hit_tokens = -1;
    m->queue_depth = -1;
    m->auth_failures_edge = m->auth_failures_http = -1;
    m->tls_failures_edge = m->tls_failures_http = -1;
}

const double es_metrics_lat_le[ES_METRICS_LAT_BUCKETS - 1] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                              1,     2.5,    5,     10,   25,    60,   120,  300};

void es_metrics_observe(es_metrics_hist *hst, double seconds) {
    if (!(seconds > 0)) seconds = 0; /* (NaN too) */
    int b = 0;
    while (b < ES_METRICS_LAT_BUCKETS - 1 && seconds > es_metrics_lat_le[b]) b++;
    hst->bucket[b]++;
    hst->count++;
    hst->sum += seconds;
}

void es_metrics_count_request(es_metrics *m, const char *endpoint, int status) {
    for (int i = 0; i < m->n_req; i++)
        if (m->req[i].status == status && !strcmp(m->req[i].endpoint, endpoint)) {
            m->req[i].count++;
            return;
        }
    if (m->n_req == ES_METRICS_MAX_REQ) return; /* endpoints are a fixed set: cannot fill up in practice */
    m->req[m->n_req].endpoint = endpoint;
    m->req[m->n_req].status = status;
    m->req[m->n_req].count = 1;
    m->n_req++;
}

int es_metrics_batch_bucket(int64_t rows) {
    int b = 0;
    for (int64_t le = 1; b < ES_METRICS_BATCH_BUCKETS - 1 && rows > le; le *= 2) b++;
    return b;
}

static bool family(es_str *o, const char *name, const char *type, const char *help) {
    return es_str_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A sample value: integers print exactly, other numbers with enough digits; NaN/Inf as Prometheus spells them. */
static bool value(es_str *o, double v) {
    if (isnan(v)) return es_str_puts(o, "NaN\n");
    if (isinf(v)) return es_str_puts(o, v > 0 ? "+Inf\n" : "-Inf\n");
    if (v == floor(v) && fabs(v) < 9e15) return es_str_printf(o, "%.0f\n", v);
    return es_str_printf(o, "%.6g\n", v);
}

static bool simple(es_str *o, const char *name, const char *type, const char *help, double v) {
    return family(o, name, type, help) && es_str_printf(o, "%s ", name) && value(o, v);
}

/* Label values: backslash, double quote and newline escaped. */
static bool esc(es_str *o, const char *s) {
    bool ok = true;
    for (; *s && ok; s++) {
        if (*s == '\\' || *s == '"') ok = es_str_printf(o, "\\%c", *s);
        else if (*s == '\n') ok = es_str_puts(o, "\\n");
        else ok = es_str_append(o, s, 1);
    }
    return ok;
}

/* A latency histogram: cumulative buckets, _sum and _count. */
static bool lat_hist(es_str *o, const char *name, const char *help, const es_metrics_hist *hst) {
    bool ok = family(o, name, "histogram", help);
    int64_t cum = 0;
    for (int b = 0; b < ES_METRICS_LAT_BUCKETS && ok; b++) {
        cum += hst->bucket[b];
        if (b < ES_METRICS_LAT_BUCKETS - 1) ok = es_str_printf(o, "%s_bucket{le=\"%g\"} ", name, es_metrics_lat_le[b]);
        else ok = es_str_printf(o, "%s_bucket{le=\"+Inf\"} ", name);
        ok = ok && value(o, (double)cum);
    }
    return ok && es_str_printf(o, "%s_sum ", name) && value(o, hst->sum) && es_str_printf(o, "%s_count ", name) &&
           value(o, (double)hst->count);
}

/* Which edgespec this is, and the device the target runs on. */
static bool render_identity(const es_metrics *m, es_str *o) {
    bool ok = family(o, "edgespec_build_info", "gauge", "Always 1; the labels say which edgespec this is.") &&
              es_str_printf(o, "edgespec_build_info{version=\"%s\"} 1\n", ES_VERSION_STRING);
    if (m->device_backend) {
        ok = ok && family(o, "edgespec_device_info", "gauge", "Always 1; the labels say where the target's forward pass runs.") &&
             es_str_puts(o, "edgespec_device_info{backend=\"") && esc(o, m->device_backend) &&
             es_str_printf(o, "\",index=\"%d\",name=\"", m->device_index) && esc(o, m->device_name ? m->device_name : "") &&
             es_str_puts(o, "\"} 1\n");
        if (m->device_memory_bytes > 0)
            ok = ok && simple(o, "edgespec_device_memory_bytes", "gauge", "Device-local memory of the device the target runs on.",
                              (double)m->device_memory_bytes);
    }
    return ok;
}

/* The HTTP API: requests, tokens, connections, the request queue and the latencies. */
static bool render_http(const es_metrics *m, es_str *o) {
    bool ok = true;
    ok = ok && family(o, "edgespec_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
    for (int i = 0; i < m->n_req && ok; i++)
        ok = es_str_puts(o, "edgespec_requests_total{endpoint=\"") && esc(o, m->req[i].endpoint) &&
             es_str_printf(o, "\",status=\"%d\"} ", m->req[i].status) && value(o, (double)m->req[i].count);
    ok = ok && simple(o, "edgespec_http_prompt_tokens_total", "counter", "Prompt tokens of HTTP completion requests.",
                      (double)m->http_prompt_tokens);
    ok = ok && simple(o, "edgespec_http_completion_tokens_total", "counter", "Tokens generated for HTTP completion requests.",
                      (double)m->http_completion_tokens);
    if (m->prompt_tokens >= 0)
        ok = ok && simple(o, "edgespec_prompt_tokens_total", "counter", "Prompt tokens of every session (edge and HTTP).",
                          (double)m->prompt_tokens);
    if (m->generated_tokens >= 0)
        ok = ok && simple(o, "edgespec_generated_tokens_total", "counter", "Tokens generated for every session (edge and HTTP).",
                          (double)m->generated_tokens);
    ok = ok && simple(o, "edgespec_http_connections", "gauge", "HTTP connections open now.", m->http_conns_open);
    ok = ok && simple(o, "edgespec_http_connections_refused_total", "counter",
                      "HTTP connections refused beyond --http-max-connections (503).", (double)m->http_conns_refused);
    ok = ok && simple(o, "edgespec_http_connections_timed_out_total", "counter",
                      "HTTP connections cut because a request did not arrive whole within --http-request-timeout (408).",
                      (double)m->http_conns_timed_out);
    ok = ok && simple(o, "edgespec_http_accept_failures_total", "counter",
                      "HTTP accepts that failed (descriptors ran out: accepting pauses 100 ms at a time).",
                      (double)m->http_accept_failures);
    ok = ok && simple(o, "edgespec_tokens_per_second", "gauge", "Generated tokens per second over the last 10 seconds.",
                      m->tokens_per_second);
    ok = ok && family(o, "edgespec_active_sessions", "gauge", "Sessions generating now, by kind (edge protocol or HTTP).");
    if (m->edge_active >= 0) ok = ok && es_str_puts(o, "edgespec_active_sessions{kind=\"edge\"} ") && value(o, m->edge_active);
    ok = ok && es_str_puts(o, "edgespec_active_sessions{kind=\"http\"} ") && value(o, m->http_active);
    if (m->queue_depth >= 0)
        ok = ok && simple(o, "edgespec_queued_requests", "gauge", "HTTP requests waiting for a session or a free worker (--max-queue).",
                          m->queue_depth);
    ok = ok && family(o, "edgespec_queue_rejected_total", "counter",
                      "HTTP requests answered 503 by the request queue: it was full, or they waited past --queue-timeout.") &&
         es_str_printf(o, "edgespec_queue_rejected_total{reason=\"full\"} ") && value(o, (double)m->queue_full) &&
         es_str_printf(o, "edgespec_queue_rejected_total{reason=\"timeout\"} ") && value(o, (double)m->queue_timeouts);
    ok = ok && lat_hist(o, "edgespec_queue_time_seconds", "Time completion requests waited in the queue before a session took them.",
                        &m->queue_time);
    ok = ok && lat_hist(o, "edgespec_time_to_first_token_seconds",
                        "Time from a completion request's arrival to its first generated token (queue time included).", &m->ttft);
    ok = ok && lat_hist(o, "edgespec_inter_token_latency_seconds",
                        "Time between generated tokens of a request (a delivery of n tokens after a gap g counts n times g/n).",
                        &m->itl);
    ok = ok && lat_hist(o, "edgespec_request_latency_seconds",
                        "Time from a completion request's arrival to the end of its reply (completed requests).", &m->e2e);
    return ok;
}

/* The scheduler: refusals, KV pages, batches, busy time, prefix cache, groups, EARLY frames. */
static bool render_sched(const es_metrics *m, es_str *o) {
    bool ok = true;
    if (m->refused >= 0)
        ok = ok && simple(o, "edgespec_refused_total", "counter",
                          "Sessions refused because the server was full (no session slot, no KV room, or a full queue).",
                          (double)m->refused);
    if (m->kv_blocks_total >= 0) {
        ok = ok && simple(o, "edgespec_kv_blocks_used", "gauge", "KV cache pages in use.", (double)m->kv_blocks_used);
        ok = ok && simple(o, "edgespec_kv_blocks_total", "gauge", "KV cache pages in the pool.", (double)m->kv_blocks_total);
    }
    if (m->batch_count >= 0) {
        ok = ok && family(o, "edgespec_batch_rows", "histogram", "Rows (tokens) per batched forward pass of the target model.");
        int64_t cum = 0, le = 1;
        for (int b = 0; b < ES_METRICS_BATCH_BUCKETS && ok; b++, le *= 2) {
            cum += m->batch_buckets[b];
            if (b == ES_METRICS_BATCH_BUCKETS - 1) ok = es_str_puts(o, "edgespec_batch_rows_bucket{le=\"+Inf\"} ");
            else ok = es_str_printf(o, "edgespec_batch_rows_bucket{le=\"%lld\"} ", (long long)le);
            ok = ok && value(o, (double)cum);
        }
        ok = ok && es_str_puts(o, "edgespec_batch_rows_sum ") && value(o, (double)m->batch_sum);
        ok = ok && es_str_puts(o, "edgespec_batch_rows_count ") && value(o, (double)m->batch_count);
        const double passes = m->batch_count > 0 ? (double)m->batch_count : 1;
        ok = ok && simple(o, "edgespec_sessions_per_pass", "gauge", "Mean sessions with rows in a forward pass, since start.",
                          (double)m->pass_sessions / passes);
        ok = ok && simple(o, "edgespec_rows_per_pass", "gauge", "Mean rows per forward pass, since start.",
                          (double)m->batch_sum / passes);
    }
    if (m->busy_seconds >= 0) {
        ok = ok && simple(o, "edgespec_server_busy_seconds_total", "counter", "Seconds the compute thread spent in passes.",
                          m->busy_seconds);
        ok = ok && simple(o, "edgespec_server_idle_seconds_total", "counter",
                          "Seconds the compute thread waited for work (edges drafting, trees in flight, no sessions).",
                          m->idle_seconds);
        const double all = m->busy_seconds + m->idle_seconds;
        ok = ok && simple(o, "edgespec_server_busy_fraction", "gauge",
                          "Busy seconds over busy + idle seconds since start (how much of the time the server computes).",
                          all > 0 ? m->busy_seconds / all : 0.0);
    }
    if (m->prefix_hit_tokens >= 0) {
        ok = ok && simple(o, "edgespec_prefix_cache_hit_tokens_total", "counter",
                          "Prompt tokens whose KV rows were adopted from the prefix cache instead of prefilled.",
                          (double)m->prefix_hit_tokens);
        ok = ok && simple(o, "edgespec_prefix_cache_blocks", "gauge", "KV pages held in the prefix cache.",
                          (double)m->prefix_blocks);
    }
    if (m->groups >= 0) {
        ok = ok && simple(o, "edgespec_groups", "gauge",
                          "Edge groups the pipeline scheduler serves in turn now (1: gather, 0: no edge session).", m->groups);
        ok = ok && family(o, "edgespec_group_trial_tokens_per_second", "gauge",
                          "Edge tokens per second the pipeline measured under one group and under the cycle model's split "
                          "(--group-trial; 0: not measured).") &&
             es_str_puts(o, "edgespec_group_trial_tokens_per_second{arm=\"one\"} ") && value(o, m->trial_rate_one) &&
             es_str_puts(o, "edgespec_group_trial_tokens_per_second{arm=\"split\"} ") && value(o, m->trial_rate_split);
    }
    if (m->early_frames >= 0) {
        ok = ok && simple(o, "edgespec_early_frames_total", "counter",
                          "EARLY frames (provisional verdicts from the exit layer) sent to edges.", (double)m->early_frames);
        ok = ok && simple(o, "edgespec_early_agreed_total", "counter",
                          "EARLY frames whose provisional verdict equalled the round's final verdict.", (double)m->early_agreed);
    }
    return ok;
}

/* Speculative rounds: drafts and acceptance, overall and by session kind; edge trees by how they were drafted. */
static bool render_speculation(const es_metrics *m, es_str *o) {
    bool ok = true;
    if (m->drafts >= 0) {
        ok = ok && simple(o, "edgespec_drafts_total", "counter", "Speculative rounds verified (one draft tree or chain each).",
                          (double)m->drafts);
        ok = ok && simple(o, "edgespec_draft_tokens_total", "counter", "Draft tokens proposed for verification.",
                          (double)m->draft_tokens);
        ok = ok && simple(o, "edgespec_accepted_tokens_total", "counter", "Draft tokens the target accepted.",
                          (double)m->accepted_tokens);
        ok = ok && simple(o, "edgespec_acceptance_length", "gauge",
                          "Mean tokens confirmed per speculative round (accepted + 1 from the target), since start.",
                          m->drafts > 0 ? 1.0 + (double)m->accepted_tokens / (double)m->drafts : 0.0);
        if (m->accept_depth_known) {
            ok = ok && family(o, "edgespec_accepted_depth_total", "counter",
                              "Speculative rounds whose accepted draft path reached this depth (1: the first draft token "
                              "accepted; the last: that depth or more). Over edgespec_drafts_total: acceptance by position.");
            for (int k = 0; k < ES_METRICS_ACCEPT_DEPTHS && ok; k++)
                ok = es_str_printf(o, "edgespec_accepted_depth_total{depth=\"%d\"} ", k + 1) && value(o, (double)m->accept_depth[k]);
        }
    }
    if (m->n_kinds > 0) {
        /* one family per counter, a sample per kind: sum(by kind) is the unlabelled total above */
        static const struct {
            const char *name, *type, *help;
            size_t off;
        } fams[] = {
            {"edgespec_kind_sessions_total", "counter", "Sessions admitted, by kind (edge: the edge drafts; server_draft: "
             "the server's draft model; autoregressive: no draft).", offsetof(es_metrics_kind, sessions)},
            {"edgespec_kind_prompt_tokens_total", "counter", "Prompt tokens of the sessions admitted, by kind.",
             offsetof(es_metrics_kind, prompt_tokens)},
            {"edgespec_kind_generated_tokens_total", "counter", "Tokens generated, by session kind.",
             offsetof(es_metrics_kind, generated_tokens)},
            {"edgespec_kind_drafts_total", "counter", "Speculative rounds verified, by session kind.",
             offsetof(es_metrics_kind, drafts)},
            {"edgespec_kind_draft_tokens_total", "counter", "Draft tokens proposed, by session kind.",
             offsetof(es_metrics_kind, draft_tokens)},
            {"edgespec_kind_accepted_tokens_total", "counter", "Draft tokens accepted, by session kind.",
             offsetof(es_metrics_kind, accepted_tokens)},
        };
        for (size_t f = 0; f < sizeof fams / sizeof fams[0] && ok; f++) {
            ok = family(o, fams[f].name, fams[f].type, fams[f].help);
            for (int k = 0; k < m->n_kinds && ok; k++)
                ok = es_str_printf(o, "%s{kind=\"%s\"} ", fams[f].name, m->kinds[k].kind) &&
                     value(o, (double)*(const int64_t *)((const char *)&m->kinds[k] + fams[f].off));
        }
        ok = ok && family(o, "edgespec_kind_active_sessions", "gauge", "Sessions generating now, by kind.");
        for (int k = 0; k < m->n_kinds && ok; k++)
            ok = es_str_printf(o, "edgespec_kind_active_sessions{kind=\"%s\"} ", m->kinds[k].kind) && value(o, (double)m->kinds[k].active);
    }
    if (m->trees_known) {
        ok = ok && family(o, "edgespec_edge_trees_total", "counter",
                          "Edge draft trees verified, by how the edge drafted them (fresh: after the previous verdict, no "
                          "bet; bet_hit / early_hit: drafted ahead under a bet / from an EARLY frame that the verdict "
                          "confirmed; bet_miss: after a verdict that dropped the tree drafted under a bet). Edges below "
                          "protocol version 3 count as fresh.");
        for (int k = 0; k < ES_TREE_ORIGINS && ok; k++)
            ok = es_str_printf(o, "edgespec_edge_trees_total{drafted=\"%s\"} ", es_tree_origin_name(k)) && value(o, (double)m->trees[k]);
    }
    return ok;
}

/* Two KV tiers (APEX): device pages, host-tier sessions, moves, the plans chosen. */
static bool render_tiers(const es_metrics *m, es_str *o) {
    bool ok = true;
    if (m->tiered) {
        ok = ok && simple(o, "edgespec_device_kv_blocks_used", "gauge", "KV pages in device memory held by device-tier sessions (two KV tiers).",
                          (double)m->device_kv_blocks_used);
        ok = ok && simple(o, "edgespec_device_kv_blocks_cached", "gauge",
                          "Device copies of prefix-cache KV pages no device-tier session holds (given back when room is needed).",
                          (double)m->device_kv_blocks_cached);
        ok = ok && simple(o, "edgespec_device_kv_blocks_total", "gauge", "KV pages the device tier holds.", (double)m->device_kv_blocks_total);
        ok = ok && simple(o, "edgespec_host_tier_sessions", "gauge",
                          "Sessions whose KV cache is in host memory now (their attention runs on the CPU).", m->host_tier_now);
        ok = ok && simple(o, "edgespec_host_tier_sessions_total", "counter", "Sessions that ran in the host tier at least once.",
                          (double)m->host_tier_sessions);
        ok = ok && family(o, "edgespec_tier_moves_total", "counter", "Sessions moved between the KV tiers, by destination.") &&
             es_str_puts(o, "edgespec_tier_moves_total{to=\"host\"} ") && value(o, (double)m->tier_moves_to_host) &&
             es_str_puts(o, "edgespec_tier_moves_total{to=\"device\"} ") && value(o, (double)m->tier_moves_to_device);
        ok = ok && simple(o, "edgespec_tier_copies_async_total", "counter",
                          "Copies of KV pages up to the device submitted without the server waiting for them.", (double)m->tier_copies_async);
        ok = ok && simple(o, "edgespec_tier_copy_waits_total", "counter",
                          "Times the server waited for an earlier copy up to free its staging.", (double)m->tier_copy_waits);
        static const char *const plan_names[3] = {"device_only", "asymmetric", "async_overlap"};
        ok = ok && family(o, "edgespec_plan_steps_total", "counter",
                          "Steps with host-tier work by the plan the predictor chose (device_only: host-tier sessions waited).");
        for (int k = 0; k < 3 && ok; k++)
            ok = es_str_printf(o, "edgespec_plan_steps_total{plan=\"%s\"} ", plan_names[k]) && value(o, (double)m->plans[k]);
        ok = ok && simple(o, "edgespec_plan_prediction_error", "gauge",
                          "Median |predicted - measured| / measured step time over recent steps with host-tier work.",
                          m->prediction_error_p50);
    }
    return ok;
}

/* Refused api keys and failed TLS handshakes, by listener. */
static bool render_security(const es_metrics *m, es_str *o) {
    bool ok = true;
    if (m->auth_failures_edge >= 0 || m->auth_failures_http >= 0) {
        ok = ok && family(o, "edgespec_auth_failures_total", "counter",
                          "Connections (edge protocol) or requests (HTTP) refused for a missing or wrong api key.");
        if (m->auth_failures_edge >= 0)
            ok = ok && es_str_puts(o, "edgespec_auth_failures_total{listener=\"edge\"} ") && value(o, (double)m->auth_failures_edge);
        if (m->auth_failures_http >= 0)
            ok = ok && es_str_puts(o, "edgespec_auth_failures_total{listener=\"http\"} ") && value(o, (double)m->auth_failures_http);
    }
    if (m->tls_failures_edge >= 0 || m->tls_failures_http >= 0) {
        ok = ok && family(o, "edgespec_tls_handshake_failures_total", "counter",
                          "TLS handshakes that failed (plain text on a TLS port, an untrusted or unknown certificate, a "
                          "peer that hung up mid-handshake).");
        if (m->tls_failures_edge >= 0)
            ok = ok && es_str_puts(o, "edgespec_tls_handshake_failures_total{listener=\"edge\"} ") &&
                 value(o, (double)m->tls_failures_edge);
        if (m->tls_failures_http >= 0)
            ok = ok && es_str_puts(o, "edgespec_tls_handshake_failures_total{listener=\"http\"} ") &&
                 value(o, (double)m->tls_failures_http);
    }
    return ok;
}

bool es_metrics_render(const es_metrics *m, es_str *o) {
    bool ok = render_identity(m, o) && render_http(m, o) && render_sched(m, o) && render_speculation(m, o) && render_tiers(m, o) &&
              render_security(m, o);
    ok = ok && simple(o, "edgespec_ready", "gauge", "1 when the model is loaded and requests are served.", m->ready ? 1 : 0);
    ok = ok && simple(o, "edgespec_uptime_seconds", "gauge", "Seconds since the HTTP API started.", m->uptime_seconds);
    return ok;
}
