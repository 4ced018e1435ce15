#!/usr/bin/env python3
"""Gradient references (issue 16, "Proof"): PyTorch autograd through TransformerLens on every
committed reference case (see README.md, section "Gradients").

    /opt/refenv/bin/python tests/reference/generate_grads.py [case_name ...]

For each case in cases/ it rebuilds the case's HookedTransformer exactly as its forward references
were made (unprocessed, fp32: tl_config.json + model.safetensors for the TL cases, case.json's
tl_config + tl_state.safetensors for the Hugging Face families, generate.py's GPT-2 conversion for
the GPT-2 cases), checks it against expected.safetensors' logits, and writes
grads/<case>.safetensors plus its entry in grads/manifest.json. Offline, one thread,
deterministic algorithms (generate.py's settings); re-runs give byte-identical files.
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as G  # noqa: E402  (offline env, 1 thread, deterministic algorithms)

import json  # noqa: E402
import types  # noqa: E402
from typing import Callable, Dict, List, Tuple  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.utilities.lm_utils import lm_cross_entropy_loss  # noqa: E402
from transformers import GPT2Model  # noqa: E402

from tl_export import load_tl_config  # noqa: E402

torch.set_grad_enabled(True)  # generate.py turns autograd off for its forward references

CASES_DIR = G.CASES_DIR
OUT = os.path.join(HERE, "grads")
# A gradient tensor with more elements than this is not stored (hf_fake_1layer's 50257-vocab
# W_E / W_U / b_U and unembed.hook_out gradients, ~2 MB); the manifest lists each one omitted.
MAX_NUMEL = 65536
ANSWER_SEED = 2016  # answer / wrong tokens of the logit-difference metric
PAD_CASES = {"tl_gelu_new_attn_result": 3, "hf_llama_gqa": 5}  # case -> left padding of row 1
SPLIT_CASES = ("tl_gelu_new_attn_result", "tl_gqa_rotary_rms")  # (f) use_split_qkv_input
# (g) processed as from_pretrained does (fold_ln, centring, value-bias folding): LN + GPT-2, SoLU,
# RMS + GQA + rotary, a parallel NeoX block, Gemma 2 (post-norms, soft-caps, no unembed centring)
PROCESSED_CASES = ("hf_random_untied", "tl_1l_solu_ln", "tl_gqa_rotary_rms", "hf_neox", "hf_gemma2")


def dtype_from(d: dict) -> dict:
    d = dict(d)
    d["dtype"] = torch.float32
    d["device"] = "cpu"
    d["seed"] = None
    return d


def build(name: str):
    """(model, case.json) of a case, unprocessed fp32, as its expected.safetensors was made."""
    d = os.path.join(CASES_DIR, name)
    cj = json.load(open(os.path.join(d, "case.json")))
    if cj["format"] == "tl":
        cfg = HookedTransformerConfig.from_dict(load_tl_config(d))
        model = HookedTransformer(cfg).eval()
        sd = {k: v.float() for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
        model.load_and_process_state_dict(sd, **G.NO_PROCESSING)
    elif "family" in cj:
        cfg = HookedTransformerConfig.from_dict(dtype_from(cj["tl_config"]))
        cfg.tokenizer_name = None
        model = HookedTransformer(cfg).eval()
        sd = {k: v.float() for k, v in load_file(os.path.join(d, "tl_state.safetensors")).items()}
        model.load_and_process_state_dict(sd, **G.NO_PROCESSING)
    elif name == "hf_tiny_noprefix":
        base = GPT2Model.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        lm = types.SimpleNamespace(transformer=base, lm_head=types.SimpleNamespace(weight=base.wte.weight))
        model = G.tl_from_hf(lm, base.config, "GPT2Model")
    else:
        lm = G.load_hf_lm(d)
        model = G.tl_from_hf(lm, lm.config, "GPT2LMHeadModel")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model, cj


def edit_layer_head(cfg) -> tuple:
    return cfg.n_layers - 1, (1 if cfg.n_heads > 1 else 0)


def run(model, tokens, metric: Callable, capture: List[str], fwd_hooks=(), bwd_edits=(),
        attention_mask=None, weights: bool = False):
    """One forward + backward: (metric value, {hook: gradient summed over its firings},
    {param: gradient} if weights)."""
    model.zero_grad(set_to_none=True)
    acc: Dict[str, torch.Tensor] = {}

    def grab(g, hook):
        acc[hook.name] = acc[hook.name] + g.detach() if hook.name in acc else g.detach().clone()
        return None

    # the capturing hooks go first: at a point that also has an editing backward hook they see the
    # gradient before the edit (TransformerLens's cache does the same)
    bwd = [(n, grab) for n in capture] + list(bwd_edits)
    with model.hooks(fwd_hooks=list(fwd_hooks), bwd_hooks=bwd):
        logits = model(tokens, attention_mask=attention_mask) if attention_mask is not None else model(tokens)
        value = metric(logits)
        value.backward()
    wg = {}
    if weights:
        for n, p in model.named_parameters():
            wg[n] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    return value.detach(), acc, wg


def mean_loss(tokens, mask=None):
    return lambda logits: lm_cross_entropy_loss(logits, tokens, mask)


def logit_diff(answer, wrong):
    b = torch.arange(answer.shape[0])
    return lambda logits: (logits[b, -1, answer] - logits[b, -1, wrong]).mean()


def resid_points(hooks: List[str]) -> List[str]:
    return [h for h in hooks if h == "hook_embed" or h.endswith((".hook_resid_pre", ".hook_resid_mid",
                                                                  ".hook_resid_post"))]


def per_firing(model, tokens, metric: Callable, names: List[str]):
    """(value, {hook: [gradient of each firing, in forward firing order]}): a forward hook at every
    point registers a tensor hook on what the point returns, so each firing's gradient is kept
    apart (ln1 under use_split_qkv_input fires for q, k and v inputs of different shapes)."""
    model.zero_grad(set_to_none=True)
    grads: Dict[str, list] = {n: [] for n in names}

    def fwd(act, hook):
        slot = grads[hook.name]
        slot.append(None)
        i = len(slot) - 1

        def keep(g, slot=slot, i=i):
            slot[i] = g.detach().clone()

        act.register_hook(keep)
        return act

    with model.hooks(fwd_hooks=[(n, fwd) for n in names]):
        value = metric(model(tokens))
        value.backward()
    return value.detach(), grads


def split_grads(model, tokens, hooks, out, omitted, info) -> None:
    """(f) use_split_qkv_input: the loss's gradient at every hook point. ln1's hooks fire once per
    input (q, k, v; with grouped-query attention k and v have n_key_value_heads heads) and each
    firing's gradient is its own: split:grad:<ln1 hook> is the query firing's (what TL's incl_bwd
    cache and libcircuits' cache keep), split:grad:<ln1 hook>#0/#1/#2 each firing's (q, k, v)."""
    # the tensor-hook capture, checked against the backward-hook capture of (a) first
    v, fg = per_firing(model, tokens, mean_loss(tokens), hooks)
    for h in hooks:
        total = sum(g for g in fg[h] if g is not None)
        assert torch.allclose(total, out[f"loss:grad:{h}"], atol=1e-7, rtol=1e-6) or f"loss:grad:{h}" in omitted, h
    model.set_use_split_qkv_input(True)
    try:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        names = list(cache.keys())
        v, fg = per_firing(model, tokens, mean_loss(tokens), names)
    finally:
        model.set_use_split_qkv_input(False)
    out["split:value"] = v.reshape(())
    multi = []
    for n in names:
        got = fg[n]
        assert got and all(g is not None for g in got), f"split: no gradient at {n}"
        put(out, omitted, f"split:grad:{n}", got[0])
        if len(got) > 1:
            assert len(got) == 3 and ".ln1." in n, (n, len(got))
            multi.append(n)
            for i, g in enumerate(got):
                put(out, omitted, f"split:grad:{n}#{i}", g)
    info["split"] = {"hooks": names, "per_firing": multi}


def processed_grads(name, tokens, exp, out, omitted, info) -> None:
    """(g) the model processed as libcircuits' default load and TransformerLens's from_pretrained
    process it (generate_circuits.py's load_processed, DEFAULT_FLAGS): the loss, its gradient at
    every hook point and every weight (the processed parameters: no ln weights after fold_ln)."""
    import generate_circuits as GC

    model, _, applied = GC.load_processed(GC.CaseModel(name), GC.DEFAULT_FLAGS)
    for p in model.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    names = list(cache.keys())
    v, gr, wg = run(model, tokens, mean_loss(tokens), names, weights=True)
    assert abs(v.item() - exp["loss"].item()) <= 1e-4
    out["processed:value"] = v.reshape(())
    for n in names:
        put(out, omitted, f"processed:grad:{n}", gr[n])
    ungrouped = model.cfg.n_key_value_heads in (None, model.cfg.n_heads)
    for n, t in wg.items():
        put(out, omitted, f"processed:wgrad:{weight_name(n, ungrouped)}", t)
    info["processed"] = {"hooks": names, "weights": [weight_name(n, ungrouped) for n in wg],
                         "applied": applied}


def weight_name(n: str, ungrouped: bool) -> str:
    """libcircuits's name of TL parameter n: TransformerLens builds GroupedQueryAttention (attn._W_K,
    _W_V, _b_K, _b_V) whenever n_key_value_heads is given; libcircuits says W_K ... unless heads are
    actually grouped (n_key_value_heads < n_heads). Same shape and values when they are not."""
    head, leaf = n.rsplit(".", 1)
    if ungrouped and leaf in ("_W_K", "_W_V", "_b_K", "_b_V"):
        return f"{head}.{leaf[1:]}"
    return n


def put(out: dict, omitted: list, key: str, t: torch.Tensor, nan_ok: bool = False) -> None:
    t = t.detach().float().contiguous()
    assert not torch.isinf(t).any() and (nan_ok or not torch.isnan(t).any()), f"{key}: not finite"
    if t.numel() > MAX_NUMEL:
        omitted.append(key)
        return
    out[key] = t.clone()


def case_grads(name: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    model, cj = build(name)
    cfg = model.cfg
    exp = load_file(os.path.join(CASES_DIR, name, "expected.safetensors"))
    tokens = exp["tokens"].long()
    with torch.no_grad():
        d_fwd = (model(tokens) - exp["logits"]).abs().max().item()
    assert d_fwd <= 1e-6, f"{name}: rebuilt model's logits differ from expected by {d_fwd}"
    hooks = cj["hook_names_in_order"]
    B, T = tokens.shape
    V = cfg.d_vocab_out
    g = G.gen(ANSWER_SEED)
    answer = torch.randint(0, V, (B,), generator=g)
    wrong = (answer + 1 + torch.randint(0, V - 1, (B,), generator=g)) % V
    out: Dict[str, torch.Tensor] = {"tokens": tokens.to(torch.int32), "answer": answer.to(torch.int32),
                                    "wrong": wrong.to(torch.int32)}
    omitted: List[str] = []
    info: dict = {"batch": B, "pos": T}

    # (a) the mean next-token loss: every hook point and every weight
    v, gr, wg = run(model, tokens, mean_loss(tokens), hooks, weights=True)
    assert abs(v.item() - exp["loss"].item()) <= 1e-5
    missing = [h for h in hooks if h not in gr]
    assert not missing, f"{name}: no gradient reached {missing}"
    out["loss:value"] = v.reshape(())
    for h in hooks:
        put(out, omitted, f"loss:grad:{h}", gr[h])
    ungrouped = cfg.n_key_value_heads in (None, cfg.n_heads)
    for n, t in wg.items():
        put(out, omitted, f"loss:wgrad:{weight_name(n, ungrouped)}", t)
    info["weights"] = [weight_name(n, ungrouped) for n in wg]

    # (b) the logit difference at the last position, mean over the batch
    v, gr, _ = run(model, tokens, logit_diff(answer, wrong), hooks)
    out["logit_diff:value"] = v.reshape(())
    missing = [h for h in hooks if h not in gr]
    assert not missing, f"{name}: no logit-difference gradient reached {missing}"
    for h in hooks:
        put(out, omitted, f"logit_diff:grad:{h}", gr[h])

    L, h = edit_layer_head(cfg)
    resid = resid_points(hooks)

    # (c) a head's output zeroed in place by a forward hook (no gradient upstream of the zeros)
    z = f"blocks.{L}.attn.hook_z"

    def zero_head(act, hook):
        act[:, :, h, :] = 0.0
        return act

    pre = ["hook_embed"] + [f"blocks.{l}.hook_resid_pre" for l in range(cfg.n_layers)]
    v, gr, _ = run(model, tokens, mean_loss(tokens), pre, fwd_hooks=[(z, zero_head)])
    out["zero_head:value"] = v.reshape(())
    for p in pre:
        put(out, omitted, f"zero_head:grad:{p}", gr[p])
    _, plain, _ = run(model, tokens, mean_loss(tokens), pre)
    assert not torch.allclose(plain["hook_embed"], gr["hook_embed"]), "zeroing the head changed no gradient"
    info["zero_head"] = {"hook": z, "head": h, "points": pre}

    # (d) a backward hook halving the gradient at resid_mid of the last layer (resid_pre when
    # the block has no resid_mid: attention-only and parallel blocks)
    at = f"blocks.{L}.hook_resid_mid"
    if at not in hooks:
        at = f"blocks.{L}.hook_resid_pre"
    # and at the hooked point itself: the gradient before the edit (what TL's incl_bwd cache keeps)
    earlier = resid[: resid.index(at) + 1]
    v, gr, _ = run(model, tokens, mean_loss(tokens), earlier,
                   bwd_edits=[(at, lambda grad, hook: grad * 0.5)])
    out["halve_grad:value"] = v.reshape(())
    for p in earlier:
        put(out, omitted, f"halve_grad:grad:{p}", gr[p])
    _, plain, _ = run(model, tokens, mean_loss(tokens), earlier)
    assert not torch.allclose(plain["hook_embed"], gr["hook_embed"]), "the backward hook had no effect"
    assert torch.equal(plain[at], gr[at]), "the gradient at the hooked point is not the one before the edit"
    if at.endswith("hook_resid_pre") and L > 0:  # resid_post of the layer before = the edited gradient
        prev = f"blocks.{L - 1}.hook_resid_post"
        assert torch.equal(gr[prev], 0.5 * plain[prev]), "backward hook edit did not flow"
    info["halve_grad"] = {"hook": at, "factor": 0.5, "points": earlier}

    # (e) left padding: the loss over the pairs the mask includes, every hook point
    if name in PAD_CASES:
        npad = PAD_CASES[name]
        mask = torch.ones(B, T, dtype=torch.int64)
        mask[1, :npad] = 0
        ptok = tokens.clone()
        ptok[1, :npad] = 0
        v, gr, _ = run(model, ptok, mean_loss(ptok, mask), hooks, attention_mask=mask)
        missing = [x for x in hooks if x not in gr]
        assert not missing, f"{name}: no padded gradient reached {missing}"
        out["pad:tokens"] = ptok.to(torch.int32)
        out["pad:mask"] = mask.to(torch.int32)
        out["pad:value"] = v.reshape(())
        nan = {}
        for x in hooks:
            put(out, omitted, f"pad:grad:{x}", gr[x], nan_ok=True)
            if torch.isnan(gr[x]).any():
                nan[x] = [list(i) for i in torch.isnan(gr[x]).nonzero().tolist()][:3] + [int(torch.isnan(gr[x]).sum())]
        print(name, "NaN in padded gradients:", nan)
        info["pad"] = {"left_padding_row1": npad, "nan": sorted(nan)}

    if name in SPLIT_CASES:
        split_grads(model, tokens, hooks, out, omitted, info)
    if name in PROCESSED_CASES:
        processed_grads(name, tokens, exp, out, omitted, info)
    info["fp32_vs_fp64"] = fp64_noise(name, out, hooks)
    info["omitted"] = omitted
    info["forward_logits_max_abs_vs_expected"] = d_fwd
    return out, info


FLOOR = 1e-3  # the gradient scale below which tests/test_grad_reference.c's tolerance stops shrinking


def fp64_noise(name: str, ref: dict, hooks: List[str]) -> dict:
    """How far these fp32 references are from the same computation in fp64 (metric (a)): the worst
    max-abs difference relative to max(max |fp64 gradient|, FLOOR) over the stored tensors, and the
    worst absolute difference among tensors whose scale is below FLOOR (gradients that are zero in
    exact arithmetic, such as b_K's: softmax ignores a per-row shift)."""
    model, _ = build(name)
    model = model.to(torch.float64)
    tokens = ref["tokens"].long()
    _, gr, wg = run(model, tokens, mean_loss(tokens), hooks, weights=True)
    ungrouped = model.cfg.n_key_value_heads in (None, model.cfg.n_heads)
    pairs = [(f"loss:grad:{h}", gr[h]) for h in hooks]
    pairs += [(f"loss:wgrad:{weight_name(n, ungrouped)}", t) for n, t in wg.items()]
    rel, small = 0.0, 0.0
    for key, t in pairs:
        if key not in ref:
            continue
        ok = torch.isfinite(t)
        d = (ref[key].double() - t)[ok].abs().max().item()
        s = t[ok].abs().max().item()
        rel = max(rel, d / max(s, FLOOR))
        if s < FLOOR:
            small = max(small, d)
    return {"max_rel": float(f"{rel:.3g}"), "max_abs_below_floor": float(f"{small:.3g}")}


KEYS = {
    "tokens": "I32 [B, T]: expected.safetensors' tokens",
    "answer, wrong": "I32 [B]: the logit-difference metric's tokens (seeded, answer != wrong)",
    "loss:value": "[]: mean next-token loss (TL return_type='loss')",
    "loss:grad:<hook>": "d loss / d activation at every hook point TL fires, summed over its firings (ln1 fires 3x)",
    "loss:wgrad:<param>": "d loss / d every TL parameter (named_parameters: GQA's _W_K/_W_V, unprocessed)",
    "logit_diff:value": "[]: mean_b logits[b, -1, answer[b]] - logits[b, -1, wrong[b]] (circuits_metric LOGIT_DIFF)",
    "logit_diff:grad:<hook>": "its gradient at every hook point, summed over firings",
    "zero_head:value, zero_head:grad:<point>": "loss and its gradient at hook_embed and every resid_pre with blocks.{L}.attn.hook_z[:, :, h] = 0 in place by a forward hook (L last layer; manifest)",
    "halve_grad:value, halve_grad:grad:<point>": "loss and its gradient at hook_embed and every resid point before the hooked one, with a TL backward hook (dir='bwd') returning grad * 0.5 at the manifest's point",
    "split:value, split:grad:<hook>, split:grad:<ln1 hook>#<i>": "use_split_qkv_input (manifest split.hooks): the loss and its gradient at every hook point; ln1's hooks fire per input (q, k, v), split:grad:<ln1 hook> is the query firing's, #0/#1/#2 each firing's",
    "processed:value, processed:grad:<hook>, processed:wgrad:<param>": "the model processed as from_pretrained does (generate_circuits.py's load_processed with its DEFAULT_FLAGS; manifest processed.applied): the loss, its gradient at every hook point and every (processed) weight",
    "pad:tokens, pad:mask, pad:value, pad:grad:<hook>": "left padding (row 1's first n positions masked, ids 0): loss over the pairs the mask includes (utils.lm_cross_entropy_loss) and its gradient at every hook point",
}


def main(argv: List[str]) -> None:
    names = sorted(os.listdir(CASES_DIR))
    todo = argv or names
    for n in todo:
        if n not in names:
            sys.exit(f"unknown case {n}")
    os.makedirs(OUT, exist_ok=True)
    mpath = os.path.join(OUT, "manifest.json")
    manifest = json.load(open(mpath)) if os.path.exists(mpath) else {}
    manifest["versions"] = {k: G.VERSIONS[k] for k in ("python", "torch", "transformer_lens", "safetensors")}
    manifest["keys"] = KEYS
    manifest["max_numel_stored"] = MAX_NUMEL
    cases = manifest.setdefault("cases", {})
    for n in todo:
        out, info = case_grads(n)
        path = os.path.join(OUT, f"{n}.safetensors")
        # one metadata key: safetensors writes the map in hash order (README)
        meta = {"meta": json.dumps({"case": n, "torch": G.VERSIONS["torch"],
                                    "transformer_lens": G.VERSIONS["transformer_lens"], "keys": KEYS,
                                    **{k: info[k] for k in ("zero_head", "halve_grad", "omitted")}},
                                   sort_keys=True)}
        save_file(out, path, metadata=meta)
        info["bytes"] = os.path.getsize(path)
        cases[n] = info
        print(f"{n:28s} {len(out):4d} tensors {info['bytes']:9d} bytes  omitted {len(info['omitted'])}  "
              f"fp32 vs fp64: rel {info['fp32_vs_fp64']['max_rel']:.2e}, "
              f"below floor {info['fp32_vs_fp64']['max_abs_below_floor']:.2e}", flush=True)
    manifest["cases"] = dict(sorted(cases.items()))
    with open(mpath, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print("total", sum(c["bytes"] for c in manifest["cases"].values()), "bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
