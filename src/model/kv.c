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

/* The prefix cache's index (es_kv_prefix_enable): pages whose rows are a known token prefix. A page is
 * named by its chain — the cached page before it (its parent) and the block_size tokens it holds —
 * so two prompts share page i only if they agree on every token up to its end. Pages only the cache
 * holds (ref 1) are idle: reclaimable, kept in least-recently-released order and evicted when the
 * free list runs dry. */
typedef struct kv_prefix {
    uint8_t *cached;     /* [n_blocks] the page is in the index */
    uint64_t *hash;      /* [n_blocks] chain hash up to the page's end */
    int32_t *up;         /* [n_blocks] the cached page before it in its chain (-1: the first page) */
    int32_t *tokens;     /* [n_blocks * block_size] the tokens whose rows it holds */
    int32_t *hnext;      /* [n_blocks] next page in its hash bucket (-1: none) */
    int32_t *heads;      /* [n_buckets] */
    uint64_t mask;       /* n_buckets - 1 */
    int32_t *lru_prev, *lru_next; /* idle pages, oldest first */
    int32_t lru_head, lru_tail;
    int64_t n_cached, n_idle;
    int64_t hit_tokens, evicted;
} kv_prefix;

struct es_kv {
    int n_layer, kv_dim, block_size, n_ctx, n_seq_max, max_blocks_per_seq;
    int64_t n_blocks, n_free;
    int32_t *ref;        /* [n_blocks] holders of each page: sequences, plus 1 while it is cached */
    kv_prefix *px;       /* NULL: no prefix cache */
    es_kv_copy_fn copy;  /* told of every page copied on write (a backend with its own copy of the rows) */
    void *copy_ud;
    es_kv_page_fn page_fn; /* told of pages taken and freed (a backend with a device tier) */
    void *page_ud;
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
    kv->ref = calloc((size_t)n_blocks, sizeof(int32_t));
    if (!kv->k || !kv->v || !kv->free_list || !kv->seqs || !kv->tables || !kv->parents || !kv->ref) {
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

static void prefix_free(kv_prefix *px) {
    if (!px) return;
    free(px->cached);
    free(px->hash);
    free(px->up);
    free(px->tokens);
    free(px->hnext);
    free(px->heads);
    free(px->lru_prev);
    free(px->lru_next);
    free(px);
}

void es_kv_free(es_kv *kv) {
    if (!kv) return;
    prefix_free(kv->px);
    free(kv->ref);
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

/* ---- page ownership -------------------------------------------------------------------------- */

static void lru_unlink(kv_prefix *px, int32_t b) {
    const int32_t p = px->lru_prev[b], n = px->lru_next[b];
    if (p >= 0) px->lru_next[p] = n;
    else px->lru_head = n;
    if (n >= 0) px->lru_prev[n] = p;
    else px->lru_tail = p;
    px->lru_prev[b] = px->lru_next[b] = -1;
    px->n_idle--;
}

static void lru_push(kv_prefix *px, int32_t b) { /* newest */
    px->lru_prev[b] = px->lru_tail;
    px->lru_next[b] = -1;
    if (px->lru_tail >= 0) px->lru_next[px->lru_tail] = b;
    else px->lru_head = b;
    px->lru_tail = b;
    px->n_idle++;
}

/* One holder less; a page nobody holds goes back to the free list, one only the cache holds idles. */
static void page_unref(es_kv *kv, int32_t b) {
    if (--kv->ref[b] == 0) {
        kv->free_list[kv->n_free++] = b;
        if (kv->page_fn) kv->page_fn(kv->page_ud, b, ES_KV_PAGE_FREED);
    }
    else if (kv->ref[b] == 1 && kv->px && kv->px->cached[b]) lru_push(kv->px, b);
}

/* One holder more (a sequence adopting a page, or the cache keeping one). */
static void page_ref(es_kv *kv, int32_t b) {
    if (kv->ref[b] == 1 && kv->px && kv->px->cached[b]) lru_unlink(kv->px, b);
    kv->ref[b]++;
}

static void index_remove(kv_prefix *px, int32_t b) {
    int32_t *at = &px->heads[px->hash[b] & px->mask];
    while (*at != b) at = &px->hnext[*at];
    *at = px->hnext[b];
    px->cached[b] = 0;
    px->n_cached--;
}

/* Pages that can be had now: free, or idle in the cache (evicted on demand). */
static int64_t pages_available(const es_kv *kv) { return kv->n_free + (kv->px ? kv->px->n_idle : 0); }

/* A page for a sequence (ref 1): from the free list, else the least recently released idle page is
 * evicted from the cache. The caller checked pages_available. */
static int32_t page_take(es_kv *kv) {
    if (kv->n_free == 0) {
        kv_prefix *px = kv->px;
        const int32_t b = px->lru_head;
        lru_unlink(px, b);
        index_remove(px, b);
        px->evicted++;
        kv->ref[b] = 0;
        kv->free_list[kv->n_free++] = b;
    }
    const int32_t b = kv->free_list[--kv->n_free];
    kv->ref[b] = 1;
    if (kv->page_fn) kv->page_fn(kv->page_ud, b, ES_KV_PAGE_TAKEN);
    return b;
}

static void release_blocks(es_kv *kv, kv_seq *s, int keep_blocks) {
    while (s->n_blocks > keep_blocks) page_unref(kv, s->table[--s->n_blocks]);
}

/* Pages of s from slot `from` on that others hold too (the cache, another sequence): they are about
 * to be written, so each gets a private copy (copy on write). */
static int shared_from(const es_kv *kv, const kv_seq *s, int from) {
    int n = 0;
    for (int b = from / kv->block_size; b < s->n_blocks; b++) n += kv->ref[s->table[b]] > 1;
    return n;
}

static es_status unshare_from(es_kv *kv, kv_seq *s, int from, es_err *err) {
    for (int b = from / kv->block_size; b < s->n_blocks; b++) {
        const int32_t old = s->table[b];
        if (kv->ref[old] <= 1) continue;
        const int32_t nb = page_take(kv);
        memcpy(kv->k + (size_t)nb * kv->page_bytes, kv->k + (size_t)old * kv->page_bytes, kv->page_bytes);
        memcpy(kv->v + (size_t)nb * kv->page_bytes, kv->v + (size_t)old * kv->page_bytes, kv->page_bytes);
        if (kv->copy) {
            const es_status st = kv->copy(kv->copy_ud, old, nb, err);
            if (st != ES_OK) {
                page_unref(kv, nb);
                return st;
            }
        }
        s->table[b] = nb;
        page_unref(kv, old);
    }
    return ES_OK;
}

void es_kv_set_copy_hook(es_kv *kv, es_kv_copy_fn fn, void *ud) {
    kv->copy = fn;
    kv->copy_ud = ud;
}

void es_kv_set_page_hook(es_kv *kv, es_kv_page_fn fn, void *ud) {
    kv->page_fn = fn;
    kv->page_ud = ud;
}

uint8_t *es_kv_page_k(es_kv *kv, int32_t page, int layer) {
    return kv->k + (size_t)page * kv->page_bytes + (size_t)layer * kv->block_size * kv->row_bytes;
}
uint8_t *es_kv_page_v(es_kv *kv, int32_t page, int layer) {
    return kv->v + (size_t)page * kv->page_bytes + (size_t)layer * kv->block_size * kv->row_bytes;
}
size_t es_kv_row_bytes(const es_kv *kv) { return kv->row_bytes; }
int es_kv_seq_n_blocks(const es_kv *kv, int seq) { return es_kv_seq_valid(kv, seq) ? kv->seqs[seq].n_blocks : 0; }

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
    const int need = (len + kv->block_size - 1) / kv->block_size;
    /* slots from len on will be written: pages there that others hold are copied first */
    const int more = (need > s->n_blocks ? need - s->n_blocks : 0) + (len > s->len ? shared_from(kv, s, s->len) : 0);
    if (more == 0) return ES_OK;
    if (more > pages_available(kv))
        return es_fail(err, ES_ERR_FULL, "KV pool exhausted: sequence %d needs %d more pages, %lld free of %lld", seq, more,
                       (long long)pages_available(kv), (long long)kv->n_blocks);
    if (len > s->len) {
        const es_status st = unshare_from(kv, s, s->len, err);
        if (st != ES_OK) return st;
    }
    while (s->n_blocks < need) s->table[s->n_blocks++] = page_take(kv);
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

es_status es_kv_seq_keep(es_kv *kv, int seq, int base, const int32_t *slots, int n, es_err *err) {
    if (!es_kv_seq_valid(kv, seq)) return es_fail(err, ES_ERR_INVALID_ARG, "sequence %d is not open", seq);
    kv_seq *s = &kv->seqs[seq];
    if (base < 0 || base > s->len || n < 0 || n > s->len - base)
        return es_fail(err, ES_ERR_RANGE, "keep of %d slots from %d in a sequence of %d", n, base, s->len);
    for (int k = 0; k < n; k++)
        if (slots[k] < base + k || slots[k] >= s->len || (k > 0 && slots[k] <= slots[k - 1]))
            return es_fail(err, ES_ERR_RANGE, "keep: slot list must be increasing within [%d, %d)", base, s->len);
    int first = n; /* the first slot that moves: pages from it on are written */
    for (int k = 0; k < n && first == n; k++)
        if (slots[k] != base + k) first = k;
    if (first < n) {
        if (shared_from(kv, s, base + first) > pages_available(kv))
            return es_fail(err, ES_ERR_FULL, "KV pool exhausted: no page to copy a shared page into");
        const es_status st = unshare_from(kv, s, base + first, err);
        if (st != ES_OK) return st;
    }
    const size_t row = kv->row_bytes; /* rows move in their stored form: no requantisation */
    for (int k = first; k < n; k++) {
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
int64_t es_kv_blocks_used(const es_kv *kv) { return kv->n_blocks - pages_available(kv); }

/* ---- the prefix cache ---------------------------------------------------------------------------- */

es_status es_kv_prefix_enable(es_kv *kv, es_err *err) {
    if (kv->px) return ES_OK;
    kv_prefix *px = calloc(1, sizeof *px);
    if (!px) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    uint64_t nb = 1;
    while (nb < (uint64_t)kv->n_blocks) nb <<= 1;
    const size_t n = (size_t)kv->n_blocks;
    px->mask = nb - 1;
    px->cached = calloc(n, 1);
    px->hash = calloc(n, sizeof *px->hash);
    px->up = malloc(n * sizeof *px->up);
    px->tokens = malloc(n * (size_t)kv->block_size * sizeof *px->tokens);
    px->hnext = malloc(n * sizeof *px->hnext);
    px->heads = malloc((size_t)nb * sizeof *px->heads);
    px->lru_prev = malloc(n * sizeof *px->lru_prev);
    px->lru_next = malloc(n * sizeof *px->lru_next);
    if (!px->cached || !px->hash || !px->up || !px->tokens || !px->hnext || !px->heads || !px->lru_prev || !px->lru_next) {
        prefix_free(px);
        return es_fail(err, ES_ERR_NOMEM, "out of memory for the prefix cache's index");
    }
    for (uint64_t i = 0; i < nb; i++) px->heads[i] = -1;
    for (size_t i = 0; i < n; i++) px->lru_prev[i] = px->lru_next[i] = -1;
    px->lru_head = px->lru_tail = -1;
    kv->px = px;
    return ES_OK;
}

/* FNV-1a over the page's tokens, seeded with the chain hash before it. */
static uint64_t chain_hash(uint64_t h, const int32_t *tok, int n) {
    if (!h) h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        uint32_t t = (uint32_t)tok[i];
        for (int k = 0; k < 4; k++, t >>= 8) h = (h ^ (t & 0xff)) * 1099511628211ull;
    }
    return h ? h : 1;
}

/* The cached page after `up` (-1: a chain's first page) holding `tok`, or -1. */
static int32_t index_find(const es_kv *kv, uint64_t h, int32_t up, const int32_t *tok) {
    const kv_prefix *px = kv->px;
    for (int32_t b = px->heads[h & px->mask]; b >= 0; b = px->hnext[b])
        if (px->hash[b] == h && px->up[b] == up &&
            !memcmp(px->tokens + (size_t)b * kv->block_size, tok, (size_t)kv->block_size * sizeof *tok))
            return b;
    return -1;
}

int es_kv_prefix_adopt(es_kv *kv, int seq, const int32_t *tokens, int n) {
    if (!kv->px || !es_kv_seq_valid(kv, seq) || kv->seqs[seq].len != 0 || kv->seqs[seq].n_blocks != 0) return 0;
    kv_seq *s = &kv->seqs[seq];
    const int bs = kv->block_size;
    uint64_t h = 0;
    int32_t up = -1;
    int got = 0;
    while ((got + 1) * bs <= n && got < kv->max_blocks_per_seq) {
        const int32_t *tok = tokens + (size_t)got * bs;
        const uint64_t hh = chain_hash(h, tok, bs);
        const int32_t b = index_find(kv, hh, up, tok);
        if (b < 0) break;
        page_ref(kv, b);
        s->table[got++] = b;
        h = hh;
        up = b;
    }
    s->n_blocks = got;
    s->len = got * bs;
    for (int i = 0; i < s->len; i++) s->parent[i] = i - 1;
    s->linear = s->len;
    kv->px->hit_tokens += s->len;
    return s->len;
}

int es_kv_prefix_keep(es_kv *kv, int seq, const int32_t *tokens, int n) {
    if (!kv->px || !es_kv_seq_valid(kv, seq)) return 0;
    kv_prefix *px = kv->px;
    kv_seq *s = &kv->seqs[seq];
    const int bs = kv->block_size;
    int lim = n < s->linear ? n : s->linear; /* slot i holds tokens[i] along one chain */
    if (lim > s->len) lim = s->len;
    uint64_t h = 0;
    int32_t up = -1;
    int kept = 0;
    for (int i = 0; (i + 1) * bs <= lim; i++) {
        const int32_t *tok = tokens + (size_t)i * bs;
        const uint64_t hh = chain_hash(h, tok, bs);
        int32_t b = s->table[i];
        if (!px->cached[b]) {
            const int32_t same = index_find(kv, hh, up, tok);
            if (same >= 0) {
                b = same; /* another page already holds these rows: the chain goes on through it */
            } else {
                px->cached[b] = 1;
                px->hash[b] = hh;
                px->up[b] = up;
                memcpy(px->tokens + (size_t)b * bs, tok, (size_t)bs * sizeof *tok);
                const uint64_t at = hh & px->mask;
                px->hnext[b] = px->heads[at];
                px->heads[at] = b;
                px->n_cached++;
                kv->ref[b]++; /* the cache's hold; the sequence still holds it, so it is not idle */
                kept++;
            }
        }
        h = hh;
        up = b;
    }
    return kept;
}

void es_kv_prefix_stats(const es_kv *kv, es_prefix_cache_info *out) {
    memset(out, 0, sizeof *out);
    if (!kv->px) return;
    out->enabled = true;
    out->cached_blocks = kv->px->n_cached;
    out->idle_blocks = kv->px->n_idle;
    out->hit_tokens = kv->px->hit_tokens;
    out->evicted_blocks = kv->px->evicted;
}
int64_t es_kv_blocks_total(const es_kv *kv) { return kv->n_blocks; }
