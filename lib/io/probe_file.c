/* A probe's file (docs/probes.md "File"): safetensors with W F32 [n_coef, d] and b F32 [n_coef],
 * and string metadata {"format": "libcircuits-probe", "version": "1", "kind": "linear" |
 * "logistic", "l2", "fit_intercept", "n_outputs", "n_iter", "hook_name"}, written by cx_st_write
 * (st_save.h: a failed save leaves no file); loaded as hostile input: the
 * safetensors layer validates the container, this file every tensor, shape and metadata value. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe.h"
#include "json_load.h"
#include "safetensors.h"
#include "st_save.h"

#define PROBE_FORMAT "libcircuits-probe"
#define PROBE_VERSION "1"

static const char *kind_name(int32_t kind) { return kind == CIRCUITS_PROBE_LINEAR ? "linear" : "logistic"; }

int circuits_probe_save(const circuits_probe *p, const char *path)
{
    static const char *fn = "circuits_probe_save";
    if (!p || !path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fn);
    char l2[64], n_out[32], n_iter[32];
    snprintf(l2, sizeof l2, "%.9g", (double)p->l2);
    snprintf(n_out, sizeof n_out, "%lld", (long long)p->n_outputs);
    snprintf(n_iter, sizeof n_iter, "%d", (int)p->n_iter);
    const char *const meta[] = {"format", PROBE_FORMAT, "version", PROBE_VERSION, "kind", kind_name(p->kind),
                                "l2", l2, "fit_intercept", p->fit_intercept ? "1" : "0", "n_outputs", n_out,
                                "n_iter", n_iter, "hook_name", p->hook_name};
    const cx_st_out t[2] = {{"W", CX_DT_F32, 2, {p->n_coef, p->d}, p->W}, {"b", CX_DT_F32, 1, {p->n_coef}, p->b}};
    return cx_st_write(path, t, 2, meta, CX_COUNT(meta) / 2, fn);
}

static int meta_str(json_t *meta, const char *key, const char *path, const char **out)
{
    json_t *v = json_object_get(meta, key);
    if (!v || !json_is_string(v))
        return cx_fail(CIRCUITS_E_FORMAT, "circuits_probe_load: %s: metadata '%s' is missing or not a string", path,
                       key);
    *out = json_string_value(v);
    return CIRCUITS_OK;
}

/* A whole decimal integer in [lo, hi]. */
static int meta_int(json_t *meta, const char *key, const char *path, long long lo, long long hi, long long *out)
{
    const char *s = NULL;
    int rc = meta_str(meta, key, path, &s);
    if (rc) return rc;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return cx_fail(CIRCUITS_E_FORMAT, "circuits_probe_load: %s: metadata %s = '%s' is not an integer in [%lld, %lld]",
                       path, key, s, lo, hi);
    *out = v;
    return CIRCUITS_OK;
}

/* A F32 tensor of ndim dims, found and checked. */
static int tensor_get(cx_st_set *set, const char *name, int ndim, const char *path, cx_st_tensor **out)
{
    cx_st_tensor *t = cx_st_find(set, name);
    if (!t) return cx_fail(CIRCUITS_E_TENSOR_MISSING, "circuits_probe_load: %s has no tensor '%s'", path, name);
    if (t->dtype != CX_DT_F32)
        return cx_fail(CIRCUITS_E_DTYPE, "circuits_probe_load: %s: '%s' is %s, not F32", path, name,
                       cx_dtype_name(t->dtype));
    if (t->ndim != ndim)
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_probe_load: %s: '%s' has %d dims, not %d", path, name, t->ndim, ndim);
    t->used = true;
    *out = t;
    return CIRCUITS_OK;
}

static int load(cx_st_set *set, const char *path, circuits_probe **out)
{
    static const char *fn = "circuits_probe_load";
    cx_st_tensor *W, *b;
    int rc;
    if ((rc = tensor_get(set, "W", 2, path, &W)) || (rc = tensor_get(set, "b", 1, path, &b))) return rc;
    for (size_t i = 0; i < set->n_tensors; i++)
        if (!set->tensors[i].used)
            return cx_fail(CIRCUITS_E_TENSOR_UNEXPECTED, "%s: %s: unexpected tensor '%s' (a probe holds W and b)", fn,
                           path, set->tensors[i].name);
    int64_t n_coef = W->shape[0], d = W->shape[1];
    if (n_coef < 1 || d < 1 || b->shape[0] != n_coef)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: %s: W [%lld, %lld] and b [%lld] do not make a probe (W [n_coef >= 1, d >= 1], "
                       "b [n_coef])", fn, path, (long long)n_coef, (long long)d, (long long)b->shape[0]);
    /* the metadata: the header again (the container layer validated it and keeps no metadata) */
    const unsigned char *img = set->maps[0].base;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | img[i];
    json_error_t err;
    bool oom = false;
    json_t *root = cx_json_loadb((const char *)img + 8, (size_t)hlen, 0, &err, &oom);
    if (!root) return oom ? cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory reading %s", fn, path)
                          : cx_fail(CIRCUITS_E_FORMAT, "%s: %s: bad header", fn, path);
    json_t *meta = json_object_get(root, "__metadata__");
    const char *s = NULL, *kind_s = NULL, *hook = NULL;
    long long fi, n_out, n_iter;
    int32_t kind = -1;
    if (!meta) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s has no __metadata__ (not a probe file)", fn, path);
        goto done;
    }
    if ((rc = meta_str(meta, "format", path, &s))) goto done;
    if (strcmp(s, PROBE_FORMAT) != 0) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: format '%s' is not '" PROBE_FORMAT "'", fn, path, s);
        goto done;
    }
    if ((rc = meta_str(meta, "version", path, &s))) goto done;
    if (strcmp(s, PROBE_VERSION) != 0) {
        rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s: probe file version '%s' (this library reads " PROBE_VERSION ")",
                     fn, path, s);
        goto done;
    }
    if ((rc = meta_str(meta, "kind", path, &kind_s))) goto done;
    if (strcmp(kind_s, "linear") == 0) kind = CIRCUITS_PROBE_LINEAR;
    else if (strcmp(kind_s, "logistic") == 0) kind = CIRCUITS_PROBE_LOGISTIC;
    else {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: kind '%s' is not 'linear' or 'logistic'", fn, path, kind_s);
        goto done;
    }
    if ((rc = meta_str(meta, "l2", path, &s))) goto done;
    char *end;
    double l2 = strtod(s, &end);
    if (!*s || *end || !isfinite(l2) || l2 < 0 || l2 > 3.4e38 || (kind == CIRCUITS_PROBE_LOGISTIC && l2 == 0)) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: metadata l2 = '%s' is not a finite number >= 0 (> 0 logistic)", fn,
                     path, s);
        goto done;
    }
    if ((rc = meta_int(meta, "fit_intercept", path, 0, 1, &fi)) ||
        (rc = meta_int(meta, "n_outputs", path, 1, INT64_MAX, &n_out)) ||
        (rc = meta_int(meta, "n_iter", path, 0, INT32_MAX, &n_iter)) || (rc = meta_str(meta, "hook_name", path, &hook)))
        goto done;
    bool fits = kind == CIRCUITS_PROBE_LINEAR ? n_out == n_coef
                                              : (n_out == 2 && n_coef == 1) || (n_out >= 3 && n_coef == n_out);
    if (!fits) {
        rc = cx_fail(CIRCUITS_E_SHAPE, "%s: %s: a %s probe of %lld outputs cannot have W of %lld rows", fn, path,
                     kind_s, n_out, (long long)n_coef);
        goto done;
    }
    circuits_probe *p;
    if ((rc = cx_probe_new(&p, kind, d, (int64_t)n_out, hook, fn))) goto done;
    memcpy(p->W, W->data, W->nbytes);
    memcpy(p->b, b->data, b->nbytes);
    for (size_t i = 0; i < (size_t)n_coef * (size_t)d + (size_t)n_coef && !rc; i++) {
        float v = i < (size_t)n_coef * (size_t)d ? p->W[i] : p->b[i - (size_t)n_coef * (size_t)d];
        if (!isfinite(v))
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: a weight is not finite (%s element %zu)", fn, path,
                         i < (size_t)n_coef * (size_t)d ? "W" : "b",
                         i < (size_t)n_coef * (size_t)d ? i : i - (size_t)n_coef * (size_t)d);
        else if (!fi && i >= (size_t)n_coef * (size_t)d && v != 0)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: %s: b is not zero but fit_intercept is 0", fn, path);
    }
    if (rc) {
        circuits_probe_free(p);
        goto done;
    }
    p->l2 = (float)l2;
    p->fit_intercept = (int32_t)fi;
    p->n_iter = (int32_t)n_iter;
    *out = p;
done:
    json_decref(root);
    return rc;
}

int circuits_probe_load(circuits_probe **out, const char *path)
{
    if (!out || !path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_probe_load: NULL argument");
    *out = NULL;
    cx_st_set *set;
    int rc = cx_st_open(&set, path, CX_ST_READ);
    if (rc) return rc;
    rc = load(set, path, out);
    cx_st_close(set);
    return rc;
}
