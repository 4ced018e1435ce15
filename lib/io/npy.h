/* NumPy .npy files (format versions 1.0, 2.0, 3.0), parsed from memory and treated as hostile:
 * the header is parsed as the Python dict literal numpy writes ({'descr': '<i4', 'fortran_order':
 * False, 'shape': (3, 4), }), every key exactly once, the data region exactly the array's size.
 * Also the one integer converter: stored integers of any width, sign and byte order to int32,
 * range-checked (the datasets' .npy and safetensors columns share it). */
#ifndef CIRCUITS_NPY_H
#define CIRCUITS_NPY_H

#include "internal.h"

#define CX_NPY_MAX_DIMS 8
/* numpy itself refuses headers above 10000 bytes unless allow_pickle-like overrides; 1 MiB
 * leaves room for any shape while bounding what a hostile length can make us read. */
#define CX_NPY_MAX_HEADER (1u << 20)

typedef struct cx_npy {
    int version;        /* 1, 2 or 3 */
    char kind;          /* 'i' signed, 'u' unsigned, 'f' float, 'b' bool */
    int itemsize;       /* bytes per element */
    bool big_endian;
    bool fortran_order;
    int ndim;
    int64_t shape[CX_NPY_MAX_DIMS];
    size_t numel;
    const unsigned char *data; /* into the parsed image */
    size_t nbytes;             /* numel * itemsize */
} cx_npy;

/* Parses a whole .npy image p[0 .. size). Errors (CIRCUITS_E_FORMAT for malformed files,
 * CIRCUITS_E_DTYPE for a dtype numpy does not write or this parser does not know) name fn and
 * path. Fortran order is parsed, not refused: the caller decides. */
int cx_npy_parse(cx_npy *out, const unsigned char *p, size_t size, const char *path, const char *fn);

/* descr as numpy spells it ("<i4") into buf[8]. */
void cx_npy_descr(const cx_npy *a, char *buf);

/* numel stored integers (itemsize 1, 2, 4 or 8; signed or not; big- or little-endian) into
 * out as int32. A value outside int32 is CIRCUITS_E_RANGE naming fn, what (a file, a tensor),
 * and its row and column in a [numel / width, width] view. */
int cx_ints_to_i32(const unsigned char *src, size_t numel, int itemsize, bool is_signed, bool big_endian,
                   int64_t width, int32_t *out, const char *fn, const char *what);

#endif
