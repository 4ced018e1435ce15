/* PLACEHOLDER (a helper replaces this file). */
#include "internal.h"

void circuits_steering_options_init(circuits_steering_options *opts) { (void)opts; }
int circuits_context_add_steering(circuits_context *ctx, const char *name, const float *vector, int64_t dim, const circuits_steering_options *opts, circuits_hook_id *out_id) { (void)ctx; (void)name; (void)vector; (void)dim; (void)opts; (void)out_id; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_context_add_steering: not built yet"); }
int circuits_context_add_control_vector(circuits_context *ctx, const float *directions, int32_t n_layers, int64_t d_model, const circuits_steering_options *opts, circuits_hook_id *out_id) { (void)ctx; (void)directions; (void)n_layers; (void)d_model; (void)opts; (void)out_id; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_context_add_control_vector: not built yet"); }
void circuits_contrast_options_init(circuits_contrast_options *opts) { (void)opts; }
int circuits_context_contrastive_vector(circuits_context *ctx, const char *name, const int32_t *positive, const int32_t *negative, int64_t batch, int64_t pos, const circuits_contrast_options *opts, float *out, size_t out_len) { (void)ctx; (void)name; (void)positive; (void)negative; (void)batch; (void)pos; (void)opts; (void)out; (void)out_len; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_context_contrastive_vector: not built yet"); }
