/* Compares libcircuits against reference outputs computed by TransformerLens and Hugging Face
 * transformers (tests/reference/generate.py): logits, loss, per-token loss, every hook value,
 * and the logits after three hook edits made the same way in TransformerLens.
 * Usage: test_reference CASE_DIR [MODEL]: MODEL (default CASE_DIR) is what is loaded, e.g. the
 * case's GGUF conversion (tests/reference/generate_gguf_f32.py), held to the same references. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>

#include "../lib/io/safetensors.h"

/* TransformerLens's own tolerances (tests and debugging guide). */
#define TOL_LOGITS 5e-5
#define TOL_HOOK 1e-4
#define TOL_LOSS 4e-5

static cx_st_set *expected;
static int64_t B, T;
static int32_t *tokens, *tokens_patch;
static int V;

static const cx_st_tensor *want(const char *name)
{
    const cx_st_tensor *t = cx_st_find(expected, name);
    if (!t) {
        fprintf(stderr, "expected.safetensors has no '%s'\n", name);
        exit(2);
    }
    return t;
}

/* Max |a - b| over n values of an expected tensor; equal infinities count as 0. */
static double max_diff(const float *got, const cx_st_tensor *t)
{
    double m = 0.0;
    for (size_t i = 0; i < t->numel; i++) {
        float e = cx_st_read_f32(t, i), g = got[i];
        double d = (isinf(e) && g == e) ? 0.0 : fabs((double)g - (double)e);
        if (isnan(d) || isnan(g) != isnan(e)) d = INFINITY;
        if (d > m) m = d;
    }
    return m;
}

static int32_t *read_tokens(const char *name)
{
    const cx_st_tensor *t = want(name);
    if (t->dtype != CX_DT_I32 || t->ndim != 2) exit(2);
    B = t->shape[0];
    T = t->shape[1];
    int32_t *p = malloc(t->numel * sizeof *p);
    memcpy(p, t->data, t->numel * sizeof *p);
    return p;
}

/* ---- the three edits ---- */
typedef struct edit_arg { int head; int pos; circuits_tensor src; } edit_arg;

static int zero_head(const circuits_tensor *z, void *u)
{
    edit_arg *a = u; /* z [batch, pos, head, d_head] */
    for (int64_t b = 0; b < z->shape[0]; b++)
        for (int64_t p = 0; p < z->shape[1]; p++)
            for (int64_t d = 0; d < z->shape[3]; d++)
                z->data[b * z->strides[0] + p * z->strides[1] + a->head * z->strides[2] + d * z->strides[3]] = 0.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

static int patch_pos(const circuits_tensor *r, void *u)
{
    edit_arg *a = u; /* resid [batch, pos, d_model] */
    for (int64_t b = 0; b < r->shape[0]; b++)
        for (int64_t d = 0; d < r->shape[2]; d++)
            r->data[b * r->strides[0] + a->pos * r->strides[1] + d] =
                a->src.data[b * a->src.strides[0] + a->pos * a->src.strides[1] + d];
    return CIRCUITS_HOOK_CONTINUE;
}

/* every element times 0.5 (any hook; strides honoured, up to 4 dims) */
static int halve(const circuits_tensor *t, void *u)
{
    (void)u;
    int64_t sh[4] = {1, 1, 1, 1}, st[4] = {0, 0, 0, 0};
    for (int i = 0; i < t->ndim; i++) {
        sh[4 - t->ndim + i] = t->shape[i];
        st[4 - t->ndim + i] = t->strides[i];
    }
    for (int64_t a = 0; a < sh[0]; a++)
        for (int64_t b = 0; b < sh[1]; b++)
            for (int64_t c = 0; c < sh[2]; c++)
                for (int64_t d = 0; d < sh[3]; d++) t->data[a * st[0] + b * st[1] + c * st[2] + d * st[3]] *= 0.5f;
    return CIRCUITS_HOOK_CONTINUE;
}

static int uniform_pattern(const circuits_tensor *p, void *u)
{
    (void)u; /* pattern [batch, head, q, k] */
    for (int64_t b = 0; b < p->shape[0]; b++)
        for (int64_t h = 0; h < p->shape[1]; h++)
            for (int64_t i = 0; i < p->shape[2]; i++)
                for (int64_t j = 0; j < p->shape[3]; j++)
                    p->data[b * p->strides[0] + h * p->strides[1] + i * p->strides[2] + j] =
                        j <= i ? 1.0f / (float)(i + 1) : 0.0f;
    return CIRCUITS_HOOK_CONTINUE;
}

static int int_field(json_t *o, const char *k) { return (int)json_integer_value(json_object_get(o, k)); }

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s CASE_DIR [MODEL]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *model_path = argc == 3 ? argv[2] : dir;
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    if (cx_st_open_file(&expected, path)) {
        fprintf(stderr, "%s\n", circuits_last_error());
        return 2;
    }
    snprintf(path, sizeof path, "%s/case.json", dir);
    json_t *cj = json_load_file(path, 0, NULL);
    if (!cj) return 2;
    tokens = read_tokens("tokens");

    /* the unprocessed references (TransformerLens from_pretrained_no_processing) */
    circuits_load_options raw;
    circuits_load_options_init(&raw);
    raw.fold_ln = raw.center_writing_weights = raw.center_unembed = raw.fold_value_biases = 0;
    circuits_model *model = NULL;
    CHECK_OK(circuits_model_load(&model, model_path, &raw));
    if (!model) return tu_finish(dir);
    circuits_config cfg = {.size = sizeof cfg};
    CHECK_OK(circuits_model_config(model, &cfg));
    V = cfg.d_vocab_out;
    circuits_context_options copt;
    circuits_context_options_init(&copt);
    copt.use_attn_result = json_is_true(json_object_get(cj, "use_attn_result"));
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, model, &copt));

    size_t nl = (size_t)(B * T * V);
    float *logits = malloc(nl * sizeof *logits), loss = 0;
    float *ptl = malloc((size_t)(B * (T - 1)) * sizeof *ptl);

    /* 1. plain forward */
    CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, &loss, ptl));
    double d_logits = max_diff(logits, want("logits"));
    double d_loss = fabs(loss - cx_st_read_f32(want("loss"), 0));
    double d_ptl = max_diff(ptl, want("per_token_loss"));
    CHECK(d_logits <= TOL_LOGITS, "logits max-abs diff %.3g", d_logits);
    CHECK(d_loss <= TOL_LOSS, "loss diff %.3g", d_loss);
    CHECK(d_ptl <= TOL_LOSS, "per-token loss max-abs diff %.3g", d_ptl);
    printf("%-26s TL: logits %.2e  loss %.2e  per-token %.2e", json_string_value(json_object_get(cj, "name")),
           d_logits, d_loss, d_ptl);
    if (cx_st_find(expected, "hf_logits")) {
        double d_hf = max_diff(logits, want("hf_logits"));
        CHECK(d_hf <= TOL_LOGITS, "logits vs Hugging Face max-abs diff %.3g", d_hf);
        printf("  HF logits %.2e", d_hf);
    }

    /* 2. every hook value, and the hook list in TransformerLens's firing order */
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tokens, B, T, NULL, 0, cache, logits, NULL, NULL));
    json_t *order = json_object_get(cj, "hook_names_in_order");
    CHECK(circuits_cache_count(cache) == json_array_size(order), "%zu hook points, TransformerLens fires %zu",
          circuits_cache_count(cache), json_array_size(order));
    CHECK(circuits_context_hook_point_count(ctx) == json_array_size(order), "hook point count");
    double d_hooks = 0.0;
    size_t n_hooks = 0;
    for (size_t i = 0; i < json_array_size(order) && i < circuits_cache_count(cache); i++) {
        const char *name = json_string_value(json_array_get(order, i));
        circuits_tensor t;
        CHECK_OK(circuits_cache_at(cache, i, &t));
        CHECK(strcmp(t.name, name) == 0, "hook %zu is '%s', TransformerLens fires '%s'", i, t.name, name);
        char key[160];
        snprintf(key, sizeof key, "hook:%s", name);
        const cx_st_tensor *e = cx_st_find(expected, key);
        if (!e) continue; /* the generator skips hooks identical to stored outputs (see case README) */
        bool same_shape = e->ndim == t.ndim;
        for (int d = 0; same_shape && d < t.ndim; d++) same_shape = e->shape[d] == t.shape[d];
        CHECK(same_shape, "hook %s: shape differs from TransformerLens", name);
        if (!same_shape) continue;
        double d = max_diff(t.data, e);
        CHECK(d <= TOL_HOOK, "hook %s: max-abs diff %.3g", name, d);
        if (d > d_hooks) d_hooks = d;
        n_hooks++;
    }
    printf("  hooks(%zu) %.2e", n_hooks, d_hooks);

    /* 3. edits, by effect on the logits */
    json_t *edits = json_object_get(cj, "edits");
    json_t *e;
    double d_edit = 0.0;
    if ((e = json_object_get(edits, "zero_head_z"))) {
        edit_arg a = {.head = int_field(e, "head")};
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.attn.hook_z", int_field(e, "layer"));
        circuits_hook_id id;
        CHECK_OK(circuits_context_add_hook(ctx, name, zero_head, &a, &id));
        CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL));
        CHECK_OK(circuits_context_remove_hook(ctx, id));
        double d = max_diff(logits, want("edit:zero_head_z"));
        CHECK(d <= TOL_LOGITS, "zero-ablated head: logits max-abs diff %.3g", d);
        d_edit = fmax(d_edit, d);
    }
    if ((e = json_object_get(edits, "patch_resid_pre"))) {
        tokens_patch = read_tokens("tokens_patch");
        edit_arg a = {.pos = int_field(e, "pos")};
        char name[64];
        snprintf(name, sizeof name, "resid_pre%d", int_field(e, "layer")); /* a short name, on purpose */
        circuits_cache *src = NULL;
        CHECK_OK(circuits_cache_create(&src));
        const char *filter[] = {name};
        CHECK_OK(circuits_context_run_with_cache(ctx, tokens_patch, B, T, filter, 1, src, NULL, NULL, NULL));
        CHECK(circuits_cache_count(src) == 1, "a filtered cache holds exactly what was selected");
        CHECK_OK(circuits_cache_get(src, name, &a.src));
        CHECK_OK(circuits_context_add_hook(ctx, name, patch_pos, &a, NULL));
        CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL));
        circuits_context_clear_hooks(ctx);
        circuits_cache_free(src);
        double d = max_diff(logits, want("edit:patch_resid_pre"));
        CHECK(d <= TOL_LOGITS, "patched resid_pre: logits max-abs diff %.3g", d);
        d_edit = fmax(d_edit, d);
    }
    if ((e = json_object_get(edits, "replace_pattern"))) {
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.attn.hook_pattern", int_field(e, "layer"));
        CHECK_OK(circuits_context_add_hook(ctx, name, uniform_pattern, NULL, NULL));
        CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL));
        circuits_context_clear_hooks(ctx);
        double d = max_diff(logits, want("edit:replace_pattern"));
        CHECK(d <= TOL_LOGITS, "replaced pattern: logits max-abs diff %.3g", d);
        d_edit = fmax(d_edit, d);
    }
    /* the block structure's own hook points (gated pre_linear, post-norms, ln2 of a parallel
     * block, unembed.hook_out before the logit soft-cap): each halved, alone */
    json_t *scaled = json_object_get(edits, "halve");
    for (size_t i = 0; i < json_array_size(scaled); i++) {
        const char *name = json_string_value(json_array_get(scaled, i));
        char key[160];
        snprintf(key, sizeof key, "edit:halve:%s", name ? name : "?");
        CHECK_OK(circuits_context_add_hook(ctx, name, halve, NULL, NULL));
        CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL));
        circuits_context_clear_hooks(ctx);
        double d = max_diff(logits, want(key));
        CHECK(d <= TOL_LOGITS, "%s halved: logits max-abs diff %.3g", name, d);
        d_edit = fmax(d_edit, d);
    }
    printf("  edits %.2e\n", d_edit);

    /* With the hooks gone, the plain forward is back to the reference. */
    CHECK_OK(circuits_context_forward(ctx, tokens, B, T, logits, NULL, NULL));
    CHECK(max_diff(logits, want("logits")) <= TOL_LOGITS, "removing hooks restores the plain forward");

    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(model);
    free(logits);
    free(ptl);
    free(tokens);
    free(tokens_patch);
    json_decref(cj);
    cx_st_close(expected);
    return tu_finish(dir);
}
