/* tokenizer.c — building a tokenizer from a vocabulary (its lookup tables), es_tokenize (special-token
 * splitting, then the encoder of the vocabulary's kind), decoding and the fingerprint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"
#include "util/err.h"
#include "util/hash.h"

static const char k_lower_block[] = "\xE2\x96\x81"; /* U+2581, SentencePiece's space */

/* ---- building --------------------------------------------------------------------------------- */

/* True when s[0..n) is a byte token's text "<0xXX>" (upper-case hex); *byte gets the value. */
static bool parse_byte_token(const char *s, size_t n, int *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return false;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return false;
        v = v * 16 + d;
    }
    *byte = v;
    return true;
}

static size_t spec_len(const es_vocab_spec *spec, int i) {
    return spec->lens ? spec->lens[i] : strlen(spec->tokens[i]);
}

int32_t es_tok_infer_type(const es_vocab_spec *spec, int i) {
    if (i == spec->unk) return ES_TOKTYPE_UNKNOWN;
    if (i == spec->bos || i == spec->eos) return ES_TOKTYPE_CONTROL;
    int b;
    if (spec->kind == ES_TOK_SPM && parse_byte_token(spec->tokens[i], spec_len(spec, i), &b)) return ES_TOKTYPE_BYTE;
    return ES_TOKTYPE_NORMAL;
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static es_status build_text_table(es_tokenizer *t, es_err *err) {
    t->hmask = pow2_at_least(2 * (uint64_t)t->n_vocab) - 1;
    t->htab = malloc((t->hmask + 1) * sizeof *t->htab);
    if (!t->htab) return es_fail(err, ES_ERR_NOMEM, "out of memory for the token table");
    memset(t->htab, 0xff, (t->hmask + 1) * sizeof *t->htab);
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint64_t i = tok_text_hash(tok_text(t, id), t->len[id]) & t->hmask;
        for (;; i = (i + 1) & t->hmask) {
            int32_t o = t->htab[i];
            if (o < 0) { t->htab[i] = id; break; }
            /* a duplicated text keeps its first (lowest) id */
            if (t->len[o] == t->len[id] && memcmp(tok_text(t, o), tok_text(t, id), t->len[id]) == 0) break;
        }
    }
    return ES_OK;
}

/* Parses merge i ("left right", split at the first space after the first byte, as llama.cpp does)
 * into its token ids and the id of the concatenation; every one must be in the vocabulary. */
static es_status parse_merge(const es_tokenizer *t, const char *m, int i, int32_t *a, int32_t *b, int32_t *r,
                             es_err *err) {
    if (!m) return es_fail(err, ES_ERR_FORMAT, "merge %d is missing", i);
    size_t n = strlen(m);
    const char *sp = n > 1 ? memchr(m + 1, ' ', n - 1) : NULL;
    if (!sp || sp == m + n - 1) return es_fail(err, ES_ERR_FORMAT, "merge %d (\"%.64s\") is not \"left right\"", i, m);
    size_t la = (size_t)(sp - m), lb = n - la - 1;
    *a = tok_lookup(t, m, la);
    *b = tok_lookup(t, sp + 1, lb);
    if (*a < 0 || *b < 0)
        return es_fail(err, ES_ERR_FORMAT, "merge %d (\"%.64s\") names a token that is not in the vocabulary", i, m);
    *r = -1;
    if (la + lb <= t->max_len) {
        char stack[256];
        char *cat = la + lb <= sizeof stack ? stack : malloc(la + lb);
        if (!cat) return es_fail(err, ES_ERR_NOMEM, "out of memory reading merges");
        memcpy(cat, m, la);
        memcpy(cat + la, sp + 1, lb);
        *r = tok_lookup(t, cat, la + lb);
        if (cat != stack) free(cat);
    }
    if (*r < 0) return es_fail(err, ES_ERR_FORMAT, "merge %d (\"%.64s\") makes a token that is not in the vocabulary", i, m);
    return ES_OK;
}

static es_status build_merges(es_tokenizer *t, const es_vocab_spec *spec, es_err *err) {
    if (spec->n_merges <= 0) return ES_OK;
    if (!spec->merges) return es_fail(err, ES_ERR_INVALID_ARG, "n_merges is %d but merges is NULL", spec->n_merges);
    if (spec->n_merges > INT32_MAX / 4) return es_fail(err, ES_ERR_FORMAT, "too many merges (%d)", spec->n_merges);
    t->mmask = pow2_at_least(2 * (uint64_t)spec->n_merges) - 1;
    t->mtab = malloc((t->mmask + 1) * sizeof *t->mtab);
    if (!t->mtab) return es_fail(err, ES_ERR_NOMEM, "out of memory for %d merges", spec->n_merges);
    for (uint64_t i = 0; i <= t->mmask; i++) t->mtab[i].key = UINT64_MAX;
    for (int m = 0; m < spec->n_merges; m++) {
        int32_t a, b, r;
        es_status st = parse_merge(t, spec->merges[m], m, &a, &b, &r, err);
        if (st != ES_OK) return st;
        uint64_t key = tok_pair_key(a, b);
        for (uint64_t i = tok_pair_hash(key) & t->mmask;; i = (i + 1) & t->mmask) {
            struct tok_merge_slot *sl = &t->mtab[i];
            if (sl->key == key) break; /* a repeated merge keeps its first rank */
            if (sl->key == UINT64_MAX) { *sl = (struct tok_merge_slot){key, m, r}; break; }
        }
    }
    t->n_merges = spec->n_merges;
    return ES_OK;
}

static bool is_literal_type(int32_t type) {
    return type == ES_TOKTYPE_CONTROL || type == ES_TOKTYPE_USER_DEFINED || type == ES_TOKTYPE_UNKNOWN;
}

/* Buckets the literally-matched tokens by first byte, longest first. */
static es_status build_specials(es_tokenizer *t, es_err *err) {
    uint32_t count[257] = {0};
    uint32_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_literal_type(t->type[id]) && t->len[id] > 0) { count[(unsigned char)tok_text(t, id)[0]]++; n++; }
    memset(t->spec_first, 0, sizeof t->spec_first);
    if (n == 0) return ES_OK;
    t->spec_ids = malloc(n * sizeof *t->spec_ids);
    if (!t->spec_ids) return es_fail(err, ES_ERR_NOMEM, "out of memory for special tokens");
    for (int c = 0; c < 256; c++) t->spec_first[c + 1] = t->spec_first[c] + count[c];
    uint32_t fill[256];
    memcpy(fill, t->spec_first, sizeof fill);
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!is_literal_type(t->type[id]) || t->len[id] == 0) continue;
        unsigned c = (unsigned char)tok_text(t, id)[0];
        /* insertion into the bucket, longest first, then lowest id */
        t->has_user_defined |= t->type[id] == ES_TOKTYPE_USER_DEFINED;
        uint32_t j = fill[c]++;
        while (j > t->spec_first[c] && t->len[t->spec_ids[j - 1]] < t->len[id]) {
            t->spec_ids[j] = t->spec_ids[j - 1];
            j--;
        }
        t->spec_ids[j] = id;
    }
    return ES_OK;
}

static void fnv_u64(uint64_t *h, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    *h = es_fnv1a(*h, b, 8);
}

/* FNV-1a over n_vocab, each token's length and bytes, BOS and EOS (integers as 8 little-endian
 * bytes, so the value does not depend on the host). A SentencePiece vocabulary that spells spaces
 * ' ' (llama2.c's, and GGUF files edgespec wrote before it wrote U+2581) is hashed as if its normal
 * tokens had U+2581, so that both forms of one vocabulary match. */
static uint64_t compute_fingerprint(const es_tokenizer *t) {
    uint64_t h = ES_FNV_OFFSET;
    bool canon = t->kind == ES_TOK_SPM && !t->escape_spaces;
    fnv_u64(&h, (uint64_t)t->n_vocab);
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = tok_text(t, id);
        uint32_t n = t->len[id];
        if (!canon || t->type[id] != ES_TOKTYPE_NORMAL || !memchr(s, ' ', n)) {
            fnv_u64(&h, n);
            h = es_fnv1a(h, s, n);
            continue;
        }
        uint64_t spaces = 0;
        for (uint32_t k = 0; k < n; k++) spaces += s[k] == ' ';
        fnv_u64(&h, n + 2 * spaces);
        for (uint32_t k = 0; k < n; k++)
            h = s[k] == ' ' ? es_fnv1a(h, k_lower_block, 3) : es_fnv1a(h, s + k, 1);
    }
    fnv_u64(&h, (uint64_t)(int64_t)t->bos);
    fnv_u64(&h, (uint64_t)(int64_t)t->eos);
    return h;
}

/* The tokenizer.ggml.pre names llama.cpp gives each pre-tokeniser (llama-vocab.cpp), and whether the
 * family takes a pre-token that is a token whole (ignore_merges). */
static const struct pre_name {
    const char *name;
    tok_pre pre;
    bool ignore_merges;
} k_pre_names[] = {
    {"gpt2", TOK_PRE_GPT2, false}, {"gpt-2", TOK_PRE_GPT2, false}, {"mpt", TOK_PRE_GPT2, false},
    {"olmo", TOK_PRE_GPT2, false}, {"phi-2", TOK_PRE_GPT2, false}, {"jais", TOK_PRE_GPT2, false},
    {"llama-bpe", TOK_PRE_LLAMA3, true}, {"llama3", TOK_PRE_LLAMA3, true}, {"llama-v3", TOK_PRE_LLAMA3, true},
    {"falcon3", TOK_PRE_LLAMA3, true}, {"pixtral", TOK_PRE_LLAMA3, true}, {"dbrx", TOK_PRE_LLAMA3, false},
    {"smaug-bpe", TOK_PRE_LLAMA3, false},
    {"qwen2", TOK_PRE_QWEN2, false}, {"deepseek-r1-qwen", TOK_PRE_QWEN2, false}, {"stablelm2", TOK_PRE_QWEN2, false},
    {"megrez", TOK_PRE_QWEN2, false},
    {"starcoder", TOK_PRE_STARCODER, false}, {"refact", TOK_PRE_STARCODER, false},
    {"command-r", TOK_PRE_STARCODER, false}, {"smollm", TOK_PRE_STARCODER, false},
    {"codeshell", TOK_PRE_STARCODER, false}, {"exaone", TOK_PRE_STARCODER, false},
    {"minerva-7b", TOK_PRE_STARCODER, false},
    {"falcon", TOK_PRE_FALCON, false}, {"default", TOK_PRE_DEFAULT, false},
    {"deepseek-coder", TOK_PRE_DEEPSEEK_CODER, false}, {"deepseek-llm", TOK_PRE_DEEPSEEK_LLM, false},
    {"deepseek-v3", TOK_PRE_DEEPSEEK3, false},
    {"gpt-4o", TOK_PRE_GPT4O, false}, {"llama4", TOK_PRE_GPT4O, false},
};

es_status tok_pre_from_name(const char *pre, tok_pre *out, bool *ignore_merges, es_err *err) {
    *out = TOK_PRE_GPT2;
    *ignore_merges = false;
    if (!pre) return ES_OK;
    for (size_t i = 0; i < sizeof k_pre_names / sizeof k_pre_names[0]; i++) {
        if (!strcmp(pre, k_pre_names[i].name)) {
            *out = k_pre_names[i].pre;
            *ignore_merges = k_pre_names[i].ignore_merges;
            return ES_OK;
        }
    }
    return es_fail(err, ES_ERR_UNSUPPORTED, "unsupported BPE pre-tokenizer \"%.64s\"", pre);
}

static es_status check_id(int32_t id, int n_vocab, const char *what, es_err *err) {
    if (id < -1 || id >= n_vocab) return es_fail(err, ES_ERR_FORMAT, "%s token id %d out of range (vocabulary %d)", what, id, n_vocab);
    return ES_OK;
}

static es_status init_body(es_tokenizer *t, const es_vocab_spec *spec, es_err *err) {
    if (spec->kind != ES_TOK_SPM && spec->kind != ES_TOK_BPE)
        return es_fail(err, ES_ERR_INVALID_ARG, "unknown tokenizer kind %d", (int)spec->kind);
    if (spec->n_vocab <= 0 || spec->n_vocab > TOK_MAX_VOCAB)
        return es_fail(err, ES_ERR_FORMAT, "vocabulary size %d out of range (1..%d)", spec->n_vocab, TOK_MAX_VOCAB);
    if (!spec->tokens) return es_fail(err, ES_ERR_INVALID_ARG, "vocabulary has no tokens array");
    es_status st;
    if ((st = check_id(spec->bos, spec->n_vocab, "BOS", err)) != ES_OK) return st;
    if ((st = check_id(spec->eos, spec->n_vocab, "EOS", err)) != ES_OK) return st;
    if ((st = check_id(spec->unk, spec->n_vocab, "unknown", err)) != ES_OK) return st;
    if ((st = check_id(spec->pad, spec->n_vocab, "padding", err)) != ES_OK) return st;
    if (spec->kind == ES_TOK_BPE && (st = tok_pre_from_name(spec->pre, &t->pre, &t->ignore_merges, err)) != ES_OK) return st;

    int n = spec->n_vocab;
    t->kind = spec->kind;
    t->n_vocab = n;
    t->bos = spec->bos;
    t->eos = spec->eos;
    t->unk = spec->unk;
    t->add_bos = spec->add_bos;
    t->add_eos = spec->add_eos;
    t->add_space_prefix = spec->kind == ES_TOK_SPM && spec->add_space_prefix;

    uint64_t blob = 0;
    for (int i = 0; i < n; i++) {
        if (!spec->tokens[i]) return es_fail(err, ES_ERR_FORMAT, "token %d has no text", i);
        size_t l = spec_len(spec, i);
        if (l > TOK_MAX_TOKEN_LEN) return es_fail(err, ES_ERR_FORMAT, "token %d is %zu bytes long", i, l);
        blob += l + 1; /* at most 2^24 * (2^20 + 1): no overflow */
        if (l > t->max_len) t->max_len = (uint32_t)l;
    }
    if (blob > SIZE_MAX) return es_fail(err, ES_ERR_NOMEM, "vocabulary too large");
    t->blob = malloc((size_t)blob);
    t->off = malloc((size_t)n * sizeof *t->off);
    t->len = malloc((size_t)n * sizeof *t->len);
    t->score = malloc((size_t)n * sizeof *t->score);
    t->type = malloc((size_t)n * sizeof *t->type);
    if (!t->blob || !t->off || !t->len || !t->score || !t->type)
        return es_fail(err, ES_ERR_NOMEM, "out of memory for a vocabulary of %d tokens", n);
    uint64_t o = 0;
    for (int i = 0; i < n; i++) {
        size_t l = spec_len(spec, i);
        t->off[i] = o;
        t->len[i] = (uint32_t)l;
        memcpy(t->blob + o, spec->tokens[i], l);
        t->blob[o + l] = 0;
        o += l + 1;
        t->score[i] = spec->scores ? spec->scores[i] : 0.0f;
        int32_t ty = spec->types ? spec->types[i] : es_tok_infer_type(spec, i);
        if (ty == 0) ty = ES_TOKTYPE_NORMAL; /* GGUF's "undefined" */
        if (ty < ES_TOKTYPE_NORMAL || ty > ES_TOKTYPE_BYTE)
            return es_fail(err, ES_ERR_FORMAT, "token %d has an unknown type %d", i, (int)ty);
        t->type[i] = ty;
    }
    if ((st = build_text_table(t, err)) != ES_OK) return st;

    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t l;
        if (t->kind == ES_TOK_SPM) l = (size_t)snprintf(s, sizeof s, "<0x%02X>", b);
        else l = (size_t)tok_utf8_put(tok_byte_to_cp((uint8_t)b), s);
        t->byte_tok[b] = tok_lookup(t, s, l); /* BPE without it (Falcon lacks some controls): see bpe_piece */
    }
    if (t->kind == ES_TOK_SPM) {
        for (int i = 0; i < n && !t->escape_spaces; i++)
            if (t->len[i] >= 3 && memmem(tok_text(t, i), t->len[i], k_lower_block, 3)) t->escape_spaces = true;
    }
    if ((st = build_merges(t, spec, err)) != ES_OK) return st;
    if ((st = build_specials(t, err)) != ES_OK) return st;
    if (spec->chat_template && !(t->chat_template = strdup(spec->chat_template)))
        return es_fail(err, ES_ERR_NOMEM, "out of memory for the chat template");
    t->fingerprint = compute_fingerprint(t);
    return ES_OK;
}

es_status es_tokenizer_init(const es_vocab_spec *spec, es_tokenizer **out, es_err *err) {
    if (!spec || !out) return es_fail(err, ES_ERR_INVALID_ARG, "es_tokenizer_init: NULL argument");
    *out = NULL;
    es_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return es_fail(err, ES_ERR_NOMEM, "out of memory for a tokenizer");
    es_status st = init_body(t, spec, err);
    if (st != ES_OK) { es_tokenizer_free(t); return st; }
    *out = t;
    return ES_OK;
}

void es_tokenizer_free(es_tokenizer *t) {
    if (!t) return;
    free(t->blob);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->htab);
    free(t->mtab);
    free(t->spec_ids);
    free(t->chat_template);
    free(t);
}

/* ---- getters ---------------------------------------------------------------------------------- */

int es_tokenizer_n_vocab(const es_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t es_tokenizer_bos(const es_tokenizer *t) { return t ? t->bos : -1; }
int32_t es_tokenizer_eos(const es_tokenizer *t) { return t ? t->eos : -1; }
int32_t es_tokenizer_unk(const es_tokenizer *t) { return t ? t->unk : -1; }
bool es_tokenizer_add_bos(const es_tokenizer *t) { return t && t->add_bos; }
bool es_tokenizer_add_eos(const es_tokenizer *t) { return t && t->add_eos; }
es_tok_kind es_tokenizer_kind(const es_tokenizer *t) { return t ? t->kind : ES_TOK_SPM; }
uint64_t es_tokenizer_fingerprint(const es_tokenizer *t) { return t ? t->fingerprint : 0; }
int es_tokenizer_max_token_len(const es_tokenizer *t) { return t ? (int)t->max_len : 0; }
const char *es_tokenizer_chat_template(const es_tokenizer *t) { return t ? t->chat_template : NULL; }

const char *es_tokenizer_token_text(const es_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    if (len) *len = t->len[id];
    return tok_text(t, id);
}

int32_t es_tokenizer_token_type(const es_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    return t->type[id];
}

float es_tokenizer_token_score(const es_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return 0.0f;
    return t->score[id];
}

/* ---- encoding --------------------------------------------------------------------------------- */

/* The literal token that starts s[0..n) (longest first), or -1. */
static int32_t match_literal(const es_tokenizer *t, const char *s, size_t n, bool parse_special, size_t *mlen) {
    unsigned c = (unsigned char)s[0];
    for (uint32_t k = t->spec_first[c]; k < t->spec_first[c + 1]; k++) {
        int32_t id = t->spec_ids[k];
        if (!parse_special && t->type[id] != ES_TOKTYPE_USER_DEFINED) continue;
        if (t->len[id] <= n && memcmp(tok_text(t, id), s, t->len[id]) == 0) { *mlen = t->len[id]; return id; }
    }
    return -1;
}

static es_status encode_fragment(const es_tokenizer *t, tok_work *w, const char *s, size_t n, tok_out *o,
                                 es_err *err) {
    if (n == 0) return ES_OK;
    return t->kind == ES_TOK_SPM ? tok_encode_spm(t, w, s, n, o, err) : tok_encode_bpe(t, w, s, n, o, err);
}

es_status es_tokenize(const es_tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t *ids, int cap, int *n_out, es_err *err) {
    if (!t || (!text && len > 0) || !n_out || cap < 0 || (cap > 0 && !ids))
        return es_fail(err, ES_ERR_INVALID_ARG, "es_tokenize: bad arguments");
    *n_out = 0;
    tok_out o = {.ids = ids, .cap = cap, .n = 0};
    tok_work w = {0};
    if (add_bos && t->add_bos && t->bos >= 0) tok_emit(&o, t->bos);
    es_status st = ES_OK;
    size_t frag = 0;
    bool have_literals = t->spec_ids != NULL && (parse_special || t->has_user_defined);
    for (size_t i = 0; have_literals && i < len && st == ES_OK;) {
        size_t mlen = 0;
        int32_t id = match_literal(t, text + i, len - i, parse_special, &mlen);
        if (id < 0) { i++; continue; }
        st = encode_fragment(t, &w, text + frag, i - frag, &o, err);
        tok_emit(&o, id);
        i += mlen;
        frag = i;
    }
    if (st == ES_OK) st = encode_fragment(t, &w, text ? text + frag : text, len - frag, &o, err);
    tok_work_free(&w);
    if (st != ES_OK) return st;
    if (o.n > INT32_MAX) return es_fail(err, ES_ERR_RANGE, "encoding has too many tokens (%lld)", (long long)o.n);
    *n_out = (int)o.n;
    return ES_OK;
}

/* ---- decoding --------------------------------------------------------------------------------- */

typedef struct piece_out {
    char *buf;
    int cap, n;
} piece_out;

static void put(piece_out *p, const char *s, size_t n) {
    size_t room = (size_t)(p->cap - p->n);
    if (n > room) n = room;
    if (n) memcpy(p->buf + p->n, s, n);
    p->n += (int)n;
}

int es_token_to_piece(const es_tokenizer *t, int32_t prev, int32_t id, char *buf, int cap) {
    if (!t || id < 0 || id >= t->n_vocab || !buf || cap <= 0) return 0;
    piece_out p = {buf, cap, 0};
    const char *s = tok_text(t, id);
    size_t n = t->len[id];
    int32_t ty = t->type[id];
    int b;
    if (ty == ES_TOKTYPE_CONTROL || ty == ES_TOKTYPE_UNUSED) return 0;
    if (ty == ES_TOKTYPE_BYTE && parse_byte_token(s, n, &b)) {
        char c = (char)b;
        put(&p, &c, 1);
        return p.n;
    }
    if (ty == ES_TOKTYPE_USER_DEFINED || ty == ES_TOKTYPE_UNKNOWN) {
        put(&p, s, n);
        return p.n;
    }
    if (t->kind == ES_TOK_SPM) {
        /* SentencePiece drops the space it added in front of the text: the first piece after BOS */
        bool strip = t->add_space_prefix && prev >= 0 && prev == t->bos;
        for (size_t i = 0; i < n;) {
            if (t->escape_spaces && n - i >= 3 && memcmp(s + i, k_lower_block, 3) == 0) {
                if (!(strip && i == 0)) put(&p, " ", 1);
                i += 3;
            } else {
                if (!(strip && i == 0 && s[i] == ' ')) put(&p, s + i, 1);
                i++;
            }
        }
        return p.n;
    }
    /* byte-level BPE: every character stands for one byte */
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = tok_utf8_next(s + i, n - i, &cp);
        int byte = tok_cp_to_byte(cp);
        if (byte >= 0) {
            char c = (char)byte;
            put(&p, &c, 1);
        } else {
            put(&p, s + i, (size_t)l); /* not a mapped character: keep it as it is */
        }
        i += (size_t)l;
    }
    return p.n;
}
