"""Interactive views for the browser and notebooks, in the spirit of CircuitsVis (docs/pictures.md
"Interactive views"): self-contained HTML made by the C library (``circuits_vis_*``), with no
network access of any kind.

    import circuits.vis as cv
    view = cv.attention_patterns(tokens, pattern)   # pattern [heads, dest, src] or [dest, src]
    view                                            # in a notebook: displays itself
    view.save("attention.html")                     # a whole page; str(view) is its text

Each function returns a :class:`RenderedHTML`. Arrays may be anything NumPy takes (lists, NumPy
arrays, torch tensors: through ``.detach().cpu().numpy()``); wrong shapes and types raise
ValueError / TypeError before the library is called.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from . import _native as N

__all__ = ["RenderedHTML", "attention_patterns", "colored_tokens", "colored_tokens_multi", "grid"]

PathLike = Union[str, "os.PathLike[str]"]


class RenderedHTML:
    """A view: ``str(view)`` and ``view.html`` are the whole HTML document, ``view.save(path)``
    writes it, and ``view._repr_html_()`` is a fragment (one ``<div>`` with its own style and
    script) that notebooks display. Each fragment is made anew, with ids of its own, so the same
    view shown twice in one notebook page works twice."""

    __slots__ = ("html", "view", "_render")

    def __init__(self, view: str, render: Callable[[bool], str]):
        self.view = view          # "attention", "tokens" or "grid" (the root's data-view)
        self._render = render
        self.html = render(False)  # the document (made now: errors surface at the call)

    def __str__(self) -> str:
        return self.html

    def _repr_html_(self) -> str:
        return self._render(True)

    def save(self, path: PathLike) -> str:
        """Writes the document to ``path`` (``circuits_vis_save``: replaced whole or left as it
        was; circuits.CircuitsIOError naming the path when it cannot be written). Returns path."""
        p = os.fspath(path)
        data = self.html.encode("utf-8")
        N.check(N.lib.circuits_vis_save(data, len(data), N.cstr(p)), "RenderedHTML.save")
        return p

    def __repr__(self) -> str:
        return f"<circuits.vis.RenderedHTML {self.view}: {len(self.html)} characters; str() is the page, save(path) writes it>"


# --------------------------------------------------------------------------------------------
# Arguments, checked before any C call
# --------------------------------------------------------------------------------------------

def _array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name} is not an array: {e}") from None
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a


def _own(a: np.ndarray) -> np.ndarray:
    """A float32 C-contiguous copy the view owns: a fragment made later (each _repr_html_()) shows
    the values of the call even if the caller's array changed since."""
    return np.array(a, dtype=np.float32, order="C", copy=True)


def _text(s: Any, what: str) -> bytes:
    """A token or label as UTF-8 bytes (bytes as given: the library shows invalid UTF-8 as U+FFFD;
    a lone surrogate the same way)."""
    if isinstance(s, (bytes, bytearray)):
        b = bytes(s)
    elif isinstance(s, str):
        b = s.encode("utf-8", "surrogatepass")
    else:
        raise TypeError(f"{what} must be a str, got {type(s).__name__}")
    if b"\0" in b:
        raise ValueError(f"{what} contains a NUL character")
    return b


def _texts(seq: Any, what: str, n: Optional[int] = None, numbers: bool = False) -> "ctypes.Array[ctypes.c_char_p]":
    if isinstance(seq, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of strings, not a single {type(seq).__name__}")
    if hasattr(seq, "tolist"):
        seq = seq.tolist()
    try:
        items = list(seq)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of strings, got {type(seq).__name__}") from None
    if n is not None and len(items) != n:
        raise ValueError(f"{what} has {len(items)} entries; it must have {n}")
    if not items:
        raise ValueError(f"{what} is empty")
    out = []
    for i, s in enumerate(items):
        if numbers and isinstance(s, (int, np.integer)) and not isinstance(s, bool):
            s = str(int(s))
        out.append(_text(s, f"{what}[{i}]"))
    return (ctypes.c_char_p * len(out))(*out)


def _options(title: Optional[str], subtitle: Optional[str]):
    """A VisOptions with title and subtitle, and the buffers it points into (the render closures
    hold both, so the addresses stay valid as long as the view)."""
    o = N.VisOptions()
    N.lib.circuits_vis_options_init(ctypes.byref(o))
    keep = []
    for field, value in (("title", title), ("subtitle", subtitle)):
        if value is not None:
            buf = ctypes.c_char_p(_text(value, field))
            keep.append(buf)
            setattr(o, field, ctypes.cast(buf, ctypes.c_void_p).value)
    return o, keep


def _call(fn: str, args: Sequence[Any], opts: "N.VisOptions", keep: list, fragment: bool) -> str:
    """Calls circuits_vis_<...> (keep: the buffers opts points into, alive through the call),
    copies the text and frees the library's buffer."""
    opts.fragment = 1 if fragment else 0
    addr, n = ctypes.c_void_p(), ctypes.c_size_t()
    N.check(getattr(N.lib, fn)(ctypes.byref(addr), ctypes.byref(n), *args, ctypes.byref(opts)))
    try:
        return ctypes.string_at(addr.value, n.value).decode("utf-8")
    finally:
        N.lib.circuits_vis_free(addr)


def _title(x: Optional[str], name: str) -> Optional[str]:
    if x is not None and not isinstance(x, str):
        raise TypeError(f"{name} must be a str or None, got {type(x).__name__}")
    return x


# --------------------------------------------------------------------------------------------
# The views
# --------------------------------------------------------------------------------------------

def attention_patterns(tokens: Sequence[str], attention: Any, attention_head_names: Optional[Sequence[str]] = None,
                       title: Optional[str] = None, subtitle: Optional[str] = None) -> RenderedHTML:
    """CircuitsVis's ``attention_patterns``: the heads' patterns with the tokens. ``attention``
    [heads, dest, src] (e.g. ``cache["pattern", layer][0]``) or [dest, src] for one head; names
    default to "Head 0", ... Hover a token to colour every token by the attention it pays to it;
    hover the pattern for a value; the buttons switch heads."""
    N.require("circuits_vis_attention_patterns", "circuits.vis.attention_patterns")
    toks = _texts(tokens, "tokens")
    n = len(toks)
    a = _array(attention, "attention")
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"attention must be [heads, dest, src] or [dest, src], got shape {a.shape}")
    if a.shape[1:] != (n, n):
        raise ValueError(f"attention has shape {a.shape}; with {n} tokens it must be [heads, {n}, {n}]")
    if a.shape[0] < 1:
        raise ValueError("attention has no heads")
    a = _own(a)
    names = None if attention_head_names is None else _texts(attention_head_names, "attention_head_names", a.shape[0])
    opts, keep = _options(_title(title, "title"), _title(subtitle, "subtitle"))

    def render(fragment: bool) -> str:
        return _call("circuits_vis_attention_patterns", [toks, n, a, a.shape[0], names], opts, keep, fragment)

    return RenderedHTML("attention", render)


def _tokens_view(tokens: Sequence[str], series_first: np.ndarray, names: Any, title: Optional[str],
                 subtitle: Optional[str], what: str) -> RenderedHTML:
    N.require("circuits_vis_colored_tokens", f"circuits.vis.{what}")
    toks = _texts(tokens, "tokens")
    if series_first.shape[1] != len(toks):
        raise ValueError(f"{what}: values hold {series_first.shape[1]} tokens; tokens has {len(toks)}")
    v = _own(series_first)
    opts, keep = _options(_title(title, "title"), _title(subtitle, "subtitle"))

    def render(fragment: bool) -> str:
        return _call("circuits_vis_colored_tokens", [toks, len(toks), v, v.shape[0], names], opts, keep, fragment)

    return RenderedHTML("tokens", render)


def colored_tokens(tokens: Sequence[str], values: Any, name: Optional[str] = None, title: Optional[str] = None,
                   subtitle: Optional[str] = None) -> RenderedHTML:
    """CircuitsVis's ``colored_tokens``: each token's box coloured by its value (``values``
    [n_tokens]: a loss, an attribution, a neuron or SAE feature activation), diverging around 0
    when the values have both signs, else sequential; ``name`` names the value (default "value")."""
    v = _array(values, "values")
    if v.ndim != 1:
        raise ValueError(f"values must be [n_tokens], got shape {v.shape} (several series: colored_tokens_multi)")
    names = None if name is None else _texts([_title(name, "name")], "name")
    return _tokens_view(tokens, v[None], names, title, subtitle, "colored_tokens")


def colored_tokens_multi(tokens: Sequence[str], values: Any, labels: Optional[Sequence[str]] = None,
                         title: Optional[str] = None, subtitle: Optional[str] = None) -> RenderedHTML:
    """CircuitsVis's ``colored_tokens_multi``: ``values`` [n_tokens, n_series] (CircuitsVis's
    layout), ``labels`` the series' names (default "Series 0", ...); buttons choose the series,
    each coloured on its own scale."""
    v = _array(values, "values")
    if v.ndim != 2:
        raise ValueError(f"values must be [n_tokens, n_series], got shape {v.shape}")
    if v.shape[1] < 1:
        raise ValueError("values has no series")
    names = None if labels is None else _texts(labels, "labels", v.shape[1])
    return _tokens_view(tokens, v.T, names, title, subtitle, "colored_tokens_multi")


def grid(values: Any, row_labels: Optional[Sequence[Any]] = None, col_labels: Optional[Sequence[Any]] = None,
         row_title: Optional[str] = None, col_title: Optional[str] = None, value_title: Optional[str] = None,
         title: Optional[str] = None, subtitle: Optional[str] = None) -> RenderedHTML:
    """A grid of values with hover (a patching grid: layer x position, head x layer ...):
    ``values`` [rows, cols], labels per row and column (str or int; default 0, 1, ...), the axis
    titles and the value's name; diverging around 0 when the values have both signs."""
    N.require("circuits_vis_grid", "circuits.vis.grid")
    v = _array(values, "values")
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise ValueError(f"values must be [rows, cols] with at least one of each, got shape {v.shape}")
    v = _own(v)
    rows = None if row_labels is None else _texts(row_labels, "row_labels", v.shape[0], numbers=True)
    cols = None if col_labels is None else _texts(col_labels, "col_labels", v.shape[1], numbers=True)
    titles = [None if t is None else _text(_title(t, k), k)
              for k, t in (("row_title", row_title), ("col_title", col_title), ("value_title", value_title))]
    opts, keep = _options(_title(title, "title"), _title(subtitle, "subtitle"))

    def render(fragment: bool) -> str:
        return _call("circuits_vis_grid", [v, v.shape[0], v.shape[1], rows, cols, *titles], opts, keep, fragment)

    return RenderedHTML("grid", render)
