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
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(ES_EXP_LO)), _mm256_set1_ps(ES_EXP_HI));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(ES_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ES_EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ES_EXP_LN2_LO), r);
    __m256 y = _mm256_set1_ps(ES_EXP_P0);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ES_EXP_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ES_EXP_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ES_EXP_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ES_EXP_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(ES_EXP_P5));
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

/* 8 x 8 blocks transposed in registers (unpack / shuffle / permute): rows i0..i0+8 of kr become
 * columns i0..i0+8 of kt; a partial last block reads zero rows. */
static void transpose_avx2(const float *kr, int cnt, int hd, float *kt) {
    for (int i0 = 0; i0 < ES_ATTN_CHUNK; i0 += 8) {
        for (int d0 = 0; d0 < hd; d0 += 8) {
            __m256 r[8];
            for (int u = 0; u < 8; u++)
                r[u] = i0 + u < cnt ? _mm256_loadu_ps(kr + (size_t)(i0 + u) * hd + d0) : _mm256_setzero_ps();
            const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
            const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
            const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
            const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
            float *o = kt + (size_t)d0 * ES_ATTN_CHUNK + i0;
            _mm256_storeu_ps(o + 0 * ES_ATTN_CHUNK, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(o + 1 * ES_ATTN_CHUNK, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(o + 2 * ES_ATTN_CHUNK, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(o + 3 * ES_ATTN_CHUNK, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(o + 4 * ES_ATTN_CHUNK, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(o + 5 * ES_ATTN_CHUNK, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(o + 6 * ES_ATTN_CHUNK, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(o + 7 * ES_ATTN_CHUNK, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
    }
}

/* Scores of two query rows (q, q + hd) against the 32 keys of a transposed chunk, and of one row:
 * per key lane one chain of FMAs over d in order, the same chain for a row whether it is paired or
 * alone. Accumulators are named variables: arrays indexed in loops end up on the stack. */
static void qk2(const float *q, int hd, const float *kt, float scale, float *s) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int d = 0; d < hd; d++) {
        const float *k = kt + (size_t)d * ES_ATTN_CHUNK;
        const __m256 k0 = _mm256_loadu_ps(k), k1 = _mm256_loadu_ps(k + 8), k2 = _mm256_loadu_ps(k + 16),
                     k3 = _mm256_loadu_ps(k + 24);
        const __m256 x = _mm256_broadcast_ss(q + d), y = _mm256_broadcast_ss(q + hd + d);
        a0 = _mm256_fmadd_ps(x, k0, a0);
        a1 = _mm256_fmadd_ps(x, k1, a1);
        a2 = _mm256_fmadd_ps(x, k2, a2);
        a3 = _mm256_fmadd_ps(x, k3, a3);
        b0 = _mm256_fmadd_ps(y, k0, b0);
        b1 = _mm256_fmadd_ps(y, k1, b1);
        b2 = _mm256_fmadd_ps(y, k2, b2);
        b3 = _mm256_fmadd_ps(y, k3, b3);
    }
    const __m256 sc = _mm256_set1_ps(scale);
    float *t = s + ES_ATTN_CHUNK;
    _mm256_storeu_ps(s, _mm256_mul_ps(a0, sc));
    _mm256_storeu_ps(s + 8, _mm256_mul_ps(a1, sc));
    _mm256_storeu_ps(s + 16, _mm256_mul_ps(a2, sc));
    _mm256_storeu_ps(s + 24, _mm256_mul_ps(a3, sc));
    _mm256_storeu_ps(t, _mm256_mul_ps(b0, sc));
    _mm256_storeu_ps(t + 8, _mm256_mul_ps(b1, sc));
    _mm256_storeu_ps(t + 16, _mm256_mul_ps(b2, sc));
    _mm256_storeu_ps(t + 24, _mm256_mul_ps(b3, sc));
}

static void qk1(const float *q, int hd, const float *kt, float scale, float *s) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int d = 0; d < hd; d++) {
        const float *k = kt + (size_t)d * ES_ATTN_CHUNK;
        const __m256 x = _mm256_broadcast_ss(q + d);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k + 8), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k + 16), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k + 24), a3);
    }
    const __m256 sc = _mm256_set1_ps(scale);
    _mm256_storeu_ps(s, _mm256_mul_ps(a0, sc));
    _mm256_storeu_ps(s + 8, _mm256_mul_ps(a1, sc));
    _mm256_storeu_ps(s + 16, _mm256_mul_ps(a2, sc));
    _mm256_storeu_ps(s + 24, _mm256_mul_ps(a3, sc));
}

static void qk_avx2(const float *q, int nr, int hd, const float *kt, float scale, float *s) {
    int r = 0;
    for (; r + 2 <= nr; r += 2) qk2(q + (size_t)r * hd, hd, kt, scale, s + (size_t)r * ES_ATTN_CHUNK);
    if (r < nr) qk1(q + (size_t)r * hd, hd, kt, scale, s + (size_t)r * ES_ATTN_CHUNK);
}

/* o[r][j0 .. j0 + 32) of two rows (o, o + hd) += sum_i p[r][i] v[i][j0 ..], one FMA chain per element
 * over i in order; pv1x4 one row, pv2x1 / pv1x1 eight columns (head sizes not a multiple of 32). */
static void pv2x4(float *o, int hd, const float *p, int cnt, const float *const *v, int j0) {
    float *o2 = o + hd;
    __m256 a0 = _mm256_loadu_ps(o + j0), a1 = _mm256_loadu_ps(o + j0 + 8), a2 = _mm256_loadu_ps(o + j0 + 16),
           a3 = _mm256_loadu_ps(o + j0 + 24);
    __m256 b0 = _mm256_loadu_ps(o2 + j0), b1 = _mm256_loadu_ps(o2 + j0 + 8), b2 = _mm256_loadu_ps(o2 + j0 + 16),
           b3 = _mm256_loadu_ps(o2 + j0 + 24);
    for (int i = 0; i < cnt; i++) {
        const float *vi = v[i] + j0;
        const __m256 x = _mm256_broadcast_ss(p + i), y = _mm256_broadcast_ss(p + ES_ATTN_CHUNK + i);
        const __m256 v0 = _mm256_loadu_ps(vi), v1 = _mm256_loadu_ps(vi + 8), v2 = _mm256_loadu_ps(vi + 16),
                     v3 = _mm256_loadu_ps(vi + 24);
        a0 = _mm256_fmadd_ps(x, v0, a0);
        a1 = _mm256_fmadd_ps(x, v1, a1);
        a2 = _mm256_fmadd_ps(x, v2, a2);
        a3 = _mm256_fmadd_ps(x, v3, a3);
        b0 = _mm256_fmadd_ps(y, v0, b0);
        b1 = _mm256_fmadd_ps(y, v1, b1);
        b2 = _mm256_fmadd_ps(y, v2, b2);
        b3 = _mm256_fmadd_ps(y, v3, b3);
    }
    _mm256_storeu_ps(o + j0, a0);
    _mm256_storeu_ps(o + j0 + 8, a1);
    _mm256_storeu_ps(o + j0 + 16, a2);
    _mm256_storeu_ps(o + j0 + 24, a3);
    _mm256_storeu_ps(o2 + j0, b0);
    _mm256_storeu_ps(o2 + j0 + 8, b1);
    _mm256_storeu_ps(o2 + j0 + 16, b2);
    _mm256_storeu_ps(o2 + j0 + 24, b3);
}

static void pv1x4(float *o, const float *p, int cnt, const float *const *v, int j0) {
    __m256 a0 = _mm256_loadu_ps(o + j0), a1 = _mm256_loadu_ps(o + j0 + 8), a2 = _mm256_loadu_ps(o + j0 + 16),
           a3 = _mm256_loadu_ps(o + j0 + 24);
    for (int i = 0; i < cnt; i++) {
        const float *vi = v[i] + j0;
        const __m256 x = _mm256_broadcast_ss(p + i);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(vi), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(vi + 8), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(vi + 16), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(vi + 24), a3);
    }
    _mm256_storeu_ps(o + j0, a0);
    _mm256_storeu_ps(o + j0 + 8, a1);
    _mm256_storeu_ps(o + j0 + 16, a2);
    _mm256_storeu_ps(o + j0 + 24, a3);
}

static void pv1x1(float *o, const float *p, int cnt, const float *const *v, int j0) {
    __m256 a = _mm256_loadu_ps(o + j0);
    for (int i = 0; i < cnt; i++) a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + i), _mm256_loadu_ps(v[i] + j0), a);
    _mm256_storeu_ps(o + j0, a);
}

static void pv_avx2(float *o, int nr, int hd, const float *p, int cnt, const float *const *v) {
    for (int r = 0; r < nr; r += 2) {
        float *orow = o + (size_t)r * hd;
        const float *prow = p + (size_t)r * ES_ATTN_CHUNK;
        int j0 = 0;
        for (; j0 + 32 <= hd; j0 += 32) {
            if (r + 2 <= nr) pv2x4(orow, hd, prow, cnt, v, j0);
            else pv1x4(orow, prow, cnt, v, j0);
        }
        for (; j0 < hd; j0 += 8) {
            pv1x1(orow, prow, cnt, v, j0);
            if (r + 2 <= nr) pv1x1(orow + hd, prow + ES_ATTN_CHUNK, cnt, v, j0);
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

const es_attn_ops es_attn_ops_avx2 = {f16_to_f32_avx2, q8_to_f32_avx2, transpose_avx2, qk_avx2, pv_avx2, exp_sum_avx2, silu_mul_avx2};
