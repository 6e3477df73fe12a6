#include "model/kv.h"

#include <stdlib.h>
#include <string.h>

#include "util/err.h"

typedef struct kv_seq {
    bool open;
    int len;        /* slots holding tokens */
    int n_blocks;   /* pages owned */
    int32_t *table; /* [max_blocks_per_seq] page ids */
    int32_t *parent; /* [n_ctx] parent slot of each slot */
    int linear;      /* slots [0, linear) form a chain */
} kv_seq;

struct es_kv {
    int n_layer, kv_dim, block_size, n_ctx, n_seq_max, max_blocks_per_seq;
    int64_t n_blocks, n_free;
    es_kv_type type;
    size_t row_bytes;    /* one slot's row of kv_dim elements of `type` */
    size_t page_bytes;   /* bytes per page per K (or V): n_layer * block_size * row_bytes */
    uint8_t *k, *v;      /* [n_blocks][n_layer][block_size][row_bytes] */
    int32_t *free_list;  /* stack of free page ids */
    kv_seq *seqs;
    int32_t *tables;     /* backing store of every seq's table */
    int32_t *parents;    /* backing store of every seq's parent array */
};

int64_t es_kv_bytes_per_block(int n_layer, int kv_dim, int block_size, es_kv_type type) {
    const size_t row = es_kv_type_row_bytes(type, kv_dim);
    uint64_t b;
    if (!row || n_layer <= 0 || block_size <= 0 || !es_mul_ok((uint64_t)row, (uint64_t)n_layer, &b) ||
        !es_mul_ok(b, (uint64_t)block_size, &b) || !es_mul_ok(b, 2, &b) || b > (uint64_t)INT64_MAX)
        return 0;
    return (int64_t)b;
}

es_status es_kv_init(int n_layer, int kv_dim, int block_size, int64_t n_blocks, int n_seq_max, int n_ctx,
                     es_kv_type type, es_kv **out, es_err *err) {
    *out = NULL;
    if (n_layer <= 0 || kv_dim <= 0 || block_size <= 0 || block_size > 4096 || n_blocks <= 0 || n_blocks > INT32_MAX ||
        n_seq_max <= 0 || n_seq_max > 1 << 20 || n_ctx <= 0)
        return es_fail(err, ES_ERR_INVALID_ARG, "bad KV cache parameters");
    if (type != ES_KV_F32 && type != ES_KV_F16 && type != ES_KV_Q8_0)
        return es_fail(err, ES_ERR_INVALID_ARG, "unknown KV cache type %d", (int)type);
    if (type == ES_KV_Q8_0 && kv_dim % 32)
        return es_fail(err, ES_ERR_UNSUPPORTED, "a q8_0 KV cache needs rows that are a multiple of 32 values, not %d", kv_dim);
    es_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    kv->n_layer = n_layer;
    kv->kv_dim = kv_dim;
    kv->block_size = block_size;
    kv->n_ctx = n_ctx;
    kv->n_seq_max = n_seq_max;
    kv->max_blocks_per_seq = (n_ctx + block_size - 1) / block_size;
    kv->n_blocks = n_blocks;
    kv->type = type;
    kv->row_bytes = es_kv_type_row_bytes(type, kv_dim);
    kv->page_bytes = (size_t)n_layer * (size_t)block_size * kv->row_bytes;
    uint64_t total;
    if (!es_mul_ok(kv->page_bytes, (uint64_t)n_blocks, &total) || total > SIZE_MAX / 2) {
        free(kv);
        return es_fail(err, ES_ERR_INVALID_ARG, "KV pool size overflows");
    }
    kv->k = malloc(total);
    kv->v = malloc(total);
    kv->free_list = malloc((size_t)n_blocks * sizeof(int32_t));
    kv->seqs = calloc((size_t)n_seq_max, sizeof *kv->seqs);
    kv->tables = malloc((size_t)n_seq_max * (size_t)kv->max_blocks_per_seq * sizeof(int32_t));
    kv->parents = malloc((size_t)n_seq_max * (size_t)n_ctx * sizeof(int32_t));
    if (!kv->k || !kv->v || !kv->free_list || !kv->seqs || !kv->tables || !kv->parents) {
        es_kv_free(kv);
        return es_fail(err, ES_ERR_NOMEM, "cannot allocate a KV pool of %.1f MB", 2.0 * (double)total / 1e6);
    }
    /* Pop order low ids first: the stack holds ids descending. */
    for (int64_t i = 0; i < n_blocks; i++) kv->free_list[i] = (int32_t)(n_blocks - 1 - i);
    kv->n_free = n_blocks;
    for (int s = 0; s < n_seq_max; s++) {
        kv->seqs[s].table = kv->tables + (size_t)s * kv->max_blocks_per_seq;
        kv->seqs[s].parent = kv->parents + (size_t)s * n_ctx;
    }
    *out = kv;
    return ES_OK;
}

void es_kv_free(es_kv *kv) {
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->free_list);
    free(kv->seqs);
    free(kv->tables);
    free(kv->parents);
    free(kv);
}

es_status es_kv_seq_open(es_kv *kv, int *seq, es_err *err) {
    for (int s = 0; s < kv->n_seq_max; s++) {
        if (!kv->seqs[s].open) {
            kv->seqs[s].open = true;
            kv->seqs[s].len = 0;
            kv->seqs[s].n_blocks = 0;
            kv->seqs[s].linear = 0;
            *seq = s;
            return ES_OK;
        }
    }
    return es_fail(err, ES_ERR_FULL, "all %d sequences are in use", kv->n_seq_max);
}

bool es_kv_seq_valid(const es_kv *kv, int seq) { return seq >= 0 && seq < kv->n_seq_max && kv->seqs[seq].open; }

static void release_blocks(es_kv *kv, kv_seq *s, int keep_blocks) {
    while (s->n_blocks > keep_blocks) kv->free_list[kv->n_free++] = s->table[--s->n_blocks];
}

void es_kv_seq_close(es_kv *kv, int seq) {
    if (!es_kv_seq_valid(kv, seq)) return;
    kv_seq *s = &kv->seqs[seq];
    release_blocks(kv, s, 0);
    s->len = 0;
    s->linear = 0;
    s->open = false;
}

int es_kv_seq_len(const es_kv *kv, int seq) { return es_kv_seq_valid(kv, seq) ? kv->seqs[seq].len : -1; }

es_status es_kv_seq_reserve(es_kv *kv, int seq, int len, es_err *err) {
    if (!es_kv_seq_valid(kv, seq)) return es_fail(err, ES_ERR_INVALID_ARG, "sequence %d is not open", seq);
    if (len > kv->n_ctx)
        return es_fail(err, ES_ERR_RANGE, "sequence %d would hold %d tokens, more than the context of %d", seq, len,
                       kv->n_ctx);
    kv_seq *s = &kv->seqs[seq];
    int need = (len + kv->block_size - 1) / kv->block_size;
    if (need <= s->n_blocks) return ES_OK;
    if (need - s->n_blocks > kv->n_free)
        return es_fail(err, ES_ERR_FULL, "KV pool exhausted: sequence %d needs %d more pages, %lld free of %lld", seq,
                       need - s->n_blocks, (long long)kv->n_free, (long long)kv->n_blocks);
    while (s->n_blocks < need) s->table[s->n_blocks++] = kv->free_list[--kv->n_free];
    return ES_OK;
}

void es_kv_seq_set_len(es_kv *kv, int seq, int len) { kv->seqs[seq].len = len; }

void es_kv_seq_truncate(es_kv *kv, int seq, int len) {
    if (!es_kv_seq_valid(kv, seq) || len < 0) return;
    kv_seq *s = &kv->seqs[seq];
    if (len < s->len) s->len = len;
    if (s->linear > s->len) s->linear = s->len;
    release_blocks(kv, s, (s->len + kv->block_size - 1) / kv->block_size);
}

/* Byte offset of a slot's row in one layer (same in the K and V pools). */
static inline size_t slot_offset(const es_kv *kv, const kv_seq *s, int layer, int slot) {
    int32_t b = s->table[slot / kv->block_size];
    return (size_t)b * kv->page_bytes + ((size_t)layer * kv->block_size + (size_t)(slot % kv->block_size)) * kv->row_bytes;
}

void es_kv_store(es_kv *kv, int seq, int layer, int slot, const float *k, const float *v) {
    const size_t off = slot_offset(kv, &kv->seqs[seq], layer, slot);
    es_kv_row_from_f32(kv->type, k, kv->k + off, kv->kv_dim);
    es_kv_row_from_f32(kv->type, v, kv->v + off, kv->kv_dim);
}

void es_kv_load(const es_kv *kv, int seq, int layer, int slot, float *k, float *v) {
    const size_t off = slot_offset(kv, &kv->seqs[seq], layer, slot);
    es_kv_row_to_f32(kv->type, kv->k + off, 0, k, kv->kv_dim);
    es_kv_row_to_f32(kv->type, kv->v + off, 0, v, kv->kv_dim);
}

void es_kv_attn_view(const es_kv *kv, int seq, int layer, es_attn_cache *out) {
    out->type = kv->type;
    out->block_size = kv->block_size;
    out->row_bytes = kv->row_bytes;
    out->page_bytes = kv->page_bytes;
    const size_t lo = (size_t)layer * kv->block_size * kv->row_bytes;
    out->k = kv->k + lo;
    out->v = kv->v + lo;
    out->table = kv->seqs[seq].table;
}

es_kv_type es_kv_get_type(const es_kv *kv) { return kv->type; }

es_status es_kv_seq_keep(es_kv *kv, int seq, int base, const int32_t *slots, int n, es_err *err) {
    if (!es_kv_seq_valid(kv, seq)) return es_fail(err, ES_ERR_INVALID_ARG, "sequence %d is not open", seq);
    kv_seq *s = &kv->seqs[seq];
    if (base < 0 || base > s->len || n < 0 || n > s->len - base)
        return es_fail(err, ES_ERR_RANGE, "keep of %d slots from %d in a sequence of %d", n, base, s->len);
    for (int k = 0; k < n; k++)
        if (slots[k] < base + k || slots[k] >= s->len || (k > 0 && slots[k] <= slots[k - 1]))
            return es_fail(err, ES_ERR_RANGE, "keep: slot list must be increasing within [%d, %d)", base, s->len);
    const size_t row = kv->row_bytes; /* rows move in their stored form: no requantisation */
    for (int k = 0; k < n; k++) {
        if (slots[k] == base + k) continue;
        for (int l = 0; l < kv->n_layer; l++) {
            memcpy(kv->k + slot_offset(kv, s, l, base + k), kv->k + slot_offset(kv, s, l, slots[k]), row);
            memcpy(kv->v + slot_offset(kv, s, l, base + k), kv->v + slot_offset(kv, s, l, slots[k]), row);
        }
    }
    for (int k = 0; k < n; k++) s->parent[base + k] = base + k - 1;
    es_kv_seq_truncate(kv, seq, base + n);
    es_kv_seq_update_linear(kv, seq);
    return ES_OK;
}

int32_t *es_kv_seq_parents(es_kv *kv, int seq) { return kv->seqs[seq].parent; }
int es_kv_seq_linear(const es_kv *kv, int seq) { return kv->seqs[seq].linear; }

void es_kv_seq_update_linear(es_kv *kv, int seq) {
    kv_seq *s = &kv->seqs[seq];
    while (s->linear < s->len && s->parent[s->linear] == s->linear - 1) s->linear++;
}

int es_kv_block_size(const es_kv *kv) { return kv->block_size; }
const int32_t *es_kv_seq_blocks(const es_kv *kv, int seq) { return kv->seqs[seq].table; }
int64_t es_kv_blocks_used(const es_kv *kv) { return kv->n_blocks - kv->n_free; }
int64_t es_kv_blocks_total(const es_kv *kv) { return kv->n_blocks; }
int es_kv_n_seq_max(const es_kv *kv) { return kv->n_seq_max; }
int es_kv_n_ctx(const es_kv *kv) { return kv->n_ctx; }
