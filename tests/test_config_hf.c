/* config.json of the Hugging Face families (lib/io/config_hf.c): the fields the reference cases
 * do not reach — the older spellings (rope_theta / rope_scaling at the top level), Qwen2's
 * window settings, explicit layer_types, defaults of each family — read as transformers reads
 * them. (The refusals are in test_bad_input; the reference cases prove whole models.) */
#include "../lib/model/arch.h"
#include "config.h"
#include "testutil.h"

static char buf[2048];

/* A config of model_type mt with 2 layers, hidden 32, 4 heads, plus `extra` (JSON members). */
static int parse(const char *mt, const char *extra, circuits_config *cfg, cx_hf_extra *x)
{
    snprintf(buf, sizeof buf,
             "{\"model_type\":\"%s\",\"hidden_size\":32,\"num_attention_heads\":4,\"num_hidden_layers\":2,"
             "\"intermediate_size\":48,\"max_position_embeddings\":64,\"vocab_size\":50%s%s}",
             mt, extra[0] ? "," : "", extra);
    memset(x, 0, sizeof *x);
    return cx_config_parse_hf("config.json", buf, strlen(buf), cfg, x);
}

static const uint32_t qkvo = 1u << CX_B_Q | 1u << CX_B_K | 1u << CX_B_V | 1u << CX_B_O;

static void rope(void)
{
    circuits_config c;
    cx_hf_extra x;
    /* transformers 4's spelling: top-level rope_theta, rope_scaling with rope_type */
    CHECK_OK(parse("llama",
                   "\"rope_theta\":500000.0,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":32,"
                   "\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}",
                   &c, &x));
    CHECK(c.rotary_base == 500000.0f && c.rope_scaling == CIRCUITS_ROPE_LLAMA3 && c.rope_factor == 32.0f &&
              c.rope_low_freq_factor == 1.0f && c.rope_high_freq_factor == 4.0f && c.rope_original_n_ctx == 8192,
          "legacy llama3 rope_scaling: base %g, scaling %d, factor %g, original %d", c.rotary_base, c.rope_scaling,
          c.rope_factor, c.rope_original_n_ctx);
    CHECK(c.rotary_dim == 8 && !c.rotary_adjacent_pairs, "llama rotates the whole head of 8 (got %d)", c.rotary_dim);
    /* older still: "type" instead of "rope_type" */
    CHECK_OK(parse("mistral", "\"sliding_window\":null,\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.5}", &c, &x));
    CHECK(c.rope_scaling == CIRCUITS_ROPE_LINEAR && c.rope_factor == 2.5f && c.rotary_base == 10000.0f,
          "legacy linear rope_scaling: %d %g %g", c.rope_scaling, c.rope_factor, c.rotary_base);
    /* rope_parameters wins over a stale top-level rope_theta */
    CHECK_OK(parse("qwen2", "\"rope_theta\":5.0,\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1e6}",
                   &c, &x));
    CHECK(c.rotary_base == 1e6f && c.rope_scaling == CIRCUITS_ROPE_NONE, "rope_parameters first: base %g", c.rotary_base);
    /* partial rotary outside NeoX (e.g. a Llama-architecture checkpoint with partial_rotary_factor) */
    CHECK_OK(parse("llama", "\"partial_rotary_factor\":0.5", &c, &x));
    CHECK(c.rotary_dim == 4, "partial_rotary_factor 0.5 of d_head 8: rotary_dim %d", c.rotary_dim);
}

static void windows(void)
{
    circuits_config c;
    cx_hf_extra x;
    CHECK_OK(parse("mistral", "\"sliding_window\":null", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_NONE && c.window_size == 0, "mistral without a window");
    CHECK_OK(parse("mistral", "\"sliding_window\":5", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_ALL && c.window_size == 5, "mistral: every layer, window 5");
    CHECK_OK(parse("qwen2", "\"sliding_window\":5,\"use_sliding_window\":false,\"max_window_layers\":0", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_NONE && c.window_size == 0, "qwen2 use_sliding_window false: none");
    CHECK_OK(parse("qwen2", "\"sliding_window\":5,\"use_sliding_window\":true,\"max_window_layers\":0", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_ALL && c.window_size == 5, "qwen2 max_window_layers 0: all slide");
    CHECK_OK(parse("qwen2", "\"sliding_window\":5,\"use_sliding_window\":true,\"max_window_layers\":28", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_NONE && c.window_size == 0, "qwen2 max_window_layers >= layers: none");
    CHECK_OK(parse("gemma2", "\"sliding_window\":5", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_EVEN && c.window_size == 5, "gemma2 default: layers 0, 2, .. slide");
    CHECK_OK(parse("gemma2", "\"sliding_window\":5,\"layer_types\":[\"full_attention\",\"sliding_attention\"]", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_ODD, "gemma2 explicit layer_types full, sliding: odd layers");
    CHECK_OK(parse("gemma2", "\"sliding_window\":null", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_NONE && c.window_size == 0, "gemma2 sliding_window null: none");
    /* absent is not null: MistralConfig's and Gemma2Config's sliding_window default is 4096 (a
     * config.json without the key gets a window in transformers) */
    CHECK_OK(parse("mistral", "", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_ALL && c.window_size == 4096, "mistral sliding_window absent: 4096 (got %d)",
          c.window_size);
    CHECK_OK(parse("gemma2", "", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_EVEN && c.window_size == 4096, "gemma2 sliding_window absent: 4096 (got %d)",
          c.window_size);
    CHECK_OK(parse("qwen2", "\"use_sliding_window\":true,\"max_window_layers\":0", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_ALL && c.window_size == 4096, "qwen2 sliding_window absent: 4096 (got %d)",
          c.window_size);
    CHECK_OK(parse("llama", "\"sliding_window\":5", &c, &x));
    CHECK(c.local_attn == CIRCUITS_LOCAL_ATTN_NONE, "llama has no sliding window whatever the config says");
}

static void families(void)
{
    circuits_config c;
    cx_hf_extra x;
    CHECK_OK(parse("llama", "", &c, &x));
    CHECK(c.format == CIRCUITS_FORMAT_HF_LLAMA && c.gated_mlp && c.normalization_type == CIRCUITS_NORM_RMS &&
              c.act_fn == CIRCUITS_ACT_SILU && c.n_key_value_heads == 4 && c.d_head == 8 && c.eps == 1e-6f &&
              !x.tie_word_embeddings && x.absent == qkvo,
          "llama defaults");
    CHECK_OK(parse("llama", "\"attention_bias\":true,\"num_key_value_heads\":2,\"head_dim\":16", &c, &x));
    CHECK(x.absent == 0 && c.n_key_value_heads == 2 && c.d_head == 16, "llama attention_bias, GQA, head_dim");
    CHECK_OK(parse("qwen2", "", &c, &x));
    CHECK(x.absent == 0 && c.format == CIRCUITS_FORMAT_HF_QWEN2, "qwen2: biases from its table, none from config");
    CHECK_OK(parse("gemma", "\"hidden_act\":\"gelu\",\"head_dim\":16", &c, &x));
    CHECK(c.act_fn == CIRCUITS_ACT_GELU_NEW && x.tie_word_embeddings && c.d_head == 16 && c.attn_scale == 4.0f,
          "gemma: legacy gelu means the tanh approximation, tied, head_dim 16 (scale 4)");
    CHECK_OK(parse("gemma2",
                   "\"hidden_activation\":\"gelu_pytorch_tanh\",\"query_pre_attn_scalar\":144,"
                   "\"attn_logit_softcapping\":50.0,\"final_logit_softcapping\":null",
                   &c, &x));
    CHECK(c.attn_scale == 12.0f && c.attn_scores_soft_cap == 50.0f && c.output_logits_soft_cap == 0.0f &&
              c.norm_before_and_after && c.act_fn == CIRCUITS_ACT_GELU_NEW,
          "gemma2: scale sqrt(144), score cap 50, no logit cap, post norms");
    /* absent soft-caps are Gemma2Config's defaults (50 on the scores, 30 on the logits), not none */
    CHECK_OK(parse("gemma2", "", &c, &x));
    CHECK(c.attn_scores_soft_cap == 50.0f && c.output_logits_soft_cap == 30.0f,
          "gemma2 soft-caps absent: 50 and 30 (got %g and %g)", c.attn_scores_soft_cap, c.output_logits_soft_cap);
    /* GPT-NeoX: rotary_pct default 0.25, parallel by default, attention_bias false */
    CHECK_OK(parse("gpt_neox", "\"attention_bias\":false,\"layer_norm_eps\":1e-3", &c, &x));
    CHECK(c.rotary_dim == 2 && c.parallel_attn_mlp && x.absent == qkvo && c.normalization_type == CIRCUITS_NORM_LN &&
              c.eps == 1e-3f && c.act_fn == CIRCUITS_ACT_GELU,
          "neox defaults: rotary_dim %d, parallel %d", c.rotary_dim, c.parallel_attn_mlp);
    CHECK_OK(parse("gpt_neox", "\"use_parallel_residual\":false,\"rotary_pct\":1.0,\"rotary_emb_base\":77.0", &c, &x));
    CHECK(!c.parallel_attn_mlp && c.rotary_dim == 8 && c.rotary_base == 77.0f, "neox sequential, full rotary, base 77");
    /* GPT-J */
    const char *gptj = "{\"model_type\":\"gptj\",\"n_embd\":32,\"n_head\":4,\"n_layer\":2,\"n_positions\":64,"
                       "\"vocab_size\":50,\"n_inner\":null,\"rotary_dim\":4}";
    memset(&x, 0, sizeof x);
    CHECK_OK(cx_config_parse_hf("config.json", gptj, strlen(gptj), &c, &x));
    CHECK(c.d_mlp == 128 && c.rotary_dim == 4 && c.rotary_adjacent_pairs && c.parallel_attn_mlp &&
              c.act_fn == CIRCUITS_ACT_GELU_NEW && c.rotary_base == 10000.0f,
          "gptj: n_inner null = 4 n_embd, adjacent pairs on 4 dims");
}

int main(void)
{
    rope();
    windows();
    families();
    return tu_finish("config_hf");
}
