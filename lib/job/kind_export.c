/* The export job kind (docs/jobs.md "Export"): the activations of chosen hook points over the
 * dataset, one safetensors shard per unit, and an index.json, for training SAEs and probes.
 *
 * A unit's result is the shard itself: "<hook>" F32 [rows, ...the point's TL shape without the
 * batch...] for each hook (the value run_with_cache keeps), "tokens" I32 [rows, pos] and "rows"
 * I64 [rows] (the rows' numbers in the dataset). Each row runs through the door alone (see
 * unit), the cache copy of each point landing in place in the unit's tensors, the pass stopping
 * after the last block a point is in.
 *
 * The reduction checks every unit file and makes the output directory beside `out`, the unit
 * files hard-linked into it as out/activations-%06d.safetensors (copied when the link fails:
 * another filesystem), index.json last; then swaps it in for `out` (renameat2 RENAME_EXCHANGE:
 * a reader sees the old directory or the new one, never a mixture) and removes the old. */
#include "job.h"
#include "st_save.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- prepare and unit ---- */

/* The point of a resolved hook name in ctx (the job's contexts have no hook_tokens: the engine
 * resolves names in a context with the default options, so every point holds activations). */
static int export_point(const circuits_context *ctx, const char *name, const char *fn, const cx_hook_point **out)
{
    int32_t idx;
    int rc = cx_hook_one(ctx, fn, name, &idx);
    if (!rc) *out = &ctx->hooks.points[idx];
    return rc;
}

static int prepare(circuits_job *job, json_t *params)
{
    const char *fn = "circuits_job_create";
    if (!job->n_hooks)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: an EXPORT job needs hooks (names or patterns)", fn);
    circuits_context *ctx = NULL;
    int rc = circuits_context_create(&ctx, job->model, NULL);
    if (rc) return rc;
    json_t *shapes = json_object(); /* "hooks" the engine records */
    if (!shapes || json_object_set_new(params, "shapes", shapes)) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (size_t i = 0; i < job->n_hooks && !rc; i++) {
        const cx_hook_point *p;
        if ((rc = export_point(ctx, job->hooks[i], fn, &p))) break;
        int64_t sh[CIRCUITS_MAX_DIMS];
        int32_t ha;
        int nd = cx_hook_shape(ctx, p, 1, job->ds->pos, 0, sh, &ha);
        json_t *js = json_array();
        for (int d = 1; js && d < nd; d++)
            if (json_array_append_new(js, json_integer(sh[d]))) {
                json_decref(js);
                js = NULL;
            }
        if (!js || json_object_set_new(shapes, p->name, js))
            rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    circuits_context_free(ctx);
    return rc;
}

static void release(circuits_job *job) { (void)job; }

static int unit(circuits_job *job, circuits_context *ctx, int64_t row0, int64_t n, cx_job_result *res)
{
    const char *fn = job->fn; /* run or compute */
    const circuits_config *c = &ctx->model->cfg;
    int64_t pos = job->ds->pos;
    const int32_t *tokens = job->ds->cols[0].values + row0 * pos;
    size_t n_points = ctx->hooks.n_points;
    float **dst = cx_calloc(n_points, sizeof *dst);       /* where the cache copy of each point goes */
    float **base = cx_calloc(job->n_hooks, sizeof *base); /* each hook's tensor */
    size_t *row_numel = cx_calloc(job->n_hooks, sizeof *row_numel);
    int32_t *idx = cx_calloc(job->n_hooks, sizeof *idx);
    int rc = dst && base && row_numel && idx ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    int64_t *rows = NULL;
    int32_t *toks = NULL;
    if (!rc && !(rc = cx_job_result_add(res, "rows", CX_DT_I64, 1, (int64_t[]){n}, (void **)&rows)))
        for (int64_t i = 0; i < n; i++) rows[i] = row0 + i;
    if (!rc && !(rc = cx_job_result_add(res, "tokens", CX_DT_I32, 2, (int64_t[]){n, pos}, (void **)&toks)))
        memcpy(toks, tokens, (size_t)(n * pos) * sizeof *toks);
    int32_t stop = 0; /* blocks the pass needs: up to the last point's; all with a point after them */
    for (size_t i = 0; i < job->n_hooks && !rc; i++) {
        const cx_hook_point *p;
        if ((rc = export_point(ctx, job->hooks[i], fn, &p))) break;
        idx[i] = (int32_t)(p - ctx->hooks.points);
        int64_t sh[CIRCUITS_MAX_DIMS];
        int32_t ha;
        int nd = cx_hook_shape(ctx, p, n, pos, 0, sh, &ha);
        if ((rc = cx_job_result_add(res, p->name, CX_DT_F32, nd, sh, (void **)&base[i]))) break;
        row_numel[i] = 1;
        for (int d = 1; d < nd; d++) row_numel[i] *= (size_t)sh[d];
        int32_t need = p->layer >= 0 ? p->layer + 1 : p->base >= HK_LNF_SCALE ? c->n_layers + 1 : 0;
        if (need > stop) stop = need;
    }
    /* One pass per row, as feature statistics run: OpenBLAS's AVX2 kernels (Haswell, Zen) give a
     * row bits that depend on how many rows share a product, so only a row alone has the same bits
     * whatever the batch size (tests/test_job_kinds.c runs under OPENBLAS_CORETYPE=Haswell too). */
    for (int64_t r0 = 0; r0 < n && !rc; r0++) {
        for (size_t i = 0; i < job->n_hooks; i++) dst[idx[i]] = base[i] + (size_t)r0 * row_numel[i];
        cx_run r = cx_run_init(ctx, fn, tokens + r0 * pos, 1, pos);
        r.cache_dst = dst; /* the value run_with_cache keeps, straight into the unit's tensors */
        if (stop <= c->n_layers) { /* no logits needed: stop after the last block a point is in */
            r.stop = stop;
            r.stop_at_layer = true;
        }
        rc = cx_context_run(ctx, &r);
    }
    cx_free(dst);
    cx_free(base);
    cx_free(row_numel);
    cx_free(idx);
    return rc;
}

/* ---- reduce ---- */

#define SHARD_FMT "activations-%06lld.safetensors"

/* Checks unit u's file: "rows" (its rows' numbers), "tokens" [n, pos] and each hook F32 [n,
 * ...shape], nothing else. */
static int check_unit(const cx_job_reader *r, int64_t u, json_t *hooks, json_t *shapes, const char *fn)
{
    int64_t row0 = u * r->unit_rows, n = r->n_rows - row0 < r->unit_rows ? r->n_rows - row0 : r->unit_rows;
    const char *path = r->unit_paths[u];
    cx_st_set *set = NULL;
    int rc = cx_job_reader_open(r, u, &set, fn);
    if (rc) return rc;
    cx_st_tensor *t = cx_st_find(set, "rows");
    if (!t || t->dtype != CX_DT_I64 || t->ndim != 1 || t->shape[0] != n) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: 'rows' is missing or not I64 [%lld]", fn, path, (long long)n);
        goto done;
    }
    t->used = true;
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *b = (const unsigned char *)t->data + 8 * i;
        uint64_t v = 0;
        for (int k = 7; k >= 0; k--) v = v << 8 | b[k]; /* little-endian */
        if ((int64_t)v != row0 + i) {
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: rows[%lld] is %lld, not row %lld of unit %lld", fn, path,
                         (long long)i, (long long)v, (long long)(row0 + i), (long long)u);
            goto done;
        }
    }
    t = cx_st_find(set, "tokens");
    if (!t || t->dtype != CX_DT_I32 || t->ndim != 2 || t->shape[0] != n || t->shape[1] != r->pos) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: 'tokens' is missing or not I32 [%lld, %lld]", fn, path, (long long)n,
                     (long long)r->pos);
        goto done;
    }
    t->used = true;
    size_t i;
    json_t *h;
    json_array_foreach(hooks, i, h) {
        json_t *sh = json_object_get(shapes, json_string_value(h));
        t = cx_st_find(set, json_string_value(h));
        bool ok = t && t->dtype == CX_DT_F32 && t->ndim == (int)json_array_size(sh) + 1 && t->shape[0] == n;
        for (int d = 1; ok && d < t->ndim; d++) ok = t->shape[d] == json_integer_value(json_array_get(sh, d - 1));
        if (!ok) {
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: '%s' is missing or not F32 [%lld, ...its recorded shape]", fn, path,
                         json_string_value(h), (long long)n);
            goto done;
        }
        t->used = true;
    }
    for (i = 0; i < set->n_tensors; i++)
        if (!set->tensors[i].used) {
            rc = cx_fail(CIRCUITS_E_TENSOR_UNEXPECTED, "%s: %s: unexpected tensor '%s'", fn, path, set->tensors[i].name);
            goto done;
        }
done:
    cx_st_close(set);
    return rc;
}

/* Writes n bytes to fd. */
static bool write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* dst (new) as a copy of src. */
static int copy_file(const char *src, const char *dst, const char *fn)
{
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1;
    int rc = CIRCUITS_OK;
    if (in < 0) return cx_fail(CIRCUITS_E_IO, "%s: cannot read %s: %s", fn, src, strerror(errno));
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) rc = cx_fail(CIRCUITS_E_IO, "%s: cannot create %s: %s", fn, dst, strerror(errno));
    char *buf = rc ? NULL : cx_malloc(1 << 20);
    if (!rc && !buf) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    while (!rc) {
        ssize_t got = read(in, buf, 1 << 20);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) rc = cx_fail(CIRCUITS_E_IO, "%s: cannot read %s: %s", fn, src, strerror(errno));
        else if (got == 0) break;
        else if (!write_all(out, buf, (size_t)got))
            rc = cx_fail(CIRCUITS_E_IO, "%s: cannot write %s: %s", fn, dst, strerror(errno));
    }
    if (out >= 0 && close(out) != 0 && !rc) rc = cx_fail(CIRCUITS_E_IO, "%s: cannot write %s: %s", fn, dst, strerror(errno));
    close(in);
    cx_free(buf);
    return rc;
}

/* True if `name` is one an export directory holds. */
static bool export_entry(const char *name)
{
    unsigned long long k;
    int used = 0;
    return strcmp(name, "index.json") == 0 ||
           (sscanf(name, "activations-%6llu.safetensors%n", &k, &used) == 1 && used > 0 && name[used] == '\0');
}

/* Removes directory dir and the export files in it (it holds no others). */
static void remove_export_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4500];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

/* An existing `out` may be replaced only if it is a directory of export files (or empty). */
static int check_old(const char *out, bool *exists, const char *fn)
{
    struct stat sb;
    *exists = false;
    if (lstat(out, &sb) != 0) { /* a symbolic link is not replaced: it would be swapped, not its directory */
        if (errno == ENOENT) return CIRCUITS_OK;
        return cx_fail(CIRCUITS_E_IO, "%s: %s: %s", fn, out, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out '%s' exists and is not a directory (an EXPORT job writes a "
                       "directory of shards; a symbolic link is not followed)", fn, out);
    DIR *d = opendir(out);
    if (!d) return cx_fail(CIRCUITS_E_IO, "%s: cannot read directory %s: %s", fn, out, strerror(errno));
    struct dirent *e;
    int rc = CIRCUITS_OK;
    while (!rc && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !export_entry(e->d_name))
            rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out '%s' holds '%s', which no export writes: it is not "
                         "replaced (give an empty or new directory)", fn, out, e->d_name);
    closedir(d);
    *exists = true;
    return rc;
}

/* index.json of the export (canonical: keys sorted, indented). */
static int write_index(const cx_job_reader *r, const char *dir, json_t *hooks, json_t *shapes, const char *fn)
{
    /* idx takes references of its own (json_object_set): prov and shards stay ours to release,
     * whichever set failed (json_object_set_new would take them even when it fails) */
    json_t *idx = json_object(), *shards = json_array(), *prov = json_deep_copy(r->prov);
    int rc = CIRCUITS_OK;
    bool ok = idx && shards && prov && !json_object_set(idx, "circuits_job", prov) &&
              !json_object_set(idx, "hooks", hooks) && !json_object_set(idx, "shapes", shapes) &&
              !json_object_set_new(idx, "n_rows", json_integer(r->n_rows)) &&
              !json_object_set_new(idx, "pos", json_integer(r->pos)) && !json_object_set(idx, "shards", shards);
    json_decref(prov);
    for (int64_t u = 0; ok && u < r->n_units; u++) {
        char name[64];
        snprintf(name, sizeof name, SHARD_FMT, (long long)u);
        int64_t row0 = u * r->unit_rows, n = r->n_rows - row0 < r->unit_rows ? r->n_rows - row0 : r->unit_rows;
        ok = !json_array_append_new(shards, json_pack("{s:s, s:I, s:I}", "file", name, "first_row", (json_int_t)row0,
                                                      "rows", (json_int_t)n));
    }
    char *text = ok ? json_dumps(idx, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    if (!text) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    char path[4352];
    snprintf(path, sizeof path, "%s/index.json", dir);
    if (!rc) rc = cx_write_atomic(path, text, strlen(text), fn);
    cx_free(text); /* json_dumps allocates through cx_malloc (alloc.c) */
    json_decref(shards);
    json_decref(idx);
    return rc;
}

static int reduce(const cx_job_reader *r, const char *out)
{
    const char *fn = "circuits_job_merge";
    json_t *p = json_object_get(r->prov, "job");
    json_t *hooks = json_object_get(p, "hooks"), *shapes = json_object_get(p, "shapes");
    bool ok = json_is_array(hooks) && json_array_size(hooks) > 0 && json_is_object(shapes);
    size_t i;
    json_t *h;
    json_array_foreach(hooks, i, h) {
        json_t *sh = json_object_get(shapes, json_string_value(h) ? json_string_value(h) : "");
        ok = ok && json_is_string(h) && json_is_array(sh);
    }
    if (!ok)
        return cx_fail(CIRCUITS_E_PROVENANCE, "%s: the provenance of an export job lacks its hooks and shapes "
                       "(job.hooks, job.shapes)", fn);
    if (strlen(out) > 4000) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out '%.200s...' is too long", fn, out);
    char trimmed[4096]; /* "dir/" names dir: the new directory goes beside it, not into it */
    size_t len = strlen(out);
    while (len > 1 && out[len - 1] == '/') len--;
    snprintf(trimmed, sizeof trimmed, "%.*s", (int)len, out);
    out = trimmed;
    if (!len) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out is empty", fn);
    bool exists;
    int rc = check_old(out, &exists, fn);
    for (int64_t u = 0; u < r->n_units && !rc; u++) rc = check_unit(r, u, hooks, shapes, fn);
    if (rc) return rc;
    /* the new directory beside out (the same filesystem: it can be renamed there) */
    char tmp[4160], path[4352];
    snprintf(tmp, sizeof tmp, "%s.partial-XXXXXX", out);
    if (!mkdtemp(tmp)) return cx_fail(CIRCUITS_E_IO, "%s: cannot create a directory beside %s: %s", fn, out, strerror(errno));
    for (int64_t u = 0; u < r->n_units && !rc; u++) {
        int n = snprintf(path, sizeof path, "%s/", tmp);
        snprintf(path + n, sizeof path - (size_t)n, SHARD_FMT, (long long)u);
        if (link(r->unit_paths[u], path) != 0) rc = copy_file(r->unit_paths[u], path, fn); /* another filesystem */
    }
    if (!rc) rc = write_index(r, tmp, hooks, shapes, fn);
    if (!rc && !exists && rename(tmp, out) != 0)
        rc = cx_fail(CIRCUITS_E_IO, "%s: cannot rename %s to %s: %s", fn, tmp, out, strerror(errno));
    if (!rc && exists) {
        /* swap the two directories at once; where the filesystem cannot, the old one moves aside first */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) != 0) {
            char old[4160];
            snprintf(old, sizeof old, "%s.old-XXXXXX", out);
            if (!mkdtemp(old)) {
                rc = cx_fail(CIRCUITS_E_IO, "%s: cannot replace %s: %s", fn, out, strerror(errno));
            } else if (rename(out, old) != 0) {
                rc = cx_fail(CIRCUITS_E_IO, "%s: cannot replace %s: %s", fn, out, strerror(errno));
                rmdir(old);
            }
            else if (rename(tmp, out) != 0) {
                rc = cx_fail(CIRCUITS_E_IO, "%s: cannot rename %s to %s: %s", fn, tmp, out, strerror(errno));
                rename(old, out); /* put the old one back */
            } else {
                snprintf(tmp, sizeof tmp, "%s", old);
            }
        }
    }
    if (rc || exists) remove_export_dir(tmp); /* the new one that failed, or the old one swapped out */
    return rc;
}

const cx_job_kind cx_job_export = {.name = "export", .prepare = prepare, .release = release, .unit = unit, .reduce = reduce};
