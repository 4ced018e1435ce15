/* A circuits_config from a GGUF file's metadata ({arch}.* keys, as llama.cpp's converters write
 * them and llama.cpp's loader reads them: llama-model.cpp, models/<arch>.cpp), giving the fields
 * config_hf.c gives for the Hugging Face config the file was converted from. What GGUF does not
 * record (the activation, which norm, parallel blocks, GPT-J's adjacent rotary pairs) is what
 * llama.cpp's graph for the architecture does. Keys that change the computation and are not
 * implemented (other rope scalings, experts, ...) are refused by name; docs/loading.md lists both. */
#include "config.h"
#include "gguf.h"
#include "arch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define TRY(x) do { if ((rc = (x)) != CIRCUITS_OK) return rc; } while (0)

typedef struct gguf_family {
    const char *arch;   /* general.architecture */
    int32_t format;
    bool rms;           /* RMSNorm (layer_norm_rms_epsilon), else LayerNorm (layer_norm_epsilon) */
} gguf_family;

static const gguf_family families[] = {
    {"llama", CIRCUITS_FORMAT_HF_LLAMA, true},       {"qwen2", CIRCUITS_FORMAT_HF_QWEN2, true},
    {"gemma", CIRCUITS_FORMAT_HF_GEMMA, true},       {"gemma2", CIRCUITS_FORMAT_HF_GEMMA2, true},
    {"gptneox", CIRCUITS_FORMAT_HF_GPT_NEOX, false}, {"gptj", CIRCUITS_FORMAT_HF_GPTJ, false},
    {"gpt2", CIRCUITS_FORMAT_HF_GPT2, false},
};

typedef struct reader {
    const cx_gguf *g;
    const char *arch;
} reader;

/* The pair "{arch}.{suffix}" (NULL when absent); *name gets the full key for messages. */
static const cx_gguf_kv *key(const reader *r, const char *suffix, char *name, size_t n)
{
    snprintf(name, n, "%s.%s", r->arch, suffix);
    return cx_gguf_find(r->g, name);
}

/* An integer key in [lo, hi]; dflt when absent unless required. */
static int get_int(const reader *r, const char *suffix, bool required, int64_t dflt, int64_t lo, int64_t hi,
                   int32_t *out)
{
    char name[128];
    const cx_gguf_kv *k = key(r, suffix, name, sizeof name);
    int64_t v = dflt;
    if (!k && required) return cx_fail(CIRCUITS_E_CONFIG, "%s: GGUF key '%s' is missing", r->g->path, name);
    if (k) {
        int rc = cx_gguf_kv_int(r->g, k, &v);
        if (rc) return rc;
    }
    if (v < lo || v > hi)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: GGUF key '%s' = %lld is out of range (%lld to %lld)", r->g->path, name,
                       (long long)v, (long long)lo, (long long)hi);
    *out = (int32_t)v;
    return CIRCUITS_OK;
}

/* A float key, finite, > lo (or >= lo when lo_ok) and representable in fp32. */
static int get_float(const reader *r, const char *suffix, bool required, double dflt, double lo, bool lo_ok, float *out)
{
    char name[128];
    const cx_gguf_kv *k = key(r, suffix, name, sizeof name);
    double v = dflt;
    if (!k && required) return cx_fail(CIRCUITS_E_CONFIG, "%s: GGUF key '%s' is missing", r->g->path, name);
    if (k) {
        int rc = cx_gguf_kv_float(r->g, k, &v);
        if (rc) return rc;
    }
    if (!isfinite(v) || v < lo || (!lo_ok && v == lo) || fabs(v) > 3.0e38)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: GGUF key '%s' = %g is out of range (%s %g)", r->g->path, name, v,
                       lo_ok ? "at least" : "more than", lo);
    *out = (float)v;
    return CIRCUITS_OK;
}

static int refuse(const reader *r, const char *name, const char *what)
{
    return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: GGUF key '%s' (%s) is not supported", r->g->path, name, what);
}

/* Keys of the architecture that would change the computation and are not implemented: refused
 * when present with anything but their neutral value. */
static int refuse_unimplemented(const reader *r)
{
    static const struct { const char *suffix; const char *what; } counts[] = {
        {"expert_count", "mixture of experts"}, {"expert_used_count", "mixture of experts"},
        {"expert_shared_count", "mixture of experts"},
    };
    static const struct { const char *suffix; const char *what; } present[] = {
        {"attention.scale", "an attention scale other than 1/sqrt(key_length)"},
        {"attention.clamp_kqv", "clamped q/k/v"},
        {"attention.sliding_window_pattern", "a sliding-window layer pattern"},
        {"rope.scaling.attn_factor", "a rope attention factor"},
        {"rope.dimension_sections", "multimodal rope sections"},
        {"rope.freq_base_swa", "another rope base on sliding-window layers"},
        {"attention.key_length_swa", "other head sizes on sliding-window layers"},
        {"rope.scaling.yarn_ext_factor", "YaRN rope scaling"},
        {"embedding_length_out", "an output width other than embedding_length"},
    };
    char name[128];
    for (size_t i = 0; i < CX_COUNT(counts); i++) {
        const cx_gguf_kv *k = key(r, counts[i].suffix, name, sizeof name);
        int64_t v = 0;
        int rc = k ? cx_gguf_kv_int(r->g, k, &v) : CIRCUITS_OK;
        if (rc) return rc;
        if (v != 0) return refuse(r, name, counts[i].what);
    }
    for (size_t i = 0; i < CX_COUNT(present); i++)
        if (key(r, present[i].suffix, name, sizeof name)) return refuse(r, name, present[i].what);
    const cx_gguf_kv *k = key(r, "attention.causal", name, sizeof name);
    bool causal = true;
    if (k) {
        int rc = cx_gguf_kv_bool(r->g, k, &causal);
        if (rc) return rc;
    }
    if (!causal) return refuse(r, name, "bidirectional attention");
    return CIRCUITS_OK;
}

/* rope.scaling.type: none or linear (with rope.scaling.factor, or the older rope.scale_linear);
 * llama.cpp's llama3 scaling is a rope_freqs tensor, refused by the loader. */
static int read_rope_scaling(const reader *r, circuits_config *cfg)
{
    char name[128], fname[128];
    const cx_gguf_kv *t = key(r, "rope.scaling.type", name, sizeof name);
    const cx_gguf_kv *f = key(r, "rope.scaling.factor", fname, sizeof fname);
    if (!f) f = key(r, "rope.scale_linear", fname, sizeof fname);
    const char *s = "linear"; /* llama.cpp's default type: with no factor it scales nothing */
    size_t n = 6;
    int rc;
    if (t) TRY(cx_gguf_kv_string(r->g, t, &s, &n));
    bool linear = n == 6 && memcmp(s, "linear", 6) == 0;
    if (!(n == 4 && memcmp(s, "none", 4) == 0) && !linear)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: GGUF key '%s' = '%.*s' is not supported (none, linear)", r->g->path,
                       name, (int)(n > 32 ? 32 : n), s);
    double factor = 0.0;
    if (f) TRY(cx_gguf_kv_float(r->g, f, &factor));
    if (!isfinite(factor) || factor < 0 || factor > 1e6)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: GGUF key '%s' = %g is out of range", r->g->path, fname, factor);
    /* llama.cpp: a factor of 0 (or none) is 1, i.e. no scaling */
    if (linear && factor != 0.0 && factor != 1.0) {
        cfg->rope_scaling = CIRCUITS_ROPE_LINEAR;
        cfg->rope_factor = (float)factor;
    }
    return CIRCUITS_OK;
}

/* Fields of the rotary families: rotary_dim from rope.dimension_count (default the head),
 * rotary_base from rope.freq_base (llama.cpp's default 10000). */
static int read_rotary(const reader *r, circuits_config *cfg, bool must_be_whole_head)
{
    int rc;
    TRY(get_int(r, "rope.dimension_count", false, cfg->d_head, 2, cfg->d_head, &cfg->rotary_dim));
    if (cfg->rotary_dim % 2)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: GGUF key '%s.rope.dimension_count' = %d must be even", r->g->path,
                       r->arch, cfg->rotary_dim);
    if (must_be_whole_head && cfg->rotary_dim != cfg->d_head) /* llama.cpp refuses it for llama too */
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: GGUF key '%s.rope.dimension_count' = %d: a %s rotary dimension must "
                       "equal the head size %d", r->g->path, r->arch, cfg->rotary_dim, r->arch, cfg->d_head);
    TRY(get_float(r, "rope.freq_base", false, 10000.0, 1.0, false, &cfg->rotary_base));
    return read_rope_scaling(r, cfg);
}

/* Gemma 2 (llama.cpp's models/gemma2.cpp): soft-caps (defaults 50 and 30, as Gemma2Config's),
 * the sliding window (default 4096) on even layers, and the query scale llama.cpp uses. */
static int read_gemma2(const reader *r, circuits_config *cfg)
{
    int rc;
    TRY(get_float(r, "attn_logit_softcapping", false, 50.0, 0.0, true, &cfg->attn_scores_soft_cap));
    TRY(get_float(r, "final_logit_softcapping", false, 30.0, 0.0, true, &cfg->output_logits_soft_cap));
    TRY(get_int(r, "attention.sliding_window", false, 4096, 1, CX_MAX_DIM, &cfg->window_size));
    cfg->local_attn = CIRCUITS_LOCAL_ATTN_EVEN;
    cfg->norm_before_and_after = 1;
    /* GGUF has no query_pre_attn_scalar: llama.cpp scales by 1/sqrt(head size), except for the
     * 46-layer model (Gemma 2 27B), whose scalar is n_embd / n_head; Hugging Face's
     * query_pre_attn_scalar equals these in Google's released models */
    double q = cfg->n_layers == 46 ? (double)(cfg->d_model / cfg->n_heads) : (double)cfg->d_head;
    cfg->attn_scale = (float)sqrt(q);
    return CIRCUITS_OK;
}

int cx_config_from_gguf(const cx_gguf *g, const cx_st_set *set, circuits_config *cfg, cx_hf_extra *extra)
{
    int rc;
    memset(cfg, 0, sizeof *cfg);
    cfg->size = sizeof *cfg;
    memset(extra, 0, sizeof *extra);
    const cx_gguf_kv *ka = cx_gguf_find(g, "general.architecture");
    if (!ka) return cx_fail(CIRCUITS_E_CONFIG, "%s: GGUF key 'general.architecture' is missing", g->path);
    const char *s;
    size_t n;
    TRY(cx_gguf_kv_string(g, ka, &s, &n));
    const gguf_family *f = NULL;
    for (size_t i = 0; i < CX_COUNT(families); i++)
        if (strlen(families[i].arch) == n && memcmp(families[i].arch, s, n) == 0) f = &families[i];
    if (!f)
        return cx_fail(CIRCUITS_E_UNSUPPORTED,
                       "%s: GGUF architecture '%.*s' is not supported (llama, qwen2, gemma, gemma2, gptneox, gptj, gpt2)",
                       g->path, (int)(n > 64 ? 64 : n), s);
    reader r = {g, f->arch};
    cfg->format = f->format;
    TRY(refuse_unimplemented(&r));
    TRY(get_int(&r, "block_count", true, 0, 1, CX_MAX_LAYERS, &cfg->n_layers));
    TRY(get_int(&r, "embedding_length", true, 0, 1, CX_MAX_DIM, &cfg->d_model));
    TRY(get_int(&r, "context_length", true, 0, 1, CX_MAX_DIM, &cfg->n_ctx));
    TRY(get_int(&r, "feed_forward_length", true, 0, 1, CX_MAX_DIM, &cfg->d_mlp));
    TRY(get_int(&r, "attention.head_count", true, 0, 1, CX_MAX_DIM, &cfg->n_heads));
    TRY(get_int(&r, "attention.head_count_kv", false, cfg->n_heads, 1, cfg->n_heads, &cfg->n_key_value_heads));
    if (cfg->n_heads % cfg->n_key_value_heads)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: %s.attention.head_count = %d is not a multiple of head_count_kv = %d",
                       g->path, f->arch, cfg->n_heads, cfg->n_key_value_heads);
    char name[128];
    bool has_key_length = key(&r, "attention.key_length", name, sizeof name) != NULL;
    if (!has_key_length && cfg->d_model % cfg->n_heads)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: %s.embedding_length = %d is not a multiple of attention.head_count = %d "
                       "and there is no attention.key_length", g->path, f->arch, cfg->d_model, cfg->n_heads);
    TRY(get_int(&r, "attention.key_length", false, has_key_length ? 0 : cfg->d_model / cfg->n_heads, 1, CX_MAX_DIM,
                &cfg->d_head));
    int32_t dv;
    TRY(get_int(&r, "attention.value_length", false, cfg->d_head, 1, CX_MAX_DIM, &dv));
    if (dv != cfg->d_head)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: %s.attention.value_length = %d differs from key_length = %d", g->path,
                       f->arch, dv, cfg->d_head);
    float eps;
    TRY(get_float(&r, f->rms ? "attention.layer_norm_rms_epsilon" : "attention.layer_norm_epsilon", true, 0, 0.0, true,
                  &eps));
    cfg->eps = eps;
    cfg->normalization_type = f->rms ? CIRCUITS_NORM_RMS : CIRCUITS_NORM_LN;
    cfg->attn_scale = (float)sqrt((double)cfg->d_head);
    cfg->positional_embedding_type = CIRCUITS_POS_ROTARY;
    /* tied unless the file has its own output matrix (llama.cpp duplicates token_embd then) */
    extra->tie_word_embeddings = !cx_st_find(set, "output.weight");
    switch (f->format) {
    case CIRCUITS_FORMAT_HF_GPT2:
        cfg->positional_embedding_type = CIRCUITS_POS_STANDARD;
        cfg->act_fn = CIRCUITS_ACT_GELU_NEW;
        break;
    case CIRCUITS_FORMAT_HF_GPTJ:
        cfg->act_fn = CIRCUITS_ACT_GELU_NEW;
        cfg->parallel_attn_mlp = 1;
        cfg->rotary_adjacent_pairs = 1;
        TRY(read_rotary(&r, cfg, false));
        break;
    case CIRCUITS_FORMAT_HF_GPT_NEOX: {
        cfg->act_fn = CIRCUITS_ACT_GELU;
        const cx_gguf_kv *k = key(&r, "use_parallel_residual", name, sizeof name);
        bool par = true;
        if (k) TRY(cx_gguf_kv_bool(g, k, &par));
        cfg->parallel_attn_mlp = par;
        TRY(read_rotary(&r, cfg, false));
        break;
    }
    default: /* llama, qwen2, gemma, gemma2: gated MLP, RMSNorm, rotate-half rotary on the whole head */
        cfg->gated_mlp = 1;
        cfg->final_rms = 1;
        cfg->act_fn = f->format == CIRCUITS_FORMAT_HF_GEMMA || f->format == CIRCUITS_FORMAT_HF_GEMMA2
                          ? CIRCUITS_ACT_GELU_NEW
                          : CIRCUITS_ACT_SILU;
        TRY(read_rotary(&r, cfg, f->format == CIRCUITS_FORMAT_HF_LLAMA));
        if (f->format == CIRCUITS_FORMAT_HF_GEMMA2) TRY(read_gemma2(&r, cfg));
        break;
    }
    if (cfg->rope_scaling == CIRCUITS_ROPE_LINEAR && cfg->local_attn != CIRCUITS_LOCAL_ATTN_NONE)
        return cx_fail(CIRCUITS_E_UNSUPPORTED, "%s: linear rope scaling with sliding-window layers is not supported",
                       g->path);
    /* the vocabulary: token_embd.weight's rows ([n_vocab, n_embd] row-major) */
    const cx_st_tensor *e = cx_st_find(set, "token_embd.weight");
    if (!e || e->ndim != 2)
        return cx_fail(CIRCUITS_E_TENSOR_MISSING, "%s: no 2-D GGUF tensor 'token_embd.weight' to size the vocabulary",
                       g->path);
    if (e->shape[0] < 1 || e->shape[0] > CX_MAX_DIM)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: token_embd.weight has %lld rows (1 to %d)", g->path,
                       (long long)e->shape[0], CX_MAX_DIM);
    cfg->d_vocab = cfg->d_vocab_out = (int32_t)e->shape[0];
    int32_t nv;
    TRY(get_int(&r, "vocab_size", false, cfg->d_vocab, 1, INT32_MAX, &nv));
    if (nv != cfg->d_vocab)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: GGUF key '%s.vocab_size' = %d, but token_embd.weight has %d rows", g->path,
                       f->arch, nv, cfg->d_vocab);
    int64_t hd = (int64_t)cfg->n_heads * cfg->d_head;
    if (hd > CX_MAX_DIM)
        return cx_fail(CIRCUITS_E_CONFIG, "%s: n_heads * d_head = %lld is too large", g->path, (long long)hd);
    return CIRCUITS_OK;
}
