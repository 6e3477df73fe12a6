/* attn_avx512.c — AVX-512 versions of the attention inner operations (attn_impl.h): the score and
 * value kernels on 16-lane vectors (a chunk's 32 keys are two registers, a 64-wide head four), exp
 * and SwiGLU likewise. Conversions and the K transpose are the AVX2 ones (a small share of the work).
 * Per output element the arithmetic is one FMA chain in a fixed order, as in attn_avx2.c, so a row's
 * result never depends on the rows processed beside it. Used after runtime detection only. */
#if !defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include <immintrin.h>
#include <math.h>

#include "kernels/attn_impl.h"

#define AI static inline __attribute__((always_inline))

/* e^x, the polynomial of attn_avx2.c's exp8 on 16 lanes (the same result per lane). */
AI __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(ES_EXP_LO)), _mm512_set1_ps(ES_EXP_HI));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(ES_EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ES_EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ES_EXP_LN2_LO), r);
    __m512 y = _mm512_set1_ps(ES_EXP_P0);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ES_EXP_P1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ES_EXP_P2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ES_EXP_P3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ES_EXP_P4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(ES_EXP_P5));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

static void f16_to_f32_avx512(const uint16_t *src, float *dst, int n) { es_attn_ops_avx2.f16_to_f32(src, dst, n); }
static void q8_to_f32_avx512(float d, const int8_t *qs, float *dst) { es_attn_ops_avx2.q8_to_f32(d, qs, dst); }
static void transpose_avx512(const float *kr, int cnt, int hd, float *kt) { es_attn_ops_avx2.transpose(kr, cnt, hd, kt); }

/* Scores of four / one query rows against a chunk's 32 transposed keys (two registers per row). */
static void qk4(const float *q, int hd, const float *kt, float scale, float *s) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
    for (int d = 0; d < hd; d++) {
        const float *k = kt + (size_t)d * ES_ATTN_CHUNK;
        const __m512 k0 = _mm512_loadu_ps(k), k1 = _mm512_loadu_ps(k + 16);
        const __m512 x = _mm512_set1_ps(q[d]), y = _mm512_set1_ps(q[hd + d]), z = _mm512_set1_ps(q[2 * hd + d]),
                     w = _mm512_set1_ps(q[3 * hd + d]);
        a0 = _mm512_fmadd_ps(x, k0, a0);
        a1 = _mm512_fmadd_ps(x, k1, a1);
        b0 = _mm512_fmadd_ps(y, k0, b0);
        b1 = _mm512_fmadd_ps(y, k1, b1);
        c0 = _mm512_fmadd_ps(z, k0, c0);
        c1 = _mm512_fmadd_ps(z, k1, c1);
        d0 = _mm512_fmadd_ps(w, k0, d0);
        d1 = _mm512_fmadd_ps(w, k1, d1);
    }
    const __m512 sc = _mm512_set1_ps(scale);
    const int C = ES_ATTN_CHUNK;
    _mm512_storeu_ps(s, _mm512_mul_ps(a0, sc));
    _mm512_storeu_ps(s + 16, _mm512_mul_ps(a1, sc));
    _mm512_storeu_ps(s + C, _mm512_mul_ps(b0, sc));
    _mm512_storeu_ps(s + C + 16, _mm512_mul_ps(b1, sc));
    _mm512_storeu_ps(s + 2 * C, _mm512_mul_ps(c0, sc));
    _mm512_storeu_ps(s + 2 * C + 16, _mm512_mul_ps(c1, sc));
    _mm512_storeu_ps(s + 3 * C, _mm512_mul_ps(d0, sc));
    _mm512_storeu_ps(s + 3 * C + 16, _mm512_mul_ps(d1, sc));
}

static void qk1(const float *q, int hd, const float *kt, float scale, float *s) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (int d = 0; d < hd; d++) {
        const float *k = kt + (size_t)d * ES_ATTN_CHUNK;
        const __m512 x = _mm512_set1_ps(q[d]);
        a0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k), a0);
        a1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(k + 16), a1);
    }
    const __m512 sc = _mm512_set1_ps(scale);
    _mm512_storeu_ps(s, _mm512_mul_ps(a0, sc));
    _mm512_storeu_ps(s + 16, _mm512_mul_ps(a1, sc));
}

static void qk_avx512(const float *q, int nr, int hd, const float *kt, float scale, float *s) {
    int r = 0;
    for (; r + 4 <= nr; r += 4) qk4(q + (size_t)r * hd, hd, kt, scale, s + (size_t)r * ES_ATTN_CHUNK);
    for (; r < nr; r++) qk1(q + (size_t)r * hd, hd, kt, scale, s + (size_t)r * ES_ATTN_CHUNK);
}

/* o[r][j0 .. j0 + 64) of two rows += sum_i p[r][i] v[i][j0 ..] (one FMA chain per element over i in
 * order); pv1x1 sixteen columns of one row. */
static void pv2x4(float *o, int hd, const float *p, int cnt, const float *const *v, int j0) {
    float *o2 = o + hd;
    __m512 a0 = _mm512_loadu_ps(o + j0), a1 = _mm512_loadu_ps(o + j0 + 16), a2 = _mm512_loadu_ps(o + j0 + 32),
           a3 = _mm512_loadu_ps(o + j0 + 48);
    __m512 b0 = _mm512_loadu_ps(o2 + j0), b1 = _mm512_loadu_ps(o2 + j0 + 16), b2 = _mm512_loadu_ps(o2 + j0 + 32),
           b3 = _mm512_loadu_ps(o2 + j0 + 48);
    for (int i = 0; i < cnt; i++) {
        const float *vi = v[i] + j0;
        const __m512 x = _mm512_set1_ps(p[i]), y = _mm512_set1_ps(p[ES_ATTN_CHUNK + i]);
        const __m512 v0 = _mm512_loadu_ps(vi), v1 = _mm512_loadu_ps(vi + 16), v2 = _mm512_loadu_ps(vi + 32),
                     v3 = _mm512_loadu_ps(vi + 48);
        a0 = _mm512_fmadd_ps(x, v0, a0);
        a1 = _mm512_fmadd_ps(x, v1, a1);
        a2 = _mm512_fmadd_ps(x, v2, a2);
        a3 = _mm512_fmadd_ps(x, v3, a3);
        b0 = _mm512_fmadd_ps(y, v0, b0);
        b1 = _mm512_fmadd_ps(y, v1, b1);
        b2 = _mm512_fmadd_ps(y, v2, b2);
        b3 = _mm512_fmadd_ps(y, v3, b3);
    }
    _mm512_storeu_ps(o + j0, a0);
    _mm512_storeu_ps(o + j0 + 16, a1);
    _mm512_storeu_ps(o + j0 + 32, a2);
    _mm512_storeu_ps(o + j0 + 48, a3);
    _mm512_storeu_ps(o2 + j0, b0);
    _mm512_storeu_ps(o2 + j0 + 16, b1);
    _mm512_storeu_ps(o2 + j0 + 32, b2);
    _mm512_storeu_ps(o2 + j0 + 48, b3);
}

static void pv1x1(float *o, const float *p, int cnt, const float *const *v, int j0) {
    __m512 a = _mm512_loadu_ps(o + j0);
    for (int i = 0; i < cnt; i++) a = _mm512_fmadd_ps(_mm512_set1_ps(p[i]), _mm512_loadu_ps(v[i] + j0), a);
    _mm512_storeu_ps(o + j0, a);
}

static void pv_avx512(float *o, int nr, int hd, const float *p, int cnt, const float *const *v) {
    for (int r = 0; r < nr; r += 2) {
        float *orow = o + (size_t)r * hd;
        const float *prow = p + (size_t)r * ES_ATTN_CHUNK;
        const int two = r + 2 <= nr;
        int j0 = 0;
        if (two)
            for (; j0 + 64 <= hd; j0 += 64) pv2x4(orow, hd, prow, cnt, v, j0);
        for (; j0 < hd; j0 += 16) {
            pv1x1(orow, prow, cnt, v, j0);
            if (two) pv1x1(orow + hd, prow + ES_ATTN_CHUNK, cnt, v, j0);
        }
    }
}

static float exp_sum_avx512(float *x, int n, float m) {
    const __m512 vm = _mm512_set1_ps(m);
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) { /* masked tail: the same polynomial, so every element is computed alike */
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm));
        _mm512_mask_storeu_ps(x + i, k, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(k, e));
    }
    return _mm512_reduce_add_ps(acc);
}

static void silu_mul_avx512(float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_mul_ps(x, sig), _mm512_loadu_ps(u + i)));
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        const __m512 x = _mm512_maskz_loadu_ps(k, g + i);
        const __m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
        _mm512_mask_storeu_ps(g + i, k, _mm512_mul_ps(_mm512_mul_ps(x, sig), _mm512_maskz_loadu_ps(k, u + i)));
    }
}

const es_attn_ops es_attn_ops_avx512 = {f16_to_f32_avx512, q8_to_f32_avx512, transpose_avx512, qk_avx512,
                                        pv_avx512,         exp_sum_avx512,   silu_mul_avx512};
