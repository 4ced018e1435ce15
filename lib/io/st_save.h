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

/* The file image (*out, cx_malloc'd, *size bytes) of tensors[0 .. n) and the string pairs
 * meta[0 .. 2 n_meta) (key, value, key, value, ...): the one serializer (job units travel as it). */
int cx_st_image(const cx_st_out *tensors, size_t n, const char *const *meta, size_t n_meta, unsigned char **out,
                size_t *size, const char *fn);

/* Writes bytes to a temporary file beside path and renames it over path: a failure (or a killed
 * process) leaves no partial file at path and an older one intact. fn names the public function. */
int cx_write_atomic(const char *path, const void *bytes, size_t n, const char *fn);

/* cx_st_image written to path with cx_write_atomic. */
int cx_st_write(const char *path, const cx_st_out *tensors, size_t n, const char *const *meta, size_t n_meta,
                const char *fn);

/* The __metadata__ object of the (already validated) safetensors image map as a new reference
 * (*out; json_decref it), or NULL in *out when the file has none. */
int cx_st_metadata(const cx_st_map *map, json_t **out, const char *fn);

#endif
