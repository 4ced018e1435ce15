/* The hook table: the TransformerLens hook points a context exposes (names, kinds, shapes),
 * their registered callbacks, and name resolution (exact, get_act_name short names, '*'
 * patterns). A run (context.h) fires them. */
#ifndef CIRCUITS_HOOKS_H
#define CIRCUITS_HOOKS_H

#include "internal.h"

/* In firing order within the model, block-level kinds in firing order within a block. Every
 * *_SCALE kind is followed by its *_NORMALIZED kind (forward.c's layer_norm relies on it).
 * HK_TOKENS's data is int32_t token ids, not floats. */
typedef enum cx_hook_kind {
    HK_TOKENS, HK_EMBED, HK_POS_EMBED,
    HK_RESID_PRE, HK_ATTN_IN, HK_Q_INPUT, HK_K_INPUT, HK_V_INPUT, HK_LN1_SCALE, HK_LN1_NORMALIZED, HK_Q, HK_K, HK_V, HK_ROT_Q, HK_ROT_K, HK_ATTN_SCORES,
    HK_PATTERN, HK_Z, HK_RESULT, HK_LN1_POST_SCALE, HK_LN1_POST_NORMALIZED, HK_ATTN_OUT, HK_RESID_MID,
    HK_MLP_IN, HK_LN2_SCALE, HK_LN2_NORMALIZED, HK_MLP_PRE, HK_MLP_PRE_LINEAR, HK_MLP_MID, HK_MLP_LN_SCALE,
    HK_MLP_LN_NORMALIZED, HK_MLP_POST, HK_LN2_POST_SCALE, HK_LN2_POST_NORMALIZED, HK_MLP_OUT, HK_RESID_POST,
    HK_LNF_SCALE, HK_LNF_NORMALIZED, HK_UNEMBED_IN, HK_UNEMBED_OUT,
    HK_COUNT,
    /* the points an attached SAE fires in place of the point it replaces (lib/sae/splice.c), in
     * their firing order; never in point_of: the replaced (layer, kind) maps to HK_SAE_INPUT */
    HK_SAE_INPUT = HK_COUNT, HK_SAE_ACTS_PRE, HK_SAE_ACTS_POST, HK_SAE_RECONS, HK_SAE_ERROR, HK_SAE_OUTPUT
} cx_hook_kind;

typedef struct cx_hook_reg {
    circuits_hook_id id;
    circuits_hook_fn fn;
    void *user_data;
} cx_hook_reg;

typedef struct cx_hook_point {
    char *name;
    int32_t layer;     /* -1 outside blocks */
    cx_hook_kind kind;
    cx_hook_kind base; /* the model's kind this point fires in place of: kind itself, or for the
                        * HK_SAE_* points the kind of the point their SAE replaces */
    int32_t sae;       /* HK_SAE_* points: their attachment (ctx->saes index); else -1 */
    int32_t capture;   /* a transcoder (ctx->saes index) reads this point's value; else -1 */
    cx_hook_reg *regs; /* in registration order */
    size_t n_regs, cap_regs;
    cx_hook_reg *bregs; /* backward hooks (gradient runs), in registration order */
    size_t n_bregs, cap_bregs;
} cx_hook_point;

typedef struct cx_hook_table {
    cx_hook_point *points; /* in firing order */
    size_t n_points;
    int32_t *point_of;     /* [(n_layers + 1) * HK_COUNT]: point index or -1; row 0 = outside blocks */
    circuits_hook_id next_id;
} cx_hook_table;

struct cx_sae_attach;

/* Builds ctx->hooks for ctx->model and ctx->opts (no SAEs attached). */
int cx_hooks_build(circuits_context *ctx);
void cx_hooks_free(circuits_context *ctx);
/* Builds a table for ctx's model and options with saes[0 .. n) attached into *t (registrations
 * empty); on failure *t holds nothing. */
int cx_hooks_build_table(const circuits_context *ctx, const struct cx_sae_attach *saes, size_t n, cx_hook_table *t);
void cx_hook_table_free(cx_hook_table *t);
/* The name of the model's own point (layer, kind) ("blocks.3.hook_resid_pre") into buf. */
void cx_hook_kind_name(int layer, cx_hook_kind kind, char *buf, size_t n);

/* The index of hook (layer, kind) in t->points, or -1 if this model has none. */
static inline int32_t cx_hook_index(const cx_hook_table *t, int layer, cx_hook_kind kind)
{
    return t->point_of[(size_t)(layer + 1) * HK_COUNT + kind];
}

/* The index of the point whose value the model goes on with at (layer, kind): the point itself,
 * or the hook_sae_output of an SAE replacing it (what patching caches and writes there); -1 if none. */
static inline int32_t cx_hook_value_index(const cx_hook_table *t, int layer, cx_hook_kind kind)
{
    int32_t i = cx_hook_index(t, layer, kind);
    if (i < 0 || t->points[i].sae < 0) return i;
    while (t->points[i].kind != HK_SAE_OUTPUT) i++;
    return i;
}

/* The TL shape of hook point p for a run of [batch, pos] new positions after `past` cached ones
 * (KV-cache runs: attn_scores / pattern have past + pos keys); returns ndim; head axis in
 * *head_axis. */
int cx_hook_shape(const circuits_context *ctx, const cx_hook_point *p, int64_t batch, int64_t pos, int64_t past,
                  int64_t *shape, int32_t *head_axis);

/* Fills *t to describe point p's activation at data (contiguous, TL shape): the one place hook
 * descriptors are made. */
void cx_hook_describe(const circuits_context *ctx, const cx_hook_point *p, int64_t batch, int64_t pos, int64_t past,
                      float *data, circuits_tensor *t);

/* Calls visit(ctx, index, arg) for every point `name` selects (see circuits_context_add_hook).
 * Returns CIRCUITS_E_NOT_FOUND (with a message) if none. */
int cx_hooks_select(const circuits_context *ctx, const char *name,
                    int (*visit)(const circuits_context *, size_t, void *), void *arg);

/* The one hook point `name` selects (full or short name, as cx_hooks_select reads it) into *index;
 * NULL name or a pattern selecting several is CIRCUITS_E_INVALID_ARGUMENT, none NOT_FOUND; fn
 * names the caller in messages. */
int cx_hook_one(const circuits_context *ctx, const char *fn, const char *name, int32_t *index);

/* Expands a short name ("pattern1", "resid_pre3", "k6a") to a full hook name. */
int cx_expand_act_name(const char *s, char *buf, size_t n);

#endif
