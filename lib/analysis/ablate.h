/* Ablation and means of hook points (ablate.c): what other files share of it. */
#ifndef CIRCUITS_ABLATE_H
#define CIRCUITS_ABLATE_H

#include "context.h"

/* Adds each point's activation (points: indices in ctx's hook table, not hook_tokens) summed over
 * the rows of tokens [n_rows, pos] to sums[i] (double, one row of its TL shape), in row order,
 * the rows run in batches of batch_size through the door (stopping after the last block needed):
 * circuits_context_mean_activations and the mean-activations job (job/kind_mean.c). */
int cx_activation_sums(circuits_context *ctx, const int32_t *points, size_t n_points, const int32_t *tokens,
                       int64_t n_rows, int64_t pos, int64_t batch_size, double *const *sums, const char *fn);

#endif
