/* tok_pretok.c — the byte-level BPE pre-tokenisers, written out by hand from their regexes.
 *
 * A pre-tokeniser is a list of regexes applied one after the other, as llama.cpp's llama-vocab.cpp
 * lists them for each tokenizer.ggml.pre: each regex splits every piece the previous ones left into
 * its matches and the unmatched stretches between them (both are pieces). Within a piece a regex is
 * searched for from left to right; at each position its alternatives are tried in order, as a
 * backtracking engine does, and the first that matches wins. Every regex here is one `pt_match`
 * function. The single-regex pre-tokenisers (gpt2, llama-bpe, qwen2, gpt-4o) match everywhere, so
 * their pieces are exactly the matches.
 *
 * gpt2        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * llama-bpe   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *             \s*[\r\n]+|\s+(?!\S)|\s+
 * qwen2       as llama-bpe with \p{N} (one digit a piece) for \p{N}{1,3}
 * starcoder   \p{N}, then gpt2                      (also refact, command-r, smollm, codeshell, exaone)
 * falcon      [\p{P}\$\+<=>\^~\|`]+, then gpt2, then [0-9][0-9][0-9]
 * default     [\p{P}\$\+<=>\^~\|]+, then gpt2, then \p{N}+, then [0-9][0-9][0-9]
 * deepseek-coder  [\r\n], \s?\p{L}+, \s?\p{P}+, [一-龥ࠀ-一가-퟿]+, \p{N}
 * deepseek-llm    [\r\n], \s?[cased letters]+, \s?[!-/:-~！-／：-～‘-‟　-。]+, \s+$, [一-龥ࠀ-一가-퟿]+, \p{N}+
 * deepseek-v3 \p{N}{1,3}, [一-龥぀-ゟ゠-ヿ]+, then
 *             [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
 *             ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * gpt-4o      [^\r\n\p{L}\p{N}]?U*W+C?|[^\r\n\p{L}\p{N}]?U+W*C?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|
 *             \s*[\r\n]+|\s+(?!\S)|\s+
 *             where C is the (?i:'s|...) contraction, U "upper" letters and W "lower" ones as llama.cpp
 *             reads \p{Lu}\p{Lt}\p{Lm}\p{Lo} and \p{Ll}\p{Lm}\p{Lo}: a letter other than a-z, a letter
 *             other than A-Z (so a non-ASCII letter is both; marks are not letters).
 *
 * Character classes come from tok_cp_class (Unicode general categories and White_Space). Where
 * llama.cpp runs a regex through std::wregex on the code points themselves (the explicit ranges of the
 * deepseek families), non-ASCII white space stands in as U+000B, as there. Invalid UTF-8 bytes count
 * as single characters of class "other". */
#include <stdlib.h>

#include "tokenizer/tok_impl.h"
#include "util/err.h"

typedef struct pt_char {
    uint32_t cp;
    uint32_t off; /* byte offset in the fragment */
    uint8_t cc;
} pt_char;

/* The end of the match that starts at c[i] within the piece c[..n), or i when none starts there. */
typedef size_t (*pt_match)(const pt_char *c, size_t i, size_t n);

#define CC(x) (1u << (x))
#define M_L CC(TOK_CC_LETTER)
#define M_N CC(TOK_CC_NUMBER)
#define M_W CC(TOK_CC_SPACE)
#define M_P CC(TOK_CC_PUNCT)
#define M_S CC(TOK_CC_SYMBOL)
#define M_M CC(TOK_CC_MARK)
#define M_OTHER (CC(TOK_CC_PUNCT) | CC(TOK_CC_SYMBOL) | CC(TOK_CC_MARK) | CC(TOK_CC_OTHER)) /* [^\s\p{L}\p{N}] */

static bool in(const pt_char *c, unsigned mask) { return (mask >> c->cc) & 1u; }

/* The end of the run of characters in `mask` from i. */
static size_t run(const pt_char *c, size_t i, size_t n, unsigned mask) {
    while (i < n && in(&c[i], mask)) i++;
    return i;
}

static bool is_crlf(uint32_t cp) { return cp == '\r' || cp == '\n'; }
static uint32_t ascii_lower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
static bool ascii_digit(uint32_t c) { return c >= '0' && c <= '9'; }

/* The code point std::wregex sees in llama.cpp: non-ASCII white space becomes U+000B. */
static uint32_t wcp(const pt_char *c) { return (c->cp > 0x7F && c->cc == TOK_CC_SPACE) ? 0x0B : c->cp; }

/* Length (in characters) of a contraction at i, or 0. */
static size_t contraction(const pt_char *c, size_t i, size_t n, bool nocase) {
    if (i >= n || c[i].cp != '\'' || i + 1 >= n) return 0;
    uint32_t a = nocase ? ascii_lower(c[i + 1].cp) : c[i + 1].cp;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 >= n) return 0;
    uint32_t b = nocase ? ascii_lower(c[i + 2].cp) : c[i + 2].cp;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* \s+(?!\S)|\s+ at i (c[i] is white space): the whole run when it ends the piece, else the run less
 * its last character (left for the next word's leading space) unless that would leave nothing. */
static size_t space_tail(const pt_char *c, size_t i, size_t n) {
    size_t e = run(c, i, n, M_W);
    if (e < n && e - i >= 2) return e - 1;
    return e;
}

/* \s*[\r\n]+ at i: up to the last CR/LF of the white-space run from i, or i when it has none. */
static size_t space_to_newline(const pt_char *c, size_t i, size_t n) {
    size_t e = run(c, i, n, M_W);
    for (size_t m = e; m > i; m--)
        if (is_crlf(c[m - 1].cp)) return m;
    return i;
}

/* ---- single-regex pre-tokenisers ---- */

static size_t m_gpt2(const pt_char *c, size_t i, size_t n) {
    size_t k = contraction(c, i, n, false);
    if (k) return i + k;
    size_t j = (c[i].cp == ' ' && i + 1 < n) ? i + 1 : i; /* the optional leading space */
    static const unsigned k_runs[3] = {M_L, M_N, M_OTHER};
    for (int r = 0; r < 3; r++)
        if (in(&c[j], k_runs[r])) return run(c, j, n, k_runs[r]);
    return space_tail(c, i, n);
}

/* llama-bpe / qwen2; max_digits 3 or 1. */
static size_t m_llama3(const pt_char *c, size_t i, size_t n, size_t max_digits) {
    size_t k = contraction(c, i, n, true);
    if (k) return i + k;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (in(&c[i], M_L)) return run(c, i, n, M_L);
    if (!in(&c[i], M_N) && !is_crlf(c[i].cp) && i + 1 < n && in(&c[i + 1], M_L)) return run(c, i + 1, n, M_L);
    /* \p{N}{1,max} */
    if (in(&c[i], M_N)) {
        size_t e = i;
        while (e < n && e - i < max_digits && in(&c[e], M_N)) e++;
        return e;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t j = (c[i].cp == ' ' && i + 1 < n) ? i + 1 : i;
    if (in(&c[j], M_OTHER)) {
        size_t e = run(c, j, n, M_OTHER);
        while (e < n && is_crlf(c[e].cp)) e++;
        return e;
    }
    /* c[i] is white space here */
    size_t e = space_to_newline(c, i, n);
    return e > i ? e : space_tail(c, i, n);
}

static size_t m_llama3_3(const pt_char *c, size_t i, size_t n) { return m_llama3(c, i, n, 3); }
static size_t m_llama3_1(const pt_char *c, size_t i, size_t n) { return m_llama3(c, i, n, 1); }

/* gpt-4o's letters as llama.cpp reads them: U = a letter other than a-z, W = a letter other than A-Z. */
static bool g4_upper(const pt_char *c) { return c->cc == TOK_CC_LETTER && !(c->cp >= 'a' && c->cp <= 'z'); }
static bool g4_lower(const pt_char *c) { return c->cc == TOK_CC_LETTER && !(c->cp >= 'A' && c->cp <= 'Z'); }

/* U*W+ from j (backtracking U* until a W follows), then the optional contraction; j when no match. */
static size_t g4_word_lower(const pt_char *c, size_t j, size_t n) {
    size_t u = j;
    while (u < n && g4_upper(&c[u])) u++;
    for (size_t k = u + 1; k-- > j;) { /* U* takes c[j..k), W+ starts at c[k] */
        if (k < n && g4_lower(&c[k])) {
            size_t e = k;
            while (e < n && g4_lower(&c[e])) e++;
            return e + contraction(c, e, n, true);
        }
    }
    return j;
}

/* U+W* from j, then the optional contraction; j when c[j] is no U. */
static size_t g4_word_upper(const pt_char *c, size_t j, size_t n) {
    size_t e = j;
    while (e < n && g4_upper(&c[e])) e++;
    if (e == j) return j;
    while (e < n && g4_lower(&c[e])) e++;
    return e + contraction(c, e, n, true);
}

static size_t m_gpt4o(const pt_char *c, size_t i, size_t n) {
    /* the optional [^\r\n\p{L}\p{N}] before a word: taken when the word follows it */
    bool lead = !is_crlf(c[i].cp) && !in(&c[i], M_L | M_N) && i + 1 < n;
    size_t j = lead ? i + 1 : i, e;
    if ((e = g4_word_lower(c, j, n)) > j) return e;
    if (lead && (e = g4_word_lower(c, i, n)) > i) return e;
    if ((e = g4_word_upper(c, j, n)) > j) return e;
    if (lead && (e = g4_word_upper(c, i, n)) > i) return e;
    if (in(&c[i], M_N)) {
        e = i;
        while (e < n && e - i < 3 && in(&c[e], M_N)) e++;
        return e;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n/]* */
    j = (c[i].cp == ' ' && i + 1 < n) ? i + 1 : i;
    if (in(&c[j], M_OTHER)) {
        e = run(c, j, n, M_OTHER);
        while (e < n && (is_crlf(c[e].cp) || c[e].cp == '/')) e++;
        return e;
    }
    e = space_to_newline(c, i, n);
    return e > i ? e : space_tail(c, i, n);
}

/* ---- the regexes of the multi-regex pre-tokenisers ---- */

/* \p{N} */
static size_t m_digit(const pt_char *c, size_t i, size_t n) {
    (void)n;
    return in(&c[i], M_N) ? i + 1 : i;
}

/* \p{N}+ */
static size_t m_digits(const pt_char *c, size_t i, size_t n) { return run(c, i, n, M_N); }

/* \p{N}{1,3} */
static size_t m_digits3(const pt_char *c, size_t i, size_t n) {
    size_t e = i;
    while (e < n && e - i < 3 && in(&c[e], M_N)) e++;
    return e;
}

/* [0-9][0-9][0-9] */
static size_t m_ascii_digits3(const pt_char *c, size_t i, size_t n) {
    return (i + 3 <= n && ascii_digit(c[i].cp) && ascii_digit(c[i + 1].cp) && ascii_digit(c[i + 2].cp)) ? i + 3 : i;
}

/* [\r\n] */
static size_t m_crlf(const pt_char *c, size_t i, size_t n) {
    (void)n;
    return is_crlf(c[i].cp) ? i + 1 : i;
}

/* [\p{P}\$\+<=>\^~\|]+ (default) and the same with ` (falcon) */
static bool punct_sym(const pt_char *c, bool backtick) {
    uint32_t cp = c->cp;
    return c->cc == TOK_CC_PUNCT || cp == '$' || cp == '+' || cp == '<' || cp == '=' || cp == '>' || cp == '^' ||
           cp == '~' || cp == '|' || (backtick && cp == '`');
}

static size_t m_punct_falcon(const pt_char *c, size_t i, size_t n) {
    while (i < n && punct_sym(&c[i], true)) i++;
    return i;
}

static size_t m_punct_default(const pt_char *c, size_t i, size_t n) {
    while (i < n && punct_sym(&c[i], false)) i++;
    return i;
}

/* \s?X+ where X is the class `mask` */
static size_t space_opt_run(const pt_char *c, size_t i, size_t n, unsigned mask) {
    if (in(&c[i], M_W) && i + 1 < n && in(&c[i + 1], mask)) return run(c, i + 1, n, mask);
    return run(c, i, n, mask);
}

static size_t m_space_letters(const pt_char *c, size_t i, size_t n) { return space_opt_run(c, i, n, M_L); }
static size_t m_space_punct(const pt_char *c, size_t i, size_t n) { return space_opt_run(c, i, n, M_P); }

typedef struct cp_range { uint32_t lo, hi; } cp_range;

static bool in_ranges(uint32_t cp, const cp_range *r, size_t nr) {
    for (size_t k = 0; k < nr; k++)
        if (cp >= r[k].lo && cp <= r[k].hi) return true;
    return false;
}

#define N_RANGES(a) (sizeof(a) / sizeof((a)[0]))

/* [一-龥ࠀ-一가-퟿]+ (the deepseek families' CJK, Samaritan-to-CJK and Hangul blocks) */
static const cp_range k_ds_cjk[] = {{0x4E00, 0x9FA5}, {0x0800, 0x4E00}, {0xAC00, 0xD7FF}};

static size_t m_ds_cjk(const pt_char *c, size_t i, size_t n) {
    while (i < n && in_ranges(wcp(&c[i]), k_ds_cjk, N_RANGES(k_ds_cjk))) i++;
    return i;
}

/* deepseek-llm's explicit letter class (the cased letters of its tokenizer.json's regex) */
static const cp_range k_dsl_letters[] = {
    {0x0041, 0x005A}, {0x0061, 0x007A}, {0x00B5, 0x00B5}, {0x00C0, 0x00D6}, {0x00D8, 0x00F6}, {0x00F8, 0x01BA},
    {0x01BC, 0x01BF}, {0x01C4, 0x0293}, {0x0295, 0x02AF}, {0x0370, 0x0373}, {0x0376, 0x0377}, {0x037B, 0x037D},
    {0x037F, 0x037F}, {0x0386, 0x0386}, {0x0388, 0x038A}, {0x038C, 0x038C}, {0x038E, 0x03A1}, {0x03A3, 0x03F5},
    {0x03F7, 0x0481}, {0x048A, 0x052F}, {0x0531, 0x0556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124},
    {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE},
    {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E},
    {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF},
    {0x1E900, 0x1E943},
};

/* deepseek-llm's [!-/:-~！-／：-～‘-‟　-。] */
static const cp_range k_dsl_punct[] = {{0x21, 0x2F}, {0x3A, 0x7E}, {0xFF01, 0xFF0F}, {0xFF1A, 0xFF5E},
                                       {0x2018, 0x201F}, {0x3000, 0x3002}};

/* \s?[set]+ over the code points std::wregex sees */
static size_t space_opt_ranges(const pt_char *c, size_t i, size_t n, const cp_range *r, size_t nr) {
    size_t j = (in(&c[i], M_W) && i + 1 < n && in_ranges(wcp(&c[i + 1]), r, nr)) ? i + 1 : i;
    while (j < n && in_ranges(wcp(&c[j]), r, nr)) j++;
    return j;
}

static size_t m_dsl_letters(const pt_char *c, size_t i, size_t n) {
    return space_opt_ranges(c, i, n, k_dsl_letters, N_RANGES(k_dsl_letters));
}

static size_t m_dsl_punct(const pt_char *c, size_t i, size_t n) {
    return space_opt_ranges(c, i, n, k_dsl_punct, N_RANGES(k_dsl_punct));
}

/* \s+$ */
static size_t m_trailing_space(const pt_char *c, size_t i, size_t n) { return run(c, i, n, M_W) == n ? n : i; }

/* [一-龥぀-ゟ゠-ヿ]+ (CJK, hiragana, katakana) */
static const cp_range k_ds3_cjk[] = {{0x4E00, 0x9FA5}, {0x3040, 0x309F}, {0x30A0, 0x30FF}};

static size_t m_ds3_cjk(const pt_char *c, size_t i, size_t n) {
    while (i < n && in_ranges(wcp(&c[i]), k_ds3_cjk, N_RANGES(k_ds3_cjk))) i++;
    return i;
}

static bool ascii_letter(uint32_t cp) { return (cp | 32) >= 'a' && (cp | 32) <= 'z'; }
/* [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]: printable ASCII that is no letter or digit */
static bool ascii_punct_sym(uint32_t cp) { return cp > 0x20 && cp < 0x7F && !ascii_letter(cp) && !ascii_digit(cp); }

/* deepseek-v3's main regex (see the head of the file) */
static size_t m_ds3(const pt_char *c, size_t i, size_t n) {
    /* [!"#...~][A-Za-z]+ */
    if (ascii_punct_sym(c[i].cp) && i + 1 < n && ascii_letter(c[i + 1].cp)) {
        size_t e = i + 1;
        while (e < n && ascii_letter(c[e].cp)) e++;
        return e;
    }
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ */
    if (!is_crlf(c[i].cp) && !in(&c[i], M_L | M_P | M_S) && i + 1 < n && in(&c[i + 1], M_L | M_M))
        return run(c, i + 1, n, M_L | M_M);
    if (in(&c[i], M_L | M_M)) return run(c, i, n, M_L | M_M);
    /*  ?[\p{P}\p{S}]+[\r\n]* */
    size_t j = (c[i].cp == ' ' && i + 1 < n) ? i + 1 : i;
    if (in(&c[j], M_P | M_S)) {
        size_t e = run(c, j, n, M_P | M_S);
        while (e < n && is_crlf(c[e].cp)) e++;
        return e;
    }
    if (!in(&c[i], M_W)) return i;
    size_t e = space_to_newline(c, i, n);
    return e > i ? e : space_tail(c, i, n);
}

#define PT_MAX_STAGES 6

static const struct pt_def {
    int n;
    pt_match stage[PT_MAX_STAGES];
} k_pre[TOK_PRE_COUNT] = {
    [TOK_PRE_GPT2] = {1, {m_gpt2}},
    [TOK_PRE_LLAMA3] = {1, {m_llama3_3}},
    [TOK_PRE_QWEN2] = {1, {m_llama3_1}},
    [TOK_PRE_STARCODER] = {2, {m_digit, m_gpt2}},
    [TOK_PRE_FALCON] = {3, {m_punct_falcon, m_gpt2, m_ascii_digits3}},
    [TOK_PRE_DEFAULT] = {4, {m_punct_default, m_gpt2, m_digits, m_ascii_digits3}},
    [TOK_PRE_DEEPSEEK_CODER] = {5, {m_crlf, m_space_letters, m_space_punct, m_ds_cjk, m_digit}},
    [TOK_PRE_DEEPSEEK_LLM] = {6, {m_crlf, m_dsl_letters, m_dsl_punct, m_trailing_space, m_ds_cjk, m_digits}},
    [TOK_PRE_DEEPSEEK3] = {3, {m_digits3, m_ds3_cjk, m_ds3}},
    [TOK_PRE_GPT4O] = {1, {m_gpt4o}},
};

/* Splits each piece of ends[0..np) (exclusive end indices, the first piece starting at 0) by `m`:
 * matches and the stretches between them, written to out; returns the new count. */
static size_t split_stage(const pt_char *c, const uint32_t *ends, size_t np, pt_match m, uint32_t *out) {
    size_t no = 0, a = 0;
    for (size_t p = 0; p < np; p++) {
        size_t b = ends[p], gap = a;
        for (size_t i = a; i < b;) {
            size_t e = m(c, i, b);
            if (e <= i) { i++; continue; }
            if (gap < i) out[no++] = (uint32_t)i;
            out[no++] = (uint32_t)e;
            i = gap = e;
        }
        if (gap < b) out[no++] = (uint32_t)b;
        a = b;
    }
    return no;
}

es_status tok_pretokenize(tok_pre pre, const char *s, size_t n, tok_piece_fn fn, void *ctx, es_err *err) {
    if (n == 0) return ES_OK;
    if (n > UINT32_MAX) return es_fail(err, ES_ERR_RANGE, "text too long to tokenize (%zu bytes)", n);
    if ((unsigned)pre >= TOK_PRE_COUNT) return es_fail(err, ES_ERR_INVALID_ARG, "unknown pre-tokenizer %d", (int)pre);
    pt_char *c = malloc(n * sizeof *c);
    uint32_t *ends = malloc(2 * (n + 1) * sizeof *ends);
    if (!c || !ends) {
        free(c);
        free(ends);
        return es_fail(err, ES_ERR_NOMEM, "out of memory pre-tokenizing %zu bytes", n);
    }
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
    /* two buffers of piece ends, each room for nc pieces: a stage never makes more pieces than characters */
    uint32_t *cur = ends, *next = ends + n + 1;
    cur[0] = (uint32_t)nc;
    size_t np = 1;
    const struct pt_def *d = &k_pre[pre];
    for (int k = 0; k < d->n; k++) {
        np = split_stage(c, cur, np, d->stage[k], next);
        uint32_t *t = cur;
        cur = next;
        next = t;
    }
    es_status st = ES_OK;
    size_t a = 0;
    for (size_t p = 0; p < np && st == ES_OK; p++) {
        size_t b = cur[p];
        st = fn(ctx, c[a].off, b < nc ? c[b].off : n, err);
        a = b;
    }
    free(ends);
    free(c);
    return st;
}
