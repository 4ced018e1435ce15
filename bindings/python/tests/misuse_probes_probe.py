"""The misuse probes of linear probes (0.8.0; docs/probes.md "Python"), merged into
misuse_probes.PROBES / AUDIT at the end of that module. Same rules: each body runs after
misuse_probes.PRELUDE in its own interpreter and must end with ok()."""

from __future__ import annotations

_DATA = '''
MLP2L = os.path.join(REPO, "examples", "models", "mlp-2l")
rng = np.random.default_rng(3)
PX = rng.normal(size=(60, 128)).astype(np.float32)
PY = (PX[:, 0] + 0.5 * PX[:, 1] > 0).astype(np.int64) + (PX[:, 2] > 1)   # 3 classes
'''

PROBE_PROBES = {
    "owner_probe_coef_after_close": ("owner", _DATA + '''
# coef_ / intercept_ are zero-copy views of the C probe's memory: they keep it alive past
# close(), del and garbage collection, and a closed probe refuses every call by name
p = circuits.Probe.fit(PX, PY, l2=0.5)
W, b = p.coef_, p.intercept_
W2 = p.coef_[1:, ::2]
after = snap([W, b, W2])
p.close()
refused(lambda: p.predict_proba(PX), circuits.InvalidArgumentError)
refused(lambda: p.coef_, circuits.InvalidArgumentError)
refused(lambda: p.save("/tmp/never.probe"), circuits.InvalidArgumentError)
del p
churn()
for a, s in zip([W, b, W2], after):
    same(a, s)
    touch(a)
assert not W.flags.writeable
ok()
'''),
    "owner_probe_monitor_outlives_probe": ("owner", _DATA + '''
# a monitor registration keeps the C probe alive: the probe object closed and dropped, the
# monitor still computes what a copy loaded from the probe's file predicts
import tempfile
p = circuits.Probe.fit(PX, PY, l2=0.5, hook_name="blocks.1.hook_resid_post")
path = os.path.join(tempfile.mkdtemp(), "p.probe")
p.save(path)
m = circuits.Model.from_pretrained(MLP2L)
outs = []
m.add_probe_monitor(p, lambda o, first: outs.append((first, o)))
p.close(); del p; churn()
prompt = np.array([list(b"In the beginning")])
toks = m.generate(prompt, max_new_tokens=4, do_sample=False, stop_at_eos=False, return_type="tokens")
m.reset_hooks()
q = circuits.Probe.load(path)
_, cache = m.run_with_cache(toks[:, :-1], names_filter="blocks.1.hook_resid_post")
want = q.predict_proba(cache["blocks.1.hook_resid_post"][0])
got = np.concatenate([o[0] for _, o in outs])
assert got.shape == want.shape and np.abs(got - want).max() < 1e-4
m.close()
ok()
'''),
    "kept_probe_monitor_outputs": ("kept", _DATA + '''
# the arrays a monitor gets are copies: kept past the call, later runs (larger ones too), other
# models and close() leave them as they were
p = circuits.Probe.fit(PX, PY, l2=0.5)
m = circuits.Model.from_pretrained(MLP2L)
kept = []
h = m.add_probe_monitor(p, lambda o, first: kept.extend([o, o[:, 1:], o.T]), hook="resid_post1")
m(np.array([list(b"abc def")]))
after = snap(kept)
m(np.array([list(b"a much longer prompt than before, to grow the run")] * 3))
h.remove()
churn()
m.close()
gc.collect()
for a, s in zip(kept, after):
    same(a, s)
    touch(a)
ok()
'''),
    "size_probe_inputs": ("size", _DATA + '''
# every array crossing into circuits_probe_*: dtypes, orders, strides, shapes and sizes are
# converted or refused; converted calls give the contiguous float32 call's results
ref = circuits.Probe.fit(PX, PY, l2=0.5)
for X in (PX.astype(np.float64), np.asfortranarray(PX), np.repeat(PX, 2, axis=1)[:, ::2], PX.reshape(3, 20, 128)):
    p = circuits.Probe.fit(X, PY.astype(np.float64), l2=0.5)
    same(p.coef_, ref.coef_)
    same(p.predict_proba(X), ref.predict_proba(PX))
refused(lambda: circuits.Probe.fit(PX, PY[:-1]), circuits.ShapeError)
refused(lambda: circuits.Probe.fit(PX[:, :0], PY), CircuitsError)
refused(lambda: circuits.Probe.fit(PX[0], PY[:1]), circuits.ShapeError)
refused(lambda: circuits.Probe.fit(PX, PY, max_iter=2**40), OverflowError, ValueError, CircuitsError)
refused(lambda: circuits.Probe.fit(PX, np.array(["a"] * 60)), TypeError)
refused(lambda: circuits.Probe.fit(PX, PY, hook_name="a\\0b"), ValueError)
refused(lambda: ref.predict_proba(PX[:, :64]), circuits.ShapeError)
refused(lambda: ref.predict_proba(np.zeros((0, 128), np.float32)), CircuitsError)
refused(lambda: ref.evaluate(PX, PY[:10]), circuits.ShapeError)
refused(lambda: ref.evaluate(PX, PY + 5), circuits.RangeError)
lin = circuits.Probe.fit(PX, np.stack([PX[:, 0], PX[:, 1]], 1), kind="linear", l2=0.0)
refused(lambda: lin.evaluate(PX, PX[:, 0]), circuits.ShapeError)
assert lin.predict(PX).shape == (60, 2) and lin.coef_.shape == (2, 128)
assert abs(lin.score(PX, np.stack([PX[:, 0], PX[:, 1]], 1)) - 1) < 1e-5
ok()
'''),
    "size_probe_files_and_hooks": ("size", _DATA + '''
# paths and hook names crossing as C strings; a monitor's width checked against the hook point
import tempfile, pathlib
d = tempfile.mkdtemp()
p = circuits.Probe.fit(PX, PY, l2=0.5, hook_name="blocks.1.hook_resid_post")
p.save(pathlib.Path(d) / "p.probe")
q = circuits.Probe.load(pathlib.Path(d) / "p.probe")
same(q.coef_, p.coef_)
refused(lambda: p.save(os.path.join(d, "a\\0b")), ValueError)
refused(lambda: circuits.Probe.load(os.path.join(d, "missing")), circuits.CircuitsIOError)
open(os.path.join(d, "trunc.probe"), "wb").write(open(os.path.join(d, "p.probe"), "rb").read()[:100])
refused(lambda: circuits.Probe.load(os.path.join(d, "trunc.probe")), CircuitsError)
m = circuits.Model.from_pretrained(MLP2L)
refused(lambda: m.add_probe_monitor(p, lambda o, f: None, hook="blocks.0.mlp.hook_post"), circuits.ShapeError)
refused(lambda: m.add_probe_monitor(p, lambda o, f: None, hook="blocks.*.hook_resid_post"), CircuitsError)
refused(lambda: m.add_probe_monitor(p, 3), TypeError)
m.close()
refused(lambda: m.add_probe_monitor(p, lambda o, f: None), circuits.ClosedError)
ok()
'''),
}

PROBE_AUDIT = {
    "circuits_probe_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_probe_fit": ["size_probe_inputs", "owner_probe_coef_after_close"],
    "circuits_probe_free": ["owner_probe_coef_after_close", "owner_probe_monitor_outlives_probe"],
    "circuits_probe_get_info": ["size_probe_inputs", "owner_probe_coef_after_close"],
    "circuits_probe_weights": ["owner_probe_coef_after_close"],
    "circuits_probe_predict": ["size_probe_inputs", "owner_probe_monitor_outlives_probe"],
    "circuits_probe_evaluate": ["size_probe_inputs"],
    "circuits_probe_save": ["size_probe_files_and_hooks"],
    "circuits_probe_load": ["size_probe_files_and_hooks", "owner_probe_monitor_outlives_probe"],
    "circuits_context_add_probe_monitor": ["owner_probe_monitor_outlives_probe", "kept_probe_monitor_outputs",
                                           "size_probe_files_and_hooks"],
}
