"""The misuse probes of the gradient API (0.7.0; docs/gradients.md "Python"), merged into
misuse_probes.PROBES / AUDIT at the end of that module. Same rules: each body runs after
misuse_probes.PRELUDE in its own interpreter and must end with ok()."""

from __future__ import annotations

GRAD_PROBES = {
    "kept_backward_hook_grads": ("kept", '''
# a backward hook's gradient is a zero-copy view of the context's gradient memory: kept (whole,
# sliced, transposed, as a memoryview) past the call, the binding takes that memory; later gradient
# runs (larger ones too), other models and close() leave the kept arrays as they were
m = load()
kept = []
def keep(g, hook):
    kept.extend([g, g[0, 1:3], g.T, memoryview(g)])
m.backward(TOK, bwd_hooks=[("unembed.hook_in", keep), ("blocks.2.hook_resid_pre", keep), ("hook_embed", keep)],
           cache=False)
after = snap(kept)
m.backward(TOK_SAME, cache=False)
m.backward(TOK_BIG, weight_grads=True)
m(TOK_BIG)
churn(m)
m.close()
del m
gc.collect()
for a, s in zip(kept, after):
    same(a, s)
    touch(a)
ok()
'''),
    "kept_fwd_hook_in_grad_run": ("kept", '''
# forward hooks of a gradient run get views of the run memory, kept past the call as in any run
m = load()
kept, logits = [], []
m.run_with_hooks(TOK, return_type="loss", fwd_hooks=[("unembed.hook_out", lambda a, h: logits.append(a)),
                                                    ("blocks.1.attn.hook_pattern", lambda a, h: kept.append(a[:, 1]))],
                 bwd_hooks=[("hook_embed", lambda g, h: None)])
assert logits[0].shape == (1, TOK.shape[1], m.cfg.d_vocab_out) and kept[0].shape == (1, TOK.shape[1], TOK.shape[1])
kept += logits
after = snap(kept)
m.backward(TOK_BIG, cache=False)
churn(m)
m.close()
gc.collect()
for a, s in zip(kept, after):
    same(a, s)
    touch(a)
ok()
'''),
    "kept_grad_metric_logits": ("kept", '''
# a gradient metric callable gets a copy of the logits (the caller may keep it); C's gradient buffer
# is written by the binding during the call only, never handed out
m = load()
kept = []
def metric(lg):
    kept.append(lg)
    g = np.zeros_like(lg)
    g[:, -1, 3] = 1.0
    return float(lg[:, -1, 3].mean()), g
g = m.backward(TOK, metric, names_filter="resid_pre1")
same(kept[0], m(TOK))
snaps = snap(kept)
m.backward(TOK_BIG, metric, cache=False)
churn(m)
m.close()
gc.collect()
same(kept[0], snaps[0])
touch(kept[0]); touch(kept[1])
touch(g.cache["resid_pre1_grad"])
ok()
'''),
    "owner_grad_caches_after_close": ("owner", '''
# the gradient cache, the weight gradients and input_grad outlive the model and its later runs
m = load()
g = m.backward(TOK, weight_grads=True, input_grad=True, names_filter=["resid_pre1", "pattern0"])
arrays = [g.cache["resid_pre1"], g.cache["resid_pre1_grad"], g.cache["blocks.0.attn.hook_pattern_grad"],
          g.weight_grads["blocks.0.attn.W_Q"], g.weight_grads["embed.W_E"], g.input_grad, g.logits]
after = snap(arrays)
_, c = m.run_with_cache(TOK, incl_bwd=True, return_type="loss", names_filter="resid_pre1")
cg = c["resid_pre1_grad"]
cafter = cg.copy()
del g, c
m.backward(TOK_BIG, weight_grads=True)
churn(m)
m.close()
del m
gc.collect()
for a, s in zip(arrays, after):
    same(a, s)
    touch(a)
same(cg, cafter); touch(cg)
ok()
'''),
    "size_backward_inputs": ("size", '''
# every array a gradient run hands C is checked (shape, dtype, range) or converted; outputs are sized
# from the numbers the library reported at load, not from cfg
from circuits.grad import HookLinear
from circuits.patching import LogitDiff, TokenLoss
m = load()
refused(lambda: m.backward(TOK, LogitDiff([1, 2], [2, 3])), circuits.ShapeError)          # 2 answers, batch 1
refused(lambda: m.backward(TOK, LogitDiff([2**40], [2])), CircuitsError)                  # not wrapped
refused(lambda: m.backward(TOK, "logit", answer_tokens=1, positions=2**70), CircuitsError, OverflowError)
refused(lambda: m.backward(TOK, TokenLoss(TOK[:, :3], 2)), circuits.ShapeError)          # tokens [batch, pos]
refused(lambda: m.backward(TOK, HookLinear("resid_pre1", np.zeros((1, 8, 31)))), circuits.ShapeError)
refused(lambda: m.backward(TOK, HookLinear("resid_pre1", np.zeros((1, 9, 32)))), circuits.ShapeError)
refused(lambda: m.backward(TOK, HookLinear("blocks.*.hook_resid_pre", np.zeros((1, 8, 32)))), ValueError)
d64 = np.random.default_rng(0).standard_normal((1, 8, 32))                                  # converted
act = m.run_with_cache(TOK, names_filter="resid_pre1")[1]["resid_pre1"].astype(np.float64)
v = m.backward(TOK, HookLinear("resid_pre1", d64), cache=False).value
assert abs(v - (act * d64).sum()) <= 1e-4 * np.abs(act * d64).sum(), (v, (act * d64).sum())
refused(lambda: m.backward(TOK, lambda lg: (0.0, np.zeros((1, 8, 999), np.float32))), circuits.ShapeError)
refused(lambda: m.backward(TOK, lambda lg: (0.0, np.zeros(5))), circuits.ShapeError)
refused(lambda: m.backward(TOK, lambda lg: (0.0, "grad")), CircuitsError)
refused(lambda: m.backward(TOK, names_filter=[b"resid_pre1"]), TypeError)
refused(lambda: m.backward(TOK, names_filter=["resid_pre1\\0x"]), ValueError)
refused(lambda: m.backward(TOK.astype(np.float32)), TypeError)
refused(lambda: m.backward(residual=np.zeros((1, 8, 31), np.float32), start_at_layer=1, tokens=TOK), circuits.ShapeError)
refused(lambda: m.backward(residual=np.zeros((1, 8, 32), np.float32), start_at_layer=1, tokens=TOK[:, :3]),
        circuits.ShapeError)
refused(lambda: m.backward(TOK, bwd_hooks=[("resid_pre1", lambda g, h: g[:, :2])]), circuits.HookReturnError)
refused(lambda: m.backward(TOK, bwd_hooks=[("resid_pre1", lambda g, h: np.zeros(g.shape, np.float64))]),
        circuits.HookReturnError)
refused(lambda: m.backward(TOK, edit_grad=2**40), ValueError)
refused(lambda: m.backward(TOK, attention_mask=np.ones((1, 3), int)), CircuitsError)
refused(lambda: m.backward(TOK, attention_mask=np.full((1, 8), 2**32)), CircuitsError)
g = m.backward(TOK[:, ::2], input_grad=True, cache=False)                                  # non-contiguous: copied
assert g.input_grad.shape == (1, 4, 32) and g.logits.shape == (1, 4, 1000)
for attr in ("d_model", "d_vocab_out", "n_layers"):
    object.__setattr__(m.cfg, attr, 1)                                                    # informational only
g = m.backward(TOK, input_grad=True, weight_grads=True, names_filter="resid_pre1")
assert g.input_grad.shape == (1, 8, 32) and g.logits.shape == (1, 8, 1000)
touch(g.input_grad); touch(g.logits); touch(g.cache["resid_pre1_grad"]); touch(g.weight_grads["unembed.W_U"])
m.close()
refused(lambda: m.backward(TOK), circuits.ClosedError)
ok()
'''),
    "size_attribution": ("size", '''
# attribution patching, EAP and IG: sources checked against the hook's shape, sizes range-checked,
# node-name buffers passed with their length, top-k bounded
import circuits.attribution as A
from circuits.patching import LogitDiff
m = load(SMALL)
T2 = TOK % m.cfg.d_vocab
C2 = TOK_SAME % m.cfg.d_vocab
metric = LogitDiff([1], [2])
_, cc = m.run_with_cache(C2)
g = A.attribution_patch(m, "resid_pre", T2, cc, metric)
assert g.shape == (m.cfg.n_layers, T2.shape[1])
bad = dict(cc.cache_dict)
bad["blocks.1.hook_resid_pre"] = bad["blocks.1.hook_resid_pre"][:, :3]                    # too short: refused
refused(lambda: A.attribution_patch(m, "resid_pre", T2, bad, metric), circuits.ShapeError)
bad["blocks.1.hook_resid_pre"] = cc["blocks.1.hook_resid_pre"].astype(np.float64)         # converted
same(A.attribution_patch(m, "resid_pre", T2, bad, metric), g)
refused(lambda: A.attribution_patch(m, 2**40, T2, cc, metric), ValueError)
refused(lambda: A.attribution_patch(m, "resid_pre", T2, cc, LogitDiff([1, 2], [2, 3])), circuits.ShapeError)
up, down = A.eap_nodes(m)
e = m.edge_attribution(T2, C2, metric)
assert e.scores.shape == (len(up), len(down))
refused(lambda: e.top_edges(2**62), ValueError)
refused(lambda: e.top_edges(-1), ValueError)
big = A.EdgeAttribution(e.scores.astype(np.float64), up, down)                             # converted
assert big.top_edges(3) == e.top_edges(3)
buf = __import__("ctypes").create_string_buffer(4)
refused(lambda: N.check(N.lib.circuits_eap_node_name(m._live(), 0, 1, buf, len(buf))), CircuitsError)  # too small
refused(lambda: N.check(N.lib.circuits_eap_node_name(m._live(), 0, 10**6, buf, len(buf))), CircuitsError)
refused(lambda: N.check(N.lib.circuits_eap_top_edges(np.zeros(4, np.float32), 2, 2, 5, np.zeros(5, np.int64),
                                                      np.zeros(5, np.int64), np.zeros(5, np.float32))), CircuitsError)
refused(lambda: m.edge_attribution(T2, C2[:, :3], metric), circuits.ShapeError)
refused(lambda: m.edge_attribution(T2, C2, metric, ig_steps=2**40), circuits.RangeError)
a, comp = m.integrated_gradients("hook_embed", T2, steps=3, metric=metric)
assert a.shape == (1, T2.shape[1], m.cfg.d_model)
refused(lambda: m.integrated_gradients("hook_embed", T2, C2[:, :2], metric=metric), circuits.ShapeError)
refused(lambda: m.integrated_gradients("hook_embed", T2, steps=2**40, metric=metric), circuits.RangeError)
refused(lambda: m.integrated_gradients("blocks.9.hook_resid_pre", T2, metric=metric), CircuitsError)
object.__setattr__(m.cfg, "d_model", 1)                                                   # informational only
a2, _ = m.integrated_gradients("hook_embed", T2, steps=3, metric=metric)
same(a2, a); touch(a2)
m.close()
refused(lambda: m.edge_attribution(T2, C2, metric), circuits.ClosedError)
ok()
'''),
    "kept_attribution_hooks": ("kept", '''
# attribution, EAP and IG run several passes in one C call: hooks get copies there (the run memory
# may be replaced between passes), so keeping them is safe and keeps their values
import circuits.attribution as A
from circuits.patching import LogitDiff
m = load()
kept, snaps = [], []
def keep(a, hook):
    kept.append(a)
    snaps.append(a.copy())
m.add_hook("unembed.hook_out", keep)
m.add_hook("blocks.1.hook_resid_pre", keep, dir="bwd")
_, cc = m.run_with_cache(TOK_SAME)
A.attribution_patch(m, "resid_pre", TOK, cc, LogitDiff([1], [2]))
m.edge_attribution(TOK, TOK_SAME, LogitDiff([1], [2]), ig_steps=2)
m.integrated_gradients("hook_embed", TOK, steps=3, metric=LogitDiff([1], [2]))
assert len(kept) > 6
churn(m)
m.close()
gc.collect()
for a, s in zip(kept, snaps):
    same(a, s)
    touch(a)
ok()
'''),
    "kept_grad_in_tracebacks": ("kept", """
# a backward hook that raises keeps its frame (and a slice of the gradient) alive in the traceback;
# a metric callable that raises, one that keeps its logits; a TL-style (grad,) return; hook.ctx;
# set_use_* (which frees the context) after gradients were kept
m = load()
class Boom(Exception):
    pass
def bad(g, hook):
    local = g[:, 1:].T
    hook.ctx["g"] = g
    raise Boom()
try:
    m.backward(TOK, bwd_hooks=[("blocks.1.hook_resid_pre", bad)])
except Boom as e:
    tb = e.__traceback__
held = []
while tb is not None:
    if "local" in tb.tb_frame.f_locals:
        held.append(tb.tb_frame.f_locals["local"])
    tb = tb.tb_next
held.append(m.hook_dict["blocks.1.hook_resid_pre"].ctx["g"])
assert len(held) == 2
kept_logits = []
def metric(lg):
    kept_logits.append(lg)
    raise Boom()
refused(lambda: m.backward(TOK, metric), Boom)
held += kept_logits
held.append(m.run_with_hooks(TOK_SAME, return_type="loss", bwd_hooks=[("resid_pre2", lambda g, h: (g,))]) * np.ones(1))
tup = []
m.backward(TOK_SAME, bwd_hooks=[("resid_pre2", lambda g, h: tup.append(g[:2]) or (g * 2,))], cache=False)
held += tup
after = snap(held)
m.backward(TOK_BIG, weight_grads=True)
m.set_use_split_qkv_input(True)                      # a new context: the old one is freed
m.backward(TOK_BIG, cache=False)
churn(m)
m.close()
gc.collect()
for a, s in zip(held, after):
    same(a, s)
    touch(a)
ok()
"""),
    "reenter_grad_runs": ("kept", """
# backward hooks and metric callables that call into their own model: every call is refused
# (InvalidArgumentError), the run goes on; another thread's close / runs / hook changes wait for the
# backward pass; a model whose last reference is dropped inside its own backward hook
import time
m = load()
calls = (lambda: m(TOK), lambda: m.backward(TOK), lambda: m.add_hook("hook_embed", lambda a, h: None),
         lambda: m.add_hook("hook_embed", lambda a, h: None, dir="bwd"), lambda: m.close(),
         lambda: m.reset_hooks(), lambda: m.reset_hooks(direction="bwd"), lambda: m.run_with_cache(TOK),
         lambda: m.run_with_cache(TOK, incl_bwd=True, return_type="loss"),
         lambda: m.run_with_hooks(TOK, return_type="loss", bwd_hooks=[("hook_embed", lambda g, h: None)]),
         lambda: m.set_use_split_qkv_input(True), lambda: m.set_use_attn_result(True),
         lambda: m.edge_attribution(TOK, TOK_SAME, "logit_diff", answer_tokens=1, wrong_tokens=2),
         lambda: m.integrated_gradients("hook_embed", TOK, steps=2),
         lambda: m.attribution_patch("resid_pre", TOK, {}, "logit_diff", answer_tokens=1, wrong_tokens=2),
         lambda: m.generate(TOK, max_new_tokens=2))
def reenter(g, hook):
    for f in calls:
        refused(f, circuits.InvalidArgumentError, KeyError)
def metric(lg):
    reenter(None, None)
    return float(lg[0, -1, 1]), np.eye(1, lg.size, lg.shape[2] * (lg.shape[1] - 1) + 1, dtype=np.float32).reshape(lg.shape)
g = m.backward(TOK, metric, bwd_hooks=[("blocks.1.hook_resid_pre", reenter)], names_filter="resid_pre1")
touch(g.cache["resid_pre1_grad"])
assert not m.closed and len(m._regs) == 0
started = threading.Event()
res = {}
def slow(g, hook):
    started.set()
    gc.collect()
    time.sleep(0.2)
    return g * 2
def other():
    started.wait()
    for name, f in (("run", lambda: m(TOK_BIG)), ("add", lambda: m.add_hook("hook_embed", lambda g, h: None, dir="bwd")),
                    ("reset", lambda: m.reset_hooks(direction="bwd")), ("close", m.close)):
        f()
        res[name] = m.closed
t = threading.Thread(target=other)
t.start()
g = m.backward(TOK, bwd_hooks=[("blocks.1.hook_resid_pre", slow)], names_filter="resid_pre0", input_grad=True)
t.join()
assert res == {"run": False, "add": False, "reset": False, "close": True}, res
touch(g.cache["resid_pre0_grad"]); touch(g.input_grad)
def drop(g, hook):
    global m2
    m2 = None
    gc.collect()
m2 = load()
g2 = m2.backward(TOK, bwd_hooks=[("hook_embed", drop)], names_filter="resid_pre0")
gc.collect()
touch(g2.cache["resid_pre0_grad"])
ok()
"""),
    "size_grad_inputs_dtypes": ("size", """
# every new function with big-endian, strided, Fortran-ordered and other-width inputs (converted: the
# same result) or float / bool / complex / string ones (refused); positions, ids, steps out of range;
# runs longer than n_ctx refused before the gradient memory is sized (an ASan abort before)
import circuits.attribution as A
from circuits.grad import HookLinear
from circuits.patching import LogitDiff
m = load()
be = TOK.astype(">i8")
nc = np.repeat(TOK, 2, axis=1)[:, ::2]
g0 = m.backward(TOK, "logit_diff", answer_tokens=1, wrong_tokens=2, names_filter="resid_pre1", input_grad=True)
for t in (be, nc, TOK.astype(np.uint16), np.asfortranarray(TOK)):
    g = m.backward(t, "logit_diff", answer_tokens=np.array([1], ">i4"), wrong_tokens=np.array([2], ">u8"),
                   positions=np.array([-1], ">i8"), names_filter="resid_pre1", input_grad=True)
    same(g.cache["resid_pre1_grad"], g0.cache["resid_pre1_grad"])
    same(g.input_grad, g0.input_grad)
bad_kinds = (TOK.astype(np.float64), TOK.astype(bool), TOK.astype(object), TOK.astype(complex), TOK.astype("U3"))
for t in bad_kinds:
    for f in (lambda: m.backward(t), lambda: m.run_with_cache(t, incl_bwd=True, return_type="loss"),
              lambda: m.run_with_hooks(t, return_type="loss", bwd_hooks=[("hook_embed", lambda g, h: None)]),
              lambda: m.integrated_gradients("hook_embed", t, steps=2),
              lambda: m.edge_attribution(t, TOK, "logit_diff", answer_tokens=1, wrong_tokens=2)):
        refused(f, TypeError, ValueError, CircuitsError)
refused(lambda: m.backward(TOK, "logit", answer_tokens=1.5), TypeError, ValueError, CircuitsError)
refused(lambda: m.backward(TOK, "logit", answer_tokens=1, positions=1.0), TypeError, ValueError, CircuitsError)
for p in (100, -100, np.array([[1]])):
    refused(lambda: m.backward(TOK, "logit", answer_tokens=1, positions=p), CircuitsError)
refused(lambda: m.backward(TOK, "token_loss", positions=7), CircuitsError)       # would read tokens[:, 8]
for a in (1000, -1):
    refused(lambda: m.backward(TOK, "logit", answer_tokens=a), CircuitsError)
d = np.random.default_rng(1).standard_normal((1, 8, 32)).astype(np.float32)
v0 = m.backward(TOK, HookLinear("resid_pre1", d), cache=False).value
for dd in (d.astype(">f4"), np.asfortranarray(d), d.astype(">f8")):
    assert abs(m.backward(TOK, HookLinear("resid_pre1", dd), cache=False).value - v0) <= 1e-4 * max(1.0, abs(v0))
refused(lambda: HookLinear("resid_pre1", d.astype(complex)), TypeError)
refused(lambda: m.backward(TOK, HookLinear("resid_pre1", d[None])), circuits.ShapeError)
res = m.run_with_cache(TOK, names_filter="resid_pre1")[1]["resid_pre1"]
refused(lambda: m.backward(residual=res, start_at_layer=1, tokens=TOK, metric=HookLinear("hook_embed", d)), CircuitsError)
gr = m.backward(residual=res, start_at_layer=1, tokens=TOK, input_grad=True, cache=False).input_grad
for r in (res.astype(">f4"), np.asfortranarray(res), res.astype(np.float64)):
    same(m.backward(residual=r, start_at_layer=1, tokens=TOK, input_grad=True, cache=False).input_grad, gr)
m.backward(TOK, attention_mask=np.ones((1, 8), ">i8"), cache=False)
m.backward(TOK, attention_mask=np.ones((1, 16), bool)[:, ::2], cache=False)
for s in (2**31, 9, -9):
    refused(lambda: m.backward(residual=res, start_at_layer=s, tokens=TOK), CircuitsError, OverflowError)
_, cc = m.run_with_cache(TOK_SAME)
a0 = A.attribution_patch(m, "attn_head_out_all_pos", TOK, cc, LogitDiff([1], [2]))
src = {k: np.asfortranarray(v.astype(">f8")) for k, v in cc.cache_dict.items()}
same(A.attribution_patch(m, "attn_head_out_all_pos", be, src, LogitDiff(np.array([1], ">i8"), [2])), a0)
long = np.zeros((1, 10**5), int)
for f in (lambda: m.backward(long, cache=False), lambda: m.run_with_cache(long, incl_bwd=True, return_type="loss"),
          lambda: m.integrated_gradients("hook_embed", long, steps=1),
          lambda: m.edge_attribution(long, long, "logit_diff", answer_tokens=1, wrong_tokens=2),
          lambda: A.attribution_patch(m, "resid_pre", long, cc, LogitDiff([1], [2]))):
    refused(f, CircuitsError)
for f in (lambda: m.backward(np.zeros((1, 0), int)), lambda: m.backward(np.zeros((0, 4), int)),
          lambda: m.integrated_gradients("hook_embed", np.zeros((1, 0), int)),
          lambda: m.integrated_gradients("hook_embed", TOK, steps=0),
          lambda: m.integrated_gradients("hook_embed", TOK, steps=-1),
          lambda: m.edge_attribution(TOK, TOK_SAME, "logit_diff", answer_tokens=1, wrong_tokens=2, ig_steps=-1)):
    refused(f, CircuitsError, ValueError)
for hp in [n for n in m.hook_names() if n.startswith("blocks.1.") or "embed" in n]:
    a, c = m.integrated_gradients(hp, TOK, steps=1, metric=LogitDiff([1], [2]))  # sized from the library
    touch(a)
m.set_use_split_qkv_input(True)
for hp in ("blocks.1.ln1.hook_scale", "blocks.1.ln1.hook_normalized", "blocks.1.hook_k_input"):
    a, c = m.integrated_gradients(hp, TOK, steps=1, metric=LogitDiff([1], [2]))
    touch(a)
    g = m.backward(TOK, names_filter=hp, bwd_hooks=[(hp, lambda g, h: g * 2)])
    touch(g.cache[hp + "_grad"])
m.close()
ok()
"""),
}

GRAD_AUDIT = {
    "circuits_context_add_backward_hook": ["kept_backward_hook_grads", "kept_attribution_hooks",
                                           "kept_grad_in_tracebacks", "reenter_grad_runs"],
    "circuits_backward_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_context_backward": ["kept_backward_hook_grads", "kept_fwd_hook_in_grad_run", "kept_grad_metric_logits",
                                  "owner_grad_caches_after_close", "size_backward_inputs", "kept_grad_in_tracebacks",
                                  "reenter_grad_runs", "size_grad_inputs_dtypes"],
    "circuits_context_attribution_patch": ["size_attribution", "kept_attribution_hooks", "size_grad_inputs_dtypes"],
    "circuits_eap_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_eap_graph": ["size_attribution"],
    "circuits_eap_node_name": ["size_attribution"],
    "circuits_context_edge_attribution": ["size_attribution", "kept_attribution_hooks", "reenter_grad_runs",
                                          "size_grad_inputs_dtypes"],
    "circuits_eap_top_edges": ["size_attribution"],
    "circuits_context_integrated_gradients": ["size_attribution", "kept_attribution_hooks", "reenter_grad_runs",
                                              "size_grad_inputs_dtypes"],
}
