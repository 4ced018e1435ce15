/* Weights kept in their stored dtype (load option keep_stored_dtype): which weights a cx_qmat
 * (model/quant.h) can hold, building them at load time, reading them back in TransformerLens's
 * layout, and the one check the code that reads fp32 weight data directly (the analyses) makes.
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

/* The index of the first weight of m held as a cx_qmat, or m->n_weights if none is. */
size_t cx_stored_first(const circuits_model *m);

/* At load time, with keep_stored_dtype (m->stored is allocated by the first call): weight i of m,
 * of this kind and TransformerLens shape, is kept as stored tensor t when t is not F32 and its layout is one a
 * cx_qmat expresses: `map` (a cx_map, arch.h) and `part` say how the TL view is cut from t.
 * Then m->stored[i] is set, m->weights[i] gets the TL shape (contiguous strides) with data NULL
 * (name, layer, head_axis: the caller's), t is marked used and *kept is true. Any
 * other case (F32, GPT-2's Conv1D [in, out] or fused c_attn, a shape the config does not imply)
 * leaves *kept false: the caller converts or maps the tensor as without the option. */
int cx_stored_make(circuits_model *m, size_t i, int kind, int ndim, const int64_t *shape, int map, int part,
                   cx_st_tensor *t, bool *kept);

/* For the code that reads weights' fp32 data directly (the analyses: circuits, composition,
 * rotary, residual-stream decompositions, ...): CIRCUITS_OK when every weight of m is an fp32
 * view, else CIRCUITS_E_UNSUPPORTED naming fn and the first stored weight. */
int cx_require_fp32_weights(const circuits_model *m, const char *fn);

#endif
