/* The GGUF reader (gguf.h). Everything in the file is untrusted: every count and length is
 * checked against the bytes left before it is used, counts far beyond any real file are refused,
 * and sizes are computed with overflow checks. */
#include "gguf.h"
#include "quant.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static size_t scalar_size(uint32_t type)
{
    static const size_t sz[CX_GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return type < CX_GT_COUNT ? sz[type] : 0;
}

const char *cx_gguf_type_name(uint32_t type)
{
    static const char *const names[CX_GT_COUNT] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                                   "bool", "string", "array", "u64", "i64", "f64"};
    return type < CX_GT_COUNT ? names[type] : "unknown";
}

static int need(cx_gguf_cursor *c, size_t n, const char *what)
{
    if (n > c->size - c->pos)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated GGUF: %s needs %zu bytes at offset %zu, %zu left", c->path, what,
                       n, c->pos, c->size - c->pos);
    return CIRCUITS_OK;
}

static int get_u32(cx_gguf_cursor *c, uint32_t *v, const char *what)
{
    int rc = need(c, 4, what);
    if (rc) return rc;
    *v = cx_rd32le(c->p + c->pos);
    c->pos += 4;
    return CIRCUITS_OK;
}

static int get_u64(cx_gguf_cursor *c, uint64_t *v, const char *what)
{
    int rc = need(c, 8, what);
    if (rc) return rc;
    *v = cx_rd64le(c->p + c->pos);
    c->pos += 8;
    return CIRCUITS_OK;
}

int cx_gguf_get_string(cx_gguf_cursor *c, const uint8_t **s, size_t *n, const char *what)
{
    uint64_t len;
    int rc = get_u64(c, &len, what);
    if (rc) return rc;
    if (len > c->size - c->pos)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated GGUF: %s of %llu bytes at offset %zu, %zu left", c->path, what,
                       (unsigned long long)len, c->pos, c->size - c->pos);
    *s = c->p + c->pos;
    *n = (size_t)len;
    c->pos += (size_t)len;
    return CIRCUITS_OK;
}

/* Skips (and bounds-checks) one value of k->type, recording where it is in k. */
static int skip_value(cx_gguf_cursor *c, cx_gguf_kv *k, const char *key)
{
    if (k->type == CX_GT_STRING) {
        const uint8_t *s;
        size_t n;
        k->at = c->pos;
        return cx_gguf_get_string(c, &s, &n, key);
    }
    if (k->type == CX_GT_ARRAY) {
        int rc = get_u32(c, &k->elem, key);
        if (!rc) rc = get_u64(c, &k->count, key);
        if (rc) return rc;
        if (k->elem == CX_GT_ARRAY)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: GGUF key '%.128s' is an array of arrays", c->path, key);
        if (k->elem >= CX_GT_COUNT)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%.128s': unknown array element type %u", c->path, key,
                           k->elem);
        /* every element takes at least its scalar size, or 8 bytes for a string's length */
        size_t min = k->elem == CX_GT_STRING ? 8 : scalar_size(k->elem);
        if (k->count > (c->size - c->pos) / min)
            return cx_fail(CIRCUITS_E_FORMAT,
                           "%s: truncated GGUF: key '%.128s': %llu array elements cannot fit in the %zu bytes left",
                           c->path, key, (unsigned long long)k->count, c->size - c->pos);
        k->at = c->pos;
        if (k->elem != CX_GT_STRING) {
            c->pos += (size_t)k->count * min;
            return CIRCUITS_OK;
        }
        for (uint64_t i = 0; i < k->count; i++) {
            const uint8_t *s;
            size_t n;
            int r = cx_gguf_get_string(c, &s, &n, key);
            if (r) return r;
        }
        return CIRCUITS_OK;
    }
    size_t n = scalar_size(k->type);
    if (!n) return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%.128s': unknown value type %u", c->path, key, k->type);
    int rc = need(c, n, key);
    if (rc) return rc;
    k->at = c->pos;
    c->pos += n;
    return CIRCUITS_OK;
}

static int cmp_key(const void *a, const void *b)
{
    const cx_gguf_kv *x = *(const cx_gguf_kv *const *)a, *y = *(const cx_gguf_kv *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int d = memcmp(x->key, y->key, n);
    return d ? d : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* No key twice (llama.cpp refuses them too): sorted, equal neighbours. */
static int check_unique_keys(const cx_gguf *g)
{
    if (g->n_kv < 2) return CIRCUITS_OK;
    const cx_gguf_kv **order = cx_malloc(g->n_kv * sizeof *order);
    if (!order) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", g->path);
    for (size_t i = 0; i < g->n_kv; i++) order[i] = &g->kvs[i];
    qsort(order, g->n_kv, sizeof *order, cmp_key);
    int rc = CIRCUITS_OK;
    for (size_t i = 1; i < g->n_kv && !rc; i++)
        if (cmp_key(&order[i - 1], &order[i]) == 0)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%.*s' appears twice", g->path,
                         (int)(order[i]->key_len > 128 ? 128 : order[i]->key_len), order[i]->key);
    cx_free(order);
    return rc;
}

int cx_gguf_parse(cx_gguf *g, const uint8_t *p, size_t size, const char *path)
{
    memset(g, 0, sizeof *g);
    g->p = p;
    g->size = size;
    g->path = path;
    cx_gguf_cursor c = {p, 0, size, path};
    int rc = need(&c, 24, "the header");
    if (rc) return rc;
    if (memcmp(p, "GGUF", 4) != 0) return cx_fail(CIRCUITS_E_FORMAT, "%s: not a GGUF file (bad magic)", path);
    g->version = cx_rd32le(p + 4);
    if (g->version != 2 && g->version != 3)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: GGUF version %u is not supported (2 or 3; a big-endian file?)", path,
                       g->version);
    g->n_tensors = cx_rd64le(p + 8);
    uint64_t n_kv = cx_rd64le(p + 16);
    c.pos = 24;
    if (n_kv > CX_GGUF_MAX_KV)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF header claims %llu key-value pairs (at most %u)", path,
                       (unsigned long long)n_kv, CX_GGUF_MAX_KV);
    /* grown as pairs are read: a huge claimed count in a short file costs nothing */
    size_t cap = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        if (g->n_kv == cap) {
            size_t nc = cap ? 2 * cap : 64;
            cx_gguf_kv *grown = cx_realloc(g->kvs, nc * sizeof *grown);
            if (!grown) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", path);
            g->kvs = grown;
            cap = nc;
        }
        cx_gguf_kv *k = &g->kvs[i];
        memset(k, 0, sizeof *k);
        const uint8_t *key;
        if ((rc = cx_gguf_get_string(&c, &key, &k->key_len, "a key"))) return rc;
        if (k->key_len > CX_GGUF_MAX_KEY)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key %llu is %zu bytes long", path, (unsigned long long)i,
                           k->key_len);
        k->key = (const char *)key;
        char kbuf[160];
        snprintf(kbuf, sizeof kbuf, "%.*s", (int)(k->key_len > 128 ? 128 : k->key_len), k->key);
        if ((rc = get_u32(&c, &k->type, kbuf))) return rc;
        if ((rc = skip_value(&c, k, kbuf))) return rc;
        g->n_kv++;
    }
    g->infos_at = c.pos;
    return check_unique_keys(g);
}

void cx_gguf_free(cx_gguf *g)
{
    if (!g) return;
    cx_free(g->kvs);
    g->kvs = NULL;
    g->n_kv = 0;
}

const cx_gguf_kv *cx_gguf_find(const cx_gguf *g, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < g->n_kv; i++)
        if (g->kvs[i].key_len == n && memcmp(g->kvs[i].key, key, n) == 0) return &g->kvs[i];
    return NULL;
}

static int wrong_type(const cx_gguf *g, const cx_gguf_kv *k, const char *want)
{
    return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%.*s' is a %s, not %s", g->path,
                   (int)(k->key_len > 128 ? 128 : k->key_len), k->key, cx_gguf_type_name(k->type), want);
}

int cx_gguf_kv_int(const cx_gguf *g, const cx_gguf_kv *k, int64_t *v)
{
    const uint8_t *p = g->p + k->at;
    switch (k->type) {
    case CX_GT_U8: *v = p[0]; break;
    case CX_GT_I8: *v = (int8_t)p[0]; break;
    case CX_GT_U16: *v = (uint16_t)(p[0] | p[1] << 8); break;
    case CX_GT_I16: *v = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case CX_GT_U32: *v = cx_rd32le(p); break;
    case CX_GT_I32: *v = (int32_t)cx_rd32le(p); break;
    case CX_GT_U64:
        if (cx_rd64le(p) > INT64_MAX)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF key '%.*s' = %llu is too large", g->path,
                           (int)(k->key_len > 128 ? 128 : k->key_len), k->key, (unsigned long long)cx_rd64le(p));
        *v = (int64_t)cx_rd64le(p);
        break;
    case CX_GT_I64: *v = (int64_t)cx_rd64le(p); break;
    default: return wrong_type(g, k, "an integer");
    }
    return CIRCUITS_OK;
}

int cx_gguf_kv_float(const cx_gguf *g, const cx_gguf_kv *k, double *v)
{
    const uint8_t *p = g->p + k->at;
    if (k->type == CX_GT_F32) {
        uint32_t u = cx_rd32le(p);
        float f;
        memcpy(&f, &u, 4);
        *v = f;
    } else if (k->type == CX_GT_F64) {
        uint64_t u = cx_rd64le(p);
        memcpy(v, &u, 8);
    } else {
        return wrong_type(g, k, "a float");
    }
    return CIRCUITS_OK;
}

int cx_gguf_kv_bool(const cx_gguf *g, const cx_gguf_kv *k, bool *v)
{
    if (k->type != CX_GT_BOOL) return wrong_type(g, k, "a bool");
    *v = g->p[k->at] != 0;
    return CIRCUITS_OK;
}

int cx_gguf_kv_string(const cx_gguf *g, const cx_gguf_kv *k, const char **s, size_t *n)
{
    if (k->type != CX_GT_STRING) return wrong_type(g, k, "a string");
    *n = (size_t)cx_rd64le(g->p + k->at);
    *s = (const char *)g->p + k->at + 8;
    return CIRCUITS_OK;
}

/* ---- tensor infos ---- */

/* ggml's type names (ggml.h), for the refusal of the types that are not read */
static const char *ggml_type_name(uint32_t t)
{
    static const char *const names[] = {
        [0] = "F32",      [1] = "F16",      [2] = "Q4_0",     [3] = "Q4_1",    [4] = "Q4_2 (removed)",
        [5] = "Q4_3 (removed)", [6] = "Q5_0", [7] = "Q5_1",   [8] = "Q8_0",    [9] = "Q8_1",
        [10] = "Q2_K",    [11] = "Q3_K",    [12] = "Q4_K",    [13] = "Q5_K",   [14] = "Q6_K",
        [15] = "Q8_K",    [16] = "IQ2_XXS", [17] = "IQ2_XS",  [18] = "IQ3_XXS", [19] = "IQ1_S",
        [20] = "IQ4_NL",  [21] = "IQ3_S",   [22] = "IQ2_S",   [23] = "IQ4_XS", [24] = "I8",
        [25] = "I16",     [26] = "I32",     [27] = "I64",     [28] = "F64",    [29] = "IQ1_M",
        [30] = "BF16",    [31] = "Q4_0_4_4 (removed)", [32] = "Q4_0_4_8 (removed)", [33] = "Q4_0_8_8 (removed)",
        [34] = "TQ1_0",   [35] = "TQ2_0",   [39] = "MXFP4",   [40] = "NVFP4",  [41] = "Q1_0",
        [42] = "Q2_0",
    };
    return t < CX_COUNT(names) && names[t] ? names[t] : NULL;
}

typedef struct span {
    size_t begin, end, index;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

static int cmp_name(const void *a, const void *b)
{
    const cx_st_tensor *x = *(const cx_st_tensor *const *)a, *y = *(const cx_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int alignment_of(const cx_gguf *g, size_t *align)
{
    *align = CX_GGUF_DEFAULT_ALIGNMENT;
    const cx_gguf_kv *k = cx_gguf_find(g, "general.alignment");
    if (!k) return CIRCUITS_OK;
    if (k->type != CX_GT_U32) return wrong_type(g, k, "a u32");
    uint32_t a = cx_rd32le(g->p + k->at);
    if (a == 0 || (a & (a - 1)))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: general.alignment %u is not a power of two", g->path, a);
    *align = a;
    return CIRCUITS_OK;
}

/* One tensor info at the cursor into t (name, dtype, shape, byte size; data offset in *offset). */
static int read_info(cx_gguf_cursor *c, cx_st_tensor *t, uint64_t *offset, uint64_t i)
{
    const uint8_t *name;
    size_t nlen;
    int rc = cx_gguf_get_string(c, &name, &nlen, "a tensor name");
    if (rc) return rc;
    if (nlen == 0 || nlen > 255 || memchr(name, 0, nlen))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF tensor %llu: a name of %zu bytes (1 to 255, no NUL byte)", c->path,
                       (unsigned long long)i, nlen);
    char nbuf[256];
    memcpy(nbuf, name, nlen);
    nbuf[nlen] = '\0';
    uint32_t n_dims, type;
    if ((rc = get_u32(c, &n_dims, nbuf))) return rc;
    if (n_dims > CX_GGUF_MAX_DIMS)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF tensor '%s' has %u dimensions (at most %d)", c->path, nbuf, n_dims,
                       CX_GGUF_MAX_DIMS);
    int64_t ne[CX_GGUF_MAX_DIMS] = {1, 1, 1, 1};
    size_t numel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t v;
        if ((rc = get_u64(c, &v, nbuf))) return rc;
        if (v > (uint64_t)INT64_MAX || !cx_mul_size(numel, (size_t)v, &numel) || numel > (size_t)INT64_MAX)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF tensor '%s': the element count overflows (ne[%u] = %llu)",
                           c->path, nbuf, d, (unsigned long long)v);
        ne[d] = (int64_t)v;
    }
    if ((rc = get_u32(c, &type, nbuf)) || (rc = get_u64(c, offset, nbuf))) return rc;
    cx_dtype dt;
    const char *tn = ggml_type_name(type);
    if (!cx_dtype_from_public((int32_t)(type > INT32_MAX ? INT32_MAX : type), &dt)) {
        if (tn)
            return cx_fail(CIRCUITS_E_DTYPE, "%s: GGUF tensor '%s' has type %s, which is not supported", c->path, nbuf,
                           tn);
        return cx_fail(CIRCUITS_E_DTYPE, "%s: GGUF tensor '%s' has unknown type %u", c->path, nbuf, type);
    }
    size_t row;
    int64_t block = 1;
    cx_dtype_blocks(dt, &block, NULL);
    if (!cx_dtype_row_bytes(dt, ne[0], &row))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF tensor '%s': ne[0] = %lld is not a multiple of %s's block of %lld",
                       c->path, nbuf, (long long)ne[0], tn, (long long)block);
    size_t nbytes = row;
    for (int d = 1; d < CX_GGUF_MAX_DIMS; d++)
        if (!cx_mul_size(nbytes, (size_t)ne[d], &nbytes))
            return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF tensor '%s': the byte size overflows", c->path, nbuf);
    t->dtype = dt;
    t->ndim = (int)n_dims;
    for (uint32_t d = 0; d < n_dims; d++) t->shape[d] = ne[n_dims - 1 - d]; /* row-major: ne reversed */
    t->numel = numel;
    t->nbytes = nbytes;
    t->name = cx_strdup(nbuf);
    if (!t->name) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", c->path);
    return CIRCUITS_OK;
}

/* Names unique, and no two tensors sharing bytes (empty ones occupy none). */
static int check_layout(const cx_gguf *g, cx_st_tensor *ts, span *spans, size_t n)
{
    const cx_st_tensor **order = cx_malloc((n ? n : 1) * sizeof *order);
    if (!order) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", g->path);
    for (size_t i = 0; i < n; i++) order[i] = &ts[i];
    qsort(order, n, sizeof *order, cmp_name);
    int rc = CIRCUITS_OK;
    for (size_t i = 1; i < n && !rc; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0)
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF tensor '%s' is defined twice", g->path, order[i]->name);
    cx_free(order);
    if (rc) return rc;
    qsort(spans, n, sizeof *spans, cmp_span);
    size_t max_end = 0, max_index = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (spans[i].begin < max_end)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF tensors '%s' and '%s' overlap", g->path, ts[max_index].name,
                           ts[spans[i].index].name);
        max_end = spans[i].end;
        max_index = spans[i].index;
    }
    return CIRCUITS_OK;
}

int cx_gguf_tensors(const cx_gguf *g, cx_st_set *set)
{
    size_t align;
    int rc = alignment_of(g, &align);
    if (rc) return rc;
    cx_gguf_cursor c = {g->p, g->infos_at, g->size, g->path};
    /* an info takes at least 24 bytes (name length, n_dims, type, offset) */
    if (g->n_tensors > (c.size - c.pos) / 24)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: truncated GGUF: %llu tensor infos cannot fit in the %zu bytes left",
                       g->path, (unsigned long long)g->n_tensors, c.size - c.pos);
    size_t n = (size_t)g->n_tensors;
    cx_st_tensor *grown = cx_realloc(set->tensors, (set->n_tensors + n + 1) * sizeof *set->tensors);
    if (!grown) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", g->path);
    set->tensors = grown;
    cx_st_tensor *ts = &set->tensors[set->n_tensors];
    uint64_t *offsets = cx_malloc((n ? n : 1) * sizeof *offsets);
    span *spans = cx_malloc((n ? n : 1) * sizeof *spans);
    if (!offsets || !spans) {
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory reading %s", g->path);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        memset(&ts[i], 0, sizeof ts[i]);
        rc = read_info(&c, &ts[i], &offsets[i], i);
        if (rc) goto done;
        ts[i].file = g->path;
        set->n_tensors++; /* owned by set from here (its name is freed by cx_st_close) */
    }
    /* the data section starts at the next multiple of the alignment */
    size_t data_at = c.pos + (align - c.pos % align) % align;
    if (n && data_at > g->size) {
        rc = cx_fail(CIRCUITS_E_FORMAT, "%s: truncated GGUF: the data section would start at %zu, past the end (%zu bytes)",
                     g->path, data_at, g->size);
        goto done;
    }
    size_t data_size = data_at <= g->size ? g->size - data_at : 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t off = offsets[i];
        if (off % align) {
            rc = cx_fail(CIRCUITS_E_FORMAT, "%s: GGUF tensor '%s': offset %llu is not a multiple of the alignment %zu",
                         g->path, ts[i].name, (unsigned long long)off, align);
            goto done;
        }
        if (off > data_size || ts[i].nbytes > data_size - off) {
            rc = cx_fail(CIRCUITS_E_FORMAT,
                         "%s: GGUF tensor '%s': %zu bytes at offset %llu run past the data section (%zu bytes)", g->path,
                         ts[i].name, ts[i].nbytes, (unsigned long long)off, data_size);
            goto done;
        }
        ts[i].data = g->p + data_at + off;
        spans[i] = (span){(size_t)off, (size_t)off + ts[i].nbytes, i};
    }
    rc = check_layout(g, ts, spans, n);
done:
    cx_free(offsets);
    cx_free(spans);
    return rc;
}

int cx_gguf_open(cx_st_set **out, cx_gguf *g, const char *path, cx_st_mode mode)
{
    *out = NULL;
    memset(g, 0, sizeof *g);
    cx_st_set *set = cx_calloc(1, sizeof *set);
    if (!set) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory opening %s", path);
    const cx_st_map *m;
    int rc = cx_st_add_image(set, path, mode, 24, "GGUF", &m);
    if (!rc) rc = cx_gguf_parse(g, m->base, m->size, m->path);
    if (!rc) rc = cx_gguf_tensors(g, set);
    if (rc) {
        cx_gguf_free(g);
        cx_st_close(set);
        return rc;
    }
    *out = set;
    return CIRCUITS_OK;
}

bool cx_gguf_is_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return false;
    char magic[4];
    struct stat st;
    bool yes = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && read(fd, magic, 4) == 4 && memcmp(magic, "GGUF", 4) == 0;
    close(fd);
    return yes;
}
