/* vocab_llama2c.c — the es_vocab container and the llama2.c tokenizer .bin loader.
 *
 * llama2.c layout (little-endian): i32 max_token_length, then for each of the model's n_vocab tokens
 * f32 score, i32 len, len bytes of text (no NUL). The count is not stored: it comes from the model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"
#include "util/err.h"

/* A token in a llama2.c file longer than this is taken as corruption (Llama 2's longest is 27). */
#define LLAMA2C_MAX_TOKEN_LENGTH 4096

es_vocab *tok_vocab_alloc(int n_vocab, int n_merges) {
    if (n_vocab < 0 || n_merges < 0) return NULL;
    es_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    size_t n = (size_t)n_vocab;
    v->tokens = calloc(n ? n : 1, sizeof *v->tokens);
    v->lens = calloc(n ? n : 1, sizeof *v->lens);
    v->scores = calloc(n ? n : 1, sizeof *v->scores);
    v->types = malloc((n ? n : 1) * sizeof *v->types);
    v->merges = calloc(n_merges ? (size_t)n_merges : 1, sizeof *v->merges);
    if (!v->tokens || !v->lens || !v->scores || !v->types || !v->merges) {
        es_vocab_free(v);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) v->types[i] = ES_TOKTYPE_NORMAL;
    v->spec.n_vocab = n_vocab;
    v->spec.tokens = (const char *const *)v->tokens;
    v->spec.lens = v->lens;
    v->spec.scores = v->scores;
    v->spec.types = v->types;
    v->spec.merges = (const char *const *)v->merges;
    v->spec.n_merges = n_merges;
    v->spec.bos = v->spec.eos = v->spec.unk = v->spec.pad = -1;
    return v;
}

void es_vocab_free(es_vocab *v) {
    if (!v) return;
    if (v->tokens)
        for (int i = 0; i < v->spec.n_vocab; i++) free(v->tokens[i]);
    if (v->merges)
        for (int i = 0; i < v->spec.n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->lens);
    free(v->scores);
    free(v->types);
    free(v->merges);
    free(v->pre);
    free(v->chat_template);
    free(v);
}

const es_vocab_spec *es_vocab_spec_of(const es_vocab *v) { return v ? &v->spec : NULL; }

static int32_t rd_i32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static float rd_f32(const unsigned char *p) {
    uint32_t u = (uint32_t)rd_i32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

es_status es_vocab_load_llama2c_buffer(const void *data, size_t size, int n_vocab, es_vocab **out, es_err *err) {
    if (!out || (!data && size)) return es_fail(err, ES_ERR_INVALID_ARG, "es_vocab_load_llama2c: NULL argument");
    *out = NULL;
    if (n_vocab < 3 || n_vocab > TOK_MAX_VOCAB)
        return es_fail(err, ES_ERR_FORMAT, "llama2.c vocabulary size %d out of range (3..%d)", n_vocab, TOK_MAX_VOCAB);
    const unsigned char *p = data;
    if (size < 4) return es_fail(err, ES_ERR_FORMAT, "llama2.c tokenizer truncated: %zu bytes, no header", size);
    int32_t max_len = rd_i32(p);
    if (max_len < 1 || max_len > LLAMA2C_MAX_TOKEN_LENGTH)
        return es_fail(err, ES_ERR_FORMAT, "llama2.c tokenizer: max_token_length %d out of range (1..%d)", (int)max_len,
                       LLAMA2C_MAX_TOKEN_LENGTH);
    /* every token takes at least 8 bytes: check the count against the size before allocating */
    uint64_t need;
    if (!es_mul_ok((uint64_t)n_vocab, 8, &need) || !es_add_ok(need, 4, &need) || need > size)
        return es_fail(err, ES_ERR_FORMAT, "llama2.c tokenizer truncated: %zu bytes cannot hold %d tokens", size, n_vocab);
    es_vocab *v = tok_vocab_alloc(n_vocab, 0);
    if (!v) return es_fail(err, ES_ERR_NOMEM, "out of memory for %d tokens", n_vocab);
    v->spec.kind = ES_TOK_SPM;
    v->spec.unk = 0;
    v->spec.bos = 1;
    v->spec.eos = 2;
    v->spec.add_bos = true;
    v->spec.add_eos = false;
    v->spec.add_space_prefix = true;
    size_t off = 4;
    for (int i = 0; i < n_vocab; i++) {
        if (size - off < 8) {
            es_vocab_free(v);
            return es_fail(err, ES_ERR_FORMAT, "llama2.c tokenizer truncated at token %d (offset %zu)", i, off);
        }
        float score = rd_f32(p + off);
        int32_t len = rd_i32(p + off + 4);
        off += 8;
        if (len < 0 || len > max_len) {
            es_vocab_free(v);
            return es_fail(err, ES_ERR_FORMAT, "llama2.c tokenizer: token %d has length %d (max_token_length %d)", i,
                           (int)len, (int)max_len);
        }
        if (size - off < (size_t)len) {
            es_vocab_free(v);
            return es_fail(err, ES_ERR_FORMAT, "llama2.c tokenizer truncated in token %d (offset %zu)", i, off);
        }
        v->tokens[i] = malloc((size_t)len + 1);
        if (!v->tokens[i]) {
            es_vocab_free(v);
            return es_fail(err, ES_ERR_NOMEM, "out of memory reading token %d", i);
        }
        memcpy(v->tokens[i], p + off, (size_t)len);
        v->tokens[i][len] = 0;
        v->lens[i] = (size_t)len;
        v->scores[i] = score;
        off += (size_t)len;
    }
    /* id 0 UNKNOWN, 1 and 2 CONTROL, <0xXX> BYTE, the rest NORMAL */
    for (int i = 0; i < n_vocab; i++) v->types[i] = es_tok_infer_type(&v->spec, i);
    *out = v;
    return ES_OK;
}

/* Reads a whole file (at most max bytes) into a malloc'd buffer with a NUL after it. */
es_status tok_read_file(const char *path, size_t max, char **data, size_t *size, es_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return es_fail(err, ES_ERR_IO, "cannot open %s", path);
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return es_fail(err, ES_ERR_IO, "cannot read %s", path);
    }
    if ((unsigned long)n > max) {
        fclose(f);
        return es_fail(err, ES_ERR_FORMAT, "%s is too large (%ld bytes)", path, n);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return es_fail(err, ES_ERR_NOMEM, "out of memory reading %s", path);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return es_fail(err, ES_ERR_IO, "short read on %s", path);
    }
    buf[n] = 0;
    *data = buf;
    *size = (size_t)n;
    return ES_OK;
}

es_status es_vocab_load_llama2c(const char *path, int n_vocab, es_vocab **out, es_err *err) {
    if (!path || !out) return es_fail(err, ES_ERR_INVALID_ARG, "es_vocab_load_llama2c: NULL argument");
    *out = NULL;
    char *data;
    size_t size;
    es_status st = tok_read_file(path, (size_t)1 << 30, &data, &size, err);
    if (st != ES_OK) return st;
    st = es_vocab_load_llama2c_buffer(data, size, n_vocab, out, err);
    free(data);
    if (st != ES_OK) es_err_prefix(err, path);
    return st;
}
