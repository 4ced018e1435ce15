/* Composition scores, copying scores, virtual weights and composition circuits.
 *
 * Composition score of writer A into reader B (TransformerLens utils.composition_scores):
 *   ||W_OV^A R^B||_F / (||W_OV^A||_F ||R^B||_F),  R = W_Q W_K^T (Q), W_K W_Q^T (K), W_V W_O (V).
 * Computed without forming any d_model x d_model matrix: with QR factors
 * W_V^A = Q_V R_V,  ||W_OV^A Y||_F = ||R_V W_O^A Y||_F, and likewise on the reader side
 * (W_K = Q_K R_K gives ||X W_Q W_K^T||_F = ||X W_Q R_K^T||_F). Each factor [d_model, d_head]
 * is reduced to its k = min(d_model, d_head) core: for d_head <= d_model the thin QR
 * (Q_V [d_model, d_head] with orthonormal columns, R_V [d_head, d_head]); for d_head > d_model
 * the QR of the wide factor (Q_V [d_model, d_model] orthogonal, R_V [d_model, d_head] upper
 * trapezoidal). Either way Q_V^T Q_V = I, which is all the identities use: no pivoting and no
 * rank assumption, so rank-deficient factors (rank < k, zero or tiny diagonal in R) are exact
 * too. So every writer becomes a [k, d_model] block P_A, every reader a [d_model, k] block
 * Q_B, the scores of all pairs come from one stacked GEMM P·Q, and each score is
 * ||P_A Q_B||_F / (||P_A|| ||Q_B||). */
#include "factored.h"
#include "kernels.h"
#include "linalg.h"
#include "stored.h"
#include "rng.h"
#include "pool.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define OOM() cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory computing composition scores")

/* Sum of squares: blocks of 64 squares summed in float over 8 lanes (8 terms each: a relative
 * error of a few 1e-7, below the scores' own from the fp32 products), the blocks in double. A
 * fixed order the compiler vectorises: summing all in one double serialises on the add. */
static double frob2(const float *x, size_t n)
{
    double s = 0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        float p[8] = {0};
        for (size_t b = 0; b < 64; b += 8)
            for (int l = 0; l < 8; l++) p[l] += x[i + b + l] * x[i + b + l];
        s += (((double)p[0] + p[4]) + ((double)p[1] + p[5])) + (((double)p[2] + p[6]) + ((double)p[3] + p[7]));
    }
    for (; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* k = min(d_model, d_head): the width of every reduced factor. */
static int64_t core_dim(int64_t D, int64_t dh) { return dh < D ? dh : D; }

/* Both phases run on the pool as `slots` tasks (at most the thread count), each with its own
 * scratch allocated before the loop, claiming items (heads, then score tiles) from a counter.
 * Which slot computes an item does not change its bits: every item is computed by the same
 * calls on the same shapes whatever the thread count, and writes only its own outputs. */
typedef struct slots {
    float *scratch; /* per_slot floats per slot */
    int64_t per_slot, n;
    atomic_llong next;
    atomic_bool stop;
    pthread_mutex_t m;
    int64_t failed; /* the lowest failed item (its error is the one reported), or -1 */
    int rc;
    char msg[512];
} slots;

static int slots_init(slots *s, int64_t items, int64_t per_slot)
{
    int64_t t = circuits_get_num_threads();
    s->n = items < t ? items : t;
    if (s->n < 1) s->n = 1;
    s->per_slot = per_slot;
    s->scratch = cx_malloc((size_t)(s->n * per_slot) * sizeof *s->scratch);
    s->failed = -1;
    s->rc = CIRCUITS_OK;
    pthread_mutex_init(&s->m, NULL);
    return s->scratch ? CIRCUITS_OK : OOM();
}

static void slots_free(slots *s)
{
    cx_free(s->scratch);
    pthread_mutex_destroy(&s->m);
}

static void slot_fail(slots *s, int64_t item, int rc)
{
    pthread_mutex_lock(&s->m);
    if (s->failed < 0 || item < s->failed) {
        s->failed = item;
        s->rc = rc;
        snprintf(s->msg, sizeof s->msg, "%s", circuits_last_error()); /* this thread's message */
    }
    pthread_mutex_unlock(&s->m);
    atomic_store(&s->stop, true);
}

/* Runs fn(arg, item, scratch) for items [0, n) over s's slots; the lowest failed item's error,
 * re-raised on the calling thread. */
typedef int (*item_fn)(void *arg, int64_t item, float *scratch);
typedef struct slot_loop {
    slots *s;
    int64_t n;
    item_fn fn;
    void *arg;
} slot_loop;

static void slot_task(void *arg, int64_t begin, int64_t end)
{
    slot_loop *l = arg;
    for (int64_t slot = begin; slot < end; slot++) {
        float *scratch = l->s->scratch + slot * l->s->per_slot;
        while (!atomic_load(&l->s->stop)) {
            int64_t i = atomic_fetch_add(&l->s->next, 1);
            if (i >= l->n) break;
            int rc = l->fn(l->arg, i, scratch);
            if (rc) slot_fail(l->s, i, rc);
        }
    }
}

static int run_slots(slots *s, int64_t n, item_fn fn, void *arg)
{
    slot_loop l = {s, n, fn, arg};
    atomic_init(&s->next, 0);
    atomic_init(&s->stop, false);
    cx_parallel_for(s->n, 1, slot_task, &l);
    return s->rc ? cx_fail(s->rc, "%s", s->msg) : CIRCUITS_OK;
}

/* ---- phase 1: each head reduced to its [k, D] writer block P_A and/or [D, k] reader block Q_B ---- */

typedef struct heads_job {
    const circuits_model *m;
    int mode;
    int64_t D, dh, kc, LH;
    float *P;   /* [LH * kc, D], or NULL: no writer blocks */
    double *nP; /* [LH] */
    float *Q;   /* [D, LH * kc]: head-major columns */
    double *nQ; /* [LH] */
} heads_job;

/* Scratch of one slot in floats. */
static int64_t heads_scratch(int64_t D, int64_t dh) { return 2 * D * dh + core_dim(D, dh) * dh + cx_qr_work(D, dh); }

/* The reader block Q_B of head k of a mode, written into columns k kc.. of Q. */
static int reader_block(const heads_job *j, int64_t k, float *tmp)
{
    int64_t D = j->D, dh = j->dh, kc = j->kc, H = j->m->cfg.n_heads, h = k % H;
    const cx_layer_weights *L = &j->m->layers[k / H];
    float *X = tmp, *Y = tmp + D * dh, *R = Y + D * dh, *work = R + kc * dh; /* Y column-major [D, dh] */
    const circuits_tensor *x, *y;
    int64_t hx, hy;
    bool ty;
    if (j->mode == CIRCUITS_COMPOSITION_V) {
        /* R^B = W_V W_O: W_O = L Qo (LQ) with L = R(W_O^T)^T, so Q_B = W_V L = W_V R(W_O^T)^T */
        x = L->W_V, hx = cx_kv_head(L, h), y = L->W_O, hy = h, ty = false; /* W_O [dh, D] = (W_O^T) column-major */
    } else {
        /* Q: W_Q W_K^T -> W_Q R_K^T; K: W_K W_Q^T -> W_K R_Q^T */
        bool q = j->mode == CIRCUITS_COMPOSITION_Q;
        x = q ? L->W_Q : L->W_K, hx = q ? h : cx_kv_head(L, h);
        y = q ? L->W_K : L->W_Q, hy = q ? cx_kv_head(L, h) : h, ty = true; /* W^T [dh, D] = W column-major */
    }
    int rc;
    if ((rc = cx_head_matrix_of(j->m, X, x, hx, false)) || (rc = cx_head_matrix_of(j->m, Y, y, hy, ty)) ||
        (rc = cx_qr_r_cm(Y, D, dh, R, work)))
        return rc;
    float *Qk = j->Q + k * kc;
    int64_t ldq = j->LH * kc;
    if (kc == dh) { /* R square upper triangular: X R^T in place at half a GEMM's work */
        cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasTrans, CblasNonUnit, (blasint)D, (blasint)dh, 1.0f, R,
                    (blasint)dh, X, (blasint)dh);
        for (int64_t i = 0; i < D; i++) memcpy(Qk + i * ldq, X + i * dh, (size_t)dh * sizeof *X);
    } else {
        cx_sgemm(false, true, D, kc, dh, 1.0f, X, dh, R, dh, 0.0f, Qk, ldq); /* X R^T */
    }
    double s = 0;
    for (int64_t i = 0; i < D; i++) s += frob2(Qk + i * ldq, (size_t)kc);
    j->nQ[k] = sqrt(s);
    return CIRCUITS_OK;
}

/* The writer block P_A = R(W_V) W_O [k, D] of head k. */
static int writer_block(const heads_job *j, int64_t k, float *tmp)
{
    int64_t D = j->D, dh = j->dh, kc = j->kc, H = j->m->cfg.n_heads, h = k % H;
    const cx_layer_weights *L = &j->m->layers[k / H];
    float *X = tmp, *O = tmp + D * dh, *R = O + D * dh, *work = R + kc * dh; /* X column-major [D, dh] */
    float *P = j->P + k * kc * D;
    int rc;
    if ((rc = cx_head_matrix_of(j->m, X, L->W_V, cx_kv_head(L, h), true)) ||
        (rc = cx_qr_r_cm(X, D, dh, R, work)) ||
        (rc = cx_head_matrix_of(j->m, kc == dh ? P : O, L->W_O, h, false)))
        return rc;
    if (kc == dh) /* R square upper triangular: R W_O in place at half a GEMM's work */
        cblas_strmm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, (blasint)dh, (blasint)D, 1.0f,
                    R, (blasint)dh, P, (blasint)D);
    else
        cx_mm(P, R, false, O, false, kc, dh, D);
    j->nP[k] = sqrt(frob2(P, (size_t)(kc * D)));
    return CIRCUITS_OK;
}

/* Items: the readers [0, LH), then (with P) the writers [LH, 2 LH). */
static int head_item(void *arg, int64_t i, float *scratch)
{
    const heads_job *j = arg;
    return i < j->LH ? reader_block(j, i, scratch) : writer_block(j, i - j->LH, scratch);
}

static int reduce_heads(heads_job *j)
{
    const circuits_config *c = &j->m->cfg;
    j->D = c->d_model, j->dh = c->d_head, j->kc = core_dim(j->D, j->dh);
    j->LH = (int64_t)c->n_layers * c->n_heads;
    slots s;
    int rc = slots_init(&s, j->P ? 2 * j->LH : j->LH, heads_scratch(j->D, j->dh));
    if (!rc) rc = run_slots(&s, j->P ? 2 * j->LH : j->LH, head_item, j);
    slots_free(&s);
    return rc;
}

/* ---- phase 2: the scores, by tiles of C = P Q ---- */

/* Writers come in groups g = 0 .. n_groups - 1 of `per_group` writers (a layer's heads, or one
 * MLP), each writer wr rows of P; group g is scored against the reader heads of the later
 * layers, [(g + 1) H, LH). A tile is a block of whole writers of a group against a block of
 * whole readers, so each score is one tile's sum; the tiling depends only on the shapes. */
typedef struct scores_job {
    const float *P, *Q;
    const double *nP, *nQ;
    int64_t wr, kc, D, H, LH, per_group, n_groups;
    int64_t g0;             /* the first group's layer: P, nP start at writer g0 per_group */
    int64_t wa, tb;         /* writers, reader heads per tile */
    int64_t row_tiles, tiles_of_group0; /* row tiles per group; tiles of group 0 (later groups have fewer) */
    float *out;             /* out[a * LH + b] for writer a */
} scores_job;

/* A tile: whole writers, about TILE_ROWS rows, against whole readers, about TILE_COLS columns:
 * big enough for sgemm's full rate, and C stays 4 MB per slot even at 7B shapes. */
#define TILE_ROWS 1024
#define TILE_COLS 1024

static int64_t col_tiles(const scores_job *j, int64_t g)
{
    return (j->LH - (j->g0 + g + 1) * j->H + j->tb - 1) / j->tb;
}

static int score_tile(void *arg, int64_t t, float *C)
{
    const scores_job *j = arg;
    int64_t g = 0;
    while (t >= j->row_tiles * col_tiles(j, g)) t -= j->row_tiles * col_tiles(j, g++);
    int64_t ct = col_tiles(j, g), rt = t / ct, cb = t % ct;
    int64_t a0 = g * j->per_group + rt * j->wa, na = j->per_group - rt * j->wa; /* a0: in P's numbering */
    int64_t b0 = (j->g0 + g + 1) * j->H + cb * j->tb, nb = j->LH - b0, row = j->g0 * j->per_group + a0;
    if (na > j->wa) na = j->wa;
    if (nb > j->tb) nb = j->tb;
    int64_t wr = j->wr, kc = j->kc, N = nb * kc;
    cx_matmul_serial(C, N, j->P + a0 * wr * j->D, j->D, na * wr, j->D, N, j->Q + b0 * kc, j->LH * kc, 1);
    for (int64_t a = 0; a < na; a++)
        for (int64_t b = 0; b < nb; b++) {
            double s = 0;
            for (int64_t i = 0; i < wr; i++) s += frob2(C + (a * wr + i) * N + b * kc, (size_t)kc);
            j->out[(row + a) * j->LH + b0 + b] = (float)(sqrt(s) / (j->nP[a0 + a] * j->nQ[b0 + b]));
        }
    return CIRCUITS_OK;
}

static int all_scores(scores_job *j)
{
    j->wa = TILE_ROWS / j->wr, j->tb = TILE_COLS / j->kc;
    if (j->wa < 1) j->wa = 1;
    if (j->wa > j->per_group) j->wa = j->per_group;
    if (j->tb < 1) j->tb = 1;
    j->row_tiles = (j->per_group + j->wa - 1) / j->wa;
    int64_t n = 0;
    for (int64_t g = 0; g < j->n_groups; g++) n += j->row_tiles * col_tiles(j, g);
    if (!n) return CIRCUITS_OK;
    slots s;
    int rc = slots_init(&s, n, j->wa * j->wr * j->tb * j->kc);
    if (!rc) rc = run_slots(&s, n, score_tile, j);
    slots_free(&s);
    return rc;
}

static int check_mode(int mode)
{
    if (mode != CIRCUITS_COMPOSITION_Q && mode != CIRCUITS_COMPOSITION_K && mode != CIRCUITS_COMPOSITION_V)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "composition mode must be CIRCUITS_COMPOSITION_Q, _K or _V");
    return CIRCUITS_OK;
}

int circuits_model_composition_scores(const circuits_model *m, int32_t mode, float *out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_composition_scores: NULL argument");
    int rc = check_mode(mode);
    if (rc) return rc;
    const circuits_config *c = &m->cfg;
    int64_t L = c->n_layers, H = c->n_heads, D = c->d_model, LH = L * H, kc = core_dim(D, c->d_head);
    memset(out, 0, (size_t)(LH * LH) * sizeof *out);
    heads_job hj = {.m = m, .mode = mode};
    hj.P = cx_malloc((size_t)(LH * kc * D) * sizeof *hj.P), hj.Q = cx_malloc((size_t)(D * LH * kc) * sizeof *hj.Q);
    hj.nP = cx_malloc((size_t)LH * sizeof *hj.nP), hj.nQ = cx_malloc((size_t)LH * sizeof *hj.nQ);
    if (!hj.P || !hj.Q || !hj.nP || !hj.nQ) rc = OOM();
    if (!rc) rc = reduce_heads(&hj);
    /* Only layer(A) < layer(B) is scored (TransformerLens's mask). */
    scores_job sj = {.P = hj.P, .Q = hj.Q, .nP = hj.nP, .nQ = hj.nQ, .wr = kc, .kc = kc, .D = D, .H = H, .LH = LH,
                     .per_group = H, .n_groups = L - 1, .out = out};
    if (!rc) rc = all_scores(&sj);
    cx_free(hj.P);
    cx_free(hj.Q);
    cx_free(hj.nP);
    cx_free(hj.nQ);
    if (rc) memset(out, 0, (size_t)(LH * LH) * sizeof *out);
    return rc;
}

int circuits_model_mlp_composition_scores(const circuits_model *m, int32_t mode, float *out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_mlp_composition_scores: NULL argument");
    int rc = check_mode(mode);
    if (rc) return rc;
    const circuits_config *c = &m->cfg;
    if (c->attn_only) return cx_fail(CIRCUITS_E_UNSUPPORTED, "this model is attention-only: it has no MLPs");
    int64_t L = c->n_layers, H = c->n_heads, D = c->d_model, M = c->d_mlp, LH = L * H, kc = core_dim(D, c->d_head);
    int64_t wr = M < D ? M : D; /* W_out [M, D] = Q R: ||W_out Y|| = ||R Y||, R [min(M, D), D] */
    memset(out, 0, (size_t)(L * LH) * sizeof *out);
    float *P = cx_malloc((size_t)(wr * D) * sizeof *P), *W = cx_malloc((size_t)(M * D) * sizeof *W);
    heads_job hj = {.m = m, .mode = mode};
    hj.Q = cx_malloc((size_t)(D * LH * kc) * sizeof *hj.Q);
    hj.nQ = cx_malloc((size_t)LH * sizeof *hj.nQ);
    if (!P || !W || !hj.Q || !hj.nQ) rc = OOM();
    if (!rc) rc = reduce_heads(&hj);
    for (int64_t la = 0; la + 1 < L && !rc; la++) {
        if ((rc = cx_weight_dense_of(m, W, m->layers[la].W_out))) break;
        if (M >= D) {
            if ((rc = cx_qr_r(W, M, D, D, P))) break;
        } else {
            memcpy(P, W, (size_t)(M * D) * sizeof *P);
        }
        double nP = sqrt(frob2(P, (size_t)(wr * D)));
        scores_job sj = {.P = P, .Q = hj.Q, .nP = &nP, .nQ = hj.nQ, .wr = wr, .kc = kc, .D = D, .H = H, .LH = LH,
                         .per_group = 1, .n_groups = 1, .g0 = la, .out = out};
        rc = all_scores(&sj);
    }
    cx_free(P);
    cx_free(W);
    cx_free(hj.Q);
    cx_free(hj.nQ);
    if (rc) memset(out, 0, (size_t)(L * LH) * sizeof *out);
    return rc;
}

/* ---- the random baseline ---- */

static void gaussian(uint64_t *rng, float *x, size_t n) /* Box-Muller */
{
    for (size_t i = 0; i < n; i += 2) {
        double u1 = ((cx_splitmix64(rng) >> 11) + 1.0) / 9007199254740993.0,
               u2 = (cx_splitmix64(rng) >> 11) / 9007199254740992.0;
        double rad = sqrt(-2.0 * log(u1));
        x[i] = (float)(rad * cos(2 * M_PI * u2));
        if (i + 1 < n) x[i + 1] = (float)(rad * sin(2 * M_PI * u2));
    }
}

int circuits_composition_baseline(int64_t d_model, int64_t d_head, int64_t d_mlp, int64_t n_samples, uint64_t seed,
                                  float *mean, float *std)
{
    if (!mean) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_composition_baseline: mean is NULL");
    if (d_model < 1 || d_head < 1 || d_mlp < 0 || n_samples < 1 || d_model > (1 << 16) || d_head > (1 << 16) ||
        d_mlp > (1 << 18))
        return cx_fail(CIRCUITS_E_RANGE,
                       "circuits_composition_baseline: d_model %lld, d_head %lld, d_mlp %lld, n_samples %lld: need "
                       "1 <= d_model <= 65536, 1 <= d_head <= 65536, d_mlp >= 0 (at most 262144), n_samples >= 1",
                       (long long)d_model, (long long)d_head, (long long)d_mlp, (long long)n_samples);
    int64_t D = d_model, dh = d_head, kc = core_dim(D, dh), wr = d_mlp ? (d_mlp < D ? d_mlp : D) : kc,
            rows = d_mlp ? d_mlp : D;
    size_t big = (size_t)(rows > D ? rows : D) * (size_t)D;
    if ((size_t)(D * dh) > big) big = (size_t)(D * dh);
    float *X = cx_malloc(big * sizeof *X), *Y = cx_malloc(big * sizeof *Y),
          *R = cx_malloc((size_t)(D * (D > dh ? D : dh)) * sizeof *R);
    float *P = cx_malloc((size_t)(wr * D) * sizeof *P), *Q = cx_malloc((size_t)(D * kc) * sizeof *Q),
          *C = cx_malloc((size_t)(wr * kc) * sizeof *C);
    int rc = (!X || !Y || !R || !P || !Q || !C) ? cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory sampling the baseline") : 0;
    uint64_t g = seed;
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < n_samples && !rc; n++) {
        /* writer: OV = X Y (X [D, dh], Y [dh, D]) -> P = R(X) Y; or an MLP's W_out [d_mlp, D] */
        if (!d_mlp) {
            gaussian(&g, X, (size_t)(D * dh));
            gaussian(&g, Y, (size_t)(dh * D));
            if ((rc = cx_qr_r(X, D, dh, dh, R))) break; /* R [kc, dh] */
            cx_mm(P, R, false, Y, false, kc, dh, D);
        } else {
            gaussian(&g, X, (size_t)(d_mlp * D));
            if (d_mlp >= D) {
                if ((rc = cx_qr_r(X, d_mlp, D, D, P))) break;
            } else {
                memcpy(P, X, (size_t)(d_mlp * D) * sizeof *P);
            }
        }
        /* reader: X2 Y2^T (both [D, dh]) -> Q = X2 R(Y2)^T */
        gaussian(&g, X, (size_t)(D * dh));
        gaussian(&g, Y, (size_t)(D * dh));
        if ((rc = cx_qr_r(Y, D, dh, dh, R))) break;
        cx_mm(Q, X, false, R, true, D, dh, kc);
        cx_mm(C, P, false, Q, false, wr, D, kc);
        double s = sqrt(frob2(C, (size_t)(wr * kc)) / (frob2(P, (size_t)(wr * D)) * frob2(Q, (size_t)(D * kc))));
        s1 += s;
        s2 += s * s;
    }
    if (!rc) {
        *mean = (float)(s1 / (double)n_samples);
        if (std) {
            double var = s2 / (double)n_samples - (s1 / (double)n_samples) * (s1 / (double)n_samples);
            *std = (float)sqrt(var > 0 ? var : 0);
        }
    }
    cx_free(X);
    cx_free(Y);
    cx_free(R);
    cx_free(P);
    cx_free(Q);
    cx_free(C);
    return rc;
}

/* ---- copying scores ---- */

int circuits_model_copying_scores(const circuits_model *m, int32_t full, float *out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_copying_scores: NULL argument");
    const circuits_config *c = &m->cfg;
    int64_t L = c->n_layers, H = c->n_heads, D = c->d_model, dh = c->d_head;
    if (full && c->d_vocab != c->d_vocab_out)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "the full OV circuit needs d_vocab == d_vocab_out");
    int rc = CIRCUITS_OK;
    float *G = NULL, *Wv = cx_malloc((size_t)(D * dh) * sizeof *Wv), *Wo = cx_malloc((size_t)(dh * D) * sizeof *Wo);
    float *T = cx_malloc((size_t)(dh * D) * sizeof *T), *BA = cx_malloc((size_t)(dh * dh) * sizeof *BA);
    float *re = cx_malloc((size_t)dh * sizeof *re), *im = cx_malloc((size_t)dh * sizeof *im);
    if (!Wv || !Wo || !T || !BA || !re || !im) rc = OOM();
    if (!rc && full) {
        /* G = W_U W_E [D, D]: then B·A of the full OV circuit is W_O G W_V */
        const circuits_tensor *U = m->W_U, *E = m->W_E;
        int64_t V = c->d_vocab;
        float *Ec = cx_malloc((size_t)(V * D) * sizeof *Ec), *Uc = NULL;
        G = cx_malloc((size_t)(D * D) * sizeof *G);
        if (!Ec || !G) rc = OOM();
        if (!rc) rc = cx_weight_dense_of(m, Ec, E);
        if (!rc && cx_stored(m, U)) { /* kept in its stored dtype: read back [D, V] */
            if (!(Uc = cx_malloc((size_t)(D * c->d_vocab_out) * sizeof *Uc))) rc = OOM();
            if (!rc && !(rc = cx_weight_dense_of(m, Uc, U))) cx_mm(G, Uc, false, Ec, false, D, V, D);
        } else if (!rc) {
            cx_weight_times(G, U, Ec, D);
        }
        cx_free(Ec);
        cx_free(Uc);
    }
    for (int64_t k = 0; k < L * H && !rc; k++) {
        const cx_layer_weights *Lw = &m->layers[k / H];
        if ((rc = cx_head_matrix_of(m, Wv, Lw->W_V, cx_kv_head(Lw, k % H), false)) ||
            (rc = cx_head_matrix_of(m, Wo, Lw->W_O, k % H, false)))
            break;
        if (full) {
            cx_mm(T, Wo, false, G, false, dh, D, D);
            cx_mm(BA, T, false, Wv, false, dh, D, dh);
        } else {
            cx_mm(BA, Wo, false, Wv, false, dh, D, dh);
        }
        lapack_int info = LAPACKE_sgeev(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)dh, BA, (lapack_int)dh, re, im, NULL, 1,
                                        NULL, 1);
        if (info != 0) {
            char what[64];
            snprintf(what, sizeof what, "eigenvalues of L%lldH%lld", (long long)(k / H), (long long)(k % H));
            rc = cx_lapack_fail((int)info, what);
            break;
        }
        double sre = 0, sabs = 0;
        for (int64_t i = 0; i < dh; i++) {
            sre += re[i];
            sabs += hypot(re[i], im[i]);
        }
        out[k] = (float)(sre / sabs);
    }
    cx_free(G);
    cx_free(Wv);
    cx_free(Wo);
    cx_free(T);
    cx_free(BA);
    cx_free(re);
    cx_free(im);
    return rc;
}
