/* The residual stream read from a cache: TransformerLens's ActivationCache methods
 * (accumulated_resid, decompose_resid, stack_head_results, stack_neuron_results,
 * get_full_resid_decomposition, apply_ln_to_stack, logit_attrs), the logit lens and direct logit
 * attribution. Every stack is [n_components, batch, n_pos, d_model], components in
 * TransformerLens's order with its labels; the component list is walked once per question
 * (count, label, fill) by one enumerator, so the three can never disagree. */
#include "internal.h"
#include "kernels.h"
#include "stored.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* What a component is made of. */
typedef enum comp_kind {
    COMP_ENTRY,       /* a cached [batch, pos, d_model] activation, `name` */
    COMP_HEAD,        /* head `index` of layer `layer`: hook_result, or hook_z @ W_O */
    COMP_NEURON,      /* neuron `index` of layer `layer`: hook_post[.., n] * W_out[n] */
    COMP_BIAS,        /* accumulated b_O (and b_out) up to the input of `layer` */
    COMP_REMAINDER    /* `name` (a resid_post) minus every component before it */
} comp_kind;

typedef struct comp {
    comp_kind kind;
    int32_t layer;
    int64_t index;
    char name[64];  /* COMP_ENTRY, COMP_REMAINDER: the hook */
    char label[32];
} comp;

/* One call, resolved. */
typedef struct rs {
    const char *fn;
    const circuits_model *m;
    const circuits_cache *cache;
    const circuits_config *c;
    int kind;
    circuits_resid_options o;
    int32_t layer;       /* resolved: 0..n_layers */
    int64_t B, T, D, P;  /* cache batch and positions, d_model, positions selected */
    int64_t *pos;        /* [P] resolved positions (owned) */
    bool ln_mlp_input;   /* apply_ln reads ln2: the kinds whose TL method passes mlp_input */
    bool ln_recompute;   /* apply_ln at n_layers through ln_final (accumulated_resid) */
} rs;

void circuits_resid_options_init(circuits_resid_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
    o->layer = -1;
    o->incl_embeds = 1;
    o->expand_neurons = 1;
    o->unembed_bias = 1;
}

static bool has_entry(const circuits_cache *cache, const char *name)
{
    circuits_tensor t;
    bool ok = circuits_cache_get(cache, name, &t) == CIRCUITS_OK;
    circuits_clear_error();
    return ok;
}

/* The cached entry `name`, checked to be [B, T, last] (last < 0: [B, T, ...] of any rank). */
static int get_entry(const rs *r, const char *name, int64_t last, circuits_tensor *t)
{
    if (circuits_cache_get(r->cache, name, t) != CIRCUITS_OK)
        return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: the cache holds no '%s' (run_with_cache with it in names_filter)",
                       r->fn, name);
    if (t->ndim < 3 || t->shape[0] != r->B || t->shape[1] != r->T || (last >= 0 && (t->ndim != 3 || t->shape[2] != last)))
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the cached '%s' has %d dims [%lld, %lld, ..], want [%lld, %lld, %lld]",
                       r->fn, name, (int)t->ndim, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                       (long long)r->B, (long long)r->T, (long long)last);
    return CIRCUITS_OK;
}

/* Batch and positions of the cache: those of its first [batch, pos, ..] entry (the attention
 * patterns and scores, [batch, head, q, k], do not say). */
static int cache_dims(rs *r)
{
    size_t n = circuits_cache_count(r->cache);
    for (size_t i = 0; i < n; i++) {
        circuits_tensor t;
        if (circuits_cache_at(r->cache, i, &t) != CIRCUITS_OK) return CIRCUITS_E_RANGE;
        if (t.ndim < 3 || strstr(t.name, "pattern") || strstr(t.name, "attn_scores")) continue;
        r->B = t.shape[0];
        r->T = t.shape[1];
        return CIRCUITS_OK;
    }
    return cx_fail(CIRCUITS_E_NOT_FOUND, "%s: the cache holds no residual-stream activation (run_with_cache first)", r->fn);
}

/* Checks the arguments and options, resolves the layer and the positions. */
static int rs_begin(rs *r, const char *fn, const circuits_model *m, const circuits_cache *cache, int kind,
                    const circuits_resid_options *opts)
{
    memset(r, 0, sizeof *r);
    r->fn = fn;
    if (!m || !cache) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: model or cache is NULL", fn);
    r->m = m;
    r->cache = cache;
    r->c = &m->cfg;
    r->kind = (circuits_resid_kind)kind;
    circuits_resid_options_init(&r->o);
    static const size_t versions[] = {sizeof(circuits_resid_options)}; /* 0.5 */
    int rc;
    if (opts && (rc = cx_options_copy(&r->o, opts, versions, CX_COUNT(versions), fn))) return rc;
    if (kind < CIRCUITS_RESID_ACCUMULATED || kind > CIRCUITS_RESID_FULL)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: unknown circuits_resid_kind %d", fn, kind);
    const int32_t NL = r->c->n_layers;
    if (r->o.layer < -1 || r->o.layer > NL)
        return cx_fail(CIRCUITS_E_RANGE, "%s: layer %d is outside -1..n_layers = %d", fn, r->o.layer, NL);
    r->layer = r->o.layer == -1 ? NL : r->o.layer;
    if (r->o.mode < CIRCUITS_RESID_MODE_ALL || r->o.mode > CIRCUITS_RESID_MODE_ATTN)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: mode %d is not a CIRCUITS_RESID_MODE_*", fn, r->o.mode);
    bool reads_mlp_input = kind == CIRCUITS_RESID_FULL ||
                           (kind == CIRCUITS_RESID_DECOMPOSED && r->o.mode != CIRCUITS_RESID_MODE_MLP);
    if (r->o.mlp_input && r->layer == NL && reads_mlp_input)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: mlp_input at layer n_layers = %d (the unembed has no MLP)", fn, NL);
    if ((r->o.n_positions < 0) || (r->o.n_positions > 0 && !r->o.positions) || r->o.n_neurons < 0 ||
        (r->o.n_neurons > 0 && !r->o.neurons) || r->o.n_batch_indices < 0 ||
        (r->o.n_batch_indices > 0 && !r->o.batch_indices))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: a negative count or a NULL index array with a count", fn);
    r->D = r->c->d_model;
    r->ln_mlp_input = r->o.mlp_input && kind != CIRCUITS_RESID_HEADS && kind != CIRCUITS_RESID_NEURONS;
    r->ln_recompute = kind == CIRCUITS_RESID_ACCUMULATED ? r->layer == NL : r->o.recompute_ln != 0;
    if ((rc = cache_dims(r))) return rc;
    r->P = r->o.positions ? r->o.n_positions : r->T;
    r->pos = cx_malloc((size_t)(r->P ? r->P : 1) * sizeof *r->pos);
    if (!r->pos) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (int64_t p = 0; p < r->P; p++) {
        int64_t q = r->o.positions ? r->o.positions[p] : p;
        if (q < -r->T || q >= r->T)
            return cx_fail(CIRCUITS_E_RANGE, "%s: position %lld is outside the cache's %lld positions", fn, (long long)q,
                           (long long)r->T);
        r->pos[p] = q < 0 ? q + r->T : q;
    }
    if (kind == CIRCUITS_RESID_NEURONS && r->c->attn_only)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: the model is attention-only: it has no neurons", fn);
    for (int64_t i = 0; i < r->o.n_neurons; i++)
        if (r->o.neurons[i] < -r->c->d_mlp || r->o.neurons[i] >= r->c->d_mlp)
            return cx_fail(CIRCUITS_E_RANGE, "%s: neuron %lld is outside d_mlp = %d", fn, (long long)r->o.neurons[i],
                           r->c->d_mlp);
    return CIRCUITS_OK;
}

static void rs_end(rs *r) { cx_free(r->pos); }

/* ---- the components, in TransformerLens's order ---- */

typedef int (*comp_fn)(rs *r, int64_t i, const comp *k, void *arg);

#define EMIT(...)                                                   \
    do {                                                            \
        memset(&k, 0, sizeof k);                                    \
        __VA_ARGS__;                                                \
        if (visit && (rc = visit(r, n, &k, arg))) return rc;        \
        n++;                                                        \
    } while (0)

static int64_t neuron_at(const rs *r, int64_t j)
{
    int64_t q = r->o.neurons ? r->o.neurons[j] : j;
    return q < 0 ? q + r->c->d_mlp : q;
}

static int emit_heads(rs *r, int32_t upto, comp_fn visit, void *arg, int64_t *np)
{
    int64_t n = *np;
    comp k;
    int rc;
    for (int32_t l = 0; l < upto; l++)
        for (int32_t h = 0; h < r->c->n_heads; h++)
            EMIT(k.kind = COMP_HEAD; k.layer = l; k.index = h; snprintf(k.label, sizeof k.label, "L%dH%d", l, h));
    *np = n;
    return CIRCUITS_OK;
}

static int emit_neurons(rs *r, int32_t upto, bool sliced, comp_fn visit, void *arg, int64_t *np)
{
    int64_t n = *np, count = sliced && r->o.neurons ? r->o.n_neurons : r->c->d_mlp;
    comp k;
    int rc;
    for (int32_t l = 0; l < upto; l++)
        for (int64_t j = 0; j < count; j++) {
            int64_t q = sliced ? neuron_at(r, j) : j;
            EMIT(k.kind = COMP_NEURON; k.layer = l; k.index = q; snprintf(k.label, sizeof k.label, "L%dN%lld", l, (long long)q));
        }
    *np = n;
    return CIRCUITS_OK;
}

/* The remainder of heads/neurons stacks: resid_post of layer - 1 (of the last layer at layer 0,
 * as TransformerLens's negative index reads it). */
static int emit_remainder(rs *r, comp_fn visit, void *arg, int64_t *np)
{
    int64_t n = *np;
    comp k;
    int rc;
    int32_t l = r->layer > 0 ? r->layer - 1 : r->c->n_layers - 1;
    EMIT(k.kind = COMP_REMAINDER; snprintf(k.name, sizeof k.name, "blocks.%d.hook_resid_post", l);
         strcpy(k.label, "remainder"));
    *np = n;
    return CIRCUITS_OK;
}

/* Walks the components of r's kind, calling visit (may be NULL) for each; *count their number. */
static int enumerate(rs *r, comp_fn visit, void *arg, int64_t *count)
{
    const int32_t NL = r->c->n_layers, L = r->layer;
    const bool mlps = !r->c->attn_only;
    int64_t n = 0;
    comp k;
    int rc;
    switch (r->kind) {
    case CIRCUITS_RESID_ACCUMULATED:
        for (int32_t l = 0; l <= L; l++) {
            if (l == NL) {
                EMIT(snprintf(k.name, sizeof k.name, "blocks.%d.hook_resid_post", NL - 1); strcpy(k.label, "final_post"));
                continue;
            }
            EMIT(snprintf(k.name, sizeof k.name, "blocks.%d.hook_resid_pre", l); snprintf(k.label, sizeof k.label, "%d_pre", l));
            if ((r->o.incl_mid && l < L) || (r->o.mlp_input && l == L))
                EMIT(snprintf(k.name, sizeof k.name, "blocks.%d.hook_resid_mid", l);
                     snprintf(k.label, sizeof k.label, "%d_mid", l));
        }
        break;
    case CIRCUITS_RESID_DECOMPOSED: {
        bool attn = r->o.mode != CIRCUITS_RESID_MODE_MLP, mlp = r->o.mode != CIRCUITS_RESID_MODE_ATTN && mlps;
        /* TransformerLens includes the embeddings the cache holds (has_embed, has_pos_embed) */
        if (r->o.incl_embeds && has_entry(r->cache, "hook_embed")) EMIT(strcpy(k.name, "hook_embed"); strcpy(k.label, "embed"));
        if (r->o.incl_embeds && has_entry(r->cache, "hook_pos_embed"))
            EMIT(strcpy(k.name, "hook_pos_embed"); strcpy(k.label, "pos_embed"));
        for (int32_t l = 0; l < L; l++) {
            if (attn)
                EMIT(snprintf(k.name, sizeof k.name, "blocks.%d.hook_attn_out", l);
                     snprintf(k.label, sizeof k.label, "%d_attn_out", l));
            if (mlp)
                EMIT(snprintf(k.name, sizeof k.name, "blocks.%d.hook_mlp_out", l);
                     snprintf(k.label, sizeof k.label, "%d_mlp_out", l));
        }
        if (r->o.mlp_input && attn)
            EMIT(snprintf(k.name, sizeof k.name, "blocks.%d.hook_attn_out", L); snprintf(k.label, sizeof k.label, "%d_attn_out", L));
        break;
    }
    case CIRCUITS_RESID_HEADS:
        if ((rc = emit_heads(r, L, visit, arg, &n))) return rc;
        if (r->o.incl_remainder && (rc = emit_remainder(r, visit, arg, &n))) return rc;
        break;
    case CIRCUITS_RESID_NEURONS:
        if ((rc = emit_neurons(r, L, true, visit, arg, &n))) return rc;
        if (r->o.incl_remainder && (rc = emit_remainder(r, visit, arg, &n))) return rc;
        break;
    case CIRCUITS_RESID_FULL:
        if ((rc = emit_heads(r, L + (r->o.mlp_input ? 1 : 0), visit, arg, &n))) return rc;
        if (mlps && L > 0) {
            if (r->o.expand_neurons) {
                if ((rc = emit_neurons(r, L, false, visit, arg, &n))) return rc;
            } else {
                for (int32_t l = 0; l < L; l++)
                    EMIT(snprintf(k.name, sizeof k.name, "blocks.%d.hook_mlp_out", l);
                         snprintf(k.label, sizeof k.label, "%d_mlp_out", l));
            }
        }
        if (has_entry(r->cache, "hook_embed")) EMIT(strcpy(k.name, "hook_embed"); strcpy(k.label, "embed"));
        if (has_entry(r->cache, "hook_pos_embed")) EMIT(strcpy(k.name, "hook_pos_embed"); strcpy(k.label, "pos_embed"));
        EMIT(k.kind = COMP_BIAS; strcpy(k.label, "bias"));
        break;
    }
    *count = n;
    return CIRCUITS_OK;
}

/* ---- filling ---- */

typedef struct fill_arg {
    float *out;   /* [n, B, P, D]; streaming: [B, P, D], one component at a time */
    float *zrows; /* [B * P, d_head] scratch */
    /* streaming (direct logit attribution): each component is handed to `done` once filled, and
     * `sum` ([B, P, D], zeroed) accumulates them for a remainder */
    int (*done)(const rs *r, int64_t i, float *component, void *u);
    void *u;
    float *sum;
} fill_arg;

/* dst [B, P, D] = entry [B, T, D] at the selected positions. */
static int fill_entry(const rs *r, const char *name, float *dst)
{
    circuits_tensor t;
    int rc = get_entry(r, name, r->D, &t);
    if (rc) return rc;
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t p = 0; p < r->P; p++)
            memcpy(dst + (b * r->P + p) * r->D, t.data + (b * r->T + r->pos[p]) * r->D, (size_t)r->D * sizeof *dst);
    return CIRCUITS_OK;
}

static int fill_head(const rs *r, int32_t l, int64_t h, float *dst, float *zrows)
{
    const int64_t H = r->c->n_heads, D = r->D, BP = r->B * r->P;
    char name[64];
    circuits_tensor t;
    snprintf(name, sizeof name, "blocks.%d.attn.hook_result", l);
    if (circuits_cache_get(r->cache, name, &t) == CIRCUITS_OK) { /* computed by the run (use_attn_result) */
        int rc = get_entry(r, name, -1, &t);
        if (rc) return rc;
        if (t.ndim != 4 || t.shape[2] != H || t.shape[3] != D)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: the cached '%s' is not [batch, pos, n_heads, d_model]", r->fn, name);
        for (int64_t b = 0; b < r->B; b++)
            for (int64_t p = 0; p < r->P; p++)
                memcpy(dst + (b * r->P + p) * D, t.data + ((b * r->T + r->pos[p]) * H + h) * D, (size_t)D * sizeof *dst);
        return CIRCUITS_OK;
    }
    circuits_clear_error();
    /* compute_head_results: z [.., h, d_head] @ W_O[h] [d_head, d_model] */
    snprintf(name, sizeof name, "blocks.%d.attn.hook_z", l);
    int rc = get_entry(r, name, -1, &t);
    if (rc || (rc = cx_require_fp32_weights(r->m, r->fn))) return rc; /* hook_result (use_attn_result) does not */
    const circuits_tensor *W_O = r->m->layers[l].W_O;
    const int64_t dh = W_O->shape[1];
    if (t.ndim != 4 || t.shape[2] != H || t.shape[3] != dh)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the cached '%s' is not [batch, pos, n_heads, d_head]", r->fn, name);
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t p = 0; p < r->P; p++)
            memcpy(zrows + (b * r->P + p) * dh, t.data + ((b * r->T + r->pos[p]) * H + h) * dh, (size_t)dh * sizeof *zrows);
    cx_matmul(dst, D, zrows, dh, BP, dh, D, W_O->data + h * W_O->strides[0], W_O->strides[1], W_O->strides[2], NULL, false);
    return CIRCUITS_OK;
}

static int fill_neuron(const rs *r, int32_t l, int64_t q, float *dst)
{
    const int64_t D = r->D, dm = r->c->d_mlp;
    char name[64];
    circuits_tensor t;
    snprintf(name, sizeof name, "blocks.%d.mlp.hook_post", l);
    int rc = get_entry(r, name, dm, &t);
    if (rc || (rc = cx_require_fp32_weights(r->m, r->fn))) return rc;
    const circuits_tensor *W = r->m->layers[l].W_out;
    const float *w = W->data + q * W->strides[0];
    for (int64_t b = 0; b < r->B; b++)
        for (int64_t p = 0; p < r->P; p++) {
            float a = t.data[(b * r->T + r->pos[p]) * dm + q];
            float *y = dst + (b * r->P + p) * D;
            for (int64_t d = 0; d < D; d++) y[d] = a * w[d * W->strides[1]];
        }
    return CIRCUITS_OK;
}

static void add_vec(double *acc, const circuits_tensor *v, int64_t D)
{
    if (v)
        for (int64_t d = 0; d < D; d++) acc[d] += v->data[d * v->strides[0]];
}

/* TransformerLens's accumulated_bias(layer, mlp_input, include_mlp_biases=expand_neurons),
 * broadcast over batch and positions. Absent biases are zeros, as TransformerLens's are. */
static int fill_bias(const rs *r, float *dst)
{
    const int64_t D = r->D;
    double *acc = cx_calloc((size_t)D, sizeof *acc);
    if (!acc) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", r->fn);
    for (int32_t l = 0; l < r->layer; l++) {
        add_vec(acc, r->m->layers[l].b_O, D);
        if (r->o.expand_neurons && !r->c->attn_only) add_vec(acc, r->m->layers[l].b_out, D);
    }
    if (r->o.mlp_input) add_vec(acc, r->m->layers[r->layer].b_O, D);
    for (int64_t i = 0; i < r->B * r->P; i++)
        for (int64_t d = 0; d < D; d++) dst[i * D + d] = (float)acc[d];
    cx_free(acc);
    return CIRCUITS_OK;
}

static int fill_one(rs *r, int64_t i, const comp *k, void *argp)
{
    fill_arg *a = argp;
    const size_t csize = (size_t)(r->B * r->P * r->D);
    float *dst = a->done ? a->out : a->out + (size_t)i * csize;
    int rc = CIRCUITS_OK;
    switch (k->kind) {
    case COMP_ENTRY: rc = fill_entry(r, k->name, dst); break;
    case COMP_HEAD: rc = fill_head(r, k->layer, k->index, dst, a->zrows); break;
    case COMP_NEURON: rc = fill_neuron(r, k->layer, k->index, dst); break;
    case COMP_BIAS: rc = fill_bias(r, dst); break;
    case COMP_REMAINDER: /* the entry minus every component before it */
        if ((rc = fill_entry(r, k->name, dst))) break;
        for (int64_t j = 0; j < (a->done ? 1 : i); j++) {
            const float *prev = a->done ? a->sum : a->out + (size_t)j * csize;
            for (size_t e = 0; e < csize; e++) dst[e] -= prev[e];
        }
        break;
    }
    if (rc || !a->done) return rc;
    if (a->sum)
        for (size_t e = 0; e < csize; e++) a->sum[e] += dst[e];
    return a->done(r, i, dst, a->u);
}

/* ---- LayerNorm of a stack ---- */

/* apply_ln_to_stack on stack [n, nb, P, D] whose batch rows are `batch` ([nb], NULL: 0..B-1). */
static int ln_stack(const rs *r, float *stack, int64_t n, const int64_t *batch, int64_t nb, int32_t layer,
                    bool mlp_input, bool recompute)
{
    const circuits_config *c = r->c;
    const int64_t D = r->D, P = r->P;
    int nt = c->normalization_type;
    if (nt == CIRCUITS_NORM_NONE) return CIRCUITS_OK;
    bool rms = nt == CIRCUITS_NORM_RMS || nt == CIRCUITS_NORM_RMSPRE;
    if (recompute && layer == c->n_layers) { /* the logit lens: ln_final itself, per component */
        const float *w = r->m->ln_final_w ? r->m->ln_final_w->data : NULL;
        const float *b = r->m->ln_final_b ? r->m->ln_final_b->data : NULL;
        float *scale = cx_malloc((size_t)(nb * P > 0 ? nb * P : 1) * sizeof *scale);
        if (!scale) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", r->fn);
        for (int64_t i = 0; i < n; i++) { /* in place: the kernels read each row before writing it */
            float *x = stack + i * nb * P * D;
            if (rms || c->final_rms) cx_rms_norm(x, scale, x, nb * P, D, c->eps, w);
            else cx_layer_norm(x, scale, x, nb * P, D, c->eps, w, b);
        }
        cx_free(scale);
        return CIRCUITS_OK;
    }
    char name[64];
    if (layer == c->n_layers) snprintf(name, sizeof name, "ln_final.hook_scale");
    else snprintf(name, sizeof name, "blocks.%d.ln%d.hook_scale", layer, mlp_input ? 2 : 1);
    circuits_tensor t;
    int rc = get_entry(r, name, 1, &t);
    if (rc) return rc;
    bool centre = nt == CIRCUITS_NORM_LN || nt == CIRCUITS_NORM_LNPRE;
    for (int64_t i = 0; i < n; i++)
        for (int64_t b = 0; b < nb; b++)
            for (int64_t p = 0; p < P; p++) {
                float *x = stack + ((i * nb + b) * P + p) * D;
                int64_t bb = batch ? batch[b] : b;
                float s = t.data[bb * r->T + r->pos[p]];
                if (centre) {
                    double sum = 0;
                    for (int64_t d = 0; d < D; d++) sum += x[d];
                    float mean = (float)(sum / (double)D);
                    for (int64_t d = 0; d < D; d++) x[d] -= mean;
                }
                for (int64_t d = 0; d < D; d++) x[d] /= s;
            }
    return CIRCUITS_OK;
}

/* The batch rows of opts (resolved into r->... on the caller's array): checked against the cache. */
static int batch_rows(const rs *r, int64_t nb, int64_t **rows)
{
    *rows = NULL;
    if (!r->o.batch_indices) {
        if (nb != r->B)
            return cx_fail(CIRCUITS_E_SHAPE, "%s: the stack has %lld batch rows, the cache %lld (pass batch_indices)", r->fn,
                           (long long)nb, (long long)r->B);
        return CIRCUITS_OK;
    }
    if (nb != r->o.n_batch_indices)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the stack has %lld batch rows, batch_indices %lld", r->fn, (long long)nb,
                       (long long)r->o.n_batch_indices);
    *rows = cx_malloc((size_t)(nb ? nb : 1) * sizeof **rows);
    if (!*rows) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", r->fn);
    for (int64_t b = 0; b < nb; b++) {
        int64_t q = r->o.batch_indices[b];
        if (q < -r->B || q >= r->B) {
            cx_free(*rows);
            *rows = NULL;
            return cx_fail(CIRCUITS_E_RANGE, "%s: batch index %lld is outside the cache's %lld rows", r->fn, (long long)q,
                           (long long)r->B);
        }
        (*rows)[b] = q < 0 ? q + r->B : q;
    }
    return CIRCUITS_OK;
}

/* ---- public calls ---- */

static int check_out(const rs *r, size_t need, size_t out_len, const void *out)
{
    if (!out && need) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out is NULL", r->fn);
    if (out_len < need)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: out holds %zu floats, the result needs %zu", r->fn, out_len, need);
    return CIRCUITS_OK;
}

int circuits_resid_shape(const circuits_model *m, const circuits_cache *cache, int kind,
                         const circuits_resid_options *opts, int64_t *shape)
{
    rs r;
    int64_t n = 0;
    int rc = shape ? rs_begin(&r, "circuits_resid_shape", m, cache, kind, opts)
                   : cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_resid_shape: shape is NULL");
    if (!rc) rc = enumerate(&r, NULL, NULL, &n);
    if (!rc) {
        shape[0] = n;
        shape[1] = r.B;
        shape[2] = r.P;
        shape[3] = r.D;
    }
    if (shape) rs_end(&r);
    return rc;
}

/* The stack of r's kind into out (ln as its TransformerLens method applies it, if apply_ln). */
static int stack_into(rs *r, float *out, size_t out_len, int64_t *n_out)
{
    int64_t n = 0;
    int rc = enumerate(r, NULL, NULL, &n);
    if (rc) return rc;
    size_t need = (size_t)n * (size_t)(r->B * r->P * r->D);
    if ((rc = check_out(r, need, out_len, out))) return rc;
    fill_arg a = {out, cx_malloc((size_t)(r->B * r->P * r->c->d_head + 1) * sizeof(float)), NULL, NULL, NULL};
    if (!a.zrows) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", r->fn);
    rc = enumerate(r, fill_one, &a, &n);
    cx_free(a.zrows);
    if (!rc && r->o.apply_ln) rc = ln_stack(r, out, n, NULL, r->B, r->layer, r->ln_mlp_input, r->ln_recompute);
    if (n_out) *n_out = n;
    return rc;
}

int circuits_resid_stack(const circuits_model *m, const circuits_cache *cache, int kind,
                         const circuits_resid_options *opts, float *out, size_t out_len)
{
    rs r;
    int rc = rs_begin(&r, "circuits_resid_stack", m, cache, kind, opts);
    if (!rc) rc = stack_into(&r, out, out_len, NULL);
    rs_end(&r);
    return rc;
}

typedef struct label_arg {
    char *buf;    /* NULL: count only */
    size_t used;  /* bytes the labels take so far, NULs included */
} label_arg;

static int label_one(rs *r, int64_t i, const comp *k, void *argp)
{
    (void)r;
    (void)i;
    label_arg *a = argp;
    size_t n = strlen(k->label) + 1;
    if (a->buf) memcpy(a->buf + a->used, k->label, n);
    a->used += n;
    return CIRCUITS_OK;
}

int circuits_resid_labels(const circuits_model *m, const circuits_cache *cache, int kind,
                          const circuits_resid_options *opts, char *buf, size_t buf_size, size_t *needed)
{
    rs r;
    int64_t n = 0;
    label_arg a = {NULL, 0};
    int rc = rs_begin(&r, "circuits_resid_labels", m, cache, kind, opts);
    if (!rc) rc = enumerate(&r, label_one, &a, &n);
    if (!rc && needed) *needed = a.used;
    if (!rc && buf) {
        if (buf_size < a.used) {
            rc = cx_fail(CIRCUITS_E_RANGE, "circuits_resid_labels: the %lld labels need %zu bytes, buf has %zu",
                         (long long)n, a.used, buf_size);
        } else {
            a = (label_arg){buf, 0};
            rc = enumerate(&r, label_one, &a, &n);
        }
    }
    rs_end(&r);
    return rc;
}

/* Checks a caller's stack [n, nb, np, D] against r (np must be the positions selected). */
static int check_stack(const rs *r, const float *stack, int64_t n, int64_t nb, int64_t np)
{
    if (n < 0 || nb < 0 || np < 0) return cx_fail(CIRCUITS_E_SHAPE, "%s: a negative stack dimension", r->fn);
    if (!stack && n * nb * np != 0) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: stack is NULL", r->fn);
    if (np != r->P)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: the stack has %lld positions, the positions selected %lld", r->fn,
                       (long long)np, (long long)r->P);
    return CIRCUITS_OK;
}

int circuits_resid_apply_ln(const circuits_model *m, const circuits_cache *cache, const circuits_resid_options *opts,
                            float *stack, int64_t n, int64_t nb, int64_t np)
{
    rs r;
    int64_t *rows = NULL;
    int rc = rs_begin(&r, "circuits_resid_apply_ln", m, cache, CIRCUITS_RESID_ACCUMULATED, opts);
    if (!rc) rc = check_stack(&r, stack, n, nb, np);
    if (!rc) rc = batch_rows(&r, nb, &rows);
    if (!rc) rc = ln_stack(&r, stack, n, rows, nb, r.layer, r.o.mlp_input && r.layer < r.c->n_layers, r.o.recompute_ln != 0);
    cx_free(rows);
    rs_end(&r);
    return rc;
}

int circuits_model_residual_directions(const circuits_model *m, const int32_t *tokens, int64_t n, float *out)
{
    if (!m || (n > 0 && (!tokens || !out)) || n < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_model_residual_directions: NULL argument or negative count");
    const circuits_tensor *W = m->W_U;
    const int64_t D = m->cfg.d_model, V = W->shape[1];
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return cx_fail(CIRCUITS_E_RANGE, "circuits_model_residual_directions: token %d is outside d_vocab_out = %lld",
                           tokens[i], (long long)V);
    const cx_qmat *q = cx_stored(m, W); /* a stored W_U's row t is W_U[:, t] */
    for (int64_t i = 0; i < n; i++)
        if (q) cx_qmat_row(q, tokens[i], out + i * D);
        else for (int64_t d = 0; d < D; d++) out[i * D + d] = W->data[d * W->strides[0] + tokens[i] * W->strides[1]];
    return CIRCUITS_OK;
}

/* The residual directions of `tokens` minus those of `wrong` (may be NULL): *dir [n_tokens, D]
 * (the caller frees it), checked against the rows of r. */
static int logit_directions(const rs *r, int64_t R, const int32_t *tokens, const int32_t *wrong, int64_t n_tokens,
                            float **dir)
{
    const int64_t D = r->D;
    *dir = NULL;
    if (!tokens) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: tokens is NULL", r->fn);
    if (n_tokens != 1 && n_tokens != R)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: %lld tokens for %lld (batch, position) rows (want 1 or %lld)", r->fn,
                       (long long)n_tokens, (long long)R, (long long)R);
    float *d = cx_malloc((size_t)(2 * n_tokens * D) * sizeof *d);
    if (!d) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", r->fn);
    int rc = circuits_model_residual_directions(r->m, tokens, n_tokens, d);
    if (!rc && wrong) rc = circuits_model_residual_directions(r->m, wrong, n_tokens, d + n_tokens * D);
    if (rc) { /* name the caller, keep the reason */
        char why[256];
        snprintf(why, sizeof why, "%s", circuits_last_error());
        cx_free(d);
        return cx_fail(rc, "%s: %s", r->fn, why);
    }
    if (wrong)
        for (int64_t e = 0; e < n_tokens * D; e++) d[e] -= d[n_tokens * D + e];
    *dir = d;
    return CIRCUITS_OK;
}

/* out [n, nb * P] = apply_ln at the unembed of stack [n, nb, P, D] (overwritten), dotted with
 * dir [1 or nb * P, D]. */
static int logit_attrs(const rs *r, float *stack, int64_t n, int64_t nb, const int64_t *rows, const float *dir,
                       int64_t n_dir, float *out)
{
    const int64_t D = r->D, R = nb * r->P;
    int rc = ln_stack(r, stack, n, rows, nb, r->c->n_layers, false, false);
    for (int64_t i = 0; i < n && !rc; i++)
        for (int64_t j = 0; j < R; j++) {
            const float *x = stack + (i * R + j) * D, *v = dir + (n_dir == 1 ? 0 : j) * D;
            double acc = 0;
            for (int64_t d = 0; d < D; d++) acc += (double)x[d] * v[d];
            out[i * R + j] = (float)acc;
        }
    return rc;
}

int circuits_resid_logit_attrs(const circuits_model *m, const circuits_cache *cache, const circuits_resid_options *opts,
                               const float *stack, int64_t n, int64_t nb, int64_t np, const int32_t *tokens,
                               const int32_t *wrong, int64_t n_tokens, float *out)
{
    rs r;
    int64_t *rows = NULL;
    float *tmp = NULL;
    int rc = rs_begin(&r, "circuits_resid_logit_attrs", m, cache, CIRCUITS_RESID_ACCUMULATED, opts);
    if (!rc) rc = check_stack(&r, stack, n, nb, np);
    if (!rc && !out && n * nb * np != 0) rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: out is NULL", r.fn);
    if (!rc) rc = batch_rows(&r, nb, &rows);
    if (!rc) {
        size_t sz = (size_t)(n * nb * np * r.D);
        tmp = cx_malloc((sz ? sz : 1) * sizeof *tmp);
        if (!tmp) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", r.fn);
        else if (sz) memcpy(tmp, stack, sz * sizeof *tmp);
    }
    float *dir = NULL;
    if (!rc) rc = logit_directions(&r, nb * np, tokens, wrong, n_tokens, &dir);
    if (!rc) rc = logit_attrs(&r, tmp, n, nb, rows, dir, n_tokens, out);
    cx_free(dir);
    cx_free(tmp);
    cx_free(rows);
    rs_end(&r);
    return rc;
}

/* A scratch stack of r's kind (no LayerNorm), *n components. */
static int scratch_stack(rs *r, float **stack, int64_t *n)
{
    *stack = NULL;
    int rc = enumerate(r, NULL, NULL, n);
    if (rc) return rc;
    size_t sz = (size_t)(*n * r->B * r->P * r->D);
    *stack = cx_malloc((sz ? sz : 1) * sizeof **stack);
    if (!*stack) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for a %zu-float stack", r->fn, sz);
    r->o.apply_ln = 0;
    return stack_into(r, *stack, sz, n);
}

int circuits_logit_lens(const circuits_model *m, const circuits_cache *cache, const circuits_resid_options *opts,
                        float *out, size_t out_len)
{
    rs r;
    float *stack = NULL;
    int64_t n = 0;
    int rc = rs_begin(&r, "circuits_logit_lens", m, cache, CIRCUITS_RESID_ACCUMULATED, opts);
    if (!rc) rc = enumerate(&r, NULL, NULL, &n);
    const int64_t V = m ? m->cfg.d_vocab_out : 0;
    if (!rc) rc = check_out(&r, (size_t)(n * r.B * r.P * V), out_len, out);
    if (!rc) rc = scratch_stack(&r, &stack, &n);
    if (!rc) rc = ln_stack(&r, stack, n, NULL, r.B, r.c->n_layers, false, true);
    if (!rc && n * r.B * r.P > 0) {
        const float *bias = r.o.unembed_bias && m->b_U ? m->b_U->data : NULL;
        cx_weight_linear(m, out, V, stack, r.D, n * r.B * r.P, m->W_U, bias);
    }
    cx_free(stack);
    rs_end(&r);
    return rc;
}

typedef struct dla_arg {
    const float *dir;
    int64_t n_dir;
    float *out; /* [n, B * P] */
} dla_arg;

static int dla_one(const rs *r, int64_t i, float *component, void *u)
{
    dla_arg *a = u;
    return logit_attrs(r, component, 1, r->B, NULL, a->dir, a->n_dir, a->out + i * r->B * r->P);
}

/* The stack is never formed: each component is filled, normalized and projected in turn, so the
 * memory is one component's whatever the stack's size (every neuron of a model included). */
int circuits_direct_logit_attribution(const circuits_model *m, const circuits_cache *cache, int kind,
                                      const circuits_resid_options *opts, const int32_t *tokens,
                                      const int32_t *wrong, int64_t n_tokens, float *out, size_t out_len)
{
    rs r;
    int64_t n = 0;
    float *dir = NULL, *buf = NULL;
    int rc = rs_begin(&r, "circuits_direct_logit_attribution", m, cache, kind, opts);
    if (!rc) rc = enumerate(&r, NULL, NULL, &n);
    if (!rc) rc = check_out(&r, (size_t)(n * r.B * r.P), out_len, out);
    if (!rc) rc = logit_directions(&r, r.B * r.P, tokens, wrong, n_tokens, &dir);
    const size_t csize = (size_t)(r.B * r.P * r.D), zsize = (size_t)(r.B * r.P * (m ? m->cfg.d_head : 0));
    if (!rc) { /* one block: the component, the running sum, the head scratch */
        buf = cx_calloc(2 * csize + zsize + 1, sizeof *buf);
        if (!buf) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", r.fn);
    }
    if (!rc) {
        dla_arg d = {dir, n_tokens, out};
        fill_arg a = {buf, buf + 2 * csize, dla_one, &d, buf + csize};
        rc = enumerate(&r, fill_one, &a, &n);
    }
    cx_free(buf);
    cx_free(dir);
    rs_end(&r);
    return rc;
}
