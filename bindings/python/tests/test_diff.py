"""circuits.diff / Model.diff (circuits_model_diff): two models on the same tokens, every hook
point's error of b against a (docs/quantization.md)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import circuits
import safetensors_np
from conftest import CASES_DIR, REPO
from test_api import _write_safetensors

TINY = REPO / "examples" / "models" / "tiny-random-gpt2"
SMALL = CASES_DIR / "tl_2l_lnpre_gelu"  # TransformerLens layout: its file holds TL names
TOK = np.array([[3, 17, 4, 9, 30, 2, 11], [5, 5, 8, 41, 0, 7, 19]])

NO_PROCESSING = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)


def _copy(tmp_path, name, perturb=None):
    """SMALL with element [0, 0] of weight ``perturb`` (None: none) increased by 0.5."""
    d = tmp_path / name
    d.mkdir()
    shutil.copy(SMALL / "tl_config.json", d)
    w = safetensors_np.load(str(SMALL / "model.safetensors"))
    if perturb:
        w[perturb] = np.array(w[perturb], np.float32)
        w[perturb].reshape(-1)[0] += 0.5
    _write_safetensors(d / "model.safetensors", w)
    return circuits.Model.from_pretrained(str(d), **NO_PROCESSING)


def _measures(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    keep = ~(np.isinf(a) & (a == b))  # masked attention scores: the same -inf in both
    a, b = a[keep], b[keep]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return np.linalg.norm(a - b) / na, np.abs(a - b).max(), a @ b / (na * nb), keep.sum()


def test_identical_models_are_exactly_equal(tmp_path):
    a = circuits.Model.from_pretrained(str(SMALL), **NO_PROCESSING)
    for d in (circuits.diff(a, a, TOK), a.diff(_copy(tmp_path, "copy"), TOK)):
        assert len(d) == len(a.hook_dict) + 1 and d[-1]["name"] == "logits"
        for e in d:
            assert e["rel_error"] == 0 and e["max_abs"] == 0 and e["norm_a"] > 0, e
            assert abs(e["cosine"] - 1) < 1e-12


def test_a_changed_weight_shows_from_its_layer_on(tmp_path):
    a = circuits.Model.from_pretrained(str(SMALL), **NO_PROCESSING)
    b = _copy(tmp_path, "perturbed", "blocks.1.mlp.W_in")
    d = a.diff(b, TOK)
    names = [e["name"] for e in d]
    first = names.index("blocks.1.mlp.hook_pre")
    assert all(e["rel_error"] == 0 and e["max_abs"] == 0 for e in d[:first])
    assert all(e["rel_error"] > 0 and e["cosine"] < 1 for e in d[first:])
    kinds, grid = d.by_layer()
    assert grid.shape == (len(kinds), 2) and grid[kinds.index("hook_resid_post"), 0] == 0
    assert grid[kinds.index("hook_resid_post"), 1] > 0
    assert "hook_resid_post" in str(d)
    # every measure as two run_with_cache caches give it
    la, ca = a.run_with_cache(TOK)
    lb, cb = b.run_with_cache(TOK)
    for e in d:
        x, y = (la, lb) if e["name"] == "logits" else (ca[e["name"]], cb[e["name"]])
        rel, mx, cos, n = _measures(x, y)
        assert e["numel"] == n
        np.testing.assert_allclose([e["rel_error"], e["max_abs"], e["cosine"]], [rel, mx, cos], rtol=1e-9, err_msg=e["name"])


def test_filter_logits_and_mask(tmp_path):
    a = circuits.Model.from_pretrained(str(SMALL), **NO_PROCESSING)
    b = _copy(tmp_path, "perturbed", "blocks.0.attn.W_V")
    d = circuits.diff(a, b, TOK, ["blocks.*.hook_resid_post", "embed"], logits=False)
    assert [e["name"] for e in d] == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert d.get("hook_embed")["rel_error"] == 0 and d.get("blocks.0.hook_resid_post")["rel_error"] > 0
    with pytest.raises(KeyError):
        d.get("logits")
    mask = np.ones(TOK.shape, np.int32)
    mask[0, :2] = 0
    dm = circuits.diff(a, b, TOK, "blocks.1.hook_resid_post", attention_mask=mask)
    _, ca = a.run_with_cache(TOK, attention_mask=mask)
    _, cb = b.run_with_cache(TOK, attention_mask=mask)
    rel, _, _, _ = _measures(ca["blocks.1.hook_resid_post"], cb["blocks.1.hook_resid_post"])
    assert dm[0]["rel_error"] == pytest.approx(rel, rel=1e-9)
    assert dm[0]["rel_error"] != d[-1]["rel_error"]  # the mask changed the runs
    with pytest.raises(ValueError):
        d.by_layer("bogus")


def test_per_head(tmp_path):
    """One entry per head at points with a head axis, each the measure of that head's slice."""
    a = circuits.Model.from_pretrained(str(SMALL), **NO_PROCESSING)
    b = _copy(tmp_path, "perturbed", "blocks.0.attn.W_V")  # element [0, 0, 0]: head 0's value
    d = a.diff(b, TOK, ["z0", "pattern1"], per_head=True)
    assert [(e["name"], e["head"]) for e in d[:3]] == [("blocks.0.attn.hook_z", h) for h in (-1, 0, 1)]
    z = d.heads("blocks.0.attn.hook_z")
    assert z[0] > 0 and z[1] == 0  # only head 0 reads the changed weight
    _, ca = a.run_with_cache(TOK)
    _, cb = b.run_with_cache(TOK)
    for h in range(2):
        rel, mx, cos, n = _measures(ca["blocks.1.attn.hook_pattern"][:, h], cb["blocks.1.attn.hook_pattern"][:, h])
        e = d.get("blocks.1.attn.hook_pattern", h)
        np.testing.assert_allclose([e["rel_error"], e["max_abs"], e["cosine"]], [rel, mx, cos], rtol=1e-9)
        assert e["numel"] == n
    assert d.by_layer()[1].shape == (2, 2)  # the whole points only
    with pytest.raises(KeyError):
        d.heads("logits")


def test_refusals():
    a = circuits.Model.from_pretrained(str(SMALL), **NO_PROCESSING)
    other = circuits.Model.from_pretrained(str(TINY))
    with pytest.raises(circuits.ConfigError, match="the models differ in n_layers"):
        circuits.diff(a, other, TOK)
    with pytest.raises(circuits.ConfigError, match="hook point 12 is 'blocks.0.hook_resid_mid'"):
        circuits.diff(circuits.Model.from_pretrained(str(CASES_DIR / "tl_final_rms_ln")),
                      circuits.Model.from_pretrained(str(CASES_DIR / "tl_parallel_ln")), TOK)
    with pytest.raises(circuits.RangeError):
        circuits.diff(a, a, TOK + 50)
    with pytest.raises(circuits.RangeError, match="exceed the models' n_ctx = 32"):
        circuits.diff(a, a, np.zeros((1, 33), np.int64))
    with pytest.raises(circuits.NotFoundError):
        circuits.diff(a, a, TOK, ["blocks.*.hook_nothing"])
    with pytest.raises(ValueError, match="NUL"):  # C would read 'hook_embed' and compare it
        circuits.diff(a, a, TOK, ["hook_embed\0blocks.0.hook_nothing"])
    with pytest.raises(ValueError, match="names is empty"):  # not "every point", as C reads n_names 0
        circuits.diff(a, a, TOK, [])
    with pytest.raises(TypeError):
        circuits.diff(a, None, TOK)
    b = circuits.Model.from_pretrained(str(SMALL), **NO_PROCESSING)
    b.close()
    with pytest.raises(circuits.ClosedError):
        a.diff(b, TOK)


def test_a_quantized_file_both_ways():
    """The same Q4_K file dequantized at load and kept in its stored type: the same weights, the
    products summed in another order, so equal to fp32 rounding at every hook point; against the
    F32 file of another quantization the error is of the quantization's size."""
    path = str(REPO / "tests" / "reference" / "gguf" / "llama_k" / "Q4_K.gguf")
    a = circuits.Model.from_pretrained(path, **NO_PROCESSING)
    b = circuits.Model.from_pretrained(path, keep_stored_dtype=True, **NO_PROCESSING)
    tok = np.arange(2, 12)
    d = a.diff(b, tok)
    assert len(d) == len(a.hook_dict) + 1
    assert max(e["rel_error"] for e in d) < 1e-5
    q6 = circuits.Model.from_pretrained(str(REPO / "tests" / "reference" / "gguf" / "llama_k" / "Q6_K.gguf"),
                                        **NO_PROCESSING)
    assert q6.diff(a, tok).get("logits")["rel_error"] > 1e-2
