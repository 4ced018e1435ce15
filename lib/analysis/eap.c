/* Edge attribution patching (Syed et al. 2023) and EAP-IG (Hanna et al. 2024) over the graph of
 * hannamw/EAP-IG (TransformerLens): upstream nodes are the embeddings (the residual stream block 0
 * starts from), every head's output (hook_result) and every MLP's output (hook_mlp_out); downstream
 * nodes every head's query / key / value input (hook_q_input etc.: k and v per key-value head, as
 * TransformerLens's hooks are), every MLP's input (hook_mlp_in) and the logits (the last block's
 * resid_post, ln_final's input). The residual stream a downstream node reads is the sum of its
 * upstream nodes' outputs (and constants), so the first-order effect of replacing u's clean output
 * by its corrupted one on v's input alone is (a_u(corrupted) - a_u(clean)) . g_v.
 *
 * Per-head input gradients need TransformerLens's optional hook points: as EAP implementations
 * set use_split_qkv_input, use_attn_result and use_hook_mlp_in on the model, the runs here go
 * through an internal context of ctx's model with those set (the caller's context need not have
 * them, and its hooks do not fire: the scores are the model's, not a hooked run's). ctx's guard is
 * held throughout, so a metric callback cannot run ctx mid-way.
 *
 * EAP: one gradient run of the clean tokens. EAP-IG: N gradient runs from the residual stream
 * block 0 starts from, interpolated from the corrupted run's (alpha 0) to the clean run's (alpha 1)
 * at the midpoints alpha_k = (k + 0.5) / N (hannamw/EAP-IG takes k / N, k = 0 .. N-1: the left
 * ends; the midpoint rule's error falls as 1/N^2, the left end's as 1/N, and N = 1 is the gradient
 * half-way), the gradients averaged. */
#include "backward.h"
#include "kernels.h"
#include "metric.h"

#include <stdio.h>
#include <string.h>

/* The graph of a model: counts and index maps (docs/gradients.md gives the order). */
typedef struct graph {
    int64_t L, H, K, M; /* layers, heads, key-value heads, 1 with MLPs else 0 */
    bool parallel;
    int64_t up_per, down_per; /* nodes per layer: H + M upstream, H + 2K + M downstream */
    int64_t n_up, n_down;
} graph;

static graph graph_of(const circuits_model *m)
{
    const circuits_config *c = &m->cfg;
    graph g = {c->n_layers, c->n_heads, c->n_key_value_heads, c->attn_only ? 0 : 1, c->parallel_attn_mlp != 0, 0, 0,
               0, 0};
    g.up_per = g.H + g.M;
    g.down_per = g.H + 2 * g.K + g.M;
    g.n_up = 1 + g.L * g.up_per;
    g.n_down = g.L * g.down_per + 1;
    return g;
}

/* Upstream node u: its layer (-1: input) and head (-1: the MLP or input). */
static void up_node(const graph *g, int64_t u, int64_t *layer, int64_t *head)
{
    if (u == 0) {
        *layer = -1;
        *head = -1;
        return;
    }
    *layer = (u - 1) / g->up_per;
    int64_t r = (u - 1) % g->up_per;
    *head = r < g->H ? r : -1;
}

/* Downstream node v: its layer (L: logits), input letter ('q', 'k', 'v', 'm' or 'l') and head. */
static void down_node(const graph *g, int64_t v, int64_t *layer, char *what, int64_t *head)
{
    *layer = v / g->down_per;
    int64_t r = v % g->down_per;
    *head = -1;
    if (*layer == g->L) *what = 'l';
    else if (r < g->H) *what = 'q', *head = r;
    else if (r < g->H + g->K) *what = 'k', *head = r - g->H;
    else if (r < g->H + 2 * g->K) *what = 'v', *head = r - g->H - g->K;
    else *what = 'm';
}

/* An edge u -> v runs if u's output is in v's input: u before v's layer, or a head of v's own
 * layer into its MLP (sequential blocks only). */
static bool has_edge(const graph *g, int64_t u, int64_t v)
{
    int64_t lu, hu, lv, hv;
    char w;
    up_node(g, u, &lu, &hu);
    down_node(g, v, &lv, &w, &hv);
    return lu < lv || (w == 'm' && lu == lv && hu >= 0 && !g->parallel);
}

void circuits_eap_options_init(circuits_eap_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

int circuits_eap_graph(const circuits_model *model, int64_t *n_upstream, int64_t *n_downstream)
{
    if (!model || !n_upstream || !n_downstream)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "circuits_eap_graph: model, n_upstream and n_downstream must not be NULL");
    graph g = graph_of(model);
    *n_upstream = g.n_up;
    *n_downstream = g.n_down;
    return CIRCUITS_OK;
}

int circuits_eap_node_name(const circuits_model *model, int32_t downstream, int64_t index, char *buf, size_t buf_size)
{
    const char *fn = "circuits_eap_node_name";
    if (!model || !buf) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: model and buf must not be NULL", fn);
    if (downstream != 0 && downstream != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: downstream must be 0 or 1 (got %d)", fn, downstream);
    graph g = graph_of(model);
    int64_t n = downstream ? g.n_down : g.n_up;
    if (index < 0 || index >= n)
        return cx_fail(CIRCUITS_E_RANGE, "%s: %s node %lld out of range [0, %lld)", fn,
                       downstream ? "downstream" : "upstream", (long long)index, (long long)n);
    char name[64];
    int64_t l, h;
    if (!downstream) {
        up_node(&g, index, &l, &h);
        if (l < 0) snprintf(name, sizeof name, "input");
        else if (h >= 0) snprintf(name, sizeof name, "a%lld.h%lld", (long long)l, (long long)h);
        else snprintf(name, sizeof name, "m%lld", (long long)l);
    } else {
        char w;
        down_node(&g, index, &l, &w, &h);
        if (w == 'l') snprintf(name, sizeof name, "logits");
        else if (w == 'm') snprintf(name, sizeof name, "m%lld", (long long)l);
        else snprintf(name, sizeof name, "a%lld.h%lld<%c>", (long long)l, (long long)h, w);
    }
    size_t len = strlen(name);
    if (len + 1 > buf_size)
        return cx_fail(CIRCUITS_E_RANGE, "%s: buf_size %zu is too small for '%s' (%zu bytes)", fn, buf_size, name,
                       len + 1);
    memcpy(buf, name, len + 1);
    return CIRCUITS_OK;
}

/* The state of one edge attribution. The upstream differences diff[BTD * n_up] laid out per point:
 * input [B, T, D] at 0, block l's hook_result [B, T, H, D] at BTD (1 + l up_per), its mlp_out
 * [B, T, D] after; a gradient run's downstream gradients are read from its cache (grad[n_down]:
 * each node's point's entry). */
typedef struct eap {
    const char *fn;
    circuits_context *ictx;
    graph g;
    int64_t B, T, D, BT;
    float *diff;          /* the corrupted run's upstream activations, then minus the clean run's */
    float *in0, *in1;     /* [B, T, D] EAP-IG: the corrupted and clean residual streams into block 0 */
    float *input;         /* [B, T, D] EAP-IG: an interpolated one */
    float **dst;          /* [n_points] cache destinations of the corrupted forward */
    bool *sel;            /* [n_points] the downstream points */
    const float **grad;   /* [n_points] a gradient run's cached gradients (downstream points) */
    circuits_cache *cache;
    float *U, *G;         /* [n_up, D], [n_down, D]: one position's rows */
} eap;

static void eap_free(eap *e)
{
    cx_free(e->diff);
    cx_free(e->in0);
    cx_free(e->in1);
    cx_free(e->input);
    cx_free(e->dst);
    cx_free(e->sel);
    cx_free(e->grad);
    cx_free(e->U);
    cx_free(e->G);
    circuits_cache_free(e->cache);
    circuits_context_free(e->ictx);
}

static int point(const eap *e, int32_t layer, cx_hook_kind kind)
{
    return cx_hook_index(&e->ictx->hooks, layer, kind);
}

/* Where upstream point (layer, kind)'s activation [B, T, ...] lies in diff. */
static float *diff_of(const eap *e, int32_t layer, cx_hook_kind kind)
{
    size_t BTD = (size_t)(e->BT * e->D);
    if (kind == HK_RESID_PRE) return e->diff;
    float *at = e->diff + BTD * (size_t)(1 + layer * e->g.up_per);
    return kind == HK_RESULT ? at : at + BTD * (size_t)e->g.H;
}

/* A reader (an editor that writes nothing) of the clean run's upstream points: subtracts the
 * activation from the corrupted one's in diff; block 0's input is kept for EAP-IG. */
typedef struct reader {
    float *to;
    float *copy; /* or NULL */
} reader;

static int subtract(const circuits_tensor *t, void *user)
{
    const reader *r = user;
    size_t n = (size_t)(t->shape[0] * t->strides[0]);
    for (size_t i = 0; i < n; i++) r->to[i] -= t->data[i];
    if (r->copy) memcpy(r->copy, t->data, n * sizeof(float));
    return CIRCUITS_HOOK_CONTINUE;
}

/* diff = the corrupted run's upstream activations (cached) - the clean run's (readers). */
static int upstream_runs(eap *e, const int32_t *clean, const int32_t *corrupted)
{
    const graph *g = &e->g;
    int32_t L = (int32_t)g->L, n = 0;
    cx_edit *edits = cx_malloc((size_t)(1 + 2 * L) * sizeof *edits);
    reader *rd = cx_malloc((size_t)(1 + 2 * L) * sizeof *rd);
    if (!edits || !rd) {
        cx_free(edits);
        cx_free(rd);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", e->fn);
    }
    for (int32_t l = -1; l < L; l++)
        for (int k = 0; k < 2; k++) {
            cx_hook_kind kind = l < 0 ? HK_RESID_PRE : k == 0 ? HK_RESULT : HK_MLP_OUT;
            if ((l < 0 && k == 1) || (kind == HK_MLP_OUT && !g->M)) continue;
            int32_t layer = l < 0 ? 0 : l;
            e->dst[point(e, layer, kind)] = diff_of(e, layer, kind);
            rd[n] = (reader){diff_of(e, layer, kind), l < 0 ? e->in1 : NULL};
            edits[n] = (cx_edit){layer, kind, subtract, &rd[n], false, 0};
            n++;
        }
    cx_run r = cx_run_init(e->ictx, e->fn, corrupted, e->B, e->T);
    r.cache_dst = e->dst;
    int rc = cx_context_run(e->ictx, &r);
    if (!rc && e->in0) memcpy(e->in0, e->diff, (size_t)(e->BT * e->D) * sizeof(float));
    if (!rc) {
        r = cx_run_init(e->ictx, e->fn, clean, e->B, e->T);
        r.edits = edits;
        r.n_edits = (size_t)n;
        rc = cx_context_run(e->ictx, &r);
    }
    cx_free(edits);
    cx_free(rd);
    return rc;
}

/* Row of upstream node u (downstream v) at flat position bt, in diff (in the gradient run's
 * cache). */
static const float *up_row(const eap *e, int64_t u, int64_t bt)
{
    int64_t l, h;
    up_node(&e->g, u, &l, &h);
    if (l < 0) return diff_of(e, 0, HK_RESID_PRE) + bt * e->D;
    if (h >= 0) return diff_of(e, (int32_t)l, HK_RESULT) + (bt * e->g.H + h) * e->D;
    return diff_of(e, (int32_t)l, HK_MLP_OUT) + bt * e->D;
}

static const float *down_row(const eap *e, int64_t v, int64_t bt)
{
    const graph *g = &e->g;
    int64_t l, h;
    char w;
    down_node(g, v, &l, &w, &h);
    int32_t L = (int32_t)l;
    switch (w) {
    case 'q': return e->grad[point(e, L, HK_Q_INPUT)] + (bt * g->H + h) * e->D;
    case 'k': return e->grad[point(e, L, HK_K_INPUT)] + (bt * g->K + h) * e->D;
    case 'v': return e->grad[point(e, L, HK_V_INPUT)] + (bt * g->K + h) * e->D;
    case 'm': return e->grad[point(e, L, HK_MLP_IN)] + bt * e->D;
    default: return e->grad[point(e, (int32_t)g->L - 1, HK_RESID_POST)] + bt * e->D; /* logits */
    }
}

/* One gradient run (from tokens, or from e->input when tokens is NULL), then scores += scale *
 * sum over positions of U_bt G_bt^T (one GEMM per position) with its gradients. */
static int gradient_run(eap *e, const int32_t *tokens, const circuits_metric *metric, float scale, float *scores)
{
    const graph *g = &e->g;
    cx_grad_run r = cx_grad_run_init(e->ictx, e->fn, tokens, e->B, e->T, metric);
    if (!tokens) r.fwd.input = e->input;
    r.sel = e->sel;
    r.cache = e->cache;
    r.cache_activations = false;
    int rc = cx_backward(e->ictx, &r);
    const cx_hook_table *t = &e->ictx->hooks;
    for (size_t i = 0; i < t->n_points && !rc; i++) {
        if (!e->sel[i]) continue;
        char name[160];
        snprintf(name, sizeof name, "%s_grad", t->points[i].name);
        circuits_tensor gt;
        if (!(rc = circuits_cache_get(e->cache, name, &gt))) e->grad[i] = gt.data;
    }
    if (rc) return rc;
    size_t rowb = (size_t)e->D * sizeof(float);
    for (int64_t bt = 0; bt < e->BT; bt++) {
        for (int64_t u = 0; u < g->n_up; u++) memcpy(e->U + u * e->D, up_row(e, u, bt), rowb);
        for (int64_t v = 0; v < g->n_down; v++) memcpy(e->G + v * e->D, down_row(e, v, bt), rowb);
        cx_sgemm(false, true, g->n_up, g->n_down, e->D, scale, e->U, e->D, e->G, e->D, 1.0f, scores, g->n_down);
    }
    return CIRCUITS_OK;
}

int circuits_context_edge_attribution(circuits_context *ctx, const int32_t *clean, const int32_t *corrupted,
                                      int64_t batch, int64_t pos, const circuits_metric *metric,
                                      const circuits_eap_options *opts, float *scores)
{
    const char *fn = "circuits_context_edge_attribution";
    if (!ctx || !clean || !corrupted || !metric || !scores)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ctx, clean, corrupted, metric and scores must not be NULL",
                       fn);
    if (ctx->n_saes)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: edge attribution with attached SAEs is not implemented (detach "
                       "them: circuits_context_remove_sae)", fn);
    circuits_eap_options o;
    circuits_eap_options_init(&o);
    static const size_t versions[] = {sizeof(circuits_eap_options)}; /* 0.7 */
    int rc;
    if (opts && (rc = cx_options_copy(&o, opts, versions, CX_COUNT(versions), fn))) return rc;
    if (o.ig_steps < 0)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: ig_steps %d < 0 (0: EAP, N > 0: EAP-IG)", fn, o.ig_steps);
    const circuits_config *c = &ctx->model->cfg;
    int shape_rc = cx_tokens_shape_check(c, batch, pos, fn);
    if (shape_rc) return shape_rc;
    /* the upstream activations [n_up, B, T, D] must be addressable (B * T and the sizes below
     * would overflow) */
    graph gr = graph_of(ctx->model);
    if (batch > (int64_t)(SIZE_MAX / sizeof(float) / (size_t)pos / (size_t)c->d_model / (size_t)gr.n_up))
        return cx_fail(CIRCUITS_E_RANGE, "%s: batch %lld: the activations of %lld upstream nodes need more memory than "
                       "can be addressed", fn, (long long)batch, (long long)gr.n_up);
    /* the caller's metric copied by its size and checked before any run */
    circuits_metric pm;
    if ((rc = cx_metric_check(metric, &pm, batch, pos, c->d_vocab_out, fn))) return rc;
    metric = &pm;
    if ((rc = cx_context_enter(ctx, fn))) return rc;
    eap e = {.fn = fn, .g = gr, .B = batch, .T = pos, .D = c->d_model, .BT = batch * pos};
    circuits_context_options co = ctx->opts;
    co.use_attn_result = 1;
    co.use_split_qkv_input = 1;
    co.use_attn_in = 0;
    co.use_hook_mlp_in = e.g.M ? 1 : 0;
    if ((rc = circuits_context_create(&e.ictx, ctx->model, &co))) goto done;
    size_t BTD = (size_t)(e.BT * e.D), np = e.ictx->hooks.n_points;
    bool ig = o.ig_steps > 0;
    e.diff = cx_malloc(BTD * (size_t)e.g.n_up * sizeof(float));
    if (ig) {
        e.in0 = cx_malloc(BTD * sizeof(float));
        e.in1 = cx_malloc(BTD * sizeof(float));
        e.input = cx_malloc(BTD * sizeof(float));
    }
    e.dst = cx_calloc(np, sizeof *e.dst);
    e.sel = cx_calloc(np, sizeof *e.sel);
    e.grad = cx_calloc(np, sizeof *e.grad);
    e.U = cx_malloc((size_t)(e.g.n_up * e.D) * sizeof(float));
    e.G = cx_malloc((size_t)(e.g.n_down * e.D) * sizeof(float));
    if (!e.diff || (ig && (!e.in0 || !e.in1 || !e.input)) || !e.dst || !e.sel || !e.grad || !e.U || !e.G) {
        rc = cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory for the activations of %lld upstream nodes", fn,
                     (long long)e.g.n_up);
        goto done;
    }
    if ((rc = circuits_cache_create(&e.cache))) goto done;
    for (int32_t l = 0; l < e.g.L; l++) {
        e.sel[point(&e, l, HK_Q_INPUT)] = e.sel[point(&e, l, HK_K_INPUT)] = e.sel[point(&e, l, HK_V_INPUT)] = true;
        if (e.g.M) e.sel[point(&e, l, HK_MLP_IN)] = true;
    }
    e.sel[point(&e, (int32_t)e.g.L - 1, HK_RESID_POST)] = true;
    if ((rc = upstream_runs(&e, clean, corrupted))) goto done;
    memset(scores, 0, (size_t)(e.g.n_up * e.g.n_down) * sizeof(float));
    if (!ig) {
        rc = gradient_run(&e, clean, metric, 1.0f, scores);
    } else {
        /* the residual stream into block 0 at corrupted + alpha (clean - corrupted) */
        for (int32_t k = 0; k < o.ig_steps && !rc; k++) {
            float alpha = (float)((k + 0.5) / o.ig_steps);
            for (size_t i = 0; i < BTD; i++) e.input[i] = e.in0[i] + alpha * (e.in1[i] - e.in0[i]);
            rc = gradient_run(&e, NULL, metric, 1.0f / (float)o.ig_steps, scores);
        }
    }
    if (rc) goto done;
    for (int64_t u = 0; u < e.g.n_up; u++)
        for (int64_t v = 0; v < e.g.n_down; v++)
            if (!has_edge(&e.g, u, v)) scores[u * e.g.n_down + v] = 0.0f;
done:
    eap_free(&e);
    cx_context_leave(ctx);
    return rc;
}

/* Edge order of the top list: larger |score| first, ties by the lower upstream, then downstream
 * index (the flat index, row-major). */
static bool before(const float *s, int64_t i, int64_t j)
{
    float a = s[i] < 0 ? -s[i] : s[i], b = s[j] < 0 ? -s[j] : s[j];
    return a > b || (a == b && i < j);
}

int circuits_eap_top_edges(const float *scores, int64_t n_upstream, int64_t n_downstream, int64_t k,
                           int64_t *upstream, int64_t *downstream, float *top_scores)
{
    const char *fn = "circuits_eap_top_edges";
    if (!scores || !upstream || !downstream || !top_scores)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: scores, upstream, downstream and top_scores must not be NULL",
                       fn);
    if (n_upstream < 1 || n_downstream < 1)
        return cx_fail(CIRCUITS_E_SHAPE, "%s: scores shape [%lld, %lld]: both must be at least 1", fn,
                       (long long)n_upstream, (long long)n_downstream);
    if (n_downstream > INT64_MAX / n_upstream)
        return cx_fail(CIRCUITS_E_RANGE, "%s: scores shape [%lld, %lld]: too many edges", fn, (long long)n_upstream,
                       (long long)n_downstream);
    int64_t n = n_upstream * n_downstream;
    if (k < 0 || k > n)
        return cx_fail(CIRCUITS_E_RANGE, "%s: k %lld out of range [0, %lld] (the number of edges)", fn, (long long)k,
                       (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (scores[i] != scores[i])
            return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: scores[%lld] is NaN", fn, (long long)i);
    /* a binary heap of the k best so far, the worst of them at the root */
    int64_t *heap = cx_malloc((size_t)(k > 0 ? k : 1) * sizeof *heap), m = 0;
    if (!heap) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", fn);
    for (int64_t i = 0; i < n && k > 0; i++) {
        if (m == k && !before(scores, i, heap[0])) continue;
        int64_t at;
        if (m < k) { /* sift up from the end */
            at = m++;
            while (at > 0 && before(scores, heap[(at - 1) / 2], i)) {
                heap[at] = heap[(at - 1) / 2];
                at = (at - 1) / 2;
            }
        } else { /* replace the root, sift down */
            at = 0;
            for (;;) {
                int64_t c = 2 * at + 1;
                if (c >= m) break;
                if (c + 1 < m && before(scores, heap[c], heap[c + 1])) c++;
                if (!before(scores, i, heap[c])) break;
                heap[at] = heap[c];
                at = c;
            }
        }
        heap[at] = i;
    }
    /* pop worst-first into the back of the outputs */
    for (int64_t r = m - 1; r >= 0; r--) {
        int64_t top = heap[0], last = heap[--m], at = 0;
        for (;;) {
            int64_t c = 2 * at + 1;
            if (c >= m) break;
            if (c + 1 < m && before(scores, heap[c], heap[c + 1])) c++;
            if (!before(scores, last, heap[c])) break;
            heap[at] = heap[c];
            at = c;
        }
        if (m > 0) heap[at] = last;
        upstream[r] = top / n_downstream;
        downstream[r] = top % n_downstream;
        top_scores[r] = scores[top];
    }
    cx_free(heap);
    return CIRCUITS_OK;
}
