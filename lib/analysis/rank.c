/* The ranked answer report of TransformerLens's utils.test_prompt for one row of logits:
 * softmax probabilities, the rank of an answer token and the k most probable tokens. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

typedef struct ranked {
    float logit;
    int32_t id;
} ranked;

/* Descending logit (= descending probability), ties by ascending id: a total order, so the
 * report does not depend on qsort's handling of equal keys. */
static int by_logit_desc(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int circuits_logits_rank(const float *logits, int64_t d_vocab, int32_t token, int32_t k, int64_t *rank_out,
                         float *prob_out, int32_t *top_ids, float *top_probs)
{
    const char *fn = "circuits_logits_rank";
    if (!logits) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: logits is NULL", fn);
    if (d_vocab < 1 || d_vocab > INT32_MAX)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: d_vocab %lld must be in [1, %d]", fn, (long long)d_vocab,
                       INT32_MAX);
    if ((rank_out || prob_out) && (token < 0 || token >= d_vocab))
        return cx_fail(CIRCUITS_E_RANGE, "%s: token %d is outside the vocabulary [0, %lld)", fn, token,
                       (long long)d_vocab);
    if (k < 0 || k > d_vocab)
        return cx_fail(CIRCUITS_E_RANGE, "%s: k %d must be in [0, d_vocab = %lld]", fn, k, (long long)d_vocab);
    if (k > 0 && !top_ids && !top_probs)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: k is %d but top_ids and top_probs are both NULL", fn, k);
    float mx = -INFINITY;
    for (int64_t v = 0; v < d_vocab; v++) {
        if (isnan(logits[v])) return cx_fail(CIRCUITS_E_RANGE, "%s: logits[%lld] is NaN", fn, (long long)v);
        if (logits[v] > mx) mx = logits[v];
    }
    if (isinf(mx)) return cx_fail(CIRCUITS_E_RANGE, "%s: the largest logit is infinite", fn);
    ranked *all = NULL; /* taken before any output is written: a failure leaves them untouched */
    if (k > 0 && !(all = cx_malloc((size_t)d_vocab * sizeof *all)))
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for %lld entries", fn, (long long)d_vocab);
    double z = 0;
    for (int64_t v = 0; v < d_vocab; v++) z += exp((double)logits[v] - mx);
    if (rank_out || prob_out) {
        float a = logits[token];
        int64_t r = 0;
        for (int64_t v = 0; v < d_vocab; v++) r += logits[v] > a || (logits[v] == a && v < token);
        if (rank_out) *rank_out = r;
        if (prob_out) *prob_out = (float)(exp((double)a - mx) / z);
    }
    if (k == 0) return CIRCUITS_OK;
    for (int64_t v = 0; v < d_vocab; v++) all[v] = (ranked){logits[v], (int32_t)v};
    qsort(all, (size_t)d_vocab, sizeof *all, by_logit_desc);
    for (int32_t i = 0; i < k; i++) {
        if (top_ids) top_ids[i] = all[i].id;
        if (top_probs) top_probs[i] = (float)(exp((double)all[i].logit - mx) / z);
    }
    cx_free(all);
    return CIRCUITS_OK;
}
