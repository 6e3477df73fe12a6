/* kquant.h — conversions of the K-quant weight types (Q4_K, Q5_K, Q6_K) to and from f32 (internal
 * to src/kernels; the public face is their entry in the traits table of kernels/types.h). n is a
 * multiple of ES_QK_K in every call. */
#ifndef ES_KERNELS_KQUANT_H
#define ES_KERNELS_KQUANT_H

#include <stdint.h>

void es_q4_k_to_float(const void *src, float *dst, int64_t n);
void es_q5_k_to_float(const void *src, float *dst, int64_t n);
void es_q6_k_to_float(const void *src, float *dst, int64_t n);
void es_q4_k_from_float(const float *src, void *dst, int64_t n);
void es_q5_k_from_float(const float *src, void *dst, int64_t n);
void es_q6_k_from_float(const float *src, void *dst, int64_t n);

#endif
