/* NumPy .npy images (npy.h): the header dict parsed as the literal numpy writes, the data checked
 * against the shape; and the one integer-to-int32 converter. */
#include "npy.h"

#include <stdio.h>
#include <string.h>

typedef struct hdr_parser {
    const char *s, *end;
    const char *path, *fn;
} hdr_parser;

static void skip_ws(hdr_parser *h)
{
    while (h->s < h->end && (*h->s == ' ' || *h->s == '\t' || *h->s == '\n' || *h->s == '\r')) h->s++;
}

static bool eat(hdr_parser *h, char c)
{
    skip_ws(h);
    if (h->s < h->end && *h->s == c) {
        h->s++;
        return true;
    }
    return false;
}

/* A quoted string ('...' or "..."; no escapes: numpy's keys and descrs have none) into buf. */
static bool quoted(hdr_parser *h, char *buf, size_t cap)
{
    skip_ws(h);
    if (h->s >= h->end || (*h->s != '\'' && *h->s != '"')) return false;
    char q = *h->s++;
    size_t n = 0;
    while (h->s < h->end && *h->s != q) {
        if (*h->s == '\\' || n + 1 >= cap) return false;
        buf[n++] = *h->s++;
    }
    if (h->s >= h->end) return false;
    h->s++;
    buf[n] = '\0';
    return true;
}

static int bad(const hdr_parser *h, const char *what)
{
    return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: not a .npy file numpy can read: %s", h->fn, h->path, what);
}

static int parse_descr(hdr_parser *h, cx_npy *a)
{
    char d[16];
    if (!quoted(h, d, sizeof d)) return bad(h, "'descr' is not a simple dtype string (structured dtypes are not arrays of numbers)");
    size_t n = strlen(d);
    if (n < 3 || (d[0] != '<' && d[0] != '>' && d[0] != '|' && d[0] != '=')) goto unknown;
    a->kind = d[1];
    int size = 0;
    for (size_t i = 2; i < n; i++) {
        if (d[i] < '0' || d[i] > '9' || size > 100) goto unknown;
        size = size * 10 + (d[i] - '0');
    }
    a->itemsize = size;
    bool ok = false;
    switch (a->kind) {
    case 'i': case 'u': ok = size == 1 || size == 2 || size == 4 || size == 8; break;
    case 'f': ok = size == 2 || size == 4 || size == 8; break;
    case 'b': ok = size == 1; break;
    default: break;
    }
    if (!ok) goto unknown;
    /* '|' (not applicable) only for one-byte items; '=' is native order, which numpy writes
     * as '<' or '>': read as this (little-endian) host's, as numpy would here */
    if (d[0] == '|' && size != 1) goto unknown;
    a->big_endian = d[0] == '>';
    return CIRCUITS_OK;
unknown:
    return cx_fail(CIRCUITS_E_DTYPE, "%s: %s: dtype '%s' is not one this reader knows (integers |i1 <i2 <i4 <i8 |u1 "
                   "<u2 <u4 <u8, either byte order; floats <f2 <f4 <f8; |b1)", h->fn, h->path, d);
}

static int parse_shape(hdr_parser *h, cx_npy *a)
{
    if (!eat(h, '(')) return bad(h, "'shape' is not a tuple");
    a->ndim = 0;
    size_t numel = 1;
    for (;;) {
        skip_ws(h);
        if (eat(h, ')')) break;
        if (a->ndim == CX_NPY_MAX_DIMS)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: %s: more than %d dimensions", h->fn, h->path, CX_NPY_MAX_DIMS);
        int64_t v = 0;
        const char *start = h->s;
        while (h->s < h->end && *h->s >= '0' && *h->s <= '9') {
            if (v > (INT64_MAX - 9) / 10) return bad(h, "a dimension of 'shape' is too large");
            v = v * 10 + (*h->s++ - '0');
        }
        if (h->s == start) return bad(h, "'shape' holds something other than non-negative integers");
        if (h->s < h->end && *h->s == 'L') h->s++; /* Python 2's long literals, as numpy still accepts */
        if (!cx_mul_size(numel, (size_t)v, &numel)) return bad(h, "the shape's element count overflows");
        a->shape[a->ndim++] = v;
        if (!eat(h, ',')) {
            if (!eat(h, ')')) return bad(h, "'shape' is not a tuple of integers");
            if (a->ndim == 1) return bad(h, "'shape' (n) is not a tuple (numpy writes (n,))");
            break;
        }
    }
    a->numel = numel;
    return CIRCUITS_OK;
}

static int parse_dict(hdr_parser *h, cx_npy *a)
{
    if (!eat(h, '{')) return bad(h, "the header is not a dict literal");
    bool seen_descr = false, seen_fo = false, seen_shape = false;
    int rc;
    for (;;) {
        if (eat(h, '}')) break;
        char key[32];
        if (!quoted(h, key, sizeof key)) return bad(h, "a key of the header dict is not a quoted name");
        if (!eat(h, ':')) return bad(h, "a key of the header dict is not followed by ':'");
        bool *seen = strcmp(key, "descr") == 0 ? &seen_descr : strcmp(key, "fortran_order") == 0 ? &seen_fo
                   : strcmp(key, "shape") == 0 ? &seen_shape : NULL;
        if (!seen)
            return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: the header has a key '%s' (a .npy header has exactly 'descr', "
                           "'fortran_order' and 'shape')", h->fn, h->path, key);
        if (*seen) return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: the header has '%s' twice", h->fn, h->path, key);
        *seen = true;
        if (seen == &seen_descr) {
            if ((rc = parse_descr(h, a))) return rc;
        } else if (seen == &seen_shape) {
            if ((rc = parse_shape(h, a))) return rc;
        } else {
            skip_ws(h);
            if (h->end - h->s >= 4 && memcmp(h->s, "True", 4) == 0) {
                a->fortran_order = true;
                h->s += 4;
            } else if (h->end - h->s >= 5 && memcmp(h->s, "False", 5) == 0) {
                a->fortran_order = false;
                h->s += 5;
            } else {
                return bad(h, "'fortran_order' is neither True nor False");
            }
        }
        if (!eat(h, ',')) {
            if (!eat(h, '}')) return bad(h, "the header dict is not closed by '}'");
            break;
        }
    }
    skip_ws(h);
    if (h->s != h->end) return bad(h, "the header has something after its dict");
    if (!seen_descr || !seen_fo || !seen_shape)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: the header lacks '%s'", h->fn, h->path,
                       !seen_descr ? "descr" : !seen_fo ? "fortran_order" : "shape");
    return CIRCUITS_OK;
}

int cx_npy_parse(cx_npy *out, const unsigned char *p, size_t size, const char *path, const char *fn)
{
    memset(out, 0, sizeof *out);
    hdr_parser h = {.path = path, .fn = fn};
    if (size < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s is not a .npy file (no \\x93NUMPY magic)", fn, path);
    int major = p[6];
    if (major < 1 || major > 3 || p[7] != 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s: .npy format version %d.%d (this reader knows 1.0, 2.0, 3.0)", fn,
                       path, major, p[7]);
    size_t pre = major == 1 ? 10 : 12, hlen;
    if (size < pre) return bad(&h, "the file ends inside its header length");
    hlen = major == 1 ? (size_t)p[8] | (size_t)p[9] << 8
                      : (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
    if (hlen > CX_NPY_MAX_HEADER)
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: a header of %zu bytes (at most %u)", fn, path, hlen, CX_NPY_MAX_HEADER);
    if (hlen > size - pre) return bad(&h, "the file ends inside its header");
    const char *s = (const char *)p + pre;
    for (size_t i = 0; i < hlen; i++)
        if (s[i] == '\0') return bad(&h, "the header holds a NUL byte");
    h.s = s;
    h.end = s + hlen;
    out->version = major;
    int rc = parse_dict(&h, out);
    if (rc) return rc;
    size_t data = pre + hlen;
    if (!cx_mul_size(out->numel, (size_t)out->itemsize, &out->nbytes))
        return bad(&h, "the array's size in bytes overflows");
    if (size - data != out->nbytes) {
        char d[8];
        cx_npy_descr(out, d);
        return cx_fail(CIRCUITS_E_FORMAT, "%s: %s: %zu bytes of data, but %zu elements of %s take %zu", fn, path,
                       size - data, out->numel, d, out->nbytes);
    }
    out->data = p + data;
    return CIRCUITS_OK;
}

void cx_npy_descr(const cx_npy *a, char *buf)
{
    snprintf(buf, 8, "%c%c%d", a->itemsize == 1 ? '|' : a->big_endian ? '>' : '<', a->kind, a->itemsize);
}

int cx_ints_to_i32(const unsigned char *src, size_t numel, int itemsize, bool is_signed, bool big_endian,
                   int64_t width, int32_t *out, const char *fn, const char *what)
{
    for (size_t i = 0; i < numel; i++) {
        const unsigned char *q = src + i * (size_t)itemsize;
        uint64_t u = 0;
        for (int b = 0; b < itemsize; b++) u |= (uint64_t)q[big_endian ? itemsize - 1 - b : b] << (8 * b);
        bool neg = is_signed && itemsize < 8 ? (u >> (8 * itemsize - 1)) & 1 : is_signed && (u >> 63);
        int64_t v;
        if (neg) {
            if (itemsize < 8) u |= ~(uint64_t)0 << (8 * itemsize); /* sign-extend */
            v = (int64_t)u;
        } else if (u > (uint64_t)INT32_MAX) {
            v = INT64_MAX; /* out of range whatever its exact value */
        } else {
            v = (int64_t)u;
        }
        if (v < INT32_MIN || v > INT32_MAX) {
            char val[32];
            if (neg) snprintf(val, sizeof val, "%lld", (long long)(int64_t)u);
            else snprintf(val, sizeof val, "%llu", (unsigned long long)u);
            return cx_fail(CIRCUITS_E_RANGE, "%s: %s: the value %s at row %lld, column %lld does not fit in int32", fn,
                           what, val, (long long)((int64_t)i / width), (long long)((int64_t)i % width));
        }
        out[i] = (int32_t)v;
    }
    return CIRCUITS_OK;
}
