/* Numerical kernels of the forward pass, on raw fp32 buffers with explicit sizes.
 * Shapes: N rows (batch * pos flattened), D columns. Matrices are row-major with a leading
 * dimension (ld) in elements; a weight matrix W [K, N] is given by a row stride and a column
 * stride, one of which is 1 (a transposed view is a column stride of the other). */
#ifndef CIRCUITS_KERNELS_H
#define CIRCUITS_KERNELS_H

#include "internal.h"

/* C[M, N] (ld ldc) = alpha op(A) @ op(B) + beta C, row-major, op = transpose if trans_*: CBLAS's
 * sgemm with the work split over the library's pool (each slice a single-threaded sgemm). */
void cx_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* Per-sequence products on the calling thread (nestable: each on needs an off). While on, a
 * product whose rows are the current pass's sequences (cx_gemm_sequences: the run door sets the
 * pass's batch, and returns the previous value to restore) runs each sequence's rows as their
 * own product, the sgemm calls a batch of one makes. A dataset job's kinds turn it on around
 * runs that batch rows, so a row's bits do not depend on the batch size (kernels.c "products"). */
void cx_gemm_per_sequence(bool on);
/* The rows of a product of M rows that run as one product: M / the pass's sequences in
 * per-sequence mode (when they divide M), else M. */
int64_t cx_gemm_group_rows(int64_t M);
int64_t cx_gemm_sequences(int64_t n);

/* out[M, N] (ld ldo) = bias[N] (or 0, or out itself if accumulate) + in[M, K] (ld ldi) @ W[K, N].
 * Uses CBLAS (split over the pool) when W has a unit stride, else the reference kernel. */
void cx_matmul(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, int64_t K, int64_t N,
               const float *W, int64_t w_rs, int64_t w_cs, const float *bias, bool accumulate);
/* The same, as plain loops (the reference the tests check cx_matmul against). */
void cx_matmul_ref(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, int64_t K, int64_t N,
                   const float *W, int64_t w_rs, int64_t w_cs, const float *bias, bool accumulate);

/* out[M, N] = in[M, K] @ W[K, N] on the calling thread only (for use inside pool tasks). */
void cx_matmul_serial(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, int64_t K, int64_t N,
                      const float *W, int64_t w_rs, int64_t w_cs);

/* Attention's two products for one head, on the calling thread (inside the forward's per-(batch,
 * head) tasks; run/attn_x86.c):
 *   cx_attn_scores: S[M, N] (ld lds) = q[M, dh] (ld ldq) @ k[N, dh]^T (ld ldk)
 *   cx_attn_mix:    z[M, dh] (ld ldz) = p[M, N] (ld ldp) @ v[N, dh] (ld ldv)
 * Row i uses keys 0 .. diag + i only (causal; diag >= N - 1: all): the scores after those may be
 * left unwritten, and the mix may skip p's entries there, which must be 0. AVX-512F kernels when
 * the CPU has them and dh is a multiple of 16 up to CX_ATTN_MAX_DH (cx_attn_kernels), each
 * element then one FMA chain in a fixed order, so a block of a product has the bits of the whole
 * product and zero pattern entries add exact zeros; else cx_matmul_serial over everything. */
#define CX_ATTN_MAX_DH 256
void cx_attn_scores(float *S, int64_t lds, const float *q, int64_t ldq, const float *k, int64_t ldk, int64_t M,
                    int64_t N, int64_t dh, int64_t diag);
void cx_attn_mix(float *z, int64_t ldz, const float *p, int64_t ldp, const float *v, int64_t ldv, int64_t M,
                 int64_t N, int64_t dh, int64_t diag);
bool cx_attn_kernels(int64_t dh);
/* Tests: off = true makes cx_attn_kernels() false (the OpenBLAS path), false restores it. */
void cx_attn_switch_off(bool off);

/* How many rows of `width` values a parallel row loop hands a thread at least (cx_parallel_for's
 * align): below about 16k values' work, waking a thread costs more than it saves. */
int64_t cx_rows_align(int64_t width);

/* LayerNorm in one pass per row: y[N, D] = (x - mean) / scale * w + b (w, b may be NULL),
 * scale[N] = sqrt(var + eps). The same arithmetic as the three pieces below, which the forward
 * uses instead when a hook must see the scale or the normalized value in between. */
void cx_layer_norm(float *y, float *scale, const float *x, int64_t N, int64_t D, float eps, const float *w,
                   const float *b);
/* LayerNorm, first half: xc[N, D] = x - mean(x) per row, scale[N] = sqrt(mean(xc^2) + eps). */
void cx_ln_center_scale(float *xc, float *scale, const float *x, int64_t N, int64_t D, float eps);
/* RMSNorm in one pass per row (TransformerLens's RMSNorm / RMSNormPre): y[N, D] = x / scale * w
 * (w may be NULL: RMSPre), scale[N] = sqrt(mean(x^2) + eps). The LayerNorm row kernel without
 * the centring; cx_rms_scale + cx_ln_divide + cx_affine are the same arithmetic in pieces. */
void cx_rms_norm(float *y, float *scale, const float *x, int64_t N, int64_t D, float eps, const float *w);
/* RMSNorm, first half: y[N, D] = x (a copy; y may be x), scale[N] = sqrt(mean(x^2) + eps). */
void cx_rms_scale(float *y, float *scale, const float *x, int64_t N, int64_t D, float eps);
/* Second half (LayerNorm and RMSNorm): x[N, D] /= scale[N] per row. */
void cx_ln_divide(float *x, const float *scale, int64_t N, int64_t D);
/* x[N, D] = x * w[D] + b[D] (either may be NULL). */
void cx_affine(float *x, const float *w, const float *b, int64_t N, int64_t D);

/* dst[n] = src[n] (no overlap), split over the pool from 64 Ki floats on: one core does not
 * saturate the memory bus, and the copies a run makes for its hooks and caches (the logits, the
 * attention tensors: hundreds of MB at long T) are pure bandwidth. */
void cx_copy_floats(float *dst, const float *src, size_t n);

/* Elementwise activation in place over n values (not SOLU_LN: see cx_solu). */
void cx_activation(float *x, size_t n, int act_fn);
/* x[N, D] = x * softmax(x) per row. */
void cx_solu(float *x, int64_t N, int64_t D);

/* Softmax of one row r[D] in place (the kernel of the two below). */
void cx_softmax_row(float *r, int64_t D);
/* Softmax over each row of x[N, D] in place; a row that is all -inf becomes zeros, and NaNs
 * become 0 (TransformerLens's torch.where(isnan) after softmax). */
void cx_softmax_rows(float *x, int64_t N, int64_t D);

/* Softmax of n matrices [T, T] whose entries above the diagonal are -inf: each row i over
 * columns 0..i, the rest set to 0 without being looked at. */
void cx_softmax_causal(float *x, int64_t n, int64_t T);
/* The same after P cached positions: n matrices [T, P + T], row i over columns 0 .. P + i. */
void cx_softmax_causal_past(float *x, int64_t n, int64_t T, int64_t P);
/* The same with a sliding window of `window` keys (0: none): row i over keys
 * max(0, P + i - window + 1) .. P + i, the rest 0. */
void cx_softmax_causal_window(float *x, int64_t n, int64_t T, int64_t P, int64_t window);
/* Attention scores a hook may have written: a row whose masked columns (outside the window's
 * keys) are all still -inf takes cx_softmax_causal_window's softmax over its own keys (the
 * whole-row softmax TransformerLens takes, bit for bit the fused path's, at half the exps); any
 * other row the whole-row softmax of cx_softmax_rows. */
void cx_softmax_masked(float *x, int64_t n, int64_t T, int64_t P, int64_t window);

/* Rotary position embedding in place, as TransformerLens's apply_rotary: x [B, T, nh, dh]; pair i
 * of the first rotary_dim dims of every head (cx_rope_pair: (i, i + rd/2) or (2i, 2i + 1)) at
 * position t turns by cos[t, i], sin[t, i] ([T, rd/2]): (a, b) -> (a cos - b sin, b cos + a sin);
 * dims rotary_dim .. dh pass through. */
void cx_rope_rotate(float *x, int64_t B, int64_t T, int64_t nh, int64_t dh, const circuits_config *c,
                    const float *cos_t, const float *sin_t);

/* -log_softmax(logits[t])[target] for one row of length V: -(logits[target] - mx - log(sum)) with
 * mx, sum from cx_lse_row. */
double cx_nll_row(const float *logits, int64_t V, int32_t target);
/* One row of length V: *mx = its max, returns sum_j e^(logits[j] - mx) in double (exp accurate to a
 * few double ulp), e (may be NULL) [V] gets each e^(logits[j] - mx) as a float. The softmax of the
 * loss and its gradient (metric.c) share it, so their values agree bit for bit. */
double cx_lse_row(const float *logits, int64_t V, float *mx, float *e);

/* cx_rope_rotate turning by dir * angle (dir +1 or -1: the inverse rotation, the backward's). */
void cx_rope_turn(float *x, int64_t B, int64_t T, int64_t nh, int64_t dh, const circuits_config *c,
                  const float *cos_t, const float *sin_t, float dir);

/* dst[n] += src[n]: the residual stream's additions (forward and backward). */
static inline void cx_add_into(float *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

#endif
