/* backend.h — the seam between the engine's bookkeeping and the arithmetic of a forward pass.
 *
 * es_decode (engine/forward.c) validates a batch, gives each token its KV slot and its attention set,
 * groups the tokens for attention, and reserves KV pages: all of that is host work on the context's
 * block tables and is the same whatever computes the layers. It then hands the resulting plan to the
 * context's backend, which runs embedding → layers → final norm → output matrix over it and keeps the
 * logits of the rows that asked for them. After a successful forward, es_decode records the new slots'
 * parents and advances the sequences.
 *
 * A backend is a struct that starts with `es_backend` (its ops table) and is freed through it. The CPU
 * backend (backend/cpu) runs today's kernels; a device backend keeps the weights and the KV rows in
 * device memory and reads the same block tables (es_kv) for where each slot lives. */
#ifndef ES_BACKEND_BACKEND_H
#define ES_BACKEND_BACKEND_H

#include <stdint.h>

#include "edgespec.h"

/* Most tokens of one sequence in one attention group of a plan (es_attn_multi on the CPU: the shared
 * prefix's K and V converted once for all of them). More would give fewer work items to spread over
 * the threads. */
#define ES_ATTN_GROUP_MAX 16

/* How deep a branch of not-yet-compacted tree slots in the cache may be below the sequence's chain. */
#define ES_MAX_CACHED_TREE_DEPTH 256
/* Most ancestor-list entries a plan of n rows holds: one chain of n (n(n+1)/2) plus a cached branch
 * per row. */
#define ES_PLAN_ANC_CAP(n) ((int64_t)(n) * ((n) + 1) / 2 + (int64_t)(n) * ES_MAX_CACHED_TREE_DEPTH)

/* What one forward pass computes, as built by es_decode. Arrays are indexed by batch row [n] unless
 * noted and stay valid until the next es_decode. */
typedef struct es_fwd_plan {
    const es_batch *b;          /* the caller's batch: token, pos, seq */
    int n;                      /* rows (b->n_tokens) */
    const int32_t *slot;        /* KV slot of each row in its sequence */
    const int32_t *prefix_len;  /* row i attends to its sequence's chain [0, prefix_len[i]) ... */
    const int32_t *anc_off;     /* ... and then the slots anc[anc_off[i] .. + anc_len[i]) (cached tree */
    const int32_t *anc_len;     /*     ancestors, batch ancestors, itself last) */
    const int32_t *anc;
    int n_grp;                  /* attention groups: rows [grp_start[g], grp_start[g + 1]) are */
    const int32_t *grp_start;   /* consecutive tokens of one sequence with one prefix_len whose */
    const int32_t *grp_common;  /* first grp_common[g] ancestor entries are the same slots */
    int n_out;                  /* rows whose logits are wanted: out_idx[0 .. n_out) (batch rows, */
    const int32_t *out_idx;     /* increasing); logits row r belongs to batch row out_idx[r] */
    /* Early exits (es_ctx_set_exit_hook): after layer exit_layer[k] (1 .. n_layer, increasing) the
     * backend calls exit_fn with the residual stream of the n_out rows (n_layer: before the output
     * norm). n_exit == 0: none. */
    int n_exit;
    const int32_t *exit_layer;
    es_exit_fn exit_fn;
    void *exit_ud;
    /* A context with two KV tiers (es_ctx_params.device_kv_blocks): how rows of host-tier sequences
     * overlap with the device's work (es_ctx_set_hybrid_mode). */
    es_hybrid_mode hybrid;
} es_fwd_plan;

typedef struct es_backend es_backend;

typedef struct es_backend_ops {
    const char *name; /* "cpu", "vulkan" */
    /* Runs the forward pass of `plan`, writing each row's K and V into the cache at its slot, and keeps
     * n_out rows of logits. On failure the KV rows of this batch's slots are undefined (es_decode then
     * leaves the sequences' lengths unchanged, so those slots are never read). */
    es_status (*forward)(es_backend *be, const es_fwd_plan *plan, es_err *err);
    /* Logits (n_vocab floats) of logits row r (0 <= r < the last plan's n_out), in host memory. */
    const float *(*logits)(const es_backend *be, int r);
    /* Called after es_kv_seq_keep moved sequence seq's rows in the host pool: moves the backend's own
     * copies of the KV rows likewise, cache row src[k] to cache row dst[k] in order (cache row = page
     * · block_size + offset, as before the keep). NULL when the backend's KV is the host pool. */
    es_status (*kv_move)(es_backend *be, int seq, const int32_t *src, const int32_t *dst, int n, es_err *err);
    /* Called after the pool copied page src to page dst in host memory (copy on write of a page the
     * prefix cache shares): the backend's own copy follows. NULL with kv_move. */
    es_status (*page_copy)(es_backend *be, int32_t src, int32_t dst, es_err *err);
    /* Two KV tiers (NULL: one). set_tier moves a sequence's rows now; seq_reset forgets a closed
     * sequence (its next opening starts in the device tier). */
    es_status (*set_tier)(es_backend *be, int seq, es_kv_tier tier, es_err *err);
    es_kv_tier (*tier)(const es_backend *be, int seq);
    void (*seq_reset)(es_backend *be, int seq);
    void (*tier_info)(const es_backend *be, es_tier_info *out);
    /* CPU seconds its worker threads have used (0 if it has none). */
    double (*worker_cpu_seconds)(es_backend *be);
    void (*free)(es_backend *be);
} es_backend_ops;

struct es_backend {
    const es_backend_ops *ops;
};

#endif
