/* test_hf.c — Hugging Face conversion (the TinyStories-656K llama checkpoint, and a synthetic qwen2
 * one written here in F16/BF16/F32), and the safetensors parser's rejection of malformed headers. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert/convert.h"
#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "kernels/types.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"
#include "util/fp16.h"

static int64_t get_int(const es_gguf *g, const char *key) {
    int64_t v = -1;
    es_gguf_get_i64(g, key, &v);
    return v;
}

/* TinyStories-656K: hidden 128, ff 384, 2 layers, 8 heads (head dim 16), 4 kv heads, vocab 2048. */
static void test_tinystories(void) {
    const char *dir = es_test_shared_model("TinyStories-656K");
    char sfpath[4096];
    snprintf(sfpath, sizeof sfpath, "%s/model.safetensors", dir);
    const char *out = es_test_tmp("ts656k.gguf");
    es_err err;
    es_convert_stats stats;
    es_convert_opts o = es_convert_default_opts();
    o.stats = &stats;
    CHECK_OK(es_convert_hf(dir, out, &o, &err), &err);
    es_gguf *g = NULL;
    es_safetensors *sf = NULL;
    CHECK_OK(es_gguf_open(out, &g, &err), &err);
    CHECK_OK(es_st_open(sfpath, &sf, &err), &err);
    if (!g || !sf) goto done;
    const char *s;
    size_t len;
    CHECK(es_gguf_get_str(g, "general.architecture", &s, &len) && !strcmp(s, "llama"));
    CHECK(es_gguf_get_str(g, "general.name", &s, &len) && !strcmp(s, "TinyStories-656K"));
    CHECK(get_int(g, "llama.embedding_length") == 128);
    CHECK(get_int(g, "llama.feed_forward_length") == 384);
    CHECK(get_int(g, "llama.block_count") == 2);
    CHECK(get_int(g, "llama.attention.head_count") == 8);
    CHECK(get_int(g, "llama.attention.head_count_kv") == 4);
    CHECK(get_int(g, "llama.context_length") == 512);
    float f;
    CHECK(es_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) && fabsf(f - 1e-6f) < 1e-12f);
    CHECK(es_gguf_get_f32(g, "llama.rope.freq_base", &f) && f == 10000.0f);
    es_gguf_vtype et;
    uint64_t n;
    CHECK(es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) && et == ES_GGUF_STRING && n == 2048);
    CHECK(es_gguf_get_str(g, "tokenizer.ggml.model", &s, &len));
    es_tokenizer *tok = NULL;
    CHECK_OK(es_tokenizer_from_gguf(g, &tok, &err), &err);
    if (tok) {
        CHECK(es_tokenizer_n_vocab(tok) == 2048);
        CHECK(es_tokenizer_bos(tok) == 1 && es_tokenizer_eos(tok) == 2);
        es_tokenizer_free(tok);
    }
    CHECK(es_gguf_n_tensors(g) == 2 + 9 * 2);
    CHECK(es_gguf_find_tensor(g, "output.weight") == NULL); /* tied */
    CHECK(stats.n_params == 2048 * 128 + 2 * (2 * 128 + 128 * 128 * 2 + 64 * 128 * 2 + 3 * 384 * 128) + 128);

    /* the embedding is the stored lm_head (the checkpoint aliases embed_tokens to it) */
    const es_gguf_tensor *te = es_gguf_find_tensor(g, "token_embd.weight");
    const es_st_tensor *lm = es_st_find(sf, "lm_head.weight");
    CHECK(te && lm && te->ne[0] == 128 && te->ne[1] == 2048 && te->nbytes == lm->end - lm->begin && !memcmp(te->data, lm->data, te->nbytes));

    /* q/k rows permuted from rotate-half to consecutive pairs: new row h*16 + 2i + j = old row h*16 + 8j + i */
    const struct { const char *gg, *hf; int rows; bool perm; } k[] = {
        {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", 128, true},
        {"blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", 64, true},
        {"blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight", 64, false},
        {"blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight", 128, false},
        {"blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight", 128, false},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        const es_gguf_tensor *t = es_gguf_find_tensor(g, k[i].gg);
        const es_st_tensor *h = es_st_find(sf, k[i].hf);
        CHECK_MSG(t && h && t->type == ES_TYPE_F32 && t->ne[1] == k[i].rows && h->shape[0] == k[i].rows, "%s", k[i].gg);
        if (!t || !h) continue;
        const int64_t cols = t->ne[0];
        CHECK(cols == h->shape[1]);
        int bad = 0;
        for (int r = 0; r < k[i].rows; r++) {
            const int hh = r / 16, ii = (r % 16) / 2, jj = r % 2;
            const int src = k[i].perm ? hh * 16 + jj * 8 + ii : r;
            bad += memcmp((const char *)t->data + (size_t)r * cols * 4, h->data + (size_t)src * cols * 4, (size_t)cols * 4) != 0;
        }
        CHECK_MSG(bad == 0, "%s: %d rows differ from the expected source rows", k[i].gg, bad);
    }
    /* one q row by hand: GGUF row 3 (head 0, pair 1, second element) is HF row 9 */
    {
        const es_gguf_tensor *t = es_gguf_find_tensor(g, "blk.0.attn_q.weight");
        const es_st_tensor *h = es_st_find(sf, "model.layers.0.self_attn.q_proj.weight");
        float a, b;
        memcpy(&a, (const char *)t->data + 3 * 128 * 4 + 5 * 4, 4);
        memcpy(&b, h->data + 9 * 128 * 4 + 5 * 4, 4);
        CHECK(a == b);
        memcpy(&b, h->data + 3 * 128 * 4 + 5 * 4, 4);
        CHECK(a != b);
    }
    /* norms unchanged */
    const es_gguf_tensor *nt = es_gguf_find_tensor(g, "output_norm.weight");
    const es_st_tensor *nh = es_st_find(sf, "model.norm.weight");
    CHECK(nt && nh && nt->nbytes == 512 && !memcmp(nt->data, nh->data, 512));
done:
    es_st_free(sf);
    es_gguf_free(g);

    /* quantised output: q8_0 everywhere (all rows are multiples of 32) */
    o.out_type = ES_TYPE_Q8_0;
    const char *out8 = es_test_tmp("ts656k-q8.gguf");
    CHECK_OK(es_convert_hf(dir, out8, &o, &err), &err);
    g = NULL;
    CHECK_OK(es_gguf_open(out8, &g, &err), &err);
    if (g) {
        const es_gguf_tensor *t = es_gguf_find_tensor(g, "blk.1.ffn_down.weight");
        CHECK(t && t->type == ES_TYPE_Q8_0);
        t = es_gguf_find_tensor(g, "blk.1.ffn_norm.weight");
        CHECK(t && t->type == ES_TYPE_F32);
        es_gguf_free(g);
    }
}

/* ---- a tiny safetensors writer for synthetic checkpoints ---- */

typedef struct st_entry {
    const char *name;
    const char *dtype; /* F32, F16, BF16 */
    int64_t rows, cols; /* cols 0: vector */
    float *values;
} st_entry;

static size_t dsize(const char *dtype) { return strcmp(dtype, "F32") == 0 ? 4 : 2; }

static void write_safetensors(const char *path, const st_entry *e, int n) {
    char *hdr = malloc(1 << 16);
    size_t off = 0, hl = 0;
    hl += (size_t)sprintf(hdr + hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        const size_t cnt = (size_t)(e[i].rows * (e[i].cols ? e[i].cols : 1)), bytes = cnt * dsize(e[i].dtype);
        if (e[i].cols)
            hl += (size_t)sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}", e[i].name,
                                  e[i].dtype, (long long)e[i].rows, (long long)e[i].cols, off, off + bytes);
        else
            hl += (size_t)sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%zu,%zu]}", e[i].name,
                                  e[i].dtype, (long long)e[i].rows, off, off + bytes);
        off += bytes;
    }
    hl += (size_t)sprintf(hdr + hl, "}");
    while (hl % 8) hdr[hl++] = ' ';
    FILE *f = fopen(path, "wb");
    uint64_t h64 = hl;
    fwrite(&h64, 8, 1, f);
    fwrite(hdr, 1, hl, f);
    for (int i = 0; i < n; i++) {
        const size_t cnt = (size_t)(e[i].rows * (e[i].cols ? e[i].cols : 1));
        for (size_t j = 0; j < cnt; j++) {
            if (!strcmp(e[i].dtype, "F32")) fwrite(&e[i].values[j], 4, 1, f);
            else {
                uint16_t h = !strcmp(e[i].dtype, "F16") ? es_fp32_to_fp16(e[i].values[j]) : es_fp32_to_bf16(e[i].values[j]);
                fwrite(&h, 2, 1, f);
            }
        }
    }
    fclose(f);
    free(hdr);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* qwen2: hidden 32, ff 64, 1 layer, 4 heads (hd 8), 2 kv heads, vocab 2056 (> the 2048 tokens: padded). */
static void test_qwen2(void) {
    char dir[4096], p[4096 + 64];
    snprintf(dir, sizeof dir, "%s", es_test_tmp("hf-qwen2"));
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text(p, "{\"model_type\":\"qwen2\",\"hidden_size\":32,\"intermediate_size\":64,\"num_hidden_layers\":1,"
                  "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":2056,\"max_position_embeddings\":128,"
                  "\"rms_norm_eps\":1e-6,\"rope_theta\":1000000.0,\"tie_word_embeddings\":false,\"rope_scaling\":null,"
                  "\"hidden_act\":\"silu\"}");
    /* the tokenizer of TinyStories-656K stands in */
    char src[4096];
    snprintf(src, sizeof src, "%s/tokenizer.json", es_test_shared_model("TinyStories-656K"));
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    CHECK(symlink(src, p) == 0);

    enum { H = 32, F = 64, V = 2056, QD = 32, KVD = 16 };
    struct { const char *name, *dtype; int64_t rows, cols; } spec[] = {
        {"model.embed_tokens.weight", "BF16", V, H},
        {"model.layers.0.input_layernorm.weight", "F32", H, 0},
        {"model.layers.0.self_attn.q_proj.weight", "F16", QD, H},
        {"model.layers.0.self_attn.q_proj.bias", "F32", QD, 0},
        {"model.layers.0.self_attn.k_proj.weight", "F32", KVD, H},
        {"model.layers.0.self_attn.k_proj.bias", "F16", KVD, 0},
        {"model.layers.0.self_attn.v_proj.weight", "F32", KVD, H},
        {"model.layers.0.self_attn.v_proj.bias", "F32", KVD, 0},
        {"model.layers.0.self_attn.o_proj.weight", "F32", H, QD},
        {"model.layers.0.post_attention_layernorm.weight", "F32", H, 0},
        {"model.layers.0.mlp.gate_proj.weight", "F32", F, H},
        {"model.layers.0.mlp.up_proj.weight", "F32", F, H},
        {"model.layers.0.mlp.down_proj.weight", "F32", H, F},
        {"model.norm.weight", "F32", H, 0},
        {"lm_head.weight", "F32", V, H},
        {"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", 4, 0},
    };
    const int n = sizeof spec / sizeof spec[0];
    st_entry e[16];
    for (int i = 0; i < n; i++) {
        const int64_t cnt = spec[i].rows * (spec[i].cols ? spec[i].cols : 1);
        e[i] = (st_entry){spec[i].name, spec[i].dtype, spec[i].rows, spec[i].cols, malloc((size_t)cnt * sizeof(float))};
        /* exactly representable in f16 and bf16: multiples of 1/64 in [-2, 2) */
        for (int64_t j = 0; j < cnt; j++) e[i].values[j] = (float)((j * 37 + i * 11) % 256 - 128) / 64.0f;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_safetensors(p, e, n);

    es_err err;
    const char *out = es_test_tmp("qwen2-tiny.gguf");
    CHECK_OK(es_convert_hf(dir, out, NULL, &err), &err);
    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(out, &g, &err), &err);
    if (g) {
        const char *s;
        size_t len;
        float f;
        CHECK(es_gguf_get_str(g, "general.architecture", &s, &len) && !strcmp(s, "qwen2"));
        CHECK(get_int(g, "qwen2.embedding_length") == H);
        CHECK(get_int(g, "qwen2.vocab_size") == V);
        CHECK(es_gguf_get_f32(g, "qwen2.rope.freq_base", &f) && f == 1e6f);
        es_gguf_vtype et;
        uint64_t nt;
        CHECK(es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &nt) && nt == V);
        const char *last = es_gguf_arr_str(g, "tokenizer.ggml.tokens", V - 1, &len);
        CHECK(last && !strcmp(last, "[PAD2055]"));
        CHECK(es_gguf_n_tensors(g) == 3 + 12);
        /* values survive every dtype exactly, in the source row order (no permutation for qwen2) */
        const struct { const char *gg; int idx; } m[] = {
            {"token_embd.weight", 0}, {"blk.0.attn_q.weight", 2}, {"blk.0.attn_q.bias", 3}, {"blk.0.attn_k.weight", 4},
            {"blk.0.attn_k.bias", 5}, {"blk.0.attn_v.bias", 7}, {"blk.0.ffn_down.weight", 12}, {"output.weight", 14},
        };
        for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
            const es_gguf_tensor *t = es_gguf_find_tensor(g, m[i].gg);
            const st_entry *x = &e[m[i].idx];
            const int64_t cnt = x->rows * (x->cols ? x->cols : 1);
            CHECK_MSG(t && t->type == ES_TYPE_F32 && t->nbytes == (uint64_t)cnt * 4, "%s", m[i].gg);
            if (t && t->nbytes == (uint64_t)cnt * 4) CHECK_MSG(!memcmp(t->data, x->values, (size_t)cnt * 4), "%s values", m[i].gg);
        }
        es_gguf_free(g);
    }
    for (int i = 0; i < n; i++) free(e[i].values);

    /* config errors */
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_text(p, "{\"model_type\":\"qwen2\",\"hidden_size\":32,\"intermediate_size\":64,\"num_hidden_layers\":1,"
                  "\"num_attention_heads\":4,\"vocab_size\":2056,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}");
    CHECK(es_convert_hf(dir, out, NULL, &err) == ES_ERR_UNSUPPORTED && strstr(err.msg, "rope_scaling"));
    write_text(p, "{\"model_type\":\"gpt2\",\"hidden_size\":32}");
    CHECK(es_convert_hf(dir, out, NULL, &err) == ES_ERR_UNSUPPORTED && strstr(err.msg, "gpt2"));
    write_text(p, "{\"model_type\":\"llama\",\"hidden_size\":32,\"intermediate_size\":64,\"num_hidden_layers\":1,"
                  "\"num_attention_heads\":5,\"vocab_size\":2056}");
    CHECK(es_convert_hf(dir, out, NULL, &err) == ES_ERR_FORMAT);
    write_text(p, "{\"model_type\":\"llama\",\"hidden_size\":32,\"intermediate_size\":64,\"num_hidden_layers\":1.5,"
                  "\"num_attention_heads\":4,\"vocab_size\":2056}");
    CHECK(es_convert_hf(dir, out, NULL, &err) == ES_ERR_FORMAT && strstr(err.msg, "num_hidden_layers"));
    write_text(p, "{\"model_type\":\"llama\",");
    CHECK(es_convert_hf(dir, out, NULL, &err) == ES_ERR_FORMAT);
    /* a llama config over this qwen2 checkpoint: missing / mis-shaped tensors are reported */
    write_text(p, "{\"model_type\":\"llama\",\"hidden_size\":32,\"intermediate_size\":64,\"num_hidden_layers\":2,"
                  "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":2056}");
    CHECK(es_convert_hf(dir, out, NULL, &err) == ES_ERR_FORMAT && strstr(err.msg, "model.layers.1"));
    write_text(p, "{\"model_type\":\"llama\",\"hidden_size\":32,\"intermediate_size\":48,\"num_hidden_layers\":1,"
                  "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":2056}");
    CHECK(es_convert_hf(dir, out, NULL, &err) == ES_ERR_FORMAT && strstr(err.msg, "shape"));
    CHECK(es_convert_hf(es_test_tmp("no-such-dir"), out, NULL, &err) == ES_ERR_IO);
}

/* ---- malformed safetensors ---- */

static es_status parse_text(const char *json, const void *data, size_t data_len, es_err *err) {
    const size_t hl = strlen(json);
    uint8_t *buf = malloc(8 + hl + data_len + 1);
    uint64_t h64 = hl;
    memcpy(buf, &h64, 8);
    memcpy(buf + 8, json, hl);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    es_safetensors *st = NULL;
    es_status s = es_st_parse(buf, 8 + hl + data_len, &st, err);
    es_st_free(st);
    free(buf);
    return s;
}

static void test_malformed(void) {
    es_err err;
    float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    /* well-formed */
    CHECK_OK(parse_text("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                        "\"b\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[16,32]},\"__metadata__\":{\"x\":\"y\"}}  ",
                        data, 32, &err),
             &err);
    CHECK_OK(parse_text("{}", NULL, 0, &err), &err);
    CHECK_OK(parse_text("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                        data, 4, &err),
             &err);
    const struct { const char *json; size_t data_len; const char *why; } bad[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}", 16, "bad JSON"},
        {"not json at all", 0, "bad JSON"},
        {"[1,2,3]", 0, "not an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}} x", 16, "trailing garbage"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 8, "offsets past end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[16,0]}}", 16, "begin > end"},
        {"{\"a\":{\"dtype\":\"Q8\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, "unknown dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 32, "size mismatch"},
        {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, "size mismatch (dtype)"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}}", 16, "negative dim"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2.5],\"data_offsets\":[0,16]}}", 16, "fractional dim"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "too many dims"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}", 16, "shape overflow"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}", 16, "one offset"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", 16, "no offsets"},
        {"{\"a\":{\"shape\":[4],\"data_offsets\":[0,16]}}", 16, "no dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", 16, "no shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 32,
         "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", 32,
         "duplicate"},
        {"{\"a\":7}", 0, "entry not an object"},
        {"{\"__metadata__\":5}", 0, "metadata not an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,1e300]}}", 16, "huge offset"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        es_status st = parse_text(bad[i].json, data, bad[i].data_len, &err);
        CHECK_MSG(st == ES_ERR_FORMAT && err.msg[0], "%s: status %s", bad[i].why, es_status_str(st));
    }
    /* header length beyond the file, and files too short for the length field */
    uint8_t buf[16] = {0};
    uint64_t h64 = 100;
    memcpy(buf, &h64, 8);
    memcpy(buf + 8, "{}", 2);
    es_safetensors *st = NULL;
    CHECK(es_st_parse(buf, 10, &st, &err) == ES_ERR_FORMAT && strstr(err.msg, "exceeds"));
    h64 = UINT64_MAX;
    memcpy(buf, &h64, 8);
    CHECK(es_st_parse(buf, 16, &st, &err) == ES_ERR_FORMAT);
    CHECK(es_st_parse(buf, 7, &st, &err) == ES_ERR_FORMAT);
    CHECK(st == NULL);
    /* unsupported dtype read */
    h64 = 0;
    const char *j = "{\"a\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    uint8_t b2[256];
    h64 = strlen(j);
    memcpy(b2, &h64, 8);
    memcpy(b2 + 8, j, strlen(j));
    memset(b2 + 8 + strlen(j), 0, 8);
    CHECK_OK(es_st_parse(b2, 8 + strlen(j) + 8, &st, &err), &err);
    if (st) {
        float out[2];
        CHECK(es_st_read_f32(es_st_find(st, "a"), 0, 2, out, &err) == ES_ERR_UNSUPPORTED);
        CHECK(es_st_find(st, "b") == NULL);
        es_st_free(st);
    }
}

int main(void) {
    test_tinystories();
    test_qwen2();
    test_malformed();
    return es_test_finish("test_hf");
}
