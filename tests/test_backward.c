/* The backward pass (lib/run/backward.c) against itself and the forward pass:
 *   - every hook point's gradient, on every reference case and with the optional hook points on,
 *     against central finite differences of the forward's metric along a random direction (the
 *     run repeated with a forward hook adding +-eps * u at that point; eps relative to the
 *     activation's size). A check of the whole chain, not of precision: float32 forwards give
 *     differences accurate to a few percent, so the bound is 0.1 of the directional derivative's
 *     scale; a wrong term (a sign, a missing path, a transposed product) is off by order 1. The
 *     precision proof is against PyTorch autograd through TransformerLens (test_grad_reference);
 *     each operation's backward is checked in double precision in test_grad_kernels.
 *   - backward hooks (read, edit, stop, fail), the edit rules, the cache and weight-gradient
 *     cache layouts, the HOOK_LINEAR metric, input_grad with start_at_layer, attention masks,
 *     and every refusal.
 * Usage: test_backward CASES_DIR [CASE ...]: with cases, only the finite-difference part on them. */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

#include <float.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static float rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng_state >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

typedef struct add_arg {
    const float *u;
    float eps;
} add_arg;

static int add_dir(const circuits_tensor *t, void *ud)
{
    const add_arg *a = ud;
    size_t n = numel(t);
    for (size_t i = 0; i < n; i++) t->data[i] += a->eps * a->u[i];
    return CIRCUITS_HOOK_CONTINUE;
}

static circuits_model *load_processed(const char *name)
{
    char p[4096];
    case_dir(p, sizeof p, name);
    circuits_model *m = NULL;
    if (circuits_model_load(&m, p, NULL) == CIRCUITS_OK) return m;
    circuits_load_options o; /* a gated MLP after a LayerNorm cannot be folded */
    circuits_load_options_init(&o);
    o.fold_ln = 0;
    if (circuits_model_load(&m, p, &o) != CIRCUITS_OK) {
        fprintf(stderr, "FATAL: cannot load %s: %s\n", p, circuits_last_error());
        exit(1);
    }
    return m;
}

/* The metric of a forward run with ctx's hooks (the mean loss, or the logit difference). */
static double metric_of(circuits_context *ctx, const circuits_metric *mt, const int32_t *tok, int64_t B, int64_t T,
                        const int32_t *mask, float *logits, int64_t V)
{
    circuits_run_options ro;
    circuits_run_options_init(&ro);
    ro.attention_mask = mask;
    CHECK_OK(circuits_context_run(ctx, &ro, tok, B, T, logits));
    float v = 0.0f;
    CHECK_OK(circuits_metric_eval(mt, logits, B, T, V, &v));
    return v;
}

/* Finite differences at every point of one case under context options `opts` ("s": split qkv
 * input, "a": attn_in, "r": attn_result, "m": mlp_in). Returns the worst relative error. */
static double fd_case(const char *name, const char *opts, bool masked, int kind)
{
    circuits_model *m = load_processed(name);
    circuits_config c = config_of(m);
    circuits_context_options co;
    circuits_context_options_init(&co);
    co.use_split_qkv_input = strchr(opts, 's') != NULL;
    co.use_attn_in = strchr(opts, 'a') != NULL;
    co.use_attn_result = strchr(opts, 'r') != NULL;
    co.use_hook_mlp_in = strchr(opts, 'm') != NULL && !c.attn_only;
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, &co));
    enum { B = 2, T = 6 };
    int32_t tok[B * T], mask[B * T], answer[B] = {1, 2}, wrong[B] = {3, 0};
    make_tokens(tok, B * T, c.d_vocab_out < c.d_vocab ? c.d_vocab_out : c.d_vocab, 7);
    for (int i = 0; i < B * T; i++) mask[i] = !(i / T == 1 && i % T < 2); /* row 1 left-padded by two */
    circuits_metric mt;
    circuits_metric_init(&mt);
    mt.kind = kind;
    mt.tokens = tok;
    mt.attention_mask = masked ? mask : NULL;
    mt.answer = answer;
    mt.wrong = wrong;
    circuits_run_options ro;
    circuits_run_options_init(&ro);
    ro.attention_mask = masked ? mask : NULL;
    circuits_backward_options bo;
    circuits_backward_options_init(&bo);
    bo.run = &ro;
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    float value = 0.0f;
    float *logits = malloc(sizeof(float) * B * T * (size_t)c.d_vocab_out);
    CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &mt, &value, NULL, cache, NULL));
    double plain = metric_of(ctx, &mt, tok, B, T, ro.attention_mask, logits, c.d_vocab_out);
    /* attention's causal path (nothing reads the pattern or scores: only the filtered points are
     * cached) gives what the whole-matrix path (every point cached, above) gives */
    {
        const char *few[] = {"hook_embed", "blocks.0.hook_resid_pre"};
        circuits_backward_options fo = bo;
        fo.names_filter = few;
        fo.n_filter = 2;
        circuits_cache *small = NULL;
        CHECK_OK(circuits_cache_create(&small));
        CHECK_OK(circuits_context_backward(ctx, &fo, tok, B, T, &mt, NULL, NULL, small, NULL));
        circuits_tensor full, part;
        CHECK_OK(circuits_cache_get(cache, "blocks.0.hook_resid_pre_grad", &full));
        CHECK_OK(circuits_cache_get(small, "blocks.0.hook_resid_pre_grad", &part));
        double scale = 0.0;
        for (size_t i = 0; i < numel(&full); i++) scale = fmax(scale, fabs(full.data[i]));
        double d = max_abs_diff(full.data, part.data, numel(&full));
        CHECK(d <= 1e-5 * scale + 1e-9, "%s [%s]: causal and whole-matrix attention backward differ by %g (scale %g)", name,
              opts, d, scale);
        circuits_cache_free(small);
    }
    CHECK(fabs(plain - value) <= 1e-5 * (1.0 + fabs(plain)), "%s: backward's value %g, forward's %g", name, value, plain);
    double worst = 0.0;
    const char *worst_at = "";
    for (size_t e = 0; e < circuits_cache_count(cache); e++) {
        circuits_tensor g, a;
        CHECK_OK(circuits_cache_at(cache, e, &g));
        size_t L = strlen(g.name);
        if (L < 6 || strcmp(g.name + L - 5, "_grad") != 0) continue;
        char point[256];
        snprintf(point, sizeof point, "%.*s", (int)(L - 5), g.name);
        /* ln1 on per-head inputs fires three times: one added direction cannot stand for one firing */
        if ((co.use_split_qkv_input || co.use_attn_in) && strstr(point, ".ln1.hook_")) continue;
        CHECK_OK(circuits_cache_get(cache, point, &a));
        size_t n = numel(&g), finite = 0;
        float *u = malloc(n * sizeof *u);
        double gu = 0.0, gg = 0.0, aa = 0.0;
        for (size_t i = 0; i < n; i++) {
            u[i] = rnd();
            if (!isfinite(a.data[i])) u[i] = 0.0f; /* masked scores stay -inf */
            gu += (double)g.data[i] * u[i];
            gg += (double)g.data[i] * g.data[i];
            if (isfinite(a.data[i])) aa += (double)a.data[i] * a.data[i], finite++;
        }
        double rms = finite ? sqrt(aa / (double)finite) : 1.0;
        float eps = (float)(1e-3 * (rms > 3e-2 ? rms : 3e-2));
        double f[2];
        for (int k = 0; k < 2; k++) {
            add_arg arg = {u, k ? -eps : eps};
            circuits_hook_id id;
            CHECK_OK(circuits_context_add_hook(ctx, point, add_dir, &arg, &id));
            f[k] = metric_of(ctx, &mt, tok, B, T, ro.attention_mask, logits, c.d_vocab_out);
            CHECK_OK(circuits_context_remove_hook(ctx, id));
        }
        double fd = (f[0] - f[1]) / (2.0 * eps);
        /* the scale: the derivative itself, or what float32 noise in the metric allows */
        double scale = fabs(gu) + 1e-3 * sqrt(gg * (double)n) + 2e-6 * (1.0 + fabs(plain)) / eps;
        double err = fabs(fd - gu) / scale;
        if (err > worst) worst = err, worst_at = g.name;
        CHECK(err <= 0.1, "%s [%s%s]: %s: <grad, u> = %.6e, finite difference %.6e (error %.3f of scale)", name, opts,
              masked ? " masked" : "", g.name, gu, fd, err);
        free(u);
    }
    printf("  %-28s %-4s %-7s %-10s worst %.2e at %s\n", name, opts, masked ? "masked" : "", kind == CIRCUITS_METRIC_LOSS ? "loss" : "logitdiff", worst, worst_at);
    free(logits);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
    return worst;
}

/* ---- semantics, on one small model ---- */

typedef struct hook_log {
    int calls;
    float factor;   /* edit: multiply by this (1: read only) */
    int ret;        /* return value */
    float *copy;    /* the gradient seen (first call) */
    size_t n;
    circuits_context *ctx; /* to call into from the callback */
    int inner_rc;
} hook_log;

static int bwd_hook(const circuits_tensor *t, void *ud)
{
    hook_log *h = ud;
    size_t n = numel(t);
    if (h->calls++ == 0 && h->copy) {
        memcpy(h->copy, t->data, (n < h->n ? n : h->n) * sizeof(float));
    }
    if (h->ctx) h->inner_rc = circuits_context_forward(h->ctx, NULL, 1, 1, NULL, NULL, NULL);
    for (size_t i = 0; i < n && h->factor != 1.0f; i++) t->data[i] *= h->factor;
    return h->ret;
}

static int zero_all(const circuits_tensor *t, void *ud)
{
    (void)ud;
    memset(t->data, 0, numel(t) * sizeof(float));
    return CIRCUITS_HOOK_CONTINUE;
}

static int add_const(const circuits_tensor *t, void *ud)
{
    (void)ud;
    size_t n = numel(t);
    for (size_t i = 0; i < n; i++) t->data[i] += 0.05f * (float)(i % 7);
    return CIRCUITS_HOOK_CONTINUE;
}

static int grad_cb(const float *logits, int64_t B, int64_t T, int64_t V, float *value, float *grad, void *ud)
{
    (void)ud;
    /* the mean over rows of the last position's first logit, times 2 */
    double v = 0.0;
    for (int64_t b = 0; b < B; b++) {
        v += 2.0 * logits[(b * T + T - 1) * V];
        grad[(b * T + T - 1) * V] = 2.0f / (float)B;
    }
    *value = (float)(v / (double)B);
    return 0;
}

static int value_cb(const float *logits, int64_t B, int64_t T, int64_t V, float *value, void *ud)
{
    (void)logits, (void)B, (void)T, (void)V, (void)ud;
    *value = 0.0f;
    return 0;
}

static const float *entry(const circuits_cache *c, const char *name)
{
    circuits_tensor t;
    int rc = circuits_cache_get(c, name, &t);
    CHECK(rc == CIRCUITS_OK, "cache entry %s: %s", name, circuits_last_error());
    return rc == CIRCUITS_OK ? t.data : NULL;
}

static size_t entry_n(const circuits_cache *c, const char *name)
{
    circuits_tensor t;
    return circuits_cache_get(c, name, &t) == CIRCUITS_OK ? numel(&t) : 0;
}

static void semantics(void)
{
    circuits_model *m = load_processed("tl_2l_rms_gelu");
    circuits_config c = config_of(m);
    circuits_context *ctx = make_ctx(m, 0);
    enum { B = 2, T = 5 };
    int32_t tok[B * T];
    make_tokens(tok, B * T, c.d_vocab, 3);
    circuits_metric loss;
    circuits_metric_init(&loss);
    loss.kind = CIRCUITS_METRIC_LOSS;
    loss.tokens = tok;
    circuits_cache *ref = NULL, *cache = NULL, *wg = NULL;
    CHECK_OK(circuits_cache_create(&ref));
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_cache_create(&wg));
    circuits_backward_options bo;
    circuits_backward_options_init(&bo);
    CHECK(bo.size == sizeof bo && bo.cache_activations == 1 && bo.edit_grad == CIRCUITS_EDIT_GRAD_REPLACE &&
              bo.weight_grads == 0 && !bo.run && !bo.input_grad, "backward options defaults");
    float v0 = 0.0f, loss_fwd = 0.0f;
    bo.weight_grads = 1;
    CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &loss, &v0, NULL, ref, wg));
    bo.weight_grads = 0;
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, &loss_fwd, NULL));
    CHECK(v0 == loss_fwd, "the value is the forward's loss: %g vs %g", v0, loss_fwd);

    /* the cache: every point's activation then name_grad, in firing order */
    size_t np = circuits_context_hook_point_count(ctx);
    CHECK(circuits_cache_count(ref) == 2 * np, "cache holds %zu entries for %zu points", circuits_cache_count(ref), np);
    circuits_tensor t0, t1;
    CHECK_OK(circuits_cache_at(ref, 0, &t0));
    CHECK_OK(circuits_cache_at(ref, 1, &t1));
    CHECK(!strcmp(t0.name, "hook_embed") && !strcmp(t1.name, "hook_embed_grad") && shape_is(&t1, SHAPE(B, T, c.d_model)),
          "first entries %s, %s", t0.name, t1.name);
    /* the weight gradients: every weight, its TL name and shape */
    CHECK(circuits_cache_count(wg) == circuits_model_weight_count(m), "weight grads: %zu of %zu",
          circuits_cache_count(wg), circuits_model_weight_count(m));
    for (size_t i = 0; i < circuits_model_weight_count(m); i++) {
        circuits_tensor w, gw;
        CHECK_OK(circuits_model_weight_at(m, i, &w));
        CHECK(circuits_cache_get(wg, w.name, &gw) == CIRCUITS_OK && shape_is(&gw, w.ndim, w.shape),
              "weight gradient of %s", w.name);
    }
    /* d loss / d b_U = mean over pairs of (softmax - onehot): its entries sum to 0 */
    {
        circuits_tensor gb;
        CHECK_OK(circuits_cache_get(wg, "unembed.b_U", &gb));
        double s = 0.0, a = 0.0;
        for (size_t i = 0; i < numel(&gb); i++) s += gb.data[i], a += fabs(gb.data[i]);
        CHECK(fabs(s) < 1e-5 && a > 1e-3, "b_U's gradient sums to %g (|.| %g)", s, a);
    }

    /* names filter, gradients only */
    const char *filter[] = {"blocks.1.hook_resid_pre", "pattern0"};
    bo.names_filter = filter;
    bo.n_filter = 2;
    bo.cache_activations = 0;
    CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, cache, NULL));
    CHECK(circuits_cache_count(cache) == 2, "filtered: %zu entries", circuits_cache_count(cache));
    CHECK(entry_n(cache, "blocks.0.attn.hook_pattern_grad") == (size_t)(B * c.n_heads * T * T), "pattern grad shape");
    const float *g1 = entry(cache, "blocks.1.hook_resid_pre_grad"), *g1r = entry(ref, "blocks.1.hook_resid_pre_grad");
    CHECK(g1 && g1r && max_abs_diff(g1, g1r, (size_t)(B * T * c.d_model)) == 0.0, "filtered run gives the same gradient");
    /* the pattern's gradient is not zero above the diagonal (z reads every entry) */
    {
        const float *gp = entry(cache, "blocks.0.attn.hook_pattern_grad");
        double above = 0.0;
        for (int i = 0; i < T && gp; i++)
            for (int j = i + 1; j < T; j++) above += fabs(gp[i * T + j]);
        CHECK(above > 0.0, "pattern gradient above the diagonal is %g", above);
    }
    bo.names_filter = NULL;
    bo.n_filter = 0;
    bo.cache_activations = 1;

    /* backward hooks: a reader sees the cached gradient; a scaling edit at blocks.0.hook_resid_pre
     * (the earliest block point) scales hook_embed's gradient, which only it feeds */
    size_t nres = (size_t)(B * T * c.d_model);
    hook_log h = {.factor = 1.0f, .copy = calloc(nres, sizeof(float)), .n = nres};
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_backward_hook(ctx, "blocks.0.hook_resid_pre", bwd_hook, &h, &id));
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, B, T, &loss, NULL, NULL, cache, NULL));
    CHECK(h.calls == 1, "backward hook called %d times", h.calls);
    CHECK(max_abs_diff(h.copy, entry(ref, "blocks.0.hook_resid_pre_grad"), nres) == 0.0, "hook saw the gradient");
    /* a forward run never calls it */
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, NULL, NULL));
    CHECK(h.calls == 1, "a forward run called the backward hook");
    h.factor = 0.5f;
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, B, T, &loss, NULL, NULL, cache, NULL));
    {
        const float *ge = entry(cache, "hook_embed_grad"), *ge0 = entry(ref, "hook_embed_grad");
        const float *gr = entry(cache, "blocks.0.hook_resid_pre_grad");
        double worst = 0.0;
        for (size_t i = 0; i < nres && ge && ge0; i++) worst = fmax(worst, fabs(ge[i] - 0.5 * ge0[i]));
        CHECK(worst < 1e-7, "an edit of 0.5 reaches hook_embed: off by %g", worst);
        CHECK(gr && max_abs_diff(gr, entry(ref, "blocks.0.hook_resid_pre_grad"), nres) == 0.0,
              "the cache keeps the gradient before the backward hook's edit");
    }
    h.factor = 1.0f;
    h.ret = CIRCUITS_HOOK_STOP;
    CHECK_FAILS(circuits_context_backward(ctx, NULL, tok, B, T, &loss, NULL, NULL, cache, NULL), CIRCUITS_E_STOPPED,
                "backward hook");
    CHECK(circuits_cache_count(cache) == 0, "a stopped run leaves the cache empty");
    h.ret = -3;
    CHECK_FAILS(circuits_context_backward(ctx, NULL, tok, B, T, &loss, NULL, NULL, cache, NULL), CIRCUITS_E_CALLBACK,
                "backward hook at 'blocks.0.hook_resid_pre' failed (returned -3)");
    h.ret = CIRCUITS_HOOK_CONTINUE;
    h.ctx = ctx;
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, B, T, &loss, NULL, NULL, NULL, NULL));
    CHECK(h.inner_rc == CIRCUITS_E_INVALID_ARGUMENT, "a backward hook calling into its context: %d", h.inner_rc);
    h.ctx = NULL;
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    CHECK_FAILS(circuits_context_add_backward_hook(ctx, "no_such_point", bwd_hook, &h, NULL), CIRCUITS_E_NOT_FOUND,
                "no_such_point");
    CHECK_FAILS(circuits_context_add_backward_hook(ctx, "embed", NULL, &h, NULL), CIRCUITS_E_INVALID_ARGUMENT,
                "must not be NULL");
    /* clear_hooks removes backward hooks too */
    CHECK_OK(circuits_context_add_backward_hook(ctx, "blocks.*.hook_resid_post", bwd_hook, &h, NULL));
    circuits_context_clear_hooks(ctx);
    h.calls = 0;
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, B, T, &loss, NULL, NULL, NULL, NULL));
    CHECK(h.calls == 0, "clear_hooks left a backward hook");

    /* edit rules: a forward hook overwriting blocks.1.hook_resid_pre makes everything before it a
     * constant (REPLACE: no gradient reaches hook_embed); an additive one passes it (THROUGH) */
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.hook_resid_pre", zero_all, NULL, &id));
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, B, T, &loss, NULL, NULL, cache, NULL));
    {
        const float *ge = entry(cache, "hook_embed_grad"), *gp = entry(cache, "blocks.1.hook_resid_pre_grad");
        double a = 0.0, b = 0.0;
        for (size_t i = 0; i < nres && ge && gp; i++) a += fabs(ge[i]), b += fabs(gp[i]);
        CHECK(a == 0.0 && b > 0.0, "REPLACE: embed gradient |.| %g (want 0), resid_pre1's %g", a, b);
    }
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.1.hook_resid_pre", add_const, NULL, &id));
    bo.edit_grad = CIRCUITS_EDIT_GRAD_THROUGH;
    CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, cache, NULL));
    {
        /* THROUGH: the gradient at blocks.0.hook_resid_post equals blocks.1.hook_resid_pre's */
        const float *a = entry(cache, "blocks.0.hook_resid_post_grad"), *b = entry(cache, "blocks.1.hook_resid_pre_grad");
        CHECK(a && b && max_abs_diff(a, b, nres) == 0.0 && max_abs_diff(b, entry(ref, "blocks.1.hook_resid_pre_grad"), nres) > 0,
              "THROUGH passes an additive edit's gradient on");
    }
    bo.edit_grad = CIRCUITS_EDIT_GRAD_REPLACE;
    CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, cache, NULL));
    {
        const float *a = entry(cache, "blocks.0.hook_resid_post_grad");
        double s = 0.0;
        for (size_t i = 0; i < nres && a; i++) s += fabs(a[i]);
        /* add_const leaves every 7th element unchanged (i % 7 == 0): only those pass */
        size_t passed = 0;
        for (size_t i = 0; i < nres && a; i++) passed += a[i] != 0.0f;
        CHECK(s > 0.0 && passed <= (nres + 6) / 7, "REPLACE passes only unchanged elements: %zu passed", passed);
    }
    CHECK_OK(circuits_context_remove_hook(ctx, id));

    /* HOOK_LINEAR: the metric's gradient at its own point is the direction */
    {
        size_t nz = (size_t)(B * T * c.n_heads * c.d_head);
        float *dir = malloc(nz * sizeof *dir);
        for (size_t i = 0; i < nz; i++) dir[i] = rnd();
        circuits_metric lin;
        circuits_metric_init(&lin);
        lin.kind = CIRCUITS_METRIC_HOOK_LINEAR;
        lin.hook = "z1";
        lin.direction = dir;
        float v = 0.0f;
        CHECK_OK(circuits_context_backward(ctx, NULL, tok, B, T, &lin, &v, NULL, cache, NULL));
        const float *gz = entry(cache, "blocks.1.attn.hook_z_grad"), *z = entry(cache, "blocks.1.attn.hook_z");
        double want = 0.0;
        for (size_t i = 0; i < nz && z; i++) want += (double)z[i] * dir[i];
        CHECK(gz && max_abs_diff(gz, dir, nz) == 0.0, "HOOK_LINEAR gradient at its point is the direction");
        CHECK(fabs(v - want) < 1e-4 * (1 + fabs(want)), "HOOK_LINEAR value %g, want %g", v, want);
        const float *gu = entry(cache, "unembed.hook_out_grad");
        double s = 0.0;
        for (size_t i = 0; gu && i < (size_t)(B * T * c.d_vocab_out); i++) s += fabs(gu[i]);
        CHECK(s == 0.0, "HOOK_LINEAR: no gradient after its point (%g)", s);
        lin.hook = "blocks.*.attn.hook_z";
        CHECK_FAILS(circuits_context_backward(ctx, NULL, tok, B, T, &lin, NULL, NULL, NULL, NULL),
                    CIRCUITS_E_INVALID_ARGUMENT, "name exactly one");
        free(dir);
    }

    /* GRAD_CALLBACK, and CALLBACK's refusal */
    {
        circuits_metric gc;
        circuits_metric_init(&gc);
        gc.kind = CIRCUITS_METRIC_GRAD_CALLBACK;
        gc.grad_fn = grad_cb;
        float v = 0.0f;
        float *lg = malloc(sizeof(float) * B * T * (size_t)c.d_vocab_out);
        CHECK_OK(circuits_context_backward(ctx, NULL, tok, B, T, &gc, &v, lg, cache, NULL));
        CHECK(fabs(v - (lg[(T - 1) * c.d_vocab_out] + lg[(2 * T - 1) * c.d_vocab_out])) < 1e-5, "GRAD_CALLBACK value %g", v);
        const float *gl = entry(cache, "unembed.hook_out_grad");
        CHECK(gl && gl[(T - 1) * c.d_vocab_out] == 1.0f && gl[0] == 0.0f, "GRAD_CALLBACK's gradient reaches the logits");
        gc.kind = CIRCUITS_METRIC_CALLBACK;
        gc.fn = value_cb;
        CHECK_FAILS(circuits_context_backward(ctx, NULL, tok, B, T, &gc, NULL, NULL, NULL, NULL),
                    CIRCUITS_E_INVALID_ARGUMENT, "has no gradient");
        free(lg);
    }

    /* input_grad: a run from blocks.1's residual stream gives blocks.1.hook_resid_pre's gradient */
    {
        float *in = malloc(nres * sizeof *in), *ig = malloc(nres * sizeof *ig);
        memcpy(in, entry(ref, "blocks.1.hook_resid_pre"), nres * sizeof *in);
        circuits_run_options ro;
        circuits_run_options_init(&ro);
        ro.start_at_layer = 1;
        ro.input = in;
        bo.run = &ro;
        bo.input_grad = ig;
        float v = 0.0f;
        CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &loss, &v, NULL, cache, NULL));
        CHECK(v == v0, "start_at_layer run's loss %g vs %g", v, v0);
        CHECK(max_abs_diff(ig, entry(ref, "blocks.1.hook_resid_pre_grad"), nres) < 1e-6, "input_grad from start_at_layer");
        CHECK(circuits_cache_get(cache, "hook_embed_grad", &t0) == CIRCUITS_E_NOT_FOUND, "no embedding points");
        bo.run = NULL;
        bo.input_grad = NULL;
        free(in);
        free(ig);
    }

    /* a metric reading one position per row computes the logits there only when nothing else needs
     * them (sparse): the same gradients and weight gradients as with every position's logits */
    {
        int32_t answer[B] = {1, 2}, wrong[B] = {3, 0};
        int64_t at[B] = {-1, 2};
        circuits_metric ld;
        circuits_metric_init(&ld);
        ld.kind = CIRCUITS_METRIC_LOGIT_DIFF;
        ld.answer = answer;
        ld.wrong = wrong;
        ld.positions = at;
        circuits_cache *c1 = NULL, *c2 = NULL, *w1 = NULL, *w2 = NULL;
        CHECK_OK(circuits_cache_create(&c1));
        CHECK_OK(circuits_cache_create(&c2));
        CHECK_OK(circuits_cache_create(&w1));
        CHECK_OK(circuits_cache_create(&w2));
        const char *few[] = {"hook_embed", "blocks.0.hook_resid_post"};
        circuits_backward_options so;
        circuits_backward_options_init(&so);
        so.names_filter = few;
        so.n_filter = 2;
        so.weight_grads = 1;
        float v1 = 0.0f, v2 = 0.0f, *lg = malloc(sizeof(float) * B * T * (size_t)c.d_vocab_out);
        CHECK_OK(circuits_context_backward(ctx, &so, tok, B, T, &ld, &v1, lg, c1, w1)); /* every position */
        CHECK_OK(circuits_context_backward(ctx, &so, tok, B, T, &ld, &v2, NULL, c2, w2)); /* sparse */
        CHECK(fabs(v1 - v2) <= 1e-5 * (1 + fabs(v1)), "sparse logits: value %g vs %g", v2, v1);
        for (size_t e = 0; e < circuits_cache_count(c1); e++) {
            circuits_tensor a, b;
            CHECK_OK(circuits_cache_at(c1, e, &a));
            CHECK_OK(circuits_cache_at(c2, e, &b));
            double sc = 0.0;
            for (size_t i = 0; i < numel(&a); i++) sc = fmax(sc, fabs(a.data[i]));
            CHECK(max_abs_diff(a.data, b.data, numel(&a)) <= 1e-5 * sc + 1e-9, "sparse logits: %s differs", a.name);
        }
        CHECK(circuits_cache_count(w1) == circuits_cache_count(w2), "weight gradient counts");
        for (size_t e = 0; e < circuits_cache_count(w1); e++) {
            circuits_tensor a, b;
            CHECK_OK(circuits_cache_at(w1, e, &a));
            CHECK_OK(circuits_cache_at(w2, e, &b));
            double sc = 0.0;
            for (size_t i = 0; i < numel(&a); i++) sc = fmax(sc, fabs(a.data[i]));
            CHECK(max_abs_diff(a.data, b.data, numel(&a)) <= 1e-5 * sc + 1e-9, "sparse logits: gradient of %s differs",
                  a.name);
        }
        free(lg);
        circuits_cache_free(c1);
        circuits_cache_free(c2);
        circuits_cache_free(w1);
        circuits_cache_free(w2);
    }

    /* refusals */
    circuits_run_options ro;
    circuits_run_options_init(&ro);
    bo.run = &ro;
    ro.stop_at_layer = 1;
    CHECK_FAILS(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, NULL, NULL), CIRCUITS_E_UNSUPPORTED,
                "stop_at_layer is refused");
    ro.stop_at_layer = CIRCUITS_LAYER_NONE;
    int64_t lp = -1;
    ro.logit_positions = &lp;
    ro.n_logit_positions = 1;
    CHECK_FAILS(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, NULL, NULL), CIRCUITS_E_UNSUPPORTED,
                "logit_positions is refused");
    ro.logit_positions = NULL;
    ro.n_logit_positions = 0;
    circuits_kv_cache *kv = NULL;
    CHECK_OK(circuits_kv_cache_create(&kv, m, B, T));
    ro.kv_cache = kv;
    CHECK_FAILS(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, NULL, NULL), CIRCUITS_E_UNSUPPORTED,
                "does not continue a KV cache");
    circuits_kv_cache_free(kv);
    bo.run = NULL;
    bo.edit_grad = 7;
    CHECK_FAILS(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, NULL, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "edit_grad 7");
    bo.edit_grad = 0;
    bo.weight_grads = 1;
    CHECK_FAILS(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, NULL, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "needs a weight_grads cache");
    CHECK_FAILS(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, cache, cache),
                CIRCUITS_E_INVALID_ARGUMENT, "must be two caches");
    bo.weight_grads = 0;
    bo.size = 3;
    CHECK_FAILS(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, NULL, NULL), CIRCUITS_E_VERSION, "");
    bo.size = sizeof bo;
    bo.n_filter = 1;
    CHECK_FAILS(circuits_context_backward(ctx, &bo, tok, B, T, &loss, NULL, NULL, cache, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "names_filter is NULL");
    bo.n_filter = 0;
    CHECK_FAILS(circuits_context_backward(ctx, NULL, tok, B, T, NULL, NULL, NULL, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT,
                "metric is NULL");
    CHECK_FAILS(circuits_context_backward(NULL, NULL, tok, B, T, &loss, NULL, NULL, NULL, NULL),
                CIRCUITS_E_INVALID_ARGUMENT, "ctx is NULL");
    int32_t bad[B * T];
    memcpy(bad, tok, sizeof bad);
    bad[3] = c.d_vocab;
    loss.tokens = bad;
    CHECK_FAILS(circuits_context_backward(ctx, NULL, bad, B, T, &loss, NULL, NULL, cache, NULL), CIRCUITS_E_RANGE, "");
    loss.tokens = tok;
    /* longer than n_ctx: refused before the gradient memory is sized from pos (about 2^50 floats of
     * patterns here), as the forward refuses it; a LOGIT metric reads no tokens */
    circuits_metric lg;
    circuits_metric_init(&lg);
    lg.kind = CIRCUITS_METRIC_LOGIT;
    int32_t ans1 = 1;
    lg.answer = &ans1;
    CHECK_FAILS(circuits_context_backward(ctx, NULL, tok, 1, (int64_t)1 << 24, &lg, NULL, NULL, NULL, NULL),
                CIRCUITS_E_RANGE, "exceed the model's n_ctx");

    circuits_cache_free(ref);
    circuits_cache_free(cache);
    circuits_cache_free(wg);
    free(h.copy);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* A model whose weights stay in their stored dtype is refused. */
static void stored_refused(const char *gguf)
{
    circuits_load_options o;
    circuits_load_options_init(&o);
    o.keep_stored_dtype = 1;
    o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
    circuits_model *m = NULL;
    if (circuits_model_load(&m, gguf, &o) != CIRCUITS_OK) {
        CHECK(0, "cannot load %s: %s", gguf, circuits_last_error());
        return;
    }
    circuits_context *ctx = make_ctx(m, 0);
    int32_t tok[4] = {1, 2, 3, 4};
    circuits_metric mt;
    circuits_metric_init(&mt);
    mt.kind = CIRCUITS_METRIC_LOGIT;
    int32_t ans = 1;
    mt.answer = &ans;
    CHECK_FAILS(circuits_context_backward(ctx, NULL, tok, 1, 4, &mt, NULL, NULL, NULL, NULL), CIRCUITS_E_UNSUPPORTED,
                "gradients need fp32 weights");
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* ---- review regressions (hostile inputs) ---- */

typedef struct take_probe {
    circuits_context *ctx;
    int calls, rc;
} take_probe;

/* A grad_fn that tries to take the run memory (the logits it reads lie in it), then d/d logit 0. */
static int grad_take_memory(const float *logits, int64_t B, int64_t T, int64_t V, float *value, float *grad, void *ud)
{
    take_probe *tp = ud;
    circuits_run_memory *mem = NULL;
    tp->calls++;
    tp->rc = circuits_context_take_run_memory(tp->ctx, &mem);
    circuits_run_memory_free(mem); /* frees what the run computes in, if it was wrongly handed over */
    *value = logits[(B * T - 1) * V];
    grad[(B * T - 1) * V] = 1.0f;
    return 0;
}

static int grad_one(const float *logits, int64_t B, int64_t T, int64_t V, float *value, float *grad, void *ud)
{
    (void)ud;
    *value = logits[(B * T - 1) * V];
    grad[(B * T - 1) * V] = 1.0f;
    return 0;
}

static void review_regressions(void)
{
    circuits_model *m = load_processed("tl_2l_lnpre_gelu");
    circuits_config c = config_of(m);
    circuits_context *ctx = make_ctx(m, 0);
    enum { T = 4 };
    int32_t tok[T];
    make_tokens(tok, T, c.d_vocab, 11);
    circuits_metric gm;
    circuits_metric_init(&gm);
    gm.kind = CIRCUITS_METRIC_GRAD_CALLBACK;
    gm.grad_fn = grad_one;
    float v = 0.0f, v_ref = 0.0f;
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, 1, T, &gm, &v_ref, NULL, NULL, NULL));

    /* the grad_fn runs between the forward and the backward, reading the gradient run's memory:
     * taking the run memory there must be refused as from a hook (it was handed over and the
     * backward then computed in freed memory) */
    take_probe tp = {ctx, 0, 0};
    gm.grad_fn = grad_take_memory;
    gm.user_data = &tp;
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, 1, T, &gm, &v, NULL, NULL, NULL));
    CHECK(tp.calls == 1 && tp.rc == CIRCUITS_E_INVALID_ARGUMENT, "take_run_memory from a grad_fn: %d calls, rc %d",
          tp.calls, tp.rc);
    CHECK(v == v_ref, "the run is unharmed: %g vs %g", v, v_ref);
    gm.grad_fn = grad_one;
    gm.user_data = NULL;

    /* (the [B, T] limits' refusals: test_attribution.c's catalogue checks bwd_pos_over_n_ctx etc.) */
    /* the gradient run's own refusals (edit_grad, [B, T], a HOOK_LINEAR point it cannot read)
     * come before the caches are touched: the header's "refused before its run starts" (they
     * emptied both caches) */
    {
        circuits_cache *cache = NULL, *wg = NULL;
        CHECK_OK(circuits_cache_create(&cache));
        CHECK_OK(circuits_cache_create(&wg));
        circuits_backward_options bo;
        circuits_backward_options_init(&bo);
        bo.weight_grads = 1;
        CHECK_OK(circuits_context_backward(ctx, &bo, tok, 1, T, &gm, &v, NULL, cache, wg));
        size_t n_cache = circuits_cache_count(cache), n_wg = circuits_cache_count(wg);
        bo.edit_grad = 7;
        CHECK_ERR(circuits_context_backward(ctx, &bo, tok, 1, T, &gm, &v, NULL, cache, wg), CIRCUITS_E_INVALID_ARGUMENT);
        bo.edit_grad = CIRCUITS_EDIT_GRAD_REPLACE;
        CHECK_ERR(circuits_context_backward(ctx, &bo, tok, 1, (int64_t)c.n_ctx + 1, &gm, &v, NULL, cache, wg),
                  CIRCUITS_E_RANGE);
        circuits_metric hl;
        circuits_metric_init(&hl);
        hl.kind = CIRCUITS_METRIC_HOOK_LINEAR;
        hl.hook = "hook_tokens_or_nothing";
        float dir[1] = {0};
        hl.direction = dir;
        CHECK_ERR(circuits_context_backward(ctx, &bo, tok, 1, T, &hl, &v, NULL, cache, wg), CIRCUITS_E_NOT_FOUND);
        CHECK(circuits_cache_count(cache) == n_cache && circuits_cache_count(wg) == n_wg && n_cache > 0 && n_wg > 0,
              "refused calls left the caches with %zu of %zu and %zu of %zu entries", circuits_cache_count(cache),
              n_cache, circuits_cache_count(wg), n_wg);
        circuits_cache_free(cache);
        circuits_cache_free(wg);
    }
    /* and the context still works */
    CHECK_OK(circuits_context_backward(ctx, NULL, tok, 1, T, &gm, &v, NULL, NULL, NULL));
    CHECK(v == v_ref, "after the take: %g vs %g", v, v_ref);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* Shortformer from start_at_layer: q and k still read W_pos (the forward builds the positional
 * embedding unhooked, hook_pos_embed does not fire), so the backward reads it from W_pos, not from
 * hook_pos_embed's record (it dereferenced NULL), and W_pos still gets that share of the gradient
 * (it got none). Checked against the full run, with and without a mask: from block 1, input_grad
 * is the full run's blocks.1.hook_resid_pre gradient; from block 0 on hook_embed's output, the
 * value and W_pos's gradient are the full run's. */
static void shortformer_start_at_layer(void)
{
    circuits_model *m = load_processed("tl_shortformer_relu");
    circuits_config c = config_of(m);
    CHECK(c.n_layers >= 2, "tl_shortformer_relu has %d layers", c.n_layers);
    circuits_context *ctx = make_ctx(m, 0);
    enum { B = 2, T = 5 };
    int32_t tok[B * T], mask[B * T] = {0, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    make_tokens(tok, B * T, c.d_vocab, 21);
    int32_t ans[B] = {1, 2}, wrong[B] = {3, 0};
    circuits_metric ld;
    circuits_metric_init(&ld);
    ld.answer = ans;
    ld.wrong = wrong;
    size_t nres = (size_t)(B * T * c.d_model);
    float *in = calloc(nres, sizeof(float)), *ig = calloc(nres, sizeof(float));
    circuits_cache *full = NULL, *wg = NULL;
    CHECK_OK(circuits_cache_create(&full));
    CHECK_OK(circuits_cache_create(&wg));
    for (int masked = 0; masked < 2; masked++) {
        circuits_run_options ro;
        circuits_run_options_init(&ro);
        ro.attention_mask = masked ? mask : NULL;
        circuits_backward_options bo;
        circuits_backward_options_init(&bo);
        bo.run = &ro;
        const char *filter[] = {"blocks.1.hook_resid_pre"};
        bo.names_filter = filter;
        bo.n_filter = 1;
        float v_full = 0.0f, v = 0.0f;
        CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &ld, &v_full, NULL, full, NULL));
        circuits_tensor a, g;
        CHECK_OK(circuits_cache_get(full, "blocks.1.hook_resid_pre", &a));
        CHECK_OK(circuits_cache_get(full, "blocks.1.hook_resid_pre_grad", &g));
        memcpy(in, a.data, nres * sizeof(float));
        ro.start_at_layer = 1;
        ro.input = in;
        bo.names_filter = NULL;
        bo.n_filter = 0;
        bo.input_grad = ig;
        bo.weight_grads = 1;
        CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &ld, &v, NULL, NULL, wg));
        CHECK(v == v_full, "masked %d: the start run's metric %g is the full run's %g", masked, v, v_full);
        CHECK(max_abs_diff(ig, g.data, nres) <= 1e-5 * (1.0 + max_abs_diff(g.data, g.data, 0)),
              "masked %d: input_grad is the full run's blocks.1.hook_resid_pre gradient (max diff %g)", masked,
              max_abs_diff(ig, g.data, nres));
        circuits_tensor gwp, gwp_full;
        CHECK_OK(circuits_cache_get(wg, "pos_embed.W_pos", &gwp));
        double a1 = 0.0;
        for (size_t i = 0; i < numel(&gwp); i++) a1 += fabs(gwp.data[i]);
        CHECK(a1 > 0.0, "masked %d: W_pos gets a gradient from start_at_layer 1 (sum |.| %g)", masked, a1);
        /* start_at_layer 0 from hook_embed's output (a shortformer's residual stream is the token
         * embedding alone) is the full run: the same value, every layer's share of W_pos's gradient */
        ro.start_at_layer = INT32_MIN;
        ro.input = NULL;
        bo.input_grad = NULL;
        filter[0] = "hook_embed";
        bo.names_filter = filter;
        bo.n_filter = 1;
        CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &ld, &v_full, NULL, full, wg));
        CHECK_OK(circuits_cache_get(full, "hook_embed", &a));
        memcpy(in, a.data, nres * sizeof(float));
        CHECK_OK(circuits_cache_get(wg, "pos_embed.W_pos", &gwp_full));
        size_t nwp = numel(&gwp_full);
        float *wp_full = malloc(nwp * sizeof(float));
        memcpy(wp_full, gwp_full.data, nwp * sizeof(float));
        ro.start_at_layer = 0;
        ro.input = in;
        bo.names_filter = NULL;
        bo.n_filter = 0;
        CHECK_OK(circuits_context_backward(ctx, &bo, tok, B, T, &ld, &v, NULL, NULL, wg));
        CHECK_OK(circuits_cache_get(wg, "pos_embed.W_pos", &gwp));
        double d = max_abs_diff(gwp.data, wp_full, nwp), sc = 0.0;
        for (size_t i = 0; i < nwp; i++) sc = fmax(sc, fabs(wp_full[i]));
        CHECK(v == v_full && sc > 0.0 && d <= 1e-6 * sc, "masked %d: start_at_layer 0 from hook_embed: value %g vs %g, "
              "W_pos's gradient off by %g of %g", masked, v, v_full, d, sc);
        free(wp_full);
    }
    circuits_cache_free(full);
    circuits_cache_free(wg);
    free(in);
    free(ig);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* A backward refused because weight_grads is being filled by a run in progress (here: a
 * run_with_cache on another context, from its forward hook) leaves `cache` untouched, as the
 * header says of a call refused before its run starts (it emptied cache). */
typedef struct busy_arg {
    circuits_context *other;
    const int32_t *tok;
    int64_t T;
    const circuits_metric *metric;
    circuits_cache *cache, *busy;
    int calls, rc;
    size_t entries_after;
} busy_arg;

static int call_backward_into_busy(const circuits_tensor *t, void *ud)
{
    (void)t;
    busy_arg *a = ud;
    if (a->calls++) return CIRCUITS_HOOK_CONTINUE;
    circuits_backward_options bo;
    circuits_backward_options_init(&bo);
    bo.weight_grads = 1;
    a->rc = circuits_context_backward(a->other, &bo, a->tok, 1, a->T, a->metric, NULL, NULL, a->cache, a->busy);
    a->entries_after = circuits_cache_count(a->cache);
    return CIRCUITS_HOOK_CONTINUE;
}

static void busy_weight_grads_leave_cache(void)
{
    circuits_model *m = load_processed("tl_2l_lnpre_gelu");
    circuits_config c = config_of(m);
    circuits_context *ctx = make_ctx(m, 0), *other = make_ctx(m, 0);
    enum { T = 4 };
    int32_t tok[T];
    make_tokens(tok, T, c.d_vocab, 5);
    circuits_metric gm;
    circuits_metric_init(&gm);
    gm.kind = CIRCUITS_METRIC_GRAD_CALLBACK;
    gm.grad_fn = grad_one;
    circuits_cache *cache = NULL, *busy = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_cache_create(&busy));
    CHECK_OK(circuits_context_backward(other, NULL, tok, 1, T, &gm, NULL, NULL, cache, NULL));
    size_t before = circuits_cache_count(cache);
    CHECK(before > 0, "the cache holds %zu entries", before);
    busy_arg a = {other, tok, T, &gm, cache, busy, 0, 0, 0};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", call_backward_into_busy, &a, NULL));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, 1, T, NULL, 0, busy, NULL, NULL, NULL));
    CHECK(a.calls == 1 && a.rc == CIRCUITS_E_INVALID_ARGUMENT, "backward into a busy weight_grads: %d calls, rc %d",
          a.calls, a.rc);
    CHECK(a.entries_after == before, "the refused call left the cache with %zu entries of %zu", a.entries_after, before);
    circuits_cache_free(cache);
    circuits_cache_free(busy);
    circuits_context_free(ctx);
    circuits_context_free(other);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASES_DIR [GGUF] [CASE ...]\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    if (argc > 2 && strstr(argv[2], ".gguf")) {
        semantics();
        stored_refused(argv[2]);
        review_regressions();
        shortformer_start_at_layer();
        busy_weight_grads_leave_cache();
        return tu_finish("test_backward");
    }
    /* CASE or CASE:OPTS (optional hook points on, as fd_case reads them) */
    for (int i = 2; i < argc; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s", argv[i]);
        char *colon = strchr(name, ':');
        const char *opts = "";
        if (colon) *colon = '\0', opts = colon + 1;
        fd_case(name, opts, false, CIRCUITS_METRIC_LOSS);
        fd_case(name, opts, true, CIRCUITS_METRIC_LOGIT_DIFF);
    }
    return tu_finish("test_backward");
}
