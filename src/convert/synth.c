/* synth.c — synthetic GGUF models at real models' shapes, for performance work where the real
 * weights cannot be had.
 *
 * --random: every weight ~ N(0, 0.02), norms 1, reproducible from the seed. Rows are generated inside
 * the writer's fill callback (per-row seeded streams, so threads can share the work and no tensor is
 * held as f32 whole). Normals come from a 65 536-entry table of the normal quantile function indexed
 * by 16 random bits: four values per 64-bit splitmix step, far cheaper than Box–Muller and plenty for
 * weights that only need the right scale. Vocabulary: the llama2.c tokenizer the caller passes (its
 * vocabulary size must be the shape's), else a synthetic one: <unk>, <s>, </s>, the 256 byte tokens
 * <0x00>..<0xFF> (so any text can be encoded), then "tok_<i>" placeholders.
 *
 * --pad-from: a function-preserving expansion of a small real model to the big shape; see pad_*
 * below. The padded model computes the small model's logits (to float rounding) at the big model's
 * cost per token, so speculative decoding with the small model as draft has a known, real acceptance
 * behaviour; --noise S puts N(0, S) into the blocks that are zero by construction to make the copy
 * inexact. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert_impl.h"
#include "kernels/types.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"
#include "util/rng.h"

/* ---- shapes ---- */

typedef struct synth_shape {
    const char *name;
    int dim, ff, layers, heads, kv, vocab, ctx;
    es_arch arch;
    bool tied;
    int head_dim;    /* 0: dim / heads */
    bool rope_freqs; /* write Llama 3.x's per-frequency RoPE factors (rope_freqs.weight) */
    int wscale;      /* --random weights' standard deviation in units of 0.02 (0: 1); larger makes attention
                        peaked, so that position (RoPE) visibly changes the outputs of a small model */
} synth_shape;

static const synth_shape k_shapes[] = {
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, ES_ARCH_LLAMA, false, 0, false, 0},
    {"llama-7b", 4096, 11008, 32, 32, 32, 32000, 4096, ES_ARCH_LLAMA, false, 0, false, 0},
    {"qwen2-0.5b", 896, 4864, 24, 14, 2, 151936, 32768, ES_ARCH_QWEN2, true, 0, false, 0},
    {"stories15m", 288, 768, 6, 6, 6, 32000, 256, ES_ARCH_LLAMA, true, 0, false, 0},
    {"stories42m", 512, 1376, 8, 8, 8, 32000, 1024, ES_ARCH_LLAMA, true, 0, false, 0},
    {"stories110m", 768, 2048, 12, 12, 12, 32000, 1024, ES_ARCH_LLAMA, true, 0, false, 0},
};

static es_status parse_custom(const char *spec, synth_shape *s, es_err *err) {
    *s = (synth_shape){.name = "custom", .vocab = 32000, .ctx = 2048, .arch = ES_ARCH_LLAMA, .tied = true};
    bool have[5] = {false};
    char buf[256];
    if (strlen(spec) >= sizeof buf) return es_fail(err, ES_ERR_INVALID_ARG, "custom shape too long");
    strcpy(buf, spec);
    char *save = NULL;
    for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) return es_fail(err, ES_ERR_INVALID_ARG, "custom shape: '%s' is not key=value", kv);
        *eq = 0;
        const char *key = kv, *val = eq + 1;
        if (strcmp(key, "arch") == 0) {
            if (strcmp(val, "llama") == 0) s->arch = ES_ARCH_LLAMA;
            else if (strcmp(val, "qwen2") == 0) s->arch = ES_ARCH_QWEN2;
            else if (strcmp(val, "phi3") == 0) s->arch = ES_ARCH_PHI3;
            else if (strcmp(val, "qwen3") == 0) s->arch = ES_ARCH_QWEN3;
            else return es_fail(err, ES_ERR_INVALID_ARG, "custom shape: arch must be llama, qwen2, qwen3 or phi3, not '%s'", val);
            continue;
        }
        char *end;
        long v = strtol(val, &end, 10);
        if (!*val || *end || v < 0 || v > (1L << 24))
            return es_fail(err, ES_ERR_INVALID_ARG, "custom shape: %s=%s is not a number in range", key, val);
        static const char *const keys[] = {"dim", "ff", "layers", "heads", "kv"};
        int *slots[] = {&s->dim, &s->ff, &s->layers, &s->heads, &s->kv};
        bool found = false;
        for (int i = 0; i < 5; i++)
            if (strcmp(key, keys[i]) == 0) {
                *slots[i] = (int)v;
                have[i] = found = true;
            }
        if (found) continue;
        if (strcmp(key, "ctx") == 0) s->ctx = (int)v;
        else if (strcmp(key, "vocab") == 0) s->vocab = (int)v;
        else if (strcmp(key, "tied") == 0 && v <= 1) s->tied = v == 1;
        else if (strcmp(key, "headdim") == 0) s->head_dim = (int)v;
        else if (strcmp(key, "ropefreqs") == 0 && v <= 1) s->rope_freqs = v == 1;
        else if (strcmp(key, "wscale") == 0 && v >= 1 && v <= 50) s->wscale = (int)v;
        else return es_fail(err, ES_ERR_INVALID_ARG,
                            "custom shape: unknown key '%s' (dim, ff, layers, heads, kv, ctx, vocab, arch, tied, headdim, ropefreqs, wscale 1..50)", key);
    }
    for (int i = 0; i < 5; i++)
        if (!have[i]) return es_fail(err, ES_ERR_INVALID_ARG, "custom shape needs dim, ff, layers, heads and kv");
    return ES_OK;
}

/* Resolves a shape name (or custom:...) to hyper-parameters. */
static es_status shape_hparams(const char *name, es_hparams *hp, bool *tied, bool *rope_freqs, int *wscale, es_err *err) {
    synth_shape s;
    if (!name) return es_fail(err, ES_ERR_INVALID_ARG, "no shape given");
    if (strncmp(name, "custom:", 7) == 0) {
        es_status st = parse_custom(name + 7, &s, err);
        if (st != ES_OK) return st;
    } else {
        bool found = false;
        for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++)
            if (strcmp(name, k_shapes[i].name) == 0) {
                s = k_shapes[i];
                found = true;
            }
        if (!found)
            return es_fail(err, ES_ERR_INVALID_ARG,
                           "unknown shape '%s' (tinyllama-1.1b, llama-7b, qwen2-0.5b, stories15m, stories42m, stories110m, custom:...)", name);
    }
    if (s.heads <= 0 || (s.head_dim == 0 && s.dim % s.heads != 0))
        return es_fail(err, ES_ERR_INVALID_ARG, "shape %s: heads %d must divide dim %d (or give headdim)", name, s.heads, s.dim);
    if (s.rope_freqs && s.arch != ES_ARCH_LLAMA)
        return es_fail(err, ES_ERR_INVALID_ARG, "shape %s: ropefreqs (Llama 3.x RoPE factors) needs arch=llama", name);
    memset(hp, 0, sizeof *hp);
    hp->arch = s.arch;
    hp->n_embd = s.dim;
    hp->n_ff = s.ff;
    hp->n_layer = s.layers;
    hp->n_head = s.heads;
    hp->n_head_kv = s.kv;
    hp->head_dim = s.head_dim ? s.head_dim : s.dim / s.heads;
    hp->rope_dim = hp->head_dim;
    hp->n_vocab = s.vocab;
    hp->n_ctx_train = s.ctx;
    const bool qwen = s.arch == ES_ARCH_QWEN2 || s.arch == ES_ARCH_QWEN3;
    hp->rms_eps = qwen ? 1e-6f : 1e-5f;
    hp->rope_base = qwen ? 1e6f : 1e4f;
    hp->rope_freq_scale = 1.0f;
    hp->rope_neox = qwen || s.arch == ES_ARCH_PHI3;
    hp->qkv_bias = s.arch == ES_ARCH_QWEN2;
    hp->qk_norm = s.arch == ES_ARCH_QWEN3;
    hp->fused = s.arch == ES_ARCH_PHI3;
    hp->tied_output = s.tied;
    *tied = s.tied;
    if (rope_freqs) *rope_freqs = s.rope_freqs;
    if (wscale) *wscale = s.wscale ? s.wscale : 1;
    es_status st = es_hparams_validate(hp, err);
    if (st != ES_OK) {
        es_err_prefix(err, name);
        return ES_ERR_INVALID_ARG;
    }
    return ES_OK;
}

es_status es_synth_check_shape(const char *shape, int *n_vocab, es_err *err) {
    es_hparams hp;
    bool tied;
    es_status st = shape_hparams(shape, &hp, &tied, NULL, NULL, err);
    if (st == ES_OK && n_vocab) *n_vocab = hp.n_vocab;
    return st;
}

/* ---- fast normals ---- */

#define NORM_TABLE 65536

/* table[i] = Φ⁻¹((i + ½) / 65536), by bisection on erfc (a few ms, once per run). */
static float *normal_table(void) {
    float *t = malloc(NORM_TABLE * sizeof *t);
    if (!t) return NULL;
    for (int i = NORM_TABLE / 2; i < NORM_TABLE; i++) {
        const double p = (i + 0.5) / NORM_TABLE;
        double lo = 0.0, hi = 8.0;
        for (int it = 0; it < 48; it++) {
            double mid = 0.5 * (lo + hi);
            if (1.0 - 0.5 * erfc(mid / sqrt(2.0)) < p) lo = mid;
            else hi = mid;
        }
        t[i] = (float)(0.5 * (lo + hi));
        t[NORM_TABLE - 1 - i] = -t[i];
    }
    return t;
}

/* The random stream of one row of one tensor. */
static uint64_t row_stream(uint64_t seed, uint64_t tensor, uint64_t row) {
    uint64_t x = seed;
    uint64_t a = es_splitmix64(&x);
    x = a ^ (tensor * 0xd1b54a32d192ed03ull);
    uint64_t b = es_splitmix64(&x);
    x = b ^ (row * 0x8cb92ba72f3d8dd7ull);
    return es_splitmix64(&x);
}

/* dst[i] = std · N(0,1) for i < n. */
static void fill_normal(const float *tab, uint64_t state, float std, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint64_t r = es_splitmix64(&state);
        dst[i] = tab[r & 0xffff] * std;
        dst[i + 1] = tab[(r >> 16) & 0xffff] * std;
        dst[i + 2] = tab[(r >> 32) & 0xffff] * std;
        dst[i + 3] = tab[r >> 48] * std;
    }
    if (i < n) {
        uint64_t r = es_splitmix64(&state);
        for (; i < n; i++, r >>= 16) dst[i] = tab[r & 0xffff] * std;
    }
}

/* ---- random mode ---- */

typedef struct rand_src {
    const float *tab;
    uint64_t seed, tensor;
    float std;   /* 0: constant */
    float value; /* the constant (norms: 1) */
    int64_t ne0;
} rand_src;

static es_status rand_row(void *ud, int64_t row, float *dst, es_err *err) {
    const rand_src *s = ud;
    if (s->std == 0.0f) {
        for (int64_t i = 0; i < s->ne0; i++) dst[i] = s->value;
    } else {
        fill_normal(s->tab, row_stream(s->seed, s->tensor, (uint64_t)row), s->std, dst, s->ne0);
        if (s->value != 0.0f)
            for (int64_t i = 0; i < s->ne0; i++) dst[i] += s->value;
    }
    return ES_OK;
}

/* Llama 3.x's RoPE factors by its Hugging Face definition (rope_type "llama3": factor 8, low and high
 * frequency factors 1 and 4), with the shape's context standing for the original 8192 so that a small
 * model's few positions already turn by visibly different angles: 1 for wavelengths under ctx/4, 8
 * over ctx, smoothly between. The forward pass divides each inverse frequency by its factor. */
static es_status llama3_factors_row(void *ud, int64_t row, float *dst, es_err *err) {
    (void)row, (void)err;
    const es_hparams *hp = ud;
    const double factor = 8, lo = 1, hi = 4, old_ctx = hp->n_ctx_train, pi = 3.14159265358979323846;
    for (int i = 0; i < hp->rope_dim / 2; i++) {
        const double freq = 1.0 / pow(hp->rope_base, (double)(2 * i) / hp->rope_dim), wavelen = 2 * pi / freq;
        if (wavelen < old_ctx / hi) dst[i] = 1.0f;
        else if (wavelen > old_ctx / lo) dst[i] = (float)factor;
        else {
            const double smooth = (old_ctx / wavelen - lo) / (hi - lo);
            dst[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
    return ES_OK;
}

static es_status add_rand(es_plan *p, const float *tab, uint64_t seed, const char *name, uint32_t want, int64_t ne0, int64_t ne1,
                          float std, float value, es_err *err) {
    rand_src *s = malloc(sizeof *s);
    if (!s) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    *s = (rand_src){.tab = tab, .seed = seed, .tensor = (uint64_t)p->n, .std = std, .value = value, .ne0 = ne0};
    const int64_t ne[2] = {ne0, ne1};
    const bool vec = ne1 == 0;
    if (vec) return es_plan_add_rows(p, name, ES_TYPE_F32, 1, (int64_t[]){ne0}, rand_row, s, true, err);
    return es_plan_add_rows(p, name, es_matrix_type(p, want, name, ne0), 2, ne, rand_row, s, true, err);
}

/* The synthetic vocabulary described at the top of the file. */
static es_status synth_vocab_write(int n_vocab, es_gguf_writer *w, es_err *err) {
    const char **tokens = malloc((size_t)n_vocab * sizeof *tokens);
    size_t *lens = malloc((size_t)n_vocab * sizeof *lens);
    float *scores = malloc((size_t)n_vocab * sizeof *scores);
    int32_t *types = malloc((size_t)n_vocab * sizeof *types);
    char *text = malloc((size_t)n_vocab * 16);
    es_status st = ES_OK;
    if (!tokens || !lens || !scores || !types || !text) {
        st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        goto done;
    }
    const bool bytes = n_vocab >= 3 + 256;
    char *q = text;
    for (int i = 0; i < n_vocab; i++) {
        int k;
        if (i == 0) k = snprintf(q, 16, "<unk>"), types[i] = ES_TOKTYPE_UNKNOWN;
        else if (i == 1) k = snprintf(q, 16, "<s>"), types[i] = ES_TOKTYPE_CONTROL;
        else if (i == 2) k = snprintf(q, 16, "</s>"), types[i] = ES_TOKTYPE_CONTROL;
        else if (bytes && i < 3 + 256) k = snprintf(q, 16, "<0x%02X>", i - 3), types[i] = ES_TOKTYPE_BYTE;
        else k = snprintf(q, 16, "tok_%d", i), types[i] = ES_TOKTYPE_NORMAL;
        tokens[i] = q;
        lens[i] = (size_t)k;
        scores[i] = i < 3 || (bytes && i < 3 + 256) ? 0.0f : -(float)i;
        q += k + 1;
    }
    es_vocab_spec spec = {.kind = ES_TOK_SPM, .n_vocab = n_vocab, .tokens = tokens, .lens = lens, .scores = scores,
                          .types = types, .bos = n_vocab > 1 ? 1 : -1, .eos = n_vocab > 2 ? 2 : -1, .unk = 0, .pad = -1,
                          .add_bos = n_vocab > 1, .add_space_prefix = true};
    st = es_vocab_write_gguf(&spec, w, err);
done:
    free(tokens);
    free(lens);
    free(scores);
    free(types);
    free(text);
    return st;
}

static es_status synth_random(const es_synth_opts *o, const es_hparams *hp, bool rope_freqs, int wscale, es_gguf_writer *w,
                              es_plan *plan, float *tab, es_err *err) {
    es_status st;
    const size_t tl = o->tokenizer ? strlen(o->tokenizer) : 0;
    if (tl > 5 && !strcmp(o->tokenizer + tl - 5, ".gguf")) { /* another model's (or a vocabulary-only) GGUF */
        es_gguf *g = NULL;
        if ((st = es_gguf_open(o->tokenizer, &g, err)) != ES_OK) {
            es_err_prefix(err, o->tokenizer);
            return st;
        }
        es_gguf_vtype et;
        uint64_t n = 0;
        if (!es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) || et != ES_GGUF_STRING)
            st = es_fail(err, ES_ERR_FORMAT, "%s has no tokenizer.ggml.tokens", o->tokenizer);
        else if (n != (uint64_t)hp->n_vocab)
            st = es_fail(err, ES_ERR_INVALID_ARG, "%s has %llu tokens; give the shape vocab=%llu", o->tokenizer,
                         (unsigned long long)n, (unsigned long long)n);
        else
            st = es_copy_kv_prefix(w, g, "tokenizer.", err);
        es_gguf_free(g);
        if (st != ES_OK) return st;
    } else if (o->tokenizer) {
        es_vocab *v = NULL;
        if ((st = es_vocab_load_llama2c(o->tokenizer, hp->n_vocab, &v, err)) != ES_OK) {
            es_err_prefix(err, o->tokenizer);
            return st;
        }
        st = es_vocab_write_gguf(es_vocab_spec_of(v), w, err);
        es_vocab_free(v);
    } else {
        es_convert_logf(o->log, o->ud, 2, "no tokenizer given: writing a synthetic %d-token vocabulary", hp->n_vocab);
        st = synth_vocab_write(hp->n_vocab, w, err);
    }
    if (st != ES_OK) return st;

    const float sd = 0.02f * (float)wscale;
    const int64_t d = hp->n_embd, f = hp->n_ff, qd = (int64_t)hp->n_head * hp->head_dim,
                  kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    const uint32_t t = o->type;
    const uint64_t seed = o->seed;
    char name[96];
    if ((st = add_rand(plan, tab, seed, "token_embd.weight", t, d, hp->n_vocab, sd, 0, err)) != ES_OK) return st;
    for (int il = 0; il < hp->n_layer; il++) {
        struct { const char *suffix; int64_t ne0, ne1; float std, value; } k[] = {
            {"attn_norm.weight", d, 0, 0, 1},      {"attn_q.weight", d, qd, sd, 0},   {"attn_k.weight", d, kvd, sd, 0},
            {"attn_v.weight", d, kvd, sd, 0},      {"attn_output.weight", qd, d, sd, 0},
            {"ffn_norm.weight", d, 0, 0, 1},       {"ffn_gate.weight", d, f, sd, 0},  {"ffn_down.weight", f, d, sd, 0},
            {"ffn_up.weight", d, f, sd, 0},        {"attn_q.bias", qd, 0, sd, 0},     {"attn_k.bias", kvd, 0, sd, 0},
            {"attn_v.bias", kvd, 0, sd, 0},
        };
        /* phi3: Q, K, V in one matrix, gate and up in one (gate rows first) */
        struct { const char *suffix; int64_t ne0, ne1; float std, value; } fz[] = {
            {"attn_norm.weight", d, 0, 0, 1}, {"attn_qkv.weight", d, qd + 2 * kvd, sd, 0}, {"attn_output.weight", qd, d, sd, 0},
            {"ffn_norm.weight", d, 0, 0, 1},  {"ffn_up.weight", d, 2 * f, sd, 0},          {"ffn_down.weight", f, d, sd, 0},
        };
        const size_t n = hp->fused ? 6 : hp->qkv_bias ? 12 : 9;
        for (size_t i = 0; i < n; i++) {
            const char *suffix = hp->fused ? fz[i].suffix : k[i].suffix;
            const int64_t ne0 = hp->fused ? fz[i].ne0 : k[i].ne0, ne1 = hp->fused ? fz[i].ne1 : k[i].ne1;
            const float std = hp->fused ? fz[i].std : k[i].std, value = hp->fused ? fz[i].value : k[i].value;
            es_tensor_name(name, sizeof name, il, suffix);
            if ((st = add_rand(plan, tab, seed, name, t, ne0, ne1, std, value, err)) != ES_OK) return st;
        }
        /* qwen3's per-head norms: weights around 1, not all 1, so a test sees them applied */
        for (int j = 0; j < 2 && hp->qk_norm; j++) {
            es_tensor_name(name, sizeof name, il, j ? "attn_k_norm.weight" : "attn_q_norm.weight");
            if ((st = add_rand(plan, tab, seed, name, t, hp->head_dim, 0, 0.2f, 1.0f, err)) != ES_OK) return st;
        }
    }
    if (rope_freqs &&
        (st = es_plan_add_rows(plan, "rope_freqs.weight", ES_TYPE_F32, 1, (int64_t[]){hp->rope_dim / 2}, llama3_factors_row,
                               (void *)hp, false, err)) != ES_OK)
        return st;
    if ((st = add_rand(plan, tab, seed, "output_norm.weight", t, d, 0, 0, 1, err)) != ES_OK) return st;
    if (!hp->tied_output && (st = add_rand(plan, tab, seed, "output.weight", t, d, hp->n_vocab, sd, 0, err)) != ES_OK) return st;
    return ES_OK;
}

/* ---- pad mode ----
 *
 * Small model: width d, FFN ff, L layers, H heads of size hs in G kv groups, ε, θ. Target: D, FF, L',
 * H', hs', G'. The expansion (exact in real arithmetic):
 *  - the residual stream keeps the small model's values in its first d entries and zeros in the rest:
 *    token_embd / output get zero columns d..D-1; every output projection (attn_output, ffn_down) has
 *    zero rows d..D-1;
 *  - RMSNorm over D of such a vector is RMSNorm over d with its mean of squares scaled by d/D, so the
 *    norm weights become w·√(d/D) and ε' = ε·d/D;
 *  - each original head h is mapped to a new head h' (greedily, so that the new kv head of h' holds a
 *    copy of h's kv head); unused heads have zero q rows and zero attn_output columns;
 *  - the new head is wider (hs' ≥ hs): RoPE pair p of the small head (frequency θ^(-2p/hs)) goes to
 *    pair m·p of the new head, whose frequency is θ'^(-2mp/hs'); with θ' = θ^(hs'/(m·hs)) they are
 *    equal. When hs' is a multiple of hs we take m = hs'/hs, so θ' = θ exactly (and the frequencies are
 *    computed from the same float quotient); otherwise the largest m that keeps the last pair inside
 *    the head, so θ' ≤ θ². A pair is (2p, 2p+1) for llama and (p, p + hs/2) for qwen2 (NEOX); mapping
 *    pairs also converts between the two layouts. Value dims map to the first hs dims of the head;
 *  - the attention scale 1/√hs' is compensated by scaling q (rows and bias) by √(hs'/hs);
 *  - extra FFN units have zero gate/up rows and zero down columns (silu(0)·0 = 0);
 *  - original layer i goes to round(i·(L'-1)/(L-1)); the other layers have all-zero projections,
 *    which makes them identity blocks (their norms are √(d/D)).
 * --noise S fills everything that is zero by construction (not the norms) with N(0, S). */

typedef enum pad_kind {
    PAD_EMBD, PAD_OUTPUT, PAD_Q, PAD_K, PAD_V, PAD_O, PAD_GATE, PAD_UP, PAD_DOWN, PAD_QB, PAD_KB, PAD_VB, PAD_NORM
} pad_kind;

typedef struct pad_map {
    es_hparams sh, th;     /* small, target */
    int *layer_src;        /* [L'] original layer or -1 */
    int *head_src;         /* [H'] original head or -1 */
    int *kvh_src;          /* [G'] original kv head or -1 */
    int *qk_src;           /* [hs'] original dim (within a head) of each q/k dim, or -1 */
    float qscale, nscale;
    float noise;
    uint64_t seed;
    const float *tab;
} pad_map;

typedef struct pad_src {
    const pad_map *m;
    pad_kind kind;
    const float *src;      /* the small model's tensor (f32), or NULL (new layer / absent) */
    int64_t ne0;
    uint64_t tensor;
} pad_src;

static es_status pad_row(void *ud, int64_t row, float *dst, es_err *err) {
    const pad_src *s = ud;
    const pad_map *m = s->m;
    const int64_t n = s->ne0, d = m->sh.n_embd, hs = m->sh.head_dim, hs2 = m->th.head_dim;
    if (s->kind == PAD_NORM) {
        for (int64_t i = 0; i < n; i++) dst[i] = m->nscale * (s->src && i < d ? s->src[i] : 1.0f);
        return ES_OK;
    }
    if (m->noise > 0.0f) fill_normal(m->tab, row_stream(m->seed, s->tensor, (uint64_t)row), m->noise, dst, n);
    else memset(dst, 0, (size_t)n * sizeof *dst);
    if (!s->src) return ES_OK;
    switch (s->kind) {
    case PAD_EMBD:
    case PAD_OUTPUT:
        if (row < m->sh.n_vocab) memcpy(dst, s->src + row * d, (size_t)d * sizeof *dst);
        break;
    case PAD_GATE:
    case PAD_UP:
        if (row < m->sh.n_ff) memcpy(dst, s->src + row * d, (size_t)d * sizeof *dst);
        break;
    case PAD_DOWN:
        if (row < d) memcpy(dst, s->src + row * m->sh.n_ff, (size_t)m->sh.n_ff * sizeof *dst);
        break;
    case PAD_Q:
    case PAD_K:
    case PAD_V: {
        const int64_t h2 = row / hs2, j2 = row % hs2;
        const int oh = s->kind == PAD_Q ? m->head_src[h2] : m->kvh_src[h2];
        const int64_t oj = s->kind == PAD_V ? (j2 < hs ? j2 : -1) : m->qk_src[j2];
        if (oh < 0 || oj < 0) break;
        const float *r = s->src + (oh * hs + oj) * d;
        const float sc = s->kind == PAD_Q ? m->qscale : 1.0f;
        for (int64_t i = 0; i < d; i++) dst[i] = r[i] * sc;
        break;
    }
    case PAD_O:
        if (row >= d) break;
        for (int h2 = 0; h2 < m->th.n_head; h2++) {
            const int oh = m->head_src[h2];
            if (oh < 0) continue;
            memcpy(dst + (int64_t)h2 * hs2, s->src + row * ((int64_t)m->sh.n_head * hs) + (int64_t)oh * hs, (size_t)hs * sizeof *dst);
        }
        break;
    case PAD_QB:
    case PAD_KB:
    case PAD_VB:
        /* one row: the whole bias vector */
        for (int64_t i = 0; i < n; i++) {
            const int64_t h2 = i / hs2, j2 = i % hs2;
            const int oh = s->kind == PAD_QB ? m->head_src[h2] : m->kvh_src[h2];
            const int64_t oj = s->kind == PAD_VB ? (j2 < hs ? j2 : -1) : m->qk_src[j2];
            if (oh >= 0 && oj >= 0) dst[i] = s->src[oh * hs + oj] * (s->kind == PAD_QB ? m->qscale : 1.0f);
        }
        break;
    default:
        return es_fail(err, ES_ERR_INTERNAL, "pad: bad tensor kind");
    }
    return ES_OK;
}

/* The small model's tensors as f32, kept until the write is done. */
typedef struct f32_cache {
    float **bufs;
    int n, cap;
} f32_cache;

static void cache_free(f32_cache *c) {
    for (int i = 0; i < c->n; i++) free(c->bufs[i]);
    free(c->bufs);
}

/* Dequantises the small model's tensor `name`, checking its shape is [ne0, ne1] (ne1 0: a vector).
 * *out NULL when absent and !required. */
static es_status small_tensor(const es_gguf *g, f32_cache *c, const char *name, int64_t ne0, int64_t ne1, bool required,
                              const float **out, es_err *err) {
    *out = NULL;
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    if (!t) return required ? es_fail(err, ES_ERR_FORMAT, "small model has no tensor %s", name) : ES_OK;
    const bool vec = ne1 == 0;
    if (t->ne[0] != ne0 || (vec ? t->n_dims != 1 : (t->n_dims != 2 || t->ne[1] != ne1)))
        return es_fail(err, ES_ERR_FORMAT, "small model tensor %s has an unexpected shape", name);
    const es_type_traits *tr = es_type_get(t->type);
    if (!tr || !tr->to_float) return es_fail(err, ES_ERR_UNSUPPORTED, "small model tensor %s has unsupported type %s", name, es_type_name(t->type));
    const int64_t rows = vec ? 1 : ne1;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        float **b = realloc(c->bufs, (size_t)cap * sizeof *b);
        if (!b) return es_fail(err, ES_ERR_NOMEM, "out of memory");
        c->bufs = b;
        c->cap = cap;
    }
    float *buf = malloc((size_t)(ne0 * rows) * sizeof *buf);
    if (!buf) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    c->bufs[c->n++] = buf;
    const size_t rb = es_row_size(t->type, ne0);
    for (int64_t r = 0; r < rows; r++) tr->to_float((const uint8_t *)t->data + (size_t)r * rb, buf + r * ne0, ne0);
    *out = buf;
    return ES_OK;
}

/* Element index (within a head of size hs) of the first / second member of RoPE pair p. */
static int pair_elem(int p, int which, int hs, bool neox) { return neox ? p + which * (hs / 2) : 2 * p + which; }

/* Fills the head, kv head, dimension and layer maps and the target's ε', θ'. */
static es_status pad_plan_maps(pad_map *m, const es_synth_opts *o, es_err *err) {
    const es_hparams *s = &m->sh;
    es_hparams *t = &m->th;
    if (t->n_embd < s->n_embd || t->n_ff < s->n_ff || t->n_layer < s->n_layer || t->n_head < s->n_head || t->head_dim < s->head_dim)
        return es_fail(err, ES_ERR_INVALID_ARG,
                       "pad: the target shape must be at least as large as the small model in every dimension "
                       "(dim %d→%d, ff %d→%d, layers %d→%d, heads %d→%d, head size %d→%d)",
                       s->n_embd, t->n_embd, s->n_ff, t->n_ff, s->n_layer, t->n_layer, s->n_head, t->n_head, s->head_dim, t->head_dim);
    if (s->rope_dim != s->head_dim) return es_fail(err, ES_ERR_UNSUPPORTED, "pad: partial RoPE (rope dim %d < head size %d) is not supported", s->rope_dim, s->head_dim);
    if (s->qkv_bias && !t->qkv_bias) return es_fail(err, ES_ERR_UNSUPPORTED, "pad: the small model has q/k/v biases, which a llama target cannot hold");

    /* heads: greedy, original head order; a new kv head copies exactly one original kv head */
    const int r = s->n_head / s->n_head_kv, r2 = t->n_head / t->n_head_kv;
    int *used = calloc((size_t)t->n_head_kv, sizeof *used);
    if (!used) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    for (int k = 0; k < t->n_head_kv; k++) m->kvh_src[k] = -1;
    for (int h = 0; h < t->n_head; h++) m->head_src[h] = -1;
    for (int h = 0; h < s->n_head; h++) {
        const int g = h / r;
        int k = -1;
        for (int c = 0; c < t->n_head_kv && k < 0; c++)
            if (m->kvh_src[c] == g && used[c] < r2) k = c;
        for (int c = 0; c < t->n_head_kv && k < 0; c++)
            if (m->kvh_src[c] < 0) k = c;
        if (k < 0) {
            free(used);
            return es_fail(err, ES_ERR_INVALID_ARG,
                           "pad: the target's %d kv heads of %d heads each cannot host the small model's %d heads in %d kv groups",
                           t->n_head_kv, r2, s->n_head, s->n_head_kv);
        }
        m->kvh_src[k] = g;
        m->head_src[k * r2 + used[k]++] = h;
    }
    free(used);

    /* RoPE pairs */
    const int hs = s->head_dim, hs2 = t->head_dim, np = hs / 2, np2 = hs2 / 2;
    int mult;
    double theta = s->rope_base;
    if (hs2 % hs == 0) {
        mult = hs2 / hs;
    } else {
        mult = np > 1 ? (np2 - 1) / (np - 1) : 1;
        theta = pow((double)s->rope_base, (double)hs2 / ((double)mult * hs));
    }
    if (!(theta < 1e12)) return es_fail(err, ES_ERR_UNSUPPORTED, "pad: head size %d → %d needs rope base %g, out of range", hs, hs2, theta);
    t->rope_base = (float)theta;
    for (int j = 0; j < hs2; j++) m->qk_src[j] = -1;
    for (int p = 0; p < np; p++)
        for (int w = 0; w < 2; w++) m->qk_src[pair_elem(mult * p, w, hs2, t->rope_neox)] = pair_elem(p, w, hs, s->rope_neox);

    /* layers */
    for (int l = 0; l < t->n_layer; l++) m->layer_src[l] = -1;
    for (int i = 0; i < s->n_layer; i++) {
        const int l = s->n_layer == 1 ? 0 : (int)floor((double)i * (t->n_layer - 1) / (s->n_layer - 1) + 0.5);
        m->layer_src[l] = i;
    }

    m->qscale = (float)sqrt((double)hs2 / hs);
    m->nscale = (float)sqrt((double)s->n_embd / t->n_embd);
    t->rms_eps = (float)((double)s->rms_eps * s->n_embd / t->n_embd);
    t->n_vocab = s->n_vocab;
    t->tied_output = s->tied_output;
    m->noise = o->noise;
    m->seed = o->seed;
    return ES_OK;
}

static es_status add_pad(es_plan *p, const pad_map *m, pad_kind kind, const float *src, const char *name, uint32_t want,
                         int64_t ne0, int64_t ne1, es_err *err) {
    pad_src *s = malloc(sizeof *s);
    if (!s) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    *s = (pad_src){.m = m, .kind = kind, .src = src, .ne0 = ne0, .tensor = (uint64_t)p->n};
    if (ne1 == 0) return es_plan_add_rows(p, name, ES_TYPE_F32, 1, (int64_t[]){ne0}, pad_row, s, true, err);
    const int64_t ne[2] = {ne0, ne1};
    return es_plan_add_rows(p, name, es_matrix_type(p, want, name, ne0), 2, ne, pad_row, s, true, err);
}

static es_status synth_pad(const es_synth_opts *o, es_hparams *th, const es_gguf *g, es_gguf_writer *w, es_plan *plan,
                           pad_map *m, f32_cache *cache, es_err *err) {
    es_status st;
    if ((st = es_hparams_from_gguf(g, &m->sh, err)) != ES_OK) return st;
    const es_hparams *sh = &m->sh;
    if (sh->fused || th->fused) return es_fail(err, ES_ERR_UNSUPPORTED, "pad: fused (phi3) models are not padded; use --random");
    if (sh->qk_norm || th->qk_norm) return es_fail(err, ES_ERR_UNSUPPORTED, "pad: qwen3 models are not padded; use --random");
    if (sh->rope_freq_scale != 1.0f || es_gguf_find_tensor(g, "rope_freqs.weight"))
        return es_fail(err, ES_ERR_UNSUPPORTED, "pad: models with RoPE scaling are not padded; use --random");
    m->th = *th;
    if ((st = pad_plan_maps(m, o, err)) != ES_OK) return st;
    if (th->n_vocab != sh->n_vocab)
        es_convert_logf(o->log, o->ud, 2, "pad: keeping the small model's vocabulary of %d tokens (the shape has %d)", sh->n_vocab, th->n_vocab);
    *th = m->th;
    if ((st = es_copy_kv_prefix(w, g, "tokenizer.", err)) != ES_OK) return st;

    const int64_t d = sh->n_embd, f = sh->n_ff, qd = (int64_t)sh->n_head * sh->head_dim, kvd = (int64_t)sh->n_head_kv * sh->head_dim;
    const int64_t D = th->n_embd, F = th->n_ff, QD = (int64_t)th->n_head * th->head_dim, KVD = (int64_t)th->n_head_kv * th->head_dim;
    const uint32_t t = o->type;
    const float *src;
    char name[96];
    if ((st = small_tensor(g, cache, "token_embd.weight", d, sh->n_vocab, true, &src, err)) != ES_OK) return st;
    if ((st = add_pad(plan, m, PAD_EMBD, src, "token_embd.weight", t, D, sh->n_vocab, err)) != ES_OK) return st;
    for (int l = 0; l < th->n_layer; l++) {
        const int sl = m->layer_src[l];
        struct { const char *suffix; pad_kind kind; int64_t ne0, ne1, sne0, sne1; } k[] = {
            {"attn_norm.weight", PAD_NORM, D, 0, d, 0},  {"attn_q.weight", PAD_Q, D, QD, d, qd},
            {"attn_k.weight", PAD_K, D, KVD, d, kvd},    {"attn_v.weight", PAD_V, D, KVD, d, kvd},
            {"attn_output.weight", PAD_O, QD, D, qd, d}, {"ffn_norm.weight", PAD_NORM, D, 0, d, 0},
            {"ffn_gate.weight", PAD_GATE, D, F, d, f},   {"ffn_down.weight", PAD_DOWN, F, D, f, d},
            {"ffn_up.weight", PAD_UP, D, F, d, f},       {"attn_q.bias", PAD_QB, QD, 0, qd, 0},
            {"attn_k.bias", PAD_KB, KVD, 0, kvd, 0},     {"attn_v.bias", PAD_VB, KVD, 0, kvd, 0},
        };
        const size_t n = th->qkv_bias ? 12 : 9;
        for (size_t i = 0; i < n; i++) {
            src = NULL;
            if (sl >= 0) {
                es_tensor_name(name, sizeof name, sl, k[i].suffix);
                const bool bias = i >= 9;
                if ((st = small_tensor(g, cache, name, k[i].sne0, k[i].sne1, !bias || sh->qkv_bias, &src, err)) != ES_OK) return st;
            }
            es_tensor_name(name, sizeof name, l, k[i].suffix);
            if ((st = add_pad(plan, m, k[i].kind, src, name, t, k[i].ne0, k[i].ne1, err)) != ES_OK) return st;
        }
    }
    if ((st = small_tensor(g, cache, "output_norm.weight", d, 0, true, &src, err)) != ES_OK) return st;
    if ((st = add_pad(plan, m, PAD_NORM, src, "output_norm.weight", t, D, 0, err)) != ES_OK) return st;
    if (!sh->tied_output) {
        if ((st = small_tensor(g, cache, "output.weight", d, sh->n_vocab, true, &src, err)) != ES_OK) return st;
        if ((st = add_pad(plan, m, PAD_OUTPUT, src, "output.weight", t, D, sh->n_vocab, err)) != ES_OK) return st;
    }
    return ES_OK;
}

es_status es_synth(const es_synth_opts *o, es_err *err) {
    if (!o || !o->out_path) return es_fail(err, ES_ERR_INVALID_ARG, "synth: no output path");
    if (!es_convert_type_ok(o->type))
        return es_fail(err, ES_ERR_INVALID_ARG, "cannot write weights as %s (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m)",
                       es_convert_type_name(o->type));
    if (!(o->noise >= 0.0f && o->noise < 100.0f)) return es_fail(err, ES_ERR_INVALID_ARG, "synth: noise must be in [0, 100)");
    es_hparams hp;
    bool tied, rope_freqs = false;
    int wscale = 1;
    es_status st = shape_hparams(o->shape, &hp, &tied, &rope_freqs, &wscale, err);
    if (st != ES_OK) return st;

    es_gguf *small = NULL;
    es_gguf_writer *w = NULL;
    float *tab = normal_table();
    pad_map m;
    memset(&m, 0, sizeof m);
    f32_cache cache = {0};
    es_plan plan;
    es_plan_init(&plan, o->n_threads, o->log, o->ud);
    plan.n_layers = hp.n_layer;
    plan.tied_output = tied;
    if (!tab) {
        st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        goto done;
    }
    w = es_gguf_writer_init();
    if (!w) {
        st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        goto done;
    }
    char name[256], stem[128];
    if (o->pad_from) {
        if ((st = es_gguf_open(o->pad_from, &small, err)) != ES_OK) {
            es_err_prefix(err, o->pad_from);
            goto done;
        }
        m.layer_src = malloc((size_t)hp.n_layer * sizeof(int));
        m.head_src = malloc((size_t)hp.n_head * sizeof(int));
        m.kvh_src = malloc((size_t)hp.n_head_kv * sizeof(int));
        m.qk_src = malloc((size_t)hp.head_dim * sizeof(int));
        m.tab = tab;
        if (rope_freqs || wscale != 1) {
            st = es_fail(err, ES_ERR_INVALID_ARG, "pad: ropefreqs and wscale are for --random models");
            goto done;
        }
        if (!m.layer_src || !m.head_src || !m.kvh_src || !m.qk_src) {
            st = es_fail(err, ES_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((st = synth_pad(o, &hp, small, w, &plan, &m, &cache, err)) != ES_OK) goto done;
        snprintf(name, sizeof name, "%s-pad-%s", es_path_stem(o->pad_from, stem, sizeof stem), o->shape);
    } else {
        if ((st = synth_random(o, &hp, rope_freqs, wscale, w, &plan, tab, err)) != ES_OK) goto done;
        snprintf(name, sizeof name, "synth-random-%s", o->shape);
    }
    if ((st = es_hparams_to_gguf(&hp, w, err)) != ES_OK) goto done;
    if ((st = es_gguf_set_str(w, "general.name", name)) != ES_OK) {
        st = es_fail(err, st, "writing general.name failed");
        goto done;
    }
    if ((st = es_write_file_type(w, o->type, err)) != ES_OK) goto done;
    es_convert_logf(o->log, o->ud, 2, "writing %s: %s %dd %dL %dh/%dkv ff %d vocab %d, %.1f M parameters", o->out_path,
                    es_arch_name(hp.arch), hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.n_ff, hp.n_vocab,
                    (double)es_plan_n_params(&plan) / 1e6);
    if ((st = es_plan_write(&plan, w, o->out_path, o->progress, o->ud, err)) != ES_OK) goto done;
    if (o->stats) {
        memset(o->stats, 0, sizeof *o->stats);
        o->stats->n_tensors = plan.n;
        o->stats->n_converted = plan.n;
        o->stats->n_kept_f32 = plan.n_kept_f32;
        o->stats->n_params = es_plan_n_params(&plan);
        o->stats->bytes_in = small ? es_gguf_file_size(small) : 0;
        o->stats->bytes_out = es_file_size_of(o->out_path);
    }
done:
    es_plan_free(&plan);
    cache_free(&cache);
    free(m.layer_src);
    free(m.head_src);
    free(m.kvh_src);
    free(m.qk_src);
    if (w) es_gguf_writer_free(w);
    if (small) es_gguf_free(small);
    free(tab);
    return st;
}
