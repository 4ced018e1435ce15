/* The toy library behind toy.h (tests/abi/selftest.sh). TOY_PRIVATE_CHANGED changes only the
 * private definition of the opaque handle, which is not part of the ABI. */
#include "toy.h"

#include <stdlib.h>

struct toy_handle {
    int32_t level;
#ifdef TOY_PRIVATE_CHANGED
    double scratch[4];
#endif
};

void toy_options_init(toy_options *opts)
{
    opts->size = sizeof *opts;
    opts->level = 1;
}

int toy_point_get(const toy_handle *h, toy_point *out)
{
    out->x = (float)h->level;
    return TOY_OK;
}

int toy_create(toy_handle **out, const toy_options *opts)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return TOY_E_BAD;
    (*out)->level = (int32_t)opts->level;
    return TOY_OK;
}

#ifdef TOY_SIGNATURE_CHANGED
int toy_run(toy_handle *h, toy_fn fn, void *user_data, int64_t n)
#else
int toy_run(toy_handle *h, toy_fn fn, void *user_data, int32_t n)
#endif
{
    float x = (float)(h->level * n);
    return fn(&x, user_data);
}

#ifndef TOY_FUNCTION_REMOVED
void toy_free(toy_handle *h)
{
    free(h);
}
#endif

#ifdef TOY_FUNCTION_ADDED
int toy_count(const toy_handle *h)
{
    return h->level;
}
#endif
