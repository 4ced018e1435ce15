/* Gradient runs: the forward pass with a tape, then the backward pass in the reverse of forward.c's
 * order, as PyTorch autograd runs it through TransformerLens.
 *
 * Notation as forward.c: B batch, T positions, D d_model, H n_heads, KV n_key_value_heads, dh
 * d_head, M d_mlp, V d_vocab_out, N = B * T. "dX" is d metric / d X.
 *
 * The tape (what is stored): the forward fires every hook point (cx_run.tape makes them all
 * active, so LayerNorm and attention take their hooked, piecewise paths) and cx_tape_record copies
 * the activations the backward reads, as the forward hooks left them (post), and where a forward
 * hook or editor may write, also as the forward computed them (pre): the LayerNorm scales and
 * normalized values, q / k / v (rotated where rotary), the pattern, z, the MLP's pre-activations
 * and post-activation, the unembedding's input, and the block inputs of models without norms.
 * What is recomputed: every norm's affine output (normalized * w + b, the projections' input), a
 * gated MLP's act(gate), the rotary tables. Nothing else is stored: the attention scores only
 * under a soft-cap (its derivative reads them).
 *
 * Forward edits (circuits_edit_grad): at a point a forward hook may write, the gradient arriving
 * at the post-edit value passes to the pre-edit value unchanged (THROUGH) or only where the value
 * is unchanged, bit for bit (REPLACE: what the hook set is a constant).
 *
 * At each point, in the reverse of firing order: the metric's HOOK_LINEAR direction is added, the
 * gradient is copied to the cache (before the backward hooks, as TransformerLens's cache keeps
 * it), the backward hooks run (their edits flow on), then the edit rule.
 *
 * Memory: one block per context (ctx->grad_scratch, reused across runs and handed over with the
 * run memory), sized before the forward: the tape, then the gradient buffers. Nothing is
 * allocated inside the layer loop. Parallelism: attention over (batch, key-value head) pairs, the
 * GEMMs and row kernels inside their kernels; hooks fire on the calling thread. */
#include "backward.h"

#include "arch.h"
#include "grad_kernels.h"
#include "kernels.h"
#include "metric.h"
#include "pool.h"
#include "rope.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- the tape ---- */

typedef struct tape_point {
    float *post[3], *pre[3]; /* per firing (ln1 under split heads fires three times): NULL where not kept */
    size_t numel[3];
    int firings, fired;
} tape_point;

struct cx_tape {
    tape_point *pt; /* [n_points] */
};

void cx_tape_record(struct cx_tape *tape, int32_t idx, bool pre, const float *data, size_t numel)
{
    tape_point *tp = &tape->pt[idx];
    int f = tp->fired;
    if (f >= tp->firings) return;
    float *dst = pre ? tp->pre[f] : tp->post[f];
    if (dst) memcpy(dst, data, (numel < tp->numel[f] ? numel : tp->numel[f]) * sizeof(float));
    if (!pre) tp->fired++;
}

/* True if the backward reads point kind's activation as the forward hooks left it. */
static bool needs_post(const circuits_config *c, cx_hook_kind k)
{
    bool no_norm = c->normalization_type == CIRCUITS_NORM_NONE;
    switch (k) {
    case HK_TOKENS: case HK_LN1_SCALE: case HK_LN1_NORMALIZED: case HK_LN1_POST_SCALE: case HK_LN1_POST_NORMALIZED:
    case HK_LN2_SCALE: case HK_LN2_NORMALIZED: case HK_MLP_LN_SCALE: case HK_MLP_LN_NORMALIZED:
    case HK_LN2_POST_SCALE: case HK_LN2_POST_NORMALIZED: case HK_LNF_SCALE: case HK_LNF_NORMALIZED:
    case HK_Q: case HK_K: case HK_V: case HK_ROT_Q: case HK_ROT_K: case HK_PATTERN: case HK_Z:
    case HK_MLP_PRE: case HK_MLP_PRE_LINEAR: case HK_MLP_POST: case HK_UNEMBED_IN:
        return true;
    case HK_ATTN_SCORES: return c->attn_scores_soft_cap > 0.0f;
    case HK_POS_EMBED: return c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER; /* added to q and k inputs */
    case HK_RESID_PRE: case HK_RESID_MID: case HK_MLP_IN: case HK_ATTN_IN: case HK_Q_INPUT: case HK_K_INPUT:
    case HK_V_INPUT:
        return no_norm; /* the projections' input when no norm sits between */
    default: return false;
    }
}

/* ---- the backward pass's state ---- */

typedef struct bpass {
    circuits_context *ctx;
    const cx_grad_run *g;
    const cx_run *r;
    struct cx_tape tape;
    int64_t B, T, N, D, H, KV, dh, M, V;
    bool split;                 /* ln1 on per-head inputs (use_split_qkv_input / use_attn_in) */
    float **gdst;               /* [n_points]: where each point's gradient is cached, or NULL */
    int32_t linear_idx;         /* HOOK_LINEAR's point, or -1 */
    float **gw;                 /* [(n_layers + 1) * CX_W_COUNT]: weight gradients (row 0: outside blocks) */
    /* gradient buffers */
    const int64_t *lpos; /* the positions the logits were computed at (sparse_logits), or NULL: all */
    int64_t n_lpos;
    float *logits;   /* [N, V] the forward's logits (soft-capped); [B, n_lpos, V] with lpos */
    float *dlogits;  /* [N, V] */
    float *dres;     /* [N, D] the residual stream's gradient, from the end */
    float *dpost;    /* [N, D] parallel blocks: resid_post's gradient, kept for the attention */
    float *dbr;      /* [N, D] a branch's gradient (attn_out, mlp_out) */
    float *dx;       /* [N, max(D, H * D)] a norm's or projection's input gradient */
    float *xin;      /* [N, max(D, H * D)] a projection's recomputed input */
    float *dpos;     /* [N, D] shortformer: hook_pos_embed's gradient, summed over the layers */
    const float *pos; /* [N, D] shortformer: the positional embedding q and k read (hook_pos_embed's
                       * record; from start_at_layer, where that point does not fire, built as the
                       * forward builds it, into pos_built) */
    float *pos_built; /* [N, D] shortformer from start_at_layer */
    float *dscale;   /* [N * H] a norm's scale gradient */
    float *dq, *dz;  /* [N, H * dh] */
    float *dk, *dv;  /* [N, KV * dh] */
    float *dS;       /* [B, H, T, T] d pattern, then d scores */
    float *dres_h;   /* [N, H, D] use_attn_result: hook_result's gradient; split: one input's */
    float *dmlp, *dmlp2, *actg; /* [N, M] */
    float *rope;     /* rotary: cos, sin [rows, rd / 2] per table (rows N with a mask, else T) */
    int32_t *pos_id; /* [N] with a mask */
} bpass;

#define BFIRE(layer, kind, firing, buf, heads)                           \
    do {                                                                 \
        int rc_ = bfire(bp, layer, kind, firing, buf, heads);            \
        if (rc_) return rc_;                                             \
    } while (0)

static const float *post_of(const bpass *bp, int layer, cx_hook_kind kind, int firing)
{
    int32_t i = cx_hook_index(&bp->ctx->hooks, layer, kind);
    return i < 0 ? NULL : bp->tape.pt[i].post[firing];
}

/* The forward's own value at (layer, kind): before the hooks' edit where one may have written. */
static const float *pre_of(const bpass *bp, int layer, cx_hook_kind kind, int firing)
{
    int32_t i = cx_hook_index(&bp->ctx->hooks, layer, kind);
    if (i < 0) return NULL;
    return bp->tape.pt[i].pre[firing] ? bp->tape.pt[i].pre[firing] : bp->tape.pt[i].post[firing];
}

/* The gradient g at point (layer, kind), firing `firing` (heads: that firing's head count, 0: the
 * point's own): HOOK_LINEAR's direction, the cache copy, the backward hooks, the edit rule. */
static int bfire(bpass *bp, int layer, cx_hook_kind kind, int firing, float *g, int64_t heads)
{
    circuits_context *ctx = bp->ctx;
    int32_t idx = cx_hook_index(&ctx->hooks, layer, kind);
    if (idx < 0) return CIRCUITS_OK;
    const cx_hook_point *p = &ctx->hooks.points[idx];
    tape_point *tp = &bp->tape.pt[idx];
    circuits_tensor t;
    cx_hook_describe(ctx, p, bp->B, bp->T, 0, g, &t);
    if (heads > 0 && t.head_axis == 2 && t.shape[2] != heads) {
        t.shape[2] = heads;
        cx_contiguous_strides(t.ndim, t.shape, t.strides);
    }
    size_t numel = (size_t)(t.shape[0] * t.strides[0]);
    if (idx == bp->linear_idx)
        for (size_t i = 0; i < numel; i++) g[i] += bp->g->metric.direction[i];
    if (bp->gdst && bp->gdst[idx] && firing == 0) /* a point fired several times keeps the last backward firing */
        memcpy(bp->gdst[idx], g, numel * sizeof(float));
    for (size_t i = 0; i < p->n_bregs; i++) {
        int rc = cx_callback_status(p->bregs[i].fn(&t, p->bregs[i].user_data), "backward hook", p->name);
        if (rc) return rc;
    }
    const float *pre = tp->pre[firing], *post = tp->post[firing];
    if (pre && post && bp->g->edit_grad == CIRCUITS_EDIT_GRAD_REPLACE)
        for (size_t i = 0; i < numel; i++)
            if (memcmp(&pre[i], &post[i], sizeof(float)) != 0) g[i] = 0.0f;
    return CIRCUITS_OK;
}

/* True if anything reads or changes the gradient at (layer, kind), or a forward hook may have
 * written the activation there: then it is computed whole, entries the forward's mask removed
 * included. */
static bool watched(const bpass *bp, int layer, cx_hook_kind kind)
{
    int32_t i = cx_hook_index(&bp->ctx->hooks, layer, kind);
    return i >= 0 && (bp->ctx->hooks.points[i].n_bregs > 0 || (bp->gdst && bp->gdst[i]) || i == bp->linear_idx ||
                      bp->tape.pt[i].pre[0] != NULL);
}

/* The weight gradient buffer of (layer, kind), or NULL (none asked for, or no such weight). */
static float *wgrad(const bpass *bp, int layer, cx_weight_kind k)
{
    return bp->gw ? bp->gw[(size_t)(layer + 1) * CX_W_COUNT + k] : NULL;
}

/* db[cols] += the column sums of dy [rows, cols] (ld ldy). */
static void bias_grad(float *db, const float *dy, int64_t rows, int64_t cols, int64_t ldy)
{
    if (!db) return;
    for (int64_t j = 0; j < cols; j++) {
        double acc = 0.0;
        for (int64_t n = 0; n < rows; n++) acc += dy[n * ldy + j];
        db[j] += (float)acc;
    }
}

/* The backward of y [rows, Nout] (ld ldy) = x [rows, K] (ld ldx) @ W [K, Nout] (strides w_rs, w_cs):
 * dx (ld ldx_g) += dy @ W^T when dx is set (overwritten if !acc), dW [K, Nout] (contiguous, ld ldw)
 * += x^T @ dy when dW is set. */
static void linear_backward(float *dx, int64_t ld_dx, bool acc, float *dW, int64_t ldw, const float *dy, int64_t ldy,
                            const float *x, int64_t ldx, int64_t rows, int64_t K, int64_t Nout, const float *W,
                            int64_t w_rs, int64_t w_cs)
{
    if (dx) cx_matmul(dx, ld_dx, dy, ldy, rows, Nout, K, W, w_cs, w_rs, NULL, acc);
    if (dW) cx_sgemm(true, false, K, Nout, rows, 1.0f, x, ldx, dy, ldy, 1.0f, dW, ldw);
}

/* ---- norms ---- */

/* The backward of layer_norm_heads (forward.c): dout [rows, width] is the gradient at the norm's
 * output (after w, b; overwritten); dx_out [rows, width] receives the input's gradient. Rows: N,
 * or N * heads for ln1 on per-head inputs (firing f). */
static int norm_backward(bpass *bp, int layer, cx_hook_kind scale_kind, float *dx_out, float *dout, int64_t rows,
                         int64_t width, bool rms, const circuits_tensor *w, cx_weight_kind wk, cx_weight_kind bk,
                         int f, int64_t heads)
{
    cx_hook_kind norm_kind = (cx_hook_kind)(scale_kind + 1);
    const float *n_u = post_of(bp, layer, norm_kind, f), *n_f = pre_of(bp, layer, norm_kind, f);
    const float *s_u = post_of(bp, layer, scale_kind, f), *s_f = pre_of(bp, layer, scale_kind, f);
    cx_affine_backward(dout, wk < CX_W_COUNT ? wgrad(bp, layer, wk) : NULL, bk < CX_W_COUNT ? wgrad(bp, layer, bk) : NULL,
                       dout, n_u, w ? w->data : NULL, rows, width);
    BFIRE(layer, norm_kind, f, dout, heads);
    cx_ln_normalized_backward(dout, bp->dscale, dout, n_f, s_u, rows, width);
    BFIRE(layer, scale_kind, f, bp->dscale, heads);
    cx_ln_scale_backward(dx_out, dout, bp->dscale, n_f, s_u, s_f, rows, width, rms);
    return CIRCUITS_OK;
}

/* x [rows, width] = normalized * w + b as the forward computed it: a projection's input. */
static void norm_output(float *x, const bpass *bp, int layer, cx_hook_kind scale_kind, int f, int64_t rows,
                        int64_t width, const circuits_tensor *w, const circuits_tensor *b)
{
    memcpy(x, post_of(bp, layer, (cx_hook_kind)(scale_kind + 1), f), (size_t)(rows * width) * sizeof(float));
    if (w || b) cx_affine(x, w ? w->data : NULL, b ? b->data : NULL, rows, width);
}

/* ---- attention ---- */

typedef struct attn_bjob {
    bpass *bp;
    int64_t group;       /* query heads per key-value head */
    const float *q, *k, *v, *P_u; /* q [N, H*dh], k / v [N, KV*dh], pattern (as the hooks left it) [B, H, T, T] */
    const float *P_f;    /* the softmax's own output */
    const float *S_f;    /* soft-capped scores (cap > 0) */
    float scale, cap;
    int step;
} attn_bjob;

/* The causal path, for one (b, h) when nothing reads or wrote the pattern or the scores: the
 * pattern and the scores' gradient are 0 above the diagonal (p = 0 there), so per block of
 * query rows [i0, i1) only keys [0, i1) are met, as in the forward: d pattern, dv, the softmax's
 * backward row by row, the soft-cap and scale, dq and dk in one go. */
static void attn_causal(const attn_bjob *j, const float *dz, const float *q, const float *k, const float *v,
                        float *dv, float *dk, float *dq, float *dS, size_t off)
{
    bpass *bp = j->bp;
    const int64_t T = bp->T, HD = bp->H * bp->dh, KD = bp->KV * bp->dh, dh = bp->dh, QB = 64;
    for (int64_t i0 = 0; i0 < T; i0 += QB) {
        int64_t i1 = i0 + QB < T ? i0 + QB : T, m = i1 - i0;
        float *S = dS + i0 * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)m, (blasint)i1, (blasint)dh, 1.0f, dz + i0 * HD,
                    (blasint)HD, v, (blasint)KD, 0.0f, S, (blasint)T);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)i1, (blasint)dh, (blasint)m, 1.0f,
                    j->P_u + off + i0 * T, (blasint)T, dz + i0 * HD, (blasint)HD, 1.0f, dv, (blasint)KD);
        for (int64_t i = i0; i < i1; i++) {
            float *row = dS + i * T;
            cx_softmax_backward(row, row, j->P_f + off + i * T, 1, i + 1);
            if (j->cap > 0.0f) cx_softcap_backward(row, row, j->S_f + off + i * T, (size_t)(i + 1), j->cap);
            for (int64_t c = 0; c <= i; c++) row[c] /= j->scale;
            for (int64_t c = i + 1; c < i1; c++) row[c] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)dh, (blasint)i1, 1.0f, S, (blasint)T,
                    k, (blasint)KD, 0.0f, dq + i0 * HD, (blasint)HD);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)i1, (blasint)dh, (blasint)m, 1.0f, S, (blasint)T,
                    q + i0 * HD, (blasint)HD, 1.0f, dk, (blasint)KD);
    }
}

/* Step 0, per (b, kvh): dS = dz @ v^T (d pattern, every entry: a hook may read it), dv += P^T dz.
 * Step 2: the soft-cap and scale on dS, dq = dS @ k, dk += dS^T q. Step 1: both, causally
 * (attn_causal). */
static void attn_btask(void *arg, int64_t begin, int64_t end)
{
    const attn_bjob *j = arg;
    bpass *bp = j->bp;
    const int64_t T = bp->T, H = bp->H, dh = bp->dh, HD = H * dh, KD = bp->KV * dh;
    for (int64_t bk = begin; bk < end; bk++) {
        int64_t b = bk / bp->KV, kvh = bk % bp->KV;
        const float *v = j->v + b * T * KD + kvh * dh, *k = j->k + b * T * KD + kvh * dh;
        float *dv = bp->dv + b * T * KD + kvh * dh, *dk = bp->dk + b * T * KD + kvh * dh;
        for (int64_t h = kvh * j->group; h < (kvh + 1) * j->group; h++) {
            size_t off = (size_t)(b * H + h) * (size_t)(T * T);
            float *dS = bp->dS + off;
            const float *dz = bp->dz + b * T * HD + h * dh, *q = j->q + b * T * HD + h * dh;
            float *dq = bp->dq + b * T * HD + h * dh;
            if (j->step == 1) {
                attn_causal(j, dz, q, k, v, dv, dk, dq, dS, off);
            } else if (j->step == 0) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)T, (blasint)T, (blasint)dh, 1.0f, dz,
                            (blasint)HD, v, (blasint)KD, 0.0f, dS, (blasint)T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)T, (blasint)dh, (blasint)T, 1.0f,
                            j->P_u + off, (blasint)T, dz, (blasint)HD, 1.0f, dv, (blasint)KD);
            } else {
                if (j->cap > 0.0f) cx_softcap_backward(dS, dS, j->S_f + off, (size_t)(T * T), j->cap);
                for (int64_t i = 0; i < T * T; i++) dS[i] /= j->scale;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)T, (blasint)dh, (blasint)T, 1.0f, dS,
                            (blasint)T, k, (blasint)KD, 0.0f, dq, (blasint)HD);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)T, (blasint)dh, (blasint)T, 1.0f, dS,
                            (blasint)T, q, (blasint)HD, 1.0f, dk, (blasint)KD);
            }
        }
    }
}

/* The rotary tables of layer l's kind into bp->rope (made once per kind). */
static int rope_of(bpass *bp, int l, const float **cos_t, const float **sin_t, bool *made)
{
    const circuits_config *c = &bp->ctx->model->cfg;
    int64_t half = c->rotary_dim / 2, rows = bp->pos_id ? bp->N : bp->T;
    int which = cx_rope_layer_unscaled(c, l);
    float *ct = bp->rope + (size_t)which * 2 * (size_t)(rows * half), *st = ct + rows * half;
    if (!made[which]) {
        int rc = cx_rope_tables(c, which, bp->pos_id, rows, 0, ct, st);
        if (rc) return rc;
        made[which] = true;
    }
    *cos_t = ct;
    *sin_t = st;
    return CIRCUITS_OK;
}

static int rotate_back(bpass *bp, int l, float *x, int64_t nh, bool *made)
{
    const circuits_config *c = &bp->ctx->model->cfg;
    const float *ct, *st;
    int rc = rope_of(bp, l, &ct, &st, made);
    if (rc) return rc;
    int64_t half = c->rotary_dim / 2;
    if (bp->pos_id)
        for (int64_t b = 0; b < bp->B; b++)
            cx_rope_rotate_backward(x + b * bp->T * nh * bp->dh, 1, bp->T, nh, bp->dh, c, ct + b * bp->T * half,
                                    st + b * bp->T * half);
    else cx_rope_rotate_backward(x, bp->B, bp->T, nh, bp->dh, c, ct, st);
    return CIRCUITS_OK;
}

/* The q, k, v projections' backward when the heads read per-head inputs (split_head_qkv): each
 * input's gradient [N, heads, D] through its own ln1 firing, then to the residual stream (summed
 * over heads) or to hook_attn_in. */
static int split_inputs_backward(bpass *bp, int l, float *dres_pre)
{
    circuits_context *ctx = bp->ctx;
    const circuits_config *c = &ctx->model->cfg;
    const cx_layer_weights *w = &ctx->model->layers[l];
    int64_t N = bp->N, D = bp->D, H = bp->H, dh = bp->dh, HD = H * dh, KD = bp->KV * dh;
    bool split = ctx->opts.use_split_qkv_input != 0, norm = c->normalization_type != CIRCUITS_NORM_NONE;
    bool rms = c->normalization_type == CIRCUITS_NORM_RMS || c->normalization_type == CIRCUITS_NORM_RMSPRE;
    int64_t heads[3] = {H, split ? bp->KV : H, split ? bp->KV : H};
    const circuits_tensor *Ws[3] = {w->W_Q, w->W_K, w->W_V};
    float *dys[3] = {bp->dq, bp->dk, bp->dv};
    int64_t ldy[3] = {HD, KD, KD};
    static const cx_weight_kind wk[3] = {CX_W_Q, CX_W_K, CX_W_V}, bk[3] = {CX_B_Q, CX_B_K, CX_B_V};
    static const cx_hook_kind input_kinds[3] = {HK_Q_INPUT, HK_K_INPUT, HK_V_INPUT};
    bool shortformer = c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER;
    float *dattn_in = bp->xin; /* [N, H, D]: use_attn_in without split, the three inputs' sum */
    if (!split && ctx->opts.use_attn_in) memset(dattn_in, 0, (size_t)(N * H * D) * sizeof(float));
    for (int i = 2; i >= 0; i--) { /* v, k, q: the reverse of the forward's order */
        int64_t hh = heads[i], rows = N * hh;
        float *din = bp->dres_h; /* [N, hh, D] */
        /* the projection: y[n, h] = in[n, h] @ W[h] + b[h]; the input recomputed per head */
        const int64_t *st = Ws[i]->strides;
        float *x = bp->dx; /* [N, hh, D]: ln1's output (+ pos for q, k under shortformer) */
        if (norm) norm_output(x, bp, l, HK_LN1_SCALE, i, rows, D, w->ln1_w, w->ln1_b);
        else memcpy(x, post_of(bp, l, split ? input_kinds[i] : HK_ATTN_IN, 0), (size_t)(rows * D) * sizeof(float));
        if (i < 2 && shortformer)
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < hh; h++)
                    cx_add_into(x + (n * hh + h) * D, bp->pos + n * D, (size_t)D);
        float *dW = wgrad(bp, l, wk[i]);
        for (int64_t h = 0; h < hh; h++) {
            linear_backward(din + h * D, hh * D, false, dW ? dW + h * D * dh : NULL, dh, dys[i] + h * dh, ldy[i],
                            x + h * D, hh * D, N, D, dh, Ws[i]->data + h * st[0], st[1], st[2]);
            bias_grad(wgrad(bp, l, bk[i]) ? wgrad(bp, l, bk[i]) + h * dh : NULL, dys[i] + h * dh, N, dh, ldy[i]);
        }
        if (i < 2 && shortformer)
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < hh; h++) cx_add_into(bp->dpos + n * D, din + (n * hh + h) * D, (size_t)D);
        if (norm) {
            int rc = norm_backward(bp, l, HK_LN1_SCALE, din, din, rows, D, rms, w->ln1_w, CX_W_LN1_W, CX_W_LN1_B, i, hh);
            if (rc) return rc;
        }
        if (split) {
            BFIRE(l, input_kinds[i], 0, din, 0);
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < hh; h++) cx_add_into(dres_pre + n * D, din + (n * hh + h) * D, (size_t)D);
        } else {
            cx_add_into(dattn_in, din, (size_t)(rows * D));
        }
    }
    if (ctx->opts.use_attn_in) {
        if (split) memset(dattn_in, 0, (size_t)(N * H * D) * sizeof(float)); /* fired, but nothing reads it */
        BFIRE(l, HK_ATTN_IN, 0, dattn_in, 0);
        if (!split)
            for (int64_t n = 0; n < N; n++)
                for (int64_t h = 0; h < H; h++) cx_add_into(dres_pre + n * D, dattn_in + (n * H + h) * D, (size_t)D);
    }
    return CIRCUITS_OK;
}

/* The attention of block l, backward: dbr [N, D] is hook_attn_out's gradient (overwritten); the
 * gradient reaching the residual stream before ln1 is added to dres_pre. */
static int attention_backward(bpass *bp, int l, float *dres_pre, bool *rope_made)
{
    circuits_context *ctx = bp->ctx;
    const circuits_config *c = &ctx->model->cfg;
    const cx_layer_weights *w = &ctx->model->layers[l];
    int64_t N = bp->N, D = bp->D, H = bp->H, KV = bp->KV, dh = bp->dh, HD = H * dh, KD = KV * dh, B = bp->B;
    int64_t T = bp->T;
    int rc;
    BFIRE(l, HK_ATTN_OUT, 0, bp->dbr, 0);
    if (c->norm_before_and_after &&
        (rc = norm_backward(bp, l, HK_LN1_POST_SCALE, bp->dbr, bp->dbr, N, D, true, w->ln1_post_w, CX_LN1_POST_W,
                            CX_W_COUNT, 0, 0)))
        return rc;
    bias_grad(wgrad(bp, l, CX_B_O), bp->dbr, N, D, D);
    /* attn_out = sum_h z[h] @ W_O[h] + b_O (through hook_result with use_attn_result) */
    const circuits_tensor *W_O = w->W_O;
    const int64_t *so = W_O->strides;
    const float *z = post_of(bp, l, HK_Z, 0);
    float *dWO = wgrad(bp, l, CX_W_O);
    if (ctx->opts.use_attn_result) {
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++) memcpy(bp->dres_h + (n * H + h) * D, bp->dbr + n * D, (size_t)D * sizeof(float));
        BFIRE(l, HK_RESULT, 0, bp->dres_h, 0);
    }
    if (!ctx->opts.use_attn_result && so[2] == 1 && so[0] == dh * so[1]) {
        /* heads stacked along rows: W_O viewed as [H * dh, D], one product each way */
        linear_backward(bp->dz, HD, false, dWO, D, bp->dbr, D, z, HD, N, HD, D, W_O->data, so[1], so[2]);
    } else {
        for (int64_t h = 0; h < H; h++) {
            const float *dy = ctx->opts.use_attn_result ? bp->dres_h + h * D : bp->dbr;
            int64_t ldy = ctx->opts.use_attn_result ? H * D : D;
            linear_backward(bp->dz + h * dh, HD, false, dWO ? dWO + h * dh * D : NULL, D, dy, ldy, z + h * dh, HD, N, dh,
                            D, W_O->data + h * so[0], so[1], so[2]);
        }
    }
    BFIRE(l, HK_Z, 0, bp->dz, 0);

    /* pattern -> z, scores -> pattern, q k -> scores */
    bool rotary = c->positional_embedding_type == CIRCUITS_POS_ROTARY;
    float scale = c->attn_scale;
    if (c->scale_attn_by_inverse_layer_idx) scale = (float)((double)c->attn_scale * (l + 1));
    attn_bjob job = {.bp = bp, .group = H / KV, .q = post_of(bp, l, rotary ? HK_ROT_Q : HK_Q, 0),
                     .k = post_of(bp, l, rotary ? HK_ROT_K : HK_K, 0), .v = post_of(bp, l, HK_V, 0),
                     .P_u = post_of(bp, l, HK_PATTERN, 0), .P_f = pre_of(bp, l, HK_PATTERN, 0),
                     .S_f = pre_of(bp, l, HK_ATTN_SCORES, 0), .scale = scale, .cap = c->attn_scores_soft_cap};
    memset(bp->dv, 0, (size_t)(N * KD) * sizeof(float));
    memset(bp->dk, 0, (size_t)(N * KD) * sizeof(float));
    if (!watched(bp, l, HK_PATTERN) && !watched(bp, l, HK_ATTN_SCORES)) {
        job.step = 1;
        cx_parallel_for(B * KV, 1, attn_btask, &job);
    } else {
        job.step = 0;
        cx_parallel_for(B * KV, 1, attn_btask, &job);
        BFIRE(l, HK_PATTERN, 0, bp->dS, 0);
        cx_softmax_backward(bp->dS, bp->dS, job.P_f, B * H * T, T);
        BFIRE(l, HK_ATTN_SCORES, 0, bp->dS, 0);
        job.step = 2;
        cx_parallel_for(B * KV, 1, attn_btask, &job);
    }
    if (rotary) {
        BFIRE(l, HK_ROT_K, 0, bp->dk, 0);
        BFIRE(l, HK_ROT_Q, 0, bp->dq, 0);
        if ((rc = rotate_back(bp, l, bp->dk, KV, rope_made)) || (rc = rotate_back(bp, l, bp->dq, H, rope_made)))
            return rc;
    }
    BFIRE(l, HK_V, 0, bp->dv, 0);
    BFIRE(l, HK_K, 0, bp->dk, 0);
    BFIRE(l, HK_Q, 0, bp->dq, 0);
    if (bp->split) return split_inputs_backward(bp, l, dres_pre);

    /* q = x_qk @ W_Q + b_Q, k likewise, v = x @ W_V + b_V, x = ln1's output (x_qk: + pos under shortformer) */
    bool norm = c->normalization_type != CIRCUITS_NORM_NONE;
    bool rms = c->normalization_type == CIRCUITS_NORM_RMS || c->normalization_type == CIRCUITS_NORM_RMSPRE;
    bool shortformer = c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER;
    float *x = bp->xin;
    if (norm) norm_output(x, bp, l, HK_LN1_SCALE, 0, N, D, w->ln1_w, w->ln1_b);
    else memcpy(x, post_of(bp, l, HK_RESID_PRE, 0), (size_t)(N * D) * sizeof(float));
    const circuits_tensor *Ws[3] = {w->W_V, w->W_K, w->W_Q};
    float *dys[3] = {bp->dv, bp->dk, bp->dq};
    int64_t nh[3] = {KV, KV, H}, ldy[3] = {KD, KD, HD};
    static const cx_weight_kind wk[3] = {CX_W_V, CX_W_K, CX_W_Q}, bk[3] = {CX_B_V, CX_B_K, CX_B_Q};
    for (int i = 0; i < 3; i++) {
        if (i == 1 && shortformer) cx_add_into(x, bp->pos, (size_t)(N * D)); /* k, q read ln1 + pos */
        const int64_t *st = Ws[i]->strides;
        float *dW = wgrad(bp, l, wk[i]);
        bias_grad(wgrad(bp, l, bk[i]), dys[i], N, nh[i] * dh, ldy[i]); /* b [heads, dh]: one row of columns */
        if (st[2] == 1 && st[0] == dh) { /* heads side by side: W viewed as [D, heads * dh], as the forward does */
            cx_matmul(bp->dx, D, dys[i], ldy[i], N, nh[i] * dh, D, Ws[i]->data, 1, st[1], NULL, i > 0);
            if (shortformer && i > 0) /* the same share reaches hook_pos_embed */
                cx_matmul(bp->dpos, D, dys[i], ldy[i], N, nh[i] * dh, D, Ws[i]->data, 1, st[1], NULL, true);
            for (int64_t h = 0; h < nh[i] && dW; h++)
                cx_sgemm(true, false, D, dh, N, 1.0f, x, D, dys[i] + h * dh, ldy[i], 1.0f, dW + h * D * dh, dh);
            continue;
        }
        for (int64_t h = 0; h < nh[i]; h++) {
            bool first = i == 0 && h == 0;
            linear_backward(bp->dx, D, !first, dW ? dW + h * D * dh : NULL, dh, dys[i] + h * dh, ldy[i], x, D, N, D,
                            dh, Ws[i]->data + h * st[0], st[1], st[2]);
            if (shortformer && i > 0) /* the same share reaches hook_pos_embed */
                cx_matmul(bp->dpos, D, dys[i] + h * dh, ldy[i], N, dh, D, Ws[i]->data + h * st[0], st[2], st[1], NULL,
                          true);
        }
    }
    if (norm) {
        rc = norm_backward(bp, l, HK_LN1_SCALE, bp->dx, bp->dx, N, D, rms, w->ln1_w, CX_W_LN1_W, CX_W_LN1_B, 0, 0);
        if (rc) return rc;
    }
    cx_add_into(dres_pre, bp->dx, (size_t)(N * D));
    return CIRCUITS_OK;
}

/* ---- MLP ---- */

/* The MLP of block l, backward: dbr [N, D] is hook_mlp_out's gradient (overwritten); the gradient
 * at the MLP's source (before ln2: resid_mid, resid_pre in parallel blocks, or hook_mlp_in) is
 * added to dsrc. */
static int mlp_backward(bpass *bp, int l, float *dsrc)
{
    circuits_context *ctx = bp->ctx;
    const circuits_config *c = &ctx->model->cfg;
    const cx_layer_weights *w = &ctx->model->layers[l];
    int64_t N = bp->N, D = bp->D, M = bp->M;
    int rc;
    BFIRE(l, HK_MLP_OUT, 0, bp->dbr, 0);
    if (c->norm_before_and_after &&
        (rc = norm_backward(bp, l, HK_LN2_POST_SCALE, bp->dbr, bp->dbr, N, D, true, w->ln2_post_w, CX_LN2_POST_W,
                            CX_W_COUNT, 0, 0)))
        return rc;
    /* mlp_out = post @ W_out + b_out */
    const float *post = post_of(bp, l, HK_MLP_POST, 0);
    bias_grad(wgrad(bp, l, CX_B_OUT), bp->dbr, N, D, D);
    linear_backward(bp->dmlp, M, false, wgrad(bp, l, CX_W_OUT), D, bp->dbr, D, post, M, N, M, D, w->W_out->data,
                    w->W_out->strides[0], w->W_out->strides[1]);
    BFIRE(l, HK_MLP_POST, 0, bp->dmlp, 0);
    const float *pre = post_of(bp, l, HK_MLP_PRE, 0);
    /* the MLP's input: ln2's output, or without norms its source as the hooks left it */
    bool norm = c->normalization_type != CIRCUITS_NORM_NONE;
    bool rms = c->normalization_type == CIRCUITS_NORM_RMS || c->normalization_type == CIRCUITS_NORM_RMSPRE;
    float *x = bp->xin;
    if (norm) norm_output(x, bp, l, HK_LN2_SCALE, 0, N, D, w->ln2_w, w->ln2_b);
    else {
        const float *src = post_of(bp, l, HK_MLP_IN, 0);
        if (!src) src = post_of(bp, l, c->parallel_attn_mlp ? HK_RESID_PRE : HK_RESID_MID, 0);
        memcpy(x, src, (size_t)(N * D) * sizeof(float));
    }
    if (c->gated_mlp) {
        /* post = act(gate) * lin + b_in, gate = x @ W_gate (hook_pre), lin = x @ W_in (hook_pre_linear) */
        const float *lin = post_of(bp, l, HK_MLP_PRE_LINEAR, 0);
        bias_grad(wgrad(bp, l, CX_B_IN), bp->dmlp, N, M, M);
        memcpy(bp->actg, pre, (size_t)(N * M) * sizeof(float));
        cx_activation(bp->actg, (size_t)(N * M), c->act_fn);
        for (int64_t i = 0; i < N * M; i++) {
            bp->dmlp2[i] = bp->dmlp[i] * bp->actg[i]; /* d lin */
            bp->dmlp[i] *= lin[i];                    /* d act(gate) */
        }
        cx_activation_backward(bp->dmlp, bp->dmlp, pre, (size_t)(N * M), c->act_fn);
        BFIRE(l, HK_MLP_PRE_LINEAR, 0, bp->dmlp2, 0);
        BFIRE(l, HK_MLP_PRE, 0, bp->dmlp, 0);
        linear_backward(bp->dx, D, false, wgrad(bp, l, CX_W_GATE), M, bp->dmlp, M, x, D, N, D, M, w->W_gate->data,
                        w->W_gate->strides[0], w->W_gate->strides[1]);
        linear_backward(bp->dx, D, true, wgrad(bp, l, CX_W_IN), M, bp->dmlp2, M, x, D, N, D, M, w->W_in->data,
                        w->W_in->strides[0], w->W_in->strides[1]);
    } else {
        if (c->act_fn == CIRCUITS_ACT_SOLU_LN) {
            /* post = ln(mid), mid = solu(pre) (hook_mid) */
            if ((rc = norm_backward(bp, l, HK_MLP_LN_SCALE, bp->dmlp, bp->dmlp, N, M, false, w->mlp_ln_w, CX_MLP_LN_W,
                                    CX_MLP_LN_B, 0, 0)))
                return rc;
            BFIRE(l, HK_MLP_MID, 0, bp->dmlp, 0);
            cx_solu_backward(bp->dmlp, bp->dmlp, pre, N, M);
        } else {
            cx_activation_backward(bp->dmlp, bp->dmlp, pre, (size_t)(N * M), c->act_fn);
        }
        BFIRE(l, HK_MLP_PRE, 0, bp->dmlp, 0);
        bias_grad(wgrad(bp, l, CX_B_IN), bp->dmlp, N, M, M);
        linear_backward(bp->dx, D, false, wgrad(bp, l, CX_W_IN), M, bp->dmlp, M, x, D, N, D, M, w->W_in->data,
                        w->W_in->strides[0], w->W_in->strides[1]);
    }
    if (norm && (rc = norm_backward(bp, l, HK_LN2_SCALE, bp->dx, bp->dx, N, D, rms, w->ln2_w, CX_W_LN2_W, CX_W_LN2_B,
                                    0, 0)))
        return rc;
    BFIRE(l, HK_MLP_IN, 0, bp->dx, 0);
    cx_add_into(dsrc, bp->dx, (size_t)(N * D));
    return CIRCUITS_OK;
}

/* ---- the whole pass ---- */

static int backward_pass(bpass *bp)
{
    circuits_context *ctx = bp->ctx;
    const circuits_model *m = ctx->model;
    const circuits_config *c = &m->cfg;
    const cx_run *r = bp->r;
    int64_t T = bp->T, N = bp->N, D = bp->D, V = bp->V;
    bool norm = c->normalization_type != CIRCUITS_NORM_NONE;
    bool rms = c->normalization_type == CIRCUITS_NORM_RMS || c->normalization_type == CIRCUITS_NORM_RMSPRE;
    bool rope_made[2] = {false, false};
    int rc;
    if (c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER) {
        bp->pos = post_of(bp, -1, HK_POS_EMBED, 0);
        if (!bp->pos) { /* start_at_layer: the forward's W_pos[position id], 0 at padding, unhooked */
            for (int64_t n = 0; n < N; n++) {
                int64_t b = n / T, t = n % T, p = bp->pos_id ? bp->pos_id[n] : t;
                bool pad = r->attention_mask && !r->attention_mask[b * T + t];
                for (int64_t j = 0; j < D; j++)
                    bp->pos_built[n * D + j] = pad ? 0.0f : m->W_pos->data[p * m->W_pos->strides[0] + j * m->W_pos->strides[1]];
            }
            bp->pos = bp->pos_built;
        }
    }

    /* the unembedding: logits = final @ W_U + b_U (unembed.hook_out), then the soft-cap; with
     * sparse logits, rows (b, lpos[k]) only: final's rows gathered, their gradient scattered */
    float cap = c->output_logits_soft_cap;
    int64_t rows = bp->lpos ? bp->B * bp->n_lpos : N;
    if (cap > 0.0f) cx_softcap_backward(bp->dlogits, bp->dlogits, bp->logits, (size_t)(rows * V), cap);
    if (!bp->lpos) BFIRE(-1, HK_UNEMBED_OUT, 0, bp->dlogits, 0); /* sparse: nothing watches it */
    const float *final = post_of(bp, -1, HK_UNEMBED_IN, 0);
    float *dfinal = bp->dx;
    if (bp->lpos) {
        for (int64_t i = 0; i < rows; i++)
            memcpy(bp->xin + i * D, final + ((i / bp->n_lpos) * T + bp->lpos[i % bp->n_lpos]) * D,
                   (size_t)D * sizeof(float));
        final = bp->xin;
        dfinal = bp->dbr;
    }
    bias_grad(wgrad(bp, -1, CX_B_U), bp->dlogits, rows, V, V);
    linear_backward(dfinal, D, false, wgrad(bp, -1, CX_W_U), V, bp->dlogits, V, final, D, rows, D, V, m->W_U->data,
                    m->W_U->strides[0], m->W_U->strides[1]);
    if (bp->lpos) {
        memset(bp->dx, 0, (size_t)(N * D) * sizeof(float));
        for (int64_t i = 0; i < rows; i++)
            memcpy(bp->dx + ((i / bp->n_lpos) * T + bp->lpos[i % bp->n_lpos]) * D, dfinal + i * D,
                   (size_t)D * sizeof(float));
    }
    BFIRE(-1, HK_UNEMBED_IN, 0, bp->dx, 0);
    if (norm && (rc = norm_backward(bp, -1, HK_LNF_SCALE, bp->dx, bp->dx, N, D, rms || c->final_rms, m->ln_final_w,
                                    CX_LN_FINAL_W, CX_LN_FINAL_B, 0, 0)))
        return rc;
    memcpy(bp->dres, bp->dx, (size_t)(N * D) * sizeof(float));

    for (int l = r->stop - 1; l >= r->start; l--) {
        BFIRE(l, HK_RESID_POST, 0, bp->dres, 0);
        if (c->parallel_attn_mlp) {
            /* resid_post = resid_pre + attn_out + mlp_out, the MLP reading ln2(resid_pre): both branches
             * get resid_post's gradient; the MLP's input share joins resid_pre's */
            memcpy(bp->dpost, bp->dres, (size_t)(N * D) * sizeof(float));
            memcpy(bp->dbr, bp->dres, (size_t)(N * D) * sizeof(float));
            if ((rc = mlp_backward(bp, l, bp->dres))) return rc;
            memcpy(bp->dbr, bp->dpost, (size_t)(N * D) * sizeof(float));
        } else {
            if (!c->attn_only) { /* resid_post = resid_mid + mlp_out */
                memcpy(bp->dbr, bp->dres, (size_t)(N * D) * sizeof(float));
                if ((rc = mlp_backward(bp, l, bp->dres))) return rc;
                BFIRE(l, HK_RESID_MID, 0, bp->dres, 0);
            }
            memcpy(bp->dbr, bp->dres, (size_t)(N * D) * sizeof(float)); /* resid_mid = resid_pre + attn_out */
        }
        if ((rc = attention_backward(bp, l, bp->dres, rope_made))) return rc;
        BFIRE(l, HK_RESID_PRE, 0, bp->dres, 0);
    }
    if (bp->g->input_grad) memcpy(bp->g->input_grad, bp->dres, (size_t)(N * D) * sizeof(float));

    /* embeddings: resid = embed + pos (standard), embed alone (rotary, shortformer: pos feeds q, k;
     * from start_at_layer too, so W_pos still gets that share) */
    if (r->input && !(m->W_pos && c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER)) return CIRCUITS_OK;
    const int32_t *tok = r->tokens;
    int32_t it = cx_hook_index(&ctx->hooks, -1, HK_TOKENS);
    if (it >= 0) tok = (const int32_t *)bp->tape.pt[it].post[0]; /* as hook_tokens left them */
    if (m->W_pos) {
        if (c->positional_embedding_type == CIRCUITS_POS_STANDARD) cx_add_into(bp->dpos, bp->dres, (size_t)(N * D));
        if (!r->input) BFIRE(-1, HK_POS_EMBED, 0, bp->dpos, 0);
        float *dWp = wgrad(bp, -1, CX_W_POS_EMBED);
        for (int64_t n = 0; n < N && dWp; n++) {
            int64_t b = n / T, t = n % T, p = bp->pos_id ? bp->pos_id[n] : t;
            if (r->attention_mask && !r->attention_mask[b * T + t]) continue; /* padding read zeros, not W_pos */
            cx_add_into(dWp + p * D, bp->dpos + n * D, (size_t)D);
        }
    }
    if (r->input) return CIRCUITS_OK;
    BFIRE(-1, HK_EMBED, 0, bp->dres, 0);
    float *dWE = wgrad(bp, -1, CX_W_EMBED);
    for (int64_t n = 0; n < N && dWE; n++) cx_add_into(dWE + (int64_t)tok[n] * D, bp->dres + n * D, (size_t)D);
    return CIRCUITS_OK;
}

/* ---- memory: the tape and the gradient buffers, one block ---- */

/* The shape of point p's firing f in this run (ln1 on per-head inputs: the query input's firing 0
 * has n_heads heads, the key and value inputs' n_key_value_heads under use_split_qkv_input);
 * returns ndim. */
static int firing_shape(const circuits_context *ctx, const cx_hook_point *p, int64_t B, int64_t T, int f,
                        int64_t *shape, int32_t *head_axis)
{
    int nd = cx_hook_shape(ctx, p, B, T, 0, shape, head_axis);
    if (cx_split_heads(ctx) && (p->kind == HK_LN1_SCALE || p->kind == HK_LN1_NORMALIZED) && *head_axis == 2)
        shape[2] = f == 0 || !ctx->opts.use_split_qkv_input ? ctx->model->cfg.n_heads : ctx->model->cfg.n_key_value_heads;
    return nd;
}

static size_t firing_numel(const circuits_context *ctx, const cx_hook_point *p, int64_t B, int64_t T, int f)
{
    int64_t shape[CIRCUITS_MAX_DIMS];
    int32_t ha;
    int nd = firing_shape(ctx, p, B, T, f, shape, &ha);
    size_t n = 1;
    for (int d = 0; d < nd; d++)
        if (!cx_mul_size(n, (size_t)shape[d], &n)) return SIZE_MAX; /* prepare_memory refuses it */
    return n;
}

typedef struct slot {
    float **dst;
    size_t n;
} slot;

/* Sizes and carves the block: the tape's slots, then the buffers. */
static int prepare_memory(bpass *bp)
{
    circuits_context *ctx = bp->ctx;
    const circuits_config *c = &ctx->model->cfg;
    const cx_run *r = bp->r;
    size_t np = ctx->hooks.n_points;
    size_t N = (size_t)bp->N, D = (size_t)bp->D, H = (size_t)bp->H, M = (size_t)bp->M;
    size_t HD = H * (size_t)bp->dh, KD = (size_t)bp->KV * (size_t)bp->dh, T = (size_t)bp->T;
    size_t n_slots = 6 * np + 24, k = 0;
    slot *slots = cx_calloc(n_slots, sizeof *slots);
    if (!slots) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory sizing a gradient run");
    for (size_t i = 0; i < np; i++) {
        const cx_hook_point *p = &ctx->hooks.points[i];
        tape_point *tp = &bp->tape.pt[i];
        if (!cx_run_reaches(r, p)) continue;
        tp->firings = bp->split && (p->kind == HK_LN1_SCALE || p->kind == HK_LN1_NORMALIZED) ? 3 : 1;
        bool writes = cx_hook_may_write(ctx, r, p->layer, p->kind);
        bool post = needs_post(c, p->kind) || writes || (int32_t)i == bp->linear_idx;
        for (int f = 0; f < tp->firings; f++) {
            size_t n = firing_numel(ctx, p, bp->B, bp->T, f);
            tp->numel[f] = n;
            if (post) slots[k++] = (slot){&tp->post[f], n};
            if (writes) slots[k++] = (slot){&tp->pre[f], n};
        }
    }
    size_t big = bp->split ? H * D : D; /* split heads: per-head inputs [N, H, D] */
    size_t heads_d = bp->split || ctx->opts.use_attn_result ? H * D : 0; /* hook_result / one input's gradient */
    size_t rope = 0;
    if (c->positional_embedding_type == CIRCUITS_POS_ROTARY)
        rope = (r->attention_mask ? N : T) * (size_t)c->rotary_dim * (size_t)(1 + (c->rope_scaling == CIRCUITS_ROPE_LINEAR &&
                                                                             c->local_attn != CIRCUITS_LOCAL_ATTN_NONE));
    /* every product checked: [B, T] within n_ctx and addressable (check_grad_run) still lets
     * N * V or B * H * T * T overflow */
    bool ok = true;
    size_t nV, nD, nbig, nH, nHD, nKD, nS, nhd, nM, BH;
    ok &= cx_mul_size(N, (size_t)bp->V, &nV) && cx_mul_size(N, D, &nD) && cx_mul_size(N, big, &nbig);
    ok &= cx_mul_size(N, H, &nH) && cx_mul_size(N, HD, &nHD) && cx_mul_size(N, KD, &nKD);
    ok &= cx_mul_size((size_t)bp->B, H, &BH) && cx_mul_size(BH, T, &nS) && cx_mul_size(nS, T, &nS);
    ok &= cx_mul_size(N, heads_d, &nhd) && cx_mul_size(N, M, &nM);
    slot bufs[] = {
        {&bp->logits, nV}, {&bp->dlogits, nV}, {&bp->dres, nD}, {&bp->dpost, nD},
        {&bp->dbr, nD}, {&bp->dx, nbig}, {&bp->xin, nbig}, {&bp->dpos, nD}, {&bp->dscale, nH},
        {&bp->dq, nHD}, {&bp->dz, nHD}, {&bp->dk, nKD}, {&bp->dv, nKD},
        {&bp->dS, nS}, {&bp->dres_h, nhd}, {&bp->dmlp, nM}, {&bp->dmlp2, nM},
        {&bp->actg, nM}, {&bp->rope, rope},
        {&bp->pos_built, c->positional_embedding_type == CIRCUITS_POS_SHORTFORMER && r->input ? nD : 0},
    };
    for (size_t i = 0; i < CX_COUNT(bufs); i++) slots[k++] = bufs[i];
    size_t ids = r->attention_mask ? N : 0, total = ids;
    for (size_t i = 0; i < k && ok; i++) ok = total + slots[i].n >= total && (total += slots[i].n, true);
    ok = ok && total < SIZE_MAX / sizeof(float);
    if (!ok) {
        cx_free(slots);
        return cx_fail(CIRCUITS_E_RANGE, "%s: a gradient run of [%lld, %lld] needs more memory than can be addressed",
                       r->fn, (long long)bp->B, (long long)bp->T);
    }
    if (total > ctx->grad_floats) {
        cx_free(ctx->grad_scratch);
        ctx->grad_floats = 0;
        ctx->grad_scratch = cx_malloc(total * sizeof(float));
        if (!ctx->grad_scratch) {
            cx_free(slots);
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: a gradient run of [%lld, %lld] needs %zu MiB",
                           (long long)bp->B, (long long)bp->T, total * sizeof(float) >> 20);
        }
        ctx->grad_floats = total;
    }
    float *p = ctx->grad_scratch;
    for (size_t i = 0; i < k; i++) {
        *slots[i].dst = slots[i].n ? p : NULL;
        p += slots[i].n;
    }
    bp->pos_id = ids ? (int32_t *)p : NULL;
    cx_free(slots);
    memset(bp->dpos, 0, N * D * sizeof(float));
    return CIRCUITS_OK;
}

/* ---- the caches ---- */

/* Lays out the activation-and-gradient cache: every selected point the run reaches, in firing order,
 * its activation (with cache_activations) then name + "_grad" (not hook_tokens': ids have none). */
static int layout_cache(bpass *bp, float **act_dst)
{
    circuits_context *ctx = bp->ctx;
    const cx_grad_run *g = bp->g;
    size_t np = ctx->hooks.n_points, n = 0;
    cx_cache_spec *specs = cx_calloc(2 * np, sizeof *specs);
    float **data = cx_calloc(2 * np, sizeof *data);
    int32_t *owner = cx_calloc(2 * np, sizeof *owner);
    int rc = CIRCUITS_OK;
    if (!specs || !data || !owner) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory laying out a gradient cache");
    for (size_t i = 0; i < np && !rc; i++) {
        const cx_hook_point *p = &ctx->hooks.points[i];
        if (!g->sel[i] || !cx_run_reaches(bp->r, p)) continue;
        cx_cache_spec sp = {.name = p->name, .layer = p->layer};
        sp.ndim = cx_hook_shape(ctx, p, bp->B, bp->T, 0, sp.shape, &sp.head_axis);
        if (g->cache_activations) {
            owner[n] = (int32_t)i;
            specs[n++] = sp;
        }
        if (p->kind != HK_TOKENS) {
            /* the gradient of the last backward firing: the query input's for ln1 on per-head inputs */
            firing_shape(ctx, p, bp->B, bp->T, 0, sp.shape, &sp.head_axis);
            sp.suffix = "_grad";
            owner[n] = -1 - (int32_t)i;
            specs[n++] = sp;
        }
    }
    if (!rc) rc = cx_cache_layout(g->cache, specs, n, data);
    for (size_t e = 0; e < n && !rc; e++) {
        if (owner[e] >= 0) {
            act_dst[owner[e]] = data[e];
            continue;
        }
        size_t i = (size_t)(-1 - owner[e]);
        bp->gdst[i] = data[e];
        memset(data[e], 0, firing_numel(ctx, &ctx->hooks.points[i], bp->B, bp->T, 0) * sizeof(float));
    }
    cx_free(specs);
    cx_free(data);
    cx_free(owner);
    return rc;
}

/* Lays out the weight-gradient cache (every weight of the model under its TL name, zeroed) and
 * points bp->gw at its entries. */
static int layout_weight_grads(bpass *bp)
{
    const circuits_model *m = bp->ctx->model;
    const circuits_config *c = &m->cfg;
    size_t n = cx_weight_list(c, NULL), k = 0;
    cx_weight_entry *e = cx_calloc(n ? n : 1, sizeof *e);
    cx_cache_spec *specs = cx_calloc(n ? n : 1, sizeof *specs);
    float **data = cx_calloc(n ? n : 1, sizeof *data);
    int rc = CIRCUITS_OK;
    if (!e || !specs || !data) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory laying out weight gradients");
    if (!rc) cx_weight_list(c, e);
    size_t *which = (size_t *)cx_calloc(n ? n : 1, sizeof *which);
    if (!rc && !which) rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory laying out weight gradients");
    for (size_t i = 0; i < n && !rc; i++) {
        const circuits_tensor *w = cx_model_find_weight(m, e[i].name);
        if (!w) continue;
        specs[k] = (cx_cache_spec){.name = w->name, .layer = e[i].layer, .head_axis = w->head_axis, .ndim = w->ndim};
        memcpy(specs[k].shape, w->shape, (size_t)w->ndim * sizeof(int64_t));
        which[k++] = i;
    }
    if (!rc) rc = cx_cache_layout(bp->g->weight_grads, specs, k, data);
    for (size_t j = 0; j < k && !rc; j++) {
        const cx_weight_entry *we = &e[which[j]];
        size_t numel = 1;
        for (int d = 0; d < specs[j].ndim; d++) numel *= (size_t)specs[j].shape[d];
        memset(data[j], 0, numel * sizeof(float));
        bp->gw[(size_t)(we->layer + 1) * CX_W_COUNT + we->kind] = data[j];
    }
    cx_free(e);
    cx_free(specs);
    cx_free(data);
    cx_free(which);
    return rc;
}

/* ---- the run ---- */

/* True if the run may compute the logits only where the metric reads them (one position per row:
 * LOGIT_DIFF, LOGIT, PROB, LOG_PROB), as patching does: no logits asked for, and nothing reads,
 * edits or caches unembed.hook_out. The unembedding is a third of GPT-2 small's forward, and as
 * much again of its backward. */
static bool sparse_logits(const bpass *bp, const circuits_metric *mm)
{
    const circuits_context *ctx = bp->ctx;
    const cx_run *r = &bp->g->fwd;
    if (mm->kind != CIRCUITS_METRIC_LOGIT_DIFF && mm->kind != CIRCUITS_METRIC_LOGIT &&
        mm->kind != CIRCUITS_METRIC_PROB && mm->kind != CIRCUITS_METRIC_LOG_PROB)
        return false;
    int32_t i = cx_hook_index(&ctx->hooks, -1, HK_UNEMBED_OUT);
    return !r->out && (i < 0 || (!cx_hook_watched(ctx, r, -1, HK_UNEMBED_OUT) && ctx->hooks.points[i].n_bregs == 0 &&
                                 !(bp->gdst && bp->gdst[i])));
}


/* The checks a gradient run makes before anything runs. */
static int check_grad_run(bpass *bp, circuits_metric *mm)
{
    circuits_context *ctx = bp->ctx;
    const cx_grad_run *g = bp->g;
    const cx_run *r = &g->fwd;
    const char *fn = r->fn;
    const circuits_model *m = ctx->model;
    if (m->stored)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: gradients need fp32 weights, and this model keeps some in their "
                       "stored dtype (keep_stored_dtype); load it without that option", fn);
    if (r->kv) return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: a gradient run does not continue a KV cache", fn);
    if (r->positions)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: a gradient run computes the logits at every position "
                       "(logit_positions is refused)", fn);
    if (r->stop_at_layer)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: a gradient run goes to the logits (stop_at_layer is refused)", fn);
    if (r->batch < 1 || r->pos < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: tokens shape [%lld, %lld]: batch and pos must be at least 1", fn,
                       (long long)r->batch, (long long)r->pos);
    /* before prepare_memory sizes the run by [B, T] (the forward checks these only after) */
    if (r->pos > m->cfg.n_ctx)
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld positions exceed the model's n_ctx = %d", fn, (long long)r->pos,
                       m->cfg.n_ctx);
    if (r->batch > (int64_t)(SIZE_MAX / sizeof(float)) / r->pos)
        return cx_fail(CIRCUITS_E_RANGE, "%s: a gradient run of [%lld, %lld] needs more memory than can be addressed",
                       fn, (long long)r->batch, (long long)r->pos);
    if (g->edit_grad != CIRCUITS_EDIT_GRAD_REPLACE && g->edit_grad != CIRCUITS_EDIT_GRAD_THROUGH)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: edit_grad %d is neither CIRCUITS_EDIT_GRAD_REPLACE (0) nor "
                       "CIRCUITS_EDIT_GRAD_THROUGH (1)", fn, g->edit_grad);
    if (g->metric.size == 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the metric is not set", fn);
    int rc = cx_metric_check(&g->metric, mm, r->batch, r->pos, m->cfg.d_vocab_out, fn);
    if (rc) return rc;
    if (mm->kind == CIRCUITS_METRIC_CALLBACK)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: a CALLBACK metric has no gradient; use "
                       "CIRCUITS_METRIC_GRAD_CALLBACK, whose grad_fn returns d metric / d logits", fn);
    bp->linear_idx = -1;
    if (mm->kind == CIRCUITS_METRIC_HOOK_LINEAR) {
        int32_t found;
        if ((rc = cx_hook_one(ctx, fn, mm->hook, &found))) return rc;
        const cx_hook_point *p = &ctx->hooks.points[found];
        if (p->kind == HK_TOKENS || !cx_run_reaches(r, p) ||
            (bp->split && (p->kind == HK_LN1_SCALE || p->kind == HK_LN1_NORMALIZED)))
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: the HOOK_LINEAR metric cannot read '%s' (token ids, a "
                           "point this run does not reach, or ln1 fired once per head input)", fn, p->name);
        bp->linear_idx = found;
    }
    return CIRCUITS_OK;
}

/* The run, once check_grad_run has passed (mm: the metric it checked). */
static int run_grad(bpass *bp, circuits_metric mm)
{
    circuits_context *ctx = bp->ctx;
    cx_grad_run *g = (cx_grad_run *)bp->g;
    const circuits_config *c = &ctx->model->cfg;
    int rc;
    size_t np = ctx->hooks.n_points;
    /* one allocation: the tape's records [np], act_dst [np], gdst [np], gw */
    size_t n_gw = (size_t)(c->n_layers + 1) * CX_W_COUNT;
    void *tables = cx_calloc(1, np * (sizeof(tape_point) + 2 * sizeof(float *)) + n_gw * sizeof(float *));
    int64_t *lpos = NULL; /* sparse logits: the positions computed and each row's among them [2 * B] */
    if (!tables) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory starting a gradient run");
    bp->tape.pt = tables;
    float **act_dst = (float **)(bp->tape.pt + np);
    bp->gdst = g->cache ? act_dst + np : NULL;
    bp->gw = g->weight_grads ? act_dst + 2 * np : NULL;
    cx_run fwd = g->fwd;
    fwd.tape = &bp->tape;
    fwd.held = true;
    bp->r = &fwd;
    if ((rc = prepare_memory(bp))) goto done;
    if (g->cache && (rc = layout_cache(bp, act_dst))) goto done;
    if (g->cache && g->cache_activations) fwd.cache_dst = act_dst;
    if (g->weight_grads && (rc = layout_weight_grads(bp))) goto done;
    fwd.out = bp->logits;
    circuits_metric on_rows = mm; /* the metric of the logits as computed */
    int64_t T_logits = bp->T;
    if (sparse_logits(bp, &mm)) { /* B is bounded now: prepare_memory sized [B, T, V] */
        lpos = cx_malloc(2 * (size_t)bp->B * sizeof *lpos);
        if (!lpos) {
            rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory: the logit positions of %lld rows", (long long)bp->B);
            goto done;
        }
        int64_t *rowpos = lpos + bp->B;
        bp->n_lpos = cx_metric_positions(&mm, bp->B, bp->T, lpos);
        for (int64_t b = 0; b < bp->B; b++) {
            int64_t p = cx_metric_row_pos(&mm, b, bp->T), k = 0;
            while (lpos[k] != p) k++;
            rowpos[b] = k;
        }
        bp->lpos = fwd.positions = lpos;
        fwd.n_positions = bp->n_lpos;
        on_rows.positions = rowpos;
        T_logits = bp->n_lpos;
    }
    if ((rc = cx_context_run(ctx, &fwd))) goto done;
    if (bp->pos_id) cx_position_ids(fwd.attention_mask, bp->T, bp->B, bp->T, 0, bp->pos_id);
    float value = 0.0f;
    /* from here the grad_fn and the backward hooks run on this memory: take_run_memory refuses */
    ctx->in_pass = true;
    rc = cx_metric_grad(&on_rows, bp->logits, bp->B, T_logits, bp->V, &value, bp->dlogits, fwd.fn);
    ctx->in_pass = false;
    if (rc) goto done;
    if (bp->linear_idx >= 0) {
        const float *a = bp->tape.pt[bp->linear_idx].post[0];
        size_t n = firing_numel(ctx, &ctx->hooks.points[bp->linear_idx], bp->B, bp->T, 0);
        double acc = 0.0;
        for (size_t i = 0; i < n; i++) acc += (double)a[i] * (double)mm.direction[i];
        value = (float)acc;
    }
    bp->g = g;
    ctx->in_pass = true;
    rc = backward_pass(bp);
    ctx->in_pass = false;
    if (rc) goto done;
    if (g->value) *g->value = value;
    if (g->fwd.out) memcpy(g->fwd.out, bp->logits, (size_t)(bp->N * bp->V) * sizeof(float));
done:
    cx_free(lpos);
    cx_free(tables);
    return rc;
}

int cx_backward(circuits_context *ctx, cx_grad_run *g)
{
    const circuits_config *c = &ctx->model->cfg;
    const char *fn = g->fwd.fn;
    bpass bp = {.ctx = ctx, .g = g, .B = g->fwd.batch, .T = g->fwd.pos, .D = c->d_model, .H = c->n_heads,
                .KV = c->n_key_value_heads, .dh = c->d_head, .M = c->d_mlp, .V = c->d_vocab_out,
                .split = cx_split_heads(ctx)};
    bp.N = (int64_t)((uint64_t)bp.B * (uint64_t)bp.T); /* used once check_grad_run bounds it */
    int rc;
    if (g->cache && g->cache == g->weight_grads)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: cache and weight_grads must be two caches", fn);
    if (ctx->n_saes)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: gradients through attached SAEs are not implemented (detach them: "
                       "circuits_context_remove_sae)", fn);
    if (!g->fwd.held && (rc = cx_context_enter(ctx, fn))) return rc;
    circuits_metric mm; /* refused before the run starts: the caches untouched */
    if ((rc = check_grad_run(&bp, &mm))) goto leave;
    if (g->cache && (rc = cx_cache_begin(g->cache, fn))) goto leave;
    if (g->weight_grads && (rc = cx_cache_begin(g->weight_grads, fn))) {
        if (g->cache) cx_cache_end(g->cache, CIRCUITS_OK); /* refused before the run: cache untouched */
        goto leave;
    }
    rc = run_grad(&bp, mm);
    if (g->cache) cx_cache_end(g->cache, rc);
    if (g->weight_grads) cx_cache_end(g->weight_grads, rc);
leave:
    if (!g->fwd.held) cx_context_leave(ctx);
    return rc;
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
    g.edit_grad = CIRCUITS_EDIT_GRAD_REPLACE;
    return g;
}

static int select_mark(const circuits_context *ctx, size_t i, void *arg)
{
    (void)ctx;
    ((bool *)arg)[i] = true;
    return CIRCUITS_OK;
}

int circuits_context_backward(circuits_context *ctx, const circuits_backward_options *opts, const int32_t *tokens,
                              int64_t batch, int64_t pos, const circuits_metric *metric, float *value, float *logits,
                              circuits_cache *cache, circuits_cache *weight_grads)
{
    static const char fn[] = "circuits_context_backward";
    if (!ctx) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx is NULL", fn);
    if (!metric) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: metric is NULL", fn);
    circuits_backward_options o;
    circuits_backward_options_init(&o);
    static const size_t versions[] = {sizeof(circuits_backward_options)}; /* 0.7 */
    int rc = opts ? cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn) : CIRCUITS_OK;
    if (rc) return rc;
    if (o.n_filter && !o.names_filter) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: names_filter is NULL", fn);
    if (o.cache_activations != 0 && o.cache_activations != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: cache_activations is %d: 0 or 1", fn, o.cache_activations);
    if (o.weight_grads != 0 && o.weight_grads != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: weight_grads is %d: 0 or 1", fn, o.weight_grads);
    if (o.weight_grads && !weight_grads)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: weight_grads = 1 needs a weight_grads cache", fn);
    cx_grad_run g = cx_grad_run_init(ctx, fn, tokens, batch, pos, NULL);
    if (o.run && (rc = cx_run_from_options(ctx, fn, o.run, tokens, batch, pos, &g.fwd))) return rc;
    /* the caller's metric copied by its size (a 0.5 caller's struct is shorter) and checked */
    if ((rc = cx_metric_check(metric, &g.metric, batch, pos, ctx->model->cfg.d_vocab_out, fn))) return rc;
    g.edit_grad = o.edit_grad;
    g.cache = cache;
    g.cache_activations = o.cache_activations != 0;
    g.weight_grads = o.weight_grads ? weight_grads : NULL;
    g.input_grad = o.input_grad;
    g.value = value;
    g.fwd.out = logits;
    bool *sel = NULL;
    if (cache) {
        sel = cx_calloc(ctx->hooks.n_points ? ctx->hooks.n_points : 1, sizeof *sel);
        if (!sel) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory selecting hook points");
        for (size_t f = 0; f < o.n_filter && !rc; f++) {
            if (!o.names_filter[f]) rc = cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: names_filter[%zu] is NULL", fn, f);
            else rc = cx_hooks_select(ctx, o.names_filter[f], select_mark, sel);
        }
        if (!o.n_filter)
            for (size_t i = 0; i < ctx->hooks.n_points; i++) sel[i] = true;
        g.sel = sel;
    }
    if (!rc) rc = cx_backward(ctx, &g);
    cx_free(sel);
    return rc;
}
