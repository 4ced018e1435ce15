"""The benchmark's model families, in one place: the shape of each random model, where
bench/run.py caches it, and the dimensions its GEMM-bound limit (gemm_limit.py) counts.

    gpt2    GPT-2 small (transformers' GPT2Config defaults; the suite's original model)
    llama   Llama-shaped (issue 13): d_model 2048, 16 layers, 32 query heads, 8 K/V heads,
            gated SiLU MLP d_mlp 8192, vocab 32000, RMSNorm, rotary on the whole head
    pythia  Pythia-shaped GPT-NeoX (issue 13): d_model 1024, 16 layers, 16 heads, d_mlp 4096,
            vocab 50304, LayerNorm, parallel attention + MLP, rotary on a quarter of the head

Directory names avoid the string "llama": TransformerLens's convert_hf_model_config picks
the architecture from the *name* when it contains "llama" (and never reads config.json then);
these models must go through its config.json branch (LlamaForCausalLM / GPTNeoXForCausalLM),
as a checkpoint under any other name does.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache")

FAMILIES = {
    "gpt2": dict(
        dir="gpt2-small-random",
        gemm=dict(kind="gpt2", n_layers=12, d_model=768, n_heads=12, n_kv_heads=12, d_head=64, d_mlp=3072,
                  d_vocab=50257),
    ),
    "llama": dict(
        dir="rms-gqa-swiglu-1b-random",
        hf=dict(cls="LlamaForCausalLM", config="LlamaConfig", hidden_size=2048, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192, vocab_size=32000,
                max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False),
        gemm=dict(kind="llama", n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8, d_head=64, d_mlp=8192,
                  d_vocab=32000),
        omit_zero_biases=True,  # Llama has no biases; TL's conversion adds zeros
    ),
    "pythia": dict(
        dir="neox-1024x16-random",
        hf=dict(cls="GPTNeoXForCausalLM", config="GPTNeoXConfig", hidden_size=1024, num_hidden_layers=16,
                num_attention_heads=16, intermediate_size=4096, vocab_size=50304, rotary_pct=0.25,
                use_parallel_residual=True, max_position_embeddings=2048, tie_word_embeddings=False),
        gemm=dict(kind="neox", n_layers=16, d_model=1024, n_heads=16, n_kv_heads=16, d_head=64, d_mlp=4096,
                  d_vocab=50304),
        omit_zero_biases=False,  # NeoX has biases (zero at random init, but real checkpoints ship them)
    ),
}


def hf_dir(f):
    """The Hugging Face checkpoint (config.json + model.safetensors) the peers load; f is an
    entry of FAMILIES (or tiny())."""
    return os.path.join(CACHE, f["dir"])


def tl_dir(f):
    """The same weights in the TL layout (tl_config.json + model.safetensors from TransformerLens's
    own conversion, unprocessed): what libcircuits loads until it reads these HF directories."""
    return os.path.join(CACHE, f["dir"] + "-tl")


def tiny(family):
    """A small model of the same family (same block structure, GQA group and rotary fraction),
    for checking the suite end to end in seconds: bench/run.py --tiny."""
    f = dict(FAMILIES[family])
    f["dir"] += "-tiny"
    f["gemm"] = g = dict(f["gemm"], n_layers=2, d_model=128, d_head=16, d_mlp=512, d_vocab=1000)
    g["n_heads"] = 8
    g["n_kv_heads"] = 2 if family == "llama" else 8
    if "hf" in f:
        f["hf"] = dict(f["hf"], hidden_size=128, num_hidden_layers=2, num_attention_heads=8, intermediate_size=512,
                       vocab_size=1000)
        if family == "llama":
            f["hf"]["num_key_value_heads"] = 2
    return f


def get(family, is_tiny=False):
    return tiny(family) if is_tiny else FAMILIES[family]
