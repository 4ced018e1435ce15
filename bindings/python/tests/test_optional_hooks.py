"""The optional hook points (set_use_split_qkv_input, set_use_attn_in, set_use_hook_mlp_in,
set_use_hook_tokens) against TransformerLens (tests/reference/toolkit/optional_hooks/, written by
tests/reference/generate_optional_hooks.py): hook values, logits, loss, and an edit at each
new point flowing downstream as in TL."""

from __future__ import annotations

import numpy as np
import pytest

import safetensors_np
from conftest import CASES_DIR, REPO, TOL_HOOK, TOL_LOSS, max_diff

TOOLKIT = REPO / "tests" / "reference" / "toolkit" / "optional_hooks"
CASES = ("tl_gelu_new_attn_result", "tl_gqa_rotary_rms", "tl_shortformer_relu", "tl_parallel_ln")


def edit_q_input(x, hook):
    x[:, :, 1, ::2] = 0.0


def edit_k_input(x, hook):
    d = x.shape[-1] // 2
    x[:, 2:, 0, :d] = -x[:, 2:, 0, :d]


def edit_v_input(x, hook):
    x[:, :, 1] = -x[:, :, 1]


def edit_mlp_in(x, hook):
    x[:, 3, ::3] = 0.0


def edit_tokens(x, hook):  # returns a new integer array, as a TL hook returns a tensor
    y = x.astype(np.int64)
    y[:, 2] = 5
    return y


def edit_attn_in(x, hook):
    x[:, :, -1] = -x[:, :, -1]


EDITS = {
    "q_input": ("blocks.1.hook_q_input", edit_q_input),
    "k_input": ("blocks.0.hook_k_input", edit_k_input),
    "v_input": ("blocks.1.hook_v_input", edit_v_input),
    "mlp_in": ("blocks.0.hook_mlp_in", edit_mlp_in),
    "tokens": ("hook_tokens", edit_tokens),
}


@pytest.mark.parametrize("name", CASES)
def test_against_transformerlens(circuits_mod, name):
    ref = safetensors_np.load(str(TOOLKIT / f"{name}.safetensors"))
    tokens = safetensors_np.load(str(CASES_DIR / name / "expected.safetensors"))["tokens"]
    with circuits_mod.Model.from_pretrained_no_processing(CASES_DIR / name) as m:
        m.set_use_split_qkv_input(True)
        m.set_use_hook_mlp_in(True)
        m.set_use_hook_tokens(True)
        assert m.cfg.use_split_qkv_input and m.cfg.use_hook_mlp_in and m.cfg.use_hook_tokens
        (logits, loss), cache = m.run_with_cache(tokens, return_type="both")
        compared = 0
        for key, want in ref.items():
            if key.startswith("split:hook:"):
                got = cache[key[len("split:hook:"):]]
                if key.endswith("hook_tokens"):
                    assert got.dtype == np.int32 and np.array_equal(got, want)
                else:
                    assert max_diff(got, want) <= TOL_HOOK, key
                compared += 1
        assert compared >= 15
        assert max_diff(logits, ref["split:logits"]) <= TOL_HOOK
        assert abs(float(loss) - float(ref["split:loss"])) <= TOL_LOSS
        for what, (hook, fn) in EDITS.items():
            lg, ls = m.run_with_hooks(tokens, fwd_hooks=[(hook, fn)], return_type="both")
            assert max_diff(lg, ref["split:edit:" + what]) <= TOL_HOOK, what
            if what == "tokens":  # TL's loss reads the edited ids
                assert abs(float(ls) - float(ref["split:edit:tokens:loss"])) <= TOL_LOSS
        m.set_use_split_qkv_input(False)
        m.set_use_hook_mlp_in(False)
        if m.cfg.n_key_value_heads is not None:
            with pytest.raises(circuits_mod.UnsupportedError, match="grouped-query"):
                m.set_use_attn_in(True)
            assert not m.cfg.use_attn_in and "blocks.0.hook_attn_in" not in m.hook_dict
            return
        m.set_use_attn_in(True)
        logits, cache = m.run_with_cache(tokens)
        for key, want in ref.items():
            if key.startswith("attn_in:hook:"):
                assert max_diff(cache[key[len("attn_in:hook:"):]], want) <= TOL_HOOK, key
        assert max_diff(logits, ref["attn_in:logits"]) <= TOL_HOOK
        lg = m.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_attn_in", edit_attn_in)])
        assert max_diff(lg, ref["attn_in:edit:attn_in"]) <= TOL_HOOK


def test_hook_points_follow_the_options(circuits_mod, small):
    names = set(small.hook_names())
    assert "blocks.0.hook_q_input" not in names and "hook_tokens" not in names
    kept = []
    small.add_hook("blocks.0.hook_resid_pre", lambda x, h: kept.append(h.name))
    small.set_use_split_qkv_input(True)
    small.set_use_hook_tokens(True)
    names = small.hook_names()
    assert names[0] == "hook_tokens"
    i = names.index("blocks.0.hook_resid_pre")
    assert names[i + 1: i + 4] == ["blocks.0.hook_q_input", "blocks.0.hook_k_input", "blocks.0.hook_v_input"]
    assert small.hook_dict["blocks.0.hook_q_input"].head_axis == 2
    small(np.array([[1, 2, 3]]))
    assert kept == ["blocks.0.hook_resid_pre"]  # registered hooks carried over to the new context
    # a bad token id written by a hook is refused before the embedding reads it
    with pytest.raises(circuits_mod.RangeError, match="hook_tokens"):
        small.run_with_hooks(np.array([[1, 2, 3]]), fwd_hooks=[("hook_tokens", lambda x, h: x + 10**6)])
    with pytest.raises(circuits_mod.HookReturnError, match="int32"):
        small.run_with_hooks(np.array([[1, 2, 3]]), fwd_hooks=[("hook_tokens", lambda x, h: x.astype(np.int64) - 2**40)])
    # a hook on a point that goes away: the option change is refused, the model unchanged
    small.add_hook("blocks.1.hook_k_input", lambda x, h: None)
    with pytest.raises(circuits_mod.NotFoundError):
        small.set_use_split_qkv_input(False)
    assert small.cfg.use_split_qkv_input and "blocks.1.hook_k_input" in small.hook_dict
    small.reset_hooks()
    small.set_use_split_qkv_input(False)
    assert "blocks.1.hook_k_input" not in small.hook_names()


def test_hook_mlp_in_refused_attn_only(circuits_mod):
    with circuits_mod.Model.from_pretrained(CASES_DIR / "tl_attn_only_2l_none") as m:
        with pytest.raises(circuits_mod.UnsupportedError, match="attention-only"):
            m.set_use_hook_mlp_in(True)
        assert not m.cfg.use_hook_mlp_in


def test_with_padding(circuits_mod):
    """The per-head path under an attention mask: a left-padded batch gives the logits of the
    plain path, and each row those of the row alone."""
    from conftest import TINY_GPT2

    texts = ["Hello world, this is", "Hi"]
    with circuits_mod.Model.from_pretrained_no_processing(TINY_GPT2) as m:
        plain = m(texts, padding_side="left")
        m.set_use_split_qkv_input(True)
        m.set_use_hook_mlp_in(True)
        m.set_use_hook_tokens(True)
        split = m(texts, padding_side="left")
        alone = m("Hi")
        assert max_diff(split, plain) <= 1e-5
        assert max_diff(split[1, -alone.shape[1]:], alone[0]) <= 1e-5
