/* PLACEHOLDER (helper sae-load replaces this file): SAELens's encode / decode pieces. */
#include "sae.h"

int cx_sae_input(const circuits_sae *s, float *x, int64_t n, float *coeff) { (void)s, (void)x, (void)n, (void)coeff; return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet"); }
int cx_sae_pre(const circuits_sae *s, const float *x, int64_t n, float *pre) { (void)s, (void)x, (void)n, (void)pre; return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet"); }
int cx_sae_post(const circuits_sae *s, const float *x, const float *pre, int64_t n, float *post) { (void)s, (void)x, (void)pre, (void)n, (void)post; return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet"); }
int cx_sae_decode(const circuits_sae *s, const float *post, int64_t n, float *out) { (void)s, (void)post, (void)n, (void)out; return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet"); }
int cx_sae_output(const circuits_sae *s, float *out, int64_t n, const float *coeff, const float *x_raw) { (void)s, (void)out, (void)n, (void)coeff, (void)x_raw; return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet"); }
