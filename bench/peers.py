#!/usr/bin/env python3
"""The peers of bench_forward, one configuration per process, same JSON lines.

    python peers.py torch|tl MODEL_DIR --mode MODE [--family gpt2|llama|pythia] [--shape B:T]
                    [--reps N] [--warmup N] [--threads N] [--load-reps N] [--cold] [--pagecache EXE]

torch: PyTorch eager, a plain GPT-2 in torch: Hugging Face GPT2LMHeadModel in eval mode under
    torch.inference_mode(). Modes: forward, load (safetensors.torch.load_file of the weight
    files, and GPT2LMHeadModel.from_pretrained).
tl: TransformerLens HookedTransformer built from the same checkpoint without a hub, as its
    from_pretrained does for GPT-2: HookedTransformerConfig for GPT-2 small, the HF state dict
    through convert_gpt2_weights, load_and_process_state_dict with from_pretrained's default
    processing (fold_ln, center_writing_weights, center_unembed, fold_value_biases) — the same
    processing libcircuits' default load applies. Modes (torch.inference_mode unless noted):
    forward; autograd (a plain forward with autograd on, TransformerLens's default);
    hooks (run_with_hooks, a no-op hook at every name of model.hook_dict); cache
    (run_with_cache of every hook point); load.

--family llama / pythia (bench/families.py): MODEL_DIR holds a LlamaForCausalLM /
GPTNeoXForCausalLM checkpoint. torch: AutoModelForCausalLM.from_pretrained (transformers'
default attention). tl: HookedTransformer.from_pretrained's own steps for a local directory,
without the hub: loading_from_pretrained.get_pretrained_model_config(MODEL_DIR) (the
config.json branch for the architecture), get_pretrained_state_dict(MODEL_DIR, cfg, hf_model)
(TL's convert_llama_weights / convert_neox_weights), then load_and_process_state_dict with
from_pretrained's default processing, as for GPT-2.

Needs the reference venv (torch, transformers, transformer_lens 3.x).
"""
import argparse, json, os, resource, statistics, subprocess, sys, time, warnings

warnings.filterwarnings("ignore")  # TL 3.x deprecation notices


def tokens(torch, batch, pos, vocab):
    """The tokens bench_forward uses: (i * 2654435761 mod 2^32) mod vocab, row-major."""
    i = torch.arange(batch * pos, dtype=torch.int64)
    return ((i * 2654435761) % 2**32 % vocab).reshape(batch, pos)


def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def weight_files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors"))


def evict(files, pagecache):
    """Drops the files from the page cache with bench_pagecache; returns the largest resident
    fraction left (0: a truly cold load)."""
    out = subprocess.run([pagecache, "evict"] + files, capture_output=True, text=True).stdout
    return max(json.loads(l)["resident"] for l in out.splitlines())


def timed(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts


def emit(**kw):
    print(json.dumps(kw), flush=True)


def load_hf(path, family="gpt2"):
    if family == "gpt2":
        from transformers import GPT2LMHeadModel
        return GPT2LMHeadModel.from_pretrained(path).eval()
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path).eval()


def tl_config(hf_cfg):
    from transformer_lens import HookedTransformerConfig
    return HookedTransformerConfig(
        d_model=hf_cfg.n_embd, d_head=hf_cfg.n_embd // hf_cfg.n_head, n_heads=hf_cfg.n_head,
        d_mlp=hf_cfg.n_inner or 4 * hf_cfg.n_embd, n_layers=hf_cfg.n_layer, n_ctx=hf_cfg.n_positions,
        eps=hf_cfg.layer_norm_epsilon, d_vocab=hf_cfg.vocab_size, act_fn=hf_cfg.activation_function,
        normalization_type="LN", original_architecture="GPT2LMHeadModel", device="cpu")


def load_tl(path, family="gpt2"):
    """HookedTransformer.from_pretrained's steps for a local checkpoint (no hub)."""
    import gc
    from transformer_lens import HookedTransformer
    hf = load_hf(path, family)
    if family == "gpt2":
        from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
        cfg = tl_config(hf.config)
        sd = convert_gpt2_weights(hf, cfg)
    else:
        from transformer_lens import loading_from_pretrained as loading
        cfg = loading.get_pretrained_model_config(path, device="cpu")
        cfg.tokenizer_name = None  # the directory has none (token ids are fed); TL would try to load one
        sd = loading.get_pretrained_state_dict(path, cfg, hf_model=hf)
    model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(sd, fold_ln=True, center_writing_weights=True, center_unembed=True,
                                      fold_value_biases=True)
    del hf, sd  # what a from_pretrained caller keeps: the HookedTransformer alone
    gc.collect()
    return model.eval()


def bench_load(a):
    """Median load times (warm) or one load after eviction (cold)."""
    import torch
    from safetensors.torch import load_file
    files = weight_files(a.model)
    if a.peer == "torch":
        steps = {"safetensors": lambda: [load_file(f) for f in files],
                 "from_pretrained": lambda: load_hf(a.model, a.family)}
    else:
        steps = {"tl_load": lambda: load_tl(a.model, a.family)}
    for name, fn in steps.items():
        reps = 1 if a.cold else a.load_reps
        ts, resident = [], 1.0
        for _ in range(reps):
            if a.cold:
                resident = evict(files, a.pagecache)
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        emit(what="load", peer=a.peer, step=name, cold=int(a.cold), reps=reps, median_ms=statistics.median(ts),
             resident_before=resident, peak_rss_kb=peak_rss_kb())


def bench_run(a):
    """Loads once, then each shape of --shape (B:T[,B:T...]) in turn; a line per shape (its
    peak RSS is the process's so far: give the shapes smallest first)."""
    import torch
    t0 = time.perf_counter()
    model = load_hf(a.model, a.family) if a.peer == "torch" else load_tl(a.model, a.family)
    load_ms = (time.perf_counter() - t0) * 1e3
    for shape in a.shape.split(","):
        bench_shape(a, torch, model, *(int(x) for x in shape.split(":")), load_ms=load_ms)


def bench_shape(a, torch, model, b, t, load_ms):
    vocab = model.config.vocab_size if a.peer == "torch" else model.cfg.d_vocab
    tok = tokens(torch, b, t, vocab)
    calls = [0]
    extra = {}

    if a.mode == "hooks":
        def count(x, hook):
            calls[0] += 1

        def noop(x, hook):
            return None

        names = list(model.hook_dict)
        extra["registered"] = len(names)
        with torch.inference_mode():
            model.run_with_hooks(tok, fwd_hooks=[(n, count) for n in names])  # untimed: how many fire
        hooks = [(n, noop) for n in names]
        fn = lambda: model.run_with_hooks(tok, fwd_hooks=hooks)
    elif a.mode == "cache":
        with torch.inference_mode():  # untimed: what the cache holds
            _, cache = model.run_with_cache(tok)
            extra["cache_entries"] = len(cache)
            extra["cache_bytes"] = sum(v.numel() * v.element_size() for v in cache.values())
            del cache
        fn = lambda: model.run_with_cache(tok)[0]
    else:
        fn = lambda: model(tok)

    last = []  # the last timed run's output (no extra forward: on the large models one costs seconds)

    def run():
        last.clear()  # the previous output freed first, as when the caller drops it
        last.append(fn())

    if a.mode == "autograd":
        ts = timed(run, a.reps, a.warmup)
    else:
        with torch.inference_mode():
            ts = timed(run, a.reps, a.warmup)
    out = last[-1]
    logits = out.logits if hasattr(out, "logits") else out
    med = statistics.median(ts)
    emit(what="forward", peer=a.peer, mode=a.mode, threads=torch.get_num_threads(), batch=b, pos=t, reps=a.reps,
         median_ms=med, min_ms=min(ts), max_ms=max(ts), tokens_per_s=b * t / (med / 1e3), hook_calls=calls[0],
         peak_rss_kb=peak_rss_kb(), load_ms=load_ms, logits_probe=[float(x) for x in logits[0, -1, :4]],
         attn_implementation=getattr(getattr(model, "config", None), "_attn_implementation", None), **extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peer", choices=["torch", "tl"])
    ap.add_argument("model")
    ap.add_argument("--mode", default="forward", choices=["forward", "autograd", "hooks", "cache", "load"])
    ap.add_argument("--family", default="gpt2", choices=["gpt2", "llama", "pythia"])
    ap.add_argument("--shape", default="1:128")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--load-reps", type=int, default=3)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--pagecache", help="the bench_pagecache executable (for --cold)")
    a = ap.parse_args()
    import torch
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    bench_load(a) if a.mode == "load" else bench_run(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
