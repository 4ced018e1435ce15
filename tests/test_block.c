/* Weight processing of the modern block structure where TransformerLens 3.9 has no reference
 * (its from_pretrained computes another function there: generate_circuits.py TL_MISPROCESSES)
 * and where the processed reference cannot be run yet (grouped-query analysis):
 *   - an LN model with final_rms: fold_ln folds ln_final as an RMSNorm (w only, W_U not
 *     centred), no center_writing_weights; log-probs equal the unprocessed model's;
 *   - a gated MLP after LN: fold_ln refused (test_bad_input), loaded with fold_ln = 0 the
 *     rest of the processing keeps the log-probs;
 *   - Gemma-2-like: no center_unembed under the logit soft-cap, no centring under RMS,
 *     ln1_post / ln2_post kept by fold_ln, log-probs kept, logits within the cap.
 * Each against the case's expected.safetensors (TransformerLens's unprocessed run).
 * Usage: test_block CASES_DIR */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

#include <math.h>

#include "internal.h"
#include "reference_get.h"

/* max over positions of |log_softmax(a) - log_softmax(b)| for rows of width V */
static double log_prob_diff(const float *a, const float *b, size_t rows, size_t V)
{
    double worst = 0.0;
    for (size_t r = 0; r < rows; r++) {
        const float *x = a + r * V, *y = b + r * V;
        double mx = -INFINITY, my = -INFINITY, sx = 0.0, sy = 0.0;
        for (size_t j = 0; j < V; j++) {
            mx = fmax(mx, x[j]);
            my = fmax(my, y[j]);
        }
        for (size_t j = 0; j < V; j++) {
            sx += exp(x[j] - mx);
            sy += exp(y[j] - my);
        }
        double lx = mx + log(sx), ly = my + log(sy);
        for (size_t j = 0; j < V; j++) worst = fmax(worst, fabs((x[j] - lx) - (y[j] - ly)));
    }
    return worst;
}

/* Loads case `name` with `opts`, checks its processing bits, runs the case's tokens and compares
 * log-probs with TransformerLens's unprocessed logits. Returns the model (caller frees). */
static circuits_model *check_case(const char *name, const circuits_load_options *opts, uint32_t want_bits,
                                  float *logits_out, size_t logits_cap)
{
    char dir[4096], path[4200];
    case_dir(dir, sizeof dir, name);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    if (cx_st_open_file(&ref, path)) {
        fprintf(stderr, "cannot open %s: %s\n", path, circuits_last_error());
        exit(2);
    }
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, opts));
    if (!m) exit(1);
    CHECK(m->cfg.processing == want_bits, "%s: processing 0x%x, want 0x%x", name, m->cfg.processing, want_bits);
    const cx_st_tensor *tok = get("tokens"), *lg = get("logits");
    int64_t B = tok->shape[0], T = tok->shape[1], V = m->cfg.d_vocab_out;
    CHECK((size_t)(B * T * V) <= logits_cap && lg->numel == (size_t)(B * T * V), "%s: logits size", name);
    int32_t *t = malloc((size_t)(B * T) * sizeof *t);
    float *want = malloc(lg->numel * sizeof *want);
    for (int64_t i = 0; i < B * T; i++) t[i] = ((const int32_t *)(const void *)tok->data)[i];
    for (size_t i = 0; i < lg->numel; i++) want[i] = cx_st_read_f32(lg, i);
    circuits_context *ctx = make_ctx(m, 0);
    CHECK_OK(circuits_context_forward(ctx, t, B, T, logits_out, NULL, NULL));
    double d = log_prob_diff(logits_out, want, (size_t)(B * T), (size_t)V);
    printf("%-22s processing 0x%02x  log-probs vs TL unprocessed %.2e\n", name, m->cfg.processing, d);
    CHECK(d < 1e-4, "%s: processed log-probs differ from TransformerLens's by %g", name, d);
    circuits_context_free(ctx);
    free(t);
    free(want);
    cx_st_close(ref);
    ref = NULL;
    return m;
}

int main(int argc, char **argv)
{
    tu_cases_arg(argc, argv);
    static float logits[1 << 16];
    circuits_load_options defaults;
    circuits_load_options_init(&defaults);

    /* final_rms in an LN model: folded as an RMSNorm; no centring of the writing weights */
    circuits_model *m = check_case("tl_final_rms_ln", &defaults,
                                   CIRCUITS_PROCESSED_FOLD_LN | CIRCUITS_PROCESSED_CENTER_UNEMBED |
                                       CIRCUITS_PROCESSED_FOLD_VALUE_BIASES,
                                   logits, sizeof logits / sizeof *logits);
    CHECK(m->cfg.normalization_type == CIRCUITS_NORM_LNPRE && m->cfg.final_rms, "final_rms: LNPre with final_rms");
    CHECK(!m->ln_final_w && !m->ln_final_b && !m->layers[0].ln1_w, "final_rms: norm weights left after fold_ln");
    circuits_model_free(m);

    /* a gated MLP after LN: without fold_ln the other steps apply (centring is exact under LN) */
    circuits_load_options no_fold = defaults;
    no_fold.fold_ln = 0;
    m = check_case("tl_gated_geglu_ln", &no_fold,
                   CIRCUITS_PROCESSED_CENTER_WRITING_WEIGHTS | CIRCUITS_PROCESSED_CENTER_UNEMBED |
                       CIRCUITS_PROCESSED_FOLD_VALUE_BIASES,
                   logits, sizeof logits / sizeof *logits);
    circuits_model_free(m);

    /* Gemma-2-like: soft-capped logits keep W_U's mean; RMS keeps the writers' mean */
    m = check_case("tl_gemma2_block", &defaults, CIRCUITS_PROCESSED_FOLD_LN | CIRCUITS_PROCESSED_FOLD_VALUE_BIASES,
                   logits, sizeof logits / sizeof *logits);
    CHECK(m->cfg.normalization_type == CIRCUITS_NORM_RMSPRE, "gemma2: RMSPre after fold_ln");
    CHECK(m->layers[1].ln1_post_w && m->layers[1].ln2_post_w && m->layers[1].W_gate,
          "gemma2: ln1_post / ln2_post / W_gate missing after processing");
    float cap = m->cfg.output_logits_soft_cap, worst = 0.0f;
    for (size_t i = 0; i < 2 * 7 * (size_t)m->cfg.d_vocab_out; i++) worst = fmaxf(worst, fabsf(logits[i]));
    CHECK(cap == 2.0f && worst < cap && worst > 0.5f * cap, "gemma2: |logits| max %g, cap %g", worst, cap);
    circuits_model_free(m);
    return tu_finish("block");
}
