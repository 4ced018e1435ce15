/* Composition scores of a model with d_head > d_model against TransformerLens
 * (tests/reference/composition/, written by tests/reference/generate_composition.py):
 * d_model 16, d_head 24, so every [d_model, d_head] factor is wide, some heads are
 * rank-deficient on purpose, and processing (fold_ln, center_writing_weights) centres the
 * factors. Checked: all_composition_scores Q, K, V of the processed model (the load defaults,
 * as from_pretrained) and of the unprocessed one, and the random baseline against
 * TransformerLens's composition_scores of Gaussian factors of the same shapes.
 * Usage: test_composition_reference DIR */
#include "testutil.h"

#include <math.h>

#include "../lib/io/safetensors.h"

#define TOL_ABS 1e-5 /* as tests/test_circuits.c's TOL_SCORE */
#define TOL_REL 1e-5 /* of each non-zero score */

#include "reference_get.h"

static circuits_model *load(const char *dir, int process)
{
    circuits_load_options o;
    circuits_load_options_init(&o);
    if (!process) o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, &o));
    return m;
}

static void check_scores(circuits_model *m, const char *prefix, int64_t LH, double *worst_abs, double *worst_rel)
{
    static const char *modes[3] = {"Q", "K", "V"};
    float *sc = calloc((size_t)(LH * LH), sizeof *sc);
    if (!sc) exit(2);
    for (int mode = 0; mode < 3; mode++) {
        char key[64];
        snprintf(key, sizeof key, "%scomp_%s", prefix, modes[mode]);
        const cx_st_tensor *t = get(key);
        CHECK(t->numel == (size_t)(LH * LH), "%s has %zu entries, want %lld", key, t->numel, (long long)(LH * LH));
        CHECK_OK(circuits_model_composition_scores(m, mode, sc));
        double da = 0, dr = 0;
        for (size_t i = 0; i < t->numel && i < (size_t)(LH * LH); i++) {
            double want = cx_st_read_f32(t, i), d = fabs(sc[i] - want);
            da = fmax(da, d);
            if (want != 0) dr = fmax(dr, d / fabs(want));
            else CHECK(sc[i] == 0.0f, "%s[%zu] = %g where TransformerLens has 0", key, i, sc[i]);
        }
        printf("%-22s max-abs %.3g  max-rel %.3g\n", key, da, dr);
        CHECK(da <= TOL_ABS, "%s: max-abs diff %.3g (tol %.1g)", key, da, TOL_ABS);
        CHECK(dr <= TOL_REL, "%s: max-rel diff %.3g (tol %.1g)", key, dr, TOL_REL);
        *worst_abs = fmax(*worst_abs, da);
        *worst_rel = fmax(*worst_rel, dr);
    }
    free(sc);
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.safetensors", argv[1]);
    if (cx_st_open_file(&ref, path)) {
        fprintf(stderr, "%s\n", circuits_last_error());
        return 2;
    }
    double worst_abs = 0, worst_rel = 0;
    circuits_config c = {.size = sizeof c};
    for (int process = 1; process >= 0; process--) {
        circuits_model *m = load(argv[1], process);
        if (!m) return tu_finish("test_composition_reference");
        circuits_model_config(m, &c);
        CHECK(c.d_head > c.d_model, "the reference model has d_head %lld > d_model %lld", (long long)c.d_head,
              (long long)c.d_model);
        check_scores(m, process ? "" : "unprocessed:", (int64_t)c.n_layers * c.n_heads, &worst_abs, &worst_rel);
        circuits_model_free(m);
    }

    /* the random baseline: same distribution as TransformerLens's composition_scores of
     * Gaussian factors (W_V [D, dh], W_O [dh, D]; W_Q, W_K [D, dh]) */
    const cx_st_tensor *bs = get("baseline_scores");
    double s1 = 0, s2 = 0, n = (double)bs->numel;
    for (size_t i = 0; i < bs->numel; i++) {
        double v = cx_st_read_f32(bs, i);
        s1 += v;
        s2 += v * v;
    }
    double tm = s1 / n, ts = sqrt(fmax(s2 / n - tm * tm, 0));
    float mean = 0, std = 0;
    const int64_t samples = 400;
    CHECK_OK(circuits_composition_baseline(c.d_model, c.d_head, 0, samples, 5, &mean, &std));
    double se = sqrt(ts * ts / n + (double)std * std / (double)samples);
    printf("baseline d_model %lld d_head %lld: library %.4f (std %.4f), TransformerLens %.4f (std %.4f), %.2f se apart\n",
           (long long)c.d_model, (long long)c.d_head, mean, std, tm, ts, fabs(mean - tm) / se);
    CHECK(fabs(mean - tm) < 4 * se, "baseline mean: library %.4f, TransformerLens %.4f (se %.4f)", mean, tm, se);
    CHECK(fabs(std - ts) < 0.25 * ts, "baseline std: library %.4f, TransformerLens %.4f", std, ts);
    printf("composition vs TransformerLens (d_head > d_model): max-abs %.3g, max-rel %.3g\n", worst_abs, worst_rel);
    cx_st_close(ref);
    return tu_finish("test_composition_reference");
}
