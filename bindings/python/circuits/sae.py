"""Sparse autoencoders and transcoders: SAELens's ``SAE`` and HookedSAETransformer's calls.

:class:`SAE` is a loaded ``circuits_sae`` (``SAE.load_from_disk(path)``: a directory SAELens
saved, cfg.json + sae_weights.safetensors): ``sae.cfg`` under SAELens's field names,
``encode`` / ``decode`` / ``forward`` on NumPy arrays, and the parameters (``W_enc``, ``W_dec``,
...) as read-only zero-copy views of the library's memory.

The functions below are what :class:`circuits.Model`'s ``add_sae``, ``reset_saes``, ``saes``,
``run_with_saes``, ``run_with_cache_with_saes``, ``run_with_hooks_with_saes`` and
``acts_to_saes`` delegate to (HookedSAETransformer's semantics; docs/saes.md "Python"). An
attachment is made on the model's C context (``circuits_context_add_sae``), so every run the
model makes — forward, run_with_cache, run_with_hooks, generate, the analyses — runs through
the SAEs attached, and their ``<hook>.hook_sae_*`` points are ordinary hook points.

Memory safety: the C SAE is owned by a :class:`circuits._arrays.Handle`. Every weight view
references it through its base, and a model references the handle of each SAE attached to it
(its C context holds the SAE's address) until it is detached or the model is closed:
``sae.close()`` only drops the SAE object's own reference, so the C object is freed when
nothing — no view, no model — refers to it any more.
"""

from __future__ import annotations

import ctypes
import json
import os
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native as N
from ._arrays import Handle, as_f32, tensor_view
from .errors import ClosedError, InvalidArgumentError, NotFoundError, ShapeError, UnsupportedError

lib = N.lib

__all__ = ["SAE", "SAEConfig", "SAEMetadata"]

ARCHITECTURES = {N.CIRCUITS_SAE_STANDARD: "standard", N.CIRCUITS_SAE_GATED: "gated",
                 N.CIRCUITS_SAE_JUMPRELU: "jumprelu", N.CIRCUITS_SAE_TOPK: "topk"}
NORMALIZATIONS = {N.CIRCUITS_SAE_NORM_NONE: "none", N.CIRCUITS_SAE_NORM_EXPECTED_AVERAGE: "expected_average_only_in",
                  N.CIRCUITS_SAE_NORM_CONSTANT_NORM_RESCALE: "constant_norm_rescale",
                  N.CIRCUITS_SAE_NORM_LAYER_NORM: "layer_norm"}
#: The parameters an SAE may have, by SAELens's names (circuits_sae_weight).
WEIGHT_NAMES = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold", "b_gate", "b_mag", "r_mag", "W_skip")


class SAEMetadata:
    """SAELens's ``SAEMetadata``: ``metadata.hook_name``, ``metadata.hook_name_out``,
    ``metadata.hook_layer`` (from the library), and the other keys of cfg.json's ``metadata``
    (``model_name``, ``context_size``, ...) as they are in the file; a missing key reads as None,
    as in SAELens. ``metadata["key"]``, ``"key" in metadata`` and ``get`` work too."""

    def __init__(self, **kwargs: Any):
        self.__dict__.update(kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def keys(self):
        return self.__dict__.keys()

    def items(self):
        return self.__dict__.items()

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"SAEMetadata({self.__dict__})"


class SAEConfig:
    """``sae.cfg`` under SAELens's names: ``architecture`` ("standard", "gated", "jumprelu",
    "topk"; a transcoder's as cfg.json spells it, e.g. "transcoder"), ``d_in``, ``d_sae``,
    ``d_out`` (transcoders: the output width; SAEs: d_in), ``dtype`` ("float32": libcircuits
    holds every SAE in fp32), ``device`` ("cpu"), ``apply_b_dec_to_input``,
    ``normalize_activations``, ``reshape_activations`` ("none" / "hook_z"), ``k`` and
    ``rescale_acts_by_decoder_norm`` (TopK; else None), ``metadata`` (:class:`SAEMetadata`),
    and ``is_transcoder``, ``has_skip``, ``has_sparsity``. Informational: the binding sizes its
    buffers from the numbers the library reported, never from this object."""

    def __init__(self, **fields: Any):
        self.__dict__.update(fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("sae.cfg is read-only (the library's SAE does not change after loading)")

    def to_dict(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["metadata"] = self.metadata.to_dict()
        return d

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k != "metadata")
        return f"SAEConfig({body})"


class _Dims(NamedTuple):
    """What circuits_sae_get_info reported: the sizes every buffer is made from."""

    d_in: int
    d_sae: int
    d_out: int
    transcoder: bool
    reshape_hook_z: bool
    hook_name: str
    hook_name_out: str


def _metadata_extra(path: str) -> Dict[str, Any]:
    """cfg.json's ``metadata`` object (informational keys only; the library read the file
    already and validated what it computes with). Unreadable or odd: nothing."""
    try:
        with open(os.path.join(path, "cfg.json"), encoding="utf-8") as f:
            meta = json.load(f).get("metadata")
    except (OSError, ValueError, AttributeError, RecursionError):
        return {}
    return {str(k): v for k, v in meta.items()} if isinstance(meta, dict) else {}


class SAE:
    """An SAE or transcoder loaded by libcircuits (SAELens's ``SAE`` for inference).

    ``SAE.load_from_disk(path)`` loads a directory SAELens saved (``sae.save_model(path)``):
    architectures standard, gated, jumprelu, topk, and transcoders (docs/saes.md "Loading").
    ``encode(x)`` / ``decode(acts)`` / ``forward(x)`` take NumPy arrays ``[..., d_in]`` (a
    ``hook_z`` SAE also ``[..., n_heads, d_head]``), computed by the library in fp32.
    ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``, ``threshold``, ``b_gate``, ``b_mag``, ``r_mag``,
    ``W_skip``: read-only zero-copy views (AttributeError where the architecture has none).
    ``use_error_term``: the default of ``model.add_sae(sae)`` (False), as SAELens's attribute.
    ``close()`` (or ``with``) drops this object's reference: the library's SAE is freed once no
    view and no model it is attached to refers to it."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("create an SAE with circuits.SAE.load_from_disk(path)")

    @classmethod
    def load_from_disk(cls, path: Union[str, "os.PathLike[str]"], device: str = "cpu", dtype: Optional[str] = None,
                       converter: Any = None, fold_W_dec_norm: bool = False) -> "SAE":
        """Loads the SAE directory ``path`` (``circuits_sae_load``). ``device`` must be "cpu"
        and ``dtype`` None or float32 (the library holds SAEs in fp32; F16 / BF16 files are
        widened at load). SAELens's ``converter`` (other formats) and ``fold_W_dec_norm`` are
        not supported (NotImplementedError)."""
        N.require("circuits_sae_load", "circuits.SAE")
        if device is not None and str(device) != "cpu":
            raise ValueError(f"libcircuits runs on the CPU only (device={device!r})")
        if dtype is not None and np.dtype(str(dtype).replace("torch.", "")) != np.float32:
            raise ValueError(f"libcircuits holds SAEs in float32 only (dtype={dtype!r})")
        if converter is not None:
            raise NotImplementedError("converter: libcircuits reads SAELens's saved format only (cfg.json + "
                                      "sae_weights.safetensors)")
        if fold_W_dec_norm:
            raise NotImplementedError("fold_W_dec_norm=True is not supported: load the SAE as saved")
        p = os.fspath(path)
        out = ctypes.c_void_p()
        N.check(lib.circuits_sae_load(ctypes.byref(out), N.cstr(p)))
        h = Handle(out.value, lib.circuits_sae_free)  # type: ignore[arg-type]
        info = N.SaeInfo()
        info.size = ctypes.sizeof(info)
        N.check(lib.circuits_sae_get_info(h.ptr, ctypes.byref(info)))
        self = cls.__new__(cls)
        self._h = h
        hook_name, hook_name_out = N.decode(info.hook_name), N.decode(info.hook_name_out)
        transcoder = bool(info.is_transcoder)
        self._dims = _Dims(int(info.d_in), int(info.d_sae), int(info.d_out), transcoder, bool(info.reshape_hook_z),
                           hook_name, hook_name_out)
        meta = _metadata_extra(p)
        meta.update(hook_name=hook_name, hook_name_out=hook_name_out if transcoder else None,
                    hook_layer=int(info.hook_layer) if info.hook_layer >= 0 else None)
        arch = ARCHITECTURES.get(info.architecture, str(info.architecture))
        topk = info.architecture == N.CIRCUITS_SAE_TOPK
        self.cfg = SAEConfig(
            architecture=N.decode(info.architecture_name) or arch,
            d_in=int(info.d_in), d_sae=int(info.d_sae), d_out=int(info.d_out), dtype="float32", device="cpu",
            apply_b_dec_to_input=bool(info.apply_b_dec_to_input),
            normalize_activations=NORMALIZATIONS.get(info.normalize_activations, str(info.normalize_activations)),
            reshape_activations="hook_z" if info.reshape_hook_z else "none",
            k=int(info.k) if topk else None,
            rescale_acts_by_decoder_norm=bool(info.rescale_acts_by_decoder_norm) if topk else None,
            is_transcoder=transcoder, has_skip=bool(info.has_skip), has_sparsity=bool(info.has_sparsity),
            activation=arch, metadata=SAEMetadata(**meta))
        self.use_error_term = False
        self._d_head: Optional[int] = None  # hook_z: from the last encode (SAELens's sae.d_head)
        self.path = p
        return self

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return getattr(self, "_h", None) is None

    def close(self) -> None:
        """Drops this object's reference to the library's SAE (idempotent). Views of its weights
        and models it is attached to keep it alive; using this object afterwards raises
        ClosedError."""
        self._h = None

    def __enter__(self) -> "SAE":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _live(self) -> Handle:
        """The handle, held by the caller for the length of a C call (another thread's close()
        only drops this object's reference)."""
        h = getattr(self, "_h", None)
        if h is None:
            raise ClosedError("this SAE is closed")
        return h

    def __repr__(self) -> str:
        d = self._dims
        kind = "transcoder" if d.transcoder else "SAE"
        where = d.hook_name + (f" -> {d.hook_name_out}" if d.transcoder else "")
        state = ", closed" if self.closed else ""
        return f"<circuits.SAE {self.cfg.architecture} {kind} {d.d_in} -> {d.d_sae} at {where}{state}>"

    # -- sizes ------------------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return self._dims.d_in

    @property
    def d_sae(self) -> int:
        return self._dims.d_sae

    @property
    def d_out(self) -> int:
        return self._dims.d_out

    @property
    def hook_name(self) -> str:
        return self._dims.hook_name

    # -- weights ----------------------------------------------------------------------------

    def weight(self, name: str) -> np.ndarray:
        """The parameter ``name`` (SAELens's name; also "log_feature_sparsity" with a sparsity
        file) as a read-only zero-copy view that keeps the SAE alive. KeyError (NotFoundError)
        if this SAE has none."""
        h = self._live()
        t = N.Tensor()
        N.check(lib.circuits_sae_weight(h.ptr, N.cstr(name), ctypes.byref(t)))
        return tensor_view(t, h, readonly=True)

    def _param(self, name: str) -> np.ndarray:
        try:
            return self.weight(name)
        except NotFoundError:
            raise AttributeError(f"this {self.cfg.architecture} SAE has no {name}") from None

    W_enc = property(lambda self: self._param("W_enc"), doc="[d_in, d_sae] (read-only view)")
    W_dec = property(lambda self: self._param("W_dec"), doc="[d_sae, d_out] (read-only view)")
    b_enc = property(lambda self: self._param("b_enc"), doc="[d_sae] (not gated SAEs)")
    b_dec = property(lambda self: self._param("b_dec"), doc="[d_out]")
    threshold = property(lambda self: self._param("threshold"), doc="[d_sae] (jumprelu)")
    b_gate = property(lambda self: self._param("b_gate"), doc="[d_sae] (gated)")
    b_mag = property(lambda self: self._param("b_mag"), doc="[d_sae] (gated)")
    r_mag = property(lambda self: self._param("r_mag"), doc="[d_sae] (gated)")
    W_skip = property(lambda self: self._param("W_skip"), doc="[d_out, d_in] (skip transcoders)")

    def state_dict(self) -> Dict[str, np.ndarray]:
        """{name: read-only view} of every parameter this SAE has, SAELens's names."""
        out = {}
        for name in WEIGHT_NAMES:
            try:
                out[name] = self.weight(name)
            except NotFoundError:
                continue
        return out

    # -- arithmetic -------------------------------------------------------------------------

    def _rows(self, x: Any, what: str) -> Tuple[np.ndarray, Tuple[int, ...], Optional[int]]:
        """x as C-contiguous float32 rows [n, d_in], its leading shape, and (hook_z read as
        [..., n_heads, d_head]) its d_head."""
        a = as_f32(x, what)
        d_in = self._dims.d_in
        d_head = None
        if a.ndim >= 1 and a.shape[-1] == d_in:
            lead = a.shape[:-1]
        elif self._dims.reshape_hook_z and a.ndim >= 2 and a.shape[-2] * a.shape[-1] == d_in:
            lead, d_head = a.shape[:-2], int(a.shape[-1])
        else:
            want = f"[..., {d_in}]" + (" or [..., n_heads, d_head] with n_heads * d_head = "
                                       f"{d_in}" if self._dims.reshape_hook_z else "")
            raise ShapeError(f"{what} must be {want} (d_in = {d_in}); got shape {list(a.shape)}")
        n = int(np.prod(lead, dtype=np.int64)) if lead else 1
        return a.reshape(n, d_in), tuple(int(s) for s in lead), d_head

    def encode_with_hidden_pre(self, x: Any) -> Tuple[np.ndarray, np.ndarray]:
        """``(feature_acts, hidden_pre)`` of ``x`` [..., d_in]: the activations
        (hook_sae_acts_post) and the pre-activations (hook_sae_acts_pre; gated: the magnitude
        path), each [..., d_sae] (``circuits_sae_encode``)."""
        return self._encode(x, pre=True)  # type: ignore[return-value]

    def encode(self, x: Any) -> np.ndarray:
        """SAELens's ``sae.encode``: the latents [..., d_sae] of ``x`` [..., d_in] (a hook_z SAE
        also takes [..., n_heads, d_head]). Any real dtype is converted to float32."""
        return self._encode(x, pre=False)  # type: ignore[return-value]

    def _encode(self, x: Any, pre: bool) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        rows, lead, d_head = self._rows(x, "x")
        d_sae = self._dims.d_sae
        post = np.empty((rows.shape[0], d_sae), np.float32)
        hidden = np.empty((rows.shape[0], d_sae), np.float32) if pre else None
        if rows.shape[0]:
            h = self._live()
            N.check(lib.circuits_sae_encode(h.ptr, rows, rows.shape[0], hidden, post))
        else:
            self._live()
        if d_head is not None:
            self._d_head = d_head
        post = post.reshape(lead + (d_sae,))
        if pre:
            return post, hidden.reshape(lead + (d_sae,))  # type: ignore[union-attr]
        return post

    def decode(self, feature_acts: Any, x: Any = None) -> np.ndarray:
        """SAELens's ``sae.decode``: the reconstruction [..., d_out] of ``feature_acts``
        [..., d_sae] (``circuits_sae_decode``). ``x`` — the input the latents were encoded from,
        same leading shape — is needed where decoding depends on it (normalize_activations
        constant_norm_rescale / layer_norm: SAELens keeps the per-row factors of the last encode
        on the object; skip transcoders: ``+ x W_skip^T``), and is passed to the library whenever
        given. A hook_z SAE returns [..., n_heads, d_head] when d_head is known (from ``x``, or
        as SAELens from the last ``encode``), else [..., d_in]."""
        a = as_f32(feature_acts, "feature_acts")
        d = self._dims
        if a.ndim < 1 or a.shape[-1] != d.d_sae:
            raise ShapeError(f"feature_acts must be [..., d_sae = {d.d_sae}]; got shape {list(a.shape)}")
        lead = tuple(int(s) for s in a.shape[:-1])
        n = int(np.prod(lead, dtype=np.int64)) if lead else 1
        acts = a.reshape(n, d.d_sae)
        rows, d_head = None, None
        if x is not None:
            rows, xlead, d_head = self._rows(x, "x")
            if xlead != lead:
                raise ShapeError(f"x has leading shape {list(xlead)} but feature_acts {list(lead)}: one input row "
                                 "per row of latents")
        out = np.empty((n, d.d_out), np.float32)
        h = self._live()
        if n:
            N.check(lib.circuits_sae_decode(h.ptr, acts, n, rows, out))
        if d_head is None:
            d_head = self._d_head
        if d.reshape_hook_z and d_head and d.d_out % d_head == 0:
            return out.reshape(lead + (d.d_out // d_head, d_head))
        return out.reshape(lead + (d.d_out,))

    def forward(self, x: Any) -> np.ndarray:
        """SAELens's ``sae(x)``: ``decode(encode(x))`` (a skip transcoder adds ``x W_skip^T``).
        With ``use_error_term`` an SAE (not a transcoder) adds the error ``x - decode(encode(x))``,
        as SAELens's ``SAE.forward`` does: the output is then ``x`` up to rounding."""
        acts = self.encode(x)
        out = self.decode(acts, x)
        if self.use_error_term and not self._dims.transcoder:
            xa = as_f32(x, "x").reshape(out.shape)
            out = out + (xa - out)
        return out

    __call__ = forward


# ---------------------------------------------------------------------------------------------
# Attaching SAEs to a circuits.Model (HookedSAETransformer's calls)
# ---------------------------------------------------------------------------------------------


class _Attached(NamedTuple):
    """One SAE attached to a model's context, in the context's attachment order. ``handle``
    keeps the C SAE alive while the context holds its address (the SAE object may be closed)."""

    hook_name: str
    sae: SAE
    handle: Handle
    use_error_term: bool


def _attached(model: Any) -> List[_Attached]:
    lst = model.__dict__.get("_sae_attached")
    if lst is None:
        lst = model.__dict__["_sae_attached"] = []
    return lst


def _check_sae(sae: Any) -> SAE:
    if not isinstance(sae, SAE):
        raise TypeError(f"expected a circuits.SAE (SAE.load_from_disk(path)), not {type(sae).__name__}")
    return sae


def _error_term(value: Any, sae: SAE) -> bool:
    v = sae.use_error_term if value is None else value
    if not isinstance(v, (bool, np.bool_)) and v not in (0, 1):
        raise TypeError(f"use_error_term must be a bool or None, not {v!r}")
    return bool(v)


def _refresh_points(model: Any, old: Dict[str, Any]) -> None:
    """The model's hook points after its context's table changed: points that existed before
    keep their HookPoint objects (their ``hook.ctx``), new ones get new ones."""
    model._build_points()
    by_addr = {addr: old.get(hp.name, hp) for addr, hp in model._state.points.items()}
    model._state.points = by_addr
    model._points = [old.get(hp.name, hp) for hp in model._points]
    model.hook_dict = {hp.name: hp for hp in model._points}


def _resolves(model: Any, name: str) -> bool:
    count = ctypes.c_size_t(0)
    buf = ctypes.create_string_buffer(1024)
    rc = lib.circuits_context_resolve_hook_name(model._ctx, N.cstr(name), 0, buf, len(buf), ctypes.byref(count))
    lib.circuits_clear_error()
    return rc in (0, N.CIRCUITS_E_RANGE) and count.value > 0


def _after_change(model: Any, old: Dict[str, Any]) -> None:
    """After an attachment changed the context's hook table: refresh the HookPoints, and drop
    the registrations (or the names of a registration) whose points went away — the library
    dropped their callbacks with the points (an SAE detached, or replaced by one without
    hook_sae_error) — so that re-registering (prepend, set_use_*) never meets a missing name."""
    _refresh_points(model, old)
    if not model._regs or not (set(old) - set(model.hook_dict)):
        return
    changed = False
    keep = []
    for reg in model._regs:
        names = [n for n in reg.names if _resolves(model, n)]
        changed |= len(names) != len(reg.names)
        reg.names = names
        if names:
            keep.append(reg)
    if changed:
        model._regs = keep
        model._rebuild_hooks()


def _attach(model: Any, sae: SAE, handle: Handle, use_error_term: bool) -> None:
    """circuits_context_add_sae on the model's context and the Python side's record of it."""
    old = dict(model.hook_dict)
    N.check(lib.circuits_context_add_sae(model._ctx, handle.ptr, int(use_error_term)))
    lst = _attached(model)
    rec = _Attached(sae._dims.hook_name, sae, handle, use_error_term)
    for i, a in enumerate(lst):
        if a.hook_name == rec.hook_name:  # replaced in place, as the library's list
            lst[i] = rec
            break
    else:
        lst.append(rec)
    _after_change(model, old)


def _detach(model: Any, hook_name: str) -> None:
    old = dict(model.hook_dict)
    N.check(lib.circuits_context_remove_sae(model._ctx, N.cstr(hook_name)))
    model.__dict__["_sae_attached"] = [a for a in _attached(model) if a.hook_name != hook_name]
    _after_change(model, old)


def _guard(model: Any, what: str) -> None:
    model._check_open()
    model._refuse_running(what)


def add_sae(model: Any, sae: SAE, use_error_term: Optional[bool] = None) -> None:
    """HookedSAETransformer.add_sae (see Model.add_sae)."""
    N.require("circuits_context_add_sae", "Model.add_sae")
    _check_sae(sae)
    uet = _error_term(use_error_term, sae)
    with model._lock:
        _guard(model, "add_sae")
        _attach(model, sae, sae._live(), uet)


def reset_saes(model: Any, act_names: Union[None, str, Sequence[str]] = None) -> None:
    """HookedSAETransformer.reset_saes (see Model.reset_saes)."""
    with model._lock:
        _guard(model, "reset_saes")
        if act_names is None:
            if _attached(model):
                old = dict(model.hook_dict)
                N.check(lib.circuits_context_remove_sae(model._ctx, None))
                model.__dict__["_sae_attached"] = []
                _after_change(model, old)
            return
        names = [act_names] if isinstance(act_names, str) else list(act_names)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"act_names are hook names (str), not {type(name).__name__}")
            if not any(a.hook_name == name for a in _attached(model)):
                warnings.warn(f"No SAE is attached to {name}. There's nothing to reset.", stacklevel=3)
                continue
            _detach(model, name)


def acts_to_saes(model: Any) -> Dict[str, SAE]:
    model._check_open()
    return {a.hook_name: a.sae for a in _attached(model)}


def reattach(model: Any) -> None:
    """Attaches the model's SAEs to its (new) context, in their order: Model._set_context_flag
    and _abandon_context call it on a fresh context before its hook points are read."""
    for a in _attached(model):
        N.check(lib.circuits_context_add_sae(model._ctx, a.handle.ptr, int(a.use_error_term)))


def _no_exclusion(exclude_special_tokens: Any) -> None:
    if exclude_special_tokens is not False:
        raise NotImplementedError("exclude_special_tokens is not supported by libcircuits's splice: the SAE applies "
                                  "at every position (pass False)")


@contextmanager
def saes(model: Any, saes: Union[SAE, Sequence[SAE]] = (), reset_saes_end: bool = True,
         use_error_term: Optional[bool] = None, exclude_special_tokens: Any = False) -> Iterator[Any]:
    """HookedSAETransformer.saes (see Model.saes)."""
    _no_exclusion(exclude_special_tokens)
    lst = [saes] if isinstance(saes, SAE) else list(saes)
    for s in lst:
        _check_sae(s)
    restore: List[Tuple[str, Optional[_Attached]]] = []
    try:
        for s in lst:
            with model._lock:
                _guard(model, "saes")
                prev = next((a for a in _attached(model) if a.hook_name == s._dims.hook_name), None)
                uet = _error_term(use_error_term, s)
                _attach(model, s, s._live(), uet)
                restore.append((s._dims.hook_name, prev))
        yield model
    finally:
        if reset_saes_end and restore and not model.closed:
            with model._lock:
                # latest first, so that an SAE given twice restores what was there before both
                for name, prev in reversed(restore):
                    if any(a.hook_name == name for a in _attached(model)):
                        _detach(model, name)
                    if prev is not None:
                        _attach(model, prev.sae, prev.handle, prev.use_error_term)


def run_with_saes(model: Any, *model_args: Any, saes: Union[SAE, Sequence[SAE]] = (), reset_saes_end: bool = True,
                  use_error_term: Optional[bool] = None, exclude_special_tokens: Any = False,
                  **model_kwargs: Any) -> Any:
    with model._lock, model.saes(saes, reset_saes_end, use_error_term, exclude_special_tokens):
        return model(*model_args, **model_kwargs)


def run_with_cache_with_saes(model: Any, *model_args: Any, saes: Union[SAE, Sequence[SAE]] = (),
                             reset_saes_end: bool = True, use_error_term: Optional[bool] = None,
                             exclude_special_tokens: Any = False, return_cache_object: bool = True,
                             remove_batch_dim: bool = False, **kwargs: Any) -> Tuple[Any, Any]:
    with model._lock, model.saes(saes, reset_saes_end, use_error_term, exclude_special_tokens):
        return model.run_with_cache(*model_args, return_cache_object=return_cache_object,
                                    remove_batch_dim=remove_batch_dim, **kwargs)


def run_with_hooks_with_saes(model: Any, *model_args: Any, saes: Union[SAE, Sequence[SAE]] = (),
                             reset_saes_end: bool = True, exclude_special_tokens: Any = False,
                             fwd_hooks: Sequence[Any] = (), bwd_hooks: Sequence[Any] = (),
                             reset_hooks_end: bool = True, clear_contexts: bool = False,
                             use_error_term: Optional[bool] = None, **model_kwargs: Any) -> Any:
    with model._lock, model.saes(saes, reset_saes_end, use_error_term, exclude_special_tokens):
        return model.run_with_hooks(*model_args, fwd_hooks=fwd_hooks, bwd_hooks=bwd_hooks,
                                    reset_hooks_end=reset_hooks_end, clear_contexts=clear_contexts, **model_kwargs)
