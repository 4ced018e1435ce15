"""The GEMM-bound limit: the time a computation would take if it were nothing but its matrix
products, each running at the rate this machine's OpenBLAS reaches on that product's shape alone.

A GPT-2 forward at [B, T] is, per layer: the fused QKV projection [B T, d] x [d, 3d]; per batch
row and head the scores q k^T [T, d_head] x [d_head, T] and pattern @ v [T, T] x [T, d_head]
(full T x T squares, as a GEMM computes them; a causal kernel could skip half); the output
projection [B T, d] x [d, d]; the MLP [B T, d] x [d, d_mlp] and [B T, d_mlp] x [d_mlp, d]; and
once the unembedding [B T, d] x [d, vocab]. Elementwise work (LayerNorm, softmax, GELU) is not
counted: the limit is a lower bound no implementation built on these GEMMs can beat.

The modern families (family_gemms; shapes in bench/families.py) change the products:
- Llama (GQA, gated MLP): Q [B T, d] x [d, n_heads d_head]; K and V each [B T, d] x
  [d, n_kv d_head] (grouped-query attention: n_kv < n_heads); the scores and pattern @ v per
  batch row and *query* head (each query head still does its own products against its group's
  K/V); the output projection; three d x d_mlp products per layer (gate and in
  [B T, d] x [d, d_mlp], out [B T, d_mlp] x [d_mlp, d]); the unembedding.
- GPT-NeoX (Pythia): the fused QKV [B T, d] x [d, 3d] as Hugging Face stores it, then as GPT-2.
  The parallel block (attention and MLP both read resid_pre, through their own LayerNorms)
  changes the order, not the products: the two input projections read different normalised
  inputs, so they cannot be fused into one.

Two bounds come from one list: the GEMM-bound limit (each product at the rate this machine
reaches on that shape) and the looser "GFLOP at sgemm peak" (all FLOPs at the square-sgemm
peak), which issue 13's goal names.
"""

# GPT-2 small (transformers' GPT2Config defaults), the model bench/run.py generates.
GPT2_SMALL = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257)


def forward_gemms(batch, pos, n_layers, d_model, n_heads, d_head, d_mlp, d_vocab):
    """[(label, m, n, k, trans_b, count per call, calls per forward)] of one forward."""
    bt, L = batch * pos, n_layers
    return [
        ("qkv", bt, 3 * d_model, d_model, 0, 1, L),
        ("scores", pos, pos, d_head, 1, batch * n_heads, L),
        ("pattern_v", pos, d_head, pos, 0, batch * n_heads, L),
        ("attn_out", bt, d_model, n_heads * d_head, 0, 1, L),
        ("mlp_in", bt, d_mlp, d_model, 0, 1, L),
        ("mlp_out", bt, d_model, d_mlp, 0, 1, L),
        ("unembed", bt, d_vocab, d_model, 0, 1, 1),
    ]


def family_gemms(batch, pos, kind, n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab):
    """forward_gemms for a family (kind "gpt2", "llama" or "neox"; bench/families.py gemm)."""
    if kind in ("gpt2", "neox"):
        return forward_gemms(batch, pos, n_layers, d_model, n_heads, d_head, d_mlp, d_vocab)
    if kind != "llama":
        raise ValueError(kind)
    bt, L, hd = batch * pos, n_layers, n_heads * d_head
    return [
        ("q", bt, hd, d_model, 0, 1, L),
        ("k_v", bt, n_kv_heads * d_head, d_model, 0, 1, 2 * L),
        ("scores", pos, pos, d_head, 1, batch * n_heads, L),
        ("pattern_v", pos, d_head, pos, 0, batch * n_heads, L),
        ("attn_out", bt, d_model, hd, 0, 1, L),
        ("gate_in", bt, d_mlp, d_model, 0, 1, 2 * L),
        ("mlp_out", bt, d_model, d_mlp, 0, 1, L),
        ("unembed", bt, d_vocab, d_model, 0, 1, 1),
    ]


def causal_flops(gemms):
    """FLOPs with the attention squares (scores, pattern_v) halved: what a kernel that skips
    the causal mask's zero half (libcircuits' fused attention does) has to compute."""
    return sum(flops(g) / (2 if g[0] in ("scores", "pattern_v") else 1) for g in gemms)


def composition_gemms(n_layers, n_heads, d_model, d_head):
    """The products of all_composition_scores for one mode as bench_compose counts them: per
    writer layer l, [heads x d_head, d] x [d, later heads x d_head]."""
    hd = n_heads * d_head
    return [(f"compose_l{l}", hd, hd * (n_layers - 1 - l), d_model, 0, 1, 1) for l in range(n_layers - 1)]


def flops(g):
    _, m, n, k, _, count, calls = g
    return 2.0 * m * n * k * count * calls


def spec_lines(gemms):
    """Input lines for bench_gemm (each distinct shape once)."""
    seen, lines = set(), []
    for label, m, n, k, tb, count, _ in gemms:
        key = (m, n, k, tb, count)
        if key not in seen:
            seen.add(key)
            lines.append(f"{label} {m} {n} {k} {tb} {count}")
    return lines


def limit_seconds(gemms, rates):
    """Sum of FLOPs / measured rate of that shape; rates: {(m, n, k, tb, count): GFLOP/s}."""
    return sum(flops(g) / (rates[(g[1], g[2], g[3], g[4], g[5])] * 1e9) for g in gemms)
