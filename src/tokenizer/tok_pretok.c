/* tok_pretok.c — the byte-level BPE pre-tokenisers, written out by hand from their regexes.
 *
 * gpt2:       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * llama-bpe:  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *             \s*[\r\n]+|\s+(?!\S)|\s+
 * qwen2:      as llama-bpe but \p{N} (one digit per pre-token) instead of \p{N}{1,3}.
 *
 * At each position the alternatives are tried in order, as a backtracking regex engine would, and
 * the first that matches wins; the pieces cover the text with no gaps. Character classes come from
 * tok_cp_class (exact for ASCII, approximate above; see tok_unicode.c). Invalid UTF-8 bytes count as
 * single characters of class "other". */
#include <stdlib.h>

#include "tokenizer/tok_impl.h"
#include "util/err.h"

typedef struct pt_char {
    uint32_t cp;
    uint32_t off; /* byte offset in the fragment */
    uint8_t cc;
} pt_char;

static uint32_t ascii_lower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Length (in characters) of a contraction at i, or 0. */
static size_t contraction(const pt_char *c, size_t i, size_t n, bool nocase) {
    if (c[i].cp != '\'' || i + 1 >= n) return 0;
    uint32_t a = nocase ? ascii_lower(c[i + 1].cp) : c[i + 1].cp;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 >= n) return 0;
    uint32_t b = nocase ? ascii_lower(c[i + 2].cp) : c[i + 2].cp;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

static size_t run_of(const pt_char *c, size_t i, size_t n, tok_cc cc) {
    while (i < n && c[i].cc == cc) i++;
    return i;
}

static bool is_crlf(uint32_t cp) { return cp == '\r' || cp == '\n'; }

/* \s+(?!\S)|\s+ at i (c[i] is white space): the whole run when it ends the text, else the run less
 * its last character (left for the next word's leading space) unless that would leave nothing. */
static size_t space_tail(const pt_char *c, size_t i, size_t n) {
    size_t e = run_of(c, i, n, TOK_CC_SPACE);
    if (e < n && e - i >= 2) return e - 1;
    return e;
}

/* End (exclusive, in characters) of the gpt2 pre-token that starts at i. */
static size_t next_gpt2(const pt_char *c, size_t i, size_t n) {
    size_t k = contraction(c, i, n, false);
    if (k) return i + k;
    size_t j = (c[i].cp == ' ' && i + 1 < n) ? i + 1 : i; /* the optional leading space */
    tok_cc cc = c[i].cc;
    if (cc == TOK_CC_LETTER || cc == TOK_CC_NUMBER || cc == TOK_CC_OTHER) return run_of(c, i, n, cc);
    if (j > i && c[j].cc != TOK_CC_SPACE) return run_of(c, j, n, c[j].cc);
    return space_tail(c, i, n);
}

/* End of the llama-bpe / qwen2 pre-token that starts at i; max_digits 3 or 1. */
static size_t next_llama3(const pt_char *c, size_t i, size_t n, size_t max_digits) {
    size_t k = contraction(c, i, n, true);
    if (k) return i + k;
    tok_cc cc = c[i].cc;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (cc == TOK_CC_LETTER) return run_of(c, i, n, TOK_CC_LETTER);
    if (cc != TOK_CC_NUMBER && !is_crlf(c[i].cp) && i + 1 < n && c[i + 1].cc == TOK_CC_LETTER)
        return run_of(c, i + 1, n, TOK_CC_LETTER);
    /* \p{N}{1,max} */
    if (cc == TOK_CC_NUMBER) {
        size_t e = i;
        while (e < n && e - i < max_digits && c[e].cc == TOK_CC_NUMBER) e++;
        return e;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t j = (c[i].cp == ' ' && i + 1 < n) ? i + 1 : i;
    if (c[j].cc == TOK_CC_OTHER) {
        size_t e = run_of(c, j, n, TOK_CC_OTHER);
        while (e < n && is_crlf(c[e].cp)) e++;
        return e;
    }
    /* c[i] is white space here. \s*[\r\n]+ : up to the last CR/LF of the white-space run */
    size_t e = run_of(c, i, n, TOK_CC_SPACE);
    for (size_t m = e; m > i; m--)
        if (is_crlf(c[m - 1].cp)) return m;
    return space_tail(c, i, n);
}

es_status tok_pretokenize(tok_pre pre, const char *s, size_t n, tok_piece_fn fn, void *ctx, es_err *err) {
    if (n == 0) return ES_OK;
    if (n > UINT32_MAX) return es_fail(err, ES_ERR_RANGE, "text too long to tokenize (%zu bytes)", n);
    pt_char *c = malloc(n * sizeof *c);
    if (!c) return es_fail(err, ES_ERR_NOMEM, "out of memory pre-tokenizing %zu bytes", n);
    size_t nc = 0;
    for (size_t off = 0; off < n;) {
        uint32_t cp;
        int l = tok_utf8_next(s + off, n - off, &cp);
        c[nc].cp = cp;
        c[nc].off = (uint32_t)off;
        c[nc].cc = (uint8_t)tok_cp_class(cp);
        nc++;
        off += (size_t)l;
    }
    es_status st = ES_OK;
    for (size_t i = 0; i < nc && st == ES_OK;) {
        size_t e;
        switch (pre) {
        case TOK_PRE_LLAMA3: e = next_llama3(c, i, nc, 3); break;
        case TOK_PRE_QWEN2: e = next_llama3(c, i, nc, 1); break;
        default: e = next_gpt2(c, i, nc); break;
        }
        if (e <= i) e = i + 1; /* cannot happen: every class is covered above */
        st = fn(ctx, c[i].off, e < nc ? c[e].off : n, err);
        i = e;
    }
    free(c);
    return st;
}
