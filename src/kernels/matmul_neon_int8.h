/* matmul_neon_int8.h — the NEON int8 kernels (Q8_0, Q4_0), a template included twice by
 * matmul_neon.c: once plain (ES_NEON_DOT 0: products with vmull_s8, pairs summed with vpadalq_s16)
 * and once inside a "+dotprod" target region (ES_NEON_DOT 1: vdotq_s32). Before including, define
 * ES_NEON_DOT and ES_NEON_NAME(x) (the suffix of the generated functions). No include guard.
 *
 * A pass takes a group of 4 weight rows and up to QJ activation rows. For each block it loads the
 * 4 rows' blocks once, computes the 4 x J exact integer block sums (4 int32 lanes each, folded
 * into one vector of the 4 rows' sums with two pairwise adds), and does one fused multiply-add per
 * activation row into a vector whose lanes are the 4 rows: acc = fma((float)isum, dw * dx, acc),
 * the arithmetic of matmul_impl.h, so every y equals the scalar reference bit for bit. */

/* The 4 int32 lanes of `acc` plus the int8 dot of two 16-byte pairs (w0·x0 + w1·x1; the total is
 * all that matters, not which lane holds what). Without dotprod each int16 lane holds
 * w[i]x[i] + w[i+8]x[i+8]: |x| <= 127 (the activation quantiser never gives -128), so the pair
 * is at most 2 * 128 * 127 < 32768 even for a -128 weight. */
static inline __attribute__((always_inline)) int32x4_t ES_NEON_NAME(dot32)(int32x4_t acc, int8x16_t w0, int8x16_t w1,
                                                                           int8x16_t x0, int8x16_t x1) {
#if ES_NEON_DOT
    return vdotq_s32(vdotq_s32(acc, w0, x0), w1, x1);
#else
    int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), w0, x0);
    int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(x1)), w1, x1);
    return vpadalq_s16(vpadalq_s16(acc, p0), p1);
#endif
}

/* y[j][r .. r+valid) for j in [j0, j0+J): a 4-row group (rp: the rows, past-the-end ones repeat
 * the last real row), J <= QJ a constant after inlining. q4 selects the Q4_0 block layout. */
static inline __attribute__((always_inline)) void ES_NEON_NAME(int8_tile)(const uint8_t *const rp[4], int valid,
                                                                         const es_qx *qx, int64_t j0, const int J,
                                                                         float *y, int64_t rows, int64_t r,
                                                                         const bool q4) {
    const int64_t nb = qx->nb;
    const size_t bsize = q4 ? sizeof(es_block_q4_0) : sizeof(es_block_q8_0);
    float32x4_t acc[QJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const size_t off = (size_t)b * bsize;
        int8x16_t W[4][2];
        ES_UNROLL
        for (int i = 0; i < 4; i++) {
            if (q4) {
                /* element e < 16 in the low nibble of qs[e], e + 16 in the high one; value q - 8 */
                const uint8x16_t v = vld1q_u8(rp[i] + off + 2);
                W[i][0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), vdupq_n_s8(8));
                W[i][1] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
            } else {
                W[i][0] = vld1q_s8((const int8_t *)(rp[i] + off + 2));
                W[i][1] = vld1q_s8((const int8_t *)(rp[i] + off + 18));
            }
        }
        const float32x4_t dw = es_neon_f16x4(rp, off);
        const int64_t jb0 = b * qx->n + j0; /* block b of activation row j0 */
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            const int8_t *xb = qx->qs + (jb0 + j) * 32;
            const int8x16_t x0 = vld1q_s8(xb), x1 = vld1q_s8(xb + 16);
            int32x4_t s[4];
            ES_UNROLL
            for (int i = 0; i < 4; i++) s[i] = ES_NEON_NAME(dot32)(vdupq_n_s32(0), W[i][0], W[i][1], x0, x1);
            /* lane i = row i's block sum (exact in f32: |sum| <= 32 * 128 * 127 < 2^24) */
            const int32x4_t t = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
            const float32x4_t sc = vmulq_n_f32(dw, qx->d[jb0 + j]);
            acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(t), sc);
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) es_neon_store4(y + (j0 + j) * rows + r, acc[j], valid);
}

static inline __attribute__((always_inline)) void ES_NEON_NAME(int8_rows)(const es_mat *w, const es_qx *qx, float *y,
                                                                         int64_t n, int64_t r0, int64_t r1,
                                                                         const bool q4) {
    for (int64_t r = r0; r < r1; r += 4) {
        const uint8_t *rp[4];
        const int valid = r1 - r < 4 ? (int)(r1 - r) : 4;
        es_neon_group4(w, r, r1, rp);
        for (int64_t j0 = 0; j0 < n; j0 += QJ) {
            switch (n - j0 < QJ ? n - j0 : QJ) {
            case 1: ES_NEON_NAME(int8_tile)(rp, valid, qx, j0, 1, y, w->rows, r, q4); break;
            case 2: ES_NEON_NAME(int8_tile)(rp, valid, qx, j0, 2, y, w->rows, r, q4); break;
            case 3: ES_NEON_NAME(int8_tile)(rp, valid, qx, j0, 3, y, w->rows, r, q4); break;
            default: ES_NEON_NAME(int8_tile)(rp, valid, qx, j0, 4, y, w->rows, r, q4); break;
            }
        }
    }
}

static void ES_NEON_NAME(q8_0_rows)(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                                    int64_t r1) {
    ES_NEON_NAME(int8_rows)(w, qx, y, n, r0, r1, false);
}

static void ES_NEON_NAME(q4_0_rows)(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                                    int64_t r1) {
    ES_NEON_NAME(int8_rows)(w, qx, y, n, r0, r1, true);
}
