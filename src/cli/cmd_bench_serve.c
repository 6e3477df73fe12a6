/* cmd_bench_serve.c — `edgespec bench serve`: a verification server and N edge clients on loopback,
 * side by side for several serving modes and client counts, in one process.
 *
 * Modes: ar (plain clients, the server generates autoregressively — the server-only baseline),
 * server-spec (the draft model runs on the server), edge (edges draft, the server verifies) and
 * edge+proactive (edges also draft under a bet while a verification is in flight) and edge+early
 * (edge+proactive plus early exits: the server sends each round's provisional verdict from an exit
 * layer, --exit-layers / --exit-file, and the edges draft the next tree from it).
 *
 * Because the edges share this machine's cores with the server, the primary throughput figure is
 * generated tokens per second of *server compute* (CPU time of the scheduler's compute thread and its
 * thread pool — what a server operator pays for); wall-clock throughput is reported beside it.
 * Inter-token latency follows SpecEdge: a verdict that confirms n tokens after a gap of t seconds
 * contributes n samples of t / n. Cost per 1M tokens follows SpecEdge's model: server $/s × server
 * compute time (CPU seconds ÷ server threads) + edge $/s × edge busy (drafting) time. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "cli/prompts.h"
#include "kernels/attn.h"
#include "edge/edge.h"
#include "server/server.h"

static const char *k_usage_serve =
    "edgespec bench serve -m TARGET.gguf [--draft DRAFT.gguf] [--server-draft DRAFT.gguf]\n"
    "               [--modes ar,server-spec,edge,edge+proactive,edge+early] [--clients 1,2,4,8,16,32]\n"
    "               [--exit-layers L[,L...]] [--exit-file FILE] [--early-follow adaptive|always]\n"
    "               [--n-gen N] [--prompts FILE] [--prompts-per-client N] [--rtt-ms MS] [--bandwidth-kbps K]\n"
    "               [--threads N] [--temp T] [--accept greedy|match|rejection] [--spec chain|tree]\n"
    "               [--draft-max K] [--tree-budget N] [--tree-depth N] [--tree-width N] [--max-batch-tokens N]\n"
    "               [--sched pipeline,gather] [--group-trial] [--batch-window-ms MS] [--knee-tokens N] [--kv-type f32|f16|q8_0]\n"
    "               [--server-cost-per-hour USD] [--edge-cost-per-hour USD] [--seed S]\n"
    "               [--server-cpus LIST --edge-cpus LIST] [--device cpu|vulkan[:N]] [--device-kv-memory SIZE] [--json]";

enum { MODE_AR, MODE_SERVER_SPEC, MODE_EDGE, MODE_EDGE_PROACTIVE, MODE_EDGE_EARLY, MODE_COUNT };
static const char *k_mode_names[MODE_COUNT] = {"ar", "server-spec", "edge", "edge+proactive", "edge+early"};
#define IS_EDGE_MODE(m) ((m) == MODE_EDGE || (m) == MODE_EDGE_PROACTIVE || (m) == MODE_EDGE_EARLY)

typedef struct bs_opts {
    const char *target_path, *draft_path, *server_draft_path, *prompts_path;
    int modes[MODE_COUNT], n_modes;
    int clients[16], n_clients;
    int n_gen, prompts_per_client, threads, draft_max, tree_budget, tree_depth, tree_width, max_batch_tokens;
    double rtt_ms, bandwidth_kbps, temp, server_cost_h, edge_cost_h, batch_window_ms;
    int knee_tokens;
    int scheds[2], n_scheds; /* es_sched_policy: the edge modes run once under each */
    es_kv_type kv_type;  /* the server's KV cache (edge drafts keep the default) */
    const char *accept, *spec;
    uint64_t seed;
    bool json;
    bool group_trial; /* pipeline points check the model's split by measurement (--group-trial) */
    int exit_layers[ES_EXIT_MAX], n_exit_layers; /* edge+early: the server's exit heads */
    int early_follow;                            /* edge+early: es_early_follow */
    const char *exit_file;
    /* --server-cpus / --edge-cpus: the server's threads and the edges' threads on disjoint cores, so
       edge drafting (proactive bets above all) does not preempt the server's compute as it would
       not on separate devices. Empty: no pinning. */
    cpu_set_t server_cpus, edge_cpus;
    bool pin;
    es_backend_kind backend; /* where the server's target runs */
    int device;
    /* --device-kv-memory: each point twice, the server with two KV tiers (this much on the device,
       the rest in host memory, APEX) and the device-only baseline (the KV pool this size, clients
       admitted as their sessions fit: the rest queue, as vLLM's scheduler does) */
    int64_t device_kv_memory;
    int pinned; /* bits: 1 --server-cpus given, 2 --edge-cpus given */
    bool need_draft, need_server_draft; /* what the modes asked for needs loaded (bs_check) */
} bs_opts;

enum { KV_ONE, KV_HYBRID, KV_DEVICE_ONLY };
static const char *k_kv_names[3] = {"one_tier", "hybrid", "device_only"};

/* One point of the sweep: a serving mode under a scheduling policy (es_sched_policy) and a KV layout
 * (KV_*), with n_clients clients. */
typedef struct bs_point {
    int mode, policy, kv, n_clients;
} bs_point;

/* The models of a sweep: the server's target, the edges' draft, the server's own draft (server-spec;
 * the edges' draft when both name the same file). NULL where no mode needs it. */
typedef struct bs_models {
    es_model *target, *draft, *server_draft;
} bs_models;

/* One client thread's job and results. */
typedef struct bs_client {
    /* in */
    int id, mode;
    const bs_opts *o;
    const cli_prompts *prompts;
    const es_model *draft;
    int port;
    int32_t eos;
    sem_t *gate;            /* device_only: a session slot is taken for each generation (NULL: none) */
    /* out */
    double *itl;            /* samples (s) */
    int n_itl, cap_itl;
    double ttft_sum;
    int ttft_n;
    double last_t;
    long tokens, rounds, drafted, accepted, pro_attempts, pro_hits;
    long early_frames, early_agreed, early_kept, early_ignored;
    float *leads;           /* EARLY lead times (ms) */
    int n_leads, cap_leads;
    int64_t bytes;
    double draft_s;
    int errors;
    char err[sizeof(((es_err *)0)->msg) + 16];
} bs_client;

/* What one point measured: the server's counters before and after, the clients' results summed. */
typedef struct bs_outcome {
    es_server_stats s0, s1; /* when the clients started and when the last one ended */
    double wall_s, cpu_s;   /* the clients' wall time; the server's compute CPU time in it */
    int dev_sessions;       /* what device_only admits at once */
    long tokens, rounds, drafted, accepted, pro_attempts, pro_hits;
    long early_frames, early_agreed, early_kept, early_ignored;
    int64_t bytes;
    double draft_s, ttft_sum;
    int ttft_n, errors;
    const char *first_err; /* the first failing client's message (points into its bs_client) */
    double *itl;           /* every client's ITL samples (s) */
    int n_itl;
    double *leads;         /* every client's EARLY lead times (ms) */
    int n_leads;
} bs_outcome;

static void on_tokens(void *ud, const int32_t *toks, int n, double t_s) {
    (void)toks;
    bs_client *c = ud;
    if (n <= 0) return;
    if (c->last_t < 0) { /* first tokens of this generation: time to first token */
        c->ttft_sum += t_s;
        c->ttft_n++;
    } else {
        const double per = (t_s - c->last_t) / n;
        for (int i = 0; i < n; i++) {
            if (c->n_itl == c->cap_itl) {
                int cap = c->cap_itl ? c->cap_itl * 2 : 256;
                double *p = realloc(c->itl, (size_t)cap * sizeof *p);
                if (!p) return;
                c->itl = p;
                c->cap_itl = cap;
            }
            c->itl[c->n_itl++] = per;
        }
    }
    c->last_t = t_s;
}

static void *client_main(void *ud) {
    bs_client *c = ud;
    const bs_opts *o = c->o;
    if (o->pin) pthread_setaffinity_np(pthread_self(), sizeof o->edge_cpus, &o->edge_cpus);
    es_edge_params ep = es_edge_default_params();
    ep.host = "127.0.0.1";
    ep.port = c->port;
    const bool has_draft = IS_EDGE_MODE(c->mode);
    ep.draft = has_draft ? c->draft : NULL;
    ep.mode = c->mode == MODE_AR ? ES_MODE_AR : c->mode == MODE_SERVER_SPEC ? ES_MODE_SERVER_SPEC : ES_MODE_EDGE;
    ep.rule = es_accept_rule_parse(o->accept);
    ep.sampling.temperature = (float)o->temp;
    ep.sampling.top_k = 0;
    ep.sampling.top_p = 1.0f;
    ep.sampling.min_p = 0.0f;
    ep.sampling.repeat_penalty = 1.0f;
    ep.draft_params.mode = !strcmp(o->spec, "tree") ? ES_DRAFT_TREE : ES_DRAFT_CHAIN;
    ep.draft_params.k_max = o->draft_max;
    ep.draft_params.tree_budget = o->tree_budget;
    ep.draft_params.tree_depth = o->tree_depth;
    ep.draft_params.tree_width = o->tree_width;
    ep.draft_params.sample = ep.rule == ES_ACCEPT_REJECTION;
    ep.proactive = c->mode == MODE_EDGE_PROACTIVE || c->mode == MODE_EDGE_EARLY;
    ep.early_exit = c->mode == MODE_EDGE_EARLY;
    ep.early_follow = o->early_follow;
    ep.n_threads = 1;
    ep.emulate_rtt_ms = o->rtt_ms;
    ep.emulate_bandwidth_kbps = o->bandwidth_kbps;
    es_err err = {{0}};
    es_edge *e = NULL;
    if (es_edge_connect(&ep, &e, &err) != ES_OK) {
        snprintf(c->err, sizeof c->err, "%s", err.msg);
        c->errors++;
        return NULL;
    }
    int32_t *out = malloc((size_t)o->n_gen * sizeof *out);
    for (int k = 0; k < o->prompts_per_client && out; k++) {
        const int pi = (c->id * o->prompts_per_client + k) % c->prompts->count;
        const cli_prompt *q = &c->prompts->at[pi];
        ep.sampling.seed = o->seed + (uint64_t)pi;
        es_edge_stats st;
        c->last_t = -1;
        const int32_t stop[1] = {c->eos};
        if (c->gate) /* queued until a session's KV fits the device (a finished one gives its slot back) */
            while (sem_wait(c->gate) != 0) {}
        es_status s = es_edge_generate(e, q->tok, q->n_tok, o->n_gen, stop, c->eos >= 0 ? 1 : 0, out, &st, on_tokens, c, &err);
        if (c->gate) sem_post(c->gate);
        if (s != ES_OK) {
            snprintf(c->err, sizeof c->err, "%s", err.msg);
            c->errors++;
            continue;
        }
        c->tokens += st.n_generated;
        c->rounds += st.rounds;
        c->drafted += st.drafted;
        c->accepted += st.accepted;
        c->pro_attempts += st.proactive_attempts;
        c->pro_hits += st.proactive_hits;
        c->early_frames += st.early_frames;
        c->early_agreed += st.early_agreed;
        c->early_kept += st.early_kept;
        c->early_ignored += st.early_ignored;
        if (c->n_leads + st.n_early_lead > c->cap_leads) {
            const int cap = (c->n_leads + st.n_early_lead) * 2;
            float *p = realloc(c->leads, (size_t)cap * sizeof *p);
            if (p) {
                c->leads = p;
                c->cap_leads = cap;
            }
        }
        for (int i = 0; i < st.n_early_lead && c->n_leads < c->cap_leads; i++) c->leads[c->n_leads++] = st.early_lead_ms[i];
        c->bytes += st.bytes_sent + st.bytes_received;
        c->draft_s += st.draft_seconds;
    }
    free(out);
    es_edge_free(e);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double *v, int n, double q) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)ceil(q * n) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i];
}

/* How many sessions device_only admits at once: as many as their whole KV (longest prompt + n_gen,
 * in blocks of 16 tokens) fits in --device-kv-memory; at least one. */
static int device_sessions(const bs_opts *o, const es_model *target, const cli_prompts *prompts) {
    int max_prompt = 1;
    for (int i = 0; i < prompts->count; i++) max_prompt = prompts->at[i].n_tok > max_prompt ? prompts->at[i].n_tok : max_prompt;
    const int64_t per_block = 16 * es_ctx_kv_bytes_per_token(target, o->kv_type);
    const int64_t per_sess = (int64_t)((max_prompt + o->n_gen + 15) / 16 + 1) * per_block;
    return per_sess > 0 && o->device_kv_memory / per_sess > 0 ? (int)(o->device_kv_memory / per_sess) : 1;
}

/* The server of one point: on loopback, any free port, its scheduler set up for the point's mode,
 * policy and KV layout. */
static es_server_params point_server_params(const bs_opts *o, const bs_point *pt, const bs_models *ms) {
    es_server_params sp = es_server_default_params();
    sp.host = "127.0.0.1";
    sp.port = 0;
    sp.target = ms->target;
    sp.target_tok = es_model_tokenizer(ms->target);
    sp.sched.n_threads = o->threads;
    sp.sched.max_sessions = pt->n_clients + 4;
    if (o->max_batch_tokens > 0) sp.sched.max_batch_tokens = o->max_batch_tokens;
    sp.sched.batch_window_ms = o->batch_window_ms;
    sp.sched.policy = pt->policy;
    sp.sched.group_trial = o->group_trial;
    sp.sched.kv_type = o->kv_type;
    sp.sched.backend = o->backend;
    sp.sched.device = o->device;
    if (pt->kv == KV_HYBRID) sp.sched.device_kv_memory_bytes = o->device_kv_memory;
    if (pt->kv == KV_DEVICE_ONLY) sp.sched.kv_memory_bytes = o->device_kv_memory;
    if (o->knee_tokens) sp.sched.knee_tokens = o->knee_tokens;
    if (pt->mode == MODE_EDGE_EARLY) {
        memcpy(sp.sched.exit_layers, o->exit_layers, sizeof o->exit_layers);
        sp.sched.n_exit_layers = o->n_exit_layers;
        sp.sched.exit_file = o->exit_file;
    }
    if (pt->mode == MODE_SERVER_SPEC) {
        sp.sched.draft = ms->server_draft;
        sp.sched.draft_params = es_drafter_default_params();
        sp.sched.draft_params.mode = !strcmp(o->spec, "tree") ? ES_DRAFT_TREE : ES_DRAFT_CHAIN;
        sp.sched.draft_params.k_max = o->draft_max;
        sp.sched.draft_params.tree_budget = o->tree_budget;
        sp.sched.draft_params.tree_depth = o->tree_depth;
        sp.sched.draft_params.tree_width = o->tree_width;
        sp.sched.draft_params.sample = !strcmp(o->accept, "rejection");
    }
    return sp;
}

/* Starts the server on --server-cpus when pinning. */
static es_status start_server(const bs_opts *o, const es_server_params *sp, es_server **srv, es_err *err) {
    /* the server's threads (event loop, compute, pool) are created here and inherit this affinity */
    cpu_set_t saved;
    const bool pinned = o->pin && pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0 &&
                        pthread_setaffinity_np(pthread_self(), sizeof o->server_cpus, &o->server_cpus) == 0;
    const es_status sst = es_server_start(sp, srv, err);
    if (pinned) pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
    return sst;
}

/* Runs n client threads, cl[i] a copy of *job with id i, to the end. Returns how many ran: the first
 * thread that cannot be created ends the start-up. */
static int run_clients(const bs_client *job, int n, bs_client *cl) {
    pthread_t *th = calloc((size_t)n, sizeof *th);
    int started = 0;
    for (int i = 0; cl && th && i < n; i++) {
        cl[i] = *job;
        cl[i].id = i;
        if (pthread_create(&th[i], NULL, client_main, &cl[i]) != 0) break;
        started++;
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    free(th);
    return started;
}

/* The clients' results summed into *oc, their ITL samples and EARLY lead times gathered (oc->itl,
 * oc->leads: the caller frees them). oc->s0 and oc->s1 must be set: server-spec's rounds are the
 * server's. */
static void sum_clients(const bs_client *cl, int started, int mode, bs_outcome *oc) {
    for (int i = 0; i < started; i++) {
        oc->tokens += cl[i].tokens;
        oc->rounds += cl[i].rounds;
        oc->drafted += cl[i].drafted;
        oc->accepted += cl[i].accepted;
        oc->pro_attempts += cl[i].pro_attempts;
        oc->pro_hits += cl[i].pro_hits;
        oc->early_frames += cl[i].early_frames;
        oc->early_agreed += cl[i].early_agreed;
        oc->early_kept += cl[i].early_kept;
        oc->early_ignored += cl[i].early_ignored;
        oc->n_leads += cl[i].n_leads;
        oc->bytes += cl[i].bytes;
        oc->draft_s += cl[i].draft_s;
        oc->ttft_sum += cl[i].ttft_sum;
        oc->ttft_n += cl[i].ttft_n;
        oc->errors += cl[i].errors;
        oc->n_itl += cl[i].n_itl;
        if (cl[i].errors && !oc->first_err) oc->first_err = cl[i].err;
    }
    if (mode == MODE_SERVER_SPEC) { /* the server drafted: its own counters */
        oc->rounds = (long)(oc->s1.sched.rounds - oc->s0.sched.rounds);
        oc->drafted = (long)(oc->s1.sched.drafted - oc->s0.sched.drafted);
        oc->accepted = (long)(oc->s1.sched.accepted - oc->s0.sched.accepted);
    }
    oc->itl = malloc((size_t)(oc->n_itl > 0 ? oc->n_itl : 1) * sizeof *oc->itl);
    if (!oc->itl) oc->n_itl = 0; /* (out of memory: the point reports no ITL rather than reading NULL) */
    int k = 0;
    for (int i = 0; i < started && oc->itl; i++) {
        memcpy(oc->itl + k, cl[i].itl, (size_t)cl[i].n_itl * sizeof *oc->itl);
        k += cl[i].n_itl;
    }
    oc->leads = malloc((size_t)(oc->n_leads > 0 ? oc->n_leads : 1) * sizeof *oc->leads);
    int nl = 0;
    for (int i = 0; i < started && oc->leads; i++)
        for (int j = 0; j < cl[i].n_leads; j++) oc->leads[nl++] = cl[i].leads[j];
    oc->n_leads = nl;
}

/* The server's side of a point: how busy it was, how it batched, what a token cost. */
static void add_server_load(cJSON *r, const bs_opts *o, const bs_outcome *oc) {
    const es_sched_stats *k0 = &oc->s0.sched, *k1 = &oc->s1.sched;
    const double busy = k1->busy_seconds - k0->busy_seconds;
    const double idle = k1->idle_seconds - k0->idle_seconds;
    const int64_t steps = k1->steps - k0->steps;
    const int64_t rows = k1->batch_rows - k0->batch_rows;
    const double server_cost = o->server_cost_h / 3600.0 * (oc->cpu_s / o->threads);
    const double edge_cost = o->edge_cost_h / 3600.0 * oc->draft_s;
    cJSON_AddNumberToObject(r, "bytes_per_token", oc->tokens ? (double)oc->bytes / oc->tokens : 0);
    cJSON_AddNumberToObject(r, "server_idle_fraction", busy + idle > 0 ? idle / (busy + idle) : 0);
    cJSON_AddNumberToObject(r, "server_busy_fraction", busy + idle > 0 ? busy / (busy + idle) : 0);
    const int64_t psess = k1->pass_sessions - k0->pass_sessions;
    cJSON_AddNumberToObject(r, "sessions_per_pass", steps ? (double)psess / (double)steps : 0);
    cJSON_AddNumberToObject(r, "rows_per_pass", steps ? (double)rows / (double)steps : 0);
    cJSON_AddNumberToObject(r, "groups", steps ? (double)(k1->groups_sum - k0->groups_sum) / (double)steps : 0);
    cJSON_AddNumberToObject(r, "edge_round_trip_ms", 1e3 * k1->round_trip_s);
    cJSON *gt = cJSON_AddObjectToObject(r, "group_trial"); /* the pipeline's measured check, at the point's end */
    if (gt) {
        cJSON_AddNumberToObject(gt, "model_groups", k1->trial_model_groups);
        cJSON_AddNumberToObject(gt, "one_group_tokens_per_s", k1->trial_rate_one);
        cJSON_AddNumberToObject(gt, "split_tokens_per_s", k1->trial_rate_split);
        cJSON_AddNumberToObject(gt, "epochs", (double)(k1->trial_epochs - k0->trial_epochs));
    }
    cJSON_AddNumberToObject(r, "server_steps", (double)steps);
    cJSON_AddNumberToObject(r, "mean_batch_rows", steps ? (double)rows / steps : 0);
    cJSON_AddNumberToObject(r, "max_batch_rows", k1->max_batch_rows);
    cJSON_AddNumberToObject(r, "knee_rows", k1->knee_rows);
    cJSON_AddNumberToObject(r, "pass_row_ratio", k1->pass_row_ratio);
    cJSON_AddNumberToObject(r, "edge_draft_s", oc->draft_s);
    cJSON_AddNumberToObject(r, "cost_per_1m_tokens_usd", oc->tokens ? (server_cost + edge_cost) / oc->tokens * 1e6 : 0);
}

/* The KV layout of a point; with two tiers, how the sessions and the passes used them. */
static void add_kv_layout(cJSON *r, const bs_opts *o, int kv, const bs_outcome *oc) {
    cJSON_AddStringToObject(r, "kv", k_kv_names[kv]);
    if (kv != KV_ONE) {
        cJSON_AddNumberToObject(r, "device_kv_memory", (double)o->device_kv_memory);
        cJSON_AddNumberToObject(r, "device_sessions", oc->dev_sessions); /* what device_only admits at once */
    }
    if (kv == KV_HYBRID) {
        const es_sched_stats *k0 = &oc->s0.sched, *k1 = &oc->s1.sched;
        cJSON_AddNumberToObject(r, "host_tier_sessions", (double)(k1->host_tier_sessions - k0->host_tier_sessions));
        cJSON *pl = cJSON_AddObjectToObject(r, "plans");
        cJSON_AddNumberToObject(pl, "device_only", (double)(k1->plans[0] - k0->plans[0]));
        cJSON_AddNumberToObject(pl, "asymmetric", (double)(k1->plans[1] - k0->plans[1]));
        cJSON_AddNumberToObject(pl, "async_overlap", (double)(k1->plans[2] - k0->plans[2]));
        cJSON_AddNumberToObject(r, "prediction_error_p50", k1->prediction_error_p50);
        cJSON_AddStringToObject(r, "apex_profile", k1->apex_profile == 2 ? "measured" : "preset");
    }
}

/* One point's JSON object (sorts oc->itl and oc->leads). */
static cJSON *point_json(const bs_opts *o, const bs_point *pt, bs_outcome *oc) {
    const double cpu = oc->cpu_s;
    const long tokens = oc->tokens, rounds = oc->rounds, pa = oc->pro_attempts;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "mode", k_mode_names[pt->mode]);
    cJSON_AddStringToObject(r, "sched", es_sched_policy_name(pt->policy));
    cJSON_AddNumberToObject(r, "clients", pt->n_clients);
    cJSON_AddNumberToObject(r, "tokens", (double)tokens);
    cJSON_AddNumberToObject(r, "wall_s", oc->wall_s);
    cJSON_AddNumberToObject(r, "server_compute_cpu_s", cpu);
    cJSON_AddNumberToObject(r, "tokens_per_server_compute_s", cpu > 0 ? tokens / cpu : 0);
    cJSON_AddNumberToObject(r, "tokens_per_s_wall", oc->wall_s > 0 ? tokens / oc->wall_s : 0);
    cJSON_AddNumberToObject(r, "itl_p50_ms", 1e3 * percentile(oc->itl, oc->n_itl, 0.50));
    cJSON_AddNumberToObject(r, "itl_p99_ms", 1e3 * percentile(oc->itl, oc->n_itl, 0.99));
    cJSON_AddNumberToObject(r, "ttft_ms", oc->ttft_n ? 1e3 * oc->ttft_sum / oc->ttft_n : 0);
    cJSON_AddNumberToObject(r, "acceptance_length", rounds ? 1.0 + (double)oc->accepted / rounds : 1.0);
    cJSON_AddNumberToObject(r, "rounds", (double)rounds);
    cJSON_AddNumberToObject(r, "drafted", (double)oc->drafted);
    cJSON_AddNumberToObject(r, "accepted", (double)oc->accepted);
    cJSON_AddNumberToObject(r, "proactive_attempts", (double)pa);
    cJSON_AddNumberToObject(r, "proactive_hit_ratio", pa ? (double)oc->pro_hits / pa : 0);
    cJSON *tr = cJSON_AddObjectToObject(r, "trees"); /* edge trees the server verified, by how they were drafted */
    for (int t = 0; tr && t < ES_TREE_ORIGINS; t++) cJSON_AddNumberToObject(tr, es_tree_origin_name(t), (double)(oc->s1.trees[t] - oc->s0.trees[t]));
    cJSON *ea = cJSON_AddObjectToObject(r, "early");
    cJSON_AddNumberToObject(ea, "frames", (double)oc->early_frames);
    cJSON_AddNumberToObject(ea, "agreed", (double)oc->early_agreed);
    cJSON_AddNumberToObject(ea, "kept", (double)oc->early_kept);
    cJSON_AddNumberToObject(ea, "ignored", (double)oc->early_ignored);
    cJSON_AddNumberToObject(ea, "lead_ms_p50", oc->n_leads > 0 ? percentile(oc->leads, oc->n_leads, 0.50) : 0);
    add_server_load(r, o, oc);
    cJSON_AddNumberToObject(r, "errors", oc->errors);
    if (oc->first_err) cJSON_AddStringToObject(r, "first_error", oc->first_err);
    add_kv_layout(r, o, pt->kv, oc);
    return r;
}

/* One (mode, clients) point: a fresh server, N client threads, results as a JSON object (NULL when
 * the server did not start). */
static cJSON *run_point(const bs_opts *o, const bs_point *pt, const bs_models *ms, const cli_prompts *prompts) {
    es_err err = {{0}};
    bs_outcome oc = {.dev_sessions = device_sessions(o, ms->target, prompts)};
    sem_t gate;
    const bool gated = pt->kv == KV_DEVICE_ONLY && sem_init(&gate, 0, (unsigned)oc.dev_sessions) == 0;
    const es_server_params sp = point_server_params(o, pt, ms);
    es_server *srv = NULL;
    if (start_server(o, &sp, &srv, &err) != ES_OK) {
        cli_error("bench", "server: %s", err.msg);
        if (gated) sem_destroy(&gate);
        return NULL;
    }
    es_server_get_stats(srv, &oc.s0);
    const bs_client job = {.mode = pt->mode, .o = o, .prompts = prompts, .draft = ms->draft, .port = es_server_port(srv),
                           .eos = es_tokenizer_eos(es_model_tokenizer(ms->target)), .gate = gated ? &gate : NULL};
    bs_client *cl = calloc((size_t)pt->n_clients, sizeof *cl);
    const double t0 = cli_now();
    const int started = run_clients(&job, pt->n_clients, cl);
    oc.wall_s = cli_now() - t0;
    es_server_get_stats(srv, &oc.s1);
    oc.cpu_s = oc.s1.sched.compute_cpu_seconds - oc.s0.sched.compute_cpu_seconds;
    es_server_free(srv);
    if (gated) sem_destroy(&gate);
    sum_clients(cl, started, pt->mode, &oc);
    cJSON *r = point_json(o, pt, &oc);
    for (int i = 0; i < started; i++) {
        free(cl[i].itl);
        free(cl[i].leads);
    }
    free(oc.itl);
    free(oc.leads);
    free(cl);
    return r;
}

static int parse_int_list(const char *s, int *out, int cap, int lo, int hi) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        long v;
        if (n == cap || !cli_parse_long(t, lo, hi, &v)) return -1;
        out[n++] = (int)v;
    }
    return n;
}

/* "0,2-3" -> a CPU set; -1 on a malformed list or a CPU this process may not run on. */
static int parse_cpu_list(const char *s, cpu_set_t *set) {
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) CPU_ZERO(&allowed);
    CPU_ZERO(set);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        char *dash = strchr(t, '-');
        long lo, hi;
        if (dash) *dash = 0;
        if (!cli_parse_long(t, 0, CPU_SETSIZE - 1, &lo)) return -1;
        hi = lo;
        if (dash && !cli_parse_long(dash + 1, lo, CPU_SETSIZE - 1, &hi)) return -1;
        for (long c = lo; c <= hi; c++) {
            if (!CPU_ISSET((int)c, &allowed)) return -1;
            CPU_SET((int)c, set);
            n++;
        }
    }
    return n > 0 ? 0 : -1;
}

static int parse_modes(const char *s, int *out) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        int m = -1;
        for (int i = 0; i < MODE_COUNT; i++)
            if (!strcmp(t, k_mode_names[i])) m = i;
        if (m < 0 || n == MODE_COUNT) return -1;
        out[n++] = m;
    }
    return n;
}

/* The rules between bench serve's options. Returns -1 to go on, else 2 after a usage error. */
static int bs_check(bs_opts *o) {
    if (!o->target_path) return cli_usage_error("bench", k_usage_serve, "-m TARGET is required");
    if (o->device_kv_memory > 0 && o->backend != ES_BACKEND_VULKAN)
        return cli_usage_error("bench", k_usage_serve, "--device-kv-memory needs --device vulkan (two KV tiers: device and host memory)");
    if (o->pinned && o->pinned != 3)
        return cli_usage_error("bench", k_usage_serve, "--server-cpus and --edge-cpus go together");
    o->pin = o->pinned == 3;
    if (!strcmp(o->accept, "greedy") && o->temp != 0)
        return cli_usage_error("bench", k_usage_serve, "--accept greedy needs --temp 0 (use match or rejection to sample)");
    for (int i = 0; i < o->n_modes; i++) {
        if (IS_EDGE_MODE(o->modes[i])) o->need_draft = true;
        if (o->modes[i] == MODE_SERVER_SPEC) o->need_server_draft = true;
    }
    if ((o->need_draft || o->need_server_draft) && !o->draft_path && !o->server_draft_path)
        return cli_usage_error("bench", k_usage_serve, "--draft DRAFT is required for the speculative modes");
    if (!o->server_draft_path) o->server_draft_path = o->draft_path;
    if (!o->draft_path) o->draft_path = o->server_draft_path;
    return -1;
}

/* The options that need code of their own (cli/opts.h handlers; dst: the bs_opts). */
static bool bs_exit_layers(const cli_arg *a) {
    bs_opts *o = a->dst;
    return cli_parse_layers(a->value, o->exit_layers, &o->n_exit_layers);
}
static bool bs_accept(const cli_arg *a) {
    if (es_accept_rule_parse(a->value) < 0 || !strcmp(a->value, "synthetic")) return false;
    ((bs_opts *)a->dst)->accept = a->value;
    return true;
}
static bool bs_modes(const cli_arg *a) {
    bs_opts *o = a->dst;
    return (o->n_modes = parse_modes(a->value, o->modes)) > 0;
}
static bool bs_clients(const cli_arg *a) {
    bs_opts *o = a->dst;
    return (o->n_clients = parse_int_list(a->value, o->clients, 16, 1, 4096)) > 0;
}
static bool bs_cpus(const cli_arg *a) {
    bs_opts *o = a->dst;
    const bool server = !strcmp(a->name, "--server-cpus");
    if (parse_cpu_list(a->value, server ? &o->server_cpus : &o->edge_cpus) != 0) return false;
    o->pinned |= server ? 1 : 2;
    return true;
}
static bool bs_sched(const cli_arg *a) {
    bs_opts *o = a->dst;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", a->value);
    o->n_scheds = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        const int pol = es_sched_policy_parse(t);
        if (pol < 0 || o->n_scheds == 2 || (o->n_scheds == 1 && o->scheds[0] == pol)) return false;
        o->scheds[o->n_scheds++] = pol;
    }
    return o->n_scheds > 0;
}
static bool bs_device(const cli_arg *a) {
    bs_opts *o = a->dst;
    return cli_parse_device(a->value, &o->backend, &o->device);
}

/* Reads argv (argv[1] == "serve") into *o with the defaults, then the rules between options.
 * Returns -1 to go on, else the exit code: 0 after --help, 2 for a usage error. */
static int bs_parse(int argc, char **argv, bs_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_gen = 64;
    o->prompts_per_client = 1;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = nc > 0 ? (int)nc : 1;
    o->kv_type = ES_KV_F16;
    o->draft_max = 8;
    o->tree_budget = 8;
    o->tree_depth = 8;
    o->tree_width = 4;
    o->rtt_ms = 14.0;
    o->batch_window_ms = 20;
    o->server_cost_h = 5.05;
    o->edge_cost_h = 0.35;
    o->accept = "greedy";
    o->spec = "chain";
    o->seed = 1;
    o->n_modes = parse_modes("ar,server-spec,edge,edge+proactive", o->modes);
    o->n_clients = parse_int_list("1,2,4", o->clients, 16, 1, 4096);
    o->scheds[0] = ES_SCHED_PIPELINE;
    o->n_scheds = 1;
    static const int follow_vals[] = {ES_EARLY_FOLLOW_ADAPTIVE, ES_EARLY_FOLLOW_ALWAYS};
    char must_budget[64], must_exits[96];
    snprintf(must_budget, sizeof must_budget, "must be in 1..%d", ES_SPEC_MAX_NODES);
    snprintf(must_exits, sizeof must_exits, "wants up to %d distinct layer numbers", ES_EXIT_MAX);
    const cli_opt t[] = {
        {.names = "-h|--help", .kind = CLI_STOP, .stop = 1},
        {.names = "--json", .kind = CLI_SET, .dst = &o->json},
        {.names = "-m|--model", .kind = CLI_STR, .dst = &o->target_path},
        {.names = "--draft|-d", .kind = CLI_STR, .dst = &o->draft_path},
        {.names = "--server-draft", .kind = CLI_STR, .dst = &o->server_draft_path},
        {.names = "--prompts", .kind = CLI_STR, .dst = &o->prompts_path},
        {.names = "--exit-file", .kind = CLI_STR, .dst = &o->exit_file},
        {.names = "--early-follow", .kind = CLI_CHOICE, .dst = &o->early_follow, .choices = "adaptive|always",
         .vals = follow_vals, .must = "must be adaptive or always"},
        {.names = "--exit-layers", .kind = CLI_FN, .dst = o, .fn = bs_exit_layers, .must = must_exits},
        {.names = "--accept", .kind = CLI_FN, .dst = o, .fn = bs_accept, .must = "must be greedy, match or rejection"},
        {.names = "--kv-type", .kind = CLI_FN, .dst = &o->kv_type, .fn = cli_opt_kv_type, .must = "must be f32, f16 or q8_0"},
        {.names = "--spec", .kind = CLI_STR, .dst = &o->spec, .choices = "chain|tree", .must = "must be chain or tree"},
        {.names = "--modes", .kind = CLI_FN, .dst = o, .fn = bs_modes,
         .must = "must be a comma list of ar, server-spec, edge, edge+proactive, edge+early"},
        {.names = "--clients", .kind = CLI_FN, .dst = o, .fn = bs_clients, .must = "must be a comma list of 1..16 client counts in 1..4096"},
        {.names = "--server-cpus|--edge-cpus", .kind = CLI_FN, .dst = o, .fn = bs_cpus,
         .must = "must list CPUs this process may use, e.g. 0,2-3"},
        {.names = "--sched", .kind = CLI_FN, .dst = o, .fn = bs_sched, .must = "takes pipeline, gather or both"},
        {.names = "--group-trial", .kind = CLI_SET, .dst = &o->group_trial},
        {.names = "--seed", .kind = CLI_U64, .dst = &o->seed, .must = "must be a non-negative integer"},
        {.names = "--device", .kind = CLI_FN, .dst = o, .fn = bs_device, .must = "must be cpu, vulkan or vulkan:N"},
        {.names = "--device-kv-memory", .kind = CLI_I64, .dst = &o->device_kv_memory, .lo = 1, .hi = (double)(1ull << 50),
         .must = "must be a size such as 268435456, 256M or 1G"},
        {.names = "--n-gen", .kind = CLI_INT, .dst = &o->n_gen, .lo = 1, .hi = 100000, .must = "must be in 1..100000"},
        {.names = "--prompts-per-client", .kind = CLI_INT, .dst = &o->prompts_per_client, .lo = 1, .hi = 10000,
         .must = "must be in 1..10000"},
        {.names = "-t|--threads", .kind = CLI_INT, .dst = &o->threads, .lo = 1, .hi = 512, .must = "must be in 1..512"},
        {.names = "--draft-max", .kind = CLI_INT, .dst = &o->draft_max, .lo = 1, .hi = 64, .must = "must be in 1..64"},
        {.names = "--tree-budget", .kind = CLI_INT, .dst = &o->tree_budget, .lo = 1, .hi = ES_SPEC_MAX_NODES, .must = must_budget},
        {.names = "--tree-depth", .kind = CLI_INT, .dst = &o->tree_depth, .lo = 1, .hi = 64, .must = "must be in 1..64"},
        {.names = "--tree-width", .kind = CLI_INT, .dst = &o->tree_width, .lo = 1, .hi = 64, .must = "must be in 1..64"},
        {.names = "--max-batch-tokens", .kind = CLI_INT, .dst = &o->max_batch_tokens, .lo = 1, .hi = 65536,
         .must = "must be in 1..65536"},
        {.names = "--rtt-ms", .kind = CLI_DOUBLE, .dst = &o->rtt_ms, .lo = 0, .hi = 60000, .must = "must be in 0..60000"},
        {.names = "--batch-window-ms", .kind = CLI_DOUBLE, .dst = &o->batch_window_ms, .lo = 0, .hi = 10000,
         .must = "must be in 0..10000"},
        {.names = "--knee-tokens", .kind = CLI_INT, .dst = &o->knee_tokens, .lo = -1, .hi = 65536, .must = "must be in -1..65536"},
        {.names = "--bandwidth-kbps", .kind = CLI_DOUBLE, .dst = &o->bandwidth_kbps, .lo = 0, .hi = 1e9, .must = "must be >= 0"},
        {.names = "--temp", .kind = CLI_DOUBLE, .dst = &o->temp, .lo = 0, .hi = 100, .must = "must be in 0..100"},
        {.names = "--server-cost-per-hour", .kind = CLI_DOUBLE, .dst = &o->server_cost_h, .lo = 0, .hi = 1e6,
         .must = "must be in 0..1000000"},
        {.names = "--edge-cost-per-hour", .kind = CLI_DOUBLE, .dst = &o->edge_cost_h, .lo = 0, .hi = 1e6,
         .must = "must be in 0..1000000"},
    };
    const int rc = cli_opts_parse("bench", k_usage_serve, t, sizeof t / sizeof t[0], argc - 1, argv + 1, NULL, NULL);
    if (rc == 1) {
        printf("usage: %s\n", k_usage_serve);
        return 0;
    }
    if (rc != 0) return rc;
    return bs_check(o);
}

/* Loads the target, in the file's layout under --device vulkan. Returns 0, else 1 after saying why. */
static int load_target(const bs_opts *o, bs_models *ms) {
    es_model_params mp = cli_model_params();
    if (o->backend == ES_BACKEND_VULKAN) {
        mp.no_repack = true; /* a device reads the file's layout */
        cli_keep_vulkan_driver(); /* (sanitized builds: lavapipe stays loaded between the points' servers) */
    }
    es_err err = {{0}};
    if (es_model_load(o->target_path, &mp, &ms->target, &err) != ES_OK) return cli_error("bench", "%s: %s", o->target_path, err.msg);
    return 0;
}

/* edge+early without --exit-layers: the exit file's layers, else the middle layer (zero-training).
 * Returns 0, else 1 after saying why. */
static int default_exit_layers(bs_opts *o, const es_model *target) {
    if (o->n_exit_layers) return 0;
    if (o->exit_file && (!cli_exit_layers_in(o->exit_file, o->exit_layers, &o->n_exit_layers) || !o->n_exit_layers))
        return cli_error("bench", "%s: no exit.<L>.weight tensors", o->exit_file);
    if (!o->n_exit_layers) {
        o->exit_layers[0] = es_model_n_layer(target) / 2 > 0 ? es_model_n_layer(target) / 2 : 1;
        o->n_exit_layers = 1;
    }
    return 0;
}

/* Loads the drafts the modes need (bs_check); a file named for both is loaded once. Returns 0, else 1
 * after saying why. */
static int load_drafts(const bs_opts *o, bs_models *ms) {
    es_model_params mp = cli_model_params();
    es_err err = {{0}};
    if (o->need_draft && es_model_load(o->draft_path, &mp, &ms->draft, &err) != ES_OK)
        return cli_error("bench", "%s: %s", o->draft_path, err.msg);
    if (o->need_server_draft) {
        if (o->need_draft && !strcmp(o->server_draft_path, o->draft_path)) ms->server_draft = ms->draft;
        else if (es_model_load(o->server_draft_path, &mp, &ms->server_draft, &err) != ES_OK)
            return cli_error("bench", "%s: %s", o->server_draft_path, err.msg);
    }
    return 0;
}

static void free_models(bs_models *ms) {
    if (ms->server_draft && ms->server_draft != ms->draft) es_model_free(ms->server_draft);
    es_model_free(ms->draft);
    es_model_free(ms->target);
}

/* The sweep's settings: the top of the JSON report. *rows: its "results" array, for the points. */
static cJSON *sweep_json(const bs_opts *o, cJSON **rows) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "target", o->target_path);
    if (o->need_draft) cJSON_AddStringToObject(root, "draft", o->draft_path);
    if (o->need_server_draft) cJSON_AddStringToObject(root, "server_draft", o->server_draft_path);
    cJSON_AddNumberToObject(root, "server_threads", o->threads);
    if (o->pin) {
        cJSON_AddNumberToObject(root, "server_cpus", CPU_COUNT(&o->server_cpus));
        cJSON_AddNumberToObject(root, "edge_cpus", CPU_COUNT(&o->edge_cpus));
    }
    cJSON_AddStringToObject(root, "kv_type", es_kv_type_name(o->kv_type));
    if (o->backend == ES_BACKEND_VULKAN) cJSON_AddNumberToObject(root, "vulkan_device", o->device);
    cJSON_AddStringToObject(root, "device", o->backend == ES_BACKEND_VULKAN ? "vulkan" : "cpu");
    if (o->device_kv_memory > 0) cJSON_AddNumberToObject(root, "device_kv_memory", (double)o->device_kv_memory);
    cJSON_AddNumberToObject(root, "n_gen", o->n_gen);
    cJSON_AddNumberToObject(root, "prompts_per_client", o->prompts_per_client);
    cJSON_AddNumberToObject(root, "rtt_ms", o->rtt_ms);
    for (int i = 0; i < o->n_modes; i++)
        if (o->modes[i] == MODE_EDGE_EARLY) { /* the exit heads edge+early ran with */
            cJSON *el = cJSON_AddArrayToObject(root, "exit_layers");
            for (int k = 0; el && k < o->n_exit_layers; k++) cJSON_AddItemToArray(el, cJSON_CreateNumber(o->exit_layers[k]));
            cJSON_AddStringToObject(root, "early_follow", o->early_follow == ES_EARLY_FOLLOW_ALWAYS ? "always" : "adaptive");
            if (o->exit_file) cJSON_AddStringToObject(root, "exit_file", o->exit_file);
            else cJSON_AddNullToObject(root, "exit_file");
        }
    cJSON_AddNumberToObject(root, "batch_window_ms", o->batch_window_ms);
    cJSON_AddBoolToObject(root, "group_trial", o->group_trial);
    cJSON *sj = cJSON_AddArrayToObject(root, "sched");
    for (int i = 0; sj && i < o->n_scheds; i++) cJSON_AddItemToArray(sj, cJSON_CreateString(es_sched_policy_name(o->scheds[i])));
    cJSON_AddNumberToObject(root, "knee_tokens", o->knee_tokens);
    cJSON_AddNumberToObject(root, "bandwidth_kbps", o->bandwidth_kbps);
    cJSON_AddNumberToObject(root, "temperature", o->temp);
    cJSON_AddStringToObject(root, "accept", o->accept);
    cJSON_AddStringToObject(root, "spec", o->spec);
    cJSON_AddNumberToObject(root, "server_cost_per_hour", o->server_cost_h);
    cJSON_AddNumberToObject(root, "edge_cost_per_hour", o->edge_cost_h);
    *rows = cJSON_AddArrayToObject(root, "results");
    return root;
}

/* A point's row of the table (unless --json) and its clients' errors on stderr. */
static void report_point(const bs_opts *o, const bs_point *pt, const cJSON *r) {
    const char *mode = k_mode_names[pt->mode], *pol = es_sched_policy_name(pt->policy);
#define NUM(k) cJSON_GetNumberValue(cJSON_GetObjectItem(r, k))
    if (!o->json)
        printf("%-15s %-8s %7d %8.0f %10.1f %9.1f %8.1f %8.1f %8.1f %7.2f %6.2f %8.0f %6.2f %6.2f %9.2f%s%s\n",
               mode, IS_EDGE_MODE(pt->mode) ? pol : "-", pt->n_clients, NUM("tokens"),
               NUM("tokens_per_server_compute_s"), NUM("tokens_per_s_wall"), NUM("itl_p50_ms"), NUM("itl_p99_ms"),
               NUM("ttft_ms"), NUM("acceptance_length"), NUM("proactive_hit_ratio"), NUM("bytes_per_token"),
               NUM("server_busy_fraction"), NUM("sessions_per_pass"), NUM("cost_per_1m_tokens_usd"), pt->kv != KV_ONE ? "  " : "",
               pt->kv != KV_ONE ? k_kv_names[pt->kv] : "");
    if (NUM("errors") > 0) {
        const cJSON *fe = cJSON_GetObjectItem(r, "first_error");
        fprintf(stderr, "bench serve: %s/%s/%d: %.0f client error(s): %s\n", mode, pol, pt->n_clients, NUM("errors"),
                fe ? cJSON_GetStringValue(fe) : "?");
    }
#undef NUM
    fflush(stdout);
}

/* Every point, each into `rows` and the table: client counts, then modes, then policies, then KV
 * layouts (two tiers, then device-only, under --device-kv-memory; else one). */
static void run_sweep(const bs_opts *o, const bs_models *ms, const cli_prompts *prompts, cJSON *rows) {
    const int kv_first = o->device_kv_memory > 0 ? KV_HYBRID : KV_ONE, kv_last = o->device_kv_memory > 0 ? KV_DEVICE_ONLY : KV_ONE;
    if (!o->json)
        printf("%-15s %-8s %7s %8s %10s %9s %8s %8s %8s %7s %6s %8s %6s %6s %9s\n", "mode", "sched", "clients", "tokens",
               "tok/cpu-s", "tok/s", "itl p50", "itl p99", "ttft ms", "acc.len", "hit", "B/token", "busy", "s/pass", "$/1M tok");
    for (int ci = 0; ci < o->n_clients; ci++)
        for (int mi = 0; mi < o->n_modes; mi++)
            for (int si = 0; si < o->n_scheds; si++) {
                if (si > 0 && !IS_EDGE_MODE(o->modes[mi])) continue; /* the policy only changes how edge sessions share passes */
                fprintf(stderr, "bench serve: %s (%s) with %d client(s)...\n", k_mode_names[o->modes[mi]],
                        es_sched_policy_name(o->scheds[si]), o->clients[ci]);
                for (int kv = kv_first; kv <= kv_last; kv++) {
                    if (kv != KV_ONE) fprintf(stderr, "bench serve: ... %s\n", k_kv_names[kv]);
                    const bs_point pt = {.mode = o->modes[mi], .policy = o->scheds[si], .kv = kv, .n_clients = o->clients[ci]};
                    cJSON *r = run_point(o, &pt, ms, prompts);
                    if (!r) continue;
                    cJSON_AddItemToArray(rows, r);
                    report_point(o, &pt, r);
                }
            }
}

int bench_serve(int argc, char **argv) {
    bs_opts o;
    const int prc = bs_parse(argc, argv, &o);
    if (prc >= 0) return prc;
    char pdefault[4096];
    if (!o.prompts_path) {
        snprintf(pdefault, sizeof pdefault, "%s/../prompts/stories.txt", cli_models_dir());
        o.prompts_path = pdefault;
    }
    bs_models ms = {0};
    if (load_target(&o, &ms) != 0) return 1;
    if (default_exit_layers(&o, ms.target) != 0 || load_drafts(&o, &ms) != 0) {
        free_models(&ms);
        return 1;
    }
    int max_clients = 0;
    for (int i = 0; i < o.n_clients; i++) max_clients = o.clients[i] > max_clients ? o.clients[i] : max_clients;
    cli_prompts prompts;
    es_err err = {{0}};
    int rc = 1;
    if (cli_prompts_read(o.prompts_path, max_clients * o.prompts_per_client, es_model_tokenizer(ms.target), &prompts, &err) != ES_OK) {
        cli_error("bench", "prompts: %s", err.msg);
    } else if (prompts.count == 0) {
        cli_error("bench", "prompts: no line of %s gives a token", o.prompts_path);
    } else {
        cJSON *rows = NULL, *root = sweep_json(&o, &rows);
        run_sweep(&o, &ms, &prompts, rows);
        if (o.json) {
            char *s = cJSON_PrintUnformatted(root);
            if (s) printf("%s\n", s);
            free(s);
        }
        cJSON_Delete(root);
        rc = 0;
    }
    cli_prompts_free(&prompts);
    free_models(&ms);
    return rc;
}
