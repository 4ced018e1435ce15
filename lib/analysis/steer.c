/* Steering: a vector added at hook points over chosen positions, as a forward hook whose data
 * the context owns (steering vectors, llama.cpp control vectors at every block's output); and
 * contrastive vectors, the mean over pairs of prompts of act(positive) - act(negative), read by
 * internal editors of one run per side (bounded memory: running sums, never a cache). */
#include "context.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void circuits_steering_options_init(circuits_steering_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->scale = 1.0f;
}

void circuits_contrast_options_init(circuits_contrast_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->reduce = CIRCUITS_CONTRAST_LAST;
}

/* ---- steering ---- */

/* One registration's data, owned by the context. */
typedef struct steer {
    const circuits_context *ctx; /* run_past: where this pass's positions start */
    int64_t dim;
    int32_t n_rows;              /* 1: one vector for every point; n_layers: a control vector's rows by layer */
    float *vec;                  /* [n_rows, dim], times the scale already (the hook adds it as it is) */
    bool *active;                /* [n_rows]: the row is not all zero */
    int64_t *pos;                /* [n_pos], or NULL: every position */
    int64_t n_pos;
} steer;

static void steer_release(void *p)
{
    steer *s = p;
    if (!s) return;
    cx_free(s->vec);
    cx_free(s->active);
    cx_free(s->pos);
    cx_free(s);
}

/* True if position t of a pass of T positions after `past` held ones is selected. */
static bool steered(const steer *s, int64_t t, int64_t T, int64_t past)
{
    if (!s->pos) return true;
    for (int64_t i = 0; i < s->n_pos; i++) {
        int64_t p = s->pos[i];
        if ((p >= 0 && p == past + t) || (p < 0 && p == t - T)) return true;
    }
    return false;
}

/* Adds the vector along the last axis of act [B, T, ..., dim] at the selected positions. */
static int steer_hook(const circuits_tensor *act, void *user)
{
    const steer *s = user;
    int32_t nd = act->ndim;
    int32_t r = s->n_rows == 1 ? 0 : act->layer;
    if (r < 0 || r >= s->n_rows || nd < 3 || act->shape[nd - 1] != s->dim) return -1; /* never read past the vector */
    if (!s->active[r]) return CIRCUITS_HOOK_CONTINUE;
    const float *v = s->vec + (size_t)r * (size_t)s->dim;
    int64_t B = act->shape[0], T = act->shape[1], past = s->ctx->run_past;
    int64_t inner = 1; /* vectors per (b, t): the axes between the position and the last */
    for (int32_t d = 2; d < nd - 1; d++) inner *= act->shape[d];
    for (int64_t t = 0; t < T; t++) {
        if (!steered(s, t, T, past)) continue;
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < inner; k++) {
                float *x = act->data + b * act->strides[0] + t * act->strides[1];
                int64_t rem = k;
                for (int32_t d = nd - 2; d >= 2; d--) {
                    x += (rem % act->shape[d]) * act->strides[d];
                    rem /= act->shape[d];
                }
                int64_t st = act->strides[nd - 1];
                for (int64_t i = 0; i < s->dim; i++) x[i * st] += v[i];
            }
    }
    return CIRCUITS_HOOK_CONTINUE;
}

typedef struct check_arg {
    const char *fn;
    int64_t dim;
    int32_t n_layers; /* a control vector: points must be in blocks; 0 otherwise */
    int rc;
} check_arg;

/* A point steering can add to: floats with a position axis 1 and the vector's length last. */
static int check_point(const circuits_context *ctx, size_t i, void *arg)
{
    check_arg *a = arg;
    const cx_hook_point *p = &ctx->hooks.points[i];
    if (a->rc) return CIRCUITS_OK;
    circuits_tensor t;
    cx_hook_describe(ctx, p, 1, 1, 0, NULL, &t);
    if (p->kind == HK_TOKENS)
        a->rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: '%s' holds token ids, which cannot be steered", a->fn, p->name);
    else if (p->kind == HK_PATTERN || p->kind == HK_ATTN_SCORES)
        a->rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: '%s' is attention over key positions, which cannot be steered",
                        a->fn, p->name);
    else if (t.ndim < 3 || t.shape[t.ndim - 1] != a->dim)
        a->rc = cx_fail(CIRCUITS_E_SHAPE, "%s: '%s' has a last axis of %lld, the vector %lld", a->fn, p->name,
                        (long long)t.shape[t.ndim - 1], (long long)a->dim);
    return CIRCUITS_OK;
}

/* The checked options and a steer of n_rows rows of dim (vectors scaled in), not registered. */
static int make_steer(const circuits_context *ctx, const char *fn, const float *vectors, int32_t n_rows, int64_t dim,
                      const circuits_steering_options *user, steer **out)
{
    circuits_steering_options o;
    circuits_steering_options_init(&o);
    static const size_t versions[] = {sizeof(circuits_steering_options)}; /* 0.8 */
    int rc = user ? cx_options_copy(&o, user, versions, CX_COUNT(versions), fn) : CIRCUITS_OK;
    if (rc) return rc;
    if (!isfinite(o.scale)) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: scale %g is not finite", fn, (double)o.scale);
    if (o.n_positions < 0 || (o.n_positions > 0 && !o.positions) || (o.positions && o.n_positions == 0))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "%s: positions and n_positions %lld disagree (NULL and 0: every position; else n_positions >= 1)",
                       fn, (long long)o.n_positions);
    int64_t n_ctx = ctx->model->cfg.n_ctx;
    for (int64_t i = 0; i < o.n_positions; i++)
        if (o.positions[i] >= n_ctx || o.positions[i] < -n_ctx)
            return cx_fail(CIRCUITS_E_RANGE, "%s: positions[%lld] = %lld is outside [-%lld, %lld) (n_ctx)", fn,
                           (long long)i, (long long)o.positions[i], (long long)n_ctx, (long long)n_ctx);
    size_t total = (size_t)n_rows * (size_t)dim; /* dim checked by the caller: fits */
    for (size_t i = 0; i < total; i++)
        if (!isfinite(vectors[i]))
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the vector's value %zu is not finite", fn, i);
    steer *s = cx_calloc(1, sizeof *s);
    if (!s) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    s->ctx = ctx;
    s->dim = dim;
    s->n_rows = n_rows;
    s->vec = cx_malloc(total * sizeof(float));
    s->active = cx_calloc((size_t)n_rows, sizeof(bool));
    s->n_pos = o.n_positions;
    if (o.n_positions) s->pos = cx_malloc((size_t)o.n_positions * sizeof(int64_t));
    if (!s->vec || !s->active || (o.n_positions && !s->pos)) {
        steer_release(s);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    for (size_t i = 0; i < total; i++) {
        s->vec[i] = o.scale * vectors[i];
        if (vectors[i] != 0.0f) s->active[i / (size_t)dim] = true;
    }
    if (o.n_positions) memcpy(s->pos, o.positions, (size_t)o.n_positions * sizeof(int64_t));
    *out = s;
    return CIRCUITS_OK;
}

int circuits_context_add_steering(circuits_context *ctx, const char *name, const float *vector, int64_t dim,
                                  const circuits_steering_options *opts, circuits_hook_id *out_id)
{
    const char *fn = "circuits_context_add_steering";
    if (!ctx || !name || !vector)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, name and vector must not be NULL", fn);
    if (dim < 1 || (uint64_t)dim > SIZE_MAX / sizeof(float))
        return cx_fail(CIRCUITS_E_SHAPE, "%s: dim %lld must be at least 1", fn, (long long)dim);
    check_arg a = {fn, dim, 0, CIRCUITS_OK};
    int rc = cx_hooks_select(ctx, name, check_point, &a);
    if (rc || (rc = a.rc)) return rc;
    steer *s;
    if ((rc = make_steer(ctx, fn, vector, 1, dim, opts, &s))) return rc;
    return cx_context_add_owned_hook(ctx, fn, name, steer_hook, s, steer_release, out_id);
}

int circuits_context_add_control_vector(circuits_context *ctx, const float *directions, int32_t n_layers,
                                        int64_t d_model, const circuits_steering_options *opts,
                                        circuits_hook_id *out_id)
{
    const char *fn = "circuits_context_add_control_vector";
    if (!ctx || !directions) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx and directions must not be NULL", fn);
    const circuits_config *c = &ctx->model->cfg;
    if (n_layers != c->n_layers || d_model != c->d_model)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: directions [%d, %lld]; the model's [n_layers, d_model] is [%d, %d]", fn,
                       n_layers, (long long)d_model, c->n_layers, c->d_model);
    /* every block with a direction must still have its hook_resid_post (an SAE may replace it) */
    for (int32_t l = 0; l < n_layers; l++) {
        bool any = false;
        for (int64_t j = 0; j < d_model && !any; j++) any = directions[(size_t)l * (size_t)d_model + (size_t)j] != 0.0f;
        if (!any) continue;
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.hook_resid_post", l);
        int32_t idx;
        int rc = cx_hook_one(ctx, fn, name, &idx);
        if (rc) return rc;
    }
    steer *s;
    int rc = make_steer(ctx, fn, directions, n_layers, d_model, opts, &s);
    if (rc) return rc;
    return cx_context_add_owned_hook(ctx, fn, "blocks.*.hook_resid_post", steer_hook, s, steer_release, out_id);
}

/* ---- contrastive vectors ---- */

typedef struct contrast_acc {
    double *sum;          /* [dim]: the reduced activations of this side's rows, summed */
    int64_t dim;
    int32_t reduce;
    const int32_t *mask;  /* [B, T] or NULL */
} contrast_acc;

static int contrast_edit(const circuits_tensor *t, void *user)
{
    contrast_acc *a = user;
    int64_t B = t->shape[0], T = t->shape[1], D = a->dim;
    if (t->ndim != 3 || t->shape[2] != D) return -1;
    for (int64_t b = 0; b < B; b++) {
        const int32_t *m = a->mask ? a->mask + b * T : NULL;
        const float *x = t->data + b * t->strides[0];
        if (a->reduce == CIRCUITS_CONTRAST_LAST) {
            int64_t last = T - 1;
            while (m && last > 0 && !m[last]) last--;
            for (int64_t i = 0; i < D; i++) a->sum[i] += x[last * t->strides[1] + i * t->strides[2]];
        } else {
            int64_t n = 0;
            for (int64_t p = 0; p < T; p++) n += !m || m[p];
            for (int64_t p = 0; p < T; p++)
                if (!m || m[p])
                    for (int64_t i = 0; i < D; i++) a->sum[i] += (double)x[p * t->strides[1] + i * t->strides[2]] / (double)n;
        }
    }
    return CIRCUITS_HOOK_CONTINUE;
}

typedef struct collect_arg {
    const char *fn;
    int32_t *idx;         /* [cap] point indices, firing order */
    size_t n, cap;
    int64_t dim;
    int rc;
} collect_arg;

/* A point a contrastive vector reads: a model point [batch, pos, d], every one of the same d. */
static int collect_point(const circuits_context *ctx, size_t i, void *arg)
{
    collect_arg *a = arg;
    const cx_hook_point *p = &ctx->hooks.points[i];
    if (a->rc) return CIRCUITS_OK;
    circuits_tensor t;
    cx_hook_describe(ctx, p, 1, 1, 0, NULL, &t);
    if (p->sae >= 0)
        a->rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: '%s' is an attached SAE's point; contrastive vectors read the model's "
                        "points", a->fn, p->name);
    else if (p->kind == HK_TOKENS || p->kind == HK_PATTERN || p->kind == HK_ATTN_SCORES || t.ndim != 3)
        a->rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: '%s' is not [batch, pos, d] activations (it has %d axes%s)",
                        a->fn, p->name, t.ndim, p->kind == HK_TOKENS ? ", token ids" : "");
    else if (a->n && t.shape[2] != a->dim)
        a->rc = cx_fail(CIRCUITS_E_SHAPE, "%s: '%s' has d = %lld, an earlier point %lld: out [n_points, d] needs one d",
                        a->fn, p->name, (long long)t.shape[2], (long long)a->dim);
    else if (a->n == a->cap) {
        size_t c = a->cap ? 2 * a->cap : 8;
        int32_t *g = cx_realloc(a->idx, c * sizeof *g);
        if (!g) a->rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", a->fn);
        else {
            a->idx = g;
            a->cap = c;
        }
    }
    if (!a->rc) {
        a->dim = t.shape[2];
        a->idx[a->n++] = (int32_t)i;
    }
    return CIRCUITS_OK;
}

/* A side's mask: 0/1, at least one real token a row. */
static int check_mask(const char *fn, const char *side, const int32_t *m, int64_t B, int64_t T)
{
    if (!m) return CIRCUITS_OK;
    for (int64_t b = 0; b < B; b++) {
        int64_t real = 0;
        for (int64_t t = 0; t < T; t++) {
            int32_t v = m[b * T + t];
            if (v != 0 && v != 1)
                return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s_mask[%lld, %lld] = %d (0 or 1)", fn, side,
                               (long long)b, (long long)t, v);
            real += v;
        }
        if (!real)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s row %lld has no real token (its mask is all 0)", fn, side,
                           (long long)b);
    }
    return CIRCUITS_OK;
}

/* One side's run: the reduced activations of every point summed over rows into acc[k].sum. */
static int run_side(circuits_context *ctx, const char *fn, const collect_arg *pts, const int32_t *tokens,
                    const int32_t *mask, int64_t B, int64_t T, contrast_acc *acc, cx_edit *edits)
{
    const circuits_config *c = &ctx->model->cfg;
    int32_t stop = 0;
    for (size_t k = 0; k < pts->n; k++) {
        const cx_hook_point *p = &ctx->hooks.points[pts->idx[k]];
        acc[k].mask = mask;
        edits[k] = (cx_edit){p->layer, p->kind, contrast_edit, &acc[k], true, 0};
        cx_edit_point(ctx, p, &edits[k]);
        int32_t need = p->layer >= 0 ? p->layer + 1 : p->kind >= HK_LNF_SCALE ? c->n_layers + 1 : 0;
        if (need > stop) stop = need;
    }
    cx_run r = cx_run_init(ctx, fn, tokens, B, T);
    r.attention_mask = mask;
    r.edits = edits;
    r.n_edits = pts->n;
    if (stop <= c->n_layers) { /* no logits needed: stop after the last block a point is in */
        r.stop = stop;
        r.stop_at_layer = true;
    }
    return cx_context_run(ctx, &r);
}

int circuits_context_contrastive_vector(circuits_context *ctx, const char *name, const int32_t *positive,
                                        const int32_t *negative, int64_t batch, int64_t pos,
                                        const circuits_contrast_options *opts, float *out, size_t out_len)
{
    const char *fn = "circuits_context_contrastive_vector";
    if (!ctx || !name || !positive || !negative || !out)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, name, positive, negative and out must not be NULL", fn);
    circuits_contrast_options o;
    circuits_contrast_options_init(&o);
    static const size_t versions[] = {sizeof(circuits_contrast_options)}; /* 0.8 */
    int rc = opts ? cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn) : CIRCUITS_OK;
    if (rc) return rc;
    if (o.reduce != CIRCUITS_CONTRAST_LAST && o.reduce != CIRCUITS_CONTRAST_MEAN)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: reduce %d is not CIRCUITS_CONTRAST_LAST (0) or _MEAN (1)", fn,
                       o.reduce);
    if ((rc = cx_tokens_shape_check(&ctx->model->cfg, batch, pos, fn))) return rc;
    if ((rc = check_mask(fn, "positive", o.positive_mask, batch, pos)) ||
        (rc = check_mask(fn, "negative", o.negative_mask, batch, pos)))
        return rc;
    collect_arg pts = {fn, NULL, 0, 0, 0, CIRCUITS_OK};
    rc = cx_hooks_select(ctx, name, collect_point, &pts);
    if (!rc) rc = pts.rc;
    size_t need = 0;
    if (!rc && (!cx_mul_size(pts.n, (size_t)pts.dim, &need) || out_len < need))
        rc = cx_fail(CIRCUITS_E_RANGE, "%s: out holds %zu floats; '%s' needs %zu x %lld", fn, out_len, name, pts.n,
                     (long long)pts.dim);
    contrast_acc *acc = rc ? NULL : cx_calloc(2 * pts.n, sizeof *acc);
    cx_edit *edits = rc ? NULL : cx_calloc(pts.n, sizeof *edits);
    double *sums = rc ? NULL : cx_calloc(2 * need, sizeof(double));
    if (!rc && (!acc || !edits || !sums)) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (size_t k = 0; !rc && k < 2 * pts.n; k++)
        acc[k] = (contrast_acc){sums + k * (size_t)pts.dim, pts.dim, o.reduce, NULL};
    if (!rc) rc = run_side(ctx, fn, &pts, positive, o.positive_mask, batch, pos, acc, edits);
    if (!rc) rc = run_side(ctx, fn, &pts, negative, o.negative_mask, batch, pos, acc + pts.n, edits);
    if (!rc)
        for (size_t i = 0; i < need; i++) out[i] = (float)((sums[i] - sums[need + i]) / (double)batch);
    cx_free(sums);
    cx_free(edits);
    cx_free(acc);
    cx_free(pts.idx);
    return rc;
}
