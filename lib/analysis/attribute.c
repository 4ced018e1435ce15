/* Attribution patching (Nanda 2023): activation patching's grids (grid.h, the same cells and
 * slices as patch.c) filled with the linear estimate of each cell's patch,
 *   out[cell] = sum over the batch and the cell's slice of (source - base) * d metric / d base,
 * from one gradient run of the base tokens (backward.h) caching the patched point's activation
 * and gradient in every block. */
#include "backward.h"
#include "grid.h"
#include "metric.h"

#include <stdio.h>
#include <string.h>

/* One cell's estimate: sum over batch rows and the slice of (src - base) * grad, in double. */
static float cell_estimate(const cx_grid_cell *c, const float *src, const float *base, const float *grad, int64_t B,
                           int64_t T, int64_t rest, int64_t H)
{
    double acc = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = c->t0; t < c->t1; t++) {
            int64_t at = cx_grid_at(c, b, t, T, rest, H);
            for (int64_t e = c->lo; e < c->hi; e++)
                acc += ((double)src[at + e] - base[at + e]) * grad[at + e];
        }
    return (float)acc;
}

int circuits_context_attribution_patch(circuits_context *ctx, int32_t kind, const int32_t *tokens, int64_t batch,
                                       int64_t pos, const float *const *source, const circuits_metric *metric,
                                       float *value, float *out)
{
    const char *fn = "circuits_context_attribution_patch";
    if (!ctx || !tokens || !source || !metric || !out)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, tokens, source, metric and out must not be NULL", fn);
    const cx_patch_kind *pk = cx_patch_kind_of(kind);
    if (!pk) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: unknown patch kind %d", fn, kind);
    const circuits_config *c = &ctx->model->cfg;
    int shape_rc = cx_tokens_shape_check(c, batch, pos, fn);
    if (shape_rc) return shape_rc;
    for (int32_t l = 0; l < c->n_layers; l++) {
        if (cx_hook_index(&ctx->hooks, l, pk->hook) < 0)
            return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: this model has no hook '%s' in block %d to patch", fn, pk->name,
                           l);
        if (!source[l])
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: source[%d] (the source '%s' of block %d) is NULL", fn, l,
                           pk->name, l);
    }
    /* the caller's metric copied by its size and checked before any run */
    circuits_metric pm;
    int rc = cx_metric_check(metric, &pm, batch, pos, c->d_vocab_out, fn);
    if (rc) return rc;
    int64_t shape[4], total = 1;
    int32_t nd;
    if ((rc = circuits_patch_grid_shape(ctx->model, kind, pos, shape, &nd))) return rc;
    for (int32_t i = 0; i < nd; i++) total *= shape[i];

    const cx_hook_table *ht = &ctx->hooks;
    bool *sel = cx_calloc(ht->n_points, sizeof *sel);
    cx_grid_cell *cells = cx_malloc((size_t)total * sizeof *cells);
    circuits_cache *cache = NULL;
    if (!sel || !cells || (rc = circuits_cache_create(&cache))) {
        if (!rc) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for %lld cells", fn, (long long)total);
        goto done;
    }
    for (int32_t l = 0; l < c->n_layers; l++) sel[cx_hook_value_index(ht, l, pk->hook)] = true;
    cx_grad_run g = cx_grad_run_init(ctx, fn, tokens, batch, pos, &pm);
    g.sel = sel;
    g.cache = cache;
    g.cache_activations = true;
    g.value = value;
    if ((rc = cx_backward(ctx, &g))) goto done;

    int64_t n = cx_grid_cells(ctx->model, kind, pos, cells), i = 0;
    for (int32_t l = 0; l < c->n_layers && !rc; l++) {
        const char *name = ht->points[cx_hook_value_index(ht, l, pk->hook)].name;
        char gname[160];
        snprintf(gname, sizeof gname, "%s_grad", name);
        circuits_tensor a, d;
        if ((rc = circuits_cache_get(cache, name, &a)) || (rc = circuits_cache_get(cache, gname, &d))) break;
        int64_t rest = a.strides[1], H = a.shape[1];
        for (; i < n && cells[i].layer == l; i++)
            out[i] = cell_estimate(&cells[i], source[l], a.data, d.data, batch, pos, rest, H);
    }
done:
    circuits_cache_free(cache);
    cx_free(cells);
    cx_free(sel);
    return rc;
}
