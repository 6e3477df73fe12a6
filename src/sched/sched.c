/* sched.c — the verification server's compute core (see sched.h for the contract).
 *
 * One es_ctx holds every session's target KV (one sequence per session, one paged pool), and an
 * optional second es_ctx holds the server-side draft model's KV for server-spec sessions. A step:
 *
 *   1. reap: free sessions that were closed, finished or failed (their KV pages return to the pool);
 *   2. create the sequences / verifiers / drafters of newly admitted sessions;
 *   3. plan: every session with work, oldest waiting first, gets a prefill chunk and/or a round
 *      (edge tree, AR token, server-spec tree) while max_batch_tokens rows (and the logits rows)
 *      last; a round that does not fit waits for the next step (it is then the oldest, so it goes
 *      first: nothing starves); edge trees are taken out of the queue here;
 *   4. draft the server-spec trees (draft context, compute thread);
 *   5. stage everybody into ONE es_batch_builder and run ONE es_decode; if it fails, stage and
 *      decode each session alone and fail only those that still fail;
 *   6. finish each round (acceptance walk, KV compaction), cut the tokens at max_tokens / the first
 *      stop token, and deliver events; finished sessions are freed at once.
 *
 * Threads and locks. `mu` guards the session table's shared fields (state, queued tree, counters
 * the admission reads), the stats and the stop flag; the compute thread owns the contexts, the
 * verifiers, drafters and the tree in flight, and takes `mu` only to plan and to publish. Nothing
 * slow (forward passes, drafting, callbacks) runs under `mu`, so es_sched_open / verify / close from
 * the event loop never wait for a forward pass.
 *
 * Close vs events. Events are delivered by the thread running the step while it holds `ev_mu` (and
 * not `mu`), and each delivery first re-checks, under `mu`, that the session was not closed.
 * es_sched_close marks the session closed under `mu`, releases it, then takes and releases `ev_mu`:
 * a delivery that began before the mark finishes before close returns, and every later delivery sees
 * the mark. So no event for a session follows the return of es_sched_close. A callback may call
 * es_sched_open / verify / close (close from the delivering thread does not wait on `ev_mu`, which
 * it already holds); it must not call es_sched_step, es_sched_run or es_sched_free. */
#include "sched/sched.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apex/predict.h"
#include "grammar/grammar.h"
#include "engine/ctx.h"
#include "util/clock.h"
#include "util/err.h"

#define SCHED_MAX_GROUPS 8       /* pipeline groups at most (es_sched_params.max_groups) */
#define SCHED_REGROUP_VOTES 16   /* steps a new group count must be asked for before it is taken */
#define SCHED_KNEE_FALLBACK 32  /* automatic knee when profiling is not possible */
#define SCHED_KV_BLOCK 16

typedef enum sess_state {
    SESS_FREE = 0, /* slot unused */
    SESS_NEW,      /* admitted; its sequence / verifier are created at the next step */
    SESS_LIVE,     /* generating */
    SESS_GONE,     /* closed, finished or failed: no more events; freed by the compute thread */
} sess_state;

typedef struct sess {
    /* ---- guarded by mu ---- */
    int state;
    bool client_closed;      /* es_sched_close: deliver nothing more */
    uint64_t id;
    uint64_t order;          /* admission number: equal waiting times go to the older session */
    double ready_since;      /* when its current piece of work became ready (oldest first) */
    bool awaiting_tree;      /* edge: the next es_sched_verify is expected */
    bool has_tree;           /* edge: a tree is queued in `pend` */
    uint32_t round;          /* edge: the round the next tree must carry */
    double tree_arrival;
    es_spec_tree *pend;      /* edge: the queued tree */
    int n_prefilled;         /* prompt tokens in the target KV (of n_prompt - 1) */
    int n_generated;
    int64_t kv_blocks;       /* target KV pages it held after the last step */
    int last_rows;           /* rows of its last round (server-spec load for the budget hint) */
    int group;               /* edge, pipeline: its group (-1: not placed yet) */
    double verdict_at;       /* edge: when its last verdict was published (0: none yet) */
    double round_s;          /* edge: decayed mean time from a verdict to its next tree (round trip +
                                drafting), what sizes the pipeline */
    double first_tried, first_hit; /* edge: decayed counts of its rounds with a tree and of those accepting
                                      the first node (its own draft's quality, not the others') */
    /* ---- fixed at open ---- */
    int mode, rule;
    es_sampler_params sampling;
    int32_t stop[ES_SCHED_MAX_STOP + 1];
    int n_stop;
    int32_t *prompt;
    int n_prompt;
    int max_tokens;
    int top_logprobs;        /* -1: no logprobs */
    es_grammar *grammar;     /* response_format: the session's own copy, or NULL */
    int grammar_done;        /* prompt tokens at its end that are output already (es_sched_session_params) */
    /* ---- the compute thread's ---- */
    es_gmatcher *gm, *gdm;   /* grammar: the verifier's and the server-side drafter's matchers */
    int seq, dseq;           /* -1 until created */
    bool ran_host;           /* it had rows in a pass while its KV was in the host tier */
    es_verifier *v;
    es_drafter *d;
    es_spec_tree *work;      /* edge / server-spec: the tree verified this step (AR: NULL) */
    uint32_t work_round;
    int32_t root;
    /* this step */
    int plan_pf;             /* prompt rows staged */
    int plan_round;          /* rows reserved for a round (0: none) */
    int staged_rows;
    bool decoded;            /* its rows went through a successful es_decode */
    bool failed;
    es_status fail_st;
    es_err fail_err;
    bool round_done;
    es_spec_verdict vd;      /* the verdict, cut at max_tokens / the first stop token */
    int n_emit;
    int stop_reason;         /* es_proto_stop */
    double queue_s, verify_s;
    double accept_s;         /* server-spec: es_drafter_accept time */
    bool early;              /* edge: early exits asked for (and the scheduler has heads) */
    bool early_sent;         /* this round's EARLY went out (its verdict in early_vd) */
    es_spec_verdict early_vd;
} sess;

struct es_sched {
    es_sched_params p;
    const es_model *target;
    es_ctx *ctx;             /* target: one sequence per session */
    es_ctx *dctx;            /* server-side draft model (NULL without one) */
    int n_ctx, n_vocab, n_logits_max, knee;
    int64_t kv_bytes_per_block;
    int32_t eos;
    es_batch_builder bb;
    es_exit_heads *heads;    /* early exits (NULL: off) */
    int exit_layer;          /* the layer EARLY events come from */
    float *early_logits;     /* (max_tree_nodes + 1, n_vocab) the exit head's rows of one round */
    es_spec_tree empty;      /* AR rounds verify this (no nodes) */
    es_grammar_vocab *gvocab;/* the target vocabulary as grammars see it: built by the compute thread at
                                the first session with a grammar (tens of ms on 151K tokens), then shared */

    sess *sess;              /* [n_slots] */
    int n_slots;             /* 2 * max_sessions: closed sessions wait for the compute thread's free */
    sess **order;            /* [n_slots] this step's sessions, oldest waiting first */
    int n_order;

    pthread_mutex_t mu;
    pthread_cond_t cv;       /* work arrived, stop requested, or the run loop exited */
    pthread_mutex_t ev_mu;   /* held while events are delivered (see the file comment) */
    bool stop, running;
    bool stepping;           /* a step is in progress on step_tid */
    pthread_t step_tid;
    uint64_t next_order;
    es_sched_stats st;       /* kv_* and sessions_active refreshed at every step */
    double caller_cpu;       /* CPU seconds of the threads that ran steps */
    double cost_a, cost_b;   /* profiled pass time t(rows) = a + b * rows (seconds), 0 if not profiled */
    es_pass_cost cost;       /* the profiled pass times themselves (n = 0 if not profiled) */
    double last_end;         /* when the last step that computed rows ended (0: none yet) */
    int n_groups;            /* pipeline: edge groups in use (0: none formed yet) */
    int due_group;           /* pipeline: the group whose turn is next */
    int serve_group;         /* this step's edge group (-1: every edge session may have its round) */
    int regroup_votes;       /* steps in a row whose sizing asked for another number of groups */
    int last_n_edge;         /* live edge sessions at the last regrouping */
    es_group_trial trial;    /* pipeline: the measured check of the model's split */
    int64_t n_waits;         /* waits measured into st.step_wait_s (its decayed mean) */
    /* two KV tiers */
    es_apex *apex;           /* the plan predictor (NULL: one tier) */
    bool skip_host;          /* this step leaves host-tier sessions out (device_only) */
    es_plan plan;            /* this step's plan */
    es_apex_step apex_step;  /* and what it was predicted for */
    double apex_pred_s;
    int64_t host_row_bytes;  /* per host row and layer crossing the tiers: q, k, v down, attention up */
    bool apex_on_cpu;        /* the device runs on this machine's cores (lavapipe): its work and the host's contend */
    es_tier_info tier_base;  /* the tier counters after the start-up profile */
};

static double thread_cpu_s(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int imin(int a, int b) { return a < b ? a : b; }
static uint32_t to_us(double sec) { return sec <= 0 ? 0 : sec >= 4294.0 ? UINT32_MAX : (uint32_t)(sec * 1e6); }
static int imax(int a, int b) { return a > b ? a : b; }

es_sched_params es_sched_default_params(void) {
    es_sched_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 1;
    p.max_sessions = 64;
    p.max_batch_tokens = 512;
    p.prefill_chunk = 256;
    p.max_tree_nodes = 64;
    p.policy = ES_SCHED_PIPELINE;
    p.prefix_cache = true;
    p.max_groups = 4;
    p.batch_window_ms = 20; /* measured: gathers the edge cohort (bench serve, 4 clients: +33 % tokens per CPU-second) */
    p.kv_type = ES_KV_F16;
    p.knee_tokens = 0; /* automatic (measured) */
    p.draft_params = es_drafter_default_params();
    return p;
}

/* ---- init / free -------------------------------------------------------------------------------- */

/* The automatic knee, profiled once at start-up before any session exists (APEX-style: a measured
 * time predictor, not a guess): time verification-shaped passes of r rows (every row asking for
 * logits) for a few r and take knee = a / b of t(r) = a + b·r — the row count at
 * which the per-row work equals the fixed cost of reading the weights once. Beyond it a pass is
 * compute-bound and every rejected draft token costs real time. Best of 3 runs per point. */
static void profile_knee(es_sched *s) {
    const int cap = imin(imin(s->n_logits_max, s->p.max_batch_tokens), s->n_ctx - 1);
    static const int rows_try[] = {1, 4, 8, 16, 32, 64};
    _Static_assert(sizeof rows_try / sizeof rows_try[0] <= ES_PASS_COST_MAX, "es_pass_cost holds every point");
    double *const t_at = s->cost.t; /* the curve the tree-size hint uses, kept as measured */
    int n = 0;
    int32_t tok[64], pos[64], seq[64];
    int8_t logits[64];
    for (size_t k = 0; k <= sizeof rows_try / sizeof rows_try[0]; k++) {
        /* k == 0: an unmeasured warm-up pass (first touch of the weights, cold caches) */
        const int r = rows_try[k == 0 ? 0 : k - 1];
        if (r > cap) break;
        double best = -1;
        for (int rep = 0; rep < (k == 0 ? 1 : 3); rep++) {
            es_err e = {{0}};
            int sq;
            if (es_seq_open(s->ctx, &sq, &e) != ES_OK) return;
            for (int i = 0; i < r; i++) {
                tok[i] = (int32_t)((i * 7919 + 1) % s->n_vocab);
                pos[i] = i;
                seq[i] = sq;
                logits[i] = 1;
            }
            es_batch b = {r, tok, pos, seq, NULL, logits, NULL};
            const double t0 = es_now_s();
            const es_status st = es_decode(s->ctx, &b, &e);
            const double t = es_now_s() - t0;
            es_seq_close(s->ctx, sq);
            if (st != ES_OK) return;
            if (best < 0 || t < best) best = t;
        }
        if (k > 0) {
            s->cost.rows[n] = r;
            t_at[n++] = best;
        }
    }
    s->cost.n = n;
    if (n < 2) return;
    /* t(r) = a + b·r reaches 2·t(1) at r = a/b + 2: the first crossing of twice the one-row time,
       interpolated between measured points, is robust to noise where a fitted slope is not */
    const double t1 = t_at[0];
    s->cost_b = (t_at[n - 1] - t1) / (rows_try[n - 1] - 1);
    s->cost_a = t1 - s->cost_b;
    for (int k = 1; k < n; k++) {
        if (t_at[k] < 2 * t1) continue;
        const double r0 = rows_try[k - 1], r1 = rows_try[k], y0 = t_at[k - 1], y1 = t_at[k];
        const double r = y1 > y0 ? r0 + (2 * t1 - y0) * (r1 - r0) / (y1 - y0) : r1;
        s->knee = imax(4, imin((int)(r - 2 + 0.5), s->p.max_batch_tokens));
        return;
    }
    s->knee = cap; /* memory-bound over the whole measured range */
}

/* ---- early exits ------------------------------------------------------------------------------ */

static void deliver(es_sched *s, sess *x, const es_sched_event *ev);

/* The exit hook (compute thread, in the middle of es_decode of s->bb): for every edge session that
 * asked, its round's rows through the exit head, the acceptance walk on them (es_verifier_provisional:
 * the verifier's own draws, its state untouched), and the EARLY event, delivered now so the loop
 * thread sends it while the rest of the pass runs. */
static void early_hook(void *ud, int layer, const float *hidden, int n_rows, const int32_t *rows) {
    es_sched *s = ud;
    if (layer != s->exit_layer) return;
    const int d = es_model_n_embd(s->target);
    for (int k = 0; k < s->n_order; k++) {
        sess *x = s->order[k];
        if (!x->early || x->failed || !x->plan_round || x->early_sent || !x->v) continue;
        const int r0 = es_verifier_staged_root(x->v, &s->bb), nn = es_verifier_staged_nodes(x->v, &s->bb) + 1;
        if (r0 < 0 || nn < 1) continue;
        int lo = 0, hi = n_rows; /* rows increase: the round's rows are consecutive there */
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (rows[mid] < r0) lo = mid + 1;
            else hi = mid;
        }
        if (lo + nn > n_rows || rows[lo] != r0 || rows[lo + nn - 1] != r0 + nn - 1) continue;
        es_err e = {{0}};
        if (es_exit_heads_logits(s->heads, layer, hidden + (size_t)lo * d, nn, s->early_logits, &e) != ES_OK ||
            es_verifier_provisional(x->v, &s->bb, s->early_logits, &x->early_vd, &e) != ES_OK)
            continue; /* a hint only: the round goes on without one */
        x->early_sent = true;
        es_sched_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = ES_EV_EARLY;
        ev.session = x->id;
        ev.round = x->work_round;
        ev.verdict = &x->early_vd;
        ev.tokens = x->early_vd.tokens;
        ev.n_tokens = x->early_vd.n_tokens;
        ev.exit_layer = layer;
        ev.n_generated = x->n_generated;
        pthread_mutex_lock(&s->mu);
        s->st.early_frames++;
        pthread_mutex_unlock(&s->mu);
        deliver(s, x, &ev);
    }
}

/* The plan predictor of two KV tiers: a profile derived for the device's kind (apex/presets.c: a
 * device on the CPU's own cores, or a discrete GPU), its linear part replaced by this model's
 * measured pass times when profile_knee measured them, corrected online from every step. */
static es_status apex_init(es_sched *s, es_err *err) {
    es_device_info devs[16];
    int n = 0;
    es_err e2 = {{0}};
    bool on_cpu = false;
    if (es_devices(devs, 16, &n, &e2) == ES_OK && s->p.device < n && s->p.device < 16) on_cpu = !strcmp(devs[s->p.device].type, "cpu");
    s->apex_on_cpu = on_cpu;
    const es_apex_preset *pre = es_apex_preset_find(on_cpu ? "lavapipe" : "a10");
    if (!pre) return es_fail(err, ES_ERR_INTERNAL, "no APEX profile preset");
    /* f32 q, k, v down and the attention output up; q and the output are n_embd wide in the models
       served (n_head · head_dim), k and v kv_dim */
    const int64_t kvd = es_ctx_kv_bytes_per_token(s->target, ES_KV_F32) / ((int64_t)es_model_n_layer(s->target) * 8);
    s->host_row_bytes = 4 * (2 * (int64_t)es_model_n_embd(s->target) + 2 * kvd);
    return es_apex_new(&pre->profile, &s->apex, err);
}

/* One timed pass of `rows` chain rows appended to sequence sq (positions from its length): seconds,
 * the best of two (each pass's rows are removed again), or -1 when a pass fails. */
static double profile_pass(es_sched *s, int sq, int rows) {
    int32_t tok[64], pos[64], seq[64];
    int8_t want[64];
    const int len = es_seq_len(s->ctx, sq);
    double best = -1;
    for (int rep = 0; rep < 2; rep++) {
        for (int i = 0; i < rows; i++) {
            tok[i] = (int32_t)((i * 7919 + 3) % s->n_vocab);
            pos[i] = len + i;
            seq[i] = sq;
            want[i] = i == rows - 1;
        }
        es_batch b = {rows, tok, pos, seq, NULL, want, NULL};
        es_err e = {{0}};
        const double t0 = es_now_s();
        const es_status st = es_decode(s->ctx, &b, &e);
        const double t = es_now_s() - t0;
        es_seq_truncate(s->ctx, sq, len, &e);
        if (st != ES_OK) return -1;
        if (best < 0 || t < best) best = t;
    }
    return best;
}

/* Prefills sequence sq with n tokens in passes of the batch limit; false when a pass fails. */
static bool profile_fill(es_sched *s, int sq, int n) {
    int32_t tok[64], pos[64], seq[64];
    for (int at = es_seq_len(s->ctx, sq); at < n;) {
        const int k = imin(imin(64, n - at), s->p.max_batch_tokens);
        for (int i = 0; i < k; i++) {
            tok[i] = (int32_t)(((at + i) * 104729 + 11) % s->n_vocab);
            pos[i] = at + i;
            seq[i] = sq;
        }
        es_batch b = {k, tok, pos, seq, NULL, NULL, NULL};
        es_err e = {{0}};
        if (es_decode(s->ctx, &b, &e) != ES_OK) return false;
        at += k;
    }
    return true;
}

/* Start-up profile of two tiers, measured on this model and device:
 *  - LINEAR: the passes of 1..64 rows at a near-empty context (profile_knee's, run here when the knee
 *    is fixed, keeping that knee), per layer;
 *  - DEV_ATTN: passes of 1 and 8 rows over a context of C and C/2 slots in the device tier, less
 *    the linear time of as many rows (the difference is the attention over the context);
 *  - CPU_ATTN: the same passes with the sequence in the host tier, timed by the backend inside its
 *    host attention (es_tier_info.host_attn_seconds);
 *  - XFER: the sequence's pages moved to the host tier; SYNC: what a 1-row hybrid pass costs beyond
 *    its linear work and its host attention.
 * es_apex_fit turns them into the profile (contend: 1 for a device on the CPU's cores, else 0).
 * When a measurement fails or the fit refuses the samples, the preset stays, its terms scaled by
 * the measured linear time (the preset's shape at this model's scale). The per-plan corrections
 * (es_apex_observe) then learn from every step what the model leaves out. */
static void apex_calibrate(es_sched *s, bool on_cpu) {
    if (s->cost.n < 2) {
        const int knee = s->knee;
        profile_knee(s);
        s->knee = knee;
    }
    if (s->cost.n < 2 || !(s->cost_a + s->cost_b > 0)) return;
    const int nl = es_model_n_layer(s->target);
    es_apex_profile pr;
    es_apex_get_profile(s->apex, &pr);
    { /* the preset at this model's scale: the fallback */
        const double meas1 = (s->cost_a + s->cost_b) / nl, pre1 = pr.lin_a + pr.lin_b + pr.gatt_a + pr.gatt_b + pr.gatt_c;
        const double f = pre1 > 0 ? meas1 / pre1 : 1;
        pr.gatt_a *= f, pr.gatt_b *= f, pr.gatt_c *= f;
        pr.catt_a *= f, pr.catt_b *= f, pr.catt_c *= f;
        pr.sync_s *= f;
        pr.lin_a = s->cost_a / nl > 0 ? s->cost_a / nl : 0;
        pr.lin_b = s->cost_b / nl > 0 ? s->cost_b / nl : 0;
        es_err e = {{0}};
        (void)es_apex_set_profile(s->apex, &pr, &e);
        s->st.apex_profile = 1;
    }
    es_apex_sample smp[32];
    int n = 0;
    for (int k = 0; k < s->cost.n && n < 8; k++)
        smp[n++] = (es_apex_sample){ES_APEX_SAMPLE_LINEAR, (int)s->cost.rows[k], 0, 0, s->cost.t[k] / nl};
    es_tier_info t0, t1;
    es_ctx_tier_info(s->ctx, &t0); /* the context must fit the device tier, with a page for the rows */
    const int C = (int)(imin(512, (s->n_ctx - 16) / 2 * 2) < (t0.device_blocks_total - 2) * SCHED_KV_BLOCK
                            ? imin(512, (s->n_ctx - 16) / 2 * 2) : (t0.device_blocks_total - 2) * SCHED_KV_BLOCK);
    if (C < 32) return;
    es_err e = {{0}};
    int sq;
    if (es_seq_open(s->ctx, &sq, &e) != ES_OK) return;
    bool ok = profile_fill(s, sq, C);
    static const int rows_at[2] = {1, 8};
    for (int half = 0; half < 2 && ok; half++) {
        const int ctx = half ? C / 2 : C;
        if (half) es_seq_truncate(s->ctx, sq, ctx, &e);
        for (int r = 0; r < 2 && ok; r++) { /* the device tier */
            const int rows = rows_at[r];
            const double t = profile_pass(s, sq, rows);
            ok = t > 0;
            const double att = (t - es_pass_cost_at(&s->cost, rows)) / nl;
            smp[n++] = (es_apex_sample){ES_APEX_SAMPLE_DEV_ATTN, rows, (int64_t)rows * ctx, 0, att > 0 ? att : 0};
        }
        es_ctx_tier_info(s->ctx, &t0);
        const double m0 = es_now_s();
        ok = ok && es_seq_set_tier(s->ctx, sq, ES_KV_TIER_HOST, &e) == ES_OK;
        const double moved = es_now_s() - m0;
        es_ctx_tier_info(s->ctx, &t1);
        if (ok && t1.pages_moved > t0.pages_moved)
            smp[n++] = (es_apex_sample){ES_APEX_SAMPLE_XFER, 0, 0, (t1.pages_moved - t0.pages_moved) * s->kv_bytes_per_block, moved};
        for (int r = 0; r < 2 && ok; r++) { /* the host tier */
            const int rows = rows_at[r];
            es_ctx_tier_info(s->ctx, &t0);
            const double t = profile_pass(s, sq, rows);
            es_ctx_tier_info(s->ctx, &t1);
            ok = t > 0;
            const double host = (t1.host_attn_seconds - t0.host_attn_seconds) / 2; /* two passes (profile_pass) */
            smp[n++] = (es_apex_sample){ES_APEX_SAMPLE_CPU_ATTN, rows, (int64_t)rows * ctx, 0, host / nl};
            if (rows == 1) {
                const double sync = (t - es_pass_cost_at(&s->cost, 1) - host) / nl;
                smp[n++] = (es_apex_sample){ES_APEX_SAMPLE_SYNC, 1, 0, 0, sync > 0 ? sync : 0};
            }
        }
        ok = ok && es_seq_set_tier(s->ctx, sq, ES_KV_TIER_DEVICE, &e) == ES_OK;
    }
    es_seq_close(s->ctx, sq);
    if (!ok) return;
    es_apex_profile fit;
    if (es_apex_fit(smp, n, &fit, &e) != ES_OK) return;
    fit.contend = on_cpu ? 1 : 0;
    if (es_apex_set_profile(s->apex, &fit, &e) == ES_OK) s->st.apex_profile = 2;
}

static es_status early_init(es_sched *s, es_err *err) {
    const es_sched_params *p = &s->p;
    es_status st = es_exit_heads_init(s->target, p->exit_file, p->exit_layers, p->n_exit_layers, p->max_tree_nodes + 1,
                                      p->n_threads, &s->heads, err);
    if (st != ES_OK) return st;
    s->exit_layer = p->exit_layers[0];
    for (int i = 1; i < p->n_exit_layers; i++)
        if (p->exit_layers[i] < s->exit_layer) s->exit_layer = p->exit_layers[i];
    s->st.exit_layer = s->exit_layer;
    s->early_logits = malloc((size_t)(p->max_tree_nodes + 1) * (size_t)s->n_vocab * sizeof(float));
    if (!s->early_logits) return es_fail(err, ES_ERR_NOMEM, "out of memory for the exit head's logits");
    return es_ctx_set_exit_hook(s->ctx, &s->exit_layer, 1, early_hook, s, err);
}

/* The parameters with defaults filled in and limits checked: the scheduler's one validation of them. */
static es_status resolve_params(const es_model *target, const es_sched_params *params, es_sched_params *out, es_err *err) {
    es_sched_params p = *params;
    const es_sched_params dflt = es_sched_default_params();
    if (p.n_threads <= 0) p.n_threads = dflt.n_threads;
    if (p.max_sessions <= 0) p.max_sessions = dflt.max_sessions;
    if (p.max_batch_tokens <= 0) p.max_batch_tokens = dflt.max_batch_tokens;
    if (p.prefill_chunk <= 0) p.prefill_chunk = dflt.prefill_chunk;
    if (p.max_tree_nodes <= 0) p.max_tree_nodes = dflt.max_tree_nodes;
    if (p.n_ctx <= 0) p.n_ctx = es_model_n_ctx_train(target);
    if (p.max_sessions > 65536) return es_fail(err, ES_ERR_INVALID_ARG, "max_sessions %d above 65536", p.max_sessions);
    if (p.max_batch_tokens > 8192) return es_fail(err, ES_ERR_INVALID_ARG, "max_batch_tokens %d above 8192", p.max_batch_tokens);
    if (p.n_ctx < 2 || p.n_ctx > (1 << 24)) return es_fail(err, ES_ERR_INVALID_ARG, "context of %d positions", p.n_ctx);
    if (p.policy != ES_SCHED_PIPELINE && p.policy != ES_SCHED_GATHER)
        return es_fail(err, ES_ERR_INVALID_ARG, "unknown scheduling policy %d", p.policy);
    if (p.max_groups <= 0) p.max_groups = dflt.max_groups;
    if (p.max_groups > SCHED_MAX_GROUPS)
        return es_fail(err, ES_ERR_INVALID_ARG, "max_groups %d above %d", p.max_groups, SCHED_MAX_GROUPS);
    if (!(p.batch_window_ms >= 0 && p.batch_window_ms <= 10000))
        return es_fail(err, ES_ERR_INVALID_ARG, "batch window must be in 0..10000 ms");
    /* a round is root + tree: it must fit one forward pass */
    p.max_tree_nodes = imin(imin(p.max_tree_nodes, ES_SPEC_MAX_NODES), p.max_batch_tokens - 1);
    if (p.prefill_chunk > p.max_batch_tokens) p.prefill_chunk = p.max_batch_tokens;
    if (p.max_new_tokens <= 0 || p.max_new_tokens > p.n_ctx) p.max_new_tokens = p.n_ctx;
    *out = p;
    return ES_OK;
}

/* KV pages that `tokens` rows take. */
static int64_t blocks_for(int tokens) { return (tokens + SCHED_KV_BLOCK - 1) / SCHED_KV_BLOCK; }

/* KV pool pages: the budget's, or full contexts for every session. */
static es_status pool_blocks(const es_sched *s, int64_t *out, es_err *err) {
    const es_sched_params *p = &s->p;
    const int64_t per_seq = blocks_for(p->n_ctx);
    int64_t blocks = per_seq * p->max_sessions;
    if (p->kv_memory_bytes > 0) {
        blocks = p->kv_memory_bytes / s->kv_bytes_per_block;
        if (blocks < 1)
            return es_fail(err, ES_ERR_INVALID_ARG, "KV budget of %lld bytes is below one page (%lld bytes)",
                           (long long)p->kv_memory_bytes, (long long)s->kv_bytes_per_block);
        if (blocks > per_seq * p->max_sessions) blocks = per_seq * p->max_sessions;
    }
    *out = blocks > INT32_MAX ? INT32_MAX : blocks;
    return ES_OK;
}

/* The target's context over `blocks` pages (*cp: its parameters); with a device KV budget, two tiers
 * and their predictor. */
static es_status target_ctx(es_sched *s, int64_t blocks, es_ctx_params *cp, es_err *err) {
    const es_sched_params *p = &s->p;
    *cp = es_ctx_default_params();
    cp->n_threads = p->n_threads;
    cp->n_ctx = p->n_ctx;
    cp->n_seq_max = p->max_sessions;
    cp->n_batch_max = p->max_batch_tokens;
    cp->kv_block_size = SCHED_KV_BLOCK;
    cp->kv_blocks = blocks;
    cp->n_logits_max = s->n_logits_max;
    cp->kv_type = p->kv_type;
    cp->backend = p->backend;
    cp->device = p->device;
    if (p->device_kv_memory_bytes > 0) { /* two tiers: the device holds part of the pool */
        if (p->backend != ES_BACKEND_VULKAN)
            return es_fail(err, ES_ERR_INVALID_ARG, "a device KV budget needs the target on a device (--device vulkan)");
        cp->device_kv_blocks = p->device_kv_memory_bytes / s->kv_bytes_per_block;
        if (cp->device_kv_blocks < 1)
            return es_fail(err, ES_ERR_INVALID_ARG, "device KV budget of %lld bytes is below one page (%lld bytes)",
                           (long long)p->device_kv_memory_bytes, (long long)s->kv_bytes_per_block);
    }
    es_status st = es_ctx_init(s->target, cp, &s->ctx, err);
    es_tier_info ti;
    if (st == ES_OK && (es_ctx_tier_info(s->ctx, &ti), ti.tiered)) st = apex_init(s, err);
    return st;
}

/* The server-side drafter's context, on the CPU: the target's pages plus room for one draft tree per
 * session. */
static es_status draft_ctx(es_sched *s, const es_ctx_params *cp, es_err *err) {
    const es_sched_params *p = &s->p;
    if (es_model_n_vocab(p->draft) != s->n_vocab)
        return es_fail(err, ES_ERR_MISMATCH, "draft vocabulary has %d tokens, target has %d", es_model_n_vocab(p->draft), s->n_vocab);
    const int64_t per_seq = blocks_for(p->n_ctx);
    es_ctx_params dp = *cp;
    dp.backend = ES_BACKEND_CPU;
    dp.n_batch_max = ES_SPEC_MAX_NODES + 1; /* the drafter's largest batch */
    dp.n_logits_max = 0;
    dp.kv_blocks = cp->kv_blocks + (int64_t)p->max_sessions * ((ES_SPEC_MAX_NODES + SCHED_KV_BLOCK) / SCHED_KV_BLOCK + 1);
    if (dp.kv_blocks > per_seq * p->max_sessions) dp.kv_blocks = per_seq * p->max_sessions;
    return es_ctx_init(p->draft, &dp, &s->dctx, err);
}

/* After the contexts: the knee of the pass curve, and with two tiers the predictor's start-up profile. */
static void calibrate(es_sched *s) {
    s->st.kv_blocks_total = es_ctx_kv_blocks_total(s->ctx);
    s->st.kv_bytes_per_block = s->kv_bytes_per_block;
    s->st.pass_row_ratio = 1; /* until a pass is measured */
    if (s->p.knee_tokens == 0) profile_knee(s);
    if (s->apex) {
        apex_calibrate(s, s->apex_on_cpu);
        es_ctx_tier_info(s->ctx, &s->tier_base);
        s->st.tiered = true;
        s->st.device_kv_blocks_total = s->tier_base.device_blocks_total;
    }
}

es_status es_sched_init(const es_model *target, const es_sched_params *params, es_sched **out, es_err *err) {
    *out = NULL;
    if (!target || !params) return es_fail(err, ES_ERR_INVALID_ARG, "scheduler: null target or parameters");
    es_sched_params p;
    es_status st = resolve_params(target, params, &p, err);
    if (st != ES_OK) return st;
    es_sched *s = calloc(1, sizeof *s);
    if (!s) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    s->p = p;
    s->target = target;
    s->n_ctx = p.n_ctx;
    s->n_vocab = es_model_n_vocab(target);
    s->eos = es_tokenizer_eos(es_model_tokenizer(target));
    s->knee = p.knee_tokens < 0 ? 0 : imin(p.knee_tokens > 0 ? p.knee_tokens : SCHED_KNEE_FALLBACK, p.max_batch_tokens);
    s->kv_bytes_per_block = es_model_kv_bytes_per_block(target, SCHED_KV_BLOCK, p.kv_type);
    if (s->kv_bytes_per_block <= 0) {
        free(s);
        return es_fail(err, ES_ERR_UNSUPPORTED, "the model's KV rows cannot be stored as %s", es_kv_type_name(p.kv_type));
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->ev_mu, NULL);
    const int64_t lg = (int64_t)p.max_sessions * (p.max_tree_nodes + 1);
    s->n_logits_max = (int)(lg < p.max_batch_tokens ? lg : p.max_batch_tokens);
    /* (every message below is built before s is freed: some read it) */
    int64_t blocks = 0;
    es_ctx_params cp;
    st = pool_blocks(s, &blocks, err);
    if (st == ES_OK) st = target_ctx(s, blocks, &cp, err);
    if (st == ES_OK && p.draft) st = draft_ctx(s, &cp, err);
    if (st == ES_OK && p.prefix_cache) st = es_ctx_prefix_cache_enable(s->ctx, err);
    if (st == ES_OK && p.n_exit_layers > 0) st = early_init(s, err);
    if (st == ES_OK) st = es_batch_builder_init(&s->bb, p.max_batch_tokens, err);
    s->n_slots = 2 * p.max_sessions;
    s->sess = calloc((size_t)s->n_slots, sizeof *s->sess);
    s->order = calloc((size_t)s->n_slots, sizeof *s->order);
    if (st == ES_OK && (!s->sess || !s->order)) st = es_fail(err, ES_ERR_NOMEM, "out of memory");
    if (st != ES_OK) {
        es_sched_free(s);
        return st;
    }
    calibrate(s);
    *out = s;
    return ES_OK;
}

/* Frees a session's resources and its slot. Compute thread (or es_sched_free), under mu. */
static void sess_release(es_sched *s, sess *x) {
    es_verifier_free(x->v);
    es_drafter_free(x->d);
    es_gmatcher_free(x->gm);
    es_gmatcher_free(x->gdm);
    es_grammar_free(x->grammar);
    /* its confirmed prefix stays in the prefix cache (slot i holds token i of the log; a failed
       session's rows may be half-written) */
    if (x->seq >= 0 && !x->failed && s->p.prefix_cache) es_seq_prefix_keep(s->ctx, x->seq, x->prompt, x->n_prompt + x->n_generated);
    if (x->seq >= 0) es_seq_close(s->ctx, x->seq);
    if (x->dseq >= 0 && s->dctx) es_seq_close(s->dctx, x->dseq);
    free(x->prompt);
    free(x->pend);
    free(x->work);
    memset(x, 0, sizeof *x);
    x->state = SESS_FREE;
}

void es_sched_free(es_sched *s) {
    if (!s) return;
    if (s->sess) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->cv);
        while (s->running) pthread_cond_wait(&s->cv, &s->mu);
        for (int i = 0; i < s->n_slots; i++)
            if (s->sess[i].state != SESS_FREE) sess_release(s, &s->sess[i]);
        pthread_mutex_unlock(&s->mu);
    }
    es_batch_builder_free(&s->bb);
    es_exit_heads_free(s->heads);
    free(s->early_logits);
    es_grammar_vocab_free(s->gvocab);
    es_ctx_free(s->dctx);
    es_ctx_free(s->ctx);
    es_apex_free(s->apex);
    free(s->sess);
    free(s->order);
    pthread_mutex_destroy(&s->ev_mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- thread-safe calls ---------------------------------------------------------------------------- */

/* An open session by id (not closed, finished or failed), under mu. */
static sess *find_locked(es_sched *s, uint64_t id) {
    for (int i = 0; i < s->n_slots; i++) {
        sess *x = &s->sess[i];
        if ((x->state == SESS_NEW || x->state == SESS_LIVE) && x->id == id) return x;
    }
    return NULL;
}

/* Pages admission may count on, under mu: free now, plus what closed sessions are about to return,
 * minus what sessions still prefilling will take for their prompts. */
static int64_t kv_available_locked(es_sched *s) {
    int64_t avail = s->st.kv_blocks_total - s->st.kv_blocks_used;
    for (int i = 0; i < s->n_slots; i++) {
        const sess *x = &s->sess[i];
        if (x->state == SESS_GONE) avail += x->kv_blocks;
        else if ((x->state == SESS_NEW || x->state == SESS_LIVE) && x->n_prefilled < x->n_prompt - 1) {
            const int64_t want = blocks_for(x->n_prompt) - x->kv_blocks;
            if (want > 0) avail -= want;
        }
    }
    return avail;
}

/* Admission, under mu: a free slot, a session count under max_sessions, and KV pages for the prompt
 * (in either tier: the host pool is the whole budget). *slot: where the session goes. */
static es_status admit_locked(es_sched *s, uint64_t id, int n_prompt, sess **slot, es_err *err) {
    int live = 0;
    *slot = NULL;
    for (int i = 0; i < s->n_slots; i++) {
        sess *x = &s->sess[i];
        if (x->state == SESS_NEW || x->state == SESS_LIVE) live++;
        else if (x->state == SESS_FREE && !*slot) *slot = x;
    }
    if (find_locked(s, id)) return es_fail(err, ES_ERR_INVALID_ARG, "the session is already open");
    if (live >= s->p.max_sessions) return es_fail(err, ES_ERR_BUSY, "all %d sessions are in use", s->p.max_sessions);
    if (!*slot) /* sessions closed during a long step: the step frees them when it ends */
        return es_fail(err, ES_ERR_BUSY, "%d closed sessions are still being released; retry shortly", s->n_slots - live);
    const int64_t need = blocks_for(n_prompt) + 1, avail = kv_available_locked(s);
    if (need > avail)
        return es_fail(err, ES_ERR_BUSY, "the KV pool has %lld free pages, the prompt needs %lld", (long long)(avail > 0 ? avail : 0),
                       (long long)need);
    return ES_OK;
}

/* The one validation of a session's request (the server and the HTTP front end rely on it): mode,
 * prompt, limits, stop tokens, rule and sampling values. *rule_out: the verifier's rule. */
static es_status check_open(const es_sched *s, const es_sched_session_params *sp, const int32_t *prompt, int n_prompt,
                            int *rule_out, es_err *err) {
    if (sp->mode != ES_MODE_EDGE && sp->mode != ES_MODE_AR && sp->mode != ES_MODE_SERVER_SPEC)
        return es_fail(err, ES_ERR_INVALID_ARG, "unknown session mode %d", sp->mode);
    if (sp->mode == ES_MODE_SERVER_SPEC && !s->dctx)
        return es_fail(err, ES_ERR_UNSUPPORTED, "server-spec sessions need a server started with a draft model");
    if (!prompt || n_prompt < 1) return es_fail(err, ES_ERR_INVALID_ARG, "empty prompt (send at least one token, e.g. BOS)");
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->n_vocab)
            return es_fail(err, ES_ERR_INVALID_ARG, "prompt token %d: id %d outside the vocabulary (0..%d)", i, prompt[i],
                           s->n_vocab - 1);
    if (sp->max_tokens < 1) return es_fail(err, ES_ERR_INVALID_ARG, "max_tokens must be at least 1");
    if (sp->logprobs && (sp->top_logprobs < 0 || sp->top_logprobs > ES_SPEC_MAX_TOP_LOGPROBS))
        return es_fail(err, ES_ERR_INVALID_ARG, "top_logprobs must be in 0..%d", ES_SPEC_MAX_TOP_LOGPROBS);
    if (sp->grammar_done < 0 || (sp->grammar_done > 0 && (!sp->grammar || sp->grammar_done >= n_prompt)))
        return es_fail(err, ES_ERR_INVALID_ARG, "%d of %d prompt tokens named as output already", sp->grammar_done, n_prompt);
    if (sp->n_stop < 0 || sp->n_stop > ES_SCHED_MAX_STOP || (sp->n_stop > 0 && !sp->stop))
        return es_fail(err, ES_ERR_INVALID_ARG, "at most %d stop tokens", ES_SCHED_MAX_STOP);
    for (int i = 0; i < sp->n_stop; i++)
        if (sp->stop[i] < 0 || sp->stop[i] >= s->n_vocab)
            return es_fail(err, ES_ERR_INVALID_ARG, "stop token %d outside the vocabulary (0..%d)", sp->stop[i], s->n_vocab - 1);
    /* the verifier's rule: AR samples one token per step with greedy (temperature 0) or match */
    int rule = sp->rule;
    if (sp->mode == ES_MODE_AR) rule = sp->sampling.temperature == 0 ? ES_ACCEPT_GREEDY : ES_ACCEPT_MATCH;
    if (rule != ES_ACCEPT_GREEDY && rule != ES_ACCEPT_MATCH && rule != ES_ACCEPT_REJECTION)
        return es_fail(err, ES_ERR_INVALID_ARG, "acceptance rule %d is not served (greedy, match, rejection)", rule);
    if (rule == ES_ACCEPT_GREEDY && sp->sampling.temperature != 0)
        return es_fail(err, ES_ERR_INVALID_ARG, "the greedy rule needs temperature 0 (use match or rejection to sample)");
    es_sampler *probe = NULL;
    es_status st = es_sampler_init(&sp->sampling, s->n_vocab, &probe, err); /* validates the sampling values */
    es_sampler_free(probe);
    if (st != ES_OK) return es_fail(err, ES_ERR_INVALID_ARG, "%s", err ? err->msg : "bad sampling parameters");
    *rule_out = rule;
    return ES_OK;
}

es_status es_sched_open(es_sched *s, const es_sched_session_params *sp, const int32_t *prompt, int n_prompt,
                        int *max_tokens_granted, es_err *err) {
    if (max_tokens_granted) *max_tokens_granted = 0;
    if (!s || !sp) return es_fail(err, ES_ERR_INVALID_ARG, "null scheduler or session parameters");
    int rule = 0;
    es_status st = check_open(s, sp, prompt, n_prompt, &rule, err);
    if (st != ES_OK) return st;

    int max_tokens = imin(sp->max_tokens, s->p.max_new_tokens);
    if (n_prompt >= s->n_ctx || max_tokens > s->n_ctx - n_prompt) {
        if (max_tokens_granted) *max_tokens_granted = imax(0, s->n_ctx - n_prompt);
        pthread_mutex_lock(&s->mu);
        s->st.sessions_refused++;
        pthread_mutex_unlock(&s->mu);
        return es_fail(err, ES_ERR_RANGE, "a prompt of %d tokens plus %d new tokens does not fit the context of %d positions",
                       n_prompt, sp->max_tokens, s->n_ctx);
    }

    /* allocate outside the lock; the prompt copy has room for the tokens to come (the session's
       token log, which names its KV pages for the prefix cache) */
    int32_t *pcopy = malloc(((size_t)n_prompt + (size_t)max_tokens) * sizeof(int32_t));
    es_spec_tree *pend = NULL, *work = NULL;
    es_grammar *gcopy = sp->grammar ? es_grammar_clone(sp->grammar) : NULL;
    if (sp->mode != ES_MODE_AR) work = malloc(sizeof *work);
    if (sp->mode == ES_MODE_EDGE) pend = malloc(sizeof *pend);
    if (!pcopy || (sp->mode != ES_MODE_AR && !work) || (sp->mode == ES_MODE_EDGE && !pend) || (sp->grammar && !gcopy)) {
        free(pcopy);
        free(pend);
        free(work);
        es_grammar_free(gcopy);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    memcpy(pcopy, prompt, (size_t)n_prompt * sizeof(int32_t));

    pthread_mutex_lock(&s->mu);
    sess *slot = NULL;
    st = admit_locked(s, sp->id, n_prompt, &slot, err);
    if (st != ES_OK) {
        if (st == ES_ERR_BUSY) s->st.sessions_refused++;
        pthread_mutex_unlock(&s->mu);
        free(pcopy);
        free(pend);
        free(work);
        es_grammar_free(gcopy);
        return st;
    }
    memset(slot, 0, sizeof *slot);
    slot->grammar = gcopy;
    slot->grammar_done = gcopy ? sp->grammar_done : 0;
    slot->state = SESS_NEW;
    slot->id = sp->id;
    slot->order = s->next_order++;
    slot->ready_since = es_now_s();
    slot->awaiting_tree = sp->mode == ES_MODE_EDGE;
    slot->pend = pend;
    slot->work = work;
    slot->mode = sp->mode;
    slot->rule = rule;
    slot->sampling = sp->sampling;
    slot->top_logprobs = sp->logprobs ? sp->top_logprobs : -1;
    slot->early = sp->early_exit && sp->mode == ES_MODE_EDGE && s->heads;
    for (int i = 0; i < sp->n_stop; i++) slot->stop[slot->n_stop++] = sp->stop[i];
    if (s->eos >= 0) slot->stop[slot->n_stop++] = s->eos;
    slot->prompt = pcopy;
    slot->n_prompt = n_prompt;
    slot->max_tokens = max_tokens;
    slot->seq = slot->dseq = -1;
    slot->group = -1;
    slot->root = pcopy[n_prompt - 1];
    s->st.sessions_opened++;
    s->st.prompt_tokens += n_prompt;
    s->st.by_mode[sp->mode].sessions_opened++;
    s->st.by_mode[sp->mode].prompt_tokens += n_prompt;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (max_tokens_granted) *max_tokens_granted = max_tokens;
    return ES_OK;
}

es_status es_sched_verify(es_sched *s, uint64_t session, uint32_t round, const es_spec_tree *tree, es_err *err) {
    if (!s || !tree) return es_fail(err, ES_ERR_INVALID_ARG, "null scheduler or tree");
    if (tree->n > s->p.max_tree_nodes && tree->n <= ES_SPEC_MAX_NODES)
        return es_fail(err, ES_ERR_RANGE, "tree of %d nodes (this server takes at most %d)", tree->n, s->p.max_tree_nodes);
    es_status st = es_spec_tree_validate(tree, s->n_vocab, err);
    if (st != ES_OK) return st;
    pthread_mutex_lock(&s->mu);
    sess *x = find_locked(s, session);
    if (!x) st = es_fail(err, ES_ERR_INVALID_ARG, "unknown session");
    else if (x->mode != ES_MODE_EDGE) st = es_fail(err, ES_ERR_PROTOCOL, "not an edge session");
    else if (x->has_tree || !x->awaiting_tree)
        st = es_fail(err, ES_ERR_PROTOCOL, "the tree of round %u is still being verified", x->round ? x->round - 1 : 0);
    else if (round != x->round)
        st = es_fail(err, ES_ERR_PROTOCOL, "round %u, expected %u", round, x->round);
    else if (x->rule == ES_ACCEPT_REJECTION && tree->n > 0 && !tree->has_q)
        st = es_fail(err, ES_ERR_FORMAT, "the rejection rule needs the draft's proposal distributions");
    else {
        /* root + nodes take tree->n + 1 slots from the root's position len - 1 */
        const int room = s->n_ctx - (x->n_prompt + x->n_generated);
        if (tree->n > room)
            st = es_fail(err, ES_ERR_RANGE, "tree of %d nodes; the context has room for %d more", tree->n, room);
    }
    if (st == ES_OK) {
        memcpy(x->pend, tree, sizeof *tree);
        x->has_tree = true;
        x->awaiting_tree = false;
        x->tree_arrival = es_now_s();
        if (x->verdict_at > 0) { /* the edge's round: the verdict's trip, its drafting, the tree's trip */
            const double r = x->tree_arrival - x->verdict_at;
            x->round_s = x->round_s > 0 ? 0.7 * x->round_s + 0.3 * r : r;
        }
        if (x->n_prefilled >= x->n_prompt - 1) x->ready_since = x->tree_arrival;
        x->round++;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

void es_sched_close(es_sched *s, uint64_t session) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    sess *x = find_locked(s, session);
    if (!x) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    x->client_closed = true;
    x->state = SESS_GONE;
    const bool self = s->stepping && pthread_equal(s->step_tid, pthread_self());
    if (!s->stepping) {
        /* no step holds the contexts (they are touched only by a step or under mu): free the slot and
           the pages now, so fast open/close churn never finds every slot held by closed sessions */
        sess_release(s, x);
        s->st.kv_blocks_used = es_ctx_kv_blocks_used(s->ctx);
    }
    pthread_cond_broadcast(&s->cv); /* else its pages are freed at the next step */
    pthread_mutex_unlock(&s->mu);
    /* wait out a delivery in progress (unless it is ours: we are inside its callback) */
    if (!self) {
        pthread_mutex_lock(&s->ev_mu);
        pthread_mutex_unlock(&s->ev_mu);
    }
}

void es_sched_get_limits(const es_sched *s, es_sched_limits *out) {
    out->n_ctx = s->n_ctx;
    out->max_tree_nodes = s->p.max_tree_nodes;
    out->max_new_tokens = s->p.max_new_tokens;
    out->max_batch_tokens = s->p.max_batch_tokens;
    out->max_sessions = s->p.max_sessions;
}

void es_sched_get_stats(es_sched *s, es_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    out->compute_cpu_seconds = s->caller_cpu;
    out->knee_rows = s->knee;
    out->pass_fixed_s = s->cost_a;
    out->pass_row_s = s->cost_b;
    out->sessions_active = 0;
    for (int m = 0; m < ES_SESSION_MODES; m++) out->by_mode[m].sessions_active = 0;
    for (int i = 0; i < s->n_slots; i++)
        if (s->sess[i].state == SESS_NEW || s->sess[i].state == SESS_LIVE) {
            out->sessions_active++;
            out->by_mode[s->sess[i].mode].sessions_active++;
        }
    pthread_mutex_unlock(&s->mu);
    out->compute_cpu_seconds += es_ctx_worker_cpu_seconds(s->ctx);
    if (s->dctx) out->compute_cpu_seconds += es_ctx_worker_cpu_seconds(s->dctx);
}

/* ---- the step --------------------------------------------------------------------------------- */

static void fail_sess(sess *x, es_status st, const es_err *e) {
    if (x->failed) return;
    x->failed = true;
    x->fail_st = st;
    snprintf(x->fail_err.msg, sizeof x->fail_err.msg, "%s", e ? e->msg : "");
}

/* Frees closed / finished / failed sessions and refreshes the KV numbers. Compute thread, under mu. */
static int round_rows(const es_sched *s, const sess *x);
static bool round_allowed(const es_sched *s, const sess *x);

static void reap_locked(es_sched *s) {
    int active = 0;
    for (int i = 0; i < s->n_slots; i++) {
        sess *x = &s->sess[i];
        if (x->state == SESS_GONE) sess_release(s, x);
        else if (x->state != SESS_FREE) active++;
    }
    s->st.sessions_active = active;
    s->st.kv_blocks_used = es_ctx_kv_blocks_used(s->ctx);
    es_prefix_cache_info pi;
    es_ctx_prefix_cache_info(s->ctx, &pi);
    s->st.prefix_cached_blocks = pi.cached_blocks;
    s->st.prefix_evicted_blocks = pi.evicted_blocks;
    if (s->apex) {
        es_tier_info ti;
        es_ctx_tier_info(s->ctx, &ti);
        s->st.tiered = true;
        s->st.device_kv_blocks_used = ti.device_blocks_used - ti.device_blocks_cached;
        s->st.device_kv_blocks_cached = ti.device_blocks_cached;
        s->st.device_kv_blocks_total = ti.device_blocks_total;
        s->st.host_tier_now = ti.host_seqs;
        s->st.tier_moves_to_host = ti.moves_to_host - s->tier_base.moves_to_host; /* (the start-up profile's not counted) */
        s->st.tier_moves_to_device = ti.moves_to_device - s->tier_base.moves_to_device;
        s->st.tier_auto_to_host = ti.auto_to_host - s->tier_base.auto_to_host;
        s->st.tier_copies_async = ti.xfer_async - s->tier_base.xfer_async;
        s->st.tier_copy_waits = ti.xfer_waits - s->tier_base.xfer_waits;
        es_apex_stats as;
        es_apex_get_stats(s->apex, &as);
        for (int k = 0; k < ES_PLAN_COUNT; k++) s->st.plans[k] = as.steps[k];
        s->st.prediction_error_p50 = as.prediction_error_p50;
        s->st.prediction_error_p90 = as.prediction_error_p90;
    }
}

/* Two KV tiers: the placement rule. A session belongs in the device tier when its whole context
 * (prompt + max_tokens, and a page for a draft tree) fits the free device pages beside what the
 * device-tier sessions will still take before they finish; otherwise in the host tier. New sessions
 * are placed by it (an empty sequence moves for free), and when device-tier sessions finish the
 * host-tier session with the longest context that now fits moves up (its attention gains the most).
 * A session therefore seldom outgrows the device tier; when one does (max_tokens is a bound, a tree
 * can take a page more), the backend moves it down by itself. */
static int64_t sess_pages(const sess *x) { return blocks_for(x->n_prompt + x->max_tokens) + 1; }

/* Free device pages less what the device-tier sessions (other than `skip`) will still take; under mu. */
static int64_t device_room_locked(es_sched *s, const sess *skip) {
    es_tier_info ti;
    es_ctx_tier_info(s->ctx, &ti);
    int64_t room = ti.device_blocks_total - ti.device_blocks_used + ti.device_blocks_cached; /* (cached copies make way) */
    for (int i = 0; i < s->n_slots; i++) {
        const sess *x = &s->sess[i];
        if (x == skip || x->state != SESS_LIVE || x->failed || x->seq < 0 || es_seq_tier(s->ctx, x->seq) != ES_KV_TIER_DEVICE) continue;
        const int64_t more = sess_pages(x) - blocks_for(es_seq_len(s->ctx, x->seq));
        if (more > 0) room -= more;
    }
    return room;
}

/* At the start of a step: the host-tier session with the longest context whose pages fit moves up.
 * Picked under mu, staged outside it (sequences are only closed by this thread, so it stays valid);
 * the copy itself is not waited for (the device runs it before the step's pass). One move per step
 * bounds the staging a step does. */
static void apex_promote(es_sched *s, bool from_run) {
    if (!s->apex) return;
    int seq = -1, len = -1;
    pthread_mutex_lock(&s->mu);
    if (!from_run && s->running) { /* es_sched_step beside es_sched_run: step() refuses it */
        pthread_mutex_unlock(&s->mu);
        return;
    }
    const int64_t room = device_room_locked(s, NULL);
    for (int i = 0; i < s->n_slots; i++) {
        const sess *x = &s->sess[i];
        if (x->state != SESS_LIVE || x->failed || x->seq < 0 || es_seq_tier(s->ctx, x->seq) != ES_KV_TIER_HOST) continue;
        const int l = es_seq_len(s->ctx, x->seq);
        if (sess_pages(x) <= room && l > len) seq = x->seq, len = l;
    }
    pthread_mutex_unlock(&s->mu);
    if (seq < 0) return;
    es_err e = {{0}};
    (void)es_seq_set_tier(s->ctx, seq, ES_KV_TIER_DEVICE, &e); /* ES_ERR_FULL or a failed copy: it stays on the host */
}

/* Two KV tiers, before a step is planned (under mu): the predictor picks this step's plan from the
 * rows each tier would bring. */
static void apex_plan_locked(es_sched *s) {
    s->skip_host = false;
    s->plan = ES_PLAN_DEVICE_ONLY;
    memset(&s->apex_step, 0, sizeof s->apex_step);
    if (!s->apex) return;
    es_apex_step *st = &s->apex_step;
    st->n_layer = es_model_n_layer(s->target);
    for (int i = 0; i < s->n_slots; i++) {
        sess *x = &s->sess[i];
        if (x->state != SESS_LIVE || x->failed || x->seq < 0) continue;
        const int left = x->n_prompt - 1 - x->n_prefilled;
        const int rows = (left > 0 ? imin(s->p.prefill_chunk, left) : 0) + (round_allowed(s, x) ? round_rows(s, x) : 0);
        if (rows <= 0) continue;
        const int64_t ctx = (int64_t)rows * (es_seq_len(s->ctx, x->seq) + rows);
        if (es_seq_tier(s->ctx, x->seq) == ES_KV_TIER_HOST) {
            st->host_rows += rows;
            st->host_ctx += ctx;
        } else {
            st->dev_rows += rows;
            st->dev_ctx += ctx;
        }
    }
    st->host_row_bytes = s->host_row_bytes;
    if (st->host_rows == 0) return; /* every row on the device: the plain pass, nothing to choose or count */
    s->plan = es_apex_step_choose(s->apex, st, &s->apex_pred_s);
    s->skip_host = s->plan == ES_PLAN_DEVICE_ONLY && st->host_rows > 0;
    es_ctx_set_hybrid_mode(s->ctx, s->plan == ES_PLAN_ASYMMETRIC ? ES_HYBRID_ASYMMETRIC : ES_HYBRID_ASYNC_OVERLAP);
}

/* A new matcher of x's grammar, past the output a resumed session has already. */
static es_status grammar_matcher(es_sched *s, sess *x, es_gmatcher **out, es_err *e) {
    const int n_end = x->n_stop < ES_GRAMMAR_MAX_END ? x->n_stop : ES_GRAMMAR_MAX_END;
    es_status st = es_gmatcher_init(x->grammar, s->gvocab, x->stop, n_end, out, e);
    if (st != ES_OK) return st;
    for (int i = x->n_prompt - x->grammar_done; i < x->n_prompt; i++)
        if (!es_gmatcher_accept(*out, x->prompt[i]))
            return es_fail(e, ES_ERR_INVALID_ARG, "the output so far leaves the response format at its token %d (id %d)",
                           i - (x->n_prompt - x->grammar_done), x->prompt[i]);
    return ES_OK;
}

/* The session's matchers: its stop tokens end the document (allowed only once it is complete). */
static es_status grammar_init(es_sched *s, sess *x, es_err *e) {
    es_status st = ES_OK;
    if (!s->gvocab && (st = es_grammar_vocab_init(es_model_tokenizer(s->target), &s->gvocab, e)) != ES_OK) return st;
    if ((st = grammar_matcher(s, x, &x->gm, e)) != ES_OK) return st;
    es_verifier_set_grammar(x->v, x->gm);
    if (!x->d) return ES_OK;
    if ((st = grammar_matcher(s, x, &x->gdm, e)) != ES_OK) return st;
    return es_drafter_set_grammar(x->d, x->gdm, e);
}

/* Creates sequences, verifiers and drafters of admitted sessions. Failures are reported with this
 * step's events (the session is put on the step's list). Compute thread, under mu. */
static void init_new_locked(es_sched *s) {
    for (int i = 0; i < s->n_slots; i++) {
        sess *x = &s->sess[i];
        if (x->state != SESS_NEW) continue;
        es_err e = {{0}};
        es_status st = es_seq_open(s->ctx, &x->seq, &e);
        if (st == ES_OK && s->apex && sess_pages(x) > device_room_locked(s, x)) /* placement: the device has no room */
            st = es_seq_set_tier(s->ctx, x->seq, ES_KV_TIER_HOST, &e);
        if (st == ES_OK && s->p.prefix_cache) { /* prompt pages computed before: not again */
            x->n_prefilled = es_seq_prefix_adopt(s->ctx, x->seq, x->prompt, x->n_prompt - 1);
            s->st.prefix_hit_tokens += x->n_prefilled;
        }
        if (st == ES_OK) {
            es_verifier_params vp = {(es_accept_rule)x->rule, x->sampling, 0.0};
            st = es_verifier_init(s->ctx, x->seq, &vp, &x->v, &e);
            if (st == ES_OK) es_verifier_add_history(x->v, x->prompt, x->n_prompt - 1);
            if (st == ES_OK && x->top_logprobs >= 0) st = es_verifier_set_logprobs(x->v, x->top_logprobs, &e);
            if (st == ES_OK && x->early) st = es_verifier_enable_provisional(x->v, &e);
        }
        if (st == ES_OK && x->mode == ES_MODE_SERVER_SPEC) {
            if ((st = es_seq_open(s->dctx, &x->dseq, &e)) == ES_OK) {
                es_drafter_params dp = s->p.draft_params;
                dp.sample = x->rule == ES_ACCEPT_REJECTION; /* ship q for the rejection rule */
                if (dp.sample && x->sampling.temperature > 0) dp.temperature = x->sampling.temperature;
                dp.seed = x->sampling.seed;
                st = es_drafter_init(s->dctx, x->dseq, &dp, &x->d, &e);
                if (st == ES_OK) st = es_drafter_set_bias(x->d, x->sampling.bias, x->sampling.n_bias, &e);
            }
            if (st == ES_OK) st = es_drafter_prefill(x->d, x->prompt, x->n_prompt - 1, &e);
        }
        if (st == ES_OK && x->grammar) st = grammar_init(s, x, &e);
        x->state = SESS_LIVE;
        x->plan_pf = x->plan_round = 0;
        x->failed = false;
        if (st != ES_OK) {
            fail_sess(x, st, &e);
            s->order[s->n_order++] = x;
        }
    }
}

/* Rows the session's next round needs now (0: none ready). Compute thread, under mu. */
static int round_rows(const es_sched *s, const sess *x) {
    if (s->p.park_after_tokens > 0 && x->n_generated >= s->p.park_after_tokens) return 0; /* parked (tests) */
    if (x->mode == ES_MODE_EDGE) return x->has_tree ? x->pend->n + 1 : 0;
    if (x->mode == ES_MODE_AR) return 1;
    if (!x->d) return 0;
    /* server-spec: the largest tree the drafter could grow (it is drafted for what is reserved) */
    const es_drafter_params *dp = &s->p.draft_params;
    int k = dp->mode == ES_DRAFT_TREE ? dp->tree_budget : (dp->adaptive ? es_drafter_k(x->d) : dp->k_max);
    k = imin(k, s->p.max_tree_nodes);
    k = imin(k, x->max_tokens - x->n_generated - 1);
    k = imin(k, s->n_ctx - (x->n_prompt + x->n_generated) - 1);
    return 1 + imax(k, 0);
}

/* Live edge sessions whose next tree has not arrived yet. Under mu. */
static int edge_awaited_locked(const es_sched *s) {
    int n = 0;
    for (int i = 0; i < s->n_slots; i++) {
        const sess *x = &s->sess[i];
        if (x->state == SESS_LIVE && !x->failed && x->mode == ES_MODE_EDGE && x->awaiting_tree && !x->has_tree) n++;
    }
    return n;
}

static int plan_locked(es_sched *s, bool commit, double now);

/* When a batch window starting now ends, on the clock pthread_cond_timedwait reads (CLOCK_REALTIME). */
static struct timespec window_end(const es_sched *s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const double wake = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + s->p.batch_window_ms * 1e-3;
    ts.tv_sec = (time_t)wake;
    ts.tv_nsec = (long)((wake - (double)ts.tv_sec) * 1e9);
    return ts;
}

/* ---- the pipeline (SpecEdge): edge sessions in groups served in turn ----------------------------
 * While the server verifies one group, the other groups' verdicts travel and their edges draft, so
 * the server need not wait for anybody's round trip, and each pass still holds a group's worth of
 * sessions (one pass over the weights for all of them). The number of groups follows the edges'
 * measured round time (verdict → next tree) against the profiled pass time; sessions are placed in
 * the group with the fewest rows when they join, and one is moved when leavers unbalance the
 * groups. AR, server-draft and prefill work rides along in every pass. */

static bool live_edge(const sess *x) { return x->state == SESS_LIVE && !x->failed && x->mode == ES_MODE_EDGE; }

/* Rows an edge session's round takes: its queued tree, else its last round. */
static int edge_rows(const sess *x) { return x->has_tree ? x->pend->n + 1 : imax(x->last_rows, 1); }

/* Whether session x may have its round in this step (the pipeline holds back other groups' trees). */
static bool round_allowed(const es_sched *s, const sess *x) {
    return s->serve_group < 0 || x->mode != ES_MODE_EDGE || x->group == s->serve_group;
}

int es_sched_groups_for(const es_pass_cost *cost, int n_edge, int rows, double round_s, int max_groups) {
    if (n_edge <= 1 || max_groups <= 1) return imax(imin(n_edge, 1), 0);
    const int cap = imin(imin(imin(max_groups, n_edge), imax(2, n_edge / 3)), SCHED_MAX_GROUPS);
    if (!cost || cost->n < 2) return imin(2, cap);
    /* no round measured yet: one group (the least compute per token) until the first rounds say a
       split pays; one group measures the rounds as well as two would */
    if (!(round_s > 0)) return 1;
    /* one cycle (every session one round) with g groups: g passes back to back, or one group's pass
       plus its round trip, whichever is longer */
    double cyc[SCHED_MAX_GROUPS + 1];
    cyc[1] = es_pass_cost_at(cost, rows) + round_s;
    int best = 1;
    for (int g = 2; g <= cap; g++) {
        const double t = es_pass_cost_at(cost, (double)rows / g);
        cyc[g] = g * t > t + round_s ? g * t : t + round_s;
        if (cyc[g] < cyc[best]) best = g;
    }
    if (best == 1 || cyc[1] < cyc[best] * (1 + ES_SCHED_GROUP_MARGIN)) return 1;
    for (int g = 2; g < best; g++) /* fewer groups keep passes larger: less compute for the same rows */
        if (cyc[g] <= cyc[best] * (1 + ES_SCHED_GROUP_MARGIN / 2)) return g;
    return best;
}

static void trial_begin(es_group_trial *t, bool warm, double now, int64_t tokens) {
    t->warm = warm;
    t->rounds = 0;
    t->t0 = now;
    t->tok0 = tokens;
}

static es_group_trial_entry *trial_entry(es_group_trial *t) { return &t->by_n[imin(imax(t->n_edge, 0), ES_SCHED_TRIAL_EDGES)]; }

/* The arm an entry asks for next: an unmeasured one (the split first), else the better, and the
 * loser every ES_SCHED_TRIAL_EXPLORE epochs (counted when `counting`: an epoch just ended). */
static int trial_next(es_group_trial_entry *e, bool counting) {
    if (e->rate[1] == 0) return 1;
    if (e->rate[0] == 0) return 0;
    const int best = e->rate[1] > e->rate[0] * (1 + ES_SCHED_TRIAL_MARGIN);
    if (counting && ++e->since_explore >= ES_SCHED_TRIAL_EXPLORE) {
        e->since_explore = 0;
        return 1 - best;
    }
    return best;
}

int es_group_trial_pick(es_group_trial *t, int model_g, int n_edge, double now, int64_t tokens) {
    if (model_g < 2) { /* paused: what was measured stays for when the model asks again */
        t->active = false;
        return model_g;
    }
    if (!t->active || model_g != t->model_g || n_edge != t->n_edge) { /* new conditions: their entry decides */
        t->model_g = model_g;
        t->n_edge = n_edge;
        es_group_trial_entry *e = trial_entry(t);
        if (e->model_g != model_g) *e = (es_group_trial_entry){.model_g = model_g};
        const int arm = trial_next(e, false);
        t->switched = t->switched || arm != t->arm;
        t->arm = arm;
        trial_begin(t, true, now, tokens);
    }
    t->active = true;
    return t->arm ? model_g : 1;
}

void es_group_trial_observe(es_group_trial *t, int rounds, double now, int64_t tokens) {
    if (!t->active || rounds <= 0) return;
    t->rounds += rounds;
    if (t->warm) {
        if (t->rounds >= t->n_edge) trial_begin(t, false, now, tokens);
        return;
    }
    if (t->rounds < (int64_t)ES_SCHED_TRIAL_ROUNDS * t->n_edge || !(now > t->t0)) return;
    es_group_trial_entry *e = trial_entry(t);
    const double r = (double)(tokens - t->tok0) / (now - t->t0);
    e->rate[t->arm] = e->rate[t->arm] > 0 ? 0.5 * (e->rate[t->arm] + r) : r;
    t->last_rate[0] = e->rate[0];
    t->last_rate[1] = e->rate[1];
    t->epochs++;
    const int arm = trial_next(e, e->rate[1 - t->arm] > 0);
    const bool changed = arm != t->arm;
    t->switched = t->switched || changed;
    t->arm = arm;
    trial_begin(t, changed, now, tokens);
}

/* Sizes the groups and places every live edge session in one. Compute thread, under mu. */
static void regroup_locked(es_sched *s) {
    int n_edge = 0, rows = 0, n_rt = 0;
    double rt = 0;
    for (int i = 0; i < s->n_slots; i++) {
        const sess *x = &s->sess[i];
        if (!live_edge(x)) continue;
        n_edge++;
        rows += edge_rows(x);
        if (x->round_s > 0) {
            rt += x->round_s;
            n_rt++;
        }
    }
    if (n_rt) s->st.round_trip_s = rt / n_rt;
    /* the profiled curve is in seconds, as the round time is; a configured knee's is not: two groups */
    int want = imin(n_edge, 1);
    bool trial_switch = false;
    if (s->p.policy == ES_SCHED_PIPELINE) {
        /* the cycle model's count, unless the measured check (es_group_trial) prefers one group */
        const int model = es_sched_groups_for(s->cost.n >= 2 ? &s->cost : NULL, n_edge, rows, n_rt ? rt / n_rt : 0, s->p.max_groups);
        want = !s->p.group_trial ? model : es_group_trial_pick(&s->trial, model, n_edge, es_now_s(), s->st.by_mode[ES_MODE_EDGE].tokens_generated);
        trial_switch = s->trial.active && s->trial.switched;
        s->trial.switched = false;
    }
    bool reform = false;
    if (want != s->n_groups) {
        /* sessions came or went, or the trial switched arms: follow at once; a drifting measurement:
           only once it has asked for the new count SCHED_REGROUP_VOTES steps in a row (no flapping
           between two counts) */
        reform = trial_switch || n_edge != s->last_n_edge || s->n_groups == 0 || ++s->regroup_votes >= SCHED_REGROUP_VOTES;
    } else {
        s->regroup_votes = 0;
    }
    s->last_n_edge = n_edge;
    if (reform) {
        s->n_groups = want;
        s->regroup_votes = 0;
        for (int i = 0; i < s->n_slots; i++) s->sess[i].group = -1;
    }
    s->st.groups = s->n_groups;
    if (s->due_group >= s->n_groups) s->due_group = 0;
    const int ng = imax(s->n_groups, 1);
    int grows[SCHED_MAX_GROUPS] = {0}, gn[SCHED_MAX_GROUPS] = {0};
    for (int i = 0; i < s->n_slots; i++) {
        const sess *x = &s->sess[i];
        if (live_edge(x) && x->group >= 0 && x->group < ng) {
            grows[x->group] += edge_rows(x);
            gn[x->group]++;
        }
    }
    /* newcomers, largest first, each into the group with the fewest rows (then sessions) */
    for (;;) {
        sess *big = NULL;
        for (int i = 0; i < s->n_slots; i++) {
            sess *x = &s->sess[i];
            if (live_edge(x) && (x->group < 0 || x->group >= ng) && (!big || edge_rows(x) > edge_rows(big))) big = x;
        }
        if (!big) break;
        int g = 0;
        for (int k = 1; k < ng; k++)
            if (grows[k] < grows[g] || (grows[k] == grows[g] && gn[k] < gn[g])) g = k;
        big->group = g;
        grows[g] += edge_rows(big);
        gn[g]++;
    }
    /* leavers can unbalance the groups: move one session (per step) from the group with the most
       sessions to the one with the fewest, the one that best narrows their difference in rows */
    int hi = 0, lo = 0;
    for (int k = 1; k < ng; k++) {
        if (gn[k] > gn[hi]) hi = k;
        if (gn[k] < gn[lo]) lo = k;
    }
    if (gn[hi] - gn[lo] >= 2) {
        sess *best = NULL;
        const int gap = grows[hi] - grows[lo];
        for (int i = 0; i < s->n_slots; i++) {
            sess *x = &s->sess[i];
            if (live_edge(x) && x->group == hi &&
                (!best || abs(gap - 2 * edge_rows(x)) < abs(gap - 2 * edge_rows(best))))
                best = x;
        }
        if (best) best->group = lo;
    }
}

/* Picks the group this step serves (s->serve_group) and, from the run loop, waits up to the batch
 * window for the stragglers of the group due: its turn is next, and its sessions' trees share a
 * pass. It does not wait when the group due has no tree yet while another group's are all in
 * (the rhythm slipped; that group goes now instead). Under mu; may release it while waiting. */
static void pick_group_locked(es_sched *s, bool wait, double *t0) {
    s->serve_group = -1;
    if (s->n_groups < 2) return; /* one group: the caller gathers */
    const struct timespec ts = window_end(s);
    bool waited = false;
    for (;;) {
        int ready[SCHED_MAX_GROUPS] = {0}, awaited[SCHED_MAX_GROUPS] = {0};
        for (int i = 0; i < s->n_slots; i++) {
            const sess *x = &s->sess[i];
            if (!live_edge(x) || x->group < 0 || x->group >= s->n_groups) continue;
            if (x->has_tree) ready[x->group]++;
            else if (x->awaiting_tree) awaited[x->group]++;
        }
        const int due = s->due_group;
        int other = -1; /* the next group after the one due with trees in, preferring a complete one */
        for (int k = 1; k < s->n_groups; k++) {
            const int g = (due + k) % s->n_groups;
            if (ready[g] > 0 && (other < 0 || (awaited[g] == 0 && awaited[other] > 0))) other = g;
        }
        s->serve_group = due;
        if (ready[due] == 0 && other >= 0) {
            s->serve_group = other;
            break;
        }
        if (!wait || s->stop || awaited[due] == 0 || (other >= 0 && awaited[other] == 0) ||
            plan_locked(s, false, es_now_s()) >= s->p.max_batch_tokens / 4)
            break;
        waited = true;
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0) wait = false; /* the window is over: one last look */
    }
    if (waited) {
        const double t1 = es_now_s();
        s->st.idle_seconds += t1 - *t0; /* waiting for work, not computing */
        *t0 = t1;
        init_new_locked(s);
    }
}

static int ready_cmp(const void *a, const void *b) {
    const sess *x = *(sess *const *)a, *y = *(sess *const *)b;
    if (x->ready_since != y->ready_since) return x->ready_since < y->ready_since ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order);
}

/* Picks this step's work after the sessions already on the list (init failures): prefill chunks and
 * rounds, oldest waiting first, within the row and logits budgets. commit = false only counts the
 * rows; commit = true also takes edge trees out of the queue. Returns the planned rows. Under mu. */
static int plan_locked(es_sched *s, bool commit, double now) {
    const int first = s->n_order;
    int n = first;
    for (int i = 0; i < s->n_slots; i++) {
        sess *x = &s->sess[i];
        if (x->state != SESS_LIVE || x->failed) continue;
        if (s->skip_host && x->seq >= 0 && es_seq_tier(s->ctx, x->seq) == ES_KV_TIER_HOST) continue; /* waits this step */
        if (x->n_prefilled < x->n_prompt - 1 || round_rows(s, x) > 0) s->order[n++] = x;
    }
    qsort(s->order + first, (size_t)(n - first), sizeof s->order[0], ready_cmp);
    int rows = s->p.max_batch_tokens, lrows = s->n_logits_max, kept = first;
    for (int k = first; k < n; k++) {
        sess *x = s->order[k];
        const int left = x->n_prompt - 1 - x->n_prefilled;
        int pf = 0, rr = 0;
        if (left > 0) pf = imin(imin(s->p.prefill_chunk, left), rows);
        if (pf == left) { /* the prompt is (or will be) in: a round may follow in the same batch */
            const int need = round_allowed(s, x) ? round_rows(s, x) : 0;
            if (need > 0 && need <= rows - pf && need <= lrows) rr = need;
        }
        if (pf == 0 && rr == 0) continue;
        rows -= pf + rr;
        lrows -= rr;
        if (commit) {
            x->plan_pf = pf;
            x->plan_round = rr;
            x->round_done = false;
            x->decoded = false;
            x->accept_s = 0;
            x->n_emit = 0;
            x->stop_reason = ES_STOP_NONE;
            x->queue_s = 0;
            if (rr && x->mode == ES_MODE_EDGE) { /* take the queued tree */
                es_spec_tree *t = x->work;
                x->work = x->pend;
                x->pend = t;
                x->has_tree = false;
                x->work_round = x->round - 1;
                x->queue_s = now - x->tree_arrival;
            }
            s->order[kept++] = x;
        }
    }
    if (commit) s->n_order = kept;
    else s->n_order = first;
    return s->p.max_batch_tokens - rows;
}

/* Stages the session's planned rows into the builder. On failure the builder is left as before. */
static es_status stage_sess(es_sched *s, sess *x, es_err *e) {
    const int n0 = s->bb.n, l0 = s->bb.n_logits;
    es_status st = ES_OK;
    if (x->plan_pf > 0) st = es_verifier_stage_prefill(x->v, x->prompt + x->n_prefilled, x->plan_pf, &s->bb, e);
    if (st == ES_OK && x->plan_round > 0) st = es_verifier_stage(x->v, x->root, x->work ? x->work : &s->empty, &s->bb, e);
    if (st != ES_OK) {
        s->bb.n = n0;
        s->bb.n_logits = l0;
    }
    x->staged_rows = s->bb.n - n0;
    return st;
}

static bool is_stop(const sess *x, int32_t t) {
    for (int i = 0; i < x->n_stop; i++)
        if (x->stop[i] == t) return true;
    return false;
}

/* After a successful decode: the prompt rows are in; the round is walked, its tokens cut at
 * max_tokens and the first stop token, and the draft side told. Compute thread, no lock. */
static void finish_sess(es_sched *s, sess *x, double t_start) {
    x->decoded = true; /* n_prefilled advances when the step is published */
    if (!x->plan_round) return;
    es_err e = {{0}};
    es_spec_verdict vd;
    es_status st = es_verifier_finish(x->v, &vd, &e);
    if (st != ES_OK) {
        fail_sess(x, st, &e);
        return;
    }
    const es_spec_tree *t = x->work ? x->work : &s->empty;
    int n = 0, stop = ES_STOP_NONE;
    for (int k = 0; k < vd.n_tokens && x->n_generated + n < x->max_tokens; k++) {
        n++;
        if (is_stop(x, vd.tokens[k])) { stop = ES_STOP_EOS; break; }
    }
    if (stop == ES_STOP_NONE) {
        if (x->n_generated + n >= x->max_tokens) stop = ES_STOP_LENGTH;
        else if (x->n_prompt + x->n_generated + n >= s->n_ctx) stop = ES_STOP_CONTEXT;
    }
    x->vd = vd;
    if (n < vd.n_tokens) { /* cut: report the path up to the cut, its last token as the bonus */
        x->vd.n_accepted = n - 1;
        x->vd.n_tokens = n;
        x->vd.bonus = vd.tokens[n - 1];
    }
    if (stop == ES_STOP_NONE && x->d) { /* server-spec: the draft keeps root + accepted path */
        const double a = es_now_s();
        st = es_drafter_accept(x->d, t, &vd, &e);
        x->accept_s = es_now_s() - a;
        if (st != ES_OK) {
            fail_sess(x, st, &e);
            return;
        }
    }
    x->root = vd.bonus;
    x->n_emit = n;
    x->stop_reason = stop;
    x->round_done = true;
    x->verify_s = es_now_s() - t_start;
}

/* Delivers one event unless the session was closed meanwhile (see the file comment). */
static void deliver(es_sched *s, sess *x, const es_sched_event *ev) {
    if (!s->p.on_event) return;
    pthread_mutex_lock(&s->ev_mu);
    pthread_mutex_lock(&s->mu);
    const bool closed = x->client_closed;
    pthread_mutex_unlock(&s->mu);
    if (!closed) s->p.on_event(s->p.ud, ev);
    pthread_mutex_unlock(&s->ev_mu);
}

double es_pass_cost_at(const es_pass_cost *c, double rows) {
    if (c->n <= 0) return rows;
    if (c->n == 1) return c->t[0] * rows / (c->rows[0] > 0 ? c->rows[0] : 1);
    if (rows <= c->rows[0]) return c->t[0];
    int k = 1;
    while (k < c->n - 1 && rows > c->rows[k]) k++;
    const double r0 = c->rows[k - 1], r1 = c->rows[k], t0 = c->t[k - 1], t1 = c->t[k];
    return r1 > r0 ? t0 + (t1 - t0) * (rows - r0) / (r1 - r0) : t1;
}

es_pass_cost es_pass_cost_linear(double knee) {
    es_pass_cost c = {2, {1, 64}, {knee + 1, knee + 64}};
    return c;
}

int es_sched_best_budget(const es_pass_cost *cost, int n_edge, int other_rows, int other_sessions, double p, int max_nodes,
                         double wait) {
    if (n_edge <= 0 || max_nodes <= 0) return max_nodes > 0 ? max_nodes : 1;
    if (p < 0.05) p = 0.05;
    if (p > 0.95) p = 0.95;
    if (!(wait > 0)) wait = 0; /* (NaN too) */
    /* tokens per unit of wall time for draft length L (L = 0: no draft): a step's pass plus the wait
       for its work, which is free compute (the server idles through it whatever L is) */
    double best = -1, yield = 1, pl = 1, none = 0;
    int best_l = 0;
    for (int l = 0; l <= max_nodes; l++) {
        if (l > 0) {
            pl *= p;
            yield += pl;
        }
        const double rate =
            (other_sessions + n_edge * yield) / (wait + es_pass_cost_at(cost, other_rows + (double)n_edge * (l + 1)));
        if (l == 0) none = rate;
        if (rate > best * (1 + 1e-9)) {
            best = rate;
            best_l = l;
        }
    }
    /* drafting must beat no draft by a margin: p and the costs are estimates, and a rejected draft
       token is real work once the pass is compute-bound */
    return best_l > 0 && best >= none * (1 + ES_SCHED_DRAFT_MARGIN) ? best_l : (int)ES_HINT_NO_DRAFT;
}

/* A session's first-node acceptance: its decayed counts pulled towards a prior of SCHED_P_PRIOR worth
 * SCHED_P_WEIGHT rounds. Per session because edges bring their own drafts (SLED): one edge's random
 * draft must not shrink a good edge's trees. The counts also decay in rounds without a tree, so a
 * session told not to draft drifts back to the prior and is measured again, instead of being held
 * at "no draft" forever by an estimate nothing can update. */
#define SCHED_P_PRIOR 0.8
#define SCHED_P_WEIGHT 2.0
#define SCHED_P_DECAY 0.9
static double session_p(const sess *x) {
    return (x->first_hit + SCHED_P_PRIOR * SCHED_P_WEIGHT) / (x->first_tried + SCHED_P_WEIGHT);
}

/* The suggested size of edge session x's next tree (es_sched_best_budget for the live session mix,
 * x's measured first-node acceptance and the measured wait between steps). Under mu. */
static int suggested_budget_locked(const es_sched *s, const sess *x) {
    if (s->knee <= 0) return 0;
    int n_edge = 0, other_rows = 0, other_sessions = 0;
    const bool grouped = s->n_groups >= 2 && x->group >= 0; /* only x's group shares its passes */
    for (int i = 0; i < s->n_slots; i++) {
        const sess *y = &s->sess[i];
        if (y->state != SESS_LIVE && y->state != SESS_NEW) continue;
        if (y->mode == ES_MODE_EDGE) {
            n_edge += !grouped || y->group == x->group;
            continue;
        }
        other_sessions++;
        other_rows += y->mode == ES_MODE_AR ? 1 : imax(y->last_rows, 1);
    }
    const double p = session_p(x);
    /* the pass times profiled at start-up (seconds, so the measured wait adds to them), else the
       linear curve of the configured knee (in rows: no wait, compute alone decides) */
    if (s->cost.n >= 2)
        return es_sched_best_budget(&s->cost, n_edge, other_rows, other_sessions, p, s->p.max_tree_nodes, s->st.step_wait_s);
    const es_pass_cost lin = es_pass_cost_linear(s->knee);
    return es_sched_best_budget(&lin, n_edge, other_rows, other_sessions, p, s->p.max_tree_nodes, 0);
}

/* Publishes one session's step under mu and delivers its events. */
static void publish_sess(es_sched *s, sess *x) {
    es_sched_event ev;
    memset(&ev, 0, sizeof ev);
    ev.session = x->id;
    pthread_mutex_lock(&s->mu);
    const bool closed = x->client_closed;
    s->st.draft_seconds += x->accept_s;
    if (x->decoded) {
        x->n_prefilled += x->plan_pf;
        s->st.prefill_rows += x->plan_pf;
    }
    if (!x->failed) {
        if (x->round_done) {
            if (x->mode == ES_MODE_AR) s->st.ar_rows += x->plan_round ? 1 : 0;
            else {
                const int nodes = x->work->n;
                s->st.verify_rows += nodes + 1;
                s->st.rounds++;
                s->st.drafted += nodes;
                s->st.accepted += x->vd.n_accepted;
                s->st.by_mode[x->mode].rounds++;
                s->st.by_mode[x->mode].drafted += nodes;
                s->st.by_mode[x->mode].accepted += x->vd.n_accepted;
                for (int k = 0; k < x->vd.n_accepted && k < ES_SCHED_ACCEPT_DEPTHS; k++) s->st.accept_depth[k]++;
                if (x->early_sent) { /* the uncut verdict against the provisional one */
                    const es_spec_verdict *a = &x->early_vd;
                    s->st.early_agreed += a->n_accepted == x->vd.n_accepted && a->bonus == x->vd.bonus &&
                                          !memcmp(a->path, x->vd.path, (size_t)a->n_accepted * sizeof(int32_t));
                }
                x->last_rows = nodes + 1;
                /* how often its draft's first token is right: what a 1-node tree earns */
                x->first_tried = x->first_tried * SCHED_P_DECAY + (nodes > 0);
                x->first_hit = x->first_hit * SCHED_P_DECAY + (nodes > 0 && x->vd.n_accepted > 0);
            }
            s->st.tokens_generated += x->n_emit;
            s->st.by_mode[x->mode].tokens_generated += x->n_emit;
        }
    }
    x->early_sent = false; /* the next round's */
    if (closed) { /* nothing more to say; the slot is reaped by the next step */
        pthread_mutex_unlock(&s->mu);
        return;
    }
    x->kv_blocks = x->seq >= 0 ? blocks_for(es_seq_len(s->ctx, x->seq)) : 0;
    x->ready_since = es_now_s();
    bool ended = x->failed;
    if (!x->failed && x->round_done) {
        memcpy(x->prompt + x->n_prompt + x->n_generated, x->vd.tokens, (size_t)x->n_emit * sizeof(int32_t)); /* the log */
        x->n_generated += x->n_emit;
        ended = x->stop_reason != ES_STOP_NONE;
        if (x->mode == ES_MODE_EDGE && !ended) {
            x->awaiting_tree = true; /* before the verdict goes out */
            x->verdict_at = x->ready_since;
        }
        if (x->mode == ES_MODE_EDGE) ev.suggested_budget = (uint16_t)suggested_budget_locked(s, x);
    }
    if (ended) {
        x->state = SESS_GONE;
        if (x->failed) s->st.sessions_failed++;
    }
    pthread_mutex_unlock(&s->mu);

    if (x->failed) {
        ev.type = ES_EV_ERROR;
        ev.code = x->fail_st;
        ev.msg = x->fail_err.msg;
        ev.stop = ES_STOP_ERROR;
        ev.n_generated = x->n_generated;
        deliver(s, x, &ev);
        return;
    }
    if (!x->round_done) return; /* a prefill chunk only */
    ev.stop = x->stop_reason;
    ev.n_generated = x->n_generated;
    if (x->mode == ES_MODE_EDGE) {
        ev.type = ES_EV_VERDICT;
        ev.round = x->work_round;
        ev.verdict = &x->vd;
        ev.tokens = x->vd.tokens;
        ev.n_tokens = x->vd.n_tokens;
        ev.queue_us = to_us(x->queue_s);
        ev.verify_us = to_us(x->verify_s);
        ev.logprobs = es_verifier_logprobs(x->v);
    } else {
        ev.type = ES_EV_TOKENS;
        ev.tokens = x->vd.tokens;
        ev.n_tokens = x->n_emit;
        ev.logprobs = es_verifier_logprobs(x->v);
    }
    deliver(s, x, &ev);
    if (ended) {
        es_sched_event done;
        memset(&done, 0, sizeof done);
        done.type = ES_EV_DONE;
        done.session = x->id;
        done.stop = x->stop_reason;
        done.n_generated = x->n_generated;
        deliver(s, x, &done);
    }
}

/* True when a step would do something: sessions to create or free, prompt rows, or rounds. Under mu. */
static bool has_work_locked(const es_sched *s) {
    for (int i = 0; i < s->n_slots; i++) {
        const sess *x = &s->sess[i];
        if (x->state == SESS_NEW || x->state == SESS_GONE) return true;
        if (x->state == SESS_LIVE && (x->n_prefilled < x->n_prompt - 1 || round_rows(s, x) > 0)) return true;
    }
    return false;
}

/* One step. from_run: called by es_sched_run (the batch window applies); otherwise by es_sched_step,
 * which is refused while a run loop is active (one compute thread at a time). */
/* What one step did, for its accounting. */
typedef struct step_result {
    int rows, max_rows;   /* rows in its passes; the largest pass */
    double pass_s;        /* the batched pass's wall time (0: none, or it failed and sessions ran alone) */
    double draft_s;       /* server-spec drafting */
    int n_pass, n_pass_edge; /* sessions in its passes; of them, edge sessions with a round */
} step_result;

/* The step's work, under mu: new sessions set up, the edge group due or a gathering wait, the plan
 * (APEX's and the rows), the wait measured. Returns the plan's start time; *t0 moves past a wait. */
static double gather_locked(es_sched *s, bool from_run, double *t0) {
    s->stepping = true;
    s->step_tid = pthread_self();
    s->n_order = 0;
    s->skip_host = false;
    reap_locked(s);
    init_new_locked(s);
    regroup_locked(s);
    s->serve_group = -1;
    if (s->p.policy == ES_SCHED_PIPELINE && s->n_groups >= 2) {
        pick_group_locked(s, from_run && s->p.batch_window_ms > 0, t0);
    } else if (from_run && s->p.batch_window_ms > 0 && plan_locked(s, false, *t0) < s->p.max_batch_tokens / 4) {
        /* Gathering (the gather policy, and the pipeline with one group): edge sessions whose verdict
           is out will send their next tree within about one draft + round trip. Wait (up to the
           window) until every one of them has, so their verifications share one pass over the weights
           instead of each paying for its own; woken by every es_sched_verify / open. Waiting costs
           latency, never compute. */
        const struct timespec ts = window_end(s);
        while (!s->stop && edge_awaited_locked(s) > 0 && plan_locked(s, false, es_now_s()) < s->p.max_batch_tokens / 4)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0) break; /* window over */
        const double t1 = es_now_s();
        s->st.idle_seconds += t1 - *t0; /* waiting for work, not computing */
        *t0 = t1;
        init_new_locked(s); /* (no reap here: sessions on this step's list must stay until published) */
    }
    apex_plan_locked(s);
    const double t_plan = es_now_s();
    if (plan_locked(s, true, t_plan) > 0 && s->last_end > 0) {
        /* the wait for this step's work (edges drafting, the network, the batch window), counted
           before this step's verdicts carry their hints; capped, so a server that sat empty for
           minutes does not skew the average for long */
        const double w = t_plan - s->last_end < 0.5 ? t_plan - s->last_end : 0.5;
        s->st.step_wait_s = s->n_waits++ > 0 ? 0.8 * s->st.step_wait_s + 0.2 * w : w;
    }
    return t_plan;
}

/* Server-spec trees, drafted for the rows reserved. */
static void draft_trees(es_sched *s, step_result *r) {
    for (int k = 0; k < s->n_order; k++) {
        sess *x = s->order[k];
        if (x->failed || x->mode != ES_MODE_SERVER_SPEC || !x->plan_round) continue;
        es_err e = {{0}};
        const double a = es_now_s();
        es_status st = es_drafter_draft(x->d, x->root, x->plan_round - 1, x->work, &e);
        r->draft_s += es_now_s() - a;
        if (st != ES_OK) fail_sess(x, st, &e);
    }
}

/* One batch for everybody; if it fails (the KV pool ran out, say), each session alone, so only the
 * ones that cannot proceed fail. */
static void run_passes(es_sched *s, double t_plan, step_result *r) {
    es_batch_builder_clear(&s->bb);
    for (int k = 0; k < s->n_order; k++) {
        sess *x = s->order[k];
        es_err e = {{0}};
        if (x->failed) continue;
        es_status st = stage_sess(s, x, &e);
        if (st != ES_OK) fail_sess(x, st, &e);
    }
    if (s->bb.n == 0) return;
    es_err e = {{0}};
    es_batch b = es_batch_builder_batch(&s->bb);
    const double t_dec = es_now_s();
    if (es_decode(s->ctx, &b, &e) == ES_OK) {
        r->rows = r->max_rows = s->bb.n;
        r->pass_s = es_now_s() - t_dec;
        for (int k = 0; k < s->n_order; k++)
            if (!s->order[k]->failed && s->order[k]->staged_rows > 0) finish_sess(s, s->order[k], t_plan);
        return;
    }
    for (int k = 0; k < s->n_order; k++) {
        sess *x = s->order[k];
        if (x->failed) continue;
        es_batch_builder_clear(&s->bb);
        es_status st = stage_sess(s, x, &e);
        if (st == ES_OK && s->bb.n > 0) {
            b = es_batch_builder_batch(&s->bb);
            st = es_decode(s->ctx, &b, &e);
            if (st == ES_OK) {
                r->rows += s->bb.n;
                r->max_rows = imax(r->max_rows, s->bb.n);
                finish_sess(s, x, t_plan);
            }
        }
        if (st != ES_OK) fail_sess(x, st, &e);
    }
}

/* Two KV tiers, after the passes: sessions that ran in the host tier are counted, the predictor
 * learns the measured time of the plan it chose. */
static void apex_after(es_sched *s, const step_result *r) {
    if (!s->apex) return;
    for (int k = 0; k < s->n_order; k++) {
        sess *x = s->order[k];
        if (x->decoded && !x->ran_host && x->seq >= 0 && es_seq_tier(s->ctx, x->seq) == ES_KV_TIER_HOST) {
            x->ran_host = true;
            s->st.host_tier_sessions++;
        }
    }
    if (r->pass_s > 0 && s->apex_step.host_rows > 0) es_apex_observe(s->apex, s->plan, &s->apex_step, s->apex_pred_s, r->pass_s);
}

/* The step in the stats, under mu: rows, batch sizes, the per-row cost diagnostic, the next group's
 * turn. */
static void account_locked(es_sched *s, const step_result *r) {
    s->last_end = es_now_s(); /* the next step's wait starts here */
    /* measured / profiled per-row pass time, a diagnostic for the stats (passes of 4+ rows; live
       batches also attend over each session's prefix, which the profile's fresh sequences do not) */
    if (r->pass_s > 0 && r->rows >= 4 && s->cost.n >= 2) {
        const double c1 = s->cost.t[0], pred = es_pass_cost_at(&s->cost, r->rows) - c1;
        if (pred > 0) {
            double obs = (r->pass_s - c1) / pred;
            obs = obs < 0.25 ? 0.25 : obs > 4 ? 4 : obs;
            s->st.pass_row_ratio = 0.9 * s->st.pass_row_ratio + 0.1 * obs;
        }
    }
    s->st.steps++;
    s->st.batch_rows += r->rows;
    if (r->max_rows > s->st.max_batch_rows) s->st.max_batch_rows = r->max_rows;
    s->st.batch_hist[es_sched_batch_bucket(r->rows)]++;
    s->st.groups_sum += s->n_groups;
    s->st.pass_sessions += r->n_pass;
    s->st.pass_edge_sessions += r->n_pass_edge;
    if (s->p.policy == ES_SCHED_PIPELINE && s->p.group_trial) {
        es_group_trial_observe(&s->trial, r->n_pass_edge, s->last_end, s->st.by_mode[ES_MODE_EDGE].tokens_generated);
        s->st.trial_rate_one = s->trial.last_rate[0]; /* (the entry of the last epoch measured) */
        s->st.trial_rate_split = s->trial.last_rate[1];
        s->st.trial_epochs = s->trial.epochs;
        s->st.trial_model_groups = s->trial.active ? s->trial.model_g : 0;
    }
    /* the next group's turn (a step of prefill or AR rows only leaves the turn where it is) */
    if (r->n_pass_edge > 0 && s->serve_group >= 0 && s->n_groups > 0) s->due_group = (s->serve_group + 1) % s->n_groups;
}

/* One step: gather the work → draft server-spec trees → one batched pass → publish the results →
 * account. Returns the rows computed, or a negative es_status. */
static int step(es_sched *s, bool from_run, es_err *err) {
    const double cpu0 = thread_cpu_s();
    double t0 = es_now_s();
    apex_promote(s, from_run);
    pthread_mutex_lock(&s->mu);
    if (!from_run && s->running) {
        pthread_mutex_unlock(&s->mu);
        return -(int)es_fail(err, ES_ERR_INVALID_ARG, "es_sched_step while es_sched_run is active");
    }
    const double t_plan = gather_locked(s, from_run, &t0);
    pthread_mutex_unlock(&s->mu);

    step_result r = {0};
    draft_trees(s, &r);
    run_passes(s, t_plan, &r);
    for (int k = 0; k < s->n_order; k++) { /* counted before publishing reaps them */
        const sess *x = s->order[k];
        r.n_pass += x->decoded;
        r.n_pass_edge += x->decoded && x->mode == ES_MODE_EDGE && x->plan_round;
    }
    apex_after(s, &r);
    for (int k = 0; k < s->n_order; k++) publish_sess(s, s->order[k]);

    pthread_mutex_lock(&s->mu);
    reap_locked(s); /* finished and failed sessions give their pages back now */
    if (r.rows > 0) account_locked(s, &r);
    const int worked = s->n_order;
    s->n_order = 0;
    if (worked > 0 || r.rows > 0) s->st.busy_seconds += es_now_s() - t0;
    s->st.draft_seconds += r.draft_s;
    s->caller_cpu += thread_cpu_s() - cpu0;
    s->stepping = false;
    pthread_cond_broadcast(&s->cv); /* es_sched_run may be waiting for this step to end */
    pthread_mutex_unlock(&s->mu);
    return r.rows;
}

int es_sched_step(es_sched *s, es_err *err) { return step(s, false, err); }

const char *es_sched_policy_name(int policy) {
    return policy == ES_SCHED_PIPELINE ? "pipeline" : policy == ES_SCHED_GATHER ? "gather" : NULL;
}

int es_sched_policy_parse(const char *name) {
    if (name && !strcmp(name, "pipeline")) return ES_SCHED_PIPELINE;
    if (name && !strcmp(name, "gather")) return ES_SCHED_GATHER;
    return -1;
}

int es_sched_batch_bucket(int64_t rows) {
    int b = 0;
    for (int64_t le = 1; b < ES_SCHED_BATCH_HIST - 1 && rows > le; le *= 2) b++;
    return b;
}

es_status es_sched_run(es_sched *s, es_err *err) {
    pthread_mutex_lock(&s->mu);
    if (s->running) {
        pthread_mutex_unlock(&s->mu);
        return es_fail(err, ES_ERR_INVALID_ARG, "the scheduler is already running");
    }
    while (s->stepping) pthread_cond_wait(&s->cv, &s->mu); /* one compute thread at a time */
    s->running = true;
    while (!s->stop) {
        if (!has_work_locked(s)) {
            const double a = es_now_s();
            pthread_cond_wait(&s->cv, &s->mu);
            s->st.idle_seconds += es_now_s() - a;
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        step(s, true, err);
        pthread_mutex_lock(&s->mu);
    }
    s->stop = false; /* consumed: a later es_sched_run runs again */
    s->running = false;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return ES_OK;
}

void es_sched_stop(es_sched *s) {
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}
