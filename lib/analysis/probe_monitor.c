/* A probe as a monitor (circuits_context_add_probe_monitor): a forward hook at one point that
 * gathers the run's rows ([batch, pos, ...] flattened to [batch * pos, d]), applies the probe
 * (cx_probe_apply, the code circuits_probe_predict runs) and hands out [batch, pos, n_outputs]
 * to the caller's callback with the run's first absolute position (ctx->run_past: a KV cache's
 * held positions, so each generation step reports its new position). The context owns the
 * monitor's data (cx_context_add_owned_hook). */
#include "probe.h"

#include "context.h"

typedef struct monitor {
    const circuits_context *ctx;
    const circuits_probe *probe;
    circuits_probe_fn fn;
    void *user_data;
    float *rows, *out;    /* grown as runs need */
    double *scratch;      /* 2 * (n_outputs + 1) */
    size_t cap_rows;      /* rows the buffers hold */
} monitor;

static void monitor_release(void *data)
{
    monitor *m = data;
    if (!m) return;
    cx_free(m->rows);
    cx_free(m->out);
    cx_free(m->scratch);
    cx_free(m);
}

static int monitor_hook(const circuits_tensor *act, void *user_data)
{
    monitor *m = user_data;
    const circuits_probe *p = m->probe;
    if (act->ndim < 2) return cx_fail(CIRCUITS_E_SHAPE, "probe monitor: '%s' has no [batch, pos] axes", act->name);
    int64_t B = act->shape[0], T = act->shape[1], width = 1;
    for (int32_t a = 2; a < act->ndim; a++) width *= act->shape[a];
    if (width != p->d)
        return cx_fail(CIRCUITS_E_SHAPE, "probe monitor: '%s' has %lld values per position; the probe reads %lld",
                       act->name, (long long)width, (long long)p->d);
    size_t n = (size_t)B * (size_t)T;
    if (n > m->cap_rows) {
        float *r = cx_realloc(m->rows, n * (size_t)p->d * sizeof(float));
        if (r) m->rows = r;
        float *o = r ? cx_realloc(m->out, n * (size_t)p->n_outputs * sizeof(float)) : NULL;
        if (o) m->out = o;
        if (!r || !o) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "probe monitor: out of memory at '%s'", act->name);
        m->cap_rows = n;
    }
    /* gather the (possibly strided) activation in row-major index order */
    int64_t idx[CIRCUITS_MAX_DIMS] = {0};
    size_t total = n * (size_t)p->d;
    for (size_t e = 0; e < total; e++) {
        int64_t off = 0;
        for (int32_t a = 0; a < act->ndim; a++) off += idx[a] * act->strides[a];
        m->rows[e] = act->data[off];
        for (int32_t a = act->ndim - 1; a >= 0; a--) {
            if (++idx[a] < act->shape[a]) break;
            idx[a] = 0;
        }
    }
    cx_probe_apply(p, m->rows, (int64_t)n, m->out, m->scratch);
    return m->fn(m->out, B, T, p->n_outputs, m->ctx->run_past, m->user_data);
}

int circuits_context_add_probe_monitor(circuits_context *ctx, const circuits_probe *probe, const char *name,
                                       circuits_probe_fn fn, void *user_data, circuits_hook_id *out_id)
{
    static const char *fname = "circuits_context_add_probe_monitor";
    if (!ctx || !probe || !fn) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: NULL argument", fname);
    if (!name) {
        if (!probe->hook_name[0])
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the probe has no hook_name: name the hook point", fname);
        name = probe->hook_name;
    }
    int32_t idx;
    int rc = cx_hook_one(ctx, fname, name, &idx);
    if (rc) return rc;
    const cx_hook_point *pt = &ctx->hooks.points[idx];
    if (pt->kind == HK_TOKENS)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: '%s' holds token ids, not activations", fname, pt->name);
    int64_t s1[CIRCUITS_MAX_DIMS], s2[CIRCUITS_MAX_DIMS], w1 = 1, w2 = 1;
    int32_t ha;
    int nd1 = cx_hook_shape(ctx, pt, 1, 1, 0, s1, &ha), nd2 = cx_hook_shape(ctx, pt, 1, 2, 0, s2, &ha);
    for (int a = 2; a < nd1; a++) w1 *= s1[a];
    for (int a = 2; a < nd2; a++) w2 *= s2[a];
    if (w1 != w2)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: '%s' has a width that grows with the positions (%lld, %lld)",
                       fname, pt->name, (long long)w1, (long long)w2);
    if (w1 != probe->d)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: '%s' has %lld values per position; the probe reads d = %lld", fname,
                       pt->name, (long long)w1, (long long)probe->d);
    monitor *m = cx_calloc(1, sizeof *m);
    double *scratch = cx_malloc(2 * ((size_t)probe->n_outputs + 1) * sizeof(double));
    if (!m || !scratch) {
        cx_free(m);
        cx_free(scratch);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fname);
    }
    *m = (monitor){.ctx = ctx, .probe = probe, .fn = fn, .user_data = user_data, .scratch = scratch};
    return cx_context_add_owned_hook(ctx, fname, pt->name, monitor_hook, m, monitor_release, out_id);
}
