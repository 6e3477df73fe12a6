/* matmul_kquant.c — scalar reference kernels for K-quant weights (Q4_K, Q5_K, Q6_K): the
 * definition of their results (arithmetic in kernels/matmul_impl.h) and the path on CPUs without
 * AVX2. Each super-block of a weight row is decoded once into plain codes, then dotted with the
 * quantised activations of up to MAXJ activation rows. */
#include <math.h>

#include "kernels/matmul_impl.h"
#include "kernels/repack.h"
#include "util/fp16.h"

enum { MAXJ = 64 };

/* Super-block sb of row r as the file's block of bsz bytes: in place for the file layout, rebuilt
 * into tmp for X16 (so both layouts run the very same arithmetic). */
static const uint8_t *kq_block(const es_mat *w, int64_t r, int64_t sb, size_t bsz, uint8_t *tmp) {
    if (w->layout == ES_LAYOUT_X16) {
        es_x16_kq_unpack(w, r, sb, tmp);
        return tmp;
    }
    return (const uint8_t *)w->data + (size_t)r * w->row_bytes + (size_t)sb * bsz;
}

/* Codes (0..31), scales and mins of one Q4_K (hbits NULL) or Q5_K super-block. */
static void decode_kx(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, uint8_t q[ES_QK_K], float scf[8],
                      float mf[8]) {
    for (int s = 0; s < 8; s++) {
        uint8_t sc, m;
        es_kq_scale_min(s, scales, &sc, &m);
        scf[s] = (float)sc;
        mf[s] = (float)m;
        for (int l = 0; l < 32; l++) {
            int v = (qs[32 * (s / 2) + l] >> (4 * (s & 1))) & 0x0f;
            if (qh) v |= ((qh[l] >> s) & 1) << 4;
            q[32 * s + l] = (uint8_t)v;
        }
    }
}

static void kx_rows_ref(const es_mat *w, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1, bool q5) {
    const int64_t nsb = w->cols / ES_QK_K, rows = w->rows;
    float acc[MAXJ];
    es_block_q5_k tmp; /* the larger of the two blocks */
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t j0 = 0; j0 < n; j0 += MAXJ) {
            const int64_t nj = n - j0 < MAXJ ? n - j0 : MAXJ;
            for (int64_t j = 0; j < nj; j++) acc[j] = 0.0f;
            for (int64_t sb = 0; sb < nsb; sb++) {
                uint8_t q[ES_QK_K];
                float scf[8], mf[8], d, dmin;
                if (q5) {
                    const es_block_q5_k *blk = (const es_block_q5_k *)kq_block(w, r, sb, sizeof *blk, (uint8_t *)&tmp);
                    decode_kx(blk->scales, blk->qs, blk->qh, q, scf, mf);
                    d = es_fp16_to_fp32(blk->d);
                    dmin = es_fp16_to_fp32(blk->dmin);
                } else {
                    const es_block_q4_k *blk = (const es_block_q4_k *)kq_block(w, r, sb, sizeof *blk, (uint8_t *)&tmp);
                    decode_kx(blk->scales, blk->qs, NULL, q, scf, mf);
                    d = es_fp16_to_fp32(blk->d);
                    dmin = es_fp16_to_fp32(blk->dmin);
                }
                for (int64_t j = 0; j < nj; j++) {
                    float a = 0.0f, mn = 0.0f;
                    for (int s = 0; s < 8; s++) {
                        const int64_t bj = (sb * 8 + s) * n + j0 + j; /* block b of activation row j0 + j */
                        const int8_t *xb = qx->qs + bj * ES_QK;
                        int32_t isum = 0;
                        for (int l = 0; l < 32; l++) isum += (int32_t)q[32 * s + l] * xb[l];
                        a = fmaf((float)isum, scf[s] * qx->d[bj], a);
                        mn = fmaf(mf[s], qx->fs[bj], mn);
                    }
                    acc[j] = fmaf(d, a, acc[j]);
                    acc[j] = fmaf(-dmin, mn, acc[j]);
                }
            }
            for (int64_t j = 0; j < nj; j++) y[(j0 + j) * rows + r] = acc[j];
        }
    }
}

void es_q4_k_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    kx_rows_ref(w, qx, y, n, r0, r1, false);
}

void es_q5_k_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    kx_rows_ref(w, qx, y, n, r0, r1, true);
}

void es_q6_k_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    const int64_t nsb = w->cols / ES_QK_K, rows = w->rows;
    float acc[MAXJ];
    es_block_q6_k tmp;
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t j0 = 0; j0 < n; j0 += MAXJ) {
            const int64_t nj = n - j0 < MAXJ ? n - j0 : MAXJ;
            for (int64_t j = 0; j < nj; j++) acc[j] = 0.0f;
            for (int64_t sb = 0; sb < nsb; sb++) {
                const es_block_q6_k *b = (const es_block_q6_k *)kq_block(w, r, sb, sizeof tmp, (uint8_t *)&tmp);
                int8_t q[ES_QK_K]; /* q - 32 */
                for (int e = 0; e < ES_QK_K; e++) {
                    const int h = e / 128, t = (e % 128) / 32, l = e % 32;
                    const int lo = (b->ql[64 * h + 32 * (t & 1) + l] >> (4 * (t >> 1))) & 0x0f;
                    const int hi = (b->qh[32 * h + l] >> (2 * t)) & 3;
                    q[e] = (int8_t)((lo | (hi << 4)) - 32);
                }
                const float d = es_fp16_to_fp32(b->d);
                for (int64_t j = 0; j < nj; j++) {
                    for (int s = 0; s < 8; s++) {
                        const int64_t bj = (sb * 8 + s) * n + j0 + j;
                        const int8_t *xb = qx->qs + bj * ES_QK;
                        int32_t i0 = 0, i1 = 0;
                        for (int l = 0; l < 16; l++) {
                            i0 += (int32_t)q[32 * s + l] * xb[l];
                            i1 += (int32_t)q[32 * s + 16 + l] * xb[16 + l];
                        }
                        const int32_t v = b->scales[2 * s] * i0 + b->scales[2 * s + 1] * i1;
                        acc[j] = fmaf((float)v, d * qx->d[bj], acc[j]);
                    }
                }
            }
            for (int64_t j = 0; j < nj; j++) y[(j0 + j) * rows + r] = acc[j];
        }
    }
}
