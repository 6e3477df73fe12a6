/* test_sched.c — the verification server's compute core without a network: many sessions batched
 * into one forward pass give exactly the target-alone greedy output (AR, edge trees from local
 * drafters, server-spec), chunked prefill, KV pages returned on finish and on close, admission and
 * protocol errors, a session failing inside a batch without hurting the others, seeded sampling
 * reproducible, and one threaded run (es_sched_run on its own thread, sessions driven from another). */
#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgespec.h"
#include "sched/sched.h"
#include "specdec/spec.h"
#include "gguf/gguf.h"
#include "backend/vulkan/vk.h"
#include "engine/ctx.h"
#include "kernels/types.h"
#include "testutil.h"
#include "util/threadpool.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* tokens checked against the golden output per session (the golden file promises 64) */
#define NT 64
#define MAX_CL 16

typedef struct golden {
    int32_t prompt[64];
    int np;
    int32_t gen[300];
    int ng;
} golden;
static golden G[20];
static int n_golden;

static void load_golden(void) {
    size_t len;
    char *text = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), &len);
    CHECK(text != NULL);
    for (char *line = text ? strtok(text, "\n") : NULL; line && n_golden < 20; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        golden *g = &G[n_golden++];
        g->np = es_test_json_ints(cJSON_GetObjectItem(j, "prompt_ids"), g->prompt, 64);
        g->ng = es_test_json_ints(cJSON_GetObjectItem(j, "gen_ids"), g->gen, 300);
        cJSON_Delete(j);
    }
    free(text);
    CHECK(n_golden == 20);
}

/* ---- a test client: collects a session's events; edge clients draft locally and send trees ---- */

typedef struct client {
    uint64_t id;
    int mode, g;                 /* golden prompt index */
    int max_tokens;
    int32_t out[1024];
    int n_out, n_events;
    int stop, err_code, n_generated;
    bool done, error, closed;    /* closed: es_sched_close returned */
    int events_after_close;
    uint32_t next_round;
    int bad_rounds;
    int min_budget, max_budget;
    int no_draft_hints; /* ES_HINT_NO_DRAFT verdicts */
    bool obey_hint;     /* draft no more than the last hint, as an edge with adapt_to_server does */
    int hint;           /* the last verdict's suggested_budget */
    int redrafts;       /* hints that allow drafting again after ES_HINT_NO_DRAFT */
    /* edge */
    es_drafter *d;
    es_ctx *dctx;
    int dseq;
    es_spec_tree tree;
    int32_t root;
    bool want_tree;              /* threaded mode: a verdict arrived, the driver sends the next tree */
    /* early exits */
    bool early;                  /* asked for EARLY events */
    int n_early, early_agreed, early_bad;
    es_spec_verdict early_vd;
    uint32_t early_round;
} client;

typedef struct harness {
    es_sched *s;
    client cl[MAX_CL];
    int n_cl;
    bool threaded;               /* edge trees are sent by the driver thread, not from the callback */
    int max_tokens;              /* for the next open_client (0: NT) */
    bool early;                  /* the next open_client asks for early exits */
    pthread_mutex_t mu;
    pthread_cond_t cv;
} harness;

static client *find_client(harness *h, uint64_t id) {
    for (int i = 0; i < h->n_cl; i++)
        if (h->cl[i].id == id) return &h->cl[i];
    return NULL;
}

/* Drafts the client's next tree and hands it to the scheduler. */
static void send_tree(harness *h, client *c) {
    es_err err = {{0}};
    int max_nodes = c->max_tokens - c->n_out - 1;
    if (max_nodes < 0) max_nodes = 0;
    if (c->obey_hint && c->hint == ES_HINT_NO_DRAFT) max_nodes = 0;
    else if (c->obey_hint && c->hint > 0 && max_nodes > c->hint) max_nodes = c->hint;
    CHECK_OK(es_drafter_draft(c->d, c->root, max_nodes, &c->tree, &err), &err);
    CHECK_OK(es_sched_verify(h->s, c->id, c->next_round, &c->tree, &err), &err);
}

static void on_event(void *ud, const es_sched_event *ev) {
    harness *h = ud;
    if (h->threaded) pthread_mutex_lock(&h->mu);
    client *c = find_client(h, ev->session);
    CHECK(c != NULL);
    if (!c) goto out;
    if (c->closed) c->events_after_close++;
    c->n_events++;
    CHECK(!c->done && !c->error); /* nothing after DONE / ERROR */
    switch (ev->type) {
    case ES_EV_EARLY:
        /* before its round's verdict, once, only for sessions that asked */
        CHECK(c->early && c->mode == ES_MODE_EDGE);
        if (!c->early || ev->round != c->next_round || (c->n_early > 0 && c->early_round == ev->round)) c->early_bad++;
        CHECK(ev->verdict && ev->verdict->n_tokens == ev->verdict->n_accepted + 1 && ev->exit_layer > 0);
        if (ev->verdict) c->early_vd = *ev->verdict;
        c->early_round = ev->round;
        c->n_early++;
        break;
    case ES_EV_VERDICT: {
        CHECK(c->mode == ES_MODE_EDGE);
        if (ev->round != c->next_round) c->bad_rounds++;
        if (c->early && c->n_early > 0 && c->early_round == ev->round && ev->verdict &&
            c->early_vd.n_accepted == ev->verdict->n_accepted && c->early_vd.bonus == ev->verdict->bonus)
            c->early_agreed++;
        c->next_round++;
        CHECK(ev->verdict && ev->verdict->n_tokens == ev->verdict->n_accepted + 1 && ev->n_tokens == ev->verdict->n_tokens);
        CHECK(ev->suggested_budget >= 1);
        if (c->hint == ES_HINT_NO_DRAFT && ev->suggested_budget != ES_HINT_NO_DRAFT) c->redrafts++;
        c->hint = ev->suggested_budget;
        if (ev->suggested_budget == ES_HINT_NO_DRAFT) c->no_draft_hints++; /* saturated: send empty trees */
        else {
            if (ev->suggested_budget < c->min_budget || !c->min_budget) c->min_budget = ev->suggested_budget;
            if (ev->suggested_budget > c->max_budget) c->max_budget = ev->suggested_budget;
        }
        for (int k = 0; k < ev->n_tokens && c->n_out < 1024; k++) c->out[c->n_out++] = ev->tokens[k];
        c->stop = ev->stop;
        CHECK(ev->n_generated == c->n_out);
        if (ev->stop == ES_STOP_NONE) {
            es_err err = {{0}};
            CHECK_OK(es_drafter_accept(c->d, &c->tree, ev->verdict, &err), &err);
            c->root = ev->verdict->bonus;
            if (h->threaded) c->want_tree = true;
            else send_tree(h, c); /* from inside the callback: es_sched_verify must take it */
        }
        break;
    }
    case ES_EV_TOKENS:
        CHECK(c->mode != ES_MODE_EDGE);
        CHECK(ev->n_tokens >= 1);
        for (int k = 0; k < ev->n_tokens && c->n_out < 1024; k++) c->out[c->n_out++] = ev->tokens[k];
        c->stop = ev->stop;
        CHECK(ev->n_generated == c->n_out);
        break;
    case ES_EV_DONE:
        CHECK(ev->stop != ES_STOP_NONE && ev->stop == c->stop);
        c->n_generated = ev->n_generated;
        c->done = true;
        break;
    case ES_EV_ERROR:
        c->error = true;
        c->err_code = ev->code;
        CHECK(ev->msg && ev->msg[0]);
        break;
    default:
        CHECK_MSG(0, "unknown event type %d", ev->type);
    }
out:
    if (h->threaded) {
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
    }
}

static es_sched_session_params sess_params(uint64_t id, int mode, int rule, float temp, uint64_t seed, int max_tokens) {
    static const int32_t bos_stop[1] = {1}; /* the model ends a story with BOS, as the golden run does */
    es_sched_session_params sp;
    memset(&sp, 0, sizeof sp);
    sp.id = id;
    sp.mode = mode;
    sp.rule = rule;
    sp.sampling = es_sampler_default_params();
    sp.sampling.temperature = temp;
    sp.sampling.top_k = 0;
    sp.sampling.top_p = 1.0f;
    sp.sampling.min_p = 0.0f;
    sp.sampling.seed = seed;
    sp.max_tokens = max_tokens;
    sp.stop = bos_stop;
    sp.n_stop = 1;
    return sp;
}

/* Opens a session on golden prompt g; edge clients get a drafter on dctx and send round 0. */
static client *open_client(harness *h, int mode, int g, int rule, float temp, uint64_t seed, es_ctx *dctx,
                           const es_drafter_params *dp) {
    es_err err = {{0}};
    if (h->threaded) pthread_mutex_lock(&h->mu); /* the compute thread's callback reads the table */
    client *c = &h->cl[h->n_cl];
    memset(c, 0, sizeof *c);
    c->id = 1000 + (uint64_t)h->n_cl;
    c->mode = mode;
    c->g = g;
    c->max_tokens = h->max_tokens > 0 ? h->max_tokens : NT;
    c->dseq = -1;
    es_sched_session_params sp = sess_params(c->id, mode, rule, temp, seed, c->max_tokens);
    sp.early_exit = c->early = h->early;
    int granted = 0;
    h->n_cl++;
    if (mode == ES_MODE_EDGE) {
        CHECK_OK(es_seq_open(dctx, &c->dseq, &err), &err);
        c->dctx = dctx;
        CHECK_OK(es_drafter_init(dctx, c->dseq, dp, &c->d, &err), &err);
        CHECK_OK(es_drafter_prefill(c->d, G[g].prompt, G[g].np - 1, &err), &err);
        c->root = G[g].prompt[G[g].np - 1];
    }
    CHECK_OK(es_sched_open(h->s, &sp, G[g].prompt, G[g].np, &granted, &err), &err);
    CHECK(granted == c->max_tokens);
    if (mode == ES_MODE_EDGE) send_tree(h, c);
    if (h->threaded) pthread_mutex_unlock(&h->mu);
    return c;
}

static void free_clients(harness *h) {
    for (int i = 0; i < h->n_cl; i++) {
        es_drafter_free(h->cl[i].d);
        if (h->cl[i].dseq >= 0) es_seq_close(h->cl[i].dctx, h->cl[i].dseq);
    }
    h->n_cl = 0;
}

static bool all_ended(const harness *h) {
    for (int i = 0; i < h->n_cl; i++)
        if (!h->cl[i].done && !h->cl[i].error && !h->cl[i].closed) return false;
    return true;
}

/* Steps on this thread until every session ended. */
static void drive(harness *h) {
    es_err err = {{0}};
    for (int it = 0; it < 100000 && !all_ended(h); it++) {
        int r = es_sched_step(h->s, &err);
        CHECK_MSG(r >= 0, "step: %s", err.msg);
        if (r < 0) break;
    }
    CHECK(all_ended(h));
    CHECK(es_sched_step(h->s, &err) == 0); /* nothing left */
}

/* The client's output is the golden greedy output (first NT tokens, or up to its stop). */
static bool golden_ok(const client *c) {
    const golden *g = &G[c->g];
    int same = 0;
    while (same < c->n_out && same < g->ng && c->out[same] == g->gen[same]) same++;
    return same == c->n_out && c->n_out > 0;
}

static void check_golden(const harness *h, const char *what) {
    for (int i = 0; i < h->n_cl; i++) {
        const client *c = &h->cl[i];
        CHECK_MSG(c->done && !c->error, "%s: session %d (mode %d) did not finish", what, i, c->mode);
        CHECK_MSG(c->n_out == NT && c->stop == ES_STOP_LENGTH && c->n_generated == NT, "%s: session %d: %d tokens, stop %d", what,
                  i, c->n_out, c->stop);
        CHECK_MSG(golden_ok(c), "%s: session %d (mode %d, prompt %d) differs from the golden output", what, i, c->mode, c->g);
        CHECK(c->bad_rounds == 0);
    }
}

/* A scheduler with parameters p whose events go to the harness h (h->s; NULL on failure). */
static es_sched *init_sched(es_model *target, es_sched_params p, harness *h) {
    es_err err = {{0}};
    p.on_event = on_event;
    p.ud = h;
    h->s = NULL;
    CHECK_OK(es_sched_init(target, &p, &h->s, &err), &err);
    return h->s;
}

static es_sched *make_sched(es_model *target, const es_model *draft, harness *h, int max_sessions, int max_batch, int chunk,
                            int64_t kv_bytes) {
    es_sched_params p = es_sched_default_params();
    p.knee_tokens = 64; /* fixed, so the hint depends only on the session mix (the automatic knee is timing) */
    p.max_sessions = max_sessions;
    p.max_batch_tokens = max_batch;
    p.prefill_chunk = chunk;
    p.kv_memory_bytes = kv_bytes;
    p.draft = draft;
    return init_sched(target, p, h);
}

static es_ctx *make_dctx(es_model *m, int n_seq) {
    es_err err = {{0}};
    es_ctx_params p = es_ctx_default_params();
    p.n_seq_max = n_seq;
    p.n_batch_max = ES_SPEC_MAX_NODES + 1;
    es_ctx *c = NULL;
    CHECK_OK(es_ctx_init(m, &p, &c, &err), &err);
    return c;
}

static es_drafter_params draft_params(es_draft_mode mode) {
    es_drafter_params dp = es_drafter_default_params();
    dp.mode = mode;
    dp.k_max = 6;
    dp.tree_budget = 24;
    dp.tree_depth = 6;
    dp.tree_width = 3;
    return dp;
}

static void check_kv_empty(es_sched *s, const char *what) {
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    CHECK_MSG(st.kv_blocks_used == 0, "%s: %lld KV pages still used", what, (long long)st.kv_blocks_used);
    CHECK(st.sessions_active == 0);
}

/* (a) 8 AR greedy sessions batched together give the golden output. */
static void test_ar_batched(es_model *target) {
    harness h;
    memset(&h, 0, sizeof h);
    es_sched *s = make_sched(target, NULL, &h, 8, 512, 256, 0);
    if (!s) return;
    for (int i = 0; i < 8; i++) open_client(&h, ES_MODE_AR, i, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    drive(&h);
    check_golden(&h, "ar");
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    CHECK_MSG(st.max_batch_rows > 1, "largest batch %d", st.max_batch_rows);
    CHECK(st.tokens_generated == 8 * NT);
    CHECK(st.ar_rows == 8 * NT);
    CHECK(st.sessions_opened == 8 && st.sessions_failed == 0);
    CHECK(st.kv_bytes_per_block > 0 && st.kv_blocks_total > 0);
    CHECK(st.steps > 0 && st.steps <= NT + 2); /* all eight in every step */
    CHECK(st.compute_cpu_seconds > 0 && st.busy_seconds > 0);
    check_kv_empty(s, "ar");
    printf("ar: %lld steps, %lld rows, largest %d, cpu %.3f s\n", (long long)st.steps, (long long)st.batch_rows, st.max_batch_rows,
           st.compute_cpu_seconds);
    es_sched_free(s);
}

/* (b) edge sessions fed by local drafters (chain and tree, three drafts) plus AR sessions in the
 * same steps; (c) the same with a tiny batch and prefill chunk. */
static void test_edge_mixed(es_model *target, es_model *drafts[3], int max_batch, int chunk, const char *what) {
    harness h;
    memset(&h, 0, sizeof h);
    es_sched *s = make_sched(target, NULL, &h, 10, max_batch, chunk, 0);
    if (!s) return;
    es_ctx *dctx[3];
    for (int i = 0; i < 3; i++) dctx[i] = make_dctx(drafts[i], 2);
    int g = 0;
    for (int i = 0; i < 3; i++) {
        es_drafter_params chain = draft_params(ES_DRAFT_CHAIN), tree = draft_params(ES_DRAFT_TREE);
        if (max_batch < 32) { chain.k_max = 5; tree.tree_budget = 5; }
        open_client(&h, ES_MODE_EDGE, g++, ES_ACCEPT_GREEDY, 0.0f, 0, dctx[i], &chain);
        open_client(&h, ES_MODE_EDGE, g++, ES_ACCEPT_GREEDY, 0.0f, 0, dctx[i], &tree);
    }
    for (int i = 0; i < 2; i++) open_client(&h, ES_MODE_AR, g++, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    drive(&h);
    check_golden(&h, what);
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    CHECK(st.max_batch_rows <= max_batch);
    CHECK(st.max_batch_rows > 1);
    CHECK(st.rounds > 0 && st.accepted > 0 && st.drafted >= st.accepted);
    CHECK(st.prefill_rows > 0 && st.verify_rows > 0 && st.ar_rows > 0);
    CHECK(st.tokens_generated == 8 * NT);
    CHECK(st.prefill_rows + st.verify_rows + st.ar_rows == st.batch_rows);
    /* clients 0..3 draft with draft-mid and draft-small; the random draft's (4, 5) may be told to
       stop drafting for good on a full batch (each hint follows its own session's acceptance) */
    int lo = 1 << 30, hi = 0;
    for (int i = 0; i < 6; i++) {
        if (i < 4) CHECK_MSG(h.cl[i].min_budget >= 1, "%s: session %d was never told to draft", what, i);
        if (h.cl[i].max_budget == 0) continue;
        lo = h.cl[i].min_budget < lo ? h.cl[i].min_budget : lo;
        hi = h.cl[i].max_budget > hi ? h.cl[i].max_budget : hi;
    }
    CHECK(lo >= 1 && hi <= 64);
    CHECK(hi > lo); /* the hint grows as sessions leave */
    check_kv_empty(s, what);
    printf("%s: %lld steps, mean batch %.1f, largest %d, %lld rounds, acceptance %.2f, budget %d..%d\n", what, (long long)st.steps,
           (double)st.batch_rows / (double)(st.steps ? st.steps : 1), st.max_batch_rows, (long long)st.rounds,
           st.rounds ? 1.0 + (double)st.accepted / (double)st.rounds : 0.0, lo, hi);
    free_clients(&h);
    for (int i = 0; i < 3; i++) es_ctx_free(dctx[i]);
    es_sched_free(s);
}

/* The wait between steps reaches the hint (es_sched_best_budget's `wait`): with the profiled cost
 * curve (knee_tokens 0) and one edge whose next tree arrives 30 ms after each verdict, as over a
 * WAN, the server is idle most of the time and the hint lets the edge draft long, even on
 * stories260K, whose passes are so cheap that drafting saves it no compute. The wait reported in
 * the stats is the sleep, not the pass time. */
static void test_wait_hint(es_model *target, es_model *draft) {
    harness h;
    memset(&h, 0, sizeof h);
    es_err err = {{0}};
    es_sched_params p = es_sched_default_params();
    p.knee_tokens = 0; /* profiled curve: seconds, so the measured wait adds to it */
    p.max_sessions = 2;
    es_sched *s = init_sched(target, p, &h);
    if (!s) return;
    es_ctx *dctx = make_dctx(draft, 1);
    es_drafter_params chain = draft_params(ES_DRAFT_CHAIN);
    client *c = open_client(&h, ES_MODE_EDGE, 0, ES_ACCEPT_GREEDY, 0.0f, 0, dctx, &chain);
    const struct timespec rtt = {0, 30 * 1000 * 1000};
    for (int it = 0; it < 10000 && !all_ended(&h); it++) {
        nanosleep(&rtt, NULL);
        const int r = es_sched_step(s, &err);
        CHECK_MSG(r >= 0, "step: %s", err.msg);
        if (r < 0) break;
    }
    check_golden(&h, "wait hint");
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    /* the first verdict precedes any measured wait; every later one carries a long-draft hint */
    CHECK_MSG(c->no_draft_hints <= 1 && c->max_budget >= 4, "wait hint: %d 'no draft' hints, largest hint %d",
              c->no_draft_hints, c->max_budget);
    CHECK_MSG(st.step_wait_s > 0.02 && st.step_wait_s <= 0.5, "step wait %.4f s", st.step_wait_s);
    /* passes of 4+ rows measured the profile's per-row part against real ones (clamped to [0.25, 4]) */
    CHECK_MSG(st.pass_row_ratio >= 0.25 && st.pass_row_ratio <= 4 && st.pass_row_ratio != 1.0, "row ratio %g",
              st.pass_row_ratio);
    printf("wait hint: %lld rounds, acceptance %.2f, hints %d..%d, step wait %.1f ms\n", (long long)st.rounds,
           st.rounds ? 1.0 + (double)st.accepted / (double)st.rounds : 0.0, c->min_budget, c->max_budget, st.step_wait_s * 1e3);
    check_kv_empty(s, "wait hint");
    free_clients(&h);
    es_ctx_free(dctx);
    es_sched_free(s);
}

/* Each edge's hint follows its own draft's acceptance (SLED: every edge brings its own draft). On a
 * small knee (4 rows), a good draft (the int8 copy of the target) and a random one share the
 * server, both obeying their hints: the good one is never told to stop drafting and gets long
 * trees; the random one is told to stop, and, since a session told not to draft is measured again
 * later rather than held there by an estimate nothing updates, is allowed to draft again. */
static void test_per_session_hint(es_model *target, es_model *good, es_model *bad) {
    harness h;
    memset(&h, 0, sizeof h);
    es_sched_params p = es_sched_default_params();
    p.knee_tokens = 4;
    p.max_sessions = 4;
    es_sched *s = init_sched(target, p, &h);
    if (!s) return;
    es_ctx *gctx = make_dctx(good, 1), *bctx = make_dctx(bad, 1);
    es_drafter_params chain = draft_params(ES_DRAFT_CHAIN);
    chain.k_max = 16;
    h.max_tokens = NT;
    client *g = open_client(&h, ES_MODE_EDGE, 0, ES_ACCEPT_GREEDY, 0.0f, 0, gctx, &chain);
    client *b = open_client(&h, ES_MODE_EDGE, 1, ES_ACCEPT_GREEDY, 0.0f, 0, bctx, &chain);
    g->obey_hint = b->obey_hint = true;
    drive(&h);
    check_golden(&h, "per-session hint");
    CHECK_MSG(g->no_draft_hints == 0 && g->max_budget >= 4, "good draft: %d 'no draft' hints, largest hint %d", g->no_draft_hints,
              g->max_budget);
    CHECK_MSG(b->no_draft_hints > 0, "random draft: never told to stop drafting (hints %d..%d)", b->min_budget, b->max_budget);
    CHECK_MSG(b->redrafts > 0, "random draft: %d 'no draft' hints and never allowed to draft again", b->no_draft_hints);
    printf("per-session hint: good draft hints %d..%d; random draft %d 'no draft' hints, %d returns to drafting\n", g->min_budget,
           g->max_budget, b->no_draft_hints, b->redrafts);
    check_kv_empty(s, "per-session hint");
    free_clients(&h);
    es_ctx_free(gctx);
    es_ctx_free(bctx);
    es_sched_free(s);
}

/* The pipeline's structure, stepped on this thread (every tree is back as soon as its verdict is
 * out, so each step could take every edge): with `gather` every step verifies all four edges
 * together; with `pipeline` they form two groups of two served in turn — each step verifies one
 * group, the next step the other — and the outputs are the golden ones either way. */
static void test_pipeline_groups(es_model *target, es_model *draft, int policy) {
    const char *what = es_sched_policy_name(policy);
    harness h;
    memset(&h, 0, sizeof h);
    es_sched_params p = es_sched_default_params();
    p.knee_tokens = 64;
    p.max_sessions = 4;
    p.policy = policy;
    p.group_trial = false; /* the structure the cycle model asks for, not the measured check's choice */
    es_sched *s = init_sched(target, p, &h);
    if (!s) return;
    es_ctx *dctx = make_dctx(draft, 4);
    es_drafter_params chain = draft_params(ES_DRAFT_CHAIN);
    for (int i = 0; i < 4; i++) open_client(&h, ES_MODE_EDGE, i, ES_ACCEPT_GREEDY, 0.0f, 0, dctx, &chain);
    es_err err = {{0}};
    int prev[4] = {0}, full_steps = 0, bad_size = 0, not_alternating = 0;
    bool last_set[4] = {false};
    for (int it = 0; it < 10000 && !all_ended(&h); it++) {
        const int r = es_sched_step(s, &err);
        CHECK_MSG(r >= 0, "step: %s", err.msg);
        if (r < 0) break;
        int n_live = 0, n_served = 0;
        bool set[4] = {false};
        for (int i = 0; i < 4; i++) {
            const client *c = &h.cl[i];
            set[i] = c->next_round != (uint32_t)prev[i];
            n_served += set[i];
            prev[i] = (int)c->next_round;
            n_live += !c->done || set[i]; /* live through this step */
        }
        if (n_live < 4 || n_served == 0) continue; /* prefill, or a session already gone */
        full_steps++;
        if (n_served != (policy == ES_SCHED_PIPELINE ? 2 : 4)) bad_size++;
        if (policy == ES_SCHED_PIPELINE && full_steps > 1)
            for (int i = 0; i < 4; i++)
                if (set[i] == last_set[i]) not_alternating++; /* each session every other step */
        memcpy(last_set, set, sizeof set);
    }
    check_golden(&h, what);
    CHECK(es_sched_step(s, &err) == 0); /* nothing left: the groups are dissolved */
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    CHECK_MSG(full_steps >= 8, "%s: %d steps with all four sessions live", what, full_steps);
    CHECK_MSG(bad_size == 0, "%s: %d of %d steps verified another number of edges", what, bad_size, full_steps);
    CHECK_MSG(not_alternating == 0, "%s: %d session-steps broke the alternation", what, not_alternating);
    CHECK(st.pass_sessions >= st.pass_edge_sessions && st.pass_edge_sessions > 0);
    CHECK(st.groups == 0); /* every session gone */
    printf("%s: %lld steps, %.2f edge sessions per pass, %lld rounds\n", what, (long long)st.steps,
           st.steps ? (double)st.pass_edge_sessions / (double)st.steps : 0.0, (long long)st.rounds);
    check_kv_empty(s, what);
    free_clients(&h);
    es_ctx_free(dctx);
    es_sched_free(s);
}

/* es_sched_groups_for: two groups without a curve in seconds (SpecEdge), one before a round is
 * measured; with both, the count with the
 * shortest cycle max(g t(R/g), t(R/g) + round), if it beats one group by 10 %; capped by max_groups
 * and by a third of the sessions. Cycles below for t(r) = 10 + r and R = 128. */
/* es_group_trial: one epoch (a warm-up round per session, then ES_SCHED_TRIAL_ROUNDS rounds per
 * session measured) of the model's split, then one of a single group; the better kept, one group on
 * a tie within the margin; the loser measured again every ES_SCHED_TRIAL_EXPLORE epochs; rates kept
 * per number of edge sessions (and over a pause), forgotten for another split. The clock and the
 * token count are made up. */
static void trial_epoch(es_group_trial *t, double *now, int64_t *tok, double rate) {
    const int n = t->n_edge;
    if (t->warm) { /* warm-up: its tokens and time are not counted */
        *now += 1;
        *tok += 1000;
        es_group_trial_observe(t, n, *now, *tok);
    }
    CHECK(!t->warm);
    for (int k = 0; k < ES_SCHED_TRIAL_ROUNDS * n - 1; k++) es_group_trial_observe(t, 1, *now, *tok);
    const int64_t e0 = t->epochs;
    *now += 2;
    *tok += (int64_t)(2 * rate);
    es_group_trial_observe(t, 1, *now, *tok);
    CHECK(t->epochs == e0 + 1);
}

static void test_group_trial(void) {
    static es_group_trial t; /* (large: not on the stack) */
    memset(&t, 0, sizeof t);
    double now = 0;
    int64_t tok = 0;
    CHECK(es_group_trial_pick(&t, 1, 4, now, tok) == 1 && !t.active); /* the model asks for one: no trial */
    CHECK(es_group_trial_pick(&t, 2, 4, now, tok) == 2 && t.active && t.warm); /* the split first */
    es_group_trial_observe(&t, 3, now, tok);
    CHECK(t.warm); /* 3 of 4 warm-up rounds */
    trial_epoch(&t, &now, &tok, 100);
    CHECK(t.by_n[4].rate[1] == 100 && t.arm == 0 && t.switched);
    t.switched = false;
    CHECK(es_group_trial_pick(&t, 2, 4, now, tok) == 1); /* then one group */
    trial_epoch(&t, &now, &tok, 150);
    CHECK(t.by_n[4].rate[0] == 150 && t.arm == 0 && !t.switched); /* one group is better: kept */
    CHECK(t.last_rate[0] == 150 && t.last_rate[1] == 100);
    for (int e = 0; e < ES_SCHED_TRIAL_EXPLORE - 2; e++) trial_epoch(&t, &now, &tok, 150);
    CHECK(t.arm == 0);
    trial_epoch(&t, &now, &tok, 150);
    CHECK(t.arm == 1 && t.switched); /* the loser measured again */
    t.switched = false;
    CHECK(es_group_trial_pick(&t, 2, 4, now, tok) == 2);
    trial_epoch(&t, &now, &tok, 200); /* better now: averaged to 150, a tie within the margin */
    CHECK(t.by_n[4].rate[1] == 150 && t.arm == 0);
    trial_epoch(&t, &now, &tok, 150);
    CHECK(t.arm == 0);
    /* a pause keeps the rates */
    CHECK(es_group_trial_pick(&t, 1, 4, now, tok) == 1 && !t.active);
    es_group_trial_observe(&t, 100, now + 5, tok + 5000); /* nothing measured while paused */
    CHECK(t.by_n[4].rate[0] == 150 && t.by_n[4].rate[1] == 150);
    CHECK(es_group_trial_pick(&t, 2, 4, now, tok) == 1 && t.warm); /* back: one group, as measured */
    /* another number of edge sessions has its own entry: measured from the split */
    CHECK(es_group_trial_pick(&t, 2, 5, now, tok) == 2 && t.switched && t.by_n[5].rate[1] == 0);
    t.switched = false;
    trial_epoch(&t, &now, &tok, 160);
    CHECK(es_group_trial_pick(&t, 2, 5, now, tok) == 1);
    trial_epoch(&t, &now, &tok, 150); /* the split wins by more than the margin: kept */
    CHECK(t.arm == 1 && es_group_trial_pick(&t, 2, 5, now, tok) == 2);
    /* four sessions again: their entry's choice at once, no exploring */
    CHECK(es_group_trial_pick(&t, 2, 4, now, tok) == 1 && t.by_n[4].rate[0] == 150);
    /* another split at a count forgets that count's rates */
    CHECK(es_group_trial_pick(&t, 3, 5, now, tok) == 3 && t.by_n[5].rate[1] == 0 && t.by_n[5].model_g == 3);
    /* counts past ES_SCHED_TRIAL_EDGES share the last entry */
    CHECK(es_group_trial_pick(&t, 2, 1000, now, tok) == 2 && t.by_n[ES_SCHED_TRIAL_EDGES].model_g == 2);
}

static void test_groups_for(void) {
    const es_pass_cost c = es_pass_cost_linear(10); /* "seconds": 11 for one row, 10 + r for r */
    CHECK(es_sched_groups_for(&c, 0, 0, 1, 4) == 0);
    CHECK(es_sched_groups_for(&c, 1, 8, 100, 4) == 1);
    CHECK(es_sched_groups_for(NULL, 8, 64, 0.02, 4) == 2);   /* no curve in seconds */
    CHECK(es_sched_groups_for(&c, 8, 64, 0, 4) == 1);        /* no round measured yet: gather */
    /* a short round: 148 with one group, 148 / 158 / 168 with 2 / 3 / 4 — splitting only adds passes */
    CHECK(es_sched_groups_for(&c, 16, 128, 10, 4) == 1);
    /* round 100: 238 | 174 | 158 | 168 — three groups keep the server busy */
    CHECK(es_sched_groups_for(&c, 16, 128, 100, 4) == 3);
    CHECK(es_sched_groups_for(&c, 16, 128, 100, 2) == 2);    /* max_groups: 174 still beats 238 */
    CHECK(es_sched_groups_for(&c, 16, 128, 100, 1) == 1);
    CHECK(es_sched_groups_for(&c, 8, 128, 100, 4) == 2);     /* 8 / 3 = 2 groups at most */
    /* round 60: 198 | 148 | 158 | 168: two */
    CHECK(es_sched_groups_for(&c, 16, 128, 60, 4) == 2);
    /* a round much longer than any pass: the server idles whatever the groups (1138 | 1074 | 1053 |
       1042), and splitting gains less than 10 %: one */
    CHECK(es_sched_groups_for(&c, 16, 128, 1000, 4) == 1);
    /* round 200: 338 | 274 | 253 | 242: four are best, three within 5 % of them */
    CHECK(es_sched_groups_for(&c, 16, 128, 200, 4) == 3);
    /* two sessions, 16 rows, round 1000: 1026 against 1018 — less than 10 %: one group */
    CHECK(es_sched_groups_for(&c, 2, 16, 1000, 4) == 1);
    CHECK(es_sched_groups_for(&c, 2, 16, 20, 4) == 2);       /* round 20: 46 against 38 */
    CHECK(es_sched_policy_parse("pipeline") == ES_SCHED_PIPELINE && es_sched_policy_parse("gather") == ES_SCHED_GATHER);
    CHECK(es_sched_policy_parse("Pipeline") == -1 && es_sched_policy_parse(NULL) == -1 && !es_sched_policy_name(7));
}

/* The prefix cache across sessions: a "second turn" whose prompt is the first session's prompt plus
 * 40 of its generated tokens adopts every whole page the first one computed (prompt and generated
 * rows alike) and prefills only the rest, and still continues exactly as the golden greedy output
 * does; with the cache off the same session prefills everything and gives the same tokens. */
static void test_prefix_turn(es_model *target, bool cache) {
    harness h;
    memset(&h, 0, sizeof h);
    es_sched_params p = es_sched_default_params();
    p.knee_tokens = 64;
    p.max_sessions = 2;
    p.prefix_cache = cache;
    es_sched *s = init_sched(target, p, &h);
    if (!s) return;
    const golden *g = &G[5];
    h.max_tokens = 64;
    open_client(&h, ES_MODE_AR, 5, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    drive(&h);
    CHECK(h.cl[0].done && h.cl[0].n_out == 64 && golden_ok(&h.cl[0]));
    es_sched_stats st0;
    es_sched_get_stats(s, &st0);
    /* second turn: prompt + 40 generated tokens, 16 more */
    int32_t prompt[512];
    const int np = g->np + 40;
    memcpy(prompt, g->prompt, (size_t)g->np * sizeof *prompt);
    memcpy(prompt + g->np, g->gen, 40 * sizeof *prompt);
    es_sched_session_params sp = sess_params(77, ES_MODE_AR, ES_ACCEPT_GREEDY, 0.0f, 0, 16);
    client *c = &h.cl[h.n_cl++];
    memset(c, 0, sizeof *c);
    c->id = 77;
    c->mode = ES_MODE_AR;
    c->max_tokens = 16;
    c->dseq = -1;
    int granted = 0;
    es_err err = {{0}};
    CHECK_OK(es_sched_open(s, &sp, prompt, np, &granted, &err), &err);
    drive(&h);
    CHECK(c->done && c->n_out == 16);
    CHECK_MSG(!memcmp(c->out, g->gen + 40, 16 * sizeof *c->out), "second turn (cache %s) differs from the golden output", cache ? "on" : "off");
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    /* the first session's KV held prompt + 63 generated tokens: its whole 16-token pages up to the
       second prompt's last token but one are adopted */
    const int64_t want = cache ? (int64_t)((np - 1) / 16) * 16 : 0;
    CHECK_MSG(st.prefix_hit_tokens == want, "cache %s: %lld prompt tokens adopted, want %lld", cache ? "on" : "off",
              (long long)st.prefix_hit_tokens, (long long)want);
    CHECK(st.prefill_rows - st0.prefill_rows == np - 1 - want); /* only the rest is prefilled */
    if (cache) CHECK(st.prefix_cached_blocks > 0);
    CHECK(st.kv_blocks_used == 0); /* cached pages nobody holds count as free */
    printf("prefix cache %s: second turn of %d prompt tokens prefilled %lld, adopted %lld\n", cache ? "on" : "off", np,
           (long long)(st.prefill_rows - st0.prefill_rows), (long long)st.prefix_hit_tokens);
    es_sched_free(s);
}

/* Fast open/close churn with no step in between (an idle compute thread): a closed session frees its
 * slot and pages at once, so 200 opens in a row on a 2-session scheduler all succeed (they found
 * every slot held by closed sessions after 4 before) and the prefilled ones' pages come back. */
static void churn_event(void *ud, const es_sched_event *ev) {
    (void)ev;
    (*(int *)ud)++;
}

static void test_churn(es_model *target) {
    es_sched_params p = es_sched_default_params();
    p.knee_tokens = 64;
    p.max_sessions = 2;
    int events = 0;
    p.on_event = churn_event;
    p.ud = &events;
    es_sched *s = NULL;
    es_err e0 = {{0}};
    CHECK_OK(es_sched_init(target, &p, &s, &e0), &e0);
    if (!s) return;
    int refused = 0;
    for (uint64_t id = 1000; id < 1200; id++) {
        es_sched_session_params sp = sess_params(id, ES_MODE_AR, 0, 0.0f, 0, 8);
        es_err err = {{0}};
        int granted = 0;
        const es_status st = es_sched_open(s, &sp, G[id % 20].prompt, G[id % 20].np, &granted, &err);
        if (st != ES_OK) {
            refused++;
            if (refused == 1) fprintf(stderr, "churn: open %llu refused: %s\n", (unsigned long long)id, err.msg);
            continue;
        }
        /* the first hundred close before any step; later every third gets a sequence and pages first */
        if (id >= 1100 && id % 3 == 0) CHECK(es_sched_step(s, &err) >= 0);
        es_sched_close(s, id);
    }
    CHECK_MSG(refused == 0, "churn: %d of 200 opens refused", refused);
    CHECK(events > 0); /* the stepped ones ran */
    check_kv_empty(s, "churn");
    es_sched_free(s);
}

/* (d) es_sched_close mid-generation: no events after it, pages back at the next step; (e) admission
 * and protocol errors leave the session (and others) working. */
static void test_admission_close(es_model *target, es_model *mid) {
    es_err err = {{0}};
    harness h;
    memset(&h, 0, sizeof h);
    es_sched *s = make_sched(target, NULL, &h, 3, 512, 256, 0);
    if (!s) return;
    es_ctx *dctx = make_dctx(mid, 2);
    es_drafter_params chain = draft_params(ES_DRAFT_CHAIN);
    client *e = open_client(&h, ES_MODE_EDGE, 3, ES_ACCEPT_GREEDY, 0.0f, 0, dctx, &chain);
    client *a = open_client(&h, ES_MODE_AR, 4, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    client *x = open_client(&h, ES_MODE_AR, 5, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    int granted = -1;
    es_sched_session_params sp = sess_params(77, ES_MODE_AR, 0, 0.0f, 0, 8);
    CHECK(es_sched_open(s, &sp, G[0].prompt, G[0].np, &granted, &err) == ES_ERR_BUSY); /* max_sessions + 1 */
    /* too long: 5 prompt tokens + 600 > 512 positions; the message names both numbers */
    sp.max_tokens = 600;
    sp.id = 78;
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    const int n_ctx_model = es_model_n_ctx_train(target);
    es_sched_close(s, x->id); /* free a slot: now the refusal must be about the length */
    x->closed = true;
    CHECK(es_sched_open(s, &sp, G[0].prompt, G[0].np, &granted, &err) == ES_ERR_RANGE);
    CHECK(granted == n_ctx_model - G[0].np);
    CHECK(strstr(err.msg, "600") != NULL);
    /* a duplicate id, bad values */
    sp = sess_params(a->id, ES_MODE_AR, 0, 0.0f, 0, 8);
    CHECK(es_sched_open(s, &sp, G[0].prompt, G[0].np, &granted, &err) == ES_ERR_INVALID_ARG);
    sp = sess_params(79, ES_MODE_SERVER_SPEC, 0, 0.0f, 0, 8);
    CHECK(es_sched_open(s, &sp, G[0].prompt, G[0].np, &granted, &err) == ES_ERR_UNSUPPORTED); /* no draft model */
    {   /* a stop token outside the vocabulary (validated here, once, for the wire and HTTP alike) */
        const int32_t bad_stop[1] = {99999};
        sp = sess_params(79, ES_MODE_AR, 0, 0.0f, 0, 8);
        sp.stop = bad_stop;
        sp.n_stop = 1;
        CHECK(es_sched_open(s, &sp, G[0].prompt, G[0].np, &granted, &err) == ES_ERR_INVALID_ARG && strstr(err.msg, "stop token"));
    }
    sp = sess_params(79, ES_MODE_EDGE, ES_ACCEPT_GREEDY, 0.7f, 0, 8);
    CHECK(es_sched_open(s, &sp, G[0].prompt, G[0].np, &granted, &err) == ES_ERR_INVALID_ARG); /* greedy with temperature */
    int32_t bad_prompt[2] = {1, 99999};
    sp = sess_params(79, ES_MODE_AR, 0, 0.0f, 0, 8);
    CHECK(es_sched_open(s, &sp, bad_prompt, 2, &granted, &err) == ES_ERR_INVALID_ARG);

    /* round 0 is queued (sent at open): a second tree now, wrong rounds, a bad tree, AR verify */
    es_spec_tree t = e->tree;
    CHECK(es_sched_verify(s, e->id, 1, &t, &err) == ES_ERR_PROTOCOL);
    CHECK(es_sched_verify(s, a->id, 0, &t, &err) == ES_ERR_PROTOCOL);
    CHECK(es_sched_verify(s, 4242, 0, &t, &err) == ES_ERR_INVALID_ARG);
    es_sched_step(s, &err); /* verdict 0 arrives; round 1 is sent from the callback */
    CHECK(e->next_round == 1 && e->n_events == 1);
    CHECK(es_sched_verify(s, e->id, 1, &t, &err) == ES_ERR_PROTOCOL); /* round 1 already queued */
    es_sched_step(s, &err);
    CHECK(e->next_round == 2);
    /* take the queued round-2 tree back out by stepping, then probe while it awaits round 3 */
    es_sched_step(s, &err);
    CHECK(e->next_round == 3);
    es_sched_step(s, &err); /* round 3 verified; round 4 queued by the callback */
    CHECK(es_sched_verify(s, e->id, 3, &t, &err) == ES_ERR_PROTOCOL); /* old round */
    CHECK(a->n_out == 4 && !a->done);
    /* the round-4 tree is queued; stepping applies it */
    drive(&h);
    CHECK(golden_ok(e) && e->done && e->n_out == NT);
    CHECK(golden_ok(a) && a->done && a->n_out == NT);
    CHECK(x->n_events == 0 && x->events_after_close == 0);
    check_kv_empty(s, "after close");

    /* bad trees on a session waiting for its first tree */
    sp = sess_params(90, ES_MODE_EDGE, ES_ACCEPT_GREEDY, 0.0f, 0, NT);
    CHECK_OK(es_sched_open(s, &sp, G[6].prompt, G[6].np, &granted, &err), &err);
    memset(&t, 0, sizeof t);
    t.n = 2;
    t.token[0] = 5; t.parent[0] = -1; t.depth[0] = 1;
    t.token[1] = 6; t.parent[1] = 1; t.depth[1] = 2; /* parent not earlier */
    CHECK(es_sched_verify(s, 90, 0, &t, &err) == ES_ERR_FORMAT);
    t.parent[1] = 0;
    t.token[1] = 100000; /* outside the vocabulary */
    CHECK(es_sched_verify(s, 90, 0, &t, &err) == ES_ERR_RANGE);
    t.token[1] = 6;
    t.n = 65; /* above max_tree_nodes */
    CHECK(es_sched_verify(s, 90, 0, &t, &err) == ES_ERR_RANGE);
    t.n = 2;
    CHECK(es_sched_verify(s, 90, 1, &t, &err) == ES_ERR_PROTOCOL); /* wrong round */
    CHECK_OK(es_sched_verify(s, 90, 0, &t, &err), &err);            /* the right one is taken */
    /* closed with its tree queued: no events, nothing left */
    es_sched_close(s, 90);
    es_sched_close(s, 90); /* twice: ignored */
    CHECK(es_sched_step(s, &err) == 0);
    check_kv_empty(s, "closed with a queued tree");
    /* closed mid-generation: no events after close, its pages back at the next step */
    client *y = open_client(&h, ES_MODE_AR, 7, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    for (int i = 0; i < 3; i++) es_sched_step(s, &err);
    CHECK(y->n_out == 3);
    es_sched_get_stats(s, &st);
    CHECK(st.kv_blocks_used > 0);
    es_sched_close(s, y->id);
    y->closed = true;
    CHECK(es_sched_step(s, &err) == 0);
    CHECK(y->n_out == 3 && y->events_after_close == 0);
    check_kv_empty(s, "closed mid-generation");

    /* KV admission: a budget of 4 pages refuses a prompt that needs 2 + margin when 2 are held */
    free_clients(&h);
    es_ctx_free(dctx);
    es_sched_free(s);
    memset(&h, 0, sizeof h);
    s = make_sched(target, NULL, &h, 4, 512, 256, 0);
    es_sched_get_stats(s, &st);
    const int64_t bpb = st.kv_bytes_per_block;
    es_sched_free(s);
    s = make_sched(target, NULL, &h, 4, 512, 256, 4 * bpb);
    es_sched_get_stats(s, &st);
    CHECK(st.kv_blocks_total == 4);
    sp = sess_params(1, ES_MODE_AR, 0, 0.0f, 0, 8);
    CHECK_OK(es_sched_open(s, &sp, G[8].prompt, G[8].np, &granted, &err), &err); /* 20 tokens: 2 pages + 1 */
    sp.id = 2;
    CHECK(es_sched_open(s, &sp, G[8].prompt, G[8].np, &granted, &err) == ES_ERR_BUSY);
    es_sched_get_stats(s, &st);
    CHECK(st.sessions_refused >= 1 && st.sessions_opened == 1);
    es_sched_free(s); /* frees an unfinished session */
}

/* (f) a session whose KV runs out inside a batch fails alone; the others finish correctly. */
static void test_kv_exhaustion(es_model *target) {
    harness h;
    memset(&h, 0, sizeof h);
    es_sched *s = make_sched(target, NULL, &h, 4, 512, 256, 0);
    if (!s) return;
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    const int64_t bpb = st.kv_bytes_per_block;
    es_sched_free(s);
    /* a budget below one page is refused, naming both sizes (the message is built before the
       half-made scheduler is freed: ASan saw it read after the free) */
    {
        es_sched_params p = es_sched_default_params();
        p.kv_memory_bytes = bpb - 1;
        es_sched *none = NULL;
        es_err err = {{0}};
        char want[64];
        snprintf(want, sizeof want, "(%lld bytes)", (long long)bpb);
        CHECK(es_sched_init(target, &p, &none, &err) == ES_ERR_INVALID_ARG && !none);
        CHECK_MSG(strstr(err.msg, "below one page") && strstr(err.msg, want), "got: %s", err.msg);
    }
    /* 3 sessions of ~5..11 + NT tokens need ~3 * 5 pages; give 9 */
    s = make_sched(target, NULL, &h, 4, 512, 256, 9 * bpb);
    for (int i = 0; i < 3; i++) open_client(&h, ES_MODE_AR, i, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    drive(&h);
    int failed = 0, finished = 0;
    for (int i = 0; i < h.n_cl; i++) {
        const client *c = &h.cl[i];
        CHECK(c->done != c->error);
        if (c->error) {
            failed++;
            CHECK(c->err_code == ES_ERR_FULL || c->err_code == ES_ERR_RANGE);
            CHECK(c->n_out < NT);
        } else {
            finished++;
            CHECK(c->n_out == NT);
        }
        CHECK(c->n_out == 0 || golden_ok(c)); /* what each got before failing is right too */
    }
    CHECK_MSG(failed >= 1 && finished >= 1, "%d failed, %d finished", failed, finished);
    es_sched_get_stats(s, &st);
    CHECK(st.sessions_failed == failed);
    check_kv_empty(s, "after exhaustion");
    es_sched_free(s);
}

/* (g) server-spec sessions (draft-mid, chain and tree) give the golden output; seeded sampling
 * (AR temperature 1, server-spec match and rejection) is reproducible for equal seeds. */
static void test_server_spec(es_model *target, es_model *mid) {
    for (int m = 0; m < 2; m++) {
        harness h;
        memset(&h, 0, sizeof h);
        es_sched_params p = es_sched_default_params();
        p.max_sessions = 8;
        p.draft = mid;
        p.draft_params = draft_params(m == 0 ? ES_DRAFT_CHAIN : ES_DRAFT_TREE);
        es_sched *s = init_sched(target, p, &h);
        if (!s) return;
        for (int i = 0; i < 3; i++) open_client(&h, ES_MODE_SERVER_SPEC, 10 + i, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
        open_client(&h, ES_MODE_AR, 13, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
        drive(&h);
        check_golden(&h, m == 0 ? "server-spec chain" : "server-spec tree");
        es_sched_stats st;
        es_sched_get_stats(s, &st);
        CHECK(st.rounds > 0 && st.accepted > 0 && st.draft_seconds > 0);
        CHECK(st.rounds < 3 * NT); /* speculation: fewer rounds than tokens */
        check_kv_empty(s, "server-spec");
        printf("server-spec %s: %lld steps, %lld rounds, acceptance %.2f\n", m == 0 ? "chain" : "tree", (long long)st.steps,
               (long long)st.rounds, st.rounds ? 1.0 + (double)st.accepted / (double)st.rounds : 0.0);

        /* sampled: pairs with equal seeds agree, a different seed differs */
        const int rules[3] = {ES_ACCEPT_MATCH, ES_ACCEPT_REJECTION, -1};
        memset(&h, 0, sizeof h);
        h.s = s;
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 2; k++) {
                const int mode = rules[r] < 0 ? ES_MODE_AR : ES_MODE_SERVER_SPEC;
                open_client(&h, mode, 0, rules[r] < 0 ? 0 : rules[r], 1.0f, 1234 + (uint64_t)r, NULL, NULL);
            }
        open_client(&h, ES_MODE_SERVER_SPEC, 0, ES_ACCEPT_REJECTION, 1.0f, 999, NULL, NULL);
        drive(&h);
        for (int r = 0; r < 3; r++) {
            const client *a = &h.cl[2 * r], *b = &h.cl[2 * r + 1];
            CHECK(a->done && b->done && a->n_out > 0);
            CHECK_MSG(a->n_out == b->n_out && memcmp(a->out, b->out, (size_t)a->n_out * sizeof(int32_t)) == 0,
                      "rule %d: equal seeds gave different outputs", rules[r]);
        }
        const client *a = &h.cl[2], *c = &h.cl[6];
        CHECK(!(a->n_out == c->n_out && memcmp(a->out, c->out, (size_t)a->n_out * sizeof(int32_t)) == 0));
        check_kv_empty(s, "sampled");
        es_sched_free(s);
    }
}

/* ---- threaded: es_sched_run on its own thread; sessions opened, fed and closed from this one ---- */

static void *run_thread(void *arg) {
    harness *h = arg;
    es_err err = {{0}};
    es_status st = es_sched_run(h->s, &err);
    CHECK_MSG(st == ES_OK, "run: %s", err.msg);
    return NULL;
}

static void test_threaded(es_model *target, es_model *mid) {
    es_err err = {{0}};
    harness *h = calloc(1, sizeof *h);
    h->threaded = true;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    es_sched_params p = es_sched_default_params();
    p.max_sessions = 8;
    p.n_threads = 2;
    p.batch_window_ms = 1;
    if (!init_sched(target, p, h)) { free(h); return; }
    pthread_t th;
    pthread_create(&th, NULL, run_thread, h);
    /* wait until it runs (however long the thread takes to start): es_sched_step must then refuse */
    const time_t t_run = time(NULL) + (time_t)ES_TEST_WAIT_CAP_S;
    while (es_sched_step(h->s, &err) >= 0 && time(NULL) < t_run) {
        struct timespec nap = {0, 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    CHECK(es_sched_step(h->s, &err) == -(int)ES_ERR_INVALID_ARG);
    es_ctx *dctx = make_dctx(mid, 3);
    es_drafter_params chain = draft_params(ES_DRAFT_CHAIN), tree = draft_params(ES_DRAFT_TREE);
    open_client(h, ES_MODE_EDGE, 14, ES_ACCEPT_GREEDY, 0.0f, 0, dctx, &chain);
    open_client(h, ES_MODE_EDGE, 15, ES_ACCEPT_GREEDY, 0.0f, 0, dctx, &tree);
    for (int i = 0; i < 3; i++) open_client(h, ES_MODE_AR, 16 + i, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    h->max_tokens = 200; /* long enough to be closed mid-generation even on a loaded machine */
    client *victim = open_client(h, ES_MODE_AR, 19, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
    h->max_tokens = 0;
    /* feed edge trees as verdicts come; close the victim after a few tokens */
    pthread_mutex_lock(&h->mu);
    const time_t t_end = time(NULL) + 120;
    while (!all_ended(h) && time(NULL) < t_end) {
        for (int i = 0; i < h->n_cl; i++) {
            client *c = &h->cl[i];
            if (c->want_tree) {
                c->want_tree = false;
                send_tree(h, c);
            }
        }
        if (!victim->closed && !victim->done && victim->n_out >= 5) {
            pthread_mutex_unlock(&h->mu); /* close waits out a delivery in progress, which takes h->mu */
            es_sched_close(h->s, victim->id);
            pthread_mutex_lock(&h->mu);
            victim->closed = true;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
        bool pending = false;
        for (int i = 0; i < h->n_cl; i++) pending |= h->cl[i].want_tree;
        if (!pending) pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    pthread_mutex_unlock(&h->mu);
    CHECK(all_ended(h));
    /* let the compute thread go idle, then stop it */
    struct timespec nap = {0, 30 * 1000 * 1000};
    nanosleep(&nap, NULL);
    es_sched_stop(h->s);
    pthread_join(th, NULL);
    CHECK(victim->events_after_close == 0);
    if (victim->done) printf("threaded: the victim finished before it could be closed (a very loaded machine?)\n");
    else CHECK(victim->closed && victim->n_out < 200);
    for (int i = 0; i < h->n_cl; i++) {
        const client *c = &h->cl[i];
        if (c == victim) { CHECK(golden_ok(c)); continue; }
        CHECK_MSG(c->done && c->n_out == NT && golden_ok(c), "threaded: session %d", i);
    }
    es_sched_stats st;
    es_sched_get_stats(h->s, &st);
    CHECK(st.max_batch_rows > 1);
    CHECK(st.idle_seconds > 0);
    CHECK(st.compute_cpu_seconds > 0);
    CHECK(es_sched_step(h->s, &err) == 0);
    check_kv_empty(h->s, "threaded");
    printf("threaded: %lld steps, busy %.3f s, idle %.3f s, cpu %.3f s\n", (long long)st.steps, st.busy_seconds, st.idle_seconds,
           st.compute_cpu_seconds);
    free_clients(h);
    es_ctx_free(dctx);
    es_sched_free(h->s);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Worker CPU accounting of the thread pool (what compute_cpu_seconds adds up). */
static void spin_task(void *ud, int ith, int nth) {
    volatile double x = 0;
    for (int i = 0; i < 3000000; i++) x += i * 1e-9;
    (void)ud; (void)ith; (void)nth;
}

static void test_pool_cpu(void) {
    es_err err = {{0}};
    es_threadpool *tp = NULL;
    CHECK_OK(es_threadpool_init(3, &tp, &err), &err);
    if (!tp) return;
    CHECK(es_threadpool_cpu_seconds(tp) < 0.05);
    for (int r = 0; r < 5; r++) es_threadpool_run(tp, spin_task, NULL);
    const double c = es_threadpool_cpu_seconds(tp);
    CHECK_MSG(c > 0.001, "workers used %g s", c);
    es_threadpool_free(tp);
    CHECK(es_threadpool_cpu_seconds(NULL) == 0);
}

/* The load-adaptive tree size: the best of every draft length under the cost curve plus the wait per
 * step (brute force), for linear curves and a measured-shaped one (flat, then linear); shrinking as
 * edges join (linear curves, no wait); growing with the wait; ES_HINT_NO_DRAFT only once drafting
 * does not pay by the margin. */
static void test_best_budget(void) {
    /* a curve shaped like this machine's profile: 8 rows 1.5x a decode pass, 16 2.2x, 32 3.6x, 64 7x */
    const es_pass_cost measured = {6, {1, 4, 8, 16, 32, 64}, {1.0, 1.2, 1.5, 2.2, 3.6, 7.0}};
    es_pass_cost curves[4] = {es_pass_cost_linear(4), es_pass_cost_linear(14), es_pass_cost_linear(64), measured};
    CHECK(fabs(es_pass_cost_at(&measured, 12) - 1.85) < 1e-9 && fabs(es_pass_cost_at(&measured, 128) - 13.8) < 1e-9 &&
          es_pass_cost_at(&measured, 0.5) == 1.0);
    const double ps[] = {0.05, 0.3, 0.6, 0.8, 0.95};
    const double waits[] = {0, 0.3, 3, 30}; /* in units of the curve */
    int no_draft = 0, longer = 0;
    for (int a = 0; a < 4; a++)
        for (size_t b = 0; b < sizeof ps / sizeof ps[0]; b++) {
            int prev = 1 << 30;
            for (int n = 1; n <= 128; n *= 2)
                for (int other = 0; other <= 8; other += 8) {
                    int l_wait0 = 0;
                    for (size_t w = 0; w < sizeof waits / sizeof waits[0]; w++) {
                        const int got = es_sched_best_budget(&curves[a], n, other, other, ps[b], 64, waits[w]);
                        const int l = got == ES_HINT_NO_DRAFT ? 0 : got;
                        CHECK(got == ES_HINT_NO_DRAFT || (got >= 1 && got <= 64));
                        double best = 0, at_l = 0, yield = 1, pl = 1, none = 0;
                        for (int k = 0; k <= 64; k++) {
                            if (k) { pl *= ps[b]; yield += pl; }
                            const double r =
                                (other + n * yield) / (waits[w] + es_pass_cost_at(&curves[a], other + (double)n * (k + 1)));
                            if (r > best) best = r;
                            if (k == l) at_l = r;
                            if (k == 0) none = r;
                        }
                        if (l > 0)
                            CHECK_MSG(at_l >= best * (1 - 1e-9) && at_l >= none * (1 + ES_SCHED_DRAFT_MARGIN) * (1 - 1e-9),
                                      "curve %d p %.2f n %d other %d wait %g: length %d gives %g, best %g, none %g", a, ps[b],
                                      n, other, waits[w], l, at_l, best, none);
                        else /* no draft: the best length does not beat it by the margin */
                            CHECK_MSG(best < none * (1 + ES_SCHED_DRAFT_MARGIN) * (1 + 1e-9),
                                      "curve %d p %.2f n %d other %d wait %g: no draft, best %g vs %g", a, ps[b], n, other,
                                      waits[w], best, none);
                        if (w == 0) {
                            l_wait0 = l;
                            if (other == 0 && a < 3) {
                                CHECK_MSG(l <= prev, "curve %d p %.2f: %d edges get %d, fewer got %d", a, ps[b], n, l, prev);
                                prev = l;
                            }
                            no_draft += l == 0;
                        } else { /* waiting servers never suggest less than saturated ones */
                            CHECK_MSG(l >= l_wait0, "curve %d p %.2f n %d other %d: wait %g gives %d, no wait %d", a, ps[b],
                                      n, other, waits[w], l, l_wait0);
                            longer += l > l_wait0;
                            l_wait0 = l;
                        }
                    }
                }
        }
    CHECK(no_draft > 0); /* saturation is reached */
    CHECK(longer > 0);   /* and waiting matters */
    const es_pass_cost k14 = es_pass_cost_linear(14);
    CHECK(es_sched_best_budget(&k14, 1, 0, 0, 0.8, 64, 0) >= 4);                /* one edge: long drafts */
    CHECK(es_sched_best_budget(&k14, 4, 0, 0, 0.87, 64, 0) >= 4);               /* a few: still several */
    CHECK(es_sched_best_budget(&k14, 64, 0, 0, 0.6, 64, 0) == ES_HINT_NO_DRAFT); /* many, poor drafts: none */
    CHECK(es_sched_best_budget(&k14, 1, 0, 0, 0.9, 3, 0) == 3);                 /* the cap */
    /* the measured curve is flat at first: one edge drafts longer than under a linear fit of it */
    CHECK(es_sched_best_budget(&measured, 1, 0, 0, 0.8, 64, 0) >= 5);
    /* a tiny compute-bound target (pass time proportional to rows, like stories260K): drafting saves
       no compute, so a saturated server wants none; one edge whose round trip is 100 passes long is
       the opposite, idle compute is free and it drafts long (the `make demo` case) */
    const es_pass_cost prop = {2, {1, 64}, {1, 64}};
    CHECK(es_sched_best_budget(&prop, 1, 0, 0, 0.8, 64, 0) == ES_HINT_NO_DRAFT);
    CHECK(es_sched_best_budget(&prop, 1, 0, 0, 0.8, 64, 100) >= 8);
    CHECK(es_sched_best_budget(&prop, 3, 0, 0, 0.8, 64, 30) >= 4);
    CHECK(es_sched_best_budget(&prop, 1, 0, 0, 0.8, 64, NAN) == ES_HINT_NO_DRAFT); /* a NaN wait is none */
}

/* Early exits: an exit head at layer 3 of 5. Sessions that ask get one EARLY per round, before its
 * verdict; the others none; the output is the golden one (greedy) and, sampled with a seed, the same
 * as without early exits — also with a deliberately bad adapter (W = 0, a bias that makes one token
 * win everywhere), whose provisional verdicts rarely agree. */
static void early_run(es_model *target, es_model *draft, const char *exit_file, bool early_on, float temp, int32_t out[4][1024],
                      int n_out[4], int64_t *frames, int64_t *agreed) {
    harness h;
    memset(&h, 0, sizeof h);
    es_sched_params p = es_sched_default_params();
    p.knee_tokens = 64;
    p.max_sessions = 4;
    if (early_on) {
        p.exit_layers[0] = 3;
        p.n_exit_layers = 1;
        p.exit_file = exit_file;
    }
    es_sched *s = init_sched(target, p, &h);
    if (!s) return;
    es_ctx *dctx = make_dctx(draft, 4);
    es_drafter_params dp = draft_params(ES_DRAFT_CHAIN);
    dp.sample = temp > 0;
    for (int i = 0; i < 4; i++) {
        h.early = early_on && i < 2; /* two ask, two do not */
        open_client(&h, ES_MODE_EDGE, i, temp > 0 ? ES_ACCEPT_REJECTION : ES_ACCEPT_GREEDY, temp, 77 + (uint64_t)i, dctx, &dp);
    }
    drive(&h);
    if (temp == 0) check_golden(&h, exit_file ? "early exits, bad adapter" : "early exits");
    int64_t n_early = 0;
    for (int i = 0; i < 4; i++) {
        const client *c = &h.cl[i];
        CHECK(c->done && !c->error && c->early_bad == 0);
        if (c->early) CHECK_MSG(c->n_early == (int)c->next_round, "session %d: %d EARLY for %u rounds", i, c->n_early, c->next_round);
        else CHECK(c->n_early == 0);
        n_early += c->n_early;
        n_out[i] = c->n_out;
        memcpy(out[i], c->out, (size_t)c->n_out * sizeof(int32_t));
    }
    es_sched_stats st;
    es_sched_get_stats(s, &st);
    CHECK(st.early_frames == n_early && st.early_agreed <= st.early_frames);
    CHECK(st.exit_layer == (early_on ? 3 : 0));
    *frames = st.early_frames;
    *agreed = st.early_agreed;
    free_clients(&h);
    es_ctx_free(dctx);
    es_sched_free(s);
}

static void test_early_exit(es_model *target, es_model *draft) {
    static int32_t a[4][1024], b[4][1024], c[4][1024];
    int na[4], nb[4], nc[4];
    int64_t f0, g0, f1, g1, f2, g2;
    early_run(target, draft, NULL, true, 0.0f, a, na, &f1, &g1);
    CHECK(f1 > 0);
    /* the bad adapter: W = 0 and a bias whose final-normed image puts one token on top everywhere */
    const char *path = es_test_write_bad_exit(es_model_n_embd(target), 3, "sched-bad-exit.gguf");
    early_run(target, draft, path, true, 0.0f, b, nb, &f2, &g2);
    CHECK(f2 > 0 && g2 * 2 < f2); /* mostly wrong, and the output above was still the golden one */
    printf("early exits (greedy): %lld frames, %lld agreed (zero-training head), bad adapter %lld of %lld\n", (long long)f1,
           (long long)g1, (long long)g2, (long long)f2);
    /* sampled (rejection rule, seeded): the same tokens with and without early exits, good or bad head */
    early_run(target, draft, NULL, false, 0.8f, a, na, &f0, &g0);
    early_run(target, draft, NULL, true, 0.8f, b, nb, &f1, &g1);
    early_run(target, draft, path, true, 0.8f, c, nc, &f2, &g2);
    CHECK(f0 == 0 && f1 > 0 && f2 > 0);
    for (int i = 0; i < 4; i++) {
        CHECK_MSG(na[i] == nb[i] && memcmp(a[i], b[i], (size_t)na[i] * sizeof(int32_t)) == 0,
                  "sampled session %d differs with early exits", i);
        CHECK_MSG(na[i] == nc[i] && memcmp(a[i], c[i], (size_t)na[i] * sizeof(int32_t)) == 0,
                  "sampled session %d differs with a bad exit adapter", i);
    }
}

/* Two KV tiers (APEX) on a Vulkan device (lavapipe in CI): a device KV budget of one or two
 * sessions' pages under 4 edge and 8 AR sessions, so most live in host memory and get their
 * attention from the CPU, in plans the predictor picks each step; every session still gives the
 * golden output, a host-tier session came back to the device once an edge session (opened first, so
 * in the device tier, and faster: several tokens a round) finished, and both pools are empty at the
 * end (the prefix cache on: finished sessions' pages cached, their device copies counted free). Which plans run depends on measured times; that some plan served the host rows does not (the
 * predictor's wait bound). */
static void test_tiers(es_model *draft) {
    dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE); /* keep lavapipe loaded past vkDestroyInstance (see test_vulkan.c) */
    if (!es_vk_available()) {
        printf("tiers: this build has no Vulkan backend: not run\n");
        return;
    }
    es_model_params mp = es_model_default_params();
    mp.no_repack = true; /* a device reads the file's layout */
    es_model *target = NULL;
    es_err err = {{0}};
    CHECK_OK(es_model_load(es_test_model("stories260K.gguf"), &mp, &target, &err), &err);
    if (!target) return;
    harness h;
    memset(&h, 0, sizeof h);
    es_sched_params p = es_sched_default_params();
    p.knee_tokens = 64;
    p.max_sessions = 12;
    p.backend = ES_BACKEND_VULKAN;
    p.device = 0;
    p.kv_type = ES_KV_F32; /* the golden outputs are the f32 reference's (an f16 cache flips one of them on lavapipe) */
    p.device_kv_memory_bytes = 6 * es_model_kv_bytes_per_block(target, 16, ES_KV_F32); /* 6 pages: one or two sessions */
    es_sched *s = init_sched(target, p, &h);
    es_ctx *dctx = make_dctx(draft, 4);
    if (s && dctx) {
        es_drafter_params chain = draft_params(ES_DRAFT_CHAIN), tree = draft_params(ES_DRAFT_TREE);
        for (int i = 0; i < 4; i++) open_client(&h, ES_MODE_EDGE, i, ES_ACCEPT_GREEDY, 0.0f, 0, dctx, i % 2 ? &tree : &chain);
        for (int i = 0; i < 8; i++) open_client(&h, ES_MODE_AR, 4 + i, ES_ACCEPT_GREEDY, 0.0f, 0, NULL, NULL);
        drive(&h);
        check_golden(&h, "tiers");
        es_sched_stats st;
        es_sched_get_stats(s, &st);
        CHECK(st.tiered && st.device_kv_blocks_total == 6);
        CHECK_MSG(st.host_tier_sessions >= 6, "tiers: %lld sessions ran in the host tier", (long long)st.host_tier_sessions);
        const int64_t plans = st.plans[0] + st.plans[1] + st.plans[2];
        CHECK_MSG(plans > 0 && st.plans[1] + st.plans[2] > 0, "tiers: plans %lld/%lld/%lld", (long long)st.plans[0],
                  (long long)st.plans[1], (long long)st.plans[2]);
        CHECK_MSG(st.tier_moves_to_device > 0, "tiers: no session came back to the device tier");
        /* (whether a session came back with rows to copy depends on the plans: only what must hold) */
        CHECK_MSG(st.tier_copy_waits >= 0 && st.tier_copy_waits <= st.tier_copies_async, "tiers: %lld waits for %lld copies up",
                  (long long)st.tier_copy_waits, (long long)st.tier_copies_async);
        CHECK(st.prediction_error_p50 > 0);
        CHECK_MSG(st.apex_profile == 2, "tiers: the predictor's profile was not measured at start-up (%d)", st.apex_profile);
        check_kv_empty(s, "tiers");
        CHECK_MSG(st.device_kv_blocks_used == 0 && st.host_tier_now == 0, "tiers: %lld device pages, %d host-tier sessions left",
                  (long long)st.device_kv_blocks_used, st.host_tier_now);
        /* the prefix cache runs across the tiers: finished sessions' pages are cached, device copies of
           them count as free */
        CHECK_MSG(st.prefix_cached_blocks > 0 && st.device_kv_blocks_cached <= st.device_kv_blocks_total, "tiers: %lld pages cached, %lld device copies",
                  (long long)st.prefix_cached_blocks, (long long)st.device_kv_blocks_cached);
        printf("tiers: %lld steps, %lld sessions in the host tier, moves %lld to host (%lld by themselves) / %lld to device "
               "(%lld copies up, %lld waits), plans device_only %lld asymmetric %lld async_overlap %lld, prediction error p50 %.2f (profile %s)\n",
               (long long)st.steps, (long long)st.host_tier_sessions, (long long)st.tier_moves_to_host, (long long)st.tier_auto_to_host,
               (long long)st.tier_moves_to_device, (long long)st.tier_copies_async, (long long)st.tier_copy_waits, (long long)st.plans[0], (long long)st.plans[1], (long long)st.plans[2],
               st.prediction_error_p50, st.apex_profile == 2 ? "measured" : "preset");
    }
    free_clients(&h);
    es_sched_free(s);
    es_ctx_free(dctx);
    es_model_free(target);
}

int main(void) {
    test_best_budget();
    test_groups_for();
    test_group_trial();
    test_pool_cpu();
    load_golden();
    es_model *target = es_test_load_model("stories260K.gguf");
    es_model *drafts[3] = {es_test_load_model("draft-mid.gguf"), es_test_load_model("draft-small.gguf"),
                           es_test_load_model("draft-random.gguf")};
    if (!target || !drafts[0] || !drafts[1] || !drafts[2] || n_golden < 20) return es_test_finish("test_sched");
    test_ar_batched(target);
    test_edge_mixed(target, drafts, 512, 256, "edge+ar");
    test_edge_mixed(target, drafts, 8, 3, "edge+ar, batch 8, chunk 3");
    test_wait_hint(target, drafts[1]);
    es_model *q80 = es_test_load_model("stories260K_q80.gguf");
    if (q80) test_per_session_hint(target, q80, drafts[2]);
    es_model_free(q80);
    test_pipeline_groups(target, drafts[0], ES_SCHED_GATHER);
    test_pipeline_groups(target, drafts[0], ES_SCHED_PIPELINE);
    test_prefix_turn(target, true);
    test_prefix_turn(target, false);
    test_admission_close(target, drafts[0]);
    test_churn(target);
    test_kv_exhaustion(target);
    test_server_spec(target, drafts[0]);
    test_threaded(target, drafts[0]);
    test_early_exit(target, drafts[0]);
    test_tiers(drafts[0]);
    for (int i = 0; i < 3; i++) es_model_free(drafts[i]);
    es_model_free(target);
    return es_test_finish("test_sched");
}
