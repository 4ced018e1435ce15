/* FactoredMatrix: products, norms, SVD and eigenvalues of M = A·B through the small inner
 * dimension, so that a 50257 x 50257 circuit is never formed unless asked for. */
#include "factored.h"
#include "kernels.h"
#include "linalg.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#define FAIL_OOM() cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory in a factored-matrix operation")

int cx_lapack_fail(int info, const char *what)
{
    if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: LAPACK could not allocate the workspace of %s", what);
    return cx_fail(CIRCUITS_E_RANGE, "%s did not converge (LAPACK info %d)", what, info);
}

int cx_factored_alloc(circuits_factored **out, int64_t batch, int64_t l, int64_t m, int64_t r)
{
    *out = NULL;
    size_t na, nb;
    if (batch < 1 || l < 1 || m < 1 || r < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "factored matrix dimensions must be positive");
    if (!cx_mul_size((size_t)batch, (size_t)l, &na) || !cx_mul_size(na, (size_t)m, &na) ||
        !cx_mul_size((size_t)batch, (size_t)m, &nb) || !cx_mul_size(nb, (size_t)r, &nb) ||
        na > SIZE_MAX / sizeof(float) || nb > SIZE_MAX / sizeof(float))
        return cx_fail(CIRCUITS_E_RANGE, "factored matrix too large");
    circuits_factored *f = cx_calloc(1, sizeof *f);
    if (!f) return FAIL_OOM();
    f->A = cx_malloc(na * sizeof(float));
    f->B = cx_malloc(nb * sizeof(float));
    if (!f->A || !f->B) {
        circuits_factored_free(f);
        return FAIL_OOM();
    }
    f->batch = batch;
    f->l = l;
    f->m = m;
    f->r = r;
    f->n_lead = batch > 1 ? 1 : 0;
    f->lead[0] = batch;
    f->lead[1] = 1;
    *out = f;
    return CIRCUITS_OK;
}

void circuits_factored_free(circuits_factored *f)
{
    if (!f) return;
    cx_free(f->A);
    cx_free(f->B);
    cx_free(f);
}

int circuits_factored_create(circuits_factored **out, const float *A, const float *B, int64_t batch, int64_t ldim,
                             int64_t mdim, int64_t rdim)
{
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_create: out is NULL");
    *out = NULL;
    if (!A || !B) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_create: A and B must not be NULL");
    circuits_factored *f;
    int rc = cx_factored_alloc(&f, batch, ldim, mdim, rdim);
    if (rc) return rc;
    memcpy(f->A, A, (size_t)(batch * ldim * mdim) * sizeof(float));
    memcpy(f->B, B, (size_t)(batch * mdim * rdim) * sizeof(float));
    *out = f;
    return CIRCUITS_OK;
}

int circuits_factored_shape(const circuits_factored *f, int64_t *shape, int32_t *ndim, int64_t *mdim)
{
    if (!f || !shape || !ndim) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_shape: NULL argument");
    int n = 0;
    for (int i = 0; i < f->n_lead; i++) shape[n++] = f->lead[i];
    shape[n++] = f->l;
    shape[n++] = f->r;
    *ndim = n;
    if (mdim) *mdim = f->m;
    return CIRCUITS_OK;
}

static void view(circuits_tensor *t, const circuits_factored *f, float *data, int64_t rows, int64_t cols,
                 const char *name)
{
    memset(t, 0, sizeof *t);
    t->name = name;
    t->layer = -1;
    t->head = -1;
    t->head_axis = -1;
    int n = 0;
    for (int i = 0; i < f->n_lead; i++) t->shape[n++] = f->lead[i];
    t->shape[n++] = rows;
    t->shape[n++] = cols;
    t->ndim = n;
    cx_contiguous_strides(n, t->shape, t->strides);
    t->data = data;
}

int circuits_factored_factors(const circuits_factored *f, circuits_tensor *A, circuits_tensor *B)
{
    if (!f) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_factors: f is NULL");
    if (A) view(A, f, f->A, f->l, f->m, "A");
    if (B) view(B, f, f->B, f->m, f->r, "B");
    return CIRCUITS_OK;
}

/* A new object with f's leading shape and the given factor sizes. */
static int like(const circuits_factored *f, int64_t l, int64_t m, int64_t r, circuits_factored **out)
{
    int rc = cx_factored_alloc(out, f->batch, l, m, r);
    if (rc) return rc;
    (*out)->n_lead = f->n_lead;
    (*out)->lead[0] = f->lead[0];
    (*out)->lead[1] = f->lead[1];
    return CIRCUITS_OK;
}

int circuits_factored_transpose(const circuits_factored *f, circuits_factored **out)
{
    if (!f || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_transpose: NULL argument");
    *out = NULL;
    circuits_factored *t;
    int rc = like(f, f->r, f->m, f->l, &t);
    if (rc) return rc;
    /* (A B)^T = B^T A^T */
    for (int64_t b = 0; b < f->batch; b++) {
        const float *A = f->A + b * f->l * f->m, *B = f->B + b * f->m * f->r;
        float *tA = t->A + b * f->r * f->m, *tB = t->B + b * f->m * f->l;
        for (int64_t i = 0; i < f->m; i++)
            for (int64_t j = 0; j < f->r; j++) tA[j * f->m + i] = B[i * f->r + j];
        for (int64_t i = 0; i < f->l; i++)
            for (int64_t j = 0; j < f->m; j++) tB[j * f->l + i] = A[i * f->m + j];
    }
    *out = t;
    return CIRCUITS_OK;
}

/* f · X with X [batch or 1, r, n]: TransformerLens keeps (A, B X) when r > m, else (AB, X). */
static int times_dense(const circuits_factored *f, const float *X, int64_t x_batch, int64_t n, circuits_factored **out)
{
    circuits_factored *o;
    bool keep = f->r > f->m;
    int rc = keep ? like(f, f->l, f->m, n, &o) : like(f, f->l, f->r, n, &o);
    if (rc) return rc;
    for (int64_t b = 0; b < f->batch; b++) {
        const float *A = f->A + b * f->l * f->m, *B = f->B + b * f->m * f->r;
        const float *Xb = X + (x_batch > 1 ? b : 0) * f->r * n;
        if (keep) {
            memcpy(o->A + b * f->l * f->m, A, (size_t)(f->l * f->m) * sizeof(float));
            cx_mm(o->B + b * f->m * n, B, false, Xb, false, f->m, f->r, n);
        } else {
            cx_mm(o->A + b * f->l * f->r, A, false, B, false, f->l, f->m, f->r);
            memcpy(o->B + b * f->r * n, Xb, (size_t)(f->r * n) * sizeof(float));
        }
    }
    *out = o;
    return CIRCUITS_OK;
}

/* X · f with X [batch or 1, n, l]: (X A, B) when l > m, else (X, AB). */
static int dense_times(const float *X, int64_t x_batch, int64_t n, const circuits_factored *f, circuits_factored **out)
{
    circuits_factored *o;
    bool keep = f->l > f->m;
    int rc = keep ? like(f, n, f->m, f->r, &o) : like(f, n, f->l, f->r, &o);
    if (rc) return rc;
    for (int64_t b = 0; b < f->batch; b++) {
        const float *A = f->A + b * f->l * f->m, *B = f->B + b * f->m * f->r;
        const float *Xb = X + (x_batch > 1 ? b : 0) * n * f->l;
        if (keep) {
            cx_mm(o->A + b * n * f->m, Xb, false, A, false, n, f->l, f->m);
            memcpy(o->B + b * f->m * f->r, B, (size_t)(f->m * f->r) * sizeof(float));
        } else {
            memcpy(o->A + b * n * f->l, Xb, (size_t)(n * f->l) * sizeof(float));
            cx_mm(o->B + b * f->l * f->r, A, false, B, false, f->l, f->m, f->r);
        }
    }
    *out = o;
    return CIRCUITS_OK;
}

int circuits_factored_matmul_dense(const circuits_factored *f, const float *X, int64_t x_batch, int64_t n,
                                   circuits_factored **out)
{
    if (!f || !X || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_matmul_dense: NULL argument");
    *out = NULL;
    if (n < 1 || (x_batch != 1 && x_batch != f->batch))
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_factored_matmul_dense: X must be [1 or %lld, %lld, n >= 1]",
                       (long long)f->batch, (long long)f->r);
    return times_dense(f, X, x_batch, n, out);
}

int circuits_factored_rmatmul_dense(const float *X, int64_t x_batch, int64_t n, const circuits_factored *f,
                                    circuits_factored **out)
{
    if (!f || !X || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_rmatmul_dense: NULL argument");
    *out = NULL;
    if (n < 1 || (x_batch != 1 && x_batch != f->batch))
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_factored_rmatmul_dense: X must be [1 or %lld, n >= 1, %lld]",
                       (long long)f->batch, (long long)f->l);
    return dense_times(X, x_batch, n, f, out);
}

int circuits_factored_matmul(const circuits_factored *left, const circuits_factored *right, circuits_factored **out)
{
    if (!left || !right || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_matmul: NULL argument");
    *out = NULL;
    if (left->r != right->l)
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_factored_matmul: inner dimensions %lld and %lld differ",
                       (long long)left->r, (long long)right->l);
    if (right->batch != 1 && left->batch != 1 && right->batch != left->batch)
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_factored_matmul: batch sizes %lld and %lld do not broadcast",
                       (long long)left->batch, (long long)right->batch);
    /* (left @ right.A) @ right.B, as TransformerLens does */
    const circuits_factored *big = left->batch >= right->batch ? left : right;
    circuits_factored *bl = NULL, *mid = NULL;
    int rc = CIRCUITS_OK;
    if (left->batch < big->batch) { /* broadcast left over right's batch */
        if ((rc = like(big, left->l, left->m, left->r, &bl))) return rc;
        for (int64_t b = 0; b < big->batch; b++) {
            memcpy(bl->A + b * left->l * left->m, left->A, (size_t)(left->l * left->m) * sizeof(float));
            memcpy(bl->B + b * left->m * left->r, left->B, (size_t)(left->m * left->r) * sizeof(float));
        }
        left = bl;
    }
    if ((rc = times_dense(left, right->A, right->batch, right->m, &mid)) == CIRCUITS_OK)
        rc = times_dense(mid, right->B, right->batch, right->r, out);
    circuits_factored_free(mid);
    circuits_factored_free(bl);
    return rc;
}

int circuits_factored_matvec(const circuits_factored *f, const float *x, float *y)
{
    if (!f || !x || !y) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_matvec: NULL argument");
    float *t = cx_malloc((size_t)f->m * sizeof *t);
    if (!t) return FAIL_OOM();
    for (int64_t b = 0; b < f->batch; b++) { /* y = A (B x) */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)f->m, (blasint)f->r, 1.0f, f->B + b * f->m * f->r,
                    (blasint)f->r, x, 1, 0.0f, t, 1);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)f->l, (blasint)f->m, 1.0f, f->A + b * f->l * f->m,
                    (blasint)f->m, t, 1, 0.0f, y + b * f->l, 1);
    }
    cx_free(t);
    return CIRCUITS_OK;
}

int circuits_factored_vecmat(const float *x, const circuits_factored *f, float *y)
{
    if (!f || !x || !y) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_vecmat: NULL argument");
    float *t = cx_malloc((size_t)f->m * sizeof *t);
    if (!t) return FAIL_OOM();
    for (int64_t b = 0; b < f->batch; b++) { /* y = (x A) B */
        cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)f->l, (blasint)f->m, 1.0f, f->A + b * f->l * f->m,
                    (blasint)f->m, x, 1, 0.0f, t, 1);
        cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)f->m, (blasint)f->r, 1.0f, f->B + b * f->m * f->r,
                    (blasint)f->r, t, 1, 0.0f, y + b * f->r, 1);
    }
    cx_free(t);
    return CIRCUITS_OK;
}

int64_t cx_qr_work(int64_t rows, int64_t n)
{
    int64_t k = rows < n ? rows : n;
    return k * k + k * n; /* sgeqrt's T [k, k] and work [k, n] */
}

int cx_qr_r_cm(float *A, int64_t rows, int64_t n, float *R, float *work)
{
    int64_t k = rows < n ? rows : n;
    /* sgeqrt with one block of all k columns: LAPACK's recursive, GEMM-rich Householder QR
     * (sgeqrf leaves matrices under 128 columns to its level-2 loop, several times slower);
     * column-major in, so LAPACKE neither transposes nor allocates. */
    lapack_int info = LAPACKE_sgeqrt_work(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)n, (lapack_int)k, A,
                                          (lapack_int)rows, work, (lapack_int)k, work + k * k);
    if (info != 0) return cx_lapack_fail((int)info, "QR factorisation");
    /* R [k, n]: upper triangular, or upper trapezoidal when rows < n; R(i, j) = A[i + j rows] */
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < n; j++) R[i * n + j] = j >= i ? A[i + j * rows] : 0.0f;
    return CIRCUITS_OK;
}

int cx_qr_r(const float *X, int64_t rows, int64_t n, int64_t ld, float *R)
{
    int64_t nw = cx_qr_work(rows, n);
    float *W = cx_malloc((size_t)(rows * n) * sizeof *W), *work = cx_malloc((size_t)nw * sizeof *work);
    int rc = (!W || !work) ? FAIL_OOM() : CIRCUITS_OK;
    if (!rc) {
        for (int64_t i = 0; i < rows; i++) /* column-major copy */
            for (int64_t j = 0; j < n; j++) W[i + j * rows] = X[i * ld + j];
        rc = cx_qr_r_cm(W, rows, n, R, work);
    }
    cx_free(W);
    cx_free(work);
    return rc;
}

/* Thin SVD of X [rows, cols]: U [rows, k], S [k], Vt [k, cols], k = min(rows, cols). */
static int svd_thin(const float *X, int64_t rows, int64_t cols, float *U, float *S, float *Vt)
{
    int64_t k = rows < cols ? rows : cols;
    float *W = cx_malloc((size_t)(rows * cols) * sizeof *W);
    if (!W) return FAIL_OOM();
    memcpy(W, X, (size_t)(rows * cols) * sizeof *W);
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)rows, (lapack_int)cols, W, (lapack_int)cols,
                                     S, U, (lapack_int)k, Vt, (lapack_int)cols);
    cx_free(W);
    if (info != 0) return cx_lapack_fail((int)info, "SVD");
    return CIRCUITS_OK;
}

int cx_factored_svd1(const float *A, const float *B, int64_t l, int64_t m, int64_t r, float *U, float *S, float *V)
{
    int64_t ka = l < m ? l : m, kb = m < r ? m : r, k = ka < kb ? ka : kb;
    size_t need = (size_t)(l * ka + ka + ka * m + m * kb + kb + kb * r + ka * kb + ka * k + k + k * kb);
    float *buf = cx_malloc(need * sizeof *buf);
    if (!buf) return FAIL_OOM();
    float *Ua = buf, *Sa = Ua + l * ka, *Vat = Sa + ka, *Ub = Vat + ka * m, *Sb = Ub + m * kb, *Vbt = Sb + kb,
          *mid = Vbt + kb * r, *Um = mid + ka * kb, *Sm = Um + ka * k, *Vmt = Sm + k;
    int rc = svd_thin(A, l, m, Ua, Sa, Vat);
    if (!rc) rc = svd_thin(B, m, r, Ub, Sb, Vbt);
    if (!rc) {
        /* middle = diag(Sa) Vat Ub diag(Sb)  [ka, kb] */
        cx_mm(mid, Vat, false, Ub, false, ka, m, kb);
        for (int64_t i = 0; i < ka; i++)
            for (int64_t j = 0; j < kb; j++) mid[i * kb + j] *= Sa[i] * Sb[j];
        rc = svd_thin(mid, ka, kb, Um, Sm, Vmt);
    }
    if (!rc) {
        cx_mm(U, Ua, false, Um, false, l, ka, k); /* U = Ua Um */
        memcpy(S, Sm, (size_t)k * sizeof *S);
        /* V = Vbt^T Vmt^T  [r, k] */
        cx_sgemm(true, true, r, k, kb, 1.0f, Vbt, r, Vmt, kb, 0.0f, V, k);
    }
    cx_free(buf);
    return rc;
}

static int64_t kdim(const circuits_factored *f)
{
    int64_t k = f->l < f->m ? f->l : f->m;
    return k < f->r ? k : f->r;
}

int circuits_factored_svd(const circuits_factored *f, float *U, float *S, float *V)
{
    if (!f || !S) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_svd: f and S must not be NULL");
    int64_t k = kdim(f);
    float *u = U, *v = V;
    if (!U) u = cx_malloc((size_t)(f->l * k) * sizeof *u);
    if (!V) v = cx_malloc((size_t)(f->r * k) * sizeof *v);
    int rc = (!u || !v) ? FAIL_OOM() : CIRCUITS_OK;
    for (int64_t b = 0; b < f->batch && !rc; b++)
        rc = cx_factored_svd1(f->A + b * f->l * f->m, f->B + b * f->m * f->r, f->l, f->m, f->r,
                              U ? U + b * f->l * k : u, S + b * k, V ? V + b * f->r * k : v);
    if (!U) cx_free(u);
    if (!V) cx_free(v);
    return rc;
}

int circuits_factored_norm(const circuits_factored *f, float *out)
{
    if (!f || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_norm: NULL argument");
    /* ||AB||_F^2 = sum_ij (A^T A)_ij (B B^T)_ij: two [m, m] Gram matrices, in double */
    int64_t m = f->m;
    double *ga = cx_malloc((size_t)(m * m) * sizeof *ga), *gb = cx_malloc((size_t)(m * m) * sizeof *gb);
    if (!ga || !gb) {
        cx_free(ga);
        cx_free(gb);
        return FAIL_OOM();
    }
    for (int64_t b = 0; b < f->batch; b++) {
        const float *A = f->A + b * f->l * m, *B = f->B + b * m * f->r;
        memset(ga, 0, (size_t)(m * m) * sizeof *ga);
        for (int64_t i = 0; i < f->l; i++)
            for (int64_t p = 0; p < m; p++)
                for (int64_t q = 0; q < m; q++) ga[p * m + q] += (double)A[i * m + p] * A[i * m + q];
        for (int64_t p = 0; p < m; p++)
            for (int64_t q = 0; q < m; q++) {
                double s = 0;
                for (int64_t j = 0; j < f->r; j++) s += (double)B[p * f->r + j] * B[q * f->r + j];
                gb[p * m + q] = s;
            }
        double n2 = 0;
        for (int64_t i = 0; i < m * m; i++) n2 += ga[i] * gb[i];
        out[b] = (float)sqrt(n2 > 0 ? n2 : 0);
    }
    cx_free(ga);
    cx_free(gb);
    return CIRCUITS_OK;
}

int circuits_factored_eigenvalues(const circuits_factored *f, float *re, float *im)
{
    if (!f || !re || !im) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_eigenvalues: NULL argument");
    if (f->l != f->r)
        return cx_fail(CIRCUITS_E_SHAPE, "eigenvalues need a square matrix (this one is %lld x %lld)", (long long)f->l,
                       (long long)f->r);
    int64_t m = f->m;
    float *BA = cx_malloc((size_t)(m * m) * sizeof *BA);
    if (!BA) return FAIL_OOM();
    int rc = CIRCUITS_OK;
    for (int64_t b = 0; b < f->batch && !rc; b++) {
        /* the non-zero eigenvalues of AB [l, l] are those of BA [m, m] */
        cx_mm(BA, f->B + b * m * f->r, false, f->A + b * f->l * m, false, m, f->r, m);
        lapack_int info = LAPACKE_sgeev(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)m, BA, (lapack_int)m, re + b * m,
                                        im + b * m, NULL, 1, NULL, 1);
        if (info != 0) rc = cx_lapack_fail((int)info, "eigenvalue computation");
    }
    cx_free(BA);
    return rc;
}

int circuits_factored_corner(const circuits_factored *f, int64_t k, float *out)
{
    if (!f || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_corner: NULL argument");
    if (k < 1 || k > f->l || k > f->r)
        return cx_fail(CIRCUITS_E_RANGE, "corner size %lld must be in [1, min(%lld, %lld)]", (long long)k,
                       (long long)f->l, (long long)f->r);
    for (int64_t b = 0; b < f->batch; b++) /* A[:k, :] @ B[:, :k] */
        cx_sgemm(false, false, k, k, f->m, 1.0f, f->A + b * f->l * f->m, f->m, f->B + b * f->m * f->r, f->r, 0.0f,
                 out + b * k * k, k);
    return CIRCUITS_OK;
}

int circuits_factored_materialize(const circuits_factored *f, float *out, size_t max_elements)
{
    if (!f || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_materialize: NULL argument");
    size_t n;
    if (!cx_mul_size((size_t)f->batch, (size_t)f->l, &n) || !cx_mul_size(n, (size_t)f->r, &n) || n > max_elements)
        return cx_fail(CIRCUITS_E_RANGE,
                       "materialising [%lld, %lld, %lld] exceeds the guard of %zu elements (raise max_elements to allow it)",
                       (long long)f->batch, (long long)f->l, (long long)f->r, max_elements);
    for (int64_t b = 0; b < f->batch; b++)
        cx_mm(out + b * f->l * f->r, f->A + b * f->l * f->m, false, f->B + b * f->m * f->r, false, f->l, f->m, f->r);
    return CIRCUITS_OK;
}

/* ---- top-k ---- */

typedef struct topk {
    int64_t k, n;
    float *v;
    int64_t *row, *col;
} topk;

/* Keeps the k largest seen so far, sorted descending (k is small: insertion). */
static void topk_push(topk *t, float v, int64_t r, int64_t c)
{
    if (isnan(v)) return;
    if (t->n == t->k && v <= t->v[t->n - 1]) return;
    int64_t i = t->n < t->k ? t->n++ : t->k - 1;
    while (i > 0 && t->v[i - 1] < v) {
        t->v[i] = t->v[i - 1];
        t->row[i] = t->row[i - 1];
        t->col[i] = t->col[i - 1];
        i--;
    }
    t->v[i] = v;
    t->row[i] = r;
    t->col[i] = c;
}

#define TOPK_BLOCK_ROWS 256

int circuits_factored_topk(const circuits_factored *f, int64_t batch_index, int32_t axis, int64_t index, int64_t k,
                           float *values, int64_t *rows, int64_t *cols, int64_t *out_count)
{
    if (!f || !values || !rows || !cols)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_topk: NULL argument");
    if (batch_index < 0 || batch_index >= f->batch)
        return cx_fail(CIRCUITS_E_RANGE, "batch index %lld out of range [0, %lld)", (long long)batch_index,
                       (long long)f->batch);
    if (k < 1) return cx_fail(CIRCUITS_E_RANGE, "top-k needs k >= 1");
    const float *A = f->A + batch_index * f->l * f->m, *B = f->B + batch_index * f->m * f->r;
    topk t = {k, 0, values, rows, cols};
    if (axis == CIRCUITS_TOPK_ROW || axis == CIRCUITS_TOPK_COLUMN) {
        bool row = axis == CIRCUITS_TOPK_ROW;
        int64_t lim = row ? f->l : f->r, len = row ? f->r : f->l;
        if (index < 0 || index >= lim)
            return cx_fail(CIRCUITS_E_RANGE, "%s %lld out of range [0, %lld)", row ? "row" : "column", (long long)index,
                           (long long)lim);
        float *line = cx_malloc((size_t)len * sizeof *line);
        if (!line) return FAIL_OOM();
        if (row) /* A[index, :] @ B */
            cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)f->m, (blasint)f->r, 1.0f, B, (blasint)f->r, A + index * f->m,
                        1, 0.0f, line, 1);
        else /* A @ B[:, index] */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)f->l, (blasint)f->m, 1.0f, A, (blasint)f->m, B + index,
                        (blasint)f->r, 0.0f, line, 1);
        for (int64_t i = 0; i < len; i++) topk_push(&t, line[i], row ? index : i, row ? i : index);
        cx_free(line);
    } else if (axis == CIRCUITS_TOPK_ALL) {
        /* blocks of rows of AB: never more than TOPK_BLOCK_ROWS x r floats at once */
        float *blk = cx_malloc((size_t)(TOPK_BLOCK_ROWS * f->r) * sizeof *blk);
        if (!blk) return FAIL_OOM();
        for (int64_t r0 = 0; r0 < f->l; r0 += TOPK_BLOCK_ROWS) {
            int64_t nr = f->l - r0 < TOPK_BLOCK_ROWS ? f->l - r0 : TOPK_BLOCK_ROWS;
            cx_mm(blk, A + r0 * f->m, false, B, false, nr, f->m, f->r);
            for (int64_t i = 0; i < nr; i++)
                for (int64_t j = 0; j < f->r; j++) topk_push(&t, blk[i * f->r + j], r0 + i, j);
        }
        cx_free(blk);
    } else {
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "top-k axis must be CIRCUITS_TOPK_ROW, _COLUMN or _ALL");
    }
    if (out_count) *out_count = t.n;
    return CIRCUITS_OK;
}

int circuits_factored_diagonal(const circuits_factored *f, float *out)
{
    if (!f || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_factored_diagonal: NULL argument");
    int64_t n = f->l < f->r ? f->l : f->r;
    for (int64_t b = 0; b < f->batch; b++) { /* diag_i = A[i, :] . B[:, i] */
        const float *A = f->A + b * f->l * f->m, *B = f->B + b * f->m * f->r;
        for (int64_t i = 0; i < n; i++) {
            double s = 0;
            for (int64_t k = 0; k < f->m; k++) s += (double)A[i * f->m + k] * B[k * f->r + i];
            out[b * n + i] = (float)s;
        }
    }
    return CIRCUITS_OK;
}
