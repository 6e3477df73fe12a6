/* attn_impl.h — the inner operations of the attention kernel and the vector helpers of the forward
 * pass, one table per CPU level (attn.c: portable C; attn_avx2.c: AVX2 + FMA + F16C). */
#ifndef ES_KERNELS_ATTN_IMPL_H
#define ES_KERNELS_ATTN_IMPL_H

#include <stddef.h>
#include <stdint.h>

typedef struct es_attn_ops {
    /* dst[0..n) = f16 src (n a multiple of 8) */
    void (*f16_to_f32)(const uint16_t *src, float *dst, int n);
    /* dst[0..32) = d * qs[0..32) (one q8_0 block) */
    void (*q8_to_f32)(float d, const int8_t *qs, float *dst);
    /* s[h * stride] = scale * dot(q + h*hd, k, hd) for h < n_q (hd a multiple of 8) */
    void (*dots)(const float *q, int n_q, int hd, const float *k, float scale, float *s, int stride);
    /* o[h*hd + j] += p[h * stride] * v[j] for h < n_q, j < hd */
    void (*axpys)(float *o, int n_q, int hd, const float *p, int stride, const float *v);
    /* x[i] = exp(x[i] - m) for i < n; returns the sum of the new x (in float) */
    float (*exp_sum)(float *x, int n, float m);
    /* g[i] = silu(g[i]) * u[i] */
    void (*silu_mul)(float *g, const float *u, int64_t n);
} es_attn_ops;

extern const es_attn_ops es_attn_ops_avx2;

#endif
