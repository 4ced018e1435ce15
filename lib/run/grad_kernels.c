/* The backward kernels (grad_kernels.h): plain loops, each the derivative of the forward kernel
 * beside it in kernels.c, written from that kernel's formula. Row reductions run in double; the
 * kernels that touch O(N * D) values split their rows over the pool (cx_parallel_for), so a result
 * never depends on the thread count (every row's arithmetic is the same in any split). */
#include "grad_kernels.h"
#include "kernels.h"
#include "fastmath.h"
#include "rope.h"
#include "pool.h"

#include <math.h>

/* ---- LayerNorm / RMSNorm ---- */

/* The affine's weight gradients: columns in blocks of AFF_COLS, each block's sums over every row
 * in double on the stack, so the column split over the pool needs no scratch allocation. */
#define AFF_COLS 64

typedef struct affine_job {
    float *dx, *dw, *db;
    const float *dout, *x, *w;
    int64_t N, D;
} affine_job;

static void affine_wb_task(void *arg, int64_t c0, int64_t c1)
{
    const affine_job *j = arg;
    for (int64_t b = c0; b < c1; b += AFF_COLS) {
        int64_t e = b + AFF_COLS < c1 ? b + AFF_COLS : c1;
        double sw[AFF_COLS] = {0}, sb[AFF_COLS] = {0};
        for (int64_t n = 0; n < j->N; n++) {
            const float *g = j->dout + n * j->D, *xr = j->x + n * j->D;
            for (int64_t c = b; c < e; c++) {
                sw[c - b] += (double)g[c] * xr[c];
                sb[c - b] += g[c];
            }
        }
        for (int64_t c = b; c < e; c++) {
            if (j->dw) j->dw[c] += (float)sw[c - b];
            if (j->db) j->db[c] += (float)sb[c - b];
        }
    }
}

static void affine_dx_task(void *arg, int64_t r0, int64_t r1)
{
    const affine_job *j = arg;
    for (int64_t n = r0; n < r1; n++)
        for (int64_t c = 0; c < j->D; c++) {
            float g = j->dout[n * j->D + c];
            j->dx[n * j->D + c] = j->w ? g * j->w[c] : g;
        }
}

void cx_affine_backward(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w, int64_t N,
                        int64_t D)
{
    affine_job j = {dx, dw, db, dout, x, w, N, D};
    /* the weight sums first: dx may overwrite dout */
    if (dw || db) cx_parallel_for(D, AFF_COLS, affine_wb_task, &j);
    if (dx) cx_parallel_for(N, cx_rows_align(D), affine_dx_task, &j);
}

typedef struct ln_bwd_job {
    float *dcent, *dscale, *dx;
    const float *dn, *n_f, *scale_u, *scale_f, *dscale_f;
    int64_t D;
    bool rms;
} ln_bwd_job;

static void ln_normalized_task(void *arg, int64_t r0, int64_t r1)
{
    const ln_bwd_job *j = arg;
    for (int64_t n = r0; n < r1; n++) {
        const float *g = j->dn + n * j->D, *nf = j->n_f + n * j->D;
        float *dc = j->dcent + n * j->D, s = j->scale_u[n];
        double dot = 0.0; /* before dc overwrites g */
        for (int64_t c = 0; c < j->D; c++) dot += (double)g[c] * nf[c];
        for (int64_t c = 0; c < j->D; c++) dc[c] = g[c] / s;
        j->dscale[n] = (float)(-dot / s);
    }
}

void cx_ln_normalized_backward(float *dcent, float *dscale_u, const float *dn, const float *n_f, const float *scale_u,
                               int64_t N, int64_t D)
{
    ln_bwd_job j = {.dcent = dcent, .dscale = dscale_u, .dn = dn, .n_f = n_f, .scale_u = scale_u, .D = D};
    cx_parallel_for(N, cx_rows_align(D), ln_normalized_task, &j);
}

static void ln_scale_task(void *arg, int64_t r0, int64_t r1)
{
    const ln_bwd_job *j = arg;
    int64_t D = j->D;
    for (int64_t n = r0; n < r1; n++) {
        const float *dc = j->dcent + n * D, *nf = j->n_f + n * D;
        float *dx = j->dx + n * D;
        /* d scale_f / d centered_c = centered_c / (D scale_f), centered = n_f * scale_u */
        double k = j->dscale_f ? (double)j->dscale_f[n] / ((double)D * j->scale_f[n]) : 0.0;
        double su = j->scale_u[n], sum = 0.0;
        for (int64_t c = 0; c < D; c++) {
            double v = dc[c] + k * ((double)nf[c] * su);
            dx[c] = (float)v;
            sum += v;
        }
        if (j->rms) continue;
        /* centered = x - mean(x): the Jacobian (I - 1/D) is symmetric, so dx = dcent - mean(dcent) */
        float mean = (float)(sum / (double)D);
        for (int64_t c = 0; c < D; c++) dx[c] -= mean;
    }
}

void cx_ln_scale_backward(float *dx, const float *dcent, const float *dscale_f, const float *n_f,
                          const float *scale_u, const float *scale_f, int64_t N, int64_t D, bool rms)
{
    ln_bwd_job j = {.dx = dx, .dcent = (float *)dcent, .dscale_f = dscale_f, .n_f = n_f, .scale_u = scale_u,
                    .scale_f = scale_f, .D = D, .rms = rms};
    cx_parallel_for(N, cx_rows_align(D), ln_scale_task, &j);
}

/* ---- activations ---- */

/* d/dx of 0.5 x (1 + tanh(k x (1 + a x^2))): gelu_new (k = sqrt(2/pi)) and gelu_fast (k written
 * 0.7978845608, as its forward), a = 0.044715; tanh as the forward computes it (tanh_poly). */
CX_HOT static void gelu_tanh_grad_range(float *dx, const float *dy, const float *x, int64_t n, float k)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], v2 = v * v, t = tanh_poly(k * v * (1.0f + 0.044715f * v2));
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * v2));
    }
}

/* s (1 + x (1 - s)), s = sigmoid(x) (exp_poly saturates: s -> 0 for very negative x, no inf) */
CX_HOT static void silu_grad_range(float *dx, const float *dy, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + exp_poly(-x[i]));
        dx[i] = dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
    }
}

static void act_grad_range(float *dx, const float *dy, const float *x, int64_t n, int act)
{
    switch (act) {
    case CIRCUITS_ACT_RELU: /* torch's relu passes no gradient at 0 */
        for (int64_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
        break;
    case CIRCUITS_ACT_GELU: /* Phi(x) + x phi(x); erf from libm, as the forward */
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
            float pdf = 0.39894228040143268f * exp_poly(-0.5f * v * v);
            dx[i] = dy[i] * (cdf + v * pdf);
        }
        break;
    case CIRCUITS_ACT_GELU_NEW: gelu_tanh_grad_range(dx, dy, x, n, 0.7978845608028654f); break; /* and gelu_pytorch_tanh */
    case CIRCUITS_ACT_GELU_FAST: gelu_tanh_grad_range(dx, dy, x, n, 0.7978845608f); break;
    case CIRCUITS_ACT_SILU: silu_grad_range(dx, dy, x, n); break;
    default: /* cx_activation leaves any other value unchanged: the identity */
        for (int64_t i = 0; i < n; i++) dx[i] = dy[i];
        break;
    }
}

typedef struct act_bwd_job {
    float *dx;
    const float *dy, *x;
    int act;
} act_bwd_job;

static void act_bwd_task(void *arg, int64_t b, int64_t e)
{
    const act_bwd_job *j = arg;
    act_grad_range(j->dx + b, j->dy + b, j->x + b, e - b, j->act);
}

void cx_activation_backward(float *dx, const float *dy, const float *x, size_t n, int act_fn)
{
    act_bwd_job j = {dx, dy, x, act_fn};
    cx_parallel_for((int64_t)n, 16384, act_bwd_task, &j);
}

/* y_k = x_k p_k, p = softmax(x): dx_k = p_k (dy_k (1 + x_k) - sum_j dy_j x_j p_j). p in double
 * from the max-shifted exponentials, as cx_solu computes it. */
typedef struct row_job {
    float *out;
    const float *g, *in;
    int64_t D;
} row_job;

static void solu_bwd_task(void *arg, int64_t r0, int64_t r1)
{
    const row_job *j = arg;
    int64_t D = j->D;
    for (int64_t n = r0; n < r1; n++) {
        const float *x = j->in + n * D, *dy = j->g + n * D;
        float *dx = j->out + n * D;
        float mx = -INFINITY;
        for (int64_t c = 0; c < D; c++) mx = x[c] > mx ? x[c] : mx;
        double sum = 0.0, s = 0.0;
        for (int64_t c = 0; c < D; c++) sum += exp((double)x[c] - mx);
        for (int64_t c = 0; c < D; c++) s += (double)dy[c] * x[c] * (exp((double)x[c] - mx) / sum);
        for (int64_t c = 0; c < D; c++) {
            double p = exp((double)x[c] - mx) / sum;
            dx[c] = (float)(p * ((double)dy[c] * (1.0 + x[c]) - s));
        }
    }
}

void cx_solu_backward(float *dx, const float *dy, const float *x, int64_t N, int64_t D)
{
    row_job j = {dx, dy, x, D};
    cx_parallel_for(N, cx_rows_align(D), solu_bwd_task, &j);
}

/* ---- softmax, soft-cap ---- */

/* Entries with p = 0 (masked keys, fully masked rows) get ds = 0 and stay out of the sum, so a
 * non-finite gradient on a masked entry cannot reach the rest of the row. The sum in double lanes:
 * attention runs this on [B * H * T, T]. */
CX_HOT static void softmax_bwd_row(float *ds, const float *dp, const float *p, int64_t D)
{
    double s[LANES] = {0};
    int64_t c = 0;
    for (; c + LANES <= D; c += LANES)
        for (int l = 0; l < LANES; l++) s[l] += p[c + l] != 0.0f ? (double)p[c + l] * dp[c + l] : 0.0;
    double dot = 0.0;
    for (int l = 0; l < LANES; l++) dot += s[l];
    for (; c < D; c++) dot += p[c] != 0.0f ? (double)p[c] * dp[c] : 0.0;
    float d = (float)dot;
    for (c = 0; c < D; c++) ds[c] = p[c] != 0.0f ? p[c] * (dp[c] - d) : 0.0f;
}

static void softmax_bwd_task(void *arg, int64_t r0, int64_t r1)
{
    const row_job *j = arg;
    for (int64_t n = r0; n < r1; n++) softmax_bwd_row(j->out + n * j->D, j->g + n * j->D, j->in + n * j->D, j->D);
}

void cx_softmax_backward(float *ds, const float *dp, const float *p, int64_t N, int64_t D)
{
    row_job j = {ds, dp, p, D};
    cx_parallel_for(N, cx_rows_align(D), softmax_bwd_task, &j);
}

typedef struct softcap_job {
    float *dx;
    const float *dy, *y;
    float inv_cap;
} softcap_job;

/* -inf (a masked score) gives 0: 1 - (y / cap)^2 would be -inf, and -inf * 0 NaN */
CX_HOT static void softcap_bwd_range(float *dx, const float *dy, const float *y, int64_t n, float inv_cap)
{
    for (int64_t i = 0; i < n; i++) {
        float t = y[i] * inv_cap; /* tanh(x / cap) */
        dx[i] = y[i] == -INFINITY ? 0.0f : dy[i] * (1.0f - t * t);
    }
}

static void softcap_bwd_task(void *arg, int64_t b, int64_t e)
{
    const softcap_job *j = arg;
    softcap_bwd_range(j->dx + b, j->dy + b, j->y + b, e - b, j->inv_cap);
}

void cx_softcap_backward(float *dx, const float *dy, const float *y, size_t n, float cap)
{
    softcap_job j = {dx, dy, y, 1.0f / cap};
    cx_parallel_for((int64_t)n, 16384, softcap_bwd_task, &j);
}

/* ---- rotary ---- */

/* The forward turns (a, b) by +angle; its transpose turns the gradient back by -angle. */
void cx_rope_rotate_backward(float *dx, int64_t B, int64_t T, int64_t nh, int64_t dh, const circuits_config *c,
                             const float *cos_t, const float *sin_t)
{
    cx_rope_turn(dx, B, T, nh, dh, c, cos_t, sin_t, -1.0f);
}
