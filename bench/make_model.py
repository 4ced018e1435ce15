#!/usr/bin/env python3
"""The benchmark models, made once into bench/.cache/ (git-ignored); nothing is done for a
model already there.

    make_model.py DIR                       GPT-2 small in DIR (the suite's default model)
    make_model.py --family llama|pythia [--tiny]

GPT-2: a GPT2LMHeadModel with random weights (transformers' GPT2Config defaults: 12 layers,
d_model 768, 12 heads, vocab 50257, n_ctx 1024; seed 0), config.json + model.safetensors (fp32,
~500 MB).

llama / pythia (bench/families.py has the shapes): transformers' LlamaForCausalLM /
GPTNeoXForCausalLM with its own random init (seed 0), saved as F32 safetensors (~4.4 GB /
~1.2 GB) for the peers; then the same weights through TransformerLens's own conversion
(get_pretrained_model_config + get_pretrained_state_dict of that directory, no hub),
unprocessed, written in the TL layout (tl_config.json + model.safetensors, as
tests/reference/tl_export.py writes them) for libcircuits. Loading that with the default
options applies TL's from_pretrained processing itself, so it runs the same arithmetic as a
libcircuits load of the HF directory would.
"""
import argparse, gc, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "reference"))
import families  # noqa: E402


def make_gpt2(path):
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    model.save_pretrained(path, safe_serialization=True)


def make_hf(f, path):
    """The transformers model with its own random init, saved; returns it (eval mode)."""
    import torch
    import transformers
    spec = dict(f["hf"])
    cls, config = getattr(transformers, spec.pop("cls")), getattr(transformers, spec.pop("config"))
    torch.manual_seed(0)
    model = cls(config(**spec)).eval()
    model.save_pretrained(path, safe_serialization=True)  # F32: the init's dtype
    return model


def write_tl_layout(f, hf_path, model, out):
    """TransformerLens's own conversion of model (config read from hf_path as a local
    directory), unprocessed, as tl_config.json + model.safetensors."""
    import torch
    from safetensors.torch import save_file
    from transformer_lens import loading_from_pretrained as loading
    from tl_export import BIAS_LEAVES, tl_config_dict
    cfg = loading.get_pretrained_model_config(hf_path, device="cpu")
    sd = loading.get_pretrained_state_dict(hf_path, cfg, hf_model=model)
    tensors = {}
    for k, v in sd.items():
        if f["omit_zero_biases"] and k.rsplit(".", 1)[-1] in BIAS_LEAVES:
            if torch.count_nonzero(v).item():
                raise ValueError(f"{k} is not all zeros")
            continue  # a missing bias loads as zeros (TL's fill_missing_keys; libcircuits too)
        tensors[k] = v.detach().to(torch.float32).contiguous()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tl_config.json"), "w") as fh:
        json.dump(tl_config_dict(cfg), fh, indent=1, sort_keys=True)
        fh.write("\n")
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "transformer_lens"})


def make_family(name, tiny):
    f = families.get(name, tiny)
    hf, tl = families.hf_dir(f), families.tl_dir(f)
    have = lambda d: os.path.exists(os.path.join(d, "model.safetensors"))
    if have(hf) and have(tl):
        return
    import warnings
    warnings.filterwarnings("ignore")
    if have(hf):
        import transformers
        model = getattr(transformers, f["hf"]["cls"]).from_pretrained(hf).eval()
    else:
        model = make_hf(f, hf)
    write_tl_layout(f, hf, model, tl)
    del model
    gc.collect()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", help="GPT-2: where to write it")
    ap.add_argument("--family", choices=[k for k in families.FAMILIES if k != "gpt2"])
    ap.add_argument("--tiny", action="store_true", help="a small model of the family (bench/families.py tiny())")
    a = ap.parse_args()
    if a.family:
        make_family(a.family, a.tiny)
    elif a.dir:
        make_gpt2(a.dir)
    else:
        ap.error("DIR or --family")
    return 0


if __name__ == "__main__":
    sys.exit(main())
