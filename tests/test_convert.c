/* test_convert.c — llama2.c conversion (legacy fp32 and ak42 int8), header / size validation, and
 * re-quantisation of the converted model. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert.h"
#include "convert/llama2c.h"
#include "gguf/gguf.h"
#include "kernels/types.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"

/* stories260K: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512, seq_len 512 */
enum { D = 64, HID = 172, L = 5, NH = 8, NKV = 4, V = 512, SEQ = 512, KVD = NKV * (D / NH) };

static float rd_f32(const char *p) {
    float f;
    memcpy(&f, p, 4);
    return f;
}

static int64_t get_int(const es_gguf *g, const char *key) {
    int64_t v = -1;
    es_gguf_get_i64(g, key, &v);
    return v;
}

/* Checks a tensor exists with type and 2-D shape [ne0, ne1] (ne1 0: 1-D). */
static const es_gguf_tensor *expect_tensor(const es_gguf *g, const char *name, uint32_t type, int64_t ne0, int64_t ne1) {
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    CHECK_MSG(t != NULL, "missing %s", name);
    if (!t) return NULL;
    CHECK_MSG(t->type == type, "%s: type %s, want %s", name, es_type_name(t->type), es_type_name(type));
    CHECK_MSG(t->ne[0] == ne0, "%s: ne0 %lld want %lld", name, (long long)t->ne[0], (long long)ne0);
    if (ne1) CHECK_MSG(t->n_dims == 2 && t->ne[1] == ne1, "%s: ne1 %lld want %lld", name, (long long)t->ne[1], (long long)ne1);
    else CHECK_MSG(t->n_dims == 1, "%s: %d dims, want 1", name, t->n_dims);
    return t;
}

/* Byte offsets (in the legacy file) of each tensor, computed here independently of the converter. */
static size_t legacy_off(const char *what, int layer) {
    size_t off = 28;
    const struct { const char *name; size_t per_layer, n; } k[] = {
        {"tok", 0, (size_t)V * D}, {"rms_att", 1, D}, {"wq", 1, D * D}, {"wk", 1, (size_t)KVD * D}, {"wv", 1, (size_t)KVD * D},
        {"wo", 1, D * D}, {"rms_ffn", 1, D}, {"w1", 1, (size_t)HID * D}, {"w2", 1, (size_t)HID * D}, {"w3", 1, (size_t)HID * D},
        {"rms_final", 0, D},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        if (!strcmp(k[i].name, what)) return off + (k[i].per_layer ? (size_t)layer * k[i].n * 4 : 0);
        off += k[i].n * 4 * (k[i].per_layer ? L : 1);
    }
    return 0;
}

static void check_bytes_equal(const es_gguf *g, const char *name, const char *file, const char *what, int layer, size_t n) {
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    CHECK_MSG(t && t->nbytes == n * 4, "%s size", name);
    if (!t || t->nbytes != n * 4) return;
    CHECK_MSG(memcmp(t->data, file + legacy_off(what, layer), n * 4) == 0, "%s bytes differ from the source floats", name);
}

static void test_legacy(const char *out) {
    es_err err;
    es_convert_stats stats;
    es_convert_opts o = es_convert_default_opts();
    o.stats = &stats;
    CHECK_OK(es_convert_llama2c(es_test_shared_model("stories260K.bin"), es_test_shared_model("tok512.bin"), out, &o, &err), &err);
    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(out, &g, &err), &err);
    if (!g) return;
    const char *arch = NULL, *name = NULL;
    size_t len;
    CHECK(es_gguf_get_str(g, "general.architecture", &arch, &len) && !strcmp(arch, "llama"));
    CHECK(es_gguf_get_str(g, "general.name", &name, &len) && !strcmp(name, "stories260K"));
    CHECK(get_int(g, "llama.embedding_length") == D);
    CHECK(get_int(g, "llama.feed_forward_length") == HID);
    CHECK(get_int(g, "llama.block_count") == L);
    CHECK(get_int(g, "llama.attention.head_count") == NH);
    CHECK(get_int(g, "llama.attention.head_count_kv") == NKV);
    CHECK(get_int(g, "llama.context_length") == SEQ);
    CHECK(get_int(g, "llama.rope.dimension_count") == D / NH);
    CHECK(get_int(g, "general.file_type") == 0);
    float f = 0;
    CHECK(es_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) && fabsf(f - 1e-5f) < 1e-12f);
    CHECK(es_gguf_get_f32(g, "llama.rope.freq_base", &f) && f == 10000.0f);
    es_gguf_vtype et;
    uint64_t n = 0;
    CHECK(es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) && et == ES_GGUF_STRING && n == V);
    /* the vocabulary written is the one llama2.c's tokenizer uses (golden prompt ids) */
    es_tokenizer *tok = NULL;
    CHECK_OK(es_tokenizer_from_gguf(g, &tok, &err), &err);
    if (tok) {
        int32_t ids[16];
        int nid = 0;
        CHECK_OK(es_tokenize(tok, "Once upon a time", 16, true, false, ids, 16, &nid, &err), &err);
        CHECK(nid == 5 && ids[0] == 1 && ids[1] == 403 && ids[2] == 407 && ids[3] == 261 && ids[4] == 378);
        CHECK(es_tokenizer_n_vocab(tok) == V);
        es_tokenizer_free(tok);
    }
    CHECK(es_gguf_n_tensors(g) == 2 + 9 * L); /* shared classifier: no output.weight */
    CHECK(es_gguf_find_tensor(g, "output.weight") == NULL);
    CHECK(stats.n_tensors == 2 + 9 * L);
    CHECK(stats.n_params == (uint64_t)V * D + L * (2 * D + 2 * D * D + 2 * KVD * D + 3 * HID * D) + D);

    expect_tensor(g, "token_embd.weight", ES_TYPE_F32, D, V);
    expect_tensor(g, "output_norm.weight", ES_TYPE_F32, D, 0);
    char nm[64];
    for (int l = 0; l < L; l++) {
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l), expect_tensor(g, nm, ES_TYPE_F32, D, 0);
        snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l), expect_tensor(g, nm, ES_TYPE_F32, D, D);
        snprintf(nm, sizeof nm, "blk.%d.attn_k.weight", l), expect_tensor(g, nm, ES_TYPE_F32, D, KVD);
        snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l), expect_tensor(g, nm, ES_TYPE_F32, D, KVD);
        snprintf(nm, sizeof nm, "blk.%d.attn_output.weight", l), expect_tensor(g, nm, ES_TYPE_F32, D, D);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l), expect_tensor(g, nm, ES_TYPE_F32, D, 0);
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate.weight", l), expect_tensor(g, nm, ES_TYPE_F32, D, HID);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l), expect_tensor(g, nm, ES_TYPE_F32, HID, D);
        snprintf(nm, sizeof nm, "blk.%d.ffn_up.weight", l), expect_tensor(g, nm, ES_TYPE_F32, D, HID);
    }

    size_t flen = 0;
    char *file = es_test_read_file(es_test_shared_model("stories260K.bin"), &flen);
    CHECK(file && flen == 1056540);
    if (file) {
        check_bytes_equal(g, "token_embd.weight", file, "tok", 0, (size_t)V * D);
        check_bytes_equal(g, "blk.0.attn_norm.weight", file, "rms_att", 0, D);
        check_bytes_equal(g, "blk.3.attn_q.weight", file, "wq", 3, D * D);
        check_bytes_equal(g, "blk.2.attn_k.weight", file, "wk", 2, (size_t)KVD * D);
        check_bytes_equal(g, "blk.4.attn_v.weight", file, "wv", 4, (size_t)KVD * D);
        check_bytes_equal(g, "blk.1.attn_output.weight", file, "wo", 1, D * D);
        check_bytes_equal(g, "blk.4.ffn_norm.weight", file, "rms_ffn", 4, D);
        check_bytes_equal(g, "blk.0.ffn_gate.weight", file, "w1", 0, (size_t)HID * D);
        check_bytes_equal(g, "blk.4.ffn_down.weight", file, "w2", 4, (size_t)HID * D);
        check_bytes_equal(g, "blk.2.ffn_up.weight", file, "w3", 2, (size_t)HID * D);
        check_bytes_equal(g, "output_norm.weight", file, "rms_final", 0, D);
    }
    free(file);
    es_gguf_free(g);
}

/* The int8 export of the same model: every weight within half a group scale of the fp32 one. */
static void test_ak42(const char *fp32_gguf, const char *out) {
    es_err err;
    CHECK_OK(es_convert_llama2c(es_test_shared_model("stories260K_q80.bin"), es_test_shared_model("tok512.bin"), out, NULL, &err), &err);
    es_gguf *q = NULL, *f = NULL;
    CHECK_OK(es_gguf_open(out, &q, &err), &err);
    CHECK_OK(es_gguf_open(fp32_gguf, &f, &err), &err);
    size_t flen = 0;
    char *file = es_test_read_file(es_test_shared_model("stories260K_q80.bin"), &flen);
    CHECK(file && flen == 294816);
    if (!q || !f || !file) goto done;
    CHECK(es_gguf_n_tensors(q) == es_gguf_n_tensors(f));
    CHECK(get_int(q, "llama.feed_forward_length") == HID);
    /* norms are stored in f32: identical */
    const char *norms[] = {"blk.0.attn_norm.weight", "blk.4.attn_norm.weight", "blk.2.ffn_norm.weight", "output_norm.weight"};
    for (size_t i = 0; i < 4; i++) {
        const es_gguf_tensor *a = es_gguf_find_tensor(q, norms[i]), *b = es_gguf_find_tensor(f, norms[i]);
        CHECK_MSG(a && b && a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes), "%s differs", norms[i]);
    }
    /* quantised tensors in file order, with their scales (group 32 over the flattened tensor) */
    {
        size_t off = 256 + (size_t)(2 * L * D + D) * 4;
        const struct { const char *suffix; size_t n; bool layered; } k[] = {
            {"token_embd.weight", (size_t)V * D, false}, {"attn_q.weight", D * D, true}, {"attn_k.weight", (size_t)KVD * D, true},
            {"attn_v.weight", (size_t)KVD * D, true}, {"attn_output.weight", D * D, true}, {"ffn_gate.weight", (size_t)HID * D, true},
            {"ffn_down.weight", (size_t)HID * D, true}, {"ffn_up.weight", (size_t)HID * D, true},
        };
        int n_checked = 0;
        for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
            for (int l = 0; l < (k[i].layered ? L : 1); l++) {
                char nm[64];
                if (k[i].layered) snprintf(nm, sizeof nm, "blk.%d.%s", l, k[i].suffix);
                else snprintf(nm, sizeof nm, "%s", k[i].suffix);
                const es_gguf_tensor *a = es_gguf_find_tensor(q, nm), *b = es_gguf_find_tensor(f, nm);
                CHECK_MSG(a && b && a->type == ES_TYPE_F32 && a->nbytes == k[i].n * 4, "%s", nm);
                if (!a || !b || a->nbytes != b->nbytes) continue;
                const int8_t *qv = (const int8_t *)(file + off);
                const char *sc = file + off + k[i].n;
                const float *x = a->data, *y = b->data;
                int bad = 0, exact = 0;
                double maxd = 0;
                for (size_t e = 0; e < k[i].n; e++) {
                    const float s = rd_f32(sc + (e / 32) * 4);
                    exact += x[e] == (float)qv[e] * s;
                    const double dlt = fabs((double)x[e] - y[e]);
                    if (dlt > maxd) maxd = dlt;
                    if (dlt > s * 0.5 * (1 + 1e-5) + 1e-9) bad++;
                }
                CHECK_MSG(bad == 0, "%s: %d elements beyond scale/2 of the fp32 model (max diff %g)", nm, bad, maxd);
                CHECK_MSG(exact == (int)k[i].n, "%s: dequantisation is not q*s exactly", nm);
                off += k[i].n + k[i].n / 32 * 4;
                n_checked++;
            }
        }
        CHECK(off == flen);
        CHECK(n_checked == 1 + 7 * L);
    }
done:
    free(file);
    es_gguf_free(q);
    es_gguf_free(f);
}

/* Writes buf to a temp file and converts it: returns the status and leaves the message in err. */
static es_status convert_bytes(const char *name, const void *buf, size_t n, es_err *err) {
    const char *path = es_test_tmp(name);
    FILE *fp = fopen(path, "wb");
    if (!fp) return ES_ERR_IO;
    fwrite(buf, 1, n, fp);
    fclose(fp);
    return es_convert_llama2c(path, es_test_shared_model("tok512.bin"), es_test_tmp("never.gguf"), NULL, err);
}

static void put_i32(char *p, int32_t v) { memcpy(p, &v, 4); }

static void test_rejects(void) {
    size_t flen = 0, qlen = 0;
    char *file = es_test_read_file(es_test_shared_model("stories260K.bin"), &flen);
    char *qf = es_test_read_file(es_test_shared_model("stories260K_q80.bin"), &qlen);
    CHECK(file && qf);
    if (!file || !qf) goto done;
    es_err err;
    es_llama2c_info info;

    /* the real files parse */
    CHECK_OK(es_llama2c_parse(file, flen, &info, &err), &err);
    CHECK(info.kind == ES_L2C_LEGACY && info.shared_classifier && info.file_size == flen);
    CHECK_OK(es_llama2c_parse(qf, qlen, &info, &err), &err);
    CHECK(info.kind == ES_L2C_V2 && info.group_size == 32 && info.shared_classifier);

    /* truncated by one float, through the whole converter: a format error naming both sizes */
    es_status st = convert_bytes("trunc.bin", file, flen - 4, &err);
    CHECK(st == ES_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "1056536 bytes but a model of this shape needs 1056540"), "message: %s", err.msg);
    /* one byte too many */
    st = es_llama2c_parse(file, flen + 0 - 1, &info, &err);
    CHECK(st == ES_ERR_FORMAT);
    char *big = malloc(flen + 8);
    memcpy(big, file, flen);
    memset(big + flen, 0, 8);
    CHECK(es_llama2c_parse(big, flen + 8, &info, &err) == ES_ERR_FORMAT && strstr(err.msg, "needs 1056540"));
    /* a separate classifier declared (negative vocab) but absent */
    put_i32(big + 20, -V);
    CHECK(es_llama2c_parse(big, flen, &info, &err) == ES_ERR_FORMAT && strstr(err.msg, "separate classifier"));
    put_i32(big + 20, V);
    /* bad headers */
    const struct { int field; int32_t value; const char *msg; } bad[] = {
        {0, 0, "dim"}, {0, -64, "dim"}, {1, 0, "hidden_dim"}, {2, 0, "n_layers"}, {2, 100000, "n_layers"},
        {3, 7, "n_heads"}, {3, 0, "n_heads"}, {4, 3, "n_kv_heads"}, {4, 16, "n_kv_heads"}, {5, 0, "vocab_size"},
        {5, INT32_MIN, "vocab_size"}, {6, 0, "seq_len"}, {6, -1, "seq_len"}, {0, 1 << 30, "dim"}, {3, 64, "head size"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memcpy(big, file, 28);
        put_i32(big + 4 * bad[i].field, bad[i].value);
        st = es_llama2c_parse(big, flen, &info, &err);
        CHECK_MSG(st == ES_ERR_FORMAT && strstr(err.msg, bad[i].msg), "field %d = %d: %s", bad[i].field, (int)bad[i].value, err.msg);
    }
    memcpy(big, file, 28);
    /* a wrong-size legacy header that still describes a valid model: size message */
    put_i32(big + 8, 4); /* 4 layers */
    CHECK(es_llama2c_parse(big, flen, &info, &err) == ES_ERR_FORMAT && strstr(err.msg, "bytes but a model"));
    /* too short for any header */
    CHECK(es_llama2c_parse(file, 27, &info, &err) == ES_ERR_FORMAT);
    CHECK(es_llama2c_parse(file, 0, &info, &err) == ES_ERR_FORMAT);
    CHECK(convert_bytes("empty.bin", file, 0, &err) == ES_ERR_FORMAT);
    free(big);

    /* ak42 */
    char *q2 = malloc(qlen);
    memcpy(q2, qf, qlen);
    CHECK(es_llama2c_parse(q2, 255, &info, &err) == ES_ERR_FORMAT);
    CHECK(es_llama2c_parse(q2, qlen - 1, &info, &err) == ES_ERR_FORMAT && strstr(err.msg, "needs 294816"));
    put_i32(q2 + 4, 3);
    CHECK(es_llama2c_parse(q2, qlen, &info, &err) == ES_ERR_UNSUPPORTED);
    put_i32(q2 + 4, 2);
    put_i32(q2 + 37, 0);
    CHECK(es_llama2c_parse(q2, qlen, &info, &err) == ES_ERR_FORMAT && strstr(err.msg, "group_size"));
    put_i32(q2 + 37, 48); /* 64*512 is not a whole number of 48-groups */
    CHECK(es_llama2c_parse(q2, qlen, &info, &err) == ES_ERR_FORMAT);
    put_i32(q2 + 37, 64); /* valid groups, but the size no longer matches */
    CHECK(es_llama2c_parse(q2, qlen, &info, &err) == ES_ERR_FORMAT && strstr(err.msg, "bytes but"));
    put_i32(q2 + 37, 32);
    q2[36] = 5; /* shared_classifier flag must be 0/1 */
    CHECK(es_llama2c_parse(q2, qlen, &info, &err) == ES_ERR_FORMAT);
    q2[36] = 0; /* says: a classifier follows — which is missing */
    CHECK(es_llama2c_parse(q2, qlen, &info, &err) == ES_ERR_FORMAT);
    free(q2);

    /* missing files */
    CHECK(es_convert_llama2c(es_test_shared_model("does-not-exist.bin"), es_test_shared_model("tok512.bin"), es_test_tmp("x.gguf"), NULL,
                             &err) == ES_ERR_IO);
done:
    free(file);
    free(qf);
}

/* ak42 version 1 (fp32 with the 256-byte header), built here from the legacy file. */
static void test_v1(const char *fp32_gguf) {
    size_t flen = 0;
    char *file = es_test_read_file(es_test_shared_model("stories260K.bin"), &flen);
    CHECK(file != NULL);
    if (!file) return;
    const size_t body = flen - 28 - (size_t)SEQ * (D / NH) * 4; /* without the freq_cis tables */
    char *v1 = calloc(1, 256 + body);
    uint32_t magic = ES_L2C_MAGIC;
    memcpy(v1, &magic, 4);
    put_i32(v1 + 4, 1);
    memcpy(v1 + 8, file, 28);
    v1[36] = 1;
    /* v1 order: rms_att, rms_ffn, rms_final, tok, wq, wk, wv, wo, w1, w2, w3 */
    char *p = v1 + 256;
    const struct { const char *what; size_t n; bool layered; } order[] = {
        {"rms_att", D, true}, {"rms_ffn", D, true}, {"rms_final", D, false}, {"tok", (size_t)V * D, false}, {"wq", D * D, true},
        {"wk", (size_t)KVD * D, true}, {"wv", (size_t)KVD * D, true}, {"wo", D * D, true}, {"w1", (size_t)HID * D, true},
        {"w2", (size_t)HID * D, true}, {"w3", (size_t)HID * D, true},
    };
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const size_t bytes = order[i].n * 4 * (order[i].layered ? L : 1);
        memcpy(p, file + legacy_off(order[i].what, 0), bytes);
        p += bytes;
    }
    CHECK((size_t)(p - v1) == 256 + body);
    es_err err;
    const char *out = es_test_tmp("stories260K_v1.gguf");
    FILE *fp = fopen(es_test_tmp("stories260K_v1.bin"), "wb");
    fwrite(v1, 1, 256 + body, fp);
    fclose(fp);
    CHECK_OK(es_convert_llama2c(es_test_tmp("stories260K_v1.bin"), es_test_shared_model("tok512.bin"), out, NULL, &err), &err);
    es_gguf *a = NULL, *b = NULL;
    CHECK_OK(es_gguf_open(out, &a, &err), &err);
    CHECK_OK(es_gguf_open(fp32_gguf, &b, &err), &err);
    if (a && b) {
        CHECK(es_gguf_n_tensors(a) == es_gguf_n_tensors(b));
        for (int64_t i = 0; i < es_gguf_n_tensors(b); i++) {
            const es_gguf_tensor *tb = es_gguf_tensor_at(b, i), *ta = es_gguf_find_tensor(a, tb->name);
            CHECK_MSG(ta && ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, tb->nbytes), "v1 %s differs", tb->name);
        }
    }
    es_gguf_free(a);
    es_gguf_free(b);
    free(v1);
    free(file);
}

/* Relative RMS error of a (any type) against b (f32). */
static double rel_rms(const es_gguf_tensor *a, const es_gguf_tensor *b) {
    const int64_t n = b->ne[0] * b->ne[1];
    float *x = malloc((size_t)n * sizeof *x);
    es_type_get(a->type)->to_float(a->data, x, n);
    const float *y = b->data;
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        den += (double)y[i] * y[i];
    }
    free(x);
    return sqrt(num / (den > 0 ? den : 1));
}

static void test_quantize(const char *fp32_gguf) {
    const struct { uint32_t type; const char *file; double bound; uint32_t ftype; } k[] = {
        {ES_TYPE_Q8_0, "s260k-q8_0.gguf", 0.01, 7},  /* q8_0: < 1 % relative RMS error per tensor */
        {ES_TYPE_Q4_0, "s260k-q4_0.gguf", 0.15, 2},  /* q4_0: < 15 % */
        {ES_TYPE_F16, "s260k-f16.gguf", 1e-3, 1},    /* f16: < 0.1 % */
        {ES_TYPE_BF16, "s260k-bf16.gguf", 1e-2, 32}, /* bf16: < 1 % */
    };
    es_gguf *f = NULL;
    es_err err;
    CHECK_OK(es_gguf_open(fp32_gguf, &f, &err), &err);
    if (!f) return;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        const char *out = es_test_tmp(k[i].file);
        es_convert_stats stats;
        es_convert_opts o = es_convert_default_opts();
        o.stats = &stats;
        CHECK_OK(es_quantize(fp32_gguf, out, k[i].type, &o, &err), &err);
        es_gguf *q = NULL;
        CHECK_OK(es_gguf_open(out, &q, &err), &err);
        if (!q) continue;
        CHECK(get_int(q, "general.file_type") == k[i].ftype);
        CHECK(get_int(q, "llama.block_count") == L);
        es_gguf_vtype et;
        uint64_t nt = 0;
        CHECK(es_gguf_get_arr(q, "tokenizer.ggml.tokens", &et, &nt) && nt == V);
        CHECK(es_gguf_n_tensors(q) == es_gguf_n_tensors(f));
        /* quantised: token_embd + 6 matrices per layer; ffn_down (rows of 172) stays f32 */
        const bool blocked = k[i].type == ES_TYPE_Q8_0 || k[i].type == ES_TYPE_Q4_0;
        CHECK(stats.n_converted == (blocked ? 1 + 6 * L : 1 + 7 * L));
        CHECK(stats.n_kept_f32 == (blocked ? L : 0));
        CHECK(stats.bytes_out > 0 && stats.bytes_out < stats.bytes_in);
        double worst = 0;
        for (int64_t j = 0; j < es_gguf_n_tensors(f); j++) {
            const es_gguf_tensor *tf = es_gguf_tensor_at(f, j), *tq = es_gguf_find_tensor(q, tf->name);
            CHECK_MSG(tq != NULL, "%s missing", tf->name);
            if (!tq) continue;
            CHECK(tq->n_dims == tf->n_dims && tq->ne[0] == tf->ne[0] && tq->ne[1] == tf->ne[1]);
            const bool matrix = tf->n_dims == 2;
            if (!matrix || (blocked && tf->ne[0] % 32 != 0)) {
                CHECK_MSG(tq->type == ES_TYPE_F32 && tq->nbytes == tf->nbytes && !memcmp(tq->data, tf->data, tf->nbytes),
                          "%s should be copied as f32", tf->name);
                continue;
            }
            CHECK_MSG(tq->type == k[i].type, "%s: type %s", tf->name, es_type_name(tq->type));
            if (tq->type != k[i].type) continue;
            const double e = rel_rms(tq, tf);
            if (!(e <= worst)) worst = e; /* (a NaN counts) */
            CHECK_MSG(e < k[i].bound, "%s as %s: relative RMS error %.4f >= %.4f", tf->name, es_type_name(k[i].type), e, k[i].bound);
        }
        printf("quantize %s: worst per-tensor relative RMS error %.5f (bound %.3f)\n", es_type_name(k[i].type), worst, k[i].bound);
        es_gguf_free(q);
    }
    /* re-quantising a quantised file dequantises first: q8_0 -> q4_0 stays within the q4_0 bound */
    char out[4096];
    snprintf(out, sizeof out, "%s", es_test_tmp("s260k-q8-q4.gguf"));
    CHECK_OK(es_quantize(es_test_tmp("s260k-q8_0.gguf"), out, ES_TYPE_Q4_0, NULL, &err), &err);
    es_gguf *q = NULL;
    CHECK_OK(es_gguf_open(out, &q, &err), &err);
    if (q) {
        const es_gguf_tensor *a = es_gguf_find_tensor(q, "blk.1.attn_q.weight"), *b = es_gguf_find_tensor(f, "blk.1.attn_q.weight");
        CHECK(a && a->type == ES_TYPE_Q4_0 && rel_rms(a, b) < 0.16);
        es_gguf_free(q);
    }
    /* bad arguments */
    CHECK(es_quantize(fp32_gguf, es_test_tmp("bad.gguf"), ES_TYPE_Q3_K, NULL, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_quantize(fp32_gguf, fp32_gguf, ES_TYPE_Q8_0, NULL, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_quantize(es_test_tmp("nope.gguf"), es_test_tmp("bad.gguf"), ES_TYPE_Q8_0, NULL, &err) != ES_OK);
    es_gguf_free(f);
}

/* Converting straight to q8_0: the same types as quantize produces. */
static void test_convert_q8(void) {
    es_err err;
    es_convert_opts o = es_convert_default_opts();
    o.out_type = ES_TYPE_Q8_0;
    const char *out = es_test_tmp("s260k-direct-q8.gguf");
    CHECK_OK(es_convert_llama2c(es_test_shared_model("stories260K.bin"), es_test_shared_model("tok512.bin"), out, &o, &err), &err);
    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(out, &g, &err), &err);
    if (!g) return;
    expect_tensor(g, "token_embd.weight", ES_TYPE_Q8_0, D, V);
    expect_tensor(g, "blk.0.attn_q.weight", ES_TYPE_Q8_0, D, D);
    expect_tensor(g, "blk.0.ffn_down.weight", ES_TYPE_F32, HID, D);
    expect_tensor(g, "blk.0.ffn_norm.weight", ES_TYPE_F32, D, 0);
    CHECK(get_int(g, "general.file_type") == 7);
    es_gguf_free(g);
    o.out_type = ES_TYPE_Q3_K;
    CHECK(es_convert_llama2c(es_test_shared_model("stories260K.bin"), es_test_shared_model("tok512.bin"), out, &o, &err) == ES_ERR_INVALID_ARG);
}

int main(void) {
    /* es_test_tmp's buffers are reused after 16 calls: keep our own copy */
    static char fp32[4096];
    snprintf(fp32, sizeof fp32, "%s", es_test_tmp("stories260K-conv.gguf"));
    test_legacy(fp32);
    test_ak42(fp32, es_test_tmp("stories260K_q80-conv.gguf"));
    test_v1(fp32);
    test_rejects();
    test_quantize(fp32);
    test_convert_q8();
    return es_test_finish("test_convert");
}
