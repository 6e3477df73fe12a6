/* str.h — a growable byte string (always NUL-terminated when non-empty) for building replies. */
#ifndef ES_UTIL_STR_H
#define ES_UTIL_STR_H

#include <stdbool.h>
#include <stddef.h>

typedef struct es_str {
    char *s;     /* NULL until the first append */
    size_t len;  /* bytes, excluding the NUL */
    size_t cap;
} es_str;

/* Appends n bytes; false (string unchanged) when memory runs out. */
bool es_str_append(es_str *b, const char *s, size_t n);
bool es_str_puts(es_str *b, const char *s);
bool es_str_printf(es_str *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (n <= len). */
void es_str_consume(es_str *b, size_t n);
void es_str_clear(es_str *b);
void es_str_free(es_str *b);
/* The contents, "" when empty (never NULL). */
const char *es_str_cstr(const es_str *b);

#endif
