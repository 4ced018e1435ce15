"""keep_stored_dtype=True (docs/loading.md#keep_stored_dtype): weight matrices kept as stored (F16,
BF16, GGUF's quantized types). The same files loaded as float32 are the reference: weights read
back are identical (both widen the same stored values), activations and logits agree within
float32 rounding (only the order of sums differs: the bound is the C test's, tests/test_stored.c)."""

from __future__ import annotations

import numpy as np
import pytest

import circuits
from circuits.errors import UnsupportedError
from conftest import CASES_DIR

BOUND = 2e-5  # |stored - fp32| <= BOUND * max |fp32|

BF16_LLAMA = CASES_DIR / "hf_qwen2_bf16"  # every matrix kept (BF16)
F16_GPT2 = CASES_DIR / "hf_random_f16"  # W_E and W_U kept; Conv1D / fused c_attn become float32


def _pair(path):
    f = circuits.Model.from_pretrained_no_processing(path)
    s = circuits.Model.from_pretrained_no_processing(path, keep_stored_dtype=True)
    return f, s


def _close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= BOUND * max(np.max(np.abs(b)), 1e-30)


def test_weight_dtypes_and_copies():
    f, s = _pair(BF16_LLAMA)
    assert s.weight_dtype("blocks.0.attn.W_Q") == "BF16"
    assert s.weight_dtype("unembed.W_U") == "BF16"
    assert s.weight_dtype("blocks.0.ln1.w") == "F32"  # norms are read as float32
    assert f.weight_dtype("blocks.0.attn.W_Q") == "F32"
    with pytest.raises(circuits.errors.NotFoundError):
        s.weight_dtype("blocks.0.attn.W_nope")
    # every access path: dequantized copies, identical to the float32 load's views
    for name in ("embed.W_E", "blocks.1.attn.W_O", "blocks.0.mlp.W_gate", "unembed.W_U"):
        w = s.get_weight(name)
        assert w.dtype == np.float32 and not w.flags.writeable
        np.testing.assert_array_equal(w, f.get_weight(name))
    np.testing.assert_array_equal(s.W_Q, f.W_Q)
    np.testing.assert_array_equal(s.W_K, f.W_K)  # grouped-query: repeated as TransformerLens does
    np.testing.assert_array_equal(s.blocks[0].attn.W_V, f.blocks[0].attn.W_V)
    np.testing.assert_array_equal(s.blocks[1].mlp.W_out, f.blocks[1].mlp.W_out)
    np.testing.assert_array_equal(s.embed.W_E, f.embed.W_E)
    np.testing.assert_array_equal(s.unembed.W_U, f.unembed.W_U)
    assert s.weight_names() == f.weight_names()
    sd_s, sd_f = s.state_dict(), f.state_dict()
    assert list(sd_s) == list(sd_f)
    for k in sd_f:
        np.testing.assert_array_equal(sd_s[k], sd_f[k])
    # a copy outlives the model, as the views do
    w = s.W_U
    s.close()
    assert np.isfinite(w).all()


@pytest.mark.parametrize("path", [BF16_LLAMA, F16_GPT2], ids=["bf16_llama", "f16_gpt2"])
def test_runs_match_fp32(path):
    f, s = _pair(path)
    toks = np.array([[1, 5, 9, 2, 7, 3], [4, 4, 8, 1, 0, 6]], dtype=np.int32)
    lf, cf = f.run_with_cache(toks)
    ls, cs = s.run_with_cache(toks)
    _close(ls, lf)
    assert sorted(cs.keys()) == sorted(cf.keys())
    for k in cf.keys():
        a, b = np.asarray(cs[k]), np.asarray(cf[k])
        fin = np.isfinite(b)
        np.testing.assert_array_equal(np.isfinite(a), fin)
        _close(a[fin], b[fin])
    gf = f.generate(toks[:, :3], max_new_tokens=5, do_sample=False, stop_at_eos=False, verbose=False)
    gs = s.generate(toks[:, :3], max_new_tokens=5, do_sample=False, stop_at_eos=False, verbose=False)
    np.testing.assert_array_equal(gs, gf)
    gn = s.generate(toks[:, :3], max_new_tokens=5, do_sample=False, stop_at_eos=False, use_past_kv_cache=False,
                    verbose=False)
    np.testing.assert_array_equal(gn, gs)


def test_processing_refused_by_name():
    with pytest.raises(UnsupportedError, match="fold_ln would rewrite"):
        circuits.Model.from_pretrained(BF16_LLAMA, keep_stored_dtype=True)
    with pytest.raises(UnsupportedError, match="center_unembed would rewrite"):
        circuits.Model.from_pretrained(BF16_LLAMA, keep_stored_dtype=True, fold_ln=False,
                                       center_writing_weights=False, fold_value_biases=False)
    # fold_value_biases reads W_O only: applied
    m = circuits.Model.from_pretrained(BF16_LLAMA, keep_stored_dtype=True, fold_ln=False,
                                       center_writing_weights=False, center_unembed=False)
    assert [k for k, on in m.cfg.processing.items() if on] == ["fold_value_biases"]


def test_weight_analyses_refuse():
    _, s = _pair(BF16_LLAMA)
    with pytest.raises(UnsupportedError, match="keep_stored_dtype"):
        s.OV
    with pytest.raises(UnsupportedError, match="keep_stored_dtype"):
        s.QK
