/* test_synth.c — `synth --random`: shapes, weight statistics, determinism, vocabularies, bad shapes; and
 * the RoPE scaling keys a model file may carry: which are computed, which refused with a clear error. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert.h"
#include "gguf/gguf.h"
#include "kernels/types.h"
#include "model/hparams.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"

static int64_t get_int(const es_gguf *g, const char *key) {
    int64_t v = -1;
    es_gguf_get_i64(g, key, &v);
    return v;
}

static es_status synth(const char *shape, uint32_t type, uint64_t seed, const char *tok, const char *out, es_err *err) {
    es_synth_opts o = {.shape = shape, .type = type, .seed = seed, .tokenizer = tok, .out_path = out};
    return es_synth(&o, err);
}

static void check_shape(const es_gguf *g, const char *name, uint32_t type, int64_t ne0, int64_t ne1) {
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    CHECK_MSG(t && t->type == type && t->ne[0] == ne0 && (ne1 ? t->n_dims == 2 && t->ne[1] == ne1 : t->n_dims == 1),
              "%s: %s [%lld, %lld]", name, t ? es_type_name(t->type) : "missing", t ? (long long)t->ne[0] : -1LL,
              t ? (long long)t->ne[1] : -1LL);
}

static void test_random_llama(void) {
    es_err err;
    const char *out = es_test_tmp("synth-rand.gguf");
    /* ff 100: ffn_down rows of 100 are not whole q8_0 blocks and stay f32 */
    CHECK_OK(synth("custom:dim=64,ff=100,layers=3,heads=4,kv=2,ctx=128,vocab=300,tied=0", ES_TYPE_Q8_0, 7, NULL, out, &err), &err);
    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(out, &g, &err), &err);
    if (!g) return;
    const char *s;
    size_t len;
    CHECK(es_gguf_get_str(g, "general.architecture", &s, &len) && !strcmp(s, "llama"));
    CHECK(get_int(g, "llama.embedding_length") == 64);
    CHECK(get_int(g, "llama.feed_forward_length") == 100);
    CHECK(get_int(g, "llama.block_count") == 3);
    CHECK(get_int(g, "llama.attention.head_count") == 4);
    CHECK(get_int(g, "llama.attention.head_count_kv") == 2);
    CHECK(get_int(g, "llama.context_length") == 128);
    CHECK(get_int(g, "general.file_type") == 7);
    CHECK(es_gguf_n_tensors(g) == 3 + 9 * 3);
    check_shape(g, "token_embd.weight", ES_TYPE_Q8_0, 64, 300);
    check_shape(g, "output.weight", ES_TYPE_Q8_0, 64, 300);
    check_shape(g, "output_norm.weight", ES_TYPE_F32, 64, 0);
    check_shape(g, "blk.2.attn_q.weight", ES_TYPE_Q8_0, 64, 64);
    check_shape(g, "blk.2.attn_k.weight", ES_TYPE_Q8_0, 64, 32);
    check_shape(g, "blk.0.attn_output.weight", ES_TYPE_Q8_0, 64, 64);
    check_shape(g, "blk.1.ffn_gate.weight", ES_TYPE_Q8_0, 64, 100);
    check_shape(g, "blk.1.ffn_down.weight", ES_TYPE_F32, 100, 64);
    check_shape(g, "blk.1.ffn_norm.weight", ES_TYPE_F32, 64, 0);
    /* synthetic vocabulary: specials, 256 byte tokens, placeholders */
    es_gguf_vtype et;
    uint64_t n;
    CHECK(es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) && n == 300);
    const char *t0 = es_gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &len);
    CHECK(t0 && !strcmp(t0, "<s>"));
    t0 = es_gguf_arr_str(g, "tokenizer.ggml.tokens", 3 + 0x41, &len);
    CHECK(t0 && !strcmp(t0, "<0x41>"));
    t0 = es_gguf_arr_str(g, "tokenizer.ggml.tokens", 299, &len);
    CHECK(t0 && !strcmp(t0, "tok_299"));
    /* it is a working tokenizer: any text falls back to byte tokens */
    es_tokenizer *tok = NULL;
    CHECK_OK(es_tokenizer_from_gguf(g, &tok, &err), &err);
    if (tok) {
        int32_t ids[16];
        int nid = 0;
        CHECK_OK(es_tokenize(tok, "Hi", 2, true, false, ids, 16, &nid, &err), &err);
        CHECK(nid >= 3 && ids[0] == 1 && ids[nid - 1] == 3 + 'i');
        es_tokenizer_free(tok);
    }

    /* statistics: N(0, 0.02) matrices (f32 ffn_down read directly), norms exactly 1 */
    const es_gguf_tensor *t = es_gguf_find_tensor(g, "blk.1.ffn_down.weight");
    if (t) {
        const float *x = t->data;
        double m = 0, v = 0;
        const int64_t cnt = t->ne[0] * t->ne[1];
        for (int64_t i = 0; i < cnt; i++) m += x[i];
        m /= cnt;
        for (int64_t i = 0; i < cnt; i++) v += (x[i] - m) * (x[i] - m);
        const double sd = sqrt(v / cnt);
        CHECK_MSG(fabs(m) < 0.002 && fabs(sd - 0.02) < 0.001, "mean %g sd %g", m, sd);
    }
    t = es_gguf_find_tensor(g, "blk.2.attn_norm.weight");
    if (t) {
        int ones = 0;
        for (int i = 0; i < 64; i++) ones += ((const float *)t->data)[i] == 1.0f;
        CHECK(ones == 64);
    }
    /* quantised matrices dequantise to the same distribution */
    t = es_gguf_find_tensor(g, "token_embd.weight");
    if (t) {
        const int64_t cnt = t->ne[0] * t->ne[1];
        float *x = malloc((size_t)cnt * sizeof *x);
        es_type_get(t->type)->to_float(t->data, x, cnt);
        double v = 0;
        for (int64_t i = 0; i < cnt; i++) v += (double)x[i] * x[i];
        CHECK_MSG(fabs(sqrt(v / cnt) - 0.02) < 0.001, "token_embd rms %g", sqrt(v / cnt));
        free(x);
    }

    /* determinism: the same seed gives the same bytes (whatever the thread count), another seed others */
    const char *out2 = es_test_tmp("synth-rand2.gguf"), *out3 = es_test_tmp("synth-rand3.gguf");
    es_synth_opts o = {.shape = "custom:dim=64,ff=100,layers=3,heads=4,kv=2,ctx=128,vocab=300,tied=0", .type = ES_TYPE_Q8_0, .seed = 7,
                       .out_path = out2, .n_threads = 1};
    CHECK_OK(es_synth(&o, &err), &err);
    CHECK_OK(synth("custom:dim=64,ff=100,layers=3,heads=4,kv=2,ctx=128,vocab=300,tied=0", ES_TYPE_Q8_0, 8, NULL, out3, &err), &err);
    size_t l1, l2, l3;
    char *a = es_test_read_file(out, &l1), *b = es_test_read_file(out2, &l2), *c = es_test_read_file(out3, &l3);
    CHECK(a && b && c && l1 == l2 && l1 == l3);
    if (a && b && c && l1 == l2 && l1 == l3) {
        CHECK(!memcmp(a, b, l1));
        CHECK(memcmp(a, c, l1) != 0);
    }
    free(a);
    free(b);
    free(c);
    es_gguf_free(g);
}

static void test_random_qwen2_and_tok(void) {
    es_err err;
    const char *out = es_test_tmp("synth-qwen2.gguf");
    CHECK_OK(synth("custom:dim=64,ff=128,layers=2,heads=4,kv=2,vocab=512,arch=qwen2", ES_TYPE_F16, 1,
                   es_test_shared_model("tok512.bin"), out, &err),
             &err);
    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(out, &g, &err), &err);
    if (!g) return;
    const char *s;
    size_t len;
    float f;
    CHECK(es_gguf_get_str(g, "general.architecture", &s, &len) && !strcmp(s, "qwen2"));
    CHECK(es_gguf_get_f32(g, "qwen2.rope.freq_base", &f) && f == 1e6f);
    CHECK(es_gguf_n_tensors(g) == 2 + 12 * 2); /* tied, biases */
    check_shape(g, "blk.1.attn_q.bias", ES_TYPE_F32, 64, 0);
    check_shape(g, "blk.1.attn_k.bias", ES_TYPE_F32, 32, 0);
    check_shape(g, "blk.1.attn_v.bias", ES_TYPE_F32, 32, 0);
    check_shape(g, "blk.1.attn_v.weight", ES_TYPE_F16, 64, 32);
    check_shape(g, "blk.1.ffn_down.weight", ES_TYPE_F16, 128, 64);
    /* the vocabulary is tok512's */
    es_gguf_vtype et;
    uint64_t n;
    CHECK(es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) && n == 512);
    const char *t = es_gguf_arr_str(g, "tokenizer.ggml.tokens", 300, &len);
    CHECK(t && strncmp(t, "tok_", 4) != 0);
    es_gguf_free(g);
}

static void test_bad_shapes(void) {
    es_err err;
    const char *out = es_test_tmp("synth-bad.gguf");
    const char *bad[] = {
        "gpt-5", "custom:dim=64,ff=128,layers=2,heads=4", "custom:dim=64,ff=128,layers=2,heads=5,kv=1",
        "custom:dim=64,ff=128,layers=2,heads=4,kv=3", "custom:dim=64,ff=128,layers=0,heads=4,kv=2",
        "custom:dim=64,ff=x,layers=2,heads=4,kv=2", "custom:dim=64,ff=128,layers=2,heads=4,kv=2,arch=gpt2",
        "custom:dim=64,ff=128,layers=2,heads=4,kv=2,colour=red", "custom:dim=64,ff=128,layers=2,heads=4,kv=2,vocab=0",
        "custom:dim=64;ff=128", "custom:dim=66,ff=128,layers=2,heads=6,kv=2",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        es_status st = synth(bad[i], ES_TYPE_F32, 1, NULL, out, &err);
        CHECK_MSG(st == ES_ERR_INVALID_ARG && err.msg[0], "%s: %s", bad[i], es_status_str(st));
    }
    int v = 0;
    CHECK(es_synth_check_shape("tinyllama-1.1b", &v, &err) == ES_OK && v == 32000);
    CHECK(es_synth_check_shape("qwen2-0.5b", &v, &err) == ES_OK && v == 151936);
    CHECK(es_synth_check_shape("llama-7b", &v, &err) == ES_OK);
    CHECK(es_synth_check_shape("stories110m", &v, &err) == ES_OK);
    CHECK(es_synth_check_shape("nope", &v, &err) == ES_ERR_INVALID_ARG);
    /* a tokenizer whose size is not the shape's vocabulary */
    CHECK(synth("custom:dim=64,ff=128,layers=1,heads=4,kv=2,vocab=1000", ES_TYPE_F32, 1, es_test_shared_model("tok512.bin"), out, &err) != ES_OK);
    es_synth_opts o = {.shape = "stories15m", .type = ES_TYPE_Q3_K, .out_path = out};
    CHECK(es_synth(&o, &err) == ES_ERR_INVALID_ARG);
}

/* The hyperparameters of `base`'s metadata with extra keys: string keys[i] = vals[i] (a value that
 * parses as a number is written as f32), and an f32 tensor `tensor` of 4 values when not NULL. */
static es_status hparams_with(const char *base, const char *const *keys, const char *const *vals, int n,
                              const char *tensor, es_hparams *hp, es_err *err) {
    es_gguf *g = NULL;
    es_status st = es_gguf_open(base, &g, err);
    if (st != ES_OK) return st;
    es_gguf_writer *w = es_gguf_writer_init();
    static const float four[4] = {1, 1, 1, 1};
    const int64_t ne[1] = {4};
    CHECK(w && es_gguf_copy_kv(w, g) == ES_OK);
    for (int i = 0; i < n; i++) {
        char *end;
        const float f = strtof(vals[i], &end);
        CHECK((*end ? es_gguf_set_str(w, keys[i], vals[i]) : es_gguf_set_f32(w, keys[i], f)) == ES_OK);
    }
    if (tensor) CHECK(es_gguf_add_tensor(w, tensor, ES_TYPE_F32, 1, ne, four) == ES_OK);
    char path[4096];
    snprintf(path, sizeof path, "%s", es_test_tmp("synth-rope.gguf"));
    es_err werr = {0};
    CHECK_OK(es_gguf_write(w, path, NULL, NULL, &werr), &werr);
    es_gguf_writer_free(w);
    es_gguf_free(g);
    es_gguf *g2 = NULL;
    if ((st = es_gguf_open(path, &g2, err)) != ES_OK) return st;
    st = es_hparams_from_gguf(g2, hp, err);
    es_gguf_free(g2);
    return st;
}

static void test_rope_scaling(void) {
    es_err err = {0};
    es_hparams hp;
    char llama[4096], phi3[4096]; /* (es_test_tmp's buffers are reused) */
    snprintf(llama, sizeof llama, "%s", es_test_tmp("synth-rope-llama.gguf"));
    snprintf(phi3, sizeof phi3, "%s", es_test_tmp("synth-rope-phi3.gguf"));
    CHECK_OK(synth("custom:dim=64,ff=128,layers=2,heads=4,kv=2,ctx=128,vocab=300", ES_TYPE_F32, 1, NULL, llama, &err), &err);
    CHECK_OK(synth("custom:dim=64,ff=128,layers=2,heads=4,kv=2,ctx=128,vocab=300,arch=phi3", ES_TYPE_F32, 1, NULL, phi3, &err),
             &err);
    /* none, or no key: the angles as they are */
    CHECK_OK(hparams_with(llama, NULL, NULL, 0, NULL, &hp, &err), &err);
    CHECK(hp.rope_freq_scale == 1.0f);
    const char *type_key[] = {"llama.rope.scaling.type", "llama.rope.scaling.factor"};
    const char *none[] = {"none"};
    CHECK_OK(hparams_with(llama, type_key, none, 1, NULL, &hp, &err), &err);
    CHECK(hp.rope_freq_scale == 1.0f);
    /* linear: the angles divided by the factor */
    const char *linear[] = {"linear", "4"};
    CHECK_OK(hparams_with(llama, type_key, linear, 2, NULL, &hp, &err), &err);
    CHECK_MSG(hp.rope_freq_scale == 0.25f, "linear x4: frequency scale %g, want 0.25", (double)hp.rope_freq_scale);
    /* a factor out of range is a format error naming it */
    const char *huge[] = {"linear", "1e9"};
    es_status st = hparams_with(llama, type_key, huge, 2, NULL, &hp, &err);
    CHECK_MSG(st == ES_ERR_FORMAT && strstr(err.msg, "factor"), "linear x1e9: %d %s", (int)st, err.msg);
    /* schemes that change the angles by context are refused by name */
    const char *schemes[] = {"yarn", "longrope", "dynamic"};
    for (int i = 0; i < 3; i++) {
        st = hparams_with(llama, type_key, &schemes[i], 1, NULL, &hp, &err);
        CHECK_MSG(st == ES_ERR_UNSUPPORTED && strstr(err.msg, schemes[i]), "%s: %d %s", schemes[i], (int)st, err.msg);
    }
    /* phi3: the 128k variants' LongRoPE factors are refused; without them it loads */
    CHECK_OK(hparams_with(phi3, NULL, NULL, 0, NULL, &hp, &err), &err);
    st = hparams_with(phi3, NULL, NULL, 0, "rope_factors_long.weight", &hp, &err);
    CHECK_MSG(st == ES_ERR_UNSUPPORTED && strstr(err.msg, "LongRoPE"), "phi3 LongRoPE: %d %s", (int)st, err.msg);
    remove(llama);
    remove(phi3);
    remove(es_test_tmp("synth-rope.gguf"));
}

int main(void) {
    test_random_llama();
    test_random_qwen2_and_tok();
    test_bad_shapes();
    test_rope_scaling();
    return es_test_finish("test_synth");
}
