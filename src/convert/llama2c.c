/* llama2c.c — llama2.c checkpoints (legacy fp32, ak42 v1 fp32, ak42 v2 int8) to GGUF "llama".
 *
 * llama2.c already uses the consecutive-pair RoPE that GGUF "llama" expects and stores matrices
 * [out][in], which is ggml's [ne0 = in, ne1 = out]: tensors are copied without permutation. */
#include "convert/llama2c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert_impl.h"
#include "kernels/types.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

static int32_t rd_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static float rd_f32(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return v;
}

/* Places `which` at *off (advancing it): f32 when !q8, else int8 values + scales per group. */
static bool place(es_llama2c_info *in, es_l2c_which which, bool per_layer, bool q8, int64_t ne0, int64_t ne1,
                  uint64_t *off) {
    es_l2c_loc *l = &in->loc[which];
    l->present = true;
    l->per_layer = per_layer;
    l->q8 = q8;
    l->ne0 = ne0;
    l->ne1 = ne1;
    l->offset = *off;
    uint64_t n, bytes;
    if (!es_mul_ok((uint64_t)ne0, (uint64_t)ne1, &n)) return false;
    if (q8) {
        l->scales = n;
        if (!es_add_ok(n, n / (uint64_t)in->group_size * 4, &bytes)) return false;
    } else if (!es_mul_ok(n, 4, &bytes)) {
        return false;
    }
    l->stride = bytes;
    uint64_t total = bytes;
    if (per_layer && !es_mul_ok(bytes, (uint64_t)in->n_layers, &total)) return false;
    return es_add_ok(*off, total, off);
}

static es_status check_params(const es_llama2c_info *in, es_err *err) {
    const char *why = NULL;
    if (in->dim <= 0 || in->dim > (1 << 16)) why = "dim";
    else if (in->hidden_dim <= 0 || in->hidden_dim > (1 << 18)) why = "hidden_dim";
    else if (in->n_layers <= 0 || in->n_layers > 1024) why = "n_layers";
    else if (in->n_heads <= 0 || in->n_heads > in->dim || in->dim % in->n_heads != 0) why = "n_heads (must divide dim)";
    else if (in->n_kv_heads <= 0 || in->n_kv_heads > in->n_heads || in->n_heads % in->n_kv_heads != 0)
        why = "n_kv_heads (must divide n_heads)";
    else if ((in->dim / in->n_heads) % 2 != 0) why = "head size (must be even for RoPE)";
    else if (in->vocab_size <= 0 || in->vocab_size > (1 << 22)) why = "vocab_size";
    else if (in->seq_len <= 0 || in->seq_len > (1 << 22)) why = "seq_len";
    if (why)
        return es_fail(err, ES_ERR_FORMAT,
                       "not a valid llama2.c checkpoint: bad %s in header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
                       "n_kv_heads %d, vocab_size %d, seq_len %d)",
                       why, in->dim, in->hidden_dim, in->n_layers, in->n_heads, in->n_kv_heads, in->vocab_size, in->seq_len);
    return ES_OK;
}

/* The ak42 header's own fields: version, classifier flag, int8 group size. */
static es_status read_ak42_header(const uint8_t *p, size_t size, es_llama2c_info *in, es_err *err) {
    if (size < ES_L2C_HEADER_V)
        return es_fail(err, ES_ERR_FORMAT, "file is %zu bytes, too short for a llama2.c ak42 header (256)", size);
    int32_t version = rd_i32(p + 4);
    if (version != 1 && version != 2)
        return es_fail(err, ES_ERR_UNSUPPORTED, "llama2.c ak42 version %d is not supported (1 and 2 are)", (int)version);
    in->kind = version == 1 ? ES_L2C_V1 : ES_L2C_V2;
    if (p[36] > 1) return es_fail(err, ES_ERR_FORMAT, "bad shared_classifier flag %u in llama2.c header", p[36]);
    in->shared_classifier = p[36] == 1;
    if (in->kind == ES_L2C_V2) {
        in->group_size = rd_i32(p + 37); /* packed: right after the flag byte */
        if (in->group_size <= 0 || in->group_size > (1 << 20))
            return es_fail(err, ES_ERR_FORMAT, "bad group_size %d in llama2.c header", in->group_size);
    }
    return ES_OK;
}

/* The header of either layout, up to the hyper-parameters; *off: where the tensors start. */
static es_status read_header(const uint8_t *p, size_t size, es_llama2c_info *in, uint64_t *off, es_err *err) {
    if (size < 28) return es_fail(err, ES_ERR_FORMAT, "file is %zu bytes, too short for a llama2.c checkpoint header", size);
    uint32_t magic;
    memcpy(&magic, p, 4);
    const uint8_t *hp;
    if (magic == ES_L2C_MAGIC) {
        es_status st = read_ak42_header(p, size, in, err);
        if (st != ES_OK) return st;
        hp = p + 8;
        *off = ES_L2C_HEADER_V;
    } else {
        in->kind = ES_L2C_LEGACY;
        hp = p;
        *off = 28;
    }
    in->dim = rd_i32(hp);
    in->hidden_dim = rd_i32(hp + 4);
    in->n_layers = rd_i32(hp + 8);
    in->n_heads = rd_i32(hp + 12);
    in->n_kv_heads = rd_i32(hp + 16);
    int32_t vocab = rd_i32(hp + 20);
    in->seq_len = rd_i32(hp + 24);
    if (in->kind == ES_L2C_LEGACY) {
        /* negative vocab: the checkpoint carries its own classifier; INT32_MIN has no magnitude */
        in->shared_classifier = vocab > 0;
        in->vocab_size = vocab == INT32_MIN ? 0 : vocab < 0 ? -vocab : vocab;
    } else {
        in->vocab_size = vocab;
    }
    return ES_OK;
}

/* The legacy layout: tensors in llama2.c's TransformerWeights order, the RoPE tables before the
 * classifier. false: the sizes overflow. */
static bool place_legacy(es_llama2c_info *in, uint64_t *off) {
    const int64_t d = in->dim, h = in->hidden_dim, kv = in->kv_dim, v = in->vocab_size;
    bool ok = true;
    ok = ok && place(in, ES_L2C_TOK, false, false, d, v, off);
    ok = ok && place(in, ES_L2C_ATT_NORM, true, false, d, 1, off);
    ok = ok && place(in, ES_L2C_WQ, true, false, d, d, off);
    ok = ok && place(in, ES_L2C_WK, true, false, d, kv, off);
    ok = ok && place(in, ES_L2C_WV, true, false, d, kv, off);
    ok = ok && place(in, ES_L2C_WO, true, false, d, d, off);
    ok = ok && place(in, ES_L2C_FFN_NORM, true, false, d, 1, off);
    ok = ok && place(in, ES_L2C_W1, true, false, d, h, off);
    ok = ok && place(in, ES_L2C_W2, true, false, h, d, off);
    ok = ok && place(in, ES_L2C_W3, true, false, d, h, off);
    ok = ok && place(in, ES_L2C_FINAL_NORM, false, false, d, 1, off);
    /* freq_cis_real and freq_cis_imag: [seq_len][head_size/2] each, unused (RoPE is recomputed) */
    uint64_t fc;
    ok = ok && es_mul_ok((uint64_t)in->seq_len, (uint64_t)in->head_size * 4, &fc) && es_add_ok(*off, fc, off);
    if (!in->shared_classifier) ok = ok && place(in, ES_L2C_WCLS, false, false, d, v, off);
    return ok;
}

/* The ak42 layout: the norms first, then the matrices, int8 when q8. false: the sizes overflow. */
static bool place_ak42(es_llama2c_info *in, bool q8, uint64_t *off) {
    const int64_t d = in->dim, h = in->hidden_dim, kv = in->kv_dim, v = in->vocab_size;
    bool ok = true;
    ok = ok && place(in, ES_L2C_ATT_NORM, true, false, d, 1, off);
    ok = ok && place(in, ES_L2C_FFN_NORM, true, false, d, 1, off);
    ok = ok && place(in, ES_L2C_FINAL_NORM, false, false, d, 1, off);
    ok = ok && place(in, ES_L2C_TOK, false, q8, d, v, off);
    ok = ok && place(in, ES_L2C_WQ, true, q8, d, d, off);
    ok = ok && place(in, ES_L2C_WK, true, q8, d, kv, off);
    ok = ok && place(in, ES_L2C_WV, true, q8, d, kv, off);
    ok = ok && place(in, ES_L2C_WO, true, q8, d, d, off);
    ok = ok && place(in, ES_L2C_W1, true, q8, d, h, off);
    ok = ok && place(in, ES_L2C_W2, true, q8, h, d, off);
    ok = ok && place(in, ES_L2C_W3, true, q8, d, h, off);
    if (!in->shared_classifier) ok = ok && place(in, ES_L2C_WCLS, false, q8, d, v, off);
    return ok;
}

/* every quantised tensor must be a whole number of groups */
static es_status check_groups(const es_llama2c_info *in, es_err *err) {
    const int64_t d = in->dim, h = in->hidden_dim, kv = in->kv_dim, v = in->vocab_size;
    const int64_t numels[] = {v * d, d * d, kv * d, h * d};
    for (size_t i = 0; i < sizeof numels / sizeof numels[0]; i++)
        if (numels[i] % in->group_size != 0)
            return es_fail(err, ES_ERR_FORMAT, "llama2.c int8 checkpoint: a tensor of %lld elements is not a whole number of groups of %d",
                           (long long)numels[i], in->group_size);
    return ES_OK;
}

es_status es_llama2c_parse(const void *data, size_t size, es_llama2c_info *in, es_err *err) {
    memset(in, 0, sizeof *in);
    uint64_t off = 0; /* (set by read_header; initialised for the compilers that cannot see it) */
    es_status st = read_header(data, size, in, &off, err);
    if (st != ES_OK) return st;
    st = check_params(in, err);
    if (st != ES_OK) return st;
    in->head_size = in->dim / in->n_heads;
    in->kv_dim = in->n_kv_heads * in->head_size;

    const bool q8 = in->kind == ES_L2C_V2;
    if (q8) {
        st = check_groups(in, err);
        if (st != ES_OK) return st;
    }
    const bool ok = in->kind == ES_L2C_LEGACY ? place_legacy(in, &off) : place_ak42(in, q8, &off);
    if (!ok) return es_fail(err, ES_ERR_FORMAT, "llama2.c header describes a model too large to address");
    in->file_size = off;
    if (off != size)
        return es_fail(err, ES_ERR_FORMAT,
                       "file is %zu bytes but a model of this shape needs %llu (%s; dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
                       "n_kv_heads %d, vocab_size %d, seq_len %d%s)",
                       size, (unsigned long long)off,
                       in->kind == ES_L2C_LEGACY ? "llama2.c legacy fp32" : in->kind == ES_L2C_V1 ? "llama2.c ak42 v1 fp32" : "llama2.c ak42 v2 int8",
                       in->dim, in->hidden_dim, in->n_layers, in->n_heads, in->n_kv_heads, in->vocab_size, in->seq_len,
                       in->shared_classifier ? ", shared classifier" : ", separate classifier");
    return ES_OK;
}

void es_llama2c_row(const es_llama2c_info *info, const void *data, es_l2c_which which, int layer, int64_t row, float *dst) {
    const es_l2c_loc *l = &info->loc[which];
    const uint8_t *base = (const uint8_t *)data + l->offset + (l->per_layer ? (uint64_t)layer * l->stride : 0);
    const uint64_t first = (uint64_t)row * (uint64_t)l->ne0;
    if (!l->q8) {
        memcpy(dst, base + first * 4, (size_t)l->ne0 * sizeof(float));
        return;
    }
    const int8_t *q = (const int8_t *)base;
    const uint8_t *scales = base + l->scales;
    const uint64_t gs = (uint64_t)info->group_size;
    for (int64_t c = 0; c < l->ne0; c++) {
        const uint64_t e = first + (uint64_t)c;
        dst[c] = (float)q[e] * rd_f32(scales + (e / gs) * 4);
    }
}

/* ---- converter ---- */

typedef struct l2c_src {
    const es_llama2c_info *info;
    const uint8_t *data;
    es_l2c_which which;
    int layer;
} l2c_src;

static es_status l2c_row(void *ud, int64_t row, float *dst, es_err *err) {
    const l2c_src *s = ud;
    es_llama2c_row(s->info, s->data, s->which, s->layer, row, dst);
    return ES_OK;
}

static es_status add_l2c(es_plan *plan, const es_llama2c_info *info, const uint8_t *data, es_l2c_which which,
                         int layer, const char *suffix, uint32_t want, es_err *err) {
    const es_l2c_loc *l = &info->loc[which];
    l2c_src *s = malloc(sizeof *s);
    if (!s) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    *s = (l2c_src){.info = info, .data = data, .which = which, .layer = layer};
    char name[96];
    es_tensor_name(name, sizeof name, layer, suffix);
    const int64_t ne[2] = {l->ne0, l->ne1};
    const int n_dims = which == ES_L2C_ATT_NORM || which == ES_L2C_FFN_NORM || which == ES_L2C_FINAL_NORM ? 1 : 2;
    const uint32_t type = n_dims == 1 ? ES_TYPE_F32 : es_matrix_type(plan, want, name, l->ne0);
    return es_plan_add_rows(plan, name, type, n_dims, ne, l2c_row, s, true, err);
}

es_status es_convert_llama2c(const char *model_path, const char *tokenizer_path, const char *out_path,
                             const es_convert_opts *opts_in, es_err *err) {
    const es_convert_opts opts = opts_in ? *opts_in : es_convert_default_opts();
    if (!model_path || !tokenizer_path || !out_path) return es_fail(err, ES_ERR_INVALID_ARG, "missing path");
    if (!es_convert_type_ok(opts.out_type))
        return es_fail(err, ES_ERR_INVALID_ARG, "cannot write weights as %s (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m)",
                       es_convert_type_name(opts.out_type));

    es_mapped map;
    es_status st = es_map_file(model_path, &map, err);
    if (st != ES_OK) return st;
    es_llama2c_info info;
    es_vocab *vocab = NULL;
    es_gguf_writer *w = NULL;
    es_plan plan;
    es_plan_init(&plan, opts.n_threads, opts.log, opts.ud);

    st = es_llama2c_parse(map.data, map.size, &info, err);
    if (st != ES_OK) {
        es_err_prefix(err, model_path);
        goto done;
    }
    es_convert_logf(opts.log, opts.ud, 2, "%s: llama2.c %s, dim %d, hidden %d, %d layers, %d heads, %d kv heads, vocab %d, ctx %d%s",
                    model_path, info.kind == ES_L2C_LEGACY ? "legacy fp32" : info.kind == ES_L2C_V1 ? "ak42 v1 fp32" : "ak42 v2 int8",
                    info.dim, info.hidden_dim, info.n_layers, info.n_heads, info.n_kv_heads, info.vocab_size, info.seq_len,
                    info.shared_classifier ? ", shared classifier" : "");
    if (opts.progress) opts.progress(opts.ud, "reading tokenizer", 0.0);
    st = es_vocab_load_llama2c(tokenizer_path, info.vocab_size, &vocab, err);
    if (st != ES_OK) {
        es_err_prefix(err, tokenizer_path);
        goto done;
    }

    es_hparams hp;
    memset(&hp, 0, sizeof hp);
    hp.arch = ES_ARCH_LLAMA;
    hp.n_embd = info.dim;
    hp.n_ff = info.hidden_dim;
    hp.n_layer = info.n_layers;
    hp.n_head = info.n_heads;
    hp.n_head_kv = info.n_kv_heads;
    hp.head_dim = info.head_size;
    hp.rope_dim = info.head_size;
    hp.n_vocab = info.vocab_size;
    hp.n_ctx_train = info.seq_len;
    hp.rms_eps = 1e-5f;
    hp.rope_base = 10000.0f;
    hp.rope_freq_scale = 1.0f;
    hp.tied_output = info.shared_classifier;
    plan.n_layers = info.n_layers;
    plan.tied_output = info.shared_classifier;

    if ((st = es_convert_writer_begin(&hp, opts.name, model_path, opts.out_type, es_vocab_spec_of(vocab), &w, err)) != ES_OK) goto done;

    const uint32_t t = opts.out_type;
    const uint8_t *d = map.data;
    if ((st = add_l2c(&plan, &info, d, ES_L2C_TOK, -1, "token_embd.weight", t, err)) != ES_OK) goto done;
    for (int il = 0; il < info.n_layers; il++) {
        static const struct { es_l2c_which which; const char *suffix; } k_layer[] = {
            {ES_L2C_ATT_NORM, "attn_norm.weight"}, {ES_L2C_WQ, "attn_q.weight"},  {ES_L2C_WK, "attn_k.weight"},
            {ES_L2C_WV, "attn_v.weight"},          {ES_L2C_WO, "attn_output.weight"}, {ES_L2C_FFN_NORM, "ffn_norm.weight"},
            {ES_L2C_W1, "ffn_gate.weight"},        {ES_L2C_W2, "ffn_down.weight"}, {ES_L2C_W3, "ffn_up.weight"},
        };
        for (size_t k = 0; k < sizeof k_layer / sizeof k_layer[0]; k++)
            if ((st = add_l2c(&plan, &info, d, k_layer[k].which, il, k_layer[k].suffix, t, err)) != ES_OK) goto done;
    }
    if ((st = add_l2c(&plan, &info, d, ES_L2C_FINAL_NORM, -1, "output_norm.weight", t, err)) != ES_OK) goto done;
    if (!info.shared_classifier && (st = add_l2c(&plan, &info, d, ES_L2C_WCLS, -1, "output.weight", t, err)) != ES_OK) goto done;

    st = es_plan_write(&plan, w, out_path, opts.progress, opts.ud, err);
    if (st != ES_OK) goto done;
    if (opts.stats) {
        memset(opts.stats, 0, sizeof *opts.stats);
        opts.stats->n_tensors = plan.n;
        opts.stats->n_converted = plan.n;
        opts.stats->n_kept_f32 = plan.n_kept_f32;
        opts.stats->n_params = es_plan_n_params(&plan);
        opts.stats->bytes_in = map.size;
        opts.stats->bytes_out = es_file_size_of(out_path);
    }
done:
    es_plan_free(&plan);
    if (w) es_gguf_writer_free(w);
    if (vocab) es_vocab_free(vocab);
    es_unmap_file(&map);
    return st;
}
