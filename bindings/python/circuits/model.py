"""Model: a loaded libcircuits model behind a TransformerLens ``HookedTransformer``-shaped API.

One :class:`Model` owns a ``circuits_model`` and one ``circuits_context`` (scratch memory and
the registered hooks). Python hooks are registered on that context through a single ctypes
trampoline (:data:`_TRAMPOLINE`, alive for the life of the process); its ``user_data`` is an
integer key into a weak registry of :class:`_Registration` objects, which the model owns.
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
import json
import os
import sys
import threading
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from . import _arrays
from . import _native as N
from . import modules
from ._arrays import Handle, readonly, tensor_view
from .cache import ActivationCache
from .errors import (
    ClosedError,
    HookReturnError,
    HookStopped,
    InvalidArgumentError,
    RangeError,
    ShapeError,
)
from .factored import FactoredMatrix
from . import padding as _pad
from .tokenizer import Tokenizer

lib = N.lib

__all__ = ["Model", "HookedTransformer", "Config", "HookPoint", "HookHandle", "Output", "HookViewWarning"]

NO_MODEL_TOKENIZER = (
    "this model has no tokenizer (its directory has no tokenizer.json, vocab.json + merges.txt, "
    "encoder.json + vocab.bpe or *.gguf): pass token ids, or set model.tokenizer = "
    "circuits.Tokenizer.load(path)"
)

ACT_FN_NAMES = {
    N.CIRCUITS_ACT_RELU: "relu",
    N.CIRCUITS_ACT_GELU: "gelu",
    N.CIRCUITS_ACT_GELU_NEW: "gelu_new",
    N.CIRCUITS_ACT_GELU_FAST: "gelu_fast",
    N.CIRCUITS_ACT_SILU: "silu",
    N.CIRCUITS_ACT_SOLU_LN: "solu_ln",
}
NORM_NAMES = {N.CIRCUITS_NORM_NONE: None, N.CIRCUITS_NORM_LN: "LN", N.CIRCUITS_NORM_LNPRE: "LNPre",
              N.CIRCUITS_NORM_RMS: "RMS", N.CIRCUITS_NORM_RMSPRE: "RMSPre"}
POS_NAMES = {N.CIRCUITS_POS_STANDARD: "standard", N.CIRCUITS_POS_SHORTFORMER: "shortformer",
             N.CIRCUITS_POS_ROTARY: "rotary"}
FORMAT_NAMES = {N.CIRCUITS_FORMAT_HF_GPT2: "hf_gpt2", N.CIRCUITS_FORMAT_TRANSFORMERLENS: "transformerlens",
                N.CIRCUITS_FORMAT_HF_GPT_NEOX: "hf_gpt_neox", N.CIRCUITS_FORMAT_HF_GPTJ: "hf_gptj",
                N.CIRCUITS_FORMAT_HF_LLAMA: "hf_llama", N.CIRCUITS_FORMAT_HF_MISTRAL: "hf_mistral",
                N.CIRCUITS_FORMAT_HF_QWEN2: "hf_qwen2", N.CIRCUITS_FORMAT_HF_GEMMA: "hf_gemma",
                N.CIRCUITS_FORMAT_HF_GEMMA2: "hf_gemma2"}


def _attn_types(local_attn: int, n_layers: int) -> Optional[List[str]]:
    """TransformerLens's per-layer attn_types list for circuits_config.local_attn."""
    local = {N.CIRCUITS_LOCAL_ATTN_ALL: lambda l: True, N.CIRCUITS_LOCAL_ATTN_EVEN: lambda l: l % 2 == 0,
             N.CIRCUITS_LOCAL_ATTN_ODD: lambda l: l % 2 == 1}.get(local_attn)
    return None if local is None else ["local" if local(l) else "global" for l in range(n_layers)]
PROCESSING_BITS = {
    "fold_ln": N.CIRCUITS_PROCESSED_FOLD_LN,
    "center_writing_weights": N.CIRCUITS_PROCESSED_CENTER_WRITING_WEIGHTS,
    "center_unembed": N.CIRCUITS_PROCESSED_CENTER_UNEMBED,
    "fold_value_biases": N.CIRCUITS_PROCESSED_FOLD_VALUE_BIASES,
    "refactor_factored_attn_matrices": N.CIRCUITS_PROCESSED_REFACTOR_FACTORED_ATTN_MATRICES,
}
COMPOSITION_MODES = {"Q": N.CIRCUITS_COMPOSITION_Q, "K": N.CIRCUITS_COMPOSITION_K, "V": N.CIRCUITS_COMPOSITION_V}
WRITERS = {"embed": N.CIRCUITS_WRITER_EMBED, "pos_embed": N.CIRCUITS_WRITER_POS_EMBED,
           "head": N.CIRCUITS_WRITER_HEAD, "mlp": N.CIRCUITS_WRITER_MLP}
READERS = {"q": N.CIRCUITS_READER_Q, "k": N.CIRCUITS_READER_K, "v": N.CIRCUITS_READER_V,
           "mlp": N.CIRCUITS_READER_MLP, "unembed": N.CIRCUITS_READER_UNEMBED}

HookFn = Callable[[np.ndarray, "HookPoint"], Optional[np.ndarray]]
NameOrPredicate = Union[str, Callable[[str], bool]]
NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


def _f32_repr(x: float) -> float:
    """A float32 config value as the shortest float that round-trips (1e-05, not 9.99e-06)."""
    return float(str(np.float32(x)))


@dataclass(frozen=True)
class Config:
    """Model hyper-parameters under TransformerLens's ``HookedTransformerConfig`` names.

    ``d_mlp`` is None for attention-only models. ``processing`` says which of
    ``from_pretrained``'s weight-processing steps were applied at load (after TransformerLens's
    automatic exceptions, e.g. no fold_ln for shortformer models). ``format`` is the file
    layout the model came from (``"hf_gpt2"`` or ``"transformerlens"``).
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: Optional[int]
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    act_fn: str
    normalization_type: Optional[str]
    positional_embedding_type: str
    attn_only: bool
    eps: float
    attn_scale: float
    use_attn_scale: bool
    scale_attn_by_inverse_layer_idx: bool
    use_attn_result: bool
    model_name: str
    format: str
    processing: Dict[str, bool] = field(default_factory=dict)
    # the modern families' fields (TransformerLens's names and "off" values)
    n_key_value_heads: Optional[int] = None
    rotary_dim: Optional[int] = None
    rotary_base: float = 10000.0
    rotary_adjacent_pairs: bool = False
    use_NTK_by_parts_rope: bool = False
    NTK_by_parts_factor: float = 8.0
    NTK_by_parts_low_freq_factor: float = 1.0
    NTK_by_parts_high_freq_factor: float = 4.0
    NTK_original_ctx_len: int = 8192
    rotary_scaling_factor: float = 1.0
    gated_mlp: bool = False
    parallel_attn_mlp: bool = False
    final_rms: bool = False
    use_normalization_before_and_after: bool = False
    attn_scores_soft_cap: float = -1.0
    output_logits_soft_cap: float = -1.0
    use_local_attn: bool = False
    window_size: Optional[int] = None
    attn_types: Optional[List[str]] = None
    device: str = "cpu"
    dtype: str = "float32"
    tokenizer_name: Optional[str] = None
    default_prepend_bos: bool = True
    # the optional hook points (set_use_split_qkv_input, ...; docs/hooks.md)
    use_split_qkv_input: bool = False
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    use_hook_tokens: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class _Dims(NamedTuple):
    """The sizes libcircuits reported at load (``circuits_model_config``): what output buffers
    are sized from."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    attn_only: bool
    n_key_value_heads: int


class HookPoint:
    """What a hook function receives as its second argument (TransformerLens's ``HookPoint``):
    ``hook.name`` (full hook name), ``hook.layer()`` (block index), ``hook.head_axis`` (the axis
    of the activation that indexes heads, or -1) and ``hook.ctx``, a dict that persists between
    calls until ``reset_hooks(clear_contexts=True)``. A model's hook points (``model.hook_dict``,
    ``model.blocks[0].attn.hook_pattern``) also take ``hook.add_hook(fn)``, as TransformerLens's."""

    __slots__ = ("name", "_layer", "head_axis", "ctx", "_model")

    def __init__(self, name: str, layer: int, head_axis: int, model: Optional["Model"] = None):
        self.name = name
        self._layer = int(layer)
        self.head_axis = int(head_axis)
        self.ctx: Dict[Any, Any] = {}
        self._model = weakref.ref(model) if model is not None else None

    def add_hook(self, hook: "HookFn", dir: str = "fwd", is_permanent: bool = False, level: Optional[int] = None,
                 prepend: bool = False) -> "HookHandle":
        """``model.add_hook(self.name, hook, ...)`` (TransformerLens's ``HookPoint.add_hook``)."""
        m = self._model() if self._model is not None else None
        if m is None:
            raise InvalidArgumentError(f"hook point '{self.name}' belongs to no live model")
        return m.add_hook(self.name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def add_perma_hook(self, hook: "HookFn", dir: str = "fwd") -> "HookHandle":
        """TransformerLens's ``HookPoint.add_perma_hook``: a permanent hook at this point."""
        return self.add_hook(hook, dir=dir, is_permanent=True)

    def clear_context(self) -> None:
        self.ctx.clear()

    def layer(self) -> int:
        """The block index of this hook point (ValueError outside blocks, e.g. hook_embed)."""
        if self._layer < 0:
            raise ValueError(f"hook point '{self.name}' is not inside a block")
        return self._layer

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


class HookViewWarning(RuntimeWarning):
    """A hook kept a reference to its activation array (or a slice, reshape, transpose or
    memoryview of it) after returning. That is memory-safe — the run's memory is handed over to
    the kept arrays and stays alive while any of them does — but the array is a view of a buffer
    the run reuses (one residual-stream buffer for every ``hook_resid_*``, one for every layer's
    ``hook_q``, ...): after the hook returns it reads what the run last wrote there, not this
    hook's values. Keep ``act.copy()`` to keep the values (TransformerLens's ``act.clone()``)."""


class Output(NamedTuple):
    """``return_type="both"``: logits and loss."""

    logits: np.ndarray
    loss: Union[np.float32, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Hook registrations and the trampoline
# ---------------------------------------------------------------------------------------------


class _Lease:
    """The run memory of one run (one generation step), once a hook's array outlived its call.

    Every activation array a hook receives is a zero-copy view whose base (a
    :class:`circuits._arrays._Holder`) references the lease of the run it came from. When the
    run returns, the binding asks whether any of those holders is still alive (the lease keeps a
    weak reference to each): if anything refers to one — a kept activation, any slice / reshape /
    transpose / memoryview of one, a traceback holding a hook's frame — it takes the context's
    run memory (``circuits_context_take_run_memory``) and the lease owns that block from then on: the
    context allocates a fresh block at its next run and never writes the taken one again, and
    the block is freed (``circuits_run_memory_free``) when the last array that views it is
    gone. Runs whose arrays all died with their hook calls cost nothing: the context keeps its
    block."""

    __slots__ = ("mem", "holders", "__weakref__")

    def __init__(self) -> None:
        self.mem: Optional[int] = None
        self.holders: List["weakref.ref[Any]"] = []  # one per hook array made in this run

    def kept(self) -> bool:
        """True if an array a hook of this run received (or a view of it) is still alive. Weak
        references, not reference counts: how many references an interpreter's own frames hold
        is not something to build on (CPython 3.14 borrows them)."""
        alive = [r for r in self.holders if r() is not None]
        self.holders = alive
        return bool(alive)

    def __del__(self, _free=lib.circuits_run_memory_free) -> None:
        m, self.mem = self.mem, None
        if m:
            _free(m)


def _take_run_memory(ctx: int, lease: _Lease) -> None:
    """Hands the context's run memory over to ``lease`` (see :class:`_Lease`)."""
    out = ctypes.c_void_p()
    N.check(lib.circuits_context_take_run_memory(ctx, ctypes.byref(out)), "taking the run memory a kept hook array "
            "views")
    if out.value:
        lease.mem = out.value


class _RunState:
    """State shared by a model and its registrations (no reference back to the model)."""

    __slots__ = ("points", "pending", "pending_point", "lease", "copy_acts")

    def __init__(self) -> None:
        self.points: Dict[int, HookPoint] = {}  # name address -> HookPoint
        self.pending: Optional[BaseException] = None
        self.pending_point = ""
        self.lease: Optional[_Lease] = None  # of the run in progress
        # True during a C call that runs several passes with no point between them where the
        # binding could take the run memory (activation and path patching, mean_activations):
        # a pass may replace the run memory (a larger run frees the smaller block), so hooks get
        # a copy of the activation, copied back after the hook (Model._call(multi_run=True))
        self.copy_acts = False


class _Registration:
    __slots__ = ("key", "fn", "names", "permanent", "ids", "state", "bwd", "kw", "__weakref__")

    def __init__(self, key: int, fn: HookFn, names: List[str], permanent: bool, state: _RunState,
                 bwd: bool = False):
        self.key = key
        self.fn = fn
        self.names = names
        self.permanent = permanent
        self.ids: List[int] = []
        self.state = state
        self.bwd = bwd  # a backward hook (dir="bwd"): called with the gradient at its points
        self.kw = _takes_hook_keyword(fn)


class _OwnedRegistration(_Registration):
    """A registration the library makes with data it owns (circuits.steering): ``c_add(ctx)``
    registers it on a context and returns its hook ids; removed like any hook."""

    __slots__ = ("c_add",)

    def __init__(self, key: int, c_add: Callable[[int], List[int]], names: List[str], permanent: bool,
                 state: _RunState):
        super().__init__(key, c_add, names, permanent, state)
        self.c_add = c_add


_REGISTRY: "weakref.WeakValueDictionary[int, _Registration]" = weakref.WeakValueDictionary()
_KEYS = itertools.count(1)
_weakref = weakref.ref
# Hook activations are zero-copy views made through __array_interface__ (circuits._arrays.view):
# the same as np.ctypeslib.as_array(pointer, shape) but about 2.5x cheaper per call, which is
# most of a no-op hook's cost (bench/python_hooks.py measures both). The holder references the
# run's lease, so every array derived from the activation keeps the lease alive.
_Holder = _arrays._Holder
_asarray = np.asarray


def _takes_hook_keyword(fn: Any) -> bool:
    """True if fn names a ``hook`` parameter: then it is called ``fn(act, hook=hp)``, as
    TransformerLens calls hooks, so that ``def f(act, *, hook)`` and ``partial(f, clean=c)`` of
    ``f(act, clean, hook)`` work; other callables (``lambda a, h: ...``) get hp positionally."""
    try:
        p = inspect.signature(fn).parameters.get("hook")
    except (TypeError, ValueError):  # no signature (a builtin): positional
        return False
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _apply_return(act: np.ndarray, ret: Any, hp: HookPoint, fn: Any, what: str = "activation") -> None:
    if not isinstance(ret, np.ndarray):
        raise HookReturnError(
            f"hook {_fn_name(fn)} at '{hp.name}' returned {type(ret).__name__}: a hook must return None, the "
            f"{what}, or a float32 numpy array of shape {list(act.shape)}")
    if ret.shape != act.shape:
        raise HookReturnError(
            f"hook {_fn_name(fn)} at '{hp.name}' returned an array of shape {list(ret.shape)}; the {what} has "
            f"shape {list(act.shape)} (a replacement must have the same shape)")
    if act.dtype == np.int32 and ret.dtype.kind in "iu":  # hook_tokens: token ids (checked by libcircuits)
        if ret.size and (ret.min() < 0 or ret.max() > np.iinfo(np.int32).max):
            raise HookReturnError(f"hook {_fn_name(fn)} at '{hp.name}' returned token ids outside int32")
        ret = ret.astype(np.int32)
    elif ret.dtype != np.float32:
        raise HookReturnError(
            f"hook {_fn_name(fn)} at '{hp.name}' returned dtype {ret.dtype}; {what}s are float32 (return "
            f"arr.astype(np.float32) or edit the {what} in place)")
    np.copyto(act, ret)


def _hook_entry(act_p: Any, key: Optional[int]) -> int:
    """The C callback of every Python hook. Never lets an exception escape into C: a failing
    hook stores its exception for the run's caller and returns -1 (CIRCUITS_HOOK_STOP for
    HookStopped), which stops the run."""
    reg = _REGISTRY.get(key) if key else None
    if reg is None:
        return -1
    st = reg.state
    hp = None
    try:
        t = act_p.contents
        hp = st.points.get(t.name)
        if hp is None:
            hp = HookPoint(N.decode(t.name), t.layer, t.head_axis)
        holder = _Holder(t.data, tuple(t.shape[: t.ndim]), False, st.lease,
                         "<i4" if hp.name == _arrays.TOKENS_HOOK else "<f4")
        if st.copy_acts:
            # a multi-pass C call: the hook's array is its own copy (a later pass of the same
            # call may free this run memory before the binding could take it), and its edits
            # (in place or returned) are copied back into the run
            live = _asarray(holder)
            act = live.copy()
            ret = reg.fn(act, hook=hp) if reg.kw else reg.fn(act, hp)
            if reg.bwd and type(ret) is tuple and len(ret) == 1:
                ret = ret[0]  # TransformerLens's backward hooks may return (grad,), PyTorch's form
            if ret is not None and ret is not act:
                _apply_return(live, ret, hp, reg.fn, "gradient" if reg.bwd else "activation")
            else:
                np.copyto(live, act)
            return N.CIRCUITS_HOOK_CONTINUE
        kept = _weakref(holder)
        st.lease.holders.append(kept)
        act = _asarray(holder)
        ret = reg.fn(act, hook=hp) if reg.kw else reg.fn(act, hp)
        if reg.bwd and type(ret) is tuple and len(ret) == 1:
            ret = ret[0]  # TransformerLens's backward hooks may return (grad,), PyTorch's form
        if ret is not None and ret is not act:
            _apply_return(act, ret, hp, reg.fn, "gradient" if reg.bwd else "activation")
        # with this frame's references gone, a live holder means the hook kept the array or a
        # view of it (a slice, reshape, transpose or memoryview references act; act.base is the
        # holder)
        ret = act = holder = None
        if kept() is not None:
            warnings.warn(
                f"hook {_fn_name(reg.fn)} kept a reference to the {'gradient' if reg.bwd else 'activation'} at "
                f"'{hp.name}' (or a view of it): it "
                "stays valid, but the run reuses that buffer, so after the hook returns it reads what the run last "
                "wrote there, not this hook's values; store act.copy() to keep them",
                HookViewWarning, stacklevel=2)
        return N.CIRCUITS_HOOK_CONTINUE
    except HookStopped as e:
        st.pending, st.pending_point = e, hp.name if hp else "?"
        return N.CIRCUITS_HOOK_STOP
    except BaseException as e:  # noqa: BLE001 -- everything must reach the caller, not C
        st.pending, st.pending_point = e, hp.name if hp else "?"
        return -1


#: The one C function pointer for all Python hooks (module-level: alive while C can call it).
_TRAMPOLINE = N.HOOK_FN(_hook_entry)


class HookHandle:
    """Returned by :meth:`Model.add_hook`; ``handle.remove()`` removes that hook."""

    __slots__ = ("_model", "_reg")

    def __init__(self, model: "Model", reg: _Registration):
        self._model = weakref.ref(model)
        self._reg = reg

    def remove(self) -> None:
        m = self._model()
        if m is not None:
            m._unregister(self._reg)


# ---------------------------------------------------------------------------------------------
# The model handle: owns the C model and the contexts created on it
# ---------------------------------------------------------------------------------------------


class _ModelHandle:
    """Owns a ``circuits_model`` and its contexts; frees contexts first, then the model, once
    nothing references it any more (weight arrays reference it, so the memory they view stays
    mapped after ``Model.close()`` until they are gone)."""

    __slots__ = ("ptr", "contexts", "__weakref__")

    def __init__(self, ptr: int):
        self.ptr: Optional[int] = ptr
        self.contexts: set = set()

    def new_context(self, use_attn_result: bool, **flags: bool) -> int:
        """A context with these ``circuits_context_options`` flags (the optional hook points)."""
        opts = N.ContextOptions()
        lib.circuits_context_options_init(ctypes.byref(opts))
        opts.use_attn_result = int(bool(use_attn_result))
        for k, v in flags.items():
            setattr(opts, k, int(bool(v)))
        out = ctypes.c_void_p()
        N.check(lib.circuits_context_create(ctypes.byref(out), self.ptr, ctypes.byref(opts)), "creating a context")
        self.contexts.add(out.value)
        return out.value  # type: ignore[return-value]

    @property
    def _as_parameter_(self) -> ctypes.c_void_p:
        # ctypes passes the handle itself as the model pointer: the argument tuple keeps the
        # handle, hence the C model, alive for the whole call (a ptr int taken out would not)
        return ctypes.c_void_p(self.ptr)

    def free_context(self, ctx: Optional[int]) -> None:
        if ctx in self.contexts:
            self.contexts.discard(ctx)
            lib.circuits_context_free(ctx)

    def close(self) -> None:
        for c in list(self.contexts):
            self.free_context(c)
        p, self.ptr = self.ptr, None
        if p:
            lib.circuits_model_free(p)

    def __del__(self) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class _Run(NamedTuple):
    """One run as ``Model._prepare`` checked it: the C options, the arrays they point into
    (kept alive with them), the tokens and mask, and where the output goes."""

    opts: Any
    keep: List[Any]
    tok: Optional[np.ndarray]
    mask: Optional[np.ndarray]
    B: int
    T: int
    out: Optional[np.ndarray]
    plain: bool


class Model:
    """A transformer loaded by libcircuits, with TransformerLens's ``HookedTransformer`` API:
    ``model(tokens)``, ``run_with_hooks``, ``run_with_cache``, ``hooks()``, ``add_hook``,
    ``reset_hooks``, stacked weights (``W_Q``, ...), ``OV``/``QK`` factored circuits, composition
    and copying scores, induction scores.

    Create one with :meth:`from_pretrained` (or :meth:`from_pretrained_no_processing`). Tokens
    are NumPy integer arrays ``[batch, pos]`` (a 1-D array is batch 1). All activations and
    weights are float32 NumPy arrays with TransformerLens shapes.

    A model may be used from several threads (calls are serialised by a lock); use one model
    per thread for parallel runs. ``close()`` (or ``with``) releases it; using it afterwards
    raises :class:`ClosedError`.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("create a Model with Model.from_pretrained(path)")

    @property
    def cfg(self) -> Config:
        """The model's hyper-parameters (a frozen :class:`Config`; read-only: the binding sizes
        every buffer from the numbers libcircuits reported at load, never from this object)."""
        return self._cfg

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: Union[str, "os.PathLike[str]"],
        fold_ln: bool = True,
        center_writing_weights: bool = True,
        center_unembed: bool = True,
        fold_value_biases: bool = True,
        refactor_factored_attn_matrices: bool = False,
        *,
        mmap: bool = True,
        keep_stored_dtype: bool = False,
        use_attn_result: bool = False,
        device: Optional[str] = None,
        dtype: Any = None,
        default_padding_side: Optional[str] = None,
    ) -> "Model":
        """Loads the model in directory ``path`` (Hugging Face: ``config.json`` + safetensors; or
        TransformerLens layout: ``tl_config.json`` + ``model.safetensors``), or the GGUF file
        ``path`` (llama.cpp's format: config, weights and tokenizer from the one file;
        docs/loading.md), and processes the weights as TransformerLens's ``from_pretrained``
        does with the same flags.

        mmap: True (the default) maps the weight files: no copy, but truncating or rewriting a file in
        place while the model is alive kills the process with SIGBUS at its next run (docs/loading.md).
        False reads them into memory (``read_into_memory``): costs their size in memory, and the
        model is immune to the files changing.
        keep_stored_dtype: keep the weight matrices in their stored dtype (F16, BF16, GGUF's
        quantized types; docs/loading.md#keep_stored_dtype): the model takes about the file's
        memory, activations stay float32. The weights are then read as float32 copies (``W_Q``,
        ``state_dict()``, ... dequantize), and a processing step that would rewrite a kept matrix
        is refused: load with ``from_pretrained_no_processing`` (or those flags False).
        use_attn_result: compute ``blocks.{l}.attn.hook_result`` (see :meth:`set_use_attn_result`).
        device/dtype: only ``"cpu"`` / float32 exist; anything else is refused.
        default_padding_side: 'left' or 'right' (``model.tokenizer.padding_side``; default 'right').
        """
        _check_device(device)
        _pad.check_side(default_padding_side)
        if dtype is not None and np.dtype(str(dtype).replace("torch.", "")) != np.float32:
            raise ValueError(f"libcircuits computes in float32 only (dtype={dtype!r})")
        p = os.fspath(path)
        opts = N.LoadOptions()
        lib.circuits_load_options_init(ctypes.byref(opts))
        opts.fold_ln = int(bool(fold_ln))
        opts.center_writing_weights = int(bool(center_writing_weights))
        opts.center_unembed = int(bool(center_unembed))
        opts.fold_value_biases = int(bool(fold_value_biases))
        opts.refactor_factored_attn_matrices = int(bool(refactor_factored_attn_matrices))
        opts.read_into_memory = int(not mmap)
        opts.keep_stored_dtype = int(bool(keep_stored_dtype))
        if mmap and not keep_stored_dtype:
            # the default needs no field past 0.2.0's struct: pass that size, which a 0.2.0
            # libcircuits.so.0 accepts too
            opts.size = N.LoadOptions.read_into_memory.offset
        out = ctypes.c_void_p()
        N.check(lib.circuits_model_load(ctypes.byref(out), N.cstr(p), ctypes.byref(opts)))
        self = cls.__new__(cls)
        self._setup(_ModelHandle(out.value), p, use_attn_result)  # type: ignore[arg-type]
        if self._tokenizer is not None:  # TL: the argument, else the tokenizer's own, else 'right'
            side = default_padding_side or _tokenizer_padding_side(p)
            if side is not None:
                self._tokenizer.padding_side = side
        return self

    @classmethod
    def from_pretrained_no_processing(cls, path: Union[str, "os.PathLike[str]"], **kwargs: Any) -> "Model":
        """The weights exactly as stored (TransformerLens's ``from_pretrained_no_processing``)."""
        return cls.from_pretrained(path, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                   fold_value_biases=False, refactor_factored_attn_matrices=False, **kwargs)

    def _setup(self, handle: _ModelHandle, path: str, use_attn_result: bool) -> None:
        self._handle: Optional[_ModelHandle] = handle
        self._ctx: Optional[int] = None
        self._lock = threading.RLock()
        self._running = 0
        self._regs: List[_Registration] = []
        self._state = _RunState()
        self._stacked: Dict[str, np.ndarray] = {}
        c = N.ConfigStruct()
        c.size = ctypes.sizeof(c)
        N.check(lib.circuits_model_config(handle.ptr, ctypes.byref(c)))
        # Every buffer handed to C is sized from these: the numbers the library reported, in an
        # immutable tuple no public attribute reaches (``cfg`` is informational and read-only).
        self._dims = _Dims(n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_head=c.d_head,
                           d_mlp=c.d_mlp, d_vocab=c.d_vocab, d_vocab_out=c.d_vocab_out, n_ctx=c.n_ctx,
                           attn_only=bool(c.attn_only), n_key_value_heads=c.n_key_value_heads)
        rotary = c.positional_embedding_type == N.CIRCUITS_POS_ROTARY
        llama3 = c.rope_scaling == N.CIRCUITS_ROPE_LLAMA3
        self._cfg = Config(
            n_layers=c.n_layers,
            d_model=c.d_model,
            n_heads=c.n_heads,
            d_head=c.d_head,
            d_mlp=None if c.attn_only else c.d_mlp,
            d_vocab=c.d_vocab,
            d_vocab_out=c.d_vocab_out,
            n_ctx=c.n_ctx,
            act_fn=ACT_FN_NAMES.get(c.act_fn, str(c.act_fn)),
            normalization_type=NORM_NAMES.get(c.normalization_type),
            positional_embedding_type=POS_NAMES.get(c.positional_embedding_type, str(c.positional_embedding_type)),
            attn_only=bool(c.attn_only),
            eps=_f32_repr(c.eps),
            attn_scale=_f32_repr(c.attn_scale),
            use_attn_scale=c.attn_scale != 1.0,
            scale_attn_by_inverse_layer_idx=bool(c.scale_attn_by_inverse_layer_idx),
            use_attn_result=bool(use_attn_result),
            model_name=os.path.basename(os.path.normpath(path)),
            format=FORMAT_NAMES.get(c.format, str(c.format)),
            processing={k: bool(c.processing & bit) for k, bit in PROCESSING_BITS.items()},
            n_key_value_heads=c.n_key_value_heads if c.n_key_value_heads != c.n_heads else None,
            rotary_dim=c.rotary_dim if rotary else None,
            rotary_base=_f32_repr(c.rotary_base) if rotary else 10000.0,
            rotary_adjacent_pairs=bool(c.rotary_adjacent_pairs),
            use_NTK_by_parts_rope=llama3,
            NTK_by_parts_factor=_f32_repr(c.rope_factor) if llama3 else 8.0,
            NTK_by_parts_low_freq_factor=_f32_repr(c.rope_low_freq_factor) if llama3 else 1.0,
            NTK_by_parts_high_freq_factor=_f32_repr(c.rope_high_freq_factor) if llama3 else 4.0,
            NTK_original_ctx_len=c.rope_original_n_ctx if llama3 else 8192,
            rotary_scaling_factor=_f32_repr(c.rope_factor) if c.rope_scaling == N.CIRCUITS_ROPE_LINEAR else 1.0,
            gated_mlp=bool(c.gated_mlp),
            parallel_attn_mlp=bool(c.parallel_attn_mlp),
            final_rms=bool(c.final_rms),
            use_normalization_before_and_after=bool(c.norm_before_and_after),
            attn_scores_soft_cap=_f32_repr(c.attn_scores_soft_cap) if c.attn_scores_soft_cap > 0 else -1.0,
            output_logits_soft_cap=_f32_repr(c.output_logits_soft_cap) if c.output_logits_soft_cap > 0 else -1.0,
            use_local_attn=c.local_attn != N.CIRCUITS_LOCAL_ATTN_NONE,
            window_size=c.window_size if c.local_attn != N.CIRCUITS_LOCAL_ATTN_NONE else None,
            attn_types=_attn_types(c.local_attn, c.n_layers),
        )
        self._ctx = handle.new_context(use_attn_result)
        self._build_points()
        self._tokenizer: Optional[Tokenizer] = None
        if N.has("circuits_model_tokenizer"):
            tp = lib.circuits_model_tokenizer(handle.ptr)
            if tp:  # borrowed from the model: the wrapper keeps the model's memory alive
                self._tokenizer = Tokenizer._wrap(tp, handle).with_bos()  # encode() prepends BOS, as TL's

    def _build_points(self) -> None:
        ctx = self._ctx
        n = lib.circuits_context_hook_point_count(ctx)
        t = N.Tensor()
        pts: List[HookPoint] = []
        by_addr: Dict[int, HookPoint] = {}
        for i in range(n):
            N.check(lib.circuits_context_hook_point(ctx, i, 1, 1, ctypes.byref(t)))
            hp = HookPoint(N.decode(t.name), t.layer, t.head_axis, self)
            by_addr[t.name] = hp
            pts.append(hp)
        self._state.points = by_addr
        self._points = pts
        self.hook_dict: Dict[str, HookPoint] = {hp.name: hp for hp in pts}

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return getattr(self, "_handle", None) is None

    def close(self) -> None:
        """Releases the model: its context and hooks now, its weights as soon as no weight array
        returned by this model is alive any more. Using the model afterwards raises ClosedError.
        Idempotent; not allowed from inside one of the model's own hooks."""
        h = getattr(self, "_handle", None)
        if h is None:
            return
        with self._lock:
            if self._running:
                raise InvalidArgumentError("Model.close() called from inside a hook of the same model")
            for reg in self._regs:
                _REGISTRY.pop(reg.key, None)
                reg.ids = []
            self._regs = []
            h.free_context(self._ctx)
            self._ctx = None
            self._stacked = {}
            self._handle = None

    def __del__(self) -> None:
        try:
            if getattr(self, "_running", 0) == 0:
                self.close()
        except Exception:
            pass

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._dims.n_layers} layers, d_model {self._dims.d_model}"
        return f"<circuits.Model {self.cfg.model_name!r}: {state}>"

    def _mptr(self) -> int:
        h = self._handle
        if h is None:
            raise ClosedError("this model is closed")
        return h.ptr  # type: ignore[return-value]

    def _live(self) -> _ModelHandle:
        """The model's handle, for C calls on the model made outside the lock: the caller's
        local reference keeps the C model alive until it returns, even if another thread
        closes this Model meanwhile (close() only drops the Model's own reference; a bare
        ``_mptr()`` int would not keep it, and the model would be freed under the call)."""
        h = self._handle
        if h is None:
            raise ClosedError("this model is closed")
        return h

    def _check_open(self) -> None:
        if self._handle is None:
            raise ClosedError("this model is closed")

    # -- running ----------------------------------------------------------------------------

    def _call(self, fn: Callable[..., int], *args: Any, multi_run: bool = False) -> None:
        """Calls a C function that may run the model (and its hooks) under the model's lock,
        then re-raises a hook's exception as itself, or raises the status's typed error.
        ``multi_run``: ``fn`` runs several passes with no callback between them where the run
        memory could be taken (hooks then get copies: see _RunState.copy_acts)."""
        with self._lock:
            self._check_open()
            st = self._state
            st.pending = None
            ctx = self._ctx
            prev, st.lease = st.lease, _Lease()
            prev_copy, st.copy_acts = st.copy_acts, bool(multi_run)
            self._running += 1
            try:
                rc = fn(ctx, *args)
            finally:
                self._running -= 1
                st.copy_acts = prev_copy
                lease, st.lease = st.lease, prev
                if lease.kept():  # an array of this run outlived its hook call
                    try:
                        _take_run_memory(ctx, lease)
                    except BaseException:
                        self._abandon_context(ctx)
                        raise
                lease = None
            exc = st.pending
            if exc is not None:
                st.pending = None
                add_note = getattr(exc, "add_note", None)
                if add_note is not None:
                    add_note(f"(raised in a hook at '{st.pending_point}'; libcircuits: {N.last_error()})")
                try:
                    raise exc
                finally:
                    exc = None
            N.check(rc)

    def _abandon_context(self, ctx: int) -> None:
        """The run memory of ``ctx`` could not be handed over (out of memory for its handle)
        while arrays still view it: the context is never run again nor freed (a deliberate
        leak, so that those arrays stay valid), and the model continues on a fresh context with
        its hooks re-registered (or is closed if that fails too)."""
        h = self._handle
        if h is None or ctx != self._ctx:
            return
        h.contexts.discard(ctx)  # _ModelHandle will not free it
        self._ctx = None
        try:
            self._ctx = h.new_context(self._cfg.use_attn_result, **self._hook_flags())
            self._build_points()
            self._rebuild_hooks()
        except BaseException:
            if self._ctx is not None:
                h.free_context(self._ctx)
            self._ctx = None
            self._handle = None  # closed: later calls raise ClosedError

    def _tokens(self, tokens: Any) -> np.ndarray:
        if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
            tokens = self.to_tokens(tokens)  # TransformerLens: text is tokenized with prepend_bos
        a = np.asarray(tokens)
        if a.dtype.kind not in "iu":
            raise TypeError(f"tokens must be an integer array of token ids, got dtype {a.dtype}")
        if a.ndim == 1:
            a = a[None, :]
        elif a.ndim != 2:
            raise ShapeError(f"tokens must be [batch, pos] (or 1-D [pos]); got shape {list(a.shape)}")
        if a.size and (a.min() < 0 or a.max() >= self._dims.d_vocab):
            bad = np.argwhere((a < 0) | (a >= self._dims.d_vocab))[0]
            raise RangeError(f"token id {a[tuple(bad)]} at {list(bad)} is outside the vocabulary [0, {self._dims.d_vocab})")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _outputs(self, B: int, T: int, return_type: Optional[str], loss_per_token: bool):
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, not {return_type!r}")
        logits = np.empty((B, T, self._dims.d_vocab_out), np.float32) if return_type in ("logits", "both") else None
        want_loss = return_type in ("loss", "both")
        loss = np.empty(1, np.float32) if want_loss and not loss_per_token else None
        ptl = np.empty((B, max(T - 1, 0)), np.float32) if want_loss and loss_per_token else None
        return logits, loss, ptl

    @staticmethod
    def _result(return_type: Optional[str], logits, loss, ptl):
        lv = ptl if ptl is not None else (np.float32(loss[0]) if loss is not None else None)
        if return_type == "logits":
            return logits
        if return_type == "loss":
            return lv
        if return_type == "both":
            return Output(logits, lv)
        return None

    def _padding_side(self, padding_side: Optional[str]) -> str:
        """TransformerLens's effective padding side: the argument, else the tokenizer's
        (``model.tokenizer.padding_side``, 'right' unless set; ``default_padding_side``)."""
        _pad.check_side(padding_side)
        if padding_side is not None:
            return padding_side
        return getattr(self._tokenizer, "padding_side", "right") if self._tokenizer is not None else "right"

    def _input_tokens(self, input: Any, prepend_bos: Optional[bool], padding_side: Optional[str],
                      attention_mask: Any) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """TransformerLens's ``input_to_embed`` up to the embedding: text is tokenized (a list
        padded on the padding side), and a mask exists when one is passed or the padding side is
        'left' (then built from the pad tokens as ``utils.get_attention_mask``)."""
        side = self._padding_side(padding_side)
        if isinstance(input, str) or (isinstance(input, (list, tuple)) and input and isinstance(input[0], str)):
            input = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=side)
        tok = self._tokens(input)
        if attention_mask is not None:
            return tok, _pad.as_mask(attention_mask, tok.shape)
        if side != "left":
            return tok, None
        if self._tokenizer is None:
            raise ValueError("Cannot compute attention mask without a tokenizer: pass attention_mask")
        t = self._tokenizer
        bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        return tok, _pad.get_attention_mask(tok, self._pad_id(), t.bos_token_id, bool(bos), "left")

    def _loss(self, logits: np.ndarray, tok: np.ndarray, mask: Optional[np.ndarray], loss_per_token: bool) -> Any:
        """TransformerLens's ``loss_fn`` (``lm_cross_entropy_loss`` with the mask) in the library."""
        from .utils import _cross_entropy

        return _cross_entropy(logits, tok, mask, loss_per_token)

    def forward(self, input: Any = None, return_type: Optional[str] = "logits", loss_per_token: bool = False,
                prepend_bos: Optional[bool] = None, padding_side: Optional[str] = None,
                start_at_layer: Optional[int] = None, tokens: Any = None, shortformer_pos_embed: Any = None,
                attention_mask: Any = None, stop_at_layer: Optional[int] = None, past_kv_cache: Any = None, *,
                residual: Any = None, logit_positions: Any = None) -> Any:
        """TransformerLens's ``HookedTransformer.forward``: runs ``input`` — token ids [batch,
        pos] (1-D: batch 1), a string, or a list of strings (tokenized and padded, see
        :meth:`to_tokens`) — firing the registered hooks.

        return_type: ``"logits"`` → [batch, pos, d_vocab_out]; ``"loss"`` → the mean
        next-token loss (np.float32), or [batch, pos - 1] with ``loss_per_token=True``;
        ``"both"`` → ``Output(logits, loss)``; ``None`` → None (run for the hooks' effects).

        Padding (docs/python.md "Padding and attention masks"): ``attention_mask`` [batch, pos]
        of 1 (real) / 0 (padding); without one, a mask is built from the pad tokens when the
        padding side is 'left' (``padding_side``, else ``model.tokenizer.padding_side``), as
        TransformerLens does. The loss skips padding.

        Partial runs, as TransformerLens: ``stop_at_layer=k`` (negative from the end, exclusive)
        returns the residual stream before block k [batch, pos, d_model]; ``start_at_layer=k``
        (inclusive) starts at block k from the residual stream [batch, pos, d_model] given as
        ``input`` (or ``residual=``; then ``input``, else ``tokens=``, are the tokens a loss
        needs). ``logit_positions`` (ints, negative from the end) returns the logits at those
        positions only, [batch, len(logit_positions), d_vocab_out]."""
        run = self._prepare(input, return_type, loss_per_token, prepend_bos, padding_side, start_at_layer, tokens,
                            shortformer_pos_embed, attention_mask, stop_at_layer, past_kv_cache, residual,
                            logit_positions)
        return self._forward(run, return_type, loss_per_token)

    @staticmethod
    def _bind(input: Any = None, return_type: Optional[str] = "logits", loss_per_token: bool = False,
              prepend_bos: Optional[bool] = None, padding_side: Optional[str] = None,
              start_at_layer: Optional[int] = None, tokens: Any = None, shortformer_pos_embed: Any = None,
              attention_mask: Any = None, stop_at_layer: Optional[int] = None, past_kv_cache: Any = None, *,
              residual: Any = None, logit_positions: Any = None) -> Dict[str, Any]:
        """``forward``'s arguments by name (run_with_cache / run_with_hooks pass theirs on)."""
        return dict(locals())

    def _forward(self, run: "_Run", return_type: Optional[str], loss_per_token: bool) -> Any:
        if run.plain:  # the plain forward, as before 0.5.0 (and bit for bit the same)
            logits, loss, ptl = self._outputs(run.B, run.T, return_type, loss_per_token)
            self._call(lib.circuits_context_forward, run.tok, run.B, run.T, logits, loss, ptl)
            return self._result(return_type, logits, loss, ptl)
        self._call(lib.circuits_context_run, ctypes.byref(run.opts), run.tok, run.B, run.T, run.out)
        return self._finish(run, return_type, loss_per_token)

    def _finish(self, run: "_Run", return_type: Optional[str], loss_per_token: bool) -> Any:
        if return_type not in ("loss", "both"):
            return None if return_type is None else run.out
        lv = self._loss(run.out, run.tok, run.mask, loss_per_token)
        return lv if return_type == "loss" else Output(run.out, lv)

    def _prepare(self, input: Any, return_type: Optional[str], loss_per_token: bool, prepend_bos: Optional[bool],
                 padding_side: Optional[str], start_at_layer: Optional[int], tokens: Any, shortformer_pos_embed: Any,
                 attention_mask: Any, stop_at_layer: Optional[int], past_kv_cache: Any, residual: Any,
                 logit_positions: Any) -> "_Run":
        """The run ``forward``'s arguments describe, checked: its options and their arrays."""
        if past_kv_cache is not None:
            raise NotImplementedError("past_kv_cache: use model.generate (the C KV cache) for cached runs")
        if shortformer_pos_embed is not None:
            raise ValueError("shortformer_pos_embed is not needed: libcircuits adds W_pos to a shortformer model's "
                             "query and key inputs itself (docs/differences.md)")
        if return_type not in ("logits", "loss", "both", None):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, not {return_type!r}")
        want_loss = return_type in ("loss", "both")
        keep: List[Any] = []  # arrays whose addresses the options hold
        opts = N.RunOptions()
        lib.circuits_run_options_init(ctypes.byref(opts))
        if start_at_layer is not None:
            if residual is None:
                residual, tok_in = input, tokens
            else:
                tok_in = input if input is not None else tokens
            if residual is None:
                raise ValueError("start_at_layer needs the residual stream [batch, pos, d_model] as input")
            res = np.ascontiguousarray(residual, dtype=np.float32)
            if res.ndim == 2:
                res = res[None]
            if res.ndim != 3 or res.shape[2] != self._dims.d_model:
                raise ShapeError(f"residual must be [batch, pos, d_model={self._dims.d_model}], not {list(res.shape)}")
            opts.start_at_layer = N.check_int(start_at_layer, ctypes.c_int32, "start_at_layer")
            opts.input = res.ctypes.data
            keep.append(res)
            B, T = res.shape[0], res.shape[1]
            tok = None if tok_in is None else self._tokens(tok_in)
            if tok is not None and tok.shape != (B, T):
                raise ShapeError(f"tokens {list(tok.shape)} and residual {list(res.shape)} disagree")
            mask = None if attention_mask is None else _pad.as_mask(attention_mask, (B, T), "residual")
            if want_loss and tok is None:
                raise ValueError("a loss from start_at_layer needs the tokens: pass tokens=")
        else:
            if residual is not None:
                raise ValueError("residual is the input of start_at_layer; pass start_at_layer too")
            tok, mask = self._input_tokens(input if input is not None else tokens, prepend_bos, padding_side,
                                           attention_mask)
            B, T = tok.shape
        if mask is not None:
            opts.attention_mask = mask.ctypes.data
            keep.append(mask)
        if stop_at_layer is not None:
            if want_loss:
                raise ValueError("stop_at_layer returns the residual stream: no loss (use return_type='logits' or None)")
            opts.stop_at_layer = N.check_int(stop_at_layer, ctypes.c_int32, "stop_at_layer")
            out = np.empty((B, T, self._dims.d_model), np.float32)
        if logit_positions is not None:
            if want_loss:
                raise ValueError("logit_positions gives no loss (it needs the logits at every position)")
            lp = np.atleast_1d(np.asarray(logit_positions))
            if lp.ndim != 1 or lp.size == 0 or lp.dtype.kind not in "iu":
                raise ValueError("logit_positions must be a non-empty sequence of ints")
            if lp.dtype.kind == "u" and int(lp.max()) >= 2**63:  # would wrap to a negative position
                raise RangeError(f"logit position {int(lp.max())} does not fit in int64")
            lp = np.ascontiguousarray(lp, dtype=np.int64)
            opts.logit_positions = lp.ctypes.data
            opts.n_logit_positions = lp.size
            keep.append(lp)
        if stop_at_layer is None:
            n = len(keep[-1]) if logit_positions is not None else T
            out = np.empty((B, n, self._dims.d_vocab_out), np.float32)
        plain = start_at_layer is None and stop_at_layer is None and logit_positions is None and mask is None
        return _Run(opts, keep, tok, mask, B, T, None if return_type is None and not want_loss else out, plain)

    __call__ = forward

    def loss_fn(self, logits: Any, tokens: Any, attention_mask: Any = None, per_token: bool = False) -> Any:
        """TransformerLens's ``loss_fn``: :func:`circuits.utils.lm_cross_entropy_loss` of
        ``logits`` [batch, pos, d_vocab] against ``tokens`` [batch, pos]: the mean next-token
        loss, or [batch, pos - 1] with ``per_token=True``; ``attention_mask`` skips padding."""
        from .utils import lm_cross_entropy_loss

        return lm_cross_entropy_loss(logits, tokens, attention_mask, per_token)

    # -- hooks ------------------------------------------------------------------------------

    def hook_points(self) -> List[HookPoint]:
        """Every hook point of this model in firing order (``circuits_context_hook_point``)."""
        self._check_open()
        return list(self._points)

    def hook_names(self) -> List[str]:
        return [p.name for p in self.hook_points()]

    def _select(self, target: NameOrPredicate) -> List[str]:
        if isinstance(target, str):
            return [target]  # exact, short name or pattern: resolved by libcircuits
        if isinstance(target, HookPoint):  # model.blocks[0].attn.hook_pattern (circuits.modules)
            return [target.name]
        if callable(target):
            return [p.name for p in self._points if target(p.name)]
        raise TypeError(f"a hook target is a hook name, short name, pattern or a predicate name -> bool, "
                        f"not {type(target).__name__}")

    def _refuse_running(self, what: str) -> None:
        if self._running:
            raise InvalidArgumentError(f"{what} from inside a hook of the same model")

    def _c_add(self, reg: _Registration) -> None:
        if isinstance(reg, _OwnedRegistration):  # steering: the library holds its data
            reg.ids = reg.c_add(self._ctx)
            return
        _REGISTRY[reg.key] = reg
        ids: List[int] = []
        if hasattr(reg, "c_add"):  # a registration the library makes (circuits.probe's monitors)
            try:
                reg.ids = reg.c_add(self._ctx)  # type: ignore[attr-defined]
            except BaseException:
                _REGISTRY.pop(reg.key, None)
                raise
            return
        add = lib.circuits_context_add_backward_hook if reg.bwd else lib.circuits_context_add_hook
        try:
            for name in reg.names:
                out = ctypes.c_int64()
                N.check(add(self._ctx, N.cstr(name), _TRAMPOLINE, reg.key, ctypes.byref(out)))
                ids.append(out.value)
        except BaseException:
            for i in ids:
                lib.circuits_context_remove_hook(self._ctx, i)
            _REGISTRY.pop(reg.key, None)
            raise
        reg.ids = ids

    def _c_remove(self, reg: _Registration) -> None:
        for i in reg.ids:
            lib.circuits_context_remove_hook(self._ctx, i)
        reg.ids = []
        _REGISTRY.pop(reg.key, None)

    def _register(self, target: NameOrPredicate, fn: HookFn, permanent: bool = False,
                  prepend: bool = False, dir: str = "fwd") -> _Registration:
        if dir not in ("fwd", "bwd"):
            raise ValueError(f"Invalid direction {dir!r}: a hook's dir is 'fwd' or 'bwd'")
        if not callable(fn):
            raise TypeError(f"a hook function is fn(activation, hook), not {type(fn).__name__}")
        if dir == "bwd":
            N.require("circuits_context_add_backward_hook", "a backward hook (dir='bwd')")
        with self._lock:
            self._check_open()
            self._refuse_running("adding a hook")
            reg = _Registration(next(_KEYS), fn, self._select(target), permanent, self._state, dir == "bwd")
            if prepend:
                self._regs.insert(0, reg)
                try:
                    self._rebuild_hooks()
                except BaseException:
                    self._regs.remove(reg)
                    self._rebuild_hooks()
                    raise
            else:
                self._c_add(reg)
                self._regs.append(reg)
            return reg

    def _unregister(self, reg: _Registration) -> None:
        with self._lock:
            if self._handle is None or reg not in self._regs:
                return
            self._refuse_running("removing a hook")
            self._c_remove(reg)
            self._regs.remove(reg)

    def _rebuild_hooks(self) -> None:
        """Re-registers every hook in ``self._regs`` order (after prepend or a new context)."""
        lib.circuits_context_clear_hooks(self._ctx)
        for reg in self._regs:
            reg.ids = []
        for reg in self._regs:
            self._c_add(reg)

    def add_hook(self, name: NameOrPredicate, hook: HookFn, dir: str = "fwd", is_permanent: bool = False,
                 level: Optional[int] = None, prepend: bool = False) -> HookHandle:
        """Registers ``hook(activation, hook_point)`` at every hook point ``name`` selects: an
        exact name (``"blocks.1.attn.hook_pattern"``), a TransformerLens short name
        (``"pattern1"``), a ``*`` pattern, or a predicate ``name -> bool`` applied to every hook
        point. A string that selects nothing raises NotFoundError; a predicate that selects
        nothing adds nothing (as in TransformerLens). ``prepend=True`` runs it before the hooks
        already registered at the same points. Stays until :meth:`reset_hooks` (or, with
        ``is_permanent=True``, ``reset_hooks(including_permanent=True)``).

        ``dir="bwd"``: a backward hook (TransformerLens's), called in the backward pass of every
        gradient run (:meth:`backward`, ``run_with_hooks(bwd_hooks=..., metric=...)``,
        ``run_with_cache(incl_bwd=True)``, circuits.attribution) with ``(grad, hook)``: grad is
        d metric / d the activation at that point, with the activation's shape. Edit it in place
        or return a replacement: the edited gradient flows on to earlier points. grad is a
        zero-copy view of the library's gradient buffer, protected as a forward hook's activation
        is (copy what you keep; docs/gradients.md "Python"). Forward-only runs never call it."""
        return HookHandle(self, self._register(name, hook, is_permanent, prepend, dir))

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False,
                    level: Optional[int] = None) -> None:
        """Removes every hook added by :meth:`add_hook` (permanent ones too with
        ``including_permanent=True``) of ``direction`` ("fwd", "bwd" or "both") and, with
        ``clear_contexts``, empties every ``hook.ctx``."""
        if direction not in ("fwd", "bwd", "both"):
            raise ValueError(f"Invalid direction {direction!r}: 'fwd', 'bwd' or 'both'")
        with self._lock:
            self._check_open()
            self._refuse_running("reset_hooks")
            keep = []
            for reg in self._regs:
                if (reg.permanent and not including_permanent) or direction == ("fwd" if reg.bwd else "bwd"):
                    keep.append(reg)
                else:
                    self._c_remove(reg)
            self._regs = keep
            if clear_contexts:
                for p in self._points:
                    p.ctx.clear()

    def add_perma_hook(self, name: NameOrPredicate, hook: HookFn, dir: str = "fwd") -> "HookHandle":
        """TransformerLens's ``add_perma_hook``: :meth:`add_hook` with ``is_permanent=True``."""
        return self.add_hook(name, hook, dir=dir, is_permanent=True)

    def remove_all_hook_fns(self, direction: str = "both", including_permanent: bool = False,
                            level: Optional[int] = None) -> None:
        """TransformerLens's ``remove_all_hook_fns``: :meth:`reset_hooks` without clearing contexts."""
        self.reset_hooks(False, direction, including_permanent, level)

    def clear_contexts(self) -> None:
        """TransformerLens's ``clear_contexts``: empties every hook point's ``ctx``."""
        self._check_open()
        for p in self._points:
            p.ctx.clear()

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[Tuple[NameOrPredicate, HookFn]] = (), bwd_hooks: Sequence[Any] = (),
              reset_hooks_end: bool = True, clear_contexts: bool = False) -> Iterator["Model"]:
        """Context manager: ``with model.hooks(fwd_hooks=[(name_or_predicate, fn), ...],
        bwd_hooks=[...]):`` — the hooks are active inside the block and removed at its end. Like
        every registered hook they apply to all runs of this model meanwhile, from any thread (use
        :meth:`run_with_hooks` for hooks that only one run sees). Backward hooks fire in the
        gradient runs made inside the block (:meth:`backward`, ...)."""
        added: List[_Registration] = []
        try:
            for target, fn in fwd_hooks:
                added.append(self._register(target, fn))
            for target, fn in bwd_hooks:
                added.append(self._register(target, fn, dir="bwd"))
            yield self
        finally:
            if reset_hooks_end:
                for reg in added:
                    self._unregister(reg)
            if clear_contexts:
                for p in self._points:
                    p.ctx.clear()

    def run_with_hooks(self, *model_args: Any, fwd_hooks: Sequence[Tuple[NameOrPredicate, HookFn]] = (),
                       bwd_hooks: Sequence[Tuple[NameOrPredicate, HookFn]] = (), reset_hooks_end: bool = True,
                       clear_contexts: bool = False, metric: Any = None, edit_grad: str = "replace",
                       **model_kwargs: Any) -> Any:
        """``model(*model_args, **model_kwargs)`` (every argument of :meth:`forward`: return_type,
        attention_mask, padding_side, stop_at_layer, ...) with ``fwd_hooks`` active for this
        run only.

        Each hook is ``fn(activation, hook)``: ``activation`` is a float32 NumPy array that is a
        zero-copy view of the live activation (copy what you keep: a kept array stays valid but
        reads what the run last wrote into its buffer, see docs/python.md "Memory safety");
        edit it in place, or return a float32 array of the same shape to replace it. An
        exception raised in a hook stops the run and is re-raised here as itself.

        ``bwd_hooks`` (or a ``metric``) make it a gradient run: the forward, then the backward
        pass from ``metric`` (as :meth:`backward` takes it; default with return_type="loss": the
        mean loss, what TransformerLens's ``loss.backward()`` differentiates), firing the backward
        hooks ``fn(grad, hook)`` (see :meth:`add_hook`). It returns the forward's output as
        usual. ``edit_grad``: how forward hooks' edits pass the gradient ("replace": edited
        elements are constants; "through": identity). Unlike TransformerLens there is no separate
        ``.backward()`` call, so ``reset_hooks_end=True`` does not lose the backward hooks."""
        a = self._bind(*model_args, **model_kwargs)
        if bwd_hooks or metric is not None:
            from . import grad as G

            m = G.default_metric(metric, a["return_type"], a["loss_per_token"])
            with self._lock:
                with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
                    return G.run_grad(self, a, m, names=None, cache=False, edit_grad=edit_grad)[0]
        run = self._prepare(**a)
        with self._lock:  # atomic: another thread's run never sees these temporary hooks
            with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
                return self._forward(run, a["return_type"], a["loss_per_token"])

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Turns ``blocks.{l}.attn.hook_result`` (per-head outputs, [batch, pos, n_heads,
        d_model]) on or off (a new C context; registered hooks are carried over)."""
        self._set_context_flag("use_attn_result", use_attn_result)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Turns ``blocks.{l}.hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` on or off:
        each head's own copy of ``resid_pre`` ([batch, pos, n_heads, d_model]; the key and
        value inputs have ``n_key_value_heads`` heads under grouped-query attention), ln1 then
        applied per head, as TransformerLens. Registered hooks are carried over."""
        self._set_context_flag("use_split_qkv_input", use_split_qkv_input)

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Turns ``blocks.{l}.hook_attn_in`` ([batch, pos, n_heads, d_model]) on or off. Refused
        under grouped-query attention (UnsupportedError), as TransformerLens refuses it."""
        self._set_context_flag("use_attn_in", use_attn_in)

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Turns ``blocks.{l}.hook_mlp_in`` (the MLP's input before ln2, [batch, pos, d_model])
        on or off. Refused on attention-only models, as TransformerLens refuses it."""
        self._set_context_flag("use_hook_mlp_in", use_hook_mlp_in)

    def set_use_hook_tokens(self, use_hook_tokens: bool) -> None:
        """Turns ``hook_tokens`` on or off (TransformerLens sets ``cfg.use_hook_tokens`` when
        the model is built; here it can change at any time). Its activation is the int32 token
        ids [batch, pos]: a hook may edit them in place or return an integer array; the edited
        ids feed the embedding and the loss."""
        self._set_context_flag("use_hook_tokens", use_hook_tokens)

    _HOOK_FLAGS = ("use_split_qkv_input", "use_attn_in", "use_hook_mlp_in", "use_hook_tokens")

    def _hook_flags(self, **override: bool) -> Dict[str, bool]:
        flags = {k: getattr(self._cfg, k) for k in self._HOOK_FLAGS}
        flags.update(override)
        return flags

    def _set_context_flag(self, flag: str, value: bool) -> None:
        """Moves the model to a new C context with one option changed (registered hooks are
        carried over; any failure leaves the model as it was)."""
        value = bool(value)
        with self._lock:
            self._check_open()
            self._refuse_running("set_" + flag)
            if value == getattr(self.cfg, flag):
                return
            h = self._handle
            assert h is not None
            old_ctx, old_points, old_state_points = self._ctx, self._points, self._state.points
            old_hook_dict = self.hook_dict
            if flag == "use_attn_result":
                new_ctx = h.new_context(value, **self._hook_flags())
            else:
                new_ctx = h.new_context(self._cfg.use_attn_result, **self._hook_flags(**{flag: value}))
            self._ctx = new_ctx
            try:
                self._build_points()
                self._rebuild_hooks()
            except BaseException:
                h.free_context(self._ctx)
                self._ctx, self._points, self._state.points = old_ctx, old_points, old_state_points
                self.hook_dict = old_hook_dict
                for reg in self._regs:
                    reg.ids = []
                self._rebuild_hooks()
                raise
            h.free_context(old_ctx)
            self._cfg = replace(self._cfg, **{flag: value})

    # -- caching ----------------------------------------------------------------------------

    def run_with_cache(self, *model_args: Any, names_filter: NamesFilter = None, remove_batch_dim: bool = False,
                       device: Optional[str] = None, return_cache_object: bool = True, incl_bwd: bool = False,
                       fwd_hooks: Sequence[Tuple[NameOrPredicate, HookFn]] = (), metric: Any = None,
                       edit_grad: str = "replace", **model_kwargs: Any) -> Tuple[Any, Any]:
        """Runs the model as ``model(*model_args, **model_kwargs)`` (every argument of
        :meth:`forward`: return_type, loss_per_token, attention_mask, padding_side, prepend_bos,
        start_at_layer, stop_at_layer, ...) and returns ``(output, cache)``; the cache holds a
        copy of every activation ``names_filter`` selects that the run reaches, taken after the
        hooks at that point ran.

        names_filter: None (every hook point), a name / short name / ``*`` pattern, a list of
        them, or a predicate ``name -> bool``. remove_batch_dim: drop the batch dimension (batch
        must be 1). device: None or "cpu". return_cache_object=False returns a plain dict.
        ``fwd_hooks`` are active for this run only (as ``run_with_hooks``).

        ``incl_bwd=True`` (TransformerLens's): a gradient run; the cache also holds the gradient
        of every selected point under ``"<name>_grad"`` (d metric / d the activation, its shape).
        ``metric``: as :meth:`backward` takes it; default with return_type="loss": the mean loss
        (TransformerLens calls ``.backward()`` on the output). ``edit_grad``: see run_with_hooks."""
        from . import grad as G

        _check_device(device)
        a = self._bind(*model_args, **model_kwargs)
        return_type, loss_per_token = a["return_type"], a["loss_per_token"]
        if incl_bwd:
            metric = G.default_metric(metric, return_type, loss_per_token)
            G.check_grad_run(a)
        elif metric is not None:
            raise ValueError("metric is the metric of a gradient run: pass incl_bwd=True too")
        run = self._prepare(**a)
        B, T = run.B, run.T
        if remove_batch_dim and B != 1:
            raise ShapeError(f"remove_batch_dim=True needs batch size 1 (tokens have batch {B})")
        self._check_open()
        names = G.names_from_filter(self, names_filter)
        if incl_bwd:
            with self._lock, self.hooks(fwd_hooks):
                result, g = G.run_grad(self, a, metric, names=names, cache=True, edit_grad=edit_grad, run=run)
            cache = g.cache if g.cache is not None else ActivationCache({}, self, True, None, self._dims.n_layers)
            if remove_batch_dim:
                cache.remove_batch_dim()
            return result, (cache if return_cache_object else dict(cache.cache_dict))
        out = ctypes.c_void_p()
        N.check(lib.circuits_cache_create(ctypes.byref(out)))
        handle = Handle(out.value, lib.circuits_cache_free)  # type: ignore[arg-type]
        with self._lock, self.hooks(fwd_hooks):
            if names is not None and not names:  # selects nothing: a plain run, an empty cache
                result = self._forward(run, return_type, loss_per_token)
            else:
                arr = None
                if names is not None:
                    arr = (ctypes.c_char_p * len(names))(*[N.cstr(n) for n in names])
                self._call(lib.circuits_context_run_with_cache_opts, ctypes.byref(run.opts), run.tok, B, T, arr,
                           0 if names is None else len(names), handle.ptr, run.out, None, None)
                result = self._finish(run, return_type, loss_per_token)
        cache = ActivationCache._from_c(handle, self)
        if remove_batch_dim:
            cache.remove_batch_dim()
        return result, (cache if return_cache_object else dict(cache.cache_dict))

    # -- gradients (circuits/grad.py, circuits/attribution.py; docs/gradients.md) ------------

    def backward(self, input: Any = None, metric: Any = "loss", *, answer_tokens: Any = None,
                 wrong_tokens: Any = None, positions: Any = None, hook: Optional[str] = None, direction: Any = None,
                 names_filter: NamesFilter = None, cache: bool = True, cache_activations: bool = True,
                 weight_grads: bool = False, input_grad: bool = False, edit_grad: str = "replace",
                 fwd_hooks: Sequence[Tuple[NameOrPredicate, HookFn]] = (),
                 bwd_hooks: Sequence[Tuple[NameOrPredicate, HookFn]] = (), attention_mask: Any = None,
                 prepend_bos: Optional[bool] = None, padding_side: Optional[str] = None,
                 start_at_layer: Optional[int] = None, tokens: Any = None, residual: Any = None) -> Any:
        """One forward and backward pass of ``input`` (as :meth:`forward` takes it) for a scalar
        ``metric`` (``circuits_context_backward``): returns :class:`circuits.grad.Gradients`
        ``(value, logits, cache, weight_grads, input_grad)``.

        metric: ``"loss"`` (default: the mean next-token loss, padding skipped), ``"logit_diff"``
        (``answer_tokens``, ``wrong_tokens``), ``"logit"`` / ``"prob"`` / ``"log_prob"``
        (``answer_tokens``), each read at ``positions`` (one per row or an int; default the last);
        ``"token_loss"`` (the loss at ``positions``); ``"hook_linear"`` (``hook``, ``direction``:
        sum(activation * direction)); a metric object (circuits.patching.LogitDiff, ..., TokenLoss,
        circuits.grad.HookLinear); or a callable ``metric(logits) -> (value, d value / d logits)``
        on a copy of the logits [batch, pos, d_vocab_out].

        cache: the activations (``cache_activations``) and gradients (``"<name>_grad"``) of the
        points ``names_filter`` selects (None: every point), as run_with_cache(incl_bwd=True).
        weight_grads: {TransformerLens weight name: d metric / d weight}. input_grad: d metric / d
        the residual stream the run starts from [batch, pos, d_model] (the embeddings summed, or
        ``residual`` with ``start_at_layer``). edit_grad: "replace" (an element a forward hook
        changed is a constant) or "through" (identity). ``fwd_hooks`` / ``bwd_hooks``: active for
        this run only; backward hooks get ``(grad, hook)``, see :meth:`add_hook`."""
        from . import grad as G

        a = self._bind(input, "logits", False, prepend_bos, padding_side, start_at_layer, tokens, None,
                       attention_mask, None, None, residual=residual)
        kw = dict(answer_tokens=answer_tokens, wrong_tokens=wrong_tokens, positions=positions, hook=hook,
                  direction=direction)
        names = G.names_from_filter(self, names_filter) if cache else None
        with self._lock, self.hooks(fwd_hooks, bwd_hooks):
            return G.run_grad(self, a, metric, names=names, cache=cache, edit_grad=edit_grad, metric_kw=kw,
                              cache_activations=cache_activations, weight_grads=weight_grads,
                              input_grad=input_grad)[1]

    def attribution_patch(self, kind: Any, tokens: Any, source: Any, metric: Any, **metric_kw: Any) -> np.ndarray:
        """circuits.attribution.attribution_patch(self, ...): the linear estimate of activation
        patching's grid of ``kind`` (docs/gradients.md)."""
        from .attribution import attribution_patch

        return attribution_patch(self, kind, tokens, source, metric, **metric_kw)

    def edge_attribution(self, clean_tokens: Any, corrupted_tokens: Any, metric: Any, ig_steps: int = 0,
                         **metric_kw: Any) -> Any:
        """circuits.attribution.edge_attribution(self, ...): EAP (EAP-IG with ig_steps > 0)."""
        from .attribution import edge_attribution

        return edge_attribution(self, clean_tokens, corrupted_tokens, metric, ig_steps=ig_steps, **metric_kw)

    def integrated_gradients(self, hook: str, tokens: Any, baseline_tokens: Any = None, steps: int = 20,
                             metric: Any = "loss", **metric_kw: Any) -> Tuple[np.ndarray, float]:
        """circuits.attribution.integrated_gradients(self, ...): (attributions, completeness)."""
        from .attribution import integrated_gradients

        return integrated_gradients(self, hook, tokens, baseline_tokens, steps=steps, metric=metric, **metric_kw)

    # -- device -----------------------------------------------------------------------------

    def feature_stats(self, sae: Any, tokens: Any, batch_size: int = 8, top_k: int = 10, context_left: int = 8,
                      context_right: int = 2, threshold: float = 0.0, skip_positions: int = 0) -> Any:
        """Feature statistics of ``sae`` over ``tokens`` [n_rows, pos] (a NumPy array, streamed
        ``batch_size`` rows per call): a :class:`circuits.FeatureStats` (docs/saes.md "Feature
        statistics")."""
        from .features import feature_stats

        return feature_stats(self, sae, tokens, batch_size=batch_size, top_k=top_k, context_left=context_left,
                             context_right=context_right, threshold=threshold, skip_positions=skip_positions)

    def to(self, device_or_dtype: Any = None, print_details: bool = True) -> "Model":
        """TransformerLens's ``model.to``: "cpu" (or float32) is where the model already is;
        any other device or dtype is refused (libcircuits runs on the CPU in float32)."""
        if isinstance(device_or_dtype, str) or device_or_dtype is None or type(device_or_dtype).__name__ == "device":
            _check_device(None if device_or_dtype is None else str(device_or_dtype))
        elif np.dtype(str(device_or_dtype).replace("torch.", "")) != np.float32:
            raise ValueError(f"libcircuits computes in float32 only (dtype={device_or_dtype!r})")
        return self

    def cpu(self) -> "Model":
        return self

    def cuda(self, device: Any = None) -> "Model":
        raise ValueError("libcircuits runs on the CPU only: model.cuda() is not available")

    # -- weights ----------------------------------------------------------------------------

    def get_weight(self, name: str) -> np.ndarray:
        """The weight ``name`` in TransformerLens state-dict names (``"blocks.0.attn.W_Q"``,
        ``"embed.W_E"``, ``"unembed.W_U"``, ...) with TransformerLens's shape: a read-only
        zero-copy view (strided where the stored layout differs, e.g. GPT-2's fused c_attn) that
        keeps the model's memory alive. A weight kept in its stored dtype (keep_stored_dtype) has
        no float32 view: a read-only float32 copy, dequantized (circuits_model_weight_read)."""
        h = self._live()
        t = N.Tensor()
        rc = lib.circuits_model_weight(h.ptr, N.cstr(name), ctypes.byref(t))
        return self._weight_array(h, rc, t)

    @staticmethod
    def _weight_array(h: _ModelHandle, rc: int, t: N.Tensor) -> np.ndarray:
        """The array of a weight descriptor circuits_model_weight(_at) returned with status rc
        for the model of handle ``h`` (the one the caller holds, not ``self._handle``, which
        another thread's close() may have dropped meanwhile): its view, owned by ``h``, or
        for a stored weight (CIRCUITS_E_DTYPE: name and shape filled, data NULL) its
        dequantized copy."""
        if rc != N.CIRCUITS_E_DTYPE:
            N.check(rc)
            return tensor_view(t, h, readonly=True)
        N.lib.circuits_clear_error()
        buf = np.empty(tuple(t.shape[: t.ndim]), dtype=np.float32)
        N.check(lib.circuits_model_weight_read(h.ptr, N.cstr(N.decode(t.name)), buf.reshape(-1), buf.size, None))
        return readonly(buf)

    def weight_dtype(self, name: str) -> str:
        """The dtype weight ``name`` is held in: "F32", or with keep_stored_dtype its stored one
        ("F16", "BF16", "Q4_K", ...) for the matrices a stored layout can hold."""
        code = ctypes.c_int32(-1)
        h = self._live()
        N.check(lib.circuits_model_weight_dtype(h.ptr, N.cstr(name), ctypes.byref(code)))
        return lib.circuits_dtype_name(code.value).decode()

    def weight_names(self) -> List[str]:
        """Every weight's name, in TransformerLens ``state_dict()`` order."""
        h = self._live()
        ptr = h.ptr
        t = N.Tensor()
        names = []
        for i in range(lib.circuits_model_weight_count(ptr)):
            rc = lib.circuits_model_weight_at(ptr, i, ctypes.byref(t))
            if rc != N.CIRCUITS_E_DTYPE:  # a stored weight's descriptor names it too
                N.check(rc)
            names.append(N.decode(t.name))
        return names

    def state_dict(self) -> Dict[str, np.ndarray]:
        """{name: read-only zero-copy view} for every weight, in TransformerLens order (weights
        kept in their stored dtype: read-only float32 copies)."""
        h = self._live()
        ptr = h.ptr
        t = N.Tensor()
        out: Dict[str, np.ndarray] = {}
        for i in range(lib.circuits_model_weight_count(ptr)):
            rc = lib.circuits_model_weight_at(ptr, i, ctypes.byref(t))
            out[N.decode(t.name)] = self._weight_array(h, rc, t)
        return out

    def _stack(self, leaf: str, mlp: bool = False) -> np.ndarray:
        self._check_open()
        a = self._stacked.get(leaf)
        if a is None:
            if mlp and self._dims.attn_only:
                raise AttributeError(f"this model is attention-only: it has no {leaf}")
            a = readonly(np.stack([self.get_weight(f"blocks.{l}.{leaf}") for l in range(self._dims.n_layers)]))
            self._stacked[leaf] = a
        return a

    # -- the module tree (circuits/modules.py) ---------------------------------------------

    @property
    def embed(self) -> modules.Embed:
        """``model.embed.W_E`` (TransformerLens's module tree: docs/python.md)."""
        return modules.Embed(self, "embed")

    @property
    def pos_embed(self) -> modules.PosEmbed:
        return modules.PosEmbed(self, "pos_embed")

    @property
    def unembed(self) -> modules.Unembed:
        return modules.Unembed(self, "unembed")

    @property
    def ln_final(self) -> modules.LayerNorm:
        return modules.LayerNorm(self, "ln_final")

    @property
    def blocks(self) -> modules.Blocks:
        """``model.blocks[l].attn.W_Q``, ``.mlp.W_in``, ``.ln1.w``, ``.attn.hook_pattern``, ..."""
        return modules.Blocks(self)

    def _model_hook(self, name: str) -> HookPoint:
        hp = self.hook_dict.get(name)
        if hp is None:
            raise AttributeError(f"'{name}' is not a hook point of this model (see hook_names())")
        return hp

    # the model-level hook points, as TransformerLens's attributes
    hook_tokens = property(lambda self: self._model_hook("hook_tokens"), doc="needs set_use_hook_tokens(True)")
    hook_embed = property(lambda self: self._model_hook("hook_embed"))
    hook_pos_embed = property(lambda self: self._model_hook("hook_pos_embed"))

    @property
    def W_E(self) -> np.ndarray:
        """[d_vocab, d_model] (zero-copy; a dequantized copy when kept stored: get_weight)."""
        return self.get_weight("embed.W_E")

    @property
    def W_pos(self) -> np.ndarray:
        """[n_ctx, d_model] (zero-copy)."""
        return self.get_weight("pos_embed.W_pos")

    @property
    def W_E_pos(self) -> np.ndarray:
        """[d_vocab + n_ctx, d_model]: W_E and W_pos concatenated (a copy)."""
        return readonly(np.concatenate([self.W_E, self.W_pos], axis=0))

    @property
    def W_U(self) -> np.ndarray:
        """[d_model, d_vocab_out] (zero-copy; a dequantized copy when kept stored: get_weight)."""
        return self.get_weight("unembed.W_U")

    @property
    def b_U(self) -> np.ndarray:
        """[d_vocab_out] (zero-copy)."""
        return self.get_weight("unembed.b_U")

    @property
    def W_Q(self) -> np.ndarray:
        """[n_layers, n_heads, d_model, d_head] (stacked: a read-only copy, cached)."""
        return self._stack("attn.W_Q")

    def _stack_kv(self, leaf: str) -> np.ndarray:
        """K/V weights per query head: under grouped-query attention the n_key_value_heads
        stored heads (``attn._W_K``) repeated as TransformerLens's ``W_K`` property repeats them
        (repeat_interleave over n_heads / n_key_value_heads)."""
        d = self._dims
        if d.n_key_value_heads == d.n_heads:
            return self._stack("attn." + leaf)
        key = "attn." + leaf + ":repeated"
        a = self._stacked.get(key)
        if a is None:
            a = readonly(np.repeat(self._stack("attn._" + leaf), d.n_heads // d.n_key_value_heads, axis=1))
            self._stacked[key] = a
        return a

    @property
    def W_K(self) -> np.ndarray:
        """[n_layers, n_heads, d_model, d_head] (GQA: each K/V head repeated for its query heads)."""
        return self._stack_kv("W_K")

    @property
    def W_V(self) -> np.ndarray:
        """[n_layers, n_heads, d_model, d_head] (GQA: repeated as W_K)."""
        return self._stack_kv("W_V")

    @property
    def W_O(self) -> np.ndarray:
        """[n_layers, n_heads, d_head, d_model]."""
        return self._stack("attn.W_O")

    @property
    def b_Q(self) -> np.ndarray:
        """[n_layers, n_heads, d_head]."""
        return self._stack("attn.b_Q")

    @property
    def b_K(self) -> np.ndarray:
        return self._stack_kv("b_K")

    @property
    def b_V(self) -> np.ndarray:
        return self._stack_kv("b_V")

    @property
    def b_O(self) -> np.ndarray:
        """[n_layers, d_model]."""
        return self._stack("attn.b_O")

    @property
    def W_in(self) -> np.ndarray:
        """[n_layers, d_model, d_mlp] (AttributeError for attention-only models)."""
        return self._stack("mlp.W_in", mlp=True)

    @property
    def W_gate(self) -> Optional[np.ndarray]:
        """[n_layers, d_model, d_mlp] for gated MLPs; None otherwise (as TransformerLens)."""
        return self._stack("mlp.W_gate", mlp=True) if self._cfg.gated_mlp else None

    @property
    def W_out(self) -> np.ndarray:
        """[n_layers, d_mlp, d_model]."""
        return self._stack("mlp.W_out", mlp=True)

    @property
    def b_in(self) -> np.ndarray:
        """[n_layers, d_mlp]."""
        return self._stack("mlp.b_in", mlp=True)

    @property
    def b_out(self) -> np.ndarray:
        """[n_layers, d_model]."""
        return self._stack("mlp.b_out", mlp=True)

    # -- circuits ---------------------------------------------------------------------------

    def _factored(self, fn: Callable[..., int], *args: int) -> FactoredMatrix:
        out = ctypes.c_void_p()
        h = self._live()
        N.check(fn(h.ptr, *args, ctypes.byref(out)))
        return FactoredMatrix._from_ptr(out.value)  # type: ignore[arg-type]

    @property
    def OV(self) -> FactoredMatrix:
        """W_V @ W_O of every head: FactoredMatrix [n_layers, n_heads, d_model, d_model]."""
        return self._factored(lib.circuits_model_ov, -1, -1)

    @property
    def QK(self) -> FactoredMatrix:
        """W_Q @ W_K^T of every head: FactoredMatrix [n_layers, n_heads, d_model, d_model]."""
        return self._factored(lib.circuits_model_qk, -1, -1)

    def circuit(self, kind: str, layer: Optional[int] = None, head: Optional[int] = None) -> FactoredMatrix:
        """A head circuit as a FactoredMatrix. kind: ``"OV"``, ``"QK"`` [d_model, d_model],
        ``"full_OV"`` (W_E OV W_U [d_vocab, d_vocab_out]), ``"full_QK"`` (W_E QK W_E^T),
        ``"pos_QK"`` (W_pos QK W_pos^T [n_ctx, n_ctx]). layer/head None select all (leading dims
        [n_layers, n_heads], [n_layers] or [n_heads])."""
        fns = {"OV": lib.circuits_model_ov, "QK": lib.circuits_model_qk, "full_OV": lib.circuits_model_full_ov,
               "full_QK": lib.circuits_model_full_qk, "pos_QK": lib.circuits_model_pos_qk}
        if kind not in fns:
            raise ValueError(f"kind must be one of {sorted(fns)}, not {kind!r}")
        return self._factored(fns[kind], -1 if layer is None else int(layer), -1 if head is None else int(head))

    def rotary_QK(self, layer: int, head: int, n_offsets: int) -> FactoredMatrix:
        """Rotary models: the QK circuit of one head WITH the rotation (``QK`` leaves it out),
        W_Q R(delta) W_K^T for offsets delta = query position - key position = 0 .. n_offsets - 1:
        FactoredMatrix [n_offsets, d_model, d_model]. Not in TransformerLens."""
        return self._factored(lib.circuits_model_rotary_qk, int(layer), int(head), int(n_offsets))

    def composition_circuit(self, mode: str, layer_a: int, head_a: int, layer_b: int, head_b: int) -> FactoredMatrix:
        """The full Q-, K- or V-composition circuit of head A (earlier) into head B over tokens."""
        return self._factored(lib.circuits_model_composition_circuit, _mode(mode), layer_a, head_a, layer_b, head_b)

    def virtual_OV(self, layer_a: int, head_a: int, layer_b: int, head_b: int) -> FactoredMatrix:
        """The V-composition virtual head OV^A OV^B [d_model, d_model]."""
        return self._factored(lib.circuits_model_virtual_ov, layer_a, head_a, layer_b, head_b)

    def virtual_weights(self, writer: str, reader: str, writer_layer: int = -1, writer_head: int = -1,
                        reader_layer: int = -1, reader_head: int = -1) -> FactoredMatrix:
        """W_write @ W_read through the residual stream, factored through d_model.
        writer: ``"embed"``, ``"pos_embed"``, ``"head"``, ``"mlp"``; reader: ``"q"``, ``"k"``,
        ``"v"``, ``"mlp"``, ``"unembed"``."""
        if writer not in WRITERS or reader not in READERS:
            raise ValueError(f"writer must be one of {list(WRITERS)} and reader one of {list(READERS)}")
        return self._factored(lib.circuits_model_virtual_weights, WRITERS[writer], writer_layer, writer_head,
                              READERS[reader], reader_layer, reader_head)

    def all_composition_scores(self, mode: str) -> np.ndarray:
        """TransformerLens's ``all_composition_scores``: [n_layers, n_heads, n_layers, n_heads]
        (writer, reader), zero unless layer(writer) < layer(reader). mode: "Q", "K" or "V"."""
        L, H = self._dims.n_layers, self._dims.n_heads
        out = np.empty((L, H, L, H), np.float32)
        h = self._live()
        N.check(lib.circuits_model_composition_scores(h.ptr, _mode(mode), out))
        return out

    def mlp_composition_scores(self, mode: str) -> np.ndarray:
        """Composition of each layer's MLP output (W_out) into later heads: [n_layers (writer),
        n_layers (reader), n_heads]."""
        L, H = self._dims.n_layers, self._dims.n_heads
        out = np.empty((L, L, H), np.float32)
        h = self._live()
        N.check(lib.circuits_model_mlp_composition_scores(h.ptr, _mode(mode), out))
        return out

    def copying_scores(self, full: bool = False) -> np.ndarray:
        """Re(sum lambda) / sum |lambda| over the eigenvalues of each head's OV (or, with
        ``full=True``, of W_E OV W_U): [n_layers, n_heads]."""
        out = np.empty((self._dims.n_layers, self._dims.n_heads), np.float32)
        h = self._live()
        N.check(lib.circuits_model_copying_scores(h.ptr, int(bool(full)), out))
        return out

    def induction_scores(self, tokens: Any, seq_len: Optional[int] = None,
                         return_losses: bool = False) -> Union[np.ndarray, Tuple[np.ndarray, float, float]]:
        """Induction score of every head on repeated tokens [batch, 2 * seq_len (+1 with a BOS)]
        (see :func:`circuits.repeated_tokens`): the mean attention on the offset-(1 - seq_len)
        diagonal, [n_layers, n_heads]. With ``return_losses``, also the mean loss on tokens
        2..seq_len of the first block and of the repeat. The scores need no loss: without
        ``return_losses`` none is computed (a model whose d_vocab_out < d_vocab is scored too)."""
        tok = self._tokens(tokens)
        B, T = tok.shape
        if seq_len is None:
            seq_len = T // 2
        scores = np.empty((self._dims.n_layers, self._dims.n_heads), np.float32)
        lf = np.empty(1, np.float32) if return_losses else None
        lr = np.empty(1, np.float32) if return_losses else None
        self._call(lib.circuits_context_induction_scores, tok, B, T, int(seq_len), scores, lf, lr)
        if return_losses:
            return scores, float(lf[0]), float(lr[0])
        return scores

    def _detect(self, tokens: Any, kind: int, custom: Optional[np.ndarray], error_measure: int,
                exclude_bos: bool, exclude_current_token: bool, attention_mask: Any = None) -> np.ndarray:
        tok = self._tokens(tokens)
        B, T = tok.shape
        opts = N.DetectOptions()
        lib.circuits_detect_options_init(ctypes.byref(opts))
        mask = None if attention_mask is None else _pad.as_mask(attention_mask, tok.shape)
        if mask is not None:
            opts.attention_mask = mask.ctypes.data
        opts.error_measure = error_measure
        opts.exclude_bos = int(bool(exclude_bos))
        opts.exclude_current_token = int(bool(exclude_current_token))
        if custom is not None and custom.shape != (T, T):
            raise ShapeError(f"the detection pattern must be [pos, pos] = [{T}, {T}], got {list(custom.shape)}")
        out = np.empty((self._dims.n_layers, self._dims.n_heads), np.float32)
        self._call(lib.circuits_context_detect_heads, tok, B, T, kind, custom, ctypes.byref(opts), out)
        return out

    def diff(self, other: "Model", tokens: Any, names: Any = None, *, logits: bool = True, per_head: bool = False,
             attention_mask: Any = None) -> Any:
        """``circuits.diff(self, other, tokens, ...)``: every hook point's error of ``other``
        against this model on the same tokens (docs/quantization.md)."""
        from .compare import diff  # circuits.compare imports this module

        return diff(self, other, tokens, names, logits=logits, per_head=per_head, attention_mask=attention_mask)

    # -- tokenizer --------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Optional[Tokenizer]:
        """The tokenizer found in the model's directory (None if it has none); settable."""
        self._check_open()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tok: Optional[Tokenizer]) -> None:
        if tok is not None and not isinstance(tok, Tokenizer):
            raise TypeError(f"model.tokenizer must be a circuits.Tokenizer, not {type(tok).__name__}")
        self._tokenizer = tok

    def set_tokenizer(self, tok: Tokenizer) -> None:
        """Sets the model's tokenizer as TransformerLens does: one that prepends BOS in
        ``encode`` (``tok.with_bos()``; ``tok`` itself is unchanged)."""
        if not isinstance(tok, Tokenizer):
            raise TypeError(f"set_tokenizer takes a circuits.Tokenizer, not {type(tok).__name__}")
        self.tokenizer = tok.with_bos()

    def _tok(self) -> Tokenizer:
        t = self.tokenizer
        if t is None:
            if not N.has("circuits_tokenizer_encode"):
                from .tokenizer import NO_TOKENIZER

                raise NotImplementedError(NO_TOKENIZER)
            raise ValueError(NO_MODEL_TOKENIZER)
        return t

    def _pad_id(self) -> int:
        """The pad token as TransformerLens sets it: the tokenizer's, else its EOS (set_tokenizer)."""
        t = self._tok()
        for i in (t.pad_token_id, t.eos_token_id):
            if i is not None:
                return int(i)
        return 0

    def to_tokens(self, input: Union[str, Sequence[str]], prepend_bos: Optional[bool] = None,
                  padding_side: Optional[str] = None, move_to_device: bool = True, truncate: bool = True) -> np.ndarray:
        """Text → token ids [batch, pos] (int64), as TransformerLens's ``to_tokens``: the BOS token
        first unless ``prepend_bos=False`` (default ``cfg.default_prepend_bos``); a list of
        strings is padded to its longest on ``padding_side`` (default
        ``model.tokenizer.padding_side``, 'right') with the pad token (the tokenizer's, else EOS,
        as TransformerLens pads GPT-2); ``truncate`` cuts each row to n_ctx. The mask of such a
        batch: ``attention_mask`` of :meth:`forward`, or :func:`circuits.padding.get_attention_mask`."""
        tok = self._tok()
        side = self._padding_side(padding_side)
        if prepend_bos is None:
            prepend_bos = self.cfg.default_prepend_bos
        if prepend_bos and tok.bos_token_id is None:
            raise ValueError("the tokenizer has no BOS token: pass prepend_bos=False")
        texts = [input] if isinstance(input, str) else list(input)
        rows = [tok.encode(t, prepend_bos=bool(prepend_bos)) for t in texts]
        if truncate:
            rows = [r[: self._dims.n_ctx] for r in rows]
        return _pad.pad_rows(rows, self._pad_id(), side)

    def to_string(self, tokens: Any) -> Union[str, List[str]]:
        """Token ids → text: a str for an int or a 1-D array, a list of str for [batch, pos]."""
        tok = self._tok()
        a = np.asarray(tokens)
        if a.ndim == 2:
            return [tok.decode(row) for row in a]
        return tok.decode(a.reshape(-1))

    def to_str_tokens(self, input: Any, prepend_bos: Optional[bool] = None,
                      padding_side: Optional[str] = None) -> Union[List[str], List[List[str]]]:
        """The text of each token: of a string (tokenized with ``to_tokens``), of a list of
        strings (a list of lists, each string on its own: no padding), or of token ids (1-D, or
        [1, pos])."""
        tok = self._tok()
        if isinstance(input, str):
            return tok.str_tokens(self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)[0])
        if isinstance(input, (list, tuple)) and input and isinstance(input[0], str):
            return [self.to_str_tokens(s, prepend_bos=prepend_bos, padding_side=padding_side)  # type: ignore[misc]
                    for s in input]
        a = np.asarray(input)
        if a.ndim == 2:
            if a.shape[0] != 1:
                raise ShapeError(f"to_str_tokens takes one sequence; got tokens of shape {list(a.shape)}")
            a = a[0]
        return tok.str_tokens(a.reshape(-1))

    def tokens_to_residual_directions(self, tokens: Any) -> np.ndarray:
        """``W_U[:, tokens]`` with d_model last: [d_model] for a str / int, [..., d_model] for an
        array of ids (TransformerLens's method; ``circuits_model_residual_directions``)."""
        from .resid import tokens_to_residual_directions

        return tokens_to_residual_directions(self, tokens)

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (ValueError otherwise)."""
        ids = self._tok().encode(string, prepend_bos=False)
        if len(ids) != 1:
            raise ValueError(f"{string!r} is {len(ids)} tokens, not one")
        return int(ids[0])

    def get_token_position(self, single_token: Union[str, int], input: Any, mode: str = "first",
                           prepend_bos: Optional[bool] = None, padding_side: Optional[str] = None) -> int:
        """TransformerLens's ``get_token_position``: the position of ``single_token`` (an id, or a
        string that is one token) in ``input`` (a string, tokenized with ``to_tokens``; or ids
        [pos] / [1, pos]); ``mode`` 'first' or 'last' match. ValueError if it does not occur."""
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', not {mode!r}")
        if isinstance(input, str):
            a = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)
        else:
            a = np.asarray(input)
        if a.ndim == 2:
            if a.shape[0] != 1:
                raise ShapeError(f"If tokens are rank two, they must have shape [1, seq_len], not {list(a.shape)}")
            a = a[0]
        tid = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        hits = np.flatnonzero(a.reshape(-1) == tid)
        if hits.size == 0:
            raise ValueError("The token does not occur in the prompt")
        return int(hits[0] if mode == "first" else hits[-1])

    def to_single_str_token(self, int_token: int) -> str:
        return self._tok().token_str(int(int_token))

    def generate(self, input: Any = "", max_new_tokens: int = 10, stop_at_eos: bool = True,
                 eos_token_id: Optional[int] = None, do_sample: bool = True, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, temperature: float = 1.0, freq_penalty: float = 0.0,
                 use_past_kv_cache: bool = True, prepend_bos: Optional[bool] = None,
                 padding_side: Optional[str] = None, return_type: Optional[str] = "input", verbose: bool = True,
                 *, seed: int = 0) -> Any:
        """TransformerLens's ``generate`` (``circuits_context_generate``): continues ``input``
        (text, a list of texts, or token ids [batch, pos]) by up to ``max_new_tokens`` tokens,
        firing the registered hooks at every step (with the KV cache, each step's hooks see the
        new position only, as in TransformerLens). ``return_type``: ``"input"`` (``"str"`` for
        text input, ``"tokens"`` for tokens), ``"str"`` (the text without BOS/EOS/pad tokens, as
        TL's ``skip_special_tokens=True``; one str for batch 1, else a list) or ``"tokens"``
        (int64 [batch, pos + new]). Greedy (``do_sample=False``) or sampled (``temperature``,
        ``top_k``, ``top_p``, ``freq_penalty``, as TL's ``sample_logits``), seeded by ``seed``:
        the same seed gives the same tokens (not torch's random stream). ``stop_at_eos``: a row
        that emits ``eos_token_id`` (default: the tokenizer's EOS) pads with it, and generation
        ends when every row has. A list of several texts is padded on the left with its attention
        mask, whatever ``padding_side`` says, as TL forces it (the mask reaches every step and
        the KV cache; ``circuits_generate_options.attention_mask``). ``verbose`` (a progress bar
        in TL) is accepted and ignored."""
        if return_type not in ("input", "str", "tokens"):
            raise ValueError(f"return_type must be 'input', 'str' or 'tokens', not {return_type!r}")
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left', 'right' or None, not {padding_side!r}")
        if isinstance(eos_token_id, (list, tuple)):
            if len(eos_token_id) != 1:
                raise NotImplementedError("several stop tokens (eos_token_id as a list) are not supported: "
                                          "circuits_context_generate stops at one EOS id")
            eos_token_id = eos_token_id[0]
        is_text = isinstance(input, str) or (isinstance(input, (list, tuple)) and bool(input)
                                             and isinstance(input[0], str))
        mask = None
        if is_text:
            if not isinstance(input, str) and len(input) > 1:
                # TL: a batched list is left-padded, and its mask (utils.get_attention_mask) kept
                tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side="left")
                bos = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
                mask = _pad.get_attention_mask(tokens, self._pad_id(), self._tok().bos_token_id, bool(bos), "left")
            else:
                tokens = self.to_tokens(input, prepend_bos=prepend_bos, padding_side=padding_side)
        else:
            tokens = input
        tok = self._tokens(tokens)
        B, T = tok.shape
        n_new = int(max_new_tokens)
        if n_new < 0:
            raise RangeError(f"max_new_tokens must be >= 0, not {n_new}")
        if T + n_new > self._dims.n_ctx:
            raise RangeError(f"prompt length {T} + max_new_tokens {n_new} exceeds n_ctx = {self._dims.n_ctx}")
        opts = N.GenerateOptions()
        lib.circuits_generate_options_init(ctypes.byref(opts))
        opts.max_new_tokens = n_new
        opts.do_sample = int(bool(do_sample))
        opts.temperature = float(temperature)
        opts.top_k = 0 if top_k is None else N.check_int(top_k, ctypes.c_int32, "top_k")
        opts.top_p = 0.0 if top_p is None else float(top_p)
        opts.freq_penalty = float(freq_penalty)
        opts.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        opts.stop_at_eos = int(bool(stop_at_eos))
        opts.eos_token_id = -1 if eos_token_id is None else N.check_int(eos_token_id, ctypes.c_int32, "eos_token_id")
        opts.use_kv_cache = int(bool(use_past_kv_cache))
        if mask is not None:
            mask = np.ascontiguousarray(mask, dtype=np.int32)  # alive until the call returns
            opts.attention_mask = mask.ctypes.data
        st = self._state
        ctx_box: List[Optional[int]] = [None]

        def on_step(step: int, tokens_p: Any, logits_p: Any, batch: int, user_data: Any) -> int:
            # Between two steps: each step is a run, and the next may need a larger block. If an
            # array from this step's hooks is still referenced, hand the block to its lease.
            try:
                lease = st.lease
                if lease is not None and lease.kept():
                    _take_run_memory(ctx_box[0], lease)  # type: ignore[arg-type]
                    st.lease = _Lease()
                return 0
            except BaseException as e:  # noqa: BLE001 -- must not escape into C
                st.pending, st.pending_point = e, "generate (between steps)"
                return -1

        cb = N.GENERATE_FN(on_step)
        opts.on_step = ctypes.cast(cb, ctypes.c_void_p).value
        out = np.zeros((B, T + n_new), np.int32)
        out_len = ctypes.c_int64(0)

        def run(ctx: int, *args: Any) -> int:
            ctx_box[0] = ctx
            return lib.circuits_context_generate(ctx, *args)

        self._call(run, tok, B, T, ctypes.byref(opts), out, ctypes.byref(out_len))
        del cb
        n = max(0, min(int(out_len.value), out.shape[1]))
        res = out[:, :n].astype(np.int64)
        if return_type == "tokens" or (return_type == "input" and not is_text):
            return res
        strs = [self._tok().decode(row, skip_special_tokens=True) for row in res]
        return strs[0] if len(strs) == 1 else strs  # as TL: one text for batch 1

    # -- probes (docs/probes.md) --------------------------------------------------------------

    def add_probe_monitor(self, probe: Any, fn: Callable[[np.ndarray, int], Any],
                          hook: Optional[str] = None) -> HookHandle:
        """Runs ``probe`` (a :class:`circuits.Probe`) at hook point ``hook`` (default: the probe's
        hook_name) in every run of this model, generation steps included: ``fn(outputs,
        first_position)`` gets the probe's outputs [batch, pos, n_outputs] (a copy) for the run's
        positions, first_position counting a KV cache's held positions (so each generation step
        reports its new position). Raise HookStopped to stop the run. Removed by the handle's
        ``remove()`` or :meth:`reset_hooks`."""
        from . import probe as _probe

        return _probe.add_probe_monitor(self, probe, fn, hook)


    # -- steering (circuits.steering; docs/steering.md) ---------------------------------------

    def add_steering(self, hook: str, vector: Any, scale: float = 1.0, positions: Any = None,
                     is_permanent: bool = False) -> HookHandle:
        """Adds ``scale * vector`` at the points ``hook`` selects: :func:`circuits.steering.add_steering`."""
        from . import steering

        return steering.add_steering(self, hook, vector, scale, positions, is_permanent)

    def steering(self, hook: str, vector: Any, scale: float = 1.0, positions: Any = None) -> Any:
        """``with model.steering(hook, vector, scale=...):``: :func:`circuits.steering.steering`."""
        from . import steering

        return steering.steering(self, hook, vector, scale, positions)

    def add_control_vector(self, directions: Any, scale: float = 1.0, positions: Any = None,
                           is_permanent: bool = False) -> HookHandle:
        """A llama.cpp control vector (array or file): :func:`circuits.steering.add_control_vector`."""
        from . import steering

        return steering.add_control_vector(self, directions, scale, positions, is_permanent)

    def contrastive_vector(self, positive: Any, negative: Any, hook: str, reduce: str = "last", **kw: Any) -> np.ndarray:
        """Mean act(positive) - act(negative): :func:`circuits.steering.contrastive_vector`."""
        from . import steering

        return steering.contrastive_vector(self, positive, negative, hook, reduce, **kw)

def _tokenizer_padding_side(path: str) -> Optional[str]:
    """``padding_side`` of the directory's tokenizer_config.json (what Hugging Face's tokenizer, and
    so TransformerLens, starts with), or None."""
    try:
        with open(os.path.join(path, "tokenizer_config.json"), encoding="utf-8") as f:
            side = json.load(f).get("padding_side")
    except (OSError, ValueError, AttributeError):
        return None
    return side if side in _pad.SIDES else None


def _check_device(device: Optional[str]) -> None:
    if device is not None and str(device) != "cpu":
        raise ValueError(f"libcircuits runs on the CPU only (device={device!r}); use 'cpu' or None")


def _mode(mode: str) -> int:
    if mode not in COMPOSITION_MODES:
        raise ValueError(f"composition mode must be 'Q', 'K' or 'V', not {mode!r}")
    return COMPOSITION_MODES[mode]


#: TransformerLens's name for the same class.
HookedTransformer = Model
