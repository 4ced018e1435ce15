/* The next-token loss (TransformerLens's utils.lm_cross_entropy_loss), one copy for the forward
 * pass, the public circuits_lm_cross_entropy and the LOSS metric. */
#ifndef CIRCUITS_LOSS_H
#define CIRCUITS_LOSS_H

#include "internal.h"

/* logits [B, T, V], tokens [B, T], mask [B, T] of 0/1 or NULL; per_token [B, T - 1] and loss may be
 * NULL. The caller has checked every index (T >= 2, targets < V, mask values); fails only when a
 * mean is asked for and the mask includes no pair (CIRCUITS_E_SHAPE, message names fn). */
int cx_lm_loss(const float *logits, const int32_t *tokens, const int32_t *mask, int64_t B, int64_t T, int64_t V,
               float *per_token, float *loss, const char *fn);

/* Logits [batch, pos, d_vocab] from a caller: every dimension >= 1 and the whole addressable. */
int cx_logits_shape_check(int64_t batch, int64_t pos, int64_t d_vocab, const char *fn);

/* Checks tokens[b, i >= 1] < V and mask values 0/1 for a loss over [B, T]. */
int cx_lm_loss_check(const int32_t *tokens, const int32_t *mask, int64_t B, int64_t T, int64_t V, const char *fn);

#endif
