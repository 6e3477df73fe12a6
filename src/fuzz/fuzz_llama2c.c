/* fuzz_llama2c.c — libFuzzer target for the llama2.c checkpoint header / size validation: arbitrary
 * bytes must be rejected cleanly, or describe tensors that all lie inside the buffer (the first and
 * last row of every tensor are then read). Since a random input almost never has exactly the size its
 * header implies, an input whose header parses but whose size is wrong is also tried once more,
 * extended with zeros to the implied size (when that is small), so the layout code is exercised
 * without a seed corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "convert/llama2c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_rows(const es_llama2c_info *info, const uint8_t *data) {
    float *row = malloc((size_t)(info->dim > info->hidden_dim ? info->dim : info->hidden_dim) * sizeof *row);
    if (!row) return;
    for (int w = 0; w < ES_L2C_COUNT; w++) {
        const es_l2c_loc *l = &info->loc[w];
        if (!l->present) continue;
        const int layers = l->per_layer ? info->n_layers : 1;
        es_llama2c_row(info, data, (es_l2c_which)w, 0, 0, row);
        es_llama2c_row(info, data, (es_l2c_which)w, layers - 1, l->ne1 - 1, row);
    }
    free(row);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    es_llama2c_info info;
    es_err err;
    if (es_llama2c_parse(data, size, &info, &err) == ES_OK) {
        if (info.file_size != size) abort();
        read_rows(&info, data);
        return 0;
    }
    const uint64_t want = info.file_size; /* set when only the size was wrong */
    if (want <= size || want > (4u << 20)) return 0;
    uint8_t *buf = calloc(1, (size_t)want);
    if (!buf) return 0;
    memcpy(buf, data, size);
    if (es_llama2c_parse(buf, (size_t)want, &info, &err) == ES_OK) {
        if (info.file_size != want) abort();
        read_rows(&info, buf);
    }
    free(buf);
    return 0;
}
