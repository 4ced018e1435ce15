/* Activation patching (lib/analysis/patch.c) against TransformerLens's patching functions
 * (tests/reference/toolkit/patching/, generate_patching.py): every grid kind with the logit-diff
 * metric, per-row metric positions and the loss metric, in whole re-runs and incremental runs;
 * incremental and batched grids equal one-cell whole re-runs' within 2e-6 x max(1, |grid|), about
 * 10 float32 ulps (not bit for bit: GEMMs of other row counts round differently; the largest
 * difference is printed). And the
 * refusals (named checks: docs/errors.md, "Ablation and patching"). */
#define TESTUTIL_API_HELPERS
#include "catalogue.h"
#include "reference_get.h"

#include <math.h>

enum { B = 2, T = 5 };

static const char *REF_DIR;
static double worst_tl, worst_incremental;

static const struct {
    int32_t kind;
    const char *tl;   /* get_act_patch_<tl> */
    const char *hook; /* the clean cache's hook, per layer */
} GRIDS[] = {
    {CIRCUITS_PATCH_RESID_PRE, "resid_pre", "blocks.%d.hook_resid_pre"},
    {CIRCUITS_PATCH_RESID_MID, "resid_mid", "blocks.%d.hook_resid_mid"},
    {CIRCUITS_PATCH_ATTN_OUT, "attn_out", "blocks.%d.hook_attn_out"},
    {CIRCUITS_PATCH_MLP_OUT, "mlp_out", "blocks.%d.hook_mlp_out"},
    {CIRCUITS_PATCH_HEAD_Z_BY_POS, "attn_head_out_by_pos", "blocks.%d.attn.hook_z"},
    {CIRCUITS_PATCH_HEAD_Q_BY_POS, "attn_head_q_by_pos", "blocks.%d.attn.hook_q"},
    {CIRCUITS_PATCH_HEAD_K_BY_POS, "attn_head_k_by_pos", "blocks.%d.attn.hook_k"},
    {CIRCUITS_PATCH_HEAD_V_BY_POS, "attn_head_v_by_pos", "blocks.%d.attn.hook_v"},
    {CIRCUITS_PATCH_HEAD_PATTERN_BY_POS, "attn_head_pattern_by_pos", "blocks.%d.attn.hook_pattern"},
    {CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC, "attn_head_pattern_dest_src_pos", "blocks.%d.attn.hook_pattern"},
    {CIRCUITS_PATCH_HEAD_Z_ALL_POS, "attn_head_out_all_pos", "blocks.%d.attn.hook_z"},
    {CIRCUITS_PATCH_HEAD_Q_ALL_POS, "attn_head_q_all_pos", "blocks.%d.attn.hook_q"},
    {CIRCUITS_PATCH_HEAD_K_ALL_POS, "attn_head_k_all_pos", "blocks.%d.attn.hook_k"},
    {CIRCUITS_PATCH_HEAD_V_ALL_POS, "attn_head_v_all_pos", "blocks.%d.attn.hook_v"},
    {CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS, "attn_head_pattern_all_pos", "blocks.%d.attn.hook_pattern"},
};

/* One grid both ways against the reference tensor `key`. */
static void check_grid(circuits_context *ctx, const circuits_model *m, const char *cs, int g, const int32_t *corrupted,
                       circuits_cache *cache, const circuits_metric *metric, const char *key)
{
    const cx_st_tensor *want = cx_st_find(ref, key);
    if (!want) return; /* not a grid of this model (resid_mid of attn-only) */
    circuits_config c = config_of(m);
    const float *clean[8];
    for (int l = 0; l < c.n_layers; l++) {
        char name[96];
        snprintf(name, sizeof name, GRIDS[g].hook, l);
        circuits_tensor t;
        CHECK_OK(circuits_cache_get(cache, name, &t));
        clean[l] = t.data;
    }
    int64_t shape[4];
    int32_t nd;
    CHECK_OK(circuits_patch_grid_shape(m, GRIDS[g].kind, T, shape, &nd));
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)shape[i];
    CHECK(n == want->numel && nd == want->ndim, "%s %s: grid of %zu cells, TL %zu", cs, key, n, want->numel);
    if (n != want->numel) return;
    /* whole re-runs one cell per run (TransformerLens's method), whole re-runs of several cells
     * per run, incremental one cell per run, incremental several (the default) */
    float grids[4][512];
    const int32_t modes[4][2] = {{0, 1}, {0, 0}, {1, 1}, {1, 0}};
    for (int i = 0; i < 4; i++) {
        circuits_patch_options o;
        circuits_patch_options_init(&o);
        o.incremental = modes[i][0];
        o.cells_per_run = modes[i][1];
        CHECK_OK(circuits_context_activation_patch(ctx, GRIDS[g].kind, corrupted, B, T, clean, metric,
                                                   i == 3 ? NULL : &o, grids[i]));
    }
    const float *tl = (const float *)want->data;
    double dt = 0, di = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 4; k++) {
            dt = fmax(dt, fabs(grids[k][i] - tl[i]));
            di = fmax(di, fabs(grids[k][i] - grids[0][i]));
        }
        scale = fmax(scale, fabs(tl[i]));
    }
    CHECK(dt <= 1e-4 * fmax(1.0, scale), "%s %s: |libcircuits - TL| = %g (scale %g)", cs, key, dt, scale);
    CHECK(di <= 2e-6 * fmax(1.0, scale), "%s %s: |incremental or batched - whole| = %g", cs, key, di);
    worst_tl = fmax(worst_tl, dt / fmax(1.0, scale));
    worst_incremental = fmax(worst_incremental, di / fmax(1.0, scale));
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
    circuits_context *ctx = make_ctx(m, 0);
    const int32_t *clean_tok = (const int32_t *)get("clean_tokens")->data,
                  *corrupted = (const int32_t *)get("corrupted_tokens")->data;
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, clean_tok, B, T, NULL, 0, cache, NULL, NULL, NULL));
    circuits_metric ld, rowpos, loss;
    circuits_metric_init(&ld);
    ld.answer = (const int32_t *)get("answer")->data;
    ld.wrong = (const int32_t *)get("wrong")->data;
    rowpos = ld;
    rowpos.positions = (const int64_t *)get("positions")->data;
    circuits_metric_init(&loss);
    loss.kind = CIRCUITS_METRIC_LOSS;
    loss.tokens = corrupted;
    char key[128];
    for (int g = 0; g < (int)(sizeof GRIDS / sizeof GRIDS[0]); g++) {
        snprintf(key, sizeof key, "logit_diff.%s", GRIDS[g].tl);
        check_grid(ctx, m, cs, g, corrupted, cache, &ld, key);
        snprintf(key, sizeof key, "rowpos.%s", GRIDS[g].tl);
        check_grid(ctx, m, cs, g, corrupted, cache, &rowpos, key);
        snprintf(key, sizeof key, "loss.%s", GRIDS[g].tl);
        check_grid(ctx, m, cs, g, corrupted, cache, &loss, key);
    }
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
    cx_st_close(ref);
    ref = NULL;
}

static int count_calls(const circuits_tensor *t, void *u)
{
    (void)t;
    (*(int *)u)++;
    return CIRCUITS_HOOK_CONTINUE;
}

/* A callback on unembed.hook_out sees the logits of every patched run (no sparse unembedding
 * then), and the grid is the same. */
/* clean[l]: the cached blocks.l.hook_resid_pre of the two-layer models of these tests. */
static void clean_resid_pre(const circuits_cache *cache, const float *clean[2])
{
    for (int l = 0; l < 2; l++) {
        char name[64];
        circuits_tensor t;
        snprintf(name, sizeof name, "blocks.%d.hook_resid_pre", l);
        CHECK_OK(circuits_cache_get(cache, name, &t));
        clean[l] = t.data;
    }
}

static void test_registered_hook(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tl_2l_lnpre_gelu.safetensors", REF_DIR);
    if (cx_st_open_file(&ref, path)) exit(2);
    circuits_model *m = load_case("tl_2l_lnpre_gelu");
    circuits_context *ctx = make_ctx(m, 0);
    const int32_t *corrupted = (const int32_t *)get("corrupted_tokens")->data;
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, (const int32_t *)get("clean_tokens")->data, B, T, NULL, 0, cache,
                                             NULL, NULL, NULL));
    const float *clean[2];
    clean_resid_pre(cache, clean);
    circuits_metric ld;
    circuits_metric_init(&ld);
    ld.answer = (const int32_t *)get("answer")->data;
    ld.wrong = (const int32_t *)get("wrong")->data;
    int calls = 0;
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_hook(ctx, "unembed.hook_out", count_calls, &calls, &id));
    float grid[2 * T];
    CHECK_OK(circuits_context_activation_patch(ctx, CIRCUITS_PATCH_RESID_PRE, corrupted, B, T, clean, &ld, NULL, grid));
    CHECK(calls > 0, "the hook on unembed.hook_out never ran");
    const float *tl = (const float *)get("logit_diff.resid_pre")->data;
    for (int i = 0; i < 2 * T; i++) CHECK(fabs(grid[i] - tl[i]) < 1e-4, "cell %d: %g vs TL %g", i, grid[i], tl[i]);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
    cx_st_close(ref);
    ref = NULL;
}

/* A metric callback runs between the grid's runs: the context is held for the whole grid, so a
 * run of it from there is refused, and the grid fails cleanly (the context stays usable). */
typedef struct {
    circuits_context *ctx;
    int rc;
} rerun_state;
static int metric_reruns(const float *lg, int64_t b, int64_t t, int64_t v, float *value, void *u)
{
    (void)b, (void)t, (void)v;
    rerun_state *st = u;
    int32_t tok[2] = {1, 2};
    st->rc = circuits_context_forward(st->ctx, tok, 1, 2, NULL, NULL, NULL);
    *value = lg[0];
    return st->rc ? -1 : 0;
}

static void test_metric_callback_holds_context(void)
{
    circuits_model *m = load_case("tl_attn_only_2l_none");
    circuits_context *ctx = make_ctx(m, 0);
    circuits_config c = config_of(m);
    int32_t tok[B * T];
    make_tokens(tok, B * T, c.d_vocab, 7);
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, NULL, NULL, NULL));
    const float *clean[2];
    clean_resid_pre(cache, clean);
    rerun_state st = {ctx, 0};
    circuits_metric mc;
    circuits_metric_init(&mc);
    mc.kind = CIRCUITS_METRIC_CALLBACK, mc.fn = metric_reruns, mc.user_data = &st;
    float grid[2 * T];
    CHECK(circuits_context_activation_patch(ctx, CIRCUITS_PATCH_RESID_PRE, tok, B, T, clean, &mc, NULL, grid) ==
              CIRCUITS_E_CALLBACK,
          "a metric that runs the context must fail the grid");
    CHECK(st.rc == CIRCUITS_E_INVALID_ARGUMENT, "the run from the metric callback returned %d", st.rc);
    CHECK_OK(circuits_context_forward(ctx, tok, B, T, NULL, NULL, NULL));
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

static void test_refusals(void)
{
    circuits_model *m = load_case("tl_attn_only_2l_none");
    circuits_context *ctx = make_ctx(m, 0);
    int32_t tok[B * T] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    float x[B * T * 32], out[64];
    const float *clean[2] = {x, x}, *one_null[2] = {x, NULL};
    circuits_metric ld;
    circuits_metric_init(&ld);
    int32_t ans[B] = {1, 2}, bad_ans[B] = {1, 99};
    ld.answer = ld.wrong = ans;
    CALL_FAILS("patch_null_argument", circuits_context_activation_patch(ctx, 0, tok, B, T, clean, NULL, NULL, out),
               CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("patch_unknown_kind", circuits_context_activation_patch(ctx, 16, tok, B, T, clean, &ld, NULL, out),
               CIRCUITS_E_INVALID_ARGUMENT, "unknown patch kind");
    CALL_FAILS("patch_no_such_hook",
               circuits_context_activation_patch(ctx, CIRCUITS_PATCH_RESID_MID, tok, B, T, clean, &ld, NULL, out),
               CIRCUITS_E_NOT_FOUND, "no hook 'resid_mid'");
    CALL_FAILS("patch_clean_null", circuits_context_activation_patch(ctx, 0, tok, B, T, one_null, &ld, NULL, out),
               CIRCUITS_E_INVALID_ARGUMENT, "clean[1]");
    CALL_FAILS("patch_bad_shape", circuits_context_activation_patch(ctx, 0, tok, 0, T, clean, &ld, NULL, out),
               CIRCUITS_E_SHAPE, "at least 1");
    CALL_FAILS("patch_too_long", circuits_context_activation_patch(ctx, 0, tok, 1, 33, clean, &ld, NULL, out),
               CIRCUITS_E_RANGE, "n_ctx");
    circuits_patch_options o;
    circuits_patch_options_init(&o);
    o.incremental = 1;
    o.cells_per_run = -1;
    CALL_FAILS("patch_bad_cells_per_run", circuits_context_activation_patch(ctx, 0, tok, B, T, clean, &ld, &o, out),
               CIRCUITS_E_INVALID_ARGUMENT, "cells_per_run -1 < 0");
    o.cells_per_run = 0;
    o.incremental = 2;
    CALL_FAILS("patch_bad_incremental", circuits_context_activation_patch(ctx, 0, tok, B, T, clean, &ld, &o, out),
               CIRCUITS_E_INVALID_ARGUMENT, "incremental must be 0 or 1");
    ld.answer = bad_ans;
    CALL_FAILS("patch_bad_metric", circuits_context_activation_patch(ctx, 0, tok, B, T, clean, &ld, NULL, out),
               CIRCUITS_E_RANGE, "");
    const float dir[1] = {1.0f};
    circuits_metric hl;
    circuits_metric_init(&hl);
    hl.kind = CIRCUITS_METRIC_HOOK_LINEAR, hl.hook = "blocks.0.hook_resid_post", hl.direction = dir;
    CALL_FAILS("patch_metric_hook_linear", circuits_context_activation_patch(ctx, 0, tok, B, T, clean, &hl, NULL, out),
               CIRCUITS_E_INVALID_ARGUMENT, "the HOOK_LINEAR metric reads a hook point's activation, not the logits");
    int64_t shape[4];
    int32_t nd;
    CALL_FAILS("patch_grid_shape_kind", circuits_patch_grid_shape(m, -1, T, shape, &nd), CIRCUITS_E_INVALID_ARGUMENT,
               "unknown patch kind");
    circuits_context_free(ctx);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CASES_DIR PATCHING_REFERENCE_DIR [-v]\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    REF_DIR = argv[2];
    cat_verbose = argc > 3 && strcmp(argv[3], "-v") == 0;
    test_case("tl_2l_lnpre_gelu");
    test_case("tl_gqa_rotary_rms");
    test_case("tl_shortformer_relu");
    test_case("tl_attn_only_2l_none");
    test_registered_hook();
    test_metric_callback_holds_context();
    test_refusals();
    printf("largest |libcircuits - TL| / max(1, |grid|): %.3g; |incremental or batched - whole| / max(1, |grid|): %.3g\n", worst_tl,
           worst_incremental);
    return tu_finish("patching");
}
