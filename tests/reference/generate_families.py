#!/usr/bin/env python3
"""Reference cases for the modern Hugging Face families (issue 13): GPT-NeoX (Pythia), GPT-J,
Llama (GQA; Llama 3 rope scaling), Mistral, Qwen2, Gemma and Gemma 2.

    /opt/refenv/bin/python tests/reference/generate_families.py [case_name ...]

Each case is a random-init transformers model (XForCausalLM, eager attention) saved with
save_pretrained (F32, or BF16 / sharded where said) into cases/<name>/, and TransformerLens's
HookedTransformer built from the same Hugging Face model with TL's own conversion
(convert_*_weights; the config from get_pretrained_model_config on the saved directory, by hand
for Gemma / Gemma 2 which TL 3.9 knows by hub name only). The generator checks TL against Hugging
Face on the logits and writes the case in generate.py's layout (expected.safetensors with every
hook, logits, hf_logits, loss, edits) plus tl_state.safetensors: TL's raw state dict, for the
weight-level test (every TL weight view of the loaded directory equals it).

Offline and deterministic (generate.py's settings: one thread, deterministic algorithms).
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as G  # noqa: E402  (offline env, thread and determinism settings)

import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
from typing import Callable, Dict, List  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
import transformers  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens import loading_from_pretrained as LFP  # noqa: E402
from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights  # noqa: E402
from transformer_lens.pretrained.weight_conversions.gptj import convert_gptj_weights  # noqa: E402
from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights  # noqa: E402
from transformer_lens.pretrained.weight_conversions.mistral import convert_mistral_weights  # noqa: E402
from transformer_lens.pretrained.weight_conversions.neox import convert_neox_weights  # noqa: E402
from transformer_lens.pretrained.weight_conversions.qwen2 import convert_qwen2_weights  # noqa: E402

CASES_DIR = G.CASES_DIR
B, T = 2, 12  # T > every sliding window below, so the windows bite

# model_type -> (transformers config class, model class, TL conversion)
FAMILIES = {
    "gpt_neox": (transformers.GPTNeoXConfig, transformers.GPTNeoXForCausalLM, convert_neox_weights),
    "gptj": (transformers.GPTJConfig, transformers.GPTJForCausalLM, convert_gptj_weights),
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, convert_llama_weights),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, convert_mistral_weights),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, convert_qwen2_weights),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM, convert_gemma_weights),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM, convert_gemma_weights),
}


def randomize_hf(model: torch.nn.Module, seed: int) -> None:
    """Norm weights ~ 1 + 0.2 N(0,1) (Gemma's stored offsets ~ 0.2 N(0,1): it adds the 1
    itself); every other parameter, biases included, ~ 0.3 N(0,1)."""
    g = G.gen(seed)
    gemma = model.config.model_type in ("gemma", "gemma2")
    for name, p in model.named_parameters():
        if ("norm" in name or ".ln_" in name) and name.endswith(".weight"):
            p.copy_((0.0 if gemma else 1.0) + 0.2 * G.randn_like(p, g))
        else:
            p.copy_(0.3 * G.randn_like(p, g))


def load_hf(d: str, model_type: str):
    cls = FAMILIES[model_type][1]
    return cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()


def tl_config(d: str, name: str, hf) -> HookedTransformerConfig:
    """TransformerLens's config for the saved directory d."""
    mt = hf.config.model_type
    c = hf.config
    if mt in ("gemma", "gemma2"):
        # TL 3.9 knows Gemma by hub name only: its google/gemma-2b / gemma-2-2b entries with this
        # model's values (act_fn as Hugging Face computes it: gelu_pytorch_tanh)
        kw = dict(
            d_model=c.hidden_size, d_head=c.head_dim, n_heads=c.num_attention_heads,
            d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings,
            eps=c.rms_norm_eps, d_vocab=c.vocab_size, act_fn="gelu_pytorch_tanh",
            normalization_type="RMS", rotary_base=c.rope_parameters["rope_theta"], rotary_dim=c.head_dim,
            positional_embedding_type="rotary", use_attn_scale=True,
            n_key_value_heads=c.num_key_value_heads, gated_mlp=True, final_rms=True,
            original_architecture="GemmaForCausalLM" if mt == "gemma" else "Gemma2ForCausalLM",
        )
        if mt == "gemma2":
            kw.update(
                window_size=c.sliding_window, use_local_attn=True,
                attn_types=["local", "global"] * ((c.num_hidden_layers + 1) // 2),  # HF: even layers sliding
                attn_scores_soft_cap=c.attn_logit_softcapping,
                output_logits_soft_cap=c.final_logit_softcapping,
                use_normalization_before_and_after=True,
                attn_scale=math.sqrt(c.query_pre_attn_scalar),
            )
        cfg = HookedTransformerConfig(device="cpu", dtype=torch.float32, model_name=name, **kw)
    else:
        # get_pretrained_model_config picks some settings by name: read it through a neutral path
        with tempfile.TemporaryDirectory() as tmp:
            link = os.path.join(tmp, "m")
            os.symlink(d, link)
            cfg = LFP.get_pretrained_model_config(link, device="cpu", dtype=torch.float32)
        cfg.model_name = name
        cfg.tokenizer_name = None  # no tokenizer in the case (HookedTransformer would load one)
    return cfg


def tl_from_hf(hf, cfg: HookedTransformerConfig):
    conv = FAMILIES[hf.config.model_type][2]
    sd = {k: v.detach().clone().float() for k, v in conv(hf, cfg).items()}
    tl = HookedTransformer(cfg).eval()
    tl.load_and_process_state_dict(dict(sd), **G.NO_PROCESSING)
    loaded = tl.state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), f"weight {k} changed while loading into TL"
    return tl, sd


def case_family(name: str, model_type: str, description: str, seed: int, save_dtype=torch.float32,
                max_shard_size=None, edit_config: Callable[[dict], None] = None,
                tl_fix: Callable[[HookedTransformerConfig], None] = None, **cfg_kw):
    d = os.path.join(CASES_DIR, name)
    G.fresh_dir(d)
    cfg_cls, model_cls, _ = FAMILIES[model_type]
    hf_cfg = cfg_cls(**cfg_kw)
    torch.manual_seed(seed)
    model = model_cls(hf_cfg).eval()
    randomize_hf(model, seed)
    if save_dtype != torch.float32:
        model = model.to(save_dtype)
    kw = {}
    if max_shard_size is not None:
        kw["max_shard_size"] = max_shard_size
    model.save_pretrained(d, **kw)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors", "model.safetensors.index.json") and not (
            f.startswith("model-") and f.endswith(".safetensors")
        ):
            os.remove(os.path.join(d, f))
    if max_shard_size is not None:
        assert os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    if edit_config:  # spellings real checkpoints ship (older field names, no layer_types, ...)
        p = os.path.join(d, "config.json")
        c = json.load(open(p))
        edit_config(c)
        with open(p, "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
            f.write("\n")
    hf = load_hf(d, model_type)
    cfg = tl_config(d, name, hf)
    if tl_fix:
        tl_fix(cfg)
    tl, sd = tl_from_hf(hf, cfg)

    tokens = G.random_tokens(seed + 100, B, T, hf.config.vocab_size)
    tokens_patch = G.random_tokens(seed + 101, B, T, hf.config.vocab_size)
    tensors, extras = G.tl_reference(tl, tokens, tokens_patch, True)
    hf_logits = hf(tokens).logits.float()
    diff = (hf_logits - tensors["logits"]).abs().max().item()
    assert diff < G.HF_TL_TOL, f"{name}: HF vs TL logits differ by {diff}"
    tensors["hf_logits"] = hf_logits
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(d, "tl_state.safetensors"),
              metadata={"case": name})
    more = {"weights_dtype": str(save_dtype).replace("torch.", ""), "family": model_type}
    G.write_case(name, "hf", description, tensors, extras, tl, diff, more)


def neox_old_names(c: dict) -> None:
    """Pythia's config.json spells rotary as rotary_pct / rotary_emb_base (no rope_parameters)."""
    rp = c.pop("rope_parameters")
    c["rotary_pct"] = rp["partial_rotary_factor"]
    c["rotary_emb_base"] = rp["rope_theta"]


def neox_tl_base(cfg: HookedTransformerConfig) -> None:
    """TL 3.9's convert_hf_model_config leaves NeoX's rotary base at its default 10000 (it does
    not read rotary_emb_base / rope_theta); Hugging Face uses the configured base."""
    cfg.rotary_base = 1000.0


def no_layer_types(c: dict) -> None:
    c.pop("layer_types", None)


def qwen2_as_shipped(c: dict) -> None:
    """Qwen2 checkpoints ship sliding_window set with use_sliding_window false (Hugging Face then
    uses no window), and no layer_types."""
    c.pop("layer_types", None)
    c["sliding_window"] = 4
    c["use_sliding_window"] = False


def all_cases() -> Dict[str, Callable[[], None]]:
    C: Dict[str, Callable[[], None]] = {}
    common = dict(vocab_size=64, max_position_embeddings=64, num_hidden_layers=2, hidden_size=32,
                  intermediate_size=48, tie_word_embeddings=False)
    C["hf_neox"] = lambda: case_family(
        "hf_neox", "gpt_neox",
        "Random GPTNeoXForCausalLM (Pythia layout): 2 layers, d_model 32, 2 heads x d_head 16, d_mlp 48, "
        "vocab 64, gelu, parallel residual, rotary_pct 0.25 (rotary_dim 4, rotate-half), rotary_emb_base "
        "1000; config.json uses the older names rotary_pct / rotary_emb_base. Fused query_key_value "
        "[(head qkv d_head), d_model] with biases; separate embed_out / lm_head.",
        seed=41, edit_config=neox_old_names, tl_fix=neox_tl_base, num_attention_heads=2, hidden_act="gelu",
        use_parallel_residual=True, rope_parameters=dict(rope_type="default", rope_theta=1000.0,
                                                         partial_rotary_factor=0.25),
        attention_dropout=0.0, hidden_dropout=0.0, **common,
    )
    C["hf_gptj"] = lambda: case_family(
        "hf_gptj", "gptj",
        "Random GPTJForCausalLM: 2 layers, n_embd 32, 2 heads x d_head 16, n_inner null (4 n_embd = 128: TL 3.9 ignores n_inner), vocab 64, "
        "gelu_new, rotary_dim 8 < d_head on adjacent pairs, one ln_1 per block read by both the "
        "attention and the MLP (parallel; TL's ln2 = a copy of ln1), no attention biases, lm_head with "
        "a bias (b_U).",
        seed=42, vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=None,
        rotary_dim=8, activation_function="gelu_new", tie_word_embeddings=False,
        attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0,
    )
    C["hf_llama_gqa"] = lambda: case_family(
        "hf_llama_gqa", "llama",
        "Random LlamaForCausalLM: 2 layers, d_model 32, 4 query heads / 2 K/V heads x d_head 8, "
        "SwiGLU d_mlp 48, vocab 64, rope_theta 10000, rms_norm_eps 1e-6, untied lm_head.",
        seed=43, num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-6,
        **common,
    )
    C["hf_llama3_rope"] = lambda: case_family(
        "hf_llama3_rope", "llama",
        "Random LlamaForCausalLM with Llama 3 rope scaling (rope_type llama3, factor 8, low/high "
        "freq factors 1/4, original_max_position_embeddings 256): d_head 16, so the 8 wavelengths "
        "(6.3 .. 19869) span all three bands. 2 layers, d_model 32, 2 heads / 1 K/V head (MQA), "
        "d_mlp 48, vocab 48 (not d_model: TL 3.9's fold_ln scales a square W_U along the wrong axis), "
        "tied embeddings.",
        seed=44, vocab_size=48, max_position_embeddings=64, num_hidden_layers=2, hidden_size=32,
        intermediate_size=48, tie_word_embeddings=True, num_attention_heads=2, num_key_value_heads=1,
        hidden_act="silu",
        rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=256),
    )
    C["hf_mistral_window"] = lambda: case_family(
        "hf_mistral_window", "mistral",
        "Random MistralForCausalLM: sliding_window 4 < T = 12 on every layer, 2 layers, d_model 32, "
        "4 heads / 2 K/V heads x d_head 8, d_mlp 48, vocab 64, rope_theta 10000.",
        seed=45, num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
        hidden_act="silu", **common,
    )
    C["hf_qwen2_bias"] = lambda: case_family(
        "hf_qwen2_bias", "qwen2",
        "Random Qwen2ForCausalLM: q/k/v biases (no o_proj bias), sliding_window 4 set but "
        "use_sliding_window false (as Qwen2 checkpoints ship: no window), 2 layers, d_model 32, "
        "4 heads / 2 K/V heads, d_mlp 48, vocab 64, rope_theta 1000000.",
        seed=46, edit_config=qwen2_as_shipped, num_attention_heads=4, num_key_value_heads=2,
        hidden_act="silu", rope_parameters=dict(rope_type="default", rope_theta=1000000.0), **common,
    )
    C["hf_gemma"] = lambda: case_family(
        "hf_gemma", "gemma",
        "Random GemmaForCausalLM: head_dim 16 with d_model 32 and 4 heads (not d_model / heads), "
        "1 K/V head (MQA), GeGLU (gelu_pytorch_tanh) d_mlp 48, RMSNorm weights stored as offsets "
        "from 1, embeddings scaled by sqrt(d_model), tied lm_head, vocab 64.",
        seed=47, vocab_size=64, max_position_embeddings=64, num_hidden_layers=2, hidden_size=32,
        intermediate_size=48, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True,
    )
    C["hf_gemma2"] = lambda: case_family(
        "hf_gemma2", "gemma2",
        "Random Gemma2ForCausalLM: 3 layers alternating sliding (layers 0, 2: window 4 < T) and "
        "global (layer 1) attention, no layer_types in config.json, attn_logit_softcapping 2, "
        "final_logit_softcapping 3, query_pre_attn_scalar 24 (scale sqrt(24), not sqrt(head_dim)), "
        "norms before and after each sublayer, head_dim 16 given, 2 heads / 1 K/V head, d_model 32, "
        "d_mlp 48, tied, vocab 64.",
        seed=48, edit_config=no_layer_types, vocab_size=64, max_position_embeddings=64,
        num_hidden_layers=3, hidden_size=32, intermediate_size=48, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=4, attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0, query_pre_attn_scalar=24, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
    )
    C["hf_qwen2_bf16"] = lambda: case_family(
        "hf_qwen2_bf16", "qwen2",
        "hf_qwen2_bias's model shape (own seed) saved in BF16; references computed in fp32 from the "
        "rounded weights.",
        seed=49, save_dtype=torch.bfloat16, edit_config=qwen2_as_shipped, num_attention_heads=4,
        num_key_value_heads=2, hidden_act="silu", **common,
    )
    C["hf_mistral_sharded"] = lambda: case_family(
        "hf_mistral_sharded", "mistral",
        "Random MistralForCausalLM (no sliding window: sliding_window null) saved in several "
        "safetensors shards + model.safetensors.index.json. 3 layers, d_model 32, 4 heads / 2 K/V.",
        seed=50, max_shard_size="30KB", num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        sliding_window=None, hidden_act="silu",
        **{**common, "num_hidden_layers": 3},
    )
    return C


def main(argv: List[str]) -> None:
    cases = all_cases()
    names = argv or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        sys.exit(f"unknown case(s): {unknown}; known: {list(cases)}")
    for n in names:
        print(f"generating {n} ...", flush=True)
        cases[n]()
        case = json.load(open(os.path.join(CASES_DIR, n, "case.json")))
        print(f"  {n}: HF vs TL max |logit diff| {case['hf_tl_max_abs_logit_diff']:.3g}, "
              f"{G.dir_bytes(os.path.join(CASES_DIR, n))} bytes", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
