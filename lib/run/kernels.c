/* Numerical kernels. Each fast kernel has a plain one beside it or is checked against double
 * precision in tests/test_kernels.c.
 *
 * Parallelism: the whole-array functions split their rows (or GEMM columns) over the library's
 * pool (pool.h); per-row work is independent, so results do not depend on the split.
 * Vectorisation: the hot loops keep 8 independent partial sums or maxima ("lanes") instead of
 * one running value, which lets the compiler use SIMD without -ffast-math (which would allow
 * it to reorder anything), and exp is a polynomial (exp_poly) instead of a libm call. */
#include "kernels.h"
#include "fastmath.h"
#include "rope.h"
#include "pool.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- matrix products ---- */

static void init_out(float *out, int64_t ldo, int64_t M, int64_t N, const float *bias, bool accumulate)
{
    if (accumulate) return;
    for (int64_t i = 0; i < M; i++) {
        if (bias) memcpy(out + i * ldo, bias, (size_t)N * sizeof *out);
        else memset(out + i * ldo, 0, (size_t)N * sizeof *out);
    }
}

void cx_matmul_ref(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, int64_t K, int64_t N,
                   const float *W, int64_t w_rs, int64_t w_cs, const float *bias, bool accumulate)
{
    init_out(out, ldo, M, N, bias, accumulate);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; k++) acc += (double)in[i * ldi + k] * W[k * w_rs + j * w_cs];
            out[i * ldo + j] += (float)acc;
        }
}

/* ---- products: the same sgemm calls whatever the thread count or batch ----
 * OpenBLAS's value for a row or column depends on more than its inputs: measured with 0.3.21
 * (tests/test_kernels.c), its Haswell/Zen kernels give a row other bits at another position mod
 * 12 of the call and a column other bits when the call has other columns beside it; every
 * kernel switches path with M (small-matrix kernels at M*N*K <= 100^3, edge kernels for the
 * last rows, M == 1). So:
 * - a product is cut into slices (at most GEMM_SLICES, multiples of 64 columns, or rows when C
 *   is tall) chosen from its shape alone, each one sgemm call; the pool hands out whole
 *   slices, so the calls, and the bits, are the same for any thread count;
 * - in per-sequence mode (a dataset job's kinds, around runs that batch rows) a product whose
 *   rows are the pass's sequences (cx_gemm_sequences) runs each sequence's rows as their own
 *   product: the calls a batch of one makes, so a job's rows have the same bits whatever its
 *   batch size. Off elsewhere: one product over the batch is faster. */
typedef struct gemm_job {
    bool ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    int64_t lda, ldb, ldc;
    float *C;
    bool by_rows;
    int64_t slice;      /* columns (rows if by_rows) per sgemm call */
    const float *bias;  /* cx_matmul: C = bias first (beta 1) */
    bool init;          /* cx_matmul without accumulate: write bias or zeros first */
} gemm_job;

/* Slices at multiples of 64: tiles of OpenBLAS's kernels line up the same way in every slice,
 * and each is still wide enough to run its kernel at full speed. */
#define GEMM_ALIGN 64
/* Slices per product at most: enough for this many threads to share it, few enough that
 * OpenBLAS packs the other operand only that many times (64-column slices measured slower on
 * GPT-2 small at short prompts). */
#define GEMM_SLICES 8
/* A slice this wide at least, when the product has room for two: each slice packs the whole other
 * operand again, and a narrow one reuses it too little (one thread, SkylakeX kernels:
 * [1024, 3072] . [3072, 768] in 6 slices of 128 columns 52 ms, in 2 of 384 42 ms;
 * [1024, 768] . [768, 768] 14.1 ms in 6, 10.5 ms in 3; docs/performance.md, round two). */
#define GEMM_MIN_SLICE 384

static void gemm_slice(const gemm_job *g, int64_t b, int64_t e)
{
    const float *A = g->A, *B = g->B;
    float *C = g->C;
    int64_t M = g->M, N = g->N;
    if (g->by_rows) {
        A += g->ta ? b : b * g->lda;
        C += b * g->ldc;
        M = e - b;
    } else {
        B += g->tb ? b * g->ldb : b;
        C += b;
        N = e - b;
    }
    if (g->init) init_out(C, g->ldc, M, N, g->bias ? g->bias + (g->by_rows ? 0 : b) : NULL, false);
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, (blasint)M,
                (blasint)N, (blasint)g->K, g->alpha, A, (blasint)g->lda, B, (blasint)g->ldb, g->beta, C,
                (blasint)g->ldc);
}

static void gemm_task(void *arg, int64_t b, int64_t e)
{
    const gemm_job *g = arg;
    for (int64_t s = b; s < e; s += g->slice) gemm_slice(g, s, e - s < g->slice ? e : s + g->slice);
}

static void gemm_one(gemm_job *g)
{
    /* Split the longer side; a product too small to be worth a second thread is one slice. */
    g->by_rows = g->M >= 2 * g->N || g->M >= 4096;
    double flops = 2.0 * (double)g->M * (double)g->N * (double)g->K;
    int64_t n = g->by_rows ? g->M : g->N;
    /* an even count (two threads share it evenly), 2 .. GEMM_SLICES, slices >= GEMM_MIN_SLICE
     * where n allows */
    int64_t count = n / GEMM_MIN_SLICE;
    count = count < 2 ? 2 : count > GEMM_SLICES ? GEMM_SLICES : count & ~(int64_t)1;
    int64_t width = ((n + count - 1) / count + GEMM_ALIGN - 1) / GEMM_ALIGN * GEMM_ALIGN;
    g->slice = flops < 4e6 ? n : width;
    cx_parallel_for(n, g->slice, gemm_task, g);
}

static _Thread_local int64_t pass_sequences; /* cx_gemm_sequences */
static _Thread_local int per_sequence;       /* cx_gemm_per_sequence depth */

int64_t cx_gemm_sequences(int64_t n)
{
    int64_t prev = pass_sequences;
    pass_sequences = n;
    return prev;
}

void cx_gemm_per_sequence(bool on) { per_sequence += on ? 1 : -1; }

int64_t cx_gemm_group_rows(int64_t M)
{
    int64_t S = pass_sequences;
    return per_sequence > 0 && S > 1 && M % S == 0 ? M / S : M;
}

static void gemm_run(gemm_job *g)
{
    int64_t rows = cx_gemm_group_rows(g->M);
    if (g->ta || rows == g->M) {
        gemm_one(g);
        return;
    }
    gemm_job q = *g; /* sequence by sequence: rows of C are rows of A */
    q.M = rows;
    for (int64_t i = 0; i < g->M / rows; i++) {
        q.A = g->A + i * q.M * g->lda;
        q.C = g->C + i * q.M * g->ldc;
        gemm_one(&q);
    }
}

void cx_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
              int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    gemm_job g = {.ta = trans_a, .tb = trans_b, .M = M, .N = N, .K = K, .alpha = alpha, .beta = beta, .A = A,
                  .B = B, .lda = lda, .ldb = ldb, .ldc = ldc, .C = C};
    gemm_run(&g);
}

/* How W [K, N] (strides w_rs, w_cs) reaches CBLAS: as stored (*trans false) or transposed, with
 * leading dimension *ldw; false when neither fits (CBLAS wants ld >= the stored row length) or
 * in / out have short rows: then the reference kernel runs. */
static bool cblas_layout(int64_t K, int64_t N, int64_t w_rs, int64_t w_cs, int64_t ldi, int64_t ldo, bool *trans,
                         int64_t *ldw)
{
    bool no_trans = w_cs == 1 && (w_rs >= N || K == 1);
    *trans = !no_trans && w_rs == 1 && (w_cs >= K || N == 1);
    if ((!no_trans && !*trans) || ldi < K || ldo < N) return false;
    *ldw = no_trans ? (w_rs > N ? w_rs : N) : (w_cs > K ? w_cs : K);
    return true;
}

void cx_matmul(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, int64_t K, int64_t N,
               const float *W, int64_t w_rs, int64_t w_cs, const float *bias, bool accumulate)
{
    if (M == 0 || N == 0) return;
    bool trans;
    int64_t ldw;
    if (!cblas_layout(K, N, w_rs, w_cs, ldi, ldo, &trans, &ldw)) {
        cx_matmul_ref(out, ldo, in, ldi, M, K, N, W, w_rs, w_cs, bias, accumulate);
        return;
    }
    gemm_job g = {.ta = false, .tb = trans, .M = M, .N = N, .K = K, .alpha = 1.0f, .beta = 1.0f, .A = in,
                  .B = W, .lda = ldi, .ldb = ldw, .ldc = ldo, .C = out, .bias = bias, .init = !accumulate};
    gemm_run(&g);
}

void cx_matmul_serial(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, int64_t K, int64_t N,
                      const float *W, int64_t w_rs, int64_t w_cs)
{
    if (M == 0 || N == 0) return;
    bool trans;
    int64_t ldw;
    if (!cblas_layout(K, N, w_rs, w_cs, ldi, ldo, &trans, &ldw)) {
        cx_matmul_ref(out, ldo, in, ldi, M, K, N, W, w_rs, w_cs, NULL, false);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K,
                1.0f, in, (blasint)ldi, W, (blasint)ldw, 0.0f, out, (blasint)ldo);
}

/* ---- row kernels ---- */

/* Rows are cut into chunks of at least this many values' work before a loop goes parallel:
 * below that, waking a thread costs more than it saves. */
static int64_t rows_align(int64_t width)
{
    int64_t a = 16384 / (width > 0 ? width : 1);
    return a > 0 ? a : 1;
}

int64_t cx_rows_align(int64_t width) { return rows_align(width); }

/* One row of LayerNorm, or of RMSNorm (rms: no centring, mean taken as 0; y = x exactly). */
CX_HOT static void ln_row(float *y, float *scale, const float *x, int64_t D, float eps, const float *w,
                          const float *b, bool finish, bool rms)
{
    int64_t j = 0;
    float mean = 0.0f;
    if (!rms) {
        double s[LANES] = {0};
        for (; j + LANES <= D; j += LANES)
            for (int l = 0; l < LANES; l++) s[l] += x[j + l];
        double sum = 0.0;
        for (int l = 0; l < LANES; l++) sum += s[l];
        for (; j < D; j++) sum += x[j];
        mean = (float)(sum / (double)D);
    }
    double q[LANES] = {0};
    for (j = 0; j + LANES <= D; j += LANES)
        for (int l = 0; l < LANES; l++) {
            float c = x[j + l] - mean;
            y[j + l] = c;
            q[l] += (double)c * c;
        }
    double sq = 0.0;
    for (int l = 0; l < LANES; l++) sq += q[l];
    for (; j < D; j++) {
        y[j] = x[j] - mean;
        sq += (double)y[j] * y[j];
    }
    float sc = sqrtf((float)(sq / (double)D) + eps);
    *scale = sc;
    if (!finish) return;
    for (j = 0; j < D; j++) {
        float v = y[j] / sc;
        if (w) v *= w[j];
        if (b) v += b[j];
        y[j] = v;
    }
}

typedef struct ln_job {
    float *y, *scale;
    const float *x, *w, *b;
    int64_t D;
    float eps;
    bool finish, rms;
} ln_job;

static void ln_task(void *arg, int64_t b, int64_t e)
{
    const ln_job *j = arg;
    for (int64_t i = b; i < e; i++)
        ln_row(j->y + i * j->D, j->scale + i, j->x + i * j->D, j->D, j->eps, j->w, j->b, j->finish, j->rms);
}

void cx_ln_center_scale(float *xc, float *scale, const float *x, int64_t N, int64_t D, float eps)
{
    ln_job j = {.y = xc, .scale = scale, .x = x, .D = D, .eps = eps, .finish = false};
    cx_parallel_for(N, rows_align(D), ln_task, &j);
}

void cx_layer_norm(float *y, float *scale, const float *x, int64_t N, int64_t D, float eps, const float *w,
                   const float *b)
{
    ln_job j = {.y = y, .scale = scale, .x = x, .w = w, .b = b, .D = D, .eps = eps, .finish = true};
    cx_parallel_for(N, rows_align(D), ln_task, &j);
}

void cx_rms_scale(float *y, float *scale, const float *x, int64_t N, int64_t D, float eps)
{
    ln_job j = {.y = y, .scale = scale, .x = x, .D = D, .eps = eps, .finish = false, .rms = true};
    cx_parallel_for(N, rows_align(D), ln_task, &j);
}

void cx_rms_norm(float *y, float *scale, const float *x, int64_t N, int64_t D, float eps, const float *w)
{
    ln_job j = {.y = y, .scale = scale, .x = x, .w = w, .D = D, .eps = eps, .finish = true, .rms = true};
    cx_parallel_for(N, rows_align(D), ln_task, &j);
}

/* The halves a hooked LayerNorm runs between its hooks, on the pool like the one-pass kernel (on
 * one core they made a hook at every point cost more than the split needs). Same arithmetic per
 * value as ln_row's finish, so the bits do not depend on the split. */
static void divide_task(void *arg, int64_t b, int64_t e)
{
    const ln_job *j = arg;
    for (int64_t i = b; i < e; i++) {
        float *x = j->y + i * j->D, sc = j->scale[i];
        for (int64_t c = 0; c < j->D; c++) x[c] /= sc;
    }
}

void cx_ln_divide(float *x, const float *scale, int64_t N, int64_t D)
{
    ln_job j = {.y = x, .scale = (float *)scale, .D = D};
    cx_parallel_for(N, rows_align(D), divide_task, &j);
}

static void affine_task(void *arg, int64_t b, int64_t e)
{
    const ln_job *j = arg;
    for (int64_t i = b; i < e; i++) {
        float *x = j->y + i * j->D;
        for (int64_t c = 0; c < j->D; c++) {
            float v = x[c];
            if (j->w) v *= j->w[c];
            if (j->b) v += j->b[c];
            x[c] = v;
        }
    }
}

void cx_affine(float *x, const float *w, const float *b, int64_t N, int64_t D)
{
    ln_job j = {.y = x, .w = w, .b = b, .D = D};
    cx_parallel_for(N, rows_align(D), affine_task, &j);
}

/* ---- copies ---- */

typedef struct copy_job {
    float *dst;
    const float *src;
} copy_job;

static void copy_task(void *arg, int64_t begin, int64_t end)
{
    const copy_job *j = arg;
    memcpy(j->dst + begin, j->src + begin, (size_t)(end - begin) * sizeof(float));
}

void cx_copy_floats(float *dst, const float *src, size_t n)
{
    copy_job j = {dst, src};
    cx_parallel_for((int64_t)n, (int64_t)1 << 16, copy_task, &j); /* under 64 Ki floats: one chunk, inline */
}

/* ---- activations ---- */

CX_HOT static void gelu_new_range(float *x, int64_t n)
{
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanh_poly(k * (v + 0.044715f * v * v * v)));
    }
}

CX_HOT static void gelu_fast_range(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanh_poly(0.7978845608f * v * (1.0f + 0.044715f * v * v)));
    }
}

CX_HOT static void silu_range(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + exp_poly(-x[i]));
}

static void activation_range(float *x, int64_t n, int act)
{
    switch (act) {
    case CIRCUITS_ACT_RELU:
        for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case CIRCUITS_ACT_GELU: /* exact GELU: erf has no cheap polynomial form here; libm it is */
        for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        break;
    case CIRCUITS_ACT_GELU_NEW: gelu_new_range(x, n); break;
    case CIRCUITS_ACT_GELU_FAST: gelu_fast_range(x, n); break;
    case CIRCUITS_ACT_SILU: silu_range(x, n); break;
    default: break;
    }
}

typedef struct act_job {
    float *x;
    int act;
} act_job;

static void act_task(void *arg, int64_t b, int64_t e)
{
    const act_job *j = arg;
    activation_range(j->x + b, e - b, j->act);
}

void cx_activation(float *x, size_t n, int act)
{
    act_job j = {x, act};
    cx_parallel_for((int64_t)n, 16384, act_task, &j);
}

void cx_solu(float *x, int64_t N, int64_t D)
{
    for (int64_t i = 0; i < N; i++) {
        float *r = x + i * D;
        float mx = -INFINITY;
        for (int64_t j = 0; j < D; j++) mx = r[j] > mx ? r[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < D; j++) sum += exp((double)r[j] - mx);
        for (int64_t j = 0; j < D; j++) r[j] = r[j] * (float)(exp((double)r[j] - mx) / sum);
    }
}

/* ---- softmax ---- */

/* A float's bits as an int32 ordered as the floats are (-0 just below +0; NaNs beyond the
 * infinities, on the side of their sign bit), and back. */
static inline __attribute__((always_inline)) int32_t float_key(float x)
{
    union { float f; int32_t i; } u = {x};
    return u.i ^ ((u.i >> 31) & INT32_MAX);
}

static inline __attribute__((always_inline)) float key_float(int32_t k)
{
    union { int32_t i; float f; } u = {k ^ ((k >> 31) & INT32_MAX)};
    return u.f;
}

#define KEY_INF 0x7F800000 /* float_key(+inf) */

CX_HOT void cx_softmax_row(float *r, int64_t D)
{
    /* The max as an integer max of order keys (float_key), which vectorises (a float max with
     * its NaN rules stays scalar: measured 1.5 ns per value for the whole softmax, round two of
     * docs/performance.md): a NaN with its sign bit clear counts as +inf (the row becomes zeros,
     * as before), one with it set as below -inf, and shows in the sum below instead. */
    int32_t m[LANES];
    for (int l = 0; l < LANES; l++) m[l] = INT32_MIN;
    int64_t j = 0;
    for (; j + LANES <= D; j += LANES)
        for (int l = 0; l < LANES; l++) {
            int32_t k = float_key(r[j + l]);
            m[l] = k > m[l] ? k : m[l];
        }
    int32_t mk = INT32_MIN;
    for (int l = 0; l < LANES; l++) mk = m[l] > mk ? m[l] : mk;
    for (; j < D; j++) {
        int32_t k = float_key(r[j]);
        mk = k > mk ? k : mk;
    }
    float mx = key_float(mk > KEY_INF ? KEY_INF : mk);
    /* All -inf (fully masked), a NaN, or +inf: torch's softmax gives NaN (or, masked, NaN too)
     * and TransformerLens's where(isnan) turns the row into zeros. */
    if (mx == -INFINITY || mx == INFINITY) {
        memset(r, 0, (size_t)D * sizeof *r);
        return;
    }
    float s[LANES] = {0};
    for (j = 0; j + LANES <= D; j += LANES)
        for (int l = 0; l < LANES; l++) {
            float e = exp_poly(r[j + l] - mx);
            r[j + l] = e;
            s[l] += e;
        }
    for (; j < D; j++) { /* the tail into its lanes too: trailing zeros (masked keys) then leave
                            * the sum bit-identical, so a whole masked row = its causal part */
        r[j] = exp_poly(r[j] - mx);
        s[j % LANES] += r[j];
    }
    float sum = 0.0f;
    for (int l = 0; l < LANES; l++) sum += s[l];
    if (sum != sum) { /* a NaN in the row (mx is finite, so e^(x - mx) is NaN only for x NaN) */
        memset(r, 0, (size_t)D * sizeof *r);
        return;
    }
    float inv = 1.0f / sum;
    for (j = 0; j < D; j++) r[j] *= inv;
}

typedef struct softmax_job {
    float *x;
    int64_t D, T, P; /* T > 0: causal [T, P + T] blocks, row i over columns 0 .. P + i */
    int64_t W;       /* > 0: a sliding window, row i over columns P + i - W + 1 .. P + i */
    bool checked;    /* causal rows only where the masked columns are all -inf, else whole rows */
} softmax_job;

/* True if row[c] is -inf for every c in [lo, hi). */
static bool all_neg_inf(const float *row, int64_t lo, int64_t hi)
{
    int bad = 0;
    for (int64_t c = lo; c < hi; c++) bad |= row[c] != -INFINITY;
    return !bad;
}

static void softmax_task(void *arg, int64_t b, int64_t e)
{
    const softmax_job *j = arg;
    for (int64_t r = b; r < e; r++) {
        float *row = j->x + r * j->D;
        int64_t valid = j->P + (j->T > 0 ? r % j->T : 0) + 1, lo = j->W > 0 && valid > j->W ? valid - j->W : 0;
        if (j->T > 0 && (!j->checked || (all_neg_inf(row, 0, lo) && all_neg_inf(row, valid, j->D)))) {
            /* over exactly the keys the row sees, as the fused attention does: the same sums in
             * the same order, so a run with read-only hooks is bit-identical to a plain one */
            cx_softmax_row(row + lo, valid - lo);
            memset(row, 0, (size_t)lo * sizeof *row);
            memset(row + valid, 0, (size_t)(j->D - valid) * sizeof *row);
        } else {
            cx_softmax_row(row, j->D);
        }
    }
}

void cx_softmax_rows(float *x, int64_t N, int64_t D)
{
    softmax_job j = {x, D, 0, 0, 0, false};
    cx_parallel_for(N, rows_align(D), softmax_task, &j);
}

void cx_softmax_causal_window(float *x, int64_t n, int64_t T, int64_t P, int64_t window)
{
    softmax_job j = {x, P + T, T, P, window, false};
    cx_parallel_for(n * T, rows_align(P + T / 2 + 1), softmax_task, &j);
}

void cx_softmax_masked(float *x, int64_t n, int64_t T, int64_t P, int64_t window)
{
    softmax_job j = {x, P + T, T, P, window, true};
    cx_parallel_for(n * T, rows_align(P + T), softmax_task, &j);
}

void cx_softmax_causal_past(float *x, int64_t n, int64_t T, int64_t P) { cx_softmax_causal_window(x, n, T, P, 0); }

void cx_softmax_causal(float *x, int64_t n, int64_t T) { cx_softmax_causal_past(x, n, T, 0); }

void cx_rope_turn(float *x, int64_t B, int64_t T, int64_t nh, int64_t dh, const circuits_config *c,
                  const float *cos_t, const float *sin_t, float dir)
{
    int half = c->rotary_dim / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float *cs = cos_t + t * half, *sn = sin_t + t * half;
            for (int64_t h = 0; h < nh; h++) {
                float *r = x + ((b * T + t) * nh + h) * dh;
                for (int i = 0; i < half; i++) {
                    int ia, ib;
                    cx_rope_pair(c, i, &ia, &ib);
                    /* TL: x * cos + rotate(x) * sin, each product rounded before the sum */
                    float s = sn[i] * dir; /* exact: dir is +1 or -1 */
                    float a = r[ia], bb = r[ib], as = a * s, bs = bb * s, ac = a * cs[i], bc = bb * cs[i];
                    r[ia] = ac - bs;
                    r[ib] = bc + as;
                }
            }
        }
}

void cx_rope_rotate(float *x, int64_t B, int64_t T, int64_t nh, int64_t dh, const circuits_config *c,
                    const float *cos_t, const float *sin_t)
{
    cx_rope_turn(x, B, T, nh, dh, c, cos_t, sin_t, 1.0f);
}

/* The row's max, then e^(x - max) in double lanes (exp_poly_d: the row costs about as much as
 * reading it, where libm's exp cost ~10 ns a logit), optionally stored as floats. */
CX_HOT static double lse_lanes(const float *x, int64_t V, float *mx_out, float *e_out)
{
    float m[LANES];
    for (int l = 0; l < LANES; l++) m[l] = -INFINITY;
    int64_t j = 0;
    for (; j + LANES <= V; j += LANES)
        for (int l = 0; l < LANES; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    float mx = -INFINITY;
    for (int l = 0; l < LANES; l++) mx = m[l] > mx ? m[l] : mx;
    for (; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    double s[LANES] = {0};
    for (j = 0; j + LANES <= V; j += LANES)
        for (int l = 0; l < LANES; l++) {
            double e = exp_poly_d((double)x[j + l] - mx);
            if (e_out) e_out[j + l] = (float)e;
            s[l] += e;
        }
    double sum = 0.0;
    for (int l = 0; l < LANES; l++) sum += s[l];
    for (; j < V; j++) {
        double e = exp_poly_d((double)x[j] - mx);
        if (e_out) e_out[j] = (float)e;
        sum += e;
    }
    *mx_out = mx;
    return sum;
}

double cx_lse_row(const float *logits, int64_t V, float *mx, float *e)
{
    return lse_lanes(logits, V, mx, e);
}

double cx_nll_row(const float *logits, int64_t V, int32_t target)
{
    float mx;
    double sum = lse_lanes(logits, V, &mx, NULL);
    return -((double)logits[target] - mx - log(sum));
}
