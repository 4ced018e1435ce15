"""Gradients from Python (docs/gradients.md "Python"): Model.backward, backward hooks,
run_with_hooks(bwd_hooks=...), run_with_cache(incl_bwd=True), the gradient metrics, edit_grad,
weight and input gradients, and what is refused. The numbers are proven against PyTorch autograd
elsewhere (tests/test_grad_reference.c); here a few points are checked against central differences
of plain model runs (float32, eps 1e-2, loose tolerance), and the entry points against each other."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import circuits
from circuits import _native as N
from circuits.grad import HookLinear
from circuits.patching import Logit, LogitDiff, TokenLoss

TOK = np.array([[1, 5, 9, 300, 42, 7, 7, 100]])
TOK2 = np.array([[1, 5, 9, 300, 42, 7, 7, 100], [3, 8, 2, 999, 11, 6, 40, 4]])
METRIC = LogitDiff([1], [2])
EPS = 1e-2


def ld(logits, a=1, w=2):
    return float(logits[0, -1, a]) - float(logits[0, -1, w])


def fd_at_hook(model, tokens, name, index, eps=EPS, metric=ld, fwd_hooks=()):
    """Central difference of metric(logits) in one element of hook point `name`'s activation."""
    def bump(d):
        def hook(act, hook):
            act[index] += d
        return metric(model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks) + [(name, hook)]))
    return (bump(eps) - bump(-eps)) / (2 * eps)


def close(fd, g, scale):
    """fd agrees with g to 0.2% of the gradient's scale (float32 central differences reach ~1e-4)."""
    return abs(fd - g) <= 2e-3 * scale + 1e-5


def points(grad, rng):
    """The element of largest |gradient| and a random element where the gradient is not 0."""
    nz = np.argwhere(grad != 0)
    assert len(nz), "an all-zero gradient"
    return [np.unravel_index(int(np.abs(grad).argmax()), grad.shape), tuple(nz[rng.integers(len(nz))])]


# -- outputs and names ----------------------------------------------------------------------


def test_backward_outputs(tiny):
    g = tiny.backward(TOK, weight_grads=True, input_grad=True)
    assert isinstance(g, circuits.grad.Gradients)
    assert np.isclose(g.value, tiny(TOK, return_type="loss"), rtol=1e-5, atol=1e-6)  # default metric: the loss
    np.testing.assert_allclose(g.logits, tiny(TOK), rtol=1e-5, atol=1e-5)
    names = tiny.hook_names()
    acts = [k for k in g.cache if not k.endswith("_grad")]
    assert acts == [n for n in names if n in acts] and set(acts) <= set(names)
    assert acts == names  # every point, in firing order
    for n in acts:
        assert g.cache[n + "_grad"].shape == g.cache[n].shape, n
        assert g.cache[n + "_grad"].dtype == np.float32
    assert g.cache["resid_pre1_grad"].shape == (1, 8, 32) and g.cache["pattern1_grad"].shape == (1, 4, 8, 8)
    assert set(g.weight_grads) == set(tiny.weight_names())
    for name, w in g.weight_grads.items():
        assert w.shape == tiny.get_weight(name).shape, name
    assert g.input_grad.shape == (1, 8, 32)
    # the gradient reaching the embeddings' sum is the gradient at blocks.0.hook_resid_pre
    np.testing.assert_allclose(g.input_grad, g.cache["blocks.0.hook_resid_pre_grad"], rtol=1e-5, atol=1e-7)


def test_incl_bwd_cache_order_is_transformerlens(tiny):
    """TransformerLens's run_with_cache(incl_bwd=True) fills its dict as hooks fire: every activation
    in firing order, then every gradient as the backward pass reaches it (reverse firing order). The
    binding listed each gradient right after its activation, so code that walks the cache's items
    (e.g. stacking the "_grad" entries) saw another order than under TransformerLens."""
    names = tiny.hook_names()
    _, cache = tiny.run_with_cache(TOK, incl_bwd=True, return_type="loss")
    assert list(cache) == names + [n + "_grad" for n in reversed(names)]
    _, cache = tiny.run_with_cache(TOK, incl_bwd=True, return_type="loss", return_cache_object=False,
                                   names_filter=lambda n: n.endswith("resid_pre"))
    pre = [f"blocks.{l}.hook_resid_pre" for l in range(5)]
    assert list(cache) == pre + [n + "_grad" for n in reversed(pre)]


def test_cache_selection_and_short_names(tiny):
    g = tiny.backward(TOK, METRIC, names_filter=["resid_pre2", "blocks.1.attn.hook_pattern"])
    # TransformerLens's incl_bwd order: activations in firing order, then the gradients in backward order
    assert list(g.cache) == ["blocks.1.attn.hook_pattern", "blocks.2.hook_resid_pre",
                             "blocks.2.hook_resid_pre_grad", "blocks.1.attn.hook_pattern_grad"]
    g2 = tiny.backward(TOK, METRIC, names_filter=lambda n: n.endswith("hook_resid_post"), cache_activations=False)
    assert list(g2.cache) == [f"blocks.{l}.hook_resid_post_grad" for l in reversed(range(5))]
    assert tiny.backward(TOK, METRIC, cache=False).cache is None
    assert len(tiny.backward(TOK, METRIC, names_filter=[]).cache or {}) == 0
    with pytest.raises(circuits.NotFoundError):
        tiny.backward(TOK, METRIC, names_filter=["blocks.9.hook_nothing"])


def test_backward_equals_run_with_cache_incl_bwd(tiny):
    g = tiny.backward(TOK2, "logit_diff", answer_tokens=[1, 3], wrong_tokens=[2, 4], positions=[-1, 3])
    metric = LogitDiff([1, 3], [2, 4], pos=[-1, 3])
    logits, cache = tiny.run_with_cache(TOK2, incl_bwd=True, metric=metric)
    np.testing.assert_array_equal(logits, g.logits)
    assert list(cache) == list(g.cache)
    for k in cache:
        np.testing.assert_array_equal(cache[k], g.cache[k], err_msg=k)
    assert cache["resid_post3_grad"] is cache["blocks.3.hook_resid_post_grad"]  # short names resolve
    # TransformerLens: run_with_cache(incl_bwd=True) on return_type="loss" differentiates the loss
    loss, lc = tiny.run_with_cache(TOK, incl_bwd=True, return_type="loss", names_filter="hook_embed")
    gl = tiny.backward(TOK, names_filter="hook_embed")
    assert np.isclose(loss, gl.value) and list(lc) == ["hook_embed", "hook_embed_grad"]
    np.testing.assert_array_equal(lc["hook_embed_grad"], gl.cache["hook_embed_grad"])
    _, rb = tiny.run_with_cache(TOK, incl_bwd=True, return_type="loss", names_filter="hook_embed",
                                remove_batch_dim=True)
    assert rb["hook_embed_grad"].shape == (8, 32)


# -- against finite differences of plain runs -----------------------------------------------


def test_gradients_match_finite_differences(small):
    tok = TOK % small.cfg.d_vocab
    g = small.backward(tok, METRIC)
    rng = np.random.default_rng(0)
    for name in ("blocks.0.hook_resid_mid", "blocks.1.attn.hook_pattern", "blocks.0.mlp.hook_post",
                 "blocks.1.ln2.hook_normalized"):
        grad = g.cache[name + "_grad"]
        for idx in points(grad, rng):
            fd = fd_at_hook(small, tok, name, idx)
            assert close(fd, grad[idx], np.abs(grad).max()), (name, idx, fd, grad[idx])
    # above the diagonal too, as TransformerLens (hook_pattern's gradient is dz @ v^T everywhere):
    # a metric at position 3 reads query row 3, whose keys 4..7 are masked
    g3 = small.backward(tok, LogitDiff([1], [2], pos=3), names_filter="pattern1")
    pg = g3.cache["blocks.1.attn.hook_pattern_grad"]
    assert np.abs(pg[0, :, 3, 4:]).max() > 0 and not pg[0, :, 4:].any()
    fd = fd_at_hook(small, tok, "blocks.1.attn.hook_pattern", (0, 1, 3, 5), metric=lambda lg: ld(lg[:, :4]))
    assert close(fd, pg[0, 1, 3, 5], np.abs(pg).max()), (fd, pg[0, 1, 3, 5])


def test_input_grad_matches_finite_differences(small):
    tok = TOK % small.cfg.d_vocab
    _, cache = small.run_with_cache(tok, names_filter="blocks.0.hook_resid_pre")
    res = np.array(cache["blocks.0.hook_resid_pre"])
    g = small.backward(residual=res, start_at_layer=0, tokens=tok, metric=METRIC, input_grad=True)
    assert g.cache is not None and "hook_embed" not in g.cache  # the run starts at block 0
    for idx in ((0, 7, 3), (0, 2, 0)):
        def f(d):
            r = res.copy()
            r[idx] += d
            return ld(small(r, start_at_layer=0, tokens=tok))
        fd = (f(EPS) - f(-EPS)) / (2 * EPS)
        assert close(fd, g.input_grad[idx], np.abs(g.input_grad).max()), (idx, fd, g.input_grad[idx])


def test_weight_grads_match_finite_differences_of_a_bias(small):
    """d metric / d b_O of layer 0 is the sum over positions of the gradient at hook_attn_out: checked
    with the forward hook that adds a constant to every position of hook_attn_out (the bias's effect)."""
    tok = TOK % small.cfg.d_vocab
    g = small.backward(tok, METRIC, weight_grads=True)
    gb = g.weight_grads["blocks.0.attn.b_O"]
    np.testing.assert_allclose(gb, g.cache["blocks.0.hook_attn_out_grad"].sum(axis=(0, 1)), rtol=1e-4, atol=1e-6)
    j = 3

    def f(d):
        def hook(a, h):
            a[..., j] += d
        return ld(small.run_with_hooks(tok, fwd_hooks=[("blocks.0.hook_attn_out", hook)]))
    fd = (f(EPS) - f(-EPS)) / (2 * EPS)
    assert close(fd, gb[j], np.abs(gb).max()), (fd, gb[j])


# -- metrics --------------------------------------------------------------------------------


def test_metrics(tiny):
    per_tok = tiny(TOK2, return_type="loss", loss_per_token=True)
    g = tiny.backward(TOK2, "token_loss", positions=[2, 5], cache=False)
    assert np.isclose(g.value, (per_tok[0, 2] + per_tok[1, 5]) / 2, rtol=1e-5)
    g2 = tiny.backward(TOK2, TokenLoss(TOK2, [2, 5]), cache=False)
    assert g2.value == g.value
    logits = tiny(TOK2)
    assert np.isclose(tiny.backward(TOK2, Logit([7, 8]), cache=False).value,
                      (logits[0, -1, 7] + logits[1, -1, 8]) / 2, rtol=1e-5)

    # a callable returning (value, d value / d logits) gives the same as the built-in kind
    def logit7(lg):
        grad = np.zeros_like(lg)
        grad[:, -1, 7] = 1.0 / lg.shape[0]
        return lg[:, -1, 7].mean(), grad

    a = tiny.backward(TOK2, logit7, names_filter="resid_pre1")
    b = tiny.backward(TOK2, Logit([7, 7]), names_filter="resid_pre1")
    assert np.isclose(a.value, b.value)
    np.testing.assert_allclose(a.cache["resid_pre1_grad"], b.cache["resid_pre1_grad"], rtol=1e-5, atol=1e-7)
    # float64 gradients are accepted (converted)
    c = tiny.backward(TOK2, lambda lg: (0.0, np.zeros(lg.shape)), names_filter="resid_pre1")
    assert not c.cache["resid_pre1_grad"].any()


def test_hook_linear(tiny):
    _, cache = tiny.run_with_cache(TOK, names_filter="resid_post2")
    d = np.random.default_rng(1).standard_normal((1, 8, 32)).astype(np.float32)
    g = tiny.backward(TOK, HookLinear("resid_post2", d), names_filter=["resid_post2", "resid_post4"])
    assert np.isclose(g.value, float((cache["resid_post2"].astype(np.float64) * d).sum()), rtol=1e-5)
    np.testing.assert_allclose(g.cache["blocks.2.hook_resid_post_grad"], d, rtol=1e-6)
    assert not g.cache["blocks.4.hook_resid_post_grad"].any()  # later points do not reach it
    g2 = tiny.backward(TOK, "hook_linear", hook="blocks.2.hook_resid_post", direction=d.astype(np.float64),
                       names_filter="resid_post2")
    assert g2.value == g.value
    with pytest.raises(circuits.ShapeError, match="direction"):
        tiny.backward(TOK, HookLinear("resid_post2", d[:, :4]))
    with pytest.raises(circuits.NotFoundError):
        tiny.backward(TOK, HookLinear("blocks.7.hook_resid_post", d))
    _, full = tiny.run_with_cache(TOK)
    with pytest.raises(ValueError, match="gradient"):
        circuits.patching.get_act_patch_resid_pre(tiny, TOK, full, HookLinear("resid_post2", d))
    with pytest.raises(TypeError):
        HookLinear("resid_post2", d)(np.zeros((1, 8, 1000), np.float32))


def test_metric_callback_errors(tiny):
    with pytest.raises(circuits.CallbackError, match=r"returns \(value"):
        tiny.backward(TOK, lambda lg: 1.0)
    with pytest.raises(circuits.ShapeError, match="gradient of shape"):
        tiny.backward(TOK, lambda lg: (1.0, np.zeros((1, 8, 999))))
    with pytest.raises(circuits.CallbackError, match="dtype"):
        tiny.backward(TOK, lambda lg: (1.0, np.zeros(lg.shape, complex)))

    class Boom(Exception):
        pass

    def boom(lg):
        raise Boom("in the metric")

    with pytest.raises(Boom):
        tiny.backward(TOK, boom)

    def reenter(lg):
        tiny(TOK)
        return 0.0, np.zeros_like(lg)

    with pytest.raises(circuits.InvalidArgumentError, match="callback of the same context"):
        tiny.backward(TOK, reenter)
    assert np.isfinite(tiny.backward(TOK).value)  # the model goes on


# -- backward hooks -------------------------------------------------------------------------


def test_backward_hooks_read_in_reverse_order(tiny):
    seen = []

    def rec(g, hook):
        seen.append((hook.name, g.shape, g.copy()))

    loss = tiny.run_with_hooks(TOK, return_type="loss",
                               bwd_hooks=[("blocks.1.hook_resid_pre", rec), ("blocks.3.hook_resid_pre", rec)])
    assert np.isclose(loss, tiny(TOK, return_type="loss"))
    assert [s[0] for s in seen] == ["blocks.3.hook_resid_pre", "blocks.1.hook_resid_pre"]
    g = tiny.backward(TOK, names_filter=["resid_pre1", "resid_pre3"])
    np.testing.assert_array_equal(seen[1][2], g.cache["resid_pre1_grad"])
    np.testing.assert_array_equal(seen[0][2], g.cache["resid_pre3_grad"])
    assert not tiny._regs  # run_with_hooks removed them
    seen.clear()
    tiny(TOK)  # forward-only runs never call backward hooks
    h = tiny.add_hook("resid_pre2", rec, dir="bwd")
    tiny(TOK)
    tiny.run_with_cache(TOK)
    assert seen == []
    tiny.backward(TOK, cache=False)
    assert [s[0] for s in seen] == ["blocks.2.hook_resid_pre"]
    tiny.hook_dict["blocks.0.hook_resid_pre"].add_hook(rec, dir="bwd")  # HookPoint.add_hook
    tiny.reset_hooks(direction="fwd")
    assert len(tiny._regs) == 2
    tiny.reset_hooks(direction="bwd")
    assert not tiny._regs
    h.remove()


def test_backward_hook_edits_flow_upstream(tiny):
    base = tiny.backward(TOK, names_filter=["resid_pre2", "hook_embed"], input_grad=True)

    def zero(g, hook):
        g[...] = 0

    with tiny.hooks(bwd_hooks=[("resid_pre2", zero)]):
        z = tiny.backward(TOK, names_filter=["resid_pre2", "hook_embed"], input_grad=True)
    # every path to the embeddings passes through blocks.2.hook_resid_pre
    assert not z.cache["hook_embed_grad"].any() and not z.input_grad.any()
    # the cache keeps the gradient before the hook's edit, as TransformerLens's
    np.testing.assert_array_equal(z.cache["resid_pre2_grad"], base.cache["resid_pre2_grad"])
    # a returned replacement (linear: twice the gradient upstream)
    d = tiny.backward(TOK, names_filter="hook_embed", input_grad=True,
                      bwd_hooks=[("resid_pre2", lambda g, h: 2 * g)])
    np.testing.assert_allclose(d.input_grad, 2 * base.input_grad, rtol=1e-5, atol=1e-7)


def test_hooks_get_hook_as_a_keyword_as_in_transformerlens(tiny):
    """TransformerLens calls every hook fn(tensor, hook=hook_point): a hook whose `hook` parameter is
    keyword-only, or comes after another one a partial binds (partial(f, clean=c) of f(act, clean,
    hook)), works there; the binding passed the hook point positionally and such hooks raised
    TypeError. Hooks without a `hook` parameter (lambda g, h: ...) still get it positionally."""
    from functools import partial

    seen = []

    def bwd_kwonly(grad, *, hook):
        seen.append(("bwd", hook.name, grad.shape))

    def fwd_third(act, scale, hook):
        seen.append(("fwd", hook.name, scale))

    tiny.backward(TOK, cache=False, bwd_hooks=[("resid_pre2", bwd_kwonly), ("resid_pre1", lambda g, h: None)],
                  fwd_hooks=[("resid_pre3", partial(fwd_third, scale=2.0))])
    assert seen == [("fwd", "blocks.3.hook_resid_pre", 2.0), ("bwd", "blocks.2.hook_resid_pre", (1, 8, 32))]
    half = tiny.backward(TOK, names_filter="hook_embed", bwd_hooks=[("resid_pre2", lambda grad, *, hook: grad * 0.5)])
    base = tiny.backward(TOK, names_filter="hook_embed")
    np.testing.assert_allclose(half.cache["hook_embed_grad"], 0.5 * base.cache["hook_embed_grad"], rtol=1e-5,
                               atol=1e-8)


def test_permanent_backward_hooks_and_removal_by_direction(tiny):
    """TransformerLens's add_perma_hook(name, fn, dir), HookPoint.add_perma_hook, remove_all_hook_fns(direction,
    including_permanent) and clear_contexts: the binding had none of them (AttributeError)."""
    seen = []
    tiny.add_perma_hook("resid_pre2", lambda g, hook: seen.append(hook.name), dir="bwd")
    tiny.hook_dict["blocks.1.hook_resid_pre"].add_perma_hook(lambda g, hook: seen.append(hook.name), dir="bwd")
    tiny.add_perma_hook("resid_pre1", lambda a, hook: hook.ctx.update(n=1))
    tiny.add_hook("resid_pre3", lambda g, hook: seen.append(hook.name), dir="bwd")
    tiny.reset_hooks(clear_contexts=False)  # permanent hooks stay
    tiny.backward(TOK, cache=False)
    assert seen == ["blocks.2.hook_resid_pre", "blocks.1.hook_resid_pre"]
    assert tiny.hook_dict["blocks.1.hook_resid_pre"].ctx == {"n": 1}
    tiny.remove_all_hook_fns(direction="bwd", including_permanent=True)  # the forward one stays, contexts kept
    assert [r.bwd for r in tiny._regs] == [False] and tiny.hook_dict["blocks.1.hook_resid_pre"].ctx == {"n": 1}
    tiny.clear_contexts()
    assert tiny.hook_dict["blocks.1.hook_resid_pre"].ctx == {}
    tiny.remove_all_hook_fns(including_permanent=True)
    assert not tiny._regs


def test_backward_hook_may_return_a_one_tuple(tiny):
    """TransformerLens's backward hooks may return PyTorch's form, (grad,) (HookPoint.add_hook wraps
    a bare tensor into one); the binding refused it with HookReturnError."""
    base = tiny.backward(TOK, names_filter="hook_embed", input_grad=True)
    for target in ("resid_pre2", "blocks.1.attn.hook_pattern"):
        d = tiny.backward(TOK, names_filter="hook_embed", input_grad=True,
                          bwd_hooks=[(target, lambda g, h: (np.zeros_like(g),))])
        assert not d.input_grad.any() if target == "resid_pre2" else np.abs(d.input_grad - base.input_grad).max() > 0
    d = tiny.backward(TOK, names_filter="hook_embed", input_grad=True, bwd_hooks=[("resid_pre2", lambda g, h: (g,))])
    np.testing.assert_array_equal(d.input_grad, base.input_grad)
    h = tiny.add_hook("resid_pre2", lambda g, h: (2 * g,), dir="bwd")
    try:
        d = tiny.backward(TOK, names_filter="hook_embed", input_grad=True)
    finally:
        h.remove()
    np.testing.assert_allclose(d.input_grad, 2 * base.input_grad, rtol=1e-5, atol=1e-7)
    with pytest.raises(circuits.HookReturnError):  # a forward hook's tuple, and longer tuples, stay refused
        tiny.backward(TOK, fwd_hooks=[("resid_pre2", lambda a, h: (a,))])
    with pytest.raises(circuits.HookReturnError):
        tiny.backward(TOK, bwd_hooks=[("resid_pre2", lambda g, h: (g, g))])


def test_backward_hook_stops_and_raises(tiny):
    def stop(g, hook):
        raise circuits.HookStopped("enough")

    with pytest.raises(circuits.HookStopped):
        tiny.backward(TOK, bwd_hooks=[("resid_pre2", stop)])

    class Boom(Exception):
        pass

    def boom(g, hook):
        raise Boom()

    with pytest.raises(Boom):
        tiny.run_with_hooks(TOK, return_type="loss", bwd_hooks=[("hook_embed", boom)])
    with pytest.raises(circuits.HookReturnError, match="the gradient has shape"):
        tiny.backward(TOK, bwd_hooks=[("resid_pre2", lambda g, h: g[:, :2])])
    with pytest.raises(circuits.HookReturnError, match="dtype float64; gradients are float32"):
        tiny.backward(TOK, bwd_hooks=[("resid_pre2", lambda g, h: g.astype(np.float64))])
    with pytest.raises(circuits.InvalidArgumentError, match="inside a hook"):
        tiny.backward(TOK, bwd_hooks=[("resid_pre2", lambda g, h: tiny.add_hook("hook_embed", lambda a, b: None))])
    with pytest.raises(circuits.InvalidArgumentError, match="callback of the same context"):
        tiny.backward(TOK, bwd_hooks=[("resid_pre2", lambda g, h: tiny(TOK))])
    with pytest.raises(circuits.NotFoundError):
        tiny.backward(TOK, bwd_hooks=[("blocks.9.hook_resid_pre", lambda g, h: None)])
    assert not tiny._regs
    assert np.isfinite(tiny.backward(TOK, cache=False).value)


def test_kept_gradient_views_stay_valid(tiny):
    """A backward hook's array is a zero-copy view of the gradient memory: keeping it past the call
    makes the binding take that memory (it stays valid, reading what the run last wrote there)."""
    kept, snaps = [], []

    def keep(g, hook):
        kept.append(g)
        snaps.append(g.copy())

    with pytest.warns(circuits.HookViewWarning):
        tiny.backward(TOK, bwd_hooks=[("unembed.hook_in", keep)], cache=False)
    after = kept[0].copy()
    tiny.backward(TOK2, cache=False)
    tiny.backward(np.arange(40)[None] % 1000, cache=False)
    tiny(TOK2)
    np.testing.assert_array_equal(kept[0], after)  # the taken block is never written again
    assert np.isfinite(kept[0]).all()


# -- edit_grad ------------------------------------------------------------------------------


def test_edit_grad(small):
    tok = TOK % small.cfg.d_vocab
    zero = ("blocks.0.hook_resid_mid", lambda a, h: a.__setitem__(..., 0.0))
    names = ["blocks.0.hook_resid_pre"]
    r = small.backward(tok, METRIC, names_filter=names, fwd_hooks=[zero])
    assert not r.cache["blocks.0.hook_resid_pre_grad"].any()  # replaced elements are constants
    t = small.backward(tok, METRIC, names_filter=names, fwd_hooks=[zero], edit_grad="through")
    assert t.cache["blocks.0.hook_resid_pre_grad"].any()
    # "through" is PyTorch's act + v (steering): checked against finite differences
    v = np.random.default_rng(2).standard_normal(small.cfg.d_model).astype(np.float32)
    steer = ("blocks.0.hook_resid_mid", lambda a, h: a + v)
    s = small.backward(tok, METRIC, names_filter=names, fwd_hooks=[steer], edit_grad="through")
    grad = s.cache["blocks.0.hook_resid_pre_grad"]
    for idx in ((0, 7, 1), (0, 4, 5)):
        fd = fd_at_hook(small, tok, "blocks.0.hook_resid_pre", idx, fwd_hooks=[steer])
        assert close(fd, grad[idx], np.abs(grad).max()), (idx, fd, grad[idx])
    with pytest.raises(ValueError, match="edit_grad"):
        small.backward(tok, METRIC, edit_grad="sideways")


# -- what a gradient run refuses --------------------------------------------------------------


def test_refused(tiny):
    with pytest.raises(ValueError, match="stop_at_layer"):
        tiny.run_with_cache(TOK, incl_bwd=True, metric=METRIC, stop_at_layer=2)
    with pytest.raises(ValueError, match="logit_positions"):
        tiny.run_with_hooks(TOK, metric=METRIC, logit_positions=[-1])
    with pytest.raises(ValueError, match="metric"):
        tiny.run_with_hooks(TOK, bwd_hooks=[("hook_embed", lambda g, h: None)])  # logits are not a scalar
    with pytest.raises(ValueError, match="metric"):
        tiny.run_with_cache(TOK, incl_bwd=True, return_type="loss", loss_per_token=True)
    with pytest.raises(ValueError, match="incl_bwd"):
        tiny.run_with_cache(TOK, metric=METRIC)
    with pytest.raises(TypeError):
        tiny.backward(TOK.astype(np.float32))
    with pytest.raises(circuits.RangeError):
        tiny.backward(TOK + 1000)
    with pytest.raises(circuits.ShapeError):
        tiny.backward(TOK, LogitDiff([1, 2], [2, 3]))
    with pytest.raises(ValueError, match="positions"):
        tiny.backward(TOK, "token_loss")
    with pytest.raises(circuits.CircuitsError):
        tiny.backward(TOK, "token_loss", positions=-1)  # predicts nothing: refused by the library
    with pytest.raises(circuits.CallbackError):
        tiny.backward(TOK, lambda lg: None)
    with pytest.raises(ValueError, match="direction"):
        tiny.add_hook("hook_embed", lambda g, h: None, dir="sideways")
    with pytest.raises(ValueError, match="direction"):
        tiny.reset_hooks(direction="sideways")
    with pytest.raises(circuits.ShapeError):
        tiny.backward(residual=np.zeros((1, 8, 31), np.float32), start_at_layer=1, tokens=TOK)
    assert not tiny._regs


def test_positions_beyond_n_ctx_refused_before_the_gradient_memory(tiny):
    """A gradient run longer than n_ctx is refused as the forward refuses it (RangeError): the
    library sized the gradient memory from pos first (for [1, 10^5] on the tiny model about 1 TB,
    attention patterns [layers, heads, pos, pos]) and failed with OutOfMemoryError, or aborted
    the process under AddressSanitizer."""
    T = 100_000
    long = np.zeros((1, T), np.int64)
    for call in (lambda: tiny.backward(long, cache=False),
                 lambda: tiny.run_with_cache(long, incl_bwd=True, return_type="loss"),
                 lambda: tiny.backward(residual=np.zeros((1, T, 32), np.float32), start_at_layer=1, tokens=long,
                                       cache=False)):
        with pytest.raises(circuits.RangeError, match="n_ctx"):
            call()


def test_stored_weights_refused(tmp_path):
    from conftest import TINY_GPT2

    with circuits.Model.from_pretrained_no_processing(TINY_GPT2, keep_stored_dtype=True) as m:
        if all(m.weight_dtype(n) == "F32" for n in m.weight_names()):
            g = m.backward(TOK, cache=False)  # nothing kept stored: an ordinary fp32 model
            assert np.isfinite(g.value)
        else:
            with pytest.raises(circuits.CircuitsError):
                m.backward(TOK)


# -- struct layouts (additions at the end, as test_load_memory.py checks LoadOptions) ---------


def test_struct_layouts():
    # circuits_metric: 0.5.0's struct ends at hook (64); 0.7.0 adds hook, direction, grad_fn
    assert N.Metric.user_data.offset == 56 and N.Metric.hook.offset == 64
    assert N.Metric.direction.offset == 72 and N.Metric.grad_fn.offset == 80 and ctypes.sizeof(N.Metric) == 88
    m = N.Metric()
    N.lib.circuits_metric_init(ctypes.byref(m))
    assert m.size == 88 and not m.hook and not m.direction and not m.grad_fn
    assert N.BackwardOptions.run.offset == 8 and N.BackwardOptions.names_filter.offset == 16
    assert N.BackwardOptions.n_filter.offset == 24 and N.BackwardOptions.cache_activations.offset == 32
    assert N.BackwardOptions.edit_grad.offset == 36 and N.BackwardOptions.weight_grads.offset == 40
    assert N.BackwardOptions.input_grad.offset == 48 and ctypes.sizeof(N.BackwardOptions) == 56
    o = N.BackwardOptions()
    N.lib.circuits_backward_options_init(ctypes.byref(o))
    assert (o.size, o.cache_activations, o.edit_grad, o.weight_grads, o.run, o.input_grad) == (56, 1, 0, 0, None, None)
    assert N.EapOptions.ig_steps.offset == 4 and ctypes.sizeof(N.EapOptions) == 8
    e = N.EapOptions()
    N.lib.circuits_eap_options_init(ctypes.byref(e))
    assert (e.size, e.ig_steps) == (8, 0)
    assert N.METRIC_GRAD_FN._restype_ is ctypes.c_int and len(N.METRIC_GRAD_FN._argtypes_) == 7
