/* Small dense helpers on weight views, shared by the circuit builders (circuits.c), the
 * composition and copying scores (compose.c) and factored matrices (factored.c). All outputs
 * are contiguous row-major fp32; the products go through cx_sgemm. */
#ifndef CIRCUITS_LINALG_H
#define CIRCUITS_LINALG_H

#include "internal.h"

/* C [M, N] = op(X) @ op(Y), op(X) [M, K], op(Y) [K, N]: X is stored [M, K] (or [K, M] when tx
 * transposes it), Y [K, N] (or [N, K] when ty), all contiguous. */
void cx_mm(float *C, const float *X, bool tx, const float *Y, bool ty, int64_t M, int64_t K, int64_t N);

/* A 2-D weight view W [rows, cols] (any strides) copied into dst as contiguous [rows, cols]. */
void cx_weight_dense(float *dst, const circuits_tensor *W);

/* Head h of a [H, a, b] weight view (W_Q, W_K, W_V, W_O) as a contiguous [a, b], or its
 * transpose [b, a]. */
void cx_head_matrix(float *dst, const circuits_tensor *W, int64_t h, bool transpose);

/* The K/V head query head h reads in layer L: h / (n_heads / n_key_value_heads) under
 * grouped-query attention (TransformerLens's W_K / W_V properties repeat_interleave the K/V
 * heads), else h. For the head index of W_K, W_V (whose first dim is n_key_value_heads). */
static inline int64_t cx_kv_head(const cx_layer_weights *L, int64_t h)
{
    return h / (L->W_Q->shape[0] / L->W_K->shape[0]);
}

/* C [M, n] = W @ X for a 2-D weight view W [M, K] (W_E, W_pos, W_U: row-major or transposed,
 * else plain loops with double sums) and a contiguous X [K, n]. */
void cx_weight_times(float *C, const circuits_tensor *W, const float *X, int64_t n);

#endif
