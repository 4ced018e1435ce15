/* The vector kernels of the products with stored weights (run/qmatmul.c): x86-64 AVX2 + FMA +
 * F16C, compiled with target attributes and used only when the CPU has them (checked once at
 * run time); every other machine takes the portable path of qmatmul.c. The dequantized values
 * are the same as cx_dequantize_row's (the same fp32 operations in the same order, without
 * contraction); dot products accumulate in fp32 with FMA. Files: run/qkernels_x86.c. */
#ifndef CIRCUITS_QKERNELS_H
#define CIRCUITS_QKERNELS_H

#include "quant.h"

/* Values dequantized at once by the kernels: a chunk of a row (one K-quant block, eight 32-value
 * blocks, or 256 F16 / BF16 / F32 values). */
enum { CX_QCHUNK = 256 };

/* True when this CPU runs the kernels below (AVX2, FMA, F16C) and they are not switched off. */
bool cx_qk_available(void);
/* Tests: off = true makes cx_qk_available() false (the portable path), false restores it. */
void cx_qk_switch_off(bool off);

/* dst[len] = values k0 .. k0+len-1 of a stored row of dt (k0 and len multiples of dt's block;
 * len <= CX_QCHUNK for the dot, any for tiles). Only when cx_qk_available(). */
void cx_qk_dequantize(cx_dtype dt, const uint8_t *row, int64_t k0, int64_t len, float *dst);

/* Types whose fused kernel reads quants as 32-bit lanes (the K-quants and Q8_0) want their
 * inputs permuted within every 32 values: xp[M, K] (ld K) = cx_qk_permute(x). */
bool cx_qk_permuted(cx_dtype dt);
void cx_qk_permute(const float *x, int64_t ldx, int64_t M, int64_t K, float *xp);

/* sums[m] = sum_k x[m * ldx + k] * W[k] over the K values of one stored row, m < M <= 4, fp32
 * accumulation (FMA), each weight the dequantized value computed in registers. x permuted by cx_qk_permute when
 * cx_qk_permuted(dt). Only when cx_qk_available(). */
void cx_qk_dot_rows(cx_dtype dt, const uint8_t *row, int64_t K, const float *x, int64_t ldx, int M, float *sums);

#endif
