#!/usr/bin/env python3
"""Text in, text out for the modern families: a random-init Hugging Face model whose vocabulary is
one of the small trained tokenizers of tests/tokenizer/data/modern/ (tokenizer.json +
tokenizer_config.json copied beside config.json), and what Hugging Face does with it: the prompt's
ids (`tokenizers`' encode with the tokenizer's own special tokens), greedy generation
(`model.generate(do_sample=False)`, KV cache on) and the decoded continuation.

    /opt/refenv/bin/python tests/reference/generate_text_cases.py [case_name ...]

Writes tests/reference/text/<name>/ (the model directory) and its text_reference.json. Offline and
deterministic (generate.py's settings).
"""

from __future__ import annotations

import os
import shutil
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate as G  # noqa: E402  (offline env, thread and determinism settings)
import generate_families as F  # noqa: E402

import json  # noqa: E402

import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

OUT = os.path.join(HERE, "text")
TOKENIZERS = os.path.join(os.path.dirname(HERE), "tokenizer", "data", "modern")
PROMPTS = ["The quick brown fox", "Hello, world! 123", "naïve café — 東京"]
NEW = 8


def case(name: str, model_type: str, tok: str, seed: int, **cfg_kw):
    d = os.path.join(OUT, name)
    G.fresh_dir(d)
    tokenizer = Tokenizer.from_file(os.path.join(TOKENIZERS, tok, "tokenizer.json"))
    tcfg = json.load(open(os.path.join(TOKENIZERS, tok, "tokenizer_config.json")))
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    cfg_cls, model_cls, _ = F.FAMILIES[model_type]
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(vocab_size=vocab, **cfg_kw)).eval()
    F.randomize_hf(model, seed)
    model.save_pretrained(d)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, f))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZERS, tok, f), os.path.join(d, f))
    hf = F.load_hf(d, model_type)
    eos = tokenizer.token_to_id(tcfg["eos_token"] if isinstance(tcfg.get("eos_token"), str)
                                else tcfg["eos_token"]["content"])
    rows = []
    for p in PROMPTS:
        ids = tokenizer.encode(p).ids
        add_bos = tcfg.get("add_bos_token")
        bos = tcfg.get("bos_token")
        bos = bos if isinstance(bos, str) or bos is None else bos["content"]
        if add_bos and bos is not None and (not ids or ids[0] != tokenizer.token_to_id(bos)):
            ids = [tokenizer.token_to_id(bos)] + ids  # transformers adds it when tokenizer_config says so
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                              pad_token_id=eos, use_cache=True)[0].tolist()
        new = out[len(ids):]
        rows.append({"prompt": p, "ids": ids, "generated": new,
                     "text": tokenizer.decode(new, skip_special_tokens=False)})
    ref = {"name": name, "model_type": model_type, "tokenizer": tok, "vocab": vocab, "eos_token_id": eos,
           "max_new_tokens": NEW, "rows": rows, "versions": G.versions()}
    with open(os.path.join(d, "text_reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    print(f"{name}: vocab {vocab}, {sum(len(r['ids']) for r in rows)} prompt ids, "
          f"{G.dir_bytes(d)} bytes")


def all_cases():
    small = dict(max_position_embeddings=64, num_hidden_layers=2, hidden_size=16, intermediate_size=24,
                 tie_word_embeddings=False)
    return {
        "llama_sp": lambda: case("llama_sp", "llama", "llama2", 61, num_attention_heads=4,
                                 num_key_value_heads=2, hidden_act="silu", **small),
        "qwen2_bytes": lambda: case("qwen2_bytes", "qwen2", "qwen2", 62, num_attention_heads=4,
                                    num_key_value_heads=2, hidden_act="silu", **small),
        "gemma_sp": lambda: case("gemma_sp", "gemma", "gemma", 63, num_attention_heads=2, num_key_value_heads=1,
                                 head_dim=8, hidden_activation="gelu_pytorch_tanh",
                                 **dict(small, tie_word_embeddings=True)),
    }


def main(argv):
    cases = all_cases()
    for n in argv or list(cases):
        cases[n]()


if __name__ == "__main__":
    main(sys.argv[1:])
