"""Zero-copy NumPy views of memory libcircuits owns, and owner handles that free it.

A view is made through ``__array_interface__`` on a tiny holder object that also references
the *owner* (a :class:`Handle` of the C object the memory belongs to): the array's ``.base``
is the holder, so the C object cannot be freed while any array (or view of it) that points
into it is alive (a slice, reshape or transpose of the array has the array as its base, so
it references the holder too). Activation arrays passed to hooks have the run's lease
(``circuits.model._Lease``) as their owner: if any of them outlives its hook call, the lease
takes the context's run memory after the run (``circuits_context_take_run_memory``) and frees
it when the last such array is gone.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _native as N


#: hook_tokens holds int32 token ids where every other activation holds float32 (docs/hooks.md).
TOKENS_HOOK = "hook_tokens"


class _Holder:
    """Exposes float32 (or, with typestr "<i4", int32) memory at an address to NumPy, keeping
    ``owner`` alive."""

    __slots__ = ("__array_interface__", "owner", "__weakref__")

    def __init__(self, addr: int, shape: Tuple[int, ...], readonly: bool, owner: Any, typestr: str = "<f4"):
        self.__array_interface__ = {
            "version": 3,
            "typestr": typestr,
            "data": (addr, readonly),
            "shape": shape,
        }
        self.owner = owner


def view(addr: int, shape: Tuple[int, ...], owner: Any = None, readonly: bool = False) -> np.ndarray:
    """A contiguous float32 array of ``shape`` at ``addr`` (no copy)."""
    return np.asarray(_Holder(addr, shape, readonly, owner))


def tensor_view(t: N.Tensor, owner: Any, readonly: bool) -> np.ndarray:
    """A zero-copy view of a ``circuits_tensor`` with its shape and (element) strides.

    Read-only views (weights: a GPT-2 ``W_Q`` has strides ``[d_head, 3 d_model, 1]``, a tied
    ``W_U`` is ``W_E`` transposed) are made with ``as_strided(..., writeable=False)`` over the
    span of memory the tensor covers; writable contiguous ones (cache entries) directly."""
    nd = t.ndim
    shape = tuple(int(s) for s in t.shape[:nd])
    strides = tuple(int(s) for s in t.strides[:nd])
    contiguous = True
    expect = 1
    for s, st in zip(reversed(shape), reversed(strides)):
        if s != 1 and st != expect:
            contiguous = False
            break
        expect *= s
    if contiguous and not readonly:
        return view(t.data, shape, owner, readonly)
    lo = sum((s - 1) * st for s, st in zip(shape, strides) if st < 0)
    hi = sum((s - 1) * st for s, st in zip(shape, strides) if st > 0)
    base = view(t.data + 4 * lo, (hi - lo + 1,), owner, readonly)
    if lo:
        base = base[-lo:]  # element 0 of the tensor
    return as_strided(base, shape=shape, strides=tuple(4 * s for s in strides), writeable=not readonly)


class Handle:
    """Owns one C object (a pointer as int) and frees it exactly once: at :meth:`close` or
    when the handle is garbage-collected, whichever comes first."""

    __slots__ = ("ptr", "_free", "__weakref__")

    def __init__(self, ptr: int, free: Callable[[int], None]):
        self.ptr: Optional[int] = ptr
        self._free = free

    def close(self) -> None:
        p, self.ptr = self.ptr, None
        if p:
            self._free(p)

    def __del__(self) -> None:
        self.close()


def as_f32(x: Any, name: str = "array") -> np.ndarray:
    """x as a C-contiguous float32 array (copies only when needed)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a
