/* TransformerLens's weight processing (HookedTransformer.from_pretrained; TL 3.x
 * weight_processing.py), in the same order with the same automatic exceptions:
 *   fold_ln -> center_writing_weights -> center_unembed -> fold_value_biases -> refactor.
 * Exceptions of our own where TL's result computes another function: fold_ln of a gated MLP
 * after LN is refused, and an LN model's final_rms ln_final is folded as an RMSNorm.
 * Processed tensors get their own fp32 buffers (the originals may be read-only mappings);
 * untouched ones stay zero-copy views. All sums over d_model accumulate in double. */
#include "arch.h"
#include "factored.h"
#include "stored.h"

#include <math.h>
#include <string.h>

#define E1(t, i) ((t)->data[(i) * (t)->strides[0]])
#define E2(t, i, j) ((t)->data[(i) * (t)->strides[0] + (j) * (t)->strides[1]])
#define E3(t, i, j, k) ((t)->data[(i) * (t)->strides[0] + (j) * (t)->strides[1] + (k) * (t)->strides[2]])

/* Gives weight t a buffer of its own that processing may write. W_Q/W_K/W_V [H, D, dh] are
 * laid out as [D, H, dh] (strides [dh, H*dh, 1]) so the forward pass projects all heads with
 * one GEMM; everything else is contiguous. */
static int mutable(circuits_model *m, const circuits_tensor *ct)
{
    size_t idx = (size_t)(ct - m->weights);
    circuits_tensor *t = &m->weights[idx];
    if (cx_stored(m, t)) /* refused_step refuses each step first: this is the backstop */
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "weight processing cannot rewrite '%s', kept in its stored dtype", t->name);
    if (m->exclusive[idx]) return CIRCUITS_OK;
    const float *src = t->data;
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    float *buf = cx_malloc(n * sizeof *buf);
    if (!buf || cx_model_own(m, buf))
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory processing weight '%s'", t->name);
    int64_t st[4] = {0, 0, 0, 0}; /* entries past ndim stay 0, as in every other view */
    if (cx_weight_kinds[m->kind[idx]].flags & CX_WF_QKV) {
        st[0] = t->shape[2];
        st[1] = t->shape[0] * t->shape[2];
        st[2] = 1;
    } else {
        cx_contiguous_strides(t->ndim, t->shape, st);
    }
    int64_t sh[3] = {1, 1, 1}, os[3] = {0, 0, 0}, ns[3] = {0, 0, 0};
    for (int i = 0; i < t->ndim; i++) {
        sh[3 - t->ndim + i] = t->shape[i];
        os[3 - t->ndim + i] = t->strides[i];
        ns[3 - t->ndim + i] = st[i];
    }
    for (int64_t a = 0; a < sh[0]; a++)
        for (int64_t b = 0; b < sh[1]; b++)
            for (int64_t c = 0; c < sh[2]; c++)
                buf[a * ns[0] + b * ns[1] + c * ns[2]] = t->data[a * os[0] + b * os[1] + c * os[2]];
    t->data = buf;
    memcpy(t->strides, st, sizeof st);
    m->exclusive[idx] = 1;
    cx_model_release_source(m, src); /* the file's pages, once no other view reads them */
    return CIRCUITS_OK;
}

#define MUT(t) do { if ((rc = mutable(m, (t)))) return rc; } while (0)

/* W [H, D, dh] read after a LayerNorm (w, b [D]): b_W += b . W, W *= w, then centre over D.
 * After an RMSNorm (b NULL, !center): W *= w only (TL: fold_biases and center_weights off). */
static int fold_heads(circuits_model *m, const circuits_tensor *W, const circuits_tensor *bW, const circuits_tensor *w,
                      const circuits_tensor *b, bool center)
{
    int rc;
    MUT(W);
    if (b) MUT(bW);
    int64_t H = W->shape[0], D = W->shape[1], dh = W->shape[2];
    for (int64_t h = 0; h < H; h++)
        for (int64_t j = 0; j < dh; j++) {
            if (b) {
                double acc = 0;
                for (int64_t i = 0; i < D; i++) acc += (double)E1(b, i) * E3(W, h, i, j);
                E2(bW, h, j) += (float)acc;
            }
            double mean = 0;
            for (int64_t i = 0; i < D; i++) {
                E3(W, h, i, j) *= E1(w, i);
                mean += E3(W, h, i, j);
            }
            if (!center) continue;
            mean /= (double)D;
            for (int64_t i = 0; i < D; i++) E3(W, h, i, j) -= (float)mean;
        }
    return CIRCUITS_OK;
}

/* W [K, N] reading a LayerNorm over K (W_in, W_out after mlp.ln, W_U): b_W += b . W, W *= w,
 * centre over K. After an RMSNorm (b NULL, !center): W *= w only. */
static int fold_matrix(circuits_model *m, const circuits_tensor *W, const circuits_tensor *bW, const circuits_tensor *w,
                       const circuits_tensor *b, bool center)
{
    int rc;
    MUT(W);
    if (b) MUT(bW);
    int64_t K = W->shape[0], N = W->shape[1];
    for (int64_t j = 0; j < N; j++) {
        if (b) {
            double acc = 0;
            for (int64_t i = 0; i < K; i++) acc += (double)E1(b, i) * E2(W, i, j);
            E1(bW, j) += (float)acc;
        }
        double mean = 0;
        for (int64_t i = 0; i < K; i++) {
            E2(W, i, j) *= E1(w, i);
            mean += E2(W, i, j);
        }
        if (!center) continue;
        mean /= (double)K;
        for (int64_t i = 0; i < K; i++) E2(W, i, j) -= (float)mean;
    }
    return CIRCUITS_OK;
}

/* Drops the norm parameters from the weight list (the norms become LNPre or RMSPre). */
static void drop_ln_weights(circuits_model *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->n_weights; i++) {
        if (cx_weight_kinds[m->kind[i]].flags & CX_WF_LN) {
            cx_free((char *)m->weights[i].name);
            continue;
        }
        m->weights[k] = m->weights[i];
        m->exclusive[k] = m->exclusive[i];
        m->kind[k] = m->kind[i];
        if (m->stored) m->stored[k] = m->stored[i]; /* parallel to weights (keep_stored_dtype) */
        k++;
    }
    m->n_weights = k;
}

/* LN: weights and biases folded, the readers centred, LN -> LNPre. RMS: only the weights
 * (TL's fold_layer_norm with fold_biases and center_weights off), RMS -> RMSPre. */
static int fold_ln(circuits_model *m)
{
    const circuits_config *c = &m->cfg;
    bool ln = c->normalization_type == CIRCUITS_NORM_LN;
    int rc;
    for (int l = 0; l < c->n_layers; l++) {
        const cx_layer_weights *L = &m->layers[l];
        const circuits_tensor *b1 = ln ? L->ln1_b : NULL, *b2 = ln ? L->ln2_b : NULL;
        if ((rc = fold_heads(m, L->W_Q, L->b_Q, L->ln1_w, b1, ln)) || (rc = fold_heads(m, L->W_K, L->b_K, L->ln1_w, b1, ln)) ||
            (rc = fold_heads(m, L->W_V, L->b_V, L->ln1_w, b1, ln)))
            return rc;
        if (c->attn_only) continue;
        if ((rc = fold_matrix(m, L->W_in, L->b_in, L->ln2_w, b2, ln))) return rc;
        /* gated MLP: W_gate reads ln2 too (only under RMS: LN is refused in cx_process_weights) */
        if (c->gated_mlp && (rc = fold_matrix(m, L->W_gate, NULL, L->ln2_w, NULL, false))) return rc;
        /* solu_ln with RMS is refused at load (config.c) */
        if (ln && c->act_fn == CIRCUITS_ACT_SOLU_LN &&
            (rc = fold_matrix(m, L->W_out, L->b_out, L->mlp_ln_w, L->mlp_ln_b, true)))
            return rc;
    }
    /* final_rms: ln_final is an RMSNorm also in an LN model; folded as one (w only, no
     * centring: an RMSNorm sees the mean). TransformerLens 3.9 folds it as a LayerNorm
     * (centres W_U), which changes the log-probs (docs/differences.md). */
    bool final_ln = ln && !c->final_rms;
    if ((rc = fold_matrix(m, m->W_U, m->b_U, m->ln_final_w, final_ln ? m->ln_final_b : NULL, final_ln))) return rc;
    drop_ln_weights(m);
    cx_model_link(m);
    m->cfg.normalization_type = ln ? CIRCUITS_NORM_LNPRE : CIRCUITS_NORM_RMSPRE;
    return CIRCUITS_OK;
}

/* Subtracts from every row of W [rows, D] (or [H, dh, D]) its mean over the last axis. */
static int center_rows(circuits_model *m, const circuits_tensor *W)
{
    int rc;
    MUT(W);
    int64_t D = W->shape[W->ndim - 1], rows = 1;
    for (int i = 0; i < W->ndim - 1; i++) rows *= W->shape[i];
    int64_t inner = W->ndim == 3 ? W->shape[1] : rows;
    for (int64_t r = 0; r < rows; r++) {
        float *p = W->ndim == 3 ? &E3(W, r / inner, r % inner, 0) : &E2(W, r, 0);
        int64_t s = W->strides[W->ndim - 1];
        double mean = 0;
        for (int64_t j = 0; j < D; j++) mean += p[j * s];
        mean /= (double)D;
        for (int64_t j = 0; j < D; j++) p[j * s] -= (float)mean;
    }
    return CIRCUITS_OK;
}

static int center_vector(circuits_model *m, const circuits_tensor *b)
{
    int rc;
    MUT(b);
    int64_t n = b->shape[0];
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += E1(b, i);
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) E1(b, i) -= (float)mean;
    return CIRCUITS_OK;
}

static int center_writing_weights(circuits_model *m)
{
    const circuits_config *c = &m->cfg;
    int rc;
    if ((rc = center_rows(m, m->W_E))) return rc;
    if (c->positional_embedding_type == CIRCUITS_POS_STANDARD && (rc = center_rows(m, m->W_pos))) return rc;
    for (int l = 0; l < c->n_layers; l++) {
        const cx_layer_weights *L = &m->layers[l];
        if ((rc = center_rows(m, L->W_O)) || (rc = center_vector(m, L->b_O))) return rc;
        if (!c->attn_only && ((rc = center_rows(m, L->W_out)) || (rc = center_vector(m, L->b_out)))) return rc;
    }
    return CIRCUITS_OK;
}

static int center_unembed(circuits_model *m)
{
    int rc;
    if ((rc = center_rows(m, m->W_U))) return rc;
    return center_vector(m, m->b_U);
}

/* b_O += sum_h b_V[h / group] W_O[h]; b_V = 0 (attention patterns sum to 1). Grouped-query
 * attention: query head h reads K/V head h / group (TL's repeat_interleave). A W_O kept in its
 * stored dtype is only read: its row j (W_O[:, :, j], dequantized) at a time, the same sum. */
static int fold_value_bias(circuits_model *m, const cx_layer_weights *L)
{
    int rc;
    MUT(L->b_O);
    MUT(L->b_V);
    const circuits_tensor *W = L->W_O, *bV = L->b_V;
    int64_t H = W->shape[0], dh = W->shape[1], D = W->shape[2], KV = bV->shape[0], group = H / KV;
    const cx_qmat *q = cx_stored(m, W);
    float *row = q ? cx_malloc((size_t)(H * dh) * sizeof *row) : NULL;
    if (q && !row) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory folding the value biases");
    for (int64_t j = 0; j < D; j++) {
        double acc = 0;
        if (q) cx_qmat_row(q, j, row);
        for (int64_t h = 0; h < H; h++)
            for (int64_t d = 0; d < dh; d++)
                acc += (double)E2(bV, h / group, d) * (q ? row[h * dh + d] : E3(W, h, d, j));
        E1(L->b_O, j) += (float)acc;
    }
    cx_free(row);
    for (int64_t h = 0; h < KV; h++)
        for (int64_t d = 0; d < dh; d++) E2(bV, h, d) = 0.0f;
    return CIRCUITS_OK;
}

/* refactor_factored_attn_matrices: QK as the balanced SVD factors of [W_Q; b_Q][W_K; b_K]^T
 * (U sqrt S, V sqrt S), OV as W_V = U S, W_O = V^T. */
static int refactor(circuits_model *m)
{
    const circuits_config *c = &m->cfg;
    int64_t H = c->n_heads, D = c->d_model, dh = c->d_head, Dp = D + 1, k = dh < Dp ? dh : Dp;
    if (dh > D) return cx_fail(CIRCUITS_E_UNSUPPORTED, "refactor_factored_attn_matrices needs d_head <= d_model");
    /* TransformerLens refuses it too: rotated q . k is not q W_Q W_K^T k, it depends on the positions */
    if (c->positional_embedding_type == CIRCUITS_POS_ROTARY)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "refactor_factored_attn_matrices is not defined for rotary embeddings (the QK circuit depends "
                       "on the positions)");
    if (c->n_key_value_heads != c->n_heads)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "refactor_factored_attn_matrices with grouped-query attention (n_key_value_heads %d < n_heads "
                       "%d) is not supported",
                       c->n_key_value_heads, c->n_heads);
    size_t need = (size_t)(2 * Dp * dh + Dp * k + k + Dp * k);
    float *buf = cx_malloc(need * sizeof *buf);
    if (!buf) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory refactoring attention matrices");
    float *A = buf, *Bt = A + Dp * dh, *U = Bt + Dp * dh, *S = U + Dp * k, *V = S + k;
    int rc = CIRCUITS_OK;
    for (int l = 0; l < c->n_layers && !rc; l++) {
        const cx_layer_weights *L = &m->layers[l];
        if ((rc = mutable(m, L->W_Q)) || (rc = mutable(m, L->W_K)) || (rc = mutable(m, L->b_Q)) ||
            (rc = mutable(m, L->b_K)) || (rc = mutable(m, L->W_V)) || (rc = mutable(m, L->W_O)) ||
            (rc = fold_value_bias(m, L)))
            break;
        for (int64_t h = 0; h < H && !rc; h++) {
            /* A = [W_Q; b_Q] [D+1, dh], B = [W_K; b_K]^T [dh, D+1] */
            for (int64_t i = 0; i < D; i++)
                for (int64_t j = 0; j < dh; j++) {
                    A[i * dh + j] = E3(L->W_Q, h, i, j);
                    Bt[j * Dp + i] = E3(L->W_K, h, i, j);
                }
            for (int64_t j = 0; j < dh; j++) {
                A[D * dh + j] = E2(L->b_Q, h, j);
                Bt[j * Dp + D] = E2(L->b_K, h, j);
            }
            if ((rc = cx_factored_svd1(A, Bt, Dp, dh, Dp, U, S, V))) break;
            for (int64_t j = 0; j < k; j++) {
                float r = sqrtf(S[j]);
                for (int64_t i = 0; i < D; i++) {
                    E3(L->W_Q, h, i, j) = U[i * k + j] * r;
                    E3(L->W_K, h, i, j) = V[i * k + j] * r;
                }
                E2(L->b_Q, h, j) = U[D * k + j] * r;
                E2(L->b_K, h, j) = V[D * k + j] * r;
            }
            /* OV: W_V [D, dh], W_O [dh, D] */
            for (int64_t i = 0; i < D; i++)
                for (int64_t j = 0; j < dh; j++) A[i * dh + j] = E3(L->W_V, h, i, j);
            for (int64_t j = 0; j < dh; j++)
                for (int64_t i = 0; i < D; i++) Bt[j * D + i] = E3(L->W_O, h, j, i);
            if ((rc = cx_factored_svd1(A, Bt, D, dh, D, U, S, V))) break;
            for (int64_t j = 0; j < dh; j++)
                for (int64_t i = 0; i < D; i++) {
                    E3(L->W_V, h, i, j) = U[i * dh + j] * S[j];
                    E3(L->W_O, h, j, i) = V[i * dh + j];
                }
        }
    }
    cx_free(buf);
    return rc;
}

/* keep_stored_dtype: a step that would rewrite a weight matrix kept in its stored dtype is
 * refused by name (`kinds`: the cx_weight_kinds it rewrites; the rewritten fp32 matrix would
 * cost the memory the option saves, and requantizing it would change the weights). */
static int refused_step(const circuits_model *m, const char *step, uint32_t kinds)
{
    for (size_t i = 0; m->stored && i < m->n_weights; i++)
        if (m->stored[i].data && (kinds >> m->kind[i] & 1u))
            return cx_fail(CIRCUITS_E_UNSUPPORTED,
                           "%s would rewrite '%s', kept in its stored dtype %s (keep_stored_dtype): load with %s = 0, "
                           "or without keep_stored_dtype", step, m->weights[i].name,
                           circuits_dtype_name(cx_dtype_public(m->stored[i].dtype)), step);
    return CIRCUITS_OK;
}

#define KB(k) (1u << (k))

int cx_process_weights(circuits_model *m, const circuits_load_options *o)
{
    circuits_config *c = &m->cfg;
    bool fold = o->fold_ln, cw = o->center_writing_weights, cu = o->center_unembed, fvb = o->fold_value_biases,
         ref = o->refactor_factored_attn_matrices;
    /* from_pretrained's automatic exceptions */
    if (c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER) fold = cw = cu = false;
    /* softcap(logits + c) is not softcap(logits) + c: a soft-capped model keeps W_U's mean */
    if (c->output_logits_soft_cap > 0.0f) cu = false;
    if (c->normalization_type != CIRCUITS_NORM_LN && c->normalization_type != CIRCUITS_NORM_RMS)
        fold = false; /* nothing to fold (LNPre, RMSPre, none) */
    /* TransformerLens's GatedMLP adds b_in after act(pre) * pre_linear: ln2.b (a bias before
     * both products) has no parameter to fold into. TL 3.9 adds it to b_in and drops the
     * gate's share, which changes the function; refused instead */
    if (fold && c->gated_mlp && c->normalization_type == CIRCUITS_NORM_LN)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "fold_ln of a gated MLP after a LayerNorm is not supported (ln2.b has no bias to fold into: "
                       "b_in is added after the gate); load with fold_ln = 0");
    int rc;
    uint32_t done = 0;
    if ((fold && (rc = refused_step(m, "fold_ln", KB(CX_W_Q) | KB(CX_W_K) | KB(CX_W_V) | KB(CX_W_IN) | KB(CX_W_GATE) |
                                                      KB(CX_W_OUT) | KB(CX_W_U)))) ||
        (ref && (rc = refused_step(m, "refactor_factored_attn_matrices",
                                   KB(CX_W_Q) | KB(CX_W_K) | KB(CX_W_V) | KB(CX_W_O)))))
        return rc;
    if (fold) {
        if ((rc = fold_ln(m))) return rc;
        done |= CIRCUITS_PROCESSED_FOLD_LN;
    }
    /* centring relies on a LayerNorm reading (it removes the mean the LN removes anyway): TL
     * centres only LN / LNPre models, not RMS / RMSPre (which see the mean) nor none */
    if (c->normalization_type != CIRCUITS_NORM_LN && c->normalization_type != CIRCUITS_NORM_LNPRE) cw = false;
    /* nor with final_rms (TL's process_weights): ln_final, an RMSNorm, sees the mean */
    if (c->final_rms) cw = false;
    if (cw && (rc = refused_step(m, "center_writing_weights", KB(CX_W_EMBED) | KB(CX_W_O) | KB(CX_W_OUT)))) return rc;
    if (cu && (rc = refused_step(m, "center_unembed", KB(CX_W_U)))) return rc;
    if (cw) {
        if ((rc = center_writing_weights(m))) return rc;
        done |= CIRCUITS_PROCESSED_CENTER_WRITING_WEIGHTS;
    }
    if (cu) {
        if ((rc = center_unembed(m))) return rc;
        done |= CIRCUITS_PROCESSED_CENTER_UNEMBED;
    }
    if (fvb) {
        for (int l = 0; l < c->n_layers; l++) {
            if ((rc = fold_value_bias(m, &m->layers[l]))) return rc;
            if (cw && (rc = center_vector(m, m->layers[l].b_O))) return rc;
        }
        done |= CIRCUITS_PROCESSED_FOLD_VALUE_BIASES;
    }
    if (ref) {
        if ((rc = refactor(m))) return rc;
        done |= CIRCUITS_PROCESSED_REFACTOR_FACTORED_ATTN_MATRICES;
    }
    c->processing = done;
    return CIRCUITS_OK;
}
