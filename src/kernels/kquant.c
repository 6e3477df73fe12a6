/* kquant.c — K-quant (Q4_K, Q5_K, Q6_K) dequantisation and quantisation, scalar.
 *
 * Quantisation works in two stages. Per sub-block a small search finds the scale (and for Q4_K /
 * Q5_K the min) that minimise the squared error: a few trial grids around the plain range-based
 * one, each refitted by least squares on the integer codes it produced. Per super-block the
 * sub-block scales are then themselves quantised (6-bit for Q4_K / Q5_K against fp16 d and dmin,
 * int8 for Q6_K against fp16 d), and the codes are recomputed against the scales as stored, so
 * the rounding of the scales costs no more than it must. */
#include "kernels/kquant.h"

#include <math.h>
#include <string.h>

#include "kernels/blocks.h"
#include "util/fp16.h"

/* nearest integer of a finite or non-finite float, clamped to [lo, hi] (NaN gives lo) */
static int qround(float v, int lo, int hi) {
    if (!(v >= (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return (int)nearbyintf(v);
}

/* ---- dequantisation ------------------------------------------------------------------------- */

void es_q4_k_to_float(const void *src, float *dst, int64_t n) {
    const es_block_q4_k *b = src;
    for (int64_t i = 0; i < n / ES_QK_K; i++, dst += ES_QK_K) {
        const float d = es_fp16_to_fp32(b[i].d), dmin = es_fp16_to_fp32(b[i].dmin);
        for (int s = 0; s < 8; s++) {
            uint8_t sc, m;
            es_kq_scale_min(s, b[i].scales, &sc, &m);
            const float D = d * (float)sc, M = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * (s / 2);
            const int sh = 4 * (s & 1);
            for (int l = 0; l < 32; l++) dst[32 * s + l] = D * (float)((q[l] >> sh) & 0x0f) - M;
        }
    }
}

void es_q5_k_to_float(const void *src, float *dst, int64_t n) {
    const es_block_q5_k *b = src;
    for (int64_t i = 0; i < n / ES_QK_K; i++, dst += ES_QK_K) {
        const float d = es_fp16_to_fp32(b[i].d), dmin = es_fp16_to_fp32(b[i].dmin);
        for (int s = 0; s < 8; s++) {
            uint8_t sc, m;
            es_kq_scale_min(s, b[i].scales, &sc, &m);
            const float D = d * (float)sc, M = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * (s / 2);
            const int sh = 4 * (s & 1);
            for (int l = 0; l < 32; l++) {
                const int v = ((q[l] >> sh) & 0x0f) | (((b[i].qh[l] >> s) & 1) << 4);
                dst[32 * s + l] = D * (float)v - M;
            }
        }
    }
}

/* The 6-bit code (0..63) of element e of a Q6_K block. */
static int q6_code(const es_block_q6_k *b, int e) {
    const int h = e / 128, t = (e % 128) / 32, l = e % 32;
    const int lo = (b->ql[64 * h + 32 * (t & 1) + l] >> (4 * (t >> 1))) & 0x0f;
    const int hi = (b->qh[32 * h + l] >> (2 * t)) & 3;
    return lo | (hi << 4);
}

void es_q6_k_to_float(const void *src, float *dst, int64_t n) {
    const es_block_q6_k *b = src;
    for (int64_t i = 0; i < n / ES_QK_K; i++, dst += ES_QK_K) {
        const float d = es_fp16_to_fp32(b[i].d);
        for (int c = 0; c < 16; c++) {
            const float D = d * (float)b[i].scales[c];
            for (int l = 0; l < 16; l++) dst[16 * c + l] = D * (float)(q6_code(&b[i], 16 * c + l) - 32);
        }
    }
}

/* ---- sub-block fits ------------------------------------------------------------------------- */

/* x[n] ~ a * q - mn with q in 0..nmax, a >= 0, mn >= 0 (the offset may only pull values down, as
 * the format stores it). Tries grids slightly finer and coarser than the plain range/nmax one,
 * refits (a, mn) by least squares on each grid's codes and keeps the smallest squared error. */
static void fit_asym(const float *x, int n, int nmax, float *a_out, float *mn_out) {
    float lo = 0.0f, hi = x[0];
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    *a_out = 0.0f;
    *mn_out = -lo;
    if (!(hi > lo)) return; /* constant (or NaN) sub-block: the min alone represents it */
    /* the plain fit: lo at code 0, hi at code nmax */
    float best_a = (hi - lo) / (float)nmax, best_b = lo, best_err = INFINITY;
    for (int step = -1; step <= 8; step++) {
        const float iscale = ((float)nmax + 0.25f * (float)step) / (hi - lo);
        double sq = 0, sqq = 0, sx = 0, sqx = 0;
        int q[ES_QK_K];
        for (int i = 0; i < n; i++) {
            q[i] = qround((x[i] - lo) * iscale, 0, nmax);
            sq += q[i];
            sqq += (double)q[i] * q[i];
            sx += x[i];
            sqx += (double)q[i] * x[i];
        }
        const double det = n * sqq - sq * sq;
        double a, b;
        if (step < 0) { /* the plain fit itself, not refitted */
            a = (hi - lo) / nmax;
            b = lo;
        } else {
            if (!(det > 0)) continue;
            a = (n * sqx - sq * sx) / det;
            b = (sqq * sx - sq * sqx) / det;
            if (b > 0) { /* the offset may not be positive: refit the scale alone */
                b = 0;
                a = sqq > 0 ? sqx / sqq : 0;
            }
            if (!(a > 0)) continue;
        }
        double err = 0;
        for (int i = 0; i < n; i++) {
            /* codes re-rounded against the fitted grid, as the final pass will do */
            const int qi = qround((float)((x[i] - b) / a), 0, nmax);
            const double e = a * qi + b - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_a = (float)a;
            best_b = (float)b;
        }
    }
    *a_out = best_a;
    *mn_out = -best_b;
}

/* x[n] ~ a * q with q in -32..31 (a of either sign: the largest magnitude may map to -32, the end
 * with one more code). Grids around that, each refitted by least squares; smallest error kept. */
static float fit_sym6(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (!(amax > 0.0f)) return 0.0f;
    float best_a = max / -32.0f;
    double best_err = INFINITY;
    for (int step = -1; step <= 8; step++) {
        double a;
        if (step < 0) {
            a = max / -32.0;
        } else {
            const float iscale = -(32.0f - 0.5f * (float)step) / max;
            double sqq = 0, sqx = 0;
            for (int i = 0; i < n; i++) {
                const int q = qround(x[i] * iscale, -32, 31);
                sqq += (double)q * q;
                sqx += (double)q * x[i];
            }
            if (!(sqq > 0)) continue;
            a = sqx / sqq;
            if (a == 0) continue;
        }
        double err = 0;
        for (int i = 0; i < n; i++) {
            const double e = a * qround((float)(x[i] / a), -32, 31) - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_a = (float)a;
        }
    }
    return best_a;
}

/* ---- Q4_K / Q5_K ---------------------------------------------------------------------------- */

/* One super-block of Q4_K (nbits 4) or Q5_K (nbits 5): sets d, dmin, the packed scales and the
 * codes q[256] (0..2^nbits - 1), to be packed by the caller. */
static void quant_kx(const float *x, int nbits, uint16_t *d16, uint16_t *dmin16, uint8_t scales[12], uint8_t q[ES_QK_K]) {
    const int nmax = (1 << nbits) - 1;
    float a[8], mn[8], amax = 0.0f, mmax = 0.0f;
    for (int s = 0; s < 8; s++) {
        fit_asym(x + 32 * s, 32, nmax, &a[s], &mn[s]);
        amax = fmaxf(amax, a[s]);
        mmax = fmaxf(mmax, mn[s]);
    }
    *d16 = es_fp32_to_fp16(amax / 63.0f);
    *dmin16 = es_fp32_to_fp16(mmax / 63.0f);
    const float d = es_fp16_to_fp32(*d16), dmin = es_fp16_to_fp32(*dmin16);
    uint8_t sc[8], m[8];
    for (int s = 0; s < 8; s++) {
        sc[s] = (uint8_t)(d > 0.0f ? qround(a[s] / d, 0, 63) : 0);
        m[s] = (uint8_t)(dmin > 0.0f ? qround(mn[s] / dmin, 0, 63) : 0);
    }
    memset(scales, 0, 12);
    for (int s = 0; s < 4; s++) {
        scales[s] = (uint8_t)(sc[s] | ((sc[s + 4] >> 4) << 6));
        scales[s + 4] = (uint8_t)(m[s] | ((m[s + 4] >> 4) << 6));
        scales[s + 8] = (uint8_t)((sc[s + 4] & 0x0f) | ((m[s + 4] & 0x0f) << 4));
    }
    /* the codes against the scales as stored */
    for (int s = 0; s < 8; s++) {
        const float D = d * (float)sc[s], M = dmin * (float)m[s];
        for (int l = 0; l < 32; l++) q[32 * s + l] = (uint8_t)(D > 0.0f ? qround((x[32 * s + l] + M) / D, 0, nmax) : 0);
    }
}

void es_q4_k_from_float(const float *src, void *dst, int64_t n) {
    es_block_q4_k *b = dst;
    for (int64_t i = 0; i < n / ES_QK_K; i++) {
        uint8_t q[ES_QK_K];
        quant_kx(src + i * ES_QK_K, 4, &b[i].d, &b[i].dmin, b[i].scales, q);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) b[i].qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
}

void es_q5_k_from_float(const float *src, void *dst, int64_t n) {
    es_block_q5_k *b = dst;
    for (int64_t i = 0; i < n / ES_QK_K; i++) {
        uint8_t q[ES_QK_K];
        quant_kx(src + i * ES_QK_K, 5, &b[i].d, &b[i].dmin, b[i].scales, q);
        memset(b[i].qh, 0, sizeof(b[i].qh));
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)((q[64 * c + l] & 0x0f) | ((q[64 * c + 32 + l] & 0x0f) << 4));
        for (int s = 0; s < 8; s++)
            for (int l = 0; l < 32; l++) b[i].qh[l] |= (uint8_t)((q[32 * s + l] >> 4) << s);
    }
}

/* ---- Q6_K ----------------------------------------------------------------------------------- */

void es_q6_k_from_float(const float *src, void *dst, int64_t n) {
    es_block_q6_k *b = dst;
    for (int64_t i = 0; i < n / ES_QK_K; i++) {
        const float *x = src + i * ES_QK_K;
        float a[16], amax = 0.0f;
        for (int c = 0; c < 16; c++) {
            a[c] = fit_sym6(x + 16 * c, 16);
            amax = fmaxf(amax, fabsf(a[c]));
        }
        b[i].d = es_fp32_to_fp16(amax / 127.0f);
        const float d = es_fp16_to_fp32(b[i].d);
        memset(b[i].ql, 0, sizeof(b[i].ql));
        memset(b[i].qh, 0, sizeof(b[i].qh));
        for (int c = 0; c < 16; c++) {
            const int sc = d > 0.0f ? qround(a[c] / d, -127, 127) : 0;
            b[i].scales[c] = (int8_t)sc;
            const float D = d * (float)sc;
            for (int l = 0; l < 16; l++) {
                const int e = 16 * c + l;
                const int q = (D != 0.0f ? qround(x[e] / D, -32, 31) : 0) + 32;
                const int h = e / 128, t = (e % 128) / 32, k = e % 32;
                b[i].ql[64 * h + 32 * (t & 1) + k] |= (uint8_t)((q & 0x0f) << (4 * (t >> 1)));
                b[i].qh[32 * h + k] |= (uint8_t)((q >> 4) << (2 * t));
            }
        }
    }
}
