/* attn.c — online-softmax attention over a paged KV cache (see attn.h), the cache row formats, and
 * the portable versions of the inner operations (attn_impl.h). */
#include "kernels/attn.h"

#include <math.h>
#include <string.h>

#include "kernels/attn_impl.h"
#include "kernels/matmul.h"
#include "kernels/types.h"
#include "util/fp16.h"

/* Slots per online-softmax step. Chunks are aligned to multiples of ES_ATTN_CHUNK in the attended
 * list (prefix slots then ancestors), whatever split between prefix and ancestors a token has, so a
 * token decoded alone and the same token verified in a batch do the same arithmetic. */
#define ES_ATTN_CHUNK 32

/* ---- row formats ------------------------------------------------------------------------------ */

size_t es_kv_type_row_bytes(es_kv_type type, int64_t n) {
    if (n <= 0 || n > (int64_t)1 << 40) return 0;
    switch (type) {
    case ES_KV_F32: return (size_t)n * 4;
    case ES_KV_F16: return (size_t)n * 2;
    case ES_KV_Q8_0: return n % ES_QK ? 0 : (size_t)(n / ES_QK) * sizeof(es_block_q8_0);
    }
    return 0;
}

const char *es_kv_type_name(es_kv_type type) {
    switch (type) {
    case ES_KV_F32: return "f32";
    case ES_KV_F16: return "f16";
    case ES_KV_Q8_0: return "q8_0";
    }
    return "unknown";
}

int es_kv_type_from_name(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "f32")) return ES_KV_F32;
    if (!strcmp(name, "f16")) return ES_KV_F16;
    if (!strcmp(name, "q8_0")) return ES_KV_Q8_0;
    return -1;
}

void es_kv_row_from_f32(es_kv_type type, const float *src, void *dst, int64_t n) {
    switch (type) {
    case ES_KV_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case ES_KV_F16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n; i++) h[i] = es_fp32_to_fp16(src[i]);
        break;
    }
    case ES_KV_Q8_0: es_type_get(ES_TYPE_Q8_0)->from_float(src, dst, n); break;
    }
}

void es_kv_row_to_f32(es_kv_type type, const void *row, int64_t off, float *dst, int64_t n) {
    switch (type) {
    case ES_KV_F32: memcpy(dst, (const float *)row + off, (size_t)n * sizeof(float)); break;
    case ES_KV_F16: {
        const uint16_t *h = (const uint16_t *)row + off;
        for (int64_t i = 0; i < n; i++) dst[i] = es_fp16_to_fp32(h[i]);
        break;
    }
    case ES_KV_Q8_0: es_type_get(ES_TYPE_Q8_0)->to_float((const es_block_q8_0 *)row + off / ES_QK, dst, n); break;
    }
}

/* ---- portable inner operations ---------------------------------------------------------------- */

static void f16_to_f32_ref(const uint16_t *src, float *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = es_fp16_to_fp32(src[i]);
}

static void q8_to_f32_ref(float d, const int8_t *qs, float *dst) {
    for (int t = 0; t < ES_QK; t++) dst[t] = d * (float)qs[t];
}

/* Four independent partial sums: without -ffast-math the compiler keeps a single chain otherwise. */
static float dot_ref(const float *a, const float *b, int n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        s0 += a[j] * b[j];
        s1 += a[j + 1] * b[j + 1];
        s2 += a[j + 2] * b[j + 2];
        s3 += a[j + 3] * b[j + 3];
    }
    for (; j < n; j++) s0 += a[j] * b[j];
    return (s0 + s1) + (s2 + s3);
}

static void dots_ref(const float *q, int n_q, int hd, const float *k, float scale, float *s, int stride) {
    for (int h = 0; h < n_q; h++) s[(size_t)h * stride] = scale * dot_ref(q + (size_t)h * hd, k, hd);
}

static void axpys_ref(float *o, int n_q, int hd, const float *p, int stride, const float *v) {
    for (int h = 0; h < n_q; h++) {
        const float a = p[(size_t)h * stride];
        float *oh = o + (size_t)h * hd;
        for (int j = 0; j < hd; j++) oh[j] += a * v[j];
    }
}

static float exp_sum_ref(float *x, int n, float m) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    return sum;
}

static void silu_mul_ref(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] * (1.0f / (1.0f + expf(-g[i]))) * u[i];
}

static const es_attn_ops ops_ref = {f16_to_f32_ref, q8_to_f32_ref, dots_ref, axpys_ref, exp_sum_ref, silu_mul_ref};

static const es_attn_ops *ops_for(int hd) {
#if defined(__x86_64__)
    if (hd % 8 == 0 && es_cpu_level_get() >= ES_CPU_AVX2 && es_cpu_level_get() != ES_CPU_NEON) return &es_attn_ops_avx2;
#endif
    (void)hd;
    return &ops_ref;
}

void es_vec_silu_mul(float *g, const float *u, int64_t n) { ops_for(8)->silu_mul(g, u, n); }

/* ---- the kernel ------------------------------------------------------------------------------- */

size_t es_attn_scratch_floats(int n_q, int head_dim, int block_size) {
    (void)block_size;
    /* scores [n_q][CHUNK], running max and sum [n_q] each, one K and one V row */
    return (size_t)n_q * ES_ATTN_CHUNK + 2 * (size_t)n_q + 2 * (size_t)head_dim;
}

/* The f32 values of elements [off, off + hd) of a row: the row itself for f32, else converted into buf. */
static inline const float *row_f32(const es_attn_ops *ops, es_kv_type type, const uint8_t *row, int off, int hd,
                                   float *buf) {
    switch (type) {
    case ES_KV_F32: return (const float *)row + off;
    case ES_KV_F16:
        if (hd % 8 == 0) ops->f16_to_f32((const uint16_t *)row + off, buf, hd);
        else f16_to_f32_ref((const uint16_t *)row + off, buf, hd);
        return buf;
    case ES_KV_Q8_0: {
        const es_block_q8_0 *b = (const es_block_q8_0 *)row + off / ES_QK;
        for (int j = 0; j < hd; j += ES_QK, b++) ops->q8_to_f32(es_fp16_to_fp32(b->d), b->qs, buf + j);
        return buf;
    }
    }
    return buf;
}

static inline size_t slot_off(const es_attn_cache *c, int s) {
    return (size_t)c->table[s / c->block_size] * c->page_bytes + (size_t)(s % c->block_size) * c->row_bytes;
}

void es_attn_group(const es_attn_cache *c, int kv_head, int head_dim, int n_q, const float *q, float scale,
                   int prefix_len, const int32_t *anc, int n_anc, float *out, float *scratch) {
    const es_attn_ops *ops = ops_for(head_dim);
    const int hd = head_dim, CH = ES_ATTN_CHUNK, total = prefix_len + n_anc, off = kv_head * head_dim;
    float *sc = scratch, *mx = sc + (size_t)n_q * CH, *sum = mx + n_q, *kb = sum + n_q, *vb = kb + hd;
    for (int h = 0; h < n_q; h++) {
        mx[h] = -INFINITY;
        sum[h] = 0.0f;
    }
    memset(out, 0, (size_t)n_q * hd * sizeof(float));
    for (int t0 = 0; t0 < total; t0 += CH) {
        const int cnt = total - t0 < CH ? total - t0 : CH;
        /* scores of the chunk for every head of the group: sc[h][i] */
        for (int i = 0; i < cnt; i++) {
            const int t = t0 + i, s = t < prefix_len ? t : anc[t - prefix_len];
            const float *k = row_f32(ops, c->type, c->k + slot_off(c, s), off, hd, kb);
            ops->dots(q, n_q, hd, k, scale, sc + i, CH);
        }
        /* online softmax: new running max, rescale what was accumulated, exponentiate the chunk */
        for (int h = 0; h < n_q; h++) {
            float *sh = sc + (size_t)h * CH;
            float m = mx[h];
            for (int i = 0; i < cnt; i++)
                if (sh[i] > m) m = sh[i];
            if (m != mx[h]) {
                const float corr = mx[h] == -INFINITY ? 0.0f : expf(mx[h] - m);
                if (corr != 1.0f) {
                    float *oh = out + (size_t)h * hd;
                    for (int j = 0; j < hd; j++) oh[j] *= corr;
                    sum[h] *= corr;
                }
                mx[h] = m;
            }
            sum[h] += ops->exp_sum(sh, cnt, m);
        }
        for (int i = 0; i < cnt; i++) {
            const int t = t0 + i, s = t < prefix_len ? t : anc[t - prefix_len];
            const float *v = row_f32(ops, c->type, c->v + slot_off(c, s), off, hd, vb);
            ops->axpys(out, n_q, hd, sc + i, CH, v);
        }
    }
    for (int h = 0; h < n_q; h++) {
        const float inv = 1.0f / sum[h];
        float *oh = out + (size_t)h * hd;
        for (int j = 0; j < hd; j++) oh[j] *= inv;
    }
}
