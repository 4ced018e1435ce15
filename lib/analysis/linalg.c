/* Small dense helpers on weight views (linalg.h). */
#include "linalg.h"
#include "kernels.h"

void cx_mm(float *C, const float *X, bool tx, const float *Y, bool ty, int64_t M, int64_t K, int64_t N)
{
    cx_sgemm(tx, ty, M, N, K, 1.0f, X, (tx ? M : K), Y, (ty ? K : N), 0.0f, C, N);
}

/* dst [rows, cols] = t->data[offset + i * rs + j * cs] */
static void gather2(float *dst, const circuits_tensor *t, int64_t offset, int64_t rows, int64_t cols, int64_t rs,
                    int64_t cs)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[i * cols + j] = t->data[offset + i * rs + j * cs];
}

void cx_weight_dense(float *dst, const circuits_tensor *W)
{
    gather2(dst, W, 0, W->shape[0], W->shape[1], W->strides[0], W->strides[1]);
}

void cx_head_matrix(float *dst, const circuits_tensor *W, int64_t h, bool transpose)
{
    int64_t a = W->shape[1], b = W->shape[2];
    if (!transpose) gather2(dst, W, h * W->strides[0], a, b, W->strides[1], W->strides[2]);
    else gather2(dst, W, h * W->strides[0], b, a, W->strides[2], W->strides[1]);
}

void cx_weight_times(float *C, const circuits_tensor *W, const float *X, int64_t n)
{
    int64_t M = W->shape[0], K = W->shape[1];
    bool nt = W->strides[1] == 1 && W->strides[0] >= K, tr = W->strides[0] == 1 && W->strides[1] >= M;
    if (nt || tr)
        cx_sgemm(!nt, false, M, n, K, 1.0f, W->data, nt ? W->strides[0] : W->strides[1], X, n, 0.0f, C, n);
    else
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += (double)W->data[i * W->strides[0] + k * W->strides[1]] * X[k * n + j];
                C[i * n + j] = (float)s;
            }
}
