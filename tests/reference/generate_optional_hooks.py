#!/usr/bin/env python3
"""TransformerLens's optional hook points on two committed reference cases.

Run with the reference venv (transformer_lens 3.x) from any directory:

    /opt/refenv/bin/python tests/reference/generate_optional_hooks.py

For each case (tl_gelu_new_attn_result: GPT-2-like, LayerNorm, 4 heads; tl_gqa_rotary_rms:
grouped-query attention, 4 query / 2 K/V heads, rotary, RMSNorm; tl_shortformer_relu: W_pos
added to the per-head query and key inputs after ln1; tl_parallel_ln: hook_mlp_in on resid_pre
in a parallel block) it loads the case's
``model.safetensors`` UNPROCESSED (so that ln1 has its weights, which per-head inputs go through)
and writes ``toolkit/optional_hooks/<case>.safetensors`` with, for the case's ``tokens``:

  split:hook:<name>   use_split_qkv_input + use_hook_mlp_in + use_hook_tokens: hook_tokens
                      (int32), hook_q/k/v_input, ln1.hook_scale / hook_normalized (the last of
                      their three firings per layer, the value input's, as TL's cache keeps),
                      hook_mlp_in, hook_q / hook_k (downstream)
  split:logits, split:loss
  split:edit:<what>   logits with one edit at an optional hook point (see EDITS)
  split:edit:tokens:loss  the loss with hook_tokens edited (TL computes it from the edited ids)
  attn_in:hook:<name>, attn_in:logits, attn_in:edit:attn_in   use_attn_in alone (not under
                      grouped-query attention: TL refuses set_use_attn_in there)
  generate:greedy, generate:greedy_hooked   HookedTransformer.generate of the tokens, greedy
                      (do_sample=False), 6 new tokens, no EOS stop (int32 [batch, pos + 6]);
                      _hooked with head 1's hook_z zeroed in block 0 at every step (the Python
                      binding's generate test, which runs with and without the KV cache).
                      use_past_kv_cache=False: TL 3.9's KV-cache generation gives other tokens
                      than its own full re-runs (and than a greedy loop over model(tokens)) on
                      models with absolute position embeddings, from the second new token on,
                      because it adds the position embedding of the wrong position to the new
                      token (get_residual(all embeds, pos_offset=cached length), then the last
                      row; on shortformer models it fails with a shape error). This script
                      checks that the greedy loop agrees with the no-cache generation, and
                      prints whether the KV-cache one does.
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as G  # noqa: E402,F401  (offline, 1 thread, deterministic, no grad)

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402

from tl_export import load_tl_config  # noqa: E402

CASES = ("tl_gelu_new_attn_result", "tl_gqa_rotary_rms", "tl_shortformer_relu", "tl_parallel_ln")
OUT = os.path.join(HERE, "toolkit", "optional_hooks")


# The edits change the direction of the input, not only its scale: ln1 / ln2 normalise the
# scale (and LayerNorm the mean) away.
def edit_q_input(x, hook):  # blocks.1.hook_q_input: head 1's query input, even dims zeroed
    x[:, :, 1, ::2] = 0.0
    return x


def edit_k_input(x, hook):  # blocks.0.hook_k_input: K/V head 0's key input from pos 2, first half negated
    d = x.shape[-1] // 2
    x[:, 2:, 0, :d] = -x[:, 2:, 0, :d]
    return x


def edit_v_input(x, hook):  # blocks.1.hook_v_input: K/V head 1's value input negated
    x[:, :, 1] = -x[:, :, 1]
    return x


def edit_mlp_in(x, hook):  # blocks.0.hook_mlp_in: the MLP's input at position 3, every third dim zeroed
    x[:, 3, ::3] = 0.0
    return x


def edit_tokens(x, hook):  # hook_tokens: position 2 of every row becomes token 5
    x = x.clone()
    x[:, 2] = 5
    return x


def edit_attn_in(x, hook):  # blocks.1.hook_attn_in: the last head's input negated
    x[:, :, -1] = -x[:, :, -1]
    return x


def zero_head_1(x, hook):  # blocks.0.attn.hook_z during generation
    x[:, :, 1] = 0.0
    return x


EDITS = {
    "q_input": ("blocks.1.hook_q_input", edit_q_input),
    "k_input": ("blocks.0.hook_k_input", edit_k_input),
    "v_input": ("blocks.1.hook_v_input", edit_v_input),
    "mlp_in": ("blocks.0.hook_mlp_in", edit_mlp_in),
    "tokens": ("hook_tokens", edit_tokens),
}


def build(case: str, **flags) -> HookedTransformer:
    d = os.path.join(HERE, "cases", case)
    kw = load_tl_config(d)
    kw["use_hook_tokens"] = flags.pop("use_hook_tokens", False)
    model = HookedTransformer(HookedTransformerConfig.from_dict(kw)).eval()
    sd = load_file(os.path.join(d, "model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith(("IGNORE", "mask", "rotary_sin", "rotary_cos")) for k in missing), missing
    for k, v in flags.items():
        getattr(model, "set_" + k)(v)
    return model


def wanted(name: str) -> bool:
    return name == "hook_tokens" or name.endswith(
        ("hook_q_input", "hook_k_input", "hook_v_input", "hook_attn_in", "hook_mlp_in", "ln1.hook_scale",
         "ln1.hook_normalized", "attn.hook_q", "attn.hook_k"))


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for case in CASES:
        tokens = load_file(os.path.join(HERE, "cases", case, "expected.safetensors"))["tokens"].long()
        out = {}
        m = build(case, use_split_qkv_input=True, use_hook_mlp_in=True, use_hook_tokens=True)
        (logits, loss), cache = m.run_with_cache(tokens, return_type="both", names_filter=wanted)
        for k, v in cache.items():
            out["split:hook:" + k] = v.to(torch.int32) if k == "hook_tokens" else v
        out["split:logits"], out["split:loss"] = logits, loss
        for what, (name, fn) in EDITS.items():
            lg, ls = m.run_with_hooks(tokens, return_type="both", fwd_hooks=[(name, fn)])
            assert (lg - logits).abs().max() > 1e-2, f"{case}: the edit at {name} changes nothing"
            out["split:edit:" + what] = lg
            if what == "tokens":
                out["split:edit:tokens:loss"] = ls
        if m.cfg.n_key_value_heads is None:
            m = build(case, use_attn_in=True)
            logits, cache = m.run_with_cache(tokens, names_filter=wanted)
            for k, v in cache.items():
                out["attn_in:hook:" + k] = v
            out["attn_in:logits"] = logits
            out["attn_in:edit:attn_in"] = m.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_attn_in", edit_attn_in)])
            assert (out["attn_in:edit:attn_in"] - logits).abs().max() > 1e-2
        m = build(case)
        kw = dict(max_new_tokens=6, do_sample=False, stop_at_eos=False, use_past_kv_cache=False, verbose=False)
        out["generate:greedy"] = m.generate(tokens, **kw).to(torch.int32)
        loop = tokens
        for _ in range(6):
            loop = torch.cat([loop, m(loop)[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(loop.to(torch.int32), out["generate:greedy"])
        try:  # (shortformer: TL 3.9's KV-cache generation fails outright, a shape error in attention)
            cached = m.generate(tokens, **{**kw, "use_past_kv_cache": True}).to(torch.int32)
            print(case, "TL KV-cache generation equals its no-cache one:", torch.equal(cached, out["generate:greedy"]))
        except RuntimeError as e:
            print(case, "TL KV-cache generation fails:", str(e).splitlines()[0])
        with m.hooks(fwd_hooks=[("blocks.0.attn.hook_z", zero_head_1)]):
            out["generate:greedy_hooked"] = m.generate(tokens, **kw).to(torch.int32)
        assert not torch.equal(out["generate:greedy"], out["generate:greedy_hooked"])
        out = {k: v.detach().contiguous().clone() for k, v in out.items()}
        save_file(out, os.path.join(OUT, case + ".safetensors"), metadata={"case": case, **G.versions()})
        print(case, len(out), "tensors")


if __name__ == "__main__":
    main()
