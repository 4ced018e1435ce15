/* The public model object: config, weight views, lifetime. */
#include "arch.h"
#include "safetensors.h"
#include "stored.h"

#include <string.h>

void circuits_model_free(circuits_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_weights; i++) cx_free((char *)m->weights[i].name);
    cx_free(m->weights);
    cx_free(m->exclusive);
    cx_free(m->kind);
    for (size_t i = 0; i < m->n_owned; i++) cx_free(m->owned[i]);
    cx_free(m->owned);
    cx_free(m->layers);
    cx_free(m->stored);
    cx_free(m->row_maps);
    cx_st_close(m->files);
    circuits_tokenizer_free(m->tokenizer);
    for (size_t i = 0; i < m->n_src_files; i++) cx_free(m->src_files[i]);
    cx_free(m->src_files);
    cx_free(m->src_sha256);
    cx_free(m);
}

int circuits_model_config(const circuits_model *m, circuits_config *out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_config: NULL argument");
    static const size_t versions[] = {72, sizeof(circuits_config)}; /* 0.1, 0.4 */
    uint32_t size = out->size;
    int rc = cx_struct_size_check(size, versions, CX_COUNT(versions), "circuits_model_config", true);
    if (rc) return rc;
    if (size > sizeof *out) size = sizeof *out;
    memcpy((char *)out + sizeof(uint32_t), (const char *)&m->cfg + sizeof(uint32_t), size - sizeof(uint32_t));
    out->size = size;
    return CIRCUITS_OK;
}

int cx_model_own(circuits_model *m, void *p)
{
    if (m->n_owned == m->cap_owned) {
        size_t cap = m->cap_owned ? 2 * m->cap_owned : 16;
        void **o = cx_realloc(m->owned, cap * sizeof *o);
        if (!o) {
            cx_free(p);
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory loading the model");
        }
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return CIRCUITS_OK;
}

void cx_model_link(circuits_model *m)
{
    for (int k = 0; k < CX_W_COUNT; k++)
        if (!(cx_weight_kinds[k].flags & CX_WF_LAYER))
            *(const circuits_tensor **)((char *)m + cx_weight_kinds[k].slot) = NULL;
    memset(m->layers, 0, (size_t)m->cfg.n_layers * sizeof *m->layers);
    for (size_t i = 0; i < m->n_weights; i++) {
        const circuits_tensor *t = &m->weights[i];
        const cx_weight_info *w = &cx_weight_kinds[m->kind[i]];
        char *base = w->flags & CX_WF_LAYER ? (char *)&m->layers[t->layer] : (char *)m;
        *(const circuits_tensor **)(base + w->slot) = t;
    }
}

const circuits_tensor *cx_model_find_weight(const circuits_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_weights; i++)
        if (strcmp(m->weights[i].name, name) == 0) return &m->weights[i];
    return NULL;
}

/* *out = weight t's view; a weight kept in its stored dtype has no fp32 view: *out still gets
 * its name and shape (data NULL), and the call fails naming circuits_model_weight_read. */
static int weight_view(const circuits_model *m, const circuits_tensor *t, const char *fn, circuits_tensor *out)
{
    *out = *t;
    const cx_qmat *q = cx_stored(m, t);
    if (!q) return CIRCUITS_OK;
    return cx_fail(CIRCUITS_E_DTYPE,
                   "%s: '%s' is kept in its stored dtype %s (keep_stored_dtype) and has no fp32 view: read an fp32 "
                   "copy with circuits_model_weight_read", fn, t->name, circuits_dtype_name(cx_dtype_public(q->dtype)));
}

int circuits_model_weight(const circuits_model *m, const char *name, circuits_tensor *out)
{
    if (!m || !name || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_weight: NULL argument");
    const circuits_tensor *t = cx_model_find_weight(m, name);
    if (!t) {
        char example[96];
        cx_weight_format(example, sizeof example, cx_weight_kinds[CX_W_Q].name, 0);
        return cx_fail(CIRCUITS_E_NOT_FOUND, "no weight named '%s' (TransformerLens names, e.g. '%s', '%s')", name,
                       example, cx_weight_kinds[CX_W_EMBED].name);
    }
    return weight_view(m, t, "circuits_model_weight", out);
}

int circuits_model_weight_dtype(const circuits_model *m, const char *name, int32_t *dtype)
{
    if (!m || !name || !dtype) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_weight_dtype: NULL argument");
    circuits_tensor view;
    const circuits_tensor *t = cx_model_find_weight(m, name);
    if (!t) return circuits_model_weight(m, name, &view); /* its not-found message */
    size_t i = (size_t)(t - m->weights);
    *dtype = m->stored && m->stored[i].data ? cx_dtype_public(m->stored[i].dtype) : CIRCUITS_DTYPE_F32;
    return CIRCUITS_OK;
}

int circuits_model_weight_read(const circuits_model *m, const char *name, float *buf, size_t buf_len,
                               circuits_tensor *out)
{
    if (!m || !name || !buf) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_weight_read: NULL argument");
    circuits_tensor view;
    const circuits_tensor *t = cx_model_find_weight(m, name);
    if (!t) return circuits_model_weight(m, name, &view);
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
    if (buf_len < numel)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_model_weight_read: '%s' has %zu values, buf holds %zu", name, numel,
                       buf_len);
    size_t i = (size_t)(t - m->weights);
    if (m->stored && m->stored[i].data) {
        int rc = cx_qmat_read_weight(m, i, buf); /* dequantized into TransformerLens's layout */
        if (rc) return rc;
    } else {
        int64_t sh[4] = {1, 1, 1, 1}, st[4] = {0, 0, 0, 0};
        for (int d = 0; d < t->ndim; d++) {
            sh[4 - t->ndim + d] = t->shape[d];
            st[4 - t->ndim + d] = t->strides[d];
        }
        size_t k = 0;
        for (int64_t a = 0; a < sh[0]; a++)
            for (int64_t b = 0; b < sh[1]; b++)
                for (int64_t c = 0; c < sh[2]; c++)
                    for (int64_t d = 0; d < sh[3]; d++) buf[k++] = t->data[a * st[0] + b * st[1] + c * st[2] + d * st[3]];
    }
    if (out) {
        *out = *t;
        out->data = buf;
        cx_contiguous_strides(t->ndim, t->shape, out->strides);
    }
    return CIRCUITS_OK;
}

size_t circuits_model_weight_count(const circuits_model *m) { return m ? m->n_weights : 0; }

int circuits_model_weight_at(const circuits_model *m, size_t index, circuits_tensor *out)
{
    if (!m || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_weight_at: NULL argument");
    if (index >= m->n_weights)
        return cx_fail(CIRCUITS_E_RANGE, "weight index %zu out of range (model has %zu)", index, m->n_weights);
    return weight_view(m, &m->weights[index], "circuits_model_weight_at", out);
}

const circuits_tokenizer *circuits_model_tokenizer(const circuits_model *m) { return m ? m->tokenizer : NULL; }
