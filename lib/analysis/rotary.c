/* The rotary QK circuit: the QK circuit of a rotary head WITH the rotation, per relative offset.
 * TransformerLens's model.QK is W_Q W_K^T and leaves the rotation out, but a rotary head's
 * score of a query at position i for a key at j is (x_i W_Q + b_Q) R_i ((x_j W_K + b_K) R_j)^T,
 * and rotations of the same planes compose: R_i R_j^T = R(i - j). So the bilinear form is
 * W_Q R(delta) W_K^T, delta = i - j, the same at every absolute position: one factored matrix
 * per offset, with A = W_Q R(delta) [d_model, d_head] (each row of W_Q rotated as the forward
 * rotates a query at position delta) and B = W_K^T [d_head, d_model]. */
#include "factored.h"
#include "linalg.h"
#include "rope.h"
#include "stored.h"

#include <math.h>
#include <string.h>

int circuits_model_rotary_qk(const circuits_model *m, int32_t layer, int32_t head, int64_t n_offsets,
                             circuits_factored **out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_rotary_qk: model and out must not be NULL");
    *out = NULL;
    int rc0 = cx_require_fp32_weights(m, "circuits_model_rotary_qk");
    if (rc0) return rc0;
    const circuits_config *c = &m->cfg;
    if (c->positional_embedding_type != CIRCUITS_POS_ROTARY)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "circuits_model_rotary_qk: the model is not rotary (use circuits_model_pos_qk for W_pos)");
    if (layer < 0 || layer >= c->n_layers || head < 0 || head >= c->n_heads)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_model_rotary_qk: head L%dH%d out of range for %d layers x %d heads",
                       layer, head, c->n_layers, c->n_heads);
    if (n_offsets < 1 || n_offsets > c->n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_model_rotary_qk: n_offsets %lld outside [1, n_ctx = %d]",
                       (long long)n_offsets, c->n_ctx);
    int64_t D = c->d_model, dh = c->d_head;
    int half = c->rotary_dim / 2;
    const cx_layer_weights *L = &m->layers[layer];
    circuits_factored *f;
    int rc = cx_factored_alloc(&f, n_offsets, D, dh, D);
    if (rc) return rc;
    f->n_lead = 1;
    f->lead[0] = n_offsets;
    double *inv = cx_malloc((size_t)(half > 0 ? half : 1) * sizeof *inv);
    if (!inv) {
        circuits_factored_free(f);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory building a rotary QK circuit");
    }
    circuits_config unscaled = *c;
    if (cx_rope_layer_unscaled(c, layer)) unscaled.rope_scaling = CIRCUITS_ROPE_NONE;
    cx_rope_inv_freq(&unscaled, inv);
    /* offset 0 holds W_Q unrotated and W_K^T; every other offset starts from those copies */
    cx_head_matrix(f->A, L->W_Q, head, false);                /* [D, dh] */
    cx_head_matrix(f->B, L->W_K, cx_kv_head(L, head), true);  /* W_K^T [dh, D] */
    for (int64_t d = 1; d < n_offsets; d++) {
        float *A = f->A + d * D * dh;
        memcpy(A, f->A, (size_t)(D * dh) * sizeof *A);
        memcpy(f->B + d * dh * D, f->B, (size_t)(dh * D) * sizeof *f->B);
        for (int i = 0; i < half; i++) {
            /* the angle in double (delta * inv_freq): the forward's per-position float32 angles
             * differ from it by about 1e-7 * position radians */
            double th = (double)d * inv[i], cs = cos(th), sn = sin(th);
            int ia, ib;
            cx_rope_pair(c, i, &ia, &ib);
            for (int64_t r = 0; r < D; r++) { /* as the forward rotates a row vector (cx_rope_rotate) */
                float a = A[r * dh + ia], b = A[r * dh + ib];
                A[r * dh + ia] = (float)(a * cs - b * sn);
                A[r * dh + ib] = (float)(b * cs + a * sn);
            }
        }
    }
    cx_free(inv);
    *out = f;
    return CIRCUITS_OK;
}
