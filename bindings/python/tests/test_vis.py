"""circuits.vis (docs/pictures.md "Interactive views"): CircuitsVis's functions over the C views.
What each returns (the document as str() / .html, the fragment as _repr_html_(), save()), the data
the page carries (the JSON of its data script) for each input layout, and the ValueError /
TypeError of wrong input raised before any C call. Needs no torch: a tensor is stood in for by an
object with torch's detach().cpu().numpy(). The browser tests are test_vis_browser.py."""

from __future__ import annotations
import os

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import circuits
import circuits.vis as cv
from circuits import _native as N
from conftest import BINDING


def data_of(html: str):
    """(root id, the data JSON) of a page."""
    m = re.search(r'<script type="application/json" id="(cv[0-9a-f]{16})-data">(.*?)</script>', html, re.S)
    assert m, html[:300]
    return m.group(1), json.loads(m.group(2))


def causal(heads: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.tril(rng.random((heads, n, n)) + 0.05)
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


class FakeTensor:
    """torch's conversion path without torch: detach().cpu().numpy()."""

    def __init__(self, a):
        self.a = np.asarray(a)
        self.calls = []

    def detach(self):
        self.calls.append("detach")
        return self

    def cpu(self):
        self.calls.append("cpu")
        return self

    def numpy(self):
        self.calls.append("numpy")
        return self.a


def test_exported_and_torch_free():
    assert circuits.vis is cv and "vis" in circuits.__all__
    assert set(cv.__all__) == {"RenderedHTML", "attention_patterns", "colored_tokens", "colored_tokens_multi", "grid"}
    # importing the views imports no torch (a fresh interpreter: other tests may have imported it)
    code = f"import sys; sys.path.insert(0, {str(BINDING)!r}); import circuits.vis; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_attention_document_fragment_and_data():
    toks = ["<|endoftext|>", " When", " Mary", " and", " John"]
    p = causal(3, 5)
    v = cv.attention_patterns(toks, p, attention_head_names=["L0H0", "L0H1", "L1H2"], title="Induction",
                              subtitle="gpt2-small")
    assert isinstance(v, cv.RenderedHTML) and v.view == "attention"
    assert str(v) == v.html and v.html.startswith("<!DOCTYPE html>") and v.html.endswith("</html>\n")
    assert "<title>Induction</title>" in v.html and '<div class="cv-subtitle">gpt2-small</div>' in v.html
    f1, f2 = v._repr_html_(), v._repr_html_()
    for f in (f1, f2):
        assert f.startswith('<div class="cv-view" data-view="attention" id="cv') and f.endswith("</div>\n")
        assert "<!DOCTYPE" not in f and "<body" not in f
    (i0, d0), (i1, d1), (i2, d2) = data_of(v.html), data_of(f1), data_of(f2)
    assert len({i0, i1, i2}) == 3, "every page and fragment has ids of its own"
    assert d0 == d1 == d2
    assert d0["tokens"] == toks and d0["heads"] == ["L0H0", "L0H1", "L1H2"]
    for h in range(3):
        for q in range(5):
            assert len(d0["pattern"][h][q]) == q + 1  # keys after the query are not sent
            np.testing.assert_allclose(d0["pattern"][h][q], p[h, q, :q + 1], rtol=1e-5)
    assert "Induction" in repr(v) or "attention" in repr(v)


def test_attention_two_dims_is_one_head_and_tensors_convert():
    t = FakeTensor(np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None])  # float64 [dest, src]
    v = cv.attention_patterns(["a", "b", "c"], t)
    assert t.calls == ["detach", "cpu", "numpy"]
    _, d = data_of(v.html)
    assert d["heads"] == ["Head 0"] and d["pattern"][0][2] == pytest.approx([1 / 3] * 3, rel=1e-5)


def test_colored_tokens_scales_and_names():
    v = cv.colored_tokens(["a", "b", "c", "d"], [-1.0, 0.5, np.nan, 2.0], name="attribution")
    assert v.view == "tokens"
    _, d = data_of(v.html)
    assert d["series"] == ["attribution"] and d["values"] == [[-1, 0.5, None, 2]]
    assert d["scales"] == [{"kind": "diverging", "lo": -2, "hi": 2}]
    _, d = data_of(cv.colored_tokens(["a", "b"], [3.0, 5.0]).html)
    assert d["series"] == ["value"] and d["scales"] == [{"kind": "sequential", "lo": 3, "hi": 5}]


def test_colored_tokens_multi_layout():
    vals = np.array([[1, 10], [2, 20], [3, 30]], np.float64)  # [n_tokens, n_series]: CircuitsVis's
    v = cv.colored_tokens_multi(["x", "y", "z"], vals, labels=["neuron 5", "loss"])
    _, d = data_of(v.html)
    assert d["series"] == ["neuron 5", "loss"] and d["values"] == [[1, 2, 3], [10, 20, 30]]
    _, d = data_of(cv.colored_tokens_multi(["x", "y", "z"], vals).html)
    assert d["series"] == ["Series 0", "Series 1"]


def test_grid_labels_titles_values():
    vals = np.array([[0.1, -0.2, 0.3], [0.0, 1.0, np.inf]])
    v = cv.grid(vals, row_labels=[0, 1], col_labels=["<bos>", " Mary", " John"], row_title="layer",
                col_title="position", value_title="logit diff", title="Patching")
    assert v.view == "grid"
    _, d = data_of(v.html)
    assert d["rows"] == ["0", "1"] and d["cols"] == ["<bos>", " Mary", " John"]
    assert (d["row_title"], d["col_title"], d["value_title"]) == ("layer", "position", "logit diff")
    assert d["values"] == [[pytest.approx(0.1), pytest.approx(-0.2), pytest.approx(0.3)], [0, 1, None]]
    assert d["scale"]["kind"] == "diverging"
    _, d = data_of(cv.grid(np.ones((1, 2))).html)
    assert d["rows"] == ["0"] and d["cols"] == ["0", "1"] and d["row_title"] is None


def test_hostile_text_escaped():
    toks = ["</script><script>alert(1)</script>", "\u2028", "<!--", "&amp;", "\"'\\"]
    v = cv.colored_tokens(toks, np.arange(5), name="</script>", title="<img src=x onerror=alert(1)>")
    for page in (v.html, v._repr_html_()):
        assert page.count("<script") == 2 and page.count("</script") == 2
        assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
        _, d = data_of(page)
        assert d["tokens"] == toks and d["series"] == ["</script>"]


def test_save(tmp_path: Path):
    v = cv.grid(np.eye(3))
    p = v.save(tmp_path / "grid.html")
    assert p == str(tmp_path / "grid.html") and Path(p).read_text(encoding="utf-8") == v.html
    with pytest.raises(circuits.CircuitsIOError, match="no_such_dir"):
        v.save(tmp_path / "no_such_dir" / "g.html")


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_save_mode_follows_the_umask(tmp_path: Path, mask: int, mode: int):
    # a saved page is readable as any file the user creates (cx_write_atomic's mkstemp made 0600)
    old = os.umask(mask)
    try:
        p = cv.grid(np.eye(2)).save(tmp_path / f"g{mask:o}.html")
    finally:
        os.umask(old)
    assert os.stat(p).st_mode & 0o777 == mode


class _NoLibrary:
    def __getattr__(self, name):
        raise AssertionError(f"the C library was called ({name}) before the arguments were checked")


@pytest.mark.parametrize("call, exc", [
    (lambda: cv.attention_patterns(["a", "b"], causal(1, 3)), ValueError),
    (lambda: cv.attention_patterns(["a"], np.ones((1, 1, 1, 1))), ValueError),
    (lambda: cv.attention_patterns([], np.ones((0, 0))), ValueError),
    (lambda: cv.attention_patterns(["a", "b"], causal(2, 2), attention_head_names=["one"]), ValueError),
    (lambda: cv.attention_patterns(["a", 7], causal(1, 2)), TypeError),
    (lambda: cv.attention_patterns("ab", causal(1, 2)), TypeError),
    (lambda: cv.attention_patterns(["a\0"], np.ones((1, 1))), ValueError),
    (lambda: cv.attention_patterns(["a"], np.array([["x"]])), TypeError),
    (lambda: cv.attention_patterns(["a"], np.ones((1, 1)), title=3), TypeError),
    (lambda: cv.colored_tokens(["a", "b"], [1.0, 2.0, 3.0]), ValueError),
    (lambda: cv.colored_tokens(["a"], [[1.0]]), ValueError),
    (lambda: cv.colored_tokens(["a"], ["x"]), TypeError),
    (lambda: cv.colored_tokens_multi(["a", "b"], [1.0, 2.0]), ValueError),
    (lambda: cv.colored_tokens_multi(["a", "b"], np.ones((2, 2)), labels=["x"]), ValueError),
    (lambda: cv.grid(np.ones(3)), ValueError),
    (lambda: cv.grid(np.ones((2, 0))), ValueError),
    (lambda: cv.grid(np.ones((2, 2)), row_labels=["a", "b", "c"]), ValueError),
    (lambda: cv.grid(np.ones((2, 2)), col_labels=[0.5, 1.5]), TypeError),
    (lambda: cv.grid(np.ones((2, 2)), value_title=1), TypeError),
])
def test_bad_input_before_any_c_call(monkeypatch, call, exc):
    monkeypatch.setattr(N, "lib", _NoLibrary())
    with pytest.raises(exc):
        call()
