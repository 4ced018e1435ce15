"""circuits.steering: steering vectors, llama.cpp control vectors, contrastive vectors
(docs/steering.md). The interop proof (issue 17 section 4): a file circuits writes is read by the
``gguf`` package (llama.cpp's Python GGUF library) with llama.cpp's layout, and the files the
gguf package wrote in that layout (tests/reference/control_vectors) read as written. ``gguf``
is a requirement of this suite (run_tests.sh installs it): nothing here skips."""

from __future__ import annotations

import json

import gguf  # noqa: F401 -- required, never skipped (bindings/python/run_tests.sh installs it)
import numpy as np
import pytest

import circuits
from circuits import steering
from conftest import REPO, TINY_GPT2

CV_DIR = REPO / "tests" / "reference" / "control_vectors"
TOKENS = np.array([[5, 17, 900, 3, 42, 7], [11, 12, 13, 14, 15, 16]], dtype=np.int64)


@pytest.fixture(scope="module")
def model():
    m = circuits.Model.from_pretrained(str(TINY_GPT2))
    yield m
    m.close()


def _vec(n, seed):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _by_hand(model, hook, sv, positions=None):
    """Logits of a plain Python hook adding sv (already scaled) at positions (None: all)."""

    def add(act, hook):
        if positions is None:
            act[...] += sv
        else:
            act[:, positions] += sv

    return model.run_with_hooks(TOKENS, fwd_hooks=[(hook, add)])


def test_add_steering_equals_a_hook(model):
    plain = model(TOKENS)
    v = _vec(model.cfg.d_model, 1)
    h = model.add_steering("blocks.2.hook_resid_post", v, scale=2.5)
    got = model(TOKENS)
    h.remove()
    assert np.array_equal(model(TOKENS), plain), "removal restores the logits bit for bit"
    want = _by_hand(model, "blocks.2.hook_resid_post", np.float32(2.5) * v)
    assert np.array_equal(got, want)
    assert np.abs(got - plain).max() > 1e-3


def test_positions_and_patterns(model):
    v = _vec(model.cfg.d_model, 2)
    h = model.add_steering("blocks.*.hook_mlp_out", v, scale=-1.0, positions=[1, -1])
    got = model(TOKENS)
    h.remove()
    sv = np.float32(-1.0) * v
    want = _by_hand(model, lambda n: n.endswith("hook_mlp_out"), sv, positions=[1, TOKENS.shape[1] - 1])
    assert np.array_equal(got, want)
    # a 4-axis point: every head steered by a d_head vector
    q = _vec(model.cfg.d_head, 3)
    with model.steering("q1", q, scale=2.0, positions=3):
        got = model(TOKENS)
    want = _by_hand(model, "blocks.1.attn.hook_q", np.float32(2.0) * q, positions=[3])
    assert np.array_equal(got, want)


def test_reset_hooks_and_new_context_keep_semantics(model):
    plain = model(TOKENS)
    v = _vec(model.cfg.d_model, 4)
    model.add_steering("resid_pre1", v)
    steered = model(TOKENS)
    model.set_use_attn_result(True)  # a new C context: the steering is registered again
    try:  # (per-head results sum in another order: equal to float rounding)
        again = model(TOKENS)
        assert np.abs(again - steered).max() < 1e-5 and np.abs(again - plain).max() > 1e-3
    finally:
        model.set_use_attn_result(False)
    model.reset_hooks()
    assert np.array_equal(model(TOKENS), plain)


def test_generation_kv_cache_and_without(model):
    v = _vec(model.cfg.d_model, 5)
    prompt = TOKENS[:, :3]
    kw = dict(max_new_tokens=6, do_sample=False, stop_at_eos=False, return_type="tokens", verbose=False)
    plain = model.generate(prompt, **kw)
    with model.steering("blocks.0.hook_resid_post", v, scale=20.0, positions=[1, 3, 5]):
        with_kv = model.generate(prompt, use_past_kv_cache=True, **kw)
        without = model.generate(prompt, use_past_kv_cache=False, **kw)
    assert np.array_equal(with_kv, without)
    assert not np.array_equal(with_kv, plain)


def test_control_vector_written_is_read_by_gguf(model, tmp_path):
    L, D = model.cfg.n_layers, model.cfg.d_model
    d = np.zeros((L, D), np.float32)
    d[1:] = np.random.default_rng(6).standard_normal((L - 1, D))
    path = tmp_path / "ours.gguf"
    steering.save_control_vector(path, d, model_hint="gpt2")
    r = gguf.GGUFReader(str(path))
    f = r.fields
    assert bytes(f["general.architecture"].parts[-1]).decode() == "controlvector"
    assert bytes(f["controlvector.model_hint"].parts[-1]).decode() == "gpt2"
    assert f["controlvector.layer_count"].types == [gguf.GGUFValueType.INT32]
    assert int(f["controlvector.layer_count"].parts[-1][0]) == L - 1
    names = [t.name for t in r.tensors]
    assert names == [f"direction.{n}" for n in range(1, L)]
    for t in r.tensors:
        n = int(t.name.split(".")[1])
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == [D]
        assert np.array_equal(np.asarray(t.data), d[n])
    assert np.array_equal(steering.load_control_vector(path, model=model), d)


def test_gguf_package_files_read_as_written():
    exp = json.loads((CV_DIR / "expected.json").read_text())
    for name, e in exp["files"].items():
        got = steering.load_control_vector(CV_DIR / name, e["n_layers"], e["d_model"])
        want = np.zeros((e["n_layers"], e["d_model"]), np.float32)
        for n, vals in e["directions"].items():
            want[int(n)] = np.array(vals, np.float32)
        assert np.array_equal(got, want), name
    with pytest.raises(circuits.DtypeError, match="control vectors are F32"):
        steering.load_control_vector(CV_DIR / "f16.gguf", 5, 16)


def test_add_control_vector(model, tmp_path):
    L, D = model.cfg.n_layers, model.cfg.d_model
    d = np.zeros((L, D), np.float32)
    d[2] = _vec(D, 7)
    d[4] = _vec(D, 8)
    path = tmp_path / "cv.gguf"
    steering.save_control_vector(path, d)
    h = model.add_control_vector(path, scale=0.5)
    got = model(TOKENS)
    h.remove()
    h = model.add_control_vector(d, scale=0.5)
    got2 = model(TOKENS)
    h.remove()
    sv = np.float32(0.5) * d

    def add(act, hook):
        act[...] += sv[hook.layer()]

    want = model.run_with_hooks(TOKENS, fwd_hooks=[("blocks.2.hook_resid_post", add), ("blocks.4.hook_resid_post", add)])
    assert np.array_equal(got, want)
    assert np.array_equal(got2, want)


def test_contrastive_vector_against_cache(model):
    rng = np.random.default_rng(9)
    pos = rng.integers(0, model.cfg.d_vocab, (3, 5))
    neg = rng.integers(0, model.cfg.d_vocab, (3, 5))
    pm = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], np.int32)  # left padding
    nm = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], np.int32)  # right padding
    for reduce in ("last", "mean"):
        got = model.contrastive_vector(pos, neg, "blocks.*.hook_resid_post", reduce=reduce, positive_mask=pm,
                                       negative_mask=nm)
        assert got.shape == (model.cfg.n_layers, model.cfg.d_model)
        _, pc = model.run_with_cache(pos, attention_mask=pm)
        _, nc = model.run_with_cache(neg, attention_mask=nm)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_resid_post"

            def red(a, m):
                if reduce == "last":
                    last = m.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)
                    return a[np.arange(a.shape[0]), last].astype(np.float64)
                return (a * m[..., None]).sum(1, dtype=np.float64) / m.sum(1, keepdims=True)

            want = (red(pc[name], pm) - red(nc[name], nm)).mean(0)
            assert np.abs(got[layer] - want).max() < 1e-5, (reduce, layer)
    one = model.contrastive_vector(pos, neg, "resid_post3")
    assert one.shape == (model.cfg.d_model,)


def test_contrastive_vector_from_text(model):
    got = model.contrastive_vector(["I love this", "great day"], ["I hate this", "awful"], "resid_post2",
                                   reduce="mean")
    assert got.shape == (model.cfg.d_model,) and np.isfinite(got).all() and np.abs(got).max() > 0


def test_refusals(model, tmp_path):
    v = _vec(model.cfg.d_model, 10)
    with pytest.raises(circuits.ShapeError, match="has a last axis of"):
        model.add_steering("blocks.0.mlp.hook_post", v)
    with pytest.raises(circuits.ShapeError):
        model.add_steering("resid_pre0", np.zeros((2, 3), np.float32))
    with pytest.raises(circuits.NotFoundError):
        model.add_steering("blocks.0.hook_nothing", v)
    with pytest.raises(circuits.RangeError, match="is outside"):
        model.add_steering("resid_pre0", v, positions=[10 ** 6])
    with pytest.raises(TypeError):
        model.add_steering("resid_pre0", v, positions=[0.5])
    with pytest.raises(ValueError):
        model.add_steering("resid_pre0", v, positions=[])
    with pytest.raises(circuits.InvalidArgumentError, match="is not finite"):
        model.add_steering("resid_pre0", v, scale=float("nan"))
    with pytest.raises(circuits.ShapeError):
        model.add_control_vector(np.zeros((2, model.cfg.d_model), np.float32))
    with pytest.raises(circuits.RangeError, match="directions\\[0\\] is not zero"):
        steering.save_control_vector(tmp_path / "x.gguf", np.ones((3, 4), np.float32))
    with pytest.raises(circuits.CircuitsIOError):
        steering.load_control_vector(tmp_path / "absent.gguf", 5, 32)
    with pytest.raises(ValueError):
        model.contrastive_vector(TOKENS, TOKENS, "resid_post0", reduce="median")
    with pytest.raises(circuits.ShapeError):
        model.contrastive_vector(TOKENS, TOKENS[:, :3], "resid_post0")
    with pytest.raises(TypeError):
        load = steering.load_control_vector
        load(CV_DIR / "full.gguf")
    assert np.array_equal(model(TOKENS), model.run_with_hooks(TOKENS)), "refusals registered nothing"
