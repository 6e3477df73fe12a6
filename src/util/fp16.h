/* fp16.h — IEEE half and bfloat16 conversions (portable scalar versions; SIMD kernels use F16C). */
#ifndef ES_UTIL_FP16_H
#define ES_UTIL_FP16_H

#include <stdint.h>
#include <string.h>

static inline float es_fp32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t es_fp32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float es_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return es_fp32_from_bits(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return es_fp32_from_bits(sign | 0x7f800000u | (man << 13));
    return es_fp32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

/* Round-to-nearest-even fp32 -> fp16, with overflow to inf and correct subnormals. */
static inline uint16_t es_fp32_to_fp16(float f) {
    uint32_t x = es_fp32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        float af = es_fp32_from_bits(ax);
        /* add a magic number so the FPU rounds at the half-subnormal ulp (2^-24) */
        float r = af + 0.5f;
        return (uint16_t)(sign | (es_fp32_to_bits(r) - 0x3f000000u));
    }
    uint32_t mant_odd = (ax >> 13) & 1;
    ax += 0xc8000fffu + mant_odd; /* rebias exponent (-112<<23) and round to nearest even */
    return (uint16_t)(sign | (ax >> 13));
}

static inline float es_bf16_to_fp32(uint16_t h) { return es_fp32_from_bits((uint32_t)h << 16); }

static inline uint16_t es_fp32_to_bf16(float f) {
    uint32_t x = es_fp32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); /* quiet NaN */
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

#endif
