/* types.h — tensor element types (ggml's numbering, so GGUF files interoperate) and their traits.
 *
 * Quantised types store rows as blocks of ES_QK elements; a row's length must be a multiple of the
 * block size. Blocks are packed structs whose size is checked at compile time. */
#ifndef ES_KERNELS_TYPES_H
#define ES_KERNELS_TYPES_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#define ES_QK 32

/* Q8_0: 32 int8 values and one fp16 scale: x = d * q. */
typedef struct {
    uint16_t d;
    int8_t qs[ES_QK];
} es_block_q8_0;
static_assert(sizeof(es_block_q8_0) == 34, "q8_0 block size");

/* Q4_0: 32 4-bit values (two per byte: element j in the low nibble of qs[j], element j+16 in the high
 * nibble) and one fp16 scale: x = d * (q - 8). */
typedef struct {
    uint16_t d;
    uint8_t qs[ES_QK / 2];
} es_block_q4_0;
static_assert(sizeof(es_block_q4_0) == 18, "q4_0 block size");

/* Q5_0: Q4_0's nibbles plus a fifth bit per element: bit j of qh (a little-endian uint32) is the
 * high bit of element j, so q is in 0..31 and x = d * (q - 16). */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[ES_QK / 2];
} es_block_q5_0;
static_assert(sizeof(es_block_q5_0) == 22, "q5_0 block size");

/* Q5_0 has no kernels of its own: its values q - 16 (-16..15) are int8 values under the same scale,
 * so the loader widens a Q5_0 matrix into Q8_0 exactly (n elements, a multiple of ES_QK) and
 * multiplies it with the Q8_0 kernels; the products are those of a Q5_0 dot product. */
void es_q5_0_to_q8_0(const void *src, void *dst, int64_t n);
/* Reference quantiser (tests): the value of largest magnitude maps to -16, as for Q4_0. */
void es_q5_0_from_float(const float *src, void *dst, int64_t n);

/* K-quants (ggml's "k" formats): super-blocks of ES_QK_K elements, byte-compatible with ggml so
 * llama.cpp's Q4_K_M / Q5_K_M / Q6_K files load as they are. Rows must be a multiple of 256. */
#define ES_QK_K 256

/* Q4_K: 8 sub-blocks of 32, each with a 6-bit scale sc and a 6-bit min m, packed in 12 bytes (see
 * es_kq_scale_min), and two fp16 super-scales: x = d * sc * q - dmin * m, q in 0..15. Nibbles: byte
 * 32c + l holds element 64c + l (low nibble, sub-block 2c) and 64c + 32 + l (high, sub-block 2c+1). */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[ES_QK_K / 2];
} es_block_q4_k;
static_assert(sizeof(es_block_q4_k) == 144, "q4_k block size");

/* Q5_K: Q4_K plus a fifth bit per element, q in 0..31: bit 2c of qh[l] is the high bit of element
 * 64c + l, bit 2c + 1 that of element 64c + 32 + l. */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[ES_QK_K / 8];
    uint8_t qs[ES_QK_K / 2];
} es_block_q5_k;
static_assert(sizeof(es_block_q5_k) == 176, "q5_k block size");

/* Q6_K: 16 sub-blocks of 16 with int8 scales, one fp16 super-scale: x = d * sc * (q - 32), q in
 * 0..63. In each half h (128 elements) with l < 32: element 128h + 32t + l takes the nibble t >> 1
 * of ql[64h + 32 (t & 1) + l] as its low 4 bits and bits 2t, 2t+1 of qh[32h + l] as its top 2;
 * its scale is scales[8h + 2t + l / 16]. */
typedef struct {
    uint8_t ql[ES_QK_K / 2];
    uint8_t qh[ES_QK_K / 4];
    int8_t scales[ES_QK_K / 16];
    uint16_t d;
} es_block_q6_k;
static_assert(sizeof(es_block_q6_k) == 210, "q6_k block size");

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block: sub-blocks 0..3 keep them
 * in the low 6 bits of bytes j and j + 4; 4..7 keep their low 4 bits in byte j + 4's nibbles and
 * their top 2 bits in the spare top bits of bytes j - 4 (scale) and j (min). */
static inline void es_kq_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

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
