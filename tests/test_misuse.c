/* Misuse of the API on valid models: NULL pointers, options structs of a wrong size, unknown
 * hook names, out-of-range indices, stale ids, objects of another model, callbacks that fail or
 * stop or call back into their own context, bad generation options. Every named check is a row
 * of docs/errors.md; after all of them the context still gives bit-identical results.
 * Usage: test_misuse MODEL_DIR ATTN_ONLY_DIR [-v]
 *   MODEL_DIR: a GPT-2 with MLPs and a tokenizer (examples/models/tiny-random-gpt2)
 *   ATTN_ONLY_DIR: an attention-only model (tests/reference/cases/tl_attn_only_1l_ln)
 *   -v prints every check as a docs/errors.md row. */
#include "catalogue.h"

#include <math.h>
#include <stdint.h>

static const char *g_model_dir, *g_attn_only_dir;

static char sentinel_byte;
#define SENTINEL ((void *)&sentinel_byte)

/* [1, 8] tokens used throughout */
static const int32_t TOK[8] = {11, 42, 7, 11, 42, 7, 3, 99};

/* ---- NULL pointers, function by function in the order of circuits.h ---- */

static void null_checks(circuits_model *m, circuits_context *ctx, const circuits_tokenizer *tok)
{
    circuits_tensor t;
    circuits_config cfg;
    cfg.size = sizeof cfg;
    char buf[64];
    size_t n;
    float f[4096];
    int32_t ids[16];

    CALL_FAILS("null_config_model", circuits_model_config(NULL, &cfg), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_weight_model", circuits_model_weight(NULL, "embed.W_E", &t), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_weight_name", circuits_model_weight(m, NULL, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_weight_out", circuits_model_weight(m, "embed.W_E", NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_weight_at_model", circuits_model_weight_at(NULL, 0, &t), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_weight_at_out", circuits_model_weight_at(m, 0, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_context_create_out", circuits_context_create(NULL, m, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "out is NULL");
    CALL_FAILS("null_hook_point_ctx", circuits_context_hook_point(NULL, 0, 1, 4, &t), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_hook_point_out", circuits_context_hook_point(ctx, 0, 1, 4, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_add_hook_ctx", circuits_context_add_hook(NULL, "embed", NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("null_add_hook_name", circuits_context_add_hook(ctx, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "must not be NULL");
    CALL_FAILS("null_add_hook_fn", circuits_context_add_hook(ctx, "embed", NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx, name and fn must not be NULL");
    CALL_FAILS("null_remove_hook_ctx", circuits_context_remove_hook(NULL, 1), CIRCUITS_E_INVALID_ARGUMENT,
               "ctx is NULL");
    CALL_FAILS("null_act_name_name", circuits_act_name(NULL, 0, NULL, buf, sizeof buf), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_act_name_buf", circuits_act_name("pattern", 0, NULL, NULL, 64), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_resolve_ctx", circuits_context_resolve_hook_name(NULL, "embed", 0, buf, sizeof buf, &n),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_resolve_name", circuits_context_resolve_hook_name(ctx, NULL, 0, buf, sizeof buf, &n),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    /* reported as a buffer too small (lib/run/context.c; NULL with a size would be clearer) */
    CALL_FAILS("null_resolve_buf", circuits_context_resolve_hook_name(ctx, "embed", 0, NULL, 64, &n), CIRCUITS_E_RANGE,
               "buffer too small for hook name 'hook_embed'");

    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CALL_FAILS("null_cache_create_out", circuits_cache_create(NULL), CIRCUITS_E_INVALID_ARGUMENT, "out is NULL");
    CALL_FAILS("null_run_with_cache_ctx", circuits_context_run_with_cache(NULL, TOK, 1, 4, NULL, 0, cache, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx and cache must not be NULL");
    CALL_FAILS("null_run_with_cache_cache", circuits_context_run_with_cache(ctx, TOK, 1, 4, NULL, 0, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx and cache must not be NULL");
    CALL_FAILS("null_run_with_cache_tokens", circuits_context_run_with_cache(ctx, NULL, 1, 4, NULL, 0, cache, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "tokens is NULL");
    CALL_FAILS("null_run_with_cache_filter", circuits_context_run_with_cache(ctx, TOK, 1, 4, NULL, 2, cache, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "names_filter is NULL");
    const char *holes[2] = {"embed", NULL};
    CALL_FAILS("null_run_with_cache_filter_entry",
               circuits_context_run_with_cache(ctx, TOK, 1, 4, holes, 2, cache, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "names_filter[1] is NULL");
    CALL_FAILS("null_cache_at_cache", circuits_cache_at(NULL, 0, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_cache_at_out", circuits_cache_at(cache, 0, NULL), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_cache_get_cache", circuits_cache_get(NULL, "embed", &t), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_cache_get_name", circuits_cache_get(cache, NULL, &t), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_cache_get_out", circuits_cache_get(cache, "embed", NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    circuits_cache_free(cache);

    /* factored matrices: f is a valid [2, 3] x [3, 2] product */
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1};
    circuits_factored *fm = NULL, *g = SENTINEL;
    CHECK_OK(circuits_factored_create(&fm, A, B, 1, 2, 3, 2));
    int64_t shape[4], rows[4], cols[4];
    int32_t ndim;
    CALL_FAILS("null_factored_create_out", circuits_factored_create(NULL, A, B, 1, 2, 3, 2),
               CIRCUITS_E_INVALID_ARGUMENT, "out is NULL");
    CALL_FAILS("null_factored_create_a", circuits_factored_create(&g, NULL, B, 1, 2, 3, 2), CIRCUITS_E_INVALID_ARGUMENT,
               "A and B must not be NULL");
    CHECK(g == NULL, "factored_create left *out %p", (void *)g);
    CALL_FAILS("null_factored_shape", circuits_factored_shape(fm, NULL, &ndim, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_factored_factors", circuits_factored_factors(NULL, &t, &t), CIRCUITS_E_INVALID_ARGUMENT,
               "f is NULL");
    CALL_FAILS("null_factored_transpose", circuits_factored_transpose(fm, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_factored_matmul", circuits_factored_matmul(fm, NULL, &g), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_factored_matmul_dense", circuits_factored_matmul_dense(fm, NULL, 1, 2, &g),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_factored_rmatmul_dense", circuits_factored_rmatmul_dense(NULL, 1, 2, fm, &g),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_factored_matvec", circuits_factored_matvec(fm, NULL, f), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_factored_vecmat", circuits_factored_vecmat(f, fm, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_factored_norm", circuits_factored_norm(NULL, f), CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_factored_svd_s", circuits_factored_svd(fm, f, NULL, f), CIRCUITS_E_INVALID_ARGUMENT,
               "f and S must not be NULL");
    CALL_FAILS("null_factored_eigenvalues", circuits_factored_eigenvalues(fm, f, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_factored_corner", circuits_factored_corner(fm, 1, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_factored_diagonal", circuits_factored_diagonal(NULL, f), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_factored_topk", circuits_factored_topk(fm, 0, CIRCUITS_TOPK_ALL, 0, 2, f, NULL, cols, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_factored_materialize", circuits_factored_materialize(fm, NULL, 100), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    (void)shape, (void)rows;
    circuits_factored_free(fm);

    /* the circuits of a model */
    CALL_FAILS("null_model_ov", circuits_model_ov(NULL, 0, 0, &g), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_model_ov: model and out must not be NULL");
    CALL_FAILS("null_model_qk_out", circuits_model_qk(m, 0, 0, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "circuits_model_qk: model and out must not be NULL");
    CALL_FAILS("null_composition_circuit", circuits_model_composition_circuit(m, CIRCUITS_COMPOSITION_K, 0, 0, 1, 0, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_virtual_ov", circuits_model_virtual_ov(NULL, 0, 0, 1, 0, &g), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_virtual_weights",
               circuits_model_virtual_weights(m, CIRCUITS_WRITER_EMBED, 0, 0, CIRCUITS_READER_Q, 0, 0, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_composition_scores", circuits_model_composition_scores(m, CIRCUITS_COMPOSITION_K, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_mlp_composition_scores", circuits_model_mlp_composition_scores(NULL, CIRCUITS_COMPOSITION_K, f),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_composition_baseline", circuits_composition_baseline(32, 8, 0, 4, 1, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "mean is NULL");
    CALL_FAILS("null_copying_scores", circuits_model_copying_scores(m, 0, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_detect_heads", circuits_context_detect_heads(ctx, NULL, 1, 8, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, NULL, f),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx, tokens and out must not be NULL");
    CALL_FAILS("null_repeated_tokens", circuits_repeated_tokens(1, 4, 100, 0, -1, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "out is NULL");
    CALL_FAILS("null_induction_scores", circuits_context_induction_scores(ctx, TOK, 1, 8, 4, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx, tokens and scores must not be NULL");

    /* tokenizers */
    circuits_tokenizer *tk = SENTINEL;
    CALL_FAILS("null_tokenizer_load_out", circuits_tokenizer_load(NULL, g_model_dir), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_tokenizer_load_path", circuits_tokenizer_load(&tk, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CHECK(tk == NULL, "tokenizer_load left *out");
    CALL_FAILS("null_encode_tok", circuits_tokenizer_encode(NULL, "a", 1, NULL, ids, 16, &n),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_encode_text", circuits_tokenizer_encode(tok, NULL, 1, NULL, ids, 16, &n),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_encode_n_out", circuits_tokenizer_encode(tok, "a", 1, NULL, ids, 16, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_decode_ids", circuits_tokenizer_decode(tok, NULL, 2, buf, sizeof buf, &n),
               CIRCUITS_E_INVALID_ARGUMENT, "NULL argument");
    CALL_FAILS("null_decode_buf", circuits_tokenizer_decode(tok, TOK, 2, NULL, 64, &n), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");
    CALL_FAILS("null_token_tok", circuits_tokenizer_token(NULL, 1, buf, sizeof buf, &n), CIRCUITS_E_INVALID_ARGUMENT,
               "NULL argument");

    /* the KV cache and generation */
    circuits_kv_cache *kv = SENTINEL;
    int32_t out[16];
    CALL_FAILS("null_kv_create_out", circuits_kv_cache_create(NULL, m, 1, 8), CIRCUITS_E_INVALID_ARGUMENT,
               "out is NULL");
    CALL_FAILS("null_kv_create_model", circuits_kv_cache_create(&kv, NULL, 1, 8), CIRCUITS_E_INVALID_ARGUMENT,
               "model is NULL");
    CHECK(kv == NULL, "kv_cache_create left *out");
    CALL_FAILS("null_kv_truncate", circuits_kv_cache_truncate(NULL, 0), CIRCUITS_E_INVALID_ARGUMENT, "kv is NULL");
    CALL_FAILS("null_kv_layer", circuits_kv_cache_layer(NULL, 0, &t, &t), CIRCUITS_E_INVALID_ARGUMENT, "kv is NULL");
    CALL_FAILS("null_forward_kv", circuits_context_forward_kv(ctx, NULL, TOK, 1, 4, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "ctx and kv must not be NULL");
    CALL_FAILS("null_generate_prompt", circuits_context_generate(ctx, NULL, 1, 4, NULL, out, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx, prompt and out must not be NULL");
    CALL_FAILS("null_generate_out", circuits_context_generate(ctx, TOK, 1, 4, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx, prompt and out must not be NULL");

    /* functions without a status: NULL is harmless and gives the neutral answer */
    CHECK(circuits_context_hook_point_count(NULL) == 0, "hook_point_count(NULL)");
    CHECK(circuits_cache_count(NULL) == 0 && circuits_cache_nbytes(NULL) == 0, "cache_count/nbytes(NULL)");
    CHECK(circuits_tokenizer_vocab_size(NULL) == 0, "vocab_size(NULL)");
    CHECK(circuits_tokenizer_bos_id(NULL) == -1 && circuits_tokenizer_eos_id(NULL) == -1, "bos/eos(NULL)");
    CHECK(circuits_model_tokenizer(NULL) == NULL, "model_tokenizer(NULL)");
    CHECK(circuits_kv_cache_length(NULL) == 0, "kv_cache_length(NULL)");
    circuits_context_clear_hooks(NULL);
    circuits_cache_free(NULL);
    circuits_factored_free(NULL);
    circuits_tokenizer_free(NULL);
    circuits_kv_cache_free(NULL);
    circuits_context_options_init(NULL);
    circuits_encode_options_init(NULL);
    circuits_detect_options_init(NULL);
    circuits_generate_options_init(NULL);
    CHECK(strstr(circuits_status_string(7), "unknown") != NULL, "status_string(7)");
    CHECK(strstr(circuits_status_string(INT32_MIN), "unknown") != NULL, "status_string(INT32_MIN)");
}

/* ---- options and config structs of a size this library does not know ---- */

static void version_checks(circuits_model *m, circuits_context *ctx, const circuits_tokenizer *tok)
{
    circuits_context *c2 = SENTINEL;
    circuits_context_options co;
    circuits_context_options_init(&co);
    co.size = (uint32_t)sizeof co + 4;
    CALL_FAILS("version_context_options_too_large", circuits_context_create(&c2, m, &co), CIRCUITS_E_VERSION,
               "is not one this library knows");
    CHECK(c2 == NULL, "context_create left *out");
    circuits_context_options_init(&co);
    co.use_attn_result = 2;
    CALL_FAILS("context_options_attn_result_2", circuits_context_create(&c2, m, &co), CIRCUITS_E_INVALID_ARGUMENT,
               "use_attn_result must be 0 or 1");

    circuits_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = 3;
    CALL_FAILS("version_config_size_3", circuits_model_config(m, &cfg), CIRCUITS_E_VERSION, "out->size");

    int32_t ids[8];
    size_t n;
    circuits_encode_options eo;
    circuits_encode_options_init(&eo);
    eo.size = 0;
    CALL_FAILS("version_encode_options_size_0", circuits_tokenizer_encode(tok, "a", 1, &eo, ids, 8, &n),
               CIRCUITS_E_VERSION, "options size 0");
    eo.size = (uint32_t)sizeof eo + 8;
    CALL_FAILS("version_encode_options_too_large", circuits_tokenizer_encode(tok, "a", 1, &eo, ids, 8, &n),
               CIRCUITS_E_VERSION, "is not one this library knows");

    float scores[5 * 4];
    circuits_detect_options dopt;
    circuits_detect_options_init(&dopt);
    dopt.size = 2;
    CALL_FAILS("version_detect_options_size_2",
               circuits_context_detect_heads(ctx, TOK, 1, 8, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, &dopt, scores),
               CIRCUITS_E_VERSION, "options size 2");

    int32_t out[16];
    circuits_generate_options go;
    circuits_generate_options_init(&go);
    go.size = 0;
    CALL_FAILS("version_generate_options_size_0", circuits_context_generate(ctx, TOK, 1, 4, &go, out, NULL),
               CIRCUITS_E_VERSION, "options size 0");
    go.size = (uint32_t)sizeof go * 2;
    CALL_FAILS("version_generate_options_too_large", circuits_context_generate(ctx, TOK, 1, 4, &go, out, NULL),
               CIRCUITS_E_VERSION, "is not one this library knows");
}

/* ---- weights, hook names, hook points ---- */

static int hook_continue(const circuits_tensor *act, void *user_data)
{
    (void)act, (void)user_data;
    return CIRCUITS_HOOK_CONTINUE;
}

static void hook_checks(circuits_model *m, circuits_context *ctx)
{
    circuits_tensor t;
    char buf[64];
    size_t n = 0;
    CALL_FAILS("weight_name_empty", circuits_model_weight(m, "", &t), CIRCUITS_E_NOT_FOUND, "no weight named ''");
    CALL_FAILS("weight_hf_name", circuits_model_weight(m, "transformer.wte.weight", &t), CIRCUITS_E_NOT_FOUND,
               "TransformerLens names");
    CALL_FAILS("weight_layer_out_of_range", circuits_model_weight(m, "blocks.5.attn.W_Q", &t), CIRCUITS_E_NOT_FOUND,
               "no weight named 'blocks.5.attn.W_Q'");
    CALL_FAILS("weight_at_size_max", circuits_model_weight_at(m, SIZE_MAX, &t), CIRCUITS_E_RANGE, "out of range");

    CALL_FAILS("hook_unknown_name", circuits_context_add_hook(ctx, "blocks.0.attn.hook_patern", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "no hook point named 'blocks.0.attn.hook_patern'");
    CALL_FAILS("hook_name_empty", circuits_context_add_hook(ctx, "", hook_continue, NULL, NULL), CIRCUITS_E_NOT_FOUND,
               "no hook point named ''");
    CALL_FAILS("hook_layer_out_of_range", circuits_context_add_hook(ctx, "blocks.5.hook_resid_pre", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "no hook point named 'blocks.5.hook_resid_pre'");
    CALL_FAILS("hook_layer_negative", circuits_context_add_hook(ctx, "blocks.-1.hook_resid_pre", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "blocks.-1.hook_resid_pre");
    CALL_FAILS("hook_short_name_out_of_range", circuits_context_add_hook(ctx, "pattern9", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "(read as 'blocks.9.attn.hook_pattern')");
    CALL_FAILS("hook_short_name_huge_layer",
               circuits_context_add_hook(ctx, "resid_pre99999999999999999999", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "no hook point named 'resid_pre99999999999999999999'");
    CHECK(!strstr(circuits_last_error(), "read as"), "a 20-digit layer was read as a layer: %s", circuits_last_error());
    CALL_FAILS("hook_pattern_matches_nothing", circuits_context_add_hook(ctx, "blocks.*.hook_nothing", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "pattern 'blocks.*.hook_nothing' matches no hook point");
    CALL_FAILS("hook_result_without_option", circuits_context_add_hook(ctx, "blocks.0.attn.hook_result", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "set use_attn_result");
    CALL_FAILS("hook_weight_name", circuits_context_add_hook(ctx, "blocks.0.attn.W_Q", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "no hook point named 'blocks.0.attn.W_Q'");
    /* a name of 300 characters: longer than any hook point, refused without overflowing */
    char longname[301];
    memset(longname, 'x', 300);
    longname[300] = '\0';
    memcpy(longname, "blocks.0.", 9);
    CALL_FAILS("hook_name_300_chars", circuits_context_add_hook(ctx, longname, hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "no hook point named 'blocks.0.xxx");
    CHECK(circuits_context_hook_point_count(ctx) > 0, "hook points");

    CALL_FAILS("hook_point_index_out_of_range", circuits_context_hook_point(ctx, 100000, 1, 4, &t), CIRCUITS_E_RANGE,
               "hook point index 100000 out of range");
    CALL_FAILS("hook_point_batch_0", circuits_context_hook_point(ctx, 0, 0, 4, &t), CIRCUITS_E_SHAPE,
               "batch and pos must be at least 1");
    CALL_FAILS("resolve_unknown_name", circuits_context_resolve_hook_name(ctx, "hook_nothing", 0, buf, sizeof buf, &n),
               CIRCUITS_E_NOT_FOUND, "no hook point named 'hook_nothing'");
    CALL_FAILS("resolve_index_out_of_range",
               circuits_context_resolve_hook_name(ctx, "blocks.*.attn.hook_pattern", 5, buf, sizeof buf, &n),
               CIRCUITS_E_RANGE, "selects 5 hook points; index 5 is out of range");
    CALL_FAILS("resolve_buffer_too_small", circuits_context_resolve_hook_name(ctx, "pattern1", 0, buf, 8, &n),
               CIRCUITS_E_RANGE, "buffer too small for hook name 'blocks.1.attn.hook_pattern'");
    CALL_FAILS("act_name_buffer_too_small", circuits_act_name("pattern", 1, NULL, buf, 4), CIRCUITS_E_RANGE,
               "buffer of 4 bytes is too small");
    CALL_FAILS("act_name_buffer_size_0", circuits_act_name("pattern", 1, NULL, buf, 0), CIRCUITS_E_RANGE,
               "buffer of 0 bytes is too small");

    /* hook ids: removing twice, after clear, ids never issued */
    circuits_hook_id id = 0, id2 = 0;
    CHECK_OK(circuits_context_add_hook(ctx, "embed", hook_continue, NULL, &id));
    CHECK_OK(circuits_context_remove_hook(ctx, id));
    CALL_FAILS("hook_remove_twice", circuits_context_remove_hook(ctx, id), CIRCUITS_E_NOT_FOUND,
               "no hook registered with id");
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.*.hook_resid_pre", hook_continue, NULL, &id2));
    circuits_context_clear_hooks(ctx);
    CALL_FAILS("hook_remove_after_clear", circuits_context_remove_hook(ctx, id2), CIRCUITS_E_NOT_FOUND,
               "no hook registered with id");
    CALL_FAILS("hook_remove_id_0", circuits_context_remove_hook(ctx, 0), CIRCUITS_E_NOT_FOUND,
               "no hook registered with id 0");
    CALL_FAILS("hook_remove_id_negative", circuits_context_remove_hook(ctx, -1), CIRCUITS_E_NOT_FOUND,
               "no hook registered with id -1");
    CALL_FAILS("hook_remove_id_never_issued", circuits_context_remove_hook(ctx, INT64_MAX), CIRCUITS_E_NOT_FOUND,
               "no hook registered with id 9223372036854775807");
}

/* ---- callbacks that fail, stop, or call back into their context ---- */

typedef struct reenter {
    circuits_context *ctx;
    circuits_kv_cache *kv;
    int ran;
} reenter;

static int hook_fails(const circuits_tensor *act, void *user_data)
{
    (void)act, (void)user_data;
    return -7;
}

static int hook_returns_2(const circuits_tensor *act, void *user_data)
{
    (void)act, (void)user_data;
    return 2;
}

static int hook_stops(const circuits_tensor *act, void *user_data)
{
    (void)act, (void)user_data;
    return CIRCUITS_HOOK_STOP;
}

/* Every call back into the running context is refused; the run itself goes on. */
static int hook_reenters(const circuits_tensor *act, void *user_data)
{
    (void)act;
    reenter *r = user_data;
    if (r->ran++) return CIRCUITS_HOOK_CONTINUE;
    circuits_context *ctx = r->ctx;
    float logits[8 * 1000];
    int32_t out[16];
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CALL_FAILS("callback_forward_same_context", circuits_context_forward(ctx, TOK, 1, 4, logits, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "called from a callback of the same context");
    CALL_FAILS("callback_add_hook_same_context", circuits_context_add_hook(ctx, "embed", hook_continue, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "called from a callback of the same context");
    CALL_FAILS("callback_remove_hook_same_context", circuits_context_remove_hook(ctx, 1), CIRCUITS_E_INVALID_ARGUMENT,
               "called from a callback of the same context");
    CALL_FAILS("callback_run_with_cache_same_context",
               circuits_context_run_with_cache(ctx, TOK, 1, 4, NULL, 0, cache, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "called from a callback of the same context");
    CALL_FAILS("callback_forward_kv_same_context", circuits_context_forward_kv(ctx, r->kv, TOK, 1, 4, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "called from a callback of the same context");
    CALL_FAILS("callback_generate_same_context", circuits_context_generate(ctx, TOK, 1, 4, NULL, out, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "called from a callback of the same context");
    float scores[5 * 4];
    CALL_FAILS("callback_detect_heads_same_context",
               circuits_context_detect_heads(ctx, TOK, 1, 8, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, NULL, scores),
               CIRCUITS_E_INVALID_ARGUMENT, "called from a callback of the same context");
    CALL_FAILS("callback_induction_scores_same_context",
               circuits_context_induction_scores(ctx, TOK, 1, 8, 4, scores, NULL, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "called from a callback of the same context");
    circuits_context_clear_hooks(ctx); /* ignored while running: this hook keeps firing */
    circuits_cache_free(cache);
    return CIRCUITS_HOOK_CONTINUE;
}

static int step_fails(int64_t step, const int32_t *tokens, const float *logits, int64_t batch, void *user_data)
{
    (void)step, (void)tokens, (void)logits, (void)batch, (void)user_data;
    return -1;
}

static int step_stops(int64_t step, const int32_t *tokens, const float *logits, int64_t batch, void *user_data)
{
    (void)tokens, (void)logits, (void)batch, (void)user_data;
    return step == 1 ? CIRCUITS_HOOK_STOP : 0;
}

static void callback_checks(circuits_model *m, circuits_context *ctx)
{
    float logits[8 * 1000];
    circuits_hook_id id;
    CHECK_OK(circuits_context_add_hook(ctx, "blocks.2.hook_mlp_out", hook_fails, NULL, &id));
    CALL_FAILS("callback_returns_negative", circuits_context_forward(ctx, TOK, 1, 8, logits, NULL, NULL),
               CIRCUITS_E_CALLBACK, "hook callback at 'blocks.2.hook_mlp_out' failed (returned -7)");
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_add_hook(ctx, "ln_final.hook_normalized", hook_returns_2, NULL, &id));
    CALL_FAILS("callback_returns_2", circuits_context_forward(ctx, TOK, 1, 8, logits, NULL, NULL), CIRCUITS_E_CALLBACK,
               "failed (returned 2)");
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_add_hook(ctx, "pattern0", hook_stops, NULL, &id));
    CALL_FAILS("callback_stops", circuits_context_forward(ctx, TOK, 1, 8, logits, NULL, NULL), CIRCUITS_E_STOPPED,
               "run stopped by the hook callback at 'blocks.0.attn.hook_pattern'");
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    CALL_FAILS("callback_stops_run_with_cache",
               circuits_context_run_with_cache(ctx, TOK, 1, 8, NULL, 0, cache, NULL, NULL, NULL), CIRCUITS_E_STOPPED,
               "run stopped by the hook callback");
    circuits_cache_free(cache);
    int32_t out[16];
    circuits_generate_options go;
    circuits_generate_options_init(&go);
    go.do_sample = 0;
    go.max_new_tokens = 4;
    int64_t len = -1;
    CALL_FAILS("callback_stops_generate", circuits_context_generate(ctx, TOK, 1, 4, &go, out, &len),
               CIRCUITS_E_STOPPED, "run stopped by the hook callback");
    CHECK(len == 4, "a stopped generate wrote %lld columns, want the 4 of the prompt", (long long)len);
    circuits_context_clear_hooks(ctx);

    go.on_step = step_fails;
    CALL_FAILS("generate_on_step_fails", circuits_context_generate(ctx, TOK, 1, 4, &go, out, &len), CIRCUITS_E_CALLBACK,
               "on_step");
    CHECK(len == 5, "a generate failed at step 0 holds %lld columns, want 5", (long long)len);
    go.on_step = step_stops; /* a success: two tokens generated */
    CHECK_OK(circuits_context_generate(ctx, TOK, 1, 4, &go, out, &len));
    CHECK(len == 6, "on_step STOP at step 1: %lld columns, want 6", (long long)len);

    reenter r = {ctx, NULL, 0};
    CHECK_OK(circuits_kv_cache_create(&r.kv, m, 1, 16));
    CHECK_OK(circuits_context_add_hook(ctx, "embed", hook_reenters, &r, &id));
    CHECK_OK(circuits_context_forward(ctx, TOK, 1, 8, logits, NULL, NULL));
    CHECK(r.ran == 1, "the re-entering hook ran %d times", r.ran);
    CHECK_OK(circuits_context_remove_hook(ctx, id)); /* clear_hooks from the callback was ignored */
    circuits_kv_cache_free(r.kv);
}

/* ---- tokens, shapes and ranges of calls ---- */

static void range_checks(circuits_model *m, circuits_context *ctx, const circuits_tokenizer *tok)
{
    float logits[8 * 1000], scores[5 * 4];
    int32_t big[600];
    for (int i = 0; i < 600; i++) big[i] = i % 50;
    CALL_FAILS("fwd_pos_513", circuits_context_forward(ctx, big, 1, 513, NULL, NULL, NULL), CIRCUITS_E_RANGE,
               "513 positions exceed the model's n_ctx = 512");
    CALL_FAILS("fwd_batch_pos_overflow", circuits_context_forward(ctx, TOK, INT64_MAX, 8, NULL, NULL, NULL),
               CIRCUITS_E_RANGE, "is too large");

    /* a tokenizer of another vocabulary: its ids reach past the model's d_vocab = 1000 */
    int32_t ids[16];
    size_t n = 0;
    CHECK_OK(circuits_tokenizer_encode(tok, " hello", 6, NULL, ids, 16, &n));
    ids[0] = 50256; /* GPT-2's <|endoftext|>, as a GPT-2 tokenizer would give it */
    CALL_FAILS("fwd_token_of_another_tokenizer", circuits_context_forward(ctx, ids, 1, 1, logits, NULL, NULL),
               CIRCUITS_E_RANGE, "token id 50256 at [0, 0] is outside the vocabulary [0, 1000)");

    char buf[16];
    CALL_FAILS("encode_capacity", circuits_tokenizer_encode(tok, "hello hello hello", 17, NULL, ids, 1, &n),
               CIRCUITS_E_RANGE, "do not fit in 1");
    CALL_FAILS("decode_id_out_of_range", circuits_tokenizer_decode(tok, (const int32_t[]){1, 1000}, 2, buf, sizeof buf, &n),
               CIRCUITS_E_RANGE, "ids[1] = 1000 is not a token");
    CALL_FAILS("decode_buffer_small", circuits_tokenizer_decode(tok, TOK, 8, buf, 2, &n), CIRCUITS_E_RANGE,
               "do not fit in 2");
    CALL_FAILS("token_id_negative", circuits_tokenizer_token(tok, -1, buf, sizeof buf, &n), CIRCUITS_E_RANGE,
               "circuits_tokenizer_token: id -1 is not a token (vocabulary size 1000)");
    circuits_encode_options eo;
    circuits_encode_options_init(&eo);
    eo.add_prefix_space = 7;
    CALL_FAILS("encode_add_prefix_space_7", circuits_tokenizer_encode(tok, "a", 1, &eo, ids, 16, &n),
               CIRCUITS_E_INVALID_ARGUMENT, "add_prefix_space");
    circuits_encode_options_init(&eo);
    eo.parse_special = 3;
    CALL_FAILS("encode_parse_special_3", circuits_tokenizer_encode(tok, "a", 1, &eo, ids, 16, &n),
               CIRCUITS_E_INVALID_ARGUMENT, "parse_special");

    /* run_with_cache, the cache */
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    const char *nothing[1] = {"blocks.*.hook_nothing"};
    CALL_FAILS("cache_filter_matches_nothing",
               circuits_context_run_with_cache(ctx, TOK, 1, 8, nothing, 1, cache, NULL, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "matches no hook point");
    CALL_FAILS("cache_run_batch_0", circuits_context_run_with_cache(ctx, TOK, 0, 8, NULL, 0, cache, NULL, NULL, NULL),
               CIRCUITS_E_SHAPE, "batch and pos must be at least 1");
    CALL_FAILS("cache_run_token_out_of_range",
               circuits_context_run_with_cache(ctx, (const int32_t[]){1, 1000}, 1, 2, NULL, 0, cache, NULL, NULL, NULL),
               CIRCUITS_E_RANGE, "token id 1000 at [0, 1]");
    const char *one[1] = {"pattern0"};
    CHECK_OK(circuits_context_run_with_cache(ctx, TOK, 1, 8, one, 1, cache, NULL, NULL, NULL));
    circuits_tensor t;
    CALL_FAILS("cache_get_not_cached", circuits_cache_get(cache, "pattern1", &t), CIRCUITS_E_NOT_FOUND,
               "the cache holds no 'pattern1' (read as 'blocks.1.attn.hook_pattern')");
    CALL_FAILS("cache_at_out_of_range", circuits_cache_at(cache, 1, &t), CIRCUITS_E_RANGE,
               "cache index 1 out of range (1 entries)");
    circuits_cache_free(cache);

    /* circuits and composition: layer / head / mode out of range */
    circuits_factored *f = SENTINEL;
    CALL_FAILS("circuit_layer_out_of_range", circuits_model_ov(m, 5, 0, &f), CIRCUITS_E_RANGE,
               "layer 5 out of range (model has 5; -1 for all)");
    CHECK(f == NULL, "model_ov left *out");
    CALL_FAILS("circuit_head_out_of_range", circuits_model_full_qk(m, 0, 4, &f), CIRCUITS_E_RANGE,
               "head 4 out of range (model has 4; -1 for all)");
    CALL_FAILS("circuit_layer_minus_2", circuits_model_pos_qk(m, -2, 0, &f), CIRCUITS_E_RANGE, "layer -2 out of range");
    CALL_FAILS("rotary_qk_not_rotary", circuits_model_rotary_qk(m, 0, 0, 4, &f), CIRCUITS_E_UNSUPPORTED,
               "circuits_model_rotary_qk: the model is not rotary");
    CALL_FAILS("composition_circuit_head_out_of_range",
               circuits_model_composition_circuit(m, CIRCUITS_COMPOSITION_K, 0, 0, 1, 9, &f), CIRCUITS_E_RANGE,
               "heads L0H0, L1H9: out of range for 5 layers x 4 heads");
    CALL_FAILS("composition_circuit_mode", circuits_model_composition_circuit(m, 3, 0, 0, 1, 0, &f),
               CIRCUITS_E_INVALID_ARGUMENT, "composition mode must be CIRCUITS_COMPOSITION_Q, _K or _V");
    CALL_FAILS("virtual_ov_out_of_range", circuits_model_virtual_ov(m, 0, 0, 7, 0, &f), CIRCUITS_E_RANGE,
               "out of range for 5 layers x 4 heads");
    CALL_FAILS("virtual_weights_writer_kind", circuits_model_virtual_weights(m, 9, 0, 0, CIRCUITS_READER_Q, 0, 0, &f),
               CIRCUITS_E_INVALID_ARGUMENT, "unknown writer kind 9");
    CALL_FAILS("virtual_weights_reader_kind",
               circuits_model_virtual_weights(m, CIRCUITS_WRITER_EMBED, 0, 0, 9, 0, 0, &f), CIRCUITS_E_INVALID_ARGUMENT,
               "unknown reader kind 9");
    CALL_FAILS("virtual_weights_writer_layer",
               circuits_model_virtual_weights(m, CIRCUITS_WRITER_HEAD, 5, 0, CIRCUITS_READER_Q, 0, 0, &f),
               CIRCUITS_E_RANGE, "writer layer 5 out of range (model has 5)");
    CALL_FAILS("virtual_weights_reader_head",
               circuits_model_virtual_weights(m, CIRCUITS_WRITER_EMBED, 0, 0, CIRCUITS_READER_K, 0, 4, &f),
               CIRCUITS_E_RANGE, "reader head 4 out of range (model has 4)");
    static float comp[5 * 4 * 5 * 4];
    CALL_FAILS("composition_scores_mode", circuits_model_composition_scores(m, -1, comp), CIRCUITS_E_INVALID_ARGUMENT,
               "composition mode must be");
    CALL_FAILS("composition_baseline_d_head_too_large", circuits_composition_baseline(8, 70000, 0, 4, 1, comp, NULL),
               CIRCUITS_E_RANGE, "d_model 8, d_head 70000, d_mlp 0, n_samples 4: need 1 <= d_model <= 65536, 1 <= d_head <= 65536");
    CALL_FAILS("composition_baseline_samples_0", circuits_composition_baseline(32, 8, 0, 0, 1, comp, NULL),
               CIRCUITS_E_RANGE, "n_samples 0: need");

    /* head detectors and induction scores */
    circuits_detect_options dopt;
    circuits_detect_options_init(&dopt);
    CALL_FAILS("detect_kind_unknown", circuits_context_detect_heads(ctx, TOK, 1, 8, 9, NULL, NULL, scores),
               CIRCUITS_E_INVALID_ARGUMENT, "unknown head kind 9");
    CALL_FAILS("detect_custom_without_pattern",
               circuits_context_detect_heads(ctx, TOK, 1, 8, CIRCUITS_HEAD_CUSTOM, NULL, NULL, scores),
               CIRCUITS_E_INVALID_ARGUMENT, "CIRCUITS_HEAD_CUSTOM needs a [pos, pos] detection pattern");
    float upper[4] = {0, 1, 0, 0};
    CALL_FAILS("detect_custom_not_lower_triangular",
               circuits_context_detect_heads(ctx, TOK, 1, 2, CIRCUITS_HEAD_CUSTOM, upper, NULL, scores),
               CIRCUITS_E_SHAPE, "must be lower triangular ([0, 1] is not 0)");
    dopt.error_measure = 5;
    CALL_FAILS("detect_error_measure",
               circuits_context_detect_heads(ctx, TOK, 1, 8, CIRCUITS_HEAD_INDUCTION, NULL, &dopt, scores),
               CIRCUITS_E_INVALID_ARGUMENT, "error_measure must be CIRCUITS_DETECT_MUL or CIRCUITS_DETECT_ABS");
    CALL_FAILS("detect_pos_1", circuits_context_detect_heads(ctx, TOK, 1, 1, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, NULL, scores),
               CIRCUITS_E_SHAPE, "head detection needs at least 2 positions");
    CALL_FAILS("detect_pos_over_n_ctx",
               circuits_context_detect_heads(ctx, big, 1, 600, CIRCUITS_HEAD_CUSTOM, logits, NULL, scores),
               CIRCUITS_E_RANGE, "circuits_context_detect_heads: 600 positions exceed the model's n_ctx = 512");
    CALL_FAILS("detect_token_out_of_range",
               circuits_context_detect_heads(ctx, (const int32_t[]){1, 1000}, 1, 2, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL,
                                             NULL, scores),
               CIRCUITS_E_RANGE, "token id 1000 at [0, 1]");
    int32_t rep[2 * 9];
    CALL_FAILS("repeated_tokens_batch_0", circuits_repeated_tokens(0, 4, 100, 0, -1, rep), CIRCUITS_E_INVALID_ARGUMENT,
               "batch 0, seq_len 4 and d_vocab 100 must be at least 1");
    CALL_FAILS("repeated_tokens_seq_len_huge", circuits_repeated_tokens(1, INT64_MAX, 100, 0, -1, rep),
               CIRCUITS_E_RANGE, "seq_len 9223372036854775807 is too large");
    CALL_FAILS("repeated_tokens_d_vocab_0", circuits_repeated_tokens(1, 4, 0, 0, -1, rep), CIRCUITS_E_INVALID_ARGUMENT,
               "d_vocab 0 must be at least 1");
    CHECK_OK(circuits_repeated_tokens(2, 4, 1000, 7, -1, rep));
    CALL_FAILS("induction_pos_not_2_seq_len", circuits_context_induction_scores(ctx, rep, 1, 7, 4, scores, NULL, NULL),
               CIRCUITS_E_SHAPE, "got pos 7, seq_len 4");
    CALL_FAILS("induction_seq_len_huge",
               circuits_context_induction_scores(ctx, rep, 1, 8, INT64_MAX / 2 + 1, scores, NULL, NULL),
               CIRCUITS_E_SHAPE, "seq_len >= 2");
    CALL_FAILS("induction_batch_0", circuits_context_induction_scores(ctx, rep, 0, 8, 4, scores, NULL, NULL),
               CIRCUITS_E_SHAPE, "batch 0");
    CALL_FAILS("induction_batch_negative", circuits_context_induction_scores(ctx, rep, -3, 8, 4, scores, NULL, NULL),
               CIRCUITS_E_SHAPE, "batch -3");
    CALL_FAILS("induction_pos_over_n_ctx",
               circuits_context_induction_scores(ctx, big, 1, 514, 257, scores, NULL, NULL), CIRCUITS_E_RANGE,
               "514 positions exceed the model's n_ctx = 512");
}

/* ---- attention-only models: what needs MLPs ---- */

static void attn_only_checks(void)
{
    circuits_model *a = NULL;
    CHECK_OK(circuits_model_load(&a, g_attn_only_dir, NULL));
    if (!a) return;
    static float out[64 * 64];
    circuits_factored *f = SENTINEL;
    CALL_FAILS("mlp_composition_attn_only", circuits_model_mlp_composition_scores(a, CIRCUITS_COMPOSITION_K, out),
               CIRCUITS_E_UNSUPPORTED, "this model is attention-only: it has no MLPs");
    CALL_FAILS("virtual_weights_mlp_writer_attn_only",
               circuits_model_virtual_weights(a, CIRCUITS_WRITER_MLP, 0, 0, CIRCUITS_READER_Q, 0, 0, &f),
               CIRCUITS_E_UNSUPPORTED, "CIRCUITS_WRITER_MLP: the model is attention-only");
    CHECK(f == NULL, "virtual_weights left *out");
    CALL_FAILS("virtual_weights_mlp_reader_attn_only",
               circuits_model_virtual_weights(a, CIRCUITS_WRITER_EMBED, 0, 0, CIRCUITS_READER_MLP, 0, 0, &f),
               CIRCUITS_E_UNSUPPORTED, "CIRCUITS_READER_MLP: the model is attention-only");
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_context_create(&ctx, a, NULL));
    circuits_generate_options go;
    circuits_generate_options_init(&go);
    int32_t out_tok[8];
    CALL_FAILS("generate_stop_at_eos_without_tokenizer",
               circuits_context_generate(ctx, TOK, 1, 2, &go, out_tok, NULL), CIRCUITS_E_INVALID_ARGUMENT,
               "stop_at_eos needs an EOS token, and the model has no tokenizer");
    CALL_FAILS("hook_mlp_attn_only", circuits_context_add_hook(ctx, "blocks.0.hook_mlp_out", hook_continue, NULL, NULL),
               CIRCUITS_E_NOT_FOUND, "no hook point named 'blocks.0.hook_mlp_out'");
    circuits_context_free(ctx);
    circuits_model_free(a);
}

/* ---- factored matrices ---- */

static void factored_checks(void)
{
    float A[2 * 3 * 4], B[2 * 4 * 5], X[64], y[64];
    for (int i = 0; i < 24; i++) A[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < 40; i++) B[i] = (float)(i % 5) - 2.0f;
    circuits_factored *f = NULL, *sq = NULL, *g = SENTINEL;
    CHECK_OK(circuits_factored_create(&f, A, B, 2, 3, 4, 5)); /* [2, 3, 5], inner 4 */
    CHECK_OK(circuits_factored_create(&sq, A, B, 1, 3, 4, 3)); /* [1, 3, 3] */
    if (!f || !sq) return;
    CALL_FAILS("factored_create_dim_0", circuits_factored_create(&g, A, B, 1, 0, 4, 5), CIRCUITS_E_SHAPE,
               "factored matrix dimensions must be positive");
    CHECK(g == NULL, "factored_create left *out");
    CALL_FAILS("factored_create_too_large",
               circuits_factored_create(&g, A, B, INT64_C(1) << 40, INT64_C(1) << 20, 4, 5), CIRCUITS_E_RANGE,
               "factored matrix too large");
    CALL_FAILS("factored_matmul_inner", circuits_factored_matmul(f, f, &g), CIRCUITS_E_SHAPE,
               "inner dimensions 5 and 3 differ");
    circuits_factored *b3 = NULL;
    float A3[3 * 5 * 2], B3[3 * 2 * 5];
    memset(A3, 0, sizeof A3);
    memset(B3, 0, sizeof B3);
    CHECK_OK(circuits_factored_create(&b3, A3, B3, 3, 5, 2, 5));
    CALL_FAILS("factored_matmul_batch", circuits_factored_matmul(f, b3, &g), CIRCUITS_E_SHAPE,
               "batch sizes 2 and 3 do not broadcast");
    circuits_factored_free(b3);
    CALL_FAILS("factored_matmul_dense_batch", circuits_factored_matmul_dense(f, X, 3, 1, &g), CIRCUITS_E_SHAPE,
               "X must be [1 or 2, 5, n >= 1]");
    CALL_FAILS("factored_rmatmul_dense_n_0", circuits_factored_rmatmul_dense(X, 1, 0, f, &g), CIRCUITS_E_SHAPE,
               "X must be [1 or 2, n >= 1, 3]");
    CALL_FAILS("factored_eigenvalues_not_square", circuits_factored_eigenvalues(f, X, y), CIRCUITS_E_SHAPE,
               "eigenvalues need a square matrix (this one is 3 x 5)");
    CALL_FAILS("factored_corner_0", circuits_factored_corner(f, 0, X), CIRCUITS_E_RANGE,
               "corner size 0 must be in [1, min(3, 5)]");
    CALL_FAILS("factored_corner_too_big", circuits_factored_corner(f, 4, X), CIRCUITS_E_RANGE, "corner size 4");
    float vals[4];
    int64_t rows[4], cols[4];
    CALL_FAILS("factored_topk_batch_index", circuits_factored_topk(f, 2, CIRCUITS_TOPK_ALL, 0, 2, vals, rows, cols, NULL),
               CIRCUITS_E_RANGE, "batch index 2 out of range [0, 2)");
    CALL_FAILS("factored_topk_k_0", circuits_factored_topk(f, 0, CIRCUITS_TOPK_ALL, 0, 0, vals, rows, cols, NULL),
               CIRCUITS_E_RANGE, "top-k needs k >= 1");
    CALL_FAILS("factored_topk_row", circuits_factored_topk(f, 0, CIRCUITS_TOPK_ROW, 3, 2, vals, rows, cols, NULL),
               CIRCUITS_E_RANGE, "row 3 out of range [0, 3)");
    CALL_FAILS("factored_topk_column", circuits_factored_topk(f, 0, CIRCUITS_TOPK_COLUMN, -1, 2, vals, rows, cols, NULL),
               CIRCUITS_E_RANGE, "column -1 out of range [0, 5)");
    CALL_FAILS("factored_topk_axis", circuits_factored_topk(f, 0, 7, 0, 2, vals, rows, cols, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "top-k axis must be CIRCUITS_TOPK_ROW, _COLUMN or _ALL");
    CALL_FAILS("factored_materialize_guard", circuits_factored_materialize(f, X, 29), CIRCUITS_E_RANGE,
               "exceeds the guard of 29 elements");
    circuits_factored_free(f);
    circuits_factored_free(sq);
}

/* ---- KV caches and generation ---- */

static void kv_checks(circuits_model *m, circuits_context *ctx)
{
    circuits_kv_cache *kv = SENTINEL;
    float logits[8 * 1000];
    CALL_FAILS("kv_create_batch_0", circuits_kv_cache_create(&kv, m, 0, 8), CIRCUITS_E_SHAPE,
               "circuits_kv_cache_create: batch 0 < 1");
    CHECK(kv == NULL, "kv_cache_create left *out");
    CALL_FAILS("kv_create_max_pos_over_n_ctx", circuits_kv_cache_create(&kv, m, 1, 513), CIRCUITS_E_RANGE,
               "max_pos 513 is outside [1, n_ctx = 512]");
    CALL_FAILS("kv_create_max_pos_negative", circuits_kv_cache_create(&kv, m, 1, -1), CIRCUITS_E_RANGE,
               "max_pos -1 is outside");
    CALL_FAILS("kv_create_too_large", circuits_kv_cache_create(&kv, m, INT64_C(1) << 60, 512), CIRCUITS_E_RANGE,
               "is too large");

    CHECK_OK(circuits_kv_cache_create(&kv, m, 1, 6));
    if (!kv) return;
    CHECK_OK(circuits_context_forward_kv(ctx, kv, TOK, 1, 4, logits));
    CALL_FAILS("kv_positions_exceed_cache", circuits_context_forward_kv(ctx, kv, TOK, 1, 3, logits), CIRCUITS_E_RANGE,
               "4 cached + 3 new positions exceed the KV cache's 6");
    CALL_FAILS("kv_batch_mismatch", circuits_context_forward_kv(ctx, kv, TOK, 2, 1, logits), CIRCUITS_E_SHAPE,
               "batch 2, but the KV cache holds batch 1");
    CALL_FAILS("kv_token_out_of_range", circuits_context_forward_kv(ctx, kv, (const int32_t[]){1000}, 1, 1, logits),
               CIRCUITS_E_RANGE, "token id 1000");
    CALL_FAILS("kv_tokens_null", circuits_context_forward_kv(ctx, kv, NULL, 1, 1, logits), CIRCUITS_E_INVALID_ARGUMENT,
               "tokens is NULL");
    CHECK(circuits_kv_cache_length(kv) == 4, "failed continuations changed the cache: length %lld",
          (long long)circuits_kv_cache_length(kv));
    CALL_FAILS("kv_truncate_beyond_length", circuits_kv_cache_truncate(kv, 5), CIRCUITS_E_RANGE,
               "length 5 is outside [0, 4]");
    CALL_FAILS("kv_truncate_negative", circuits_kv_cache_truncate(kv, -1), CIRCUITS_E_RANGE, "length -1 is outside");
    circuits_tensor k;
    CALL_FAILS("kv_layer_out_of_range", circuits_kv_cache_layer(kv, 5, &k, NULL), CIRCUITS_E_RANGE,
               "layer 5 is outside [0, 5)");
    CALL_FAILS("kv_layer_negative", circuits_kv_cache_layer(kv, -1, NULL, &k), CIRCUITS_E_RANGE,
               "layer -1 is outside [0, 5)");

    /* a cache of another model (the same files loaded twice: two models) */
    circuits_model *m2 = NULL;
    CHECK_OK(circuits_model_load(&m2, g_model_dir, NULL));
    circuits_kv_cache *kv2 = NULL;
    if (m2) CHECK_OK(circuits_kv_cache_create(&kv2, m2, 1, 8));
    if (kv2)
        CALL_FAILS("kv_of_another_model", circuits_context_forward_kv(ctx, kv2, TOK, 1, 2, logits),
                   CIRCUITS_E_INVALID_ARGUMENT, "the KV cache was created for another model");
    circuits_kv_cache_free(kv2);
    circuits_model_free(m2);
    circuits_kv_cache_free(kv);

    /* a run that skips blocks (stop_at_layer, start_at_layer) appends no keys or values of them:
     * a later run needing them would read positions nothing wrote */
    circuits_kv_cache *kv3 = NULL;
    CHECK_OK(circuits_kv_cache_create(&kv3, m, 1, 8));
    if (kv3) {
        circuits_run_options ro;
        circuits_run_options_init(&ro);
        ro.kv_cache = kv3;
        ro.stop_at_layer = 2;
        CHECK_OK(circuits_context_run(ctx, &ro, TOK, 1, 2, NULL));
        CHECK_OK(circuits_context_run(ctx, &ro, TOK, 1, 1, NULL)); /* the same blocks: continued */
        ro.stop_at_layer = CIRCUITS_LAYER_NONE;
        CALL_FAILS("kv_blocks_not_held", circuits_context_run(ctx, &ro, TOK, 1, 1, logits), CIRCUITS_E_INVALID_ARGUMENT,
                   "holds keys and values of blocks 0 .. 1 only");
        CALL_FAILS("kv_layer_not_held", circuits_kv_cache_layer(kv3, 3, &k, NULL), CIRCUITS_E_RANGE,
                   "holds keys and values of blocks 0 .. 1 only");
        CHECK(circuits_kv_cache_length(kv3) == 3, "a refused run changed the cache: length %lld",
              (long long)circuits_kv_cache_length(kv3));
        CHECK_OK(circuits_kv_cache_truncate(kv3, 0)); /* empty: any run again */
        CHECK_OK(circuits_context_run(ctx, &ro, TOK, 1, 2, logits));
        CHECK_OK(circuits_kv_cache_layer(kv3, 3, &k, NULL));
    }
    circuits_kv_cache_free(kv3);

    /* generation options */
    int32_t out[16];
    int64_t len = -1;
    circuits_generate_options go;
#define GEN_OPT_FAILS(name, field, value, status, needle)                                  \
    do {                                                                                   \
        circuits_generate_options_init(&go);                                               \
        go.field = (value);                                                                \
        CALL_FAILS(name, circuits_context_generate(ctx, TOK, 1, 4, &go, out, &len), status, needle); \
        CHECK(len == 0, "%s: *out_len %lld after a refused call", (name), (long long)len); \
    } while (0)
    GEN_OPT_FAILS("generate_max_new_tokens_negative", max_new_tokens, -1, CIRCUITS_E_INVALID_ARGUMENT,
                  "max_new_tokens -1 < 0");
    GEN_OPT_FAILS("generate_do_sample_2", do_sample, 2, CIRCUITS_E_INVALID_ARGUMENT,
                  "do_sample, stop_at_eos and use_kv_cache must be 0 or 1");
    GEN_OPT_FAILS("generate_temperature_negative", temperature, -1.0f, CIRCUITS_E_INVALID_ARGUMENT,
                  "temperature -1 must be finite and >= 0");
    GEN_OPT_FAILS("generate_temperature_nan", temperature, NAN, CIRCUITS_E_INVALID_ARGUMENT,
                  "must be finite and >= 0");
    GEN_OPT_FAILS("generate_top_k_negative", top_k, -2, CIRCUITS_E_INVALID_ARGUMENT, "top_k -2 < 0 (0: off)");
    GEN_OPT_FAILS("generate_top_p_over_1", top_p, 1.5f, CIRCUITS_E_INVALID_ARGUMENT, "top_p 1.5 is outside (0, 1]");
    GEN_OPT_FAILS("generate_freq_penalty_inf", freq_penalty, INFINITY, CIRCUITS_E_INVALID_ARGUMENT,
                  "freq_penalty inf must be finite and >= 0");
    GEN_OPT_FAILS("generate_eos_out_of_range", eos_token_id, 1000, CIRCUITS_E_INVALID_ARGUMENT,
                  "eos_token_id 1000 is outside [0, d_vocab = 1000)");
    GEN_OPT_FAILS("generate_past_n_ctx", max_new_tokens, 509, CIRCUITS_E_RANGE,
                  "prompt_len 4 + max_new_tokens 509 exceed the model's n_ctx = 512");
    circuits_generate_options_init(&go);
    CALL_FAILS("generate_batch_0", circuits_context_generate(ctx, TOK, 0, 4, &go, out, &len), CIRCUITS_E_SHAPE,
               "batch and prompt_len must be at least 1");
    CALL_FAILS("generate_prompt_token_out_of_range",
               circuits_context_generate(ctx, (const int32_t[]){5, -4}, 1, 2, &go, out, &len), CIRCUITS_E_RANGE,
               "prompt token -4 at [0, 1] is outside the vocabulary [0, 1000)");
#undef GEN_OPT_FAILS
}

/* circuits_logits_rank: test_prompt's report on a known row, then its refusals. */
static void rank_checks(void)
{
    const float row[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
    int64_t rank = -1;
    float prob = 0, probs[5];
    int32_t ids[5];
    CHECK_OK(circuits_logits_rank(row, 5, 3, 5, &rank, &prob, ids, probs));
    CHECK(rank == 1, "rank %lld", (long long)rank); /* the tie with id 1 ranks first */
    CHECK(ids[0] == 1 && ids[1] == 3 && ids[2] == 0 && ids[3] == 4 && ids[4] == 2, "top ids %d %d %d", ids[0], ids[1], ids[2]);
    double z = exp(1.0) + 2 * exp(3.0) + exp(-2.0) + exp(0.5);
    CHECK(fabs(prob - exp(3.0) / z) < 1e-6 && fabs(probs[4] - exp(-2.0) / z) < 1e-6, "prob %g", prob);
    CHECK_OK(circuits_logits_rank(row, 5, -1, 2, NULL, NULL, ids, NULL)); /* no rank: token unread */
    CALL_FAILS("rank_null_logits", circuits_logits_rank(NULL, 5, 0, 1, &rank, NULL, ids, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "logits is NULL");
    CALL_FAILS("rank_d_vocab_0", circuits_logits_rank(row, 0, 0, 0, &rank, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "d_vocab 0 must be in [1, 2147483647]");
    CALL_FAILS("rank_token_out_of_range", circuits_logits_rank(row, 5, 5, 0, &rank, NULL, NULL, NULL), CIRCUITS_E_RANGE,
               "token 5 is outside the vocabulary [0, 5)");
    CALL_FAILS("rank_k_too_large", circuits_logits_rank(row, 5, 0, 6, NULL, NULL, ids, NULL), CIRCUITS_E_RANGE,
               "k 6 must be in [0, d_vocab = 5]");
    CALL_FAILS("rank_k_no_outputs", circuits_logits_rank(row, 5, 0, 2, &rank, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "k is 2 but top_ids and top_probs are both NULL");
    const float bad[3] = {0.0f, NAN, 1.0f};
    CALL_FAILS("rank_nan_logit", circuits_logits_rank(bad, 3, 0, 1, &rank, NULL, ids, NULL), CIRCUITS_E_RANGE,
               "logits[1] is NaN");
    const float inf[2] = {INFINITY, 1.0f};
    CALL_FAILS("rank_infinite_logit", circuits_logits_rank(inf, 2, 0, 1, &rank, NULL, ids, NULL), CIRCUITS_E_RANGE,
               "the largest logit is infinite");
}

/* ---- attention masks (padding) ---- */

static void mask_checks(circuits_model *m, circuits_context *ctx)
{
    float logits[8 * 1000], loss = NAN;
    circuits_run_options o;
    circuits_run_options_init(&o);
    const int32_t two[4] = {1, 2, 1, 1}, empty_row[8] = {1, 1, 1, 1, 0, 0, 0, 0}, no_pair[4] = {1, 0, 1, 0};
    o.attention_mask = two;
    CALL_FAILS("mask_value_not_0_or_1", circuits_context_run(ctx, &o, TOK, 1, 4, logits), CIRCUITS_E_INVALID_ARGUMENT,
               "attention_mask[0, 1] is 2");
    o.attention_mask = empty_row;
    CALL_FAILS("mask_row_all_padding", circuits_context_run(ctx, &o, TOK, 2, 4, logits), CIRCUITS_E_INVALID_ARGUMENT,
               "attention_mask row 1 has no real token");
    circuits_cache *cache = NULL;
    CHECK_OK(circuits_cache_create(&cache));
    o.attention_mask = no_pair;
    CALL_FAILS("mask_loss_no_pair",
               circuits_context_run_with_cache_opts(ctx, &o, TOK, 1, 4, NULL, 0, cache, NULL, &loss, NULL),
               CIRCUITS_E_SHAPE, "the loss needs two consecutive real tokens");
    CALL_FAILS("null_run_with_cache_opts_cache",
               circuits_context_run_with_cache_opts(ctx, &o, TOK, 1, 4, NULL, 0, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "ctx and cache must not be NULL");
    circuits_cache_free(cache);
    /* a row whose new positions are all padding is fine when the KV cache holds a real token of it */
    circuits_kv_cache *kv = NULL;
    CHECK_OK(circuits_kv_cache_create(&kv, m, 2, 8));
    const int32_t first[4] = {1, 1, 1, 0}, more[2] = {1, 0};
    o.kv_cache = kv;
    o.attention_mask = first;
    CHECK_OK(circuits_context_run(ctx, &o, TOK, 2, 2, logits));
    o.attention_mask = more;
    CHECK_OK(circuits_context_run(ctx, &o, TOK, 2, 1, logits));
    CHECK(circuits_kv_cache_length(kv) == 3, "the KV cache holds %lld positions", (long long)circuits_kv_cache_length(kv));
    circuits_kv_cache_free(kv);
    /* generation continues each row after its last position */
    circuits_generate_options go;
    circuits_generate_options_init(&go);
    const int32_t right[8] = {1, 1, 1, 1, 1, 1, 0, 0};
    go.attention_mask = right;
    int32_t out[2 * 14];
    int64_t len = -1;
    CALL_FAILS("generate_mask_right_padding", circuits_context_generate(ctx, TOK, 2, 4, &go, out, &len),
               CIRCUITS_E_INVALID_ARGUMENT, "attention_mask row 1 ends in padding");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR ATTN_ONLY_DIR [-v]\n", argv[0]);
        return 2;
    }
    g_model_dir = argv[1];
    g_attn_only_dir = argv[2];
    cat_verbose = argc > 3 && strcmp(argv[3], "-v") == 0;

    circuits_model *m = NULL;
    circuits_context *ctx = NULL;
    CHECK_OK(circuits_model_load(&m, g_model_dir, NULL));
    if (m) CHECK_OK(circuits_context_create(&ctx, m, NULL));
    const circuits_tokenizer *tok = circuits_model_tokenizer(m);
    CHECK(tok != NULL, "%s has no tokenizer", g_model_dir);
    if (!ctx || !tok) return tu_finish("test_misuse");

    float before[8 * 1000], after[8 * 1000], loss0 = NAN, loss1 = NAN;
    CHECK_OK(circuits_context_forward(ctx, TOK, 1, 8, before, &loss0, NULL));

    null_checks(m, ctx, tok);
    version_checks(m, ctx, tok);
    hook_checks(m, ctx);
    callback_checks(m, ctx);
    range_checks(m, ctx, tok);
    attn_only_checks();
    factored_checks();
    kv_checks(m, ctx);
    rank_checks();
    mask_checks(m, ctx);

    /* after all that the context has no hooks left and gives bit-identical results */
    circuits_context_clear_hooks(ctx);
    CHECK_OK(circuits_context_forward(ctx, TOK, 1, 8, after, &loss1, NULL));
    CHECK(memcmp(before, after, sizeof after) == 0 && memcmp(&loss0, &loss1, sizeof loss1) == 0,
          "the forward changed after the misuse checks");
    circuits_context_free(ctx);
    circuits_model_free(m);
    return tu_finish("test_misuse");
}
