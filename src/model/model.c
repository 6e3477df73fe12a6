/* model.c — loading a GGUF into an es_model: find every tensor by its standard name, check its type
 * and shape against the hyper-parameters, and keep views into the mapping (no copies of matrices). */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/repack.h"
#include "util/err.h"
#include "util/threadpool.h"

es_model_params es_model_default_params(void) {
    es_model_params p;
    memset(&p, 0, sizeof p);
    return p;
}

/* The slot of m->packed that owns `data`, or -1 when data lies in the file's mapping. */
static int owned_slot(const es_model *m, const void *data) {
    for (int i = 0; i < m->n_packed; i++)
        if (m->packed[i] == data) return i;
    return -1;
}

/* Whether w goes to the X16 layout at load: the CPU level in use has an X16 kernel for its type. */
static bool x16_wanted(const es_mat *w) { return es_mat_can_repack(w) && es_matmul_prefers_x16(w->type); }

/* Repacks one matrix if it pays (see repack_all). A matrix already copied by widen_one has its copy
 * replaced; one still in the file has its pages released. */
static es_status repack_one(es_model *m, es_mat *w, es_threadpool *tp, es_err *err) {
    if (!x16_wanted(w)) return ES_OK;
    const size_t bytes = (es_mat_repacked_size(w) + 63) & ~(size_t)63;
    void *dst = bytes ? aligned_alloc(64, bytes) : NULL;
    if (!dst)
        return es_fail(err, ES_ERR_NOMEM, "out of memory repacking the weights (%zu bytes); no_repack (EDGESPEC_REPACK=0 in the CLI) keeps the file layout",
                       bytes);
    const void *src = w->data;
    const size_t src_bytes = w->row_bytes * (size_t)w->rows;
    es_mat_repack(tp, w, dst, w);
    const int slot = owned_slot(m, src);
    if (slot >= 0) {
        free(m->packed[slot]);
        m->packed[slot] = dst;
        return ES_OK;
    }
    m->packed[m->n_packed++] = dst;
    if (src != m->tok_embd.data) es_gguf_release(m->gguf, src, src_bytes);
    return ES_OK;
}

/* Widens a Q5_0 matrix into an owned Q8_0 copy (exact, kernels/types.h) where it will not be
 * repacked: only the X16 layout has fast Q5_0 kernels (x86-64), and the Q8_0 ones compute the same
 * products at every level. Costs 34 bytes per block of 32 instead of 22; the device backends,
 * which load with no_repack, read it as Q8_0 too. */
static es_status widen_one(es_model *m, es_mat *w, bool will_repack, es_err *err) {
    if (w->type != ES_TYPE_Q5_0 || w->layout != ES_LAYOUT_ROWS) return ES_OK;
    if (will_repack && x16_wanted(w)) return ES_OK;
    const size_t row_bytes = es_row_size(ES_TYPE_Q8_0, w->cols), bytes = row_bytes * (size_t)w->rows;
    void *dst = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!dst) return es_fail(err, ES_ERR_NOMEM, "out of memory widening a q5_0 matrix (%zu bytes)", bytes);
    for (int64_t r = 0; r < w->rows; r++)
        es_q5_0_to_q8_0((const uint8_t *)w->data + (size_t)r * w->row_bytes, (uint8_t *)dst + (size_t)r * row_bytes, w->cols);
    if (w->data != m->tok_embd.data) es_gguf_release(m->gguf, w->data, w->row_bytes * (size_t)w->rows);
    m->packed[m->n_packed++] = dst;
    w->type = ES_TYPE_Q8_0;
    w->row_bytes = row_bytes;
    w->data = dst;
    return ES_OK;
}

/* The matrices the forward pass multiplies with: the output and 7 per layer. */
static int layer_mats(es_layer *L, es_mat *ls[7]) {
    es_mat *all[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
    memcpy(ls, all, sizeof all);
    return 7;
}

static es_status widen_all(es_model *m, bool will_repack, es_err *err) {
    es_status st = widen_one(m, &m->output, will_repack, err);
    for (int il = 0; il < m->hp.n_layer && st == ES_OK; il++) {
        es_mat *ls[7];
        const int k = layer_mats(&m->layers[il], ls);
        for (int i = 0; i < k && st == ES_OK; i++) st = widen_one(m, ls[i], will_repack, err);
    }
    return st;
}

/* Repacks every Q8_0 / Q4_0 / Q5_0 / K-quant matrix the forward pass multiplies with (not the embedding
 * table, which is only read row by row) into the X16 layout when the kernels in use prefer it. The copies are
 * owned by the model; the file's pages of a repacked tensor are released, so memory does not
 * double. A tied output matrix is copied but its file pages stay (they are the embedding table). */
static es_status repack_all(es_model *m, es_err *err) {
    const long nc = sysconf(_SC_NPROCESSORS_ONLN);
    es_threadpool *tp = NULL;
    if (nc > 1 && es_threadpool_init(nc > 8 ? 8 : (int)nc, &tp, err) != ES_OK) tp = NULL; /* then on this thread */
    es_status st = repack_one(m, &m->output, tp, err);
    for (int il = 0; il < m->hp.n_layer && st == ES_OK; il++) {
        es_mat *ls[7];
        const int k = layer_mats(&m->layers[il], ls);
        for (int i = 0; i < k && st == ES_OK; i++) st = repack_one(m, ls[i], tp, err);
    }
    es_threadpool_free(tp);
    return st;
}

/* Looks up a tensor, checks it is 2-D [cols, rows] in a supported type and fills the view. */
static es_status bind_mat(const es_gguf *g, const char *name, int64_t cols, int64_t rows, es_mat *m, es_err *err) {
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    if (!t) return es_fail(err, ES_ERR_FORMAT, "tensor '%s' is missing", name);
    const es_type_traits *tr = es_type_get(t->type);
    if (!tr || !tr->to_float)
        return es_fail(err, ES_ERR_UNSUPPORTED, "tensor '%s' has type %s, which this build cannot compute with", name,
                       es_type_name(t->type));
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1)
        return es_fail(err, ES_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
                       (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                       (long long)cols, (long long)rows);
    m->type = t->type;
    m->rows = rows;
    m->cols = cols;
    m->row_bytes = es_row_size(t->type, cols);
    m->data = t->data;
    return ES_OK;
}

/* Counts the floats needed for copies of 1-D tensors that are not stored as f32. */
static int64_t vec_copy_need(const es_gguf *g, const char *name) {
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    return t && t->type != ES_TYPE_F32 ? t->ne[0] : 0;
}

/* Binds a 1-D tensor of n elements as f32: in place when it is f32, else converted into *pool. */
static es_status bind_vec(const es_gguf *g, const char *name, int64_t n, bool required, const float **out, float **pool,
                          es_err *err) {
    const es_gguf_tensor *t = es_gguf_find_tensor(g, name);
    *out = NULL;
    if (!t) return required ? es_fail(err, ES_ERR_FORMAT, "tensor '%s' is missing", name) : ES_OK;
    if (t->n_dims != 1 || t->ne[0] != n)
        return es_fail(err, ES_ERR_FORMAT, "tensor '%s' has %lld elements in %d dims, expected a vector of %lld", name,
                       (long long)t->ne[0], t->n_dims, (long long)n);
    if (t->type == ES_TYPE_F32) {
        *out = (const float *)t->data;
        return ES_OK;
    }
    const es_type_traits *tr = es_type_get(t->type);
    if (!tr || !tr->to_float || n % tr->blck_size)
        return es_fail(err, ES_ERR_UNSUPPORTED, "tensor '%s' has type %s, unsupported for a vector", name,
                       es_type_name(t->type));
    tr->to_float(t->data, *pool, n);
    *out = *pool;
    *pool += n;
    return ES_OK;
}

static uint64_t mat_bytes(const es_mat *m) { return (uint64_t)m->row_bytes * (uint64_t)m->rows; }

/* Rows [r0, r0 + n) of m, as a matrix of its own. */
static es_mat row_view(const es_mat *m, int64_t r0, int64_t n) {
    es_mat v = *m;
    v.rows = n;
    v.data = (const uint8_t *)m->data + (size_t)r0 * m->row_bytes;
    return v;
}

static void report(const es_model_params *p, double frac) {
    if (p && p->progress) p->progress(p->ud, "loading", frac);
}

/* Binds layer il's matrices and vectors (vectors converted into *pool), adding the matrices'
 * bytes to m->weight_bytes. */
static es_status bind_layer(es_model *m, int il, float **pool, es_err *err) {
    const es_gguf *g = m->gguf;
    const es_hparams *hp = &m->hp;
    const int64_t d = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    char name[96];
    es_status st;
    es_layer *L = &m->layers[il];
#define MAT(field, suffix, cols, rows) \
    if ((st = bind_mat(g, es_tensor_name(name, sizeof name, il, suffix), cols, rows, &L->field, err)) != ES_OK) return st; \
    m->weight_bytes += mat_bytes(&L->field);
#define VEC(field, suffix, n, req) \
    if ((st = bind_vec(g, es_tensor_name(name, sizeof name, il, suffix), n, req, &L->field, pool, err)) != ES_OK) return st;
    VEC(attn_norm, "attn_norm.weight", d, true)
    VEC(ffn_norm, "ffn_norm.weight", d, true)
    if (hp->fused) { /* phi3: views of row ranges (rows are independent in every type) */
        es_mat qkv = {0}, gu = {0}; /* (bind_mat sets all but the layout: the file's) */
        if ((st = bind_mat(g, es_tensor_name(name, sizeof name, il, "attn_qkv.weight"), d, qd + 2 * kvd, &qkv, err)) != ES_OK ||
            (st = bind_mat(g, es_tensor_name(name, sizeof name, il, "ffn_up.weight"), d, 2 * (int64_t)hp->n_ff, &gu, err)) != ES_OK)
            return st;
        L->wq = row_view(&qkv, 0, qd);
        L->wk = row_view(&qkv, qd, kvd);
        L->wv = row_view(&qkv, qd + kvd, kvd);
        L->w1 = row_view(&gu, 0, hp->n_ff); /* the gate first, as llama.cpp splits a fused up */
        L->w3 = row_view(&gu, hp->n_ff, hp->n_ff);
        m->weight_bytes += mat_bytes(&qkv) + mat_bytes(&gu);
    } else {
        MAT(wq, "attn_q.weight", d, qd)
        MAT(wk, "attn_k.weight", d, kvd)
        MAT(wv, "attn_v.weight", d, kvd)
        MAT(w1, "ffn_gate.weight", d, hp->n_ff)
        MAT(w3, "ffn_up.weight", d, hp->n_ff)
    }
    MAT(wo, "attn_output.weight", qd, d)
    MAT(w2, "ffn_down.weight", hp->n_ff, d)
    VEC(bq, "attn_q.bias", qd, hp->qkv_bias)
    VEC(bk, "attn_k.bias", kvd, hp->qkv_bias)
    VEC(bv, "attn_v.bias", kvd, hp->qkv_bias)
    VEC(q_norm, "attn_q_norm.weight", hp->head_dim, hp->qk_norm)
    VEC(k_norm, "attn_k_norm.weight", hp->head_dim, hp->qk_norm)
#undef MAT
#undef VEC
    return ES_OK;
}

es_status es_model_load(const char *path, const es_model_params *params, es_model **out, es_err *err) {
    *out = NULL;
    es_model *m = calloc(1, sizeof *m);
    if (!m) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    es_status st = es_gguf_open(path, &m->gguf, err);
    if (st != ES_OK) goto fail;
    const es_gguf *g = m->gguf;
    report(params, 0.1);
    if ((st = es_hparams_from_gguf(g, &m->hp, err)) != ES_OK) goto fail;
    const es_hparams *hp = &m->hp;
    if ((st = es_tokenizer_from_gguf(g, &m->tok, err)) != ES_OK) goto fail;
    if (es_tokenizer_n_vocab(m->tok) != hp->n_vocab) {
        st = es_fail(err, ES_ERR_FORMAT, "tokenizer has %d tokens but the model's vocabulary is %d",
                     es_tokenizer_n_vocab(m->tok), hp->n_vocab);
        goto fail;
    }
    const char *nm;
    size_t nlen;
    snprintf(m->name, sizeof m->name, "%s", es_gguf_get_str(g, "general.name", &nm, &nlen) ? nm : "model");

    const int64_t d = hp->n_embd;
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) { st = es_fail(err, ES_ERR_NOMEM, "out of memory"); goto fail; }

    /* One pool for every converted vector, sized by a first pass over the names. */
    char name[96];
    int64_t need = vec_copy_need(g, "output_norm.weight");
    need += vec_copy_need(g, "rope_freqs.weight");
    static const char *const vec_names[] = {"attn_norm.weight", "ffn_norm.weight", "attn_q.bias",       "attn_k.bias",
                                            "attn_v.bias",      "attn_q_norm.weight", "attn_k_norm.weight"};
    for (int il = 0; il < hp->n_layer; il++)
        for (size_t k = 0; k < sizeof vec_names / sizeof vec_names[0]; k++)
            need += vec_copy_need(g, es_tensor_name(name, sizeof name, il, vec_names[k]));
    if (need > 0 && !(m->owned = malloc((size_t)need * sizeof(float)))) {
        st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        goto fail;
    }
    float *pool = m->owned;

    if ((st = bind_mat(g, "token_embd.weight", d, hp->n_vocab, &m->tok_embd, err)) != ES_OK) goto fail;
    if ((st = bind_vec(g, "output_norm.weight", d, true, &m->output_norm, &pool, err)) != ES_OK) goto fail;
    if ((st = bind_vec(g, "rope_freqs.weight", hp->rope_dim / 2, false, &m->rope_freqs, &pool, err)) != ES_OK) goto fail;
    for (int i = 0; m->rope_freqs && i < hp->rope_dim / 2; i++)
        if (!(m->rope_freqs[i] >= 1e-6f && m->rope_freqs[i] <= 1e6f)) { /* (also refuses NaN) */
            st = es_fail(err, ES_ERR_FORMAT, "rope_freqs.weight[%d] = %g is not a positive factor", i, (double)m->rope_freqs[i]);
            goto fail;
        }
    if (hp->tied_output) m->output = m->tok_embd;
    else if ((st = bind_mat(g, "output.weight", d, hp->n_vocab, &m->output, err)) != ES_OK) goto fail;
    m->weight_bytes = mat_bytes(&m->output);

    for (int il = 0; il < hp->n_layer; il++) {
        if ((st = bind_layer(m, il, &pool, err)) != ES_OK) goto fail;
        report(params, 0.1 + 0.8 * (il + 1) / hp->n_layer);
    }
    /* every owned copy (a widened matrix, then its X16 form, takes one slot) */
    if (!(m->packed = calloc(1 + 7 * (size_t)hp->n_layer, sizeof *m->packed))) {
        st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        goto fail;
    }
    const bool repack = !(params && params->no_repack);
    if ((st = widen_all(m, repack, err)) != ES_OK) goto fail;
    if (repack && (st = repack_all(m, err)) != ES_OK) goto fail;
    report(params, 1.0);
    *out = m;
    return ES_OK;
fail:
    es_err_prefix(err, path);
    es_model_free(m);
    return st;
}

void es_model_free(es_model *m) {
    if (!m) return;
    free(m->layers);
    free(m->owned);
    for (int i = 0; i < m->n_packed; i++) free(m->packed[i]);
    free(m->packed);
    es_tokenizer_free(m->tok);
    es_gguf_free(m->gguf);
    free(m);
}

void es_model_rope_inv_freq(const es_model *m, float *inv) {
    const es_hparams *hp = &m->hp;
    for (int i = 0; i < hp->rope_dim / 2; i++) {
        inv[i] = 1.0f / powf(hp->rope_base, (float)(2 * i) / (float)hp->rope_dim);
        if (m->rope_freqs) inv[i] /= m->rope_freqs[i];
        if (hp->rope_freq_scale != 1.0f) inv[i] *= hp->rope_freq_scale;
    }
}

int es_model_n_vocab(const es_model *m) { return m->hp.n_vocab; }
int es_model_n_ctx_train(const es_model *m) { return m->hp.n_ctx_train; }
int es_model_n_layer(const es_model *m) { return m->hp.n_layer; }
int es_model_n_embd(const es_model *m) { return m->hp.n_embd; }
uint64_t es_model_weight_bytes(const es_model *m) { return m->weight_bytes; }
const es_tokenizer *es_model_tokenizer(const es_model *m) { return m->tok; }

const char *es_model_desc(const es_model *m, char *buf, size_t len) {
    const es_hparams *hp = &m->hp;
    snprintf(buf, len, "%s %dd %dL %dh/%dkv ff %d vocab %d ctx %d %s (%.1f MB of weights)", es_arch_name(hp->arch),
             hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->n_ff, hp->n_vocab, hp->n_ctx_train,
             es_type_name(m->layers[0].wq.type), (double)m->weight_bytes / 1e6);
    return buf;
}
