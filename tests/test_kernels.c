/* test_kernels.c — es_matmul at every CPU level this machine has, against the scalar reference and
 * against an exact (double) product, for every weight type and odd shapes.
 *
 * Stated tolerances (S = sum_i |w_i * x_i| over the row, the magnitude of the terms, so the bound
 * means something when the dot product cancels):
 *   F32        |y - exact| <= 1e-5 * S                       (exact: double product)
 *   F16, BF16  |y - exact| <= 1e-4 * S                       (exact: double product of the
 *                                                              dequantised weights and f32 x)
 *   Q8_0, Q4_0 SIMD == scalar reference, bit for bit (the contract of kernels/matmul_impl.h; the
 *              brief's 1e-4 relative is implied), and
 *              |ref - exact| <= sum_b (dx_b / 2) * sum_{i in b} |w_i| + 1e-5 * S
 *              (exact: dequantised weights x f32 x; dx_b = max|x in b| / 127 is the activation
 *              step, so this is the activation rounding error bound), and on these random inputs
 *              the relative error |ref - exact| / sqrt(sum w^2 * sum x^2) is also below 2%.
 * Also: 1 and 2 threads give identical bits; a row's result does not depend on n (computed alone
 * or in a batch of n); round-trip quantisation errors per type; level selection. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul.h"
#include "kernels/types.h"
#include "testutil.h"
#include "util/fp16.h"
#include "util/rng.h"
#include "util/threadpool.h"

static const uint32_t k_types[] = {ES_TYPE_F32, ES_TYPE_F16, ES_TYPE_BF16, ES_TYPE_Q8_0, ES_TYPE_Q4_0};
static const int k_ns[] = {1, 2, 3, 4, 7, 8, 16, 31, 32, 33, 64};
#define N_NS ((int)(sizeof(k_ns) / sizeof(k_ns[0])))

static bool is_quant(uint32_t t) { return t == ES_TYPE_Q8_0 || t == ES_TYPE_Q4_0; }

/* A weight matrix in `type`, from N(0,1) values with a few larger outliers per row. */
typedef struct wmat {
    es_mat m;
    void *data;
    float *deq; /* [rows][cols] dequantised */
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
    for (int64_t r = 0; r < rows; r++) tr->from_float(src + r * cols, (uint8_t *)w->data + (size_t)r * rb, cols);
    w->m = (es_mat){.type = type, .rows = rows, .cols = cols, .row_bytes = rb, .data = w->data};
    w->deq = src;
    for (int64_t r = 0; r < rows; r++) es_mat_get_row(&w->m, r, w->deq + r * cols);
}

static void wmat_free(wmat *w) {
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
} level;

static int g_nlevels;
static level g_levels[4];

static void set_level(const level *l) {
    es_cpu_level_set(l->lvl);
    es_cpu_vnni_set(l->vnni);
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
        matmul_at(l, tp2, y2, &w->m, x, n, scratch);
        CHECK_MSG(memcmp(y, y2, ny * sizeof(float)) == 0, "%s %s %lldx%lld n=%lld: 2 threads differ from 1",
                  es_type_name(type), l->name, (long long)rows, (long long)cols, (long long)n);
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
            const int64_t rows = 37, cols = 96, n = 5;
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
        wmat_make(&w, k_types[ti], 5, 64, &rng);
        float row[64], want[64];
        es_mat_get_row(&w.m, 3, row);
        es_type_get(k_types[ti])->to_float((const uint8_t *)w.data + 3 * w.m.row_bytes, want, 64);
        CHECK(memcmp(row, want, sizeof(row)) == 0);
        wmat_free(&w);
    }
}

int main(void) {
    /* $EDGESPEC_CPU lowers the level detected at first use; the setter can raise it again up to what
     * the hardware has */
#if defined(__aarch64__)
    setenv("EDGESPEC_CPU", "neon-nodot", 1);
    const es_cpu_level first = es_cpu_level_get();
    CHECK_MSG(first == ES_CPU_NEON && !es_cpu_vnni_get(), "EDGESPEC_CPU=neon-nodot gave %s, dotprod %d",
              es_cpu_level_name(first), (int)es_cpu_vnni_get());
#else
    setenv("EDGESPEC_CPU", "avx2", 1);
    const es_cpu_level first = es_cpu_level_get();
#endif

    /* the levels this machine has: scalar first (the reference), then the SIMD ones */
    es_cpu_level best = es_cpu_level_set(ES_CPU_AVX512);
#if !defined(__aarch64__)
    CHECK_MSG(first == (best < ES_CPU_AVX2 ? best : ES_CPU_AVX2), "EDGESPEC_CPU=avx2 gave %s (hardware: %s)",
              es_cpu_level_name(first), es_cpu_level_name(best));
#endif
    const bool vnni = es_cpu_vnni_set(true);
    g_levels[g_nlevels++] = (level){ES_CPU_SCALAR, false, "scalar"};
    if (best >= ES_CPU_AVX2 && best != ES_CPU_NEON) g_levels[g_nlevels++] = (level){ES_CPU_AVX2, false, "avx2"};
    if (best == ES_CPU_AVX512) {
        g_levels[g_nlevels++] = (level){ES_CPU_AVX512, false, "avx512"};
        if (vnni) g_levels[g_nlevels++] = (level){ES_CPU_AVX512, true, "avx512-vnni"};
    }
    if (best == ES_CPU_NEON) {
        /* both int8 paths where the CPU has the dot-product extension (qemu's default cpu does) */
        g_levels[g_nlevels++] = (level){ES_CPU_NEON, false, "neon-nodot"};
        if (vnni) g_levels[g_nlevels++] = (level){ES_CPU_NEON, true, "neon-dotprod"};
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
    check_roundtrip(&rng);

    static const int64_t small_cols[] = {32, 64, 96};
    static const int64_t all_rows[] = {1, 3, 7, 64, 257};
    static const int f_cols[] = {1, 5, 17, 33}; /* float types need no block multiple */
    static const int n_big[] = {1, 2, 3, 4, 7, 8, 16, 33};
    static const int n_one[] = {1}, n_three[] = {3};
    for (size_t ti = 0; ti < sizeof(k_types) / sizeof(k_types[0]); ti++) {
        const uint32_t t = k_types[ti];
        for (int ci = 0; ci < 3; ci++)
            for (int ri = 0; ri < 5; ri++) check_shape(t, all_rows[ri], small_cols[ci], k_ns, N_NS, tp2, &rng);
        if (!is_quant(t))
            for (int ci = 0; ci < 4; ci++) check_shape(t, 7, f_cols[ci], n_three, 1, tp2, &rng);
        /* 4096 + 32 columns: a full row group and a partial one (19 rows) at most n, and 257 rows */
        check_shape(t, 19, 4096 + 32, n_big, (int)(sizeof(n_big) / sizeof(n_big[0])), tp2, &rng);
        check_shape(t, 257, 4096 + 32, n_one, 1, tp2, &rng);
        check_batch_invariance(t, 37, 256, 16, tp2, &rng);
    }
    CHECK_MSG(g_exact_fail == 0, "%lld results outside their bound of the exact product", (long long)g_exact_fail);
    CHECK_MSG(g_rel_fail == 0, "%lld quantised results off by more than 2%% relative", (long long)g_rel_fail);
    CHECK_MSG(g_bits_fail == 0, "%lld SIMD results differ from the scalar reference", (long long)g_bits_fail);

    es_threadpool_free(tp2);
    return es_test_finish("test_kernels");
}
