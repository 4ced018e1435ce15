"""The residual-stream methods of ActivationCache (circuits/resid.py) against TransformerLens 3.9
(tests/reference/toolkit/resid/, written by tests/reference/generate_resid.py): every recorded
call made with TransformerLens's own arguments (pos_slice as an int / tuple / list, neuron_slice,
batch_slice, tokens as ints or arrays), the same shapes, labels and values
(max |diff| / max |reference| <= 1e-5)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import safetensors_np
from conftest import CASES_DIR, REPO

import circuits
from circuits.errors import NotFoundError, RangeError, ShapeError

TOOLKIT = REPO / "tests" / "reference" / "toolkit" / "resid"
INDEX = json.loads((TOOLKIT / "resid.json").read_text())
TOL_REL = 1e-5


def _slice(j):
    if j is None:
        return None
    if "int" in j:
        return j["int"]
    if "slice" in j:
        a = list(j["slice"])
        while a and a[-1] is None:
            a.pop()
        return tuple(a)
    return list(j["list"])


def _tok(j):
    if isinstance(j, dict):
        return np.array(j["tensor"])
    return j


_models = {}


def _setup(name):
    if name not in _models:
        info = INDEX["cases"][name]
        path = CASES_DIR / name
        load = circuits.Model.from_pretrained if info["processed"] else circuits.Model.from_pretrained_no_processing
        model = load(path, use_attn_result=info["use_attn_result"])
        ref = safetensors_np.load(str(TOOLKIT / f"{name}.safetensors"))
        _, cache = model.run_with_cache(ref["tokens"])
        _models[name] = (model, cache, ref)
    return _models[name]


def _check(got, want, what):
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, TransformerLens {want.shape}"
    scale = float(np.abs(want).max()) if want.size else 0.0
    d = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    rel = d / scale if scale else d
    assert rel <= TOL_REL, f"{what}: max |diff| {d:.3g} = {rel:.3g} of max |reference|"
    return rel


def _call(model, cache, ref, call):
    args = dict(call["args"])
    method = call["method"]
    for k in ("pos_slice", "neuron_slice", "batch_slice"):
        if k in args:
            args[k] = _slice(args[k])
    if method == "tokens_to_residual_directions":
        return model.tokens_to_residual_directions(_tok(args["tokens"]))
    if method == "apply_ln_to_stack":
        return cache.apply_ln_to_stack(ref[call["input"]], **args)
    if method == "logit_attrs":
        stack = ref[args.pop("stack")]
        return cache.logit_attrs(stack, _tok(args.pop("tokens")), incorrect_tokens=_tok(args.pop("incorrect_tokens")),
                                 **args)
    if method == "compute_head_results":
        cache.compute_head_results()
        return cache[f"blocks.{args['layer']}.attn.hook_result"]
    if method == "logit_lens":
        return cache.logit_lens(return_labels=True, **args)
    if method == "direct_logit_attribution":
        kinds = {"decompose_resid": "decompose", "get_full_resid_decomposition": "full", "stack_head_results": "heads"}
        kind = kinds[args.pop("stack_method")]
        return cache.direct_logit_attribution(_tok(args.pop("tokens")), _tok(args.pop("incorrect_tokens")), kind=kind,
                                              return_labels=True, **args)
    return getattr(cache, method)(**args)


CALLS = [(name, c) for name, info in INDEX["cases"].items() for c in info["calls"]]


@pytest.mark.parametrize("name,call", CALLS, ids=[f"{n}-{c['key']}" for n, c in CALLS])
def test_against_transformerlens(name, call):
    model, cache, ref = _setup(name)
    out = _call(model, cache, ref, call)
    labels = None
    if isinstance(out, tuple):
        out, labels = out
    _check(out, ref[call["key"]], call["key"])
    if "labels" in call:
        assert labels == call["labels"]


def test_max_difference_summary():
    """The worst difference over every call (printed: pytest -s)."""
    worst = 0.0
    for name, call in CALLS:
        model, cache, ref = _setup(name)
        if call["method"] == "compute_head_results":
            continue
        out = _call(model, cache, ref, call)
        out = out[0] if isinstance(out, tuple) else out
        want = ref[call["key"]]
        scale = float(np.abs(want).max()) if want.size else 0.0
        if scale:
            worst = max(worst, float(np.abs(np.asarray(out, dtype=np.float64) - want).max()) / scale)
    print(f"residual-stream toolkit vs TransformerLens: max |diff| / max |reference| = {worst:.3g}")
    assert worst <= TOL_REL


def test_remove_batch_dim_and_slices():
    model, _, ref = _setup("tl_gelu_new_attn_result")
    tok = ref["tokens"][:1]
    _, full = model.run_with_cache(tok)
    _, nob = model.run_with_cache(tok, remove_batch_dim=True)
    a = full.decompose_resid(pos_slice=-1, apply_ln=True)
    b = nob.decompose_resid(pos_slice=-1, apply_ln=True)
    assert a.shape[1:] == (1, model.cfg.d_model) and b.shape[1:] == (model.cfg.d_model,)
    np.testing.assert_array_equal(a[:, 0], b)
    # a slice object, a tuple and the list of the same positions agree
    s1 = full.accumulated_resid(pos_slice=slice(1, 5, 2))
    s2 = full.accumulated_resid(pos_slice=(1, 5, 2))
    s3 = full.accumulated_resid(pos_slice=[1, 3])
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(s1, s3)
    # logit_attrs of a stack without a batch dim
    la = nob.logit_attrs(b, 3, has_batch_dim=False, pos_slice=-1)
    np.testing.assert_allclose(la, full.logit_attrs(a, 3, pos_slice=-1)[:, 0], rtol=1e-6, atol=1e-6)
    # the decomposition sums to the residual stream it decomposes
    dec = full.decompose_resid(layer=1, pos_slice=-1)
    np.testing.assert_allclose(dec.sum(0), full["blocks.1.hook_resid_pre"][:, -1], rtol=1e-5, atol=1e-5)
    # apply_ln_to_stack does not change its input
    st = full.accumulated_resid()
    before = st.copy()
    full.apply_ln_to_stack(st, layer=1)
    np.testing.assert_array_equal(st, before)
    # project_output_onto: the stack times the direction
    d = model.tokens_to_residual_directions(4)
    p = full.get_full_resid_decomposition(pos_slice=-1, project_output_onto=d)
    np.testing.assert_allclose(p, full.get_full_resid_decomposition(pos_slice=-1) @ d, rtol=1e-6, atol=1e-6)


def test_errors():
    model, cache, _ = _setup("tl_gated_swiglu_rms")
    with pytest.raises(RangeError):
        cache.accumulated_resid(pos_slice=[99])
    with pytest.raises(RangeError):
        cache.decompose_resid(layer=7)
    with pytest.raises(ValueError):
        cache.decompose_resid(mode="heads")
    with pytest.raises(RangeError):
        model.tokens_to_residual_directions(10**6)
    with pytest.raises(ShapeError):
        cache.logit_attrs(cache.accumulated_resid(), 3, pos_slice=-1)
    _, partial = model.run_with_cache(np.array([[1, 2, 3]]), names_filter="blocks.*.hook_resid_pre")
    with pytest.raises(NotFoundError, match="hook_resid_post"):
        partial.accumulated_resid()
    with pytest.raises(TypeError):
        circuits.ActivationCache({}, model).accumulated_resid()


def test_string_tokens():
    """Tokens given as strings go through to_single_token, as in TransformerLens."""
    model = circuits.Model.from_pretrained(REPO / "examples" / "models" / "tiny-random-gpt2")
    if model.tokenizer is None:
        pytest.skip("the bundled model has no tokenizer")
    _, cache = model.run_with_cache(np.array([[1, 5, 9, 300, 42]]))
    stack = cache.decompose_resid(pos_slice=-1)
    the, a = model.to_single_token(" the"), model.to_single_token(" a")
    np.testing.assert_array_equal(cache.logit_attrs(stack, " the", " a", pos_slice=-1),
                                  cache.logit_attrs(stack, the, a, pos_slice=-1))
    np.testing.assert_array_equal(model.tokens_to_residual_directions(" the"), model.W_U[:, the])
    np.testing.assert_array_equal(cache.direct_logit_attribution(" the", " a", pos_slice=-1),
                                  cache.logit_attrs(stack, the, a, pos_slice=-1))


def test_apply_ln_to_a_batch_by_d_model_stack():
    """The Exploratory Analysis Demo scales cache["resid_post", -1][:, -1, :], a [batch, d_model]
    stack: TransformerLens broadcasts it against the scale [batch, 1], row b by scale b."""
    model = circuits.HookedTransformer.from_pretrained(REPO / "examples" / "models" / "tiny-random-gpt2")
    tok = np.array([[1, 5, 9, 300, 42], [7, 7, 100, 3, 2], [8, 9, 10, 11, 12]])
    _, cache = model.run_with_cache(tok)
    final = cache["resid_post", -1][:, -1, :]
    got = cache.apply_ln_to_stack(final, layer=-1, pos_slice=-1)
    scale = cache["ln_final.hook_scale"][:, -1]
    want = (final - final.mean(-1, keepdims=True)) / scale
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got, cache.apply_ln_to_stack(final[None], layer=-1, pos_slice=-1)[0])


def test_get_neuron_results_matches_stack_neuron_results():
    """get_neuron_results (NumPy: hook_post * W_out) against the C stack_neuron_results rows of
    the same layer; TransformerLens's shapes for int / list / tuple slices and projections."""
    model, cache, ref = _setup("tl_gelu_new_attn_result")
    d_mlp, L = model.cfg.d_mlp, 1
    got = cache.get_neuron_results(L)                                   # [batch, pos, d_mlp, d_model]
    stack = cache.stack_neuron_results(L + 1)                           # [L+1 layers * d_mlp, batch, pos, d_model]
    np.testing.assert_allclose(np.moveaxis(got, 2, 0), stack[L * d_mlp:(L + 1) * d_mlp], atol=1e-5, rtol=1e-5)
    B, T = cache["blocks.0.mlp.hook_post"].shape[:2]
    assert cache.get_neuron_results(L, neuron_slice=3).shape == (B, T, model.cfg.d_model)
    assert cache.get_neuron_results(L, neuron_slice=[1, 5], pos_slice=-1).shape == (B, 2, model.cfg.d_model)
    assert cache.get_neuron_results(L, pos_slice=(1, 3)).shape == (B, 2, d_mlp, model.cfg.d_model)
    p = np.ones((model.cfg.d_model, 2), np.float32)
    np.testing.assert_allclose(cache.get_neuron_results(L, project_output_onto=p), got @ p, atol=1e-4, rtol=1e-4)
    assert cache.get_neuron_results(L, project_output_onto=p[:, 0]).shape == (B, T, d_mlp)
    cache.toggle_autodiff(False)  # a no-op, for TransformerLens code
