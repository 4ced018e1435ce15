"""Comparing two models hook point by hook point: quantization as an intervention
(docs/quantization.md).

    import circuits
    a = circuits.Model.from_pretrained("model-f32.gguf")
    b = circuits.Model.from_pretrained("model-q4_k.gguf")
    d = circuits.diff(a, b, tokens)            # or a.diff(b, tokens)
    d[0]                                        # {"name": "hook_embed", "layer": -1, "rel_error": ..., ...}
    kinds, grid = d.by_layer("rel_error")       # [n_kinds, n_layers]
    print(d)                                    # the table `circuits diff` prints

Both models run on the same tokens in C (``circuits_model_diff``): model a's selected activations
are held for the call, model b's are compared as its run makes them.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native as N
from . import padding as _pad
from .model import Model

lib = N.lib

MEASURES = ("rel_error", "max_abs", "cosine", "norm_a", "norm_b")


class DiffResult(List[Dict[str, Any]]):
    """The entries of a comparison, in firing order, the logits last: one dict per hook point
    with ``name``, ``kind`` (the name without ``blocks.L.``), ``layer`` (-1 outside blocks),
    ``head`` (-1: the whole point; with ``per_head=True`` each point with a head axis is followed
    by one entry per head), ``numel`` (elements compared), ``rel_error`` (||b - a|| / ||a||,
    Frobenius), ``max_abs`` (max |b - a|), ``cosine``, ``norm_a``, ``norm_b``."""

    n_layers: int = 0

    def by_layer(self, measure: str = "rel_error") -> Tuple[List[str], np.ndarray]:
        """(kinds, grid): the block hook point kinds in firing order, and ``measure`` of each
        at each layer, [n_kinds, n_layers] float64 (NaN where a kind has no point)."""
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {list(MEASURES)}, not {measure!r}")
        kinds: List[str] = []
        whole = [e for e in self if e["head"] < 0]
        for e in whole:
            if e["layer"] >= 0 and e["kind"] not in kinds:
                kinds.append(e["kind"])
        grid = np.full((len(kinds), self.n_layers), np.nan)
        for e in whole:
            if e["layer"] >= 0:
                grid[kinds.index(e["kind"]), e["layer"]] = e[measure]
        return kinds, grid

    def get(self, name: str, head: int = -1) -> Dict[str, Any]:
        """The entry of hook point ``name`` (a full name, or ``"logits"``); ``head``: one head's
        entry (``per_head=True``)."""
        for e in self:
            if e["name"] == name and e["head"] == head:
                return e
        raise KeyError((name, head) if head >= 0 else name)

    def heads(self, name: str, measure: str = "rel_error") -> np.ndarray:
        """``measure`` of each head of point ``name``, [n_heads] (``per_head=True``)."""
        vals = [e[measure] for e in self if e["name"] == name and e["head"] >= 0]
        if not vals:
            raise KeyError(f"{name}: no per-head entries (per_head=True, a point with a head axis)")
        return np.array(vals)

    def __str__(self) -> str:
        kinds, grid = self.by_layer()
        w = max([16] + [len(k) for k in kinds] + [len(e["name"]) for e in self if e["layer"] < 0 and e["head"] < 0])
        lines = ["relative error ||b - a|| / ||a|| by layer"]
        if kinds:
            lines.append(f"{'hook point':<{w}}" + "".join(f"  {'L%d' % l:>10}" for l in range(self.n_layers)))
            for k, row in zip(kinds, grid):
                lines.append(f"{k:<{w}}" + "".join(f"  {'-':>10}" if np.isnan(v) else f"  {v:10.3e}" for v in row))
        outside = [e for e in self if e["layer"] < 0 and e["head"] < 0]
        if outside:
            lines.append(f"{'outside blocks':<{w}}  {'rel error':>10}  {'max |b-a|':>10}  {'cosine':>10}")
            for e in outside:
                lines.append(f"{e['name']:<{w}}  {e['rel_error']:10.3e}  {e['max_abs']:10.3e}  {e['cosine']:10.6f}")
        return "\n".join(lines)


def diff(model_a: Model, model_b: Model, tokens: Any, names: Optional[Union[str, Sequence[str]]] = None, *,
         logits: bool = True, per_head: bool = False, attention_mask: Any = None) -> DiffResult:
    """Runs ``model_a`` and ``model_b`` on the same ``tokens`` ([batch, pos] ids, 1-D, or text
    tokenized by model a) and compares every hook point's activation of b with a's
    (``circuits_model_diff``). ``names``: the hook points compared, names or patterns as
    ``run_with_cache``'s ``names_filter`` takes them (None: all). ``logits``: a last entry
    ``"logits"``. ``per_head``: also one entry per head at points with a head axis.
    ``attention_mask`` [batch, pos]: padding, for both runs. The models must agree on
    the shapes that make hook points correspond (``ConfigError`` naming the field)."""
    if not isinstance(model_a, Model) or not isinstance(model_b, Model):
        raise TypeError(f"diff compares two circuits.Model, not {type(model_a).__name__} and "
                        f"{type(model_b).__name__}")
    if isinstance(names, str):
        names = [names]
    tok = model_a._tokens(tokens)
    B, T = tok.shape
    opts = N.DiffOptions()
    lib.circuits_diff_options_init(ctypes.byref(opts))
    mask = None if attention_mask is None else _pad.as_mask(attention_mask, tok.shape)
    if mask is not None:
        opts.attention_mask = mask.ctypes.data
    arr = None
    if names is not None:
        names = list(names)
        if not all(isinstance(n, str) for n in names):
            raise TypeError("names must be hook names (str)")
        if not names:  # the C call reads n_names 0 as "every point": an empty list is not that
            raise ValueError("names is empty: None compares every hook point")
        enc = [N.cstr(n) for n in names]  # refuses a NUL, which C would read as the name's end
        arr = (ctypes.c_char_p * max(len(enc), 1))(*enc)
        opts.names = ctypes.cast(arr, ctypes.c_void_p).value
        opts.n_names = len(enc)
    opts.logits = int(bool(logits))
    opts.per_head = int(bool(per_head))
    out = N.HANDLE()
    # both models stay open for the call: their locks keep close() out (taken in one order)
    first, second = (model_a, model_b) if id(model_a) <= id(model_b) else (model_b, model_a)
    with first._lock, second._lock:
        N.check(lib.circuits_model_diff(model_a._mptr(), model_b._mptr(), tok, B, T, ctypes.byref(opts),
                                        ctypes.byref(out)))
    del arr
    res = DiffResult()
    res.n_layers = model_a._dims.n_layers  # the library's number, not the editable cfg
    try:
        e = N.DiffEntry()
        for i in range(lib.circuits_diff_count(out)):
            e.size = ctypes.sizeof(e)
            N.check(lib.circuits_diff_at(out, i, ctypes.byref(e)))
            res.append({"name": N.decode(e.name), "kind": N.decode(e.kind), "layer": int(e.layer),
                        "head": int(e.head), "numel": int(e.numel), **{m: float(getattr(e, m)) for m in MEASURES}})
    finally:
        lib.circuits_diff_free(out)
    return res
