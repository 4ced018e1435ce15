/* The backward kernels (lib/run/grad_kernels.h) and the metric gradients (cx_metric_grad) against
 * central finite differences of double-precision forwards written here, on random inputs
 * (tests/rng.h), several shapes each: width 1, masked rows, and sizes that split over the pool;
 * and the loss rows' double exp (cx_lse_row, exp_poly_d) against libm.
 *
 * Tolerance. Each analytic gradient is computed by the fp32 kernel from fp32 inputs; the finite
 * difference (f(x + h) - f(x - h)) / 2h, h = 1e-5, of the double forward at the same (fp32-exact)
 * point has truncation error ~h^2 f''' ~ 1e-10 and rounding ~1e-16 |f| / h ~ 1e-10, so what is
 * left is the kernel's own fp32 rounding: a few ulp (1e-7 relative) per operation, over O(1) chained
 * operations, row sums in double; the tanh GELUs add the forward's tanh polynomial (absolute error
 * ~1e-7 times a derivative factor up to ~10). Measured (`test_grad_kernels -v` prints each): at most
 * 1.0e-6 (gelu_new, gelu_fast), 7e-7 (silu), 2e-7 or less for every other kernel and metric. TOL =
 * 2e-5 relative to the gradient's scale (the largest |fd| of the array checked, or |dy|
 * elementwise) is 20 times the worst of those and still far below any real mistake (a wrong or
 * missing term changes the gradient at the 1e-2 .. 1 level). */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>

#include "rng.h"
#include "../lib/run/grad_kernels.h"
#include "../lib/run/kernels.h"
#include "../lib/run/fastmath.h"
#include "../lib/analysis/metric.h"

#define TOL 2e-5
#define H 1e-5

static rng g_rng = {0x5EED0016ull};
static bool verbose;

static float gauss(double sd) { return (float)(rng_gauss(&g_rng) * sd); }

static void fill(float *f, double *d, int64_t n, double sd)
{
    for (int64_t i = 0; i < n; i++) {
        f[i] = gauss(sd);
        if (d) d[i] = f[i];
    }
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* The largest error seen per kernel, relative to its scale (reported with -v). */
static void report(const char *what, double err, double scale)
{
    double rel = err / (scale > 0.0 ? scale : 1.0);
    CHECK(err <= TOL * scale + 1e-12, "%s: max |analytic - fd| %.3g vs scale %.3g (relative %.3g)", what, err, scale,
          rel);
    if (verbose) printf("  %-48s relative error %.2e (scale %.3g)\n", what, rel, scale);
}

/* ---- the finite-difference harness ---- */

/* A scalar of the current inputs (the test's double copies, perturbed in place). */
typedef double (*scalar_fn)(void *ctx);

/* Checks analytic[i] against d f / d var[i] for every i (or `sample` random ones when sample > 0
 * and n is larger); the scale is the largest |fd|, or `floor` if larger (the size of terms that
 * cancel in the gradient: fp32 rounding is relative to them, not to their difference). */
static void fd_check_floor(const char *what, scalar_fn f, void *ctx, double *var, int64_t n, const float *analytic,
                           int64_t sample, double floor)
{
    double err = 0.0, scale = floor;
    int64_t count = sample > 0 && sample < n ? sample : n;
    for (int64_t s = 0; s < count; s++) {
        int64_t i = count == n ? s : (int64_t)(rng_u64(&g_rng) % (uint64_t)n);
        double keep = var[i];
        var[i] = keep + H;
        double up = f(ctx);
        var[i] = keep - H;
        double down = f(ctx);
        var[i] = keep;
        double fd = (up - down) / (2.0 * H);
        CHECK(isfinite(analytic[i]), "%s: analytic[%lld] = %g", what, (long long)i, analytic[i]);
        double e = fabs(analytic[i] - fd);
        err = e > err ? e : err;
        scale = fabs(fd) > scale ? fabs(fd) : scale;
    }
    report(what, err, scale);
}

static void fd_check(const char *what, scalar_fn f, void *ctx, double *var, int64_t n, const float *analytic,
                     int64_t sample)
{
    fd_check_floor(what, f, ctx, var, n, analytic, sample, 0.0);
}

static double dot(const double *r, const double *y, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += r[i] * y[i];
    return s;
}

/* ---- affine ---- */

typedef struct affine_ctx {
    int64_t N, D;
    double *x, *w, *b, *r, *y;
} affine_ctx;

static double affine_loss(void *p)
{
    affine_ctx *c = p;
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t j = 0; j < c->D; j++) {
            double v = c->x[n * c->D + j];
            if (c->w) v *= c->w[j];
            if (c->b) v += c->b[j];
            c->y[n * c->D + j] = v;
        }
    return dot(c->r, c->y, c->N * c->D);
}

static void test_affine(int64_t N, int64_t D, bool with_w, bool with_b)
{
    int64_t n = N * D;
    float *x = xcalloc(n, 4), *w = xcalloc(D, 4), *b = xcalloc(D, 4), *dout = xcalloc(n, 4), *dx = xcalloc(n, 4);
    float *dw = xcalloc(D, 4), *db = xcalloc(D, 4), *alias = xcalloc(n, 4);
    double *xd = xcalloc(n, 8), *wd = xcalloc(D, 8), *bd = xcalloc(D, 8), *rd = xcalloc(n, 8), *y = xcalloc(n, 8);
    fill(x, xd, n, 1.0), fill(w, wd, D, 1.0), fill(b, bd, D, 1.0), fill(dout, rd, n, 1.0);
    for (int64_t j = 0; j < D; j++) dw[j] = db[j] = 0.25f; /* accumulated into */
    cx_affine_backward(dx, with_w ? dw : NULL, with_b ? db : NULL, dout, x, with_w ? w : NULL, N, D);
    for (int64_t j = 0; j < D; j++) dw[j] -= 0.25f, db[j] -= 0.25f;
    affine_ctx c = {N, D, xd, with_w ? wd : NULL, with_b ? bd : NULL, rd, y};
    char what[96];
    snprintf(what, sizeof what, "affine dx [%lld, %lld] w%d b%d", (long long)N, (long long)D, with_w, with_b);
    fd_check(what, affine_loss, &c, xd, n, dx, 300);
    if (with_w) {
        snprintf(what, sizeof what, "affine dw [%lld, %lld] b%d", (long long)N, (long long)D, with_b);
        fd_check(what, affine_loss, &c, wd, D, dw, 0);
    } else {
        for (int64_t j = 0; j < D; j++) CHECK(dw[j] == 0.0f, "affine dw NULL touched dw[%lld]", (long long)j);
    }
    if (with_b) {
        snprintf(what, sizeof what, "affine db [%lld, %lld] w%d", (long long)N, (long long)D, with_w);
        fd_check(what, affine_loss, &c, bd, D, db, 0);
    }
    /* dx may be dout: the same values in place */
    memcpy(alias, dout, (size_t)n * 4);
    for (int64_t j = 0; j < D; j++) dw[j] = db[j] = 0.25f;
    float *dw2 = xcalloc(D, 4), *db2 = xcalloc(D, 4);
    for (int64_t j = 0; j < D; j++) dw2[j] = db2[j] = 0.25f;
    cx_affine_backward(dx, dw, db, dout, x, with_w ? w : NULL, N, D);
    cx_affine_backward(alias, dw2, db2, alias, x, with_w ? w : NULL, N, D);
    CHECK(memcmp(alias, dx, (size_t)n * 4) == 0 && memcmp(dw, dw2, (size_t)D * 4) == 0 &&
              memcmp(db, db2, (size_t)D * 4) == 0,
          "affine in place differs [%lld, %lld]", (long long)N, (long long)D);
    free(dw2), free(db2);
    free(x), free(w), free(b), free(dout), free(dx), free(dw), free(db), free(alias);
    free(xd), free(wd), free(bd), free(rd), free(y);
}

/* ---- LayerNorm / RMSNorm in pieces ----
 * The forward with both hook edits of the split path: scale_u = k * scale_f (a hook scaling
 * hook_scale, its gradient passed through: dscale_f = k dscale_u), or scale_u a constant (REPLACE:
 * dscale_f NULL); n_u = n_f + delta (a steering edit of hook_normalized); out = n_u * w + b. */
typedef struct ln_ctx {
    int64_t N, D;
    bool rms, detach;
    double eps, k;
    double *x, *w, *b, *r, *delta, *scale0, *y;
} ln_ctx;

static double ln_loss(void *p)
{
    ln_ctx *c = p;
    int64_t D = c->D;
    for (int64_t n = 0; n < c->N; n++) {
        const double *x = c->x + n * D;
        double mean = 0.0, sq = 0.0;
        if (!c->rms) {
            for (int64_t j = 0; j < D; j++) mean += x[j];
            mean /= (double)D;
        }
        for (int64_t j = 0; j < D; j++) sq += (x[j] - mean) * (x[j] - mean);
        double scale_f = sqrt(sq / (double)D + c->eps);
        double scale_u = c->detach ? c->scale0[n] : c->k * scale_f;
        for (int64_t j = 0; j < D; j++) {
            double v = (x[j] - mean) / scale_u + c->delta[n * D + j];
            if (c->w) v *= c->w[j];
            if (c->b) v += c->b[j];
            c->y[n * D + j] = v;
        }
    }
    return dot(c->r, c->y, c->N * D);
}

static void test_ln(int64_t N, int64_t D, bool rms, bool with_w, bool with_b, double k, bool detach, bool in_place)
{
    int64_t n = N * D;
    const float eps = 1e-5f;
    float *x = xcalloc(n, 4), *w = xcalloc(D, 4), *b = xcalloc(D, 4), *dout = xcalloc(n, 4), *delta = xcalloc(n, 4);
    float *cent = xcalloc(n, 4), *scale_f = xcalloc(N, 4), *scale_u = xcalloc(N, 4), *n_u = xcalloc(n, 4);
    float *dn = xcalloc(n, 4), *dcent = xcalloc(n, 4), *dx = xcalloc(n, 4), *dscale_u = xcalloc(N, 4);
    float *dscale_f = xcalloc(N, 4), *dw = xcalloc(D, 4), *db = xcalloc(D, 4);
    double *xd = xcalloc(n, 8), *wd = xcalloc(D, 8), *bd = xcalloc(D, 8), *rd = xcalloc(n, 8), *dd = xcalloc(n, 8);
    double *s0 = xcalloc(N, 8), *y = xcalloc(n, 8);
    fill(x, xd, n, 2.0), fill(w, wd, D, 1.0), fill(b, bd, D, 1.0), fill(dout, rd, n, 1.0);
    fill(delta, dd, n, k == 1.0 ? 0.0 : 0.5);
    for (int64_t i = 0; i < n; i++) x[i] += 0.5f, xd[i] = x[i]; /* a mean for LayerNorm to remove */

    /* the forward, fp32, as forward.c runs it in pieces */
    if (rms) cx_rms_scale(cent, scale_f, x, N, D, eps);
    else cx_ln_center_scale(cent, scale_f, x, N, D, eps);
    for (int64_t i = 0; i < N; i++) {
        scale_u[i] = (float)(k * scale_f[i]);
        s0[i] = scale_u[i];
    }
    float *n_f = cent; /* divided in place: centered / scale_u */
    cx_ln_divide(n_f, scale_u, N, D);
    for (int64_t i = 0; i < n; i++) n_u[i] = n_f[i] + delta[i];

    /* the backward, in backward.c's order */
    float *g_n = in_place ? dout : dn;
    cx_affine_backward(g_n, with_w ? dw : NULL, with_b ? db : NULL, dout, n_u, with_w ? w : NULL, N, D);
    float *g_c = in_place ? g_n : dcent;
    cx_ln_normalized_backward(g_c, dscale_u, g_n, n_f, scale_u, N, D);
    for (int64_t i = 0; i < N; i++) dscale_f[i] = (float)(k * dscale_u[i]);
    float *g_x = in_place ? g_c : dx;
    cx_ln_scale_backward(g_x, g_c, detach ? NULL : dscale_f, n_f, scale_u, scale_f, N, D, rms);

    ln_ctx c = {N, D, rms, detach, eps, k, xd, with_w ? wd : NULL, with_b ? bd : NULL, rd, dd, s0, y};
    char what[120];
    snprintf(what, sizeof what, "%s dx [%lld, %lld] w%d b%d k=%g%s%s", rms ? "rms" : "ln", (long long)N, (long long)D,
             with_w, with_b, k, detach ? " scale const" : "", in_place ? " in place" : "");
    /* dx is a difference of terms of size |dn| / scale (dcent and the scale's share): at width 1
     * RMSNorm's x / sqrt(x^2 + eps) is flat (d/dx = eps / (x^2 + eps)^1.5) and the two cancel,
     * so the error is measured against the terms */
    double floor = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double t = fabs(rd[i] * (with_w ? wd[i % D] : 1.0)) / scale_u[i / D];
        floor = t > floor ? t : floor;
    }
    fd_check_floor(what, ln_loss, &c, xd, n, g_x, 200, floor);
    if (with_w) {
        snprintf(what, sizeof what, "%s dw [%lld, %lld] k=%g", rms ? "rms" : "ln", (long long)N, (long long)D, k);
        fd_check(what, ln_loss, &c, wd, D, dw, 100);
    }
    if (with_b) {
        snprintf(what, sizeof what, "%s db [%lld, %lld] k=%g", rms ? "rms" : "ln", (long long)N, (long long)D, k);
        fd_check(what, ln_loss, &c, bd, D, db, 100);
    }
    free(x), free(w), free(b), free(dout), free(delta), free(cent), free(scale_f), free(scale_u), free(n_u);
    free(dn), free(dcent), free(dx), free(dscale_u), free(dscale_f), free(dw), free(db);
    free(xd), free(wd), free(bd), free(rd), free(dd), free(s0), free(y);
}

/* ---- activations (elementwise: each derivative by its own central difference) ---- */

static double act_ref(double x, int act)
{
    switch (act) {
    case CIRCUITS_ACT_RELU: return x > 0.0 ? x : 0.0;
    case CIRCUITS_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case CIRCUITS_ACT_GELU_NEW: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case CIRCUITS_ACT_GELU_FAST: return 0.5 * x * (1.0 + tanh(0.7978845608 * x * (1.0 + 0.044715 * x * x)));
    case CIRCUITS_ACT_SILU: return x / (1.0 + exp(-x));
    default: return x;
    }
}

static void test_activation(int act, const char *name, int64_t n)
{
    float *x = xcalloc(n, 4), *dy = xcalloc(n, 4), *dx = xcalloc(n, 4);
    fill(x, NULL, n, 3.0), fill(dy, NULL, n, 1.0);
    const float special[] = {0.5f, -0.75f, 20.0f, -20.0f, 100.0f, -100.0f, 1e-2f, -1e-2f};
    for (int64_t i = 0; i < 8 && i < n; i++) x[i] = special[i];
    for (int64_t i = 0; i < n; i++)
        if (fabsf(x[i]) < 1e-3f) x[i] = 1e-3f; /* off relu's kink, where no difference quotient exists */
    cx_activation_backward(dx, dy, x, (size_t)n, act);
    double err = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double fd = (double)dy[i] * (act_ref(x[i] + H, act) - act_ref(x[i] - H, act)) / (2.0 * H);
        CHECK(isfinite(dx[i]), "%s dx[%lld] = %g at x = %g", name, (long long)i, dx[i], x[i]);
        double e = fabs(dx[i] - fd) / (fabs(dy[i]) > 1e-3 ? fabs(dy[i]) : 1e-3); /* |act'| <= 1.13 */
        err = e > err ? e : err;
        scale = 1.0;
    }
    char what[80];
    snprintf(what, sizeof what, "activation %s backward, n = %lld", name, (long long)n);
    report(what, err, scale);
    /* dx may be dy */
    float *alias = xcalloc(n, 4);
    memcpy(alias, dy, (size_t)n * 4);
    cx_activation_backward(alias, alias, x, (size_t)n, act);
    CHECK(memcmp(alias, dx, (size_t)n * 4) == 0, "%s in place differs", name);
    free(alias), free(x), free(dy), free(dx);
}

/* ---- SoLU ---- */

typedef struct row_ctx {
    int64_t N, D;
    double *x, *r, *y;
    double cap; /* softcap */
} row_ctx;

static double solu_loss(void *p)
{
    row_ctx *c = p;
    for (int64_t n = 0; n < c->N; n++) {
        const double *x = c->x + n * c->D;
        double mx = -INFINITY, s = 0.0;
        for (int64_t j = 0; j < c->D; j++) mx = x[j] > mx ? x[j] : mx;
        for (int64_t j = 0; j < c->D; j++) s += exp(x[j] - mx);
        for (int64_t j = 0; j < c->D; j++) c->y[n * c->D + j] = x[j] * exp(x[j] - mx) / s;
    }
    return dot(c->r, c->y, c->N * c->D);
}

static void test_solu(int64_t N, int64_t D)
{
    int64_t n = N * D;
    float *x = xcalloc(n, 4), *dy = xcalloc(n, 4), *dx = xcalloc(n, 4);
    double *xd = xcalloc(n, 8), *rd = xcalloc(n, 8), *y = xcalloc(n, 8);
    fill(x, xd, n, 2.0), fill(dy, rd, n, 1.0);
    cx_solu_backward(dx, dy, x, N, D);
    row_ctx c = {N, D, xd, rd, y, 0.0};
    char what[80];
    snprintf(what, sizeof what, "solu backward [%lld, %lld]", (long long)N, (long long)D);
    fd_check(what, solu_loss, &c, xd, n, dx, 300);
    cx_solu_backward(dy, dy, x, N, D);
    CHECK(memcmp(dy, dx, (size_t)n * 4) == 0, "solu in place differs");
    free(x), free(dy), free(dx), free(xd), free(rd), free(y);
}

/* ---- softmax, with masked keys (-inf) and fully masked rows ---- */

static double softmax_loss(void *p)
{
    row_ctx *c = p;
    double L = 0.0;
    for (int64_t n = 0; n < c->N; n++) {
        const double *s = c->x + n * c->D;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < c->D; j++) mx = s[j] > mx ? s[j] : mx;
        if (mx == -INFINITY) continue; /* a fully masked row: zeros */
        for (int64_t j = 0; j < c->D; j++) sum += exp(s[j] - mx);
        for (int64_t j = 0; j < c->D; j++)
            if (s[j] != -INFINITY) L += c->r[n * c->D + j] * exp(s[j] - mx) / sum;
    }
    return L;
}

/* causal: [N / T blocks of T, T] with entries above the diagonal masked; row 1 also fully masked */
static void test_softmax(int64_t N, int64_t D, bool causal)
{
    int64_t n = N * D;
    float *s = xcalloc(n, 4), *p = xcalloc(n, 4), *dp = xcalloc(n, 4), *ds = xcalloc(n, 4);
    double *sd = xcalloc(n, 8), *rd = xcalloc(n, 8);
    fill(s, sd, n, 2.0), fill(dp, rd, n, 1.0);
    for (int64_t r = 0; r < N; r++)
        for (int64_t j = 0; j < D; j++) {
            bool masked = (causal && j > r % D) || (N > 1 && r == 1);
            if (masked) {
                s[r * D + j] = -INFINITY, sd[r * D + j] = -INFINITY;
                dp[r * D + j] = (j % 2) ? NAN : INFINITY; /* must not reach anything */
            }
        }
    memcpy(p, s, (size_t)n * 4);
    cx_softmax_rows(p, N, D);
    cx_softmax_backward(ds, dp, p, N, D);
    /* masked entries: exactly 0; the finite ones against the difference quotient */
    float *fin = xcalloc(n, 4);
    int64_t m = 0;
    int64_t *where = xcalloc(n, 8);
    for (int64_t i = 0; i < n; i++) {
        if (sd[i] == -INFINITY) {
            CHECK(ds[i] == 0.0f, "softmax ds at masked [%lld] = %g", (long long)i, ds[i]);
            continue;
        }
        fin[m] = ds[i];
        where[m++] = i;
    }
    if (N > 1)
        for (int64_t j = 0; j < D; j++) CHECK(ds[D + j] == 0.0f, "softmax fully masked row: ds[1, %lld]", (long long)j);
    row_ctx c = {N, D, sd, rd, NULL, 0.0};
    /* the difference quotient over the finite entries only (where[] indexes into sd) */
    double err = 0.0, scale = 0.0;
    int64_t count = m > 400 ? 400 : m;
    for (int64_t q = 0; q < count; q++) {
        int64_t k = m > 400 ? (int64_t)(rng_u64(&g_rng) % (uint64_t)m) : q, i = where[k];
        double keep = sd[i];
        sd[i] = keep + H;
        double up = softmax_loss(&c);
        sd[i] = keep - H;
        double down = softmax_loss(&c);
        sd[i] = keep;
        double fd = (up - down) / (2.0 * H), e = fabs(fin[k] - fd);
        err = e > err ? e : err;
        scale = fabs(fd) > scale ? fabs(fd) : scale;
    }
    char what[80];
    snprintf(what, sizeof what, "softmax backward [%lld, %lld]%s", (long long)N, (long long)D, causal ? " causal" : "");
    report(what, err, scale);
    cx_softmax_backward(dp, dp, p, N, D);
    CHECK(memcmp(dp, ds, (size_t)n * 4) == 0, "softmax in place differs");
    free(s), free(p), free(dp), free(ds), free(sd), free(rd), free(fin), free(where);
}

/* ---- soft-cap ---- */

static void test_softcap(int64_t n, float cap)
{
    float *x = xcalloc(n, 4), *y = xcalloc(n, 4), *dy = xcalloc(n, 4), *dx = xcalloc(n, 4);
    fill(x, NULL, n, 2.0 * cap), fill(dy, NULL, n, 1.0);
    for (int64_t i = 0; i < n; i += 5) x[i] = -INFINITY; /* masked scores */
    for (int64_t i = 0; i < n; i++) y[i] = (float)(cap * tanh((double)x[i] / cap));
    cx_softcap_backward(dx, dy, y, (size_t)n, cap);
    double err = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] == -INFINITY) {
            CHECK(dx[i] == 0.0f, "softcap dx at -inf = %g", dx[i]);
            continue;
        }
        double fd = dy[i] * (cap * tanh((x[i] + H) / cap) - cap * tanh((x[i] - H) / cap)) / (2.0 * H);
        double e = fabs(dx[i] - fd) / (fabs(dy[i]) > 1e-3 ? fabs(dy[i]) : 1e-3); /* |tanh'| <= 1 */
        err = e > err ? e : err;
    }
    char what[80];
    snprintf(what, sizeof what, "softcap backward n = %lld, cap %g", (long long)n, cap);
    report(what, err, 1.0);
    cx_softcap_backward(dy, dy, y, (size_t)n, cap);
    CHECK(memcmp(dy, dx, (size_t)n * 4) == 0, "softcap in place differs");
    free(x), free(y), free(dy), free(dx);
}

/* ---- rotary ---- */

typedef struct rope_ctx {
    int64_t B, T, nh, dh;
    const circuits_config *c;
    const float *cos_t, *sin_t;
    double *x, *r;
} rope_ctx;

static double rope_loss(void *p)
{
    rope_ctx *c = p;
    int half = c->c->rotary_dim / 2;
    double L = 0.0;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < c->T; t++)
            for (int64_t h = 0; h < c->nh; h++) {
                int64_t o = ((b * c->T + t) * c->nh + h) * c->dh;
                const double *x = c->x + o, *r = c->r + o;
                bool rotated[64] = {false};
                for (int i = 0; i < half; i++) {
                    int ia = c->c->rotary_adjacent_pairs ? 2 * i : i;
                    int ib = c->c->rotary_adjacent_pairs ? 2 * i + 1 : i + half;
                    double cs = c->cos_t[t * half + i], sn = c->sin_t[t * half + i];
                    L += r[ia] * (x[ia] * cs - x[ib] * sn) + r[ib] * (x[ib] * cs + x[ia] * sn);
                    rotated[ia] = rotated[ib] = true;
                }
                for (int64_t j = 0; j < c->dh; j++)
                    if (!rotated[j]) L += r[j] * x[j];
            }
    return L;
}

static void test_rope(int64_t B, int64_t T, int64_t nh, int64_t dh, int rd, bool adjacent)
{
    circuits_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.rotary_dim = rd, cfg.rotary_adjacent_pairs = adjacent;
    int64_t n = B * T * nh * dh, half = rd / 2;
    float *cs = xcalloc(T * half, 4), *sn = xcalloc(T * half, 4), *x = xcalloc(n, 4), *dx = xcalloc(n, 4);
    double *xd = xcalloc(n, 8), *rd_ = xcalloc(n, 8);
    for (int64_t i = 0; i < T * half; i++) {
        double a = rng_unif(&g_rng) * 2.0 * M_PI;
        cs[i] = (float)cos(a), sn[i] = (float)sin(a);
    }
    fill(x, xd, n, 1.0), fill(dx, rd_, n, 1.0);
    cx_rope_rotate_backward(dx, B, T, nh, dh, &cfg, cs, sn);
    rope_ctx c = {B, T, nh, dh, &cfg, cs, sn, xd, rd_};
    char what[96];
    snprintf(what, sizeof what, "rope backward [%lld, %lld, %lld, %lld] rd %d %s", (long long)B, (long long)T,
             (long long)nh, (long long)dh, rd, adjacent ? "adjacent" : "halves");
    fd_check(what, rope_loss, &c, xd, n, dx, 0);
    /* the inverse: rotate, then rotate back */
    float *y = xcalloc(n, 4);
    memcpy(y, x, (size_t)n * 4);
    cx_rope_rotate(y, B, T, nh, dh, &cfg, cs, sn);
    cx_rope_rotate_backward(y, B, T, nh, dh, &cfg, cs, sn);
    double e = 0.0;
    for (int64_t i = 0; i < n; i++) e = fabs(y[i] - x[i]) > e ? fabs(y[i] - x[i]) : e;
    CHECK(e < 1e-5, "rope backward is not the inverse rotation: %g", e);
    free(cs), free(sn), free(x), free(dx), free(xd), free(rd_), free(y);
}

/* ---- the loss rows' exp: cx_lse_row (exp_poly_d) against libm in double ---- */

static void test_lse_row(void)
{
    enum { V = 5003 };
    float *x = xcalloc(V, 4), *e = xcalloc(V, 4), mx;
    double worst = 0.0, worst_e = 0.0;
    for (int trial = 0; trial < 6; trial++) {
        double sd = trial == 0 ? 1.0 : trial == 1 ? 30.0 : trial == 2 ? 300.0 : 5.0;
        fill(x, NULL, V, sd);
        if (trial == 3)
            for (int j = 0; j < V; j += 3) x[j] = -INFINITY; /* masked entries */
        if (trial == 4) x[17] = 1e4f;                        /* one logit far above the rest: e^(< -708) = 0 */
        if (trial == 5)
            for (int j = 0; j < V; j++) x[j] = (float)(-700.0 + 1.4 * (double)(j % 10)); /* near underflow */
        double sum = cx_lse_row(x, V, &mx, e), m = -INFINITY, want = 0.0;
        for (int j = 0; j < V; j++) m = x[j] > m ? x[j] : m;
        for (int j = 0; j < V; j++) want += exp((double)x[j] - m);
        CHECK(mx == (float)m, "lse max %g vs %g", mx, m);
        double rel = fabs(sum - want) / want;
        worst = rel > worst ? rel : worst;
        for (int j = 0; j < V; j++) {
            double ej = exp((double)x[j] - m), d = fabs(e[j] - ej);
            CHECK(d <= 1e-7 * ej + 1e-38, "lse e[%d] = %g vs %g", j, e[j], ej);
            worst_e = d / (ej > 1e-30 ? ej : 1.0) > worst_e ? d / (ej > 1e-30 ? ej : 1.0) : worst_e;
        }
    }
    /* the sums differ in order only (8 lanes vs one running sum): at most V double ulp of a sum of
     * positive terms, far below the half float ulp that would move a loss */
    CHECK(worst <= V * 0x1p-53, "cx_lse_row sum off by %g relative", worst);
    /* exp_poly_d itself: a few double ulp of libm's exp over (-708, 0], 0 from -708 down */
    double worst_x = 0.0;
    for (int i = 0; i < 200000; i++) { /* (-708, 0] */
        double t = -708.0 * i / 200000.0, want = exp(t), got = exp_poly_d(t);
        double rel = fabs(got - want) / want;
        worst_x = rel > worst_x ? rel : worst_x;
    }
    CHECK(worst_x <= 8 * 0x1p-53, "exp_poly_d off by %g relative", worst_x);
    CHECK(exp_poly_d(-709.0) == 0.0 && exp_poly_d(-INFINITY) == 0.0 && exp_poly_d(0.0) == 1.0, "exp_poly_d ends");
    if (verbose) printf("  %-48s relative error %.2e\n", "exp_poly_d vs libm exp on (-708, 0]", worst_x);
    if (verbose) printf("  %-48s relative error %.2e (e as floats %.2e)\n", "cx_lse_row vs libm exp", worst, worst_e);
    free(x), free(e);
}

/* ---- metrics ---- */

typedef struct metric_ctx {
    const circuits_metric *m;
    int64_t B, T, V;
    double *x;
} metric_ctx;

static double lsm(const double *row, int64_t V, int k) /* log_softmax(row)[k] */
{
    double mx = -INFINITY, s = 0.0;
    for (int64_t j = 0; j < V; j++) mx = row[j] > mx ? row[j] : mx;
    for (int64_t j = 0; j < V; j++) s += exp(row[j] - mx);
    return row[k] - mx - log(s);
}

static double metric_ref(void *p)
{
    metric_ctx *c = p;
    const circuits_metric *m = c->m;
    int64_t B = c->B, T = c->T, V = c->V;
    if (m->kind == CIRCUITS_METRIC_LOSS) {
        double total = 0.0;
        int n = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i + 1 < T; i++) {
                const int32_t *mk = m->attention_mask;
                if (mk && !(mk[b * T + i] && mk[b * T + i + 1])) continue;
                total -= lsm(c->x + (b * T + i) * V, V, m->tokens[b * T + i + 1]);
                n++;
            }
        return total / n;
    }
    double total = 0.0;
    for (int64_t b = 0; b < B; b++) {
        int64_t q = m->positions ? m->positions[b] : m->kind == CIRCUITS_METRIC_TOKEN_LOSS ? -2 : -1;
        if (q < 0) q += T;
        const double *row = c->x + (b * T + q) * V;
        switch (m->kind) {
        case CIRCUITS_METRIC_LOGIT_DIFF: total += row[m->answer[b]] - row[m->wrong[b]]; break;
        case CIRCUITS_METRIC_LOGIT: total += row[m->answer[b]]; break;
        case CIRCUITS_METRIC_PROB: total += exp(lsm(row, V, m->answer[b])); break;
        case CIRCUITS_METRIC_LOG_PROB: total += lsm(row, V, m->answer[b]); break;
        case CIRCUITS_METRIC_TOKEN_LOSS: total -= lsm(row, V, m->tokens[b * T + q + 1]); break;
        default: break;
        }
    }
    return total / B;
}

/* GRAD_CALLBACK: value = sum_i c_i x_i^2 / 2 over every logit, its gradient c_i x_i */
static int quad_grad(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    const double *cf = u;
    double s = 0.0;
    for (int64_t i = 0; i < b * t * v; i++) {
        s += cf[i] * lg[i] * lg[i] / 2.0;
        grad[i] = (float)(cf[i] * lg[i]);
    }
    *value = (float)s;
    return 0;
}
static double quad_ref(void *p)
{
    metric_ctx *c = p;
    const double *cf = c->m->user_data;
    double s = 0.0;
    for (int64_t i = 0; i < c->B * c->T * c->V; i++) s += cf[i] * c->x[i] * c->x[i] / 2.0;
    return s;
}
/* writes one entry, leaving the rest as cx_metric_grad zeroed it */
static int one_grad(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    (void)u;
    *value = lg[0];
    grad[0] += 1.0f;
    for (int64_t i = 1; i < b * t * v; i++)
        if (grad[i] != 0.0f) return -99; /* not zeroed */
    return 0;
}
static int fail_grad(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    (void)lg, (void)b, (void)t, (void)v, (void)value, (void)grad, (void)u;
    return -3;
}
static int nan_value_grad(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    (void)lg, (void)b, (void)t, (void)v, (void)grad, (void)u;
    *value = NAN;
    return 0;
}
static int inf_grad(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    (void)lg, (void)u;
    *value = 1.0f;
    grad[(1 * t + 2) * v + 3] = INFINITY; /* [1, 2, 3] */
    (void)b;
    return 0;
}
static int cb_value(const float *lg, int64_t b, int64_t t, int64_t v, float *value, void *u)
{
    (void)lg, (void)b, (void)t, (void)v, (void)u;
    *value = 1.0f;
    return 0;
}

static void metric_case(const char *what, circuits_metric *mm, const float *lg, double *xd, int64_t B, int64_t T,
                        int64_t V)
{
    circuits_metric m;
    CHECK_OK(cx_metric_check(mm, &m, B, T, V, "test"));
    int64_t n = B * T * V;
    float *grad = xcalloc(n, 4), value = NAN, want = NAN;
    for (int64_t i = 0; i < n; i++) grad[i] = 3.0f; /* written whole */
    CHECK_OK(cx_metric_grad(&m, lg, B, T, V, &value, grad, "test"));
    metric_ctx c = {&m, B, T, V, xd};
    double ref = m.kind == CIRCUITS_METRIC_GRAD_CALLBACK ? quad_ref(&c) : metric_ref(&c);
    CHECK(fabs(value - ref) <= 1e-6 * (1.0 + fabs(ref)), "%s: value %.9g vs %.9g", what, value, ref);
    if (m.kind != CIRCUITS_METRIC_GRAD_CALLBACK) {
        CHECK_OK(cx_metric_value(&m, lg, B, T, V, NULL, 0, &want, "test"));
        CHECK(value == want, "%s: the gradient run's value %.9g is not the metric's %.9g", what, value, want);
    }
    fd_check(what, m.kind == CIRCUITS_METRIC_GRAD_CALLBACK ? quad_ref : metric_ref, &c, xd, n, grad, 0);
    free(grad);
}

static void test_metric_grads(void)
{
    enum { B = 3, T = 4, V = 6 };
    int64_t n = B * T * V;
    float lg[B * T * V];
    double xd[B * T * V], cf[B * T * V];
    fill(lg, xd, n, 2.0);
    for (int64_t i = 0; i < n; i++) cf[i] = rng_gauss(&g_rng);
    const int64_t pos[B] = {-1, 1, 1}, tl_pos[B] = {0, -2, 1};
    const int32_t ans[B] = {2, 0, 5}, wrong[B] = {3, 4, 5}; /* row 2: answer = wrong, gradient 0 */
    const int32_t tokens[B * T] = {1, 4, 0, 2, 3, 3, 1, 5, 0, 2, 2, 1};
    const int32_t mask[B * T] = {0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1};
    static const char *const names[] = {"LOGIT_DIFF", "LOGIT", "PROB", "LOG_PROB"};
    circuits_metric m;
    char what[80];
    for (int k = 0; k < 4; k++)
        for (int with_pos = 0; with_pos < 2; with_pos++) {
            circuits_metric_init(&m);
            m.kind = k, m.answer = ans, m.wrong = wrong, m.positions = with_pos ? pos : NULL;
            snprintf(what, sizeof what, "metric %s grad%s", names[k], with_pos ? " (positions)" : "");
            metric_case(what, &m, lg, xd, B, T, V);
        }
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_TOKEN_LOSS, m.tokens = tokens;
    metric_case("metric TOKEN_LOSS grad (default: pos - 2)", &m, lg, xd, B, T, V);
    m.positions = tl_pos;
    metric_case("metric TOKEN_LOSS grad (positions)", &m, lg, xd, B, T, V);
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_LOSS, m.tokens = tokens;
    metric_case("metric LOSS grad", &m, lg, xd, B, T, V);
    m.attention_mask = mask;
    metric_case("metric LOSS grad (attention mask)", &m, lg, xd, B, T, V);
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_GRAD_CALLBACK, m.grad_fn = quad_grad, m.user_data = cf;
    metric_case("metric GRAD_CALLBACK grad", &m, lg, xd, B, T, V);

    /* a larger vocabulary over the pool: LOSS rows run in parallel, the value stays cx_lm_loss's */
    {
        enum { B2 = 2, T2 = 9, V2 = 3000 };
        float *big = xcalloc(B2 * T2 * V2, 4), *grad = xcalloc(B2 * T2 * V2, 4), v = NAN, want = NAN;
        double *bd = xcalloc(B2 * T2 * V2, 8);
        int32_t tok[B2 * T2];
        for (int i = 0; i < B2 * T2; i++) tok[i] = (int32_t)(rng_u64(&g_rng) % V2);
        fill(big, bd, B2 * T2 * V2, 3.0);
        circuits_metric_init(&m);
        m.kind = CIRCUITS_METRIC_LOSS, m.tokens = tok;
        CHECK_OK(cx_metric_grad(&m, big, B2, T2, V2, &v, grad, "test"));
        CHECK_OK(circuits_lm_cross_entropy(big, tok, NULL, B2, T2, V2, NULL, &want));
        CHECK(v == want, "LOSS grad value %.9g vs circuits_lm_cross_entropy %.9g", v, want);
        metric_ctx c = {&m, B2, T2, V2, bd};
        fd_check("metric LOSS grad [2, 9, 3000]", metric_ref, &c, bd, B2 * T2 * V2, grad, 300);
        free(big), free(grad), free(bd);
    }

    /* HOOK_LINEAR: no logits read: grad 0, value untouched */
    const float dir[4] = {1, 2, 3, 4};
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_HOOK_LINEAR, m.hook = "blocks.0.hook_resid_pre", m.direction = dir;
    float grad[B * T * V], v = 42.0f;
    for (int64_t i = 0; i < n; i++) grad[i] = 5.0f;
    circuits_metric c;
    CHECK_OK(cx_metric_check(&m, &c, B, T, V, "test"));
    CHECK_OK(cx_metric_grad(&c, lg, B, T, V, &v, grad, "test"));
    CHECK(v == 42.0f, "HOOK_LINEAR changed the value: %g", v);
    for (int64_t i = 0; i < n; i++) CHECK(grad[i] == 0.0f, "HOOK_LINEAR grad[%lld] = %g", (long long)i, grad[i]);
    CHECK_FAILS(cx_metric_value(&c, lg, B, T, V, NULL, 0, &v, "test"), CIRCUITS_E_INVALID_ARGUMENT,
                "test: the HOOK_LINEAR metric reads a hook point's activation, not the logits");

    /* GRAD_CALLBACK: the buffer zeroed before grad_fn; its failures */
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_GRAD_CALLBACK, m.grad_fn = one_grad;
    for (int64_t i = 0; i < n; i++) grad[i] = 5.0f;
    CHECK_OK(cx_metric_check(&m, &c, B, T, V, "test"));
    CHECK_OK(cx_metric_grad(&c, lg, B, T, V, &v, grad, "test"));
    CHECK(v == lg[0] && grad[0] == 1.0f, "GRAD_CALLBACK value %g grad[0] %g", v, grad[0]);
    c.grad_fn = fail_grad;
    CHECK_FAILS(cx_metric_grad(&c, lg, B, T, V, &v, grad, "test"), CIRCUITS_E_CALLBACK,
                "test: the metric's grad_fn returned -3");
    c.grad_fn = nan_value_grad;
    CHECK_FAILS(cx_metric_grad(&c, lg, B, T, V, &v, grad, "test"), CIRCUITS_E_CALLBACK,
                "test: the metric's grad_fn gave the value nan (not finite)");
    c.grad_fn = inf_grad;
    CHECK_FAILS(cx_metric_grad(&c, lg, B, T, V, &v, grad, "test"), CIRCUITS_E_CALLBACK,
                "test: the metric's grad_fn gave grad[1, 2, 3] = inf (not finite)");

    /* CALLBACK has no gradient */
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_CALLBACK, m.fn = cb_value;
    CHECK_OK(cx_metric_check(&m, &c, B, T, V, "test"));
    CHECK_FAILS(cx_metric_grad(&c, lg, B, T, V, &v, grad, "test"), CIRCUITS_E_INVALID_ARGUMENT,
                "test: the CALLBACK metric has no gradient: use CIRCUITS_METRIC_GRAD_CALLBACK");
}

int main(int argc, char **argv)
{
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    circuits_set_num_threads(3); /* the larger shapes split over the pool: per-row results must not care */

    for (int wb = 0; wb < 4; wb++) {
        test_affine(1, 1, wb & 1, wb & 2);
        test_affine(4, 7, wb & 1, wb & 2);
        test_affine(300, 130, wb & 1, wb & 2); /* columns in 3 blocks; rows over the pool */
    }

    /* LayerNorm and RMSNorm: plain (k = 1), the edit split (scale_u = 1.3 scale_f, n_u = n_f + delta),
     * the scale made a constant (dscale_f NULL), in place and not; width 1; w, b NULL and not */
    const int64_t shapes[][2] = {{1, 1}, {3, 1}, {4, 7}, {5, 64}, {400, 48}};
    for (int s = 0; s < 5; s++)
        for (int rms = 0; rms < 2; rms++)
            for (int wb = 0; wb < 4; wb++) {
                int64_t N = shapes[s][0], D = shapes[s][1];
                test_ln(N, D, rms, wb & 1, wb & 2, 1.0, false, wb == 3);
                test_ln(N, D, rms, wb & 1, wb & 2, 1.3, false, wb == 1);
                test_ln(N, D, rms, wb & 1, wb & 2, 0.8, true, wb == 2);
            }

    const struct { int act; const char *name; } acts[] = {
        {CIRCUITS_ACT_RELU, "relu"},
        {CIRCUITS_ACT_GELU, "gelu"},
        {CIRCUITS_ACT_GELU_NEW, "gelu_new (= gelu_pytorch_tanh)"},
        {CIRCUITS_ACT_GELU_FAST, "gelu_fast"},
        {CIRCUITS_ACT_SILU, "silu"},
    };
    for (int a = 0; a < 5; a++) {
        test_activation(acts[a].act, acts[a].name, 1);
        test_activation(acts[a].act, acts[a].name, 1000);
        test_activation(acts[a].act, acts[a].name, 70000); /* over the pool */
    }

    test_solu(1, 1);
    test_solu(3, 5);
    test_solu(4, 33);
    test_solu(600, 64);

    test_softmax(1, 1, false);
    test_softmax(6, 9, false);
    test_softmax(6, 6, true);
    test_softmax(1200, 40, true); /* [B * H * T, T] blocks, over the pool */

    test_softcap(1, 30.0f);
    test_softcap(997, 50.0f);
    test_softcap(70000, 30.0f);

    test_rope(2, 3, 2, 8, 8, false);
    test_rope(2, 3, 2, 8, 8, true);
    test_rope(1, 4, 3, 10, 4, false); /* partial rotary: dims 4 .. 10 pass through */
    test_rope(1, 4, 3, 10, 6, true);

    test_lse_row();
    test_metric_grads();
    return tu_finish("test_grad_kernels");
}
