/* The public API's documented contract (include/circuits.h), part 4 of 6: run_with_cache and
 * the cache (filters, descriptors, ownership, replacement, lifetime).
 * Shared helpers: tests/testutil.h (TESTUTIL_API_HELPERS).
 * Usage: test_cache CASES_DIR   (tests/reference/cases) */
#define TESTUTIL_API_HELPERS
#include "testutil.h"

/* ---------------------------------------------------------------------------------------- */
/* caches                                                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef struct copy_arg {
    float *dst;
    size_t n;
} copy_arg;

static int hook_copy(const circuits_tensor *t, void *u)
{
    copy_arg *c = u;
    c->n = numel(t);
    c->dst = malloc(c->n * sizeof *c->dst);
    if (c->dst) memcpy(c->dst, t->data, c->n * sizeof *c->dst);
    return CIRCUITS_HOOK_CONTINUE;
}

static void test_cache(void)
{
    json_t *cj = case_json("hf_tiny_random_gpt2");
    json_t *order = json_object_get(cj, "hook_names_in_order");
    circuits_model *m = load_case("hf_tiny_random_gpt2");
    circuits_context *ctx = make_ctx(m, 0);
    const int64_t B = 2, T = 7, V = 1000, H = 4;
    int32_t tok[14], tok2[14];
    make_tokens(tok, 14, 1000, 11);
    make_tokens(tok2, 14, 1000, 12);
    float *lg = malloc((size_t)(B * T * V) * sizeof *lg);
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CHECK(circuits_cache_count(cache) == 0 && circuits_cache_nbytes(cache) == 0, "a new cache is empty");
    circuits_tensor t;
    CHECK_ERR(circuits_cache_at(cache, 0, &t), CIRCUITS_E_RANGE);

    copy_arg cp = {NULL, 0};
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.0.attn.hook_pattern", hook_copy, &cp, NULL));
    const char *filt[] = {"pattern0", "blocks.*.hook_resid_post", "embed", "blocks.0.attn.hook_pattern", "scale"};
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, filt, 5, cache, lg, NULL, NULL));
    circuits_context_clear_hooks(ctx);
    const char *want[] = {"hook_embed",
                          "blocks.0.attn.hook_pattern",
                          "blocks.0.hook_resid_post",
                          "blocks.1.hook_resid_post",
                          "blocks.2.hook_resid_post",
                          "blocks.3.hook_resid_post",
                          "blocks.4.hook_resid_post",
                          "ln_final.hook_scale"};
    size_t nw = sizeof want / sizeof want[0];
    CHECK(circuits_cache_count(cache) == nw, "filtered cache holds %zu entries, want %zu (duplicates once)",
          circuits_cache_count(cache), nw);
    size_t bytes = 0;
    for (size_t i = 0; i < circuits_cache_count(cache); i++) {
        CHECK_OK(circuits_cache_at(cache, i, &t));
        CHECK(i >= nw || strcmp(t.name, want[i]) == 0, "entry %zu is '%s'", i, t.name);
        CHECK(contiguous(&t) && t.data != NULL && t.layer == parse_layer(t.name) && t.head == -1 &&
                  t.head_axis == expected_head_axis(t.name),
              "entry '%s' descriptor", t.name);
        circuits_tensor d;
        CHECK(point_named(ctx, t.name, &d), "entry '%s' is no hook point", t.name);
        bytes += 4 * numel(&t);
    }
    CHECK(circuits_cache_nbytes(cache) == bytes, "nbytes %zu, entries hold %zu", circuits_cache_nbytes(cache), bytes);
    CHECK_ERR(circuits_cache_at(cache, nw, &t), CIRCUITS_E_RANGE);
    circuits_tensor a, b;
    CHECK_OK(circuits_cache_get(cache, "pattern0", &a));
    CHECK_OK(circuits_cache_get(cache, "blocks.0.attn.hook_pattern", &b));
    CHECK(a.data == b.data && shape_is(&a, SHAPE(B, H, T, T)) && a.head_axis == 1 && a.layer == 0,
          "pattern0 by short and full name");
    bool causal = a.ndim == 4;
    for (int64_t bb = 0; causal && bb < B; bb++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                double s = 0.0;
                for (int64_t j = 0; j < T; j++) {
                    float p = a.data[bb * a.strides[0] + h * a.strides[1] + i * a.strides[2] + j * a.strides[3]];
                    if (j > i && p != 0.0f) causal = false;
                    s += p;
                }
                if (fabs(s - 1.0) > 1e-5) causal = false;
            }
    CHECK(causal, "the cached pattern is not a causal distribution");
    CHECK(cp.dst && cp.n == numel(&a) && memcmp(cp.dst, a.data, cp.n * sizeof *cp.dst) == 0,
          "the cache differs from what the hook saw");
    free(cp.dst);
    CHECK_OK(circuits_cache_get(cache, "resid_post4", &a));
    CHECK(shape_is(&a, SHAPE(B, T, 32)) && a.layer == 4, "resid_post4");
    CHECK_OK(circuits_cache_get(cache, "scale", &a));
    CHECK(shape_is(&a, SHAPE(B, T, 1)) && strcmp(a.name, "ln_final.hook_scale") == 0, "ln_final scale");
    CHECK_FAILS(circuits_cache_get(cache, "pattern1", &t), CIRCUITS_E_NOT_FOUND, "pattern1");
    CHECK_FAILS(circuits_cache_get(cache, "bogus", &t), CIRCUITS_E_NOT_FOUND, "bogus");
    char longname[400];
    memset(longname, 'y', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_ERR(circuits_cache_get(cache, longname, &t), CIRCUITS_E_NOT_FOUND);

    /* a forward after run_with_cache does not write into the cache */
    CHECK_OK(circuits_cache_get(cache, "embed", &a));
    float *embed_copy = malloc(numel(&a) * sizeof *embed_copy);
    memcpy(embed_copy, a.data, numel(&a) * sizeof *embed_copy);
    CHECK_OK(circuits_context_forward(ctx, tok2, B, T, lg, NULL, NULL));
    CHECK(memcmp(embed_copy, a.data, numel(&a) * sizeof *embed_copy) == 0, "a later forward changed the cache");
    free(embed_copy);

    /* a second run replaces the contents */
    CHECK_OK(circuits_context_run_with_cache(ctx, tok2, 1, 3, (const char *const[]){"q0"}, 1, cache, NULL, NULL, NULL));
    CHECK(circuits_cache_count(cache) == 1 && circuits_cache_nbytes(cache) == 4 * 1 * 3 * 4 * 8,
          "second run: %zu entries, %zu bytes", circuits_cache_count(cache), circuits_cache_nbytes(cache));
    CHECK_OK(circuits_cache_get(cache, "q0", &a));
    CHECK(shape_is(&a, SHAPE(1, 3, 4, 8)) && a.head_axis == 2, "q0 of a [1, 3] run");
    CHECK_ERR(circuits_cache_get(cache, "pattern0", &t), CIRCUITS_E_NOT_FOUND);

    /* no filter: everything, with hook_out equal to the logits */
    CHECK_OK(circuits_context_run_with_cache(ctx, tok, B, T, NULL, 0, cache, lg, NULL, NULL));
    CHECK(circuits_cache_count(cache) == json_array_size(order), "full cache: %zu entries", circuits_cache_count(cache));
    bytes = 0;
    for (size_t i = 0; i < circuits_cache_count(cache); i++) {
        CHECK_OK(circuits_cache_at(cache, i, &t));
        CHECK(strcmp(t.name, json_string_value(json_array_get(order, i))) == 0, "full cache entry %zu '%s'", i, t.name);
        bytes += 4 * numel(&t);
    }
    CHECK(circuits_cache_nbytes(cache) == bytes, "full cache nbytes %zu vs %zu", circuits_cache_nbytes(cache), bytes);
    CHECK_OK(circuits_cache_get(cache, "unembed.hook_out", &a));
    CHECK(numel(&a) == (size_t)(B * T * V) && memcmp(a.data, lg, numel(&a) * sizeof *lg) == 0, "hook_out != logits");

    /* the cache owns its copies: it outlives the context */
    circuits_context_free(ctx);
    CHECK_OK(circuits_cache_get(cache, "unembed.hook_out", &a));
    CHECK(memcmp(a.data, lg, numel(&a) * sizeof *lg) == 0, "the cache changed when its context was freed");

    circuits_cache_free(cache);
    free(lg);
    circuits_model_free(m);
    json_decref(cj);
}

static int hook_noop(const circuits_tensor *t, void *u)
{
    (void)t;
    (void)u;
    return CIRCUITS_HOOK_CONTINUE;
}

/* When only the cache reads attn_scores / pattern the attention stays fused and writes the
 * cache's rows itself (forward.c); a callback at every point makes the pass materialise both
 * tensors and fire. The two caches, and the logits, must be the same bit for bit: causal,
 * windowed and soft-capped attention, a left-padded row, and a KV cache's held keys. */
static void test_cache_fused_attention(void)
{
    static const char *const cases[] = {"hf_tiny_random_gpt2", "tl_local_all", "tl_attn_softcap",
                                        "hf_mistral_window"};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        circuits_model *m = load_case(cases[k]);
        circuits_config c = config_of(m);
        circuits_context *ctx = make_ctx(m, 0);
        enum { B = 2, T = 7, HELD = 3 };
        int32_t tok[B * T], mask[B * T];
        make_tokens(tok, B * T, c.d_vocab, 31 + (uint32_t)k);
        for (int i = 0; i < B * T; i++) mask[i] = i >= T || i % T >= 2; /* row 0: two pads on the left */
        size_t nl = (size_t)B * T * (size_t)c.d_vocab_out;
        float *lg[2] = {malloc(nl * sizeof(float)), malloc(nl * sizeof(float))};
        for (int kv = 0; kv < 2; kv++) {
            circuits_cache *cache[2];
            circuits_kv_cache *held[2] = {NULL, NULL};
            for (int hooked = 0; hooked < 2; hooked++) {
                CHECK_OK(circuits_cache_create(&cache[hooked]));
                circuits_run_options ro;
                circuits_run_options_init(&ro);
                ro.attention_mask = mask;
                if (kv) { /* HELD positions first (unmasked), then the run continues them */
                    CHECK_OK(circuits_kv_cache_create(&held[hooked], m, B, HELD + T));
                    CHECK_OK(circuits_context_forward_kv(ctx, held[hooked], tok, B, HELD, NULL));
                    ro.kv_cache = held[hooked];
                }
                if (hooked) CHECK_OK(circuits_context_add_hook(ctx, "*", hook_noop, NULL, NULL));
                CHECK_OK(circuits_context_run_with_cache_opts(ctx, &ro, tok, B, T, NULL, 0, cache[hooked], lg[hooked],
                                                              NULL, NULL));
                circuits_context_clear_hooks(ctx);
            }
            CHECK(memcmp(lg[0], lg[1], nl * sizeof(float)) == 0, "%s kv %d: logits differ with callbacks", cases[k], kv);
            CHECK(circuits_cache_count(cache[0]) == circuits_cache_count(cache[1]) &&
                      circuits_cache_nbytes(cache[0]) == circuits_cache_nbytes(cache[1]),
                  "%s kv %d: the caches differ in layout", cases[k], kv);
            for (size_t i = 0; i < circuits_cache_count(cache[0]); i++) {
                circuits_tensor a, b;
                CHECK_OK(circuits_cache_at(cache[0], i, &a));
                CHECK_OK(circuits_cache_at(cache[1], i, &b));
                CHECK(strcmp(a.name, b.name) == 0 && numel(&a) == numel(&b) &&
                          memcmp(a.data, b.data, numel(&a) * sizeof(float)) == 0,
                      "%s kv %d: '%s' differs between the fused and the materialised attention", cases[k], kv, a.name);
            }
            for (int h = 0; h < 2; h++) {
                circuits_cache_free(cache[h]);
                circuits_kv_cache_free(held[h]);
            }
        }
        free(lg[0]);
        free(lg[1]);
        circuits_context_free(ctx);
        circuits_model_free(m);
    }
}

int main(int argc, char **argv)
{
    tu_cases_arg(argc, argv);
    test_cache();
    test_cache_fused_attention();
    return tu_finish("test_cache");
}
