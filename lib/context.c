/* Run contexts: creation, hook registration, forward entry points. */
#include "hooks.h"

#include <string.h>

void circuits_context_options_init(circuits_context_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

int circuits_context_create(circuits_context **out, const circuits_model *model, const circuits_context_options *opts)
{
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_create: out is NULL");
    *out = NULL;
    if (!model) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_create: model is NULL");
    circuits_context_options o;
    circuits_context_options_init(&o);
    if (opts) {
        if (opts->size < sizeof(uint32_t) || opts->size > sizeof o)
            return cx_fail(CIRCUITS_E_VERSION, "circuits_context_create: options size %u is not one this library knows (%zu)",
                           opts->size, sizeof o);
        memcpy(&o, opts, opts->size);
        o.size = sizeof o;
    }
    if (o.use_attn_result != 0 && o.use_attn_result != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_create: use_attn_result must be 0 or 1");
    circuits_context *ctx = cx_calloc(1, sizeof *ctx);
    if (!ctx) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory creating a context");
    ctx->model = model;
    ctx->opts = o;
    ctx->next_id = 1;
    int rc = cx_hooks_build(ctx);
    if (rc) {
        circuits_context_free(ctx);
        return rc;
    }
    *out = ctx;
    return CIRCUITS_OK;
}

void circuits_context_free(circuits_context *ctx)
{
    if (!ctx) return;
    cx_hooks_free(ctx);
    cx_free(ctx->scratch);
    cx_free(ctx);
}

size_t circuits_context_hook_point_count(const circuits_context *ctx) { return ctx ? ctx->n_points : 0; }

int circuits_context_hook_point(const circuits_context *ctx, size_t index, int64_t batch, int64_t pos,
                                circuits_tensor *out)
{
    if (!ctx || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_hook_point: NULL argument");
    if (index >= ctx->n_points)
        return cx_fail(CIRCUITS_E_RANGE, "hook point index %zu out of range (%zu points)", index, ctx->n_points);
    if (batch < 1 || pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_context_hook_point: batch and pos must be at least 1");
    const cx_hook_point *p = &ctx->points[index];
    memset(out, 0, sizeof *out);
    out->name = p->name;
    out->layer = p->layer;
    out->head = -1;
    out->ndim = cx_hook_shape(ctx, p, batch, pos, out->shape, &out->head_axis);
    int64_t s = 1;
    for (int i = out->ndim - 1; i >= 0; i--) {
        out->strides[i] = s;
        s *= out->shape[i];
    }
    return CIRCUITS_OK;
}

static int refuse_running(const circuits_context *ctx, const char *fn)
{
    if (ctx->running)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: called from a hook callback of the same context", fn);
    return CIRCUITS_OK;
}

/* Two passes over the selection: first check that every point can take one more
 * registration (so that a failure leaves nothing registered), then add. */
typedef struct add_arg {
    circuits_hook_fn fn;
    void *user_data;
    circuits_hook_id id;
    bool commit;
} add_arg;

static int visit_add(const circuits_context *cctx, size_t i, void *arg)
{
    circuits_context *ctx = (circuits_context *)cctx;
    add_arg *a = arg;
    cx_hook_point *p = &ctx->points[i];
    if (!a->commit) {
        if (p->n_regs < p->cap_regs) return CIRCUITS_OK;
        size_t cap = p->cap_regs ? 2 * p->cap_regs : 4;
        cx_hook_reg *r = cx_realloc(p->regs, cap * sizeof *r);
        if (!r) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory registering a hook at '%s'", p->name);
        p->regs = r;
        p->cap_regs = cap;
        return CIRCUITS_OK;
    }
    p->regs[p->n_regs++] = (cx_hook_reg){a->id, a->fn, a->user_data};
    return CIRCUITS_OK;
}

int circuits_context_add_hook(circuits_context *ctx, const char *name, circuits_hook_fn fn, void *user_data,
                              circuits_hook_id *out_id)
{
    if (!ctx || !name || !fn)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_add_hook: ctx, name and fn must not be NULL");
    int rc = refuse_running(ctx, "circuits_context_add_hook");
    if (rc) return rc;
    add_arg a = {fn, user_data, ctx->next_id, false};
    if ((rc = cx_hooks_select(ctx, name, visit_add, &a))) return rc;
    a.commit = true;
    cx_hooks_select(ctx, name, visit_add, &a);
    ctx->next_id++;
    if (out_id) *out_id = a.id;
    return CIRCUITS_OK;
}

int circuits_context_remove_hook(circuits_context *ctx, circuits_hook_id id)
{
    if (!ctx) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_remove_hook: ctx is NULL");
    int rc = refuse_running(ctx, "circuits_context_remove_hook");
    if (rc) return rc;
    size_t removed = 0;
    for (size_t i = 0; i < ctx->n_points; i++) {
        cx_hook_point *p = &ctx->points[i];
        size_t k = 0;
        for (size_t j = 0; j < p->n_regs; j++) {
            if (p->regs[j].id == id) removed++;
            else p->regs[k++] = p->regs[j];
        }
        p->n_regs = k;
    }
    if (!removed) return cx_fail(CIRCUITS_E_NOT_FOUND, "no hook registered with id %lld", (long long)id);
    return CIRCUITS_OK;
}

void circuits_context_clear_hooks(circuits_context *ctx)
{
    if (!ctx || ctx->running) return;
    for (size_t i = 0; i < ctx->n_points; i++) ctx->points[i].n_regs = 0;
}

typedef struct resolve_arg {
    size_t want, seen;
    char *buf;
    size_t buf_size;
    int rc;
} resolve_arg;

static int visit_resolve(const circuits_context *ctx, size_t i, void *arg)
{
    resolve_arg *a = arg;
    if (a->seen++ == a->want) {
        size_t n = strlen(ctx->points[i].name);
        if (!a->buf || n >= a->buf_size)
            a->rc = cx_fail(CIRCUITS_E_RANGE, "buffer too small for hook name '%s'", ctx->points[i].name);
        else memcpy(a->buf, ctx->points[i].name, n + 1);
    }
    return CIRCUITS_OK;
}

int circuits_context_resolve_hook_name(const circuits_context *ctx, const char *name, size_t index, char *buf,
                                       size_t buf_size, size_t *out_count)
{
    if (!ctx || !name) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_resolve_hook_name: NULL argument");
    resolve_arg a = {index, 0, buf, buf_size, CIRCUITS_OK};
    int rc = cx_hooks_select(ctx, name, visit_resolve, &a);
    if (rc) return rc;
    if (out_count) *out_count = a.seen;
    if (index >= a.seen)
        return cx_fail(CIRCUITS_E_RANGE, "'%s' selects %zu hook points; index %zu is out of range", name, a.seen, index);
    return a.rc;
}

int circuits_context_forward(circuits_context *ctx, const int32_t *tokens, int64_t batch, int64_t pos, float *logits,
                             float *loss, float *per_token_loss)
{
    if (!ctx) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_forward: ctx is NULL");
    int rc = refuse_running(ctx, "circuits_context_forward");
    if (rc) return rc;
    ctx->running = true;
    rc = cx_forward(ctx, tokens, batch, pos, logits, loss, per_token_loss);
    ctx->running = false;
    return rc;
}

void circuits_run_options_init(circuits_run_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->start_at_layer = CIRCUITS_LAYER_NONE;
    opts->stop_at_layer = CIRCUITS_LAYER_NONE;
}

/* A layer index as TransformerLens takes it (negative from the end) into 0 .. n_layers. */
static int resolve_layer(int32_t k, int32_t n_layers, const char *what, int32_t *out)
{
    int64_t r = k < 0 ? (int64_t)k + n_layers : k;
    if (r < 0 || r > n_layers)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_context_run: %s %d is outside [-%d, %d]", what, k, n_layers,
                       n_layers);
    *out = (int32_t)r;
    return CIRCUITS_OK;
}

int circuits_context_run(circuits_context *ctx, const circuits_run_options *opts, const int32_t *tokens,
                         int64_t batch, int64_t pos, float *out)
{
    if (!ctx) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_run: ctx is NULL");
    circuits_run_options o;
    circuits_run_options_init(&o);
    if (opts) {
        if (opts->size != sizeof o)
            return cx_fail(CIRCUITS_E_VERSION, "circuits_context_run: options size %u is not one this library knows (%zu)",
                           opts->size, sizeof o);
        o = *opts;
    }
    int32_t L = ctx->model->cfg.n_layers;
    cx_run_spec spec = {.start = 0, .stop = L};
    int rc;
    if (o.start_at_layer != CIRCUITS_LAYER_NONE) {
        if ((rc = resolve_layer(o.start_at_layer, L, "start_at_layer", &spec.start))) return rc;
        if (!o.input)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "circuits_context_run: start_at_layer needs input, the residual stream [batch, pos, d_model]");
        spec.input = o.input;
    } else if (o.input) {
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_run: input is set but start_at_layer is not");
    }
    if (o.stop_at_layer != CIRCUITS_LAYER_NONE) {
        if ((rc = resolve_layer(o.stop_at_layer, L, "stop_at_layer", &spec.stop))) return rc;
        spec.stop_at_layer = true;
    }
    if (spec.stop < spec.start)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_context_run: stop_at_layer (block %d) comes before start_at_layer (block %d)",
                       spec.stop, spec.start);
    if (o.logit_positions || o.n_logit_positions) {
        if (!o.logit_positions || o.n_logit_positions < 1)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "circuits_context_run: logit_positions needs a non-NULL array and n_logit_positions >= 1 "
                           "(got %lld)", (long long)o.n_logit_positions);
        if (spec.stop_at_layer)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "circuits_context_run: logit_positions and stop_at_layer exclude each other (no logits)");
        spec.positions = o.logit_positions;
        spec.n_positions = o.n_logit_positions;
    }
    rc = refuse_running(ctx, "circuits_context_run");
    if (rc) return rc;
    ctx->running = true;
    rc = cx_forward_spec(ctx, &spec, tokens, batch, pos, out);
    ctx->running = false;
    return rc;
}
