/* Factored matrices M = A·B (TransformerLens's FactoredMatrix), batched: A [batch, l, m],
 * B [batch, m, r], both contiguous row-major and owned by the object. */
#ifndef CIRCUITS_FACTORED_H
#define CIRCUITS_FACTORED_H

#include "internal.h"

struct circuits_factored {
    int64_t batch, l, m, r;
    int32_t n_lead;          /* leading dims as the user sees them: 0, 1 ([batch]) or 2 */
    int64_t lead[2];         /* e.g. [n_layers, n_heads] */
    float *A;                /* [batch, l, m] */
    float *B;                /* [batch, m, r] */
};

/* Allocates an object with uninitialised factors of the given sizes. */
int cx_factored_alloc(circuits_factored **out, int64_t batch, int64_t l, int64_t m, int64_t r);

/* Thin SVD of one A [l, m] · B [m, r] without forming it (TransformerLens's algorithm: SVD of
 * each factor, then of the small middle). U [l, k], S [k], V [r, k], k = min(l, m, r). */
int cx_factored_svd1(const float *A, const float *B, int64_t l, int64_t m, int64_t r, float *U, float *S,
                     float *V);

/* R factor of the QR of X [rows, n] (row stride ld), without pivoting: [k, n] row-major with
 * k = min(rows, n), zeros below the diagonal. rows >= n: the thin QR, R upper triangular
 * [n, n]; rows < n (a wide X): Q [rows, rows] orthogonal, R upper trapezoidal. Either way
 * X = Q R with Q^T Q = I, whatever the rank of X. */
int cx_qr_r(const float *X, int64_t rows, int64_t n, int64_t ld, float *R);

/* The same for a column-major A [rows, n] (leading dimension rows), which it overwrites, with a
 * caller's workspace of cx_qr_work(rows, n) floats: no allocation, so it can run in pool tasks
 * with scratch allocated up front. */
int64_t cx_qr_work(int64_t rows, int64_t n);
int cx_qr_r_cm(float *A, int64_t rows, int64_t n, float *R, float *work);

/* The error for a non-zero LAPACKE info from `what`: CIRCUITS_E_OUT_OF_MEMORY when LAPACKE could
 * not allocate its workspace (it uses plain malloc, which tests cannot fail), else
 * CIRCUITS_E_RANGE (no convergence). */
int cx_lapack_fail(int info, const char *what);

#endif
