/* Gradient runs (backward.c): a forward pass that records what its backward needs (the tape),
 * then the backward pass in the reverse of forward.c's order, firing backward hooks, filling the
 * gradient cache and the weight gradients. Public: circuits_context_backward; the attribution
 * methods (analysis/attribute.c, eap.c, ig.c) describe their runs as a cx_grad_run. */
#ifndef CIRCUITS_BACKWARD_H
#define CIRCUITS_BACKWARD_H

#include "context.h"

typedef struct cx_grad_run {
    cx_run fwd;                  /* the forward: tokens or input, attention_mask, start, edits (ablation,
                                  * interpolation), observer; out: logits [B, T, V] or NULL. No KV
                                  * cache, logit positions or stop_at_layer. fwd.tape is the backward's */
    circuits_metric metric;      /* checked with cx_metric_check against the run's logits */
    int32_t edit_grad;           /* circuits_edit_grad */
    const bool *sel;             /* [n_points]: the points whose gradient (and activation, with
                                  * cache_activations) go into cache; NULL: none */
    circuits_cache *cache;       /* NULL: none */
    bool cache_activations;
    circuits_cache *weight_grads; /* NULL: none */
    float *input_grad;           /* [B, T, D] d metric / d the residual stream the run starts from, or NULL */
    float *value;                /* the metric, or NULL */
} cx_grad_run;

/* A gradient run with every option at its default for fwd (cx_run_init's) and metric (copied). */
cx_grad_run cx_grad_run_init(const circuits_context *ctx, const char *fn, const int32_t *tokens, int64_t B, int64_t T,
                             const circuits_metric *metric);

/* Checks g, takes the guard (unless g->fwd.held), runs forward and backward, releases. The caches
 * are emptied on failure. */
int cx_backward(circuits_context *ctx, cx_grad_run *g);

#endif
