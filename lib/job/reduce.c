/* circuits_job_merge: the job directories' records compared, their unit files gathered (every
 * unit once; a unit held twice must be the same bytes), and the kind's reduction over them in
 * unit order (cx_job_reader). Needs no model: everything comes from job.json and the units. */
#include "job.h"
#include "json_load.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int cx_job_reader_open(const cx_job_reader *r, int64_t u, cx_st_set **out, const char *fn)
{
    *out = NULL;
    if (u < 0 || u >= r->n_units) return cx_fail(CIRCUITS_E_RANGE, "%s: unit %lld is not in the job", fn, (long long)u);
    cx_st_set *set;
    int rc = cx_st_open(&set, r->unit_paths[u], CX_ST_READ);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", circuits_last_error());
        return cx_fail(rc, "%s: %s", fn, msg);
    }
    if ((rc = cx_job_check_unit(&set->maps[0], r->prov_text, u, fn))) {
        cx_st_close(set);
        return rc;
    }
    *out = set;
    return CIRCUITS_OK;
}

/* A positive integer field of the record's object `obj`, else FORMAT naming path. */
static int positive(json_t *root, const char *obj, const char *key, int64_t *out, const char *path, const char *fn)
{
    json_t *v = json_object_get(json_object_get(root, obj), key);
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: \"%s.%s\" is not a positive integer", fn, path, obj, key);
    *out = json_integer_value(v);
    return CIRCUITS_OK;
}

/* Whether two files hold the same bytes (both read whole). */
static int same_file(const char *a, const char *b, bool *same, const char *fn)
{
    cx_st_set *s = cx_calloc(1, sizeof *s);
    const cx_st_map *ma, *mb;
    if (!s) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    int rc = cx_st_add_image(s, a, CX_ST_READ, 0, "unit", &ma);
    if (!rc) rc = cx_st_add_image(s, b, CX_ST_READ, 0, "unit", &mb);
    if (!rc) {
        ma = &s->maps[0]; /* the second image may have moved the array */
        *same = ma->size == mb->size && memcmp(ma->base, mb->base, ma->size) == 0;
    }
    cx_st_close(s);
    return rc;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int circuits_job_merge(const char *const *dirs, size_t n_dirs, const char *out)
{
    const char *fn = "circuits_job_merge";
    if (!dirs || !n_dirs || !out)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: dirs and out must not be NULL (n_dirs >= 1)", fn);
    for (size_t i = 0; i < n_dirs; i++)
        if (!dirs[i]) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: dirs[%zu] is NULL", fn, i);
    cx_st_set *first = NULL;
    const cx_st_map *fm = NULL;
    char path[4200];
    int rc = CIRCUITS_OK;
    /* the records: the first directory's, and every other byte-equal to it */
    for (size_t i = 0; i < n_dirs && !rc; i++) {
        snprintf(path, sizeof path, "%s/job.json", dirs[i]);
        cx_st_set *set;
        const cx_st_map *m;
        if ((rc = cx_job_read_small(path, &set, &m, fn))) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", circuits_last_error());
            rc = cx_fail(rc, "%s: %s is not a job directory: %s", fn, dirs[i], msg);
            break;
        }
        if (i == 0) {
            first = set;
            fm = m;
            continue;
        }
        if (m->size != fm->size || memcmp(m->base, fm->base, m->size) != 0) {
            char field[256];
            cx_job_prov_diff(fm->base, fm->size, m->base, m->size, field, sizeof field);
            rc = cx_fail(CIRCUITS_E_PROVENANCE, "%s: %s and %s hold different jobs (their job.json differ at \"%s\")", fn,
                         dirs[0], dirs[i], field);
        }
        cx_st_close(set);
    }
    json_t *prov = NULL;
    char *text = NULL;
    if (!rc) {
        json_error_t err;
        bool oom;
        prov = cx_json_loadb(fm->base, fm->size, JSON_REJECT_DUPLICATES, &err, &oom);
        text = cx_malloc(fm->size + 1);
        if (oom || !text) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        else if (!json_is_object(prov) || !json_is_string(json_object_get(prov, "format")) ||
                 strcmp(json_string_value(json_object_get(prov, "format")), "circuits-job") != 0)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s/job.json is not a circuits job record", fn, dirs[0]);
        else if (json_integer_value(json_object_get(prov, "format_version")) != 1)
            rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s/job.json has format_version %lld (this library reads 1)", fn,
                         dirs[0], (long long)json_integer_value(json_object_get(prov, "format_version")));
        if (text) {
            memcpy(text, fm->base, fm->size);
            text[fm->size] = '\0';
        }
    }
    snprintf(path, sizeof path, "%s/job.json", dirs[0]);
    cx_job_reader r = {.prov = prov, .prov_text = text};
    if (!rc) rc = positive(prov, "dataset", "n_rows", &r.n_rows, path, fn);
    if (!rc) rc = positive(prov, "dataset", "pos", &r.pos, path, fn);
    if (!rc) rc = positive(prov, "job", "unit_rows", &r.unit_rows, path, fn);
    const cx_job_kind *kind = NULL;
    if (!rc) {
        const char *name = json_string_value(json_object_get(json_object_get(prov, "job"), "kind"));
        kind = cx_job_kind_by_name(name);
        if (!kind)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: \"job.kind\" %s%.64s%s is not a job kind of this library", fn, path,
                         name ? "'" : "", name ? name : "(missing)", name ? "'" : "");
        else if (!kind->reduce)
            rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: the %s job kind cannot be merged (not built)", fn, kind->name);
    }
    /* every unit in some directory, in unit order; a unit in several must be the same bytes */
    size_t cap = 0;
    int64_t got = 0; /* paths held in r.unit_paths */
    if (!rc) r.n_units = r.n_rows / r.unit_rows + (r.n_rows % r.unit_rows != 0);
    for (int64_t u = 0; u < r.n_units && !rc; u++) {
        char *found = NULL;
        for (size_t i = 0; i < n_dirs && !rc; i++) {
            snprintf(path, sizeof path, "%s/units/u%09lld.safetensors", dirs[i], (long long)u);
            if (!exists(path)) continue;
            if (!found) {
                if (!(found = cx_strdup(path))) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
                continue;
            }
            bool same = false;
            if ((rc = same_file(found, path, &same, fn))) break;
            if (!same)
                rc = cx_fail(CIRCUITS_E_PROVENANCE, "%s: unit %lld differs between %s and %s", fn, (long long)u, found, path);
        }
        if (!rc && !found) {
            int64_t row0 = u * r.unit_rows, last = row0 + r.unit_rows < r.n_rows ? row0 + r.unit_rows : r.n_rows;
            rc = cx_fail(CIRCUITS_E_NOT_FOUND, "%s: unit %lld (rows %lld .. %lld) is in none of the %zu directories", fn,
                         (long long)u, (long long)row0, (long long)last - 1, n_dirs);
        }
        if (!rc && (size_t)u == cap) {
            size_t nc = cap ? 2 * cap : 64;
            char **p = cx_realloc(r.unit_paths, nc * sizeof *p);
            if (!p) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
            else {
                r.unit_paths = p;
                cap = nc;
            }
        }
        if (rc) cx_free(found);
        else r.unit_paths[got++] = found;
    }
    if (!rc) rc = kind->reduce(&r, out);
    for (int64_t u = 0; u < got; u++) cx_free(r.unit_paths[u]);
    cx_free(r.unit_paths);
    json_decref(prov);
    cx_free(text);
    cx_st_close(first);
    return rc;
}
