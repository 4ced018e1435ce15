"""The misuse probes of the interactive views (0.10.0; circuits.vis, docs/pictures.md "Interactive
views"), merged into misuse_probes.PROBES / AUDIT at the end of that module. Same rules: each body
runs after misuse_probes.PRELUDE in its own interpreter and must end with ok().

A view function returns text the library allocated (circuits_vis_free frees it): the binding must
copy it before freeing it and never read it after (kept_*); the arrays and strings cross ctypes
as counts and pointers (size_*); a view renders a fragment again at each _repr_html_(), after the
caller's arrays and lists may have changed or gone (owner_*)."""

from __future__ import annotations

_DATA = r'''
import ctypes, json, re, tempfile
import circuits.vis as cv

def data_of(html):
    """The view's data: the JSON of its data script (the escapes decode back)."""
    m = re.search(r'<script type="application/json" id="(cv[0-9a-f]{16})-data">(.*?)</script>', html, re.S)
    assert m, html[:200]
    return m.group(1), json.loads(m.group(2))

def pattern(heads, n, seed=0):
    rng = np.random.default_rng(seed)
    p = np.tril(rng.random((heads, n, n)) + 0.1)
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)
'''

VIS_PROBES = {
    "kept_vis_text_after_free": ("kept", _DATA + '''
# the text comes back as an address and a length: it is copied, then circuits_vis_free'd; the
# copies (documents and fragments) stay whole while the library allocates and frees many more
# pages over the freed memory, and the heap is churned
toks = [f" t{i}" for i in range(40)]
views = [cv.attention_patterns(toks, pattern(2, 40, s)) for s in range(4)]
kept = [(v.html, v._repr_html_()) for v in views]
snap_text = [(a[:], b[:]) for a, b in kept]
for i in range(60):
    x = cv.grid(np.full((30, 30), float(i)), title="x" * (i * 50))
    x._repr_html_()
    del x
churn()
for (doc, frag), (doc0, frag0), s in zip(kept, snap_text, range(4)):
    assert doc == doc0 and frag == frag0
    assert doc.startswith("<!DOCTYPE html>") and doc.endswith("</html>\\n")
    assert frag.startswith('<div class="cv-view" data-view="attention"') and frag.endswith("</div>\\n")
    _, d = data_of(doc)
    want = pattern(2, 40, s)
    for h in range(2):
        for q in (0, 17, 39):
            assert np.allclose(d["pattern"][h][q], want[h, q, :q + 1], rtol=1e-5, atol=1e-7)
# the address and length by hand: string_at then free, as vis._call does, many times
for i in range(200):
    addr, n = ctypes.c_void_p(), ctypes.c_size_t()
    vals = np.full(3, float(i), np.float32)
    arr = (ctypes.c_char_p * 3)(b"a", b"b", b"c")
    N.check(N.lib.circuits_vis_colored_tokens(ctypes.byref(addr), ctypes.byref(n), arr, 3, vals, 1, None, None))
    text = ctypes.string_at(addr.value, n.value)
    N.lib.circuits_vis_free(addr)
    assert len(text) == n.value and text.endswith(b"</html>\\n") and b"\\0" not in text
N.lib.circuits_vis_free(None)
ok()
'''),
    "size_vis_inputs": ("size", _DATA + '''
# what crosses ctypes: counts from the arrays and lists, never from the caller; every wrong shape
# or type is a Python exception before C; long, odd and hostile inputs render
refused(lambda: cv.attention_patterns(["a", "b"], pattern(1, 3)), ValueError)
refused(lambda: cv.attention_patterns(["a", "b", "c"], pattern(1, 3)[:, :, :2]), ValueError)
refused(lambda: cv.attention_patterns([], np.zeros((1, 0, 0))), ValueError)
refused(lambda: cv.attention_patterns(["a"], np.zeros((0, 1, 1))), ValueError)
refused(lambda: cv.attention_patterns(["a"], np.zeros((1, 1, 1, 1))), ValueError)
refused(lambda: cv.attention_patterns(["a"], np.zeros(1)), ValueError)
refused(lambda: cv.attention_patterns(["a"], [["x"]]), TypeError)
refused(lambda: cv.attention_patterns(["a"], np.ones((1, 1), complex)), TypeError)
refused(lambda: cv.attention_patterns([1, 2], pattern(1, 2)), TypeError)
refused(lambda: cv.attention_patterns("ab", pattern(1, 2)), TypeError)
refused(lambda: cv.attention_patterns(["a", "b\\0"], pattern(1, 2)), ValueError)
refused(lambda: cv.attention_patterns(["a", "b"], pattern(2, 2), attention_head_names=["x"]), ValueError)
refused(lambda: cv.attention_patterns(["a", "b"], pattern(2, 2), attention_head_names=["x", None]), TypeError)
refused(lambda: cv.attention_patterns(["a"], [[1.0]], title=5), TypeError)
refused(lambda: cv.colored_tokens(["a", "b"], [1.0]), ValueError)
refused(lambda: cv.colored_tokens(["a", "b"], [[1.0, 2.0]]), ValueError)
refused(lambda: cv.colored_tokens_multi(["a", "b"], [1.0, 2.0]), ValueError)
refused(lambda: cv.colored_tokens_multi(["a", "b"], np.zeros((2, 0))), ValueError)
refused(lambda: cv.colored_tokens_multi(["a", "b"], np.zeros((2, 3)), labels=["x"]), ValueError)
refused(lambda: cv.grid(np.zeros((2, 3)), row_labels=["a"]), ValueError)
refused(lambda: cv.grid(np.zeros((2, 3)), col_labels=[1.5, 2, 3]), TypeError)
refused(lambda: cv.grid(np.zeros(3)), ValueError)
refused(lambda: cv.grid(np.zeros((0, 3))), ValueError)
refused(lambda: cv.grid([[1, 2], [3]]), ValueError)
# strided, transposed, float64, int and bool inputs are copied to float32 C order
p64 = pattern(3, 7).astype(np.float64)
a = cv.attention_patterns([f"t{i}" for i in range(7)], p64.transpose(0, 2, 1).copy().transpose(0, 2, 1)[::1])
_, d = data_of(a.html)
assert np.allclose(d["pattern"][2][6], p64[2, 6], rtol=1e-5)
g = cv.grid(np.arange(24).reshape(4, 6)[:, ::2], row_labels=range(4), col_labels=np.array([10, 20, 30]))
_, d = data_of(g.html)
assert d["values"][3] == [18, 20, 22] and d["cols"] == ["10", "20", "30"] and d["rows"] == ["0", "1", "2", "3"]
b = cv.colored_tokens(["x", "y"], np.array([True, False]))
assert data_of(b.html)[1]["values"] == [[1, 0]]
# hostile and odd strings; bytes as given (invalid UTF-8 shown as U+FFFD); a lone surrogate
toks = ["</script><script>alert(1)</script>", "\\u2028", "", "\\n", "a\\\\b", b"\\xff", "\\udc80", "&lt;"]
v = cv.colored_tokens(toks, np.arange(len(toks)), name="</script>", title="<b>", subtitle="\\u2029")
_, d = data_of(v.html)
assert d["tokens"] == ["</script><script>alert(1)</script>", "\\u2028", "", "\\n", "a\\\\b", "\\ufffd", "\\ufffd\\ufffd\\ufffd", "&lt;"], d["tokens"]
assert v.html.count("<script") == 2 and v.html.count("</script") == 2
# NaN and inf; 1 token; 700 tokens
x = cv.colored_tokens(["a", "b", "c"], [np.nan, np.inf, -np.inf])
assert data_of(x.html)[1]["values"] == [[None, None, None]]
one = cv.attention_patterns(["only"], [[1.0]])
assert data_of(one.html)[1]["pattern"] == [[[1]]]
big = cv.attention_patterns([f" w{i}" for i in range(700)], pattern(1, 700))
assert len(data_of(big._repr_html_())[1]["pattern"][0][699]) == 700
# save: errors as exceptions (a path with NUL, a missing directory, a directory)
refused(lambda: v.save("/tmp/a\\0b.html"), ValueError)
refused(lambda: v.save(os.path.join(tempfile.mkdtemp(), "no", "such.html")), circuits.CircuitsIOError)
refused(lambda: v.save(tempfile.mkdtemp()), circuits.CircuitsIOError)
p = v.save(os.path.join(tempfile.mkdtemp(), "v.html"))
assert open(p, encoding="utf-8").read() == v.html
ok()
'''),
    "owner_vis_inputs_changed_or_gone": ("owner", _DATA + '''
# a view renders a new fragment at each _repr_html_(): it owns copies of the arrays and strings,
# so the caller's changing or dropping them changes nothing; each fragment has its own ids
toks = ["a", "b", "c", "d"]
pat = pattern(2, 4)
want = pat.copy()
names = ["L0H0", "L0H1"]
view = cv.attention_patterns(toks, pat, attention_head_names=names, title="T")
pat[:] = 7.0
toks[0] = "CHANGED"
names[1] = "CHANGED"
del pat, toks, names
churn()
f1, f2 = view._repr_html_(), view._repr_html_()
(id1, d1), (id2, d2) = data_of(f1), data_of(f2)
assert id1 != id2 and d1 == d2
assert d1["tokens"] == ["a", "b", "c", "d"] and d1["heads"] == ["L0H0", "L0H1"]
for h in range(2):
    for q in range(4):
        assert np.allclose(d1["pattern"][h][q], want[h, q, :q + 1], rtol=1e-5)
assert '<div class="cv-title">T</div>' in f1
vals = np.arange(6, dtype=np.float32).reshape(2, 3)
g = cv.grid(vals, row_labels=["r0", "r1"])
vals[:] = -1
del vals
gc.collect()
assert data_of(g._repr_html_())[1]["values"] == [[0, 1, 2], [3, 4, 5]]
ok()
'''),
}

VIS_AUDIT = {
    "circuits_vis_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_vis_attention_patterns": ["kept_vis_text_after_free", "size_vis_inputs", "owner_vis_inputs_changed_or_gone"],
    "circuits_vis_colored_tokens": ["kept_vis_text_after_free", "size_vis_inputs"],
    "circuits_vis_grid": ["kept_vis_text_after_free", "size_vis_inputs", "owner_vis_inputs_changed_or_gone"],
    "circuits_vis_free": ["kept_vis_text_after_free"],
    "circuits_vis_save": ["size_vis_inputs"],
}
