/* attn.h — one-pass (online-softmax, "flash"-style) attention of a group of query heads over a paged
 * KV cache, with the tree mask given as a contiguous prefix plus a list of ancestor slots.
 *
 * Rows of the cache are stored in one of three element types (es_kv_type: f32, f16, q8_0 with one
 * fp16 scale per 32 values, the GGUF Q8_0 block). The kernel converts each K / V row segment of the
 * kv head to f32 once and uses it for every query head of the GQA group sharing that kv head, so a
 * cache row is read once per group. Softmax is computed online: slots are taken in chunks (a page of
 * the prefix, or up to a page's worth of listed ancestors); per chunk the running max m, running sum
 * l and output accumulator are rescaled once by exp(m_old - m_new). The result equals the three-pass
 * softmax(q·Kᵀ·scale)·V up to float rounding (tests/test_attn.c states the tolerance). */
#ifndef ES_KERNELS_ATTN_H
#define ES_KERNELS_ATTN_H

#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"

/* Bytes of one cache row of n elements of `type` (n a multiple of 32 for q8_0); 0 if impossible. */
size_t es_kv_type_row_bytes(es_kv_type type, int64_t n);
/* es_kv_type_name is declared in edgespec.h */
/* Parses the names above (case-sensitive); -1 if unknown. */
int es_kv_type_from_name(const char *name);

/* Converts n floats into a cache row of `type` (dst holds es_kv_type_row_bytes(type, n) bytes). */
void es_kv_row_from_f32(es_kv_type type, const float *src, void *dst, int64_t n);
/* Converts elements [off, off + n) of a cache row to f32 (off and n multiples of 32 for q8_0). */
void es_kv_row_to_f32(es_kv_type type, const void *row, int64_t off, float *dst, int64_t n);

/* One layer's view of a paged cache: the row of slot s lives in page table[s / block_size], at
 * k + table[..] * page_bytes + (s % block_size) * row_bytes (same for v). */
typedef struct es_attn_cache {
    es_kv_type type;
    int block_size;
    size_t row_bytes;        /* one slot's row: kv_dim elements of `type` */
    size_t page_bytes;       /* distance between the same row of consecutive pages */
    const uint8_t *k, *v;    /* this layer's slot 0 in page 0 */
    const int32_t *table;    /* the sequence's page table */
} es_attn_cache;

/* Floats of scratch es_attn_group needs for n_q query heads of head_dim and pages of block_size. */
size_t es_attn_scratch_floats(int n_q, int head_dim, int block_size);
/* Floats of scratch es_attn_multi needs for n_rows query rows in all (tokens x heads) of head_dim. */
size_t es_attn_multi_scratch_floats(int n_rows, int head_dim);

/* out[h][0..head_dim) = softmax_s(scale · q[h]·K[s]) · V[s] for h < n_q, over the slots
 * s ∈ [0, prefix_len) ∪ {anc[0..n_anc)} of kv head `kv_head` (elements [kv_head*head_dim, +head_dim)
 * of each row). q and out hold n_q rows of head_dim floats, head_dim apart. At least one slot must be
 * attended (prefix_len + n_anc >= 1). head_dim must be a multiple of 32 for q8_0 caches (es_ctx_init
 * checks). `scratch` holds es_attn_scratch_floats(...) floats. Never allocates; thread-safe for
 * distinct out / scratch. */
void es_attn_group(const es_attn_cache *c, int kv_head, int head_dim, int n_q, const float *q, float scale,
                   int prefix_len, const int32_t *anc, int n_anc, float *out, float *scratch);

/* One query token of es_attn_multi: n_q rows of queries and outputs (head_dim floats each, head_dim
 * apart) and the slots it attends after the shared prefix (its cached tree ancestors, its ancestors
 * in the batch, itself last). */
typedef struct es_attn_query {
    const float *q;
    float *out;
    const int32_t *anc;
    int n_anc;
} es_attn_query;

/* es_attn_group for n_tok tokens of one sequence at once: every token attends to the slots
 * [0, prefix_len) and then its own anc list, and the first n_common entries of every token's anc list
 * are the same slots (n_common <= each n_anc; 0 is always allowed). The chunks that lie wholly in that
 * shared part of the attended lists are converted once and used for every token's rows, so verifying
 * a tree or a chain of k tokens reads the prefix's K and V once instead of k times. Each token's
 * result is bit-identical to the token alone (es_attn_group, or es_attn_multi with n_tok = 1): every
 * query row does the same arithmetic in the same order whatever else is batched with it. `scratch`
 * holds es_attn_multi_scratch_floats(n_tok * n_q, head_dim) floats. */
void es_attn_multi(const es_attn_cache *c, int kv_head, int head_dim, int n_q, float scale, int prefix_len,
                   int n_common, const es_attn_query *tok, int n_tok, float *scratch);

/* g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i] (the SwiGLU gate), vectorised where the
 * CPU allows (exp to about 2 ulp there, libm's expf otherwise). */
void es_vec_silu_mul(float *g, const float *u, int64_t n);

#endif
