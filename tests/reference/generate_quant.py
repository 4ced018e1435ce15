#!/usr/bin/env python3
"""References for the storage types of weights: gguf-py's NumPy dequantizer on chosen blocks.

Run with the reference venv from any directory:

    /opt/refenv/bin/python tests/reference/generate_quant.py

For every type of circuits_dtype (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K) it
builds blocks (random ones, and ones whose fp16 scale fields hold the extremes: +-65504, the
smallest subnormals, +-0, negative scales, +-inf, quiet and signalling NaNs with payloads, two
NaNs at once; payloads all 0x00 and all 0xFF), dequantizes them with
``gguf.quants.dequantize`` (the PyPI ``gguf`` package, llama.cpp's gguf-py) and writes
``quant/<TYPE>.safetensors`` with

* ``raw``: U8, the stored bytes (whole blocks, ggml's layout);
* ``values``: F32, what gguf-py makes of them, bit for bit (NaN payloads included);
* ``block``: I64 [values, bytes] of one block (gguf-py's GGML_QUANT_SIZES);
* ``ggml_type``: I32 [1], the type's ggml number (= circuits_dtype).

The metadata records the type's ggml number, its block (values, bytes) and the versions.
tests/test_quant.c and bindings/python/tests/test_dequantize.py compare libcircuits against
them bit for bit. Deterministic: the same versions give byte-identical files.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "quant")

# type -> byte offsets of its fp16 fields (scales, mins) inside a block
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}

# fp16 bit patterns at the edges: max, -max, smallest and largest subnormals (both signs),
# +-0, a negative scale, +-inf, a quiet NaN, signalling NaNs with payloads, a negative NaN
SPECIAL_HALVES = [0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x03FF, 0x0000, 0x8000, 0xBC00, 0x7C00, 0xFC00,
                  0x7E00, 0x7C01, 0x7D55, 0xFE55]


def normal_halves(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random finite normal halves of either sign, exponents across the whole range."""
    sign = rng.integers(0, 2, n, dtype=np.uint16) << 15
    exp = rng.integers(1, 31, n, dtype=np.uint16) << 10
    man = rng.integers(0, 1024, n, dtype=np.uint16)
    return sign | exp | man


def put_half(block: np.ndarray, off: int, h: int) -> None:
    block[off] = h & 0xFF
    block[off + 1] = h >> 8


def quant_blocks(qt: T, rng: np.random.Generator) -> np.ndarray:
    _, tsize = GGML_QUANT_SIZES[qt]
    fields = HALF_FIELDS[qt]
    blocks = []

    def block(payload: str, halves) -> None:
        if payload == "random":
            b = rng.integers(0, 256, tsize, dtype=np.uint8)
        else:
            b = np.full(tsize, 0x00 if payload == "zeros" else 0xFF, dtype=np.uint8)
        for off, h in zip(fields, halves):
            put_half(b, off, int(h))
        blocks.append(b)

    # random payloads, normal scales of every magnitude
    for _ in range(6):
        block("random", normal_halves(rng, len(fields)))
    # every special value in every field, the other fields rotated through the specials
    ns = len(SPECIAL_HALVES)
    for i in range(ns):
        block("random", [SPECIAL_HALVES[(i + 5 * f) % ns] for f in range(len(fields))])
    if len(fields) == 2:
        # two NaNs with different payloads (which one survives), infinities that cancel,
        # an infinite scale on zero payloads (inf * 0)
        block("random", [0x7E01, 0x7E02])
        block("random", [0x7C00, 0x7C00])
        block("zeros", [0x7C00, 0xFC00])
    else:
        block("zeros", [0x7C00])
    # payloads all 0x00 and all 0xFF with ordinary and extreme scales
    for payload in ("zeros", "ones"):
        block(payload, normal_halves(rng, len(fields)))
        block(payload, [0x7BFF] * len(fields))
        block(payload, [0x8001] * len(fields))
    # a whole random block (any fp16 bits in the fields)
    blocks.append(rng.integers(0, 256, tsize, dtype=np.uint8))
    return np.concatenate(blocks)


def plain_raw(qt: T, rng: np.random.Generator) -> np.ndarray:
    """F32, F16, BF16: random bit patterns (any exponent: NaNs, infinities, subnormals) and the
    edges of each format."""
    if qt == T.F32:
        bits = rng.integers(0, 2**32, 384, dtype=np.uint64).astype("<u4")
        edges = [0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x80000001, 0x007FFFFF, 0, 0x80000000, 0x7F800000,
                 0xFF800000, 0x7FC00000, 0x7F800001, 0x7FAAAAAA, 0xFFC00001, 0x3F800000]
        return np.concatenate([bits, np.array(edges, dtype="<u4")]).view(np.uint8)
    bits = rng.integers(0, 2**16, 512, dtype=np.uint32).astype("<u2")
    if qt == T.F16:
        edges = SPECIAL_HALVES + [0x3C00, 0x0400]
    else:  # BF16
        edges = [0x7F7F, 0xFF7F, 0x0001, 0x8001, 0x007F, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81,
                 0xFFC1, 0x3F80]
    return np.concatenate([bits, np.array(edges, dtype="<u2")]).view(np.uint8)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    types = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K,
             T.Q5_K, T.Q6_K]
    total = 0
    for qt in types:
        rng = np.random.default_rng(1000 + int(qt))
        raw = plain_raw(qt, rng) if qt in (T.F32, T.F16, T.BF16) else quant_blocks(qt, rng)
        bvals, bbytes = GGML_QUANT_SIZES[qt]
        assert raw.size % bbytes == 0
        with np.errstate(all="ignore"):
            values = dequantize(raw.copy(), qt)
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        assert values.size == raw.size // bbytes * bvals
        path = os.path.join(OUT, f"{qt.name}.safetensors")
        meta = {"type": qt.name, "ggml_type": str(int(qt)), "block_values": str(bvals),
                "block_bytes": str(bbytes), "gguf": gguf.__version__ if hasattr(gguf, "__version__")
                else _gguf_version(), "numpy": np.__version__}
        block = np.array([bvals, bbytes], dtype=np.int64)
        ggml_type = np.array([int(qt)], dtype=np.int32)
        save_file({"raw": raw, "values": values, "block": block, "ggml_type": ggml_type}, path, metadata=meta)
        size = os.path.getsize(path)
        total += size
        print(f"{qt.name:5} {raw.size // bbytes:4} blocks {values.size:6} values "
              f"{int(np.isnan(values).sum()):5} NaN {size:7} bytes")
    print(f"total {total} bytes")


def _gguf_version() -> str:
    from importlib.metadata import version
    return version("gguf")


if __name__ == "__main__":
    sys.exit(main())
