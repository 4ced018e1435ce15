#!/usr/bin/env python3
"""The F32 GGUF conversions (tests/reference/gguf/, generate_gguf_f32.py) run by llama.cpp
(llama-cpp-python) and by libcircuits: the largest logit difference per file, printed (the figure
docs/loading.md quotes; not a test: CI has no llama.cpp).

  CIRCUITS_LIBRARY=build/lib/libcircuits.so.0 /opt/refenv/bin/python tests/reference/compare_gguf_f32_llama_cpp.py
"""
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "bindings" / "python"))
os.environ.setdefault("CIRCUITS_LIBRARY", str(HERE.parent.parent / "build" / "lib" / "libcircuits.so.0"))
import circuits  # noqa: E402
from llama_cpp import Llama  # noqa: E402

TOKENS = [1, 5, 9, 3, 7, 2, 11, 4, 6, 8, 10, 12]


def main():
    for f in sorted((HERE / "gguf").glob("*.f32.gguf")):
        try:
            llm = Llama(str(f), logits_all=True, n_threads=2, verbose=False, n_ctx=64)
            llm.eval(TOKENS)
        except Exception as e:  # llama.cpp has no GPT-J
            print(f"{f.name:30s} llama.cpp cannot run it: {e}")
            continue
        ref = np.array(llm.scores[: len(TOKENS)])
        with circuits.Model.from_pretrained_no_processing(str(f)) as m:
            ours = m(np.array([TOKENS]))[0]
        print(f"{f.name:30s} max |libcircuits - llama.cpp| {np.abs(ours - ref).max():.2e}"
              f"  (largest logit {np.abs(ref).max():.2f})")


if __name__ == "__main__":
    main()
