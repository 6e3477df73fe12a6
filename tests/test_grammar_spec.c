/* test_grammar_spec.c — constrained decoding through speculative decoding, on the tiny models:
 *   - greedy speculation under a grammar (chain and tree drafts, with and without a masked draft)
 *     emits exactly the tokens of plain autoregressive greedy decoding with the same mask;
 *   - the outputs (greedy and sampled with the rejection rule) parse with cJSON and validate against
 *     schemas of nested objects, arrays and enums;
 *   - acceptance with a masked draft is printed next to the unconstrained run (not asserted). */
#include <cjson/cJSON.h>
#include <string.h>

#include "grammar/grammar.h"
#include "sample/sampler.h"
#include "specdec/spec.h"
#include "testutil.h"

static const char *const k_schemas[] = {
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"},"
    "\"pet\":{\"enum\":[\"cat\",\"dog\",\"bird\"]},\"friends\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},\"happy\":{\"type\":\"boolean\"}},\"required\":[\"name\",\"happy\"]},\"maxItems\":2}},"
    "\"required\":[\"name\",\"age\",\"pet\",\"friends\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"story\":{\"type\":\"object\",\"properties\":{\"title\":{\"type\":\"string\"},"
    "\"mood\":{\"enum\":[\"happy\",\"sad\"]},\"score\":{\"type\":[\"number\",\"null\"]}},\"required\":[\"title\",\"mood\",\"score\"]},"
    "\"words\":{\"type\":\"array\",\"items\":{\"enum\":[\"sun\",\"moon\",1,2]},\"minItems\":1,\"maxItems\":4}},"
    "\"required\":[\"story\",\"words\"]}",
    NULL, /* json_object */
};

static es_ctx *make_ctx(es_model *m) {
    es_err err = {0};
    es_ctx_params p = es_ctx_default_params();
    p.n_seq_max = 2;
    p.n_threads = 1;
    p.n_batch_max = ES_SPEC_MAX_NODES + 1;
    p.kv_type = ES_KV_F32;
    es_ctx *c = NULL;
    CHECK_OK(es_ctx_init(m, &p, &c, &err), &err);
    return c;
}

static es_grammar *grammar(int i) {
    es_err err = {0};
    es_grammar *g = NULL;
    if (k_schemas[i]) CHECK_OK(es_grammar_from_schema(k_schemas[i], strlen(k_schemas[i]), &g, &err), &err);
    else CHECK_OK(es_grammar_json_object(&g, &err), &err);
    return g;
}

/* The tiny story models rarely close a string on their own and like blank tokens; a logit bias (part of the same sampling
 * pipeline on both sides) on the tokens that hold '"', ']' or '}' (and against blank tokens) makes the
 * documents end within the test's budget, so that they can be parsed. */
static es_sampler_params biased(const es_tokenizer *tok, float temperature) {
    es_sampler_params sp = es_sampler_default_params();
    sp.temperature = temperature;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    for (int t = 0; t < es_tokenizer_n_vocab(tok) && sp.n_bias < ES_SAMPLER_MAX_BIAS; t++) {
        char pc[257];
        const int pl = es_token_to_piece(tok, -1, t, pc, 256);
        pc[pl] = 0;
        if (memchr(pc, ']', (size_t)pl) || memchr(pc, '}', (size_t)pl) || t == es_tokenizer_eos(tok))
            sp.bias[sp.n_bias++] = (es_logit_bias){t, 12.0f};
        else if (memchr(pc, '"', (size_t)pl))
            sp.bias[sp.n_bias++] = (es_logit_bias){t, 6.0f};
        else if (pl > 0 && strspn(pc, " \n") >= (size_t)pl) /* blank tokens: the models pad with them */
            sp.bias[sp.n_bias++] = (es_logit_bias){t, -6.0f};
    }
    return sp;
}

/* Plain autoregressive greedy decoding with the grammar's mask: the reference. */
static int ar_masked(es_ctx *c, es_gmatcher *m, const int32_t *prompt, int np, int max_gen, int32_t end, int32_t *out) {
    es_err err = {0};
    int seq;
    CHECK_OK(es_seq_open(c, &seq, &err), &err);
    es_sampler_params sp = biased(es_model_tokenizer(es_ctx_model(c)), 0.0f);
    es_sampler *s = NULL;
    CHECK_OK(es_sampler_init(&sp, es_model_n_vocab(es_ctx_model(c)), &s, &err), &err);
    int32_t pos[512], sq[512];
    for (int i = 0; i < np; i++) { pos[i] = i; sq[i] = seq; }
    es_batch b = {np, prompt, pos, sq, NULL, NULL, NULL};
    CHECK_OK(es_decode(c, &b, &err), &err);
    const float *logits = es_ctx_logits(c, np - 1);
    int n = 0;
    es_gmatcher_reset(m);
    while (n < max_gen && s) {
        es_sampler_set_mask(s, es_gmatcher_mask(m));
        const int32_t t = es_sampler_sample(s, logits);
        CHECK(es_gmatcher_accept(m, t));
        out[n++] = t;
        if (t == end) break;
        int32_t p1 = np + n - 1;
        es_batch b1 = {1, &out[n - 1], &p1, &seq, NULL, NULL, NULL};
        if (es_decode(c, &b1, &err) != ES_OK) break;
        logits = es_ctx_logits(c, 0);
    }
    es_sampler_free(s);
    es_seq_close(c, seq);
    return n;
}

typedef struct cfg {
    es_draft_mode mode;
    es_accept_rule rule;
    bool mask_draft;
    uint64_t seed;
} cfg;

static int spec_masked(es_ctx *tc, es_ctx *dc, const es_grammar *g, const es_grammar_vocab *gv, const cfg *k, const int32_t *prompt,
                       int np, int max_gen, int32_t end, int32_t *out, es_spec_stats *st) {
    es_err err = {0};
    int ts, ds;
    CHECK_OK(es_seq_open(tc, &ts, &err), &err);
    CHECK_OK(es_seq_open(dc, &ds, &err), &err);
    es_verifier_params vp = {k->rule, biased(es_model_tokenizer(es_ctx_model(tc)), k->rule == ES_ACCEPT_GREEDY ? 0.0f : 1.0f), 0.0};
    vp.sampling.seed = k->seed;
    es_drafter_params dp = es_drafter_default_params();
    dp.mode = k->mode;
    dp.k_max = 6;
    dp.sample = k->rule == ES_ACCEPT_REJECTION;
    dp.seed = k->seed;
    es_verifier *v = NULL;
    es_drafter *d = NULL;
    es_gmatcher *vm = NULL, *dm = NULL;
    CHECK_OK(es_verifier_init(tc, ts, &vp, &v, &err), &err);
    CHECK_OK(es_drafter_init(dc, ds, &dp, &d, &err), &err);
    CHECK_OK(es_gmatcher_init(g, gv, &end, 1, &vm, &err), &err);
    CHECK_OK(es_gmatcher_init(g, gv, &end, 1, &dm, &err), &err);
    int n = 0;
    if (v && d && vm && dm) {
        es_verifier_set_grammar(v, vm);
        if (k->mask_draft) CHECK_OK(es_drafter_set_grammar(d, dm, &err), &err);
        CHECK_OK(es_spec_generate(d, v, prompt, np, max_gen, 512, &end, 1, out, st, NULL, NULL, &err), &err);
        n = st->n_generated;
    }
    es_verifier_free(v);
    es_drafter_free(d);
    es_gmatcher_free(vm);
    es_gmatcher_free(dm);
    es_seq_close(tc, ts);
    es_seq_close(dc, ds);
    return n;
}

/* The text of out[0..n) (end token excluded) parses and is an object; with a schema, its required
 * top-level keys are there (the full validation is test_grammar's; here the point is the path). */
static void check_json(const es_tokenizer *tok, const int32_t *out, int n, int32_t end, int schema) {
    char text[8192];
    int len = 0;
    bool ended = false;
    for (int i = 0; i < n; i++) {
        if (out[i] == end) { ended = true; break; }
        char pc[256];
        const int pl = es_token_to_piece(tok, -1, out[i], pc, sizeof pc);
        if (len + pl < (int)sizeof text) { memcpy(text + len, pc, (size_t)pl); len += pl; }
    }
    text[len] = 0;
    CHECK_MSG(ended, "schema %d: the document did not end within the budget: %s", schema, text);
    if (!ended) return;
    cJSON *doc = cJSON_Parse(text);
    CHECK_MSG(doc && cJSON_IsObject(doc), "schema %d: output does not parse as an object: %s", schema, text);
    if (doc && k_schemas[schema]) {
        cJSON *s = cJSON_Parse(k_schemas[schema]);
        for (const cJSON *r = cJSON_GetObjectItemCaseSensitive(s, "required")->child; r; r = r->next)
            CHECK_MSG(cJSON_GetObjectItemCaseSensitive(doc, r->valuestring) != NULL, "schema %d: '%s' missing in %s", schema,
                      r->valuestring, text);
        cJSON_Delete(s);
    }
    cJSON_Delete(doc);
}

int main(void) {
    es_model *target = es_test_load_model("stories260K.gguf"), *draft = es_test_load_model("draft-mid.gguf");
    if (!target || !draft) return es_test_finish("test_grammar_spec");
    es_ctx *tc = make_ctx(target), *dc = make_ctx(draft);
    const es_tokenizer *tok = es_model_tokenizer(target);
    es_err err = {0};
    es_grammar_vocab *gv = NULL;
    CHECK_OK(es_grammar_vocab_init(tok, &gv, &err), &err);
    const int32_t end = es_tokenizer_eos(tok);
    static const char *const prompts[] = {"Once upon a time", "The cat"};
    const int max_gen = 400;
    for (int si = 0; gv && tc && dc && si < (int)(sizeof k_schemas / sizeof k_schemas[0]); si++) {
        es_grammar *g = grammar(si);
        if (!g) continue;
        es_gmatcher *rm = NULL;
        CHECK_OK(es_gmatcher_init(g, gv, &end, 1, &rm, &err), &err);
        for (int pi = 0; rm && pi < 2; pi++) {
            int32_t prompt[64];
            int np = 0;
            CHECK_OK(es_tokenize(tok, prompts[pi], strlen(prompts[pi]), true, false, prompt, 64, &np, &err), &err);
            int32_t ref[512], got[512];
            const int nr = ar_masked(tc, rm, prompt, np, max_gen, end, ref);
            check_json(tok, ref, nr, end, si);
            static const cfg greedy[] = {{ES_DRAFT_CHAIN, ES_ACCEPT_GREEDY, true, 1},
                                         {ES_DRAFT_TREE, ES_ACCEPT_GREEDY, true, 1},
                                         {ES_DRAFT_CHAIN, ES_ACCEPT_GREEDY, false, 1}};
            for (int c = 0; c < 3; c++) {
                es_spec_stats st;
                const int ng = spec_masked(tc, dc, g, gv, &greedy[c], prompt, np, max_gen, end, got, &st);
                CHECK_MSG(ng == nr && memcmp(ref, got, (size_t)nr * sizeof *got) == 0,
                          "schema %d prompt %d cfg %d: speculation under the mask differs from masked AR (%d vs %d tokens)", si, pi, c, ng,
                          nr);
                if (pi == 0)
                    printf("schema %d, %s draft%s: %d tokens in %d rounds, %.2f tokens/round\n", si, c == 1 ? "tree" : "chain",
                           greedy[c].mask_draft ? " (masked)" : " (unmasked)", ng, st.rounds, st.rounds ? (double)ng / st.rounds : 0);
            }
            /* sampled (rejection rule): valid whatever the seed */
            for (uint64_t seed = 1; seed <= 3; seed++) {
                const cfg k = {pi ? ES_DRAFT_TREE : ES_DRAFT_CHAIN, ES_ACCEPT_REJECTION, true, seed};
                es_spec_stats st;
                const int ng = spec_masked(tc, dc, g, gv, &k, prompt, np, max_gen, end, got, &st);
                check_json(tok, got, ng, end, si);
            }
        }
        es_gmatcher_free(rm);
        es_grammar_free(g);
    }
    es_grammar_vocab_free(gv);
    es_ctx_free(tc);
    es_ctx_free(dc);
    es_model_free(target);
    es_model_free(draft);
    return es_test_finish("test_grammar_spec");
}
