/* PLACEHOLDER (helper sae-load replaces this file): loading SAELens directories. */
#include "sae.h"

int circuits_sae_load(circuits_sae **out, const char *path)
{
    (void)path;
    if (out) *out = NULL;
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_sae_load: not built yet");
}
void circuits_sae_free(circuits_sae *sae) { (void)sae; }
int circuits_sae_get_info(const circuits_sae *sae, circuits_sae_info *info)
{
    (void)sae, (void)info;
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet");
}
int circuits_sae_weight(const circuits_sae *sae, const char *name, circuits_tensor *out)
{
    (void)sae, (void)name, (void)out;
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet");
}
int circuits_sae_encode(const circuits_sae *sae, const float *x, int64_t n, float *acts_pre, float *acts_post)
{
    (void)sae, (void)x, (void)n, (void)acts_pre, (void)acts_post;
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet");
}
int circuits_sae_decode(const circuits_sae *sae, const float *acts, int64_t n, const float *x, float *out)
{
    (void)sae, (void)acts, (void)n, (void)x, (void)out;
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "not built yet");
}
