/* fuzz_gguf.c — libFuzzer target for the GGUF reader: parses the input with es_gguf_open_buffer
 * and, when it is accepted, touches everything a consumer would (every key/value formatted and
 * read through the typed getters, every tensor's first and last data byte), so a validation gap
 * shows up as an ASan/UBSan report. Build with -DES_FUZZ=ON (see scripts/fuzz.sh). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gguf/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk_kv(const es_gguf *g, int64_t i) {
    char big[512], small[7];
    es_gguf_kv_format(g, i, big, sizeof big);
    es_gguf_kv_format(g, i, small, sizeof small);
    const char *key = es_gguf_kv_key(g, i);
    if (es_gguf_find_kv(g, key) != i) __builtin_trap();
    uint32_t u32;
    uint64_t u64;
    int64_t i64;
    float f;
    double d;
    bool b;
    const char *s;
    size_t len;
    es_gguf_get_u32(g, key, &u32);
    es_gguf_get_u64(g, key, &u64);
    es_gguf_get_i64(g, key, &i64);
    es_gguf_get_f32(g, key, &f);
    es_gguf_get_bool(g, key, &b);
    if (es_gguf_get_str(g, key, &s, &len) && s[len] != 0) __builtin_trap();
    es_gguf_vtype et;
    uint64_t n;
    if (!es_gguf_get_arr(g, key, &et, &n) || n == 0) return;
    if (et == ES_GGUF_STRING) {
        volatile char c = 0;
        for (uint64_t k = 0; k < n && k < 64; k++) {
            s = es_gguf_arr_str(g, key, k, &len);
            c ^= s[len];
        }
        s = es_gguf_arr_str(g, key, n - 1, &len);
        c ^= s[len];
        (void)c;
    } else {
        es_gguf_arr_f64(g, key, 0, &d);
        es_gguf_arr_f64(g, key, n - 1, &d);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    es_gguf *g = NULL;
    es_err err;
    if (es_gguf_open_buffer(data, size, &g, &err) != ES_OK) {
        if (g || !memchr(err.msg, 0, sizeof err.msg)) __builtin_trap();
        return 0;
    }
    for (int64_t i = 0; i < es_gguf_n_kv(g); i++) walk_kv(g, i);
    volatile uint8_t sink = 0;
    for (int64_t i = 0; i < es_gguf_n_tensors(g); i++) {
        const es_gguf_tensor *t = es_gguf_tensor_at(g, i);
        if (es_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        if (t->nbytes) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
    }
    (void)sink;
    es_gguf_free(g);
    return 0;
}
