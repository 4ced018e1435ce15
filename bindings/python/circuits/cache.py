"""ActivationCache: the activations of one ``run_with_cache``, TransformerLens-shaped."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np

from . import _native as N
from ._arrays import TOKENS_HOOK, Handle, tensor_view
from ._arrays import view as _view
from .errors import NotFoundError, ShapeError
from .resid import ResidStreamMixin

if TYPE_CHECKING:  # pragma: no cover
    from .model import Model

lib = N.lib

CacheKey = Union[str, Tuple[Any, ...]]


def act_name(name: str, layer: Optional[int] = None, layer_type: Optional[str] = None) -> str:
    """TransformerLens's ``utils.get_act_name`` (``circuits_act_name``):
    ``act_name("pattern", 1) == "blocks.1.attn.hook_pattern"``,
    ``act_name("scale", 4, "ln1") == "blocks.4.ln1.hook_scale"``, ``act_name("embed") ==
    "hook_embed"``. A name with a '.' or starting with ``hook_`` is returned unchanged."""
    buf = ctypes.create_string_buffer(256)
    lt = N.cstr(layer_type) if layer_type is not None else None
    N.check(lib.circuits_act_name(N.cstr(name), -1 if layer is None else int(layer), lt, buf, len(buf)), "act_name")
    return buf.value.decode()


class ActivationCache(ResidStreamMixin):
    """The cached activations of a run: a read-mostly mapping from full hook names (in firing
    order) to NumPy arrays with TransformerLens shapes.

    * ``cache["blocks.0.hook_resid_post"]`` — a full name;
    * ``cache["resid_pre0"]``, ``cache["pattern1"]`` — TransformerLens short names;
    * ``cache["pattern", 1]``, ``cache["scale", 4, "ln1"]``, ``cache["resid_post", -1]`` —
      ``(name, layer[, layer_type])`` through ``get_act_name`` (negative layers count from the end).

    The arrays are zero-copy views of the C cache's own memory (writable, as TransformerLens's
    tensors are); the memory lives as long as any of the arrays or this object does, so arrays
    stay valid after the run, after the cache object is dropped and after the model is closed.

    The residual-stream methods (accumulated_resid, decompose_resid, stack_head_results,
    stack_neuron_results, get_full_resid_decomposition, compute_head_results, apply_ln_to_stack,
    logit_attrs, logit_lens, direct_logit_attribution: circuits/resid.py) compute in C on the
    cache's own memory (edits made in place to these arrays are seen; entries replaced in
    ``cache_dict`` are not) and need the model open.
    """

    def __init__(self, cache_dict: Dict[str, np.ndarray], model: Optional["Model"] = None,
                 has_batch_dim: bool = True, _handle: Optional[Handle] = None, _n_layers: Optional[int] = None):
        self.cache_dict: Dict[str, np.ndarray] = cache_dict
        self.model = model
        self.has_batch_dim = has_batch_dim
        self._handle = _handle
        self._n_layers = _n_layers if _n_layers is not None else (model._dims.n_layers if model is not None else None)

    @classmethod
    def _from_c(cls, handle: Handle, model: "Model") -> "ActivationCache":
        ptr = handle.ptr
        n = lib.circuits_cache_count(ptr)
        t = N.Tensor()
        tp = ctypes.byref(t)
        at = lib.circuits_cache_at
        entries = []
        for i in range(n):
            N.check(at(ptr, i, tp))
            entries.append((N.decode(t.name), t.data, tuple(t.shape[: t.ndim])))
        d: Dict[str, np.ndarray] = {}
        if not entries:
            return cls(d, model, True, handle, model._dims.n_layers)
        # The entries are one contiguous block in firing order (circuits_context_run_with_cache
        # allocates them so): one array over the block, sliced per entry, is much cheaper than
        # a view per entry. Fall back to per-entry views if the layout ever differs.
        total = int(lib.circuits_cache_nbytes(ptr)) // 4
        base_addr = entries[0][1]
        block = _view(base_addr, (total,), handle)
        off = 0
        for name, addr, shape in entries:
            numel = 1
            for s in shape:
                numel *= s
            if addr != base_addr + 4 * off or off + numel > total:
                d = {}
                for i in range(n):
                    N.check(at(ptr, i, tp))
                    a = tensor_view(t, handle, readonly=False)
                    d[N.decode(t.name)] = a.view(np.int32) if N.decode(t.name) == TOKENS_HOOK else a
                break
            d[name] = block[off : off + numel].reshape(shape)
            if name == TOKENS_HOOK:  # int32 ids in the same 4-byte slots (docs/hooks.md)
                d[name] = d[name].view(np.int32)
            off += numel
        return cls(d, model, True, handle, model._dims.n_layers)

    # -- lookup -----------------------------------------------------------------------------

    def _resolve(self, key: CacheKey) -> str:
        if isinstance(key, str):
            if key in self.cache_dict:
                return key
            if self._handle is not None and self._handle.ptr:
                # the C cache resolves short names exactly as hooks and filters do
                t = N.Tensor()
                if lib.circuits_cache_get(self._handle.ptr, N.cstr(key), ctypes.byref(t)) == 0:
                    full = N.decode(t.name)
                    if full in self.cache_dict:
                        return full
            full = _expand_short(key)
            if full in self.cache_dict:
                return full
            if key.endswith("_grad") and len(key) > 5:  # a gradient entry under a short name ("resid_pre1_grad")
                try:
                    stem = self._resolve(key[:-5])
                except NotFoundError:
                    stem = _expand_short(key[:-5])
                if stem + "_grad" in self.cache_dict:
                    return stem + "_grad"
            raise NotFoundError(f"the cache holds no '{key}'" + (f" (read as '{full}')" if full != key else "")
                                + f"; it has {len(self.cache_dict)} entries, e.g. {list(self.cache_dict)[:3]}")
        if isinstance(key, tuple) and 1 <= len(key) <= 3:
            name = key[0]
            layer = key[1] if len(key) > 1 else None
            layer_type = key[2] if len(key) > 2 else None
            if layer is not None and layer < 0:
                if self._n_layers is None:
                    raise NotFoundError("negative layer indices need the model's n_layers")
                layer = self._n_layers + layer
            full = act_name(name, layer, layer_type)
            if full in self.cache_dict:
                return full
            raise NotFoundError(f"the cache holds no {key!r} (read as '{full}')")
        raise TypeError(f"cache keys are str or (name, layer[, layer_type]) tuples, not {type(key).__name__}")

    def __getitem__(self, key: CacheKey) -> np.ndarray:
        return self.cache_dict[self._resolve(key)]

    def get(self, key: CacheKey, default: Any = None) -> Any:
        try:
            return self[key]
        except (NotFoundError, KeyError):
            return default

    def __contains__(self, key: object) -> bool:
        try:
            self._resolve(key)  # type: ignore[arg-type]
            return True
        except (NotFoundError, TypeError, KeyError):
            return False

    def keys(self):
        return self.cache_dict.keys()

    def values(self):
        return self.cache_dict.values()

    def items(self):
        return self.cache_dict.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def __repr__(self) -> str:
        return f"ActivationCache with keys {list(self.cache_dict)}"

    # -- TransformerLens helpers ------------------------------------------------------------

    def remove_batch_dim(self) -> "ActivationCache":
        """Drops the batch dimension of every entry (the batch must be 1), in place; returns self."""
        if not self.has_batch_dim:
            return self
        for k, v in self.cache_dict.items():
            if v.shape[0] != 1:
                raise ShapeError(f"remove_batch_dim needs batch size 1; '{k}' has shape {list(v.shape)}")
        self.cache_dict = {k: v[0] for k, v in self.cache_dict.items()}
        self.has_batch_dim = False
        return self

    def toggle_autodiff(self, mode: bool = False) -> None:
        """No-op, for TransformerLens compatibility (gradients come from gradient runs:
        Model.backward, run_with_cache(incl_bwd=True))."""

    def to(self, device: Any = None, move_model: bool = False) -> "ActivationCache":
        """No-op (everything is on the CPU); for TransformerLens compatibility."""
        return self

    @property
    def nbytes(self) -> int:
        """Bytes of activation data held (``circuits_cache_nbytes``)."""
        if self._handle is not None and self._handle.ptr:
            return int(lib.circuits_cache_nbytes(self._handle.ptr))
        return sum(v.nbytes for v in self.cache_dict.values())

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: Optional[str] = None) -> np.ndarray:
        """``np.stack([cache[activation_name, l, sublayer_type] for l in range(layer)])`` —
        all layers when layer is -1 (TransformerLens's ``stack_activation``)."""
        if self._n_layers is None:
            raise NotFoundError("stack_activation needs the model's n_layers")
        n = self._n_layers if layer == -1 else layer
        return np.stack([self[(activation_name, l, sublayer_type)] for l in range(n)])


def _expand_short(name: str) -> str:
    """A TransformerLens short name ("resid_pre3", "pattern1", "k6a", "scale4ln1") read as
    libcircuits reads it (the same widening of get_act_name's regex as the C side)."""
    if "." in name or name.startswith("hook_"):
        return name
    i = 0
    while i < len(name) and (name[i].islower() or name[i] == "_"):
        i += 1
    if i == 0 or i >= len(name) or not name[i].isdigit():
        try:
            return act_name(name)
        except Exception:
            return name
    j = i
    while j < len(name) and name[j].isdigit():
        j += 1
    try:
        return act_name(name[:i], int(name[i:j]), name[j:] or None)
    except Exception:
        return name
