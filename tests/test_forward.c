/* The public API's documented contract (include/circuits.h), part 5 of 6: the forward pass's
 * outputs and arguments (loss, per-token loss, shapes, tokens) and batch independence.
 * Shared helpers: tests/testutil.h (TESTUTIL_API_HELPERS).
 * Usage: test_forward CASES_DIR   (tests/reference/cases) */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

/* ---------------------------------------------------------------------------------------- */
/* loss and forward arguments                                                                */
/* ---------------------------------------------------------------------------------------- */

static void test_loss(void)
{
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_context *ctx = make_ctx(m, 0);
    const int64_t B = 3, T = 7, V = 1000;
    int32_t tok[21];
    make_tokens(tok, 21, 1000, 5);
    float *lg = malloc((size_t)(B * T * V) * sizeof *lg), ptl[18], loss = NAN, loss2 = NAN, ptl2[18];
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, lg, &loss, ptl));
    double mean = 0.0, worst = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i + 1 < T; i++) {
            const float *row = lg + (b * T + i) * V;
            double mx = -INFINITY, s = 0.0;
            for (int64_t v = 0; v < V; v++) mx = fmax(mx, row[v]);
            for (int64_t v = 0; v < V; v++) s += exp((double)row[v] - mx);
            double nll = -((double)row[tok[b * T + i + 1]] - mx - log(s));
            worst = fmax(worst, fabs(nll - ptl[b * (T - 1) + i]));
            mean += ptl[b * (T - 1) + i];
        }
    mean /= (double)(B * (T - 1));
    CHECK(worst < 1e-5, "per_token_loss differs from -log_softmax by %g", worst);
    CHECK(fabs(mean - loss) < 1e-5 * fmax(1.0, fabs(mean)), "loss %g, mean per-token loss %g", (double)loss, mean);
    CHECK(loss > 0 && isfinite(loss), "loss %g", (double)loss);
    /* without a logits buffer: the same numbers */
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, &loss2, ptl2));
    CHECK(loss2 == loss && memcmp(ptl, ptl2, sizeof ptl) == 0, "loss without a logits buffer differs");
    loss2 = NAN;
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, &loss2, NULL));
    CHECK(loss2 == loss, "loss alone differs");
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, NULL, ptl2));
    CHECK(memcmp(ptl, ptl2, sizeof ptl) == 0, "per-token loss alone differs");

    /* pos 1: logits fine, loss impossible */
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 1, lg, NULL, NULL));
    CHECK_ERR(circuits_context_forward(ctx, tok, 1, 1, lg, &loss, NULL), CIRCUITS_E_SHAPE);
    CHECK_ERR(circuits_context_forward(ctx, tok, 2, 1, NULL, NULL, ptl), CIRCUITS_E_SHAPE);

    /* bad shapes and tokens */
    CHECK_ERR(circuits_context_forward(ctx, tok, 0, 7, lg, NULL, NULL), CIRCUITS_E_SHAPE);
    CHECK_ERR(circuits_context_forward(ctx, tok, 1, 0, lg, NULL, NULL), CIRCUITS_E_SHAPE);
    CHECK_ERR(circuits_context_forward(ctx, tok, -1, 7, lg, NULL, NULL), CIRCUITS_E_SHAPE);
    int32_t *longtok = calloc(513, sizeof *longtok);
    CHECK_FAILS(circuits_context_forward(ctx, longtok, 1, 513, NULL, NULL, NULL), CIRCUITS_E_RANGE, "n_ctx");
    CHECK_OK(circuits_context_forward(ctx, longtok, 1, 512, NULL, NULL, NULL));
    free(longtok);
    int32_t bad[7] = {1, 2, 3, -1, 4, 5, 6};
    CHECK_ERR(circuits_context_forward(ctx, bad, 1, 7, lg, NULL, NULL), CIRCUITS_E_RANGE);
    bad[3] = 1000;
    CHECK_FAILS(circuits_context_forward(ctx, bad, 1, 7, lg, NULL, NULL), CIRCUITS_E_RANGE, "1000");
    bad[3] = 999;
    CHECK_OK(circuits_context_forward(ctx, bad, 1, 7, lg, &loss, NULL));

    circuits_context_free(ctx);
    free(lg);
    circuits_model_free(m);
}

/* ---------------------------------------------------------------------------------------- */
/* batch independence                                                                        */
/* ---------------------------------------------------------------------------------------- */

static void check_batch_independence(const char *case_name, int use_attn_result)
{
    circuits_model *m = load_case(case_name);
    circuits_config c = config_of(m);
    circuits_context *ctx = make_ctx(m, use_attn_result);
    const int64_t T = 7, V = c.d_vocab_out;
    int32_t tok[2 * 7];
    make_tokens(tok, 14, c.d_vocab, 77);
    float *both = malloc((size_t)(2 * T * V) * sizeof *both), *one = malloc((size_t)(T * V) * sizeof *one);
    float loss_both, ptl_both[12], ptl_one[6];
    CHECK_OK(circuits_context_forward(ctx, tok, 2, T, both, &loss_both, ptl_both));
    double worst = 0.0, worst_loss = 0.0;
    for (int b = 0; b < 2; b++) {
        CHECK_OK(circuits_context_forward(ctx, tok + b * T, 1, T, one, NULL, ptl_one));
        worst = fmax(worst, max_abs_diff(one, both + b * T * V, (size_t)(T * V)));
        worst_loss = fmax(worst_loss, max_abs_diff(ptl_one, ptl_both + b * (T - 1), (size_t)(T - 1)));
    }
    CHECK(worst <= 1e-5, "%s: batch row logits differ from the sequence alone by %g", case_name, worst);
    CHECK(worst_loss <= 1e-5, "%s: batch row per-token loss differs by %g", case_name, worst_loss);
    /* a shorter prefix gives the same logits at its positions (causality) */
    CHECK_OK(circuits_context_forward(ctx, tok, 1, 4, one, NULL, NULL));
    double d = max_abs_diff(one, both, (size_t)(4 * V));
    CHECK(d <= 1e-5, "%s: prefix logits differ by %g", case_name, d);
    free(both);
    free(one);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

static void test_batch_independence(void)
{
    check_batch_independence("hf_tiny_random_gpt2", 0);
    check_batch_independence("tl_gelu_new_attn_result", 1);
    check_batch_independence("tl_shortformer_relu", 0);
    check_batch_independence("tl_1l_solu_ln", 0);
}

int main(int argc, char **argv)
{
    tu_cases_arg(argc, argv);
    test_loss();
    test_batch_independence();
    return tu_finish("test_forward");
}
