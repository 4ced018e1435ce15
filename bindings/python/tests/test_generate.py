"""Model.generate (circuits_context_generate) against TransformerLens's generate: greedy tokens
with and without a hook at every step (tests/reference/toolkit/optional_hooks/, written by
tests/reference/generate_optional_hooks.py), hooks at every step, EOS, return types."""

from __future__ import annotations

import numpy as np
import pytest

import safetensors_np
from conftest import CASES_DIR, REPO, TINY_GPT2

TOOLKIT = REPO / "tests" / "reference" / "toolkit" / "optional_hooks"
GREEDY = dict(max_new_tokens=6, do_sample=False, stop_at_eos=False)


def zero_head_1(x, hook):
    x[:, :, 1] = 0.0


@pytest.mark.parametrize("name", ("tl_gelu_new_attn_result", "tl_gqa_rotary_rms", "tl_shortformer_relu", "tl_parallel_ln"))
@pytest.mark.parametrize("kv", (True, False))
def test_greedy_against_transformerlens(circuits_mod, name, kv):
    ref = safetensors_np.load(str(TOOLKIT / f"{name}.safetensors"))
    tokens = safetensors_np.load(str(CASES_DIR / name / "expected.safetensors"))["tokens"]
    with circuits_mod.Model.from_pretrained_no_processing(CASES_DIR / name) as m:
        out = m.generate(tokens, use_past_kv_cache=kv, **GREEDY)
        assert out.dtype == np.int64 and np.array_equal(out, ref["generate:greedy"])
        with m.hooks(fwd_hooks=[("blocks.0.attn.hook_z", zero_head_1)]):
            out = m.generate(tokens, use_past_kv_cache=kv, **GREEDY)
        assert np.array_equal(out, ref["generate:greedy_hooked"])


def test_hooks_fire_at_every_step(circuits_mod, small):
    tok = np.array([[1, 2, 3, 4]])
    for kv, want in ((True, [4, 1, 1, 1]), (False, [4, 5, 6, 7])):
        seen = []
        small.add_hook("blocks.1.hook_resid_post", lambda x, h: seen.append(x.shape[1]))
        out = small.generate(tok, max_new_tokens=4, do_sample=False, stop_at_eos=False, use_past_kv_cache=kv)
        small.reset_hooks()
        assert out.shape == (1, 8) and seen == want, (kv, seen)
    # sampling: seeded, reproducible; different seeds may differ
    a = small.generate(tok, max_new_tokens=5, stop_at_eos=False, seed=7, top_k=5, temperature=0.8)
    b = small.generate(tok, max_new_tokens=5, stop_at_eos=False, seed=7, top_k=5, temperature=0.8)
    assert np.array_equal(a, b) and np.array_equal(a[:, :4], tok)


def test_stop_at_eos_and_text(circuits_mod, tiny):
    prompt = "Hello world"
    greedy = tiny.generate(prompt, max_new_tokens=6, do_sample=False, stop_at_eos=False, return_type="tokens")
    T = len(tiny.to_tokens(prompt)[0])
    assert greedy.shape == (1, T + 6) and greedy[0, 0] == tiny.tokenizer.bos_token_id
    eos = int(greedy[0, T + 1])  # the second new token as the stop token
    stopped = tiny.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=eos, return_type="tokens")
    first = T + int(np.argmax(greedy[0, T:] == eos))
    assert np.array_equal(stopped[0], greedy[0, : first + 1])  # ends at the first EOS (every row finished)
    text = tiny.generate(prompt, max_new_tokens=6, do_sample=False, stop_at_eos=False)
    assert isinstance(text, str) and text == tiny.tokenizer.decode(greedy[0, 1:])  # BOS left out, as TL
    assert tiny.generate(greedy, max_new_tokens=0, return_type="str") == text
    two = tiny.generate([prompt, prompt], max_new_tokens=3, do_sample=False, stop_at_eos=False)
    assert isinstance(two, list) and two[0] == two[1] == tiny.generate(prompt, max_new_tokens=3, do_sample=False,
                                                                       stop_at_eos=False)
    with pytest.raises(ValueError, match="return_type"):
        tiny.generate(prompt, return_type="embeds")
    assert tiny.generate(prompt, max_new_tokens=2, do_sample=False, eos_token_id=[eos], return_type="tokens").shape[1] \
        <= T + 2


@pytest.mark.parametrize("kv", (True, False))
def test_list_of_texts_left_padded_as_transformer_lens(circuits_mod, kv):
    """A list of texts of different lengths: left-padded with its mask, as TL's generate
    (tests/reference/toolkit/padding/, written by generate_padding.py)."""
    import json

    path = REPO / "tests" / "reference" / "toolkit" / "padding" / "text_tiny_random_gpt2.safetensors"
    want = safetensors_np.load(str(path))["generate:tokens"]
    texts = json.loads(safetensors_np.metadata(str(path))["texts"])
    with circuits_mod.Model.from_pretrained_no_processing(TINY_GPT2) as m:
        P = m.to_tokens(texts, padding_side="left").shape[1]
        kw = dict(max_new_tokens=want.shape[1] - P, do_sample=False, stop_at_eos=False, use_past_kv_cache=kv)
        got = m.generate(texts, return_type="tokens", padding_side="right", **kw)  # left whatever is asked, as TL
        assert np.array_equal(got, want)
        text = m.generate(texts, **kw)  # return_type "input": a list of str, special tokens skipped
        assert text == [m.tokenizer.decode(row, skip_special_tokens=True) for row in want]
