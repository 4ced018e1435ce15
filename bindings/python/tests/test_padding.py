"""Padding and attention masks from Python (issue 14): TransformerLens's own outputs on padded
batches (tests/reference/generate_padding.py, committed in tests/reference/toolkit/padding/),
batch invariance, and TransformerLens's keywords on the run calls."""

from __future__ import annotations

import json

import numpy as np
import pytest

import circuits
import circuits.padding
import safetensors_np
from conftest import CASES_DIR, REPO, TINY_GPT2

PADDING = REPO / "tests" / "reference" / "toolkit" / "padding"
CASES = ["tl_gelu_new_attn_result", "tl_rotary_neox_quarter", "tl_gqa_rotary_rms"]
TOL = 1e-4  # TransformerLens's hook tolerance (test_reference.py)


def _close(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    fin = np.isfinite(want)
    assert np.array_equal(fin, np.isfinite(got)), what  # -inf at masked scores on both sides
    assert np.array_equal(got[~fin], want[~fin]), what
    d = np.max(np.abs(got[fin] - want[fin]), initial=0.0)
    assert d <= TOL, f"{what}: max |circuits - TransformerLens| = {d}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_equals_transformer_lens_on_padded_batches(case, side):
    ref = safetensors_np.load(str(PADDING / f"{case}.safetensors"))
    m = circuits.Model.from_pretrained_no_processing(CASES_DIR / case)
    tokens, mask = ref[f"{side}:tokens"], ref[f"{side}:mask"]
    names = [k.split(":hook:")[1] for k in ref if k.startswith(f"{side}:hook:")]
    logits, cache = m.run_with_cache(tokens, attention_mask=mask, names_filter=names)
    _close(logits, ref[f"{side}:logits"], "logits")
    for n in names:
        _close(cache[n], ref[f"{side}:hook:{n}"], n)
    _close(m(tokens, return_type="loss", attention_mask=mask), ref[f"{side}:loss"][0], "loss")
    _close(m(tokens, return_type="loss", loss_per_token=True, attention_mask=mask), ref[f"{side}:per_token_loss"],
           "per_token_loss")


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("bos", [True, False])
def test_text_batches_as_transformer_lens(side, bos):
    """A list of strings: TransformerLens's to_tokens (pad = EOS for GPT-2), its mask (left
    padding only; a BOS equal to the pad token stays real) and its logits and losses."""
    ref = safetensors_np.load(str(PADDING / "text_tiny_random_gpt2.safetensors"))
    meta = json.loads(safetensors_np.metadata(str(PADDING / "text_tiny_random_gpt2.safetensors"))["texts"])
    key = f"text:{side}:bos{int(bos)}"
    m = circuits.Model.from_pretrained_no_processing(TINY_GPT2)
    toks = m.to_tokens(meta, prepend_bos=bos, padding_side=side)
    assert np.array_equal(toks, ref[f"{key}:tokens"])
    mask = circuits.padding.get_attention_mask(toks, m.tokenizer.eos_token_id, m.tokenizer.bos_token_id, bos, side)
    assert np.array_equal(mask, ref[f"{key}:mask"])
    logits, loss = m(meta, return_type="both", prepend_bos=bos, padding_side=side)
    _close(logits[..., :64], ref[f"{key}:logits[..., :64]"], "logits")
    _close(loss, ref[f"{key}:loss"][0], "loss")
    _close(m(meta, return_type="loss", loss_per_token=True, prepend_bos=bos, padding_side=side),
           ref[f"{key}:per_token_loss"], "per_token_loss")


@pytest.mark.parametrize("case", ["hf_tiny_random_gpt2", "tl_gqa_rotary_rms", "tl_local_all"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_invariance(case, side):
    """Every row of a padded batch: the logits and cached hooks of the row run alone."""
    m = circuits.Model.from_pretrained_no_processing(CASES_DIR / case)
    rng = np.random.default_rng(7)
    lengths = [8, 3, 5]
    rows = [rng.integers(0, m.cfg.d_vocab_out, n) for n in lengths]
    T = max(lengths)
    tokens = np.full((3, T), 1, np.int64)
    mask = np.zeros((3, T), np.int64)
    for b, r in enumerate(rows):
        s = T - len(r) if side == "left" else 0
        tokens[b, s:s + len(r)], mask[b, s:s + len(r)] = r, 1
    logits, cache = m.run_with_cache(tokens, attention_mask=mask, names_filter=lambda n: "pattern" not in n
                                     and "attn_scores" not in n)
    for b, r in enumerate(rows):
        real = mask[b].astype(bool)
        one, c1 = m.run_with_cache(r, names_filter=lambda n: "pattern" not in n and "attn_scores" not in n)
        np.testing.assert_allclose(logits[b, real], one[0], atol=1e-5, rtol=1e-5)
        for name in c1.keys():
            np.testing.assert_allclose(cache[name][b, real], c1[name][0], atol=1e-5, rtol=1e-5, err_msg=name)


def test_tokens_and_keywords():
    m = circuits.Model.from_pretrained_no_processing(TINY_GPT2)
    eos = m.tokenizer.eos_token_id
    right = m.to_tokens(["Hello world, this is", "Hi"])
    assert right[1, -1] == eos and right[1, 0] == m.tokenizer.bos_token_id  # TL pads GPT-2 with EOS
    left = m.to_tokens(["Hello world, this is", "Hi"], padding_side="left")
    assert left[1, 0] == eos and np.array_equal(left[1, -2:], right[1, 1:3])
    # a left-padded batch builds its mask as TransformerLens: the padded row equals the row alone
    lg = m(["Hello world, this is", "Hi"], padding_side="left")
    np.testing.assert_allclose(lg[1, -1], m("Hi")[0, -1], atol=1e-5)
    m.tokenizer.padding_side = "left"  # the model's default, as model.tokenizer.padding_side in TL
    try:
        np.testing.assert_array_equal(m.to_tokens(["Hello world, this is", "Hi"]), left)
        np.testing.assert_allclose(m(["Hello world, this is", "Hi"]), lg, atol=0)
    finally:
        m.tokenizer.padding_side = "right"
    # start_at_layer with the residual as the first argument, and tokens= for its loss
    toks = m.to_tokens("Hello world, this is")
    resid = m(toks, stop_at_layer=1)
    full_logits, full_loss = m(toks, return_type="both")
    np.testing.assert_allclose(m(resid, start_at_layer=1), full_logits, atol=1e-5)
    np.testing.assert_allclose(m(resid, start_at_layer=1, tokens=toks, return_type="loss"), full_loss, atol=1e-5)
    # run_with_cache / run_with_hooks take forward's keywords
    out, cache = m.run_with_cache(toks, stop_at_layer=1, device="cpu")
    np.testing.assert_allclose(out, resid, atol=0)
    assert "blocks.0.hook_resid_post" in cache and "blocks.1.hook_resid_pre" not in cache and "ln_final.hook_scale" \
        not in cache
    seen = []
    m.run_with_hooks(["Hello world, this is", "Hi"], padding_side="left", return_type=None,
                     fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, h: seen.append(a.copy()))])
    assert seen and np.all(seen[0][1, :, :, :6] == 0)  # no real query looks at padding; pad rows are 0
    # devices
    assert m.to("cpu") is m and m.cpu() is m
    for bad in (lambda: m.to("cuda"), lambda: m.run_with_cache(toks, device="cuda"), lambda: m.cuda()):
        with pytest.raises(ValueError, match="CPU only"):
            bad()
    # token positions as TransformerLens
    hi = m.to_tokens("Hi Hi")
    t = int(hi[0, -1])
    assert m.get_token_position(t, hi) == int(np.flatnonzero(hi[0] == t)[0])
    assert m.get_token_position(t, hi, mode="last") == hi.shape[1] - 1
    with pytest.raises(ValueError):
        m.get_token_position(t, hi, mode="middle")


def test_bad_masks_refused():
    m = circuits.Model.from_pretrained_no_processing(TINY_GPT2)
    toks = m.to_tokens(["Hello world", "Hi"])
    with pytest.raises(circuits.ShapeError):
        m(toks, attention_mask=np.ones((2, 1), np.int64))
    with pytest.raises(circuits.CircuitsError, match="is 2"):
        m(toks, attention_mask=np.full(toks.shape, 2))
    with pytest.raises(circuits.RangeError):  # not wrapped to 0 (padding) by the int32 conversion
        m(toks, attention_mask=np.full(toks.shape, 2**32, np.int64))
    with pytest.raises(circuits.CircuitsError, match="no real token"):
        m(toks, attention_mask=np.zeros(toks.shape, np.int64))
    with pytest.raises(ValueError, match="padding_side"):
        m.to_tokens(["a", "b"], padding_side="middle")


def test_detect_head_list_is_one_padded_batch():
    """A list of texts is scored as TransformerLens scores it (one by one, averaged), here in
    one left-padded batch whose rows are scored as if alone."""
    m = circuits.Model.from_pretrained_no_processing(TINY_GPT2)
    texts = ["The cat sat on the mat and the cat sat", "Hi there Hi there", "A B C A B C D"]
    for kind in ("previous_token_head", "duplicate_token_head", "induction_head"):
        for measure in ("mul", "abs"):
            got = circuits.detect_head(m, texts, kind, exclude_bos=True, error_measure=measure)
            want = np.mean([circuits.detect_head(m, t, kind, exclude_bos=True, error_measure=measure)
                            for t in texts], axis=0)
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_generate_left_padded_as_transformer_lens():
    """TransformerLens's greedy generate of a list of texts (left-padded, its mask carried through
    the KV cache) equals circuits_context_generate with the batch's attention_mask."""
    import ctypes

    from circuits import _native as N

    ref = safetensors_np.load(str(PADDING / "text_tiny_random_gpt2.safetensors"))
    texts = json.loads(safetensors_np.metadata(str(PADDING / "text_tiny_random_gpt2.safetensors"))["texts"])
    want = ref["generate:tokens"]
    m = circuits.Model.from_pretrained_no_processing(TINY_GPT2)
    prompt = m.to_tokens(texts, padding_side="left").astype(np.int32)
    t = m.tokenizer
    mask = circuits.padding.get_attention_mask(prompt, t.eos_token_id, t.bos_token_id, True, "left")
    B, P = prompt.shape
    n_new = want.shape[1] - P
    for kv in (1, 0):
        o = N.GenerateOptions()
        N.lib.circuits_generate_options_init(ctypes.byref(o))
        o.max_new_tokens, o.do_sample, o.stop_at_eos, o.use_kv_cache = n_new, 0, 0, kv
        o.attention_mask = mask.ctypes.data
        out = np.zeros((B, P + n_new), np.int32)
        n = ctypes.c_int64()
        m._call(N.lib.circuits_context_generate, prompt, B, P, ctypes.byref(o), out, ctypes.byref(n))
        assert n.value == P + n_new
        np.testing.assert_array_equal(out, want)


def test_default_padding_side_from_tokenizer_config(tmp_path):
    """TransformerLens: default_padding_side, else the tokenizer's own (tokenizer_config.json)."""
    import shutil

    d = tmp_path / "m"
    shutil.copytree(TINY_GPT2, d)
    assert circuits.Model.from_pretrained(d).tokenizer.padding_side == "right"
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["padding_side"] = "left"
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert circuits.Model.from_pretrained(d).tokenizer.padding_side == "left"
    assert circuits.Model.from_pretrained(d, default_padding_side="right").tokenizer.padding_side == "right"
    with pytest.raises(ValueError):
        circuits.Model.from_pretrained(d, default_padding_side="up")


def test_utils_get_attention_mask_as_transformerlens():
    """circuits.utils.get_attention_mask(tokenizer, tokens, prepend_bos, padding_side): TL 3.9's
    signature and values (recorded from TransformerLens on the same tokens)."""
    from circuits import utils

    m = circuits.Model.from_pretrained(TINY_GPT2)
    texts = ["Hello world you", "Hi", "a b"]
    left = m.to_tokens(texts, padding_side="left")
    right = m.to_tokens(texts, padding_side="right")
    ones = [[1] * 8] * 3
    tl = {  # (tokens, prepend_bos, padding_side) -> TransformerLens's mask
        ("left", True, "left"): [[1] * 8, [0] * 5 + [1] * 3, [0] * 5 + [1] * 3],
        ("left", False, "left"): [[0] + [1] * 7, [0] * 6 + [1] * 2, [0] * 6 + [1] * 2],
        ("left", True, "right"): ones,
        ("right", True, "right"): [[1] * 8, [1] * 3 + [0] * 5, [1] * 3 + [0] * 5],
        ("right", False, "left"): [[0] + [1] * 7] * 3,
        ("right", False, None): [[1] * 8, [1] * 3 + [0] * 5, [1] * 3 + [0] * 5],  # the tokenizer's side: right
    }
    for (which, bos, side), want in tl.items():
        tok = left if which == "left" else right
        got = utils.get_attention_mask(m.tokenizer, tok, bos, side)
        assert got.dtype == np.int64 and got.tolist() == want, (which, bos, side)
    assert utils.get_attention_mask(m.tokenizer, left[0], True, "left").tolist() == [1] * 8
    assert utils.get_attention_mask(None, left, True).tolist() == ones
    m.close()
