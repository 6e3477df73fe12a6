/* kquant_avx2.c — AVX2 kernels for the K-quant weights. None yet: the AVX2 level runs the scalar
 * reference for Q4_K / Q5_K / Q6_K (same results; see matmul_impl.h). */
#include "kernels/matmul_impl.h"

const es_mm_rows_fn es_kq_avx2[3] = {NULL, NULL, NULL};
