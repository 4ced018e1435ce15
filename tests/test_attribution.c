/* Attribution patching (lib/analysis/attribute.c), edge attribution patching (eap.c) and
 * integrated gradients (ig.c):
 *  - against TransformerLens and torch autograd (tests/reference/attribution/,
 *    generate_attribution.py): attribution-patching grids of several kinds, EAP and EAP-IG (3
 *    steps) edge scores, IG at hook_embed and its completeness on five cases (GPT-2, LayerNorm +
 *    GELU, GQA + rotary + RMSNorm, attention-only, parallel blocks), within 1e-4 of each reference's
 *    scale (max |reference|; the largest error is printed);
 *  - against activation patching: a source a small step from the base activation, where the two
 *    agree to first order (the error shrinks with the step: checked at two steps);
 *  - EAP and EAP-IG with one step against scores computed here from circuits_context_backward's
 *    gradient cache (the clean run; the run from the midpoint residual stream);
 *  - IG: completeness shrinks with the steps; on a HOOK_LINEAR metric at the same point the
 *    attributions are (a - a0) * direction;
 *  - the top-edges order, the graph's node names, and every refusal (docs/errors.md,
 *    "Gradients"). */
#define TESTUTIL_API_HELPERS
#include "catalogue.h"
#include "reference_get.h"

#include <math.h>

enum { B = 2, T = 5 };

static const char *REF_DIR;
static double worst_attr, worst_eap, worst_ig, worst_direct;

/* max |a - b| / max(|b|) over n values; checks it against tol and records it in *worst. */
static void compare(const char *what, const char *cs, const float *a, const float *b, size_t n, double tol,
                    double *worst)
{
    double d = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    double rel = d / fmax(scale, 1e-30);
    CHECK(rel <= tol, "%s %s: max |diff| %.3g, scale %.3g (relative %.3g > %.3g)", cs, what, d, scale, rel, tol);
    if (worst && rel > *worst) *worst = rel;
}

static const struct {
    int32_t kind;
    const char *tl;   /* the reference key attr.<tl> */
    const char *hook; /* the point, per layer */
} KINDS[] = {
    {CIRCUITS_PATCH_RESID_PRE, "resid_pre", "blocks.%d.hook_resid_pre"},
    {CIRCUITS_PATCH_ATTN_OUT, "attn_out", "blocks.%d.hook_attn_out"},
    {CIRCUITS_PATCH_MLP_OUT, "mlp_out", "blocks.%d.hook_mlp_out"},
    {CIRCUITS_PATCH_HEAD_Z_BY_POS, "attn_head_out_by_pos", "blocks.%d.attn.hook_z"},
    {CIRCUITS_PATCH_HEAD_K_BY_POS, "attn_head_k_by_pos", "blocks.%d.attn.hook_k"},
    {CIRCUITS_PATCH_HEAD_V_ALL_POS, "attn_head_v_all_pos", "blocks.%d.attn.hook_v"},
    {CIRCUITS_PATCH_HEAD_PATTERN_BY_POS, "attn_head_pattern_by_pos", "blocks.%d.attn.hook_pattern"},
    {CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC, "attn_head_pattern_dest_src_pos", "blocks.%d.attn.hook_pattern"},
    {CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS, "attn_head_pattern_all_pos", "blocks.%d.attn.hook_pattern"},
};

static size_t grid_numel(const circuits_model *m, int32_t kind)
{
    int64_t shape[4];
    int32_t nd;
    CHECK_OK(circuits_patch_grid_shape(m, kind, T, shape, &nd));
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)shape[i];
    return n;
}

/* src[l]: the cached point of block l. */
static void per_layer(const circuits_cache *cache, const char *fmt, int L, const float **src)
{
    for (int l = 0; l < L; l++) {
        char name[96];
        circuits_tensor t;
        snprintf(name, sizeof name, fmt, l);
        CHECK_OK(circuits_cache_get(cache, name, &t));
        src[l] = t.data;
    }
}

static void test_case(const char *cs)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.safetensors", REF_DIR, cs);
    if (cx_st_open_file(&ref, path)) {
        fprintf(stderr, "cannot open %s: %s\n", path, circuits_last_error());
        exit(2);
    }
    circuits_model *m = load_case(cs);
    circuits_config c = config_of(m);
    circuits_context *ctx = make_ctx(m, 0);
    const int32_t *clean = (const int32_t *)get("clean_tokens")->data,
                  *corrupted = (const int32_t *)get("corrupted_tokens")->data;
    circuits_metric ld;
    circuits_metric_init(&ld);
    ld.answer = (const int32_t *)get("answer")->data;
    ld.wrong = (const int32_t *)get("wrong")->data;
    circuits_cache *cc;
    CHECK_OK(circuits_cache_create(&cc));
    CHECK_OK(circuits_context_run_with_cache(ctx, corrupted, B, T, NULL, 0, cc, NULL, NULL, NULL));

    /* attribution patching, noising: base = clean, source = corrupted */
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        char key[96];
        snprintf(key, sizeof key, "attr.%s", KINDS[k].tl);
        const cx_st_tensor *want = cx_st_find(ref, key);
        if (!want) continue; /* mlp_out of attention-only */
        const float *src[8];
        per_layer(cc, KINDS[k].hook, c.n_layers, src);
        size_t n = grid_numel(m, KINDS[k].kind);
        CHECK(n == want->numel, "%s %s: %zu cells, TL %zu", cs, key, n, want->numel);
        float out[512], value = 0;
        if (n != want->numel || n > 512) continue;
        CHECK_OK(circuits_context_attribution_patch(ctx, KINDS[k].kind, clean, B, T, src, &ld, &value, out));
        compare(key, cs, out, (const float *)want->data, n, 1e-4, &worst_attr);
        compare("value", cs, &value, (const float *)get("value")->data, 1, 1e-5, &worst_attr);
    }

    /* EAP, EAP-IG */
    int64_t nu, nd;
    CHECK_OK(circuits_eap_graph(m, &nu, &nd));
    const cx_st_tensor *we = get("eap"), *wig = get("eap_ig3");
    CHECK((size_t)(nu * nd) == we->numel, "%s: graph %lld x %lld, TL %zu edges", cs, (long long)nu, (long long)nd,
          we->numel);
    if ((size_t)(nu * nd) == we->numel) {
        float *s = malloc((size_t)(nu * nd) * sizeof(float));
        CHECK_OK(circuits_context_edge_attribution(ctx, clean, corrupted, B, T, &ld, NULL, s));
        compare("eap", cs, s, (const float *)we->data, (size_t)(nu * nd), 1e-4, &worst_eap);
        circuits_eap_options o;
        circuits_eap_options_init(&o);
        o.ig_steps = 3;
        CHECK_OK(circuits_context_edge_attribution(ctx, clean, corrupted, B, T, &ld, &o, s));
        compare("eap_ig3", cs, s, (const float *)wig->data, (size_t)(nu * nd), 1e-4, &worst_eap);
        free(s);
    }

    /* IG at hook_embed, baseline zeros */
    const cx_st_tensor *wa = get("ig.embed");
    float *attr = malloc(wa->numel * sizeof(float)), comp = 0;
    CHECK_OK(circuits_context_integrated_gradients(ctx, "hook_embed", clean, NULL, B, T, 4, &ld, attr, &comp));
    compare("ig.embed", cs, attr, (const float *)wa->data, wa->numel, 1e-4, &worst_ig);
    double cw = ((const float *)get("ig.embed.completeness")->data)[0], f = ((const float *)get("value")->data)[0];
    CHECK(fabs(comp - cw) <= 1e-4 * fmax(1.0, fabs(f)), "%s: IG completeness %.6g, TL %.6g", cs, comp, cw);
    free(attr);

    circuits_cache_free(cc);
    circuits_context_free(ctx);
    circuits_model_free(m);
    cx_st_close(ref);
    ref = NULL;
}

/* ---- attribution patching against activation patching: source = base + eps * noise ---- */

static double first_order_error(circuits_context *ctx, const circuits_model *m, int32_t kind, const char *fmt,
                                const int32_t *tok, const circuits_metric *ld, float eps)
{
    circuits_config c = config_of(m);
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, NULL, NULL, NULL));
    const float *base[8];
    float *src[8];
    per_layer(cache, fmt, c.n_layers, base);
    char name[96];
    snprintf(name, sizeof name, fmt, 0);
    circuits_tensor t;
    CHECK_OK(circuits_cache_get(cache, name, &t));
    size_t numel = 1;
    for (int i = 0; i < t.ndim; i++) numel *= (size_t)t.shape[i];
    uint32_t s = 12345;
    for (int l = 0; l < c.n_layers; l++) {
        src[l] = malloc(numel * sizeof(float));
        for (size_t i = 0; i < numel; i++) {
            s = s * 1664525u + 1013904223u;
            src[l][i] = base[l][i] + eps * ((float)(s >> 8) / 16777216.0f - 0.5f);
        }
    }
    size_t n = grid_numel(m, kind);
    float attr[512], patched[512], value = 0;
    CHECK_OK(circuits_context_attribution_patch(ctx, kind, tok, B, T, (const float *const *)src, ld, &value, attr));
    CHECK_OK(circuits_context_activation_patch(ctx, kind, tok, B, T, (const float *const *)src, ld, NULL, patched));
    double err = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs(attr[i] - (patched[i] - value)));
        scale = fmax(scale, fabs(attr[i]));
    }
    for (int l = 0; l < c.n_layers; l++) free(src[l]);
    circuits_cache_free(cache);
    return err / scale;
}

static void test_against_activation_patching(void)
{
    circuits_model *m = load_case("tl_2l_lnpre_gelu");
    circuits_context *ctx = make_ctx(m, 0);
    int32_t tok[B * T] = {3, 14, 15, 9, 2, 6, 5, 35, 8, 9};
    int32_t ans[B] = {1, 2}, wr[B] = {3, 4};
    circuits_metric ld;
    circuits_metric_init(&ld);
    ld.answer = ans;
    ld.wrong = wr;
    const struct {
        int32_t kind;
        const char *fmt;
    } K[] = {{CIRCUITS_PATCH_RESID_PRE, "blocks.%d.hook_resid_pre"},
             {CIRCUITS_PATCH_HEAD_Z_BY_POS, "blocks.%d.attn.hook_z"},
             {CIRCUITS_PATCH_HEAD_V_ALL_POS, "blocks.%d.attn.hook_v"}};
    for (size_t k = 0; k < sizeof K / sizeof K[0]; k++) {
        double e1 = first_order_error(ctx, m, K[k].kind, K[k].fmt, tok, &ld, 0.08f);
        double e2 = first_order_error(ctx, m, K[k].kind, K[k].fmt, tok, &ld, 0.02f);
        printf("attribution vs activation patching, kind %d: relative error %.3g (step 0.08), %.3g (step 0.02)\n",
               K[k].kind, e1, e2);
        CHECK(e2 < 0.05, "kind %d: attribution differs from activation patching by %.3g of its scale", K[k].kind, e2);
        CHECK(e2 < 0.6 * e1, "kind %d: the first-order error does not shrink with the step (%.3g -> %.3g)", K[k].kind,
              e1, e2);
    }
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* ---- EAP against the gradient cache ---- */

/* Scores from circuits_context_backward's cache in a context with the EAP hook points: upstream
 * differences from two run_with_cache, gradients of a run from `input` (NULL: the clean tokens). */
static void eap_direct(const circuits_model *m, const int32_t *clean, const int32_t *corrupted,
                       const circuits_metric *ld, bool midpoint, float *scores)
{
    circuits_config c = config_of(m);
    int L = c.n_layers, H = c.n_heads, K = c.n_key_value_heads, D = c.d_model, M = c.attn_only ? 0 : 1;
    circuits_context_options o;
    circuits_context_options_init(&o);
    o.use_attn_result = o.use_split_qkv_input = 1;
    o.use_hook_mlp_in = M;
    circuits_context *ctx;
    CHECK_OK(circuits_context_create(&ctx, m, &o));
    circuits_cache *ca, *cb, *g;
    CHECK_OK(circuits_cache_create(&ca));
    CHECK_OK(circuits_cache_create(&cb));
    CHECK_OK(circuits_cache_create(&g));
    CHECK_OK(circuits_context_run_with_cache(ctx, corrupted, B, T, NULL, 0, ca, NULL, NULL, NULL));
    CHECK_OK(circuits_context_run_with_cache(ctx, clean, B, T, NULL, 0, cb, NULL, NULL, NULL));
    circuits_tensor x0, x1, t;
    CHECK_OK(circuits_cache_get(ca, "blocks.0.hook_resid_pre", &x0));
    CHECK_OK(circuits_cache_get(cb, "blocks.0.hook_resid_pre", &x1));
    size_t BTD = (size_t)B * T * D;
    float *mid = malloc(BTD * sizeof(float));
    for (size_t i = 0; i < BTD; i++) mid[i] = x0.data[i] + 0.5f * (x1.data[i] - x0.data[i]);
    circuits_run_options ro;
    circuits_run_options_init(&ro);
    ro.start_at_layer = 0;
    ro.input = mid;
    circuits_backward_options bo;
    circuits_backward_options_init(&bo);
    bo.cache_activations = 0;
    bo.run = midpoint ? &ro : NULL;
    CHECK_OK(circuits_context_backward(ctx, &bo, midpoint ? NULL : clean, B, T, ld, NULL, NULL, g, NULL));
    /* rows [B*T, D] of every node: upstream differences, downstream gradients */
    int64_t nu, nd;
    CHECK_OK(circuits_eap_graph(m, &nu, &nd));
    float **U = calloc((size_t)nu, sizeof *U), **G = calloc((size_t)nd, sizeof *G);
    int64_t ustride[64], gstride[64];
    char name[96];
    for (int64_t u = 0; u < nu; u++) {
        char node[32];
        CHECK_OK(circuits_eap_node_name(m, 0, u, node, sizeof node));
        int l = 0, h = -1;
        if (strcmp(node, "input") == 0) snprintf(name, sizeof name, "blocks.0.hook_resid_pre");
        else if (sscanf(node, "a%d.h%d", &l, &h) == 2) snprintf(name, sizeof name, "blocks.%d.attn.hook_result", l);
        else sscanf(node, "m%d", &l), snprintf(name, sizeof name, "blocks.%d.hook_mlp_out", l);
        circuits_tensor a, b;
        CHECK_OK(circuits_cache_get(ca, name, &a));
        CHECK_OK(circuits_cache_get(cb, name, &b));
        int64_t hs = h >= 0 ? H : 1;
        U[u] = malloc(BTD * sizeof(float));
        for (size_t r = 0; r < (size_t)B * T; r++)
            for (int d = 0; d < D; d++) {
                size_t at = (r * hs + (h >= 0 ? h : 0)) * D + d;
                U[u][r * D + d] = a.data[at] - b.data[at];
            }
        ustride[u] = hs;
    }
    for (int64_t v = 0; v < nd; v++) {
        char node[32], w = 0;
        CHECK_OK(circuits_eap_node_name(m, 1, v, node, sizeof node));
        int l = 0, h = -1;
        int64_t hs = 1;
        if (strcmp(node, "logits") == 0) snprintf(name, sizeof name, "blocks.%d.hook_resid_post_grad", L - 1);
        else if (sscanf(node, "a%d.h%d<%c>", &l, &h, &w) == 3) {
            snprintf(name, sizeof name, "blocks.%d.hook_%c_input_grad", l, w);
            hs = w == 'q' ? H : K;
        } else sscanf(node, "m%d", &l), snprintf(name, sizeof name, "blocks.%d.hook_mlp_in_grad", l);
        CHECK_OK(circuits_cache_get(g, name, &t));
        G[v] = malloc(BTD * sizeof(float));
        for (size_t r = 0; r < (size_t)B * T; r++)
            for (int d = 0; d < D; d++) G[v][r * D + d] = t.data[(r * hs + (h >= 0 ? h : 0)) * D + d];
        gstride[v] = hs;
    }
    (void)ustride;
    (void)gstride;
    /* edges: an upstream node's layer before the downstream's, or a head into its own layer's MLP */
    for (int64_t u = 0; u < nu; u++)
        for (int64_t v = 0; v < nd; v++) {
            char un[32], vn[32];
            circuits_eap_node_name(m, 0, u, un, sizeof un);
            circuits_eap_node_name(m, 1, v, vn, sizeof vn);
            int lu = -1, lv = L;
            if (un[0] != 'i') sscanf(un + 1, "%d", &lu);
            if (vn[0] != 'l') sscanf(vn + 1, "%d", &lv);
            bool edge = lu < lv || (vn[0] == 'm' && un[0] == 'a' && lu == lv && !c.parallel_attn_mlp);
            double s = 0;
            for (size_t i = 0; i < BTD && edge; i++) s += (double)U[u][i] * G[v][i];
            scores[u * nd + v] = (float)s;
        }
    for (int64_t u = 0; u < nu; u++) free(U[u]);
    for (int64_t v = 0; v < nd; v++) free(G[v]);
    free(U);
    free(G);
    free(mid);
    circuits_cache_free(ca);
    circuits_cache_free(cb);
    circuits_cache_free(g);
    circuits_context_free(ctx);
}

static void test_eap_direct(const char *cs)
{
    circuits_model *m = load_case(cs);
    circuits_config c = config_of(m);
    circuits_context *ctx = make_ctx(m, 0);
    int32_t clean[B * T], corrupted[B * T];
    make_tokens(clean, B * T, c.d_vocab, 7);
    memcpy(corrupted, clean, sizeof clean);
    corrupted[2] = (corrupted[2] + 1) % c.d_vocab;
    corrupted[T + 1] = (corrupted[T + 1] + 3) % c.d_vocab;
    int32_t ans[B] = {1, 2}, wr[B] = {3, 4};
    circuits_metric ld;
    circuits_metric_init(&ld);
    ld.answer = ans;
    ld.wrong = wr;
    int64_t nu, nd;
    CHECK_OK(circuits_eap_graph(m, &nu, &nd));
    float *s = malloc((size_t)(nu * nd) * sizeof(float)), *want = malloc((size_t)(nu * nd) * sizeof(float));
    eap_direct(m, clean, corrupted, &ld, false, want);
    CHECK_OK(circuits_context_edge_attribution(ctx, clean, corrupted, B, T, &ld, NULL, s));
    compare("eap vs gradient cache", cs, s, want, (size_t)(nu * nd), 1e-5, &worst_direct);
    eap_direct(m, clean, corrupted, &ld, true, want);
    circuits_eap_options o;
    circuits_eap_options_init(&o);
    o.ig_steps = 1;
    CHECK_OK(circuits_context_edge_attribution(ctx, clean, corrupted, B, T, &ld, &o, s));
    compare("eap-ig 1 step vs gradient cache at the midpoint", cs, s, want, (size_t)(nu * nd), 1e-5, &worst_direct);
    free(s);
    free(want);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* ---- integrated gradients ---- */

static void test_ig(void)
{
    circuits_model *m = load_case("tl_2l_lnpre_gelu");
    circuits_config c = config_of(m);
    circuits_context *ctx = make_ctx(m, 0);
    int32_t tok[B * T], base[B * T];
    make_tokens(tok, B * T, c.d_vocab, 11);
    make_tokens(base, B * T, c.d_vocab, 12);
    int32_t ans[B] = {1, 2}, wr[B] = {3, 4};
    circuits_metric ld;
    circuits_metric_init(&ld);
    ld.answer = ans;
    ld.wrong = wr;
    size_t n = (size_t)B * T * c.d_model;
    float *attr = malloc(n * sizeof(float));
    /* completeness shrinks as the steps grow (midpoint rule: about 1/steps^2) */
    const int steps[4] = {1, 4, 16, 64};
    float comp[4];
    for (int i = 0; i < 4; i++)
        CHECK_OK(circuits_context_integrated_gradients(ctx, "blocks.1.hook_resid_pre", tok, base, B, T, steps[i], &ld,
                                                       attr, &comp[i]));
    printf("IG completeness at blocks.1.hook_resid_pre: %.3g (1 step), %.3g (4), %.3g (16), %.3g (64)\n", comp[0],
           comp[1], comp[2], comp[3]);
    CHECK(fabsf(comp[3]) < fabsf(comp[2]) && fabsf(comp[2]) < fabsf(comp[0]) && fabsf(comp[3]) <= 2e-4,
          "IG completeness does not shrink: %g %g %g %g", comp[0], comp[1], comp[2], comp[3]);
    /* a linear metric at the same point: the gradient is the direction, exactly */
    float *dir = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float)), *a0 = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) dir[i] = (float)((int)(i % 7) - 3) * 0.25f;
    circuits_metric lin;
    circuits_metric_init(&lin);
    lin.kind = CIRCUITS_METRIC_HOOK_LINEAR;
    lin.hook = "blocks.1.hook_resid_pre";
    lin.direction = dir;
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    circuits_tensor t;
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, NULL, NULL, NULL));
    CHECK_OK(circuits_cache_get(cache, "blocks.1.hook_resid_pre", &t));
    memcpy(a, t.data, n * sizeof(float));
    CHECK_OK(circuits_context_run_with_cache(ctx, base, B, T, NULL, 0, cache, NULL, NULL, NULL));
    CHECK_OK(circuits_cache_get(cache, "blocks.1.hook_resid_pre", &t));
    memcpy(a0, t.data, n * sizeof(float));
    CHECK_OK(circuits_context_integrated_gradients(ctx, "resid_pre1", tok, base, B, T, 3, &lin, attr, &comp[0]));
    double err = 0;
    for (size_t i = 0; i < n; i++) err = fmax(err, fabs(attr[i] - (a[i] - a0[i]) * dir[i]));
    CHECK(err <= 1e-6, "IG of a linear metric: max |attr - (a - a0) * direction| = %.3g", err);
    CHECK(fabsf(comp[0]) <= 1e-3, "IG of a linear metric: completeness %.3g", comp[0]);
    circuits_cache_free(cache);
    /* at hook_attn_scores the causally masked entries are -inf in a and in a0: they stay masked
     * on the whole path (their difference was NaN, the editor wrote NaN scores, and every
     * attribution and the completeness were NaN); with the zero baseline the masked entries'
     * gradient is 0 on the path and their attribution 0 */
    size_t ns = (size_t)B * c.n_heads * T * T;
    float *sattr = malloc(ns * sizeof(float));
    for (int zero = 0; zero < 2; zero++)
        for (int i = 0; i < 4; i += 3) {
            CHECK_OK(circuits_context_integrated_gradients(ctx, "blocks.1.attn.hook_attn_scores", tok, zero ? NULL : base,
                                                           B, T, steps[i], &ld, sattr, &comp[i]));
            size_t bad = 0;
            double sum = 0.0;
            for (size_t j = 0; j < ns; j++) bad += !isfinite(sattr[j]), sum += fabs(sattr[j]);
            CHECK(bad == 0 && isfinite(comp[i]) && sum > 0.0, "IG at attn_scores (%s baseline, %d steps): %zu "
                  "non-finite attributions, completeness %g, sum |.| %g", zero ? "zero" : "token", steps[i], bad,
                  comp[i], sum);
            for (int b = 0; b < B && !zero; b++) /* masked (key after query): 0 */
                for (int64_t h = 0; h < c.n_heads; h++)
                    for (int q = 0; q < T; q++)
                        for (int k = q + 1; k < T; k++)
                            CHECK(sattr[((b * c.n_heads + h) * T + q) * T + k] == 0.0f, "masked score attribution");
        }
    CHECK(fabsf(comp[3]) < fabsf(comp[0]) || fabsf(comp[3]) <= 1e-5f, "IG completeness at attn_scores: %g (1 step), "
          "%g (64)", comp[0], comp[3]);
    free(sattr);
    free(dir);
    free(a);
    free(a0);
    free(attr);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* ---- the graph and the top edges ---- */

static void test_graph(void)
{
    circuits_model *m = load_case("tl_gqa_rotary_rms");
    circuits_config c = config_of(m);
    int64_t nu, nd;
    CHECK_OK(circuits_eap_graph(m, &nu, &nd));
    int64_t H = c.n_heads, K = c.n_key_value_heads, L = c.n_layers;
    CHECK(nu == 1 + L * (H + 1) && nd == L * (H + 2 * K + 1) + 1, "graph %lld x %lld", (long long)nu, (long long)nd);
    char buf[32];
    CHECK_OK(circuits_eap_node_name(m, 0, 0, buf, sizeof buf));
    CHECK(strcmp(buf, "input") == 0, "upstream 0: %s", buf);
    CHECK_OK(circuits_eap_node_name(m, 0, 2, buf, sizeof buf));
    CHECK(strcmp(buf, "a0.h1") == 0, "upstream 2: %s", buf);
    CHECK_OK(circuits_eap_node_name(m, 0, 1 + H, buf, sizeof buf));
    CHECK(strcmp(buf, "m0") == 0, "upstream 1 + H: %s", buf);
    CHECK_OK(circuits_eap_node_name(m, 1, H + 1, buf, sizeof buf));
    CHECK(strcmp(buf, "a0.h1<k>") == 0, "downstream H + 1: %s", buf);
    CHECK_OK(circuits_eap_node_name(m, 1, H + K, buf, sizeof buf));
    CHECK(strcmp(buf, "a0.h0<v>") == 0, "downstream H + K: %s", buf);
    CHECK_OK(circuits_eap_node_name(m, 1, nd - 1, buf, sizeof buf));
    CHECK(strcmp(buf, "logits") == 0, "downstream last: %s", buf);
    circuits_model_free(m);
    m = load_case("tl_attn_only_2l_none");
    c = config_of(m);
    CHECK_OK(circuits_eap_graph(m, &nu, &nd));
    CHECK(nu == 1 + c.n_layers * c.n_heads && nd == c.n_layers * 3 * c.n_heads + 1,
          "attention-only graph %lld x %lld", (long long)nu, (long long)nd);
    CHECK_OK(circuits_eap_node_name(m, 0, 1 + c.n_heads, buf, sizeof buf));
    CHECK(strcmp(buf, "a1.h0") == 0, "attention-only upstream 1 + H: %s", buf);
    circuits_model_free(m);

    /* top edges: |score| descending, ties by upstream then downstream index */
    const float s[3 * 4] = {0.5f, -2.0f, 0.0f, 1.0f, /**/ -1.0f, 0.25f, 2.0f, 0.0f, /**/ 1.0f, -0.5f, 3.0f, -1.0f};
    int64_t up[12], down[12];
    float top[12];
    CHECK_OK(circuits_eap_top_edges(s, 3, 4, 12, up, down, top));
    const int64_t want_flat[12] = {10, 1, 6, 3, 4, 8, 11, 0, 9, 5, 2, 7};
    for (int i = 0; i < 12; i++)
        CHECK(up[i] * 4 + down[i] == want_flat[i] && top[i] == s[want_flat[i]], "top edge %d: (%lld, %lld) %g, want %lld",
              i, (long long)up[i], (long long)down[i], top[i], (long long)want_flat[i]);
    CHECK_OK(circuits_eap_top_edges(s, 3, 4, 3, up, down, top));
    CHECK(up[0] == 2 && down[0] == 2 && up[1] == 0 && down[1] == 1 && up[2] == 1 && down[2] == 2, "top 3 edges");
    /* many ties (scores in steps of 0.5), every k: the same order as a sort */
    enum { NU = 9, ND = 13 };
    float r[NU * ND];
    int64_t order[NU * ND], tu[NU * ND], td[NU * ND];
    float ts[NU * ND];
    uint32_t x = 99;
    for (int i = 0; i < NU * ND; i++) {
        x = x * 1664525u + 1013904223u;
        r[i] = (float)((int)(x >> 28) - 8) * 0.5f;
        order[i] = i;
    }
    for (int i = 1; i < NU * ND; i++) /* insertion sort by |score| descending, then index */
        for (int j = i; j > 0 && (fabsf(r[order[j]]) > fabsf(r[order[j - 1]])); j--) {
            int64_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int k = 0; k <= NU * ND; k += 7) {
        CHECK_OK(circuits_eap_top_edges(r, NU, ND, k, tu, td, ts));
        for (int i = 0; i < k; i++)
            CHECK(tu[i] * ND + td[i] == order[i] && ts[i] == r[order[i]], "k %d: top edge %d is %lld, want %lld", k, i,
                  (long long)(tu[i] * ND + td[i]), (long long)order[i]);
    }
}

/* ---- refusals ---- */

/* d metric / d logits[0, T - 1, 0]: a metric that reads no per-row arrays */
static int grad_last(const float *logits, int64_t b, int64_t t, int64_t v, float *value, float *grad, void *ud)
{
    (void)ud;
    *value = logits[(b * t - 1) * v];
    grad[(b * t - 1) * v] = 1.0f;
    return 0;
}

static void test_refusals(void)
{
    circuits_model *m = load_case("tl_attn_only_2l_none");
    circuits_context *ctx = make_ctx(m, 0);
    int32_t tok[B * T] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    float x[B * T * 64], out[4096];
    const float *src[2] = {x, x}, *one_null[2] = {x, NULL};
    circuits_metric ld;
    circuits_metric_init(&ld);
    int32_t ans[B] = {1, 2};
    ld.answer = ld.wrong = ans;
    CALL_FAILS("attr_null_argument", circuits_context_attribution_patch(ctx, 0, tok, B, T, src, NULL, NULL, out),
               CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("attr_unknown_kind", circuits_context_attribution_patch(ctx, 16, tok, B, T, src, &ld, NULL, out),
               CIRCUITS_E_INVALID_ARGUMENT, "unknown patch kind");
    CALL_FAILS("attr_no_such_hook",
               circuits_context_attribution_patch(ctx, CIRCUITS_PATCH_MLP_OUT, tok, B, T, src, &ld, NULL, out),
               CIRCUITS_E_NOT_FOUND, "no hook 'mlp_out'");
    CALL_FAILS("attr_source_null", circuits_context_attribution_patch(ctx, 0, tok, B, T, one_null, &ld, NULL, out),
               CIRCUITS_E_INVALID_ARGUMENT, "source[1]");
    CALL_FAILS("attr_bad_shape", circuits_context_attribution_patch(ctx, 0, tok, B, 0, src, &ld, NULL, out),
               CIRCUITS_E_SHAPE, "at least 1");
    circuits_metric bad = ld;
    int32_t bad_ans[B] = {1, 99};
    bad.answer = bad_ans;
    CALL_FAILS("attr_bad_metric", circuits_context_attribution_patch(ctx, 0, tok, B, T, src, &bad, NULL, out),
               CIRCUITS_E_RANGE, "answer[1] = 99");
    CALL_FAILS("eap_bad_metric", circuits_context_edge_attribution(ctx, tok, tok, B, T, &bad, NULL, out),
               CIRCUITS_E_RANGE, "answer[1] = 99");
    CALL_FAILS("ig_bad_metric", circuits_context_integrated_gradients(ctx, "hook_embed", tok, NULL, B, T, 4, &bad, out, NULL),
               CIRCUITS_E_RANGE, "answer[1] = 99");
    CALL_FAILS("attr_too_long", circuits_context_attribution_patch(ctx, 0, tok, 1, 33, src, &ld, NULL, out),
               CIRCUITS_E_RANGE, "n_ctx");

    circuits_eap_options o;
    circuits_eap_options_init(&o);
    o.ig_steps = -1;
    CALL_FAILS("eap_null_argument", circuits_context_edge_attribution(ctx, tok, NULL, B, T, &ld, NULL, out),
               CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("eap_bad_steps", circuits_context_edge_attribution(ctx, tok, tok, B, T, &ld, &o, out),
               CIRCUITS_E_INVALID_ARGUMENT, "ig_steps -1 < 0");
    o.ig_steps = 0;
    o.size = 3;
    CALL_FAILS("eap_bad_options_size", circuits_context_edge_attribution(ctx, tok, tok, B, T, &ld, &o, out),
               CIRCUITS_E_VERSION, "options size 3");
    CALL_FAILS("eap_bad_shape", circuits_context_edge_attribution(ctx, tok, tok, 0, T, &ld, NULL, out),
               CIRCUITS_E_SHAPE, "at least 1");
    CALL_FAILS("eap_too_long", circuits_context_edge_attribution(ctx, tok, tok, 1, 33, &ld, NULL, out),
               CIRCUITS_E_RANGE, "n_ctx");
    int64_t nu, nd;
    char buf[8];
    CALL_FAILS("eap_graph_null", circuits_eap_graph(m, NULL, &nd), CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CHECK_OK(circuits_eap_graph(m, &nu, &nd));
    CALL_FAILS("eap_node_null", circuits_eap_node_name(m, 0, 0, NULL, 8), CIRCUITS_E_INVALID_ARGUMENT,
               "must not be NULL");
    CALL_FAILS("eap_node_bad_side", circuits_eap_node_name(m, 2, 0, buf, sizeof buf), CIRCUITS_E_INVALID_ARGUMENT,
               "downstream must be 0 or 1");
    CALL_FAILS("eap_node_range", circuits_eap_node_name(m, 1, nd, buf, sizeof buf), CIRCUITS_E_RANGE,
               "out of range");
    CALL_FAILS("eap_node_buffer", circuits_eap_node_name(m, 1, nd - 1, buf, 3), CIRCUITS_E_RANGE, "too small");
    int64_t up[4], down[4];
    float top[4], sc[4] = {1, 2, NAN, 4};
    CALL_FAILS("eap_top_null", circuits_eap_top_edges(NULL, 2, 2, 1, up, down, top), CIRCUITS_E_INVALID_ARGUMENT,
               "must not be NULL");
    CALL_FAILS("eap_top_shape", circuits_eap_top_edges(sc, 0, 2, 1, up, down, top), CIRCUITS_E_SHAPE, "at least 1");
    CALL_FAILS("eap_top_k", circuits_eap_top_edges(sc, 2, 2, 5, up, down, top), CIRCUITS_E_RANGE,
               "the number of edges");
    CALL_FAILS("eap_top_nan", circuits_eap_top_edges(sc, 2, 2, 1, up, down, top), CIRCUITS_E_INVALID_ARGUMENT,
               "NaN");

    float comp;
    CALL_FAILS("ig_null_argument", circuits_context_integrated_gradients(ctx, NULL, tok, NULL, B, T, 4, &ld, out, &comp),
               CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("ig_bad_steps", circuits_context_integrated_gradients(ctx, "hook_embed", tok, NULL, B, T, 0, &ld, out, &comp),
               CIRCUITS_E_INVALID_ARGUMENT, "steps 0 < 1");
    CALL_FAILS("ig_unknown_hook", circuits_context_integrated_gradients(ctx, "blocks.0.hook_nope", tok, NULL, B, T, 4, &ld,
                                                                        out, &comp),
               CIRCUITS_E_NOT_FOUND, "hook_nope");
    CALL_FAILS("ig_several_hooks", circuits_context_integrated_gradients(ctx, "blocks.*.hook_resid_pre", tok, NULL, B, T,
                                                                         4, &ld, out, &comp),
               CIRCUITS_E_INVALID_ARGUMENT, "name exactly one");
    CALL_FAILS("ig_bad_shape", circuits_context_integrated_gradients(ctx, "hook_embed", tok, NULL, 0, T, 4, &ld, out, &comp),
               CIRCUITS_E_SHAPE, "at least 1");
    CALL_FAILS("ig_too_long", circuits_context_integrated_gradients(ctx, "hook_embed", tok, NULL, 1, 33, 4, &ld, out, &comp),
               CIRCUITS_E_RANGE, "n_ctx");

    /* circuits_context_backward checks [B, T] before it sizes the run (pos beyond n_ctx once sized a
     * [B, H, T, T] block before the forward refused it; batch * pos overflowed): the tokens array is
     * never read, the context still works after */
    circuits_metric gm;
    circuits_metric_init(&gm);
    gm.kind = CIRCUITS_METRIC_GRAD_CALLBACK;
    gm.grad_fn = grad_last;
    float v = 0.0f, v0 = 0.0f;
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, 1, T, &gm, &v0, NULL, NULL, NULL));
    CALL_FAILS("bwd_pos_over_n_ctx", circuits_context_backward(ctx, NULL, tok, 1, 100000000, &gm, &v, NULL, NULL, NULL),
               CIRCUITS_E_RANGE, "positions exceed the model's n_ctx");
    CALL_FAILS("bwd_batch_too_large", circuits_context_backward(ctx, NULL, tok, INT64_MAX, T, &gm, &v, NULL, NULL, NULL),
               CIRCUITS_E_RANGE, "needs more memory than can be addressed");
    CALL_FAILS("bwd_size_overflow", circuits_context_backward(ctx, NULL, tok, (int64_t)1 << 57, T, &gm, &v, NULL, NULL,
                                                              NULL),
               CIRCUITS_E_RANGE, "needs more memory than can be addressed");
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, 1, T, &gm, &v, NULL, NULL, NULL));
    CHECK(v == v0, "the context works after the refusals: %g vs %g", v, v0);
    CALL_FAILS("eap_batch_too_large", circuits_context_edge_attribution(ctx, tok, tok, (int64_t)1 << 56, T, &gm, NULL, out),
               CIRCUITS_E_RANGE, "need more memory than can be addressed");
    /* an edge count beyond int64: refused, not wrapped (the loop over n edges read past scores) */
    CALL_FAILS("eap_top_too_many", circuits_eap_top_edges(sc, (int64_t)1 << 32, (int64_t)1 << 32, 1, up, down, top),
               CIRCUITS_E_RANGE, "too many edges");
    circuits_context_free(ctx);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CASES_DIR ATTRIBUTION_REFERENCE_DIR [-v]\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    REF_DIR = argv[2];
    cat_verbose = argc > 3 && strcmp(argv[3], "-v") == 0;
    test_refusals();
    test_graph();
    test_case("tl_2l_lnpre_gelu");
    test_case("tl_gqa_rotary_rms");
    test_case("tl_attn_only_2l_none");
    test_case("tl_parallel_ln");
    test_case("hf_tiny_random_gpt2");
    test_against_activation_patching();
    test_eap_direct("tl_2l_lnpre_gelu");
    test_eap_direct("tl_parallel_ln");
    test_ig();
    printf("largest |libcircuits - TL| / scale: attribution patching %.3g, EAP / EAP-IG %.3g, IG %.3g; "
           "|EAP - from the gradient cache| / scale: %.3g\n", worst_attr, worst_eap, worst_ig, worst_direct);
    return tu_finish("attribution");
}
