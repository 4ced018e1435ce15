/* Losses and metrics (lib/run/loss.c, lib/analysis/metric.c) on hand-made logits: every value
 * against a direct double-precision computation, TransformerLens's masking rule for the loss, and
 * every refusal (named checks: docs/errors.md, "Losses and metrics"). */
#include "catalogue.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

enum { B = 2, T = 4, V = 5 };

static float logits[B * T * V];
static const int32_t tokens[B * T] = {1, 4, 0, 2, 3, 3, 1, 4};

static double log_softmax_at(const float *row, int k)
{
    double mx = row[0], s = 0.0;
    for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
    for (int j = 0; j < V; j++) s += exp(row[j] - mx);
    return row[k] - mx - log(s);
}

static int cb_value(const float *lg, int64_t b, int64_t t, int64_t v, float *value, void *u)
{
    (void)u;
    *value = (float)(lg[(b * t - 1) * v + 2] * 10.0 + (double)(b + t + v));
    return 0;
}
static int cb_fail(const float *lg, int64_t b, int64_t t, int64_t v, float *value, void *u)
{
    (void)lg, (void)b, (void)t, (void)v, (void)value, (void)u;
    return -7;
}

/* GRAD_CALLBACK: value 3 * logits[b = 1, t = 2, v = 4], its gradient 3 there */
static int gcb_value(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    (void)b, (void)u;
    int64_t i = (1 * t + 2) * v + 4;
    *value = 3.0f * lg[i];
    grad[i] = 3.0f;
    return 0;
}
static int gcb_fail(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    (void)lg, (void)b, (void)t, (void)v, (void)value, (void)grad, (void)u;
    return -3;
}
static int gcb_nan(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    (void)lg, (void)b, (void)t, (void)v, (void)grad, (void)u;
    *value = NAN;
    return 0;
}
static int gcb_inf_grad(const float *lg, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *u)
{
    (void)lg, (void)b, (void)u;
    *value = 0.0f;
    grad[(0 * t + 1) * v + 2] = -INFINITY;
    return 0;
}

static void test_loss(void)
{
    float per[B * (T - 1)], loss = 0.0f;
    CHECK_OK(circuits_lm_cross_entropy(logits, tokens, NULL, B, T, V, per, &loss));
    double total = 0.0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i + 1 < T; i++) {
            double want = -log_softmax_at(logits + (b * T + i) * V, tokens[b * T + i + 1]);
            CHECK(fabs(per[b * (T - 1) + i] - want) < 1e-6, "per-token [%d, %d]: %g vs %g", b, i, per[b * (T - 1) + i], want);
            total += want;
        }
    CHECK(fabs(loss - total / (B * (T - 1))) < 1e-6, "loss %g", loss);

    /* left padding in row 0, right padding in row 1: pairs with a masked end are 0 and not counted */
    const int32_t mask[B * T] = {0, 1, 1, 1, 1, 1, 1, 0};
    CHECK_OK(circuits_lm_cross_entropy(logits, tokens, mask, B, T, V, per, &loss));
    double sum = 0.0;
    int n = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i + 1 < T; i++) {
            bool in = mask[b * T + i] && mask[b * T + i + 1];
            double want = in ? -log_softmax_at(logits + (b * T + i) * V, tokens[b * T + i + 1]) : 0.0;
            CHECK(fabs(per[b * (T - 1) + i] - want) < 1e-6, "masked per-token [%d, %d]", b, i);
            sum += want;
            n += in;
        }
    CHECK(n == 4 && fabs(loss - sum / n) < 1e-6, "masked loss %g (n %d)", loss, n);

    /* a mask with no pair: per-token losses are all 0, the mean is refused */
    const int32_t none[B * T] = {1, 0, 1, 0, 0, 0, 0, 1};
    CHECK_OK(circuits_lm_cross_entropy(logits, tokens, none, B, T, V, per, NULL));
    for (int i = 0; i < B * (T - 1); i++) CHECK(per[i] == 0.0f, "no-pair per-token %d", i);
    CALL_FAILS("loss_mask_without_pairs", circuits_lm_cross_entropy(logits, tokens, none, B, T, V, per, &loss),
               CIRCUITS_E_SHAPE, "includes no (token, next token) pair");
    const int32_t two[B * T] = {1, 1, 2, 1, 1, 1, 1, 1};
    CALL_FAILS("loss_mask_value_2", circuits_lm_cross_entropy(logits, tokens, two, B, T, V, per, &loss),
               CIRCUITS_E_INVALID_ARGUMENT, "attention_mask[0, 2] is 2");
    const int32_t bad_tok[B * T] = {1, 4, 0, 5, 3, 3, 1, 4};
    CALL_FAILS("loss_target_outside_vocab", circuits_lm_cross_entropy(logits, bad_tok, NULL, B, T, V, per, &loss),
               CIRCUITS_E_RANGE, "target token 5 at [0, 3]");
    CALL_FAILS("loss_one_position", circuits_lm_cross_entropy(logits, tokens, NULL, B, 1, V, per, &loss),
               CIRCUITS_E_SHAPE, "at least 2 positions");
    CALL_FAILS("loss_logits_null", circuits_lm_cross_entropy(NULL, tokens, NULL, B, T, V, per, &loss),
               CIRCUITS_E_INVALID_ARGUMENT, "logits or tokens is NULL");
    CALL_FAILS("loss_batch_0", circuits_lm_cross_entropy(logits, tokens, NULL, 0, T, V, per, &loss),
               CIRCUITS_E_SHAPE, "every dimension must be at least 1");
}

static void test_metrics(void)
{
    const int64_t pos[B] = {-1, 1};
    const int32_t ans[B] = {2, 0}, wrong[B] = {3, 4};
    circuits_metric m;
    circuits_metric_init(&m);
    CHECK(m.size == sizeof m && m.kind == CIRCUITS_METRIC_LOGIT_DIFF && !m.answer, "init");
    m.positions = pos, m.answer = ans, m.wrong = wrong;
    const float *r0 = logits + (0 * T + 3) * V, *r1 = logits + (1 * T + 1) * V;
    double want[4] = {
        ((r0[2] - r0[3]) + (r1[0] - r1[4])) / 2.0,
        (r0[2] + r1[0]) / 2.0,
        (exp(log_softmax_at(r0, 2)) + exp(log_softmax_at(r1, 0))) / 2.0,
        (log_softmax_at(r0, 2) + log_softmax_at(r1, 0)) / 2.0,
    };
    for (int k = 0; k < 4; k++) {
        m.kind = k;
        float v = NAN;
        CHECK_OK(circuits_metric_eval(&m, logits, B, T, V, &v));
        CHECK(fabs(v - want[k]) < 1e-6, "metric kind %d: %g vs %g", k, v, want[k]);
    }
    /* positions NULL: the last position of every row */
    m.kind = CIRCUITS_METRIC_LOGIT, m.positions = NULL;
    float v = 0.0f;
    CHECK_OK(circuits_metric_eval(&m, logits, B, T, V, &v));
    CHECK(fabs(v - (r0[2] + logits[(1 * T + 3) * V + 0]) / 2.0) < 1e-6, "last-position logit %g", v);

    m.kind = CIRCUITS_METRIC_LOSS, m.tokens = tokens;
    float loss = 0.0f;
    CHECK_OK(circuits_lm_cross_entropy(logits, tokens, NULL, B, T, V, NULL, &loss));
    CHECK_OK(circuits_metric_eval(&m, logits, B, T, V, &v));
    CHECK(v == loss, "LOSS metric %g vs loss %g", v, loss);

    m.kind = CIRCUITS_METRIC_CALLBACK, m.fn = cb_value;
    CHECK_OK(circuits_metric_eval(&m, logits, B, T, V, &v));
    CHECK(fabs(v - (logits[(B * T - 1) * V + 2] * 10.0 + B + T + V)) < 1e-4, "callback metric %g", v);

    m.fn = cb_fail;
    CALL_FAILS("metric_callback_fails", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_CALLBACK,
               "the metric callback returned -7");
    m.fn = NULL;
    CALL_FAILS("metric_callback_null", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_INVALID_ARGUMENT,
               "the CALLBACK metric's fn is NULL");
    m.kind = 9;
    CALL_FAILS("metric_kind_unknown", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_INVALID_ARGUMENT,
               "unknown metric kind 9");
    m.kind = CIRCUITS_METRIC_LOGIT_DIFF, m.wrong = NULL;
    CALL_FAILS("metric_wrong_null", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_INVALID_ARGUMENT,
               "needs wrong [batch]");
    const int32_t big[B] = {2, 5};
    m.wrong = wrong, m.answer = big;
    CALL_FAILS("metric_answer_outside_vocab", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_RANGE,
               "answer[1] = 5 is outside d_vocab_out = 5");
    const int64_t far[B] = {-1, -5};
    m.answer = ans, m.positions = far;
    CALL_FAILS("metric_position_outside", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_RANGE,
               "positions[1] = -5 is outside [-4, 4)");
    m.positions = NULL, m.kind = CIRCUITS_METRIC_LOSS, m.tokens = NULL;
    CALL_FAILS("metric_loss_without_tokens", circuits_metric_eval(&m, logits, B, T, V, &v),
               CIRCUITS_E_INVALID_ARGUMENT, "needs tokens [batch, pos]");
    const int32_t no_pair[B * T] = {1, 0, 1, 0, 0, 0, 0, 1};
    m.tokens = tokens, m.attention_mask = no_pair;
    CALL_FAILS("metric_loss_mask_without_pairs", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_SHAPE,
               "the LOSS metric's attention mask includes no (token, next token) pair");
    m.tokens = NULL, m.attention_mask = NULL;
    CALL_FAILS("metric_shape_too_large", circuits_metric_eval(&m, logits, INT64_MAX / 2, 4, V, &v), CIRCUITS_E_RANGE,
               "is too large");
    m.size = 12;
    CALL_FAILS("metric_size_unknown", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_VERSION, "size");
    CALL_FAILS("metric_null", circuits_metric_eval(NULL, logits, B, T, V, &v), CIRCUITS_E_INVALID_ARGUMENT,
               "metric is NULL");
}

/* The kinds added in 0.7.0 (gradient runs), and a 0.5.0 caller's shorter struct. */
static void test_metrics_07(void)
{
    circuits_metric m;
    float v = NAN;
    /* TOKEN_LOSS: positions NULL is the second-to-last position (the loss of predicting the last token) */
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_TOKEN_LOSS, m.tokens = tokens;
    CHECK_OK(circuits_metric_eval(&m, logits, B, T, V, &v));
    double want = 0.0;
    for (int b = 0; b < B; b++) want -= log_softmax_at(logits + (b * T + T - 2) * V, tokens[b * T + T - 1]) / B;
    CHECK(fabs(v - want) < 1e-6, "TOKEN_LOSS default %g vs %g", v, want);
    float per[B * (T - 1)];
    CHECK_OK(circuits_lm_cross_entropy(logits, tokens, NULL, B, T, V, per, NULL));
    const int64_t pos[B] = {0, -3};
    m.positions = pos;
    CHECK_OK(circuits_metric_eval(&m, logits, B, T, V, &v));
    CHECK(fabs(v - (per[0] + per[(T - 1) + 1]) / 2.0) < 1e-6, "TOKEN_LOSS at positions %g: the per-token losses", v);

    const int64_t last[B] = {0, -1};
    m.positions = last;
    CALL_FAILS("metric_token_loss_last_position", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_RANGE,
               "positions[1] = -1 is the last position: the TOKEN_LOSS metric needs a next token");
    const int64_t outside[B] = {0, 4};
    m.positions = outside;
    CALL_FAILS("metric_token_loss_position_outside", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_RANGE,
               "positions[1] = 4 is outside [-4, 4)");
    const int32_t bad_tok[B * T] = {1, 4, 0, 2, 3, 3, 9, 4};
    m.positions = pos, m.tokens = bad_tok;
    CALL_FAILS("metric_token_loss_target_outside_vocab", circuits_metric_eval(&m, logits, B, T, V, &v),
               CIRCUITS_E_RANGE, "target tokens[1, 2] = 9 is outside d_vocab_out = 5");
    m.positions = NULL;
    CALL_FAILS("metric_token_loss_one_position", circuits_metric_eval(&m, logits, B, 1, V, &v), CIRCUITS_E_SHAPE,
               "the TOKEN_LOSS metric needs at least 2 positions (got 1)");
    m.tokens = NULL;
    CALL_FAILS("metric_token_loss_without_tokens", circuits_metric_eval(&m, logits, B, T, V, &v),
               CIRCUITS_E_INVALID_ARGUMENT, "the TOKEN_LOSS metric needs tokens [batch, pos]; it is NULL");

    /* HOOK_LINEAR reads an activation: checked, then refused by the evaluation of logits */
    const float dir[1] = {1.0f};
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_HOOK_LINEAR, m.direction = dir;
    CALL_FAILS("metric_hook_linear_hook_null", circuits_metric_eval(&m, logits, B, T, V, &v),
               CIRCUITS_E_INVALID_ARGUMENT, "the HOOK_LINEAR metric needs hook (a hook point name); it is NULL");
    m.hook = "blocks.0.hook_resid_post", m.direction = NULL;
    CALL_FAILS("metric_hook_linear_direction_null", circuits_metric_eval(&m, logits, B, T, V, &v),
               CIRCUITS_E_INVALID_ARGUMENT, "the HOOK_LINEAR metric needs direction; it is NULL");
    m.direction = dir;
    v = 5.0f;
    CALL_FAILS("metric_hook_linear_not_logits", circuits_metric_eval(&m, logits, B, T, V, &v),
               CIRCUITS_E_INVALID_ARGUMENT, "reads a hook point's activation, not the logits: only gradient runs");
    CHECK(v == 5.0f, "a refused HOOK_LINEAR wrote the value");

    /* GRAD_CALLBACK: evaluable (its gradient into scratch, freed); its failures */
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_GRAD_CALLBACK, m.grad_fn = gcb_value;
    CHECK_OK(circuits_metric_eval(&m, logits, B, T, V, &v));
    CHECK(v == 3.0f * logits[(1 * T + 2) * V + 4], "GRAD_CALLBACK value %g", v);
    m.fn = cb_fail; /* fn is CALLBACK's: not called */
    CHECK_OK(circuits_metric_eval(&m, logits, B, T, V, &v));
    m.grad_fn = gcb_fail;
    CALL_FAILS("metric_grad_callback_fails", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_CALLBACK,
               "the metric's grad_fn returned -3");
    m.grad_fn = gcb_nan;
    CALL_FAILS("metric_grad_callback_nan_value", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_CALLBACK,
               "the metric's grad_fn gave the value nan (not finite)");
    m.grad_fn = gcb_inf_grad;
    CALL_FAILS("metric_grad_callback_inf_grad", circuits_metric_eval(&m, logits, B, T, V, &v), CIRCUITS_E_CALLBACK,
               "the metric's grad_fn gave grad[0, 1, 2] = -inf (not finite)");
    m.grad_fn = NULL;
    CALL_FAILS("metric_grad_callback_null", circuits_metric_eval(&m, logits, B, T, V, &v),
               CIRCUITS_E_INVALID_ARGUMENT, "the GRAD_CALLBACK metric's grad_fn is NULL");

    /* a 0.5.0 caller's struct ends before hook: accepted, the new fields read as NULL */
    struct {
        circuits_metric m;
        char poison[64];
    } old;
    memset(&old, 0x5A, sizeof old);
    circuits_metric_init(&m);
    const int32_t ans[B] = {1, 2};
    m.kind = CIRCUITS_METRIC_LOGIT, m.answer = ans;
    memcpy(&old.m, &m, offsetof(circuits_metric, hook));
    old.m.size = (uint32_t)offsetof(circuits_metric, hook);
    CHECK_OK(circuits_metric_eval(&old.m, logits, B, T, V, &v));
    CHECK(fabs(v - (logits[(0 * T + 3) * V + 1] + logits[(1 * T + 3) * V + 2]) / 2.0) < 1e-6, "0.5-sized metric %g", v);
    old.m.kind = CIRCUITS_METRIC_HOOK_LINEAR; /* its hook is past the struct: NULL, not the poison */
    CHECK_FAILS(circuits_metric_eval(&old.m, logits, B, T, V, &v), CIRCUITS_E_INVALID_ARGUMENT, "hook");
}

/* A NaN logit makes its row's loss NaN, as libm's exp and torch's cross_entropy do (the
 * vectorised exp_poly_d once returned 0 for NaN, and the loss came back finite, ignoring it);
 * the other rows are untouched. Checked through circuits_lm_cross_entropy and the LOSS metric. */
static void test_nan_logits(void)
{
    enum { NB = 1, NT = 3, NV = 20 };
    float lg[NB * NT * NV];
    for (int i = 0; i < NB * NT * NV; i++) lg[i] = (float)((i * 7) % 11) * 0.25f;
    lg[0 * NV + 5] = NAN; /* row 0, not at its target */
    int32_t tok[NB * NT] = {1, 2, 3};
    float per[NB * (NT - 1)], loss = 0.0f;
    CHECK_OK(circuits_lm_cross_entropy(lg, tok, NULL, NB, NT, NV, per, &loss));
    CHECK(isnan(per[0]) && isfinite(per[1]) && isnan(loss), "NaN logit: per-token %g, %g, loss %g (want NaN, finite, "
          "NaN)", per[0], per[1], loss);
    circuits_metric m;
    circuits_metric_init(&m);
    m.kind = CIRCUITS_METRIC_LOSS;
    m.tokens = tok;
    float v = 0.0f;
    CHECK_OK(circuits_metric_eval(&m, lg, NB, NT, NV, &v));
    CHECK(isnan(v), "LOSS metric of a NaN logit: %g", v);
}

int main(int argc, char **argv)
{
    cat_verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    uint64_t s = 12345;
    for (int i = 0; i < B * T * V; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        logits[i] = (float)((double)(s >> 40) / (double)(1ull << 24) * 8.0 - 4.0);
    }
    test_loss();
    test_metrics();
    test_metrics_07();
    test_nan_logits();
    return tu_finish("test_metric");
}
