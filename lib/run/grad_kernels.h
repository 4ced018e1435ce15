/* The backward of each forward kernel (kernels.h) and of the metrics: given the gradient of an
 * operation's output, the gradient of its input (and of its weights, accumulated). Plain loops
 * on raw fp32 buffers, sums in double where a row is reduced; each checked against finite
 * differences of a double-precision forward in tests/test_grad_kernels.c. backward.c chains them
 * in the reverse of forward.c's order, applying the hooks in between.
 *
 * Shapes as kernels.h: N rows, D (or width) columns, row-major, contiguous unless a leading
 * dimension is given. "dx" names the gradient with respect to x. */
#ifndef CIRCUITS_GRAD_KERNELS_H
#define CIRCUITS_GRAD_KERNELS_H

#include "internal.h"

/* LayerNorm / RMSNorm in TransformerLens's pieces, each hook between them:
 *   centered = x - mean(x) (LayerNorm) or x (RMSNorm)
 *   scale_f  = sqrt(mean(centered^2) + eps)      -> hook_scale      (a hook may change it: scale_u)
 *   n_f      = centered / scale_u                -> hook_normalized (a hook may change it: n_u)
 *   out      = n_u * w + b                       (cx_affine)
 * backward.c calls, in order: cx_affine_backward (dn_u from dout), the edit rule (dn_f),
 * cx_ln_normalized_backward (dcent, dscale_u), the hook_scale backward hooks and edit rule
 * (dscale_f), cx_ln_scale_backward (dx). */

/* dx[N, D] = dout * w (w NULL: dout); dw[D] += sum_n dout * x, db[D] += sum_n dout (either may be
 * NULL). x is the affine's input. dx may be dout. */
void cx_affine_backward(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w, int64_t N,
                        int64_t D);

/* dcent[N, D] = dn / scale_u; dscale_u[N] = -sum_j dn * n_f / scale_u (n_f: the normalized value
 * before any hook edit, = centered / scale_u). dcent may be dn. */
void cx_ln_normalized_backward(float *dcent, float *dscale_u, const float *dn, const float *n_f, const float *scale_u,
                               int64_t N, int64_t D);

/* dx[N, D] from dcent and dscale_f (the gradient at scale_f; NULL: 0): with centered = n_f * scale_u,
 * dcent += dscale_f * centered / (D * scale_f); then dx = dcent - mean(dcent) (LayerNorm) or dcent
 * (rms). dx may be dcent. */
void cx_ln_scale_backward(float *dx, const float *dcent, const float *dscale_f, const float *n_f,
                          const float *scale_u, const float *scale_f, int64_t N, int64_t D, bool rms);

/* dx[n] = dy[n] * act'(x[n]) for cx_activation's functions (x: the activation's input; not
 * SOLU_LN). dx may be dy. */
void cx_activation_backward(float *dx, const float *dy, const float *x, size_t n, int act_fn);

/* y = x * softmax(x) per row (cx_solu): dx[N, D] from dy, x. dx may be dy. */
void cx_solu_backward(float *dx, const float *dy, const float *x, int64_t N, int64_t D);

/* p = softmax(s) per row of width D: ds[N, D] = p * (dp - sum_j p dp) (p: the softmax's own output,
 * before any hook edit). Rows of p that are all 0 (no key) give ds = 0. ds may be dp. */
void cx_softmax_backward(float *ds, const float *dp, const float *p, int64_t N, int64_t D);

/* y = cap * tanh(x / cap): dx[n] = dy * (1 - (y / cap)^2) from the capped y. -inf entries of y (masked
 * scores) give 0. dx may be dy. */
void cx_softcap_backward(float *dx, const float *dy, const float *y, size_t n, float cap);

/* The inverse rotation of cx_rope_rotate (same arguments): the gradient of a rotated q or k back to
 * the unrotated one (rotations are orthogonal: the transpose turns by -angle). */
void cx_rope_rotate_backward(float *dx, int64_t B, int64_t T, int64_t nh, int64_t dh, const circuits_config *c,
                             const float *cos_t, const float *sin_t);

#endif
