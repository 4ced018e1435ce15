"""The metric of patching, path-patching and gradient runs as a ``circuits_metric`` (docs/api.md,
"Losses and metrics"; docs/gradients.md): a built-in kind computed in C, or a Python callable on
the logits (for a gradient run, one that returns the value and its gradient)."""

from __future__ import annotations

import ctypes
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np

from . import _native as N
from .errors import CallbackError, RangeError, ShapeError

lib = N.lib

KINDS = {
    "logit_diff": N.CIRCUITS_METRIC_LOGIT_DIFF,
    "logit": N.CIRCUITS_METRIC_LOGIT,
    "prob": N.CIRCUITS_METRIC_PROB,
    "log_prob": N.CIRCUITS_METRIC_LOG_PROB,
    "loss": N.CIRCUITS_METRIC_LOSS,
    "token_loss": N.CIRCUITS_METRIC_TOKEN_LOSS,  # 0.7.0: gradient runs and patching
}

MetricSpec = Union[str, Callable[[np.ndarray], Any]]


def _scalar(v: Any) -> float:
    """A metric's value as a float (a NumPy or torch scalar, a 1-element array, a number)."""
    item = getattr(v, "item", None)
    return float(item() if item is not None else v)


class MetricCall:
    """A ``circuits_metric`` and everything it points to, alive as long as this object. After a
    C call that may have run the callback, :meth:`reraise` raises the callback's exception."""

    def __init__(self) -> None:
        self.struct = N.Metric()
        lib.circuits_metric_init(ctypes.byref(self.struct))
        self._keep: List[Any] = []
        self.error: Optional[BaseException] = None

    def keep(self, a: Optional[np.ndarray]) -> Optional[int]:
        if a is None:
            return None
        self._keep.append(a)
        return a.ctypes.data

    def reraise(self) -> None:
        exc, self.error = self.error, None
        if exc is not None:
            raise exc


def _ints(a: Any, dtype: Any, what: str, ndmin: int = 1) -> np.ndarray:
    """An integer array as C reads it: refused (not wrapped) if a value does not fit."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {a.dtype}")
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise RangeError(f"{what}: a value is outside the range of {np.dtype(dtype).name}")
    a = a.reshape(-1) if ndmin == 1 else np.atleast_2d(a)
    return np.ascontiguousarray(a, dtype)


def _ids(x: Any, B: int, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 0:
        a = np.full(B, a)
    if a.shape != (B,) or a.dtype.kind not in "iu":
        raise ShapeError(f"{what} must be an int or [batch] = [{B}] ints, got {a.dtype} {list(a.shape)}")
    if a.size and (int(a.min()) < -(2**31) or int(a.max()) >= 2**31):
        raise RangeError(f"{what} holds an id that does not fit in int32")
    return np.ascontiguousarray(a, dtype=np.int32)


def _value_and_grad(out: Any, shape: Tuple[int, int, int], metric: Any) -> Tuple[float, np.ndarray]:
    """A gradient metric callable's return value checked: (value, d value / d logits [shape])."""
    name = getattr(metric, "__qualname__", None) or type(metric).__name__
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CallbackError(f"metric {name} returned {type(out).__name__}: in a gradient run a metric callable "
                            f"returns (value, d value / d logits of shape {list(shape)})")
    g = np.asarray(out[1])
    if g.dtype.kind not in "fiu":
        raise CallbackError(f"metric {name} returned a gradient of dtype {g.dtype}: a real array of shape "
                            f"{list(shape)} is needed")
    if g.shape != shape:
        raise ShapeError(f"metric {name} returned a gradient of shape {list(g.shape)}; the logits are "
                         f"{list(shape)}")
    return _scalar(out[0]), g


def make_metric(metric: MetricSpec, B: int, T: int, *, answer_tokens: Any = None, wrong_tokens: Any = None,
                positions: Any = None, tokens: Optional[np.ndarray] = None,
                attention_mask: Any = None, grad: bool = False, model: Any = None, hook: Any = None,
                direction: Any = None) -> MetricCall:
    """``metric``: a kind (``"logit_diff"``, ``"logit"``, ``"prob"``, ``"log_prob"``, ``"loss"``,
    ``"token_loss"``) with ``answer_tokens`` / ``wrong_tokens`` ([batch] or one int), ``positions``
    ([batch] or one int, negative from the end; None: the last), ``tokens`` / ``attention_mask`` for
    ``"loss"`` (``tokens`` and ``positions`` for ``"token_loss"``); ``"hook_linear"`` with ``hook`` and
    ``direction`` (gradient runs; needs ``model``); or a callable on a copy of the logits [batch, pos,
    d_vocab_out]: ``metric(logits) -> float``, or with ``grad=True`` (a gradient run)
    ``metric(logits) -> (value, d value / d logits)``; or an object with ``_struct(batch, pos) ->
    (circuits_metric, arrays to keep alive)`` (circuits.patching's metrics; circuits.grad.HookLinear
    has ``_struct_for(model, batch, pos)`` instead)."""
    mc = MetricCall()
    m = mc.struct
    if isinstance(metric, str) and metric == "hook_linear":
        from .grad import HookLinear  # circuits.grad imports this module

        if hook is None or direction is None:
            raise ValueError("metric 'hook_linear' needs hook= (a hook name) and direction= (an array of its shape)")
        metric = HookLinear(hook, direction)
    bind = getattr(metric, "_struct_for", None)
    if bind is not None:  # a metric that needs the model to check its arrays (HookLinear)
        if model is None:
            raise ValueError(f"{type(metric).__name__} is a gradient metric: it is used by gradient runs only")
        mc.struct, keep = bind(model, B, T)
        mc._keep.append(keep)
        return mc
    to_struct = getattr(metric, "_struct", None)
    if to_struct is not None:  # a built-in metric object (circuits.patching's LogitDiff, Logit, ..., Loss)
        mc.struct, keep = to_struct(B, T)
        mc._keep.append(keep)
        return mc
    if callable(metric) and grad:
        def grad_trampoline(logits_p, b, t, v, value_p, grad_p, user):  # noqa: ARG001
            try:
                n = b * t * v
                logits = np.ctypeslib.as_array((ctypes.c_float * n).from_address(logits_p)).reshape(b, t, v).copy()
                value, g = _value_and_grad(metric(logits), (b, t, v), metric)
                # C's buffer [b, t, v], written during this call only (the view dies with the frame)
                dst = np.ctypeslib.as_array((ctypes.c_float * n).from_address(grad_p)).reshape(b, t, v)
                np.copyto(dst, g, casting="unsafe")
                del dst
                value_p[0] = value
                return 0
            except BaseException as e:  # noqa: BLE001 -- re-raised by reraise() after the C call
                mc.error = e
                return -1

        gfn = N.METRIC_GRAD_FN(grad_trampoline)
        mc._keep.append(gfn)
        m.kind = N.CIRCUITS_METRIC_GRAD_CALLBACK
        m.grad_fn = ctypes.cast(gfn, ctypes.c_void_p).value
        return mc
    if callable(metric):
        def trampoline(logits_p, b, t, v, value_p, user):  # noqa: ARG001
            try:
                n = b * t * v
                logits = np.ctypeslib.as_array((ctypes.c_float * n).from_address(logits_p)).reshape(b, t, v).copy()
                value_p[0] = _scalar(metric(logits))
                return 0
            except BaseException as e:  # noqa: BLE001 -- re-raised by reraise() after the C call
                mc.error = e
                return -1

        fn = N.METRIC_FN(trampoline)
        mc._keep.append(fn)
        m.kind = N.CIRCUITS_METRIC_CALLBACK
        m.fn = ctypes.cast(fn, ctypes.c_void_p).value
        return mc
    if metric not in KINDS:
        raise ValueError(f"metric must be a callable or one of {list(KINDS)}, not {metric!r}")
    m.kind = KINDS[metric]
    if metric in ("loss", "token_loss"):
        if tokens is None:
            raise ValueError("metric 'loss' needs tokens")
        tok = _ints(tokens, np.int32, "the loss metric's tokens", 2)  # refused, not wrapped or truncated
        if tok.shape != (B, T):
            raise ShapeError(f"the loss metric's tokens must be [batch, pos] = [{B}, {T}], got {list(tok.shape)}")
        m.tokens = mc.keep(tok)
        if metric == "token_loss":
            if positions is None:
                raise ValueError("metric 'token_loss' needs positions (the loss at p predicts tokens[:, p + 1])")
            m.positions = mc.keep(_positions(positions, B))
            return mc
        if attention_mask is not None:
            mask = _ints(np.asarray(attention_mask).astype(np.int64) if np.asarray(attention_mask).dtype == bool
                         else attention_mask, np.int32, "attention_mask", 2)
            if mask.shape != (B, T):
                raise ShapeError(f"attention_mask must be [batch, pos] = [{B}, {T}], got {list(mask.shape)}")
            m.attention_mask = mc.keep(mask)
        return mc
    if answer_tokens is None:
        raise ValueError(f"metric {metric!r} needs answer_tokens")
    m.answer = mc.keep(_ids(answer_tokens, B, "answer_tokens"))
    if metric == "logit_diff":
        if wrong_tokens is None:
            raise ValueError("metric 'logit_diff' needs wrong_tokens")
        m.wrong = mc.keep(_ids(wrong_tokens, B, "wrong_tokens"))
    if positions is not None:
        m.positions = mc.keep(_positions(positions, B))
    return mc


def _positions(positions: Any, B: int) -> np.ndarray:
    p = np.asarray(positions)
    p = np.full(B, p) if p.ndim == 0 else p
    if p.shape != (B,) or p.dtype.kind not in "iu":
        raise ShapeError(f"positions must be an int or [batch] = [{B}] ints, got {list(p.shape)}")
    if p.size and (int(p.min()) < -(2**63) or int(p.max()) >= 2**63):
        raise RangeError("positions holds a value that does not fit in int64")
    return np.ascontiguousarray(p, dtype=np.int64)

