/* test_engine.c — the forward pass and KV cache: golden greedy outputs, batch == single steps,
 * tree mask == separate branches, truncate / keep == fresh evaluation, multi-sequence batches,
 * rejected batches leave the cache untouched. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "edgespec.h"
#include "kernels/matmul.h"
#include "testutil.h"

/* The KV type of the contexts below. The golden outputs come from an f32 reference, so the golden
 * comparisons run with an f32 cache; test_golden also runs the default f16 cache against them. */
static es_kv_type g_kv_type = ES_KV_F32;

static es_ctx *make_ctx(es_model *m, int n_seq, int threads) {
    es_err err = {{0}};
    es_ctx_params p = es_ctx_default_params();
    p.kv_type = g_kv_type;
    p.n_seq_max = n_seq;
    p.n_threads = threads;
    p.n_batch_max = 256;
    es_ctx *c = NULL;
    CHECK_OK(es_ctx_init(m, &p, &c, &err), &err);
    return c;
}

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* Greedy generation as the reference does it: prefill the prompt, then one token per step; stops
 * at BOS (1) like llama2.c, or when max_positions positions were used. Returns tokens generated. */
static int greedy(es_ctx *c, const int32_t *prompt, int n_prompt, int max_positions, int32_t *out, int cap) {
    es_err err = {{0}};
    int seq;
    CHECK_OK(es_seq_open(c, &seq, &err), &err);
    int32_t pos[512], seqs[512];
    for (int i = 0; i < n_prompt; i++) { pos[i] = i; seqs[i] = seq; }
    es_batch b = {n_prompt, prompt, pos, seqs, NULL, NULL, NULL};
    CHECK_OK(es_decode(c, &b, &err), &err);
    const int nv = es_model_n_vocab(es_ctx_model(c));
    const float *lg = es_ctx_logits(c, n_prompt - 1);
    int n = 0;
    for (int p = n_prompt; p <= max_positions && n < cap; p++) {
        int32_t t = argmax(lg, nv);
        out[n++] = t;
        if (t == 1 || p == max_positions) break;
        int32_t pp = p;
        es_batch b1 = {1, &t, &pp, &seq, NULL, NULL, NULL};
        if (es_decode(c, &b1, &err) != ES_OK) { CHECK_MSG(0, "%s", err.msg); break; }
        lg = es_ctx_logits(c, 0);
    }
    es_seq_close(c, seq);
    return n;
}

/* Returns the number of prompts whose whole generation matched; *n_first64 counts those whose
 * first 64 tokens matched. */
static int golden_run(const char *model_file, int threads, int *n_first64, int *n_first16, int *n_total, bool strict) {
    size_t len;
    char *text = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), &len);
    CHECK(text != NULL);
    if (!text) return 0;
    es_model *m = es_test_load_model(model_file);
    if (!m) { free(text); return 0; }
    es_ctx *c = make_ctx(m, 1, threads);
    int full = 0;
    *n_first64 = 0;
    *n_first16 = 0;
    *n_total = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        static es_test_golden g;
        if (!es_test_golden_parse(line, &g)) continue;
        int32_t got[1024], enc[512];
        const int32_t *prompt = g.prompt_ids, *want = g.gen_ids;
        const int np = g.n_prompt, nw = g.n_gen, maxpos = g.max_positions;
        const char *ptext = g.prompt;
        /* The tokenizer stored in the GGUF must encode the prompt like the reference did. */
        int ne = 0;
        es_err err = {{0}};
        CHECK_OK(es_tokenize(es_model_tokenizer(m), ptext, strlen(ptext), true, false, enc, 512, &ne, &err), &err);
        CHECK_MSG(ne == np && memcmp(enc, prompt, (size_t)np * 4) == 0, "prompt '%s' encodes differently", ptext);
        int ng = greedy(c, prompt, np, maxpos, got, 1024);
        int same = 0;
        while (same < ng && same < nw && got[same] == want[same]) same++;
        const int need = nw < 64 ? nw : 64;
        if (same >= need) (*n_first64)++;
        if (same >= (nw < 16 ? nw : 16)) (*n_first16)++;
        else if (strict) CHECK_MSG(0, "%s: '%s' diverges from the golden output at token %d", model_file, ptext, same);
        if (same == nw && ng == nw) full++;
        (*n_total)++;
    }
    es_ctx_free(c);
    es_model_free(m);
    free(text);
    return full;
}

/* The golden test at every CPU level this machine has (the level is set before loading, so the
 * weight layout a load picks for it is used too): the f32 model meets the golden bar at each level
 * (float kernels differ by rounding between levels), and the Q8_0 model meets the same bar as
 * test_golden's Q8_0 check. (These tiny models keep ffn_down in f32, its rows being 172 long,
 * so their generations may differ between levels by float rounding; the int8 kernels themselves
 * are bit-identical across levels, which test_kernels checks.) */
static void test_golden_levels(void) {
    static const struct { es_cpu_level l; bool vnni; const char *name; } levels[] = {
        {ES_CPU_SCALAR, false, "scalar"}, {ES_CPU_AVX2, false, "avx2"}, {ES_CPU_AVX512, false, "avx512-novnni"},
        {ES_CPU_AVX512, true, "avx512"}, {ES_CPU_NEON, false, "neon"}};
    const es_cpu_level best = es_cpu_level_get();
    const bool best_vnni = es_cpu_vnni_get();
    int tested = 0;
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (es_cpu_level_set(levels[i].l) != levels[i].l || es_cpu_vnni_set(levels[i].vnni) != levels[i].vnni) continue;
        int first64, first16, total, full;
        full = golden_run("stories260K.gguf", 2, &first64, &first16, &total, true);
        printf("golden f32 at %s: %d/%d in full, %d/%d the first 64 tokens\n", levels[i].name, full, total, first64, total);
        CHECK_MSG(total == 20 && first64 == total && full >= total - 1, "f32 golden at level %s", levels[i].name);
        static const char *const qm[] = {"stories260K-q8_0.gguf"}; /* (Q4_0 loses too much on a 64-wide model) */
        for (int k = 0; k < 1; k++) {
            full = golden_run(qm[k], 2, &first64, &first16, &total, false);
            printf("golden %s at %s: %d/%d the first 16 tokens\n", qm[k], levels[i].name, first16, total);
            CHECK_MSG(total == 20 && first16 * 4 >= total * 3, "%s golden at level %s", qm[k], levels[i].name);
        }
        tested++;
    }
    printf("golden at every CPU level: %d levels tested\n", tested);
    CHECK(tested >= 1);
    es_cpu_level_set(best);
    es_cpu_vnni_set(best_vnni);
}

static void test_golden(void) {
    int first64, first16, total;
    int full = golden_run("stories260K.gguf", 2, &first64, &first16, &total, true);
    printf("golden f32: %d/%d prompts match in full, %d/%d match the first 64 tokens\n", full, total, first64, total);
    CHECK(total == 20);
    CHECK(first64 == total);
    CHECK(full >= total - 1); /* the README allows a rare late near-tie flip */

    /* The default f16 cache rounds every cached K/V value (relative 2^-11): on this 64-wide model
     * that flips a few late near-ties of 256-token stories, so the bar is the first 64 tokens of
     * most prompts and the first 16 of all. */
    g_kv_type = ES_KV_F16;
    full = golden_run("stories260K.gguf", 2, &first64, &first16, &total, false);
    g_kv_type = ES_KV_F32;
    printf("golden f32 weights, f16 KV cache: %d/%d prompts match in full, %d/%d the first 64 tokens, %d/%d the first 16\n",
           full, total, first64, total, first16, total);
    CHECK(total == 20 && first16 == total && first64 >= total - 2);

    /* Q8_0 weights change this 64-wide model's near-ties within a story (dequantising the Q8_0 file
     * back to f32 gives the same picture, so it is the weights, not the kernels): we require the
     * first 16 tokens to agree on most prompts and report the rest. */
    int q_first64, q_first16, q_total;
    int q_full = golden_run("stories260K-q8_0.gguf", 2, &q_first64, &q_first16, &q_total, false);
    printf("golden q8_0: %d/%d prompts match in full, %d/%d the first 64 tokens, %d/%d the first 16\n", q_full, q_total,
           q_first64, q_total, q_first16, q_total);
    CHECK(q_total == 20);
    CHECK(q_first16 * 4 >= q_total * 3);
}

static float max_diff(const float *a, const float *b, int n) {
    float d = 0;
    for (int i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

static const int32_t k_tokens[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267};
#define NT ((int)(sizeof k_tokens / sizeof k_tokens[0]))

static void test_batch_equals_steps(es_model *m) {
    es_err err = {{0}};
    const int nv = es_model_n_vocab(m);
    es_ctx *c = make_ctx(m, 2, 2);
    int sa, sb;
    CHECK_OK(es_seq_open(c, &sa, &err), &err);
    CHECK_OK(es_seq_open(c, &sb, &err), &err);
    int32_t pos[NT], seq[NT];
    int8_t want[NT];
    for (int i = 0; i < NT; i++) { pos[i] = i; seq[i] = sa; want[i] = 1; }
    es_batch b = {NT, k_tokens, pos, seq, NULL, want, NULL};
    CHECK_OK(es_decode(c, &b, &err), &err);
    float *batch_logits = malloc((size_t)NT * nv * sizeof(float));
    for (int i = 0; i < NT; i++) memcpy(batch_logits + (size_t)i * nv, es_ctx_logits(c, i), (size_t)nv * sizeof(float));
    float worst = 0;
    for (int i = 0; i < NT; i++) {
        int32_t t = k_tokens[i], p = i;
        es_batch b1 = {1, &t, &p, &sb, NULL, NULL, NULL};
        CHECK_OK(es_decode(c, &b1, &err), &err);
        worst = fmaxf(worst, max_diff(es_ctx_logits(c, 0), batch_logits + (size_t)i * nv, nv));
    }
    printf("batch vs single steps: max |logit diff| = %g\n", (double)worst);
    CHECK(worst < 1e-4f);
    CHECK(es_seq_len(c, sa) == NT && es_seq_len(c, sb) == NT);
    free(batch_logits);
    es_ctx_free(c);
}

/* Evaluates prefix + path as a chain in a fresh sequence; copies the last logits into out. */
static void chain_logits(es_ctx *c, const int32_t *toks, int n, float *out) {
    es_err err = {{0}};
    int s;
    CHECK_OK(es_seq_open(c, &s, &err), &err);
    int32_t pos[64], seq[64];
    for (int i = 0; i < n; i++) { pos[i] = i; seq[i] = s; }
    es_batch b = {n, toks, pos, seq, NULL, NULL, NULL};
    CHECK_OK(es_decode(c, &b, &err), &err);
    memcpy(out, es_ctx_logits(c, n - 1), (size_t)es_model_n_vocab(es_ctx_model(c)) * sizeof(float));
    es_seq_close(c, s);
}

static void test_tree_and_keep(es_model *m) {
    es_err err = {{0}};
    const int nv = es_model_n_vocab(m);
    es_ctx *c = make_ctx(m, 3, 2);
    const int P = 8;
    int s;
    CHECK_OK(es_seq_open(c, &s, &err), &err);
    int32_t pos[16], seq[16];
    for (int i = 0; i < P; i++) { pos[i] = i; seq[i] = s; }
    es_batch pre = {P, k_tokens, pos, seq, NULL, NULL, NULL};
    CHECK_OK(es_decode(c, &pre, &err), &err);

    /* Tree:        0
     *            /   \
     *           1     2
     *           |    / \
     *           3   4   5      node tokens and depth-based positions */
    const int32_t tok[6] = {261, 376, 298, 315, 421, 395};
    const int32_t par[6] = {-1, 0, 0, 1, 2, 2};
    const int32_t dep[6] = {0, 1, 1, 2, 2, 2};
    int8_t want[6];
    for (int i = 0; i < 6; i++) { pos[i] = P + dep[i]; seq[i] = s; want[i] = 1; }
    es_batch tree = {6, tok, pos, seq, par, want, NULL};
    CHECK_OK(es_decode(c, &tree, &err), &err);
    CHECK(es_seq_len(c, s) == P + 6);
    float *tl = malloc((size_t)6 * nv * sizeof(float)), *ref = malloc((size_t)nv * sizeof(float));
    for (int i = 0; i < 6; i++) memcpy(tl + (size_t)i * nv, es_ctx_logits(c, i), (size_t)nv * sizeof(float));
    float worst = 0;
    for (int i = 0; i < 6; i++) {
        int32_t path[16], np = 0, chain[32];
        for (int v = i; v >= 0; v = par[v]) path[np++] = tok[v];
        memcpy(chain, k_tokens, P * sizeof(int32_t));
        for (int k = 0; k < np; k++) chain[P + k] = path[np - 1 - k];
        chain_logits(c, chain, P + np, ref);
        worst = fmaxf(worst, max_diff(ref, tl + (size_t)i * nv, nv));
    }
    printf("tree mask vs separate branches: max |logit diff| = %g\n", (double)worst);
    CHECK(worst < 1e-4f);

    /* Keep the accepted path 0 -> 2 -> 5 (slots P+0, P+2, P+5), then extend by one token: the result
     * must equal a fresh chain over prefix + path + token. */
    const int32_t slots[3] = {P + 0, P + 2, P + 5};
    CHECK_OK(es_seq_keep(c, s, P, slots, 3, &err), &err);
    CHECK(es_seq_len(c, s) == P + 3);
    int32_t t = 317, p = P + 3;
    es_batch one = {1, &t, &p, &s, NULL, NULL, NULL};
    CHECK_OK(es_decode(c, &one, &err), &err);
    float *got = malloc((size_t)nv * sizeof(float));
    memcpy(got, es_ctx_logits(c, 0), (size_t)nv * sizeof(float));
    int32_t chain[16];
    memcpy(chain, k_tokens, P * sizeof(int32_t));
    chain[P] = tok[0]; chain[P + 1] = tok[2]; chain[P + 2] = tok[5]; chain[P + 3] = t;
    chain_logits(c, chain, P + 4, ref);
    float dk = max_diff(ref, got, nv);
    printf("after keep: max |logit diff| vs fresh = %g\n", (double)dk);
    CHECK(dk < 1e-4f);

    /* Truncate back to the prefix + 1 and continue differently. */
    CHECK_OK(es_seq_truncate(c, s, P + 1, &err), &err);
    CHECK(es_seq_len(c, s) == P + 1);
    t = 426; p = P + 1;
    CHECK_OK(es_decode(c, &one, &err), &err);
    memcpy(got, es_ctx_logits(c, 0), (size_t)nv * sizeof(float));
    chain[P + 1] = 426;
    chain_logits(c, chain, P + 2, ref);
    float dt = max_diff(ref, got, nv);
    printf("after truncate: max |logit diff| vs fresh = %g\n", (double)dt);
    CHECK(dt < 1e-4f);

    /* Bad keep / truncate requests are refused. */
    const int32_t bad[2] = {P + 1, P + 1};
    CHECK(es_seq_keep(c, s, P, bad, 2, &err) != ES_OK);
    CHECK(es_seq_truncate(c, s, 1000, &err) != ES_OK);
    free(tl);
    free(ref);
    free(got);
    es_ctx_free(c);
}

static void test_multi_seq_and_errors(es_model *m) {
    es_err err = {{0}};
    const int nv = es_model_n_vocab(m);
    es_ctx *c = make_ctx(m, 4, 2);
    int a, b2;
    CHECK_OK(es_seq_open(c, &a, &err), &err);
    CHECK_OK(es_seq_open(c, &b2, &err), &err);
    /* Interleave two sequences' prompts in one batch. */
    int32_t tok[10], pos[10], seq[10];
    int8_t want[10] = {0};
    for (int i = 0; i < 5; i++) {
        tok[2 * i] = k_tokens[i]; pos[2 * i] = i; seq[2 * i] = a;
        tok[2 * i + 1] = k_tokens[10 + i]; pos[2 * i + 1] = i; seq[2 * i + 1] = b2;
    }
    want[8] = want[9] = 1;
    es_batch bb = {10, tok, pos, seq, NULL, want, NULL};
    CHECK_OK(es_decode(c, &bb, &err), &err);
    float *la = malloc((size_t)nv * 4), *lb = malloc((size_t)nv * 4), *ref = malloc((size_t)nv * 4);
    memcpy(la, es_ctx_logits(c, 8), (size_t)nv * 4);
    memcpy(lb, es_ctx_logits(c, 9), (size_t)nv * 4);
    CHECK(es_ctx_logits(c, 0) == NULL);
    chain_logits(c, k_tokens, 5, ref);
    CHECK(max_diff(ref, la, nv) < 1e-4f);
    chain_logits(c, k_tokens + 10, 5, ref);
    CHECK(max_diff(ref, lb, nv) < 1e-4f);

    /* Rejected batches change nothing. */
    int32_t badtok = nv + 5, p0 = 5;
    es_batch e1 = {1, &badtok, &p0, &a, NULL, NULL, NULL};
    CHECK(es_decode(c, &e1, &err) == ES_ERR_RANGE);
    CHECK(strstr(err.msg, "vocabulary") != NULL);
    int32_t two[2] = {5, 6}, pp[2] = {5, 5}, ss[2] = {a, b2}, parent[2] = {-1, 0};
    es_batch e2 = {2, two, pp, ss, parent, NULL, NULL};
    CHECK(es_decode(c, &e2, &err) == ES_ERR_INVALID_ARG);
    int32_t closed = 3;
    es_batch e3 = {1, two, pp, &closed, NULL, NULL, NULL};
    CHECK(es_decode(c, &e3, &err) == ES_ERR_INVALID_ARG);
    int32_t farpos = 1 << 20;
    es_batch e4 = {1, two, &farpos, &a, NULL, NULL, NULL};
    CHECK(es_decode(c, &e4, &err) == ES_ERR_RANGE);
    CHECK(es_seq_len(c, a) == 5 && es_seq_len(c, b2) == 5);

    /* Pages return to the pool when sequences close. */
    CHECK(es_ctx_kv_blocks_used(c) > 0);
    es_seq_close(c, a);
    es_seq_close(c, b2);
    CHECK(es_ctx_kv_blocks_used(c) == 0);
    free(la); free(lb); free(ref);
    es_ctx_free(c);
}

static void test_pool_exhaustion(es_model *m) {
    es_err err = {{0}};
    es_ctx_params p = es_ctx_default_params();
    p.n_seq_max = 2;
    p.kv_block_size = 4;
    p.kv_blocks = 3; /* 12 slots in all */
    es_ctx *c = NULL;
    CHECK_OK(es_ctx_init(m, &p, &c, &err), &err);
    int a, b;
    CHECK_OK(es_seq_open(c, &a, &err), &err);
    CHECK_OK(es_seq_open(c, &b, &err), &err);
    int32_t pos[10], seq[10];
    for (int i = 0; i < 10; i++) { pos[i] = i; seq[i] = a; }
    es_batch ba = {10, k_tokens, pos, seq, NULL, NULL, NULL};
    CHECK_OK(es_decode(c, &ba, &err), &err);
    for (int i = 0; i < 10; i++) seq[i] = b;
    es_batch bb = {10, k_tokens, pos, seq, NULL, NULL, NULL};
    CHECK(es_decode(c, &bb, &err) == ES_ERR_FULL);
    CHECK(strstr(err.msg, "KV pool") != NULL);
    CHECK(es_seq_len(c, b) == 0);
    CHECK(es_ctx_kv_blocks_used(c) == 3);
    es_seq_close(c, a);
    CHECK_OK(es_decode(c, &bb, &err), &err);
    es_ctx_free(c);
}

int main(void) {
    test_golden();
    test_golden_levels();
    es_model *m = es_test_load_model("stories260K.gguf");
    if (m) {
        test_batch_equals_steps(m);
        test_tree_and_keep(m);
        test_multi_seq_and_errors(m);
        test_pool_exhaustion(m);
        es_model_free(m);
    }
    return es_test_finish("test_engine");
}
