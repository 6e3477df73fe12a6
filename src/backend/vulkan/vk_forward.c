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
#include "backend/host_attn.h"
#include "backend/vulkan/vk_backend.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/threadpool.h"

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
    es_vk_buf *k_cache, *v_cache;    /* (kv rows, kv_dim) q8_0, f16 or f32 (vk_be.kv_q8, kv_f16) */
} dlayer;

/* One sub-batch: rows [r0, r0 + n) of the pass, with its own activations so that the device can run
 * one sub-batch while the host computes the other's attention (ES_HYBRID_ASYMMETRIC). A pass without
 * that split is one sub-batch of every row. */
typedef struct {
    es_vk_buf *x;          /* (n, n_embd) residual stream */
    es_vk_buf *xb;         /* (n, max(n_embd, q_dim)) normed input / attention output */
    es_vk_buf *q, *k, *v;  /* (n, q_dim), (n, kv_dim) */
    es_vk_buf *hb, *hb2;   /* (n, n_ff) */
    es_vk_buf *tmp;        /* (n, n_embd) projection output before the residual add */
    es_vk_buf *cs, *sn;    /* (n, rope_dim/2) */
    es_vk_buf *meta;       /* (n, 4) int: prefix_len, anc_off, anc_len (-1: attention on the host), table offset */
    es_vk_buf *cache_row;  /* (n) int: each row's device KV row (-1: a host-tier row, written by the host) */
    /* host-tier rows (two tiers only) */
    es_vk_buf *hidx;       /* (n) int: the sub-batch rows of host-tier sessions */
    es_vk_buf *hq, *hk, *hv; /* (n, q_dim), (n, kv_dim) those rows' q / k / v, gathered */
    es_vk_buf *hatt;       /* (n, q_dim) their attention output, from the host */
    es_vk_buf *down, *up;  /* host memory: q | k | v of the host rows; their attention output */
    int r0, n, n_host, ticket;
    bool add_tmp;          /* the next norm still has to add the last layer's output into x */
    int32_t *hgrp;         /* [n_batch_max] plan groups of host-tier rows in this sub-batch */
    int n_hgrp;
    int32_t *hrow_host;    /* [n_batch_max] hidx on the host (sub-batch rows) */
} vk_sb;

#define VK_SB_MAX 2

typedef struct vk_be {
    es_backend base;
    const es_model *model;
    es_kv *kv;              /* the block tables (not owned) */
    es_vk *vk;
    dlayer *L;
    es_vk_buf *output_norm;
    dmat output;
    int n_batch_max, n_logits_max, n_ctx, n_seq_max, block_size;
    bool kv_f16;            /* the cache rows are f16 (kv_type f16, or q8_0 where kv_q8 cannot), else f32 */
    bool kv_q8;             /* the cache rows are q8_0 (kv_type q8_0, kv_dim a multiple of 64) */
    size_t row_bytes;       /* one cache row of kv_dim values */
    int64_t tab_cap, anc_cap;
    int64_t part_max;       /* bytes of one weight buffer */

    vk_sb sb[VK_SB_MAX];
    int n_sb_alloc;         /* sub-batches with buffers: 2 with two tiers */
    es_vk_buf *xl;         /* (n_logits_max, n_embd) normed rows that want logits */
    es_vk_buf *xh;         /* (n_logits_max, n_embd) residual rows for an early-exit hook */
    es_vk_buf *logits_d;   /* (n_logits_max, n_vocab) */
    es_vk_buf *anc, *tab;  /* ancestor lists, block tables of the batch's sequences (device pages) */
    es_vk_buf *out_rows;   /* (n_logits_max) int: batch rows that want logits */

    /* host side, shapes of the whole batch */
    float *x_host, *cs_host, *sn_host, *inv_freq, *logits, *xh_host;
    int32_t *meta_host, *tab_host, *row_host, *seq_tab, *seq_max;

    /* two KV tiers (APEX): the device holds n_dev pages; dev_of maps a host page to its device page.
     * A page's rows are valid on the device (dev_of >= 0), in the host pool (host_ok), or in both: a
     * page the prefix cache shares is full and never written again, so its two copies stay equal; a
     * page being written is held by one sequence only (copy on write), whose tier gets the rows and
     * whose other copy is dropped or marked stale. Device-tier sequences read device copies, host-tier
     * ones host copies; what a pass needs is brought over before it (prepare_tiers). */
    bool tiered;
    int64_t n_dev, n_pages;
    int32_t *dev_of;       /* [kv pages] device page or -1 */
    uint8_t *host_ok;      /* [kv pages] the host pool's copy holds the page's rows */
    uint8_t *mark;         /* [kv pages] scratch: pages a device-tier sequence holds (mark_device_held) */
    int32_t *dev_free;     /* stack of free device pages */
    int64_t n_dev_free;
    uint8_t *tier;         /* [n_seq_max] es_kv_tier */
    int32_t *hrow_of;      /* [n_batch_max] a host-tier row's index among its sub-batch's host rows */
    uint8_t *seen;         /* [n_seq_max] scratch: sequences of the batch already prepared */
    int32_t *xfer_pages;   /* [kv pages] scratch: pages of one move */
    int32_t *given;        /* [kv pages] scratch: device copies device_copies gave */
    int32_t *freed;        /* [kv pages] pages freed whose device copy is still to drop (page_event) */
    int64_t n_freed;
    uint8_t *is_freed;     /* [kv pages] listed in freed */
    const void **xfer_ptr; /* [xfer_chunk * 2 * n_layer] readbacks of one chunk */
    int xfer_chunk;        /* pages per transfer recording */
    es_threadpool *tp;     /* the host's attention */
    float *att;            /* (threads, att_floats) its scratch */
    size_t att_floats;
    es_tier_info stats;
} vk_be;

static void sb_free(es_vk *vk, vk_sb *sb) {
    es_vk_buf *bufs[] = {sb->x, sb->xb, sb->q, sb->k, sb->v, sb->hb, sb->hb2, sb->tmp, sb->cs, sb->sn, sb->meta, sb->cache_row,
                         sb->hidx, sb->hq, sb->hk, sb->hv, sb->hatt, sb->down, sb->up};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) es_vk_buf_free(vk, bufs[i]);
    free(sb->hgrp);
    free(sb->hrow_host);
}

static void vk_be_free(es_backend *be) {
    vk_be *b = (vk_be *)be;
    if (!b) return;
    es_vk *vk = b->vk;
    if (vk) {
        es_err e = {{0}};
        (void)es_vk_async_wait(vk, &e); /* copies up may still be writing the caches freed below */
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
        for (int k = 0; k < VK_SB_MAX; k++) sb_free(vk, &b->sb[k]);
        es_vk_buf *bufs[] = {b->output_norm, b->xl, b->xh, b->logits_d, b->anc, b->tab, b->out_rows};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) es_vk_buf_free(vk, bufs[i]);
        es_vk_free(vk);
    }
    es_threadpool_free(b->tp);
    free(b->L);
    free(b->x_host); free(b->cs_host); free(b->sn_host); free(b->inv_freq); free(b->logits); free(b->xh_host);
    free(b->meta_host); free(b->tab_host); free(b->row_host); free(b->seq_tab); free(b->seq_max);
    free(b->dev_of); free(b->host_ok); free(b->mark); free(b->dev_free); free(b->tier); free(b->hrow_of); free(b->seen); free(b->xfer_pages); free(b->given); free(b->freed); free(b->is_freed); free(b->xfer_ptr);
    free(b->att);
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
    (void)kvd;
    const size_t cache = (size_t)(b->tiered ? b->n_dev : es_kv_blocks_total(b->kv)) * (size_t)b->block_size * b->row_bytes;
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

static es_status alloc_sb(vk_be *b, vk_sb *sb, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    const size_t n = (size_t)b->n_batch_max, d = (size_t)hp->n_embd;
    const size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim, ff = (size_t)hp->n_ff;
    const size_t half = (size_t)hp->rope_dim / 2, wide = qd > d ? qd : d;
    es_status st;
    if ((st = alloc(b, n * d * 4, &sb->x, "activations", err)) != ES_OK || (st = alloc(b, n * wide * 4, &sb->xb, "activations", err)) != ES_OK ||
        (st = alloc(b, n * qd * 4, &sb->q, "activations", err)) != ES_OK || (st = alloc(b, n * kvd * 4, &sb->k, "activations", err)) != ES_OK ||
        (st = alloc(b, n * kvd * 4, &sb->v, "activations", err)) != ES_OK || (st = alloc(b, n * ff * 4, &sb->hb, "activations", err)) != ES_OK ||
        (st = alloc(b, n * ff * 4, &sb->hb2, "activations", err)) != ES_OK || (st = alloc(b, n * d * 4, &sb->tmp, "activations", err)) != ES_OK ||
        (st = alloc(b, n * half * 4, &sb->cs, "rope table", err)) != ES_OK || (st = alloc(b, n * half * 4, &sb->sn, "rope table", err)) != ES_OK ||
        (st = alloc(b, n * 16, &sb->meta, "attention sets", err)) != ES_OK ||
        (st = alloc(b, n * 4, &sb->cache_row, "cache rows", err)) != ES_OK)
        return st;
    if (!b->tiered) return ES_OK;
    if ((st = alloc(b, n * 4, &sb->hidx, "host rows", err)) != ES_OK || (st = alloc(b, n * qd * 4, &sb->hq, "host rows", err)) != ES_OK ||
        (st = alloc(b, n * kvd * 4, &sb->hk, "host rows", err)) != ES_OK || (st = alloc(b, n * kvd * 4, &sb->hv, "host rows", err)) != ES_OK ||
        (st = alloc(b, n * qd * 4, &sb->hatt, "host rows", err)) != ES_OK ||
        (st = named(es_vk_buf_alloc_host(b->vk, n * (qd + 2 * kvd) * 4, &sb->down, err), "host exchange", err)) != ES_OK ||
        (st = named(es_vk_buf_alloc_host(b->vk, n * qd * 4, &sb->up, err), "host exchange", err)) != ES_OK)
        return st;
    sb->hgrp = malloc(n * sizeof(int32_t));
    sb->hrow_host = malloc(n * sizeof(int32_t));
    if (!sb->hgrp || !sb->hrow_host) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    return ES_OK;
}

static es_status alloc_activations(vk_be *b, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    const size_t n = (size_t)b->n_batch_max, nl = (size_t)b->n_logits_max, d = (size_t)hp->n_embd;
    const size_t half = (size_t)hp->rope_dim / 2;
    es_status st;
    for (int k = 0; k < b->n_sb_alloc; k++)
        if ((st = alloc_sb(b, &b->sb[k], err)) != ES_OK) return st;
    if ((st = alloc(b, nl * d * 4, &b->xl, "activations", err)) != ES_OK ||
        (st = alloc(b, nl * d * 4, &b->xh, "activations", err)) != ES_OK ||
        (st = alloc(b, nl * (size_t)hp->n_vocab * 4, &b->logits_d, "logits", err)) != ES_OK ||
        (st = alloc(b, (size_t)b->anc_cap * 4, &b->anc, "ancestor lists", err)) != ES_OK ||
        (st = alloc(b, (size_t)b->tab_cap * 4, &b->tab, "block tables", err)) != ES_OK ||
        (st = alloc(b, nl * 4, &b->out_rows, "logit rows", err)) != ES_OK)
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

/* ---- two KV tiers ------------------------------------------------------------------------------ */

/* A host page's device copy goes back to the free device pages. */
static void dev_drop(vk_be *b, int32_t page) {
    const int32_t d = b->dev_of[page];
    if (d < 0) return;
    b->dev_free[b->n_dev_free++] = d;
    b->dev_of[page] = -1;
}

/* The pool took a page for new rows: whatever either tier held for it is stale. It freed one: the
 * device copy goes once the operation that freed it is over, since es_seq_keep frees the pages past
 * the kept path before the device moves rows out of them (flush_freed). */
static void page_event(void *ud, int32_t page, es_kv_page_event ev) {
    vk_be *b = ud;
    if (ev == ES_KV_PAGE_TAKEN) {
        dev_drop(b, page);
        b->host_ok[page] = 0;
    } else if (b->dev_of[page] >= 0 && !b->is_freed[page]) { /* listed once: at most every page */
        b->is_freed[page] = 1;
        b->freed[b->n_freed++] = page;
    }
}

static void flush_freed(vk_be *b) {
    for (int64_t k = 0; k < b->n_freed; k++) {
        dev_drop(b, b->freed[k]); /* (a page taken since was dropped then) */
        b->is_freed[b->freed[k]] = 0;
    }
    b->n_freed = 0;
}

/* Copies whole pages between the tiers (K and V of every layer): up, host rows into device page
 * dev_of[p]; or down, after which the host copies hold the rows. Up is asynchronous: the rows are
 * staged and their copy submitted without waiting (the next pass is ordered after it, es_vk_begin),
 * so the host goes on to record that pass while the device copies; the host copy stays valid, so
 * nothing on the host waits for it. Down is waited for (the host reads the rows next), in recordings
 * of xfer_chunk pages, which the transfer ring holds. */
static es_status xfer(vk_be *b, const int32_t *pages, int n, bool up, es_err *err) {
    const int nl = b->model->hp.n_layer;
    const size_t bytes = (size_t)b->block_size * es_kv_row_bytes(b->kv);
    if (up) {
        es_status st = ES_OK;
        for (int k = 0; k < n && st == ES_OK; k++) {
            const int32_t pg = pages[k];
            const size_t off = (size_t)b->dev_of[pg] * bytes;
            for (int l = 0; l < nl && st == ES_OK; l++) {
                st = es_vk_async_upload(b->vk, b->L[l].k_cache, off, es_kv_page_k(b->kv, pg, l), bytes, err);
                if (st == ES_OK) st = es_vk_async_upload(b->vk, b->L[l].v_cache, off, es_kv_page_v(b->kv, pg, l), bytes, err);
            }
        }
        if (st == ES_OK) st = es_vk_async_submit(b->vk, err);
        if (st == ES_OK) b->stats.pages_moved += n;
        return st;
    }
    for (int at = 0; at < n; at += b->xfer_chunk) {
        const int m = n - at < b->xfer_chunk ? n - at : b->xfer_chunk;
        es_status st = es_vk_begin(b->vk, err);
        if (st != ES_OK) return st;
        for (int k = 0; k < m && st == ES_OK; k++) {
            const int32_t pg = pages[at + k];
            const size_t off = (size_t)b->dev_of[pg] * bytes;
            for (int l = 0; l < nl && st == ES_OK; l++) {
                const void **ptr = b->xfer_ptr + ((size_t)k * nl + l) * 2;
                st = es_vk_readback(b->vk, b->L[l].k_cache, off, bytes, &ptr[0], err);
                if (st == ES_OK) st = es_vk_readback(b->vk, b->L[l].v_cache, off, bytes, &ptr[1], err);
            }
        }
        const es_status sub = es_vk_submit(b->vk, err);
        if (st != ES_OK) return st;
        if (sub != ES_OK) return sub;
        for (int k = 0; k < m; k++) {
            for (int l = 0; l < nl; l++) {
                const void **ptr = b->xfer_ptr + ((size_t)k * nl + l) * 2;
                memcpy(es_kv_page_k(b->kv, pages[at + k], l), ptr[0], bytes);
                memcpy(es_kv_page_v(b->kv, pages[at + k], l), ptr[1], bytes);
            }
            b->host_ok[pages[at + k]] = 1;
        }
    }
    b->stats.pages_moved += n;
    return ES_OK;
}

/* b->mark: the pages device-tier sequences hold (every one but `skip`, -1: none). */
static void mark_device_held(vk_be *b, int skip) {
    memset(b->mark, 0, (size_t)b->n_pages);
    for (int s = 0; s < b->n_seq_max; s++) {
        if (s == skip || b->tier[s] != ES_KV_TIER_DEVICE || !es_kv_seq_valid(b->kv, s)) continue;
        const int nb = es_kv_seq_n_blocks(b->kv, s);
        const int32_t *tab = es_kv_seq_blocks(b->kv, s);
        for (int k = 0; k < nb; k++) b->mark[tab[k]] = 1;
    }
}

/* At least `need` free device pages: device copies no device-tier sequence holds (prefix-cache pages
 * nobody uses now, shared pages a sequence took to the host tier) give theirs back — those the host
 * pool holds too first, the others after they were brought down (nothing is lost). `also`: a
 * sequence whose pages are kept as well (-1: none). ES_ERR_FULL when the rest is all in use. */
static es_status make_dev_room(vk_be *b, int64_t need, int also, es_err *err) {
    if (b->n_dev_free >= need) return ES_OK;
    mark_device_held(b, -1);
    if (also >= 0) {
        const int nb = es_kv_seq_n_blocks(b->kv, also);
        const int32_t *tab = es_kv_seq_blocks(b->kv, also);
        for (int k = 0; k < nb; k++) b->mark[tab[k]] = 1;
    }
    /* (pages freed by the operation under way keep their copies until it is over: flush_freed) */
    for (int64_t pg = 0; pg < b->n_pages && b->n_dev_free < need; pg++)
        if (b->dev_of[pg] >= 0 && !b->mark[pg] && !b->is_freed[pg] && b->host_ok[pg]) {
            dev_drop(b, (int32_t)pg);
            b->stats.device_evictions++;
        }
    int n = 0;
    for (int64_t pg = 0; pg < b->n_pages && b->n_dev_free + n < need; pg++)
        if (b->dev_of[pg] >= 0 && !b->mark[pg] && !b->is_freed[pg]) b->xfer_pages[n++] = (int32_t)pg;
    if (n > 0) {
        const es_status st = xfer(b, b->xfer_pages, n, false, err);
        if (st != ES_OK) return st;
        for (int k = 0; k < n; k++) dev_drop(b, b->xfer_pages[k]);
        b->stats.device_evictions += n;
    }
    if (b->n_dev_free >= need) return ES_OK;
    return es_fail(err, ES_ERR_FULL, "device KV tier full: %lld pages needed, %lld of %lld free", (long long)need,
                   (long long)b->n_dev_free, (long long)b->n_dev);
}

/* The pages of seq valid only on the device come down (a host-tier sequence reads host copies). */
static es_status host_copies(vk_be *b, int seq, es_err *err) {
    const int nb = es_kv_seq_n_blocks(b->kv, seq);
    const int32_t *tab = es_kv_seq_blocks(b->kv, seq);
    int n = 0;
    for (int k = 0; k < nb; k++)
        if (!b->host_ok[tab[k]] && b->dev_of[tab[k]] >= 0) b->xfer_pages[n++] = tab[k];
    return n ? xfer(b, b->xfer_pages, n, false, err) : ES_OK;
}

/* Every page of seq gets a device copy (rows the host pool holds go up; a page with rows nowhere yet
 * is new: nothing to copy). ES_ERR_FULL, nothing changed, when the device cannot make room. */
static es_status device_copies(vk_be *b, int seq, es_err *err) {
    const int nb = es_kv_seq_n_blocks(b->kv, seq);
    const int32_t *tab = es_kv_seq_blocks(b->kv, seq);
    int need = 0;
    for (int k = 0; k < nb; k++) need += b->dev_of[tab[k]] < 0;
    if (need == 0) return ES_OK;
    es_status st = make_dev_room(b, need, seq, err);
    if (st != ES_OK) return st;
    int n = 0, n_given = 0;
    for (int k = 0; k < nb; k++) {
        if (b->dev_of[tab[k]] >= 0) continue;
        b->dev_of[tab[k]] = b->dev_free[--b->n_dev_free];
        b->given[n_given++] = tab[k];
        if (b->host_ok[tab[k]]) b->xfer_pages[n++] = tab[k];
    }
    st = n ? xfer(b, b->xfer_pages, n, true, err) : ES_OK;
    if (st != ES_OK) /* the copies just given hold nothing: back */
        for (int k = 0; k < n_given; k++) dev_drop(b, b->given[k]);
    return st;
}

/* Device tier → host tier: rows only the device holds come down; device copies no other device-tier
 * sequence uses are freed. */
static es_status to_host(vk_be *b, int seq, es_err *err) {
    const es_status st = host_copies(b, seq, err);
    if (st != ES_OK) return st; /* still whole in the device tier */
    const int nb = es_kv_seq_n_blocks(b->kv, seq);
    const int32_t *tab = es_kv_seq_blocks(b->kv, seq);
    mark_device_held(b, seq);
    for (int k = 0; k < nb; k++)
        if (!b->mark[tab[k]]) dev_drop(b, tab[k]);
    b->tier[seq] = ES_KV_TIER_HOST;
    b->stats.moves_to_host++;
    return ES_OK;
}

/* Host tier → device tier: a device copy of each of its pages. */
static es_status to_device(vk_be *b, int seq, es_err *err) {
    const es_status st = device_copies(b, seq, err);
    if (st != ES_OK) return st;
    b->tier[seq] = ES_KV_TIER_DEVICE;
    b->stats.moves_to_device++;
    return ES_OK;
}

/* Before a pass: host-tier sequences of the batch get host copies of their pages, device-tier ones
 * device copies (one that finds no room moves to the host tier); then the pages the pass writes keep
 * only the writer's tier's copy. */
static es_status prepare_tiers(vk_be *b, const es_fwd_plan *p, es_err *err) {
    flush_freed(b);
    es_status st = ES_OK;
    for (int i = 0; i < p->n && st == ES_OK; i++) {
        const int seq = p->b->seq[i];
        if (b->seen[seq]) continue;
        b->seen[seq] = 1;
        if (b->tier[seq] == ES_KV_TIER_HOST) {
            st = host_copies(b, seq, err);
        } else if ((st = device_copies(b, seq, err)) == ES_ERR_FULL && (st = to_host(b, seq, err)) == ES_OK) {
            b->stats.auto_to_host++;
        }
    }
    for (int i = 0; i < p->n; i++) b->seen[p->b->seq[i]] = 0;
    if (st != ES_OK) return st;
    const int bs = b->block_size;
    for (int i = 0; i < p->n; i++) {
        const int seq = p->b->seq[i];
        const int32_t pg = es_kv_seq_blocks(b->kv, seq)[p->slot[i] / bs];
        if (b->tier[seq] == ES_KV_TIER_HOST) {
            dev_drop(b, pg);
            b->host_ok[pg] = 1;
        } else {
            b->host_ok[pg] = 0;
        }
    }
    return ES_OK;
}

static es_status vk_set_tier(es_backend *be, int seq, es_kv_tier tier, es_err *err) {
    vk_be *b = (vk_be *)be;
    if (seq < 0 || seq >= b->n_seq_max) return es_fail(err, ES_ERR_INVALID_ARG, "sequence %d out of range", seq);
    if (b->tier[seq] == tier) return ES_OK;
    flush_freed(b);
    return tier == ES_KV_TIER_HOST ? to_host(b, seq, err) : to_device(b, seq, err);
}

static es_kv_tier vk_tier(const es_backend *be, int seq) {
    const vk_be *b = (const vk_be *)be;
    return seq >= 0 && seq < b->n_seq_max ? (es_kv_tier)b->tier[seq] : ES_KV_TIER_DEVICE;
}

static void vk_seq_reset(es_backend *be, int seq) {
    vk_be *b = (vk_be *)be;
    if (seq >= 0 && seq < b->n_seq_max) b->tier[seq] = ES_KV_TIER_DEVICE; /* its pages were freed (page_event) */
    flush_freed(b);
}

static void vk_tier_info(const es_backend *be, es_tier_info *out) {
    vk_be *b = (vk_be *)be; /* (mark is scratch) */
    *out = b->stats;
    out->tiered = true;
    out->device_blocks_total = b->n_dev;
    out->device_blocks_used = b->n_dev - b->n_dev_free;
    out->device_blocks_cached = 0;
    es_prefix_cache_info pc;
    es_kv_prefix_stats(b->kv, &pc);
    if (pc.enabled) { /* (without the cache every page has one holder, and a move drops its device copies) */
        mark_device_held(b, -1);
        for (int64_t pg = 0; pg < b->n_pages; pg++) out->device_blocks_cached += b->dev_of[pg] >= 0 && !b->mark[pg];
    }
    out->host_seqs = 0;
    for (int s = 0; s < b->n_seq_max; s++) out->host_seqs += es_kv_seq_valid(b->kv, s) && b->tier[s] == ES_KV_TIER_HOST;
    es_vk_async_stats(b->vk, &out->xfer_async, &out->xfer_waits);
}

/* ---- the forward pass ------------------------------------------------------------------------- */

static bool host_row(const vk_be *b, const es_fwd_plan *p, int i) { return b->tiered && b->tier[p->b->seq[i]] == ES_KV_TIER_HOST; }

/* The sub-batches of a pass: one, or (ES_HYBRID_ASYMMETRIC with host-tier rows) two split between
 * whole sequences where the host rows are closest to half and half. */
static int split(vk_be *b, const es_fwd_plan *p, int n_host) {
    b->sb[0].r0 = 0;
    b->sb[0].n = p->n;
    if (n_host == 0 || p->hybrid != ES_HYBRID_ASYMMETRIC || p->n_exit > 0 || b->n_sb_alloc < 2) return 1;
    /* seq_max as scratch: the last row of each sequence */
    for (int i = 0; i < p->n; i++) b->seq_max[p->b->seq[i]] = i;
    int best = -1, best_diff = 0, host_before = 0, reach = -1;
    for (int r = 1; r < p->n; r++) {
        host_before += host_row(b, p, r - 1);
        const int last = b->seq_max[p->b->seq[r - 1]];
        if (last > reach) reach = last;
        if (reach >= r) continue; /* a sequence of rows before r goes on past it */
        const int diff = abs(2 * host_before - n_host);
        if (best < 0 || diff < best_diff) best = r, best_diff = diff;
    }
    for (int i = 0; i < p->n; i++) b->seq_max[p->b->seq[i]] = -1;
    if (best < 0) return 1;
    b->sb[0].n = best;
    b->sb[1].r0 = best;
    b->sb[1].n = p->n - best;
    return 2;
}

/* Fills the per-pass host data — embeddings, RoPE tables, attention sets, block tables (device pages
 * for device-tier sequences), cache rows of the new K / V, logit rows, host-tier rows and groups — and
 * records its upload at the start of the pass's command buffer. */
static es_status stage(vk_be *b, const es_fwd_plan *p, int n_sb, es_err *err) {
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
        const bool host = host_row(b, p, i);
        if (b->seq_tab[seq] < 0) {
            const int nblk = b->seq_max[seq] / bs + 1;
            if (tab_used + nblk > b->tab_cap) { /* cannot happen: at most min(n, n_seq_max) tables of n_ctx slots */
                for (int k = 0; k < n; k++) b->seq_tab[p->b->seq[k]] = b->seq_max[p->b->seq[k]] = -1;
                return es_fail(err, ES_ERR_INTERNAL, "vulkan: block tables overflow");
            }
            const int32_t *t = es_kv_seq_blocks(b->kv, seq);
            for (int k = 0; k < nblk; k++) /* the device's pages (a host-tier table is never read there) */
                b->tab_host[tab_used + k] = !b->tiered ? t[k] : host ? 0 : b->dev_of[t[k]];
            b->seq_tab[seq] = (int32_t)tab_used;
            tab_used += nblk;
        }
        const int32_t *t = b->tab_host + b->seq_tab[seq];
        b->meta_host[4 * i] = p->prefix_len[i];
        b->meta_host[4 * i + 1] = p->anc_off[i];
        b->meta_host[4 * i + 2] = host ? -1 : p->anc_len[i];
        b->meta_host[4 * i + 3] = b->seq_tab[seq];
        b->row_host[i] = host ? -1 : t[p->slot[i] / bs] * bs + p->slot[i] % bs;
    }
    for (int i = 0; i < n; i++) b->seq_tab[p->b->seq[i]] = b->seq_max[p->b->seq[i]] = -1;
    const int64_t anc_used = p->anc_off[n - 1] + p->anc_len[n - 1];
    es_vk *vk = b->vk;
    es_status st;
    if ((st = es_vk_upload(vk, b->anc, 0, p->anc, (size_t)anc_used * 4, err)) != ES_OK ||
        (st = es_vk_upload(vk, b->tab, 0, b->tab_host, (size_t)tab_used * 4, err)) != ES_OK ||
        (p->n_out > 0 && (st = es_vk_upload(vk, b->out_rows, 0, p->out_idx, (size_t)p->n_out * 4, err)) != ES_OK))
        return st;
    for (int s = 0; s < n_sb; s++) {
        vk_sb *sb = &b->sb[s];
        const size_t r0 = (size_t)sb->r0, rn = (size_t)sb->n;
        if ((st = es_vk_upload(vk, sb->x, 0, b->x_host + r0 * d, rn * d * 4, err)) != ES_OK ||
            (st = es_vk_upload(vk, sb->cs, 0, b->cs_host + r0 * half, rn * half * 4, err)) != ES_OK ||
            (st = es_vk_upload(vk, sb->sn, 0, b->sn_host + r0 * half, rn * half * 4, err)) != ES_OK ||
            (st = es_vk_upload(vk, sb->meta, 0, b->meta_host + r0 * 4, rn * 16, err)) != ES_OK ||
            (st = es_vk_upload(vk, sb->cache_row, 0, b->row_host + r0, rn * 4, err)) != ES_OK)
            return st;
        sb->add_tmp = false;
        sb->n_host = sb->n_hgrp = 0;
        if (!b->tiered) continue;
        for (int i = sb->r0; i < sb->r0 + sb->n; i++)
            if (host_row(b, p, i)) {
                b->hrow_of[i] = sb->n_host;
                sb->hrow_host[sb->n_host++] = i - sb->r0;
            }
        for (int g = 0; g < p->n_grp; g++)
            if (p->grp_start[g] >= sb->r0 && p->grp_start[g] < sb->r0 + sb->n && host_row(b, p, p->grp_start[g])) sb->hgrp[sb->n_hgrp++] = g;
        if (sb->n_host && (st = es_vk_upload(vk, sb->hidx, 0, sb->hrow_host, (size_t)sb->n_host * 4, err)) != ES_OK) return st;
    }
    return ES_OK;
}

static es_status mm(vk_be *b, es_vk_buf *y, const dmat *w, es_vk_buf *x, int64_t n, es_err *err) {
    es_status st = ES_OK;
    for (int k = 0; k < w->n_parts && st == ES_OK; k++)
        st = es_vk_matmul_part(b->vk, y, w->rows, w->row0[k], w->buf[k], 0, w->type, w->rows_of[k], w->cols, x, n, err);
    return st;
}

/* A layer up to its attention, recorded: the same steps in the same order as the CPU backend. The
 * host-tier rows' q, k and v are gathered and copied to host memory. */
static es_status pre_attention(vk_be *b, vk_sb *sb, const dlayer *L, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    es_vk *vk = b->vk;
    const int hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;
    const int64_t n = sb->n;
    es_status st;
    /* x += (previous layer's FFN output); xb = attn_norm(x) */
    if ((st = es_vk_rmsnorm(vk, sb->xb, sb->x, sb->add_tmp ? sb->tmp : NULL, L->attn_norm, n, hp->n_embd, hp->rms_eps, err)) != ES_OK ||
        (st = mm(b, sb->q, &L->wq, sb->xb, n, err)) != ES_OK || (st = mm(b, sb->k, &L->wk, sb->xb, n, err)) != ES_OK ||
        (st = mm(b, sb->v, &L->wv, sb->xb, n, err)) != ES_OK)
        return st;
    sb->add_tmp = true;
    if ((L->bq && (st = es_vk_bias(vk, sb->q, L->bq, n, qd, err)) != ES_OK) ||
        (L->bk && (st = es_vk_bias(vk, sb->k, L->bk, n, kvd, err)) != ES_OK) ||
        (L->bv && (st = es_vk_bias(vk, sb->v, L->bv, n, kvd, err)) != ES_OK))
        return st;
    /* qwen3: every head of q and k normed on its own (rows of head_dim, in place), before RoPE */
    if ((L->q_norm && (st = es_vk_rmsnorm(vk, sb->q, sb->q, NULL, L->q_norm, n * hp->n_head, hd, hp->rms_eps, err)) != ES_OK) ||
        (L->k_norm && (st = es_vk_rmsnorm(vk, sb->k, sb->k, NULL, L->k_norm, n * hp->n_head_kv, hd, hp->rms_eps, err)) != ES_OK))
        return st;
    if ((st = es_vk_rope(vk, sb->q, sb->cs, sb->sn, n, hp->n_head, hd, hp->rope_dim, hp->rope_neox, qd, err)) != ES_OK ||
        (st = es_vk_rope(vk, sb->k, sb->cs, sb->sn, n, hp->n_head_kv, hd, hp->rope_dim, hp->rope_neox, kvd, err)) != ES_OK ||
        (st = (b->kv_q8 ? es_vk_rows_q8(vk, L->k_cache, sb->k, sb->cache_row, n, kvd, err)
               : b->kv_f16 ? es_vk_rows_f16(vk, L->k_cache, sb->k, sb->cache_row, n, kvd, err)
                         : es_vk_rows(vk, L->k_cache, sb->k, sb->cache_row, n, kvd, true, err))) != ES_OK ||
        (st = (b->kv_q8 ? es_vk_rows_q8(vk, L->v_cache, sb->v, sb->cache_row, n, kvd, err)
               : b->kv_f16 ? es_vk_rows_f16(vk, L->v_cache, sb->v, sb->cache_row, n, kvd, err)
                         : es_vk_rows(vk, L->v_cache, sb->v, sb->cache_row, n, kvd, true, err))) != ES_OK)
        return st;
    if (sb->n_host == 0) return ES_OK;
    const size_t nh = (size_t)sb->n_host;
    if ((st = es_vk_rows(vk, sb->hq, sb->q, sb->hidx, sb->n_host, qd, false, err)) != ES_OK ||
        (st = es_vk_rows(vk, sb->hk, sb->k, sb->hidx, sb->n_host, kvd, false, err)) != ES_OK ||
        (st = es_vk_rows(vk, sb->hv, sb->v, sb->hidx, sb->n_host, kvd, false, err)) != ES_OK ||
        (st = es_vk_copy_to_host(vk, sb->down, 0, sb->hq, 0, nh * qd * 4, err)) != ES_OK ||
        (st = es_vk_copy_to_host(vk, sb->down, nh * qd * 4, sb->hk, 0, nh * kvd * 4, err)) != ES_OK ||
        (st = es_vk_copy_to_host(vk, sb->down, nh * (qd + kvd) * 4, sb->hv, 0, nh * kvd * 4, err)) != ES_OK)
        return st;
    return ES_OK;
}

/* The device-tier rows' attention (host-tier rows are skipped by the kernel: anc_len -1). */
static es_status device_attention(vk_be *b, vk_sb *sb, const dlayer *L, es_err *err) {
    if (sb->n_host == sb->n) return ES_OK;
    const es_hparams *hp = &b->model->hp;
    const es_vk_attn_args a = {.out = sb->xb, .q = sb->q, .k_cache = L->k_cache, .v_cache = L->v_cache, .meta = sb->meta,
                               .anc = b->anc, .tab = b->tab, .n = sb->n,
                               .n_head = hp->n_head, .n_head_kv = hp->n_head_kv, .head_dim = hp->head_dim,
                               .block_size = b->block_size, .scale = 1.0f / sqrtf((float)hp->head_dim), .kv_f16 = b->kv_f16,
                               .kv_q8 = b->kv_q8};
    return es_vk_attention(b->vk, &a, err);
}

/* The host-tier rows' K / V into the host pool and their attention on this machine's cores, once the
 * device has copied their q / k / v down. */
static es_status host_attention(vk_be *b, const es_fwd_plan *p, vk_sb *sb, int il, es_err *err) {
    es_status st = es_vk_wait(b->vk, sb->ticket, err);
    if (st != ES_OK) return st;
    const double t0 = es_now_s();
    const es_hparams *hp = &b->model->hp;
    const int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
    const float *down = es_vk_buf_map(sb->down);
    const float *hk = down + (size_t)sb->n_host * qd, *hv = hk + (size_t)sb->n_host * kvd;
    for (int j = 0; j < sb->n_host; j++) {
        const int i = sb->r0 + sb->hrow_host[j];
        es_kv_store(b->kv, p->b->seq[i], il, p->slot[i], hk + (size_t)j * kvd, hv + (size_t)j * kvd);
    }
    es_host_attn at = {.kv = b->kv, .p = p, .layer = il, .n_head = hp->n_head, .n_head_kv = hp->n_head_kv,
                       .head_dim = hp->head_dim, .grp = sb->hgrp, .n_grp = sb->n_hgrp, .q = down,
                       .out = es_vk_buf_map(sb->up), .row = b->hrow_of, .scratch = b->att, .scratch_floats = b->att_floats};
    es_host_attention(b->tp, &at);
    b->stats.host_attn_seconds += es_now_s() - t0; /* (the scheduler's start-up profile reads it) */
    return ES_OK;
}

/* The rest of a layer: the host's attention rows join the device's, then the output projection and
 * the FFN. */
static es_status post_attention(vk_be *b, vk_sb *sb, const dlayer *L, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    es_vk *vk = b->vk;
    const int qd = hp->n_head * hp->head_dim;
    const int64_t n = sb->n;
    es_status st;
    if (sb->n_host > 0 &&
        ((st = es_vk_copy(vk, sb->hatt, 0, sb->up, 0, (size_t)sb->n_host * qd * 4, err)) != ES_OK ||
         (st = es_vk_rows(vk, sb->xb, sb->hatt, sb->hidx, sb->n_host, qd, true, err)) != ES_OK))
        return st;
    if ((st = mm(b, sb->tmp, &L->wo, sb->xb, n, err)) != ES_OK ||
        /* x += attention output; xb = ffn_norm(x) */
        (st = es_vk_rmsnorm(vk, sb->xb, sb->x, sb->tmp, L->ffn_norm, n, hp->n_embd, hp->rms_eps, err)) != ES_OK ||
        (st = mm(b, sb->hb, &L->w1, sb->xb, n, err)) != ES_OK || (st = mm(b, sb->hb2, &L->w3, sb->xb, n, err)) != ES_OK ||
        (st = es_vk_swiglu(vk, sb->hb, sb->hb2, n * hp->n_ff, err)) != ES_OK)
        return st;
    return mm(b, sb->tmp, &L->w2, sb->hb, n, err);
}

/* Records a layer's start for a sub-batch; with host-tier rows, submits it (the host waits for its
 * q / k / v) and then the device's attention, so the device runs while the host computes. */
static es_status begin_layer(vk_be *b, vk_sb *sb, const dlayer *L, es_err *err) {
    es_status st = pre_attention(b, sb, L, err);
    if (st == ES_OK && sb->n_host > 0) st = es_vk_flush(b->vk, &sb->ticket, err);
    if (st == ES_OK) st = device_attention(b, sb, L, err);
    int t;
    if (st == ES_OK && sb->n_host > 0) st = es_vk_flush(b->vk, &t, err);
    return st;
}

/* An early exit after a layer (one sub-batch): add the layer's output into x now (the norm's output
 * is not used), read the wanted rows back, run what is recorded, hand them over, record the rest. */
static es_status early_exit(vk_be *b, const es_fwd_plan *p, int layer, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    es_vk *vk = b->vk;
    vk_sb *sb = &b->sb[0];
    const size_t xh_bytes = (size_t)p->n_out * hp->n_embd * 4;
    const void *h = NULL;
    es_status st = es_vk_rmsnorm(vk, sb->xb, sb->x, sb->tmp, b->output_norm, p->n, hp->n_embd, hp->rms_eps, err);
    if (st == ES_OK) st = es_vk_rows(vk, b->xh, sb->x, b->out_rows, p->n_out, hp->n_embd, false, err);
    if (st == ES_OK) st = es_vk_readback(vk, b->xh, 0, xh_bytes, &h, err);
    es_status sub = es_vk_submit(vk, err);
    if (st == ES_OK) st = sub;
    if (st != ES_OK) return st;
    memcpy(b->xh_host, h, xh_bytes);
    p->exit_fn(p->exit_ud, layer, b->xh_host, p->n_out, p->out_idx);
    sb->add_tmp = false;
    return es_vk_begin(vk, err);
}

static es_status run_layers(vk_be *b, const es_fwd_plan *p, int n_sb, es_err *err) {
    const int nl = b->model->hp.n_layer;
    es_status st = ES_OK;
    int next_exit = 0;
    for (int s = 0; s < n_sb && st == ES_OK; s++) st = begin_layer(b, &b->sb[s], &b->L[0], err);
    for (int il = 0; il < nl && st == ES_OK; il++)
        for (int s = 0; s < n_sb && st == ES_OK; s++) {
            vk_sb *sb = &b->sb[s];
            if (sb->n_host > 0 && (st = host_attention(b, p, sb, il, err)) != ES_OK) break;
            if ((st = post_attention(b, sb, &b->L[il], err)) != ES_OK) break;
            if (next_exit < p->n_exit && p->exit_layer[next_exit] == il + 1 && il + 1 < nl) {
                next_exit++;
                if (p->n_out > 0 && (st = early_exit(b, p, il + 1, err)) != ES_OK) break;
            }
            if (il + 1 < nl) st = begin_layer(b, sb, &b->L[il + 1], err);
            else if (s > 0) { /* the last layer: the second sub-batch's rows join the first's for the output */
                const size_t d4 = (size_t)b->model->hp.n_embd * 4;
                st = es_vk_copy(b->vk, b->sb[0].x, (size_t)sb->r0 * d4, sb->x, 0, (size_t)sb->n * d4, err);
                if (st == ES_OK) st = es_vk_copy(b->vk, b->sb[0].tmp, (size_t)sb->r0 * d4, sb->tmp, 0, (size_t)sb->n * d4, err);
            }
        }
    return st;
}

static es_status vk_forward(es_backend *be, const es_fwd_plan *p, es_err *err) {
    vk_be *b = (vk_be *)be;
    const es_hparams *hp = &b->model->hp;
    es_vk *vk = b->vk;
    es_status st;
    int n_host = 0;
    if (b->tiered) {
        if ((st = prepare_tiers(b, p, err)) != ES_OK) return st;
        for (int i = 0; i < p->n; i++) n_host += host_row(b, p, i);
    }
    const int n_sb = split(b, p, n_host);
    if (n_host > 0) b->stats.hybrid_passes[n_sb == 2 ? ES_HYBRID_ASYMMETRIC : ES_HYBRID_ASYNC_OVERLAP]++;
    if ((st = es_vk_begin(vk, err)) != ES_OK) return st;
    st = stage(b, p, n_sb, err);
    if (st == ES_OK) st = run_layers(b, p, n_sb, err);
    vk_sb *sb = &b->sb[0];
    sb->r0 = 0;
    sb->n = p->n;
    /* the last residual add and the output norm (every row: the residual stream is not needed after
     * this pass), then only the rows that want logits through the output matrix */
    if (st == ES_OK) st = es_vk_rmsnorm(vk, sb->xb, sb->x, sb->add_tmp ? sb->tmp : NULL, b->output_norm, p->n, hp->n_embd, hp->rms_eps, err);
    const void *lg = NULL, *hf = NULL;
    const size_t xh_bytes = (size_t)p->n_out * hp->n_embd * 4;
    const bool final_exit = p->n_exit > 0 && p->exit_layer[p->n_exit - 1] == hp->n_layer && p->n_out > 0;
    if (st == ES_OK && final_exit) { /* the final residual stream of the wanted rows */
        st = es_vk_rows(vk, b->xh, sb->x, b->out_rows, p->n_out, hp->n_embd, false, err);
        if (st == ES_OK) st = es_vk_readback(vk, b->xh, 0, xh_bytes, &hf, err);
    }
    const size_t lg_bytes = (size_t)p->n_out * hp->n_vocab * 4;
    if (st == ES_OK && p->n_out > 0) {
        st = es_vk_rows(vk, b->xl, sb->xb, b->out_rows, p->n_out, hp->n_embd, false, err);
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

/* Device copies of cache rows, src[k] to dst[k] in order (host pages: translated to device pages with
 * two tiers). */
static es_status move_rows(vk_be *b, const int32_t *src, const int32_t *dst, int n, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    const size_t row = b->row_bytes;
    const int bs = b->block_size;
    es_status st = es_vk_begin(b->vk, err);
    if (st != ES_OK) return st;
    /* one copy per row and layer, in order: a row moved later may be the source of an earlier move */
    for (int k = 0; k < n && st == ES_OK; k++) {
        int64_t from = src[k], to = dst[k];
        if (b->tiered) {
            const int32_t fp = b->dev_of[from / bs], tp = b->dev_of[to / bs];
            if (fp < 0 || tp < 0) {
                st = es_fail(err, ES_ERR_INTERNAL, "vulkan: a device-tier row without a device page");
                break;
            }
            from = (int64_t)fp * bs + from % bs;
            to = (int64_t)tp * bs + to % bs;
        }
        for (int l = 0; l < hp->n_layer && st == ES_OK; l++) {
            st = es_vk_copy(b->vk, b->L[l].k_cache, (size_t)to * row, b->L[l].k_cache, (size_t)from * row, row, err);
            if (st == ES_OK) st = es_vk_copy(b->vk, b->L[l].v_cache, (size_t)to * row, b->L[l].v_cache, (size_t)from * row, row, err);
        }
    }
    es_status sub = es_vk_submit(b->vk, err);
    return st != ES_OK ? st : sub;
}

/* A keep of a device-tier sequence whose pages are not all on the device (one was copied on write
 * into the host pool when the device had no page left): the moves are made in host memory from host
 * copies of every page involved, and the destination pages keep only those (the next pass brings them
 * up). Sources are never earlier destinations (slots[k] >= base + k), so the order is the pool's. */
static es_status move_on_host(vk_be *b, const int32_t *src, const int32_t *dst, int n, es_err *err) {
    const int bs = b->block_size;
    const size_t row = es_kv_row_bytes(b->kv);
    int m = 0;
    for (int k = 0; k < n; k++)
        for (int e = 0; e < 2; e++) {
            const int32_t pg = (e ? dst[k] : src[k]) / bs;
            bool listed = false;
            for (int j = 0; j < m && !listed; j++) listed = b->xfer_pages[j] == pg; /* (a tree's few pages) */
            if (!listed && !b->host_ok[pg] && b->dev_of[pg] >= 0) b->xfer_pages[m++] = pg;
        }
    es_status st = m ? xfer(b, b->xfer_pages, m, false, err) : ES_OK;
    if (st != ES_OK) return st;
    for (int k = 0; k < n; k++) {
        const int32_t sp = src[k] / bs, dp = dst[k] / bs;
        const size_t so = (size_t)(src[k] % bs) * row, dof = (size_t)(dst[k] % bs) * row;
        for (int l = 0; l < b->model->hp.n_layer; l++) {
            memcpy(es_kv_page_k(b->kv, dp, l) + dof, es_kv_page_k(b->kv, sp, l) + so, row);
            memcpy(es_kv_page_v(b->kv, dp, l) + dof, es_kv_page_v(b->kv, sp, l) + so, row);
        }
    }
    for (int k = 0; k < n; k++) {
        b->host_ok[dst[k] / bs] = 1;
        dev_drop(b, dst[k] / bs);
    }
    return ES_OK;
}

static es_status vk_kv_move(es_backend *be, int seq, const int32_t *src, const int32_t *dst, int n, es_err *err) {
    vk_be *b = (vk_be *)be;
    const int bs = b->block_size;
    if (b->tiered && b->tier[seq] == ES_KV_TIER_HOST) { /* the pool moved its rows itself: device copies of them are stale */
        for (int k = 0; k < n; k++) dev_drop(b, dst[k] / bs);
        flush_freed(b);
        return ES_OK;
    }
    bool on_device = true;
    for (int k = 0; b->tiered && k < n; k++) on_device &= b->dev_of[src[k] / bs] >= 0 && b->dev_of[dst[k] / bs] >= 0;
    es_status st;
    if (on_device) {
        st = move_rows(b, src, dst, n, err);
        for (int k = 0; b->tiered && k < n; k++) b->host_ok[dst[k] / bs] = 0;
    } else {
        st = move_on_host(b, src, dst, n, err);
    }
    if (b->tiered) flush_freed(b);
    return st;
}

/* The page's rows in host memory from its device copy, into page dst's host copy too. */
static es_status page_copy_host(vk_be *b, int32_t src, int32_t dst, es_err *err) {
    if (!b->host_ok[src]) {
        const es_status st = xfer(b, &src, 1, false, err);
        if (st != ES_OK) return st;
    }
    const size_t bytes = (size_t)b->block_size * es_kv_row_bytes(b->kv);
    for (int l = 0; l < b->model->hp.n_layer; l++) {
        memcpy(es_kv_page_k(b->kv, dst, l), es_kv_page_k(b->kv, src, l), bytes);
        memcpy(es_kv_page_v(b->kv, dst, l), es_kv_page_v(b->kv, src, l), bytes);
    }
    b->host_ok[dst] = 1;
    return ES_OK;
}

static es_status vk_page_copy(es_backend *be, int32_t src, int32_t dst, es_err *err) {
    vk_be *b = (vk_be *)be;
    const int bs = b->block_size;
    if (b->tiered) { /* dst was just taken; the pool copied the host rows, which hold src's if its host copy did */
        b->host_ok[dst] = b->host_ok[src];
        if (b->dev_of[src] < 0) return ES_OK;
        if (b->n_dev_free == 0) return page_copy_host(b, src, dst, err); /* the writer's tier gets it before the pass */
        b->dev_of[dst] = b->dev_free[--b->n_dev_free];
    }
    int32_t from[256], to[256]; /* in chunks: no allocation, whatever the page size */
    for (int at = 0; at < bs; at += 256) {
        const int m = bs - at < 256 ? bs - at : 256;
        for (int j = 0; j < m; j++) {
            from[j] = src * bs + at + j;
            to[j] = dst * bs + at + j;
        }
        const es_status st = move_rows(b, from, to, m, err);
        if (st != ES_OK) return st;
    }
    return ES_OK;
}

static double vk_worker_cpu_seconds(es_backend *be) {
    vk_be *b = (vk_be *)be;
    return b->tp ? es_threadpool_cpu_seconds(b->tp) : 0;
}

static const es_backend_ops vk_ops = {.name = "vulkan", .forward = vk_forward, .logits = vk_logits, .kv_move = vk_kv_move,
                                      .page_copy = vk_page_copy, .worker_cpu_seconds = vk_worker_cpu_seconds, .free = vk_be_free};
static const es_backend_ops vk_tiered_ops = {.name = "vulkan", .forward = vk_forward, .logits = vk_logits, .kv_move = vk_kv_move,
                                             .page_copy = vk_page_copy, .set_tier = vk_set_tier, .tier = vk_tier,
                                             .seq_reset = vk_seq_reset, .tier_info = vk_tier_info,
                                             .worker_cpu_seconds = vk_worker_cpu_seconds, .free = vk_be_free};

/* Host-side state of two tiers: every device page free, every sequence in the device tier. */
static es_status init_tiers(vk_be *b, const es_ctx_params *p, es_err *err) {
    const es_hparams *hp = &b->model->hp;
    const int64_t pages = es_kv_blocks_total(b->kv);
    const size_t dev_row = b->row_bytes;
    if (es_kv_row_bytes(b->kv) != dev_row)
        return es_fail(err, ES_ERR_UNSUPPORTED, "two KV tiers need the same rows in both: kv_type %s keeps %zu bytes per row on the host, "
                       "the device %zu (use f16 or f32, or q8_0 with kv_dim a multiple of 64)", es_kv_type_name(p->kv_type), es_kv_row_bytes(b->kv), dev_row);
    b->n_dev = p->device_kv_blocks;
    b->xfer_chunk = 16;
    b->n_pages = pages;
    b->dev_of = malloc((size_t)pages * sizeof(int32_t));
    b->host_ok = calloc((size_t)pages, 1);
    b->mark = calloc((size_t)pages, 1);
    b->given = malloc((size_t)pages * sizeof(int32_t));
    b->dev_free = malloc((size_t)b->n_dev * sizeof(int32_t));
    b->tier = calloc((size_t)p->n_seq_max, 1);
    b->seen = calloc((size_t)p->n_seq_max, 1);
    b->hrow_of = malloc((size_t)p->n_batch_max * sizeof(int32_t));
    b->xfer_pages = malloc((size_t)pages * sizeof(int32_t));
    b->freed = malloc((size_t)pages * sizeof(int32_t));
    b->is_freed = calloc((size_t)pages, 1);
    b->xfer_ptr = malloc((size_t)b->xfer_chunk * 2 * hp->n_layer * sizeof *b->xfer_ptr);
    b->att_floats = es_host_attn_scratch_floats(hp->n_head, hp->n_head_kv, hp->head_dim);
    b->att = malloc((size_t)(p->n_threads > 0 ? p->n_threads : 1) * b->att_floats * sizeof(float));
    if (!b->dev_of || !b->host_ok || !b->mark || !b->given || !b->dev_free || !b->tier || !b->seen || !b->hrow_of || !b->xfer_pages || !b->freed || !b->is_freed || !b->xfer_ptr || !b->att)
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < pages; i++) b->dev_of[i] = -1;
    for (int64_t i = 0; i < b->n_dev; i++) b->dev_free[i] = (int32_t)(b->n_dev - 1 - i);
    b->n_dev_free = b->n_dev;
    es_status st = es_threadpool_init(p->n_threads > 0 ? p->n_threads : 1, &b->tp, err);
    if (st != ES_OK) return st;
    es_kv_set_page_hook(b->kv, page_event, b);
    return ES_OK;
}

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
    /* the host pool's row type: f32, f16, or q8_0 (GGUF blocks, the same bytes as the host's) where
       the rows are a whole number of 32-bit words (kv_dim a multiple of 64), else q8_0 is kept as f16 */
    const int kvd = hp->n_head_kv * hp->head_dim;
    b->kv_q8 = p->kv_type == ES_KV_Q8_0 && hp->head_dim % 32 == 0 && kvd % 64 == 0;
    b->kv_f16 = !b->kv_q8 && p->kv_type != ES_KV_F32 && hp->head_dim % 2 == 0;
    b->row_bytes = b->kv_q8 ? (size_t)kvd / 32 * 34 : (size_t)kvd * (b->kv_f16 ? 2 : 4);
    b->tiered = p->device_kv_blocks > 0 && p->device_kv_blocks < es_kv_blocks_total(kv);
    b->n_sb_alloc = b->tiered ? VK_SB_MAX : 1;
    if (b->tiered) b->base.ops = &vk_tiered_ops;
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
    if (st == ES_OK && b->tiered) st = init_tiers(b, p, err);
    /* a hybrid pass submits twice per layer and sub-batch, and once per early exit */
    if (st == ES_OK && b->tiered) st = es_vk_reserve_flushes(b->vk, 2 * VK_SB_MAX * hp->n_layer + 2, err);
    if (st == ES_OK) st = upload_weights(b, err);
    if (st == ES_OK) st = alloc_activations(b, err);
    if (st == ES_OK) { /* one pass's uploads and its logits, each piece 64-byte aligned */
        const size_t n = (size_t)p->n_batch_max, half = (size_t)hp->rope_dim / 2;
        const size_t ring = n * (size_t)hp->n_embd * 4 + 2 * n * half * 4 + n * 16 + (size_t)b->anc_cap * 4 +
                            (size_t)b->tab_cap * 4 + n * 4 + (size_t)p->n_logits_max * 4 +
                            (size_t)p->n_logits_max * (size_t)hp->n_vocab * 4 +
                            (size_t)p->n_logits_max * (size_t)hp->n_embd * 4 + 10 * 64; /* + early-exit rows */
        const size_t moves = b->tiered ? (size_t)b->xfer_chunk * 2 * hp->n_layer * ((size_t)b->block_size * es_kv_row_bytes(kv) + 64) : 0;
        st = named(es_vk_ring_init(b->vk, ring > moves ? ring : moves, err), "transfer ring", err);
        /* pages moving up are staged in slots of as many pages as a recording moves down */
        if (st == ES_OK && b->tiered) st = named(es_vk_async_init(b->vk, moves, err), "transfer staging", err);
    }
    if (st != ES_OK) {
        vk_be_free(&b->base);
        return st;
    }
    *out = &b->base;
    return ES_OK;
}
