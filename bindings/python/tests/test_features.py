"""circuits.FeatureStats and model.feature_stats (docs/saes.md "Feature statistics"): against a
brute force in NumPy (run_with_cache at the SAE's point, the standard SAE's encoder written out),
independence of the batch size, the file's round trip, closing, and refusals."""

from __future__ import annotations

import ctypes
import json
import struct

import numpy as np
import pytest

import circuits
from circuits import _native as N
from circuits._arrays import Handle

D_SAE = 48
HOOK = "blocks.2.hook_resid_post"


def _write_sae(path, d_in, hook=HOOK, seed=0):
    """A standard SAE directory as SAELens saves it (cfg.json + sae_weights.safetensors)."""
    path.mkdir()
    rng = np.random.default_rng(seed)
    w = {"W_dec": rng.uniform(-0.3, 0.3, (D_SAE, d_in)), "W_enc": rng.uniform(-0.5, 0.5, (d_in, D_SAE)),
         "b_dec": rng.uniform(-0.1, 0.1, d_in), "b_enc": rng.uniform(-0.4, 0.4, D_SAE)}
    w = {k: v.astype(np.float32) for k, v in w.items()}
    cfg = {"d_in": d_in, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "architecture": "standard",
           "metadata": {"sae_lens_version": "6.54.12", "hook_name": hook}}
    (path / "cfg.json").write_text(json.dumps(cfg))
    hdr, off, blobs = {}, 0, []
    for k, v in w.items():
        b = v.tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    (path / "sae_weights.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return w


class _SaeHandleOnly:
    """The binding's contract for an SAE (features.py): ``_live()`` gives the Handle that owns
    the circuits_sae. circuits.SAE has it; this stand-in is used where that class is absent."""

    def __init__(self, path):
        out = ctypes.c_void_p()
        N.check(N.lib.circuits_sae_load(ctypes.byref(out), N.cstr(str(path))))
        self._h = Handle(out.value, N.lib.circuits_sae_free)

    def _live(self):
        return self._h


def _load_sae(path):
    sae_cls = getattr(circuits, "SAE", None)
    return sae_cls.load_from_disk(path) if sae_cls is not None else _SaeHandleOnly(path)


@pytest.fixture
def setup(tiny, tmp_path):
    w = _write_sae(tmp_path / "sae", tiny.cfg.d_model)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, tiny.cfg.d_vocab, (7, 9)).astype(np.int64)
    return tiny, _load_sae(tmp_path / "sae"), w, tokens


def _brute(model, w, tokens, skip=0, threshold=0.0):
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    x = np.asarray(cache[HOOK], np.float64)[:, skip:]                        # [R, T - skip, d]
    post = np.maximum((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0.0)       # [R, T', S]
    flat = post.reshape(-1, D_SAE)
    return post, (flat > threshold).mean(0), flat.mean(0), flat.max(0)


def test_against_brute_force(setup):
    model, sae, w, tokens = setup
    st = model.feature_stats(sae, tokens, batch_size=3, top_k=4, context_left=2, context_right=1, skip_positions=1)
    post, freq, mean, mx = _brute(model, w, tokens, skip=1)
    assert st.n_tokens == tokens.shape[0] * (tokens.shape[1] - 1) and st.d_sae == D_SAE
    assert st.top_k == 4 and st.window == 4
    assert st.options == {"top_k": 4, "context_left": 2, "context_right": 1, "threshold": 0.0, "skip_positions": 1}
    near = (np.abs(post) < 1e-4).any(axis=(0, 1))  # a latent this close to 0 may count either way
    np.testing.assert_array_equal(st.frequency[~near], freq[~near].astype(np.float32))
    np.testing.assert_allclose(st.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.max, mx, rtol=1e-5, atol=1e-6)
    assert 0 < (freq > 0).sum() < D_SAE  # some fire, some do not: not a vacuous check
    for j in range(D_SAE):
        t = st.top(j)
        vals = np.sort(post[:, :, j].ravel())[::-1]
        want = vals[vals > 0][:4]
        np.testing.assert_allclose(t.values, want, rtol=1e-5, atol=1e-6)
        for v, r, p, win in zip(t.values, t.rows, t.positions, t.windows):
            assert abs(post[r, p - 1, j] - v) < 1e-5 * (1 + abs(v))  # post starts at position 1
            for q in range(4):
                at = p - 2 + q
                assert win[q] == (tokens[r, at] if 0 <= at < tokens.shape[1] else -1)
            assert t.left == 2


def test_batch_size_does_not_matter_and_round_trip(setup, tmp_path):
    model, sae, w, tokens = setup
    a = model.feature_stats(sae, tokens, batch_size=7)
    b = circuits.FeatureStats(sae).add(model, tokens[:2], batch_size=1).add(model, tokens[2:], batch_size=2)
    for f in ("frequency", "mean", "max"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    for j in range(D_SAE):
        ta, tb = a.top(j), b.top(j)
        for x, y in zip(ta, tb):
            np.testing.assert_array_equal(x, y)
    a.save(tmp_path / "s.safetensors")
    c = circuits.FeatureStats.load(tmp_path / "s.safetensors")
    np.testing.assert_array_equal(a.frequency, c.frequency)
    np.testing.assert_array_equal(a.top(5).windows, c.top(5).windows)
    assert c.options == a.options and c.n_tokens == a.n_tokens
    with pytest.raises(circuits.UnsupportedError, match="loaded from a file"):
        c.add(model, tokens[:1])
    assert "FeatureStats" in repr(c)


def test_text_and_one_row(setup):
    model, sae, w, tokens = setup
    st = model.feature_stats(sae, tokens[0], batch_size=4)  # [pos]: one row
    assert st.n_tokens == tokens.shape[1]


def test_refusals_and_close(setup, tmp_path):
    model, sae, w, tokens = setup
    with pytest.raises(circuits.InvalidArgumentError, match="top_k -1"):
        circuits.FeatureStats(sae, top_k=-1)
    with pytest.raises(circuits.InvalidArgumentError, match="not a finite number"):
        circuits.FeatureStats(sae, threshold=float("nan"))
    with pytest.raises(TypeError, match="circuits.SAE"):
        circuits.FeatureStats(object())
    st = circuits.FeatureStats(sae)
    with pytest.raises(ValueError, match="batch_size"):
        st.add(model, tokens, batch_size=0)
    with pytest.raises(circuits.RangeError):
        st.add(model, np.full((1, 3), 10**6))
    with pytest.raises(circuits.RangeError, match="latent 48"):
        st.top(D_SAE)
    assert st.n_tokens == 0
    with pytest.raises(circuits.FormatError):
        circuits.FeatureStats.load(tmp_path / "sae" / "sae_weights.safetensors")
    st.close()
    st.close()
    with pytest.raises(circuits.ClosedError):
        st.frequency
    with pytest.raises(circuits.ClosedError):
        st.add(model, tokens)
    assert "closed" in repr(st)


def test_sae_outlives_its_object(tiny, tmp_path):
    """The statistics keep the SAE's handle: dropping every other reference to the SAE and
    collecting does not free the circuits_sae an add reads."""
    import gc

    _write_sae(tmp_path / "sae", tiny.cfg.d_model)
    sae = _load_sae(tmp_path / "sae")
    st = circuits.FeatureStats(sae)
    if hasattr(sae, "close"):
        sae.close()
    del sae
    gc.collect()
    st.add(tiny, np.arange(12).reshape(2, 6))
    assert st.n_tokens == 12
