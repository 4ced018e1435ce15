/* Path patching (lib/analysis/path_patch.c) against plain TransformerLens hooks following ARENA's
 * implementation (tests/reference/toolkit/path_patching/, written by
 * tests/reference/generate_path_patching.py): the per-sender grids (receiver the logits, with MLPs
 * recomputed and frozen; receivers every q / k / v head of the last layer) and explicit sender
 * sets with mixed receivers, metric and logits. Invariants: no sender gives the clean run,
 * corrupted == clean gives the clean metric in every cell, a sender after every receiver gives the
 * clean metric, the caller's hooks stay registered and fire, on four more block structures (parallel
 * attention and MLP, hook_result, attention only, Gemma 2's norms) too. Refusals are named checks
 * (docs/errors.md, "Path patching").
 * Usage: test_path_patching REFERENCE_DIR CASES_DIR */
#include "catalogue.h"

#include <jansson.h>
#include <math.h>

#include "../lib/io/safetensors.h"
#include "reference_get.h"

#define TOL 1e-5

static double worst;

static const int32_t *ints(const char *key)
{
    const cx_st_tensor *t = get(key);
    if (t->dtype != CX_DT_I32) {
        fprintf(stderr, "%s is not int32\n", key);
        exit(2);
    }
    return (const int32_t *)(const void *)t->data;
}

static double diff_to(const char *key, const float *x, size_t n)
{
    const cx_st_tensor *t = get(key);
    CHECK(t->numel == n, "%s has %zu values, want %zu", key, t->numel, n);
    double d = 0;
    for (size_t i = 0; i < n && i < t->numel; i++) d = fmax(d, fabs((double)x[i] - cx_st_read_f32(t, i)));
    worst = fmax(worst, d);
    CHECK(d <= TOL, "%s: max-abs diff %.3g (tol %.0e)", key, d, TOL);
    return d;
}

static int input_of(const char *s) { return s[0] == 'q' ? CIRCUITS_READER_Q : s[0] == 'k' ? CIRCUITS_READER_K : CIRCUITS_READER_V; }

/* [[layer, head, "q"], ...] (or [[layer, head], ...]) into heads; returns the count. */
static int64_t heads_of(json_t *a, circuits_path_head *heads)
{
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        heads[i].layer = (int32_t)json_integer_value(json_array_get(e, 0));
        heads[i].head = (int32_t)json_integer_value(json_array_get(e, 1));
        json_t *in = json_array_get(e, 2);
        heads[i].input = in ? input_of(json_string_value(in)) : 0;
    }
    return (int64_t)json_array_size(a);
}

typedef struct seen {
    int calls;
} seen;

static int count_hook(const circuits_tensor *act, void *user)
{
    (void)act;
    ((seen *)user)->calls++;
    return CIRCUITS_HOOK_CONTINUE;
}

static int stop_hook(const circuits_tensor *act, void *user)
{
    (void)act, (void)user;
    return CIRCUITS_HOOK_STOP;
}

/* Path patching called from a hook callback of the context it would run. */
typedef struct reentry {
    circuits_context *ctx;
    const int32_t *clean;
    int64_t B, T;
    const circuits_metric *m;
    int rc;
} reentry;

static int reenter_hook(const circuits_tensor *act, void *user)
{
    (void)act;
    reentry *r = user;
    float v = 0;
    r->rc = circuits_context_path_patch(r->ctx, r->clean, r->clean, r->B, r->T, NULL, 0, r->m, NULL, &v, NULL);
    return CIRCUITS_HOOK_CONTINUE;
}

static int path_patch_from_callback(circuits_context *ctx, const int32_t *clean, int64_t B, int64_t T,
                                    const circuits_metric *m)
{
    reentry r = {ctx, clean, B, T, m, CIRCUITS_OK};
    circuits_hook_id id = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", reenter_hook, &r, &id));
    CHECK_OK(circuits_context_forward(ctx, clean, B, T, NULL, NULL, NULL));
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    return r.rc;
}

static void refusals(circuits_context *ctx, const int32_t *clean, const int32_t *corrupted, int64_t B, int64_t T,
                     const circuits_metric *m, int32_t n_layers, int32_t n_heads, int32_t n_kv)
{
    float v = 0, grid[64];
    circuits_path_patch_options o;
    circuits_path_patch_options_init(&o);
    circuits_path_head s[2] = {{0, 0, 0}, {0, 0, 0}};
    circuits_path_head r = {n_layers - 1, n_kv, CIRCUITS_READER_K};
    CALL_FAILS("path_patch_null", circuits_context_path_patch(ctx, NULL, corrupted, B, T, s, 1, m, NULL, &v, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx, clean and corrupted must not be NULL");
    CALL_FAILS("path_sweep_out_null", circuits_context_path_patch_sweep(ctx, clean, corrupted, B, T, m, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "out is NULL");
    CALL_FAILS("path_patch_metric_null", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, 1, NULL, NULL, &v, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "metric is NULL");
    const float dir[1] = {1.0f};
    circuits_metric hl;
    circuits_metric_init(&hl);
    hl.kind = CIRCUITS_METRIC_HOOK_LINEAR, hl.hook = "blocks.0.hook_resid_post", hl.direction = dir;
    CALL_FAILS("path_patch_metric_hook_linear", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, 1, &hl, NULL, &v, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "the HOOK_LINEAR metric reads a hook point's activation, not the logits");
    CALL_FAILS("path_patch_shape", circuits_context_path_patch(ctx, clean, corrupted, B, 0, s, 1, m, NULL, &v, NULL),
               CIRCUITS_E_SHAPE, "batch and pos must be at least 1");
    CALL_FAILS("path_patch_too_long", circuits_context_path_patch(ctx, clean, corrupted, B, 1 << 20, s, 1, m, NULL, &v, NULL),
               CIRCUITS_E_RANGE, "exceed the model's n_ctx");
    CALL_FAILS("path_patch_batch_too_large",
               circuits_context_path_patch_sweep(ctx, clean, corrupted, INT64_MAX / 4, T, m, NULL, grid), CIRCUITS_E_RANGE,
               "is too large");
    CALL_FAILS("path_patch_senders_null", circuits_context_path_patch(ctx, clean, corrupted, B, T, NULL, 1, m, NULL, &v, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "1 senders but the array is NULL");
    CALL_FAILS("path_patch_senders_negative", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, -1, m, NULL, &v, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "n_senders -1 is negative");
    CALL_FAILS("path_patch_sender_repeated", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, 2, m, NULL, &v, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "sender 1 repeats sender 0");
    s[1].head = n_heads;
    CALL_FAILS("path_patch_sender_outside", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, 2, m, NULL, &v, NULL),
               CIRCUITS_E_RANGE, "is outside");
    o.receivers = &r;
    o.n_receivers = 1;
    CALL_FAILS("path_patch_receiver_outside", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, 1, m, &o, &v, NULL),
               CIRCUITS_E_RANGE, "receiver 0 (layer");
    r.head = 0;
    r.input = 7;
    CALL_FAILS("path_patch_receiver_input", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, 1, m, &o, &v, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "is not CIRCUITS_READER_Q, _K or _V");
    o.receivers = NULL;
    CALL_FAILS("path_patch_receivers_null", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, 1, m, &o, &v, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "1 receivers but the array is NULL");
    o.n_receivers = 0;
    o.freeze_mlps = 2;
    CALL_FAILS("path_patch_freeze_mlps", circuits_context_path_patch_sweep(ctx, clean, corrupted, B, T, m, &o, grid),
               CIRCUITS_E_INVALID_ARGUMENT, "freeze_mlps must be 0 or 1");
    o.freeze_mlps = 0;
    o.size = 3;
    CALL_FAILS("path_patch_options_size", circuits_context_path_patch_sweep(ctx, clean, corrupted, B, T, m, &o, grid),
               CIRCUITS_E_VERSION, "options size 3");
    CALL_FAILS("path_patch_from_callback", path_patch_from_callback(ctx, clean, B, T, m), CIRCUITS_E_INVALID_ARGUMENT,
               "called from a callback of the same context");
    /* a caller's hook that stops a run stops the operation */
    circuits_hook_id id = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", stop_hook, NULL, &id));
    CALL_FAILS("path_patch_stopped", circuits_context_path_patch(ctx, clean, corrupted, B, T, s, 1, m, NULL, &v, NULL),
               CIRCUITS_E_STOPPED, "run stopped by the hook callback");
    CHECK_OK(circuits_context_remove_hook(ctx, id));
}

/* The case's model, unprocessed (as the references run it), its config, and a context. */
static circuits_model *load_case(const char *cases_dir, const char *name, int use_attn_result, circuits_config *c,
                                 circuits_context **ctx)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", cases_dir, name);
    circuits_load_options lo;
    circuits_load_options_init(&lo);
    lo.fold_ln = lo.center_writing_weights = lo.center_unembed = lo.fold_value_biases = 0;
    circuits_model *model = NULL;
    CHECK_OK(circuits_model_load(&model, path, &lo));
    if (!model) exit(2);
    *c = (circuits_config){.size = sizeof *c};
    circuits_model_config(model, c);
    circuits_context_options co;
    circuits_context_options_init(&co);
    co.use_attn_result = use_attn_result;
    *ctx = NULL;
    CHECK_OK(circuits_context_create(ctx, model, &co));
    if (!*ctx) exit(2);
    return model;
}

static void check_case(const char *ref_dir, const char *cases_dir, const char *name, json_t *meta)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.safetensors", ref_dir, name);
    if (cx_st_open_file(&ref, path)) {
        fprintf(stderr, "%s\n", circuits_last_error());
        exit(2);
    }
    circuits_config c;
    circuits_context *ctx;
    circuits_model *model = load_case(cases_dir, name, 0, &c, &ctx);
    const int64_t B = json_integer_value(json_object_get(meta, "B")), T = json_integer_value(json_object_get(meta, "T"));
    const int32_t L = c.n_layers, H = c.n_heads, V = c.d_vocab_out;
    const int32_t *clean = ints("clean_tokens"), *corrupted = ints("corrupted_tokens");
    circuits_metric m;
    circuits_metric_init(&m);
    m.answer = ints("answer");
    m.wrong = ints("wrong");
    size_t nl = (size_t)(B * T * V);
    float *logits = malloc(nl * sizeof(float)), grid[64], v = 0;
    if (!logits || L * H > 64) exit(2);
    circuits_path_patch_options o;
    circuits_path_patch_options_init(&o);

    /* a caller's hook stays registered and fires in every run */
    seen counted = {0};
    circuits_hook_id id = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.hook_resid_pre", count_hook, &counted, &id));

    CHECK_OK(circuits_context_path_patch_sweep(ctx, clean, corrupted, B, T, &m, &o, grid));
    printf("%s sweep:logits                max-abs %.3g\n", name, diff_to("sweep:logits", grid, (size_t)(L * H)));
    CHECK(counted.calls == 3, "the caller's hook fired %d times (clean, corrupted, one run of the %d layer-0 cells)",
          counted.calls, H);
    o.freeze_mlps = 1;
    CHECK_OK(circuits_context_path_patch_sweep(ctx, clean, corrupted, B, T, &m, &o, grid));
    printf("%s sweep:logits:freeze_mlps    max-abs %.3g\n", name,
           diff_to("sweep:logits:freeze_mlps", grid, (size_t)(L * H)));
    o.freeze_mlps = 0;
    circuits_path_head recv[16], senders[16];
    json_t *receivers = json_object_get(meta, "receivers");
    static const char *const inputs[3] = {"q", "k", "v"};
    for (int k = 0; k < 3; k++) {
        o.receivers = recv;
        o.n_receivers = heads_of(json_object_get(receivers, inputs[k]), recv);
        CHECK_OK(circuits_context_path_patch_sweep(ctx, clean, corrupted, B, T, &m, &o, grid));
        char key[64];
        snprintf(key, sizeof key, "sweep:heads:%s", inputs[k]);
        printf("%s %-28s max-abs %.3g\n", name, key, diff_to(key, grid, (size_t)(L * H)));
    }

    const char *sname;
    json_t *s;
    json_object_foreach(json_object_get(meta, "singles"), sname, s)
    {
        int64_t ns = heads_of(json_object_get(s, "senders"), senders);
        json_t *r = json_object_get(s, "receivers");
        o.receivers = json_is_null(r) ? NULL : recv;
        o.n_receivers = json_is_null(r) ? 0 : heads_of(r, recv);
        o.freeze_mlps = json_is_true(json_object_get(s, "freeze_mlps"));
        CHECK_OK(circuits_context_path_patch(ctx, clean, corrupted, B, T, senders, ns, &m, &o, &v, logits));
        char key[128];
        snprintf(key, sizeof key, "single:%s:logits", sname);
        double dl = diff_to(key, logits, nl);
        snprintf(key, sizeof key, "single:%s:metric", sname);
        printf("%s single:%-22s logits max-abs %.3g, metric max-abs %.3g\n", name, sname, dl, diff_to(key, &v, 1));
        /* the metric alone (logits at the metric's positions only: a GEMM of other rows) */
        float v2 = 0;
        CHECK_OK(circuits_context_path_patch(ctx, clean, corrupted, B, T, senders, ns, &m, &o, &v2, NULL));
        CHECK(fabs(v2 - v) <= 1e-6, "%s: metric alone %.9g, with the logits %.9g", sname, v2, v);
    }

    /* invariants: no sender is the clean run (every head frozen at the value it has);
     * corrupted == clean is the clean metric everywhere; a sender after every receiver has no path */
    float clean_metric = cx_st_read_f32(get("clean_metric"), 0);
    circuits_path_head last_q = {L - 1, 0, CIRCUITS_READER_Q};
    o.receivers = NULL;
    o.n_receivers = 0;
    for (int with_recv = 0; with_recv < 2; with_recv++) {
        if (with_recv) o.receivers = &last_q, o.n_receivers = 1;
        CHECK_OK(circuits_context_path_patch(ctx, clean, corrupted, B, T, NULL, 0, &m, &o, &v, logits));
        diff_to("clean_logits", logits, nl);
        CHECK(fabs(v - clean_metric) <= TOL, "no sender: %g, clean %g", v, clean_metric);
        CHECK_OK(circuits_context_path_patch_sweep(ctx, clean, clean, B, T, &m, &o, grid));
        for (int i = 0; i < L * H; i++)
            CHECK(fabs(grid[i] - clean_metric) <= TOL, "corrupted == clean: cell %d is %g, clean %g", i, grid[i], clean_metric);
        senders[0] = (circuits_path_head){L - 1, H - 1, 0};
        CHECK_OK(circuits_context_path_patch(ctx, clean, corrupted, B, T, senders, 1, &m, &o, &v, NULL));
        if (with_recv) CHECK(fabs(v - clean_metric) <= TOL, "no path: %g, clean %g", v, clean_metric);
    }
    circuits_path_head same_layer[2] = {{L - 1, 0, CIRCUITS_READER_Q}, {L - 1, 1, CIRCUITS_READER_V}};
    o.receivers = same_layer;
    o.n_receivers = 2;
    CHECK_OK(circuits_context_path_patch(ctx, clean, corrupted, B, T, senders, 1, &m, &o, &v, NULL));
    CHECK(fabs(v - clean_metric) <= TOL, "sender in the receivers' layer: %g, clean %g", v, clean_metric);

    int n_kv = c.n_key_value_heads;
    refusals(ctx, clean, corrupted, B, T, &m, L, H, n_kv);
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    free(logits);
    circuits_context_free(ctx);
    circuits_model_free(model);
    cx_st_close(ref);
}

/* Other block structures, no reference: no sender is the clean run, corrupted == clean is the
 * clean metric in every cell, and every sweep cell equals the single call with that sender. */
static void check_invariants(const char *cases_dir, const char *name, int use_attn_result, int64_t B, int64_t T,
                             bool big)
{
    circuits_config c;
    circuits_context *ctx;
    circuits_model *model = load_case(cases_dir, name, use_attn_result, &c, &ctx);
    const int32_t L = c.n_layers, H = c.n_heads, V = c.d_vocab_out;
    int32_t *clean = malloc((size_t)(B * T) * sizeof(int32_t)), *corrupted = malloc((size_t)(B * T) * sizeof(int32_t));
    int32_t *answer = malloc((size_t)B * sizeof(int32_t)), *wrong = malloc((size_t)B * sizeof(int32_t));
    if (!clean || !corrupted || !answer || !wrong) exit(2);
    for (int64_t b = 0; b < B; b++) answer[b] = (int32_t)(b % 3 + 1), wrong[b] = (int32_t)((b + 3) % 4);
    for (int64_t i = 0; i < B * T; i++) clean[i] = corrupted[i] = (int32_t)((i * 7 + 3) % c.d_vocab);
    for (int64_t b = 0; b < B; b++) corrupted[b * T + 1 + b % (T - 1)] = (int32_t)(c.d_vocab - 1);
    circuits_metric m;
    circuits_metric_init(&m);
    m.answer = answer;
    m.wrong = wrong;
    float *want = malloc((size_t)(B * T * V) * sizeof(float)), *got = malloc((size_t)(B * T * V) * sizeof(float));
    float grid[64], v = 0, clean_metric = 0;
    if (!want || !got || L * H > 64) exit(2);
    CHECK_OK(circuits_context_forward(ctx, clean, B, T, want, NULL, NULL));
    CHECK_OK(circuits_metric_eval(&m, want, B, T, V, &clean_metric));
    circuits_path_head recv[2] = {{L - 1, 0, CIRCUITS_READER_Q}, {L - 1, 0, CIRCUITS_READER_V}};
    circuits_path_patch_options o;
    circuits_path_patch_options_init(&o);
    double worst_inv = 0;
    for (int variant = 0; variant < 4; variant += big ? 3 : 1) { /* big: two variants, layer 0's cells */
        o.freeze_mlps = variant & 1;
        o.receivers = variant & 2 ? recv : NULL;
        o.n_receivers = variant & 2 ? 2 : 0;
        CHECK_OK(circuits_context_path_patch(ctx, clean, corrupted, B, T, NULL, 0, &m, &o, &v, got));
        for (int i = 0; i < B * T * V; i++) worst_inv = fmax(worst_inv, fabs(got[i] - want[i]));
        CHECK_OK(circuits_context_path_patch_sweep(ctx, clean, clean, B, T, &m, &o, grid));
        for (int i = 0; i < L * H; i++) worst_inv = fmax(worst_inv, fabs(grid[i] - clean_metric));
        CHECK_OK(circuits_context_path_patch_sweep(ctx, clean, corrupted, B, T, &m, &o, grid));
        for (int32_t l = 0; l < (big ? 1 : L); l++)
            for (int32_t h = 0; h < H; h++) {
                circuits_path_head s = {l, h, 0};
                CHECK_OK(circuits_context_path_patch(ctx, clean, corrupted, B, T, &s, 1, &m, &o, &v, NULL));
                CHECK(fabs(v - grid[l * H + h]) <= 1e-6, "%s variant %d: cell (%d, %d) %g, single call %g", name,
                      variant, l, h, grid[l * H + h], v);
            }
    }
    printf("%s [%lld, %lld]: invariants max-abs %.3g\n", name, (long long)B, (long long)T, worst_inv);
    CHECK(worst_inv <= TOL, "%s: no sender / corrupted == clean differ from the clean run by %.3g", name, worst_inv);
    free(want);
    free(got);
    free(clean);
    free(corrupted);
    free(answer);
    free(wrong);
    circuits_context_free(ctx);
    circuits_model_free(model);
}

int main(int argc, char **argv)
{
    int a = 1;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) cat_verbose = 1, a++;
    if (argc - a != 2) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/case.json", argv[a]);
    json_error_t err;
    json_t *meta = json_load_file(path, 0, &err);
    if (!meta) {
        fprintf(stderr, "%s: %s\n", path, err.text);
        return 2;
    }
    const char *name;
    json_t *cm;
    bool first = true;
    json_object_foreach(json_object_get(meta, "cases"), name, cm)
    {
        if (!first) cat_verbose = 0; /* one catalogue row per check */
        check_case(argv[a], argv[a + 1], name, cm);
        first = false;
    }
    json_decref(meta);
    check_invariants(argv[a + 1], "tl_parallel_ln", 0, 2, 5, false);
    check_invariants(argv[a + 1], "tl_gelu_new_attn_result", 1, 2, 5, false);
    check_invariants(argv[a + 1], "tl_attn_only_2l_none", 0, 2, 5, false);
    check_invariants(argv[a + 1], "tl_gemma2_block", 0, 2, 5, false);
    /* 520 token rows: a sweep's runs hold 3 of the 4 cells of a layer, then 1 (the logits with
     * MLPs recomputed, heads with MLPs frozen; single calls for layer 0's cells) */
    check_invariants(argv[a + 1], "tl_gelu_new_attn_result", 1, 20, 26, true);
    printf("path patching vs TransformerLens (ARENA's hooks): max-abs %.3g over every grid, metric and logits\n", worst);
    return tu_finish("test_path_patching");
}
