/* test_kernels.c — es_matmul at every CPU level this machine has, against the scalar reference and
 * against an exact (double) product, for every weight type and odd shapes.
 *
 * Stated tolerances (S = sum_i |w_i * x_i| over the row, the magnitude of the terms, so the bound
 * means something when the dot product cancels):
 *   F32        |y - exact| <= 1e-5 * S                       (exact: double product)
 *   F16, BF16  |y - exact| <= 1e-4 * S                       (exact: double product of the
 *                                                              dequantised weights and f32 x)
 *   Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K
 *              SIMD == scalar reference, bit for bit (the contract of kernels/matmul_impl.h; the
 *              brief's 1e-4 relative is implied), and
 *              |ref - exact| <= sum_b (dx_b / 2) * sum_{i in b} |w_i| + 1e-5 * S
 *              (exact: dequantised weights x f32 x; dx_b = max|x in b| / 127 is the activation
 *              step, so this is the activation rounding error bound), and on these random inputs
 *              the relative error |ref - exact| / sqrt(sum w^2 * sum x^2) is also below 2%.
 * K-quant round trips (quantise, dequantise; 64 super-blocks of N(0,1) values with 100x sub-blocks
 * and all-zero sub-blocks mixed in, which stresses the quantised sub-block scales):
 *   per element |err| <= R_s / nmax + 1.1 * R_max / 63 (Q4_K, Q5_K) or R_max / 127 (Q6_K), where
 *   R_s is the range of the element's sub-block (0 included), R_max the widest of its super-block
 *   and nmax = 15, 31, 63: a code step of the sub-block, plus the rounding of the 6-bit (8-bit)
 *   sub-block scale and min against the super-scales (see kq_bound below); and on plain N(0,1)
 *   rows the rms error relative to the rms value is below 0.11 (Q4_K), 0.055 (Q5_K), 0.03 (Q6_K).
 *   to_float also agrees bit for bit with ggml's layout, walked the way ggml walks it.
 * Q8_K activation quantisation (the K-quants' es_qx: qs, d, corr, fs, k16): the scalar reference
 * equals llama.cpp's arithmetic written out here (nearbyintf, ties to even), and every level equals
 * it bit for bit, on awkward rows (zeros, -0, ties, tiny, subnormal, huge, NaN, Inf).
 * Also: 1 and 2 threads give identical bits; a row's result does not depend on n (computed alone
 * or in a batch of n); round-trip quantisation errors per type; level selection. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul.h"
#include "kernels/matmul_impl.h"
#include "kernels/repack.h"
#include "kernels/types.h"
#include "testutil.h"
#include "util/fp16.h"
#include "util/rng.h"
#include "util/threadpool.h"

static const uint32_t k_types[] = {ES_TYPE_F32,  ES_TYPE_F16,  ES_TYPE_BF16, ES_TYPE_Q8_0, ES_TYPE_Q4_0,
                                   ES_TYPE_Q5_0, ES_TYPE_Q4_K, ES_TYPE_Q5_K, ES_TYPE_Q6_K};
static const int k_ns[] = {1, 2, 3, 4, 7, 8, 16, 31, 32, 33, 64};
#define N_NS ((int)(sizeof(k_ns) / sizeof(k_ns[0])))

static bool is_kquant(uint32_t t) { return t == ES_TYPE_Q4_K || t == ES_TYPE_Q5_K || t == ES_TYPE_Q6_K; }
static bool is_quant(uint32_t t) {
    return t == ES_TYPE_Q8_0 || t == ES_TYPE_Q4_0 || t == ES_TYPE_Q5_0 || is_kquant(t);
}

/* A weight matrix in `type`, from N(0,1) values with a few larger outliers per row. */
typedef struct wmat {
    es_mat m;
    void *data;
    float *deq; /* [rows][cols] dequantised */
    es_mat x16; /* the same matrix in the X16 layout (kernels/repack.h), where it has one */
    void *x16data;
} wmat;

static void wmat_make(wmat *w, uint32_t type, int64_t rows, int64_t cols, es_rng *rng) {
    const es_type_traits *tr = es_type_get(type);
    size_t rb = es_row_size(type, cols);
    float *src = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i++) {
        double v = es_rng_normal(rng);
        if (es_rng_uniform(rng) < 0.01) v *= 8.0;
        src[i] = (float)v;
    }
    w->data = malloc(rb * (size_t)rows);
    /* Q5_0 is a type we read but do not write (its traits have no from_float): its test quantiser */
    void (*from_float)(const float *, void *, int64_t) = type == ES_TYPE_Q5_0 ? es_q5_0_from_float : tr->from_float;
    for (int64_t r = 0; r < rows; r++) from_float(src + r * cols, (uint8_t *)w->data + (size_t)r * rb, cols);
    w->m = (es_mat){.type = type, .rows = rows, .cols = cols, .row_bytes = rb, .data = w->data};
    w->deq = src;
    for (int64_t r = 0; r < rows; r++) es_mat_get_row(&w->m, r, w->deq + r * cols);
    w->x16data = NULL;
    if (es_mat_can_repack(&w->m)) {
        w->x16data = aligned_alloc(64, (es_mat_repacked_size(&w->m) + 63) & ~(size_t)63);
        es_mat_repack(NULL, &w->m, w->x16data, &w->x16);
        /* rows read back from X16 are the file's rows */
        float *row = malloc((size_t)cols * sizeof(float));
        int bad = 0;
        for (int64_t r = 0; r < rows; r++) {
            es_mat_get_row(&w->x16, r, row);
            if (memcmp(row, w->deq + r * cols, (size_t)cols * sizeof(float)) != 0) bad++;
        }
        CHECK_MSG(bad == 0, "%s %lldx%lld: %d rows of the X16 copy read back differently", es_type_name(type),
                  (long long)rows, (long long)cols, bad);
        free(row);
    }
}

static void wmat_free(wmat *w) {
    free(w->x16data);
    free(w->data);
    free(w->deq);
}

static float *rand_x(int64_t n, int64_t cols, es_rng *rng) {
    float *x = malloc((size_t)(n * cols) * sizeof(float));
    for (int64_t i = 0; i < n * cols; i++) x[i] = (float)(es_rng_normal(rng) * (i % 7 == 0 ? 3.0 : 1.0));
    return x;
}

typedef struct level {
    es_cpu_level lvl;
    bool vnni;
    const char *name;
    int kq_decode; /* es_cpu_kq_decode_set: negative for the CPU's default */
} level;

static int g_nlevels;
static level g_levels[5];

static void set_level(const level *l) {
    es_cpu_level_set(l->lvl);
    es_cpu_vnni_set(l->vnni);
    es_cpu_kq_decode_set(l->kq_decode);
}

static void matmul_at(const level *l, es_threadpool *tp, float *y, const es_mat *w, const float *x, int64_t n,
                      void *scratch) {
    set_level(l);
    es_matmul(tp, y, w, x, n, scratch);
}

static int64_t g_exact_fail, g_bits_fail, g_rel_fail;

/* Checks y = x[0..n) * w^T at every level, with 1 and 2 threads. x holds at least n rows. */
static void check_case(const wmat *w, const float *x, int64_t n, es_threadpool *tp2) {
    const uint32_t type = w->m.type;
    const int64_t rows = w->m.rows, cols = w->m.cols, nb = (cols + 31) / 32;
    const size_t ss = es_matmul_scratch_size(n, cols);
    uint8_t *scratch_mem = malloc(ss + 1);
    void *scratch = scratch_mem + 1; /* deliberately misaligned */
    const size_t ny = (size_t)(n * rows);
    float *yref = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float)), *y2 = malloc(ny * sizeof(float));
    double *S = malloc(ny * sizeof(double));
    /* per-block activation steps / 2 and weight magnitudes, and the norms, for the bounds */
    double *xh = malloc((size_t)(n * nb) * sizeof(double)), *wa = malloc((size_t)(rows * nb) * sizeof(double));
    double *x2 = malloc((size_t)n * sizeof(double)), *w2 = malloc((size_t)rows * sizeof(double));
    for (int64_t j = 0; j < n; j++) {
        x2[j] = 0;
        for (int64_t b = 0; b < nb; b++) {
            double amax = 0;
            for (int64_t i = b * 32; i < (b + 1) * 32 && i < cols; i++) {
                const double v = x[j * cols + i];
                amax = amax > fabs(v) ? amax : fabs(v);
                x2[j] += v * v;
            }
            xh[j * nb + b] = amax / 127.0 / 2.0 * (1 + 1e-6);
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        w2[r] = 0;
        for (int64_t b = 0; b < nb; b++) {
            double a = 0;
            for (int64_t i = b * 32; i < (b + 1) * 32 && i < cols; i++) {
                const double v = w->deq[r * cols + i];
                a += fabs(v);
                w2[r] += v * v;
            }
            wa[r * nb + b] = a;
        }
    }

    const level *ref = &g_levels[0];
    matmul_at(ref, NULL, yref, &w->m, x, n, scratch);
    if (type == ES_TYPE_Q5_0) { /* the loader's other way (model.c): widened to Q8_0, the same bits */
        const size_t wrb = es_row_size(ES_TYPE_Q8_0, cols);
        void *wide = malloc(wrb * (size_t)rows);
        for (int64_t r = 0; r < rows; r++)
            es_q5_0_to_q8_0((const uint8_t *)w->m.data + (size_t)r * w->m.row_bytes, (uint8_t *)wide + (size_t)r * wrb, cols);
        const es_mat wm = {.type = ES_TYPE_Q8_0, .rows = rows, .cols = cols, .row_bytes = wrb, .data = wide};
        memset(y, 0xff, ny * sizeof(float));
        matmul_at(ref, NULL, y, &wm, x, n, scratch);
        CHECK_MSG(memcmp(y, yref, ny * sizeof(float)) == 0, "q5_0 %lldx%lld n=%lld: differs from its Q8_0 widening",
                  (long long)rows, (long long)cols, (long long)n);
        free(wide);
    }

    /* the reference against the exact product */
    for (int64_t j = 0; j < n; j++) {
        const float *xr = x + j * cols;
        for (int64_t r = 0; r < rows; r++) {
            const float *wr = w->deq + r * cols;
            double e = 0, s = 0, qb = 0;
            for (int64_t i = 0; i < cols; i++) {
                const double p = (double)wr[i] * xr[i];
                e += p;
                s += fabs(p);
            }
            for (int64_t b = 0; b < nb; b++) qb += xh[j * nb + b] * wa[r * nb + b];
            S[j * rows + r] = s;
            const double got = yref[j * rows + r], err = fabs(got - e);
            double tol;
            if (type == ES_TYPE_F32) tol = 1e-5 * s;
            else if (!is_quant(type)) tol = 1e-4 * s;
            else tol = qb + 1e-5 * s;
            if (!(err <= tol + 1e-30) && g_exact_fail++ < 5)
                fprintf(stderr, "%s %lldx%lld n=%lld y[%lld][%lld]=%g exact %g err %g tol %g\n", es_type_name(type),
                        (long long)rows, (long long)cols, (long long)n, (long long)j, (long long)r, got, e, err, tol);
            if (is_quant(type) && !(err <= 0.02 * sqrt(w2[r] * x2[j]))) g_rel_fail++;
        }
    }

    for (int li = 0; li < g_nlevels; li++) {
        const level *l = &g_levels[li];
        if (li > 0) {
            memset(y, 0xff, ny * sizeof(float));
            matmul_at(l, NULL, y, &w->m, x, n, scratch);
            for (size_t i = 0; i < ny; i++) {
                /* int8 kernels: bit for bit; float kernels: within the sum of both bounds */
                const bool ok = is_quant(type) ? memcmp(&y[i], &yref[i], sizeof(float)) == 0
                                               : fabs((double)y[i] - yref[i]) <= (type == ES_TYPE_F32 ? 2e-5 : 2e-4) * S[i] + 1e-30;
                if (!ok && g_bits_fail++ < 5)
                    fprintf(stderr, "%s level %s %lldx%lld n=%lld y[%zu]=%.9g ref %.9g\n", es_type_name(type), l->name,
                            (long long)rows, (long long)cols, (long long)n, i, y[i], yref[i]);
            }
        } else {
            memcpy(y, yref, ny * sizeof(float));
        }
        /* 2 threads: the same bits as 1 */
        memset(y2, 0xff, ny * sizeof(float));
        matmul_at(l, tp2, y2, &w->m, x, n, scratch);
        CHECK_MSG(memcmp(y, y2, ny * sizeof(float)) == 0, "%s %s %lldx%lld n=%lld: 2 threads differ from 1",
                  es_type_name(type), l->name, (long long)rows, (long long)cols, (long long)n);
        if (w->x16data) { /* the X16 layout: the reference's bits, with 1 and 2 threads (y2 poisoned
                             first, so an output the kernel skips cannot pass as the previous one) */
            memset(y2, 0xff, ny * sizeof(float));
            matmul_at(l, NULL, y2, &w->x16, x, n, scratch);
            CHECK_MSG(memcmp(yref, y2, ny * sizeof(float)) == 0, "%s %s %lldx%lld n=%lld: X16 layout differs",
                      es_type_name(type), l->name, (long long)rows, (long long)cols, (long long)n);
            memset(y2, 0xff, ny * sizeof(float));
            matmul_at(l, tp2, y2, &w->x16, x, n, scratch);
            CHECK_MSG(memcmp(yref, y2, ny * sizeof(float)) == 0, "%s %s %lldx%lld n=%lld: X16 layout, 2 threads, differs",
                      es_type_name(type), l->name, (long long)rows, (long long)cols, (long long)n);
        }
    }
    free(xh);
    free(wa);
    free(x2);
    free(w2);
    free(S);
    free(scratch_mem);
    free(yref);
    free(y);
    free(y2);
}

/* Every n of `ns` on one random matrix. */
static void check_shape(uint32_t type, int64_t rows, int64_t cols, const int *ns, int n_ns, es_threadpool *tp2,
                        es_rng *rng) {
    int64_t nmax = 0;
    for (int i = 0; i < n_ns; i++) nmax = ns[i] > nmax ? ns[i] : nmax;
    wmat w;
    wmat_make(&w, type, rows, cols, rng);
    float *x = rand_x(nmax, cols, rng);
    for (int i = 0; i < n_ns; i++) check_case(&w, x, ns[i], tp2);
    free(x);
    wmat_free(&w);
}

/* A row of a batch equals that row computed alone (n = 1), bit for bit, at every level: verifying
 * k tokens gives the same logits as decoding them one by one. */
static void check_batch_invariance(uint32_t type, int64_t rows, int64_t cols, int64_t n, es_threadpool *tp2,
                                   es_rng *rng) {
    wmat w;
    wmat_make(&w, type, rows, cols, rng);
    float *x = rand_x(n, cols, rng);
    void *scratch = malloc(es_matmul_scratch_size(n, cols));
    float *yb = malloc((size_t)(n * rows) * sizeof(float)), *y1 = malloc((size_t)rows * sizeof(float));
    for (int li = 0; li < g_nlevels; li++) {
        matmul_at(&g_levels[li], tp2, yb, &w.m, x, n, scratch);
        int bad = 0;
        for (int64_t j = 0; j < n; j++) {
            matmul_at(&g_levels[li], NULL, y1, &w.m, x + j * cols, 1, scratch);
            if (memcmp(y1, yb + j * rows, (size_t)rows * sizeof(float)) != 0) bad++;
        }
        CHECK_MSG(bad == 0, "%s %s: %d of %lld batch rows differ from single-row results", es_type_name(type),
                  g_levels[li].name, bad, (long long)n);
    }
    free(scratch);
    free(yb);
    free(y1);
    free(x);
    wmat_free(&w);
}

static void check_roundtrip(es_rng *rng) {
    enum { N = 32 * 512 };
    float *x = malloc(N * sizeof(float)), *back = malloc(N * sizeof(float));
    uint8_t *buf = malloc(N * 4);
    for (int i = 0; i < N; i++) {
        double v = es_rng_normal(rng) * (i / 32 % 5 == 0 ? 100.0 : 1.0);
        if (i / 32 % 13 == 0) v = 0.0; /* all-zero blocks */
        x[i] = (float)v;
    }
    for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++) {
        const uint32_t t = k_types[ti];
        const es_type_traits *tr = es_type_get(t);
        if (is_kquant(t) || t == ES_TYPE_Q5_0) continue; /* check_kquant_roundtrip, check_q5_0 */
        tr->from_float(x, buf, N);
        tr->to_float(buf, back, N);
        int bad = 0;
        double worst = 0;
        for (int b = 0; b < N / 32; b++) {
            const float *xb = x + b * 32;
            float amax = 0, max = 0;
            for (int i = 0; i < 32; i++)
                if (fabsf(xb[i]) > amax) { amax = fabsf(xb[i]); max = xb[i]; }
            for (int i = 0; i < 32; i++) {
                const double err = fabs((double)back[b * 32 + i] - xb[i]);
                double tol;
                if (t == ES_TYPE_F32) tol = 0;
                else if (t == ES_TYPE_F16) tol = fabs(xb[i]) * 0x1p-11 + 0x1p-25;
                else if (t == ES_TYPE_BF16) tol = fabs(xb[i]) * 0x1p-8;
                else if (t == ES_TYPE_Q8_0) {
                    /* d/2 for the rounding of q, plus |q| <= 127 times the fp16 rounding of d */
                    const double d = amax / 127.0, d16 = es_fp16_to_fp32(((const es_block_q8_0 *)buf)[b].d);
                    tol = d / 2 + 127 * fabs(d - d16) + 1e-7 * amax;
                } else {
                    /* |d| (the +8 end of the range clamps to +7), plus 8 times the fp16 rounding */
                    const double d = max / -8.0, d16 = es_fp16_to_fp32(((const es_block_q4_0 *)buf)[b].d);
                    tol = fabs(d) + 8 * fabs(d - d16) + 1e-7 * amax;
                }
                if (err > tol) bad++;
                if (amax > 0 && err / amax > worst) worst = err / amax;
            }
        }
        CHECK_MSG(bad == 0, "%s round trip: %d elements over the bound", tr->name, bad);
        printf("round trip %-5s worst |err| / block max = %.3g\n", tr->name, worst);
    }
    free(x);
    free(back);
    free(buf);
}

/* ggml's K-quant layouts, written the way ggml's dequantisers walk them (pointers advancing per
 * 64 or 128 elements), as an independent statement of the byte format: our to_float must agree
 * on random bytes. */
static void ggml_layout_q4_k(const uint8_t *blk, bool q5, float *y) {
    const float d = es_fp16_to_fp32((uint16_t)(blk[0] | blk[1] << 8)), dmin = es_fp16_to_fp32((uint16_t)(blk[2] | blk[3] << 8));
    const uint8_t *scales = blk + 4, *qh = blk + 16, *ql = q5 ? blk + 48 : blk + 16;
    int is = 0;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 256; j += 64, ql += 32, is += 2, u1 <<= 2, u2 <<= 2) {
        uint8_t sc1, m1, sc2, m2;
        es_kq_scale_min(is, scales, &sc1, &m1);
        es_kq_scale_min(is + 1, scales, &sc2, &m2);
        for (int l = 0; l < 32; l++) *y++ = d * sc1 * (float)((ql[l] & 0xf) + (q5 && (qh[l] & u1) ? 16 : 0)) - dmin * m1;
        for (int l = 0; l < 32; l++) *y++ = d * sc2 * (float)((ql[l] >> 4) + (q5 && (qh[l] & u2) ? 16 : 0)) - dmin * m2;
    }
}

static void ggml_layout_q6_k(const uint8_t *blk, float *y) {
    const uint8_t *ql = blk, *qh = blk + 128;
    const int8_t *sc = (const int8_t *)(blk + 192);
    const float d = es_fp16_to_fp32((uint16_t)(blk[208] | blk[209] << 8));
    for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8, y += 128)
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            y[l] = d * sc[is] * (float)(((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32);
            y[l + 32] = d * sc[is + 2] * (float)(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
            y[l + 64] = d * sc[is + 4] * (float)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            y[l + 96] = d * sc[is + 6] * (float)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
}

/* Q5_0: the byte layout written out as ggml states it (bit j + 12 of qh shifted onto 0x10 for the
 * upper half), widening to Q8_0 exact, and the quantiser's error within half a step. */
static void check_q5_0(es_rng *rng) {
    enum { NB = 64, N = NB * 32 };
    const es_type_traits *tr = es_type_get(ES_TYPE_Q5_0);
    CHECK(tr && tr->supported && tr->blck_size == 32 && tr->type_size == 22 && tr->to_float);
    uint8_t buf[NB * 22];
    es_block_q8_0 wide[NB];
    float *want = malloc(N * sizeof(float)), *back = malloc(N * sizeof(float)), *x = malloc(N * sizeof(float));
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)es_rng_next(rng);
    for (int b = 0; b < NB; b++) {
        uint8_t *blk = buf + b * 22;
        blk[1] = (uint8_t)(blk[1] & 0x83) | 0x20; /* |d| in [2^-7, 2^-5): finite */
        const float d = es_fp16_to_fp32((uint16_t)(blk[0] | blk[1] << 8));
        const uint32_t qh = (uint32_t)blk[2] | (uint32_t)blk[3] << 8 | (uint32_t)blk[4] << 16 | (uint32_t)blk[5] << 24;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
            want[b * 32 + j] = d * (float)(((blk[6 + j] & 0x0f) | h0) - 16);
            want[b * 32 + j + 16] = d * (float)(((blk[6 + j] >> 4) | h1) - 16);
        }
    }
    tr->to_float(buf, back, N);
    CHECK_MSG(memcmp(back, want, N * sizeof(float)) == 0, "q5_0: to_float disagrees with ggml's layout");
    es_q5_0_to_q8_0(buf, wide, N);
    es_type_get(ES_TYPE_Q8_0)->to_float(wide, back, N);
    CHECK_MSG(memcmp(back, want, N * sizeof(float)) == 0, "q5_0: the Q8_0 widening is not exact");

    for (int i = 0; i < N; i++) x[i] = (float)(es_rng_normal(rng) * (i / 32 % 5 == 0 ? 100.0 : 1.0));
    for (int i = 64; i < 96; i++) x[i] = 0.0f; /* an all-zero block */
    es_q5_0_from_float(x, buf, N);
    tr->to_float(buf, back, N);
    int bad = 0;
    for (int b = 0; b < NB; b++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        /* the largest magnitude maps to code 0 (-16 steps); the other side stops at +15 steps, so a
           value up to 16 steps there is off by one step at most, everything else by half a step */
        const float step = amax / 16.0f;
        for (int j = 0; j < 32; j++) {
            const float e = fabsf(back[b * 32 + j] - x[b * 32 + j]);
            const bool top = fabsf(x[b * 32 + j]) > 15.5f * step;
            if (e > (top ? 1.0f : 0.5f) * step * 1.01f + 1e-6f) bad++;
        }
    }
    CHECK_MSG(bad == 0, "q5_0: %d elements off by more than their bound", bad);
    free(want);
    free(back);
    free(x);
}

/* K-quants: the byte layout against ggml's, and the quantisation error (bounds in the header). */
static void check_kquant_roundtrip(es_rng *rng) {
    enum { N = 256 * 64 };
    float *x = malloc(N * sizeof(float)), *back = malloc(N * sizeof(float)), *want = malloc(N * sizeof(float));
    uint8_t *buf = malloc(N * 4);
    static const uint32_t kt[] = {ES_TYPE_Q4_K, ES_TYPE_Q5_K, ES_TYPE_Q6_K};
    static const double rms_max[] = {0.11, 0.055, 0.03};
    for (int ti = 0; ti < 3; ti++) {
        const uint32_t t = kt[ti];
        const es_type_traits *tr = es_type_get(t);
        CHECK(tr && tr->supported && tr->blck_size == 256 && es_type_from_name(tr->name) == (int)t);
        /* layout: random bytes (fp16 scales forced finite and small) */
        for (size_t i = 0; i < 64 * tr->type_size; i++) buf[i] = (uint8_t)es_rng_next(rng);
        for (int b = 0; b < 64; b++) {
            uint8_t *blk = buf + b * tr->type_size;
            if (t == ES_TYPE_Q6_K) blk[209] = (uint8_t)(blk[209] & 0x83) | 0x20; /* |d| in [2^-7, 2^-5) */
            else blk[1] = (uint8_t)(blk[1] & 0x83) | 0x20, blk[3] = (uint8_t)(blk[3] & 0x83) | 0x20;
            if (t == ES_TYPE_Q6_K) ggml_layout_q6_k(blk, want + b * 256);
            else ggml_layout_q4_k(blk, t == ES_TYPE_Q5_K, want + b * 256);
        }
        tr->to_float(buf, back, N);
        CHECK_MSG(memcmp(back, want, N * sizeof(float)) == 0, "%s: to_float disagrees with ggml's layout", tr->name);

        /* error on mixed data: 100x sub-blocks and zero sub-blocks */
        const int sub = t == ES_TYPE_Q6_K ? 16 : 32, nmax = t == ES_TYPE_Q4_K ? 15 : t == ES_TYPE_Q5_K ? 31 : 63;
        for (int i = 0; i < N; i++) {
            double v = es_rng_normal(rng) * (i / 32 % 5 == 0 ? 100.0 : 1.0);
            if (i / 32 % 13 == 0) v = 0.0;
            x[i] = (float)v;
        }
        tr->from_float(x, buf, N);
        tr->to_float(buf, back, N);
        int bad = 0;
        double worst = 0;
        for (int b = 0; b < N / 256; b++) {
            /* kq_bound: the sub-block's own range / nmax (twice the half code step, leaving room
             * for a least-squares fit that clips a rare outlier) plus the rounding of the stored
             * sub-block scale and min against the super-block's: half a step of d (or dmin) is
             * big / 126 per code range (Q4_K / Q5_K: 6-bit, big / 63 for scale and min
             * together; Q6_K: int8, big / 127), where big is the super-block's widest sub-block */
            double big = 0;
            for (int s = 0; s < 256 / sub; s++) {
                float lo = 0, hi = 0;
                for (int i = 0; i < sub; i++) lo = fminf(lo, x[b * 256 + s * sub + i]), hi = fmaxf(hi, x[b * 256 + s * sub + i]);
                big = fmax(big, hi - lo);
            }
            for (int s = 0; s < 256 / sub; s++) {
                const float *xs = x + b * 256 + s * sub;
                float lo = 0, hi = 0;
                for (int i = 0; i < sub; i++) lo = fminf(lo, xs[i]), hi = fmaxf(hi, xs[i]);
                const double tol = (double)(hi - lo) / nmax + big / (t == ES_TYPE_Q6_K ? 127.0 : 63.0) * 1.1 + 1e-6;
                for (int i = 0; i < sub; i++) {
                    const double err = fabs((double)back[xs - x + i] - xs[i]);
                    if (!(err <= tol)) bad++;
                    if (err / (hi - lo + 1e-30) > worst) worst = err / (hi - lo + 1e-30);
                }
            }
        }
        CHECK_MSG(bad == 0, "%s round trip: %d elements over the bound", tr->name, bad);
        /* rms on plain N(0, 1) */
        for (int i = 0; i < N; i++) x[i] = (float)es_rng_normal(rng);
        tr->from_float(x, buf, N);
        tr->to_float(buf, back, N);
        double se = 0, sx = 0;
        for (int i = 0; i < N; i++) se += (back[i] - x[i]) * (double)(back[i] - x[i]), sx += (double)x[i] * x[i];
        const double rel = sqrt(se / sx);
        CHECK_MSG(rel <= rms_max[ti], "%s rms error %.4f > %.3f", tr->name, rel, rms_max[ti]);
        printf("round trip %-5s worst |err| / sub-block range = %.3g, N(0,1) rms rel err = %.4f\n", tr->name, worst, rel);
    }
    free(x);
    free(back);
    free(want);
    free(buf);
}

/* K-quant kernels on block bytes no quantiser writes: random bytes (every code, 6-bit scale and
 * min; Q6_K int8 scales down to -128), a row of all-0xFF and one of all-0x00 codes (Q6_K: q - 32 =
 * +31 / -32 with scales -1 / -128), against activations that quantise to +-127 in every element:
 * the integer sums at their bounds (the int16 pair sums of the NEON kernels without dotprod, the
 * int32 Q6_K scale products). Every level bit for bit against the scalar reference, n = 1 .. 9. */
static void check_kquant_extremes(es_threadpool *tp2, es_rng *rng) {
    static const uint32_t kt[] = {ES_TYPE_Q4_K, ES_TYPE_Q5_K, ES_TYPE_Q6_K};
    enum { ROWS = 11, COLS = 512, NMAX = 9 };
    float *x = malloc(NMAX * COLS * sizeof(float)), *yref = malloc(NMAX * ROWS * sizeof(float));
    float *y = malloc(NMAX * ROWS * sizeof(float));
    void *scr = malloc(es_matmul_scratch_size(NMAX, COLS));
    for (int j = 0; j < NMAX; j++)
        for (int i = 0; i < COLS; i++) /* row 0 all +1, row 1 all -1, the others random signs */
            x[j * COLS + i] = j == 0 ? 1.0f : j == 1 ? -1.0f : (es_rng_next(rng) & 1) ? 0.75f : -0.75f;
    for (int ti = 0; ti < 3; ti++) {
        const uint32_t t = kt[ti];
        const size_t rb = es_row_size(t, COLS), bsz = es_type_get(t)->type_size;
        uint8_t *data = malloc(rb * ROWS);
        for (size_t i = 0; i < rb * ROWS; i++) data[i] = (uint8_t)es_rng_next(rng);
        memset(data, 0xff, rb);      /* row 0 */
        memset(data + rb, 0x00, rb); /* row 1 */
        for (int r = 0; r < ROWS; r++)
            for (size_t b = 0; b < rb / bsz; b++) {
                uint8_t *blk = data + (size_t)r * rb + b * bsz;
                if (t == ES_TYPE_Q6_K) {
                    if (r == 1) memset(blk + offsetof(es_block_q6_k, scales), 0x80, 16); /* -128 */
                    blk[208] = 0x00, blk[209] = 0x20; /* d = 2^-7 */
                } else {
                    if (r == 1) memset(blk + offsetof(es_block_q4_k, scales), 0xff, 12); /* scales, mins 63 */
                    blk[0] = blk[2] = 0x00, blk[1] = 0x20, blk[3] = 0x1c; /* d = 2^-7, dmin = 2^-8 */
                }
            }
        const es_mat w = {.type = t, .rows = ROWS, .cols = COLS, .row_bytes = rb, .data = data};
        for (int n = 1; n <= NMAX; n++) {
            const size_t ny = (size_t)n * ROWS;
            matmul_at(&g_levels[0], NULL, yref, &w, x, n, scr);
            for (int li = 1; li < g_nlevels; li++) {
                matmul_at(&g_levels[li], li % 2 ? tp2 : NULL, y, &w, x, n, scr);
                CHECK_MSG(memcmp(y, yref, ny * sizeof(float)) == 0, "%s extremes %s n=%d: differs from the reference",
                          es_type_name(t), g_levels[li].name, n);
            }
        }
        free(data);
    }
    es_cpu_level_set(g_levels[g_nlevels - 1].lvl);
    free(x);
    free(y);
    free(yref);
    free(scr);
}

static void check_misc(void) {
    /* level selection */
    es_cpu_level best = es_cpu_level_set(ES_CPU_AVX512);
    CHECK(es_cpu_level_get() == best);
    CHECK(es_cpu_level_set(ES_CPU_SCALAR) == ES_CPU_SCALAR);
    CHECK(es_cpu_level_get() == ES_CPU_SCALAR);
    CHECK(strcmp(es_cpu_level_name(ES_CPU_AVX2), "avx2") == 0);
    CHECK(strcmp(es_cpu_level_name(ES_CPU_SCALAR), "scalar") == 0);
#if defined(__x86_64__)
    CHECK(es_cpu_level_set(ES_CPU_NEON) != ES_CPU_NEON);
#elif defined(__aarch64__)
    CHECK(best == ES_CPU_NEON);
    CHECK(es_cpu_level_set(ES_CPU_NEON) == ES_CPU_NEON);
    CHECK(es_cpu_level_set(ES_CPU_AVX2) == ES_CPU_NEON); /* an x86 level: the best here */
    CHECK(strcmp(es_cpu_level_name(ES_CPU_NEON), "neon") == 0);
#endif
    CHECK(es_cpu_vnni_set(false) == false);
    es_cpu_level_set(best);

    /* scratch size grows with n and cols */
    CHECK(es_matmul_scratch_size(1, 32) >= 32 + 8);
    CHECK(es_matmul_scratch_size(4, 4096) > es_matmul_scratch_size(2, 4096));
    CHECK(es_matmul_scratch_size(INT64_MAX / 2, INT64_MAX / 2) == SIZE_MAX);

    /* an unsupported type or a bad shape gives NaN, not a crash */
    float y[4] = {0}, x[64] = {0};
    uint8_t data[256] = {0};
    es_mat bad = {.type = ES_TYPE_Q4_1, .rows = 2, .cols = 32, .row_bytes = 20, .data = data};
    es_matmul(NULL, y, &bad, x, 2, NULL);
    CHECK(isnan(y[0]) && isnan(y[3]));
    es_mat odd = {.type = ES_TYPE_Q8_0, .rows = 2, .cols = 33, .row_bytes = 34, .data = data};
    y[0] = 0;
    es_matmul(NULL, y, &odd, x, 1, NULL);
    CHECK(isnan(y[0]));

    /* rows with padding (row_bytes larger than the packed size) give the same results */
    {
        es_rng r2;
        es_rng_seed(&r2, 99);
        for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++) {
            const int64_t rows = 37, cols = is_kquant(k_types[ti]) ? 256 : 96, n = 5;
            wmat w;
            wmat_make(&w, k_types[ti], rows, cols, &r2);
            const size_t pad_rb = w.m.row_bytes + 40;
            uint8_t *padded = calloc((size_t)rows, pad_rb);
            for (int64_t r = 0; r < rows; r++)
                memcpy(padded + (size_t)r * pad_rb, (const uint8_t *)w.data + (size_t)r * w.m.row_bytes, w.m.row_bytes);
            es_mat pm = w.m;
            pm.row_bytes = pad_rb;
            pm.data = padded;
            float *xx = rand_x(n, cols, &r2), y1[37 * 5], y2[37 * 5];
            memset(y1, 0, sizeof(y1));
            memset(y2, 0, sizeof(y2));
            void *scr = malloc(es_matmul_scratch_size(n, cols));
            for (int li = 0; li < g_nlevels; li++) {
                matmul_at(&g_levels[li], NULL, y1, &w.m, xx, n, scr);
                matmul_at(&g_levels[li], NULL, y2, &pm, xx, n, scr);
                CHECK_MSG(memcmp(y1, y2, sizeof(y1)) == 0, "%s %s: padded rows differ", es_type_name(k_types[ti]),
                          g_levels[li].name);
            }
            free(scr);
            free(xx);
            free(padded);
            wmat_free(&w);
        }
        es_cpu_level_set(best);
    }

    /* get_row matches to_float, for every type */
    es_rng rng;
    es_rng_seed(&rng, 7);
    for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++) {
        wmat w;
        wmat_make(&w, k_types[ti], 5, 256, &rng);
        float row[256], want[256];
        es_mat_get_row(&w.m, 3, row);
        es_type_get(k_types[ti])->to_float((const uint8_t *)w.data + 3 * w.m.row_bytes, want, 256);
        CHECK(memcmp(row, want, sizeof(row)) == 0);
        wmat_free(&w);
    }
}

/* Q8_K rows (768 columns: three super-blocks each) that stress the quantiser: row j is kind j % 10,
 * scaled by 10^(j % 7 - 3) where the kind leaves the scale free. */
enum { Q8K_COLS = 768 };

static void q8k_row(float *x, int64_t j, es_rng *rng) {
    const float s = powf(10.0f, (float)(j % 7) - 3.0f);
    for (int i = 0; i < Q8K_COLS; i++) x[i] = s * (float)es_rng_normal(rng);
    switch (j % 10) {
    case 0: break; /* plain random */
    case 1: /* zeros mixed in, and a -0 */
        for (int i = 0; i < Q8K_COLS; i += 3) x[i] = 0.0f;
        x[1] = -0.0f;
        break;
    case 2: memset(x, 0, Q8K_COLS * sizeof(float)); break; /* all zero */
    case 3: /* all -0, then -0 beside values, then one massive activation (a Qwen2 first position) */
        for (int i = 0; i < 256; i++) x[i] = -0.0f;
        for (int i = 256; i < 512; i += 2) x[i] = -0.0f;
        x[600] = 3000.0f * s;
        break;
    case 4: /* ties: max|x| = 127 gives iscale = 1 exactly, 254 gives 0.5, so k + 0.5 lands on a tie */
        for (int i = 0; i < 256; i++) x[i] = (float)(i % 254) - 126.5f;
        x[7] = 127.0f;
        for (int i = 256; i < 512; i++) x[i] = (float)(2 * (i % 127) - 126 + 1);
        x[300] = -254.0f;
        break;
    case 5: /* tiny: normal 1e-30, subnormal (127 / max|x| overflows to inf), the smallest subnormal */
        for (int i = 0; i < 256; i++) x[i] *= 1e-30f / s;
        for (int i = 256; i < 512; i++) x[i] *= 1e-41f / s;
        for (int i = 512; i < Q8K_COLS; i++) x[i] = i % 2 ? 1.4e-45f : -1.4e-45f;
        break;
    case 6: /* huge: near FLT_MAX, and 1e30 */
        for (int i = 0; i < 256; i++) x[i] = i % 5 == 0 ? (i % 2 ? 3.4e38f : -3.4e38f) : x[i] * 1e37f / s;
        for (int i = 256; i < 512; i++) x[i] *= 1e30f / s;
        break;
    case 7: /* non-finite: a NaN among values, +Inf, and -Inf beside NaNs */
        x[5] = NAN;
        x[256 + 9] = INFINITY;
        x[512 + 1] = -INFINITY;
        x[512 + 2] = NAN;
        x[512 + 3] = -NAN;
        break;
    case 8: /* a super-block all NaN, one all Inf */
        for (int i = 0; i < 256; i++) x[i] = NAN;
        for (int i = 256; i < 512; i++) x[i] = i % 2 ? INFINITY : -INFINITY;
        break;
    case 9: /* every element a multiple of 1/2 step away from a tie after scaling: exact steps */
        for (int i = 0; i < Q8K_COLS; i++) x[i] = (float)((int)(x[i] / s * 40.0f)) * 0.5f;
        x[0] = 127.0f, x[256] = -127.0f, x[512] = 127.0f;
        break;
    }
}

/* The Q8_K arithmetic as llama.cpp's quantize_row_q8_K writes it (nearbyintf for nearest_int),
 * for row x: the expected qs (row-major), d per block, and the block sums. */
static void q8k_expect(const float *x, int8_t *qs, float *d, float *fs, int32_t *k16) {
    for (int sb = 0; sb < Q8K_COLS / 256; sb++) {
        float amax = 0.0f;
        for (int i = 0; i < 256; i++) amax = fmaxf(amax, fabsf(x[256 * sb + i]));
        const float iscale = amax != 0.0f ? 127.0f / amax : 0.0f, dx = amax != 0.0f ? 1.0f / iscale : 0.0f;
        for (int b = 8 * sb; b < 8 * sb + 8; b++) {
            int32_t h[2] = {0, 0};
            for (int i = 0; i < 32; i++) {
                const float v = nearbyintf(x[32 * b + i] * iscale);
                const int q = v >= -127.0f && v <= 127.0f ? (int)v : 0;
                qs[32 * b + i] = (int8_t)q;
                h[i / 16] += q;
            }
            d[b] = dx;
            fs[b] = dx * (float)(h[0] + h[1]);
            k16[2 * b] = -32 * h[0];
            k16[2 * b + 1] = -32 * h[1];
        }
    }
}

static bool same_bits(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

/* The Q8_K activations (es_qx_quantize for a K-quant type) at every level, 1 and 2 threads: the
 * scalar reference against q8k_expect and a few ties spelt out, every other level against the
 * scalar reference bit for bit (qs, d, corr, fs, k16). */
static void check_q8k(es_threadpool *tp2, es_rng *rng) {
    const int64_t n = 37, cols = Q8K_COLS, nb = cols / 32;
    float *x = malloc((size_t)(n * cols) * sizeof(float));
    for (int64_t j = 0; j < n; j++) q8k_row(x + j * cols, j, rng);
    void *scr[2] = {malloc(es_matmul_scratch_size(n, cols)), malloc(es_matmul_scratch_size(n, cols))};
    es_qx ref, qx;
    set_level(&g_levels[0]);
    CHECK(es_qx_quantize(NULL, ES_TYPE_Q4_K, x, n, cols, scr[0], &ref));
    CHECK(ref.nb == nb && ref.n == n && ref.fs && ref.k16);

    /* the reference is llama.cpp's arithmetic */
    int8_t eq[Q8K_COLS];
    float ed[Q8K_COLS / 32], efs[Q8K_COLS / 32];
    int32_t ek16[Q8K_COLS / 16];
    int bad = 0;
    for (int64_t j = 0; j < n; j++) {
        q8k_expect(x + j * cols, eq, ed, efs, ek16);
        for (int64_t b = 0; b < nb; b++) {
            const int64_t o = b * n + j;
            bad += !same_bits(ref.qs + o * 32, eq + 32 * b, 32) || !same_bits(&ref.d[o], &ed[b], 4) ||
                   !same_bits(&ref.fs[o], &efs[b], 4) || !same_bits(ref.k16 + 2 * o, ek16 + 2 * b, 8) ||
                   ref.corr[o] != ES_QX_MAGIC;
        }
    }
    CHECK_MSG(bad == 0, "Q8_K reference: %d blocks differ from llama.cpp's arithmetic", bad);
    /* row 4, super-block 0: iscale 1, so x = k + 0.5 rounds to the even neighbour */
    const int64_t r4 = 4;
    for (int i = 0; i < 32; i++) {
        const float xv = x[r4 * cols + i];
        if (i == 7) continue; /* the 127 */
        const float f = floorf(xv);
        const int want = ((int)f % 2 == 0) ? (int)f : (int)f + 1;
        CHECK_MSG(ref.qs[r4 * 32 + i] == want, "tie %g quantised to %d, want %d", xv, ref.qs[r4 * 32 + i], want);
    }
    /* row 8: an all-NaN super-block quantises to 0 with dx 0; an Inf one to 0 with dx inf (127 / inf = 0) */
    CHECK(ref.d[0 * n + 8] == 0.0f && isinf(ref.d[8 * n + 8]) && ref.qs[(8 * n + 8) * 32] == 0);
    /* row 5, super-block 1: subnormal max|x|, iscale overflows, every value quantises to 0 with dx 0 */
    CHECK(ref.d[8 * n + 5] == 0.0f && ref.k16[2 * (8 * n + 5)] == 0);

    for (int li = 1; li < g_nlevels; li++) {
        for (int th = 0; th < 2; th++) {
            set_level(&g_levels[li]);
            memset(scr[1], 0x5a, es_matmul_scratch_size(n, cols));
            CHECK(es_qx_quantize(th ? tp2 : NULL, ES_TYPE_Q6_K, x, n, cols, scr[1], &qx));
            int64_t bq = 0, bd = 0, bs = 0;
            for (int64_t o = 0; o < nb * n; o++) {
                if (!same_bits(qx.qs + o * 32, ref.qs + o * 32, 32)) bq++;
                if (!same_bits(&qx.d[o], &ref.d[o], 4) || qx.corr[o] != ref.corr[o]) bd++;
                if (!same_bits(&qx.fs[o], &ref.fs[o], 4) || !same_bits(qx.k16 + 2 * o, ref.k16 + 2 * o, 8)) bs++;
            }
            CHECK_MSG(bq == 0 && bd == 0 && bs == 0,
                      "Q8_K at %s, %d threads: of %lld blocks %lld differ in qs, %lld in d / corr, %lld in fs / k16",
                      g_levels[li].name, th + 1, (long long)(nb * n), (long long)bq, (long long)bd, (long long)bs);
        }
    }
    /* types and shapes it refuses */
    CHECK(!es_qx_quantize(NULL, ES_TYPE_Q4_K, x, n, 512 + 32, scr[1], &qx));
    CHECK(!es_qx_quantize(NULL, ES_TYPE_F16, x, n, cols, scr[1], &qx));
    CHECK(!es_qx_quantize(NULL, ES_TYPE_Q8_0, x, 0, cols, scr[1], &qx));
    es_cpu_level_set(g_levels[g_nlevels - 1].lvl);
    free(x);
    free(scr[0]);
    free(scr[1]);
}

/* The Q8_0 / Q4_0 activations (per-32 blocks) at every level, 1 and 2 threads, equal the scalar
 * reference bit for bit (qs, d, corr) on the same awkward rows as the Q8_K check: zeros, -0, ties,
 * tiny, subnormal, huge, NaN and Inf values (a NaN or Inf quantises to 0, as the reference's guard
 * says: the kernels assume |q| <= 127). */
static void check_q8_0_act(es_threadpool *tp2, es_rng *rng) {
    const int64_t n = 37, cols = Q8K_COLS, nb = cols / 32;
    float *x = malloc((size_t)(n * cols) * sizeof(float));
    for (int64_t j = 0; j < n; j++) q8k_row(x + j * cols, j, rng);
    void *scr[2] = {malloc(es_matmul_scratch_size(n, cols)), malloc(es_matmul_scratch_size(n, cols))};
    static const uint32_t types[2] = {ES_TYPE_Q8_0, ES_TYPE_Q4_0};
    for (int ti = 0; ti < 2; ti++) {
        es_qx ref, qx;
        set_level(&g_levels[0]);
        CHECK(es_qx_quantize(NULL, types[ti], x, n, cols, scr[0], &ref));
        int64_t out = 0;
        for (int64_t o = 0; o < nb * n * 32; o++) out += ref.qs[o] < -127;
        CHECK_MSG(out == 0, "%s activations: %lld values below -127 in the reference", es_type_name(types[ti]), (long long)out);
        for (int li = 1; li < g_nlevels; li++)
            for (int th = 0; th < 2; th++) {
                set_level(&g_levels[li]);
                memset(scr[1], 0x5a, es_matmul_scratch_size(n, cols));
                CHECK(es_qx_quantize(th ? tp2 : NULL, types[ti], x, n, cols, scr[1], &qx));
                int64_t bq = 0, bd = 0;
                for (int64_t o = 0; o < nb * n; o++) {
                    if (!same_bits(qx.qs + o * 32, ref.qs + o * 32, 32)) bq++;
                    if (!same_bits(&qx.d[o], &ref.d[o], 4) || qx.corr[o] != ref.corr[o]) bd++;
                }
                CHECK_MSG(bq == 0 && bd == 0, "%s activations at %s, %d threads: of %lld blocks %lld differ in qs, %lld in d / corr",
                          es_type_name(types[ti]), g_levels[li].name, th + 1, (long long)(nb * n), (long long)bq, (long long)bd);
            }
    }
    es_cpu_level_set(g_levels[g_nlevels - 1].lvl);
    free(x);
    free(scr[0]);
    free(scr[1]);
}

/* es_matmul_multi equals one es_matmul per matrix, bit for bit, at every level and with 2 threads:
 * matrices of different row counts sharing an input (q/k/v-like), in one type, in the X16 layout
 * where there is one, and a mix of types (which falls back to separate calls). */
static void check_multi(es_threadpool *tp2, es_rng *rng) {
    static const uint32_t types[] = {ES_TYPE_F32, ES_TYPE_F16, ES_TYPE_Q8_0, ES_TYPE_Q4_0, ES_TYPE_Q5_0, ES_TYPE_Q4_K, ES_TYPE_Q6_K};
    /* mixed formats: three kinds of input (f32, per-32 int8, Q8_K); an AWQ-style q, k, v (two Q5_0
       beside a Q8_0: two int8 formats that differ only in their correction) */
    static const uint32_t mixes[2][3] = {{ES_TYPE_F32, ES_TYPE_Q8_0, ES_TYPE_Q4_K}, {ES_TYPE_Q5_0, ES_TYPE_Q5_0, ES_TYPE_Q8_0}};
    static const int64_t rows[3] = {37, 16, 5};
    const int64_t cols = 512, n = 9;
    const size_t nt = sizeof types / sizeof types[0];
    for (size_t ti = 0; ti < nt + 2; ti++) {
        const bool mixed = ti >= nt;
        wmat w[3];
        for (int i = 0; i < 3; i++) wmat_make(&w[i], mixed ? mixes[ti - nt][i] : types[ti], rows[i], cols, rng);
        float *x = rand_x(n, cols, rng);
        void *scr = malloc(es_matmul_scratch_size(n, cols));
        float *y1[3], *ym[3];
        for (int i = 0; i < 3; i++) {
            y1[i] = malloc((size_t)(n * rows[i]) * sizeof(float));
            ym[i] = malloc((size_t)(n * rows[i]) * sizeof(float));
        }
        for (int layout = 0; layout < 2; layout++) {
            const es_mat *ws[3];
            bool have = true;
            for (int i = 0; i < 3; i++) {
                if (layout == 1 && !w[i].x16data) have = false;
                ws[i] = layout == 1 ? &w[i].x16 : &w[i].m;
            }
            if (!have) continue;
            for (int li = 0; li < g_nlevels; li++) {
                for (int th = 0; th < 2; th++) {
                    es_threadpool *tp = th ? tp2 : NULL;
                    for (int i = 0; i < 3; i++) matmul_at(&g_levels[li], tp, y1[i], ws[i], x, n, scr);
                    es_matmul_multi(tp, 3, ym, ws, x, n, scr);
                    for (int i = 0; i < 3; i++)
                        CHECK_MSG(memcmp(y1[i], ym[i], (size_t)(n * rows[i]) * sizeof(float)) == 0,
                                  "multi %s%s %s threads %d: matrix %d differs from a single matmul",
                                  mixed ? "mixed" : es_type_name(types[ti]), layout ? " x16" : "", g_levels[li].name,
                                  th + 1, i);
                }
            }
        }
        for (int i = 0; i < 3; i++) {
            free(y1[i]);
            free(ym[i]);
            wmat_free(&w[i]);
        }
        free(x);
        free(scr);
    }
}

int main(void) {
    /* es_cpu_limit ($EDGESPEC_CPU in the CLI) lowers the level detected at first use; the setter can
     * raise it again up to what the hardware has; an unknown name is refused */
    es_err lerr = {0};
    CHECK(es_cpu_limit("avx3", &lerr) == ES_ERR_INVALID_ARG && strstr(lerr.msg, "avx3"));
    CHECK(es_cpu_limit(NULL, &lerr) == ES_OK && es_cpu_limit("", &lerr) == ES_OK);
#if defined(__aarch64__)
    CHECK(es_cpu_limit("neon-nodot", &lerr) == ES_OK);
    const es_cpu_level first = es_cpu_level_get();
    CHECK_MSG(first == ES_CPU_NEON && !es_cpu_vnni_get(), "neon-nodot gave %s, dotprod %d",
              es_cpu_level_name(first), (int)es_cpu_vnni_get());
#else
    CHECK(es_cpu_limit("avx2", &lerr) == ES_OK);
    const es_cpu_level first = es_cpu_level_get();
    CHECK(es_cpu_limit("avx512", &lerr) == ES_OK && es_cpu_level_get() == first); /* never raises */
#endif

    /* the levels this machine has: scalar first (the reference), then the SIMD ones */
    es_cpu_level best = es_cpu_level_set(ES_CPU_AVX512);
#if !defined(__aarch64__)
    CHECK_MSG(first == (best < ES_CPU_AVX2 ? best : ES_CPU_AVX2), "limit avx2 gave %s (hardware: %s)",
              es_cpu_level_name(first), es_cpu_level_name(best));
#endif
    const bool vnni = es_cpu_vnni_set(true);
    g_levels[g_nlevels++] = (level){ES_CPU_SCALAR, false, "scalar", -1};
    if (best >= ES_CPU_AVX2 && best != ES_CPU_NEON) g_levels[g_nlevels++] = (level){ES_CPU_AVX2, false, "avx2", -1};
    if (best == ES_CPU_AVX512) {
        g_levels[g_nlevels++] = (level){ES_CPU_AVX512, false, "avx512", -1};
        if (vnni) g_levels[g_nlevels++] = (level){ES_CPU_AVX512, true, "avx512-vnni", -1};
        /* the K-quant batch path this CPU does not take by default (es_cpu_kq_decode_set) */
        const bool dec = es_cpu_kq_decode_set(-1) > 0;
        g_levels[g_nlevels++] = (level){ES_CPU_AVX512, vnni, dec ? "avx512-kq-tiles" : "avx512-kq-decode",
                                        dec ? 0 : ES_KQ_DECODE_ROWS};
    }
    if (best == ES_CPU_NEON) {
        /* both int8 paths where the CPU has the dot-product extension (qemu's default cpu does) */
        g_levels[g_nlevels++] = (level){ES_CPU_NEON, false, "neon-nodot", -1};
        if (vnni) g_levels[g_nlevels++] = (level){ES_CPU_NEON, true, "neon-dotprod", -1};
    }
    /* $ES_EXPECT_DOT (0 or 1): what the detection must find (set where the CPU is known, e.g. a
     * qemu cpu model chosen by the test) */
    const char *expect_dot = getenv("ES_EXPECT_DOT");
    if (expect_dot && *expect_dot)
        CHECK_MSG(vnni == (atoi(expect_dot) != 0), "int8 dot-product instruction detected: %d, expected %s", (int)vnni,
                  expect_dot);
    printf("levels:");
    for (int i = 0; i < g_nlevels; i++) printf(" %s", g_levels[i].name);
    printf("\n");

    es_err err = {0};
    es_threadpool *tp2 = NULL;
    CHECK(es_threadpool_init(2, &tp2, &err) == ES_OK);

    es_rng rng;
    es_rng_seed(&rng, 1234);
    check_misc();
    check_multi(tp2, &rng);
    check_roundtrip(&rng);
    check_kquant_roundtrip(&rng);
    check_q5_0(&rng);
    check_kquant_extremes(tp2, &rng);
    check_q8k(tp2, &rng);
    check_q8_0_act(tp2, &rng);

    static const int64_t small_cols[] = {32, 64, 96}, k_cols[] = {256, 512, 768};
    static const int64_t all_rows[] = {1, 3, 7, 64, 257};
    static const int f_cols[] = {1, 5, 17, 33}; /* float types need no block multiple */
    static const int n_big[] = {1, 2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 16, 33};
    static const int n_one[] = {1}, n_three[] = {3};
    for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++) {
        const uint32_t t = k_types[ti];
        for (int ci = 0; ci < 3; ci++)
            for (int ri = 0; ri < 5; ri++)
                check_shape(t, all_rows[ri], is_kquant(t) ? k_cols[ci] : small_cols[ci], k_ns, N_NS, tp2, &rng);
        if (!is_quant(t))
            for (int ci = 0; ci < 4; ci++) check_shape(t, 7, f_cols[ci], n_three, 1, tp2, &rng);
        /* 4096 + 32 columns: a full row group and a partial one (19 rows) at most n, and 257 rows */
        const int64_t big = is_kquant(t) ? 4096 + 256 : 4096 + 32;
        check_shape(t, 19, big, n_big, (int)(sizeof(n_big) / sizeof(n_big[0])), tp2, &rng);
        check_shape(t, 257, big, n_one, 1, tp2, &rng);
        check_batch_invariance(t, 37, 256, 16, tp2, &rng);
        /* a prefill-sized batch whose int8 activations outgrow L2 (300 x 1024 > 256 KB): the X16
         * kernels then sweep several row groups per pass (7 groups here: 4 + 3, the last partial) */
        static const int n_prefill[] = {300};
        if (t == ES_TYPE_Q8_0 || t == ES_TYPE_Q4_0 || t == ES_TYPE_Q5_0) check_shape(t, 100, 1024, n_prefill, 1, tp2, &rng);
    }
    CHECK_MSG(g_exact_fail == 0, "%lld results outside their bound of the exact product", (long long)g_exact_fail);
    CHECK_MSG(g_rel_fail == 0, "%lld quantised results off by more than 2%% relative", (long long)g_rel_fail);
    CHECK_MSG(g_bits_fail == 0, "%lld SIMD results differ from the scalar reference", (long long)g_bits_fail);

    es_threadpool_free(tp2);
    return es_test_finish("test_kernels");
}
