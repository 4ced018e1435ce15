/* Linear probes (docs/probes.md): options, the fit's checks, the object, predictions and the
 * held-out scores. The solvers are in probe_fit.c, the file in io/probe_file.c, the monitor in
 * probe_monitor.c. Predictions are computed in double (one dot product per row and output: a
 * probe has few outputs), so that a monitor's values and predict()'s agree exactly. */
#include "probe.h"

#include <math.h>
#include <string.h>

/* log(2^-52) and log(1 - 2^-52): the clip of scikit-learn's log_loss (float64's eps) */
#define LOG_EPS (-36.04365338911715)
#define LOG_1M_EPS (-2.220446049250313e-16)

static const size_t opt_versions[] = {sizeof(circuits_probe_options)};
static const size_t info_versions[] = {sizeof(circuits_probe_info)};
static const size_t score_versions[] = {sizeof(circuits_probe_score)};

void circuits_probe_options_init(circuits_probe_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->kind = CIRCUITS_PROBE_LOGISTIC;
    opts->l2 = 1.0f;
    opts->fit_intercept = 1;
    opts->max_iter = 50;
    opts->tol = 1e-6f;
    opts->hook_name = NULL;
}

int cx_probe_new(circuits_probe **out, int32_t kind, int64_t d, int64_t n_outputs, const char *hook_name,
                 const char *fn)
{
    *out = NULL;
    int64_t n_coef = (kind == CIRCUITS_PROBE_LOGISTIC && n_outputs == 2) ? 1 : n_outputs;
    size_t nw;
    if (!cx_mul_size((size_t)n_coef, (size_t)d, &nw) || nw > SIZE_MAX / sizeof(float)) {
        return cx_fail(CIRCUITS_E_RANGE, "%s: a probe of [%lld, %lld] weights is too large", fn,
                       (long long)n_coef, (long long)d);
    }
    circuits_probe *p = cx_calloc(1, sizeof *p);
    if (p) {
        p->W = cx_calloc(nw, sizeof(float));
        p->b = cx_calloc((size_t)n_coef, sizeof(float));
        p->hook_name = cx_strdup(hook_name ? hook_name : "");
    }
    if (!p || !p->W || !p->b || !p->hook_name) {
        circuits_probe_free(p);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    p->kind = kind;
    p->d = d;
    p->n_outputs = n_outputs;
    p->n_coef = n_coef;
    p->fit_intercept = 1;
    *out = p;
    return CIRCUITS_OK;
}

void circuits_probe_free(circuits_probe *p)
{
    if (!p) return;
    cx_free(p->W);
    cx_free(p->b);
    cx_free(p->hook_name);
    cx_free(p);
}

/* First non-finite entry of a [rows, cols] array, as a failure naming fn and what; else OK. */
static int finite_check(const float *a, int64_t rows, int64_t cols, const char *fn, const char *what)
{
    size_t n = (size_t)rows * (size_t)cols;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]))
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s[%lld, %lld] = %g is not finite", fn, what,
                           (long long)(i / (size_t)cols), (long long)(i % (size_t)cols), (double)a[i]);
    return CIRCUITS_OK;
}

/* Class labels y [n]: integers in [0, k_max) (k_max 0: no bound); the largest + 1 into *K. */
static int label_check(const float *y, int64_t n, int64_t k_max, const char *fn, int64_t *K)
{
    int64_t top = -1;
    for (int64_t i = 0; i < n; i++) {
        float v = y[i];
        if (!isfinite(v) || v < 0 || v != floorf(v) || v >= 65536.0f)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "%s: y[%lld] = %g is not a class label (an integer in [0, 65536))", fn, (long long)i,
                           (double)v);
        if (k_max > 0 && (int64_t)v >= k_max)
            return cx_fail(CIRCUITS_E_RANGE, "%s: y[%lld] = %g is not one of the probe's %lld classes", fn,
                           (long long)i, (double)v, (long long)k_max);
        if ((int64_t)v > top) top = (int64_t)v;
    }
    *K = top + 1;
    return CIRCUITS_OK;
}

/* X [n, d]: not NULL, n and d at least 1, n * d within size_t and finite. */
static int rows_check(const float *X, int64_t n, int64_t d, const char *fn)
{
    size_t nd;
    if (n < 1 || d < 1) return cx_fail(CIRCUITS_E_SHAPE, "%s: X must be [n >= 1, d >= 1], not [%lld, %lld]", fn,
                                       (long long)n, (long long)d);
    if (!cx_mul_size((size_t)n, (size_t)d, &nd) || nd > SIZE_MAX / sizeof(double))
        return cx_fail(CIRCUITS_E_RANGE, "%s: X of [%lld, %lld] is too large", fn, (long long)n, (long long)d);
    return finite_check(X, n, d, fn, "X");
}

int circuits_probe_fit(circuits_probe **out, const float *X, int64_t n, int64_t d, const float *y,
                       int64_t n_targets, const circuits_probe_options *opts)
{
    static const char *fn = "circuits_probe_fit";
    if (!out || !X || !y) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fn);
    *out = NULL;
    circuits_probe_options o;
    circuits_probe_options_init(&o);
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, opt_versions, CX_COUNT(opt_versions), fn))) return rc;
    if (o.kind != CIRCUITS_PROBE_LINEAR && o.kind != CIRCUITS_PROBE_LOGISTIC)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: kind %d is not CIRCUITS_PROBE_LINEAR or _LOGISTIC", fn,
                       (int)o.kind);
    if (!isfinite(o.l2) || o.l2 < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: l2 = %g must be finite and >= 0", fn, (double)o.l2);
    if (o.kind == CIRCUITS_PROBE_LOGISTIC && o.l2 == 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: unpenalised logistic regression (l2 = 0, C = inf) is not supported: on separable "
                       "rows it has no optimum", fn);
    if (o.fit_intercept != 0 && o.fit_intercept != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: fit_intercept must be 0 or 1, not %d", fn,
                       (int)o.fit_intercept);
    if (o.max_iter < 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: max_iter must be >= 1, not %d", fn, (int)o.max_iter);
    if (!isfinite(o.tol) || o.tol <= 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: tol = %g must be finite and > 0", fn, (double)o.tol);
    if (o.hook_name) {
        size_t len = strlen(o.hook_name);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)o.hook_name[i] >= 0x80 || (unsigned char)o.hook_name[i] < 0x20)
                return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: hook_name must be printable ASCII (a hook point's name)",
                               fn);
        if (len > 4096) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: hook_name is longer than 4096 bytes", fn);
    }
    if ((rc = rows_check(X, n, d, fn))) return rc;
    /* LAPACK and CBLAS take 32-bit sizes */
    if (n > INT32_MAX || d > INT32_MAX || n_targets > INT32_MAX)
        return cx_fail(CIRCUITS_E_RANGE, "%s: [%lld, %lld] rows (%lld targets) exceed LAPACK's 32-bit sizes", fn,
                       (long long)n, (long long)d, (long long)n_targets);
    int64_t n_out;
    if (o.kind == CIRCUITS_PROBE_LINEAR) {
        size_t nt;
        if (n_targets < 1 || !cx_mul_size((size_t)n, (size_t)n_targets, &nt) || nt > SIZE_MAX / sizeof(double))
            return cx_fail(CIRCUITS_E_SHAPE, "%s: a linear probe needs y [n, n_targets >= 1], not n_targets = %lld",
                           fn, (long long)n_targets);
        if ((rc = finite_check(y, n, n_targets, fn, "y"))) return rc;
        n_out = n_targets;
    } else {
        if (n_targets != 1)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: a logistic probe takes y [n] class labels (n_targets 1, not %lld)",
                           fn, (long long)n_targets);
        if ((rc = label_check(y, n, 0, fn, &n_out))) return rc;
        if (n_out < 2)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the labels hold a single class (0): nothing to separate",
                           fn);
        /* every class 0 .. K-1 must have rows: an absent one's unpenalised intercept has no optimum */
        unsigned char *seen = cx_calloc((size_t)n_out, 1);
        if (!seen) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        for (int64_t i = 0; i < n; i++) seen[(size_t)y[i]] = 1;
        int64_t absent = -1;
        for (int64_t k = 0; k < n_out && absent < 0; k++)
            if (!seen[k]) absent = k;
        cx_free(seen);
        if (absent >= 0)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "%s: class %lld has no rows (labels are 0 .. K-1 with every class present; K = %lld)", fn,
                           (long long)absent, (long long)n_out);
        int64_t n_coef = n_out == 2 ? 1 : n_out;
        if (n_coef > CX_PROBE_MAX_NEWTON || d + o.fit_intercept > CX_PROBE_MAX_NEWTON / n_coef)
            return cx_fail(CIRCUITS_E_UNSUPPORTED,
                           "%s: the Newton system of %lld classes x %lld inputs exceeds %d unknowns (a dense "
                           "Hessian); reduce d (e.g. PCA) or the classes",
                           fn, (long long)n_coef, (long long)(d + o.fit_intercept), CX_PROBE_MAX_NEWTON);
    }
    circuits_probe *p;
    if ((rc = cx_probe_new(&p, o.kind, d, n_out, o.hook_name, fn))) return rc;
    p->l2 = o.l2;
    p->fit_intercept = o.fit_intercept;
    rc = o.kind == CIRCUITS_PROBE_LINEAR ? cx_probe_fit_linear(p, X, n, y, &o) : cx_probe_fit_logistic(p, X, n, y, &o);
    if (rc) {
        circuits_probe_free(p);
        return rc;
    }
    *out = p;
    return CIRCUITS_OK;
}

int circuits_probe_get_info(const circuits_probe *p, circuits_probe_info *info)
{
    static const char *fn = "circuits_probe_get_info";
    if (!p || !info) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fn);
    uint32_t size = info->size;
    int rc = cx_struct_size_check(size, info_versions, CX_COUNT(info_versions), fn, true);
    if (rc) return rc;
    circuits_probe_info v = {.size = sizeof v, .kind = p->kind, .d = p->d, .n_outputs = p->n_outputs,
                             .l2 = p->l2, .fit_intercept = p->fit_intercept, .n_iter = p->n_iter,
                             .hook_name = p->hook_name};
    if (size > sizeof v) size = sizeof v;
    memcpy((char *)info + sizeof(uint32_t), (const char *)&v + sizeof(uint32_t), size - sizeof(uint32_t));
    info->size = size;
    return CIRCUITS_OK;
}

static void view(circuits_tensor *t, const char *name, float *data, int ndim, int64_t r, int64_t c)
{
    memset(t, 0, sizeof *t);
    t->name = name;
    t->layer = -1;
    t->head = -1;
    t->head_axis = -1;
    t->ndim = ndim;
    t->shape[0] = r;
    t->strides[0] = ndim == 2 ? c : 1;
    if (ndim == 2) {
        t->shape[1] = c;
        t->strides[1] = 1;
    }
    t->data = data;
}

int circuits_probe_weights(const circuits_probe *p, circuits_tensor *W, circuits_tensor *b)
{
    if (!p || (!W && !b)) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_probe_weights: NULL argument");
    if (W) view(W, "W", p->W, 2, p->n_coef, p->d);
    if (b) view(b, "b", p->b, 1, p->n_coef, 0);
    return CIRCUITS_OK;
}

/* The scores z [n_coef] of one row, in double. */
static void row_scores(const circuits_probe *p, const float *x, double *z)
{
    for (int64_t k = 0; k < p->n_coef; k++) {
        const float *w = p->W + (size_t)k * (size_t)p->d;
        double s = p->b[k];
        for (int64_t j = 0; j < p->d; j++) s += (double)w[j] * x[j];
        z[k] = s;
    }
}

/* Row outputs (double) from scores: LINEAR z itself; binary [1 - s, s]; multinomial softmax. Also
 * log p of every class (LOGISTIC) into lp when not NULL. */
static void row_outputs(const circuits_probe *p, const double *z, double *o, double *lp)
{
    int64_t K = p->n_outputs;
    if (p->kind == CIRCUITS_PROBE_LINEAR) {
        for (int64_t k = 0; k < K; k++) o[k] = z[k];
        return;
    }
    if (p->n_coef == 1) {
        double t = z[0];
        /* log sigma(t) = -log(1 + e^-t), computed without overflow */
        double l1 = t >= 0 ? -log1p(exp(-t)) : t - log1p(exp(t));
        double l0 = l1 - t;
        o[0] = exp(l0);
        o[1] = exp(l1);
        if (lp) lp[0] = l0, lp[1] = l1;
        return;
    }
    double m = z[0];
    for (int64_t k = 1; k < K; k++)
        if (z[k] > m) m = z[k];
    double s = 0;
    for (int64_t k = 0; k < K; k++) s += exp(z[k] - m);
    double lse = m + log(s);
    for (int64_t k = 0; k < K; k++) {
        o[k] = exp(z[k] - lse);
        if (lp) lp[k] = z[k] - lse;
    }
}

void cx_probe_apply(const circuits_probe *p, const float *X, int64_t n, float *out, double *scratch)
{
    double *z = scratch, *o = scratch + p->n_outputs + 1;
    for (int64_t i = 0; i < n; i++) {
        float *y = out + (size_t)i * (size_t)p->n_outputs;
        row_scores(p, X + (size_t)i * (size_t)p->d, z);
        row_outputs(p, z, o, NULL);
        for (int64_t k = 0; k < p->n_outputs; k++) y[k] = (float)o[k];
    }
}

int circuits_probe_predict(const circuits_probe *p, const float *X, int64_t n, float *out)
{
    static const char *fn = "circuits_probe_predict";
    if (!p || !X || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fn);
    int rc = rows_check(X, n, p->d, fn);
    if (rc) return rc;
    double *scratch = cx_malloc(2 * ((size_t)p->n_outputs + 1) * sizeof(double));
    if (!scratch) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    cx_probe_apply(p, X, n, out, scratch);
    cx_free(scratch);
    return CIRCUITS_OK;
}

int circuits_probe_evaluate(const circuits_probe *p, const float *X, int64_t n, const float *y,
                            circuits_probe_score *score)
{
    static const char *fn = "circuits_probe_evaluate";
    if (!p || !X || !y || !score) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fn);
    uint32_t size = score->size;
    int rc = cx_struct_size_check(size, score_versions, CX_COUNT(score_versions), fn, true);
    if (rc || (rc = rows_check(X, n, p->d, fn))) return rc;
    int64_t K = p->n_outputs, kk;
    if (p->kind == CIRCUITS_PROBE_LOGISTIC) {
        if ((rc = label_check(y, n, K, fn, &kk))) return rc;
    } else if ((rc = finite_check(y, n, K, fn, "y"))) {
        return rc;
    }
    double *buf = cx_malloc((6 * (size_t)K + 2) * sizeof(double));
    if (!buf) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    double *z = buf, *o = z + K + 1, *lp = o + K + 1, *ymean = lp + K, *ss_tot = ymean + K, *ss_res = ss_tot + K;
    circuits_probe_score s = {.size = sizeof s};
    if (p->kind == CIRCUITS_PROBE_LOGISTIC) {
        double correct = 0, ll = 0;
        for (int64_t i = 0; i < n; i++) {
            row_scores(p, X + (size_t)i * (size_t)p->d, z);
            row_outputs(p, z, o, lp);
            int64_t best = 0;
            for (int64_t k = 1; k < K; k++)
                if (o[k] > o[best]) best = k;
            int64_t c = (int64_t)y[i];
            correct += best == c;
            /* scikit-learn's log_loss clips float64 probabilities to [eps, 1 - eps] */
            ll -= fmin(fmax(lp[c], LOG_EPS), LOG_1M_EPS);
        }
        s.accuracy = correct / (double)n;
        s.log_loss = ll / (double)n;
    } else {
        for (int64_t k = 0; k < K; k++) ymean[k] = ss_tot[k] = ss_res[k] = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < K; k++) ymean[k] += y[(size_t)i * (size_t)K + (size_t)k];
        for (int64_t k = 0; k < K; k++) ymean[k] /= (double)n;
        double sq = 0;
        for (int64_t i = 0; i < n; i++) {
            row_scores(p, X + (size_t)i * (size_t)p->d, z);
            for (int64_t k = 0; k < K; k++) {
                double t = y[(size_t)i * (size_t)K + (size_t)k], e = t - z[k], c = t - ymean[k];
                ss_res[k] += e * e;
                ss_tot[k] += c * c;
                sq += e * e;
            }
        }
        /* scikit-learn's r2_score (force_finite): a constant target scores 1 if predicted exactly, else 0 */
        double r2 = 0;
        for (int64_t k = 0; k < K; k++)
            r2 += ss_tot[k] != 0 ? 1 - ss_res[k] / ss_tot[k] : (ss_res[k] == 0 ? 1.0 : 0.0);
        s.r2 = r2 / (double)K;
        s.mse = sq / ((double)n * (double)K);
    }
    cx_free(buf);
    if (size > sizeof s) size = sizeof s;
    memcpy((char *)score + sizeof(uint32_t), (const char *)&s + sizeof(uint32_t), size - sizeof(uint32_t));
    score->size = size;
    return CIRCUITS_OK;
}
