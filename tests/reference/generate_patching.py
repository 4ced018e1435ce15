#!/usr/bin/env python3
"""TransformerLens's activation-patching grids (transformer_lens.patching) on small committed cases.

Run with the reference venv (transformer_lens 3.x) from any directory:

    /opt/refenv/bin/python tests/reference/generate_patching.py

For each case of CASES it loads the case's unprocessed model (``tests/reference/cases/<case>/``,
as libcircuits loads it with the default options), makes clean and corrupted tokens [2, 5]
(seeded), caches the clean run, and writes ``toolkit/patching/<case>.safetensors`` with:

* ``clean_tokens``, ``corrupted_tokens`` [B, T] int32; ``answer``, ``wrong`` [B] int32;
  ``positions`` [B] int64 (per-row metric positions: T - 1, T - 2);
* ``logit_diff.<fn>``: the grid of ``patching.get_act_patch_<fn>`` with the metric
  mean_b(logits[b, -1, answer[b]] - logits[b, -1, wrong[b]]) (libcircuits's LOGIT_DIFF);
* ``rowpos.<fn>``: the same metric read at ``positions[b]`` for a few grids;
* ``loss.<fn>``: the metric utils.lm_cross_entropy_loss(logits, corrupted_tokens) (LOSS);
* ``every.block``, ``every.head_all_pos``, ``every.head_by_pos``: get_act_patch_block_every,
  get_act_patch_attn_head_all_pos_every, get_act_patch_attn_head_by_pos_every (logit diff).

Everything is float32 on CPU, one thread, deterministic.
"""

from __future__ import annotations

import json
import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as G  # noqa: E402,F401  (sets threads, determinism, no grad, offline)

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from transformer_lens import HookedTransformer, HookedTransformerConfig, patching, utils  # noqa: E402

from tl_export import load_tl_config  # noqa: E402

OUT = os.path.join(HERE, "toolkit", "patching")
CASES = ("tl_2l_lnpre_gelu", "tl_gqa_rotary_rms", "tl_shortformer_relu", "tl_attn_only_2l_none")
B, T = 2, 5

GRIDS = (
    "resid_pre", "resid_mid", "attn_out", "mlp_out",
    "attn_head_out_by_pos", "attn_head_q_by_pos", "attn_head_k_by_pos", "attn_head_v_by_pos",
    "attn_head_pattern_by_pos", "attn_head_pattern_dest_src_pos",
    "attn_head_out_all_pos", "attn_head_q_all_pos", "attn_head_k_all_pos", "attn_head_v_all_pos",
    "attn_head_pattern_all_pos",
)
ROWPOS = ("resid_pre", "attn_head_out_by_pos", "attn_head_pattern_dest_src_pos", "attn_head_v_all_pos")
LOSS = ("resid_pre", "attn_head_k_by_pos", "attn_head_pattern_by_pos")


def load_case(name: str) -> HookedTransformer:
    d = os.path.join(HERE, "cases", name)
    model = HookedTransformer(HookedTransformerConfig.from_dict(load_tl_config(d))).eval()
    model.load_and_process_state_dict(
        load_file(os.path.join(d, "model.safetensors")),
        fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    return model


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    manifest = {"transformer_lens": G.versions(), "cases": {}}
    for ci, name in enumerate(CASES):
        model = load_case(name)
        V = model.cfg.d_vocab_out
        g = torch.Generator().manual_seed(100 + ci)
        clean = torch.randint(0, model.cfg.d_vocab, (B, T), generator=g)
        corrupted = clean.clone()
        corrupted[:, 1] = torch.randint(0, model.cfg.d_vocab, (B,), generator=g)
        corrupted[:, 3] = torch.randint(0, model.cfg.d_vocab, (B,), generator=g)
        answer = torch.randint(0, V, (B,), generator=g)
        wrong = torch.randint(0, V, (B,), generator=g)
        positions = torch.tensor([T - 1, T - 2], dtype=torch.int64)
        rows = torch.arange(B)
        _, cache = model.run_with_cache(clean)

        def logit_diff(logits, pos=None):
            p = torch.full((B,), -1) if pos is None else pos
            return (logits[rows, p, answer] - logits[rows, p, wrong]).mean()

        def loss(logits):
            return utils.lm_cross_entropy_loss(logits, corrupted)

        out = {
            "clean_tokens": clean.to(torch.int32), "corrupted_tokens": corrupted.to(torch.int32),
            "answer": answer.to(torch.int32), "wrong": wrong.to(torch.int32), "positions": positions,
        }
        for fn in GRIDS:
            if model.cfg.attn_only and fn in ("resid_mid", "mlp_out"):
                continue
            f = getattr(patching, "get_act_patch_" + fn)
            out["logit_diff." + fn] = f(model, corrupted, cache, logit_diff).float()
            if fn in ROWPOS:
                out["rowpos." + fn] = f(model, corrupted, cache, lambda lg: logit_diff(lg, positions)).float()
            if fn in LOSS:
                out["loss." + fn] = f(model, corrupted, cache, loss).float()
        if not model.cfg.attn_only:
            out["every.block"] = patching.get_act_patch_block_every(model, corrupted, cache, logit_diff).float()
        out["every.head_all_pos"] = patching.get_act_patch_attn_head_all_pos_every(
            model, corrupted, cache, logit_diff).float()
        out["every.head_by_pos"] = patching.get_act_patch_attn_head_by_pos_every(
            model, corrupted, cache, logit_diff).float()
        save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, name + ".safetensors"))
        manifest["cases"][name] = sorted(out)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
