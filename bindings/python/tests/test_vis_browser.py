"""The interactive views in a real browser: Debian's headless Chromium through selenium and
chromedriver (docs/pictures.md "Interactive views", docs/testing.md). For each view: the page
loads with no console message of level WARNING or SEVERE, the elements of the DOM contract are
there in the expected numbers, hovering a token or a cell changes div.cv-info and the colours as
the contract says, a button redraws, and a screenshot has the expected structure (sampled at the
cells' centres: blank above the diagonal, darker where the value is larger; a rank correlation,
not pixel equality). Also: hostile tokens show literally and run nothing; two fragments in one
page (a notebook) work independently; 512 tokens wrap and scale.

Needs selenium (pip; run_tests.sh installs it), chromium and chromium-driver (apt; .ci/install-deps
installs them): missing, the tests FAIL saying what to install. Selenium never downloads a driver
(tests/browser.py: the driver's path is given and SE_OFFLINE is set)."""

from __future__ import annotations

import json
import re
import struct
import zlib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

import circuits.vis as cv

import browser as _browser


# --------------------------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------------------------

def make_driver(scale: float = 1.0):
    """Headless Chromium (tests/browser.py); the test FAILS saying what to install when chromium,
    chromium-driver or selenium is missing."""
    lack = _browser.missing()
    if lack:
        pytest.fail("the browser tests need " + " and ".join(lack))
    return _browser.chrome(scale)


def test_missing_browser_is_a_failure_that_says_what_to_install(monkeypatch):
    monkeypatch.setattr(_browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(_browser, "CHROMEDRIVER", "/nonexistent/chromedriver")
    lack = " ".join(_browser.missing())
    assert "apt-get install --no-install-recommends chromium " in lack and "chromium-driver" in lack
    with pytest.raises(RuntimeError, match="needs /nonexistent/chromium"):
        _browser.chrome()
    with pytest.raises(pytest.fail.Exception, match="install"):
        make_driver()


@pytest.fixture(scope="module")
def browser():
    d = make_driver()
    yield d
    d.quit()


class Page:
    """A page loaded from a file, with helpers; load() fails on any console warning or error."""

    def __init__(self, driver, path: Path):
        self.d = driver
        self.d.get_log("browser")  # drop what earlier pages left
        self.d.get(path.as_uri())
        from selenium.webdriver.common.by import By

        self.By = By
        self.console_clean()

    def console_clean(self):
        bad = [e for e in self.d.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]
        assert not bad, f"console messages: {bad}"

    def all(self, css: str, root=None):
        return (root or self.d).find_elements(self.By.CSS_SELECTOR, css)

    def one(self, css: str, root=None):
        found = self.all(css, root)
        assert len(found) == 1, (css, len(found))
        return found[0]

    def js(self, script: str, *args):
        return self.d.execute_script(script, *args)

    def _move(self, x: float, y: float):
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        ab = ActionBuilder(self.d)
        ab.pointer_action.move_to_location(int(round(x)), int(round(y)))
        ab.perform()

    def hover(self, el, dx: float = None, dy: float = None):
        """Moves the mouse onto el: its centre, or dx, dy CSS px from its top left corner (el
        scrolled into view first; the move is in viewport coordinates)."""
        self.js("arguments[0].scrollIntoView({block: 'nearest', inline: 'nearest'});", el)
        r = self.rect(el)
        self._move(r["left"] + (r["width"] / 2 if dx is None else dx), r["top"] + (r["height"] / 2 if dy is None else dy))

    def away(self):
        """The mouse onto the page's top left corner (a root's padding: nothing hovered)."""
        self.js("window.scrollTo(0, 0);")
        self._move(1, 1)

    def rect(self, el) -> dict:
        return self.js("var r = arguments[0].getBoundingClientRect();"
                       "return {left: r.left, top: r.top, width: r.width, height: r.height};", el)

    def bg(self, el):
        return rgb(self.js("return getComputedStyle(arguments[0]).backgroundColor;", el))

    def canvas_data(self, canvas) -> str:
        return self.js("return arguments[0].toDataURL('image/png');", canvas)

    def no_alert(self):
        from selenium.common.exceptions import NoAlertPresentException

        try:
            text = self.d.switch_to.alert.text
        except NoAlertPresentException:
            return
        raise AssertionError(f"an alert ran: {text!r}")


def load(driver, tmp_path: Path, html: str, name: str = "view.html") -> Page:
    p = tmp_path / name
    p.write_text(html, encoding="utf-8")
    return Page(driver, p)


# --------------------------------------------------------------------------------------------
# What the page should show, computed here from the contract (docs/pictures.md)
# --------------------------------------------------------------------------------------------

SEQ = [(255, 255, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)]
DIV = [(178, 24, 43), (239, 138, 98), (253, 219, 199), (247, 247, 247), (209, 229, 240), (103, 169, 207), (33, 102, 172)]
NAN = (190, 190, 190)


def ramp(stops, t):
    t = min(1.0, max(0.0, t))
    x = t * (len(stops) - 1)
    i = min(len(stops) - 2, int(np.floor(x)))
    f = x - i
    return tuple(int(np.floor(stops[i][j] + (stops[i + 1][j] - stops[i][j]) * f + 0.5)) for j in range(3))


def colour(v, kind="sequential", lo=0.0, hi=1.0):
    if v is None or not np.isfinite(v):
        return NAN
    if kind == "diverging":
        return ramp(DIV, 0.5 + 0.5 * v / hi)
    return ramp(SEQ, (v - lo) / (hi - lo))


def rgb(css: str):
    m = re.match(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", css)
    assert m, css
    if m.group(4) is not None and float(m.group(4)) == 0:
        return None  # transparent: no colour of its own
    return tuple(int(m.group(i)) for i in (1, 2, 3))


def close(a, b, tol=3) -> bool:
    return a is not None and b is not None and all(abs(x - y) <= tol for x, y in zip(a, b))


def lum(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _ranks(x) -> np.ndarray:
    """Ranks with ties given their mean rank."""
    x = np.asarray(x, np.float64)
    r = np.empty(len(x))
    r[np.argsort(x, kind="stable")] = np.arange(len(x))
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


def spearman(x, y) -> float:
    """Spearman's rank correlation."""
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def shown(t) -> str:
    """cvShow: what a token's box and the info line show."""
    if isinstance(t, bytes):
        t = t.decode("utf-8", "replace")
    out = []
    for ch in t:
        c = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif c < 0x20 or c == 0x7F or 0x80 <= c < 0xA0:
            out.append("\\x%02x" % c)
        elif c in (0x2028, 0x2029):
            out.append("\\u%x" % c)
        else:
            out.append(ch)
    return "".join(out)


def fmt(v) -> str:
    """cvFmt: how the info line writes a value v as the page has it (a number of its data JSON):
    JavaScript's toFixed (ties away from zero on the exact double) or toExponential(2)."""
    if v is None or not np.isfinite(v):
        return "nan"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        m, e = f"{v:.2e}".split("e")
        return f"{m}e{int(e):+d}"
    q = Decimal(a).quantize(Decimal("0.1" if a >= 100 else "0.001"), rounding=ROUND_HALF_UP)
    return ("-" if v < 0 else "") + str(q)


def label(t) -> str:
    """cvLabel: a row or column label, an axis token (leading spaces visible, empty as U+2205)."""
    s = shown(t)
    if s == "":
        return "\u2205"
    k = len(s) - len(s.lstrip(" "))
    return "\u2423" * k + s[k:]


def png_pixels(data: bytes) -> np.ndarray:
    """An 8-bit RGB(A) PNG (what Chromium's screenshots are) as an array [h, w, 3]."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert depth == 8 and interlace == 0 and ctype in (2, 6), (depth, ctype, interlace)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if f == 0:
            cur = line
        elif f == 1:  # sub: a running sum per channel
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif f == 2:
            cur = (line + prev) % 256
        else:  # average, paeth: sequential along the row
            cur = line.copy()
            ln, pv = line.tolist(), prev.tolist()
            c = [0] * stride
            for x in range(stride):
                a = c[x - bpp] if x >= bpp else 0
                b = pv[x]
                if f == 3:
                    c[x] = (ln[x] + (a + b) // 2) & 255
                else:
                    cc = pv[x - bpp] if x >= bpp else 0
                    p = a + b - cc
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                    c[x] = (ln[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else cc)) & 255
            cur = np.array(c, np.int64)
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)[:, :, :3]


def data_of(html: str):
    m = re.search(r'<script type="application/json" id="(cv[0-9a-f]{16})-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(2))


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

TOKS = ["<|endoftext|>", " When", " Mary", " and", " John", " went", " to", " the"]


def patterns(n: int, seed: int = 1) -> np.ndarray:
    """Three heads that look different: previous token, first token, random; a NaN in head 2."""
    rng = np.random.default_rng(seed)
    p = np.zeros((3, n, n), np.float32)
    for q in range(n):
        p[0, q, max(q - 1, 0)] = 0.8
        p[0, q, q] += 0.2
        p[1, q, 0] = 0.9
        p[1, q, q] += 0.1
        r = rng.random(q + 1) ** 3
        p[2, q, :q + 1] = r / r.sum()
    if n > 4:
        p[2, 4, 1] = np.nan
    return p


# --------------------------------------------------------------------------------------------
# Attention patterns
# --------------------------------------------------------------------------------------------

def test_attention_structure(browser, tmp_path):
    p = patterns(len(TOKS))
    v = cv.attention_patterns(TOKS, p, attention_head_names=["L0H3", "L1H0", "L1H7"], title="Attention",
                              subtitle="tiny model")
    pg = load(browser, tmp_path, v.html)
    root = pg.one("div.cv-view[data-view=attention]")
    heads = pg.all("button.cv-head", root)
    assert [b.get_attribute("data-head") for b in heads] == ["0", "1", "2"]
    assert [b.text for b in heads] == ["L0H3", "L1H0", "L1H7"]
    assert [b.get_attribute("class").split().count("cv-selected") for b in heads] == [1, 0, 0]
    spans = pg.all("span.cv-token", root)
    assert [s.get_attribute("data-pos") for s in spans] == [str(i) for i in range(len(TOKS))]
    assert [pg.js("return arguments[0].textContent", s) for s in spans] == [shown(t) for t in TOKS]
    # the glyphs render, in a monospaced font: tokens of as many characters have boxes as wide
    widths = {}
    for t, sp in zip(TOKS, spans):
        widths.setdefault(len(t), set()).add(round(pg.rect(sp)["width"], 1))
    assert all(len(w) == 1 for w in widths.values()), widths
    assert min(min(w) for w in widths.values()) > 20 and widths[5] != widths[4], widths
    canvas = pg.one("canvas.cv-pattern", root)
    cell = float(canvas.get_attribute("data-cell"))
    assert cell == 36  # few tokens: the largest cells
    pg.one("div.cv-info", root)
    legend = pg.one("div.cv-legend", root)
    assert "attention" in legend.text and "0.000" in legend.text and "1.000" in legend.text and "nan" in legend.text
    assert pg.one("div.cv-title", root).text == "Attention" and pg.one("div.cv-subtitle", root).text == "tiny model"
    assert pg.js("return document.title") == "Attention"


def test_attention_hover_token_colours_by_attention(browser, tmp_path):
    p = patterns(len(TOKS))
    html = cv.attention_patterns(TOKS, p).html
    sent = data_of(html)["pattern"]  # the values as the page has them
    pg = load(browser, tmp_path, html)
    info = pg.one("div.cv-info")
    idle = info.text
    spans = pg.all("span.cv-token")
    assert all(pg.bg(s) is None for s in spans), "no colours before a hover"
    for q in (5, 0):
        pg.hover(spans[q])
        top = int(np.argmax(sent[0][q]))  # the first of the largest, as the page picks
        assert info.text == f'query {q} "{shown(TOKS[q])}" \u2192 key {top} "{shown(TOKS[top])}": {fmt(sent[0][q][top])} (top)'
        got = [pg.bg(s) for s in spans]
        for k in range(len(TOKS)):
            if k <= q:
                assert close(got[k], colour(p[0, q, k])), (q, k, got[k], colour(p[0, q, k]))
            else:
                assert got[k] is None, (q, k, got[k])  # keys after the query: uncoloured
        assert "cv-hovered" in spans[q].get_attribute("class").split()
        if q:
            lums = [lum(got[k]) for k in range(q + 1)]
            assert spearman(lums, p[0, q, :q + 1]) < -0.7  # darker where it attends more
    pg.away()
    assert info.text == idle and all(pg.bg(s) is None for s in spans)
    pg.console_clean()


def test_attention_click_keeps_the_query(browser, tmp_path):
    p = patterns(len(TOKS))
    html = cv.attention_patterns(TOKS, p).html
    pg = load(browser, tmp_path, html)
    info, spans = pg.one("div.cv-info"), pg.all("span.cv-token")
    idle = info.text
    pg.hover(spans[5])
    spans[5].click()
    kept = info.text
    assert kept.startswith('query 5 " went"') and "cv-locked" in spans[5].get_attribute("class").split()
    pg.away()  # the mouse gone: query 5 stays, its colours too
    assert info.text == kept and close(pg.bg(spans[4]), colour(p[0, 5, 4]))
    pg.hover(spans[2])  # another token while one is kept: that one shown, then back to the kept one
    assert info.text.startswith('query 2 " Mary"')
    pg.away()
    assert info.text == kept
    pg.one("button.cv-head[data-head='1']").click()  # another head: the kept query on it
    assert info.text.startswith('query 5 " went" \u2192 key 0 ') and close(pg.bg(spans[0]), colour(p[1, 5, 0]))
    pg.hover(spans[5])
    spans[5].click()  # clicked again: released
    pg.away()
    assert info.text == idle and "cv-locked" not in spans[5].get_attribute("class").split()
    assert all(pg.bg(s) is None for s in spans)
    pg.console_clean()


def test_attention_hover_cell_and_nan(browser, tmp_path):
    html = cv.attention_patterns(TOKS, patterns(len(TOKS))).html
    sent = data_of(html)["pattern"]
    pg = load(browser, tmp_path, html)
    canvas, info = pg.one("canvas.cv-pattern"), pg.one("div.cv-info")
    L, T, cell = (float(canvas.get_attribute(a)) for a in ("data-left", "data-top", "data-cell"))
    pg.one("button.cv-head[data-head='2']").click()
    for q, k in ((3, 1), (6, 6), (4, 1), (2, 5)):
        pg.hover(canvas, L + (k + 0.5) * cell, T + (q + 0.5) * cell)
        head = f'query {q} "{shown(TOKS[q])}" \u2192 key {k} "{shown(TOKS[k])}": '
        if k > q:
            assert info.text == head + "blank (the key is after the query)"
        else:
            assert info.text == head + fmt(sent[2][q][k]), (info.text, head + fmt(sent[2][q][k]))
    pg.hover(canvas, L + 1.5 * cell, T + 4.5 * cell)
    assert info.text.endswith(": nan"), info.text  # the NaN cell
    pg.console_clean()


def test_attention_head_button_redraws(browser, tmp_path):
    p = patterns(len(TOKS))
    pg = load(browser, tmp_path, cv.attention_patterns(TOKS, p).html)
    canvas = pg.one("canvas.cv-pattern")
    seen = [pg.canvas_data(canvas)]
    spans = pg.all("span.cv-token")
    for h in (1, 2, 0):
        b = pg.one(f"button.cv-head[data-head='{h}']")
        b.click()
        assert [x.get_attribute("class").split().count("cv-selected") for x in pg.all("button.cv-head")] == \
            [int(i == h) for i in range(3)]
        seen.append(pg.canvas_data(canvas))
        pg.hover(spans[6])
        assert close(pg.bg(spans[0]), colour(p[h, 6, 0])) and close(pg.bg(spans[5]), colour(p[h, 6, 5]))
        pg.away()
    assert len(set(seen[:3])) == 3, "each head draws another picture"
    assert seen[3] == seen[0], "back to head 0: the same picture"
    pg.console_clean()


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_attention_screenshot_structure(tmp_path, scale):
    """The pattern as the screen shows it: sampled at each cell's centre in a screenshot of the
    canvas, white above the diagonal, grey at the NaN, and darker where the pattern is larger."""
    driver = make_driver(scale)
    try:
        n = 12
        p = patterns(n, seed=3)
        toks = [f" w{i}" for i in range(n)]
        pg = load(driver, tmp_path, cv.attention_patterns(toks, p).html)
        canvas = pg.one("canvas.cv-pattern")
        dpr = pg.js("return window.devicePixelRatio")
        assert dpr == scale
        L, T, cell = (float(canvas.get_attribute(a)) for a in ("data-left", "data-top", "data-cell"))
        r = pg.rect(canvas)
        assert pg.js("return arguments[0].width", canvas) == int(np.ceil(r["width"] * dpr))  # backing store at full resolution
        for h in range(3):
            pg.one(f"button.cv-head[data-head='{h}']").click()
            pg.away()
            img = png_pixels(canvas.screenshot_as_png)
            assert abs(img.shape[1] - r["width"] * dpr) <= 2 and abs(img.shape[0] - r["height"] * dpr) <= 2, img.shape

            def px(q, k):
                return tuple(int(c) for c in img[int((T + (q + 0.5) * cell) * dpr), int((L + (k + 0.5) * cell) * dpr)])

            vals, lums = [], []
            for q in range(n):
                for k in range(n):
                    c = px(q, k)
                    if k > q:
                        assert close(c, (255, 255, 255), 2), (h, q, k, c)  # blank above the diagonal
                    elif not np.isfinite(p[h, q, k]):
                        assert close(c, NAN), (h, q, k, c)
                    else:
                        assert close(c, colour(p[h, q, k]), 4), (h, q, k, c, colour(p[h, q, k]))
                        vals.append(p[h, q, k])
                        lums.append(lum(c))
            assert spearman(lums, vals) < -0.9, (h, spearman(lums, vals))
        pg.console_clean()
    finally:
        driver.quit()


def test_attention_one_token_one_head(browser, tmp_path):
    pg = load(browser, tmp_path, cv.attention_patterns(["only"], [[1.0]]).html)
    assert len(pg.all("button.cv-head")) == 1 and len(pg.all("span.cv-token")) == 1
    pg.hover(pg.one("span.cv-token"))
    assert pg.one("div.cv-info").text == 'query 0 "only" \u2192 key 0 "only": 1.000 (top)'
    pg.console_clean()


def test_attention_512_tokens_scale_and_wrap(browser, tmp_path):
    n = 512
    rng = np.random.default_rng(0)
    p = np.tril(rng.random((2, n, n)).astype(np.float32) ** 4)
    p /= p.sum(-1, keepdims=True)
    toks = [f" tok{i}" for i in range(n)]
    pg = load(browser, tmp_path, cv.attention_patterns(toks, p).html)
    spans = pg.all("span.cv-token")
    assert len(spans) == n
    tops = pg.js("return Array.from(arguments[0]).map(function (s) { return Math.round(s.getBoundingClientRect().top); });", spans)
    assert len(set(tops)) > 10, "the tokens wrap onto many lines"
    box = pg.rect(pg.one("div.cv-tokens"))
    assert all(pg.rect(s)["left"] + pg.rect(s)["width"] <= box["left"] + box["width"] + 1 for s in spans[::37])
    canvas = pg.one("canvas.cv-pattern")
    cell = float(canvas.get_attribute("data-cell"))
    assert cell == 1.0 and pg.rect(canvas)["width"] < 900, "one pixel per token; the canvas fits the page"
    pg.hover(spans[300])
    assert pg.one("div.cv-info").text.startswith('query 300 " tok300" \u2192 key ')
    pg.console_clean()


# --------------------------------------------------------------------------------------------
# Coloured tokens
# --------------------------------------------------------------------------------------------

def test_colored_tokens_colours_hover_series(browser, tmp_path):
    n = len(TOKS)
    attr = np.linspace(-2, 3, n).astype(np.float32)
    attr[3] = np.nan
    loss = np.linspace(1, 8, n).astype(np.float32)[::-1].copy()
    v = cv.colored_tokens_multi(TOKS, np.stack([attr, loss], 1), labels=["attribution", "loss"], title="Tokens")
    sent = data_of(v.html)["values"]
    pg = load(browser, tmp_path, v.html)
    root = pg.one("div.cv-view[data-view=tokens]")
    buttons = pg.all("button.cv-series", root)
    assert [b.get_attribute("data-series") for b in buttons] == ["0", "1"] and buttons[0].text == "attribution"
    spans = pg.all("span.cv-token", root)
    assert [pg.js("return arguments[0].textContent", s) for s in spans] == [shown(t) for t in TOKS]
    legend = pg.one("div.cv-legend", root)
    assert "attribution" in legend.text and "-3.000" in legend.text and "3.000" in legend.text
    got = [pg.bg(s) for s in spans]
    for i in range(n):  # diverging: red below 0, blue above, grey NaN
        assert close(got[i], colour(attr[i], "diverging", -3, 3)), (i, got[i])
        if np.isfinite(attr[i]) and abs(attr[i]) > 0.3:
            assert (got[i][2] > got[i][0]) == (attr[i] > 0), (i, got[i])
    info = pg.one("div.cv-info", root)
    pg.hover(spans[2])
    assert info.text == f'"{shown(TOKS[2])}" (position 2): attribution = {fmt(sent[0][2])}'
    pg.hover(spans[3])
    assert info.text == f'"{shown(TOKS[3])}" (position 3): attribution = nan'
    buttons[1].click()
    assert "loss" in pg.one("div.cv-legend", root).text
    got = [pg.bg(s) for s in spans]
    for i in range(n):  # sequential from the least to the greatest
        assert close(got[i], colour(loss[i], "sequential", 1, 8)), (i, got[i])
    assert spearman([lum(c) for c in got], loss) < -0.9
    pg.hover(spans[0])
    assert info.text == f'"{shown(TOKS[0])}" (position 0): loss = {fmt(sent[1][0])}'
    pg.console_clean()


def test_colored_tokens_screenshot_structure(browser, tmp_path):
    vals = np.array([0.0, 1.0, 4.0, 2.0, 9.0, 3.0, 6.0, 5.0], np.float32)
    pg = load(browser, tmp_path, cv.colored_tokens(TOKS, vals).html)
    assert not pg.all("button.cv-series"), "one series: no buttons"
    box = pg.one("div.cv-tokens")
    img = png_pixels(box.screenshot_as_png)
    b0 = pg.rect(box)
    samples = []
    for s in pg.all("span.cv-token"):
        r = pg.rect(s)  # inside the box's left padding: the background, not a glyph
        samples.append(tuple(int(c) for c in img[int(r["top"] - b0["top"] + r["height"] / 2), int(r["left"] - b0["left"] + 2.5)]))
    for c, v in zip(samples, vals):
        assert close(c, colour(v, "sequential", 0, 9), 4), (c, v)
    assert spearman([lum(c) for c in samples], vals) < -0.95


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------

def test_grid_cells_hover_and_screenshot(browser, tmp_path):
    rows, cols = 4, 6
    vals = np.sin(np.arange(rows * cols, dtype=np.float32) * 0.7).reshape(rows, cols) * 2
    vals[1, 2] = np.nan
    v = cv.grid(vals, row_labels=[f"L{i}" for i in range(rows)], col_labels=TOKS[:cols], row_title="layer",
                col_title="position", value_title="logit diff", title="Patching")
    sent = data_of(v.html)["values"]
    pg = load(browser, tmp_path, v.html)
    root = pg.one("div.cv-view[data-view=grid]")
    table = pg.one("table.cv-grid", root)
    cells = pg.all("td.cv-cell", table)
    assert len(cells) == rows * cols
    assert [(int(c.get_attribute("data-row")), int(c.get_attribute("data-col"))) for c in cells] == \
        [(r, c) for r in range(rows) for c in range(cols)]
    assert [pg.js("return arguments[0].textContent", th) for th in pg.all("th.cv-col", table)] == \
        ["<|endoftext|>", "\u2423When", "\u2423Mary", "\u2423and", "\u2423John", "\u2423went"] == [label(t) for t in TOKS[:cols]]
    assert [th.text for th in pg.all("th.cv-row", table)] == ["L0", "L1", "L2", "L3"]
    m = float(np.nanmax(np.abs(vals)))
    assert "logit diff" in pg.one("div.cv-legend", root).text
    info = pg.one("div.cv-info", root)
    for r, c in ((0, 0), (2, 5), (1, 2)):
        cell = pg.one(f"td.cv-cell[data-row='{r}'][data-col='{c}']", table)
        pg.hover(cell)
        assert info.text == f"L{r}, {label(TOKS[c])}: {fmt(sent[r][c])}"
        assert "cv-hovered" in cell.get_attribute("class").split()
    pg.away()
    img = png_pixels(table.screenshot_as_png)
    t0 = pg.rect(table)
    for cell in cells:
        r, c = int(cell.get_attribute("data-row")), int(cell.get_attribute("data-col"))
        rr = pg.rect(cell)
        px = tuple(int(x) for x in img[int(rr["top"] - t0["top"] + 2.5), int(rr["left"] - t0["left"] + 2.5)])
        assert close(px, colour(vals[r, c], "diverging", -m, m), 4), (r, c, px)
        if np.isfinite(vals[r, c]) and abs(vals[r, c]) > 0.3:
            assert (px[2] > px[0]) == (vals[r, c] > 0), (r, c, px)  # blue above 0, red below
    pg.console_clean()


# --------------------------------------------------------------------------------------------
# Hostile tokens, notebooks
# --------------------------------------------------------------------------------------------

HOSTILE = ["</script><script>alert(1)</script>", "<img src=x onerror=\"window.pwned=1\">", "\"quoted\" 'single'",
           "back\\slash", "\u2028", "line\nbreak", "", b"\xff\xfe", "<!--", "&amp;", " \t"]


def test_hostile_tokens_show_literally_and_run_nothing(browser, tmp_path):
    n = len(HOSTILE)
    p = np.tril(np.ones((1, n, n), np.float32))
    p /= p.sum(-1, keepdims=True)
    for html in (cv.attention_patterns(HOSTILE, p, attention_head_names=["<b>h</b>"], title="</script><b>x</b>").html,
                 cv.colored_tokens(HOSTILE, np.arange(n), name="</script>").html,
                 cv.grid(np.ones((1, n)), col_labels=HOSTILE, row_labels=["<script>"]).html):
        pg = load(browser, tmp_path, html)
        pg.no_alert()
        assert pg.js("return window.pwned") is None
        assert len(pg.all("script")) == 2 and not pg.all("img") and not pg.all("div.cv-view b")
        spans = pg.all("span.cv-token")
        if spans:
            assert [pg.js("return arguments[0].textContent", s) for s in spans] == [shown(t) for t in HOSTILE]
            pg.hover(spans[0])
            assert shown(HOSTILE[0]) in pg.one("div.cv-info").text
        else:
            heads = [pg.js("return arguments[0].title", th) for th in pg.all("th.cv-col")]
            assert heads == [shown(t) for t in HOSTILE]
        pg.no_alert()
        pg.console_clean()


def test_two_fragments_in_one_page(browser, tmp_path):
    """A notebook page: two attention views (one displayed twice) and a grid, each working alone."""
    p = patterns(len(TOKS))
    a = cv.attention_patterns(TOKS, p, title="first")
    b = cv.attention_patterns(TOKS[:5], p[:, :5, :5][[2, 1]], title="second")
    g = cv.grid(np.arange(6.0).reshape(2, 3))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>notebook</title></head><body>"
            "<div class='cell'>" + a._repr_html_() + "</div><div class='cell'>" + b._repr_html_() +
            "</div><div class='cell'>" + a._repr_html_() + "</div><div class='cell'>" + g._repr_html_() +
            "</div></body></html>")
    pg = load(browser, tmp_path, page, "notebook.html")
    roots = pg.all("div.cv-view")
    assert [r.get_attribute("data-view") for r in roots] == ["attention", "attention", "attention", "grid"]
    assert len({r.get_attribute("id") for r in roots}) == 4
    counts = [(len(pg.all("button.cv-head", r)), len(pg.all("span.cv-token", r)), len(pg.all("canvas", r))) for r in roots[:3]]
    assert counts == [(3, 8, 1), (2, 5, 1), (3, 8, 1)]
    infos = [pg.one("div.cv-info", r) for r in roots]
    idle = [i.text for i in infos]
    canvases = [pg.one("canvas.cv-pattern", r) for r in roots[:3]]
    before = [pg.canvas_data(c) for c in canvases]
    pg.hover(pg.all("span.cv-token", roots[1])[4])
    assert infos[1].text.startswith('query 4 " John"') and infos[0].text == idle[0] and infos[2].text == idle[2]
    pg.away()
    pg.one("button.cv-head[data-head='1']", roots[2]).click()
    after = [pg.canvas_data(c) for c in canvases]
    assert after[0] == before[0] and after[1] == before[1] and after[2] != before[2]
    pg.hover(pg.one("td.cv-cell[data-row='1'][data-col='2']", roots[3]))
    assert infos[3].text == "1, 2: 5.000" and infos[0].text == idle[0]
    # the style of one view does not reach another: each rule is scoped to its root's id
    styles = pg.js("return Array.from(document.styleSheets).map(function (s) { return Array.from(s.cssRules)"
                   ".map(function (r) { return r.selectorText; }); });")
    for sheet, root in zip(styles, roots):
        rid = "#" + root.get_attribute("id")
        assert sheet and all(all(part.strip().startswith(rid) for part in sel.split(",")) for sel in sheet)
    pg.console_clean()
