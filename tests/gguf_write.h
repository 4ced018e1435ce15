/* A GGUF writer for tests (tests/test_gguf_bad.c, the fuzz seeds): key-values and tensors
 * written as llama.cpp lays them out, with the byte position of every field recorded, so a test
 * can build a valid file and then break exactly one field of it.
 *
 *   gw_file f; gw_init(&f);
 *   gw_kv_str(&f, "general.architecture", "llama"); gw_kv_u32(&f, "llama.block_count", 1); ...
 *   gw_tensor(&f, "token_embd.weight", 2, (int64_t[]){d_model, n_vocab}, GW_F32, data, bytes);
 *   gw_finish(&f);   -> f.buf, f.len; f.kv[i].type_at / value_at, f.t[i].ne_at / type_at / offset_at
 */
#ifndef CIRCUITS_GGUF_WRITE_H
#define CIRCUITS_GGUF_WRITE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { GW_U8 = 0, GW_I8, GW_U16, GW_I16, GW_U32, GW_I32, GW_F32T, GW_BOOL, GW_STRING, GW_ARRAY, GW_U64, GW_I64, GW_F64 };
enum { GW_F32 = 0, GW_F16 = 1, GW_Q8_0 = 8 }; /* ggml tensor types */

#define GW_MAX 64

typedef struct gw_kv {
    size_t type_at, value_at; /* positions in the finished file */
} gw_kv;

typedef struct gw_tensor_rec {
    char name[96];
    uint32_t n_dims, type;
    int64_t ne[4];
    const void *data;
    size_t bytes;
    size_t name_at, ndims_at, ne_at, type_at, offset_at, data_at; /* positions in the finished file */
    uint64_t offset;
} gw_tensor_rec;

typedef struct gw_file {
    /* the key-value section, built as it is added */
    uint8_t *kvbuf;
    size_t kvlen, kvcap;
    size_t kv_type_rel[GW_MAX], kv_value_rel[GW_MAX];
    size_t n_kv;
    gw_tensor_rec t[GW_MAX];
    size_t n_t;
    uint32_t alignment;
    /* the finished file */
    uint8_t *buf;
    size_t len;
    gw_kv kv[GW_MAX];
} gw_file;

static inline void gw_init(gw_file *f)
{
    memset(f, 0, sizeof *f);
    f->alignment = 32;
}

static inline void gw_free(gw_file *f)
{
    free(f->kvbuf);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

static inline void gw_put(uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
    if (*len + n > *cap) {
        size_t nc = (*cap ? *cap * 2 : 256);
        while (nc < *len + n) nc *= 2;
        uint8_t *g = realloc(*buf, nc);
        if (!g) abort(); /* test harness */
        *buf = g;
        *cap = nc;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

static inline void gw_le(uint8_t *out, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) out[i] = (uint8_t)(v >> (8 * i));
}

static inline void gw_kv_raw_str(gw_file *f, const char *s)
{
    uint8_t l[8];
    gw_le(l, strlen(s), 8);
    gw_put(&f->kvbuf, &f->kvlen, &f->kvcap, l, 8);
    gw_put(&f->kvbuf, &f->kvlen, &f->kvcap, s, strlen(s));
}

/* a key and its type; the value follows */
static inline void gw_key(gw_file *f, const char *key, uint32_t type)
{
    uint8_t t[4];
    gw_kv_raw_str(f, key);
    f->kv_type_rel[f->n_kv] = f->kvlen;
    gw_le(t, type, 4);
    gw_put(&f->kvbuf, &f->kvlen, &f->kvcap, t, 4);
    f->kv_value_rel[f->n_kv] = f->kvlen;
    f->n_kv++;
}

static inline void gw_kv_uint(gw_file *f, const char *key, uint32_t type, uint64_t v, int bytes)
{
    uint8_t b[8];
    gw_key(f, key, type);
    gw_le(b, v, bytes);
    gw_put(&f->kvbuf, &f->kvlen, &f->kvcap, b, (size_t)bytes);
}
static inline void gw_kv_u32(gw_file *f, const char *key, uint32_t v) { gw_kv_uint(f, key, GW_U32, v, 4); }
static inline void gw_kv_bool(gw_file *f, const char *key, int v) { gw_kv_uint(f, key, GW_BOOL, v ? 1 : 0, 1); }
static inline void gw_kv_f32(gw_file *f, const char *key, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    gw_kv_uint(f, key, GW_F32T, u, 4);
}
static inline void gw_kv_str(gw_file *f, const char *key, const char *s)
{
    gw_key(f, key, GW_STRING);
    gw_kv_raw_str(f, s);
}
/* an array of strings */
static inline void gw_kv_strs(gw_file *f, const char *key, const char *const *s, size_t n)
{
    uint8_t b[8];
    gw_key(f, key, GW_ARRAY);
    gw_le(b, GW_STRING, 4);
    gw_put(&f->kvbuf, &f->kvlen, &f->kvcap, b, 4);
    gw_le(b, n, 8);
    gw_put(&f->kvbuf, &f->kvlen, &f->kvcap, b, 8);
    for (size_t i = 0; i < n; i++) gw_kv_raw_str(f, s[i]);
}

/* A tensor of n_dims dimensions ne[0] (fastest) .. ; data of bytes bytes (copied at finish). */
static inline void gw_tensor(gw_file *f, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                             const void *data, size_t bytes)
{
    gw_tensor_rec *t = &f->t[f->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    for (uint32_t i = 0; i < 4; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    t->type = type;
    t->data = data;
    t->bytes = bytes;
}

/* Lays the file out: header, key-values, tensor infos, padding, data (each tensor aligned). */
static inline void gw_finish(gw_file *f)
{
    size_t cap = 0;
    uint8_t b[8];
    free(f->buf);
    f->buf = NULL;
    f->len = 0;
    gw_put(&f->buf, &f->len, &cap, "GGUF", 4);
    gw_le(b, 3, 4);
    gw_put(&f->buf, &f->len, &cap, b, 4);
    gw_le(b, f->n_t, 8);
    gw_put(&f->buf, &f->len, &cap, b, 8);
    gw_le(b, f->n_kv, 8);
    gw_put(&f->buf, &f->len, &cap, b, 8);
    size_t kv_at = f->len;
    gw_put(&f->buf, &f->len, &cap, f->kvbuf, f->kvlen);
    for (size_t i = 0; i < f->n_kv; i++) {
        f->kv[i].type_at = kv_at + f->kv_type_rel[i];
        f->kv[i].value_at = kv_at + f->kv_value_rel[i];
    }
    uint64_t off = 0;
    for (size_t i = 0; i < f->n_t; i++) {
        gw_tensor_rec *t = &f->t[i];
        t->name_at = f->len;
        gw_le(b, strlen(t->name), 8);
        gw_put(&f->buf, &f->len, &cap, b, 8);
        gw_put(&f->buf, &f->len, &cap, t->name, strlen(t->name));
        t->ndims_at = f->len;
        gw_le(b, t->n_dims, 4);
        gw_put(&f->buf, &f->len, &cap, b, 4);
        t->ne_at = f->len;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            gw_le(b, (uint64_t)t->ne[d], 8);
            gw_put(&f->buf, &f->len, &cap, b, 8);
        }
        t->type_at = f->len;
        gw_le(b, t->type, 4);
        gw_put(&f->buf, &f->len, &cap, b, 4);
        t->offset_at = f->len;
        t->offset = off;
        gw_le(b, off, 8);
        gw_put(&f->buf, &f->len, &cap, b, 8);
        off += (t->bytes + f->alignment - 1) / f->alignment * f->alignment;
    }
    static const uint8_t zeros[64];
    while (f->len % f->alignment) gw_put(&f->buf, &f->len, &cap, zeros, 1);
    size_t data_at = f->len;
    for (size_t i = 0; i < f->n_t; i++) {
        gw_tensor_rec *t = &f->t[i];
        t->data_at = data_at + t->offset;
        while (f->len < t->data_at) gw_put(&f->buf, &f->len, &cap, zeros, 1);
        gw_put(&f->buf, &f->len, &cap, t->data, t->bytes);
    }
    while (f->len % f->alignment) gw_put(&f->buf, &f->len, &cap, zeros, 1);
}

/* Overwrites n little-endian bytes of the finished file at pos with v. */
static inline void gw_patch(gw_file *f, size_t pos, uint64_t v, int n) { gw_le(f->buf + pos, v, n); }

static inline int gw_save(const gw_file *f, const char *path, size_t len)
{
    FILE *o = fopen(path, "wb");
    if (!o) return -1;
    size_t w = fwrite(f->buf, 1, len, o);
    return fclose(o) == 0 && w == len ? 0 : -1;
}

#endif
