/* repack.h — the X16 weight layout: Q8_0 / Q4_0 matrices rearranged once at load time into the
 * order the int8 kernels consume them.
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
 *       Q4_0: QB = 256, the 16 bytes of packed nibbles as in the file)
 *     then nb x 32 bytes of scales: the 16 rows' fp16 scales of block b at 32b.
 *   Groups follow each other; group g starts at g * es_x16_group_bytes(type, nb).
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

/* Quant bytes of one block of a group (16 rows). */
static inline size_t es_x16_qbytes(uint32_t type) { return type == ES_TYPE_Q8_0 ? 512 : 256; }

/* Bytes of one group of 16 rows (quants then scales). */
static inline size_t es_x16_group_bytes(uint32_t type, int64_t nb) { return (size_t)nb * (es_x16_qbytes(type) + 32); }

/* Whether w (file layout) can be repacked: Q8_0 or Q4_0 with at least one row and block. */
bool es_mat_can_repack(const es_mat *w);

/* Bytes of the repacked copy of w (0 if it cannot be repacked or the size overflows). */
size_t es_mat_repacked_size(const es_mat *w);

/* Writes w (file layout, es_mat_can_repack) into dst (es_mat_repacked_size bytes; 64-byte
 * alignment lets the kernels' loads stay within cache lines) and sets *out to the X16 view of it.
 * Rows are split across tp's threads (tp may be NULL). */
void es_mat_repack(es_threadpool *tp, const es_mat *w, void *dst, es_mat *out);

/* Row r of an X16 matrix dequantised into dst[cols]. */
void es_x16_get_row(const es_mat *w, int64_t r, float *dst);

#endif
