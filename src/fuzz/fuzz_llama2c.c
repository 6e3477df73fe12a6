/* fuzz_llama2c.c — libFuzzer target for the llama2.c checkpoint header / size validation: arbitrary
 * bytes must be rejected cleanly, or describe tensors that all lie inside the buffer (every row of
 * every tensor is then read). */
#include <stdint.h>
#include <stdlib.h>

#include "convert/llama2c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    es_llama2c_info info;
    es_err err;
    if (es_llama2c_parse(data, size, &info, &err) != ES_OK) return 0;
    if (info.file_size != size) abort();
    /* a buffer that parsed is at most a few MB here, so reading the first and last rows is cheap */
    float *row = malloc((size_t)(info.dim > info.hidden_dim ? info.dim : info.hidden_dim) * sizeof *row);
    if (!row) return 0;
    for (int w = 0; w < ES_L2C_COUNT; w++) {
        const es_l2c_loc *l = &info.loc[w];
        if (!l->present) continue;
        const int layers = l->per_layer ? info.n_layers : 1;
        es_llama2c_row(&info, data, (es_l2c_which)w, 0, 0, row);
        es_llama2c_row(&info, data, (es_l2c_which)w, layers - 1, l->ne1 - 1, row);
    }
    free(row);
    return 0;
}
