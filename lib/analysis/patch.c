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
#include "cells.h"
#include "grid.h"
#include "context.h"
#include "metric.h"
#include "stored.h"

#include <math.h>
#include <string.h>

void circuits_patch_options_init(circuits_patch_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->incremental = 1;
}

int circuits_patch_grid_shape(const circuits_model *model, int32_t kind, int64_t pos, int64_t *shape,
                              int32_t *ndim)
{
    if (!model || !shape || !ndim)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_patch_grid_shape: model, shape and ndim must not be NULL");
    const cx_patch_kind *pk = cx_patch_kind_of(kind);
    if (!pk) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_patch_grid_shape: unknown patch kind %d", kind);
    if (pos < 1) return cx_fail(CIRCUITS_E_SHAPE, "circuits_patch_grid_shape: pos %lld < 1", (long long)pos);
    const circuits_config *c = &model->cfg;
    int64_t L = c->n_layers, H = cx_grid_heads(c, kind);
    switch (pk->grid) {
    case G_LAYER_POS: *ndim = 2; shape[0] = L; shape[1] = pos; break;
    case G_LAYER_POS_HEAD: *ndim = 3; shape[0] = L; shape[1] = pos; shape[2] = H; break;
    case G_LAYER_HEAD: *ndim = 2; shape[0] = L; shape[1] = H; break;
    case G_LAYER_HEAD_DEST: *ndim = 3; shape[0] = L; shape[1] = H; shape[2] = pos; break;
    case G_LAYER_HEAD_DEST_SRC: *ndim = 4; shape[0] = L; shape[1] = H; shape[2] = pos; shape[3] = pos; break;
    }
    return CIRCUITS_OK;
}

/* One cell: what the editor copies (grid.h's slice). Positions are absolute; the run's first
 * position is P. */
typedef struct cell {
    cx_grid_cell g;
    const float *clean; /* the clean activation [B, T, ...] (pattern: [B, H, T, T]) */
    int64_t T, P;
    int32_t layer;      /* the patched block */
    int64_t first;      /* the first position the patch changes */
    float *out;         /* the grid's cell */
} cell;

/* TransformerLens's patch setters on the run's activation a [B, ...] (its new positions P ..
 * P+T'-1): the cell's slice, rows t >= P, from the clean activation. Rows are [rest] (non-pattern)
 * or a head's source axis, of length T both (pattern [B, H, T', P + T']). */
static void patch_cell(const cell *c, const circuits_tensor *a)
{
    const cx_grid_cell *g = &c->g;
    int64_t B = a->shape[0], T = c->T, P = c->P;
    int64_t rest = g->pattern ? T : a->strides[1], H = g->pattern ? a->shape[1] : 1;
    size_t len = (size_t)(g->hi - g->lo) * sizeof(float);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = g->t0 > P ? g->t0 : P; t < g->t1; t++) {
            float *dst = a->data + b * a->strides[0] +
                         (g->pattern ? g->head * a->strides[1] + (t - P) * a->strides[2] : (t - P) * a->strides[1]);
            memcpy(dst + g->lo, c->clean + cx_grid_at(g, b, t, T, rest, H) + g->lo, len);
        }
}

/* A run of several cells at once: cell k patches batch rows [k * B, (k + 1) * B) of the run. */
typedef struct group {
    cell *cells;
    int64_t n, B;
} group;

static int patch_edit(const circuits_tensor *a, void *user)
{
    const group *g = user;
    circuits_tensor sub = *a;
    sub.shape[0] = g->B;
    for (int64_t k = 0; k < g->n; k++) {
        sub.data = a->data + k * g->B * a->strides[0];
        patch_cell(&g->cells[k], &sub);
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
    bool incremental;
    int64_t max_cells;        /* cells per run */
    const circuits_metric *metric;
    circuits_metric pm;       /* the caller's, checked */
    bool all;                 /* it reads every position */
    int64_t *u;               /* [n]: the distinct positions the metric reads (ascending) */
    int64_t n;                /* n == T and u == 0 .. T-1 for metrics reading every position */
    int64_t *local;           /* [n]: run-relative logit positions */
    float *logits;            /* [B, n, V]: what the metric reads of one cell */
    float *run_logits;        /* [cells * B, n, V]: what a run computes (its positions >= P) */
    float *base_resid;        /* [L, B, T, D] the corrupted run's resid_pre (incremental) */
    float *base_k, *base_v;   /* [L, B, T, KD] its keys (rotated) and values (incremental) */
    float *base_logits;       /* [B, n, V] */
    bool sparse;              /* LOGIT / LOGIT_DIFF and no hook on unembed.hook_out: the runs stop at
                               * unembed.hook_in and compute the logits of the answer and wrong
                               * tokens only (sparse_logits); logits / run_logits hold just those */
    int32_t *run_tokens;      /* [cells * B, T] whole re-runs: the tokens once per cell */
    float *input;             /* [cells * B, T, D] incremental: resid_pre rows >= P once per cell */
    circuits_kv_cache *kv;    /* [cells * B, T] incremental: positions < P */
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
    cx_free(s->run_tokens);
    cx_free(s->input);
    circuits_kv_cache_free(s->kv);
}

/* The metric, checked, and the positions it reads (every one for LOSS and CALLBACK). */
static int metric_positions(sweep *s)
{
    int64_t B = s->B, T = s->T;
    int rc = cx_metric_check(s->metric, &s->pm, B, T, s->V, s->fn);
    if (!rc) rc = cx_metric_logits_check(&s->pm, s->fn);
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

/* The metric of one cell's logits [B, n, V] at positions u. */
static int metric_of(const sweep *s, const float *logits, float *value)
{
    return cx_metric_value(&s->pm, logits, s->B, s->T, s->V, s->all ? NULL : s->u, s->all ? 0 : s->n, value, s->fn);
}

/* Cells per run: as many as keep a run within about CX_CELL_ROWS token rows (the weights are
 * then read once for all of them: small runs are bound by reading the weights, not by
 * arithmetic) and its logits within CX_CELL_LOGIT_FLOATS (64 MiB), at most MAX_CELLS; at least one. */
enum { MAX_CELLS = 256 };

/* Incremental runs group cells whose first patched positions lie in a window [P, P + w): the
 * smaller w, the fewer positions each runs, the larger, the more cells share a read of the
 * weights. w is the smallest that gives a group about ROWS_PER_GROUP token rows (measured on GPT-2
 * small, one core, resid_pre sweep of [1, 16] with the whole unembedding: 32 rows per group 5.9 s,
 * 64 4.1 s, 128 3.6 s, all at P = 0 4.0 s). */
enum { ROWS_PER_GROUP = 128 };

static int sweep_alloc(sweep *s, int64_t cells_per_run)
{
    int64_t per = cells_per_run > 0 ? cells_per_run : CX_CELL_ROWS / (s->B * s->T);
    int64_t by_logits = CX_CELL_LOGIT_FLOATS / (s->B * s->n * s->V); /* a metric of every position: few cells */
    if (per > by_logits) per = by_logits;
    if (per > MAX_CELLS) per = MAX_CELLS;
    s->max_cells = per < 1 ? 1 : per;
    size_t lg = (size_t)(s->B * s->n * s->V) * sizeof(float), R = (size_t)(s->max_cells * s->B);
    s->logits = cx_malloc(lg);
    s->run_logits = cx_malloc(lg * (size_t)s->max_cells);
    s->base_logits = cx_malloc(lg);
    if (!s->logits || !s->run_logits || !s->base_logits) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", s->fn);
    if (!s->incremental) {
        s->run_tokens = cx_malloc(R * (size_t)s->T * sizeof(int32_t));
        if (!s->run_tokens) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", s->fn);
        for (size_t k = 0; k < (size_t)s->max_cells; k++)
            memcpy(s->run_tokens + k * (size_t)(s->B * s->T), s->tokens, (size_t)(s->B * s->T) * sizeof(int32_t));
        return CIRCUITS_OK;
    }
    size_t LBT = (size_t)s->L * (size_t)(s->B * s->T);
    s->base_resid = cx_malloc(LBT * (size_t)s->D * sizeof(float));
    s->base_k = cx_malloc(LBT * (size_t)s->KD * sizeof(float));
    s->base_v = cx_malloc(LBT * (size_t)s->KD * sizeof(float));
    s->input = cx_malloc(R * (size_t)(s->T * s->D) * sizeof(float));
    if (!s->base_resid || !s->base_k || !s->base_v || !s->input)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for the incremental patching state", s->fn);
    int rc = circuits_kv_cache_create(&s->kv, s->ctx->model, (int64_t)R, s->T);
    if (rc) return rc;
    /* no padding: every held position is a real token, whatever batch a run lays the cache out for */
    for (size_t i = 0; i < R * (size_t)s->T; i++) s->kv->mask[i] = 1;
    return CIRCUITS_OK;
}

/* The corrupted run: the logits the metric reads (a cell whose patch cannot reach them has the
 * base metric), and for incremental runs resid_pre, keys (rotated) and values of every block. */
static int base_run(sweep *s)
{
    circuits_context *ctx = s->ctx;
    const cx_hook_table *t = &ctx->hooks;
    float **dst = cx_calloc(t->n_points, sizeof *dst);
    if (!dst) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", s->fn);
    bool rotary = ctx->model->cfg.positional_embedding_type == CIRCUITS_POS_ROTARY;
    size_t LR = (size_t)(s->B * s->T * s->D), LK = (size_t)(s->B * s->T * s->KD);
    for (int32_t l = 0; l < s->L && s->incremental; l++) {
        dst[cx_hook_value_index(t, l, HK_RESID_PRE)] = s->base_resid + l * LR;
        dst[cx_hook_value_index(t, l, rotary ? HK_ROT_K : HK_K)] = s->base_k + l * LK;
        dst[cx_hook_value_index(t, l, HK_V)] = s->base_v + l * LK;
    }
    cx_run r = cx_run_init(ctx, s->fn, s->tokens, s->B, s->T);
    r.cache_dst = s->incremental ? dst : NULL;
    r.positions = s->u;
    r.n_positions = s->n;
    r.out = s->base_logits;
    r.held = true;
    int rc = cx_context_run(ctx, &r);
    cx_free(dst);
    return rc;
}

/* What the sparse unembedding of one run needs. */
typedef struct sparse_run {
    const sweep *s;
    int64_t R, Tn, P, first, m;
    bool done;
} sparse_run;

/* The logits the metric reads, logit[b, u_i, tok] = x . W_U[:, tok] + b_U[tok] (soft-capped as
 * the pass caps them), tok in answer[b], wrong[b], from unembed.hook_in's x [R, Tn, D], into
 * run_logits [R, m, V] at those entries; then the run stops (no GEMM over the vocabulary: for
 * GPT-2 small it costs as much as 5 blocks of the same rows). */
static int sparse_logits(const circuits_tensor *t, void *user)
{
    sparse_run *sr = user;
    const sweep *s = sr->s;
    const circuits_model *mod = s->ctx->model;
    const circuits_tensor *U = mod->W_U;
    float cap = mod->cfg.output_logits_soft_cap;
    for (int64_t r = 0; r < sr->R; r++) {
        int64_t b = r % s->B;
        int32_t toks[2] = {s->pm.answer[b], s->pm.wrong ? s->pm.wrong[b] : s->pm.answer[b]};
        for (int64_t i = 0; i < sr->m; i++) {
            const float *x = t->data + (r * sr->Tn + s->u[sr->first + i] - sr->P) * s->D;
            for (int j = 0; j < 2; j++) {
                double acc = 0.0;
                for (int64_t d = 0; d < s->D; d++) acc += (double)x[d] * U->data[d * U->strides[0] + toks[j] * U->strides[1]];
                float v = (float)acc + mod->b_U->data[toks[j]];
                if (cap > 0.0f) v = cap * tanhf(v / cap);
                s->run_logits[(r * sr->m + i) * s->V + toks[j]] = v;
            }
        }
    }
    sr->done = true;
    return CIRCUITS_HOOK_STOP;
}

/* Cell k's logits [B, n, V] into s->logits: positions u_i < P (i < first) from the base run,
 * the others from the run (rows k * B ..); sparse: only the entries the metric reads. */
static void cell_logits(sweep *s, int64_t k, int64_t first, int64_t m)
{
    int64_t V = s->V, n = s->n;
    for (int64_t b = 0; b < s->B; b++) {
        if (!s->sparse) {
            memcpy(s->logits + b * n * V, s->base_logits + b * n * V, (size_t)(first * V) * sizeof(float));
            memcpy(s->logits + (b * n + first) * V, s->run_logits + (k * s->B + b) * m * V, (size_t)(m * V) * sizeof(float));
            continue;
        }
        int32_t toks[2] = {s->pm.answer[b], s->pm.wrong ? s->pm.wrong[b] : s->pm.answer[b]};
        for (int64_t i = 0; i < n; i++)
            for (int j = 0; j < 2; j++) {
                size_t at = (size_t)((b * n + i) * V + toks[j]);
                s->logits[at] = i < first ? s->base_logits[at]
                                          : s->run_logits[((k * s->B + b) * m + i - first) * V + toks[j]];
            }
    }
}

/* One run of cells[0 .. n) (same block, first positions >= P), and their metrics. Incremental:
 * from block l at positions P .. T-1, the earlier ones' keys and values in the KV cache; else
 * whole re-runs of the tokens. */
static int run_group(sweep *s, cell *cells, int64_t n, int64_t P)
{
    circuits_context *ctx = s->ctx;
    int32_t l = cells[0].layer;
    int64_t B = s->B, T = s->T, R = n * B, Tn = T - P, D = s->D, KD = s->KD;
    for (int64_t k = 0; k < n; k++) cells[k].P = P;
    group g = {cells, n, B};
    cx_edit e = {l, s->hook, patch_edit, &g, false, 0};
    int64_t first = 0; /* logit rows at positions >= P are computed; those before are the base run's */
    while (first < s->n && s->u[first] < P) first++;
    int64_t m = s->n - first;
    for (int64_t i = 0; i < m; i++) s->local[i] = s->u[first + i] - P;
    cx_run r = cx_run_init(ctx, s->fn, s->run_tokens, R, T);
    r.edits = &e;
    r.n_edits = 1;
    r.positions = s->local;
    r.n_positions = m;
    r.out = s->run_logits;
    if (s->incremental) {
        for (int64_t k = 0; k < n; k++)
            for (int64_t b = 0; b < B; b++)
                memcpy(s->input + ((k * B + b) * Tn) * D, s->base_resid + (((size_t)l * B + b) * T + P) * D,
                       (size_t)(Tn * D) * sizeof(float));
        if (P > 0) {
            /* the cache laid out for R rows: [L, R, T, KD]; blocks >= l, positions < P */
            circuits_kv_cache *kv = s->kv;
            kv->batch = R;
            kv->len = P;
            kv->lo = l;
            kv->hi = s->L;
            for (int32_t j = l; j < s->L; j++)
                for (int64_t k = 0; k < n; k++)
                    for (int64_t b = 0; b < B; b++) {
                        size_t src = (((size_t)j * B + b) * T) * KD, dst = (((size_t)j * R + k * B + b) * T) * KD;
                        memcpy(kv->k + dst, s->base_k + src, (size_t)(P * KD) * sizeof(float));
                        memcpy(kv->v + dst, s->base_v + src, (size_t)(P * KD) * sizeof(float));
                    }
            r.kv = kv;
        }
        r.tokens = NULL;
        r.pos = Tn;
        r.input = s->input;
        r.start = l;
    }
    cx_edit edits[2] = {e, {-1, HK_UNEMBED_IN, sparse_logits, NULL, false, 0}};
    sparse_run sr = {s, R, r.pos, P, first, m, false};
    if (s->sparse) {
        edits[1].user_data = &sr;
        r.edits = edits;
        r.n_edits = 2;
    }
    r.held = true;
    int rc = cx_context_run(ctx, &r);
    if (rc == CIRCUITS_E_STOPPED && sr.done) rc = CIRCUITS_OK;
    if (rc) return rc;
    for (int64_t k = 0; k < n; k++) {
        cell_logits(s, k, first, m);
        if ((rc = metric_of(s, s->logits, cells[k].out))) return rc;
    }
    return CIRCUITS_OK;
}

/* Every cell of the grid, in its row-major order (grid.h's cells gc[], made here). */
static int64_t grid_cells(const sweep *s, int32_t kind, const float *const *clean, float *out, cx_grid_cell *gc,
                          cell *cells)
{
    int64_t n = cx_grid_cells(s->ctx->model, kind, s->T, gc);
    for (int64_t i = 0; i < n; i++)
        cells[i] = (cell){.g = gc[i], .clean = clean[gc[i].layer], .T = s->T, .layer = gc[i].layer,
                          .first = gc[i].t0, .out = out + i};
    return n;
}

/* The grid: cells that cannot reach a position the metric reads get the base metric; the others
 * run in groups of the same block whose first patched positions lie in one window [P, P + w)
 * (ROWS_PER_GROUP; T for whole re-runs, whose runs all start at position 0). */
static int sweep_grid(sweep *s, int32_t kind, const float *const *clean, float *out)
{
    int64_t shape[4];
    int32_t nd;
    circuits_patch_grid_shape(s->ctx->model, kind, s->T, shape, &nd);
    int64_t total = 1;
    for (int32_t i = 0; i < nd; i++) total *= shape[i];
    cell *cells = cx_malloc((size_t)total * sizeof *cells), *todo = cx_malloc((size_t)total * sizeof *cells);
    cx_grid_cell *gc = cx_malloc((size_t)total * sizeof *gc);
    if (!cells || !todo || !gc) {
        cx_free(cells);
        cx_free(todo);
        cx_free(gc);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for %lld cells", s->fn, (long long)total);
    }
    int64_t n = grid_cells(s, kind, clean, out, gc, cells), per_pos = n / (s->L * s->T), last = s->u[s->n - 1];
    if (per_pos < 1) per_pos = 1;
    int64_t w = !s->incremental ? s->T : (ROWS_PER_GROUP + per_pos * s->B * s->T - 1) / (per_pos * s->B * s->T);
    if (w < 1) w = 1;
    int rc = CIRCUITS_OK;
    for (int32_t l = 0; l < s->L && !rc; l++)
        for (int64_t P = 0; P < s->T && !rc; P += w) {
            int64_t m = 0;
            for (int64_t i = 0; i < n && !rc; i++) {
                cell *c = &cells[i];
                if (c->layer != l || c->first < P || c->first >= P + w) continue;
                if (c->first > last) rc = metric_of(s, s->base_logits, c->out);
                else todo[m++] = *c;
            }
            for (int64_t i = 0; i < m && !rc; i += s->max_cells)
                rc = run_group(s, todo + i, m - i < s->max_cells ? m - i : s->max_cells,
                               s->incremental ? P : 0);
        }
    cx_free(cells);
    cx_free(todo);
    cx_free(gc);
    return rc;
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
    if (o.cells_per_run < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: cells_per_run %d < 0 (0: automatic)", fn, o.cells_per_run);
    const cx_patch_kind *pk = cx_patch_kind_of(kind);
    if (!pk) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: unknown patch kind %d", fn, kind);
    const circuits_config *c = &ctx->model->cfg;
    int shape_rc = cx_tokens_shape_check(c, batch, pos, fn);
    if (shape_rc) return shape_rc;
    for (int32_t l = 0; l < c->n_layers; l++) {
        if (cx_hook_index(&ctx->hooks, l, pk->hook) < 0)
            return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: this model has no hook '%s' in block %d to patch", fn,
                           pk->name, l);
        if (!clean[l])
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: clean[%d] (the clean '%s' of block %d) is NULL", fn, l,
                           pk->name, l);
    }
    sweep s = {.ctx = ctx, .fn = fn, .tokens = corrupted_tokens, .B = batch, .T = pos, .D = c->d_model,
               .KD = (int64_t)c->n_key_value_heads * c->d_head, .V = c->d_vocab_out, .L = c->n_layers,
               .hook = pk->hook, .metric = metric, .incremental = o.incremental};
    /* the grid is one operation: the guard is held from the base run to the last cell, so a metric
     * callback (called between runs) cannot run this context or change its hooks mid-grid */
    if ((rc = cx_context_enter(ctx, fn))) return rc;
    if (!(rc = metric_positions(&s)) && !(rc = sweep_alloc(&s, o.cells_per_run)) && !(rc = base_run(&s))) {
        /* a callback on unembed.hook_out must see the logits: then the whole unembedding runs */
        int32_t k = s.pm.kind, uo = cx_hook_index(&ctx->hooks, -1, HK_UNEMBED_OUT);
        s.sparse = (k == CIRCUITS_METRIC_LOGIT_DIFF || k == CIRCUITS_METRIC_LOGIT) &&
                   (uo < 0 || ctx->hooks.points[uo].n_regs == 0) &&
                   !cx_stored(ctx->model, ctx->model->W_U); /* sparse_logits reads W_U's fp32 columns */
        rc = sweep_grid(&s, kind, clean, out);
    }
    sweep_free(&s);
    cx_context_leave(ctx);
    return rc;
}
