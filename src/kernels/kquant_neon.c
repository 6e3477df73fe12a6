/* kquant_neon.c — AArch64 NEON kernels for the K-quant weights (Q4_K, Q5_K, Q6_K) in the file
 * layout; CMake compiles *_neon.c only for aarch64. Arithmetic as in matmul_impl.h: results equal
 * the scalar reference (matmul_kquant.c) bit for bit.
 *
 * Two variants like matmul_neon.c: es_kq_neon (int8 dots with vmull_s8 / vpadalq_s16, any AArch64
 * CPU) and es_kq_neon_dotprod (vdotq_s32, Armv8.2 dot-product extension), chosen by matmul.c's
 * kquant_fn from the level in use. The NEON tables have no X16 entries, so es_matmul_prefers_x16 is
 * false at the NEON levels and K-quant matrices stay in the file layout on aarch64 (a matrix
 * repacked anyway still gets the reference's results, from the scalar X16 path). 4-row groups
 * read 4 short streams, and each (sub-block, activation row) costs 3 pairwise adds to fold the
 * rows' lanes; an X16 variant (one vector = 4 rows' 4-byte words, vdotq_s32 lanes = rows, no
 * folds) could save those with dotprod, not done or measured. */
/* Always optimised, also in Debug / sanitizer builds (intrinsic code at -O0 crawls). */
#if !defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include <arm_neon.h>
#include <stddef.h>
#include <string.h>

#include "kernels/matmul_impl.h"
#include "kernels/neon_rows4.h"

#define AI static inline __attribute__((always_inline))
/* Loops over registers must be fully unrolled so the arrays stay in registers. */
#define ES_UNROLL _Pragma("GCC unroll 16")
/* The sub-block loops stay loops: unrolled, GCC interleaves the 8 sub-blocks and spills. */
#define ES_NO_UNROLL _Pragma("GCC unroll 1")

#define KJ 4 /* activation rows per pass over a row group */

/* 4 rows of 16 bytes R[i][e] -> T[k] = R[0][4k], R[1][4k], R[2][4k], R[3][4k], R[0][4k+1], ...:
 * byte e of the 4 rows side by side at 4 (e % 4) of T[e / 4]. */
AI void kq_transpose4(const uint8x16_t R[4], uint8x16_t T[4]) {
    const uint8x16_t a = vzip1q_u8(R[0], R[1]), b = vzip2q_u8(R[0], R[1]);
    const uint8x16_t c = vzip1q_u8(R[2], R[3]), d = vzip2q_u8(R[2], R[3]);
    T[0] = vreinterpretq_u8_u16(vzip1q_u16(vreinterpretq_u16_u8(a), vreinterpretq_u16_u8(c)));
    T[1] = vreinterpretq_u8_u16(vzip2q_u16(vreinterpretq_u16_u8(a), vreinterpretq_u16_u8(c)));
    T[2] = vreinterpretq_u8_u16(vzip1q_u16(vreinterpretq_u16_u8(b), vreinterpretq_u16_u8(d)));
    T[3] = vreinterpretq_u8_u16(vzip2q_u16(vreinterpretq_u16_u8(b), vreinterpretq_u16_u8(d)));
}

/* Q4_K / Q5_K: the 6-bit scales and mins of super-block `off` of the 4 rows, as f32 (exact):
 * out[s][i] = sc_s of row i, out[8 + s][i] = m_s (es_kq_scale_min, on 32-bit words: each byte's
 * fields move within that byte). */
AI void kx_scales(const uint8_t *const rp[4], size_t off, float out[16][4]) {
    uint8x16_t R[4], T[4];
    ES_UNROLL
    for (int i = 0; i < 4; i++) {
        uint32_t u[3], o[4];
        memcpy(u, rp[i] + off + offsetof(es_block_q4_k, scales), 12); /* the same offset in Q5_K */
        o[0] = u[0] & 0x3f3f3f3f;                                                 /* sc 0..3 */
        o[1] = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);          /* sc 4..7 */
        o[2] = u[1] & 0x3f3f3f3f;                                                 /* m 0..3 */
        o[3] = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);   /* m 4..7 */
        R[i] = vreinterpretq_u8_u32(vld1q_u32(o));
    }
    kq_transpose4(R, T);
    ES_UNROLL
    for (int k = 0; k < 4; k++) {
        const uint16x8_t lo = vmovl_u8(vget_low_u8(T[k])), hi = vmovl_high_u8(T[k]);
        vst1q_f32(out[4 * k], vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))));
        vst1q_f32(out[4 * k + 1], vcvtq_f32_u32(vmovl_high_u16(lo)));
        vst1q_f32(out[4 * k + 2], vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))));
        vst1q_f32(out[4 * k + 3], vcvtq_f32_u32(vmovl_high_u16(hi)));
    }
}

/* Q6_K: the int8 scales of super-block `off` of the 4 rows: out[c][i] = scales[c] of row i. */
AI void q6_scales(const uint8_t *const rp[4], size_t off, int32_t out[16][4]) {
    uint8x16_t R[4], T[4];
    ES_UNROLL
    for (int i = 0; i < 4; i++) R[i] = vld1q_u8(rp[i] + off + offsetof(es_block_q6_k, scales));
    kq_transpose4(R, T);
    ES_UNROLL
    for (int k = 0; k < 4; k++) {
        const int8x16_t v = vreinterpretq_s8_u8(T[k]);
        const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_high_s8(v);
        vst1q_s32(out[4 * k], vmovl_s16(vget_low_s16(lo)));
        vst1q_s32(out[4 * k + 1], vmovl_high_s16(lo));
        vst1q_s32(out[4 * k + 2], vmovl_s16(vget_low_s16(hi)));
        vst1q_s32(out[4 * k + 3], vmovl_high_s16(hi));
    }
}

#define ES_NEON_DOT 0
#define ES_NEON_NAME(x) x##_neon
#include "kernels/kquant_neon_int8.h"
#undef ES_NEON_DOT
#undef ES_NEON_NAME

/* The dot-product region, as in matmul_neon.c: compiled for Armv8.2-A + dotprod, run only where
 * HWCAP reports the extension. */
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#define ES_NEON_DOT 1
#define ES_NEON_NAME(x) x##_neon_dotprod
#include "kernels/kquant_neon_int8.h"
#undef ES_NEON_DOT
#undef ES_NEON_NAME
#pragma GCC pop_options

const es_mm_rows_fn es_kq_neon[3] = {q4_k_rows_neon, q5_k_rows_neon, q6_k_rows_neon};
const es_mm_rows_fn es_kq_neon_dotprod[3] = {q4_k_rows_neon_dotprod, q5_k_rows_neon_dotprod,
                                             q6_k_rows_neon_dotprod};
