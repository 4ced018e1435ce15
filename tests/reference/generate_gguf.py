#!/usr/bin/env python3
"""GGUF reference cases (issue 15, 'proof against code nobody here wrote'): GGUF files of every
family written by llama.cpp's own converter, quantized by gguf-py and by llama.cpp itself, with the
outputs of Hugging Face transformers, TransformerLens and llama.cpp for them.

    /opt/refenv/bin/python tests/reference/generate_gguf.py [case_name ...]

For each case (a family at a size that suits the quantization blocks):
1. a random-init transformers model (generate_families.py's randomization) saved with
   save_pretrained into a temporary directory;
2. F32 GGUF by llama.cpp's convert_hf_to_gguf.py (run in a child process with llama.cpp's vendored
   gguf-py; only set_vocab is replaced, by a minimal SentencePiece-style token list, as these models
   have no tokenizer: every tensor goes through the converter's own code). GPT-J has no llama.cpp
   converter: it is written with gguf-py's GGUFWriter and tensor_mapping (llama.cpp's 'gptj' names,
   q/k/v separate and unpermuted as GPT-J rotates adjacent pairs);
3. the other types: F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 by gguf-py (gguf.quants.quantize; every 2-D
   tensor, norms and biases stay F32), or the K-quants Q2_K .. Q6_K by llama.cpp
   (llama_model_quantize, its own mix of types per tensor; checked with GGUFReader that the
   tensors got the K type, not a fallback);
4. the reference of each file: its tensors dequantized by gguf.quants.dequantize, the converter's
   transforms undone (llama q/k permutation, Gemma's +1 on norms, GPT-2's Conv1D transposes, NeoX's
   qkv regrouping) into the original model's state dict, then run in fp32 by transformers (logits)
   and by TransformerLens built from that model (logits and a few hooks);
5. two peers on the same file and tokens: transformers loading the GGUF itself
   (from_pretrained(dir, gguf_file=...)) where it supports the architecture, and llama.cpp
   (llama-cpp-python, logits of every position) where llama.cpp runs the architecture.

Writes gguf/<case>/<TYPE>.gguf, gguf/<case>/<TYPE>.safetensors (tokens, logits, hooks, peers) and
gguf/<case>/case.json (config, measured differences between the references, versions).
Offline and deterministic apart from llama.cpp's peer logits (threads, see README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA_CPP = os.environ.get("LLAMA_CPP_SRC", "/work/llama_sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")


# ----------------------------------------------------------------------------- converter child


def convert_child(hf_dir: str, out: str, model_name: str) -> None:
    """Runs in its own process: llama.cpp's convert_hf_to_gguf.py with its vendored gguf-py (not
    the PyPI gguf the parent imports), with set_vocab replaced by a minimal token list."""
    sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))
    sys.path.insert(0, LLAMA_CPP)
    import json

    import convert_hf_to_gguf as C  # noqa: E402
    import gguf  # noqa: E402

    hparams = json.load(open(os.path.join(hf_dir, "config.json")))
    cls = C.get_model_class(hparams["architectures"][0])
    vocab = hparams.get("vocab_size")

    def minimal_vocab(self):
        write_minimal_vocab(self.gguf_writer, vocab, gguf)

    cls.set_vocab = minimal_vocab
    # The converter reads config.json through transformers' AutoConfig, which (5.x) folds GPT-NeoX's
    # rotary_pct into rope_parameters; GPTNeoXModel still reads hparams["rotary_pct"]: put the
    # file's own value back (nothing else is touched)
    raw = json.load(open(os.path.join(hf_dir, "config.json")))
    init = cls.__init__

    def init_with_raw_names(self, *a, **k):
        init(self, *a, **k)
        for key in ("rotary_pct",):
            if key in raw and key not in self.hparams:
                self.hparams[key] = raw[key]

    cls.__init__ = init_with_raw_names
    sys.argv = ["convert_hf_to_gguf.py", hf_dir, "--outfile", out, "--outtype", "f32", "--model-name", model_name]
    C.main()


def write_minimal_vocab(w, n: int, gguf) -> None:
    """A SentencePiece-style ('llama') vocabulary of n tokens for models without a tokenizer:
    <unk> <s> </s> <0x0A> then \u2581t4 ... (gguf: the converter's vendored module or PyPI's)."""
    toks = ["<unk>", "<s>", "</s>", "<0x0A>"] + [f"\u2581t{i}" for i in range(4, n)]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * len(toks))
    T = gguf.TokenType
    w.add_token_types([T.UNKNOWN, T.CONTROL, T.CONTROL, T.BYTE] + [T.NORMAL] * (len(toks) - 4))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--convert":
    convert_child(*sys.argv[2:])
    sys.exit(0)


# ----------------------------------------------------------------------------- parent

sys.path.insert(0, HERE)
import generate as G  # noqa: E402  (offline env, thread and determinism settings)
import generate_families as F  # noqa: E402

import ctypes  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import gguf  # noqa: E402  (PyPI gguf: quantize, dequantize, reader, writer)
from gguf import GGMLQuantizationType as QT  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT_DIR = os.path.join(HERE, "gguf")
GGUFPY_TYPES = ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
# llama.cpp file types for the K-quants (the _S mixes: the most tensors in the named type)
K_FTYPES = {"Q2_K": 10, "Q3_K": 11, "Q4_K": 14, "Q5_K": 16, "Q6_K": 18}
LLAMA_ARCHS = {"llama", "mistral", "qwen2", "gemma", "gemma2", "gpt_neox", "gpt2"}  # llama.cpp runs these
HF_GGUF_ARCHS = {"llama", "mistral", "qwen2", "gemma2", "gpt2"}  # transformers 5.25 loads these GGUFs
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gemma": "gemma", "gemma2": "gemma2",
             "gpt_neox": "gptneox", "gptj": "gptj", "gpt2": "gpt2"}


def versions() -> Dict[str, str]:
    v = dict(G.VERSIONS)
    for p in ("gguf", "llama_cpp_python"):
        v[p] = md.version(p)
    v["converter"] = "convert_hf_to_gguf.py + gguf-py vendored in llama_cpp_python 0.3.36's sdist"
    return v


# ----------------------------------------------------------------------------- models


def make_hf(family: str, seed: int, cfg_kw: dict):
    """Random-init transformers model (generate_families' randomization) and its config."""
    if family == "gpt2":
        cfg = transformers.GPT2Config(**cfg_kw)
        cls = transformers.GPT2LMHeadModel
    else:
        cfg = F.FAMILIES[family][0](**cfg_kw)
        cls = F.FAMILIES[family][1]
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    randomize(model, seed)
    return model


def randomize(model, seed: int) -> None:
    """Norm weights ~ 1 + 0.2 N(0,1) (Gemma's stored offsets ~ 0.2 N(0,1)); every other parameter
    ~ (0.8 / sqrt(d_model)) N(0,1): activations of order 1 through the layers, as in a trained
    model. (generate_families' 0.3 makes the residual grow ~50x over two layers and the attention
    one-hot, so that llama.cpp's 8-bit activations would flip argmaxes: a peer comparison only
    a loose tolerance could pass.)"""
    g = G.gen(seed)
    c = model.config
    std = 0.8 / (getattr(c, "hidden_size", None) or c.n_embd) ** 0.5
    gemma = c.model_type in ("gemma", "gemma2")
    for name, p in model.named_parameters():
        if ("norm" in name or ".ln_" in name) and name.endswith(".weight"):
            p.copy_((0.0 if gemma else 1.0) + 0.2 * G.randn_like(p, g))
        else:
            p.copy_(std * G.randn_like(p, g))


def reload_hf(model, state: Dict[str, torch.Tensor]):
    """A copy of the model (same config) with the given state dict, eager attention, fp32."""
    cfg = model.config.__class__.from_dict(model.config.to_dict())
    cfg._attn_implementation = "eager"
    m = model.__class__(cfg).eval()
    missing, unexpected = m.load_state_dict(state, strict=False)
    tied = set(getattr(m, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if not (k == "lm_head.weight" and m.config.tie_word_embeddings)]
    assert not missing and not unexpected, (missing, unexpected, tied)
    if m.config.tie_word_embeddings:
        m.tie_weights()
    return m


def build_tl(family: str, hf, name: str):
    """TransformerLens HookedTransformer built from the Hugging Face model (no processing)."""
    if family == "gpt2":
        return G.tl_from_hf(hf, hf.config, "GPT2LMHeadModel")
    hf.config.architectures = [hf.__class__.__name__]  # what TL's config reader dispatches on
    with tempfile.TemporaryDirectory() as d:
        hf.config.save_pretrained(d)
        cfg = F.tl_config(d, name, hf)
    if family == "gpt_neox":
        cfg.rotary_base = hf.config.rope_parameters["rope_theta"]  # TL 3.9 leaves it at 10000
    tl, _ = F.tl_from_hf(hf, cfg)
    return tl


# ----------------------------------------------------------------------------- GGUF writing


def save_hf_dir(model, d: str, family: str) -> None:
    model.save_pretrained(d)
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    if family == "gpt_neox":  # the converter reads the older names (as Pythia ships them)
        rp = c.pop("rope_parameters")
        c["rotary_pct"] = rp["partial_rotary_factor"]
        c["rotary_emb_base"] = rp["rope_theta"]
    if family == "gpt2":
        c["n_ctx"] = c["n_positions"]  # GPT-2's config.json has it; the converter reads it
    json.dump(c, open(p, "w"), indent=2)


def convert_f32(model, family: str, name: str, out: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        save_hf_dir(model, d, family)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--convert", d, out, name],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"converter failed for {name}:\n{r.stdout}\n{r.stderr}")


def write_gptj(model, name: str, out: str) -> None:
    """GPT-J by hand (llama.cpp has no GPT-J converter): llama.cpp's gptj tensor names via gguf-py's
    tensor_mapping, the hyperparameters llama.cpp's gptj reads, the same minimal vocabulary."""
    c = model.config
    arch = gguf.MODEL_ARCH.GPTJ
    w = gguf.GGUFWriter(out, "gptj")
    w.add_name(name)
    w.add_context_length(c.n_positions)
    w.add_embedding_length(c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_feed_forward_length(c.n_inner or 4 * c.n_embd)
    w.add_head_count(c.n_head)
    w.add_layer_norm_eps(c.layer_norm_epsilon)
    w.add_rope_dimension_count(c.rotary_dim)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    write_minimal_vocab(w, c.vocab_size, gguf)
    tmap = gguf.get_tensor_name_map(arch, c.n_layer)
    for k, v in model.state_dict().items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        gname = tmap.get_name(k, try_suffixes=(".weight", ".bias"))
        assert gname is not None, k
        w.add_tensor(gname, v.detach().float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def requantize_gguf_py(src: str, dst: str, qtype: str) -> None:
    """Copy of the F32 file with every 2-D tensor quantized by gguf-py (1-D tensors stay F32)."""
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        if k == "general.file_type":
            w.add_uint32(k, int(getattr(gguf.LlamaFileType, "MOSTLY_" + qtype)))
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_array(k, f.contents())
        else:
            w.add_key_value(k, f.contents(), vt)
    qt = QT[qtype]
    for t in r.tensors:
        a = np.array(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])
        if a.ndim == 2:
            q = gguf.quants.quantize(a, qt)
            w.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=qt)
        else:
            w.add_tensor(t.name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def requantize_llama(src: str, dst: str, qtype: str) -> Dict[str, str]:
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = K_FTYPES[qtype]
    p.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    assert rc == 0, f"llama_model_quantize {qtype} failed: {rc}"
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(dst).tensors}
    assert qtype in types.values(), f"{dst}: no tensor got {qtype}: {types}"
    return types


# ----------------------------------------------------------------------------- GGUF -> HF state dict


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of LlamaModel.permute (rows of each head: halves interleaved back to rotate-half)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_to_hf_state(path: str, model, family: str) -> Dict[str, torch.Tensor]:
    """The GGUF's tensors dequantized (gguf.quants.dequantize) and the converter's transforms
    undone, keyed by the original model's state-dict names."""
    r = gguf.GGUFReader(path)
    tensors = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = torch.from_numpy(np.array(a, dtype=np.float32)).reshape(
            [int(x) for x in reversed(t.shape)])
    c = model.config
    n_layer = c.num_hidden_layers
    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, {
        "llama": "LLAMA", "mistral": "LLAMA", "qwen2": "QWEN2", "gemma": "GEMMA", "gemma2": "GEMMA2",
        "gpt_neox": "GPTNEOX", "gptj": "GPTJ", "gpt2": "GPT2"}[family]), n_layer)
    out, used = {}, set()
    for k, v in model.state_dict().items():
        if k.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
            continue
        if k == "lm_head.weight" and c.tie_word_embeddings:
            continue
        g = tmap.get_name(k, try_suffixes=(".weight", ".bias"))
        if g is None and k == "lm_head.weight":
            g = "output.weight"
        assert g in tensors, (k, g)
        used.add(g)
        x = tensors[g].clone()
        if family in ("llama", "mistral") and k.endswith("q_proj.weight"):
            x = unpermute(x, c.num_attention_heads)
        elif family in ("llama", "mistral") and k.endswith("k_proj.weight"):
            x = unpermute(x, c.num_key_value_heads)
        elif family in ("gemma", "gemma2") and k.endswith("norm.weight"):
            x = x - 1
        elif family == "gpt2" and k.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            x = x.t()
        elif family == "gpt_neox" and "query_key_value" in k:
            H, dh = c.num_attention_heads, c.hidden_size // c.num_attention_heads
            x = x.reshape(3, H, dh, *x.shape[1:]).swapaxes(0, 1).reshape(x.shape)
        assert x.shape == v.shape, (k, x.shape, v.shape)
        out[k] = x.contiguous()
    unused = set(tensors) - used
    assert not unused, f"GGUF tensors not mapped back: {unused}"
    return out


# ----------------------------------------------------------------------------- references


def hook_names(n_layers: int) -> List[str]:
    names = []
    for l in range(n_layers):
        names += [f"blocks.{l}.hook_resid_pre", f"blocks.{l}.attn.hook_pattern", f"blocks.{l}.hook_mlp_out"]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    return names


def llama_cpp_logits(path: str, tokens: torch.Tensor) -> torch.Tensor:
    import llama_cpp

    llm = llama_cpp.Llama(path, logits_all=True, n_threads=2, n_threads_batch=2, n_ctx=64, n_batch=64,
                          vocab_only=False, verbose=False, seed=0,
                          type_k=0, type_v=0)  # GGML_TYPE_F32 K/V cache: not its default F16
    rows = []
    for b in range(tokens.shape[0]):
        llm.reset()
        llm.eval(tokens[b].tolist())
        rows.append(torch.tensor(np.array(llm.scores[: tokens.shape[1]]), dtype=torch.float32))
    del llm
    return torch.stack(rows)


# Config values transformers' GGUF reader does not take from the file (it keeps Gemma 2's defaults:
# soft-caps 50 / 30, query_pre_attn_scalar 256; GPT-2's context_length goes to n_ctx, not to
# n_positions, the size of the position table): given from the model's config. The weights and
# everything else still come from transformers' own reading of the file.
HF_GGUF_CONFIG_GAPS = {"gemma2": ("attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"),
                       "gpt2": ("n_positions",)}


def hf_gguf_model(path: str, family: str, config):
    d, f = os.path.split(path)
    kw = {k: getattr(config, k) for k in HF_GGUF_CONFIG_GAPS.get(family, ())}
    return transformers.AutoModelForCausalLM.from_pretrained(
        d, gguf_file=f, dtype=torch.float32, attn_implementation="eager", **kw).eval()


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def reference_for(path: str, qtype: str, model, family: str, name: str, tokens: torch.Tensor,
                  orig_logits: torch.Tensor) -> dict:
    state = gguf_to_hf_state(path, model, family)
    hf = reload_hf(model, state)
    tl = build_tl(family, hf, name)
    names = hook_names(hf.config.num_hidden_layers)
    logits, cache = tl.run_with_cache(tokens, names_filter=lambda n: n in names)
    hf_logits = hf(tokens).logits.float()
    tens = {"tokens": tokens.to(torch.int32), "logits": hf_logits}
    for n in names:
        tens["hook:" + n] = cache[n].float()
    info = {"type": qtype, "file": os.path.basename(path), "file_bytes": os.path.getsize(path),
            "hf_vs_tl_logits": maxdiff(hf_logits, logits)}
    assert info["hf_vs_tl_logits"] < G.HF_TL_TOL, info
    info["ref_vs_original_f32_logits"] = maxdiff(hf_logits, orig_logits)
    if qtype == "F32":
        assert info["ref_vs_original_f32_logits"] < 1e-5, info  # the conversion lost nothing
    if family in HF_GGUF_ARCHS:
        hg = hf_gguf_model(path, family, model.config)
        hgl = hg(tokens).logits.float()
        tens["hf_gguf_logits"] = hgl
        info["hf_gguf_vs_ref_logits"] = maxdiff(hgl, hf_logits)
        # transformers' own dequantization and un-permutation reproduce the weights exactly
        hs = hg.state_dict()
        info["hf_gguf_weights_equal"] = all(torch.equal(hs[k], v) for k, v in state.items() if k in hs)
    if family in LLAMA_ARCHS:
        ll = llama_cpp_logits(path, tokens)
        tens["llama_cpp_logits"] = ll
        info["llama_cpp_vs_ref_logits"] = maxdiff(ll, hf_logits)
    types = sorted({t.tensor_type.name for t in gguf.GGUFReader(path).tensors})
    info["tensor_types"] = types
    save_file({k: v.detach().contiguous() for k, v in tens.items()},
              os.path.join(os.path.dirname(path), qtype + ".safetensors"), metadata={"case": f"{name} {qtype}"})  # one key: safetensors orders several at random
    return info


def build_case(name: str, family: str, description: str, seed: int, types: List[str], B: int, T: int,
               **cfg_kw) -> None:
    d = os.path.join(OUT_DIR, name)
    G.fresh_dir(d)
    model = make_hf(family, seed, cfg_kw)
    vocab = model.config.vocab_size
    tokens = G.random_tokens(seed + 100, B, T, vocab)
    orig_logits = model(tokens).logits.float()
    f32 = os.path.join(d, "F32.gguf")
    with tempfile.TemporaryDirectory() as tmp:
        src = f32 if "F32" in types else os.path.join(tmp, "F32.gguf")
        if family == "gptj":
            write_gptj(model, "random-" + name, src)
        else:
            # general.name: not the bare 'mistral', which transformers 5.25 maps to a gguf-py
            # architecture that does not exist (it then cannot load the file at all)
            convert_f32(model, family, "random-" + name, src)
        results = []
        for qt in types:
            path = os.path.join(d, qt + ".gguf")
            llama_types = None
            if qt in GGUFPY_TYPES:
                requantize_gguf_py(src, path, qt)
            elif qt in K_FTYPES:
                llama_types = requantize_llama(src, path, qt)
            info = reference_for(path, qt, model, family, name, tokens, orig_logits)
            if llama_types is not None:
                info["llama_quantize_tensor_types"] = llama_types
            results.append(info)
            print(f"  {name} {qt}: " + ", ".join(
                f"{k} {v:.3g}" for k, v in info.items() if isinstance(v, float)), flush=True)
    case = {
        "name": name, "family": family, "gguf_architecture": GGUF_ARCH[family], "description": description,
        "batch": B, "seq_len": T, "hooks": hook_names(model.config.num_hidden_layers),
        "hf_config": {k: v for k, v in model.config.to_dict().items() if not k.startswith("_")},
        "reference": ("transformers in fp32 on the file's dequantized weights (gguf.quants.dequantize, "
                      "the converter's transforms undone into the original state dict); hooks from "
                      "TransformerLens built from that model"),
        "peers": {"hf_gguf_logits": family in HF_GGUF_ARCHS, "llama_cpp_logits": family in LLAMA_ARCHS},
        "hf_gguf_config_given": list(HF_GGUF_CONFIG_GAPS.get(family, ())),
        "files": results, "versions": versions(),
    }
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=1, default=str)
        f.write("\n")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)


SMALL_TYPES = ["F32"] + GGUFPY_TYPES
K_TYPES = list(K_FTYPES)  # the F32 source of these (1.7 MB) is not kept


def all_cases():
    C = {}
    B, T = 1, 10
    gated = dict(vocab_size=48, max_position_embeddings=64, num_hidden_layers=2, hidden_size=64,
                 intermediate_size=96, tie_word_embeddings=False)
    C["llama"] = lambda: build_case(
        "llama", "llama", "LlamaForCausalLM: 2 layers, d_model 64, 4 heads / 2 K/V heads x d_head 16, "
        "SwiGLU d_mlp 96, vocab 48, untied.", 61, SMALL_TYPES, B, T,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-6, **gated)
    C["mistral"] = lambda: build_case(
        "mistral", "mistral", "MistralForCausalLM (GGUF architecture llama; no sliding window, which "
        "the llama architecture cannot state): 2 layers, d_model 64, 4 heads / 1 K/V head, d_mlp 96.",
        62, SMALL_TYPES, B, T, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        sliding_window=None, hidden_act="silu", **gated)
    C["qwen2"] = lambda: build_case(
        "qwen2", "qwen2", "Qwen2ForCausalLM: q/k/v biases, 2 layers, d_model 64, 4 heads / 2 K/V, "
        "d_mlp 96, rope_theta 1e6, tied embeddings.", 63, SMALL_TYPES, B, T,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
        **{**gated, "tie_word_embeddings": True})
    C["gemma"] = lambda: build_case(
        "gemma", "gemma", "GemmaForCausalLM: 2 layers, d_model 64, 4 heads x head_dim 32 (not "
        "d_model / heads), 1 K/V head, GeGLU d_mlp 96, norms stored +1 by the converter, tied.",
        64, SMALL_TYPES, B, T, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
        hidden_act="gelu_pytorch_tanh", **{**gated, "tie_word_embeddings": True})
    C["gemma2"] = lambda: build_case(
        "gemma2", "gemma2", "Gemma2ForCausalLM: 2 layers (0 sliding window 4 < T, 1 global), soft-caps "
        "attn 2 / final 3, query_pre_attn_scalar = head_dim 32 (what llama.cpp's gemma2 uses), "
        "pre and post norms, 2 heads / 1 K/V, d_model 64, d_mlp 96, tied.",
        65, SMALL_TYPES, B, T, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        sliding_window=4, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
        query_pre_attn_scalar=32, hidden_activation="gelu_pytorch_tanh",
        **{**gated, "tie_word_embeddings": True})
    C["gpt_neox"] = lambda: build_case(
        "gpt_neox", "gpt_neox", "GPTNeoXForCausalLM (Pythia layout): 2 layers, d_model 64, 4 heads x 16, "
        "rotary_pct 0.25, rope base 10000 (the converter writes no base), parallel residual, d_mlp 96, "
        "fused qkv with biases, untied.", 66, SMALL_TYPES, B, T,
        num_attention_heads=4, hidden_act="gelu", use_parallel_residual=True,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25),
        attention_dropout=0.0, hidden_dropout=0.0, **gated)
    C["gptj"] = lambda: build_case(
        "gptj", "gptj", "GPTJForCausalLM (written with GGUFWriter: llama.cpp has no GPT-J converter): "
        "2 layers, n_embd 32, 2 heads x 16, rotary_dim 8 on adjacent pairs, d_mlp 4 n_embd = 128, "
        "parallel block with one ln_1, lm_head bias.", 67, SMALL_TYPES, B, T,
        vocab_size=48, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=None, rotary_dim=8,
        activation_function="gelu_new", tie_word_embeddings=False, attn_pdrop=0.0, embd_pdrop=0.0,
        resid_pdrop=0.0)
    C["gpt2"] = lambda: build_case(
        "gpt2", "gpt2", "GPT2LMHeadModel: 2 layers, n_embd 32, 2 heads x 16, d_mlp 4 n_embd = 128, "
        "n_positions 16 (learned positions), tied, Conv1D weights transposed by the converter.",
        68, SMALL_TYPES, B, T, vocab_size=48, n_positions=16, n_embd=32, n_layer=2, n_head=2,
        activation_function="gelu_new", attn_pdrop=0.0, embd_pdrop=0.0, resid_pdrop=0.0)
    kq = dict(vocab_size=48, max_position_embeddings=64, num_hidden_layers=1, hidden_size=256,
              intermediate_size=256, tie_word_embeddings=False)
    C["llama_k"] = lambda: build_case(
        "llama_k", "llama", "LlamaForCausalLM for the K-quants (rows of 256): 1 layer, d_model 256, "
        "4 heads / 2 K/V heads x 64, SwiGLU d_mlp 256, vocab 48.", 71, K_TYPES, B, T,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu", rms_norm_eps=1e-6, **kq)
    C["qwen2_k"] = lambda: build_case(
        "qwen2_k", "qwen2", "Qwen2ForCausalLM for the K-quants: 1 layer, d_model 256, 4 heads / 2 K/V "
        "heads x 64 with q/k/v biases, SwiGLU d_mlp 256, vocab 48, tied embeddings.", 72, K_TYPES, B, T,
        num_attention_heads=4, num_key_value_heads=2, hidden_act="silu",
        **{**kq, "tie_word_embeddings": True})
    C["gpt_neox_k"] = lambda: build_case(
        "gpt_neox_k", "gpt_neox", "GPTNeoXForCausalLM for the K-quants: 1 layer, d_model 256, 4 heads x 64, "
        "rotary_pct 0.25, parallel residual, fused qkv with biases, LayerNorm, d_mlp 256, vocab 48, untied.",
        73, K_TYPES, B, T, num_attention_heads=4, hidden_act="gelu", use_parallel_residual=True,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25),
        attention_dropout=0.0, hidden_dropout=0.0, **kq)
    return C


def table() -> str:
    """README.md's table of the references' differences, from every case.json."""
    rows = ["| case | type | bytes | tensor types | TL vs HF | ref vs original F32 model | "
            "transformers' GGUF loading vs ref | llama.cpp vs ref |", "|---|---|---|---|---|---|---|---|"]
    for name in all_cases():
        p = os.path.join(OUT_DIR, name, "case.json")
        if not os.path.exists(p):
            continue
        for f in json.load(open(p))["files"]:
            def g(k):
                return f"{f[k]:.2e}" if k in f else "n/a"
            rows.append(f"| {name} | {f['type']} | {f['file_bytes']} | {' '.join(f['tensor_types'])} | "
                        f"{g('hf_vs_tl_logits')} | {g('ref_vs_original_f32_logits')} | "
                        f"{g('hf_gguf_vs_ref_logits')} | {g('llama_cpp_vs_ref_logits')} |")
    return "\n".join(rows)


def main(argv: List[str]) -> None:
    if argv == ["--table"]:
        print(table())
        return
    cases = all_cases()
    names = argv or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        sys.exit(f"unknown case(s): {unknown}; known: {list(cases)}")
    os.makedirs(OUT_DIR, exist_ok=True)
    for n in names:
        print(f"generating {n} ...", flush=True)
        cases[n]()


if __name__ == "__main__":
    main(sys.argv[1:])
