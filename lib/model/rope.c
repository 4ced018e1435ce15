/* Rotary frequencies (rope.h). */
#include "rope.h"

#include <math.h>

void cx_rope_inv_freq(const circuits_config *c, double *inv_freq)
{
    int half = c->rotary_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = pow((double)c->rotary_base, -(double)(2 * i) / (double)c->rotary_dim);
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
