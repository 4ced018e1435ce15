/* PLACEHOLDER (a helper replaces this file). */
#include "sae.h"

void circuits_feature_stats_options_init(circuits_feature_stats_options *opts) { (void)opts; }
int circuits_feature_stats_create(circuits_feature_stats **out, const circuits_sae *sae, const circuits_feature_stats_options *opts) { (void)out; (void)sae; (void)opts; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_feature_stats_create: not built yet"); }
void circuits_feature_stats_free(circuits_feature_stats *st) { (void)st; }
int circuits_context_feature_stats_add(circuits_context *ctx, circuits_feature_stats *st, const int32_t *tokens, int64_t batch, int64_t pos) { (void)ctx; (void)st; (void)tokens; (void)batch; (void)pos; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_context_feature_stats_add: not built yet"); }
int circuits_feature_stats_dims(const circuits_feature_stats *st, int64_t *n_tokens, int64_t *d_sae, int32_t *top_k, int32_t *window) { (void)st; (void)n_tokens; (void)d_sae; (void)top_k; (void)window; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_feature_stats_dims: not built yet"); }
int circuits_feature_stats_get(const circuits_feature_stats *st, float *frequency, float *mean, float *max) { (void)st; (void)frequency; (void)mean; (void)max; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_feature_stats_get: not built yet"); }
int circuits_feature_stats_top(const circuits_feature_stats *st, int64_t latent, float *values, int64_t *rows, int64_t *positions, int32_t *windows, int32_t *count) { (void)st; (void)latent; (void)values; (void)rows; (void)positions; (void)windows; (void)count; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_feature_stats_top: not built yet"); }
int circuits_feature_stats_save(const circuits_feature_stats *st, const char *path) { (void)st; (void)path; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_feature_stats_save: not built yet"); }
int circuits_feature_stats_load(circuits_feature_stats **out, const char *path) { (void)out; (void)path; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_feature_stats_load: not built yet"); }
