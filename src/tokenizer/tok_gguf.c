/* tok_gguf.c — the tokenizer as GGUF metadata (the tokenizer.ggml.* keys llama.cpp uses):
 *   tokenizer.ggml.model            string  "llama" (ES_TOK_SPM) or "gpt2" (ES_TOK_BPE)
 *   tokenizer.ggml.tokens           string[n_vocab]
 *   tokenizer.ggml.scores           f32[n_vocab]            (optional on reading)
 *   tokenizer.ggml.token_type       i32[n_vocab]            (optional on reading)
 *   tokenizer.ggml.merges           string[] "left right"   (BPE; SPM when the vocabulary has them)
 *   tokenizer.ggml.{bos,eos,unknown,padding}_token_id  u32  (only those that exist)
 *   tokenizer.ggml.add_bos_token, add_eos_token, add_space_prefix  bool
 *   tokenizer.ggml.pre              string  (BPE pre-tokenizer; absent or empty: "default", as llama.cpp)
 *   tokenizer.chat_template         string  (when set)
 * SentencePiece vocabularies are written the way the GGUF convention (and llama.cpp) reads them: a
 * space in a normal token is U+2581 "▁". llama2.c's tokenizer.bin stores plain spaces; files edgespec
 * wrote with plain spaces before still load and encode the same (tokenizer.c reads both forms).
 * Kept apart from tokenizer.c so that programs that never touch GGUF do not link the GGUF module. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"
#include "util/err.h"

#define K_MODEL "tokenizer.ggml.model"
#define K_TOKENS "tokenizer.ggml.tokens"
#define K_SCORES "tokenizer.ggml.scores"
#define K_TYPES "tokenizer.ggml.token_type"
#define K_MERGES "tokenizer.ggml.merges"
#define K_BOS "tokenizer.ggml.bos_token_id"
#define K_EOS "tokenizer.ggml.eos_token_id"
#define K_UNK "tokenizer.ggml.unknown_token_id"
#define K_PAD "tokenizer.ggml.padding_token_id"
#define K_ADD_BOS "tokenizer.ggml.add_bos_token"
#define K_ADD_EOS "tokenizer.ggml.add_eos_token"
#define K_ADD_SPACE "tokenizer.ggml.add_space_prefix"
#define K_PRE "tokenizer.ggml.pre"
#define K_TEMPLATE "tokenizer.chat_template"

static const char k_lower_block[] = "\xE2\x96\x81"; /* U+2581 */

/* SPM vocabularies that spell spaces as ' ' (llama2.c's): copies of the normal tokens with each space
 * as U+2581 in esc[i] (left NULL where a token needs no change, and for every token when the vocabulary
 * already uses U+2581). */
static es_status escape_spaces(const es_vocab_spec *spec, const size_t *lens, char **esc, es_err *err) {
    size_t n = (size_t)spec->n_vocab;
    for (size_t i = 0; i < n; i++)
        if (lens[i] >= 3 && memmem(spec->tokens[i], lens[i], k_lower_block, 3)) return ES_OK;
    for (size_t i = 0; i < n; i++) {
        int32_t ty = spec->types ? spec->types[i] : es_tok_infer_type(spec, (int)i);
        if (ty != ES_TOKTYPE_NORMAL && ty != 0) continue;
        size_t sp = 0;
        for (size_t k = 0; k < lens[i]; k++) sp += spec->tokens[i][k] == ' ';
        if (!sp) continue;
        char *e = malloc(lens[i] + 2 * sp + 1);
        if (!e) return es_fail(err, ES_ERR_NOMEM, "out of memory writing the vocabulary");
        size_t o = 0;
        for (size_t k = 0; k < lens[i]; k++) {
            if (spec->tokens[i][k] == ' ') { memcpy(e + o, k_lower_block, 3); o += 3; }
            else e[o++] = spec->tokens[i][k];
        }
        e[o] = 0;
        esc[i] = e;
    }
    return ES_OK;
}

static es_status wr(es_status st, const char *key, es_err *err) {
    return st == ES_OK ? ES_OK : es_fail(err, st, "cannot set GGUF key %s", key);
}

es_status es_vocab_write_gguf(const es_vocab_spec *spec, es_gguf_writer *w, es_err *err) {
    if (!spec || !w || !spec->tokens || spec->n_vocab <= 0 || (spec->n_merges > 0 && !spec->merges))
        return es_fail(err, ES_ERR_INVALID_ARG, "es_vocab_write_gguf: bad arguments");
    size_t n = (size_t)spec->n_vocab;
    size_t *lens = malloc(n * sizeof *lens);
    float *scores = malloc(n * sizeof *scores);
    int32_t *types = malloc(n * sizeof *types);
    size_t *mlens = malloc((spec->n_merges > 0 ? (size_t)spec->n_merges : 1) * sizeof *mlens);
    char **esc = calloc(n, sizeof *esc);
    const char **texts = malloc(n * sizeof *texts);
    es_status st = ES_OK;
    if (!lens || !scores || !types || !mlens || !esc || !texts) { st = es_fail(err, ES_ERR_NOMEM, "out of memory writing the vocabulary"); goto done; }
    for (size_t i = 0; i < n; i++) {
        if (!spec->tokens[i]) { st = es_fail(err, ES_ERR_INVALID_ARG, "token %zu has no text", i); goto done; }
        lens[i] = spec->lens ? spec->lens[i] : strlen(spec->tokens[i]);
        scores[i] = spec->scores ? spec->scores[i] : 0.0f;
        types[i] = spec->types ? spec->types[i] : es_tok_infer_type(spec, (int)i);
    }
    for (int i = 0; i < spec->n_merges; i++) {
        if (!spec->merges[i]) { st = es_fail(err, ES_ERR_INVALID_ARG, "merge %d is NULL", i); goto done; }
        mlens[i] = strlen(spec->merges[i]);
    }
    bool spm = spec->kind == ES_TOK_SPM;
    if (spm && (st = escape_spaces(spec, lens, esc, err)) != ES_OK) goto done;
    for (size_t i = 0; i < n; i++) {
        texts[i] = esc[i] ? esc[i] : spec->tokens[i];
        if (esc[i]) lens[i] = strlen(esc[i]);
    }
    if ((st = wr(es_gguf_set_str(w, K_MODEL, spm ? "llama" : "gpt2"), K_MODEL, err))) goto done;
    if ((st = wr(es_gguf_set_arr_str(w, K_TOKENS, texts, lens, n), K_TOKENS, err))) goto done;
    if ((st = wr(es_gguf_set_arr(w, K_SCORES, ES_GGUF_FLOAT32, scores, n), K_SCORES, err))) goto done;
    if ((st = wr(es_gguf_set_arr(w, K_TYPES, ES_GGUF_INT32, types, n), K_TYPES, err))) goto done;
    if (spec->n_merges > 0 || !spm) {
        const char *const none[1] = {NULL};
        const char *const *m = spec->n_merges > 0 ? spec->merges : none;
        if ((st = wr(es_gguf_set_arr_str(w, K_MERGES, m, mlens, (uint64_t)(spec->n_merges > 0 ? spec->n_merges : 0)), K_MERGES, err)))
            goto done;
    }
    const struct { const char *key; int32_t id; } ids[] = {
        {K_BOS, spec->bos}, {K_EOS, spec->eos}, {K_UNK, spec->unk}, {K_PAD, spec->pad}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        if (ids[i].id < -1 || ids[i].id >= spec->n_vocab) {
            st = es_fail(err, ES_ERR_INVALID_ARG, "%s %d out of range", ids[i].key, ids[i].id);
            goto done;
        }
        if (ids[i].id >= 0 && (st = wr(es_gguf_set_u32(w, ids[i].key, (uint32_t)ids[i].id), ids[i].key, err))) goto done;
    }
    if ((st = wr(es_gguf_set_bool(w, K_ADD_BOS, spec->add_bos), K_ADD_BOS, err))) goto done;
    if ((st = wr(es_gguf_set_bool(w, K_ADD_EOS, spec->add_eos), K_ADD_EOS, err))) goto done;
    if ((st = wr(es_gguf_set_bool(w, K_ADD_SPACE, spm && spec->add_space_prefix), K_ADD_SPACE, err))) goto done;
    if (!spm && (st = wr(es_gguf_set_str(w, K_PRE, spec->pre ? spec->pre : "gpt2"), K_PRE, err))) goto done;
    if (spec->chat_template && (st = wr(es_gguf_set_str(w, K_TEMPLATE, spec->chat_template), K_TEMPLATE, err))) goto done;
done:
    for (size_t i = 0; esc && i < n; i++) free(esc[i]);
    free(esc);
    free(texts);
    free(lens);
    free(scores);
    free(types);
    free(mlens);
    return st;
}

/* An optional token id: absent -> -1; present, it must be an integer below n_vocab. */
static es_status read_id(const es_gguf *g, const char *key, int n_vocab, int32_t *out, es_err *err) {
    *out = -1;
    if (es_gguf_find_kv(g, key) < 0) return ES_OK;
    uint32_t v;
    if (!es_gguf_get_u32(g, key, &v)) return es_fail(err, ES_ERR_FORMAT, "%s is not an unsigned integer", key);
    if (v >= (uint32_t)n_vocab) return es_fail(err, ES_ERR_FORMAT, "%s = %u is out of range (vocabulary %d)", key, v, n_vocab);
    *out = (int32_t)v;
    return ES_OK;
}

static es_status read_bool(const es_gguf *g, const char *key, bool *out, es_err *err) {
    if (es_gguf_find_kv(g, key) < 0) return ES_OK;
    if (!es_gguf_get_bool(g, key, out)) return es_fail(err, ES_ERR_FORMAT, "%s is not a bool", key);
    return ES_OK;
}

/* An optional array of `n` elements of type `et`; *data NULL when absent. */
static es_status read_arr(const es_gguf *g, const char *key, es_gguf_vtype et, uint64_t n, const unsigned char **data,
                          es_err *err) {
    *data = NULL;
    if (es_gguf_find_kv(g, key) < 0) return ES_OK;
    es_gguf_vtype t;
    uint64_t cnt;
    if (!es_gguf_get_arr(g, key, &t, &cnt) || t != et)
        return es_fail(err, ES_ERR_FORMAT, "%s is not an array of %s", key, es_gguf_vtype_name(et));
    if (cnt != n) return es_fail(err, ES_ERR_FORMAT, "%s has %llu entries, tokens has %llu", key, (unsigned long long)cnt, (unsigned long long)n);
    *data = es_gguf_arr_data(g, key);
    if (!*data && n > 0) return es_fail(err, ES_ERR_FORMAT, "%s has no data", key);
    return ES_OK;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct gguf_load {
    const char **tokens;
    size_t *lens;
    float *scores;
    int32_t *types;
    const char **merges;
} gguf_load;

static es_status from_gguf_body(const es_gguf *g, gguf_load *L, es_tokenizer **out, es_err *err) {
    es_vocab_spec spec = {0};
    const char *model;
    size_t model_len;
    if (!es_gguf_get_str(g, K_MODEL, &model, &model_len)) return es_fail(err, ES_ERR_FORMAT, "no %s string", K_MODEL);
    if (!strcmp(model, "llama")) spec.kind = ES_TOK_SPM;
    else if (!strcmp(model, "gpt2")) spec.kind = ES_TOK_BPE;
    else return es_fail(err, ES_ERR_UNSUPPORTED, "tokenizer model \"%.32s\" is not supported", model);

    es_gguf_vtype et;
    uint64_t n;
    if (!es_gguf_get_arr(g, K_TOKENS, &et, &n) || et != ES_GGUF_STRING) return es_fail(err, ES_ERR_FORMAT, "no %s string array", K_TOKENS);
    if (n == 0 || n > TOK_MAX_VOCAB) return es_fail(err, ES_ERR_FORMAT, "%s has %llu entries", K_TOKENS, (unsigned long long)n);
    spec.n_vocab = (int)n;
    L->tokens = malloc(n * sizeof *L->tokens);
    L->lens = malloc(n * sizeof *L->lens);
    L->scores = malloc(n * sizeof *L->scores);
    L->types = malloc(n * sizeof *L->types);
    if (!L->tokens || !L->lens || !L->scores || !L->types) return es_fail(err, ES_ERR_NOMEM, "out of memory for %llu tokens", (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        L->tokens[i] = es_gguf_arr_str(g, K_TOKENS, i, &L->lens[i]);
        if (!L->tokens[i]) return es_fail(err, ES_ERR_FORMAT, "%s[%llu] is unreadable", K_TOKENS, (unsigned long long)i);
    }
    spec.tokens = L->tokens;
    spec.lens = L->lens;

    const unsigned char *d;
    es_status st = read_arr(g, K_SCORES, ES_GGUF_FLOAT32, n, &d, err);
    if (st != ES_OK) return st;
    if (d) {
        for (uint64_t i = 0; i < n; i++) {
            uint32_t u = le32(d + 4 * i);
            memcpy(&L->scores[i], &u, sizeof u);
        }
        spec.scores = L->scores;
    }
    if ((st = read_arr(g, K_TYPES, ES_GGUF_INT32, n, &d, err)) != ES_OK) return st;
    if (d) {
        for (uint64_t i = 0; i < n; i++) L->types[i] = (int32_t)le32(d + 4 * i);
        spec.types = L->types; /* es_tokenizer_init validates the values */
    }

    if (es_gguf_find_kv(g, K_MERGES) >= 0) {
        uint64_t nm;
        if (!es_gguf_get_arr(g, K_MERGES, &et, &nm) || et != ES_GGUF_STRING)
            return es_fail(err, ES_ERR_FORMAT, "%s is not a string array", K_MERGES);
        if (nm > INT32_MAX / 4) return es_fail(err, ES_ERR_FORMAT, "%s has %llu entries", K_MERGES, (unsigned long long)nm);
        if (nm > 0) {
            L->merges = malloc(nm * sizeof *L->merges);
            if (!L->merges) return es_fail(err, ES_ERR_NOMEM, "out of memory for %llu merges", (unsigned long long)nm);
            for (uint64_t i = 0; i < nm; i++) {
                size_t ml;
                L->merges[i] = es_gguf_arr_str(g, K_MERGES, i, &ml);
                if (!L->merges[i] || strlen(L->merges[i]) != ml)
                    return es_fail(err, ES_ERR_FORMAT, "%s[%llu] is unreadable", K_MERGES, (unsigned long long)i);
            }
        }
        spec.merges = L->merges;
        spec.n_merges = (int)nm;
    }

    if ((st = read_id(g, K_BOS, spec.n_vocab, &spec.bos, err)) != ES_OK) return st;
    if ((st = read_id(g, K_EOS, spec.n_vocab, &spec.eos, err)) != ES_OK) return st;
    if ((st = read_id(g, K_UNK, spec.n_vocab, &spec.unk, err)) != ES_OK) return st;
    if ((st = read_id(g, K_PAD, spec.n_vocab, &spec.pad, err)) != ES_OK) return st;
    /* llama.cpp's defaults when a key is absent */
    spec.add_bos = spec.kind == ES_TOK_SPM;
    spec.add_eos = false;
    spec.add_space_prefix = spec.kind == ES_TOK_SPM;
    if ((st = read_bool(g, K_ADD_BOS, &spec.add_bos, err)) != ES_OK) return st;
    if ((st = read_bool(g, K_ADD_EOS, &spec.add_eos, err)) != ES_OK) return st;
    if ((st = read_bool(g, K_ADD_SPACE, &spec.add_space_prefix, err)) != ES_OK) return st;
    size_t sl;
    if (es_gguf_find_kv(g, K_PRE) >= 0 && !es_gguf_get_str(g, K_PRE, &spec.pre, &sl))
        return es_fail(err, ES_ERR_FORMAT, "%s is not a string", K_PRE);
    /* a byte-level file without the key (or with an empty name) gets llama.cpp's fallback regexes */
    if (spec.kind == ES_TOK_BPE && (!spec.pre || !spec.pre[0])) spec.pre = "default";
    if (es_gguf_find_kv(g, K_TEMPLATE) >= 0 && !es_gguf_get_str(g, K_TEMPLATE, &spec.chat_template, &sl))
        return es_fail(err, ES_ERR_FORMAT, "%s is not a string", K_TEMPLATE);
    return es_tokenizer_init(&spec, out, err);
}

es_status es_tokenizer_from_gguf(const es_gguf *g, es_tokenizer **out, es_err *err) {
    if (!g || !out) return es_fail(err, ES_ERR_INVALID_ARG, "es_tokenizer_from_gguf: NULL argument");
    *out = NULL;
    gguf_load L = {0};
    es_status st = from_gguf_body(g, &L, out, err);
    free(L.tokens);
    free(L.lens);
    free(L.scores);
    free(L.types);
    free(L.merges);
    return st;
}
