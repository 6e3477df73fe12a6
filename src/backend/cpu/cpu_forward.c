/* cpu_forward.c — the CPU backend: the Llama/Qwen2 layers over a planned batch with the kernels of
 * src/kernels.
 *
 * Every weight matrix is applied to all n rows in one es_matmul (weights read once per pass), so a
 * speculative verification of a whole token tree, or many sessions' drafts together, costs about one
 * decode step while the model is memory-bound. Attention runs per group of the plan (es_attn_multi:
 * the prefix's K and V read once per group of tokens, not once per token).
 *
 * All scratch is allocated in es_backend_cpu_init from the batch limits; a forward never allocates. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/host_attn.h"
#include "kernels/attn.h"
#include "kernels/matmul.h"
#include "util/err.h"
#include "util/threadpool.h"

/* Batches of at least this many rows run the elementwise steps (norms, RoPE, SwiGLU) on the thread
 * pool; smaller ones run them on the calling thread (a parallel region costs a few microseconds). */
#define ES_EW_PAR_ROWS 4

typedef struct cpu_be {
    es_backend base;
    const es_model *model;
    es_kv *kv;            /* not owned */
    es_threadpool *tp;

    /* activations */
    float *x;             /* (n, n_embd) residual stream */
    float *xb;            /* (n, max(n_embd, q_dim)) normed input / attention output */
    float *q;             /* (n, q_dim) */
    float *k, *v;         /* (n, kv_dim) */
    float *hb, *hb2;      /* (n, n_ff) */
    float *tmp;           /* (n, n_embd) projection output before the residual add */
    float *att;           /* (n_threads, att_floats) attention kernel scratch */
    size_t att_floats;
    float *rope_cos, *rope_sin; /* (n, rope_dim/2) of the batch's positions */
    float *inv_freq;      /* (rope_dim/2) */
    float *logits;        /* (n_logits_max, n_vocab) */
    float *xl;            /* (n_logits_max, n_embd) final-normed rows that want logits */
    float *xh;            /* (n_logits_max, n_embd) residual rows handed to an early-exit hook */
    void *mm_scratch;
} cpu_be;

/* ---- elementwise helpers ---------------------------------------------------------------------- */

/* o = w ⊙ x / sqrt(mean(x²) + eps). Eight partial sums so the reduction is not one serial chain. */
static void rmsnorm(float *o, const float *x, const float *w, int n, float eps) {
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int u = 0; u < 8; u++) acc[u] += x[j + u] * x[j + u];
    float ss = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < n; j++) ss += x[j] * x[j];
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int k = 0; k < n; k++) o[k] = w[k] * (ss * x[k]);
}

/* Rotates each head's first rope_dim dims: consecutive pairs (2i, 2i+1) for llama, halves
 * (i, i + rope_dim/2) for NEOX-style qwen2. */
static void rope(float *vec, int n_heads, int head_dim, int rope_dim, bool neox, const float *cs, const float *sn) {
    const int half = rope_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            const float v0 = v[a], v1 = v[b];
            v[a] = v0 * cs[i] - v1 * sn[i];
            v[b] = v0 * sn[i] + v1 * cs[i];
        }
    }
}

/* One parallel region of the elementwise work of a layer, split by batch rows (or by elements for
 * the SwiGLU gate). */
typedef enum { EW_NORM, EW_QKV, EW_SWIGLU, EW_FINAL } ew_kind;

typedef struct {
    cpu_be *c;
    const es_fwd_plan *p;
    const es_layer *L;
    const float *norm;   /* EW_NORM / EW_FINAL: the norm weights */
    int layer, n;
    ew_kind kind;
    bool add;            /* EW_NORM: x += tmp first (the previous projection's residual) */
} ew_task;

static void ew_worker(void *ud, int ith, int nth) {
    ew_task *t = ud;
    cpu_be *c = t->c;
    const es_fwd_plan *p = t->p;
    const es_hparams *hp = &c->model->hp;
    const int d = hp->n_embd, hd = hp->head_dim, half = hp->rope_dim / 2;
    const int qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;
    int64_t lo, hi;
    switch (t->kind) {
    case EW_NORM:
        es_split_range(t->n, ith, nth, &lo, &hi);
        for (int64_t i = lo; i < hi; i++) {
            float *x = c->x + (size_t)i * d;
            if (t->add) {
                const float *y = c->tmp + (size_t)i * d;
                for (int j = 0; j < d; j++) x[j] += y[j];
            }
            rmsnorm(c->xb + (size_t)i * d, x, t->norm, d, hp->rms_eps);
        }
        break;
    case EW_FINAL: /* the last residual add and the output norm, only for rows that want logits */
        es_split_range(p->n_out, ith, nth, &lo, &hi);
        for (int64_t r = lo; r < hi; r++) {
            float *x = c->x + (size_t)p->out_idx[r] * d;
            const float *y = c->tmp + (size_t)p->out_idx[r] * d;
            for (int j = 0; j < d; j++) x[j] += y[j];
            rmsnorm(c->xl + (size_t)r * d, x, t->norm, d, hp->rms_eps);
        }
        break;
    case EW_QKV: {
        const es_layer *L = t->L;
        es_split_range(t->n, ith, nth, &lo, &hi);
        for (int64_t i = lo; i < hi; i++) {
            float *cs = c->rope_cos + (size_t)i * half, *sn = c->rope_sin + (size_t)i * half;
            if (t->layer == 0)
                for (int j = 0; j < half; j++) {
                    const float val = (float)p->b->pos[i] * c->inv_freq[j];
                    cs[j] = cosf(val);
                    sn[j] = sinf(val);
                }
            float *q = c->q + (size_t)i * qd, *k = c->k + (size_t)i * kvd, *v = c->v + (size_t)i * kvd;
            if (L->bq) for (int j = 0; j < qd; j++) q[j] += L->bq[j];
            if (L->bk) for (int j = 0; j < kvd; j++) k[j] += L->bk[j];
            if (L->bv) for (int j = 0; j < kvd; j++) v[j] += L->bv[j];
            if (L->q_norm) /* qwen3: each head normed on its own, before the rotation */
                for (int h = 0; h < hp->n_head; h++) rmsnorm(q + (size_t)h * hd, q + (size_t)h * hd, L->q_norm, hd, hp->rms_eps);
            if (L->k_norm)
                for (int h = 0; h < hp->n_head_kv; h++) rmsnorm(k + (size_t)h * hd, k + (size_t)h * hd, L->k_norm, hd, hp->rms_eps);
            rope(q, hp->n_head, hd, hp->rope_dim, hp->rope_neox, cs, sn);
            rope(k, hp->n_head_kv, hd, hp->rope_dim, hp->rope_neox, cs, sn);
            es_kv_store(c->kv, p->b->seq[i], t->layer, p->slot[i], k, v);
        }
        break;
    }
    case EW_SWIGLU: {
        /* items: 64-column pieces of every row, so each element is computed the same way (vector lane
         * or scalar tail) whatever the batch size and thread count */
        const int ff = hp->n_ff, per_row = (ff + 63) / 64;
        es_split_range((int64_t)t->n * per_row, ith, nth, &lo, &hi);
        for (int64_t u = lo; u < hi; u++) {
            const int64_t i = u / per_row;
            const int j0 = (int)(u % per_row) * 64, len = ff - j0 < 64 ? ff - j0 : 64;
            es_vec_silu_mul(c->hb + (size_t)i * ff + j0, c->hb2 + (size_t)i * ff + j0, len);
        }
        break;
    }
    }
}

static void run_ew(cpu_be *c, ew_task *t) {
    es_threadpool_run(t->n >= ES_EW_PAR_ROWS ? c->tp : NULL, ew_worker, t);
}

/* ---- the forward pass ------------------------------------------------------------------------- */

static es_status cpu_forward(es_backend *be, const es_fwd_plan *p, es_err *err) {
    (void)err;
    cpu_be *c = (cpu_be *)be;
    const es_model *m = c->model;
    const es_hparams *hp = &m->hp;
    const int n = p->n, d = hp->n_embd;

    for (int i = 0; i < n; i++) es_mat_get_row(&m->tok_embd, p->b->token[i], c->x + (size_t)i * d);

    int next_exit = 0; /* index into p->exit_layer of the next exit to deliver */
    for (int il = 0; il < hp->n_layer; il++) {
        const es_layer *L = &m->layers[il];
        /* x += (previous layer's FFN output); xb = attn_norm(x) */
        ew_task et = {c, p, L, L->attn_norm, il, n, EW_NORM, il > 0};
        run_ew(c, &et);
        { /* q, k, v share their input: one activation quantisation, one parallel region */
            float *const ys[3] = {c->q, c->k, c->v};
            const es_mat *const ws[3] = {&L->wq, &L->wk, &L->wv};
            es_matmul_multi(c->tp, 3, ys, ws, c->xb, n, c->mm_scratch);
        }
        et.kind = EW_QKV; /* biases or per-head norms, RoPE, K/V into the cache */
        run_ew(c, &et);
        es_host_attn at = {.kv = c->kv, .p = p, .layer = il, .n_head = hp->n_head, .n_head_kv = hp->n_head_kv,
                           .head_dim = hp->head_dim, .q = c->q, .out = c->xb, .scratch = c->att, .scratch_floats = c->att_floats};
        es_host_attention(c->tp, &at);
        es_matmul(c->tp, c->tmp, &L->wo, c->xb, n, c->mm_scratch);
        et.kind = EW_NORM; /* x += attention output; xb = ffn_norm(x) */
        et.norm = L->ffn_norm;
        et.add = true;
        run_ew(c, &et);
        { /* gate and up, likewise */
            float *const ys[2] = {c->hb, c->hb2};
            const es_mat *const ws[2] = {&L->w1, &L->w3};
            es_matmul_multi(c->tp, 2, ys, ws, c->xb, n, c->mm_scratch);
        }
        et.kind = EW_SWIGLU;
        run_ew(c, &et);
        es_matmul(c->tp, c->tmp, &L->w2, c->hb, n, c->mm_scratch);
        if (next_exit < p->n_exit && p->exit_layer[next_exit] == il + 1 && il + 1 < hp->n_layer) {
            /* the layer's output without touching x (the next layer's norm adds tmp as always) */
            for (int r = 0; r < p->n_out; r++) {
                const float *x = c->x + (size_t)p->out_idx[r] * d, *y = c->tmp + (size_t)p->out_idx[r] * d;
                float *h = c->xh + (size_t)r * d;
                for (int j = 0; j < d; j++) h[j] = x[j] + y[j];
            }
            if (p->n_out > 0) p->exit_fn(p->exit_ud, il + 1, c->xh, p->n_out, p->out_idx);
            next_exit++;
        }
    }

    ew_task ft = {c, p, NULL, m->output_norm, hp->n_layer, p->n_out, EW_FINAL, true};
    run_ew(c, &ft);
    if (next_exit < p->n_exit && p->exit_layer[next_exit] == hp->n_layer && p->n_out > 0) {
        for (int r = 0; r < p->n_out; r++) memcpy(c->xh + (size_t)r * d, c->x + (size_t)p->out_idx[r] * d, (size_t)d * sizeof(float));
        p->exit_fn(p->exit_ud, hp->n_layer, c->xh, p->n_out, p->out_idx);
    }
    if (p->n_out > 0) es_matmul(c->tp, c->logits, &m->output, c->xl, p->n_out, c->mm_scratch);
    return ES_OK;
}

static const float *cpu_logits(const es_backend *be, int r) {
    const cpu_be *c = (const cpu_be *)be;
    return c->logits + (size_t)r * c->model->hp.n_vocab;
}

static double cpu_worker_cpu_seconds(es_backend *be) { return es_threadpool_cpu_seconds(((cpu_be *)be)->tp); }

static void cpu_free(es_backend *be) {
    cpu_be *c = (cpu_be *)be;
    if (!c) return;
    es_threadpool_free(c->tp);
    free(c->x); free(c->xb); free(c->q); free(c->k); free(c->v); free(c->hb); free(c->hb2); free(c->tmp);
    free(c->att); free(c->rope_cos); free(c->rope_sin); free(c->inv_freq); free(c->logits); free(c->xl); free(c->xh);
    free(c->mm_scratch);
    free(c);
}

static const es_backend_ops cpu_ops = {.name = "cpu", .forward = cpu_forward, .logits = cpu_logits,
                                       .worker_cpu_seconds = cpu_worker_cpu_seconds, .free = cpu_free};

static void *falloc(size_t n_floats, bool *ok) {
    void *p = malloc(n_floats ? n_floats * sizeof(float) : 1);
    if (!p) *ok = false;
    return p;
}

es_status es_backend_cpu_init(const es_model *model, es_kv *kv, int n_threads, int n_batch_max, int n_logits_max,
                              es_backend **out, es_err *err) {
    *out = NULL;
    const es_hparams *hp = &model->hp;
    cpu_be *c = calloc(1, sizeof *c);
    if (!c) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    c->base.ops = &cpu_ops;
    c->model = model;
    c->kv = kv;
    es_status st = es_threadpool_init(n_threads, &c->tp, err);
    if (st != ES_OK) {
        cpu_free(&c->base);
        return st;
    }
    const size_t n = (size_t)n_batch_max, d = (size_t)hp->n_embd;
    const size_t qd = (size_t)hp->n_head * hp->head_dim, kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t wide = qd > d ? qd : d;
    bool ok = true;
    c->x = falloc(n * d, &ok);
    c->xb = falloc(n * wide, &ok);
    c->q = falloc(n * qd, &ok);
    c->k = falloc(n * kv_dim, &ok);
    c->v = falloc(n * kv_dim, &ok);
    c->hb = falloc(n * (size_t)hp->n_ff, &ok);
    c->hb2 = falloc(n * (size_t)hp->n_ff, &ok);
    c->tmp = falloc(n * d, &ok);
    c->att_floats = es_host_attn_scratch_floats(hp->n_head, hp->n_head_kv, hp->head_dim);
    c->att = falloc((size_t)n_threads * c->att_floats, &ok);
    c->rope_cos = falloc(n * (size_t)hp->rope_dim / 2, &ok);
    c->rope_sin = falloc(n * (size_t)hp->rope_dim / 2, &ok);
    c->inv_freq = falloc((size_t)hp->rope_dim / 2, &ok);
    c->logits = falloc((size_t)n_logits_max * (size_t)hp->n_vocab, &ok);
    c->xl = falloc((size_t)n_logits_max * d, &ok);
    c->xh = falloc((size_t)n_logits_max * d, &ok);
    size_t mm = 0, cols[] = {d, qd, (size_t)hp->n_ff};
    for (int i = 0; i < 3; i++) {
        size_t s = es_matmul_scratch_size((int64_t)n, (int64_t)cols[i]);
        if (s > mm) mm = s;
    }
    c->mm_scratch = malloc(mm ? mm : 1);
    if (!c->mm_scratch) ok = false;
    if (!ok) {
        cpu_free(&c->base);
        return es_fail(err, ES_ERR_NOMEM, "cannot allocate the CPU backend's scratch buffers (batch %d)", n_batch_max);
    }
    es_model_rope_inv_freq(model, c->inv_freq);
    *out = &c->base;
    return ES_OK;
}
