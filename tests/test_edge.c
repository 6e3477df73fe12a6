/* test_edge.c — the edge client against an in-process server (es_server_start on an ephemeral port):
 *  - 8 edges at once in threads, different drafts (int8 copy, distilled mid/small, random), chain and
 *    tree, proactive on and off: each emits exactly the golden greedy tokens; bets hit with a good
 *    draft;
 *  - seeded sampling (match, rejection) reproduces for equal seeds, and proactive on == off;
 *  - plain clients: AR (--no-draft) and server-spec equal the golden tokens;
 *  - an emulated 20 ms RTT makes a run slower but not different;
 *  - a draft with another vocabulary is refused (ES_ERR_MISMATCH);
 *  - a second session while the server has one slot: ES_ERR_BUSY;
 *  - the server restarted mid-generation: the edge reconnects and resumes, output still golden;
 *  - the server killed mid-generation with fallback_local: the draft finishes alone;
 *  - a wrong api key is refused; a peer that never answers times out (io_timeout_s);
 *  - early exits (a server with an exit head at layer 3): edges that ask get one EARLY per round and
 *    emit the golden tokens, with the zero-training head and with a deliberately bad adapter; seeded
 *    sampling gives the same tokens with and without early exits; edges that do not ask get none; a
 *    version-1 HELLO is answered with version 1 and an early-exit OPEN on it is refused. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "edge/edge.h"
#include "edgespec.h"
#include "gguf/gguf.h"
#include "kernels/types.h"
#include "wire/proto.h"
#include "server/server.h"
#include "testutil.h"

#define N_GOLDEN 20
#define GEN 64 /* tokens per golden check (>= 48 asked) */

typedef struct golden {
    int32_t prompt[64];
    int np;
    int32_t gen[512];
    int ng;
} golden;

static golden g_gold[N_GOLDEN];
static int g_n_gold;
static const int32_t k_stop[2] = {1, 2};

static void quiet_log(void *ud, int level, const char *msg) {
    (void)ud;
    if (getenv("EDGESPEC_DEBUG") || level == 0) fprintf(stderr, "[%s] %s\n", level == 0 ? "error" : "log", msg);
}

static void load_golden(void) {
    size_t len;
    char *text = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), &len);
    CHECK(text != NULL);
    for (char *line = text ? strtok(text, "\n") : NULL; line && g_n_gold < N_GOLDEN; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        golden *g = &g_gold[g_n_gold++];
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "prompt_ids")) if (g->np < 64) g->prompt[g->np++] = x->valueint;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "gen_ids")) if (g->ng < 512) g->gen[g->ng++] = x->valueint;
        cJSON_Delete(j);
    }
    free(text);
    CHECK(g_n_gold == N_GOLDEN);
}

static int g_knee = 64; /* fixed: these tests check outputs and bets, not the load policy */

static const char *g_exit_file; /* start_server: exit heads at layer 3 from this file ("" zero-training, NULL none) */

static es_server *start_server(es_model *target, es_model *server_draft, int port, int max_sessions) {
    es_server_params sp = es_server_default_params();
    if (g_exit_file) {
        sp.sched.exit_layers[0] = 3;
        sp.sched.n_exit_layers = 1;
        sp.sched.exit_file = g_exit_file[0] ? g_exit_file : NULL;
    }
    sp.sched.knee_tokens = g_knee;
    sp.host = "127.0.0.1";
    sp.port = port;
    sp.target = target;
    sp.target_tok = es_model_tokenizer(target);
    sp.sched.n_threads = 1;
    if (max_sessions > 0) sp.sched.max_sessions = max_sessions;
    sp.sched.draft = server_draft;
    sp.log = quiet_log;
    es_server *s = NULL;
    es_err err = {{0}};
    CHECK_OK(es_server_start(&sp, &s, &err), &err);
    return s;
}

static es_edge_params edge_params(int port, const es_model *draft) {
    es_edge_params p = es_edge_default_params();
    p.host = "127.0.0.1";
    p.port = port;
    p.draft = draft;
    p.draft_params.k_max = 6;
    p.draft_params.tree_budget = 24;
    p.draft_params.tree_depth = 5;
    p.draft_params.tree_width = 3;
    p.io_timeout_s = 30;
    p.log = quiet_log;
    return p;
}

static int same_prefix(const int32_t *a, const int32_t *b, int n) {
    int k = 0;
    while (k < n && a[k] == b[k]) k++;
    return k;
}

/* ---- 8 concurrent edges, greedy ---------------------------------------------------------------- */

typedef struct job {
    es_edge_params p;
    const golden *g;
    int max_tokens;
    /* results */
    es_status st, connect_st;
    char msg[512];
    int32_t out[GEN + 1];
    es_edge_stats stats;
    int streamed;
} job;

static void count_tokens(void *ud, const int32_t *toks, int n, double t_s) {
    (void)toks;
    (void)t_s;
    ((job *)ud)->streamed += n;
}

static void *run_job(void *arg) {
    job *j = arg;
    es_err err = {{0}};
    es_edge *e = NULL;
    j->connect_st = es_edge_connect(&j->p, &e, &err);
    if (j->connect_st != ES_OK) {
        snprintf(j->msg, sizeof j->msg, "%s", err.msg);
        return NULL;
    }
    j->st = es_edge_generate(e, j->g->prompt, j->g->np, j->max_tokens, k_stop, 2, j->out, &j->stats, count_tokens, j, &err);
    if (j->st != ES_OK) snprintf(j->msg, sizeof j->msg, "%s", err.msg);
    es_edge_free(e);
    return NULL;
}

static void check_golden_job(const job *j, const char *what) {
    CHECK_MSG(j->connect_st == ES_OK && j->st == ES_OK, "%s: %s", what, j->msg);
    const int want = j->g->ng < j->max_tokens ? j->g->ng : j->max_tokens;
    const int same = same_prefix(j->out, j->g->gen, want);
    CHECK_MSG(j->stats.n_generated == want && same == want, "%s: %d tokens, agrees with golden on %d of %d", what,
              j->stats.n_generated, same, want);
    CHECK(j->streamed == want - (j->stats.stop == ES_STOP_EOS ? 1 : 0));
    CHECK(j->stats.bytes_sent > 0 && j->stats.bytes_received > 0 && j->stats.frames_sent > 0);
    CHECK(j->stats.ttft_s > 0 && j->stats.ttft_s <= j->stats.total_s);
}

/* The server's count of edge trees by how they were drafted (VERIFY's drafted field) against the
 * edges' own: one tree per round; a hit's pre-drafted tree is sent unless the session ended on that
 * verdict, so the hits the server saw are at most the edges'. */
static void check_trees(es_server *srv, const es_server_stats *before, const job *jobs, int n, const char *what) {
    es_server_stats st;
    es_server_get_stats(srv, &st);
    int64_t d[ES_TREE_ORIGINS], sum = 0;
    long rounds = 0, hits = 0, kept = 0, bets = 0; /* bets: placed while a tree travelled, or moved by an EARLY */
    for (int k = 0; k < ES_TREE_ORIGINS; k++) sum += d[k] = st.trees[k] - before->trees[k];
    for (int i = 0; i < n; i++) {
        rounds += jobs[i].stats.rounds;
        hits += jobs[i].stats.proactive_hits;
        kept += jobs[i].stats.early_kept;
        bets += jobs[i].stats.proactive_attempts + jobs[i].stats.early_frames;
    }
    printf("%s: server saw %lld fresh, %lld bet_hit, %lld bet_miss, %lld early_hit trees for %ld rounds (%ld bets, %ld hits, "
           "%ld early kept)\n", what, (long long)d[ES_TREE_FRESH], (long long)d[ES_TREE_BET_HIT], (long long)d[ES_TREE_BET_MISS],
           (long long)d[ES_TREE_EARLY_HIT], rounds, bets, hits, kept);
    CHECK_MSG(sum == rounds, "%s: %lld trees counted for %ld rounds", what, (long long)sum, rounds);
    CHECK_MSG(d[ES_TREE_BET_HIT] + d[ES_TREE_BET_MISS] + d[ES_TREE_EARLY_HIT] > 0, "%s: no tree drafted under a bet counted", what);
    CHECK(d[ES_TREE_BET_HIT] <= hits && d[ES_TREE_EARLY_HIT] <= kept);
    CHECK(d[ES_TREE_BET_HIT] + d[ES_TREE_BET_MISS] + d[ES_TREE_EARLY_HIT] <= bets);
}

static long test_concurrent(es_server *srv, es_model *const drafts[4], const char *const names[4]) {
    es_server_stats before;
    es_server_get_stats(srv, &before);
    static job jobs[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->p = edge_params(es_server_port(srv), drafts[i / 2]);
        j->p.draft_params.mode = i % 2 ? ES_DRAFT_TREE : ES_DRAFT_CHAIN;
        j->p.proactive = (i % 4) != 3; /* off for draft-mid's and draft-random's trees */
        if (i == 5) j->p.bet = ES_BET_BEST_LEAF; /* SpecEdge's bet: output exact all the same */
        j->g = &g_gold[i];
        j->max_tokens = GEN;
        pthread_create(&th[i], NULL, run_job, j);
    }
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++) {
        char what[128];
        snprintf(what, sizeof what, "edge %d (%s, %s, proactive %s)", i, names[i / 2], i % 2 ? "tree" : "chain",
                 jobs[i].p.proactive ? "on" : "off");
        check_golden_job(&jobs[i], what);
        const es_edge_stats *s = &jobs[i].stats;
        printf("%-44s %3d tokens, %2d rounds, accept len %.2f, bets %ld hits %ld, %lld B out %lld B in\n", what,
               s->n_generated, s->rounds, s->rounds ? 1.0 + (double)s->accepted / s->rounds : 0, s->proactive_attempts,
               s->proactive_hits, (long long)s->bytes_sent, (long long)s->bytes_received);
        if (!jobs[i].p.proactive) CHECK(s->proactive_attempts == 0);
    }
    check_trees(srv, &before, jobs, 8, "8 edges");
    CHECK_MSG(jobs[5].stats.proactive_attempts > 0, "the best-leaf edge made no bet");
    /* a good draft (the int8 copy) wins its bets */
    CHECK_MSG(jobs[0].stats.proactive_hits > 0, "no proactive hit with the int8 draft (%ld bets)", jobs[0].stats.proactive_attempts);
    if (g_knee >= 64) CHECK(jobs[0].stats.rounds < GEN / 2); /* (a saturated server asks for small trees) */
    long cut = 0;
    for (int i = 0; i < 8; i++) cut += jobs[i].stats.proactive_cut;
    return cut;
}

/* ---- seeded sampling ------------------------------------------------------------------------------ */

static bool g_early; /* sample_run asks for early exits */

static int sample_run(int port, es_model *draft, es_accept_rule rule, es_draft_mode mode, bool proactive, uint64_t seed,
                      int32_t *out, es_edge_stats *st) {
    es_edge_params p = edge_params(port, draft);
    p.early_exit = g_early;
    p.rule = rule;
    p.sampling.temperature = 1.0f;
    p.sampling.seed = seed;
    p.draft_params.mode = mode;
    p.draft_params.sample = rule == ES_ACCEPT_REJECTION;
    p.draft_params.seed = seed;
    p.proactive = proactive;
    p.adapt_to_server = false; /* server hints depend on load: keep the trees a function of the seed */
    es_edge *e = NULL;
    es_err err = {{0}};
    CHECK_OK(es_edge_connect(&p, &e, &err), &err);
    if (!e) return 0;
    CHECK_OK(es_edge_generate(e, g_gold[3].prompt, g_gold[3].np, 48, k_stop, 2, out, st, NULL, NULL, &err), &err);
    es_edge_free(e);
    return st->n_generated;
}

static void test_sampling(const es_server *srv, es_model *draft) {
    const int port = es_server_port(srv);
    int32_t a[64], b[64], c[64];
    es_edge_stats sa, sb, sc;
    const es_accept_rule rules[2] = {ES_ACCEPT_MATCH, ES_ACCEPT_REJECTION};
    for (int r = 0; r < 2; r++)
        for (int m = 0; m < 2; m++) {
            const int na = sample_run(port, draft, rules[r], (es_draft_mode)m, true, 11, a, &sa);
            const int nb = sample_run(port, draft, rules[r], (es_draft_mode)m, false, 11, b, &sb);
            const int nc = sample_run(port, draft, rules[r], (es_draft_mode)m, true, 12, c, &sc);
            CHECK_MSG(na > 0 && na == nb && same_prefix(a, b, na) == na, "%s %s: equal seeds gave different tokens",
                      es_accept_rule_name(rules[r]), m ? "tree" : "chain");
            CHECK(sa.rounds == sb.rounds);
            CHECK_MSG(nc != na || same_prefix(a, c, na) < na, "%s: a different seed gave the same %d tokens", es_accept_rule_name(rules[r]), na);
        }
}

/* ---- plain clients ---------------------------------------------------------------------------------- */

static void test_plain(const es_server *srv, int mode, const es_model *tokenizer_model) {
    es_edge_params p = edge_params(es_server_port(srv), tokenizer_model);
    p.mode = mode;
    es_edge *e = NULL;
    es_err err = {{0}};
    CHECK_OK(es_edge_connect(&p, &e, &err), &err);
    if (!e) return;
    const golden *g = &g_gold[5];
    int32_t out[GEN + 1];
    es_edge_stats st;
    CHECK_OK(es_edge_generate(e, g->prompt, g->np, GEN, k_stop, 2, out, &st, NULL, NULL, &err), &err);
    CHECK_MSG(st.n_generated == GEN && same_prefix(out, g->gen, GEN) == GEN, "%s: %d tokens, golden on %d",
              mode == ES_MODE_AR ? "ar" : "server-spec", st.n_generated, same_prefix(out, g->gen, GEN));
    CHECK(st.stop == ES_STOP_LENGTH);
    CHECK(st.proactive_attempts == 0);
    /* the text form: the server tokenises (same ids, BOS added) */
    if (mode == ES_MODE_AR) {
        int32_t out2[GEN + 1];
        es_edge_stats st2;
        CHECK_OK(es_edge_generate_text(e, "Once upon a time", 32, k_stop, 2, out2, &st2, NULL, NULL, &err), &err);
        CHECK(st2.n_prompt == g_gold[0].np);
        CHECK(st2.n_generated == 32 && same_prefix(out2, g_gold[0].gen, 32) == 32);
    }
    es_edge_free(e);
}

/* ---- emulated WAN --------------------------------------------------------------------------------- */

static void test_emulation(const es_server *srv, es_model *draft) {
    const golden *g = &g_gold[7];
    int32_t a[GEN + 1], b[GEN + 1];
    es_edge_stats sa, sb;
    es_err err = {{0}};
    for (int emu = 0; emu < 2; emu++) {
        es_edge_params p = edge_params(es_server_port(srv), draft);
        if (emu) {
            p.emulate_rtt_ms = 20;
            p.emulate_bandwidth_kbps = 10000;
        }
        es_edge *e = NULL;
        CHECK_OK(es_edge_connect(&p, &e, &err), &err);
        if (!e) return;
        CHECK_OK(es_edge_generate(e, g->prompt, g->np, 48, k_stop, 2, emu ? b : a, emu ? &sb : &sa, NULL, NULL, &err), &err);
        es_edge_free(e);
    }
    CHECK(sa.n_generated == 48 && sb.n_generated == 48 && same_prefix(a, b, 48) == 48);
    CHECK(same_prefix(b, g->gen, 48) == 48);
    /* every round (and the open) waits at least one emulated round trip: lower bounds only, which no
       load can break (comparing with the loopback run's time would depend on the machine's load) */
    CHECK_MSG(sb.total_s >= 0.020 * (sb.rounds + 1) * 0.95, "emulated run took %.3f s for %d rounds", sb.total_s, sb.rounds);
    CHECK(sb.ttft_s >= 0.040 * 0.95); /* open + first verdict: two round trips */
    printf("rtt 20 ms: %.3f s (%d rounds, wait %.3f s, bets %ld/%ld) vs %.3f s on loopback\n", sb.total_s, sb.rounds,
           sb.wait_seconds, sb.proactive_hits, sb.proactive_attempts, sa.total_s);
}

/* ---- refusals --------------------------------------------------------------------------------------- */

static void test_vocab_mismatch(const es_server *srv) {
    es_model *other = es_test_load_model("tinystories656k.gguf");
    if (!other) return;
    es_edge_params p = edge_params(es_server_port(srv), other);
    es_edge *e = NULL;
    es_err err = {{0}};
    es_status st = es_edge_connect(&p, &e, &err);
    CHECK_MSG(st == ES_ERR_MISMATCH, "a 2048-token draft for a 512-token target: %s (%s)", es_status_str(st), err.msg);
    CHECK(e == NULL);
    CHECK(strlen(err.msg) > 0);
    es_model_free(other);
}

typedef struct busy_ctx {
    int port;
    const es_model *draft;
    es_status second;
    bool tried;
    char msg[512];
} busy_ctx;

static void try_second(void *ud, const int32_t *toks, int n, double t_s) {
    (void)toks;
    (void)n;
    (void)t_s;
    busy_ctx *b = ud;
    if (b->tried) return;
    b->tried = true;
    es_edge_params p = edge_params(b->port, b->draft);
    es_edge *e = NULL;
    es_err err = {{0}};
    b->second = es_edge_connect(&p, &e, &err);
    if (b->second == ES_OK) {
        int32_t out[8];
        es_edge_stats st;
        b->second = es_edge_generate(e, g_gold[0].prompt, g_gold[0].np, 4, k_stop, 2, out, &st, NULL, NULL, &err);
    }
    snprintf(b->msg, sizeof b->msg, "%s", err.msg);
    es_edge_free(e);
}

static void test_busy(es_model *target, es_model *draft) {
    es_server *srv = start_server(target, NULL, 0, 1);
    if (!srv) return;
    busy_ctx b = {es_server_port(srv), draft, ES_OK, false, ""};
    es_edge_params p = edge_params(b.port, draft);
    es_edge *e = NULL;
    es_err err = {{0}};
    CHECK_OK(es_edge_connect(&p, &e, &err), &err);
    int32_t out[GEN + 1];
    es_edge_stats st;
    if (e) CHECK_OK(es_edge_generate(e, g_gold[1].prompt, g_gold[1].np, 16, k_stop, 2, out, &st, try_second, &b, &err), &err);
    CHECK_MSG(b.tried && b.second == ES_ERR_BUSY, "second session on a one-slot server: %s (%s)", es_status_str(b.second), b.msg);
    es_edge_free(e);
    es_server_free(srv);
}

/* The WELCOME's tree limit is the scheduler's own: with 16 rows per pass a round is root + 15 nodes
 * at most, so a server started with max_tree_nodes 64 advertises 15, and an edge that would draft 20
 * (k_max 20, no server hints) stays within it and gets the golden output (before, it was told 64,
 * sent 20 nodes, and its session died on "at most 15"). */
static void test_limits_advertised(es_model *target, es_model *draft) {
    es_err err = {{0}};
    es_server_params sp = es_server_default_params();
    sp.sched.knee_tokens = 64;
    sp.sched.max_batch_tokens = 16;
    sp.sched.prefill_chunk = 16;
    sp.sched.max_tree_nodes = 64;
    sp.host = "127.0.0.1";
    sp.port = 0;
    sp.target = target;
    sp.target_tok = es_model_tokenizer(target);
    sp.sched.n_threads = 1;
    sp.log = quiet_log;
    es_server *srv = NULL;
    CHECK_OK(es_server_start(&sp, &srv, &err), &err);
    if (!srv) return;
    es_edge_params p = edge_params(es_server_port(srv), draft);
    p.draft_params.k_max = 20;
    p.adapt_to_server = false;
    es_edge *e = NULL;
    CHECK_OK(es_edge_connect(&p, &e, &err), &err);
    if (e) {
        CHECK_MSG(es_edge_server_info(e)->max_tree_nodes == 15, "WELCOME max_tree_nodes %u", es_edge_server_info(e)->max_tree_nodes);
        int32_t out[GEN + 1];
        es_edge_stats st;
        const golden *g = &g_gold[3];
        CHECK_OK(es_edge_generate(e, g->prompt, g->np, 32, k_stop, 2, out, &st, NULL, NULL, &err), &err);
        const int want = g->ng < 32 ? g->ng : 32;
        CHECK_MSG(st.n_generated == want && same_prefix(out, g->gen, want) == want, "%d tokens", st.n_generated);
    }
    es_edge_free(e);
    es_server_free(srv);
}

static void test_key_and_timeout(es_model *target, es_model *draft) {
    es_err err = {{0}};
    es_server_params sp = es_server_default_params();
    sp.sched.knee_tokens = 64;
    sp.host = "127.0.0.1";
    sp.port = 0;
    sp.target = target;
    sp.target_tok = es_model_tokenizer(target);
    sp.sched.n_threads = 1;
    sp.api_key = "sesame";
    sp.log = quiet_log;
    es_server *srv = NULL;
    CHECK_OK(es_server_start(&sp, &srv, &err), &err);
    if (srv) {
        es_edge_params p = edge_params(es_server_port(srv), draft);
        es_edge *e = NULL;
        es_status st = es_edge_connect(&p, &e, &err);
        CHECK_MSG(st == ES_ERR_INVALID_ARG && e == NULL, "no key: %s (%s)", es_status_str(st), err.msg);
        p.api_key = "wrong";
        CHECK(es_edge_connect(&p, &e, &err) == ES_ERR_INVALID_ARG);
        p.api_key = "sesame";
        CHECK_OK(es_edge_connect(&p, &e, &err), &err);
        int32_t out[8];
        es_edge_stats es;
        if (e) CHECK_OK(es_edge_generate(e, g_gold[2].prompt, g_gold[2].np, 8, k_stop, 2, out, &es, NULL, NULL, &err), &err);
        es_edge_free(e);
        es_server_free(srv);
    }
    /* a listener that never says WELCOME */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 4) == 0 &&
          getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    es_edge_params p = edge_params(ntohs(a.sin_port), draft);
    p.io_timeout_s = 0.3;
    es_edge *e = NULL;
    es_status st = es_edge_connect(&p, &e, &err);
    CHECK_MSG(st == ES_ERR_TIMEOUT && e == NULL, "silent server: %s (%s)", es_status_str(st), err.msg);
    close(fd);
}

/* ---- the server goes away mid-generation ------------------------------------------------------------ */

typedef struct kill_ctx {
    es_server **srv;
    es_model *target;
    int after, seen;
    bool restart;
    int port;
} kill_ctx;

static void kill_server(void *ud, const int32_t *toks, int n, double t_s) {
    (void)toks;
    (void)t_s;
    kill_ctx *k = ud;
    k->seen += n;
    if (k->seen >= k->after && *k->srv) {
        k->after = 1 << 30; /* once */
        es_server_free(*k->srv);
        *k->srv = k->restart ? start_server(k->target, NULL, k->port, 0) : NULL;
    }
}

static void test_server_loss(es_model *target, es_model *draft) {
    const golden *g = &g_gold[9];
    es_err err = {{0}};
    /* restarted on the same port: reconnect and resume, still the target's greedy output */
    {
        es_server *srv = start_server(target, NULL, 0, 0);
        if (!srv) return;
        kill_ctx k = {&srv, target, 10, 0, true, es_server_port(srv)};
        es_edge_params p = edge_params(k.port, draft);
        es_edge *e = NULL;
        CHECK_OK(es_edge_connect(&p, &e, &err), &err);
        int32_t out[GEN + 1];
        es_edge_stats st;
        if (e) CHECK_OK(es_edge_generate(e, g->prompt, g->np, GEN, k_stop, 2, out, &st, kill_server, &k, &err), &err);
        CHECK_MSG(srv != NULL, "the server did not restart on port %d", k.port);
        CHECK_MSG(st.reconnects >= 1, "%d reconnects", st.reconnects);
        CHECK_MSG(st.n_generated == GEN && same_prefix(out, g->gen, GEN) == GEN, "resumed run: %d tokens, golden on %d",
                  st.n_generated, same_prefix(out, g->gen, GEN));
        CHECK(st.fallback_tokens == 0);
        es_edge_free(e);
        es_server_free(srv);
    }
    /* killed for good, fallback_local: the draft finishes */
    {
        es_server *srv = start_server(target, NULL, 0, 0);
        if (!srv) return;
        kill_ctx k = {&srv, target, 10, 0, false, es_server_port(srv)};
        es_edge_params p = edge_params(k.port, draft);
        p.fallback_local = true;
        es_edge *e = NULL;
        CHECK_OK(es_edge_connect(&p, &e, &err), &err);
        int32_t out[GEN + 1];
        es_edge_stats st;
        memset(&st, 0, sizeof st);
        if (e) CHECK_OK(es_edge_generate(e, g->prompt, g->np, GEN, k_stop, 2, out, &st, kill_server, &k, &err), &err);
        CHECK_MSG(st.fallback_tokens > 0, "fallback_tokens %d", st.fallback_tokens);
        CHECK(st.n_generated == GEN || st.stop == ES_STOP_EOS);
        CHECK(st.n_generated - st.fallback_tokens >= 10); /* the server's part */
        CHECK(same_prefix(out, g->gen, 10) == 10);
        printf("fallback: %d tokens from the server, %d from the draft alone\n", st.n_generated - st.fallback_tokens, st.fallback_tokens);
        es_edge_free(e);
        es_server_free(srv);
        /* nobody listening any more, no fallback: connect fails with an I/O error */
        p.fallback_local = false;
        CHECK(es_edge_connect(&p, &e, &err) == ES_ERR_IO);
    }
}

/* ---- early exits ---------------------------------------------------------------------------------- */

/* Four edges at once (early on with proactive on and off, early off), greedy: golden tokens; the
 * ones that asked got one EARLY per round, the others none. */
static void early_greedy(es_model *target, es_model *draft, const char *what, bool bad_head) {
    es_server *srv = start_server(target, NULL, 0, 0);
    if (!srv) return;
    es_server_stats before;
    es_server_get_stats(srv, &before);
    static job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].p = edge_params(es_server_port(srv), draft);
        jobs[i].p.early_exit = i < 3;
        jobs[i].p.proactive = i != 1;
        jobs[i].p.draft_params.mode = i == 2 ? ES_DRAFT_TREE : ES_DRAFT_CHAIN;
        jobs[i].p.early_follow = i == 2 ? ES_EARLY_FOLLOW_ALWAYS : ES_EARLY_FOLLOW_ADAPTIVE;
        jobs[i].g = &g_gold[5 + i];
        jobs[i].max_tokens = 48;
        pthread_create(&th[i], NULL, run_job, &jobs[i]);
    }
    long frames = 0, agreed = 0, kept = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        char w[96];
        snprintf(w, sizeof w, "%s, edge %d", what, i);
        check_golden_job(&jobs[i], w);
        const es_edge_stats *st = &jobs[i].stats;
        if (i < 3) CHECK_MSG(st->early_frames == st->rounds, "%s: %ld EARLY for %d rounds", w, st->early_frames, st->rounds);
        else CHECK_MSG(st->early_frames == 0, "%s: an edge that did not ask got %ld EARLY frames", w, st->early_frames);
        CHECK(st->early_agreed <= st->early_frames && st->early_kept <= st->early_frames);
        /* following: never ignored without a bet (edge 1) or told to follow always (edge 2); an
           adaptive edge whose exit head is nearly always wrong keeps its bets once it has seen that */
        if (i == 1 || i == 2) CHECK_MSG(st->early_ignored == 0, "%s: %ld EARLY frames ignored", w, st->early_ignored);
        if (i == 0 && bad_head) CHECK_MSG(st->early_ignored > 0, "%s: a wrong exit head was followed every round (%ld frames, %ld agreed)", w,
                                         st->early_frames, st->early_agreed);
        CHECK(st->n_early_lead == st->early_frames && es_edge_early_lead_p50(st) >= 0);
        frames += st->early_frames;
        agreed += st->early_agreed;
        kept += st->early_kept;
    }
    printf("%s: %ld EARLY frames, %ld agreed with the verdict, %ld next trees kept, %ld not followed by edge 0\n", what, frames, agreed, kept,
           jobs[0].stats.early_ignored);
    check_trees(srv, &before, jobs, 4, what);
    es_server_free(srv);
}

/* A raw version-1 client: WELCOME says 1, and an OPEN with the early-exit flag is refused. */
static void early_old_client(es_model *target) {
    es_server *srv = start_server(target, NULL, 0, 0);
    if (!srv) return;
    const int fd = es_test_tcp_connect(es_server_port(srv), 0);
    CHECK(fd >= 0);
    uint8_t buf[4096], hdr[ES_PROTO_HEADER_SIZE];
    es_wbuf w;
    es_err err = {{0}};
    es_msg_hello h;
    memset(&h, 0, sizeof h);
    h.version_min = h.version_max = 1;
    snprintf(h.name, sizeof h.name, "old-edge");
    es_wbuf_init(&w, buf, sizeof buf);
    CHECK_OK(es_proto_put_hello(&w, &h, &err), &err);
    CHECK(fd >= 0 && es_test_send_all(fd, buf, w.len));
    es_frame_header fh;
    CHECK(fd >= 0 && es_test_recv_all(fd, hdr, sizeof hdr));
    CHECK_OK(es_proto_get_header(hdr, 1 << 20, &fh, &err), &err);
    CHECK(fh.type == ES_FRAME_WELCOME && fh.len <= sizeof buf && es_test_recv_all(fd, buf, fh.len));
    es_msg_welcome wm;
    CHECK_OK(es_proto_get_welcome(buf, fh.len, &wm, &err), &err);
    CHECK_MSG(wm.version == 1, "a version-1 client was answered with version %u", wm.version);
    es_msg_open om;
    memset(&om, 0, sizeof om);
    om.mode = ES_MODE_EDGE;
    om.rule = ES_ACCEPT_GREEDY;
    om.max_tokens = 8;
    om.top_p = 1;
    om.flags = ES_OPEN_EARLY_EXIT;
    om.n_prompt = (uint32_t)g_gold[0].np;
    om.prompt = g_gold[0].prompt;
    es_wbuf_init(&w, buf, sizeof buf);
    CHECK_OK(es_proto_put_open(&w, 5, &om, &err), &err);
    CHECK(fd >= 0 && es_test_send_all(fd, buf, w.len));
    CHECK(fd >= 0 && es_test_recv_all(fd, hdr, sizeof hdr));
    CHECK_OK(es_proto_get_header(hdr, 1 << 20, &fh, &err), &err);
    CHECK(fh.type == ES_FRAME_ERROR && fh.session == 5 && fh.len <= sizeof buf && es_test_recv_all(fd, buf, fh.len));
    es_msg_error em;
    CHECK_OK(es_proto_get_error(buf, fh.len, &em, &err), &err);
    CHECK(em.code == ES_PERR_INVALID && strstr(em.msg, "version") != NULL);
    if (fd >= 0) close(fd);
    es_server_free(srv);
}

static void test_early_exit(es_model *target, es_model *draft) {
    g_exit_file = ""; /* zero-training head */
    early_greedy(target, draft, "early exits", false);
    early_old_client(target);
    /* sampled: early exits change nothing but where drafting starts */
    es_server *srv = start_server(target, NULL, 0, 0);
    if (srv) {
        int32_t a[64], b[64];
        es_edge_stats sa, sb;
        for (int r = 0; r < 2; r++) {
            const es_accept_rule rule = r ? ES_ACCEPT_REJECTION : ES_ACCEPT_MATCH;
            g_early = false;
            const int na = sample_run(es_server_port(srv), draft, rule, ES_DRAFT_CHAIN, true, 21, a, &sa);
            g_early = true;
            const int nb = sample_run(es_server_port(srv), draft, rule, ES_DRAFT_CHAIN, true, 21, b, &sb);
            CHECK_MSG(na > 0 && na == nb && same_prefix(a, b, na) == na, "%s: early exits changed the sampled tokens",
                      es_accept_rule_name(rule));
            CHECK(sa.early_frames == 0 && sb.early_frames == sb.rounds && sb.rounds > 0);
        }
        g_early = false;
        es_server_free(srv);
    }
    /* a bad adapter (W = 0, a bias that puts one token on top everywhere): nearly always wrong */
    const char *path = es_test_write_bad_exit(es_model_n_embd(target), 3, "edge-bad-exit.gguf");
    g_exit_file = path;
    early_greedy(target, draft, "early exits, bad adapter", true);
    srv = start_server(target, NULL, 0, 0);
    if (srv) {
        int32_t a[64], b[64];
        es_edge_stats sa, sb;
        g_early = false;
        const int na = sample_run(es_server_port(srv), draft, ES_ACCEPT_REJECTION, ES_DRAFT_TREE, true, 33, a, &sa);
        g_early = true;
        const int nb = sample_run(es_server_port(srv), draft, ES_ACCEPT_REJECTION, ES_DRAFT_TREE, true, 33, b, &sb);
        g_early = false;
        CHECK_MSG(na > 0 && na == nb && same_prefix(a, b, na) == na, "a bad exit adapter changed the sampled tokens");
        CHECK(sb.early_frames > 0 && sb.early_agreed * 2 < sb.early_frames);
        es_server_free(srv);
    }
    g_exit_file = NULL;
}

int main(void) {
    load_golden();
    es_model *target = es_test_load_model("stories260K.gguf");
    const char *names[4] = {"stories260K_q80", "draft-mid", "draft-small", "draft-random"};
    es_model *drafts[4];
    char file[64];
    for (int i = 0; i < 4; i++) {
        snprintf(file, sizeof file, "%s.gguf", names[i]);
        drafts[i] = es_test_load_model(file);
    }
    if (!target || !drafts[0] || !drafts[1] || !drafts[2] || !drafts[3] || g_n_gold < N_GOLDEN) return es_test_finish("test_edge");
    es_server *srv = start_server(target, drafts[1], 0, 0);
    if (!srv) return es_test_finish("test_edge");
    test_concurrent(srv, drafts, names);
    test_sampling(srv, drafts[1]);
    test_plain(srv, ES_MODE_AR, NULL);
    test_plain(srv, ES_MODE_SERVER_SPEC, drafts[2]);
    test_emulation(srv, drafts[1]);
    test_vocab_mismatch(srv);
    es_server_stats ss;
    es_server_get_stats(srv, &ss);
    CHECK(ss.connections_total >= 8);
    es_server_free(srv);
    /* a tiny knee: eight edges saturate it, the hints shrink to a node or none, and trees drafted
     * ahead under winning bets are cut to them; outputs stay the target's */
    g_knee = 2;
    srv = start_server(target, NULL, 0, 0);
    if (srv) {
        const long cut = test_concurrent(srv, drafts, names);
        printf("knee 2: %ld proactive trees cut to the server's hint\n", cut);
        CHECK_MSG(cut > 0, "no proactive tree was cut to a smaller hint");
        es_server_free(srv);
    }
    g_knee = 64;
    test_busy(target, drafts[1]);
    test_key_and_timeout(target, drafts[2]);
    test_limits_advertised(target, drafts[0]);
    test_server_loss(target, drafts[0]);
    test_early_exit(target, drafts[1]);
    for (int i = 0; i < 4; i++) es_model_free(drafts[i]);
    es_model_free(target);
    return es_test_finish("test_edge");
}
