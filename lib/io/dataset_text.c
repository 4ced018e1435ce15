/* Text datasets (dataset_text.h): lines read through a buffer of our own (never the whole file),
 * each document tokenized alone, joined by EOS, cut into rows. The rule and how it compares
 * with TransformerLens's tokenize_and_concatenate: docs/jobs.md "Datasets". */
#include "dataset_text.h"
#include "json_load.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* ---- lines ---- */
typedef struct line_reader {
    int fd;
    const char *path, *fn;
    char *buf;
    size_t cap, start, end, scan; /* data buf[start, end); no break in buf[start, scan) */
    bool eof;
    bool universal;               /* .txt: "\r\n" and "\r" end lines too (Python's universal newlines) */
    int64_t line_no;              /* of the line last returned, from 1 */
} line_reader;

/* Reads more bytes after buf[end] (moving the pending line to the front, growing the buffer). */
static int fill(line_reader *r)
{
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->scan -= r->start;
        r->start = 0;
    }
    if (r->end == r->cap) { /* next_line refuses a line past the limit before the buffer outgrows it */
        size_t cap = r->cap * 2 > CX_DS_MAX_LINE + 2 ? CX_DS_MAX_LINE + 2 : r->cap * 2;
        char *b = cx_realloc(r->buf, cap);
        if (!b) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory reading line %lld of %s", r->fn,
                               (long long)r->line_no + 1, r->path);
        r->buf = b;
        r->cap = cap;
    }
    for (;;) {
        ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return cx_fail(CIRCUITS_E_IO, "%s: cannot read %s: %s", r->fn, r->path, strerror(errno));
        if (n == 0) r->eof = true;
        r->end += (size_t)n;
        return CIRCUITS_OK;
    }
}

/* The next line (without its break) in *s, *n: 1; 0 at the end; or an error. */
static int next_line(line_reader *r, const char **s, size_t *n)
{
    for (;;) {
        size_t i = r->scan;
        while (i < r->end && r->buf[i] != '\n' && !(r->universal && r->buf[i] == '\r')) i++;
        r->scan = i;
        if (i < r->end) {
            size_t next = i + 1;
            if (r->buf[i] == '\r') {
                if (i + 1 == r->end && !r->eof) { /* is it "\r\n"? */
                    int rc = fill(r);
                    if (rc) return rc;
                    continue;
                }
                if (i + 1 < r->end && r->buf[i + 1] == '\n') next++;
            }
            if (i - r->start > CX_DS_MAX_LINE) break;
            *s = r->buf + r->start;
            *n = i - r->start;
            r->start = r->scan = next;
            r->line_no++;
            return 1;
        }
        if (r->end - r->start > CX_DS_MAX_LINE) break;
        if (r->eof) {
            if (r->start == r->end) return 0; /* a final break ends the last line: no empty one after it */
            *s = r->buf + r->start;
            *n = r->end - r->start;
            r->start = r->scan = r->end;
            r->line_no++;
            return 1;
        }
        int rc = fill(r);
        if (rc) return rc;
    }
    return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: line %lld is longer than %zu bytes", r->fn, r->path,
                   (long long)r->line_no + 1, CX_DS_MAX_LINE);
}

/* ---- rows ---- */
typedef struct row_builder {
    const circuits_dataset_options *o;
    int32_t bos, eos;
    int32_t *rows;     /* [cap_rows, seq_len] */
    int64_t n_rows, cap_rows, pending; /* tokens in the row being filled (after its BOS) */
    int64_t n_docs;
    const char *path, *fn;
} row_builder;

static bool full(const row_builder *b) { return b->o->max_rows > 0 && b->n_rows >= b->o->max_rows; }

static int push(row_builder *b, int32_t t)
{
    int64_t L = b->o->seq_len, bos = b->o->prepend_bos;
    if (full(b)) return CIRCUITS_OK;
    if (b->pending == 0 && b->n_rows == b->cap_rows) {
        int64_t cap = b->cap_rows ? b->cap_rows * 2 : 64;
        if (b->o->max_rows > 0 && cap > b->o->max_rows) cap = b->o->max_rows;
        size_t bytes;
        int32_t *rows = NULL;
        if (cx_mul_size((size_t)cap, (size_t)L * sizeof *rows, &bytes)) rows = cx_realloc(b->rows, bytes);
        if (!rows) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory holding %lld rows of %s", b->fn,
                                  (long long)cap, b->path);
        b->rows = rows;
        b->cap_rows = cap;
    }
    int32_t *row = b->rows + b->n_rows * L;
    if (b->pending == 0 && bos) row[0] = b->bos;
    row[bos + b->pending++] = t;
    if (bos + b->pending == L) {
        b->n_rows++;
        b->pending = 0;
    }
    return CIRCUITS_OK;
}

/* One document: EOS before it unless it is the first, then its tokens. */
static int add_document(row_builder *b, const char *text, size_t len, int32_t **ids, size_t *cap)
{
    circuits_encode_options eo;
    circuits_encode_options_init(&eo);
    eo.prepend_bos = 0; /* no special tokens around a document: the EOS join is ours */
    size_t n = 0, want = len + 16; /* tokens rarely outnumber bytes: a retry below when they do */
    int rc;
    for (;;) {
        if (*cap < want) {
            size_t c = want > *cap * 2 ? want : *cap * 2;
            int32_t *p = c <= SIZE_MAX / sizeof *p ? cx_realloc(*ids, c * sizeof *p) : NULL;
            if (!p) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory tokenizing document %lld of %s", b->fn,
                                   (long long)b->n_docs + 1, b->path);
            *ids = p;
            *cap = c;
        }
        rc = circuits_tokenizer_encode(b->o->tokenizer, text, len, &eo, *ids, *cap, &n);
        if (rc != CIRCUITS_E_RANGE || n <= *cap) break;
        want = n;
    }
    if (rc) return rc;
    if (b->n_docs++ > 0 && (rc = push(b, b->eos))) return rc;
    for (size_t i = 0; i < n && !rc && !full(b); i++) rc = push(b, (*ids)[i]);
    return rc;
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_INTEGER: case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    default: return "a string";
    }
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return false;
    return true;
}

/* A .jsonl line's document: the string field column (copied into *doc, the parsed value freed). */
static int jsonl_document(const line_reader *r, const char *s, size_t n, const char *column, json_t **root)
{
    json_error_t err;
    bool oom = false;
    *root = cx_json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err, &oom);
    if (oom) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory parsing line %lld of %s", r->fn,
                            (long long)r->line_no, r->path);
    if (!*root)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: line %lld is not valid JSON (column %d): %s", r->fn, r->path,
                       (long long)r->line_no, err.column, err.text);
    if (!json_is_object(*root))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: line %lld is %s, not a JSON object", r->fn, r->path,
                       (long long)r->line_no, json_type_name(*root));
    json_t *v = json_object_get(*root, column);
    if (!v)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: line %lld has no field '%s' (option column)", r->fn, r->path,
                       (long long)r->line_no, column);
    if (!json_is_string(v))
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: line %lld: field '%s' is %s, not a string", r->fn, r->path,
                       (long long)r->line_no, column, json_type_name(v));
    return CIRCUITS_OK;
}

int cx_dataset_text_rows(const char *path, bool jsonl, const circuits_dataset_options *o, int32_t **rows,
                         int64_t *n_rows, const char *fn)
{
    *rows = NULL;
    *n_rows = 0;
    row_builder b = {.o = o, .path = path, .fn = fn};
    b.eos = circuits_tokenizer_eos_id(o->tokenizer);
    b.bos = circuits_tokenizer_bos_id(o->tokenizer);
    if (b.eos < 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: the tokenizer has no EOS token, which joins the documents of a "
                       "text dataset", fn);
    if (o->prepend_bos && b.bos < 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: prepend_bos 1, but the tokenizer has no BOS token (set prepend_bos "
                       "0 for rows without one)", fn);
    line_reader r = {.path = path, .fn = fn, .universal = !jsonl, .cap = 1 << 16};
    r.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r.fd < 0) return cx_fail(CIRCUITS_E_IO, "%s: cannot open %s: %s", fn, path, strerror(errno));
    r.buf = cx_malloc(r.cap);
    int32_t *ids = NULL;
    size_t cap_ids = 0;
    int rc = r.buf ? CIRCUITS_OK : cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory reading %s", fn, path);
    while (!rc && !full(&b)) {
        const char *s = NULL;
        size_t n = 0;
        int got = next_line(&r, &s, &n);
        if (got <= 0) {
            rc = got;
            break;
        }
        if (!jsonl) {
            rc = add_document(&b, s, n, &ids, &cap_ids);
            continue;
        }
        if (blank(s, n)) continue;
        json_t *root = NULL;
        rc = jsonl_document(&r, s, n, o->column, &root);
        if (!rc) {
            json_t *v = json_object_get(root, o->column);
            rc = add_document(&b, json_string_value(v), json_string_length(v), &ids, &cap_ids);
        }
        json_decref(root);
    }
    close(r.fd);
    cx_free(r.buf);
    cx_free(ids);
    if (!rc && b.n_rows == 0)
        rc = cx_fail(CIRCUITS_E_SHAPE, "%s: %s: its %lld documents make no whole row of %lld tokens%s", fn, path,
                     (long long)b.n_docs, (long long)o->seq_len, o->prepend_bos ? " (a BOS and seq_len - 1 tokens)" : "");
    if (rc) {
        cx_free(b.rows);
        return rc;
    }
    *rows = b.rows;
    *n_rows = b.n_rows;
    return CIRCUITS_OK;
}
