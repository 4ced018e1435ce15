#!/usr/bin/env python3
"""Quantized GGUF files for keep_stored_dtype (tests/test_stored.c).

For each case with an F32 GGUF (tests/reference/cases/<case>/model.f32.gguf, written by
generate_gguf_f32.py with llama.cpp's converter: llama's permuted q/k rows, GPT-NeoX's fused
qkv, ...), writes <case>/model.mixed.gguf: the same metadata and tensors, with each weight
matrix stored in a type chosen by its role so that one small file holds several of ggml's
types (the block-32 ones: the cases' rows are 16 to 64 wide, too narrow for the 256-value
K-quants), quantized by the gguf package's NumPy quantizer:

  token_embd Q8_0   attn_q Q4_0   attn_k Q5_1   attn_v Q4_1   attn_output Q5_0
  attn_qkv Q8_0     ffn_up Q8_0   ffn_gate BF16 ffn_down Q4_0 output F16

A matrix whose rows are not whole blocks is stored F16; vectors stay F32. test_stored loads
each file as fp32 (every tensor dequantized at load) and with keep_stored_dtype (kept as
stored) and compares every hook point: the dequantized values are the same, so only fp32
rounding separates them.

Run with the reference environment:
  /opt/refenv/bin/python tests/reference/generate_gguf_stored.py
"""
from pathlib import Path

import gguf
import numpy as np
from gguf import quants

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
Q = gguf.GGMLQuantizationType

ROLE = {
    "token_embd": Q.Q8_0, "attn_q": Q.Q4_0, "attn_k": Q.Q5_1, "attn_v": Q.Q4_1, "attn_output": Q.Q5_0,
    "attn_qkv": Q.Q8_0, "ffn_up": Q.Q8_0, "ffn_gate": Q.BF16, "ffn_down": Q.Q4_0, "output": Q.F16,
}


def role(name: str) -> str:
    parts = name.split(".")
    return parts[2] if parts[0] == "blk" else parts[0]


def target(name: str, data: np.ndarray) -> Q:
    if data.ndim != 2 or name.endswith(".bias"):
        return Q.F32
    t = ROLE.get(role(name), Q.F16)
    block = gguf.GGML_QUANT_SIZES[t][0]
    return t if data.shape[-1] % block == 0 else Q.F16


def convert(src: Path, dst: Path) -> None:
    reader = gguf.GGUFReader(src)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        assert t.tensor_type == Q.F32, (src, t.name, t.tensor_type)
        data = np.array(t.data, dtype=np.float32)
        q = target(t.name, data)
        raw = data if q == Q.F32 else quants.quantize(data, q)
        writer.add_tensor(t.name, raw, raw_shape=raw.shape, raw_dtype=q)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    for src in sorted(CASES.glob("*/model.f32.gguf")):
        dst = src.with_name("model.mixed.gguf")
        convert(src, dst)
        print(f"{dst.relative_to(HERE)}: {dst.stat().st_size} bytes")


if __name__ == "__main__":
    main()
