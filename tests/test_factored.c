/* FactoredMatrix against dense double-precision math on random matrices (products, SVD,
 * eigenvalues, norms, corners, diagonals, top-k, errors), and the circuits of small random
 * models written here in TransformerLens layout: invariances of composition scores under
 * reparametrisations that leave QK and OV unchanged, brute-force composition and MLP
 * composition scores, the random baseline against draws made here, copying scores of
 * identity-like heads, and virtual weights / composition circuits / full circuits against
 * their dense formulas.
 * Usage: test_factored */
#include "testutil.h"
#include "rng.h"
#include "st_write.h"

#include <errno.h>
#include <ftw.h>
#include <lapacke.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------- */
/* Random numbers and dense double-precision matrices                                        */
/* ---------------------------------------------------------------------------------------- */

/* rng, rng_u64, rng_unif, rng_gauss: tests/rng.h */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_factored: out of memory\n");
        exit(2);
    }
    return p;
}

static float *gauss_f(rng *g, size_t n, double scale)
{
    float *x = xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * rng_gauss(g));
    return x;
}

/* A dense row-major double matrix. */
typedef struct dm {
    int64_t r, c;
    double *d;
} dm;

static dm dm_new(int64_t r, int64_t c)
{
    dm m = {r, c, xmalloc((size_t)(r * c) * sizeof(double))};
    memset(m.d, 0, (size_t)(r * c) * sizeof(double));
    return m;
}

static void dm_free(dm *m)
{
    free(m->d);
    m->d = NULL;
}

/* A [r, c] float block (row stride c) as doubles. */
static dm dm_from(const float *x, int64_t r, int64_t c)
{
    dm m = dm_new(r, c);
    for (int64_t i = 0; i < r * c; i++) m.d[i] = x[i];
    return m;
}

static dm dm_mul(dm a, dm b)
{
    if (a.c != b.r) {
        fprintf(stderr, "test_factored: dm_mul %lldx%lld by %lldx%lld\n", (long long)a.r, (long long)a.c,
                (long long)b.r, (long long)b.c);
        exit(2);
    }
    dm m = dm_new(a.r, b.c);
    for (int64_t i = 0; i < a.r; i++)
        for (int64_t k = 0; k < a.c; k++) {
            double x = a.d[i * a.c + k];
            for (int64_t j = 0; j < b.c; j++) m.d[i * b.c + j] += x * b.d[k * b.c + j];
        }
    return m;
}

/* a · b, freeing both operands (for chains). */
static dm dm_mul_free(dm a, dm b)
{
    dm m = dm_mul(a, b);
    dm_free(&a);
    dm_free(&b);
    return m;
}

static dm dm_t(dm a)
{
    dm m = dm_new(a.c, a.r);
    for (int64_t i = 0; i < a.r; i++)
        for (int64_t j = 0; j < a.c; j++) m.d[j * a.r + i] = a.d[i * a.c + j];
    return m;
}

static dm dm_copy(dm a)
{
    dm m = dm_new(a.r, a.c);
    memcpy(m.d, a.d, (size_t)(a.r * a.c) * sizeof(double));
    return m;
}

static double frob_d(const double *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}

static double dm_frob(dm a) { return frob_d(a.d, (size_t)(a.r * a.c)); }

/* max |got - want| / max(max |want|, floor): a relative error on the scale of the matrix. */
static double rel_err(const float *got, const double *want, size_t n, double floor)
{
    double e = 0, s = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= e)) e = d; /* NaN propagates */
        if (fabs(want[i]) > s) s = fabs(want[i]);
    }
    return e / s;
}

#define TOL 2e-5 /* fp32 results against double references, relative to the matrix scale */

/* ---------------------------------------------------------------------------------------- */
/* FactoredMatrix on random matrices                                                         */
/* ---------------------------------------------------------------------------------------- */

/* The dense product of batch b of A [batch, l, m] · B [batch, m, r]. */
static dm dense_ab(const float *A, const float *B, int64_t b, int64_t l, int64_t m, int64_t r)
{
    dm a = dm_from(A + b * l * m, l, m), bb = dm_from(B + b * m * r, m, r);
    return dm_mul_free(a, bb);
}

/* A factored matrix materialised and compared against dense references (one per batch; a
 * reference is broadcast when want_batch is 1). */
static double fact_err(const circuits_factored *f, const dm *want, int64_t want_batch)
{
    int64_t shape[4], mdim;
    int32_t nd;
    if (circuits_factored_shape(f, shape, &nd, &mdim) != CIRCUITS_OK) return INFINITY;
    int64_t batch = 1;
    for (int i = 0; i < nd - 2; i++) batch *= shape[i];
    int64_t l = shape[nd - 2], r = shape[nd - 1];
    if (l != want[0].r || r != want[0].c) return INFINITY;
    float *out = xmalloc((size_t)(batch * l * r) * sizeof *out);
    double e = INFINITY;
    if (circuits_factored_materialize(f, out, (size_t)(batch * l * r)) == CIRCUITS_OK) {
        e = 0;
        for (int64_t b = 0; b < batch; b++) {
            double eb = rel_err(out + b * l * r, want[want_batch > 1 ? b : 0].d, (size_t)(l * r), 1e-6);
            if (!(eb <= e)) e = eb;
        }
    }
    free(out);
    return e;
}

typedef struct entry {
    double v;
    int64_t row, col;
} entry;

static int entry_desc(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    return x->v < y->v ? 1 : x->v > y->v ? -1 : 0;
}

/* Top-k of one matrix of f against a brute-force sort of its dense values M [l, r]. */
static void check_topk(const circuits_factored *f, dm M, int64_t bi, int32_t axis, int64_t index, int64_t k)
{
    int64_t n = axis == CIRCUITS_TOPK_ROW ? M.c : axis == CIRCUITS_TOPK_COLUMN ? M.r : M.r * M.c;
    entry *e = xmalloc((size_t)n * sizeof *e);
    int64_t ne = 0;
    for (int64_t i = 0; i < M.r; i++)
        for (int64_t j = 0; j < M.c; j++)
            if (axis == CIRCUITS_TOPK_ALL || (axis == CIRCUITS_TOPK_ROW && i == index) ||
                (axis == CIRCUITS_TOPK_COLUMN && j == index))
                e[ne++] = (entry){M.d[i * M.c + j], i, j};
    qsort(e, (size_t)ne, sizeof *e, entry_desc);
    double scale = 1e-6;
    for (int64_t i = 0; i < ne; i++) scale = fmax(scale, fabs(e[i].v));
    double tol = 1e-5 * scale;
    float *vals = xmalloc((size_t)k * sizeof *vals);
    int64_t *rows = xmalloc((size_t)k * sizeof *rows), *cols = xmalloc((size_t)k * sizeof *cols), count = -1;
    CHECK_OK(circuits_factored_topk(f, bi, axis, index, k, vals, rows, cols, &count));
    int64_t want = k < ne ? k : ne;
    CHECK(count == want, "topk axis %d index %lld k %lld: count %lld, want %lld", axis, (long long)index, (long long)k,
          (long long)count, (long long)want);
    char *seen = calloc((size_t)(M.r * M.c), 1);
    int bad_val = 0, bad_pos = 0, bad_order = 0, dup = 0;
    for (int64_t i = 0; i < count && i < want; i++) {
        if (fabs(vals[i] - e[i].v) > tol) bad_val++;
        if (i > 0 && vals[i] > vals[i - 1]) bad_order++;
        if (rows[i] < 0 || rows[i] >= M.r || cols[i] < 0 || cols[i] >= M.c) {
            bad_pos++;
            continue;
        }
        if (axis == CIRCUITS_TOPK_ROW && rows[i] != index) bad_pos++;
        if (axis == CIRCUITS_TOPK_COLUMN && cols[i] != index) bad_pos++;
        if (fabs(M.d[rows[i] * M.c + cols[i]] - vals[i]) > tol) bad_pos++;
        if (seen[rows[i] * M.c + cols[i]]++) dup++;
        /* where the value is well separated from its neighbours, the position is determined */
        bool isolated = (i == 0 || e[i - 1].v - e[i].v > 100 * tol) && (i + 1 >= ne || e[i].v - e[i + 1].v > 100 * tol);
        if (isolated && (rows[i] != e[i].row || cols[i] != e[i].col)) bad_pos++;
    }
    CHECK(!bad_val && !bad_pos && !bad_order && !dup,
          "topk axis %d index %lld k %lld of %lldx%lld: %d bad values, %d bad positions, %d out of order, %d repeated",
          axis, (long long)index, (long long)k, (long long)M.r, (long long)M.c, bad_val, bad_pos, bad_order, dup);
    free(seen);
    free(vals);
    free(rows);
    free(cols);
    free(e);
}

/* Complex eigenvalues matched greedily (nearest unused); returns the worst distance. */
static double eig_match(const double *re1, const double *im1, const double *re2, const double *im2, int n)
{
    char used[64] = {0};
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double best = INFINITY;
        int bj = -1;
        for (int j = 0; j < n; j++)
            if (!used[j] && hypot(re1[i] - re2[j], im1[i] - im2[j]) < best) best = hypot(re1[i] - re2[j], im1[i] - im2[j]), bj = j;
        if (bj >= 0) used[bj] = 1;
        if (!(best <= worst)) worst = best;
    }
    return worst;
}

/* Sorts (re, im) pairs by modulus, descending. */
static void sort_by_modulus(double *re, double *im, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && hypot(re[j], im[j]) > hypot(re[j - 1], im[j - 1]); j--) {
            double t = re[j];
            re[j] = re[j - 1], re[j - 1] = t;
            t = im[j];
            im[j] = im[j - 1], im[j - 1] = t;
        }
}

static void check_eigen(const circuits_factored *f, const dm *M, int64_t batch, int64_t l, int64_t m)
{
    float *re = xmalloc((size_t)(batch * m) * sizeof *re), *im = xmalloc((size_t)(batch * m) * sizeof *im);
    CHECK_OK(circuits_factored_eigenvalues(f, re, im));
    int nz = (int)(l < m ? l : m); /* the eigenvalues that are not zero by rank */
    for (int64_t b = 0; b < batch; b++) {
        double *dre = xmalloc((size_t)l * sizeof *dre), *dim = xmalloc((size_t)l * sizeof *dim);
        double *fre = xmalloc((size_t)m * sizeof *fre), *fim = xmalloc((size_t)m * sizeof *fim);
        dm a = dm_copy(M[b]);
        lapack_int info = LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)l, a.d, (lapack_int)l, dre, dim, NULL,
                                        1, NULL, 1);
        CHECK(info == 0, "dgeev info %d", (int)info);
        for (int64_t i = 0; i < m; i++) fre[i] = re[b * m + i], fim[i] = im[b * m + i];
        sort_by_modulus(dre, dim, (int)l);
        sort_by_modulus(fre, fim, (int)m);
        double scale = fmax(1e-6, hypot(dre[0], dim[0]));
        double d = eig_match(fre, fim, dre, dim, nz) / scale;
        CHECK(d < 1e-3, "eigenvalues of %lldx%lld (inner %lld) batch %lld: worst mismatch %.3g", (long long)l,
              (long long)l, (long long)m, (long long)b, d);
        /* the rest are zero: dense l - m of them, factored m - l of them */
        for (int64_t i = nz; i < l; i++)
            CHECK(hypot(dre[i], dim[i]) < 1e-6 * scale, "dense eigenvalue %lld should be 0: %g", (long long)i, dre[i]);
        for (int64_t i = nz; i < m; i++)
            CHECK(hypot(fre[i], fim[i]) < 1e-4 * scale, "factored eigenvalue %lld should be 0: %g", (long long)i, fre[i]);
        dm_free(&a);
        free(dre);
        free(dim);
        free(fre);
        free(fim);
    }
    free(re);
    free(im);
}

static void check_svd(const circuits_factored *f, const dm *M, int64_t batch, int64_t l, int64_t m, int64_t r)
{
    int64_t k = l < m ? l : m;
    if (r < k) k = r;
    float *U = xmalloc((size_t)(batch * l * k) * sizeof *U), *S = xmalloc((size_t)(batch * k) * sizeof *S);
    float *V = xmalloc((size_t)(batch * r * k) * sizeof *V), *S2 = xmalloc((size_t)(batch * k) * sizeof *S2);
    CHECK_OK(circuits_factored_svd(f, U, S, V));
    CHECK_OK(circuits_factored_svd(f, NULL, S2, NULL)); /* S alone */
    {   /* U or V alone: the same factors as with both */
        float *U1 = xmalloc((size_t)(batch * l * k) * sizeof *U1), *V1 = xmalloc((size_t)(batch * r * k) * sizeof *V1);
        float *S3 = xmalloc((size_t)(batch * k) * sizeof *S3);
        CHECK_OK(circuits_factored_svd(f, U1, S3, NULL));
        CHECK_OK(circuits_factored_svd(f, NULL, S3, V1));
        CHECK(memcmp(U1, U, (size_t)(batch * l * k) * sizeof *U) == 0 && memcmp(V1, V, (size_t)(batch * r * k) * sizeof *V) == 0,
              "svd with U or V alone differs");
        free(U1);
        free(V1);
        free(S3);
    }
    float *nrm = xmalloc((size_t)batch * sizeof *nrm);
    CHECK_OK(circuits_factored_norm(f, nrm));
    for (int64_t b = 0; b < batch; b++) {
        const float *u = U + b * l * k, *s = S + b * k, *v = V + b * r * k;
        /* U diag(S) V^T = M */
        dm rec = dm_new(l, r);
        for (int64_t i = 0; i < l; i++)
            for (int64_t j = 0; j < r; j++) {
                double acc = 0;
                for (int64_t q = 0; q < k; q++) acc += (double)u[i * k + q] * s[q] * v[j * k + q];
                rec.d[i * r + j] = acc;
            }
        double worst = 0, scale = fmax(1e-6, dm_frob(M[b]));
        for (int64_t i = 0; i < l * r; i++) worst = fmax(worst, fabs(rec.d[i] - M[b].d[i]));
        CHECK(worst / scale < 1e-5, "svd reconstruction %lldx%lldx%lld batch %lld: %.3g", (long long)l, (long long)m,
              (long long)r, (long long)b, worst / scale);
        dm_free(&rec);
        /* orthonormal columns */
        double ou = 0, ov = 0;
        for (int64_t p = 0; p < k; p++)
            for (int64_t q = 0; q < k; q++) {
                double su = 0, sv = 0;
                for (int64_t i = 0; i < l; i++) su += (double)u[i * k + p] * u[i * k + q];
                for (int64_t j = 0; j < r; j++) sv += (double)v[j * k + p] * v[j * k + q];
                ou = fmax(ou, fabs(su - (p == q)));
                ov = fmax(ov, fabs(sv - (p == q)));
            }
        CHECK(ou < 1e-5 && ov < 1e-5, "svd: U^T U and V^T V differ from I by %.3g, %.3g", ou, ov);
        /* descending, non-negative, equal to the dense singular values, sqrt(sum S^2) = norm */
        int order = 1;
        for (int64_t q = 0; q < k; q++) order &= s[q] >= 0 && (q == 0 || s[q] <= s[q - 1]);
        CHECK(order, "singular values not descending / non-negative");
        int64_t kd = l < r ? l : r;
        dm a = dm_copy(M[b]);
        double *sd = xmalloc((size_t)kd * sizeof *sd);
        lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'N', (lapack_int)l, (lapack_int)r, a.d, (lapack_int)r, sd, NULL,
                                         (lapack_int)l, NULL, (lapack_int)r);
        CHECK(info == 0, "dgesdd info %d", (int)info);
        double es = 0, s2 = 0, ss = 0;
        for (int64_t q = 0; q < kd; q++) {
            double got = q < k ? s[q] : 0.0;
            es = fmax(es, fabs(got - sd[q]));
            if (q < k) {
                ss = fmax(ss, fabs((double)S2[b * k + q] - s[q]));
                s2 += (double)s[q] * s[q];
            }
        }
        CHECK(es / fmax(sd[0], 1e-6) < 1e-5, "singular values differ from dense by %.3g (relative)", es / fmax(sd[0], 1e-6));
        CHECK(ss == 0, "svd without U, V gives other S (%.3g)", ss);
        CHECK(fabs(sqrt(s2) - nrm[b]) < 1e-5 * fmax(1, nrm[b]), "sqrt(sum S^2) %.7g != norm %.7g", sqrt(s2), nrm[b]);
        CHECK(fabs(nrm[b] - dm_frob(M[b])) < 1e-5 * fmax(1, dm_frob(M[b])), "norm %.7g, dense Frobenius %.7g", nrm[b],
              dm_frob(M[b]));
        free(sd);
        dm_free(&a);
    }
    free(U);
    free(S);
    free(V);
    free(S2);
    free(nrm);
}

/* left [bl, l, m, r] · right [br, r, m2, r2], both random, against the dense product. */
static void check_matmul(rng *g, int64_t bl, int64_t l, int64_t m, int64_t r, int64_t br, int64_t m2, int64_t r2)
{
    float *A = gauss_f(g, (size_t)(bl * l * m), 1), *B = gauss_f(g, (size_t)(bl * m * r), 1);
    float *C = gauss_f(g, (size_t)(br * r * m2), 1), *D = gauss_f(g, (size_t)(br * m2 * r2), 1);
    circuits_factored *left = NULL, *right = NULL, *prod = NULL;
    CHECK_OK(circuits_factored_create(&left, A, B, bl, l, m, r));
    CHECK_OK(circuits_factored_create(&right, C, D, br, r, m2, r2));
    int64_t nb = bl > br ? bl : br;
    dm *want = xmalloc((size_t)nb * sizeof *want);
    for (int64_t b = 0; b < nb; b++)
        want[b] = dm_mul_free(dense_ab(A, B, bl > 1 ? b : 0, l, m, r), dense_ab(C, D, br > 1 ? b : 0, r, m2, r2));
    CHECK_OK(circuits_factored_matmul(left, right, &prod));
    if (prod) {
        int64_t shape[4];
        int32_t nd = 0;
        CHECK_OK(circuits_factored_shape(prod, shape, &nd, NULL));
        CHECK(nd == (nb > 1 ? 3 : 2) && shape[nd - 2] == l && shape[nd - 1] == r2 && (nb == 1 || shape[0] == nb),
              "matmul shape: ndim %d", nd);
        double e = fact_err(prod, want, nb);
        CHECK(e < TOL, "matmul [%lld,%lld,%lld,%lld] @ [%lld,%lld,%lld,%lld]: error %.3g", (long long)bl, (long long)l,
              (long long)m, (long long)r, (long long)br, (long long)r, (long long)m2, (long long)r2, e);
    }
    for (int64_t b = 0; b < nb; b++) dm_free(&want[b]);
    free(want);
    circuits_factored_free(prod);
    circuits_factored_free(left);
    circuits_factored_free(right);
    free(A);
    free(B);
    free(C);
    free(D);
}

static void test_shape(rng *g, int64_t batch, int64_t l, int64_t m, int64_t r)
{
    float *A = gauss_f(g, (size_t)(batch * l * m), 1), *B = gauss_f(g, (size_t)(batch * m * r), 1);
    circuits_factored *f = NULL;
    CHECK_OK(circuits_factored_create(&f, A, B, batch, l, m, r));
    if (!f) return;
    dm *M = xmalloc((size_t)batch * sizeof *M), *Mt = xmalloc((size_t)batch * sizeof *Mt);
    for (int64_t b = 0; b < batch; b++) {
        M[b] = dense_ab(A, B, b, l, m, r);
        Mt[b] = dm_t(M[b]);
    }

    /* shape and factors */
    int64_t shape[4] = {0}, mdim = 0;
    int32_t nd = 0;
    CHECK_OK(circuits_factored_shape(f, shape, &nd, &mdim));
    CHECK(nd == (batch > 1 ? 3 : 2) && shape[nd - 2] == l && shape[nd - 1] == r && mdim == m && (batch == 1 || shape[0] == batch),
          "shape of [%lld, %lld, %lld, %lld]", (long long)batch, (long long)l, (long long)m, (long long)r);
    circuits_tensor ta, tb;
    CHECK_OK(circuits_factored_factors(f, &ta, &tb));
    CHECK(ta.ndim == nd && ta.shape[nd - 2] == l && ta.shape[nd - 1] == m && tb.shape[nd - 2] == m && tb.shape[nd - 1] == r &&
              memcmp(ta.data, A, (size_t)(batch * l * m) * sizeof *A) == 0 &&
              memcmp(tb.data, B, (size_t)(batch * m * r) * sizeof *B) == 0,
          "factors");

    /* materialise, and its guard */
    size_t n = (size_t)(batch * l * r);
    CHECK(fact_err(f, M, batch) < TOL, "materialize [%lld, %lld, %lld, %lld]", (long long)batch, (long long)l, (long long)m,
          (long long)r);
    float *buf = xmalloc(n * sizeof *buf);
    CHECK_FAILS(circuits_factored_materialize(f, buf, n - 1), CIRCUITS_E_RANGE, "exceeds the guard");
    CHECK_FAILS(circuits_factored_materialize(f, buf, 0), CIRCUITS_E_RANGE, "max_elements");
    CHECK_OK(circuits_factored_materialize(f, buf, n));

    /* transpose */
    circuits_factored *t = NULL;
    CHECK_OK(circuits_factored_transpose(f, &t));
    if (t) {
        CHECK_OK(circuits_factored_shape(t, shape, &nd, &mdim));
        CHECK(shape[nd - 2] == r && shape[nd - 1] == l && mdim == m, "transpose shape");
        CHECK(fact_err(t, Mt, batch) < TOL, "transpose values");
        circuits_factored_free(t);
    }

    /* matvec / vecmat */
    float *xr = gauss_f(g, (size_t)r, 1), *xl = gauss_f(g, (size_t)l, 1);
    float *yl = xmalloc((size_t)(batch * l) * sizeof *yl), *yr = xmalloc((size_t)(batch * r) * sizeof *yr);
    CHECK_OK(circuits_factored_matvec(f, xr, yl));
    CHECK_OK(circuits_factored_vecmat(xl, f, yr));
    for (int64_t b = 0; b < batch; b++) {
        double *wl = xmalloc((size_t)l * sizeof *wl), *wr = xmalloc((size_t)r * sizeof *wr);
        for (int64_t i = 0; i < l; i++) {
            wl[i] = 0;
            for (int64_t j = 0; j < r; j++) wl[i] += M[b].d[i * r + j] * xr[j];
        }
        for (int64_t j = 0; j < r; j++) {
            wr[j] = 0;
            for (int64_t i = 0; i < l; i++) wr[j] += xl[i] * M[b].d[i * r + j];
        }
        CHECK(rel_err(yl + b * l, wl, (size_t)l, 1e-6) < TOL, "matvec batch %lld", (long long)b);
        CHECK(rel_err(yr + b * r, wr, (size_t)r, 1e-6) < TOL, "vecmat batch %lld", (long long)b);
        free(wl);
        free(wr);
    }

    /* matmul_dense / rmatmul_dense, X shared (x_batch 1) and per batch */
    for (int xb = 0; xb < 2; xb++) {
        int64_t x_batch = xb ? batch : 1, nn = 3;
        float *X = gauss_f(g, (size_t)(x_batch * r * nn), 1), *Y = gauss_f(g, (size_t)(x_batch * nn * l), 1);
        dm *w1 = xmalloc((size_t)batch * sizeof *w1), *w2 = xmalloc((size_t)batch * sizeof *w2);
        for (int64_t b = 0; b < batch; b++) {
            int64_t xi = x_batch > 1 ? b : 0;
            dm x = dm_from(X + xi * r * nn, r, nn), y = dm_from(Y + xi * nn * l, nn, l);
            w1[b] = dm_mul(M[b], x);
            w2[b] = dm_mul(y, M[b]);
            dm_free(&x);
            dm_free(&y);
        }
        circuits_factored *p = NULL, *q = NULL;
        CHECK_OK(circuits_factored_matmul_dense(f, X, x_batch, nn, &p));
        CHECK_OK(circuits_factored_rmatmul_dense(Y, x_batch, nn, f, &q));
        if (p) CHECK(fact_err(p, w1, batch) < TOL, "matmul_dense x_batch %lld", (long long)x_batch);
        if (q) CHECK(fact_err(q, w2, batch) < TOL, "rmatmul_dense x_batch %lld", (long long)x_batch);
        circuits_factored_free(p);
        circuits_factored_free(q);
        for (int64_t b = 0; b < batch; b++) {
            dm_free(&w1[b]);
            dm_free(&w2[b]);
        }
        free(w1);
        free(w2);
        free(X);
        free(Y);
    }

    /* matmul with another factored matrix: inner sizes on both sides of the cheaper choice */
    int64_t m2s[] = {1, 2, r, r + 4};
    for (size_t i = 0; i < sizeof m2s / sizeof m2s[0]; i++) {
        check_matmul(g, batch, l, m, r, batch, m2s[i], 6);
        check_matmul(g, batch, l, m, r, 1, m2s[i], 4);
        check_matmul(g, 1, l, m, r, batch, m2s[i], 5);
    }

    /* norm, SVD */
    check_svd(f, M, batch, l, m, r);

    /* eigenvalues */
    if (l == r) check_eigen(f, M, batch, l, m);
    else {
        float re[64], im[64];
        CHECK_FAILS(circuits_factored_eigenvalues(f, re, im), CIRCUITS_E_SHAPE, "square");
    }

    /* corner and diagonal */
    int64_t kmax = l < r ? l : r;
    for (int64_t k = 1; k <= kmax; k++) {
        float *c = xmalloc((size_t)(batch * k * k) * sizeof *c);
        CHECK_OK(circuits_factored_corner(f, k, c));
        for (int64_t b = 0; b < batch; b++) {
            double *w = xmalloc((size_t)(k * k) * sizeof *w);
            for (int64_t i = 0; i < k; i++)
                for (int64_t j = 0; j < k; j++) w[i * k + j] = M[b].d[i * r + j];
            CHECK(rel_err(c + b * k * k, w, (size_t)(k * k), 1e-6) < TOL, "corner %lld batch %lld", (long long)k, (long long)b);
            free(w);
        }
        free(c);
    }
    CHECK_FAILS(circuits_factored_corner(f, 0, buf), CIRCUITS_E_RANGE, "corner size");
    CHECK_FAILS(circuits_factored_corner(f, kmax + 1, buf), CIRCUITS_E_RANGE, "corner size");
    float *dg = xmalloc((size_t)(batch * kmax) * sizeof *dg);
    CHECK_OK(circuits_factored_diagonal(f, dg));
    for (int64_t b = 0; b < batch; b++) {
        double *w = xmalloc((size_t)kmax * sizeof *w);
        for (int64_t i = 0; i < kmax; i++) w[i] = M[b].d[i * r + i];
        CHECK(rel_err(dg + b * kmax, w, (size_t)kmax, 1e-6) < TOL, "diagonal batch %lld", (long long)b);
        free(w);
    }
    free(dg);

    /* top-k: every row and column, k = 1, 3 and more than there are; the whole matrix */
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t i = 0; i < l; i++) {
            check_topk(f, M[b], b, CIRCUITS_TOPK_ROW, i, 1);
            check_topk(f, M[b], b, CIRCUITS_TOPK_ROW, i, 3);
            check_topk(f, M[b], b, CIRCUITS_TOPK_ROW, i, r + 2);
        }
        for (int64_t j = 0; j < r; j++) {
            check_topk(f, M[b], b, CIRCUITS_TOPK_COLUMN, j, 2);
            check_topk(f, M[b], b, CIRCUITS_TOPK_COLUMN, j, l + 1);
        }
        check_topk(f, M[b], b, CIRCUITS_TOPK_ALL, 0, 1);
        check_topk(f, M[b], b, CIRCUITS_TOPK_ALL, 0, 7);
        check_topk(f, M[b], b, CIRCUITS_TOPK_ALL, 0, l * r);
        check_topk(f, M[b], b, CIRCUITS_TOPK_ALL, 0, l * r + 5);
    }

    for (int64_t b = 0; b < batch; b++) {
        dm_free(&M[b]);
        dm_free(&Mt[b]);
    }
    free(M);
    free(Mt);
    free(buf);
    free(xr);
    free(xl);
    free(yl);
    free(yr);
    free(A);
    free(B);
    circuits_factored_free(f);
}

/* More than 256 rows: ALL goes through several blocks of rows; also a matrix with ties. */
static void test_topk_large(rng *g)
{
    int64_t l = 700, m = 4, r = 9;
    float *A = gauss_f(g, (size_t)(2 * l * m), 1), *B = gauss_f(g, (size_t)(2 * m * r), 1);
    circuits_factored *f = NULL;
    CHECK_OK(circuits_factored_create(&f, A, B, 2, l, m, r));
    if (f) {
        for (int64_t b = 0; b < 2; b++) {
            dm M = dense_ab(A, B, b, l, m, r);
            check_topk(f, M, b, CIRCUITS_TOPK_ALL, 0, 1);
            check_topk(f, M, b, CIRCUITS_TOPK_ALL, 0, 40);
            check_topk(f, M, b, CIRCUITS_TOPK_ALL, 0, 600);
            check_topk(f, M, b, CIRCUITS_TOPK_COLUMN, 8, 300);
            check_topk(f, M, b, CIRCUITS_TOPK_COLUMN, 0, 800);
            check_topk(f, M, b, CIRCUITS_TOPK_ROW, 699, 20);
            /* the maximum of the whole matrix is in the last block for b = 1 after a swap below */
            dm_free(&M);
        }
        circuits_factored_free(f);
    }
    /* the largest entry in the last (partial) block: row 699 made dominant */
    for (int64_t j = 0; j < m; j++) A[699 * m + j] = 50.0f * (j == 0 ? 1.0f : 0.0f);
    for (int64_t j = 0; j < r; j++) B[0 * r + j] = (float)(j + 1);
    CHECK_OK(circuits_factored_create(&f, A, B, 1, l, m, r));
    if (f) {
        dm M = dense_ab(A, B, 0, l, m, r);
        float v[3];
        int64_t rows[3], cols[3], cnt = 0;
        CHECK_OK(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ALL, 0, 3, v, rows, cols, &cnt));
        CHECK(cnt == 3 && rows[0] == 699 && cols[0] == 8 && rows[1] == 699 && cols[1] == 7,
              "top of a matrix whose maximum is in the last block: (%lld, %lld), (%lld, %lld)", (long long)rows[0],
              (long long)cols[0], (long long)rows[1], (long long)cols[1]);
        check_topk(f, M, 0, CIRCUITS_TOPK_ALL, 0, 25);
        dm_free(&M);
        circuits_factored_free(f);
    }
    /* an all-zero matrix: every value ties; positions must still be distinct and valid */
    memset(A, 0, (size_t)(l * m) * sizeof *A);
    CHECK_OK(circuits_factored_create(&f, A, B, 1, l, m, r));
    if (f) {
        dm M = dense_ab(A, B, 0, l, m, r);
        check_topk(f, M, 0, CIRCUITS_TOPK_ALL, 0, 300);
        dm_free(&M);
        circuits_factored_free(f);
    }
    free(A);
    free(B);
}

static void test_errors(void)
{
    float A[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, B[12] = {1, 0, 2, 0, 3, 0, 1, 1, 1, 1, 1, 1};
    float out[64], re[8], im[8];
    int64_t rows[8], cols[8], shape[4];
    int32_t nd;
    circuits_factored *f = NULL, *g = NULL, *sq = NULL, *o = (circuits_factored *)(void *)&nd;

    CHECK_FAILS(circuits_factored_create(NULL, A, B, 1, 3, 2, 4), CIRCUITS_E_INVALID_ARGUMENT, "out is NULL");
    CHECK_FAILS(circuits_factored_create(&o, NULL, B, 1, 3, 2, 4), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CHECK(o == NULL, "create left *out set on failure");
    CHECK_FAILS(circuits_factored_create(&f, A, NULL, 1, 3, 2, 4), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CHECK_FAILS(circuits_factored_create(&f, A, B, 0, 3, 2, 4), CIRCUITS_E_SHAPE, "positive");
    CHECK_FAILS(circuits_factored_create(&f, A, B, 1, 0, 2, 4), CIRCUITS_E_SHAPE, "positive");
    CHECK_FAILS(circuits_factored_create(&f, A, B, 1, 3, -1, 4), CIRCUITS_E_SHAPE, "positive");
    CHECK_FAILS(circuits_factored_create(&f, A, B, INT64_MAX / 2, 1 << 20, 1 << 20, 4), CIRCUITS_E_RANGE, "too large");
    CHECK(f == NULL, "no object after failures");

    CHECK_OK(circuits_factored_create(&f, A, B, 1, 3, 2, 4));  /* [3, 4] */
    CHECK_OK(circuits_factored_create(&g, A, B, 2, 3, 2, 2));  /* [2, 3, 2] */
    CHECK_OK(circuits_factored_create(&sq, A, B, 1, 3, 2, 3)); /* [3, 3] */
    if (!f || !g || !sq) goto done;

    circuits_factored_free(NULL);
    CHECK_FAILS(circuits_factored_shape(NULL, shape, &nd, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_shape(f, NULL, &nd, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_shape(f, shape, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_factors(NULL, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_OK(circuits_factored_factors(f, NULL, NULL));
    CHECK_FAILS(circuits_factored_transpose(NULL, &o), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_transpose(f, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");

    /* matmul: NULLs, inner dimension, batch broadcast */
    o = (circuits_factored *)(void *)&nd;
    CHECK_FAILS(circuits_factored_matmul(NULL, f, &o), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_matmul(f, NULL, &o), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_matmul(f, f, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    o = (circuits_factored *)(void *)&nd;
    CHECK_FAILS(circuits_factored_matmul(f, f, &o), CIRCUITS_E_SHAPE, "inner dimensions 4 and 3 differ");
    CHECK(o == NULL, "matmul left *out set on failure");
    {
        circuits_factored *b3 = NULL, *b2 = NULL;
        CHECK_OK(circuits_factored_create(&b3, A, A, 3, 2, 2, 2));
        CHECK_OK(circuits_factored_create(&b2, A, A, 2, 2, 2, 2));
        if (b3 && b2) CHECK_FAILS(circuits_factored_matmul(b3, b2, &o), CIRCUITS_E_SHAPE, "do not broadcast");
        circuits_factored_free(b3);
        circuits_factored_free(b2);
    }
    CHECK_FAILS(circuits_factored_matmul_dense(NULL, A, 1, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_matmul_dense(f, NULL, 1, 1, &o), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_matmul_dense(f, A, 1, 1, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_matmul_dense(f, A, 1, 0, &o), CIRCUITS_E_SHAPE, "n >= 1");
    CHECK_FAILS(circuits_factored_matmul_dense(f, A, 2, 1, &o), CIRCUITS_E_SHAPE, "1 or 1");
    CHECK_FAILS(circuits_factored_matmul_dense(g, A, 3, 1, &o), CIRCUITS_E_SHAPE, "1 or 2");
    CHECK_FAILS(circuits_factored_matmul_dense(g, A, 0, 1, &o), CIRCUITS_E_SHAPE, "1 or 2");
    CHECK_FAILS(circuits_factored_rmatmul_dense(NULL, 1, 1, f, &o), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_rmatmul_dense(A, 1, 1, NULL, &o), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_rmatmul_dense(A, 1, 1, f, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_rmatmul_dense(A, 1, -2, f, &o), CIRCUITS_E_SHAPE, "n >= 1");
    CHECK_FAILS(circuits_factored_rmatmul_dense(A, 4, 1, g, &o), CIRCUITS_E_SHAPE, "1 or 2");

    CHECK_FAILS(circuits_factored_matvec(NULL, A, out), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_matvec(f, NULL, out), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_matvec(f, A, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_vecmat(NULL, f, out), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_vecmat(A, NULL, out), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_vecmat(A, f, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_norm(NULL, out), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_norm(f, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_svd(NULL, out, out, out), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CHECK_FAILS(circuits_factored_svd(f, out, NULL, out), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CHECK_FAILS(circuits_factored_eigenvalues(NULL, re, im), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_eigenvalues(sq, NULL, im), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_eigenvalues(sq, re, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_eigenvalues(f, re, im), CIRCUITS_E_SHAPE, "need a square matrix (this one is 3 x 4)");
    CHECK_OK(circuits_factored_eigenvalues(sq, re, im));
    CHECK_FAILS(circuits_factored_corner(NULL, 1, out), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_corner(f, 1, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_corner(f, 4, out), CIRCUITS_E_RANGE, "corner size 4");
    CHECK_FAILS(circuits_factored_corner(f, -1, out), CIRCUITS_E_RANGE, "corner size");
    CHECK_FAILS(circuits_factored_diagonal(NULL, out), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_diagonal(f, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_materialize(NULL, out, 64), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_materialize(f, NULL, 64), CIRCUITS_E_INVALID_ARGUMENT, "NULL");

    /* top-k */
    CHECK_FAILS(circuits_factored_topk(NULL, 0, CIRCUITS_TOPK_ALL, 0, 1, out, rows, cols, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ALL, 0, 1, NULL, rows, cols, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ALL, 0, 1, out, NULL, cols, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ALL, 0, 1, out, rows, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_factored_topk(f, 0, 3, 0, 1, out, rows, cols, NULL), CIRCUITS_E_INVALID_ARGUMENT, "axis");
    CHECK_FAILS(circuits_factored_topk(f, 0, -1, 0, 1, out, rows, cols, NULL), CIRCUITS_E_INVALID_ARGUMENT, "axis");
    CHECK_FAILS(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ROW, 3, 1, out, rows, cols, NULL), CIRCUITS_E_RANGE, "row 3 out of range [0, 3)");
    CHECK_FAILS(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ROW, -1, 1, out, rows, cols, NULL), CIRCUITS_E_RANGE, "row -1");
    CHECK_FAILS(circuits_factored_topk(f, 0, CIRCUITS_TOPK_COLUMN, 4, 1, out, rows, cols, NULL), CIRCUITS_E_RANGE, "column 4 out of range [0, 4)");
    CHECK_FAILS(circuits_factored_topk(f, 1, CIRCUITS_TOPK_ALL, 0, 1, out, rows, cols, NULL), CIRCUITS_E_RANGE, "batch index 1");
    CHECK_FAILS(circuits_factored_topk(g, -1, CIRCUITS_TOPK_ALL, 0, 1, out, rows, cols, NULL), CIRCUITS_E_RANGE, "batch index -1");
    CHECK_FAILS(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ALL, 0, 0, out, rows, cols, NULL), CIRCUITS_E_RANGE, "k >= 1");
    CHECK_FAILS(circuits_factored_topk(f, 0, CIRCUITS_TOPK_ROW, 0, -5, out, rows, cols, NULL), CIRCUITS_E_RANGE, "k >= 1");
    CHECK_OK(circuits_factored_topk(g, 1, CIRCUITS_TOPK_ALL, 0, 2, out, rows, cols, NULL)); /* out_count may be NULL */
done:
    circuits_factored_free(f);
    circuits_factored_free(g);
    circuits_factored_free(sq);
}

/* ---------------------------------------------------------------------------------------- */
/* Models in TransformerLens layout, written here                                            */
/* ---------------------------------------------------------------------------------------- */

static char g_root[256];

static void die(const char *what)
{
    fprintf(stderr, "test_factored: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* st_entry, st_write: tests/st_write.h */

#define MAXL 4

/* The weights of a TL-layout model without biases or LayerNorm. */
typedef struct tlm {
    int L, H, D, dh, V, P, M; /* M = d_mlp, 0 for attention-only */
    float *WE, *Wpos, *WU;    /* [V, D], [P, D], [D, V] */
    float *WQ[MAXL], *WK[MAXL], *WV[MAXL], *WO[MAXL]; /* [H, D, dh] x3, [H, dh, D] */
    float *Win[MAXL], *Wout[MAXL];                    /* [D, M], [M, D] */
} tlm;

static void tlm_random(tlm *w, rng *g, int L, int H, int D, int dh, int V, int P, int M)
{
    memset(w, 0, sizeof *w);
    w->L = L, w->H = H, w->D = D, w->dh = dh, w->V = V, w->P = P, w->M = M;
    double s = 1.0 / sqrt((double)D);
    w->WE = gauss_f(g, (size_t)(V * D), 1.0);
    w->Wpos = gauss_f(g, (size_t)(P * D), 0.5);
    w->WU = gauss_f(g, (size_t)(D * V), s);
    for (int l = 0; l < L; l++) {
        w->WQ[l] = gauss_f(g, (size_t)(H * D * dh), s);
        w->WK[l] = gauss_f(g, (size_t)(H * D * dh), s);
        w->WV[l] = gauss_f(g, (size_t)(H * D * dh), s);
        w->WO[l] = gauss_f(g, (size_t)(H * dh * D), 1.0 / sqrt((double)dh));
        if (M) {
            w->Win[l] = gauss_f(g, (size_t)(D * M), s);
            w->Wout[l] = gauss_f(g, (size_t)(M * D), 1.0 / sqrt((double)M));
        }
    }
}

static float *dup_f(const float *x, size_t n)
{
    if (!x) return NULL;
    float *y = xmalloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static void tlm_copy(tlm *dst, const tlm *w)
{
    *dst = *w;
    size_t D = (size_t)w->D, hd = (size_t)(w->H * w->D * w->dh);
    dst->WE = dup_f(w->WE, (size_t)w->V * D);
    dst->Wpos = dup_f(w->Wpos, (size_t)w->P * D);
    dst->WU = dup_f(w->WU, D * (size_t)w->V);
    for (int l = 0; l < w->L; l++) {
        dst->WQ[l] = dup_f(w->WQ[l], hd);
        dst->WK[l] = dup_f(w->WK[l], hd);
        dst->WV[l] = dup_f(w->WV[l], hd);
        dst->WO[l] = dup_f(w->WO[l], hd);
        dst->Win[l] = dup_f(w->Win[l], D * (size_t)w->M);
        dst->Wout[l] = dup_f(w->Wout[l], D * (size_t)w->M);
    }
}

static void tlm_free(tlm *w)
{
    free(w->WE);
    free(w->Wpos);
    free(w->WU);
    for (int l = 0; l < w->L; l++) {
        free(w->WQ[l]);
        free(w->WK[l]);
        free(w->WV[l]);
        free(w->WO[l]);
        free(w->Win[l]);
        free(w->Wout[l]);
    }
    memset(w, 0, sizeof *w);
}

static void add_entry(st_entry *t, int *n, const char *name, const float *data, int ndim, int64_t d0, int64_t d1,
                      int64_t d2)
{
    st_entry *e = &t[(*n)++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->shape[0] = d0, e->shape[1] = d1, e->shape[2] = d2;
    e->data = data;
}

/* Writes g_root/name (tl_config.json + model.safetensors) and loads it with no processing. */
static circuits_model *tlm_load(const tlm *w, const char *name)
{
    char dir[512], path[600], nm[64];
    snprintf(dir, sizeof dir, "%s/%s", g_root, name);
    if (mkdir(dir, 0700) != 0) die(dir);
    snprintf(path, sizeof path, "%s/tl_config.json", dir);
    FILE *fp = fopen(path, "w");
    if (!fp) die(path);
    fprintf(fp,
            "{\"d_model\":%d,\"d_head\":%d,\"n_heads\":%d,\"n_layers\":%d,\"n_ctx\":%d,\"d_vocab\":%d,"
            "\"normalization_type\":null,\"positional_embedding_type\":\"standard\",",
            w->D, w->dh, w->H, w->L, w->P, w->V);
    if (w->M) fprintf(fp, "\"attn_only\":false,\"d_mlp\":%d,\"act_fn\":\"relu\"}", w->M);
    else fprintf(fp, "\"attn_only\":true,\"act_fn\":\"relu\"}");
    if (fclose(fp) != 0) die(path);
    st_entry t[3 + 6 * MAXL];
    int n = 0;
    add_entry(t, &n, "embed.W_E", w->WE, 2, w->V, w->D, 0);
    add_entry(t, &n, "pos_embed.W_pos", w->Wpos, 2, w->P, w->D, 0);
    for (int l = 0; l < w->L; l++) {
#define NM(s) (snprintf(nm, sizeof nm, "blocks.%d.%s", l, s), nm)
        add_entry(t, &n, NM("attn.W_Q"), w->WQ[l], 3, w->H, w->D, w->dh);
        add_entry(t, &n, NM("attn.W_K"), w->WK[l], 3, w->H, w->D, w->dh);
        add_entry(t, &n, NM("attn.W_V"), w->WV[l], 3, w->H, w->D, w->dh);
        add_entry(t, &n, NM("attn.W_O"), w->WO[l], 3, w->H, w->dh, w->D);
        if (w->M) {
            add_entry(t, &n, NM("mlp.W_in"), w->Win[l], 2, w->D, w->M, 0);
            add_entry(t, &n, NM("mlp.W_out"), w->Wout[l], 2, w->M, w->D, 0);
        }
#undef NM
    }
    add_entry(t, &n, "unembed.W_U", w->WU, 2, w->D, w->V, 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_write(path, t, n);
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    circuits_model *m = NULL;
    int rc = circuits_model_load(&m, dir, &o);
    if (rc) {
        fprintf(stderr, "test_factored: loading %s: %s\n", dir, circuits_last_error());
        exit(2);
    }
    return m;
}

/* Head h of a [H, a, b] weight as a dense [a, b]. */
static dm head(const float *W, int h, int a, int b) { return dm_from(W + (size_t)h * (size_t)(a * b), a, b); }

static dm ov_d(const tlm *w, int l, int h)
{
    return dm_mul_free(head(w->WV[l], h, w->D, w->dh), head(w->WO[l], h, w->dh, w->D));
}

static dm qk_d(const tlm *w, int l, int h)
{
    dm k = head(w->WK[l], h, w->D, w->dh);
    dm kt = dm_t(k);
    dm_free(&k);
    return dm_mul_free(head(w->WQ[l], h, w->D, w->dh), kt);
}

/* The reader side R^B of a mode, [D, D]. */
static dm reader_d(const tlm *w, int l, int h, int mode)
{
    if (mode == CIRCUITS_COMPOSITION_V) return ov_d(w, l, h);
    dm qk = qk_d(w, l, h);
    if (mode == CIRCUITS_COMPOSITION_Q) return qk;
    dm t = dm_t(qk);
    dm_free(&qk);
    return t;
}

static double comp_score_d(dm writer, dm reader)
{
    dm p = dm_mul(writer, reader);
    double s = dm_frob(p) / (dm_frob(writer) * dm_frob(reader));
    dm_free(&p);
    return s;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d;
    }
    return e;
}

/* Scores of all three modes, [3][LH * LH]. */
static float *all_scores(const circuits_model *m, int LH)
{
    float *s = xmalloc((size_t)(3 * LH * LH) * sizeof *s);
    for (int mode = 0; mode < 3; mode++) CHECK_OK(circuits_model_composition_scores(m, mode, s + mode * LH * LH));
    return s;
}

/* Eigenvalues of QK of every head, [LH, dh] re and im. */
static void qk_eigs(const circuits_model *m, int LH, int dh, float *re, float *im)
{
    circuits_factored *f = NULL;
    CHECK_OK(circuits_model_qk(m, -1, -1, &f));
    if (f) CHECK_OK(circuits_factored_eigenvalues(f, re, im));
    else memset(re, 0, (size_t)(LH * dh) * sizeof *re), memset(im, 0, (size_t)(LH * dh) * sizeof *im);
    circuits_factored_free(f);
}

static double eig_set_diff(const float *re1, const float *im1, const float *re2, const float *im2, int LH, int dh)
{
    double worst = 0;
    for (int k = 0; k < LH; k++) {
        double a[64], b[64], c[64], d[64], scale = 1;
        for (int i = 0; i < dh; i++) {
            a[i] = re1[k * dh + i], b[i] = im1[k * dh + i], c[i] = re2[k * dh + i], d[i] = im2[k * dh + i];
            scale = fmax(scale, hypot(a[i], b[i]));
        }
        worst = fmax(worst, eig_match(a, b, c, d, dh) / scale);
    }
    return worst;
}

/* Norms of OV and QK of every head. */
static void circuit_norms(const circuits_model *m, float *ov, float *qk)
{
    circuits_factored *f = NULL;
    CHECK_OK(circuits_model_ov(m, -1, -1, &f));
    if (f) CHECK_OK(circuits_factored_norm(f, ov));
    circuits_factored_free(f);
    f = NULL;
    CHECK_OK(circuits_model_qk(m, -1, -1, &f));
    if (f) CHECK_OK(circuits_factored_norm(f, qk));
    circuits_factored_free(f);
}

/* A random orthogonal n x n matrix (Gram-Schmidt on Gaussian columns), row-major. */
static void random_orthogonal(rng *g, int n, double *R)
{
    for (int i = 0; i < n * n; i++) R[i] = rng_gauss(g);
    for (int j = 0; j < n; j++) {
        for (int pass = 0; pass < 2; pass++)
            for (int p = 0; p < j; p++) {
                double dot = 0;
                for (int i = 0; i < n; i++) dot += R[i * n + j] * R[i * n + p];
                for (int i = 0; i < n; i++) R[i * n + j] -= dot * R[i * n + p];
            }
        double nr = 0;
        for (int i = 0; i < n; i++) nr += R[i * n + j] * R[i * n + j];
        nr = sqrt(nr);
        for (int i = 0; i < n; i++) R[i * n + j] /= nr;
    }
}

/* W [rows, n] <- W R (in place), R [n, n]. */
static void right_mul(float *W, int rows, int n, const double *R)
{
    double t[64];
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < n; j++) {
            t[j] = 0;
            for (int k = 0; k < n; k++) t[j] += (double)W[i * n + k] * R[k * n + j];
        }
        for (int j = 0; j < n; j++) W[i * n + j] = (float)t[j];
    }
}

/* W [n, cols] <- R^T W (in place). */
static void left_mul_t(float *W, int n, int cols, const double *R)
{
    double *t = xmalloc((size_t)(n * cols) * sizeof *t);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < cols; j++) {
            t[i * cols + j] = 0;
            for (int k = 0; k < n; k++) t[i * cols + j] += R[k * n + i] * W[k * cols + j];
        }
    for (int i = 0; i < n * cols; i++) W[i] = (float)t[i];
    free(t);
}

/* (c): composition scores against ||OV_A R_B||_F / (||OV_A|| ||R_B||) in double. */
static void check_brute_scores(const tlm *w, const float *scores)
{
    int H = w->H, LH = w->L * H;
    for (int mode = 0; mode < 3; mode++) {
        double worst = 0;
        int nonzero_below = 0;
        for (int a = 0; a < LH; a++) {
            dm ov = ov_d(w, a / H, a % H);
            for (int b = 0; b < LH; b++) {
                float got = scores[mode * LH * LH + a * LH + b];
                if (a / H >= b / H) {
                    if (got != 0.0f) nonzero_below++;
                    continue;
                }
                dm rb = reader_d(w, b / H, b % H, mode);
                worst = fmax(worst, fabs(got - comp_score_d(ov, rb)));
                dm_free(&rb);
            }
            dm_free(&ov);
        }
        CHECK(worst < 2e-5, "composition scores mode %d vs brute force: worst %.3g", mode, worst);
        CHECK(nonzero_below == 0, "composition scores mode %d: %d non-zero where layer(A) >= layer(B)", mode, nonzero_below);
    }
}

/* (g): circuits, virtual weights and composition circuits against their dense formulas. */
static void check_dense_formulas(const circuits_model *m, const tlm *w)
{
    int L = w->L, H = w->H, D = w->D, dh = w->dh, V = w->V, P = w->P;
    dm WE = dm_from(w->WE, V, D), WEt = dm_t(WE), WU = dm_from(w->WU, D, V), Wp = dm_from(w->Wpos, P, D), Wpt = dm_t(Wp);
    dm *ov = xmalloc((size_t)(L * H) * sizeof *ov), *qk = xmalloc((size_t)(L * H) * sizeof *qk);
    dm *fov = xmalloc((size_t)(L * H) * sizeof *fov), *fqk = xmalloc((size_t)(L * H) * sizeof *fqk);
    dm *pqk = xmalloc((size_t)(L * H) * sizeof *pqk);
    for (int k = 0; k < L * H; k++) {
        ov[k] = ov_d(w, k / H, k % H);
        qk[k] = qk_d(w, k / H, k % H);
        fov[k] = dm_mul_free(dm_mul(WE, ov[k]), dm_copy(WU));
        fqk[k] = dm_mul_free(dm_mul(WE, qk[k]), dm_copy(WEt));
        pqk[k] = dm_mul_free(dm_mul(Wp, qk[k]), dm_copy(Wpt));
    }
    int (*fns[])(const circuits_model *, int32_t, int32_t, circuits_factored **) = {
        circuits_model_ov, circuits_model_qk, circuits_model_full_ov, circuits_model_full_qk, circuits_model_pos_qk};
    dm *wants[] = {ov, qk, fov, fqk, pqk};
    const char *names[] = {"OV", "QK", "full OV", "full QK", "pos QK"};
    for (int i = 0; i < 5; i++) {
        circuits_factored *f = NULL;
        /* all heads: leading [n_layers, n_heads] */
        CHECK_OK(fns[i](m, -1, -1, &f));
        if (f) {
            int64_t shape[4];
            int32_t nd = 0;
            CHECK_OK(circuits_factored_shape(f, shape, &nd, NULL));
            CHECK(nd == 4 && shape[0] == L && shape[1] == H && shape[2] == wants[i][0].r && shape[3] == wants[i][0].c,
                  "%s shape", names[i]);
            double e = fact_err(f, wants[i], L * H);
            CHECK(e < TOL, "%s (all heads) vs dense: %.3g", names[i], e);
            circuits_factored_free(f);
        }
        /* one layer ([n_heads]), one head (no leading dims) */
        f = NULL;
        CHECK_OK(fns[i](m, 1, -1, &f));
        if (f) {
            CHECK(fact_err(f, wants[i] + H, H) < TOL, "%s layer 1", names[i]);
            circuits_factored_free(f);
        }
        f = NULL;
        CHECK_OK(fns[i](m, -1, 2, &f));
        if (f) {
            dm sel[MAXL];
            for (int l = 0; l < L; l++) sel[l] = wants[i][l * H + 2];
            CHECK(fact_err(f, sel, L) < TOL, "%s head 2 of every layer", names[i]);
            circuits_factored_free(f);
        }
        f = NULL;
        CHECK_OK(fns[i](m, 1, 3, &f));
        if (f) {
            int64_t shape[4];
            int32_t nd = 0;
            CHECK_OK(circuits_factored_shape(f, shape, &nd, NULL));
            CHECK(nd == 2, "%s of one head: ndim %d", names[i], nd);
            CHECK(fact_err(f, &wants[i][H + 3], 1) < TOL, "%s L1H3", names[i]);
            circuits_factored_free(f);
        }
        circuits_factored *bad = (circuits_factored *)(void *)&L;
        CHECK_FAILS(fns[i](m, L, 0, &bad), CIRCUITS_E_RANGE, "layer");
        CHECK(bad == NULL, "%s left *out set on failure", names[i]);
        CHECK_FAILS(fns[i](m, 0, H, &bad), CIRCUITS_E_RANGE, "head");
        CHECK_FAILS(fns[i](m, -2, 0, &bad), CIRCUITS_E_RANGE, "layer");
        CHECK_FAILS(fns[i](NULL, 0, 0, &bad), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
        CHECK_FAILS(fns[i](m, 0, 0, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    }

    /* virtual weights, virtual OV and composition circuits for a few pairs */
    const int pairs[][2] = {{0, 1}, {1, 0}, {2, 2}, {3, 1}};
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        int ha = pairs[p][0], hb = pairs[p][1];
        int A = ha, B = H + hb; /* A in layer 0, B in layer 1 */
        circuits_factored *f = NULL;
        dm OA = head(w->WO[0], ha, dh, D), KB = head(w->WK[1], hb, D, dh), QB = head(w->WQ[1], hb, D, dh);
        dm VB = head(w->WV[1], hb, D, dh);
        dm want = dm_mul(OA, KB);
        CHECK_OK(circuits_model_virtual_weights(m, CIRCUITS_WRITER_HEAD, 0, ha, CIRCUITS_READER_K, 1, hb, &f));
        if (f) CHECK(fact_err(f, &want, 1) < TOL, "virtual weights W_O^A W_K^B (L0H%d, L1H%d)", ha, hb);
        circuits_factored_free(f);
        dm_free(&want);
        want = dm_mul(WE, QB);
        f = NULL;
        CHECK_OK(circuits_model_virtual_weights(m, CIRCUITS_WRITER_EMBED, -1, -1, CIRCUITS_READER_Q, 1, hb, &f));
        if (f) CHECK(fact_err(f, &want, 1) < TOL, "virtual weights W_E W_Q^B");
        circuits_factored_free(f);
        dm_free(&want);
        want = dm_mul(Wp, VB);
        f = NULL;
        CHECK_OK(circuits_model_virtual_weights(m, CIRCUITS_WRITER_POS_EMBED, 7, 7, CIRCUITS_READER_V, 1, hb, &f));
        if (f) CHECK(fact_err(f, &want, 1) < TOL, "virtual weights W_pos W_V^B");
        circuits_factored_free(f);
        dm_free(&want);
        want = dm_mul(OA, WU);
        f = NULL;
        CHECK_OK(circuits_model_virtual_weights(m, CIRCUITS_WRITER_HEAD, 0, ha, CIRCUITS_READER_UNEMBED, -1, -1, &f));
        if (f) CHECK(fact_err(f, &want, 1) < TOL, "virtual weights W_O^A W_U");
        circuits_factored_free(f);
        dm_free(&want);

        want = dm_mul(ov[A], ov[B]);
        f = NULL;
        CHECK_OK(circuits_model_virtual_ov(m, 0, ha, 1, hb, &f));
        if (f) CHECK(fact_err(f, &want, 1) < TOL, "virtual OV L0H%d -> L1H%d", ha, hb);
        circuits_factored_free(f);
        dm_free(&want);

        /* K: W_E QK^B (OV^A)^T W_E^T;  Q: W_E OV^A QK^B W_E^T;  V: W_E OV^A OV^B W_U */
        dm ovat = dm_t(ov[A]);
        dm wk = dm_mul_free(dm_mul_free(dm_mul(WE, qk[B]), ovat), dm_copy(WEt));
        dm wq = dm_mul_free(dm_mul_free(dm_mul(WE, ov[A]), dm_copy(qk[B])), dm_copy(WEt));
        dm wv = dm_mul_free(dm_mul_free(dm_mul(WE, ov[A]), dm_copy(ov[B])), dm_copy(WU));
        dm *cw[] = {&wq, &wk, &wv};
        for (int mode = 0; mode < 3; mode++) {
            f = NULL;
            CHECK_OK(circuits_model_composition_circuit(m, mode, 0, ha, 1, hb, &f));
            if (f) CHECK(fact_err(f, cw[mode], 1) < TOL, "composition circuit mode %d L0H%d -> L1H%d", mode, ha, hb);
            circuits_factored_free(f);
        }
        dm_free(&wk);
        dm_free(&wq);
        dm_free(&wv);
        dm_free(&OA);
        dm_free(&KB);
        dm_free(&QB);
        dm_free(&VB);
    }
    circuits_factored *bad = NULL;
    CHECK_FAILS(circuits_model_composition_circuit(m, 3, 0, 0, 1, 0, &bad), CIRCUITS_E_INVALID_ARGUMENT, "mode");
    CHECK_FAILS(circuits_model_composition_circuit(m, 0, 0, H, 1, 0, &bad), CIRCUITS_E_RANGE, "out of range");
    CHECK_FAILS(circuits_model_virtual_ov(m, 0, 0, L, 0, &bad), CIRCUITS_E_RANGE, "out of range");
    CHECK_FAILS(circuits_model_virtual_weights(m, 9, 0, 0, CIRCUITS_READER_K, 1, 0, &bad), CIRCUITS_E_INVALID_ARGUMENT,
                "writer kind");
    CHECK_FAILS(circuits_model_virtual_weights(m, CIRCUITS_WRITER_HEAD, 0, 0, 9, 1, 0, &bad), CIRCUITS_E_INVALID_ARGUMENT,
                "reader kind");
    CHECK_FAILS(circuits_model_virtual_weights(m, CIRCUITS_WRITER_HEAD, 0, H, CIRCUITS_READER_K, 1, 0, &bad),
                CIRCUITS_E_RANGE, "writer head");
    CHECK_FAILS(circuits_model_virtual_weights(m, CIRCUITS_WRITER_MLP, 0, 0, CIRCUITS_READER_K, 1, 0, &bad),
                CIRCUITS_E_UNSUPPORTED, "no MLPs");
    CHECK_FAILS(circuits_model_virtual_weights(m, CIRCUITS_WRITER_EMBED, 0, 0, CIRCUITS_READER_MLP, 1, 0, &bad),
                CIRCUITS_E_UNSUPPORTED, "no MLPs");
    CHECK(bad == NULL, "failures leave no object");

    for (int k = 0; k < L * H; k++) {
        dm_free(&ov[k]);
        dm_free(&qk[k]);
        dm_free(&fov[k]);
        dm_free(&fqk[k]);
        dm_free(&pqk[k]);
    }
    free(ov);
    free(qk);
    free(fov);
    free(fqk);
    free(pqk);
    dm_free(&WE);
    dm_free(&WEt);
    dm_free(&WU);
    dm_free(&Wp);
    dm_free(&Wpt);
}

static void test_model_invariances(void)
{
    rng g = {20240607};
    tlm base;
    tlm_random(&base, &g, 2, 4, 16, 4, 20, 12, 0);
    int H = base.H, LH = base.L * H, D = base.D, dh = base.dh;
    circuits_model *m0 = tlm_load(&base, "random_base");
    float *s0 = all_scores(m0, LH);
    float *re0 = xmalloc((size_t)(LH * dh) * sizeof *re0), *im0 = xmalloc((size_t)(LH * dh) * sizeof *im0);
    float *re1 = xmalloc((size_t)(LH * dh) * sizeof *re1), *im1 = xmalloc((size_t)(LH * dh) * sizeof *im1);
    qk_eigs(m0, LH, dh, re0, im0);
    float ovn0[64], qkn0[64], ovn1[64], qkn1[64], cp0[2][64], cp1[2][64];
    circuit_norms(m0, ovn0, qkn0);
    for (int full = 0; full < 2; full++) CHECK_OK(circuits_model_copying_scores(m0, full, cp0[full]));

    /* (c) brute force, all pairs and modes */
    check_brute_scores(&base, s0);
    /* the scores are not trivially zero */
    double smax = 0;
    for (int i = 0; i < 3 * LH * LH; i++) smax = fmax(smax, s0[i]);
    CHECK(smax > 0.1 && smax <= 1.0, "largest composition score %.3g", smax);

    /* (a) W_Q of a head times c, its W_K divided by c: QK, hence every score, unchanged */
    {
        tlm w;
        tlm_copy(&w, &base);
        const float c = 2.5f;
        const int heads[][2] = {{1, 2}, {0, 3}};
        for (int i = 0; i < 2; i++) {
            int l = heads[i][0], h = heads[i][1];
            for (int j = 0; j < D * dh; j++) {
                w.WQ[l][h * D * dh + j] *= c;
                w.WK[l][h * D * dh + j] /= c;
            }
        }
        circuits_model *m = tlm_load(&w, "scaled_qk");
        float *s = all_scores(m, LH);
        for (int mode = 0; mode < 3; mode++)
            CHECK(max_abs_diff(s + mode * LH * LH, s0 + mode * LH * LH, (size_t)(LH * LH)) < 1e-5,
                  "scaling W_Q by c, W_K by 1/c changed mode-%d scores by %.3g", mode,
                  max_abs_diff(s + mode * LH * LH, s0 + mode * LH * LH, (size_t)(LH * LH)));
        qk_eigs(m, LH, dh, re1, im1);
        double e = eig_set_diff(re0, im0, re1, im1, LH, dh);
        CHECK(e < 1e-4, "scaling W_Q by c, W_K by 1/c changed QK eigenvalues by %.3g", e);
        /* QK itself, hence its norm, is unchanged */
        float ovn[64], qkn[64];
        circuit_norms(m, ovn, qkn);
        CHECK(fabs(qkn[H + 2] - qkn0[H + 2]) < 1e-5 * qkn0[H + 2], "QK norm of the rescaled head changed");
        free(s);
        circuits_model_free(m);
        tlm_free(&w);
    }

    /* (b) rotating the d_head basis of heads: W_Q R, W_K R, W_V R, R^T W_O */
    {
        tlm w;
        tlm_copy(&w, &base);
        const int heads[][2] = {{0, 1}, {1, 0}, {1, 3}};
        double R[64];
        for (int i = 0; i < 3; i++) {
            int l = heads[i][0], h = heads[i][1];
            random_orthogonal(&g, dh, R);
            right_mul(w.WQ[l] + h * D * dh, D, dh, R);
            right_mul(w.WK[l] + h * D * dh, D, dh, R);
            random_orthogonal(&g, dh, R); /* OV may rotate independently of QK */
            right_mul(w.WV[l] + h * D * dh, D, dh, R);
            left_mul_t(w.WO[l] + h * dh * D, dh, D, R);
        }
        /* the weights did change */
        CHECK(max_abs_diff(w.WQ[0] + D * dh, base.WQ[0] + D * dh, (size_t)(D * dh)) > 1e-2, "rotation changed nothing");
        circuits_model *m = tlm_load(&w, "rotated");
        float *s = all_scores(m, LH);
        for (int mode = 0; mode < 3; mode++)
            CHECK(max_abs_diff(s + mode * LH * LH, s0 + mode * LH * LH, (size_t)(LH * LH)) < 1e-5,
                  "rotating d_head changed mode-%d scores by %.3g", mode,
                  max_abs_diff(s + mode * LH * LH, s0 + mode * LH * LH, (size_t)(LH * LH)));
        circuit_norms(m, ovn1, qkn1);
        double dn = 0;
        for (int k = 0; k < LH; k++) dn = fmax(dn, fmax(fabs(ovn1[k] - ovn0[k]) / ovn0[k], fabs(qkn1[k] - qkn0[k]) / qkn0[k]));
        CHECK(dn < 1e-5, "rotating d_head changed OV/QK norms by %.3g (relative)", dn);
        for (int full = 0; full < 2; full++) {
            CHECK_OK(circuits_model_copying_scores(m, full, cp1[full]));
            CHECK(max_abs_diff(cp1[full], cp0[full], (size_t)LH) < 1e-4, "rotating d_head changed copying scores (full %d) by %.3g",
                  full, max_abs_diff(cp1[full], cp0[full], (size_t)LH));
        }
        qk_eigs(m, LH, dh, re1, im1);
        double e = eig_set_diff(re0, im0, re1, im1, LH, dh);
        CHECK(e < 1e-4, "rotating d_head changed QK eigenvalues by %.3g", e);
        free(s);
        circuits_model_free(m);
        tlm_free(&w);
    }

    /* (f) identity-like OV: W_V = c U, W_O = +-U^T (U orthonormal columns); W_U = W_E^T */
    {
        tlm w;
        tlm_copy(&w, &base);
        for (int v = 0; v < base.V; v++)
            for (int j = 0; j < D; j++) w.WU[j * base.V + v] = w.WE[v * D + j];
        double Q[16 * 16];
        random_orthogonal(&g, D, Q); /* its first dh columns: U */
        const struct { int l, h; float c, sign; } cases[] = {{0, 0, 2.0f, 1.0f}, {1, 1, 1.5f, -1.0f}, {1, 2, 0.3f, -1.0f}};
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            float *Wv = w.WV[cases[i].l] + cases[i].h * D * dh, *Wo = w.WO[cases[i].l] + cases[i].h * dh * D;
            for (int r = 0; r < D; r++)
                for (int c = 0; c < dh; c++) {
                    Wv[r * dh + c] = cases[i].c * (float)Q[r * D + c];
                    Wo[c * D + r] = cases[i].sign * (float)Q[r * D + c];
                }
        }
        circuits_model *m = tlm_load(&w, "copying");
        float cp[2][64];
        for (int full = 0; full < 2; full++) {
            CHECK_OK(circuits_model_copying_scores(m, full, cp[full]));
            for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                int k = cases[i].l * H + cases[i].h;
                CHECK(fabs(cp[full][k] - cases[i].sign) < 1e-5, "copying score (full %d) of L%dH%d: %.7g, want %+g", full,
                      cases[i].l, cases[i].h, cp[full][k], cases[i].sign);
            }
            for (int k = 0; k < LH; k++)
                CHECK(cp[full][k] >= -1.0f - 1e-6f && cp[full][k] <= 1.0f + 1e-6f, "copying score %d out of [-1, 1]: %g", k,
                      cp[full][k]);
        }
        CHECK(max_abs_diff(cp[0] + H + 3, cp0[0] + H + 3, 1) < 1e-6, "an untouched head's copying score changed");
        circuits_model_free(m);
        tlm_free(&w);
    }

    /* (g) dense formulas */
    check_dense_formulas(m0, &base);

    /* errors of the model-level scores */
    CHECK_FAILS(circuits_model_composition_scores(m0, 3, s0), CIRCUITS_E_INVALID_ARGUMENT, "mode");
    CHECK_FAILS(circuits_model_composition_scores(NULL, 0, s0), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_model_composition_scores(m0, 0, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(circuits_model_mlp_composition_scores(m0, 0, s0), CIRCUITS_E_UNSUPPORTED, "attention-only");
    CHECK_FAILS(circuits_model_copying_scores(NULL, 0, s0), CIRCUITS_E_INVALID_ARGUMENT, "NULL");

    free(s0);
    free(re0);
    free(im0);
    free(re1);
    free(im1);
    circuits_model_free(m0);
    tlm_free(&base);
}

/* (d): MLP composition scores of m (the model of w) against ||W_out^A R^B||_F / (||W_out^A|| ||R^B||). */
static void check_brute_mlp_scores(const circuits_model *m, const tlm *w)
{
    int L = w->L, H = w->H, LH = L * H, M = w->M, D = w->D;
    float *out = xmalloc((size_t)(L * LH) * sizeof *out);
    for (int mode = 0; mode < 3; mode++) {
        CHECK_OK(circuits_model_mlp_composition_scores(m, mode, out));
        double worst = 0;
        int nonzero_below = 0;
        for (int la = 0; la < L; la++) {
            dm wo = dm_from(w->Wout[la], M, D);
            for (int b = 0; b < LH; b++) {
                float got = out[la * LH + b];
                if (la >= b / H) {
                    nonzero_below += got != 0.0f;
                    continue;
                }
                dm rb = reader_d(w, b / H, b % H, mode);
                worst = fmax(worst, fabs(got - comp_score_d(wo, rb)));
                dm_free(&rb);
            }
            dm_free(&wo);
        }
        CHECK(worst < 2e-5, "MLP composition (d_mlp %d, d_head %d, d_model %d) mode %d vs brute force: worst %.3g", M,
              w->dh, D, mode, worst);
        CHECK(nonzero_below == 0, "MLP composition (d_mlp %d) mode %d: %d non-zero where layer(A) >= layer(B)", M, mode,
              nonzero_below);
    }
    free(out);
}

/* (d): MLP composition for d_mlp above and below d_model (the two factorisations of W_out). */
static void test_mlp_composition(void)
{
    const int mlps[] = {32, 8};
    for (int t = 0; t < 2; t++) {
        rng g = {777u + (uint64_t)t};
        tlm w;
        tlm_random(&w, &g, 3, 2, 16, 4, 10, 8, mlps[t]);
        char name[32];
        snprintf(name, sizeof name, "mlp_%d", mlps[t]);
        circuits_model *m = tlm_load(&w, name);
        int L = w.L, H = w.H, LH = L * H, M = w.M, D = w.D;
        float *out = xmalloc((size_t)(L * LH) * sizeof *out);
        check_brute_mlp_scores(m, &w);
        /* the attention scores of a model with MLPs, too */
        float *s = all_scores(m, LH);
        check_brute_scores(&w, s);
        free(s);
        /* virtual weights between MLPs: W_out^0 W_in^2, and W_E W_in^1 */
        circuits_factored *f = NULL;
        CHECK_OK(circuits_model_virtual_weights(m, CIRCUITS_WRITER_MLP, 0, -1, CIRCUITS_READER_MLP, 2, -1, &f));
        dm want = dm_mul_free(dm_from(w.Wout[0], M, D), dm_from(w.Win[2], D, M));
        if (f) CHECK(fact_err(f, &want, 1) < TOL, "virtual weights W_out^0 W_in^2 (d_mlp %d)", M);
        circuits_factored_free(f);
        dm_free(&want);
        f = NULL;
        CHECK_OK(circuits_model_virtual_weights(m, CIRCUITS_WRITER_EMBED, 0, 0, CIRCUITS_READER_MLP, 1, 0, &f));
        want = dm_mul_free(dm_from(w.WE, w.V, D), dm_from(w.Win[1], D, M));
        if (f) CHECK(fact_err(f, &want, 1) < TOL, "virtual weights W_E W_in^1 (d_mlp %d)", M);
        circuits_factored_free(f);
        dm_free(&want);
        CHECK_FAILS(circuits_model_virtual_weights(m, CIRCUITS_WRITER_MLP, 3, 0, CIRCUITS_READER_MLP, 1, 0, &f),
                    CIRCUITS_E_RANGE, "writer layer 3");
        CHECK_FAILS(circuits_model_mlp_composition_scores(m, 5, out), CIRCUITS_E_INVALID_ARGUMENT, "mode");
        free(out);
        circuits_model_free(m);
        tlm_free(&w);
    }
}

/* W [H, a, b] head h <- X [a, r] Y [r, b] (Gaussian): a factor of rank <= r. */
static void low_rank_head(rng *g, float *W, int h, int a, int b, int r)
{
    float *X = gauss_f(g, (size_t)(a * r), 1.0 / sqrt((double)a)), *Y = gauss_f(g, (size_t)(r * b), 1.0);
    float *dst = W + (size_t)h * (size_t)(a * b);
    for (int i = 0; i < a; i++)
        for (int j = 0; j < b; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += (double)X[i * r + k] * Y[k * b + j];
            dst[i * b + j] = (float)s;
        }
    free(X);
    free(Y);
}

/* (h): d_head > d_model, where every [d_model, d_head] factor is wide (rank <= d_model) and the
 * QR reduction keeps d_model rows (as TransformerLens, which scores these models too). Brute
 * force for head and MLP writers, with some factors of rank below d_model (1, 2, 3, 5) and
 * some centred over d_model (rank d_model - 1, what fold_ln leaves). */
static void test_wide_heads(void)
{
    const int mlps[] = {0, 16, 4};
    for (int t = 0; t < 3; t++) {
        rng g = {4242u + (uint64_t)t};
        tlm w;
        tlm_random(&w, &g, 3, 2, 8, 12, 10, 8, mlps[t]);
        int D = w.D, dh = w.dh;
        /* rank-deficient heads: W_V L0H1 rank 3, W_K L1H0 rank 2, W_O L1H1 rank 1, W_Q L2H0 rank 5 */
        low_rank_head(&g, w.WV[0], 1, D, dh, 3);
        low_rank_head(&g, w.WK[1], 0, D, dh, 2);
        low_rank_head(&g, w.WO[1], 1, dh, D, 1);
        low_rank_head(&g, w.WQ[2], 0, D, dh, 5);
        /* centred over d_model (rank D - 1): W_V and W_K of L0H0 */
        for (int which = 0; which < 2; which++) {
            float *W = which ? w.WK[0] : w.WV[0];
            for (int j = 0; j < dh; j++) {
                double mean = 0;
                for (int i = 0; i < D; i++) mean += W[i * dh + j];
                for (int i = 0; i < D; i++) W[i * dh + j] -= (float)(mean / D);
            }
        }
        char name[32];
        snprintf(name, sizeof name, "wide_%d", mlps[t]);
        circuits_model *m = tlm_load(&w, name);
        int LH = w.L * w.H;
        float *s = all_scores(m, LH);
        check_brute_scores(&w, s);
        for (int i = 0; i < 3 * LH * LH; i++)
            CHECK(s[i] >= 0.0f && s[i] <= 1.0f + 1e-6f, "wide heads: score %d = %g outside [0, 1]", i, s[i]);
        free(s);
        if (w.M) check_brute_mlp_scores(m, &w);
        else {
            float none[3 * 3 * 2];
            CHECK_FAILS(circuits_model_mlp_composition_scores(m, 0, none), CIRCUITS_E_UNSUPPORTED, "attention-only");
        }
        circuits_model_free(m);
        tlm_free(&w);
    }
}

/* (e): the baseline against draws made here: Gaussian W_V [D, dh], W_O [dh, D] (or W_out
 * [d_mlp, D]) and reader factors [D, dh] x2, brute-force dense score. */
static void baseline_here(rng *g, int D, int dh, int M, int n, double *mean, double *std)
{
    double s1 = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        dm wr;
        if (M) {
            wr = dm_new(M, D);
            for (int64_t k = 0; k < (int64_t)M * D; k++) wr.d[k] = rng_gauss(g);
        } else {
            dm a = dm_new(D, dh), b = dm_new(dh, D);
            for (int64_t k = 0; k < (int64_t)D * dh; k++) a.d[k] = rng_gauss(g), b.d[k] = rng_gauss(g);
            wr = dm_mul_free(a, b);
        }
        dm x = dm_new(D, dh), y = dm_new(D, dh);
        for (int64_t k = 0; k < (int64_t)D * dh; k++) x.d[k] = rng_gauss(g), y.d[k] = rng_gauss(g);
        dm yt = dm_t(y);
        dm rd = dm_mul(x, yt);
        double s = comp_score_d(wr, rd);
        s1 += s;
        s2 += s * s;
        dm_free(&wr);
        dm_free(&x);
        dm_free(&y);
        dm_free(&yt);
        dm_free(&rd);
    }
    *mean = s1 / n;
    double var = s2 / n - *mean * *mean;
    *std = sqrt(var > 0 ? var : 0);
}

static void test_baseline(void)
{
    const int n = 400;
    const struct { int D, dh, M; } small[] = {{16, 4, 0}, {12, 6, 0}, {16, 4, 32}, {16, 4, 8}, {8, 12, 0}, {8, 12, 16}, {8, 12, 4}};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        float mean = 0, std = 0, mean2 = 0;
        CHECK_OK(circuits_composition_baseline(small[i].D, small[i].dh, small[i].M, n, 12345 + i, &mean, &std));
        CHECK_OK(circuits_composition_baseline(small[i].D, small[i].dh, small[i].M, n, 12345 + i, &mean2, NULL));
        CHECK(mean == mean2, "the baseline is not a function of its seed");
        rng g = {999 + i};
        double hm, hs;
        baseline_here(&g, small[i].D, small[i].dh, small[i].M, n, &hm, &hs);
        double se = sqrt((double)std * std / n + hs * hs / n);
        printf("baseline D=%d dh=%d d_mlp=%d: library %.4f (std %.4f), here %.4f (std %.4f), %.2f standard errors apart\n",
               small[i].D, small[i].dh, small[i].M, mean, std, hm, hs, fabs(mean - hm) / se);
        CHECK(fabs(mean - hm) < 4 * se, "baseline D=%d dh=%d d_mlp=%d: library %.4f, here %.4f (se %.4f)", small[i].D,
              small[i].dh, small[i].M, mean, hm, se);
        CHECK(fabs(std - hs) < 0.25 * hs, "baseline std: library %.4f, here %.4f", std, hs);
    }
    /* large d_model: close to 1/sqrt(d_model) */
    const struct { int D, dh, M, n; } large[] = {{256, 16, 0, 60}, {256, 16, 320, 12}, {256, 16, 64, 60}};
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++) {
        float mean = 0, std = 0;
        CHECK_OK(circuits_composition_baseline(large[i].D, large[i].dh, large[i].M, large[i].n, 7 + i, &mean, &std));
        double want = 1.0 / sqrt((double)large[i].D);
        printf("baseline D=%d dh=%d d_mlp=%d: %.4f (std %.4f), 1/sqrt(d_model) = %.4f\n", large[i].D, large[i].dh, large[i].M,
               mean, std, want);
        CHECK(fabs(mean - want) < 0.2 * want, "baseline D=%d d_mlp=%d: %.4f vs 1/sqrt(D) %.4f", large[i].D, large[i].M, mean,
              want);
    }
    float mean;
    CHECK_FAILS(circuits_composition_baseline(16, 4, 0, 10, 1, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT, "mean is NULL");
    CHECK_FAILS(circuits_composition_baseline(4, 65537, 0, 10, 1, &mean, NULL), CIRCUITS_E_RANGE, "1 <= d_head <= 65536");
    CHECK_FAILS(circuits_composition_baseline(0, 4, 0, 10, 1, &mean, NULL), CIRCUITS_E_RANGE, "1 <= d_model <= 65536");
    CHECK_FAILS(circuits_composition_baseline(16, 0, 0, 10, 1, &mean, NULL), CIRCUITS_E_RANGE, "1 <= d_head");
    CHECK_FAILS(circuits_composition_baseline(16, 4, -1, 10, 1, &mean, NULL), CIRCUITS_E_RANGE, "d_mlp >= 0");
    CHECK_FAILS(circuits_composition_baseline(16, 4, 0, 0, 1, &mean, NULL), CIRCUITS_E_RANGE, "n_samples >= 1");
}

int main(void)
{
    rng g = {42};
    const int64_t shapes[][3] = {{7, 3, 5}, {5, 5, 5}, {4, 6, 9}, {9, 2, 9}, {6, 8, 3}, {4, 6, 4}, {1, 3, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int64_t batch = 1; batch <= 3; batch += 2) test_shape(&g, batch, shapes[i][0], shapes[i][1], shapes[i][2]);
    test_topk_large(&g);
    test_errors();

    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/circuits_factored_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) die("mkdtemp");
    test_model_invariances();
    test_mlp_composition();
    test_wide_heads();
    test_baseline();
    if (nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) fprintf(stderr, "could not remove %s\n", g_root);
    return tu_finish("test_factored");
}
