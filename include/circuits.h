/*
 * libcircuits — mechanistic interpretability of transformer language models, in C.
 *
 * The semantic reference is TransformerLens's HookedTransformer in fp32: hook names, firing
 * order, tensor layouts and formulas follow it (docs/hooks.md lists every hook point).
 *
 * Conventions of this header
 *   - Every public name starts with `circuits_` (functions, types) or `CIRCUITS_` (macros, enum
 *     values). Functions are named circuits_<object>_<verb>.
 *   - Objects are opaque handles created by a function returning `**out` and destroyed by
 *     the matching `_free` (which accepts NULL).
 *   - Fallible functions return `int`: CIRCUITS_OK (0) or a negative circuits_status. On
 *     failure a message is available from circuits_last_error() on the same thread, and no
 *     output object is created (nothing half-done is left behind).
 *   - Structs the caller fills (options) or the library fills (config) start with a
 *     `uint32_t size` set to sizeof(struct) by the party that allocated them. A release may
 *     append fields to them; the size must equal the end of a version some release published
 *     (older ones read as such, the newer fields taking their defaults), anything else is
 *     CIRCUITS_E_VERSION (docs/abi.md). Initialise options with the matching `_init` function.
 *   - Tensors are row-major fp32 with TransformerLens shapes; strides are given in elements.
 *
 * Threading: a loaded model is read-only and may be shared by any number of contexts used
 * from different threads at once. One context must not be used by two threads at once.
 * Error messages are per thread.
 */
#ifndef CIRCUITS_H
#define CIRCUITS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Export macro and versions                                                                 */
/* ---------------------------------------------------------------------------------------- */

#if defined(_WIN32) && defined(CIRCUITS_BUILDING)
#define CIRCUITS_API __declspec(dllexport)
#elif defined(_WIN32)
#define CIRCUITS_API __declspec(dllimport)
#elif defined(__GNUC__) && __GNUC__ >= 4
#define CIRCUITS_API __attribute__((visibility("default")))
#else
#define CIRCUITS_API
#endif

#define CIRCUITS_VERSION_MAJOR 0
#define CIRCUITS_VERSION_MINOR 10
#define CIRCUITS_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH, as zstd does. */
#define CIRCUITS_VERSION_NUMBER \
    (CIRCUITS_VERSION_MAJOR * 10000 + CIRCUITS_VERSION_MINOR * 100 + CIRCUITS_VERSION_PATCH)
#define CIRCUITS_VERSION_STRING "0.10.0"
/* The soname's number: libcircuits.so.CIRCUITS_ABI_VERSION. Bumped on any incompatible change. */
#define CIRCUITS_ABI_VERSION 0

/* The version of the library actually loaded (compare with CIRCUITS_VERSION_NUMBER). */
CIRCUITS_API unsigned circuits_version_number(void);
CIRCUITS_API const char *circuits_version_string(void);
/* The ABI version of the loaded library (its soname number). */
CIRCUITS_API int circuits_abi_version(void);

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef enum circuits_status {
    CIRCUITS_OK = 0,
    CIRCUITS_E_INVALID_ARGUMENT = -1,  /* NULL pointer, bad size, bad option value */
    CIRCUITS_E_OUT_OF_MEMORY = -2,     /* an allocation failed; nothing was changed */
    CIRCUITS_E_IO = -3,                /* a file could not be opened, read or mapped */
    CIRCUITS_E_FORMAT = -4,            /* a file is malformed (safetensors header, JSON) */
    CIRCUITS_E_CONFIG = -5,            /* a model config is missing a field or is inconsistent */
    CIRCUITS_E_UNSUPPORTED = -6,       /* valid, but not something libcircuits implements */
    CIRCUITS_E_TENSOR_MISSING = -7,    /* a required weight tensor is absent */
    CIRCUITS_E_TENSOR_UNEXPECTED = -8, /* a tensor the architecture has no place for */
    CIRCUITS_E_SHAPE = -9,             /* a shape disagrees with the config or the call */
    CIRCUITS_E_DTYPE = -10,            /* an unknown or unusable tensor dtype */
    CIRCUITS_E_NOT_FOUND = -11,        /* no such hook point, weight, cache entry or hook id */
    CIRCUITS_E_RANGE = -12,            /* token id out of vocabulary, too many positions, ... */
    CIRCUITS_E_CALLBACK = -13,         /* a hook callback returned an error */
    CIRCUITS_E_STOPPED = -14,          /* a hook callback asked to stop the run */
    CIRCUITS_E_VERSION = -15,          /* an options struct of an unknown size */
    CIRCUITS_E_PROVENANCE = -16        /* (0.9.0) job outputs whose records disagree: another model,
                                        * dataset, library, hook semantics or job parameters */
} circuits_status;

/* Static text naming a status ("CIRCUITS_E_SHAPE: shape mismatch"); never NULL. */
CIRCUITS_API const char *circuits_status_string(int status);
/* Message of the last failure on this thread ("" if none). Valid until the next call into the
 * library on this thread. */
CIRCUITS_API const char *circuits_last_error(void);
CIRCUITS_API void circuits_clear_error(void);

/* ---------------------------------------------------------------------------------------- */
/* Tensors: weight views and hook descriptors                                                 */
/* ---------------------------------------------------------------------------------------- */

#define CIRCUITS_MAX_DIMS 4

/* A strided fp32 tensor with a TransformerLens name. Filled by the library, often into a
 * struct the caller allocated; it has no `size`, its layout is fixed per ABI (docs/abi.md). */
typedef struct circuits_tensor {
    const char *name;   /* e.g. "blocks.1.attn.hook_pattern" or "blocks.0.attn.W_Q" */
    int32_t layer;      /* block index, or -1 outside blocks (hook_embed, embed.W_E, ...) */
    int32_t head;       /* head index when the tensor is one head's slice, else -1 */
    int32_t head_axis;  /* axis of `shape` indexing heads (2 for hook_q, 1 for hook_pattern), or -1 */
    int32_t ndim;       /* number of valid entries in shape/strides */
    int64_t shape[CIRCUITS_MAX_DIMS];
    int64_t strides[CIRCUITS_MAX_DIMS]; /* in elements, not bytes */
    float *data;        /* element [i,j,..] is data[i*strides[0] + j*strides[1] + ...] */
} circuits_tensor;

/* ---------------------------------------------------------------------------------------- */
/* Models                                                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef struct circuits_model circuits_model;

/* The MLP activation. The names a config may give (TL act_fn, Hugging Face activation_function):
 * relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, silu, swish, solu_ln; any other is
 * CIRCUITS_E_UNSUPPORTED at load. */
typedef enum circuits_act_fn {
    CIRCUITS_ACT_RELU = 0,
    CIRCUITS_ACT_GELU = 1,      /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    CIRCUITS_ACT_GELU_NEW = 2,  /* GPT-2: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); also
                                 * loaded from "gelu_pytorch_tanh" (the same formula) */
    CIRCUITS_ACT_GELU_FAST = 3, /* 0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2))) */
    CIRCUITS_ACT_SILU = 4,      /* x sigmoid(x); also loaded from "swish" */
    CIRCUITS_ACT_SOLU_LN = 5    /* x softmax(x), then a LayerNorm over d_mlp (hook_mid, mlp.ln) */
} circuits_act_fn;

typedef enum circuits_norm_type {
    CIRCUITS_NORM_NONE = 0,  /* identity; no ln hooks fire */
    CIRCUITS_NORM_LN = 1,    /* (x - mean) / sqrt(var + eps) * w + b */
    CIRCUITS_NORM_LNPRE = 2, /* (x - mean) / sqrt(var + eps) */
    CIRCUITS_NORM_RMS = 3,   /* x / sqrt(mean(x^2) + eps) * w (RMSNorm: no centring, no bias) */
    CIRCUITS_NORM_RMSPRE = 4 /* x / sqrt(mean(x^2) + eps) (RMS with w folded: fold_ln) */
} circuits_norm_type;

typedef enum circuits_pos_embed {
    CIRCUITS_POS_STANDARD = 0,    /* W_pos added to the residual stream */
    CIRCUITS_POS_SHORTFORMER = 1, /* W_pos added only to the query and key inputs of every layer */
    CIRCUITS_POS_ROTARY = 2       /* no W_pos: q and k rotated by position (rotary_* fields) */
} circuits_pos_embed;

/* How rotary frequencies are rescaled for long contexts (Hugging Face rope_scaling). */
typedef enum circuits_rope_scaling {
    CIRCUITS_ROPE_NONE = 0,
    CIRCUITS_ROPE_LINEAR = 1, /* every frequency divided by rope_factor */
    CIRCUITS_ROPE_LLAMA3 = 2  /* Llama 3.x: low frequencies divided by rope_factor, high ones kept,
                               * the band between interpolated (TL's use_NTK_by_parts_rope) */
} circuits_rope_scaling;

/* Which layers attend only within the sliding window (window_size keys, the query's own
 * included). */
typedef enum circuits_local_attn {
    CIRCUITS_LOCAL_ATTN_NONE = 0, /* every layer global */
    CIRCUITS_LOCAL_ATTN_ALL = 1,  /* every layer local (Mistral) */
    CIRCUITS_LOCAL_ATTN_EVEN = 2, /* layers 0, 2, 4, ... local (Hugging Face Gemma 2) */
    CIRCUITS_LOCAL_ATTN_ODD = 3   /* layers 1, 3, 5, ... local (TransformerLens's Gemma 2
                                   * attn_types ["global", "local"]) */
} circuits_local_attn;

typedef enum circuits_model_format {
    CIRCUITS_FORMAT_HF_GPT2 = 0,     /* config.json + model.safetensors (or sharded) */
    CIRCUITS_FORMAT_TRANSFORMERLENS = 1, /* tl_config.json + model.safetensors with TL keys */
    /* Hugging Face directories by config.json model_type (0.4.0) */
    CIRCUITS_FORMAT_HF_GPT_NEOX = 2, /* gpt_neox (Pythia) */
    CIRCUITS_FORMAT_HF_GPTJ = 3,     /* gptj */
    CIRCUITS_FORMAT_HF_LLAMA = 4,    /* llama */
    CIRCUITS_FORMAT_HF_MISTRAL = 5,  /* mistral */
    CIRCUITS_FORMAT_HF_QWEN2 = 6,    /* qwen2 */
    CIRCUITS_FORMAT_HF_GEMMA = 7,    /* gemma */
    CIRCUITS_FORMAT_HF_GEMMA2 = 8    /* gemma2 */
} circuits_model_format;

/* Model hyper-parameters in TransformerLens's HookedTransformerConfig names. The caller sets
 * `size = sizeof(circuits_config)`; the library fills the fields that fit. */
typedef struct circuits_config {
    uint32_t size;
    int32_t n_layers;
    int32_t d_model;
    int32_t n_heads;
    int32_t d_head;
    int32_t d_mlp;          /* 0 when attn_only */
    int32_t d_vocab;
    int32_t d_vocab_out;
    int32_t n_ctx;
    int32_t act_fn;         /* circuits_act_fn */
    int32_t normalization_type; /* circuits_norm_type */
    int32_t positional_embedding_type; /* circuits_pos_embed */
    int32_t attn_only;      /* 1: no MLPs, no ln2, no hook_resid_mid */
    int32_t format;         /* circuits_model_format the model was loaded from (a GGUF file: its
                             * family's, e.g. CIRCUITS_FORMAT_HF_LLAMA for GGUF llama) */
    int32_t scale_attn_by_inverse_layer_idx; /* 1: scores also divided by (layer + 1) */
    float eps;              /* LayerNorm epsilon */
    float attn_scale;       /* scores = q.k / attn_scale; sqrt(d_head) unless configured */
    uint32_t processing;    /* CIRCUITS_PROCESSED_* bits: the weight processing applied at load */
    /* Added in 0.4.0 (modern families, docs/loading.md). A 0.3.0 caller's struct ends above and
     * gets the fields that fit. */
    int32_t n_key_value_heads;  /* K and V heads: n_heads unless grouped-query attention; query
                                 * head h reads K/V head h / (n_heads / n_key_value_heads) */
    int32_t rotary_dim;         /* rotary: leading dims of each head rotated (<= d_head); else 0 */
    int32_t rotary_adjacent_pairs; /* 1: rotate (x0,x1), (x2,x3).. (GPT-J); 0: rotate halves (NeoX) */
    float rotary_base;          /* rotary theta */
    int32_t rope_scaling;       /* circuits_rope_scaling */
    float rope_factor;          /* linear, llama3 */
    float rope_low_freq_factor; /* llama3 */
    float rope_high_freq_factor; /* llama3 */
    int32_t rope_original_n_ctx; /* llama3: original_max_position_embeddings */
    int32_t gated_mlp;          /* 1: hook_post = act(x W_gate) * (x W_in) + b_in (SwiGLU, GeGLU) */
    int32_t parallel_attn_mlp;  /* 1: the MLP reads resid_pre; resid_post = pre + attn_out + mlp_out */
    int32_t final_rms;          /* 1: ln_final is RMSNorm (RMSPre once folded) whatever the blocks use */
    int32_t norm_before_and_after; /* 1: ln1_post / ln2_post normalize each sublayer's output (Gemma 2) */
    float attn_scores_soft_cap; /* > 0: scores = cap * tanh(scores / cap) before the mask; 0: none */
    float output_logits_soft_cap; /* > 0: logits = cap * tanh(logits / cap); 0: none */
    int32_t window_size;        /* sliding window: keys per query, its own included (0: none) */
    int32_t local_attn;         /* circuits_local_attn: the layers that use window_size */
} circuits_config;

/* Bits of circuits_config.processing: which of TransformerLens's weight-processing steps were
 * applied at load (after the automatic exceptions, docs/processing.md). */
#define CIRCUITS_PROCESSED_FOLD_LN 0x1u
#define CIRCUITS_PROCESSED_CENTER_WRITING_WEIGHTS 0x2u
#define CIRCUITS_PROCESSED_CENTER_UNEMBED 0x4u
#define CIRCUITS_PROCESSED_FOLD_VALUE_BIASES 0x8u
#define CIRCUITS_PROCESSED_REFACTOR_FACTORED_ATTN_MATRICES 0x10u

typedef struct circuits_load_options {
    uint32_t size;     /* sizeof(circuits_load_options) */
    /* TransformerLens from_pretrained's weight processing, each 0 or 1. The defaults are
     * from_pretrained's: all 1 except refactor_factored_attn_matrices. All 0 is
     * from_pretrained_no_processing: the weights exactly as stored. */
    int32_t fold_ln;                 /* fold LayerNorm w, b into the weights that read it */
    int32_t center_writing_weights;  /* zero-mean every weight writing to the residual stream */
    int32_t center_unembed;          /* zero-mean W_U over the vocabulary (logits shift per position) */
    int32_t fold_value_biases;       /* b_O += sum_h b_V[h] W_O[h]; b_V = 0 */
    int32_t refactor_factored_attn_matrices; /* W_Q, W_K and W_V, W_O as balanced SVD factors */
    /* Added in 0.3.0 (a 0.2.0 caller's struct, which ends before it, is still accepted: the
     * field then reads 0).
     * 0: map the safetensors files (the default; weights used as stored, e.g. F32 without
     * processing, are read from the mapping, so truncating such a file while the model is loaded
     * kills the process with SIGBUS at its next run: docs/loading.md). 1: read the files into
     * memory (more memory and a slower load, but immune to the files changing afterwards). */
    int32_t read_into_memory;
    /* Added in 0.6.0 (docs/quantization.md). 0: every weight becomes fp32 at load (quantized
     * GGUF tensors dequantized, F16/BF16 widened): TransformerLens's numerics, and fp32 memory.
     * 1: the weight matrices stay in their stored dtype (GGUF's quantized types, F16, BF16) and
     * products dequantize blocks on the fly with fp32 accumulation, so the resident size stays
     * near the file's; hooks still see fp32 activations. Such weights are read with
     * circuits_model_weight_read (circuits_model_weight refuses them, CIRCUITS_E_DTYPE), and a
     * weight-processing step that would rewrite them is refused by name. */
    int32_t keep_stored_dtype;
} circuits_load_options;

/* Storage types of weights (added in 0.6.0), numbered as ggml numbers them (GGUF's tensor
 * types), so that a GGUF file's type ids read as these. */
typedef enum circuits_dtype {
    CIRCUITS_DTYPE_F32 = 0,
    CIRCUITS_DTYPE_F16 = 1,
    CIRCUITS_DTYPE_Q4_0 = 2,
    CIRCUITS_DTYPE_Q4_1 = 3,
    CIRCUITS_DTYPE_Q5_0 = 6,
    CIRCUITS_DTYPE_Q5_1 = 7,
    CIRCUITS_DTYPE_Q8_0 = 8,
    CIRCUITS_DTYPE_Q2_K = 10,
    CIRCUITS_DTYPE_Q3_K = 11,
    CIRCUITS_DTYPE_Q4_K = 12,
    CIRCUITS_DTYPE_Q5_K = 13,
    CIRCUITS_DTYPE_Q6_K = 14,
    CIRCUITS_DTYPE_BF16 = 30
} circuits_dtype;

/* "Q4_K" for CIRCUITS_DTYPE_Q4_K ...; NULL for a number that is not a circuits_dtype. */
CIRCUITS_API const char *circuits_dtype_name(int32_t dtype);
/* Values per block and bytes per block of a dtype (1 and 4 for F32; 256 and 144 for Q4_K).
 * CIRCUITS_E_DTYPE for a number that is not a circuits_dtype. Either output may be NULL. */
CIRCUITS_API int circuits_dtype_block(int32_t dtype, int64_t *block_values, size_t *block_bytes);
/* Dequantizes n values stored as dtype (src: src_bytes bytes, exactly n / block_values blocks)
 * into dst[n], bit-identical to the gguf package's NumPy dequantizer (llama.cpp's gguf-py).
 * n must be a multiple of the block (CIRCUITS_E_SHAPE), src_bytes its size (CIRCUITS_E_SHAPE). */
CIRCUITS_API int circuits_dequantize(int32_t dtype, const void *src, size_t src_bytes, float *dst, size_t n);

/* Fills *opts with the defaults (TransformerLens from_pretrained's processing). */
CIRCUITS_API void circuits_load_options_init(circuits_load_options *opts);

/* Loads a model from a directory: a Hugging Face GPT-2 (config.json + model.safetensors, or
 * model.safetensors.index.json + shards) or a TransformerLens-layout model (tl_config.json +
 * model.safetensors), then processes the weights as opts says (NULL: the defaults, i.e. as
 * TransformerLens's from_pretrained does). Since 0.6.0 path may also name a GGUF file (llama.cpp's
 * format, v2 or v3: architectures llama, qwen2, gemma, gemma2, gptneox, gptj, gpt2; its tokenizer
 * comes from the same file): docs/quantization.md. */
CIRCUITS_API int circuits_model_load(circuits_model **out, const char *path,
                                     const circuits_load_options *opts);
CIRCUITS_API void circuits_model_free(circuits_model *model);

/* Copies the config into *out (out->size must be set by the caller). */
CIRCUITS_API int circuits_model_config(const circuits_model *model, circuits_config *out);

/* A read-only view of a weight by its TransformerLens state-dict name ("embed.W_E",
 * "blocks.0.attn.W_Q", "unembed.W_U", ...) with TL's shape. The view stays valid until the
 * model is freed; its data must not be written (it may be a read-only file mapping). A weight
 * kept in its stored dtype (keep_stored_dtype) has no fp32 view: CIRCUITS_E_DTYPE, with *out
 * naming it and giving its shape (data NULL); read it with circuits_model_weight_read. */
CIRCUITS_API int circuits_model_weight(const circuits_model *model, const char *name,
                                       circuits_tensor *out);
/* Added in 0.6.0. The dtype a weight is held in (circuits_dtype): CIRCUITS_DTYPE_F32 unless the
 * model was loaded with keep_stored_dtype and the weight is a matrix stored quantized, F16 or BF16. */
CIRCUITS_API int circuits_model_weight_dtype(const circuits_model *model, const char *name, int32_t *dtype);
/* Added in 0.6.0. The weight `name` as fp32, written into the caller's buf (buf_len floats, at
 * least the product of its shape: else CIRCUITS_E_RANGE); *out (may be NULL) describes it there,
 * contiguous. Works for every weight of every model (a copy for fp32 ones; a dequantization for
 * weights kept in their stored dtype). */
CIRCUITS_API int circuits_model_weight_read(const circuits_model *model, const char *name, float *buf,
                                            size_t buf_len, circuits_tensor *out);
/* Enumerates every weight: index in [0, circuits_model_weight_count()); a kept weight as
 * circuits_model_weight gives it (CIRCUITS_E_DTYPE, *out filled, data NULL). */
CIRCUITS_API size_t circuits_model_weight_count(const circuits_model *model);
CIRCUITS_API int circuits_model_weight_at(const circuits_model *model, size_t index,
                                          circuits_tensor *out);

/* ---------------------------------------------------------------------------------------- */
/* Run contexts and hooks                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Thread safety (docs/threading.md; tests/test_threads.c checks it under ThreadSanitizer):
 *   - model, tokenizer: read-only once loaded; any number of threads may use one at once,
 *     each with its own context (and the results are bit-identical to a serial run).
 *   - context, cache, KV cache: one thread at a time (no locks inside: calls from two threads
 *     at once are a data race); different objects on different threads need nothing.
 *   - factored matrix: functions taking a const one may share it; freeing it may not.
 *   - circuits_last_error(): per thread. circuits_set_num_threads(): process-wide; call it
 *     while no run is in progress.
 *   - hook and on_step callbacks run on the thread that called the run; they must not call
 *     into the context running them (refused with CIRCUITS_E_INVALID_ARGUMENT).
 *   - nothing detects use after free: a model must outlive its contexts, KV caches, weight
 *     views and tokenizer; any object must outlive the calls that use it (docs/errors.md). */
typedef struct circuits_context circuits_context;

typedef struct circuits_context_options {
    uint32_t size;          /* sizeof(circuits_context_options) */
    int32_t use_attn_result; /* 1: compute and expose blocks.{l}.attn.hook_result (per head) */
    /* Added in 0.5.0: TransformerLens's optional hook points (docs/hooks.md "Optional hook
     * points"); each 0 or 1, default 0. */
    int32_t use_split_qkv_input; /* blocks.{l}.hook_q_input [batch, pos, n_heads, d_model],
                                  * hook_k_input / hook_v_input [batch, pos, n_key_value_heads,
                                  * d_model]: each head's own copy of resid_pre, ln1 applied per
                                  * head (TL's set_use_split_qkv_input) */
    int32_t use_attn_in;         /* blocks.{l}.hook_attn_in [batch, pos, n_heads, d_model] (TL's
                                  * set_use_attn_in; not with grouped-query attention, as TL) */
    int32_t use_hook_mlp_in;     /* blocks.{l}.hook_mlp_in [batch, pos, d_model], the MLP's input
                                  * before ln2 (TL's set_use_hook_mlp_in; not attention-only) */
    int32_t use_hook_tokens;     /* hook_tokens [batch, pos]: the token ids before the embedding.
                                  * Its descriptor's data holds int32_t, not float: read and edit
                                  * it as (int32_t *)act->data (TL's cfg.use_hook_tokens) */
} circuits_context_options;

CIRCUITS_API void circuits_context_options_init(circuits_context_options *opts);

/* A run context owns scratch memory, registered hooks and nothing else; it keeps a reference
 * to the model, which must outlive it. opts may be NULL for defaults. */
CIRCUITS_API int circuits_context_create(circuits_context **out, const circuits_model *model,
                                         const circuits_context_options *opts);
CIRCUITS_API void circuits_context_free(circuits_context *ctx);

/* Hook points of this context (depends on the model and on the context options), in firing
 * order within a block. */
CIRCUITS_API size_t circuits_context_hook_point_count(const circuits_context *ctx);
/* Name and layer of hook point `index`; shape/strides/data are filled for a run of
 * [batch, pos] tokens (data is NULL: nothing has run). */
CIRCUITS_API int circuits_context_hook_point(const circuits_context *ctx, size_t index,
                                             int64_t batch, int64_t pos, circuits_tensor *out);

/* Return values of a hook callback. Any negative value is an error that stops the run. */
#define CIRCUITS_HOOK_CONTINUE 0
#define CIRCUITS_HOOK_STOP 1

/* A hook callback. `act` describes the live activation: it may be read and edited in place
 * (the edit flows downstream exactly as a TransformerLens hook's edit or returned tensor);
 * act->data is contiguous and lies in the context's run memory: it is valid during the call, and
 * after the run only if the caller takes that memory (circuits_context_take_run_memory). Return
 * CIRCUITS_HOOK_CONTINUE, CIRCUITS_HOOK_STOP to end the run early (the forward call returns
 * CIRCUITS_E_STOPPED), or a negative value to fail it (the forward call returns
 * CIRCUITS_E_CALLBACK). A callback must not call into the same context. */
typedef int (*circuits_hook_fn)(const circuits_tensor *act, void *user_data);

typedef int64_t circuits_hook_id;

/* Registers fn at every hook point `name` selects: an exact name
 * ("blocks.1.attn.hook_pattern"), a TransformerLens short name as utils.get_act_name
 * understands it ("pattern1", "resid_pre3", "k6a", "scale4ln1", "embed", "normalized"), or a
 * pattern where '*' matches any run of characters ("blocks.*.attn.hook_pattern"). A name that
 * selects nothing is CIRCUITS_E_NOT_FOUND. Several hooks at one point run in registration
 * order. *out_id (may be NULL) identifies the registration for circuits_context_remove_hook. */
CIRCUITS_API int circuits_context_add_hook(circuits_context *ctx, const char *name,
                                           circuits_hook_fn fn, void *user_data,
                                           circuits_hook_id *out_id);
CIRCUITS_API int circuits_context_remove_hook(circuits_context *ctx, circuits_hook_id id);
CIRCUITS_API void circuits_context_clear_hooks(circuits_context *ctx);

/* TransformerLens's utils.get_act_name: (name, layer, layer_type) -> full hook name, e.g.
 * ("pattern", 1, NULL) -> "blocks.1.attn.hook_pattern", ("scale", 4, "ln1") ->
 * "blocks.4.ln1.hook_scale", ("k", 6, "a") -> "blocks.6.attn.hook_k", ("embed", -1, NULL) ->
 * "hook_embed". layer < 0 means none; layer_type may be NULL. A name containing '.' or starting
 * with "hook_" is returned unchanged. Fails with CIRCUITS_E_RANGE if buf is too small. */
CIRCUITS_API int circuits_act_name(const char *name, int32_t layer, const char *layer_type,
                                   char *buf, size_t buf_size);

/* Resolves a name as circuits_context_add_hook does, writing the full name of the `index`-th
 * selected hook point (in firing order) into buf. *out_count (may be NULL) receives the
 * number selected. Fails with CIRCUITS_E_NOT_FOUND if none. */
CIRCUITS_API int circuits_context_resolve_hook_name(const circuits_context *ctx, const char *name,
                                                    size_t index, char *buf, size_t buf_size,
                                                    size_t *out_count);

/* Runs the model on tokens [batch, pos] (int32 ids). Each output may be NULL:
 *   logits          [batch, pos, d_vocab_out]
 *   loss            scalar mean of per_token_loss
 *   per_token_loss  [batch, pos - 1]: -log_softmax(logits)[b, i, tokens[b, i + 1]]
 * Hooks registered on the context fire in TransformerLens order. On failure the outputs'
 * contents are unspecified and the context stays usable. */
CIRCUITS_API int circuits_context_forward(circuits_context *ctx, const int32_t *tokens,
                                          int64_t batch, int64_t pos, float *logits, float *loss,
                                          float *per_token_loss);

/* Partial runs and chosen logit positions: TransformerLens's start_at_layer / stop_at_layer,
 * and the unembedding at a few positions only (it is a third of GPT-2 small's FLOPs, and
 * interpretability often needs only the last position). */
/* start_at_layer / stop_at_layer not set (INT32_MIN) */
#define CIRCUITS_LAYER_NONE (-2147483647 - 1)

typedef struct circuits_run_options {
    uint32_t size;              /* sizeof(circuits_run_options) */
    /* CIRCUITS_LAYER_NONE: start from the tokens. Else k (negative counts from the end, as in
     * TransformerLens; inclusive): the run starts at block k from `input`, the embeddings and
     * the blocks before k are skipped (their hooks do not fire), and tokens may be NULL. */
    int32_t start_at_layer;
    /* CIRCUITS_LAYER_NONE: run to the logits. Else k (negative counts from the end; exclusive):
     * blocks k.. do not run and out receives the residual stream before block k (what
     * blocks.k.hook_resid_pre saw), [batch, pos, d_model]; k = 0 stops after the embeddings,
     * k = n_layers after the last block (before ln_final), as in TransformerLens. */
    int32_t stop_at_layer;
    const float *input;         /* [batch, pos, d_model]: the residual stream before start_at_layer */
    /* NULL: logits at every position. Else the logits at these n_logit_positions positions only
     * (negative counts from the end: -1 is the last), out [batch, n_logit_positions,
     * d_vocab_out]; unembed.hook_out then sees that shape too. */
    const int64_t *logit_positions;
    int64_t n_logit_positions;
    /* Added in 0.5.0 (padding, docs/api.md "Padding and attention masks"). A 0.4.0 caller's struct
     * ends above. */
    /* NULL: every position is a real token. Else [batch, pos] of 1 (a real token) and 0 (padding),
     * TransformerLens's attention_mask: no query attends to padding, position ids are
     * cumsum(mask) - 1 (left padding starts each row at position 0), W_pos is 0 at padding, and
     * a query with no real key to see gets a pattern row of zeros. Every row needs a real token.
     * With kv_cache: the new positions' mask (the cache remembers the earlier ones). */
    const int32_t *attention_mask;
    /* NULL: none. Else continue this KV cache, as circuits_context_forward_kv. */
    struct circuits_kv_cache *kv_cache;
} circuits_run_options;

/* Sets size and the defaults (a full run: no start or stop layer, every logit position). */
CIRCUITS_API void circuits_run_options_init(circuits_run_options *opts);

/* Runs the model as opts says (NULL: a full run, as circuits_context_forward). out may be NULL
 * (a run for its hooks); else it receives the logits [batch, pos or n_logit_positions,
 * d_vocab_out], or with stop_at_layer the residual stream [batch, pos, d_model]. */
CIRCUITS_API int circuits_context_run(circuits_context *ctx, const circuits_run_options *opts,
                                      const int32_t *tokens, int64_t batch, int64_t pos, float *out);

/* Memory lent to callbacks. Every activation a hook callback sees (act->data) lies in one block
 * of memory the context owns, its run memory, reused by its next run (KV-cache runs and
 * generation included; outputs the caller passed are written after the hooks have seen the
 * context's copy). A callback that wants to keep the view past its call (a garbage-collected
 * binding cannot stop its users from keeping one) takes the block once the run has returned:
 * circuits_context_take_run_memory hands it over, so the context allocates a fresh block at its
 * next run and never writes the taken one again, and the block lives until
 * circuits_run_memory_free, independent of the context and the model. Buffers are reused across
 * layers within a run, so a kept view reads what the run last wrote there (for
 * blocks.0.hook_resid_pre: the final residual stream), never freed memory. */
typedef struct circuits_run_memory circuits_run_memory;

/* Hands the context's run memory over to the caller: *out receives it (NULL if the context has
 * none yet), and the context no longer refers to it. Refused (CIRCUITS_E_INVALID_ARGUMENT) from
 * a hook callback while a pass is computing; allowed between the runs of a generation (its
 * on_step callback). */
CIRCUITS_API int circuits_context_take_run_memory(circuits_context *ctx, circuits_run_memory **out);
/* The block's first byte and its size in bytes (NULL and 0 for NULL). A gradient run's memory
 * (backward hook callbacks' data: circuits_context_backward) is a second block the run memory
 * holds too, freed with it; these describe the activations' block. */
CIRCUITS_API const void *circuits_run_memory_data(const circuits_run_memory *mem);
CIRCUITS_API size_t circuits_run_memory_nbytes(const circuits_run_memory *mem);
CIRCUITS_API void circuits_run_memory_free(circuits_run_memory *mem);

/* ---------------------------------------------------------------------------------------- */
/* Activation caches                                                                         */
/* ---------------------------------------------------------------------------------------- */

typedef struct circuits_cache circuits_cache;

CIRCUITS_API int circuits_cache_create(circuits_cache **out);
CIRCUITS_API void circuits_cache_free(circuits_cache *cache);

/* circuits_context_forward that also stores, into `cache` (emptied first), a copy of every
 * activation selected by names_filter: n_filter names or patterns as in
 * circuits_context_add_hook (names_filter NULL / n_filter 0 selects every hook point). The
 * copy is taken after the context's own hooks have run at that point, as in TransformerLens. */
CIRCUITS_API int circuits_context_run_with_cache(circuits_context *ctx, const int32_t *tokens,
                                                 int64_t batch, int64_t pos,
                                                 const char *const *names_filter, size_t n_filter,
                                                 circuits_cache *cache, float *logits, float *loss,
                                                 float *per_token_loss);

/* circuits_context_run_with_cache with run options (0.5.0): start_at_layer / stop_at_layer,
 * logit_positions, attention_mask, kv_cache as circuits_context_run takes them (opts may be
 * NULL). Only the points the run reaches are cached (none of the blocks outside [start, stop),
 * no embedding points with start_at_layer, no ln_final / unembed with stop_at_layer), each with
 * the shape its hook saw. out: as circuits_context_run's (may be NULL). loss and
 * per_token_loss (may be NULL; a run to the logits of every position, from tokens) skip
 * padding as TransformerLens's lm_cross_entropy_loss does: per_token_loss is 0 at a pair whose
 * position or next position is padding, loss the mean over the other pairs. */
CIRCUITS_API int circuits_context_run_with_cache_opts(circuits_context *ctx, const circuits_run_options *opts,
                                                      const int32_t *tokens, int64_t batch, int64_t pos,
                                                      const char *const *names_filter, size_t n_filter,
                                                      circuits_cache *cache, float *out, float *loss,
                                                      float *per_token_loss);

/* Entries in firing order. */
CIRCUITS_API size_t circuits_cache_count(const circuits_cache *cache);
CIRCUITS_API int circuits_cache_at(const circuits_cache *cache, size_t index,
                                   circuits_tensor *out);
/* Looks an entry up by full name or TransformerLens short name ("pattern1", "resid_post0"). */
CIRCUITS_API int circuits_cache_get(const circuits_cache *cache, const char *name,
                                    circuits_tensor *out);
/* Bytes of activation data held (sum of 4 * numel over entries). */
CIRCUITS_API size_t circuits_cache_nbytes(const circuits_cache *cache);

/* ---------------------------------------------------------------------------------------- */
/* The residual stream (TransformerLens ActivationCache); docs/analysis.md                   */
/* ---------------------------------------------------------------------------------------- */

/* Added in 0.5.0. Stacks of residual-stream components read from a cache of the model's run:
 * out [n_components, batch, n_pos, d_model] (n_pos = the positions selected), with a label per
 * component. The cache must hold the hooks the call reads (a missing one is
 * CIRCUITS_E_NOT_FOUND naming it): run_with_cache with no filter holds them all. */
typedef enum circuits_resid_kind {
    CIRCUITS_RESID_ACCUMULATED = 0, /* accumulated_resid: "0_pre", "0_mid", .., "final_post" */
    CIRCUITS_RESID_DECOMPOSED = 1,  /* decompose_resid: "embed", "pos_embed", "0_attn_out", "0_mlp_out", .. */
    CIRCUITS_RESID_HEADS = 2,       /* stack_head_results: "L0H0", .., ("remainder") */
    CIRCUITS_RESID_NEURONS = 3,     /* stack_neuron_results: "L0N0", .., ("remainder") */
    CIRCUITS_RESID_FULL = 4         /* get_full_resid_decomposition: heads, neurons (or
                                     * "0_mlp_out", ..), "embed", "pos_embed", "bias" */
} circuits_resid_kind;

/* decompose_resid's mode */
#define CIRCUITS_RESID_MODE_ALL 0
#define CIRCUITS_RESID_MODE_MLP 1
#define CIRCUITS_RESID_MODE_ATTN 2

/* The arguments TransformerLens's methods take; each kind reads the ones its method has. */
typedef struct circuits_resid_options {
    uint32_t size;          /* sizeof(circuits_resid_options) */
    int32_t layer;          /* -1 (default): n_layers, the input of the unembed; else 0..n_layers:
                             * components up to the input of block `layer` */
    int32_t incl_mid;       /* accumulated: also each earlier layer's resid_mid */
    int32_t mlp_input;      /* accumulated, decomposed, full: the input of layer's MLP (ln2) */
    int32_t apply_ln;       /* apply_ln_to_stack to the result (the cached scale) */
    int32_t incl_embeds;    /* decomposed: embed and pos_embed first (default 1) */
    int32_t mode;           /* decomposed: CIRCUITS_RESID_MODE_* */
    int32_t incl_remainder; /* heads, neurons: a last component "remainder" = resid - the rest */
    int32_t expand_neurons; /* full: one component per neuron (default 1), else per MLP */
    int32_t recompute_ln;   /* apply_ln at layer n_layers: ln_final with statistics recomputed per
                             * component (accumulated sets it itself, as TransformerLens does) */
    int32_t unembed_bias;   /* logit lens: add b_U (default 1) */
    const int64_t *positions; /* pos_slice: NULL every position, else n_positions indices into the
                               * cache's positions (negative count from the end) */
    int64_t n_positions;
    const int64_t *neurons; /* neurons: neuron_slice, NULL every neuron, else n_neurons indices */
    int64_t n_neurons;
    const int64_t *batch_indices; /* apply_ln, logit attributions: batch_slice of the cached scale
                                   * (NULL: every batch row) */
    int64_t n_batch_indices;
} circuits_resid_options;

CIRCUITS_API void circuits_resid_options_init(circuits_resid_options *opts);

/* `kind` is a circuits_resid_kind. The shape of a stack: shape [4] = {n_components, batch, n_pos,
 * d_model}. opts may be NULL (the defaults). */
CIRCUITS_API int circuits_resid_shape(const circuits_model *model, const circuits_cache *cache,
                                      int kind, const circuits_resid_options *opts,
                                      int64_t *shape);
/* The stack into out (out_len floats, at least the product of the shape). */
CIRCUITS_API int circuits_resid_stack(const circuits_model *model, const circuits_cache *cache,
                                      int kind, const circuits_resid_options *opts,
                                      float *out, size_t out_len);
/* Every component's label ("L0H1", "0_mlp_out", "embed", ..), in order, each ending in a NUL,
 * one after another into buf (buf_size bytes; too few is CIRCUITS_E_RANGE). *needed (may be NULL)
 * receives the bytes they take; buf NULL only sets it. */
CIRCUITS_API int circuits_resid_labels(const circuits_model *model, const circuits_cache *cache,
                                       int kind, const circuits_resid_options *opts, char *buf,
                                       size_t buf_size, size_t *needed);
/* apply_ln_to_stack in place: stack [n_components, batch, n_pos, d_model] taken as the input of
 * opts->layer (ln1, or ln2 with mlp_input; ln_final at n_layers): centred (LN, LNPre) and divided
 * by the cached hook_scale of those positions and batch rows, or with recompute_ln at n_layers
 * put through ln_final. Without normalization the stack is left as it is. */
CIRCUITS_API int circuits_resid_apply_ln(const circuits_model *model, const circuits_cache *cache,
                                         const circuits_resid_options *opts, float *stack,
                                         int64_t n_components, int64_t batch, int64_t n_pos);
/* W_U[:, tokens[i]] for n tokens: out [n, d_model] (tokens_to_residual_directions). */
CIRCUITS_API int circuits_model_residual_directions(const circuits_model *model, const int32_t *tokens,
                                                    int64_t n, float *out);
/* logit_attrs: out [n_components, batch, n_pos] = apply_ln(stack, layer n_layers) . (W_U[:, t] -
 * W_U[:, incorrect t]) (incorrect_tokens may be NULL). tokens has 1 entry (for every row) or
 * batch * n_pos. Reads positions and batch_indices of opts (may be NULL). */
CIRCUITS_API int circuits_resid_logit_attrs(const circuits_model *model, const circuits_cache *cache,
                                            const circuits_resid_options *opts, const float *stack,
                                            int64_t n_components, int64_t batch, int64_t n_pos,
                                            const int32_t *tokens, const int32_t *incorrect_tokens,
                                            int64_t n_tokens, float *out);
/* The logit lens in one call: out [n_components, batch, n_pos, d_vocab_out] = ln_final(each
 * accumulated residual, statistics recomputed) @ W_U (+ b_U); the components and labels are
 * CIRCUITS_RESID_ACCUMULATED's for these opts (apply_ln is ignored). */
CIRCUITS_API int circuits_logit_lens(const circuits_model *model, const circuits_cache *cache,
                                     const circuits_resid_options *opts, float *out, size_t out_len);
/* Direct logit attribution in one call: the stack of `kind` (apply_ln ignored) through
 * circuits_resid_logit_attrs: out [n_components, batch, n_pos]. The stack is never formed (one
 * component in memory at a time), so every neuron of a model costs no more memory than a head. */
CIRCUITS_API int circuits_direct_logit_attribution(const circuits_model *model, const circuits_cache *cache,
                                                   int kind, const circuits_resid_options *opts,
                                                   const int32_t *tokens, const int32_t *incorrect_tokens,
                                                   int64_t n_tokens, float *out, size_t out_len);

/* ---------------------------------------------------------------------------------------- */
/* Factored matrices (TransformerLens FactoredMatrix)                                        */
/* ---------------------------------------------------------------------------------------- */

/* M = A·B kept as its factors: A [batch, ldim, mdim], B [batch, mdim, rdim] (batch may be
 * the leading [n_layers, n_heads] of a model's circuits). Nothing of size ldim x rdim is
 * formed unless circuits_factored_materialize is asked to. Results that are factored are new
 * objects the caller frees; dense outputs go into caller buffers of the documented shape. */
typedef struct circuits_factored circuits_factored;

/* Copies A [batch, ldim, mdim] and B [batch, mdim, rdim] (contiguous). */
CIRCUITS_API int circuits_factored_create(circuits_factored **out, const float *A, const float *B, int64_t batch,
                                          int64_t ldim, int64_t mdim, int64_t rdim);
CIRCUITS_API void circuits_factored_free(circuits_factored *f);
/* shape = leading dims then [ldim, rdim] (at most 4 entries); *mdim (may be NULL) the inner dim. */
CIRCUITS_API int circuits_factored_shape(const circuits_factored *f, int64_t *shape, int32_t *ndim, int64_t *mdim);
/* Views of the factors (valid while f lives); either pointer may be NULL. */
CIRCUITS_API int circuits_factored_factors(const circuits_factored *f, circuits_tensor *A, circuits_tensor *B);
/* M^T = B^T A^T. */
CIRCUITS_API int circuits_factored_transpose(const circuits_factored *f, circuits_factored **out);
/* left · right: (left · right.A) · right.B, each step keeping the cheaper factorisation as
 * TransformerLens does; batches broadcast when one of them is 1. */
CIRCUITS_API int circuits_factored_matmul(const circuits_factored *left, const circuits_factored *right,
                                          circuits_factored **out);
/* M · X, X [x_batch (1 or batch), rdim, n]. */
CIRCUITS_API int circuits_factored_matmul_dense(const circuits_factored *f, const float *X, int64_t x_batch, int64_t n,
                                                circuits_factored **out);
/* X · M, X [x_batch (1 or batch), n, ldim]. */
CIRCUITS_API int circuits_factored_rmatmul_dense(const float *X, int64_t x_batch, int64_t n, const circuits_factored *f,
                                                 circuits_factored **out);
/* y [batch, ldim] = M x, x [rdim]. */
CIRCUITS_API int circuits_factored_matvec(const circuits_factored *f, const float *x, float *y);
/* y [batch, rdim] = x M, x [ldim]. */
CIRCUITS_API int circuits_factored_vecmat(const float *x, const circuits_factored *f, float *y);
/* Frobenius norms, out [batch]. */
CIRCUITS_API int circuits_factored_norm(const circuits_factored *f, float *out);
/* Thin SVD M = U diag(S) V^T through the factors (LAPACK on the small core): U [batch, ldim, k],
 * S [batch, k], V [batch, rdim, k], k = min(ldim, mdim, rdim). U and V may be NULL. */
CIRCUITS_API int circuits_factored_svd(const circuits_factored *f, float *U, float *S, float *V);
/* Eigenvalues of M (square) from the small B·A [mdim, mdim]: re, im [batch, mdim], LAPACK's
 * order (unsorted); the other ldim - mdim eigenvalues of M are 0. */
CIRCUITS_API int circuits_factored_eigenvalues(const circuits_factored *f, float *re, float *im);
/* The top-left k x k block, out [batch, k, k]. */
CIRCUITS_API int circuits_factored_corner(const circuits_factored *f, int64_t k, float *out);
/* The diagonal, out [batch, min(ldim, rdim)]. */
CIRCUITS_API int circuits_factored_diagonal(const circuits_factored *f, float *out);

#define CIRCUITS_TOPK_ROW 0    /* the largest entries of row `index` */
#define CIRCUITS_TOPK_COLUMN 1 /* of column `index` */
#define CIRCUITS_TOPK_ALL 2    /* of the whole matrix, computed in blocks of rows */
/* The k largest entries of matrix batch_index, descending: values [k], rows [k], cols [k];
 * *out_count (may be NULL) = min(k, number of entries). */
CIRCUITS_API int circuits_factored_topk(const circuits_factored *f, int64_t batch_index, int32_t axis, int64_t index,
                                        int64_t k, float *values, int64_t *rows, int64_t *cols, int64_t *out_count);
/* Writes M [batch, ldim, rdim] into out, refusing (CIRCUITS_E_RANGE) if that is more than
 * max_elements floats. */
CIRCUITS_API int circuits_factored_materialize(const circuits_factored *f, float *out, size_t max_elements);

/* ---------------------------------------------------------------------------------------- */
/* The circuits of a model                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* Per head, as factored matrices; layer and/or head -1 selects all (leading dims [n_layers,
 * n_heads], [n_layers] or [n_heads]):
 *   OV      = W_V W_O                  [d_model, d_model], inner d_head
 *   QK      = W_Q W_K^T                [d_model, d_model]
 *   full OV = W_E W_V W_O W_U          [d_vocab, d_vocab_out]
 *   full QK = W_E W_Q W_K^T W_E^T      [d_vocab, d_vocab]
 *   pos QK  = W_pos W_Q W_K^T W_pos^T  [n_ctx, n_ctx] (the previous-token stripe) */
CIRCUITS_API int circuits_model_ov(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out);
CIRCUITS_API int circuits_model_qk(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out);
CIRCUITS_API int circuits_model_full_ov(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out);
CIRCUITS_API int circuits_model_full_qk(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out);
CIRCUITS_API int circuits_model_pos_qk(const circuits_model *m, int32_t layer, int32_t head, circuits_factored **out);
/* Rotary models: the QK circuit of head (layer, head) WITH the rotation (model.QK and
 * circuits_model_qk leave it out), for relative offsets delta = 0 .. n_offsets - 1 (query
 * position minus key position): M[delta] = W_Q R(delta) W_K^T [d_model, d_model], leading dim
 * [n_offsets], factors A = W_Q R(delta) and B = W_K^T. The score of a query residual x_i for a
 * key residual x_j = x_{i - delta} is x_i M[delta] x_j^T plus bias terms, times 1 / attn_scale.
 * n_offsets in [1, n_ctx]. CIRCUITS_E_UNSUPPORTED if the model is not rotary. */
CIRCUITS_API int circuits_model_rotary_qk(const circuits_model *m, int32_t layer, int32_t head, int64_t n_offsets,
                                          circuits_factored **out);

#define CIRCUITS_COMPOSITION_Q 0 /* the writer's output feeds the reader's queries */
#define CIRCUITS_COMPOSITION_K 1 /* ... its keys */
#define CIRCUITS_COMPOSITION_V 2 /* ... its values */

/* The full composition circuit of head A (earlier) into head B, over tokens [d_vocab, *]:
 *   K: W_E QK^B (OV^A)^T W_E^T   Q: W_E OV^A QK^B W_E^T   V: W_E OV^A OV^B W_U */
CIRCUITS_API int circuits_model_composition_circuit(const circuits_model *m, int32_t mode, int32_t layer_a,
                                                    int32_t head_a, int32_t layer_b, int32_t head_b,
                                                    circuits_factored **out);
/* The V-composition virtual head OV^A OV^B [d_model, d_model]. */
CIRCUITS_API int circuits_model_virtual_ov(const circuits_model *m, int32_t layer_a, int32_t head_a, int32_t layer_b,
                                           int32_t head_b, circuits_factored **out);

#define CIRCUITS_WRITER_EMBED 0     /* W_E [d_vocab, d_model] */
#define CIRCUITS_WRITER_POS_EMBED 1 /* W_pos [n_ctx, d_model] */
#define CIRCUITS_WRITER_HEAD 2      /* W_O of (layer, head) [d_head, d_model] */
#define CIRCUITS_WRITER_MLP 3       /* W_out of layer [d_mlp, d_model] */
#define CIRCUITS_READER_Q 0         /* W_Q of (layer, head) [d_model, d_head] */
#define CIRCUITS_READER_K 1
#define CIRCUITS_READER_V 2
#define CIRCUITS_READER_MLP 3       /* W_in of layer [d_model, d_mlp] */
#define CIRCUITS_READER_UNEMBED 4   /* W_U [d_model, d_vocab_out] */
/* Virtual weights W_write · W_read between a writer and a reader of the residual stream,
 * factored through d_model: [writer rows, reader columns]. layer/head are ignored where the
 * kind has none. */
CIRCUITS_API int circuits_model_virtual_weights(const circuits_model *m, int32_t writer, int32_t writer_layer,
                                                int32_t writer_head, int32_t reader, int32_t reader_layer,
                                                int32_t reader_head, circuits_factored **out);

/* Composition scores of every head pair, out [n_layers, n_heads, n_layers, n_heads]
 * (writer, reader): ||W_OV^A R^B||_F / (||W_OV^A||_F ||R^B||_F) with R = W_Q W_K^T (Q),
 * W_K W_Q^T (K), W_V W_O (V); zero unless layer(A) < layer(B). TransformerLens's
 * all_composition_scores. Any d_head, also d_head > d_model. */
CIRCUITS_API int circuits_model_composition_scores(const circuits_model *m, int32_t mode, float *out);
/* The same with each layer's MLP output (W_out) as the writer: out [n_layers, n_layers,
 * n_heads] (writer layer, reader layer, reader head), zero unless writer layer < reader layer. */
CIRCUITS_API int circuits_model_mlp_composition_scores(const circuits_model *m, int32_t mode, float *out);
/* The score of random matrices of the same shapes and ranks: mean (and std, may be NULL) over
 * n_samples draws of Gaussian factors (writer W_V [d_model, d_head], W_O [d_head, d_model], or
 * W_out [d_mlp, d_model] when d_mlp > 0; reader two [d_model, d_head] factors). The same for
 * all three modes. Roughly 1/sqrt(d_model) (docs/circuits.md). */
CIRCUITS_API int circuits_composition_baseline(int64_t d_model, int64_t d_head, int64_t d_mlp, int64_t n_samples,
                                               uint64_t seed, float *mean, float *std);
/* OV copying score per head, Re(sum lambda) / sum |lambda| over the eigenvalues of OV
 * (full = 0) or of the full OV circuit W_E OV W_U (full = 1): out [n_layers, n_heads]. */
CIRCUITS_API int circuits_model_copying_scores(const circuits_model *m, int32_t full, float *out);

/* ---------------------------------------------------------------------------------------- */
/* Head detectors (TransformerLens head_detector.detect_head) and induction scores           */
/* ---------------------------------------------------------------------------------------- */

#define CIRCUITS_HEAD_PREVIOUS_TOKEN 0 /* detection pattern: 1 at (i, i - 1) */
#define CIRCUITS_HEAD_DUPLICATE_TOKEN 1 /* 1 at (i, j), j < i, where token j == token i */
#define CIRCUITS_HEAD_INDUCTION 2      /* 1 at (i, j + 1), j < i, where token j == token i */
#define CIRCUITS_HEAD_CUSTOM 3         /* a caller-given lower-triangular [pos, pos] pattern */
#define CIRCUITS_DETECT_MUL 0          /* sum(P * det) / sum(P): the share of attention on the pattern */
#define CIRCUITS_DETECT_ABS 1          /* 1 - sum|P - det| / pos (TransformerLens then rounds to 3 places; we do not) */

typedef struct circuits_detect_options {
    uint32_t size;                 /* sizeof(circuits_detect_options) */
    int32_t error_measure;         /* CIRCUITS_DETECT_MUL (default) or CIRCUITS_DETECT_ABS */
    int32_t exclude_bos;           /* ignore attention to position 0 */
    int32_t exclude_current_token; /* ignore attention to the diagonal */
    /* Added in 0.5.0. A 0.4.0 caller's struct ends above. */
    /* [batch, pos] of 0/1, or NULL: padding as in circuits_run_options; each row is then scored on
     * its real positions only, as if it ran alone (its first real token is position 0 for
     * exclude_bos; a custom pattern is read at real positions). */
    const int32_t *attention_mask;
} circuits_detect_options;

CIRCUITS_API void circuits_detect_options_init(circuits_detect_options *opts);
/* Runs tokens [batch, pos] and scores every head's hook_pattern against a detection pattern:
 * out [n_layers, n_heads], the mean over the batch of each sequence's score. The context's own
 * hooks fire too. opts may be NULL for defaults. */
CIRCUITS_API int circuits_context_detect_heads(circuits_context *ctx, const int32_t *tokens, int64_t batch, int64_t pos,
                                               int32_t kind, const float *custom_pattern,
                                               const circuits_detect_options *opts, float *out);

/* Random tokens repeated twice: out [batch, 2 * seq_len (+1)], each row [bos?, r_1..r_L,
 * r_1..r_L] with r uniform in [0, d_vocab) from a seeded generator; bos < 0 for none. */
CIRCUITS_API int circuits_repeated_tokens(int64_t batch, int64_t seq_len, int32_t d_vocab, uint64_t seed, int32_t bos,
                                          int32_t *out);
/* Induction score of every head on such tokens [batch, pos = 2 * seq_len (+1 with a BOS)]:
 * the mean attention on the diagonal at offset 1 - seq_len (each token of the repeat to the
 * token after its first occurrence), out [n_layers, n_heads]; and (either may be NULL) the
 * mean loss on tokens 2..L of the first block and of the repeat. */
CIRCUITS_API int circuits_context_induction_scores(circuits_context *ctx, const int32_t *tokens, int64_t batch,
                                                   int64_t pos, int64_t seq_len, float *scores, float *loss_first,
                                                   float *loss_repeat);

/* The ranked answer report of TransformerLens's utils.test_prompt on one row of logits
 * [d_vocab] (Added in 0.5.0): the rank of `token` (the number of tokens with a larger logit,
 * ties ranked by id) in rank_out and its softmax probability in prob_out (both may be NULL;
 * token is then not read), and the k most probable tokens in descending order with their
 * probabilities in top_ids / top_probs [k] (either may be NULL; k may be 0). */
CIRCUITS_API int circuits_logits_rank(const float *logits, int64_t d_vocab, int32_t token, int32_t k, int64_t *rank_out,
                                      float *prob_out, int32_t *top_ids, float *top_probs);

/* ---------------------------------------------------------------------------------------- */
/* Tokenizers                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* A BPE tokenizer: byte-level (GPT-2, GPT-NeoX/Pythia, Llama 3, Qwen2) or SentencePiece-style
 * (Llama 1/2, Mistral, Gemma); docs/tokenizer.md. Read-only once
 * loaded: one tokenizer may be used from any number of threads at once. */
typedef struct circuits_tokenizer circuits_tokenizer;

/* Loads a tokenizer from a file or a model directory. A directory is searched, in this order,
 * for tokenizer.json (Hugging Face tokenizers), vocab.json + merges.txt, encoder.json +
 * vocab.bpe (OpenAI GPT-2), and a single *.gguf file (its tokenizer.ggml.* metadata). A file
 * is recognised by its content (GGUF magic; a JSON object with "model" is tokenizer.json,
 * another is a vocabulary whose merges.txt or vocab.bpe lies beside it). tokenizer_config.json
 * and special_tokens_map.json beside the files, when present, name the BOS/EOS tokens. */
CIRCUITS_API int circuits_tokenizer_load(circuits_tokenizer **out, const char *path);
CIRCUITS_API void circuits_tokenizer_free(circuits_tokenizer *tok);

typedef struct circuits_encode_options {
    uint32_t size;            /* sizeof(circuits_encode_options) */
    int32_t prepend_bos;      /* 1: the BOS token first (TransformerLens's prepend_bos); default 0;
                               * -1: the special tokens the tokenizer's post-processor adds (BOS
                               * and/or EOS, as Hugging Face's encode(text) by default) */
    int32_t add_prefix_space; /* -1 (default): the tokenizer's setting; 0: no; 1: a space before
                               * every text segment that does not start with one */
    int32_t parse_special;    /* 1 (default): the text of special tokens ("<|endoftext|>") becomes
                               * their id; 0: it is encoded as ordinary text */
} circuits_encode_options;

CIRCUITS_API void circuits_encode_options_init(circuits_encode_options *opts);

/* Encodes len bytes of text (UTF-8; invalid bytes are encoded as themselves: docs/tokenizer.md)
 * into ids[0..cap). *n_out receives the number of ids; if that is more than cap the call fails
 * with CIRCUITS_E_RANGE and *n_out is the capacity needed (call with cap 0 to measure). opts may
 * be NULL for the defaults. */
CIRCUITS_API int circuits_tokenizer_encode(const circuits_tokenizer *tok, const char *text, size_t len,
                                           const circuits_encode_options *opts, int32_t *ids, size_t cap,
                                           size_t *n_out);
/* Decodes n ids into buf: the bytes of the tokens, concatenated (SentencePiece-style tokens with
 * "▁" as a space, <0xNN> as the byte, less the leading space the decoder strips), then a NUL.
 * *n_out receives the number of bytes (without the NUL); if buf is too small the call fails with
 * CIRCUITS_E_RANGE and *n_out is the capacity needed (bytes + 1). An id that is not a token is
 * CIRCUITS_E_RANGE. decode(encode(text)) == text for any bytes, except that a tokenizer with an
 * NFC normalizer (GPT-NeoX, Qwen2) gives back NFC(text), and a SentencePiece-style one a "▁" of
 * the text as a space (docs/tokenizer.md). */
CIRCUITS_API int circuits_tokenizer_decode(const circuits_tokenizer *tok, const int32_t *ids, size_t n, char *buf,
                                           size_t cap, size_t *n_out);
/* The bytes of one token (for to_str_tokens; possibly part of a UTF-8 character), as decode. */
CIRCUITS_API int circuits_tokenizer_token(const circuits_tokenizer *tok, int32_t id, char *buf, size_t cap,
                                          size_t *n_out);
/* 1 + the largest token id (GGUF: the length of tokenizer.ggml.tokens). */
CIRCUITS_API size_t circuits_tokenizer_vocab_size(const circuits_tokenizer *tok);
/* The BOS / EOS token ids, or -1 if the tokenizer has none. */
CIRCUITS_API int32_t circuits_tokenizer_bos_id(const circuits_tokenizer *tok);
CIRCUITS_API int32_t circuits_tokenizer_eos_id(const circuits_tokenizer *tok);
/* The tokenizer found in the model's directory at load (tokenizer.json, vocab.json + merges.txt,
 * encoder.json + vocab.bpe or *.gguf), or NULL if it has none. Borrowed: valid while the model
 * lives. A tokenizer file that is present but broken fails circuits_model_load. */
CIRCUITS_API const circuits_tokenizer *circuits_model_tokenizer(const circuits_model *model);

/* ---------------------------------------------------------------------------------------- */
/* Generation and the KV cache (TransformerLens generate, past_kv_cache); docs/generation.md */
/* ---------------------------------------------------------------------------------------- */

/* A KV cache: every layer's keys and values (as hook_k / hook_v left them) for the positions
 * run so far, and their attention mask (circuits_run_options.attention_mask; ones where a run
 * gave none), so that a continuation runs only its new positions. */
typedef struct circuits_kv_cache circuits_kv_cache;

/* An empty cache for `batch` sequences of up to max_pos positions (0: n_ctx; at most n_ctx).
 * It takes 2 * n_layers * batch * max_pos * n_heads * d_head floats. The model must outlive it. */
CIRCUITS_API int circuits_kv_cache_create(circuits_kv_cache **out, const circuits_model *model, int64_t batch,
                                          int64_t max_pos);
CIRCUITS_API void circuits_kv_cache_free(circuits_kv_cache *kv);
/* Positions held (0 for NULL). */
CIRCUITS_API int64_t circuits_kv_cache_length(const circuits_kv_cache *kv);
/* Forgets every position from `length` on (0 empties it), e.g. to run several continuations of
 * one cached prefix. length must not exceed the current length. */
CIRCUITS_API int circuits_kv_cache_truncate(circuits_kv_cache *kv, int64_t length);
/* Views of layer `layer`'s cached keys and values, [batch, length, n_key_value_heads, d_head]
 * (either may be NULL; rotary keys are stored rotated, as hook_rot_k left them); valid until the
 * cache is changed or freed. */
CIRCUITS_API int circuits_kv_cache_layer(const circuits_kv_cache *kv, int32_t layer, circuits_tensor *keys,
                                         circuits_tensor *values);

/* circuits_context_forward continuing a KV cache (TransformerLens's model(tokens,
 * past_kv_cache=kv)): tokens [batch, pos] are positions L .. L+pos-1, L = its length (W_pos[L +
 * i]); logits (may be NULL) [batch, pos, d_vocab_out]. Hooks see the new positions only, except
 * attn_scores / pattern: [batch, n_heads, pos, L + pos]. On success the new keys and values
 * are appended (length L + pos); on failure the cache is unchanged. */
CIRCUITS_API int circuits_context_forward_kv(circuits_context *ctx, circuits_kv_cache *kv, const int32_t *tokens,
                                             int64_t batch, int64_t pos, float *logits);

/* Called once per generated position, after the tokens are chosen: tokens [batch] (the new
 * column, EOS for finished rows), logits [batch, d_vocab_out] (the raw logits they were chosen
 * from). Return 0 to go on, CIRCUITS_HOOK_STOP to end generation there (a success), a negative
 * value to fail it (CIRCUITS_E_CALLBACK). It must not call into the generating context. */
typedef int (*circuits_generate_fn)(int64_t step, const int32_t *tokens, const float *logits, int64_t batch,
                                    void *user_data);

typedef struct circuits_generate_options {
    uint32_t size;            /* sizeof(circuits_generate_options) */
    int32_t max_new_tokens;   /* tokens to generate per row (default 10) */
    int32_t do_sample;        /* 1 (default): sample; 0: greedy (argmax of the raw logits) */
    float temperature;        /* logits / temperature before sampling; 0: greedy (default 1) */
    int32_t top_k;            /* > 0: sample among the k largest logits (ties kept); 0: off (default) */
    float top_p;              /* in (0, 1]: nucleus sampling; 0: off (default). Ignored if top_k > 0 */
    float freq_penalty;       /* >= 0: subtracted times each token's count in the row so far (default 0) */
    uint64_t seed;            /* the sampler's seed: the same seed gives the same tokens (default 0) */
    int32_t stop_at_eos;      /* 1 (default): a row that emits EOS is finished and pads with EOS;
                               * generation ends when every row is finished */
    int32_t eos_token_id;     /* -1 (default): the model's tokenizer's EOS; needed when stop_at_eos */
    int32_t use_kv_cache;     /* 1 (default): each step runs the new position only; 0: the whole sequence */
    circuits_generate_fn on_step; /* may be NULL (default) */
    void *user_data;          /* passed to on_step */
    /* Added in 0.5.0. A 0.4.0 caller's struct ends above. */
    /* NULL (default): every prompt token is real. Else the prompt's [batch, prompt_len] mask of
     * 0/1 (circuits_run_options.attention_mask): a batch of prompts of different lengths, padded
     * on the left (a row ending in padding is refused); generated tokens are real. */
    const int32_t *attention_mask;
} circuits_generate_options;

/* Fills *opts with the defaults, those of TransformerLens's HookedTransformer.generate. */
CIRCUITS_API void circuits_generate_options_init(circuits_generate_options *opts);

/* Continues prompt [batch, prompt_len] (every row the same length) by up to max_new_tokens
 * tokens, as TransformerLens's generate does: out [batch, prompt_len + max_new_tokens] gets the
 * prompt then the generated tokens; *out_len (may be NULL) the number of columns written, less
 * than the buffer's width when every row finished early (columns past it are not written). The
 * context's hooks fire at every step. prompt_len + max_new_tokens must not exceed n_ctx. opts
 * may be NULL for the defaults. On failure out[:, :*out_len] holds what was generated. */
CIRCUITS_API int circuits_context_generate(circuits_context *ctx, const int32_t *prompt, int64_t batch,
                                           int64_t prompt_len, const circuits_generate_options *opts,
                                           int32_t *out, int64_t *out_len);

/* ---------------------------------------------------------------------------------------- */
/* Losses and metrics (0.5.0; docs/analysis.md)                                             */
/* ---------------------------------------------------------------------------------------- */

/* TransformerLens's utils.lm_cross_entropy_loss: the loss of predicting each next token.
 * logits [batch, pos, d_vocab], tokens [batch, pos] (every tokens[b, i >= 1] < d_vocab),
 * attention_mask [batch, pos] of 0/1, or NULL for none. per_token (may be NULL) [batch, pos - 1]:
 * -log_softmax(logits[b, i])[tokens[b, i + 1]], and 0 where the mask excludes position i or
 * i + 1; loss (may be NULL): the mean over the pairs the mask includes (sums in double). A mask
 * that includes no pair has no mean: CIRCUITS_E_SHAPE when loss is asked for. */
CIRCUITS_API int circuits_lm_cross_entropy(const float *logits, const int32_t *tokens, const int32_t *attention_mask,
                                           int64_t batch, int64_t pos, int64_t d_vocab, float *per_token,
                                           float *loss);

/* What a patching or ablation run measures: a scalar from the logits, the mean over the batch
 * of one value per row (as TransformerLens metrics such as logits_to_ave_logit_diff), each row
 * read at its own position p_b. */
typedef enum circuits_metric_kind {
    CIRCUITS_METRIC_LOGIT_DIFF = 0, /* logits[b, p_b, answer[b]] - logits[b, p_b, wrong[b]] */
    CIRCUITS_METRIC_LOGIT = 1,      /* logits[b, p_b, answer[b]] */
    CIRCUITS_METRIC_PROB = 2,       /* softmax(logits[b, p_b])[answer[b]] */
    CIRCUITS_METRIC_LOG_PROB = 3,   /* log_softmax(logits[b, p_b])[answer[b]] */
    CIRCUITS_METRIC_LOSS = 4,       /* circuits_lm_cross_entropy(logits, tokens, attention_mask):
                                     * the mean over included pairs, not over rows */
    CIRCUITS_METRIC_CALLBACK = 5,   /* fn(logits of every position) */
    /* Added in 0.7.0 (docs/gradients.md): */
    CIRCUITS_METRIC_TOKEN_LOSS = 6, /* the next-token loss at p_b: -log_softmax(logits[b, p_b])[tokens[b,
                                     * p_b + 1]] (p_b < pos - 1), mean over rows */
    CIRCUITS_METRIC_HOOK_LINEAR = 7, /* sum over every element of hook point `hook`'s activation times
                                     * `direction` (the hook's TL shape for the run): gradient runs only
                                     * (it reads no logits; circuits_metric_eval and patching refuse it) */
    CIRCUITS_METRIC_GRAD_CALLBACK = 8 /* grad_fn(logits of every position): the value and its gradient
                                     * with respect to the logits */
} circuits_metric_kind;

/* A metric callback: logits [batch, pos, d_vocab] (read-only, valid during the call); writes the
 * metric to *value and returns 0, or a negative value to fail (CIRCUITS_E_CALLBACK). */
typedef int (*circuits_metric_fn)(const float *logits, int64_t batch, int64_t pos, int64_t d_vocab, float *value,
                                  void *user_data);

/* A metric callback with its gradient (0.7.0): logits [batch, pos, d_vocab] (read-only); writes the
 * metric to *value and d metric / d logits to grad [batch, pos, d_vocab] (zeroed before the call),
 * returns 0, or a negative value to fail (CIRCUITS_E_CALLBACK). */
typedef int (*circuits_metric_grad_fn)(const float *logits, int64_t batch, int64_t pos, int64_t d_vocab,
                                       float *value, float *grad, void *user_data);

typedef struct circuits_metric {
    uint32_t size;                 /* sizeof(circuits_metric) */
    int32_t kind;                  /* circuits_metric_kind */
    const int64_t *positions;      /* [batch]: p_b, negative counting from the end; NULL: the last */
    const int32_t *answer;         /* [batch]: LOGIT_DIFF, LOGIT, PROB, LOG_PROB */
    const int32_t *wrong;          /* [batch]: LOGIT_DIFF */
    const int32_t *tokens;         /* [batch, pos]: LOSS */
    const int32_t *attention_mask; /* [batch, pos] or NULL: LOSS */
    circuits_metric_fn fn;         /* CALLBACK */
    void *user_data;               /* passed to fn and grad_fn */
    /* Added in 0.7.0. A 0.5.0 caller's struct ends above. */
    const char *hook;              /* HOOK_LINEAR: one hook point, full or short name */
    const float *direction;        /* HOOK_LINEAR: the point's TL shape for the run's [batch, pos] */
    circuits_metric_grad_fn grad_fn; /* GRAD_CALLBACK */
} circuits_metric;

/* Sets size; kind LOGIT_DIFF and every pointer NULL. */
CIRCUITS_API void circuits_metric_init(circuits_metric *m);

/* The metric of logits [batch, pos, d_vocab] into *value. Checks every index the metric reads. */
CIRCUITS_API int circuits_metric_eval(const circuits_metric *m, const float *logits, int64_t batch, int64_t pos,
                                      int64_t d_vocab, float *value);

/* ---------------------------------------------------------------------------------------- */
/* Ablation and patching (0.5.0; docs/patching.md)                                          */
/* ---------------------------------------------------------------------------------------- */

/* Ablation of a slice of one hook point during a run: zero, mean (values from
 * circuits_context_mean_activations) or resample (values: another batch's activations of the
 * point, each row replaced by a source row drawn with `seed`). The slice is every element of the
 * point, narrowed by a position (the dest axis of attn_scores / pattern), a head (the point's
 * head axis: hook_q/k/v/z/result/attn_scores/pattern) and a neuron (the last axis: hook_pre /
 * hook_post for MLP neurons), each optional. */
typedef enum circuits_ablation_kind {
    CIRCUITS_ABLATE_ZERO = 0,
    CIRCUITS_ABLATE_MEAN = 1,
    CIRCUITS_ABLATE_RESAMPLE = 2
} circuits_ablation_kind;

/* circuits_ablation.position: every position (INT64_MIN) */
#define CIRCUITS_ALL_POSITIONS (-9223372036854775807LL - 1)

typedef struct circuits_ablation {
    uint32_t size;          /* sizeof(circuits_ablation) */
    int32_t kind;           /* circuits_ablation_kind */
    const char *hook;       /* one hook point: full or short name ("z3", "blocks.3.attn.hook_z") */
    int32_t head;           /* -1: every head */
    int64_t neuron;         /* -1: every index of the last axis */
    int64_t position;       /* CIRCUITS_ALL_POSITIONS, or a position (negative from the end) */
    const float *values;    /* MEAN: the point's mean, its TL shape without the batch axis, for the
                             * run's pos; RESAMPLE: [source_batch, <that shape>] */
    int64_t source_batch;   /* RESAMPLE */
    uint64_t seed;          /* RESAMPLE: row b takes source row splitmix64(seed)_b % source_batch */
} circuits_ablation;

/* Sets size; kind ZERO, head -1, neuron -1, position CIRCUITS_ALL_POSITIONS, the rest 0. */
CIRCUITS_API void circuits_ablation_init(circuits_ablation *a);

/* circuits_context_forward (logits [batch, pos, d_vocab_out] and the mean loss, each may be NULL)
 * with n_ablations ablations applied, in order, after the registered hooks of their points. */
CIRCUITS_API int circuits_context_run_ablated(circuits_context *ctx, const circuits_ablation *ablations,
                                              size_t n_ablations, const int32_t *tokens, int64_t batch,
                                              int64_t pos, float *logits, float *loss);

/* The mean over n_rows rows of tokens [n_rows, pos] of each hook point hooks[i] (one point per
 * name) into means[i] (its TL shape without the batch axis, e.g. [pos, d_model]), computed in
 * one pass over batches of batch_size rows with running sums in double: memory is bounded by a
 * batch's run and one row of each point. The pass stops after the last block it needs. */
CIRCUITS_API int circuits_context_mean_activations(circuits_context *ctx, const char *const *hooks, size_t n_hooks,
                                                   const int32_t *tokens, int64_t n_rows, int64_t pos,
                                                   int64_t batch_size, float *const *means);

/* Activation patching (TransformerLens's patching module): one run of the corrupted tokens per
 * grid cell, with the cell's slice of one hook point replaced by the clean run's, as
 * TransformerLens's patch setters do, and the metric of its logits in the cell. Grids (shape by
 * circuits_patch_grid_shape; H = n_heads, n_key_value_heads for k and v):
 *   RESID_PRE/MID/POST, ATTN_OUT, MLP_OUT       [n_layers, pos]        get_act_patch_resid_pre, ...
 *   HEAD_{Z,Q,K,V}_BY_POS                       [n_layers, pos, H]     get_act_patch_attn_head_out_by_pos, ...
 *   HEAD_PATTERN_BY_POS                         [n_layers, H, pos]     (dest positions)
 *   HEAD_PATTERN_DEST_SRC                       [n_layers, H, pos, pos]
 *   HEAD_{Z,Q,K,V,PATTERN}_ALL_POS              [n_layers, H]          get_act_patch_attn_head_out_all_pos, ... */
typedef enum circuits_patch_kind {
    CIRCUITS_PATCH_RESID_PRE = 0,
    CIRCUITS_PATCH_RESID_MID = 1,
    CIRCUITS_PATCH_RESID_POST = 2,
    CIRCUITS_PATCH_ATTN_OUT = 3,
    CIRCUITS_PATCH_MLP_OUT = 4,
    CIRCUITS_PATCH_HEAD_Z_BY_POS = 5,
    CIRCUITS_PATCH_HEAD_Q_BY_POS = 6,
    CIRCUITS_PATCH_HEAD_K_BY_POS = 7,
    CIRCUITS_PATCH_HEAD_V_BY_POS = 8,
    CIRCUITS_PATCH_HEAD_PATTERN_BY_POS = 9,
    CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC = 10,
    CIRCUITS_PATCH_HEAD_Z_ALL_POS = 11,
    CIRCUITS_PATCH_HEAD_Q_ALL_POS = 12,
    CIRCUITS_PATCH_HEAD_K_ALL_POS = 13,
    CIRCUITS_PATCH_HEAD_V_ALL_POS = 14,
    CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS = 15
} circuits_patch_kind;

typedef struct circuits_patch_options {
    uint32_t size;       /* sizeof(circuits_patch_options) */
    int32_t incremental; /* 1 (default): each patched run starts at the patched block from the
                          * corrupted run's residual stream and runs only the positions from the
                          * first patched one, the earlier ones' keys and values reused (same
                          * results; docs/patching.md); 0: whole re-runs, as TransformerLens */
    int32_t cells_per_run; /* 0 (default): several cells per run, as many as fill about 2048 token
                            * rows (at most 256), each cell its own batch rows; 1: one cell per
                            * run, as TransformerLens */
} circuits_patch_options;

CIRCUITS_API void circuits_patch_options_init(circuits_patch_options *opts);

/* The grid's shape for tokens of `pos` positions into shape[0 .. *ndim) (room for 4). */
CIRCUITS_API int circuits_patch_grid_shape(const circuits_model *model, int32_t kind, int64_t pos, int64_t *shape,
                                           int32_t *ndim);

/* The patching grid of `kind` into out (circuits_patch_grid_shape). corrupted_tokens [batch,
 * pos]; clean[l] (l < n_layers): the clean run's activation of the patched hook point of block
 * l, contiguous in its TL shape for [batch, pos] (e.g. a circuits_cache entry of the clean run).
 * The context's registered hooks fire in every patched run (incremental runs cover only blocks
 * >= the patched one and positions >= the first patched one, and a cell whose patch cannot
 * reach a position the metric reads is not run). The context is held for the whole grid: a metric
 * callback (called between runs) must not call into it (refused, CIRCUITS_E_INVALID_ARGUMENT).
 * opts may be NULL. On failure the contents of out are unspecified (cells computed before the
 * failure are written). */
CIRCUITS_API int circuits_context_activation_patch(circuits_context *ctx, int32_t kind, const int32_t *corrupted_tokens,
                                                   int64_t batch, int64_t pos, const float *const *clean,
                                                   const circuits_metric *metric,
                                                   const circuits_patch_options *opts, float *out);

/* ---------------------------------------------------------------------------------------- */
/* Path patching (0.5.0; docs/patching.md)                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Path patching as in the IOI paper (Wang et al. 2022) and ARENA's implementation of it: the
 * effect of the path from sender heads to receivers, on the metric. Step 1 runs the clean and the
 * corrupted tokens once each (caching hook_z of every head, hook_resid_post, and hook_mlp_out
 * with freeze_mlps). Step 2 runs the clean tokens with every head's hook_z frozen at its clean
 * value except the senders', which take their corrupted value; MLPs are recomputed (they carry
 * the senders' effect on, as in the IOI paper and ARENA), or with freeze_mlps frozen at their
 * clean hook_mlp_out. Receiver = the logits: the metric of step 2's logits is the result.
 * Receivers = heads: step 2 records the receivers' inputs (hook_q, hook_k or hook_v of that
 * head), and step 3 runs the clean tokens with only those inputs replaced, everything else
 * recomputed; the metric of step 3's logits is the result. Denoising (corrupted run, clean
 * senders) is the same call with the token arrays swapped. The context's hooks fire in every run,
 * before path patching's own. */

/* A head: a sender (input ignored) or a receiver, whose input is CIRCUITS_READER_Q, _K or _V
 * (hook_q, hook_k, hook_v; for K and V, head indexes the n_key_value_heads K/V heads). A fixed
 * layout, like circuits_tensor. */
typedef struct circuits_path_head {
    int32_t layer;
    int32_t head;
    int32_t input;
} circuits_path_head;

typedef struct circuits_path_patch_options {
    uint32_t size;                       /* sizeof(circuits_path_patch_options) */
    const circuits_path_head *receivers; /* [n_receivers]; NULL / 0 (default): the logits */
    int64_t n_receivers;
    int32_t freeze_mlps;                 /* 0 (default): MLPs recomputed in step 2; 1: frozen at
                                          * their clean value (only direct head-to-receiver paths) */
} circuits_path_patch_options;

/* Sets size and the defaults: receiver the logits, MLPs recomputed. */
CIRCUITS_API void circuits_path_patch_options_init(circuits_path_patch_options *opts);

/* Path patching of senders [n_senders] (distinct heads; none gives the clean run) on clean and
 * corrupted tokens [batch, pos]: *value (may be NULL) the metric of the patched run, logits (may
 * be NULL) its logits [batch, pos, d_vocab_out]. opts may be NULL for the defaults. On failure
 * the contents of *value and logits are unspecified. */
CIRCUITS_API int circuits_context_path_patch(circuits_context *ctx, const int32_t *clean, const int32_t *corrupted,
                                             int64_t batch, int64_t pos, const circuits_path_head *senders,
                                             int64_t n_senders, const circuits_metric *metric,
                                             const circuits_path_patch_options *opts, float *value, float *logits);

/* The IOI figure's grid: out [n_layers, n_heads], cell (l, h) the metric with head (l, h) as the
 * only sender. Step 1 runs once for the whole grid; each cell starts at layer l from the cached
 * clean residual stream (the layers before it are clean), so step 2 costs layers l .. the last
 * receiver's, step 3 the first receiver's layer .. the logits (receiver the logits: step 2 alone,
 * layers l .. the logits); the cells of one layer share runs (each its own batch rows, up to 2048
 * token rows per run). Cells with no path (l at or after every receiver's layer) hold the clean
 * metric without running. */
CIRCUITS_API int circuits_context_path_patch_sweep(circuits_context *ctx, const int32_t *clean,
                                                   const int32_t *corrupted, int64_t batch, int64_t pos,
                                                   const circuits_metric *metric,
                                                   const circuits_path_patch_options *opts, float *out);

/* ---------------------------------------------------------------------------------------- */
/* Comparing two models (0.6.0; docs/quantization.md)                                        */
/* ---------------------------------------------------------------------------------------- */

/* Quantization as an intervention: two models with the same shapes (an F32 model and its
 * Q4_K quantization, a model and a fine-tune, two weight processings) run on the same tokens,
 * and every hook point's activation of model B is compared with model A's. */
typedef struct circuits_diff circuits_diff;

typedef struct circuits_diff_options {
    uint32_t size;                  /* sizeof(circuits_diff_options) */
    /* [batch, pos] of 0/1, or NULL: padding as in circuits_run_options, for both runs. The
     * measures cover every position, padding included. */
    const int32_t *attention_mask;
    /* The hook points compared: n_names names or patterns as circuits_context_add_hook takes them
     * (each must select a point); NULL / 0 (default): every hook point. */
    const char *const *names;
    size_t n_names;
    int32_t logits;                 /* 1 (default): a last entry "logits" compares the logits */
    /* 1: after the entry of each point with a head axis (hook_q, hook_k, hook_v, hook_z,
     * hook_attn_scores, hook_pattern, hook_result ...), one entry per head over that head's slice
     * (head >= 0; K/V heads for hook_k / hook_v under grouped-query attention). 0 (default): none. */
    int32_t per_head;
} circuits_diff_options;

/* Sets size and the defaults: every hook point and the logits, no mask. */
CIRCUITS_API void circuits_diff_options_init(circuits_diff_options *opts);

/* Runs model a and model b on tokens [batch, pos] (each in a context of its own with the default
 * context options) and measures at each selected hook point how far b's activation is from a's.
 * The models must agree on what makes their hook points correspond: n_layers, d_model, n_heads,
 * d_head, d_mlp, n_key_value_heads, d_vocab and d_vocab_out (else CIRCUITS_E_CONFIG naming the
 * field), and the hook points themselves (names in order: the same normalization and block
 * structure). Model a's selected activations are held for the length of the call (as a cache of
 * them would be); model b's are compared as its run makes them, never stored. *out receives the
 * result (free with circuits_diff_free); opts may be NULL for the defaults. */
CIRCUITS_API int circuits_model_diff(const circuits_model *a, const circuits_model *b, const int32_t *tokens,
                                     int64_t batch, int64_t pos, const circuits_diff_options *opts,
                                     circuits_diff **out);
CIRCUITS_API void circuits_diff_free(circuits_diff *diff);

/* One hook point's comparison, over all its elements (a = model a's activation, b = model b's;
 * sums in double). The caller sets size = sizeof(circuits_diff_entry); the library fills what
 * fits. The strings belong to the diff. */
typedef struct circuits_diff_entry {
    uint32_t size;
    int32_t layer;          /* the block, or -1 (embeddings, ln_final, logits) */
    int32_t head;           /* -1: the whole point; else one head's slice (per_head) */
    const char *name;       /* the full hook name ("blocks.3.attn.hook_z"), or "logits" */
    const char *kind;       /* the name without "blocks.L." ("attn.hook_z"): the same for every layer */
    int64_t numel;          /* elements compared: all but those that are the same infinity in
                             * both (the -inf of masked attention scores) */
    double rel_error;       /* ||a - b||_F / ||a||_F (0 if both are 0; infinity if a is 0 and b is not) */
    double max_abs;         /* max |a - b| */
    double cosine;          /* <a, b> / (||a||_F ||b||_F) over the flattened tensors (1 if both
                             * are 0, 0 if one is) */
    double norm_a;          /* ||a||_F */
    double norm_b;          /* ||b||_F */
} circuits_diff_entry;

/* Entries in firing order (a point's per-head entries after it), the logits last. */
CIRCUITS_API size_t circuits_diff_count(const circuits_diff *diff);
/* Entry `index` into *out (CIRCUITS_E_RANGE past the end). */
CIRCUITS_API int circuits_diff_at(const circuits_diff *diff, size_t index, circuits_diff_entry *out);

/* ---------------------------------------------------------------------------------------- */
/* Gradients (0.7.0; docs/gradients.md)                                                      */
/* ---------------------------------------------------------------------------------------- */

/* A gradient run is a forward pass (forward hooks fire as in circuits_context_run) and a backward
 * pass from a scalar metric (circuits_metric: every kind but CALLBACK, whose gradient is unknown;
 * GRAD_CALLBACK gives one) back through every hook point, in reverse firing order, to the
 * embeddings (and, on request, to every weight), as PyTorch autograd through TransformerLens.
 *
 * The gradient at a point is d metric / d (the point's activation as the forward hooks left it),
 * with the forward activation's name, shape and layout. A point used several times (ln1's output
 * feeds q, k and v) gets the sum of every use's share; under use_split_qkv_input / use_attn_in,
 * ln1's hooks fire once per input, and so do their backward hooks (the cache keeps the last,
 * the query input's, as TransformerLens's does).
 *
 * A forward hook's edit is part of the computation the gradient goes through. A C callback is
 * opaque, so the run says how its edit passes the gradient: */
typedef enum circuits_edit_grad {
    CIRCUITS_EDIT_GRAD_REPLACE = 0, /* an element a forward hook (or ablation / patching editor) changed
                                     * is a constant: its gradient stops there (PyTorch's act[...] =
                                     * value: ablation, patching); unchanged elements pass it on */
    CIRCUITS_EDIT_GRAD_THROUGH = 1  /* every element passes the gradient on unchanged (PyTorch's act + v:
                                     * steering). Any other Jacobian: a backward hook at the same point
                                     * (it sees the gradient before this rule applies) */
} circuits_edit_grad;

/* Registers a backward hook: fn at every point `name` selects (as circuits_context_add_hook), called
 * in the backward pass of a gradient run with act = the gradient at that point. It may read it, edit
 * it in place (the edited gradient flows on to earlier points, as a TransformerLens backward hook's
 * returned gradient; the cache keeps the value before the edit, as TL's), or return
 * CIRCUITS_HOOK_STOP (the run returns CIRCUITS_E_STOPPED) or a negative value (CIRCUITS_E_CALLBACK).
 * act->data is the context's memory, valid during the call. Ids are shared with forward hooks:
 * circuits_context_remove_hook and circuits_context_clear_hooks remove either kind. Forward-only
 * runs never call it. */
CIRCUITS_API int circuits_context_add_backward_hook(circuits_context *ctx, const char *name,
                                                    circuits_hook_fn fn, void *user_data,
                                                    circuits_hook_id *out_id);

typedef struct circuits_backward_options {
    uint32_t size;                /* sizeof(circuits_backward_options) */
    /* NULL: a full run from the tokens. Else its attention_mask, and start_at_layer with input (the
     * gradient then reaches input_grad); stop_at_layer, logit_positions and kv_cache are refused. */
    const circuits_run_options *run;
    /* The points whose gradients (and activations, with cache_activations) go into the cache:
     * names or patterns as circuits_context_add_hook takes them; NULL / 0: every point. */
    const char *const *names_filter;
    size_t n_filter;
    int32_t cache_activations;    /* 1 (default): the cache holds the activations too (TransformerLens's
                                   * run_with_cache(incl_bwd=True)); 0: the gradients only */
    int32_t edit_grad;            /* circuits_edit_grad (default REPLACE) */
    int32_t weight_grads;         /* 1: the weight gradients into weight_grads (TransformerLens's
                                   * parameter names and shapes, as circuits_model_weight); default 0 */
    float *input_grad;            /* NULL, or [batch, pos, d_model]: the gradient with respect to the
                                   * residual stream the run starts from (embeddings summed, or
                                   * run->input) */
} circuits_backward_options;

/* Sets size and the defaults above. */
CIRCUITS_API void circuits_backward_options_init(circuits_backward_options *opts);

/* One forward and backward pass of tokens [batch, pos] for `metric`. Outputs (each may be NULL):
 * value, the metric; logits [batch, pos, d_vocab_out]; cache (emptied first): in firing order, each
 * selected point's activation under its hook name (with cache_activations) and its gradient under
 * name + "_grad", as TransformerLens's incl_bwd cache; weight_grads (emptied first): d metric / d
 * every weight, under its TransformerLens name. Forward hooks fire in the forward pass, backward
 * hooks in the backward pass. Models with weights kept in their stored dtype are refused (the
 * backward needs fp32 weights). opts may be NULL. On failure the outputs are unspecified and the
 * caches empty, holding no memory — except when the call is refused by its own checks before its
 * run starts (options, metric, sizes, a cache being filled by a run in progress), which leave them
 * untouched; the forward's checks of the tokens and the mask happen in the run. */
CIRCUITS_API int circuits_context_backward(circuits_context *ctx, const circuits_backward_options *opts,
                                           const int32_t *tokens, int64_t batch, int64_t pos,
                                           const circuits_metric *metric, float *value, float *logits,
                                           circuits_cache *cache, circuits_cache *weight_grads);

/* Attribution patching (Nanda 2023): the linear approximation of activation patching. For every
 * cell of the grid of `kind` (circuits_patch_kind; the same grids and shapes as
 * circuits_context_activation_patch), the sum over the cell's slice and the batch of
 * (source - base) * d metric / d activation, the gradient taken in one forward and backward of
 * `tokens` (the base run): an estimate of metric(base run with the cell patched from source) -
 * metric(base run). source[l] (l < n_layers): as activation_patch's `clean`, the patched point's
 * activation of block l from a run of the other tokens ([batch, pos] like tokens). value (may be
 * NULL): the base run's metric. The context's hooks fire (forward and backward). Clean-to-corrupted
 * (noising) attribution: tokens = clean, source = the corrupted run's activations; denoising
 * swaps them. */
CIRCUITS_API int circuits_context_attribution_patch(circuits_context *ctx, int32_t kind, const int32_t *tokens,
                                                    int64_t batch, int64_t pos, const float *const *source,
                                                    const circuits_metric *metric, float *value, float *out);

/* Edge attribution patching (Syed et al. 2023) and EAP with integrated gradients (Hanna et al.
 * 2024) over the graph of TransformerLens's EAP implementations: upstream nodes "input" (the
 * embeddings), "a{l}.h{h}" (a head's output, hook_result) and "m{l}" (an MLP's output); downstream
 * nodes "a{l}.h{h}<q>", "<k>", "<v>" (a head's query / key / value input, hook_q_input etc.; k and v
 * per key-value head), "m{l}" (an MLP's input) and "logits" (ln_final's input). An edge runs from an
 * upstream node to every downstream node after it (a head's output to its own layer's MLP, not in
 * parallel blocks). score(u -> v) = sum over batch and positions of (a_u(corrupted) - a_u(clean)) .
 * g_v, with g_v the gradient at v's input on the clean tokens (EAP), or its mean over ig_steps runs
 * whose embeddings go from the corrupted to the clean ones (EAP-IG). */
typedef struct circuits_eap_options {
    uint32_t size;       /* sizeof(circuits_eap_options) */
    int32_t ig_steps;    /* 0 (default): EAP; N > 0: EAP-IG with N interpolation steps */
} circuits_eap_options;

CIRCUITS_API void circuits_eap_options_init(circuits_eap_options *opts);

/* The graph's node counts for a model. */
CIRCUITS_API int circuits_eap_graph(const circuits_model *model, int64_t *n_upstream, int64_t *n_downstream);
/* The name of upstream (downstream = 0) or downstream (1) node `index` into buf. */
CIRCUITS_API int circuits_eap_node_name(const circuits_model *model, int32_t downstream, int64_t index, char *buf,
                                        size_t buf_size);
/* Edge scores [n_upstream, n_downstream] into scores (0 where no edge runs) for clean and corrupted
 * tokens [batch, pos]. opts may be NULL. */
CIRCUITS_API int circuits_context_edge_attribution(circuits_context *ctx, const int32_t *clean,
                                                   const int32_t *corrupted, int64_t batch, int64_t pos,
                                                   const circuits_metric *metric, const circuits_eap_options *opts,
                                                   float *scores);
/* The k edges of largest |score| (ties: lower upstream, then downstream index first) of scores
 * [n_upstream, n_downstream]: their indices and scores, in that order; k <= the number of edges. */
CIRCUITS_API int circuits_eap_top_edges(const float *scores, int64_t n_upstream, int64_t n_downstream, int64_t k,
                                        int64_t *upstream, int64_t *downstream, float *top_scores);

/* Integrated gradients (Sundararajan et al. 2017) at hook point `hook` (e.g. "hook_embed" for the
 * input embeddings): the point's activation a on tokens and its baseline a0 (its activation on
 * baseline_tokens, or zeros when that is NULL); the run is repeated `steps` times with the point set
 * to a0 + alpha_k (a - a0), alpha_k = (k + 0.5) / steps, and attributions (the point's TL shape) =
 * (a - a0) * the mean gradient. completeness (may be NULL): metric(a) - metric(a0) - sum of the
 * attributions, the check that should be near 0 (it shrinks as steps grows). */
CIRCUITS_API int circuits_context_integrated_gradients(circuits_context *ctx, const char *hook, const int32_t *tokens,
                                                       const int32_t *baseline_tokens, int64_t batch, int64_t pos,
                                                       int32_t steps, const circuits_metric *metric,
                                                       float *attributions, float *completeness);

/* ---------------------------------------------------------------------------------------- */
/* Sparse autoencoders and transcoders (0.8.0; docs/saes.md)                                  */
/* ---------------------------------------------------------------------------------------- */

/* An SAE or transcoder as SAELens saves it: a directory with cfg.json and
 * sae_weights.safetensors (and, optionally, sparsity.safetensors). Read-only once loaded: any
 * number of contexts and threads may use one at once. It must outlive the contexts it is
 * attached to. */
typedef struct circuits_sae circuits_sae;

typedef enum circuits_sae_arch {
    CIRCUITS_SAE_STANDARD = 0, /* "standard": relu(x W_enc + b_enc) */
    CIRCUITS_SAE_GATED = 1,    /* "gated": (x W_enc + b_gate > 0) * relu(x (W_enc * exp(r_mag)) + b_mag) */
    CIRCUITS_SAE_JUMPRELU = 2, /* "jumprelu": relu(h) * (h > threshold), h = x W_enc + b_enc */
    CIRCUITS_SAE_TOPK = 3      /* "topk": the k largest of h per row kept (relu), the rest 0 */
} circuits_sae_arch;

typedef enum circuits_sae_norm {
    CIRCUITS_SAE_NORM_NONE = 0,
    CIRCUITS_SAE_NORM_EXPECTED_AVERAGE = 1, /* "expected_average_only_in": nothing at run time (SAELens
                                             * folds the factor into the weights before saving) */
    CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE = 2, /* each row scaled to norm sqrt(d_in) in, back out */
    CIRCUITS_SAE_NORM_LAYER_NORM = 3        /* each row centred and divided by (std + 1e-5) in (torch's
                                             * unbiased std), back out (SAEs; transcoders: in only) */
} circuits_sae_norm;

/* What cfg.json said, filled by circuits_sae_get_info. Strings stay valid while the SAE lives. */
typedef struct circuits_sae_info {
    uint32_t size;                /* sizeof(circuits_sae_info), set by the caller */
    int32_t architecture;         /* circuits_sae_arch */
    int32_t is_transcoder;        /* 1: reads hook_name, writes hook_name_out */
    int32_t has_skip;             /* transcoders with W_skip (SAELens's skip transcoders) */
    int64_t d_in;
    int64_t d_sae;
    int64_t d_out;                /* d_in for an SAE, the output width for a transcoder */
    int32_t apply_b_dec_to_input;
    int32_t normalize_activations; /* circuits_sae_norm */
    int32_t reshape_hook_z;       /* reshape_activations "hook_z": [.., n_heads, d_head] read flat */
    int32_t k;                    /* topk: latents kept per row; else 0 */
    int32_t rescale_acts_by_decoder_norm; /* topk */
    int32_t hook_layer;           /* the block of hook_name, -1 outside blocks */
    const char *hook_name;        /* metadata.hook_name, e.g. "blocks.3.hook_resid_pre" */
    const char *hook_name_out;    /* metadata.hook_name_out; hook_name for an SAE */
    const char *architecture_name; /* as cfg.json spells it */
    int32_t has_sparsity;         /* a sparsity file was loaded (weight "log_feature_sparsity") */
} circuits_sae_info;

/* Loads the directory `path`. A tensor whose shape disagrees with cfg.json is CIRCUITS_E_SHAPE,
 * an architecture or setting libcircuits does not implement is CIRCUITS_E_UNSUPPORTED naming it;
 * F32, F16 and BF16 tensors are read into fp32. */
CIRCUITS_API int circuits_sae_load(circuits_sae **out, const char *path);
CIRCUITS_API void circuits_sae_free(circuits_sae *sae);
CIRCUITS_API int circuits_sae_get_info(const circuits_sae *sae, circuits_sae_info *info);
/* A parameter by SAELens's name: "W_enc" [d_in, d_sae], "W_dec" [d_sae, d_out], "b_enc" [d_sae],
 * "b_dec" [d_out], "b_gate", "b_mag", "r_mag", "threshold" [d_sae] where the architecture has
 * them, "W_skip" [d_out, d_in] (skip transcoders), "log_feature_sparsity" [d_sae] (with a sparsity
 * file). The view (name, shape, data) stays valid while the SAE lives; it must not be written. */
CIRCUITS_API int circuits_sae_weight(const circuits_sae *sae, const char *name, circuits_tensor *out);
/* SAELens's sae.encode on rows x [n, d_in]: acts_post [n, d_sae] (may be NULL), and acts_pre
 * [n, d_sae] (may be NULL): what hook_sae_acts_pre sees (gated: the magnitude path). */
CIRCUITS_API int circuits_sae_encode(const circuits_sae *sae, const float *x, int64_t n, float *acts_pre,
                                     float *acts_post);
/* sae.decode: out [n, d_out] from acts [n, d_sae]; skip transcoders add x W_skip^T
 * (SkipTranscoder.forward). x [n, d_in], the rows acts were encoded from, is needed (else
 * CIRCUITS_E_INVALID_ARGUMENT) when decoding depends on them: an SAE's per-row normalization
 * (constant_norm_rescale, layer_norm; a transcoder's is not undone) and skip transcoders; it
 * may be NULL otherwise. */
CIRCUITS_API int circuits_sae_decode(const circuits_sae *sae, const float *acts, int64_t n, const float *x,
                                     float *out);

/* Splicing (SAELens's HookedSAETransformer.add_sae): the SAE replaces its output hook point
 * (hook_name_out) in this context's runs. That point's name is then no longer a hook point; in
 * its place fire, in this order,
 *   <name>.hook_sae_input      [batch, pos, d_in]    the input (hook_z read flat)
 *   <name>.hook_sae_acts_pre   [batch, pos, d_sae]
 *   <name>.hook_sae_acts_post  [batch, pos, d_sae]
 *   <name>.hook_sae_recons     [batch, pos, d_out]   acts_post W_dec + b_dec (before the output
 *                                                    normalization)
 *   <name>.hook_sae_error      the point's shape     only with use_error_term: the input minus
 *                                                    the SAE's output computed without hooks
 *   <name>.hook_sae_output     the point's shape     what the model goes on with
 * each hookable, cacheable and resolvable (patterns too) like the model's own. A transcoder
 * reads its input at hook_name (which stays a hook point; the value after its callbacks) and
 * fires the points above at hook_name_out. An SAE already attached at the same hook_name is
 * replaced (as SAELens). Refused: a point of another width (CIRCUITS_E_SHAPE), a point that is
 * not [batch, pos, d] (hook_z with reshape_hook_z excepted), callbacks registered at the point
 * it replaces (remove them first), a point another attachment already replaces. Gradient runs
 * and edge attribution refuse a context with SAEs attached (CIRCUITS_E_UNSUPPORTED). */
CIRCUITS_API int circuits_context_add_sae(circuits_context *ctx, const circuits_sae *sae, int32_t use_error_term);
/* Detaches the SAE attached at hook name `hook_name` (its input hook; NULL: every SAE, SAELens's
 * reset_saes). The replaced point comes back; callbacks registered at the SAE's points go with
 * them. Not attached is CIRCUITS_E_NOT_FOUND. */
CIRCUITS_API int circuits_context_remove_sae(circuits_context *ctx, const char *hook_name);
/* SAEs attached, in attachment order; circuits_context_sae_at gives one (and its error-term
 * setting, may be NULL). */
CIRCUITS_API size_t circuits_context_sae_count(const circuits_context *ctx);
CIRCUITS_API int circuits_context_sae_at(const circuits_context *ctx, size_t index, const circuits_sae **sae,
                                         int32_t *use_error_term);

/* Feature statistics over a token dataset, in one streaming pass with bounded memory: per latent
 * the number of tokens it fired on (acts_post > threshold), the mean activation over all tokens,
 * the maximum, and the top_k activating contexts (the token windows around them). Feed batches
 * with circuits_context_feature_stats_add; the model runs only as far as the SAE's hook point. */
typedef struct circuits_feature_stats circuits_feature_stats;

typedef struct circuits_feature_stats_options {
    uint32_t size;           /* sizeof(circuits_feature_stats_options) */
    int32_t top_k;           /* contexts kept per latent (default 10; 0: none) */
    int32_t context_left;    /* tokens kept before the activating one (default 8) */
    int32_t context_right;   /* and after it (default 2) */
    float threshold;         /* a latent fires where acts_post > threshold (default 0) */
    int32_t skip_positions;  /* the first positions of each row not counted (default 0; 1 skips BOS) */
} circuits_feature_stats_options;

CIRCUITS_API void circuits_feature_stats_options_init(circuits_feature_stats_options *opts);
CIRCUITS_API int circuits_feature_stats_create(circuits_feature_stats **out, const circuits_sae *sae,
                                               const circuits_feature_stats_options *opts);
CIRCUITS_API void circuits_feature_stats_free(circuits_feature_stats *st);
/* Runs the model on tokens [batch, pos] (the context's hooks fire; the SAE need not be attached)
 * and adds their latents to st. Rows are numbered in the order they are added. */
CIRCUITS_API int circuits_context_feature_stats_add(circuits_context *ctx, circuits_feature_stats *st,
                                                    const int32_t *tokens, int64_t batch, int64_t pos);
/* n_tokens counted so far; d_sae; top_k and the window width (left + 1 + right). */
CIRCUITS_API int circuits_feature_stats_dims(const circuits_feature_stats *st, int64_t *n_tokens, int64_t *d_sae,
                                             int32_t *top_k, int32_t *window);
/* The options the statistics were made with (or read from a file with): out->size set by the
 * caller, filled up to it (docs/abi.md). */
CIRCUITS_API int circuits_feature_stats_get_options(const circuits_feature_stats *st,
                                                    circuits_feature_stats_options *out);
/* Per latent [d_sae] (each may be NULL): frequency (fires / n_tokens), mean, max. */
CIRCUITS_API int circuits_feature_stats_get(const circuits_feature_stats *st, float *frequency, float *mean,
                                            float *max);
/* The top contexts of one latent, largest first: values [top_k], rows [top_k], positions [top_k],
 * windows [top_k, window] (tokens, -1 outside the row; the activating token at index
 * context_left); *count (may be NULL) how many are filled. Any output may be NULL. */
CIRCUITS_API int circuits_feature_stats_top(const circuits_feature_stats *st, int64_t latent, float *values,
                                            int64_t *rows, int64_t *positions, int32_t *windows, int32_t *count);
/* The documented file (docs/saes.md "Feature statistics file"): safetensors with the arrays and
 * the options as metadata. Loading checks it as any hostile file. */
CIRCUITS_API int circuits_feature_stats_save(const circuits_feature_stats *st, const char *path);
CIRCUITS_API int circuits_feature_stats_load(circuits_feature_stats **out, const char *path);

/* ---------------------------------------------------------------------------------------- */
/* Steering vectors and control vectors (0.8.0; docs/steering.md)                             */
/* ---------------------------------------------------------------------------------------- */

typedef struct circuits_steering_options {
    uint32_t size;              /* sizeof(circuits_steering_options) */
    float scale;                /* the vector is added times scale (default 1) */
    /* NULL: every position. Else n_positions positions counted from the sequence's start (a KV
     * cache's held positions included: generation steers the positions it reaches); negative
     * counts from the end of each run's positions (-1: each run's last). */
    const int64_t *positions;
    int64_t n_positions;
} circuits_steering_options;

CIRCUITS_API void circuits_steering_options_init(circuits_steering_options *opts);

/* Adds scale * vector [dim] at every point `name` selects (as circuits_context_add_hook; the
 * point's last axis must be dim) at the chosen positions, as a forward hook: *out_id removes it
 * (circuits_context_remove_hook). The vector is copied. */
CIRCUITS_API int circuits_context_add_steering(circuits_context *ctx, const char *name, const float *vector,
                                               int64_t dim, const circuits_steering_options *opts,
                                               circuits_hook_id *out_id);

/* llama.cpp's control vectors: a GGUF file (general.architecture "controlvector") with one
 * direction per layer, F32 tensor "direction.{N}" [n_embd] added to the output of block N
 * (N = 1 .. n_layers - 1; blocks.{N}.hook_resid_post), as llama.cpp applies it
 * (llama_adapter_cvec: block il gets direction.il; block 0 never has one). directions arrays
 * below are [n_layers, d_model], row N = direction.N, row 0 zero. */
/* Reads path into directions [n_layers, d_model] (zeros for layers the file has none for);
 * a d_model other than the file's is CIRCUITS_E_SHAPE, a direction.N with N >= n_layers
 * CIRCUITS_E_RANGE. */
CIRCUITS_API int circuits_control_vector_load(const char *path, int32_t n_layers, int64_t d_model,
                                              float *directions);
/* Writes directions [n_layers, d_model] as llama.cpp's cvector-generator writes its files
 * (direction.1 .. direction.{n_layers-1}, controlvector.layer_count = n_layers - 1; row 0 must
 * be zero); model_hint (may be NULL: not written) is controlvector.model_hint. */
CIRCUITS_API int circuits_control_vector_save(const char *path, const float *directions, int32_t n_layers,
                                              int64_t d_model, const char *model_hint);
/* Registers directions [n_layers, d_model] * opts->scale at every blocks.{l}.hook_resid_post
 * with a non-zero direction, under one id (opts may be NULL: scale 1, every position). */
CIRCUITS_API int circuits_context_add_control_vector(circuits_context *ctx, const float *directions,
                                                     int32_t n_layers, int64_t d_model,
                                                     const circuits_steering_options *opts,
                                                     circuits_hook_id *out_id);

#define CIRCUITS_CONTRAST_LAST 0 /* the activation at each row's last real token */
#define CIRCUITS_CONTRAST_MEAN 1 /* the mean over each row's real tokens */

typedef struct circuits_contrast_options {
    uint32_t size;              /* sizeof(circuits_contrast_options) */
    int32_t reduce;             /* CIRCUITS_CONTRAST_* (default LAST) */
    const int32_t *positive_mask; /* [batch, pos] attention masks of the two sides (left or right */
    const int32_t *negative_mask; /* padding), NULL: every token real */
} circuits_contrast_options;

CIRCUITS_API void circuits_contrast_options_init(circuits_contrast_options *opts);

/* A contrastive steering vector: the mean over the batch of act(positive row) - act(negative row)
 * at every point `name` selects, reduced over positions as opts->reduce says: out [n_points, dim]
 * (n_points from circuits_context_resolve_hook_name; out_len floats at least that), the points in
 * firing order. One run per side; the context's hooks fire. */
CIRCUITS_API int circuits_context_contrastive_vector(circuits_context *ctx, const char *name,
                                                     const int32_t *positive, const int32_t *negative,
                                                     int64_t batch, int64_t pos,
                                                     const circuits_contrast_options *opts, float *out,
                                                     size_t out_len);

/* ---------------------------------------------------------------------------------------- */
/* Linear probes (0.8.0; docs/probes.md)                                                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct circuits_probe circuits_probe;

typedef enum circuits_probe_kind {
    CIRCUITS_PROBE_LINEAR = 0,   /* least squares (ridge with l2 > 0): y [n, n_targets] */
    CIRCUITS_PROBE_LOGISTIC = 1  /* logistic regression with an L2 penalty (scikit-learn's
                                  * LogisticRegression, C = 1 / l2): y [n] class labels 0 .. K-1
                                  * as floats; binary (K = 2) or multinomial */
} circuits_probe_kind;

typedef struct circuits_probe_options {
    uint32_t size;              /* sizeof(circuits_probe_options) */
    int32_t kind;               /* circuits_probe_kind (default LOGISTIC) */
    float l2;                   /* penalty on the weights, not the intercept (default 1: LOGISTIC
                                 * sklearn's C = 1 / l2; LINEAR Ridge's alpha, 0 plain least squares) */
    int32_t fit_intercept;      /* default 1 */
    int32_t max_iter;           /* Newton steps at most (default 50) */
    float tol;                  /* LOGISTIC: stop when a step's max-abs change is below tol; LINEAR with
                                 * l2 = 0: singular values below tol x the largest count as zero
                                 * (LinearRegression's tol) (default 1e-6) */
    const char *hook_name;      /* the hook point the rows came from (may be NULL): a monitor reads it */
} circuits_probe_options;

CIRCUITS_API void circuits_probe_options_init(circuits_probe_options *opts);

/* Fits a probe to X [n, d] (rows of cached activations) and y (see the kinds); n_targets: LINEAR's
 * outputs (y [n, n_targets]); LOGISTIC: 1. */
CIRCUITS_API int circuits_probe_fit(circuits_probe **out, const float *X, int64_t n, int64_t d, const float *y,
                                    int64_t n_targets, const circuits_probe_options *opts);
CIRCUITS_API void circuits_probe_free(circuits_probe *probe);

typedef struct circuits_probe_info {
    uint32_t size;              /* sizeof(circuits_probe_info), set by the caller */
    int32_t kind;
    int64_t d;                  /* input width */
    int64_t n_outputs;          /* LINEAR: n_targets; LOGISTIC: K classes */
    float l2;
    int32_t fit_intercept;
    int32_t n_iter;             /* Newton steps taken (LINEAR: 0) */
    const char *hook_name;      /* "" when none; valid while the probe lives */
} circuits_probe_info;

CIRCUITS_API int circuits_probe_get_info(const circuits_probe *probe, circuits_probe_info *info);
/* Weights W [n_coef, d] and intercepts b [n_coef] (n_coef: n_targets, 1 for a binary logistic probe
 * (scikit-learn's coef_ shape), K for multinomial); views valid while the probe lives. */
CIRCUITS_API int circuits_probe_weights(const circuits_probe *probe, circuits_tensor *W, circuits_tensor *b);
/* out [n, n_outputs]: LINEAR the predictions, LOGISTIC the class probabilities (predict_proba). */
CIRCUITS_API int circuits_probe_predict(const circuits_probe *probe, const float *X, int64_t n, float *out);
/* Held-out evaluation: LOGISTIC accuracy and mean log-loss; LINEAR the coefficient of
 * determination R^2 (scikit-learn's score, averaged over targets) and the mean squared error. */
typedef struct circuits_probe_score {
    uint32_t size;              /* sizeof(circuits_probe_score), set by the caller */
    double accuracy;            /* LOGISTIC */
    double log_loss;            /* LOGISTIC */
    double r2;                  /* LINEAR */
    double mse;                 /* LINEAR */
} circuits_probe_score;
CIRCUITS_API int circuits_probe_evaluate(const circuits_probe *probe, const float *X, int64_t n, const float *y,
                                         circuits_probe_score *score);
/* A safetensors file (W, b; kind, l2, hook name as metadata: docs/probes.md). */
CIRCUITS_API int circuits_probe_save(const circuits_probe *probe, const char *path);
CIRCUITS_API int circuits_probe_load(circuits_probe **out, const char *path);

/* A probe as a monitor: at every run of the context (each step of a generation too) fn gets the
 * probe's output at hook point `name` (NULL: the probe's hook_name) for the run's positions:
 * out [batch, pos, n_outputs], first_position the first one's position in the sequence (a KV
 * cache's held positions counted). Return values as a hook callback's. The probe must outlive the
 * registration; *out_id removes it. */
typedef int (*circuits_probe_fn)(const float *out, int64_t batch, int64_t pos, int64_t n_outputs,
                                 int64_t first_position, void *user_data);
CIRCUITS_API int circuits_context_add_probe_monitor(circuits_context *ctx, const circuits_probe *probe,
                                                    const char *name, circuits_probe_fn fn, void *user_data,
                                                    circuits_hook_id *out_id);

/* ---------------------------------------------------------------------------------------- */
/* Datasets and dataset-scale jobs (0.9.0; docs/jobs.md, docs/scale-out.md)                  */
/* ---------------------------------------------------------------------------------------- */

/* The version of the hook semantics: hook names, shapes, firing order and the values at each
 * point. It changes when any of them changes; job outputs record it (with the library version)
 * and a job refuses to resume or merge outputs made under another. */
#define CIRCUITS_HOOK_SEMANTICS_VERSION 1

/* A token dataset: rows of `pos` token ids ("tokens" [n_rows, pos]) and optional per-row
 * columns a job reads ("corrupted" [n_rows, pos]; "answer", "wrong", "position" [n_rows, 1]).
 * Read-only once made: any number of jobs and threads may use one at once. */
typedef struct circuits_dataset circuits_dataset;

typedef struct circuits_dataset_options {
    uint32_t size;                        /* sizeof(circuits_dataset_options) */
    const char *tensor;                   /* .safetensors: the token tensor (default "tokens") */
    const circuits_tokenizer *tokenizer;  /* text (.txt: one document per line; .jsonl: one JSON
                                           * object per line, its `column`): required */
    const char *column;                   /* .jsonl: the text field (default "text") */
    int64_t seq_len;                      /* text: tokens per row, BOS included (default 128) */
    int32_t prepend_bos;                  /* text: 1 (default): every row starts with BOS, as
                                           * TransformerLens's tokenize_and_concatenate */
    int64_t max_rows;                     /* 0 (default): every row; else at most this many */
} circuits_dataset_options;

CIRCUITS_API void circuits_dataset_options_init(circuits_dataset_options *opts);

/* Opens a dataset by extension: .npy (a 2-D array of any integer dtype), .safetensors (the token
 * tensor and any of the named columns present), .txt / .jsonl (documents tokenized one at a
 * time, joined by EOS, cut into rows of seq_len - 1 tokens after a BOS; the last partial row is
 * dropped). Token ids are checked against nothing here (a job checks them against its model). */
CIRCUITS_API int circuits_dataset_open(circuits_dataset **out, const char *path, const circuits_dataset_options *opts);
/* A dataset of tokens [n_rows, pos] (copied). */
CIRCUITS_API int circuits_dataset_from_tokens(circuits_dataset **out, const int32_t *tokens, int64_t n_rows,
                                              int64_t pos);
CIRCUITS_API void circuits_dataset_free(circuits_dataset *ds);
/* Sets (adds or replaces) a column: values [n_rows, width] (copied); n_rows must be the
 * dataset's. "tokens" cannot be replaced. */
CIRCUITS_API int circuits_dataset_set_column(circuits_dataset *ds, const char *name, const int32_t *values,
                                             int64_t n_rows, int64_t width);
/* Reads a column from a .npy file or a .safetensors file (its tensor `tensor`, NULL: `name`). */
CIRCUITS_API int circuits_dataset_load_column(circuits_dataset *ds, const char *name, const char *path,
                                              const char *tensor);
CIRCUITS_API int circuits_dataset_dims(const circuits_dataset *ds, int64_t *n_rows, int64_t *pos);
/* A column's values (valid while ds lives) and width; "tokens" is always there. */
CIRCUITS_API int circuits_dataset_column(const circuits_dataset *ds, const char *name, const int32_t **values,
                                         int64_t *width);
/* SHA-256 of the dataset's contents (every column, names and shapes included) as 64 hex digits
 * and a NUL into out[65]. */
CIRCUITS_API int circuits_dataset_digest(const circuits_dataset *ds, char *out);

/* What a job computes. A unit is `unit_rows` consecutive rows (the last may be shorter): the
 * piece that is distributed, checkpointed and reduced, always in unit order. */
typedef enum circuits_job_kind {
    CIRCUITS_JOB_MEAN_ACTIVATIONS = 0, /* the mean over the rows of each hook point (its TL shape
                                        * without the batch axis): circuits_context_mean_activations */
    CIRCUITS_JOB_FEATURE_STATS = 1,    /* an SAE's feature statistics (sae_path, feature_stats) */
    CIRCUITS_JOB_EXPORT = 2,           /* the hook points' activations, one safetensors shard a unit */
    CIRCUITS_JOB_PATCH_SWEEP = 3,      /* per row: a patching grid (patch_kind) of the clean row
                                        * ("tokens") into its "corrupted" row, and the metric */
    CIRCUITS_JOB_ABLATION_SWEEP = 4    /* per row: the metric with each head's hook_z ablated in
                                        * turn (ablation_kind ZERO, or MEAN from ablation_means) */
} circuits_job_kind;

/* Progress: units done (of this process's share, resumed ones included) of total; called by
 * circuits_job_run on its calling thread only (at the start, after each unit that thread
 * finishes, at the end), never concurrently. Return 0 to go on, anything else to stop the job
 * (CIRCUITS_E_STOPPED; finished units stay checkpointed). */
typedef int (*circuits_job_progress_fn)(int64_t done, int64_t total, void *user_data);

typedef struct circuits_job_options {
    uint32_t size;                /* sizeof(circuits_job_options) */
    int32_t kind;                 /* circuits_job_kind */
    /* What is computed (recorded in the provenance): */
    const char *const *hooks;     /* MEAN_ACTIVATIONS, EXPORT: hook names or patterns */
    size_t n_hooks;
    int64_t unit_rows;            /* rows per unit (default 16) */
    uint64_t seed;                /* recorded (no job kind draws from it yet) */
    int32_t patch_kind;           /* PATCH_SWEEP: circuits_patch_kind */
    int32_t ablation_kind;        /* ABLATION_SWEEP: CIRCUITS_ABLATE_ZERO or _MEAN */
    const char *ablation_means;   /* ABLATION_SWEEP MEAN: a MEAN_ACTIVATIONS job's output file
                                   * holding every block's hook_z (its digest is recorded) */
    int32_t metric_kind;          /* sweeps: LOGIT_DIFF (default), LOGIT, PROB, LOG_PROB, LOSS,
                                   * TOKEN_LOSS, read with the dataset's "answer", "wrong" and
                                   * "position" columns (positions default to the last) */
    const char *sae_path;         /* FEATURE_STATS: an SAELens directory (its files' digest recorded) */
    const circuits_feature_stats_options *feature_stats; /* FEATURE_STATS: NULL for the defaults */
    /* How it runs (not recorded: never changes a bit of any output): */
    int64_t batch_size;           /* rows per forward pass (default 8) */
    int32_t shard_index;          /* this process computes the units u with u % shard_count == */
    int32_t shard_count;          /* shard_index (default 0 of 1: every unit) */
    circuits_job_progress_fn progress; /* may be NULL */
    void *progress_data;
} circuits_job_options;

CIRCUITS_API void circuits_job_options_init(circuits_job_options *opts);

typedef struct circuits_job circuits_job;

/* A job of `model` over `ds` whose checkpoints live in directory `dir` (created if absent; NULL:
 * no directory, for ranks that only compute and send their units elsewhere). The provenance
 * (circuits_job_provenance) is computed here: the model's files' SHA-256, the library and hook
 * semantics versions, the dataset's digest, the recorded options. A directory already holding a
 * job with another provenance is CIRCUITS_E_PROVENANCE (its units are never mixed); with the
 * same provenance its finished units are kept (a resume). model and ds must outlive the job. */
CIRCUITS_API int circuits_job_create(circuits_job **out, const circuits_model *model, const circuits_dataset *ds,
                                     const circuits_job_options *opts, const char *dir);
CIRCUITS_API void circuits_job_free(circuits_job *job);
/* The provenance as canonical JSON (valid while the job lives). */
CIRCUITS_API const char *circuits_job_provenance(const circuits_job *job);
/* Units in the whole job, finished (checkpointed in dir), and this process's share of the total. */
CIRCUITS_API int circuits_job_status(const circuits_job *job, int64_t *n_units, int64_t *n_done, int64_t *n_mine);
/* Whether one unit is checkpointed. */
CIRCUITS_API int circuits_job_unit_done(const circuits_job *job, int64_t unit, int32_t *done);
/* Computes this process's share of the units not yet checkpointed, several at once on the thread
 * pool (each unit on one thread: the bits never depend on the thread count), checkpointing each
 * as it finishes (write-beside and rename: a killed job leaves whole units or none). */
CIRCUITS_API int circuits_job_run(circuits_job *job);

/* The unit's result as bytes (the checkpoint file's image) to on_unit, valid during the call. */
typedef int (*circuits_job_unit_fn)(int64_t unit, const void *bytes, size_t n_bytes, void *user_data);
/* For distributed drivers (the CLI's MPI one): computes units[0 .. n_units) on the pool without
 * storing them; on_unit runs on the calling thread, in the order of `units`. A non-zero return
 * stops (CIRCUITS_E_CALLBACK). */
CIRCUITS_API int circuits_job_compute(circuits_job *job, const int64_t *units, size_t n_units,
                                      circuits_job_unit_fn on_unit, void *user_data);
/* Checkpoints a unit computed elsewhere: the bytes are validated as hostile input and must carry
 * this job's provenance and the unit's index (else CIRCUITS_E_PROVENANCE). Needs a directory. */
CIRCUITS_API int circuits_job_store(circuits_job *job, int64_t unit, const void *bytes, size_t n_bytes);

/* Reduces every unit of the job directories dirs[0 .. n_dirs) in unit order (a fixed reduction:
 * the same bits for any number of ranks, shards, threads and batch sizes) and writes the result
 * to out: a safetensors file with the provenance as metadata (docs/jobs.md "Output files"), or for
 * EXPORT a directory of shards and an index.json. The directories' provenances must agree and
 * together hold every unit (CIRCUITS_E_PROVENANCE, CIRCUITS_E_NOT_FOUND naming the first missing
 * unit); one directory is the plain finish of a single-process job. Needs no model. */
CIRCUITS_API int circuits_job_merge(const char *const *dirs, size_t n_dirs, const char *out);

/* ---------------------------------------------------------------------------------------- */
/* Interactive views (0.10.0; docs/pictures.md)                                              */
/* ---------------------------------------------------------------------------------------- */

/* Self-contained HTML in the spirit of CircuitsVis: inline CSS and JavaScript, no external URL,
 * no fetch. The data travel as JSON inside <script> with `<`, `>`, `&`, U+2028 and U+2029 escaped,
 * and tokens reach the page only through textContent, so no token can inject markup or script.
 * Invalid UTF-8 in a string becomes U+FFFD; non-finite values are JSON null, shown grey / "nan".
 * The DOM each view builds (class and data- names tests and tools rely on) is in docs/pictures.md. */
typedef struct circuits_vis_options {
    uint32_t size;        /* sizeof(circuits_vis_options) */
    const char *title;    /* heading above the view (NULL: none) */
    const char *subtitle; /* a line under it: model and input (NULL: none) */
    int32_t fragment;     /* 0 (default): a whole HTML document; 1: one <div> with its own style
                           * and script, for embedding (a notebook cell); its ids are unique per call */
} circuits_vis_options;
CIRCUITS_API void circuits_vis_options_init(circuits_vis_options *opts);
/* Each function below returns the text in *html (NUL-terminated, free with circuits_vis_free) and
 * its length in bytes in *len (len may be NULL); on failure *html is NULL. opts NULL: defaults. */
/* pattern [n_heads, n_tokens, n_tokens] contiguous (query, key) as hook_pattern's [head, q, k] of one
 * sequence; tokens: n_tokens UTF-8 strings; head_names NULL ("L?H?" not known: "Head 0", ..) or n_heads.
 * Keys after the query are drawn blank (a causal pattern's zeros). */
CIRCUITS_API int circuits_vis_attention_patterns(char **html, size_t *len, const char *const *tokens,
                                                 int64_t n_tokens, const float *pattern, int64_t n_heads,
                                                 const char *const *head_names, const circuits_vis_options *opts);
/* values [n_series, n_tokens]: tokens coloured by a value (loss, attribution, a neuron or SAE
 * feature); series_names NULL ("Series 0", ..) or n_series; signed values (some below 0, some
 * above) diverging (centred at 0), else sequential from the least to the greatest */
CIRCUITS_API int circuits_vis_colored_tokens(char **html, size_t *len, const char *const *tokens,
                                             int64_t n_tokens, const float *values, int64_t n_series,
                                             const char *const *series_names, const circuits_vis_options *opts);
/* values [rows, cols] (a patching grid: layer x position, head x layer ...), with labels per row and
 * column (NULL: numbered), axis titles and the value's name (NULL: none); hover shows the value;
 * coloured as circuits_vis_colored_tokens */
CIRCUITS_API int circuits_vis_grid(char **html, size_t *len, const float *values, int64_t rows, int64_t cols,
                                   const char *const *row_labels, const char *const *col_labels,
                                   const char *row_title, const char *col_title, const char *value_title,
                                   const circuits_vis_options *opts);
/* frees what the functions above returned (NULL is fine) */
CIRCUITS_API void circuits_vis_free(char *html);
/* writes html (len bytes) to path (replacing it whole, or leaving it as it was);
 * CIRCUITS_E_IO naming the path on failure */
CIRCUITS_API int circuits_vis_save(const char *html, size_t len, const char *path);

/* ---------------------------------------------------------------------------------------- */
/* Threads                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Sets the size of the library's thread pool, the caller included (process-wide; OpenBLAS
 * runs single-threaded inside it). n <= 0 restores the default: CIRCUITS_NUM_THREADS, else the
 * CPUs the process may use. Safe from any thread; waits for a parallel loop in flight. */
CIRCUITS_API void circuits_set_num_threads(int n);
CIRCUITS_API int circuits_get_num_threads(void);

#ifdef __cplusplus
}
#endif

#endif /* CIRCUITS_H */
