/* TransformerLens's optional hook points (context options use_split_qkv_input, use_attn_in,
 * use_hook_mlp_in, use_hook_tokens) against TransformerLens on four reference cases
 * (tests/reference/toolkit/optional_hooks/, written by generate_optional_hooks.py; GPT-2-like,
 * GQA + rotary, shortformer, parallel attention + MLP): the hooks'
 * values (ln1 under per-head inputs as TL's cache keeps it: the value input's firing), the logits
 * and loss, and the logits after an edit at each new point, which must flow downstream as in TL.
 * Also: the refusals (use_attn_in under grouped-query attention, use_hook_mlp_in attention-only,
 * flags other than 0/1), hook_tokens's int32 descriptor, an edited token out of the vocabulary,
 * and the 0.4-sized options struct still accepted.
 * The refusals are named checks of the catalogue (docs/errors.md "Optional hook points").
 * Usage: test_optional_hooks CASES_DIR TOOLKIT_DIR [-v] */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

#include "catalogue.h"

#include "../lib/io/safetensors.h"
#include "reference_get.h"

#define TOL 1e-4 /* fp32 against torch fp32, values of order 1 (test_reference's TOL_HOOK) */

static int64_t B, T;
static const int32_t *tokens;

static circuits_context *context(circuits_model *m, int split, int attn_in, int mlp_in, int tok)
{
    circuits_context_options o;
    circuits_context_options_init(&o);
    o.use_split_qkv_input = split;
    o.use_attn_in = attn_in;
    o.use_hook_mlp_in = mlp_in;
    o.use_hook_tokens = tok;
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, &o));
    return ctx;
}

static double diff(const float *got, const cx_st_tensor *want, size_t n, const char *what)
{
    CHECK(want->numel == n, "%s: %zu values, reference has %zu", what, n, want->numel);
    double d = 0;
    for (size_t i = 0; i < n && i < want->numel; i++) d = fmax(d, fabs(got[i] - cx_st_read_f32(want, i)));
    CHECK(d <= TOL, "%s: max-abs diff %.3g (tol %.1g)", what, d, TOL);
    return d;
}

/* Every "<prefix>:hook:<name>" of the reference against run_with_cache's copy. */
static double check_hooks(circuits_context *ctx, const char *prefix, float *logits, float *loss)
{
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, loss, NULL));
    char pre[64];
    snprintf(pre, sizeof pre, "%s:hook:", prefix);
    double worst = 0;
    int n = 0;
    for (size_t i = 0; i < ref->n_tensors; i++) {
        const cx_st_tensor *want = &ref->tensors[i];
        if (strncmp(want->name, pre, strlen(pre)) != 0) continue;
        const char *name = want->name + strlen(pre);
        circuits_tensor t;
        int rc = circuits_cache_get(cache, name, &t);
        CHECK(rc == CIRCUITS_OK, "%s: %s not cached (%s)", prefix, name, circuits_last_error());
        if (rc) continue;
        size_t numel = 1;
        for (int d = 0; d < t.ndim; d++) {
            numel *= (size_t)t.shape[d];
            CHECK(d < want->ndim && t.shape[d] == want->shape[d], "%s %s: axis %d is %lld", prefix, name, d,
                  (long long)t.shape[d]);
        }
        CHECK(t.ndim == want->ndim, "%s %s: ndim %d, TL %d", prefix, name, t.ndim, want->ndim);
        if (strcmp(name, "hook_tokens") == 0) { /* int32 ids, as the descriptor documents */
            CHECK(numel == want->numel && memcmp(t.data, want->data, numel * 4) == 0, "hook_tokens differs");
        } else {
            worst = fmax(worst, diff(t.data, want, numel, name));
        }
        n++;
    }
    CHECK(n >= 6, "%s: only %d hook tensors compared", prefix, n);
    printf("%-8s %2d hook points, max-abs diff %.3g\n", prefix, n, worst);
    circuits_cache_free(cache);
    return worst;
}

/* Edits the generator made (generate_optional_hooks.py), on the live activation. */
static int64_t g_dims[4];
static void dims(const circuits_tensor *t) { for (int d = 0; d < 4; d++) g_dims[d] = d < t->ndim ? t->shape[d] : 1; }
#define AT(t, b, p, h, j) ((t)->data[(((b) * (t)->shape[1] + (p)) * (t)->shape[2] + (h)) * (t)->shape[3] + (j)])

/* (they change the input's direction: ln1 / ln2 normalise its scale, LayerNorm its mean, away) */
static int edit_q_input(const circuits_tensor *t, void *u) /* head 1: even dims zeroed */
{
    (void)u;
    dims(t);
    for (int64_t b = 0; b < g_dims[0]; b++)
        for (int64_t p = 0; p < g_dims[1]; p++)
            for (int64_t j = 0; j < g_dims[3]; j += 2) AT(t, b, p, 1, j) = 0.0f;
    return CIRCUITS_HOOK_CONTINUE;
}
static int edit_k_input(const circuits_tensor *t, void *u) /* head 0 from position 2: first half negated */
{
    (void)u;
    dims(t);
    for (int64_t b = 0; b < g_dims[0]; b++)
        for (int64_t p = 2; p < g_dims[1]; p++)
            for (int64_t j = 0; j < g_dims[3] / 2; j++) AT(t, b, p, 0, j) = -AT(t, b, p, 0, j);
    return CIRCUITS_HOOK_CONTINUE;
}
static int negate_head(const circuits_tensor *t, void *u) /* v_input head 1, attn_in the last (-1) */
{
    int h = *(const int *)u;
    if (h < 0) h += (int)t->shape[2];
    dims(t);
    for (int64_t b = 0; b < g_dims[0]; b++)
        for (int64_t p = 0; p < g_dims[1]; p++)
            for (int64_t j = 0; j < g_dims[3]; j++) AT(t, b, p, h, j) = -AT(t, b, p, h, j);
    return CIRCUITS_HOOK_CONTINUE;
}
static int edit_mlp_in(const circuits_tensor *t, void *u) /* position 3: every third dim zeroed */
{
    (void)u;
    for (int64_t b = 0; b < t->shape[0]; b++)
        for (int64_t j = 0; j < t->shape[2]; j += 3) t->data[(b * t->shape[1] + 3) * t->shape[2] + j] = 0.0f;
    return CIRCUITS_HOOK_CONTINUE;
}
static int edit_tokens(const circuits_tensor *t, void *u) /* position 2 of every row: token *u */
{
    int32_t *ids = (int32_t *)t->data;
    CHECK(t->ndim == 2 && t->head_axis == -1, "hook_tokens descriptor: ndim %d", t->ndim);
    for (int64_t b = 0; b < t->shape[0]; b++) ids[b * t->shape[1] + 2] = *(const int32_t *)u;
    return CIRCUITS_HOOK_CONTINUE;
}

static void check_edit(circuits_context *ctx, const char *hook, circuits_hook_fn fn, void *u, const char *key,
                       int64_t V, float *logits)
{
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_hook(ctx, hook, fn, u, &id));
    float loss = 0;
    CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, &loss, NULL));
    double d = diff(logits, get(key), (size_t)(B * T * V), key);
    if (strcmp(hook, "hook_tokens") == 0) { /* TL's loss reads the edited ids */
        double dl = fabs(loss - cx_st_read_f32(get("split:edit:tokens:loss"), 0));
        CHECK(dl <= TOL, "loss with edited tokens: diff %.3g", dl);
    }
    printf("  %-22s edit: logits max-abs diff %.3g\n", key, d);
    CHECK_OK(circuits_context_remove_hook(ctx, id));
}

static int32_t g_token5 = 5;

static void check_case(const char *toolkit, const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s.safetensors", toolkit, name);
    if (cx_st_open_file(&ref, p)) {
        fprintf(stderr, "%s\n", circuits_last_error());
        exit(2);
    }
    /* the case's own tokens (its expected.safetensors, as the generator read them) */
    cx_st_set *exp = NULL;
    snprintf(p, sizeof p, "%s/%s/expected.safetensors", g_cases, name);
    if (cx_st_open_file(&exp, p)) exit(2);
    const cx_st_tensor *tk = cx_st_find(exp, "tokens");
    if (!tk) exit(2);
    B = tk->shape[0];
    T = tk->shape[1];
    tokens = (const int32_t *)tk->data;
    printf("%s\n", name);

    circuits_model *m = load_case(name);
    circuits_config c = config_of(m);
    int64_t V = c.d_vocab_out;
    float *logits = calloc((size_t)(B * T * V), sizeof *logits);
    float loss = 0;
    if (!logits) exit(2);

    circuits_context *ctx = context(m, 1, 0, 1, 1);
    check_hooks(ctx, "split", logits, &loss);
    diff(logits, get("split:logits"), (size_t)(B * T * V), "split logits");
    CHECK(fabs(loss - cx_st_read_f32(get("split:loss"), 0)) <= TOL, "split loss %g", loss);
    int one = 1;
    check_edit(ctx, "blocks.1.hook_q_input", edit_q_input, NULL, "split:edit:q_input", V, logits);
    check_edit(ctx, "blocks.0.hook_k_input", edit_k_input, NULL, "split:edit:k_input", V, logits);
    check_edit(ctx, "blocks.1.hook_v_input", negate_head, &one, "split:edit:v_input", V, logits);
    check_edit(ctx, "blocks.0.hook_mlp_in", edit_mlp_in, NULL, "split:edit:mlp_in", V, logits);
    check_edit(ctx, "hook_tokens", edit_tokens, &g_token5, "split:edit:tokens", V, logits);
    /* an edited id outside the vocabulary: refused before the embedding reads it */
    int32_t bad = c.d_vocab;
    CHECK_OK(circuits_context_add_hook(ctx, "hook_tokens", edit_tokens, &bad, NULL));
    if (c.n_key_value_heads == c.n_heads) /* one row for the catalogue */
        CALL_FAILS("optional_hook_tokens_outside_vocab", circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL),
                   CIRCUITS_E_RANGE, "hook_tokens: a hook set token id");
    else
        CHECK_FAILS(circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL), CIRCUITS_E_RANGE,
                    "hook_tokens: a hook set token id");
    circuits_context_free(ctx);

    if (c.n_key_value_heads == c.n_heads) {
        ctx = context(m, 0, 1, 0, 0);
        check_hooks(ctx, "attn_in", logits, NULL);
        diff(logits, get("attn_in:logits"), (size_t)(B * T * V), "attn_in logits");
        int last = -1;
        check_edit(ctx, "blocks.1.hook_attn_in", negate_head, &last, "attn_in:edit:attn_in", V, logits);
        circuits_context_free(ctx);
    } else {
        circuits_context_options o;
        circuits_context_options_init(&o);
        o.use_attn_in = 1;
        circuits_context *bad_ctx = NULL;
        CALL_FAILS("optional_attn_in_gqa", circuits_context_create(&bad_ctx, m, &o), CIRCUITS_E_UNSUPPORTED,
                   "use_attn_in with grouped-query attention");
    }
    free(logits);
    circuits_model_free(m);
    cx_st_close(exp);
    cx_st_close(ref);
    ref = NULL;
}

/* Options: flags other than 0/1, hook_mlp_in on an attention-only model, the 0.4 size, the
 * names' hints when an option is off. */
static void check_options(void)
{
    circuits_model *m = load_case("tl_attn_only_2l_none");
    circuits_context_options o;
    circuits_context *ctx = NULL;
    circuits_context_options_init(&o);
    o.use_split_qkv_input = 2;
    CALL_FAILS("optional_split_qkv_input_2", circuits_context_create(&ctx, m, &o), CIRCUITS_E_INVALID_ARGUMENT,
               "use_split_qkv_input must be 0 or 1");
    circuits_context_options_init(&o);
    o.use_hook_mlp_in = 1;
    CALL_FAILS("optional_hook_mlp_in_attn_only", circuits_context_create(&ctx, m, &o), CIRCUITS_E_UNSUPPORTED,
               "use_hook_mlp_in on an attention-only");
    circuits_context_options_init(&o);
    o.size = 8; /* a 0.4 caller: the new flags read as 0 */
    o.use_split_qkv_input = 7; /* beyond its size: never read */
    CHECK_OK(circuits_context_create(&ctx, m, &o));
    CALL_FAILS("optional_q_input_without_option", circuits_context_add_hook(ctx, "blocks.0.hook_q_input", edit_mlp_in,
               NULL, NULL), CIRCUITS_E_NOT_FOUND, "set use_split_qkv_input");
    CALL_FAILS("optional_hook_tokens_without_option", circuits_context_add_hook(ctx, "hook_tokens", edit_mlp_in, NULL,
               NULL), CIRCUITS_E_NOT_FOUND, "set use_hook_tokens");
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* hook_tokens in partial runs (run_with_cache_opts): a run from start_at_layer embeds no tokens,
 * so hook_tokens does not fire and the cache has no such entry (TL likewise); a run that stops at
 * a layer embeds them, so it fires and the cache keeps the ids. */
static void check_tokens_partial_runs(void)
{
    circuits_model *m = load_case("tl_2l_lnpre_gelu");
    circuits_config c = config_of(m);
    circuits_context *ctx = context(m, 0, 0, 0, 1);
    enum { PB = 2, PT = 4 };
    int32_t tok[PB * PT];
    make_tokens(tok, PB * PT, c.d_vocab, 5);
    float *resid = calloc((size_t)(PB * PT * c.d_model), sizeof(float));
    const char *filter[1] = {"hook_tokens"};
    circuits_cache *cache;
    CHECK_OK(circuits_cache_create(&cache));
    circuits_run_options o;
    circuits_run_options_init(&o);
    o.start_at_layer = 1;
    o.input = resid;
    CHECK_OK(circuits_context_run_with_cache_opts(ctx, &o, tok, PB, PT, filter, 1, cache, NULL, NULL, NULL));
    circuits_tensor t;
    CHECK(circuits_cache_get(cache, "hook_tokens", &t) != CIRCUITS_OK,
          "start_at_layer: the cache holds hook_tokens, which never fired (its data uninitialised)");
    circuits_clear_error();
    circuits_run_options_init(&o);
    o.stop_at_layer = 1;
    CHECK_OK(circuits_context_run_with_cache_opts(ctx, &o, tok, PB, PT, filter, 1, cache, NULL, NULL, NULL));
    CHECK(circuits_cache_get(cache, "hook_tokens", &t) == CIRCUITS_OK && t.ndim == 2 &&
              memcmp(t.data, tok, sizeof tok) == 0,
          "stop_at_layer: the cache lacks hook_tokens, though it fired");
    circuits_clear_error();
    circuits_cache_free(cache);
    free(resid);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) return 2;
    g_cases = argv[1];
    cat_verbose = argc == 4 && strcmp(argv[3], "-v") == 0;
    check_case(argv[2], "tl_gelu_new_attn_result");
    check_case(argv[2], "tl_gqa_rotary_rms");
    check_case(argv[2], "tl_shortformer_relu"); /* W_pos on the per-head q/k inputs */
    check_case(argv[2], "tl_parallel_ln");      /* hook_mlp_in on resid_pre */
    check_options();
    check_tokens_partial_runs();
    return tu_finish("test_optional_hooks");
}
