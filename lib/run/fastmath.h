/* The fast elementwise math of the fp32 kernels (kernels.c, grad_kernels.c), one copy: exp and
 * tanh written with plain arithmetic so that the loops over them vectorise, and CX_HOT, the
 * attribute that gives a hot loop an AVX2 clone. */
#ifndef CIRCUITS_FASTMATH_H
#define CIRCUITS_FASTMATH_H

#include <stdint.h>

/* Hot loops get an x86-64-v3 (AVX2, FMA) clone next to the baseline x86-64 one; the loader picks by CPU. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) \
    && !defined(__SANITIZE_THREAD__) /* sanitizers instrument ifunc resolvers, which run before them */
#define CX_HOT __attribute__((target_clones("arch=x86-64-v3", "default"), optimize("O3", "no-trapping-math")))
#else
#define CX_HOT
#endif

/* e^x for x <= 88.3 (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial for e^r,
 * 2^n by exponent bits); max relative error about 2 ulp; 0 below -87.3 (where e^x underflows
 * to denormals) and for -inf. Written with plain arithmetic so that loops over it vectorise. */
static inline __attribute__((always_inline)) float exp_poly(float x)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float big = x < 88.3f ? x : 88.3f;
    float xc = big > -87.3f ? big : -87.3f;
    float t = xc * 1.44269504088896341f + shifter;
    union { float f; int32_t i; } ts = {t}, scale;
    float n = t - shifter;
    int32_t ni = ts.i - 0x4B400000; /* the integer n */
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    scale.i = (ni + 127) << 23;
    float y = p * scale.f;
    return x > -87.3f ? y : 0.0f;
}

/* tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|): no overflow, absolute error ~1e-7. */
static inline __attribute__((always_inline)) float tanh_poly(float u)
{
    float a = u < 0.0f ? -u : u;
    float e = exp_poly(-2.0f * a);
    float t = (1.0f - e) / (1.0f + e);
    return u < 0.0f ? -t : t;
}

#endif
