/* The circuits of a model ("A Mathematical Framework for Transformer Circuits"), in
 * TransformerLens's conventions: row vectors, x @ W, so a head reads x W_Q and writes z W_O.
 *   OV = W_V W_O, QK = W_Q W_K^T                          [d_model, d_model], rank d_head
 *   full OV = W_E W_V W_O W_U, full QK = W_E W_Q W_K^T W_E^T  [d_vocab, d_vocab]
 * Everything is returned as factored matrices through the small inner dimension. */
#include "factored.h"
#include "kernels.h"
#include "linalg.h"
#include "stored.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Which heads a (layer, head) selection covers; -1 means all. */
static int select_heads(const circuits_model *m, int32_t layer, int32_t head, int64_t *l0, int64_t *nl, int64_t *h0,
                        int64_t *nh)
{
    const circuits_config *c = &m->cfg;
    if (layer < -1 || layer >= c->n_layers)
        return cx_fail(CIRCUITS_E_RANGE, "layer %d out of range (model has %d; -1 for all)", layer, c->n_layers);
    if (head < -1 || head >= c->n_heads)
        return cx_fail(CIRCUITS_E_RANGE, "head %d out of range (model has %d; -1 for all)", head, c->n_heads);
    *l0 = layer < 0 ? 0 : layer;
    *nl = layer < 0 ? c->n_layers : 1;
    *h0 = head < 0 ? 0 : head;
    *nh = head < 0 ? c->n_heads : 1;
    return CIRCUITS_OK;
}

static void set_lead(circuits_factored *f, int32_t layer, int32_t head, int64_t nl, int64_t nh)
{
    if (layer < 0 && head < 0) {
        f->n_lead = 2;
        f->lead[0] = nl;
        f->lead[1] = nh;
    } else if (layer < 0 || head < 0) {
        f->n_lead = 1;
        f->lead[0] = layer < 0 ? nl : nh;
    } else {
        f->n_lead = 0;
    }
}

/* C [n, cols] = X [n, D] @ W where W is a strided [D, cols] weight (W_U) — via its transpose. */
static void times_weight(float *C, const float *X, const circuits_tensor *W, int64_t n)
{
    int64_t K = W->shape[0], N = W->shape[1];
    bool nt = W->strides[1] == 1 && W->strides[0] >= N, tr = W->strides[0] == 1 && W->strides[1] >= K;
    if (nt || tr)
        cx_sgemm(false, !nt, n, N, K, 1.0f, X, K, W->data, nt ? W->strides[0] : W->strides[1], 0.0f, C, N);
    else
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += (double)X[i * K + k] * W->data[k * W->strides[0] + j * W->strides[1]];
                C[i * N + j] = (float)s;
            }
}

typedef enum which { OV, QK, FULL_OV, FULL_QK, POS_QK } which;

static int build(const circuits_model *m, int32_t layer, int32_t head, which w, circuits_factored **out)
{
    static const char *const fn[] = {"circuits_model_ov", "circuits_model_qk", "circuits_model_full_ov",
                                     "circuits_model_full_qk", "circuits_model_pos_qk"};
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: model and out must not be NULL", fn[w]);
    *out = NULL;
    int64_t l0 = 0, nl = 0, h0 = 0, nh = 0;
    int rc = select_heads(m, layer, head, &l0, &nl, &h0, &nh);
    if (rc || (rc = cx_require_fp32_weights(m, fn[w]))) return rc;
    const circuits_config *c = &m->cfg;
    if (w == POS_QK && !m->W_pos) /* TransformerLens has no pos_embed either */
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: a rotary model has no W_pos (its positions enter as rotations)",
                       fn[w]);
    int64_t D = c->d_model, dh = c->d_head, V = c->d_vocab, Vo = c->d_vocab_out, P = c->n_ctx;
    int64_t l = (w == OV || w == QK) ? D : w == POS_QK ? P : V;
    int64_t r = (w == OV || w == QK) ? D : w == POS_QK ? P : w == FULL_OV ? Vo : V;
    circuits_factored *f;
    if ((rc = cx_factored_alloc(&f, nl * nh, l, dh, r))) return rc;
    set_lead(f, layer, head, nl, nh);
    float *a = cx_malloc((size_t)(D * dh) * sizeof *a), *b = cx_malloc((size_t)(D * dh) * sizeof *b);
    if (!a || !b) {
        cx_free(a);
        cx_free(b);
        circuits_factored_free(f);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory building a circuit");
    }
    for (int64_t i = 0; i < nl; i++)
        for (int64_t j = 0; j < nh; j++) {
            const cx_layer_weights *L = &m->layers[l0 + i];
            int64_t h = h0 + j, k = i * nh + j;
            float *A = f->A + k * l * dh, *B = f->B + k * dh * r;
            bool ov = w == OV || w == FULL_OV;
            cx_head_matrix(a, ov ? L->W_V : L->W_Q, ov ? cx_kv_head(L, h) : h, false); /* [D, dh] */
            cx_head_matrix(b, ov ? L->W_O : L->W_K, ov ? h : cx_kv_head(L, h), !ov); /* W_O [dh, D] or W_K^T */
            if (w == OV || w == QK) {
                memcpy(A, a, (size_t)(D * dh) * sizeof *A);
                memcpy(B, b, (size_t)(dh * D) * sizeof *B);
            } else if (w == FULL_OV) {
                cx_weight_times(A, m->W_E, a, dh);            /* W_E W_V      [V, dh] */
                times_weight(B, b, m->W_U, dh);            /* W_O W_U      [dh, V] */
            } else {
                const circuits_tensor *E = w == POS_QK ? m->W_pos : m->W_E;
                cx_weight_times(A, E, a, dh);                 /* E W_Q        [V, dh] */
                /* W_K^T E^T = (E W_K)^T */
                float *t = cx_malloc((size_t)(l * dh) * sizeof *t);
                float *wk = cx_malloc((size_t)(D * dh) * sizeof *wk);
                if (!t || !wk) {
                    cx_free(t);
                    cx_free(wk);
                    cx_free(a);
                    cx_free(b);
                    circuits_factored_free(f);
                    return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory building a circuit");
                }
                cx_head_matrix(wk, L->W_K, cx_kv_head(L, h), false);
                cx_weight_times(t, E, wk, dh);
                for (int64_t p = 0; p < l; p++)
                    for (int64_t q = 0; q < dh; q++) B[q * l + p] = t[p * dh + q];
                cx_free(t);
                cx_free(wk);
            }
        }
    cx_free(a);
    cx_free(b);
    *out = f;
    return CIRCUITS_OK;
}

int circuits_model_ov(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out)
{
    return build(m, layer, head, OV, out);
}
int circuits_model_qk(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out)
{
    return build(m, layer, head, QK, out);
}
int circuits_model_full_ov(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out)
{
    return build(m, layer, head, FULL_OV, out);
}
int circuits_model_full_qk(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out)
{
    return build(m, layer, head, FULL_QK, out);
}
int circuits_model_pos_qk(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out)
{
    return build(m, layer, head, POS_QK, out);
}

/* ---- composition circuits, virtual heads, virtual weights ---- */

/* A [rows, D] = E (strided [rows, D]) copy; used for W_E and W_pos. */
static int dense_weight(const circuits_tensor *W, float **out)
{
    int64_t R = W->shape[0], C = W->shape[1];
    float *d = cx_malloc((size_t)(R * C) * sizeof *d);
    if (!d) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory building a circuit");
    cx_weight_dense(d, W);
    *out = d;
    return CIRCUITS_OK;
}

int circuits_model_composition_circuit(const circuits_model *m, int32_t mode, int32_t layer_a, int32_t head_a,
                                       int32_t layer_b, int32_t head_b, circuits_factored **out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_composition_circuit: NULL argument");
    *out = NULL;
    int rc0 = cx_require_fp32_weights(m, "circuits_model_composition_circuit");
    if (rc0) return rc0;
    const circuits_config *c = &m->cfg;
    if (mode != CIRCUITS_COMPOSITION_Q && mode != CIRCUITS_COMPOSITION_K && mode != CIRCUITS_COMPOSITION_V)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "composition mode must be CIRCUITS_COMPOSITION_Q, _K or _V");
    if (layer_a < 0 || layer_a >= c->n_layers || layer_b < 0 || layer_b >= c->n_layers || head_a < 0 ||
        head_a >= c->n_heads || head_b < 0 || head_b >= c->n_heads)
        return cx_fail(CIRCUITS_E_RANGE, "heads L%dH%d, L%dH%d: out of range for %d layers x %d heads", layer_a, head_a,
                       layer_b, head_b, c->n_layers, c->n_heads);
    int64_t D = c->d_model, dh = c->d_head, V = c->d_vocab, r = mode == CIRCUITS_COMPOSITION_V ? c->d_vocab_out : V;
    const cx_layer_weights *A = &m->layers[layer_a], *B = &m->layers[layer_b];
    size_t need = (size_t)(6 * D * dh + 2 * dh * dh + 2 * V * dh);
    float *buf = cx_malloc(need * sizeof *buf), *E = NULL;
    circuits_factored *f = NULL;
    int rc = buf ? dense_weight(m->W_E, &E) : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory building a circuit");
    if (!rc) rc = cx_factored_alloc(&f, 1, V, dh, r);
    if (!rc) {
        float *VA = buf, *OA = VA + D * dh, *QB = OA + dh * D, *KB = QB + D * dh, *VB = KB + D * dh, *OB = VB + D * dh;
        float *C1 = OB + dh * D, *C2 = C1 + dh * dh, *T = C2 + dh * dh, *T2 = T + V * dh;
        cx_head_matrix(VA, A->W_V, cx_kv_head(A, head_a), false);
        cx_head_matrix(OA, A->W_O, head_a, false);
        cx_head_matrix(QB, B->W_Q, head_b, false);
        cx_head_matrix(KB, B->W_K, cx_kv_head(B, head_b), false);
        cx_head_matrix(VB, B->W_V, cx_kv_head(B, head_b), false);
        cx_head_matrix(OB, B->W_O, head_b, false);
        cx_mm(T, E, false, VA, false, V, D, dh); /* T = W_E W_V^A [V, dh] */
        if (mode == CIRCUITS_COMPOSITION_K) {
            /* W_E W_Q^B . (W_E W_V^A W_O^A W_K^B)^T */
            cx_mm(f->A, E, false, QB, false, V, D, dh);
            cx_mm(C1, OA, false, KB, false, dh, D, dh);
            cx_mm(T2, T, false, C1, false, V, dh, dh);
            for (int64_t i = 0; i < V; i++)
                for (int64_t j = 0; j < dh; j++) f->B[j * V + i] = T2[i * dh + j];
        } else if (mode == CIRCUITS_COMPOSITION_Q) {
            /* (W_E W_V^A W_O^A W_Q^B) . (W_E W_K^B)^T */
            cx_mm(C1, OA, false, QB, false, dh, D, dh);
            cx_mm(f->A, T, false, C1, false, V, dh, dh);
            cx_mm(T2, E, false, KB, false, V, D, dh);
            for (int64_t i = 0; i < V; i++)
                for (int64_t j = 0; j < dh; j++) f->B[j * V + i] = T2[i * dh + j];
        } else {
            /* (W_E W_V^A W_O^A W_V^B) . (W_O^B W_U) */
            cx_mm(C1, OA, false, VB, false, dh, D, dh);
            cx_mm(f->A, T, false, C1, false, V, dh, dh);
            times_weight(f->B, OB, m->W_U, dh);
        }
        (void)C2;
    }
    cx_free(buf);
    cx_free(E);
    if (rc) {
        circuits_factored_free(f);
        return rc;
    }
    *out = f;
    return CIRCUITS_OK;
}

int circuits_model_virtual_ov(const circuits_model *m, int32_t layer_a, int32_t head_a, int32_t layer_b, int32_t head_b,
                              circuits_factored **out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_virtual_ov: NULL argument");
    *out = NULL;
    int rc0 = cx_require_fp32_weights(m, "circuits_model_virtual_ov");
    if (rc0) return rc0;
    const circuits_config *c = &m->cfg;
    if (layer_a < 0 || layer_a >= c->n_layers || layer_b < 0 || layer_b >= c->n_layers || head_a < 0 ||
        head_a >= c->n_heads || head_b < 0 || head_b >= c->n_heads)
        return cx_fail(CIRCUITS_E_RANGE, "heads L%dH%d, L%dH%d: out of range for %d layers x %d heads", layer_a, head_a,
                       layer_b, head_b, c->n_layers, c->n_heads);
    int64_t D = c->d_model, dh = c->d_head;
    circuits_factored *f;
    int rc = cx_factored_alloc(&f, 1, D, dh, D);
    if (rc) return rc;
    float *buf = cx_malloc((size_t)(3 * D * dh + dh * dh) * sizeof *buf);
    if (!buf) {
        circuits_factored_free(f);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory building a virtual head");
    }
    float *OA = buf, *VB = OA + dh * D, *OB = VB + D * dh, *C = OB + dh * D;
    /* OV^A OV^B = W_V^A . (W_O^A W_V^B W_O^B) */
    cx_head_matrix(f->A, m->layers[layer_a].W_V, cx_kv_head(&m->layers[layer_a], head_a), false);
    cx_head_matrix(OA, m->layers[layer_a].W_O, head_a, false);
    cx_head_matrix(VB, m->layers[layer_b].W_V, cx_kv_head(&m->layers[layer_b], head_b), false);
    cx_head_matrix(OB, m->layers[layer_b].W_O, head_b, false);
    cx_mm(C, OA, false, VB, false, dh, D, dh);
    cx_mm(f->B, C, false, OB, false, dh, dh, D);
    cx_free(buf);
    *out = f;
    return CIRCUITS_OK;
}

/* The matrix through which a writer puts its output into the residual stream, [rows, D]. */
static int writer_matrix(const circuits_model *m, int32_t kind, int32_t layer, int32_t head, float **out, int64_t *rows)
{
    const circuits_config *c = &m->cfg;
    bool per_layer = kind == CIRCUITS_WRITER_HEAD || kind == CIRCUITS_WRITER_MLP;
    if (per_layer && (layer < 0 || layer >= c->n_layers))
        return cx_fail(CIRCUITS_E_RANGE, "writer layer %d out of range (model has %d)", layer, c->n_layers);
    if (kind == CIRCUITS_WRITER_HEAD && (head < 0 || head >= c->n_heads))
        return cx_fail(CIRCUITS_E_RANGE, "writer head %d out of range (model has %d)", head, c->n_heads);
    if (kind == CIRCUITS_WRITER_MLP && c->attn_only)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "CIRCUITS_WRITER_MLP: the model is attention-only, it has no MLPs");
    if (kind == CIRCUITS_WRITER_POS_EMBED && !m->W_pos)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "CIRCUITS_WRITER_POS_EMBED: a rotary model has no W_pos");
    const circuits_tensor *W = kind == CIRCUITS_WRITER_EMBED ? m->W_E : kind == CIRCUITS_WRITER_POS_EMBED ? m->W_pos
                               : kind == CIRCUITS_WRITER_MLP ? m->layers[layer].W_out : NULL;
    if (kind == CIRCUITS_WRITER_HEAD) {
        *rows = c->d_head;
        *out = cx_malloc((size_t)(c->d_head * c->d_model) * sizeof **out);
        if (!*out) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory copying the writer's W_O");
        cx_head_matrix(*out, m->layers[layer].W_O, head, false);
        return CIRCUITS_OK;
    }
    if (!W) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "unknown writer kind %d", kind);
    *rows = W->shape[0];
    return dense_weight(W, out);
}

/* The matrix through which a reader reads the residual stream, [D, cols]. */
static int reader_matrix(const circuits_model *m, int32_t kind, int32_t layer, int32_t head, float **out, int64_t *cols)
{
    const circuits_config *c = &m->cfg;
    int64_t D = c->d_model;
    if (kind == CIRCUITS_READER_UNEMBED) {
        const circuits_tensor *U = m->W_U;
        *cols = U->shape[1];
        return dense_weight(U, out);
    }
    if (layer < 0 || layer >= c->n_layers) return cx_fail(CIRCUITS_E_RANGE, "reader layer %d out of range (model has %d)", layer,
                                                               c->n_layers);
    const cx_layer_weights *L = &m->layers[layer];
    if (kind == CIRCUITS_READER_MLP) {
        if (c->attn_only)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "CIRCUITS_READER_MLP: the model is attention-only, it has no MLPs");
        *cols = c->d_mlp;
        return dense_weight(L->W_in, out);
    }
    if (kind != CIRCUITS_READER_Q && kind != CIRCUITS_READER_K && kind != CIRCUITS_READER_V)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "unknown reader kind %d", kind);
    if (head < 0 || head >= c->n_heads) return cx_fail(CIRCUITS_E_RANGE, "reader head %d out of range (model has %d)", head, c->n_heads);
    *cols = c->d_head;
    *out = cx_malloc((size_t)(D * c->d_head) * sizeof **out);
    if (!*out) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory copying the reader's weight");
    cx_head_matrix(*out, kind == CIRCUITS_READER_Q ? L->W_Q : kind == CIRCUITS_READER_K ? L->W_K : L->W_V,
                   kind == CIRCUITS_READER_Q ? head : cx_kv_head(L, head), false);
    return CIRCUITS_OK;
}

int circuits_model_virtual_weights(const circuits_model *m, int32_t writer, int32_t writer_layer, int32_t writer_head,
                                   int32_t reader, int32_t reader_layer, int32_t reader_head, circuits_factored **out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_virtual_weights: NULL argument");
    *out = NULL;
    float *W = NULL, *R = NULL;
    int64_t rows = 0, cols = 0, D = m->cfg.d_model;
    int rc = cx_require_fp32_weights(m, "circuits_model_virtual_weights");
    if (rc) return rc;
    rc = writer_matrix(m, writer, writer_layer, writer_head, &W, &rows);
    if (!rc) rc = reader_matrix(m, reader, reader_layer, reader_head, &R, &cols);
    circuits_factored *f = NULL;
    if (!rc) rc = cx_factored_alloc(&f, 1, rows, D, cols);
    if (!rc) {
        /* virtual weights = W_write · W_read, kept factored through d_model */
        memcpy(f->A, W, (size_t)(rows * D) * sizeof *W);
        memcpy(f->B, R, (size_t)(D * cols) * sizeof *R);
        *out = f;
    }
    cx_free(W);
    cx_free(R);
    return rc;
}
