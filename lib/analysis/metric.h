/* Metrics of patching and ablation runs (circuits_metric): one copy of checking and evaluating
 * them, for the public circuits_metric_eval and the runs that compute logits only where the
 * metric reads them. */
#ifndef CIRCUITS_METRIC_H
#define CIRCUITS_METRIC_H

#include "internal.h"

/* Copies the caller's metric into *out (size rule) and checks it against logits of [B, T, V]:
 * the kind, the arrays it needs, positions in [-T, T), token ids in [0, V), the LOSS inputs. */
int cx_metric_check(const circuits_metric *m, circuits_metric *out, int64_t B, int64_t T, int64_t V, const char *fn);

/* Refuses a metric that reads no logits (HOOK_LINEAR: gradient runs only), for circuits_metric_eval
 * and the patching and ablation runs, right after cx_metric_check. */
int cx_metric_logits_check(const circuits_metric *m, const char *fn);

/* True if the metric reads the logits at every position (LOSS, CALLBACK, GRAD_CALLBACK). */
bool cx_metric_reads_all(const circuits_metric *m);

/* Row b's position, in [0, T) (positions NULL: T - 1; TOKEN_LOSS: T - 2). */
int64_t cx_metric_row_pos(const circuits_metric *m, int64_t b, int64_t T);

/* The distinct positions the metric reads, ascending, into pos[] (room for B); returns how many.
 * Only for metrics that do not read every position. */
int64_t cx_metric_positions(const circuits_metric *m, int64_t B, int64_t T, int64_t *pos);

/* The metric (checked by cx_metric_check) of logits [B, T, V], or, when logit_pos is set, of
 * logits [B, n_logit_pos, V] at positions logit_pos (ascending, holding every row's position). */
int cx_metric_value(const circuits_metric *m, const float *logits, int64_t B, int64_t T, int64_t V,
                    const int64_t *logit_pos, int64_t n_logit_pos, float *value, const char *fn);

/* The metric (checked by cx_metric_check) of logits [B, T, V] into *value and its gradient d value /
 * d logits into grad [B, T, V], written whole (0.7.0, gradient runs): every kind but CALLBACK (no
 * gradient: refused) and HOOK_LINEAR (it reads no logits: grad is 0 and *value is left alone; the
 * backward pass adds its gradient at the hook). GRAD_CALLBACK: grad zeroed, then grad_fn. */
int cx_metric_grad(const circuits_metric *m, const float *logits, int64_t B, int64_t T, int64_t V, float *value,
                   float *grad, const char *fn);

#endif
