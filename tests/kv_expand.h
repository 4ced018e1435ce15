/* Grouped-query attention as plain attention: a loaded model's K/V weights [KV, ...] replaced
 * in memory by copies repeated to [n_heads, ...] (repeat_interleave over heads, as
 * TransformerLens's W_K / W_V properties), and put back. For tests that compare a GQA model
 * with the same model ungrouped (test_attention: the forward; test_circuits_gqa: the circuits). */
#ifndef CIRCUITS_TESTS_KV_EXPAND_H
#define CIRCUITS_TESTS_KV_EXPAND_H

#include <stdlib.h>

#include "internal.h"

/* A copy of K/V weights [KV, ...] repeated to [H, ...] (repeat_interleave over heads). */
static circuits_tensor *kv_expand(const circuits_tensor *w, int64_t group)
{
    circuits_tensor *t = calloc(1, sizeof *t);
    *t = *w;
    t->shape[0] = w->shape[0] * group;
    size_t per = 1;
    for (int d = 1; d < w->ndim; d++) per *= (size_t)w->shape[d];
    float *data = malloc(sizeof(float) * per * (size_t)t->shape[0]);
    for (int64_t h = 0; h < t->shape[0]; h++) {
        size_t i = 0;
        /* gathers head h / group through the strides (a view may be strided) */
        if (w->ndim == 3) {
            for (int64_t a = 0; a < w->shape[1]; a++)
                for (int64_t b = 0; b < w->shape[2]; b++)
                    data[(size_t)h * per + i++] =
                        w->data[(h / group) * w->strides[0] + a * w->strides[1] + b * w->strides[2]];
        } else {
            for (int64_t a = 0; a < w->shape[1]; a++)
                data[(size_t)h * per + i++] = w->data[(h / group) * w->strides[0] + a * w->strides[1]];
        }
    }
    t->data = data;
    cx_contiguous_strides(t->ndim, t->shape, t->strides);
    return t;
}

/* Replaces W_K, W_V, b_K, b_V of every layer by repeated copies and sets n_key_value_heads =
 * n_heads; returns the saved originals for kv_restore_model. */
static const circuits_tensor **kv_expand_model(circuits_model *m)
{
    int L = m->cfg.n_layers;
    int64_t group = m->cfg.n_heads / m->cfg.n_key_value_heads;
    const circuits_tensor **saved = malloc(sizeof *saved * (size_t)(4 * L));
    for (int l = 0; l < L; l++) {
        cx_layer_weights *w = &m->layers[l];
        const circuits_tensor **slots[4] = {&w->W_K, &w->W_V, &w->b_K, &w->b_V};
        for (int s = 0; s < 4; s++) {
            saved[4 * l + s] = *slots[s];
            *slots[s] = *slots[s] ? kv_expand(*slots[s], group) : NULL;
        }
    }
    m->cfg.n_key_value_heads = m->cfg.n_heads;
    return saved;
}

static void kv_restore_model(circuits_model *m, const circuits_tensor **saved, int32_t n_key_value_heads)
{
    for (int l = 0; l < m->cfg.n_layers; l++) {
        cx_layer_weights *w = &m->layers[l];
        const circuits_tensor **slots[4] = {&w->W_K, &w->W_V, &w->b_K, &w->b_V};
        for (int s = 0; s < 4; s++) {
            if (*slots[s]) {
                free((*slots[s])->data);
                free((circuits_tensor *)*slots[s]);
            }
            *slots[s] = saved[4 * l + s];
        }
    }
    m->cfg.n_key_value_heads = n_key_value_heads;
    free(saved);
}

#endif
