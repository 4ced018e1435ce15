/* Splicing SAEs and transcoders into a context's runs, with SAELens's HookedSAETransformer
 * semantics (docs/saes.md "Splicing").
 *
 * Design: an attachment changes the context's hook table, not the forward pass. The table is
 * rebuilt with the SAE's points (<name>.hook_sae_input .. hook_sae_output) in place of the point
 * it replaces, and point_of maps the replaced (layer, kind) to the first of them; firing that
 * (layer, kind) runs cx_sae_splice instead of the point's callbacks. So every runner (forward,
 * caches, generation with a KV cache, patching) runs SAEs without knowing about them, and the new
 * points are hookable, cacheable and resolvable by the same code as the model's own.
 * Registrations move to the rebuilt table by point name. A transcoder's input point stays a
 * model point that also copies its value (after its callbacks) for the output point to read.
 *
 * Memory: the working buffers (below) are part of the run memory, sized by prepare_scratch, so a
 * hook callback's data lies in the run memory as always and a run allocates nothing. */
#include "context.h"
#include "sae.h"

#include <string.h>

/* ---- the working memory of one pass: [captures][sae_in][pre][post][recons][err][coeff] ---- */

typedef struct sae_mem {
    float *sae_in; /* [N, d_in]: hook_sae_input, then the encoder's input */
    float *pre;    /* [N, d_sae] */
    float *post;   /* [N, d_sae] */
    float *recons; /* [N, d_out]: hook_sae_recons, then the SAE's output */
    float *err;    /* [N, d_out]: the output without hooks, then hook_sae_error */
    float *coeff;  /* [2N]: per-row normalization factors */
} sae_mem;

static bool add_size(size_t *total, size_t a, size_t b)
{
    size_t p;
    if (!cx_mul_size(a, b, &p) || *total + p < *total) return false;
    *total += p;
    return true;
}

/* The widest SAE's widths and the floats of the captures (transcoders' inputs, one each). */
typedef struct widths {
    size_t d_in, d_sae, d_out, captures;
} widths;

/* The widths of saes[0 .. n) for N rows, and *total: the captures plus the shared buffers. */
static bool sizes(const cx_sae_attach *saes, size_t n, size_t N, widths *w, size_t *total)
{
    *w = (widths){0};
    for (size_t i = 0; i < n; i++) {
        const circuits_sae *s = saes[i].sae;
        if (cx_sae_captures(&saes[i]) && !add_size(&w->captures, N, (size_t)s->d_in)) return false;
        if ((size_t)s->d_in > w->d_in) w->d_in = (size_t)s->d_in;
        if ((size_t)s->d_sae > w->d_sae) w->d_sae = (size_t)s->d_sae;
        if ((size_t)s->d_out > w->d_out) w->d_out = (size_t)s->d_out;
    }
    *total = w->captures;
    if (!n) return true;
    return add_size(total, N, w->d_in) && add_size(total, N, w->d_sae) && add_size(total, N, w->d_sae) &&
           add_size(total, N, w->d_out) && add_size(total, N, w->d_out) && add_size(total, N, 2);
}

bool cx_sae_scratch_floats(const circuits_context *ctx, size_t N, size_t *floats)
{
    widths w;
    return sizes(ctx->saes, ctx->n_saes, N, &w, floats);
}

/* Transcoder a's capture buffer: transcoders before it hold N * d_in each. */
static float *capture_of(const circuits_context *ctx, int32_t a, size_t N)
{
    float *p = ctx->sae_mem;
    for (int32_t i = 0; i < a; i++)
        if (cx_sae_captures(&ctx->saes[i])) p += N * (size_t)ctx->saes[i].sae->d_in;
    return p;
}

static void layout(const circuits_context *ctx, size_t N, sae_mem *m)
{
    widths w;
    size_t total;
    sizes(ctx->saes, ctx->n_saes, N, &w, &total); /* checked by prepare_scratch */
    m->sae_in = ctx->sae_mem + w.captures;
    m->pre = m->sae_in + N * w.d_in;
    m->post = m->pre + N * w.d_sae;
    m->recons = m->post + N * w.d_sae;
    m->err = m->recons + N * w.d_out;
    m->coeff = m->err + N * w.d_out;
}

void cx_sae_capture(circuits_context *ctx, int32_t a, const float *data, size_t numel)
{
    size_t N = numel / (size_t)ctx->saes[a].sae->d_in;
    memcpy(capture_of(ctx, a, N), data, numel * sizeof(float));
}

int cx_sae_check_run(const circuits_context *ctx, const cx_run *run)
{
    for (size_t a = 0; a < ctx->n_saes; a++) {
        const cx_sae_attach *att = &ctx->saes[a];
        if (!cx_sae_captures(att)) continue;
        const cx_hook_point *in = &ctx->hooks.points[cx_hook_index(&ctx->hooks, att->in_layer, (cx_hook_kind)att->in_kind)];
        const cx_hook_point *out = &ctx->hooks.points[cx_hook_index(&ctx->hooks, att->out_layer, (cx_hook_kind)att->out_kind)];
        if (cx_run_reaches(run, out) && !cx_run_reaches(run, in))
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the transcoder writing '%s' reads '%s', which this run "
                           "does not compute (start_at_layer / input): detach it or start the run earlier",
                           run->fn ? run->fn : "run", att->sae->hook_name_out, in->name);
    }
    return CIRCUITS_OK;
}

/* ---- the splice ---- */

int cx_sae_splice(circuits_context *ctx, const cx_run *run, int32_t idx, float *data, int64_t B, int64_t T)
{
    const cx_hook_point *pts = ctx->hooks.points;
    int32_t a = pts[idx].sae;
    const cx_sae_attach *att = &ctx->saes[a];
    const circuits_sae *s = att->sae;
    size_t N = (size_t)B * (size_t)T, n_in = N * (size_t)s->d_in, n_out = N * (size_t)s->d_out;
    int64_t n = (int64_t)N;
    sae_mem m;
    layout(ctx, N, &m);
    const float *x_raw = cx_sae_captures(att) ? capture_of(ctx, a, N) : data;
    int rc;
    /* SAELens: reshape, hook_sae_input, the input normalization and - b_dec, then the encoder's
     * pre-activation (hook_sae_acts_pre), its activation (hook_sae_acts_post), the decoder
     * (hook_sae_recons), and the output normalization undone */
    memcpy(m.sae_in, x_raw, n_in * sizeof(float));
    if ((rc = cx_hook_fire_index(ctx, run, idx, m.sae_in, B, T))) return rc;
    if ((rc = cx_sae_input(s, m.sae_in, n, m.coeff))) return rc;
    if ((rc = cx_sae_pre(s, m.sae_in, n, m.pre))) return rc;
    if ((rc = cx_hook_fire_index(ctx, run, idx + 1, m.pre, B, T))) return rc;
    if ((rc = cx_sae_post(s, m.sae_in, m.pre, n, m.post))) return rc;
    if ((rc = cx_hook_fire_index(ctx, run, idx + 2, m.post, B, T))) return rc;
    if ((rc = cx_sae_decode(s, m.post, n, m.recons))) return rc;
    if ((rc = cx_hook_fire_index(ctx, run, idx + 3, m.recons, B, T))) return rc;
    if ((rc = cx_sae_output(s, m.recons, n, m.coeff, x_raw))) return rc;
    int32_t out_idx = idx + 4;
    if (att->error_term) {
        /* hook_sae_error = the point's value - the SAE's output computed without hooks, so that an
         * edit of a latent changes the output by its own effect only. With no callback at the
         * SAE's points the hooked output is that output. */
        bool hooked = false;
        for (int j = 0; j < 4; j++) hooked |= pts[idx + j].n_regs > 0;
        for (size_t i = 0; i < run->n_edits; i++) /* an editor of one of them (ablation of a latent) */
            hooked |= run->edits[i].sae_point > idx && run->edits[i].sae_point <= idx + 4;
        const float *clean = m.recons;
        if (hooked) {
            memcpy(m.sae_in, x_raw, n_in * sizeof(float));
            if ((rc = cx_sae_input(s, m.sae_in, n, m.coeff)) || (rc = cx_sae_pre(s, m.sae_in, n, m.pre)) ||
                (rc = cx_sae_post(s, m.sae_in, m.pre, n, m.post)) || (rc = cx_sae_decode(s, m.post, n, m.err)) ||
                (rc = cx_sae_output(s, m.err, n, m.coeff, x_raw)))
                return rc;
            clean = m.err;
        }
        for (size_t i = 0; i < n_out; i++) m.err[i] = data[i] - clean[i];
        if ((rc = cx_hook_fire_index(ctx, run, out_idx, m.err, B, T))) return rc;
        for (size_t i = 0; i < n_out; i++) data[i] = m.recons[i] + m.err[i];
        out_idx++;
    } else {
        memcpy(data, m.recons, n_out * sizeof(float));
    }
    return cx_hook_fire_index(ctx, run, out_idx, data, B, T);
}

/* ---- attaching and detaching ---- */

static int refuse_running(const circuits_context *ctx, const char *fn)
{
    if (ctx->running) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: called from a callback of the same context", fn);
    return CIRCUITS_OK;
}

/* The model's point `name` in the plain table t0 (no SAEs): its index, or a message. */
static int model_point(const cx_hook_table *t0, const char *fn, const char *what, const char *name, int32_t *index)
{
    for (size_t i = 0; i < t0->n_points; i++)
        if (strcmp(t0->points[i].name, name) == 0) {
            *index = (int32_t)i;
            return CIRCUITS_OK;
        }
    const char *mlp_in = strstr(name, ".mlp.hook_in");
    if (mlp_in && mlp_in[12] == '\0')
        return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: the SAE's %s '%s' is a point HookedSAETransformer adds; libcircuits "
                       "has blocks.L.ln2.hook_normalized (equal to it when LayerNorm weights are folded, the default "
                       "load) and blocks.L.hook_mlp_in (use_hook_mlp_in)", fn, what, name);
    return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: the SAE's %s '%s' is not a hook point of this model and context", fn,
                   what, name);
}

/* The width checks of an SAE reading (or, out, writing) point p. */
static int check_point(const circuits_context *ctx, const cx_hook_point *p, const circuits_sae *s, bool out,
                       const char *fn)
{
    int64_t sh[CIRCUITS_MAX_DIMS];
    int32_t ha;
    int nd = cx_hook_shape(ctx, p, 1, 1, 0, sh, &ha);
    int64_t want = out ? s->d_out : s->d_in;
    switch (p->kind) {
    case HK_TOKENS: case HK_UNEMBED_OUT:
    case HK_LN1_SCALE: case HK_LN2_SCALE: case HK_LNF_SCALE: case HK_MLP_LN_SCALE: case HK_LN1_POST_SCALE:
    case HK_LN2_POST_SCALE:
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: an SAE at '%s' is not supported (token ids, LayerNorm scales and "
                       "logits are not activations an SAE reads)", fn, p->name);
    default: break;
    }
    if (s->reshape_hook_z) {
        if (p->kind != HK_Z)
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: reshape_activations 'hook_z' at '%s' (SAELens allows it at "
                           "attn.hook_z only)", fn, p->name);
        if (sh[2] * sh[3] != want)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: '%s' is [batch, pos, %lld, %lld] (%lld wide read flat) but the SAE's "
                           "%s is %lld", fn, p->name, (long long)sh[2], (long long)sh[3], (long long)(sh[2] * sh[3]),
                           out ? "d_out" : "d_in", (long long)want);
        return CIRCUITS_OK;
    }
    if (nd != 3)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: '%s' has %d axes; an SAE reads [batch, pos, d] points (hook_z with "
                       "reshape_activations 'hook_z' excepted)", fn, p->name, nd);
    if (sh[2] != want)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: '%s' is [batch, pos, %lld] but the SAE's %s is %lld", fn, p->name,
                       (long long)sh[2], out ? "d_out" : "d_in", (long long)want);
    return CIRCUITS_OK;
}

/* Makes saes[0 .. n) the context's attachments: a new table, the registrations moved to it by
 * point name (those whose point is gone are dropped), then the swap. Nothing changes on failure. */
static int install(circuits_context *ctx, cx_sae_attach *saes, size_t n)
{
    cx_hook_table t;
    int rc = cx_hooks_build_table(ctx, saes, n, &t);
    if (rc) {
        cx_free(saes);
        return rc;
    }
    for (size_t i = 0; i < ctx->hooks.n_points; i++) {
        cx_hook_point *old = &ctx->hooks.points[i];
        for (size_t j = 0; j < t.n_points; j++)
            if (strcmp(old->name, t.points[j].name) == 0) {
                cx_hook_point *p = &t.points[j];
                p->regs = old->regs, p->n_regs = old->n_regs, p->cap_regs = old->cap_regs;
                p->bregs = old->bregs, p->n_bregs = old->n_bregs, p->cap_bregs = old->cap_bregs;
                old->regs = old->bregs = NULL;
                old->n_regs = old->n_bregs = old->cap_regs = old->cap_bregs = 0;
                break;
            }
    }
    t.next_id = ctx->hooks.next_id;
    cx_hook_table_free(&ctx->hooks);
    ctx->hooks = t;
    cx_free(ctx->saes);
    ctx->saes = saes;
    ctx->n_saes = n;
    return CIRCUITS_OK;
}

int circuits_context_add_sae(circuits_context *ctx, const circuits_sae *sae, int32_t use_error_term)
{
    const char *fn = "circuits_context_add_sae";
    if (!ctx || !sae) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx and sae must not be NULL", fn);
    if (use_error_term != 0 && use_error_term != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: use_error_term must be 0 or 1 (got %d)", fn, (int)use_error_term);
    int rc = refuse_running(ctx, fn);
    if (rc) return rc;
    cx_hook_table t0; /* the model's own points: names to (layer, kind) whatever is attached now */
    if ((rc = cx_hooks_build_table(ctx, NULL, 0, &t0))) return rc;
    int32_t in = -1, out = -1;
    if (!(rc = model_point(&t0, fn, "hook_name", sae->hook_name, &in)) &&
        !(rc = model_point(&t0, fn, "hook_name_out", sae->hook_name_out, &out)) &&
        !(rc = check_point(ctx, &t0.points[out], sae, true, fn)) && sae->transcoder)
        rc = check_point(ctx, &t0.points[in], sae, false, fn);
    /* a transcoder's output point must fire after its input point (the table is in firing order):
     * else it would read the input of the previous run, or none */
    if (!rc && sae->transcoder && out < in)
        rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the transcoder writes '%s', which the forward pass computes "
                     "before '%s', the point it reads", fn, sae->hook_name_out, sae->hook_name);
    cx_sae_attach att = {sae, use_error_term != 0, -1, -1, -1, -1};
    if (!rc) {
        att.in_layer = t0.points[in].layer, att.in_kind = t0.points[in].kind;
        att.out_layer = t0.points[out].layer, att.out_kind = t0.points[out].kind;
    }
    cx_hook_table_free(&t0);
    if (rc) return rc;
    /* SAELens keys attachments by their input hook: one there is replaced */
    size_t replace = ctx->n_saes;
    for (size_t i = 0; i < ctx->n_saes; i++) {
        const cx_sae_attach *o = &ctx->saes[i];
        if (o->in_layer == att.in_layer && o->in_kind == att.in_kind) {
            replace = i;
            continue;
        }
        if (o->out_layer == att.out_layer && o->out_kind == att.out_kind)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: '%s' is replaced already by the SAE reading '%s'", fn,
                           sae->hook_name_out, o->sae->hook_name);
        if (sae->transcoder && o->out_layer == att.in_layer && o->out_kind == att.in_kind)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the transcoder reads '%s', which the SAE reading '%s' "
                           "replaces", fn, sae->hook_name, o->sae->hook_name);
        if (o->sae->transcoder && o->in_layer == att.out_layer && o->in_kind == att.out_kind)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: '%s' is the input of the transcoder writing '%s'", fn,
                           sae->hook_name_out, o->sae->hook_name_out);
    }
    /* the point the SAE replaces must have no callbacks of the caller's (SAELens drops them with
     * the HookPoint it swaps out; here that is refused rather than done silently) */
    int32_t cur = cx_hook_index(&ctx->hooks, att.out_layer, (cx_hook_kind)att.out_kind);
    if (cur >= 0 && ctx->hooks.points[cur].sae < 0 &&
        (ctx->hooks.points[cur].n_regs || ctx->hooks.points[cur].n_bregs))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: callbacks are registered at '%s', which the SAE replaces: "
                       "remove them first", fn, ctx->hooks.points[cur].name);
    size_t n = ctx->n_saes + (replace == ctx->n_saes);
    cx_sae_attach *saes = cx_malloc(n * sizeof *saes);
    if (!saes) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    if (ctx->n_saes) memcpy(saes, ctx->saes, ctx->n_saes * sizeof *saes);
    saes[replace] = att;
    return install(ctx, saes, n);
}

int circuits_context_remove_sae(circuits_context *ctx, const char *hook_name)
{
    const char *fn = "circuits_context_remove_sae";
    if (!ctx) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx is NULL", fn);
    int rc = refuse_running(ctx, fn);
    if (rc) return rc;
    size_t keep = 0;
    for (size_t i = 0; i < ctx->n_saes; i++) keep += hook_name && strcmp(ctx->saes[i].sae->hook_name, hook_name) != 0;
    if (hook_name && keep == ctx->n_saes)
        return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: no SAE is attached at '%s'", fn, hook_name);
    if (!hook_name && ctx->n_saes == 0) return CIRCUITS_OK; /* reset_saes with none: nothing to do */
    cx_sae_attach *saes = NULL;
    if (keep) {
        if (!(saes = cx_malloc(keep * sizeof *saes))) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
        size_t k = 0;
        for (size_t i = 0; i < ctx->n_saes; i++)
            if (strcmp(ctx->saes[i].sae->hook_name, hook_name) != 0) saes[k++] = ctx->saes[i];
    }
    return install(ctx, saes, keep);
}

size_t circuits_context_sae_count(const circuits_context *ctx) { return ctx ? ctx->n_saes : 0; }

int circuits_context_sae_at(const circuits_context *ctx, size_t index, const circuits_sae **sae,
                            int32_t *use_error_term)
{
    const char *fn = "circuits_context_sae_at";
    if (!ctx || !sae) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx and sae must not be NULL", fn);
    if (index >= ctx->n_saes)
        return cx_fail(CIRCUITS_E_RANGE, "%s: index %zu with %zu SAEs attached", fn, index, ctx->n_saes);
    *sae = ctx->saes[index].sae;
    if (use_error_term) *use_error_term = ctx->saes[index].error_term;
    return CIRCUITS_OK;
}
