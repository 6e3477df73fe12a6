/* blocks.h — the byte layout of the quantised blocks (ggml's, so GGUF files interoperate): packed
 * structs whose size is checked at compile time. The lowest layer of src/kernels: the conversions
 * (kquant.c, types.c) and the traits table of kernels/types.h are built on it. A row of a quantised
 * type is a whole number of blocks. */
#ifndef ES_KERNELS_BLOCKS_H
#define ES_KERNELS_BLOCKS_H

#include <assert.h>
#include <stdint.h>

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

#endif
