"""FactoredMatrix: M = A @ B kept as its factors (TransformerLens's ``FactoredMatrix``).

Backed by a ``circuits_factored`` object: products, norms, SVD, eigenvalues, corners and
top-k run in C through the small inner dimension, so that e.g. a [50257, 50257] full OV
circuit is never formed unless :attr:`FactoredMatrix.AB` is asked for.

Leading ("batch") dimensions are kept in Python: the C object holds ``prod(leading)``
matrices. Products whose leading dimensions broadcast in a way C does not support (C
broadcasts only equal batches or a batch of one) are formed by broadcasting the factors with
NumPy first.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native as N
from ._arrays import Handle, as_f32, readonly, tensor_view
from .errors import RangeError, ShapeError

lib = N.lib

ArrayLike = Any


def _new_handle(ptr: int) -> Handle:
    return Handle(ptr, lib.circuits_factored_free)


class FactoredMatrix:
    """A (batch of) matrix ``M = A @ B`` with ``A [..., ldim, mdim]`` and ``B [..., mdim, rdim]``.

    ``FactoredMatrix(A, B)`` copies NumPy factors (float32; leading dimensions broadcast as in
    TransformerLens). ``model.OV`` / ``model.QK`` return ones with leading ``[n_layers,
    n_heads]``. Every property is computed in C; results are NumPy arrays (new memory) except
    :attr:`A`/:attr:`B`, which are read-only zero-copy views of the factors.
    """

    __slots__ = ("_h", "_lead", "_ldim", "_mdim", "_rdim", "_svd", "__weakref__")
    # NumPy operators (ndarray @ FactoredMatrix) defer to our reflected methods
    __array_ufunc__ = None

    def __init__(self, A: ArrayLike, B: ArrayLike):
        A = as_f32(A, "A")
        B = as_f32(B, "B")
        if A.ndim < 2 or B.ndim < 2:
            raise ShapeError("FactoredMatrix needs A [..., l, m] and B [..., m, r]")
        if A.shape[-1] != B.shape[-2]:
            raise ShapeError(f"FactoredMatrix: A's last dimension {A.shape[-1]} != B's second-to-last {B.shape[-2]}")
        lead = tuple(np.broadcast_shapes(A.shape[:-2], B.shape[:-2]))
        A = np.ascontiguousarray(np.broadcast_to(A, lead + A.shape[-2:]))
        B = np.ascontiguousarray(np.broadcast_to(B, lead + B.shape[-2:]))
        batch = math.prod(lead)
        out = ctypes.c_void_p()
        N.check(lib.circuits_factored_create(ctypes.byref(out), A, B, batch, A.shape[-2], A.shape[-1], B.shape[-1]),
                "FactoredMatrix")
        self._init(out.value, lead)

    # -- construction from C objects ---------------------------------------------------------

    @classmethod
    def _from_ptr(cls, ptr: int, lead: Optional[Tuple[int, ...]] = None) -> "FactoredMatrix":
        self = cls.__new__(cls)
        self._init(ptr, lead)
        return self

    def _init(self, ptr: int, lead: Optional[Tuple[int, ...]]) -> None:
        self._h = _new_handle(ptr)
        shape = np.zeros(N.CIRCUITS_MAX_DIMS, np.int64)
        nd = ctypes.c_int32()
        md = ctypes.c_int64()
        N.check(lib.circuits_factored_shape(ptr, shape, ctypes.byref(nd), ctypes.byref(md)))
        s = tuple(int(x) for x in shape[: nd.value])
        # sizes as the C object reports them; every output buffer is sized from these (read-only)
        self._ldim, self._rdim, self._mdim = s[-2], s[-1], int(md.value)
        self._lead = tuple(lead) if lead is not None else s[:-2]
        if math.prod(self._lead) != math.prod(s[:-2]):
            raise ShapeError(f"FactoredMatrix: leading dims {self._lead} do not match the C object's {s[:-2]}")
        self._svd = None

    @property
    def ldim(self) -> int:
        """Rows of M (read-only)."""
        return self._ldim

    @property
    def mdim(self) -> int:
        """The inner dimension of the factors (read-only)."""
        return self._mdim

    @property
    def rdim(self) -> int:
        """Columns of M (read-only)."""
        return self._rdim

    @property
    def _ptr(self) -> int:
        return self._h.ptr  # type: ignore[return-value]

    @property
    def _batch(self) -> int:
        return math.prod(self._lead)

    # -- shape ------------------------------------------------------------------------------

    @property
    def shape(self) -> Tuple[int, ...]:
        """Leading dimensions + (ldim, rdim)."""
        return self._lead + (self.ldim, self.rdim)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def has_leading_dims(self) -> bool:
        return bool(self._lead)

    def __repr__(self) -> str:
        return f"FactoredMatrix: Shape({list(self.shape)}), Hidden Dim({self.mdim})"

    # -- factors ----------------------------------------------------------------------------

    def _factor_views(self) -> Tuple[np.ndarray, np.ndarray]:
        ta, tb = N.Tensor(), N.Tensor()
        N.check(lib.circuits_factored_factors(self._ptr, ctypes.byref(ta), ctypes.byref(tb)))
        a = tensor_view(ta, self._h, readonly=True).reshape(self._lead + (self.ldim, self.mdim))
        b = tensor_view(tb, self._h, readonly=True).reshape(self._lead + (self.mdim, self.rdim))
        return a, b

    @property
    def A(self) -> np.ndarray:
        """The left factor [..., ldim, mdim] (read-only view; keeps this object's memory alive)."""
        return self._factor_views()[0]

    @property
    def B(self) -> np.ndarray:
        """The right factor [..., mdim, rdim] (read-only view)."""
        return self._factor_views()[1]

    @property
    def pair(self) -> Tuple[np.ndarray, np.ndarray]:
        return self._factor_views()

    @property
    def AB(self) -> np.ndarray:
        """The full product [..., ldim, rdim] (materialised: can be large)."""
        return self.materialize()

    def materialize(self, max_elements: Optional[int] = None) -> np.ndarray:
        """A @ B as a dense array, refusing (RangeError) above ``max_elements`` floats."""
        n = self._batch * self.ldim * self.rdim
        if max_elements is None:
            max_elements = n
        out = np.empty(self.shape, np.float32)
        N.check(lib.circuits_factored_materialize(self._ptr, out, max_elements), "materialize")
        return out

    @property
    def BA(self) -> np.ndarray:
        """B @ A [..., mdim, mdim] (needs ldim == rdim)."""
        if self.ldim != self.rdim:
            raise ShapeError(f"BA needs a square matrix (ldim {self.ldim} != rdim {self.rdim})")
        a, b = self._factor_views()
        return np.matmul(b, a)

    @property
    def T(self) -> "FactoredMatrix":
        """The transpose B^T A^T, still factored."""
        out = ctypes.c_void_p()
        N.check(lib.circuits_factored_transpose(self._ptr, ctypes.byref(out)), "transpose")
        return FactoredMatrix._from_ptr(out.value, self._lead)

    # -- spectra ----------------------------------------------------------------------------

    def svd(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thin SVD ``M = U diag(S) V^T`` through the factors: U [..., ldim, k], S [..., k],
        V [..., rdim, k], k = min(ldim, mdim, rdim). (TransformerLens's ``svd()`` returns the
        same triple, with V — not V^T — as its third element.) Cached."""
        if self._svd is None:
            k = min(self.ldim, self.mdim, self.rdim)
            U = np.empty(self._lead + (self.ldim, k), np.float32)
            S = np.empty(self._lead + (k,), np.float32)
            V = np.empty(self._lead + (self.rdim, k), np.float32)
            N.check(lib.circuits_factored_svd(self._ptr, U, S, V), "svd")
            self._svd = (readonly(U), readonly(S), readonly(V))
        return self._svd

    @property
    def U(self) -> np.ndarray:
        return self.svd()[0]

    @property
    def S(self) -> np.ndarray:
        return self.svd()[1]

    @property
    def V(self) -> np.ndarray:
        return self.svd()[2]

    @property
    def Vh(self) -> np.ndarray:
        """Alias of :attr:`V` (TransformerLens's name for the same array)."""
        return self.svd()[2]

    @property
    def eigenvalues(self) -> np.ndarray:
        """The mdim eigenvalues of B @ A (= the non-zero ones of M), complex64 [..., mdim], in
        LAPACK's order (unsorted). Needs ldim == rdim."""
        re = np.empty(self._lead + (self.mdim,), np.float32)
        im = np.empty(self._lead + (self.mdim,), np.float32)
        N.check(lib.circuits_factored_eigenvalues(self._ptr, re, im), "eigenvalues")
        return (re + 1j * im).astype(np.complex64)

    def norm(self) -> Union[np.ndarray, np.float32]:
        """Frobenius norm(s), shape = leading dims (a scalar when there are none)."""
        out = np.empty(max(self._batch, 1), np.float32)
        N.check(lib.circuits_factored_norm(self._ptr, out), "norm")
        return out.reshape(self._lead) if self._lead else out[0]

    def get_corner(self, k: int = 3) -> np.ndarray:
        """The top-left k x k block of every matrix; like TransformerLens's ``get_corner``,
        leading dimensions are cut to their first k entries too."""
        k = int(k)
        k_eff = min(k, self.ldim, self.rdim)
        out = np.empty(self._lead + (k_eff, k_eff), np.float32)
        N.check(lib.circuits_factored_corner(self._ptr, k_eff, out), "get_corner")
        return out[tuple(slice(k) for _ in self._lead)]

    def diagonal(self) -> np.ndarray:
        """The diagonal of every matrix, [..., min(ldim, rdim)]."""
        out = np.empty(self._lead + (min(self.ldim, self.rdim),), np.float32)
        N.check(lib.circuits_factored_diagonal(self._ptr, out), "diagonal")
        return out

    def topk(self, k: int, axis: str = "all", index: Optional[int] = None,
             batch_index: Union[int, Sequence[int]] = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k largest entries, descending, without forming the matrix.

        axis: ``"all"`` (the whole matrix, computed in blocks of rows), ``"row"`` (row
        ``index``) or ``"column"`` (column ``index``). batch_index selects one matrix: an int
        into the flattened leading dims or a tuple of leading indices.
        Returns (values [n], rows [n], cols [n]), n = min(k, number of entries)."""
        axes = {"all": N.CIRCUITS_TOPK_ALL, "row": N.CIRCUITS_TOPK_ROW, "column": N.CIRCUITS_TOPK_COLUMN,
                "col": N.CIRCUITS_TOPK_COLUMN}
        if axis not in axes:
            raise ValueError(f"axis must be 'all', 'row' or 'column', not {axis!r}")
        if axis != "all" and index is None:
            raise ValueError(f"axis={axis!r} needs an index")
        if not isinstance(batch_index, (int, np.integer)):
            batch_index = int(np.ravel_multi_index(tuple(batch_index), self._lead)) if self._lead else 0
        k = int(k)
        if k < 1:
            raise RangeError("topk needs k >= 1")
        # n = min(k, entries): never allocate more than the axis has
        entries = {"all": self.ldim * self.rdim, "row": self.rdim}.get(axis, self.ldim)
        k = min(k, max(entries, 1))
        values = np.empty(k, np.float32)
        rows = np.empty(k, np.int64)
        cols = np.empty(k, np.int64)
        n = ctypes.c_int64()
        N.check(lib.circuits_factored_topk(self._ptr, int(batch_index), axes[axis], int(index or 0), k, values, rows,
                                           cols, ctypes.byref(n)), "topk")
        m = n.value
        return values[:m], rows[:m], cols[:m]

    # -- products ---------------------------------------------------------------------------

    def __matmul__(self, other: Any) -> Union["FactoredMatrix", np.ndarray]:
        if isinstance(other, FactoredMatrix):
            return self._matmul_factored(other)
        X = as_f32(other, "right operand")
        if X.ndim == 1:  # M @ x: a dense vector per matrix
            if X.shape[0] != self.rdim:
                raise _shape(f"M @ x: x has {X.shape[0]} entries, M has {self.rdim} columns")
            y = np.empty(self._lead + (self.ldim,), np.float32)
            N.check(lib.circuits_factored_matvec(self._ptr, X, y), "matvec")
            return y
        if X.shape[-2] != self.rdim:
            raise _shape(f"M @ X: X has {X.shape[-2]} rows, M has {self.rdim} columns")
        xlead = X.shape[:-2]
        lead = tuple(np.broadcast_shapes(self._lead, xlead))
        if lead == self._lead and (xlead == lead or math.prod(xlead) == 1):
            xb = math.prod(xlead) if xlead else 1
            out = ctypes.c_void_p()
            N.check(lib.circuits_factored_matmul_dense(self._ptr, np.ascontiguousarray(X), xb, X.shape[-1],
                                                       ctypes.byref(out)), "matmul")
            return FactoredMatrix._from_ptr(out.value, lead)
        return self._broadcast(lead) @ np.broadcast_to(X, lead + X.shape[-2:])

    def __rmatmul__(self, other: Any) -> Union["FactoredMatrix", np.ndarray]:
        X = as_f32(other, "left operand")
        if X.ndim == 1:  # x @ M
            if X.shape[0] != self.ldim:
                raise _shape(f"x @ M: x has {X.shape[0]} entries, M has {self.ldim} rows")
            y = np.empty(self._lead + (self.rdim,), np.float32)
            N.check(lib.circuits_factored_vecmat(X, self._ptr, y), "vecmat")
            return y
        if X.shape[-1] != self.ldim:
            raise _shape(f"X @ M: X has {X.shape[-1]} columns, M has {self.ldim} rows")
        xlead = X.shape[:-2]
        lead = tuple(np.broadcast_shapes(self._lead, xlead))
        if lead == self._lead and (xlead == lead or math.prod(xlead) == 1):
            xb = math.prod(xlead) if xlead else 1
            out = ctypes.c_void_p()
            N.check(lib.circuits_factored_rmatmul_dense(np.ascontiguousarray(X), xb, X.shape[-2], self._ptr,
                                                        ctypes.byref(out)), "rmatmul")
            return FactoredMatrix._from_ptr(out.value, lead)
        return np.broadcast_to(X, lead + X.shape[-2:]) @ self._broadcast(lead)

    def _matmul_factored(self, other: "FactoredMatrix") -> "FactoredMatrix":
        if self.rdim != other.ldim:
            raise _shape(f"M1 @ M2: inner dimensions {self.rdim} and {other.ldim} differ")
        lead = tuple(np.broadcast_shapes(self._lead, other._lead))
        a, b = self, other
        ok = lambda f: f._lead == lead or f._batch == 1  # noqa: E731
        if not (ok(a) and ok(b)):
            a, b = a._broadcast(lead), b._broadcast(lead)
        out = ctypes.c_void_p()
        N.check(lib.circuits_factored_matmul(a._ptr, b._ptr, ctypes.byref(out)), "matmul")
        return FactoredMatrix._from_ptr(out.value, lead)

    def _broadcast(self, lead: Tuple[int, ...]) -> "FactoredMatrix":
        if lead == self._lead:
            return self
        a, b = self._factor_views()
        return FactoredMatrix(np.broadcast_to(a, lead + a.shape[-2:]), np.broadcast_to(b, lead + b.shape[-2:]))

    def __mul__(self, scalar: float) -> "FactoredMatrix":
        if not np.isscalar(scalar):
            return NotImplemented
        a, b = self._factor_views()
        return FactoredMatrix(a * np.float32(scalar), b)

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> "FactoredMatrix":
        if not np.isscalar(scalar):
            return NotImplemented
        return self * (1.0 / float(scalar))

    # -- indexing and reshaping -------------------------------------------------------------

    def __getitem__(self, idx: Any) -> "FactoredMatrix":
        """Index the leading dimensions (``model.OV[1, 3]`` is head 3 of layer 1); a tuple
        longer than the leading dims also slices rows and columns, as TransformerLens does."""
        if not isinstance(idx, tuple):
            idx = (idx,)
        nl = len(self._lead)
        a, b = self._factor_views()
        lead_idx = idx[:nl]
        rest = idx[nl:]
        a2, b2 = a[lead_idx], b[lead_idx]
        if len(rest) >= 1:
            a2 = a2[..., rest[0], :]
        if len(rest) >= 2:
            b2 = b2[..., :, rest[1]]
        if len(rest) > 2:
            raise IndexError("too many indices for FactoredMatrix")
        return FactoredMatrix(a2, b2)

    def unsqueeze(self, k: int) -> "FactoredMatrix":
        a, b = self._factor_views()
        return FactoredMatrix(np.expand_dims(a, k), np.expand_dims(b, k))

    def collapse_l(self) -> np.ndarray:
        """S V^T [..., k, rdim]: the factorisation with the orthogonal left factor removed."""
        U, S, V = self.svd()
        return S[..., :, None] * np.swapaxes(V, -1, -2)

    def collapse_r(self) -> np.ndarray:
        """U S [..., ldim, k]."""
        U, S, V = self.svd()
        return U * S[..., None, :]

    def make_even(self) -> "FactoredMatrix":
        """The same matrix as (U sqrt(S)) (sqrt(S) V^T): both factors equally scaled."""
        U, S, V = self.svd()
        r = np.sqrt(S)
        return FactoredMatrix(U * r[..., None, :], r[..., :, None] * np.swapaxes(V, -1, -2))


def _shape(msg: str):
    return ShapeError(msg)
