"""The misuse probes of the SAE API (0.8.0; docs/saes.md "Python"), merged into
misuse_probes.PROBES / AUDIT at the end of that module. Same rules: each body runs after
misuse_probes.PRELUDE in its own interpreter and must end with ok(). Every body starts with
SAE_PRELUDE: SAE directories written with NumPy (bindings/python/tests/safetensors_np.py) for the
tiny GPT-2 (d_model 32) and mlp-2l (d_model 128)."""

from __future__ import annotations

SAE_PRELUDE = r'''
import json, tempfile
sys.path.insert(0, os.path.join(REPO, "bindings", "python", "tests"))
import safetensors_np
from circuits import SAE
ROOT = tempfile.mkdtemp(prefix="misuse_sae_")
HOOK = "blocks.1.hook_resid_pre"


def write_sae(name, hook=HOOK, d_in=32, d_sae=64, arch="standard", hook_out=None, d_out=None, seed=0, reshape="none",
              cfg_extra=None, weights=None):
    rng = np.random.default_rng(seed)
    tc = hook_out is not None
    d_out = d_out if tc else d_in
    w = {"W_enc": rng.standard_normal((d_in, d_sae)) * 2, "W_dec": rng.standard_normal((d_sae, d_out)) * 0.3,
         "b_enc": rng.standard_normal(d_sae) * 0.1, "b_dec": rng.standard_normal(d_out) * 0.1}
    if weights is not None:
        w = weights
    cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": not tc,
           "normalize_activations": "none", "reshape_activations": reshape, "architecture": arch,
           "metadata": {"sae_lens_version": "6.54.12", "hook_name": hook}}
    if tc:
        cfg["d_out"] = d_out
        cfg["metadata"]["hook_name_out"] = hook_out
    cfg.update(cfg_extra or {})
    path = os.path.join(ROOT, name)
    os.makedirs(path)
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump(cfg, f)
    safetensors_np.save(os.path.join(path, "sae_weights.safetensors"), {k: np.asarray(v, np.float32) for k, v in w.items()})
    return path


def sae(name="s", **kw):
    return SAE.load_from_disk(write_sae(name, **kw))
'''

_SAE_PROBES = {
    "owner_sae_views_after_close": ("owner", '''
# the parameter views (whole, sliced, transposed, as a memoryview, from state_dict) keep the
# library's SAE alive after sae.close() and the last reference to the object: they read the
# stored weights, and libcircuits reads them (touch) without a stale pointer
s = sae(seed=1)
want = {k: np.array(v) for k, v in s.state_dict().items()}
views = [s.W_enc, s.W_enc.T, s.W_dec[3:9, 1:], s.b_dec[::2], memoryview(s.b_enc), s.state_dict()["W_dec"],
         s.weight("b_dec")]
after = snap(views)
s.close()
refused(lambda: s.W_enc, circuits.ClosedError)
refused(lambda: s.encode(np.zeros(32)), circuits.ClosedError)
refused(lambda: s.decode(np.zeros(64)), circuits.ClosedError)
refused(lambda: s.state_dict(), circuits.ClosedError)
s.close()  # idempotent
del s
churn()
for v, a in zip(views, after):
    same(v, a)
    touch(v)
same(views[0], want["W_enc"])
for v in views:
    refused(lambda: np.asarray(v).__setitem__((0,) * np.asarray(v).ndim, 1.0), ValueError)  # read-only
ok()
'''),
    "owner_sae_attached_outlives_object": ("owner", '''
# a model keeps the library's SAE while it is attached: the SAE object closed and dropped, the
# model's runs (forward, cache, generate, a context change) read it safely; model.close() and
# reset_saes let it go; the views outlive both
m = load()
s = sae(seed=2)
w = s.W_dec
m.add_sae(s, use_error_term=True)
m.add_hook("blocks.1.hook_resid_pre.hook_sae_acts_post", lambda a, h: a.__imul__(0.5))
ref_logits = m(TOK)
s.close(); del s
churn(m)
same(m(TOK), ref_logits)
_, c = m.run_with_cache(TOK, names_filter="*hook_sae*")
touch(c["blocks.1.hook_resid_pre.hook_sae_acts_post"])
m.generate(TOK, max_new_tokens=3, do_sample=False, verbose=False)
m.set_use_attn_result(True)              # a new context: the SAE is attached to it from the model's handle
assert np.allclose(m(TOK), ref_logits, atol=1e-5)   # (per-head results summed: rounding only)
m.set_use_hook_mlp_in(True)
assert np.allclose(m(TOK), ref_logits, atol=1e-5)
s2 = sae("second", seed=3)
m.add_sae(s2)                            # replaces the first: the model lets it go
del s2
churn(m)
m(TOK_BIG)
m.reset_saes()
m(TOK)
m.add_sae(sae("third", seed=4))
m.close()
gc.collect()
touch(w)
ok()
'''),
    "owner_sae_views_outlive_model": ("owner", '''
# views of an SAE and caches of spliced runs outlive the model, its contexts and the SAE
m = load()
s = sae(seed=5)
_, c = m.run_with_cache_with_saes(TOK, saes=[s], use_error_term=True)
arrays = [c[n] for n in c.keys() if "hook_sae" in n] + [s.W_enc, s.b_dec]
assert len(arrays) == 8
after = snap(arrays)
m.close(); s.close(); del m, s, c
churn()
for a, b in zip(arrays, after):
    same(a, b)
    touch(a)
ok()
'''),
    "kept_sae_hook_arrays": ("kept", '''
# arrays a hook keeps from the SAE's points (hook_sae_input .. hook_sae_output, error term on)
# are views of the run memory, handed over to them: later runs (larger, other SAEs attached,
# the SAE detached), close() and garbage collection leave them as they were after the run
m = load()
s = sae(seed=6)
kept = []
def keep(a, hook):
    kept.extend([a, a[0, 1:3], a.T])
names = ["blocks.1.hook_resid_pre." + n for n in ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post",
                                                   "hook_sae_recons", "hook_sae_error", "hook_sae_output")]
m.run_with_hooks_with_saes(TOK, saes=[s], use_error_term=True, fwd_hooks=[(n, keep) for n in names])
assert len(kept) == 18 and kept[6].shape == (1, 8, 64)
after = snap(kept)
m.run_with_saes(TOK_BIG, saes=[s])
m.add_sae(sae("other", hook="blocks.2.hook_resid_post", seed=7))
churn(m)
m.close()
del s
gc.collect()
for a, b in zip(kept, after):
    same(a, b)
    touch(a)
ok()
'''),
    "kept_sae_generate": ("kept", '''
# generation with an SAE attached: each step's kept arrays at the SAE's points read that step's block
m = load()
m.add_sae(sae(seed=8))
kept = []
m.add_hook("blocks.1.hook_resid_pre.hook_sae_acts_post", lambda a, h: kept.append(a))
m.add_hook("blocks.1.hook_resid_pre.hook_sae_output", lambda a, h: kept.append(a[:, -1]))
m.generate(TOK, max_new_tokens=5, do_sample=False, verbose=False)
m.generate(TOK_SMALL, max_new_tokens=3, use_past_kv_cache=False, do_sample=False, verbose=False)
assert len(kept) == 16
after = snap(kept)
churn(m)
m.reset_saes()
m.close()
gc.collect()
for a, b in zip(kept, after):
    same(a, b)
    touch(a)
ok()
'''),
    "size_sae_encode_decode_inputs": ("size", '''
# encode / decode / forward size every buffer from what circuits_sae_get_info reported; inputs of
# any dtype, byte order and layout are copied to C-contiguous float32; wrong shapes are refused
s = sae(seed=9)
x = np.random.default_rng(0).standard_normal((3, 5, 32))
want = s.encode(x.astype(np.float32))
for xx in (x, x.astype(">f4"), np.asfortranarray(x), x[:, ::-1][:, ::-1], x.astype(np.float16), x.tolist(),
           x.astype(np.int64)):
    got = s.encode(xx)
    assert got.shape == (3, 5, 64)
    touch(got)
    if np.asarray(xx).dtype != np.float16 and np.asarray(xx).dtype.kind == "f":
        same(got, want)
out = s.decode(want)
same(s.decode(want.astype(">f8")), out)
same(s.decode(np.asfortranarray(want), x=x), out)
same(s.forward(x), out)
for bad in (np.zeros((3, 33)), np.zeros(()), np.zeros((32, 3)), np.zeros((2, 8, 4))):
    refused(lambda: s.encode(bad), circuits.ShapeError)
for bad in (np.zeros(2, complex), np.array(["x"] * 32), np.array([object()] * 32)):
    refused(lambda: s.encode(bad), TypeError, ValueError)
refused(lambda: s.decode(np.zeros((4, 65))), circuits.ShapeError)
refused(lambda: s.decode(np.zeros((4, 64)), x=np.zeros((5, 32))), circuits.ShapeError)
refused(lambda: s.decode(np.zeros((4, 64)), x=np.zeros((4, 31))), circuits.ShapeError)
refused(lambda: s.decode(np.zeros((2, 2, 64)), x=np.zeros((4, 32))), circuits.ShapeError)
assert s.encode(np.zeros((0, 32))).shape == (0, 64) and s.decode(np.zeros((4, 0, 64))).shape == (4, 0, 32)
# the informational config cannot resize anything: forced values change nothing
refused(lambda: setattr(s.cfg, "d_sae", 10**6), AttributeError)
s.cfg.__dict__["d_sae"] = 10**6
s.cfg.__dict__["d_in"] = 1
same(s.encode(x), want)
# a hook_z SAE: [.., heads, d_head] or flat; d_head remembered from encode as SAELens
z = sae("z", hook="blocks.0.attn.hook_z", reshape="hook_z", seed=10)
a = z.encode(np.ones((2, 4, 8)))
assert a.shape == (2, 64) and z.decode(a).shape == (2, 4, 8)
refused(lambda: z.encode(np.ones((2, 3, 8))), circuits.ShapeError)
assert z.decode(a, x=np.ones((2, 2, 16))).shape == (2, 2, 16)
ok()
'''),
    "size_sae_attach_widths": ("size", '''
# attaching checks widths against the model (the library's numbers, not cfg.json's word):
# another d_model, a transcoder's d_out, hook_z with n_heads * d_head != d_in, points that are
# not [batch, pos, d], names that are not hook points, points replaced already
m = load()
big = load(os.path.join(REPO, "examples", "models", "mlp-2l"))    # d_model 128
s32 = sae("s32", seed=11)
s128 = sae("s128", d_in=128, seed=12)
refused(lambda: big.add_sae(s32), circuits.ShapeError)
refused(lambda: m.add_sae(s128), circuits.ShapeError)
refused(lambda: m.run_with_saes(TOK, saes=[s128]), circuits.ShapeError)
refused(lambda: m.add_sae(sae("tc", hook="blocks.0.ln2.hook_normalized", hook_out="blocks.0.hook_mlp_out",
                              arch="transcoder", d_out=31)), circuits.ShapeError)
refused(lambda: m.add_sae(sae("z", hook="blocks.0.attn.hook_z", reshape="hook_z", d_in=24)), circuits.ShapeError)
for hook in ("blocks.0.attn.hook_pattern", "blocks.0.ln1.hook_scale", "unembed.hook_out", "blocks.0.attn.hook_q"):
    refused(lambda: m.add_sae(sae("p" + hook, hook=hook)), circuits.CircuitsError)
for hook in ("blocks.7.hook_resid_pre", "nonsense", "blocks.0.mlp.hook_in", "resid_pre1", "blocks.*.hook_resid_pre"):
    refused(lambda: m.add_sae(sae("n" + hook.replace("*", "x"), hook=hook)), circuits.CircuitsError)
assert m.acts_to_saes == {} and big.acts_to_saes == {}
big.add_sae(s128)
m.add_sae(s32)
m.add_sae(sae("tc2", hook="blocks.1.ln2.hook_normalized", hook_out="blocks.1.hook_mlp_out", arch="transcoder", d_out=32))
refused(lambda: m.add_sae(sae("out_of_tc", hook="blocks.1.hook_mlp_out", seed=3)), circuits.InvalidArgumentError)
tc_in = sae("in_of_tc", hook="blocks.1.ln2.hook_normalized", seed=3)
m.add_sae(tc_in)                         # keyed by the input hook, as SAELens: replaces the transcoder
assert m.acts_to_saes == {HOOK: s32, "blocks.1.ln2.hook_normalized": tc_in} and "blocks.1.hook_mlp_out" in m.hook_dict
for mod in (m, big):
    out = mod(TOK % 256)
    assert out.shape == (1, 8, mod.cfg.d_vocab_out)
    touch(out)
m.close(); big.close()
ok()
'''),
    "size_sae_replaced_names": ("size", '''
# with an SAE attached its replaced point is no hook point: hooks, names filters, patterns and
# patching name it no more (NotFoundError), its own points take every use
m = load()
m.add_sae(sae(seed=13), use_error_term=True)
refused(lambda: m.add_hook(HOOK, lambda a, h: None), circuits.NotFoundError)
refused(lambda: m.run_with_hooks(TOK, fwd_hooks=[(HOOK, lambda a, h: None)]), circuits.NotFoundError)
refused(lambda: m.run_with_cache(TOK, names_filter=HOOK), circuits.NotFoundError)
refused(lambda: m.run_with_cache(TOK, names_filter="resid_pre1"), circuits.NotFoundError)
assert HOOK not in m.hook_dict
_, c = m.run_with_cache(TOK, names_filter=["blocks.1.*", HOOK + ".hook_sae_error"])
assert HOOK + ".hook_sae_acts_post" in c and HOOK not in c
refused(lambda: c[HOOK], KeyError)
touch(c[HOOK + ".hook_sae_error"])
h = m.add_hook(HOOK + ".hook_sae_acts_post", lambda a, h: None)
m.reset_saes()                                        # the hook leaves with the SAE
assert HOOK in m.hook_dict
m.add_hook(HOOK, lambda a, h: None, prepend=True)     # a rebuild of the registrations: no stale name
h.remove()
refused(lambda: m.add_sae(sae("again", seed=14)), circuits.InvalidArgumentError)  # a hook at the point
m.reset_hooks()
m.add_sae(sae("again2", seed=14))
m(TOK)
m.close()
ok()
'''),
    "reenter_sae_calls_in_hook": ("kept", '''
# from inside a hook of the same model every SAE call that changes the model is refused (the C
# context is running); encode / decode and other models are fine; the model stays usable
m = load()
other = load()
s = sae(seed=15)
t = sae("t", hook="blocks.2.hook_resid_pre", seed=16)
errs, ok_calls = [], []
def inner(a, hook):
    for f in (lambda: m.add_sae(t), lambda: m.reset_saes(), lambda: m.reset_saes(HOOK),
              lambda: m.run_with_saes(TOK, saes=[t]), lambda: m.run_with_cache_with_saes(TOK, saes=[t]),
              lambda: m.run_with_hooks_with_saes(TOK, saes=[t]), lambda: m.saes(saes=[t]).__enter__(),
              lambda: m.set_use_attn_result(True), lambda: m.close()):
        try:
            f()
            errs.append("not refused")
        except circuits.InvalidArgumentError as e:
            errs.append(type(e).__name__)
    ok_calls.append(s.encode(a.copy()).shape)
    ok_calls.append(other.run_with_saes(TOK, saes=[t]).shape)
m.add_sae(s)
m.run_with_hooks(TOK, fwd_hooks=[(HOOK + ".hook_sae_input", inner)])
assert errs == ["InvalidArgumentError"] * 9, errs
assert ok_calls == [(1, 8, 64), (1, 8, 1000)], ok_calls
assert m.acts_to_saes == {HOOK: s} and other.acts_to_saes == {}
touch(m(TOK))
m.close(); other.close()
ok()
'''),
    "owner_sae_close_races": ("owner", '''
# sae.close() and model.close() from one thread while another encodes, attaches or runs with the
# SAE: each call holds the handle it uses, so the library's SAE is never freed under it
import random, time
random.seed(2)
path = write_sae("race", seed=17)
x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
seen = {"closed": 0}
for it in range(60):
    s = SAE.load_from_disk(path)
    m = load()
    go = threading.Event(); errs = []
    def worker(s=s, m=m):
        go.set()
        try:
            while True:
                s.encode(x); s.decode(np.ones((2, 64)))
                m.run_with_saes(TOK_SMALL, saes=[s])
        except circuits.ClosedError:
            seen["closed"] += 1
        except BaseException as e:
            errs.append(e)
    th = threading.Thread(target=worker); th.start(); go.wait()
    time.sleep(random.random() * 0.004)
    if it % 2:
        s.close()
    else:
        m.close()
    th.join()
    assert not errs, errs
    m.close(); del s, m
assert seen["closed"] == 60, seen
ok()
'''),
    "size_sae_hostile_files": ("size", '''
# hostile SAE directories are refused with an exception, never a crash or a huge allocation
refused(lambda: SAE.load_from_disk(os.path.join(ROOT, "missing")), circuits.CircuitsError)
p = write_sae("bad_shape", weights={"W_enc": np.zeros((31, 64)), "W_dec": np.zeros((64, 32)),
                                    "b_enc": np.zeros(64), "b_dec": np.zeros(32)})
refused(lambda: SAE.load_from_disk(p), circuits.CircuitsError)
p = write_sae("huge", cfg_extra={"d_sae": 2**40})
refused(lambda: SAE.load_from_disk(p), circuits.CircuitsError)
p = write_sae("neg", cfg_extra={"d_in": -32})
refused(lambda: SAE.load_from_disk(p), circuits.CircuitsError)
p = write_sae("arch", cfg_extra={"architecture": "matching_pursuit"})
refused(lambda: SAE.load_from_disk(p), circuits.UnsupportedError)
p = write_sae("trunc")
wf = os.path.join(p, "sae_weights.safetensors")
data = open(wf, "rb").read()
open(wf, "wb").write(data[: len(data) // 2])
refused(lambda: SAE.load_from_disk(p), circuits.CircuitsError)
p = write_sae("cfg")
open(os.path.join(p, "cfg.json"), "w").write('{"d_in": 32, "d_sae": ')
refused(lambda: SAE.load_from_disk(p), circuits.CircuitsError)
refused(lambda: SAE.load_from_disk(ROOT + "\\0x"), ValueError)
refused(lambda: SAE.load_from_disk(p, device="cuda"), ValueError)
ok()
'''),
}


def _with_prelude(body: str) -> str:
    return SAE_PRELUDE + body


SAE_PROBES = {name: (cat, _with_prelude(body)) for name, (cat, body) in _SAE_PROBES.items()}

SAE_AUDIT = {
    "circuits_sae_load": ["size_sae_hostile_files", "owner_sae_views_after_close"],
    "circuits_sae_free": ["owner_sae_views_after_close", "owner_sae_attached_outlives_object",
                          "owner_sae_close_races"],
    "circuits_sae_get_info": ["size_sae_encode_decode_inputs"],
    "circuits_sae_weight": ["owner_sae_views_after_close", "owner_sae_views_outlive_model"],
    "circuits_sae_encode": ["size_sae_encode_decode_inputs", "owner_sae_close_races", "reenter_sae_calls_in_hook"],
    "circuits_sae_decode": ["size_sae_encode_decode_inputs", "owner_sae_close_races"],
    "circuits_context_add_sae": ["size_sae_attach_widths", "owner_sae_attached_outlives_object",
                                 "reenter_sae_calls_in_hook", "kept_sae_hook_arrays", "owner_sae_close_races"],
    "circuits_context_remove_sae": ["size_sae_replaced_names", "kept_sae_hook_arrays", "reenter_sae_calls_in_hook"],
    "circuits_context_sae_count": "scalars: a count read by tests/test_sae.py (the binding keeps its own list)",
    "circuits_context_sae_at": "not called by the binding (it keeps its own list of what it attached; "
                               "tests/test_sae.py checks the two agree)",
}
