/* Metrics: a scalar from the logits, the mean over the batch of one value per row (LOSS: the
 * masked mean over token pairs), or a caller's function. Values are computed in double and
 * rounded once. */
#include "metric.h"

#include <math.h>
#include <string.h>

#include "kernels.h"
#include "loss.h"

void circuits_metric_init(circuits_metric *m)
{
    if (!m) return;
    memset(m, 0, sizeof *m);
    m->size = sizeof *m;
    m->kind = CIRCUITS_METRIC_LOGIT_DIFF;
}

bool cx_metric_reads_all(const circuits_metric *m)
{
    return m->kind == CIRCUITS_METRIC_LOSS || m->kind == CIRCUITS_METRIC_CALLBACK;
}

int64_t cx_metric_row_pos(const circuits_metric *m, int64_t b, int64_t T)
{
    int64_t p = m->positions ? m->positions[b] : -1;
    return p < 0 ? p + T : p;
}

static int check_ids(const int32_t *ids, const char *what, int64_t B, int64_t V, const char *fn)
{
    if (!ids) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: this metric needs %s [batch]; it is NULL", fn, what);
    for (int64_t b = 0; b < B; b++)
        if (ids[b] < 0 || ids[b] >= V)
            return cx_fail(CIRCUITS_E_RANGE, "%s: metric %s[%lld] = %d is outside d_vocab_out = %lld", fn, what,
                           (long long)b, ids[b], (long long)V);
    return CIRCUITS_OK;
}

int cx_metric_check(const circuits_metric *m, circuits_metric *out, int64_t B, int64_t T, int64_t V, const char *fn)
{
    if (!m) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: metric is NULL", fn);
    circuits_metric_init(out);
    static const size_t versions[] = {sizeof(circuits_metric)}; /* 0.5 */
    int rc = cx_options_copy(out, m, versions, CX_COUNT(versions), fn);
    if (rc) return rc;
    switch (out->kind) {
    case CIRCUITS_METRIC_LOGIT_DIFF:
        if ((rc = check_ids(out->wrong, "wrong", B, V, fn))) return rc;
        /* fall through */
    case CIRCUITS_METRIC_LOGIT:
    case CIRCUITS_METRIC_PROB:
    case CIRCUITS_METRIC_LOG_PROB:
        if ((rc = check_ids(out->answer, "answer", B, V, fn))) return rc;
        if (out->positions)
            for (int64_t b = 0; b < B; b++)
                if (out->positions[b] < -T || out->positions[b] >= T)
                    return cx_fail(CIRCUITS_E_RANGE, "%s: metric positions[%lld] = %lld is outside [-%lld, %lld)", fn,
                                   (long long)b, (long long)out->positions[b], (long long)T, (long long)T);
        return CIRCUITS_OK;
    case CIRCUITS_METRIC_LOSS:
        if (!out->tokens)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the LOSS metric needs tokens [batch, pos]; it is NULL", fn);
        if ((rc = cx_lm_loss_check(out->tokens, out->attention_mask, B, T, V, fn))) return rc;
        /* refused here, before a patching run has written anything, not at the first value */
        if (out->attention_mask) {
            bool pair = false;
            for (int64_t i = 0; i < B * T && !pair; i++)
                pair = i % T + 1 < T && out->attention_mask[i] && out->attention_mask[i + 1];
            if (!pair)
                return cx_fail(CIRCUITS_E_SHAPE,
                               "%s: the LOSS metric's attention mask includes no (token, next token) pair", fn);
        }
        return CIRCUITS_OK;
    case CIRCUITS_METRIC_CALLBACK:
        if (!out->fn) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the CALLBACK metric's fn is NULL", fn);
        return CIRCUITS_OK;
    default:
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: unknown metric kind %d", fn, out->kind);
    }
}

int64_t cx_metric_positions(const circuits_metric *m, int64_t B, int64_t T, int64_t *pos)
{
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t p = cx_metric_row_pos(m, b, T), i = n;
        bool seen = false;
        for (int64_t j = 0; j < n && !seen; j++) seen = pos[j] == p;
        if (seen) continue;
        while (i > 0 && pos[i - 1] > p) { pos[i] = pos[i - 1]; i--; } /* insertion keeps them ascending */
        pos[i] = p;
        n++;
    }
    return n;
}

/* log_softmax(row)[k] in double */
static double log_prob(const float *row, int64_t V, int32_t k) { return -cx_nll_row(row, V, k); }

int cx_metric_value(const circuits_metric *m, const float *logits, int64_t B, int64_t T, int64_t V,
                    const int64_t *logit_pos, int64_t n_logit_pos, float *value, const char *fn)
{
    if (m->kind == CIRCUITS_METRIC_LOSS)
        return cx_lm_loss(logits, m->tokens, m->attention_mask, B, T, V, NULL, value, fn);
    if (m->kind == CIRCUITS_METRIC_CALLBACK) {
        float v = 0.0f;
        int rc = m->fn(logits, B, T, V, &v, m->user_data);
        if (rc < 0) return cx_fail(CIRCUITS_E_CALLBACK, "%s: the metric callback returned %d", fn, rc);
        *value = v;
        return CIRCUITS_OK;
    }
    int64_t P = logit_pos ? n_logit_pos : T;
    double total = 0.0;
    for (int64_t b = 0; b < B; b++) {
        int64_t p = cx_metric_row_pos(m, b, T), k = p;
        if (logit_pos)
            for (k = 0; k < n_logit_pos && logit_pos[k] != p; k++) {}
        const float *row = logits + (b * P + k) * V;
        double x;
        switch (m->kind) {
        case CIRCUITS_METRIC_LOGIT_DIFF: x = (double)row[m->answer[b]] - (double)row[m->wrong[b]]; break;
        case CIRCUITS_METRIC_LOGIT: x = row[m->answer[b]]; break;
        case CIRCUITS_METRIC_PROB: x = exp(log_prob(row, V, m->answer[b])); break;
        default: x = log_prob(row, V, m->answer[b]); break;
        }
        total += x;
    }
    *value = (float)(total / (double)B);
    return CIRCUITS_OK;
}

int circuits_metric_eval(const circuits_metric *m, const float *logits, int64_t batch, int64_t pos, int64_t d_vocab,
                         float *value)
{
    static const char fn[] = "circuits_metric_eval";
    if (!logits || !value) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: logits or value is NULL", fn);
    int rc = cx_logits_shape_check(batch, pos, d_vocab, fn);
    if (rc) return rc;
    circuits_metric mm;
    if ((rc = cx_metric_check(m, &mm, batch, pos, d_vocab, fn))) return rc;
    return cx_metric_value(&mm, logits, batch, pos, d_vocab, NULL, 0, value, fn);
}
