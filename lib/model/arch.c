/* The weight-name tables (arch.h). */
#include "arch.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define D_(x) CX_DIM_##x
/* the slot of a per-layer kind in cx_layer_weights, of another in circuits_model */
#define L_(field) offsetof(cx_layer_weights, field)
#define M_(field) offsetof(circuits_model, field)

const cx_weight_info cx_weight_kinds[CX_W_COUNT] = {
    [CX_W_EMBED] = {"embed.W_E", 2, {D_(VOCAB), D_(MODEL)}, CX_WHEN_ALWAYS, 0, M_(W_E)},
    [CX_W_POS_EMBED] = {"pos_embed.W_pos", 2, {D_(CTX), D_(MODEL)}, CX_WHEN_NOT_ROTARY, 0, M_(W_pos)},
    [CX_W_LN1_W] = {"blocks.%d.ln1.w", 1, {D_(MODEL)}, CX_WHEN_NORM_W, CX_WF_LAYER | CX_WF_LN, L_(ln1_w)},
    [CX_W_LN1_B] = {"blocks.%d.ln1.b", 1, {D_(MODEL)}, CX_WHEN_LN, CX_WF_LAYER | CX_WF_LN | CX_WF_BIAS, L_(ln1_b)},
    [CX_W_LN2_W] = {"blocks.%d.ln2.w", 1, {D_(MODEL)}, CX_WHEN_NORM_W_MLP, CX_WF_LAYER | CX_WF_LN, L_(ln2_w)},
    [CX_W_LN2_B] = {"blocks.%d.ln2.b", 1, {D_(MODEL)}, CX_WHEN_LN_MLP, CX_WF_LAYER | CX_WF_LN | CX_WF_BIAS, L_(ln2_b)},
    [CX_W_Q] = {"blocks.%d.attn.W_Q", 3, {D_(HEADS), D_(MODEL), D_(HEAD)}, CX_WHEN_ALWAYS,
                CX_WF_LAYER | CX_WF_HEADS | CX_WF_QKV, L_(W_Q)},
    [CX_W_O] = {"blocks.%d.attn.W_O", 3, {D_(HEADS), D_(HEAD), D_(MODEL)}, CX_WHEN_ALWAYS, CX_WF_LAYER | CX_WF_HEADS,
                L_(W_O)},
    [CX_B_Q] = {"blocks.%d.attn.b_Q", 2, {D_(HEADS), D_(HEAD)}, CX_WHEN_ALWAYS,
                CX_WF_LAYER | CX_WF_HEADS | CX_WF_BIAS, L_(b_Q)},
    [CX_B_O] = {"blocks.%d.attn.b_O", 1, {D_(MODEL)}, CX_WHEN_ALWAYS, CX_WF_LAYER | CX_WF_BIAS, L_(b_O)},
    [CX_W_K] = {"blocks.%d.attn.W_K", 3, {D_(KV_HEADS), D_(MODEL), D_(HEAD)}, CX_WHEN_ALWAYS,
                CX_WF_LAYER | CX_WF_HEADS | CX_WF_QKV | CX_WF_KV, L_(W_K)},
    [CX_W_V] = {"blocks.%d.attn.W_V", 3, {D_(KV_HEADS), D_(MODEL), D_(HEAD)}, CX_WHEN_ALWAYS,
                CX_WF_LAYER | CX_WF_HEADS | CX_WF_QKV | CX_WF_KV, L_(W_V)},
    [CX_B_K] = {"blocks.%d.attn.b_K", 2, {D_(KV_HEADS), D_(HEAD)}, CX_WHEN_ALWAYS,
                CX_WF_LAYER | CX_WF_HEADS | CX_WF_BIAS | CX_WF_KV, L_(b_K)},
    [CX_B_V] = {"blocks.%d.attn.b_V", 2, {D_(KV_HEADS), D_(HEAD)}, CX_WHEN_ALWAYS,
                CX_WF_LAYER | CX_WF_HEADS | CX_WF_BIAS | CX_WF_KV, L_(b_V)},
    [CX_W_IN] = {"blocks.%d.mlp.W_in", 2, {D_(MODEL), D_(MLP)}, CX_WHEN_MLP, CX_WF_LAYER, L_(W_in)},
    [CX_W_GATE] = {"blocks.%d.mlp.W_gate", 2, {D_(MODEL), D_(MLP)}, CX_WHEN_GATED, CX_WF_LAYER, L_(W_gate)},
    [CX_B_IN] = {"blocks.%d.mlp.b_in", 1, {D_(MLP)}, CX_WHEN_MLP, CX_WF_LAYER | CX_WF_BIAS, L_(b_in)},
    [CX_W_OUT] = {"blocks.%d.mlp.W_out", 2, {D_(MLP), D_(MODEL)}, CX_WHEN_MLP, CX_WF_LAYER, L_(W_out)},
    [CX_B_OUT] = {"blocks.%d.mlp.b_out", 1, {D_(MODEL)}, CX_WHEN_MLP, CX_WF_LAYER | CX_WF_BIAS, L_(b_out)},
    [CX_MLP_LN_W] = {"blocks.%d.mlp.ln.w", 1, {D_(MLP)}, CX_WHEN_SOLU_LN, CX_WF_LAYER | CX_WF_LN, L_(mlp_ln_w)},
    [CX_MLP_LN_B] = {"blocks.%d.mlp.ln.b", 1, {D_(MLP)}, CX_WHEN_SOLU_LN, CX_WF_LAYER | CX_WF_LN | CX_WF_BIAS,
                     L_(mlp_ln_b)},
    [CX_LN1_POST_W] = {"blocks.%d.ln1_post.w", 1, {D_(MODEL)}, CX_WHEN_POST_NORM_W, CX_WF_LAYER, L_(ln1_post_w)},
    [CX_LN2_POST_W] = {"blocks.%d.ln2_post.w", 1, {D_(MODEL)}, CX_WHEN_POST_NORM_W_MLP, CX_WF_LAYER,
                       L_(ln2_post_w)},
    [CX_LN_FINAL_W] = {"ln_final.w", 1, {D_(MODEL)}, CX_WHEN_NORM_W, CX_WF_LN, M_(ln_final_w)},
    [CX_LN_FINAL_B] = {"ln_final.b", 1, {D_(MODEL)}, CX_WHEN_LN_FINAL_B, CX_WF_LN | CX_WF_BIAS, M_(ln_final_b)},
    [CX_W_U] = {"unembed.W_U", 2, {D_(MODEL), D_(VOCAB_OUT)}, CX_WHEN_ALWAYS, 0, M_(W_U)},
    [CX_B_U] = {"unembed.b_U", 1, {D_(VOCAB_OUT)}, CX_WHEN_ALWAYS, CX_WF_BIAS, M_(b_U)},
};

const char *cx_dim_name(cx_dim d)
{
    static const char *const names[CX_DIM_COUNT] = {"d_vocab", "d_vocab_out", "n_ctx", "d_model",
                                                    "n_heads", "n_key_value_heads", "d_head", "d_mlp"};
    return (unsigned)d < CX_DIM_COUNT ? names[d] : "?";
}

int64_t cx_dim_size(const circuits_config *c, cx_dim d)
{
    switch (d) {
    case CX_DIM_VOCAB: return c->d_vocab;
    case CX_DIM_VOCAB_OUT: return c->d_vocab_out;
    case CX_DIM_CTX: return c->n_ctx;
    case CX_DIM_MODEL: return c->d_model;
    case CX_DIM_HEADS: return c->n_heads;
    case CX_DIM_KV_HEADS: return c->n_key_value_heads;
    case CX_DIM_HEAD: return c->d_head;
    case CX_DIM_MLP: return c->d_mlp;
    default: return 0;
    }
}

const char *cx_when_text(cx_when w)
{
    static const char *const text[CX_WHEN_COUNT] = {"always", "normalization `LN`", "`LN` and not attn_only",
                                                    "not attn_only", "act_fn `solu_ln` with `LN`",
                                                    "normalization `LN` or `RMS`",
                                                    "`LN` or `RMS`, and not attn_only",
                                                    "gated_mlp and not attn_only",
                                                    "use_normalization_before_and_after",
                                                    "use_normalization_before_and_after, not attn_only",
                                                    "positional_embedding_type not `rotary`",
                                                    "normalization `LN` and not final_rms"};
    return (unsigned)w < CX_WHEN_COUNT ? text[w] : "?";
}

bool cx_has_weight(const circuits_config *c, cx_weight_kind k)
{
    bool ln = c->normalization_type == CIRCUITS_NORM_LN, rms = c->normalization_type == CIRCUITS_NORM_RMS;
    switch (cx_weight_kinds[k].when) {
    case CX_WHEN_ALWAYS: return true;
    case CX_WHEN_LN: return ln;
    case CX_WHEN_LN_MLP: return ln && !c->attn_only;
    case CX_WHEN_MLP: return !c->attn_only;
    case CX_WHEN_SOLU_LN: return !c->attn_only && ln && c->act_fn == CIRCUITS_ACT_SOLU_LN;
    case CX_WHEN_NORM_W: return ln || rms;
    case CX_WHEN_NORM_W_MLP: return (ln || rms) && !c->attn_only;
    case CX_WHEN_GATED: return c->gated_mlp && !c->attn_only;
    /* TransformerLens's ln1_post / ln2_post are RMSNorms with a weight under RMS and RMSPre alike
     * (fold_ln keeps them); config.c refuses the flag with other normalizations */
    case CX_WHEN_POST_NORM_W: return c->norm_before_and_after != 0;
    case CX_WHEN_POST_NORM_W_MLP: return c->norm_before_and_after && !c->attn_only;
    case CX_WHEN_LN_FINAL_B: return ln && !c->final_rms;
    case CX_WHEN_NOT_ROTARY: return c->positional_embedding_type != CIRCUITS_POS_ROTARY;
    default: return false;
    }
}

int cx_weight_format(char *buf, size_t n, const char *fmt, int layer)
{
    if (!strstr(fmt, "%d")) return snprintf(buf, n, "%s", fmt);
    return snprintf(buf, n, fmt, layer);
}

static size_t add(const circuits_config *c, cx_weight_entry *out, size_t n, cx_weight_kind k, int layer)
{
    if (!cx_has_weight(c, k)) return n;
    if (out) {
        const cx_weight_info *w = &cx_weight_kinds[k];
        cx_weight_entry *e = &out[n];
        memset(e, 0, sizeof *e);
        e->kind = k;
        e->layer = layer;
        cx_weight_format(e->name, sizeof e->name, w->name, layer);
        if ((w->flags & CX_WF_KV) && c->n_key_value_heads != c->n_heads) { /* attn.W_K -> attn._W_K */
            char *dot = strrchr(e->name, '.');
            memmove(dot + 2, dot + 1, strlen(dot + 1) + 1);
            dot[1] = '_';
        }
        e->ndim = w->ndim;
        for (int i = 0; i < w->ndim; i++) e->shape[i] = cx_dim_size(c, w->shape[i]);
    }
    return n + 1;
}

size_t cx_weight_list(const circuits_config *c, cx_weight_entry *out)
{
    size_t n = 0;
    int k = 0, first, end;
    for (; k < CX_W_COUNT && !(cx_weight_kinds[k].flags & CX_WF_LAYER); k++) n = add(c, out, n, k, -1);
    for (first = k; k < CX_W_COUNT && (cx_weight_kinds[k].flags & CX_WF_LAYER); k++) {}
    end = k;
    for (int l = 0; l < c->n_layers; l++)
        for (k = first; k < end; k++) n = add(c, out, n, k, l);
    for (k = end; k < CX_W_COUNT; k++) n = add(c, out, n, k, -1);
    return n;
}

/* ---- architectures ---- */

/* Hugging Face GPT2LMHeadModel (Conv1D weights stored [in, out]), as TransformerLens's
 * convert_gpt2_weights maps it. */
static const cx_weight_source gpt2_sources[CX_W_COUNT] = {
    [CX_W_EMBED] = {"transformer.wte.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_POS_EMBED] = {"transformer.wpe.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_LN1_W] = {"transformer.h.%d.ln_1.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_LN1_B] = {"transformer.h.%d.ln_1.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_LN2_W] = {"transformer.h.%d.ln_2.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_LN2_B] = {"transformer.h.%d.ln_2.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_Q] = {"transformer.h.%d.attn.c_attn.weight", CX_MAP_QKV, 0, NULL},
    [CX_W_O] = {"transformer.h.%d.attn.c_proj.weight", CX_MAP_HEADS, 0, NULL},
    [CX_B_Q] = {"transformer.h.%d.attn.c_attn.bias", CX_MAP_QKV, 0, NULL},
    [CX_B_O] = {"transformer.h.%d.attn.c_proj.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_K] = {"transformer.h.%d.attn.c_attn.weight", CX_MAP_QKV, 1, NULL},
    [CX_W_V] = {"transformer.h.%d.attn.c_attn.weight", CX_MAP_QKV, 2, NULL},
    [CX_B_K] = {"transformer.h.%d.attn.c_attn.bias", CX_MAP_QKV, 1, NULL},
    [CX_B_V] = {"transformer.h.%d.attn.c_attn.bias", CX_MAP_QKV, 2, NULL},
    [CX_W_IN] = {"transformer.h.%d.mlp.c_fc.weight", CX_MAP_SAME, 0, NULL},
    [CX_B_IN] = {"transformer.h.%d.mlp.c_fc.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_OUT] = {"transformer.h.%d.mlp.c_proj.weight", CX_MAP_SAME, 0, NULL},
    [CX_B_OUT] = {"transformer.h.%d.mlp.c_proj.bias", CX_MAP_SAME, 0, NULL},
    [CX_MLP_LN_W] = {NULL, CX_MAP_NEVER, 0, NULL}, /* solu_ln: refused in a GPT-2 config.json */
    [CX_MLP_LN_B] = {NULL, CX_MAP_NEVER, 0, NULL},
    [CX_W_GATE] = {NULL, CX_MAP_NEVER, 0, NULL},
    [CX_LN1_POST_W] = {NULL, CX_MAP_NEVER, 0, NULL},
    [CX_LN2_POST_W] = {NULL, CX_MAP_NEVER, 0, NULL},
    [CX_LN_FINAL_W] = {"transformer.ln_f.weight", CX_MAP_SAME, 0, NULL},
    [CX_LN_FINAL_B] = {"transformer.ln_f.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_U] = {"lm_head.weight", CX_MAP_TRANSPOSE, 0, "transformer.wte.weight"},
    [CX_B_U] = {NULL, CX_MAP_ABSENT, 0, NULL},
};

/* The causal-mask buffers h.N.attn.bias / attn.masked_bias of older GPT-2 saves. */
static bool gpt2_ignorable(const char *name)
{
    const char *p = strstr(name, ".attn.");
    return p && (strcmp(p, ".attn.bias") == 0 || strcmp(p, ".attn.masked_bias") == 0);
}

/* Buffers of a TransformerLens state dict saved with them. */
static bool tl_ignorable(const char *name)
{
    return strstr(name, ".IGNORE") || strstr(name, ".mask") || strstr(name, "rotary_");
}

#define NEVER_ {NULL, CX_MAP_NEVER, 0, NULL}
#define ABSENT_ {NULL, CX_MAP_ABSENT, 0, NULL}

/* GPTNeoXForCausalLM (Pythia), as TransformerLens's convert_neox_weights maps it: the fused
 * query_key_value [(head qkv d_head), d_model] is split "(i qkv h) m -> qkv i m h"; every
 * nn.Linear is stored [out, in]. Biases of attention_bias false: the config's absent bits. */
static const cx_weight_source neox_sources[CX_W_COUNT] = {
    [CX_W_EMBED] = {"gpt_neox.embed_in.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_POS_EMBED] = NEVER_,
    [CX_W_LN1_W] = {"gpt_neox.layers.%d.input_layernorm.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_LN1_B] = {"gpt_neox.layers.%d.input_layernorm.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_LN2_W] = {"gpt_neox.layers.%d.post_attention_layernorm.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_LN2_B] = {"gpt_neox.layers.%d.post_attention_layernorm.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_Q] = {"gpt_neox.layers.%d.attention.query_key_value.weight", CX_MAP_NEOX_QKV, 0, NULL},
    [CX_W_K] = {"gpt_neox.layers.%d.attention.query_key_value.weight", CX_MAP_NEOX_QKV, 1, NULL},
    [CX_W_V] = {"gpt_neox.layers.%d.attention.query_key_value.weight", CX_MAP_NEOX_QKV, 2, NULL},
    [CX_B_Q] = {"gpt_neox.layers.%d.attention.query_key_value.bias", CX_MAP_NEOX_QKV, 0, NULL},
    [CX_B_K] = {"gpt_neox.layers.%d.attention.query_key_value.bias", CX_MAP_NEOX_QKV, 1, NULL},
    [CX_B_V] = {"gpt_neox.layers.%d.attention.query_key_value.bias", CX_MAP_NEOX_QKV, 2, NULL},
    [CX_W_O] = {"gpt_neox.layers.%d.attention.dense.weight", CX_MAP_OUT_HEADS, 0, NULL},
    [CX_B_O] = {"gpt_neox.layers.%d.attention.dense.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_IN] = {"gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", CX_MAP_TRANSPOSE, 0, NULL},
    [CX_B_IN] = {"gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_OUT] = {"gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", CX_MAP_TRANSPOSE, 0, NULL},
    [CX_B_OUT] = {"gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_GATE] = NEVER_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,
    [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,
    [CX_LN_FINAL_W] = {"gpt_neox.final_layer_norm.weight", CX_MAP_SAME, 0, NULL},
    [CX_LN_FINAL_B] = {"gpt_neox.final_layer_norm.bias", CX_MAP_SAME, 0, NULL},
    /* Pythia's files say embed_out; transformers >= 5.14 names the module lm_head */
    [CX_W_U] = {"embed_out.weight", CX_MAP_TRANSPOSE, 0, "gpt_neox.embed_in.weight", "lm_head.weight"},
    [CX_B_U] = ABSENT_,
};

/* GPTJForCausalLM (convert_gptj_weights): no attention biases; one ln_1 per block, which
 * TransformerLens's parallel block reads as both ln1 and ln2 (ln2 = a copy of ln1); lm_head has a
 * bias. */
static const cx_weight_source gptj_sources[CX_W_COUNT] = {
    [CX_W_EMBED] = {"transformer.wte.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_POS_EMBED] = NEVER_,
    [CX_W_LN1_W] = {"transformer.h.%d.ln_1.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_LN1_B] = {"transformer.h.%d.ln_1.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_LN2_W] = {"transformer.h.%d.ln_1.weight", CX_MAP_SAME, 0, NULL},
    [CX_W_LN2_B] = {"transformer.h.%d.ln_1.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_Q] = {"transformer.h.%d.attn.q_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},
    [CX_W_K] = {"transformer.h.%d.attn.k_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},
    [CX_W_V] = {"transformer.h.%d.attn.v_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},
    [CX_B_Q] = ABSENT_, [CX_B_K] = ABSENT_, [CX_B_V] = ABSENT_,
    [CX_W_O] = {"transformer.h.%d.attn.out_proj.weight", CX_MAP_OUT_HEADS, 0, NULL},
    [CX_B_O] = ABSENT_,
    [CX_W_IN] = {"transformer.h.%d.mlp.fc_in.weight", CX_MAP_TRANSPOSE, 0, NULL},
    [CX_B_IN] = {"transformer.h.%d.mlp.fc_in.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_OUT] = {"transformer.h.%d.mlp.fc_out.weight", CX_MAP_TRANSPOSE, 0, NULL},
    [CX_B_OUT] = {"transformer.h.%d.mlp.fc_out.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_GATE] = NEVER_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,
    [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,
    [CX_LN_FINAL_W] = {"transformer.ln_f.weight", CX_MAP_SAME, 0, NULL},
    [CX_LN_FINAL_B] = {"transformer.ln_f.bias", CX_MAP_SAME, 0, NULL},
    [CX_W_U] = {"lm_head.weight", CX_MAP_TRANSPOSE, 0, "transformer.wte.weight"},
    [CX_B_U] = {"lm_head.bias", CX_MAP_SAME, 0, NULL},
};

/* The q/k/v/o_proj + gate/up/down_proj families (convert_llama_weights, _mistral_, _qwen2_):
 * q_proj [(n h), m] -> [n, m, h] (K/V with n_key_value_heads), o_proj [m, (n h)] -> [n, h, m],
 * the MLP transposed. Which biases exist: Llama's attention_bias (the config's absent bits),
 * Qwen2 q/k/v only, Mistral none. */
#define LLAMA_COMMON_                                                                                  \
    [CX_W_EMBED] = {"model.embed_tokens.weight", CX_MAP_SAME, 0, NULL},                               \
    [CX_W_POS_EMBED] = NEVER_,                                                                         \
    [CX_W_LN1_W] = {"model.layers.%d.input_layernorm.weight", CX_MAP_SAME, 0, NULL},                  \
    [CX_W_LN1_B] = NEVER_, [CX_W_LN2_B] = NEVER_,                                                      \
    [CX_W_LN2_W] = {"model.layers.%d.post_attention_layernorm.weight", CX_MAP_SAME, 0, NULL},         \
    [CX_W_Q] = {"model.layers.%d.self_attn.q_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},               \
    [CX_W_K] = {"model.layers.%d.self_attn.k_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},               \
    [CX_W_V] = {"model.layers.%d.self_attn.v_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},               \
    [CX_W_O] = {"model.layers.%d.self_attn.o_proj.weight", CX_MAP_OUT_HEADS, 0, NULL},                \
    [CX_W_IN] = {"model.layers.%d.mlp.up_proj.weight", CX_MAP_TRANSPOSE, 0, NULL},                    \
    [CX_W_GATE] = {"model.layers.%d.mlp.gate_proj.weight", CX_MAP_TRANSPOSE, 0, NULL},                \
    [CX_W_OUT] = {"model.layers.%d.mlp.down_proj.weight", CX_MAP_TRANSPOSE, 0, NULL},                 \
    [CX_B_IN] = ABSENT_, [CX_B_OUT] = ABSENT_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,        \
    [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,                                                \
    [CX_LN_FINAL_W] = {"model.norm.weight", CX_MAP_SAME, 0, NULL},                                    \
    [CX_LN_FINAL_B] = NEVER_,                                                                          \
    [CX_W_U] = {"lm_head.weight", CX_MAP_TRANSPOSE, 0, "model.embed_tokens.weight"},                  \
    [CX_B_U] = ABSENT_

static const cx_weight_source llama_sources[CX_W_COUNT] = {
    LLAMA_COMMON_,
    [CX_B_Q] = {"model.layers.%d.self_attn.q_proj.bias", CX_MAP_BIAS_HEADS, 0, NULL},
    [CX_B_K] = {"model.layers.%d.self_attn.k_proj.bias", CX_MAP_BIAS_HEADS, 0, NULL},
    [CX_B_V] = {"model.layers.%d.self_attn.v_proj.bias", CX_MAP_BIAS_HEADS, 0, NULL},
    [CX_B_O] = {"model.layers.%d.self_attn.o_proj.bias", CX_MAP_SAME, 0, NULL},
};

static const cx_weight_source mistral_sources[CX_W_COUNT] = {
    LLAMA_COMMON_, [CX_B_Q] = ABSENT_, [CX_B_K] = ABSENT_, [CX_B_V] = ABSENT_, [CX_B_O] = ABSENT_,
};

static const cx_weight_source qwen2_sources[CX_W_COUNT] = {
    LLAMA_COMMON_,
    [CX_B_Q] = {"model.layers.%d.self_attn.q_proj.bias", CX_MAP_BIAS_HEADS, 0, NULL},
    [CX_B_K] = {"model.layers.%d.self_attn.k_proj.bias", CX_MAP_BIAS_HEADS, 0, NULL},
    [CX_B_V] = {"model.layers.%d.self_attn.v_proj.bias", CX_MAP_BIAS_HEADS, 0, NULL},
    [CX_B_O] = ABSENT_,
};

/* Gemma and Gemma 2 (convert_gemma_weights): RMSNorm weights stored as offsets from 1 (w + 1,
 * in fp32), the embedding scaled by sqrt(d_model) (W_U, tied to the unscaled embedding, is not);
 * no biases. Gemma 2's post_attention_layernorm normalizes the attention output (ln1_post) and
 * pre/post_feedforward_layernorm wrap the MLP; Gemma's post_attention_layernorm is ln2. */
#define GEMMA_COMMON_                                                                                  \
    [CX_W_EMBED] = {"model.embed_tokens.weight", CX_MAP_EMBED_SCALED, 0, NULL},                       \
    [CX_W_POS_EMBED] = NEVER_,                                                                         \
    [CX_W_LN1_W] = {"model.layers.%d.input_layernorm.weight", CX_MAP_NORM_PLUS1, 0, NULL},            \
    [CX_W_LN1_B] = NEVER_, [CX_W_LN2_B] = NEVER_,                                                      \
    [CX_W_Q] = {"model.layers.%d.self_attn.q_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},               \
    [CX_W_K] = {"model.layers.%d.self_attn.k_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},               \
    [CX_W_V] = {"model.layers.%d.self_attn.v_proj.weight", CX_MAP_PROJ_HEADS, 0, NULL},               \
    [CX_W_O] = {"model.layers.%d.self_attn.o_proj.weight", CX_MAP_OUT_HEADS, 0, NULL},                \
    [CX_B_Q] = ABSENT_, [CX_B_K] = ABSENT_, [CX_B_V] = ABSENT_, [CX_B_O] = ABSENT_,                    \
    [CX_W_IN] = {"model.layers.%d.mlp.up_proj.weight", CX_MAP_TRANSPOSE, 0, NULL},                    \
    [CX_W_GATE] = {"model.layers.%d.mlp.gate_proj.weight", CX_MAP_TRANSPOSE, 0, NULL},                \
    [CX_W_OUT] = {"model.layers.%d.mlp.down_proj.weight", CX_MAP_TRANSPOSE, 0, NULL},                 \
    [CX_B_IN] = ABSENT_, [CX_B_OUT] = ABSENT_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,        \
    [CX_LN_FINAL_W] = {"model.norm.weight", CX_MAP_NORM_PLUS1, 0, NULL},                              \
    [CX_LN_FINAL_B] = NEVER_,                                                                          \
    [CX_W_U] = {"lm_head.weight", CX_MAP_TRANSPOSE, 0, "model.embed_tokens.weight"},                  \
    [CX_B_U] = ABSENT_

static const cx_weight_source gemma_sources[CX_W_COUNT] = {
    GEMMA_COMMON_,
    [CX_W_LN2_W] = {"model.layers.%d.post_attention_layernorm.weight", CX_MAP_NORM_PLUS1, 0, NULL},
    [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,
};

static const cx_weight_source gemma2_sources[CX_W_COUNT] = {
    GEMMA_COMMON_,
    [CX_W_LN2_W] = {"model.layers.%d.pre_feedforward_layernorm.weight", CX_MAP_NORM_PLUS1, 0, NULL},
    [CX_LN1_POST_W] = {"model.layers.%d.post_attention_layernorm.weight", CX_MAP_NORM_PLUS1, 0, NULL},
    [CX_LN2_POST_W] = {"model.layers.%d.post_feedforward_layernorm.weight", CX_MAP_NORM_PLUS1, 0, NULL},
};

/* The rotary inverse-frequency buffers some saves carry (rotary_emb.inv_freq), and GPT-2-style
 * causal-mask buffers (attn.bias / masked_bias) of older GPT-NeoX / GPT-J saves. */
static bool hf_ignorable(const char *name)
{
    const char *dot = strrchr(name, '.');
    return strstr(name, "rotary_emb.") || (dot && strcmp(dot, ".masked_bias") == 0) ||
           (dot && strcmp(dot, ".bias") == 0 && dot - name >= 5 &&
            (strncmp(dot - 5, ".attn", 5) == 0 || (dot - name >= 10 && strncmp(dot - 10, ".attention", 10) == 0)));
}

static const cx_arch arch_gpt2 = {CIRCUITS_FORMAT_HF_GPT2, "GPT-2", "transformer.", gpt2_sources, gpt2_ignorable};
static const cx_arch arch_tl = {CIRCUITS_FORMAT_TRANSFORMERLENS, "TransformerLens", "", NULL, tl_ignorable};
static const cx_arch hf_archs[] = {
    {CIRCUITS_FORMAT_HF_GPT_NEOX, "GPT-NeoX", "gpt_neox.", neox_sources, hf_ignorable},
    {CIRCUITS_FORMAT_HF_GPTJ, "GPT-J", "transformer.", gptj_sources, hf_ignorable},
    {CIRCUITS_FORMAT_HF_LLAMA, "Llama", "model.", llama_sources, hf_ignorable},
    {CIRCUITS_FORMAT_HF_MISTRAL, "Mistral", "model.", mistral_sources, hf_ignorable},
    {CIRCUITS_FORMAT_HF_QWEN2, "Qwen2", "model.", qwen2_sources, hf_ignorable},
    {CIRCUITS_FORMAT_HF_GEMMA, "Gemma", "model.", gemma_sources, hf_ignorable},
    {CIRCUITS_FORMAT_HF_GEMMA2, "Gemma 2", "model.", gemma2_sources, hf_ignorable},
};

const cx_arch *cx_arch_of(const circuits_config *c)
{
    if (c->format == CIRCUITS_FORMAT_HF_GPT2) return &arch_gpt2;
    for (size_t i = 0; i < sizeof hf_archs / sizeof hf_archs[0]; i++)
        if (hf_archs[i].format == c->format) return &hf_archs[i];
    return &arch_tl;
}

const cx_arch *cx_arch_at(size_t i)
{
    if (i == 0) return &arch_gpt2;
    return i - 1 < sizeof hf_archs / sizeof hf_archs[0] ? &hf_archs[i - 1] : NULL;
}

/* ---- GGUF: llama.cpp's tensor names (gguf-py/gguf/constants.py TENSOR_NAMES, as its
 * convert_hf_to_gguf.py maps each Hugging Face tensor: gguf-py/gguf/tensor_mapping.py), and what
 * its converters did to the tensors (the conversion folder). Every nn.Linear stays [out, in]. ---- */

#define G_(name, map) {name, map, 0, NULL}
#define GGUF_OUTPUT_ {"output.weight", CX_MAP_TRANSPOSE, 0, "token_embd.weight"}

/* llama (Llama, Mistral: LlamaModel) and qwen2 (Qwen2Model): LlamaModel.permute reorders the
 * rows of each q/k head (weights and biases) so that rotate-half pairs are adjacent, which the
 * views undo; Qwen2 is not permuted (llama.cpp rotates its halves, NEOX-style). */
#define GGUF_LLAMA_COMMON_                                                                             \
    [CX_W_EMBED] = G_("token_embd.weight", CX_MAP_SAME),                                               \
    [CX_W_POS_EMBED] = NEVER_,                                                                         \
    [CX_W_LN1_W] = G_("blk.%d.attn_norm.weight", CX_MAP_SAME),                                        \
    [CX_W_LN1_B] = NEVER_, [CX_W_LN2_B] = NEVER_,                                                      \
    [CX_W_LN2_W] = G_("blk.%d.ffn_norm.weight", CX_MAP_SAME),                                         \
    [CX_W_V] = G_("blk.%d.attn_v.weight", CX_MAP_PROJ_HEADS),                                         \
    [CX_B_V] = G_("blk.%d.attn_v.bias", CX_MAP_BIAS_HEADS),                                           \
    [CX_W_O] = G_("blk.%d.attn_output.weight", CX_MAP_OUT_HEADS),                                     \
    [CX_W_IN] = G_("blk.%d.ffn_up.weight", CX_MAP_TRANSPOSE),                                         \
    [CX_W_GATE] = G_("blk.%d.ffn_gate.weight", CX_MAP_TRANSPOSE),                                     \
    [CX_W_OUT] = G_("blk.%d.ffn_down.weight", CX_MAP_TRANSPOSE),                                      \
    [CX_B_IN] = ABSENT_, [CX_B_OUT] = ABSENT_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,        \
    [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,                                                \
    [CX_LN_FINAL_W] = G_("output_norm.weight", CX_MAP_SAME),                                           \
    [CX_LN_FINAL_B] = NEVER_,                                                                          \
    [CX_W_U] = GGUF_OUTPUT_,                                                                           \
    [CX_B_U] = ABSENT_

static const cx_weight_source gguf_llama_sources[CX_W_COUNT] = {
    GGUF_LLAMA_COMMON_,
    [CX_W_Q] = G_("blk.%d.attn_q.weight", CX_MAP_PROJ_HEADS_PERMUTED),
    [CX_W_K] = G_("blk.%d.attn_k.weight", CX_MAP_PROJ_HEADS_PERMUTED),
    [CX_B_Q] = G_("blk.%d.attn_q.bias", CX_MAP_BIAS_HEADS_PERMUTED),
    [CX_B_K] = G_("blk.%d.attn_k.bias", CX_MAP_BIAS_HEADS_PERMUTED),
    [CX_B_O] = G_("blk.%d.attn_output.bias", CX_MAP_SAME),
};

static const cx_weight_source gguf_qwen2_sources[CX_W_COUNT] = {
    GGUF_LLAMA_COMMON_,
    [CX_W_Q] = G_("blk.%d.attn_q.weight", CX_MAP_PROJ_HEADS),
    [CX_W_K] = G_("blk.%d.attn_k.weight", CX_MAP_PROJ_HEADS),
    [CX_B_Q] = G_("blk.%d.attn_q.bias", CX_MAP_BIAS_HEADS),
    [CX_B_K] = G_("blk.%d.attn_k.bias", CX_MAP_BIAS_HEADS),
    [CX_B_O] = ABSENT_,
};

/* gemma, gemma2 (GemmaModel, Gemma2Model): every norm weight stored with the 1 already added
 * (data_torch + 1), so read as is; the embedding unscaled (llama.cpp scales it at run time, as
 * TransformerLens's W_E does once, in fp32); no output.weight (tied). Gemma 2's
 * pre_feedforward_layernorm is ffn_norm, post_attention_layernorm post_attention_norm. */
#define GGUF_GEMMA_COMMON_                                                                             \
    [CX_W_EMBED] = G_("token_embd.weight", CX_MAP_EMBED_SCALED),                                       \
    [CX_W_POS_EMBED] = NEVER_,                                                                         \
    [CX_W_LN1_W] = G_("blk.%d.attn_norm.weight", CX_MAP_SAME),                                        \
    [CX_W_LN1_B] = NEVER_, [CX_W_LN2_B] = NEVER_,                                                      \
    [CX_W_LN2_W] = G_("blk.%d.ffn_norm.weight", CX_MAP_SAME),                                         \
    [CX_W_Q] = G_("blk.%d.attn_q.weight", CX_MAP_PROJ_HEADS),                                         \
    [CX_W_K] = G_("blk.%d.attn_k.weight", CX_MAP_PROJ_HEADS),                                         \
    [CX_W_V] = G_("blk.%d.attn_v.weight", CX_MAP_PROJ_HEADS),                                         \
    [CX_W_O] = G_("blk.%d.attn_output.weight", CX_MAP_OUT_HEADS),                                     \
    [CX_B_Q] = ABSENT_, [CX_B_K] = ABSENT_, [CX_B_V] = ABSENT_, [CX_B_O] = ABSENT_,                    \
    [CX_W_IN] = G_("blk.%d.ffn_up.weight", CX_MAP_TRANSPOSE),                                         \
    [CX_W_GATE] = G_("blk.%d.ffn_gate.weight", CX_MAP_TRANSPOSE),                                     \
    [CX_W_OUT] = G_("blk.%d.ffn_down.weight", CX_MAP_TRANSPOSE),                                      \
    [CX_B_IN] = ABSENT_, [CX_B_OUT] = ABSENT_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,        \
    [CX_LN_FINAL_W] = G_("output_norm.weight", CX_MAP_SAME),                                           \
    [CX_LN_FINAL_B] = NEVER_,                                                                          \
    [CX_W_U] = GGUF_OUTPUT_,                                                                           \
    [CX_B_U] = ABSENT_

static const cx_weight_source gguf_gemma_sources[CX_W_COUNT] = {
    GGUF_GEMMA_COMMON_, [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,
};

static const cx_weight_source gguf_gemma2_sources[CX_W_COUNT] = {
    GGUF_GEMMA_COMMON_,
    [CX_LN1_POST_W] = G_("blk.%d.post_attention_norm.weight", CX_MAP_SAME),
    [CX_LN2_POST_W] = G_("blk.%d.post_ffw_norm.weight", CX_MAP_SAME),
};

/* gptneox (GPTNeoXModel): query_key_value's interleaved (head, q/k/v) rows regrouped into
 * [Q; K; V] (each head-major) as attn_qkv. */
static const cx_weight_source gguf_neox_sources[CX_W_COUNT] = {
    [CX_W_EMBED] = G_("token_embd.weight", CX_MAP_SAME),
    [CX_W_POS_EMBED] = NEVER_,
    [CX_W_LN1_W] = G_("blk.%d.attn_norm.weight", CX_MAP_SAME),
    [CX_W_LN1_B] = G_("blk.%d.attn_norm.bias", CX_MAP_SAME),
    [CX_W_LN2_W] = G_("blk.%d.ffn_norm.weight", CX_MAP_SAME),
    [CX_W_LN2_B] = G_("blk.%d.ffn_norm.bias", CX_MAP_SAME),
    [CX_W_Q] = {"blk.%d.attn_qkv.weight", CX_MAP_FUSED_PROJ_HEADS, 0, NULL},
    [CX_W_K] = {"blk.%d.attn_qkv.weight", CX_MAP_FUSED_PROJ_HEADS, 1, NULL},
    [CX_W_V] = {"blk.%d.attn_qkv.weight", CX_MAP_FUSED_PROJ_HEADS, 2, NULL},
    [CX_B_Q] = {"blk.%d.attn_qkv.bias", CX_MAP_FUSED_PROJ_HEADS, 0, NULL},
    [CX_B_K] = {"blk.%d.attn_qkv.bias", CX_MAP_FUSED_PROJ_HEADS, 1, NULL},
    [CX_B_V] = {"blk.%d.attn_qkv.bias", CX_MAP_FUSED_PROJ_HEADS, 2, NULL},
    [CX_W_O] = G_("blk.%d.attn_output.weight", CX_MAP_OUT_HEADS),
    [CX_B_O] = G_("blk.%d.attn_output.bias", CX_MAP_SAME),
    [CX_W_IN] = G_("blk.%d.ffn_up.weight", CX_MAP_TRANSPOSE),
    [CX_B_IN] = G_("blk.%d.ffn_up.bias", CX_MAP_SAME),
    [CX_W_OUT] = G_("blk.%d.ffn_down.weight", CX_MAP_TRANSPOSE),
    [CX_B_OUT] = G_("blk.%d.ffn_down.bias", CX_MAP_SAME),
    [CX_W_GATE] = NEVER_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,
    [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,
    [CX_LN_FINAL_W] = G_("output_norm.weight", CX_MAP_SAME),
    [CX_LN_FINAL_B] = G_("output_norm.bias", CX_MAP_SAME),
    [CX_W_U] = GGUF_OUTPUT_,
    [CX_B_U] = ABSENT_,
};

/* gptj (llama.cpp has no GPT-J converter; the gguf package's tensor_mapping names): one
 * attn_norm read as ln1 and ln2, no attention biases, output with a bias. */
static const cx_weight_source gguf_gptj_sources[CX_W_COUNT] = {
    [CX_W_EMBED] = G_("token_embd.weight", CX_MAP_SAME),
    [CX_W_POS_EMBED] = NEVER_,
    [CX_W_LN1_W] = G_("blk.%d.attn_norm.weight", CX_MAP_SAME),
    [CX_W_LN1_B] = G_("blk.%d.attn_norm.bias", CX_MAP_SAME),
    [CX_W_LN2_W] = G_("blk.%d.attn_norm.weight", CX_MAP_SAME),
    [CX_W_LN2_B] = G_("blk.%d.attn_norm.bias", CX_MAP_SAME),
    [CX_W_Q] = G_("blk.%d.attn_q.weight", CX_MAP_PROJ_HEADS),
    [CX_W_K] = G_("blk.%d.attn_k.weight", CX_MAP_PROJ_HEADS),
    [CX_W_V] = G_("blk.%d.attn_v.weight", CX_MAP_PROJ_HEADS),
    [CX_B_Q] = ABSENT_, [CX_B_K] = ABSENT_, [CX_B_V] = ABSENT_,
    [CX_W_O] = G_("blk.%d.attn_output.weight", CX_MAP_OUT_HEADS),
    [CX_B_O] = ABSENT_,
    [CX_W_IN] = G_("blk.%d.ffn_up.weight", CX_MAP_TRANSPOSE),
    [CX_B_IN] = G_("blk.%d.ffn_up.bias", CX_MAP_SAME),
    [CX_W_OUT] = G_("blk.%d.ffn_down.weight", CX_MAP_TRANSPOSE),
    [CX_B_OUT] = G_("blk.%d.ffn_down.bias", CX_MAP_SAME),
    [CX_W_GATE] = NEVER_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,
    [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,
    [CX_LN_FINAL_W] = G_("output_norm.weight", CX_MAP_SAME),
    [CX_LN_FINAL_B] = G_("output_norm.bias", CX_MAP_SAME),
    [CX_W_U] = GGUF_OUTPUT_,
    [CX_B_U] = G_("output.bias", CX_MAP_SAME),
};

/* gpt2 (GPT2Model): the Conv1D weights transposed by the converter, so nn.Linear-shaped:
 * attn_qkv [3·m, m] = [Q; K; V] rows, attn_output [m, m], ffn_up [d_mlp, m], ffn_down
 * [m, d_mlp]. */
static const cx_weight_source gguf_gpt2_sources[CX_W_COUNT] = {
    [CX_W_EMBED] = G_("token_embd.weight", CX_MAP_SAME),
    [CX_W_POS_EMBED] = G_("position_embd.weight", CX_MAP_SAME),
    [CX_W_LN1_W] = G_("blk.%d.attn_norm.weight", CX_MAP_SAME),
    [CX_W_LN1_B] = G_("blk.%d.attn_norm.bias", CX_MAP_SAME),
    [CX_W_LN2_W] = G_("blk.%d.ffn_norm.weight", CX_MAP_SAME),
    [CX_W_LN2_B] = G_("blk.%d.ffn_norm.bias", CX_MAP_SAME),
    [CX_W_Q] = {"blk.%d.attn_qkv.weight", CX_MAP_FUSED_PROJ_HEADS, 0, NULL},
    [CX_W_K] = {"blk.%d.attn_qkv.weight", CX_MAP_FUSED_PROJ_HEADS, 1, NULL},
    [CX_W_V] = {"blk.%d.attn_qkv.weight", CX_MAP_FUSED_PROJ_HEADS, 2, NULL},
    [CX_B_Q] = {"blk.%d.attn_qkv.bias", CX_MAP_FUSED_PROJ_HEADS, 0, NULL},
    [CX_B_K] = {"blk.%d.attn_qkv.bias", CX_MAP_FUSED_PROJ_HEADS, 1, NULL},
    [CX_B_V] = {"blk.%d.attn_qkv.bias", CX_MAP_FUSED_PROJ_HEADS, 2, NULL},
    [CX_W_O] = G_("blk.%d.attn_output.weight", CX_MAP_OUT_HEADS),
    [CX_B_O] = G_("blk.%d.attn_output.bias", CX_MAP_SAME),
    [CX_W_IN] = G_("blk.%d.ffn_up.weight", CX_MAP_TRANSPOSE),
    [CX_B_IN] = G_("blk.%d.ffn_up.bias", CX_MAP_SAME),
    [CX_W_OUT] = G_("blk.%d.ffn_down.weight", CX_MAP_TRANSPOSE),
    [CX_B_OUT] = G_("blk.%d.ffn_down.bias", CX_MAP_SAME),
    [CX_W_GATE] = NEVER_, [CX_MLP_LN_W] = NEVER_, [CX_MLP_LN_B] = NEVER_,
    [CX_LN1_POST_W] = NEVER_, [CX_LN2_POST_W] = NEVER_,
    [CX_LN_FINAL_W] = G_("output_norm.weight", CX_MAP_SAME),
    [CX_LN_FINAL_B] = G_("output_norm.bias", CX_MAP_SAME),
    [CX_W_U] = GGUF_OUTPUT_,
    [CX_B_U] = ABSENT_,
};

/* A GGUF file holds weights only. */
static bool gguf_ignorable(const char *name)
{
    (void)name;
    return false;
}

static const cx_arch gguf_archs[] = {
    {CIRCUITS_FORMAT_HF_LLAMA, "GGUF llama", "", gguf_llama_sources, gguf_ignorable},
    {CIRCUITS_FORMAT_HF_QWEN2, "GGUF qwen2", "", gguf_qwen2_sources, gguf_ignorable},
    {CIRCUITS_FORMAT_HF_GEMMA, "GGUF gemma", "", gguf_gemma_sources, gguf_ignorable},
    {CIRCUITS_FORMAT_HF_GEMMA2, "GGUF gemma2", "", gguf_gemma2_sources, gguf_ignorable},
    {CIRCUITS_FORMAT_HF_GPT_NEOX, "GGUF gptneox", "", gguf_neox_sources, gguf_ignorable},
    {CIRCUITS_FORMAT_HF_GPTJ, "GGUF gptj", "", gguf_gptj_sources, gguf_ignorable},
    {CIRCUITS_FORMAT_HF_GPT2, "GGUF gpt2", "", gguf_gpt2_sources, gguf_ignorable},
};

const cx_arch *cx_arch_gguf_of(const circuits_config *c)
{
    for (size_t i = 0; i < CX_COUNT(gguf_archs); i++)
        if (gguf_archs[i].format == c->format) return &gguf_archs[i];
    return NULL;
}

const cx_arch *cx_arch_gguf_at(size_t i) { return i < CX_COUNT(gguf_archs) ? &gguf_archs[i] : NULL; }
