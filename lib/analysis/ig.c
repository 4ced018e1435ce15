/* Integrated gradients (Sundararajan et al. 2017) at one hook point: the point's activation a on
 * the tokens and its baseline a0 (on baseline_tokens, or zeros); `steps` gradient runs of the
 * tokens with an editor setting the point to a0 + alpha_k (a - a0), alpha_k = (k + 0.5) / steps
 * (the midpoint rule: its error falls as 1/steps^2), attributions = (a - a0) * the mean gradient
 * there. The gradient at an edited point is d metric / d (the point as the editor left it), so
 * the edit's rule upstream (edit_grad) does not matter; REPLACE stops the backward there early.
 * Completeness, metric(a) - metric(a0) - sum(attributions), takes two more gradient runs' values
 * (any metric kind a gradient run takes, HOOK_LINEAR included). */
#include "backward.h"
#include "metric.h"

#include <stdio.h>
#include <string.h>


/* What the editor writes: a0 + alpha (a - a0) over the whole point (numel values). */
typedef struct interp {
    const float *a, *a0;
    float alpha;
    size_t numel;
} interp;

static int interp_edit(const circuits_tensor *t, void *user)
{
    const interp *s = user;
    size_t n = 1;
    for (int32_t i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    if (n != s->numel) return -1; /* another firing's shape: never write past it */
    /* an element equal at both ends stays itself (a masked score, -inf at both, would become
     * -inf - -inf = NaN); alpha 0 is the baseline itself (0 * -inf is NaN too) */
    for (size_t i = 0; i < n; i++)
        t->data[i] = s->a[i] == s->a0[i] || s->alpha == 0.0f ? s->a0[i] : s->a0[i] + s->alpha * (s->a[i] - s->a0[i]);
    return CIRCUITS_HOOK_CONTINUE;
}

/* One gradient run of tokens: with `edit` set the point is written by it; the point's gradient
 * (and activation, to act) read from the cache; the metric into *value. */
static int ig_run(circuits_context *ctx, const char *fn, const cx_hook_point *p, const bool *sel, circuits_cache *cache,
                  const int32_t *tokens, int64_t B, int64_t T, const circuits_metric *metric, interp *edit,
                  float *act, float *grad_sum, size_t numel, float *value)
{
    cx_grad_run g = cx_grad_run_init(ctx, fn, tokens, B, T, metric);
    g.fwd.held = true; /* the caller holds the guard for the whole operation */
    /* cached_only: at a point fired several times per run (ln1 under split heads) the firing
     * whose activation and gradient the cache keeps, so a, a0 and the gradient are one firing's */
    cx_edit e = {p->layer, p->kind, interp_edit, edit, true, 0};
    if (edit) {
        g.fwd.edits = &e;
        g.fwd.n_edits = 1;
    }
    g.edit_grad = CIRCUITS_EDIT_GRAD_REPLACE;
    g.sel = sel;
    g.cache = cache;
    g.cache_activations = act != NULL;
    g.value = value;
    int rc = cx_backward(ctx, &g);
    if (rc) return rc;
    circuits_tensor t;
    if (act) {
        if ((rc = circuits_cache_get(cache, p->name, &t))) return rc;
        memcpy(act, t.data, numel * sizeof(float));
    }
    if (grad_sum) {
        char name[160];
        snprintf(name, sizeof name, "%s_grad", p->name);
        if ((rc = circuits_cache_get(cache, name, &t))) return rc;
        for (size_t i = 0; i < numel; i++) grad_sum[i] += t.data[i];
    }
    return CIRCUITS_OK;
}

int circuits_context_integrated_gradients(circuits_context *ctx, const char *hook, const int32_t *tokens,
                                          const int32_t *baseline_tokens, int64_t batch, int64_t pos, int32_t steps,
                                          const circuits_metric *metric, float *attributions, float *completeness)
{
    const char *fn = "circuits_context_integrated_gradients";
    if (!ctx || !hook || !tokens || !metric || !attributions)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, hook, tokens, metric and attributions must not be NULL",
                       fn);
    if (steps < 1) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: steps %d < 1", fn, steps);
    const circuits_config *c = &ctx->model->cfg;
    int shape_rc = cx_tokens_shape_check(c, batch, pos, fn);
    if (shape_rc) return shape_rc;
    /* the caller's metric copied by its size and checked before any run */
    circuits_metric pm;
    int rc = cx_metric_check(metric, &pm, batch, pos, c->d_vocab_out, fn);
    if (rc) return rc;
    metric = &pm;
    int32_t idx;
    if ((rc = cx_hook_one(ctx, fn, hook, &idx))) return rc;
    const cx_hook_point *p = &ctx->hooks.points[idx];
    if (p->kind == HK_TOKENS)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: hook_tokens holds token ids, which have no gradient", fn);
    int64_t shape[CIRCUITS_MAX_DIMS];
    int32_t head_axis;
    int32_t nd = cx_hook_shape(ctx, p, batch, pos, 0, shape, &head_axis);
    size_t numel = 1;
    for (int32_t i = 0; i < nd; i++) numel *= (size_t)shape[i];

    /* the whole operation holds the guard: a metric callback cannot run ctx between the runs */
    if ((rc = cx_context_enter(ctx, fn))) return rc;
    float *a = cx_malloc(numel * sizeof(float)), *a0 = cx_calloc(numel, sizeof(float));
    float *gsum = cx_calloc(numel, sizeof(float));
    bool *sel = cx_calloc(ctx->hooks.n_points, sizeof *sel);
    float **dst = cx_calloc(ctx->hooks.n_points, sizeof *dst);
    circuits_cache *cache = NULL;
    if (!a || !a0 || !gsum || !sel || !dst) {
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for %zu values of '%s'", fn, numel, p->name);
        goto done;
    }
    if ((rc = circuits_cache_create(&cache))) goto done;
    sel[idx] = true;
    float f = 0.0f, f0 = 0.0f;
    /* a and metric(a) */
    if ((rc = ig_run(ctx, fn, p, sel, cache, tokens, batch, pos, metric, NULL, a, NULL, numel, &f))) goto done;
    if (baseline_tokens) {
        dst[idx] = a0;
        cx_run r = cx_run_init(ctx, fn, baseline_tokens, batch, pos);
        r.cache_dst = dst;
        r.held = true;
        if ((rc = cx_context_run(ctx, &r))) goto done;
    }
    interp s = {a, a0, 0.0f, numel};
    if (completeness && (rc = ig_run(ctx, fn, p, sel, cache, tokens, batch, pos, metric, &s, NULL, NULL, numel, &f0)))
        goto done;
    for (int32_t k = 0; k < steps && !rc; k++) {
        s.alpha = (float)((k + 0.5) / steps);
        rc = ig_run(ctx, fn, p, sel, cache, tokens, batch, pos, metric, &s, NULL, gsum, numel, NULL);
    }
    if (rc) goto done;
    double total = 0.0;
    for (size_t i = 0; i < numel; i++) {
        /* no gradient anywhere on the path, or no path: 0 (a masked score is -inf, its gradient 0) */
        attributions[i] = a[i] == a0[i] || gsum[i] == 0.0f ? 0.0f : (a[i] - a0[i]) * (gsum[i] / (float)steps);
        total += attributions[i];
    }
    if (completeness) *completeness = (float)((double)f - f0 - total);
done:
    circuits_cache_free(cache);
    cx_free(a);
    cx_free(a0);
    cx_free(gsum);
    cx_free(sel);
    cx_free(dst);
    cx_context_leave(ctx);
    return rc;
}
