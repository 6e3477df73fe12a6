/* types.c — the traits table: names, block sizes and scalar (reference) conversions per type. */
#include "kernels/types.h"

#include <math.h>
#include <string.h>
#include <strings.h>

#include "kernels/kquant.h"
#include "util/fp16.h"

static void f32_to_float(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }
static void f32_from_float(const float *src, void *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }

static void f16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = es_fp16_to_fp32(s[i]);
}
static void f16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = es_fp32_to_fp16(src[i]);
}

static void bf16_to_float(const void *src, float *dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = es_bf16_to_fp32(s[i]);
}
static void bf16_from_float(const float *src, void *dst, int64_t n) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = es_fp32_to_bf16(src[i]);
}

static void q8_0_to_float(const void *src, float *dst, int64_t n) {
    const es_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / ES_QK; i++) {
        const float d = es_fp16_to_fp32(b[i].d);
        for (int j = 0; j < ES_QK; j++) dst[i * ES_QK + j] = d * (float)b[i].qs[j];
    }
}

/* Symmetric: d = max|x| / 127, q = round(x / d). */
static void q8_0_from_float(const float *src, void *dst, int64_t n) {
    es_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / ES_QK; i++) {
        const float *x = src + i * ES_QK;
        float amax = 0.0f;
        for (int j = 0; j < ES_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = es_fp32_to_fp16(d);
        for (int j = 0; j < ES_QK; j++) b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void q4_0_to_float(const void *src, float *dst, int64_t n) {
    const es_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / ES_QK; i++) {
        const float d = es_fp16_to_fp32(b[i].d);
        for (int j = 0; j < ES_QK / 2; j++) {
            dst[i * ES_QK + j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
            dst[i * ES_QK + j + ES_QK / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

/* The value of largest magnitude maps to -8 (d = max / -8), so the full 4-bit range is used. */
static void q4_0_from_float(const float *src, void *dst, int64_t n) {
    es_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / ES_QK; i++) {
        const float *x = src + i * ES_QK;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < ES_QK; j++)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = es_fp32_to_fp16(d);
        for (int j = 0; j < ES_QK / 2; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + ES_QK / 2] * id + 8.5f);
            q0 = q0 < 0 ? 0 : q0 > 15 ? 15 : q0;
            q1 = q1 < 0 ? 0 : q1 > 15 ? 15 : q1;
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* Element j of a Q5_0 block as its code 0..31 (types.h). */
static inline int q5_0_code(const es_block_q5_0 *b, uint32_t qh, int j) {
    const int nib = j < ES_QK / 2 ? b->qs[j] & 0x0f : b->qs[j - ES_QK / 2] >> 4;
    return nib | (int)((qh >> j) & 1) << 4;
}

static uint32_t q5_0_qh(const es_block_q5_0 *b) {
    return (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 | (uint32_t)b->qh[3] << 24;
}

static void q5_0_to_float(const void *src, float *dst, int64_t n) {
    const es_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / ES_QK; i++) {
        const float d = es_fp16_to_fp32(b[i].d);
        const uint32_t qh = q5_0_qh(&b[i]);
        for (int j = 0; j < ES_QK; j++) dst[i * ES_QK + j] = d * (float)(q5_0_code(&b[i], qh, j) - 16);
    }
}

void es_q5_0_to_q8_0(const void *src, void *dst, int64_t n) {
    const es_block_q5_0 *b = src;
    es_block_q8_0 *o = dst;
    for (int64_t i = 0; i < n / ES_QK; i++) {
        const uint32_t qh = q5_0_qh(&b[i]);
        o[i].d = b[i].d;
        for (int j = 0; j < ES_QK; j++) o[i].qs[j] = (int8_t)(q5_0_code(&b[i], qh, j) - 16);
    }
}

void es_q5_0_from_float(const float *src, void *dst, int64_t n) {
    es_block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / ES_QK; i++) {
        const float *x = src + i * ES_QK;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < ES_QK; j++)
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = es_fp32_to_fp16(d);
        uint32_t qh = 0;
        memset(b[i].qs, 0, sizeof b[i].qs);
        for (int j = 0; j < ES_QK; j++) {
            int q = (int)(x[j] * id + 16.5f);
            q = q < 0 ? 0 : q > 31 ? 31 : q;
            b[i].qs[j % (ES_QK / 2)] |= (uint8_t)((q & 0x0f) << (j < ES_QK / 2 ? 0 : 4));
            qh |= (uint32_t)(q >> 4) << j;
        }
        for (int k = 0; k < 4; k++) b[i].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

static const es_type_traits k_traits[ES_TYPE_COUNT] = {
    [ES_TYPE_F32] = {"f32", 1, 4, true, f32_to_float, f32_from_float},
    [ES_TYPE_F16] = {"f16", 1, 2, true, f16_to_float, f16_from_float},
    [ES_TYPE_BF16] = {"bf16", 1, 2, true, bf16_to_float, bf16_from_float},
    [ES_TYPE_Q8_0] = {"q8_0", ES_QK, sizeof(es_block_q8_0), true, q8_0_to_float, q8_0_from_float},
    [ES_TYPE_Q4_0] = {"q4_0", ES_QK, sizeof(es_block_q4_0), true, q4_0_to_float, q4_0_from_float},
    [ES_TYPE_Q4_K] = {"q4_k", ES_QK_K, sizeof(es_block_q4_k), true, es_q4_k_to_float, es_q4_k_from_float},
    [ES_TYPE_Q5_K] = {"q5_k", ES_QK_K, sizeof(es_block_q5_k), true, es_q5_k_to_float, es_q5_k_from_float},
    [ES_TYPE_Q6_K] = {"q6_k", ES_QK_K, sizeof(es_block_q6_k), true, es_q6_k_to_float, es_q6_k_from_float},
    /* Dequantised (embedding rows); matrices are widened to Q8_0 at load (types.h). */
    [ES_TYPE_Q5_0] = {"q5_0", ES_QK, sizeof(es_block_q5_0), true, q5_0_to_float, NULL},
    /* Known to the GGUF reader (sizes), not yet computable here. */
    [ES_TYPE_Q4_1] = {"q4_1", 32, 20, false, NULL, NULL},
    [ES_TYPE_Q5_1] = {"q5_1", 32, 24, false, NULL, NULL},
    [ES_TYPE_Q8_1] = {"q8_1", 32, 36, false, NULL, NULL},
    [ES_TYPE_Q2_K] = {"q2_k", 256, 84, false, NULL, NULL},
    [ES_TYPE_Q3_K] = {"q3_k", 256, 110, false, NULL, NULL},
    [ES_TYPE_Q8_K] = {"q8_k", 256, 292, false, NULL, NULL},
    [ES_TYPE_I8] = {"i8", 1, 1, false, NULL, NULL},
    [ES_TYPE_I16] = {"i16", 1, 2, false, NULL, NULL},
    [ES_TYPE_I32] = {"i32", 1, 4, false, NULL, NULL},
    [ES_TYPE_I64] = {"i64", 1, 8, false, NULL, NULL},
    [ES_TYPE_F64] = {"f64", 1, 8, false, NULL, NULL},
};

const es_type_traits *es_type_get(uint32_t type) {
    if (type >= ES_TYPE_COUNT || !k_traits[type].name) return NULL;
    return &k_traits[type];
}

const char *es_type_name(uint32_t type) {
    const es_type_traits *t = es_type_get(type);
    return t ? t->name : "unknown";
}

int es_type_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < ES_TYPE_COUNT; i++)
        if (k_traits[i].name && k_traits[i].from_float && !strcasecmp(name, k_traits[i].name)) return i;
    return -1;
}

size_t es_row_size(uint32_t type, int64_t n) {
    const es_type_traits *t = es_type_get(type);
    if (!t || n < 0 || n % t->blck_size != 0) return 0;
    return (size_t)(n / t->blck_size) * t->type_size;
}
