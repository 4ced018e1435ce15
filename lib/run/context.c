/* Run contexts: creation, hook registration, the run door and the plain runners. */
#include "context.h"
#include "kernels.h"

#include <stddef.h>
#include <string.h>

void circuits_context_options_init(circuits_context_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

/* Every flag 0 or 1; the optional hook points where TransformerLens allows them. */
static int check_options(const circuits_model *model, const circuits_context_options *o)
{
    const struct { int32_t v; const char *name; } flags[] = {
        {o->use_attn_result, "use_attn_result"}, {o->use_split_qkv_input, "use_split_qkv_input"},
        {o->use_attn_in, "use_attn_in"}, {o->use_hook_mlp_in, "use_hook_mlp_in"},
        {o->use_hook_tokens, "use_hook_tokens"},
    };
    for (size_t i = 0; i < CX_COUNT(flags); i++)
        if (flags[i].v != 0 && flags[i].v != 1)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_create: %s must be 0 or 1 (got %d)",
                           flags[i].name, (int)flags[i].v);
    const circuits_config *c = &model->cfg;
    if (o->use_attn_in && c->n_key_value_heads != c->n_heads)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_context_create: use_attn_in with grouped-query attention "
                       "(%d query heads, %d key/value heads): use use_split_qkv_input instead, as TransformerLens says",
                       c->n_heads, c->n_key_value_heads);
    if (o->use_hook_mlp_in && c->attn_only)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_context_create: use_hook_mlp_in on an attention-only model "
                       "(it has no MLP)");
    return CIRCUITS_OK;
}

int circuits_context_create(circuits_context **out, const circuits_model *model, const circuits_context_options *opts)
{
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_create: out is NULL");
    *out = NULL;
    if (!model) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_create: model is NULL");
    circuits_context_options o;
    circuits_context_options_init(&o);
    static const size_t versions[] = {8, sizeof(circuits_context_options)}; /* 0.1, 0.5 */
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), "circuits_context_create"))) return rc;
    if ((rc = check_options(model, &o))) return rc;
    circuits_context *ctx = cx_calloc(1, sizeof *ctx);
    if (!ctx) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory creating a context");
    ctx->model = model;
    ctx->opts = o;
    rc = cx_hooks_build(ctx);
    if (rc) {
        circuits_context_free(ctx);
        return rc;
    }
    ctx->hooks.next_id = 1;
    *out = ctx;
    return CIRCUITS_OK;
}

/* Releases the data owned for registration `id` (every one with all). */
static void release_owned(circuits_context *ctx, circuits_hook_id id, bool all)
{
    size_t k = 0;
    for (size_t i = 0; i < ctx->n_owned; i++) {
        if (all || ctx->owned[i].id == id) ctx->owned[i].release(ctx->owned[i].data);
        else ctx->owned[k++] = ctx->owned[i];
    }
    ctx->n_owned = k;
}

void circuits_context_free(circuits_context *ctx)
{
    if (!ctx) return;
    cx_hooks_free(ctx);
    release_owned(ctx, 0, true);
    cx_free(ctx->owned);
    cx_free(ctx->saes);
    cx_free(ctx->scratch);
    cx_free(ctx->grad_scratch);
    cx_free(ctx);
}

size_t circuits_context_hook_point_count(const circuits_context *ctx) { return ctx ? ctx->hooks.n_points : 0; }

int circuits_context_hook_point(const circuits_context *ctx, size_t index, int64_t batch, int64_t pos,
                                circuits_tensor *out)
{
    if (!ctx || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_hook_point: NULL argument");
    if (index >= ctx->hooks.n_points)
        return cx_fail(CIRCUITS_E_RANGE, "hook point index %zu out of range (%zu points)", index, ctx->hooks.n_points);
    if (batch < 1 || pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_context_hook_point: batch and pos must be at least 1");
    cx_hook_describe(ctx, &ctx->hooks.points[index], batch, pos, 0, NULL, out);
    return CIRCUITS_OK;
}

/* Hook registrations change the table a run reads: refused while one holds the context. */
static int refuse_running(const circuits_context *ctx, const char *fn)
{
    if (ctx->running)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: called from a callback of the same context", fn);
    return CIRCUITS_OK;
}

/* ---- the door ---- */

cx_run cx_run_init(const circuits_context *ctx, const char *fn, const int32_t *tokens, int64_t batch, int64_t pos)
{
    return (cx_run){.fn = fn, .tokens = tokens, .batch = batch, .pos = pos, .start = 0,
                    .stop = ctx->model->cfg.n_layers};
}

int cx_context_enter(circuits_context *ctx, const char *fn)
{
    int rc = refuse_running(ctx, fn);
    if (!rc) ctx->running = true;
    return rc;
}

void cx_context_leave(circuits_context *ctx) { ctx->running = false; }

int cx_context_run(circuits_context *ctx, const cx_run *run)
{
    int rc;
    if (!run->held && (rc = cx_context_enter(ctx, run->fn))) return rc;
    ctx->in_pass = true;
    int64_t seqs = cx_gemm_sequences(run->batch); /* a job's rows: per-sequence products (kernels.h) */
    rc = cx_forward(ctx, run);
    cx_gemm_sequences(seqs);
    ctx->in_pass = false;
    if (!run->held) cx_context_leave(ctx);
    return rc;
}

int cx_tokens_shape_check(const circuits_config *c, int64_t batch, int64_t pos, const char *fn)
{
    if (batch < 1 || pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: tokens shape [%lld, %lld]: batch and pos must be at least 1", fn,
                       (long long)batch, (long long)pos);
    if (pos > c->n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld positions exceed the model's n_ctx = %d", fn, (long long)pos,
                       c->n_ctx);
    return CIRCUITS_OK;
}

/* ---- run memory ---- */

struct circuits_run_memory {
    float *block;
    size_t floats;
    float *grad_block; /* a gradient run's memory (backward hooks' data), or NULL */
};

int circuits_context_take_run_memory(circuits_context *ctx, circuits_run_memory **out)
{
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_take_run_memory: out is NULL");
    *out = NULL;
    if (!ctx) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_take_run_memory: ctx is NULL");
    if (ctx->in_pass)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "circuits_context_take_run_memory: a pass is computing in this memory (called from a hook "
                       "callback); take it after the run returns");
    if (!ctx->scratch && !ctx->grad_scratch) return CIRCUITS_OK;
    circuits_run_memory *m = cx_malloc(sizeof *m);
    if (!m) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory taking the run memory");
    m->block = ctx->scratch;
    m->floats = ctx->scratch_floats;
    m->grad_block = ctx->grad_scratch;
    ctx->scratch = ctx->grad_scratch = NULL;
    ctx->scratch_floats = ctx->grad_floats = 0;
    *out = m;
    return CIRCUITS_OK;
}

const void *circuits_run_memory_data(const circuits_run_memory *mem) { return mem ? mem->block : NULL; }

size_t circuits_run_memory_nbytes(const circuits_run_memory *mem) { return mem ? mem->floats * sizeof(float) : 0; }

void circuits_run_memory_free(circuits_run_memory *mem)
{
    if (!mem) return;
    cx_free(mem->block);
    cx_free(mem->grad_block);
    cx_free(mem);
}

/* ---- hook registration ---- */

/* Two passes over the selection: first check that every point can take one more
 * registration (so that a failure leaves nothing registered), then add. */
typedef struct add_arg {
    circuits_hook_fn fn;
    void *user_data;
    circuits_hook_id id;
    bool commit;
    bool backward; /* a backward hook: p->bregs */
} add_arg;

static int visit_add(const circuits_context *cctx, size_t i, void *arg)
{
    circuits_context *ctx = (circuits_context *)cctx;
    add_arg *a = arg;
    cx_hook_point *p = &ctx->hooks.points[i];
    cx_hook_reg **regs = a->backward ? &p->bregs : &p->regs;
    size_t *n = a->backward ? &p->n_bregs : &p->n_regs, *cap = a->backward ? &p->cap_bregs : &p->cap_regs;
    if (!a->commit) {
        if (*n < *cap) return CIRCUITS_OK;
        size_t c = *cap ? 2 * *cap : 4;
        cx_hook_reg *r = cx_realloc(*regs, c * sizeof *r);
        if (!r) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory registering a hook at '%s'", p->name);
        *regs = r;
        *cap = c;
        return CIRCUITS_OK;
    }
    (*regs)[(*n)++] = (cx_hook_reg){a->id, a->fn, a->user_data};
    return CIRCUITS_OK;
}

static int add_hook(circuits_context *ctx, const char *name, circuits_hook_fn fn, void *user_data,
                    circuits_hook_id *out_id, bool backward, const char *fn_name)
{
    if (!ctx || !name || !fn)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, name and fn must not be NULL", fn_name);
    int rc = refuse_running(ctx, fn_name);
    if (rc) return rc;
    add_arg a = {fn, user_data, ctx->hooks.next_id, false, backward};
    if ((rc = cx_hooks_select(ctx, name, visit_add, &a))) return rc;
    a.commit = true;
    cx_hooks_select(ctx, name, visit_add, &a);
    ctx->hooks.next_id++;
    if (out_id) *out_id = a.id;
    return CIRCUITS_OK;
}

int circuits_context_add_hook(circuits_context *ctx, const char *name, circuits_hook_fn fn, void *user_data,
                              circuits_hook_id *out_id)
{
    return add_hook(ctx, name, fn, user_data, out_id, false, "circuits_context_add_hook");
}

int circuits_context_add_backward_hook(circuits_context *ctx, const char *name, circuits_hook_fn fn, void *user_data,
                                       circuits_hook_id *out_id)
{
    return add_hook(ctx, name, fn, user_data, out_id, true, "circuits_context_add_backward_hook");
}

/* Removes the registrations with `id` from regs[0 .. *n); returns how many. */
static size_t remove_regs(cx_hook_reg *regs, size_t *n, circuits_hook_id id)
{
    size_t k = 0, removed = 0;
    for (size_t j = 0; j < *n; j++) {
        if (regs[j].id == id) removed++;
        else regs[k++] = regs[j];
    }
    *n = k;
    return removed;
}

int circuits_context_remove_hook(circuits_context *ctx, circuits_hook_id id)
{
    if (!ctx) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_remove_hook: ctx is NULL");
    int rc = refuse_running(ctx, "circuits_context_remove_hook");
    if (rc) return rc;
    size_t removed = 0;
    for (size_t i = 0; i < ctx->hooks.n_points; i++) {
        cx_hook_point *p = &ctx->hooks.points[i];
        removed += remove_regs(p->regs, &p->n_regs, id) + remove_regs(p->bregs, &p->n_bregs, id);
    }
    release_owned(ctx, id, false); /* an owned registration whose points an SAE took away has none left */
    if (!removed) return cx_fail(CIRCUITS_E_NOT_FOUND, "no hook registered with id %lld", (long long)id);
    return CIRCUITS_OK;
}

void circuits_context_clear_hooks(circuits_context *ctx)
{
    if (!ctx || ctx->running) return;
    for (size_t i = 0; i < ctx->hooks.n_points; i++) ctx->hooks.points[i].n_regs = ctx->hooks.points[i].n_bregs = 0;
    release_owned(ctx, 0, true);
}

int cx_context_add_owned_hook(circuits_context *ctx, const char *fn_name, const char *name, circuits_hook_fn fn,
                              void *data, void (*release)(void *), circuits_hook_id *out_id)
{
    int rc;
    if (ctx->n_owned == ctx->cap_owned) {
        size_t c = ctx->cap_owned ? 2 * ctx->cap_owned : 4;
        cx_owned *o = cx_realloc(ctx->owned, c * sizeof *o);
        if (!o) {
            release(data);
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory registering a hook", fn_name);
        }
        ctx->owned = o;
        ctx->cap_owned = c;
    }
    circuits_hook_id id;
    if ((rc = add_hook(ctx, name, fn, data, &id, false, fn_name))) {
        release(data);
        return rc;
    }
    ctx->owned[ctx->n_owned++] = (cx_owned){id, data, release};
    if (out_id) *out_id = id;
    return CIRCUITS_OK;
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
        size_t n = strlen(ctx->hooks.points[i].name);
        if (!a->buf || n >= a->buf_size)
            a->rc = cx_fail(CIRCUITS_E_RANGE, "buffer too small for hook name '%s'", ctx->hooks.points[i].name);
        else memcpy(a->buf, ctx->hooks.points[i].name, n + 1);
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
    cx_run r = cx_run_init(ctx, "circuits_context_forward", tokens, batch, pos);
    r.out = logits;
    r.loss = loss;
    r.per_token_loss = per_token_loss;
    return cx_context_run(ctx, &r);
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
static int resolve_layer(const char *fn, int32_t k, int32_t n_layers, const char *what, int32_t *out)
{
    int64_t r = k < 0 ? (int64_t)k + n_layers : k;
    if (r < 0 || r > n_layers)
        return cx_fail(CIRCUITS_E_RANGE, "%s: %s %d is outside [-%d, %d]", fn, what, k, n_layers,
                       n_layers);
    *out = (int32_t)r;
    return CIRCUITS_OK;
}

int cx_run_from_options(const circuits_context *ctx, const char *fn, const circuits_run_options *opts,
                        const int32_t *tokens, int64_t batch, int64_t pos, cx_run *run)
{
    circuits_run_options o;
    circuits_run_options_init(&o);
    static const size_t versions[] = {offsetof(circuits_run_options, attention_mask), /* 0.2 */
                                      sizeof(circuits_run_options)};
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn))) return rc;
    int32_t L = ctx->model->cfg.n_layers;
    cx_run spec = cx_run_init(ctx, fn, tokens, batch, pos);
    spec.attention_mask = o.attention_mask;
    spec.kv = o.kv_cache;
    if (o.start_at_layer != CIRCUITS_LAYER_NONE) {
        if ((rc = resolve_layer(fn, o.start_at_layer, L, "start_at_layer", &spec.start))) return rc;
        if (!o.input)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "%s: start_at_layer needs input, the residual stream [batch, pos, d_model]", fn);
        spec.input = o.input;
    } else if (o.input) {
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: input is set but start_at_layer is not", fn);
    }
    if (o.stop_at_layer != CIRCUITS_LAYER_NONE) {
        if ((rc = resolve_layer(fn, o.stop_at_layer, L, "stop_at_layer", &spec.stop))) return rc;
        spec.stop_at_layer = true;
    }
    if (spec.stop < spec.start)
        return cx_fail(CIRCUITS_E_RANGE, "%s: stop_at_layer (block %d) comes before start_at_layer (block %d)", fn,
                       spec.stop, spec.start);
    if (o.logit_positions || o.n_logit_positions) {
        if (!o.logit_positions || o.n_logit_positions < 1)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "%s: logit_positions needs a non-NULL array and n_logit_positions >= 1 "
                           "(got %lld)", fn, (long long)o.n_logit_positions);
        if (spec.stop_at_layer)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "%s: logit_positions and stop_at_layer exclude each other (no logits)", fn);
        spec.positions = o.logit_positions;
        spec.n_positions = o.n_logit_positions;
    }
    *run = spec;
    return CIRCUITS_OK;
}

int circuits_context_run(circuits_context *ctx, const circuits_run_options *opts, const int32_t *tokens,
                         int64_t batch, int64_t pos, float *out)
{
    if (!ctx) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_run: ctx is NULL");
    cx_run spec;
    int rc = cx_run_from_options(ctx, "circuits_context_run", opts, tokens, batch, pos, &spec);
    if (rc) return rc;
    spec.out = out;
    return cx_context_run(ctx, &spec);
}
