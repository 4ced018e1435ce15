/* The mean-activations job (CIRCUITS_JOB_MEAN_ACTIVATIONS): per unit, each hook point's
 * activation summed over the unit's rows in double, in row order ("sum.<hook>", F64, the point's
 * TL shape without the batch axis); the reduction adds the units' sums in unit order and writes
 * total / n_rows as F32 "<hook>" tensors — what circuits_context_mean_activations computes, and
 * what an ablation sweep's MEAN ablation reads (its "blocks.L.attn.hook_z" [pos, n_heads, d_head]). */
#include "ablate.h"
#include "job.h"
#include "kernels.h"
#include "st_save.h"

#include <stdio.h>
#include <string.h>

static int mean_prepare(circuits_job *job, json_t *params)
{
    (void)params; /* the hooks, in the engine's part of the record, are all it reads */
    if (!job->n_hooks)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_job_create: a mean_activations job needs hooks (n_hooks is 0)");
    return CIRCUITS_OK;
}

static int mean_unit(circuits_job *job, circuits_context *ctx, int64_t row0, int64_t n, cx_job_result *res)
{
    int32_t *points = cx_calloc(job->n_hooks, sizeof *points);
    double **sums = cx_calloc(job->n_hooks, sizeof *sums);
    int rc = points && sums ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", job->fn);
    for (size_t i = 0; i < job->n_hooks && !rc; i++) {
        if ((rc = cx_hook_one(ctx, job->fn, job->hooks[i], &points[i]))) break;
        circuits_tensor t;
        cx_hook_describe(ctx, &ctx->hooks.points[points[i]], 1, job->ds->pos, 0, NULL, &t);
        char name[300];
        snprintf(name, sizeof name, "sum.%s", job->hooks[i]);
        rc = cx_job_result_add(res, name, CX_DT_F64, (int)t.ndim - 1, t.shape + 1, (void **)&sums[i]);
    }
    if (!rc) {
        cx_gemm_per_sequence(true); /* a row's bits whatever the batch size (kernels.h) */
        rc = cx_activation_sums(ctx, points, job->n_hooks, job->ds->cols[0].values + row0 * job->ds->pos, n,
                                job->ds->pos, job->o.batch_size, sums, job->fn);
        cx_gemm_per_sequence(false);
    }
    cx_free(sums);
    cx_free(points);
    return rc;
}

/* One value of an F64 tensor read from a file (little-endian, maybe unaligned). */
static double f64_at(const cx_st_tensor *t, size_t i)
{
    uint64_t b = 0;
    for (int k = 7; k >= 0; k--) b = b << 8 | t->data[8 * i + (size_t)k];
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

static int mean_reduce(const cx_job_reader *r, const char *out)
{
    const char *fn = "circuits_job_merge";
    json_t *hooks = json_object_get(json_object_get(r->prov, "job"), "hooks");
    size_t nh = json_array_size(hooks);
    if (!nh) return cx_fail(CIRCUITS_E_FORMAT, "%s: the job record lists no hooks", fn);
    for (size_t i = 0; i < nh; i++)
        if (!json_is_string(json_array_get(hooks, i)) || strlen(json_string_value(json_array_get(hooks, i))) > 250)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: the job record's hooks[%zu] is not a hook name", fn, i);
    cx_st_out *o = cx_calloc(nh, sizeof *o);
    double **total = cx_calloc(nh, sizeof *total);
    size_t *numel = cx_calloc(nh, sizeof *numel);
    int rc = o && total && numel ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (int64_t u = 0; u < r->n_units && !rc; u++) {
        cx_st_set *set;
        if ((rc = cx_job_reader_open(r, u, &set, fn))) break;
        if (set->n_tensors != nh)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s holds %zu tensors, not the job's %zu sums", fn, r->unit_paths[u],
                         set->n_tensors, nh);
        for (size_t i = 0; i < nh && !rc; i++) {
            const char *hook = json_string_value(json_array_get(hooks, i));
            char name[300];
            snprintf(name, sizeof name, "sum.%s", hook);
            const cx_st_tensor *t = cx_st_find(set, name);
            if (!t || t->dtype != CX_DT_F64) {
                rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s has no F64 tensor '%s'", fn, r->unit_paths[u], name);
                break;
            }
            if (u == 0) { /* the first unit sets each shape; the others must agree */
                o[i] = (cx_st_out){hook, CX_DT_F32, t->ndim, {0}, NULL};
                memcpy(o[i].shape, t->shape, sizeof o[i].shape);
                numel[i] = t->numel;
                total[i] = cx_calloc(t->numel ? t->numel : 1, sizeof(double));
                if (!total[i]) {
                    rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
                    break;
                }
            } else if (t->ndim != o[i].ndim || memcmp(t->shape, o[i].shape, sizeof(int64_t) * (size_t)t->ndim) != 0) {
                rc = cx_fail(CIRCUITS_E_SHAPE, "%s: %s: '%s' has another shape than in unit 0", fn, r->unit_paths[u], name);
                break;
            }
            for (size_t j = 0; j < numel[i]; j++) total[i][j] += f64_at(t, j);
        }
        cx_st_close(set);
    }
    for (size_t i = 0; i < nh && !rc; i++) {
        float *m = cx_malloc((numel[i] ? numel[i] : 1) * sizeof *m);
        if (!m) {
            rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
            break;
        }
        for (size_t j = 0; j < numel[i]; j++) m[j] = (float)(total[i][j] / (double)r->n_rows);
        o[i].data = m;
    }
    const char *meta[] = {"circuits_job", r->prov_text};
    if (!rc) rc = cx_st_write(out, o, nh, meta, 1, fn);
    for (size_t i = 0; total && i < nh; i++) cx_free(total[i]);
    for (size_t i = 0; o && i < nh; i++) cx_free((void *)o[i].data);
    cx_free(total);
    cx_free(numel);
    cx_free(o);
    return rc;
}

const cx_job_kind cx_job_mean = {
    .name = "mean_activations", .prepare = mean_prepare, .unit = mean_unit, .reduce = mean_reduce};
