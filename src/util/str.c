#include "util/str.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(es_str *b, size_t extra) {
    if (extra > ((size_t)1 << 40) || b->len > ((size_t)1 << 40)) return false; /* keeps the sums below exact */
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) return false;
    b->s = ns;
    b->cap = cap;
    return true;
}

bool es_str_append(es_str *b, const char *s, size_t n) {
    if (!reserve(b, n)) return false;
    if (n) memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
    return true;
}

bool es_str_puts(es_str *b, const char *s) { return es_str_append(b, s, strlen(s)); }

bool es_str_printf(es_str *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return false;
    if ((size_t)n < sizeof small) return es_str_append(b, small, (size_t)n);
    if (!reserve(b, (size_t)n)) return false;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

void es_str_consume(es_str *b, size_t n) {
    if (n >= b->len) {
        es_str_clear(b);
        return;
    }
    memmove(b->s, b->s + n, b->len - n);
    b->len -= n;
    b->s[b->len] = 0;
}

void es_str_clear(es_str *b) {
    b->len = 0;
    if (b->s) b->s[0] = 0;
}

void es_str_free(es_str *b) {
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}

const char *es_str_cstr(const es_str *b) { return b->s ? b->s : ""; }
