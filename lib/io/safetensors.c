/* safetensors: 8-byte little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.
 * Everything in the header is untrusted: each field is checked before it is used. */
#include "safetensors.h"
#include "json_load.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { const char *name; cx_dtype dt; size_t size; } dtypes[] = {
    {"BOOL", CX_DT_BOOL, 1}, {"U8", CX_DT_U8, 1},   {"I8", CX_DT_I8, 1},
    {"F8_E5M2", CX_DT_F8_E5M2, 1}, {"F8_E4M3", CX_DT_F8_E4M3, 1},
    {"I16", CX_DT_I16, 2},   {"U16", CX_DT_U16, 2}, {"F16", CX_DT_F16, 2},
    {"BF16", CX_DT_BF16, 2}, {"I32", CX_DT_I32, 4}, {"U32", CX_DT_U32, 4},
    {"F32", CX_DT_F32, 4},   {"F64", CX_DT_F64, 8}, {"I64", CX_DT_I64, 8},
    {"U64", CX_DT_U64, 8},
};

size_t cx_dtype_size(cx_dtype dt)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dt == dt) return dtypes[i].size;
    return 0;
}

const char *cx_dtype_name(cx_dtype dt)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dt == dt) return dtypes[i].name;
    return "?";
}

static bool parse_dtype(const char *s, cx_dtype *dt)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, s) == 0) { *dt = dtypes[i].dt; return true; }
    return false;
}

void cx_st_close(cx_st_set *set)
{
    if (!set) return;
    for (size_t i = 0; i < set->n_tensors; i++) cx_free(set->tensors[i].name);
    cx_free(set->tensors);
    for (size_t i = 0; i < set->n_maps; i++) {
        if (set->maps[i].owned) cx_free(set->maps[i].base);
        else if (set->maps[i].base) cx_munmap(set->maps[i].base, set->maps[i].size);
        cx_free(set->maps[i].path);
    }
    cx_free(set->maps);
    cx_free(set);
}

void cx_st_release(const cx_st_set *set, const void *p, size_t n)
{
    uintptr_t lo = (uintptr_t)p, hi = lo + n, page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < set->n_maps; i++) {
        const cx_st_map *m = &set->maps[i];
        uintptr_t base = (uintptr_t)m->base;
        if (m->owned || !m->base || lo < base || hi > base + m->size) continue;
        uintptr_t a = (lo + page - 1) / page * page, b = hi / page * page;
        /* advice only: a failure leaves the pages resident, as before */
        if (a < b) (void)madvise((void *)a, b - a, MADV_DONTNEED);
        return;
    }
}

cx_st_tensor *cx_st_find(const cx_st_set *set, const char *name)
{
    for (size_t i = 0; i < set->n_tensors; i++)
        if (strcmp(set->tensors[i].name, name) == 0) return &set->tensors[i];
    return NULL;
}

/* A JSON integer in [0, 2^62]: jansson keeps integers as long long, so no precision loss. */
static bool json_to_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < 0 || (uint64_t)x > (UINT64_C(1) << 62)) return false;
    *out = (uint64_t)x;
    return true;
}

typedef struct { size_t begin, end, index; } span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

static int parse_entry(cx_st_tensor *t, const char *name, json_t *v,
                       const unsigned char *data, size_t data_size, const char *path,
                       span *sp)
{
    if (!json_is_object(v))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: tensor '%s': header entry is not an object", path, name);
    json_t *jdt = json_object_get(v, "dtype"), *jshape = json_object_get(v, "shape"),
           *joff = json_object_get(v, "data_offsets");
    if (!json_is_string(jdt) || !json_is_array(jshape) || !json_is_array(joff))
        return cx_fail(CIRCUITS_E_FORMAT,
                       "%s: tensor '%s': needs string 'dtype', array 'shape' and array 'data_offsets'",
                       path, name);
    if (!parse_dtype(json_string_value(jdt), &t->dtype))
        return cx_fail(CIRCUITS_E_DTYPE, "%s: tensor '%s': unknown dtype '%s'", path, name,
                       json_string_value(jdt));
    size_t nd = json_array_size(jshape);
    if (nd > CX_ST_MAX_DIMS)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: tensor '%s': %zu dimensions (at most %d)", path, name,
                       nd, CX_ST_MAX_DIMS);
    t->ndim = (int)nd;
    size_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (!json_to_u64(json_array_get(jshape, i), &d))
            return cx_fail(CIRCUITS_E_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                           path, name, i);
        if (!cx_mul_size(numel, (size_t)d, &numel))
            return cx_fail(CIRCUITS_E_FORMAT, "%s: tensor '%s': element count overflows", path, name);
        t->shape[i] = (int64_t)d;
    }
    uint64_t begin, end;
    if (json_array_size(joff) != 2 || !json_to_u64(json_array_get(joff, 0), &begin) ||
        !json_to_u64(json_array_get(joff, 1), &end))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: tensor '%s': data_offsets must be two non-negative integers",
                       path, name);
    if (begin > end || end > data_size)
        return cx_fail(CIRCUITS_E_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] outside the data section (%zu bytes)",
                       path, name, (unsigned long long)begin, (unsigned long long)end, data_size);
    size_t nbytes;
    if (!cx_mul_size(numel, cx_dtype_size(t->dtype), &nbytes))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: tensor '%s': byte count overflows", path, name);
    if (nbytes != end - begin)
        return cx_fail(CIRCUITS_E_FORMAT,
                       "%s: tensor '%s': %llu bytes at data_offsets, but dtype %s x shape needs %zu",
                       path, name, (unsigned long long)(end - begin), cx_dtype_name(t->dtype), nbytes);
    t->numel = numel;
    t->nbytes = nbytes;
    t->data = data + begin;
    t->file = path;
    t->name = cx_strdup(name);
    if (!t->name) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", path);
    sp->begin = (size_t)begin;
    sp->end = (size_t)end;
    return CIRCUITS_OK;
}

int cx_st_parse_header(cx_st_set *set, const char *json, size_t json_len,
                       const unsigned char *data, size_t data_size, const char *path)
{
    json_error_t jerr;
    bool oom;
    json_t *root = cx_json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &jerr, &oom);
    if (oom)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory parsing the header of %s", path);
    if (!root)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: header is not valid JSON (line %d, column %d): %s",
                       path, jerr.line, jerr.column, jerr.text);
    int rc = CIRCUITS_OK;
    span *spans = NULL;
    cx_st_tensor *grown = NULL;
    if (!json_is_object(root)) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    size_t n = json_object_size(root);
    grown = cx_realloc(set->tensors, (set->n_tensors + n) * sizeof *set->tensors);
    spans = cx_calloc(n, sizeof *spans);
    if (!grown || !spans) {
        if (grown) set->tensors = grown;
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", path);
        goto done;
    }
    set->tensors = grown;
    size_t k = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                rc = cx_fail(CIRCUITS_E_FORMAT, "%s: __metadata__ is not an object", path);
                goto done;
            }
            continue;
        }
        if (cx_st_find(set, key)) {
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: tensor '%s' is defined twice", path, key);
            goto done;
        }
        cx_st_tensor *t = &set->tensors[set->n_tensors];
        memset(t, 0, sizeof *t);
        rc = parse_entry(t, key, val, data, data_size, path, &spans[k]);
        if (rc) goto done;
        spans[k].index = set->n_tensors;
        set->n_tensors++;
        k++;
    }
    /* No two tensors may share bytes (empty tensors occupy none). */
    qsort(spans, k, sizeof *spans, cmp_span);
    size_t max_end = 0, max_index = 0;
    for (size_t i = 0; i < k; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (spans[i].begin < max_end) {
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: tensors '%s' and '%s' overlap", path,
                         set->tensors[max_index].name, set->tensors[spans[i].index].name);
            goto done;
        }
        max_end = spans[i].end;
        max_index = spans[i].index;
    }
done:
    cx_free(spans);
    json_decref(root);
    return rc;
}

/* Opens a regular file of at least min bytes (the smallest `kind` file) for reading; *fd and
 * m->size on success. */
static int open_regular(const char *path, cx_st_map *m, int *fd_out, size_t min, const char *kind)
{
    /* O_NONBLOCK: a FIFO (or device) in the model directory must be refused below, not block open() */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return cx_fail(CIRCUITS_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cx_fail(CIRCUITS_E_IO, "%s is not a regular file", path);
    }
    if ((uintmax_t)st.st_size > (uintmax_t)SIZE_MAX) { /* a 32-bit build and a file of 4 GiB or more */
        close(fd);
        return cx_fail(CIRCUITS_E_IO, "%s: %jd bytes cannot be addressed on this system", path, (intmax_t)st.st_size);
    }
    m->size = (size_t)st.st_size;
    if (m->size < min) {
        close(fd);
        return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated: %zu bytes, a %s file has at least %zu", path, m->size,
                       kind, min);
    }
    *fd_out = fd;
    return CIRCUITS_OK;
}

static int map_file(const char *path, cx_st_map *m, size_t min, const char *kind)
{
    int fd, rc = open_regular(path, m, &fd, min, kind);
    if (rc) return rc;
    m->base = cx_mmap_read(m->size, fd);
    int map_errno = errno;
    close(fd);
    if (m->base == MAP_FAILED) {
        m->base = NULL;
        if (map_errno == ENOMEM)
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory (address space) mapping %s", path);
        return cx_fail(CIRCUITS_E_IO, "cannot map %s: %s", path, strerror(map_errno));
    }
    return CIRCUITS_OK;
}

/* Reads the whole file into a buffer of the library's allocator (freed by cx_st_close, also on
 * failure). The size is fstat's: a file that ends sooner (it shrank since, or a file system
 * reporting a size it does not deliver) is refused rather than read as a shorter image. */
static int read_file(const char *path, cx_st_map *m, size_t min, const char *kind)
{
    int fd, rc = open_regular(path, m, &fd, min, kind);
    if (rc) return rc;
    m->base = cx_malloc(m->size);
    if (!m->base) {
        close(fd);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s into memory (%zu bytes)", path,
                       m->size);
    }
    m->owned = true;
    unsigned char *p = m->base;
    size_t done = 0;
    while (done < m->size) {
        size_t want = m->size - done;
        if (want > ((size_t)1 << 30)) want = (size_t)1 << 30; /* read() transfers at most ~2 GB at once */
        ssize_t got = read(fd, p + done, want);
        if (got < 0) {
            if (errno == EINTR) continue; /* a signal before any byte: try again */
            int e = errno;
            close(fd);
            return cx_fail(CIRCUITS_E_IO, "cannot read %s: %s", path, strerror(e));
        }
        if (got == 0) {
            close(fd);
            return cx_fail(CIRCUITS_E_IO, "%s: the file ended after %zu of its %zu bytes while being read (did it change?)",
                           path, done, m->size);
        }
        done += (size_t)got;
    }
    close(fd);
    return CIRCUITS_OK;
}

int cx_st_add_image(cx_st_set *set, const char *path, cx_st_mode mode, size_t min_size, const char *kind,
                    const cx_st_map **out)
{
    cx_st_map *maps = cx_realloc(set->maps, (set->n_maps + 1) * sizeof *maps);
    if (!maps) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory opening %s", path);
    set->maps = maps;
    cx_st_map *m = &maps[set->n_maps];
    memset(m, 0, sizeof *m);
    m->path = cx_strdup(path);
    if (!m->path) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory opening %s", path);
    set->n_maps++;
    int rc = mode == CX_ST_READ ? read_file(path, m, min_size, kind) : map_file(path, m, min_size, kind);
    if (rc) return rc;
    *out = m;
    return CIRCUITS_OK;
}

/* Maps (or reads) one more file into set and parses its header. */
static int add_file(cx_st_set *set, const char *path, cx_st_mode mode)
{
    const cx_st_map *m;
    int rc = cx_st_add_image(set, path, mode, 8, "safetensors", &m);
    if (rc) return rc;
    return cx_st_parse_buffer(set, m->base, m->size, m->path);
}

int cx_st_parse_buffer(cx_st_set *set, const unsigned char *p, size_t size, const char *path)
{
    if (size < 8)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated: %zu bytes, a safetensors file has at least 8", path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > size - 8)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                       path, (unsigned long long)hlen, size);
    if (hlen > CX_ST_MAX_HEADER)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: header length %llu exceeds the %u-byte limit", path,
                       (unsigned long long)hlen, CX_ST_MAX_HEADER);
    return cx_st_parse_header(set, (const char *)p + 8, (size_t)hlen, p + 8 + hlen, size - 8 - (size_t)hlen, path);
}

int cx_st_open_file(cx_st_set **out, const char *path) { return cx_st_open(out, path, CX_ST_MAP); }

int cx_st_open(cx_st_set **out, const char *path, cx_st_mode mode)
{
    *out = NULL;
    cx_st_set *set = cx_calloc(1, sizeof *set);
    if (!set) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory opening %s", path);
    int rc = add_file(set, path, mode);
    if (rc) {
        cx_st_close(set);
        return rc;
    }
    *out = set;
    return CIRCUITS_OK;
}

/* A shard name must be a plain file name in the model directory. */
static bool plain_file_name(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 256 && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int cx_st_open_index(cx_st_set **out, const char *dir, const char *index_path, cx_st_mode mode)
{
    *out = NULL;
    json_error_t jerr;
    bool oom;
    json_t *root = cx_json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr, &oom);
    if (oom)
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory parsing %s", index_path);
    if (!root)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: not valid JSON (line %d): %s", index_path, jerr.line,
                       jerr.text);
    int rc = CIRCUITS_OK;
    cx_st_set *set = NULL;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: missing object 'weight_map'", index_path);
        goto done;
    }
    set = cx_calloc(1, sizeof *set);
    if (!set) {
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", index_path);
        goto done;
    }
    const char *name;
    json_t *file;
    /* Open each distinct shard once, in order of first mention. */
    json_object_foreach(wm, name, file) {
        if (!json_is_string(file) || !plain_file_name(json_string_value(file))) {
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: weight_map['%s'] is not a plain file name", index_path,
                         name);
            goto done;
        }
        char path[4096];
        int len = snprintf(path, sizeof path, "%s/%s", dir, json_string_value(file));
        if (len < 0 || (size_t)len >= sizeof path) {
            rc = cx_fail(CIRCUITS_E_IO, "path too long: %s/%s", dir, json_string_value(file));
            goto done;
        }
        bool seen = false;
        for (size_t i = 0; i < set->n_maps; i++) seen |= strcmp(set->maps[i].path, path) == 0;
        if (!seen && (rc = add_file(set, path, mode)) != CIRCUITS_OK) goto done;
    }
    /* Every tensor the index names must be in the shard it names. */
    json_object_foreach(wm, name, file) {
        cx_st_tensor *t = cx_st_find(set, name);
        const char *want = json_string_value(file);
        size_t wl = strlen(want), fl = t ? strlen(t->file) : 0;
        /* t->file is "dir/shard": compare the whole last component, not a suffix of it */
        if (!t || fl <= wl || t->file[fl - wl - 1] != '/' || strcmp(t->file + fl - wl, want) != 0) {
            rc = cx_fail(CIRCUITS_E_TENSOR_MISSING, "%s: tensor '%s' is not in shard %s", index_path, name,
                         want);
            goto done;
        }
    }
done:
    json_decref(root);
    if (rc) cx_st_close(set);
    else *out = set;
    return rc;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float cx_st_read_f32(const cx_st_tensor *t, size_t i)
{
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case CX_DT_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4); /* the data may be unaligned */
        return f;
    }
    case CX_DT_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return half_to_float(h);
    }
    case CX_DT_BF16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        uint32_t bits = (uint32_t)h << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    default: return 0.0f;
    }
}
