#!/usr/bin/env python3
"""Path patching (Wang et al. 2022, the IOI paper) computed with plain TransformerLens hooks,
following the ARENA reference implementation (Callum McDougall, chapter 1.4 "Indirect Object
Identification": get_path_patch_head_to_final_resid_post and get_path_patch_head_to_heads).

Run with the reference venv (transformer_lens 3.x) from any directory:

    /opt/refenv/bin/python tests/reference/generate_path_patching.py

It writes ``toolkit/path_patching/<case>.safetensors`` and ``toolkit/path_patching/case.json``
for two existing cases of ``cases/`` (loaded unprocessed, as the C tests load them):
``hf_random_sharded`` (GPT-2, 3 layers, 2 heads) and ``tl_gqa_rotary_rms`` (2 layers, 4 query
heads sharing 2 K/V heads, rotary, RMSNorm).

The algorithm (ARENA's, written out with hooks; "clean" = ARENA's orig, "corrupted" = new):
  step 1: cache hook_z of every layer on the clean and the corrupted tokens (and hook_mlp_out of
          the clean run, for the frozen-MLP variant);
  step 2: run the clean tokens with every head's hook_z frozen at its clean value except the
          sender heads', which take their corrupted value (MLPs recomputed, or with
          freeze_mlps their hook_mlp_out frozen at the clean value too);
            - receiver = the logits: the metric of this run's logits is the result;
            - receivers = heads: cache the receivers' input hooks (hook_q / hook_k / hook_v);
  step 3: (receivers = heads) run the clean tokens with only the receivers' q / k / v heads
          replaced by their step-2 values, everything else recomputed; the metric of its logits
          is the result.

The metric: the mean over the batch of logits[b, -1, answer[b]] - logits[b, -1, wrong[b]].

Keys of ``<case>.safetensors`` (float32 unless noted):
  clean_tokens, corrupted_tokens [B, T] int32; answer, wrong [B] int32
  clean_logits, corrupted_logits [B, T, V]; clean_metric, corrupted_metric []
  sweep:logits, sweep:logits:freeze_mlps     [L, H] per-sender grid, receiver the logits
  sweep:heads:<q|k|v>                        [L, H] per-sender grid, receivers RECEIVERS[<q|k|v>]
                                              (every sender layer; layers >= the receivers' give
                                              the clean metric)
  single:<name>:logits [B, T, V], single:<name>:metric []  the explicit cases of SINGLES
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as G  # noqa: E402  (deterministic torch settings, offline)
import generate_circuits as GC  # noqa: E402  (CaseModel, load_unprocessed)

import json  # noqa: E402
import logging  # noqa: E402
from functools import partial  # noqa: E402
from typing import Dict, List, Optional, Sequence, Tuple  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from transformer_lens import HookedTransformer  # noqa: E402
from transformer_lens.utilities import get_act_name  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)

OUT = os.path.join(HERE, "toolkit", "path_patching")
B, T = 3, 6
CASES = ("hf_random_sharded", "tl_gqa_rotary_rms")


# ---------------------------------------------------------------------------- the metric


def logit_diff(logits: torch.Tensor, answer: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    last = logits[:, -1, :]
    idx = torch.arange(logits.shape[0])
    return (last[idx, answer] - last[idx, wrong]).mean()


# ---------------------------------------------------------------------------- ARENA's hooks


def patch_or_freeze_head_vectors(z, hook, new_cache, orig_cache, heads_to_patch):
    """ARENA's patch_or_freeze_head_vectors, for a list of sender heads."""
    z[...] = orig_cache[hook.name][...]
    for layer, head in heads_to_patch:
        if layer == hook.layer():
            z[:, :, head] = new_cache[hook.name][:, :, head]
    return z


def freeze(act, hook, orig_cache):
    act[...] = orig_cache[hook.name][...]
    return act


def patch_head_input(act, hook, patched_cache, head_list):
    """ARENA's patch_head_input; head_list of (layer, head, input) for this hook's input."""
    heads = [h for layer, h, inp in head_list if layer == hook.layer() and hook.name.endswith("hook_" + inp)]
    act[:, :, heads] = patched_cache[hook.name][:, :, heads]
    return act


def path_patch(
    model: HookedTransformer,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    senders: Sequence[Tuple[int, int]],
    receivers: Optional[Sequence[Tuple[int, int, str]]],
    freeze_mlps: bool,
    new_cache,
    orig_cache,
) -> torch.Tensor:
    """The logits of the path-patched run (receivers None: the logits are the receiver)."""
    model.reset_hooks()
    z_filter = lambda name: name.endswith("hook_z")  # noqa: E731
    step2 = [(z_filter, partial(patch_or_freeze_head_vectors, new_cache=new_cache, orig_cache=orig_cache,
                                heads_to_patch=list(senders)))]
    if freeze_mlps:
        step2.append((lambda name: name.endswith("hook_mlp_out"), partial(freeze, orig_cache=orig_cache)))
    if receivers is None:
        return model.run_with_hooks(clean, fwd_hooks=step2)
    names = sorted({get_act_name(inp, layer) for layer, _, inp in receivers})
    recv_filter = lambda name: name in names  # noqa: E731
    for f, fn in step2:
        model.add_hook(f, fn)
    _, patched_cache = model.run_with_cache(clean, names_filter=recv_filter, return_type=None)
    model.reset_hooks()
    assert set(patched_cache.keys()) == set(names)
    hook = partial(patch_head_input, patched_cache=patched_cache, head_list=list(receivers))
    return model.run_with_hooks(clean, fwd_hooks=[(recv_filter, hook)])


# ---------------------------------------------------------------------------- per case


def receivers_of(cfg) -> Dict[str, List[Tuple[int, int, str]]]:
    """Every head of the last layer as a receiver (k / v: every K/V head)."""
    L = cfg.n_layers - 1
    kv = cfg.n_key_value_heads or cfg.n_heads
    return {
        "q": [(L, h, "q") for h in range(cfg.n_heads)],
        "k": [(L, h, "k") for h in range(kv)],
        "v": [(L, h, "v") for h in range(kv)],
    }


def singles_of(cfg) -> Dict[str, dict]:
    L = cfg.n_layers - 1
    kv = cfg.n_key_value_heads or cfg.n_heads
    return {
        "two_senders_logits": dict(senders=[(0, 0), (L - 1, 1)], receivers=None, freeze_mlps=False),
        "two_senders_logits_frozen": dict(senders=[(0, 1), (L - 1, 0)], receivers=None, freeze_mlps=True),
        # receivers of every input, in two layers when there are three
        "mixed_receivers": dict(
            senders=[(0, 1)],
            receivers=[(L, 0, "q"), (L, kv - 1, "v"), (L, 1, "k")] + ([(1, 0, "q")] if L >= 2 else []),
            freeze_mlps=False,
        ),
        "mixed_receivers_frozen": dict(
            senders=[(0, 0), (0, 1)], receivers=[(L, 1, "q"), (L, 0, "k")], freeze_mlps=True
        ),
        "no_senders": dict(senders=[], receivers=None, freeze_mlps=False),
    }


def run_case(name: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    cm = GC.CaseModel(name)
    model = GC.load_unprocessed(cm)
    cfg = model.cfg
    V = cfg.d_vocab
    g = torch.Generator().manual_seed(4242)
    clean = torch.randint(0, V, (B, T), generator=g)
    # IOI-like: the corrupted prompt differs from the clean one at two positions
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(0, V, (B,), generator=g)
    corrupted[:, T - 2] = torch.randint(0, V, (B,), generator=g)
    answer = torch.randint(0, cfg.d_vocab_out, (B,), generator=g)
    wrong = torch.randint(0, cfg.d_vocab_out, (B,), generator=g)
    metric = partial(logit_diff, answer=answer, wrong=wrong)

    model.reset_hooks()
    keep = lambda n: n.endswith("hook_z") or n.endswith("hook_mlp_out")  # noqa: E731
    clean_logits, orig_cache = model.run_with_cache(clean, names_filter=keep)
    corrupted_logits, new_cache = model.run_with_cache(corrupted, names_filter=keep)
    out: Dict[str, torch.Tensor] = {
        "clean_tokens": clean.to(torch.int32),
        "corrupted_tokens": corrupted.to(torch.int32),
        "answer": answer.to(torch.int32),
        "wrong": wrong.to(torch.int32),
        "clean_logits": clean_logits.float(),
        "corrupted_logits": corrupted_logits.float(),
        "clean_metric": metric(clean_logits).reshape(()),
        "corrupted_metric": metric(corrupted_logits).reshape(()),
    }
    pp = partial(path_patch, model, clean, corrupted, new_cache=new_cache, orig_cache=orig_cache)
    L, H = cfg.n_layers, cfg.n_heads

    def sweep(receivers, freeze_mlps):
        grid = torch.zeros(L, H)
        for layer in range(L):
            for head in range(H):
                grid[layer, head] = metric(pp([(layer, head)], receivers, freeze_mlps))
        return grid

    out["sweep:logits"] = sweep(None, False)
    out["sweep:logits:freeze_mlps"] = sweep(None, True)
    recv = receivers_of(cfg)
    for inp, r in recv.items():
        grid = sweep(r, False)
        # no sender at or after the receivers' layer has a path to them: the clean metric
        assert torch.allclose(grid[r[0][0]:], out["clean_metric"].expand(L - r[0][0], H), atol=1e-6)
        out[f"sweep:heads:{inp}"] = grid
    singles = singles_of(cfg)
    for sname, s in singles.items():
        logits = pp(s["senders"], s["receivers"], s["freeze_mlps"]).float()
        out[f"single:{sname}:logits"] = logits
        out[f"single:{sname}:metric"] = metric(logits).reshape(())
    # the edits must do something, or the comparison proves nothing
    assert not torch.allclose(out["sweep:logits"], out["clean_metric"].expand(L, H), atol=1e-3)
    for inp in recv:
        assert not torch.allclose(out[f"sweep:heads:{inp}"][:-1], out["clean_metric"].expand(L - 1, H), atol=1e-3)
    assert torch.equal(out["single:no_senders:logits"], clean_logits)
    meta = {
        "B": B, "T": T, "n_layers": L, "n_heads": H,
        "receivers": {k: [list(x) for x in v] for k, v in recv.items()},
        "singles": {k: {"senders": [list(x) for x in v["senders"]],
                        "receivers": None if v["receivers"] is None else [list(x) for x in v["receivers"]],
                        "freeze_mlps": v["freeze_mlps"]} for k, v in singles.items()},
    }
    return {k: v.detach().contiguous() for k, v in out.items()}, meta


def main(argv: List[str]) -> None:
    os.makedirs(OUT, exist_ok=True)
    meta = {"versions": G.VERSIONS, "metric": "mean_b(logits[b,-1,answer[b]] - logits[b,-1,wrong[b]])",
            "cases": {}}
    for name in CASES:
        tensors, m = run_case(name)
        save_file(tensors, os.path.join(OUT, f"{name}.safetensors"))
        meta["cases"][name] = m
        print(f"{name}: clean {tensors['clean_metric'].item():.4f} corrupted {tensors['corrupted_metric'].item():.4f}")
        print("  sweep:logits\n", tensors["sweep:logits"])
        print("  sweep:heads:q\n", tensors["sweep:heads:q"])
    with open(os.path.join(OUT, "case.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
