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

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define OOM() cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory computing composition scores")

static double frob2(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* k = min(d_model, d_head): the width of every reduced factor. */
static int64_t core_dim(int64_t D, int64_t dh) { return dh < D ? dh : D; }

/* The reader block Q_B [D, k] of one head for a mode (k = core_dim). Scratch: 3 * D * dh. */
static int reader_block(const cx_layer_weights *L, int64_t h, int mode, int64_t D, int64_t dh, float *Q, float *tmp)
{
    float *X = tmp, *Y = tmp + D * dh, *R = tmp + 2 * D * dh; /* R [k, dh] */
    int64_t k = core_dim(D, dh);
    int rc;
    if (mode == CIRCUITS_COMPOSITION_V) {
        /* R^B = W_V W_O: W_O = L Qo (LQ) with L = R(W_O^T)^T, so Q_B = W_V L */
        cx_head_matrix(X, L->W_V, cx_kv_head(L, h), false);
        cx_head_matrix(Y, L->W_O, h, true); /* W_O^T [D, dh] */
        if ((rc = cx_qr_r(Y, D, dh, dh, R))) return rc;
        cx_mm(Q, X, false, R, true, D, dh, k);
    } else {
        /* Q: W_Q W_K^T -> W_Q R_K^T; K: W_K W_Q^T -> W_K R_Q^T */
        bool q = mode == CIRCUITS_COMPOSITION_Q;
        cx_head_matrix(X, q ? L->W_Q : L->W_K, q ? h : cx_kv_head(L, h), false);
        cx_head_matrix(Y, q ? L->W_K : L->W_Q, q ? cx_kv_head(L, h) : h, false);
        if ((rc = cx_qr_r(Y, D, dh, dh, R))) return rc;
        cx_mm(Q, X, false, R, true, D, dh, k);
    }
    return CIRCUITS_OK;
}

/* The writer block P_A = R(W_V) W_O [k, D] of one head (k = core_dim). Scratch: 2 * D * dh + k * dh. */
static int writer_block(const cx_layer_weights *L, int64_t h, int64_t D, int64_t dh, float *P, float *tmp)
{
    int64_t k = core_dim(D, dh);
    float *X = tmp, *R = tmp + D * dh, *O = tmp + D * dh + k * dh; /* R [k, dh] */
    cx_head_matrix(X, L->W_V, cx_kv_head(L, h), false);
    int rc = cx_qr_r(X, D, dh, dh, R);
    if (rc) return rc;
    cx_head_matrix(O, L->W_O, h, false);
    cx_mm(P, R, false, O, false, k, dh, D);
    return CIRCUITS_OK;
}

/* out[a, b] (ld ldo) = ||P_a Q_b||_F / (nP[a] nQ[b]) for blocks of `wr` writer rows and dh
 * reader columns (dh = the reader core width k here): C = P [na*wr, D] @ Q [D, nb*dh] (row
 * stride ldq: Q may be the later columns of a wider matrix), in column chunks. */
static int block_scores(const float *P, const double *nP, int64_t na, int64_t wr, const float *Q, int64_t ldq,
                        const double *nQ, int64_t nb, int64_t dh, int64_t D, float *out, int64_t ldo)
{
    const int64_t chunk_heads = nb < 64 ? nb : 64;
    float *C = cx_malloc((size_t)(na * wr * chunk_heads * dh) * sizeof *C);
    if (!C) return OOM();
    for (int64_t b0 = 0; b0 < nb; b0 += chunk_heads) {
        int64_t cb = nb - b0 < chunk_heads ? nb - b0 : chunk_heads, N = cb * dh;
        cx_sgemm(false, false, (na * wr), N, D, 1.0f, P, D, Q + b0 * dh, ldq, 0.0f, C, N);
        for (int64_t a = 0; a < na; a++)
            for (int64_t b = 0; b < cb; b++) {
                double s = 0;
                for (int64_t i = 0; i < wr; i++)
                    for (int64_t j = 0; j < dh; j++) {
                        double v = C[(a * wr + i) * N + b * dh + j];
                        s += v * v;
                    }
                out[a * ldo + b0 + b] = (float)(sqrt(s) / (nP[a] * nQ[b0 + b]));
            }
    }
    cx_free(C);
    return CIRCUITS_OK;
}

static int check_mode(int mode)
{
    if (mode != CIRCUITS_COMPOSITION_Q && mode != CIRCUITS_COMPOSITION_K && mode != CIRCUITS_COMPOSITION_V)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "composition mode must be CIRCUITS_COMPOSITION_Q, _K or _V");
    return CIRCUITS_OK;
}

/* Reader blocks of every head: Q_all [D, L*H*kc] (head-major columns, kc = core_dim) and
 * their norms. */
static int all_readers(const circuits_model *m, int mode, float *Qall, double *nQ)
{
    const circuits_config *c = &m->cfg;
    int64_t D = c->d_model, dh = c->d_head, LH = (int64_t)c->n_layers * c->n_heads, kc = core_dim(D, dh);
    float *Q = cx_malloc((size_t)(D * kc) * sizeof *Q), *tmp = cx_malloc((size_t)(3 * D * dh) * sizeof *tmp);
    int rc = (!Q || !tmp) ? OOM() : CIRCUITS_OK;
    for (int64_t k = 0; k < LH && !rc; k++) {
        if ((rc = reader_block(&m->layers[k / c->n_heads], k % c->n_heads, mode, D, dh, Q, tmp))) break;
        nQ[k] = sqrt(frob2(Q, (size_t)(D * kc)));
        for (int64_t i = 0; i < D; i++) memcpy(Qall + i * LH * kc + k * kc, Q + i * kc, (size_t)kc * sizeof *Q);
    }
    cx_free(Q);
    cx_free(tmp);
    return rc;
}

int circuits_model_composition_scores(const circuits_model *m, int32_t mode, float *out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_composition_scores: NULL argument");
    int rc = check_mode(mode);
    if (rc || (rc = cx_require_fp32_weights(m, "circuits_model_composition_scores"))) return rc;
    const circuits_config *c = &m->cfg;
    int64_t L = c->n_layers, H = c->n_heads, D = c->d_model, dh = c->d_head, LH = L * H, kc = core_dim(D, dh);
    memset(out, 0, (size_t)(LH * LH) * sizeof *out);
    float *P = cx_malloc((size_t)(LH * kc * D) * sizeof *P), *Q = cx_malloc((size_t)(D * LH * kc) * sizeof *Q);
    float *tmp = cx_malloc((size_t)(2 * D * dh + kc * dh) * sizeof *tmp);
    double *nP = cx_malloc((size_t)LH * sizeof *nP), *nQ = cx_malloc((size_t)LH * sizeof *nQ);
    if (!P || !Q || !tmp || !nP || !nQ) rc = OOM();
    for (int64_t k = 0; k < LH && !rc; k++) {
        rc = writer_block(&m->layers[k / H], k % H, D, dh, P + k * kc * D, tmp);
        nP[k] = sqrt(frob2(P + k * kc * D, (size_t)(kc * D)));
    }
    if (!rc) rc = all_readers(m, mode, Q, nQ);
    /* Only layer(A) < layer(B) is scored (TransformerLens's mask); one GEMM per writer layer
     * against the reader columns of all later layers. */
    for (int64_t la = 0; la + 1 < L && !rc; la++) {
        int64_t first = (la + 1) * H, nb = LH - first;
        rc = block_scores(P + la * H * kc * D, nP + la * H, H, kc, Q + first * kc, LH * kc, nQ + first, nb, kc, D,
                          out + la * H * LH + first, LH);
    }
    cx_free(P);
    cx_free(Q);
    cx_free(tmp);
    cx_free(nP);
    cx_free(nQ);
    if (rc) memset(out, 0, (size_t)(LH * LH) * sizeof *out);
    return rc;
}

int circuits_model_mlp_composition_scores(const circuits_model *m, int32_t mode, float *out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_mlp_composition_scores: NULL argument");
    int rc = check_mode(mode);
    if (rc || (rc = cx_require_fp32_weights(m, "circuits_model_mlp_composition_scores"))) return rc;
    const circuits_config *c = &m->cfg;
    if (c->attn_only) return cx_fail(CIRCUITS_E_UNSUPPORTED, "this model is attention-only: it has no MLPs");
    int64_t L = c->n_layers, H = c->n_heads, D = c->d_model, M = c->d_mlp, LH = L * H, kc = core_dim(D, c->d_head);
    int64_t wr = M < D ? M : D; /* W_out [M, D] = Q R: ||W_out Y|| = ||R Y||, R [min(M, D), D] */
    memset(out, 0, (size_t)(L * LH) * sizeof *out);
    float *P = cx_malloc((size_t)(wr * D) * sizeof *P), *W = cx_malloc((size_t)(M * D) * sizeof *W);
    float *Q = cx_malloc((size_t)(D * LH * kc) * sizeof *Q);
    double *nQ = cx_malloc((size_t)LH * sizeof *nQ);
    if (!P || !W || !Q || !nQ) rc = OOM();
    if (!rc) rc = all_readers(m, mode, Q, nQ);
    for (int64_t la = 0; la + 1 < L && !rc; la++) {
        const circuits_tensor *Wo = m->layers[la].W_out;
        cx_weight_dense(W, Wo);
        if (M >= D) {
            if ((rc = cx_qr_r(W, M, D, D, P))) break;
        } else {
            memcpy(P, W, (size_t)(M * D) * sizeof *P);
        }
        double nP = sqrt(frob2(P, (size_t)(wr * D)));
        int64_t first = (la + 1) * H, nb = LH - first;
        rc = block_scores(P, &nP, 1, wr, Q + first * kc, LH * kc, nQ + first, nb, kc, D, out + la * LH + first, LH);
    }
    cx_free(P);
    cx_free(W);
    cx_free(Q);
    cx_free(nQ);
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
    if (cx_require_fp32_weights(m, "circuits_model_copying_scores")) return CIRCUITS_E_UNSUPPORTED;
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
        float *Ec = cx_malloc((size_t)(V * D) * sizeof *Ec);
        G = cx_malloc((size_t)(D * D) * sizeof *G);
        if (!Ec || !G) rc = OOM();
        else {
            cx_weight_dense(Ec, E);
            cx_weight_times(G, U, Ec, D);
        }
        cx_free(Ec);
    }
    for (int64_t k = 0; k < L * H && !rc; k++) {
        const cx_layer_weights *Lw = &m->layers[k / H];
        cx_head_matrix(Wv, Lw->W_V, cx_kv_head(Lw, k % H), false);
        cx_head_matrix(Wo, Lw->W_O, k % H, false);
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
