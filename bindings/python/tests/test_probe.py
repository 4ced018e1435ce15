"""circuits.Probe (docs/probes.md) against scikit-learn 1.9.1 (tests/reference/probes/, made by
tests/reference/generate_probes.py), the file round trip, monitors during generation, refusals.
Tolerances as tests/test_probe.c explains: coefficients 5e-7 of the largest, probabilities 2e-5."""

from __future__ import annotations

import json

import numpy as np
import pytest

import circuits
import safetensors_np
from conftest import REPO

REF = REPO / "tests" / "reference" / "probes"
MLP2L = REPO / "examples" / "models" / "mlp-2l"
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def ref():
    return safetensors_np.load(str(REF / "probes.safetensors")), json.loads((REF / "probes.json").read_text())


def _cases():
    return [c["name"] for c in json.loads((REF / "probes.json").read_text())["cases"]]


@pytest.mark.parametrize("name", _cases())
def test_against_sklearn(ref, name, tmp_path):
    t, j = ref
    c = next(c for c in j["cases"] if c["name"] == name)
    X, Xt = t[c["X"] + "_train"], t[c["X"] + "_test"]
    y, yt = t[c["y"] + "_train"], t[c["y"] + "_test"]
    logistic = c["kind"] == "logistic"
    if logistic:
        y, yt = y.astype(np.int64), yt.astype(np.int64)
    p = circuits.Probe.fit(X, y, kind=c["kind"], l2=c["l2"], fit_intercept=c["fit_intercept"], hook_name=HOOK)
    coef, icpt = t[name + ".coef64"], t[name + ".intercept64"]
    assert p.coef_.shape == coef.shape and p.intercept_.shape == icpt.shape
    scale = max(np.abs(coef).max(), np.abs(icpt).max())  # both stored as float32
    assert np.abs(p.coef_ - coef).max() < 5e-7 * scale
    assert np.abs(p.intercept_ - icpt).max() < 5e-7 * scale
    pred = t[name + ".pred"]
    if logistic:
        got = p.predict_proba(Xt)
        assert np.abs(got - pred).max() < 2e-5
        assert np.array_equal(p.predict(Xt), np.argmax(pred, axis=1))
        e = p.evaluate(Xt, yt)
        assert e["accuracy"] == c["accuracy"] and p.score(Xt, yt) == c["accuracy"]
        assert abs(e["log_loss"] - c["log_loss"]) < 1e-5 * max(1, c["log_loss"])
        assert 1 <= p.n_iter_ < 50 and list(p.classes_) == list(range(pred.shape[1]))
    else:
        got = p.predict(Xt)
        assert np.abs(got - pred).max() < 2e-5 * max(1.0, np.abs(pred).max())
        e = p.evaluate(Xt, yt)
        assert abs(e["r2"] - c["r2"]) < 1e-5 and abs(e["mse"] - c["mse"]) < 1e-5 * max(1, c["mse"])
        assert p.n_iter_ == 0
    assert p.kind == c["kind"] and p.d == X.shape[1] and p.hook_name == HOOK
    assert p.fit_intercept == c["fit_intercept"] and p.l2 == np.float32(c["l2"])
    # the file: the same probe back
    path = tmp_path / "p.probe"
    p.save(path)
    q = circuits.Probe.load(path)
    assert np.array_equal(q.coef_, p.coef_) and np.array_equal(q.intercept_, p.intercept_)
    assert (q.kind, q.d, q.n_outputs, q.l2, q.fit_intercept, q.n_iter_, q.hook_name) == \
        (p.kind, p.d, p.n_outputs, p.l2, p.fit_intercept, p.n_iter_, p.hook_name)
    meta = safetensors_np.metadata(str(path))
    assert meta["format"] == "libcircuits-probe" and meta["kind"] == c["kind"] and meta["hook_name"] == HOOK


def test_views_keep_the_probe_alive(ref):
    t, _ = ref
    p = circuits.Probe.fit(t["syn_train"], t["syncls_train"].astype(int), l2=1.0)
    W, b = p.coef_, p.intercept_
    snap = W.copy(), b.copy()
    assert not W.flags.writeable
    p.close()
    del p
    import gc

    gc.collect()
    assert np.array_equal(W, snap[0]) and np.array_equal(b, snap[1])
    assert abs(float(b.sum())) < 1e-5  # multinomial intercepts: scikit-learn's mean-0 convention


def test_monitor_during_generation(ref):
    t, _ = ref
    p = circuits.Probe.fit(t["act_train"], t["vowel_train"].astype(int), l2=1.0, hook_name=HOOK)
    m = circuits.Model.from_pretrained(str(MLP2L))
    seen = {}
    calls = []

    def fn(out, first):
        calls.append((first, out.shape))
        for i in range(out.shape[1]):
            seen[first + i] = out[0, i].copy()

    h = m.add_probe_monitor(p, fn)
    prompt = np.array([list(b"And the evening and the morning were")])
    toks = m.generate(prompt, max_new_tokens=8, do_sample=False, stop_at_eos=False, return_type="tokens")
    P = prompt.shape[1]
    assert calls[0] == (0, (1, P, 2)) and calls[-1] == (P + 6, (1, 1, 2)) and len(calls) == 8
    h.remove()
    _, cache = m.run_with_cache(toks[:, :-1], names_filter=HOOK)
    want = p.predict_proba(cache[HOOK][0])
    got = np.stack([seen[i] for i in range(toks.shape[1] - 1)])
    assert np.abs(got - want).max() < 1e-4
    # removed: no more calls; a raising monitor's exception reaches the caller
    n = len(calls)
    m(prompt)
    assert len(calls) == n

    def boom(out, first):
        raise KeyError("from the monitor")

    m.add_probe_monitor(p, boom, hook="resid_post1")
    with pytest.raises(KeyError, match="from the monitor"):
        m(prompt)
    m.reset_hooks()
    m(prompt)
    # a stop
    def stop(out, first):
        raise circuits.HookStopped()

    m.add_probe_monitor(p, stop)
    with pytest.raises(circuits.HookStopped):  # the run ends there, as with a hook's HookStopped
        m(prompt)
    m.reset_hooks()
    m.close()


def test_refusals(ref, tmp_path):
    t, _ = ref
    X, y = t["syn_train"], t["syncls_train"].astype(int)
    with pytest.raises(circuits.InvalidArgumentError, match="l2 = -1"):
        circuits.Probe.fit(X, y, l2=-1)
    with pytest.raises(circuits.UnsupportedError, match="unpenalised"):
        circuits.Probe.fit(X, y, l2=0)
    with pytest.raises(circuits.InvalidArgumentError, match="single class"):
        circuits.Probe.fit(X, np.zeros(len(X), int))
    with pytest.raises(circuits.InvalidArgumentError, match="not a class label"):
        circuits.Probe.fit(X, y + 0.5)
    with pytest.raises(circuits.InvalidArgumentError, match="max_iter"):
        circuits.Probe.fit(X, y, max_iter=0)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(circuits.InvalidArgumentError, match=r"X\[3, 2\] = nan"):
        circuits.Probe.fit(bad, y)
    with pytest.raises(ValueError, match="kind"):
        circuits.Probe.fit(X, y, kind="svm")
    with pytest.raises(circuits.ShapeError):
        circuits.Probe.fit(X, y[:-1])
    with pytest.raises(TypeError):
        circuits.Probe()
    p = circuits.Probe.fit(X, y)
    with pytest.raises(circuits.ShapeError, match="d = 10"):
        p.predict_proba(np.zeros((2, 11), np.float32))
    with pytest.raises(circuits.RangeError, match="not one of the probe's 4 classes"):
        p.evaluate(X, np.full(len(X), 7))
    with pytest.raises(circuits.InvalidArgumentError):
        p.predict_proba(bad)
    lin = circuits.Probe.fit(X, t["synlin_train"], kind="linear", l2=0.0)
    with pytest.raises(circuits.InvalidArgumentError, match="logistic"):
        lin.predict_proba(X)
    (tmp_path / "junk.probe").write_bytes(b"\x08\0\0\0\0\0\0\0{}      ")
    with pytest.raises(circuits.TensorMissingError, match="no tensor .W."):
        circuits.Probe.load(tmp_path / "junk.probe")
    with pytest.raises(circuits.CircuitsIOError):
        circuits.Probe.load(tmp_path / "missing.probe")
    m = circuits.Model.from_pretrained(str(MLP2L))
    with pytest.raises(circuits.InvalidArgumentError, match="hook_name"):
        m.add_probe_monitor(p, lambda o, f: None)
    with pytest.raises(circuits.ShapeError, match="the probe reads d = 10"):
        m.add_probe_monitor(p, lambda o, f: None, hook=HOOK)
    with pytest.raises(TypeError):
        m.add_probe_monitor("p", lambda o, f: None, hook=HOOK)
    p.close()
    with pytest.raises(circuits.InvalidArgumentError, match="closed"):
        p.predict_proba(X)
    with pytest.raises(circuits.InvalidArgumentError, match="closed"):
        m.add_probe_monitor(p, lambda o, f: None, hook=HOOK)
    m.close()
