/* repack.h — the X16 weight layout: Q8_0 / Q4_0 / Q5_0 / Q4_K / Q5_K / Q6_K matrices rearranged once at
 * load time into the order the int8 kernels consume them.
 *
 * In the file layout a kernel that works on 16 weight rows at once reads 16 separate row streams
 * and transposes every block in registers (about 40 shuffles per block on the one shuffle port,
 * the same port the dot products need), and the hardware prefetcher follows 16 short streams
 * poorly. In X16 the rows are interleaved in groups of 16, so a group is one linear stream and a
 * block needs no shuffle at all:
 *
 *   group g = rows 16g .. 16g+15 (rows past the end are zero), nb = cols / 32 blocks:
 *     nb quant blocks of QB bytes: for k = 0 .. QB/64-1, 16 rows x 4 bytes = the 4-byte word k of
 *       the block's quants of each row, row i at byte 4i (Q8_0: QB = 512, the 32 int8 values;
 *       Q4_0: QB = 256, the 16 bytes of packed nibbles as in the file; Q5_0: QB = 320, Q4_0's four
 *       chunks of nibbles, then one chunk of fifth bits as bit planes: bit v of byte 4i + m is the
 *       fifth bit of element 4v + m of row i, i.e. of the byte m of nibble vector v = 0..7 in the
 *       order chunk 0 low, .. chunk 3 low, chunk 0 high, .. chunk 3 high; so one shift and one
 *       mask put every vector's fifth bits in place, as Q5_K's chunks do)
 *     then nb x 32 bytes of scales: the 16 rows' fp16 scales of block b at 32b.
 *   Groups follow each other; group g starts at g * es_x16_group_bytes(type, nb).
 *
 * K-quants (Q4_K, Q5_K, Q6_K): a group is nsb = cols / 256 super-blocks of es_x16_kq_sb_bytes each,
 * in order; super-block sb of the group holds super-block sb of its 16 rows as
 *   NC quant chunks of 64 bytes: chunk k = 16 rows x the 4-byte word w_k of the row's file block,
 *     row i at byte 4i, where w_0.. are the words of (Q4_K) qs | (Q5_K) qs, then qh | (Q6_K) ql,
 *     then qh; NC = 32 / 40 / 48. So chunk k of Q4_K / Q5_K holds in its low nibbles elements
 *     4(k%8).. of sub-block 2(k/8) and in its high nibbles those of sub-block 2(k/8)+1; Q5_K's
 *     chunk 32 + k' holds the fifth bits of elements 4k'.. of every sub-block s (bit s); Q6_K's ql
 *     chunk k has elements 4(k%8).. of 32-block 4(k/16) + (k/8)%2 (low) and of the block two
 *     further (high), its qh chunk 32 + k' (k' < 16) the top 2 bits of elements 4(k'%8).. of the
 *     four blocks 4(k'/8).. (bits 2t, 2t+1 for block 4(k'/8) + t).
 *   then the scales decoded to bytes, 16 rows side by side (row i at byte i of each 16):
 *     Q4_K / Q5_K: 8 x 16 bytes of 6-bit sub-block scales (uint8), 8 x 16 bytes of mins (uint8),
 *                  then d and dmin as 16 fp16 each (32 + 32 bytes);
 *     Q6_K: 16 x 16 bytes of int8 scales (one per 16 elements), 16 fp16 d, 32 bytes of zeros.
 *   Every part is a multiple of 64 bytes: a super-block is 2368 / 2880 / 3392 bytes (the file
 *   takes 2304 / 2816 / 3360 for 16 rows).
 *
 * The arithmetic is exactly that of the file layout (kernels/matmul_impl.h), so repacking changes
 * no result, at any CPU level. */
#ifndef ES_KERNELS_REPACK_H
#define ES_KERNELS_REPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/matmul.h"

#define ES_X16_ROWS 16

/* Quant bytes of one block of a group (16 rows), Q8_0 / Q4_0. */
static inline size_t es_x16_qbytes(uint32_t type) {
    return type == ES_TYPE_Q8_0 ? 512 : type == ES_TYPE_Q5_0 ? 320 : 256;
}

static inline bool es_x16_is_kquant(uint32_t type) {
    return type == ES_TYPE_Q4_K || type == ES_TYPE_Q5_K || type == ES_TYPE_Q6_K;
}

/* K-quants: quant chunks of a super-block (NC above) and the byte offsets of its parts. */
static inline size_t es_x16_kq_chunks(uint32_t type) { return type == ES_TYPE_Q4_K ? 32 : type == ES_TYPE_Q5_K ? 40 : 48; }
static inline size_t es_x16_kq_sc(uint32_t type) { return 64 * es_x16_kq_chunks(type); }  /* scales */
static inline size_t es_x16_kq_m(uint32_t type) { return es_x16_kq_sc(type) + 128; }      /* mins (Q4_K, Q5_K) */
static inline size_t es_x16_kq_d(uint32_t type) { return es_x16_kq_sc(type) + 256; }      /* d */
static inline size_t es_x16_kq_dmin(uint32_t type) { return es_x16_kq_sc(type) + 288; }   /* dmin (Q4_K, Q5_K) */
static inline size_t es_x16_kq_sb_bytes(uint32_t type) { return es_x16_kq_sc(type) + 320; }

/* Bytes of one group of 16 rows of nb = cols / 32 blocks. */
static inline size_t es_x16_group_bytes(uint32_t type, int64_t nb) {
    if (es_x16_is_kquant(type)) return (size_t)(nb / 8) * es_x16_kq_sb_bytes(type);
    return (size_t)nb * (es_x16_qbytes(type) + 32);
}

/* Whether w (file layout) can be repacked: Q8_0, Q4_0, Q5_0, Q4_K, Q5_K or Q6_K with at least one
 * row and block. */
bool es_mat_can_repack(const es_mat *w);

/* Bytes of the repacked copy of w (0 if it cannot be repacked or the size overflows). */
size_t es_mat_repacked_size(const es_mat *w);

/* Writes w (file layout, es_mat_can_repack) into dst (es_mat_repacked_size bytes; 64-byte
 * alignment lets the kernels' loads stay within cache lines) and sets *out to the X16 view of it.
 * Rows are split across tp's threads (tp may be NULL). */
void es_mat_repack(es_threadpool *tp, const es_mat *w, void *dst, es_mat *out);

/* Row r of an X16 matrix dequantised into dst[cols]. */
void es_x16_get_row(const es_mat *w, int64_t r, float *dst);

/* K-quants: super-block sb of row r (0 <= r < w->rows) of an X16 matrix, rebuilt as the file's
 * block (es_block_q4_k / q5_k / q6_k, byte for byte) into blk. */
void es_x16_kq_unpack(const es_mat *w, int64_t r, int64_t sb, void *blk);

#endif
