/* Path patching (Wang et al. 2022, the IOI paper; ARENA's implementation with TransformerLens
 * hooks): senders' hook_z from the corrupted run, every other head's hook_z frozen at its clean
 * value, MLPs recomputed or frozen; receivers the logits, or heads' q / k / v inputs recorded in
 * that run and patched into a clean one.
 *
 * Every run goes through the door (cx_context_run, the guard held for the whole operation) with
 * its edits as the run's editors (cx_edit: after the caller's own hooks, as hooks added last do in
 * TransformerLens). The clean and corrupted runs happen once per call (step 1, their hook_z /
 * hook_resid_post / hook_mlp_out cached through cache_dst); every later run starts at its first
 * changed block from the cached clean hook_resid_post of the block before (exact: the blocks before
 * are clean), computes logits only where the metric reads them, and step 2 stops at the last
 * receiver input it records. A sweep runs several cells of one sender layer per run, each cell its
 * own B rows of the batch (up to CX_CELL_ROWS token rows): small runs are slower per row (the weights
 * are read once per run), so one run serves many cells. */
#include "cells.h"
#include "context.h"
#include "metric.h"

#include <string.h>


typedef enum pp_phase {
    PH_PLAIN,     /* step 1: the edits are idle */
    PH_SENDERS,   /* step 2: freeze hook_z (and hook_mlp_out), senders from corrupted; record receivers */
    PH_RECEIVERS  /* step 3: receivers' inputs from step 2 */
} pp_phase;

typedef struct pp {
    circuits_context *ctx;
    const char *fn;
    const int32_t *clean, *corrupted;
    int64_t B, T;
    int32_t L, H, KV, dh;
    size_t zn, rn;             /* floats of one layer's hook_z [B, T, H, dh] and residual [B, T, D] */
    float *block;              /* everything below, one allocation */
    float *clean_z, *corr_z;   /* [L][zn] */
    float *clean_post;         /* [L - 1][rn]: hook_resid_post of blocks 0 .. L-2 */
    float *clean_mlp;          /* [L][rn]: freeze_mlps only */
    float *recv[3];            /* per input kind: [L][G_max][B, T, H or KV, dh] slots */
    float *logits;             /* [G_max][B, n_pos, V]: the metric's positions (or every position) */
    float *tiled_in;           /* [G_max][B, T, D]: a run's input, once per cell (G_max > 1) */
    int32_t *tiled_tok;        /* [G_max][B, T]: the clean tokens, once per cell (G_max > 1) */
    circuits_path_head *cells; /* [G_max]: a sweep run's senders, one per cell */
    int64_t G_max, G;          /* cells per run: at most, and in the current run */
    int64_t n_pos;             /* logit positions per row: n_positions, or T */
    float **dst;               /* [n_points] cache_dst of the clean / corrupted runs */
    circuits_metric metric;
    const int64_t *positions;  /* NULL: every position */
    int64_t n_positions;
    int64_t *pos_buf;
    /* what the edits do in the current run */
    pp_phase phase;
    int32_t start;             /* the run's first block */
    const circuits_path_head *senders; /* [G][n_senders]: cell g's senders */
    int64_t n_senders;
    const circuits_path_head *receivers;
    int64_t n_receivers;
    bool freeze_mlps;
    int32_t stop_layer, stop_kind; /* step 2 stops after recording this input (stop_kind: 0 q, 1 k, 2 v) */
    bool stopped;
    cx_edit *edits;            /* [5 * L]: the current run's editors */
} pp;

static size_t input_heads(const pp *p, int kind) { return kind == CIRCUITS_READER_Q ? (size_t)p->H : (size_t)p->KV; }

/* Copies head h of x [B * T, n_heads, dh] from src to dst. */
static void copy_head(float *dst, const float *src, size_t rows, size_t n_heads, size_t dh, int32_t h)
{
    for (size_t r = 0; r < rows; r++)
        memcpy(dst + (r * n_heads + (size_t)h) * dh, src + (r * n_heads + (size_t)h) * dh, dh * sizeof(float));
}

static int on_z(const circuits_tensor *act, void *user)
{
    pp *p = user;
    if (p->phase != PH_SENDERS) return CIRCUITS_HOOK_CONTINUE;
    size_t l = (size_t)act->layer;
    for (int64_t g = 0; g < p->G; g++) {
        float *z = act->data + (size_t)g * p->zn;
        memcpy(z, p->clean_z + l * p->zn, p->zn * sizeof(float));
        const circuits_path_head *s = p->senders + g * p->n_senders;
        for (int64_t i = 0; i < p->n_senders; i++)
            if (s[i].layer == act->layer)
                copy_head(z, p->corr_z + l * p->zn, (size_t)(p->B * p->T), (size_t)p->H, (size_t)p->dh, s[i].head);
    }
    return CIRCUITS_HOOK_CONTINUE;
}

static int on_mlp_out(const circuits_tensor *act, void *user)
{
    pp *p = user;
    if (p->phase == PH_SENDERS && p->freeze_mlps)
        for (int64_t g = 0; g < p->G; g++)
            memcpy(act->data + (size_t)g * p->rn, p->clean_mlp + (size_t)act->layer * p->rn, p->rn * sizeof(float));
    return CIRCUITS_HOOK_CONTINUE;
}

static int on_input(const circuits_tensor *act, pp *p, int kind)
{
    size_t n_heads = input_heads(p, kind), rows = (size_t)(p->B * p->T), n = rows * n_heads * (size_t)p->dh;
    float *slot = p->recv[kind] ? p->recv[kind] + (size_t)act->layer * (size_t)p->G_max * n : NULL;
    if (!slot) return CIRCUITS_HOOK_CONTINUE;
    if (p->phase == PH_SENDERS) {
        memcpy(slot, act->data, (size_t)p->G * n * sizeof(float));
        if (act->layer == p->stop_layer && kind == p->stop_kind) {
            p->stopped = true; /* nothing after the last receiver input matters to step 2 */
            return CIRCUITS_HOOK_STOP;
        }
    } else {
        for (int64_t i = 0; i < p->n_receivers; i++) {
            const circuits_path_head *r = &p->receivers[i];
            if (r->layer == act->layer && r->input == kind)
                for (int64_t g = 0; g < p->G; g++)
                    copy_head(act->data + (size_t)g * n, slot + (size_t)g * n, rows, n_heads, (size_t)p->dh, r->head);
        }
    }
    return CIRCUITS_HOOK_CONTINUE;
}

static int on_q(const circuits_tensor *act, void *user) { return on_input(act, user, CIRCUITS_READER_Q); }
static int on_k(const circuits_tensor *act, void *user) { return on_input(act, user, CIRCUITS_READER_K); }
static int on_v(const circuits_tensor *act, void *user) { return on_input(act, user, CIRCUITS_READER_V); }

/* ---- checks ---- */

static int check_heads(const pp *p, const circuits_path_head *heads, int64_t n, bool receivers)
{
    const char *what = receivers ? "receiver" : "sender";
    if (n < 0) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: n_%ss %lld is negative", p->fn, what, (long long)n);
    if (n > 0 && !heads)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %lld %ss but the array is NULL", p->fn, (long long)n, what);
    for (int64_t i = 0; i < n; i++) {
        const circuits_path_head *h = &heads[i];
        if (receivers && (h->input < CIRCUITS_READER_Q || h->input > CIRCUITS_READER_V))
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "%s: receiver %lld's input %d is not CIRCUITS_READER_Q, _K or _V", p->fn, (long long)i,
                           h->input);
        int32_t n_heads = receivers ? (int32_t)input_heads(p, h->input) : p->H;
        if (h->layer < 0 || h->layer >= p->L || h->head < 0 || h->head >= n_heads)
            return cx_fail(CIRCUITS_E_RANGE, "%s: %s %lld (layer %d, head %d) is outside [0, %d) x [0, %d)", p->fn, what,
                           (long long)i, h->layer, h->head, p->L, n_heads);
        for (int64_t j = 0; j < i; j++)
            if (heads[j].layer == h->layer && heads[j].head == h->head && (!receivers || heads[j].input == h->input))
                return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s %lld repeats %s %lld (layer %d, head %d)", p->fn,
                               what, (long long)i, what, (long long)j, h->layer, h->head);
    }
    return CIRCUITS_OK;
}

/* ---- set-up and tear-down ---- */

static void pp_release(pp *p)
{
    cx_free(p->block);
    cx_free(p->dst);
    cx_free(p->edits);
    cx_free(p->pos_buf);
    cx_free(p->tiled_tok);
    cx_free(p->cells);
}

/* Checks the call and allocates the caches. want_all: the caller wants the logits at every
 * position; sweep: cells may share runs. */
static int pp_setup(pp *p, circuits_context *ctx, const char *fn, const int32_t *clean, const int32_t *corrupted,
                    int64_t B, int64_t T, const circuits_metric *metric, const circuits_path_patch_options *opts,
                    circuits_path_patch_options *o, bool want_all, bool sweep)
{
    memset(p, 0, sizeof *p);
    p->ctx = ctx;
    p->fn = fn;
    if (!ctx || !clean || !corrupted)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, clean and corrupted must not be NULL", fn);
    circuits_path_patch_options_init(o);
    static const size_t versions[] = {sizeof(circuits_path_patch_options)}; /* 0.5 */
    int rc;
    if (opts && (rc = cx_options_copy(o, opts, versions, CX_COUNT(versions), fn))) return rc;
    if (o->freeze_mlps != 0 && o->freeze_mlps != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: freeze_mlps must be 0 or 1", fn);
    const circuits_config *c = &ctx->model->cfg;
    p->clean = clean;
    p->corrupted = corrupted;
    p->B = B;
    p->T = T;
    p->L = c->n_layers;
    p->H = c->n_heads;
    p->KV = c->n_key_value_heads;
    p->dh = c->d_head;
    if (B < 1 || T < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: tokens shape [%lld, %lld]: batch and pos must be at least 1", fn,
                       (long long)B, (long long)T);
    if (T > c->n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld positions exceed the model's n_ctx = %d", fn, (long long)T, c->n_ctx);
    if (B > (int64_t)(SIZE_MAX / sizeof(float)) / T / c->d_vocab_out) /* no buffer of B x T logits could exist */
        return cx_fail(CIRCUITS_E_RANGE, "%s: batch %lld is too large", fn, (long long)B);
    if ((rc = check_heads(p, o->receivers, o->n_receivers, true))) return rc;
    if ((rc = cx_metric_check(metric, &p->metric, B, T, c->d_vocab_out, fn))) return rc;
    if ((rc = cx_metric_logits_check(&p->metric, fn))) return rc;
    p->receivers = o->receivers;
    p->n_receivers = o->n_receivers;
    p->freeze_mlps = o->freeze_mlps && !c->attn_only;

    /* the logits the runs compute: where the metric reads them, unless every position is needed */
    if (!want_all && !cx_metric_reads_all(&p->metric)) {
        if (!(p->pos_buf = cx_malloc((size_t)B * sizeof(int64_t))))
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        p->n_positions = cx_metric_positions(&p->metric, B, T, p->pos_buf);
        p->positions = p->pos_buf;
    }
    int64_t n_pos = p->n_pos = p->positions ? p->n_positions : T;
    /* cells per run: a sweep's cells of one layer share runs up to CX_CELL_ROWS token rows */
    size_t cell_logits = (size_t)B * (size_t)n_pos * (size_t)c->d_vocab_out; /* B * T * V fits: checked above */
    p->G_max = 1;
    if (sweep) {
        int64_t by_rows = CX_CELL_ROWS / (B * T), by_logits = (int64_t)((size_t)CX_CELL_LOGIT_FLOATS / cell_logits);
        p->G_max = by_rows < by_logits ? by_rows : by_logits;
        p->G_max = p->G_max < p->H ? p->G_max : p->H;
        p->G_max = p->G_max > 1 ? p->G_max : 1;
    }
    size_t G = (size_t)p->G_max;

    size_t rows = (size_t)B * (size_t)T, L = (size_t)p->L, floats = 0;
    bool ok = cx_mul_size(rows, (size_t)p->H * (size_t)p->dh, &p->zn) && cx_mul_size(rows, (size_t)c->d_model, &p->rn);
    size_t z2 = 0, post = 0, mlp = 0, logits = 0, tiled = 0, recv[3] = {0, 0, 0};
    ok = ok && cx_mul_size(cell_logits, G, &logits) && (G == 1 || cx_mul_size(p->rn, G, &tiled)) && cx_mul_size(p->zn, 2 * L, &z2) && cx_mul_size(p->rn, L - 1, &post) &&
         (!p->freeze_mlps || cx_mul_size(p->rn, L, &mlp));
    for (int64_t i = 0; i < p->n_receivers && ok; i++) {
        int k = p->receivers[i].input;
        ok = recv[k] || cx_mul_size(rows * input_heads(p, k) * (size_t)p->dh, L * G, &recv[k]);
    }
    size_t parts[] = {z2, post, mlp, logits, tiled, recv[0], recv[1], recv[2]};
    for (size_t i = 0; i < CX_COUNT(parts) && ok; i++) ok = floats + parts[i] >= floats && (floats += parts[i], true);
    if (!ok || floats >= SIZE_MAX / sizeof(float))
        return cx_fail(CIRCUITS_E_RANGE, "%s: a path patch of [%lld, %lld] tokens needs more memory than can be addressed",
                       fn, (long long)B, (long long)T);
    p->block = cx_malloc(floats * sizeof(float));
    p->dst = cx_calloc(ctx->hooks.n_points, sizeof(float *));
    p->edits = cx_malloc(5 * L * sizeof(cx_edit));
    p->cells = cx_malloc(G * sizeof(circuits_path_head));
    p->tiled_tok = G > 1 ? cx_malloc(G * rows * sizeof(int32_t)) : NULL;
    if (!p->block || !p->dst || !p->edits || !p->cells || (G > 1 && !p->tiled_tok))
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory (%zu MiB of caches)", fn, floats * sizeof(float) >> 20);
    float *q = p->block;
    p->clean_z = q, q += p->zn * L;
    p->corr_z = q, q += p->zn * L;
    p->clean_post = q, q += post;
    p->clean_mlp = mlp ? q : NULL, q += mlp;
    p->logits = q, q += logits;
    p->tiled_in = tiled ? q : NULL, q += tiled;
    for (int k = 0; k < 3; k++) p->recv[k] = recv[k] ? q : NULL, q += recv[k];
    for (size_t g = 0; g < G && G > 1; g++) memcpy(p->tiled_tok + g * rows, clean, rows * sizeof(int32_t));
    p->G = 1;
    return CIRCUITS_OK;
}

static bool receives(const pp *p, int32_t layer, int kind)
{
    for (int64_t i = 0; i < p->n_receivers; i++)
        if (p->receivers[i].layer == layer && p->receivers[i].input == kind) return true;
    return false;
}

/* The editors of the current phase, from block p->start on: step 2 freezes hook_z (and
 * hook_mlp_out) and records the receivers' inputs, step 3 patches them; step 1 edits nothing. */
static size_t pp_edits(pp *p)
{
    static const circuits_hook_fn input_fns[3] = {on_q, on_k, on_v};
    size_t n = 0;
    for (int32_t l = p->start; l < p->L && p->phase != PH_PLAIN; l++) {
        if (p->phase == PH_SENDERS) {
            p->edits[n++] = (cx_edit){l, HK_Z, on_z, p, false, 0};
            if (p->freeze_mlps) p->edits[n++] = (cx_edit){l, HK_MLP_OUT, on_mlp_out, p, false, 0};
        }
        for (int k = 0; k < 3; k++)
            if (receives(p, l, k)) p->edits[n++] = (cx_edit){l, (cx_hook_kind)(HK_Q + k), input_fns[k], p, false, 0};
    }
    return n;
}

/* A run of `tokens` (p->G cells of B rows each) from block `start` (the clean residual stream
 * before it), to the logits (logits_out, or p->logits at the metric's positions) or, without
 * to_logits, no further than needed. */
static int pp_run(pp *p, const int32_t *tokens, int32_t start, float *const *cache_dst, bool to_logits, float *logits_out)
{
    cx_run run = cx_run_init(p->ctx, p->fn, p->G > 1 ? p->tiled_tok : tokens, p->G * p->B, p->T);
    run.held = true;
    run.cache_dst = cache_dst;
    run.edits = p->edits;
    run.n_edits = pp_edits(p);
    if (start > 0) {
        run.start = start;
        const float *post = p->clean_post + (size_t)(start - 1) * p->rn;
        for (int64_t g = 0; g < p->G && p->G > 1; g++) memcpy(p->tiled_in + (size_t)g * p->rn, post, p->rn * sizeof(float));
        run.input = p->G > 1 ? p->tiled_in : post;
    }
    if (!to_logits) {
        run.stop_at_layer = true; /* run.out NULL: the residual stream is not wanted */
    } else if (logits_out) {
        run.out = logits_out;
    } else {
        run.out = p->logits;
        run.positions = p->positions;
        run.n_positions = p->n_positions;
    }
    p->stopped = false;
    int rc = cx_context_run(p->ctx, &run);
    if (rc == CIRCUITS_E_STOPPED && p->stopped) rc = CIRCUITS_OK; /* our own stop after the last receiver */
    return rc;
}

/* The metric of logits at p->positions (NULL: every position). */
static int pp_value(pp *p, const float *logits, float *value)
{
    return cx_metric_value(&p->metric, logits, p->B, p->T, p->ctx->model->cfg.d_vocab_out, p->positions,
                           p->n_positions, value, p->fn);
}

/* Step 1: the clean run (its logits in logits_out or p->logits) and the corrupted run, cached. */
static int pp_step1(pp *p, float *logits_out)
{
    const cx_hook_table *t = &p->ctx->hooks;
    for (int32_t l = 0; l < p->L; l++) {
        p->dst[cx_hook_value_index(t, l, HK_Z)] = p->clean_z + (size_t)l * p->zn;
        if (l + 1 < p->L) p->dst[cx_hook_value_index(t, l, HK_RESID_POST)] = p->clean_post + (size_t)l * p->rn;
        if (p->clean_mlp) p->dst[cx_hook_value_index(t, l, HK_MLP_OUT)] = p->clean_mlp + (size_t)l * p->rn;
    }
    p->phase = PH_PLAIN;
    p->G = 1;
    int rc = pp_run(p, p->clean, 0, p->dst, true, logits_out);
    if (rc) return rc;
    memset(p->dst, 0, p->ctx->hooks.n_points * sizeof *p->dst);
    for (int32_t l = 0; l < p->L; l++) p->dst[cx_hook_value_index(t, l, HK_Z)] = p->corr_z + (size_t)l * p->zn;
    rc = pp_run(p, p->corrupted, 0, p->dst, false, NULL);
    memset(p->dst, 0, p->ctx->hooks.n_points * sizeof *p->dst);
    return rc;
}

/* Steps 2 and 3 for G cells of n_senders senders each, senders [G][n_senders] (step 1 done): the
 * patched logits into logits_out (one cell, every position) or p->logits (cell g's B rows from
 * g * B * n_pos * V). *no_path: the senders reach no receiver (nothing ran). */
static int pp_cells(pp *p, const circuits_path_head *senders, int64_t n_senders, int64_t G, float *logits_out,
                    bool *no_path)
{
    int32_t start = p->L;
    for (int64_t i = 0; i < G * n_senders; i++) start = senders[i].layer < start ? senders[i].layer : start;
    if (n_senders == 0) start = 0; /* no sender: every head frozen at its clean value from the first block */
    p->senders = senders;
    p->n_senders = n_senders;
    p->G = G;
    p->start = start;
    *no_path = false;
    if (p->n_receivers == 0) {
        p->phase = PH_SENDERS;
        return pp_run(p, p->clean, start, NULL, true, logits_out);
    }
    int32_t last = -1, first = p->L;
    for (int64_t i = 0; i < p->n_receivers; i++) {
        const circuits_path_head *r = &p->receivers[i];
        if (r->layer > last || (r->layer == last && r->input > p->stop_kind)) last = r->layer, p->stop_kind = r->input;
        if (r->layer >= start && r->layer < first) first = r->layer;
    }
    p->stop_layer = last;
    if (n_senders > 0 && start >= last) {
        *no_path = true; /* every sender at or after every receiver's layer */
        return CIRCUITS_OK;
    }
    p->phase = PH_SENDERS;
    int rc = pp_run(p, p->clean, start, NULL, false, NULL);
    if (rc) return rc;
    p->phase = PH_RECEIVERS;
    return pp_run(p, p->clean, first, NULL, true, logits_out);
}

void circuits_path_patch_options_init(circuits_path_patch_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

int circuits_context_path_patch(circuits_context *ctx, const int32_t *clean, const int32_t *corrupted, int64_t batch,
                                int64_t pos, const circuits_path_head *senders, int64_t n_senders,
                                const circuits_metric *metric, const circuits_path_patch_options *opts, float *value,
                                float *logits)
{
    static const char fn[] = "circuits_context_path_patch";
    pp p = {0};
    circuits_path_patch_options o;
    int rc = pp_setup(&p, ctx, fn, clean, corrupted, batch, pos, metric, opts, &o, logits != NULL, false);
    if (!rc) rc = check_heads(&p, senders, n_senders, false);
    if (!rc) rc = cx_context_enter(ctx, fn);
    if (rc) {
        pp_release(&p);
        return rc;
    }
    float *lg = logits ? logits : p.logits;
    bool no_path = false;
    if (!(rc = pp_step1(&p, logits)) && !(rc = pp_cells(&p, senders, n_senders, 1, logits, &no_path)) && value)
        rc = pp_value(&p, lg, value); /* no path: lg holds the clean run's logits */
    cx_context_leave(ctx);
    pp_release(&p);
    return rc;
}

int circuits_context_path_patch_sweep(circuits_context *ctx, const int32_t *clean, const int32_t *corrupted,
                                      int64_t batch, int64_t pos, const circuits_metric *metric,
                                      const circuits_path_patch_options *opts, float *out)
{
    static const char fn[] = "circuits_context_path_patch_sweep";
    pp p = {0};
    circuits_path_patch_options o;
    int rc = out ? pp_setup(&p, ctx, fn, clean, corrupted, batch, pos, metric, opts, &o, false, true)
                 : cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (!rc) rc = cx_context_enter(ctx, fn);
    if (rc) {
        pp_release(&p);
        return rc;
    }
    float clean_value = 0.0f;
    if (!(rc = pp_step1(&p, NULL))) rc = pp_value(&p, p.logits, &clean_value);
    size_t cell_logits = (size_t)(p.B * p.n_pos) * (size_t)ctx->model->cfg.d_vocab_out;
    for (int32_t l = 0; l < p.L && !rc; l++)
        for (int32_t h0 = 0; h0 < p.H && !rc; h0 += (int32_t)p.G_max) {
            int64_t G = p.H - h0 < p.G_max ? p.H - h0 : p.G_max;
            for (int64_t g = 0; g < G; g++) p.cells[g] = (circuits_path_head){l, h0 + (int32_t)g, 0};
            bool no_path = false;
            rc = pp_cells(&p, p.cells, 1, G, NULL, &no_path);
            for (int64_t g = 0; g < G && !rc; g++) {
                float *cell = out + (size_t)l * (size_t)p.H + (size_t)(h0 + g);
                if (no_path) *cell = clean_value;
                else rc = pp_value(&p, p.logits + (size_t)g * cell_logits, cell);
            }
        }
    cx_context_leave(ctx);
    pp_release(&p);
    return rc;
}
