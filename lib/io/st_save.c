/* Writing safetensors files, and reading back their metadata (st_save.h). */
#include "st_save.h"
#include "json_load.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool little_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* n elements of `size` bytes at dst, little-endian whatever the host. */
static void put_le(unsigned char *dst, const void *data, size_t n, size_t size)
{
    if (little_endian()) {
        memcpy(dst, data, n * size);
        return;
    }
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < size; j++) dst[i * size + j] = p[i * size + size - 1 - j];
}

/* The header JSON (compact) for tensors of these byte sizes. */
static int header(const cx_st_out *t, const size_t *bytes, size_t n, const char *const *meta, size_t n_meta,
                  char **out, const char *fn)
{
    json_t *root = json_object(), *md = n_meta ? json_object() : NULL;
    bool ok = root && (!n_meta || md);
    size_t off = 0;
    for (size_t i = 0; i < n && ok; i++) {
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        ok = e && shape && offs;
        for (int d = 0; d < t[i].ndim && ok; d++) ok = json_array_append_new(shape, json_integer(t[i].shape[d])) == 0;
        ok = ok && json_array_append_new(offs, json_integer((json_int_t)off)) == 0 &&
             json_array_append_new(offs, json_integer((json_int_t)(off + bytes[i]))) == 0;
        off += bytes[i];
        if (ok) { /* each json_object_set_new takes its value, also when it fails: call them all */
            ok = (json_object_set_new(e, "dtype", json_string(cx_dtype_name(t[i].dtype))) == 0) &
                 (json_object_set_new(e, "shape", shape) == 0) & (json_object_set_new(e, "data_offsets", offs) == 0);
            shape = offs = NULL;
            if (ok) {
                ok = json_object_set_new(root, t[i].name, e) == 0;
                e = NULL;
            }
        }
        json_decref(e);
        json_decref(shape);
        json_decref(offs);
    }
    for (size_t i = 0; i < n_meta && ok; i++) ok = json_object_set_new(md, meta[2 * i], json_string(meta[2 * i + 1])) == 0;
    if (ok && md) {
        ok = json_object_set_new(root, "__metadata__", md) == 0;
        md = NULL;
    }
    *out = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(md);
    json_decref(root);
    return *out ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
}

int cx_st_image(const cx_st_out *tensors, size_t n, const char *const *meta, size_t n_meta, unsigned char **out,
                size_t *size, const char *fn)
{
    *out = NULL;
    *size = 0;
    size_t *bytes = cx_calloc(n ? n : 1, sizeof *bytes);
    if (!bytes) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    size_t data = 0;
    for (size_t i = 0; i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (size_t)tensors[i].shape[d]; /* sizes the caller holds */
        bytes[i] = numel * cx_dtype_size(tensors[i].dtype);
        data += bytes[i];
    }
    char *json = NULL;
    int rc = header(tensors, bytes, n, meta, n_meta, &json, fn);
    size_t len = json ? strlen(json) : 0, padded = (len + 7) / 8 * 8;
    unsigned char *p = rc ? NULL : cx_malloc(8 + padded + data);
    if (!rc && !p) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory (%zu bytes)", fn, 8 + padded + data);
    if (!rc) {
        uint64_t hl = padded;
        put_le(p, &hl, 1, 8);
        memcpy(p + 8, json, len);
        memset(p + 8 + len, ' ', padded - len);
        size_t off = 8 + padded;
        for (size_t i = 0; i < n; i++) {
            size_t es = cx_dtype_size(tensors[i].dtype);
            put_le(p + off, tensors[i].data, bytes[i] / es, es);
            off += bytes[i];
        }
        *out = p;
        *size = off;
    }
    cx_free(json); /* json_dumps allocates through jansson's allocator: cx_malloc (alloc.c) */
    cx_free(bytes);
    return rc;
}

/* The process's umask, read without changing it (umask(2) can only set it, which would race with
 * other threads creating files): Linux shows it in /proc/self/status. 022 when that is unreadable. */
static mode_t current_umask(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    unsigned mask = 022;
    char line[128];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Umask: %o", &mask) == 1) break;
    if (f) fclose(f);
    return (mode_t)(mask & 0777);
}

int cx_write_atomic(const char *path, const void *bytes, size_t n, const char *fn)
{
    size_t pl = strlen(path);
    char *tmp = cx_malloc(pl + 8);
    if (!tmp) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    snprintf(tmp, pl + 8, "%s.XXXXXX", path);
    int rc = CIRCUITS_OK, fd = mkstemp(tmp);
    /* mkstemp creates 0600; the file gets the mode fopen would give it (0666 less the umask) */
    if (fd >= 0 && fchmod(fd, 0666 & ~current_umask()) != 0) {
        int e = errno; /* the message below reports fchmod's error, not close's or remove's */
        close(fd);
        remove(tmp);
        fd = -1;
        errno = e;
    }
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        rc = cx_fail(CIRCUITS_E_IO, "%s: cannot create %s: %s", fn, path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            remove(tmp);
        }
    } else {
        bool ok = fwrite(bytes, 1, n, f) == n;
        int err = errno;
        if (fclose(f) != 0 && ok) {
            ok = false;
            err = errno;
        }
        if (ok && rename(tmp, path) != 0) {
            ok = false;
            err = errno;
        }
        if (!ok) {
            rc = cx_fail(CIRCUITS_E_IO, "%s: cannot write %s: %s", fn, path, strerror(err));
            remove(tmp);
        }
    }
    cx_free(tmp);
    return rc;
}

int cx_st_write(const char *path, const cx_st_out *tensors, size_t n, const char *const *meta, size_t n_meta,
                const char *fn)
{
    unsigned char *img;
    size_t size;
    int rc = cx_st_image(tensors, n, meta, n_meta, &img, &size, fn);
    if (!rc) rc = cx_write_atomic(path, img, size, fn);
    cx_free(img);
    return rc;
}

int cx_st_metadata(const cx_st_map *map, json_t **out, const char *fn)
{
    *out = NULL;
    const unsigned char *p = map->base;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | p[i]; /* validated by the reader: 8 + hl <= size */
    json_error_t err;
    bool oom;
    json_t *root = cx_json_loadb((const char *)p + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &err, &oom);
    if (!root)
        return oom ? cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory reading %s", fn, map->path)
                   : cx_fail(CIRCUITS_E_FORMAT, "%s: %s: header is not valid JSON", fn, map->path);
    json_t *md = json_object_get(root, "__metadata__");
    if (md) *out = json_incref(md);
    json_decref(root);
    return CIRCUITS_OK;
}
