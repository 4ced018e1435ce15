/* Rotary frequencies (rope.h). */
#include "rope.h"

#include <math.h>

void cx_rope_inv_freq(const circuits_config *c, double *inv_freq)
{
    int half = c->rotary_dim / 2;
    for (int i = 0; i < half; i++) {
        /* the exponent 2i / rotary_dim rounded to float32 first, as TransformerLens and Hugging
         * Face compute it (arange(...).float() / rotary_dim in float32): at position p the angle
         * error of an exact exponent would grow as p * 1e-7 * ln(base) */
        float e = (float)(2 * i) / (float)c->rotary_dim;
        double f = 1.0 / pow((double)c->rotary_base, (double)e);
        if (c->rope_scaling == CIRCUITS_ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_scaling == CIRCUITS_ROPE_LLAMA3) {
            /* wavelengths longer than original_n_ctx / low_freq_factor are interpolated (/ factor),
             * shorter than original_n_ctx / high_freq_factor kept, the band between blended */
            double orig = c->rope_original_n_ctx, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
            double wavelen = 2.0 * M_PI / f;
            if (wavelen > orig / lo) {
                f /= c->rope_factor;
            } else if (wavelen >= orig / hi) {
                double smooth = (orig / wavelen - lo) / (hi - lo);
                f = (1.0 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}

void cx_rope_cos_sin(const circuits_config *c, const double *inv_freq, int64_t p0, int64_t n, float *cos_t,
                     float *sin_t)
{
    int half = c->rotary_dim / 2;
    for (int64_t t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            /* TransformerLens: angles = pos / freq in float32 (freq = 1 / inv_freq in float32),
             * then sin and cos of the float32 angle */
            float freq = (float)(1.0 / inv_freq[i]), angle = (float)(p0 + t) / freq;
            cos_t[t * half + i] = (float)cos((double)angle);
            sin_t[t * half + i] = (float)sin((double)angle);
        }
}

int cx_rope_tables(const circuits_config *c, bool unscaled, const int32_t *pos_id, int64_t rows, int64_t p0,
                   float *cos_t, float *sin_t)
{
    int64_t half = c->rotary_dim / 2;
    /* the frequencies on the stack for every usual head size (rotary_dim <= 128) */
    double inv_small[64], *inv = half <= 64 ? inv_small : cx_malloc((size_t)half * sizeof(double));
    if (!inv) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: rotary frequencies of %d dims", c->rotary_dim);
    circuits_config plain = *c;
    plain.rope_scaling = CIRCUITS_ROPE_NONE;
    cx_rope_inv_freq(unscaled ? &plain : c, inv);
    if (pos_id) /* TL apply_rotary with a mask: the angles of each row's position ids */
        for (int64_t n = 0; n < rows; n++) cx_rope_cos_sin(c, inv, pos_id[n], 1, cos_t + n * half, sin_t + n * half);
    else cx_rope_cos_sin(c, inv, p0, rows, cos_t, sin_t);
    if (inv != inv_small) cx_free(inv);
    return CIRCUITS_OK;
}
