/* Rotary position embedding frequencies: the one place they are computed (the forward pass
 * rotates q and k with them, the positional QK circuit of analysis/ scores with them). */
#ifndef CIRCUITS_ROPE_H
#define CIRCUITS_ROPE_H

#include "internal.h"

/* inv_freq[i] for the rotary_dim / 2 rotated pairs of a rotary config: pair i of a head at
 * position p turns by the angle p * inv_freq[i]. base^(-2i / rotary_dim), then rescaled as
 * rope_scaling says (linear: / rope_factor; llama3: Hugging Face's _compute_llama3_parameters,
 * which is TransformerLens's use_NTK_by_parts_rope). Computed in double. */
void cx_rope_inv_freq(const circuits_config *c, double *inv_freq);

/* cos_t, sin_t [n, rotary_dim / 2]: the rotation of pair i at positions p0 .. p0 + n - 1, with the
 * angle rounded to float32 as TransformerLens computes it (pos / freq in float32). */
void cx_rope_cos_sin(const circuits_config *c, const double *inv_freq, int64_t p0, int64_t n, float *cos_t,
                     float *sin_t);

/* The tables a pass rotates q and k with in layers of kind `unscaled` (cx_rope_layer_unscaled):
 * cos_t, sin_t [rows, rotary_dim / 2]; with pos_id the rows are those position ids (one per token of a
 * padded batch), else rows consecutive positions from p0. CIRCUITS_E_OUT_OF_MEMORY only when
 * rotary_dim > 128 (the frequencies then need the heap). The forward and backward passes share it. */
int cx_rope_tables(const circuits_config *c, bool unscaled, const int32_t *pos_id, int64_t rows, int64_t p0,
                   float *cos_t, float *sin_t);

/* Which two dims of a head pair i rotates: (2i, 2i + 1) with rotary_adjacent_pairs (GPT-J),
 * else (i, i + rotary_dim / 2) (GPT-NeoX, LLaMA: "rotate half"). */
static inline void cx_rope_pair(const circuits_config *c, int i, int *a, int *b)
{
    if (c->rotary_adjacent_pairs) {
        *a = 2 * i;
        *b = 2 * i + 1;
    } else {
        *a = i;
        *b = i + c->rotary_dim / 2;
    }
}

/* Whether layer l attends locally (a sliding window of cfg.window_size keys). */
static inline bool cx_layer_is_local(const circuits_config *c, int l)
{
    switch (c->local_attn) {
    case CIRCUITS_LOCAL_ATTN_ALL: return true;
    case CIRCUITS_LOCAL_ATTN_EVEN: return l % 2 == 0;
    case CIRCUITS_LOCAL_ATTN_ODD: return l % 2 == 1;
    default: return false;
    }
}

/* Whether layer l rotates by unscaled frequencies: TransformerLens applies linear rope scaling
 * (rotary_scaling_factor) on global layers only (calculate_sin_cos_rotary); the forward pass and
 * the rotary QK circuit both follow it. */
static inline bool cx_rope_layer_unscaled(const circuits_config *c, int l)
{
    return c->rope_scaling == CIRCUITS_ROPE_LINEAR && cx_layer_is_local(c, l);
}

#endif
