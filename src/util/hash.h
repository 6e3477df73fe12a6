/* hash.h — FNV-1a 64-bit, used for vocabulary fingerprints and hash tables. */
#ifndef ES_UTIL_HASH_H
#define ES_UTIL_HASH_H

#include <stddef.h>
#include <stdint.h>

#define ES_FNV_OFFSET 0xcbf29ce484222325ull

static inline uint64_t es_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
    return h;
}

#endif
