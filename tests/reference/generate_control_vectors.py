#!/usr/bin/env python3
"""Control vectors in llama.cpp's layout, written by the ``gguf`` package (issue 17, section 4).

    /opt/refenv/bin/python tests/reference/generate_control_vectors.py

Writes tests/reference/control_vectors/ with gguf.GGUFWriter exactly as llama.cpp's
tools/cvector-generator lays its files out (export_gguf): general.architecture
"controlvector", controlvector.model_hint (the model's architecture), controlvector.layer_count
(i32, the number of tensors) and one 1-D F32 tensor "direction.N" of n_embd per layer N >= 1
(llama.cpp adds direction.N to the output of block N). Also expected.json: every value, so
that tests/test_steering.c checks what circuits_control_vector_load reads.

  full.gguf     direction.1 .. direction.4 of 16 (a 5-block model), model_hint "llama"
  sparse.gguf   direction.2 and direction.4 only (the others read as zeros), no model_hint
  f16.gguf      direction.1 stored as F16: llama.cpp refuses it (non-F32), so must we
"""

from __future__ import annotations

import importlib.metadata
import json
import os

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "control_vectors")


def write(name: str, directions: dict, model_hint: str | None, dtype=np.float32) -> None:
    w = gguf.GGUFWriter(os.path.join(OUT, name), "controlvector")  # general.architecture
    if model_hint is not None:
        w.add_string("controlvector.model_hint", model_hint)
    w.add_int32("controlvector.layer_count", len(directions))
    for n in sorted(directions):
        w.add_tensor(f"direction.{n}", directions[n].astype(dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(17)
    d = 16
    full = {n: rng.standard_normal(d).astype(np.float32) for n in range(1, 5)}
    sparse = {n: rng.standard_normal(d).astype(np.float32) for n in (2, 4)}
    write("full.gguf", full, "llama")
    write("sparse.gguf", sparse, None)
    write("f16.gguf", {1: full[1]}, "llama", np.float16)
    expected = {
        "gguf_version": importlib.metadata.version("gguf"),
        "files": {
            "full.gguf": {"n_layers": 5, "d_model": d, "model_hint": "llama",
                          "directions": {str(n): [float(x) for x in v] for n, v in full.items()}},
            "sparse.gguf": {"n_layers": 5, "d_model": d, "model_hint": None,
                            "directions": {str(n): [float(x) for x in v] for n, v in sparse.items()}},
        },
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
