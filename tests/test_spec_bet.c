/* test_spec_bet.c — proactive drafting on the draft side (es_drafter_save/restore/rewind/predict),
 * without a network: a local verifier plays the server. A proactive run bets on the tree's first
 * path, drafts the next tree under the predicted bonus, and rewinds on a miss. It must emit exactly
 * what the non-proactive run emits (greedy: the golden tokens; match / rejection: the same samples
 * for the same seed, since restoring the saved state makes it draft the same trees), hit with a good
 * draft, and leave the draft cache equal to a fresh evaluation of the confirmed tokens. Bets stopped
 * after one draft pass and finished when they hit (es_drafter_resume) give the very trees of uncut
 * bets: the same rounds, nodes and tokens, under greedy and sampling rules, chain and tree. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgespec.h"
#include "specdec/spec.h"
#include "testutil.h"

static es_ctx *make_ctx(es_model *m) {
    es_err err = {{0}};
    es_ctx_params p = es_ctx_default_params();
    p.n_seq_max = 3;
    p.n_threads = 1;
    p.n_batch_max = ES_SPEC_MAX_NODES + 1;
    es_ctx *c = NULL;
    CHECK_OK(es_ctx_init(m, &p, &c, &err), &err);
    return c;
}

typedef struct cfg {
    es_draft_mode mode;
    es_accept_rule rule;
    float temperature;
    uint64_t seed;
    bool proactive;
    bool check_kv;
    int stop_after;  /* > 0: the abort hook stops bet drafting after this many draft passes */
    bool resume;     /* a stopped bet tree whose bet hit is finished (es_drafter_resume) and used */
} cfg;

/* The abort hook of a bet: yes once *left draft passes have been allowed. */
static bool stop_hook(void *ud) {
    int *left = ud;
    return (*left)-- <= 0;
}

typedef struct result {
    int n;
    int32_t tok[600];
    int rounds, attempts, hits, misses_rewound, stopped, resumed;
    long drafted;    /* nodes of every tree verified */
    float kv_worst;
} result;

/* The bet path: first child at every level (index order = draw / score order). */
static int bet_path(const es_spec_tree *t, int32_t *path) {
    int n = 0, at = -1;
    for (int i = 0; i < t->n; i++)
        if (t->parent[i] == at) { path[n++] = i; at = i; }
    return n;
}

/* Logits after feeding toks[from..n) on top of seq (which holds toks[0..from)), then undoes it. */
static void probe_logits(es_ctx *c, int seq, const int32_t *toks, int from, int n, float *out) {
    es_err err = {{0}};
    int32_t pos[700], sq[700];
    for (int i = from; i < n; i++) { pos[i - from] = i; sq[i - from] = seq; }
    es_batch b = {n - from, toks + from, pos, sq, NULL, NULL, NULL};
    CHECK_OK(es_decode(c, &b, &err), &err);
    memcpy(out, es_ctx_logits(c, n - from - 1), (size_t)es_model_n_vocab(es_ctx_model(c)) * sizeof(float));
    CHECK_OK(es_seq_truncate(c, seq, from, &err), &err);
}

static void run(es_ctx *tc, es_ctx *dc, const cfg *c, const int32_t *prompt, int np, int max_gen, result *r) {
    es_err err = {{0}};
    memset(r, 0, sizeof *r);
    int ts, ds;
    CHECK_OK(es_seq_open(tc, &ts, &err), &err);
    CHECK_OK(es_seq_open(dc, &ds, &err), &err);
    es_verifier_params vp = {c->rule, es_sampler_default_params(), 0.0};
    vp.sampling.temperature = c->temperature;
    vp.sampling.top_k = 0;
    vp.sampling.top_p = 1.0f;
    vp.sampling.min_p = 0.0f;
    vp.sampling.repeat_penalty = 1.0f;
    vp.sampling.seed = c->seed;
    es_verifier *v = NULL;
    CHECK_OK(es_verifier_init(tc, ts, &vp, &v, &err), &err);
    es_drafter_params dp = es_drafter_default_params();
    dp.mode = c->mode;
    dp.k_max = 6;
    dp.tree_budget = 20;
    dp.tree_depth = 5;
    dp.tree_width = 3;
    dp.sample = c->rule == ES_ACCEPT_REJECTION;
    dp.temperature = c->temperature > 0 ? c->temperature : 1.0f;
    dp.seed = c->seed;
    es_drafter *d = NULL;
    CHECK_OK(es_drafter_init(dc, ds, &dp, &d, &err), &err);
    if (!v || !d) return;
    CHECK_OK(es_verifier_prefill(v, prompt, np - 1, &err), &err);
    CHECK_OK(es_drafter_prefill(d, prompt, np - 1, &err), &err);
    static es_spec_tree tree, next;
    static es_spec_verdict vd, fake;
    int32_t confirmed[700];
    memcpy(confirmed, prompt, (size_t)np * sizeof(int32_t));
    int len = np;
    const int nv = es_model_n_vocab(es_ctx_model(dc));
    float *la = malloc((size_t)nv * 4), *lb = malloc((size_t)nv * 4);
    int fresh = -1;
    if (c->check_kv) CHECK_OK(es_seq_open(dc, &fresh, &err), &err);
    int32_t root = prompt[np - 1];
    bool ready = false, stop = false;
    while (!stop && r->n < max_gen) {
        if (ready) tree = next;
        else if (es_drafter_draft(d, root, max_gen - r->n - 1, &tree, &err) != ES_OK) { CHECK_MSG(0, "draft: %s", err.msg); break; }
        ready = false;
        /* the bet, placed while the verdict would be in flight */
        bool bet = false, bet_tree = false, bet_cut = false;
        int32_t bonus_bet = -1;
        int base = 0, pl = 0;
        es_drafter_state snap;
        if (c->proactive && tree.n > 0) {
            pl = bet_path(&tree, fake.path);
            bool has_stop = false;
            for (int k = 0; k < pl; k++) has_stop |= tree.token[fake.path[k]] <= 2;
            if (!has_stop && r->n + pl + 1 < max_gen) {
                es_drafter_save(d, &snap);
                base = es_drafter_kv_len(d);
                fake.n_accepted = pl;
                CHECK_OK(es_drafter_accept(d, &tree, &fake, &err), &err);
                CHECK_OK(es_drafter_predict(d, &bonus_bet, &err), &err);
                CHECK(es_drafter_kv_len(d) == base + 1 + pl);
                r->attempts++;
                bet = true;
                if (bonus_bet > 2) {
                    const int left = max_gen - (r->n + pl + 1) - 1;
                    int passes = c->stop_after;
                    if (c->stop_after > 0) es_drafter_set_abort(d, stop_hook, &passes);
                    CHECK_OK(es_drafter_draft(d, bonus_bet, left, &next, &err), &err);
                    es_drafter_set_abort(d, NULL, NULL);
                    bet_cut = es_drafter_aborted(d);
                    r->stopped += bet_cut;
                    bet_tree = true;
                }
            }
        }
        if (es_verifier_verify(v, root, &tree, &vd, &err) != ES_OK) { CHECK_MSG(0, "verify: %s", err.msg); break; }
        r->rounds++;
        r->drafted += tree.n;
        if (bet) {
            int j = 0;
            while (j < vd.n_accepted && j < pl && tree.token[vd.path[j]] == tree.token[fake.path[j]]) j++;
            /* a cut bet tree is used by greedy runs, or finished first (as the edge does) */
            const bool hit = vd.n_accepted == pl && j == pl && vd.bonus == bonus_bet && (!bet_cut || c->rule == ES_ACCEPT_GREEDY || c->resume);
            if (hit) {
                r->hits++;
                ready = bet_tree;
                if (bet_cut && c->resume) {
                    CHECK_OK(es_drafter_resume(d, &next, &err), &err);
                    CHECK(!es_drafter_aborted(d));
                    r->resumed++;
                }
            } else {
                int32_t rest[ES_SPEC_MAX_PATH];
                for (int k = j; k < vd.n_accepted; k++) rest[k - j] = tree.token[vd.path[k]];
                CHECK_OK(es_drafter_rewind(d, base + 1 + j, rest, vd.n_accepted - j, &err), &err);
                es_drafter_restore(d, &snap);
                es_drafter_adapt(d, tree.n, vd.n_accepted);
                r->misses_rewound++;
            }
        } else {
            CHECK_OK(es_drafter_accept(d, &tree, &vd, &err), &err);
        }
        for (int k = 0; k < vd.n_tokens && r->n < max_gen; k++) {
            r->tok[r->n++] = vd.tokens[k];
            confirmed[len++] = vd.tokens[k];
            if (vd.tokens[k] <= 2) { stop = true; break; }
        }
        root = vd.bonus;
        /* the draft cache holds a prefix of the confirmed tokens, equal to a fresh evaluation */
        if (c->check_kv && !stop && !ready && len < 500) {
            const int dl = es_drafter_kv_len(d);
            CHECK(dl <= len - 1);
            CHECK_OK(es_seq_truncate(dc, ds, dl, &err), &err);
            probe_logits(dc, ds, confirmed, dl, len, la);
            probe_logits(dc, fresh, confirmed, 0, len, lb);
            for (int i = 0; i < nv; i++) r->kv_worst = fmaxf(r->kv_worst, fabsf(la[i] - lb[i]));
        }
    }
    if (fresh >= 0) es_seq_close(dc, fresh);
    free(la);
    free(lb);
    es_drafter_free(d);
    es_verifier_free(v);
    es_seq_close(tc, ts);
    es_seq_close(dc, ds);
}

int main(void) {
    es_model *target = es_test_load_model("stories260K.gguf");
    es_model *mid = es_test_load_model("draft-mid.gguf"), *small = es_test_load_model("draft-small.gguf");
    if (!target || !mid || !small) return es_test_finish("test_spec_bet");
    es_ctx *tc = make_ctx(target), *dc_mid = make_ctx(mid), *dc_small = make_ctx(small);
    size_t flen;
    char *text = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), &flen);
    CHECK(text != NULL);
    int prompts = 0;
    long attempts = 0, hits = 0, misses = 0;
    static result a, b;
    for (char *line = text ? strtok(text, "\n") : NULL; line && prompts < 3; line = strtok(NULL, "\n"), prompts++) {
        cJSON *j = cJSON_Parse(line);
        int32_t prompt[512], want[1024];
        const int np = es_test_json_ints(cJSON_GetObjectItem(j, "prompt_ids"), prompt, 512);
        const int nw = es_test_json_ints(cJSON_GetObjectItem(j, "gen_ids"), want, 1024);
        cJSON_Delete(j);
        const int max_gen = nw < 96 ? nw : 96;
        for (int mode = 0; mode < 2; mode++) {
            es_ctx *dc = prompts % 2 ? dc_small : dc_mid;
            /* greedy: proactive == golden */
            cfg c = {(es_draft_mode)mode, ES_ACCEPT_GREEDY, 0.0f, 1, true, prompts == 0, 0, false};
            run(tc, dc, &c, prompt, np, max_gen, &a);
            int same = 0;
            while (same < a.n && same < max_gen && a.tok[same] == want[same]) same++;
            CHECK_MSG(same == max_gen && a.n == max_gen, "prompt %d %s: proactive greedy diverges from golden at %d",
                      prompts, mode ? "tree" : "chain", same);
            /* bet drafting stopped early (the verdict came first): smaller bet trees, same output */
            cfg cs = c;
            cs.stop_after = 1;
            static result sa;
            run(tc, dc, &cs, prompt, np, max_gen, &sa);
            same = 0;
            while (same < sa.n && same < max_gen && sa.tok[same] == want[same]) same++;
            CHECK_MSG(same == max_gen && sa.n == max_gen, "prompt %d %s: stopped bets diverge from golden at %d", prompts,
                      mode ? "tree" : "chain", same);
            CHECK_MSG(sa.stopped > 0, "prompt %d %s: no bet was stopped", prompts, mode ? "tree" : "chain");
            /* stopped and finished when the bet hits: the very trees of uncut bets (same rounds, same
               nodes drafted), the golden tokens */
            cfg cr = cs;
            cr.resume = true;
            static result ra;
            run(tc, dc, &cr, prompt, np, max_gen, &ra);
            CHECK_MSG(ra.n == a.n && memcmp(ra.tok, a.tok, (size_t)a.n * sizeof(int32_t)) == 0 && ra.rounds == a.rounds &&
                          ra.drafted == a.drafted,
                      "prompt %d %s: resumed bets: %d rounds / %ld nodes, uncut %d / %ld", prompts, mode ? "tree" : "chain", ra.rounds,
                      ra.drafted, a.rounds, a.drafted);
            CHECK_MSG(ra.resumed > 0, "prompt %d %s: no stopped bet hit and was finished", prompts, mode ? "tree" : "chain");
            if (cr.check_kv) CHECK_MSG(ra.kv_worst < 1e-4f, "draft KV after resumed bets differs by %g", (double)ra.kv_worst);
            if (cs.check_kv) CHECK_MSG(sa.kv_worst < 1e-4f, "draft KV after stopped bets differs by %g", (double)sa.kv_worst);
            if (c.check_kv) CHECK_MSG(a.kv_worst < 1e-4f, "draft KV differs from a fresh evaluation by %g", (double)a.kv_worst);
            attempts += a.attempts;
            hits += a.hits;
            misses += a.misses_rewound;
            CHECK(a.attempts == a.hits + a.misses_rewound);
            /* sampling: proactive on and off give the same tokens for the same seed */
            const es_accept_rule rules[2] = {ES_ACCEPT_MATCH, ES_ACCEPT_REJECTION};
            for (int ri = 0; ri < 2; ri++) {
                cfg on = {(es_draft_mode)mode, rules[ri], 1.0f, 7 + (uint64_t)prompts, true, prompts == 0 && ri == 1, 0, false};
                cfg off = on;
                off.proactive = false;
                off.check_kv = false;
                run(tc, dc, &on, prompt, np, 64, &a);
                run(tc, dc, &off, prompt, np, 64, &b);
                CHECK_MSG(a.n == b.n && memcmp(a.tok, b.tok, (size_t)a.n * sizeof(int32_t)) == 0,
                          "prompt %d %s %s: proactive output differs from non-proactive", prompts, mode ? "tree" : "chain",
                          es_accept_rule_name(rules[ri]));
                /* with bets stopped early too (their trees dropped, so the same samples) */
                static result sb;
                cfg ons = on;
                ons.stop_after = 1;
                run(tc, dc, &ons, prompt, np, 64, &sb);
                CHECK_MSG(sb.n == b.n && memcmp(sb.tok, b.tok, (size_t)sb.n * sizeof(int32_t)) == 0,
                          "prompt %d %s %s: stopped bets change the samples", prompts, mode ? "tree" : "chain",
                          es_accept_rule_name(rules[ri]));
                /* stopped, and finished when they hit (now used under sampling too): the same samples,
                   and the trees of uncut bets (same rounds and nodes as the proactive run) */
                static result sr;
                cfg onr = ons;
                onr.resume = true;
                run(tc, dc, &onr, prompt, np, 64, &sr);
                CHECK_MSG(sr.n == b.n && memcmp(sr.tok, b.tok, (size_t)sr.n * sizeof(int32_t)) == 0 && sr.rounds == a.rounds &&
                              sr.drafted == a.drafted,
                          "prompt %d %s %s: resumed bets: %d rounds / %ld nodes, uncut %d / %ld", prompts, mode ? "tree" : "chain",
                          es_accept_rule_name(rules[ri]), sr.rounds, sr.drafted, a.rounds, a.drafted);
                CHECK(a.rounds == b.rounds);
                if (on.check_kv) CHECK_MSG(a.kv_worst < 1e-4f, "draft KV (sampling) differs by %g", (double)a.kv_worst);
                attempts += a.attempts;
                hits += a.hits;
                misses += a.misses_rewound;
            }
        }
    }
    printf("proactive: %ld bets, %ld hits (%.2f), %ld rewinds\n", attempts, hits, attempts ? (double)hits / attempts : 0.0, misses);
    CHECK(hits > 0);
    CHECK(misses > 0);

    /* predict with nothing pending recomputes the last cached token */
    {
        es_err err = {{0}};
        int ds;
        CHECK_OK(es_seq_open(dc_mid, &ds, &err), &err);
        es_drafter_params dp = es_drafter_default_params();
        es_drafter *d = NULL;
        CHECK_OK(es_drafter_init(dc_mid, ds, &dp, &d, &err), &err);
        int32_t next = -1, next2 = -1;
        CHECK(es_drafter_predict(d, &next, &err) != ES_OK); /* empty */
        const int32_t toks[4] = {1, 403, 407, 261};
        CHECK_OK(es_drafter_prefill(d, toks, 4, &err), &err);
        CHECK_OK(es_drafter_predict(d, &next, &err), &err);
        CHECK(es_drafter_kv_len(d) == 4);
        CHECK_OK(es_drafter_predict(d, &next2, &err), &err);
        CHECK(next == next2 && es_drafter_kv_len(d) == 4);
        CHECK(es_drafter_rewind(d, 5, NULL, 0, &err) != ES_OK); /* beyond the cache */
        CHECK_OK(es_drafter_rewind(d, 2, toks + 2, 2, &err), &err);
        CHECK_OK(es_drafter_predict(d, &next2, &err), &err);
        CHECK(next == next2 && es_drafter_kv_len(d) == 4);
        es_drafter_free(d);
        es_seq_close(dc_mid, ds);
    }
    free(text);
    es_ctx_free(tc);
    es_ctx_free(dc_mid);
    es_ctx_free(dc_small);
    es_model_free(target);
    es_model_free(mid);
    es_model_free(small);
    return es_test_finish("test_spec_bet");
}
