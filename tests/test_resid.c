/* The residual-stream toolkit (lib/analysis/resid.c) against TransformerLens 3.9's
 * ActivationCache (tests/reference/toolkit/resid/, written by
 * tests/reference/generate_resid.py): every call the generator recorded, with its arguments
 * resolved for the C API, on a processed GPT-2, an unprocessed LayerNorm model with
 * use_attn_result, a processed gated RMS model and an attention-only RMSPre model; the values
 * (max |diff| / max |reference| <= 1e-5 per call) and the labels. Then the bad inputs
 * (docs/errors.md).
 * Usage: test_resid TOOLKIT_DIR CASES_DIR [-v] */
#include "catalogue.h"

#include <jansson.h>
#include <math.h>

#include "../lib/io/safetensors.h"

#define TOL_REL 1e-5

#include "reference_get.h"

static double worst_rel, worst_abs;

static int32_t jint(json_t *o, const char *k, int32_t dflt)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return dflt;
    if (json_is_boolean(v)) return json_is_true(v);
    return (int32_t)json_integer_value(v);
}

/* A JSON list of integers into a malloc'd array (*n its length); NULL for null/absent. */
static int64_t *jlist(json_t *o, const char *k, int64_t *n)
{
    json_t *v = json_object_get(o, k);
    *n = 0;
    if (!v || json_is_null(v)) return NULL;
    *n = (int64_t)json_array_size(v);
    int64_t *a = malloc((size_t)(*n + 1) * sizeof *a);
    if (!a) exit(2);
    for (int64_t i = 0; i < *n; i++) a[i] = json_integer_value(json_array_get(v, (size_t)i));
    return a;
}

static int32_t *jtokens(json_t *o, const char *k, int64_t *n)
{
    int64_t *a = jlist(o, k, n);
    if (!a) return NULL;
    int32_t *t = malloc((size_t)(*n + 1) * sizeof *t);
    if (!t) exit(2);
    for (int64_t i = 0; i < *n; i++) t[i] = (int32_t)a[i];
    free(a);
    return t;
}

static void compare(const char *what, const float *got, size_t n, const cx_st_tensor *want)
{
    CHECK(n == want->numel, "%s: %zu values, TransformerLens %zu", what, n, want->numel);
    if (n != want->numel) return;
    double da = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double w = cx_st_read_f32(want, i);
        da = fmax(da, fabs(got[i] - w));
        scale = fmax(scale, fabs(w));
    }
    double rel = scale > 0 ? da / scale : da;
    worst_rel = fmax(worst_rel, rel);
    worst_abs = fmax(worst_abs, da);
    CHECK(rel <= TOL_REL, "%s: max |diff| %.3g = %.3g of max |reference| %.3g", what, da, rel, scale);
}

static void compare_labels(const char *what, const circuits_model *m, const circuits_cache *cache, int kind,
                           const circuits_resid_options *o, json_t *labels, int64_t n)
{
    if (!labels) return;
    CHECK((int64_t)json_array_size(labels) == n, "%s: %lld components, TransformerLens %zu labels", what, (long long)n,
          json_array_size(labels));
    size_t need = 0;
    CHECK_OK(circuits_resid_labels(m, cache, kind, o, NULL, 0, &need));
    char *buf = malloc(need + 1);
    if (!buf) exit(2);
    CHECK_OK(circuits_resid_labels(m, cache, kind, o, buf, need, NULL));
    const char *p = buf;
    for (size_t i = 0; i < json_array_size(labels) && p < buf + need; i++, p += strlen(p) + 1) {
        const char *want = json_string_value(json_array_get(labels, i));
        CHECK(strcmp(p, want) == 0, "%s: label %zu is '%s', TransformerLens '%s'", what, i, p, want);
    }
    CHECK(p == buf + need, "%s: the labels take %zu bytes, TransformerLens's %td", what, need, p - buf);
    free(buf);
}

static int kind_of(const char *s)
{
    static const char *names[] = {"accumulated", "decomposed", "heads", "neurons", "full"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

/* The options a call's TL arguments and C view say. Arrays are owned by the caller (freed by
 * free_opts). */
static void make_opts(circuits_resid_options *o, json_t *args, json_t *c)
{
    circuits_resid_options_init(o);
    o->layer = jint(args, "layer", -1);
    o->incl_mid = jint(args, "incl_mid", 0);
    o->mlp_input = jint(args, "mlp_input", 0);
    o->apply_ln = jint(args, "apply_ln", 0);
    o->incl_embeds = jint(args, "incl_embeds", 1);
    o->incl_remainder = jint(args, "incl_remainder", 0);
    o->expand_neurons = jint(args, "expand_neurons", 1);
    o->recompute_ln = jint(args, "recompute_ln", 0);
    o->unembed_bias = jint(args, "unembed_bias", 1);
    const char *mode = json_string_value(json_object_get(args, "mode"));
    o->mode = !mode || !strcmp(mode, "all") ? CIRCUITS_RESID_MODE_ALL
              : !strcmp(mode, "mlp")        ? CIRCUITS_RESID_MODE_MLP
                                            : CIRCUITS_RESID_MODE_ATTN;
    o->positions = jlist(c, "positions", &o->n_positions);
    o->neurons = jlist(c, "neurons", &o->n_neurons);
    o->batch_indices = jlist(c, "batch_indices", &o->n_batch_indices);
}

static void free_opts(circuits_resid_options *o)
{
    free((void *)o->positions);
    free((void *)o->neurons);
    free((void *)o->batch_indices);
}

static float *stack_of(const circuits_model *m, const circuits_cache *cache, int kind, const circuits_resid_options *o,
                       int64_t shape[4], size_t *numel)
{
    CHECK_OK(circuits_resid_shape(m, cache, kind, o, shape));
    *numel = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    float *out = malloc((*numel + 1) * sizeof *out);
    if (!out) exit(2);
    CHECK_OK(circuits_resid_stack(m, cache, kind, o, out, *numel));
    return out;
}

static void run_call(const circuits_model *m, const circuits_cache *cache, const circuits_config *cfg, json_t *call,
                     int64_t B)
{
    const char *key = json_string_value(json_object_get(call, "key"));
    const char *method = json_string_value(json_object_get(call, "method"));
    json_t *args = json_object_get(call, "args"), *c = json_object_get(call, "c");
    const char *ckind = json_string_value(json_object_get(c, "kind"));
    const cx_st_tensor *want = get(key);
    circuits_resid_options o;
    make_opts(&o, args, c);
    int64_t shape[4] = {0};
    size_t numel = 0;
    float *out = NULL;
    int kind = kind_of(ckind);
    const int64_t D = cfg->d_model;
    if (strcmp(method, "direct_logit_attribution") == 0) {
        int64_t nt = 0, nw = 0;
        int32_t *tok = jtokens(c, "tokens", &nt), *wr = jtokens(c, "incorrect_tokens", &nw);
        CHECK_OK(circuits_resid_shape(m, cache, kind, &o, shape));
        numel = (size_t)(shape[0] * shape[1] * shape[2]);
        out = malloc((numel + 1) * sizeof *out);
        CHECK_OK(circuits_direct_logit_attribution(m, cache, kind, &o, tok, wr, nt, out, numel));
        compare_labels(key, m, cache, kind, &o, json_object_get(call, "labels"), shape[0]);
        free(tok);
        free(wr);
    } else if (kind >= 0) {
        out = stack_of(m, cache, kind, &o, shape, &numel);
        compare_labels(key, m, cache, kind, &o, json_object_get(call, "labels"), shape[0]);
    } else if (strcmp(ckind, "apply_ln") == 0) {
        const cx_st_tensor *in = get(json_string_value(json_object_get(call, "input")));
        /* the stack [n, B, (P,) D]; TransformerLens slices its batch rows by batch_slice too */
        int64_t n = in->shape[0], P = in->ndim == 4 ? in->shape[2] : 1;
        int64_t nb = o.batch_indices ? o.n_batch_indices : B;
        numel = (size_t)(n * nb * P * D);
        out = malloc((numel + 1) * sizeof *out);
        for (int64_t i = 0; i < n; i++)
            for (int64_t b = 0; b < nb; b++)
                for (int64_t e = 0; e < P * D; e++) {
                    int64_t bb = o.batch_indices ? o.batch_indices[b] : b;
                    out[(i * nb + b) * P * D + e] = cx_st_read_f32(in, (size_t)((i * B + bb) * P * D + e));
                }
        CHECK_OK(circuits_resid_apply_ln(m, cache, &o, out, n, nb, P));
    } else if (strcmp(ckind, "directions") == 0) {
        int64_t nt = 0;
        int32_t *tok = jtokens(c, "tokens", &nt);
        numel = (size_t)(nt * D);
        out = malloc((numel + 1) * sizeof *out);
        CHECK_OK(circuits_model_residual_directions(m, tok, nt, out));
        free(tok);
    } else if (strcmp(ckind, "logit_attrs") == 0) {
        const cx_st_tensor *in = get(json_string_value(json_object_get(args, "stack")));
        int64_t nt = 0, nw = 0;
        int32_t *tok = jtokens(c, "tokens", &nt), *wr = jtokens(c, "incorrect_tokens", &nw);
        int64_t n = in->shape[0], P = in->ndim == 4 ? in->shape[2] : 1;
        float *stack = malloc(in->numel * sizeof *stack);
        for (size_t i = 0; i < in->numel; i++) stack[i] = cx_st_read_f32(in, i);
        numel = (size_t)(n * B * P);
        out = malloc((numel + 1) * sizeof *out);
        CHECK_OK(circuits_resid_logit_attrs(m, cache, &o, stack, n, B, P, tok, wr, nt, out));
        free(stack);
        free(tok);
        free(wr);
    } else if (strcmp(ckind, "logit_lens") == 0) {
        CHECK_OK(circuits_resid_shape(m, cache, CIRCUITS_RESID_ACCUMULATED, &o, shape));
        numel = (size_t)(shape[0] * shape[1] * shape[2] * cfg->d_vocab_out);
        out = malloc((numel + 1) * sizeof *out);
        CHECK_OK(circuits_logit_lens(m, cache, &o, out, numel));
        compare_labels(key, m, cache, CIRCUITS_RESID_ACCUMULATED, &o, json_object_get(call, "labels"), shape[0]);
    } else if (strcmp(ckind, "head_results") == 0) {
        /* compute_head_results: layer l's [B, T, H, D] from the heads stack [L*H, B, T, D] */
        int32_t l = jint(args, "layer", 0);
        circuits_resid_options all;
        circuits_resid_options_init(&all);
        float *st = stack_of(m, cache, CIRCUITS_RESID_HEADS, &all, shape, &numel);
        const int64_t H = cfg->n_heads, T = shape[2];
        numel = (size_t)(B * T * H * D);
        out = malloc((numel + 1) * sizeof *out);
        for (int64_t h = 0; h < H; h++)
            for (int64_t b = 0; b < B; b++)
                for (int64_t t = 0; t < T; t++)
                    memcpy(out + ((b * T + t) * H + h) * D, st + (((l * H + h) * B + b) * T + t) * D,
                           (size_t)D * sizeof *out);
        free(st);
    } else {
        CHECK(0, "%s: unknown call kind %s", key, ckind);
    }
    if (out) compare(key, out, numel, want);
    free(out);
    free_opts(&o);
}

/* circuits_direct_logit_attribution never forms the stack (one component at a time, a running sum
 * for the remainder): it must equal circuits_resid_logit_attrs of the stack circuits_resid_stack
 * forms, for every kind, remainders and every neuron included. */
static void check_dla_streams(const circuits_model *m, const circuits_cache *cache, const circuits_config *cfg,
                              int64_t B)
{
    const int32_t answers[2] = {3, 7}, wrong[2] = {5, 1};
    int64_t last = -1;
    for (int kind = CIRCUITS_RESID_ACCUMULATED; kind <= CIRCUITS_RESID_FULL; kind++) {
        if (kind == CIRCUITS_RESID_NEURONS && cfg->attn_only) continue;
        circuits_resid_options o;
        circuits_resid_options_init(&o);
        o.incl_remainder = 1;
        o.incl_mid = !cfg->attn_only;
        o.positions = &last;
        o.n_positions = 1;
        int64_t shape[4];
        size_t numel;
        float *st = stack_of(m, cache, kind, &o, shape, &numel);
        size_t n = (size_t)(shape[0] * B);
        float *want = malloc((n + 1) * sizeof *want), *got = malloc((n + 1) * sizeof *got);
        CHECK_OK(circuits_resid_logit_attrs(m, cache, &o, st, shape[0], B, 1, answers, wrong, B, want));
        CHECK_OK(circuits_direct_logit_attribution(m, cache, kind, &o, answers, wrong, B, got, n));
        double d = 0, scale = 0;
        for (size_t i = 0; i < n; i++) {
            d = fmax(d, fabs(got[i] - want[i]));
            scale = fmax(scale, fabs(want[i]));
        }
        CHECK(d <= 1e-6 * fmax(scale, 1), "kind %d: streamed attribution differs by %.3g (scale %.3g)", kind, d, scale);
        free(st);
        free(want);
        free(got);
    }
}

static void run_case(const char *cases_dir, const char *name, json_t *info)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", cases_dir, name);
    circuits_load_options lo;
    circuits_load_options_init(&lo);
    if (!json_is_true(json_object_get(info, "processed")))
        lo.fold_ln = lo.center_writing_weights = lo.center_unembed = lo.fold_value_biases = 0;
    circuits_model *m = NULL;
    CHECK_OK(circuits_model_load(&m, path, &lo));
    if (!m) return;
    circuits_config cfg = {.size = sizeof cfg};
    CHECK_OK(circuits_model_config(m, &cfg));
    circuits_context_options co;
    circuits_context_options_init(&co);
    co.use_attn_result = json_is_true(json_object_get(info, "use_attn_result"));
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, &co));
    const cx_st_tensor *tt = get("tokens");
    int64_t B = tt->shape[0], T = tt->shape[1];
    int32_t *tok = malloc(tt->nbytes);
    memcpy(tok, tt->data, tt->nbytes);
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, NULL, NULL, NULL));
    double before = worst_rel;
    worst_rel = 0;
    json_t *calls = json_object_get(info, "calls");
    for (size_t i = 0; i < json_array_size(calls); i++) run_call(m, cache, &cfg, json_array_get(calls, i), B);
    check_dla_streams(m, cache, &cfg, B);
    printf("%-26s %2zu calls, max rel diff %.3g\n", name, json_array_size(calls), worst_rel);
    worst_rel = fmax(worst_rel, before);
    free(tok);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(m);
}

/* Bad inputs: each a row of docs/errors.md ("residual stream"). */
static void test_errors(const char *cases_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tl_attn_only_2l_rmspre", cases_dir);
    circuits_model *ao = NULL, *m = NULL;
    CHECK_OK(circuits_model_load(&ao, path, NULL));
    snprintf(path, sizeof path, "%s/tl_gated_swiglu_rms", cases_dir);
    CHECK_OK(circuits_model_load(&m, path, NULL));
    if (!ao || !m) return;
    circuits_context *ctx = NULL, *actx = NULL;
    CHECK_OK(circuits_context_create(&ctx, m, NULL));
    CHECK_OK(circuits_context_create(&actx, ao, NULL));
    const int32_t tok[6] = {1, 2, 3, 4, 5, 6};
    circuits_cache *full = NULL, *afull = NULL, *part = NULL, *empty = NULL;
    CHECK_OK(circuits_cache_create(&full));
    CHECK_OK(circuits_cache_create(&afull));
    CHECK_OK(circuits_cache_create(&part));
    CHECK_OK(circuits_cache_create(&empty));
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, 2, 3, NULL, 0, full, NULL, NULL, NULL));
    CHECK_OK(circuits_context_run_with_cache(actx, tok, 2, 3, NULL, 0, afull, NULL, NULL, NULL));
    const char *filt[] = {"blocks.*.hook_resid_pre"};
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, 2, 3, filt, 1, part, NULL, NULL, NULL));
    circuits_resid_options o;
    circuits_resid_options_init(&o);
    float out[4096], stack[2 * 2 * 3 * 16];
    char buf[64];
    int64_t shape[4];
    memset(stack, 0, sizeof stack);
    const int A = CIRCUITS_RESID_ACCUMULATED;

    CALL_FAILS("resid_null_cache", circuits_resid_stack(m, NULL, A, &o, out, 4096), CIRCUITS_E_INVALID_ARGUMENT,
               "model or cache is NULL");
    CALL_FAILS("resid_unknown_kind", circuits_resid_stack(m, full, 9, &o, out, 4096), CIRCUITS_E_INVALID_ARGUMENT,
               "unknown circuits_resid_kind 9");
    o.size = 3;
    CALL_FAILS("resid_options_size", circuits_resid_stack(m, full, A, &o, out, 4096), CIRCUITS_E_VERSION, "size");
    circuits_resid_options_init(&o);
    o.layer = 5;
    CALL_FAILS("resid_layer_range", circuits_resid_stack(m, full, A, &o, out, 4096), CIRCUITS_E_RANGE,
               "layer 5 is outside -1..n_layers = 2");
    circuits_resid_options_init(&o);
    o.mode = 7;
    CALL_FAILS("resid_unknown_mode", circuits_resid_stack(m, full, CIRCUITS_RESID_DECOMPOSED, &o, out, 4096),
               CIRCUITS_E_INVALID_ARGUMENT, "mode 7");
    circuits_resid_options_init(&o);
    o.mlp_input = 1;
    CALL_FAILS("resid_mlp_input_at_unembed", circuits_resid_stack(m, full, CIRCUITS_RESID_FULL, &o, out, 4096),
               CIRCUITS_E_INVALID_ARGUMENT, "mlp_input at layer n_layers");
    circuits_resid_options_init(&o);
    const int64_t far[1] = {9}, neg[1] = {-1}, big_neuron[1] = {40};
    o.positions = far;
    o.n_positions = 1;
    CALL_FAILS("resid_position_range", circuits_resid_stack(m, full, A, &o, out, 4096), CIRCUITS_E_RANGE,
               "position 9 is outside the cache's 3 positions");
    o.positions = NULL;
    CALL_FAILS("resid_positions_null", circuits_resid_stack(m, full, A, &o, out, 4096), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL index array");
    circuits_resid_options_init(&o);
    o.neurons = big_neuron;
    o.n_neurons = 1;
    CALL_FAILS("resid_neuron_range", circuits_resid_stack(m, full, CIRCUITS_RESID_NEURONS, &o, out, 4096),
               CIRCUITS_E_RANGE, "neuron 40 is outside d_mlp = 40");
    circuits_resid_options_init(&o);
    CALL_FAILS("resid_attn_only_neurons", circuits_resid_stack(ao, afull, CIRCUITS_RESID_NEURONS, &o, out, 4096),
               CIRCUITS_E_UNSUPPORTED, "attention-only");
    CALL_FAILS("resid_missing_entry", circuits_resid_stack(m, part, A, &o, out, 4096), CIRCUITS_E_NOT_FOUND,
               "the cache holds no 'blocks.1.hook_resid_post' (run_with_cache with it in names_filter)");
    o.layer = 1;
    o.apply_ln = 1;
    CALL_FAILS("resid_missing_scale", circuits_resid_stack(m, part, A, &o, out, 4096), CIRCUITS_E_NOT_FOUND,
               "blocks.1.ln1.hook_scale");
    circuits_resid_options_init(&o);
    CALL_FAILS("resid_empty_cache", circuits_resid_shape(m, empty, A, &o, shape), CIRCUITS_E_NOT_FOUND,
               "no residual-stream activation");
    CALL_FAILS("resid_out_too_small", circuits_resid_stack(m, full, A, &o, out, 10), CIRCUITS_E_SHAPE,
               "out holds 10 floats, the result needs 288");
    CALL_FAILS("resid_labels_buffer", circuits_resid_labels(m, full, A, &o, buf, 12, NULL), CIRCUITS_E_RANGE,
               "the 3 labels need 23 bytes, buf has 12");
    CALL_FAILS("resid_stack_positions", circuits_resid_apply_ln(m, full, &o, stack, 2, 2, 2), CIRCUITS_E_SHAPE,
               "the stack has 2 positions, the positions selected 3");
    CALL_FAILS("resid_stack_batch", circuits_resid_apply_ln(m, full, &o, stack, 2, 1, 3), CIRCUITS_E_SHAPE,
               "the stack has 1 batch rows, the cache 2");
    const int64_t bad_row[1] = {2};
    o.batch_indices = bad_row;
    o.n_batch_indices = 1;
    CALL_FAILS("resid_batch_index_range", circuits_resid_apply_ln(m, full, &o, stack, 2, 1, 3), CIRCUITS_E_RANGE,
               "batch index 2 is outside the cache's 2 rows");
    circuits_resid_options_init(&o);
    const int32_t far_token[1] = {50}, toks[3] = {1, 2, 3};
    CALL_FAILS("resid_direction_token", circuits_model_residual_directions(m, far_token, 1, out), CIRCUITS_E_RANGE,
               "token 50 is outside d_vocab_out = 50");
    o.positions = neg;
    o.n_positions = 1;
    CALL_FAILS("resid_attrs_token_count", circuits_resid_logit_attrs(m, full, &o, stack, 2, 2, 1, toks, NULL, 3, out),
               CIRCUITS_E_SHAPE, "3 tokens for 2 (batch, position) rows");
    CALL_FAILS("resid_attrs_token_range", circuits_resid_logit_attrs(m, full, &o, stack, 2, 2, 1, toks, far_token, 1, out),
               CIRCUITS_E_RANGE, "circuits_resid_logit_attrs: circuits_model_residual_directions: token 50");
    CALL_FAILS("resid_lens_out_too_small", circuits_logit_lens(m, full, &o, out, 100), CIRCUITS_E_SHAPE,
               "out holds 100 floats, the result needs 300");
    CALL_FAILS("resid_dla_out_too_small",
               circuits_direct_logit_attribution(m, full, CIRCUITS_RESID_DECOMPOSED, &o, toks, NULL, 1, out, 3),
               CIRCUITS_E_SHAPE, "out holds 3 floats, the result needs 12");

    circuits_cache_free(full);
    circuits_cache_free(afull);
    circuits_cache_free(part);
    circuits_cache_free(empty);
    circuits_context_free(ctx);
    circuits_context_free(actx);
    circuits_model_free(ao);
    circuits_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_resid TOOLKIT_DIR CASES_DIR [-v]\n");
        return 2;
    }
    cat_verbose = argc > 3 && strcmp(argv[3], "-v") == 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/resid.json", argv[1]);
    json_error_t err;
    json_t *index = json_load_file(path, 0, &err);
    if (!index) {
        fprintf(stderr, "%s: %s\n", path, err.text);
        return 2;
    }
    const char *name;
    json_t *info;
    json_object_foreach(json_object_get(index, "cases"), name, info)
    {
        snprintf(path, sizeof path, "%s/%s.safetensors", argv[1], name);
        if (cx_st_open_file(&ref, path)) {
            fprintf(stderr, "%s\n", circuits_last_error());
            return 2;
        }
        run_case(argv[2], name, info);
        cx_st_close(ref);
        ref = NULL;
    }
    test_errors(argv[2]);
    printf("all cases: max |diff| / max |reference| %.3g (max abs %.3g)\n", worst_rel, worst_abs);
    json_decref(index);
    return tu_finish("test_resid");
}
