/* circuits_dataset: token rows and per-row columns, from .npy, .safetensors or text
 * (io/dataset_text.c), every column int32 and owned; the digest (docs/jobs.md "Datasets"). */
#include "dataset_text.h"
#include "job.h"
#include "npy.h"

#include <stdio.h>
#include <string.h>

/* The columns a job reads, and the widths they must have (0: the dataset's pos). */
static const struct { const char *name; int64_t width; } KNOWN[] = {
    {"corrupted", 0}, {"answer", 1}, {"wrong", 1}, {"position", 1}};

enum { MAX_NAME = 255 };

void circuits_dataset_options_init(circuits_dataset_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->seq_len = 128;
    opts->prepend_bos = 1;
}

const cx_ds_column *cx_dataset_find(const circuits_dataset *ds, const char *name)
{
    for (size_t i = 0; i < ds->n_cols; i++)
        if (strcmp(ds->cols[i].name, name) == 0) return &ds->cols[i];
    return NULL;
}

void circuits_dataset_free(circuits_dataset *ds)
{
    if (!ds) return;
    for (size_t i = 0; i < ds->n_cols; i++) {
        cx_free(ds->cols[i].name);
        cx_free(ds->cols[i].values);
    }
    cx_free(ds->cols);
    cx_free(ds);
}

/* A failure of a shared reader (the file mapping, the safetensors parser) with fn in front. */
static int named(int rc, const char *fn)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", circuits_last_error());
    size_t n = strlen(fn);
    if (strncmp(msg, fn, n) == 0 && msg[n] == ':') return rc;
    return cx_fail(rc, "%s: %s", fn, msg);
}

/* A dataset owning tokens [n_rows, pos] (freed here on failure). */
static int make(circuits_dataset **out, int32_t *tokens, int64_t n_rows, int64_t pos, const char *fn)
{
    circuits_dataset *ds = cx_calloc(1, sizeof *ds);
    if (ds) ds->cols = cx_calloc(1, sizeof *ds->cols);
    char *name = cx_strdup("tokens");
    if (!ds || !ds->cols || !name) {
        cx_free(name);
        cx_free(tokens);
        circuits_dataset_free(ds);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory making a dataset of [%lld, %lld] tokens", fn,
                       (long long)n_rows, (long long)pos);
    }
    ds->n_rows = n_rows;
    ds->pos = pos;
    ds->cols[0] = (cx_ds_column){.name = name, .values = tokens, .width = pos};
    ds->n_cols = 1;
    *out = ds;
    return CIRCUITS_OK;
}

/* n_rows * width int32s, or NULL (overflow or out of memory). */
static int32_t *alloc_values(int64_t n_rows, int64_t width)
{
    size_t n;
    if (!cx_mul_size((size_t)n_rows, (size_t)width, &n) || !cx_mul_size(n, sizeof(int32_t), &n)) return NULL;
    return cx_malloc(n ? n : 1);
}

/* Integers stored as a safetensors dtype: their width and sign; false for other dtypes. */
static bool st_int(cx_dtype dt, int *size, bool *is_signed)
{
    switch (dt) {
    case CX_DT_I8: case CX_DT_U8: *size = 1; break;
    case CX_DT_I16: case CX_DT_U16: *size = 2; break;
    case CX_DT_I32: case CX_DT_U32: *size = 4; break;
    case CX_DT_I64: case CX_DT_U64: *size = 8; break;
    default: return false;
    }
    *is_signed = dt == CX_DT_I8 || dt == CX_DT_I16 || dt == CX_DT_I32 || dt == CX_DT_I64;
    return true;
}

/* A 2-D (or with allow_1d a 1-D: width 1) integer array of a file into int32 values [rows, width],
 * the first max_rows rows (0: all); what names it in messages ("path" or "path: tensor 'x'"). */
typedef struct int_array {
    const unsigned char *data;
    int itemsize;
    bool is_signed, big_endian;
    int ndim;
    const int64_t *shape;
} int_array;

static int array_to_i32(const int_array *a, bool allow_1d, int64_t max_rows, int32_t **out, int64_t *rows,
                        int64_t *width, const char *fn, const char *what)
{
    *out = NULL;
    if (a->ndim != 2 && !(allow_1d && a->ndim == 1)) {
        char shape[160] = "";
        int m = 0;
        for (int d = 0; d < a->ndim && m < 120; d++)
            m += snprintf(shape + m, sizeof shape - (size_t)m, "%s%lld", d ? ", " : "", (long long)a->shape[d]);
        return cx_fail(CIRCUITS_E_SHAPE, "%s: %s has shape [%s]: %s", fn, what, shape,
                       allow_1d ? "a column is [n_rows] or [n_rows, width]" : "tokens are [n_rows, pos]");
    }
    int64_t r = a->shape[0], w = a->ndim == 2 ? a->shape[1] : 1;
    if (r < 1 || w < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: %s has shape [%lld, %lld]: rows and columns must be at least 1", fn, what,
                       (long long)r, (long long)w);
    if (max_rows > 0 && r > max_rows) r = max_rows;
    int32_t *v = alloc_values(r, w);
    if (!v) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory reading %s ([%lld, %lld])", fn, what,
                           (long long)r, (long long)w);
    int rc = cx_ints_to_i32(a->data, (size_t)(r * w), a->itemsize, a->is_signed, a->big_endian, w, v, fn, what);
    if (rc) {
        cx_free(v);
        return rc;
    }
    *out = v;
    *rows = r;
    *width = w;
    return CIRCUITS_OK;
}

/* A .npy file's integer array (see array_to_i32). */
static int npy_to_i32(const char *path, bool allow_1d, int64_t max_rows, int32_t **out, int64_t *rows,
                      int64_t *width, const char *fn)
{
    *out = NULL;
    cx_st_set *set = cx_calloc(1, sizeof *set);
    if (!set) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory opening %s", fn, path);
    const cx_st_map *m;
    cx_npy a;
    int rc = cx_st_add_image(set, path, CX_ST_MAP, 10, ".npy", &m);
    if (rc) rc = named(rc, fn);
    if (!rc) rc = cx_npy_parse(&a, m->base, m->size, path, fn);
    if (!rc && a.fortran_order && a.ndim > 1)
        rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s is Fortran-ordered (fortran_order True): save it in C order "
                     "(np.save(path, np.ascontiguousarray(a)))", fn, path);
    if (!rc && a.kind != 'i' && a.kind != 'u') {
        char d[8];
        cx_npy_descr(&a, d);
        rc = cx_fail(CIRCUITS_E_DTYPE, "%s: %s holds dtype '%s': token ids and columns are integers "
                     "(|i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8, either byte order)", fn, path, d);
    }
    if (!rc) {
        int_array ia = {a.data, a.itemsize, a.kind == 'i', a.big_endian, a.ndim, a.shape};
        rc = array_to_i32(&ia, allow_1d, max_rows, out, rows, width, fn, path);
    }
    cx_st_close(set);
    return rc;
}

/* A safetensors tensor's integers (see array_to_i32). */
static int st_to_i32(const cx_st_tensor *t, bool allow_1d, int64_t max_rows, int32_t **out, int64_t *rows,
                     int64_t *width, const char *fn)
{
    char what[512];
    snprintf(what, sizeof what, "%s: tensor '%s'", t->file, t->name);
    int size;
    bool is_signed;
    if (!st_int(t->dtype, &size, &is_signed))
        return cx_fail(CIRCUITS_E_DTYPE, "%s: %s is %s: token ids and columns are integers (I8 .. I64, U8 .. U64)", fn,
                       what, cx_dtype_name(t->dtype));
    int_array ia = {t->data, size, is_signed, false, t->ndim, t->shape};
    return array_to_i32(&ia, allow_1d, max_rows, out, rows, width, fn, what);
}

static int check_name(const char *name, const char *fn)
{
    size_t n = strlen(name);
    if (n == 0 || n > MAX_NAME)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: a column name has 1 .. %d bytes, not %zu", fn, MAX_NAME, n);
    return CIRCUITS_OK;
}

/* The shape rule of the columns jobs read. */
static int check_known(const circuits_dataset *ds, const char *name, int64_t width, const char *fn, const char *what)
{
    for (size_t i = 0; i < CX_COUNT(KNOWN); i++) {
        if (strcmp(name, KNOWN[i].name) != 0) continue;
        int64_t want = KNOWN[i].width ? KNOWN[i].width : ds->pos;
        if (width != want)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: %s'%s' has width %lld: it is [n_rows, %lld]%s", fn, what, name,
                           (long long)width, (long long)want, KNOWN[i].width ? "" : " (the tokens' pos)");
    }
    return CIRCUITS_OK;
}

/* Adds or replaces column `name` with values [ds->n_rows, width], taking values (freed on failure);
 * a failure leaves ds as it was. */
static int put_column(circuits_dataset *ds, const char *name, int32_t *values, int64_t width, const char *fn)
{
    cx_ds_column *old = (cx_ds_column *)cx_dataset_find(ds, name);
    if (old) {
        cx_free(old->values);
        old->values = values;
        old->width = width;
        return CIRCUITS_OK;
    }
    char *copy = cx_strdup(name);
    cx_ds_column *cols = copy ? cx_realloc(ds->cols, (ds->n_cols + 1) * sizeof *cols) : NULL;
    if (!cols) {
        cx_free(copy);
        cx_free(values);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory adding column '%s'", fn, name);
    }
    ds->cols = cols;
    cols[ds->n_cols++] = (cx_ds_column){.name = copy, .values = values, .width = width};
    return CIRCUITS_OK;
}

/* The known columns a safetensors dataset holds. */
static int st_columns(circuits_dataset *ds, const cx_st_set *set, int64_t token_rows, int64_t max_rows, const char *fn)
{
    for (size_t i = 0; i < CX_COUNT(KNOWN); i++) {
        const cx_st_tensor *t = cx_st_find(set, KNOWN[i].name);
        if (!t) continue;
        if (t->ndim >= 1 && t->shape[0] != token_rows)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: %s: tensor '%s' has %lld rows, the tokens %lld", fn, t->file, t->name,
                           (long long)t->shape[0], (long long)token_rows);
        int32_t *v;
        int64_t rows, width;
        int rc = st_to_i32(t, KNOWN[i].width == 1, max_rows, &v, &rows, &width, fn);
        if (rc) return rc;
        char what[512];
        snprintf(what, sizeof what, "%s: tensor ", t->file);
        if ((rc = check_known(ds, KNOWN[i].name, width, fn, what)) || (rc = put_column(ds, KNOWN[i].name, v, width, fn))) {
            if (rc != CIRCUITS_E_OUT_OF_MEMORY) cx_free(v);
            return rc;
        }
    }
    return CIRCUITS_OK;
}

static int open_safetensors(circuits_dataset **out, const char *path, const circuits_dataset_options *o,
                            const char *fn)
{
    cx_st_set *set;
    int rc = cx_st_open(&set, path, CX_ST_MAP);
    if (rc) return named(rc, fn);
    const char *name = o->tensor ? o->tensor : "tokens";
    const cx_st_tensor *t = cx_st_find(set, name);
    int32_t *tok = NULL;
    int64_t rows = 0, pos = 0;
    if (!t) rc = cx_fail(CIRCUITS_E_TENSOR_MISSING, "%s: %s has no tensor '%s' (the token ids: option tensor)", fn, path, name);
    if (!rc) rc = st_to_i32(t, false, o->max_rows, &tok, &rows, &pos, fn);
    if (!rc) rc = make(out, tok, rows, pos, fn);
    if (!rc && (rc = st_columns(*out, set, t->shape[0], o->max_rows, fn))) {
        circuits_dataset_free(*out);
        *out = NULL;
    }
    cx_st_close(set);
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && strcmp(s + n - k, suffix) == 0;
}

int circuits_dataset_open(circuits_dataset **out, const char *path, const circuits_dataset_options *opts)
{
    static const char fn[] = "circuits_dataset_open";
    if (out) *out = NULL;
    if (!out || !path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out and path must not be NULL", fn);
    circuits_dataset_options o;
    circuits_dataset_options_init(&o);
    static const size_t versions[] = {sizeof(circuits_dataset_options)}; /* 0.9 */
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn))) return rc;
    if (o.max_rows < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: max_rows %lld is negative (0: every row)", fn, (long long)o.max_rows);
    if (ends_with(path, ".npy")) {
        int32_t *tok;
        int64_t rows, pos;
        if ((rc = npy_to_i32(path, false, o.max_rows, &tok, &rows, &pos, fn))) return rc;
        return make(out, tok, rows, pos, fn);
    }
    if (ends_with(path, ".safetensors")) return open_safetensors(out, path, &o, fn);
    bool txt = ends_with(path, ".txt"), jsonl = ends_with(path, ".jsonl");
    if (!txt && !jsonl)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s: unknown dataset extension (.npy, .safetensors, .txt, .jsonl)", fn,
                       path);
    if (o.prepend_bos != 0 && o.prepend_bos != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: prepend_bos %d is neither 0 nor 1", fn, o.prepend_bos);
    if (o.seq_len < 1 + o.prepend_bos || o.seq_len > (1 << 24))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: seq_len %lld is not in %d .. %d (a row holds at least one "
                       "token%s)", fn, (long long)o.seq_len, 1 + o.prepend_bos, 1 << 24, o.prepend_bos ? " after its BOS" : "");
    if (!o.tokenizer)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s is text: the option tokenizer is needed", fn, path);
    if (jsonl && !o.column) o.column = "text";
    int32_t *tok;
    int64_t rows;
    if ((rc = cx_dataset_text_rows(path, jsonl, &o, &tok, &rows, fn))) return rc;
    return make(out, tok, rows, o.seq_len, fn);
}

int circuits_dataset_from_tokens(circuits_dataset **out, const int32_t *tokens, int64_t n_rows, int64_t pos)
{
    static const char fn[] = "circuits_dataset_from_tokens";
    if (out) *out = NULL;
    if (!out || !tokens) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out and tokens must not be NULL", fn);
    if (n_rows < 1 || pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: tokens shape [%lld, %lld]: rows and positions must be at least 1", fn,
                       (long long)n_rows, (long long)pos);
    int32_t *v = alloc_values(n_rows, pos);
    if (!v) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory copying [%lld, %lld] tokens", fn,
                           (long long)n_rows, (long long)pos);
    memcpy(v, tokens, (size_t)n_rows * (size_t)pos * sizeof *v);
    return make(out, v, n_rows, pos, fn);
}

int circuits_dataset_set_column(circuits_dataset *ds, const char *name, const int32_t *values, int64_t n_rows,
                                int64_t width)
{
    static const char fn[] = "circuits_dataset_set_column";
    if (!ds || !name || !values) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ds, name and values must not be NULL", fn);
    int rc = check_name(name, fn);
    if (rc) return rc;
    if (strcmp(name, "tokens") == 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: 'tokens' cannot be replaced (make another dataset)", fn);
    if (n_rows != ds->n_rows || width < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: '%s' has shape [%lld, %lld]: it needs the dataset's %lld rows and a width "
                       "of at least 1", fn, name, (long long)n_rows, (long long)width, (long long)ds->n_rows);
    if ((rc = check_known(ds, name, width, fn, ""))) return rc;
    int32_t *v = alloc_values(n_rows, width);
    if (!v) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory copying column '%s' ([%lld, %lld])", fn, name,
                           (long long)n_rows, (long long)width);
    memcpy(v, values, (size_t)n_rows * (size_t)width * sizeof *v);
    return put_column(ds, name, v, width, fn);
}

int circuits_dataset_load_column(circuits_dataset *ds, const char *name, const char *path, const char *tensor)
{
    static const char fn[] = "circuits_dataset_load_column";
    if (!ds || !name || !path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ds, name and path must not be NULL", fn);
    int rc = check_name(name, fn);
    if (rc) return rc;
    if (strcmp(name, "tokens") == 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: 'tokens' cannot be replaced (make another dataset)", fn);
    int32_t *v = NULL;
    int64_t rows = 0, width = 0;
    char what[1100];
    if (ends_with(path, ".npy")) {
        rc = npy_to_i32(path, true, 0, &v, &rows, &width, fn);
        snprintf(what, sizeof what, "%s", path);
    } else if (ends_with(path, ".safetensors")) {
        cx_st_set *set;
        if ((rc = cx_st_open(&set, path, CX_ST_MAP))) return named(rc, fn);
        const char *tn = tensor ? tensor : name;
        const cx_st_tensor *t = cx_st_find(set, tn);
        if (!t) rc = cx_fail(CIRCUITS_E_TENSOR_MISSING, "%s: %s has no tensor '%s'", fn, path, tn);
        else rc = st_to_i32(t, true, 0, &v, &rows, &width, fn);
        snprintf(what, sizeof what, "%s: tensor '%s'", path, tn);
        cx_st_close(set);
    } else {
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s: a column is read from .npy or .safetensors", fn, path);
    }
    if (rc) return rc;
    if (rows != ds->n_rows) {
        cx_free(v);
        return cx_fail(CIRCUITS_E_SHAPE, "%s: %s has %lld rows, the dataset %lld", fn, what, (long long)rows,
                       (long long)ds->n_rows);
    }
    snprintf(what + strlen(what), sizeof what - strlen(what), " as ");
    if ((rc = check_known(ds, name, width, fn, what))) {
        cx_free(v);
        return rc;
    }
    return put_column(ds, name, v, width, fn);
}

int circuits_dataset_dims(const circuits_dataset *ds, int64_t *n_rows, int64_t *pos)
{
    if (!ds) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_dataset_dims: ds is NULL");
    if (n_rows) *n_rows = ds->n_rows;
    if (pos) *pos = ds->pos;
    return CIRCUITS_OK;
}

int circuits_dataset_column(const circuits_dataset *ds, const char *name, const int32_t **values, int64_t *width)
{
    static const char fn[] = "circuits_dataset_column";
    if (values) *values = NULL;
    if (width) *width = 0;
    if (!ds || !name) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ds and name must not be NULL", fn);
    const cx_ds_column *c = cx_dataset_find(ds, name);
    if (!c) return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: the dataset has no column '%s'", fn, name);
    if (values) *values = c->values;
    if (width) *width = c->width;
    return CIRCUITS_OK;
}

/* ---- the digest: SHA-256 of the canonical serialization (docs/jobs.md "Datasets") ----
 *   int64 n_rows, int64 pos, then per column in strcmp order of names: the name's bytes and a
 *   NUL, int64 width, the int32 values [n_rows, width] row-major; every integer little-endian. */
static int put_le(cx_sha256 *h, uint64_t v, int bytes)
{
    unsigned char b[8];
    for (int i = 0; i < bytes; i++) b[i] = (unsigned char)(v >> (8 * i));
    return cx_sha256_update(h, b, (size_t)bytes);
}

static int hash_values(cx_sha256 *h, const int32_t *v, size_t n)
{
    unsigned char buf[4096];
    int rc = CIRCUITS_OK;
    for (size_t i = 0; i < n && !rc;) {
        size_t k = 0;
        for (; k < sizeof buf / 4 && i < n; k++, i++)
            for (int b = 0; b < 4; b++) buf[4 * k + (size_t)b] = (unsigned char)((uint32_t)v[i] >> (8 * b));
        rc = cx_sha256_update(h, buf, 4 * k);
    }
    return rc;
}

int circuits_dataset_digest(const circuits_dataset *ds, char *out)
{
    static const char fn[] = "circuits_dataset_digest";
    if (!ds || !out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ds and out must not be NULL", fn);
    out[0] = '\0';
    cx_sha256 *h;
    int rc = cx_sha256_new(&h);
    if (rc) return rc;
    rc = put_le(h, (uint64_t)ds->n_rows, 8);
    if (!rc) rc = put_le(h, (uint64_t)ds->pos, 8);
    const char *prev = NULL; /* columns in name order without sorting a copy: n_cols is tiny */
    for (size_t k = 0; k < ds->n_cols && !rc; k++) {
        const cx_ds_column *c = NULL;
        for (size_t i = 0; i < ds->n_cols; i++)
            if ((!prev || strcmp(ds->cols[i].name, prev) > 0) && (!c || strcmp(ds->cols[i].name, c->name) < 0))
                c = &ds->cols[i];
        prev = c->name;
        rc = cx_sha256_update(h, c->name, strlen(c->name) + 1);
        if (!rc) rc = put_le(h, (uint64_t)c->width, 8);
        if (!rc) rc = hash_values(h, c->values, (size_t)ds->n_rows * (size_t)c->width);
    }
    if (rc) {
        cx_sha256_free(h);
        return rc;
    }
    return cx_sha256_final(h, out);
}
