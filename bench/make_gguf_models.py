#!/usr/bin/env python3
"""The GGUF models bench/gguf.py measures: Llama-shaped, random weights, never in the repo.

    /opt/refenv/bin/python bench/make_gguf_models.py [OUT_DIR] [--which small,7b] [--tiny]

OUT_DIR defaults to /tmp/circuits-bench-gguf (the files are GB: keep them out of the repo).
Writes, skipping any file already there:

  llama1b-f16.gguf     TinyLlama-1.1B shapes (d_model 2048, 22 layers, 32 query heads, 4 K/V
                       heads, d_mlp 5632, vocab 32000, n_ctx 2048), N(0, 0.02) weights in F16,
                       written with gguf-py's GGUFWriter (2.2 GB)
  llama1b-q8_0.gguf    that file quantized by llama.cpp itself (llama_model_quantize, MOSTLY_Q8_0)
  llama1b-q4_k_m.gguf  the same, MOSTLY_Q4_K_M (Q4_K, with Q6_K for output and some attn_v/ffn_down)
  llama7b-q4_k.gguf    LLaMA-2-7B shapes (d_model 4096, 32 layers, 32 heads, d_mlp 11008, vocab
                       32000, n_ctx 4096), every matrix written directly as Q4_K random blocks
                       (3.8 GB): 6.7e9 F32 values first would take 27 GB

--tiny writes the same four files with small shapes (d_model 256, 2 layers) under OUT_DIR/tiny,
for checking the harness in seconds.

The metadata keys and tensor names are those llama.cpp's converter writes for LlamaForCausalLM
(conversion/llama.py, conversion/base.py TextModel.set_gguf_parameters, gguf-py constants.py):
general.architecture "llama", llama.{context_length, embedding_length, block_count,
feed_forward_length, rope.dimension_count, attention.head_count, attention.head_count_kv,
attention.layer_norm_rms_epsilon, rope.freq_base, vocab_size}, general.file_type; tensors
token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up,
ffn_down}, output_norm, output. The Q/K rows of a converted checkpoint are permuted for
llama.cpp's rotary; random weights have no source order to permute, so none is applied (every
engine reads the same file: the comparison stays like with like).

A tokenizer is in the metadata because llama.cpp refuses a model without one: a minimal
SentencePiece ("llama") vocabulary: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>
(type BYTE), then "▁t{i}" normal pieces up to the vocabulary size.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

import numpy as np

# the sibling bench/gguf.py would shadow gguf-py's package while bench/ is on sys.path (as it is
# for this script): take bench/ off first, as gguf.py does
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
import gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402

DEFAULT_OUT = "/tmp/circuits-bench-gguf"

SHAPES = {
    # TinyLlama-1.1B (Llama 2 architecture, GQA 32/4)
    "small": dict(d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4, d_mlp=5632, d_vocab=32000, n_ctx=2048),
    # LLaMA 2 7B
    "7b": dict(d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_mlp=11008, d_vocab=32000, n_ctx=4096),
}
TINY = {
    "small": dict(d_model=256, n_layers=2, n_heads=8, n_kv_heads=2, d_mlp=512, d_vocab=1024, n_ctx=1024),
    "7b": dict(d_model=256, n_layers=2, n_heads=8, n_kv_heads=8, d_mlp=768, d_vocab=1024, n_ctx=1024),
}

Q4_K_BLOCK = 256  # values per block
Q4_K_BYTES = 144  # fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles


def tensor_list(s):
    """(name, [rows, cols]) of every tensor in llama.cpp's order; rows = output features (the
    numpy shape; GGUF's ne is reversed)."""
    d, dh = s["d_model"], s["d_model"] // s["n_heads"]
    kv = s["n_kv_heads"] * dh
    out = [("token_embd.weight", [s["d_vocab"], d])]
    for L in range(s["n_layers"]):
        b = f"blk.{L}."
        out += [(b + "attn_norm.weight", [d]), (b + "attn_q.weight", [d, d]), (b + "attn_k.weight", [kv, d]),
                (b + "attn_v.weight", [kv, d]), (b + "attn_output.weight", [d, d]), (b + "ffn_norm.weight", [d]),
                (b + "ffn_gate.weight", [s["d_mlp"], d]), (b + "ffn_up.weight", [s["d_mlp"], d]),
                (b + "ffn_down.weight", [d, s["d_mlp"]])]
    out += [("output_norm.weight", [d]), ("output.weight", [s["d_vocab"], d])]
    return out


def add_metadata(w: gguf.GGUFWriter, s, name: str, file_type: int) -> None:
    w.add_name(name)
    w.add_context_length(s["n_ctx"])
    w.add_embedding_length(s["d_model"])
    w.add_block_count(s["n_layers"])
    w.add_feed_forward_length(s["d_mlp"])
    w.add_head_count(s["n_heads"])
    w.add_head_count_kv(s["n_kv_heads"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(file_type)
    w.add_vocab_size(s["d_vocab"])
    w.add_rope_dimension_count(s["d_model"] // s["n_heads"])
    # the minimal SentencePiece vocabulary (see the module doc)
    n = s["d_vocab"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    tokens += [f"\u2581t{i}" for i in range(n - len(tokens))]
    types += [gguf.TokenType.NORMAL] * (n - len(types))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def write_streamed(path: str, s, name: str, file_type: int, infos, make) -> None:
    """Writes the file tensor by tensor (never the whole model in memory): infos is
    [(tensor name, numpy shape, numpy dtype, nbytes, raw ggml type or None)], make(i) returns
    tensor i's array. Written to path + '.part' and renamed, so a killed run leaves no file that
    looks complete."""
    w = gguf.GGUFWriter(path + ".part", "llama")
    add_metadata(w, s, name, file_type)
    for tname, shape, dt, nbytes, raw in infos:
        w.add_tensor_info(tname, shape, np.dtype(dt), nbytes, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i in range(len(infos)):
        w.write_tensor_data(make(i))
    w.close()
    os.replace(path + ".part", path)


def write_f16(path: str, s, seed: int) -> None:
    """Random N(0, 0.02) matrices in F16, norm weights 1 + N(0, 0.02) in F32 (llama.cpp keeps
    1-d tensors in F32)."""
    tl = tensor_list(s)
    infos = []
    for tname, shape in tl:
        n = int(np.prod(shape))
        if len(shape) == 1:
            infos.append((tname, shape, np.float32, 4 * n, None))
        else:
            infos.append((tname, shape, np.float16, 2 * n, None))

    def make(i):
        tname, shape = tl[i]
        rng = np.random.default_rng([seed, i])
        a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        if len(shape) == 1:
            return a + np.float32(1)
        return a.astype(np.float16)

    write_streamed(path, s, "bench-llama-random-f16", gguf.LlamaFileType.MOSTLY_F16, infos, make)


def q4k_blocks(rng, rows: int, cols: int) -> np.ndarray:
    """rows x (cols / 256) random Q4_K blocks as bytes [rows, cols / 256 * 144]. A value is
    d * sc * q - dmin * m with q in [0, 16), sc and m in [0, 64) (random 6-bit fields); with
    dmin = 7.5 d its mean is ~0 (E[sc q] = 31.5 * 7.5 = E[m] * 7.5) and its spread ~200 d, so
    d ~ U(0.5, 1.5) * 1e-4 gives weights of std ~0.02, as the F16 model's."""
    nb = cols // Q4_K_BLOCK
    raw = np.frombuffer(rng.bytes(rows * nb * Q4_K_BYTES), np.uint8).reshape(rows, nb, Q4_K_BYTES).copy()
    d = (rng.random((rows, nb), dtype=np.float32) + np.float32(0.5)) * np.float32(1e-4)
    raw[:, :, 0:2] = d.astype(np.float16).view(np.uint8).reshape(rows, nb, 2)
    raw[:, :, 2:4] = (d * np.float32(7.5)).astype(np.float16).view(np.uint8).reshape(rows, nb, 2)
    return raw.reshape(rows, nb * Q4_K_BYTES)


def write_q4k(path: str, s, seed: int) -> None:
    tl = tensor_list(s)
    infos = []
    for tname, shape in tl:
        if len(shape) == 1:
            infos.append((tname, shape, np.float32, 4 * shape[0], None))
        else:
            rows, cols = shape
            assert cols % Q4_K_BLOCK == 0, (tname, shape)
            byte_shape = [rows, cols // Q4_K_BLOCK * Q4_K_BYTES]
            infos.append((tname, byte_shape, np.uint8, rows * byte_shape[1], QT.Q4_K))

    def make(i):
        tname, shape = tl[i]
        rng = np.random.default_rng([seed, i])
        if len(shape) == 1:
            return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02) + np.float32(1)
        return q4k_blocks(rng, *shape)

    write_streamed(path, s, "bench-llama-7b-random-q4_k", gguf.LlamaFileType.MOSTLY_Q4_K_S, infos, make)


def quantize(src: str, dst: str, ftype_name: str, threads: int) -> None:
    """llama.cpp's own quantizer (llama-cpp-python's binding of llama_model_quantize)."""
    import llama_cpp
    llama_cpp.llama_backend_init()
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = getattr(llama_cpp, ftype_name)
    p.nthread = threads
    rc = llama_cpp.llama_model_quantize(src.encode(), (dst + ".part").encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {dst}, {ftype_name}) returned {rc}")
    os.replace(dst + ".part", dst)


def files(out: str):
    """{key: path} of the files this script makes (bench/gguf.py reads the same names)."""
    return {"f16": os.path.join(out, "llama1b-f16.gguf"), "q8_0": os.path.join(out, "llama1b-q8_0.gguf"),
            "q4_k_m": os.path.join(out, "llama1b-q4_k_m.gguf"), "7b_q4_k": os.path.join(out, "llama7b-q4_k.gguf")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=DEFAULT_OUT)
    ap.add_argument("--which", default="small,7b", help="comma list of: small (F16 + Q8_0 + Q4_K_M), 7b")
    ap.add_argument("--tiny", action="store_true", help="small shapes under OUT/tiny, for checking the harness")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = os.path.join(a.out, "tiny") if a.tiny else a.out
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.abspath(out).startswith(os.path.dirname(here) + os.sep):
        ap.error(f"{out} is inside the repository: these files are GB, write them elsewhere")
    os.makedirs(out, exist_ok=True)
    shapes = TINY if a.tiny else SHAPES
    f = files(out)
    which = set(a.which.split(","))

    def step(path, what, fn):
        if os.path.exists(path):
            print(f"{path}: exists, kept", flush=True)
            return
        t0 = time.time()
        fn()
        print(f"{path}: {what}, {os.path.getsize(path) / 1e9:.3f} GB in {time.time() - t0:.0f} s", flush=True)

    if "small" in which:
        s = shapes["small"]
        step(f["f16"], "F16 random", lambda: write_f16(f["f16"], s, a.seed))
        step(f["q8_0"], "llama.cpp Q8_0", lambda: quantize(f["f16"], f["q8_0"], "LLAMA_FTYPE_MOSTLY_Q8_0", a.threads))
        step(f["q4_k_m"], "llama.cpp Q4_K_M",
             lambda: quantize(f["f16"], f["q4_k_m"], "LLAMA_FTYPE_MOSTLY_Q4_K_M", a.threads))
    if "7b" in which:
        step(f["7b_q4_k"], "Q4_K random blocks", lambda: write_q4k(f["7b_q4_k"], shapes["7b"], a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
