/* test_tokenizer_llamacpp.c — every byte-level BPE pre-tokenizer against llama.cpp itself, the
 * families without a test vocabulary of their own included (llama-bpe, qwen2, deepseek-v3, smollm,
 * command-r, gpt-4o, dbrx, llama4): GPT-2's vocabulary from ../shared/tokenizer-tests with
 * tokenizer.ggml.pre set to each name, as llama.cpp read it with kv_overrides when it wrote
 * tests/data/pretok-llamacpp-ref.jsonl (scripts/gen-llamacpp-pretok-ref.py: the 46 strings of the
 * test vectors and 200 random ones of many scripts, marks, digits, emoji, white space and code, under
 * each of 14 names). Every encoding must equal llama.cpp's. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "testutil.h"
#include "tokenizer/tok_impl.h"

#define MAX_PRE 32

typedef struct pre_tok {
    char name[32];
    es_tokenizer *tok;
    int n, agree;
} pre_tok;

/* GPT-2's vocabulary with tokenizer.ggml.pre = name. */
static es_tokenizer *vocab_with_pre(const es_gguf *g, const char *name) {
    es_err err_ = {{0}}, *err = &err_;
    es_gguf_writer *w = es_gguf_writer_init();
    CHECK(w != NULL);
    if (!w) return NULL;
    CHECK_OK(es_gguf_copy_kv(w, g), err);
    CHECK_OK(es_gguf_set_str(w, "tokenizer.ggml.pre", name), err);
    char file[64];
    snprintf(file, sizeof file, "gpt2-pre-%s.gguf", name);
    const char *path = es_test_tmp(file);
    CHECK_OK(es_gguf_write(w, path, NULL, NULL, err), err);
    es_gguf_writer_free(w);
    es_gguf *g2 = NULL;
    es_tokenizer *t = NULL;
    CHECK_OK(es_gguf_open(path, &g2, err), err);
    if (g2) CHECK_OK(es_tokenizer_from_gguf(g2, &t, err), err);
    es_gguf_free(g2);
    return t;
}

static pre_tok *find_pre(pre_tok *p, int *np, const es_gguf *g, const char *name) {
    for (int i = 0; i < *np; i++)
        if (!strcmp(p[i].name, name)) return &p[i];
    if (*np == MAX_PRE || strlen(name) >= sizeof p->name) return NULL;
    pre_tok *q = &p[(*np)++];
    memset(q, 0, sizeof *q);
    strcpy(q->name, name);
    q->tok = vocab_with_pre(g, name);
    return q;
}

int main(void) {
    es_err err_ = {{0}}, *err = &err_;
    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(es_test_shared("tokenizer-tests/ggml-vocab-gpt-2.gguf"), &g, err), err);
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/pretok-llamacpp-ref.jsonl", getenv("ES_SRC") ? getenv("ES_SRC") : ".");
    size_t len;
    char *data = es_test_read_file(path, &len);
    CHECK_MSG(data != NULL, "cannot read %s (set ES_SRC to the source tree)", path);
    if (!g || !data) {
        es_gguf_free(g);
        free(data);
        return es_test_finish("test_tokenizer_llamacpp");
    }
    pre_tok pres[MAX_PRE];
    int npre = 0, lines = 0, shown = 0;
    int32_t *ids = malloc(4096 * sizeof *ids), want[4096];
    for (char *line = strtok(data, "\n"); line && ids; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *jp = j ? cJSON_GetObjectItem(j, "pre") : NULL, *jt = j ? cJSON_GetObjectItem(j, "text") : NULL;
        CHECK_MSG(cJSON_IsString(jp) && cJSON_IsString(jt), "line %d is not {pre, text, ids}", lines + 1);
        if (!cJSON_IsString(jp) || !cJSON_IsString(jt)) { cJSON_Delete(j); continue; }
        lines++;
        pre_tok *p = find_pre(pres, &npre, g, jp->valuestring);
        CHECK_MSG(p && p->tok, "pre-tokenizer %s does not load", jp->valuestring);
        if (!p || !p->tok) { cJSON_Delete(j); continue; }
        int nw = es_test_json_ints(cJSON_GetObjectItem(j, "ids"), want, 4096), n = -1;
        const char *text = jt->valuestring;
        CHECK_OK(es_tokenize(p->tok, text, strlen(text), false, false, ids, 4096, &n, err), err);
        p->n++;
        if (n == nw && memcmp(ids, want, (size_t)n * sizeof *ids) == 0) p->agree++;
        else if (shown++ < 8) {
            fprintf(stderr, "%s \"%s\":\n  edgespec ", p->name, text);
            for (int i = 0; i < n && i < 4096; i++) fprintf(stderr, " %d", ids[i]);
            fprintf(stderr, "\n  llama.cpp");
            for (int i = 0; i < nw; i++) fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n");
        }
        cJSON_Delete(j);
    }
    for (int i = 0; i < npre; i++) {
        printf("%-15s %d/%d strings agree with llama.cpp\n", pres[i].name, pres[i].agree, pres[i].n);
        CHECK_MSG(pres[i].agree == pres[i].n, "%s: %d of %d strings differ", pres[i].name, pres[i].n - pres[i].agree, pres[i].n);
        es_tokenizer_free(pres[i].tok);
    }
    CHECK_MSG(npre == 14 && lines >= 14 * 200, "%d pre-tokenizers, %d lines", npre, lines);

    /* an empty name (like a missing key) is llama.cpp's fallback, "default" */
    es_tokenizer *empty = vocab_with_pre(g, ""), *dflt = vocab_with_pre(g, "default");
    if (empty && dflt) {
        static const char text[] = "Hello, world!! 1234567 x+=y; 'tis";
        int32_t a[64], b[64];
        int na = -1, nb = -2;
        CHECK_OK(es_tokenize(empty, text, sizeof text - 1, false, false, a, 64, &na, err), err);
        CHECK_OK(es_tokenize(dflt, text, sizeof text - 1, false, false, b, 64, &nb, err), err);
        CHECK(na == nb && na > 0 && memcmp(a, b, (size_t)na * sizeof *a) == 0);
    }
    es_tokenizer_free(empty);
    es_tokenizer_free(dflt);
    free(ids);
    free(data);
    es_gguf_free(g);
    return es_test_finish("test_tokenizer_llamacpp");
}
