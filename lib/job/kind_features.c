/* The feature-statistics job kind (docs/jobs.md "Feature statistics"): an SAE's statistics over
 * the dataset (lib/sae/features.c), each unit's over its own rows (numbered as in the dataset),
 * the units merged in unit order into the file circuits_feature_stats_save writes.
 *
 * A unit's result is the statistics file's tensors plus n_tokens and n_rows (I64 [1]). The merge
 * keeps exactly the top contexts one pass over the whole dataset keeps (the total order: value,
 * then row, position), the counts and maxima exactly; only the sums are added in another order
 * (per unit, then unit by unit). The reduction has neither model nor SAE: the dimensions and
 * options come from the provenance, where prepare recorded them. */
#include "job.h"
#include "sae.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct fstate {
    circuits_sae *sae;
    circuits_feature_stats_options o;
} fstate;

static const char *const sae_files[] = {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"};

/* Digests of the SAE directory's files (sparsity.safetensors only when present) into files. */
static int digest_sae(const char *dir, json_t *files, const char *fn)
{
    for (size_t i = 0; i < CX_COUNT(sae_files); i++) {
        char path[4096], hex[65];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, sae_files[i]) >= sizeof path)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: sae_path '%.200s...' is too long", fn, dir);
        struct stat sb;
        if (i == 2 && stat(path, &sb) != 0) continue; /* optional */
        int rc = cx_sha256_file(path, hex, fn);
        if (rc) return rc;
        if (json_object_set_new(files, sae_files[i], json_string(hex)))
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    return CIRCUITS_OK;
}

static void release(circuits_job *job)
{
    fstate *s = job->kstate;
    if (!s) return;
    circuits_sae_free(s->sae);
    cx_free(s);
    job->kstate = NULL;
}

static int prepare_state(circuits_job *job, json_t *params)
{
    const char *fn = "circuits_job_create";
    if (!job->o.sae_path)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: a FEATURE_STATS job needs sae_path (an SAELens directory)", fn);
    fstate *s = cx_calloc(1, sizeof *s);
    if (!s) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    job->kstate = s;
    int rc = cx_feature_stats_options_resolve(&s->o, job->o.feature_stats, fn);
    if (rc) return rc;
    if ((rc = circuits_sae_load(&s->sae, job->o.sae_path))) {
        char why[768]; /* the load's message, copied: cx_fail writes over it */
        snprintf(why, sizeof why, "%s", circuits_last_error());
        return cx_fail(rc, "%s: sae_path: %s", fn, why);
    }
    /* the SAE's point must exist in this model with the SAE's width: found now, not in every unit */
    circuits_context *ctx = NULL;
    if ((rc = circuits_context_create(&ctx, job->model, NULL))) return rc;
    rc = cx_feature_stats_check_point(ctx, s->sae, fn);
    circuits_context_free(ctx);
    if (rc) return rc;
    const circuits_sae *sae = s->sae;
    json_t *files = json_object(), *js = json_object(), *jo = json_object();
    if (!files || !js || !jo) {
        json_decref(files), json_decref(js), json_decref(jo);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    /* json_object_set_new takes the value even when it fails: each one is owned by params or freed */
    if (json_object_set_new(js, "files", files)) {
        json_decref(js), json_decref(jo);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    if (json_object_set_new(params, "sae", js)) {
        json_decref(jo);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    if (json_object_set_new(params, "feature_stats", jo)) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    if ((rc = digest_sae(job->o.sae_path, files, fn))) return rc;
    const circuits_feature_stats_options *o = &s->o;
    if (json_object_set_new(js, "hook_name", json_string(sae->hook_name)) ||
        json_object_set_new(js, "architecture", json_string(sae->arch_name)) ||
        json_object_set_new(js, "transcoder", json_boolean(sae->transcoder)) ||
        json_object_set_new(js, "d_in", json_integer(sae->d_in)) ||
        json_object_set_new(js, "d_sae", json_integer(sae->d_sae)) ||
        json_object_set_new(jo, "top_k", json_integer(o->top_k)) ||
        json_object_set_new(jo, "context_left", json_integer(o->context_left)) ||
        json_object_set_new(jo, "context_right", json_integer(o->context_right)) ||
        json_object_set_new(jo, "threshold", json_real((double)o->threshold)) || /* %.17g: the float exactly */
        json_object_set_new(jo, "skip_positions", json_integer(o->skip_positions)))
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    return CIRCUITS_OK;
}

/* On failure nothing is left behind (release runs only for a job prepared). */
static int prepare(circuits_job *job, json_t *params)
{
    int rc = prepare_state(job, params);
    if (rc) release(job);
    return rc;
}

/* Appends a copy of the statistics' tensors and the counts to res. */
static int serialize(const circuits_feature_stats *st, int64_t n_tokens, int64_t n_rows, cx_job_result *res)
{
    cx_st_out t[CX_FEATURE_STATS_TENSORS];
    cx_feature_stats_tensors(st, t);
    int rc = CIRCUITS_OK;
    for (int i = 0; i < CX_FEATURE_STATS_TENSORS && !rc; i++) {
        void *data;
        if ((rc = cx_job_result_add(res, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, &data))) break;
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        memcpy(data, t[i].data, numel * cx_dtype_size(t[i].dtype));
    }
    int64_t *v;
    if (!rc && !(rc = cx_job_result_add(res, "n_tokens", CX_DT_I64, 1, (int64_t[]){1}, (void **)&v))) *v = n_tokens;
    if (!rc && !(rc = cx_job_result_add(res, "n_rows", CX_DT_I64, 1, (int64_t[]){1}, (void **)&v))) *v = n_rows;
    return rc;
}

static int unit(circuits_job *job, circuits_context *ctx, int64_t row0, int64_t n, cx_job_result *res)
{
    const char *fn = job->fn; /* run or compute */
    fstate *s = job->kstate;
    const int32_t *tokens = job->ds->cols[0].values;
    int64_t pos = job->ds->pos, bs = job->o.batch_size > 0 ? job->o.batch_size : 8;
    circuits_feature_stats *st = NULL;
    int rc = circuits_feature_stats_create(&st, s->sae, &s->o);
    if (!rc) rc = cx_feature_stats_set_row_base(st, row0, fn);
    /* each row runs alone inside the add: the batch size changes no bit */
    for (int64_t r = 0; r < n && !rc; r += bs)
        rc = circuits_context_feature_stats_add(ctx, st, tokens + (row0 + r) * pos, n - r < bs ? n - r : bs, pos);
    int64_t n_tokens = 0;
    if (!rc) rc = circuits_feature_stats_dims(st, &n_tokens, NULL, NULL, NULL);
    if (!rc) rc = serialize(st, n_tokens, n, res);
    circuits_feature_stats_free(st);
    return rc;
}

/* The recorded parameters the reduction needs, from the provenance's "job" object. */
static int read_params(const cx_job_reader *r, circuits_feature_stats_options *o, int64_t *d_sae, const char **hook,
                       const char **arch, bool *transcoder, const char *fn)
{
    json_t *p = json_object_get(r->prov, "job");
    json_t *js = json_object_get(p, "sae"), *jo = json_object_get(p, "feature_stats");
    json_t *d = json_object_get(js, "d_sae"), *h = json_object_get(js, "hook_name"),
           *a = json_object_get(js, "architecture"), *tc = json_object_get(js, "transcoder");
    json_t *k = json_object_get(jo, "top_k"), *cl = json_object_get(jo, "context_left"),
           *cr = json_object_get(jo, "context_right"), *th = json_object_get(jo, "threshold"),
           *sk = json_object_get(jo, "skip_positions");
    if (!json_is_integer(d) || !json_is_string(h) || !json_is_string(a) || !json_is_boolean(tc) || !json_is_integer(k) ||
        !json_is_integer(cl) || !json_is_integer(cr) || !json_is_number(th) || !json_is_integer(sk) ||
        json_integer_value(d) < 1 || json_integer_value(d) > INT32_MAX)
        return cx_fail(CIRCUITS_E_PROVENANCE, "%s: the provenance of a feature_stats job lacks its SAE's dimensions "
                       "or options (job.sae, job.feature_stats)", fn);
    circuits_feature_stats_options_init(o);
    json_int_t ki = json_integer_value(k), li = json_integer_value(cl), ri = json_integer_value(cr),
               si = json_integer_value(sk);
    if (ki < 0 || ki > INT32_MAX || li < 0 || li > INT32_MAX || ri < 0 || ri > INT32_MAX || si < 0 || si > INT32_MAX)
        return cx_fail(CIRCUITS_E_PROVENANCE, "%s: the provenance's feature_stats options are out of range", fn);
    o->top_k = (int32_t)ki;
    o->context_left = (int32_t)li;
    o->context_right = (int32_t)ri;
    o->skip_positions = (int32_t)si;
    o->threshold = (float)json_number_value(th);
    *d_sae = json_integer_value(d);
    *hook = json_string_value(h);
    *arch = json_string_value(a);
    *transcoder = json_is_true(tc);
    return CIRCUITS_OK;
}

/* An I64 [1] tensor's value. */
static int scalar(const cx_st_set *set, const char *name, const char *path, int64_t *out, const char *fn)
{
    cx_st_tensor *t = cx_st_find(set, name);
    if (!t || t->dtype != CX_DT_I64 || t->ndim != 1 || t->shape[0] != 1)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: '%s' is missing or not I64 [1]", fn, path, name);
    t->used = true;
    unsigned char b[8];
    memcpy(b, t->data, 8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i]; /* little-endian */
    *out = (int64_t)v;
    return CIRCUITS_OK;
}

/* Unit u's statistics (rows [row0, row0 + n)) from its file, checked, into *out. */
static int read_unit(const cx_job_reader *r, int64_t u, const circuits_feature_stats_options *o, int64_t d_sae,
                     const char *hook, const char *arch, bool transcoder, circuits_feature_stats **out, const char *fn)
{
    int64_t row0 = u * r->unit_rows, n = r->n_rows - row0 < r->unit_rows ? r->n_rows - row0 : r->unit_rows;
    int64_t skip = o->skip_positions < r->pos ? o->skip_positions : r->pos;
    const char *path = r->unit_paths[u];
    cx_st_set *set = NULL;
    int rc = cx_job_reader_open(r, u, &set, fn);
    if (rc) return rc;
    int64_t n_tokens, n_rows;
    if ((rc = scalar(set, "n_tokens", path, &n_tokens, fn)) || (rc = scalar(set, "n_rows", path, &n_rows, fn)))
        goto done;
    if (n_rows != n || n_tokens != n * (r->pos - skip)) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: unit %lld holds %lld rows and %lld tokens, not %lld and %lld", fn, path,
                     (long long)u, (long long)n_rows, (long long)n_tokens, (long long)n, (long long)(n * (r->pos - skip)));
        goto done;
    }
    if ((rc = cx_feature_stats_make(out, d_sae, o, hook, arch, transcoder, fn)) ||
        (rc = cx_feature_stats_read(*out, set, path, n_tokens, n_rows, row0, fn)))
        goto done;
    for (size_t i = 0; i < set->n_tensors; i++)
        if (!set->tensors[i].used) {
            rc = cx_fail(CIRCUITS_E_TENSOR_UNEXPECTED, "%s: %s: unexpected tensor '%s'", fn, path, set->tensors[i].name);
            break;
        }
done:
    if (rc) {
        circuits_feature_stats_free(*out);
        *out = NULL;
    }
    cx_st_close(set);
    return rc;
}

static int reduce(const cx_job_reader *r, const char *out)
{
    const char *fn = "circuits_job_merge";
    circuits_feature_stats_options o;
    int64_t d_sae = 0;
    const char *hook = NULL, *arch = NULL;
    bool transcoder = false;
    int rc = read_params(r, &o, &d_sae, &hook, &arch, &transcoder, fn);
    if (rc) return rc;
    circuits_feature_stats *all = NULL;
    if ((rc = cx_feature_stats_make(&all, d_sae, &o, hook, arch, transcoder, fn))) return rc;
    for (int64_t u = 0; u < r->n_units && !rc; u++) {
        circuits_feature_stats *st = NULL;
        if (!(rc = read_unit(r, u, &o, d_sae, hook, arch, transcoder, &st, fn))) rc = cx_feature_stats_merge(all, st, fn);
        circuits_feature_stats_free(st);
    }
    const char *extra[] = {"circuits_job", r->prov_text};
    if (!rc) rc = cx_feature_stats_write(all, out, extra, 1, fn);
    circuits_feature_stats_free(all);
    return rc;
}

const cx_job_kind cx_job_features = {
    .name = "feature_stats", .prepare = prepare, .release = release, .unit = unit, .reduce = reduce};
