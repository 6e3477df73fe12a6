/* test_real.c — the real Qwen2.5-Coder pair (make models-real; CTest label `real`): both files load as
 * qwen2 models of the expected shapes and share one vocabulary; the tokenizer encodes 3000 strings
 * (code, Unicode, emoji, digit runs, whitespace runs, random code points) exactly as Hugging Face's
 * `tokenizers` does (tests/data/qwen2.5-coder-tokenizer-ref.jsonl, scripts/gen-qwen2-tokenizer-ref.py)
 * and decodes them back; each model's own chat template is recognised and rendered exactly as Python
 * jinja2 renders it (scripts/render-chat-ref.py, run here); the prompts of the llama.cpp reference
 * tokenise as llama.cpp tokenised them. Exits 77 (CTest: skipped) when the models
 * are not in $EDGESPEC_CACHE (default ~/.cache/edgespec/models). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "model/model.h"
#include "http/chat.h"
#include "kernels/matmul.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"
#include "util/str.h"

#define MAXTOK 4096

static const char k_target[] = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";
static const char k_draft[] = "qwen2.5-coder-0.5b-instruct-awq-mixed.gguf";

static char g_dir[4096];

static const char *real_path(const char *file) {
    static char p[2][8192];
    static int slot;
    char *s = p[slot++ % 2];
    snprintf(s, sizeof p[0], "%s/%s", g_dir, file);
    return s;
}

static bool same_ids(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

/* The shapes the pair is known to have (general.name, layers, widths, heads) and one vocabulary. */
static void check_models(void) {
    es_err err = {0};
    es_model *t = NULL, *d = NULL;
    CHECK_OK(es_model_load(real_path(k_target), NULL, &t, &err), &err);
    CHECK_OK(es_model_load(real_path(k_draft), NULL, &d, &err), &err);
    if (!t || !d) goto done;
    CHECK(t->hp.arch == ES_ARCH_QWEN2 && d->hp.arch == ES_ARCH_QWEN2);
    CHECK(t->hp.n_layer == 28 && t->hp.n_embd == 1536 && t->hp.n_head == 12 && t->hp.n_head_kv == 2 && t->hp.n_ff == 8960);
    CHECK(d->hp.n_layer == 24 && d->hp.n_embd == 896 && d->hp.n_head == 14 && d->hp.n_head_kv == 2 && d->hp.n_ff == 4864);
    CHECK(t->hp.n_vocab == 151936 && d->hp.n_vocab == 151936);
    CHECK(t->hp.qkv_bias && t->hp.rope_neox && t->hp.rope_base == 1e6f);
    CHECK(!strcmp(t->name, "Qwen2.5 Coder 1.5B Instruct GGUF") && !strcmp(d->name, "Qwen2.5 Coder 0.5B Instruct AWQ"));
    CHECK(es_tokenizer_fingerprint(t->tok) == es_tokenizer_fingerprint(d->tok));
    /* the draft's Q5_0 matrices are either repacked to X16 as Q5_0 (the CPU has its kernels) or widened
     * to Q8_0 (model.c); none is left in the file layout, which only the scalar reference multiplies */
    const bool native = es_matmul_prefers_x16(ES_TYPE_Q5_0);
    int q5 = 0;
    for (int il = 0; il < d->hp.n_layer; il++) {
        const es_layer *L = &d->layers[il];
        const es_mat *ms[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        for (int k = 0; k < 7; k++) {
            CHECK(ms[k]->type != ES_TYPE_Q5_0 || ms[k]->layout == ES_LAYOUT_X16);
            q5 += ms[k]->type == ES_TYPE_Q5_0;
        }
    }
    CHECK_MSG(native ? q5 > 0 : q5 == 0, "%d Q5_0 matrices kept (native Q5_0 kernels: %d)", q5, (int)native);
    CHECK(d->tok_embd.type == ES_TYPE_Q5_0); /* the embedding stays as it is, read a row at a time */
done:
    es_model_free(t);
    es_model_free(d);
}

/* Loaded without repacking (as the device backends load it), no Q5_0 matrix is left: all widened. */
static void check_widened(void) {
    es_err err = {0};
    es_model *d = NULL;
    es_model_params p = es_model_default_params();
    p.no_repack = true;
    CHECK_OK(es_model_load(real_path(k_draft), &p, &d, &err), &err);
    if (!d) return;
    for (int il = 0; il < d->hp.n_layer; il++) {
        const es_layer *L = &d->layers[il];
        const es_mat *ms[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        for (int k = 0; k < 7; k++) CHECK(ms[k]->type != ES_TYPE_Q5_0 && ms[k]->layout == ES_LAYOUT_ROWS);
    }
    es_model_free(d);
}

static es_tokenizer *open_tok(const char *path, es_gguf **g) {
    es_err err = {0};
    es_tokenizer *t = NULL;
    *g = NULL;
    CHECK_OK(es_gguf_open(path, g, &err), &err);
    if (*g) CHECK_OK(es_tokenizer_from_gguf(*g, &t, &err), &err);
    return t;
}

static void check_tokenizer(const es_tokenizer *t) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/qwen2.5-coder-tokenizer-ref.jsonl", getenv("ES_SRC") ? getenv("ES_SRC") : ".");
    size_t len;
    char *data = es_test_read_file(path, &len);
    CHECK_MSG(data != NULL, "cannot read %s (set ES_SRC to the source tree)", path);
    if (!data) return;
    static int32_t want[MAXTOK], got[MAXTOK];
    static char back[1 << 16];
    int lines = 0, mismatches = 0, round_trips = 0;
    es_err err = {0};
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *jt = j ? cJSON_GetObjectItem(j, "text") : NULL, *ji = j ? cJSON_GetObjectItem(j, "ids") : NULL;
        CHECK(cJSON_IsString(jt) && cJSON_IsArray(ji));
        if (!cJSON_IsString(jt) || !cJSON_IsArray(ji)) { cJSON_Delete(j); continue; }
        const char *text = jt->valuestring;
        int nw = 0;
        bool special = false;
        for (const cJSON *e = ji->child; e && nw < MAXTOK; e = e->next) {
            want[nw] = (int32_t)e->valuedouble;
            special |= want[nw] >= 151643; /* a control token: decodes to nothing */
            nw++;
        }
        int ng = 0;
        CHECK_OK(es_tokenize(t, text, strlen(text), true, true, got, MAXTOK, &ng, &err), &err);
        if (!same_ids(want, nw, got, ng < MAXTOK ? ng : MAXTOK)) {
            if (mismatches++ < 10) {
                fprintf(stderr, "HF reference %d differs: %d ids, want %d: ", lines, ng, nw);
                for (const char *c = text; *c && c - text < 160; c++) fputc(*c == '\n' ? '|' : *c, stderr);
                fputc('\n', stderr);
            }
        }
        if (!special) {
            size_t n = 0;
            for (int i = 0; i < nw && n + 256 < sizeof back; i++)
                n += (size_t)es_token_to_piece(t, i ? want[i - 1] : -1, want[i], back + n, 256);
            back[n] = 0;
            CHECK_MSG(n == strlen(text) && !memcmp(back, text, n), "decoding reference %d does not give its text back", lines);
            round_trips++;
        }
        cJSON_Delete(j);
        lines++;
    }
    CHECK_MSG(mismatches == 0, "%d of %d strings tokenise differently from Hugging Face tokenizers", mismatches, lines);
    CHECK(lines == 3000);
    CHECK(round_trips > 2800);
    printf("tokenizer: %d strings, %d differ from tokenizers, %d decoded back\n", lines, mismatches, round_trips);
    free(data);
}

/* The prompts of the llama.cpp reference (scripts/gen-llamacpp-ref.py) tokenise as llama.cpp's own
 * tokenizer split them (test_real_cli.sh compares the continuations). */
static void check_llamacpp_prompts(const es_tokenizer *t) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/qwen2.5-coder-1.5b-llamacpp-ref.jsonl", getenv("ES_SRC") ? getenv("ES_SRC") : ".");
    size_t len;
    char *data = es_test_read_file(path, &len);
    CHECK_MSG(data != NULL, "cannot read %s", path);
    if (!data) return;
    static int32_t want[MAXTOK], got[MAXTOK];
    int lines = 0;
    es_err err = {0};
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *jp = j ? cJSON_GetObjectItem(j, "prompt") : NULL, *ji = j ? cJSON_GetObjectItem(j, "prompt_ids") : NULL;
        CHECK(cJSON_IsString(jp) && cJSON_IsArray(ji));
        if (cJSON_IsString(jp) && cJSON_IsArray(ji)) {
            int nw = 0, ng = 0;
            for (const cJSON *e = ji->child; e && nw < MAXTOK; e = e->next) want[nw++] = (int32_t)e->valuedouble;
            CHECK_OK(es_tokenize(t, jp->valuestring, strlen(jp->valuestring), true, false, got, MAXTOK, &ng, &err), &err);
            CHECK_MSG(same_ids(want, nw, got, ng), "llama.cpp prompt %d: %d ids, llama.cpp %d", lines, ng, nw);
        }
        cJSON_Delete(j);
        lines++;
    }
    CHECK(lines >= 10);
    free(data);
}

/* Renders every conversation of scripts/render-chat-ref.py natively and compares with jinja2's text. */
static void check_chat(const char *model, const es_tokenizer *t) {
    const char *venv = getenv("ES_VENV") ? getenv("ES_VENV") : "build/venv", *src = getenv("ES_SRC") ? getenv("ES_SRC") : ".";
    const char *out = es_test_tmp("real-chat-ref.jsonl");
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s/bin/python' '%s/scripts/render-chat-ref.py' '%s' '%s' >/dev/null", venv, src, model, out);
    CHECK_MSG(system(cmd) == 0, "%s failed", cmd);
    const es_chat_family f = es_chat_detect(es_tokenizer_chat_template(t));
    CHECK_MSG(f == ES_CHAT_QWEN2, "%s: template recognised as %s", model, es_chat_family_name(f));
    size_t len;
    char *data = es_test_read_file(out, &len);
    CHECK(data != NULL);
    if (!data) return;
    int convs = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *jm = j ? cJSON_GetObjectItem(j, "messages") : NULL, *jt = j ? cJSON_GetObjectItem(j, "text") : NULL;
        CHECK(cJSON_IsArray(jm) && cJSON_IsString(jt));
        es_oai_message m[16];
        int n = 0;
        for (const cJSON *e = jm ? jm->child : NULL; e && n < 16; e = e->next, n++) {
            m[n].role = cJSON_GetObjectItem(e, "role")->valuestring;
            m[n].content = cJSON_GetObjectItem(e, "content")->valuestring;
        }
        es_str o = {0};
        CHECK(es_chat_render(f, m, n, &o));
        CHECK_MSG(jt && !strcmp(es_str_cstr(&o), jt->valuestring), "conversation %d renders as\n%s\nwhere jinja2 gives\n%s", convs,
                  es_str_cstr(&o), jt ? jt->valuestring : "");
        es_str_free(&o);
        cJSON_Delete(j);
        convs++;
    }
    CHECK(convs == 14);
    free(data);
}

int main(void) {
    const char *cache = getenv("EDGESPEC_CACHE"), *home = getenv("HOME");
    if (cache && *cache) snprintf(g_dir, sizeof g_dir, "%s", cache);
    else snprintf(g_dir, sizeof g_dir, "%s/.cache/edgespec/models", home ? home : ".");
    if (access(real_path(k_target), R_OK) || access(real_path(k_draft), R_OK)) {
        printf("test_real: SKIPPED: the real models are not in %s (make models-real fetches them)\n", g_dir);
        return 77;
    }
    check_models();
    check_widened();
    es_gguf *gt = NULL, *gd = NULL;
    es_tokenizer *tt = open_tok(real_path(k_target), &gt), *td = open_tok(real_path(k_draft), &gd);
    if (tt) check_tokenizer(tt);
    if (tt) check_llamacpp_prompts(tt);
    if (tt) check_chat(real_path(k_target), tt);
    if (td) check_chat(real_path(k_draft), td);
    es_tokenizer_free(tt);
    es_tokenizer_free(td);
    es_gguf_free(gt);
    es_gguf_free(gd);
    return es_test_finish("test_real");
}
