"""Feature statistics of an SAE over a token dataset (docs/saes.md "Feature statistics").

    stats = model.feature_stats(sae, tokens, batch_size=8, top_k=10)   # tokens: int [n_rows, pos]
    stats.frequency, stats.mean, stats.max                             # [d_sae] NumPy arrays
    stats.top(123)                 # the latent's top contexts: values, rows, positions, windows
    stats.save("stats.safetensors"); circuits.FeatureStats.load("stats.safetensors")

:class:`FeatureStats` wraps a ``circuits_feature_stats``: one streaming pass with bounded memory
(``circuits_context_feature_stats_add`` per batch; the model runs only as far as the SAE's hook
point), results that do not depend on the batching. ``stats.add(model, tokens)`` adds more rows
(numbered after the ones already added).

The SAE: any object with ``_live()`` returning the :class:`circuits._arrays.Handle` that owns its
``circuits_sae`` (:class:`circuits.SAE` has it). The statistics keep that handle, so the C SAE
lives as long as statistics that may still add to it. Statistics read from a file have no SAE:
adding to them raises UnsupportedError.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Dict, NamedTuple, Optional, Union

import numpy as np

from . import _native as N
from ._arrays import Handle
from .errors import ClosedError

lib = N.lib

__all__ = ["FeatureStats", "TopContexts"]


class TopContexts(NamedTuple):
    """A latent's top activating contexts, largest first (ties: earlier row, then position).
    ``windows`` [n, left + 1 + right]: the tokens around each (-1 outside its row), the
    activating one at column ``left``."""

    values: np.ndarray     # [n] float32
    rows: np.ndarray       # [n] int64: the dataset row (rows numbered in the order added)
    positions: np.ndarray  # [n] int64
    windows: np.ndarray    # [n, window] int32
    left: int              # the column of the activating token in windows


class FeatureStats:
    """Per latent of an SAE: how often it fires (acts_post > threshold), its mean activation
    over all counted tokens, its maximum, and its ``top_k`` activating contexts with
    ``context_left`` tokens before and ``context_right`` after. ``skip_positions`` leaves the
    first positions of every row out (1: BOS)."""

    def __init__(self, sae: Any, top_k: int = 10, context_left: int = 8, context_right: int = 2,
                 threshold: float = 0.0, skip_positions: int = 0):
        N.require("circuits_feature_stats_create", "circuits.FeatureStats")
        live = getattr(sae, "_live", None)
        if live is None:
            raise TypeError(f"sae must be a circuits.SAE (an object with _live()), not {type(sae).__name__}")
        sae_handle = live()
        o = N.FeatureStatsOptions()
        lib.circuits_feature_stats_options_init(ctypes.byref(o))
        o.top_k = N.check_int(top_k, ctypes.c_int32, "top_k")
        o.context_left = N.check_int(context_left, ctypes.c_int32, "context_left")
        o.context_right = N.check_int(context_right, ctypes.c_int32, "context_right")
        o.threshold = float(threshold)
        o.skip_positions = N.check_int(skip_positions, ctypes.c_int32, "skip_positions")
        out = ctypes.c_void_p()
        N.check(lib.circuits_feature_stats_create(ctypes.byref(out), sae_handle.ptr, ctypes.byref(o)))
        self._init(Handle(out.value, lib.circuits_feature_stats_free), sae_handle)  # type: ignore[arg-type]

    def _init(self, h: Handle, sae_handle: Optional[Handle]) -> None:
        self._h: Optional[Handle] = h
        self._sae_handle = sae_handle  # the C SAE the statistics read when adding
        self._lock = threading.RLock()  # one add at a time (two models could share the statistics); a hook may re-enter

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "FeatureStats":
        """Statistics saved by :meth:`save` (or ``circuits sae-stats -o``), checked as hostile
        input (``circuits_feature_stats_load``). They cannot be added to."""
        N.require("circuits_feature_stats_load", "circuits.FeatureStats.load")
        out = ctypes.c_void_p()
        N.check(lib.circuits_feature_stats_load(ctypes.byref(out), N.cstr(os.fspath(path))))
        self = cls.__new__(cls)
        self._init(Handle(out.value, lib.circuits_feature_stats_free), None)  # type: ignore[arg-type]
        return self

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return getattr(self, "_h", None) is None

    def close(self) -> None:
        """Drops this object's reference to the library's statistics (idempotent)."""
        self._h = None
        self._sae_handle = None

    def __enter__(self) -> "FeatureStats":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _live(self) -> Handle:
        h = getattr(self, "_h", None)
        if h is None:
            raise ClosedError("these feature statistics are closed")
        return h

    # -- adding -----------------------------------------------------------------------------

    def add(self, model: Any, tokens: Any, batch_size: int = 8) -> "FeatureStats":
        """Runs ``model`` on ``tokens`` ([n_rows, pos] or [pos] token ids, text is tokenized as
        ``model.to_tokens`` does) ``batch_size`` rows per call and adds their latents. Returns
        self. The model's hooks fire; SAEs attached to the model run (the statistics are then
        those of the spliced model), but one replacing the SAE's own point is refused."""
        bs = N.check_int(batch_size, ctypes.c_int64, "batch_size")
        if bs < 1:
            raise ValueError(f"batch_size must be at least 1, got {bs}")
        if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
            tokens = model.to_tokens(tokens)
        a = np.asarray(tokens)
        if a.ndim == 1:
            a = a[None, :]
        n_rows = a.shape[0] if a.ndim >= 1 else 0
        h = self._live()
        sae_handle = self._sae_handle  # alive for the calls (the C statistics read it)
        with self._lock:
            for r0 in range(0, n_rows, bs):
                tok = model._tokens(a[r0:r0 + bs])  # checked and int32, a batch at a time
                B, T = tok.shape
                model._call(lib.circuits_context_feature_stats_add, h.ptr, tok, B, T, multi_run=True)
        del sae_handle
        return self

    # -- reading ----------------------------------------------------------------------------

    def _dims(self):
        h = self._live()
        n, d = ctypes.c_int64(), ctypes.c_int64()
        k, w = ctypes.c_int32(), ctypes.c_int32()
        N.check(lib.circuits_feature_stats_dims(h.ptr, ctypes.byref(n), ctypes.byref(d), ctypes.byref(k),
                                                ctypes.byref(w)))
        return n.value, d.value, k.value, w.value

    @property
    def n_tokens(self) -> int:
        """Tokens counted so far (skipped positions are not counted)."""
        return self._dims()[0]

    @property
    def d_sae(self) -> int:
        return self._dims()[1]

    @property
    def top_k(self) -> int:
        return self._dims()[2]

    @property
    def window(self) -> int:
        """Tokens per context window: context_left + 1 + context_right."""
        return self._dims()[3]

    @property
    def options(self) -> Dict[str, Any]:
        """top_k, context_left, context_right, threshold, skip_positions."""
        h = self._live()
        o = N.FeatureStatsOptions()
        o.size = ctypes.sizeof(o)
        N.check(lib.circuits_feature_stats_get_options(h.ptr, ctypes.byref(o)))
        return {"top_k": int(o.top_k), "context_left": int(o.context_left), "context_right": int(o.context_right),
                "threshold": float(o.threshold), "skip_positions": int(o.skip_positions)}

    def _get(self, which: int) -> np.ndarray:
        h = self._live()
        d = self._dims()[1]
        out = np.empty(d, np.float32)
        ptrs = [None, None, None]
        ptrs[which] = out
        N.check(lib.circuits_feature_stats_get(h.ptr, *ptrs))
        return out

    @property
    def frequency(self) -> np.ndarray:
        """[d_sae]: the fraction of counted tokens each latent fired on (a new array)."""
        return self._get(0)

    @property
    def mean(self) -> np.ndarray:
        """[d_sae]: each latent's mean activation over all counted tokens."""
        return self._get(1)

    @property
    def max(self) -> np.ndarray:
        """[d_sae]: each latent's largest activation (0 before any token)."""
        return self._get(2)

    def top(self, latent: int) -> TopContexts:
        """The top contexts of ``latent`` (as many as it has: at most top_k)."""
        h = self._live()
        j = N.check_int(latent, ctypes.c_int64, "latent")
        _, _, k, w = self._dims()
        vals = np.empty(max(k, 1), np.float32)
        rows = np.empty(max(k, 1), np.int64)
        pos = np.empty(max(k, 1), np.int64)
        win = np.empty((max(k, 1), w), np.int32)
        cnt = ctypes.c_int32()
        N.check(lib.circuits_feature_stats_top(h.ptr, j, vals, rows, pos, win, ctypes.byref(cnt)))
        n = cnt.value
        return TopContexts(vals[:n].copy(), rows[:n].copy(), pos[:n].copy(), win[:n].copy(),
                           self.options["context_left"])

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """The documented safetensors file (docs/saes.md "Feature statistics file")."""
        h = self._live()
        N.check(lib.circuits_feature_stats_save(h.ptr, N.cstr(os.fspath(path))))

    def __repr__(self) -> str:
        if self.closed:
            return "<circuits.FeatureStats closed>"
        n, d, k, w = self._dims()
        return f"<circuits.FeatureStats {d} latents over {n} tokens, top {k} contexts of {w} tokens>"


def feature_stats(model: Any, sae: Any, tokens: Any, batch_size: int = 8, top_k: int = 10, context_left: int = 8,
                  context_right: int = 2, threshold: float = 0.0, skip_positions: int = 0) -> FeatureStats:
    """``model.feature_stats(sae, tokens, ...)``: new statistics of ``sae`` over ``tokens``."""
    st = FeatureStats(sae, top_k=top_k, context_left=context_left, context_right=context_right, threshold=threshold,
                      skip_positions=skip_positions)
    return st.add(model, tokens, batch_size=batch_size)
