#include "util/rng.h"

#include <math.h>

double es_rng_normal(es_rng *r) {
    double u1 = es_rng_uniform(r), u2 = es_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
