"""The misuse probes: small Python programs that try to make the binding touch freed memory or
hand C a buffer of the wrong size (docs/testing.md, "The misuse suite").

Each probe is the PRELUDE below followed by its own body; tests/test_misuse.py runs each in its
own interpreter (subprocess) and passes it only if the interpreter exits with status 0, prints
``PROBE OK`` last, and wrote no sanitizer report ("ERROR: AddressSanitizer", "runtime error:")
to stderr. A probe's body checks that the misuse is either refused with a Python exception
(``refused(...)``) or provably safe: a kept array reads what docs/python.md says it reads (equal
to a value the probe can predict — the final logits for ``unembed.hook_out``, a snapshot taken
right after the run that later runs, ``close()`` and garbage collection leave unchanged), and
``touch(a)`` then reads and writes the array through NumPy's memmove paths and through
libcircuits itself (instrumented code, so that an ASan build reports a stale pointer).

PROBES maps name -> (category, body). Categories: "kept" (hook arrays kept past their call),
"owner" (other zero-copy arrays and their owners), "size" (sizes and buffers crossing ctypes).
"""

from __future__ import annotations

PRELUDE = r'''
import sys, os, gc, warnings, dataclasses, threading, weakref
import numpy as np
sys.path.insert(0, os.environ["MISUSE_BINDING"])
import circuits
from circuits import _native as N
from circuits.errors import CircuitsError

warnings.simplefilter("ignore", circuits.HookViewWarning)
REPO = os.environ["MISUSE_REPO"]
TINY = os.path.join(REPO, "examples", "models", "tiny-random-gpt2")
SMALL = os.path.join(REPO, "tests", "reference", "cases", "tl_2l_lnpre_gelu")
TOK = np.array([[1, 5, 9, 300, 42, 7, 7, 100]])
TOK_SAME = np.array([[2, 6, 10, 301, 43, 8, 8, 101]])       # same shape, other values
TOK_BIG = (np.arange(3 * 40).reshape(3, 40) * 37) % 1000      # a larger run: a larger block
TOK_SMALL = np.array([[4, 3]])


def load(path=TINY, **kw):
    return circuits.Model.from_pretrained(path, **kw)


def snap(arrays):
    return [np.array(a, copy=True) for a in arrays]


def same(a, b):
    assert np.asarray(a).shape == np.asarray(b).shape, (np.asarray(a).shape, np.asarray(b).shape)
    assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True), "a kept array changed"


def churn(m=None):
    """Runs that would reuse or replace a context's run memory: other shapes, other models."""
    if m is not None and not m.closed:
        m(TOK_SAME)
        m(TOK_BIG)
        m(TOK_SMALL)
    other = load()
    other(TOK_BIG)
    other.close()
    gc.collect()
    junk = [np.full(4096 * (i + 1), 7.0, np.float32) for i in range(32)]  # reuse freed heap
    del junk


def _c_read(flat):
    # libcircuits copies A into its own memory: an instrumented read of every element
    f = circuits.FactoredMatrix(flat.reshape(-1, 1), np.ones((1, 1), np.float32))
    return f.A.reshape(-1).copy()


def _c_write(flat, values):
    # circuits_factored_vecmat writes y [rdim] = x @ (A B) = values: an instrumented write
    n = flat.size
    f = circuits.FactoredMatrix(np.ones((1, 1), np.float32), values.reshape(1, n))
    x = np.ones(1, np.float32)
    N.check(N.lib.circuits_factored_vecmat(x, f._ptr, flat))


def _root(a):
    """The array a is a view of (through slices, transposes, memoryviews): for a hook's array,
    the activation itself; for a weight, the span it was made from."""
    b = a
    while True:
        base = b.base
        if isinstance(base, memoryview):
            base = base.obj
        if not isinstance(base, np.ndarray):
            return b
        b = base


def touch(a):
    """Reads and writes every element of a (a kept array), through NumPy and through C, and
    checks the values survive the round trip. Non-contiguous arrays are touched through the
    contiguous array they are a view of where possible, and the whole root array they view is
    read through libcircuits (instrumented: a stale pointer is reported under ASan)."""
    a = np.asarray(a)
    root = _root(a)
    if root.flags.c_contiguous and root.dtype == np.float32 and root.size:
        same(_c_read(root.reshape(-1)), np.array(root, copy=True).reshape(-1))
    if not a.flags.c_contiguous and a.ndim >= 2 and a.T.flags.c_contiguous:
        a = a.T
    before = np.array(a, copy=True)
    if a.flags.c_contiguous and a.dtype == np.float32:
        flat = a.reshape(-1)
        got = _c_read(flat)
        assert np.array_equal(got, before.reshape(-1), equal_nan=True)
        if a.flags.writeable:
            _c_write(flat, np.arange(flat.size, dtype=np.float32))
            assert np.array_equal(flat, np.arange(flat.size, dtype=np.float32))
            np.copyto(a, before)
    elif a.flags.writeable:
        a[...] = before
    same(a, before)


def refused(fn, *exc):
    """fn() must raise one of exc (a Python exception, never a crash)."""
    try:
        fn()
    except exc as e:
        return e
    raise AssertionError(f"not refused: {fn}")


def ok(detail=""):
    gc.collect()
    print("PROBE OK", detail)
    sys.stdout.flush()
    sys.exit(0)
'''


def _kept_form(expr: str) -> str:
    """A probe that keeps `expr` (of the activation `a` at unembed.hook_out) and checks it reads
    the final logits, unchanged after later runs, other models' runs and close()."""
    return f'''
m = load()
kept = []
def keep(a, hook):
    kept.append({expr})
logits = m.run_with_hooks(TOK, fwd_hooks=[("unembed.hook_out", keep)])
want = np.asarray(eval({expr!r}, {{"a": logits, "np": np}}))
same(kept[0], want)
m(TOK_SAME % m.cfg.d_vocab)
churn()
same(kept[0], want)
m.close(); del m; churn()
same(kept[0], want)
touch(kept[0])
ok()
'''


PROBES = {
    # ---------------------------------------------------------------- kept hook arrays
    "kept_list_append": ("kept", _kept_form("a")),
    "kept_slice": ("kept", _kept_form("a[0, 2:5]")),
    "kept_reshape": ("kept", _kept_form("a.reshape(-1)")),
    "kept_transpose": ("kept", _kept_form("a[0].T")),
    "kept_swapaxes": ("kept", _kept_form("np.swapaxes(a, 0, 2)")),
    "kept_memoryview": ("kept", _kept_form("memoryview(a)")),
    "kept_np_asarray": ("kept", _kept_form("np.asarray(a[0])")),
    "kept_fancy_view_chain": ("kept", _kept_form("a[:, ::2][..., 1:][..., ::3].T[5:]")),
    "kept_frombuffer": ("kept", _kept_form("np.frombuffer(memoryview(a.reshape(-1)), dtype=np.float32)")),
    "kept_ravel": ("kept", _kept_form("a.ravel()")),
    "kept_after_same_shape_run": ("kept", '''
m = load()
kept = []
m.add_hook("unembed.hook_out", lambda a, h: kept.append(a))
l1 = m(TOK)
l2 = m(TOK_SAME)
assert not np.array_equal(l1, l2)
same(kept[0], l1); same(kept[1], l2)
touch(kept[0]); touch(kept[1])
ok()
'''),
    "kept_after_bigger_run": ("kept", '''
m = load()
kept = []
h = m.add_hook("unembed.hook_out", lambda a, h: kept.append(a))
l1 = m(TOK)
h.remove()
m(TOK_BIG); m(TOK_BIG[:, :5]); m(TOK_BIG)
same(kept[0], l1)
touch(kept[0])
ok()
'''),
    "kept_after_smaller_run": ("kept", '''
m = load()
kept = []
h = m.add_hook("unembed.hook_out", lambda a, h: kept.append(a))
lb = m(TOK_BIG)
h.remove()
m(TOK_SMALL)
m(TOK_BIG[:, :20] + 1)
m(TOK_SMALL)
same(kept[0], lb)
m(np.tile(TOK_BIG, (8, 1)))              # then larger again: a new block
touch(kept[0])
ok()
'''),
    "kept_after_close": ("kept", '''
m = load()
kept = []
logits = m.run_with_hooks(TOK, fwd_hooks=[("unembed.hook_out", lambda a, h: kept.append(a))])
m.close()
gc.collect()
same(kept[0], logits)
touch(kept[0])
refused(lambda: m(TOK), circuits.ClosedError)
ok()
'''),
    "kept_after_model_deleted": ("kept", '''
m = load()
kept = []
logits = m.run_with_hooks(TOK, fwd_hooks=[("unembed.hook_out", lambda a, h: kept.append(a[0]))])
del m
churn()
same(kept[0], logits[0])
touch(kept[0])
ok()
'''),
    "kept_every_hook_point": ("kept", '''
m = load(use_attn_result=True)
kept = {}
def keep(a, hook):
    kept[hook.name] = a
m.run_with_hooks(TOK, fwd_hooks=[(lambda n: True, keep)])
assert len(kept) == len(m.hook_names()), (len(kept), len(m.hook_names()))
ref = {k: np.array(v, copy=True) for k, v in kept.items()}
m(TOK_SAME % m.cfg.d_vocab)
churn()
m.close(); churn()
for k in kept:
    same(kept[k], ref[k])
for v in kept.values():
    touch(v)
ok(str(len(kept)))
'''),
    "kept_resid_pre0_reads_final_residual": ("kept", '''
# docs/python.md: a kept array reads what the run last wrote into its buffer; for
# blocks.0.hook_resid_pre that is the final residual stream (blocks.{L-1}.hook_resid_post)
m = load()
kept = []
_, cache = m.run_with_cache(TOK, names_filter=f"blocks.{m.cfg.n_layers - 1}.hook_resid_post",
                            fwd_hooks=[("blocks.0.hook_resid_pre", lambda a, h: kept.append(a))])
final = cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"]
same(kept[0], final)
m(TOK_SAME % m.cfg.d_vocab)
churn()
same(kept[0], final)
touch(kept[0])
ok()
'''),
    "kept_pattern_is_a_pattern": ("kept", '''
m = load()
kept = []
m.run_with_hooks(TOK, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, h: kept.append(a))])
p = kept[0]
churn(m); m.close(); churn()
assert p.shape == (1, m.cfg.n_heads, TOK.shape[1], TOK.shape[1])
assert np.allclose(p.sum(-1), 1, atol=1e-5) and np.all(np.triu(p[0, 0], 1) == 0)
touch(p)
ok()
'''),
    "kept_write_after_run": ("kept", '''
m = load()
kept = []
base = m(TOK)
m.run_with_hooks(TOK, fwd_hooks=[("blocks.1.hook_resid_mid", lambda a, h: kept.append(a))])
kept[0][...] = 1e6            # writes into memory the context no longer uses
again = m(TOK)
same(again, base)             # the next run is unaffected
assert np.all(kept[0] == 1e6)
touch(kept[0])
ok()
'''),
    "kept_in_hook_ctx": ("kept", '''
m = load()
def keep(a, hook):
    hook.ctx.setdefault("acts", []).append(a)
m.add_hook("unembed.hook_out", keep)
l1 = m(TOK); l2 = m(TOK_BIG); l3 = m(TOK_SMALL)
acts = m.hook_dict["unembed.hook_out"].ctx["acts"]
m.close(); churn()
for a, l in zip(acts, (l1, l2, l3)):
    same(a, l)
    touch(a)
ok()
'''),
    "kept_then_hook_raises": ("kept", '''
m = load()
kept = []
def bad(a, hook):
    kept.append(a[0])
    raise ValueError("boom")
e = refused(lambda: m.run_with_hooks(TOK, fwd_hooks=[("blocks.0.hook_resid_post", bad)]), ValueError)
snapshot = np.array(kept[0], copy=True)
del e
churn(m); m.close(); churn()
same(kept[0], snapshot)
touch(kept[0])
ok()
'''),
    "kept_traceback_only": ("kept", '''
# the hook keeps nothing, but the exception's traceback holds the hook's frame (and its array)
m = load()
def bad(a, hook):
    x = a[:, 1:]
    raise KeyError("boom")
e = refused(lambda: m.run_with_hooks(TOK, fwd_hooks=[("blocks.0.hook_resid_post", bad)]), KeyError)
tb = e.__traceback__
while tb.tb_next is not None:
    tb = tb.tb_next
x = tb.tb_frame.f_locals["x"]
snapshot = np.array(x, copy=True)
churn(m); m.close(); churn()
same(x, snapshot)
touch(x)
ok()
'''),
    "kept_then_hook_stops_run": ("kept", '''
m = load()
kept = []
def stop(a, hook):
    kept.append(a)
    raise circuits.HookStopped("enough")
refused(lambda: m.run_with_hooks(TOK, fwd_hooks=[("blocks.2.hook_resid_pre", stop)]), circuits.HookStopped)
snapshot = np.array(kept[0], copy=True)
m(TOK_SAME % m.cfg.d_vocab)
churn()
same(kept[0], snapshot)
touch(kept[0])
ok()
'''),
    "kept_from_run_with_cache_hooks": ("kept", '''
m = load()
kept = []
logits, cache = m.run_with_cache(TOK, fwd_hooks=[("unembed.hook_out", lambda a, h: kept.append(a))])
same(kept[0], logits)
l2, c2 = m.run_with_cache(TOK_BIG, fwd_hooks=[("unembed.hook_out", lambda a, h: kept.append(a))])
same(kept[1], l2)
churn(m); m.close(); churn()
same(kept[0], logits); same(kept[1], l2)
touch(kept[0]); touch(kept[1])
ok()
'''),
    "kept_many_runs_each_own_memory": ("kept", '''
m = load()
kept, want = [], []
m.add_hook("unembed.hook_out", lambda a, h: kept.append(a))
for t in (TOK, TOK_SAME, TOK_BIG, TOK_SMALL, TOK, TOK_BIG[:2, :9]):
    want.append(m(t))
    _, cache = m.run_with_cache(t, names_filter="hook_embed")
    want.append(want[-1])
m.close(); churn()
assert len(kept) == len(want)
for a, w in zip(kept, want):
    same(a, w)
    touch(a)
ok(str(len(kept)))
'''),
    "kept_partial_runs": ("kept", '''
m = load()
kept = []
m.add_hook("blocks.1.hook_resid_pre", lambda a, h: kept.append(a))
r = m(TOK, stop_at_layer=2)
x = np.array(kept[0], copy=True)
m(TOK, start_at_layer=1, residual=r[:, :, :] * 0 + 1.0)
lp = m(TOK_BIG, logit_positions=[-1, 0])
churn(m); m.close(); churn()
same(kept[0], x)
for a in kept:
    touch(a)
ok()
'''),
    "kept_generate_kv_cache": ("kept", '''
m = load()
kept = []
m.add_hook("unembed.hook_out", lambda a, h: kept.append(a))
out = m.generate(TOK, max_new_tokens=6, do_sample=False, stop_at_eos=False, use_past_kv_cache=True)
T = TOK.shape[1]
assert len(kept) == 6 and kept[0].shape[1] == T and all(k.shape[1] == 1 for k in kept[1:])
# greedy: the token of step i is the argmax of that step's last logits
for i, k in enumerate(kept):
    assert np.array_equal(k[:, -1].argmax(-1), out[:, T + i]), i
ref = snap(kept)
churn(m); m.close(); churn()
for k, r in zip(kept, ref):
    same(k, r); touch(k)
ok()
'''),
    "kept_generate_no_kv_cache": ("kept", '''
m = load()
kept = []
hk = m.add_hook("unembed.hook_out", lambda a, h: kept.append(a))
out = m.generate(TOK, max_new_tokens=6, do_sample=False, stop_at_eos=False, use_past_kv_cache=False)
hk.remove()
T = TOK.shape[1]
assert [k.shape[1] for k in kept] == list(range(T, T + 6))   # the block grows every step
for i, k in enumerate(kept):
    assert np.array_equal(k[:, -1].argmax(-1), out[:, T + i]), i
    same(k, m(out[:, : T + i]))
ref = snap(kept)
churn(m); m.close(); churn()
for k, r in zip(kept, ref):
    same(k, r); touch(k)
ok()
'''),
    "kept_generate_sampled_slices": ("kept", '''
# each step's logits, kept as a transposed slice, still read that step's logits after the
# later steps (which run in a fresh block once a step's memory was handed over)
m = load()
kept, ref = [], []
def keep(a, h):
    kept.append(a[..., :7].T)
    ref.append(a[..., :7].T.copy())
m.add_hook("unembed.hook_out", keep)
m.generate(TOK_BIG[:2, :10], max_new_tokens=5, seed=3, stop_at_eos=False)
m.generate(TOK_BIG[:2, :30], max_new_tokens=5, seed=4, stop_at_eos=False, use_past_kv_cache=False)
m.close(); churn()
assert len(kept) == 10
for k, r in zip(kept, ref):
    same(k, r); touch(k)
ok(str(len(kept)))
'''),
    "kept_from_activation_patch": ("kept", '''
# activation patching runs a clean base run, then larger batched runs, in one C call: a larger
# run replaces the run memory, with no point in between where the binding could take it; the
# hooks get copies (a kept array reads the hook's own values)
from circuits import patching
m = load()
tok = np.tile(TOK, (2, 1)); tok[1] += 1
_, clean = m.run_with_cache(tok)
kept, ref = [], []
def keep(a, h):
    kept.append(a); ref.append(a.copy())
m.add_hook("blocks.0.hook_resid_pre", keep)
m.add_hook("unembed.hook_out", keep)
patching.get_act_patch_resid_pre(m, tok[:, ::-1].copy(), clean, patching.LogitDiff(5, 9))
patching.get_act_patch_attn_head_pattern_dest_src_pos(m, tok[:, ::-1].copy(), clean, lambda lg: float(lg[0, -1, 0]),
                                                      cells_per_run=3)
m.reset_hooks(); n = len(kept)
churn(m); m.close(); churn()
assert len(kept) == n
assert len(kept) > 10
for k, r in zip(kept, ref):
    same(k, r); touch(k)
ok(str(len(kept)))
'''),
    "kept_from_path_patch": ("kept", '''
# path patching: the clean and corrupted runs, then larger cell runs, in one C call
from circuits import path_patching
m = load()
tok = np.tile(TOK, (2, 1)); tok[1] += 1
kept, ref = [], []
def keep(a, h):
    kept.append(a); ref.append(a.copy())
m.add_hook("blocks.0.hook_resid_pre", keep)
path_patching.path_patch_sweep(m, tok, tok[:, ::-1].copy(), "logit_diff", answer_tokens=5, wrong_tokens=9)
path_patching.path_patch(m, tok, tok[:, ::-1].copy(), lambda lg: float(lg[0, -1, 0]), senders=[(0, 1), (1, 2)])
m.reset_hooks(); n = len(kept)
churn(m); m.close(); churn()
assert len(kept) == n
assert len(kept) > 2
for k, r in zip(kept, ref):
    same(k, r); touch(k)
ok(str(len(kept)))
'''),
    "kept_from_metric_callback_rerun": ("kept", '''
# an activation-patching metric (called between the C call's runs) that tries to run the model
# again, larger: the library holds the context for the whole grid, so the run is refused (the
# grid fails with that error), and the patch runs' kept hook arrays survive
from circuits import patching
m = load()
_, clean = m.run_with_cache(TOK)
kept, ref, inner = [], [], [False]
def keep(a, h):
    if not inner[0]:  # the patch runs' arrays, not those of the metric's own run
        kept.append(a); ref.append(a.copy())
m.add_hook("blocks.1.hook_resid_post", keep)
def metric(lg):
    inner[0] = True
    try:
        m(TOK_BIG)
    finally:
        inner[0] = False
    return float(lg[0, -1, 0])
e = refused(lambda: patching.get_act_patch_resid_pre(m, TOK_SAME, clean, metric), CircuitsError)
assert "callback of the same context" in str(e), str(e)
assert kept, "the base run fired no hook"
m.reset_hooks(); n = len(kept)
churn(m); m.close(); churn()
assert len(kept) == n
for k, r in zip(kept, ref):
    same(k, r); touch(k)
ok(str(len(kept)))
'''),
    "kept_from_detect_head": ("kept", '''
m = load()
kept = []
m.add_hook("blocks.0.attn.hook_pattern", lambda a, h: kept.append(a))
s = circuits.detect_head(m, TOK_BIG, "previous_token_head")
assert kept, "detect_head fired no hook"
ref = snap(kept)
churn(m); m.close(); churn()
for k, r in zip(kept, ref):
    same(k, r)
    assert np.allclose(k.sum(-1), 1, atol=1e-5)
    touch(k)
ok()
'''),
    "kept_from_induction_scores": ("kept", '''
m = load()
kept = []
m.add_hook("blocks.1.attn.hook_pattern", lambda a, h: kept.append(a[:, :, 3:]))
tok = circuits.repeated_tokens(2, 12, m, seed=1)
m.induction_scores(tok)
assert kept, "induction_scores fired no hook"
ref = snap(kept)
churn(m); m.close(); churn()
for k, r in zip(kept, ref):
    same(k, r); touch(k)
ok()
'''),
    "kept_across_set_use_attn_result": ("kept", '''
m = load(use_attn_result=True)
kept = []
m.run_with_hooks(TOK, fwd_hooks=[("blocks.0.attn.hook_result", lambda a, h: kept.append(a))])
ref = snap(kept)
m.set_use_attn_result(False)     # frees the old context
m(TOK_SAME % m.cfg.d_vocab)
churn()
same(kept[0], ref[0]); touch(kept[0])
ok()
'''),
    "kept_from_threads": ("kept", '''
errs, kept = [], []
def work(seed):
    try:
        mm = load()
        mine = []
        mm.add_hook("unembed.hook_out", lambda a, h: mine.append(a))
        outs = [mm(TOK_BIG[:, : 5 + seed + i]) for i in range(4)]
        mm.close()
        kept.append((mine, outs))
    except BaseException as e:
        errs.append(e)
ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
assert not errs, errs
churn()
for mine, outs in kept:
    for a, o in zip(mine, outs):
        same(a, o); touch(a)
ok()
'''),
    "kept_nested_model_in_hook": ("kept", '''
a_m, b_m = load(), load()
kept = []
def inner(a, hook):
    kept.append(a)
def outer(a, hook):
    kept.append(b_m.run_with_hooks(TOK_BIG, fwd_hooks=[("unembed.hook_out", inner)]))
a_m.run_with_hooks(TOK, fwd_hooks=[("hook_embed", outer)])
same(kept[0], kept[1])
b_m.close(); a_m.close(); churn()
same(kept[0], kept[1]); touch(kept[0])
ok()
'''),
    "kept_only_weakly_costs_nothing": ("kept", '''
m = load()
refs = []
m.run_with_hooks(TOK, fwd_hooks=[("unembed.hook_out", lambda a, h: refs.append(weakref.ref(a)))])
gc.collect()
assert refs[0]() is None
# the kept-array machinery: a kept array's base references the run's lease, which owns the block
kept = []
m.run_with_hooks(TOK, fwd_hooks=[("unembed.hook_out", lambda a, h: kept.append(a[0]))])
b = kept[0]
while not hasattr(b, "owner"):
    b = b.base
lease = b.owner
del b
assert lease.mem, "the run memory was not taken"
w = weakref.ref(lease)
del lease, kept
gc.collect()
assert w() is None, "the lease (and its block) outlived its arrays"
ok()
'''),
    "kept_take_fails": ("kept", '''
# circuits_context_take_run_memory failing (out of memory for its handle) while an array views the
# run memory: the run raises, the context is abandoned (never reused nor freed), the model goes on
m = load()
real = N.lib.circuits_context_take_run_memory
N.lib.circuits_context_take_run_memory = lambda ctx, out: N.CIRCUITS_E_OUT_OF_MEMORY
kept = []
m.add_hook("unembed.hook_out", lambda a, h: kept.append(a))
refused(lambda: m(TOK), MemoryError)
N.lib.circuits_context_take_run_memory = real
want = np.array(kept[0], copy=True)
l2 = m(TOK_BIG)                      # a fresh context, hooks carried over
same(kept[1], l2)
churn(m); m.close(); churn()
same(kept[0], want)
touch(kept[0]); touch(kept[1])
ok()
'''),
    "kept_warning_tells_the_truth": ("kept", '''
m = load()
kept = []
with warnings.catch_warnings(record=True) as ws:
    warnings.simplefilter("always")
    m.run_with_hooks(TOK, fwd_hooks=[("hook_embed", lambda a, h: kept.append(a[:, 1:]))])
msgs = [str(w.message) for w in ws if issubclass(w.category, circuits.HookViewWarning)]
assert msgs and "stays valid" in msgs[0] and "act.copy()" in msgs[0], msgs
with warnings.catch_warnings():
    warnings.simplefilter("error")
    m.run_with_hooks(TOK, fwd_hooks=[("hook_embed", lambda a, h: a.copy())])
ok()
'''),
    # ---------------------------------------------------------------- other zero-copy arrays
    "owner_cache_after_refill": ("owner", '''
m = load()
logits, cache = m.run_with_cache(TOK)
arr = cache["resid_post0"]; pat = cache["pattern", 1]
ref = snap([arr, pat])
for t in (TOK_SAME, TOK_BIG, TOK_SMALL):
    m.run_with_cache(t)
same(arr, ref[0]); same(pat, ref[1])
touch(arr); touch(pat)
ok()
'''),
    "owner_cache_after_close": ("owner", '''
m = load()
logits, cache = m.run_with_cache(TOK)
ref = {k: np.array(v, copy=True) for k, v in cache.items()}
m.close(); del m; churn()
for k, v in cache.items():
    same(v, ref[k])
touch(cache["blocks.0.hook_resid_post"])
ok()
'''),
    "owner_cache_object_dropped": ("owner", '''
m = load()
_, cache = m.run_with_cache(TOK, remove_batch_dim=True)
arrs = [cache["resid_pre2"], cache["blocks.0.attn.hook_q"][:, 1].T]
ref = snap(arrs)
del cache; churn(m); m.close(); churn()
for a, r in zip(arrs, ref):
    same(a, r); touch(a)
ok()
'''),
    "owner_cache_dict_plain": ("owner", '''
m = load()
_, d = m.run_with_cache(TOK, return_cache_object=False, names_filter=lambda n: "hook_z" in n)
ref = {k: np.array(v, copy=True) for k, v in d.items()}
m.close(); churn()
for k, v in d.items():
    same(v, ref[k]); touch(v)
ok()
'''),
    "owner_weights_after_close": ("owner", '''
m = load()
WE, WQ, WU = m.W_E, m.get_weight("blocks.0.attn.W_Q"), m.W_U
ref = snap([WE, WQ, WU])
m.close(); del m; churn()
for w, r in zip((WE, WQ, WU), ref):
    same(w, r)
    refused(lambda: w.__setitem__((0,) * w.ndim, 1.0), ValueError)   # read-only
touch(WE)
ok()
'''),
    "owner_state_dict_after_close": ("owner", '''
m = load()
sd = m.state_dict()
ref = {k: np.array(v, copy=True) for k, v in sd.items()}
m.close(); del m; churn()
for k, v in sd.items():
    same(v, ref[k])
touch(sd["embed.W_E"]); touch(sd["blocks.0.attn.W_K"].reshape(-1)[:5])
ok(str(len(sd)))
'''),
    "owner_stacked_weights_after_close": ("owner", '''
m = load()
WQ, WO = m.W_Q, m.W_O
ref = snap([WQ, WO])
m.close(); churn()
same(WQ, ref[0]); same(WO, ref[1])
refused(lambda: m.W_Q, circuits.ClosedError)
ok()
'''),
    "owner_factors_after_drop": ("owner", '''
m = load()
f = m.OV[1, 2]
A, B = f.A, f.B
AB = f.AB
A0, B0, AB0 = A.copy(), B.copy(), AB.copy()
ov = m.OV
m.close(); del f; churn()
same(A, A0); same(B, B0); same(AB, AB0); touch(A)
# numpy's own OpenBLAS may pick other kernels than the library's: equal to rounding
assert np.allclose(A @ B, AB, rtol=1e-5, atol=1e-6 * float(np.abs(AB).max()))
assert np.isfinite(ov.norm()).all()        # factored circuits own their memory
ok()
'''),
    "owner_tokenizer_after_close": ("owner", '''
m = load()
tok = m.tokenizer
if tok is None:
    ok("no tokenizer")
ids = tok.encode("hello world", prepend_bos=False)
m.close(); del m; churn()
assert np.array_equal(tok.encode("hello world", prepend_bos=False), ids)
assert tok.decode(ids) == "hello world"
ok()
'''),
    # ---------------------------------------------------------------- sizes crossing ctypes
    "size_cfg_rebind_refused": ("size", '''
m = load()
base = m(TOK)
refused(lambda: setattr(m, "cfg", dataclasses.replace(m.cfg, d_vocab_out=1)), AttributeError)
refused(lambda: setattr(m.cfg, "d_vocab_out", 1), dataclasses.FrozenInstanceError, AttributeError)
same(m(TOK), base)
ok()
'''),
    "size_tokens_wrong_dtype": ("size", '''
m = load()
refused(lambda: m(TOK.astype(np.float32)), TypeError)
refused(lambda: m(np.array([["a"]])), TypeError, ValueError, CircuitsError)
refused(lambda: N.lib.circuits_context_forward(m._ctx, TOK.astype(np.int64), 1, 8, None, None, None),
        Exception)   # ctypes' ndpointer refuses int64 where int32_t * is declared
ok()
'''),
    "size_tokens_wrong_shape": ("size", '''
m = load()
refused(lambda: m(TOK[None]), circuits.ShapeError)
refused(lambda: m(np.zeros((1, m.cfg.n_ctx + 1), np.int64)), CircuitsError)
refused(lambda: m(np.array([[1, 2, 5000]])), circuits.RangeError)
refused(lambda: m(np.array([[1, -2]])), circuits.RangeError)
ok()
'''),
    "size_tokens_noncontiguous": ("size", '''
m = load()
big = np.asfortranarray(TOK_BIG.astype(np.int16))
want = m(np.ascontiguousarray(big[:, ::3]).astype(np.int64))
same(m(big[:, ::3]), want)
assert np.allclose(m(TOK_BIG[::-1])[::-1], m(TOK_BIG), atol=1e-5)
ok()
'''),
    "size_residual_wrong": ("size", '''
m = load()
r = m(TOK, stop_at_layer=1)
refused(lambda: m(TOK, start_at_layer=1, residual=r[..., :-1]), circuits.ShapeError)
refused(lambda: m(TOK_BIG, start_at_layer=1, residual=r), circuits.ShapeError)
refused(lambda: m(start_at_layer=1, residual=np.zeros((2, 3, 4, 5))), circuits.ShapeError)
rt = np.asfortranarray(r.astype(np.float64))      # other dtype and order: converted
same(m(TOK, start_at_layer=1, residual=rt), m(TOK, start_at_layer=1, residual=r))
refused(lambda: m(TOK, start_at_layer=99, residual=r), CircuitsError)
ok()
'''),
    "size_logit_positions": ("size", '''
m = load()
full = m(TOK)
lp = m(TOK, logit_positions=[-1, 0])
assert lp.shape == (1, 2, m.cfg.d_vocab_out) and np.allclose(lp, full[:, [-1, 0]], atol=1e-5)
refused(lambda: m(TOK, logit_positions=[8]), CircuitsError)
refused(lambda: m(TOK, logit_positions=[-9]), CircuitsError)
refused(lambda: m(TOK, logit_positions=[]), ValueError)
refused(lambda: m(TOK, stop_at_layer=99), CircuitsError)
# ctypes wraps integers silently (2**32 would reach C as 0): every integer crossing is checked
refused(lambda: m(TOK, stop_at_layer=2**32), circuits.RangeError)
refused(lambda: m(TOK, start_at_layer=2**32 + 1, residual=m(TOK, stop_at_layer=1)), circuits.RangeError)
refused(lambda: m(TOK, logit_positions=[2**64]), Exception)
refused(lambda: m(TOK, logit_positions=np.array([2**64 - 1], np.uint64)), circuits.RangeError)  # not -1
refused(lambda: m(TOK, logit_positions=[1.7]), ValueError)                  # not truncated to 1
refused(lambda: m.circuit("OV", 2**32, 0), Exception)
refused(lambda: m.virtual_OV(0, 2**32, 1, 0), Exception)
refused(lambda: m.generate(TOK, max_new_tokens=2, top_k=2**32), circuits.RangeError)
refused(lambda: m.generate(TOK, max_new_tokens=2, eos_token_id=2**32 + 7), circuits.RangeError)
refused(lambda: m.tokenizer.token_bytes(2**32), Exception) if m.tokenizer is not None else None
ok()
'''),
    "size_attention_mask": ("size", '''
m = load()
B, T = 2, TOK.shape[1]
toks = np.concatenate([TOK, TOK])
mask = np.ones((B, T), np.int64)
mask[1, :3] = 0
lg = m(toks, attention_mask=mask)
assert lg.shape == (B, T, m.cfg.d_vocab_out)
ptl = m(toks, return_type="loss", loss_per_token=True, attention_mask=mask)
assert ptl.shape == (B, T - 1) and np.all(ptl[1, :3] == 0)
_, c = m.run_with_cache(toks, attention_mask=mask, names_filter="*hook_pattern", stop_at_layer=1)
assert c["pattern", 0].shape[:2] == (B, m.cfg.n_heads)
# every crossing is sized by the binding: a mask of another shape, dtype or a transposed view
refused(lambda: m(toks, attention_mask=mask[:, :-1]), circuits.ShapeError)
refused(lambda: m(toks, attention_mask=mask.T), circuits.ShapeError)
refused(lambda: m(toks, attention_mask=mask.astype(np.float32)), TypeError)
same(m(toks, attention_mask=mask[:, ::-1][:, ::-1]), lg)
refused(lambda: m(toks, attention_mask=mask * 2), CircuitsError)
refused(lambda: m(toks, attention_mask=np.zeros((B, T), np.int32)), CircuitsError)
refused(lambda: m(toks, start_at_layer=1, attention_mask=mask[:1]), Exception)
ok()
'''),
    "size_hook_returns_wrong": ("size", '''
m = load()
for bad in (lambda a, h: a[:, :-1].copy(), lambda a, h: a.astype(np.float64), lambda a, h: 3,
            lambda a, h: np.zeros(a.shape + (1,), np.float32)):
    refused(lambda: m.run_with_hooks(TOK, fwd_hooks=[("blocks.0.hook_resid_post", bad)]), circuits.HookReturnError)
base = m(TOK)
ones = m.run_with_hooks(TOK, fwd_hooks=[("blocks.0.hook_resid_post",
                                         lambda a, h: np.asfortranarray(np.ones_like(a)))])   # non-contiguous: fine
assert ones.shape == base.shape
ok()
'''),
    "size_detect_pattern_wrong": ("size", '''
m = load()
T = TOK.shape[1]
refused(lambda: circuits.detect_head(m, TOK, np.tril(np.ones((T + 1, T + 1)))), circuits.ShapeError)
p = np.tril(np.ones((T, T)))[::-1][::-1].astype(np.float64)   # float64: converted
s = circuits.detect_head(m, TOK, p)
assert s.shape == (m.cfg.n_layers, m.cfg.n_heads)
refused(lambda: m.induction_scores(circuits.repeated_tokens(1, 4, m), seq_len=10**9), CircuitsError)
refused(lambda: m.induction_scores(circuits.repeated_tokens(1, 4, m), seq_len=-1), CircuitsError)
ok()
'''),
    "size_generate_bounds": ("size", '''
m = load()
refused(lambda: m.generate(TOK, max_new_tokens=m.cfg.n_ctx), circuits.RangeError)
refused(lambda: m.generate(TOK, max_new_tokens=-1), circuits.RangeError)
refused(lambda: m.generate(TOK, max_new_tokens=2**40), circuits.RangeError)
refused(lambda: m.generate(TOK.astype(np.float32)), TypeError)
refused(lambda: m.generate(TOK, top_p=5.0, max_new_tokens=2), CircuitsError)
out = m.generate(TOK, max_new_tokens=0)
same(out, TOK)
ok()
'''),
    "size_topk_huge_k": ("size", '''
m = load()
f = m.OV[0, 1]
n_all = f.ldim * f.rdim
v, r, c = f.topk(10**15)
assert len(v) == n_all == len(r) == len(c)
assert np.all(np.diff(v) <= 0)
v, r, c = f.topk(2**62, axis="row", index=3)
assert len(v) == f.rdim and np.all(r == 3)
v, r, c = f.topk(2**62, axis="column", index=0)
assert len(v) == f.ldim
refused(lambda: f.topk(0), circuits.RangeError)
refused(lambda: f.topk(-5), circuits.RangeError)
refused(lambda: f.topk(3, axis="row", index=10**6), CircuitsError)
full = m.circuit("full_OV", 0, 0)
v, _, _ = full.topk(10**18, axis="row", index=1)
assert len(v) == full.rdim
ok()
'''),
    "size_factored_dims_read_only": ("size", '''
m = load()
f = m.OV[0, 0]
for attr in ("ldim", "mdim", "rdim"):
    refused(lambda: setattr(f, attr, 10**6), AttributeError)
U, S, V = f.svd()
assert U.shape == (f.ldim, min(f.ldim, f.mdim, f.rdim))
assert f.diagonal().shape == (min(f.ldim, f.rdim),)
refused(lambda: f.materialize(max_elements=3), circuits.RangeError)
refused(lambda: f @ np.ones(f.rdim + 1, np.float32), circuits.ShapeError)
refused(lambda: np.ones((2, f.ldim - 1), np.float32) @ f, circuits.ShapeError)
refused(lambda: circuits.FactoredMatrix(np.ones((3, 2)), np.ones((3, 2))), circuits.ShapeError)
ok()
'''),
    "size_names_filter_and_cache_keys": ("size", '''
m = load()
refused(lambda: m.run_with_cache(TOK, names_filter=[3]), TypeError)
refused(lambda: m.run_with_cache(TOK, names_filter=["no_such_hook"]), CircuitsError)
refused(lambda: m.run_with_cache(TOK_BIG, remove_batch_dim=True), circuits.ShapeError)
_, cache = m.run_with_cache(TOK)
refused(lambda: cache["resid_post", 99], CircuitsError, KeyError)
refused(lambda: cache[3.5], TypeError)
refused(lambda: m.add_hook("x\\0y", lambda a, h: None), ValueError)
ok()
'''),
    "size_tokenizer_inputs": ("size", '''
m = load()
tok = m.tokenizer
if tok is None:
    ok("no tokenizer")
refused(lambda: tok.decode([2**40]), circuits.RangeError)
refused(lambda: tok.decode([10**6]), CircuitsError)
ids = tok.encode("\\u00e9" * 5000, prepend_bos=False)  # more ids than the first guess: measured and retried
assert tok.decode(ids) == "\\u00e9" * 5000
assert tok.token_str(0) == tok.decode([0])
refused(lambda: tok.token_bytes(-1), CircuitsError)
ok()
'''),
    "size_loss_and_rank": ("size", '''
from circuits import utils
m = load()
logits = m(TOK)
refused(lambda: utils.lm_cross_entropy_loss(logits, TOK[:, :5]), circuits.ShapeError)       # shorter tokens
refused(lambda: utils.lm_cross_entropy_loss(logits[:, :, :10], TOK), CircuitsError)         # d_vocab too small
refused(lambda: utils.lm_cross_entropy_loss(logits, TOK, np.ones((1, 3))), circuits.ShapeError)
refused(lambda: utils.lm_cross_entropy_loss(logits, TOK, np.zeros(TOK.shape)), CircuitsError)  # no pair
refused(lambda: utils.lm_cross_entropy_loss(logits, TOK.astype(np.float64)), TypeError)
ptl = utils.lm_cross_entropy_loss(logits[:, ::-1][:, ::-1], TOK, per_token=True)            # strided view
assert ptl.shape == (1, TOK.shape[1] - 1)
row = logits[0, -1]
refused(lambda: utils._rank(row, 10**6, 0), CircuitsError)                                  # token out of range
refused(lambda: utils._rank(row, 2**40, 0), Exception)                                      # not an int32
refused(lambda: utils._rank(row, 1, row.size + 1), CircuitsError)                           # k > d_vocab
r, p, ids, probs = utils._rank(row, 1, row.size)
assert ids.shape == probs.shape == (row.size,) and 0 <= r < row.size
ok()
'''),
    "size_repeated_tokens_and_baseline": ("size", '''
refused(lambda: circuits.repeated_tokens(0, 5, 10), circuits.RangeError)
refused(lambda: circuits.repeated_tokens(2, 5, 0), CircuitsError)
refused(lambda: circuits.repeated_tokens(2, 5, 10, bos=-5), circuits.RangeError)   # rows sized with a BOS
t = circuits.repeated_tokens(2, 5, 10, bos=3)
assert t.shape == (2, 11) and np.all(t[:, 0] == 3)
refused(lambda: circuits.composition_baseline(0, 4, n_samples=2), CircuitsError)
ok()
'''),
    "size_path_patch": ("size", '''
from circuits.path_patching import path_patch, path_patch_sweep
m = load(SMALL)
TOK = TOK % m.cfg.d_vocab
base = m(TOK)
kw = dict(answer_tokens=[3], wrong_tokens=[4])
grid = path_patch_sweep(m, TOK, TOK_SAME % m.cfg.d_vocab, "logit_diff", receivers=[(1, 0)], **kw)
v, lg = path_patch(m, TOK, TOK_SAME % m.cfg.d_vocab, "logit_diff", [(0, 1)], [(1, 1, "v")], return_logits=True, **kw)
for attr in ("n_layers", "n_heads", "d_vocab_out", "n_key_value_heads"):
    if hasattr(m.cfg, attr):
        object.__setattr__(m.cfg, attr, 1)      # forced: informational only; buffers are sized from C's numbers
same(path_patch_sweep(m, TOK, TOK_SAME % m.cfg.d_vocab, "logit_diff", receivers=[(1, 0)], **kw), grid)
v2, lg2 = path_patch(m, TOK, TOK_SAME % m.cfg.d_vocab, "logit_diff", [(0, 1)], [(1, 1, "v")], return_logits=True, **kw)
same(lg2, lg)
refused(lambda: path_patch(m, TOK, TOK, "logit_diff", [(0, 0)], answer_tokens=[1, 2], wrong_tokens=[1]), circuits.ShapeError)
refused(lambda: path_patch(m, TOK, TOK[:, :-1], "logit", [(0, 0)], answer_tokens=1), circuits.ShapeError)
refused(lambda: path_patch(m, TOK, TOK, "logit", [(2**32, 0)], answer_tokens=1), circuits.RangeError)
refused(lambda: path_patch(m, TOK, TOK, "logit", [(0, 0)], answer_tokens=2**40), circuits.RangeError)
refused(lambda: path_patch(m, TOK, TOK, "logit", [(0, 0)], answer_tokens=1, positions=[TOK.shape[1]]), circuits.RangeError)
refused(lambda: path_patch(m, TOK, TOK, "logit", [(0, 0)], [(1, 5, "k")], answer_tokens=1), circuits.RangeError)
refused(lambda: path_patch_sweep(m, TOK, TOK, "prob"), ValueError)
same(m(TOK), base)
ok()
'''),
    "kept_path_patch_metric_logits": ("kept", '''
from circuits.path_patching import path_patch_sweep
m = load(SMALL)
TOK = TOK % m.cfg.d_vocab
kept, snaps = [], []
def metric(logits):                  # a copy of the C run's logits: the caller may keep it
    kept.append(logits)
    snaps.append(logits.copy())
    return float(logits[0, -1, 0])
grid = path_patch_sweep(m, TOK, TOK_SAME % m.cfg.d_vocab, metric)
assert len(kept) == 1 + m.cfg.n_layers * m.cfg.n_heads   # the clean run, then every cell
m(TOK_SAME % m.cfg.d_vocab)
churn()
m.close()
del m
gc.collect()
for a, s in zip(kept, snaps):
    same(a, s)
    touch(a)
ok()
'''),
}

# One probe per config attribute: rebinding it is refused, and even forcing a new value into
# the frozen Config (object.__setattr__) cannot change a buffer's size: every output is sized
# from the numbers the library reported at load.
_CFG_ATTRS = ("d_vocab_out", "d_vocab", "d_model", "n_layers", "n_heads", "d_head", "d_mlp", "n_ctx",
              "attn_only", "use_attn_result")
for _attr in _CFG_ATTRS:
    PROBES[f"size_cfg_{_attr}_forced"] = ("size", f'''
m = load(SMALL)
TOK = TOK % m.cfg.d_vocab
base = m(TOK)
loss = m(TOK, return_type="loss")
_, cache = m.run_with_cache(TOK)
res = m(TOK, stop_at_layer=1)
scores = m.all_composition_scores("Q")
refused(lambda: setattr(m, "cfg", dataclasses.replace(m.cfg, {_attr}=1)), AttributeError)
refused(lambda: setattr(m.cfg, "{_attr}", 1), dataclasses.FrozenInstanceError, AttributeError)
object.__setattr__(m.cfg, "{_attr}", 1)          # forced: informational only
same(m(TOK), base)
same(m(TOK, return_type="loss"), loss)
same(m(TOK, stop_at_layer=1), res)
lp = m(TOK, logit_positions=[-1])
assert lp.shape == base[:, -1:].shape and np.allclose(lp, base[:, -1:], atol=1e-5)
same(m.all_composition_scores("Q"), scores)
_, c2 = m.run_with_cache(TOK)
assert len(c2) == len(cache)
assert m.mlp_composition_scores("K").shape[0] == scores.shape[0]
assert m.copying_scores().shape == scores.shape[:2]
assert m.induction_scores(circuits.repeated_tokens(1, 4, m)).shape == scores.shape[:2]
assert circuits.detect_head(m, TOK, "previous_token_head").shape == scores.shape[:2]
assert m.generate(TOK, max_new_tokens=2, do_sample=False, stop_at_eos=False).shape == (1, TOK.shape[1] + 2)
assert m.W_Q.shape[0] == scores.shape[0]
ok()
''')

PROBES["size_resid_stacks"] = ("size", '''
m = load(SMALL)
T2 = TOK % m.cfg.d_vocab
_, cache = m.run_with_cache(T2)
L, D, V = m.cfg.n_layers, m.cfg.d_model, m.cfg.d_vocab_out
st = cache.accumulated_resid()
assert st.shape == (L + 1, 1, T2.shape[1], D)
same(cache.logit_attrs(st.astype(np.float64), 3), cache.logit_attrs(st, 3))   # converted, not reinterpreted
before = np.array(st, copy=True)
cache.apply_ln_to_stack(st, layer=1)
same(st, before)                                                              # the input is not written
refused(lambda: cache.logit_attrs(st[:, :, :3], 3), CircuitsError)            # positions disagree with the cache
refused(lambda: cache.logit_attrs(st, np.array([1.5])), TypeError)
refused(lambda: cache.logit_attrs(st, np.zeros((5, 5), dtype=np.int64)), CircuitsError)
refused(lambda: cache.apply_ln_to_stack(st[0, 0]), CircuitsError)
refused(lambda: cache.stack_neuron_results(-1, neuron_slice=[10**6]), CircuitsError)
refused(lambda: cache.accumulated_resid(pos_slice=[2**40]), CircuitsError)
refused(lambda: cache.accumulated_resid(pos_slice=np.array([2**64 - 1], np.uint64)), CircuitsError)  # not -1
refused(lambda: cache.accumulated_resid(layer=2**40), CircuitsError)
refused(lambda: m.tokens_to_residual_directions(np.array([2**40])), CircuitsError)  # no silent int32 wrap
# direct_logit_attribution's **options are the C options' flags only: a count, the struct's size
# or an index array of another dtype would make C read past an array
refused(lambda: cache.direct_logit_attribution(3, pos_slice=[1], n_positions=4000), TypeError)
refused(lambda: cache.direct_logit_attribution(3, size=4096), TypeError)
refused(lambda: cache.direct_logit_attribution(3, incl_embeds=2**40), CircuitsError)
same(cache.direct_logit_attribution(3, kind="decompose", batch_indices=np.zeros(1, np.int32)),
     cache.direct_logit_attribution(3, kind="decompose"))                     # converted to int64, not reinterpreted
lens = cache.logit_lens(pos_slice=-1)
dla = cache.direct_logit_attribution(3, 4, kind="full")
assert lens.shape == (L + 1, 1, V) and dla.shape[1:] == (1, T2.shape[1])
for attr in ("d_vocab_out", "d_model", "n_layers", "d_mlp", "n_heads"):
    object.__setattr__(m.cfg, attr, 1)                                        # forced: sizes come from the library
same(cache.logit_lens(pos_slice=-1), lens)
same(cache.direct_logit_attribution(3, 4, kind="full"), dla)
same(cache.accumulated_resid(), st)
kept = cache.stack_head_results()
m.close()
refused(lambda: cache.accumulated_resid(), circuits.ClosedError)
refused(lambda: m.tokens_to_residual_directions(3), circuits.ClosedError)
churn()
touch(kept); touch(lens)                                                      # results are NumPy's own
ok()
''')

PROBES["owner_modules_after_close"] = ("owner", '''
# the module tree's weights (model.embed.W_E, model.blocks[l].attn.W_Q, ...) outlive close(); a
# module object read after close() is refused or gives valid memory, never freed memory
m = load()
arrs = [m.embed.W_E, m.pos_embed.W_pos, m.unembed.W_U, m.blocks[0].attn.W_Q, m.blocks[1].attn.W_O,
        m.blocks[0].mlp.W_in, m.blocks[0].attn.b_Q]
attn, hp = m.blocks[0].attn, m.blocks[0].attn.hook_pattern
ref = snap(arrs)
m.close(); del m; churn()
for a, r in zip(arrs, ref):
    same(a, r)
    refused(lambda: a.__setitem__((0,) * a.ndim, 1.0), ValueError)   # read-only
try:
    late = attn.W_K
except CircuitsError:
    late = None
if late is not None:
    assert late.ndim == 3 and np.isfinite(late).all()
    touch(late)
assert hp.name == "blocks.0.attn.hook_pattern"
touch(arrs[0])
ok()
''')
PROBES["kept_hook_tokens"] = ("kept", '''
# hook_tokens lends int32 ids: a kept view stays valid after later runs and close(); a return of the
# wrong shape or dtype, or ids outside the vocabulary, are refused with an exception
m = load()
m.set_use_hook_tokens(True)
kept = []
m.add_hook("hook_tokens", lambda a, h: kept.append(a))
m(TOK)
assert kept and kept[0].dtype == np.int32 and kept[0].shape == TOK.shape, (kept[0].dtype, kept[0].shape)
ref = snap(kept)
m.reset_hooks()
churn(m)
for bad in (np.zeros((1, 3), np.int32), np.zeros(TOK.shape, np.float32), np.full(TOK.shape, 10**6, np.int32)):
    refused(lambda: m.run_with_hooks(TOK, fwd_hooks=[("hook_tokens", lambda a, h, b=bad: b)]), Exception)
m.close(); churn()
same(kept[0], ref[0]); touch(kept[0])
ok()
''')
PROBES["size_set_num_threads"] = ("size", '''
before = circuits.get_num_threads() if hasattr(circuits, "get_num_threads") else N.lib.circuits_get_num_threads()
for n in (0, -3, 64, 1):
    circuits.set_num_threads(n)
    assert N.lib.circuits_get_num_threads() >= 1
refused(lambda: circuits.set_num_threads(2**40), Exception)   # ctypes refuses what an int cannot hold
m = load()
m(TOK_BIG)
ok()
''')

PROBES["size_model_diff"] = ("size", '''
a = load()
b = load(fold_ln=False)
d = circuits.diff(a, b, TOK)
kinds, grid = d.by_layer()
assert grid.shape == (len(kinds), a.cfg.n_layers) and d[-1]["name"] == "logits"
object.__setattr__(a.cfg, "n_layers", 1)          # forced: informational only; sizes come from C's numbers
kinds2, grid2 = circuits.diff(a, b, TOK).by_layer()
same(grid2, grid)
refused(lambda: circuits.diff(a, b, TOK[None]), circuits.ShapeError)                       # 3-D tokens
refused(lambda: circuits.diff(a, b, TOK + 1000), circuits.RangeError)                       # outside the vocabulary
refused(lambda: circuits.diff(a, b, TOK, attention_mask=np.ones((1, 3), int)), circuits.ShapeError)
refused(lambda: circuits.diff(a, b, TOK, attention_mask=np.full(TOK.shape, 2**32)), circuits.RangeError)
refused(lambda: circuits.diff(a, b, TOK, names=[b"hook_embed"]), TypeError)
refused(lambda: circuits.diff(a, b, TOK, names=["blocks.*.hook_nothing"]), circuits.NotFoundError)
refused(lambda: circuits.diff(a, load(SMALL), TOK % 50), circuits.ConfigError)              # other shapes
refused(lambda: circuits.diff(a, "b", TOK), TypeError)
e = d.get("blocks.0.hook_resid_post")                # plain Python values: nothing points into C
b.close()
refused(lambda: circuits.diff(a, b, TOK), circuits.ClosedError)
refused(lambda: b.diff(a, TOK), circuits.ClosedError)
gc.collect()
assert e["layer"] == 0 and isinstance(e["rel_error"], float) and str(d).startswith("relative error")
same(a.diff(a, TOK).by_layer()[1], np.zeros_like(grid))
ok()
''')

PROBES["size_dequantize"] = ("size", '''
# circuits.dequantize sizes its output itself from n and checks n against the bytes in C: no
# byte count or value count a caller passes can make the library read or write past a buffer.
from circuits import quant
raw = np.arange(144 * 3, dtype=np.uint16).astype(np.uint8)            # three Q4_K blocks
want = circuits.dequantize("Q4_K", raw)
assert want.shape == (768,)
same(circuits.dequantize("Q4_K", raw.reshape(3, 144)[:, :].T.copy().T), want)  # any layout: its bytes, C order
same(circuits.dequantize("Q4_K", raw[::-1][::-1]), want)
same(circuits.dequantize("Q4_K", memoryview(raw.tobytes())), want)
strided = np.zeros(2 * raw.size, np.uint8)
strided[::2] = raw
same(circuits.dequantize("Q4_K", strided[::2]), want)                 # non-contiguous: copied first
for n in (0, 255, 257, 512, 1024, 2**40):
    refused(lambda: circuits.dequantize("Q4_K", raw, n), circuits.ShapeError)
refused(lambda: circuits.dequantize("Q4_K", raw, -1), ValueError)
refused(lambda: circuits.dequantize("Q4_K", raw[:-1]), circuits.ShapeError)  # a partial block
refused(lambda: circuits.dequantize(2**31, raw), Exception)           # ctypes refuses the int
refused(lambda: circuits.dequantize(99, raw), circuits.DtypeError)
# the raw C call: NULL buffers with n > 0 are refused, wrong sizes too
out = np.empty(256, np.float32)
assert N.lib.circuits_dequantize(N.CIRCUITS_DTYPE_Q4_K, None, 144, out, 256) == N.CIRCUITS_E_INVALID_ARGUMENT
assert N.lib.circuits_dequantize(N.CIRCUITS_DTYPE_Q4_K, raw.ctypes.data, 143, out, 256) == N.CIRCUITS_E_SHAPE
refused(lambda: N.lib.circuits_dequantize(N.CIRCUITS_DTYPE_Q4_K, raw.ctypes.data, 144, np.empty(256), 256),
        Exception)                                                    # float64 out: ndpointer refuses it
_c_read(want)
ok()
''')

PROBES["owner_stored_weights"] = ("owner", '''
import ctypes
# keep_stored_dtype: the kept matrices have no float32 memory of the model's to view. Every access
# path (properties, the module tree, state_dict, get_weight) gives read-only float32 copies that
# outlive close(); the raw C view call refuses with data NULL; circuits_model_weight_read writes
# at most buf_len floats (the binding passes its own array's size), NULL and float64 refused.
BF16 = os.path.join(REPO, "tests", "reference", "cases", "hf_qwen2_bf16")
m = circuits.Model.from_pretrained_no_processing(BF16, keep_stored_dtype=True)
assert m.weight_dtype("blocks.0.attn.W_Q") == "BF16"
sd = m.state_dict()
arrs = [m.W_Q, m.W_K, m.blocks[1].attn.W_O, m.blocks[0].mlp.W_in, m.embed.W_E, m.unembed.W_U,
        m.get_weight("blocks.1.mlp.W_out"), sd["blocks.0.attn.W_Q"], sd["blocks.0.ln1.w"]]
ref = snap(arrs)
t = N.Tensor()
ptr = m._mptr()
assert N.lib.circuits_model_weight(ptr, b"blocks.0.attn.W_Q", ctypes.byref(t)) == N.CIRCUITS_E_DTYPE
assert not t.data and t.ndim == 3
n = int(np.prod([t.shape[i] for i in range(t.ndim)]))
buf = np.full(n + 8, 7.0, np.float32)
assert N.lib.circuits_model_weight_read(ptr, b"blocks.0.attn.W_Q", buf, n - 1, None) == N.CIRCUITS_E_RANGE
assert (buf == 7.0).all()                                  # refused before writing anything
assert N.lib.circuits_model_weight_read(ptr, b"blocks.0.attn.W_Q", buf, n, None) == 0
assert (buf[n:] == 7.0).all()                              # nothing past the product of the shape
same(buf[:n].reshape(arrs[0].shape[1:]), arrs[0][0])
assert N.lib.circuits_model_weight_read(ptr, b"blocks.0.attn.W_Q", None, n, None) == N.CIRCUITS_E_INVALID_ARGUMENT
refused(lambda: N.lib.circuits_model_weight_read(ptr, b"blocks.0.attn.W_Q", np.empty(n), n, None), Exception)
refused(lambda: m.weight_dtype("blocks.0.attn.W_nope"), CircuitsError)
m(TOK_SMALL)
m.close(); del m, sd; churn()
for a, r in zip(arrs, ref):
    same(a, r)
    refused(lambda: a.__setitem__((0,) * a.ndim, 1.0), ValueError)   # read-only
touch(arrs[0])
ok()
''')

PROBES["owner_stored_weights_close_race"] = ("owner", '''
# close() from one thread while another reads a stored model's weights (BF16, no tokenizer:
# nothing else holds the model) or runs analyses on it outside the model's lock: each call must
# hold the model's handle, not a pointer int taken from it, or close() frees the model under a
# call that released the GIL (before the fix: segfaults, 'no weight named' from freed memory).
BF16 = os.path.join(REPO, "tests", "reference", "cases", "hf_qwen2_bf16")
import random, time
random.seed(0)
closed_seen = 0
for it in range(60):
    m = circuits.Model.from_pretrained_no_processing(BF16, keep_stored_dtype=True)
    go = threading.Event(); errs = []
    cache = m.run_with_cache(TOK_SMALL)[1]
    def reader(m=m, cache=cache):
        global closed_seen
        go.set()
        try:
            while True:
                m.state_dict(); m.get_weight("unembed.W_U"); m.weight_dtype("embed.W_E"); m.weight_names()
                m.OV; m.all_composition_scores("Q"); m.copying_scores(); m.tokens_to_residual_directions(np.array([3, 4]))
                cache.logit_lens(); cache.accumulated_resid(apply_ln=True); cache.decompose_resid()
        except circuits.ClosedError:
            closed_seen += 1
        except BaseException as e:
            errs.append(e)
    t = threading.Thread(target=reader); t.start(); go.wait()
    time.sleep(random.random() * 0.003)
    m.close(); del m, cache
    t.join()
    assert not errs, errs
assert closed_seen == 60
ok()
''')

PROBES["owner_gguf_after_close"] = ("owner", '''
# GGUF files lend memory the directory loads do not: float32 weights viewed in the file's mapping
# (mmap) or in buffers the load converted (llama.cpp's Q/K permutation undone, Gemma's norm
# minus 1), the tokenizer read from the file, and with keep_stored_dtype a mixed model whose
# kept matrices are copies while its norms are views. All of it must outlive close() + GC.
G = os.path.join(REPO, "tests", "reference", "gguf")
held = []
for f, kw in (("hf_llama_gqa.f32.gguf", {}), ("hf_gemma.f32.gguf", {"mmap": False}),
              ("hf_tiny_random_gpt2.f32.gguf", {}), ("hf_llama_gqa.mixed.gguf", {"keep_stored_dtype": True}),
              ("hf_neox.mixed.gguf", {"keep_stored_dtype": True, "mmap": False})):
    m = circuits.Model.from_pretrained_no_processing(os.path.join(G, f), **kw)
    tok = m.tokenizer
    ids = tok.encode("hello world") if tok is not None else None
    kept = []
    logits = m.run_with_hooks(TOK_SMALL % m.cfg.d_vocab,
                              fwd_hooks=[("blocks.0.hook_resid_post", lambda a, hook: kept.append(a))])
    arrs = [m.W_Q, m.get_weight("blocks.0.attn.W_Q"), m.blocks[0].ln1.w, m.embed.W_E, m.unembed.W_U,
            m.state_dict()["blocks.0.ln2.w"], kept[0], logits]
    held.append((f, arrs, snap(arrs), tok, ids))
    m.close(); del m
churn()
for f, arrs, ref, tok, ids in held:
    for a, r in zip(arrs, ref):
        same(a, r)
    for a in arrs:
        touch(a)
    if tok is not None:                        # the borrowed tokenizer keeps the model's memory
        same(tok.encode("hello world"), ids); assert isinstance(tok.decode(ids), str)
ok()
''')

PROBES["owner_context_close_race"] = ("owner", '''
# close() from one thread while another is in the patching helpers that resolve hook names and
# shapes on the model's context outside a run (_point_shape / _expected_shape: mean_activations,
# run_ablated, the activation patching): before they took the model's lock, close() freed the
# context under circuits_context_resolve_hook_name (ASan: heap-use-after-free in cx_hooks_select).
import random, time
from circuits import patching
random.seed(1)
closed_seen = 0
hooks = [f"blocks.{l}.{p}" for l in range(2) for p in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "attn.hook_z", "mlp.hook_post")] * 10
for it in range(80):
    m = load()
    go = threading.Event(); errs = []
    def reader(m=m):
        global closed_seen
        go.set()
        try:
            while True:
                patching.mean_activations(m, TOK_SMALL, hooks)
        except circuits.ClosedError:
            closed_seen += 1
        except BaseException as e:
            errs.append(e)
    t = threading.Thread(target=reader); t.start(); go.wait()
    time.sleep(random.random() * 0.004)
    m.close(); del m
    t.join()
    assert not errs, errs
assert closed_seen == 80, closed_seen
ok()
''')

# ---------------------------------------------------------------------------------------------
# The audit (issue 12): every bound C function, and where a size or a pointer crosses ctypes
# through it, the probes that pin down the two classes of defect — a size the caller could
# change after the library reported it (stale / rebindable sizes) and a pointer that could
# outlive its owner. tests/test_misuse.py checks that every function of circuits._native's
# table is listed here and that every probe named exists.
# ---------------------------------------------------------------------------------------------

_SCALAR = "scalars, or a string the library copies: nothing sized, nothing kept"
PROBES["size_patching_and_ablation"] = ("size", '''
import circuits.patching as cp
m = load(SMALL)
T2 = TOK % m.cfg.d_vocab
_, cache = m.run_with_cache(T2)
metric = cp.LogitDiff([1], [2])
g = cp.get_act_patch_resid_pre(m, T2, cache, metric)
assert g.shape == (m.cfg.n_layers, T2.shape[1])
bad = dict(cache.cache_dict)
bad["blocks.1.hook_resid_pre"] = bad["blocks.1.hook_resid_pre"][:, :3]           # too short: refused, not read
refused(lambda: cp.get_act_patch_resid_pre(m, T2, bad, metric), circuits.ShapeError)
bad["blocks.1.hook_resid_pre"] = cache["blocks.1.hook_resid_pre"].astype(np.float64)  # converted
same(cp.get_act_patch_resid_pre(m, T2, bad, metric), g)
refused(lambda: cp.get_act_patch_resid_pre(m, T2, cache, cp.LogitDiff([1, 2], [2, 3])), circuits.ShapeError)
refused(lambda: cp.get_act_patch_resid_pre(m, T2, cache, cp.LogitDiff([2**40], [2])), CircuitsError)
refused(lambda: cp.get_act_patch_resid_pre(m, T2, cache, metric, cells_per_run=2**40), CircuitsError)
# a Loss metric's tokens / attention_mask are read as [batch, pos] of the logits: shorter ones are refused
refused(lambda: cp.get_act_patch_resid_pre(m, T2, cache, cp.Loss(T2[:, :2])), circuits.ShapeError)
refused(lambda: cp.Loss(T2, attention_mask=np.ones((1, 2), int))(m(T2)), circuits.ShapeError)
refused(lambda: cp.Loss(T2[:, :2])(m(T2)), circuits.ShapeError)
from circuits.path_patching import path_patch_sweep
refused(lambda: path_patch_sweep(m, T2, T2[:, ::-1].copy(), cp.Loss(T2[:, :2])), circuits.ShapeError)
refused(lambda: path_patch_sweep(m, T2, T2[:, ::-1].copy(), "loss", attention_mask=np.full(T2.shape, 2**32)),
        circuits.RangeError)                                                   # not wrapped to 0
kept = []
def keeper(logits):                       # keeps every logits array it is given: copies, still valid
    kept.append(logits)
    return float(logits[0, -1, 1] - logits[0, -1, 2])
g2 = cp.get_act_patch_resid_pre(m, T2, cache, keeper)
gc.collect()
assert all(np.isfinite(k).all() for k in kept) and np.allclose(g2, g, atol=1e-4)
refused(lambda: cp.run_ablated(m, T2, [cp.Ablation("z0", "mean", values=np.zeros(3))]), circuits.ShapeError)
refused(lambda: cp.run_ablated(m, T2, [cp.Ablation("z0", "resample", values=np.zeros((2, 3)))]), circuits.ShapeError)
refused(lambda: cp.run_ablated(m, T2, [cp.Ablation("z0", head=2**40)]), CircuitsError)
refused(lambda: cp.run_ablated(m, T2, [cp.Ablation("blocks.*.attn.hook_z")]), ValueError)
means = cp.mean_activations(m, np.concatenate([T2, T2]), ["z0"], batch_size=1)
out = cp.run_ablated(m, T2, [cp.Ablation("z0", "mean", values=means["blocks.0.attn.hook_z"])])
assert out.shape == (1, T2.shape[1], m.cfg.d_vocab_out)
refused(lambda: cp.mean_activations(m, T2, ["z0"], batch_size=0), CircuitsError)
m.close()
refused(lambda: cp.run_ablated(m, T2, []), circuits.ClosedError)
ok()
''')


AUDIT = {
    "circuits_version_number": _SCALAR,
    "circuits_version_string": "a static string, decoded at once",
    "circuits_abi_version": _SCALAR,
    "circuits_status_string": "a static string, decoded at once",
    "circuits_last_error": "a thread-local string, decoded at once (N.last_error)",
    "circuits_clear_error": _SCALAR,
    "circuits_load_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_model_load": "the path is copied by the library; the model is owned by _ModelHandle",
    "circuits_model_free": ["owner_weights_after_close", "owner_state_dict_after_close", "owner_tokenizer_after_close", "owner_gguf_after_close"],
    "circuits_model_config": ["size_cfg_d_vocab_out_forced", "size_cfg_rebind_refused"],
    "circuits_model_weight": ["owner_weights_after_close", "owner_gguf_after_close"],
    "circuits_model_weight_count": ["owner_state_dict_after_close", "owner_gguf_after_close"],
    "circuits_model_weight_at": ["owner_state_dict_after_close", "owner_stored_weights"],
    "circuits_model_weight_dtype": ["owner_stored_weights", "owner_stored_weights_close_race"],
    "circuits_model_weight_read": ["owner_stored_weights", "owner_stored_weights_close_race"],
    "circuits_context_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_context_create": ["kept_across_set_use_attn_result"],
    "circuits_context_free": ["kept_after_close", "kept_across_set_use_attn_result"],
    "circuits_context_hook_point_count": "names copied into HookPoint objects at load",
    "circuits_context_hook_point": ["owner_context_close_race"],  # and at load: names copied into HookPoints
    "circuits_context_add_hook": ["size_names_filter_and_cache_keys", "kept_nested_model_in_hook"],
    "circuits_context_remove_hook": ["kept_after_bigger_run"],
    "circuits_context_clear_hooks": ["kept_across_set_use_attn_result"],
    "circuits_act_name": "a 256-byte buffer passed with its length",
    "circuits_context_resolve_hook_name": ["owner_context_close_race"],  # patching._point_shape
    "circuits_context_forward": ["kept_list_append", "size_tokens_wrong_dtype", "size_tokens_wrong_shape",
                                 "size_tokens_noncontiguous", "size_cfg_d_vocab_out_forced"],
    "circuits_run_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_context_run": ["kept_partial_runs", "size_residual_wrong", "size_logit_positions",
                             "size_cfg_d_model_forced"],
    "circuits_context_take_run_memory": ["kept_only_weakly_costs_nothing", "kept_many_runs_each_own_memory",
                                         "kept_take_fails"],
    "circuits_run_memory_data": "not needed by the binding (views are made from the activation's own pointer)",
    "circuits_run_memory_nbytes": "not needed by the binding",
    "circuits_run_memory_free": ["kept_only_weakly_costs_nothing"],
    "circuits_cache_create": ["owner_cache_after_refill"],
    "circuits_cache_free": ["owner_cache_after_close", "owner_cache_object_dropped"],
    "circuits_context_run_with_cache_opts": ["kept_from_run_with_cache_hooks", "owner_cache_after_refill",
                                             "size_names_filter_and_cache_keys", "size_attention_mask"],
    "circuits_context_run_with_cache": "not called by the binding since 0.5.0 (run_with_cache goes through circuits_context_run_with_cache_opts)",
    "circuits_cache_count": ["owner_cache_dict_plain"],
    "circuits_cache_at": ["owner_cache_dict_plain"],
    "circuits_cache_get": ["size_names_filter_and_cache_keys"],
    "circuits_cache_nbytes": ["owner_cache_after_close"],
    "circuits_resid_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_ablation_init": "a struct of the binding's, sized by ctypes",
    "circuits_patch_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_patch_grid_shape": ["size_patching_and_ablation"],
    "circuits_context_activation_patch": ["size_patching_and_ablation"],
    "circuits_context_run_ablated": ["size_patching_and_ablation"],
    "circuits_context_mean_activations": ["size_patching_and_ablation", "owner_context_close_race"],
    "circuits_resid_shape": ["size_resid_stacks"],
    "circuits_resid_stack": ["size_resid_stacks", "owner_stored_weights_close_race"],
    "circuits_resid_labels": ["size_resid_stacks"],
    "circuits_resid_apply_ln": ["size_resid_stacks"],
    "circuits_model_residual_directions": ["size_resid_stacks", "owner_stored_weights_close_race"],
    "circuits_resid_logit_attrs": ["size_resid_stacks"],
    "circuits_logit_lens": ["size_resid_stacks"],
    "circuits_direct_logit_attribution": ["size_resid_stacks"],
    "circuits_factored_create": ["size_factored_dims_read_only"],
    "circuits_factored_free": ["owner_factors_after_drop"],
    "circuits_factored_shape": ["size_factored_dims_read_only"],
    "circuits_factored_factors": ["owner_factors_after_drop"],
    "circuits_factored_transpose": ["size_factored_dims_read_only"],
    "circuits_factored_matmul": ["size_factored_dims_read_only"],
    "circuits_factored_matmul_dense": ["size_factored_dims_read_only"],
    "circuits_factored_rmatmul_dense": ["size_factored_dims_read_only"],
    "circuits_factored_matvec": ["size_factored_dims_read_only"],
    "circuits_factored_vecmat": ["size_factored_dims_read_only"],
    "circuits_factored_norm": ["owner_factors_after_drop"],
    "circuits_factored_svd": ["size_factored_dims_read_only"],
    "circuits_factored_eigenvalues": ["size_factored_dims_read_only"],
    "circuits_factored_corner": ["size_factored_dims_read_only"],
    "circuits_factored_diagonal": ["size_factored_dims_read_only"],
    "circuits_factored_topk": ["size_topk_huge_k"],
    "circuits_factored_materialize": ["size_factored_dims_read_only", "owner_factors_after_drop"],
    "circuits_model_ov": ["owner_factors_after_drop", "owner_stored_weights_close_race"],
    "circuits_model_qk": ["owner_factors_after_drop"],
    "circuits_model_full_ov": ["size_topk_huge_k"],
    "circuits_model_full_qk": "returns a FactoredMatrix: as circuits_model_full_ov",
    "circuits_model_pos_qk": "returns a FactoredMatrix: as circuits_model_full_ov",
    "circuits_model_rotary_qk": "returns a FactoredMatrix: as circuits_model_full_ov",
    "circuits_model_composition_circuit": "returns a FactoredMatrix: as circuits_model_full_ov",
    "circuits_model_virtual_ov": "returns a FactoredMatrix: as circuits_model_full_ov",
    "circuits_model_virtual_weights": "returns a FactoredMatrix: as circuits_model_full_ov",
    "circuits_model_composition_scores": ["size_cfg_n_layers_forced", "size_cfg_n_heads_forced", "owner_stored_weights_close_race"],
    "circuits_model_mlp_composition_scores": ["size_cfg_n_layers_forced"],
    "circuits_composition_baseline": ["size_repeated_tokens_and_baseline"],
    "circuits_model_copying_scores": ["size_cfg_n_heads_forced", "owner_stored_weights_close_race"],
    "circuits_detect_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_context_detect_heads": ["kept_from_detect_head", "size_detect_pattern_wrong", "size_cfg_n_heads_forced"],
    "circuits_repeated_tokens": ["size_repeated_tokens_and_baseline"],
    "circuits_context_induction_scores": ["kept_from_induction_scores", "size_detect_pattern_wrong"],
    "circuits_tokenizer_load": ["size_tokenizer_inputs"],
    "circuits_tokenizer_free": ["owner_tokenizer_after_close"],
    "circuits_encode_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_tokenizer_encode": ["size_tokenizer_inputs"],
    "circuits_tokenizer_decode": ["size_tokenizer_inputs"],
    "circuits_tokenizer_token": ["size_tokenizer_inputs"],
    "circuits_tokenizer_vocab_size": _SCALAR,
    "circuits_tokenizer_bos_id": _SCALAR,
    "circuits_tokenizer_eos_id": _SCALAR,
    "circuits_model_tokenizer": ["owner_tokenizer_after_close"],
    "circuits_generate_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_context_generate": ["kept_generate_kv_cache", "kept_generate_no_kv_cache", "kept_generate_sampled_slices",
                                  "size_generate_bounds", "size_cfg_n_ctx_forced"],
    "circuits_lm_cross_entropy": ["size_attention_mask", "size_loss_and_rank"],
    "circuits_logits_rank": ["size_loss_and_rank"],
    "circuits_metric_init": "not called by the binding yet (patching will: give it a size probe then)",
    "circuits_metric_eval": "not called by the binding yet (patching will: give it a size probe then)",
    "circuits_path_patch_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_context_path_patch": ["size_path_patch", "kept_path_patch_metric_logits"],
    "circuits_context_path_patch_sweep": ["size_path_patch", "kept_path_patch_metric_logits"],
    "circuits_set_num_threads": ["size_set_num_threads"],
    "circuits_get_num_threads": ["size_set_num_threads"],
    "circuits_diff_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_model_diff": ["size_model_diff"],
    "circuits_diff_count": ["size_model_diff"],
    "circuits_diff_at": ["size_model_diff"],
    "circuits_diff_free": ["size_model_diff"],
    "circuits_dtype_name": _SCALAR,
    "circuits_dtype_block": "two scalars written through ctypes.byref of the binding's own c_int64 / c_size_t",
    "circuits_dequantize": ["size_dequantize"],
}

# The gradient API's probes and audit entries (0.7.0) live in their own file.
from misuse_probes_grad import GRAD_AUDIT, GRAD_PROBES  # noqa: E402

assert not set(GRAD_PROBES) & set(PROBES) and not set(GRAD_AUDIT) & set(AUDIT)
PROBES.update(GRAD_PROBES)
AUDIT.update(GRAD_AUDIT)

# The SAE API's probes and audit entries (0.8.0) live in their own file.
from misuse_probes_sae import SAE_AUDIT, SAE_PROBES  # noqa: E402

assert not set(SAE_PROBES) & set(PROBES) and not set(SAE_AUDIT) & set(AUDIT)
PROBES.update(SAE_PROBES)
AUDIT.update(SAE_AUDIT)
# Steering, control vectors and contrastive vectors (0.8.0) live in their own file.
from misuse_probes_steer import STEER_AUDIT, STEER_PROBES  # noqa: E402

assert not set(STEER_PROBES) & set(PROBES) and not set(STEER_AUDIT) & set(AUDIT)
PROBES.update(STEER_PROBES)
AUDIT.update(STEER_AUDIT)
# The feature statistics' probes and audit entries (0.8.0) live in their own file.
from misuse_probes_features import FEATURES_AUDIT, FEATURES_PROBES  # noqa: E402

assert not set(FEATURES_PROBES) & set(PROBES) and not set(FEATURES_AUDIT) & set(AUDIT)
PROBES.update(FEATURES_PROBES)
AUDIT.update(FEATURES_AUDIT)
# Linear probes' probes and audit entries (0.8.0) live in their own file.
from misuse_probes_probe import PROBE_AUDIT, PROBE_PROBES  # noqa: E402

assert not set(PROBE_PROBES) & set(PROBES) and not set(PROBE_AUDIT) & set(AUDIT)
PROBES.update(PROBE_PROBES)
AUDIT.update(PROBE_AUDIT)
# Datasets and jobs (0.9.0) live in their own file.
from misuse_probes_jobs import JOB_AUDIT, JOB_PROBES  # noqa: E402

assert not set(JOB_PROBES) & set(PROBES) and not set(JOB_AUDIT) & set(AUDIT)
PROBES.update(JOB_PROBES)
AUDIT.update(JOB_AUDIT)
# The interactive views (0.10.0) live in their own file.
from misuse_probes_vis import VIS_AUDIT, VIS_PROBES  # noqa: E402

assert not set(VIS_PROBES) & set(PROBES) and not set(VIS_AUDIT) & set(AUDIT)
PROBES.update(VIS_PROBES)
AUDIT.update(VIS_AUDIT)
