/* matmul_neon.c — AArch64 Advanced SIMD kernels (NEON is part of the AArch64 base ISA, so this
 * file needs no extra flags; CMake compiles *_neon.c only for aarch64). Arithmetic as in
 * matmul_impl.h: the int8 kernels equal the scalar reference bit for bit, the float kernels differ
 * from it by rounding only.
 *
 * Two tables: es_mm_neon (int8 dots with vmull_s8 / vpadalq_s16, any AArch64 CPU: Cortex-A53/A72,
 * Raspberry Pi 3/4) and es_mm_neon_dotprod (vdotq_s32, the Armv8.2 dot-product extension:
 * Cortex-A55/A76 and later, Raspberry Pi 5, Jetson Orin), chosen at run time from
 * getauxval(AT_HWCAP) & HWCAP_ASIMDDP by matmul.c. As on x86, a pass takes a group of weight rows
 * and up to QJ activation rows, so verifying k draft tokens reads each weight block once. */
/* Always optimised, also in Debug / sanitizer builds (intrinsic code at -O0 crawls). */
#if !defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include <arm_neon.h>
#include <string.h>

#include "kernels/matmul_impl.h"
#include "kernels/neon_rows4.h"
#include "util/fp16.h"

#define AI static inline __attribute__((always_inline))
/* Loops over registers must be fully unrolled so the arrays stay in registers. */
#define ES_UNROLL _Pragma("GCC unroll 16")

/* ---- activation quantisation ---------------------------------------------------------------- */

/* As quant_row_ref: amax with maxNum (a NaN element is skipped like fmaxf does), the same scale
 * and reciprocal in scalar f32, the same product x * id per element, rounded half to even
 * (vrndnq), kept only when it lies in [-127, 127] (else 0, like the reference's guard). */
static void quant_row_neon(const float *x, int64_t nb, int64_t stride, int32_t c, int8_t *qs, float *d,
                           int32_t *corr) {
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * 32;
        float32x4_t v[8];
        ES_UNROLL
        for (int k = 0; k < 8; k++) v[k] = vld1q_f32(xb + 4 * k);
        float32x4_t m = vdupq_n_f32(0.0f);
        ES_UNROLL
        for (int k = 0; k < 8; k++) m = vmaxnmq_f32(m, vabsq_f32(v[k]));
        const float amax = vmaxnmvq_f32(m);
        const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        const float32x4_t lim = vdupq_n_f32(127.0f);
        int32x4_t q[8], sum = vdupq_n_s32(0);
        ES_UNROLL
        for (int k = 0; k < 8; k++) {
            const float32x4_t rq = vrndnq_f32(vmulq_n_f32(v[k], id));
            const uint32x4_t in = vcaleq_f32(rq, lim); /* |rq| <= 127; false for NaN */
            q[k] = vandq_s32(vcvtq_s32_f32(rq), vreinterpretq_s32_u32(in));
            sum = vaddq_s32(sum, q[k]);
        }
        int8x16_t lo = vcombine_s8(vqmovn_s16(vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]))),
                                   vqmovn_s16(vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]))));
        int8x16_t hi = vcombine_s8(vqmovn_s16(vcombine_s16(vqmovn_s32(q[4]), vqmovn_s32(q[5]))),
                                   vqmovn_s16(vcombine_s16(vqmovn_s32(q[6]), vqmovn_s32(q[7]))));
        vst1q_s8(qs + b * stride * 32, lo);
        vst1q_s8(qs + b * stride * 32 + 16, hi);
        d[b * stride] = db;
        corr[b * stride] = ES_QX_MAGIC - c * vaddvq_s32(sum);
    }
}

/* Q8_K for the K-quants, as quant_row_q8k_ref (matmul.c) bit for bit: max|x| of the 256 values with
 * maxNum (a NaN element is skipped like fmaxf does); iscale and dx in scalar by the reference's own
 * expressions; the product x * iscale rounded half to even by vrndnq (for |p| < 2^22 exactly the
 * reference's (p + 1.5 * 2^23) - 1.5 * 2^23, and beyond that both results lie outside [-127, 127]);
 * an element outside [-127, 127] (only a non-finite input) is 0. */
static void quant_row_k_neon(const float *x, int64_t nb, int64_t stride, int8_t *qs, float *d, int32_t *corr,
                             float *fs, int32_t *k16) {
    const float32x4_t lim = vdupq_n_f32(127.0f);
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const float *xs = x + sb * 256;
        float32x4_t m[4];
        ES_UNROLL
        for (int k = 0; k < 4; k++) m[k] = vdupq_n_f32(0.0f);
        for (int i = 0; i < 256; i += 16) {
            ES_UNROLL
            for (int k = 0; k < 4; k++) m[k] = vmaxnmq_f32(m[k], vabsq_f32(vld1q_f32(xs + i + 4 * k)));
        }
        const float amax = vmaxnmvq_f32(vmaxnmq_f32(vmaxnmq_f32(m[0], m[1]), vmaxnmq_f32(m[2], m[3])));
        const float iscale = amax != 0.0f ? 127.0f / amax : 0.0f, db = amax != 0.0f ? 1.0f / iscale : 0.0f;
        for (int64_t b = sb * 8; b < sb * 8 + 8; b++) {
            int32x4_t q[8];
            ES_UNROLL
            for (int k = 0; k < 8; k++) {
                const float32x4_t v = vrndnq_f32(vmulq_n_f32(vld1q_f32(x + b * 32 + 4 * k), iscale));
                const uint32x4_t in = vcaleq_f32(v, lim); /* |v| <= 127; false for NaN */
                q[k] = vandq_s32(vcvtq_s32_f32(v), vreinterpretq_s32_u32(in));
            }
            const int32_t lo = vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
            const int32_t hi = vaddvq_s32(vaddq_s32(vaddq_s32(q[4], q[5]), vaddq_s32(q[6], q[7])));
            const int8x16_t p0 = vcombine_s8(vqmovn_s16(vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]))),
                                             vqmovn_s16(vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]))));
            const int8x16_t p1 = vcombine_s8(vqmovn_s16(vcombine_s16(vqmovn_s32(q[4]), vqmovn_s32(q[5]))),
                                             vqmovn_s16(vcombine_s16(vqmovn_s32(q[6]), vqmovn_s32(q[7]))));
            vst1q_s8(qs + b * stride * 32, p0);
            vst1q_s8(qs + b * stride * 32 + 16, p1);
            d[b * stride] = db;
            corr[b * stride] = ES_QX_MAGIC;
            fs[b * stride] = db * (float)(lo + hi);
            k16[2 * b * stride] = -32 * lo;
            k16[2 * b * stride + 1] = -32 * hi;
        }
    }
}

/* ---- int8 kernels --------------------------------------------------------------------------- */

#define QJ 4 /* activation rows per pass over a row group (32 vector registers: 8 hold the weights) */

#define ES_NEON_DOT 0
#define ES_NEON_NAME(x) x##_neon
#include "kernels/matmul_neon_int8.h"
#undef ES_NEON_DOT
#undef ES_NEON_NAME

/* The dot-product region is compiled for Armv8.2-A + dotprod: arm_neon.h declares vdotq_s32 for that
 * target, and a function can only inline it with a superset. Its code runs only where HWCAP reports
 * the extension (every such core implements Armv8.2-A), and it contains no atomics or other
 * instructions whose v8.2 forms a v8.0 core would lack beyond SDOT itself. */
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#define ES_NEON_DOT 1
#define ES_NEON_NAME(x) x##_neon_dotprod
#include "kernels/matmul_neon_int8.h"
#undef ES_NEON_DOT
#undef ES_NEON_NAME
#pragma GCC pop_options

/* ---- float kernels -------------------------------------------------------------------------- */

/* A tile of FR weight rows x FJ activation rows, one 4-lane f32 accumulator per pair, columns in
 * order in steps of 4, then a fixed reduction (vaddvq) and the leftover columns added in order.
 * Every (r, j) pair is computed the same way whatever the tile holds, n or the thread split. */
#define FR 4
#define FJ 2

AI float32x4_t load4w(const uint8_t *row, int64_t c, const uint32_t type) {
    if (type == ES_TYPE_F32) return vld1q_f32((const float *)row + c);
    const uint16x4_t h = vld1_u16((const uint16_t *)row + c);
    if (type == ES_TYPE_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); /* bf16: the high half of an f32 */
}

AI float load1w(const uint8_t *row, int64_t c, const uint32_t type) {
    if (type == ES_TYPE_F32) return ((const float *)row)[c];
    const uint16_t h = ((const uint16_t *)row)[c];
    return type == ES_TYPE_F16 ? es_fp16_to_fp32(h) : es_bf16_to_fp32(h);
}

/* FR rows x J activation rows (J <= FJ, a constant after inlining); rows r + i >= r1 are not stored. */
AI void float_tile(const uint8_t *const rp[FR], const float *x, float *y, int64_t cols, int64_t rows, int64_t r,
                   int64_t r1, int64_t j0, const int J, const uint32_t type) {
    const int64_t c4 = cols & ~(int64_t)3;
    const float *xp[FJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) xp[j] = x + (j0 + j) * cols;
    float32x4_t acc[FR][FJ];
    ES_UNROLL
    for (int i = 0; i < FR; i++) {
        ES_UNROLL
        for (int j = 0; j < J; j++) acc[i][j] = vdupq_n_f32(0.0f);
    }
    for (int64_t c = 0; c < c4; c += 4) {
        float32x4_t xv[FJ];
        ES_UNROLL
        for (int j = 0; j < J; j++) xv[j] = vld1q_f32(xp[j] + c);
        ES_UNROLL
        for (int i = 0; i < FR; i++) {
            const float32x4_t wv = load4w(rp[i], c, type);
            ES_UNROLL
            for (int j = 0; j < J; j++) acc[i][j] = vfmaq_f32(acc[i][j], wv, xv[j]);
        }
    }
    ES_UNROLL
    for (int i = 0; i < FR; i++) {
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            if (r + i >= r1) continue;
            float s = vaddvq_f32(acc[i][j]);
            for (int64_t c = c4; c < cols; c++) s += load1w(rp[i], c, type) * xp[j][c];
            y[(j0 + j) * rows + r + i] = s;
        }
    }
}

AI void float_rows(const es_mat *w, const float *x, float *y, int64_t n, int64_t r0, int64_t r1, const uint32_t type) {
    for (int64_t r = r0; r < r1; r += FR) {
        const uint8_t *rp[FR];
        ES_UNROLL
        for (int i = 0; i < FR; i++)
            rp[i] = (const uint8_t *)w->data + (size_t)(r + i < r1 ? r + i : r1 - 1) * w->row_bytes;
        for (int64_t j0 = 0; j0 < n; j0 += FJ) {
            if (n - j0 == 1) float_tile(rp, x, y, w->cols, w->rows, r, r1, j0, 1, type);
            else float_tile(rp, x, y, w->cols, w->rows, r, r1, j0, 2, type);
        }
    }
}

static void f32_rows_neon(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_F32);
}
static void f16_rows_neon(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_F16);
}
static void bf16_rows_neon(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                           int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_BF16);
}

const es_mm_kernels es_mm_neon = {
    .f32 = f32_rows_neon,
    .f16 = f16_rows_neon,
    .bf16 = bf16_rows_neon,
    .q8_0 = q8_0_rows_neon,
    .q4_0 = q4_0_rows_neon,
    .quant_row = quant_row_neon,
    .quant_row_k = quant_row_k_neon,
};

const es_mm_kernels es_mm_neon_dotprod = {
    .f32 = f32_rows_neon,
    .f16 = f16_rows_neon,
    .bf16 = bf16_rows_neon,
    .q8_0 = q8_0_rows_neon_dotprod,
    .q4_0 = q4_0_rows_neon_dotprod,
    .quant_row = quant_row_neon,
    .quant_row_k = quant_row_k_neon,
};
