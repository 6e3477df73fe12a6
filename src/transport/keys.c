/* keys.c — accepted api keys (see keys.h). */
#include "transport/keys.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

#define KEYS_FILE_MAX ((size_t)16 << 20) /* a keys file larger than this is a mistake */

static bool key_char_ok(unsigned char c) { return c > 0x20 && c < 0x7f; }

/* Adds key[0..len) after checking it; `where` prefixes messages ("" or "FILE:LINE: "). */
static es_status add_n(es_keys *ks, const char *key, size_t len, bool strict, const char *where, es_err *err) {
    if (len == 0) return es_fail(err, ES_ERR_FORMAT, "%san empty api key", where);
    if (len > ES_KEYS_MAX_LEN) return es_fail(err, ES_ERR_FORMAT, "%san api key longer than %d bytes", where, ES_KEYS_MAX_LEN);
    for (size_t i = 0; strict && i < len; i++)
        if (!key_char_ok((unsigned char)key[i]))
            return es_fail(err, ES_ERR_FORMAT, "%san api key must be printable ASCII without blanks (byte %zu is 0x%02x)", where,
                           i + 1, (unsigned char)key[i]);
    for (int i = 0; i < ks->n; i++)
        if (strlen(ks->k[i]) == len && !memcmp(ks->k[i], key, len)) return ES_OK;
    if (ks->n == ES_KEYS_MAX) return es_fail(err, ES_ERR_RANGE, "%smore than %d api keys", where, ES_KEYS_MAX);
    if (ks->n == ks->cap) {
        const int cap = ks->cap ? ks->cap * 2 : 4;
        void *nk = realloc(ks->k, (size_t)cap * sizeof *ks->k);
        if (!nk) return es_fail(err, ES_ERR_NOMEM, "out of memory");
        ks->k = nk;
        ks->cap = cap;
    }
    memset(ks->k[ks->n], 0, sizeof ks->k[ks->n]);
    memcpy(ks->k[ks->n], key, len);
    ks->n++;
    return ES_OK;
}

es_status es_keys_add(es_keys *ks, const char *key, es_err *err) {
    if (!key) return es_fail(err, ES_ERR_INVALID_ARG, "es_keys_add: key is NULL");
    return add_n(ks, key, strnlen(key, ES_KEYS_MAX_LEN + 1), false, "", err);
}

es_status es_keys_parse(es_keys *ks, const char *text, size_t len, const char *what, es_err *err) {
    size_t at = 0;
    int line = 0, seen = 0;
    while (at < len) {
        line++;
        size_t end = at;
        while (end < len && text[end] != '\n') end++;
        size_t a = at, b = end;
        while (a < b && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r')) a++;
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r')) b--;
        at = end + 1;
        if (a == b || text[a] == '#') continue;
        char where[300];
        snprintf(where, sizeof where, "%s:%d: ", what, line);
        es_status st = add_n(ks, text + a, b - a, true, where, err);
        if (st != ES_OK) return st;
        seen++;
    }
    if (seen == 0) return es_fail(err, ES_ERR_INVALID_ARG, "%s holds no api key (one per line; '#' starts a comment)", what);
    return ES_OK;
}

es_status es_keys_load_file(es_keys *ks, const char *path, es_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return es_fail(err, ES_ERR_IO, "cannot read the api keys file %s: %s", path, strerror(errno));
    char *buf = malloc(KEYS_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    const size_t n = fread(buf, 1, KEYS_FILE_MAX + 1, f);
    const bool bad = ferror(f) != 0;
    fclose(f);
    es_status st;
    if (bad) st = es_fail(err, ES_ERR_IO, "cannot read the api keys file %s", path);
    else if (n > KEYS_FILE_MAX) st = es_fail(err, ES_ERR_RANGE, "the api keys file %s is larger than 16 MiB", path);
    else st = es_keys_parse(ks, buf, n, path, err);
    free(buf);
    return st;
}

bool es_keys_match(const es_keys *ks, const char *key, size_t len) {
    if (!ks || ks->n == 0 || !key) return false;
    /* The presented key padded into the same fixed-size field; a longer one can match nothing. */
    char x[ES_KEYS_MAX_LEN + 1];
    memset(x, 0, sizeof x);
    const bool too_long = len > ES_KEYS_MAX_LEN;
    memcpy(x, key, too_long ? ES_KEYS_MAX_LEN : len);
    volatile unsigned hit = 0;
    for (int i = 0; i < ks->n; i++) {
        unsigned diff = too_long;
        for (size_t j = 0; j < sizeof x; j++) diff |= (unsigned)(uint8_t)x[j] ^ (unsigned)(uint8_t)ks->k[i][j];
        hit |= (unsigned)(diff == 0);
    }
    return hit != 0;
}

void es_keys_free(es_keys *ks) {
    if (!ks) return;
    free(ks->k);
    memset(ks, 0, sizeof *ks);
}
