/* Run contexts and the one door every run goes through.
 *
 * A context is a model, its hook table (hooks.h) and the run memory its passes work in. A run
 * is described whole by a cx_run — what goes in (tokens or a residual stream), where it starts
 * and stops, which KV cache it continues, which activations it caches, which internal observer
 * watches it, which internal editors change it (ablation, patching), what comes out — and
 * cx_context_run takes it through guard -> pass -> release. The public runners (forward, run,
 * forward_kv, run_with_cache, detect_heads, induction_scores, generate, run_ablated,
 * activation_patch) fill a cx_run and call the door; nothing about a run is kept in
 * the context between or during runs except the run memory and the guard. */
#ifndef CIRCUITS_CONTEXT_H
#define CIRCUITS_CONTEXT_H

#include "hooks.h"

struct circuits_context {
    const circuits_model *model;
    circuits_context_options opts;
    cx_hook_table hooks;
    bool running;          /* the guard: a run (or a generation) holds the context */
    bool in_pass;          /* a forward pass is computing: the run memory is in use */
    float *scratch;        /* the run memory: activations of one pass, grown as needed; every hook
                            * callback's data lies in it (circuits_context_take_run_memory) */
    size_t scratch_floats;
    float *grad_scratch;   /* a gradient run's memory (backward.c): its tape and gradients, every backward
                            * hook callback's data; handed over with the run memory, as scratch is */
    size_t grad_floats;
    struct cx_sae_attach *saes; /* SAEs attached (lib/sae/splice.c), in attachment order */
    size_t n_saes;
    float *sae_mem;        /* this pass's SAE working memory, in the run memory (NULL: no SAE attached) */
    int64_t run_past;      /* positions a KV cache held before this pass's (0 without one): hooks that
                            * count positions from the sequence's start (steering, monitors) read it */
    struct cx_owned *owned; /* user data the context owns for registrations made by the library
                            * (steering vectors, probe monitors): freed with their hook id */
    size_t n_owned, cap_owned;
};

/* A registration's data owned by the context (cx_context_add_owned_hook). */
typedef struct cx_owned {
    circuits_hook_id id;
    void *data;
    void (*release)(void *data);
} cx_owned;

/* circuits_context_add_hook for a registration the library makes with data it allocated: the
 * context owns data (release(data) when the id is removed or cleared, or the context freed; on
 * failure at once). fn_name names the public function in messages. */
int cx_context_add_owned_hook(circuits_context *ctx, const char *fn_name, const char *name, circuits_hook_fn fn,
                              void *data, void (*release)(void *), circuits_hook_id *out_id);

/* A KV cache (generate.c): every layer's keys and values, as hook_k / hook_v left them, for
 * positions 0 .. len-1 of `batch` sequences; a run continuing it appends its own. */
struct circuits_kv_cache {
    const circuits_model *model;
    int64_t batch, cap, len; /* cap: positions allocated (<= n_ctx) */
    float *k, *v;            /* [n_layers, batch, cap, n_heads * d_head] */
    int32_t *mask;           /* [batch, cap]: the attention mask of the positions held (1 where a
                              * run gave none), as TransformerLens's cache appends it */
    int32_t lo, hi;          /* blocks lo .. hi-1: those whose keys and values every held position
                              * has (a run from start_at_layer or to stop_at_layer appends only its
                              * own blocks'); 0 .. n_layers when empty */
};

/* An internal reader of one hook kind (detectors): called at every point of that kind after
 * the registered callbacks, with the same descriptor. It may not write. */
typedef struct cx_observer {
    circuits_hook_fn fn;   /* NULL: none */
    cx_hook_kind kind;
    void *user_data;
} cx_observer;

/* An internal editor of one hook point (ablation, patching): called there after the registered
 * callbacks (several at one point in the run's order) and before the observer and the cache
 * copy, with the same descriptor; it may write
 * (the pass treats the point as written, as it does a registered callback's). */
typedef struct cx_edit {
    int32_t layer;         /* -1 outside blocks */
    cx_hook_kind kind;
    circuits_hook_fn fn;
    void *user_data;
    bool cached_only;      /* a reader of what run_with_cache keeps: at a point fired several times
                            * per run (ln1 on per-head inputs) only the firing the cache copies */
    int32_t sae_point;     /* 0: the model's point (layer, kind) (an SAE replacing it: at its
                            * hook_sae_output). Else an attached SAE's point, by its index + 1
                            * (cx_edit_point): (layer, kind) cannot tell two SAEs' points apart */
} cx_edit;

/* Sets e->sae_point for an editor of point p of ctx's table (any point a name resolves to). */
static inline void cx_edit_point(const circuits_context *ctx, const cx_hook_point *p, cx_edit *e)
{
    e->sae_point = p->sae >= 0 ? (int32_t)(p - ctx->hooks.points) + 1 : 0;
}

/* Everything about one run. Start from cx_run_init. */
typedef struct cx_run {
    const char *fn;            /* the public function's name, for messages */
    const int32_t *tokens;     /* [batch, pos]; may be NULL when input is set */
    int64_t batch, pos;
    const int32_t *attention_mask; /* [batch, pos] of 0/1 (1: a real token, 0: padding) for this
                                * run's positions, TransformerLens's attention_mask; with a KV cache
                                * the new positions only (the cache holds the earlier ones). NULL:
                                * every position real */
    const float *input;        /* [batch, pos, d_model]: the residual stream before block `start`
                                * (start_at_layer), replacing the embeddings; NULL: from the tokens */
    int32_t start, stop;       /* blocks start .. stop - 1 run */
    bool stop_at_layer;        /* stop after block stop - 1 with the residual stream (even if stop ==
                                * n_layers, as TransformerLens); false: on to the logits */
    const int64_t *positions;  /* logits only at these positions (negative: from the end); NULL: all */
    int64_t n_positions;
    circuits_kv_cache *kv;     /* continue this KV cache (new positions kv->len ..; appended on
                                * success), or NULL */
    float *const *cache_dst;   /* [n_points]: where to copy each point's activation (NULL entries:
                                * not cached), or NULL (run_with_cache) */
    cx_observer observer;
    const cx_edit *edits;      /* [n_edits] internal editors, or NULL */
    size_t n_edits;
    float *out;                /* logits [batch, n_positions or pos, d_vocab_out], or with
                                * stop_at_layer the residual stream [batch, pos, d_model]; may be NULL */
    float *loss;               /* mean next-token loss, or NULL */
    float *per_token_loss;     /* [batch, pos - 1], or NULL */
    bool held;                 /* the caller holds the guard already (a generation's steps) */
    struct cx_tape *tape;      /* a gradient run's forward (backward.h): every point fires, and every
                                * firing is recorded (before the callbacks where one may write, and
                                * after); NULL: a plain run */
} cx_run;

/* A full run of tokens [batch, pos] to the logits, nothing else set. */
cx_run cx_run_init(const circuits_context *ctx, const char *fn, const int32_t *tokens, int64_t batch, int64_t pos);

/* The run circuits_context_run's options describe (checked as far as they go without running),
 * into *run; fn names the public function in messages. Outputs are the caller's to set. */
int cx_run_from_options(const circuits_context *ctx, const char *fn, const circuits_run_options *opts,
                        const int32_t *tokens, int64_t batch, int64_t pos, cx_run *run);

/* The shape checks of a grid of runs over tokens [batch, pos] (patching, attribution): batch and pos
 * at least 1 (CIRCUITS_E_SHAPE), pos within n_ctx (CIRCUITS_E_RANGE); fn names the caller. */
int cx_tokens_shape_check(const circuits_config *c, int64_t batch, int64_t pos, const char *fn);

/* True if point p fires in run r: its block runs, or it is hook_tokens or an embedding point of a
 * run from the tokens, or a final one (ln_final, unembed) of a run to the logits. */
static inline bool cx_run_reaches(const cx_run *r, const cx_hook_point *p)
{
    if (p->layer >= 0) return p->layer >= r->start && p->layer < r->stop;
    if (p->base == HK_TOKENS || p->base == HK_EMBED || p->base == HK_POS_EMBED) return r->input == NULL;
    return !r->stop_at_layer;
}

/* The door: guard (refused from a callback of the same context) -> pass -> release. */
int cx_context_run(circuits_context *ctx, const cx_run *run);

/* The guard alone, for a caller that runs several passes as one operation (generation). */
int cx_context_enter(circuits_context *ctx, const char *fn);
void cx_context_leave(circuits_context *ctx);

/* The pass (forward.c): only the door calls it. */
int cx_forward(circuits_context *ctx, const cx_run *run);

/* Position ids of T new tokens after P held ones from the attention mask [B, P + T] (row stride
 * mask_rs), TransformerLens's get_offset_position_ids: cumsum(mask) - 1, clamped at 0. */
void cx_position_ids(const int32_t *mask, int64_t mask_rs, int64_t B, int64_t T, int64_t P, int32_t *pos_id);

/* ---- caches (cache.c) for runs that fill them with more than activations (gradients) ---- */

/* One entry of a cache laid out by its filler: name (+ suffix, e.g. "_grad"), and the TL shape. */
typedef struct cx_cache_spec {
    const char *name, *suffix; /* suffix may be NULL */
    int32_t layer, head_axis, ndim;
    int64_t shape[CIRCUITS_MAX_DIMS];
} cx_cache_spec;

/* Marks the cache as being filled by the caller's run (refused if a run is filling it already:
 * a callback of that run may hold it); cx_cache_end clears the mark, and on failure (rc != 0)
 * empties the cache and frees its memory, as a failed run_with_cache leaves it. */
int cx_cache_begin(circuits_cache *c, const char *fn);
void cx_cache_end(circuits_cache *c, int rc);

/* Lays the cache out as specs[0 .. n) in that order (contents unset): data[i] receives entry i's
 * data (contiguous). */
int cx_cache_layout(circuits_cache *c, const cx_cache_spec *specs, size_t n, float **data);

/* ---- the tape of a gradient run (backward.c) ---- */

/* Records one firing of point idx (data: numel values of its descriptor): `pre` before the
 * callbacks, where one may write; else after all of them. The tape was sized before the run. */
void cx_tape_record(struct cx_tape *tape, int32_t idx, bool pre, const float *data, size_t numel);

/* ---- firing (hooks.c) ---- */

/* True if ln1 works on per-head inputs [batch, pos, heads, d_model] (use_split_qkv_input or
 * use_attn_in), as TransformerLens's TransformerBlock then applies it: three times per layer
 * (the query, key and value inputs). */
static inline bool cx_split_heads(const circuits_context *ctx)
{
    return ctx->opts.use_split_qkv_input || ctx->opts.use_attn_in;
}

/* Runs the callbacks, the observer and the cache copy of hook (layer, kind) on data. */
int cx_hook_fire(circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind, float *data, int64_t batch,
                 int64_t pos);

/* The same for a point fired several times per run with a head axis (ln1 under cx_split_heads:
 * once per q/k/v input): data is [batch, pos, heads, ...]; only the firing with `cache` set is
 * copied to run_with_cache (TransformerLens's cache keeps the last value a point saw). */
int cx_hook_fire_heads(circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind, float *data,
                       int64_t batch, int64_t pos, int64_t heads, bool cache);

/* Fires point idx alone (callbacks, cache copy; a replaced point's editors and observer at its
 * hook_sae_output): the SAE splice's points. */
int cx_hook_fire_index(circuits_context *ctx, const cx_run *run, int32_t idx, float *data, int64_t B, int64_t T);

/* ---- SAE splicing (lib/sae/splice.c) ---- */

/* The run memory an attached SAE needs for N rows (floats; 0 without SAEs); false on overflow. */
bool cx_sae_scratch_floats(const circuits_context *ctx, size_t N, size_t *floats);
/* Runs the SAE whose first point is idx in place of the point it replaces: data is that point's
 * activation, rewritten with the SAE's output. */
int cx_sae_splice(circuits_context *ctx, const cx_run *run, int32_t idx, float *data, int64_t B, int64_t T);
/* Refuses a run that reaches a transcoder's output point but not its input point (start_at_layer
 * past it, or an input given in place of the embeddings it reads). */
int cx_sae_check_run(const circuits_context *ctx, const cx_run *run);
/* Keeps a transcoder's input (attachment a) until its output point fires. */
void cx_sae_capture(circuits_context *ctx, int32_t a, const float *data, size_t numel);

/* A callback's return value as a status: CONTINUE -> OK, STOP -> CIRCUITS_E_STOPPED, negative ->
 * CIRCUITS_E_CALLBACK, each with a message naming `who` ("hook callback") and the point. */
int cx_callback_status(int r, const char *who, const char *name);

/* The run's first editor at (layer, kind), or NULL. */
static inline const cx_edit *cx_run_edit(const cx_run *run, int layer, cx_hook_kind kind)
{
    for (size_t i = 0; i < run->n_edits; i++)
        if (run->edits[i].layer == layer && run->edits[i].kind == kind) return &run->edits[i];
    return NULL;
}

/* True if a callback is registered at (layer, kind) or the run edits it: it may change the
 * activation. A point that is only cached or observed is read, never changed. */
static inline bool cx_hook_may_write(const circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind)
{
    int32_t i = cx_hook_index(&ctx->hooks, layer, kind);
    return i >= 0 && (ctx->hooks.points[i].n_regs > 0 || ctx->hooks.points[i].sae >= 0 || cx_run_edit(run, layer, kind));
}

/* True if a callback, editor, observer or cache copy reads (layer, kind) in this run. */
static inline bool cx_hook_watched(const circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind)
{
    int32_t i = cx_hook_index(&ctx->hooks, layer, kind);
    return i >= 0 && (ctx->hooks.points[i].n_regs > 0 || ctx->hooks.points[i].sae >= 0 ||
                      ctx->hooks.points[i].capture >= 0 || (run->cache_dst && run->cache_dst[i]) ||
                      (run->observer.fn && run->observer.kind == kind) || cx_run_edit(run, layer, kind));
}

/* Where run_with_cache copies (layer, kind) when that copy is the point's only reader in this run
 * (no callback, editor, observer, SAE, capture or tape): the pass may then write the value
 * there itself, from inside a fused kernel, instead of materialising it and firing. NULL
 * otherwise. */
static inline float *cx_hook_cache_only(const circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind)
{
    int32_t i = cx_hook_index(&ctx->hooks, layer, kind);
    if (i < 0 || !run->cache_dst || !run->cache_dst[i] || run->tape) return NULL;
    const cx_hook_point *p = &ctx->hooks.points[i];
    if (p->n_regs > 0 || p->sae >= 0 || p->capture >= 0 || (run->observer.fn && run->observer.kind == kind) ||
        cx_run_edit(run, layer, kind))
        return NULL;
    return run->cache_dst[i];
}

/* True if anything reads (layer, kind) in this run (a gradient run's tape reads every point): the
 * pass must materialise it and fire. */
static inline bool cx_hook_active(const circuits_context *ctx, const cx_run *run, int layer, cx_hook_kind kind)
{
    return cx_hook_index(&ctx->hooks, layer, kind) >= 0 && (run->tape || cx_hook_watched(ctx, run, layer, kind));
}

#endif
