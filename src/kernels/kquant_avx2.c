/* kquant_avx2.c — AVX2 kernels for the K-quant weights on the X16 layout (kernels/repack.h). The
 * file layout has none: the AVX2 level runs the scalar reference for it (same results; see
 * matmul_impl.h), and models are repacked at load time at this level.
 *
 * A 16-row group is two halves of 8 rows: bytes 32h .. 32h+31 of every 64-byte chunk, bytes 8h..
 * of every 16-byte scale vector and 16h.. of the fp16 vectors. Per half and activation row the
 * dots are int16 maddubs pair sums (exact: see the bounds at each), widened with madd, then the
 * f32 steps of the contract, as in kquant_avx512.c. 16 registers hold KJ2 = 2 activation rows. */
#if !defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul_impl.h"
#include "kernels/repack.h"

#define AI static inline __attribute__((always_inline))
#define ES_UNROLL _Pragma("GCC unroll 16")

#define KJ2 2

const es_mm_rows_fn es_kq_avx2[3] = {NULL, NULL, NULL};

AI __m256 tofloat(__m256i v) { return _mm256_sub_ps(_mm256_castsi256_ps(v), _mm256_set1_ps(ES_QX_MAGIC_F)); }

AI __m256i bcast32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

AI __m256i shift16(__m256i v, const int sh) {
    if (sh > 0) return _mm256_slli_epi16(v, sh);
    if (sh < 0) return _mm256_srli_epi16(v, -sh);
    return v;
}

AI __m256 u8_ps(const uint8_t *p) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p))); }
AI __m256 i8_ps(const uint8_t *p) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p))); }
AI __m256 f16_ps(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

AI void store8(float *dst, __m256 v, int valid) {
    if (valid == 8) {
        _mm256_storeu_ps(dst, v);
    } else {
        float t[8];
        _mm256_storeu_ps(t, v);
        memcpy(dst, t, (size_t)valid * sizeof(float));
    }
}

/* Q4_K (q5 false) / Q5_K, half h of group g: y[j][r0 + 8h ..] for j in [j0, j0+J). */
AI void kx16_half(const uint8_t *g, int64_t nsb, const es_qx *qx, int64_t j0, const int J, const bool q5, const int h,
                  int valid, float *y, int64_t rows, int64_t r0) {
    const uint32_t type = q5 ? ES_TYPE_Q5_K : ES_TYPE_Q4_K;
    const size_t sbb = es_x16_kq_sb_bytes(type), osc = es_x16_kq_sc(type) + 8 * h, om = es_x16_kq_m(type) + 8 * h;
    const size_t od = es_x16_kq_d(type) + 16 * h, odm = es_x16_kq_dmin(type) + 16 * h;
    const int64_t n = qx->n;
    const __m256i lo4 = _mm256_set1_epi8(0x0f), b4 = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
    __m256 acc[KJ2];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *p = g + (size_t)sb * sbb, *pq = p + 32 * h;
        __m256 a[KJ2], mn[KJ2];
        ES_UNROLL
        for (int j = 0; j < J; j++) a[j] = mn[j] = _mm256_setzero_ps();
        ES_UNROLL
        for (int c = 0; c < 4; c++) { /* sub-blocks 2c (low nibbles) and 2c + 1 (high) */
            const int64_t b0 = (sb * 8 + 2 * c) * n + j0, b1 = b0 + n;
            const int8_t *x0 = qx->qs + b0 * 32, *x1 = qx->qs + b1 * 32;
            __m256i s0[KJ2], s1[KJ2], t0[KJ2], t1[KJ2];
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                s0[j] = s1[j] = _mm256_set1_epi32(ES_QX_MAGIC);
                t0[j] = t1[j] = _mm256_setzero_si256();
            }
            ES_UNROLL
            for (int k = 0; k < 8; k++) {
                const __m256i u = _mm256_loadu_si256((const __m256i *)(pq + 64 * (8 * c + k)));
                __m256i L = _mm256_and_si256(u, lo4), H = _mm256_and_si256(_mm256_srli_epi16(u, 4), lo4);
                if (q5) { /* bit s of the qh chunk: the fifth bit of sub-block s, moved to bit 4 */
                    const __m256i hb = _mm256_loadu_si256((const __m256i *)(pq + 64 * (32 + k)));
                    L = _mm256_or_si256(L, _mm256_and_si256(shift16(hb, 4 - 2 * c), b4));
                    H = _mm256_or_si256(H, _mm256_and_si256(shift16(hb, 3 - 2 * c), b4));
                }
                ES_UNROLL
                for (int j = 0; j < J; j++) {
                    /* 8 steps of codes <= 15 (Q4_K) or 4 of <= 31 (Q5_K) times |x| <= 127: < 2^15 */
                    t0[j] = _mm256_add_epi16(t0[j], _mm256_maddubs_epi16(L, bcast32(x0 + j * 32 + 4 * k)));
                    t1[j] = _mm256_add_epi16(t1[j], _mm256_maddubs_epi16(H, bcast32(x1 + j * 32 + 4 * k)));
                    if (k == 7 || (q5 && k == 3)) {
                        s0[j] = _mm256_add_epi32(s0[j], _mm256_madd_epi16(t0[j], ones));
                        s1[j] = _mm256_add_epi32(s1[j], _mm256_madd_epi16(t1[j], ones));
                        t0[j] = t1[j] = _mm256_setzero_si256();
                    }
                }
            }
            const __m256 sc0 = u8_ps(p + osc + 32 * c), sc1 = u8_ps(p + osc + 32 * c + 16);
            const __m256 m0 = u8_ps(p + om + 32 * c), m1 = u8_ps(p + om + 32 * c + 16);
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                a[j] = _mm256_fmadd_ps(tofloat(s0[j]), _mm256_mul_ps(sc0, _mm256_set1_ps(qx->d[b0 + j])), a[j]);
                mn[j] = _mm256_fmadd_ps(m0, _mm256_set1_ps(qx->fs[b0 + j]), mn[j]);
                a[j] = _mm256_fmadd_ps(tofloat(s1[j]), _mm256_mul_ps(sc1, _mm256_set1_ps(qx->d[b1 + j])), a[j]);
                mn[j] = _mm256_fmadd_ps(m1, _mm256_set1_ps(qx->fs[b1 + j]), mn[j]);
            }
        }
        const __m256 d = f16_ps(p + od), dmin = f16_ps(p + odm);
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            acc[j] = _mm256_fmadd_ps(d, a[j], acc[j]);
            acc[j] = _mm256_fnmadd_ps(dmin, mn[j], acc[j]);
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) store8(y + (j0 + j) * rows + r0 + 8 * h, acc[j], valid);
}

/* Q6_K, half h of group g (see kquant_avx512.c's q6x16_tile for why the f32 steps are exact). */
AI void q6x16_half(const uint8_t *g, int64_t nsb, const es_qx *qx, int64_t j0, const int J, const int h, int valid,
                   float *y, int64_t rows, int64_t r0) {
    const size_t sbb = es_x16_kq_sb_bytes(ES_TYPE_Q6_K), osc = es_x16_kq_sc(ES_TYPE_Q6_K) + 8 * h;
    const size_t od = es_x16_kq_d(ES_TYPE_Q6_K) + 16 * h;
    const int64_t n = qx->n;
    const __m256i lo4 = _mm256_set1_epi8(0x0f), b45 = _mm256_set1_epi8(0x30), ones = _mm256_set1_epi16(1);
    __m256 acc[KJ2];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *p = g + (size_t)sb * sbb, *pq = p + 32 * h;
        const __m256 d = f16_ps(p + od);
        ES_UNROLL
        for (int s = 0; s < 8; s++) {
            const int hh = s / 4, t = s % 4;
            const int64_t b = (sb * 8 + s) * n + j0;
            const int8_t *xb = qx->qs + b * 32;
            __m256i sh[2][KJ2], tt[KJ2];
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                sh[0][j] = _mm256_set1_epi32(qx->k16[2 * (b + j)] + ES_QX_MAGIC);
                sh[1][j] = _mm256_set1_epi32(qx->k16[2 * (b + j) + 1] + ES_QX_MAGIC);
                tt[j] = _mm256_setzero_si256();
            }
            ES_UNROLL
            for (int k = 0; k < 8; k++) {
                const __m256i u = _mm256_loadu_si256((const __m256i *)(pq + 64 * (16 * hh + 8 * (t & 1) + k)));
                const __m256i hq = _mm256_loadu_si256((const __m256i *)(pq + 64 * (32 + 8 * hh + k)));
                const __m256i lo = (t >> 1) ? _mm256_and_si256(_mm256_srli_epi16(u, 4), lo4) : _mm256_and_si256(u, lo4);
                const __m256i q = _mm256_or_si256(lo, _mm256_and_si256(shift16(hq, 4 - 2 * t), b45));
                const int hf = k / 4;
                ES_UNROLL
                for (int j = 0; j < J; j++) { /* two steps of 2 products <= 63 * 127 each: < 2^15 */
                    tt[j] = _mm256_add_epi16(tt[j], _mm256_maddubs_epi16(q, bcast32(xb + j * 32 + 4 * k)));
                    if (k & 1) {
                        sh[hf][j] = _mm256_add_epi32(sh[hf][j], _mm256_madd_epi16(tt[j], ones));
                        tt[j] = _mm256_setzero_si256();
                    }
                }
            }
            const __m256 sc0 = i8_ps(p + osc + 32 * s), sc1 = i8_ps(p + osc + 32 * s + 16);
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                const __m256 v = _mm256_fmadd_ps(tofloat(sh[1][j]), sc1, _mm256_mul_ps(tofloat(sh[0][j]), sc0));
                acc[j] = _mm256_fmadd_ps(v, _mm256_mul_ps(d, _mm256_set1_ps(qx->d[b + j])), acc[j]);
            }
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) store8(y + (j0 + j) * rows + r0 + 8 * h, acc[j], valid);
}

/* type: 0 Q4_K, 1 Q5_K, 2 Q6_K. */
AI void kq_x16_rows(const es_mat *w, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1, const int type) {
    const int64_t nsb = w->cols / ES_QK_K;
    const size_t gbytes = es_x16_group_bytes(w->type, qx->nb);
    for (int64_t r = r0; r < r1; r += 16) {
        const uint8_t *g = (const uint8_t *)w->data + (size_t)(r / 16) * gbytes;
        for (int h = 0; h < 2; h++) {
            const int64_t left = r1 - r - 8 * h;
            if (left <= 0) break;
            const int valid = left < 8 ? (int)left : 8;
            for (int64_t j0 = 0; j0 < n; j0 += KJ2) {
                if (n - j0 == 1) {
                    if (type == 2) q6x16_half(g, nsb, qx, j0, 1, h, valid, y, w->rows, r);
                    else kx16_half(g, nsb, qx, j0, 1, type == 1, h, valid, y, w->rows, r);
                } else {
                    if (type == 2) q6x16_half(g, nsb, qx, j0, 2, h, valid, y, w->rows, r);
                    else kx16_half(g, nsb, qx, j0, 2, type == 1, h, valid, y, w->rows, r);
                }
            }
        }
    }
}

void es_q4_k_x16_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    (void)x;
    kq_x16_rows(w, qx, y, n, r0, r1, 0);
}
void es_q5_k_x16_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    (void)x;
    kq_x16_rows(w, qx, y, n, r0, r1, 1);
}
void es_q6_k_x16_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    (void)x;
    kq_x16_rows(w, qx, y, n, r0, r1, 2);
}
