/* Hook points: the table of TransformerLens hook names a context exposes, name resolution
 * (exact, get_act_name short names, '*' patterns) and firing callbacks. */
#ifndef CIRCUITS_HOOKS_H
#define CIRCUITS_HOOKS_H

#include "internal.h"

/* In firing order within the model, block-level kinds in firing order within a block. */
typedef enum cx_hook_kind {
    HK_EMBED, HK_POS_EMBED,
    HK_RESID_PRE, HK_LN1_SCALE, HK_LN1_NORMALIZED, HK_Q, HK_K, HK_V, HK_ATTN_SCORES, HK_PATTERN, HK_Z,
    HK_RESULT, HK_ATTN_OUT, HK_RESID_MID, HK_LN2_SCALE, HK_LN2_NORMALIZED, HK_MLP_PRE, HK_MLP_MID,
    HK_MLP_LN_SCALE, HK_MLP_LN_NORMALIZED, HK_MLP_POST, HK_MLP_OUT, HK_RESID_POST,
    HK_LNF_SCALE, HK_LNF_NORMALIZED, HK_UNEMBED_IN, HK_UNEMBED_OUT,
    HK_COUNT
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
    cx_hook_reg *regs; /* in registration order */
    size_t n_regs, cap_regs;
    float *cache_dst;  /* during run_with_cache: where to copy the activation, else NULL */
} cx_hook_point;

struct circuits_context {
    const circuits_model *model;
    circuits_context_options opts;
    cx_hook_point *points; /* in firing order */
    size_t n_points;
    int32_t *point_of;     /* [(n_layers + 1) * HK_COUNT]: point index or -1; row 0 = outside blocks */
    circuits_hook_id next_id;
    bool running;          /* inside forward: reentrant calls are refused */
    float *scratch;        /* activations of one forward pass, grown as needed */
    size_t scratch_floats;
    int64_t kv_past;       /* during a run continuing a KV cache: the cached positions (the key axis
                            * of attn_scores / pattern is kv_past + pos); 0 otherwise */
};

/* A KV cache (generate.c): every layer's keys and values, as hook_k / hook_v left them, for
 * positions 0 .. len-1 of `batch` sequences; a run through cx_forward_kv appends its own. */
struct circuits_kv_cache {
    const circuits_model *model;
    int64_t batch, cap, len; /* cap: positions allocated (<= n_ctx) */
    float *k, *v;            /* [n_layers, batch, cap, n_heads * d_head] */
};

/* Builds ctx->points / point_of for ctx->model and ctx->opts. */
int cx_hooks_build(circuits_context *ctx);
void cx_hooks_free(circuits_context *ctx);

/* The TL shape of hook point p for a run of [batch, pos]; returns ndim; head axis in *head_axis.
 * attn_scores / pattern have ctx->kv_past + pos keys (kv_past is 0 outside KV-cache runs). */
int cx_hook_shape(const circuits_context *ctx, const cx_hook_point *p, int64_t batch, int64_t pos,
                  int64_t *shape, int32_t *head_axis);

/* Calls visit(ctx, index, arg) for every point `name` selects (see circuits_context_add_hook).
 * Returns CIRCUITS_E_NOT_FOUND (with a message) if none. */
int cx_hooks_select(const circuits_context *ctx, const char *name,
                    int (*visit)(const circuits_context *, size_t, void *), void *arg);

/* Expands a short name ("pattern1", "resid_pre3", "k6a") to a full hook name. */
int cx_expand_act_name(const char *s, char *buf, size_t n);

/* Runs the callbacks (and the cache copy) of hook (layer, kind) on data, if it exists. */
int cx_hook_fire(circuits_context *ctx, int layer, cx_hook_kind kind, float *data, int64_t batch,
                 int64_t pos);

/* A partial run (circuits_run_options resolved by context.c). */
typedef struct cx_run_spec {
    int32_t start, stop;      /* blocks start .. stop - 1 run */
    bool stop_at_layer;       /* stop after block stop - 1 with the residual stream (even if stop ==
                               * n_layers, as TransformerLens); false: on to the logits */
    const float *input;       /* [B, T, d_model]: the residual stream before block `start` (start_at_layer),
                               * replacing the embeddings; NULL: from the tokens */
    const int64_t *positions; /* logits only at these positions (negative: from the end); NULL: all */
    int64_t n_positions;
} cx_run_spec;

/* A run as *spec says; out is [B, T, d_model] when it stops early, else the logits
 * [B, n_positions or T, d_vocab_out] (out may be NULL). */
int cx_forward_spec(circuits_context *ctx, const cx_run_spec *spec, const int32_t *tokens, int64_t batch, int64_t pos,
                    float *out);

/* The forward pass (forward.c); the public entry points wrap it. */
int cx_forward(circuits_context *ctx, const int32_t *tokens, int64_t batch, int64_t pos, float *logits,
               float *loss, float *per_token_loss);

/* The same, continuing kv (may not be NULL): tokens [batch, pos] are positions kv->len .., hooks
 * see the new positions only, and their keys / values are appended to kv (len += pos) on success. */
int cx_forward_kv(circuits_context *ctx, circuits_kv_cache *kv, const int32_t *tokens, int64_t batch, int64_t pos,
                  float *logits);

/* True if a callback is registered at (layer, kind): it may change the activation. A point
 * that is only being cached (cache_dst) is copied, never changed. */
static inline bool cx_hook_may_write(const circuits_context *ctx, int layer, cx_hook_kind kind)
{
    int32_t i = ctx->point_of[(size_t)(layer + 1) * HK_COUNT + kind];
    return i >= 0 && ctx->points[i].n_regs > 0;
}

/* Fast check used by the forward pass to skip building a descriptor. */
static inline bool cx_hook_active(const circuits_context *ctx, int layer, cx_hook_kind kind)
{
    int32_t i = ctx->point_of[(size_t)(layer + 1) * HK_COUNT + kind];
    return i >= 0 && (ctx->points[i].n_regs > 0 || ctx->points[i].cache_dst != NULL);
}

#endif
