/* Comparing two models hook point by hook point (quantization as an intervention): model a runs
 * with an editor at each selected point that copies its activation aside, model b runs with an
 * editor that measures its activation against that copy as the pass makes it. Both runs go
 * through the door with the same kind of editor at the same points, so two identical models take
 * the same code path and compare exactly equal; b's activations are never stored. */
#include "context.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

typedef struct diff_stat {
    char *name;
    const char *kind; /* into name */
    int32_t layer;
    int32_t head;  /* -1: the whole point */
    int64_t size;  /* elements of the activation */
    int64_t numel; /* elements compared */
    double aa, bb, ab, dd, max_abs;
} diff_stat;

struct circuits_diff {
    diff_stat *e;
    size_t n;
};

/* One selected point of a run: its entry (followed, with per_head, by one per head), and where
 * model a's activation is kept. The activation is [outer, heads, inner] around its head axis. */
typedef struct diff_slot {
    diff_stat *st;
    float *a;
    int64_t outer, heads, inner; /* heads 0: no per-head entries */
} diff_slot;

void circuits_diff_options_init(circuits_diff_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->logits = 1;
}

static int keep_a(const circuits_tensor *t, void *user)
{
    const diff_slot *s = user;
    memcpy(s->a, t->data, (size_t)s->st->size * sizeof(float));
    return CIRCUITS_HOOK_CONTINUE;
}

/* The running sums of one comparison over n elements. An element that is the same infinity in
 * both (the -inf of a masked attention score) is left out: it says nothing about the models and
 * would make every sum infinite. A NaN anywhere stays visible in max_abs too. */
static void accumulate(diff_stat *st, const float *a, const float *b, int64_t n)
{
    double aa = 0, bb = 0, ab = 0, dd = 0, mx = st->max_abs;
    int64_t used = 0;
    for (int64_t i = 0; i < n; i++) {
        if (a[i] == b[i] && isinf(a[i])) continue;
        used++;
        double x = a[i], y = b[i], d = fabs(x - y);
        aa += x * x;
        bb += y * y;
        ab += x * y;
        dd += d * d;
        /* once NaN, stays NaN: a later finite d must not replace it (d <= NaN is false) */
        if (!(d <= mx) && !isnan(mx)) mx = d;
    }
    st->aa += aa;
    st->bb += bb;
    st->ab += ab;
    st->dd += dd;
    st->max_abs = mx;
    st->numel += used;
}

static int compare_b(const circuits_tensor *t, void *user)
{
    const diff_slot *s = user;
    accumulate(s->st, s->a, t->data, s->st->size);
    for (int64_t o = 0; o < s->outer; o++)
        for (int64_t h = 0; h < s->heads; h++) {
            int64_t off = (o * s->heads + h) * s->inner;
            accumulate(&s->st[1 + h], s->a + off, t->data + off, s->inner);
        }
    return CIRCUITS_HOOK_CONTINUE;
}

static int visit_mark(const circuits_context *ctx, size_t i, void *arg)
{
    (void)ctx;
    ((bool *)arg)[i] = true;
    return CIRCUITS_OK;
}

/* The fields that make two models' hook points correspond; the first that differs, by name. */
static int same_shapes(const circuits_config *a, const circuits_config *b)
{
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
#define F(x) {#x, offsetof(circuits_config, x)}
        F(n_layers), F(d_model), F(n_heads), F(d_head), F(d_mlp), F(n_key_value_heads), F(d_vocab), F(d_vocab_out),
#undef F
    };
    for (size_t i = 0; i < CX_COUNT(fields); i++) {
        int32_t x, y;
        memcpy(&x, (const char *)a + fields[i].off, sizeof x);
        memcpy(&y, (const char *)b + fields[i].off, sizeof y);
        if (x != y)
            return cx_fail(CIRCUITS_E_CONFIG, "circuits_model_diff: the models differ in %s (%d and %d)", fields[i].name, x, y);
    }
    return CIRCUITS_OK;
}

/* The hook tables must list the same points in the same order with the same shapes. */
static int same_points(const circuits_context *ca, const circuits_context *cb, int64_t batch, int64_t pos)
{
    const cx_hook_table *ta = &ca->hooks, *tb = &cb->hooks;
    for (size_t i = 0; i < ta->n_points || i < tb->n_points; i++) {
        const char *na = i < ta->n_points ? ta->points[i].name : "(none)";
        const char *nb = i < tb->n_points ? tb->points[i].name : "(none)";
        if (strcmp(na, nb) != 0)
            return cx_fail(CIRCUITS_E_CONFIG, "circuits_model_diff: hook point %zu is '%s' in model a and '%s' in model b", i,
                           na, nb);
        int64_t sa[CIRCUITS_MAX_DIMS], sb[CIRCUITS_MAX_DIMS];
        int32_t ha, hb;
        int nda = cx_hook_shape(ca, &ta->points[i], batch, pos, 0, sa, &ha);
        int ndb = cx_hook_shape(cb, &tb->points[i], batch, pos, 0, sb, &hb);
        if (nda != ndb || memcmp(sa, sb, (size_t)nda * sizeof sa[0]) != 0)
            return cx_fail(CIRCUITS_E_SHAPE, "circuits_model_diff: '%s' has different shapes in the two models", na);
    }
    return CIRCUITS_OK;
}

static int stat_name(diff_stat *st, const char *name, int32_t layer, int32_t head)
{
    st->head = head;
    st->name = cx_strdup(name);
    if (!st->name) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory naming a diff entry");
    st->kind = st->name;
    if (layer >= 0 && strncmp(name, "blocks.", 7) == 0) {
        const char *dot = strchr(name + 7, '.');
        if (dot) st->kind = st->name + (dot + 1 - name);
    }
    st->layer = layer;
    return CIRCUITS_OK;
}

void circuits_diff_free(circuits_diff *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->n; i++) cx_free(d->e[i].name);
    cx_free(d->e);
    cx_free(d);
}

/* Everything one comparison allocates besides the result. */
typedef struct diff_work {
    circuits_context *ca, *cb;
    bool *sel;
    diff_slot *slots;
    cx_edit *edits;
    float *block;      /* model a's selected activations */
    float *logits;     /* [2, batch, pos, d_vocab_out]: a's, then b's */
    size_t n_sel;      /* selected points: edits [n_sel] */
} diff_work;

static void work_free(diff_work *w)
{
    circuits_context_free(w->ca);
    circuits_context_free(w->cb);
    cx_free(w->sel);
    cx_free(w->slots);
    cx_free(w->edits);
    cx_free(w->block);
    cx_free(w->logits);
}

/* The result's entries (one per selected point, the logits last) and the slots, edits and block
 * of the two runs. */
static int diff_layout(diff_work *w, const circuits_diff_options *o, int64_t batch, int64_t pos, circuits_diff *d)
{
    const cx_hook_table *t = &w->ca->hooks;
    size_t n_sel = 0, floats = 0, n_heads = 0;
    for (size_t i = 0; i < t->n_points; i++) {
        if (!w->sel[i]) continue;
        int64_t shape[CIRCUITS_MAX_DIMS];
        int32_t ha;
        int nd = cx_hook_shape(w->ca, &t->points[i], batch, pos, 0, shape, &ha);
        if (o->per_head && ha >= 0) n_heads += (size_t)shape[ha];
        size_t numel = 1;
        for (int k = 0; k < nd; k++)
            if (!cx_mul_size(numel, (size_t)shape[k], &numel))
                return cx_fail(CIRCUITS_E_RANGE, "circuits_model_diff: activations too large");
        if (floats + numel < floats) return cx_fail(CIRCUITS_E_RANGE, "circuits_model_diff: activations too large");
        floats += numel;
        n_sel++;
    }
    w->n_sel = n_sel;
    size_t n = n_sel + n_heads + (o->logits != 0);
    d->e = cx_calloc(n ? n : 1, sizeof *d->e);
    w->slots = cx_calloc(n_sel ? n_sel : 1, sizeof *w->slots);
    w->edits = cx_calloc(n_sel ? n_sel : 1, sizeof *w->edits);
    w->block = floats && floats < SIZE_MAX / sizeof(float) ? cx_malloc(floats * sizeof(float)) : NULL;
    if (!d->e || !w->slots || !w->edits || (floats && !w->block))
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: comparing two models needs %zu MiB of activations",
                       floats * sizeof(float) >> 20);
    float *p = w->block;
    int rc;
    size_t e = 0; /* entries made */
    for (size_t i = 0, k = 0; i < t->n_points; i++) {
        if (!w->sel[i]) continue;
        const cx_hook_point *hp = &t->points[i];
        diff_stat *st = &d->e[e];
        int64_t shape[CIRCUITS_MAX_DIMS];
        int32_t ha;
        int nd = cx_hook_shape(w->ca, hp, batch, pos, 0, shape, &ha);
        diff_slot *sl = &w->slots[k];
        *sl = (diff_slot){st, p, 1, 0, 1};
        if (o->per_head && ha >= 0) {
            sl->heads = shape[ha];
            for (int j = 0; j < ha; j++) sl->outer *= shape[j];
            for (int j = ha + 1; j < nd; j++) sl->inner *= shape[j];
        }
        for (int64_t h = -1; h < sl->heads; h++) {
            if ((rc = stat_name(&d->e[e], hp->name, hp->layer, (int32_t)h))) return rc;
            d->n = ++e;
        }
        st->size = 1;
        for (int j = 0; j < nd; j++) st->size *= shape[j];
        /* cached_only: at a point fired several times per run, the firing run_with_cache keeps */
        w->edits[k] = (cx_edit){hp->layer, hp->kind, keep_a, sl, true, 0};
        cx_edit_point(w->ca, hp, &w->edits[k]);
        p += st->size;
        k++;
    }
    if (o->logits) {
        diff_stat *st = &d->e[e];
        if ((rc = stat_name(st, "logits", -1, -1))) return rc;
        d->n = n;
        int64_t V = w->ca->model->cfg.d_vocab_out;
        size_t nl, lf;
        if (!cx_mul_size((size_t)(batch * pos), (size_t)V, &nl) || !cx_mul_size(nl, 2 * sizeof(float), &lf))
            return cx_fail(CIRCUITS_E_RANGE, "circuits_model_diff: the logits are too large");
        st->size = (int64_t)nl;
        if (!(w->logits = cx_malloc(lf)))
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory for the logits of two models");
    }
    return CIRCUITS_OK;
}

int circuits_model_diff(const circuits_model *a, const circuits_model *b, const int32_t *tokens, int64_t batch,
                        int64_t pos, const circuits_diff_options *opts, circuits_diff **out)
{
    const char *fn = "circuits_model_diff";
    if (out) *out = NULL;
    if (!a || !b || !tokens || !out)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_diff: a, b, tokens and out must not be NULL");
    circuits_diff_options o;
    circuits_diff_options_init(&o);
    static const size_t versions[] = {sizeof(circuits_diff_options)}; /* 0.6 */
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn))) return rc;
    if (o.n_names && !o.names)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_diff: names is NULL with n_names %zu", o.n_names);
    if (o.logits != 0 && o.logits != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_diff: logits must be 0 or 1 (got %d)", o.logits);
    if (o.per_head != 0 && o.per_head != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_diff: per_head must be 0 or 1 (got %d)", o.per_head);
    if ((rc = same_shapes(&a->cfg, &b->cfg))) return rc;
    if (batch < 1 || pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_model_diff: batch %lld and pos %lld must be at least 1",
                       (long long)batch, (long long)pos);
    /* before any [batch, pos]-sized size is computed; the door checks the tokens */
    int32_t n_ctx = a->cfg.n_ctx < b->cfg.n_ctx ? a->cfg.n_ctx : b->cfg.n_ctx;
    if (pos > n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_model_diff: %lld positions exceed the models' n_ctx = %d",
                       (long long)pos, n_ctx);
    if (batch > INT64_MAX / pos / (int64_t)sizeof(float))
        return cx_fail(CIRCUITS_E_RANGE, "circuits_model_diff: batch %lld is too large", (long long)batch);

    diff_work w = {0};
    circuits_diff *d = cx_calloc(1, sizeof *d);
    if (!d) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory comparing two models");
    rc = circuits_context_create(&w.ca, a, NULL);
    if (!rc) rc = circuits_context_create(&w.cb, b, NULL);
    if (!rc) rc = same_points(w.ca, w.cb, batch, pos);
    if (!rc && !(w.sel = cx_calloc(w.ca->hooks.n_points ? w.ca->hooks.n_points : 1, sizeof *w.sel)))
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory selecting hook points");
    for (size_t f = 0; f < o.n_names && !rc; f++) {
        if (!o.names[f]) rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_diff: names[%zu] is NULL", f);
        else rc = cx_hooks_select(w.ca, o.names[f], visit_mark, w.sel);
    }
    if (!rc && !o.n_names)
        for (size_t i = 0; i < w.ca->hooks.n_points; i++) w.sel[i] = true;
    if (!rc) rc = diff_layout(&w, &o, batch, pos, d);
    size_t n_sel = w.n_sel;
    int64_t nl = !rc && o.logits ? d->e[d->n - 1].size : 0;
    if (!rc) {
        cx_run run = cx_run_init(w.ca, fn, tokens, batch, pos);
        run.attention_mask = o.attention_mask;
        run.edits = w.edits;
        run.n_edits = n_sel;
        run.out = w.logits;
        rc = cx_context_run(w.ca, &run);
    }
    if (!rc) {
        for (size_t k = 0; k < n_sel; k++) w.edits[k].fn = compare_b;
        cx_run run = cx_run_init(w.cb, fn, tokens, batch, pos);
        run.attention_mask = o.attention_mask;
        run.edits = w.edits;
        run.n_edits = n_sel;
        run.out = w.logits ? w.logits + nl : NULL;
        rc = cx_context_run(w.cb, &run);
    }
    if (!rc && o.logits) accumulate(&d->e[d->n - 1], w.logits, w.logits + nl, nl);
    work_free(&w);
    if (rc) {
        circuits_diff_free(d);
        return rc;
    }
    *out = d;
    return CIRCUITS_OK;
}

size_t circuits_diff_count(const circuits_diff *d)
{
    return d ? d->n : 0;
}

int circuits_diff_at(const circuits_diff *d, size_t index, circuits_diff_entry *out)
{
    if (!d || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_diff_at: diff and out must not be NULL");
    static const size_t versions[] = {sizeof(circuits_diff_entry)}; /* 0.6 */
    uint32_t size = out->size;
    int rc = cx_struct_size_check(size, versions, CX_COUNT(versions), "circuits_diff_at", true);
    if (rc) return rc;
    if (index >= d->n)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_diff_at: index %zu is out of range (%zu entries)", index, d->n);
    const diff_stat *st = &d->e[index];
    double na = sqrt(st->aa), nb = sqrt(st->bb);
    circuits_diff_entry e = {
        .size = (uint32_t)sizeof e,
        .layer = st->layer,
        .head = st->head,
        .name = st->name,
        .kind = st->kind,
        .numel = st->numel,
        .rel_error = na > 0 ? sqrt(st->dd) / na : st->dd > 0 ? INFINITY : 0.0,
        .max_abs = st->max_abs,
        .cosine = na > 0 && nb > 0 ? st->ab / (na * nb) : na == 0 && nb == 0 ? 1.0 : 0.0,
        .norm_a = na,
        .norm_b = nb,
    };
    /* NaN in the sums: keep it visible rather than folding it into a branch above */
    if (isnan(st->dd) || isnan(st->aa)) e.rel_error = NAN;
    if (isnan(st->ab) || isnan(st->bb) || isnan(st->aa)) e.cosine = NAN;
    memcpy(out, &e, size < sizeof e ? size : sizeof e);
    out->size = size < sizeof e ? size : (uint32_t)sizeof e;
    return CIRCUITS_OK;
}
