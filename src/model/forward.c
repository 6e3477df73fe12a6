/* forward.c — es_ctx: the KV cache plus the Llama/Qwen2 forward pass over a batch of tokens.
 *
 * One es_decode evaluates n tokens of any number of sequences at once. Every weight matrix is applied
 * to all n rows in one es_matmul (weights read once per pass), so a speculative verification of a
 * whole token tree, or many sessions' drafts together, costs about one decode step while the model is
 * memory-bound. Each token attends to its sequence's cached prefix plus its ancestors in the batch (a
 * tree mask given by parent indices, never a dense mask); the tokens of one sequence attend together,
 * so the prefix's K and V are read once per group of tokens, not once per token.
 *
 * All scratch is allocated in es_ctx_init from the batch limits; es_decode never allocates. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/matmul.h"
#include "model/ctx.h"
#include "model/kv.h"
#include "model/model.h"
#include "util/err.h"
#include "util/threadpool.h"

/* How deep a branch of not-yet-compacted tree slots in the cache may be below the sequence's chain. */
#define ES_MAX_CACHED_TREE_DEPTH 256
/* Most tokens of one sequence whose attention runs together (es_attn_multi: the shared prefix's K and
 * V converted once for all of them). More would give fewer work items to spread over the threads. */
#define ES_ATTN_GROUP_MAX 16
/* Batches of at least this many rows run the elementwise steps (norms, RoPE, SwiGLU) on the thread
 * pool; smaller ones run them on the calling thread (a parallel region costs a few microseconds). */
#define ES_EW_PAR_ROWS 4

struct es_ctx {
    const es_model *model;
    es_ctx_params p;
    es_kv *kv;
    es_threadpool *tp;

    /* per-batch bookkeeping, [n_batch_max] unless noted */
    int32_t *slot;        /* KV slot of each token in its sequence */
    int32_t *anc_off;     /* ... plus the slots anc[anc_off[i] .. + anc_len[i]): cached tree ancestors,
                             then batch ancestors, itself last (root first) */
    int32_t *anc_len;
    int32_t *anc;         /* [anc_cap] */
    int64_t anc_cap;      /* n(n+1)/2 (one chain) + n * ES_MAX_CACHED_TREE_DEPTH */
    int32_t *prefix_len;  /* token i attends to the contiguous chain of slots [0, prefix_len[i]) ... */
    int32_t *seq_count;   /* [n_seq_max] tokens of each sequence in this batch */
    int32_t *seq_last;    /* [n_seq_max] batch index of the last token seen per sequence */
    int32_t *logit_row;   /* row in `logits` for batch index i, -1 if none */
    int32_t *out_idx;     /* batch indices whose logits were asked for */
    int32_t *grp_start;   /* [n_batch_max + 1] attention groups: tokens [grp_start[g], grp_start[g+1]) */
    int32_t *grp_common;  /* [n_batch_max] leading ancestor-list entries all tokens of group g share */
    int n_grp;

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
    void *mm_scratch;
    int n_last;           /* n_tokens of the last decode */
    int n_out;
};

es_ctx_params es_ctx_default_params(void) {
    es_ctx_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 1;
    p.n_seq_max = 1;
    p.n_batch_max = 512;
    p.kv_block_size = 16;
    p.kv_type = ES_KV_F16;
    return p;
}

void es_ctx_free(es_ctx *c) {
    if (!c) return;
    es_kv_free(c->kv);
    es_threadpool_free(c->tp);
    free(c->slot); free(c->anc_off); free(c->anc_len); free(c->anc); free(c->prefix_len);
    free(c->seq_count); free(c->seq_last); free(c->logit_row); free(c->out_idx); free(c->grp_start); free(c->grp_common);
    free(c->x); free(c->xb); free(c->q); free(c->k); free(c->v); free(c->hb); free(c->hb2); free(c->tmp);
    free(c->att); free(c->rope_cos); free(c->rope_sin); free(c->inv_freq); free(c->logits); free(c->xl);
    free(c->mm_scratch);
    free(c);
}

static void *falloc(size_t n_floats, bool *ok) {
    void *p = malloc(n_floats ? n_floats * sizeof(float) : 1);
    if (!p) *ok = false;
    return p;
}

es_status es_ctx_init(const es_model *model, const es_ctx_params *params, es_ctx **out, es_err *err) {
    *out = NULL;
    es_ctx_params p = params ? *params : es_ctx_default_params();
    const es_hparams *hp = &model->hp;
    if (p.n_ctx <= 0) p.n_ctx = hp->n_ctx_train;
    if (p.kv_block_size <= 0) p.kv_block_size = 16;
    if (p.n_threads <= 0 || p.n_threads > 512) return es_fail(err, ES_ERR_INVALID_ARG, "threads must be in 1..512");
    if (p.n_seq_max <= 0 || p.n_seq_max > 65536) return es_fail(err, ES_ERR_INVALID_ARG, "n_seq_max must be in 1..65536");
    if (p.n_batch_max <= 0 || p.n_batch_max > 8192) return es_fail(err, ES_ERR_INVALID_ARG, "n_batch_max must be in 1..8192");
    if (p.n_ctx > (1 << 24)) return es_fail(err, ES_ERR_INVALID_ARG, "context %d too large", p.n_ctx);
    if (p.n_logits_max <= 0 || p.n_logits_max > p.n_batch_max) p.n_logits_max = p.n_batch_max;
    const int64_t per_seq = (p.n_ctx + p.kv_block_size - 1) / p.kv_block_size;
    if (p.kv_blocks <= 0) p.kv_blocks = per_seq * p.n_seq_max;

    es_ctx *c = calloc(1, sizeof *c);
    if (!c) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    c->model = model;
    c->p = p;
    es_status st;
    const int kv_dim = hp->n_head_kv * hp->head_dim;
    if (p.kv_type == ES_KV_Q8_0 && (hp->head_dim % 32 || kv_dim % 32)) {
        es_ctx_free(c);
        return es_fail(err, ES_ERR_UNSUPPORTED,
                       "a q8_0 KV cache needs head_dim and n_head_kv * head_dim multiples of 32 (this model: %d and %d); "
                       "use f16 or f32", hp->head_dim, kv_dim);
    }
    if ((st = es_kv_init(hp->n_layer, kv_dim, p.kv_block_size, p.kv_blocks, p.n_seq_max, p.n_ctx, p.kv_type, &c->kv,
                         err)) != ES_OK ||
        (st = es_threadpool_init(p.n_threads, &c->tp, err)) != ES_OK) {
        es_ctx_free(c);
        return st;
    }
    const size_t n = (size_t)p.n_batch_max, d = (size_t)hp->n_embd;
    const size_t qd = (size_t)hp->n_head * hp->head_dim;
    const size_t wide = qd > d ? qd : d;
    bool ok = true;
    c->slot = malloc(n * sizeof(int32_t));
    c->anc_off = malloc(n * sizeof(int32_t));
    c->anc_len = malloc(n * sizeof(int32_t));
    c->anc_cap = (int64_t)(n * (n + 1) / 2 + n * ES_MAX_CACHED_TREE_DEPTH);
    c->anc = malloc((size_t)c->anc_cap * sizeof(int32_t));
    c->prefix_len = malloc(n * sizeof(int32_t));
    c->seq_count = calloc((size_t)p.n_seq_max, sizeof(int32_t));
    c->seq_last = malloc((size_t)p.n_seq_max * sizeof(int32_t));
    c->logit_row = malloc(n * sizeof(int32_t));
    c->out_idx = malloc(n * sizeof(int32_t));
    c->grp_start = malloc((n + 1) * sizeof(int32_t));
    c->grp_common = malloc(n * sizeof(int32_t));
    if (!c->grp_start || !c->grp_common) ok = false;
    if (!c->slot || !c->anc_off || !c->anc_len || !c->anc || !c->prefix_len || !c->seq_count || !c->seq_last ||
        !c->logit_row || !c->out_idx)
        ok = false;
    c->x = falloc(n * d, &ok);
    c->xb = falloc(n * wide, &ok);
    c->q = falloc(n * qd, &ok);
    c->k = falloc(n * (size_t)kv_dim, &ok);
    c->v = falloc(n * (size_t)kv_dim, &ok);
    c->hb = falloc(n * (size_t)hp->n_ff, &ok);
    c->hb2 = falloc(n * (size_t)hp->n_ff, &ok);
    c->tmp = falloc(n * d, &ok);
    c->att_floats = es_attn_multi_scratch_floats(ES_ATTN_GROUP_MAX * (hp->n_head / hp->n_head_kv), hp->head_dim);
    c->att = falloc((size_t)p.n_threads * c->att_floats, &ok);
    c->rope_cos = falloc(n * (size_t)hp->rope_dim / 2, &ok);
    c->rope_sin = falloc(n * (size_t)hp->rope_dim / 2, &ok);
    c->inv_freq = falloc((size_t)hp->rope_dim / 2, &ok);
    c->logits = falloc((size_t)p.n_logits_max * (size_t)hp->n_vocab, &ok);
    c->xl = falloc((size_t)p.n_logits_max * d, &ok);
    size_t mm = 0, cols[] = {d, qd, (size_t)hp->n_ff};
    for (int i = 0; i < 3; i++) {
        size_t s = es_matmul_scratch_size((int64_t)n, (int64_t)cols[i]);
        if (s > mm) mm = s;
    }
    c->mm_scratch = malloc(mm ? mm : 1);
    if (!c->mm_scratch) ok = false;
    if (!ok) {
        es_ctx_free(c);
        return es_fail(err, ES_ERR_NOMEM, "cannot allocate the context's scratch buffers (batch %d, context %d)",
                       p.n_batch_max, p.n_ctx);
    }
    /* Inverse frequencies computed exactly as llama2.c does (float powf), so greedy outputs match it. */
    for (int i = 0; i < hp->rope_dim / 2; i++)
        c->inv_freq[i] = 1.0f / powf(hp->rope_base, (float)(2 * i) / (float)hp->rope_dim);
    *out = c;
    return ES_OK;
}

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
    es_ctx *c;
    const es_batch *b;
    const es_layer *L;
    const float *norm;   /* EW_NORM / EW_FINAL: the norm weights */
    int layer, n;
    ew_kind kind;
    bool add;            /* EW_NORM: x += tmp first (the previous projection's residual) */
} ew_task;

static void ew_worker(void *ud, int ith, int nth) {
    ew_task *t = ud;
    es_ctx *c = t->c;
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
        es_split_range(c->n_out, ith, nth, &lo, &hi);
        for (int64_t r = lo; r < hi; r++) {
            float *x = c->x + (size_t)c->out_idx[r] * d;
            const float *y = c->tmp + (size_t)c->out_idx[r] * d;
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
                    const float val = (float)t->b->pos[i] * c->inv_freq[j];
                    cs[j] = cosf(val);
                    sn[j] = sinf(val);
                }
            float *q = c->q + (size_t)i * qd, *k = c->k + (size_t)i * kvd, *v = c->v + (size_t)i * kvd;
            if (L->bq) for (int j = 0; j < qd; j++) q[j] += L->bq[j];
            if (L->bk) for (int j = 0; j < kvd; j++) k[j] += L->bk[j];
            if (L->bv) for (int j = 0; j < kvd; j++) v[j] += L->bv[j];
            rope(q, hp->n_head, hd, hp->rope_dim, hp->rope_neox, cs, sn);
            rope(k, hp->n_head_kv, hd, hp->rope_dim, hp->rope_neox, cs, sn);
            es_kv_store(c->kv, t->b->seq[i], t->layer, c->slot[i], k, v);
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

static void run_ew(es_ctx *c, ew_task *t) {
    es_threadpool_run(t->n >= ES_EW_PAR_ROWS ? c->tp : NULL, ew_worker, t);
}

/* ---- attention -------------------------------------------------------------------------------- */

typedef struct {
    es_ctx *c;
    const es_batch *b;
    int layer;
    int n_sub;        /* each kv head's group of query heads is split into n_sub items */
    atomic_int next;  /* next work item to take */
} att_task;

/* Work items w = (token group, kv head, sub-group), taken dynamically, latest groups (longest
 * contexts) first. Each runs es_attn_multi over the group's tokens for the query heads of its
 * sub-group, writing their outputs into xb. */
static void attention_worker(void *ud, int ith, int nth) {
    (void)nth;
    att_task *t = ud;
    es_ctx *c = t->c;
    const es_hparams *hp = &c->model->hp;
    const int hd = hp->head_dim, qd = hp->n_head * hd, group = hp->n_head / hp->n_head_kv;
    const int sub = group / t->n_sub, per_grp = hp->n_head_kv * t->n_sub;
    const float scale = 1.0f / sqrtf((float)hd);
    float *scratch = c->att + (size_t)ith * c->att_floats;
    const int64_t total = (int64_t)c->n_grp * per_grp;
    es_attn_query tq[ES_ATTN_GROUP_MAX];
    for (;;) {
        const int64_t w = atomic_fetch_add(&t->next, 1);
        if (w >= total) break;
        const int g = c->n_grp - 1 - (int)(w / per_grp), r = (int)(w % per_grp);
        const int kvh = r / t->n_sub, h0 = kvh * group + (r % t->n_sub) * sub;
        const int i0 = c->grp_start[g], nt = c->grp_start[g + 1] - i0;
        for (int k = 0; k < nt; k++) {
            const int i = i0 + k;
            tq[k].q = c->q + (size_t)i * qd + (size_t)h0 * hd;
            tq[k].out = c->xb + (size_t)i * qd + (size_t)h0 * hd;
            tq[k].anc = c->anc + c->anc_off[i];
            tq[k].n_anc = c->anc_len[i];
        }
        es_attn_cache view;
        es_kv_attn_view(c->kv, t->b->seq[i0], t->layer, &view);
        es_attn_multi(&view, kvh, hd, sub, scale, c->prefix_len[i0], c->grp_common[g], tq, nt, scratch);
    }
}

/* Splits the batch into attention groups: runs of consecutive tokens of one sequence with the same
 * prefix, at most ES_ATTN_GROUP_MAX long, and the length of the ancestor-list prefix they share (a
 * chain's first token's whole list; a tree's path to the common ancestor). */
static void make_groups(es_ctx *c, const es_batch *b) {
    const int n = b->n_tokens;
    int g = 0;
    for (int i = 0; i < n;) {
        int j = i + 1, common = c->anc_len[i];
        const int32_t *a0 = c->anc + c->anc_off[i];
        while (j < n && j - i < ES_ATTN_GROUP_MAX && b->seq[j] == b->seq[i] && c->prefix_len[j] == c->prefix_len[i]) {
            const int32_t *aj = c->anc + c->anc_off[j];
            int l = 0;
            const int lim = common < c->anc_len[j] ? common : c->anc_len[j];
            while (l < lim && aj[l] == a0[l]) l++;
            common = l;
            j++;
        }
        c->grp_start[g] = i;
        c->grp_common[g] = common;
        g++;
        i = j;
    }
    c->grp_start[g] = n;
    c->n_grp = g;
}

/* ---- batch validation and bookkeeping --------------------------------------------------------- */

/* Checks the batch, fills slot / prefix / ancestor lists, and reserves KV pages. On failure nothing
 * in the cache has changed. */
static es_status prepare(es_ctx *c, const es_batch *b, es_err *err) {
    const int n = b->n_tokens, nv = c->model->hp.n_vocab;
    if (n <= 0 || n > c->p.n_batch_max)
        return es_fail(err, ES_ERR_INVALID_ARG, "batch of %d tokens (must be 1..%d)", n, c->p.n_batch_max);
    if (!b->token || !b->pos || !b->seq) return es_fail(err, ES_ERR_INVALID_ARG, "batch arrays token, pos and seq are required");
    for (int s = 0; s < c->p.n_seq_max; s++) { c->seq_count[s] = 0; c->seq_last[s] = -1; }
    int n_out = 0;
    int64_t anc_used = 0;
    for (int i = 0; i < n; i++) {
        const int seq = b->seq[i];
        if (!es_kv_seq_valid(c->kv, seq)) return es_fail(err, ES_ERR_INVALID_ARG, "batch token %d: sequence %d is not open", i, seq);
        if (b->token[i] < 0 || b->token[i] >= nv)
            return es_fail(err, ES_ERR_RANGE, "batch token %d: id %d outside the vocabulary (0..%d)", i, b->token[i], nv - 1);
        if (b->pos[i] < 0 || b->pos[i] >= c->p.n_ctx)
            return es_fail(err, ES_ERR_RANGE, "batch token %d: position %d outside the context (0..%d)", i, b->pos[i], c->p.n_ctx - 1);
        int par = b->parent ? b->parent[i] : c->seq_last[seq];
        if (par >= i || par < -1 || (par >= 0 && b->seq[par] != seq))
            return es_fail(err, ES_ERR_INVALID_ARG, "batch token %d: parent %d must be an earlier token of the same sequence or -1", i, par);
        const int len0 = es_kv_seq_len(c->kv, seq);
        c->slot[i] = len0 + c->seq_count[seq]++;
        c->seq_last[seq] = i;
        c->anc_off[i] = (int32_t)anc_used;
        if (par >= 0) { /* the parent's attention set, then itself */
            const int plen = c->anc_len[par];
            if (anc_used + plen + 1 > c->anc_cap) return es_fail(err, ES_ERR_RANGE, "batch token %d: tree too deep", i);
            memcpy(c->anc + anc_used, c->anc + c->anc_off[par], (size_t)plen * sizeof(int32_t));
            c->prefix_len[i] = c->prefix_len[par];
            c->anc[anc_used + plen] = c->slot[i];
            c->anc_len[i] = plen + 1;
        } else { /* parent in the cache: walk its tree ancestors up to the chain */
            int s = b->cache_parent && b->cache_parent[i] >= 0 ? b->cache_parent[i] : len0 - 1;
            if (s >= len0)
                return es_fail(err, ES_ERR_INVALID_ARG, "batch token %d: cached parent slot %d beyond the sequence's %d slots", i, s, len0);
            const int lin = es_kv_seq_linear(c->kv, seq);
            const int32_t *sp = es_kv_seq_parents(c->kv, seq);
            int depth = 0;
            for (int t = s; t >= lin; t = sp[t]) depth++;
            if (depth > ES_MAX_CACHED_TREE_DEPTH || anc_used + depth + 1 > c->anc_cap)
                return es_fail(err, ES_ERR_RANGE, "batch token %d: cached branch of %d slots is deeper than %d", i, depth, ES_MAX_CACHED_TREE_DEPTH);
            int k = depth;
            for (int t = s; t >= lin; t = sp[t]) c->anc[anc_used + --k] = t;
            int t = s;
            while (t >= lin) t = sp[t];
            c->prefix_len[i] = t + 1; /* t is the last chain slot on the path (or -1) */
            c->anc[anc_used + depth] = c->slot[i];
            c->anc_len[i] = depth + 1;
        }
        anc_used += c->anc_len[i];
        const bool want = b->logits ? b->logits[i] != 0 : false;
        c->logit_row[i] = -1;
        if (want) {
            if (n_out >= c->p.n_logits_max)
                return es_fail(err, ES_ERR_RANGE, "batch asks for more than %d rows of logits", c->p.n_logits_max);
            c->logit_row[i] = n_out;
            c->out_idx[n_out++] = i;
        }
    }
    if (!b->logits) { /* default: the last token */
        c->logit_row[n - 1] = 0;
        c->out_idx[0] = n - 1;
        n_out = 1;
    }
    c->n_out = n_out;
    /* Reserve pages; roll back every sequence touched so far on failure. */
    for (int s = 0; s < c->p.n_seq_max; s++) {
        if (!c->seq_count[s]) continue;
        es_status st = es_kv_seq_reserve(c->kv, s, es_kv_seq_len(c->kv, s) + c->seq_count[s], err);
        if (st != ES_OK) {
            for (int r = 0; r < s; r++)
                if (c->seq_count[r]) es_kv_seq_truncate(c->kv, r, es_kv_seq_len(c->kv, r));
            return st;
        }
    }
    return ES_OK;
}

/* ---- the forward pass ------------------------------------------------------------------------- */

es_status es_decode(es_ctx *c, const es_batch *b, es_err *err) {
    if (!c || !b) return es_fail(err, ES_ERR_INVALID_ARG, "null context or batch");
    es_status st = prepare(c, b, err);
    if (st != ES_OK) return st;
    const es_model *m = c->model;
    const es_hparams *hp = &m->hp;
    const int n = b->n_tokens, d = hp->n_embd;
    const int nth = es_threadpool_n_threads(c->tp), group = hp->n_head / hp->n_head_kv;

    for (int i = 0; i < n; i++) es_mat_get_row(&m->tok_embd, b->token[i], c->x + (size_t)i * d);
    /* Split each kv head's query heads into sub-groups only when there are too few items to keep
     * every thread busy (decode of one token with few kv heads). */
    make_groups(c, b);
    int n_sub = 1;
    while ((int64_t)c->n_grp * hp->n_head_kv * n_sub < 2 * (int64_t)nth && group % (2 * n_sub) == 0) n_sub *= 2;

    for (int il = 0; il < hp->n_layer; il++) {
        const es_layer *L = &m->layers[il];
        /* x += (previous layer's FFN output); xb = attn_norm(x) */
        ew_task et = {c, b, L, L->attn_norm, il, n, EW_NORM, il > 0};
        run_ew(c, &et);
        { /* q, k, v share their input: one activation quantisation, one parallel region */
            float *const ys[3] = {c->q, c->k, c->v};
            const es_mat *const ws[3] = {&L->wq, &L->wk, &L->wv};
            es_matmul_multi(c->tp, 3, ys, ws, c->xb, n, c->mm_scratch);
        }
        et.kind = EW_QKV; /* biases, RoPE, K/V into the cache */
        run_ew(c, &et);
        att_task at = {c, b, il, n_sub, 0};
        es_threadpool_run(c->tp, attention_worker, &at);
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
    }

    ew_task ft = {c, b, NULL, m->output_norm, hp->n_layer, c->n_out, EW_FINAL, true};
    run_ew(c, &ft);
    if (c->n_out > 0) es_matmul(c->tp, c->logits, &m->output, c->xl, c->n_out, c->mm_scratch);

    for (int i = 0; i < n; i++) { /* record each new slot's parent: the slot before it in its list */
        const int A = c->anc_len[i];
        es_kv_seq_parents(c->kv, b->seq[i])[c->slot[i]] = A >= 2 ? c->anc[c->anc_off[i] + A - 2] : c->prefix_len[i] - 1;
    }
    for (int s = 0; s < c->p.n_seq_max; s++)
        if (c->seq_count[s]) {
            es_kv_seq_set_len(c->kv, s, es_kv_seq_len(c->kv, s) + c->seq_count[s]);
            es_kv_seq_update_linear(c->kv, s);
        }
    c->n_last = n;
    return ES_OK;
}

const float *es_ctx_logits(const es_ctx *c, int i) {
    if (i < 0 || i >= c->n_last || c->logit_row[i] < 0) return NULL;
    return c->logits + (size_t)c->logit_row[i] * c->model->hp.n_vocab;
}

/* ---- sequences -------------------------------------------------------------------------------- */

es_status es_seq_open(es_ctx *c, int *seq, es_err *err) { return es_kv_seq_open(c->kv, seq, err); }
void es_seq_close(es_ctx *c, int seq) { es_kv_seq_close(c->kv, seq); }
int es_seq_len(const es_ctx *c, int seq) { return es_kv_seq_len(c->kv, seq); }

es_status es_seq_truncate(es_ctx *c, int seq, int len, es_err *err) {
    if (!es_kv_seq_valid(c->kv, seq)) return es_fail(err, ES_ERR_INVALID_ARG, "sequence %d is not open", seq);
    if (len < 0 || len > es_kv_seq_len(c->kv, seq))
        return es_fail(err, ES_ERR_RANGE, "cannot truncate sequence %d of %d tokens to %d", seq, es_kv_seq_len(c->kv, seq), len);
    es_kv_seq_truncate(c->kv, seq, len);
    return ES_OK;
}

es_status es_seq_keep(es_ctx *c, int seq, int base, const int32_t *slots, int n, es_err *err) {
    return es_kv_seq_keep(c->kv, seq, base, slots, n, err);
}

int64_t es_ctx_kv_blocks_used(const es_ctx *c) { return es_kv_blocks_used(c->kv); }
int64_t es_ctx_kv_blocks_total(const es_ctx *c) { return es_kv_blocks_total(c->kv); }
const es_model *es_ctx_model(const es_ctx *c) { return c->model; }

double es_ctx_worker_cpu_seconds(es_ctx *c) { return es_threadpool_cpu_seconds(c->tp); }

int64_t es_model_kv_bytes_per_block(const es_model *m, int kv_block_size, es_kv_type type) {
    const es_hparams *hp = &m->hp;
    return es_kv_bytes_per_block(hp->n_layer, hp->n_head_kv * hp->head_dim, kv_block_size, type);
}

int64_t es_ctx_kv_bytes_per_token(const es_model *m, es_kv_type type) {
    if (type == ES_KV_Q8_0 && m->hp.head_dim % 32) return 0;
    return es_model_kv_bytes_per_block(m, 1, type);
}

es_kv_type es_ctx_kv_type(const es_ctx *c) { return c->p.kv_type; }

es_status es_ctx_prefix_cache_enable(es_ctx *c, es_err *err) { return es_kv_prefix_enable(c->kv, err); }
int es_seq_prefix_adopt(es_ctx *c, int seq, const int32_t *tokens, int n) { return es_kv_prefix_adopt(c->kv, seq, tokens, n); }
int es_seq_prefix_keep(es_ctx *c, int seq, const int32_t *tokens, int n) { return es_kv_prefix_keep(c->kv, seq, tokens, n); }
void es_ctx_prefix_cache_info(const es_ctx *c, es_prefix_cache_info *out) { es_kv_prefix_stats(c->kv, out); }
