/* keys.h — the api keys a server accepts: --api-key / $EDGESPEC_API_KEY and the lines of an
 * --api-keys-file, checked by both listeners (the edge protocol's HELLO and HTTP's Bearer token).
 *
 * A keys file holds one key per line; leading and trailing blanks are trimmed, blank lines and lines
 * starting with '#' are ignored. A key is 1..ES_KEYS_MAX_LEN bytes of printable ASCII without blanks
 * (it travels in an HTTP header and in a fixed-size HELLO field).
 *
 * es_keys_match compares a presented key with every accepted key in constant time: each comparison
 * runs over the whole fixed-size field and none stops early, so the time taken says nothing about
 * which key, or how much of one, was right, nor about their lengths. */
#ifndef ES_NET_KEYS_H
#define ES_NET_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "edgespec.h"

#define ES_KEYS_MAX_LEN 256 /* = ES_PROTO_MAX_KEY: a HELLO carries at most this many bytes */
#define ES_KEYS_MAX 4096    /* keys in one set */

typedef struct es_keys {
    char (*k)[ES_KEYS_MAX_LEN + 1]; /* [n] NUL-padded keys */
    int n, cap;
} es_keys;

/* Adds one key of 1..ES_KEYS_MAX_LEN bytes (any bytes: --api-key never had the file's character rule);
 * a duplicate is kept once. */
es_status es_keys_add(es_keys *ks, const char *key, es_err *err);
/* Adds every key of a keys file; ES_ERR_IO if unreadable, ES_ERR_FORMAT naming the line of a bad key,
 * ES_ERR_INVALID_ARG if it holds no key at all (a file meant to lock a server must not open it). */
es_status es_keys_load_file(es_keys *ks, const char *path, es_err *err);
/* Parses keys-file text (len bytes; need not be NUL-terminated); `what` names it in messages. */
es_status es_keys_parse(es_keys *ks, const char *text, size_t len, const char *what, es_err *err);
/* True if `key` (len bytes) is one of the set. An empty set matches nothing. */
bool es_keys_match(const es_keys *ks, const char *key, size_t len);
void es_keys_free(es_keys *ks);

#endif
