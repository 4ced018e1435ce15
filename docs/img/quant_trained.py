#!/usr/bin/env python3
"""docs/quantization.md, "A trained model": quantization as an intervention on the bundled
induction-head model (examples/models/attn-only-2l, trained on the King James Bible's bytes).

Every weight matrix of the model is rounded through a GGUF block type with gguf-py's own
quantizer and dequantizer (gguf.quants.quantize / dequantize: blocks of 32 along the contracted
dimension, as llama.cpp stores a matrix), and the rounded model, written as a TransformerLens-layout
copy in a temporary directory, is compared with the original by circuits.diff on a repeated
sentence. Printed: the relative error at a few hook points (the patterns also per head), and the
mean loss on the first and the repeated half (induction predicts the repeat). Nothing is written to the repository.

    /opt/refenv/bin/python docs/img/quant_trained.py [BUILD_DIR]     (default: build)
"""
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build").resolve()
os.environ.setdefault("CIRCUITS_LIBRARY", str(BUILD / "lib" / "libcircuits.so.0"))
sys.path.insert(0, str(REPO / "bindings" / "python"))

import circuits  # noqa: E402
import gguf  # noqa: E402
import numpy as np  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

MODEL = REPO / "examples" / "models" / "attn-only-2l"
TYPES = ["Q8_0", "Q5_0", "Q4_0"]
TEXT = b"In the beginning God created the heaven and the earth. And the earth was without form, and void. "
NO_PROCESSING = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)


def contracted_axis(name, ndim):
    """The axis a weight is summed over in its product (llama.cpp's rows run along it)."""
    if name.endswith(("W_Q", "W_K", "W_V")):
        return 1  # [heads, d_model, d_head]
    if name.endswith("W_O"):
        return 1  # [heads, d_head, d_model]
    if name.endswith(("W_E", "W_pos")):
        return ndim - 1  # [rows, d_model]: a row per token / position
    return 0  # W_U [d_model, d_vocab] and the like: x @ W


def rounded(w, name, qtype):
    ax = contracted_axis(name, w.ndim)
    moved = np.moveaxis(w, ax, -1)
    rows = np.ascontiguousarray(moved.reshape(-1, moved.shape[-1]), dtype=np.float32)
    t = gguf.GGMLQuantizationType[qtype]
    back = dequantize(quantize(rows, t), t).reshape(moved.shape)
    return np.ascontiguousarray(np.moveaxis(back, -1, ax), dtype=np.float32)


def halves_loss(model, tokens):
    ptl = model(tokens, return_type="loss", loss_per_token=True)[0]
    n = (len(tokens[0]) - 1) // 2
    return float(ptl[:n].mean()), float(ptl[n:].mean())


def main():
    tmp = Path(tempfile.mkdtemp(prefix="quant_trained_"))
    weights = load_file(str(MODEL / "model.safetensors"))
    a = circuits.Model.from_pretrained(str(MODEL), **NO_PROCESSING)
    tokens = np.frombuffer(TEXT + TEXT, dtype=np.uint8).astype(np.int64)[None]
    first, repeat = halves_loss(a, tokens)
    print(f"F32: loss {first:.3f} on the first half, {repeat:.3f} on the repeat")
    names = ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.1.hook_resid_post", "logits"]
    print(f"{'type':6} " + " ".join(f"{n:>28}" for n in names) + f" {'loss first':>10} {'loss repeat':>11}")
    for q in TYPES:
        d = tmp / q
        d.mkdir()
        shutil.copy(MODEL / "tl_config.json", d)
        save_file({k: rounded(v, k, q) if "W_" in k and v.ndim >= 2 else v for k, v in weights.items()},
                  str(d / "model.safetensors"))
        b = circuits.Model.from_pretrained(str(d), **NO_PROCESSING)
        r = a.diff(b, tokens, per_head=True)
        f, rep = halves_loss(b, tokens)
        print(f"{q:6} " + " ".join(f"{r.get(n)['rel_error']:28.2e}" for n in names) + f" {f:10.3f} {rep:11.3f}")
        for n in names[:2]:
            print(f"       {n} per head: " + "  ".join(f"H{h} {v:.2e}" for h, v in enumerate(r.heads(n))))
        b.close()
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
