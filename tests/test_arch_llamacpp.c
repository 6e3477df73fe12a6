/* test_arch_llamacpp.c — the architectures against llama.cpp: small random models of each (`synth`,
 * f32, fixed seeds, the phi-3 vocabulary of ../shared/tokenizer-tests) are made through the library
 * exactly as scripts/gen-llamacpp-arch-ref.py made them for llama.cpp (llama-cpp-python); edgespec's
 * prompt ids, its 16 largest logits after the prompt (within 2e-3 of the largest's size, at least 1) and 16 greedy tokens must equal
 * llama.cpp's (tests/data/arch-llamacpp-ref.jsonl). phi3 checks the fused QKV / gate-up matrices and
 * its NEOX rotation; llama the plain path beside it; qwen3 its per-head q/k norms and a head size that
 * is not dim / heads; llama3 the RoPE factors of rope_freqs.weight. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "convert/convert.h"
#include "testutil.h"

#define TOL 2e-3

static es_model *make_model(const char *arch, const char *shape, uint64_t seed) {
    char path[64];
    snprintf(path, sizeof path, "arch-%s.gguf", arch);
    const char *out = es_test_tmp(path);
    es_synth_opts o;
    memset(&o, 0, sizeof o);
    o.shape = shape;
    o.seed = seed;
    o.tokenizer = es_test_shared("tokenizer-tests/ggml-vocab-phi-3.gguf");
    o.out_path = out;
    o.n_threads = 1;
    es_err err = {{0}};
    CHECK_OK(es_synth(&o, &err), &err);
    es_model *m = NULL;
    es_model_params mp = es_model_default_params();
    CHECK_OK(es_model_load(out, &mp, &m, &err), &err);
    return m;
}

static void check_case(es_model *m, const cJSON *c) {
    const char *arch = cJSON_GetStringValue(cJSON_GetObjectItem(c, "arch"));
    const char *prompt = cJSON_GetStringValue(cJSON_GetObjectItem(c, "prompt"));
    es_err err = {{0}};
    int32_t ids[64], want_ids[64], want_greedy[16];
    int n = 0;
    CHECK_OK(es_tokenize(es_model_tokenizer(m), prompt, strlen(prompt), true, false, ids, 64, &n, &err), &err);
    const int nw = es_test_json_ints(cJSON_GetObjectItem(c, "prompt_ids"), want_ids, 64);
    CHECK_MSG(n == nw && !memcmp(ids, want_ids, (size_t)n * sizeof *ids), "%s '%s': prompt ids differ", arch, prompt);
    if (n != nw) return;
    es_ctx_params cp = es_ctx_default_params();
    cp.n_ctx = 128;
    cp.n_seq_max = 1;
    cp.n_batch_max = 64;
    cp.n_threads = 1;
    es_ctx *ctx = NULL;
    CHECK_OK(es_ctx_init(m, &cp, &ctx, &err), &err);
    if (!ctx) return;
    int seq = 0;
    CHECK_OK(es_seq_open(ctx, &seq, &err), &err);
    int32_t pos[64], sq[64];
    int8_t lg[64] = {0};
    for (int i = 0; i < n; i++) pos[i] = i, sq[i] = seq;
    lg[n - 1] = 1;
    es_batch b = {n, ids, pos, sq, NULL, lg, NULL};
    CHECK_OK(es_decode(ctx, &b, &err), &err);
    const float *l = es_ctx_logits(ctx, n - 1);
    double worst = 0, scale = 1;
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(c, "top")) {
        const int id = cJSON_GetArrayItem(t, 0)->valueint;
        const double v = cJSON_GetArrayItem(t, 1)->valuedouble;
        if (l && !(fabs(l[id] - v) <= worst)) worst = fabs(l[id] - v); /* (a NaN stays the worst) */
        if (fabs(v) > scale) scale = fabs(v);
    }
    /* relative to the logits' size: the llama3 model's weights are 5x larger, so are its rounding errors */
    CHECK_MSG(l && worst <= TOL * scale, "%s '%s': logits differ from llama.cpp's by %g", arch, prompt, worst);
    /* greedy */
    es_test_json_ints(cJSON_GetObjectItem(c, "greedy"), want_greedy, 16);
    int32_t got[16];
    int32_t tok = 0;
    for (int k = 0; k < 16 && l; k++) {
        tok = 0;
        for (int i = 1; i < es_model_n_vocab(m); i++)
            if (l[i] > l[tok]) tok = i;
        got[k] = tok;
        int32_t p1 = n + k, s1 = seq;
        int8_t g1 = 1;
        es_batch b1 = {1, &tok, &p1, &s1, NULL, &g1, NULL};
        if (es_decode(ctx, &b1, &err) != ES_OK) break;
        l = es_ctx_logits(ctx, 0);
    }
    CHECK_MSG(!memcmp(got, want_greedy, sizeof got), "%s '%s': greedy tokens differ from llama.cpp's (%d %d %d ... against %d %d %d ...)",
              arch, prompt, got[0], got[1], got[2], want_greedy[0], want_greedy[1], want_greedy[2]);
    printf("%s '%s': top-16 logits within %.1e of llama.cpp's, 16 greedy tokens equal\n", arch, prompt, worst);
    es_ctx_free(ctx);
}

int main(void) {
    size_t len = 0;
    char *text = es_test_read_file("tests/data/arch-llamacpp-ref.jsonl", &len);
    if (!text) text = es_test_read_file("../tests/data/arch-llamacpp-ref.jsonl", &len);
    CHECK_MSG(text != NULL, "tests/data/arch-llamacpp-ref.jsonl not found");
    es_model *m = NULL;
    char cur[256] = "";
    int cases = 0;
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        cJSON *c = cJSON_Parse(line);
        CHECK(c != NULL);
        if (!c) continue;
        const char *arch = cJSON_GetStringValue(cJSON_GetObjectItem(c, "arch"));
        const char *shape = cJSON_GetStringValue(cJSON_GetObjectItem(c, "shape"));
        char key[256];
        snprintf(key, sizeof key, "%s|%s", arch, shape);
        if (strcmp(key, cur)) {
            es_model_free(m);
            m = make_model(arch, shape, (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(c, "seed")));
            snprintf(cur, sizeof cur, "%s", key);
        }
        if (m) check_case(m, c);
        cases++;
        cJSON_Delete(c);
    }
    CHECK(cases == 12);
    es_model_free(m);
    free(text);
    return es_test_finish("test_arch_llamacpp");
}
