/* The job engine: options, the provenance, the job directory, and units computed on the pool
 * (circuits_job_run / _compute) or stored from elsewhere (_store). job.h has the design. */
#include "job.h"
#include "json_load.h"
#include "pool.h"
#include "st_save.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Indexed by circuits_job_kind. */
static const cx_job_kind *const kinds[] = {&cx_job_mean, &cx_job_features, &cx_job_export, &cx_job_patch_sweep,
                                           &cx_job_ablation_sweep};

const cx_job_kind *cx_job_kind_by_name(const char *name)
{
    for (size_t i = 0; name && i < CX_COUNT(kinds); i++)
        if (strcmp(kinds[i]->name, name) == 0) return kinds[i];
    return NULL;
}

void circuits_job_options_init(circuits_job_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->kind = CIRCUITS_JOB_MEAN_ACTIVATIONS;
    opts->unit_rows = 16;
    opts->batch_size = 8;
    opts->shard_index = 0;
    opts->shard_count = 1;
    opts->metric_kind = CIRCUITS_METRIC_LOGIT_DIFF;
    opts->patch_kind = CIRCUITS_PATCH_RESID_PRE;
    opts->ablation_kind = CIRCUITS_ABLATE_ZERO;
}

/* ---- a unit's result ---- */

int cx_job_result_add(cx_job_result *r, const char *name, cx_dtype dtype, int ndim, const int64_t *shape, void **data)
{
    if (data) *data = NULL;
    if (ndim < 0 || ndim > CX_ST_MAX_DIMS)
        return cx_fail(CIRCUITS_E_SHAPE, "job result '%s': %d dimensions (at most %d)", name, ndim, CX_ST_MAX_DIMS);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || !cx_mul_size(numel, (size_t)shape[d], &numel))
            return cx_fail(CIRCUITS_E_RANGE, "job result '%s': its size overflows", name);
    size_t bytes;
    if (!cx_mul_size(numel, cx_dtype_size(dtype), &bytes))
        return cx_fail(CIRCUITS_E_RANGE, "job result '%s': its size overflows", name);
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 8;
        cx_job_tensor *t = cx_realloc(r->t, cap * sizeof *t);
        if (!t) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: job result '%s'", name);
        r->t = t;
        r->cap = cap;
    }
    cx_job_tensor *t = &r->t[r->n];
    memset(t, 0, sizeof *t);
    t->name = cx_strdup(name);
    t->data = cx_calloc(bytes ? bytes : 1, 1);
    if (!t->name || !t->data) {
        cx_free(t->name);
        cx_free(t->data);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: job result '%s' (%zu bytes)", name, bytes);
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    r->n++;
    if (data) *data = t->data;
    return CIRCUITS_OK;
}

void cx_job_result_clear(cx_job_result *r)
{
    for (size_t i = 0; i < r->n; i++) {
        cx_free(r->t[i].name);
        cx_free(r->t[i].data);
    }
    cx_free(r->t);
    memset(r, 0, sizeof *r);
}

void cx_job_unit_rows(const circuits_job *job, int64_t u, int64_t *row0, int64_t *n)
{
    *row0 = u * job->o.unit_rows;
    int64_t left = job->ds->n_rows - *row0;
    *n = left < job->o.unit_rows ? left : job->o.unit_rows;
}

/* ---- provenance records ---- */

/* The first key (in sorted order; "a.b" one level down when both are objects) at which the
 * records a and b differ, into out. */
static void first_difference(json_t *a, json_t *b, int depth, char *out, size_t n)
{
    const char *keys[2][256];
    size_t nk[2] = {0, 0};
    json_t *objs[2] = {a, b};
    const char *k;
    json_t *v;
    for (int s = 0; s < 2; s++)
        json_object_foreach(objs[s], k, v) if (nk[s] < 256) keys[s][nk[s]++] = k;
    const char *best = NULL; /* the smallest key whose values differ */
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < nk[s]; i++)
            if (!json_equal(json_object_get(a, keys[s][i]), json_object_get(b, keys[s][i])) &&
                (!best || strcmp(keys[s][i], best) < 0))
                best = keys[s][i];
    if (!best) {
        snprintf(out, n, "(the bytes)");
        return;
    }
    json_t *va = json_object_get(a, best), *vb = json_object_get(b, best);
    if (depth == 0 && json_is_object(va) && json_is_object(vb)) {
        char sub[200];
        first_difference(va, vb, 1, sub, sizeof sub);
        snprintf(out, n, "%s.%s", best, sub);
    } else {
        snprintf(out, n, "%s", best);
    }
}

void cx_job_prov_diff(const char *a, size_t na, const char *b, size_t nb, char *out, size_t n)
{
    json_error_t err;
    bool oom;
    json_t *ja = cx_json_loadb(a, na, JSON_REJECT_DUPLICATES, &err, &oom);
    json_t *jb = cx_json_loadb(b, nb, JSON_REJECT_DUPLICATES, &err, &oom);
    if (json_is_object(ja) && json_is_object(jb)) first_difference(ja, jb, 0, out, n);
    else snprintf(out, n, "(one is not a JSON object)");
    json_decref(ja);
    json_decref(jb);
}

int cx_job_check_unit(const cx_st_map *map, const char *prov, int64_t u, const char *fn)
{
    json_t *md;
    int rc = cx_st_metadata(map, &md, fn);
    if (rc) return rc;
    const char *p = json_string_value(json_object_get(md, "circuits_job"));
    const char *unit = json_string_value(json_object_get(md, "unit"));
    char want[32];
    snprintf(want, sizeof want, "%lld", (long long)u);
    if (!p || !unit) {
        rc = cx_fail(CIRCUITS_E_PROVENANCE, "%s: %s is not a job's unit (no \"circuits_job\" and \"unit\" metadata)",
                     fn, map->path);
    } else if (strcmp(p, prov) != 0) {
        char field[256];
        cx_job_prov_diff(p, strlen(p), prov, strlen(prov), field, sizeof field);
        rc = cx_fail(CIRCUITS_E_PROVENANCE, "%s: %s was made by another job (its provenance differs at \"%s\")", fn,
                     map->path, field);
    } else if (strcmp(unit, want) != 0) {
        rc = cx_fail(CIRCUITS_E_PROVENANCE, "%s: %s holds unit %.20s, not unit %s", fn, map->path, unit, want);
    }
    json_decref(md);
    return rc;
}

static pthread_mutex_t hash_lock = PTHREAD_MUTEX_INITIALIZER; /* the models' src_sha256 records */

/* The model's part of the provenance: its files (name, size, SHA-256) and the load options
 * that change its weights. */
static json_t *model_record(const circuits_model *m, const char *fn, int *rc)
{
    *rc = CIRCUITS_OK;
    json_t *files = json_array();
    if (!files) {
        *rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        return NULL;
    }
    if (m->n_src_files == 0) {
        json_decref(files);
        *rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the model records no files it was loaded from", fn);
        return NULL;
    }
    for (size_t i = 0; i < m->n_src_files; i++) {
        const char *path = m->src_files[i], *base = strrchr(path, '/');
        char hex[65];
        struct stat st;
        if (stat(path, &st) != 0) {
            json_decref(files);
            *rc = cx_fail(CIRCUITS_E_IO, "%s: the model's file %s: %s", fn, path, strerror(errno));
            return NULL;
        }
        /* hashed once per model: the first job's creation fills the model's record */
        char *known = &m->src_sha256[65 * i];
        pthread_mutex_lock(&hash_lock);
        if (!known[0] && !(*rc = cx_sha256_file(path, hex, fn))) memcpy(known, hex, 65);
        else if (known[0]) memcpy(hex, known, 65);
        pthread_mutex_unlock(&hash_lock);
        if (*rc) {
            json_decref(files);
            return NULL;
        }
        if (json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "name", base ? base + 1 : path, "bytes",
                                                   (json_int_t)st.st_size, "sha256", hex))) {
            json_decref(files);
            *rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
            return NULL;
        }
    }
    const circuits_load_options *o = &m->load_opts;
    json_t *r = json_pack("{s:o, s:{s:i, s:i, s:i, s:i, s:i, s:i}}", "files", files, "load", "fold_ln", o->fold_ln,
                          "center_writing_weights", o->center_writing_weights, "center_unembed", o->center_unembed,
                          "fold_value_biases", o->fold_value_biases, "refactor_factored_attn_matrices",
                          o->refactor_factored_attn_matrices, "keep_stored_dtype", o->keep_stored_dtype);
    if (!r) *rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    return r;
}

/* job->provenance: the canonical JSON of everything that decides the outputs' bits. */
static int make_provenance(circuits_job *job, json_t *params, const char *fn)
{
    char digest[65];
    int rc = circuits_dataset_digest(job->ds, digest);
    if (rc) return rc;
    json_t *model = model_record(job->model, fn, &rc);
    if (!model) return rc;
    json_t *root = json_pack("{s:s, s:i, s:s, s:i, s:o, s:{s:s, s:I, s:I}, s:O}", "format", "circuits-job",
                             "format_version", 1, "library", CIRCUITS_VERSION_STRING, "hook_semantics",
                             CIRCUITS_HOOK_SEMANTICS_VERSION, "model", model, "dataset", "sha256", digest, "n_rows",
                             (json_int_t)job->ds->n_rows, "pos", (json_int_t)job->ds->pos, "job", params);
    job->provenance = root ? json_dumps(root, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(root);
    return job->provenance ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
}

/* ---- options, hooks, tokens ---- */

static int check_options(const circuits_job_options *o, const char *fn)
{
    if (o->kind < 0 || (size_t)o->kind >= CX_COUNT(kinds))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: kind %d is not a circuits_job_kind (0 .. %zu)", fn,
                       (int)o->kind, CX_COUNT(kinds) - 1);
    if (o->unit_rows < 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: unit_rows %lld must be at least 1", fn, (long long)o->unit_rows);
    if (o->batch_size < 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: batch_size %lld must be at least 1", fn,
                       (long long)o->batch_size);
    if (o->shard_count < 1 || o->shard_index < 0 || o->shard_index >= o->shard_count)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: shard_index %d of shard_count %d: want 0 <= index < count", fn,
                       (int)o->shard_index, (int)o->shard_count);
    if (o->n_hooks && !o->hooks)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: hooks is NULL with n_hooks %zu", fn, o->n_hooks);
    for (size_t i = 0; i < o->n_hooks; i++)
        if (!o->hooks[i]) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: hooks[%zu] is NULL", fn, i);
    return CIRCUITS_OK;
}

static int mark_point(const circuits_context *ctx, size_t i, void *arg)
{
    (void)ctx;
    ((bool *)arg)[i] = true;
    return CIRCUITS_OK;
}

/* job->hooks: the full names of the points the options' names and patterns select, in the model's
 * order (a context with default options: the one every unit runs in). */
static int resolve_hooks(circuits_job *job, const char *fn)
{
    if (!job->o.n_hooks) return CIRCUITS_OK;
    circuits_context *ctx;
    int rc = circuits_context_create(&ctx, job->model, NULL);
    if (rc) return rc;
    size_t np = ctx->hooks.n_points;
    bool *sel = cx_calloc(np ? np : 1, sizeof *sel);
    if (!sel) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (size_t i = 0; i < job->o.n_hooks && !rc; i++) {
        if ((rc = cx_hooks_select(ctx, job->o.hooks[i], mark_point, sel))) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", circuits_last_error());
            rc = cx_fail(rc, "%s: hooks[%zu]: %s", fn, i, msg);
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < np && !rc; i++) n += sel[i];
    if (!rc && !(job->hooks = cx_calloc(n, sizeof *job->hooks)))
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (size_t i = 0; i < np && !rc; i++) {
        if (!sel[i]) continue;
        if (!(job->hooks[job->n_hooks] = cx_strdup(ctx->hooks.points[i].name)))
            rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        else job->n_hooks++;
    }
    cx_free(sel);
    circuits_context_free(ctx);
    return rc;
}

/* Every token id of the dataset within the model's vocabulary, its rows within n_ctx. */
static int check_tokens(const circuits_job *job, const char *fn)
{
    const circuits_config *c = &job->model->cfg;
    const circuits_dataset *ds = job->ds;
    if (ds->pos > c->n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "%s: the dataset's rows have %lld positions, more than the model's n_ctx %d", fn,
                       (long long)ds->pos, (int)c->n_ctx);
    const int32_t *t = ds->cols[0].values;
    for (int64_t i = 0; i < ds->n_rows * ds->pos; i++)
        if (t[i] < 0 || t[i] >= c->d_vocab)
            return cx_fail(CIRCUITS_E_RANGE, "%s: the dataset's token %d at row %lld, position %lld is outside the model's vocabulary [0, %d)",
                           fn, (int)t[i], (long long)(i / ds->pos), (long long)(i % ds->pos), (int)c->d_vocab);
    return CIRCUITS_OK;
}

/* ---- the job directory ---- */

static char *unit_path(const circuits_job *job, int64_t u)
{
    size_t n = strlen(job->dir) + 40;
    char *p = cx_malloc(n);
    if (p) snprintf(p, n, "%s/units/u%09lld.safetensors", job->dir, (long long)u);
    return p;
}

/* Reads a whole small file (job.json) into a set's one image: *map, valid until cx_st_close(*set). */
int cx_job_read_small(const char *path, cx_st_set **set, const cx_st_map **map, const char *fn)
{
    *set = cx_calloc(1, sizeof **set);
    if (!*set) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    int rc = cx_st_add_image(*set, path, CX_ST_READ, 0, "job.json", map);
    if (!rc && (*map)->size > ((size_t)64 << 20))
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: %zu bytes is too large for a job record", fn, path, (*map)->size);
    if (rc) {
        cx_st_close(*set);
        *set = NULL;
    }
    return rc;
}

/* Whether unit u's file is there, whole and this job's (anything else: not done, recomputed). */
static int scan_unit(circuits_job *job, int64_t u, const char *fn)
{
    char *path = unit_path(job, u);
    if (!path) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    struct stat st;
    int rc = CIRCUITS_OK;
    if (stat(path, &st) == 0) {
        cx_st_set *set;
        rc = cx_st_open(&set, path, CX_ST_MAP);
        if (!rc) {
            rc = cx_job_check_unit(&set->maps[0], job->provenance, u, fn);
            cx_st_close(set);
        }
        if (!rc) job->done[u] = 1;
        if (rc != CIRCUITS_E_OUT_OF_MEMORY) rc = CIRCUITS_OK; /* damaged or foreign: computed again */
    }
    cx_free(path);
    return rc;
}

static int make_dir(const char *path, bool *created, const char *fn)
{
    *created = false;
    if (mkdir(path, 0777) == 0) {
        *created = true;
        return CIRCUITS_OK;
    }
    struct stat st;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return CIRCUITS_OK;
    return cx_fail(CIRCUITS_E_IO, "%s: cannot create the job directory %s: %s", fn, path,
                   errno == EEXIST ? "it exists and is not a directory" : strerror(errno));
}

/* Creates (or resumes) the job directory: job.json written, or compared with an existing one;
 * the units already there marked done. On failure what was created here is removed. */
static int open_dir(circuits_job *job, const char *dir, const char *fn)
{
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    char *units = cx_malloc(dl + 16), *jpath = cx_malloc(dl + 16);
    job->dir = cx_malloc(dl + 1);
    int rc = units && jpath && job->dir ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    bool made_dir = false, made_units = false, wrote = false;
    if (!rc) {
        memcpy(job->dir, dir, dl);
        job->dir[dl] = '\0';
        snprintf(units, dl + 16, "%s/units", job->dir);
        snprintf(jpath, dl + 16, "%s/job.json", job->dir);
        rc = make_dir(job->dir, &made_dir, fn);
    }
    if (!rc) rc = make_dir(units, &made_units, fn);
    struct stat st;
    if (!rc && stat(jpath, &st) == 0) {
        cx_st_set *set;
        const cx_st_map *m;
        if (!(rc = cx_job_read_small(jpath, &set, &m, fn))) {
            size_t pl = strlen(job->provenance);
            if (m->size != pl || memcmp(m->base, job->provenance, pl) != 0) {
                char field[256];
                cx_job_prov_diff(m->base, m->size, job->provenance, pl, field, sizeof field);
                rc = cx_fail(CIRCUITS_E_PROVENANCE,
                             "%s: %s holds another job (its job.json differs at \"%s\"): use another directory", fn,
                             job->dir, field);
            }
            cx_st_close(set);
        }
    } else if (!rc) {
        rc = cx_write_atomic(jpath, job->provenance, strlen(job->provenance), fn);
        wrote = rc == CIRCUITS_OK;
    }
    for (int64_t u = 0; u < job->n_units && !rc; u++) rc = scan_unit(job, u, fn);
    if (rc) {
        if (wrote) remove(jpath);
        if (made_units) rmdir(units);
        if (made_dir) rmdir(job->dir);
    }
    cx_free(units);
    cx_free(jpath);
    return rc;
}

/* ---- create / free / queries ---- */

void circuits_job_free(circuits_job *job)
{
    if (!job) return;
    if (job->kind && job->kind->release) job->kind->release(job);
    for (size_t i = 0; i < job->n_hooks; i++) cx_free(job->hooks[i]);
    cx_free(job->hooks);
    cx_free(job->dir);
    cx_free(job->provenance); /* json_dumps allocates through cx_malloc (alloc.c) */
    cx_free(job->done);
    cx_free(job);
}

int circuits_job_create(circuits_job **out, const circuits_model *model, const circuits_dataset *ds,
                        const circuits_job_options *opts, const char *dir)
{
    const char *fn = "circuits_job_create";
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out is NULL", fn);
    *out = NULL;
    if (!model || !ds) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: model and ds must not be NULL", fn);
    circuits_job *job = cx_calloc(1, sizeof *job);
    if (!job) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    job->model = model;
    job->ds = ds;
    job->fn = fn;
    circuits_job_options_init(&job->o);
    static const size_t versions[] = {sizeof(circuits_job_options)}; /* 0.9.0 */
    int rc = opts ? cx_options_copy(&job->o, opts, versions, CX_COUNT(versions), fn) : CIRCUITS_OK;
    if (!rc) rc = check_options(&job->o, fn);
    if (!rc) rc = check_tokens(job, fn);
    if (!rc) rc = resolve_hooks(job, fn);
    json_t *params = NULL;
    if (!rc) {
        json_t *hooks = json_array();
        for (size_t i = 0; hooks && i < job->n_hooks; i++)
            if (json_array_append_new(hooks, json_string(job->hooks[i]))) {
                json_decref(hooks);
                hooks = NULL;
            }
        char seed[24];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)job->o.seed);
        params = json_pack("{s:s, s:o, s:I, s:s}", "kind", kinds[job->o.kind]->name, "hooks", hooks, "unit_rows",
                           (json_int_t)job->o.unit_rows, "seed", seed);
        if (!params) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    if (!rc) {
        const cx_job_kind *k = kinds[job->o.kind];
        if (!k->prepare) rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: the %s job kind is not built", fn, k->name);
        else if (!(rc = k->prepare(job, params))) job->kind = k; /* prepared: released with the job */
    }
    if (!rc) rc = make_provenance(job, params, fn);
    json_decref(params);
    if (!rc) {
        job->n_units = (ds->n_rows + job->o.unit_rows - 1) / job->o.unit_rows;
        job->done = cx_calloc((size_t)job->n_units, 1);
        if (!job->done) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    if (!rc && dir) rc = open_dir(job, dir, fn);
    if (rc) {
        circuits_job_free(job);
        return rc;
    }
    *out = job;
    return CIRCUITS_OK;
}

const char *circuits_job_provenance(const circuits_job *job)
{
    return job ? job->provenance : NULL;
}

static bool mine(const circuits_job *job, int64_t u)
{
    return u % job->o.shard_count == job->o.shard_index;
}

int circuits_job_status(const circuits_job *job, int64_t *n_units, int64_t *n_done, int64_t *n_mine)
{
    if (!job) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_job_status: job is NULL");
    int64_t done = 0, m = 0;
    for (int64_t u = 0; u < job->n_units; u++) {
        done += job->done[u];
        m += mine(job, u);
    }
    if (n_units) *n_units = job->n_units;
    if (n_done) *n_done = done;
    if (n_mine) *n_mine = m;
    return CIRCUITS_OK;
}

int circuits_job_unit_done(const circuits_job *job, int64_t unit, int32_t *done)
{
    const char *fn = "circuits_job_unit_done";
    if (!job || !done) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: job and done must not be NULL", fn);
    if (unit < 0 || unit >= job->n_units)
        return cx_fail(CIRCUITS_E_RANGE, "%s: unit %lld is not in [0, %lld)", fn, (long long)unit,
                       (long long)job->n_units);
    *done = job->done[unit];
    return CIRCUITS_OK;
}

/* ---- computing units ---- */

/* A unit's checkpoint image: its tensors, metadata {"circuits_job": provenance, "unit": "u"}. */
static int serialize(const circuits_job *job, int64_t u, const cx_job_result *r, unsigned char **img, size_t *size)
{
    cx_st_out *t = cx_calloc(r->n ? r->n : 1, sizeof *t);
    if (!t) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", job->fn);
    for (size_t i = 0; i < r->n; i++) {
        t[i] = (cx_st_out){r->t[i].name, r->t[i].dtype, r->t[i].ndim, {0}, r->t[i].data};
        memcpy(t[i].shape, r->t[i].shape, sizeof t[i].shape);
    }
    char unit[24];
    snprintf(unit, sizeof unit, "%lld", (long long)u);
    const char *meta[] = {"circuits_job", job->provenance, "unit", unit};
    int rc = cx_st_image(t, r->n, meta, 2, img, size, job->fn);
    cx_free(t);
    return rc;
}

typedef struct run_state {
    circuits_job *job;
    const int64_t *units;      /* to compute, in order */
    size_t n;
    circuits_context **ctxs;   /* one per slot */
    bool store;                /* run: checkpoint each unit; compute: keep its image in img[] */
    unsigned char **img;       /* [n] */
    size_t *size;
    atomic_size_t next;        /* the next index of units to claim */
    atomic_bool stop;          /* claim no more */
    atomic_llong finished;     /* units computed (and stored) */
    pthread_t caller;
    /* progress (run; the calling thread only) */
    int64_t done0, total, reported;
    bool stopped;
    /* the failure of the lowest unit, its message (set on the worker's thread) kept for the caller */
    pthread_mutex_t m;
    int rc;
    int64_t failed;
    char msg[1024];
} run_state;

static int one_unit(run_state *s, circuits_context *ctx, size_t i)
{
    circuits_job *job = s->job;
    int64_t u = s->units[i], row0, n;
    cx_job_unit_rows(job, u, &row0, &n);
    cx_job_result r = {0};
    cx_pool_serial(true); /* the unit's bits are the one-thread bits whatever the pool's size */
    int rc = job->kind->unit(job, ctx, row0, n, &r);
    cx_pool_serial(false);
    unsigned char *img = NULL;
    size_t size = 0;
    if (!rc) rc = serialize(job, u, &r, &img, &size);
    cx_job_result_clear(&r);
    if (!rc && s->store) {
        char *path = unit_path(job, u);
        rc = path ? cx_write_atomic(path, img, size, job->fn) : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", job->fn);
        cx_free(path);
        cx_free(img);
        if (!rc) job->done[u] = 1; /* each unit's own byte: no two threads write one */
    } else if (!rc) {
        s->img[i] = img;
        s->size[i] = size;
    }
    return rc;
}

static void progress(run_state *s)
{
    const circuits_job_options *o = &s->job->o;
    int64_t done = s->done0 + atomic_load(&s->finished);
    if (!o->progress || done == s->reported) return;
    s->reported = done;
    if (o->progress(done, s->total, o->progress_data) != 0) {
        s->stopped = true;
        atomic_store(&s->stop, true);
    }
}

/* Slots [begin, end): each with its own context, claiming units until none are left. */
static void slot_task(void *arg, int64_t begin, int64_t end)
{
    run_state *s = arg;
    bool caller = pthread_equal(pthread_self(), s->caller);
    for (int64_t slot = begin; slot < end; slot++) {
        while (!atomic_load(&s->stop)) {
            size_t i = atomic_fetch_add(&s->next, 1);
            if (i >= s->n) break;
            int rc = one_unit(s, s->ctxs[slot], i);
            if (rc) {
                pthread_mutex_lock(&s->m);
                if (!s->rc || s->units[i] < s->failed) {
                    s->rc = rc;
                    s->failed = s->units[i];
                    snprintf(s->msg, sizeof s->msg, "%s", circuits_last_error());
                }
                pthread_mutex_unlock(&s->m);
                atomic_store(&s->stop, true);
                break;
            }
            atomic_fetch_add(&s->finished, 1);
            if (caller && s->store) progress(s);
        }
    }
}

/* Units[0 .. n) on min(threads, n) slots; the state's other fields set by the caller. */
static int compute_units(run_state *s, size_t n_slots)
{
    int rc = CIRCUITS_OK;
    s->ctxs = cx_calloc(n_slots, sizeof *s->ctxs);
    if (!s->ctxs) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", s->job->fn);
    for (size_t i = 0; i < n_slots && !rc; i++) rc = circuits_context_create(&s->ctxs[i], s->job->model, NULL);
    if (!rc) {
        s->caller = pthread_self();
        pthread_mutex_init(&s->m, NULL);
        cx_parallel_for((int64_t)n_slots, 1, slot_task, s);
        pthread_mutex_destroy(&s->m);
        if (s->rc) rc = cx_fail(s->rc, "%s", s->msg); /* the worker's message, on this thread */
    }
    for (size_t i = 0; i < n_slots; i++) circuits_context_free(s->ctxs[i]);
    cx_free(s->ctxs);
    s->ctxs = NULL;
    return rc;
}

static size_t slots_for(size_t n)
{
    int t = circuits_get_num_threads();
    size_t k = t > 0 ? (size_t)t : 1;
    return n < k ? (n ? n : 1) : k;
}

int circuits_job_run(circuits_job *job)
{
    const char *fn = "circuits_job_run";
    if (!job) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: job is NULL", fn);
    if (!job->dir)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the job has no directory (created with dir NULL): use circuits_job_compute", fn);
    job->fn = fn;
    run_state s = {.job = job, .store = true, .reported = -1, .failed = -1};
    int64_t *todo = cx_calloc((size_t)job->n_units ? (size_t)job->n_units : 1, sizeof *todo);
    if (!todo) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (int64_t u = 0; u < job->n_units; u++) {
        if (!mine(job, u)) continue;
        s.total++;
        if (job->done[u]) s.done0++;
        else todo[s.n++] = u;
    }
    s.units = todo;
    atomic_init(&s.next, 0);
    atomic_init(&s.stop, false);
    atomic_init(&s.finished, 0);
    progress(&s);
    int rc = CIRCUITS_OK;
    if (!s.stopped && s.n) rc = compute_units(&s, slots_for(s.n));
    if (!rc && !s.stopped) progress(&s); /* the last units another thread finished */
    if (!rc && s.stopped && atomic_load(&s.finished) < (long long)s.n)
        rc = cx_fail(CIRCUITS_E_STOPPED, "%s: stopped by the progress callback with %lld of %lld units done (they stay checkpointed)",
                     fn, (long long)(s.done0 + atomic_load(&s.finished)), (long long)s.total);
    cx_free(todo);
    return rc;
}

int circuits_job_compute(circuits_job *job, const int64_t *units, size_t n_units, circuits_job_unit_fn on_unit,
                         void *user_data)
{
    const char *fn = "circuits_job_compute";
    if (!job || (!units && n_units) || !on_unit)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: job, units and on_unit must not be NULL", fn);
    for (size_t i = 0; i < n_units; i++)
        if (units[i] < 0 || units[i] >= job->n_units)
            return cx_fail(CIRCUITS_E_RANGE, "%s: units[%zu] = %lld is not in [0, %lld)", fn, i, (long long)units[i],
                           (long long)job->n_units);
    job->fn = fn;
    size_t wave = slots_for(n_units);
    unsigned char **img = cx_calloc(wave, sizeof *img);
    size_t *size = cx_calloc(wave, sizeof *size);
    int rc = img && size ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    /* waves of `wave` units computed at once, then handed over in order on this thread */
    for (size_t w0 = 0; w0 < n_units && !rc; w0 += wave) {
        size_t n = n_units - w0 < wave ? n_units - w0 : wave;
        run_state s = {.job = job, .units = units + w0, .n = n, .img = img, .size = size, .failed = -1};
        atomic_init(&s.next, 0);
        atomic_init(&s.stop, false);
        atomic_init(&s.finished, 0);
        rc = compute_units(&s, n);
        for (size_t i = 0; i < n && !rc; i++) {
            int r = on_unit(units[w0 + i], img[i], size[i], user_data);
            if (r != 0)
                rc = cx_fail(CIRCUITS_E_CALLBACK, "%s: on_unit returned %d for unit %lld", fn, r,
                             (long long)units[w0 + i]);
        }
        for (size_t i = 0; i < n; i++) {
            cx_free(img[i]);
            img[i] = NULL;
        }
    }
    cx_free(img);
    cx_free(size);
    return rc;
}

int circuits_job_store(circuits_job *job, int64_t unit, const void *bytes, size_t n_bytes)
{
    const char *fn = "circuits_job_store";
    if (!job || !bytes) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: job and bytes must not be NULL", fn);
    if (!job->dir)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the job has no directory (created with dir NULL)", fn);
    if (unit < 0 || unit >= job->n_units)
        return cx_fail(CIRCUITS_E_RANGE, "%s: unit %lld is not in [0, %lld)", fn, (long long)unit,
                       (long long)job->n_units);
    char label[64];
    snprintf(label, sizeof label, "unit %lld's bytes", (long long)unit);
    cx_st_set *set = cx_calloc(1, sizeof *set);
    if (!set) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    int rc = cx_st_parse_buffer(set, bytes, n_bytes, label);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", circuits_last_error());
        rc = cx_fail(rc, "%s: %s", fn, msg);
    }
    cx_st_map map = {label, (void *)bytes, n_bytes, false};
    if (!rc) rc = cx_job_check_unit(&map, job->provenance, unit, fn);
    cx_st_close(set);
    char *path = rc ? NULL : unit_path(job, unit);
    if (!rc && !path) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    if (!rc) rc = cx_write_atomic(path, bytes, n_bytes, fn);
    if (!rc) job->done[unit] = 1;
    cx_free(path);
    return rc;
}
