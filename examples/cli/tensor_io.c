/* Writers for NumPy .npy (one tensor) and safetensors (many) files of fp32 activations.
 *   .npy 1.0: "\x93NUMPY" 1 0, a little-endian uint16 header length, a Python dict literal
 *   padded with spaces and ended by '\n' so that the data starts at a multiple of 64, the data.
 *   safetensors: a little-endian uint64 header length, a JSON header {name: {dtype, shape,
 *   data_offsets}, "__metadata__": {str: str}} padded with spaces to a multiple of 8, the data. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool little_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static size_t numel(const named_tensor *t)
{
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

/* fp32 data, little-endian whatever the host */
static bool write_f32(FILE *f, const float *x, size_t n)
{
    if (little_endian()) return fwrite(x, sizeof *x, n, f) == n;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
        if (fwrite(b, 1, 4, f) != 4) return false;
    }
    return true;
}

static int finish(FILE *f, const char *path, bool ok)
{
    int err = ok ? 0 : errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        remove(path);
        return failure("cannot write '%s': %s", path, err ? strerror(err) : "write error");
    }
    return 0;
}

int write_npy(const char *path, const named_tensor *t)
{
    char shape[256] = "";
    int m = 0;
    for (int d = 0; d < t->ndim; d++)
        m += snprintf(shape + m, sizeof shape - (size_t)m, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    char dict[512];
    int k = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s%s), }", shape,
                     t->ndim == 1 ? "," : "");
    size_t total = 10 + (size_t)k + 1; /* magic, version, length, dict, '\n' */
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)k + pad + 1;
    FILE *f = fopen(path, "wb");
    if (!f) return failure("cannot create '%s': %s", path, strerror(errno));
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    bool ok = fwrite(head, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)k, f) == (size_t)k;
    for (size_t i = 0; i < pad && ok; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && write_f32(f, t->data, numel(t));
    return finish(f, path, ok);
}

/* The JSON header into a growing buffer (names are hook names: no escaping needed beyond '"'
 * and '\\', which json_str handles through a memory stream). */
int write_safetensors(const char *path, const named_tensor *t, size_t n, const char *const *meta, size_t n_meta)
{
    char *hdr = NULL;
    size_t hdr_len = 0;
    FILE *h = open_memstream(&hdr, &hdr_len);
    if (!h) return failure("out of memory");
    fputc('{', h);
    bool first = true;
    if (n_meta) {
        fputs("\"__metadata__\":{", h);
        for (size_t i = 0; i < n_meta; i++) {
            if (i) fputc(',', h);
            json_cstr(h, meta[2 * i]);
            fputc(':', h);
            json_cstr(h, meta[2 * i + 1]);
        }
        fputc('}', h);
        first = false;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t bytes = numel(&t[i]) * sizeof(float);
        if (!first) fputc(',', h);
        first = false;
        json_cstr(h, t[i].name);
        fputs(":{\"dtype\":\"F32\",\"shape\":[", h);
        for (int d = 0; d < t[i].ndim; d++) fprintf(h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        fprintf(h, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        off += bytes;
    }
    fputc('}', h);
    while ((ftell(h) % 8) != 0) fputc(' ', h);
    if (fclose(h) != 0) {
        free(hdr);
        return failure("out of memory");
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(hdr);
        return failure("cannot create '%s': %s", path, strerror(errno));
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hdr_len >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hdr_len, f) == hdr_len;
    for (size_t i = 0; i < n && ok; i++) ok = write_f32(f, t[i].data, numel(&t[i]));
    free(hdr);
    return finish(f, path, ok);
}

/* ---- reading a .npy vector (--steer) ---- */

/* The value of key ('descr', 'fortran_order', 'shape') in the header dict, or NULL. */
static const char *dict_value(const char *dict, const char *key)
{
    char q[32];
    snprintf(q, sizeof q, "'%s':", key);
    const char *p = strstr(dict, q);
    if (!p) return NULL;
    p += strlen(q);
    while (*p == ' ') p++;
    return p;
}

int read_npy_vector(const char *path, float **data, int64_t *n)
{
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return failure("cannot open '%s': %s", path, strerror(errno));
    unsigned char head[12];
    char *dict = NULL;
    int rc = 0;
    size_t hlen = 0;
    if (fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY", 6) != 0 || head[6] < 1 || head[6] > 3) {
        rc = failure("'%s' is not a NumPy .npy file", path);
        goto done;
    }
    hlen = (size_t)head[8] | (size_t)head[9] << 8;
    if (head[6] >= 2) { /* a 4-byte header length */
        if (fread(head + 10, 1, 2, f) != 2) {
            rc = failure("'%s': truncated .npy header", path);
            goto done;
        }
        hlen |= (size_t)head[10] << 16 | (size_t)head[11] << 24;
    }
    if (hlen > (1u << 20) || !(dict = malloc(hlen + 1)) || fread(dict, 1, hlen, f) != hlen) {
        rc = failure("'%s': bad or truncated .npy header", path);
        goto done;
    }
    dict[hlen] = '\0';
    const char *descr = dict_value(dict, "descr"), *fo = dict_value(dict, "fortran_order"),
               *shape = dict_value(dict, "shape");
    bool f8 = descr && strncmp(descr, "'<f8'", 5) == 0;
    if (!descr || (strncmp(descr, "'<f4'", 5) != 0 && !f8)) {
        rc = failure("'%s': a steering vector must be float32 ('<f4') or float64 ('<f8')", path);
        goto done;
    }
    if (!fo || strncmp(fo, "False", 5) != 0) {
        rc = failure("'%s': Fortran order is not supported", path);
        goto done;
    }
    long long len = -1, extra = -1;
    if (!shape || sscanf(shape, "(%lld,%lld", &len, &extra) < 1 || extra >= 0 || len < 1 || len > (1LL << 31)) {
        rc = failure("'%s': a steering vector is one-dimensional, shape (d,)", path);
        goto done;
    }
    size_t es = f8 ? 8 : 4;
    unsigned char *raw = malloc((size_t)len * es);
    *data = malloc((size_t)len * sizeof(float));
    if (!raw || !*data) {
        free(raw);
        rc = failure("out of memory");
        goto done;
    }
    if (fread(raw, es, (size_t)len, f) != (size_t)len || fgetc(f) != EOF) {
        free(raw);
        rc = failure("'%s': the data is not %lld values", path, len);
        goto done;
    }
    for (long long i = 0; i < len; i++) { /* little-endian whatever the host */
        uint64_t u = 0;
        for (size_t b = 0; b < es; b++) u |= (uint64_t)raw[i * (long long)es + (long long)b] << (8 * b);
        if (f8) {
            double d;
            memcpy(&d, &u, 8);
            (*data)[i] = (float)d;
        } else {
            uint32_t w = (uint32_t)u;
            memcpy(&(*data)[i], &w, 4);
        }
    }
    free(raw);
    *n = len;
done:
    if (rc) {
        free(*data);
        *data = NULL;
    }
    free(dict);
    fclose(f);
    return rc;
}

/* ---- reading a .npy array (probe-fit) ---- */

int read_npy(const char *path, float **out, int *ndim, int64_t shape[4])
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return failure("cannot open '%s': %s", path, strerror(errno));
    unsigned char pre[12];
    char *h = NULL;
    float *x = NULL;
    int rc = 0;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        rc = failure("'%s' is not a .npy file", path);
        goto done;
    }
    size_t hl = pre[8] | (size_t)pre[9] << 8;
    if (pre[6] >= 2) { /* versions 2 and 3: a uint32 header length */
        if (fread(pre + 10, 1, 2, f) != 2) {
            rc = failure("'%s': truncated header", path);
            goto done;
        }
        hl = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    }
    if (hl > 65536 || !(h = calloc(hl + 1, 1)) || fread(h, 1, hl, f) != hl) {
        rc = failure("'%s': a bad or truncated header", path);
        goto done;
    }
    const char *descr = dict_value(h, "descr"), *fo = dict_value(h, "fortran_order"), *sh = dict_value(h, "shape");
    if (!descr || !fo || !sh || *sh != '(') {
        rc = failure("'%s': the header lacks descr, fortran_order or shape", path);
        goto done;
    }
    if (strncmp(fo, "False", 5) != 0) {
        rc = failure("'%s': Fortran-ordered arrays are not supported (save np.ascontiguousarray(a))", path);
        goto done;
    }
    static const struct { const char *descr; int size; char kind; } types[] = {
        {"'<f4'", 4, 'f'}, {"'<f8'", 8, 'f'}, {"'<i4'", 4, 'i'}, {"'<i8'", 8, 'i'}, {"'|b1'", 1, 'b'}, {"'|u1'", 1, 'u'}};
    int t = -1;
    for (int i = 0; i < 6; i++)
        if (strncmp(descr, types[i].descr, strlen(types[i].descr)) == 0) t = i;
    if (t < 0 || !little_endian()) {
        rc = failure("'%s': dtype %.8s is not supported (float32/64, int32/64, bool, uint8)", path, descr);
        goto done;
    }
    *ndim = 0;
    size_t n = 1;
    const char *p = sh + 1;
    while (*p && *p != ')') {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || *ndim == 4 || (v && n > SIZE_MAX / 8 / (size_t)v)) {
            rc = failure("'%s': a bad shape (at most 4 dims)", path);
            goto done;
        }
        shape[(*ndim)++] = v;
        n *= (size_t)v;
        p = end;
    }
    size_t es = (size_t)types[t].size;
    unsigned char *raw = malloc(n * es + 1);
    x = malloc(n * sizeof(float) + 1);
    if (!raw || !x || fread(raw, es, n, f) != n) {
        free(raw);
        rc = failure("'%s': the data is truncated (or out of memory)", path);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char *q = raw + i * es;
        switch (types[t].kind) {
        case 'f':
            if (es == 4) memcpy(&x[i], q, 4);
            else {
                double d;
                memcpy(&d, q, 8);
                x[i] = (float)d;
            }
            break;
        case 'i':
            if (es == 4) {
                int32_t v;
                memcpy(&v, q, 4);
                x[i] = (float)v;
            } else {
                int64_t v;
                memcpy(&v, q, 8);
                x[i] = (float)v;
            }
            break;
        default: x[i] = (float)q[0]; break;
        }
    }
    free(raw);
    *out = x;
    x = NULL;
done:
    free(x);
    free(h);
    fclose(f);
    return rc;
}
