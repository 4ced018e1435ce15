"""Loading libcircuits and declaring its C API for ctypes.

Everything that touches ``ctypes`` declarations lives here:

* :func:`_find_and_load` — the library lookup order (``CIRCUITS_LIBRARY``, the bundled
  ``circuits/_lib/libcircuits.so.0``, the build tree, the system path) and the ABI check;
* the constants of ``include/circuits.h`` under their C names (``CIRCUITS_E_SHAPE``, ...);
* the structs (:class:`Tensor`, :class:`ConfigStruct`, the options structs);
* :data:`FUNCTIONS` — ONE table ``name -> (restype, argtypes)`` from which every function's
  ``argtypes``/``restype`` is set, and :data:`SKIPPED` — public functions deliberately not
  bound (with the reason). ``tests/test_header.py`` parses the header and checks that every
  ``CIRCUITS_API`` function is in exactly one of them with matching types, and that every
  constant and struct field here matches the header.

Pointer arguments that take arrays are declared with NumPy ``ndpointer`` types (dtype and
C-contiguity are checked at the call, ``None`` passes NULL), so that a float64 or strided
array can never reach C as a ``float *``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import ABIMismatchError, CircuitsError, LibraryNotFoundError, RangeError, error_class

# --------------------------------------------------------------------------------------------
# Constants of include/circuits.h (C names; checked against the header by the tests)
# --------------------------------------------------------------------------------------------

#: The ABI this binding was written for (CIRCUITS_ABI_VERSION of the header it follows).
CIRCUITS_ABI_VERSION = 0
CIRCUITS_VERSION_MAJOR = 0
CIRCUITS_VERSION_MINOR = 10
CIRCUITS_VERSION_PATCH = 0
CIRCUITS_VERSION_NUMBER = CIRCUITS_VERSION_MAJOR * 10000 + CIRCUITS_VERSION_MINOR * 100 + CIRCUITS_VERSION_PATCH
CIRCUITS_VERSION_STRING = "0.10.0"

# circuits_status
CIRCUITS_OK = 0
CIRCUITS_E_INVALID_ARGUMENT = -1
CIRCUITS_E_OUT_OF_MEMORY = -2
CIRCUITS_E_IO = -3
CIRCUITS_E_FORMAT = -4
CIRCUITS_E_CONFIG = -5
CIRCUITS_E_UNSUPPORTED = -6
CIRCUITS_E_TENSOR_MISSING = -7
CIRCUITS_E_TENSOR_UNEXPECTED = -8
CIRCUITS_E_SHAPE = -9
CIRCUITS_E_DTYPE = -10
CIRCUITS_E_NOT_FOUND = -11
CIRCUITS_E_RANGE = -12
CIRCUITS_E_CALLBACK = -13
CIRCUITS_E_STOPPED = -14
CIRCUITS_E_VERSION = -15
CIRCUITS_E_PROVENANCE = -16

CIRCUITS_MAX_DIMS = 4

# circuits_act_fn
CIRCUITS_ACT_RELU = 0
CIRCUITS_ACT_GELU = 1
CIRCUITS_ACT_GELU_NEW = 2
CIRCUITS_ACT_GELU_FAST = 3
CIRCUITS_ACT_SILU = 4
CIRCUITS_ACT_SOLU_LN = 5

# circuits_norm_type
CIRCUITS_NORM_NONE = 0
CIRCUITS_NORM_LN = 1
CIRCUITS_NORM_LNPRE = 2
CIRCUITS_NORM_RMS = 3
CIRCUITS_NORM_RMSPRE = 4

# circuits_pos_embed
CIRCUITS_POS_STANDARD = 0
CIRCUITS_POS_SHORTFORMER = 1
CIRCUITS_POS_ROTARY = 2

# circuits_rope_scaling
CIRCUITS_ROPE_NONE = 0
CIRCUITS_ROPE_LINEAR = 1
CIRCUITS_ROPE_LLAMA3 = 2

# circuits_local_attn
CIRCUITS_LOCAL_ATTN_NONE = 0
CIRCUITS_LOCAL_ATTN_ALL = 1
CIRCUITS_LOCAL_ATTN_EVEN = 2
CIRCUITS_LOCAL_ATTN_ODD = 3

# circuits_model_format
CIRCUITS_FORMAT_HF_GPT2 = 0
CIRCUITS_FORMAT_TRANSFORMERLENS = 1
CIRCUITS_FORMAT_HF_GPT_NEOX = 2
CIRCUITS_FORMAT_HF_GPTJ = 3
CIRCUITS_FORMAT_HF_LLAMA = 4
CIRCUITS_FORMAT_HF_MISTRAL = 5
CIRCUITS_FORMAT_HF_QWEN2 = 6
CIRCUITS_FORMAT_HF_GEMMA = 7
CIRCUITS_FORMAT_HF_GEMMA2 = 8

# circuits_config.processing bits
CIRCUITS_PROCESSED_FOLD_LN = 0x1
CIRCUITS_PROCESSED_CENTER_WRITING_WEIGHTS = 0x2
CIRCUITS_PROCESSED_CENTER_UNEMBED = 0x4
CIRCUITS_PROCESSED_FOLD_VALUE_BIASES = 0x8
CIRCUITS_PROCESSED_REFACTOR_FACTORED_ATTN_MATRICES = 0x10

# circuits_dtype: storage types of weights, ggml's numbers (circuits.quant)
CIRCUITS_DTYPE_F32 = 0
CIRCUITS_DTYPE_F16 = 1
CIRCUITS_DTYPE_Q4_0 = 2
CIRCUITS_DTYPE_Q4_1 = 3
CIRCUITS_DTYPE_Q5_0 = 6
CIRCUITS_DTYPE_Q5_1 = 7
CIRCUITS_DTYPE_Q8_0 = 8
CIRCUITS_DTYPE_Q2_K = 10
CIRCUITS_DTYPE_Q3_K = 11
CIRCUITS_DTYPE_Q4_K = 12
CIRCUITS_DTYPE_Q5_K = 13
CIRCUITS_DTYPE_Q6_K = 14
CIRCUITS_DTYPE_BF16 = 30

# circuits_run_options: start_at_layer / stop_at_layer not set
CIRCUITS_LAYER_NONE = -2147483648

# hook callback return values
CIRCUITS_HOOK_CONTINUE = 0
CIRCUITS_HOOK_STOP = 1

# factored top-k axes
CIRCUITS_TOPK_ROW = 0
CIRCUITS_TOPK_COLUMN = 1
CIRCUITS_TOPK_ALL = 2

# composition modes, writers, readers
CIRCUITS_COMPOSITION_Q = 0
CIRCUITS_COMPOSITION_K = 1
CIRCUITS_COMPOSITION_V = 2
CIRCUITS_WRITER_EMBED = 0
CIRCUITS_WRITER_POS_EMBED = 1
CIRCUITS_WRITER_HEAD = 2
CIRCUITS_WRITER_MLP = 3
CIRCUITS_READER_Q = 0
CIRCUITS_READER_K = 1
CIRCUITS_READER_V = 2
CIRCUITS_READER_MLP = 3
CIRCUITS_READER_UNEMBED = 4

# head detectors
CIRCUITS_HEAD_PREVIOUS_TOKEN = 0
CIRCUITS_HEAD_DUPLICATE_TOKEN = 1
CIRCUITS_HEAD_INDUCTION = 2
CIRCUITS_HEAD_CUSTOM = 3
CIRCUITS_DETECT_MUL = 0
CIRCUITS_DETECT_ABS = 1

# metrics (patching, ablation)
CIRCUITS_METRIC_LOGIT_DIFF = 0
CIRCUITS_METRIC_LOGIT = 1
CIRCUITS_METRIC_PROB = 2
CIRCUITS_METRIC_LOG_PROB = 3
CIRCUITS_METRIC_LOSS = 4
CIRCUITS_METRIC_CALLBACK = 5
CIRCUITS_METRIC_TOKEN_LOSS = 6  # 0.7.0: gradient metrics (docs/gradients.md)
CIRCUITS_METRIC_HOOK_LINEAR = 7
CIRCUITS_METRIC_GRAD_CALLBACK = 8
# circuits_edit_grad: how a forward hook's edit passes the gradient (0.7.0)
CIRCUITS_EDIT_GRAD_REPLACE = 0
CIRCUITS_EDIT_GRAD_THROUGH = 1
# circuits_sae_arch, circuits_sae_norm (0.8.0; docs/saes.md)
CIRCUITS_SAE_STANDARD = 0
CIRCUITS_SAE_GATED = 1
CIRCUITS_SAE_JUMPRELU = 2
CIRCUITS_SAE_TOPK = 3
CIRCUITS_SAE_NORM_NONE = 0
CIRCUITS_SAE_NORM_EXPECTED_AVERAGE = 1
CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE = 2
CIRCUITS_SAE_NORM_LAYER_NORM = 3
# contrastive vectors' reductions (0.8.0; docs/steering.md)
CIRCUITS_CONTRAST_LAST = 0
CIRCUITS_CONTRAST_MEAN = 1
# circuits_probe_kind (0.8.0; docs/probes.md)
CIRCUITS_PROBE_LINEAR = 0
CIRCUITS_PROBE_LOGISTIC = 1
# circuits_job_kind and the hook semantics a job records (0.9.0; docs/jobs.md)
CIRCUITS_HOOK_SEMANTICS_VERSION = 1
CIRCUITS_JOB_MEAN_ACTIVATIONS = 0
CIRCUITS_JOB_FEATURE_STATS = 1
CIRCUITS_JOB_EXPORT = 2
CIRCUITS_JOB_PATCH_SWEEP = 3
CIRCUITS_JOB_ABLATION_SWEEP = 4
# the residual stream (circuits_resid_kind, decompose_resid's modes)
CIRCUITS_RESID_ACCUMULATED = 0
CIRCUITS_RESID_DECOMPOSED = 1
CIRCUITS_RESID_HEADS = 2
CIRCUITS_RESID_NEURONS = 3
CIRCUITS_RESID_FULL = 4
CIRCUITS_RESID_MODE_ALL = 0
CIRCUITS_RESID_MODE_MLP = 1
CIRCUITS_RESID_MODE_ATTN = 2

# ablation and patching
CIRCUITS_ABLATE_ZERO = 0
CIRCUITS_ABLATE_MEAN = 1
CIRCUITS_ABLATE_RESAMPLE = 2
CIRCUITS_ALL_POSITIONS = -9223372036854775808
CIRCUITS_PATCH_RESID_PRE = 0
CIRCUITS_PATCH_RESID_MID = 1
CIRCUITS_PATCH_RESID_POST = 2
CIRCUITS_PATCH_ATTN_OUT = 3
CIRCUITS_PATCH_MLP_OUT = 4
CIRCUITS_PATCH_HEAD_Z_BY_POS = 5
CIRCUITS_PATCH_HEAD_Q_BY_POS = 6
CIRCUITS_PATCH_HEAD_K_BY_POS = 7
CIRCUITS_PATCH_HEAD_V_BY_POS = 8
CIRCUITS_PATCH_HEAD_PATTERN_BY_POS = 9
CIRCUITS_PATCH_HEAD_PATTERN_DEST_SRC = 10
CIRCUITS_PATCH_HEAD_Z_ALL_POS = 11
CIRCUITS_PATCH_HEAD_Q_ALL_POS = 12
CIRCUITS_PATCH_HEAD_K_ALL_POS = 13
CIRCUITS_PATCH_HEAD_V_ALL_POS = 14
CIRCUITS_PATCH_HEAD_PATTERN_ALL_POS = 15

# --------------------------------------------------------------------------------------------
# Structs. Pointer fields are c_void_p (addresses as ints: cheap to read in hot paths).
# --------------------------------------------------------------------------------------------


class Tensor(Structure):
    """``circuits_tensor``: a strided fp32 tensor with a TransformerLens name (library-filled)."""

    _fields_ = [
        ("name", c_void_p),  # const char *
        ("layer", c_int32),
        ("head", c_int32),
        ("head_axis", c_int32),
        ("ndim", c_int32),
        ("shape", c_int64 * CIRCUITS_MAX_DIMS),
        ("strides", c_int64 * CIRCUITS_MAX_DIMS),  # in elements
        ("data", c_void_p),  # float *
    ]


class ConfigStruct(Structure):
    """``circuits_config``."""

    _fields_ = [
        ("size", c_uint32),
        ("n_layers", c_int32),
        ("d_model", c_int32),
        ("n_heads", c_int32),
        ("d_head", c_int32),
        ("d_mlp", c_int32),
        ("d_vocab", c_int32),
        ("d_vocab_out", c_int32),
        ("n_ctx", c_int32),
        ("act_fn", c_int32),
        ("normalization_type", c_int32),
        ("positional_embedding_type", c_int32),
        ("attn_only", c_int32),
        ("format", c_int32),
        ("scale_attn_by_inverse_layer_idx", c_int32),
        ("eps", c_float),
        ("attn_scale", c_float),
        ("processing", c_uint32),
        # added in 0.4.0
        ("n_key_value_heads", c_int32),
        ("rotary_dim", c_int32),
        ("rotary_adjacent_pairs", c_int32),
        ("rotary_base", c_float),
        ("rope_scaling", c_int32),
        ("rope_factor", c_float),
        ("rope_low_freq_factor", c_float),
        ("rope_high_freq_factor", c_float),
        ("rope_original_n_ctx", c_int32),
        ("gated_mlp", c_int32),
        ("parallel_attn_mlp", c_int32),
        ("final_rms", c_int32),
        ("norm_before_and_after", c_int32),
        ("attn_scores_soft_cap", c_float),
        ("output_logits_soft_cap", c_float),
        ("window_size", c_int32),
        ("local_attn", c_int32),
    ]


class LoadOptions(Structure):
    """``circuits_load_options``."""

    _fields_ = [
        ("size", c_uint32),
        ("fold_ln", c_int32),
        ("center_writing_weights", c_int32),
        ("center_unembed", c_int32),
        ("fold_value_biases", c_int32),
        ("refactor_factored_attn_matrices", c_int32),
        ("read_into_memory", c_int32),  # added in 0.3.0: 0 map the files, 1 read them into memory
        ("keep_stored_dtype", c_int32),  # added in 0.6.0: 1 keep matrices quantized / F16 / BF16
    ]


class ContextOptions(Structure):
    """``circuits_context_options``."""

    _fields_ = [("size", c_uint32), ("use_attn_result", c_int32),
                # 0.5.0: the optional hook points
                ("use_split_qkv_input", c_int32), ("use_attn_in", c_int32), ("use_hook_mlp_in", c_int32),
                ("use_hook_tokens", c_int32)]


class DetectOptions(Structure):
    """``circuits_detect_options``."""

    _fields_ = [
        ("size", c_uint32),
        ("error_measure", c_int32),
        ("exclude_bos", c_int32),
        ("exclude_current_token", c_int32),
        ("attention_mask", c_void_p),  # 0.5.0: const int32_t * [batch, pos]
    ]


class RunOptions(Structure):
    """``circuits_run_options`` (pointers as addresses: the caller keeps the arrays alive)."""

    _fields_ = [
        ("size", c_uint32),
        ("start_at_layer", c_int32),
        ("stop_at_layer", c_int32),
        ("input", c_void_p),  # const float *
        ("logit_positions", c_void_p),  # const int64_t *
        ("n_logit_positions", c_int64),
        ("attention_mask", c_void_p),  # 0.5.0: const int32_t * [batch, pos]
        ("kv_cache", c_void_p),  # 0.5.0: circuits_kv_cache *
    ]


class EncodeOptions(Structure):
    """``circuits_encode_options``."""

    _fields_ = [
        ("size", c_uint32),
        ("prepend_bos", c_int32),
        ("add_prefix_space", c_int32),
        ("parse_special", c_int32),
    ]


class GenerateOptions(Structure):
    """``circuits_generate_options`` (``on_step`` as an address: cast a :data:`GENERATE_FN`)."""

    _fields_ = [
        ("size", c_uint32),
        ("max_new_tokens", c_int32),
        ("do_sample", c_int32),
        ("temperature", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("freq_penalty", c_float),
        ("seed", c_uint64),
        ("stop_at_eos", c_int32),
        ("eos_token_id", c_int32),
        ("use_kv_cache", c_int32),
        ("on_step", c_void_p),  # circuits_generate_fn
        ("user_data", c_void_p),
        ("attention_mask", c_void_p),  # 0.5.0: const int32_t * [batch, prompt_len]
    ]


class Metric(Structure):
    """``circuits_metric`` (pointers as addresses: the caller keeps the arrays alive; ``fn`` as an
    address: cast a :data:`METRIC_FN`)."""

    _fields_ = [
        ("size", c_uint32),
        ("kind", c_int32),
        ("positions", c_void_p),  # const int64_t *
        ("answer", c_void_p),  # const int32_t *
        ("wrong", c_void_p),  # const int32_t *
        ("tokens", c_void_p),  # const int32_t *
        ("attention_mask", c_void_p),  # const int32_t *
        ("fn", c_void_p),  # circuits_metric_fn
        ("user_data", c_void_p),
        # added in 0.7.0 (a 0.5.0 struct ends above)
        ("hook", c_void_p),  # const char *: HOOK_LINEAR
        ("direction", c_void_p),  # const float *: HOOK_LINEAR
        ("grad_fn", c_void_p),  # circuits_metric_grad_fn: GRAD_CALLBACK
    ]


class Ablation(Structure):
    """``circuits_ablation`` (``hook`` and ``values`` as addresses: the caller keeps them alive)."""

    _fields_ = [
        ("size", c_uint32),
        ("kind", c_int32),
        ("hook", c_void_p),  # const char *
        ("head", c_int32),
        ("neuron", c_int64),
        ("position", c_int64),
        ("values", c_void_p),  # const float *
        ("source_batch", c_int64),
        ("seed", c_uint64),
    ]


class PatchOptions(Structure):
    """``circuits_patch_options``."""

    _fields_ = [
        ("size", c_uint32),
        ("incremental", c_int32),
        ("cells_per_run", c_int32),
    ]


class ResidOptions(Structure):
    """``circuits_resid_options`` (index arrays as addresses: the caller keeps them alive)."""

    _fields_ = [
        ("size", c_uint32),
        ("layer", c_int32),
        ("incl_mid", c_int32),
        ("mlp_input", c_int32),
        ("apply_ln", c_int32),
        ("incl_embeds", c_int32),
        ("mode", c_int32),
        ("incl_remainder", c_int32),
        ("expand_neurons", c_int32),
        ("recompute_ln", c_int32),
        ("unembed_bias", c_int32),
        ("positions", c_void_p),  # const int64_t *
        ("n_positions", c_int64),
        ("neurons", c_void_p),  # const int64_t *
        ("n_neurons", c_int64),
        ("batch_indices", c_void_p),  # const int64_t *
        ("n_batch_indices", c_int64),
    ]


class PathHead(Structure):
    """``circuits_path_head``: a sender, or a receiver with its input (CIRCUITS_READER_Q/K/V)."""

    _fields_ = [("layer", c_int32), ("head", c_int32), ("input", c_int32)]


class PathPatchOptions(Structure):
    """``circuits_path_patch_options`` (receivers as an address: the caller keeps the array alive)."""

    _fields_ = [
        ("size", c_uint32),
        ("receivers", c_void_p),  # const circuits_path_head *
        ("n_receivers", c_int64),
        ("freeze_mlps", c_int32),
    ]


class DiffOptions(Structure):
    """``circuits_diff_options`` (names as an address: the caller keeps the array alive)."""

    _fields_ = [
        ("size", c_uint32),
        ("attention_mask", c_void_p),  # const int32_t * [batch, pos]
        ("names", c_void_p),  # const char *const *
        ("n_names", c_size_t),
        ("logits", c_int32),
        ("per_head", c_int32),
    ]


class DiffEntry(Structure):
    """``circuits_diff_entry`` (the strings belong to the diff)."""

    _fields_ = [
        ("size", c_uint32),
        ("layer", c_int32),
        ("head", c_int32),
        ("name", c_void_p),  # const char *
        ("kind", c_void_p),  # const char *
        ("numel", c_int64),
        ("rel_error", c_double),
        ("max_abs", c_double),
        ("cosine", c_double),
        ("norm_a", c_double),
        ("norm_b", c_double),
    ]


class BackwardOptions(Structure):
    """``circuits_backward_options`` (0.7.0; pointers as addresses: the caller keeps them alive)."""

    _fields_ = [
        ("size", c_uint32),
        ("run", c_void_p),  # const circuits_run_options *
        ("names_filter", c_void_p),  # const char *const *
        ("n_filter", c_size_t),
        ("cache_activations", c_int32),
        ("edit_grad", c_int32),
        ("weight_grads", c_int32),
        ("input_grad", c_void_p),  # float * [batch, pos, d_model]
    ]


class EapOptions(Structure):
    """``circuits_eap_options`` (0.7.0)."""

    _fields_ = [("size", c_uint32), ("ig_steps", c_int32)]


class SaeInfo(Structure):
    """``circuits_sae_info`` (0.8.0; strings as addresses, valid while the SAE lives)."""

    _fields_ = [
        ("size", c_uint32),
        ("architecture", c_int32),
        ("is_transcoder", c_int32),
        ("has_skip", c_int32),
        ("d_in", c_int64),
        ("d_sae", c_int64),
        ("d_out", c_int64),
        ("apply_b_dec_to_input", c_int32),
        ("normalize_activations", c_int32),
        ("reshape_hook_z", c_int32),
        ("k", c_int32),
        ("rescale_acts_by_decoder_norm", c_int32),
        ("hook_layer", c_int32),
        ("hook_name", c_void_p),  # const char *
        ("hook_name_out", c_void_p),  # const char *
        ("architecture_name", c_void_p),  # const char *
        ("has_sparsity", c_int32),
    ]


class FeatureStatsOptions(Structure):
    """``circuits_feature_stats_options`` (0.8.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("top_k", c_int32),
        ("context_left", c_int32),
        ("context_right", c_int32),
        ("threshold", c_float),
        ("skip_positions", c_int32),
    ]


class SteeringOptions(Structure):
    """``circuits_steering_options`` (0.8.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("scale", c_float),
        ("positions", c_void_p),  # const int64_t *
        ("n_positions", c_int64),
    ]


class ContrastOptions(Structure):
    """``circuits_contrast_options`` (0.8.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("reduce", c_int32),
        ("positive_mask", c_void_p),  # const int32_t * [batch, pos]
        ("negative_mask", c_void_p),  # const int32_t * [batch, pos]
    ]


class ProbeOptions(Structure):
    """``circuits_probe_options`` (0.8.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("kind", c_int32),
        ("l2", c_float),
        ("fit_intercept", c_int32),
        ("max_iter", c_int32),
        ("tol", c_float),
        ("hook_name", c_void_p),  # const char *
    ]


class ProbeInfo(Structure):
    """``circuits_probe_info`` (0.8.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("kind", c_int32),
        ("d", c_int64),
        ("n_outputs", c_int64),
        ("l2", c_float),
        ("fit_intercept", c_int32),
        ("n_iter", c_int32),
        ("hook_name", c_void_p),  # const char *
    ]


class ProbeScore(Structure):
    """``circuits_probe_score`` (0.8.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("accuracy", c_double),
        ("log_loss", c_double),
        ("r2", c_double),
        ("mse", c_double),
    ]


class DatasetOptions(Structure):
    """``circuits_dataset_options`` (0.9.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("tensor", c_void_p),     # const char *
        ("tokenizer", c_void_p),  # const circuits_tokenizer *
        ("column", c_void_p),     # const char *
        ("seq_len", c_int64),
        ("prepend_bos", c_int32),
        ("max_rows", c_int64),
    ]


class VisOptions(Structure):
    """``circuits_vis_options`` (0.10.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("title", c_void_p),     # const char *
        ("subtitle", c_void_p),  # const char *
        ("fragment", c_int32),
    ]


#: ``circuits_job_progress_fn`` (0.9.0): int (*)(int64_t done, int64_t total, void *user_data)
JOB_PROGRESS_FN = CFUNCTYPE(c_int, c_int64, c_int64, c_void_p)
#: ``circuits_job_unit_fn`` (0.9.0): int (*)(int64_t unit, const void *bytes, size_t n_bytes, void *user_data)
JOB_UNIT_FN = CFUNCTYPE(c_int, c_int64, c_void_p, c_size_t, c_void_p)


class JobOptions(Structure):
    """``circuits_job_options`` (0.9.0)."""

    _fields_ = [
        ("size", c_uint32),
        ("kind", c_int32),
        ("hooks", c_void_p),           # const char *const *
        ("n_hooks", c_size_t),
        ("unit_rows", c_int64),
        ("seed", c_uint64),
        ("patch_kind", c_int32),
        ("ablation_kind", c_int32),
        ("ablation_means", c_void_p),  # const char *
        ("metric_kind", c_int32),
        ("sae_path", c_void_p),        # const char *
        ("feature_stats", c_void_p),   # const circuits_feature_stats_options *
        ("batch_size", c_int64),
        ("shard_index", c_int32),
        ("shard_count", c_int32),
        ("progress", c_void_p),        # circuits_job_progress_fn (a JOB_PROGRESS_FN kept alive by the caller)
        ("progress_data", c_void_p),
    ]


#: ``circuits_hook_fn``: int (*)(const circuits_tensor *act, void *user_data)
HOOK_FN = CFUNCTYPE(c_int, POINTER(Tensor), c_void_p)
#: ``circuits_generate_fn``: int (*)(int64_t step, const int32_t *tokens, const float *logits,
#: int64_t batch, void *user_data)
GENERATE_FN = CFUNCTYPE(c_int, c_int64, c_void_p, c_void_p, c_int64, c_void_p)
#: ``circuits_metric_fn``: int (*)(const float *logits, int64_t batch, int64_t pos, int64_t d_vocab,
#: float *value, void *user_data)
METRIC_FN = CFUNCTYPE(c_int, c_void_p, c_int64, c_int64, c_int64, POINTER(c_float), c_void_p)
#: ``circuits_probe_fn`` (0.8.0): int (*)(const float *out, int64_t batch, int64_t pos, int64_t n_outputs,
#: int64_t first_position, void *user_data)
PROBE_FN = CFUNCTYPE(c_int, c_void_p, c_int64, c_int64, c_int64, c_int64, c_void_p)
#: ``circuits_metric_grad_fn`` (0.7.0): int (*)(const float *logits, int64_t batch, int64_t pos,
#: int64_t d_vocab, float *value, float *grad, void *user_data)
METRIC_GRAD_FN = CFUNCTYPE(c_int, c_void_p, c_int64, c_int64, c_int64, POINTER(c_float), c_void_p, c_void_p)


def _ndptr(dtype, name: str):
    """An ndpointer type for C-contiguous arrays of ``dtype`` that also accepts None (NULL)."""
    base = np.ctypeslib.ndpointer(dtype=dtype, flags="C_CONTIGUOUS")

    def from_param(cls, obj):
        if obj is None:
            return None
        return base.from_param(obj)

    return type(name, (base,), {"from_param": classmethod(from_param)})


#: ``float *`` / ``const float *``: a C-contiguous float32 array, or None
F32P = _ndptr(np.float32, "F32P")
#: ``int32_t *`` / ``const int32_t *`` arrays
I32P = _ndptr(np.int32, "I32P")
#: ``int64_t *`` arrays
I64P = _ndptr(np.int64, "I64P")

def _checked_int(ctype, cname: str):
    """``ctype`` for arguments, but refusing (RangeError, TypeError) a value it cannot hold:
    plain ctypes integer arguments wrap silently (2**32 reaches C as 0)."""
    bits = 8 * ctypes.sizeof(ctype)
    signed = ctype(-1).value == -1
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def from_param(cls, obj):
        try:
            v = obj.__index__()
        except (AttributeError, TypeError):
            raise TypeError(f"expected an integer for a C {cname}, got {type(obj).__name__}") from None
        if not lo <= v <= hi:
            raise RangeError(f"{v} does not fit in a C {cname} [{lo}, {hi}]")
        return ctype(v)

    return type(f"checked_{cname}", (ctype,), {"from_param": classmethod(from_param)})


#: Integer argument types as declared in FUNCTIONS -> the range-checked type actually used.
CHECKED_INTS = {
    c_int32: _checked_int(c_int32, "int32_t"),
    c_int64: _checked_int(c_int64, "int64_t"),
    c_uint64: _checked_int(c_uint64, "uint64_t"),
    c_uint32: _checked_int(c_uint32, "uint32_t"),
}
for _t, _n in ((c_int, "int"), (c_size_t, "size_t"), (c_uint, "unsigned")):
    if _t not in CHECKED_INTS:  # on LP64 these are aliases of the fixed-width types
        CHECKED_INTS[_t] = _checked_int(_t, _n)


def check_int(value, ctype, name: str) -> int:
    """value as an int that ``ctype`` holds exactly (for struct fields, which wrap silently too)."""
    return CHECKED_INTS[ctype].from_param(value).value if not isinstance(value, bool) else int(value)


VOIDPP = POINTER(c_void_p)  # circuits_<object> **out
HANDLE = c_void_p  # circuits_<object> *

# --------------------------------------------------------------------------------------------
# THE table: every bound function, its restype and argtypes. Nothing else declares types.
# --------------------------------------------------------------------------------------------

FUNCTIONS: Dict[str, Tuple[object, List[object]]] = {
    # versions
    "circuits_version_number": (c_uint, []),
    "circuits_version_string": (c_char_p, []),
    "circuits_abi_version": (c_int, []),
    # errors
    "circuits_status_string": (c_char_p, [c_int]),
    "circuits_last_error": (c_char_p, []),
    "circuits_clear_error": (None, []),
    # models
    "circuits_load_options_init": (None, [POINTER(LoadOptions)]),
    "circuits_model_load": (c_int, [VOIDPP, c_char_p, POINTER(LoadOptions)]),
    "circuits_model_free": (None, [HANDLE]),
    "circuits_model_config": (c_int, [HANDLE, POINTER(ConfigStruct)]),
    "circuits_model_weight": (c_int, [HANDLE, c_char_p, POINTER(Tensor)]),
    "circuits_model_weight_count": (c_size_t, [HANDLE]),
    "circuits_model_weight_at": (c_int, [HANDLE, c_size_t, POINTER(Tensor)]),
    # weights kept in their stored dtype (keep_stored_dtype, 0.6.0)
    "circuits_model_weight_dtype": (c_int, [HANDLE, c_char_p, POINTER(c_int32)]),
    "circuits_model_weight_read": (c_int, [HANDLE, c_char_p, F32P, c_size_t, POINTER(Tensor)]),
    # contexts and hooks
    "circuits_context_options_init": (None, [POINTER(ContextOptions)]),
    "circuits_context_create": (c_int, [VOIDPP, HANDLE, POINTER(ContextOptions)]),
    "circuits_context_free": (None, [HANDLE]),
    "circuits_context_hook_point_count": (c_size_t, [HANDLE]),
    "circuits_context_hook_point": (c_int, [HANDLE, c_size_t, c_int64, c_int64, POINTER(Tensor)]),
    "circuits_context_add_hook": (c_int, [HANDLE, c_char_p, HOOK_FN, c_void_p, POINTER(c_int64)]),
    "circuits_context_remove_hook": (c_int, [HANDLE, c_int64]),
    "circuits_context_clear_hooks": (None, [HANDLE]),
    "circuits_act_name": (c_int, [c_char_p, c_int32, c_char_p, c_char_p, c_size_t]),
    "circuits_context_resolve_hook_name": (
        c_int,
        [HANDLE, c_char_p, c_size_t, c_char_p, c_size_t, POINTER(c_size_t)],
    ),
    "circuits_context_forward": (c_int, [HANDLE, I32P, c_int64, c_int64, F32P, F32P, F32P]),
    "circuits_run_options_init": (None, [POINTER(RunOptions)]),
    "circuits_context_run": (c_int, [HANDLE, POINTER(RunOptions), I32P, c_int64, c_int64, F32P]),
    # run memory (the block hook activations live in; the binding's leases own taken blocks)
    "circuits_context_take_run_memory": (c_int, [HANDLE, VOIDPP]),
    "circuits_run_memory_data": (c_void_p, [HANDLE]),
    "circuits_run_memory_nbytes": (c_size_t, [HANDLE]),
    "circuits_run_memory_free": (None, [HANDLE]),
    # caches
    "circuits_cache_create": (c_int, [VOIDPP]),
    "circuits_cache_free": (None, [HANDLE]),
    "circuits_context_run_with_cache": (
        c_int,
        [HANDLE, I32P, c_int64, c_int64, POINTER(c_char_p), c_size_t, HANDLE, F32P, F32P, F32P],
    ),
    "circuits_context_run_with_cache_opts": (
        c_int,
        [HANDLE, POINTER(RunOptions), I32P, c_int64, c_int64, POINTER(c_char_p), c_size_t, HANDLE, F32P, F32P, F32P],
    ),
    "circuits_cache_count": (c_size_t, [HANDLE]),
    "circuits_cache_at": (c_int, [HANDLE, c_size_t, POINTER(Tensor)]),
    "circuits_cache_get": (c_int, [HANDLE, c_char_p, POINTER(Tensor)]),
    "circuits_cache_nbytes": (c_size_t, [HANDLE]),
    # the residual stream (ActivationCache's methods)
    "circuits_resid_options_init": (None, [POINTER(ResidOptions)]),
    "circuits_resid_shape": (c_int, [HANDLE, HANDLE, c_int, POINTER(ResidOptions), I64P]),
    "circuits_resid_stack": (c_int, [HANDLE, HANDLE, c_int, POINTER(ResidOptions), F32P, c_size_t]),
    "circuits_resid_labels": (
        c_int,
        [HANDLE, HANDLE, c_int, POINTER(ResidOptions), c_char_p, c_size_t, POINTER(c_size_t)],
    ),
    "circuits_resid_apply_ln": (c_int, [HANDLE, HANDLE, POINTER(ResidOptions), F32P, c_int64, c_int64, c_int64]),
    "circuits_model_residual_directions": (c_int, [HANDLE, I32P, c_int64, F32P]),
    "circuits_resid_logit_attrs": (
        c_int,
        [HANDLE, HANDLE, POINTER(ResidOptions), F32P, c_int64, c_int64, c_int64, I32P, I32P, c_int64, F32P],
    ),
    "circuits_logit_lens": (c_int, [HANDLE, HANDLE, POINTER(ResidOptions), F32P, c_size_t]),
    "circuits_direct_logit_attribution": (
        c_int,
        [HANDLE, HANDLE, c_int, POINTER(ResidOptions), I32P, I32P, c_int64, F32P, c_size_t],
    ),
    # factored matrices
    "circuits_factored_create": (c_int, [VOIDPP, F32P, F32P, c_int64, c_int64, c_int64, c_int64]),
    "circuits_factored_free": (None, [HANDLE]),
    "circuits_factored_shape": (c_int, [HANDLE, I64P, POINTER(c_int32), POINTER(c_int64)]),
    "circuits_factored_factors": (c_int, [HANDLE, POINTER(Tensor), POINTER(Tensor)]),
    "circuits_factored_transpose": (c_int, [HANDLE, VOIDPP]),
    "circuits_factored_matmul": (c_int, [HANDLE, HANDLE, VOIDPP]),
    "circuits_factored_matmul_dense": (c_int, [HANDLE, F32P, c_int64, c_int64, VOIDPP]),
    "circuits_factored_rmatmul_dense": (c_int, [F32P, c_int64, c_int64, HANDLE, VOIDPP]),
    "circuits_factored_matvec": (c_int, [HANDLE, F32P, F32P]),
    "circuits_factored_vecmat": (c_int, [F32P, HANDLE, F32P]),
    "circuits_factored_norm": (c_int, [HANDLE, F32P]),
    "circuits_factored_svd": (c_int, [HANDLE, F32P, F32P, F32P]),
    "circuits_factored_eigenvalues": (c_int, [HANDLE, F32P, F32P]),
    "circuits_factored_corner": (c_int, [HANDLE, c_int64, F32P]),
    "circuits_factored_diagonal": (c_int, [HANDLE, F32P]),
    "circuits_factored_topk": (
        c_int,
        [HANDLE, c_int64, c_int32, c_int64, c_int64, F32P, I64P, I64P, POINTER(c_int64)],
    ),
    "circuits_factored_materialize": (c_int, [HANDLE, F32P, c_size_t]),
    # the circuits of a model
    "circuits_model_ov": (c_int, [HANDLE, c_int32, c_int32, VOIDPP]),
    "circuits_model_qk": (c_int, [HANDLE, c_int32, c_int32, VOIDPP]),
    "circuits_model_full_ov": (c_int, [HANDLE, c_int32, c_int32, VOIDPP]),
    "circuits_model_full_qk": (c_int, [HANDLE, c_int32, c_int32, VOIDPP]),
    "circuits_model_pos_qk": (c_int, [HANDLE, c_int32, c_int32, VOIDPP]),
    "circuits_model_rotary_qk": (c_int, [HANDLE, c_int32, c_int32, c_int64, VOIDPP]),
    "circuits_model_composition_circuit": (
        c_int,
        [HANDLE, c_int32, c_int32, c_int32, c_int32, c_int32, VOIDPP],
    ),
    "circuits_model_virtual_ov": (c_int, [HANDLE, c_int32, c_int32, c_int32, c_int32, VOIDPP]),
    "circuits_model_virtual_weights": (
        c_int,
        [HANDLE, c_int32, c_int32, c_int32, c_int32, c_int32, c_int32, VOIDPP],
    ),
    "circuits_model_composition_scores": (c_int, [HANDLE, c_int32, F32P]),
    "circuits_model_mlp_composition_scores": (c_int, [HANDLE, c_int32, F32P]),
    "circuits_composition_baseline": (
        c_int,
        [c_int64, c_int64, c_int64, c_int64, c_uint64, F32P, F32P],
    ),
    "circuits_model_copying_scores": (c_int, [HANDLE, c_int32, F32P]),
    # head detectors and induction
    "circuits_detect_options_init": (None, [POINTER(DetectOptions)]),
    "circuits_context_detect_heads": (
        c_int,
        [HANDLE, I32P, c_int64, c_int64, c_int32, F32P, POINTER(DetectOptions), F32P],
    ),
    "circuits_repeated_tokens": (c_int, [c_int64, c_int64, c_int32, c_uint64, c_int32, I32P]),
    "circuits_context_induction_scores": (
        c_int,
        [HANDLE, I32P, c_int64, c_int64, c_int64, F32P, F32P, F32P],
    ),
    # test_prompt's ranked answer report (circuits.utils)
    "circuits_logits_rank": (c_int, [F32P, c_int64, c_int32, c_int32, I64P, F32P, I32P, F32P]),
    # tokenizers
    "circuits_tokenizer_load": (c_int, [VOIDPP, c_char_p]),
    "circuits_tokenizer_free": (None, [HANDLE]),
    "circuits_encode_options_init": (None, [POINTER(EncodeOptions)]),
    "circuits_tokenizer_encode": (
        c_int,
        [HANDLE, c_char_p, c_size_t, POINTER(EncodeOptions), I32P, c_size_t, POINTER(c_size_t)],
    ),
    "circuits_tokenizer_decode": (c_int, [HANDLE, I32P, c_size_t, c_char_p, c_size_t, POINTER(c_size_t)]),
    "circuits_tokenizer_token": (c_int, [HANDLE, c_int32, c_char_p, c_size_t, POINTER(c_size_t)]),
    "circuits_tokenizer_vocab_size": (c_size_t, [HANDLE]),
    "circuits_tokenizer_bos_id": (c_int32, [HANDLE]),
    "circuits_tokenizer_eos_id": (c_int32, [HANDLE]),
    "circuits_model_tokenizer": (c_void_p, [HANDLE]),
    # generation (Model.generate; explicit KV caches are not bound, see SKIPPED)
    "circuits_generate_options_init": (None, [POINTER(GenerateOptions)]),
    "circuits_context_generate": (
        c_int,
        [HANDLE, I32P, c_int64, c_int64, POINTER(GenerateOptions), I32P, POINTER(c_int64)],
    ),
    # losses and metrics
    "circuits_lm_cross_entropy": (c_int, [F32P, I32P, I32P, c_int64, c_int64, c_int64, F32P, F32P]),
    "circuits_metric_init": (None, [POINTER(Metric)]),
    "circuits_metric_eval": (c_int, [POINTER(Metric), F32P, c_int64, c_int64, c_int64, F32P]),
    # ablation and patching (circuits.patching)
    "circuits_ablation_init": (None, [POINTER(Ablation)]),
    "circuits_context_run_ablated": (
        c_int,
        [HANDLE, POINTER(Ablation), c_size_t, I32P, c_int64, c_int64, F32P, F32P],
    ),
    "circuits_context_mean_activations": (
        c_int,
        [HANDLE, POINTER(c_char_p), c_size_t, I32P, c_int64, c_int64, c_int64, POINTER(c_void_p)],
    ),
    "circuits_patch_options_init": (None, [POINTER(PatchOptions)]),
    "circuits_patch_grid_shape": (c_int, [HANDLE, c_int32, c_int64, POINTER(c_int64), POINTER(c_int32)]),
    "circuits_context_activation_patch": (
        c_int,
        [HANDLE, c_int32, I32P, c_int64, c_int64, POINTER(c_void_p), POINTER(Metric), POINTER(PatchOptions), F32P],
    ),
    # path patching
    "circuits_path_patch_options_init": (None, [POINTER(PathPatchOptions)]),
    "circuits_context_path_patch": (
        c_int,
        [HANDLE, I32P, I32P, c_int64, c_int64, POINTER(PathHead), c_int64, POINTER(Metric),
         POINTER(PathPatchOptions), F32P, F32P],
    ),
    "circuits_context_path_patch_sweep": (
        c_int,
        [HANDLE, I32P, I32P, c_int64, c_int64, POINTER(Metric), POINTER(PathPatchOptions), F32P],
    ),
    # comparing two models
    "circuits_diff_options_init": (None, [POINTER(DiffOptions)]),
    "circuits_model_diff": (c_int, [HANDLE, HANDLE, I32P, c_int64, c_int64, POINTER(DiffOptions), POINTER(HANDLE)]),
    "circuits_diff_free": (None, [HANDLE]),
    "circuits_diff_count": (c_size_t, [HANDLE]),
    "circuits_diff_at": (c_int, [HANDLE, c_size_t, POINTER(DiffEntry)]),
    # gradients (0.7.0; circuits.grad, circuits.attribution)
    "circuits_context_add_backward_hook": (c_int, [HANDLE, c_char_p, HOOK_FN, c_void_p, POINTER(c_int64)]),
    "circuits_backward_options_init": (None, [POINTER(BackwardOptions)]),
    "circuits_context_backward": (
        c_int,
        [HANDLE, POINTER(BackwardOptions), I32P, c_int64, c_int64, POINTER(Metric), F32P, F32P, HANDLE, HANDLE],
    ),
    "circuits_context_attribution_patch": (
        c_int,
        [HANDLE, c_int32, I32P, c_int64, c_int64, POINTER(c_void_p), POINTER(Metric), F32P, F32P],
    ),
    "circuits_eap_options_init": (None, [POINTER(EapOptions)]),
    "circuits_eap_graph": (c_int, [HANDLE, POINTER(c_int64), POINTER(c_int64)]),
    "circuits_eap_node_name": (c_int, [HANDLE, c_int32, c_int64, c_char_p, c_size_t]),
    "circuits_context_edge_attribution": (
        c_int,
        [HANDLE, I32P, I32P, c_int64, c_int64, POINTER(Metric), POINTER(EapOptions), F32P],
    ),
    "circuits_eap_top_edges": (c_int, [F32P, c_int64, c_int64, c_int64, I64P, I64P, F32P]),
    "circuits_context_integrated_gradients": (
        c_int,
        [HANDLE, c_char_p, I32P, I32P, c_int64, c_int64, c_int32, POINTER(Metric), F32P, F32P],
    ),
    # storage types of weights (circuits.quant)
    "circuits_dtype_name": (c_char_p, [c_int32]),
    "circuits_dtype_block": (c_int, [c_int32, POINTER(c_int64), POINTER(c_size_t)]),
    "circuits_dequantize": (c_int, [c_int32, c_void_p, c_size_t, F32P, c_size_t]),
    # SAEs, feature statistics, steering, probes (0.8.0; circuits.sae, circuits.steering, circuits.probe)
    "circuits_sae_load": (c_int, [POINTER(HANDLE), c_char_p]),
    "circuits_sae_free": (None, [HANDLE]),
    "circuits_sae_get_info": (c_int, [HANDLE, POINTER(SaeInfo)]),
    "circuits_sae_weight": (c_int, [HANDLE, c_char_p, POINTER(Tensor)]),
    "circuits_sae_encode": (c_int, [HANDLE, F32P, c_int64, F32P, F32P]),
    "circuits_sae_decode": (c_int, [HANDLE, F32P, c_int64, F32P, F32P]),
    "circuits_context_add_sae": (c_int, [HANDLE, HANDLE, c_int32]),
    "circuits_context_remove_sae": (c_int, [HANDLE, c_char_p]),
    "circuits_context_sae_count": (c_size_t, [HANDLE]),
    "circuits_context_sae_at": (c_int, [HANDLE, c_size_t, POINTER(HANDLE), POINTER(c_int32)]),
    "circuits_feature_stats_options_init": (None, [POINTER(FeatureStatsOptions)]),
    "circuits_feature_stats_create": (c_int, [POINTER(HANDLE), HANDLE, POINTER(FeatureStatsOptions)]),
    "circuits_feature_stats_free": (None, [HANDLE]),
    "circuits_context_feature_stats_add": (c_int, [HANDLE, HANDLE, I32P, c_int64, c_int64]),
    "circuits_feature_stats_dims": (
        c_int,
        [HANDLE, POINTER(c_int64), POINTER(c_int64), POINTER(c_int32), POINTER(c_int32)],
    ),
    "circuits_feature_stats_get_options": (c_int, [HANDLE, POINTER(FeatureStatsOptions)]),
    "circuits_feature_stats_get": (c_int, [HANDLE, F32P, F32P, F32P]),
    "circuits_feature_stats_top": (
        c_int,
        [HANDLE, c_int64, F32P, I64P, I64P, I32P, POINTER(c_int32)],
    ),
    "circuits_feature_stats_save": (c_int, [HANDLE, c_char_p]),
    "circuits_feature_stats_load": (c_int, [POINTER(HANDLE), c_char_p]),
    "circuits_steering_options_init": (None, [POINTER(SteeringOptions)]),
    "circuits_context_add_steering": (
        c_int,
        [HANDLE, c_char_p, F32P, c_int64, POINTER(SteeringOptions), POINTER(c_int64)],
    ),
    "circuits_control_vector_load": (c_int, [c_char_p, c_int32, c_int64, F32P]),
    "circuits_control_vector_save": (c_int, [c_char_p, F32P, c_int32, c_int64, c_char_p]),
    "circuits_context_add_control_vector": (
        c_int,
        [HANDLE, F32P, c_int32, c_int64, POINTER(SteeringOptions), POINTER(c_int64)],
    ),
    "circuits_contrast_options_init": (None, [POINTER(ContrastOptions)]),
    "circuits_context_contrastive_vector": (
        c_int,
        [HANDLE, c_char_p, I32P, I32P, c_int64, c_int64, POINTER(ContrastOptions), F32P, c_size_t],
    ),
    "circuits_probe_options_init": (None, [POINTER(ProbeOptions)]),
    "circuits_probe_fit": (c_int, [POINTER(HANDLE), F32P, c_int64, c_int64, F32P, c_int64, POINTER(ProbeOptions)]),
    "circuits_probe_free": (None, [HANDLE]),
    "circuits_probe_get_info": (c_int, [HANDLE, POINTER(ProbeInfo)]),
    "circuits_probe_weights": (c_int, [HANDLE, POINTER(Tensor), POINTER(Tensor)]),
    "circuits_probe_predict": (c_int, [HANDLE, F32P, c_int64, F32P]),
    "circuits_probe_evaluate": (c_int, [HANDLE, F32P, c_int64, F32P, POINTER(ProbeScore)]),
    "circuits_probe_save": (c_int, [HANDLE, c_char_p]),
    "circuits_probe_load": (c_int, [POINTER(HANDLE), c_char_p]),
    "circuits_context_add_probe_monitor": (
        c_int,
        [HANDLE, HANDLE, c_char_p, PROBE_FN, c_void_p, POINTER(c_int64)],
    ),
    # datasets and jobs (0.9.0; docs/jobs.md)
    "circuits_dataset_options_init": (None, [POINTER(DatasetOptions)]),
    "circuits_dataset_open": (c_int, [POINTER(HANDLE), c_char_p, POINTER(DatasetOptions)]),
    "circuits_dataset_from_tokens": (c_int, [POINTER(HANDLE), I32P, c_int64, c_int64]),
    "circuits_dataset_free": (None, [HANDLE]),
    "circuits_dataset_set_column": (c_int, [HANDLE, c_char_p, I32P, c_int64, c_int64]),
    "circuits_dataset_load_column": (c_int, [HANDLE, c_char_p, c_char_p, c_char_p]),
    "circuits_dataset_dims": (c_int, [HANDLE, POINTER(c_int64), POINTER(c_int64)]),
    "circuits_dataset_column": (c_int, [HANDLE, c_char_p, POINTER(c_void_p), POINTER(c_int64)]),
    "circuits_dataset_digest": (c_int, [HANDLE, c_char_p]),
    "circuits_job_options_init": (None, [POINTER(JobOptions)]),
    "circuits_job_create": (c_int, [POINTER(HANDLE), HANDLE, HANDLE, POINTER(JobOptions), c_char_p]),
    "circuits_job_free": (None, [HANDLE]),
    "circuits_job_provenance": (c_char_p, [HANDLE]),
    "circuits_job_status": (c_int, [HANDLE, POINTER(c_int64), POINTER(c_int64), POINTER(c_int64)]),
    "circuits_job_unit_done": (c_int, [HANDLE, c_int64, POINTER(c_int32)]),
    "circuits_job_run": (c_int, [HANDLE]),
    "circuits_job_compute": (c_int, [HANDLE, I64P, c_size_t, JOB_UNIT_FN, c_void_p]),
    "circuits_job_store": (c_int, [HANDLE, c_int64, c_void_p, c_size_t]),
    "circuits_job_merge": (c_int, [POINTER(c_char_p), c_size_t, c_char_p]),
    # interactive views (0.10.0; circuits.vis, docs/pictures.md): the text comes back as an address
    # (c_void_p) so that the binding copies it and then frees it with circuits_vis_free
    "circuits_vis_options_init": (None, [POINTER(VisOptions)]),
    "circuits_vis_attention_patterns": (
        c_int, [POINTER(c_void_p), POINTER(c_size_t), POINTER(c_char_p), c_int64, F32P, c_int64, POINTER(c_char_p),
                POINTER(VisOptions)]),
    "circuits_vis_colored_tokens": (
        c_int, [POINTER(c_void_p), POINTER(c_size_t), POINTER(c_char_p), c_int64, F32P, c_int64, POINTER(c_char_p),
                POINTER(VisOptions)]),
    "circuits_vis_grid": (
        c_int, [POINTER(c_void_p), POINTER(c_size_t), F32P, c_int64, c_int64, POINTER(c_char_p), POINTER(c_char_p),
                c_char_p, c_char_p, c_char_p, POINTER(VisOptions)]),
    "circuits_vis_free": (None, [c_void_p]),
    "circuits_vis_save": (c_int, [c_char_p, c_size_t, c_char_p]),
    # threads
    "circuits_set_num_threads": (None, [c_int]),
    "circuits_get_num_threads": (c_int, []),
}

# every integer argument is range-checked (restypes are left alone)
FUNCTIONS = {n: (r, [CHECKED_INTS.get(a, a) for a in args]) for n, (r, args) in FUNCTIONS.items()}

_KV_REASON = (
    "explicit KV caches (circuits_kv_cache_*, circuits_context_forward_kv: TransformerLens's "
    "past_kv_cache argument) are not bound yet; Model.generate(use_past_kv_cache=True) uses the "
    "library's internal KV cache through circuits_context_generate."
)

#: Public C functions deliberately not bound, with the reason. Everything else in
#: include/circuits.h is callable as ``circuits._native.lib.<name>``.
SKIPPED: Dict[str, str] = {
    "circuits_kv_cache_create": _KV_REASON,
    "circuits_kv_cache_free": _KV_REASON,
    "circuits_kv_cache_length": _KV_REASON,
    "circuits_kv_cache_truncate": _KV_REASON,
    "circuits_kv_cache_layer": _KV_REASON,
    "circuits_context_forward_kv": _KV_REASON,
}
#: Public structs deliberately not declared (they belong to skipped functions).
SKIPPED_STRUCTS: Dict[str, str] = {}

#: The gradient functions (0.7.0): optional too, so that a 0.6 libcircuits.so.0 still loads;
#: Model.backward, bwd hooks, incl_bwd and circuits.attribution then raise NotImplementedError.
GRADIENT_FUNCTIONS = frozenset((
    "circuits_context_add_backward_hook", "circuits_backward_options_init", "circuits_context_backward",
    "circuits_context_attribution_patch", "circuits_eap_options_init", "circuits_eap_graph",
    "circuits_eap_node_name", "circuits_context_edge_attribution", "circuits_eap_top_edges",
    "circuits_context_integrated_gradients"))

#: The SAE, steering and probe functions (0.8.0): optional, so that a 0.7 libcircuits.so.0 still
#: loads; circuits.SAE, steering and probes then raise NotImplementedError.
SAE_FUNCTIONS = frozenset(n for n in FUNCTIONS if n.startswith((
    "circuits_sae_", "circuits_feature_stats_", "circuits_steering_", "circuits_control_vector_",
    "circuits_contrast_", "circuits_probe_")) or n in (
    "circuits_context_add_sae", "circuits_context_remove_sae", "circuits_context_sae_count",
    "circuits_context_sae_at", "circuits_context_feature_stats_add", "circuits_context_add_steering",
    "circuits_context_add_control_vector", "circuits_context_contrastive_vector",
    "circuits_context_add_probe_monitor"))

#: The dataset and job functions (0.9.0): optional, so that a 0.8 libcircuits.so.0 still loads;
#: circuits.Dataset and circuits.Job then raise NotImplementedError.
JOB_FUNCTIONS = frozenset(n for n in FUNCTIONS if n.startswith(("circuits_dataset_", "circuits_job_")))

#: The interactive views (0.10.0): optional, so that a 0.9 libcircuits.so.0 still loads; circuits.vis
#: then raises NotImplementedError.
VIS_FUNCTIONS = frozenset(n for n in FUNCTIONS if n.startswith("circuits_vis_"))

#: Bound functions that a libcircuits.so.0 built before they were added may lack (ABI 0 grows
#: by addition). The binding loads without them; the features that need them (the tokenizer:
#: Model.to_tokens, to_string, to_str_tokens, model("text")) then raise NotImplementedError.
OPTIONAL = frozenset(n for n in FUNCTIONS if n.startswith("circuits_tokenizer_") or n in (
    "circuits_encode_options_init", "circuits_model_tokenizer") or n in GRADIENT_FUNCTIONS or
    n in SAE_FUNCTIONS or n in JOB_FUNCTIONS or n in VIS_FUNCTIONS)

#: OPTIONAL functions the loaded library does not export (filled at load).
MISSING: set = set()


def has(name: str) -> bool:
    """Whether the loaded library exports (and the binding declared) function ``name``."""
    return name in FUNCTIONS and name not in MISSING


def require(name: str, what: str) -> None:
    """NotImplementedError naming ``what`` if the loaded library lacks function ``name``."""
    if not has(name):
        raise NotImplementedError(f"{what} needs {name}, which {library_path} does not export (a libcircuits "
                                  f"older than {CIRCUITS_VERSION_STRING}?)")


# --------------------------------------------------------------------------------------------
# Finding and loading the library
# --------------------------------------------------------------------------------------------

SONAME = "libcircuits.so.0"
_PACKAGE_DIR = Path(__file__).resolve().parent


def _candidates() -> List[Tuple[str, str]]:
    """(where, path-or-name) in lookup order. CIRCUITS_LIBRARY, if set, is the only candidate."""
    env = os.environ.get("CIRCUITS_LIBRARY")
    if env:
        p = Path(env)
        if p.is_dir():
            p = p / SONAME
        return [("CIRCUITS_LIBRARY", str(p))]
    out: List[Tuple[str, str]] = []
    bundled = _PACKAGE_DIR / "_lib" / SONAME
    if bundled.exists():
        out.append(("bundled", str(bundled)))
    for parent in _PACKAGE_DIR.parents:
        cand = parent / "build" / "lib" / SONAME
        if cand.exists():
            out.append(("build tree", str(cand)))
            break
    found = ctypes.util.find_library("circuits")
    if found:
        out.append(("system (find_library)", found))
    out.append(("system (soname)", SONAME))
    return out


def _declare(lib: ctypes.CDLL) -> None:
    for name, (restype, argtypes) in FUNCTIONS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            if name in OPTIONAL:
                MISSING.add(name)
                continue
            raise  # the library lacks a symbol every ABI-0 libcircuits has
        fn.restype = restype
        fn.argtypes = argtypes


def _check_abi(lib, path: str) -> None:
    got = lib.circuits_abi_version()
    if got != CIRCUITS_ABI_VERSION:
        raise ABIMismatchError(
            f"{path} has libcircuits ABI version {got}, but this Python binding was written for "
            f"ABI {CIRCUITS_ABI_VERSION} (libcircuits.so.{CIRCUITS_ABI_VERSION}). Install the "
            f"matching binding, or point CIRCUITS_LIBRARY at a libcircuits.so.{CIRCUITS_ABI_VERSION}."
        )


def _find_and_load() -> Tuple[ctypes.CDLL, str, str]:
    tried: List[str] = []
    for where, path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"  {where}: {path}: {e}")
            continue
        try:
            # the ABI check needs only this symbol; declare it alone first
            lib.circuits_abi_version.restype = c_int
            lib.circuits_abi_version.argtypes = []
        except AttributeError:
            tried.append(f"  {where}: {path}: not libcircuits (no circuits_abi_version)")
            continue
        _check_abi(lib, path)
        try:
            _declare(lib)
        except AttributeError as e:
            raise ABIMismatchError(f"{path}: {e}; the library does not export the ABI-"
                                   f"{CIRCUITS_ABI_VERSION} API this binding declares") from None
        return lib, path, where
    raise LibraryNotFoundError(
        "cannot load libcircuits (libcircuits.so.0). Tried, in order:\n"
        + "\n".join(tried)
        + "\nBuild it (meson setup build && ninja -C build), then either run from the repository "
        "(the binding finds build/lib/libcircuits.so.0), set CIRCUITS_LIBRARY=/path/to/"
        "libcircuits.so.0, copy the library into circuits/_lib/ before `pip install`, or install "
        "it system-wide (meson install -C build && ldconfig)."
    )


lib, library_path, library_source = _find_and_load()

# --------------------------------------------------------------------------------------------
# Error helpers
# --------------------------------------------------------------------------------------------


def last_error() -> str:
    """circuits_last_error() as str."""
    msg = lib.circuits_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def status_string(status: int) -> str:
    return lib.circuits_status_string(status).decode("utf-8", "replace")


def make_error(status: int, context: str = "") -> CircuitsError:
    """The typed exception for a failed call (message = circuits_last_error())."""
    msg = last_error() or status_string(status)
    if context:
        msg = f"{context}: {msg}"
    return error_class(status)(msg, status)


def check(status: int, context: str = "") -> None:
    """Raise the typed exception of ``status`` if it is negative."""
    if status < 0:
        raise make_error(status, context)


def cstr(s: str) -> bytes:
    if not isinstance(s, str):
        raise TypeError(f"expected a str, got {type(s).__name__}")
    b = s.encode("utf-8")
    if b"\0" in b:
        raise ValueError("names must not contain NUL characters")
    return b


def decode(addr: Optional[int]) -> str:
    """A NUL-terminated C string at ``addr`` (a c_void_p field value) as str."""
    if not addr:
        return ""
    return ctypes.string_at(addr).decode("utf-8", "replace")
