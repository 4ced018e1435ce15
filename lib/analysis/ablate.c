/* Ablation: zero, mean and resample ablation of a slice of a hook point (a head, a neuron, a
 * position, or all of it), as editors of one run through the door; and the means of hook points
 * over a dataset, in one streaming pass of batches with running sums. */
#include "ablate.h"
#include "rng.h"

#include <string.h>

void circuits_ablation_init(circuits_ablation *a)
{
    if (!a) return;
    memset(a, 0, sizeof *a);
    a->size = sizeof *a;
    a->kind = CIRCUITS_ABLATE_ZERO;
    a->head = -1;
    a->neuron = -1;
    a->position = CIRCUITS_ALL_POSITIONS;
}

/* ---- one hook point by name ---- */

/* The one hook point `name` names (full or short name); a pattern selecting several is refused. */
static int resolve_point(const circuits_context *ctx, const char *fn, const char *name, const cx_hook_point **out)
{
    int32_t i;
    int rc = cx_hook_one(ctx, fn, name, &i);
    if (!rc) *out = &ctx->hooks.points[i];
    return rc;
}

/* The axis of a point's positions: dest for attention patterns and scores, else 1. */
static int32_t position_axis(const cx_hook_point *p)
{
    return p->kind == HK_PATTERN || p->kind == HK_ATTN_SCORES ? 2 : 1;
}

/* ---- ablation ---- */

typedef struct ablation_edit {
    int32_t kind;
    int64_t want[CIRCUITS_MAX_DIMS]; /* per axis: the one index kept in the selection, or -1: all */
    const float *values;             /* MEAN: [...]; RESAMPLE: [source_batch, ...] */
    int64_t *source_rows;            /* RESAMPLE: [batch] */
    int64_t row;                     /* floats of one batch row of the values (MEAN, RESAMPLE) */
} ablation_edit;

/* Replaces the selected elements of activation t [B, ...] by 0, the mean [...] or the row's
 * source row [...]. The selection is a product of one index (or all) per axis. */
static int ablate_edit(const circuits_tensor *t, void *user)
{
    const ablation_edit *e = user;
    int32_t nd = t->ndim;
    int64_t row = t->strides[0], B = t->shape[0];
    if (e->kind != CIRCUITS_ABLATE_ZERO && row != e->row) return -1; /* values of another shape: never read past them */
    for (int64_t b = 0; b < B; b++) {
        float *x = t->data + b * row;
        const float *src = e->kind == CIRCUITS_ABLATE_MEAN       ? e->values
                           : e->kind == CIRCUITS_ABLATE_RESAMPLE ? e->values + e->source_rows[b] * row
                                                                 : NULL;
        for (int64_t i = 0; i < row; i++) {
            int64_t r = i;
            bool sel = true;
            for (int32_t d = nd - 1; d >= 1 && sel; d--) {
                int64_t idx = r % t->shape[d];
                r /= t->shape[d];
                sel = e->want[d] < 0 || e->want[d] == idx;
            }
            if (sel) x[i] = src ? src[i] : 0.0f;
        }
    }
    return CIRCUITS_HOOK_CONTINUE;
}

/* Checks ablation a against the run's shape and fills its editor. */
static int prepare_ablation(const circuits_context *ctx, const circuits_ablation *user, int64_t B, int64_t T,
                            size_t i, cx_edit *edit, ablation_edit *e)
{
    const char *fn = "circuits_context_run_ablated";
    circuits_ablation a;
    circuits_ablation_init(&a);
    static const size_t versions[] = {sizeof(circuits_ablation)}; /* 0.5 */
    int rc = cx_options_copy(&a, user, versions, CX_COUNT(versions), fn);
    if (rc) return rc;
    const cx_hook_point *p;
    if ((rc = resolve_point(ctx, fn, a.hook, &p))) return rc;
    if (a.kind < CIRCUITS_ABLATE_ZERO || a.kind > CIRCUITS_ABLATE_RESAMPLE)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ablation %zu has unknown kind %d", fn, i, a.kind);
    circuits_tensor t;
    cx_hook_describe(ctx, p, B, T, 0, NULL, &t);
    for (int32_t d = 0; d < CIRCUITS_MAX_DIMS; d++) e->want[d] = -1;
    if (a.position != CIRCUITS_ALL_POSITIONS) {
        int32_t pa = position_axis(p);
        if (t.ndim <= pa || a.position < -T || a.position >= T)
            return cx_fail(CIRCUITS_E_RANGE, "%s: ablation %zu: position %lld is outside [-%lld, %lld) at '%s'", fn, i,
                           (long long)a.position, (long long)T, (long long)T, p->name);
        e->want[pa] = a.position < 0 ? a.position + T : a.position;
    }
    if (a.head != -1) {
        if (t.head_axis < 0)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ablation %zu: '%s' has no head axis", fn, i, p->name);
        if (a.head < 0 || a.head >= t.shape[t.head_axis])
            return cx_fail(CIRCUITS_E_RANGE, "%s: ablation %zu: head %d is outside [0, %lld) at '%s'", fn, i, a.head,
                           (long long)t.shape[t.head_axis], p->name);
        e->want[t.head_axis] = a.head;
    }
    if (a.neuron != -1) {
        int64_t n = t.shape[t.ndim - 1];
        if (a.neuron < 0 || a.neuron >= n || t.ndim - 1 == t.head_axis || t.ndim < 3)
            return cx_fail(CIRCUITS_E_RANGE, "%s: ablation %zu: neuron %lld is not an index of the last axis [0, %lld) of '%s'",
                           fn, i, (long long)a.neuron, (long long)n, p->name);
        e->want[t.ndim - 1] = a.neuron;
    }
    e->kind = a.kind;
    e->values = a.values;
    e->row = t.strides[0];
    const circuits_config *c = &ctx->model->cfg;
    if (a.kind != CIRCUITS_ABLATE_ZERO && (p->kind == HK_LN1_SCALE || p->kind == HK_LN1_NORMALIZED) &&
        ctx->opts.use_split_qkv_input && c->n_key_value_heads != c->n_heads)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: ablation %zu: '%s' fires with %d query heads and %d key/value heads (use_split_qkv_input "
                       "under grouped-query attention): %s values of one shape fit only some firings", fn, i, p->name,
                       c->n_heads, c->n_key_value_heads, a.kind == CIRCUITS_ABLATE_MEAN ? "mean" : "resample");
    if (a.kind != CIRCUITS_ABLATE_ZERO && !a.values)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ablation %zu: %s ablation needs values", fn, i,
                       a.kind == CIRCUITS_ABLATE_MEAN ? "mean" : "resample");
    if (a.kind == CIRCUITS_ABLATE_RESAMPLE) {
        if (a.source_batch < 1)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: ablation %zu: source_batch %lld < 1", fn, i, (long long)a.source_batch);
        e->source_rows = cx_malloc((size_t)B * sizeof(int64_t));
        if (!e->source_rows) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        uint64_t st = a.seed;
        for (int64_t b = 0; b < B; b++) e->source_rows[b] = (int64_t)(cx_splitmix64(&st) % (uint64_t)a.source_batch);
    }
    *edit = (cx_edit){p->layer, p->kind, ablate_edit, e, false, 0};
    cx_edit_point(ctx, p, edit);
    return CIRCUITS_OK;
}

int circuits_context_run_ablated(circuits_context *ctx, const circuits_ablation *ablations, size_t n_ablations,
                                 const int32_t *tokens, int64_t batch, int64_t pos, float *logits, float *loss)
{
    const char *fn = "circuits_context_run_ablated";
    if (!ctx || (!ablations && n_ablations))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx is NULL, or ablations is NULL with n_ablations > 0", fn);
    if (batch < 1 || pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: tokens shape [%lld, %lld]: batch and pos must be at least 1", fn,
                       (long long)batch, (long long)pos);
    cx_edit *edits = cx_calloc(n_ablations ? n_ablations : 1, sizeof *edits);
    ablation_edit *es = cx_calloc(n_ablations ? n_ablations : 1, sizeof *es);
    int rc = edits && es ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (size_t i = 0; i < n_ablations && !rc; i++) {
        if (ablations[i].size == 0)
            rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ablation %zu has size 0 (call circuits_ablation_init)", fn, i);
        else rc = prepare_ablation(ctx, &ablations[i], batch, pos, i, &edits[i], &es[i]);
    }
    if (!rc) {
        cx_run r = cx_run_init(ctx, fn, tokens, batch, pos);
        r.edits = edits;
        r.n_edits = n_ablations;
        r.out = logits;
        r.loss = loss;
        rc = cx_context_run(ctx, &r);
    }
    for (size_t i = 0; es && i < n_ablations; i++) cx_free(es[i].source_rows);
    cx_free(es);
    cx_free(edits);
    return rc;
}

/* ---- means over a dataset ---- */

typedef struct mean_acc {
    double *sum;   /* [row]: the point's activation of one batch row, summed over rows */
    int64_t row;
} mean_acc;

static int accumulate(const circuits_tensor *t, void *user)
{
    mean_acc *m = user;
    for (int64_t b = 0; b < t->shape[0]; b++) {
        const float *x = t->data + b * m->row;
        for (int64_t i = 0; i < m->row; i++) m->sum[i] += x[i];
    }
    return CIRCUITS_HOOK_CONTINUE;
}

int cx_activation_sums(circuits_context *ctx, const int32_t *points, size_t n_points, const int32_t *tokens,
                       int64_t n_rows, int64_t pos, int64_t batch_size, double *const *sums, const char *fn)
{
    const circuits_config *c = &ctx->model->cfg;
    cx_edit *edits = cx_calloc(n_points, sizeof *edits);
    mean_acc *acc = cx_calloc(n_points, sizeof *acc);
    int rc = edits && acc ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    int32_t stop = 0; /* blocks the pass needs: up to the last point's; all with a point after them */
    for (size_t i = 0; i < n_points && !rc; i++) {
        const cx_hook_point *p = &ctx->hooks.points[points[i]];
        circuits_tensor t;
        cx_hook_describe(ctx, p, 1, pos, 0, NULL, &t);
        acc[i] = (mean_acc){sums[i], t.strides[0]};
        edits[i] = (cx_edit){p->layer, p->kind, accumulate, &acc[i], true, 0}; /* the value a cache keeps */
        cx_edit_point(ctx, p, &edits[i]);
        int32_t need = p->layer >= 0 ? p->layer + 1 : p->base >= HK_LNF_SCALE ? c->n_layers + 1 : 0;
        if (need > stop) stop = need;
    }
    for (int64_t r0 = 0; r0 < n_rows && !rc; r0 += batch_size) {
        int64_t b = n_rows - r0 < batch_size ? n_rows - r0 : batch_size;
        cx_run r = cx_run_init(ctx, fn, tokens + r0 * pos, b, pos);
        r.edits = edits;
        r.n_edits = n_points;
        if (stop <= c->n_layers) { /* no logits needed: stop after the last block a point is in */
            r.stop = stop;
            r.stop_at_layer = true;
        }
        rc = cx_context_run(ctx, &r);
    }
    cx_free(acc);
    cx_free(edits);
    return rc;
}

int circuits_context_mean_activations(circuits_context *ctx, const char *const *hooks, size_t n_hooks,
                                      const int32_t *tokens, int64_t n_rows, int64_t pos, int64_t batch_size,
                                      float *const *means)
{
    const char *fn = "circuits_context_mean_activations";
    if (!ctx || !hooks || !n_hooks || !tokens || !means)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, hooks, tokens and means must not be NULL (n_hooks >= 1)",
                       fn);
    if (n_rows < 1 || pos < 1 || batch_size < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: n_rows %lld, pos %lld and batch_size %lld must be at least 1", fn,
                       (long long)n_rows, (long long)pos, (long long)batch_size);
    int32_t *points = cx_calloc(n_hooks, sizeof *points);
    double **sums = cx_calloc(n_hooks, sizeof *sums);
    int64_t *rows = cx_calloc(n_hooks, sizeof *rows);
    int rc = points && sums && rows ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (size_t i = 0; i < n_hooks && !rc; i++) {
        if ((rc = cx_hook_one(ctx, fn, hooks[i], &points[i]))) break;
        const cx_hook_point *p = &ctx->hooks.points[points[i]];
        if (!means[i]) {
            rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: means[%zu] is NULL", fn, i);
            break;
        }
        if (p->kind == HK_TOKENS) { /* its data is int32_t ids: summed as floats it means nothing */
            rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: hooks[%zu] is hook_tokens, token ids, which have no mean", fn, i);
            break;
        }
        circuits_tensor t;
        cx_hook_describe(ctx, p, 1, pos, 0, NULL, &t);
        rows[i] = t.strides[0];
        sums[i] = cx_calloc((size_t)rows[i], sizeof(double));
        if (!sums[i]) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    if (!rc) rc = cx_activation_sums(ctx, points, n_hooks, tokens, n_rows, pos, batch_size, sums, fn);
    for (size_t i = 0; i < n_hooks && !rc; i++)
        for (int64_t j = 0; j < rows[i]; j++) means[i][j] = (float)(sums[i][j] / (double)n_rows);
    for (size_t i = 0; sums && i < n_hooks; i++) cx_free(sums[i]);
    cx_free(sums);
    cx_free(rows);
    cx_free(points);
    return rc;
}
