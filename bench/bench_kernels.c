/* bench_kernels.c — es_matmul throughput against the memory read bandwidth.
 *
 * For each weight type and shape (rows x cols) it times y = x * w^T for n activation rows with 1
 * and 2 threads and prints one JSON line per case:
 *   {"type","rows","cols","n","threads","ms","ms_median","gbps","cost_vs_n1","level"}
 * ms is the lower decile of single-call times (ms_median the median: the machine is shared), gbps =
 * weight bytes / ms, cost_vs_n1 = ms / ms at n = 1 (the price of verifying n tokens relative to one
 * decode step). Each call uses the next of enough copies of the matrix (>= 384 MiB) that the
 * weights come from DRAM, not the 36 MiB L3, as in a real forward pass. First it prints the read
 * bandwidth probe over 1 GiB with 1 and 2 threads (best of 3).
 *
 * With --hot every call uses the same copy, so a matrix that fits the caches (e.g. --shape 256x1536)
 * is read from them: the kernel's arithmetic throughput, without DRAM (gbps then exceeds the probe).
 *
 * With --act-quant it times only es_matmul's first step, the activation quantisation of n rows of
 * C columns (Q8_K for the K-quant types, per-32 blocks for q8_0 / q4_0), at the scalar level and
 * at the level in use, the two interleaved call by call so that both see the same machine load:
 *   {"act_quant","n","cols","threads","level","ms","ms_median","ns_per_value"} per level, then
 *   {"act_quant","n","cols","threads","scalar_ms","simd_ms","level","speedup"}
 * (ms the lower decile again; defaults: q4_k, n 512, C 1536 = Qwen2.5-1.5B's width, threads 1 and 2).
 * $EDGESPEC_CPU lowers the level in use as in the CLI (EDGESPEC_CPU=avx2 times the AVX2 kernels).
 *
 * Usage: bench_kernels [type ...] [--threads T] [--n N] [--shape RxC] [--layout rows|x16] [--no-probe]
 *                      [--act-quant] [--hot]
 *        (layout: default what a model load gives the type, X16 for Q8_0/Q4_0/K-quants where the CPU's kernels have it)
 *        (defaults: q8_0 q4_0 q4_k q5_k q6_k f16 f32, threads 1 and 2, n 1..64, the three TinyLlama shapes) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "kernels/matmul.h"
#include "kernels/matmul_impl.h"
#include "kernels/repack.h"
#include "kernels/types.h"
#include "util/rng.h"
#include "util/threadpool.h"

#define TOTAL_BYTES ((size_t)384 << 20)

typedef struct shape {
    int64_t rows, cols;
} shape;

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Times `reps` single products, each on the next copy of the matrix (so the weights come from
 * DRAM), and returns the lower decile and the median in seconds. Single-call timings filtered this
 * way are robust to the other work on a shared machine preempting a thread now and then. */
static void time_case(es_threadpool *tp, const es_mat *copies, int n_copies, const float *x, int64_t n, float *y,
                      void *scratch, int reps, double *p10, double *median) {
    double t[256];
    if (reps > 256) reps = 256;
    for (int i = 0; i < reps; i++) {
        const double t0 = es_bench_now();
        es_matmul(tp, y, &copies[i % n_copies], x, n, scratch);
        t[i] = es_bench_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    *p10 = t[reps / 10];
    *median = t[reps / 2];
}

/* --act-quant: es_qx_quantize of x[n][cols] for `type` at the scalar level and at `simd` (the level
 * in use), alternating call by call; prints the JSON lines described at the top. */
static void bench_act_quant(const char *tname, uint32_t type, es_threadpool *tp, int threads, int64_t n, int64_t cols,
                            es_cpu_level simd, const char *simd_name) {
    float *x = malloc((size_t)(n * cols) * sizeof(float));
    void *scratch = malloc(es_matmul_scratch_size(n, cols));
    if (!x || !scratch) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    es_rng rng;
    es_rng_seed(&rng, 7);
    for (int64_t i = 0; i < n * cols; i++) x[i] = (float)es_rng_normal(&rng);
    es_qx qx;
    if (!es_qx_quantize(tp, type, x, n, cols, scratch, &qx)) {
        fprintf(stderr, "%s: no int8 activations with %lld columns\n", tname, (long long)cols);
        free(x);
        free(scratch);
        return;
    }
    const es_cpu_level lv[2] = {ES_CPU_SCALAR, simd};
    double t[2][256];
    int reps = 0;
    double spent = 0;
    for (; reps < 256 && (reps < 30 || spent < 2.0); reps++) { /* about 2 s, at least 30 pairs */
        for (int l = 0; l < 2; l++) {
            es_cpu_level_set(lv[l]);
            const double t0 = es_bench_now();
            es_qx_quantize(tp, type, x, n, cols, scratch, &qx);
            t[l][reps] = es_bench_now() - t0;
            spent += t[l][reps];
        }
    }
    es_cpu_level_set(simd);
    double p10[2];
    for (int l = 0; l < 2; l++) {
        qsort(t[l], (size_t)reps, sizeof(double), cmp_double);
        p10[l] = t[l][reps / 10];
        printf("{\"act_quant\":\"%s\",\"n\":%lld,\"cols\":%lld,\"threads\":%d,\"level\":\"%s\",\"ms\":%.4f,"
               "\"ms_median\":%.4f,\"ns_per_value\":%.3f}\n",
               tname, (long long)n, (long long)cols, threads, l ? simd_name : "scalar", p10[l] * 1e3,
               t[l][reps / 2] * 1e3, p10[l] * 1e9 / (double)(n * cols));
    }
    printf("{\"act_quant\":\"%s\",\"n\":%lld,\"cols\":%lld,\"threads\":%d,\"scalar_ms\":%.4f,\"simd_ms\":%.4f,"
           "\"level\":\"%s\",\"speedup\":%.2f}\n",
           tname, (long long)n, (long long)cols, threads, p10[0] * 1e3, p10[1] * 1e3, simd_name, p10[0] / p10[1]);
    fflush(stdout);
    free(x);
    free(scratch);
}

int main(int argc, char **argv) {
    const char *types[16];
    int n_types = 0;
    int threads[2] = {1, 2}, n_threads = 2;
    int ns[16] = {1, 2, 4, 8, 16, 32, 64}, n_ns = 7;
    shape shapes[4] = {{2048, 5632}, {5632, 2048}, {2048, 2048}}, one_shape;
    int n_shapes = 3;
    int probe = 1, act_quant = 0, n_given = 0, shape_given = 0, hot = 0;
    int layout = -1; /* -1: what a loaded model would use (X16 where the kernels prefer it) */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads[0] = atoi(argv[++i]);
            n_threads = 1;
        } else if (!strcmp(argv[i], "--n") && i + 1 < argc) {
            ns[0] = atoi(argv[++i]);
            n_ns = 1;
            n_given = ns[0];
            if (ns[0] != 1) ns[n_ns++] = ns[0], ns[0] = 1; /* cost_vs_n1 needs n = 1 */
        } else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            long long r, c;
            if (sscanf(argv[++i], "%lldx%lld", &r, &c) == 2) {
                one_shape = (shape){r, c};
                shapes[0] = one_shape;
                n_shapes = 1;
                shape_given = 1;
            }
        } else if (!strcmp(argv[i], "--layout") && i + 1 < argc) {
            i++;
            layout = !strcmp(argv[i], "rows") ? 0 : !strcmp(argv[i], "x16") ? 1 : -1;
        } else if (!strcmp(argv[i], "--no-probe")) {
            probe = 0;
        } else if (!strcmp(argv[i], "--act-quant")) {
            act_quant = 1;
        } else if (!strcmp(argv[i], "--hot")) {
            hot = 1;
        } else if (n_types < 16) {
            types[n_types++] = argv[i];
        }
    }
    if (act_quant && n_types == 0) types[n_types++] = "q4_k";
    if (n_types == 0) {
        types[0] = "q8_0", types[1] = "q4_0", types[2] = "q4_k", types[3] = "q5_k", types[4] = "q6_k";
        types[5] = "f16", types[6] = "f32";
        n_types = 7;
    }

    es_err err = {0};
    /* $EDGESPEC_CPU lowers the level, as in the CLI (e.g. avx2 on an AVX-512 machine) */
    if (es_cpu_limit(getenv("EDGESPEC_CPU"), &err) != ES_OK) {
        fprintf(stderr, "EDGESPEC_CPU: %s\n", err.msg);
        return 1;
    }
    es_threadpool *tp2 = NULL;
    if (es_threadpool_init(2, &tp2, &err) != ES_OK) {
        fprintf(stderr, "thread pool: %s\n", err.msg);
        return 1;
    }
    const char *level = es_cpu_level_name(es_cpu_level_get());
    if (es_cpu_level_get() == ES_CPU_AVX512 && es_cpu_vnni_get()) level = "avx512-vnni";

    if (act_quant) {
        const int64_t n = n_given > 0 ? n_given : 512, cols = shape_given ? shapes[0].cols : 1536;
        const es_cpu_level simd = es_cpu_level_get();
        for (int ti = 0; ti < n_types; ti++) {
            const int type = es_type_from_name(types[ti]);
            if (type < 0) {
                fprintf(stderr, "unknown type %s\n", types[ti]);
                continue;
            }
            for (int thi = 0; thi < n_threads; thi++)
                bench_act_quant(types[ti], (uint32_t)type, threads[thi] == 1 ? NULL : tp2, threads[thi], n, cols, simd,
                                level);
        }
        es_threadpool_free(tp2);
        return 0;
    }

    if (probe) {
        const size_t gib = (size_t)1 << 30;
        printf("{\"probe\":\"read_bandwidth\",\"bytes\":%zu,\"threads\":1,\"gbps\":%.2f}\n", gib,
               es_bw_probe(NULL, gib, 3));
        printf("{\"probe\":\"read_bandwidth\",\"bytes\":%zu,\"threads\":2,\"gbps\":%.2f}\n", gib,
               es_bw_probe(tp2, gib, 3));
        fflush(stdout);
    }

    es_rng rng;
    es_rng_seed(&rng, 42);
    for (int ti = 0; ti < n_types; ti++) {
        const int type = es_type_from_name(types[ti]);
        if (type < 0) {
            fprintf(stderr, "unknown type %s\n", types[ti]);
            continue;
        }
        for (int si = 0; si < n_shapes; si++) {
            const int64_t rows = shapes[si].rows, cols = shapes[si].cols;
            const size_t rb = es_row_size((uint32_t)type, cols), wbytes = rb * (size_t)rows;
            int n_copies = hot ? 1 : (int)((TOTAL_BYTES + wbytes - 1) / wbytes);
            if (n_copies < 2 && !hot) n_copies = 2;
            /* one random matrix, copied (values do not change the speed) */
            float *src = malloc((size_t)cols * sizeof(float));
            uint8_t *data = malloc(wbytes * (size_t)n_copies);
            es_mat *copies = malloc(sizeof(es_mat) * (size_t)n_copies);
            if (!src || !data || !copies) {
                fprintf(stderr, "out of memory\n");
                return 1;
            }
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t c = 0; c < cols; c++) src[c] = (float)es_rng_normal(&rng) * 0.02f;
                es_type_get((uint32_t)type)->from_float(src, data + (size_t)r * rb, cols);
            }
            for (int c = 0; c < n_copies; c++) {
                if (c > 0) memcpy(data + wbytes * (size_t)c, data, wbytes);
                copies[c] = (es_mat){.type = (uint32_t)type, .rows = rows, .cols = cols, .row_bytes = rb,
                                     .data = data + wbytes * (size_t)c};
            }
            /* the layout a model load would give these weights (or the one asked for) */
            const bool x16 = (layout == 1 || (layout < 0 && es_matmul_prefers_x16((uint32_t)type))) &&
                             es_mat_can_repack(&copies[0]);
            uint8_t *packed = NULL;
            if (x16) {
                const size_t pb = (es_mat_repacked_size(&copies[0]) + 63) & ~(size_t)63;
                packed = aligned_alloc(64, pb * (size_t)n_copies);
                if (!packed) {
                    fprintf(stderr, "out of memory\n");
                    return 1;
                }
                for (int c = 0; c < n_copies; c++) es_mat_repack(tp2, &copies[c], packed + pb * (size_t)c, &copies[c]);
                free(data);
                data = NULL;
            }
            int64_t nmax = 1;
            for (int i = 0; i < n_ns; i++) nmax = ns[i] > nmax ? ns[i] : nmax;
            float *x = malloc((size_t)(nmax * cols) * sizeof(float));
            float *y = malloc((size_t)(nmax * rows) * sizeof(float));
            void *scratch = malloc(es_matmul_scratch_size(nmax, cols));
            for (int64_t i = 0; i < nmax * cols; i++) x[i] = (float)es_rng_normal(&rng);

            for (int thi = 0; thi < n_threads; thi++) {
                es_threadpool *tp = threads[thi] == 1 ? NULL : tp2;
                double ms1 = 0;
                for (int ni = 0; ni < n_ns; ni++) {
                    const int64_t n = ns[ni];
                    double p10, med;
                    /* about 0.5 s per case, at least 30 calls */
                    time_case(tp, copies, n_copies, x, n, y, scratch, 4, &p10, &med);
                    int reps = (int)(0.5 / (med > 1e-6 ? med : 1e-6));
                    reps = reps < 30 ? 30 : reps > 256 ? 256 : reps;
                    time_case(tp, copies, n_copies, x, n, y, scratch, reps, &p10, &med);
                    const double ms = p10 * 1e3;
                    if (n == 1) ms1 = ms;
                    printf("{\"type\":\"%s\",\"rows\":%lld,\"cols\":%lld,\"n\":%lld,\"threads\":%d,\"ms\":%.4f,"
                           "\"ms_median\":%.4f,\"gbps\":%.2f,\"cost_vs_n1\":%.3f,\"level\":\"%s\",\"layout\":\"%s\"}\n",
                           types[ti], (long long)rows, (long long)cols, (long long)n, threads[thi], ms, med * 1e3,
                           (double)wbytes / p10 * 1e-9, ms1 > 0 ? ms / ms1 : 0.0, level, x16 ? "x16" : "rows");
                    fflush(stdout);
                }
            }
            free(src);
            free(data);
            free(packed);
            free(copies);
            free(x);
            free(y);
            free(scratch);
        }
    }
    es_threadpool_free(tp2);
    return 0;
}
