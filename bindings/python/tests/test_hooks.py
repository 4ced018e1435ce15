"""Python hooks: zero-copy views, edits and replacements, exceptions (type and traceback
preserved, the model usable after), stops, wrong returns, predicates, registration
lifetimes, re-entrancy, use after close, GC pressure, threads."""

from __future__ import annotations

import gc
import threading
import traceback
import warnings
import weakref

import numpy as np
import pytest

from conftest import CASES_DIR, TINY_GPT2

import circuits
from circuits import model as cm

TOK = np.array([[11, 42, 7, 11, 42, 7, 3, 99]], dtype=np.int64)


class Boom(Exception):
    pass


def test_hook_gets_live_zero_copy_view(tiny):
    base = tiny(TOK)
    seen = {}

    def first(act, hook):
        seen["addr1"] = act.__array_interface__["data"][0]
        assert act.dtype == np.float32 and act.flags.c_contiguous and act.flags.writeable
        assert act.shape == (1, 8, 32)
        act[0, 3, :] = 7.0  # an in-place edit ...

    def second(act, hook):
        seen["addr2"] = act.__array_interface__["data"][0]
        seen["value"] = float(act[0, 3, 5])  # ... is seen by the next hook at the same point

    name = "blocks.1.hook_resid_pre"
    logits, cache = tiny.run_with_cache(TOK, names_filter=name, fwd_hooks=[(name, first), (name, second)])
    assert seen["addr1"] == seen["addr2"]  # the same live buffer
    assert seen["value"] == 7.0
    assert np.all(cache[name][0, 3] == 7.0)  # the cache copy is taken after the hooks
    assert not np.allclose(logits, base)  # and the edit flowed downstream
    assert np.array_equal(tiny(TOK), base)  # temporary hooks are gone


def test_replacement_is_copied_in(tiny):
    def zeros(act, hook):
        return np.zeros_like(act)

    def inplace(act, hook):
        act[...] = 0.0

    a = tiny.run_with_hooks(TOK, fwd_hooks=[("blocks.2.hook_mlp_out", zeros)])
    b = tiny.run_with_hooks(TOK, fwd_hooks=[("blocks.2.hook_mlp_out", inplace)])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, tiny(TOK))


@pytest.mark.parametrize(
    "ret, match",
    [
        (lambda a: np.zeros(a.shape[:-1], np.float32), "shape"),
        (lambda a: np.zeros(a.shape, np.float64), "dtype float64"),
        (lambda a: a.tolist(), "returned list"),
        (lambda a: 0, "returned int"),
        (lambda a: np.zeros((a.size,), np.float32), "shape"),
    ],
)
def test_wrong_return_is_a_typed_error(tiny, ret, match):
    base = tiny(TOK)
    calls = []

    def bad(act, hook):
        calls.append(hook.name)
        return ret(act)

    with pytest.raises(circuits.HookReturnError, match=match) as ei:
        tiny.run_with_hooks(TOK, fwd_hooks=[(lambda n: "hook_z" in n, bad)])
    assert isinstance(ei.value, circuits.CircuitsError) and isinstance(ei.value, circuits.CallbackError)
    assert "blocks.0.attn.hook_z" in str(ei.value)
    assert calls == ["blocks.0.attn.hook_z"]  # the run stopped at the first bad return
    assert np.array_equal(tiny(TOK), base)  # the model is usable, the hook gone


def test_exception_reaches_caller_as_itself_with_traceback(tiny):
    base = tiny(TOK)
    raised = []

    def failing_hook(act, hook):
        e = Boom(f"bad activation at {hook.name}")
        raised.append(e)
        raise e

    later = []
    with pytest.raises(Boom) as ei:
        tiny.run_with_hooks(TOK, fwd_hooks=[("blocks.1.attn.hook_pattern", failing_hook),
                                            ("blocks.3.hook_resid_post", lambda a, h: later.append(1))])
    assert ei.value is raised[0]  # the very exception object
    frames = [f.name for f in traceback.extract_tb(ei.value.__traceback__)]
    assert "failing_hook" in frames, frames  # its traceback reaches into the hook
    assert frames.index("failing_hook") > frames.index("run_with_hooks")
    notes = getattr(ei.value, "__notes__", [])
    assert any("blocks.1.attn.hook_pattern" in n for n in notes)
    assert later == []  # the run stopped: later hooks did not fire
    # the context is usable afterwards and the temporary hooks are gone
    assert np.array_equal(tiny(TOK), base)
    _, cache = tiny.run_with_cache(TOK, names_filter="pattern1")
    assert len(cache) == 1


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, MemoryError, RecursionError])
def test_base_exceptions_also_propagate(tiny, exc):
    def hook(act, h):
        raise exc()

    with pytest.raises(exc):
        tiny.run_with_hooks(TOK, fwd_hooks=[("hook_embed", hook)])
    assert tiny(TOK).shape == (1, 8, 1000)


def test_exception_in_permanent_hook_leaves_it_registered(tiny):
    n = []

    def sometimes(act, hook):
        n.append(1)
        if len(n) == 1:
            raise Boom("first time")

    tiny.add_hook("blocks.0.hook_resid_post", sometimes)
    with pytest.raises(Boom):
        tiny(TOK)
    tiny(TOK)
    assert len(n) == 2
    tiny.reset_hooks()
    tiny(TOK)
    assert len(n) == 2


def test_hook_stopped(tiny):
    calls = []

    def stop(act, hook):
        calls.append(hook.name)
        raise circuits.HookStopped(f"enough at {hook.name}")

    with pytest.raises(circuits.HookStopped, match="enough at blocks.0.hook_resid_pre") as ei:
        tiny.run_with_cache(TOK, fwd_hooks=[(lambda n: n.endswith("resid_pre"), stop)])
    assert calls == ["blocks.0.hook_resid_pre"]  # later hook points did not fire
    assert ei.value.status == -14
    assert tiny(TOK).shape == (1, 8, 1000)


def test_predicates_see_every_hook_point(tiny):
    asked = []

    def pred(name):
        asked.append(name)
        return name.endswith("hook_pattern") or name == "hook_embed"

    fired = []
    tiny.run_with_hooks(TOK, fwd_hooks=[(pred, lambda a, h: fired.append((h.name, a.shape)))])
    assert asked == tiny.hook_names()
    assert len(asked) == 91
    assert [f[0] for f in fired] == ["hook_embed"] + [f"blocks.{l}.attn.hook_pattern" for l in range(5)]
    assert fired[1][1] == (1, 4, 8, 8)
    # a predicate that selects nothing adds nothing (TransformerLens); a string must select
    tiny.run_with_hooks(TOK, fwd_hooks=[(lambda n: False, lambda a, h: 1 / 0)])
    with pytest.raises(circuits.NotFoundError, match="no hook point named"):
        tiny.run_with_hooks(TOK, fwd_hooks=[("blocks.9.hook_resid_pre", lambda a, h: None)])


def test_names_short_names_and_patterns(tiny):
    fired = []
    rec = lambda a, h: fired.append(h.name)  # noqa: E731
    tiny.run_with_hooks(TOK, fwd_hooks=[("pattern1", rec), ("blocks.*.hook_resid_post", rec), ("k3a", rec),
                                        ("scale4ln1", rec) if tiny.cfg.normalization_type == "LN" else ("embed", rec)])
    assert fired[0] == "hook_embed" and "blocks.1.attn.hook_pattern" in fired and "blocks.3.attn.hook_k" in fired
    assert sum(f.endswith("hook_resid_post") for f in fired) == 5


def test_hook_point_object(tiny):
    got = {}

    def rec(act, hook):
        got[hook.name] = hook
        hook.ctx["calls"] = hook.ctx.get("calls", 0) + 1

    tiny.add_hook(lambda n: n in ("hook_embed", "blocks.2.attn.hook_q", "blocks.4.attn.hook_pattern"), rec)
    tiny(TOK)
    tiny(TOK)
    assert got["blocks.2.attn.hook_q"].layer() == 2 and got["blocks.2.attn.hook_q"].head_axis == 2
    assert got["blocks.4.attn.hook_pattern"].head_axis == 1
    with pytest.raises(ValueError):
        got["hook_embed"].layer()
    assert got["hook_embed"].ctx["calls"] == 2
    assert got["hook_embed"] is tiny.hook_dict["hook_embed"]
    tiny.reset_hooks()  # clear_contexts=True
    assert got["hook_embed"].ctx == {}


def test_hooks_context_manager_and_registration_order(tiny):
    order = []
    mk = lambda tag: (lambda a, h: order.append(tag))  # noqa: E731
    with tiny.hooks(fwd_hooks=[("hook_embed", mk("a")), ("hook_embed", mk("b"))]):
        tiny.add_hook("hook_embed", mk("c"), prepend=True)
        tiny(TOK)
    assert order == ["c", "a", "b"]
    order.clear()
    tiny(TOK)  # the context manager removed a and b; c (add_hook) stays
    assert order == ["c"]
    order.clear()
    with pytest.raises(Boom):
        with tiny.hooks(fwd_hooks=[("hook_embed", mk("d"))]):
            raise Boom()
    tiny(TOK)
    assert order == ["c"]  # d removed despite the exception
    order.clear()
    h = tiny.add_hook("hook_embed", mk("p"), is_permanent=True)
    tiny.reset_hooks()
    tiny(TOK)
    assert order == ["p"]
    h.remove()
    order.clear()
    tiny(TOK)
    assert order == []
    with pytest.raises(ValueError, match="direction"):
        tiny.add_hook("hook_embed", mk("x"), dir="sideways")  # 'fwd' or 'bwd' (test_grad.py: backward hooks)
    with pytest.raises(TypeError):
        tiny.add_hook(3, mk("x"))
    with pytest.raises(TypeError):
        tiny.add_hook("hook_embed", "not callable")


def test_reentrancy_is_refused_cleanly(tiny):
    base = tiny(TOK)

    def calls_model(act, hook):
        tiny(TOK)

    with pytest.raises(circuits.InvalidArgumentError, match="called from a callback of the same context"):
        tiny.run_with_hooks(TOK, fwd_hooks=[("hook_embed", calls_model)])

    def adds_hook(act, hook):
        tiny.add_hook("hook_embed", lambda a, h: None)

    with pytest.raises(circuits.InvalidArgumentError, match="inside a hook"):
        tiny.run_with_hooks(TOK, fwd_hooks=[("hook_embed", adds_hook)])

    def closes(act, hook):
        tiny.close()

    with pytest.raises(circuits.InvalidArgumentError, match="close"):
        tiny.run_with_hooks(TOK, fwd_hooks=[("hook_embed", closes)])
    assert not tiny.closed
    assert np.array_equal(tiny(TOK), base)


def test_hook_may_use_another_model(tiny, small):
    inner = []

    def run_other(act, hook):
        inner.append(small(np.array([[1, 2, 3]]), return_type="loss"))

    tiny.run_with_hooks(TOK, fwd_hooks=[("blocks.0.hook_resid_pre", run_other)])
    assert len(inner) == 1 and np.isfinite(inner[0])


def test_use_after_close_is_a_clean_error():
    m = circuits.Model.from_pretrained(TINY_GPT2)
    W_E = m.W_E  # a zero-copy view into the model's memory
    W_Q = m.get_weight("blocks.0.attn.W_Q")
    keep = W_E.copy(), W_Q.copy()
    _, cache = m.run_with_cache(TOK, names_filter="resid_post4")
    m.close()
    assert m.closed
    for op in (lambda: m(TOK), lambda: m.run_with_cache(TOK), lambda: m.W_Q, lambda: m.get_weight("embed.W_E"),
               lambda: m.OV, lambda: m.add_hook("hook_embed", lambda a, h: None), lambda: m.hook_names(),
               lambda: m.all_composition_scores("Q"), lambda: m.state_dict(),
               lambda: circuits.detect_head(m, TOK, "induction_head")):
        with pytest.raises(circuits.ClosedError, match="closed"):
            op()
    m.close()  # idempotent
    # arrays taken before close keep the memory they view alive: no dangling pointers
    gc.collect()
    assert np.array_equal(W_E, keep[0]) and np.array_equal(W_Q, keep[1])
    assert cache["resid_post4"].shape == (1, 8, 32) and np.isfinite(cache["resid_post4"]).all()
    with circuits.Model.from_pretrained(TINY_GPT2) as m2:
        m2(TOK)
    assert m2.closed


def test_model_freed_when_unreferenced_even_with_hook_cycles():
    m = circuits.Model.from_pretrained(TINY_GPT2)
    m.add_hook("hook_embed", lambda a, h: m.cfg)  # closure -> model -> registration: a cycle
    handle = weakref.ref(m._handle)
    mref = weakref.ref(m)
    n_reg = len(cm._REGISTRY)
    del m
    gc.collect()
    assert mref() is None and handle() is None  # context and model freed
    assert len(cm._REGISTRY) == n_reg - 1


def test_weights_keep_model_memory_alive():
    m = circuits.Model.from_pretrained_no_processing(CASES_DIR / "hf_tiny_random_gpt2")
    W_Q = m.get_weight("blocks.1.attn.W_Q")
    copy = W_Q.copy()
    handle = weakref.ref(m._handle)
    del m
    gc.collect()
    assert handle() is not None  # still referenced by W_Q
    assert np.array_equal(W_Q, copy)
    del W_Q
    gc.collect()
    assert handle() is None


def test_callbacks_survive_gc_pressure(tiny):
    base_logits, base_cache = tiny.run_with_cache(TOK, names_filter=lambda n: "resid" in n)

    def make_hooks():
        # closures created here and referenced only by the registrations
        count = {"n": 0}

        def h(act, hook):
            count["n"] += 1
            garbage = [object() for _ in range(50)]  # noqa: F841
            gc.collect()  # full collection in the middle of a run, inside a callback
            act += 0.0

        return [(lambda n: True, h)], count

    for _ in range(2):
        hooks, count = make_hooks()
        for name, fn in hooks:
            tiny.add_hook(name, fn)
        del hooks
        gc.collect()
        logits, cache = tiny.run_with_cache(TOK, names_filter=lambda n: "resid" in n)
        assert count["n"] == 91
        assert np.array_equal(logits, base_logits)
        for k in base_cache:
            assert np.array_equal(cache[k], base_cache[k])
        tiny.reset_hooks()


def test_keeping_the_view_warns(tiny):
    kept = []
    with pytest.warns(circuits.HookViewWarning, match="act.copy"):
        tiny.run_with_hooks(TOK, fwd_hooks=[("hook_embed", lambda a, h: kept.append(a))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.run_with_hooks(TOK, fwd_hooks=[("hook_embed", lambda a, h: kept.append(a.copy()))])
        tiny.run_with_hooks(TOK, fwd_hooks=[("hook_embed", lambda a, h: a)])  # returning it is fine


def test_threads_share_a_model_safely(tiny):
    want = tiny(TOK)
    errors = []
    results = []

    def worker(i):
        try:
            seen = []
            for _ in range(20):
                out = tiny.run_with_hooks(TOK, fwd_hooks=[("blocks.2.hook_resid_pre", lambda a, h: seen.append(i))])
                results.append(np.array_equal(out, want))
            assert seen == [i] * 20
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert all(results) and len(results) == 80


def test_exception_in_one_thread_does_not_leak_to_another():
    a = circuits.Model.from_pretrained(TINY_GPT2)
    b = circuits.Model.from_pretrained(TINY_GPT2)
    out = {}

    def fail():
        try:
            a.run_with_hooks(TOK, fwd_hooks=[("hook_embed", lambda x, h: (_ for _ in ()).throw(Boom()))])
        except Boom:
            out["a"] = "boom"

    def ok():
        out["b"] = b(TOK, return_type="loss")

    ts = [threading.Thread(target=fail), threading.Thread(target=ok)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out["a"] == "boom" and np.isfinite(out["b"])
    a.close()
    b.close()


def test_use_attn_result_toggle_keeps_hooks():
    m = circuits.Model.from_pretrained(CASES_DIR / "tl_gelu_new_attn_result")
    fired = []
    m.add_hook("hook_embed", lambda a, h: fired.append(h.name))
    with pytest.raises(circuits.NotFoundError, match="use_attn_result"):
        m.run_with_hooks(np.array([[1, 2, 3]]), fwd_hooks=[("blocks.0.attn.hook_result", lambda a, h: None)])
    m.set_use_attn_result(True)
    assert m.cfg.use_attn_result
    _, cache = m.run_with_cache(np.array([[1, 2, 3]]), names_filter="blocks.0.attn.hook_result")
    assert cache["result", 0].shape == (1, 3, 4, 24)
    assert fired == ["hook_embed"]
    m.close()


def test_lease_sees_kept_arrays_by_weak_reference():
    """Whether a hook's array outlived its call is decided by weak references to the arrays'
    holders, not by reference counts (which interpreters count differently: CPython 3.14
    borrows references on its stack), so the decision is exact on any interpreter."""
    import weakref

    from circuits import _arrays
    from circuits.model import _Lease

    buf = np.zeros(6, np.float32)
    lease = _Lease()
    holder = _arrays._Holder(buf.ctypes.data, (2, 3), False, lease)
    lease.holders.append(weakref.ref(holder))
    view = np.asarray(holder)[1:].T  # a view of a view: references the holder through .base
    del holder
    assert lease.kept()
    del view
    assert not lease.kept() and lease.holders == []
