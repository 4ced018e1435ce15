#!/usr/bin/env python3
"""F32 GGUF files of the Hugging Face reference cases, written the way llama.cpp writes them.

For each case directory tests/reference/cases/<case> (a transformers model: config.json +
model.safetensors), writes tests/reference/gguf/<case>.f32.gguf (not into the case directory,
whose loads would then find the file's vocabulary as the directory's tokenizer):

  - with llama.cpp's own converter (convert_hf_to_gguf.py's model classes, from the vendored
    llama.cpp: tensor renaming, the llama q/k permutation, Gemma's norm + 1, GPT-2's transposes,
    GPT-NeoX's q/k/v regrouping, the metadata keys) for every family it converts;
  - with the gguf package's GGUFWriter and its tensor_mapping names for GPT-J (llama.cpp has no
    GPT-J converter).

The case directories have no tokenizer, so the converter's set_vocab is replaced by a minimal
byte-level BPE vocabulary of the model's size (tokens and one merge): only the vocabulary is
made up; every tensor goes through llama.cpp's conversion code.

Run with the reference environment:
  LLAMA_CPP=/work/llama_sdist/llama_cpp_python-0.3.36/vendor/llama.cpp \\
    /opt/refenv/bin/python tests/reference/generate_gguf_f32.py
"""
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
LLAMA_CPP = Path(os.environ.get("LLAMA_CPP", "/work/llama_sdist/llama_cpp_python-0.3.36/vendor/llama.cpp"))
sys.path.insert(0, str(LLAMA_CPP / "gguf-py"))
sys.path.insert(0, str(LLAMA_CPP))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import gguf  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

# the cases llama.cpp's converter handles, and GPT-J (GGUFWriter)
CONVERTED = ["hf_llama_gqa", "hf_mistral_window", "hf_qwen2_bias", "hf_gemma", "hf_gemma2", "hf_neox",
             "hf_tiny_random_gpt2"]
WRITTEN = ["hf_gptj"]
GGUF_DIR = HERE / "gguf"


def tokens_for(n):
    """n distinct tokens: "a", "b", "ab" (one merge, as llama.cpp's BPE vocabulary needs merges),
    then single characters."""
    toks = ["a", "b", "ab"]
    c = 0x100
    while len(toks) < n:
        toks.append(chr(c))
        c += 1
    return toks[:n]


def write_minimal_vocab(writer, n_vocab):
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens_for(n_vocab))
    writer.add_token_types([gguf.TokenType.NORMAL] * n_vocab)
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)


def convert(case):
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    d = CASES / case
    out = GGUF_DIR / f"{case}.f32.gguf"
    hparams = ModelBase.load_hparams(d, False)
    arch = get_model_architecture(hparams, ModelType.TEXT)
    cls = get_model_class(arch, mmproj=False)

    def set_vocab(self):
        write_minimal_vocab(self.gguf_writer, self.hparams["vocab_size"])

    patched = type(cls.__name__ + "MinimalVocab", (cls,), {"set_vocab": set_vocab, "model_arch": cls.model_arch})
    with torch.inference_mode():
        model = patched(d, gguf.LlamaFileType.ALL_F32, out, eager=True)
        # transformers 5 reads GPT-NeoX's rotary_pct as partial_rotary_factor, and this
        # converter still asks for rotary_pct: give it the config.json value
        raw = json.loads((d / "config.json").read_text())
        if "rotary_pct" in raw:
            model.hparams.setdefault("rotary_pct", raw["rotary_pct"])
        model.write()
    return out


def write_gptj(case):
    """GPT-J with the gguf package: tensor names from tensor_mapping, keys as llama.cpp names them."""
    d = CASES / case
    cfg = json.loads((d / "config.json").read_text())
    st = load_file(str(d / "model.safetensors"))
    n_layer, n_embd = cfg["n_layer"], cfg["n_embd"]
    out = GGUF_DIR / f"{case}.f32.gguf"
    w = gguf.GGUFWriter(str(out), "gptj")
    w.add_context_length(cfg["n_positions"])
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg.get("n_inner") or 4 * n_embd)
    w.add_head_count(cfg["n_head"])
    w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    w.add_rope_dimension_count(cfg["rotary_dim"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    write_minimal_vocab(w, cfg["vocab_size"])
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPTJ, n_layer)
    for name in sorted(st):
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"{case}: no GGUF name for {name}")
        w.add_tensor(new, np.ascontiguousarray(st[name].astype(np.float32)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def main():
    GGUF_DIR.mkdir(exist_ok=True)
    for case in CONVERTED:
        out = convert(case)
        print(f"{out.relative_to(HERE)}: {out.stat().st_size} bytes")
    for case in WRITTEN:
        out = write_gptj(case)
        print(f"{out.relative_to(HERE)}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
