/* Weights kept in their stored dtype (load option keep_stored_dtype): which weights a cx_qmat
 * (model/quant.h) can hold, building them at load time, reading them back in TransformerLens's
 * layout, and reading them for the analyses (heads, products, dense copies).
 * File: model/stored.c. The products are run/qmatmul.c's. */
#ifndef CIRCUITS_STORED_H
#define CIRCUITS_STORED_H

#include "quant.h"
#include "safetensors.h"

/* The cx_qmat holding weight W of m (W points into m->weights), or NULL when W is an fp32 view. */
static inline const cx_qmat *cx_stored(const circuits_model *m, const circuits_tensor *W)
{
    if (!m->stored || !W) return NULL;
    const cx_qmat *q = &m->stored[W - m->weights];
    return q->data ? q : NULL;
}

/* out[N, n] (ld ldo) = in[N, K] (ld ldi) @ W + bias (may be NULL) for a 2-D weight W [K, n] of m
 * (W_in, W_gate, W_out, W_U): its fp32 view, or its stored matrix, whose n rows are W's columns.
 * The one product with a whole weight matrix the forward pass and the logit lens share. */
void cx_weight_linear(const circuits_model *m, float *out, int64_t ldo, const float *in, int64_t ldi, int64_t N,
                      const circuits_tensor *W, const float *bias);

/* dst[rows, cols] = every logical row of W, dequantized (split over the pool). */
void cx_qmat_rows(const cx_qmat *W, float *dst);

/* At load time, with keep_stored_dtype (m->stored is allocated by the first call): weight i of m,
 * of this kind and TransformerLens shape, is kept as stored tensor t when t is not F32 and its layout is one a
 * cx_qmat expresses: `map` (a cx_map, arch.h) and `part` say how the TL view is cut from t.
 * Then m->stored[i] is set, m->weights[i] gets the TL shape (contiguous strides) with data NULL
 * (name, layer, head_axis: the caller's), t is marked used and *kept is true. Any
 * other case (F32, GPT-2's Conv1D [in, out] or fused c_attn, a shape the config does not imply)
 * leaves *kept false: the caller converts or maps the tensor as without the option. */
int cx_stored_make(circuits_model *m, size_t i, int kind, int ndim, const int64_t *shape, int map, int part,
                   cx_st_tensor *t, bool *kept);

/* The analyses' dense helpers (analysis/linalg.h) on a weight that may be stored: the same
 * results from its fp32 view or its dequantized rows. cx_head_matrix_of: head h of W_Q, W_K,
 * W_V ([D, d_head]) or W_O ([d_head, D]), or its transpose (a stored W_O is dequantized a row
 * at a time: a head's columns are no whole blocks). cx_weight_times_of: C [rows, n] = W @ X for
 * W_E or W_pos [rows, D] and X [D, n] (Gemma's W_E scale applied). CIRCUITS_E_OUT_OF_MEMORY for
 * their scratch. (X @ W_U of a stored W_U is cx_qmatmul over its rows.) */
int cx_head_matrix_of(const circuits_model *m, float *dst, const circuits_tensor *W, int64_t h, bool transpose);
int cx_weight_times_of(const circuits_model *m, float *C, const circuits_tensor *W, const float *X, int64_t n);
/* dst = the 2-D weight W as a contiguous [rows, cols] copy (cx_weight_dense), or a kept one read
 * back (cx_qmat_read_weight). */
int cx_weight_dense_of(const circuits_model *m, float *dst, const circuits_tensor *W);

#endif
