/* Products with weights kept in their stored dtype (model/quant.h): out = in @ W^T where W's rows
 * are GGUF blocks, F16 or BF16. The rows of W are cut into tiles over the pool; each task
 * dequantizes its tile into fp32 scratch and multiplies it with one single-threaded sgemm, so
 * the arithmetic is the fp32 product of the dequantized weights. */
#include "kernels.h"
#include "pool.h"
#include "quant.h"

#include <cblas.h>
#include <string.h>

enum { QTILE = 64 }; /* rows of W dequantized at once by a task */

typedef struct qjob {
    float *out;
    int64_t ldo, ldi, M, r0;
    const float *in, *bias;
    const cx_qmat *W;
    bool accumulate;
} qjob;

/* Rows t0 .. t0+nt of the output without a tile: each block of each row dequantized into 256
 * floats on the stack (a block holds at most 256 values). */
static void slow_rows(const qjob *j, int64_t t0, int64_t nt)
{
    const cx_qmat *W = j->W;
    int64_t bv;
    size_t bb;
    cx_dtype_blocks(W->dtype, &bv, &bb);
    float blk[256];
    for (int64_t r = t0; r < t0 + nt; r++) {
        int64_t lr = j->r0 + r, sr = W->row_map ? W->row_map[lr] : lr;
        const uint8_t *row = W->data + (size_t)sr * W->row_bytes;
        for (int64_t i = 0; i < j->M; i++) {
            float *o = j->out + i * j->ldo + r;
            if (!j->accumulate) *o = j->bias ? j->bias[r] : 0.0f;
        }
        for (int64_t b = 0; b < W->cols / bv; b++) {
            cx_dequantize_row(W->dtype, row + (size_t)b * bb, blk, bv);
            for (int64_t i = 0; i < j->M; i++) {
                const float *x = j->in + i * j->ldi + b * bv;
                float acc = 0.0f;
                for (int64_t k = 0; k < bv; k++) acc += x[k] * blk[k];
                j->out[i * j->ldo + r] += acc;
            }
        }
    }
}

static void qtask(void *arg, int64_t begin, int64_t end)
{
    const qjob *j = arg;
    int64_t K = j->W->cols;
    float *tile = cx_malloc((size_t)QTILE * (size_t)K * sizeof *tile);
    for (int64_t t0 = begin; t0 < end; t0 += QTILE) {
        int64_t nt = end - t0 < QTILE ? end - t0 : QTILE;
        if (!tile) { /* no scratch: block by block through a stack buffer (slow, correct) */
            slow_rows(j, t0, nt);
            continue;
        }
        for (int64_t r = 0; r < nt; r++) cx_qmat_row(j->W, j->r0 + t0 + r, tile + r * K);
        float *o = j->out + t0;
        if (!j->accumulate)
            for (int64_t i = 0; i < j->M; i++) {
                if (j->bias) memcpy(o + i * j->ldo, j->bias + t0, (size_t)nt * sizeof *o);
                else memset(o + i * j->ldo, 0, (size_t)nt * sizeof *o);
            }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)j->M, (blasint)nt, (blasint)K, 1.0f, j->in,
                    (blasint)j->ldi, tile, (blasint)K, 1.0f, o, (blasint)j->ldo);
    }
    cx_free(tile);
}

void cx_qmatmul(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, const cx_qmat *W, int64_t r0,
                int64_t n, const float *bias, bool accumulate)
{
    if (M == 0 || n == 0) return;
    qjob j = {.out = out, .ldo = ldo, .ldi = ldi, .M = M, .r0 = r0, .in = in, .bias = bias, .W = W,
              .accumulate = accumulate};
    cx_parallel_for(n, QTILE, qtask, &j);
}
