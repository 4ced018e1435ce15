/* Safetensors files the library writes (feature statistics, probes): the writer, and the
 * __metadata__ object of a file read back (the reader, safetensors.h, validates the header but
 * keeps no metadata). Data little-endian, tensors in the order given, the header padded with
 * spaces to a multiple of 8 as the reference implementation writes it. */
#ifndef CIRCUITS_ST_SAVE_H
#define CIRCUITS_ST_SAVE_H

#include "safetensors.h"

#include <jansson.h>

/* One tensor to write: name, dtype (F32, F64, I32, I64), shape, contiguous data. */
typedef struct cx_st_out {
    const char *name;
    cx_dtype dtype;
    int ndim;
    int64_t shape[CX_ST_MAX_DIMS];
    const void *data;
} cx_st_out;

/* Writes tensors[0 .. n) and the string pairs meta[0 .. 2 n_meta) (key, value, key, value, ...)
 * to path. On failure nothing is left at path (a partial file is removed); fn names the public
 * function in messages. */
int cx_st_write(const char *path, const cx_st_out *tensors, size_t n, const char *const *meta, size_t n_meta,
                const char *fn);

/* The __metadata__ object of the (already validated) safetensors image map as a new reference
 * (*out; json_decref it), or NULL in *out when the file has none. */
int cx_st_metadata(const cx_st_map *map, json_t **out, const char *fn);

#endif
