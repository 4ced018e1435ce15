#!/usr/bin/env python3
"""The pictures and numbers of docs/quantization.md, "Quantization as an intervention".

Builds a random Llama-shaped model with transformers (seeded; nothing is downloaded), converts it
to an F32 GGUF file with llama.cpp's own converter (tests/reference/generate_gguf_f32.py's
convert), quantizes that file with llama.cpp (llama-cpp-python's llama_model_quantize) to Q8_0,
Q4_0, Q4_K_M and Q2_K, and runs `circuits diff F32 QUANT` on each: the JSON of every run is
summarised on stdout (the table in the doc), and the Q4_K_M run draws docs/img/quant-diff-q4_k_m.png.
The peer: llama.cpp runs the same two files on the same tokens, and its logits' relative error
between them is printed next to ours (llama.cpp also rounds activations to 8 bits for its
quantized products, so its error is a little larger). The model files live in a temporary
directory; only the PNG is kept.

    /opt/refenv/bin/python docs/img/quant_diff.py [BUILD_DIR]     (default: build)
"""
import ctypes
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "reference"))

import generate_gguf_f32 as g  # noqa: E402  (llama.cpp's converter, with the minimal vocabulary)
import llama_cpp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

# K-quants need rows of 256 values: every matrix's input dimension is a multiple of 256
CONFIG = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=8, num_attention_heads=4,
              num_key_value_heads=4, head_dim=64, vocab_size=512, max_position_embeddings=256,
              rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
QUANTS = ["Q8_0", "Q4_0", "Q4_K_M", "Q2_K"]
PICTURE = "Q4_K_M"
SEQ = 64


def quiet_llama():
    """llama.cpp's log lines through llama-cpp-python's logger fail to decode some bytes: drop them."""
    cb = llama_cpp.llama_log_callback(lambda level, text, user: None)
    llama_cpp.llama_log_set(cb, ctypes.c_void_p(0))
    return cb  # kept alive by the caller


def llama_logits(path, tokens):
    m = llama_cpp.Llama(str(path), logits_all=True, n_threads=2, n_ctx=len(tokens), verbose=False)
    m.eval(tokens)
    out = np.array(m.scores[: len(tokens)], dtype=np.float64)
    m.close()
    return out


def rel(a, b):
    return float(np.linalg.norm(b - a) / np.linalg.norm(a))


def main():
    keep = quiet_llama()
    build = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "build").resolve()
    cli = build / "examples" / "circuits"
    tmp = Path(tempfile.mkdtemp(prefix="quant_diff_"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()
    model.save_pretrained(tmp / "model")
    g.CASES = g.GGUF_DIR = tmp
    f32 = g.convert("model")
    files = {"F32": f32}
    for q in QUANTS:
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{q}")
        p.nthread = 2
        out = tmp / f"model.{q.lower()}.gguf"
        if llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(), ctypes.byref(p)) != 0:
            raise SystemExit(f"quantizing to {q} failed")
        files[q] = out
    ids = [int(t) for t in np.random.default_rng(0).integers(3, CONFIG["vocab_size"], SEQ)]
    tokens = ",".join(map(str, ids))
    peer_f32 = llama_logits(f32, ids)
    print(f"{'file':8} {'MB':>6}  {'resid_post L0':>13} {'resid_post L7':>13} {'logits rel':>10} {'logits cos':>10}"
          f" {'llama.cpp logits rel':>20}")
    for q in QUANTS:
        # relative names: the chart's title is "model.f32.gguf vs model.q4_k_m.gguf"
        args = [str(cli), "diff", str(f32.relative_to(tmp)), files[q].name, "--tokens", tokens, "--json"]
        if q == PICTURE:
            args += ["--png", str(REPO / "docs" / "img" / f"quant-diff-{q.lower()}.png")]
        d = json.loads(subprocess.run(args, check=True, capture_output=True, text=True, cwd=tmp).stdout)
        e = {x["name"]: x for x in d["entries"]}
        last = CONFIG["num_hidden_layers"] - 1
        print(f"{q:8} {files[q].stat().st_size / 1e6:6.2f}  {e['blocks.0.hook_resid_post']['rel_error']:13.2e} "
              f"{e[f'blocks.{last}.hook_resid_post']['rel_error']:13.2e} {e['logits']['rel_error']:10.2e} "
              f"{e['logits']['cosine']:10.6f} {rel(peer_f32, llama_logits(files[q], ids)):20.2e}")
    print(f"F32      {f32.stat().st_size / 1e6:6.2f}")
    if PICTURE in files:
        args = [str(cli), "diff", str(f32.relative_to(tmp)), files[PICTURE].name, "--tokens", tokens]
        print(subprocess.run(args, check=True, capture_output=True, text=True, cwd=tmp).stdout)
    del keep
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
