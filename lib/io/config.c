/* Parsing model configs. Both are untrusted input: every field is type- and range-checked,
 * unknown fields are ignored, and fields that would change the computation in a way
 * libcircuits does not implement are refused (CIRCUITS_E_UNSUPPORTED) rather than ignored. */
#include "config.h"
#include "json_load.h"

#include <math.h>
#include <string.h>

/* A field that is absent or JSON null. */
bool cx_jcfg_absent(const cx_jcfg *c, const char *key)
{
    json_t *v = json_object_get(c->root, key);
    return !v || json_is_null(v);
}

int cx_jcfg_int(const cx_jcfg *c, const char *key, bool required, int64_t dflt, int64_t lo, int64_t hi,
                   int32_t *out)
{
    json_t *v = json_object_get(c->root, key);
    if (!v || json_is_null(v)) {
        if (required) return cx_fail(CIRCUITS_E_CONFIG, "%s: missing required field '%s'", c->path, key);
        *out = (int32_t)dflt;
        return CIRCUITS_OK;
    }
    if (!json_is_integer(v))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: field '%s' must be an integer", c->path, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: field '%s' = %lld is outside [%lld, %lld]", c->path, key,
                       (long long)x, (long long)lo, (long long)hi);
    *out = (int32_t)x;
    return CIRCUITS_OK;
}

int cx_jcfg_bool(const cx_jcfg *c, const char *key, bool dflt, bool *out)
{
    json_t *v = json_object_get(c->root, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return CIRCUITS_OK;
    }
    if (!json_is_boolean(v))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: field '%s' must be true or false", c->path, key);
    *out = json_is_true(v);
    return CIRCUITS_OK;
}

int cx_jcfg_num(const cx_jcfg *c, const char *key, double dflt, double *out)
{
    json_t *v = json_object_get(c->root, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return CIRCUITS_OK;
    }
    if (!json_is_number(v))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: field '%s' must be a number", c->path, key);
    *out = json_number_value(v);
    if (!isfinite(*out))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: field '%s' must be finite", c->path, key);
    return CIRCUITS_OK;
}

int cx_jcfg_float(const cx_jcfg *c, const char *key, double v, float *out)
{
    float f = (float)v;
    if (isinf(f) || (v != 0.0 && f == 0.0f))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: '%s' = %g is outside the range of a float", c->path, key, v);
    *out = f;
    return CIRCUITS_OK;
}

/* A string field; *out is NULL when absent or null. */
int cx_jcfg_str(const cx_jcfg *c, const char *key, const char **out)
{
    json_t *v = json_object_get(c->root, key);
    *out = NULL;
    if (!v || json_is_null(v)) return CIRCUITS_OK;
    if (!json_is_string(v))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: field '%s' must be a string", c->path, key);
    *out = json_string_value(v);
    return CIRCUITS_OK;
}

/* The activation names accepted in act_fn (TL) and activation_function (HF), in the order the
 * error message and the docs list them. */
static const struct { const char *name; circuits_act_fn act; } act_names[] = {
    {"relu", CIRCUITS_ACT_RELU},
    {"gelu", CIRCUITS_ACT_GELU},
    {"gelu_new", CIRCUITS_ACT_GELU_NEW},
    {"gelu_pytorch_tanh", CIRCUITS_ACT_GELU_NEW}, /* torch's tanh-approximate GELU is the gelu_new formula */
    {"gelu_fast", CIRCUITS_ACT_GELU_FAST},
    {"silu", CIRCUITS_ACT_SILU},
    {"swish", CIRCUITS_ACT_SILU}, /* Hugging Face's name for silu */
    {"solu_ln", CIRCUITS_ACT_SOLU_LN},
};

int cx_jcfg_act_fn(const cx_jcfg *c, const char *key, const char *s, int32_t *out)
{
    char list[160];
    size_t n = 0;
    for (size_t i = 0; i < sizeof act_names / sizeof act_names[0]; i++) {
        if (strcmp(s, act_names[i].name) == 0) {
            *out = act_names[i].act;
            return CIRCUITS_OK;
        }
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", act_names[i].name);
    }
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s '%s' is not supported (%s)", c->path, key, s, list);
}

/* Parses a config from a file (buf NULL) or from a buffer of len bytes (named path in messages). */
int cx_jcfg_open(const char *path, const char *buf, size_t len, cx_jcfg *c)
{
    json_error_t err;
    c->path = path;
    bool oom;
    c->root = buf ? cx_json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err, &oom)
                  : cx_json_load_file(path, JSON_REJECT_DUPLICATES, &err, &oom);
    if (oom) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory parsing %s", path);
    if (!c->root) {
        /* jansson reports an unreadable file as a parse error at position 0 */
        if (err.position == 0 && err.line <= 0)
            return cx_fail(CIRCUITS_E_IO, "%s: %s", path, err.text);
        return cx_fail(CIRCUITS_E_FORMAT, "%s: not valid JSON (line %d, column %d): %s", path, err.line,
                       err.column, err.text);
    }
    if (!json_is_object(c->root)) {
        json_decref(c->root);
        c->root = NULL; /* the caller frees c->root on every path: not a second time */
        return cx_fail(CIRCUITS_E_FORMAT, "%s: not a JSON object", path);
    }
    return CIRCUITS_OK;
}

/* Checks shared by both formats once the fields are read. */
int cx_jcfg_check_sizes(const cx_jcfg *c, const circuits_config *cfg)
{
    int64_t hd = (int64_t)cfg->n_heads * cfg->d_head;
    if (hd > CX_MAX_DIM)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: n_heads * d_head = %lld is too large", c->path, (long long)hd);
    return CIRCUITS_OK;
}

#define TRY(x) do { if ((rc = (x)) != CIRCUITS_OK) goto done; } while (0)

int cx_config_load_hf(const char *path, circuits_config *cfg, cx_hf_extra *extra)
{
    return cx_config_parse_hf(path, NULL, 0, cfg, extra);
}

int cx_config_parse_hf(const char *path, const char *buf, size_t len, circuits_config *cfg, cx_hf_extra *extra)
{
    cx_jcfg c;
    int rc = cx_jcfg_open(path, buf, len, &c);
    if (rc) return rc;
    memset(cfg, 0, sizeof *cfg);
    cfg->size = sizeof *cfg;
    cfg->format = CIRCUITS_FORMAT_HF_GPT2;
    memset(extra, 0, sizeof *extra);
    const char *s;
    TRY(cx_jcfg_str(&c, "model_type", &s));
    if (s && strcmp(s, "gpt2") != 0) { /* the other families: config_hf.c */
        rc = cx_config_parse_hf_family(&c, s, cfg, extra);
        goto done;
    }
    TRY(cx_jcfg_int(&c, "n_embd", true, 0, 1, CX_MAX_DIM, &cfg->d_model));
    TRY(cx_jcfg_int(&c, "n_head", true, 0, 1, CX_MAX_DIM, &cfg->n_heads));
    TRY(cx_jcfg_int(&c, "n_layer", true, 0, 1, CX_MAX_LAYERS, &cfg->n_layers));
    TRY(cx_jcfg_int(&c, "vocab_size", true, 0, 1, CX_MAX_DIM, &cfg->d_vocab));
    if (!cx_jcfg_absent(&c, "n_positions"))
        TRY(cx_jcfg_int(&c, "n_positions", true, 0, 1, CX_MAX_DIM, &cfg->n_ctx));
    else
        TRY(cx_jcfg_int(&c, "n_ctx", true, 0, 1, CX_MAX_DIM, &cfg->n_ctx));
    if (cfg->d_model % cfg->n_heads != 0) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: n_embd = %d is not a multiple of n_head = %d", path,
                     cfg->d_model, cfg->n_heads);
        goto done;
    }
    cfg->d_head = cfg->d_model / cfg->n_heads;
    /* n_inner: null means 4 * n_embd */
    TRY(cx_jcfg_int(&c, "n_inner", false, 4 * (int64_t)cfg->d_model, 1, CX_MAX_DIM, &cfg->d_mlp));
    if (cfg->d_mlp > CX_MAX_DIM) { /* the 4 * n_embd default */
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: n_inner (4 * n_embd = %d) is too large", path, cfg->d_mlp);
        goto done;
    }
    cfg->d_vocab_out = cfg->d_vocab;
    TRY(cx_jcfg_str(&c, "activation_function", &s));
    cfg->act_fn = CIRCUITS_ACT_GELU_NEW;
    if (s) TRY(cx_jcfg_act_fn(&c, "activation_function", s, &cfg->act_fn));
    if (cfg->act_fn == CIRCUITS_ACT_SOLU_LN) { /* SoLU's LayerNorm has weights no GPT-2 file has */
        rc = cx_fail(CIRCUITS_E_UNSUPPORTED,
                     "%s: activation_function 'solu_ln' needs mlp.ln weights, which a GPT-2 model has no place for "
                     "(save the model in the TransformerLens layout: tl_config.json)", path);
        goto done;
    }
    double eps;
    TRY(cx_jcfg_num(&c, "layer_norm_epsilon", 1e-5, &eps));
    if (eps < 0) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: layer_norm_epsilon must not be negative", path);
        goto done;
    }
    cfg->eps = (float)eps;
    cfg->normalization_type = CIRCUITS_NORM_LN;
    cfg->positional_embedding_type = CIRCUITS_POS_STANDARD;
    bool scale, inv, tied, cross;
    TRY(cx_jcfg_bool(&c, "scale_attn_weights", true, &scale));
    TRY(cx_jcfg_bool(&c, "scale_attn_by_inverse_layer_idx", false, &inv));
    TRY(cx_jcfg_bool(&c, "tie_word_embeddings", true, &tied));
    TRY(cx_jcfg_bool(&c, "add_cross_attention", false, &cross));
    if (cross) {
        rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: add_cross_attention is not supported", path);
        goto done;
    }
    cfg->attn_scale = scale ? (float)sqrt((double)cfg->d_head) : 1.0f;
    cfg->scale_attn_by_inverse_layer_idx = inv;
    extra->tie_word_embeddings = tied;
    cfg->n_key_value_heads = cfg->n_heads;
    TRY(cx_jcfg_check_sizes(&c, cfg));
done:
    json_decref(c.root);
    return rc;
}

/* TL config fields that, set to anything but their default, change the forward pass in ways
 * libcircuits does not implement. Each is checked to be absent, null, false, or the default. */
static int refuse_unsupported_tl(const cx_jcfg *c)
{
    static const char *const must_be_false[] = {
        "post_embedding_ln", "use_qk_norm", "use_logn_attn", "use_dynamic_ntk_rope", "use_yarn_rope",
        "use_attention_sinks", "ungroup_grouped_query_attention",
    };
    for (size_t i = 0; i < sizeof must_be_false / sizeof must_be_false[0]; i++) {
        json_t *v = json_object_get(c->root, must_be_false[i]);
        if (v && !json_is_null(v) && !json_is_false(v))
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: '%s' is not supported", c->path, must_be_false[i]);
    }
    static const char *const must_be_null[] = {"num_experts", "clip_qkv", "rotary_base_local"};
    for (size_t i = 0; i < sizeof must_be_null / sizeof must_be_null[0]; i++)
        if (!cx_jcfg_absent(c, must_be_null[i]))
            return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: '%s' is not supported", c->path, must_be_null[i]);
    const char *dir;
    int rc = cx_jcfg_str(c, "attention_dir", &dir);
    if (rc) return rc;
    if (dir && strcmp(dir, "causal") != 0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: attention_dir '%s' is not supported", c->path, dir);
    return CIRCUITS_OK;
}

/* Rotary fields of a TL config (HookedTransformerConfig names; only read for rotary models, where
 * TransformerLens uses them). */
static int parse_tl_rotary(const cx_jcfg *c, circuits_config *cfg)
{
    int rc;
    if (cfg->positional_embedding_type != CIRCUITS_POS_ROTARY) return CIRCUITS_OK;
    /* rotary_dim: null means d_head, as HookedTransformerConfig.__post_init__ sets it */
    if ((rc = cx_jcfg_int(c, "rotary_dim", false, cfg->d_head, 2, cfg->d_head, &cfg->rotary_dim))) return rc;
    if (cfg->rotary_dim % 2)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: rotary_dim = %d must be even", c->path, cfg->rotary_dim);
    bool adjacent, ntk;
    double base, f;
    if ((rc = cx_jcfg_bool(c, "rotary_adjacent_pairs", false, &adjacent))) return rc;
    cfg->rotary_adjacent_pairs = adjacent;
    if ((rc = cx_jcfg_num(c, "rotary_base", 10000.0, &base))) return rc;
    if (!(base > 1.0)) return cx_fail(CIRCUITS_E_CONFIG, "%s: rotary_base must be greater than 1", c->path);
    if ((rc = cx_jcfg_float(c, "rotary_base", base, &cfg->rotary_base))) return rc;
    if ((rc = cx_jcfg_bool(c, "use_NTK_by_parts_rope", false, &ntk))) return rc;
    if ((rc = cx_jcfg_num(c, "rotary_scaling_factor", 1.0, &f))) return rc;
    if (ntk && f != 1.0)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: 'rotary_scaling_factor' with 'use_NTK_by_parts_rope' is not supported",
                       c->path);
    if (ntk) {
        double lo, hi;
        int32_t orig;
        cfg->rope_scaling = CIRCUITS_ROPE_LLAMA3;
        if ((rc = cx_jcfg_num(c, "NTK_by_parts_factor", 8.0, &f)) || (rc = cx_jcfg_num(c, "NTK_by_parts_low_freq_factor", 1.0, &lo)) ||
            (rc = cx_jcfg_num(c, "NTK_by_parts_high_freq_factor", 4.0, &hi)) ||
            (rc = cx_jcfg_int(c, "NTK_original_ctx_len", false, 8192, 1, CX_MAX_DIM, &orig)))
            return rc;
        if (!(f > 0) || !(lo > 0) || !(hi > lo))
            return cx_fail(CIRCUITS_E_CONFIG,
                           "%s: NTK_by_parts factors must be positive with high_freq_factor > low_freq_factor", c->path);
        if ((rc = cx_jcfg_float(c, "NTK_by_parts_factor", f, &cfg->rope_factor)) ||
            (rc = cx_jcfg_float(c, "NTK_by_parts_low_freq_factor", lo, &cfg->rope_low_freq_factor)) ||
            (rc = cx_jcfg_float(c, "NTK_by_parts_high_freq_factor", hi, &cfg->rope_high_freq_factor)))
            return rc;
        cfg->rope_original_n_ctx = orig;
    } else if (f != 1.0) {
        if (!(f > 0)) return cx_fail(CIRCUITS_E_CONFIG, "%s: rotary_scaling_factor must be positive", c->path);
        cfg->rope_scaling = CIRCUITS_ROPE_LINEAR;
        if ((rc = cx_jcfg_float(c, "rotary_scaling_factor", f, &cfg->rope_factor))) return rc;
    }
    return CIRCUITS_OK;
}

/* The block-structure fields of a TL config: gated MLP, parallel attention + MLP, final_rms,
 * norms after each sublayer, soft-caps, local attention. */
static int parse_tl_block(const cx_jcfg *c, circuits_config *cfg)
{
    int rc;
    bool gated, parallel, final_rms, before_after, local;
    if ((rc = cx_jcfg_bool(c, "gated_mlp", false, &gated)) || (rc = cx_jcfg_bool(c, "parallel_attn_mlp", false, &parallel)) ||
        (rc = cx_jcfg_bool(c, "final_rms", false, &final_rms)) ||
        (rc = cx_jcfg_bool(c, "use_normalization_before_and_after", false, &before_after)) ||
        (rc = cx_jcfg_bool(c, "use_local_attn", false, &local)))
        return rc;
    cfg->gated_mlp = gated && !cfg->attn_only;
    cfg->parallel_attn_mlp = parallel && !cfg->attn_only;
    cfg->final_rms = final_rms;
    cfg->norm_before_and_after = before_after;
    /* post-norm decoders (TL's POST_NORM_ARCHITECTURES): ln1 / ln2 normalise each sublayer's
     * output instead of its input, a block libcircuits does not build */
    const char *arch;
    if ((rc = cx_jcfg_str(c, "original_architecture", &arch))) return rc;
    if (arch && (strcmp(arch, "Olmo2ForCausalLM") == 0 || strcmp(arch, "Olmo3ForCausalLM") == 0))
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: original_architecture '%s' (norms after each sublayer, TransformerLens's post-norm "
                       "block) is not supported",
                       c->path, arch);
    /* TransformerLens builds ln1_post / ln2_post only for RMS and RMSPre (an RMSNorm either way);
     * with LN or LNPre its TransformerBlock fails, with no normalization they are identities */
    if (before_after && cfg->normalization_type != CIRCUITS_NORM_RMS && cfg->normalization_type != CIRCUITS_NORM_RMSPRE)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: 'use_normalization_before_and_after' is supported with normalization_type RMS or RMSPre only",
                       c->path);
    if (gated && cfg->act_fn == CIRCUITS_ACT_SOLU_LN && !cfg->attn_only)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: 'gated_mlp' with act_fn 'solu_ln' is not supported", c->path);
    /* soft-caps: TransformerLens's SOFTCAP_DISABLED is -1; any value <= 0 means none */
    static const char *const caps[] = {"attn_scores_soft_cap", "output_logits_soft_cap"};
    float *dst[] = {&cfg->attn_scores_soft_cap, &cfg->output_logits_soft_cap};
    for (int i = 0; i < 2; i++) {
        double v;
        if ((rc = cx_jcfg_num(c, caps[i], -1.0, &v))) return rc;
        *dst[i] = 0.0f;
        if (v > 0 && (rc = cx_jcfg_float(c, caps[i], v, dst[i]))) return rc;
    }
    if (!local) return CIRCUITS_OK;
    if ((rc = cx_jcfg_int(c, "window_size", true, 0, 1, CX_MAX_DIM, &cfg->window_size))) return rc;
    /* attn_types: per layer "global" or "local"; libcircuits takes the patterns models use */
    json_t *types = json_object_get(c->root, "attn_types");
    if (!types || json_is_null(types)) {
        cfg->local_attn = CIRCUITS_LOCAL_ATTN_ALL; /* TransformerLens: every attention layer local */
        return CIRCUITS_OK;
    }
    if (!json_is_array(types))
        return cx_fail(CIRCUITS_E_CONFIG, "%s: 'attn_types' must be a list of \"global\" / \"local\"", c->path);
    /* TransformerLens gives layer l the type attn_types[l] (the list may be longer than n_layers) */
    if (json_array_size(types) < (size_t)cfg->n_layers)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: 'attn_types' has %zu entries for %d layers", c->path,
                       json_array_size(types), cfg->n_layers);
    unsigned seen[2][2] = {{0}}; /* [layer parity][local] */
    for (int l = 0; l < cfg->n_layers; l++) {
        const char *t = json_string_value(json_array_get(types, (size_t)l));
        if (!t || (strcmp(t, "global") != 0 && strcmp(t, "local") != 0))
            return cx_fail(CIRCUITS_E_CONFIG, "%s: 'attn_types'[%d] must be \"global\" or \"local\"", c->path, l);
        seen[l % 2][strcmp(t, "local") == 0]++;
    }
    int pattern = cx_local_attn_pattern((const unsigned(*)[2])seen);
    if (pattern >= 0) cfg->local_attn = pattern;
    else
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: 'attn_types' mixes global and local layers in a pattern other than all, even or odd layers",
                       c->path);
    if (cfg->local_attn == CIRCUITS_LOCAL_ATTN_NONE) cfg->window_size = 0;
    return CIRCUITS_OK;
}

int cx_local_attn_pattern(const unsigned seen[2][2])
{
    bool even_all = !seen[0][0], even_none = !seen[0][1], odd_all = !seen[1][0], odd_none = !seen[1][1];
    if (even_all && odd_all) return CIRCUITS_LOCAL_ATTN_ALL; /* (one layer: no odd ones) */
    if (even_none && odd_none) return CIRCUITS_LOCAL_ATTN_NONE;
    if (even_all && odd_none) return CIRCUITS_LOCAL_ATTN_EVEN;
    if (even_none && odd_all) return CIRCUITS_LOCAL_ATTN_ODD;
    return -1;
}

int cx_config_load_tl(const char *path, circuits_config *cfg)
{
    return cx_config_parse_tl(path, NULL, 0, cfg);
}

int cx_config_parse_tl(const char *path, const char *buf, size_t len, circuits_config *cfg)
{
    cx_jcfg c;
    int rc = cx_jcfg_open(path, buf, len, &c);
    if (rc) return rc;
    memset(cfg, 0, sizeof *cfg);
    cfg->size = sizeof *cfg;
    cfg->format = CIRCUITS_FORMAT_TRANSFORMERLENS;
    TRY(refuse_unsupported_tl(&c));
    TRY(cx_jcfg_int(&c, "d_model", true, 0, 1, CX_MAX_DIM, &cfg->d_model));
    TRY(cx_jcfg_int(&c, "d_head", true, 0, 1, CX_MAX_DIM, &cfg->d_head));
    TRY(cx_jcfg_int(&c, "n_layers", true, 0, 1, CX_MAX_LAYERS, &cfg->n_layers));
    TRY(cx_jcfg_int(&c, "n_ctx", true, 0, 1, CX_MAX_DIM, &cfg->n_ctx));
    TRY(cx_jcfg_int(&c, "d_vocab", true, 0, 1, CX_MAX_DIM, &cfg->d_vocab));
    int32_t v;
    /* n_heads -1 means d_model / d_head, as in HookedTransformerConfig */
    TRY(cx_jcfg_int(&c, "n_heads", false, -1, -1, CX_MAX_DIM, &v));
    if (v == 0) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: n_heads must be positive", path);
        goto done;
    }
    cfg->n_heads = v > 0 ? v : cfg->d_model / cfg->d_head;
    if (cfg->n_heads < 1) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: n_heads cannot be derived: d_model < d_head", path);
        goto done;
    }
    TRY(cx_jcfg_int(&c, "d_vocab_out", false, -1, -1, CX_MAX_DIM, &v));
    if (v == 0) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: d_vocab_out must be positive", path);
        goto done;
    }
    cfg->d_vocab_out = v > 0 ? v : cfg->d_vocab;
    bool attn_only;
    TRY(cx_jcfg_bool(&c, "attn_only", false, &attn_only));
    cfg->attn_only = attn_only;
    const char *s;
    if (!attn_only) {
        TRY(cx_jcfg_int(&c, "d_mlp", false, 4 * (int64_t)cfg->d_model, 1, CX_MAX_DIM, &cfg->d_mlp));
        if (cfg->d_mlp > CX_MAX_DIM) {
            rc = cx_fail(CIRCUITS_E_CONFIG, "%s: d_mlp (4 * d_model = %d) is too large", path, cfg->d_mlp);
            goto done;
        }
        TRY(cx_jcfg_str(&c, "act_fn", &s));
        if (!s) {
            rc = cx_fail(CIRCUITS_E_CONFIG, "%s: missing 'act_fn' (required unless attn_only)", path);
            goto done;
        }
        TRY(cx_jcfg_act_fn(&c, "act_fn", s, &cfg->act_fn));
    } else {
        cfg->d_mlp = 0;
        cfg->act_fn = CIRCUITS_ACT_RELU;
    }
    double eps;
    TRY(cx_jcfg_num(&c, "eps", 1e-5, &eps));
    if (eps < 0) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: eps must not be negative", path);
        goto done;
    }
    cfg->eps = (float)eps;
    /* normalization_type: absent means TL's default "LN"; JSON null means none */
    json_t *nt = json_object_get(c.root, "normalization_type");
    if (!nt) {
        cfg->normalization_type = CIRCUITS_NORM_LN;
    } else if (json_is_null(nt)) {
        cfg->normalization_type = CIRCUITS_NORM_NONE;
    } else if (!json_is_string(nt)) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: normalization_type must be a string or null", path);
        goto done;
    } else if (strcmp(json_string_value(nt), "LN") == 0) {
        cfg->normalization_type = CIRCUITS_NORM_LN;
    } else if (strcmp(json_string_value(nt), "LNPre") == 0) {
        cfg->normalization_type = CIRCUITS_NORM_LNPRE;
    } else if (strcmp(json_string_value(nt), "RMS") == 0) {
        cfg->normalization_type = CIRCUITS_NORM_RMS;
    } else if (strcmp(json_string_value(nt), "RMSPre") == 0) {
        cfg->normalization_type = CIRCUITS_NORM_RMSPRE;
    } else if (strcmp(json_string_value(nt), "None") == 0) {
        cfg->normalization_type = CIRCUITS_NORM_NONE;
    } else {
        rc = cx_fail(CIRCUITS_E_UNSUPPORTED,
                     "%s: normalization_type '%s' is not supported (LN, LNPre, RMS, RMSPre, null)", path,
                     json_string_value(nt));
        goto done;
    }
    /* SoLU's mlp.ln in an RMS model: TransformerLens builds a LayerNormPre (not an RMSNorm) before
     * folding and an RMSNormPre after it, so folding changes the function; not taken on */
    if (!attn_only && cfg->act_fn == CIRCUITS_ACT_SOLU_LN &&
        (cfg->normalization_type == CIRCUITS_NORM_RMS || cfg->normalization_type == CIRCUITS_NORM_RMSPRE)) {
        rc = cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: act_fn 'solu_ln' with normalization_type '%s' is not supported",
                     path, json_string_value(nt));
        goto done;
    }
    TRY(cx_jcfg_str(&c, "positional_embedding_type", &s));
    if (!s || strcmp(s, "standard") == 0) {
        cfg->positional_embedding_type = CIRCUITS_POS_STANDARD;
    } else if (strcmp(s, "shortformer") == 0) {
        cfg->positional_embedding_type = CIRCUITS_POS_SHORTFORMER;
    } else if (strcmp(s, "rotary") == 0) {
        cfg->positional_embedding_type = CIRCUITS_POS_ROTARY;
    } else {
        rc = cx_fail(CIRCUITS_E_UNSUPPORTED,
                     "%s: positional_embedding_type '%s' is not supported (standard, shortformer, rotary)", path, s);
        goto done;
    }
    TRY(parse_tl_rotary(&c, cfg));
    bool use_scale, inv;
    double scale;
    TRY(cx_jcfg_bool(&c, "use_attn_scale", true, &use_scale));
    TRY(cx_jcfg_num(&c, "attn_scale", -1.0, &scale));
    TRY(cx_jcfg_bool(&c, "scale_attn_by_inverse_layer_idx", false, &inv));
    if (!use_scale) scale = 1.0;
    else if (scale == -1.0) scale = sqrt((double)cfg->d_head);
    if (!(scale > 0)) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: attn_scale must be positive", path);
        goto done;
    }
    cfg->attn_scale = (float)scale;
    cfg->scale_attn_by_inverse_layer_idx = inv;
    /* n_key_value_heads: null means n_heads (no grouping) */
    TRY(cx_jcfg_int(&c, "n_key_value_heads", false, cfg->n_heads, 1, CX_MAX_DIM, &cfg->n_key_value_heads));
    if (cfg->n_heads % cfg->n_key_value_heads != 0) {
        rc = cx_fail(CIRCUITS_E_CONFIG, "%s: n_heads = %d is not a multiple of n_key_value_heads = %d", path,
                     cfg->n_heads, cfg->n_key_value_heads);
        goto done;
    }
    TRY(parse_tl_block(&c, cfg));
    TRY(cx_jcfg_check_sizes(&c, cfg));
done:
    json_decref(c.root);
    return rc;
}
