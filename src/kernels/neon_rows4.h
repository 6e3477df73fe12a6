/* neon_rows4.h — helpers of the AArch64 kernels that work on groups of 4 weight rows in the file
 * layout (matmul_neon.c for Q8_0 / Q4_0, kquant_neon.c for the K-quants): the rows' pointers, their
 * fp16 scales as one vector, and a store of the valid lanes. Include after <arm_neon.h>. */
#ifndef ES_KERNELS_NEON_ROWS4_H
#define ES_KERNELS_NEON_ROWS4_H

#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/matmul_impl.h"

/* The 4 rows' fp16 at byte `off` of each, as f32 (exact conversion, like es_fp16_to_fp32). */
static inline __attribute__((always_inline)) float32x4_t es_neon_f16x4(const uint8_t *const rp[4], size_t off) {
    uint16_t h[4];
    for (int i = 0; i < 4; i++) memcpy(&h[i], rp[i] + off, 2);
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

/* dst[0 .. valid) = the first `valid` lanes of v. */
static inline __attribute__((always_inline)) void es_neon_store4(float *dst, float32x4_t v, int valid) {
    if (valid == 4) {
        vst1q_f32(dst, v);
    } else {
        float t[4];
        vst1q_f32(t, v);
        memcpy(dst, t, (size_t)valid * sizeof(float));
    }
}

/* The rows r .. r+3 of w, clamped to r1 - 1 (past-the-end lanes are computed and dropped). */
static inline __attribute__((always_inline)) void es_neon_group4(const es_mat *w, int64_t r, int64_t r1,
                                                                  const uint8_t *rp[4]) {
    for (int i = 0; i < 4; i++) rp[i] = (const uint8_t *)w->data + (size_t)(r + i < r1 ? r + i : r1 - 1) * w->row_bytes;
}

#endif
