/* GGUF files (llama.cpp's format, versions 2 and 3, little-endian): the header, the key-value
 * metadata and the tensor infos, all validated before use; the tensors presented as a cx_st_set
 * (io/safetensors.h: names, dtype, row-major shape, data) so loading cuts weight views from them
 * as from safetensors. One parser for every reader: the model loader (io/model_load.c), its config
 * (io/config_gguf.c) and the tokenizer (text/tokenizer_gguf.c).
 *
 * Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv times {string key, u32 type, value};
 * n_tensors times {string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset}; padding to
 * general.alignment (default 32); the data section, each tensor at data + offset. A string is a
 * u64 length + bytes, an array a u32 element type + u64 count + the elements. ne[0] is the
 * fastest-varying dimension: the row-major shape is ne reversed. */
#ifndef CIRCUITS_GGUF_H
#define CIRCUITS_GGUF_H

#include "internal.h"
#include "safetensors.h"

/* value types of the metadata */
enum {
    CX_GT_U8 = 0, CX_GT_I8, CX_GT_U16, CX_GT_I16, CX_GT_U32, CX_GT_I32, CX_GT_F32, CX_GT_BOOL, CX_GT_STRING,
    CX_GT_ARRAY, CX_GT_U64, CX_GT_I64, CX_GT_F64, CX_GT_COUNT
};

#define CX_GGUF_MAX_KV 65536u
#define CX_GGUF_MAX_KEY 65536u
#define CX_GGUF_MAX_DIMS 4
#define CX_GGUF_DEFAULT_ALIGNMENT 32u

/* One key-value pair; the key points into the file (not NUL-terminated). */
typedef struct cx_gguf_kv {
    const char *key;
    size_t key_len;
    uint32_t type, elem; /* elem: an array's element type */
    uint64_t count;      /* an array's element count */
    size_t at;           /* offset of the value (of an array's first element) */
} cx_gguf_kv;

/* A parsed header over an image of size bytes at p (which must outlive it). */
typedef struct cx_gguf {
    const uint8_t *p;
    size_t size;
    const char *path; /* messages */
    uint32_t version;
    uint64_t n_tensors;
    cx_gguf_kv *kvs;
    size_t n_kv;
    size_t infos_at; /* where the tensor infos start */
} cx_gguf;

/* A read position in the image, every read bounds-checked. */
typedef struct cx_gguf_cursor {
    const uint8_t *p;
    size_t pos, size;
    const char *path;
} cx_gguf_cursor;

static inline uint32_t cx_rd32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t cx_rd64le(const uint8_t *p) { return (uint64_t)cx_rd32le(p) | (uint64_t)cx_rd32le(p + 4) << 32; }

/* A string at the cursor (what: for messages); s points into the image. */
int cx_gguf_get_string(cx_gguf_cursor *c, const uint8_t **s, size_t *n, const char *what);
/* "u32", "string", ... of a value type */
const char *cx_gguf_type_name(uint32_t type);

/* Parses the header and every key-value pair of the image (each bounds-checked; duplicate keys,
 * nested arrays and unknown value types refused). g->kvs is owned: cx_gguf_free. */
int cx_gguf_parse(cx_gguf *g, const uint8_t *p, size_t size, const char *path);
void cx_gguf_free(cx_gguf *g);
/* The pair with this key, or NULL. */
const cx_gguf_kv *cx_gguf_find(const cx_gguf *g, const char *key);

/* Typed values of a pair, refused by key name when of another type. Integers of any integer type
 * (a u64 beyond INT64_MAX is refused); floats of f32 or f64. */
int cx_gguf_kv_int(const cx_gguf *g, const cx_gguf_kv *k, int64_t *v);
int cx_gguf_kv_float(const cx_gguf *g, const cx_gguf_kv *k, double *v);
int cx_gguf_kv_bool(const cx_gguf *g, const cx_gguf_kv *k, bool *v);
int cx_gguf_kv_string(const cx_gguf *g, const cx_gguf_kv *k, const char **s, size_t *n);

/* Reads the tensor infos of a parsed header and appends the tensors to set, pointing into the
 * image: general.alignment (a u32 power of two), every type known and a storage type of weights
 * (others refused by name), n_dims <= 4, ne[0] a multiple of the type's block, sizes without
 * overflow, offsets aligned, inside the data section and not overlapping, names unique. */
int cx_gguf_tensors(const cx_gguf *g, cx_st_set *set);

/* Opens a GGUF file (mapped, or read into memory): *set holds its tensors, *g its header (over
 * the set's image: free g before closing the set). */
int cx_gguf_open(cx_st_set **set, cx_gguf *g, const char *path, cx_st_mode mode);

/* Whether the file at path starts with the GGUF magic (a regular file). */
bool cx_gguf_is_file(const char *path);

#endif
