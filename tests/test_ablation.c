/* Ablation (lib/analysis/ablate.c): zero, mean and resample ablation of a head, a neuron, a
 * position or a whole point give the logits of the same edit made by a registered hook (exact);
 * streaming means over batches equal the means of one whole-dataset cache; and the refusals
 * (named checks: docs/errors.md, "Ablation and patching"). */
#define TESTUTIL_API_HELPERS
#include "catalogue.h"
#include "rng.h"

enum { B = 2, T = 6, ROWS = 7 };

/* What the reference hook writes: the slice (head, neuron, position; -1 = all) of [B, ...] set
 * to 0, or to values[...] (mean), or to values[rows[b], ...] (resample). */
typedef struct manual {
    int64_t head, neuron, position;
    const float *values;
    const int64_t *rows;
} manual;

static int manual_hook(const circuits_tensor *t, void *u)
{
    const manual *m = u;
    int64_t row = t->strides[0];
    int32_t pa = t->head_axis == 1 ? 2 : 1; /* pattern: dest */
    for (int64_t b = 0; b < t->shape[0]; b++)
        for (int64_t i = 0; i < row; i++) {
            int64_t idx[8], r = i;
            for (int d = t->ndim - 1; d >= 1; d--) {
                idx[d] = r % t->shape[d];
                r /= t->shape[d];
            }
            if (m->position >= 0 && idx[pa] != m->position) continue;
            if (m->head >= 0 && idx[t->head_axis] != m->head) continue;
            if (m->neuron >= 0 && idx[t->ndim - 1] != m->neuron) continue;
            float v = !m->values ? 0.0f : m->rows ? m->values[m->rows[b] * row + i] : m->values[i];
            t->data[b * row + i] = v;
        }
    return CIRCUITS_HOOK_CONTINUE;
}

static circuits_model *model;
static circuits_context *ctx;
static circuits_config cfg;
static int32_t tokens[ROWS * T];

/* The ablated run's logits against a run with manual hook m at a.hook: equal bit for bit. */
static void same_as_hook(const char *what, const circuits_ablation *a, manual *m)
{
    size_t n = (size_t)B * T * cfg.d_vocab_out;
    float *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float)), *plain = malloc(n * sizeof(float));
    CHECK_OK(circuits_context_forward(ctx, tokens, B, T, plain, NULL, NULL));
    CHECK_OK(circuits_context_run_ablated(ctx, a, 1, tokens, B, T, got, NULL));
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_hook(ctx, a->hook, manual_hook, m, &id));
    CHECK_OK(circuits_context_forward(ctx, tokens, B, T, want, NULL, NULL));
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    CHECK(max_abs_diff(got, want, n) == 0.0, "%s: ablated logits differ from the hook's by %g", what,
          max_abs_diff(got, want, n));
    CHECK(max_abs_diff(got, plain, n) > 0.0, "%s: the ablation changed nothing", what);
    free(got);
    free(want);
    free(plain);
}

static void test_zero(void)
{
    circuits_ablation a;
    circuits_ablation_init(&a);
    a.hook = "z1";
    a.head = 1;
    manual m = {1, -1, -1, NULL, NULL};
    same_as_hook("zero head", &a, &m);
    a.hook = "blocks.0.mlp.hook_post";
    a.head = -1;
    a.neuron = 5;
    a.position = -2;
    manual m2 = {-1, 5, T - 2, NULL, NULL};
    same_as_hook("zero neuron at a position", &a, &m2);
    a.hook = "pattern1";
    a.neuron = -1;
    a.head = 0;
    a.position = 3;
    manual m3 = {0, -1, 3, NULL, NULL};
    same_as_hook("zero pattern row", &a, &m3);
}

static void test_mean(void)
{
    const char *hooks[2] = {"blocks.1.hook_resid_pre", "blocks.0.attn.hook_z"};
    int64_t D = cfg.d_model, HD = (int64_t)cfg.n_heads * cfg.d_head;
    float *mr = malloc((size_t)(T * D) * sizeof(float)), *mz = malloc((size_t)(T * HD) * sizeof(float));
    float *means[2] = {mr, mz};
    CHECK_OK(circuits_context_mean_activations(ctx, hooks, 2, tokens, ROWS, T, 3, means));
    /* against the mean of one cache of every row */
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, ROWS, T, hooks, 2, cache, NULL, NULL, NULL));
    for (int k = 0; k < 2; k++) {
        circuits_tensor t;
        CHECK_OK(circuits_cache_get(cache, hooks[k], &t));
        int64_t row = t.strides[0];
        double worst = 0;
        for (int64_t i = 0; i < row; i++) {
            double s = 0;
            for (int r = 0; r < ROWS; r++) s += t.data[r * row + i];
            worst = fmax(worst, fabs(s / ROWS - means[k][i]));
        }
        CHECK(worst < 1e-6, "%s: streaming mean off by %g", hooks[k], worst);
    }
    circuits_cache_free(cache);
    circuits_ablation a;
    circuits_ablation_init(&a);
    a.kind = CIRCUITS_ABLATE_MEAN;
    a.hook = "z0";
    a.head = 1;
    a.values = mz;
    manual m = {1, -1, -1, mz, NULL};
    same_as_hook("mean head", &a, &m);
    a.hook = "resid_pre1";
    a.head = -1;
    a.position = 2;
    a.values = mr;
    manual m2 = {-1, -1, 2, mr, NULL};
    same_as_hook("mean position", &a, &m2);
    free(mr);
    free(mz);
}

/* A point fired several times per run (ln1 on per-head inputs fires for the query, key and value
 * inputs): its mean is that of the value run_with_cache keeps, the last firing, not their sum. */
static void test_mean_split_heads(void)
{
    circuits_context_options o;
    circuits_context_options_init(&o);
    o.use_split_qkv_input = 1;
    circuits_context *sctx;
    CHECK_OK(circuits_context_create(&sctx, model, &o));
    const char *hooks[1] = {"blocks.0.ln1.hook_scale"};
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(sctx, tokens, ROWS, T, hooks, 1, cache, NULL, NULL, NULL));
    circuits_tensor t;
    CHECK_OK(circuits_cache_get(cache, hooks[0], &t));
    int64_t row = t.strides[0];
    float *m = malloc((size_t)row * sizeof(float));
    CHECK_OK(circuits_context_mean_activations(sctx, hooks, 1, tokens, ROWS, T, 3, &m));
    double worst = 0;
    for (int64_t i = 0; i < row; i++) {
        double s = 0;
        for (int r = 0; r < ROWS; r++) s += t.data[r * row + i];
        worst = fmax(worst, fabs(s / ROWS - m[i]));
    }
    CHECK(worst < 1e-5, "ln1.hook_scale under use_split_qkv_input: streaming mean off by %g", worst);
    free(m);
    circuits_cache_free(cache);
    circuits_context_free(sctx);
}

static void test_resample(void)
{
    /* source: rows 2 .. 6 of the dataset, 5 rows */
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    const char *h = "blocks.1.attn.hook_v";
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens + 2 * T, 5, T, &h, 1, cache, NULL, NULL, NULL));
    circuits_tensor src;
    CHECK_OK(circuits_cache_get(cache, h, &src));
    circuits_ablation a;
    circuits_ablation_init(&a);
    a.kind = CIRCUITS_ABLATE_RESAMPLE;
    a.hook = h;
    a.head = 0;
    a.values = src.data;
    a.source_batch = 5;
    a.seed = 42;
    int64_t rows[B];
    uint64_t st = 42;
    for (int b = 0; b < B; b++) rows[b] = (int64_t)(cx_splitmix64(&st) % 5);
    manual m = {0, -1, -1, src.data, rows};
    same_as_hook("resample head", &a, &m);
    circuits_cache_free(cache);
}

static void test_refusals(void)
{
    circuits_ablation a;
    circuits_ablation_init(&a);
    float lg[1];
    a.hook = "no_such_hook";
    CALL_FAILS("ablate_no_such_hook", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "no_such_hook");
    a.hook = "blocks.*.attn.hook_z";
    CALL_FAILS("ablate_several_points", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "selects 2 hook points");
    a.hook = "resid_pre0";
    a.head = 0;
    CALL_FAILS("ablate_no_head_axis", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "has no head axis");
    a.hook = "z0";
    a.head = 7;
    CALL_FAILS("ablate_head_range", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_RANGE, "head 7");
    a.head = -1;
    a.position = T;
    CALL_FAILS("ablate_position_range", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_RANGE, "position 6");
    a.position = CIRCUITS_ALL_POSITIONS;
    a.neuron = 1000;
    CALL_FAILS("ablate_neuron_range", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_RANGE, "neuron 1000");
    a.neuron = -1;
    a.kind = CIRCUITS_ABLATE_MEAN;
    CALL_FAILS("ablate_no_values", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "needs values");
    a.kind = CIRCUITS_ABLATE_RESAMPLE;
    a.values = lg;
    CALL_FAILS("ablate_source_batch", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_SHAPE, "source_batch 0");
    a.kind = 9;
    CALL_FAILS("ablate_unknown_kind", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "unknown kind 9");
    a.size = 0;
    CALL_FAILS("ablate_size_zero", circuits_context_run_ablated(ctx, &a, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "size 0");
    CALL_FAILS("ablate_null", circuits_context_run_ablated(ctx, NULL, 1, tokens, B, T, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ablations is NULL");
    const char *hooks[1] = {"z0"};
    float *means[1] = {lg};
    CALL_FAILS("means_bad_shape", circuits_context_mean_activations(ctx, hooks, 1, tokens, 0, T, 1, means),
               CIRCUITS_E_SHAPE, "must be at least 1");
    CALL_FAILS("means_null", circuits_context_mean_activations(ctx, hooks, 1, NULL, 1, T, 1, means),
               CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
}

/* ln1 on per-head inputs under grouped-query attention fires with n_heads (the query input) and
 * n_key_value_heads (key, value) heads: mean or resample values of one shape fit only some of
 * the firings (reading past them at the others), so they are refused; zero ablation fits all. */
static void test_split_gqa_refusal(void)
{
    circuits_model *gm = load_case("tl_gqa_rotary_rms");
    circuits_config gc = config_of(gm);
    CHECK(gc.n_key_value_heads != gc.n_heads, "tl_gqa_rotary_rms is not grouped-query");
    circuits_context_options o;
    circuits_context_options_init(&o);
    o.use_split_qkv_input = 1;
    circuits_context *gctx;
    CHECK_OK(circuits_context_create(&gctx, gm, &o));
    int32_t toks[B * T];
    make_tokens(toks, B * T, gc.d_vocab, 3);
    size_t n = (size_t)T * (size_t)gc.n_heads * (size_t)gc.d_model * 4;
    float *vals = calloc(n, sizeof(float));
    circuits_ablation a;
    circuits_ablation_init(&a);
    a.hook = "blocks.0.ln1.hook_scale";
    CHECK_OK(circuits_context_run_ablated(gctx, &a, 1, toks, B, T, NULL, NULL));
    a.kind = CIRCUITS_ABLATE_MEAN;
    a.values = vals;
    CALL_FAILS("ablate_split_gqa_values", circuits_context_run_ablated(gctx, &a, 1, toks, B, T, NULL, NULL),
               CIRCUITS_E_UNSUPPORTED, "key/value heads");
    free(vals);
    circuits_context_free(gctx);
    circuits_model_free(gm);
}

/* hook_tokens holds int32_t ids: a float mean of their bits is not a mean of anything. */
static void test_means_of_tokens(void)
{
    circuits_context_options o;
    circuits_context_options_init(&o);
    o.use_hook_tokens = 1;
    circuits_context *tctx;
    CHECK_OK(circuits_context_create(&tctx, model, &o));
    const char *hooks[1] = {"hook_tokens"};
    float m[T];
    float *means[1] = {m};
    CALL_FAILS("means_of_tokens", circuits_context_mean_activations(tctx, hooks, 1, tokens, ROWS, T, 3, means),
               CIRCUITS_E_INVALID_ARGUMENT, "no mean");
    circuits_context_free(tctx);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASES_DIR [-v]\n", argv[0]);
        return 2;
    }
    g_cases = argv[1];
    cat_verbose = argc > 2 && strcmp(argv[2], "-v") == 0;
    model = load_case("tl_2l_lnpre_gelu");
    ctx = make_ctx(model, 0);
    cfg = config_of(model);
    make_tokens(tokens, ROWS * T, cfg.d_vocab, 7);
    test_zero();
    test_mean();
    test_mean_split_heads();
    test_resample();
    test_refusals();
    test_split_gqa_refusal();
    test_means_of_tokens();
    circuits_context_free(ctx);
    circuits_model_free(model);
    return tu_finish("ablation");
}
