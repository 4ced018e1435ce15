/* Activation caches: run_with_cache stores copies of the selected activations. */
#include "context.h"

#include <stdio.h>
#include <string.h>

typedef struct cx_cache_entry {
    char *name;
    int32_t layer, head_axis, ndim;
    int64_t shape[CIRCUITS_MAX_DIMS];
    float *data; /* into cache->block */
} cx_cache_entry;

/* The entries and block outlive a run: the next run reuses them when they are large enough,
 * so that refilling a cache does not page-fault a fresh block every time. */
struct circuits_cache {
    cx_cache_entry *entries; /* [cap_entries]; the first n are the content, names kept past n for reuse */
    size_t n, cap_entries;
    float *block;            /* [cap_floats]: all entries' data, the first `floats` in use */
    size_t floats, cap_floats;
    bool filling;            /* a run is writing into it (a callback of that run must not refill it) */
};

int circuits_cache_create(circuits_cache **out)
{
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_cache_create: out is NULL");
    *out = cx_calloc(1, sizeof **out);
    if (!*out) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory creating a cache");
    return CIRCUITS_OK;
}

/* Empty and holding no memory: a new cache. */
static void cache_release(circuits_cache *c)
{
    for (size_t i = 0; i < c->cap_entries; i++) cx_free(c->entries[i].name);
    cx_free(c->entries);
    cx_free(c->block);
    memset(c, 0, sizeof *c);
}

void circuits_cache_free(circuits_cache *c)
{
    if (!c) return;
    cache_release(c);
    cx_free(c);
}

/* Room for n entries and `floats` floats. The block is replaced only when it must grow (the old
 * one is freed first: its contents are being discarded and the peak stays lower). */
static int cache_reserve(circuits_cache *c, size_t n, size_t floats)
{
    if (n > c->cap_entries) {
        cx_cache_entry *e = cx_realloc(c->entries, n * sizeof *e);
        if (!e) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: the cache needs %zu entry records", n);
        memset(e + c->cap_entries, 0, (n - c->cap_entries) * sizeof *e);
        c->entries = e;
        c->cap_entries = n;
    }
    if (floats > c->cap_floats) {
        cx_free(c->block);
        c->block = NULL;
        c->cap_floats = 0;
        c->block = floats < SIZE_MAX / sizeof(float) ? cx_malloc(floats * sizeof(float)) : NULL;
        if (!c->block)
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: the cache needs %zu MiB", floats * sizeof(float) >> 20);
        c->cap_floats = floats;
    }
    return CIRCUITS_OK;
}

/* e->name = a copy of name, keeping the copy an earlier run left there when it is the same. */
static int entry_name(cx_cache_entry *e, const char *name)
{
    if (e->name && strcmp(e->name, name) == 0) return CIRCUITS_OK;
    char *copy = cx_strdup(name);
    if (!copy) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory copying the cache entry name '%s'", name);
    cx_free(e->name);
    e->name = copy;
    return CIRCUITS_OK;
}

static int visit_mark(const circuits_context *ctx, size_t i, void *arg)
{
    (void)ctx;
    ((bool *)arg)[i] = true;
    return CIRCUITS_OK;
}

/* The shape point p's hook sees in run r (the logits at the chosen positions only; attention
 * over a KV cache's keys too). */
static int point_shape(const circuits_context *ctx, const cx_run *r, const cx_hook_point *p, int64_t *shape,
                       int32_t *head_axis)
{
    int64_t T = p->kind == HK_UNEMBED_OUT && r->positions ? r->n_positions : r->pos;
    return cx_hook_shape(ctx, p, r->batch, T, r->kv ? r->kv->len : 0, shape, head_axis);
}

/* Lays the selected points run r reaches out in cache and points dst[i] of each into its block. */
static int cache_layout(circuits_context *ctx, const bool *sel, const cx_run *r, circuits_cache *cache, float **dst)
{
    size_t n = 0, floats = 0;
    for (size_t i = 0; i < ctx->hooks.n_points; i++) {
        if (!sel[i] || !cx_run_reaches(r, &ctx->hooks.points[i])) continue;
        int64_t shape[CIRCUITS_MAX_DIMS];
        int32_t ha;
        int nd = point_shape(ctx, r, &ctx->hooks.points[i], shape, &ha);
        size_t numel = 1;
        for (int d = 0; d < nd; d++)
            if (!cx_mul_size(numel, (size_t)shape[d], &numel)) return cx_fail(CIRCUITS_E_RANGE, "cache size overflows");
        if (floats + numel < floats) return cx_fail(CIRCUITS_E_RANGE, "cache size overflows");
        floats += numel;
        n++;
    }
    int rc = cache_reserve(cache, n, floats);
    if (rc) return rc;
    float *p = cache->block;
    size_t k = 0;
    for (size_t i = 0; i < ctx->hooks.n_points; i++) {
        if (!sel[i] || !cx_run_reaches(r, &ctx->hooks.points[i])) continue;
        cx_cache_entry *e = &cache->entries[k++];
        if ((rc = entry_name(e, ctx->hooks.points[i].name))) return rc;
        e->ndim = point_shape(ctx, r, &ctx->hooks.points[i], e->shape, &e->head_axis);
        e->layer = ctx->hooks.points[i].layer;
        e->data = p;
        dst[i] = p;
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= (size_t)e->shape[d];
        p += numel;
    }
    cache->n = n;
    cache->floats = floats;
    return CIRCUITS_OK;
}

static int run_with_cache(circuits_context *ctx, cx_run *r, const char *const *names_filter, size_t n_filter,
                          circuits_cache *cache)
{
    /* one allocation: dst [n_points] (where each cached point goes), then sel [n_points] */
    size_t n_points = ctx->hooks.n_points;
    float **dst = cx_calloc(n_points, sizeof *dst + sizeof(bool));
    if (!dst) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory selecting hook points");
    bool *sel = (bool *)(dst + n_points);
    int rc = CIRCUITS_OK;
    for (size_t f = 0; f < n_filter && !rc; f++) {
        if (!names_filter[f]) rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "run_with_cache: names_filter[%zu] is NULL", f);
        else rc = cx_hooks_select(ctx, names_filter[f], visit_mark, sel);
    }
    if (!n_filter)
        for (size_t i = 0; i < ctx->hooks.n_points; i++) sel[i] = true;
    if (!rc) rc = cache_layout(ctx, sel, r, cache, dst);
    if (!rc) {
        r->cache_dst = dst;
        r->held = true; /* the guard was taken before the cache was touched */
        rc = cx_context_run(ctx, r);
    }
    cx_free(dst);
    return rc;
}

/* Both public runners: the cache is refused outright, not touched, when the run cannot start
 * (from a hook callback it may be the one the running pass is filling). */
static int run_cached(circuits_context *ctx, cx_run *r, const char *const *names_filter, size_t n_filter,
                      circuits_cache *cache)
{
    const char *fn = r->fn;
    if (n_filter && !names_filter) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: names_filter is NULL", fn);
    if (r->batch < 1 || r->pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "run_with_cache: batch and pos must be at least 1");
    int rc = cx_context_enter(ctx, fn);
    if (rc) return rc;
    if (cache->filling) {
        cx_context_leave(ctx);
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the cache is being filled by a run in progress", fn);
    }
    cache->filling = true;
    rc = run_with_cache(ctx, r, names_filter, n_filter, cache);
    cache->filling = false;
    cx_context_leave(ctx);
    /* A failed run leaves an empty cache holding no memory, as new, never a partial one: after an
     * allocation failure the memory goes back at once, and nothing outlives what failed. */
    if (rc) cache_release(cache);
    return rc;
}

int circuits_context_run_with_cache(circuits_context *ctx, const int32_t *tokens, int64_t B, int64_t T,
                                    const char *const *names_filter, size_t n_filter, circuits_cache *cache,
                                    float *logits, float *loss, float *per_token_loss)
{
    if (!ctx || !cache)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_run_with_cache: ctx and cache must not be NULL");
    cx_run r = cx_run_init(ctx, "circuits_context_run_with_cache", tokens, B, T);
    r.out = logits;
    r.loss = loss;
    r.per_token_loss = per_token_loss;
    return run_cached(ctx, &r, names_filter, n_filter, cache);
}

int circuits_context_run_with_cache_opts(circuits_context *ctx, const circuits_run_options *opts,
                                         const int32_t *tokens, int64_t B, int64_t T,
                                         const char *const *names_filter, size_t n_filter, circuits_cache *cache,
                                         float *out, float *loss, float *per_token_loss)
{
    const char *fn = "circuits_context_run_with_cache_opts";
    if (!ctx || !cache) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx and cache must not be NULL", fn);
    cx_run r;
    int rc = cx_run_from_options(ctx, fn, opts, tokens, B, T, &r);
    if (rc) return rc;
    r.out = out;
    r.loss = loss;
    r.per_token_loss = per_token_loss;
    return run_cached(ctx, &r, names_filter, n_filter, cache);
}

int cx_cache_begin(circuits_cache *c, const char *fn)
{
    if (c->filling) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the cache is being filled by a run in progress", fn);
    c->filling = true;
    return CIRCUITS_OK;
}

void cx_cache_end(circuits_cache *c, int rc)
{
    c->filling = false;
    if (rc) cache_release(c);
}

int cx_cache_layout(circuits_cache *c, const cx_cache_spec *specs, size_t n, float **data)
{
    size_t floats = 0;
    for (size_t i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < specs[i].ndim; d++)
            if (!cx_mul_size(numel, (size_t)specs[i].shape[d], &numel)) return cx_fail(CIRCUITS_E_RANGE, "cache size overflows");
        if (floats + numel < floats) return cx_fail(CIRCUITS_E_RANGE, "cache size overflows");
        floats += numel;
    }
    int rc = cache_reserve(c, n, floats);
    if (rc) return rc;
    float *p = c->block;
    for (size_t i = 0; i < n; i++) {
        const cx_cache_spec *sp = &specs[i];
        cx_cache_entry *e = &c->entries[i];
        char name[288];
        snprintf(name, sizeof name, "%s%s", sp->name, sp->suffix ? sp->suffix : "");
        if ((rc = entry_name(e, name))) return rc;
        e->ndim = sp->ndim;
        e->head_axis = sp->head_axis;
        e->layer = sp->layer;
        memset(e->shape, 0, sizeof e->shape);
        memcpy(e->shape, sp->shape, (size_t)sp->ndim * sizeof(int64_t));
        e->data = p;
        data[i] = p;
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= (size_t)e->shape[d];
        p += numel;
    }
    c->n = n;
    c->floats = floats;
    return CIRCUITS_OK;
}

size_t circuits_cache_count(const circuits_cache *c) { return c ? c->n : 0; }

size_t circuits_cache_nbytes(const circuits_cache *c) { return c ? c->floats * sizeof(float) : 0; }

static void fill(const cx_cache_entry *e, circuits_tensor *out)
{
    memset(out, 0, sizeof *out);
    out->name = e->name;
    out->layer = e->layer;
    out->head = -1;
    out->head_axis = e->head_axis;
    out->ndim = e->ndim;
    memcpy(out->shape, e->shape, sizeof out->shape);
    cx_contiguous_strides(e->ndim, out->shape, out->strides);
    out->data = e->data;
}

int circuits_cache_at(const circuits_cache *c, size_t index, circuits_tensor *out)
{
    if (!c || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_cache_at: NULL argument");
    if (index >= c->n) return cx_fail(CIRCUITS_E_RANGE, "cache index %zu out of range (%zu entries)", index, c->n);
    fill(&c->entries[index], out);
    return CIRCUITS_OK;
}

int circuits_cache_get(const circuits_cache *c, const char *name, circuits_tensor *out)
{
    if (!c || !name || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_cache_get: NULL argument");
    char full[256];
    /* a name too long to expand names no entry (as cx_hooks_select treats it), not a buffer error */
    if (cx_expand_act_name(name, full, sizeof full) != CIRCUITS_OK)
        return cx_fail(CIRCUITS_E_NOT_FOUND, "the cache holds no '%s'", name);
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->entries[i].name, full) == 0) {
            fill(&c->entries[i], out);
            return CIRCUITS_OK;
        }
    if (strcmp(full, name) != 0)
        return cx_fail(CIRCUITS_E_NOT_FOUND, "the cache holds no '%s' (read as '%s')", name, full);
    return cx_fail(CIRCUITS_E_NOT_FOUND, "the cache holds no '%s'", name);
}
