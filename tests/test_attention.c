/* Hand-checkable facts of the modern attention (rotary, grouped-query, local, soft-capped), on
 * the kernels and on reference models whose configuration or weights are changed in memory:
 *   - rotation at position 0 is the identity, and keeps each pair's length;
 *   - rotary scores depend on the relative position only (q at p, k at p' vs p + s, p' + s);
 *   - grouped-query attention equals plain attention with K/V heads repeated (repeat_interleave);
 *   - a window of at least T keys equals global attention, and a shorter one changes the output;
 *   - a soft-cap far above every score changes nothing, a small one changes the output.
 * Usage: test_attention CASES_DIR */
#include "testutil.h"

#include <math.h>

#include "internal.h"
#include "kernels.h"
#include "rope.h"
#include "kv_expand.h"

static const char *g_cases;

static circuits_model *load_case(const char *name)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", g_cases, name);
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, p, NULL));
    return m;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

/* logits [B=2, T=7] of m on fixed tokens into out (a new context each time: the config may
 * have been changed in memory) */
static void logits_of(circuits_model *m, float *out)
{
    int32_t tok[2 * 7];
    for (int i = 0; i < 14; i++) tok[i] = (int32_t)((i * 7 + 3) % m->cfg.d_vocab);
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    CHECK_OK(circuits_context_forward(ctx, tok, 2, 7, out, NULL, NULL));
    circuits_context_free(ctx);
}

static void test_rotation_kernel(void)
{
    circuits_config c;
    memset(&c, 0, sizeof c);
    c.d_head = 16;
    c.rotary_dim = 8;
    c.rotary_base = 10000.0f;
    for (int adjacent = 0; adjacent < 2; adjacent++) {
        c.rotary_adjacent_pairs = adjacent;
        double inv[4];
        float cs[5 * 4], sn[5 * 4];
        cx_rope_inv_freq(&c, inv);
        cx_rope_cos_sin(&c, inv, 0, 5, cs, sn);
        /* x [1, 5, 2, 16]: positions 0..4, 2 heads */
        float x[5 * 2 * 16], y[5 * 2 * 16];
        for (int i = 0; i < 5 * 2 * 16; i++) x[i] = (float)sin(0.37 * i + 0.1);
        memcpy(y, x, sizeof x);
        cx_rope_rotate(y, 1, 5, 2, 16, &c, cs, sn);
        CHECK(memcmp(x, y, 2 * 16 * sizeof(float)) == 0, "adjacent %d: position 0 is not the identity", adjacent);
        double worst_len = 0, worst_pass = 0;
        for (int t = 0; t < 5; t++)
            for (int h = 0; h < 2; h++) {
                const float *a = x + (t * 2 + h) * 16, *b = y + (t * 2 + h) * 16;
                for (int i = 0; i < 4; i++) {
                    int ia, ib;
                    cx_rope_pair(&c, i, &ia, &ib);
                    worst_len = fmax(worst_len, fabs(hypot(a[ia], a[ib]) - hypot(b[ia], b[ib])));
                }
                /* dims rotary_dim .. d_head pass through */
                worst_pass = fmax(worst_pass, max_abs_diff(a + 8, b + 8, 8));
            }
        CHECK(worst_len < 1e-6, "adjacent %d: a rotation changed a pair's length by %g", adjacent, worst_len);
        CHECK(worst_pass == 0, "adjacent %d: dims past rotary_dim changed by %g", adjacent, worst_pass);
        /* position 1 moved pair 0 by exactly 1 radian (inv_freq[0] = 1) */
        int ia, ib;
        cx_rope_pair(&c, 0, &ia, &ib);
        const float *a = x + 2 * 16, *b = y + 2 * 16;
        double want_a = a[ia] * cos(1.0) - a[ib] * sin(1.0), want_b = a[ib] * cos(1.0) + a[ia] * sin(1.0);
        CHECK(fabs(b[ia] - want_a) < 1e-6 && fabs(b[ib] - want_b) < 1e-6, "adjacent %d: pair 0 at position 1", adjacent);
    }
}

/* q . k after rotation depends only on the distance between their positions */
static void test_relative_position(void)
{
    circuits_config c;
    memset(&c, 0, sizeof c);
    c.d_head = 8;
    c.rotary_dim = 8;
    c.rotary_base = 10000.0f;
    double inv[4];
    cx_rope_inv_freq(&c, inv);
    float q[8], k[8];
    for (int i = 0; i < 8; i++) {
        q[i] = (float)cos(1.3 * i);
        k[i] = (float)sin(0.7 * i + 0.2);
    }
    double dots[2];
    for (int s = 0; s < 2; s++) {
        int64_t shift = s ? 9 : 0;
        float cs[6 * 4], sn[6 * 4], qr[6 * 8], kr[6 * 8];
        cx_rope_cos_sin(&c, inv, shift, 6, cs, sn);
        for (int t = 0; t < 6; t++) {
            memcpy(qr + t * 8, q, sizeof q);
            memcpy(kr + t * 8, k, sizeof k);
        }
        cx_rope_rotate(qr, 1, 6, 1, 8, &c, cs, sn);
        cx_rope_rotate(kr, 1, 6, 1, 8, &c, cs, sn);
        double d = 0; /* q at relative position 5, k at 2 */
        for (int i = 0; i < 8; i++) d += (double)qr[5 * 8 + i] * kr[2 * 8 + i];
        dots[s] = d;
    }
    CHECK(fabs(dots[0] - dots[1]) < 1e-5, "rotary score depends on absolute position: %g vs %g", dots[0], dots[1]);
}

static void test_gqa_equals_repeated_heads(const char *name)
{
    circuits_model *m = load_case(name);
    if (!m) return;
    int64_t H = m->cfg.n_heads, KV = m->cfg.n_key_value_heads, V = m->cfg.d_vocab_out;
    CHECK(KV < H, "%s is not grouped", name);
    float *a = malloc(sizeof(float) * (size_t)(14 * V)), *b = malloc(sizeof(float) * (size_t)(14 * V));
    logits_of(m, a);
    const circuits_tensor **saved = kv_expand_model(m);
    logits_of(m, b);
    double d = max_abs_diff(a, b, (size_t)(14 * V));
    CHECK(d < 1e-5, "%s: grouped K/V vs the same heads repeated: logits differ by %g", name, d);
    kv_restore_model(m, saved, (int32_t)KV);
    free(a);
    free(b);
    circuits_model_free(m);
}

static void test_window_and_cap(void)
{
    circuits_model *m = load_case("tl_local_all"); /* window 3 < T = 7 in every layer */
    if (!m) return;
    int64_t V = m->cfg.d_vocab_out;
    size_t n = (size_t)(14 * V);
    float *local = malloc(sizeof(float) * n), *wide = malloc(sizeof(float) * n), *global = malloc(sizeof(float) * n);
    logits_of(m, local);
    m->cfg.window_size = 7; /* = T: nothing is masked beyond the causal mask */
    logits_of(m, wide);
    m->cfg.local_attn = CIRCUITS_LOCAL_ATTN_NONE;
    logits_of(m, global);
    CHECK(max_abs_diff(wide, global, n) == 0, "window >= T differs from global attention by %g",
          max_abs_diff(wide, global, n));
    CHECK(max_abs_diff(local, global, n) > 1e-3, "window 3 < T changed nothing (weak test)");
    /* a soft-cap far above every score: tanh(x / cap) * cap = x to within float rounding */
    m->cfg.attn_scores_soft_cap = 1e6f;
    logits_of(m, wide);
    CHECK(max_abs_diff(wide, global, n) < 1e-5, "a soft-cap of 1e6 changed the logits by %g",
          max_abs_diff(wide, global, n));
    m->cfg.attn_scores_soft_cap = 0.5f;
    logits_of(m, wide);
    CHECK(max_abs_diff(wide, global, n) > 1e-3, "a soft-cap of 0.5 changed nothing (weak test)");
    free(local);
    free(wide);
    free(global);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASES_DIR\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    test_rotation_kernel();
    test_relative_position();
    test_gqa_equals_repeated_heads("tl_gqa_rotary_rms");
    test_gqa_equals_repeated_heads("tl_rope_linear_mqa");
    test_window_and_cap();
    return tu_finish("test_attention");
}
