/* The numerical kernels (lib/run/kernels.h) against plain double-precision computations:
 * cx_matmul (CBLAS paths and the strided fallback) against cx_matmul_ref and an independent
 * loop, softmax with masked and NaN rows, LayerNorm pieces, activations, SoLU, NLL, attention's
 * per-head products (both paths: AVX-512 kernels where the CPU has them, and OpenBLAS). */
#include "testutil.h"

#include <math.h>

#include "../lib/run/kernels.h"
#include "../lib/base/pool.h"

#include <pthread.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void fill(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = frand();
}

#define SENTINEL 12345.5f

/* One matmul configuration: W is a [K, N] view with strides (w_rs, w_cs) into a buffer. */
static void check_matmul(int64_t M, int64_t K, int64_t N, int64_t w_rs, int64_t w_cs, int64_t ldi, int64_t ldo,
                         bool use_bias, bool accumulate, const char *label)
{
    size_t wsize = (size_t)((K - 1) * w_rs + (N - 1) * w_cs + 1);
    float *W = malloc(wsize * sizeof *W), *in = malloc((size_t)(M * ldi) * sizeof *in);
    float *bias = malloc((size_t)N * sizeof *bias);
    float *out = malloc((size_t)(M * ldo) * sizeof *out), *ref = malloc((size_t)(M * ldo) * sizeof *ref);
    float *prev = malloc((size_t)(M * ldo) * sizeof *prev);
    fill(W, wsize);
    fill(in, (size_t)(M * ldi));
    fill(bias, (size_t)N);
    fill(prev, (size_t)(M * ldo));
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = N; j < ldo; j++) prev[i * ldo + j] = SENTINEL; /* padding must stay untouched */
    memcpy(out, prev, (size_t)(M * ldo) * sizeof *out);
    memcpy(ref, prev, (size_t)(M * ldo) * sizeof *ref);

    cx_matmul(out, ldo, in, ldi, M, K, N, W, w_rs, w_cs, use_bias ? bias : NULL, accumulate);
    cx_matmul_ref(ref, ldo, in, ldi, M, K, N, W, w_rs, w_cs, use_bias ? bias : NULL, accumulate);

    double worst = 0.0, worst_ref = 0.0;
    bool pad_ok = true;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            /* independent oracle: accumulate ? prev : (bias or 0), plus the dot product */
            double acc = accumulate ? prev[i * ldo + j] : use_bias ? bias[j] : 0.0, mag = fabs(acc);
            for (int64_t k = 0; k < K; k++) {
                double t = (double)in[i * ldi + k] * W[k * w_rs + j * w_cs];
                acc += t;
                mag += fabs(t);
            }
            double tol = 2e-6 * (mag + 1.0);
            double d = fabs(out[i * ldo + j] - acc) / tol, dr = fabs(ref[i * ldo + j] - acc) / tol;
            if (!(d <= worst)) worst = d;
            if (!(dr <= worst_ref)) worst_ref = dr;
        }
        for (int64_t j = N; j < ldo; j++) pad_ok &= out[i * ldo + j] == SENTINEL && ref[i * ldo + j] == SENTINEL;
    }
    CHECK(worst <= 1.0, "%s M=%lld K=%lld N=%lld rs=%lld cs=%lld ldi=%lld ldo=%lld bias=%d acc=%d: cx_matmul off by %.3g tol",
          label, (long long)M, (long long)K, (long long)N, (long long)w_rs, (long long)w_cs, (long long)ldi, (long long)ldo,
          use_bias, accumulate, worst);
    CHECK(worst_ref <= 1.0, "%s M=%lld K=%lld N=%lld: cx_matmul_ref off by %.3g tol", label, (long long)M, (long long)K,
          (long long)N, worst_ref);
    CHECK(pad_ok, "%s M=%lld K=%lld N=%lld ldo=%lld: columns beyond N were written", label, (long long)M, (long long)K,
          (long long)N, (long long)ldo);
    /* cx_matmul against cx_matmul_ref directly */
    double dd = 0.0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) dd = fmax(dd, fabs((double)out[i * ldo + j] - ref[i * ldo + j]));
    CHECK(dd <= 1e-5 * (double)(K + 1), "%s M=%lld K=%lld N=%lld: cx_matmul vs cx_matmul_ref %.3g", label, (long long)M,
          (long long)K, (long long)N, dd);
    free(W);
    free(in);
    free(bias);
    free(out);
    free(ref);
    free(prev);
}

static void test_matmul(void)
{
    static const int64_t sizes[] = {1, 7, 33};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++) {
                int64_t M = sizes[a], K = sizes[b], N = sizes[c];
                for (int mode = 0; mode < 8; mode++) {
                    bool bias = mode & 1, acc = (mode & 2) != 0, pad = (mode & 4) != 0;
                    int64_t ldi = K + (pad ? 3 : 0), ldo = N + (pad ? 5 : 0);
                    /* NoTrans: W row-major [K, N], optionally with a row stride beyond N */
                    check_matmul(M, K, N, N + (pad ? 2 : 0), 1, ldi, ldo, bias, acc, "notrans");
                    /* Trans: W is a [N, K] matrix transposed (row stride 1) */
                    check_matmul(M, K, N, 1, K + (pad ? 4 : 0), ldi, ldo, bias, acc, "trans");
                    /* neither stride 1: the reference fallback */
                    check_matmul(M, K, N, 2 * N + 1, 2, ldi, ldo, bias, acc, "strided");
                }
            }
    /* the attention shapes: k viewed as [dh, T] inside [T, H*dh] (trans, ld = H*dh) */
    check_matmul(5, 8, 5, 1, 32, 32, 5, false, false, "attn-scores");
    /* a head slice of a fused QKV weight: NoTrans with row stride 3*D */
    check_matmul(6, 32, 8, 96, 1, 32, 32, true, false, "head-slice");
    /* larger, to go through OpenBLAS's blocked kernels */
    check_matmul(70, 130, 65, 65, 1, 130, 65, true, false, "large-notrans");
    check_matmul(70, 130, 65, 1, 130, 131, 66, false, true, "large-trans");

    /* M == 0 or N == 0 writes nothing */
    float out[4] = {SENTINEL, SENTINEL, SENTINEL, SENTINEL}, in[4] = {1, 2, 3, 4}, W[4] = {1, 1, 1, 1};
    cx_matmul(out, 2, in, 2, 0, 2, 2, W, 2, 1, NULL, false);
    cx_matmul(out, 2, in, 2, 2, 2, 0, W, 2, 1, NULL, false);
    CHECK(out[0] == SENTINEL && out[3] == SENTINEL, "an empty product wrote to out");
    /* K == 0: out = bias (or zeros) */
    float bias2[2] = {0.5f, -2.0f};
    cx_matmul(out, 2, in, 2, 2, 0, 2, W, 2, 1, bias2, false);
    CHECK(out[0] == 0.5f && out[1] == -2.0f && out[2] == 0.5f && out[3] == -2.0f, "K == 0 with bias: %g %g %g %g",
          (double)out[0], (double)out[1], (double)out[2], (double)out[3]);
}

/* ---- softmax ---- */

static void test_softmax(void)
{
    enum { D = 9 };
    float x[6][D];
    double want[6][D];
    fill(&x[0][0], 6 * D);
    for (int j = 0; j < D; j++) x[0][j] *= 20.0f;      /* 0: plain */
    for (int j = 5; j < D; j++) x[1][j] = -INFINITY;   /* 1: causal mask */
    for (int j = 0; j < D; j++) x[2][j] = -INFINITY;   /* 2: fully masked */
    x[3][4] = NAN;                                    /* 3: a NaN */
    for (int j = 0; j < D; j++) x[4][j] = 1e30f;       /* 4: huge, equal */
    for (int j = 0; j < D; j++) x[5][j] = j == 2 ? 1000.0f : -1000.0f; /* 5: one dominant */
    for (int i = 0; i < 6; i++) {
        double mx = -INFINITY, s = 0.0;
        for (int j = 0; j < D; j++) mx = fmax(mx, x[i][j]);
        for (int j = 0; j < D; j++) s += exp((double)x[i][j] - mx);
        for (int j = 0; j < D; j++) want[i][j] = exp((double)x[i][j] - mx) / s;
    }
    cx_softmax_rows(&x[0][0], 6, D);
    for (int i = 0; i < 6; i++) {
        if (i == 2 || i == 3) continue;
        double worst = 0.0, sum = 0.0;
        for (int j = 0; j < D; j++) {
            worst = fmax(worst, fabs(x[i][j] - want[i][j]));
            sum += x[i][j];
            if (isnan(x[i][j])) worst = INFINITY;
        }
        CHECK(worst <= 1e-6, "softmax row %d off by %g", i, worst);
        CHECK(fabs(sum - 1.0) <= 1e-5, "softmax row %d sums to %.9g", i, sum);
    }
    for (int j = 5; j < D; j++) CHECK(x[1][j] == 0.0f, "masked entry %d is %g", j, (double)x[1][j]);
    bool zeros = true;
    for (int j = 0; j < D; j++) zeros &= x[2][j] == 0.0f && !signbit(x[2][j]);
    CHECK(zeros, "a fully -inf row is not all zeros");
    /* torch.softmax of a row with a NaN is all NaN; TransformerLens's where(isnan) makes it 0 */
    bool nan_zero = true;
    for (int j = 0; j < D; j++) nan_zero &= x[3][j] == 0.0f;
    CHECK(nan_zero, "a row with a NaN is not all zeros: %g %g %g", (double)x[3][0], (double)x[3][4], (double)x[3][8]);
    CHECK(fabs(x[4][0] - 1.0 / D) < 1e-7, "equal huge row: %g", (double)x[4][0]);
    CHECK(x[5][2] == 1.0f && x[5][0] == 0.0f, "dominant row: %g %g", (double)x[5][2], (double)x[5][0]);

    /* a single-column row and N == 0 */
    float one[2] = {3.0f, -INFINITY};
    cx_softmax_rows(one, 2, 1);
    CHECK(one[0] == 1.0f && one[1] == 0.0f, "one-column rows: %g %g", (double)one[0], (double)one[1]);
    cx_softmax_rows(one, 0, 1);
    CHECK(one[0] == 1.0f, "N == 0 wrote something");
}

/* ---- LayerNorm pieces ---- */

static void test_layernorm(void)
{
    enum { N = 5, D = 33 };
    float x[N * D], xc[N * D], scale[N], w[D], b[D];
    fill(x, N * D);
    for (int j = 0; j < D; j++) {
        x[0 * D + j] = x[0 * D + j] * 3.0f + 100.0f; /* a large offset: precision of the centering */
        x[1 * D + j] = 7.0f;                          /* constant: scale = sqrt(eps) */
        x[2 * D + j] *= 1e-3f;                         /* tiny: eps matters */
    }
    fill(w, D);
    fill(b, D);
    const float eps = 1e-5f;
    cx_ln_center_scale(xc, scale, x, N, D, eps);
    for (int i = 0; i < N; i++) {
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < D; j++) mean += x[i * D + j];
        mean /= D;
        for (int j = 0; j < D; j++) var += (x[i * D + j] - mean) * (x[i * D + j] - mean);
        var /= D;
        double sc = sqrt(var + (double)eps), worst = 0.0;
        for (int j = 0; j < D; j++) worst = fmax(worst, fabs(xc[i * D + j] - (x[i * D + j] - mean)));
        CHECK(worst <= 2e-5 * fmax(1.0, fabs(mean)), "row %d: centering off by %g", i, worst);
        CHECK(fabs(scale[i] - sc) <= 1e-6 * sc, "row %d: scale %.9g, want %.9g", i, (double)scale[i], sc);
    }
    float y[N * D];
    memcpy(y, xc, sizeof y);
    cx_ln_divide(y, scale, N, D);
    double worst = 0.0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) worst = fmax(worst, fabs(y[i * D + j] - (double)xc[i * D + j] / scale[i]));
    CHECK(worst <= 1e-6, "ln_divide off by %g", worst);
    float z[N * D];
    memcpy(z, y, sizeof z);
    cx_affine(z, w, b, N, D);
    worst = 0.0;
    for (int i = 0; i < N * D; i++) worst = fmax(worst, fabs(z[i] - ((double)y[i] * w[i % D] + b[i % D])));
    CHECK(worst <= 1e-6, "affine off by %g", worst);
    memcpy(z, y, sizeof z);
    cx_affine(z, NULL, b, N, D);
    worst = 0.0;
    for (int i = 0; i < N * D; i++) worst = fmax(worst, fabs(z[i] - ((double)y[i] + b[i % D])));
    CHECK(worst <= 1e-6, "affine without w off by %g", worst);
    memcpy(z, y, sizeof z);
    cx_affine(z, w, NULL, N, D);
    worst = 0.0;
    for (int i = 0; i < N * D; i++) worst = fmax(worst, fabs(z[i] - (double)y[i] * w[i % D]));
    CHECK(worst <= 1e-6, "affine without b off by %g", worst);
    memcpy(z, y, sizeof z);
    cx_affine(z, NULL, NULL, N, D);
    CHECK(memcmp(z, y, sizeof z) == 0, "affine without w and b changed x");
}

/* ---- RMSNorm: the fused kernel and its pieces against plain loops in double ---- */

static void test_rmsnorm(void)
{
    enum { N = 6, D = 37 }; /* D not a multiple of the lanes: the tail loop */
    float x[N * D], w[D];
    fill(x, N * D);
    for (int j = 0; j < D; j++) {
        x[0 * D + j] = x[0 * D + j] * 3.0f + 100.0f; /* large offset: not centred, scale ~ 100 */
        x[1 * D + j] = 0.0f;                          /* zero row: scale = sqrt(eps), y = 0 */
        x[2 * D + j] *= 1e-3f;                         /* tiny: eps matters */
    }
    fill(w, D);
    const float eps = 1e-5f;
    double ref[N * D], ref_scale[N];
    for (int i = 0; i < N; i++) {
        double ms = 0.0;
        for (int j = 0; j < D; j++) ms += (double)x[i * D + j] * x[i * D + j];
        ref_scale[i] = sqrt(ms / D + (double)eps);
        for (int j = 0; j < D; j++) ref[i * D + j] = x[i * D + j] / ref_scale[i];
    }
    float y[N * D], scale[N];
    for (int with_w = 0; with_w < 2; with_w++) {
        cx_rms_norm(y, scale, x, N, D, eps, with_w ? w : NULL);
        double worst = 0.0, worst_sc = 0.0;
        for (int i = 0; i < N; i++) {
            worst_sc = fmax(worst_sc, fabs(scale[i] - ref_scale[i]) / ref_scale[i]);
            for (int j = 0; j < D; j++)
                worst = fmax(worst, fabs(y[i * D + j] - ref[i * D + j] * (with_w ? w[j] : 1.0)));
        }
        CHECK(worst_sc <= 1e-6, "rms_norm (w %d): scale off by %g (relative)", with_w, worst_sc);
        CHECK(worst <= 2e-6, "rms_norm (w %d): output off by %g", with_w, worst);
    }
    /* the pieces (the forward's path when a hook reads scale or normalized) give the same bits */
    float p[N * D], pscale[N];
    cx_rms_scale(p, pscale, x, N, D, eps);
    CHECK(memcmp(p, x, sizeof p) == 0, "rms_scale changed the values it copies");
    CHECK(memcmp(pscale, scale, sizeof pscale) == 0, "rms_scale and rms_norm disagree on the scale");
    cx_ln_divide(p, pscale, N, D);
    cx_affine(p, w, NULL, N, D);
    CHECK(memcmp(p, y, sizeof p) == 0, "rms_scale + ln_divide + affine differ from rms_norm");
    /* in place (mlp.ln normalizes its input buffer) */
    memcpy(p, x, sizeof p);
    cx_rms_norm(p, pscale, p, N, D, eps, w);
    CHECK(memcmp(p, y, sizeof p) == 0, "rms_norm in place differs");
    /* NaN propagates to its own row only */
    x[3 * D + 4] = NAN;
    cx_rms_norm(y, scale, x, N, D, eps, NULL);
    CHECK(isnan(scale[3]) && isnan(y[3 * D]) && !isnan(y[4 * D]) && !isnan(scale[4]), "NaN row handling");
}

/* ---- activations ---- */

static double act_ref(int act, double x)
{
    switch (act) {
    case CIRCUITS_ACT_RELU: return x > 0 ? x : 0.0;
    case CIRCUITS_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case CIRCUITS_ACT_GELU_NEW: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case CIRCUITS_ACT_GELU_FAST: return 0.5 * x * (1.0 + tanh(0.7978845608 * x * (1.0 + 0.044715 * x * x)));
    case CIRCUITS_ACT_SILU: return x / (1.0 + exp(-x));
    default: return NAN;
    }
}

static void test_activations(void)
{
    static const float pts[] = {-10.0f, -3.0f, -1.0f, -0.5f, -1e-3f, 0.0f, 1e-3f, 0.5f, 1.0f, 2.0f, 3.0f, 10.0f};
    enum { NP = sizeof pts / sizeof pts[0] };
    static const char *const names[] = {"relu", "gelu", "gelu_new", "gelu_fast", "silu"};
    for (int act = CIRCUITS_ACT_RELU; act <= CIRCUITS_ACT_SILU; act++) {
        float x[NP];
        memcpy(x, pts, sizeof x);
        cx_activation(x, NP, act);
        for (int i = 0; i < NP; i++) {
            double want = act_ref(act, pts[i]);
            CHECK(fabs(x[i] - want) <= 1e-6 * fmax(1.0, fabs(want)), "%s(%g) = %.9g, want %.9g", names[act],
                  (double)pts[i], (double)x[i], want);
        }
    }
    /* the closed forms themselves, at 1.0 */
    CHECK(fabs(act_ref(CIRCUITS_ACT_GELU_NEW, 1.0) - 0.8411920070648193) < 1e-7, "gelu_new(1) closed form");
    CHECK(fabs(act_ref(CIRCUITS_ACT_GELU, 1.0) - 0.8413447460685429) < 1e-12, "gelu(1) closed form");
    CHECK(fabs(act_ref(CIRCUITS_ACT_SILU, 1.0) - 0.7310585786300049) < 1e-12, "silu(1) closed form");
    float g = 1.0f;
    cx_activation(&g, 1, CIRCUITS_ACT_GELU_NEW);
    CHECK(fabsf(g - 0.8411920070648193f) <= 1e-7f, "gelu_new(1.0) = %.9g", (double)g);
    /* n == 0 touches nothing */
    float u = 5.0f;
    cx_activation(&u, 0, CIRCUITS_ACT_RELU);
    CHECK(u == 5.0f, "n == 0 changed x");
}

/* ---- SoLU and NLL ---- */

static void test_solu_nll(void)
{
    enum { N = 3, D = 17 };
    float x[N * D], orig[N * D];
    fill(x, N * D);
    for (int j = 0; j < D; j++) x[2 * D + j] *= 50.0f;
    memcpy(orig, x, sizeof x);
    cx_solu(x, N, D);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        double mx = -INFINITY, s = 0.0;
        for (int j = 0; j < D; j++) mx = fmax(mx, orig[i * D + j]);
        for (int j = 0; j < D; j++) s += exp((double)orig[i * D + j] - mx);
        for (int j = 0; j < D; j++) {
            double want = orig[i * D + j] * exp((double)orig[i * D + j] - mx) / s;
            worst = fmax(worst, fabs(x[i * D + j] - want) / fmax(1.0, fabs(want)));
        }
    }
    CHECK(worst <= 1e-6, "solu off by %g", worst);

    enum { V = 50 };
    float lg[V];
    fill(lg, V);
    for (int j = 0; j < V; j++) lg[j] *= 30.0f;
    double mx = -INFINITY, s = 0.0;
    for (int j = 0; j < V; j++) mx = fmax(mx, lg[j]);
    for (int j = 0; j < V; j++) s += exp((double)lg[j] - mx);
    for (int32_t t = 0; t < V; t += 7) {
        double want = -((double)lg[t] - mx - log(s));
        double got = cx_nll_row(lg, V, t);
        CHECK(fabs(got - want) <= 1e-9 * fmax(1.0, want), "nll target %d: %.12g vs %.12g", t, got, want);
        CHECK(got >= 0.0, "nll negative: %g", got);
    }
    float flat[4] = {2.0f, 2.0f, 2.0f, 2.0f};
    CHECK(fabs(cx_nll_row(flat, 4, 1) - log(4.0)) < 1e-12, "nll of a flat row is log V");
}

/* The causal softmax equals the whole-row softmax on masked scores, bit for bit. */
static void test_softmax_causal(void)
{
    enum { N = 3, T = 37 };
    static float a[N * T * T], b[N * T * T];
    unsigned x = 12345;
    for (int m = 0; m < N; m++)
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++) {
                x = x * 1103515245u + 12345u;
                float v = j > i ? -INFINITY : ((float)(x >> 8) / 16777216.0f - 0.5f) * 20.0f;
                a[(m * T + i) * T + j] = b[(m * T + i) * T + j] = v;
            }
    cx_softmax_rows(a, N * T, T);
    /* poison the masked part: the causal kernel must not read it */
    for (int m = 0; m < N; m++)
        for (int i = 0; i < T; i++)
            for (int j = i + 1; j < T; j++) b[(m * T + i) * T + j] = NAN;
    cx_softmax_causal(b, N, T);
    CHECK(memcmp(a, b, sizeof a) == 0, "causal softmax differs from the whole-row softmax");
}

/* Scores a hook may have written (forward.c's split attention): rows whose masked part is still
 * -inf take the windowed causal softmax bit for bit; a row written in its masked part (a finite
 * value before the window, after the diagonal, or a NaN) the whole-row softmax. P cached keys. */
static void test_softmax_masked(void)
{
    enum { N = 2, T = 29, P = 5, TK = P + T, W = 9 };
    static float a[N * T * TK], b[N * T * TK], c[N * T * TK];
    unsigned x = 777;
    for (int m = 0; m < N; m++)
        for (int i = 0; i < T; i++)
            for (int j = 0; j < TK; j++) {
                x = x * 1103515245u + 12345u;
                bool seen = j <= P + i && j > P + i - W;
                float v = seen ? ((float)(x >> 8) / 16777216.0f - 0.5f) * 20.0f : -INFINITY;
                a[(m * T + i) * TK + j] = b[(m * T + i) * TK + j] = c[(m * T + i) * TK + j] = v;
            }
    /* written rows: row 3 of matrix 0 after its diagonal, row 20 before its window, row 7 of
     * matrix 1 with a NaN in its masked part */
    int64_t w0 = (0 * T + 3) * TK + P + 3 + 2, w1 = (0 * T + 20) * TK + P + 20 - W - 1, w2 = (1 * T + 7) * TK + TK - 1;
    b[w0] = c[w0] = 1.5f;
    b[w1] = c[w1] = -0.25f;
    b[w2] = c[w2] = NAN;
    cx_softmax_causal_window(a, N, T, P, W);
    cx_softmax_masked(b, N, T, P, W);
    for (int r = 0; r < N * T; r++) { /* the reference: whole rows where written */
        float *row = c + (int64_t)r * TK;
        bool written = row == c + w0 / TK * TK || row == c + w1 / TK * TK || row == c + w2 / TK * TK;
        if (written) cx_softmax_rows(row, 1, TK);
        else memcpy(row, a + (int64_t)r * TK, TK * sizeof *row);
    }
    CHECK(memcmp(b, c, sizeof b) == 0, "masked softmax differs from causal rows / whole written rows");
    CHECK(b[w0] > 0.0f && b[w1] > 0.0f, "a written masked entry got no weight");
    for (int j = 0; j < TK; j++) CHECK(c[w2 / TK * TK + j] == 0.0f, "a NaN row is not zeros at %d", j);
}

/* ---- the pool (lib/base/pool.c) ---- */

typedef struct cover_arg { int *hits; int64_t align, n; int bad_bounds; } cover_arg;

static void cover_task(void *p, int64_t b, int64_t e)
{
    cover_arg *a = p;
    if (b % a->align != 0 || b < 0 || e > a->n || b >= e) __atomic_add_fetch(&a->bad_bounds, 1, __ATOMIC_RELAXED);
    for (int64_t i = b; i < e; i++) __atomic_add_fetch(&a->hits[i], 1, __ATOMIC_RELAXED);
}

static void nested_task(void *p, int64_t b, int64_t e)
{
    cover_arg *a = p;
    for (int64_t i = b; i < e; i++) { /* a loop inside a task runs inline on that thread */
        cover_arg inner = {a->hits + i * 10, 1, 10, 0};
        cx_parallel_for(10, 1, cover_task, &inner);
        if (inner.bad_bounds) __atomic_add_fetch(&a->bad_bounds, 1, __ATOMIC_RELAXED);
    }
}

static void *concurrent_loops(void *p)
{
    int *fails = p;
    for (int r = 0; r < 200; r++) {
        int hits[1000] = {0};
        cover_arg a = {hits, 7, 1000, 0};
        cx_parallel_for(1000, 7, cover_task, &a);
        for (int i = 0; i < 1000; i++)
            if (hits[i] != 1) (*fails)++;
        *fails += a.bad_bounds;
    }
    return NULL;
}

typedef struct gemm_arg { float *out; const float *x, *w; int64_t M, K, N; } gemm_arg;

static void gemm_inline_task(void *p, int64_t b, int64_t e)
{
    (void)b, (void)e;
    gemm_arg *g = p;
    cx_matmul(g->out, g->N, g->x, g->K, g->M, g->K, g->N, g->w, g->N, 1, NULL, false);
}

static void test_pool(void)
{
    int64_t sizes[] = {1, 2, 3, 63, 64, 65, 1000, 4097};
    int64_t aligns[] = {1, 7, 64};
    for (int threads = 1; threads <= 5; threads += 2) {
        circuits_set_num_threads(threads);
        CHECK(circuits_get_num_threads() == threads, "get_num_threads %d, set %d", circuits_get_num_threads(), threads);
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (size_t ai = 0; ai < 3; ai++) {
                int64_t n = sizes[si];
                int *hits = calloc((size_t)n, sizeof *hits);
                cover_arg a = {hits, aligns[ai], n, 0};
                cx_parallel_for(n, aligns[ai], cover_task, &a);
                int wrong = 0;
                for (int64_t i = 0; i < n; i++) wrong += hits[i] != 1;
                CHECK(wrong == 0 && a.bad_bounds == 0, "threads %d n %lld align %lld: %d items not run once, %d bad chunks",
                      threads, (long long)n, (long long)aligns[ai], wrong, a.bad_bounds);
                free(hits);
            }
        int hits[100 * 10] = {0};
        cover_arg a = {hits, 1, 100, 0};
        cx_parallel_for(100, 1, nested_task, &a);
        int wrong = 0;
        for (int i = 0; i < 1000; i++) wrong += hits[i] != 1;
        CHECK(wrong == 0 && a.bad_bounds == 0, "nested loops: %d items wrong", wrong);
    }
    /* four threads share a 2-thread pool: one gets it, the others run their chunks inline */
    circuits_set_num_threads(2);
    pthread_t th[4];
    int fails[4] = {0};
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, concurrent_loops, &fails[i]);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK(fails[0] + fails[1] + fails[2] + fails[3] == 0, "concurrent loops: %d failures",
          fails[0] + fails[1] + fails[2] + fails[3]);

    /* A split GEMM gives the same bits at a given thread count whether its chunks run in
     * parallel or one after another on the caller (as when the pool is busy or the call is
     * nested in a task) — what makes runs reproducible under any concurrency. */
    int64_t M = 96, K = 200, N = 1000;
    float *x = malloc((size_t)(M * K) * sizeof *x), *w = malloc((size_t)(K * N) * sizeof *w);
    float *o1 = malloc((size_t)(M * N) * sizeof *o1), *o2 = malloc((size_t)(M * N) * sizeof *o2);
    fill(x, (size_t)(M * K));
    fill(w, (size_t)(K * N));
    circuits_set_num_threads(2);
    cx_matmul(o1, N, x, K, M, K, N, w, N, 1, NULL, false);
    gemm_arg g = {o2, x, w, M, K, N};
    cx_parallel_for(1, 1, gemm_inline_task, &g);
    CHECK(memcmp(o1, o2, (size_t)(M * N) * sizeof *o1) == 0, "a split GEMM run inline differs from the parallel one");
    circuits_set_num_threads(0);
    CHECK(circuits_get_num_threads() >= 1, "default thread count");
    free(x);
    free(w);
    free(o1);
    free(o2);
}

/* A dataset job's products (kernels.c "products"): in serial mode with cx_gemm_sequences(S), each
 * sequence's rows of a product over S sequences in per-sequence mode have the bits of a product
 * over that sequence alone run normally (on the pool's threads), for cx_matmul and cx_sgemm, shapes on both sides
 * of every switch (one slice or many, columns or rows, transposed B, OpenBLAS's small-matrix
 * size). OpenBLAS alone fails this on most CPUs (measured: edge kernels, row positions). */
static void check_sequences(int64_t T, int64_t K, int64_t N, bool trans, bool gemm)
{
    enum { S_MAX = 7 };
    int64_t M = S_MAX * T;
    float *in = malloc(sizeof(float) * (size_t)(M * K)), *W = malloc(sizeof(float) * (size_t)(K * N));
    float *b = malloc(sizeof(float) * (size_t)N), *alone = malloc(sizeof(float) * (size_t)(M * N));
    float *batched = malloc(sizeof(float) * (size_t)(M * N));
    fill(in, (size_t)(M * K)), fill(W, (size_t)(K * N)), fill(b, (size_t)N);
    int64_t rs = trans ? 1 : N, cs = trans ? K : 1;
    for (int64_t i = 0; i < S_MAX; i++) { /* each sequence alone, the pool as configured */
        if (gemm) cx_sgemm(false, trans, T, N, K, 1.0f, in + i * T * K, K, W, trans ? K : N, 0.0f, alone + i * T * N, N);
        else cx_matmul(alone + i * T * N, N, in + i * T * K, K, T, K, N, W, rs, cs, b, false);
    }
    const int64_t seqs[] = {2, 3, S_MAX};
    for (size_t r = 0; r < sizeof seqs / sizeof *seqs; r++) {
        int64_t S = seqs[r];
        cx_pool_serial(true);
        cx_gemm_per_sequence(true);
        int64_t prev = cx_gemm_sequences(S);
        if (gemm) cx_sgemm(false, trans, S * T, N, K, 1.0f, in, K, W, trans ? K : N, 0.0f, batched, N);
        else cx_matmul(batched, N, in, K, S * T, K, N, W, rs, cs, b, false);
        cx_gemm_sequences(prev);
        cx_gemm_per_sequence(false);
        cx_pool_serial(false);
        CHECK(!memcmp(batched, alone, sizeof(float) * (size_t)(S * T * N)),
              "%s T=%lld K=%lld N=%lld trans=%d: %lld sequences in one product (serial mode) have the bits of "
              "each alone", gemm ? "cx_sgemm" : "cx_matmul", (long long)T, (long long)K, (long long)N, trans,
              (long long)S);
    }
    free(in), free(W), free(b), free(alone), free(batched);
}

static void test_sequences(void)
{
    const int64_t shapes[][3] = {{11, 32, 32}, {11, 32, 1000}, {37, 768, 64}, {11, 768, 768}, {5, 64, 2048},
                                 {1, 100, 2000}, {130, 96, 40}, {64, 3072, 96}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int t = 0; t < 2; t++)
            for (int gm = 0; gm < 2; gm++) check_sequences(shapes[i][0], shapes[i][1], shapes[i][2], t, gm);
}


/* cx_attn_scores / cx_attn_mix against double precision, on both paths, with tails in every
 * dimension and padded leading dimensions (left untouched); on the kernel path also the claim the
 * forward relies on: a block of a product has the bits of the whole product, and zero pattern
 * columns beyond N (the causal mask) leave the mix's bits unchanged. */
static void check_attn(int64_t M, int64_t N, int64_t dh)
{
    int64_t ldq = dh + 3, ldk = dh + 5, lds = N + 7, ldz = dh + 2, extra = 9, ldp = N + extra;
    float *q = malloc(sizeof(float) * (size_t)(M * ldq)), *k = malloc(sizeof(float) * (size_t)((N + extra) * ldk));
    float *S = malloc(sizeof(float) * (size_t)(M * lds)), *z = malloc(sizeof(float) * (size_t)(M * ldz));
    float *p = malloc(sizeof(float) * (size_t)(M * ldp)), *z2 = malloc(sizeof(float) * (size_t)(M * ldz));
    float *S2 = malloc(sizeof(float) * (size_t)(M * lds));
    fill(q, (size_t)(M * ldq)), fill(k, (size_t)((N + extra) * ldk)), fill(p, (size_t)(M * ldp));
    const float *v = k; /* [N + extra, dh] with row stride ldk */
    for (int pass = 0; pass < 2; pass++) {
        cx_attn_switch_off(pass == 1);
        bool kern = cx_attn_kernels(dh);
        for (size_t i = 0; i < (size_t)(M * lds); i++) S[i] = SENTINEL;
        for (size_t i = 0; i < (size_t)(M * ldz); i++) z[i] = SENTINEL;
        cx_attn_scores(S, lds, q, ldq, k, ldk, M, N, dh, N);
        cx_attn_mix(z, ldz, p, ldp, v, ldk, M, N, dh, N);
        double worst = 0.0;
        bool pad_ok = true;
        for (int64_t i = 0; i < M; i++) {
            for (int64_t j = 0; j < N; j++) {
                double acc = 0.0, mag = 0.0;
                for (int64_t d = 0; d < dh; d++) {
                    acc += (double)q[i * ldq + d] * k[j * ldk + d];
                    mag += fabs((double)q[i * ldq + d] * k[j * ldk + d]);
                }
                double e = fabs(S[i * lds + j] - acc) / (mag + 1e-30);
                worst = e > worst ? e : worst;
            }
            for (int64_t d = 0; d < dh; d++) {
                double acc = 0.0, mag = 0.0;
                for (int64_t j = 0; j < N; j++) {
                    acc += (double)p[i * ldp + j] * v[j * ldk + d];
                    mag += fabs((double)p[i * ldp + j] * v[j * ldk + d]);
                }
                double e = fabs(z[i * ldz + d] - acc) / (mag + 1e-30);
                worst = e > worst ? e : worst;
            }
            for (int64_t j = N; j < lds; j++) pad_ok &= S[i * lds + j] == SENTINEL;
            for (int64_t d = dh; d < ldz; d++) pad_ok &= z[i * ldz + d] == SENTINEL;
        }
        CHECK(worst < 1e-5 && pad_ok, "attention products M=%lld N=%lld dh=%lld (%s): worst relative error %.3g, "
              "padding untouched %d", (long long)M, (long long)N, (long long)dh, kern ? "AVX-512" : "OpenBLAS", worst,
              pad_ok);
        if (!kern) continue;
        /* a block: rows r0.., keys c0.. of the same product */
        int64_t r0 = M / 3, c0 = N / 2, rm = M - r0, cn = N - c0;
        memcpy(S2, S, sizeof(float) * (size_t)(M * lds));
        cx_attn_scores(S2 + r0 * lds + c0, lds, q + r0 * ldq, ldq, k + c0 * ldk, ldk, rm, cn, dh, cn);
        CHECK(!memcmp(S, S2, sizeof(float) * (size_t)(M * lds)), "scores M=%lld N=%lld dh=%lld: a block has the "
              "bits of the whole product", (long long)M, (long long)N, (long long)dh);
        memcpy(z2, z, sizeof(float) * (size_t)(M * ldz));
        cx_attn_mix(z2 + r0 * ldz, ldz, p + r0 * ldp, ldp, v, ldk, rm, N, dh, N);
        for (int64_t i = 0; i < M; i++) /* masked columns: zeros after N */
            for (int64_t j = N; j < ldp; j++) p[i * ldp + j] = 0.0f;
        cx_attn_mix(z2, ldz, p, ldp, v, ldk, M, N + extra, dh, N + extra);
        CHECK(!memcmp(z, z2, sizeof(float) * (size_t)(M * ldz)), "mix M=%lld N=%lld dh=%lld: a block, and zero "
              "columns after N, give the bits of the product", (long long)M, (long long)N, (long long)dh);
        /* causal (diag): the scores a row sees, and the mix of a pattern zero after them, have the
         * bits of the whole products */
        int64_t diag = N - M > 0 ? N - M : 0;
        memcpy(S2, S, sizeof(float) * (size_t)(M * lds));
        cx_attn_scores(S2, lds, q, ldq, k, ldk, M, N, dh, diag);
        bool seen_same = true;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N && j <= diag + i; j++) seen_same &= !memcmp(&S[i * lds + j], &S2[i * lds + j], sizeof(float));
        fill(p, (size_t)(M * ldp));
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = diag + i + 1; j < N; j++) p[i * ldp + j] = 0.0f;
        cx_attn_mix(z, ldz, p, ldp, v, ldk, M, N, dh, N);
        cx_attn_mix(z2, ldz, p, ldp, v, ldk, M, N, dh, diag);
        CHECK(seen_same && !memcmp(z, z2, sizeof(float) * (size_t)(M * ldz)), "causal M=%lld N=%lld dh=%lld diag=%lld: "
              "the bits of the whole products", (long long)M, (long long)N, (long long)dh, (long long)diag);
        fill(p, (size_t)(M * ldp));
    }
    cx_attn_switch_off(false);
    free(q), free(k), free(S), free(z), free(p), free(z2), free(S2);
}

static void test_attn(void)
{
    const int64_t shapes[][3] = {{1, 1, 16}, {7, 5, 64}, {64, 100, 64}, {13, 33, 48}, {9, 70, 128},
                                 {20, 17, 80}, {65, 129, 64}, {3, 40, 256}, {5, 9, 24}, {300, 300, 64}, {40, 300, 64}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) check_attn(shapes[i][0], shapes[i][1], shapes[i][2]);
}

int main(void)
{
    const char *core = getenv("OPENBLAS_CORETYPE"); /* meson test kernels_haswell */
    if (core && !strcmp(core, "Haswell") && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        printf("test_kernels: OpenBLAS's Haswell kernels need AVX2 and FMA, which this CPU lacks: skipped\n");
        return 77; /* meson's skip */
    }
    test_pool();
    test_softmax_causal();
    test_softmax_masked();
    test_matmul();
    test_sequences();
    test_attn();
    test_softmax();
    test_layernorm();
    test_rmsnorm();
    test_activations();
    test_solu_nll();
    return tu_finish("test_kernels");
}
