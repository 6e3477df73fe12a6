/* llama2c.h — the layout of a llama2.c checkpoint, parsed and validated from a buffer (the converter
 * passes its file mapping; the fuzzer passes arbitrary bytes).
 *
 * Three layouts:
 *  - legacy: 7 × int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
 *    vocab_size < 0 means a separate classifier follows), then f32 tensors: token_embedding, rms_att,
 *    wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real, freq_cis_imag, [wcls].
 *  - "ak42" version 1: 256-byte header (u32 magic 0x616b3432, i32 version, the 7 params, u8
 *    shared_classifier, zeros), then f32: rms_att, rms_ffn, rms_final, token_embedding, wq, wk, wv,
 *    wo, w1, w2, w3, [wcls].
 *  - "ak42" version 2: as version 1 plus i32 group_size at byte 37 (packed); f32 norms (rms_att,
 *    rms_ffn, rms_final), then each of token_embedding, wq×L, wk×L, wv×L, wo×L, w1×L, w2×L, w3×L,
 *    [wcls] as int8 values followed by one f32 scale per group_size consecutive elements of the
 *    flattened tensor (x = q · s; groups may cross row boundaries).
 * Matrices are [out][in] row-major, i.e. ggml ne0 = in, ne1 = out. */
#ifndef ES_CONVERT_LLAMA2C_H
#define ES_CONVERT_LLAMA2C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"

#define ES_L2C_MAGIC 0x616b3432u
#define ES_L2C_HEADER_V 256 /* bytes of the ak42 header */

typedef enum es_l2c_kind { ES_L2C_LEGACY = 0, ES_L2C_V1 = 1, ES_L2C_V2 = 2 } es_l2c_kind;

/* The tensors of a checkpoint; the per-layer ones are stored layer after layer. */
typedef enum es_l2c_which {
    ES_L2C_TOK, ES_L2C_ATT_NORM, ES_L2C_WQ, ES_L2C_WK, ES_L2C_WV, ES_L2C_WO, ES_L2C_FFN_NORM,
    ES_L2C_W1, ES_L2C_W2, ES_L2C_W3, ES_L2C_FINAL_NORM, ES_L2C_WCLS, ES_L2C_COUNT
} es_l2c_which;

typedef struct es_l2c_loc {
    bool present;
    bool per_layer;
    bool q8;            /* int8 values + f32 group scales (version 2) */
    int64_t ne0, ne1;   /* row length and rows (1-D tensors: ne1 = 1) */
    uint64_t offset;    /* of layer 0's data (f32, or the int8 values) */
    uint64_t stride;    /* bytes from one layer's tensor to the next (values and scales) */
    uint64_t scales;    /* q8: bytes from a tensor's values to its scales (= its element count) */
} es_l2c_loc;

typedef struct es_llama2c_info {
    es_l2c_kind kind;
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; /* vocab_size > 0 */
    int head_size, kv_dim;
    bool shared_classifier;
    int group_size;        /* version 2 */
    uint64_t file_size;    /* exactly what the header implies */
    es_l2c_loc loc[ES_L2C_COUNT];
} es_llama2c_info;

/* Reads and validates the header of a checkpoint held in data[0..size) and computes where every
 * tensor lies. Fails with ES_ERR_FORMAT (a bad header, a size that is not exactly what the header
 * implies — then info->file_size holds the implied size, else 0) or ES_ERR_UNSUPPORTED (an ak42
 * version other than 1 and 2). */
es_status es_llama2c_parse(const void *data, size_t size, es_llama2c_info *info, es_err *err);

/* Row `row` of layer `layer` of tensor `which` (layer ignored for global tensors) as f32 into dst
 * (loc.ne0 floats). The caller has checked row < ne1 and layer < n_layers. */
void es_llama2c_row(const es_llama2c_info *info, const void *data, es_l2c_which which, int layer, int64_t row,
                    float *dst);

#endif
