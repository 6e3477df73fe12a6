/* kv.h — a paged KV cache shared by many sequences.
 *
 * Memory is a pool of fixed-size pages ("blocks") of block_size token slots; a page holds the K and V
 * rows of every layer for its slots. Each sequence owns a block table; slot s of a sequence lives in
 * page table[s / block_size] at offset s % block_size. Pages are taken from a free list as a sequence
 * grows and returned when it is truncated or closed, so the pool's memory budget is shared by all
 * sessions and a finished session frees its memory at once. Rows are stored as f32, f16 or q8_0
 * (es_kv_type); writes convert from f32, attention reads through an es_attn_cache view. */
#ifndef ES_MODEL_KV_H
#define ES_MODEL_KV_H

#include <stdbool.h>
#include <stdint.h>

#include "edgespec.h"
#include "kernels/attn.h"

typedef struct es_kv es_kv;

/* Pool of n_blocks pages for n_seq_max sequences of at most n_ctx slots each, rows of `type`
 * (q8_0 needs kv_dim a multiple of 32). */
es_status es_kv_init(int n_layer, int kv_dim, int block_size, int64_t n_blocks, int n_seq_max, int n_ctx,
                     es_kv_type type, es_kv **out, es_err *err);
/* Bytes of one page: K and V rows of every layer for block_size slots; 0 if the type cannot hold rows
 * of kv_dim or the size overflows. */
int64_t es_kv_bytes_per_block(int n_layer, int kv_dim, int block_size, es_kv_type type);
void es_kv_free(es_kv *kv);

es_status es_kv_seq_open(es_kv *kv, int *seq, es_err *err);
void es_kv_seq_close(es_kv *kv, int seq);
bool es_kv_seq_valid(const es_kv *kv, int seq);
int es_kv_seq_len(const es_kv *kv, int seq);
/* Makes room for `len` slots (allocating pages); on ES_ERR_FULL nothing changes. */
es_status es_kv_seq_reserve(es_kv *kv, int seq, int len, es_err *err);
/* Sets the sequence length (<= reserved capacity) without freeing pages (used after a forward pass). */
void es_kv_seq_set_len(es_kv *kv, int seq, int len);
/* Shrinks to len, returning whole pages no longer used. */
void es_kv_seq_truncate(es_kv *kv, int seq, int len);
/* Moves slots[k] (strictly increasing, >= base, < len) to base + k, then truncates to base + n. The
 * kept slots are taken to be a path (each the parent of the next), so they become a chain. */
es_status es_kv_seq_keep(es_kv *kv, int seq, int base, const int32_t *slots, int n, es_err *err);

/* Writes the K and V rows (kv_dim floats each, converted to the cache's type) of a slot in one layer.
 * The slot must be within the reserved capacity. */
void es_kv_store(es_kv *kv, int seq, int layer, int slot, const float *k, const float *v);
/* Reads a slot's K / V row back as f32 (kv_dim floats; tests and debugging). */
void es_kv_load(const es_kv *kv, int seq, int layer, int slot, float *k, float *v);
/* The attention view of one layer of a sequence (valid until the sequence's pages change). */
void es_kv_attn_view(const es_kv *kv, int seq, int layer, es_attn_cache *out);

/* Tree structure of a sequence's slots: parent slot of every slot (-1 for slot 0), and the length of
 * the leading run of slots that form a plain chain (slot i's parent is i-1). Tokens attend to their
 * ancestors only, so slots of rejected or not-yet-verified branches stay invisible to other branches. */
int32_t *es_kv_seq_parents(es_kv *kv, int seq);
int es_kv_seq_linear(const es_kv *kv, int seq);
/* Recomputes the linear run after slots [from, len) got parents. */
void es_kv_seq_update_linear(es_kv *kv, int seq);

/* ---- prefix cache (off until enabled) ----
 * Pages that hold the K/V rows of a token prefix are kept after their sequence lets go, indexed by
 * their chain of tokens, and adopted by a later sequence that starts with the same tokens (whole
 * pages only). A page more than one holder shares is copied before a sequence writes into it, so
 * sharing never changes anyone's rows. Cached pages nobody else holds count as free: they are
 * evicted (least recently released first) when the free list runs out. */
es_status es_kv_prefix_enable(es_kv *kv, es_err *err);
/* Called after a page is copied on write (host rows already copied): a backend that keeps its own
 * copy of the KV rows copies page src to page dst likewise. An error fails the write that needed it. */
typedef es_status (*es_kv_copy_fn)(void *ud, int32_t src_page, int32_t dst_page, es_err *err);
void es_kv_set_copy_hook(es_kv *kv, es_kv_copy_fn fn, void *ud);
/* What happens to a page, for a backend that keeps copies of some pages elsewhere (a device tier):
 * TAKEN: a sequence got it for new rows (its old content is gone); FREED: nobody holds it any more.
 * Called inside the pool's operations: the hook only does bookkeeping. */
typedef enum { ES_KV_PAGE_TAKEN, ES_KV_PAGE_FREED } es_kv_page_event;
typedef void (*es_kv_page_fn)(void *ud, int32_t page, es_kv_page_event ev);
void es_kv_set_page_hook(es_kv *kv, es_kv_page_fn fn, void *ud);
/* The rows of one layer of a page in the host pool: block_size rows of the pool's row size, K and V. */
uint8_t *es_kv_page_k(es_kv *kv, int32_t page, int layer);
uint8_t *es_kv_page_v(es_kv *kv, int32_t page, int layer);
size_t es_kv_row_bytes(const es_kv *kv);
/* Gives the empty sequence the longest run of cached pages matching tokens[0..n) (whole pages):
 * returns the slots it now holds (0: none, or no cache, or the sequence is not empty). */
int es_kv_prefix_adopt(es_kv *kv, int seq, const int32_t *tokens, int n);
/* Indexes the sequence's full pages whose slots hold tokens[0..n) along one chain; the cache holds
 * them from then on. Returns the pages newly indexed. */
int es_kv_prefix_keep(es_kv *kv, int seq, const int32_t *tokens, int n);
void es_kv_prefix_stats(const es_kv *kv, es_prefix_cache_info *out);

int es_kv_block_size(const es_kv *kv);
/* The page table of a sequence (for walking slots page by page in attention). */
const int32_t *es_kv_seq_blocks(const es_kv *kv, int seq);
/* Pages the sequence holds now (its table's length). */
int es_kv_seq_n_blocks(const es_kv *kv, int seq);

int64_t es_kv_blocks_used(const es_kv *kv);
int64_t es_kv_blocks_total(const es_kv *kv);

#endif
