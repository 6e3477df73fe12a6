/* vk_forward.c — the Llama/Qwen2 forward pass on a Vulkan device: an es_backend (backend/backend.h).
 *
 * At init every weight is uploaded once in its GGUF type (the shaders dequantise), and the KV cache
 * gets one f32 row per slot of the host pool (es_kv), so a slot's cache row is page · block_size +
 * offset by the same block tables es_decode already maintains. Per pass the host uploads what only it
 * knows — the embedding rows, RoPE's cos/sin of each row's position (the CPU's own values), the
 * attention sets (prefix length + ancestor list per row) and the block tables of the batch's
 * sequences — then one command buffer runs every layer, and only the rows that asked for logits are
 * normed, multiplied by the output matrix and read back.
 *
 * Everything is allocated in es_backend_vulkan_init; a forward allocates nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/vulkan/vk.h"
#include "backend/vulkan/vk_backend.h"
#include "util/err.h"

/* Most buffers one weight matrix is split into (rows of at most the device's binding range each). */
#define DMAT_PARTS 64

/* A weight matrix on the device: rows [row0[i], row0[i] + rows_of[i]) in buf[i]. */
typedef struct {
    es_vk_buf *buf[DMAT_PARTS];
    int64_t row0[DMAT_PARTS], rows_of[DMAT_PARTS];
    int n_parts;
    uint32_t type;
    int64_t rows, cols;
} dmat;

typedef struct {
    es_vk_buf *attn_norm, *ffn_norm; /* (n_embd) */
    es_vk_buf *bq, *bk, *bv;         /* qwen2 biases or NULL */
    es_vk_buf *q_norm, *k_norm;      /* qwen3 per-head norm weights (head_dim) or NULL */
    dmat wq, wk, wv, wo, w1, w2, w3;
    es_vk_buf *k_cache, *v_cache;    /* (kv rows, kv_dim) f16 or f32 (vk_be.kv_f16) */
} dlayer;

typedef struct vk_be {
    es_backend base;
    const es_model *model;
    es_kv *kv;              /* the block tables (not owned) */
    es_vk *vk;
    dlayer *L;
    es_vk_buf *output_norm;
    dmat output;
    int n_batch_max, n_logits_max, n_ctx, n_seq_max, block_size;
    bool kv_f16;            /* the cache rows are f16 (kv_type f16 or q8_0), else f32 */
    int64_t tab_cap, anc_cap;
    int64_t part_max;       /* bytes of one weight buffer */

    /* device activations, rows of the batch */
    es_vk_buf *x;          /* (n, n_embd) residual stream */
    es_vk_buf *xb;         /* (n, max(n_embd, q_dim)) normed input / attention output */
    es_vk_buf *q, *k, *v;  /* (n, q_dim), (n, kv_dim) */
    es_vk_buf *hb, *hb2;   /* (n, n_ff) */
    es_vk_buf *tmp;        /* (n, n_embd) projection output before the residual add */
    es_vk_buf *xl;         /* (n_logits_max, n_embd) normed rows that want logits */
    es_vk_buf *xh;         /* (n_logits_max, n_embd) residual rows for an early-exit hook */
    es_vk_buf *logits_d;   /* (n_logits_max, n_vocab) */
    es_vk_buf *cs, *sn;    /* (n, rope_dim/2) */
    es_vk_buf *meta;       /* (n, 4) int: prefix_len, anc_off, anc_len, table offset */
    es_vk_buf *anc, *tab;  /* ancestor lists, block tables of the batch's sequences */
    es_vk_buf *cache_row;  /* (n) int: each row's KV cache row */
    es_vk_buf *out_rows;   /* (n_logits_max) int: batch rows that want logits */

    /* host side, same shapes */
    float *x_host, *cs_host, *sn_host, *inv_freq, *logits, *xh_host;
    int32_t *meta_host, *tab_host, *row_host, *seq_tab, *seq_max;
} vk_be;

static void vk_be_free(es_backend *be) {
    vk_be *b = (vk_be *)be;
    if (!b) return;
    es_vk *vk = b->vk;
    if (vk) {
        if (b->L)
            for (int l = 0; l < b->model->hp.n_layer; l++) {
                dlayer *L = &b->L[l];
                es_vk_buf *bufs[] = {L->attn_norm, L->ffn_norm, L->bq, L->bk, L->bv, L->q_norm, L->k_norm, L->k_cache, L->v_cache};
                for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) es_vk_buf_free(vk, bufs[i]);
                dmat *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
                for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
                    for (int k = 0; k < mats[i]->n_parts; k++) es_vk_buf_free(vk, mats[i]->buf[k]);
            }
        for (int k = 0; k < b->output.n_parts; k++) es_vk_buf_free(vk, b->output.buf[k]);
        es_vk_buf *bufs[] = {b->output_norm, b->x, b->xb, b->q, b->k, b->v, b->hb, b->hb2, b->tmp, b->xl, b->xh,
                             b->logits_d, b->cs, b->sn, b->meta, b->anc, b->tab, b->cache_row, b->out_rows};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) es_vk_buf_free(vk, bufs[i]);
        es_vk_free(vk);
    }
    free(b->L);
    free(b->x_host); free(b->cs_host); free(b->sn_host); free(b->inv_freq); free(b->logits); free(b->xh_host);
    free(b->meta_host); free(b->tab_host); free(b->row_host); free(b->seq_tab); free(b->seq_max);
    free(b);
}

/* ---- upload ----------------------------------------------------------------------------------- */

/* Puts `what` in front of the message a failed call left. */
static es_status named(es_status st, const char *what, es_err *err) {
    if (st == ES_OK || !err) return st;
    char msg[sizeof err->msg];
    memcpy(msg, err->msg, sizeof msg);
    msg[sizeof msg - 1] = 0;
    return es_fail(err, st, "%s: %s", what, msg);
}

static es_status upload(vk_be *b, const void *src, size_t bytes, es_vk_buf **out, const char *what, es_err *err) {
    es_status st = es_vk_buf_alloc(b->vk, bytes, out, err);
    if (st != ES_OK) return named(st, what, err);
    return es_vk_buf_write(b->vk, *out, 0, src, bytes, err);
}

static es_status upload_mat(vk_be *b, const es_mat *m, dmat *out, const char *what, es_err *err) {
    if (m->layout != ES_LAYOUT_ROWS)
        return es_fail(err, ES_ERR_UNSUPPORTED,
                       "vulkan: %s is in the CPU's repacked layout; load the model with no_repack for a device", what);
    if (!es_vk_matmul_supports(m->type))
        return es_fail(err, ES_ERR_UNSUPPORTED, "vulkan: %s is %s, which has no device kernel yet (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k do)",
                       what, es_type_name(m->type));
    const size_t row = es_row_size(m->type, m->cols);
    if (row == 0 || m->row_bytes != row)
        return es_fail(err, ES_ERR_UNSUPPORTED, "vulkan: %s rows are not contiguous %s rows", what, es_type_name(m->type));
    out->type = m->type;
    out->rows = m->rows;
    out->cols = m->cols;
    /* whole rows per buffer, each buffer within the binding range */
    const int64_t per = b->part_max / (int64_t)row;
    if (per < 1) return es_fail(err, ES_ERR_RANGE, "vulkan: one row of %s (%zu bytes) exceeds a buffer (%lld)", what, row, (long long)b->part_max);
    if ((m->rows + per - 1) / per > DMAT_PARTS)
        return es_fail(err, ES_ERR_RANGE, "vulkan: %s needs more than %d buffers of %lld bytes", what, DMAT_PARTS, (long long)b->part_max);
    for (int64_t r0 = 0; r0 < m->rows; r0 += per) {
        const int64_t nr = m->rows - r0 < per ? m->rows - r0 : per;
        const int k = out->n_parts;
        es_status st = upload(b, (const char *)m->data + (size_t)r0 * row, (size_t)nr * row, &out->buf[k], what, err);
        if (st != ES_OK) return st;
        out->row0[k] = r0;
        out->rows_of[k] = nr;
        out->n_parts++;
    }
    return ES_OK;
}

static es_status alloc(vk_be *b, size_t bytes, es_vk_buf **out, const char *what, es_err *err) {
    return named(es_vk_buf_alloc(b->vk, bytes, out, err), what, err);
}

static es_status upload_weights(vk_be *b, es_err *err) {
    const es_model *m = b->model;
    const es_hparams *hp = &m->hp;
    const size_t d = (size_t)hp->n_embd * 4, qd = (size_t)hp->n_head * hp->head_dim * 4, kvd = (size_t)hp->n_head_kv * hp->head_dim * 4;
    const size_t cache = (size_t)es_kv_blocks_total(b->kv) * (size_t)b->block_size * (b->kv_f16 ? kvd / 2 : kvd);
    es_status st;
    for (int l = 0; l < hp->n_layer; l++) {
        const es_layer *S = &m->layers[l];
        dlayer *L = &b->L[l];
        if ((st = upload(b, S->attn_norm, d, &L->attn_norm, "attn_norm", err)) != ES_OK ||
            (st = upload(b, S->ffn_norm, d, &L->ffn_norm, "ffn_norm", err)) != ES_OK ||
            (S->bq && (st = upload(b, S->bq, qd, &L->bq, "bq", err)) != ES_OK) ||
            (S->bk && (st = upload(b, S->bk, kvd, &L->bk, "bk", err)) != ES_OK) ||
            (S->bv && (st = upload(b, S->bv, kvd, &L->bv, "bv", err)) != ES_OK) ||
            (S->q_norm && (st = upload(b, S->q_norm, (size_t)hp->head_dim * 4, &L->q_norm, "q_norm", err)) != ES_OK) ||
            (S->k_norm && (st = upload(b, S->k_norm, (size_t)hp->head_dim * 4, &L->k_norm, "k_norm", err)) != ES_OK) ||
            (st = upload_mat(b, &S->wq, &L->wq, "wq", err)) != ES_OK || (st = upload_mat(b, &S->wk, &L->wk, "wk", err)) != ES_OK ||
            (st = upload_mat(b, &S->wv, &L->wv, "wv", err)) != ES_OK || (st = upload_mat(b, &S->wo, &L->wo, "wo", err)) != ES_OK ||
            (st = upload_mat(b, &S->w1, &L->w1, "w1", err)) != ES_OK || (st = upload_mat(b, &S->w2, &L->w2, "w2", err)) != ES_OK ||
            (st = upload_mat(b, &S->w3, &L->w3, "w3", err)) != ES_OK ||
            (st = alloc(b, cache, &L->k_cache, "KV cache", err)) != ES_OK ||
            (st = alloc(b, cache, &L->v_cache, "KV cache", err)) != ES_OK)
            return st;
    }
    if ((st = upload(b, m->output_norm, d, &b->output_norm, "output_norm", err)) != ES_OK) return st;
    return upload_mat(b, &m->output, &b->output, "output", err);
}

static es_status alloc_activations(vk_be *b, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    const size_t n = (size_t)b->n_batch_max, nl = (size_t)b->n_logits_max, d = (size_t)hp->n_embd;
    const size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim, ff = (size_t)hp->n_ff;
    const size_t half = (size_t)hp->rope_dim / 2, wide = qd > d ? qd : d;
    es_status st;
    if ((st = alloc(b, n * d * 4, &b->x, "activations", err)) != ES_OK || (st = alloc(b, n * wide * 4, &b->xb, "activations", err)) != ES_OK ||
        (st = alloc(b, n * qd * 4, &b->q, "activations", err)) != ES_OK || (st = alloc(b, n * kvd * 4, &b->k, "activations", err)) != ES_OK ||
        (st = alloc(b, n * kvd * 4, &b->v, "activations", err)) != ES_OK || (st = alloc(b, n * ff * 4, &b->hb, "activations", err)) != ES_OK ||
        (st = alloc(b, n * ff * 4, &b->hb2, "activations", err)) != ES_OK || (st = alloc(b, n * d * 4, &b->tmp, "activations", err)) != ES_OK ||
        (st = alloc(b, nl * d * 4, &b->xl, "activations", err)) != ES_OK ||
        (st = alloc(b, nl * d * 4, &b->xh, "activations", err)) != ES_OK ||
        (st = alloc(b, nl * (size_t)hp->n_vocab * 4, &b->logits_d, "logits", err)) != ES_OK ||
        (st = alloc(b, n * half * 4, &b->cs, "rope table", err)) != ES_OK || (st = alloc(b, n * half * 4, &b->sn, "rope table", err)) != ES_OK ||
        (st = alloc(b, n * 16, &b->meta, "attention sets", err)) != ES_OK ||
        (st = alloc(b, (size_t)b->anc_cap * 4, &b->anc, "ancestor lists", err)) != ES_OK ||
        (st = alloc(b, (size_t)b->tab_cap * 4, &b->tab, "block tables", err)) != ES_OK ||
        (st = alloc(b, n * 4, &b->cache_row, "cache rows", err)) != ES_OK || (st = alloc(b, nl * 4, &b->out_rows, "logit rows", err)) != ES_OK)
        return st;
    bool ok = true;
#define HOST(ptr, count)                                 \
    do {                                                 \
        ptr = malloc((size_t)(count) * sizeof *ptr + 1); \
        if (!ptr) ok = false;                            \
    } while (0)
    HOST(b->x_host, n * d);
    HOST(b->cs_host, n * half);
    HOST(b->sn_host, n * half);
    HOST(b->inv_freq, half);
    HOST(b->logits, nl * (size_t)hp->n_vocab);
    HOST(b->xh_host, nl * d);
    HOST(b->meta_host, n * 4);
    HOST(b->tab_host, b->tab_cap);
    HOST(b->row_host, n);
    HOST(b->seq_tab, b->n_seq_max);
    HOST(b->seq_max, b->n_seq_max);
#undef HOST
    if (!ok) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    for (int s = 0; s < b->n_seq_max; s++) b->seq_tab[s] = b->seq_max[s] = -1;
    es_model_rope_inv_freq(b->model, b->inv_freq); /* the CPU backend's table: both rotate by the same angles */
    return ES_OK;
}

/* ---- the forward pass ------------------------------------------------------------------------- */

/* Fills the per-pass host data — embeddings, RoPE tables, attention sets, block tables, cache rows of
 * the new K / V, logit rows — and records its upload at the start of the pass's command buffer. */
static es_status stage(vk_be *b, const es_fwd_plan *p, es_err *err) {
    const es_model *m = b->model;
    const es_hparams *hp = &m->hp;
    const int n = p->n, d = hp->n_embd, half = hp->rope_dim / 2, bs = b->block_size;
    for (int i = 0; i < n; i++) {
        es_mat_get_row(&m->tok_embd, p->b->token[i], b->x_host + (size_t)i * d);
        for (int j = 0; j < half; j++) {
            const float val = (float)p->b->pos[i] * b->inv_freq[j];
            b->cs_host[(size_t)i * half + j] = cosf(val);
            b->sn_host[(size_t)i * half + j] = sinf(val);
        }
    }
    /* each sequence's block table once, up to its last slot in this batch */
    for (int i = 0; i < n; i++) {
        int32_t *mx = &b->seq_max[p->b->seq[i]];
        if (p->slot[i] > *mx) *mx = p->slot[i];
    }
    int64_t tab_used = 0;
    for (int i = 0; i < n; i++) {
        const int seq = p->b->seq[i];
        if (b->seq_tab[seq] < 0) {
            const int nblk = b->seq_max[seq] / bs + 1;
            if (tab_used + nblk > b->tab_cap) { /* cannot happen: at most min(n, n_seq_max) tables of n_ctx slots */
                for (int k = 0; k < n; k++) b->seq_tab[p->b->seq[k]] = b->seq_max[p->b->seq[k]] = -1;
                return es_fail(err, ES_ERR_INTERNAL, "vulkan: block tables overflow");
            }
            memcpy(b->tab_host + tab_used, es_kv_seq_blocks(b->kv, seq), (size_t)nblk * sizeof(int32_t));
            b->seq_tab[seq] = (int32_t)tab_used;
            tab_used += nblk;
        }
        const int32_t *t = b->tab_host + b->seq_tab[seq];
        b->meta_host[4 * i] = p->prefix_len[i];
        b->meta_host[4 * i + 1] = p->anc_off[i];
        b->meta_host[4 * i + 2] = p->anc_len[i];
        b->meta_host[4 * i + 3] = b->seq_tab[seq];
        b->row_host[i] = t[p->slot[i] / bs] * bs + p->slot[i] % bs;
    }
    for (int i = 0; i < n; i++) b->seq_tab[p->b->seq[i]] = b->seq_max[p->b->seq[i]] = -1;
    const int64_t anc_used = p->anc_off[n - 1] + p->anc_len[n - 1];
    es_vk *vk = b->vk;
    es_status st;
    if ((st = es_vk_upload(vk, b->x, 0, b->x_host, (size_t)n * d * 4, err)) != ES_OK ||
        (st = es_vk_upload(vk, b->cs, 0, b->cs_host, (size_t)n * half * 4, err)) != ES_OK ||
        (st = es_vk_upload(vk, b->sn, 0, b->sn_host, (size_t)n * half * 4, err)) != ES_OK ||
        (st = es_vk_upload(vk, b->meta, 0, b->meta_host, (size_t)n * 16, err)) != ES_OK ||
        (st = es_vk_upload(vk, b->anc, 0, p->anc, (size_t)anc_used * 4, err)) != ES_OK ||
        (st = es_vk_upload(vk, b->tab, 0, b->tab_host, (size_t)tab_used * 4, err)) != ES_OK ||
        (st = es_vk_upload(vk, b->cache_row, 0, b->row_host, (size_t)n * 4, err)) != ES_OK ||
        (p->n_out > 0 && (st = es_vk_upload(vk, b->out_rows, 0, p->out_idx, (size_t)p->n_out * 4, err)) != ES_OK))
        return st;
    return ES_OK;
}

static es_status mm(vk_be *b, es_vk_buf *y, const dmat *w, es_vk_buf *x, int64_t n, es_err *err) {
    es_status st = ES_OK;
    for (int k = 0; k < w->n_parts && st == ES_OK; k++)
        st = es_vk_matmul_part(b->vk, y, w->rows, w->row0[k], w->buf[k], 0, w->type, w->rows_of[k], w->cols, x, n, err);
    return st;
}

/* One layer, recorded: the same steps in the same order as the CPU backend. */
static es_status layer(vk_be *b, const dlayer *L, int il, int64_t n, bool add_tmp, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    es_vk *vk = b->vk;
    const int hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;
    es_status st;
    /* x += (previous layer's FFN output); xb = attn_norm(x) */
    if ((st = es_vk_rmsnorm(vk, b->xb, b->x, add_tmp ? b->tmp : NULL, L->attn_norm, n, hp->n_embd, hp->rms_eps, err)) != ES_OK ||
        (st = mm(b, b->q, &L->wq, b->xb, n, err)) != ES_OK || (st = mm(b, b->k, &L->wk, b->xb, n, err)) != ES_OK ||
        (st = mm(b, b->v, &L->wv, b->xb, n, err)) != ES_OK)
        return st;
    if ((L->bq && (st = es_vk_bias(vk, b->q, L->bq, n, qd, err)) != ES_OK) ||
        (L->bk && (st = es_vk_bias(vk, b->k, L->bk, n, kvd, err)) != ES_OK) ||
        (L->bv && (st = es_vk_bias(vk, b->v, L->bv, n, kvd, err)) != ES_OK))
        return st;
    /* qwen3: every head of q and k normed on its own (rows of head_dim, in place), before RoPE */
    if ((L->q_norm && (st = es_vk_rmsnorm(vk, b->q, b->q, NULL, L->q_norm, n * hp->n_head, hd, hp->rms_eps, err)) != ES_OK) ||
        (L->k_norm && (st = es_vk_rmsnorm(vk, b->k, b->k, NULL, L->k_norm, n * hp->n_head_kv, hd, hp->rms_eps, err)) != ES_OK))
        return st;
    if ((st = es_vk_rope(vk, b->q, b->cs, b->sn, n, hp->n_head, hd, hp->rope_dim, hp->rope_neox, qd, err)) != ES_OK ||
        (st = es_vk_rope(vk, b->k, b->cs, b->sn, n, hp->n_head_kv, hd, hp->rope_dim, hp->rope_neox, kvd, err)) != ES_OK ||
        (st = (b->kv_f16 ? es_vk_rows_f16(vk, L->k_cache, b->k, b->cache_row, n, kvd, err)
                         : es_vk_rows(vk, L->k_cache, b->k, b->cache_row, n, kvd, true, err))) != ES_OK ||
        (st = (b->kv_f16 ? es_vk_rows_f16(vk, L->v_cache, b->v, b->cache_row, n, kvd, err)
                         : es_vk_rows(vk, L->v_cache, b->v, b->cache_row, n, kvd, true, err))) != ES_OK)
        return st;
    const es_vk_attn_args a = {.out = b->xb, .q = b->q, .k_cache = L->k_cache, .v_cache = L->v_cache, .meta = b->meta,
                               .anc = b->anc, .tab = b->tab, .n = n,
                               .n_head = hp->n_head, .n_head_kv = hp->n_head_kv, .head_dim = hd, .block_size = b->block_size,
                               .scale = 1.0f / sqrtf((float)hd), .kv_f16 = b->kv_f16};
    if ((st = es_vk_attention(vk, &a, err)) != ES_OK || (st = mm(b, b->tmp, &L->wo, b->xb, n, err)) != ES_OK ||
        /* x += attention output; xb = ffn_norm(x) */
        (st = es_vk_rmsnorm(vk, b->xb, b->x, b->tmp, L->ffn_norm, n, hp->n_embd, hp->rms_eps, err)) != ES_OK ||
        (st = mm(b, b->hb, &L->w1, b->xb, n, err)) != ES_OK || (st = mm(b, b->hb2, &L->w3, b->xb, n, err)) != ES_OK ||
        (st = es_vk_swiglu(vk, b->hb, b->hb2, n * hp->n_ff, err)) != ES_OK)
        return st;
    return mm(b, b->tmp, &L->w2, b->hb, n, err);
}

static es_status vk_forward(es_backend *be, const es_fwd_plan *p, es_err *err) {
    vk_be *b = (vk_be *)be;
    const es_hparams *hp = &b->model->hp;
    es_vk *vk = b->vk;
    es_status st = es_vk_begin(vk, err);
    if (st != ES_OK) return st;
    st = stage(b, p, err);
    const size_t xh_bytes = (size_t)p->n_out * hp->n_embd * 4;
    int next_exit = 0;
    bool add_tmp = false; /* whether the next norm still has to add the last layer's output into x */
    for (int il = 0; il < hp->n_layer && st == ES_OK; il++) {
        st = layer(b, &b->L[il], il, p->n, add_tmp, err);
        add_tmp = true;
        if (st != ES_OK || next_exit >= p->n_exit || p->exit_layer[next_exit] != il + 1 || il + 1 >= hp->n_layer) continue;
        next_exit++;
        if (p->n_out == 0) continue;
        /* An early exit splits the pass: add the layer's output into x now (the norm's output is not
         * used), read the wanted rows back, run what is recorded, hand them over, record the rest. */
        const void *h = NULL;
        st = es_vk_rmsnorm(vk, b->xb, b->x, b->tmp, b->output_norm, p->n, hp->n_embd, hp->rms_eps, err);
        if (st == ES_OK) st = es_vk_rows(vk, b->xh, b->x, b->out_rows, p->n_out, hp->n_embd, false, err);
        if (st == ES_OK) st = es_vk_readback(vk, b->xh, 0, xh_bytes, &h, err);
        es_status sub = es_vk_submit(vk, err);
        if (st == ES_OK) st = sub;
        if (st != ES_OK) return st;
        memcpy(b->xh_host, h, xh_bytes);
        p->exit_fn(p->exit_ud, il + 1, b->xh_host, p->n_out, p->out_idx);
        add_tmp = false;
        if ((st = es_vk_begin(vk, err)) != ES_OK) return st;
    }
    /* the last residual add and the output norm (every row: the residual stream is not needed after
     * this pass), then only the rows that want logits through the output matrix */
    if (st == ES_OK) st = es_vk_rmsnorm(vk, b->xb, b->x, add_tmp ? b->tmp : NULL, b->output_norm, p->n, hp->n_embd, hp->rms_eps, err);
    const void *lg = NULL, *hf = NULL;
    const bool final_exit = next_exit < p->n_exit && p->exit_layer[next_exit] == hp->n_layer && p->n_out > 0;
    if (st == ES_OK && final_exit) { /* the final residual stream of the wanted rows */
        st = es_vk_rows(vk, b->xh, b->x, b->out_rows, p->n_out, hp->n_embd, false, err);
        if (st == ES_OK) st = es_vk_readback(vk, b->xh, 0, xh_bytes, &hf, err);
    }
    const size_t lg_bytes = (size_t)p->n_out * hp->n_vocab * 4;
    if (st == ES_OK && p->n_out > 0) {
        st = es_vk_rows(vk, b->xl, b->xb, b->out_rows, p->n_out, hp->n_embd, false, err);
        if (st == ES_OK) st = mm(b, b->logits_d, &b->output, b->xl, p->n_out, err);
        if (st == ES_OK) st = es_vk_readback(vk, b->logits_d, 0, lg_bytes, &lg, err);
    }
    es_status sub = es_vk_submit(vk, err); /* ends the recording even after a failed record */
    if (st != ES_OK) return st;
    if (sub != ES_OK) return sub;
    if (lg) memcpy(b->logits, lg, lg_bytes); /* the ring is reused by the next recording (es_seq_keep's too) */
    if (hf) {
        memcpy(b->xh_host, hf, xh_bytes);
        p->exit_fn(p->exit_ud, hp->n_layer, b->xh_host, p->n_out, p->out_idx);
    }
    return ES_OK;
}

static const float *vk_logits(const es_backend *be, int r) {
    const vk_be *b = (const vk_be *)be;
    return b->logits + (size_t)r * b->model->hp.n_vocab;
}

static es_status vk_kv_move(es_backend *be, const int32_t *src, const int32_t *dst, int n, es_err *err) {
    vk_be *b = (vk_be *)be;
    const es_hparams *hp = &b->model->hp;
    const size_t row = (size_t)hp->n_head_kv * hp->head_dim * (b->kv_f16 ? 2 : 4);
    es_status st = es_vk_begin(b->vk, err);
    if (st != ES_OK) return st;
    /* one copy per row and layer, in order: a row moved later may be the source of an earlier move */
    for (int k = 0; k < n && st == ES_OK; k++)
        for (int l = 0; l < hp->n_layer && st == ES_OK; l++) {
            st = es_vk_copy(b->vk, b->L[l].k_cache, (size_t)dst[k] * row, b->L[l].k_cache, (size_t)src[k] * row, row, err);
            if (st == ES_OK)
                st = es_vk_copy(b->vk, b->L[l].v_cache, (size_t)dst[k] * row, b->L[l].v_cache, (size_t)src[k] * row, row, err);
        }
    es_status sub = es_vk_submit(b->vk, err);
    return st != ES_OK ? st : sub;
}

static double vk_worker_cpu_seconds(es_backend *be) {
    (void)be;
    return 0;
}

static const es_backend_ops vk_ops = {"vulkan", vk_forward, vk_logits, vk_kv_move, vk_worker_cpu_seconds, vk_be_free};

es_status es_backend_vulkan_init(const es_model *model, es_kv *kv, const es_ctx_params *p, es_backend **out,
                                 es_err *err) {
    *out = NULL;
    const es_hparams *hp = &model->hp;
    if (hp->head_dim > ES_VK_ATTN_MAX_HEAD_DIM)
        return es_fail(err, ES_ERR_UNSUPPORTED, "vulkan: attention heads of %d dimensions (the device's kernel takes up to %d)",
                       hp->head_dim, ES_VK_ATTN_MAX_HEAD_DIM);
    vk_be *b = calloc(1, sizeof *b);
    if (!b) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    b->base.ops = &vk_ops;
    b->model = model;
    b->kv = kv;
    b->n_batch_max = p->n_batch_max;
    b->n_logits_max = p->n_logits_max;
    b->n_ctx = p->n_ctx;
    b->n_seq_max = p->n_seq_max;
    b->block_size = es_kv_block_size(kv);
    /* f16 rows as the host pool keeps them; q8_0 has no device kernel and is kept as f16 there (the
       nearest size the attention kernel reads) */
    b->kv_f16 = p->kv_type != ES_KV_F32 && hp->head_dim % 2 == 0;
    const int64_t per_seq = (p->n_ctx + b->block_size - 1) / b->block_size;
    b->tab_cap = (int64_t)(p->n_batch_max < p->n_seq_max ? p->n_batch_max : p->n_seq_max) * per_seq;
    b->anc_cap = ES_PLAN_ANC_CAP(p->n_batch_max);
    es_vk_params vp = {.device = p->device, .validation = p->device_validation, .on_message = p->device_message,
                       .ud = p->device_message_ud};
    es_status st;
    if ((st = es_vk_init(&vp, &b->vk, err)) != ES_OK) {
        vk_be_free(&b->base);
        return st;
    }
    b->part_max = (es_vk_info(b->vk)->max_storage_buffer_range - 3) & ~(int64_t)3; /* es_vk_buf_alloc rounds up to 4 */
    if (p->device_buffer_max > 0 && p->device_buffer_max < b->part_max) b->part_max = p->device_buffer_max;
    b->L = calloc((size_t)hp->n_layer, sizeof *b->L);
    if (!b->L) st = es_fail(err, ES_ERR_NOMEM, "out of memory");
    if (st == ES_OK) st = upload_weights(b, err);
    if (st == ES_OK) st = alloc_activations(b, err);
    if (st == ES_OK) { /* one pass's uploads and its logits, each piece 64-byte aligned */
        const size_t n = (size_t)p->n_batch_max, half = (size_t)hp->rope_dim / 2;
        const size_t ring = n * (size_t)hp->n_embd * 4 + 2 * n * half * 4 + n * 16 + (size_t)b->anc_cap * 4 +
                            (size_t)b->tab_cap * 4 + n * 4 + (size_t)p->n_logits_max * 4 +
                            (size_t)p->n_logits_max * (size_t)hp->n_vocab * 4 +
                            (size_t)p->n_logits_max * (size_t)hp->n_embd * 4 + 10 * 64; /* + early-exit rows */
        st = named(es_vk_ring_init(b->vk, ring, err), "transfer ring", err);
    }
    if (st != ES_OK) {
        vk_be_free(&b->base);
        return st;
    }
    *out = &b->base;
    return ES_OK;
}
