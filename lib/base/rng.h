/* The library's one pseudo-random stream: splitmix64 (Steele, Lea, Flood 2014), chosen because
 * a seed then reproduces the same draws on every platform (repeated tokens, sampling,
 * composition baselines). */
#ifndef CIRCUITS_RNG_H
#define CIRCUITS_RNG_H

#include <stdint.h>

static inline uint64_t cx_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
