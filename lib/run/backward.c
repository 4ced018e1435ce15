/* (being written: issue 16) */
#include "backward.h"

#include <string.h>

struct cx_tape {
    int unused;
};

void cx_tape_record(struct cx_tape *tape, int32_t idx, bool pre, const float *data, size_t numel)
{
    (void)tape; (void)idx; (void)pre; (void)data; (void)numel;
}

void circuits_backward_options_init(circuits_backward_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
    opts->cache_activations = 1;
    opts->edit_grad = CIRCUITS_EDIT_GRAD_REPLACE;
}

cx_grad_run cx_grad_run_init(const circuits_context *ctx, const char *fn, const int32_t *tokens, int64_t B, int64_t T,
                             const circuits_metric *metric)
{
    cx_grad_run g;
    memset(&g, 0, sizeof g);
    g.fwd = cx_run_init(ctx, fn, tokens, B, T);
    if (metric) g.metric = *metric;
    g.cache_activations = true;
    return g;
}

int cx_backward(circuits_context *ctx, cx_grad_run *g)
{
    (void)ctx; (void)g;
    return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "backward: not yet built");
}
