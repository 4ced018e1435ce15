/* Metrics: a scalar from the logits, the mean over the batch of one value per row (LOSS: the
 * masked mean over token pairs), or a caller's function; and (0.7.0) their gradients with respect
 * to the logits, for the backward pass. Values are computed in double and rounded once. */
#include "metric.h"

#include <math.h>
#include <string.h>

#include "kernels.h"
#include "loss.h"
#include "pool.h"

#include <stddef.h>

void circuits_metric_init(circuits_metric *m)
{
    if (!m) return;
    memset(m, 0, sizeof *m);
    m->size = sizeof *m;
    m->kind = CIRCUITS_METRIC_LOGIT_DIFF;
}

bool cx_metric_reads_all(const circuits_metric *m)
{
    return m->kind == CIRCUITS_METRIC_LOSS || m->kind == CIRCUITS_METRIC_CALLBACK ||
           m->kind == CIRCUITS_METRIC_GRAD_CALLBACK;
}

int cx_metric_logits_check(const circuits_metric *m, const char *fn)
{
    if (m->kind == CIRCUITS_METRIC_HOOK_LINEAR)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "%s: the HOOK_LINEAR metric reads a hook point's activation, not the logits: only gradient "
                       "runs (circuits_context_backward, the attribution functions) take it",
                       fn);
    return CIRCUITS_OK;
}

/* TOKEN_LOSS's default is the second-to-last position: the loss of predicting the last token. */
int64_t cx_metric_row_pos(const circuits_metric *m, int64_t b, int64_t T)
{
    int64_t p = m->positions ? m->positions[b] : m->kind == CIRCUITS_METRIC_TOKEN_LOSS ? -2 : -1;
    return p < 0 ? p + T : p;
}

static int check_positions(const circuits_metric *m, int64_t B, int64_t T, const char *fn)
{
    if (!m->positions) return CIRCUITS_OK;
    for (int64_t b = 0; b < B; b++)
        if (m->positions[b] < -T || m->positions[b] >= T)
            return cx_fail(CIRCUITS_E_RANGE, "%s: metric positions[%lld] = %lld is outside [-%lld, %lld)", fn,
                           (long long)b, (long long)m->positions[b], (long long)T, (long long)T);
    return CIRCUITS_OK;
}

/* TOKEN_LOSS: tokens [B, T], each row's position before the last, its next token a vocabulary id. */
static int check_token_loss(const circuits_metric *m, int64_t B, int64_t T, int64_t V, const char *fn)
{
    if (!m->tokens)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the TOKEN_LOSS metric needs tokens [batch, pos]; it is NULL",
                       fn);
    if (T < 2)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the TOKEN_LOSS metric needs at least 2 positions (got %lld)", fn,
                       (long long)T);
    int rc = check_positions(m, B, T, fn);
    if (rc) return rc;
    for (int64_t b = 0; b < B; b++) {
        int64_t p = cx_metric_row_pos(m, b, T);
        if (p == T - 1)
            return cx_fail(CIRCUITS_E_RANGE,
                           "%s: metric positions[%lld] = %lld is the last position: the TOKEN_LOSS metric needs a next "
                           "token",
                           fn, (long long)b, (long long)m->positions[b]);
        int32_t t = m->tokens[b * T + p + 1];
        if (t < 0 || t >= V)
            return cx_fail(CIRCUITS_E_RANGE, "%s: the TOKEN_LOSS metric's target tokens[%lld, %lld] = %d is outside "
                           "d_vocab_out = %lld", fn, (long long)b, (long long)(p + 1), t, (long long)V);
    }
    return CIRCUITS_OK;
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
    static const size_t versions[] = {offsetof(circuits_metric, hook), sizeof(circuits_metric)}; /* 0.5, 0.7 */
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
        return check_positions(out, B, T, fn);
    case CIRCUITS_METRIC_TOKEN_LOSS: return check_token_loss(out, B, T, V, fn);
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
    case CIRCUITS_METRIC_HOOK_LINEAR: /* the direction's shape is the hook's: the gradient run checks it */
        if (!out->hook)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the HOOK_LINEAR metric needs hook (a hook point name); "
                           "it is NULL", fn);
        if (!out->direction)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the HOOK_LINEAR metric needs direction; it is NULL", fn);
        return CIRCUITS_OK;
    case CIRCUITS_METRIC_GRAD_CALLBACK:
        if (!out->grad_fn)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the GRAD_CALLBACK metric's grad_fn is NULL", fn);
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

/* GRAD_CALLBACK: grad [B, T, V] zeroed, grad_fn, then its value and gradient refused unless finite
 * (a NaN would otherwise run silently through the whole backward pass). */
static int grad_callback(const circuits_metric *m, const float *logits, int64_t B, int64_t T, int64_t V,
                         float *value, float *grad, const char *fn)
{
    size_t n = (size_t)(B * T) * (size_t)V;
    memset(grad, 0, n * sizeof *grad);
    float v = 0.0f;
    int rc = m->grad_fn(logits, B, T, V, &v, grad, m->user_data);
    if (rc < 0) return cx_fail(CIRCUITS_E_CALLBACK, "%s: the metric's grad_fn returned %d", fn, rc);
    if (!isfinite(v)) return cx_fail(CIRCUITS_E_CALLBACK, "%s: the metric's grad_fn gave the value %g (not finite)", fn, v);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(grad[i]))
            return cx_fail(CIRCUITS_E_CALLBACK, "%s: the metric's grad_fn gave grad[%lld, %lld, %lld] = %g (not finite)",
                           fn, (long long)(i / (size_t)V / (size_t)T), (long long)(i / (size_t)V % (size_t)T),
                           (long long)(i % (size_t)V), grad[i]);
    *value = v;
    return CIRCUITS_OK;
}

int cx_metric_value(const circuits_metric *m, const float *logits, int64_t B, int64_t T, int64_t V,
                    const int64_t *logit_pos, int64_t n_logit_pos, float *value, const char *fn)
{
    int rc = cx_metric_logits_check(m, fn);
    if (rc) return rc;
    if (m->kind == CIRCUITS_METRIC_LOSS)
        return cx_lm_loss(logits, m->tokens, m->attention_mask, B, T, V, NULL, value, fn);
    if (m->kind == CIRCUITS_METRIC_GRAD_CALLBACK) { /* the gradient, unused, into scratch */
        float *grad = cx_malloc((size_t)(B * T) * (size_t)V * sizeof *grad);
        if (!grad) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory (the grad_fn's gradient)", fn);
        rc = grad_callback(m, logits, B, T, V, value, grad, fn);
        cx_free(grad);
        return rc;
    }
    if (m->kind == CIRCUITS_METRIC_CALLBACK) {
        float v = 0.0f;
        rc = m->fn(logits, B, T, V, &v, m->user_data);
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
        case CIRCUITS_METRIC_TOKEN_LOSS: x = cx_nll_row(row, V, m->tokens[b * T + p + 1]); break;
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
    if ((rc = cx_metric_logits_check(&mm, fn))) return rc;
    return cx_metric_value(&mm, logits, batch, pos, d_vocab, NULL, 0, value, fn);
}

/* ---- gradients (0.7.0) ---- */

/* LOSS, row by row over the pool: each included pair's row gets (softmax - onehot(target)) / n, its
 * nll (cx_nll_row's arithmetic via cx_lse_row, so the value equals cx_lm_loss's) into nll[r]; other
 * rows get 0. */
typedef struct loss_grad_job {
    const float *logits;
    const int32_t *tokens, *mask;
    int64_t T, V;
    double inv_n;
    float *grad;
    double *nll;
} loss_grad_job;

static void loss_grad_task(void *arg, int64_t r0, int64_t r1)
{
    const loss_grad_job *j = arg;
    int64_t T = j->T, V = j->V;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->logits + r * V;
        float *g = j->grad + r * V;
        int64_t i = r % T;
        bool in = i + 1 < T && (!j->mask || (j->mask[r] && j->mask[r + 1]));
        j->nll[r] = 0.0;
        if (!in) {
            memset(g, 0, (size_t)V * sizeof *g);
            continue;
        }
        int32_t t = j->tokens[r + 1];
        float mx;
        double sum = cx_lse_row(x, V, &mx, g); /* the exps kept in g for the second pass */
        j->nll[r] = -((double)x[t] - mx - log(sum));
        double k = j->inv_n / sum;
        for (int64_t c = 0; c < V; c++) g[c] = (float)(g[c] * k);
        g[t] = (float)((double)g[t] - j->inv_n);
    }
}

static int loss_grad(const circuits_metric *m, const float *logits, int64_t B, int64_t T, int64_t V, float *value,
                     float *grad, const char *fn)
{
    int64_t n = 0;
    for (int64_t r = 0; r < B * T; r++)
        n += r % T + 1 < T && (!m->attention_mask || (m->attention_mask[r] && m->attention_mask[r + 1]));
    if (n == 0) /* cx_metric_check refuses such a mask; kept for a caller that did not */
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the attention mask includes no (token, next token) pair: the loss has no mean",
                       fn);
    double *nll = cx_malloc((size_t)(B * T) * sizeof *nll);
    if (!nll) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory (the loss's rows)", fn);
    loss_grad_job j = {logits, m->tokens, m->attention_mask, T, V, 1.0 / (double)n, grad, nll};
    cx_parallel_for(B * T, cx_rows_align(V), loss_grad_task, &j);
    double total = 0.0; /* in cx_lm_loss's order */
    for (int64_t r = 0; r < B * T; r++) total += nll[r];
    cx_free(nll);
    *value = (float)(total / (double)n);
    return CIRCUITS_OK;
}

int cx_metric_grad(const circuits_metric *m, const float *logits, int64_t B, int64_t T, int64_t V, float *value,
                   float *grad, const char *fn)
{
    size_t n = (size_t)(B * T) * (size_t)V;
    switch (m->kind) {
    case CIRCUITS_METRIC_CALLBACK:
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                       "%s: the CALLBACK metric has no gradient: use CIRCUITS_METRIC_GRAD_CALLBACK, whose grad_fn "
                       "returns the metric and its gradient",
                       fn);
    case CIRCUITS_METRIC_HOOK_LINEAR: memset(grad, 0, n * sizeof *grad); return CIRCUITS_OK;
    case CIRCUITS_METRIC_GRAD_CALLBACK: return grad_callback(m, logits, B, T, V, value, grad, fn);
    case CIRCUITS_METRIC_LOSS: return loss_grad(m, logits, B, T, V, value, grad, fn);
    default: break;
    }
    /* one row per batch entry, each its own (b, p_b): the mean's 1/B on every row's gradient */
    float v;
    int rc = cx_metric_value(m, logits, B, T, V, NULL, 0, &v, fn);
    if (rc) return rc;
    memset(grad, 0, n * sizeof *grad);
    double inv_b = 1.0 / (double)B;
    for (int64_t b = 0; b < B; b++) {
        int64_t p = cx_metric_row_pos(m, b, T);
        const float *x = logits + (b * T + p) * V;
        float *g = grad + (b * T + p) * V;
        if (m->kind == CIRCUITS_METRIC_LOGIT_DIFF || m->kind == CIRCUITS_METRIC_LOGIT) {
            g[m->answer[b]] += (float)inv_b;
            if (m->kind == CIRCUITS_METRIC_LOGIT_DIFF) g[m->wrong[b]] -= (float)inv_b;
            continue;
        }
        /* PROB, LOG_PROB, TOKEN_LOSS: through softmax q: d log q_k = onehot(k) - q, d q_k = q_k d log q_k */
        int32_t k = m->kind == CIRCUITS_METRIC_TOKEN_LOSS ? m->tokens[b * T + p + 1] : m->answer[b];
        float mx = -INFINITY;
        for (int64_t c = 0; c < V; c++) mx = x[c] > mx ? x[c] : mx;
        double sum = 0.0;
        for (int64_t c = 0; c < V; c++) sum += exp((double)x[c] - mx);
        double scale = m->kind == CIRCUITS_METRIC_LOG_PROB ? inv_b
                       : m->kind == CIRCUITS_METRIC_TOKEN_LOSS ? -inv_b
                                                                : inv_b * exp((double)x[k] - mx) / sum;
        for (int64_t c = 0; c < V; c++) g[c] = (float)(-scale * exp((double)x[c] - mx) / sum);
        g[k] = (float)((double)g[k] + scale);
    }
    *value = v;
    return CIRCUITS_OK;
}
