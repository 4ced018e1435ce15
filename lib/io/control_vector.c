/* PLACEHOLDER (a helper replaces this file). */
#include "internal.h"

int circuits_control_vector_load(const char *path, int32_t n_layers, int64_t d_model, float *directions) { (void)path; (void)n_layers; (void)d_model; (void)directions; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_control_vector_load: not built yet"); }
int circuits_control_vector_save(const char *path, const float *directions, int32_t n_layers, int64_t d_model, const char *model_hint) { (void)path; (void)directions; (void)n_layers; (void)d_model; (void)model_hint; return cx_fail(CIRCUITS_E_UNSUPPORTED, "circuits_control_vector_save: not built yet"); }
