#!/usr/bin/env python3
"""Attribution patching, EAP / EAP-IG edge scores and integrated gradients computed with
TransformerLens and torch autograd on small committed cases (issue 16, section 3).

Run with the reference venv (transformer_lens 3.x) from any directory:

    /opt/refenv/bin/python tests/reference/generate_attribution.py

For each case of CASES it loads the case's unprocessed model (as generate_patching.py; the GPT-2
checkpoint hf_tiny_random_gpt2 as generate.py's tl_from_hf), makes clean
and corrupted tokens [2, 5] (seeded) and writes ``attribution/<case>.safetensors`` with:

* ``clean_tokens``, ``corrupted_tokens`` [B, T] int32; ``answer``, ``wrong`` [B] int32; the metric
  is mean_b(logits[b, -1, answer[b]] - logits[b, -1, wrong[b]]) (libcircuits's LOGIT_DIFF);
* ``value``: the metric of the clean run;
* ``attr.<kind>``: attribution patching (noising: base = clean, source = corrupted), laid out as
  transformer_lens.patching's get_act_patch_<kind> grid: per cell, the sum over the batch and the
  cell's slice of (corrupted - clean activation) * d metric / d clean activation;
* ``eap``, ``eap_ig3``: EAP and EAP-IG (3 steps, midpoints (k + 0.5) / 3) edge scores
  [n_upstream, n_downstream] over libcircuits's graph (docs/gradients.md): the model with
  use_split_qkv_input, use_attn_result, use_hook_mlp_in; upstream activations blocks.0.hook_resid_pre,
  attn.hook_result, hook_mlp_out; downstream gradients at hook_q/k/v_input, hook_mlp_in and the
  last hook_resid_post; EAP-IG sets blocks.0.hook_resid_pre to corrupted + alpha (clean - corrupted);
  0 where no edge runs;
* ``ig.embed``, ``ig.embed.completeness``: integrated gradients at hook_embed, 4 steps (midpoints),
  baseline zeros.

Everything is float32 on CPU, one thread, deterministic; the gradients are torch autograd's.
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

from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402

from tl_export import load_tl_config  # noqa: E402

OUT = os.path.join(HERE, "attribution")
CASES = ("tl_2l_lnpre_gelu", "tl_gqa_rotary_rms", "tl_attn_only_2l_none", "tl_parallel_ln", "hf_tiny_random_gpt2")
B, T = 2, 5
IG_STEPS = 3
EMBED_STEPS = 4

# kind name (TL's get_act_patch_<name>) -> (hook, reduction of diff * grad of one layer)
# hooks: [B, T, ...] or pattern [B, H, dest, src]
KINDS = {
    "resid_pre": ("hook_resid_pre", lambda x: x.sum((0, 2))),                  # [T]
    "attn_out": ("hook_attn_out", lambda x: x.sum((0, 2))),                    # [T]
    "mlp_out": ("hook_mlp_out", lambda x: x.sum((0, 2))),                      # [T]
    "attn_head_out_by_pos": ("attn.hook_z", lambda x: x.sum((0, 3))),          # [T, H]
    "attn_head_k_by_pos": ("attn.hook_k", lambda x: x.sum((0, 3))),            # [T, KVH]
    "attn_head_v_all_pos": ("attn.hook_v", lambda x: x.sum((0, 1, 3))),        # [KVH]
    "attn_head_pattern_by_pos": ("attn.hook_pattern", lambda x: x.sum((0, 3))),  # [H, T]
    "attn_head_pattern_dest_src_pos": ("attn.hook_pattern", lambda x: x.sum(0)),  # [H, T, T]
    "attn_head_pattern_all_pos": ("attn.hook_pattern", lambda x: x.sum((0, 2, 3))),  # [H]
}


def load_case(name: str, eap: bool = False) -> HookedTransformer:
    d = os.path.join(HERE, "cases", name)
    if name.startswith("hf_"):  # a GPT-2 checkpoint, unprocessed (from_pretrained_no_processing)
        lm = G.load_hf_lm(d)
        model = G.tl_from_hf(lm, lm.config, "GPT2LMHeadModel")
    else:
        model = HookedTransformer(HookedTransformerConfig.from_dict(load_tl_config(d))).eval()
        model.load_and_process_state_dict(
            load_file(os.path.join(d, "model.safetensors")),
            fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    if eap:
        model.set_use_split_qkv_input(True)
        model.set_use_attn_result(True)
        if not model.cfg.attn_only:
            model.set_use_hook_mlp_in(True)
    return model


def grad_run(model, tokens, names, metric, replace=None):
    """Forward with the points `names` kept (retain_grad), backward from metric(logits); returns
    ({name: activation}, {name: gradient}, value). replace: {name: tensor} set at those points."""
    acts = {}

    def keep(x, hook):
        if replace is not None and hook.name in replace:
            x = replace[hook.name].clone().requires_grad_(True)
        if hook.name in names:
            x.retain_grad()
            acts[hook.name] = x
        return x

    hooks = [(n, keep) for n in set(names) | set(replace or {})]
    with torch.enable_grad():
        for p in model.parameters():
            p.requires_grad_(True)
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
        value = metric(logits)
        value.backward()
    return ({n: a.detach() for n, a in acts.items()}, {n: a.grad.detach() for n, a in acts.items()},
            value.detach())


def forward_acts(model, tokens, names):
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {n: cache[n] for n in names}


def eap_graph(cfg):
    """libcircuits's graph: upstream [input, per layer a{l}.h{h}..., m{l}], downstream [per layer
    q heads, k kv-heads, v kv-heads, m{l}], logits; the edge mask."""
    L, H, K = cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads or cfg.n_heads
    M = 0 if cfg.attn_only else 1
    up = [(-1, "input", None)]
    for l in range(L):
        up += [(l, "head", h) for h in range(H)]
        if M:
            up.append((l, "mlp", None))
    down = []
    for l in range(L):
        down += [(l, "q", h) for h in range(H)] + [(l, "k", h) for h in range(K)] + [(l, "v", h) for h in range(K)]
        if M:
            down.append((l, "m", None))
    down.append((L, "logits", None))
    mask = torch.zeros(len(up), len(down), dtype=torch.bool)
    for i, (lu, ku, _) in enumerate(up):
        for j, (lv, kv, _) in enumerate(down):
            mask[i, j] = lu < lv or (kv == "m" and lu == lv and ku == "head" and not cfg.parallel_attn_mlp)
    return up, down, mask


def eap_scores(model, clean, corrupted, metric, steps):
    cfg = model.cfg
    L = cfg.n_layers
    up, down, mask = eap_graph(cfg)
    up_names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.attn.hook_result" for l in range(L)]
    if not cfg.attn_only:
        up_names += [f"blocks.{l}.hook_mlp_out" for l in range(L)]
    down_names = [f"blocks.{l}.hook_{x}_input" for l in range(L) for x in "qkv"]
    if not cfg.attn_only:
        down_names += [f"blocks.{l}.hook_mlp_in" for l in range(L)]
    down_names.append(f"blocks.{L - 1}.hook_resid_post")
    a_corr = forward_acts(model, corrupted, up_names)
    a_clean = forward_acts(model, clean, up_names)
    grads = {n: 0.0 for n in down_names}
    if steps == 0:
        _, g, _ = grad_run(model, clean, down_names, metric)
        grads = g
    else:
        x0, x1 = a_corr["blocks.0.hook_resid_pre"], a_clean["blocks.0.hook_resid_pre"]
        for k in range(steps):
            alpha = (k + 0.5) / steps
            _, g, _ = grad_run(model, clean, down_names, metric,
                               replace={"blocks.0.hook_resid_pre": x0 + alpha * (x1 - x0)})
            for n in down_names:
                grads[n] = grads[n] + g[n] / steps

    def up_act(node):
        l, kind, h = node
        if kind == "input":
            n = "blocks.0.hook_resid_pre"
            return a_corr[n] - a_clean[n]
        if kind == "head":
            n = f"blocks.{l}.attn.hook_result"
            return (a_corr[n] - a_clean[n])[:, :, h]
        n = f"blocks.{l}.hook_mlp_out"
        return a_corr[n] - a_clean[n]

    def down_grad(node):
        l, kind, h = node
        if kind == "logits":
            return grads[f"blocks.{L - 1}.hook_resid_post"]
        if kind == "m":
            return grads[f"blocks.{l}.hook_mlp_in"]
        return grads[f"blocks.{l}.hook_{kind}_input"][:, :, h]

    U = torch.stack([up_act(n).double() for n in up])        # [n_up, B, T, D]
    Gd = torch.stack([down_grad(n).double() for n in down])  # [n_down, B, T, D]
    S = torch.einsum("ubtd,vbtd->uv", U, Gd)
    return (S * mask).float()


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    manifest = {"transformer_lens": G.versions(), "cases": {}}
    for ci, name in enumerate(CASES):
        model = load_case(name)
        cfg = model.cfg
        V = cfg.d_vocab_out
        g = torch.Generator().manual_seed(300 + ci)
        clean = torch.randint(0, cfg.d_vocab, (B, T), generator=g)
        corrupted = clean.clone()
        corrupted[:, 1] = torch.randint(0, cfg.d_vocab, (B,), generator=g)
        corrupted[:, 3] = torch.randint(0, cfg.d_vocab, (B,), generator=g)
        answer = torch.randint(0, V, (B,), generator=g)
        wrong = torch.randint(0, V, (B,), generator=g)
        rows = torch.arange(B)

        def logit_diff(logits):
            return (logits[rows, -1, answer] - logits[rows, -1, wrong]).mean()

        out = {
            "clean_tokens": clean.to(torch.int32), "corrupted_tokens": corrupted.to(torch.int32),
            "answer": answer.to(torch.int32), "wrong": wrong.to(torch.int32),
        }
        # attribution patching
        for kind, (hook, reduce) in KINDS.items():
            if cfg.attn_only and kind == "mlp_out":
                continue
            names = [f"blocks.{l}.{hook}" for l in range(cfg.n_layers)]
            a, gr, value = grad_run(model, clean, names, logit_diff)
            src = forward_acts(model, corrupted, names)
            out["attr." + kind] = torch.stack(
                [reduce((src[n].double() - a[n].double()) * gr[n].double()) for n in names]).float()
            out["value"] = value.reshape(1).float()
        # integrated gradients at hook_embed, baseline zeros
        a = forward_acts(model, clean, ["hook_embed"])["hook_embed"]
        gsum = torch.zeros_like(a)
        for k in range(EMBED_STEPS):
            alpha = (k + 0.5) / EMBED_STEPS
            _, gr, _ = grad_run(model, clean, ["hook_embed"], logit_diff, replace={"hook_embed": alpha * a})
            gsum += gr["hook_embed"]
        attr = a * gsum / EMBED_STEPS
        _, _, f1 = grad_run(model, clean, ["hook_embed"], logit_diff)
        _, _, f0 = grad_run(model, clean, ["hook_embed"], logit_diff, replace={"hook_embed": torch.zeros_like(a)})
        out["ig.embed"] = attr.float()
        out["ig.embed.completeness"] = (f1.double() - f0.double() - attr.double().sum()).reshape(1).float()
        # EAP, EAP-IG
        model = load_case(name, eap=True)
        out["eap"] = eap_scores(model, clean, corrupted, logit_diff, 0)
        out["eap_ig3"] = eap_scores(model, clean, corrupted, logit_diff, IG_STEPS)
        save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, name + ".safetensors"))
        manifest["cases"][name] = {k: list(v.shape) for k, v in sorted(out.items())}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
