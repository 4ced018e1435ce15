/* Storage types of weights: GGUF's quantized blocks, F16, BF16 and F32, as cx_dtype values
 * (io/safetensors.h). Their sizes, their dequantization (bit-identical to the gguf package's
 * NumPy dequantizer, llama.cpp's gguf-py/gguf/quants.py), and matrices kept in them
 * (keep_stored_dtype): products that dequantize blocks on the fly and accumulate in fp32.
 * Files: model/quant.c (types, dequantization), run/qmatmul.c (products). */
#ifndef CIRCUITS_QUANT_H
#define CIRCUITS_QUANT_H

#include "internal.h"
#include "safetensors.h"

/* circuits_dtype (public numbering, ggml's) of a cx_dtype; -1 for one that is not a storage
 * type of weights (integers, F64, F8). */
int32_t cx_dtype_public(cx_dtype dt);
/* The cx_dtype of a circuits_dtype number; false if it is none. */
bool cx_dtype_from_public(int32_t dtype, cx_dtype *out);
/* Values per block and bytes per block (F32: 1 and 4; Q4_K: 256 and 144); false if dt is not a
 * storage type of weights. Either output may be NULL. */
bool cx_dtype_blocks(cx_dtype dt, int64_t *block_values, size_t *block_bytes);
/* Bytes holding n values of dt; false if dt is not a storage type, n is not a multiple of its
 * block, or the size overflows. */
bool cx_dtype_row_bytes(cx_dtype dt, int64_t n, size_t *bytes);
/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K or Q5_K block, from its 12 scale bytes
 * (gguf-py's Q4_K.get_scale_min): j < 4: sc = b[j] & 63, m = b[j + 4] & 63; j >= 4:
 * sc = (b[j + 4] & 15) | (b[j - 4] >> 2 & 0x30), m = (b[j + 4] >> 4) | (b[j] >> 2 & 0x30).
 * Inline: the products' kernels (run/qkernels_x86.c) call it per block. */
static inline void cx_k4_scale_min(const uint8_t *b, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = b[j] & 63;
        *m = b[j + 4] & 63;
    } else {
        *sc = (b[j + 4] & 0x0f) | ((b[j - 4] >> 2) & 0x30);
        *m = (b[j + 4] >> 4) | ((b[j] >> 2) & 0x30);
    }
}

/* dst[n] = the n values stored at src as dt (n a multiple of the block; the caller checked it). */
void cx_dequantize_row(cx_dtype dt, const void *src, float *dst, int64_t n);

/* A weight matrix kept in its stored dtype: `rows` logical rows of `cols` values, the contracted
 * dimension along each row (nn.Linear's [out, in]; GGUF's ne0 = in). Logical row r is stored
 * row row_map[r] (row_map NULL: r), at data + stored_row * row_bytes: the map undoes
 * llama.cpp's Q/K row permutation or picks GPT-NeoX's interleaved q/k/v rows without copying. */
typedef struct cx_qmat {
    cx_dtype dtype;
    int64_t rows, cols;
    const uint8_t *data;
    size_t row_bytes;
    const int32_t *row_map;
} cx_qmat;

/* Weight i of m, held as m->stored[i], dequantized into buf (its product of shape floats) in
 * TransformerLens's shape, contiguous: what its fp32 view would hold. */
int cx_qmat_read_weight(const circuits_model *m, size_t i, float *buf);

/* dst[cols] = logical row r of W, dequantized (an embedding lookup). */
void cx_qmat_row(const cx_qmat *W, int64_t r, float *dst);

/* out[M, n] (ld ldo) = bias[n] (or 0, or out itself if accumulate) + in[M, W->cols] (ld ldi)
 * @ (logical rows r0 .. r0+n-1 of W)^T. Blocks are dequantized on the fly, products accumulate
 * in fp32; the work is split over the library's pool. (run/qmatmul.c) */
void cx_qmatmul(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, const cx_qmat *W, int64_t r0,
                int64_t n, const float *bias, bool accumulate);

#endif
