"""circuits.SAE and HookedSAETransformer's calls on circuits.Model (docs/saes.md "Python").

Two kinds of checks:

* semantics, on SAE directories written here (NumPy + safetensors_np.save, cfg.json by hand, as
  SAELens's ``save_model`` lays them out) against a NumPy float64 implementation of SAELens's
  arithmetic (``ref_encode`` / ``ref_decode``, SAELens's code order): encode / decode, the
  parameter views, and the spliced model against the same model run with a plain hook that puts
  the NumPy reconstruction in place of the point (what HookedSAETransformer's splice computes);
  error term on and off, a hook editing a latent, several SAEs, a transcoder, hook_z SAEs,
  attach / detach / restore semantics, the lifetime of views;
* against SAELens itself, on the committed references of tests/reference/saes/ (written by
  tests/reference/generate_saes.py with SAELens's HookedSAETransformer): see the end of the file.
"""

from __future__ import annotations

import gc
import json
import os
import warnings

import numpy as np
import pytest

import circuits
from circuits import SAE
from conftest import REPO, TINY_GPT2

import safetensors_np

TOK = np.array([[11, 42, 7, 300, 42, 7, 5, 9]])
TOK2 = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
D = 32  # tiny-random-gpt2's d_model; 4 heads of 8; d_mlp 128


@pytest.fixture(scope="module")
def model():
    m = circuits.Model.from_pretrained(TINY_GPT2)
    yield m
    m.close()


@pytest.fixture
def fresh():
    m = circuits.Model.from_pretrained(TINY_GPT2)
    yield m
    m.close()


# ---------------------------------------------------------------------------------------------
# SAE directories and SAELens's arithmetic in NumPy
# ---------------------------------------------------------------------------------------------

TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder")


def write_sae(root, name, arch="standard", hook="blocks.1.hook_resid_pre", hook_out=None, d_in=D, d_sae=64,
              d_out=None, seed=0, apply_b_dec_to_input=True, normalize="none", reshape="none", k=None,
              enc_scale=0.4, threshold=0.05):
    """A directory as SAELens's save_model writes it; returns (path, params as float64)."""
    rng = np.random.default_rng(seed)
    tc = arch in TRANSCODERS
    d_out = d_out if tc else d_in
    p = {"W_enc": rng.standard_normal((d_in, d_sae)) * enc_scale / np.sqrt(d_in) * 4,
         "W_dec": rng.standard_normal((d_sae, d_out)) * 0.3,
         "b_dec": rng.standard_normal(d_out) * 0.1}
    if arch == "gated":
        p["b_gate"] = rng.standard_normal(d_sae) * 0.2
        p["b_mag"] = rng.standard_normal(d_sae) * 0.2
        p["r_mag"] = rng.standard_normal(d_sae) * 0.1
    else:
        p["b_enc"] = rng.standard_normal(d_sae) * 0.2
    if arch in ("jumprelu", "jumprelu_transcoder"):
        p["threshold"] = np.abs(rng.standard_normal(d_sae)) * threshold
    if arch == "skip_transcoder":
        p["W_skip"] = rng.standard_normal((d_out, d_in)) * 0.1
    p = {n: a.astype(np.float32).astype(np.float64) for n, a in p.items()}  # exactly what is stored
    cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": bool(apply_b_dec_to_input) and not tc, "normalize_activations": normalize,
           "reshape_activations": reshape, "architecture": arch,
           "metadata": {"sae_lens_version": "6.54.12", "hook_name": hook, "model_name": "tiny-random-gpt2",
                        "context_size": 128, "prepend_bos": True}}
    if tc:
        cfg["d_out"] = d_out
        cfg["metadata"]["hook_name_out"] = hook_out
    if arch == "topk":
        cfg["k"] = k
        cfg["rescale_acts_by_decoder_norm"] = False
    path = os.path.join(str(root), name)
    os.makedirs(path)
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump(cfg, f)
    safetensors_np.save(os.path.join(path, "sae_weights.safetensors"),
                        {n: a.astype(np.float32) for n, a in p.items()})
    return path, p


class Ref:
    """SAELens's encode / decode in float64, for the parameters ``p`` of ``write_sae``."""

    def __init__(self, p, arch="standard", apply_b_dec_to_input=True, normalize="none", k=None):
        self.p, self.arch, self.k = p, arch, k
        self.tc = arch in TRANSCODERS
        self.apply_b_dec = apply_b_dec_to_input and not self.tc
        self.normalize = normalize

    def encode(self, x):
        """x [n, d_in] -> (pre, post, coeff)."""
        p = self.p
        x = np.asarray(x, np.float64)
        coeff = None
        if self.normalize == "constant_norm_rescale":
            coeff = np.sqrt(x.shape[-1]) / np.linalg.norm(x, axis=-1, keepdims=True)
            x = x * coeff
        if self.apply_b_dec:
            x = x - p["b_dec"]
        if self.arch == "gated":
            gate = x @ p["W_enc"] + p["b_gate"]
            pre = x @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"]
            return pre, (gate > 0) * np.maximum(pre, 0), coeff
        pre = x @ p["W_enc"] + p["b_enc"]
        if self.arch == "topk":
            post = np.zeros_like(pre)
            idx = np.argsort(-pre, axis=-1)[:, : self.k]
            np.put_along_axis(post, idx, np.maximum(np.take_along_axis(pre, idx, -1), 0), -1)
            return pre, post, coeff
        post = np.maximum(pre, 0)
        if "threshold" in p:
            post = post * (pre > p["threshold"])
        return pre, post, coeff

    def recons(self, post):
        return np.asarray(post, np.float64) @ self.p["W_dec"] + self.p["b_dec"]

    def decode(self, post, coeff=None, x=None):
        out = self.recons(post)
        if coeff is not None:
            out = out / coeff
        if "W_skip" in self.p:
            out = out + np.asarray(x, np.float64) @ self.p["W_skip"].T
        return out

    def forward(self, x):
        pre, post, coeff = self.encode(x)
        return self.decode(post, coeff, x)

    def margin(self, x):
        """How far the inputs are from a jump (threshold, gate, k-th value): must exceed the
        tolerance for a comparison to be meaningful."""
        pre, post, _ = self.encode(x)
        p = self.p
        m = np.inf
        if "threshold" in p:
            m = min(m, np.abs(pre - p["threshold"]).min())
        if self.arch == "gated":
            xx = np.asarray(x, np.float64) - (p["b_dec"] if self.apply_b_dec else 0)
            m = min(m, np.abs(xx @ p["W_enc"] + p["b_gate"]).min())
        if self.arch == "topk":
            s = -np.sort(-pre, axis=-1)
            m = min(m, (s[:, self.k - 1] - s[:, self.k]).min())
        return m


def close(a, b, tol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
    err = float(np.abs(a - b).max()) if a.size else 0.0
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol * scale:.3g}"


def plain_act(model, tokens, name):
    _, cache = model.run_with_cache(tokens, names_filter=name)
    return np.array(cache[name], np.float64)


def replaced_logits(model, tokens, name, value, extra_hooks=()):
    """The model's logits with the activation at ``name`` replaced by ``value``."""
    v = np.asarray(value, np.float32)
    return model.run_with_hooks(tokens, fwd_hooks=[(name, lambda a, hook: v.reshape(a.shape))] + list(extra_hooks))


# ---------------------------------------------------------------------------------------------
# SAE: loading, the config, the views, encode / decode
# ---------------------------------------------------------------------------------------------


def test_load_and_cfg(tmp_path):
    path, p = write_sae(tmp_path, "s", hook="blocks.2.hook_resid_pre", d_sae=48)
    sae = SAE.load_from_disk(path)
    c = sae.cfg
    assert (c.architecture, c.d_in, c.d_sae, c.d_out) == ("standard", D, 48, D)
    assert c.apply_b_dec_to_input is True and c.normalize_activations == "none"
    assert c.reshape_activations == "none" and c.dtype == "float32" and c.device == "cpu"
    assert c.metadata.hook_name == "blocks.2.hook_resid_pre" and c.metadata.hook_layer == 2
    assert c.metadata.hook_name_out is None  # an SAE: SAELens's metadata has none
    assert c.metadata.model_name == "tiny-random-gpt2" and c.metadata.context_size == 128  # cfg.json's extras
    assert c.metadata.not_a_key is None and "model_name" in c.metadata and c.metadata["hook_name"] == c.metadata.hook_name
    assert c.k is None and not c.is_transcoder and not c.has_skip
    assert c.to_dict()["metadata"]["hook_name"] == "blocks.2.hook_resid_pre"
    with pytest.raises(AttributeError):
        c.d_sae = 3
    assert sae.use_error_term is False and (sae.d_in, sae.d_sae, sae.d_out) == (D, 48, D)
    assert "standard" in repr(sae)


@pytest.mark.parametrize("arch", ["standard", "gated", "jumprelu", "topk"])
def test_views_are_the_stored_weights(tmp_path, arch):
    path, p = write_sae(tmp_path, arch, arch=arch, k=8 if arch == "topk" else None)
    sae = SAE.load_from_disk(path)
    sd = sae.state_dict()
    assert set(sd) == set(p)
    for name, want in p.items():
        v = getattr(sae, name)
        np.testing.assert_array_equal(v, want.astype(np.float32))
        assert v.dtype == np.float32 and not v.flags.writeable
        with pytest.raises(ValueError):
            v[...] = 0
    missing = {"standard": "threshold", "gated": "b_enc", "jumprelu": "b_gate", "topk": "W_skip"}[arch]
    with pytest.raises(AttributeError):
        getattr(sae, missing)
    with pytest.raises(circuits.NotFoundError):
        sae.weight("W_nope")


def test_views_keep_the_sae_alive(tmp_path):
    path, p = write_sae(tmp_path, "s")
    sae = SAE.load_from_disk(path)
    w, b = sae.W_enc, sae.b_dec[3:]
    t = w.T
    sae.close()
    assert sae.closed
    with pytest.raises(circuits.ClosedError):
        sae.W_dec
    with pytest.raises(circuits.ClosedError):
        sae.encode(np.zeros(D, np.float32))
    del sae
    gc.collect()
    np.testing.assert_array_equal(t.T, p["W_enc"].astype(np.float32))
    np.testing.assert_array_equal(b, p["b_dec"][3:].astype(np.float32))


@pytest.mark.parametrize("arch", ["standard", "gated", "jumprelu", "topk"])
def test_encode_decode_against_numpy(tmp_path, arch):
    k = 6 if arch == "topk" else None
    path, p = write_sae(tmp_path, arch, arch=arch, k=k)
    ref = Ref(p, arch, k=k)
    sae = SAE.load_from_disk(path)
    x = np.random.default_rng(3).standard_normal((2, 5, D)).astype(np.float32)
    assert ref.margin(x.reshape(-1, D)) > 1e-5
    pre, post, _ = ref.encode(x.reshape(-1, D))
    acts = sae.encode(x)
    assert acts.shape == (2, 5, 64) and acts.dtype == np.float32
    close(acts.reshape(-1, 64), post)
    acts2, hidden = sae.encode_with_hidden_pre(x)
    np.testing.assert_array_equal(acts2, acts)
    close(hidden.reshape(-1, 64), pre)
    out = sae.decode(acts)
    assert out.shape == (2, 5, D)
    close(out.reshape(-1, D), ref.decode(acts.reshape(-1, 64)))
    close(sae(x), out)
    close(sae.forward(x[0, 1]), out[0, 1])  # one row: [d_in]
    # SAELens's use_error_term on a bare SAE: the output is the input (to rounding)
    sae.use_error_term = True
    close(sae.forward(x), x, 1e-6)


def test_encode_inputs(tmp_path):
    path, p = write_sae(tmp_path, "s")
    sae = SAE.load_from_disk(path)
    x = np.random.default_rng(4).standard_normal((3, D))
    want = sae.encode(x.astype(np.float32))
    np.testing.assert_array_equal(sae.encode(x), want)  # float64 converted
    np.testing.assert_array_equal(sae.encode(np.asfortranarray(x.astype(">f4"))), want)
    np.testing.assert_array_equal(sae.encode(x.astype(np.float32)[::-1][::-1]), want)
    np.testing.assert_array_equal(sae.encode(x.tolist()), want)
    e = sae.encode(np.zeros((0, 4, D), np.float32))
    assert e.shape == (0, 4, 64)
    assert sae.decode(e).shape == (0, 4, D)
    for bad in (np.zeros((3, D + 1)), np.zeros(()), np.zeros((D, 3))):
        with pytest.raises(circuits.ShapeError):
            sae.encode(bad)
    with pytest.raises(TypeError):
        sae.encode(np.zeros((2, D), complex))
    with pytest.raises(TypeError):
        sae.encode(np.array([["a"] * D]))
    with pytest.raises(circuits.ShapeError):
        sae.decode(np.zeros((2, 63)))
    with pytest.raises(circuits.ShapeError):
        sae.decode(np.zeros((2, 64)), x=np.zeros((3, D)))


def test_load_errors(tmp_path):
    with pytest.raises(circuits.CircuitsError):
        SAE.load_from_disk(tmp_path / "nothing-here")
    with pytest.raises(ValueError):
        SAE.load_from_disk(tmp_path, device="cuda")
    with pytest.raises(ValueError):
        SAE.load_from_disk(tmp_path, dtype="float16")
    with pytest.raises(NotImplementedError):
        SAE.load_from_disk(tmp_path, fold_W_dec_norm=True)
    with pytest.raises(TypeError):
        SAE()
    path, _ = write_sae(tmp_path, "unknown", arch="matching_pursuit")
    with pytest.raises(circuits.UnsupportedError, match="matching_pursuit"):
        SAE.load_from_disk(path)


def test_normalized_decode_needs_x(tmp_path):
    path, p = write_sae(tmp_path, "n", normalize="constant_norm_rescale")
    ref = Ref(p, normalize="constant_norm_rescale")
    sae = SAE.load_from_disk(path)
    assert sae.cfg.normalize_activations == "constant_norm_rescale"
    x = np.random.default_rng(5).standard_normal((4, D)).astype(np.float32) * 3
    pre, post, coeff = ref.encode(x)
    acts = sae.encode(x)
    close(acts, post)
    close(sae.decode(acts, x), ref.decode(acts, coeff))
    close(sae(x), ref.forward(x))
    with pytest.raises(circuits.CircuitsError):
        sae.decode(acts)  # the per-row factors come from x


def test_hook_z_sae_shapes(tmp_path):
    path, p = write_sae(tmp_path, "z", hook="blocks.0.attn.hook_z", reshape="hook_z")
    sae = SAE.load_from_disk(path)
    assert sae.cfg.reshape_activations == "hook_z"
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 8)).astype(np.float32)  # [b, p, heads, d_head]
    acts = sae.encode(x)
    assert acts.shape == (2, 3, 64)
    np.testing.assert_array_equal(acts, sae.encode(x.reshape(2, 3, 32)))  # flat works too
    out = sae.decode(acts, x)
    assert out.shape == (2, 3, 4, 8)
    close(out.reshape(-1, 32), Ref(p).forward(x.reshape(-1, 32)))
    assert sae.decode(acts).shape == (2, 3, 4, 8)  # d_head remembered from encode, as SAELens


# ---------------------------------------------------------------------------------------------
# Splicing into a model
# ---------------------------------------------------------------------------------------------

HOOK = "blocks.1.hook_resid_pre"
SAE_POINTS = ["hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_output"]


@pytest.mark.parametrize("arch", ["standard", "gated", "jumprelu", "topk"])
def test_run_with_cache_with_saes_against_numpy(tmp_path, model, arch):
    k = 6 if arch == "topk" else None
    path, p = write_sae(tmp_path, arch, arch=arch, k=k, hook=HOOK)
    ref = Ref(p, arch, k=k)
    sae = SAE.load_from_disk(path)
    x = plain_act(model, TOK2, HOOK)
    rows = x.reshape(-1, D)
    assert ref.margin(rows) > 1e-5
    pre, post, _ = ref.encode(rows)
    recons = ref.recons(post)
    logits, cache = model.run_with_cache_with_saes(TOK2, saes=[sae])
    assert model.acts_to_saes == {}  # removed at the end
    assert HOOK not in cache and HOOK + ".hook_sae_error" not in cache
    for name in SAE_POINTS:
        assert HOOK + "." + name in cache, name
    close(cache[HOOK + ".hook_sae_input"], x)
    close(cache[HOOK + ".hook_sae_acts_pre"].reshape(-1, 64), pre)
    close(cache[HOOK + ".hook_sae_acts_post"].reshape(-1, 64), post)
    close(cache[HOOK + ".hook_sae_recons"].reshape(-1, D), recons)
    close(cache[HOOK + ".hook_sae_output"].reshape(-1, D), recons)
    close(logits, replaced_logits(model, TOK2, HOOK, recons.reshape(x.shape)))
    # the model's own points after the SAE see the reconstruction
    close(cache["blocks.1.hook_resid_mid"], plain_after(model, TOK2, HOOK, recons.reshape(x.shape),
                                                        "blocks.1.hook_resid_mid"))
    # run_with_saes: the same logits
    close(model.run_with_saes(TOK2, saes=sae), logits, 1e-6)


def plain_after(model, tokens, hook, value, name):
    got = []
    v = np.asarray(value, np.float32)
    model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda a, h: v), (name, lambda a, h: got.append(a.copy()))])
    return got[0]


def test_error_term_and_an_edited_latent(tmp_path, model):
    path, p = write_sae(tmp_path, "s", hook=HOOK)
    ref = Ref(p)
    sae = SAE.load_from_disk(path)
    plain = model(TOK)
    x = plain_act(model, TOK, HOOK)
    pre, post, _ = ref.encode(x.reshape(-1, D))
    clean = ref.recons(post)
    logits, cache = model.run_with_cache_with_saes(TOK, saes=[sae], use_error_term=True)
    close(logits, plain, 2e-5)  # no hook: the model's own logits
    close(cache[HOOK + ".hook_sae_error"].reshape(-1, D), x.reshape(-1, D) - clean)
    close(cache[HOOK + ".hook_sae_output"], x, 2e-5)
    # the SAE's own attribute is the default
    sae.use_error_term = True
    _, c2 = model.run_with_cache_with_saes(TOK, saes=[sae], names_filter=lambda n: "hook_sae_error" in n)
    assert list(c2.keys()) == [HOOK + ".hook_sae_error"]
    sae.use_error_term = False
    _, c3 = model.run_with_cache_with_saes(TOK, saes=[sae])
    assert HOOK + ".hook_sae_error" not in c3
    # a hook zeroing the most active latent: the output moves by that latent's contribution only
    j = int(np.argmax(post.sum(0)))
    assert post[:, j].max() > 0.1

    def zero_j(acts, hook):
        acts[..., j] = 0.0

    edited_post = post.copy()
    edited_post[:, j] = 0
    want = x.reshape(-1, D) + (ref.recons(edited_post) - clean)
    got = model.run_with_hooks_with_saes(TOK, saes=[sae], use_error_term=True,
                                         fwd_hooks=[(HOOK + ".hook_sae_acts_post", zero_j)])
    close(got, replaced_logits(model, TOK, HOOK, want.reshape(x.shape)))
    # without the error term: the edited reconstruction itself
    got = model.run_with_hooks_with_saes(TOK, saes=[sae], fwd_hooks=[(HOOK + ".hook_sae_acts_post", zero_j)])
    close(got, replaced_logits(model, TOK, HOOK, ref.recons(edited_post).reshape(x.shape)))
    with circuits.Model.from_pretrained(TINY_GPT2) as other:
        assert model.hook_names() == other.hook_names()  # every SAE point gone, the replaced point back


def test_several_saes_and_add_sae(tmp_path, fresh):
    m = fresh
    pa, wa = write_sae(tmp_path, "a", hook="blocks.0.hook_resid_post", seed=1)
    pb, wb = write_sae(tmp_path, "b", hook="blocks.3.hook_mlp_out", seed=2, apply_b_dec_to_input=False)
    a, b = SAE.load_from_disk(pa), SAE.load_from_disk(pb)
    m.add_sae(a)
    m.add_sae(b, use_error_term=True)
    assert list(m.acts_to_saes) == ["blocks.0.hook_resid_post", "blocks.3.hook_mlp_out"]
    assert m.acts_to_saes["blocks.3.hook_mlp_out"] is b
    names = m.hook_names()
    assert "blocks.0.hook_resid_post" not in names and "blocks.3.hook_mlp_out" not in names
    assert "blocks.3.hook_mlp_out.hook_sae_error" in names and "blocks.0.hook_resid_post.hook_sae_error" not in names
    i = names.index("blocks.0.hook_resid_post.hook_sae_input")
    assert names[i: i + 5] == ["blocks.0.hook_resid_post." + n for n in SAE_POINTS]
    # every run of the model: forward, run_with_cache, run_with_hooks
    logits = m(TOK)
    ref_a = Ref(wa)
    ref_b = Ref(wb, apply_b_dec_to_input=False)
    m2 = circuits.Model.from_pretrained(TINY_GPT2)

    def sae_a(act, hook):
        return ref_a.forward(act.reshape(-1, D)).reshape(act.shape).astype(np.float32)

    def sae_b_err(act, hook):  # error term, no hook: the point's own value
        return act

    want = m2.run_with_hooks(TOK, fwd_hooks=[("blocks.0.hook_resid_post", sae_a)])
    close(logits, want)
    _, cache = m.run_with_cache(TOK, names_filter="*.hook_sae_acts_post")
    assert sorted(cache.keys()) == ["blocks.0.hook_resid_post.hook_sae_acts_post",
                                    "blocks.3.hook_mlp_out.hook_sae_acts_post"]
    close(m.run_with_hooks(TOK, fwd_hooks=[]), logits, 1e-6)
    # generate runs through the SAEs too (KV cache: each step the new position)
    g = m.generate(TOK, max_new_tokens=4, do_sample=False, verbose=False)
    g2 = m2.generate(TOK, max_new_tokens=4, do_sample=False, verbose=False)
    assert g.shape == g2.shape
    gh = None
    with m2.hooks(fwd_hooks=[("blocks.0.hook_resid_post", sae_a)]):
        gh = m2.generate(TOK, max_new_tokens=4, do_sample=False, verbose=False)
    np.testing.assert_array_equal(g, gh)
    # add_sae at the same hook replaces (in place)
    pa2, wa2 = write_sae(tmp_path, "a2", hook="blocks.0.hook_resid_post", seed=7)
    a2 = SAE.load_from_disk(pa2)
    m.add_sae(a2)
    assert list(m.acts_to_saes.values()) == [a2, b]
    ref_a2 = Ref(wa2)
    close(m(TOK), m2.run_with_hooks(TOK, fwd_hooks=[(
        "blocks.0.hook_resid_post", lambda act, h: ref_a2.forward(act.reshape(-1, D)).reshape(act.shape).astype(np.float32))]))
    # reset one, then all
    m.reset_saes("blocks.0.hook_resid_post")
    assert list(m.acts_to_saes) == ["blocks.3.hook_mlp_out"] and "blocks.0.hook_resid_post" in m.hook_names()
    with pytest.warns(UserWarning, match="No SAE is attached"):
        m.reset_saes(["blocks.0.hook_resid_post"])
    m.reset_saes()
    assert m.acts_to_saes == {} and m.hook_names() == m2.hook_names()
    close(m(TOK), m2(TOK), 0)
    m2.close()


def test_saes_context_restores(tmp_path, fresh):
    m = fresh
    pa, _ = write_sae(tmp_path, "a", hook=HOOK, seed=1)
    pb, _ = write_sae(tmp_path, "b", hook=HOOK, seed=2)
    pc, _ = write_sae(tmp_path, "c", hook="blocks.2.hook_resid_pre", seed=3)
    a, b, c = (SAE.load_from_disk(p) for p in (pa, pb, pc))
    m.add_sae(a, use_error_term=True)
    with_a = m(TOK)
    with m.saes(saes=[b, c]):
        assert m.acts_to_saes == {HOOK: b, "blocks.2.hook_resid_pre": c}
        inside = m(TOK)
        assert HOOK + ".hook_sae_error" not in m.hook_names()  # b's own use_error_term (False)
    assert m.acts_to_saes == {HOOK: a}
    assert HOOK + ".hook_sae_error" in m.hook_names()  # a came back with its setting
    close(m(TOK), with_a, 0)
    assert not np.allclose(inside, with_a)
    # the same SAE twice, and an exception inside: still restored
    with pytest.raises(RuntimeError):
        with m.saes(saes=[b, b], use_error_term=False):
            raise RuntimeError("inside")
    assert m.acts_to_saes == {HOOK: a} and HOOK + ".hook_sae_error" in m.hook_names()
    # reset_saes_end=False keeps them
    m.run_with_saes(TOK, saes=[c], reset_saes_end=False)
    assert list(m.acts_to_saes) == [HOOK, "blocks.2.hook_resid_pre"]
    # a failed attachment inside saes(): the ones before it are removed again
    pw, _ = write_sae(tmp_path, "wide", hook="blocks.3.hook_resid_pre", d_in=D + 4)
    wide = SAE.load_from_disk(pw)
    m.reset_saes()
    with pytest.raises(circuits.ShapeError):
        m.run_with_saes(TOK, saes=[b, wide])
    assert m.acts_to_saes == {}


def test_python_hooks_on_sae_points(tmp_path, fresh):
    m = fresh
    path, p = write_sae(tmp_path, "s", hook=HOOK)
    sae = SAE.load_from_disk(path)
    m.add_sae(sae)
    seen = []
    hp = m.hook_dict[HOOK + ".hook_sae_acts_post"]
    assert hp.layer() == 1
    hp.ctx["k"] = 1

    def record(a, hook):
        seen.append((hook.name, a.shape, hook.ctx.get("k")))

    h = m.add_hook(lambda n: n.startswith(HOOK + ".hook_sae_"), record)
    m.add_hook("blocks.1.hook_resid_mid", record)
    m(TOK)
    assert [s[0] for s in seen] == [HOOK + "." + n for n in SAE_POINTS] + ["blocks.1.hook_resid_mid"]
    assert seen[2] == (HOOK + ".hook_sae_acts_post", (1, 8, 64), 1)
    # a hook at the replaced point is refused while the SAE is attached
    with pytest.raises(circuits.NotFoundError):
        m.add_hook(HOOK, record)
    # a new SAE cannot replace a point with hooks registered at it
    p2, _ = write_sae(tmp_path, "mid", hook="blocks.1.hook_resid_mid", seed=4)
    with pytest.raises(circuits.InvalidArgumentError, match="remove them first"):
        m.add_sae(SAE.load_from_disk(p2))
    # HookPoint objects (and their ctx) survive attaching another SAE elsewhere
    p3, _ = write_sae(tmp_path, "other", hook="blocks.3.hook_resid_pre", seed=5)
    m.add_sae(SAE.load_from_disk(p3))
    assert m.hook_dict[HOOK + ".hook_sae_acts_post"] is hp and hp.ctx["k"] == 1
    # detaching drops the hooks at the SAE's points, keeps the others; prepend still works after
    m.reset_saes(HOOK)
    seen.clear()
    m.add_hook("blocks.0.hook_resid_post", record, prepend=True)
    m(TOK)
    assert [s[0] for s in seen] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_mid"]
    h.remove()  # its points are gone: a no-op
    # set_use_* options move the SAEs to the new context
    m.set_use_attn_result(True)
    assert "blocks.3.hook_resid_pre.hook_sae_acts_post" in m.hook_names()
    assert "blocks.0.attn.hook_result" in m.hook_names()
    m.reset_hooks()


def test_run_with_hooks_with_saes_edits_and_returns(tmp_path, model):
    path, p = write_sae(tmp_path, "s", hook=HOOK)
    ref = Ref(p)
    sae = SAE.load_from_disk(path)
    x = plain_act(model, TOK, HOOK)
    pre, post, _ = ref.encode(x.reshape(-1, D))
    doubled = 2 * post

    def double(a, hook):
        return a * 2  # a returned replacement

    got = model.run_with_hooks_with_saes(TOK, saes=sae, fwd_hooks=[(HOOK + ".hook_sae_acts_post", double)])
    close(got, replaced_logits(model, TOK, HOOK, ref.recons(doubled).reshape(x.shape)))
    loss = model.run_with_saes(TOK, saes=[sae], return_type="loss")
    want = replaced_logits(model, TOK, HOOK, ref.recons(post).reshape(x.shape))
    close(loss, circuits.utils.lm_cross_entropy_loss(want, TOK), 1e-5)


def test_transcoder(tmp_path, model):
    tin, tout = "blocks.2.ln2.hook_normalized", "blocks.2.hook_mlp_out"
    path, p = write_sae(tmp_path, "tc", arch="transcoder", hook=tin, hook_out=tout, d_out=D)
    ref = Ref(p, "transcoder")
    tc = SAE.load_from_disk(path)
    assert tc.cfg.is_transcoder and tc.cfg.metadata.hook_name_out == tout and tc.cfg.architecture == "transcoder"
    assert tc.cfg.apply_b_dec_to_input is False
    xin = plain_act(model, TOK, tin)
    xout = plain_act(model, TOK, tout)
    pre, post, _ = ref.encode(xin.reshape(-1, D))
    out = ref.recons(post)
    close(tc.encode(xin), post.reshape(1, 8, 64))
    close(tc(xin), out.reshape(1, 8, D))
    logits, cache = model.run_with_cache_with_saes(TOK, saes=[tc])
    assert tin in cache and tout not in cache
    close(cache[tout + ".hook_sae_input"], xin)  # points named after the output hook
    close(cache[tout + ".hook_sae_acts_post"].reshape(-1, 64), post)
    close(cache[tout + ".hook_sae_output"].reshape(-1, D), out)
    close(logits, replaced_logits(model, TOK, tout, out.reshape(xout.shape)))
    logits, cache = model.run_with_cache_with_saes(TOK, saes=[tc], use_error_term=True)
    close(logits, model(TOK), 2e-5)
    close(cache[tout + ".hook_sae_error"].reshape(-1, D), xout.reshape(-1, D) - out)


def test_transcoder_input_must_come_first(tmp_path, fresh):
    """A transcoder reads its input in the same pass: one whose input a pass reaches after the point
    it writes is refused, and a start_at_layer run that skips its input fails instead of reading
    what an earlier run left in the capture buffer (the same input gave other logits each time)."""
    back, _ = write_sae(tmp_path, "back", arch="transcoder", hook="blocks.2.ln2.hook_normalized",
                        hook_out="blocks.1.hook_mlp_out", d_out=D)
    with pytest.raises(circuits.InvalidArgumentError, match="writes 'blocks.1.hook_mlp_out', which the forward pass "
                       "computes before"):
        fresh.add_sae(SAE.load_from_disk(back))
    assert fresh.acts_to_saes == {}
    cross, _ = write_sae(tmp_path, "cross", arch="transcoder", hook="blocks.0.hook_resid_mid",
                         hook_out="blocks.1.hook_mlp_out", d_out=D)
    tc = SAE.load_from_disk(cross)
    fresh.add_sae(tc)
    resid = fresh(TOK, stop_at_layer=1)
    full = fresh(TOK)
    with pytest.raises(circuits.InvalidArgumentError, match="reads 'blocks.0.hook_resid_mid', which this run does "
                       "not compute"):
        fresh(resid, start_at_layer=1)
    fresh(TOK2)
    close(fresh(TOK), full, 0)  # full runs are unaffected
    fresh.reset_saes()
    fresh(resid, start_at_layer=1)


def test_hook_z_sae_splice(tmp_path, model):
    path, p = write_sae(tmp_path, "z", hook="blocks.1.attn.hook_z", reshape="hook_z")
    sae = SAE.load_from_disk(path)
    ref = Ref(p)
    z = plain_act(model, TOK, "blocks.1.attn.hook_z")  # [1, 8, 4, 8]
    out = ref.forward(z.reshape(-1, D))
    logits, cache = model.run_with_cache_with_saes(TOK, saes=[sae])
    assert cache["blocks.1.attn.hook_z.hook_sae_input"].shape == (1, 8, D)
    assert cache["blocks.1.attn.hook_z.hook_sae_output"].shape == (1, 8, 4, 8)
    close(cache["blocks.1.attn.hook_z.hook_sae_output"], out.reshape(z.shape))
    close(logits, replaced_logits(model, TOK, "blocks.1.attn.hook_z", out.reshape(z.shape)))


def test_refusals(tmp_path, fresh):
    m = fresh
    pw, _ = write_sae(tmp_path, "wide", hook=HOOK, d_in=D + 1)
    with pytest.raises(circuits.ShapeError):
        m.add_sae(SAE.load_from_disk(pw))
    pn, _ = write_sae(tmp_path, "nowhere", hook="blocks.9.hook_resid_pre")
    with pytest.raises(circuits.NotFoundError):
        m.add_sae(SAE.load_from_disk(pn))
    pp, _ = write_sae(tmp_path, "pattern", hook="blocks.1.attn.hook_pattern")
    with pytest.raises(circuits.CircuitsError):
        m.add_sae(SAE.load_from_disk(pp))
    assert m.acts_to_saes == {}
    with pytest.raises(TypeError):
        m.add_sae("blocks.1.hook_resid_pre")
    path, _ = write_sae(tmp_path, "s", hook=HOOK)
    sae = SAE.load_from_disk(path)
    with pytest.raises(TypeError):
        m.add_sae(sae, use_error_term="yes")
    with pytest.raises(NotImplementedError):
        m.run_with_saes(TOK, saes=[sae], exclude_special_tokens=True)
    # from inside a hook of the same model
    errs = []

    def inner(a, hook):
        for f in (lambda: m.add_sae(sae), lambda: m.reset_saes(), lambda: m.run_with_saes(TOK, saes=[sae])):
            try:
                f()
            except circuits.InvalidArgumentError as e:
                errs.append(str(e))  # not e: its traceback would hold the hook's array

    m.run_with_hooks(TOK, fwd_hooks=[("blocks.0.hook_resid_post", inner)])
    assert len(errs) == 3
    # gradient runs refuse a model with SAEs attached
    m.add_sae(sae)
    with pytest.raises(circuits.UnsupportedError):
        m.backward(TOK)
    # a closed SAE cannot be attached; an attached one that is closed keeps working
    logits = m(TOK)
    sae.close()
    close(m(TOK), logits, 0)
    with pytest.raises(circuits.ClosedError):
        m.add_sae(sae)
    m.close()
    with pytest.raises(circuits.ClosedError):
        m.add_sae(sae)
    with pytest.raises(circuits.ClosedError):
        m.acts_to_saes


def test_attached_sae_outlives_its_object(tmp_path):
    """The model keeps the library's SAE while attached: dropping every Python reference to
    the SAE object changes nothing (the misuse probes check the same under ASan)."""
    m = circuits.Model.from_pretrained(TINY_GPT2)
    path, p = write_sae(tmp_path, "s", hook=HOOK)
    sae = SAE.load_from_disk(path)
    m.add_sae(sae)
    logits = m(TOK)
    del sae
    gc.collect()
    junk = [np.full(4096, 7.0, np.float32) for _ in range(64)]
    del junk
    close(m(TOK), logits, 0)
    m.close()


# ---------------------------------------------------------------------------------------------
# Against SAELens (tests/reference/saes, written by SAELens's HookedSAETransformer)
# ---------------------------------------------------------------------------------------------

SAE_REF = REPO / "tests" / "reference" / "saes"


def test_library_list_agrees(tmp_path, fresh):
    """circuits_context_sae_count / sae_at (the library's list) against acts_to_saes (the
    binding's), through attach, replace, detach and a context change."""
    from circuits import _native as N
    import ctypes

    m = fresh

    def library():
        out = []
        for i in range(N.lib.circuits_context_sae_count(m._ctx)):
            p, e = ctypes.c_void_p(), ctypes.c_int32()
            N.check(N.lib.circuits_context_sae_at(m._ctx, i, ctypes.byref(p), ctypes.byref(e)))
            out.append((p.value, e.value))
        return out

    def binding():
        return [(a.handle.ptr, int(a.use_error_term)) for a in m._sae_attached]

    saes = [SAE.load_from_disk(write_sae(tmp_path, f"s{i}", hook=h, seed=i)[0])
            for i, h in enumerate([HOOK, "blocks.3.hook_resid_post", HOOK])]
    assert library() == [] and N.lib.circuits_context_sae_count(None) == 0
    m.add_sae(saes[0], use_error_term=True)
    m.add_sae(saes[1])
    assert library() == binding() and [e for _, e in library()] == [1, 0]
    m.add_sae(saes[2])  # replaces saes[0] in place
    assert library() == binding() and library()[0][0] == saes[2]._h.ptr
    m.set_use_split_qkv_input(True)
    assert library() == binding()
    m.reset_saes(HOOK)
    assert library() == binding() and len(library()) == 1
    with pytest.raises(circuits.RangeError):
        N.check(N.lib.circuits_context_sae_at(m._ctx, 1, ctypes.byref(ctypes.c_void_p()), None))


def test_context_change_that_removes_the_point_is_refused(tmp_path, fresh):
    """An SAE at an optional point (hook_mlp_in): turning the point off is refused and changes
    nothing; the SAE keeps working."""
    m = fresh
    m.set_use_hook_mlp_in(True)
    path, p = write_sae(tmp_path, "mlp_in", hook="blocks.2.hook_mlp_in")
    sae = SAE.load_from_disk(path)
    m.add_sae(sae)
    before = m(TOK)
    with pytest.raises(circuits.NotFoundError):
        m.set_use_hook_mlp_in(False)
    assert m.cfg.use_hook_mlp_in and m.acts_to_saes == {"blocks.2.hook_mlp_in": sae}
    assert "blocks.2.hook_mlp_in.hook_sae_acts_post" in m.hook_names()
    close(m(TOK), before, 0)
    m.reset_saes()
    m.set_use_hook_mlp_in(False)
    assert "blocks.2.hook_mlp_in" not in m.hook_names()
REF_CASES = sorted(p.name for p in SAE_REF.iterdir() if (p / "manifest.json").is_file()) if SAE_REF.is_dir() else []
REF_TOL = 2e-5  # of max(max |reference|, 1e-3), as tests/test_sae_reference.c (the issue asks 1e-4)


def test_saelens_references_exist():
    """The references are committed (tests/reference/generate_saes.py): their absence fails."""
    assert set(REF_CASES) >= {"hf_tiny_random_gpt2", "hf_llama_gqa", "hf_gemma2"}, REF_CASES


def ref_close(got, want, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1e-3)
    err = float(np.abs(got - want).max()) if want.size else 0.0
    assert err <= REF_TOL * scale, f"{what}: max abs error {err:.3g} > {REF_TOL * scale:.3g}"
    return err / scale


class RefCase:
    def __init__(self, name):
        self.name = name
        self.dir = SAE_REF / name
        self.manifest = json.loads((self.dir / "manifest.json").read_text())
        self.expected = safetensors_np.load(str(self.dir / "expected.safetensors"))

    def model(self):
        return circuits.Model.from_pretrained(REPO / "tests" / "reference" / "cases" / self.name)

    def sae(self, name):
        return SAE.load_from_disk(self.dir / self.manifest["saes"][name]["dir"])


@pytest.fixture(scope="module", params=REF_CASES)
def ref_case(request):
    return RefCase(request.param)


def test_saelens_encode_decode_and_views(ref_case):
    c, e = ref_case, ref_case.expected
    worst = 0.0
    for name, info in c.manifest["saes"].items():
        sae = c.sae(name)
        cfg = sae.cfg
        assert cfg.architecture == info["architecture"], name
        assert (cfg.d_in, cfg.d_sae, cfg.d_out) == (info["d_in"], info["d_sae"], info["d_out"]), name
        assert cfg.metadata.hook_name == info["hook_name"], name
        assert (cfg.metadata.hook_name_out or cfg.metadata.hook_name) == info["hook_name_out"], name
        assert cfg.apply_b_dec_to_input == info["apply_b_dec_to_input"], name
        assert cfg.normalize_activations == info["normalize_activations"], name
        assert cfg.reshape_activations == info["reshape_activations"], name
        assert cfg.k == info["k"], name
        assert cfg.has_sparsity == info["sparsity_file"], name
        # the views are the stored weights (F16 / BF16 widened)
        stored = safetensors_np.load(str(c.dir / info["dir"] / "sae_weights.safetensors"))
        views = sae.state_dict()
        assert set(views) <= set(stored), (name, set(views) - set(stored))
        for w, v in views.items():
            np.testing.assert_array_equal(v, stored[w].astype(np.float32), err_msg=f"{name}.{w}")
            assert not v.flags.writeable
        if f"{name}:x" not in e:
            assert name.startswith("multi_"), name  # only in the runs with two SAEs
            continue
        x = e[f"{name}:x"]
        post, pre = sae.encode_with_hidden_pre(x)
        worst = max(worst, ref_close(pre, e[f"{name}:acts_pre"], f"{name} acts_pre"))
        worst = max(worst, ref_close(post, e[f"{name}:acts_post"], f"{name} acts_post"))
        skip = cfg.has_skip
        decoded = sae.decode(e[f"{name}:acts_post"], x)
        # libcircuits's decode of a skip transcoder includes x W_skip^T: SAELens's forward
        worst = max(worst, ref_close(decoded.reshape(x.shape[0], -1), e[f"{name}:forward" if skip else f"{name}:decode"],
                                     f"{name} decode"))
        worst = max(worst, ref_close(sae(x).reshape(x.shape[0], -1), e[f"{name}:forward"], f"{name} forward"))
    print(f"{c.name}: worst encode/decode error {worst:.2g} of scale")


def expected_keys(manifest, run):
    keys = []
    for k in manifest["clean_cache_keys"]:
        if k in manifest["hookedsae_only_keys"]:
            continue
        if k in run["replaced"]:
            keys += [s for s in run["sae_keys"] if s.startswith(k + ".hook_sae_")]
        else:
            keys.append(k)
    return keys


def test_saelens_runs(ref_case):
    """Every recorded HookedSAETransformer run replayed with run_with_cache_with_saes: every
    hook_sae_* value, the logits and the cache's keys in order, error term off and on, latent
    edits, two SAEs at once, transcoders (skip transcoders against the runs with W_skip)."""
    c, e, man = ref_case, ref_case.expected, ref_case.manifest
    model = c.model()
    saes = {name: c.sae(name) for name in man["saes"]}
    tokens = e["tokens"].astype(np.int64)
    C = man["logit_columns"]
    ref_close(model(tokens)[..., :C], e["logits"], "logits without SAEs")
    worst = 0.0
    n_runs = 0
    for run_name, run in man["runs"].items():
        skip_tc = any(saes[s].cfg.has_skip for s in run["saes"])
        if skip_tc and ":skip_err" not in run_name:
            continue  # SAELens's splice leaves W_skip out; libcircuits's includes it: the :skip_errN runs
        hooks = []
        if run["edit"]:
            latent = run["edit"]["latent"]

            def edit(acts, hook, latent=latent):
                acts[..., latent] = 0.0

            hooks.append((run["edit"]["hook"], edit))
        logits, cache = model.run_with_cache_with_saes(tokens, saes=[saes[s] for s in run["saes"]],
                                                       use_error_term=run["use_error_term"], fwd_hooks=hooks)
        assert model.acts_to_saes == {}
        assert list(cache.keys()) == expected_keys(man, run), run_name
        worst = max(worst, ref_close(logits[..., :C], e[f"{run_name}:logits"], f"{run_name} logits"))
        for key in e:
            if key.startswith(run_name + ":") and ".hook_sae_" in key:
                point = key[len(run_name) + 1:]
                worst = max(worst, ref_close(cache[point], e[key], key))
        n_runs += 1
    assert n_runs >= len(man["saes"]) * 2
    model.close()
    print(f"{c.name}: {n_runs} runs, worst error {worst:.2g} of scale")


def test_saelens_run_with_saes_and_hooks(ref_case):
    """The same references through run_with_saes (logits) and an attached SAE with a hook
    registered at its point (the edit runs)."""
    c, e, man = ref_case, ref_case.expected, ref_case.manifest
    model = c.model()
    tokens = e["tokens"].astype(np.int64)
    C = man["logit_columns"]
    for run_name, run in man["runs"].items():
        if not run["edit"] or len(run["saes"]) != 1:
            continue
        sae = c.sae(run["saes"][0])
        model.add_sae(sae, use_error_term=run["use_error_term"])
        latent = run["edit"]["latent"]
        h = model.add_hook(run["edit"]["hook"], lambda a, hook: a.__setitem__((..., latent), 0.0))
        ref_close(model(tokens)[..., :C], e[f"{run_name}:logits"], f"{run_name} logits (add_sae + add_hook)")
        h.remove()
        model.reset_saes()
        plain = run_name.replace(":edit", ":err")
        ref_close(model.run_with_saes(tokens, saes=[sae], use_error_term=run["use_error_term"])[..., :C],
                  e[f"{plain}:logits"], f"{plain} logits (run_with_saes)")
    model.close()
