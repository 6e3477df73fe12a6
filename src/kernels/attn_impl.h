/* attn_impl.h — the inner operations of the attention kernel and the vector helpers of the forward
 * pass, one table per CPU level (attn.c: portable C; attn_avx2.c: AVX2 + FMA + F16C; attn_avx512.c). */
#ifndef ES_KERNELS_ATTN_IMPL_H
#define ES_KERNELS_ATTN_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* Slots per online-softmax step (see attn.c). */
#define ES_ATTN_CHUNK 32

/* The exp of the SIMD tables (attn_avx2.c's exp8, attn_avx512.c's exp16 compute it identically per
 * lane): clamp to [ES_EXP_LO, ES_EXP_HI], n = round(x·log2 e), r = x − n·ln2 (ln2 in two parts),
 * y = 1 + r + r²·P(r) with P of degree 5 (Cephes expf), times 2^n. */
#define ES_EXP_LO (-87.0f)
#define ES_EXP_HI 88.0f
#define ES_EXP_LOG2E 1.44269504088896341f
#define ES_EXP_LN2_HI 0.693359375f
#define ES_EXP_LN2_LO (-2.12194440e-4f)
#define ES_EXP_P0 1.9875691500e-4f
#define ES_EXP_P1 1.3981999507e-3f
#define ES_EXP_P2 8.3334519073e-3f
#define ES_EXP_P3 4.1665795894e-2f
#define ES_EXP_P4 1.6666665459e-1f
#define ES_EXP_P5 5.0000001201e-1f

typedef struct es_attn_ops {
    /* dst[0..n) = f16 src (n a multiple of 8) */
    void (*f16_to_f32)(const uint16_t *src, float *dst, int n);
    /* dst[0..32) = d * qs[0..32) (one q8_0 block) */
    void (*q8_to_f32)(float d, const int8_t *qs, float *dst);
    /* kt[d*ES_ATTN_CHUNK + i] = kr[i*hd + d] for i < cnt, 0 for cnt <= i < ES_ATTN_CHUNK, d < hd: a
     * chunk of K rows transposed for qk (hd a multiple of 8 for SIMD tables) */
    void (*transpose)(const float *kr, int cnt, int hd, float *kt);
    /* s[r*ES_ATTN_CHUNK + i] = scale * sum_d q[r*hd + d] * kt[d*ES_ATTN_CHUNK + i] for r < nr and every
     * i < ES_ATTN_CHUNK: the scores of nr query rows against a chunk of keys stored transposed (hd rows
     * of ES_ATTN_CHUNK keys). Each score is one chain of multiply-adds over d = 0..hd-1 in order, so a
     * row's scores do not depend on nr or on the other rows (hd a multiple of 8 for SIMD tables). */
    void (*qk)(const float *q, int nr, int hd, const float *kt, float scale, float *s);
    /* o[r*hd + j] += sum_{i<cnt} p[r*ES_ATTN_CHUNK + i] * v[i][j] for r < nr, j < hd, accumulated over i
     * in order (one chain per output element, independent of nr). */
    void (*pv)(float *o, int nr, int hd, const float *p, int cnt, const float *const *v);
    /* x[i] = exp(x[i] - m) for i < n; returns the sum of the new x (in float) */
    float (*exp_sum)(float *x, int n, float m);
    /* g[i] = silu(g[i]) * u[i] */
    void (*silu_mul)(float *g, const float *u, int64_t n);
} es_attn_ops;

extern const es_attn_ops es_attn_ops_avx2;
extern const es_attn_ops es_attn_ops_avx512;

#endif
