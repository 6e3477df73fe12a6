/* kquant_neon_int8.h — the NEON K-quant kernels (Q4_K, Q5_K, Q6_K, file layout), a template
 * included twice by kquant_neon.c: once plain (ES_NEON_DOT 0: products with vmull_s8, pairs
 * summed with vpadalq_s16 / vpaddlq_s16) and once inside a "+dotprod" target region (ES_NEON_DOT
 * 1: vdotq_s32). Before including, define ES_NEON_DOT and ES_NEON_NAME(x) (the suffix of the
 * generated functions). No include guard.
 *
 * A pass takes a group of 4 weight rows and up to KJ activation rows. Per super-block it decodes
 * the 4 rows' scales once; per 32-element sub-block it loads the 4 rows' codes once (2 vectors
 * each), then for each activation row computes the 4 exact integer dots (4 int32 lanes each,
 * folded with two pairwise adds into one vector whose lanes are the 4 rows) and runs the f32 steps
 * of matmul_impl.h on those lanes, so every y equals the scalar reference bit for bit. */

/* acc + the int8 dot of two 16-byte pairs (w0·x0 + w1·x1), spread over 4 int32 lanes. Without
 * dotprod each int16 lane holds w[i]x[i] + w[i+8]x[i+8] <= 2 * 32 * 127 (codes are 0..31 or
 * -32..31, |x| <= 127). */
static inline __attribute__((always_inline)) int32x4_t ES_NEON_NAME(kq_dot32)(int32x4_t acc, int8x16_t w0,
                                                                              int8x16_t w1, int8x16_t x0,
                                                                              int8x16_t x1) {
#if ES_NEON_DOT
    return vdotq_s32(vdotq_s32(acc, w0, x0), w1, x1);
#else
    const int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), w0, x0);
    const int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(x1)), w1, x1);
    return vpadalq_s16(vpadalq_s16(acc, p0), p1);
#endif
}

/* The int8 dot of one 16-byte pair, spread over 4 int32 lanes (Q6_K's 16-element sub-blocks). */
static inline __attribute__((always_inline)) int32x4_t ES_NEON_NAME(kq_dot16)(int8x16_t w, int8x16_t x) {
#if ES_NEON_DOT
    return vdotq_s32(vdupq_n_s32(0), w, x);
#else
    return vpaddlq_s16(vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(x)), w, x));
#endif
}

/* Q4_K (q5 false) / Q5_K: y[j][r .. r+valid) for j in [j0, j0+J), a 4-row group rp (past-the-end
 * rows repeat the last real one), nsb super-blocks, J <= KJ a constant after inlining. */
static inline __attribute__((always_inline)) void ES_NEON_NAME(kx_tile)(const uint8_t *const rp[4], int valid,
                                                                       const es_qx *qx, int64_t nsb, int64_t j0,
                                                                       const int J, float *y, int64_t rows,
                                                                       int64_t r, const bool q5) {
    const size_t bsz = q5 ? sizeof(es_block_q5_k) : sizeof(es_block_q4_k);
    const size_t oqs = q5 ? offsetof(es_block_q5_k, qs) : offsetof(es_block_q4_k, qs);
    const int64_t n = qx->n;
    float32x4_t acc[KJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const size_t off = (size_t)sb * bsz;
        float scm[16][4]; /* [s] the 4 rows' scale of sub-block s, [8 + s] their min */
        kx_scales(rp, off, scm);
        float32x4_t a[KJ], mn[KJ];
        ES_UNROLL
        for (int j = 0; j < J; j++) a[j] = mn[j] = vdupq_n_f32(0.0f);
        ES_NO_UNROLL
        for (int s = 0; s < 8; s++) {
            /* sub-block s: the low (s even) or high nibbles of qs[32 (s / 2) ..], plus (Q5_K) bit s
             * of qh[0 .. 31] as bit 4 */
            const int8x16_t nib = vdupq_n_s8((int8_t)(-4 * (s & 1))); /* shift right by 0 or 4 */
            const uint8x16_t bit = vdupq_n_u8((uint8_t)(1u << s));
            int8x16_t W[4][2];
            ES_UNROLL
            for (int i = 0; i < 4; i++) {
                ES_UNROLL
                for (int k = 0; k < 2; k++) {
                    uint8x16_t v = vld1q_u8(rp[i] + off + oqs + 32 * (s / 2) + 16 * k);
                    v = vandq_u8(vshlq_u8(v, nib), vdupq_n_u8(0x0f));
                    if (q5) {
                        const uint8x16_t h = vld1q_u8(rp[i] + off + offsetof(es_block_q5_k, qh) + 16 * k);
                        v = vorrq_u8(v, vandq_u8(vtstq_u8(h, bit), vdupq_n_u8(0x10)));
                    }
                    W[i][k] = vreinterpretq_s8_u8(v);
                }
            }
            const float32x4_t sc = vld1q_f32(scm[s]), m = vld1q_f32(scm[8 + s]);
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                const int64_t bj = (sb * 8 + s) * n + j0 + j; /* block of activation row j0 + j */
                const int8_t *xb = qx->qs + bj * 32;
                const int8x16_t x0 = vld1q_s8(xb), x1 = vld1q_s8(xb + 16);
                int32x4_t p[4];
                ES_UNROLL
                for (int i = 0; i < 4; i++) p[i] = ES_NEON_NAME(kq_dot32)(vdupq_n_s32(0), W[i][0], W[i][1], x0, x1);
                /* lane i = row i's isum (|isum| <= 32 * 31 * 127 < 2^24: exact in f32) */
                const int32x4_t t = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
                a[j] = vfmaq_f32(a[j], vcvtq_f32_s32(t), vmulq_n_f32(sc, qx->d[bj]));
                mn[j] = vfmaq_n_f32(mn[j], m, qx->fs[bj]);
            }
        }
        const float32x4_t d = es_neon_f16x4(rp, off), dmin = es_neon_f16x4(rp, off + 2);
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            acc[j] = vfmaq_f32(acc[j], d, a[j]);
            acc[j] = vfmsq_f32(acc[j], dmin, mn[j]); /* fmaf(-dmin, mn, acc): negation is exact */
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) es_neon_store4(y + (j0 + j) * rows + r, acc[j], valid);
}

/* Q6_K, as kx_tile: per 32-element activation block s (= Q6_K sub-blocks 2s, 2s + 1) the two
 * 16-element dots per row are combined with the rows' int8 scales in int32 (exact, see
 * matmul_impl.h), then one fused multiply-add per activation row. */
static inline __attribute__((always_inline)) void ES_NEON_NAME(q6_tile)(const uint8_t *const rp[4], int valid,
                                                                       const es_qx *qx, int64_t nsb, int64_t j0,
                                                                       const int J, float *y, int64_t rows,
                                                                       int64_t r) {
    const size_t bsz = sizeof(es_block_q6_k);
    const int64_t n = qx->n;
    float32x4_t acc[KJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t sb = 0; sb < nsb; sb++) {
        const size_t off = (size_t)sb * bsz;
        int32_t sc6[16][4]; /* [c] the 4 rows' scale of 16-element sub-block c */
        q6_scales(rp, off, sc6);
        const float32x4_t d = es_neon_f16x4(rp, off + offsetof(es_block_q6_k, d));
        ES_NO_UNROLL
        for (int s = 0; s < 8; s++) {
            /* elements 32s + l = 128h + 32t + l: low 4 bits from nibble t >> 1 of ql[64h + 32(t & 1)
             * + l], top 2 from bits 2t, 2t + 1 of qh[32h + l] (moved to bits 4, 5); minus 32 */
            const int h = s / 4, t = s % 4;
            const int8x16_t nib = vdupq_n_s8((int8_t)(-4 * (t >> 1)));
            const uint8x16_t top = vdupq_n_u8((uint8_t)(3u << (2 * t)));
            const int8x16_t tsh = vdupq_n_s8((int8_t)(4 - 2 * t));
            int8x16_t W[4][2];
            ES_UNROLL
            for (int i = 0; i < 4; i++) {
                ES_UNROLL
                for (int k = 0; k < 2; k++) {
                    const uint8x16_t l = vld1q_u8(rp[i] + off + 64 * h + 32 * (t & 1) + 16 * k);
                    const uint8x16_t hb = vld1q_u8(rp[i] + off + offsetof(es_block_q6_k, qh) + 32 * h + 16 * k);
                    const uint8x16_t lo = vandq_u8(vshlq_u8(l, nib), vdupq_n_u8(0x0f));
                    const uint8x16_t hi = vshlq_u8(vandq_u8(hb, top), tsh);
                    W[i][k] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hi)), vdupq_n_s8(32));
                }
            }
            const int32x4_t sc0 = vld1q_s32(sc6[2 * s]), sc1 = vld1q_s32(sc6[2 * s + 1]);
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                const int64_t bj = (sb * 8 + s) * n + j0 + j;
                const int8_t *xb = qx->qs + bj * 32;
                const int8x16_t x0 = vld1q_s8(xb), x1 = vld1q_s8(xb + 16);
                int32x4_t p0[4], p1[4];
                ES_UNROLL
                for (int i = 0; i < 4; i++) {
                    p0[i] = ES_NEON_NAME(kq_dot16)(W[i][0], x0);
                    p1[i] = ES_NEON_NAME(kq_dot16)(W[i][1], x1);
                }
                const int32x4_t i0 = vpaddq_s32(vpaddq_s32(p0[0], p0[1]), vpaddq_s32(p0[2], p0[3]));
                const int32x4_t i1 = vpaddq_s32(vpaddq_s32(p1[0], p1[1]), vpaddq_s32(p1[2], p1[3]));
                /* |v| <= 2 * 128 * 16 * 32 * 127 < 2^31; (float)v rounds to nearest even like the
                 * reference's conversion */
                const int32x4_t v = vmlaq_s32(vmulq_s32(i0, sc0), i1, sc1);
                acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(v), vmulq_n_f32(d, qx->d[bj]));
            }
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) es_neon_store4(y + (j0 + j) * rows + r, acc[j], valid);
}

/* type: 0 Q4_K, 1 Q5_K, 2 Q6_K. Rows [r0, r1) in groups of 4, activation rows in tiles of KJ. */
static inline __attribute__((always_inline)) void ES_NEON_NAME(kq_rows)(const es_mat *w, const es_qx *qx, float *y,
                                                                       int64_t n, int64_t r0, int64_t r1,
                                                                       const int type) {
    const int64_t nsb = w->cols / ES_QK_K;
    for (int64_t r = r0; r < r1; r += 4) {
        const uint8_t *rp[4];
        const int valid = r1 - r < 4 ? (int)(r1 - r) : 4;
        es_neon_group4(w, r, r1, rp);
        for (int64_t j0 = 0; j0 < n; j0 += KJ) {
            const int64_t J = n - j0 < KJ ? n - j0 : KJ;
#define ES_KQ_TILE(JJ)                                                                                            \
    do {                                                                                                          \
        if (type == 2) ES_NEON_NAME(q6_tile)(rp, valid, qx, nsb, j0, JJ, y, w->rows, r);                          \
        else ES_NEON_NAME(kx_tile)(rp, valid, qx, nsb, j0, JJ, y, w->rows, r, type == 1);                         \
    } while (0)
            switch (J) {
            case 1: ES_KQ_TILE(1); break;
            case 2: ES_KQ_TILE(2); break;
            case 3: ES_KQ_TILE(3); break;
            default: ES_KQ_TILE(4); break;
            }
#undef ES_KQ_TILE
        }
    }
}

static void ES_NEON_NAME(q4_k_rows)(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                                    int64_t r1) {
    ES_NEON_NAME(kq_rows)(w, qx, y, n, r0, r1, 0);
}

static void ES_NEON_NAME(q5_k_rows)(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                                    int64_t r1) {
    ES_NEON_NAME(kq_rows)(w, qx, y, n, r0, r1, 1);
}

static void ES_NEON_NAME(q6_k_rows)(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                                    int64_t r1) {
    ES_NEON_NAME(kq_rows)(w, qx, y, n, r0, r1, 2);
}
