/* Behavioural head detectors (TransformerLens head_detector.py) and the induction score on
 * repeated random tokens (TransformerLens Main_Demo), computed from hook_pattern during a run. */
#include "context.h"
#include "rng.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

typedef struct detect_run {
    const int32_t *tokens;
    const int32_t *mask;   /* [B, T] attention mask, or NULL */
    int64_t *real;         /* [T] scratch: the real positions of one row */
    int64_t B, T, H;
    int32_t kind, measure, excl_bos, excl_cur;
    const float *custom;   /* [T, T] for CIRCUITS_HEAD_CUSTOM */
    double *acc;           /* [L, H]: sum over the batch */
} detect_run;

/* The detection pattern of sequence b at (i, j), j <= i (all patterns are lower triangular), in
 * the row's real positions: token i is t[real[i]]. */
static float det(const detect_run *r, const int32_t *t, const int64_t *real, int64_t i, int64_t j)
{
    switch (r->kind) {
    case CIRCUITS_HEAD_PREVIOUS_TOKEN: return j == i - 1;
    case CIRCUITS_HEAD_DUPLICATE_TOKEN: return j < i && t[real[j]] == t[real[i]];
    case CIRCUITS_HEAD_INDUCTION: return j >= 1 && j <= i && t[real[j - 1]] == t[real[i]] && j - 1 != i;
    default: return r->custom[i * r->T + j];
    }
}

/* pattern [B, H, T, T]. With a mask each row is scored on its real positions only, as if run
 * alone (batch invariance): position 0 is its first real token, T its number of real ones. */
static int detect_hook(const circuits_tensor *p, void *user)
{
    detect_run *r = user;
    int64_t *real = r->real;
    for (int64_t b = 0; b < r->B; b++) {
        int64_t T = 0;
        for (int64_t t = 0; t < r->T; t++)
            if (!r->mask || r->mask[b * r->T + t]) real[T++] = t;
        for (int64_t h = 0; h < r->H; h++) {
            const float *P = p->data + b * p->strides[0] + h * p->strides[1];
            double num = 0, den = 0;
            for (int64_t i = 0; i < T; i++)
                for (int64_t j = 0; j < T; j++) {
                    bool masked = (r->excl_bos && j == 0) || (r->excl_cur && i == j);
                    double a = P[real[i] * r->T + real[j]], d = j <= i ? det(r, r->tokens + b * r->T, real, i, j) : 0.0;
                    if (r->measure == CIRCUITS_DETECT_MUL) {
                        if (masked) continue;
                        num += a * d;
                        den += a;
                    } else if (!masked) {
                        num += fabs(a - d);
                    }
                }
            /* mul: share of the attention on the pattern; abs: 1 - mean |P - det| * T */
            double s = r->measure == CIRCUITS_DETECT_MUL ? num / den : 1.0 - num / (double)T;
            r->acc[p->layer * r->H + h] += s;
        }
    }
    return CIRCUITS_HOOK_CONTINUE;
}

void circuits_detect_options_init(circuits_detect_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->error_measure = CIRCUITS_DETECT_MUL;
}

int circuits_context_detect_heads(circuits_context *ctx, const int32_t *tokens, int64_t batch, int64_t pos,
                                  int32_t kind, const float *custom_pattern, const circuits_detect_options *opts,
                                  float *out)
{
    if (!ctx || !tokens || !out)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_detect_heads: ctx, tokens and out must not be NULL");
    const char *fn = "circuits_context_detect_heads";
    circuits_detect_options o;
    circuits_detect_options_init(&o);
    static const size_t versions[] = {offsetof(circuits_detect_options, attention_mask), /* 0.1 */
                                      sizeof(circuits_detect_options)};
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn))) return rc;
    if (kind < CIRCUITS_HEAD_PREVIOUS_TOKEN || kind > CIRCUITS_HEAD_CUSTOM)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "unknown head kind %d", kind);
    if (kind == CIRCUITS_HEAD_CUSTOM && !custom_pattern)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "CIRCUITS_HEAD_CUSTOM needs a [pos, pos] detection pattern");
    if (o.error_measure != CIRCUITS_DETECT_MUL && o.error_measure != CIRCUITS_DETECT_ABS)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "error_measure must be CIRCUITS_DETECT_MUL or CIRCUITS_DETECT_ABS");
    if (pos < 2) return cx_fail(CIRCUITS_E_SHAPE, "head detection needs at least 2 positions");
    /* before the [pos, pos] pattern is read: pos must be one the model can run */
    if (pos > ctx->model->cfg.n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_context_detect_heads: %lld positions exceed the model's n_ctx = %d",
                       (long long)pos, ctx->model->cfg.n_ctx);
    if (custom_pattern)
        for (int64_t i = 0; i < pos; i++)
            for (int64_t j = i + 1; j < pos; j++)
                if (custom_pattern[i * pos + j] != 0.0f)
                    return cx_fail(CIRCUITS_E_SHAPE, "the detection pattern must be lower triangular ([%lld, %lld] is not 0)",
                                   (long long)i, (long long)j);
    const circuits_config *c = &ctx->model->cfg;
    size_t LH = (size_t)c->n_layers * (size_t)c->n_heads;
    detect_run r = {tokens, o.attention_mask, cx_malloc((size_t)pos * sizeof(int64_t)), batch, pos, c->n_heads, kind,
                    o.error_measure, o.exclude_bos != 0, o.exclude_current_token != 0, custom_pattern,
                    cx_calloc(LH, sizeof(double))};
    rc = !r.acc || !r.real ? cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory detecting heads") : CIRCUITS_OK;
    cx_run run = cx_run_init(ctx, fn, tokens, batch, pos);
    run.observer = (cx_observer){detect_hook, HK_PATTERN, &r};
    run.attention_mask = o.attention_mask; /* the pass checks it before the observer reads it */
    if (!rc) rc = cx_context_run(ctx, &run);
    if (!rc)
        for (size_t k = 0; k < LH; k++) out[k] = (float)(r.acc[k] / (double)batch);
    cx_free(r.real);
    cx_free(r.acc);
    return rc;
}

/* ---- induction on repeated random tokens ---- */

int circuits_repeated_tokens(int64_t batch, int64_t seq_len, int32_t d_vocab, uint64_t seed, int32_t bos, int32_t *out)
{
    const char *fn = "circuits_repeated_tokens";
    if (!out) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (batch < 1 || seq_len < 1 || d_vocab < 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: batch %lld, seq_len %lld and d_vocab %d must be at least 1", fn,
                       (long long)batch, (long long)seq_len, d_vocab);
    /* out [batch, 2 * seq_len + 1] must be addressable: no buffer that size can exist beyond that */
    if (seq_len > INT32_MAX || batch > INT64_MAX / (2 * seq_len + 1) / (int64_t)sizeof *out)
        return cx_fail(CIRCUITS_E_RANGE, "%s: batch %lld x seq_len %lld is too large", fn, (long long)batch,
                       (long long)seq_len);
    int64_t T = 2 * seq_len + (bos >= 0);
    uint64_t s = seed;
    for (int64_t b = 0; b < batch; b++) {
        int32_t *row = out + b * T;
        if (bos >= 0) *row++ = bos;
        for (int64_t i = 0; i < seq_len; i++) row[i] = row[seq_len + i] = (int32_t)(cx_splitmix64(&s) % (uint64_t)d_vocab);
    }
    return CIRCUITS_OK;
}

typedef struct induction_run {
    int64_t B, T, H, L; /* L: length of the repeated block */
    double *acc;
} induction_run;

static int induction_hook(const circuits_tensor *p, void *user)
{
    induction_run *r = user;
    int64_t n = r->T - (r->L - 1); /* entries of the diagonal at offset 1 - L */
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t h = 0; h < r->H; h++) {
            const float *P = p->data + b * p->strides[0] + h * p->strides[1];
            double s = 0;
            for (int64_t i = r->L - 1; i < r->T; i++) s += P[i * r->T + i - (r->L - 1)];
            r->acc[p->layer * r->H + h] += s / (double)n;
        }
    return CIRCUITS_HOOK_CONTINUE;
}

int circuits_context_induction_scores(circuits_context *ctx, const int32_t *tokens, int64_t batch, int64_t pos,
                                      int64_t seq_len, float *scores, float *loss_first, float *loss_repeat)
{
    if (!ctx || !tokens || !scores)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_context_induction_scores: ctx, tokens and scores must not be NULL");
    const char *fn = "circuits_context_induction_scores";
    int rc;
    /* seq_len is bounded first so that 2 * seq_len cannot overflow */
    if (seq_len < 2 || seq_len > INT32_MAX || (pos != 2 * seq_len && pos != 2 * seq_len + 1))
        return cx_fail(CIRCUITS_E_SHAPE, "induction scores need tokens [batch, 2 * seq_len (+1 with a BOS)], seq_len >= 2; got pos %lld, seq_len %lld",
                       (long long)pos, (long long)seq_len);
    const circuits_config *c = &ctx->model->cfg;
    if (batch < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "circuits_context_induction_scores: batch %lld must be at least 1",
                       (long long)batch);
    /* checked here, before per_token_loss [batch, pos - 1] is allocated */
    if (pos > c->n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_context_induction_scores: %lld positions exceed the model's n_ctx = %d",
                       (long long)pos, c->n_ctx);
    if (batch > INT64_MAX / pos / (int64_t)sizeof(float))
        return cx_fail(CIRCUITS_E_RANGE, "circuits_context_induction_scores: batch %lld is too large", (long long)batch);
    size_t LH = (size_t)c->n_layers * (size_t)c->n_heads;
    /* the losses need the logits; the scores need only the patterns (and so no target token
     * has to be a row of the unembedding: TransformerLens scores such models too) */
    bool want_loss = loss_first || loss_repeat;
    induction_run r = {batch, pos, c->n_heads, seq_len, cx_calloc(LH, sizeof(double))};
    float *ptl = want_loss ? cx_malloc((size_t)(batch * (pos - 1)) * sizeof *ptl) : NULL;
    rc = (!r.acc || (want_loss && !ptl)) ? cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory scoring induction")
                                         : CIRCUITS_OK;
    if (!rc) {
        cx_run run = cx_run_init(ctx, fn, tokens, batch, pos);
        run.observer = (cx_observer){induction_hook, HK_PATTERN, &r};
        run.per_token_loss = ptl;
        rc = cx_context_run(ctx, &run);
    }
    if (!rc) for (size_t k = 0; k < LH; k++) scores[k] = (float)(r.acc[k] / (double)batch);
    if (!rc && want_loss) {
        /* per_token_loss[b, i] predicts token i + 1. First block: its tokens 2..L; repeat: its
         * tokens 2..L, which induction can predict (its first token cannot be). */
        int64_t off = pos - 2 * seq_len; /* 1 with a BOS */
        double f = 0, s = 0;
        for (int64_t b = 0; b < batch; b++)
            for (int64_t k = 1; k < seq_len; k++) {
                f += ptl[b * (pos - 1) + off + k - 1];
                s += ptl[b * (pos - 1) + off + seq_len + k - 1];
            }
        if (loss_first) *loss_first = (float)(f / (double)(batch * (seq_len - 1)));
        if (loss_repeat) *loss_repeat = (float)(s / (double)(batch * (seq_len - 1)));
    }
    cx_free(r.acc);
    cx_free(ptl);
    return rc;
}
