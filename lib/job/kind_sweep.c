/* Job kinds "patch_sweep" and "ablation_sweep" (docs/jobs.md, "Patching sweep" and "Ablation
 * sweep"): per dataset row, a patching grid of the clean row ("tokens") into its "corrupted" row
 * (circuits_context_activation_patch), or the metric with each head's hook_z ablated in turn
 * (circuits_context_run_ablated), the metric built from the row's columns. Each row has its own
 * grid, the same bits whatever unit, batch size or thread count it ran in: a patching grid is
 * the public functions' on that row alone, bit for bit; an ablation grid runs a block's heads as
 * the batch rows of one run in per-sequence mode (kernels.h), equal to run_ablated head by head
 * to float32 rounding (the logits at one position, not all). */
#include "cells.h"
#include "context.h"
#include "grid.h"
#include "job.h"
#include "kernels.h"
#include "metric.h"
#include "st_save.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const FN_CREATE = "circuits_job_create", *const FN_MERGE = "circuits_job_merge";

/* The public function computing a unit now (circuits_job_run or _compute), for messages. */
static const char *fn_of(const circuits_job *job)
{
    return job->fn ? job->fn : "circuits_job_run";
}

/* Names the provenance records (readable, stable: changing one changes every provenance). */
static const char *const METRIC_NAMES[] = {
    [CIRCUITS_METRIC_LOGIT_DIFF] = "logit_diff", [CIRCUITS_METRIC_LOGIT] = "logit",
    [CIRCUITS_METRIC_PROB] = "prob",             [CIRCUITS_METRIC_LOG_PROB] = "log_prob",
    [CIRCUITS_METRIC_LOSS] = "loss",             [CIRCUITS_METRIC_CALLBACK] = "CALLBACK",
    [CIRCUITS_METRIC_TOKEN_LOSS] = "token_loss", [CIRCUITS_METRIC_HOOK_LINEAR] = "HOOK_LINEAR",
    [CIRCUITS_METRIC_GRAD_CALLBACK] = "GRAD_CALLBACK",
};

static const char *const PATCH_NAMES[] = {
    [CIRCUITS_PATCH_RESID_PRE] = "resid_pre",
    [CIRCUITS_PATCH_RESID_MID] = "resid_mid",
    [CIRCUITS_PATCH_RESID_POST] = "resid_post",
    [CIRCUITS_PATCH_ATTN_OUT] = "attn_out",
    [CIRCUITS_PATCH_MLP_OUT] = "mlp_out",
    [CIRCUITS_PATCH_HEAD_Z_BY_POS] = "head_z_by_pos",
    [CIRCUITS_PATCH_HEAD_Q_BY_POS] = "head_q_by_pos",
    [CIRCUITS_PATCH_HEAD_K_BY_POS] = "head_k_by_pos",
    [CIRCUITS_PATCH_HEAD_V_BY_POS] = "head_v_by_pos",
    [CIRCUITS_PATCH_HEAD_PATTERN_BY_POS] = "head_pattern_by_pos",
    [CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC] = "head_pattern_dest_src",
    [CIRCUITS_PATCH_HEAD_Z_ALL_POS] = "head_z_all_pos",
    [CIRCUITS_PATCH_HEAD_Q_ALL_POS] = "head_q_all_pos",
    [CIRCUITS_PATCH_HEAD_K_ALL_POS] = "head_k_all_pos",
    [CIRCUITS_PATCH_HEAD_V_ALL_POS] = "head_v_all_pos",
    [CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS] = "head_pattern_all_pos",
};

/* The kind's recorded parameters (the provenance's "job" object). */
static int set_int(json_t *params, const char *key, json_int_t v)
{
    return json_object_set_new(params, key, json_integer(v)) ? cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory",
                                                                       FN_CREATE)
                                                             : CIRCUITS_OK;
}

static int set_str(json_t *params, const char *key, const char *v)
{
    return json_object_set_new(params, key, json_string(v)) ? cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory",
                                                                      FN_CREATE)
                                                            : CIRCUITS_OK;
}

/* A sweep reads no hook list (the engine would record it): refused rather than ignored. */
static int no_hooks(const circuits_job *job, const char *kind)
{
    if (!job->o.n_hooks) return CIRCUITS_OK;
    return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: hooks (n_hooks %zu) are not read by %s; leave them empty",
                   FN_CREATE, job->o.n_hooks, kind);
}

/* ---- the metric of one row, from the dataset's columns ---- */

typedef struct row_metric {
    int32_t kind;
    const int32_t *answer, *wrong; /* [n_rows] (columns of width 1), or NULL if the kind reads none */
    int64_t *positions;            /* [n_rows] from the "position" column, or NULL: the default */
    const int32_t *tokens;         /* [n_rows, pos]: the clean rows (LOSS, TOKEN_LOSS labels) */
    int64_t pos;
} row_metric;

static int column_1(const circuits_dataset *ds, const char *name, const char *metric, const char *why,
                    const int32_t **out)
{
    const cx_ds_column *c = cx_dataset_find(ds, name);
    if (!c)
        return cx_fail(CIRCUITS_E_NOT_FOUND,
                       "%s: the %s metric reads the dataset's column \"%s\" [n_rows, 1] (%s); the dataset has none",
                       FN_CREATE, metric, name, why);
    if (c->width != 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the dataset's column \"%s\" is [%lld, %lld]; the %s metric reads [n_rows, 1]",
                       FN_CREATE, name, (long long)ds->n_rows, (long long)c->width, metric);
    *out = c->values;
    return CIRCUITS_OK;
}

/* Checks job->o.metric_kind and the columns it reads, every row's values against the model (so a
 * bad row fails the create, not a unit hours in), and records the metric in params. */
static int metric_prepare(const circuits_job *job, row_metric *rm, json_t *params)
{
    int32_t k = job->o.metric_kind;
    const circuits_dataset *ds = job->ds;
    if (k == CIRCUITS_METRIC_CALLBACK || k == CIRCUITS_METRIC_GRAD_CALLBACK)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: metric_kind %s: a job records its parameters in its provenance and cannot record a "
                       "callback; sweeps take LOGIT_DIFF, LOGIT, PROB, LOG_PROB, LOSS or TOKEN_LOSS",
                       FN_CREATE, METRIC_NAMES[k]);
    if (k == CIRCUITS_METRIC_HOOK_LINEAR)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: metric_kind HOOK_LINEAR reads a hook point's activation, not the logits (gradient runs "
                       "only); sweeps take LOGIT_DIFF, LOGIT, PROB, LOG_PROB, LOSS or TOKEN_LOSS",
                       FN_CREATE);
    if (k < 0 || k >= (int32_t)CX_COUNT(METRIC_NAMES) || !METRIC_NAMES[k])
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: metric_kind %d is no circuits_metric_kind", FN_CREATE, k);
    const char *name = METRIC_NAMES[k];
    *rm = (row_metric){.kind = k, .tokens = ds->cols[0].values, .pos = ds->pos};
    int rc;
    bool reads_answer = k != CIRCUITS_METRIC_LOSS && k != CIRCUITS_METRIC_TOKEN_LOSS;
    if (reads_answer && (rc = column_1(ds, "answer", name, "each row's answer token", &rm->answer))) return rc;
    if (k == CIRCUITS_METRIC_LOGIT_DIFF && (rc = column_1(ds, "wrong", name, "each row's wrong token", &rm->wrong)))
        return rc;
    const int32_t *p = NULL;
    bool reads_position = k != CIRCUITS_METRIC_LOSS; /* LOSS: every position */
    if (reads_position && cx_dataset_find(ds, "position")) {
        if ((rc = column_1(ds, "position", name, "each row's position", &p))) return rc;
        rm->positions = cx_malloc((size_t)ds->n_rows * sizeof(int64_t));
        if (!rm->positions) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", FN_CREATE);
        for (int64_t r = 0; r < ds->n_rows; r++) rm->positions[r] = p[r];
    }
    /* every row at once, as one batch: indices in messages are rows */
    circuits_metric m, checked;
    circuits_metric_init(&m);
    m.kind = k;
    m.answer = rm->answer;
    m.wrong = rm->wrong;
    m.positions = rm->positions;
    m.tokens = rm->tokens;
    rc = cx_metric_check(&m, &checked, ds->n_rows, ds->pos, job->model->cfg.d_vocab_out, FN_CREATE);
    if (!rc && !(rc = set_str(params, "metric", name)))
        rc = set_str(params, "metric_position", !reads_position ? "every" : p ? "column" : "default");
    if (rc) {
        cx_free(rm->positions);
        rm->positions = NULL;
    }
    return rc;
}

/* Row r's metric into *m (*p: its position's storage). The labels of LOSS and TOKEN_LOSS are the
 * clean row's tokens in every run (clean, corrupted and patched): one function of the logits for
 * the three, as TransformerLens's patching metrics are, so the clean run scores 1 normalised. */
static void metric_of_row(const row_metric *rm, int64_t r, int64_t *p, circuits_metric *m)
{
    circuits_metric_init(m);
    m->kind = rm->kind;
    if (rm->answer) m->answer = rm->answer + r;
    if (rm->wrong) m->wrong = rm->wrong + r;
    if (rm->positions) {
        *p = rm->positions[r];
        m->positions = p;
    }
    if (rm->kind == CIRCUITS_METRIC_LOSS || rm->kind == CIRCUITS_METRIC_TOKEN_LOSS) m->tokens = rm->tokens + r * rm->pos;
}

/* Every block of the model has hook point `kind` (a context's hook table knows: made and freed);
 * what names the option in messages. */
static int check_hooks(const circuits_model *model, cx_hook_kind kind, const char *what)
{
    circuits_context *ctx;
    int rc = circuits_context_create(&ctx, model, NULL);
    if (rc) return rc;
    for (int32_t l = 0; l < model->cfg.n_layers && !rc; l++)
        if (cx_hook_index(&ctx->hooks, l, kind) < 0) {
            char name[96];
            cx_hook_kind_name(l, kind, name, sizeof name);
            rc = cx_fail(CIRCUITS_E_NOT_FOUND, "%s: %s: this model has no hook point '%s'", FN_CREATE, what, name);
        }
    circuits_context_free(ctx);
    return rc;
}

/* ---- reduction helpers ---- */

/* One per-row tensor gathered from every unit: [n_rows, <trailing shape of unit 0>], F32. */
typedef struct gathered {
    const char *name;
    int ndim;
    int64_t shape[CX_ST_MAX_DIMS];
    size_t per_row; /* floats of one row */
    float *data;
} gathered;

/* Reads tensors g[0 .. n) of every unit, in unit order, each [unit's rows, ...] F32 with the
 * trailing shape unit 0's has. */
static int gather(const cx_job_reader *r, gathered *g, size_t n)
{
    int rc = CIRCUITS_OK;
    for (int64_t u = 0; u < r->n_units && !rc; u++) {
        int64_t row0 = u * r->unit_rows, rows = r->n_rows - row0 < r->unit_rows ? r->n_rows - row0 : r->unit_rows;
        cx_st_set *set;
        if ((rc = cx_job_reader_open(r, u, &set, FN_MERGE))) break;
        for (size_t i = 0; i < n && !rc; i++) {
            const cx_st_tensor *t = cx_st_find(set, g[i].name);
            bool ok = t && t->dtype == CX_DT_F32 && t->ndim >= 1 && t->shape[0] == rows;
            if (ok && u == 0) {
                g[i].ndim = t->ndim;
                g[i].shape[0] = r->n_rows;
                g[i].per_row = 1;
                for (int d = 1; d < t->ndim; d++) {
                    g[i].shape[d] = t->shape[d];
                    g[i].per_row *= (size_t)t->shape[d];
                }
                if (g[i].per_row > SIZE_MAX / sizeof(float) / (size_t)r->n_rows) {
                    rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: '%s' of %lld rows is too large", FN_MERGE, g[i].name,
                                 (long long)r->n_rows);
                    break;
                }
                g[i].data = cx_malloc((size_t)r->n_rows * g[i].per_row * sizeof(float));
                if (!g[i].data) {
                    rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for '%s' of %lld rows", FN_MERGE,
                                 g[i].name, (long long)r->n_rows);
                    break;
                }
            }
            for (int d = 1; ok && d < t->ndim; d++) ok = t->ndim == g[i].ndim && t->shape[d] == g[i].shape[d];
            if (!ok) {
                rc = cx_fail(CIRCUITS_E_FORMAT,
                             "%s: unit file '%s' has no F32 tensor '%s' of %lld rows shaped as unit 0's (a unit of "
                             "another kind, or damaged)",
                             FN_MERGE, r->unit_paths[u], g[i].name, (long long)rows);
                break;
            }
            memcpy(g[i].data + (size_t)row0 * g[i].per_row, t->data, t->nbytes);
        }
        cx_st_close(set);
    }
    return rc;
}

/* The mean over rows of x [n_rows, per] into mean_d [per] (double) and mean [per] (float): sums in
 * double, rows in order, divided once. */
static void row_mean(const float *x, int64_t n_rows, size_t per, double *mean_d, float *mean)
{
    for (size_t i = 0; i < per; i++) mean_d[i] = 0.0;
    for (int64_t r = 0; r < n_rows; r++)
        for (size_t i = 0; i < per; i++) mean_d[i] += x[(size_t)r * per + i];
    for (size_t i = 0; i < per; i++) {
        mean_d[i] /= (double)n_rows;
        mean[i] = (float)mean_d[i];
    }
}

static cx_st_out st_out(const char *name, int ndim, const int64_t *shape, const float *data)
{
    cx_st_out o = {.name = name, .dtype = CX_DT_F32, .ndim = ndim, .data = data};
    for (int d = 0; d < ndim; d++) o.shape[d] = shape[d];
    return o;
}

static void gathered_free(gathered *g, size_t n)
{
    for (size_t i = 0; i < n; i++) cx_free(g[i].data);
}

/* ======================================================================================== */
/* Patching sweep                                                                             */
/* ======================================================================================== */

typedef struct patch_state {
    int32_t kind;
    cx_hook_kind hook;
    int64_t shape[4];
    int32_t ndim;
    size_t cells;           /* floats of one row's grid */
    const int32_t *corrupted; /* [n_rows, pos] */
    row_metric rm;
} patch_state;

/* The patch options every sweep runs with, recorded in the provenance: the library's defaults
 * (incremental runs, automatic cells per run). They give a row's grid deterministically (the
 * grouping of cells depends on pos only); other values round differently (docs/patching.md). */
static void patch_options(circuits_patch_options *po)
{
    circuits_patch_options_init(po);
    po->incremental = 1;
    po->cells_per_run = 0;
}

static void patch_release(circuits_job *job)
{
    patch_state *s = job->kstate;
    if (!s) return;
    cx_free(s->rm.positions);
    cx_free(s);
    job->kstate = NULL;
}

static int patch_prepare(circuits_job *job, json_t *params)
{
    const circuits_dataset *ds = job->ds;
    const circuits_config *c = &job->model->cfg;
    int rc = no_hooks(job, "a patching sweep");
    if (rc) return rc;
    const cx_patch_kind *pk = cx_patch_kind_of(job->o.patch_kind);
    if (!pk)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: patch_kind %d is no circuits_patch_kind", FN_CREATE,
                       job->o.patch_kind);
    const cx_ds_column *cc = cx_dataset_find(ds, "corrupted");
    if (!cc)
        return cx_fail(CIRCUITS_E_NOT_FOUND,
                       "%s: a patching sweep reads the dataset's column \"corrupted\" [n_rows, pos] (each row's "
                       "corrupted prompt); the dataset has none",
                       FN_CREATE);
    if (cc->width != ds->pos)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the dataset's column \"corrupted\" is [%lld, %lld]; its tokens are [%lld, %lld]",
                       FN_CREATE, (long long)ds->n_rows, (long long)cc->width, (long long)ds->n_rows,
                       (long long)ds->pos);
    for (int64_t i = 0; i < ds->n_rows * ds->pos; i++)
        if (cc->values[i] < 0 || cc->values[i] >= c->d_vocab)
            return cx_fail(CIRCUITS_E_RANGE, "%s: the dataset's \"corrupted\"[%lld, %lld] = %d is outside d_vocab = %d",
                           FN_CREATE, (long long)(i / ds->pos), (long long)(i % ds->pos), cc->values[i], c->d_vocab);
    char what[64];
    snprintf(what, sizeof what, "patch_kind %s", PATCH_NAMES[job->o.patch_kind]);
    if ((rc = check_hooks(job->model, pk->hook, what))) return rc;
    patch_state *s = cx_calloc(1, sizeof *s);
    if (!s) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", FN_CREATE);
    s->kind = job->o.patch_kind;
    s->hook = pk->hook;
    s->corrupted = cc->values;
    if ((rc = circuits_patch_grid_shape(job->model, s->kind, ds->pos, s->shape, &s->ndim))) {
        cx_free(s);
        return rc;
    }
    s->cells = 1;
    for (int32_t d = 0; d < s->ndim; d++) s->cells *= (size_t)s->shape[d];
    if ((rc = metric_prepare(job, &s->rm, params))) {
        cx_free(s);
        return rc;
    }
    job->kstate = s;
    circuits_patch_options po;
    patch_options(&po);
    if ((rc = set_str(params, "patch_kind", PATCH_NAMES[s->kind])) ||
        (rc = set_int(params, "patch_incremental", po.incremental)) ||
        (rc = set_int(params, "patch_cells_per_run", po.cells_per_run)))
        patch_release(job);
    return rc;
}

/* Row r: the clean run caching the patched point of every block (and its logits: the clean
 * metric), the corrupted run (its metric), and the grid. */
static int patch_row(circuits_context *ctx, const char *fn, const patch_state *s, const circuits_dataset *ds, int64_t r,
                     float *const *dst, const float *const *clean, float *logits, float *grid, float *clean_metric,
                     float *corrupted_metric)
{
    int64_t T = ds->pos, V = ctx->model->cfg.d_vocab_out;
    const int32_t *tokens = ds->cols[0].values + r * T, *corrupted = s->corrupted + r * T;
    int64_t p;
    circuits_metric m;
    metric_of_row(&s->rm, r, &p, &m);
    cx_run run = cx_run_init(ctx, fn, tokens, 1, T);
    run.cache_dst = dst;
    run.out = logits;
    int rc = cx_context_run(ctx, &run);
    if (!rc) rc = circuits_metric_eval(&m, logits, 1, T, V, clean_metric);
    if (!rc) rc = circuits_context_forward(ctx, corrupted, 1, T, logits, NULL, NULL);
    if (!rc) rc = circuits_metric_eval(&m, logits, 1, T, V, corrupted_metric);
    circuits_patch_options po;
    patch_options(&po);
    if (!rc) rc = circuits_context_activation_patch(ctx, s->kind, corrupted, 1, T, clean, &m, &po, grid);
    return rc;
}

static int patch_unit(circuits_job *job, circuits_context *ctx, int64_t row0, int64_t n, cx_job_result *res)
{
    const patch_state *s = job->kstate;
    const circuits_dataset *ds = job->ds;
    int32_t L = ctx->model->cfg.n_layers;
    int64_t T = ds->pos, V = ctx->model->cfg.d_vocab_out;
    int64_t gshape[5] = {n};
    for (int32_t d = 0; d < s->ndim; d++) gshape[d + 1] = s->shape[d];
    void *grid, *clean_m, *corr_m;
    int rc;
    if ((rc = cx_job_result_add(res, "grid", CX_DT_F32, s->ndim + 1, gshape, &grid)) ||
        (rc = cx_job_result_add(res, "clean_metric", CX_DT_F32, 1, &n, &clean_m)) ||
        (rc = cx_job_result_add(res, "corrupted_metric", CX_DT_F32, 1, &n, &corr_m)))
        return rc;
    /* the clean activation of the patched point of every block (prepare checked that each block
     * has it), [1, its TL shape] each, one block's size apart */
    circuits_tensor t;
    cx_hook_describe(ctx, &ctx->hooks.points[cx_hook_index(&ctx->hooks, 0, s->hook)], 1, T, 0, NULL, &t);
    size_t row = (size_t)t.strides[0];
    float **dst = cx_calloc(ctx->hooks.n_points, sizeof *dst);
    const float **clean = cx_calloc((size_t)L, sizeof *clean);
    float *acts = cx_malloc((size_t)L * row * sizeof(float)), *logits = cx_malloc((size_t)(T * V) * sizeof(float));
    if (!dst || !clean || !acts || !logits) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn_of(job));
    for (int32_t l = 0; l < L && !rc; l++) {
        dst[cx_hook_index(&ctx->hooks, l, s->hook)] = acts + (size_t)l * row;
        clean[l] = acts + (size_t)l * row;
    }
    for (int64_t i = 0; i < n && !rc; i++)
        rc = patch_row(ctx, fn_of(job), s, ds, row0 + i, dst, clean, logits, (float *)grid + (size_t)i * s->cells,
                       (float *)clean_m + i, (float *)corr_m + i);
    cx_free(dst);
    cx_free(clean);
    cx_free(acts);
    cx_free(logits);
    return rc;
}

static int patch_reduce(const cx_job_reader *r, const char *out)
{
    gathered g[3] = {{.name = "grid"}, {.name = "clean_metric"}, {.name = "corrupted_metric"}};
    int rc = gather(r, g, 3);
    size_t per = g[0].per_row;
    double *mean_d = NULL;
    float *mean = NULL, *norm = NULL;
    if (!rc && (g[1].ndim != 1 || g[2].ndim != 1))
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: the units' clean_metric and corrupted_metric are not [rows]", FN_MERGE);
    if (!rc) {
        mean_d = cx_malloc(per * sizeof(double));
        mean = cx_malloc(per * sizeof(float));
        norm = cx_malloc(per * sizeof(float));
        if (!mean_d || !mean || !norm) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", FN_MERGE);
    }
    if (!rc) {
        double clean_d, corr_d;
        float unused;
        row_mean(g[1].data, r->n_rows, 1, &clean_d, &unused);
        row_mean(g[2].data, r->n_rows, 1, &corr_d, &unused);
        double den = clean_d - corr_d;
        row_mean(g[0].data, r->n_rows, per, mean_d, mean);
        for (size_t i = 0; i < per; i++) norm[i] = den != 0.0 ? (float)((mean_d[i] - corr_d) / den) : NAN;
        cx_st_out t[5] = {st_out("grid", g[0].ndim, g[0].shape, g[0].data),
                          st_out("clean_metric", 1, g[1].shape, g[1].data),
                          st_out("corrupted_metric", 1, g[2].shape, g[2].data),
                          st_out("mean_grid", g[0].ndim - 1, g[0].shape + 1, mean),
                          st_out("normalized_mean_grid", g[0].ndim - 1, g[0].shape + 1, norm)};
        const char *meta[2] = {"circuits_job", r->prov_text};
        rc = cx_st_write(out, t, 5, meta, 1, FN_MERGE);
    }
    cx_free(mean_d);
    cx_free(mean);
    cx_free(norm);
    gathered_free(g, 3);
    return rc;
}

const cx_job_kind cx_job_patch_sweep = {
    .name = "patch_sweep",
    .prepare = patch_prepare,
    .release = patch_release,
    .unit = patch_unit,
    .reduce = patch_reduce,
};

/* ======================================================================================== */
/* Ablation sweep                                                                             */
/* ======================================================================================== */

typedef struct ablation_state {
    int32_t kind;       /* CIRCUITS_ABLATE_ZERO or _MEAN */
    char (*hooks)[48];  /* [n_layers]: "blocks.L.attn.hook_z" */
    float *means;       /* MEAN: [n_layers, pos, n_heads, d_head] */
    size_t mean_row;    /* floats of one block's mean */
    row_metric rm;
} ablation_state;

static void ablation_release(circuits_job *job)
{
    ablation_state *s = job->kstate;
    if (!s) return;
    cx_free(s->hooks);
    cx_free(s->means);
    cx_free(s->rm.positions);
    cx_free(s);
    job->kstate = NULL;
}

/* MEAN: every block's hook_z mean [pos, n_heads, d_head] from job->o.ablation_means, copied; its
 * SHA-256 recorded (the path is not: the same file elsewhere is the same job). */
static int load_means(const circuits_job *job, ablation_state *s, json_t *params)
{
    const char *path = job->o.ablation_means;
    const circuits_config *c = &job->model->cfg;
    int64_t want[3] = {job->ds->pos, c->n_heads, c->d_head};
    cx_st_set *set;
    int rc = cx_st_open(&set, path, CX_ST_READ);
    if (rc) { /* name the option, keep the reason */
        char why[512];
        snprintf(why, sizeof why, "%s", circuits_last_error());
        return cx_fail(rc, "%s: ablation_means: %s", FN_CREATE, why);
    }
    s->mean_row = (size_t)(want[0] * want[1] * want[2]);
    s->means = cx_malloc((size_t)c->n_layers * s->mean_row * sizeof(float));
    if (!s->means) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for the ablation means", FN_CREATE);
    for (int32_t l = 0; l < c->n_layers && !rc; l++) {
        const cx_st_tensor *t = cx_st_find(set, s->hooks[l]);
        if (!t) {
            rc = cx_fail(CIRCUITS_E_NOT_FOUND,
                         "%s: ablation_means '%s' has no tensor '%s' (a mean-activations job's output over every "
                         "block's attn.hook_z)",
                         FN_CREATE, path, s->hooks[l]);
            break;
        }
        if (t->dtype != CX_DT_F32) {
            rc = cx_fail(CIRCUITS_E_DTYPE, "%s: ablation_means '%s': '%s' is %s, not F32", FN_CREATE, path, s->hooks[l],
                         cx_dtype_name(t->dtype));
            break;
        }
        if (t->ndim != 3 || t->shape[0] != want[0] || t->shape[1] != want[1] || t->shape[2] != want[2]) {
            rc = cx_fail(CIRCUITS_E_SHAPE, "%s: ablation_means '%s': '%s' is not [pos %lld, n_heads %lld, d_head %lld]",
                         FN_CREATE, path, s->hooks[l], (long long)want[0], (long long)want[1], (long long)want[2]);
            break;
        }
        memcpy(s->means + (size_t)l * s->mean_row, t->data, t->nbytes);
    }
    cx_st_close(set);
    char hex[65];
    if (!rc) rc = cx_sha256_file(path, hex, FN_CREATE);
    if (!rc) rc = set_str(params, "ablation_means_sha256", hex);
    return rc;
}

static int ablation_prepare(circuits_job *job, json_t *params)
{
    const circuits_config *c = &job->model->cfg;
    int32_t k = job->o.ablation_kind;
    int rc = no_hooks(job, "an ablation sweep");
    if (rc) return rc;
    if (k == CIRCUITS_ABLATE_RESAMPLE)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: ablation_kind RESAMPLE: an ablation sweep takes ZERO or MEAN (a resampled row would "
                       "depend on other rows' runs; not built)",
                       FN_CREATE);
    if (k != CIRCUITS_ABLATE_ZERO && k != CIRCUITS_ABLATE_MEAN)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ablation_kind %d is no circuits_ablation_kind", FN_CREATE, k);
    if (k == CIRCUITS_ABLATE_MEAN && !job->o.ablation_means)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "%s: ablation_kind MEAN needs ablation_means (a mean-activations job's output file); it is NULL",
                       FN_CREATE);
    if (k == CIRCUITS_ABLATE_ZERO && job->o.ablation_means)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "%s: ablation_means is set but ablation_kind is ZERO (it would be ignored; set MEAN)", FN_CREATE);
    if ((rc = check_hooks(job->model, HK_Z, "an ablation sweep"))) return rc;
    ablation_state *s = cx_calloc(1, sizeof *s);
    if (s) s->hooks = cx_calloc((size_t)c->n_layers, sizeof *s->hooks);
    if (!s || !s->hooks) {
        cx_free(s);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", FN_CREATE);
    }
    job->kstate = s;
    s->kind = k;
    for (int32_t l = 0; l < c->n_layers; l++) snprintf(s->hooks[l], sizeof s->hooks[l], "blocks.%d.attn.hook_z", l);
    if (!(rc = set_str(params, "ablation_kind", k == CIRCUITS_ABLATE_ZERO ? "zero" : "mean")) &&
        (k != CIRCUITS_ABLATE_MEAN || !(rc = load_means(job, s, params))))
        rc = metric_prepare(job, &s->rm, params);
    if (rc) ablation_release(job);
    return rc;
}

/* A run of one row replicated over the batch, batch row b with head h0 + b of block `layer`
 * ablated (every position of hook_z's slice [:, :, h, :]). One block per run: every row of a
 * run has the same edited point, as circuits_context_run_ablated's run on one head has. */
typedef struct head_batch {
    const ablation_state *s;
    int32_t layer;
    int64_t h0;
} head_batch;

static int ablate_heads(const circuits_tensor *a, void *user)
{
    const head_batch *hb = user;
    const ablation_state *s = hb->s;
    int64_t B = a->shape[0], T = a->shape[1], H = a->shape[2], dh = a->shape[3];
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int64_t h = hb->h0 + b;
            float *x = a->data + b * a->strides[0] + t * a->strides[1] + h * a->strides[2];
            if (s->kind == CIRCUITS_ABLATE_ZERO) memset(x, 0, (size_t)dh * sizeof(float));
            else memcpy(x, s->means + (size_t)hb->layer * s->mean_row + (size_t)((t * H + h) * dh), (size_t)dh * sizeof(float));
        }
    return CIRCUITS_HOOK_CONTINUE;
}

static int ablation_unit(circuits_job *job, circuits_context *ctx, int64_t row0, int64_t n, cx_job_result *res)
{
    const ablation_state *s = job->kstate;
    const circuits_dataset *ds = job->ds;
    const circuits_config *c = &ctx->model->cfg;
    int64_t T = ds->pos, V = c->d_vocab_out, L = c->n_layers, H = c->n_heads;
    int64_t gshape[3] = {n, L, H};
    void *grid, *base;
    int rc;
    if ((rc = cx_job_result_add(res, "grid", CX_DT_F32, 3, gshape, &grid)) ||
        (rc = cx_job_result_add(res, "baseline_metric", CX_DT_F32, 1, &n, &base)))
        return rc;
    /* heads per run: a block's heads, as many as keep a run within the patching grids' limits
     * (the logits computed only at the metric's position, unless it reads all: LOSS) */
    bool all = s->rm.kind == CIRCUITS_METRIC_LOSS;
    int64_t TL = all ? T : 1, per = H, by_rows = CX_CELL_ROWS / T, by_logits = CX_CELL_LOGIT_FLOATS / (TL * V);
    if (per > by_rows) per = by_rows;
    if (per > by_logits) per = by_logits;
    if (per < 1) per = 1;
    float *logits = cx_malloc((size_t)((per * TL > T ? per * TL : T) * V) * sizeof(float)); /* and the baseline's */
    int32_t *tokens = cx_malloc((size_t)(per * T) * sizeof(int32_t));
    if (!logits || !tokens) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn_of(job));
    for (int64_t i = 0; i < n && !rc; i++) {
        int64_t r = row0 + i, p;
        const int32_t *row = ds->cols[0].values + r * T;
        for (int64_t b = 0; b < per; b++) memcpy(tokens + b * T, row, (size_t)T * sizeof(int32_t));
        circuits_metric m, pm;
        metric_of_row(&s->rm, r, &p, &m);
        rc = circuits_context_run_ablated(ctx, NULL, 0, row, 1, T, logits, NULL);
        if (!rc) rc = circuits_metric_eval(&m, logits, 1, T, V, (float *)base + i);
        if (!rc) rc = cx_metric_check(&m, &pm, 1, T, V, fn_of(job));
        int64_t at = cx_metric_row_pos(&pm, 0, T); /* the one position the logits are computed at */
        for (int32_t l = 0; l < L && !rc; l++)
            for (int64_t h0 = 0; h0 < H && !rc; h0 += per) {
                int64_t g = H - h0 < per ? H - h0 : per;
                head_batch hb = {s, l, h0};
                cx_edit e = {l, HK_Z, ablate_heads, &hb, false, 0};
                cx_run run = cx_run_init(ctx, fn_of(job), tokens, g, T);
                run.edits = &e;
                run.n_edits = 1;
                run.out = logits;
                if (!all) {
                    run.positions = &at;
                    run.n_positions = 1;
                }
                cx_gemm_per_sequence(true); /* each head's products as run_ablated's on one head (kernels.h) */
                rc = cx_context_run(ctx, &run);
                cx_gemm_per_sequence(false);
                for (int64_t b = 0; b < g && !rc; b++)
                    rc = cx_metric_value(&pm, logits + b * TL * V, 1, T, V, all ? NULL : &at, all ? 0 : 1,
                                         (float *)grid + (i * L + l) * H + h0 + b, fn_of(job));
            }
    }
    cx_free(logits);
    cx_free(tokens);
    return rc;
}

static int ablation_reduce(const cx_job_reader *r, const char *out)
{
    gathered g[2] = {{.name = "grid"}, {.name = "baseline_metric"}};
    int rc = gather(r, g, 2);
    if (!rc && (g[0].ndim != 3 || g[1].ndim != 1))
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: the units' grid is not [rows, n_layers, n_heads] or baseline_metric "
                     "not [rows]", FN_MERGE);
    size_t per = g[0].per_row;
    double *mean_d = NULL;
    float *mean = NULL;
    if (!rc) {
        mean_d = cx_malloc(per * sizeof(double));
        mean = cx_malloc(per * sizeof(float));
        if (!mean_d || !mean) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", FN_MERGE);
    }
    if (!rc) {
        row_mean(g[0].data, r->n_rows, per, mean_d, mean);
        cx_st_out t[3] = {st_out("grid", 3, g[0].shape, g[0].data), st_out("baseline_metric", 1, g[1].shape, g[1].data),
                          st_out("mean_grid", 2, g[0].shape + 1, mean)};
        const char *meta[2] = {"circuits_job", r->prov_text};
        rc = cx_st_write(out, t, 3, meta, 1, FN_MERGE);
    }
    cx_free(mean_d);
    cx_free(mean);
    gathered_free(g, 2);
    return rc;
}

const cx_job_kind cx_job_ablation_sweep = {
    .name = "ablation_sweep",
    .prepare = ablation_prepare,
    .release = ablation_release,
    .unit = ablation_unit,
    .reduce = ablation_reduce,
};
