/* tok_encode.c — the two encoders: SentencePiece-style BPE over the characters of a normalised
 * fragment, and byte-level BPE over each pre-token of a fragment. Both end in the same merge loop.
 *
 * The merge loop keeps the symbols in a doubly linked list (index links into one array) and every
 * adjacent pair that could merge in a max-heap keyed by its priority, ties going to the leftmost
 * pair; a heap entry records the pair's combined length, so an entry made stale by an earlier merge
 * is recognised when it surfaces and dropped. That gives the same result as rescanning all pairs
 * after every merge (llama2.c's encode) in O(n log n) instead of O(n^2). The priority is
 *  - rank mode (the vocabulary has merges: byte-level BPE, or SPM vocabularies from tokenizer.json):
 *    -rank of the merge (left id, right id), as Hugging Face's BPE applies them;
 *  - score mode (SPM without merges: llama2.c, sentencepiece): the score of the token whose text is
 *    the pair's concatenation, when that score is above llama2.c's floor of -1e10. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"
#include "util/err.h"

typedef struct tok_sym {
    int32_t id;
    uint32_t start, len; /* its bytes in the text being merged; len 0: merged into its left neighbour */
    int32_t prev, next;  /* -1 at the ends */
    bool mergeable;      /* score mode: false for byte-fallback and unknown symbols; false for a byte without a token */
} tok_sym;

typedef struct tok_cand {
    double key;          /* larger merges first */
    int32_t left, right; /* symbol indices */
    uint32_t len;        /* left.len + right.len when the entry was made */
    int32_t result;
} tok_cand;

void tok_work_free(tok_work *w) {
    free(w->sym);
    free(w->heap);
    free(w->buf);
    memset(w, 0, sizeof *w);
}

/* Grows *p to hold at least n elements of size sz. */
static es_status grow(void **p, size_t *cap, size_t n, size_t sz, es_err *err) {
    if (n <= *cap) return ES_OK;
    uint64_t bytes;
    if (!es_mul_ok(n, sz, &bytes) || bytes > SIZE_MAX)
        return es_fail(err, ES_ERR_RANGE, "text too long to tokenize");
    void *q = realloc(*p, (size_t)bytes);
    if (!q) return es_fail(err, ES_ERR_NOMEM, "out of memory tokenizing (%llu bytes)", (unsigned long long)bytes);
    *p = q;
    *cap = n;
    return ES_OK;
}

/* Room for n symbols and n heap entries; the heap grows on demand (merging can push at most 3n
 * entries: n - 1 initial pairs and two per merge, but usually far fewer). */
static es_status work_reserve(tok_work *w, size_t n, es_err *err) {
    if (n > INT32_MAX / 4) return es_fail(err, ES_ERR_RANGE, "text too long to tokenize (%zu symbols)", n);
    es_status st = grow((void **)&w->sym, &w->sym_cap, n, sizeof(tok_sym), err);
    if (st == ES_OK) st = grow((void **)&w->heap, &w->heap_cap, n, sizeof(tok_cand), err);
    return st;
}

static bool cand_before(const tok_cand *a, const tok_cand *b) {
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}

static void heap_push(tok_cand *h, size_t *n, tok_cand c) {
    size_t i = (*n)++; /* the caller made room */
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(&c, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = c;
}

static tok_cand heap_pop(tok_cand *h, size_t *n) {
    tok_cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= *n) break;
        if (l + 1 < *n && cand_before(&h[l + 1], &h[l])) best = l + 1;
        if (!cand_before(&h[best], &last)) break;
        h[i] = h[best];
        i = best;
    }
    if (*n > 0) h[i] = last;
    return top;
}

typedef struct merger {
    const es_tokenizer *t;
    const char *text; /* the bytes the symbols index into */
    tok_sym *sym;
    tok_work *w;      /* owns the heap: w->heap[0 .. nheap) */
    size_t nheap;
    bool rank_mode;
    bool oom;         /* the heap could not grow: the result is incomplete */
} merger;

/* Pushes the pair (a, b) of adjacent live symbols when it can merge. */
static void try_pair(merger *m, int32_t a, int32_t b) {
    const tok_sym *L = &m->sym[a], *R = &m->sym[b];
    if (!L->mergeable || !R->mergeable) return;
    tok_cand c = {.left = a, .right = b, .len = L->len + R->len};
    if (m->rank_mode) {
        int32_t rank;
        if (!tok_merge_find(m->t, L->id, R->id, &rank, &c.result)) return;
        c.key = -(double)rank;
    } else {
        c.result = tok_lookup(m->t, m->text + L->start, c.len);
        if (c.result < 0) return;
        float s = m->t->score[c.result];
        if (!(s > TOK_SCORE_FLOOR)) return;
        c.key = s;
    }
    if (m->nheap == m->w->heap_cap &&
        grow((void **)&m->w->heap, &m->w->heap_cap, 2 * m->w->heap_cap + 16, sizeof(tok_cand), NULL) != ES_OK) {
        m->oom = true;
        return;
    }
    heap_push(m->w->heap, &m->nheap, c);
}

/* Merges symbols 0..n-1 (linked in order) to completion and emits the survivors. */
static es_status merge_and_emit(merger *m, int32_t n, tok_out *o, es_err *err) {
    tok_sym *s = m->sym;
    m->nheap = 0;
    for (int32_t i = 0; i + 1 < n; i++) try_pair(m, i, i + 1);
    while (m->nheap > 0) {
        tok_cand c = heap_pop(m->w->heap, &m->nheap);
        tok_sym *L = &s[c.left], *R = &s[c.right];
        if (L->len == 0 || R->len == 0 || L->next != c.right || L->len + R->len != c.len) continue; /* stale */
        L->len += R->len;
        L->id = c.result;
        L->next = R->next;
        if (R->next >= 0) s[R->next].prev = c.left;
        R->len = 0;
        if (L->prev >= 0) try_pair(m, L->prev, c.left);
        if (L->next >= 0) try_pair(m, c.left, L->next);
    }
    if (m->oom) return es_fail(err, ES_ERR_NOMEM, "out of memory merging %d symbols", (int)n);
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = s[i].next)
        if (s[i].id >= 0) tok_emit(o, s[i].id);
    return ES_OK;
}

static void add_sym(tok_sym *s, int32_t *n, int32_t id, size_t start, size_t len, bool mergeable) {
    int32_t i = (*n)++;
    s[i] = (tok_sym){.id = id, .start = (uint32_t)start, .len = (uint32_t)len, .prev = i - 1, .next = -1,
                     .mergeable = mergeable};
    if (i > 0) s[i - 1].next = i;
}

/* SPM: the fragment gets a leading space (add_space_prefix), spaces become U+2581 when the vocabulary
 * uses it, and the text is cut into characters the way llama2.c does it: a character is a byte and
 * the continuation bytes (10xxxxxx) that follow it, at most 4 bytes in all (so invalid UTF-8 still
 * splits deterministically); the prefix space is a character of its own, since llama2.c adds it as a
 * token before it looks at the text. A character that is a token becomes that token; otherwise each of its
 * bytes becomes its <0xXX> token, or when one of those is missing the character becomes the unknown
 * token (consecutive unknowns fused into one, as Hugging Face's fuse_unk does). */
es_status tok_encode_spm(const es_tokenizer *t, tok_work *w, const char *s, size_t n, tok_out *o, es_err *err) {
    if (n == 0) return ES_OK;
    size_t spaces = 0;
    if (t->escape_spaces)
        for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    /* each space grows by 2 bytes when escaped; plus the prefix (at most 3 bytes) */
    uint64_t m;
    if (!es_mul_ok(spaces, 2, &m) || !es_add_ok(m, n, &m) || !es_add_ok(m, 3, &m) || m > INT32_MAX / 4)
        return es_fail(err, ES_ERR_RANGE, "text too long to tokenize (%zu bytes)", n);
    es_status st = grow((void **)&w->buf, &w->buf_cap, (size_t)m, 1, err);
    if (st == ES_OK) st = work_reserve(w, (size_t)m, err);
    if (st != ES_OK) return st;

    char *b = w->buf;
    size_t bn = 0, prefix = 0;
    static const char k_lower_block[3] = {'\xE2', '\x96', '\x81'}; /* U+2581 */
    if (t->add_space_prefix) {
        if (t->escape_spaces) { memcpy(b, k_lower_block, 3); bn = 3; }
        else b[bn++] = ' ';
        prefix = bn;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' && t->escape_spaces) { memcpy(b + bn, k_lower_block, 3); bn += 3; }
        else b[bn++] = s[i];
    }

    bool rank_mode = t->n_merges > 0;
    tok_sym *sym = w->sym;
    int32_t ns = 0;
    bool prev_unk = false;
    for (size_t i = 0; i < bn;) {
        size_t g = 1;
        if (i < prefix) g = prefix; /* the prefix is a character of its own, as in llama2.c */
        else
            while (i + g < bn && g < 4 && ((unsigned char)b[i + g] & 0xC0) == 0x80) g++;
        int32_t id = tok_lookup(t, b + i, g);
        if (id >= 0) {
            add_sym(sym, &ns, id, i, g, true);
            prev_unk = false;
        } else {
            bool bytes_ok = true;
            for (size_t k = 0; k < g; k++) bytes_ok = bytes_ok && t->byte_tok[(unsigned char)b[i + k]] >= 0;
            if (bytes_ok) {
                for (size_t k = 0; k < g; k++) add_sym(sym, &ns, t->byte_tok[(unsigned char)b[i + k]], i + k, 1, rank_mode);
                prev_unk = false;
            } else if (t->unk >= 0) {
                if (prev_unk) sym[ns - 1].len += (uint32_t)g;
                else add_sym(sym, &ns, t->unk, i, g, rank_mode);
                prev_unk = true;
            } else {
                return es_fail(err, ES_ERR_UNSUPPORTED,
                               "the vocabulary has no token, byte token or unknown token for byte 0x%02x",
                               (unsigned char)b[i]);
            }
        }
        i += g;
    }
    merger mg = {.t = t, .text = b, .sym = sym, .w = w, .rank_mode = rank_mode};
    return merge_and_emit(&mg, ns, o, err);
}

typedef struct bpe_ctx {
    const es_tokenizer *t;
    tok_work *w;
    const char *s;
    tok_out *o;
} bpe_ctx;

/* One pre-token: its bytes start as their byte tokens and merge by rank. With the llama-bpe
 * pre-tokeniser a pre-token that is itself a token is taken whole (Hugging Face's ignore_merges,
 * which llama-3's tokenizer.json sets, and llama.cpp for the names of that family). */
static es_status bpe_piece(void *vctx, size_t start, size_t end, es_err *err) {
    bpe_ctx *c = vctx;
    const es_tokenizer *t = c->t;
    const char *p = c->s + start;
    size_t n = end - start;
    es_status st = work_reserve(c->w, n, err);
    if (st != ES_OK) return st;
    if (t->ignore_merges && n <= t->max_len) {
        /* every mapped character takes at most 2 bytes (code points < U+0144) */
        st = grow((void **)&c->w->buf, &c->w->buf_cap, 2 * n, 1, err);
        if (st != ES_OK) return st;
        size_t mn = 0;
        for (size_t i = 0; i < n; i++) mn += (size_t)tok_utf8_put(tok_byte_to_cp((uint8_t)p[i]), c->w->buf + mn);
        int32_t id = tok_lookup(t, c->w->buf, mn);
        if (id >= 0) { tok_emit(c->o, id); return ES_OK; }
    }
    tok_sym *sym = c->w->sym;
    int32_t ns = 0;
    /* a byte without a token (and no unknown token) merges with nothing and is left out, as llama.cpp
     * leaves it out */
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_tok[(uint8_t)p[i]];
        if (id < 0) id = t->unk;
        add_sym(sym, &ns, id, i, 1, id >= 0);
    }
    merger mg = {.t = t, .text = p, .sym = sym, .w = c->w, .rank_mode = true};
    return merge_and_emit(&mg, ns, c->o, err);
}

es_status tok_encode_bpe(const es_tokenizer *t, tok_work *w, const char *s, size_t n, tok_out *o, es_err *err) {
    bpe_ctx c = {.t = t, .w = w, .s = s, .o = o};
    return tok_pretokenize(t->pre, s, n, bpe_piece, &c, err);
}
