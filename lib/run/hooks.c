/* The hook table (hooks.h), TransformerLens name resolution, and firing (context.h). */
#include "context.h"
#include "kernels.h"
#include "sae.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* Name suffixes by kind: block kinds are prefixed with "blocks.{l}.". */
static const char *const kind_names[HK_COUNT] = {
    [HK_TOKENS] = "hook_tokens",
    [HK_EMBED] = "hook_embed",
    [HK_POS_EMBED] = "hook_pos_embed",
    [HK_RESID_PRE] = "hook_resid_pre",
    [HK_ATTN_IN] = "hook_attn_in",
    [HK_Q_INPUT] = "hook_q_input",
    [HK_K_INPUT] = "hook_k_input",
    [HK_V_INPUT] = "hook_v_input",
    [HK_LN1_SCALE] = "ln1.hook_scale",
    [HK_LN1_NORMALIZED] = "ln1.hook_normalized",
    [HK_Q] = "attn.hook_q",
    [HK_K] = "attn.hook_k",
    [HK_V] = "attn.hook_v",
    [HK_ROT_Q] = "attn.hook_rot_q",
    [HK_ROT_K] = "attn.hook_rot_k",
    [HK_ATTN_SCORES] = "attn.hook_attn_scores",
    [HK_PATTERN] = "attn.hook_pattern",
    [HK_Z] = "attn.hook_z",
    [HK_RESULT] = "attn.hook_result",
    [HK_LN1_POST_SCALE] = "ln1_post.hook_scale",
    [HK_LN1_POST_NORMALIZED] = "ln1_post.hook_normalized",
    [HK_ATTN_OUT] = "hook_attn_out",
    [HK_RESID_MID] = "hook_resid_mid",
    [HK_MLP_IN] = "hook_mlp_in",
    [HK_LN2_SCALE] = "ln2.hook_scale",
    [HK_LN2_NORMALIZED] = "ln2.hook_normalized",
    [HK_MLP_PRE] = "mlp.hook_pre",
    [HK_MLP_PRE_LINEAR] = "mlp.hook_pre_linear",
    [HK_MLP_MID] = "mlp.hook_mid",
    [HK_MLP_LN_SCALE] = "mlp.ln.hook_scale",
    [HK_MLP_LN_NORMALIZED] = "mlp.ln.hook_normalized",
    [HK_MLP_POST] = "mlp.hook_post",
    [HK_LN2_POST_SCALE] = "ln2_post.hook_scale",
    [HK_LN2_POST_NORMALIZED] = "ln2_post.hook_normalized",
    [HK_MLP_OUT] = "hook_mlp_out",
    [HK_RESID_POST] = "hook_resid_post",
    [HK_LNF_SCALE] = "ln_final.hook_scale",
    [HK_LNF_NORMALIZED] = "ln_final.hook_normalized",
    [HK_UNEMBED_IN] = "unembed.hook_in",
    [HK_UNEMBED_OUT] = "unembed.hook_out",
};

/* Whether this model (and context options) has hook kind k. */
static bool kind_exists(const circuits_context *ctx, cx_hook_kind k)
{
    const circuits_config *c = &ctx->model->cfg;
    bool norm = c->normalization_type != CIRCUITS_NORM_NONE, mlp = !c->attn_only;
    const circuits_context_options *o = &ctx->opts;
    switch (k) {
    case HK_TOKENS: return o->use_hook_tokens != 0;
    case HK_ATTN_IN: return o->use_attn_in != 0;
    case HK_Q_INPUT: case HK_K_INPUT: case HK_V_INPUT: return o->use_split_qkv_input != 0;
    case HK_MLP_IN: return mlp && o->use_hook_mlp_in;
    case HK_LN1_SCALE: case HK_LN1_NORMALIZED: case HK_LNF_SCALE: case HK_LNF_NORMALIZED: return norm;
    case HK_RESULT: return ctx->opts.use_attn_result != 0;
    case HK_ROT_Q: case HK_ROT_K: return c->positional_embedding_type == CIRCUITS_POS_ROTARY;
    case HK_POS_EMBED: return c->positional_embedding_type != CIRCUITS_POS_ROTARY; /* TL has no pos_embed */
    case HK_LN1_POST_SCALE: case HK_LN1_POST_NORMALIZED: return c->norm_before_and_after != 0;
    case HK_RESID_MID: return mlp && !c->parallel_attn_mlp;
    case HK_MLP_PRE: case HK_MLP_POST: case HK_MLP_OUT: return mlp;
    case HK_MLP_PRE_LINEAR: return mlp && c->gated_mlp;
    case HK_LN2_SCALE: case HK_LN2_NORMALIZED: return mlp && norm;
    case HK_LN2_POST_SCALE: case HK_LN2_POST_NORMALIZED: return mlp && c->norm_before_and_after;
    case HK_MLP_MID: case HK_MLP_LN_SCALE: case HK_MLP_LN_NORMALIZED:
        return mlp && c->act_fn == CIRCUITS_ACT_SOLU_LN;
    default: return true;
    }
}

void cx_hook_kind_name(int layer, cx_hook_kind k, char *buf, size_t n)
{
    if (layer >= 0) snprintf(buf, n, "blocks.%d.%s", layer, kind_names[k]);
    else snprintf(buf, n, "%s", kind_names[k]);
}

static const char *const sae_point_names[] = {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post",
                                              "hook_sae_recons", "hook_sae_error", "hook_sae_output"};

static int push_point(cx_hook_table *t, const char *name, int layer, cx_hook_kind kind, cx_hook_kind base, int32_t sae)
{
    cx_hook_point *p = &t->points[t->n_points];
    memset(p, 0, sizeof *p);
    if (!(p->name = cx_strdup(name))) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory building a hook table");
    p->layer = layer;
    p->kind = kind;
    p->base = base;
    p->sae = sae;
    p->capture = -1;
    t->n_points++;
    return CIRCUITS_OK;
}

/* The model's point (layer, k), or in its place the points of the SAE that replaces it. */
static int add_point(const cx_sae_attach *saes, size_t n_saes, cx_hook_table *t, int layer, cx_hook_kind k)
{
    char name[96], sub[160];
    cx_hook_kind_name(layer, k, name, sizeof name);
    size_t first = t->n_points;
    int rc;
    for (size_t a = 0; a < n_saes; a++) {
        if (saes[a].out_layer != layer || saes[a].out_kind != (int32_t)k) continue;
        for (int j = 0; j < 6; j++) {
            if (HK_SAE_INPUT + j == HK_SAE_ERROR && !saes[a].error_term) continue;
            snprintf(sub, sizeof sub, "%s.%s", name, sae_point_names[j]);
            if ((rc = push_point(t, sub, layer, (cx_hook_kind)(HK_SAE_INPUT + j), k, (int32_t)a))) return rc;
        }
        t->point_of[(size_t)(layer + 1) * HK_COUNT + k] = (int32_t)first;
        return CIRCUITS_OK;
    }
    if ((rc = push_point(t, name, layer, k, k, -1))) return rc;
    for (size_t a = 0; a < n_saes; a++)
        if (cx_sae_captures(&saes[a]) && saes[a].in_layer == layer && saes[a].in_kind == (int32_t)k)
            t->points[first].capture = (int32_t)a;
    t->point_of[(size_t)(layer + 1) * HK_COUNT + k] = (int32_t)first;
    return CIRCUITS_OK;
}

void cx_hook_table_free(cx_hook_table *t)
{
    for (size_t i = 0; i < t->n_points; i++) {
        cx_free(t->points[i].name);
        cx_free(t->points[i].regs);
        cx_free(t->points[i].bregs);
    }
    cx_free(t->points);
    cx_free(t->point_of);
    memset(t, 0, sizeof *t);
}

int cx_hooks_build_table(const circuits_context *ctx, const cx_sae_attach *saes, size_t n_saes, cx_hook_table *t)
{
    size_t L = (size_t)ctx->model->cfg.n_layers;
    memset(t, 0, sizeof *t);
    /* each SAE puts at most 6 points where there was 1 */
    t->points = cx_calloc((L + 1) * HK_COUNT + 5 * n_saes, sizeof *t->points);
    t->point_of = cx_malloc((L + 1) * HK_COUNT * sizeof *t->point_of);
    if (!t->points || !t->point_of) {
        cx_hook_table_free(t);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory building a hook table");
    }
    for (size_t i = 0; i < (L + 1) * HK_COUNT; i++) t->point_of[i] = -1;
    int rc = CIRCUITS_OK;
    for (int k = HK_TOKENS; k <= HK_POS_EMBED && !rc; k++)
        if (kind_exists(ctx, (cx_hook_kind)k)) rc = add_point(saes, n_saes, t, -1, (cx_hook_kind)k);
    for (size_t l = 0; l < L && !rc; l++)
        for (int k = HK_RESID_PRE; k <= HK_RESID_POST && !rc; k++)
            if (kind_exists(ctx, (cx_hook_kind)k)) rc = add_point(saes, n_saes, t, (int)l, (cx_hook_kind)k);
    for (int k = HK_LNF_SCALE; k < HK_COUNT && !rc; k++)
        if (kind_exists(ctx, (cx_hook_kind)k)) rc = add_point(saes, n_saes, t, -1, (cx_hook_kind)k);
    if (rc) cx_hook_table_free(t);
    return rc;
}

int cx_hooks_build(circuits_context *ctx)
{
    return cx_hooks_build_table(ctx, NULL, 0, &ctx->hooks);
}

void cx_hooks_free(circuits_context *ctx)
{
    cx_hook_table_free(&ctx->hooks);
}

int cx_hook_shape(const circuits_context *ctx, const cx_hook_point *p, int64_t B, int64_t T, int64_t past,
                  int64_t *s, int32_t *head_axis)
{
    const circuits_config *c = &ctx->model->cfg;
    *head_axis = -1;
    s[0] = B;
    s[1] = T;
    if (p->sae >= 0) {
        const circuits_sae *sae = ctx->saes[p->sae].sae;
        switch (p->kind) {
        case HK_SAE_INPUT: s[2] = sae->d_in; return 3;
        case HK_SAE_ACTS_PRE: case HK_SAE_ACTS_POST: s[2] = sae->d_sae; return 3;
        case HK_SAE_RECONS: s[2] = sae->d_out; return 3;
        default: { /* error, output: the shape of the point replaced */
            cx_hook_point base = *p;
            base.kind = p->base;
            base.sae = -1;
            return cx_hook_shape(ctx, &base, B, T, past, s, head_axis);
        }
        }
    }
    /* ln1 on per-head inputs: the shape of its last firing each layer, the value input's */
    int64_t ln1_heads = !cx_split_heads(ctx) ? 0 : ctx->opts.use_split_qkv_input ? c->n_key_value_heads : c->n_heads;
    switch (p->kind) {
    case HK_TOKENS:
        return 2;
    case HK_ATTN_IN: case HK_Q_INPUT:
        s[2] = c->n_heads; s[3] = c->d_model; *head_axis = 2; return 4;
    case HK_K_INPUT: case HK_V_INPUT: /* grouped-query attention: the K/V heads (TransformerLens) */
        s[2] = c->n_key_value_heads; s[3] = c->d_model; *head_axis = 2; return 4;
    case HK_LN1_SCALE: case HK_LN1_NORMALIZED:
        if (!ln1_heads) break;
        s[2] = ln1_heads; s[3] = p->kind == HK_LN1_SCALE ? 1 : c->d_model; *head_axis = 2; return 4;
    default: break;
    }
    switch (p->kind) {
    case HK_LN1_SCALE: case HK_LN2_SCALE: case HK_LNF_SCALE: case HK_MLP_LN_SCALE:
    case HK_LN1_POST_SCALE: case HK_LN2_POST_SCALE:
        s[2] = 1; return 3;
    case HK_Q: case HK_ROT_Q: case HK_Z:
        s[2] = c->n_heads; s[3] = c->d_head; *head_axis = 2; return 4;
    case HK_K: case HK_V: case HK_ROT_K: /* grouped-query attention: the K/V heads (TransformerLens) */
        s[2] = c->n_key_value_heads; s[3] = c->d_head; *head_axis = 2; return 4;
    case HK_RESULT:
        s[2] = c->n_heads; s[3] = c->d_model; *head_axis = 2; return 4;
    case HK_ATTN_SCORES: case HK_PATTERN: /* keys: the cached positions too (KV-cache runs) */
        s[1] = c->n_heads; s[2] = T; s[3] = past + T; *head_axis = 1; return 4;
    case HK_MLP_PRE: case HK_MLP_PRE_LINEAR: case HK_MLP_MID: case HK_MLP_LN_NORMALIZED: case HK_MLP_POST:
        s[2] = c->d_mlp; return 3;
    case HK_UNEMBED_OUT:
        s[2] = c->d_vocab_out; return 3;
    default:
        s[2] = c->d_model; return 3;
    }
}

/* ---- names ---- */

/* TransformerLens utils.get_act_name. */
int circuits_act_name(const char *name, int32_t layer, const char *layer_type, char *buf, size_t n)
{
    if (!name || !buf) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_act_name: NULL argument");
    static const char *const alias[][2] = {
        {"attn", "pattern"}, {"attn_logits", "attn_scores"}, {"key", "k"}, {"query", "q"},
        {"value", "v"}, {"mlp_pre", "pre"}, {"mlp_mid", "mid"}, {"mlp_post", "post"},
    };
    static const char *const type_alias[][2] = {
        {"a", "attn"}, {"m", "mlp"}, {"b", ""}, {"block", ""}, {"blocks", ""}, {"attention", "attn"},
    };
    static const char *const attn_names[] = {"k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern",
                                             "attn_scores"};
    static const char *const mlp_names[] = {"pre", "post", "mid", "pre_linear"};
    int len;
    if ((strchr(name, '.') || strncmp(name, "hook_", 5) == 0) && layer < 0 && !layer_type) {
        len = snprintf(buf, n, "%s", name);
    } else {
        for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
            if (strcmp(name, alias[i][0]) == 0) name = alias[i][1];
        bool is_attn = false, is_mlp = false;
        for (size_t i = 0; i < sizeof attn_names / sizeof attn_names[0]; i++)
            is_attn |= strcmp(name, attn_names[i]) == 0;
        for (size_t i = 0; i < sizeof mlp_names / sizeof mlp_names[0]; i++)
            is_mlp |= strcmp(name, mlp_names[i]) == 0;
        const char *type = is_attn ? "attn" : is_mlp ? "mlp" : layer_type;
        for (size_t i = 0; !is_attn && !is_mlp && type && i < sizeof type_alias / sizeof type_alias[0]; i++)
            if (strcmp(type, type_alias[i][0]) == 0) {
                type = type_alias[i][1];
                break;
            }
        bool ln_final = layer < 0 && (strcmp(name, "scale") == 0 || strcmp(name, "normalized") == 0);
        char lay[32] = "";
        if (layer >= 0) snprintf(lay, sizeof lay, "blocks.%d.", (int)layer);
        len = snprintf(buf, n, "%s%s%s%shook_%s", ln_final ? "ln_final." : "", lay, type && *type ? type : "",
                       type && *type ? "." : "", name);
    }
    if (len < 0 || (size_t)len >= n)
        return cx_fail(CIRCUITS_E_RANGE, "circuits_act_name: buffer of %zu bytes is too small", n);
    return CIRCUITS_OK;
}

/* A short name "resid_pre3", "k6a", "scale4ln1": name letters/underscores, a layer number, an
 * optional layer type. TransformerLens's regex ([a-z]+)(\d+)([a-z]?.*) is widened to allow
 * underscores in the name, so that "resid_pre3" and "attn_scores1" resolve too. */
int cx_expand_act_name(const char *s, char *buf, size_t n)
{
    if (strchr(s, '.') || strncmp(s, "hook_", 5) == 0) return circuits_act_name(s, -1, NULL, buf, n);
    size_t i = 0;
    while (s[i] && (islower((unsigned char)s[i]) || s[i] == '_')) i++;
    if (i == 0 || !isdigit((unsigned char)s[i])) return circuits_act_name(s, -1, NULL, buf, n);
    char nm[64];
    if (i >= sizeof nm) return circuits_act_name(s, -1, NULL, buf, n);
    memcpy(nm, s, i);
    nm[i] = '\0';
    size_t digits = 0;
    while (isdigit((unsigned char)s[i + digits])) digits++;
    /* no model has a billion layers: such a "short name" is taken as written (and not found) */
    if (digits > 9) {
        if ((size_t)snprintf(buf, n, "%s", s) >= n) return cx_fail(CIRCUITS_E_RANGE, "name '%.64s...' is too long", s);
        return CIRCUITS_OK;
    }
    long layer = 0;
    while (isdigit((unsigned char)s[i])) layer = layer * 10 + (s[i++] - '0');
    return circuits_act_name(nm, (int32_t)layer, s[i] ? s + i : NULL, buf, n);
}

static bool glob_match(const char *pat, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '*') {
            star = pat++;
            resume = s;
        } else if (*pat == *s) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pat == '*') pat++;
    return *pat == '\0';
}

/* A hint when `full` names a point an attached SAE replaces. */
static const char *sae_hint(const circuits_context *ctx, const char *full)
{
    size_t fl = strlen(full);
    for (size_t i = 0; i < ctx->hooks.n_points; i++)
        if (ctx->hooks.points[i].sae >= 0 && strncmp(ctx->hooks.points[i].name, full, fl) == 0 &&
            strncmp(ctx->hooks.points[i].name + fl, ".hook_sae_", 10) == 0)
            return " (an attached SAE replaces it: its points are '<name>.hook_sae_*')";
    return "";
}

int cx_hooks_select(const circuits_context *ctx, const char *name,
                    int (*visit)(const circuits_context *, size_t, void *), void *arg)
{
    size_t matched = 0;
    int rc;
    if (strchr(name, '*')) {
        for (size_t i = 0; i < ctx->hooks.n_points; i++)
            if (glob_match(name, ctx->hooks.points[i].name)) {
                if ((rc = visit(ctx, i, arg))) return rc;
                matched++;
            }
        if (!matched) return cx_fail(CIRCUITS_E_NOT_FOUND, "pattern '%s' matches no hook point of this model", name);
        return CIRCUITS_OK;
    }
    char full[256];
    if (cx_expand_act_name(name, full, sizeof full) != CIRCUITS_OK)
        return cx_fail(CIRCUITS_E_NOT_FOUND, "no hook point named '%s'", name);
    for (size_t i = 0; i < ctx->hooks.n_points; i++)
        if (strcmp(full, ctx->hooks.points[i].name) == 0) return visit(ctx, i, arg);
    const char *hint = sae_hint(ctx, full);
    if (*hint) (void)0;
    else if (strstr(full, "hook_result")) hint = " (set use_attn_result in circuits_context_options)";
    else if (strstr(full, "hook_q_input") || strstr(full, "hook_k_input") || strstr(full, "hook_v_input"))
        hint = " (set use_split_qkv_input in circuits_context_options)";
    else if (strstr(full, "hook_attn_in")) hint = " (set use_attn_in in circuits_context_options)";
    else if (strstr(full, "hook_mlp_in")) hint = " (set use_hook_mlp_in in circuits_context_options)";
    else if (strcmp(full, "hook_tokens") == 0) hint = " (set use_hook_tokens in circuits_context_options)";
    else if (strstr(full, "ln1.") || strstr(full, "ln2.") || strstr(full, "ln_final."))
        hint = " (this model has no such LayerNorm)";
    if (strcmp(full, name) != 0)
        return cx_fail(CIRCUITS_E_NOT_FOUND, "no hook point named '%s' (read as '%s')%s", name, full, hint);
    return cx_fail(CIRCUITS_E_NOT_FOUND, "no hook point named '%s'%s", name, hint);
}

typedef struct one_point {
    int32_t index;
    size_t seen;
} one_point;

static int visit_one(const circuits_context *ctx, size_t i, void *arg)
{
    (void)ctx;
    one_point *o = arg;
    if (o->seen++ == 0) o->index = (int32_t)i;
    return CIRCUITS_OK;
}

int cx_hook_one(const circuits_context *ctx, const char *fn, const char *name, int32_t *index)
{
    if (!name) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: a hook name is NULL", fn);
    one_point o = {-1, 0};
    int rc = cx_hooks_select(ctx, name, visit_one, &o);
    if (rc) return rc;
    if (o.seen != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: '%s' selects %zu hook points; name exactly one", fn, name,
                       o.seen);
    *index = o.index;
    return CIRCUITS_OK;
}

/* ---- firing ---- */

void cx_hook_describe(const circuits_context *ctx, const cx_hook_point *p, int64_t B, int64_t T, int64_t past,
                      float *data, circuits_tensor *t)
{
    memset(t, 0, sizeof *t);
    t->name = p->name;
    t->layer = p->layer;
    t->head = -1;
    t->ndim = cx_hook_shape(ctx, p, B, T, past, t->shape, &t->head_axis);
    cx_contiguous_strides(t->ndim, t->shape, t->strides);
    t->data = data;
}

int cx_callback_status(int r, const char *who, const char *name)
{
    if (r == CIRCUITS_HOOK_CONTINUE) return CIRCUITS_OK;
    if (r == CIRCUITS_HOOK_STOP) return cx_fail(CIRCUITS_E_STOPPED, "run stopped by the %s at '%s'", who, name);
    return cx_fail(CIRCUITS_E_CALLBACK, "%s at '%s' failed (returned %d)", who, name, r);
}

/* Callbacks, editors, observer, cache copy and tape of point idx (model point (layer, kind), or an
 * SAE's point: editors and the observer of a replaced point see its hook_sae_output). */
static int fire_point(circuits_context *ctx, const cx_run *run, int32_t idx, float *data, int64_t B, int64_t T,
                      int64_t heads, bool cache)
{
    cx_hook_point *p = &ctx->hooks.points[idx];
    int layer = p->layer;
    cx_hook_kind kind = p->base;
    bool model_point = p->sae < 0 || p->kind == HK_SAE_OUTPUT; /* edits and observers of the model's point */
    float *dst = run->cache_dst && cache ? run->cache_dst[idx] : NULL;
    bool observed = model_point && run->observer.fn && run->observer.kind == kind;
    circuits_tensor t;
    cx_hook_describe(ctx, p, B, T, run->kv ? run->kv->len : 0, data, &t);
    if (heads > 0 && t.head_axis == 2 && t.shape[2] != heads) { /* this firing's own head count */
        t.shape[2] = heads;
        cx_contiguous_strides(t.ndim, t.shape, t.strides);
    }
    int rc;
    size_t numel = (size_t)(t.shape[0] * t.strides[0]);
    if (run->tape && cx_hook_may_write(ctx, run, layer, kind)) cx_tape_record(run->tape, idx, true, data, numel);
    for (size_t i = 0; i < p->n_regs; i++)
        if ((rc = cx_callback_status(p->regs[i].fn(&t, p->regs[i].user_data), "hook callback", p->name))) return rc;
    for (size_t i = 0; i < run->n_edits; i++) { /* in the run's order */
        const cx_edit *e = &run->edits[i];
        bool here = e->sae_point ? e->sae_point == idx + 1 : model_point && e->layer == layer && e->kind == kind;
        if (here && (cache || !e->cached_only) &&
            (rc = cx_callback_status(e->fn(&t, e->user_data), "editor", p->name)))
            return rc;
    }
    if (observed && (rc = cx_callback_status(run->observer.fn(&t, run->observer.user_data), "observer", p->name)))
        return rc;
    if (dst) cx_copy_floats(dst, data, numel);
    if (run->tape) cx_tape_record(run->tape, idx, false, data, numel);
    if (p->capture >= 0) cx_sae_capture(ctx, p->capture, data, numel);
    return CIRCUITS_OK;
}

int cx_hook_fire_index(circuits_context *ctx, const cx_run *run, int32_t idx, float *data, int64_t B, int64_t T)
{
    return fire_point(ctx, run, idx, data, B, T, 0, true);
}

static int fire(circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind, float *data, int64_t B,
                int64_t T, int64_t heads, bool cache)
{
    if (!cx_hook_active(ctx, run, layer, kind)) return CIRCUITS_OK;
    int32_t idx = cx_hook_index(&ctx->hooks, layer, kind);
    if (ctx->hooks.points[idx].sae >= 0) return cx_sae_splice(ctx, run, idx, data, B, T);
    return fire_point(ctx, run, idx, data, B, T, heads, cache);
}

int cx_hook_fire(circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind, float *data, int64_t B,
                 int64_t T)
{
    return fire(ctx, run, layer, kind, data, B, T, 0, true);
}

int cx_hook_fire_heads(circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind, float *data,
                       int64_t B, int64_t T, int64_t heads, bool cache)
{
    return fire(ctx, run, layer, kind, data, B, T, heads, cache);
}
