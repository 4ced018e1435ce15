/* Activation patching over TransformerLens's grids (patching.py), with a metric, and its
 * incremental form.
 *
 * A grid cell is one run of the corrupted tokens in which an editor (context.h) copies one slice
 * of the clean activation of one hook point into the corrupted one, as TransformerLens's patch
 * setters do, followed by the metric of its logits. Every run goes through the door.
 *
 * Incremental (the default): a patch at block l that first changes position p leaves every
 * activation of blocks < l and of positions < p as the corrupted run had it (attention is
 * causal). So the patched run starts at block l from the corrupted run's residual stream
 * (start_at_layer with input), and runs positions p .. T-1 only, continuing a KV cache that holds
 * the corrupted run's keys (rotated, as hook_rot_k) and values of positions < p. The corrupted
 * ("base") run is made once per grid, caching resid_pre, the keys and the values of every block
 * and the logits the metric reads. A run appends its own keys and values at positions >= p of
 * blocks >= l into the cache; before the next cell they are restored from the base run where
 * that cell reads them (dirty[] tracks the first overwritten position per block). */
#include "context.h"
#include "metric.h"

#include <string.h>

/* Per kind: the hook patched and how the grid indexes it. */
enum grid { G_LAYER_POS, G_LAYER_POS_HEAD, G_LAYER_HEAD, G_LAYER_HEAD_DEST, G_LAYER_HEAD_DEST_SRC };

static const struct {
    cx_hook_kind hook;
    enum grid grid;
    const char *name; /* TransformerLens's activation_name */
} KINDS[] = {
    [CIRCUITS_PATCH_RESID_PRE] = {HK_RESID_PRE, G_LAYER_POS, "resid_pre"},
    [CIRCUITS_PATCH_RESID_MID] = {HK_RESID_MID, G_LAYER_POS, "resid_mid"},
    [CIRCUITS_PATCH_RESID_POST] = {HK_RESID_POST, G_LAYER_POS, "resid_post"},
    [CIRCUITS_PATCH_ATTN_OUT] = {HK_ATTN_OUT, G_LAYER_POS, "attn_out"},
    [CIRCUITS_PATCH_MLP_OUT] = {HK_MLP_OUT, G_LAYER_POS, "mlp_out"},
    [CIRCUITS_PATCH_HEAD_Z_BY_POS] = {HK_Z, G_LAYER_POS_HEAD, "z"},
    [CIRCUITS_PATCH_HEAD_Q_BY_POS] = {HK_Q, G_LAYER_POS_HEAD, "q"},
    [CIRCUITS_PATCH_HEAD_K_BY_POS] = {HK_K, G_LAYER_POS_HEAD, "k"},
    [CIRCUITS_PATCH_HEAD_V_BY_POS] = {HK_V, G_LAYER_POS_HEAD, "v"},
    [CIRCUITS_PATCH_HEAD_PATTERN_BY_POS] = {HK_PATTERN, G_LAYER_HEAD_DEST, "pattern"},
    [CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC] = {HK_PATTERN, G_LAYER_HEAD_DEST_SRC, "pattern"},
    [CIRCUITS_PATCH_HEAD_Z_ALL_POS] = {HK_Z, G_LAYER_HEAD, "z"},
    [CIRCUITS_PATCH_HEAD_Q_ALL_POS] = {HK_Q, G_LAYER_HEAD, "q"},
    [CIRCUITS_PATCH_HEAD_K_ALL_POS] = {HK_K, G_LAYER_HEAD, "k"},
    [CIRCUITS_PATCH_HEAD_V_ALL_POS] = {HK_V, G_LAYER_HEAD, "v"},
    [CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS] = {HK_PATTERN, G_LAYER_HEAD, "pattern"},
};

void circuits_patch_options_init(circuits_patch_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->incremental = 1;
}

/* Heads of the grid's head axis: k and v index key/value heads (TransformerLens likewise). */
static int64_t grid_heads(const circuits_config *c, int32_t kind)
{
    cx_hook_kind h = KINDS[kind].hook;
    return h == HK_K || h == HK_V ? c->n_key_value_heads : c->n_heads;
}

int circuits_patch_grid_shape(const circuits_model *model, int32_t kind, int64_t pos, int64_t *shape,
                              int32_t *ndim)
{
    if (!model || !shape || !ndim)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_patch_grid_shape: model, shape and ndim must not be NULL");
    if (kind < 0 || kind >= (int32_t)CX_COUNT(KINDS))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_patch_grid_shape: unknown patch kind %d", kind);
    if (pos < 1) return cx_fail(CIRCUITS_E_SHAPE, "circuits_patch_grid_shape: pos %lld < 1", (long long)pos);
    const circuits_config *c = &model->cfg;
    int64_t L = c->n_layers, H = grid_heads(c, kind);
    switch (KINDS[kind].grid) {
    case G_LAYER_POS: *ndim = 2; shape[0] = L; shape[1] = pos; break;
    case G_LAYER_POS_HEAD: *ndim = 3; shape[0] = L; shape[1] = pos; shape[2] = H; break;
    case G_LAYER_HEAD: *ndim = 2; shape[0] = L; shape[1] = H; break;
    case G_LAYER_HEAD_DEST: *ndim = 3; shape[0] = L; shape[1] = H; shape[2] = pos; break;
    case G_LAYER_HEAD_DEST_SRC: *ndim = 4; shape[0] = L; shape[1] = H; shape[2] = pos; shape[3] = pos; break;
    }
    return CIRCUITS_OK;
}

/* One cell: what the editor copies. Positions are absolute; the run's first position is P. */
typedef struct cell {
    enum grid grid;
    bool pattern;       /* the point is hook_pattern [B, H, dest, src]; else [B, pos, ...] */
    const float *clean; /* the clean activation [B, T, ...] (pattern: [B, H, T, T]) */
    int64_t T, pos, head, src, P;
} cell;

/* TransformerLens's patch setters on the run's activation a (its new positions P .. P+T'-1). */
static int patch_edit(const circuits_tensor *a, void *user)
{
    const cell *c = user;
    int64_t B = a->shape[0], T = c->T, P = c->P;
    float *d = a->data;
    for (int64_t b = 0; b < B; b++) {
        if (!c->pattern) {
            /* [B, T', rest]; rest = [H, dh] for heads */
            int64_t rest = a->strides[1];
            const float *src = c->clean + b * T * rest;
            float *dst = d + b * a->strides[0];
            if (c->grid == G_LAYER_POS) {
                memcpy(dst + (c->pos - P) * rest, src + c->pos * rest, (size_t)rest * sizeof(float));
            } else {
                int64_t hs = a->strides[2], dh = a->shape[3];
                int64_t t0 = c->grid == G_LAYER_HEAD ? P : c->pos, t1 = c->grid == G_LAYER_HEAD ? P + a->shape[1] : c->pos + 1;
                for (int64_t t = t0; t < t1; t++)
                    memcpy(dst + (t - P) * rest + c->head * hs, src + t * rest + c->head * hs, (size_t)dh * sizeof(float));
            }
        } else {
            /* pattern [B, H, T', P + T'] against clean [B, H, T, T]: rows of length T both */
            int64_t H = a->shape[1];
            const float *src = c->clean + (b * H + c->head) * T * T;
            float *dst = d + b * a->strides[0] + c->head * a->strides[1];
            if (c->grid == G_LAYER_HEAD)
                memcpy(dst, src + P * T, (size_t)(a->shape[2] * T) * sizeof(float));
            else if (c->grid == G_LAYER_HEAD_DEST)
                memcpy(dst + (c->pos - P) * T, src + c->pos * T, (size_t)T * sizeof(float));
            else
                dst[(c->pos - P) * T + c->src] = src[c->pos * T + c->src];
        }
    }
    return CIRCUITS_HOOK_CONTINUE;
}

/* The state of one grid sweep. */
typedef struct sweep {
    circuits_context *ctx;
    const char *fn;
    const int32_t *tokens;
    int64_t B, T, D, KD, V;
    int32_t L;
    cx_hook_kind hook;
    const circuits_metric *metric;
    circuits_metric pm;       /* the caller's, checked */
    bool all;                 /* it reads every position */
    int64_t *u;               /* [n]: the distinct positions the metric reads (ascending) */
    int64_t n;                /* n == T and u == 0 .. T-1 for metrics reading every position */
    int64_t *local;           /* [n]: run-relative logit positions */
    float *logits;            /* [B, n, V]: what the metric reads */
    float *run_logits;        /* [B, n, V]: what an incremental run computes (its positions >= p) */
    /* incremental only */
    bool incremental;
    float *base_resid;        /* [L, B, T, D] */
    float *base_k, *base_v;   /* [L, B, T, KD] */
    float *base_logits;       /* [B, n, V] */
    float *input;             /* [B, T, D]: rows >= p of resid_pre */
    circuits_kv_cache *kv;    /* cap T */
    int64_t *dirty;           /* [L]: first position of the cache a run overwrote, T if none */
} sweep;

static void sweep_free(sweep *s)
{
    cx_free(s->u);
    cx_free(s->local);
    cx_free(s->logits);
    cx_free(s->run_logits);
    cx_free(s->base_resid);
    cx_free(s->base_k);
    cx_free(s->base_v);
    cx_free(s->base_logits);
    cx_free(s->input);
    cx_free(s->dirty);
    circuits_kv_cache_free(s->kv);
}

/* The metric, checked, and the positions it reads (every one for LOSS and CALLBACK). */
static int metric_positions(sweep *s)
{
    int64_t B = s->B, T = s->T;
    int rc = cx_metric_check(s->metric, &s->pm, B, T, s->V, s->fn);
    if (rc) return rc;
    s->u = cx_malloc((size_t)(B > T ? B : T) * sizeof(int64_t));
    s->local = cx_malloc((size_t)T * sizeof(int64_t));
    if (!s->u || !s->local) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", s->fn);
    s->all = cx_metric_reads_all(&s->pm);
    if (s->all) {
        for (int64_t t = 0; t < T; t++) s->u[t] = t;
        s->n = T;
    } else {
        s->n = cx_metric_positions(&s->pm, B, T, s->u);
    }
    return CIRCUITS_OK;
}

/* The metric of logits [B, n, V] at positions u. */
static int metric_of(const sweep *s, const float *logits, float *value)
{
    return cx_metric_value(&s->pm, logits, s->B, s->T, s->V, s->all ? NULL : s->u, s->all ? 0 : s->n, value, s->fn);
}

static int sweep_alloc(sweep *s)
{
    size_t lg = (size_t)(s->B * s->n * s->V) * sizeof(float);
    s->logits = cx_malloc(lg);
    if (!s->logits) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", s->fn);
    if (!s->incremental) return CIRCUITS_OK;
    size_t LBT = (size_t)s->L * (size_t)(s->B * s->T);
    s->run_logits = cx_malloc(lg);
    s->base_logits = cx_malloc(lg);
    s->base_resid = cx_malloc(LBT * (size_t)s->D * sizeof(float));
    s->base_k = cx_malloc(LBT * (size_t)s->KD * sizeof(float));
    s->base_v = cx_malloc(LBT * (size_t)s->KD * sizeof(float));
    s->input = cx_malloc((size_t)(s->B * s->T * s->D) * sizeof(float));
    s->dirty = cx_malloc((size_t)s->L * sizeof(int64_t));
    if (!s->run_logits || !s->base_logits || !s->base_resid || !s->base_k || !s->base_v || !s->input || !s->dirty)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for the incremental patching state", s->fn);
    return circuits_kv_cache_create(&s->kv, s->ctx->model, s->B, s->T);
}

/* The corrupted run, caching resid_pre, keys (rotated) and values of every block, and the
 * logits the metric reads; then the KV cache holds all of it (nothing dirty). */
static int base_run(sweep *s)
{
    circuits_context *ctx = s->ctx;
    const cx_hook_table *t = &ctx->hooks;
    float **dst = cx_calloc(t->n_points, sizeof *dst);
    if (!dst) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", s->fn);
    bool rotary = ctx->model->cfg.positional_embedding_type == CIRCUITS_POS_ROTARY;
    size_t LR = (size_t)(s->B * s->T * s->D), LK = (size_t)(s->B * s->T * s->KD);
    for (int32_t l = 0; l < s->L; l++) {
        dst[cx_hook_index(t, l, HK_RESID_PRE)] = s->base_resid + l * LR;
        dst[cx_hook_index(t, l, rotary ? HK_ROT_K : HK_K)] = s->base_k + l * LK;
        dst[cx_hook_index(t, l, HK_V)] = s->base_v + l * LK;
    }
    cx_run r = cx_run_init(ctx, s->fn, s->tokens, s->B, s->T);
    r.cache_dst = dst;
    r.positions = s->u;
    r.n_positions = s->n;
    r.out = s->base_logits;
    int rc = cx_context_run(ctx, &r);
    cx_free(dst);
    if (rc) return rc;
    /* kv->k [L, B, cap = T, KD] has the layout of the cached keys */
    memcpy(s->kv->k, s->base_k, s->L * LK * sizeof(float));
    memcpy(s->kv->v, s->base_v, s->L * LK * sizeof(float));
    for (int32_t l = 0; l < s->L; l++) s->dirty[l] = s->T;
    return CIRCUITS_OK;
}

/* Puts the base run's keys and values back at positions [dirty, p) of blocks >= l. */
static void restore_kv(sweep *s, int32_t l, int64_t p)
{
    size_t LK = (size_t)(s->B * s->T * s->KD);
    for (int32_t j = l; j < s->L; j++) {
        if (s->dirty[j] >= p) continue;
        for (int64_t b = 0; b < s->B; b++) {
            size_t off = j * LK + (size_t)((b * s->T + s->dirty[j]) * s->KD), n = (size_t)((p - s->dirty[j]) * s->KD);
            memcpy(s->kv->k + off, s->base_k + off, n * sizeof(float));
            memcpy(s->kv->v + off, s->base_v + off, n * sizeof(float));
        }
        s->dirty[j] = p;
    }
}

/* One cell: the patched run from block l, position p (0 and a full run when not incremental),
 * and its metric. */
static int run_cell(sweep *s, int32_t l, int64_t p, cell *c, float *value)
{
    circuits_context *ctx = s->ctx;
    cx_edit e = {l, s->hook, patch_edit, c};
    cx_run r = cx_run_init(ctx, s->fn, s->tokens, s->B, s->T);
    r.edits = &e;
    r.n_edits = 1;
    if (!s->incremental) {
        c->P = 0;
        r.positions = s->u;
        r.n_positions = s->n;
        r.out = s->logits;
        int rc = cx_context_run(ctx, &r);
        return rc ? rc : metric_of(s, s->logits, value);
    }
    /* logit rows at positions >= p are computed; those before are the base run's */
    int64_t first = 0;
    while (first < s->n && s->u[first] < p) first++;
    int64_t m = s->n - first, Tn = s->T - p;
    if (m == 0) /* the patch changes no position the metric reads (causality): the base logits */
        return metric_of(s, s->base_logits, value);
    for (int64_t i = 0; i < m; i++) s->local[i] = s->u[first + i] - p;
    restore_kv(s, l, p);
    for (int64_t b = 0; b < s->B; b++)
        memcpy(s->input + b * Tn * s->D, s->base_resid + ((size_t)l * s->B * s->T + b * s->T + p) * s->D,
               (size_t)(Tn * s->D) * sizeof(float));
    s->kv->len = p;
    c->P = p;
    r.tokens = NULL;
    r.pos = Tn;
    r.input = s->input;
    r.start = l;
    r.kv = p > 0 ? s->kv : NULL;
    r.positions = s->local;
    r.n_positions = m;
    r.out = s->run_logits;
    int rc = cx_context_run(ctx, &r);
    for (int32_t j = l; j < s->L; j++)
        if (s->dirty[j] > p) s->dirty[j] = p;
    if (rc) return rc;
    size_t row = (size_t)s->V * sizeof(float);
    for (int64_t b = 0; b < s->B; b++) {
        memcpy(s->logits + b * s->n * s->V, s->base_logits + b * s->n * s->V, (size_t)first * row);
        memcpy(s->logits + (b * s->n + first) * s->V, s->run_logits + b * m * s->V, (size_t)m * row);
    }
    return metric_of(s, s->logits, value);
}

/* Every cell of the grid into out, in its row-major order. */
static int sweep_grid(sweep *s, int32_t kind, const float *const *clean, float *out)
{
    enum grid g = KINDS[kind].grid;
    int64_t T = s->T, H = grid_heads(&s->ctx->model->cfg, kind);
    int rc;
    cell c = {.grid = g, .pattern = KINDS[kind].hook == HK_PATTERN, .T = T};
    for (int32_t l = 0; l < s->L; l++) {
        c.clean = clean[l];
        switch (g) {
        case G_LAYER_POS:
            for (int64_t p = 0; p < T; p++) {
                c.pos = p;
                if ((rc = run_cell(s, l, p, &c, &out[l * T + p]))) return rc;
            }
            break;
        case G_LAYER_POS_HEAD:
            for (int64_t p = 0; p < T; p++)
                for (int64_t h = 0; h < H; h++) {
                    c.pos = p;
                    c.head = h;
                    if ((rc = run_cell(s, l, p, &c, &out[(l * T + p) * H + h]))) return rc;
                }
            break;
        case G_LAYER_HEAD:
            for (int64_t h = 0; h < H; h++) {
                c.head = h;
                if ((rc = run_cell(s, l, 0, &c, &out[l * H + h]))) return rc;
            }
            break;
        case G_LAYER_HEAD_DEST:
            for (int64_t h = 0; h < H; h++)
                for (int64_t d = 0; d < T; d++) {
                    c.head = h;
                    c.pos = d;
                    if ((rc = run_cell(s, l, d, &c, &out[(l * H + h) * T + d]))) return rc;
                }
            break;
        case G_LAYER_HEAD_DEST_SRC:
            for (int64_t h = 0; h < H; h++)
                for (int64_t d = 0; d < T; d++)
                    for (int64_t src = 0; src < T; src++) {
                        c.head = h;
                        c.pos = d;
                        c.src = src;
                        if ((rc = run_cell(s, l, d, &c, &out[((l * H + h) * T + d) * T + src]))) return rc;
                    }
            break;
        }
    }
    return CIRCUITS_OK;
}

int circuits_context_activation_patch(circuits_context *ctx, int32_t kind, const int32_t *corrupted_tokens,
                                      int64_t batch, int64_t pos, const float *const *clean,
                                      const circuits_metric *metric, const circuits_patch_options *opts, float *out)
{
    const char *fn = "circuits_context_activation_patch";
    if (!ctx || !corrupted_tokens || !clean || !metric || !out)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "%s: ctx, corrupted_tokens, clean, metric and out must not be NULL", fn);
    circuits_patch_options o;
    circuits_patch_options_init(&o);
    static const size_t versions[] = {sizeof(circuits_patch_options)}; /* 0.5 */
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn))) return rc;
    if (o.incremental != 0 && o.incremental != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: incremental must be 0 or 1 (got %d)", fn, o.incremental);
    if (kind < 0 || kind >= (int32_t)CX_COUNT(KINDS))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: unknown patch kind %d", fn, kind);
    const circuits_config *c = &ctx->model->cfg;
    if (batch < 1 || pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: tokens shape [%lld, %lld]: batch and pos must be at least 1", fn,
                       (long long)batch, (long long)pos);
    if (pos > c->n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld positions exceed the model's n_ctx = %d", fn, (long long)pos,
                       c->n_ctx);
    for (int32_t l = 0; l < c->n_layers; l++) {
        if (cx_hook_index(&ctx->hooks, l, KINDS[kind].hook) < 0)
            return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: this model has no hook '%s' in block %d to patch", fn,
                           KINDS[kind].name, l);
        if (!clean[l])
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: clean[%d] (the clean '%s' of block %d) is NULL", fn, l,
                           KINDS[kind].name, l);
    }
    sweep s = {.ctx = ctx, .fn = fn, .tokens = corrupted_tokens, .B = batch, .T = pos, .D = c->d_model,
               .KD = (int64_t)c->n_key_value_heads * c->d_head, .V = c->d_vocab_out, .L = c->n_layers,
               .hook = KINDS[kind].hook, .metric = metric, .incremental = o.incremental};
    if (!(rc = metric_positions(&s)) && !(rc = sweep_alloc(&s)) && (!s.incremental || !(rc = base_run(&s))))
        rc = sweep_grid(&s, kind, clean, out);
    sweep_free(&s);
    return rc;
}
