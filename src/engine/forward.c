/* forward.c — es_ctx: the KV cache, the batch bookkeeping, and the forward pass through a backend.
 *
 * One es_decode evaluates n tokens of any number of sequences at once. Here the batch is validated,
 * each token gets its KV slot and its attention set (the sequence's cached prefix plus its ancestors
 * in the batch or the cache: a tree mask given by parent indices, never a dense mask), the tokens of
 * a sequence are grouped so attention reads their shared prefix once, and KV pages are reserved. The
 * context's backend (backend/backend.h: the CPU kernels, or a device) then computes the layers over
 * that plan; afterwards the new slots' parents are recorded and the sequences advance.
 *
 * All bookkeeping is allocated in es_ctx_init from the batch limits; es_decode never allocates. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "backend/vulkan/vk_backend.h"
#include "engine/ctx.h"
#include "model/kv.h"
#include "model/model.h"
#include "util/err.h"

struct es_ctx {
    const es_model *model;
    es_ctx_params p;
    es_kv *kv;
    es_backend *be;       /* computes the layers */

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
    int32_t *move_src, *move_dst; /* [n_ctx] cache rows es_seq_keep moves (backends with their own KV) */

    int32_t exit_layer[ES_EXIT_MAX]; /* es_ctx_set_exit_hook: increasing */
    int n_exit;
    es_exit_fn exit_fn;
    void *exit_ud;

    es_hybrid_mode hybrid; /* es_ctx_set_hybrid_mode */
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
    if (c->be) c->be->ops->free(c->be);
    es_kv_free(c->kv);
    free(c->slot); free(c->anc_off); free(c->anc_len); free(c->anc); free(c->prefix_len);
    free(c->seq_count); free(c->seq_last); free(c->logit_row); free(c->out_idx); free(c->grp_start); free(c->grp_common);
    free(c->move_src); free(c->move_dst);
    free(c);
}

/* The KV pool copied page src to page dst before a write (copy on write of a page the prefix cache
 * shares): a backend with its own KV rows copies them likewise, row by row in the page. */
static es_status copy_page(void *ud, int32_t src, int32_t dst, es_err *err) {
    es_ctx *c = ud;
    return c->be->ops->page_copy(c->be, src, dst, err);
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
        (st = p.backend == ES_BACKEND_VULKAN
                   ? es_backend_vulkan_init(model, c->kv, &p, &c->be, err)
                   : es_backend_cpu_init(model, c->kv, p.n_threads, p.n_batch_max, p.n_logits_max, &c->be, err)) != ES_OK) {
        es_ctx_free(c);
        return st;
    }
    const size_t n = (size_t)p.n_batch_max;
    c->slot = malloc(n * sizeof(int32_t));
    c->anc_off = malloc(n * sizeof(int32_t));
    c->anc_len = malloc(n * sizeof(int32_t));
    c->anc_cap = ES_PLAN_ANC_CAP(n);
    c->anc = malloc((size_t)c->anc_cap * sizeof(int32_t));
    c->prefix_len = malloc(n * sizeof(int32_t));
    c->seq_count = calloc((size_t)p.n_seq_max, sizeof(int32_t));
    c->seq_last = malloc((size_t)p.n_seq_max * sizeof(int32_t));
    c->logit_row = malloc(n * sizeof(int32_t));
    c->out_idx = malloc(n * sizeof(int32_t));
    c->grp_start = malloc((n + 1) * sizeof(int32_t));
    c->grp_common = malloc(n * sizeof(int32_t));
    if (c->be->ops->kv_move) {
        c->move_src = malloc((size_t)p.n_ctx * sizeof(int32_t));
        c->move_dst = malloc((size_t)p.n_ctx * sizeof(int32_t));
        es_kv_set_copy_hook(c->kv, copy_page, c); /* the prefix cache's copy on write, on the device too */
    }
    if (!c->slot || !c->anc_off || !c->anc_len || !c->anc || !c->prefix_len || !c->seq_count || !c->seq_last ||
        !c->logit_row || !c->out_idx || !c->grp_start || !c->grp_common ||
        (c->be->ops->kv_move && (!c->move_src || !c->move_dst))) {
        es_ctx_free(c);
        return es_fail(err, ES_ERR_NOMEM, "cannot allocate the context's batch bookkeeping (batch %d)", p.n_batch_max);
    }
    *out = c;
    return ES_OK;
}

/* ---- batch plan ------------------------------------------------------------------------------ */

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
    const int n = b->n_tokens;
    make_groups(c, b);
    const es_fwd_plan plan = {b, n, c->slot, c->prefix_len, c->anc_off, c->anc_len, c->anc,
                              c->n_grp, c->grp_start, c->grp_common, c->n_out, c->out_idx,
                              c->n_exit, c->exit_layer, c->exit_fn, c->exit_ud, c->hybrid};
    st = c->be->ops->forward(c->be, &plan, err);
    if (st != ES_OK) { /* the reserved pages go back; the sequences keep their lengths */
        for (int s = 0; s < c->p.n_seq_max; s++)
            if (c->seq_count[s]) es_kv_seq_truncate(c->kv, s, es_kv_seq_len(c->kv, s));
        c->n_last = 0;
        return st;
    }

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

es_status es_ctx_set_exit_hook(es_ctx *c, const int *layers, int n, es_exit_fn fn, void *ud, es_err *err) {
    if (!c) return es_fail(err, ES_ERR_INVALID_ARG, "null context");
    if (n == 0 || !fn) {
        c->n_exit = 0;
        c->exit_fn = NULL;
        c->exit_ud = NULL;
        return ES_OK;
    }
    const int nl = c->model->hp.n_layer;
    if (n < 0 || n > ES_EXIT_MAX || !layers)
        return es_fail(err, ES_ERR_INVALID_ARG, "exit hook: %d layers (must be 1..%d)", n, ES_EXIT_MAX);
    int32_t sorted[ES_EXIT_MAX];
    for (int i = 0; i < n; i++) {
        if (layers[i] < 1 || layers[i] > nl)
            return es_fail(err, ES_ERR_RANGE, "exit layer %d outside 1..%d (the model's layers)", layers[i], nl);
        int j = i; /* insertion sort: at most ES_EXIT_MAX entries */
        while (j > 0 && sorted[j - 1] > layers[i]) { sorted[j] = sorted[j - 1]; j--; }
        sorted[j] = layers[i];
    }
    for (int i = 1; i < n; i++)
        if (sorted[i] == sorted[i - 1]) return es_fail(err, ES_ERR_INVALID_ARG, "exit layer %d given twice", sorted[i]);
    memcpy(c->exit_layer, sorted, (size_t)n * sizeof(int32_t));
    c->n_exit = n;
    c->exit_fn = fn;
    c->exit_ud = ud;
    return ES_OK;
}

const float *es_ctx_logits(const es_ctx *c, int i) {
    if (i < 0 || i >= c->n_last || c->logit_row[i] < 0) return NULL;
    return c->be->ops->logits(c->be, c->logit_row[i]);
}

/* ---- sequences -------------------------------------------------------------------------------- */

es_status es_seq_open(es_ctx *c, int *seq, es_err *err) { return es_kv_seq_open(c->kv, seq, err); }
void es_seq_close(es_ctx *c, int seq) {
    if (!es_kv_seq_valid(c->kv, seq)) return;
    es_kv_seq_close(c->kv, seq);
    if (c->be->ops->seq_reset) c->be->ops->seq_reset(c->be, seq);
}
int es_seq_len(const es_ctx *c, int seq) { return es_kv_seq_len(c->kv, seq); }

es_status es_seq_truncate(es_ctx *c, int seq, int len, es_err *err) {
    if (!es_kv_seq_valid(c->kv, seq)) return es_fail(err, ES_ERR_INVALID_ARG, "sequence %d is not open", seq);
    if (len < 0 || len > es_kv_seq_len(c->kv, seq))
        return es_fail(err, ES_ERR_RANGE, "cannot truncate sequence %d of %d tokens to %d", seq, es_kv_seq_len(c->kv, seq), len);
    es_kv_seq_truncate(c->kv, seq, len);
    return ES_OK;
}

es_status es_seq_keep(es_ctx *c, int seq, int base, const int32_t *slots, int n, es_err *err) {
    if (!c->be->ops->kv_move) return es_kv_seq_keep(c->kv, seq, base, slots, n, err);
    /* the backend keeps its own KV rows: note where each moved row lives before the keep truncates
     * the page table (es_kv_seq_keep validates the list; rows are only read once it accepted it) */
    int moves = 0;
    const int len = es_kv_seq_valid(c->kv, seq) ? es_kv_seq_len(c->kv, seq) : 0, bs = es_kv_block_size(c->kv);
    const int32_t *tab = len ? es_kv_seq_blocks(c->kv, seq) : NULL;
    for (int k = 0; k < n && tab && moves < c->p.n_ctx; k++) {
        const int from = slots[k], to = base + k;
        if (from == to || from < 0 || from >= len || to < 0 || to >= len) continue;
        c->move_src[moves] = tab[from / bs] * bs + from % bs;
        c->move_dst[moves++] = to; /* a slot for now: the keep may give its page a private copy */
    }
    es_status st = es_kv_seq_keep(c->kv, seq, base, slots, n, err);
    if (st != ES_OK || moves == 0) return st;
    tab = es_kv_seq_blocks(c->kv, seq); /* (a source page copied on write still holds the same rows) */
    for (int k = 0; k < moves; k++) c->move_dst[k] = tab[c->move_dst[k] / bs] * bs + c->move_dst[k] % bs;
    return c->be->ops->kv_move(c->be, seq, c->move_src, c->move_dst, moves, err);
}

es_status es_seq_set_tier(es_ctx *c, int seq, es_kv_tier tier, es_err *err) {
    if (!es_kv_seq_valid(c->kv, seq)) return es_fail(err, ES_ERR_INVALID_ARG, "sequence %d is not open", seq);
    if (tier != ES_KV_TIER_DEVICE && tier != ES_KV_TIER_HOST) return es_fail(err, ES_ERR_INVALID_ARG, "no KV tier %d", (int)tier);
    if (!c->be->ops->set_tier)
        return es_fail(err, ES_ERR_UNSUPPORTED, "this context has one KV tier (a Vulkan device with device_kv_blocks below kv_blocks has two)");
    return c->be->ops->set_tier(c->be, seq, tier, err);
}

es_kv_tier es_seq_tier(const es_ctx *c, int seq) {
    if (!c->be->ops->tier || !es_kv_seq_valid(c->kv, seq)) return ES_KV_TIER_DEVICE;
    return c->be->ops->tier(c->be, seq);
}

void es_ctx_set_hybrid_mode(es_ctx *c, es_hybrid_mode mode) {
    c->hybrid = mode == ES_HYBRID_ASYMMETRIC ? ES_HYBRID_ASYMMETRIC : ES_HYBRID_ASYNC_OVERLAP;
}

void es_ctx_tier_info(const es_ctx *c, es_tier_info *out) {
    memset(out, 0, sizeof *out);
    if (c->be->ops->tier_info) c->be->ops->tier_info(c->be, out);
}

int64_t es_ctx_kv_blocks_used(const es_ctx *c) { return es_kv_blocks_used(c->kv); }
int64_t es_ctx_kv_blocks_total(const es_ctx *c) { return es_kv_blocks_total(c->kv); }
const es_model *es_ctx_model(const es_ctx *c) { return c->model; }

double es_ctx_worker_cpu_seconds(es_ctx *c) { return c->be->ops->worker_cpu_seconds(c->be); }

int64_t es_model_kv_bytes_per_block(const es_model *m, int kv_block_size, es_kv_type type) {
    const es_hparams *hp = &m->hp;
    return es_kv_bytes_per_block(hp->n_layer, hp->n_head_kv * hp->head_dim, kv_block_size, type);
}

int64_t es_ctx_kv_bytes_per_token(const es_model *m, es_kv_type type) {
    if (type == ES_KV_Q8_0 && m->hp.head_dim % 32) return 0;
    return es_model_kv_bytes_per_block(m, 1, type);
}

es_status es_ctx_prefix_cache_enable(es_ctx *c, es_err *err) {
    /* (with two KV tiers the backend follows which copies of a shared page hold its rows: page events) */
    return es_kv_prefix_enable(c->kv, err);
}
int es_seq_prefix_adopt(es_ctx *c, int seq, const int32_t *tokens, int n) { return es_kv_prefix_adopt(c->kv, seq, tokens, n); }
int es_seq_prefix_keep(es_ctx *c, int seq, const int32_t *tokens, int n) { return es_kv_prefix_keep(c->kv, seq, tokens, n); }
void es_ctx_prefix_cache_info(const es_ctx *c, es_prefix_cache_info *out) { es_kv_prefix_stats(c->kv, out); }
