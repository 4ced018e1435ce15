#!/usr/bin/env python3
"""Composition scores of a model with d_head > d_model, computed by TransformerLens.

Run with the reference venv (transformer_lens 3.x) from any directory:

    /opt/refenv/bin/python tests/reference/generate_composition.py

It writes ``composition/``: the model in TL layout (``tl_config.json`` +
``model.safetensors``, unprocessed) and ``expected.safetensors`` (see README.md, section
"Composition scores with d_head > d_model"). The model is a tiny random attention-only
HookedTransformer, d_model 16, d_head 24, 2 heads, 3 layers, LayerNorm, with random LN
parameters and biases, and a few heads made rank-deficient on purpose: every
[d_model, d_head] factor is wide (rank <= d_model), fold_ln centres W_Q/W_K/W_V (rank <= 15)
and center_writing_weights centres W_O. Everything is float32 on CPU with fixed seeds.
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# generate.py sets HF_HUB_OFFLINE, 1 thread, deterministic algorithms, no grad, and
# silences the HookedTransformer deprecation warning; its main() is not run on import.
import generate as G  # noqa: E402

import json  # noqa: E402
import logging  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import transformer_lens  # noqa: E402
from transformer_lens import FactoredMatrix, HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.utilities.matrix import composition_scores  # noqa: E402  (= utils.composition_scores)

from tl_export import load_tl_config, save_tl_model  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)

OUT = os.path.join(HERE, "composition")
FROM_PRETRAINED_FLAGS = dict(  # HookedTransformer.from_pretrained defaults
    fold_ln=True,
    center_writing_weights=True,
    center_unembed=True,
    fold_value_biases=True,
    refactor_factored_attn_matrices=False,
)
D_MODEL, D_HEAD, N_HEADS, N_LAYERS, D_VOCAB, N_CTX = 16, 24, 2, 3, 12, 8
BASELINE_SAMPLES = 400
# (tensor, layer, head, rank): heads made rank-deficient, as product of two Gaussian factors
LOW_RANK = (("W_V", 0, 1, 3), ("W_K", 1, 0, 2), ("W_O", 1, 1, 1), ("W_Q", 2, 0, 5))


def build_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        d_model=D_MODEL,
        d_head=D_HEAD,
        n_heads=N_HEADS,
        n_layers=N_LAYERS,
        d_vocab=D_VOCAB,
        n_ctx=N_CTX,
        attn_only=True,
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=0,
        device="cpu",
        dtype=torch.float32,
    )
    model = HookedTransformer(cfg).eval()
    g = torch.Generator().manual_seed(1234)
    sd = {}
    for name, p in model.named_parameters():
        if name.endswith((".w",)):  # LN scales around 1
            sd[name] = 1.0 + 0.3 * torch.randn(p.shape, generator=g)
        elif name.split(".")[-1].startswith("b"):
            sd[name] = 0.1 * torch.randn(p.shape, generator=g)
        else:
            fan_in = p.shape[-2]
            sd[name] = torch.randn(p.shape, generator=g) / fan_in**0.5
    for tname, layer, head, rank in LOW_RANK:
        key = f"blocks.{layer}.attn.{tname}"
        rows, cols = sd[key].shape[-2:]
        x = torch.randn(rows, rank, generator=g) / rows**0.5
        y = torch.randn(rank, cols, generator=g) / rank**0.5
        sd[key][head] = x @ y
        assert torch.linalg.matrix_rank(sd[key][head]) == rank  # float32 tolerance
    model.load_and_process_state_dict(sd, **G.NO_PROCESSING)
    return model


def composition(model: HookedTransformer, prefix: str, out: dict) -> None:
    for mode in ("Q", "K", "V"):
        out[f"{prefix}comp_{mode}"] = model.all_composition_scores(mode).float().contiguous()


def baseline(out: dict) -> None:
    """TL's utils.composition_scores on Gaussian factors of the model's shapes: writer
    FactoredMatrix(W_V [D, dh], W_O [dh, D]), reader FactoredMatrix(W_Q, W_K^T) (both
    [D, dh]); libcircuits' circuits_composition_baseline samples the same distribution."""
    g = torch.Generator().manual_seed(99)
    n, D, dh = BASELINE_SAMPLES, D_MODEL, D_HEAD
    left = FactoredMatrix(torch.randn(n, D, dh, generator=g), torch.randn(n, dh, D, generator=g))
    right = FactoredMatrix(torch.randn(n, D, dh, generator=g), torch.randn(n, D, dh, generator=g).transpose(-1, -2))
    s = composition_scores(left, right, broadcast_dims=False).double()
    assert s.shape == (n,)
    out["baseline_scores"] = s.float().contiguous()


def main() -> None:
    model = build_model()
    save_tl_model(model, OUT)
    # read back what was written, as the C library does
    cfg = HookedTransformerConfig.from_dict(load_tl_config(OUT))
    sd = load_file(os.path.join(OUT, "model.safetensors"))
    out = {}
    un = HookedTransformer(cfg).eval()
    un.load_and_process_state_dict(dict(sd), **G.NO_PROCESSING)
    composition(un, "unprocessed:", out)
    cfg_p = HookedTransformerConfig.from_dict(dict(load_tl_config(OUT), normalization_type="LNPre"))
    pr = HookedTransformer(cfg_p).eval()
    pr.load_and_process_state_dict(dict(sd), **FROM_PRETRAINED_FLAGS)
    assert pr.W_V.mean(-2).abs().max() < 1e-5 and pr.W_O.mean(-1).abs().max() < 1e-5  # centred
    composition(pr, "", out)
    baseline(out)
    for k, v in out.items():
        assert torch.isfinite(v).all(), k
    path = os.path.join(OUT, "expected.safetensors")
    save_file(out, path, metadata={"case": "composition"})
    info = {
        "description": __doc__.strip().splitlines()[0],
        "d_model": D_MODEL,
        "d_head": D_HEAD,
        "n_heads": N_HEADS,
        "n_layers": N_LAYERS,
        "low_rank_heads": [list(x) for x in LOW_RANK],
        "processing_flags": FROM_PRETRAINED_FLAGS,
        "baseline_samples": BASELINE_SAMPLES,
        "baseline_mean": out["baseline_scores"].double().mean().item(),
        "baseline_std": out["baseline_scores"].double().std(unbiased=False).item(),
        "versions": {"torch": torch.__version__, "transformer_lens": G.md.version("transformer_lens")},
    }
    with open(os.path.join(OUT, "case.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(f"{name:22s} {os.path.getsize(os.path.join(OUT, name)):7d} bytes")
    for k in ("comp_Q", "comp_K", "comp_V", "unprocessed:comp_V"):
        nz = out[k][out[k] != 0]
        print(f"{k:20s} {nz.numel()} scores, {nz.min().item():.4f} .. {nz.max().item():.4f}")
    print(f"baseline mean {info['baseline_mean']:.4f} std {info['baseline_std']:.4f}")


if __name__ == "__main__":
    main()
