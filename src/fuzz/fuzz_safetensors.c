/* fuzz_safetensors.c — libFuzzer target for the .safetensors header parser: arbitrary bytes must be
 * rejected cleanly or parsed into tensors whose ranges lie inside the buffer. */
#include <stdint.h>
#include <stdlib.h>

#include "convert/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    es_safetensors *st = NULL;
    es_err err;
    if (es_st_parse(data, size, &st, &err) != ES_OK) return 0;
    float buf[16];
    for (int i = 0; i < es_st_n_tensors(st); i++) {
        const es_st_tensor *t = es_st_tensor_at(st, i);
        if (t->data < data || t->data + (t->end - t->begin) > data + size) abort();
        if (es_st_find(st, t->name) != t) abort();
        const int64_t n = t->numel < 16 ? (int64_t)t->numel : 16;
        if (n > 0) (void)es_st_read_f32(t, 0, n, buf, &err); /* touches the first elements */
    }
    es_st_free(st);
    return 0;
}
