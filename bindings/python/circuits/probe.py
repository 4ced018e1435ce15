"""Linear probes (docs/probes.md): ``circuits.Probe`` over ``circuits_probe_*``.

    probe = circuits.Probe.fit(X, y, kind="logistic", l2=1.0, hook_name="blocks.1.hook_resid_post")
    probe.predict_proba(X_test); probe.score(X_test, y_test); probe.coef_; probe.save("p.probe")
    model.add_probe_monitor(probe, lambda out, first_position: ...)

LOGISTIC is scikit-learn's ``LogisticRegression(C=1/l2)`` (binary: ``coef_`` [1, d]; K > 2
classes: multinomial, ``coef_`` [K, d]); LINEAR is ``LinearRegression`` (l2 = 0) or
``Ridge(alpha=l2)``. Labels are the integers 0 .. K-1, every class present. The fit, the
predictions and the scores run in C; ``coef_`` / ``intercept_`` are read-only zero-copy views
of the probe's memory that keep the probe's C object alive.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from . import _native as N
from ._arrays import Handle, as_f32, tensor_view
from .errors import HookStopped, InvalidArgumentError, ShapeError

lib = N.lib

KINDS = {"linear": N.CIRCUITS_PROBE_LINEAR, "logistic": N.CIRCUITS_PROBE_LOGISTIC}
_KIND_NAMES = {v: k for k, v in KINDS.items()}


#: What a closed Probe holds: a handle of nothing (the real one lives while views reference it).
_CLOSED = Handle(0, lambda p: None)


def _require() -> None:
    N.require("circuits_probe_fit", "linear probes (circuits.Probe)")


def _rows(X: Any, d: Optional[int], what: str) -> np.ndarray:
    """X as contiguous float32 rows [n, d] (leading dimensions flattened: [batch, pos, d] works)."""
    a = as_f32(X, what)
    if a.ndim == 1 and d is not None and a.size == d:
        a = a.reshape(1, d)
    if a.ndim < 2:
        raise ShapeError(f"{what} must be [n, d] rows (or [..., d]), not shape {list(a.shape)}")
    a = a.reshape(int(np.prod(a.shape[:-1])), a.shape[-1])
    if d is not None and a.shape[1] != d:
        raise ShapeError(f"{what} has {a.shape[1]} columns; the probe reads d = {d}")
    return np.ascontiguousarray(a)


class Probe:
    """A fitted linear probe (``circuits_probe``). Make one with :meth:`fit` or :meth:`load`."""

    __slots__ = ("_h", "_kind", "_d", "_n_out", "_n_coef", "_y1d", "__weakref__")

    def __init__(self) -> None:
        raise TypeError("make a Probe with Probe.fit(X, y, ...) or Probe.load(path)")

    @classmethod
    def _wrap(cls, ptr: int, y1d: bool = True) -> "Probe":
        self = cls.__new__(cls)
        self._h = Handle(ptr, lib.circuits_probe_free)
        info = self._info()
        # sizes as the C object reports them; every buffer handed to C is sized from these
        self._kind, self._d, self._n_out = int(info.kind), int(info.d), int(info.n_outputs)
        self._n_coef = 1 if (self._kind == N.CIRCUITS_PROBE_LOGISTIC and self._n_out == 2) else self._n_out
        self._y1d = bool(y1d)
        return self

    @classmethod
    def fit(cls, X: Any, y: Any, kind: str = "logistic", l2: float = 1.0, fit_intercept: bool = True,
            max_iter: int = 50, tol: float = 1e-6, hook_name: Optional[str] = None) -> "Probe":
        """Fits a probe to rows X [n, d] (or [..., d]) and y: LOGISTIC class labels [n] (integers
        0 .. K-1), LINEAR targets [n] or [n, n_targets]. ``l2``: LOGISTIC 1 / C (> 0); LINEAR
        Ridge's alpha (0: least squares, whose singular values below ``tol`` times the largest
        count as zero, as scikit-learn 1.9's LinearRegression). ``hook_name``: the point the rows
        came from (what :meth:`circuits.Model.add_probe_monitor` reads by default)."""
        _require()
        if kind not in KINDS:
            raise ValueError(f"kind must be 'logistic' or 'linear', not {kind!r}")
        Xa = _rows(X, None, "X")
        ya = np.asarray(y)
        if ya.dtype.kind not in "fiub":
            raise TypeError(f"y must be a numeric array, got dtype {ya.dtype}")
        n = Xa.shape[0]
        if kind == "logistic":
            if ya.size != n:
                raise ShapeError(f"y must hold one class label per row of X ({n}), not shape {list(ya.shape)}")
            ya = np.ascontiguousarray(ya.reshape(n), dtype=np.float32)
            n_targets, y1d = 1, True
        else:
            y1d = ya.ndim == 1
            if ya.ndim not in (1, 2) or ya.shape[0] != n:
                raise ShapeError(f"y must be [n] or [n, n_targets] with n = {n}, not shape {list(ya.shape)}")
            ya = np.ascontiguousarray(ya.reshape(n, -1), dtype=np.float32)
            n_targets = ya.shape[1]
        o = N.ProbeOptions()
        lib.circuits_probe_options_init(ctypes.byref(o))
        o.kind = KINDS[kind]
        o.l2 = float(l2)
        o.fit_intercept = 1 if fit_intercept else 0
        o.max_iter = N.check_int(max_iter, ctypes.c_int32, "max_iter")
        o.tol = float(tol)
        name = ctypes.c_char_p(N.cstr(hook_name)) if hook_name is not None else None
        o.hook_name = ctypes.cast(name, ctypes.c_void_p) if name is not None else None
        out = ctypes.c_void_p()
        N.check(lib.circuits_probe_fit(ctypes.byref(out), Xa, n, Xa.shape[1], ya, n_targets, ctypes.byref(o)),
                "Probe.fit")
        return cls._wrap(out.value, y1d)

    @classmethod
    def load(cls, path: "str | os.PathLike[str]") -> "Probe":
        """A probe saved by :meth:`save` (or ``circuits_probe_save``), read as untrusted input."""
        _require()
        out = ctypes.c_void_p()
        N.check(lib.circuits_probe_load(ctypes.byref(out), N.cstr(os.fspath(path))), "Probe.load")
        return cls._wrap(out.value)

    def save(self, path: "str | os.PathLike[str]") -> None:
        """Writes the probe as a safetensors file (W, b and metadata; docs/probes.md)."""
        N.check(lib.circuits_probe_save(self._ptr, N.cstr(os.fspath(path))), "Probe.save")

    # -- the C object ---------------------------------------------------------------------

    @property
    def _ptr(self) -> int:
        p = self._h.ptr
        if not p:
            raise InvalidArgumentError("the probe was closed")
        return p

    def close(self) -> None:
        """Lets go of the C probe: freed now unless arrays from coef_ / intercept_ or a monitor
        registration still reference it (then when the last of them goes). Later calls on this
        object raise InvalidArgumentError."""
        self._h = _CLOSED

    def _info(self) -> N.ProbeInfo:
        info = N.ProbeInfo()
        info.size = ctypes.sizeof(info)
        N.check(lib.circuits_probe_get_info(self._ptr, ctypes.byref(info)))
        return info

    @property
    def kind(self) -> str:
        return _KIND_NAMES[self._kind]

    @property
    def d(self) -> int:
        """Input width."""
        return self._d

    @property
    def n_outputs(self) -> int:
        """LINEAR: targets; LOGISTIC: classes K."""
        return self._n_out

    @property
    def classes_(self) -> np.ndarray:
        """LOGISTIC: the labels 0 .. K-1 (scikit-learn's classes_)."""
        if self._kind != N.CIRCUITS_PROBE_LOGISTIC:
            raise AttributeError("a linear probe has no classes_")
        return np.arange(self._n_out)

    @property
    def l2(self) -> float:
        return float(self._info_live().l2)

    @property
    def fit_intercept(self) -> bool:
        return bool(self._info_live().fit_intercept)

    @property
    def n_iter_(self) -> int:
        """Newton steps the fit took (LINEAR: 0)."""
        return int(self._info_live().n_iter)

    @property
    def hook_name(self) -> Optional[str]:
        s = N.decode(self._info_live().hook_name)
        return s or None

    def _info_live(self) -> N.ProbeInfo:
        return self._info()

    def _views(self):
        W, b = N.Tensor(), N.Tensor()
        N.check(lib.circuits_probe_weights(self._ptr, ctypes.byref(W), ctypes.byref(b)))
        return tensor_view(W, self._h, readonly=True), tensor_view(b, self._h, readonly=True)

    @property
    def coef_(self) -> np.ndarray:
        """Weights [n_coef, d] (scikit-learn's coef_: [1, d] binary, [K, d] multinomial, [n_targets,
        d] linear): a read-only view that keeps the probe's memory alive."""
        return self._views()[0]

    @property
    def intercept_(self) -> np.ndarray:
        """Intercepts [n_coef] (zeros without fit_intercept): a read-only view."""
        return self._views()[1]

    # -- predictions ----------------------------------------------------------------------

    def _outputs(self, X: Any) -> np.ndarray:
        Xa = _rows(X, self._d, "X")
        out = np.empty((Xa.shape[0], self._n_out), np.float32)
        N.check(lib.circuits_probe_predict(self._ptr, Xa, Xa.shape[0], out), "Probe.predict")
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """LOGISTIC: class probabilities [n, K]."""
        if self._kind != N.CIRCUITS_PROBE_LOGISTIC:
            raise InvalidArgumentError("predict_proba needs a logistic probe")
        return self._outputs(X)

    def predict(self, X: Any) -> np.ndarray:
        """LOGISTIC: the most probable class [n] (int64); LINEAR: the predictions [n, n_targets]
        ([n] if fitted on a 1-D y)."""
        out = self._outputs(X)
        if self._kind == N.CIRCUITS_PROBE_LOGISTIC:
            return np.argmax(out, axis=1)
        return out[:, 0] if (self._y1d and self._n_out == 1) else out

    def evaluate(self, X: Any, y: Any) -> Dict[str, float]:
        """Held-out scores (``circuits_probe_evaluate``): LOGISTIC {"accuracy", "log_loss"},
        LINEAR {"r2", "mse"} (scikit-learn's accuracy_score, log_loss, r2_score, mean_squared_error)."""
        Xa = _rows(X, self._d, "X")
        n = Xa.shape[0]
        ya = np.asarray(y)
        if ya.dtype.kind not in "fiub":
            raise TypeError(f"y must be a numeric array, got dtype {ya.dtype}")
        want = n if self._kind == N.CIRCUITS_PROBE_LOGISTIC else n * self._n_out
        if ya.size != want:
            raise ShapeError(f"y must hold {want} values for {n} rows, not shape {list(ya.shape)}")
        ya = np.ascontiguousarray(ya.reshape(-1), dtype=np.float32)
        s = N.ProbeScore()
        s.size = ctypes.sizeof(s)
        N.check(lib.circuits_probe_evaluate(self._ptr, Xa, n, ya, ctypes.byref(s)), "Probe.evaluate")
        if self._kind == N.CIRCUITS_PROBE_LOGISTIC:
            return {"accuracy": float(s.accuracy), "log_loss": float(s.log_loss)}
        return {"r2": float(s.r2), "mse": float(s.mse)}

    def score(self, X: Any, y: Any) -> float:
        """scikit-learn's score: LOGISTIC accuracy, LINEAR R^2 (averaged over targets)."""
        e = self.evaluate(X, y)
        return e["accuracy"] if self._kind == N.CIRCUITS_PROBE_LOGISTIC else e["r2"]

    def __repr__(self) -> str:
        if not self._h.ptr:
            return "Probe(closed)"
        return (f"Probe(kind={self.kind!r}, d={self._d}, n_outputs={self._n_out}, l2={self.l2:g}, "
                f"hook_name={self.hook_name!r})")


# ---------------------------------------------------------------------------------------------
# monitors: model.add_probe_monitor
# ---------------------------------------------------------------------------------------------

def _monitor_entry(out_p: int, batch: int, pos: int, n_outputs: int, first: int, key: Optional[int]) -> int:
    """The C callback of every Python probe monitor: fn gets a copy of the outputs [batch, pos,
    n_outputs] (the library reuses its buffer) and the first position; an exception is stored for
    the run's caller (as a hook's) and stops the run."""
    from .model import _REGISTRY

    reg = _REGISTRY.get(key) if key else None
    if reg is None:
        return -1
    st = reg.state
    try:
        n = batch * pos * n_outputs
        arr = np.ctypeslib.as_array(ctypes.cast(out_p, ctypes.POINTER(ctypes.c_float)), (n,)).copy()
        reg.fn(arr.reshape(batch, pos, n_outputs), int(first))
        return N.CIRCUITS_HOOK_CONTINUE
    except HookStopped as e:
        st.pending, st.pending_point = e, reg.names[0]
        return N.CIRCUITS_HOOK_STOP
    except BaseException as e:  # noqa: BLE001 -- everything must reach the caller, not C
        st.pending, st.pending_point = e, reg.names[0]
        return -1


#: The one C function pointer for all Python probe monitors (module-level: alive while C can call it).
_MONITOR_TRAMPOLINE = N.PROBE_FN(_monitor_entry)


def add_probe_monitor(model: Any, probe: Probe, fn: Callable[[np.ndarray, int], Any],
                      hook: Optional[str] = None) -> Any:
    """Model.add_probe_monitor's body: a registration of the model (removed by its handle's
    ``remove()`` or :meth:`Model.reset_hooks`, re-made on a new context) whose C side is
    ``circuits_context_add_probe_monitor``."""
    from .model import HookHandle, _KEYS, _Registration

    N.require("circuits_context_add_probe_monitor", "probe monitors")
    if not isinstance(probe, Probe):
        raise TypeError(f"add_probe_monitor needs a circuits.Probe, not {type(probe).__name__}")
    if not callable(fn):
        raise TypeError(f"a probe monitor is fn(outputs, first_position), not {type(fn).__name__}")
    probe._ptr  # noqa: B018 -- a closed probe is refused here
    name = hook if hook is not None else probe.hook_name
    if name is None:
        raise InvalidArgumentError("the probe has no hook_name: pass hook=")
    with model._lock:
        model._check_open()
        model._refuse_running("adding a probe monitor")
        reg = _MonitorRegistration(next(_KEYS), fn, [name], False, model._state)
        reg.probe = probe._h  # the C monitor reads the probe: its handle lives as long as the registration
        model._c_add(reg)
        model._regs.append(reg)
    return HookHandle(model, reg)


def _c_add_monitor(reg: "_MonitorRegistration", ctx: int) -> List[int]:
    out = ctypes.c_int64()
    N.check(lib.circuits_context_add_probe_monitor(ctx, reg.probe.ptr, N.cstr(reg.names[0]), _MONITOR_TRAMPOLINE,
                                                   reg.key, ctypes.byref(out)), "add_probe_monitor")
    return [out.value]


def _make_registration_class():
    from .model import _Registration

    class _MonitorRegistration(_Registration):
        """A probe monitor among a model's registrations (Model._c_add calls c_add)."""

        __slots__ = ("probe",)

        def c_add(self, ctx: int) -> List[int]:
            return _c_add_monitor(self, ctx)

    return _MonitorRegistration


_MonitorRegistration = _make_registration_class()
