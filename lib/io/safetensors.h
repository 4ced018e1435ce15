/* Fully validated safetensors files (single or sharded), memory-mapped or read into memory. */
#ifndef CIRCUITS_SAFETENSORS_H
#define CIRCUITS_SAFETENSORS_H

#include "internal.h"

typedef enum cx_dtype {
    CX_DT_BOOL, CX_DT_U8, CX_DT_I8, CX_DT_F8_E5M2, CX_DT_F8_E4M3, CX_DT_I16, CX_DT_U16,
    CX_DT_F16, CX_DT_BF16, CX_DT_I32, CX_DT_U32, CX_DT_F32, CX_DT_F64, CX_DT_I64, CX_DT_U64,
    /* GGUF's block types (model/quant.h: sizes per block, dequantization); cx_dtype_size() is 0 */
    CX_DT_Q4_0, CX_DT_Q4_1, CX_DT_Q5_0, CX_DT_Q5_1, CX_DT_Q8_0, CX_DT_Q2_K, CX_DT_Q3_K, CX_DT_Q4_K, CX_DT_Q5_K,
    CX_DT_Q6_K
} cx_dtype;

#define CX_ST_MAX_DIMS 8
/* The JSON header may not exceed this (the reference implementation uses 100 MB too). */
#define CX_ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct cx_st_tensor {
    char *name;
    cx_dtype dtype;
    int ndim;
    int64_t shape[CX_ST_MAX_DIMS];
    size_t numel;
    const unsigned char *data; /* into the file's image (mapping or buffer); nbytes = numel * dtype size */
    size_t nbytes;
    const char *file;          /* path of the file holding it (for messages) */
    bool used;                 /* consumed by the loader (to find unexpected tensors) */
    bool live;                 /* a loaded model still reads it in place (model_load.c's release sweep) */
} cx_st_tensor;

/* One file's image: a read-only mapping, or (CX_ST_READ) a buffer of the library's allocator. */
typedef struct cx_st_map {
    char *path;
    void *base;
    size_t size;
    bool owned; /* base is a cx_malloc'd copy of the file, not a mapping */
} cx_st_map;

/* How a file's bytes are held. A mapping costs no memory of its own and no time, but a file
 * truncated while mapped makes the next access to the lost pages raise SIGBUS; a copy read into
 * memory costs the file's size in memory and the read, but nothing done to the file afterwards
 * can reach it. */
typedef enum cx_st_mode { CX_ST_MAP, CX_ST_READ } cx_st_mode;

typedef struct cx_st_set {
    cx_st_map *maps;
    size_t n_maps;
    cx_st_tensor *tensors;
    size_t n_tensors;
} cx_st_set;

size_t cx_dtype_size(cx_dtype dt);
const char *cx_dtype_name(cx_dtype dt);

/* Opens one safetensors file and validates its header entirely (mapped: cx_st_open with CX_ST_MAP). */
int cx_st_open_file(cx_st_set **out, const char *path);
int cx_st_open(cx_st_set **out, const char *path, cx_st_mode mode);
/* Opens model.safetensors.index.json and all the shards it names (in `dir`). */
int cx_st_open_index(cx_st_set **out, const char *dir, const char *index_path, cx_st_mode mode);
void cx_st_close(cx_st_set *set);
/* Maps (or reads) the regular file at path, of at least min_size bytes (else refused as a
 * truncated `kind` file), as one more image of set (*out; freed by cx_st_close). Its tensors are
 * the caller's to add (a GGUF file: io/gguf.c). */
int cx_st_add_image(cx_st_set *set, const char *path, cx_st_mode mode, size_t min_size, const char *kind,
                    const cx_st_map **out);
cx_st_tensor *cx_st_find(const cx_st_set *set, const char *name);
/* Gives the pages of [p, p + n) back to the system where they belong to a mapped image: its
 * page-aligned interior (the pages at either end may hold a neighbour's bytes). A later read
 * faults them in again from the file (a private read-only mapping), so this only costs time if
 * they are read again. Nothing for an image read into memory (CX_ST_READ): its pages are the
 * only copy. */
void cx_st_release(const cx_st_set *set, const void *p, size_t n);

/* Parses a header buffer (the JSON after the 8-byte length) for a data region of data_size
 * bytes starting at data. Exposed for the tests and fuzzers. */
int cx_st_parse_header(cx_st_set *set, const char *json, size_t json_len,
                       const unsigned char *data, size_t data_size, const char *path);

/* Parses a whole safetensors image (length, header, data) held in memory; tensors point into p,
 * which must outlive set. For the fuzzers and for files already in memory. */
int cx_st_parse_buffer(cx_st_set *set, const unsigned char *p, size_t size, const char *path);

/* Reads element i of a tensor as float (F32, F16, BF16 only). */
float cx_st_read_f32(const cx_st_tensor *t, size_t i);

#endif
