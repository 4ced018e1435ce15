/* The probe solvers (docs/probes.md "Objectives"), in double precision through CBLAS/LAPACKE.
 *
 * LINEAR: centring removes the intercept (it is not penalised); then plain least squares through
 * dgelsd (the minimum-norm solution with singular values below tol times the largest treated as
 * zero: scikit-learn 1.9's LinearRegression, scipy's lstsq with cond = its tol, default 1e-6), or with l2 > 0 the ridge normal equations (Xc^T Xc + l2 I) W^T =
 * Xc^T Yc through a Cholesky solve (dposv; scikit-learn's Ridge(alpha = l2)).
 *
 * LOGISTIC: scikit-learn's LogisticRegression(C = 1 / l2) objective,
 *     sum_i log-loss_i + (l2 / 2) ||W||^2      (intercepts unpenalised),
 * binary (K = 2: one row of weights for class 1, the sigmoid) or multinomial (K rows, softmax;
 * the penalty makes the weights identifiable, the intercepts are fixed by the last class's being
 * 0 during the solve and centred to mean 0 afterwards, scikit-learn's symmetric convention).
 * Newton's method from zero over all unknowns at once (a dense Hessian of (n_coef (d + 1))^2,
 * bounded by CX_PROBE_MAX_NEWTON), the system solved by Cholesky (dposv; a Levenberg shift if it
 * is not numerically positive definite), with a backtracking (Armijo) line search so every step
 * lowers the objective; it stops when a step's largest change is below tol or at max_iter. */
#include "probe.h"

#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <string.h>

#include "factored.h" /* cx_lapack_fail */

int cx_probe_fit_linear(circuits_probe *p, const float *X, int64_t n, const float *y, const circuits_probe_options *o)
{
    const int64_t d = p->d, T = p->n_outputs;
    const int64_t rows = n > d ? n : d;
    size_t nd = (size_t)n * (size_t)d, nb, dd;
    if (!cx_mul_size((size_t)d, (size_t)d, &dd) || dd > SIZE_MAX / sizeof(double) / 2 ||
        !cx_mul_size((size_t)rows, (size_t)T, &nb) || nb > SIZE_MAX / sizeof(double))
        return cx_fail(CIRCUITS_E_RANGE, "circuits_probe_fit: d = %lld is too large", (long long)d);
    double *A = cx_malloc(nd * sizeof(double)), *B = cx_calloc(nb, sizeof(double));
    double *mx = cx_calloc((size_t)d, sizeof(double)), *my = cx_calloc((size_t)T, sizeof(double));
    double *G = NULL, *s = NULL;
    int rc = CIRCUITS_OK;
    if (!A || !B || !mx || !my) {
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_probe_fit: out of memory");
        goto done;
    }
    if (o->fit_intercept) {
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < d; j++) mx[j] += X[(size_t)i * (size_t)d + (size_t)j];
            for (int64_t t = 0; t < T; t++) my[t] += y[(size_t)i * (size_t)T + (size_t)t];
        }
        for (int64_t j = 0; j < d; j++) mx[j] /= (double)n;
        for (int64_t t = 0; t < T; t++) my[t] /= (double)n;
    }
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < d; j++) A[(size_t)i * (size_t)d + (size_t)j] = X[(size_t)i * (size_t)d + (size_t)j] - mx[j];
        for (int64_t t = 0; t < T; t++) B[(size_t)i * (size_t)T + (size_t)t] = y[(size_t)i * (size_t)T + (size_t)t] - my[t];
    }
    lapack_int info;
    const double *sol; /* W^T [d, T] */
    if (o->l2 == 0) {
        s = cx_malloc((size_t)(n < d ? n : d) * sizeof(double));
        if (!s) {
            rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_probe_fit: out of memory");
            goto done;
        }
        lapack_int rank;
        info = LAPACKE_dgelsd(LAPACK_ROW_MAJOR, (lapack_int)n, (lapack_int)d, (lapack_int)T, A, (lapack_int)d, B,
                              (lapack_int)T, s, (double)o->tol, &rank);
        if (info) {
            rc = cx_lapack_fail((int)info, "circuits_probe_fit: least squares (dgelsd)");
            goto done;
        }
        sol = B;
    } else {
        G = cx_malloc(dd * sizeof(double) + (size_t)d * (size_t)T * sizeof(double));
        if (!G) {
            rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "circuits_probe_fit: out of memory");
            goto done;
        }
        double *R = G + dd;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)d, (blasint)n, 1.0, A, (blasint)d, 0.0, G,
                    (blasint)d);
        for (int64_t j = 0; j < d; j++) G[(size_t)j * (size_t)d + (size_t)j] += o->l2;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)d, (blasint)T, (blasint)n, 1.0, A, (blasint)d,
                    B, (blasint)T, 0.0, R, (blasint)T);
        info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, (lapack_int)T, G, (lapack_int)d, R, (lapack_int)T);
        if (info) {
            rc = cx_lapack_fail((int)info, "circuits_probe_fit: ridge normal equations (dposv)");
            goto done;
        }
        sol = R;
    }
    for (int64_t t = 0; t < T; t++) {
        double b = my[t];
        for (int64_t j = 0; j < d; j++) {
            double w = sol[(size_t)j * (size_t)T + (size_t)t];
            p->W[(size_t)t * (size_t)d + (size_t)j] = (float)w;
            b -= mx[j] * w;
        }
        p->b[t] = o->fit_intercept ? (float)b : 0.0f;
    }
    p->n_iter = 0;
done:
    cx_free(A);
    cx_free(B);
    cx_free(mx);
    cx_free(my);
    cx_free(G);
    cx_free(s);
    return rc;
}

/* ---- logistic regression ---- */

typedef struct logit {
    int64_t n, d, D, C, K; /* D = d + fit_intercept; C = rows of beta (1 binary, else K) */
    double l2;
    const double *X1;      /* [n, D]: the rows, then a column of ones with an intercept */
    const float *y;        /* [n] labels */
    double *Z;             /* [n, C] scores, then (eval) probabilities */
} logit;

/* The objective at beta [C, D]; Z left holding the scores. */
static double objective(const logit *L, const double *beta)
{
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)L->n, (blasint)L->C, (blasint)L->D, 1.0, L->X1,
                (blasint)L->D, beta, (blasint)L->D, 0.0, L->Z, (blasint)L->C);
    double f = 0;
    for (int64_t i = 0; i < L->n; i++) {
        const double *z = L->Z + (size_t)i * (size_t)L->C;
        int64_t c = (int64_t)L->y[i];
        if (L->C == 1) {
            double t = z[0]; /* log(1 + e^t) - [c == 1] t */
            f += (t > 0 ? t + log1p(exp(-t)) : log1p(exp(t))) - (c == 1 ? t : 0);
        } else {
            double m = z[0], s = 0;
            for (int64_t k = 1; k < L->C; k++)
                if (z[k] > m) m = z[k];
            for (int64_t k = 0; k < L->C; k++) s += exp(z[k] - m);
            f += m + log(s) - z[c];
        }
    }
    double r = 0;
    for (int64_t k = 0; k < L->C; k++)
        for (int64_t j = 0; j < L->d; j++) r += beta[(size_t)k * (size_t)L->D + (size_t)j] * beta[(size_t)k * (size_t)L->D + (size_t)j];
    return f + 0.5 * L->l2 * r;
}

/* Gradient g [C D] and Hessian H [C D, C D] at the beta objective() last saw (Z: its scores);
 * A: [n, D] scratch. */
static void gradient_hessian(const logit *L, const double *beta, double *g, double *H, double *A, double *w)
{
    const int64_t n = L->n, D = L->D, C = L->C, P = C * D;
    /* Z -> probabilities; residuals r_ik = p_ik - [y_i = k] into A-sized use below */
    for (int64_t i = 0; i < n; i++) {
        double *z = L->Z + (size_t)i * (size_t)C;
        if (C == 1) {
            double t = z[0];
            z[0] = t >= 0 ? 1 / (1 + exp(-t)) : exp(t) / (1 + exp(t));
        } else {
            double m = z[0], s = 0;
            for (int64_t k = 1; k < C; k++)
                if (z[k] > m) m = z[k];
            for (int64_t k = 0; k < C; k++) s += (z[k] = exp(z[k] - m));
            for (int64_t k = 0; k < C; k++) z[k] /= s;
        }
    }
    memset(g, 0, (size_t)P * sizeof(double));
    for (int64_t k = 0; k < C; k++) {
        for (int64_t i = 0; i < n; i++) {
            int64_t c = (int64_t)L->y[i];
            w[i] = L->Z[(size_t)i * (size_t)C + (size_t)k] - (C == 1 ? (c == 1) : (c == k));
        }
        cblas_dgemv(CblasRowMajor, CblasTrans, (blasint)n, (blasint)D, 1.0, L->X1, (blasint)D, w, 1, 0.0,
                    g + (size_t)k * (size_t)D, 1);
        for (int64_t j = 0; j < L->d; j++) g[(size_t)k * (size_t)D + (size_t)j] += L->l2 * beta[(size_t)k * (size_t)D + (size_t)j];
    }
    for (int64_t k = 0; k < C; k++) {
        for (int64_t l = k; l < C; l++) {
            /* H_kl = X1^T diag(p_k (delta_kl - p_l)) X1 */
            for (int64_t i = 0; i < n; i++) {
                double pk = L->Z[(size_t)i * (size_t)C + (size_t)k];
                double v = C == 1 ? pk * (1 - pk) : pk * ((k == l) - L->Z[(size_t)i * (size_t)C + (size_t)l]);
                for (int64_t j = 0; j < D; j++) A[(size_t)i * (size_t)D + (size_t)j] = v * L->X1[(size_t)i * (size_t)D + (size_t)j];
            }
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)D, (blasint)D, (blasint)n, 1.0, L->X1,
                        (blasint)D, A, (blasint)D, 0.0, H + (size_t)k * (size_t)D * (size_t)P + (size_t)l * (size_t)D,
                        (blasint)P);
            if (l != k)
                for (int64_t a = 0; a < D; a++)
                    for (int64_t b = 0; b < D; b++)
                        H[((size_t)l * (size_t)D + (size_t)b) * (size_t)P + (size_t)k * (size_t)D + (size_t)a] =
                            H[((size_t)k * (size_t)D + (size_t)a) * (size_t)P + (size_t)l * (size_t)D + (size_t)b];
        }
        for (int64_t j = 0; j < L->d; j++) H[((size_t)k * (size_t)D + (size_t)j) * (size_t)(P + 1)] += L->l2;
    }
}

int cx_probe_fit_logistic(circuits_probe *p, const float *X, int64_t n, const float *y, const circuits_probe_options *o)
{
    static const char *fn = "circuits_probe_fit";
    const int64_t d = p->d, D = d + o->fit_intercept, C = p->n_coef, P = C * D;
    /* sizes: n * D within what rows_check allowed (n * d doubles) plus a column; P <= CX_PROBE_MAX_NEWTON */
    size_t nD;
    if (!cx_mul_size((size_t)n, (size_t)D, &nD) || nD > SIZE_MAX / sizeof(double) / 2)
        return cx_fail(CIRCUITS_E_RANGE, "%s: X is too large", fn);
    size_t PP = (size_t)P * (size_t)P;
    double *X1 = cx_malloc(nD * sizeof(double)), *A = cx_malloc(nD * sizeof(double));
    double *Z = cx_malloc((size_t)n * (size_t)C * sizeof(double)), *w = cx_malloc((size_t)n * sizeof(double));
    double *H = cx_malloc(2 * PP * sizeof(double)), *vec = cx_calloc(4 * (size_t)P, sizeof(double));
    int rc = CIRCUITS_OK;
    if (!X1 || !A || !Z || !w || !H || !vec) {
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        goto done;
    }
    double *H2 = H + PP, *beta = vec, *g = vec + P, *step = vec + 2 * P, *trial = vec + 3 * P;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < d; j++) X1[(size_t)i * (size_t)D + (size_t)j] = X[(size_t)i * (size_t)d + (size_t)j];
        if (o->fit_intercept) X1[(size_t)i * (size_t)D + (size_t)d] = 1.0;
    }
    logit L = {.n = n, .d = d, .D = D, .C = C, .K = p->n_outputs, .l2 = o->l2, .X1 = X1, .y = y, .Z = Z};
    /* multinomial with intercepts: the last class's intercept stays 0 in the solve */
    const int64_t fixed = (C > 1 && o->fit_intercept) ? (C - 1) * D + d : -1;
    double f = objective(&L, beta);
    int32_t it = 0;
    while (it < o->max_iter) {
        gradient_hessian(&L, beta, g, H, A, w);
        if (fixed >= 0) {
            for (int64_t j = 0; j < P; j++) H[(size_t)fixed * (size_t)P + (size_t)j] = H[(size_t)j * (size_t)P + (size_t)fixed] = 0;
            H[(size_t)fixed * (size_t)P + (size_t)fixed] = 1;
            g[fixed] = 0;
        }
        /* Newton step: H step = -g by Cholesky; a shift mu I (growing) if H is not numerically PD */
        double hmax = 0;
        for (int64_t j = 0; j < P; j++) hmax = fmax(hmax, H[(size_t)j * (size_t)(P + 1)]);
        double mu = 0;
        lapack_int info = 1;
        for (int tries = 0; tries < 20 && info != 0; tries++) {
            memcpy(H2, H, PP * sizeof(double));
            for (int64_t j = 0; j < P; j++) {
                H2[(size_t)j * (size_t)(P + 1)] += mu;
                step[j] = -g[j];
            }
            info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (lapack_int)P, 1, H2, (lapack_int)P, step, 1);
            if (info < 0) break;
            mu = mu == 0 ? 1e-10 * (hmax > 0 ? hmax : 1) : mu * 10;
        }
        if (info != 0) {
            rc = cx_lapack_fail((int)info, "circuits_probe_fit: the Newton system (dposv)");
            goto done;
        }
        /* backtracking line search (Armijo) */
        double slope = 0;
        for (int64_t j = 0; j < P; j++) slope += g[j] * step[j];
        double t = 1, ft = f;
        bool moved = false;
        for (int ls = 0; ls < 40; ls++) {
            for (int64_t j = 0; j < P; j++) trial[j] = beta[j] + t * step[j];
            ft = objective(&L, trial);
            if (isfinite(ft) && ft <= f + 1e-4 * t * slope) {
                moved = true;
                break;
            }
            t *= 0.5;
        }
        it++;
        if (!moved) break; /* no decrease left at double precision: at the optimum */
        double change = 0;
        for (int64_t j = 0; j < P; j++) change = fmax(change, fabs(trial[j] - beta[j]));
        memcpy(beta, trial, (size_t)P * sizeof(double));
        f = ft;
        if (change < o->tol) break;
    }
    if (fixed >= 0) { /* scikit-learn's symmetric convention: intercepts of mean 0 */
        double m = 0;
        for (int64_t k = 0; k < C; k++) m += beta[(size_t)k * (size_t)D + (size_t)d];
        for (int64_t k = 0; k < C; k++) beta[(size_t)k * (size_t)D + (size_t)d] -= m / (double)C;
    }
    for (int64_t k = 0; k < C; k++) {
        for (int64_t j = 0; j < d; j++) p->W[(size_t)k * (size_t)d + (size_t)j] = (float)beta[(size_t)k * (size_t)D + (size_t)j];
        p->b[k] = o->fit_intercept ? (float)beta[(size_t)k * (size_t)D + (size_t)d] : 0.0f;
    }
    p->n_iter = it;
done:
    cx_free(X1);
    cx_free(A);
    cx_free(Z);
    cx_free(w);
    cx_free(H);
    cx_free(vec);
    return rc;
}
