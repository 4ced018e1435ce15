/* The next-token loss, as TransformerLens's lm_cross_entropy_loss: log_softmax over the vocabulary,
 * the log-probability of each next token, pairs (i, i + 1) that the attention mask does not fully
 * include set to 0 and left out of the mean. Sums run in double: the result is the float nearest
 * the exact mean, where torch's fp32 reduction may differ in the last bits (docs/differences.md). */
#include "loss.h"

#include "kernels.h"

int cx_lm_loss_check(const int32_t *tokens, const int32_t *mask, int64_t B, int64_t T, int64_t V, const char *fn)
{
    if (T < 2) return cx_fail(CIRCUITS_E_SHAPE, "%s: the loss needs at least 2 positions (got %lld)", fn, (long long)T);
    for (int64_t i = 0; i < B * T; i++) {
        if (i % T > 0 && (tokens[i] < 0 || tokens[i] >= V))
            return cx_fail(CIRCUITS_E_RANGE, "%s: target token %d at [%lld, %lld] is outside d_vocab = %lld", fn,
                           tokens[i], (long long)(i / T), (long long)(i % T), (long long)V);
        if (mask && mask[i] != 0 && mask[i] != 1)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: attention_mask[%lld, %lld] is %d (must be 0 or 1)", fn,
                           (long long)(i / T), (long long)(i % T), mask[i]);
    }
    return CIRCUITS_OK;
}

int cx_lm_loss(const float *logits, const int32_t *tokens, const int32_t *mask, int64_t B, int64_t T, int64_t V,
               float *per_token, float *loss, const char *fn)
{
    double total = 0.0;
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i + 1 < T; i++) {
            bool in = !mask || (mask[b * T + i] && mask[b * T + i + 1]);
            double nll = in ? cx_nll_row(logits + (b * T + i) * V, V, tokens[b * T + i + 1]) : 0.0;
            if (per_token) per_token[b * (T - 1) + i] = (float)nll;
            total += nll;
            n += in;
        }
    if (!loss) return CIRCUITS_OK;
    if (n == 0)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the attention mask includes no (token, next token) pair: the loss has no mean",
                       fn);
    *loss = (float)(total / (double)n);
    return CIRCUITS_OK;
}

int cx_logits_shape_check(int64_t batch, int64_t pos, int64_t d_vocab, const char *fn)
{
    if (batch < 1 || pos < 1 || d_vocab < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: shape [%lld, %lld, %lld]: every dimension must be at least 1", fn,
                       (long long)batch, (long long)pos, (long long)d_vocab);
    if (batch > INT64_MAX / pos || batch * pos > (int64_t)(SIZE_MAX / sizeof(float)) / d_vocab)
        return cx_fail(CIRCUITS_E_RANGE, "%s: shape [%lld, %lld, %lld] is too large", fn, (long long)batch,
                       (long long)pos, (long long)d_vocab);
    return CIRCUITS_OK;
}

int circuits_lm_cross_entropy(const float *logits, const int32_t *tokens, const int32_t *attention_mask, int64_t batch,
                              int64_t pos, int64_t d_vocab, float *per_token, float *loss)
{
    static const char fn[] = "circuits_lm_cross_entropy";
    if (!logits || !tokens) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: logits or tokens is NULL", fn);
    int rc = cx_logits_shape_check(batch, pos, d_vocab, fn);
    if (rc) return rc;
    if ((rc = cx_lm_loss_check(tokens, attention_mask, batch, pos, d_vocab, fn))) return rc;
    return cx_lm_loss(logits, tokens, attention_mask, batch, pos, d_vocab, per_token, loss, fn);
}
