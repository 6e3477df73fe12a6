/* matmul.h — the one hot kernel: Y = X · Wᵀ for a weight matrix W stored [rows][cols] in any
 * supported type and n activation rows X [n][cols] in f32.
 *
 * The work is split across the thread pool by weight rows, and each thread computes all n activation
 * rows for its slice of W, so every weight block is read from memory once per call whatever n is:
 * verifying k draft tokens costs about one decode step while the model is memory-bound.
 *
 * For Q8_0 / Q4_0 / Q5_0 (and K-quant) weights the activations are first quantised to int8 blocks of 32
 * with an f32 scale (once per call, into the caller's scratch) so the inner loop is an int8 dot
 * product. Q8_0 / Q4_0 / Q5_0 matrices are normally repacked at load into the X16 layout
 * (kernels/repack.h), which the SIMD kernels read without shuffles; results do not depend on it. The
 * kernels for the running CPU (scalar reference, AVX2, AVX-512 with or without VNNI, NEON with or
 * without the dot-product extension) are chosen per
 * call from the level below; kernels/matmul_impl.h states the arithmetic they all share. */
#ifndef ES_KERNELS_MATMUL_H
#define ES_KERNELS_MATMUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"
#include "kernels/types.h"
#include "util/threadpool.h"

/* How a matrix's bytes are arranged. */
typedef enum es_mat_layout {
    /* As in the file: `rows` rows of `cols` elements of `type`, rows contiguous (row_bytes apart). */
    ES_LAYOUT_ROWS = 0,
    /* Q8_0 / Q4_0 / Q5_0 / Q4_K / Q5_K / Q6_K only, made by es_mat_repack (kernels/repack.h): rows
     * interleaved in groups of 16, block by block, in the order the int8 kernels consume them.
     * row_bytes keeps the size of a file row (for byte counts); the data is es_mat_repacked_size
     * bytes. */
    ES_LAYOUT_X16 = 1,
} es_mat_layout;

/* A 2-D weight view. Zero-initialised fields give the file layout. */
typedef struct es_mat {
    uint32_t type;
    int64_t rows, cols;
    size_t row_bytes;
    const void *data;
    uint32_t layout; /* es_mat_layout */
} es_mat;

typedef enum es_cpu_level { ES_CPU_SCALAR = 0, ES_CPU_AVX2 = 1, ES_CPU_AVX512 = 2, ES_CPU_NEON = 3 } es_cpu_level;

/* The level in use: the best the CPU supports, lowered by es_cpu_limit. Detected once per process
 * (thread-safe) and kept in one process-wide value: the only mutable state of this module, changed
 * only by es_cpu_limit and the two setters below, which are meant for tests and benchmarks. Results of int8 kernels do not depend on it. On x86-64 the levels form the chain
 * scalar < avx2 < avx512; on aarch64 scalar < neon. */
es_cpu_level es_cpu_level_get(void);
const char *es_cpu_level_name(es_cpu_level l);
/* Lowers the level in use (never raises it): x86-64: scalar|avx2|avx512, or avx512-novnni to keep
 * AVX-512 but not use VNNI; aarch64: scalar|neon, or neon-nodot to keep NEON but not use the
 * dot-product extension; names of the other architecture change nothing; NULL or "" changes
 * nothing. ES_ERR_INVALID_ARG for an unknown name. The CLI applies $EDGESPEC_CPU with it. */
es_status es_cpu_limit(const char *spec, es_err *err);
/* Forces a level for tests (clamped to what the CPU supports; a level of the other architecture
 * means the best this CPU has). Returns the level now in use. */
es_cpu_level es_cpu_level_set(es_cpu_level l);
/* Whether the int8 kernels use the dot-product instruction: VNNI (vpdpbusd) at AVX-512, SDOT
 * (vdotq_s32) at NEON. The setter enables it only where the CPU has it and returns the value now
 * in use. */
bool es_cpu_vnni_get(void);
bool es_cpu_vnni_set(bool enable);
/* For tests: from how many activation rows the K-quant X16 AVX-512 kernels decode each super-block
 * once into a buffer instead of computing in passes of 4 rows (0: never; negative: this CPU's
 * default, ES_KQ_DECODE_ROWS in kernels/matmul_impl.h). Both give the same bits. Returns the value
 * now in use. */
int es_cpu_kq_decode_set(int rows);

/* Bytes of scratch es_matmul needs for n rows of `cols` (activation quantisation). */
size_t es_matmul_scratch_size(int64_t n, int64_t cols);

/* y[n][w->rows] = x[n][w->cols] · wᵀ. `scratch` holds es_matmul_scratch_size(n, cols) bytes (any
 * alignment; unused, and may be NULL, for F32/F16/BF16 weights). x and y rows are contiguous (stride
 * cols and rows). Never allocates. w->type must be F32, F16, BF16, Q8_0, Q4_0, Q5_0 (in the file
 * layout by the scalar reference only) or a K-quant, with cols a multiple of the block size and
 * row_bytes >= es_row_size(type, cols) (the loader checks this); otherwise y is filled with NaN.
 * Each y row is bit-identical whatever n and the thread count are; for the int8 types it is also
 * identical at every CPU level and in either layout (see kernels/matmul_impl.h for the arithmetic). */
void es_matmul(es_threadpool *tp, float *y, const es_mat *w, const float *x, int64_t n, void *scratch);

/* The most matrices es_matmul_multi runs in one region (more are split into several calls). */
#define ES_MATMUL_MULTI_MAX 4

/* ys[i] = x · ws[i]ᵀ for m matrices that take the same input (the q, k, v projections; gate and up):
 * with the same cols and the same activation format (all int8 of one kind, or all float) the
 * activations are quantised once and all rows of all matrices are shared out in one parallel
 * region, so small matrices do not each pay a region and a ragged end. Each ys[i] is bit-identical
 * to es_matmul(tp, ys[i], ws[i], ...). Matrices of different formats are split into groups that
 * share one (a Q5_0 q and k with a Q8_0 v: two regions), each run as above. */
void es_matmul_multi(es_threadpool *tp, int m, float *const ys[], const es_mat *const ws[], const float *x, int64_t n,
                     void *scratch);

/* Whether the kernels of the level in use have an X16 version for weights of `type` (so repacking
 * such matrices at load time pays; kernels/repack.h). */
bool es_matmul_prefers_x16(uint32_t type);

/* Dequantises row r of w into dst[cols] (embedding lookups). */
void es_mat_get_row(const es_mat *w, int64_t r, float *dst);

#endif
