/* A probe's file (docs/probes.md "File"): safetensors with W F32 [n_coef, d] and b F32 [n_coef],
 * and string metadata {"format": "libcircuits-probe", "version": "1", "kind": "linear" |
 * "logistic", "l2", "fit_intercept", "n_outputs", "n_iter", "hook_name"}. Saved through a
 * temporary file renamed into place (a failed save leaves no file); loaded as hostile input: the
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

#define PROBE_FORMAT "libcircuits-probe"
#define PROBE_VERSION "1"

static const char *kind_name(int32_t kind) { return kind == CIRCUITS_PROBE_LINEAR ? "linear" : "logistic"; }

/* The header JSON (padded with spaces to a multiple of 8) into *out (cx_malloc'd), length *len. */
static int header_json(const circuits_probe *p, char **out, size_t *len)
{
    static const char *fn = "circuits_probe_save";
    char num[64];
    json_t *root = json_object(), *meta = json_object(), *W = json_object(), *b = json_object();
    size_t nw = (size_t)p->n_coef * (size_t)p->d * sizeof(float), nb = (size_t)p->n_coef * sizeof(float);
    int bad = !root || !meta || !W || !b;
    if (!bad) {
        bad |= json_object_set_new(W, "dtype", json_string("F32"));
        bad |= json_object_set_new(W, "shape", json_pack("[II]", (json_int_t)p->n_coef, (json_int_t)p->d));
        bad |= json_object_set_new(W, "data_offsets", json_pack("[II]", (json_int_t)0, (json_int_t)nw));
        bad |= json_object_set_new(b, "dtype", json_string("F32"));
        bad |= json_object_set_new(b, "shape", json_pack("[I]", (json_int_t)p->n_coef));
        bad |= json_object_set_new(b, "data_offsets", json_pack("[II]", (json_int_t)nw, (json_int_t)(nw + nb)));
        bad |= json_object_set_new(meta, "format", json_string(PROBE_FORMAT));
        bad |= json_object_set_new(meta, "version", json_string(PROBE_VERSION));
        bad |= json_object_set_new(meta, "kind", json_string(kind_name(p->kind)));
        snprintf(num, sizeof num, "%.9g", (double)p->l2);
        bad |= json_object_set_new(meta, "l2", json_string(num));
        bad |= json_object_set_new(meta, "fit_intercept", json_string(p->fit_intercept ? "1" : "0"));
        snprintf(num, sizeof num, "%lld", (long long)p->n_outputs);
        bad |= json_object_set_new(meta, "n_outputs", json_string(num));
        snprintf(num, sizeof num, "%d", (int)p->n_iter);
        bad |= json_object_set_new(meta, "n_iter", json_string(num));
        bad |= json_object_set_new(meta, "hook_name", json_string(p->hook_name));
        bad |= json_object_set_new(root, "__metadata__", meta);
        meta = NULL;
        bad |= json_object_set_new(root, "W", W);
        W = NULL;
        bad |= json_object_set_new(root, "b", b);
        b = NULL;
    }
    /* the size first, then into our own buffer (json_dumps's would be jansson's allocator's) */
    size_t n = bad ? 0 : json_dumpb(root, NULL, 0, JSON_COMPACT | JSON_SORT_KEYS), padded = (n + 7) & ~(size_t)7;
    char *h = n ? cx_malloc(padded) : NULL;
    if (h && json_dumpb(root, h, n, JSON_COMPACT | JSON_SORT_KEYS) != n) {
        cx_free(h);
        h = NULL;
    }
    json_decref(root);
    json_decref(meta);
    json_decref(W);
    json_decref(b);
    if (!h) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory writing the header", fn);
    memset(h + n, ' ', padded - n);
    *out = h;
    *len = padded;
    return CIRCUITS_OK;
}

int circuits_probe_save(const circuits_probe *p, const char *path)
{
    static const char *fn = "circuits_probe_save";
    if (!p || !path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fn);
    char *h = NULL;
    size_t hl = 0;
    int rc = header_json(p, &h, &hl);
    if (rc) return rc;
    size_t pl = strlen(path);
    char *tmp = cx_malloc(pl + 16);
    if (!tmp) {
        cx_free(h);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    snprintf(tmp, pl + 16, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        rc = cx_fail(CIRCUITS_E_IO, "%s: cannot write %s: %s", fn, path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            remove(tmp);
        }
        goto done;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    size_t nw = (size_t)p->n_coef * (size_t)p->d, nb = (size_t)p->n_coef;
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, hl, f) == hl && fwrite(p->W, sizeof(float), nw, f) == nw &&
              fwrite(p->b, sizeof(float), nb, f) == nb;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        rc = cx_fail(CIRCUITS_E_IO, "%s: writing %s failed: %s", fn, tmp, strerror(errno));
        remove(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        rc = cx_fail(CIRCUITS_E_IO, "%s: cannot write %s: %s", fn, path, strerror(errno));
        remove(tmp);
    }
done:
    cx_free(h);
    cx_free(tmp);
    return rc;
}

/* Metadata string `key` of meta (a JSON object) into *out, or a FORMAT failure. */
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
