/* Tensor descriptor helpers shared by every folder (weights, hook points, caches, factors). */
#include "internal.h"

void cx_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i];
    }
}
