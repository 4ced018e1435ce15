/* Products with weights kept in their stored dtype (model/quant.h): out = in @ W^T where W's rows
 * are GGUF blocks, F16 or BF16. Two ways, both the fp32 product of the dequantized weights up
 * to fp32 rounding (tests/test_quant.c):
 *   - few input rows (M <= FUSED_M) on a CPU with AVX2/FMA/F16C (run/qkernels_x86.c): each
 *     stored row is dequantized in registers and dotted with up to four input rows at once
 *     (FMA), so the weights are read once and never written out (generation);
 *   - otherwise the rows of W are split over the pool; each task dequantizes tiles of its rows
 *     (up to 2048 rows x 512 values) into fp32 scratch (vectorized when the CPU allows) and
 *     adds their product with single-threaded sgemm: prompt processing runs near sgemm's
 *     speed plus one dequantization of W per product.
 * bench/bench_qmatmul.c measures both against fp32 sgemm and llama.cpp (bench/README.md). */
#include "kernels.h"
#include "pool.h"
#include "qkernels.h"
#include "quant.h"

#include <cblas.h>
#include <string.h>

enum {
    FUSED_M = 8 /* at most this many input rows take the fused path (four at a time) */
};

typedef struct qjob {
    float *out;
    int64_t ldo, ldi, M, r0;
    const float *in, *bias;
    const cx_qmat *W;
    bool accumulate, simd;
    const float *xp; /* in, permuted for the fused kernel (cx_qk_permute), ld K; or NULL */
} qjob;

static const uint8_t *stored_row(const qjob *j, int64_t r)
{
    int64_t lr = j->r0 + r, sr = j->W->row_map ? j->W->row_map[lr] : lr;
    return j->W->data + (size_t)sr * j->W->row_bytes;
}

/* out[i, r] = its start (bias, 0, or itself) + sums */
static void finish(const qjob *j, int64_t r, int64_t i0, int m, const float *sums)
{
    for (int i = 0; i < m; i++) {
        float *o = j->out + (i0 + i) * j->ldo + r;
        *o = (j->accumulate ? *o : j->bias ? j->bias[r] : 0.0f) + sums[i];
    }
}

/* Fused rows: dequantize-and-dot, four input rows at a time. */
static void fused_task(void *arg, int64_t begin, int64_t end)
{
    const qjob *j = arg;
    float sums[4];
    const float *x = j->xp ? j->xp : j->in;
    int64_t ldx = j->xp ? j->W->cols : j->ldi;
    for (int64_t r = begin; r < end; r++) {
        const uint8_t *row = stored_row(j, r);
        for (int64_t i0 = 0; i0 < j->M; i0 += 4) {
            int m = j->M - i0 < 4 ? (int)(j->M - i0) : 4;
            cx_qk_dot_rows(j->W->dtype, row, j->W->cols, x + i0 * ldx, ldx, m, sums);
            finish(j, r, i0, m, sums);
        }
    }
}

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
        const uint8_t *row = stored_row(j, r);
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

/* The tile path. OpenBLAS packs both operands of every sgemm call, so the input (M x K, shared
 * by all tiles) is repacked once per call: tiles must be wide in rows of W. They are cut
 * along K instead to bound the scratch: a tile is up to TILE_ROWS rows x KSLICE values, each
 * call adds in[:, slice] @ tile^T to out (measured: 64-row tiles of whole rows left prompt
 * products ~25% behind fp32 sgemm on the dequantized matrix at M = 512). */
enum {
    KSLICE = 512,    /* values of a row per tile (a multiple of every block) */
    TILE_ROWS = 2048 /* rows per tile: 4 MiB of fp32 scratch per thread */
};

static void tile_task(void *arg, int64_t begin, int64_t end)
{
    const qjob *j = arg;
    int64_t K = j->W->cols, kslice = K < KSLICE ? K : KSLICE;
    int64_t rows = end - begin < TILE_ROWS ? end - begin : TILE_ROWS; /* no more scratch than the task's rows */
    float *tile = cx_malloc((size_t)rows * (size_t)kslice * sizeof *tile);
    for (int64_t t0 = begin; t0 < end; t0 += TILE_ROWS) {
        int64_t nt = end - t0 < TILE_ROWS ? end - t0 : TILE_ROWS;
        if (!tile) { /* no scratch: block by block through a stack buffer (slow, correct) */
            slow_rows(j, t0, nt);
            continue;
        }
        float *o = j->out + t0;
        if (!j->accumulate)
            for (int64_t i = 0; i < j->M; i++) {
                if (j->bias) memcpy(o + i * j->ldo, j->bias + t0, (size_t)nt * sizeof *o);
                else memset(o + i * j->ldo, 0, (size_t)nt * sizeof *o);
            }
        int64_t bv = 1;
        size_t bb = 0;
        cx_dtype_blocks(j->W->dtype, &bv, &bb);
        for (int64_t k0 = 0; k0 < K; k0 += kslice) {
            int64_t len = K - k0 < kslice ? K - k0 : kslice;
            for (int64_t r = 0; r < nt; r++) {
                const uint8_t *row = stored_row(j, t0 + r);
                if (j->simd) cx_qk_dequantize(j->W->dtype, row, k0, len, tile + r * len);
                else cx_dequantize_row(j->W->dtype, row + (size_t)(k0 / bv) * bb, tile + r * len, len);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)j->M, (blasint)nt, (blasint)len, 1.0f,
                        j->in + k0, (blasint)j->ldi, tile, (blasint)len, 1.0f, o, (blasint)j->ldo);
        }
    }
    cx_free(tile);
}

static void qmatmul_rows(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, const cx_qmat *W,
                         int64_t r0, int64_t n, const float *bias, bool accumulate)
{
    qjob j = {.out = out, .ldo = ldo, .ldi = ldi, .M = M, .r0 = r0, .in = in, .bias = bias, .W = W,
              .accumulate = accumulate, .simd = cx_qk_available()};
    if (j.simd && M <= FUSED_M) {
        float *xp = NULL;
        if (cx_qk_permuted(W->dtype)) {
            xp = cx_malloc((size_t)M * (size_t)W->cols * sizeof *xp);
            if (xp) cx_qk_permute(in, ldi, M, W->cols, xp);
        }
        if (xp || !cx_qk_permuted(W->dtype)) { /* (no memory for the permuted inputs: tiles) */
            j.xp = xp;
            cx_parallel_for(n, 16, fused_task, &j);
            cx_free(xp);
            return;
        }
    }
    cx_parallel_for(n, 64, tile_task, &j);
}

void cx_qmatmul(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t M, const cx_qmat *W, int64_t r0,
                int64_t n, const float *bias, bool accumulate)
{
    if (M == 0 || n == 0) return;
    int64_t rows = cx_gemm_group_rows(M); /* per-sequence mode (kernels.h): a sequence at a time */
    for (int64_t i = 0; i < M; i += rows)
        qmatmul_rows(out + i * ldo, ldo, in + i * ldi, ldi, rows, W, r0, n, bias, accumulate);
}
