/* detok.c — incremental detokenisation (see detok.h). The UTF-8 rules are those of RFC 3629 /
 * Unicode table 3-7: the second byte's range depends on the lead byte (E0: A0..BF, ED: 80..9F,
 * F0: 90..BF, F4: 80..8F), which rules out overlongs, surrogates and code points above U+10FFFF. */
#include "tokenizer/detok.h"

#include <string.h>

static const char k_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

/* Sequence length announced by a lead byte (0: not a valid lead). */
static int lead_len(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

/* Whether byte k (>= 1) of a sequence led by `lead` may be c. */
static bool cont_ok(unsigned char lead, int k, unsigned char c) {
    if (k == 1) {
        if (lead == 0xE0) return c >= 0xA0 && c <= 0xBF;
        if (lead == 0xED) return c >= 0x80 && c <= 0x9F;
        if (lead == 0xF0) return c >= 0x90 && c <= 0xBF;
        if (lead == 0xF4) return c >= 0x80 && c <= 0x8F;
    }
    return c >= 0x80 && c <= 0xBF;
}

/* Length of the valid character at s[0..n): > 0 complete, 0 a valid but incomplete prefix, -k
 * invalid: its first k bytes (the lead and the continuation bytes that were still valid, the
 * "maximal subpart" of Unicode 3.9) become one U+FFFD. */
static int char_at(const unsigned char *s, size_t n) {
    const int l = lead_len(s[0]);
    if (l == 0) return -1;
    for (int k = 1; k < l; k++) {
        if ((size_t)k >= n) return 0;
        if (!cont_ok(s[0], k, s[k])) return -k;
    }
    return l;
}

bool es_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        const int l = char_at(u + i, n - i);
        if (l <= 0) return false;
        i += (size_t)l;
    }
    return true;
}

void es_detok_init(es_detok *d, const es_tokenizer *tok, int32_t prev) {
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->prev = prev;
}

bool es_detok_bytes(es_detok *d, const char *bytes, size_t n, es_str *out) {
    /* work on pending + new bytes; at most 3 are pending, so a small prefix buffer suffices */
    size_t i = 0;
    while (d->n_pend > 0 && i < n) {
        d->pend[d->n_pend++] = (unsigned char)bytes[i++];
        const int l = char_at(d->pend, (size_t)d->n_pend);
        if (l > 0) {
            if (!es_str_append(out, (const char *)d->pend, (size_t)l)) return false;
            d->n_pend = 0;
        } else if (l < 0) {
            /* the maximal subpart is replaced; the bytes after it are looked at again as new input */
            unsigned char rest[4];
            const int nr = d->n_pend + l;
            memcpy(rest, d->pend - l, (size_t)nr);
            d->n_pend = 0;
            if (!es_str_append(out, k_replacement, sizeof k_replacement)) return false;
            if (!es_detok_bytes(d, (const char *)rest, (size_t)nr, out)) return false;
        }
    }
    const unsigned char *u = (const unsigned char *)bytes;
    size_t run = i; /* start of a run of valid characters copied in one go */
    while (i < n) {
        const int l = char_at(u + i, n - i);
        if (l > 0) {
            i += (size_t)l;
            continue;
        }
        if (!es_str_append(out, bytes + run, i - run)) return false;
        if (l == 0) { /* incomplete at the end: hold it */
            d->n_pend = (int)(n - i);
            memcpy(d->pend, u + i, n - i);
            return true;
        }
        if (!es_str_append(out, k_replacement, sizeof k_replacement)) return false;
        i += (size_t)-l;
        run = i;
    }
    return es_str_append(out, bytes + run, i - run);
}

bool es_detok_push(es_detok *d, int32_t id, es_str *out) {
    char piece[512];
    int n = es_token_to_piece(d->tok, d->prev, id, piece, (int)sizeof piece);
    d->prev = id;
    if (n <= 0) return true;
    if (n > (int)sizeof piece) n = (int)sizeof piece;
    return es_detok_bytes(d, piece, (size_t)n, out);
}

bool es_detok_flush(es_detok *d, es_str *out) {
    if (d->n_pend == 0) return true;
    d->n_pend = 0;
    return es_str_append(out, k_replacement, sizeof k_replacement);
}
