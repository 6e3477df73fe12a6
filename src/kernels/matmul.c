/* matmul.c — CPU level detection, the scalar reference kernels, activation quantisation and the
 * threaded driver of es_matmul. The SIMD kernels live in matmul_avx2.c / matmul_avx512.c and
 * follow the arithmetic contract of matmul_impl.h. */
#include "kernels/matmul.h"

#include <math.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul_impl.h"
#include "kernels/repack.h"
#include "util/err.h"
#include "util/fp16.h"

/* ---------------------------------------------------------------------------------------------
 * CPU level. The best level is probed once (pthread_once); the level in use starts as that and is
 * changed only by es_cpu_limit (the CLI applies $EDGESPEC_CPU with it) and the test setters. */

typedef struct cpu_state {
    es_cpu_level best; /* what the hardware (and OS) can run */
    bool vnni_hw;      /* the int8 dot-product instruction: VNNI on x86-64, SDOT on aarch64 */
    _Atomic int level; /* in use */
    _Atomic bool vnni; /* in use (only meaningful at ES_CPU_AVX512 / ES_CPU_NEON) */
    bool amd;          /* an AMD core: K-quant batches never use the decode buffer (ES_KQ_DECODE_ROWS) */
    _Atomic int kq_decode; /* es_qx.kq_decode: in use */
} cpu_state;

static cpu_state g_cpu; /* the process-wide detected-once value (see matmul.h) */
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static void cpu_detect(void) {
    es_cpu_level best = ES_CPU_SCALAR;
    bool vnni = false;
#if defined(__x86_64__)
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the YMM/ZMM state (XGETBV). */
    /* F16C is read from CPUID directly: clang 14 does not know the "f16c" feature string. Every CPU
       with AVX2 + FMA has it in practice, but the AVX2 kernels use it, so it is checked. */
    unsigned a = 0, b = 0, c = 0, d = 0;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c)
        best = ES_CPU_AVX2;
    if (best == ES_CPU_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        best = ES_CPU_AVX512;
    vnni = best == ES_CPU_AVX512 && __builtin_cpu_supports("avx512vnni");
    g_cpu.amd = __builtin_cpu_is("amd");
#elif defined(__aarch64__)
    /* Advanced SIMD is part of the AArch64 base ISA; the dot-product extension (optional from
     * Armv8.2) is reported by the kernel in HWCAP. */
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
    best = ES_CPU_NEON;
    vnni = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
    g_cpu.best = best;
    g_cpu.vnni_hw = vnni;
    atomic_store(&g_cpu.level, (int)best);
    atomic_store(&g_cpu.vnni, vnni);
    atomic_store(&g_cpu.kq_decode, g_cpu.amd ? 0 : ES_KQ_DECODE_ROWS);
}

static cpu_state *cpu(void) {
    pthread_once(&g_cpu_once, cpu_detect);
    return &g_cpu;
}

es_cpu_level es_cpu_level_get(void) { return (es_cpu_level)atomic_load(&cpu()->level); }

const char *es_cpu_level_name(es_cpu_level l) {
    switch (l) {
    case ES_CPU_SCALAR: return "scalar";
    case ES_CPU_AVX2: return "avx2";
    case ES_CPU_AVX512: return "avx512";
    case ES_CPU_NEON: return "neon";
    }
    return "unknown";
}

es_cpu_level es_cpu_level_set(es_cpu_level l) {
    cpu_state *c = cpu();
    /* x86 levels form a chain scalar < avx2 < avx512, aarch64 ones scalar < neon; a level of the
     * other architecture means the best this one has. */
    es_cpu_level v = l;
#if defined(__aarch64__)
    if (v != ES_CPU_SCALAR) v = c->best;
#else
    if (v == ES_CPU_NEON || v > c->best) v = c->best;
#endif
    atomic_store(&c->level, (int)v);
    return v;
}

es_status es_cpu_limit(const char *spec, es_err *err) {
    if (!spec || !*spec) return ES_OK;
    cpu_state *c = cpu();
    es_cpu_level want = c->best;
    bool vnni = atomic_load(&c->vnni);
    if (!strcmp(spec, "scalar")) want = ES_CPU_SCALAR;
#if defined(__x86_64__)
    else if (!strcmp(spec, "avx2")) want = ES_CPU_AVX2;
    else if (!strcmp(spec, "avx512")) want = ES_CPU_AVX512;
    else if (!strcmp(spec, "avx512-novnni")) { want = ES_CPU_AVX512; vnni = false; }
    else if (!strcmp(spec, "neon") || !strcmp(spec, "neon-nodot")) { /* the other architecture's names: no limit */ }
#elif defined(__aarch64__)
    else if (!strcmp(spec, "neon")) want = ES_CPU_NEON;
    else if (!strcmp(spec, "neon-nodot")) vnni = false;
    else if (!strcmp(spec, "avx2") || !strcmp(spec, "avx512") || !strcmp(spec, "avx512-novnni")) { }
#endif
    else
        return es_fail(err, ES_ERR_INVALID_ARG, "unknown CPU level '%s' (scalar, avx2, avx512, avx512-novnni, neon, neon-nodot)",
                       spec);
    /* only ever lowers: on aarch64 the chain is scalar < neon */
    const es_cpu_level cur = (es_cpu_level)atomic_load(&c->level);
    if (want < cur) atomic_store(&c->level, (int)want);
    if (!vnni) atomic_store(&c->vnni, false);
    return ES_OK;
}

bool es_cpu_vnni_get(void) { return atomic_load(&cpu()->vnni); }

bool es_cpu_vnni_set(bool enable) {
    cpu_state *c = cpu();
    bool v = enable && c->vnni_hw;
    atomic_store(&c->vnni, v);
    return v;
}

int es_cpu_kq_decode_set(int rows) {
    cpu_state *c = cpu();
    const int v = rows >= 0 ? rows : c->amd ? 0 : ES_KQ_DECODE_ROWS;
    atomic_store(&c->kq_decode, v);
    return v;
}

static const es_mm_kernels *kernels_for_level(void) {
    cpu_state *c = cpu();
    switch ((es_cpu_level)atomic_load(&c->level)) {
#if defined(__x86_64__)
    case ES_CPU_AVX512: return atomic_load(&c->vnni) ? &es_mm_avx512_vnni : &es_mm_avx512;
    case ES_CPU_AVX2: return &es_mm_avx2;
#elif defined(__aarch64__)
    case ES_CPU_NEON: return atomic_load(&c->vnni) ? &es_mm_neon_dotprod : &es_mm_neon;
#endif
    default: return &es_mm_ref;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Scalar reference kernels: the definition of the results (see matmul_impl.h) and the path on
 * CPUs without AVX2. */

/* Quantises x[nb * 32] to int8 per block (see matmul_impl.h). nearbyintf rounds half to even in
 * the default rounding mode, like cvtps2dq in the SIMD versions. */
static void quant_row_ref(const float *x, int64_t nb, int64_t stride, int32_t c, int8_t *qs, float *d,
                          int32_t *corr) {
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * ES_QK;
        float amax = 0.0f;
        for (int i = 0; i < ES_QK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        int32_t sum = 0;
        for (int i = 0; i < ES_QK; i++) {
            float v = nearbyintf(xb[i] * id);
            /* only non-finite inputs land outside [-127, 127]; keep the cast defined */
            int q = v >= -127.0f && v <= 127.0f ? (int)v : 0;
            qs[b * stride * ES_QK + i] = (int8_t)q;
            sum += q;
        }
        d[b * stride] = db;
        corr[b * stride] = ES_QX_MAGIC - c * sum;
    }
}

/* The K-quants' activations, quantised as llama.cpp's Q8_K does (one scale per 256 values, and that
 * scale's exact arithmetic: iscale = 127 / max|x|, q = nearbyint(x * iscale), d = 1 / iscale), then
 * stored as eight of our 32-value blocks sharing d, with each block's sums for fs and k16 (see
 * es_quant_row_k_fn). The kernels are unchanged; their integer dot products become llama.cpp's, so
 * a near tie in a real model's logits falls the same way as in llama.cpp (with a scale per 32 values,
 * as for Q8_0, the massive activations of a Qwen2 model's first position put its logits ~10 apart).
 * The SIMD levels (quant_row_k_avx2, _avx512, _neon) give the same bits. */
static void quant_row_q8k_ref(const float *x, int64_t nb, int64_t stride, int8_t *qs, float *d, int32_t *corr,
                              float *fs, int32_t *k16) {
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const float *xs = x + sb * 8 * ES_QK;
        float amax = 0.0f;
        for (int i = 0; i < 8 * ES_QK; i++) amax = fmaxf(amax, fabsf(xs[i]));
        const float iscale = amax != 0.0f ? 127.0f / amax : 0.0f, db = amax != 0.0f ? 1.0f / iscale : 0.0f;
        for (int64_t b = sb * 8; b < sb * 8 + 8; b++) {
            const float *xb = x + b * ES_QK;
            int32_t half[2] = {0, 0};
            for (int i = 0; i < ES_QK; i++) {
                /* round half to even by the 1.5 * 2^23 trick, as llama.cpp's nearest_int (and as
                   nearbyintf, but vectorisable); ISO C mode keeps the product and the sum unfused */
                const float p = xb[i] * iscale, v = (p + 12582912.0f) - 12582912.0f;
                /* only a non-finite input lands outside [-127, 127]; keep the cast defined */
                const int q = v >= -127.0f && v <= 127.0f ? (int)v : 0;
                qs[b * stride * ES_QK + i] = (int8_t)q;
                half[i / 16] += q;
            }
            d[b * stride] = db;
            corr[b * stride] = ES_QX_MAGIC; /* (the K-quant kernels take their sums from fs and k16) */
            fs[b * stride] = db * (float)(half[0] + half[1]);
            k16[2 * b * stride] = -32 * half[0];
            k16[2 * b * stride + 1] = -32 * half[1];
        }
    }
}

static void q8_0_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    const int64_t nb = qx->nb, rows = w->rows;
    for (int64_t r = r0; r < r1; r++) {
        const es_block_q8_0 *wb = (const es_block_q8_0 *)((const uint8_t *)w->data + (size_t)r * w->row_bytes);
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const int8_t *xb = qx->qs + (b * n + j) * ES_QK;
                int32_t s = 0;
                for (int i = 0; i < ES_QK; i++) s += (int32_t)wb[b].qs[i] * xb[i];
                acc = fmaf((float)s, es_fp16_to_fp32(wb[b].d) * qx->d[b * n + j], acc);
            }
            y[j * rows + r] = acc;
        }
    }
}

static void q4_0_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    const int64_t nb = qx->nb, rows = w->rows;
    for (int64_t r = r0; r < r1; r++) {
        const es_block_q4_0 *wb = (const es_block_q4_0 *)((const uint8_t *)w->data + (size_t)r * w->row_bytes);
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const int8_t *xb = qx->qs + (b * n + j) * ES_QK;
                int32_t s = 0;
                for (int i = 0; i < ES_QK / 2; i++) {
                    s += ((int32_t)(wb[b].qs[i] & 0x0f) - 8) * xb[i];
                    s += ((int32_t)(wb[b].qs[i] >> 4) - 8) * xb[i + ES_QK / 2];
                }
                acc = fmaf((float)s, es_fp16_to_fp32(wb[b].d) * qx->d[b * n + j], acc);
            }
            y[j * rows + r] = acc;
        }
    }
}

/* Q5_0 on the file layout: the reference only (models widen such matrices to Q8_0 or repack them
 * to X16, kernels/types.h); the product is that of the widened Q8_0 matrix, bit for bit. */
static void q5_0_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    const int64_t nb = qx->nb, rows = w->rows;
    for (int64_t r = r0; r < r1; r++) {
        const es_block_q5_0 *wb = (const es_block_q5_0 *)((const uint8_t *)w->data + (size_t)r * w->row_bytes);
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const int8_t *xb = qx->qs + (b * n + j) * ES_QK;
                uint32_t qh;
                memcpy(&qh, wb[b].qh, 4);
                int32_t s = 0;
                for (int i = 0; i < ES_QK / 2; i++) {
                    const int32_t lo = (int32_t)(wb[b].qs[i] & 0x0f) | (int32_t)(((qh >> i) & 1u) << 4);
                    const int32_t hi = (int32_t)(wb[b].qs[i] >> 4) | (int32_t)(((qh >> (i + ES_QK / 2)) & 1u) << 4);
                    s += (lo - 16) * xb[i] + (hi - 16) * xb[i + ES_QK / 2];
                }
                acc = fmaf((float)s, es_fp16_to_fp32(wb[b].d) * qx->d[b * n + j], acc);
            }
            y[j * rows + r] = acc;
        }
    }
}

/* Float weights: the row is converted to f32 in chunks of FCHUNK (so F16/BF16 are decoded once per
 * row, not once per activation row), then dotted in order into one f32 accumulator per (r, j). */
#define FCHUNK 256

static void float_rows_ref(const es_mat *w, const float *x, float *y, int64_t n, int64_t r0, int64_t r1) {
    const int64_t cols = w->cols, rows = w->rows;
    enum { MAXJ = 64 };
    float wf[FCHUNK];
    float acc[MAXJ];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        for (int64_t j0 = 0; j0 < n; j0 += MAXJ) {
            const int64_t nj = n - j0 < MAXJ ? n - j0 : MAXJ;
            for (int64_t j = 0; j < nj; j++) acc[j] = 0.0f;
            for (int64_t c0 = 0; c0 < cols; c0 += FCHUNK) {
                const int64_t nc = cols - c0 < FCHUNK ? cols - c0 : FCHUNK;
                const float *src = wf;
                if (w->type == ES_TYPE_F32) src = (const float *)wr + c0;
                else if (w->type == ES_TYPE_F16)
                    for (int64_t i = 0; i < nc; i++) wf[i] = es_fp16_to_fp32(((const uint16_t *)wr)[c0 + i]);
                else
                    for (int64_t i = 0; i < nc; i++) wf[i] = es_bf16_to_fp32(((const uint16_t *)wr)[c0 + i]);
                for (int64_t j = 0; j < nj; j++) {
                    const float *xr = x + (j0 + j) * cols + c0;
                    float a = acc[j];
                    for (int64_t i = 0; i < nc; i++) a += src[i] * xr[i];
                    acc[j] = a;
                }
            }
            for (int64_t j = 0; j < nj; j++) y[(j0 + j) * rows + r] = acc[j];
        }
    }
}

static void f32_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                         int64_t r1) {
    float_rows_ref(w, x, y, n, r0, r1);
}

const es_mm_kernels es_mm_ref = {
    .f32 = f32_rows_ref,
    .f16 = f32_rows_ref,
    .bf16 = f32_rows_ref,
    .q8_0 = q8_0_rows_ref,
    .q4_0 = q4_0_rows_ref,
    .q5_0 = q5_0_rows_ref,
    .q8_0_x16 = es_x16_rows_ref,
    .q4_0_x16 = es_x16_rows_ref,
    .q5_0_x16 = es_x16_rows_ref,
    .q4_k = es_q4_k_rows_ref,
    .q5_k = es_q5_k_rows_ref,
    .q6_k = es_q6_k_rows_ref,
    .q4_k_x16 = es_q4_k_rows_ref,
    .q5_k_x16 = es_q5_k_rows_ref,
    .q6_k_x16 = es_q6_k_rows_ref,
    .quant_row = quant_row_ref,
    .quant_row_k = quant_row_q8k_ref,
};

/* ---------------------------------------------------------------------------------------------
 * Scratch: the quantised activations, five 64-byte aligned arrays (see es_qx): qs [n][cols] int8,
 * d, corr and fs [n][nb] 4 bytes each, k16 [n][nb][2] int32. */

#define ALIGN64(v) (((v) + 63) & ~(size_t)63)

size_t es_matmul_scratch_size(int64_t n, int64_t cols) {
    if (n <= 0 || cols <= 0) return 64;
    uint64_t nc, nb4;
    if (!__builtin_mul_overflow((uint64_t)n, (uint64_t)cols, &nc) &&
        !__builtin_mul_overflow((uint64_t)n, (uint64_t)((cols + ES_QK - 1) / ES_QK) * 4, &nb4) &&
        nc < SIZE_MAX / 4 && nb4 < SIZE_MAX / 4)
        return 64 + ALIGN64((size_t)nc) + 5 * ALIGN64((size_t)nb4);
    return SIZE_MAX; /* no caller can provide it; the loader's size checks fail first */
}

/* ---------------------------------------------------------------------------------------------
 * The threaded driver. Rows are handed out dynamically in chunks of whole row groups, so a thread
 * slowed down by other work on the machine does not hold the region up; which thread computes a
 * row does not change its value. */

typedef struct mm_part {
    const es_mat *w;
    float *y;
    es_mm_rows_fn fn;
    int64_t chunk_rows; /* a multiple of ES_MM_ROW_ALIGN */
} mm_part;

typedef struct mm_task {
    const float *x;
    es_qx qx;
    int64_t n;
    int m;                                 /* matrices */
    mm_part part[ES_MATMUL_MULTI_MAX];
    int64_t first_chunk[ES_MATMUL_MULTI_MAX + 1]; /* chunk numbers of part i: [first_chunk[i], first_chunk[i+1]) */
    _Atomic int64_t next;                  /* the next chunk to hand out */
} mm_task;

static void mm_worker(void *ud, int ith, int nth) {
    mm_task *t = ud;
    int i = 0;
    for (;;) {
        const int64_t c = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (c >= t->first_chunk[t->m]) break;
        while (c >= t->first_chunk[i + 1]) i++; /* chunks are handed out in increasing order */
        const mm_part *p = &t->part[i];
        const int64_t r0 = (c - t->first_chunk[i]) * p->chunk_rows;
        const int64_t r1 = r0 + p->chunk_rows < p->w->rows ? r0 + p->chunk_rows : p->w->rows;
        p->fn(p->w, t->x, &t->qx, p->y, t->n, r0, r1);
    }
}

/* Activation quantisation, rows split across the threads. */
typedef struct quant_task {
    es_quant_row_fn quant_row;     /* Q8_0 / Q4_0 */
    es_quant_row_k_fn quant_row_k; /* the K-quants: also writes fs and k16; c unused */
    const float *x;
    int64_t cols, nb, n;
    int32_t c;
    int8_t *qs; /* the es_qx arrays */
    float *d, *fs;
    int32_t *corr, *k16;
} quant_task;

static void quant_worker(void *ud, int ith, int nth) {
    quant_task *q = ud;
    int64_t j0, j1;
    es_split_range(q->n, ith, nth, &j0, &j1);
    for (int64_t j = j0; j < j1; j++) {
        const float *x = q->x + j * q->cols;
        if (q->quant_row_k)
            q->quant_row_k(x, q->nb, q->n, q->qs + j * ES_QK, q->d + j, q->corr + j, q->fs + j, q->k16 + 2 * j);
        else
            q->quant_row(x, q->nb, q->n, q->c, q->qs + j * ES_QK, q->d + j, q->corr + j);
    }
}

/* How a weight type wants its activations: 0 f32 as they are, else the correction multiplier c of
 * the int8 quantisation + 1000 for the K-quants (which also need the extra sums). */
static int act_class(uint32_t type) {
    switch (type) {
    case ES_TYPE_Q8_0: return 128;
    case ES_TYPE_Q4_0: return 8;
    case ES_TYPE_Q5_0: return 16;
    case ES_TYPE_Q4_K: case ES_TYPE_Q5_K: case ES_TYPE_Q6_K: return 1000;
    default: return 0;
    }
}

/* Quantises x[n][cols] for activation class cls (!= 0) with table k into scratch (the five arrays
 * of es_matmul_scratch_size's layout), split across tp's threads when tp is not NULL. cols is a
 * multiple of 32 (of 256 for the K-quants). */
static es_qx quantize(const es_mm_kernels *k, int cls, es_threadpool *tp, const float *x, int64_t n, int64_t cols,
                      void *scratch) {
    const int64_t nb = cols / ES_QK;
    uint8_t *s = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    const size_t a = ALIGN64((size_t)(n * nb) * 4);
    quant_task q = {.x = x, .cols = cols, .nb = nb, .n = n, .c = cls == 1000 ? 0 : cls};
    q.qs = (int8_t *)s;
    q.d = (float *)(s + ALIGN64((size_t)(n * cols)));
    q.corr = (int32_t *)((uint8_t *)q.d + a);
    if (cls == 1000) {
        q.quant_row_k = k->quant_row_k ? k->quant_row_k : es_mm_ref.quant_row_k;
        q.fs = (float *)((uint8_t *)q.corr + a);
        q.k16 = (int32_t *)((uint8_t *)q.fs + a);
    } else {
        q.quant_row = k->quant_row;
    }
    if (tp) es_threadpool_run(tp, quant_worker, &q);
    else quant_worker(&q, 0, 1);
    return (es_qx){.qs = q.qs, .d = q.d, .corr = q.corr, .fs = q.fs, .k16 = q.k16, .nb = nb, .n = n,
                   .kq_decode = atomic_load(&cpu()->kq_decode)};
}

bool es_qx_quantize(es_threadpool *tp, uint32_t type, const float *x, int64_t n, int64_t cols, void *scratch,
                    es_qx *qx) {
    const int cls = act_class(type);
    if (cls == 0 || n < 1 || cols < 1 || cols % (cls == 1000 ? ES_QK_K : ES_QK) != 0) return false;
    *qx = quantize(kernels_for_level(), cls, tp, x, n, cols, scratch);
    return true;
}

/* The kernel of table k for a weight type; NULL if the table has none (a level may leave a type to
 * the scalar reference while its SIMD version does not exist yet) or the type is not supported. */
static es_mm_rows_fn rows_fn(const es_mm_kernels *k, uint32_t type, uint32_t layout) {
    if (layout == ES_LAYOUT_X16) {
        switch (type) {
        case ES_TYPE_Q8_0: return k->q8_0_x16;
        case ES_TYPE_Q4_0: return k->q4_0_x16;
        case ES_TYPE_Q5_0: return k->q5_0_x16;
        case ES_TYPE_Q4_K: return k->q4_k_x16;
        case ES_TYPE_Q5_K: return k->q5_k_x16;
        case ES_TYPE_Q6_K: return k->q6_k_x16;
        default: return NULL;
        }
    }
    if (layout != ES_LAYOUT_ROWS) return NULL;
    switch (type) {
    case ES_TYPE_F32: return k->f32;
    case ES_TYPE_F16: return k->f16;
    case ES_TYPE_BF16: return k->bf16;
    case ES_TYPE_Q8_0: return k->q8_0;
    case ES_TYPE_Q4_0: return k->q4_0;
    case ES_TYPE_Q5_0: return k->q5_0;
    case ES_TYPE_Q4_K: return k->q4_k;
    case ES_TYPE_Q5_K: return k->q5_k;
    case ES_TYPE_Q6_K: return k->q6_k;
    default: return NULL;
    }
}

/* The K-quant kernel of the level in use from the separate K-quant tables (see matmul_impl.h), or
 * NULL (not a K-quant, or no SIMD kernel for it at this level). */
static es_mm_rows_fn kquant_fn(uint32_t type) {
    const int i = type == ES_TYPE_Q4_K ? 0 : type == ES_TYPE_Q5_K ? 1 : type == ES_TYPE_Q6_K ? 2 : -1;
    if (i < 0) return NULL;
#if defined(__x86_64__)
    cpu_state *c = cpu();
    switch ((es_cpu_level)atomic_load(&c->level)) {
    case ES_CPU_AVX512: return atomic_load(&c->vnni) ? es_kq_avx512_vnni[i] : es_kq_avx512[i];
    case ES_CPU_AVX2: return es_kq_avx2[i];
    default: break;
    }
#elif defined(__aarch64__)
    cpu_state *c = cpu();
    if ((es_cpu_level)atomic_load(&c->level) == ES_CPU_NEON)
        return atomic_load(&c->vnni) ? es_kq_neon_dotprod[i] : es_kq_neon[i];
#endif
    return NULL;
}

static void fill_nan(float *y, int64_t n, int64_t rows) {
    for (int64_t i = 0; i < n * rows; i++) y[i] = NAN;
}

/* The kernel for w at level k (falling back to the reference), or NULL if w cannot be multiplied. */
static es_mm_rows_fn pick(const es_mm_kernels *k, const es_mat *w) {
    es_mm_rows_fn fn = rows_fn(k, w->type, w->layout);
    if (!fn && w->layout == ES_LAYOUT_ROWS) fn = kquant_fn(w->type);
    if (!fn) fn = rows_fn(&es_mm_ref, w->type, w->layout); /* a level without its own kernel for the type */
    const size_t need = es_row_size(w->type, w->cols);
    if (w->cols <= 0 || need == 0 || w->row_bytes < need) return NULL;
    return fn;
}

void es_matmul(es_threadpool *tp, float *y, const es_mat *w, const float *x, int64_t n, void *scratch) {
    es_matmul_multi(tp, 1, &y, &w, x, n, scratch);
}

void es_matmul_multi(es_threadpool *tp, int m, float *const ys[], const es_mat *const ws[], const float *x, int64_t n,
                     void *scratch) {
    if (n <= 0 || m <= 0) return;
    if (m > ES_MATMUL_MULTI_MAX) {
        es_matmul_multi(tp, ES_MATMUL_MULTI_MAX, ys, ws, x, n, scratch);
        es_matmul_multi(tp, m - ES_MATMUL_MULTI_MAX, ys + ES_MATMUL_MULTI_MAX, ws + ES_MATMUL_MULTI_MAX, x, n, scratch);
        return;
    }
    const int64_t cols = ws[0]->cols;
    const int cls = act_class(ws[0]->type);
    for (int i = 1; i < m; i++)
        if (ws[i]->cols != cols || act_class(ws[i]->type) != cls) {
            /* the matrices that share ws[0]'s input format in one region, then the others (a Q5_0 q/k
               beside a Q8_0 v: AWQ-style files mix them), each group sharing what it can */
            float *ya[ES_MATMUL_MULTI_MAX], *yb[ES_MATMUL_MULTI_MAX];
            const es_mat *wa[ES_MATMUL_MULTI_MAX], *wb[ES_MATMUL_MULTI_MAX];
            int na = 0, nb = 0;
            for (int j = 0; j < m; j++) {
                const bool same = ws[j]->cols == cols && act_class(ws[j]->type) == cls;
                if (same) ya[na] = ys[j], wa[na++] = ws[j];
                else yb[nb] = ys[j], wb[nb++] = ws[j];
            }
            es_matmul_multi(tp, na, ya, wa, x, n, scratch);
            es_matmul_multi(tp, nb, yb, wb, x, n, scratch);
            return;
        }
    const es_mm_kernels *k = kernels_for_level();
    const int nth = es_threadpool_n_threads(tp);
    mm_task t = {.x = x, .n = n, .m = 0};
    t.first_chunk[0] = 0;
    double macs = 0;
    int64_t groups_all = 0;
    for (int i = 0; i < m; i++) {
        const es_mat *w = ws[i];
        if (w->rows <= 0) continue;
        es_mm_rows_fn fn = pick(k, w);
        if (!fn) {
            fill_nan(ys[i], n, w->rows);
            continue;
        }
        /* Rows in chunks of about 1/4 of a thread's share, handed out dynamically: a thread slowed
         * by other work on the machine leaves its remaining chunks to the others. Finer chunks
         * measured slower (each chunk restarts the prefetchers' streams). */
        const int64_t groups = (w->rows + ES_MM_ROW_ALIGN - 1) / ES_MM_ROW_ALIGN;
        int64_t per = (groups + 4 * nth - 1) / (4 * nth);
        if (per < 1) per = 1;
        t.part[t.m] = (mm_part){.w = w, .y = ys[i], .fn = fn, .chunk_rows = per * ES_MM_ROW_ALIGN};
        t.first_chunk[t.m + 1] = t.first_chunk[t.m] + (groups + per - 1) / per;
        t.m++;
        macs += (double)w->rows * (double)cols * (double)n;
        groups_all += groups;
    }
    if (t.m == 0) return;
    const bool threaded = nth > 1 && groups_all > 1 && macs >= 65536.0; /* a region costs ~1 µs */

    /* Quantise the activations once for all weight rows of all matrices; for several rows in a
     * region of its own (each thread a share of the rows), or the other threads would wait. */
    if (cls != 0) t.qx = quantize(k, cls, threaded && n >= 4 ? tp : NULL, x, n, cols, scratch);
    atomic_init(&t.next, 0);
    if (threaded) es_threadpool_run(tp, mm_worker, &t);
    else mm_worker(&t, 0, 1);
}

bool es_matmul_prefers_x16(uint32_t type) {
    const es_mm_kernels *k = kernels_for_level();
    return k != &es_mm_ref && rows_fn(k, type, ES_LAYOUT_X16) != NULL;
}

void es_mat_get_row(const es_mat *w, int64_t r, float *dst) {
    if (w->layout == ES_LAYOUT_X16) {
        es_x16_get_row(w, r, dst);
        return;
    }
    const es_type_traits *tr = es_type_get(w->type);
    if (!tr || !tr->to_float || r < 0 || r >= w->rows || w->cols % tr->blck_size != 0) {
        for (int64_t i = 0; i < w->cols; i++) dst[i] = NAN;
        return;
    }
    tr->to_float((const uint8_t *)w->data + (size_t)r * w->row_bytes, dst, w->cols);
}
