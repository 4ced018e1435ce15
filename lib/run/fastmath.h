/* The fast elementwise math of the fp32 kernels (kernels.c, grad_kernels.c), one copy: exp and
 * tanh written with plain arithmetic so that the loops over them vectorise, and CX_HOT, the
 * attribute that gives a hot loop an AVX2 clone. */
#ifndef CIRCUITS_FASTMATH_H
#define CIRCUITS_FASTMATH_H

#include <stdint.h>

/* Independent partial sums (or maxima) a hot loop keeps instead of one running value, so that it
 * vectorises without -ffast-math reordering anything else. */
#define LANES 8

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

/* e^x in double for -708 <= x <= 0 (a softmax's shifted logits), 0 below, NaN for NaN (as libm:
 * a NaN logit makes its loss NaN instead of being left out of the sum): x = n ln2 + r,
 * |r| <= ln2 / 2, e^r by its Taylor series to degree 13 (truncation < 5e-18 relative), 2^n by
 * exponent bits; within about 2 double ulp of libm's exp, and a loop over it vectorises. */
static inline __attribute__((always_inline)) double exp_poly_d(double x)
{
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52: adding it rounds to an integer */
    double xc = x < -708.0 ? -708.0 : x; /* NaN stays NaN, and so does the result */
    double t = xc * 1.4426950408889634 + shifter;
    union { double f; int64_t i; } ts = {t}, scale;
    double n = t - shifter;
    int64_t ni = ts.i - 0x4338000000000000LL; /* the integer n */
    double r = xc - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0; /* 1 / 13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    scale.i = (ni + 1023) << 52;
    double y = p * scale.f;
    return x < -708.0 ? 0.0 : y;
}

#endif
