/* The forward pass, in TransformerLens's order of operations (docs/hooks.md).
 *
 * Notation: B batch, T positions, D d_model, H n_heads, dh d_head, M d_mlp, V d_vocab_out,
 * N = B * T rows. All scratch is carved from one block per call, sized before the layer loop:
 * nothing is allocated inside it. Buffers are reused across layers because a hook sees an
 * activation only while it fires (run_with_cache copies it).
 *
 * KV cache (circuits_kv_cache, generate.c): a run may continue from P = kv->len cached
 * positions. Then the T new tokens sit at positions P .. P+T-1 (W_pos[P + t]), every hook
 * covers the new positions only, attn_scores / pattern are [B, H, T, P + T] (query i sees keys
 * 0 .. P+i), and each layer's k and v (after their hooks, shortformer keys with their own
 * position added) are appended to the cache before the scores. Without a cache P = 0 and the
 * pass is exactly the plain one.
 *
 * Partial runs (cx_run): start_at_layer / stop_at_layer as in TransformerLens, and logits
 * at chosen positions only (the unembedding is a third of GPT-2 small's FLOPs).
 *
 * Attention masks (padding), as TransformerLens 3 applies one: position ids are
 * cumsum(mask) - 1 clamped at 0 (utils.get_offset_position_ids), so a left-padded row's first
 * real token is position 0; W_pos is read at those ids and zeroed at padding (PosEmbed), rotary
 * turns q and k by them (apply_rotary), and no query sees a padding key (apply_causal_mask); a
 * query that sees no key at all (left padding) gets a pattern row of zeros (TL's NaN -> 0). A
 * KV cache remembers the mask of the positions it holds. A mask of all ones is no mask.
 *
 * Weights kept in their stored dtype (keep_stored_dtype, model/stored.h): every product with a
 * weight matrix checks cx_stored once and then goes through cx_qmatmul (blocks dequantized on the
 * fly, fp32 sums), the embedding through cx_qmat_row; the hooks see the same fp32 activations.
 *
 * Parallelism: GEMMs, LayerNorm, activations and softmax split over the pool inside their
 * kernels; attention splits over (batch, head) pairs here. Hooks fire on the calling thread,
 * between parallel sections. */
#include "context.h"
#include "kernels.h"
#include "loss.h"
#include "pool.h"
#include "rope.h"
#include "stored.h"

#include <math.h>
#include <string.h>

typedef struct scratch {
    float *embed;    /* [B, T, D] hook_embed */
    float *pos;      /* [B, T, D] hook_pos_embed (kept: shortformer adds it in every layer) */
    float *resid;    /* [B, T, D] the residual stream, updated in place pre -> mid -> post */
    float *normed;   /* [B, T, D] LayerNorm output (ln1, ln2, ln_final) */
    float *qk_in;    /* [B, T, D] shortformer only: ln1 output + pos */
    float *scale;    /* [B, T] LayerNorm scale (hook shape [B, T, 1]) */
    float *q, *z;    /* [B, T, H, dh] */
    float *k, *v;    /* [B, T, KV, dh] (KV = n_key_value_heads; sized as q) */
    float *scores;   /* [B, H, T, P + T] attn_scores, then pattern in place (P = cached positions) */
    float *result;   /* [B, T, H, D] use_attn_result only */
    float *branch;   /* [B, T, D] attn_out, then mlp_out */
    float *mlp;      /* [B, T, M] pre -> (mid -> ln) -> post in place */
    float *mlp_lin;  /* [B, T, M] gated MLP only: hook_pre_linear */
    float *rope;     /* rotary only: cos [T, rd / 2], then sin [T, rd / 2] at positions P .. P+T-1
                      * (with a mask [B, T, rd / 2] each, at the position ids); a second pair for
                      * local layers when linear scaling skips them */
    float *logits;   /* [B, n, V] (n: T or the chosen positions) when the caller passed no logits
                      * buffer or a hook reads them: hooks see only the run memory */
    /* the optional hook points (context options): */
    float *heads_in; /* [3][B, T, H, D] use_split_qkv_input / use_attn_in: the query, key and value
                      * inputs (key/value [B, T, KV, D] under split), ln1 applied in place */
    float *attn_in;  /* [B, T, H, D] use_attn_in: hook_attn_in */
    float *mlp_in;   /* [B, T, D] use_hook_mlp_in: hook_mlp_in */
    int32_t *tokens; /* [B, T] use_hook_tokens: hook_tokens (the run memory, as floats are) */
    float *wo;       /* [D, H * dh] use_attn_result with W_O kept in its stored dtype: one layer's W_O
                      * dequantized (stored rows: block quantization cannot cut a head's columns) */
    int32_t *pos_id; /* [B, T] position ids, with a mask only (after the logits: a run allocates
                      * nothing else, so a generation step cannot fail half-way for memory) */
} scratch;

/* One pass: the run it carries out, its scratch, and its sizes (P: cached positions). */
typedef struct pass {
    circuits_context *ctx;
    const cx_run *run;
    scratch s;
    int64_t B, T, P;
    const int32_t *tokens; /* the run's tokens, as hook_tokens left them */
    bool rope_ready[2]; /* s.rope holds this pass's angles [global, local] (made when first needed) */
    const int32_t *mask; /* [B, P + T] with row stride mask_rs: every key's attention mask (cached
                          * ones first); NULL: no padding anywhere */
    int64_t mask_rs;
} pass;

/* 1 if local layers rotate by other angles than global ones: TransformerLens applies linear
 * rope scaling (rotary_scaling_factor) on global layers only (calculate_sin_cos_rotary). */
static int rope_tables(const circuits_config *c)
{
    return c->rope_scaling == CIRCUITS_ROPE_LINEAR && c->local_attn != CIRCUITS_LOCAL_ATTN_NONE;
}

/* Carves the scratch; returns CIRCUITS_E_OUT_OF_MEMORY (or RANGE on overflow) on failure. */
static int prepare_scratch(circuits_context *ctx, int64_t B, int64_t T, int64_t Tk, int64_t logit_rows, bool own_logits,
                           bool masked, scratch *s)
{
    const circuits_config *c = &ctx->model->cfg;
    size_t N = (size_t)B * (size_t)T, D = (size_t)c->d_model, HD = (size_t)c->n_heads * (size_t)c->d_head;
    enum { N_SLOTS = 21 };
    size_t sizes[N_SLOTS], total = 0;
    bool ok = true;
    size_t tt;
    ok &= cx_mul_size(N, D, &sizes[0]);                        /* embed */
    sizes[1] = sizes[2] = sizes[3] = sizes[0];                 /* pos, resid, normed */
    sizes[4] = c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER ? sizes[0] : 0;
    sizes[5] = N;                                              /* scale ([B, T, H] for per-head ln1) */
    if (cx_split_heads(ctx)) ok &= cx_mul_size(N, (size_t)c->n_heads, &sizes[5]);
    ok &= cx_mul_size(N, HD, &sizes[6]);                       /* q */
    sizes[7] = sizes[8] = sizes[9] = sizes[6];                 /* k, v, z */
    ok &= cx_mul_size((size_t)T, (size_t)Tk, &tt) && cx_mul_size(tt, (size_t)B * (size_t)c->n_heads, &sizes[10]);
    sizes[11] = 0;
    if (ctx->opts.use_attn_result) ok &= cx_mul_size(sizes[0], (size_t)c->n_heads, &sizes[11]);
    sizes[12] = sizes[0];                                      /* branch */
    ok &= cx_mul_size(N, (size_t)c->d_mlp, &sizes[13]);
    sizes[14] = 0;
    if (c->positional_embedding_type == CIRCUITS_POS_ROTARY)
        ok &= cx_mul_size((size_t)T * (masked ? (size_t)B : 1), (size_t)c->rotary_dim * (rope_tables(c) + 1),
                          &sizes[14]);
    sizes[15] = c->gated_mlp ? sizes[13] : 0;                  /* mlp_lin */
    sizes[16] = sizes[17] = 0;                                 /* heads_in, attn_in */
    if (cx_split_heads(ctx)) ok &= cx_mul_size(sizes[0], (size_t)c->n_heads, &sizes[17]) &&
                                   cx_mul_size(sizes[17], 3, &sizes[16]);
    if (!ctx->opts.use_attn_in) sizes[17] = 0;
    sizes[18] = ctx->opts.use_hook_mlp_in ? sizes[0] : 0;      /* mlp_in */
    sizes[19] = ctx->opts.use_hook_tokens ? N : 0;             /* tokens (int32, the size of a float) */
    sizes[20] = 0;                                             /* wo */
    for (int l = 0; l < c->n_layers && ctx->opts.use_attn_result && !sizes[20]; l++)
        if (cx_stored(ctx->model, ctx->model->layers[l].W_O)) ok &= cx_mul_size(D, HD, &sizes[20]);
    size_t logits_n = 0, sae_n = 0;
    if (own_logits) ok &= cx_mul_size((size_t)logit_rows, (size_t)c->d_vocab_out, &logits_n);
    ok &= cx_sae_scratch_floats(ctx, N, &sae_n);                /* attached SAEs' working memory */
    for (int i = 0; i < N_SLOTS && ok; i++) ok = total + sizes[i] >= total && (total += sizes[i], true);
    _Static_assert(sizeof(int32_t) == sizeof(float), "position ids take float slots");
    ok = ok && (!masked || (total + N >= total && (total += N, true)));
    ok = ok && total + logits_n >= total && (total += logits_n, true);
    ok = ok && total + sae_n >= total && (total += sae_n, true) && total < SIZE_MAX / sizeof(float);
    if (!ok) return cx_fail(CIRCUITS_E_RANGE, "a run of [%lld, %lld] tokens needs more memory than can be addressed",
                            (long long)B, (long long)T);
    if (total > ctx->scratch_floats) {
        float *p = cx_malloc(total * sizeof(float));
        if (!p)
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: a run of [%lld, %lld] tokens needs %zu MiB of scratch",
                           (long long)B, (long long)T, total * sizeof(float) >> 20);
        cx_free(ctx->scratch);
        ctx->scratch = p;
        ctx->scratch_floats = total;
    }
    float *p = ctx->scratch;
    float *tokens_slot;
    float **slots[N_SLOTS] = {&s->embed,  &s->pos,    &s->resid,    &s->normed,  &s->qk_in,  &s->scale,
                              &s->q,      &s->k,      &s->v,        &s->z,       &s->scores, &s->result,
                              &s->branch, &s->mlp,    &s->rope,     &s->mlp_lin, &s->heads_in, &s->attn_in,
                              &s->mlp_in, &tokens_slot, &s->wo};
    for (int i = 0; i < N_SLOTS; i++) {
        *slots[i] = sizes[i] ? p : NULL;
        p += sizes[i];
    }
    s->tokens = (int32_t *)tokens_slot; /* 4-byte slots: floats and int32 alike */
    s->logits = own_logits ? p : NULL;
    s->pos_id = masked ? (int32_t *)(p + logits_n) : NULL;
    ctx->sae_mem = sae_n ? p + logits_n + (masked ? N : 0) : NULL;
    return CIRCUITS_OK;
}

#define FIRE(layer, kind, buf)                                                        \
    do {                                                                              \
        if (cx_hook_active(ps->ctx, ps->run, layer, kind)) {                          \
            int rc_ = cx_hook_fire(ps->ctx, ps->run, layer, kind, buf, ps->B, ps->T); \
            if (rc_) return rc_;                                                      \
        }                                                                             \
    } while (0)

#define FIRE_HEADS(layer, kind, buf, heads, cache)                                                      \
    do {                                                                                                \
        if (cx_hook_active(ps->ctx, ps->run, layer, kind)) {                                            \
            int rc_ = cx_hook_fire_heads(ps->ctx, ps->run, layer, kind, buf, ps->B, ps->T, heads, cache); \
            if (rc_) return rc_;                                                                        \
        }                                                                                               \
    } while (0)

/* LayerNorm (or RMSNorm: rms) of x [N, heads, width] into out, firing its scale and normalized
 * hooks; then w, b (as TransformerLens 3 does, after hook_normalized). The weight table decides
 * which exist: LN has w and b, RMS only w, LNPre and RMSPre (and folded models) neither.
 * heads 0: x is [N, width] (no head axis). `cache`: this firing is the one run_with_cache keeps
 * (ln1 on per-head inputs fires three times per layer). */
static int layer_norm_heads(const pass *ps, int layer, cx_hook_kind scale_kind, float *out, float *scale,
                            const float *x, int64_t width, bool rms, const circuits_tensor *w, const circuits_tensor *b,
                            int64_t heads, bool cache)
{
    const circuits_context *ctx = ps->ctx;
    int64_t N = ps->B * ps->T * (heads > 0 ? heads : 1);
    const float *wd = w ? w->data : NULL, *bd = b ? b->data : NULL;
    if (!cx_hook_active(ctx, ps->run, layer, scale_kind) &&
        !cx_hook_active(ctx, ps->run, layer, (cx_hook_kind)(scale_kind + 1))) {
        if (rms) cx_rms_norm(out, scale, x, N, width, ctx->model->cfg.eps, wd);
        else cx_layer_norm(out, scale, x, N, width, ctx->model->cfg.eps, wd, bd);
        return CIRCUITS_OK;
    }
    if (rms) cx_rms_scale(out, scale, x, N, width, ctx->model->cfg.eps);
    else cx_ln_center_scale(out, scale, x, N, width, ctx->model->cfg.eps);
    FIRE_HEADS(layer, scale_kind, scale, heads, cache);
    cx_ln_divide(out, scale, N, width);
    FIRE_HEADS(layer, (cx_hook_kind)(scale_kind + 1), out, heads, cache); /* *_NORMALIZED follows *_SCALE */
    if (wd || bd) cx_affine(out, wd, bd, N, width);
    return CIRCUITS_OK;
}

static int layer_norm(const pass *ps, int layer, cx_hook_kind scale_kind, float *out, float *scale, const float *x,
                      int64_t width, bool rms, const circuits_tensor *w, const circuits_tensor *b)
{
    return layer_norm_heads(ps, layer, scale_kind, out, scale, x, width, rms, w, b, 0, true);
}

/* y[N, H*dh] = x[N, D] @ W [H, D, dh] + b [H, dh]: one GEMM when the heads sit side by side in
 * memory (HF's fused c_attn; a stored matrix's rows are the heads' columns in order), else one
 * GEMM per head. */
static void project_heads(const circuits_model *m, float *y, const float *x, const circuits_tensor *W,
                          const circuits_tensor *b, int64_t N, int64_t D, int64_t H, int64_t dh)
{
    const int64_t *st = W->strides;
    const cx_qmat *q = cx_stored(m, W);
    if (q) {
        cx_qmatmul(y, H * dh, x, D, N, q, 0, H * dh, b->data, false);
        return;
    }
    if (st[2] == 1 && st[0] == dh) {
        cx_matmul(y, H * dh, x, D, N, D, H * dh, W->data, st[1], 1, b->data, false);
        return;
    }
    for (int64_t h = 0; h < H; h++)
        cx_matmul(y + h * dh, H * dh, x, D, N, D, dh, W->data + h * st[0], st[1], st[2], b->data + h * dh, false);
}

/* The same with a head axis on the input: y[N, h, :] = x[N, h, :] @ W[h] + b[h] for x [N, H, D]
 * (complex_attn_linear: each head reads its own input). */
static void project_split_heads(const circuits_model *m, float *y, const float *x, const circuits_tensor *W,
                                const circuits_tensor *b, int64_t N, int64_t D, int64_t H, int64_t dh)
{
    const int64_t *st = W->strides;
    const cx_qmat *q = cx_stored(m, W);
    for (int64_t h = 0; h < H; h++)
        if (q) /* head h: rows h*dh .. of the stored matrix */
            cx_qmatmul(y + h * dh, H * dh, x + h * D, H * D, N, q, h * dh, dh, b->data + h * dh, false);
        else cx_matmul(y + h * dh, H * dh, x + h * D, H * D, N, D, dh, W->data + h * st[0], st[1], st[2],
                  b->data + h * dh, false);
}

/* dst[n, h] = x[n] for h < heads: TransformerLens's repeat_along_head_dimension. */
static void repeat_heads(float *dst, const float *x, int64_t N, int64_t heads, int64_t D)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < heads; h++) memcpy(dst + (n * heads + h) * D, x + n * D, (size_t)D * sizeof(float));
}

/* q, k, v from per-head inputs (use_attn_in / use_split_qkv_input), as TransformerLens's
 * TransformerBlock: hook_attn_in = resid_pre repeated over the heads; hook_q_input /
 * hook_k_input / hook_v_input = resid_pre repeated over the query / key-value heads (under
 * split these, not attn_in, feed the attention, as in TL); then ln1 on each input in turn
 * (its hooks fire three times, with a head axis), shortformer's pos added to the query and key
 * inputs, and each head projected from its own row. */
static int split_head_qkv(pass *ps, int l)
{
    const circuits_context *ctx = ps->ctx;
    const circuits_config *c = &ctx->model->cfg;
    const cx_layer_weights *w = &ctx->model->layers[l];
    scratch *s = &ps->s;
    int64_t N = ps->B * ps->T, D = c->d_model, H = c->n_heads, dh = c->d_head;
    bool split = ctx->opts.use_split_qkv_input != 0;
    size_t per = (size_t)(N * H * D);
    float *in[3] = {s->heads_in, s->heads_in + per, s->heads_in + 2 * per};
    int64_t heads[3] = {H, split ? c->n_key_value_heads : H, split ? c->n_key_value_heads : H};
    static const cx_hook_kind input_kinds[3] = {HK_Q_INPUT, HK_K_INPUT, HK_V_INPUT};
    if (ctx->opts.use_attn_in) {
        repeat_heads(s->attn_in, s->resid, N, H, D);
        FIRE(l, HK_ATTN_IN, s->attn_in);
    }
    for (int i = 0; i < 3; i++) {
        if (split) {
            repeat_heads(in[i], s->resid, N, heads[i], D);
            FIRE(l, input_kinds[i], in[i]);
        } else {
            memcpy(in[i], s->attn_in, per * sizeof(float)); /* ln1 applies to attn_in three times */
        }
    }
    int nt = c->normalization_type;
    bool rms = nt == CIRCUITS_NORM_RMS || nt == CIRCUITS_NORM_RMSPRE;
    for (int i = 0; i < 3; i++) {
        if (nt != CIRCUITS_NORM_NONE) {
            int rc = layer_norm_heads(ps, l, HK_LN1_SCALE, in[i], s->scale, in[i], D, rms, w->ln1_w, w->ln1_b,
                                      heads[i], i == 2);
            if (rc) return rc;
        }
        if (i < 2 && c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER)
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < heads[i]; h++)
                    for (int64_t j = 0; j < D; j++) in[i][(n * heads[i] + h) * D + j] += s->pos[n * D + j];
    }
    const circuits_model *m = ctx->model;
    project_split_heads(m, s->q, in[0], w->W_Q, w->b_Q, N, D, heads[0], dh);
    project_split_heads(m, s->k, in[1], w->W_K, w->b_K, N, D, heads[1], dh);
    project_split_heads(m, s->v, in[2], w->W_V, w->b_V, N, D, heads[2], dh);
    return CIRCUITS_OK;
}

/* Attention for (batch, head) pairs [begin, end): the steps `steps` of scores -> pattern -> z.
 * Query i (absolute position P + i) sees keys [lo(i), P + i]: lo = 0, or with a sliding window w
 * lo = P + i - w + 1 (TransformerLens: key > query - window_size). Both bounds are exploited:
 * query block [i0, i1) only meets keys [lo(i0), P + i1), so what the mask removes (about half of
 * QK^T and of pattern @ v causally, more with a window) is never computed. */
enum { STEP_SCORES = 1, STEP_SOFTMAX = 2, STEP_MIX = 4 };

typedef struct attn_job {
    scratch *s;
    int64_t B, T, P, H, dh;     /* P cached positions: keys 0 .. P + T - 1 */
    int64_t group;              /* query heads per K/V head (n_heads / n_key_value_heads) */
    const float *keys, *vals;   /* [B, *, KV, dh], row stride kv_rs, batch stride kv_bs */
    int64_t kv_rs, kv_bs;
    float scale;
    float inv_scale;            /* 1 / scale when that is exact (scale a power of two), else 0 */
    float cap;                  /* attention-score soft-cap (0: none) */
    int64_t window;             /* local attention window (0: global) */
    const int32_t *mask;        /* [B, P + T] keys' attention mask, row stride mask_rs; NULL: none */
    int64_t mask_rs;
    int steps;
    bool hooked;                /* a callback saw the scores or pattern: STEP_MIX checks the masked part */
    float *cache_scores, *cache_pattern; /* fused steps: run_with_cache's copies of the scores and
                                 * pattern [B, H, T, Tk], written row by row (NULL: not cached) */
} attn_job;

/* Row i of a cached scores or pattern matrix: the keys query i sees [lo, hi) from the working row,
 * `fill` (-inf: scores, 0: pattern) elsewhere, as the materialised tensor holds them. */
static void cache_row(float *dst, const float *row, int64_t lo, int64_t hi, int64_t Tk, float fill)
{
    for (int64_t c = 0; c < lo; c++) dst[c] = fill;
    memcpy(dst + lo, row + lo, (size_t)(hi - lo) * sizeof *dst);
    for (int64_t c = hi; c < Tk; c++) dst[c] = fill;
}

/* The first key query i sees. */
static inline int64_t first_key(const attn_job *j, int64_t i)
{
    int64_t lo = j->window ? j->P + i - j->window + 1 : 0;
    return lo > 0 ? lo : 0;
}

/* True if pattern S [T, P + T] is 0 wherever the mask removes a key (j > P + i, j < lo(i)): then
 * pattern @ v may skip it. A hook may have written there; then whole rows it is, as
 * TransformerLens computes. */
static bool masked_part_is_zero(const attn_job *j, const float *S)
{
    int64_t T = j->T, P = j->P, Tk = P + T;
    for (int64_t i = 0; i < T; i++) {
        int64_t lo = first_key(j, i);
        for (int64_t c = 0; c < lo; c++)
            if (S[i * Tk + c] != 0.0f) return false;
        for (int64_t c = P + i + 1; c < Tk; c++)
            if (S[i * Tk + c] != 0.0f) return false;
    }
    return true;
}

static void attn_task(void *arg, int64_t begin, int64_t end)
{
    const attn_job *j = arg;
    const int64_t T = j->T, P = j->P, Tk = P + T, H = j->H, dh = j->dh, HD = H * dh, rs = j->kv_rs;
    /* query rows per block: the kernels skip what a block's rows do not see, so larger blocks
     * cost no masked work and pack each key panel once per 256 queries; OpenBLAS computes the
     * whole block (and a short window wastes the rest of a large one) */
    const int64_t QB = cx_attn_kernels(dh) && (j->window == 0 || j->window >= 256) ? 256 : 64;
    for (int64_t bh = begin; bh < end; bh++) {
        int64_t b = bh / H, h = bh % H, kvh = h / j->group; /* TL's repeat_interleave of K and V */
        float *S = j->s->scores + bh * T * Tk;                    /* [T, Tk] */
        const float *q = j->s->q + b * T * HD + h * dh;           /* [T, dh] with row stride HD */
        const float *k = j->keys + b * j->kv_bs + kvh * dh;       /* [Tk, dh], row stride rs */
        const float *v = j->vals + b * j->kv_bs + kvh * dh;       /* [Tk, dh], row stride rs */
        float *z = j->s->z + b * T * HD + h * dh;                 /* [T, dh], row stride HD */
        bool whole_rows = (j->steps & STEP_MIX) && j->hooked && !masked_part_is_zero(j, S);
        for (int64_t i0 = 0; i0 < T; i0 += QB) {
            int64_t i1 = i0 + QB < T ? i0 + QB : T, k0 = first_key(j, i0), k1 = P + i1; /* keys [k0, k1) */
            if (j->steps & STEP_SCORES) {
                /* S[i0:i1, k0:k1] = q[i0:i1] @ k[k0:k1]^T */
                cx_attn_scores(S + i0 * Tk + k0, Tk, q + i0 * HD, HD, k + k0 * rs, rs, i1 - i0, k1 - k0, dh,
                               P + i0 - k0);
                for (int64_t i = i0; i < i1; i++) {
                    float *row = S + i * Tk;
                    int64_t lo = first_key(j, i), hi = P + i + 1; /* the keys query i sees: [lo, hi) */
                    if (j->inv_scale != 0.0f) /* the same bits as the division, without its cost */
                        for (int64_t c = lo; c < hi; c++) row[c] *= j->inv_scale;
                    else
                        for (int64_t c = lo; c < hi; c++) row[c] /= j->scale;
                    if (j->cap > 0.0f) /* TL: cap * tanh(scores / cap) after the scale, before the mask */
                        for (int64_t c = lo; c < hi; c++) row[c] = j->cap * tanhf(row[c] / j->cap);
                    if (j->mask) /* padding keys; a row left with none gets zeros from the softmax */
                        for (int64_t c = lo; c < hi; c++)
                            if (!j->mask[b * j->mask_rs + c]) row[c] = -INFINITY;
                    if (j->steps & STEP_SOFTMAX) { /* fused: only what pattern @ v reads below */
                        if (j->cache_scores) cache_row(j->cache_scores + (bh * T + i) * Tk, row, lo, hi, Tk, -INFINITY);
                        cx_softmax_row(row + lo, hi - lo);
                        if (j->cache_pattern) cache_row(j->cache_pattern + (bh * T + i) * Tk, row, lo, hi, Tk, 0.0f);
                        for (int64_t c = k0; c < lo; c++) row[c] = 0.0f;
                        for (int64_t c = hi; c < k1; c++) row[c] = 0.0f;
                    } else {
                        for (int64_t c = 0; c < lo; c++) row[c] = -INFINITY;
                        for (int64_t c = hi; c < Tk; c++) row[c] = -INFINITY;
                    }
                }
            }
            if ((j->steps & STEP_MIX) && !whole_rows) /* z[i0:i1] = pattern[i0:i1, k0:k1] @ v[k0:k1] */
                cx_attn_mix(z + i0 * HD, HD, S + i0 * Tk + k0, Tk, v + k0 * rs, rs, i1 - i0, k1 - k0, dh, P + i0 - k0);
        }
        if (whole_rows) cx_attn_mix(z, HD, S, Tk, v, rs, T, Tk, dh, Tk);
    }
}

/* Rotary: q and k rotated in place at positions P .. P+T-1 (hook_q / hook_k have fired on the
 * unrotated values), then hook_rot_q and hook_rot_k fire on the rotated ones. The angles are
 * the same in every layer (local and global ones apart, see rope_tables): made once per pass. */
static int rotate_qk(pass *ps, int l)
{
    const circuits_config *c = &ps->ctx->model->cfg;
    scratch *s = &ps->s;
    int64_t half = c->rotary_dim / 2, rows = ps->s.pos_id ? ps->B * ps->T : ps->T; /* a table per row with a mask */
    int which = cx_rope_layer_unscaled(c, l);
    float *cos_t = s->rope + which * 2 * rows * half, *sin_t = cos_t + rows * half;
    if (!ps->rope_ready[which]) {
        int rc = cx_rope_tables(c, which, ps->s.pos_id, rows, ps->P, cos_t, sin_t);
        if (rc) return rc;
        ps->rope_ready[which] = true;
    }
    if (ps->s.pos_id) {
        for (int64_t b = 0; b < ps->B; b++) {
            const float *cb = cos_t + b * ps->T * half, *sb = sin_t + b * ps->T * half;
            cx_rope_rotate(s->q + b * ps->T * c->n_heads * c->d_head, 1, ps->T, c->n_heads, c->d_head, c, cb, sb);
            cx_rope_rotate(s->k + b * ps->T * c->n_key_value_heads * c->d_head, 1, ps->T, c->n_key_value_heads,
                           c->d_head, c, cb, sb);
        }
    } else {
        cx_rope_rotate(s->q, ps->B, ps->T, c->n_heads, c->d_head, c, cos_t, sin_t);
        cx_rope_rotate(s->k, ps->B, ps->T, c->n_key_value_heads, c->d_head, c, cos_t, sin_t);
    }
    FIRE(l, HK_ROT_Q, s->q);
    FIRE(l, HK_ROT_K, s->k);
    return CIRCUITS_OK;
}

static int attention(pass *ps, int l)
{
    const circuits_context *ctx = ps->ctx;
    const circuits_config *c = &ctx->model->cfg;
    const cx_layer_weights *w = &ctx->model->layers[l];
    scratch *s = &ps->s;
    circuits_kv_cache *kv = ps->run->kv;
    int64_t B = ps->B, T = ps->T, N = B * T, D = c->d_model, H = c->n_heads, dh = c->d_head, HD = H * dh;
    int64_t KV = c->n_key_value_heads, KD = KV * dh; /* grouped-query attention: K/V heads */
    int64_t P = ps->P; /* cached positions */
    if (cx_split_heads(ctx)) {
        int rc = split_head_qkv(ps, l);
        if (rc) return rc;
    } else {
        const float *qk_in = s->normed;
        if (c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER) {
            for (int64_t i = 0; i < N * D; i++) s->qk_in[i] = s->normed[i] + s->pos[i];
            qk_in = s->qk_in;
        }
        project_heads(ctx->model, s->q, qk_in, w->W_Q, w->b_Q, N, D, H, dh);
        project_heads(ctx->model, s->k, qk_in, w->W_K, w->b_K, N, D, KV, dh);
        project_heads(ctx->model, s->v, s->normed, w->W_V, w->b_V, N, D, KV, dh);
    }
    FIRE(l, HK_Q, s->q);
    FIRE(l, HK_K, s->k);
    FIRE(l, HK_V, s->v);
    if (c->positional_embedding_type == CIRCUITS_POS_ROTARY) {
        int rc = rotate_qk(ps, l);
        if (rc) return rc;
    }

    /* Keys and values: this run's own, or the cache's with this run's (as edited by the hooks;
     * rotary keys rotated, after hook_rot_k) appended at P .. P+T-1. keys/vals [B, *, KV, dh]
     * with batch stride kv_bs. */
    const float *keys = s->k, *vals = s->v;
    int64_t kv_bs = T * KD;
    if (kv) {
        size_t layer_off = (size_t)l * (size_t)kv->batch * (size_t)kv->cap * (size_t)KD;
        float *K = kv->k + layer_off, *Vc = kv->v + layer_off;
        kv_bs = kv->cap * KD;
        for (int64_t b = 0; b < B; b++) {
            memcpy(K + b * kv_bs + P * KD, s->k + b * T * KD, (size_t)(T * KD) * sizeof(float));
            memcpy(Vc + b * kv_bs + P * KD, s->v + b * T * KD, (size_t)(T * KD) * sizeof(float));
        }
        keys = K;
        vals = Vc;
    }

    /* scores[b, h, i, j] = q[b, i, h] . k[b, j, h / group] / scale (soft-capped), -inf where
     * j > P + i or outside the window; pattern = softmax(scores); z[b, i, h] = sum_j
     * pattern[b, h, i, j] v[b, j, h / group]. One task per (b, h). With no hook at attn_scores
     * or pattern the three steps run fused per block of queries. */
    float scale = c->attn_scale;
    if (c->scale_attn_by_inverse_layer_idx) scale = (float)((double)c->attn_scale * (l + 1));
    /* Points only run_with_cache reads stay fused: each task writes its rows of the cache's copy
     * (the tensor never lands in the run memory, and the copy runs on the pool). */
    float *cache_scores = cx_hook_cache_only(ctx, ps->run, l, HK_ATTN_SCORES),
          *cache_pattern = cx_hook_cache_only(ctx, ps->run, l, HK_PATTERN);
    bool hook_scores = !cache_scores && cx_hook_active(ctx, ps->run, l, HK_ATTN_SCORES),
         hook_pattern = !cache_pattern && cx_hook_active(ctx, ps->run, l, HK_PATTERN);
    int scale_exp;
    float inv_scale = frexpf(scale, &scale_exp) == 0.5f ? ldexpf(1.0f, 1 - scale_exp) : 0.0f; /* 2^-k */
    attn_job job = {.s = s, .B = B, .T = T, .P = P, .H = H, .dh = dh, .group = H / KV, .keys = keys,
                    .vals = vals, .kv_rs = KD, .kv_bs = kv_bs, .scale = scale, .inv_scale = inv_scale,
                    .cap = c->attn_scores_soft_cap,
                    .window = cx_layer_is_local(c, l) ? c->window_size : 0, .mask = ps->mask,
                    .mask_rs = ps->mask_rs};
    if (!hook_scores && !hook_pattern) {
        job.cache_scores = cache_scores;
        job.cache_pattern = cache_pattern;
        job.steps = STEP_SCORES | STEP_SOFTMAX | STEP_MIX;
        cx_parallel_for(B * H, 1, attn_task, &job);
    } else {
        job.steps = STEP_SCORES;
        cx_parallel_for(B * H, 1, attn_task, &job);
        FIRE(l, HK_ATTN_SCORES, s->scores);
        /* a hook may write anywhere in a row: a row it wrote outside the keys its query sees takes
         * the whole-row softmax, as TransformerLens does; a row whose masked part is still -inf
         * (every row of a no-op hook) the softmax over its own keys, as the fused path does (the
         * same value, bit for bit the plain run's, at half the exps). pattern @ v then takes whole
         * rows unless the masked part is still 0. Read-only hooks: the mask is intact. */
        if (cx_hook_may_write(ctx, ps->run, l, HK_ATTN_SCORES)) cx_softmax_masked(s->scores, B * H, T, P, job.window);
        else cx_softmax_causal_window(s->scores, B * H, T, P, job.window);
        FIRE(l, HK_PATTERN, s->scores);
        job.steps = STEP_MIX;
        job.hooked = cx_hook_may_write(ctx, ps->run, l, HK_ATTN_SCORES) || cx_hook_may_write(ctx, ps->run, l, HK_PATTERN);
        cx_parallel_for(B * H, 1, attn_task, &job);
    }
    FIRE(l, HK_Z, s->z);

    const circuits_tensor *W_O = w->W_O;
    const int64_t *st = W_O->strides;
    const cx_qmat *qo = cx_stored(ctx->model, W_O);
    if (ctx->opts.use_attn_result) {
        /* result[b, t, h] = z[b, t, h] @ W_O[h]; attn_out = sum_h result + b_O. A stored W_O is
         * dequantized first ([D, H*dh] rows: head h's W_O[h] [dh, D] at columns h*dh with strides
         * (1, H*dh)): a head's share of a row is not a whole number of blocks */
        if (qo) cx_qmat_rows(qo, s->wo);
        for (int64_t h = 0; h < H; h++)
            if (qo) cx_matmul(s->result + h * D, H * D, s->z + h * dh, HD, N, dh, D, s->wo + h * dh, 1, HD, NULL, false);
            else cx_matmul(s->result + h * D, H * D, s->z + h * dh, HD, N, dh, D, W_O->data + h * st[0], st[1], st[2],
                           NULL, false);
        FIRE(l, HK_RESULT, s->result);
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < D; j++) {
                float acc = 0.0f;
                for (int64_t h = 0; h < H; h++) acc += s->result[(n * H + h) * D + j];
                s->branch[n * D + j] = acc + w->b_O->data[j];
            }
    } else if (qo) {
        cx_qmatmul(s->branch, D, s->z, HD, N, qo, 0, D, w->b_O->data, false);
    } else if (st[0] == dh * st[1]) {
        /* heads stacked along rows: W_O viewed as [H * dh, D] */
        cx_matmul(s->branch, D, s->z, HD, N, HD, D, W_O->data, st[1], st[2], w->b_O->data, false);
    } else {
        for (int64_t h = 0; h < H; h++)
            cx_matmul(s->branch, D, s->z + h * dh, HD, N, dh, D, W_O->data + h * st[0], st[1], st[2],
                      h == 0 ? w->b_O->data : NULL, h > 0);
    }
    /* use_normalization_before_and_after (Gemma 2): ln1_post (an RMSNorm with its own weight) on
     * the attention output, before hook_attn_out */
    if (c->norm_before_and_after) {
        int rc = layer_norm(ps, l, HK_LN1_POST_SCALE, s->branch, s->scale, s->branch, D, true, w->ln1_post_w, NULL);
        if (rc) return rc;
    }
    FIRE(l, HK_ATTN_OUT, s->branch);
    return CIRCUITS_OK;
}

/* The MLP of normed into branch, firing its hooks. A gated MLP (TransformerLens's GatedMLP):
 * hook_pre = x W_gate, hook_pre_linear = x W_in (neither with a bias), hook_post =
 * act(pre) * pre_linear + b_in (b_in after the product, as TL adds it). Then W_out + b_out,
 * and under use_normalization_before_and_after ln2_post before hook_mlp_out. */
static int mlp(pass *ps, int l)
{
    const circuits_context *ctx = ps->ctx;
    const circuits_config *c = &ctx->model->cfg;
    const cx_layer_weights *w = &ctx->model->layers[l];
    scratch *s = &ps->s;
    int64_t N = ps->B * ps->T, D = c->d_model, M = c->d_mlp;
    if (c->gated_mlp) {
        cx_weight_linear(ctx->model, s->mlp, M, s->normed, D, N, w->W_gate, NULL);
        FIRE(l, HK_MLP_PRE, s->mlp);
        cx_weight_linear(ctx->model, s->mlp_lin, M, s->normed, D, N, w->W_in, NULL);
        FIRE(l, HK_MLP_PRE_LINEAR, s->mlp_lin);
        cx_activation(s->mlp, (size_t)(N * M), c->act_fn);
        const float *b_in = w->b_in->data;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < M; j++) s->mlp[n * M + j] = s->mlp[n * M + j] * s->mlp_lin[n * M + j] + b_in[j];
    } else {
        cx_weight_linear(ctx->model, s->mlp, M, s->normed, D, N, w->W_in, w->b_in->data);
        FIRE(l, HK_MLP_PRE, s->mlp);
        if (c->act_fn == CIRCUITS_ACT_SOLU_LN) {
            cx_solu(s->mlp, N, M);
            FIRE(l, HK_MLP_MID, s->mlp);
            /* mlp.ln: a LayerNorm over d_mlp (with weights when the model uses LN, else LNPre) */
            int rc = layer_norm(ps, l, HK_MLP_LN_SCALE, s->mlp, s->scale, s->mlp, M, false, w->mlp_ln_w, w->mlp_ln_b);
            if (rc) return rc;
        } else {
            cx_activation(s->mlp, (size_t)(N * M), c->act_fn);
        }
    }
    FIRE(l, HK_MLP_POST, s->mlp);
    cx_weight_linear(ctx->model, s->branch, D, s->mlp, M, N, w->W_out, w->b_out->data);
    if (c->norm_before_and_after) {
        int rc = layer_norm(ps, l, HK_LN2_POST_SCALE, s->branch, s->scale, s->branch, D, true, w->ln2_post_w, NULL);
        if (rc) return rc;
    }
    FIRE(l, HK_MLP_OUT, s->branch);
    return CIRCUITS_OK;
}

/* The MLP's input before ln2: the residual stream (resid_mid; resid_pre in parallel blocks), or
 * with use_hook_mlp_in a copy of it at hook_mlp_in (TL: hook_mlp_in(resid.clone())): an edit
 * there reaches the MLP only, not the residual stream. */
static int mlp_input(pass *ps, int l, const float **src)
{
    scratch *s = &ps->s;
    *src = s->resid;
    if (!cx_hook_active(ps->ctx, ps->run, l, HK_MLP_IN)) return CIRCUITS_OK;
    memcpy(s->mlp_in, s->resid, (size_t)(ps->B * ps->T * ps->ctx->model->cfg.d_model) * sizeof(float));
    FIRE(l, HK_MLP_IN, s->mlp_in);
    *src = s->mlp_in;
    return CIRCUITS_OK;
}

/* hook_tokens: the token ids, copied into the run memory, where the hooks may edit them (as a
 * TransformerLens hook may replace them); the edited ids feed the embedding and the loss, so
 * they are checked again. The descriptor's data is int32_t (docs/hooks.md). */
static int hook_tokens(pass *ps)
{
    const cx_run *r = ps->run;
    const circuits_config *c = &ps->ctx->model->cfg;
    int64_t N = ps->B * ps->T;
    memcpy(ps->s.tokens, r->tokens, (size_t)N * sizeof(int32_t));
    FIRE(-1, HK_TOKENS, (float *)ps->s.tokens);
    bool want_loss = r->loss || r->per_token_loss;
    for (int64_t i = 0; i < N; i++) {
        int32_t t = ps->s.tokens[i];
        if (t < 0 || t >= c->d_vocab)
            return cx_fail(CIRCUITS_E_RANGE, "hook_tokens: a hook set token id %d at [%lld, %lld], outside the "
                           "vocabulary [0, %d)", t, (long long)(i / ps->T), (long long)(i % ps->T), c->d_vocab);
        if (want_loss && i % ps->T > 0 && t >= c->d_vocab_out)
            return cx_fail(CIRCUITS_E_RANGE, "hook_tokens: a hook set target token %d at [%lld, %lld], outside "
                           "d_vocab_out = %d", t, (long long)(i / ps->T), (long long)(i % ps->T), c->d_vocab_out);
    }
    ps->tokens = ps->s.tokens;
    return CIRCUITS_OK;
}

static int run(pass *ps, float *out)
{
    const circuits_context *ctx = ps->ctx;
    const cx_run *r = ps->run;
    const circuits_model *m = ctx->model;
    const circuits_config *c = &m->cfg;
    scratch *s = &ps->s;
    int64_t B = ps->B, T = ps->T, N = B * T, D = c->d_model;
    int nt = c->normalization_type;
    bool norm = nt != CIRCUITS_NORM_NONE, rms = nt == CIRCUITS_NORM_RMS || nt == CIRCUITS_NORM_RMSPRE;
    int rc;

    /* pos[b, t] = W_pos[P + t] (P: cached positions), with a mask W_pos[pos_id[b, t]] and 0 at
     * padding (TL PosEmbed); shortformer needs it in every layer */
    const circuits_tensor *E = m->W_E, *Wp = m->W_pos;
    for (int64_t n = 0; n < N && Wp; n++) { /* rotary models have no W_pos (nor hook_pos_embed) */
        int64_t b = n / T, t = n % T, p = ps->s.pos_id ? ps->s.pos_id[n] : ps->P + t;
        bool pad = ps->mask && !ps->mask[b * ps->mask_rs + ps->P + t];
        for (int64_t j = 0; j < D; j++) s->pos[n * D + j] = pad ? 0.0f : Wp->data[p * Wp->strides[0] + j * Wp->strides[1]];
    }
    if (r->input) {
        /* start_at_layer: the caller's residual stream replaces the embeddings */
        memcpy(s->resid, r->input, (size_t)(N * D) * sizeof(float));
    } else {
        if (cx_hook_active(ctx, r, -1, HK_TOKENS) && (rc = hook_tokens(ps))) return rc;
        /* embed[b, t] = W_E[tokens[b, t]] */
        const int32_t *tok = ps->tokens;
        const cx_qmat *qe = cx_stored(m, E);
        for (int64_t n = 0; n < N; n++) {
            float *e = s->embed + n * D;
            if (!qe) {
                for (int64_t j = 0; j < D; j++) e[j] = E->data[tok[n] * E->strides[0] + j * E->strides[1]];
                continue;
            }
            cx_qmat_row(qe, tok[n], e); /* a stored W_E: Gemma's scale as the fp32 load applies it */
            if (m->embed_scale != 0.0f)
                for (int64_t j = 0; j < D; j++) e[j] *= m->embed_scale;
        }
        FIRE(-1, HK_EMBED, s->embed);
        FIRE(-1, HK_POS_EMBED, s->pos);
        memcpy(s->resid, s->embed, (size_t)(N * D) * sizeof(float));
        if (c->positional_embedding_type == CIRCUITS_POS_STANDARD) cx_add_into(s->resid, s->pos, (size_t)(N * D));
    }

    for (int l = r->start; l < r->stop; l++) {
        const cx_layer_weights *w = &m->layers[l];
        FIRE(l, HK_RESID_PRE, s->resid);
        if (cx_split_heads(ctx)) {
            /* ln1 runs on the per-head inputs, inside attention */
        } else if (norm) {
            if ((rc = layer_norm(ps, l, HK_LN1_SCALE, s->normed, s->scale, s->resid, D, rms, w->ln1_w, w->ln1_b)))
                return rc;
        } else {
            memcpy(s->normed, s->resid, (size_t)(N * D) * sizeof(float));
        }
        if ((rc = attention(ps, l))) return rc;
        if (c->parallel_attn_mlp) {
            /* NeoX / GPT-J: the MLP reads ln2(resid_pre); resid_post = (resid_pre + attn_out) +
             * mlp_out, in TL's order of additions; no hook_resid_mid */
            const float *mlp_src;
            if ((rc = mlp_input(ps, l, &mlp_src))) return rc;
            if (!norm) memcpy(s->normed, mlp_src, (size_t)(N * D) * sizeof(float));
            else if ((rc = layer_norm(ps, l, HK_LN2_SCALE, s->normed, s->scale, mlp_src, D, rms, w->ln2_w, w->ln2_b)))
                return rc;
            cx_add_into(s->resid, s->branch, (size_t)(N * D));
            if ((rc = mlp(ps, l))) return rc;
            cx_add_into(s->resid, s->branch, (size_t)(N * D));
        } else {
            cx_add_into(s->resid, s->branch, (size_t)(N * D));
            if (!c->attn_only) {
                FIRE(l, HK_RESID_MID, s->resid);
                const float *mlp_src;
                if ((rc = mlp_input(ps, l, &mlp_src))) return rc;
                if (norm) {
                    if ((rc = layer_norm(ps, l, HK_LN2_SCALE, s->normed, s->scale, mlp_src, D, rms, w->ln2_w,
                                         w->ln2_b)))
                        return rc;
                } else {
                    memcpy(s->normed, mlp_src, (size_t)(N * D) * sizeof(float));
                }
                if ((rc = mlp(ps, l))) return rc;
                cx_add_into(s->resid, s->branch, (size_t)(N * D));
            }
        }
        FIRE(l, HK_RESID_POST, s->resid);
    }
    if (r->stop_at_layer) { /* the residual stream before block `stop` (after the last, if stop = L) */
        if (out) memcpy(out, s->resid, (size_t)(N * D) * sizeof(float));
        return CIRCUITS_OK;
    }

    const float *final = s->resid;
    if (norm) {
        /* final_rms: ln_final is RMSNorm (RMSPre once folded) also in an LN model, as TL builds it */
        if ((rc = layer_norm(ps, -1, HK_LNF_SCALE, s->normed, s->scale, s->resid, D, rms || c->final_rms, m->ln_final_w,
                             m->ln_final_b)))
            return rc;
        final = s->normed;
    }
    FIRE(-1, HK_UNEMBED_IN, (float *)final);
    /* logits [B, n, V] at the chosen positions (every position: n = T): their rows of `final`
     * gathered into branch [B * n, D] first, so that the unembedding is one GEMM either way */
    int64_t n = r->positions ? r->n_positions : T;
    if (r->positions) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < n; i++) {
                int64_t t = r->positions[i] < 0 ? r->positions[i] + T : r->positions[i];
                memcpy(s->branch + (b * n + i) * D, final + (b * T + t) * D, (size_t)D * sizeof(float));
            }
        final = s->branch;
    }
    cx_weight_linear(m, out, c->d_vocab_out, final, D, B * n, m->W_U, m->b_U->data);
    /* unembed.hook_out sees [B, n, V], before the soft-cap: TransformerLens caps the logits
     * unembed returns (apply_softcap in HookedTransformer.forward); the loss reads capped ones */
    if (cx_hook_active(ctx, r, -1, HK_UNEMBED_OUT) && (rc = cx_hook_fire(ps->ctx, r, -1, HK_UNEMBED_OUT, out, B, n)))
        return rc;
    float cap = c->output_logits_soft_cap;
    if (cap > 0.0f)
        for (int64_t i = 0; i < B * n * c->d_vocab_out; i++) out[i] = cap * tanhf(out[i] / cap);
    return CIRCUITS_OK;
}

/* The attention mask: 0/1 values, a real token in every row (counting the positions a KV cache
 * holds: TransformerLens would give such a row NaN-free zeros, but nothing in it means
 * anything), and for a loss at least one pair of consecutive real tokens to average over. */
static int check_mask(const cx_run *r, bool want_loss)
{
    const int32_t *m = r->attention_mask;
    const circuits_kv_cache *kv = r->kv;
    int64_t B = r->batch, T = r->pos, held = kv ? kv->len : 0;
    bool pair = false;
    for (int64_t b = 0; b < B; b++) {
        bool real = false;
        for (int64_t t = 0; t < held; t++) real |= kv->mask[b * kv->cap + t] != 0;
        for (int64_t t = 0; t < T; t++) {
            int32_t v = m[b * T + t];
            if (v != 0 && v != 1)
                return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                               "forward: attention_mask[%lld, %lld] is %d: a mask holds 1 (a real token) or 0 (padding)",
                               (long long)b, (long long)t, v);
            real |= v;
            pair |= t > 0 && v && m[b * T + t - 1];
        }
        if (!real)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "forward: attention_mask row %lld has no real token (every position is padding)", (long long)b);
    }
    if (want_loss && !pair)
        return cx_fail(CIRCUITS_E_SHAPE,
                       "forward: the loss needs two consecutive real tokens in some row; the attention_mask has none");
    return CIRCUITS_OK;
}

/* Checks every argument before anything runs. */
static int check_run(const circuits_context *ctx, const cx_run *r)
{
    const circuits_config *c = &ctx->model->cfg;
    const circuits_kv_cache *kv = r->kv;
    int64_t B = r->batch, T = r->pos;
    if (B < 1 || T < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "forward: tokens shape [%lld, %lld]: batch and pos must be at least 1",
                       (long long)B, (long long)T);
    int64_t past = kv ? kv->len : 0;
    if (T > c->n_ctx - past) {
        if (kv)
            return cx_fail(CIRCUITS_E_RANGE,
                           "forward: %lld cached + %lld new positions exceed the model's n_ctx = %d",
                           (long long)past, (long long)T, c->n_ctx);
        return cx_fail(CIRCUITS_E_RANGE, "forward: %lld positions exceed the model's n_ctx = %d", (long long)T,
                       c->n_ctx);
    }
    if (kv) {
        if (kv->model != ctx->model)
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "forward: the KV cache was created for another model");
        if (kv->batch != B)
            return cx_fail(CIRCUITS_E_SHAPE, "forward: batch %lld, but the KV cache holds batch %lld", (long long)B,
                           (long long)kv->batch);
        if (past > 0 && (r->start < kv->lo || r->stop > kv->hi))
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT,
                           "forward: the KV cache holds keys and values of blocks %d .. %d only (an earlier run skipped "
                           "the others); this run needs blocks %d .. %d", kv->lo, kv->hi - 1, r->start, r->stop - 1);
        if (T > kv->cap - past)
            return cx_fail(CIRCUITS_E_RANGE, "forward: %lld cached + %lld new positions exceed the KV cache's %lld",
                           (long long)past, (long long)T, (long long)kv->cap);
    }
    bool want_loss = r->loss || r->per_token_loss;
    /* the loss reads every position's logits and the tokens: no runner asks for it otherwise */
    if (want_loss && (r->positions || r->input || r->stop_at_layer))
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "forward: a loss needs the logits at every position of tokens");
    if (want_loss && T < 2)
        return cx_fail(CIRCUITS_E_SHAPE, "forward: the loss needs at least 2 positions (got %lld)", (long long)T);
    if (B > (int64_t)(SIZE_MAX / sizeof(int32_t)) / T)
        return cx_fail(CIRCUITS_E_RANGE, "forward: batch %lld is too large", (long long)B);
    if (!r->input) {
        if (!r->tokens) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "forward: tokens is NULL");
        for (int64_t i = 0; i < B * T; i++)
            if (r->tokens[i] < 0 || r->tokens[i] >= c->d_vocab)
                return cx_fail(CIRCUITS_E_RANGE,
                               "forward: token id %d at [%lld, %lld] is outside the vocabulary [0, %d)", r->tokens[i],
                               (long long)(i / T), (long long)(i % T), c->d_vocab);
        /* the loss reads the next token's logit: every target must be a row of the unembedding */
        if (want_loss)
            for (int64_t i = 0; i < B * T; i++)
                if (i % T > 0 && r->tokens[i] >= c->d_vocab_out)
                    return cx_fail(CIRCUITS_E_RANGE, "loss: target token %d is outside d_vocab_out = %d", r->tokens[i],
                                   c->d_vocab_out);
    }
    if (r->positions)
        for (int64_t i = 0; i < r->n_positions; i++)
            if (r->positions[i] < -T || r->positions[i] >= T)
                return cx_fail(CIRCUITS_E_RANGE, "run: logit position %lld (index %lld) is outside [-%lld, %lld)",
                               (long long)r->positions[i], (long long)i, (long long)T, (long long)T);
    int rc = cx_sae_check_run(ctx, r);
    if (rc) return rc;
    return r->attention_mask ? check_mask(r, want_loss) : CIRCUITS_OK;
}

/* The pass's view of the mask: every key's (a KV cache's held ones first: the run's own are
 * written after them, ones without a mask; they count only once the run succeeds), NULL when
 * nothing is padding. */
static void prepare_mask(pass *ps)
{
    const cx_run *r = ps->run;
    circuits_kv_cache *kv = r->kv;
    int64_t B = ps->B, T = ps->T, P = ps->P, Tk = P + T;
    ps->mask = r->attention_mask;
    ps->mask_rs = T;
    if (kv) {
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                kv->mask[b * kv->cap + P + t] = r->attention_mask ? r->attention_mask[b * T + t] : 1;
        ps->mask = kv->mask;
        ps->mask_rs = kv->cap;
    }
    bool padded = false;
    for (int64_t b = 0; b < B && ps->mask && !padded; b++)
        for (int64_t t = 0; t < Tk && !padded; t++) padded = !ps->mask[b * ps->mask_rs + t];
    if (!padded) ps->mask = NULL;
}

void cx_position_ids(const int32_t *mask, int64_t mask_rs, int64_t B, int64_t T, int64_t P, int32_t *pos_id)
{
    for (int64_t b = 0; b < B; b++) {
        int32_t seen = 0;
        for (int64_t t = 0; t < P + T; t++) {
            seen += mask[b * mask_rs + t];
            if (t >= P) pos_id[b * T + t - P] = seen > 0 ? seen - 1 : 0;
        }
    }
}

/* The mask, the scratch and the pass; *lg: where the logits are. */
static int forward_pass(pass *ps, float **lg)
{
    circuits_context *ctx = ps->ctx;
    const cx_run *r = ps->run;
    int64_t B = ps->B, T = ps->T;
    prepare_mask(ps);
    int64_t logit_rows = B * (r->positions ? r->n_positions : T);
    /* callbacks see only the run memory: logits a callback or editor reads are made there and
     * copied out after. Readers that copy what they read (a cache, a transcoder's capture, a
     * gradient run's tape) and the observer take them where they are: the caller's buffer. */
    bool own_logits = !r->stop_at_layer && (r->out == NULL || cx_hook_may_write(ctx, r, -1, HK_UNEMBED_OUT));
    int rc = prepare_scratch(ctx, B, T, ps->P + T, logit_rows, own_logits, ps->mask != NULL, &ps->s);
    if (rc) return rc;
    if (ps->mask) cx_position_ids(ps->mask, ps->mask_rs, B, T, ps->P, ps->s.pos_id);
    *lg = own_logits ? ps->s.logits : r->out;
    if ((rc = run(ps, r->stop_at_layer ? r->out : *lg))) return rc;
    if (own_logits && r->out) /* 26 MB at [1, 128]: on the pool, as a cache copy is */
        cx_copy_floats(r->out, *lg, (size_t)logit_rows * (size_t)ctx->model->cfg.d_vocab_out);
    return CIRCUITS_OK;
}

int cx_forward(circuits_context *ctx, const cx_run *r)
{
    const circuits_config *c = &ctx->model->cfg;
    int rc = check_run(ctx, r);
    if (rc) return rc;
    pass ps = {.ctx = ctx, .run = r, .B = r->batch, .T = r->pos, .P = r->kv ? r->kv->len : 0, .tokens = r->tokens};
    ctx->run_past = ps.P;
    int64_t B = ps.B, T = ps.T;
    float *lg = NULL;
    rc = forward_pass(&ps, &lg);
    if (rc) return rc;
    if (r->kv) { /* the held positions now have keys and values of this run's blocks only */
        r->kv->len += T;
        r->kv->lo = r->start;
        r->kv->hi = r->stop;
    }
    if (r->loss || r->per_token_loss) /* the tokens as hook_tokens left them, as TL's loss reads them */
        return cx_lm_loss(lg, ps.tokens, r->attention_mask, B, T, c->d_vocab_out, r->per_token_loss, r->loss, r->fn);
    return CIRCUITS_OK;
}
