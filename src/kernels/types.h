/* types.h — tensor element types (ggml's numbering, so GGUF files interoperate) and their traits.
 *
 * Quantised types store rows as blocks of ES_QK (K-quants: ES_QK_K) elements; a row's length must be
 * a multiple of the block size. The blocks' layouts are in kernels/blocks.h. */
#ifndef ES_KERNELS_TYPES_H
#define ES_KERNELS_TYPES_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/blocks.h"

typedef enum es_ggml_type {
    ES_TYPE_F32 = 0,
    ES_TYPE_F16 = 1,
    ES_TYPE_Q4_0 = 2,
    ES_TYPE_Q4_1 = 3,
    ES_TYPE_Q5_0 = 6,
    ES_TYPE_Q5_1 = 7,
    ES_TYPE_Q8_0 = 8,
    ES_TYPE_Q8_1 = 9,
    ES_TYPE_Q2_K = 10,
    ES_TYPE_Q3_K = 11,
    ES_TYPE_Q4_K = 12,
    ES_TYPE_Q5_K = 13,
    ES_TYPE_Q6_K = 14,
    ES_TYPE_Q8_K = 15,
    ES_TYPE_I8 = 24,
    ES_TYPE_I16 = 25,
    ES_TYPE_I32 = 26,
    ES_TYPE_I64 = 27,
    ES_TYPE_F64 = 28,
    ES_TYPE_BF16 = 30,
    ES_TYPE_COUNT = 40 /* upper bound of ids we know the name of */
} es_ggml_type;


/* Q5_0 has no kernels of its own: its values q - 16 (-16..15) are int8 values under the same scale,
 * so the loader widens a Q5_0 matrix into Q8_0 exactly (n elements, a multiple of ES_QK) and
 * multiplies it with the Q8_0 kernels; the products are those of a Q5_0 dot product. */
void es_q5_0_to_q8_0(const void *src, void *dst, int64_t n);
/* Reference quantiser (tests): the value of largest magnitude maps to -16, as for Q4_0. */
void es_q5_0_from_float(const float *src, void *dst, int64_t n);

typedef struct es_type_traits {
    const char *name;      /* "f32", "q8_0", ... */
    int64_t blck_size;     /* elements per block (1 for plain types) */
    size_t type_size;      /* bytes per block */
    bool supported;        /* we can dequantise it */
    /* dequantise n elements (n a multiple of blck_size) */
    void (*to_float)(const void *src, float *dst, int64_t n);
    /* quantise n elements; NULL if we cannot produce this type */
    void (*from_float)(const float *src, void *dst, int64_t n);
} es_type_traits;

/* Traits of a type id, or NULL for an unknown id. */
const es_type_traits *es_type_get(uint32_t type);
const char *es_type_name(uint32_t type); /* "unknown" for an unknown id */
/* Parses the name of a type we can produce: "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k",
 * "q6_k" (case-insensitive); -1 if unknown. */
int es_type_from_name(const char *name);
/* Bytes of a row of n elements; 0 if the type is unknown or n is not a multiple of its block size. */
size_t es_row_size(uint32_t type, int64_t n);

#endif
