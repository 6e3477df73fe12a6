/* test_synth_pad.c — `synth --pad-from`: the padded model must compute the small model's logits.
 *
 * stories260K (converted here from the llama2.c checkpoint) is expanded to several bigger shapes and
 * both models run through a small, independent f32/f64 reference forward pass written below (RMSNorm,
 * RoPE on consecutive or NEOX pairs with the file's freq_base and head size, GQA, softmax, SwiGLU,
 * biases, tied or separate classifier). */
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

/* ---- reference forward ---- */

typedef struct ref_layer {
    float *an, *wq, *wk, *wv, *wo, *fn, *w1, *w2, *w3, *bq, *bk, *bv;
} ref_layer;

typedef struct ref_model {
    es_hparams hp;
    float *embd, *out, *out_norm;
    ref_layer *l;
} ref_model;

static float *load_f32(const es_gguf *g, const char *name, bool required) {
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    CHECK_MSG(t || !required, "missing %s", name);
    if (!t) return NULL;
    const int64_t n = t->ne[0] * t->ne[1];
    float *x = malloc((size_t)n * sizeof *x);
    es_type_get(t->type)->to_float(t->data, x, n);
    return x;
}

static bool ref_load(const char *path, ref_model *m) {
    es_gguf *g = NULL;
    es_err err;
    memset(m, 0, sizeof *m);
    CHECK_OK(es_gguf_open(path, &g, &err), &err);
    if (!g) return false;
    CHECK_OK(es_hparams_from_gguf(g, &m->hp, &err), &err);
    m->embd = load_f32(g, "token_embd.weight", true);
    m->out = load_f32(g, "output.weight", false);
    m->out_norm = load_f32(g, "output_norm.weight", true);
    m->l = calloc((size_t)m->hp.n_layer, sizeof *m->l);
    for (int i = 0; i < m->hp.n_layer; i++) {
        char nm[64];
#define L(field, suffix, req) (snprintf(nm, sizeof nm, "blk.%d.%s", i, suffix), m->l[i].field = load_f32(g, nm, req))
        L(an, "attn_norm.weight", true);
        L(wq, "attn_q.weight", true);
        L(wk, "attn_k.weight", true);
        L(wv, "attn_v.weight", true);
        L(wo, "attn_output.weight", true);
        L(fn, "ffn_norm.weight", true);
        L(w1, "ffn_gate.weight", true);
        L(w2, "ffn_down.weight", true);
        L(w3, "ffn_up.weight", true);
        L(bq, "attn_q.bias", m->hp.qkv_bias);
        L(bk, "attn_k.bias", m->hp.qkv_bias);
        L(bv, "attn_v.bias", m->hp.qkv_bias);
#undef L
    }
    es_gguf_free(g);
    return true;
}

static void ref_free(ref_model *m) {
    free(m->embd);
    free(m->out);
    free(m->out_norm);
    for (int i = 0; m->l && i < m->hp.n_layer; i++) {
        float **f = (float **)&m->l[i];
        for (size_t k = 0; k < sizeof(ref_layer) / sizeof(float *); k++) free(f[k]);
    }
    free(m->l);
}

/* y[rows] = W[rows][cols] · x (+ b) */
static void matvec(const float *w, const double *x, double *y, int rows, int cols, const float *b) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += (double)w[(size_t)r * cols + c] * x[c];
        y[r] = s + (b ? b[r] : 0.0);
    }
}

static void rmsnorm(const double *x, const float *w, double *y, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * inv * w[i];
}

static void rope(double *v, int n_heads, int hd, int pos, double base, bool neox) {
    for (int h = 0; h < n_heads; h++)
        for (int p = 0; p < hd / 2; p++) {
            const double freq = pow(base, -(double)(2 * p) / hd), a = pos * freq, c = cos(a), s = sin(a);
            const int i0 = h * hd + (neox ? p : 2 * p), i1 = h * hd + (neox ? p + hd / 2 : 2 * p + 1);
            const double x0 = v[i0], x1 = v[i1];
            v[i0] = x0 * c - x1 * s;
            v[i1] = x0 * s + x1 * c;
        }
}

/* logits[n][n_vocab] for tokens[0..n) at positions 0..n-1 */
static void ref_forward(const ref_model *m, const int *tokens, int n, double *logits) {
    const es_hparams *hp = &m->hp;
    const int D = hp->n_embd, H = hp->n_head, G = hp->n_head_kv, hd = hp->head_dim, F = hp->n_ff, V = hp->n_vocab;
    const int QD = H * hd, KVD = G * hd;
    double *x = malloc(D * sizeof *x), *xb = malloc(D * sizeof *xb), *q = malloc(QD * sizeof *q), *att = malloc(QD * sizeof *att);
    double *h1 = malloc(F * sizeof *h1), *h3 = malloc(F * sizeof *h3), *tmp = malloc((D > QD ? D : QD) * sizeof *tmp);
    double *kc = malloc((size_t)hp->n_layer * n * KVD * sizeof *kc), *vc = malloc((size_t)hp->n_layer * n * KVD * sizeof *vc);
    double *sc = malloc(n * sizeof *sc);
    for (int pos = 0; pos < n; pos++) {
        for (int i = 0; i < D; i++) x[i] = m->embd[(size_t)tokens[pos] * D + i];
        for (int il = 0; il < hp->n_layer; il++) {
            const ref_layer *L = &m->l[il];
            double *k = kc + ((size_t)il * n + pos) * KVD, *v = vc + ((size_t)il * n + pos) * KVD;
            rmsnorm(x, L->an, xb, D, hp->rms_eps);
            matvec(L->wq, xb, q, QD, D, L->bq);
            matvec(L->wk, xb, k, KVD, D, L->bk);
            matvec(L->wv, xb, v, KVD, D, L->bv);
            rope(q, H, hd, pos, hp->rope_base, hp->rope_neox);
            rope(k, G, hd, pos, hp->rope_base, hp->rope_neox);
            for (int h = 0; h < H; h++) {
                const int g = h / (H / G);
                double mx = -1e300;
                for (int t = 0; t <= pos; t++) {
                    const double *kt = kc + ((size_t)il * n + t) * KVD + g * hd;
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += q[h * hd + i] * kt[i];
                    sc[t] = s / sqrt((double)hd);
                    if (sc[t] > mx) mx = sc[t];
                }
                double sum = 0;
                for (int t = 0; t <= pos; t++) sum += (sc[t] = exp(sc[t] - mx));
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int t = 0; t <= pos; t++) o += sc[t] / sum * vc[((size_t)il * n + t) * KVD + g * hd + i];
                    att[h * hd + i] = o;
                }
            }
            matvec(L->wo, att, tmp, D, QD, NULL);
            for (int i = 0; i < D; i++) x[i] += tmp[i];
            rmsnorm(x, L->fn, xb, D, hp->rms_eps);
            matvec(L->w1, xb, h1, F, D, NULL);
            matvec(L->w3, xb, h3, F, D, NULL);
            for (int i = 0; i < F; i++) h1[i] = h1[i] / (1.0 + exp(-h1[i])) * h3[i];
            matvec(L->w2, h1, tmp, D, F, NULL);
            for (int i = 0; i < D; i++) x[i] += tmp[i];
        }
        rmsnorm(x, m->out_norm, xb, D, hp->rms_eps);
        matvec(m->out ? m->out : m->embd, xb, logits + (size_t)pos * V, V, D, NULL);
    }
    free(x), free(xb), free(q), free(att), free(h1), free(h3), free(tmp), free(kc), free(vc), free(sc);
}

/* ---- tests ---- */

static const int k_tokens[] = {1, 403, 407, 261, 300, 280, 428, 13};
enum { NTOK = sizeof k_tokens / sizeof k_tokens[0] };

/* Pads `small` to `shape` and returns the max |logit difference| over all positions (or -1). */
static double pad_and_compare(const char *small, const ref_model *sm, const double *sl, const char *shape, float noise,
                              uint32_t type, const char *out, es_hparams *hp_out) {
    es_err err;
    es_synth_opts o = {.shape = shape, .pad_from = small, .type = type, .noise = noise, .seed = 5, .out_path = out};
    es_status st = es_synth(&o, &err);
    CHECK_OK(st, &err);
    if (st != ES_OK) return -1;
    ref_model big;
    if (!ref_load(out, &big)) return -1;
    if (hp_out) *hp_out = big.hp;
    CHECK(big.hp.n_vocab == sm->hp.n_vocab);
    double *bl = malloc((size_t)NTOK * big.hp.n_vocab * sizeof *bl);
    ref_forward(&big, k_tokens, NTOK, bl);
    double maxd = 0;
    for (size_t i = 0; i < (size_t)NTOK * sm->hp.n_vocab; i++) maxd = fmax(maxd, fabs(bl[i] - sl[i]));
    printf("pad %-60s noise %.3g %-6s: max |Δlogit| = %.3g\n", shape, (double)noise, es_convert_type_name(type), maxd);
    free(bl);
    ref_free(&big);
    return maxd;
}

/* Greedy top-1 agreement of a model with the small one, teacher-forced on llama2.c's golden story:
 * the fraction of the positions where both argmaxes are the same token. */
static const int k_golden[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
                               337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432,
                               352, 266, 268, 388, 426};
static double top1_agreement(const ref_model *sm, const char *path) {
    ref_model big;
    if (!ref_load(path, &big)) return -1;
    const int ng = sizeof k_golden / sizeof k_golden[0], V = sm->hp.n_vocab;
    double *a = malloc((size_t)ng * V * sizeof *a), *b = malloc((size_t)ng * V * sizeof *b);
    ref_forward(sm, k_golden, ng, a);
    ref_forward(&big, k_golden, ng, b);
    int agree = 0;
    for (int p = 0; p < ng; p++) {
        int ia = 0, ib = 0;
        for (int v = 1; v < V; v++) {
            if (a[(size_t)p * V + v] > a[(size_t)p * V + ia]) ia = v;
            if (b[(size_t)p * V + v] > b[(size_t)p * V + ib]) ib = v;
        }
        agree += ia == ib;
    }
    free(a), free(b);
    ref_free(&big);
    return (double)agree / ng;
}

int main(void) {
    es_err err;
    static char small[4096], big[4096]; /* es_test_tmp reuses its buffers after 16 calls */
    snprintf(small, sizeof small, "%s", es_test_tmp("pad-small.gguf"));
    snprintf(big, sizeof big, "%s", es_test_tmp("pad-big.gguf"));
    CHECK_OK(es_convert_llama2c(es_test_shared_model("stories260K.bin"), es_test_shared_model("tok512.bin"), small, NULL, &err), &err);
    ref_model sm;
    if (!ref_load(small, &sm)) return es_test_finish("test_synth_pad");
    double *sl = malloc((size_t)NTOK * sm.hp.n_vocab * sizeof *sl);
    ref_forward(&sm, k_tokens, NTOK, sl);
    double lmax = 0;
    for (size_t i = 0; i < (size_t)NTOK * sm.hp.n_vocab; i++) lmax = fmax(lmax, fabs(sl[i]));
    CHECK(lmax > 1.0); /* the reference produces real logits */

    /* the converted model reproduces llama2.c's greedy story (golden: "Once upon a time", first 40
     * generated tokens), teacher-forced: argmax at each position is the next golden token */
    {
        static const int golden_[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
                                     337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432,
                                     352, 266, 268, 388, 426};
        const int *golden = golden_, ng = sizeof golden_ / sizeof golden_[0], np = 5, V = sm.hp.n_vocab;
        double *gl = malloc((size_t)ng * V * sizeof *gl);
        ref_forward(&sm, golden, ng, gl);
        int agree = 0;
        for (int p = np - 1; p < ng - 1; p++) {
            int best = 0;
            for (int v = 1; v < V; v++)
                if (gl[(size_t)p * V + v] > gl[(size_t)p * V + best]) best = v;
            agree += best == golden[p + 1];
        }
        CHECK_MSG(agree == ng - np, "greedy agreement with llama2.c: %d of %d", agree, ng - np);
        free(gl);
    }

    /* the brief's target: head size 8 -> 64, GQA groups of 2 kept, 5 -> 9 layers */
    es_hparams hp;
    double d = pad_and_compare(small, &sm, sl, "custom:dim=512,ff=1376,layers=9,heads=8,kv=4,ctx=512", 0, ES_TYPE_F32, big, &hp);
    CHECK_MSG(d >= 0 && d <= 1e-4, "max diff %g", d);
    CHECK(hp.n_embd == 512 && hp.n_layer == 9 && hp.head_dim == 64 && hp.n_ff == 1376);
    CHECK(fabsf(hp.rms_eps - 1e-5f * 64 / 512) < 1e-12f);
    CHECK(hp.rope_base == 10000.0f); /* head size 64 = 8 × 8: pairs spread, θ unchanged */
    {
        es_gguf *g = NULL;
        CHECK_OK(es_gguf_open(big, &g, &err), &err);
        if (g) {
            es_gguf_vtype et;
            uint64_t n;
            CHECK(es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) && n == 512);
            CHECK(es_gguf_find_tensor(g, "output.weight") == NULL);
            es_gguf_free(g);
        }
    }
    /* noise: no longer an exact copy */
    d = pad_and_compare(small, &sm, sl, "custom:dim=256,ff=512,layers=6,heads=8,kv=4,ctx=512", 0.01f, ES_TYPE_F32,
                        es_test_tmp("pad-noise.gguf"), NULL);
    CHECK_MSG(d > 1e-3, "noise changed the logits by only %g", d);
    /* qwen2 target: NEOX pairs, zero biases, head size 8 -> 32 */
    d = pad_and_compare(small, &sm, sl, "custom:dim=256,ff=512,layers=6,heads=8,kv=4,arch=qwen2", 0, ES_TYPE_F32,
                        es_test_tmp("pad-qwen2.gguf"), &hp);
    CHECK_MSG(d >= 0 && d <= 1e-4, "qwen2 max diff %g", d);
    CHECK(hp.arch == ES_ARCH_QWEN2 && hp.rope_neox);
    /* MHA target: each original kv head copied into two new kv heads */
    d = pad_and_compare(small, &sm, sl, "custom:dim=128,ff=256,layers=5,heads=8,kv=8", 0, ES_TYPE_F32, es_test_tmp("pad-mha.gguf"), NULL);
    CHECK_MSG(d >= 0 && d <= 1e-4, "mha max diff %g", d);
    /* more heads and kv heads than the original: greedy placement leaves whole kv heads unused */
    d = pad_and_compare(small, &sm, sl, "custom:dim=512,ff=256,layers=7,heads=16,kv=8", 0, ES_TYPE_F32, es_test_tmp("pad-h16.gguf"), NULL);
    CHECK_MSG(d >= 0 && d <= 1e-4, "16-head max diff %g", d);
    /* head size 8 -> 12 (not a multiple): pairs stay in place, θ' = θ^(12/8) */
    d = pad_and_compare(small, &sm, sl, "custom:dim=96,ff=192,layers=5,heads=8,kv=4", 0, ES_TYPE_F32, es_test_tmp("pad-hd12.gguf"), &hp);
    CHECK_MSG(d >= 0 && d <= 1e-4, "hd12 max diff %g", d);
    CHECK(fabs(hp.rope_base - 1e6) < 1.0);
    /* quantised padding: close, not exact */
    d = pad_and_compare(small, &sm, sl, "custom:dim=256,ff=512,layers=6,heads=8,kv=4", 0, ES_TYPE_Q8_0, es_test_tmp("pad-q8.gguf"), NULL);
    CHECK_MSG(d >= 0 && d < 0.5, "q8_0 max diff %g", d);
    /* K-quants (every row a whole number of 256-element super-blocks): the Q4_K_M mix, then the
     * types it chose (6 layers: the "more bits" layers are 2 and 5; the embedding is the tied
     * classifier, so Q6_K) */
    const char *kqm = es_test_tmp("pad-q4km.gguf");
    d = pad_and_compare(small, &sm, sl, "custom:dim=256,ff=512,layers=6,heads=8,kv=4", 0, ES_MIX_Q4_K_M, kqm, NULL);
    double agree = top1_agreement(&sm, kqm);
    printf("q4_k_m top-1 agreement with f32 on the golden story: %.3f\n", agree);
    CHECK_MSG(d >= 0 && d < 8 && agree >= 0.8, "q4_k_m max diff %g, top-1 agreement %.3f", d, agree);
    {
        es_gguf *g = NULL;
        CHECK_OK(es_gguf_open(kqm, &g, &err), &err);
        if (g) {
            static const struct { const char *name; uint32_t type; } want[] = {
                {"token_embd.weight", ES_TYPE_Q6_K},     {"blk.0.attn_q.weight", ES_TYPE_Q4_K},
                {"blk.0.attn_v.weight", ES_TYPE_Q4_K},   {"blk.2.attn_v.weight", ES_TYPE_Q6_K},
                {"blk.2.ffn_down.weight", ES_TYPE_Q6_K}, {"blk.3.ffn_down.weight", ES_TYPE_Q4_K},
                {"blk.5.ffn_down.weight", ES_TYPE_Q6_K}, {"blk.5.ffn_up.weight", ES_TYPE_Q4_K},
                {"blk.5.attn_norm.weight", ES_TYPE_F32}};
            for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
                const es_gguf_tensor *t = es_gguf_find_tensor(g, want[i].name);
                CHECK_MSG(t && t->type == want[i].type, "q4_k_m: %s is %s, want %s", want[i].name,
                          t ? es_type_name(t->type) : "missing", es_type_name(want[i].type));
            }
            uint32_t ft = 0;
            CHECK(es_gguf_get_u32(g, "general.file_type", &ft) && ft == 15);
            es_gguf_free(g);
        }
    }
    d = pad_and_compare(small, &sm, sl, "custom:dim=256,ff=512,layers=6,heads=8,kv=4", 0, ES_TYPE_Q6_K,
                        es_test_tmp("pad-q6k.gguf"), NULL);
    agree = top1_agreement(&sm, es_test_tmp("pad-q6k.gguf"));
    printf("q6_k top-1 agreement with f32 on the golden story: %.3f\n", agree);
    CHECK_MSG(d >= 0 && d < 2 && agree >= 0.9, "q6_k max diff %g, top-1 agreement %.3f", d, agree);

    /* shapes that cannot host the small model */
    const char *bad[] = {
        "custom:dim=512,ff=1376,layers=9,heads=16,kv=2", /* 2 kv heads cannot hold 4 distinct groups */
        "custom:dim=32,ff=1376,layers=9,heads=4,kv=2",   /* narrower */
        "custom:dim=512,ff=100,layers=9,heads=8,kv=4",   /* smaller FFN */
        "custom:dim=512,ff=1376,layers=3,heads=8,kv=4",  /* fewer layers */
        "custom:dim=512,ff=1376,layers=9,heads=4,kv=4",  /* fewer heads */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        es_synth_opts o = {.shape = bad[i], .pad_from = small, .out_path = es_test_tmp("pad-bad.gguf")};
        err.msg[0] = 0;
        es_status st = es_synth(&o, &err);
        CHECK_MSG(st == ES_ERR_INVALID_ARG && err.msg[0], "%s: %s", bad[i], es_status_str(st));
    }
    es_synth_opts o = {.shape = "stories15m", .pad_from = es_test_tmp("no-such.gguf"), .out_path = es_test_tmp("pad-bad.gguf")};
    CHECK(es_synth(&o, &err) != ES_OK);

    free(sl);
    ref_free(&sm);
    return es_test_finish("test_synth_pad");
}
