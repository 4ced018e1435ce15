/* Reproducible random numbers for tests: splitmix64, uniform [0, 1), and Box-Muller normals
 * (one value per call). The same seed gives the same stream on every platform. */
#ifndef CIRCUITS_TESTS_RNG_H
#define CIRCUITS_TESTS_RNG_H

#include <math.h>
#include <stdint.h>

#include "../lib/base/rng.h"

typedef struct rng { uint64_t s; } rng;

static inline uint64_t rng_u64(rng *g) { return cx_splitmix64(&g->s); }

static inline double rng_unif(rng *g) { return (double)(rng_u64(g) >> 11) * 0x1.0p-53; }

static inline double rng_gauss(rng *g)
{
    double u1 = ((double)(rng_u64(g) >> 11) + 1.0) * 0x1.0p-53, u2 = rng_unif(g);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

#endif
