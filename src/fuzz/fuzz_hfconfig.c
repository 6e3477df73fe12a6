/* fuzz_hfconfig.c — libFuzzer target for the Hugging Face config.json parser: arbitrary bytes must
 * be refused with a message or give hyper-parameters that pass es_hparams_validate. */
#include <stdint.h>
#include <stdlib.h>

#include "convert/convert_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    es_hparams hp;
    bool tie = false;
    es_err err = {{0}};
    if (es_hf_parse_config((const char *)data, size, &hp, &tie, &err) != ES_OK) {
        if (!err.msg[0]) abort(); /* a refusal always says why */
        return 0;
    }
    es_err e2 = {{0}};
    if (es_hparams_validate(&hp, &e2) != ES_OK) abort();
    if (hp.n_embd <= 0 || hp.n_layer <= 0 || hp.n_head <= 0 || hp.n_head_kv <= 0 || hp.head_dim <= 0) abort();
    return 0;
}
