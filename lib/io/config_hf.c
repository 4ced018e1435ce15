/* Hugging Face config.json of the modern families (model_type gpt_neox, gptj, llama, mistral,
 * qwen2, gemma, gemma2) into a circuits_config, the way transformers' configuration_* and
 * modeling_* files read them (what Hugging Face computes is the reference; where TransformerLens's
 * convert_hf_model_config differs, docs/differences.md says so). Every field that changes the
 * computation is either honoured or refused by name (CIRCUITS_E_UNSUPPORTED); docs/loading.md
 * lists both per family. */
#include "arch.h"
#include "config.h"

#include <math.h>
#include <string.h>

#define TRY(x) do { if ((rc = (x)) != CIRCUITS_OK) return rc; } while (0)

typedef struct family {
    const char *model_type;
    int32_t format;
    bool tied;          /* tie_word_embeddings default of the transformers config class */
} family;

static const family families[] = {
    {"gpt_neox", CIRCUITS_FORMAT_HF_GPT_NEOX, false}, {"gptj", CIRCUITS_FORMAT_HF_GPTJ, false},
    {"llama", CIRCUITS_FORMAT_HF_LLAMA, false},       {"mistral", CIRCUITS_FORMAT_HF_MISTRAL, false},
    {"qwen2", CIRCUITS_FORMAT_HF_QWEN2, false},       {"gemma", CIRCUITS_FORMAT_HF_GEMMA, true},
    {"gemma2", CIRCUITS_FORMAT_HF_GEMMA2, true},
};

static uint32_t bit(cx_weight_kind k) { return 1u << k; }

static int unsupported(const cx_jcfg *c, const char *what)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s is not supported", c->path, what);
}

/* A boolean field that must be false (absent or null counts as false). */
static int must_be_false(const cx_jcfg *c, const char *key)
{
    bool v;
    int rc = cx_jcfg_bool(c, key, false, &v);
    if (rc) return rc;
    return v ? cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: '%s' true is not supported", c->path, key) : CIRCUITS_OK;
}

/* ---- rotary: rope_parameters (transformers 5) or rope_theta / rope_scaling (earlier), NeoX's
 * rotary_pct / rotary_emb_base ---- */

/* The rope settings object: rope_parameters, else the legacy rope_scaling (NULL: none); *key
 * names the one read, for messages. */
static int rope_object(const cx_jcfg *c, cx_jcfg *out, const char **key)
{
    static const char *const keys[] = {"rope_parameters", "rope_scaling"};
    out->path = c->path;
    out->root = NULL;
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(c->root, keys[i]);
        if (!v || json_is_null(v)) continue;
        if (!json_is_object(v))
            return cx_fail(CIRCUITS_E_CONFIG, "%s: '%s' must be an object or null", c->path, keys[i]);
        out->root = v;
        *key = keys[i];
        return CIRCUITS_OK;
    }
    return CIRCUITS_OK;
}

/* A number from the rope object, else from the top level under one of legacy (NULL-ended). */
static int rope_num(const cx_jcfg *c, const cx_jcfg *r, const char *key, const char *const *legacy, double dflt,
                    double *out)
{
    if (r->root && !cx_jcfg_absent(r, key)) return cx_jcfg_num(r, key, dflt, out);
    for (; legacy && *legacy; legacy++)
        if (!cx_jcfg_absent(c, *legacy)) return cx_jcfg_num(c, *legacy, dflt, out);
    *out = dflt;
    return CIRCUITS_OK;
}

static int parse_rope(const cx_jcfg *c, const char *mt, circuits_config *cfg)
{
    int rc;
    cx_jcfg r;
    const char *rkey = NULL;
    TRY(rope_object(c, &r, &rkey));
    bool neox = strcmp(mt, "gpt_neox") == 0;
    static const char *const theta_names[] = {"rope_theta", NULL};
    static const char *const neox_theta[] = {"rope_theta", "rotary_emb_base", NULL};
    static const char *const pct_names[] = {"partial_rotary_factor", NULL};
    static const char *const neox_pct[] = {"partial_rotary_factor", "rotary_pct", NULL};
    double theta, pct;
    TRY(rope_num(c, &r, "rope_theta", neox ? neox_theta : theta_names, 10000.0, &theta));
    /* GPTNeoXConfig's default rotary_pct is 0.25; the others rotate the whole head */
    TRY(rope_num(c, &r, "partial_rotary_factor", neox ? neox_pct : pct_names, neox ? 0.25 : 1.0, &pct));
    if (!(theta > 1.0)) return cx_fail(CIRCUITS_E_CONFIG, "%s: rope_theta must be greater than 1", c->path);
    if (!(pct > 0.0 && pct <= 1.0))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: partial_rotary_factor must be in (0, 1]", c->path);
    TRY(cx_jcfg_float(c, "rope_theta", theta, &cfg->rotary_base));
    /* transformers: int(head_dim * partial_rotary_factor) */
    cfg->rotary_dim = (int32_t)((double)cfg->d_head * pct);
    if (cfg->rotary_dim < 2 || cfg->rotary_dim % 2)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: a rotary dimension of %d (head_dim %d x partial_rotary_factor) "
                       "is not supported: it must be even and at least 2", c->path, cfg->rotary_dim, cfg->d_head);
    cfg->rope_scaling = CIRCUITS_ROPE_NONE;
    if (!r.root) return CIRCUITS_OK;
    const char *type = NULL;
    TRY(cx_jcfg_str(&r, "rope_type", &type));
    if (!type) TRY(cx_jcfg_str(&r, "type", &type));
    if (!type || strcmp(type, "default") == 0) return CIRCUITS_OK;
    double f;
    if (strcmp(type, "linear") == 0) {
        TRY(cx_jcfg_num(&r, "factor", 1.0, &f));
        if (!(f > 0)) return cx_fail(CIRCUITS_E_CONFIG, "%s: '%s.factor' = %g must be positive", c->path, rkey, f);
        cfg->rope_scaling = CIRCUITS_ROPE_LINEAR;
        TRY(cx_jcfg_float(c, "factor", f, &cfg->rope_factor));
        return CIRCUITS_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        double lo, hi;
        int32_t orig;
        TRY(cx_jcfg_num(&r, "factor", 8.0, &f));
        TRY(cx_jcfg_num(&r, "low_freq_factor", 1.0, &lo));
        TRY(cx_jcfg_num(&r, "high_freq_factor", 4.0, &hi));
        TRY(cx_jcfg_int(&r, "original_max_position_embeddings", true, 0, 1, CX_MAX_DIM, &orig));
        if (!(f > 0) || !(lo > 0) || !(hi > lo))
            return cx_fail(CIRCUITS_E_CONFIG,
                           "%s: '%s' llama3: factor, low_freq_factor and high_freq_factor must be positive with "
                           "high_freq_factor > low_freq_factor", c->path, rkey);
        cfg->rope_scaling = CIRCUITS_ROPE_LLAMA3;
        TRY(cx_jcfg_float(c, "factor", f, &cfg->rope_factor));
        TRY(cx_jcfg_float(c, "low_freq_factor", lo, &cfg->rope_low_freq_factor));
        TRY(cx_jcfg_float(c, "high_freq_factor", hi, &cfg->rope_high_freq_factor));
        cfg->rope_original_n_ctx = orig;
        return CIRCUITS_OK;
    }
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: rope_type '%s' is not supported (default, linear, llama3)", c->path,
                   type);
}

/* ---- sliding windows: which layers Hugging Face makes sliding ---- */

/* From an explicit layer_types list ("full_attention" / "sliding_attention"). */
static int parse_layer_types(const cx_jcfg *c, json_t *types, circuits_config *cfg)
{
    if (!json_is_array(types))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: 'layer_types' must be a list", c->path);
    if (json_array_size(types) != (size_t)cfg->n_layers)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: 'layer_types' has %zu entries for %d layers", c->path,
                       json_array_size(types), cfg->n_layers);
    unsigned seen[2][2] = {{0}}; /* [layer parity][sliding] */
    for (int l = 0; l < cfg->n_layers; l++) {
        const char *t = json_string_value(json_array_get(types, (size_t)l));
        if (!t) return cx_fail(CIRCUITS_E_CONFIG, "%s: 'layer_types'[%d] must be a string", c->path, l);
        bool sliding = strcmp(t, "sliding_attention") == 0;
        if (!sliding && strcmp(t, "full_attention") != 0)
            return cx_fail(CIRCUITS_E_UNSUPPORTED,
                           "%s: layer_types entry '%s' is not supported (full_attention, sliding_attention)", c->path, t);
        seen[l % 2][sliding]++;
    }
    int pattern = cx_local_attn_pattern((const unsigned(*)[2])seen);
    if (pattern >= 0) cfg->local_attn = pattern;
    else
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: 'layer_types' mixes full and sliding layers in a pattern other than all, even or odd layers",
                       c->path);
    return CIRCUITS_OK;
}

static int parse_window(const cx_jcfg *c, const char *mt, circuits_config *cfg)
{
    int rc;
    bool qwen2 = strcmp(mt, "qwen2") == 0, gemma2 = strcmp(mt, "gemma2") == 0;
    if (strcmp(mt, "mistral") && !qwen2 && !gemma2) return CIRCUITS_OK; /* the others have none */
    /* absent is not null: MistralConfig, Qwen2Config and Gemma2Config default sliding_window to
     * 4096, and only null means none */
    int32_t window = 4096;
    json_t *sw = json_object_get(c->root, "sliding_window");
    if (sw && json_is_null(sw)) window = 0;
    else if (sw) TRY(cx_jcfg_int(c, "sliding_window", true, 0, 1, CX_MAX_DIM, &window));
    bool use = true;
    /* Qwen2Config: sliding_window = sliding_window if use_sliding_window else None (checkpoints
     * ship it set with use_sliding_window false) */
    if (qwen2) TRY(cx_jcfg_bool(c, "use_sliding_window", false, &use));
    if (!use || !window) return CIRCUITS_OK;
    cfg->window_size = window;
    json_t *types = json_object_get(c->root, "layer_types");
    if (strcmp(mt, "mistral") == 0) {
        cfg->local_attn = CIRCUITS_LOCAL_ATTN_ALL; /* MistralModel: every layer, layer_types ignored */
    } else if (types && !json_is_null(types)) {
        TRY(parse_layer_types(c, types, cfg));
    } else if (gemma2) {
        cfg->local_attn = CIRCUITS_LOCAL_ATTN_EVEN; /* Gemma2Config: layer i sliding when (i + 1) % 2 */
    } else { /* Qwen2Config: layer i sliding when i >= max_window_layers */
        int32_t mwl;
        TRY(cx_jcfg_int(c, "max_window_layers", false, 28, 0, CX_MAX_LAYERS, &mwl));
        if (mwl >= cfg->n_layers) cfg->local_attn = CIRCUITS_LOCAL_ATTN_NONE;
        else if (mwl == 0) cfg->local_attn = CIRCUITS_LOCAL_ATTN_ALL;
        else
            return cx_fail(CIRCUITS_E_UNSUPPORTED,
                           "%s: use_sliding_window with max_window_layers = %d of %d layers (full then sliding "
                           "layers) is not supported", c->path, mwl, cfg->n_layers);
    }
    if (cfg->local_attn == CIRCUITS_LOCAL_ATTN_NONE) cfg->window_size = 0;
    return CIRCUITS_OK;
}

/* ---- the families ---- */

/* The norm epsilon, under the family's name for it. */
static int read_eps(const cx_jcfg *c, const char *key, double dflt, circuits_config *cfg)
{
    double eps;
    int rc = cx_jcfg_num(c, key, dflt, &eps);
    if (rc) return rc;
    if (!(eps >= 0)) return cx_fail(CIRCUITS_E_CONFIG, "%s: %s must not be negative", c->path, key);
    cfg->eps = (float)eps;
    return CIRCUITS_OK;
}

/* GPT-NeoX (Pythia): fused query_key_value, LayerNorm, parallel residual by default. */
static int parse_neox(const cx_jcfg *c, circuits_config *cfg, cx_hf_extra *x)
{
    int rc;
    const char *act;
    bool parallel, bias;
    TRY(cx_jcfg_int(c, "hidden_size", true, 0, 1, CX_MAX_DIM, &cfg->d_model));
    TRY(cx_jcfg_int(c, "num_attention_heads", true, 0, 1, CX_MAX_DIM, &cfg->n_heads));
    TRY(cx_jcfg_int(c, "num_hidden_layers", true, 0, 1, CX_MAX_LAYERS, &cfg->n_layers));
    TRY(cx_jcfg_int(c, "intermediate_size", true, 0, 1, CX_MAX_DIM, &cfg->d_mlp));
    TRY(cx_jcfg_int(c, "max_position_embeddings", true, 0, 1, CX_MAX_DIM, &cfg->n_ctx));
    TRY(cx_jcfg_str(c, "hidden_act", &act));
    TRY(cx_jcfg_act_fn(c, "hidden_act", act ? act : "gelu", &cfg->act_fn));
    TRY(read_eps(c, "layer_norm_eps", 1e-5, cfg));
    TRY(cx_jcfg_bool(c, "use_parallel_residual", true, &parallel));
    cfg->parallel_attn_mlp = parallel;
    TRY(cx_jcfg_bool(c, "attention_bias", true, &bias));
    if (!bias) x->absent |= bit(CX_B_Q) | bit(CX_B_K) | bit(CX_B_V) | bit(CX_B_O);
    cfg->normalization_type = CIRCUITS_NORM_LN;
    if (cfg->d_model % cfg->n_heads)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: hidden_size = %d is not a multiple of num_attention_heads = %d",
                       c->path, cfg->d_model, cfg->n_heads);
    cfg->d_head = cfg->d_model / cfg->n_heads;
    cfg->n_key_value_heads = cfg->n_heads;
    return CIRCUITS_OK;
}

/* GPT-J: separate q/k/v without biases, one ln_1 read by the attention and the MLP side by side
 * (TransformerLens's ln2 is a copy of ln1), rotary on adjacent pairs of the first rotary_dim. */
static int parse_gptj(const cx_jcfg *c, circuits_config *cfg)
{
    int rc;
    const char *act;
    TRY(cx_jcfg_int(c, "n_embd", true, 0, 1, CX_MAX_DIM, &cfg->d_model));
    TRY(cx_jcfg_int(c, "n_head", true, 0, 1, CX_MAX_DIM, &cfg->n_heads));
    TRY(cx_jcfg_int(c, "n_layer", true, 0, 1, CX_MAX_LAYERS, &cfg->n_layers));
    TRY(cx_jcfg_int(c, "n_positions", true, 0, 1, CX_MAX_DIM, &cfg->n_ctx));
    if (cfg->d_model % cfg->n_heads)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: n_embd = %d is not a multiple of n_head = %d", c->path, cfg->d_model,
                       cfg->n_heads);
    cfg->d_head = cfg->d_model / cfg->n_heads;
    cfg->n_key_value_heads = cfg->n_heads;
    TRY(cx_jcfg_int(c, "n_inner", false, 4 * (int64_t)cfg->d_model, 1, CX_MAX_DIM, &cfg->d_mlp));
    if (cfg->d_mlp > CX_MAX_DIM) return cx_fail(CIRCUITS_E_CONFIG, "%s: n_inner (4 * n_embd) is too large", c->path);
    TRY(cx_jcfg_str(c, "activation_function", &act));
    TRY(cx_jcfg_act_fn(c, "activation_function", act ? act : "gelu_new", &cfg->act_fn));
    TRY(read_eps(c, "layer_norm_epsilon", 1e-5, cfg));
    /* GPTJAttention with rotary_dim null sizes its sin/cos by n_embd, not by the head */
    json_t *rd = json_object_get(c->root, "rotary_dim");
    if (rd && json_is_null(rd)) return unsupported(c, "GPT-J rotary_dim null (rotary over n_embd)");
    TRY(cx_jcfg_int(c, "rotary_dim", false, 64, 2, cfg->d_head, &cfg->rotary_dim));
    if (cfg->rotary_dim % 2)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: rotary_dim = %d must be even", c->path, cfg->rotary_dim);
    cfg->rotary_adjacent_pairs = 1;
    cfg->rotary_base = 10000.0f; /* GPT-J's create_sinusoidal_positions: fixed */
    cfg->parallel_attn_mlp = 1;
    cfg->normalization_type = CIRCUITS_NORM_LN;
    return CIRCUITS_OK;
}

/* A soft-cap: dflt when absent, none (0) when null or not positive. */
static int soft_cap(const cx_jcfg *c, const char *key, double dflt, float *out)
{
    json_t *v = json_object_get(c->root, key);
    double cap = 0.0;
    if (!v || !json_is_null(v)) {
        int rc = cx_jcfg_num(c, key, dflt, &cap);
        if (rc) return rc;
    }
    *out = 0.0f;
    return cap > 0 ? cx_jcfg_float(c, key, cap, out) : CIRCUITS_OK;
}

/* Llama, Mistral, Qwen2, Gemma, Gemma 2: q/k/v/o_proj, gated MLP, RMSNorm. */
static int parse_llama_like(const cx_jcfg *c, const char *mt, circuits_config *cfg, cx_hf_extra *x)
{
    int rc;
    bool gemma = strcmp(mt, "gemma") == 0, gemma2 = strcmp(mt, "gemma2") == 0;
    TRY(cx_jcfg_int(c, "hidden_size", true, 0, 1, CX_MAX_DIM, &cfg->d_model));
    TRY(cx_jcfg_int(c, "num_attention_heads", true, 0, 1, CX_MAX_DIM, &cfg->n_heads));
    TRY(cx_jcfg_int(c, "num_hidden_layers", true, 0, 1, CX_MAX_LAYERS, &cfg->n_layers));
    TRY(cx_jcfg_int(c, "intermediate_size", true, 0, 1, CX_MAX_DIM, &cfg->d_mlp));
    TRY(cx_jcfg_int(c, "max_position_embeddings", true, 0, 1, CX_MAX_DIM, &cfg->n_ctx));
    TRY(cx_jcfg_int(c, "num_key_value_heads", false, cfg->n_heads, 1, CX_MAX_DIM, &cfg->n_key_value_heads));
    if (cfg->n_heads % cfg->n_key_value_heads)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: num_attention_heads = %d is not a multiple of num_key_value_heads = %d",
                       c->path, cfg->n_heads, cfg->n_key_value_heads);
    /* head_dim: given (Gemma: 256 with any hidden_size), else hidden_size / num_attention_heads */
    if (cx_jcfg_absent(c, "head_dim")) {
        if (cfg->d_model % cfg->n_heads)
            return cx_fail(CIRCUITS_E_CONFIG, "%s: hidden_size = %d is not a multiple of num_attention_heads = %d "
                           "and there is no head_dim", c->path, cfg->d_model, cfg->n_heads);
        cfg->d_head = cfg->d_model / cfg->n_heads;
    } else {
        TRY(cx_jcfg_int(c, "head_dim", true, 0, 1, CX_MAX_DIM, &cfg->d_head));
    }
    /* the activation: Gemma 2 reads hidden_activation; Gemma's config turns a legacy "gelu" into
     * the tanh approximation it means */
    const char *act = NULL, *key = gemma2 ? "hidden_activation" : "hidden_act";
    TRY(cx_jcfg_str(c, key, &act));
    if (!act) act = gemma || gemma2 ? "gelu_pytorch_tanh" : "silu";
    if (gemma && strcmp(act, "gelu") == 0) act = "gelu_pytorch_tanh";
    TRY(cx_jcfg_act_fn(c, key, act, &cfg->act_fn));
    TRY(read_eps(c, "rms_norm_eps", 1e-6, cfg));
    cfg->normalization_type = CIRCUITS_NORM_RMS;
    cfg->gated_mlp = 1;
    cfg->final_rms = strcmp(mt, "mistral") != 0; /* as TransformerLens's configs say */
    /* biases: Llama's attention_bias (q, k, v, o) and mlp_bias (gate, up, down: TransformerLens
     * has no gate bias); Qwen2 always q/k/v; the others none (their tables) */
    if (strcmp(mt, "llama") == 0) {
        bool ab;
        TRY(must_be_false(c, "mlp_bias"));
        TRY(cx_jcfg_bool(c, "attention_bias", false, &ab));
        if (!ab) x->absent |= bit(CX_B_Q) | bit(CX_B_K) | bit(CX_B_V) | bit(CX_B_O);
    } else if (gemma || gemma2) {
        TRY(must_be_false(c, "attention_bias"));
        TRY(must_be_false(c, "use_bidirectional_attention"));
    }
    cfg->attn_scale = (float)sqrt((double)cfg->d_head);
    if (gemma2) {
        double q;
        /* Gemma2Attention: scaling = query_pre_attn_scalar ** -0.5 */
        TRY(cx_jcfg_num(c, "query_pre_attn_scalar", 256.0, &q));
        if (!(q > 0)) return cx_fail(CIRCUITS_E_CONFIG, "%s: query_pre_attn_scalar must be positive", c->path);
        cfg->attn_scale = (float)sqrt(q);
        /* Gemma2Config's defaults when absent (50 and 30); null means none */
        TRY(soft_cap(c, "attn_logit_softcapping", 50.0, &cfg->attn_scores_soft_cap));
        TRY(soft_cap(c, "final_logit_softcapping", 30.0, &cfg->output_logits_soft_cap));
        cfg->norm_before_and_after = 1;
    }
    return CIRCUITS_OK;
}

int cx_config_parse_hf_family(const cx_jcfg *c, const char *mt, circuits_config *cfg, cx_hf_extra *x)
{
    int rc;
    const family *f = NULL;
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (strcmp(mt, families[i].model_type) == 0) f = &families[i];
    if (!f)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: model_type '%s' is not supported (gpt2, gpt_neox, gptj, llama, mistral, qwen2, gemma, "
                       "gemma2)", c->path, mt);
    cfg->format = f->format;
    cfg->positional_embedding_type = CIRCUITS_POS_ROTARY;
    x->absent = 0;
    if (strcmp(mt, "gpt_neox") == 0) rc = parse_neox(c, cfg, x);
    else if (strcmp(mt, "gptj") == 0) rc = parse_gptj(c, cfg);
    else rc = parse_llama_like(c, mt, cfg, x);
    if (rc) return rc;
    TRY(cx_jcfg_int(c, "vocab_size", true, 0, 1, CX_MAX_DIM, &cfg->d_vocab));
    cfg->d_vocab_out = cfg->d_vocab;
    if (cfg->act_fn == CIRCUITS_ACT_SOLU_LN) return unsupported(c, "activation 'solu_ln'");
    if (!cfg->attn_scale) cfg->attn_scale = (float)sqrt((double)cfg->d_head);
    if (strcmp(mt, "gptj") != 0) TRY(parse_rope(c, mt, cfg));
    TRY(parse_window(c, mt, cfg));
    /* TransformerLens skips linear rope scaling on local layers; Hugging Face's Gemma 2 scales
     * every layer: not one computation to follow, so refused */
    if (cfg->rope_scaling != CIRCUITS_ROPE_NONE && cfg->local_attn != CIRCUITS_LOCAL_ATTN_NONE &&
        cfg->local_attn != CIRCUITS_LOCAL_ATTN_ALL)
        return unsupported(c, "rope scaling with alternating sliding-window layers");
    /* every layer sliding (Mistral, Qwen2): the forward follows TransformerLens and leaves linear
     * scaling off local layers, while Hugging Face's one rotary embedding scales them all */
    if (cfg->rope_scaling == CIRCUITS_ROPE_LINEAR && cfg->local_attn != CIRCUITS_LOCAL_ATTN_NONE)
        return unsupported(c, "linear rope scaling with sliding-window layers");
    bool tied;
    TRY(cx_jcfg_bool(c, "tie_word_embeddings", f->tied, &tied));
    x->tie_word_embeddings = tied;
    TRY(must_be_false(c, "add_cross_attention"));
    return cx_jcfg_check_sizes(c, cfg);
}
