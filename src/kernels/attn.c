/* attn.c — online-softmax attention over a paged KV cache (see attn.h), the cache row formats, and
 * the portable versions of the inner operations (attn_impl.h). */
#include "kernels/attn.h"

#include <math.h>
#include <string.h>

#include "kernels/attn_impl.h"
#include "kernels/matmul.h"
#include "kernels/types.h"
#include "util/fp16.h"

/* Slots per online-softmax step (ES_ATTN_CHUNK, attn_impl.h). Chunks are aligned to multiples of
 * ES_ATTN_CHUNK in the attended list (prefix slots then ancestors), whatever split between prefix and
 * ancestors a token has, so a token decoded alone and the same token verified in a batch do the same
 * arithmetic. */

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

static void qk_ref(const float *q, int nr, int hd, const float *kt, float scale, float *s) {
    for (int r = 0; r < nr; r++)
        for (int i = 0; i < ES_ATTN_CHUNK; i++) {
            float acc = 0.0f;
            for (int d = 0; d < hd; d++) acc += q[(size_t)r * hd + d] * kt[(size_t)d * ES_ATTN_CHUNK + i];
            s[(size_t)r * ES_ATTN_CHUNK + i] = scale * acc;
        }
}

static void transpose_ref(const float *kr, int cnt, int hd, float *kt) {
    for (int d = 0; d < hd; d++)
        for (int i = 0; i < ES_ATTN_CHUNK; i++) kt[(size_t)d * ES_ATTN_CHUNK + i] = i < cnt ? kr[(size_t)i * hd + d] : 0.0f;
}

static void pv_ref(float *o, int nr, int hd, const float *p, int cnt, const float *const *v) {
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < hd; j++) {
            float acc = o[(size_t)r * hd + j];
            for (int i = 0; i < cnt; i++) acc += p[(size_t)r * ES_ATTN_CHUNK + i] * v[i][j];
            o[(size_t)r * hd + j] = acc;
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

static const es_attn_ops ops_ref = {f16_to_f32_ref, q8_to_f32_ref, transpose_ref, qk_ref, pv_ref, exp_sum_ref, silu_mul_ref};

static const es_attn_ops *ops_for(int hd) {
#if defined(__x86_64__)
    const es_cpu_level l = es_cpu_level_get();
    if (hd % 16 == 0 && l == ES_CPU_AVX512) return &es_attn_ops_avx512;
    if (hd % 8 == 0 && (l == ES_CPU_AVX2 || l == ES_CPU_AVX512)) return &es_attn_ops_avx2;
#endif
    (void)hd;
    return &ops_ref;
}

void es_vec_silu_mul(float *g, const float *u, int64_t n) { ops_for(16)->silu_mul(g, u, n); }

/* ---- the kernel ------------------------------------------------------------------------------- */

/* floats one V row pointer takes in the scratch area */
#define PTR_FLOATS ((sizeof(const float *) + sizeof(float) - 1) / sizeof(float))

size_t es_attn_multi_scratch_floats(int n_rows, int head_dim) {
    /* V row pointers, K chunk as rows and transposed, V chunk [CHUNK][head_dim], one row; per query
     * row: scores [CHUNK], running max, running sum. Rounded to 64 bytes so per-thread scratch areas
     * laid end to end keep the pointers aligned. */
    const size_t n = ES_ATTN_CHUNK * PTR_FLOATS + 3 * (size_t)ES_ATTN_CHUNK * head_dim +
                     (size_t)head_dim + (size_t)n_rows * (ES_ATTN_CHUNK + 2);
    return (n + 15) / 16 * 16;
}

size_t es_attn_scratch_floats(int n_q, int head_dim, int block_size) {
    (void)block_size;
    return es_attn_multi_scratch_floats(n_q, head_dim);
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

/* Positions [t0, t0 + cnt) of an attended list (slots [0, P), then anc[]) loaded as f32: K transposed
 * into kt[d][i] (columns cnt.. zero, so the score kernel may compute whole chunks), V rows pointed to
 * by vp[i] (the cache row itself for f32, else converted into vb). */
typedef struct chunk_buf {
    float *kr, *kt, *vb, *row;
    const float **vp;
} chunk_buf;

static void load_chunk(const es_attn_ops *ops, const es_attn_cache *c, int off, int hd, int P, const int32_t *anc,
                       int t0, int cnt, chunk_buf *b) {
    for (int i = 0; i < cnt; i++) {
        const int t = t0 + i, s = t < P ? t : anc[t - P];
        const size_t so = slot_off(c, s);
        float *kr = b->kr + (size_t)i * hd;
        const float *k = row_f32(ops, c->type, c->k + so, off, hd, kr);
        if (k != kr) memcpy(kr, k, (size_t)hd * sizeof(float));
        b->vp[i] = row_f32(ops, c->type, c->v + so, off, hd, b->vb + (size_t)i * hd);
    }
    ops->transpose(b->kr, cnt, hd, b->kt);
}

/* One online-softmax step of nr query rows (q, out: hd apart; sc: their scores, mx / sum: their state)
 * over a loaded chunk of cnt slots. */
static void chunk_step(const es_attn_ops *ops, const float *q, float *out, int nr, int hd, float scale,
                       const chunk_buf *b, int cnt, float *sc, float *mx, float *sum) {
    const int CH = ES_ATTN_CHUNK;
    ops->qk(q, nr, hd, b->kt, scale, sc);
    for (int h = 0; h < nr; h++) {
        float *sh = sc + (size_t)h * CH;
        float m = mx[h];
        for (int i = 0; i < cnt; i++)
            if (sh[i] > m) m = sh[i];
        if (m != mx[h]) { /* new running max: rescale what was accumulated */
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
    ops->pv(out, nr, hd, sc, cnt, b->vp);
}

void es_attn_multi(const es_attn_cache *c, int kv_head, int head_dim, int n_q, float scale, int prefix_len,
                   int n_common, const es_attn_query *tok, int n_tok, float *scratch) {
    const es_attn_ops *ops = ops_for(head_dim);
    const int hd = head_dim, CH = ES_ATTN_CHUNK, off = kv_head * head_dim, P = prefix_len;
    chunk_buf b;
    b.vp = (const float **)(void *)scratch;
    b.kr = scratch + CH * PTR_FLOATS;
    b.kt = b.kr + (size_t)CH * hd;
    b.vb = b.kt + (size_t)CH * hd;
    b.row = b.vb + (size_t)CH * hd;
    float *sc = b.row + hd, *mx = sc + (size_t)n_tok * n_q * CH,
          *sum = mx + (size_t)n_tok * n_q;
    for (int r = 0; r < n_tok * n_q; r++) {
        mx[r] = -INFINITY;
        sum[r] = 0.0f;
    }
    for (int k = 0; k < n_tok; k++) memset(tok[k].out, 0, (size_t)n_q * hd * sizeof(float));
    /* chunks wholly inside the part every token attends: loaded once, applied to every token */
    const int shared_end = n_tok > 1 ? (P + n_common) / CH * CH : 0;
    for (int t0 = 0; t0 < shared_end; t0 += CH) {
        load_chunk(ops, c, off, hd, P, tok[0].anc, t0, CH, &b);
        for (int k = 0; k < n_tok; k++)
            chunk_step(ops, tok[k].q, tok[k].out, n_q, hd, scale, &b, CH, sc + (size_t)k * n_q * CH, mx + k * n_q,
                       sum + k * n_q);
    }
    for (int k = 0; k < n_tok; k++) { /* the rest of each token's own list */
        const int total = P + tok[k].n_anc;
        for (int t0 = shared_end; t0 < total; t0 += CH) {
            const int cnt = total - t0 < CH ? total - t0 : CH;
            load_chunk(ops, c, off, hd, P, tok[k].anc, t0, cnt, &b);
            chunk_step(ops, tok[k].q, tok[k].out, n_q, hd, scale, &b, cnt, sc + (size_t)k * n_q * CH, mx + k * n_q,
                       sum + k * n_q);
        }
    }
    for (int r = 0; r < n_tok * n_q; r++) {
        const float inv = 1.0f / sum[r];
        float *oh = tok[r / n_q].out + (size_t)(r % n_q) * hd;
        for (int j = 0; j < hd; j++) oh[j] *= inv;
    }
}

void es_attn_group(const es_attn_cache *c, int kv_head, int head_dim, int n_q, const float *q, float scale,
                   int prefix_len, const int32_t *anc, int n_anc, float *out, float *scratch) {
    const es_attn_query t = {q, out, anc, n_anc};
    es_attn_multi(c, kv_head, head_dim, n_q, scale, prefix_len, 0, &t, 1, scratch);
}
