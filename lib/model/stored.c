/* Weights kept in their stored dtype (stored.h). A cx_qmat's logical rows are nn.Linear's
 * [out, in] rows (GGUF's ne0 = in), so it expresses every layout whose contracted dimension runs
 * along the stored rows:
 *   W_E [d_vocab, d_model]          stored as is (CX_MAP_SAME; Gemma's scale at lookup time)
 *   W_Q/W_K/W_V [n, d_model, d_head]  q/k/v_proj [n·d_head, d_model] (CX_MAP_PROJ_HEADS); GGUF's
 *                                   permuted q/k rows and GPT-NeoX's interleaved query_key_value
 *                                   through a row map; GGUF's fused attn_qkv [Q; K; V] (GPT-2,
 *                                   GPT-NeoX) from the part's first row
 *   W_O [n, d_head, d_model]        o_proj [d_model, n·d_head] (CX_MAP_OUT_HEADS)
 *   W_in, W_gate, W_out, W_U        nn.Linear weights stored transposed (CX_MAP_TRANSPOSE)
 * GPT-2's Conv1D weights ([in, out]: the contracted dimension runs down the columns) and
 * TransformerLens-layout files (W_Q [n, d_model, d_head] likewise) are not expressible; those
 * weights are converted to fp32 as without keep_stored_dtype. F32 tensors stay zero-copy views. */
#include "stored.h"
#include "arch.h"
#include "kernels.h"
#include "pool.h"

#include <math.h>
#include <string.h>

void cx_weight_linear(const circuits_model *m, float *out, int64_t ldo, const float *in, int64_t ldi, int64_t N,
                      const circuits_tensor *W, const float *bias)
{
    const cx_qmat *q = cx_stored(m, W);
    if (q) cx_qmatmul(out, ldo, in, ldi, N, q, 0, W->shape[1], bias, false);
    else cx_matmul(out, ldo, in, ldi, N, W->shape[0], W->shape[1], W->data, W->strides[0], W->strides[1], bias, false);
}

typedef struct rows_job {
    const cx_qmat *W;
    float *dst;
} rows_job;

static void rows_task(void *arg, int64_t begin, int64_t end)
{
    const rows_job *j = arg;
    for (int64_t r = begin; r < end; r++) cx_qmat_row(j->W, r, j->dst + r * j->W->cols);
}

void cx_qmat_rows(const cx_qmat *W, float *dst)
{
    rows_job j = {W, dst};
    cx_parallel_for(W->rows, 16, rows_task, &j);
}

size_t cx_stored_first(const circuits_model *m)
{
    for (size_t i = 0; m->stored && i < m->n_weights; i++)
        if (m->stored[i].data) return i;
    return m->n_weights;
}

int cx_require_fp32_weights(const circuits_model *m, const char *fn)
{
    size_t i = cx_stored_first(m);
    if (i == m->n_weights) return CIRCUITS_OK;
    return cx_fail(CIRCUITS_E_UNSUPPORTED,
                   "%s reads fp32 weight data, but '%s' is kept in its stored dtype %s (keep_stored_dtype): load the "
                   "model without keep_stored_dtype to use %s", fn, m->weights[i].name,
                   circuits_dtype_name(cx_dtype_public(m->stored[i].dtype)), fn);
}

/* The row maps every stored matrix of m shares, made on first need: [perm | neox q | neox k | neox v],
 * each n_heads·d_head long. perm undoes llama.cpp's Q/K permutation (convert_hf_to_gguf.py's
 * permute: rows (h, j, i) of HF's q_proj, j < 2, i < d_head/2, are stored at (h, i, j)): logical
 * row h·dh + j·dh/2 + i is stored row h·dh + 2i + j. K has n_key_value_heads <= n_heads heads:
 * a prefix of the same map. neox part p: logical row h·dh + k is stored row (3h + p)·dh + k. */
static int row_maps(circuits_model *m, const int32_t **perm, const int32_t **neox)
{
    int64_t dh = m->cfg.d_head, n = (int64_t)m->cfg.n_heads * dh;
    if (!m->row_maps) {
        if (n <= 0 || n > INT32_MAX / 3)
            return cx_fail(CIRCUITS_E_RANGE, "keep_stored_dtype: %lld query rows do not fit a row map", (long long)n);
        int32_t *r = cx_malloc((size_t)(4 * n) * sizeof *r);
        if (!r) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory making the stored weights' row maps");
        for (int64_t h = 0; h < m->cfg.n_heads; h++)
            for (int64_t k = 0; k < dh; k++) {
                /* dh odd: no permuted layout asks for this map */
                r[h * dh + k] = (int32_t)(dh % 2 ? h * dh + k : cx_permuted_row(h * dh + k, dh));
                for (int p = 0; p < 3; p++) r[(1 + p) * n + h * dh + k] = (int32_t)((3 * h + p) * dh + k);
            }
        m->row_maps = r;
    }
    *perm = m->row_maps;
    *neox = m->row_maps + n;
    return CIRCUITS_OK;
}

int cx_stored_make(circuits_model *m, size_t i, int kind, int ndim, const int64_t *shape, int map, int part,
                   cx_st_tensor *t, bool *kept)
{
    *kept = false;
    const circuits_config *c = &m->cfg;
    int64_t D = c->d_model, dh = c->d_head;
    if (t->dtype == CX_DT_F32 || cx_dtype_public(t->dtype) < 0 || t->ndim != 2) return CIRCUITS_OK;
    /* the stored [rows, cols] each layout implies, and the logical rows */
    int64_t want[2] = {-1, -1}, rows = 0, first_row = 0;
    bool map_perm = false, map_neox = false;
    switch (kind) {
    case CX_W_EMBED:
        if (map != CX_MAP_SAME && map != CX_MAP_EMBED_SCALED) return CIRCUITS_OK;
        want[0] = rows = shape[0];
        want[1] = shape[1];
        break;
    case CX_W_Q: case CX_W_K: case CX_W_V:
        rows = shape[0] * dh;
        want[1] = D;
        if (map == CX_MAP_PROJ_HEADS) want[0] = rows;
        else if (map == CX_MAP_PROJ_HEADS_PERMUTED && dh % 2 == 0) want[0] = rows, map_perm = true;
        else if (map == CX_MAP_NEOX_QKV && shape[0] == c->n_heads) want[0] = 3 * rows, map_neox = true;
        else if (map == CX_MAP_FUSED_PROJ_HEADS) { /* [Q; K; V] rows: part `part` from its first row */
            int64_t q = (int64_t)c->n_heads * dh, kv = (int64_t)c->n_key_value_heads * dh;
            want[0] = q + 2 * kv;
            first_row = part == 0 ? 0 : part == 1 ? q : q + kv;
        } else return CIRCUITS_OK;
        break;
    case CX_W_O:
        if (map != CX_MAP_OUT_HEADS) return CIRCUITS_OK;
        want[0] = rows = D;
        want[1] = shape[0] * dh;
        break;
    case CX_W_IN: case CX_W_GATE: case CX_W_OUT: case CX_W_U:
        if (map != CX_MAP_TRANSPOSE) return CIRCUITS_OK;
        want[0] = rows = shape[1];
        want[1] = shape[0];
        break;
    default:
        return CIRCUITS_OK; /* biases, norms, W_pos: read as fp32 */
    }
    size_t row_bytes;
    if (t->shape[0] != want[0] || t->shape[1] != want[1] || !cx_dtype_row_bytes(t->dtype, want[1], &row_bytes))
        return CIRCUITS_OK; /* the fp32 path reports the shape the config implies */
    const int32_t *perm = NULL, *neox = NULL, *map_rows = NULL;
    if (map_perm || map_neox) {
        int rc = row_maps(m, &perm, &neox);
        if (rc) return rc;
        map_rows = map_perm ? perm : neox + (size_t)part * (size_t)c->n_heads * (size_t)dh;
    }
    size_t n = cx_weight_list(c, NULL); /* m->n_weights counts the weights made so far */
    if (!m->stored && !(m->stored = cx_calloc(n, sizeof *m->stored)))
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory keeping '%s' in its stored dtype", t->name);
    m->stored[i] = (cx_qmat){.dtype = t->dtype, .rows = rows, .cols = want[1],
                             .data = t->data + (size_t)first_row * row_bytes,
                             .row_bytes = row_bytes, .row_map = map_rows};
    if (kind == CX_W_EMBED && map == CX_MAP_EMBED_SCALED) m->embed_scale = (float)sqrt((double)D);
    circuits_tensor *out = &m->weights[i];
    memset(out, 0, sizeof *out);
    out->ndim = ndim;
    memcpy(out->shape, shape, (size_t)ndim * sizeof *shape);
    cx_contiguous_strides(ndim, shape, out->strides); /* the layout circuits_model_weight_read gives */
    out->head = -1;
    out->head_axis = -1;
    t->used = true;
    *kept = true;
    return CIRCUITS_OK;
}

/* Weight i in TransformerLens's layout. Logical row r of the cx_qmat ([rows, cols]) holds, for
 * g = d_head (W_Q, W_K, W_V) or g = rows (the transposed nn.Linear weights, W_O), TL element
 * [r / g, col, r % g]: one formula for both. W_E's rows are TL's rows. */
int cx_qmat_read_weight(const circuits_model *m, size_t i, float *buf)
{
    const cx_qmat *q = &m->stored[i];
    int kind = m->kind[i];
    if (kind == CX_W_EMBED) {
        cx_qmat_rows(q, buf);
        if (m->embed_scale != 0.0f) /* as the fp32 load computes Gemma's W_E: stored value * (float)sqrt(d_model) */
            for (int64_t k = 0; k < q->rows * q->cols; k++) buf[k] *= m->embed_scale;
        return CIRCUITS_OK;
    }
    float *row = cx_malloc((size_t)q->cols * sizeof *row);
    if (!row) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading '%s'", m->weights[i].name);
    int64_t g = kind == CX_W_Q || kind == CX_W_K || kind == CX_W_V ? m->cfg.d_head : q->rows;
    for (int64_t r = 0; r < q->rows; r++) {
        cx_qmat_row(q, r, row);
        float *dst = buf + (r / g) * q->cols * g + r % g;
        for (int64_t k = 0; k < q->cols; k++) dst[k * g] = row[k];
    }
    cx_free(row);
    return CIRCUITS_OK;
}
