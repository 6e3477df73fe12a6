/* tok_unicode.c — UTF-8 decoding, the character classes the pre-tokeniser regexes need (\p{L},
 * \p{N}, \p{P}, \p{S}, \p{M}, \s), and GPT-2's byte <-> printable-character mapping.
 *
 * The class of a non-ASCII code point comes from a table generated from the Unicode database
 * (tok_unicode_table.h: general categories L*, N*, P*, S*, M*, the White_Space property; unassigned
 * code points are "other", as Hugging Face's and llama.cpp's regexes see them). ASCII is classed
 * inline, by the same Unicode categories. */
#include "tokenizer/tok_impl.h"

int tok_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *p = (const unsigned char *)s;
    unsigned c = p[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; min = 0x10000; }
    else { *cp = c | 0x80000000u; return 1; }
    if ((size_t)len > n) { *cp = c | 0x80000000u; return 1; }
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) { *cp = c | 0x80000000u; return 1; }
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = c | 0x80000000u; return 1; }
    *cp = v;
    return len;
}

int tok_utf8_put(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Non-ASCII code point ranges that are not letters (generated: scripts/gen-unicode-table.py). */
#define W TOK_CC_SPACE
#define N TOK_CC_NUMBER
#define P TOK_CC_PUNCT
#define S TOK_CC_SYMBOL
#define M TOK_CC_MARK
#define O TOK_CC_OTHER
static const struct { uint32_t lo, hi; uint8_t cc; } k_cc[] = {
#include "tokenizer/tok_unicode_table.h"
};
#undef W
#undef N
#undef P
#undef S
#undef M
#undef O

bool tok_cc_table_ok(void) {
    size_t n = sizeof k_cc / sizeof k_cc[0];
    for (size_t i = 0; i < n; i++) {
        if (k_cc[i].lo > k_cc[i].hi || k_cc[i].lo < 0x80) return false;
        if (i > 0 && k_cc[i].lo <= k_cc[i - 1].hi) return false;
    }
    return true;
}

tok_cc tok_cp_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return TOK_CC_LETTER;
        if (cp >= '0' && cp <= '9') return TOK_CC_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return TOK_CC_SPACE;
        if (cp < 0x20 || cp == 0x7F) return TOK_CC_OTHER;
        /* Unicode's Sc, Sm, Sk: $ + < = > ^ ` | ~; the rest of ASCII's printable marks are P* */
        if (cp == '$' || cp == '+' || (cp >= '<' && cp <= '>') || cp == '^' || cp == '`' || cp == '|' || cp == '~')
            return TOK_CC_SYMBOL;
        return TOK_CC_PUNCT;
    }
    if (cp > 0x10FFFF) return TOK_CC_OTHER; /* an invalid byte (see tok_utf8_next) */
    size_t lo = 0, hi = sizeof k_cc / sizeof k_cc[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < k_cc[mid].lo) hi = mid;
        else if (cp > k_cc[mid].hi) lo = mid + 1;
        else return (tok_cc)k_cc[mid].cc;
    }
    return TOK_CC_LETTER;
}

/* Bytes without a printable stand-in: 0x00-0x20 (33), 0x7F-0xA0 (34), 0xAD (1); the k-th of them in
 * byte order maps to U+0100 + k. */
uint32_t tok_byte_to_cp(uint8_t b) {
    if (b <= 0x20) return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0) return 0x100u + 33 + (b - 0x7Fu);
    if (b == 0xAD) return 0x100u + 67;
    return b;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) {
        if (cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) return -1;
        return (int)cp;
    }
    if (cp < 0x100 + 33) return (int)(cp - 0x100);
    if (cp < 0x100 + 67) return (int)(cp - 0x100 - 33 + 0x7F);
    if (cp == 0x100 + 67) return 0xAD;
    return -1;
}
