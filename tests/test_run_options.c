/* circuits_context_run: stop_at_layer / start_at_layer (TransformerLens's semantics) and logits
 * at chosen positions, on reference cases, against TransformerLens's hook values and the full
 * forward; and every bad combination of options. Usage: test_run_options CASE_DIR... */
#include "testutil.h"

#include <math.h>

#include "../lib/io/safetensors.h"

#define TOL 1e-4 /* TransformerLens's hook tolerance, as in test_reference.c */

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

/* max |got - TransformerLens| for a hook stored in expected.safetensors; -1 if not stored */
static double tl_diff(const cx_st_set *expected, const char *hook, const float *got)
{
    char key[160];
    snprintf(key, sizeof key, "hook:%s", hook);
    const cx_st_tensor *t = cx_st_find(expected, key);
    if (!t) return -1.0;
    double m = 0.0;
    for (size_t i = 0; i < t->numel; i++) m = fmax(m, fabs((double)got[i] - cx_st_read_f32(t, i)));
    return m;
}

typedef struct seen_shape { int64_t shape[4]; int32_t ndim; int calls; } seen_shape;

static int record_shape(const circuits_tensor *t, void *u)
{
    seen_shape *s = u;
    s->ndim = t->ndim;
    memcpy(s->shape, t->shape, sizeof s->shape);
    s->calls++;
    return CIRCUITS_HOOK_CONTINUE;
}

static int count_calls(const circuits_tensor *t, void *u)
{
    (void)t;
    (*(int *)u)++;
    return CIRCUITS_HOOK_CONTINUE;
}

/* The hook holding the residual stream before block k: resid_pre k, or after the last block. */
static void resid_before_block(char *buf, size_t n, int64_t k, int64_t L)
{
    if (k < L) snprintf(buf, n, "blocks.%lld.hook_resid_pre", (long long)k);
    else snprintf(buf, n, "blocks.%lld.hook_resid_post", (long long)(L - 1));
}

static void check_case(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    cx_st_set *expected = NULL;
    if (cx_st_open_file(&expected, path)) {
        CHECK(0, "%s: %s", dir, circuits_last_error());
        return;
    }
    const cx_st_tensor *tt = cx_st_find(expected, "tokens");
    int64_t B = tt->shape[0], T = tt->shape[1];
    const int32_t *tokens = (const int32_t *)tt->data;

    circuits_load_options raw; /* the references are of the unprocessed model */
    circuits_load_options_init(&raw);
    raw.fold_ln = raw.center_writing_weights = raw.center_unembed = raw.fold_value_biases = 0;
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, dir, &raw));
    if (!m) return;
    circuits_config c = {.size = sizeof c};
    circuits_model_config(m, &c);
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    int64_t L = c.n_layers, D = c.d_model, V = c.d_vocab_out;
    size_t nres = (size_t)(B * T * D), nlog = (size_t)(B * T * V);
    float *logits = malloc(nlog * sizeof *logits), *out = malloc(nlog * sizeof *out);
    float *res = malloc(nres * sizeof *res);
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, NULL, NULL));

    circuits_run_options o;
    circuits_run_options_init(&o);
    CHECK(o.size == sizeof o && o.start_at_layer == CIRCUITS_LAYER_NONE && o.stop_at_layer == CIRCUITS_LAYER_NONE &&
              !o.input && !o.logit_positions,
          "defaults: a full run");
    /* defaults (and NULL options) = circuits_context_forward, bit for bit */
    CHECK_OK(circuits_context_run(ctx, &o, tokens, B, T, out));
    CHECK(memcmp(out, logits, nlog * sizeof *out) == 0, "%s: run with default options differs from forward", dir);
    CHECK_OK(circuits_context_run(ctx, NULL, tokens, B, T, out));
    CHECK(memcmp(out, logits, nlog * sizeof *out) == 0, "%s: run with NULL options differs from forward", dir);

    /* stop_at_layer k: the residual stream before block k; k = L: after the last block (before
     * ln_final), as TransformerLens returns it. Negative k counts from the end. */
    double worst_tl = 0.0;
    for (int64_t k = 0; k <= L; k++) {
        char hook[64];
        resid_before_block(hook, sizeof hook, k, L);
        circuits_tensor want;
        CHECK_OK(circuits_cache_get(cache, hook, &want));
        for (int neg = 0; neg < 2; neg++) {
            if (neg && k == L) continue; /* -0 is 0 */
            o.stop_at_layer = (int32_t)(neg ? k - L : k);
            memset(res, 0xff, nres * sizeof *res);
            CHECK_OK(circuits_context_run(ctx, &o, tokens, B, T, res));
            CHECK(memcmp(res, want.data, nres * sizeof *res) == 0, "%s: stop_at_layer %d != %s", dir,
                  o.stop_at_layer, hook);
        }
        double d = tl_diff(expected, hook, res);
        CHECK(d <= TOL, "%s: stop_at_layer %lld vs TransformerLens's %s: %.3g", dir, (long long)k, hook, d);
        worst_tl = fmax(worst_tl, d);
    }
    /* hooks of blocks at or after the stop do not fire, nor ln_final / unembed */
    int after = 0, before = 0;
    circuits_hook_id id1, id2;
    char name[64];
    snprintf(name, sizeof name, "blocks.%lld.hook_resid_pre", (long long)(L - 1));
    CHECK_OK(circuits_context_add_hook(ctx, name, count_calls, &after, &id1));
    CHECK_OK(circuits_context_add_hook(ctx, "hook_embed", count_calls, &before, &id2));
    o.stop_at_layer = (int32_t)(L - 1);
    CHECK_OK(circuits_context_run(ctx, &o, tokens, B, T, res));
    CHECK(after == 0 && before == 1, "%s: stop_at_layer %lld fired %d hooks at/after the stop, %d before", dir,
          (long long)(L - 1), after, before);
    o.stop_at_layer = CIRCUITS_LAYER_NONE;

    /* start_at_layer k from the cached resid_pre k: the same logits as the full run, bit for bit;
     * the embedding hooks do not fire. k = L runs ln_final and the unembedding only. */
    for (int64_t k = 0; k <= L; k++) {
        char hook[64];
        resid_before_block(hook, sizeof hook, k, L);
        circuits_tensor in;
        CHECK_OK(circuits_cache_get(cache, hook, &in));
        o.start_at_layer = (int32_t)(k == L || k % 2 ? k : k - L); /* both signs */
        o.input = in.data;
        before = 0;
        CHECK_OK(circuits_context_run(ctx, &o, NULL, B, T, out)); /* tokens may be NULL */
        CHECK(memcmp(out, logits, nlog * sizeof *out) == 0, "%s: start_at_layer %d changes the logits", dir,
              o.start_at_layer);
        CHECK(before == 0, "%s: start_at_layer fired hook_embed", dir);
    }
    /* a stop and a start together: blocks [1, L-1) in the middle */
    if (L >= 2) {
        circuits_tensor in, want;
        CHECK_OK(circuits_cache_get(cache, "blocks.1.hook_resid_pre", &in));
        snprintf(name, sizeof name, "blocks.%lld.hook_resid_pre", (long long)(L - 1));
        CHECK_OK(circuits_cache_get(cache, name, &want));
        o.start_at_layer = 1;
        o.input = in.data;
        o.stop_at_layer = -1;
        CHECK_OK(circuits_context_run(ctx, &o, tokens, B, T, res));
        CHECK(memcmp(res, want.data, nres * sizeof *res) == 0, "%s: start 1 stop -1", dir);
    }
    circuits_context_remove_hook(ctx, id1);
    circuits_context_remove_hook(ctx, id2);
    circuits_run_options_init(&o);

    /* logits at chosen positions = those rows of the full logits; unembed.hook_out sees [B, n, V] */
    int64_t pos[3] = {-1, 0, T / 2};
    o.logit_positions = pos;
    o.n_logit_positions = 3;
    seen_shape seen = {0};
    CHECK_OK(circuits_context_add_hook(ctx, "unembed.hook_out", record_shape, &seen, &id1));
    CHECK_OK(circuits_context_run(ctx, &o, tokens, B, T, out));
    CHECK(seen.calls == 1 && seen.ndim == 3 && seen.shape[0] == B && seen.shape[1] == 3 && seen.shape[2] == V,
          "%s: unembed.hook_out saw [%lld, %lld, %lld]", dir, (long long)seen.shape[0], (long long)seen.shape[1],
          (long long)seen.shape[2]);
    circuits_context_remove_hook(ctx, id1);
    double worst_pos = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int i = 0; i < 3; i++) {
            int64_t t = pos[i] < 0 ? pos[i] + T : pos[i];
            worst_pos = fmax(worst_pos, max_abs_diff(out + (b * 3 + i) * V, logits + (b * T + t) * V, (size_t)V));
        }
    CHECK(worst_pos <= 1e-5, "%s: logits at positions differ from the full run by %.3g", dir, worst_pos);

    /* a no-op callback on every hook point changes nothing, bit for bit (the forward's fused
     * attention and the hooked path compute the same thing when the hooks leave it alone) */
    {
        size_t np = circuits_context_hook_point_count(ctx);
        int calls = 0;
        for (size_t i = 0; i < np; i++) {
            circuits_tensor pt;
            CHECK_OK(circuits_context_hook_point(ctx, i, B, T, &pt));
            CHECK_OK(circuits_context_add_hook(ctx, pt.name, count_calls, &calls, NULL));
        }
        CHECK_OK(circuits_context_forward(ctx, tokens, B, T, out, NULL, NULL));
        CHECK(calls == (int)np, "%s: %d of %zu hooks fired", dir, calls, np);
        CHECK(memcmp(out, logits, nlog * sizeof *out) == 0, "%s: no-op hooks on all %zu points change the logits", dir,
              np);
        circuits_context_clear_hooks(ctx);
    }

    /* bad options */
    circuits_run_options bad;
    circuits_run_options_init(&bad);
    bad.size = 8;
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_VERSION, "options size 8");
    CHECK_FAILS(circuits_context_run(NULL, NULL, tokens, B, T, out), CIRCUITS_E_INVALID_ARGUMENT, "ctx is NULL");
    circuits_run_options_init(&bad);
    bad.start_at_layer = 0;
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_INVALID_ARGUMENT, "needs input");
    circuits_run_options_init(&bad);
    bad.input = res;
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_INVALID_ARGUMENT,
                "start_at_layer is not");
    circuits_run_options_init(&bad);
    bad.stop_at_layer = (int32_t)(L + 1);
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_RANGE, "stop_at_layer");
    bad.stop_at_layer = (int32_t)(-L - 1);
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_RANGE, "stop_at_layer");
    circuits_run_options_init(&bad);
    bad.start_at_layer = (int32_t)L;
    bad.input = res;
    bad.stop_at_layer = 0;
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_RANGE, "comes before");
    circuits_run_options_init(&bad);
    int64_t far[1] = {T};
    bad.logit_positions = far;
    bad.n_logit_positions = 1;
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_RANGE, "logit position");
    far[0] = -T - 1;
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_RANGE, "logit position");
    bad.n_logit_positions = 0;
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_INVALID_ARGUMENT,
                "n_logit_positions");
    bad.n_logit_positions = 1;
    far[0] = 0;
    bad.stop_at_layer = 0;
    CHECK_FAILS(circuits_context_run(ctx, &bad, tokens, B, T, out), CIRCUITS_E_INVALID_ARGUMENT, "exclude");
    circuits_run_options_init(&bad);
    CHECK_FAILS(circuits_context_run(ctx, &bad, NULL, B, T, out), CIRCUITS_E_INVALID_ARGUMENT, "tokens is NULL");
    /* after all that, the context still gives the reference logits */
    CHECK_OK(circuits_context_run(ctx, NULL, tokens, B, T, out));
    CHECK(memcmp(out, logits, nlog * sizeof *out) == 0, "%s: context changed by failed runs", dir);

    printf("%s: stop_at_layer vs TL max %.2e, logits at positions vs full %.2e\n", dir, worst_tl, worst_pos);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
    free(logits);
    free(out);
    free(res);
    cx_st_close(expected);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CASE_DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) check_case(argv[i]);
    return tu_finish("test_run_options");
}
