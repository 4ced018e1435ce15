/* PLACEHOLDER (a helper replaces this file). */
#include "internal.h"

void circuits_probe_options_init(circuits_probe_options *opts) { (void)opts; }
int circuits_probe_fit(circuits_probe **out, const float *X, int64_t n, int64_t d, const float *y, int64_t n_targets, const circuits_probe_options *opts) { (void)out; (void)X; (void)n; (void)d; (void)y; (void)n_targets; (void)opts; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_probe_fit: not built yet"); }
void circuits_probe_free(circuits_probe *probe) { (void)probe; }
int circuits_probe_get_info(const circuits_probe *probe, circuits_probe_info *info) { (void)probe; (void)info; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_probe_get_info: not built yet"); }
int circuits_probe_weights(const circuits_probe *probe, circuits_tensor *W, circuits_tensor *b) { (void)probe; (void)W; (void)b; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_probe_weights: not built yet"); }
int circuits_probe_predict(const circuits_probe *probe, const float *X, int64_t n, float *out) { (void)probe; (void)X; (void)n; (void)out; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_probe_predict: not built yet"); }
int circuits_probe_evaluate(const circuits_probe *probe, const float *X, int64_t n, const float *y, circuits_probe_score *score) { (void)probe; (void)X; (void)n; (void)y; (void)score; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_probe_evaluate: not built yet"); }
int circuits_probe_save(const circuits_probe *probe, const char *path) { (void)probe; (void)path; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_probe_save: not built yet"); }
int circuits_probe_load(circuits_probe **out, const char *path) { (void)out; (void)path; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_probe_load: not built yet"); }
int circuits_context_add_probe_monitor(circuits_context *ctx, const circuits_probe *probe, const char *name, circuits_probe_fn fn, void *user_data, circuits_hook_id *out_id) { (void)ctx; (void)probe; (void)name; (void)fn; (void)user_data; (void)out_id; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_context_add_probe_monitor: not built yet"); }
