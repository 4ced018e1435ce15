/* lib/run/fastmath.h as the builds without function clones see it (clang, sanitizers, non-x86:
 * CX_HOT empty). A merge once left a second copy of exp_poly_d inside that branch, so every such
 * build failed to compile while the default gcc x86-64 build (which skips the branch) passed.
 * Here the branch is forced (the macro the sanitizer builds define), and the functions checked. */
#ifndef __SANITIZE_THREAD__
#define __SANITIZE_THREAD__ 1
#endif
#include "fastmath.h"

#include <math.h>
#include <stdio.h>

int main(void)
{
    int fails = 0;
    for (double x = -700.0; x <= 0.0; x += 0.37) {
        double want = exp(x), got = exp_poly_d(x);
        if (fabs(got - want) > 1e-14 * want) fails++, fprintf(stderr, "exp_poly_d(%g) = %.17g, want %.17g\n", x, got, want);
    }
    for (float x = -80.0f; x <= 80.0f; x += 0.31f) {
        float want = expf(x), got = exp_poly(x);
        if (fabsf(got - want) > 1e-6f * want) fails++, fprintf(stderr, "exp_poly(%g) = %g, want %g\n", x, got, want);
    }
    if (!isnan(exp_poly_d(NAN))) fails++, fprintf(stderr, "exp_poly_d(NaN) = %g, want NaN\n", exp_poly_d(NAN));
    if (exp_poly_d(-INFINITY) != 0.0) fails++, fprintf(stderr, "exp_poly_d(-inf) = %g, want 0\n", exp_poly_d(-INFINITY));
    printf("test_fastmath_fallback: %s\n", fails ? "FAILED" : "ok");
    return fails != 0;
}
