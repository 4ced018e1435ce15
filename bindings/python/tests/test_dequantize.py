"""circuits.dequantize / dtype_block / dtype_name against the committed references of
tests/reference/quant/ (gguf-py's NumPy dequantizer, generate_quant.py): every storage type,
bit for bit, NaN payloads included; and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

import circuits
from circuits import _native as N
import safetensors_np
from conftest import REPO

QUANT = REPO / "tests" / "reference" / "quant"
NAMES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def test_every_type_has_a_reference():
    assert sorted(p.stem for p in QUANT.glob("*.safetensors")) == sorted(NAMES)
    assert sorted(circuits.quant.DTYPES) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_bit_identical_to_gguf_py(name):
    ref = safetensors_np.load(str(QUANT / f"{name}.safetensors"))
    raw, want = ref["raw"], ref["values"]
    code = int(ref["ggml_type"][0])
    assert circuits.quant.DTYPES[name] == code
    assert circuits.dtype_name(code) == name
    assert circuits.dtype_block(name) == tuple(int(v) for v in ref["block"])
    for dtype in (name, name.lower(), code):
        got = circuits.dequantize(dtype, raw)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), name
    # bytes, an explicit n, a 2-D array of rows: the same bits
    got = circuits.dequantize(name, raw.tobytes(), want.size)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    bv, bb = circuits.dtype_block(name)
    blocks = raw.reshape(-1, bb)
    got = circuits.dequantize(name, blocks[::-1].copy())
    assert np.array_equal(got.view(np.uint32), want.reshape(-1, bv)[::-1].reshape(-1).view(np.uint32))


def test_refusals():
    with pytest.raises(circuits.DtypeError, match="not a circuits_dtype"):
        circuits.dequantize(4, bytes(18))
    with pytest.raises(circuits.DtypeError, match="unknown storage type 'Q9_K'"):
        circuits.dequantize("Q9_K", bytes(18))
    with pytest.raises(TypeError):
        circuits.dequantize(2.0, bytes(18))
    with pytest.raises(circuits.ShapeError, match="32 Q8_0 values take 34 bytes, not 33"):
        circuits.dequantize("Q8_0", bytes(33))
    with pytest.raises(circuits.ShapeError, match="100 values are not whole Q4_K blocks of 256"):
        circuits.dequantize("Q4_K", bytes(144), 100)
    with pytest.raises(circuits.ShapeError, match="512 Q4_K values take 288 bytes, not 144"):
        circuits.dequantize("Q4_K", bytes(144), 512)
    with pytest.raises(ValueError):
        circuits.dequantize("F16", bytes(4), -2)
    with pytest.raises(circuits.DtypeError):
        circuits.dtype_block("nope")
    assert circuits.dtype_name(4) is None
    assert circuits.dequantize("Q6_K", b"").shape == (0,)
    assert N.lib.circuits_dequantize(N.CIRCUITS_DTYPE_F16, None, 4, None, 2) == N.CIRCUITS_E_INVALID_ARGUMENT
