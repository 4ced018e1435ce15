"""Storage types of weights (GGUF's quantized blocks, F16, BF16, F32) and their dequantization.

    import circuits
    values = circuits.dequantize("Q4_K", raw_bytes)          # np.float32, 256 values per 144 bytes
    circuits.dtype_block("Q8_0")                             # (32, 34)

The values are bit-identical to the gguf package's NumPy dequantizer (llama.cpp's gguf-py,
``gguf.quants.dequantize``), NaN payloads included: it is libcircuits's
``circuits_dequantize``. Types are named as gguf-py names them ("Q4_K", "BF16", ...) or given by
their ggml number (``circuits_dtype``, = ``gguf.GGMLQuantizationType``).
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from . import _native as N
from .errors import DtypeError

lib = N.lib

__all__ = ["dequantize", "dtype_block", "dtype_name", "DTYPES"]

#: name -> ggml number, for every storage type libcircuits reads (circuits_dtype).
DTYPES: Dict[str, int] = {
    name[len("CIRCUITS_DTYPE_"):]: value for name, value in vars(N).items() if name.startswith("CIRCUITS_DTYPE_")
}


def _code(dtype: Union[str, int]) -> int:
    if isinstance(dtype, str):
        code = DTYPES.get(dtype.upper())
        if code is None:
            raise DtypeError(f"unknown storage type {dtype!r}; known: {', '.join(sorted(DTYPES, key=DTYPES.get))}")
        return code
    if isinstance(dtype, (bool, np.bool_)) or not isinstance(dtype, (int, np.integer)):
        raise TypeError(f"dtype must be a name such as 'Q4_K' or a ggml type number, got {type(dtype).__name__}")
    return int(dtype)  # a number the library does not know is refused by it (DtypeError)


def dtype_name(dtype: Union[str, int]) -> Optional[str]:
    """The name of a storage type ("Q4_K" for 12); None for a number that is not one."""
    name = lib.circuits_dtype_name(_code(dtype))
    return None if name is None else name.decode()


def dtype_block(dtype: Union[str, int]) -> Tuple[int, int]:
    """(values, bytes) of one block of a storage type: (256, 144) for Q4_K, (1, 2) for F16."""
    values, nbytes = ctypes.c_int64(0), ctypes.c_size_t(0)
    N.check(lib.circuits_dtype_block(_code(dtype), ctypes.byref(values), ctypes.byref(nbytes)))
    return int(values.value), int(nbytes.value)


def dequantize(dtype: Union[str, int], data: Any, n: Optional[int] = None) -> np.ndarray:
    """The values stored in ``data`` as ``dtype``, as a new 1-D float32 array.

    data: bytes, bytearray, memoryview or any NumPy array holding whole blocks (its raw bytes
    are read, C order; a GGUF tensor's data as gguf-py's reader returns it works as is). n: the
    number of values (default: what the bytes hold); it must be a multiple of the block and
    the bytes exactly its size (ShapeError otherwise)."""
    code = _code(dtype)
    if isinstance(data, np.ndarray):
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        raw = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    bv, bb = dtype_block(code)
    if n is None:
        n = -(-raw.size // bb) * bv  # a partial block: the library names the size it needs
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    n = int(n)
    # The output is allocated only for an n that the bytes hold (so at most 4 bytes per value
    # of the input's); any other n gets an empty buffer and the library's refusal, which
    # comes before any write.
    fits = n % bv == 0 and n // bv * bb == raw.size
    out = np.empty(n if fits else 0, dtype=np.float32)
    src = raw.ctypes.data if raw.size else None
    N.check(lib.circuits_dequantize(code, src, raw.size, out, n))
    return out
