"""Steering vectors, llama.cpp control vectors and contrastive vectors (docs/steering.md).

Thin over lib/analysis/steer.c and lib/io/control_vector.c:

- ``model.add_steering(hook, vector, scale=1.0, positions=None)`` adds ``scale * vector`` at
  every point ``hook`` selects (the points' last axis is the vector's length) at the chosen
  positions; it returns a :class:`circuits.HookHandle` (``handle.remove()``), and
  ``model.reset_hooks()`` removes it like any hook. ``with model.steering(hook, vector, ...):``
  steers for the block only.
- Positions count from the sequence's start, a KV cache's held positions included (generation
  steers the positions it reaches); negative ones from the end of each run (``-1``: each run's
  last position, i.e. every newly generated token under a KV cache).
- :func:`load_control_vector` / :func:`save_control_vector`: llama.cpp's control-vector GGUF
  files (``direction.N`` is added to the output of block N, ``blocks.N.hook_resid_post``, N >= 1,
  as llama.cpp applies it); ``model.add_control_vector(directions_or_path, scale=...)``.
- ``model.contrastive_vector(positive, negative, hook, reduce="last")``: the mean over the
  pairs of act(positive) - act(negative) at each selected point, reduced over the real tokens
  ("last": each row's last real token, "mean": their mean).

The library copies every vector at registration: the arrays passed may change or go away.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _native as N
from . import padding as _pad
from .errors import ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from .model import HookHandle, Model

lib = N.lib

__all__ = ["add_steering", "steering", "add_control_vector", "load_control_vector", "save_control_vector",
           "contrastive_vector"]

_REDUCE = {"last": N.CIRCUITS_CONTRAST_LAST, "mean": N.CIRCUITS_CONTRAST_MEAN}


def _vector(v: Any, what: str, ndim: int) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be an array of numbers, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ShapeError(f"{what} must have {ndim} dimension{'s' if ndim > 1 else ''}, got shape {list(a.shape)}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _positions(positions: Any) -> Optional[np.ndarray]:
    if positions is None:
        return None
    if isinstance(positions, (bool, np.bool_)):
        raise TypeError("positions must be an int or a sequence of ints, not a bool")
    p = np.atleast_1d(np.asarray(positions))
    if p.size == 0:
        raise ValueError("positions is empty: pass None to steer every position")
    if p.ndim != 1 or p.dtype.kind not in "iu":
        raise TypeError(f"positions must be an int or a sequence of ints, got {positions!r}")
    return np.ascontiguousarray(p, dtype=np.int64)


def _options(scale: float, pos: Optional[np.ndarray]) -> N.SteeringOptions:
    o = N.SteeringOptions()
    lib.circuits_steering_options_init(ctypes.byref(o))
    o.scale = float(scale)
    if pos is not None:
        o.positions = pos.ctypes.data
        o.n_positions = pos.size
    return o


def _register(model: "Model", names: List[str], adder: Any, permanent: bool) -> "HookHandle":
    """A registration whose data the library owns, kept in the model's hook list (so a context
    the model rebuilds gets it again, and reset_hooks / handle.remove() take it away)."""
    from .model import HookHandle, _OwnedRegistration, _KEYS

    with model._lock:
        model._check_open()
        model._refuse_running("adding a steering vector")
        reg = _OwnedRegistration(next(_KEYS), adder, names, permanent, model._state)
        model._c_add(reg)
        model._regs.append(reg)
    return HookHandle(model, reg)


def add_steering(model: "Model", hook: str, vector: Any, scale: float = 1.0, positions: Any = None,
                 is_permanent: bool = False) -> "HookHandle":
    """Adds ``scale * vector`` at every hook point ``hook`` selects (a name, short name or
    ``*`` pattern; each point's last axis must be ``len(vector)``), at ``positions`` (None:
    every position; ints from the sequence's start, negative from each run's end)."""
    N.require("circuits_context_add_steering", "steering vectors")
    if not isinstance(hook, str):
        raise TypeError(f"hook must be a hook name, short name or pattern (str), not {type(hook).__name__}")
    v = _vector(vector, "a steering vector", 1)
    pos = _positions(positions)
    scale = float(scale)

    def adder(ctx: int) -> List[int]:
        out = ctypes.c_int64()
        o = _options(scale, pos)
        N.check(lib.circuits_context_add_steering(ctx, N.cstr(hook), v, v.size, ctypes.byref(o), ctypes.byref(out)))
        return [out.value]

    return _register(model, [hook], adder, is_permanent)


@contextmanager
def steering(model: "Model", hook: str, vector: Any, scale: float = 1.0, positions: Any = None) -> Iterator["Model"]:
    """``with model.steering(hook, vector, scale=...):`` steers inside the block only."""
    h = add_steering(model, hook, vector, scale, positions)
    try:
        yield model
    finally:
        h.remove()


def load_control_vector(path: Union[str, "os.PathLike[str]"], n_layers: Optional[int] = None,
                        d_model: Optional[int] = None, model: Optional["Model"] = None) -> np.ndarray:
    """llama.cpp's control-vector GGUF file as directions [n_layers, d_model]: row N is
    ``direction.N`` (added after block N); rows the file has none for (row 0 always) are 0.
    The shape is the model's, or n_layers and d_model."""
    N.require("circuits_control_vector_load", "control vectors")
    if model is not None:
        n_layers, d_model = model._dims.n_layers, model._dims.d_model
    if n_layers is None or d_model is None:
        raise TypeError("load_control_vector needs model= or both n_layers and d_model")
    L = N.check_int(n_layers, ctypes.c_int32, "n_layers")
    D = N.check_int(d_model, ctypes.c_int64, "d_model")
    if L < 1 or D < 1:
        raise ShapeError(f"n_layers {L} and d_model {D} must be at least 1")
    out = np.empty((L, D), np.float32)
    N.check(lib.circuits_control_vector_load(N.cstr(os.fspath(path)), L, D, out))
    return out


def save_control_vector(path: Union[str, "os.PathLike[str]"], directions: Any, model_hint: Optional[str] = None) -> None:
    """Writes directions [n_layers, d_model] in llama.cpp's layout (direction.1 ..
    direction.{n_layers-1}; row 0 must be zero: llama.cpp steers no block 0)."""
    N.require("circuits_control_vector_save", "control vectors")
    d = _vector(directions, "directions", 2)
    hint = None if model_hint is None else N.cstr(model_hint)
    N.check(lib.circuits_control_vector_save(N.cstr(os.fspath(path)), d, d.shape[0], d.shape[1], hint))


def add_control_vector(model: "Model", directions: Any, scale: float = 1.0, positions: Any = None,
                       is_permanent: bool = False) -> "HookHandle":
    """Steers every block's output (blocks.N.hook_resid_post) by directions [n_layers, d_model]
    (or the control-vector file at that path) times scale, under one handle."""
    N.require("circuits_context_add_control_vector", "control vectors")
    if isinstance(directions, (str, os.PathLike)):
        d = load_control_vector(directions, model=model)
    else:
        d = _vector(directions, "directions", 2)
    pos = _positions(positions)
    scale = float(scale)

    def adder(ctx: int) -> List[int]:
        out = ctypes.c_int64()
        o = _options(scale, pos)
        N.check(lib.circuits_context_add_control_vector(ctx, d, d.shape[0], d.shape[1], ctypes.byref(o),
                                                        ctypes.byref(out)))
        return [out.value]

    return _register(model, ["blocks.*.hook_resid_post"], adder, is_permanent)


def _side_tokens(model: "Model", positive: Any, negative: Any, positive_mask: Any, negative_mask: Any,
                 prepend_bos: Optional[bool], padding_side: Optional[str]):
    """Both sides as [batch, pos] int32 tokens of one shape, with their masks (text: tokenized
    together, padded on the padding side, masks from the pad tokens)."""
    texts = [isinstance(x, str) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], str))
             for x in (positive, negative)]
    if texts[0] != texts[1]:
        raise TypeError("positive and negative must both be text or both be token ids")
    if texts[0]:
        pos_l = [positive] if isinstance(positive, str) else list(positive)
        neg_l = [negative] if isinstance(negative, str) else list(negative)
        if len(pos_l) != len(neg_l):
            raise ShapeError(f"{len(pos_l)} positive and {len(neg_l)} negative prompts: they are pairs")
        side = model._padding_side(padding_side)
        tok = model._tokens(model.to_tokens(pos_l + neg_l, prepend_bos=prepend_bos, padding_side=side))
        bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        t = model._tokenizer
        mask = _pad.get_attention_mask(tok, model._pad_id(), t.bos_token_id if t is not None else None, bool(bos), side)
        n = len(pos_l)
        p, q, pm, nm = tok[:n], tok[n:], mask[:n], mask[n:]
    else:
        p, q = model._tokens(positive), model._tokens(negative)
        if p.shape != q.shape:
            raise ShapeError(f"positive tokens {list(p.shape)} and negative tokens {list(q.shape)}: one shape")
        pm = None if positive_mask is None else _pad.as_mask(positive_mask, p.shape)
        nm = None if negative_mask is None else _pad.as_mask(negative_mask, q.shape)
    c = lambda a: None if a is None else np.ascontiguousarray(a, dtype=np.int32)  # noqa: E731
    return c(p), c(q), c(pm), c(nm)


def contrastive_vector(model: "Model", positive: Any, negative: Any, hook: str, reduce: str = "last",
                       positive_mask: Any = None, negative_mask: Any = None, prepend_bos: Optional[bool] = None,
                       padding_side: Optional[str] = None) -> np.ndarray:
    """The mean over pairs of act(positive row) - act(negative row) at every point ``hook``
    selects, each row reduced over its real tokens (``reduce``: "last" or "mean"). positive and
    negative: lists of prompts (tokenized together and padded) or token arrays [batch, pos] of
    one shape (with optional 0/1 masks, left or right padding). Returns [d] for one point, else
    [n_points, d] in firing order. The model's hooks (and steering) fire in both runs."""
    N.require("circuits_context_contrastive_vector", "contrastive vectors")
    if not isinstance(hook, str):
        raise TypeError(f"hook must be a hook name, short name or pattern (str), not {type(hook).__name__}")
    if reduce not in _REDUCE:
        raise ValueError(f"reduce must be 'last' or 'mean', not {reduce!r}")
    p, q, pm, nm = _side_tokens(model, positive, negative, positive_mask, negative_mask, prepend_bos, padding_side)
    B, T = p.shape
    with model._lock:
        model._check_open()
        ctx = model._ctx
        count = ctypes.c_size_t()
        buf = ctypes.create_string_buffer(512)
        N.check(lib.circuits_context_resolve_hook_name(ctx, N.cstr(hook), 0, buf, 512, ctypes.byref(count)))
        dims = []
        for i in range(count.value):
            N.check(lib.circuits_context_resolve_hook_name(ctx, N.cstr(hook), i, buf, 512, None))
            hp = model.hook_dict.get(buf.value.decode())
            idx = model._points.index(hp) if hp is not None else -1
            t = N.Tensor()
            if idx < 0 or lib.circuits_context_hook_point(ctx, idx, 1, 1, ctypes.byref(t)) != 0:
                dims.append(0)
            else:
                dims.append(int(t.shape[t.ndim - 1]))
        d = max(dims) if dims else 0
        out = np.zeros((count.value, max(d, 1)), np.float32)
        o = N.ContrastOptions()
        lib.circuits_contrast_options_init(ctypes.byref(o))
        o.reduce = _REDUCE[reduce]
        o.positive_mask = None if pm is None else pm.ctypes.data
        o.negative_mask = None if nm is None else nm.ctypes.data
        model._call(lib.circuits_context_contrastive_vector, N.cstr(hook), p, q, B, T, ctypes.byref(o), out,
                    out.size, multi_run=True)
    return out[0] if count.value == 1 else out
