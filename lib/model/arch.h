/* The weights of a model, one table for every place that names them, in the manner of
 * llama.cpp's tensor-name tables (llama-arch.cpp: an enum of tensor kinds, and per architecture
 * a map from kind to a name format):
 *   - cx_weight_kinds: every kind of weight, in TransformerLens's state-dict order, with its
 *     TransformerLens name ("%d" stands for the layer), its shape in config dimensions, when a
 *     config has it and what it is (bias, per-head, LayerNorm parameter, ...);
 *   - cx_arch: per stored format, the name each kind is stored under and how TransformerLens's
 *     view is cut from the stored tensor (Hugging Face GPT-2's fused c_attn, tied W_U, ...).
 * Read by loading (model_load.c), weight processing (process.c), the model's weight views
 * (model.c) and tests/test_weight_names.c, which checks docs/loading.md against the table.
 * A new architecture adds a cx_arch (and the kinds it needs, e.g. a gate projection) here. */
#ifndef CIRCUITS_ARCH_H
#define CIRCUITS_ARCH_H

#include "internal.h"

/* In TransformerLens's state-dict order: the kinds before the first per-layer kind, then every
 * layer's kinds, then the rest (cx_weight_list). */
typedef enum cx_weight_kind {
    CX_W_EMBED,      /* embed.W_E */
    CX_W_POS_EMBED,  /* pos_embed.W_pos */
    CX_W_LN1_W,      /* blocks.%d.ln1.w */
    CX_W_LN1_B,
    CX_W_LN2_W,
    CX_W_LN2_B,
    CX_W_Q,          /* blocks.%d.attn.W_Q */
    CX_W_O,
    CX_B_Q,
    CX_B_O,
    CX_W_K,
    CX_W_V,
    CX_B_K,
    CX_B_V,
    CX_W_IN,         /* blocks.%d.mlp.W_in */
    CX_W_GATE,       /* blocks.%d.mlp.W_gate (gated_mlp) */
    CX_B_IN,
    CX_W_OUT,
    CX_B_OUT,
    CX_MLP_LN_W,     /* blocks.%d.mlp.ln.w (solu_ln) */
    CX_MLP_LN_B,
    CX_LN1_POST_W,   /* blocks.%d.ln1_post.w (norm_before_and_after) */
    CX_LN2_POST_W,   /* blocks.%d.ln2_post.w */
    CX_LN_FINAL_W,   /* ln_final.w */
    CX_LN_FINAL_B,
    CX_W_U,          /* unembed.W_U */
    CX_B_U,
    CX_W_COUNT
} cx_weight_kind;

/* A dimension of a weight's shape, named as in the config. */
typedef enum cx_dim {
    CX_DIM_VOCAB,     /* d_vocab */
    CX_DIM_VOCAB_OUT, /* d_vocab_out */
    CX_DIM_CTX,       /* n_ctx */
    CX_DIM_MODEL,     /* d_model */
    CX_DIM_HEADS,     /* n_heads */
    CX_DIM_KV_HEADS,  /* n_key_value_heads */
    CX_DIM_HEAD,      /* d_head */
    CX_DIM_MLP,       /* d_mlp */
    CX_DIM_COUNT
} cx_dim;

/* When a config has a kind of weight. */
typedef enum cx_when {
    CX_WHEN_ALWAYS,
    CX_WHEN_LN,       /* normalization_type LN */
    CX_WHEN_LN_MLP,   /* LN and not attn_only */
    CX_WHEN_MLP,      /* not attn_only */
    CX_WHEN_SOLU_LN,  /* act_fn solu_ln with LN */
    CX_WHEN_NORM_W,   /* normalization_type LN or RMS (a norm with a weight) */
    CX_WHEN_NORM_W_MLP, /* LN or RMS, and not attn_only */
    CX_WHEN_GATED,    /* gated_mlp and not attn_only */
    CX_WHEN_POST_NORM_W, /* norm_before_and_after (an RMSNorm with a weight, also once folded) */
    CX_WHEN_POST_NORM_W_MLP, /* the same, and not attn_only */
    CX_WHEN_NOT_ROTARY, /* positional_embedding_type not rotary (TL's pos_embed) */
    CX_WHEN_LN_FINAL_B, /* LN without final_rms (ln_final is then an RMSNorm) */
    CX_WHEN_COUNT
} cx_when;

enum {
    CX_WF_LAYER = 1 << 0, /* one per layer: the name has a "%d" */
    CX_WF_BIAS = 1 << 1,  /* may be absent from a TransformerLens file (then zeros, as TL fills them) */
    CX_WF_HEADS = 1 << 2, /* axis 0 indexes heads (circuits_tensor.head_axis = 0) */
    CX_WF_LN = 1 << 3,    /* a LayerNorm parameter: fold_ln folds it into the weights after it */
    CX_WF_QKV = 1 << 4,   /* a head projection the forward pass applies to all heads in one GEMM */
    CX_WF_KV = 1 << 5,    /* K or V: n_key_value_heads heads; under grouped-query attention
                             TransformerLens names it with a leading underscore (attn._W_K) */
};

typedef struct cx_weight_info {
    const char *name;     /* TransformerLens name, "%d" for the layer */
    int ndim;
    cx_dim shape[3];
    cx_when when;
    unsigned flags;       /* CX_WF_* */
    size_t slot;          /* offset of its pointer in cx_layer_weights (CX_WF_LAYER) or circuits_model */
} cx_weight_info;

extern const cx_weight_info cx_weight_kinds[CX_W_COUNT];

/* The config field a dimension names ("d_model") and its value in c. */
const char *cx_dim_name(cx_dim d);
int64_t cx_dim_size(const circuits_config *c, cx_dim d);
/* The text of a condition for the docs ("normalization `LN`"), and whether c meets it. */
const char *cx_when_text(cx_when w);
bool cx_has_weight(const circuits_config *c, cx_weight_kind k);

/* Writes a name format ("blocks.%d.attn.W_Q", or one without "%d") for layer into buf; returns
 * what snprintf returns. */
int cx_weight_format(char *buf, size_t n, const char *fmt, int layer);

/* One weight of a model: its kind, layer (-1 for the non-layer kinds), TL name and shape. */
typedef struct cx_weight_entry {
    cx_weight_kind kind;
    int layer;
    char name[96];
    int ndim;
    int64_t shape[4];
} cx_weight_entry;

/* The weights a config implies, in TransformerLens's state-dict order, into out (NULL: only
 * counted); returns the count. */
size_t cx_weight_list(const circuits_config *c, cx_weight_entry *out);

/* ---- per architecture: where each kind is stored ---- */

typedef enum cx_map {
    CX_MAP_ABSENT,    /* not stored: zeros (GPT-2's b_U) */
    CX_MAP_NEVER,     /* no config of the architecture has it (its config loader refuses them) */
    CX_MAP_SAME,      /* stored in TransformerLens's shape, contiguous */
    CX_MAP_TRANSPOSE, /* a 2-D tensor stored transposed (W_U as lm_head.weight [d_vocab, d_model]) */
    CX_MAP_QKV,       /* one third of a fused [d_model, 3·d_model] weight or [3·d_model] bias, split
                         into heads: head i owns columns i·d_head .. of the third */
    CX_MAP_HEADS,     /* [n_heads·d_head, d_model] read as [n_heads, d_head, d_model] */
    /* nn.Linear weights ([out, in]) of the other families: */
    CX_MAP_PROJ_HEADS, /* q/k/v_proj [n·d_head, d_model] -> [n, d_model, d_head] ("(n h) m -> n m h") */
    CX_MAP_BIAS_HEADS, /* q/k/v_proj bias [n·d_head] -> [n, d_head] */
    CX_MAP_OUT_HEADS,  /* o_proj [d_model, n_heads·d_head] -> [n_heads, d_head, d_model] */
    CX_MAP_NEOX_QKV,   /* part of GPT-NeoX's fused query_key_value [(i qkv h), m] -> [i, m, h] (bias
                          [(i qkv h)] -> [i, h]), as convert_neox_weights splits it */
    CX_MAP_NORM_PLUS1, /* Gemma's RMSNorm weight: stored w, the norm multiplies by 1 + w (in fp32) */
    CX_MAP_EMBED_SCALED, /* Gemma's embedding: stored W_E times (float)sqrt(d_model), in fp32 */
    CX_MAP_PROJ_HEADS_PERMUTED, /* GGUF llama q/k: CX_MAP_PROJ_HEADS with llama.cpp's converter
                          permutation of each head's rows (rotate-half pairs made adjacent) to undo */
    /* GGUF only: */
    CX_MAP_BIAS_HEADS_PERMUTED, /* GGUF llama q/k bias: CX_MAP_BIAS_HEADS with the same permutation */
    CX_MAP_FUSED_PROJ_HEADS, /* part `part` of a fused nn.Linear weight [Q; K; V] ([(n + 2 n_kv)·h, m]:
                          Q's rows, then K's, then V's; GPT-2 and GPT-NeoX as llama.cpp's converters
                          write attn_qkv) -> [n, m, h]; a bias [(n + 2 n_kv)·h] -> [n, h] */
} cx_map;

/* The row of a llama.cpp-permuted q/k weight (or bias entry) that holds logical row r of the
 * Hugging Face nn.Linear weight: within each head of d_head rows, the converter stores row
 * t·d_head/2 + j (t = 0, 1: the rotate-half halves) at 2j + t. */
static inline int64_t cx_permuted_row(int64_t r, int64_t d_head)
{
    int64_t head = r / d_head, h = r % d_head, half = d_head / 2;
    return head * d_head + 2 * (h % half) + h / half;
}

typedef struct cx_weight_source {
    const char *name; /* stored name, "%d" for the layer; NULL with CX_MAP_ABSENT, CX_MAP_NEVER */
    cx_map map;
    int part;         /* CX_MAP_QKV: which third, 0 (Q), 1 (K) or 2 (V) */
    const char *tied; /* stored instead when `name` is absent and the embeddings are tied */
    const char *alt;  /* another name the same tensor is stored under (NULL: none) */
} cx_weight_source;

typedef struct cx_arch {
    int32_t format;   /* CIRCUITS_FORMAT_* */
    const char *label; /* in messages: "GPT-2" */
    /* Stored names start with prefix in full checkpoints (GPT2LMHeadModel); a file that lacks
     * the embedding under its full name stores every name without it (GPT2Model). */
    const char *prefix;
    /* [CX_W_COUNT]; NULL: stored under the TransformerLens names in TransformerLens's shapes */
    const cx_weight_source *sources;
    /* stored tensors that are not weights (buffers of some saves), skipped when loading */
    bool (*ignorable)(const char *name);
} cx_arch;

/* The architecture of a config's format. */
const cx_arch *cx_arch_of(const circuits_config *c);
/* The Hugging Face architectures in turn (i = 0: GPT-2), NULL past the last (docs, tests). */
const cx_arch *cx_arch_at(size_t i);
/* The GGUF table of a config's format (llama.cpp's tensor names: token_embd.weight,
 * blk.%d.attn_q.weight, ...; Mistral is GGUF llama), NULL for a format GGUF files do not have. */
const cx_arch *cx_arch_gguf_of(const circuits_config *c);
/* The GGUF architectures in turn, NULL past the last (docs, tests). */
const cx_arch *cx_arch_gguf_at(size_t i);

#endif
