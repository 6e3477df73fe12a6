/* attn_avx2.c — AVX2 + FMA + F16C versions of the attention inner operations (attn_impl.h); only
 * used after runtime detection (attn.c asks es_cpu_level_get). exp is a Cephes-style polynomial:
 * range-reduced by n = round(x·log2 e), degree-6 polynomial on [-ln2/2, ln2/2], about 2 ulp. */
#if !defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include <immintrin.h>
#include <math.h>

#include "kernels/attn_impl.h"

#define AI static inline __attribute__((always_inline))

AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* e^x for x in any range: clamped to [-87, 88] (results below 2^-125 are not exact zeros). */
AI __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static void f16_to_f32_avx2(const uint16_t *src, float *dst, int n) {
    for (int i = 0; i < n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
}

static void q8_to_f32_avx2(float d, const int8_t *qs, float *dst) {
    const __m256 vd = _mm256_set1_ps(d);
    for (int i = 0; i < 32; i += 8) {
        const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(qs + i)));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(w)));
    }
}

/* Scores of one or two query rows against the 32 keys of a transposed chunk: per key lane one
 * chain of FMAs over d in order (the same chain for a row whether it is paired or alone). */
AI void qk_rows(const float *q, int two, int hd, const float *kt, float scale, float *s) {
    __m256 a[2][4];
    for (int u = 0; u < 2; u++)
        for (int v = 0; v < 4; v++) a[u][v] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d++) {
        const float *k = kt + (size_t)d * ES_ATTN_CHUNK;
        const __m256 k0 = _mm256_loadu_ps(k), k1 = _mm256_loadu_ps(k + 8), k2 = _mm256_loadu_ps(k + 16),
                     k3 = _mm256_loadu_ps(k + 24);
        const __m256 b0 = _mm256_broadcast_ss(q + d);
        a[0][0] = _mm256_fmadd_ps(b0, k0, a[0][0]);
        a[0][1] = _mm256_fmadd_ps(b0, k1, a[0][1]);
        a[0][2] = _mm256_fmadd_ps(b0, k2, a[0][2]);
        a[0][3] = _mm256_fmadd_ps(b0, k3, a[0][3]);
        if (two) {
            const __m256 b1 = _mm256_broadcast_ss(q + hd + d);
            a[1][0] = _mm256_fmadd_ps(b1, k0, a[1][0]);
            a[1][1] = _mm256_fmadd_ps(b1, k1, a[1][1]);
            a[1][2] = _mm256_fmadd_ps(b1, k2, a[1][2]);
            a[1][3] = _mm256_fmadd_ps(b1, k3, a[1][3]);
        }
    }
    const __m256 sc = _mm256_set1_ps(scale);
    for (int u = 0; u < 1 + two; u++)
        for (int v = 0; v < 4; v++) _mm256_storeu_ps(s + (size_t)u * ES_ATTN_CHUNK + 8 * v, _mm256_mul_ps(a[u][v], sc));
}

static void qk_avx2(const float *q, int nr, int hd, const float *kt, float scale, float *s) {
    int r = 0;
    for (; r + 2 <= nr; r += 2) qk_rows(q + (size_t)r * hd, 1, hd, kt, scale, s + (size_t)r * ES_ATTN_CHUNK);
    if (r < nr) qk_rows(q + (size_t)r * hd, 0, hd, kt, scale, s + (size_t)r * ES_ATTN_CHUNK);
}

/* o[r][j0 .. j0 + 8w) of one or two rows += sum_i p[r][i] v[i][...], w <= 4 vectors, one FMA chain per
 * element over i in order. */
AI void pv_rows(float *o, int two, int hd, const float *p, int cnt, const float *const *v, int j0, int w) {
    __m256 a[2][4];
    for (int u = 0; u < 1 + two; u++)
        for (int t = 0; t < w; t++) a[u][t] = _mm256_loadu_ps(o + (size_t)u * hd + j0 + 8 * t);
    for (int i = 0; i < cnt; i++) {
        const float *vi = v[i] + j0;
        const __m256 b0 = _mm256_broadcast_ss(p + i);
        if (two) {
            const __m256 b1 = _mm256_broadcast_ss(p + ES_ATTN_CHUNK + i);
            for (int t = 0; t < w; t++) {
                const __m256 x = _mm256_loadu_ps(vi + 8 * t);
                a[0][t] = _mm256_fmadd_ps(b0, x, a[0][t]);
                a[1][t] = _mm256_fmadd_ps(b1, x, a[1][t]);
            }
        } else {
            for (int t = 0; t < w; t++) a[0][t] = _mm256_fmadd_ps(b0, _mm256_loadu_ps(vi + 8 * t), a[0][t]);
        }
    }
    for (int u = 0; u < 1 + two; u++)
        for (int t = 0; t < w; t++) _mm256_storeu_ps(o + (size_t)u * hd + j0 + 8 * t, a[u][t]);
}

static void pv_avx2(float *o, int nr, int hd, const float *p, int cnt, const float *const *v) {
    for (int r = 0; r < nr; r += 2) {
        const int two = r + 2 <= nr;
        for (int j0 = 0; j0 < hd; j0 += 32) {
            const int w = hd - j0 >= 32 ? 4 : (hd - j0) / 8;
            float *orow = o + (size_t)r * hd;
            const float *prow = p + (size_t)r * ES_ATTN_CHUNK;
            switch (w) { /* constant widths so the accumulators stay in registers */
            case 4: pv_rows(orow, two, hd, prow, cnt, v, j0, 4); break;
            case 3: pv_rows(orow, two, hd, prow, cnt, v, j0, 3); break;
            case 2: pv_rows(orow, two, hd, prow, cnt, v, j0, 2); break;
            default: pv_rows(orow, two, hd, prow, cnt, v, j0, 1); break;
            }
        }
    }
}

static float exp_sum_avx2(float *x, int n, float m) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum8(acc);
    for (; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    return sum;
}

static void silu_mul_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_mul_ps(x, sig), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] * (1.0f / (1.0f + expf(-g[i]))) * u[i];
}

const es_attn_ops es_attn_ops_avx2 = {f16_to_f32_avx2, q8_to_f32_avx2, qk_avx2, pv_avx2, exp_sum_avx2, silu_mul_avx2};
