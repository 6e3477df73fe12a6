/* rng.h — a small seeded PRNG (xoshiro256** seeded by splitmix64). State lives in the caller's
 * struct: there is no global generator, so every sampler / synth run is reproducible from its seed. */
#ifndef ES_UTIL_RNG_H
#define ES_UTIL_RNG_H

#include <stdint.h>

typedef struct es_rng { uint64_t s[4]; } es_rng;

static inline uint64_t es_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void es_rng_seed(es_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = es_splitmix64(&seed);
}

static inline uint64_t es_rng_next(es_rng *r) {
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5, res = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return res;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double es_rng_uniform(es_rng *r) { return (double)(es_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

/* Approximately normal(0,1) via Box-Muller (used for synthetic weights only). */
double es_rng_normal(es_rng *r);

#endif
