#!/usr/bin/env python3
"""The Python binding's costs, measured against TransformerLens in the same process.

    /opt/refenv/bin/python bench/python_hooks.py [--reps 7] [--threads N] [--no-tl] [--no-big]

1. Cost of one Python hook call: the tiny GPT-2 of tests/reference/cases/hf_tiny_random_gpt2
   (5 layers, d_model 32, vocab 1000; 91 hook points), tokens [1, 16], weights as stored. A
   forward with a hook at every hook point (registered once with add_hook) minus a forward with
   none, divided by 91: a no-op hook, an in-place edit (act *= 1), a replacement (return
   act * 1). For scale: a bare ctypes callback (the floor any ctypes hook pays), the same
   binding with np.ctypeslib.as_array views, and TransformerLens's own per-hook cost on the same
   model (run_with_hooks with the same no-op hook at all 91 points vs. a plain forward).
2. run_with_cache (every hook point) against TransformerLens's run_with_cache on the same
   weights (loaded into TL as tests/reference/generate.py does: hf_to_tl_config +
   convert_gpt2_weights, no processing): the tiny model, and the GPT-2-small-shaped random model
   of bench/run.py (bench/.cache/gpt2-small-random, made on first use). The caches are checked
   to agree (max-abs difference over every entry).

Needs the reference venv (torch, transformers, transformer_lens 3.x) for the TL columns;
imports the binding from bindings/python (the library from build/lib or CIRCUITS_LIBRARY).
Best of --reps repetitions (each the mean of an inner loop); prints Markdown tables.

Timing: with one thread (the default, --threads N to change) the clock is the process's CPU
time, so other processes competing for the cores do not inflate the numbers; with more threads
it is wall-clock time.

Threads: 1 by default for both. torch's OpenMP pool and OpenBLAS's
pthread pool in one process spin against each other (docs/threading.md); measured here with 2
threads on 2 busy cores a TL forward of the tiny model took 690 ms instead of 7.5 ms. The script
sets OMP_WAIT_POLICY=PASSIVE before torch loads, which keeps multi-threaded runs sane.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (and its OpenMP) loads

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

import numpy as np  # noqa: E402

import circuits  # noqa: E402
from circuits import _native as N  # noqa: E402
from circuits import model as cm  # noqa: E402

TINY = os.path.join(ROOT, "tests", "reference", "cases", "hf_tiny_random_gpt2")
BIG = os.path.join(HERE, ".cache", "gpt2-small-random")


#: The timer: the process's CPU time when everything runs on one thread (insensitive to other
#: processes competing for the cores), wall-clock time otherwise. Set in main().
CLOCK = [time.perf_counter]


def measure(variants, reps: int, inner: int):
    """Times every variant, interleaved: each repetition runs every variant once (round-robin),
    so drifting load from other processes hits them all alike; the result per variant is its
    best repetition (ms per call, the mean of `inner` calls). variants: {name: fn} or
    {name: (fn, setup, teardown)}, setup/teardown run outside the timed loop."""
    norm = {k: (v if isinstance(v, tuple) else (v, None, None)) for k, v in variants.items()}
    best = {k: float("inf") for k in norm}
    clock = CLOCK[0]
    for r in range(reps + 1):  # repetition 0 warms up
        for k, (fn, setup, teardown) in norm.items():
            if setup:
                setup()
            t0 = clock()
            for _ in range(inner):
                fn()
            dt = (clock() - t0) * 1e3 / inner
            if teardown:
                teardown()
            if r:
                best[k] = min(best[k], dt)
    return best


# ------------------------------------------------------------------------------ hook costs


def noop(act, hook):
    return None


def edit(act, hook):
    act *= 1.0


def replace(act, hook):
    return act * np.float32(1.0)


class _AsArrayHolder:
    """Stands in for the binding's _Holder: keeps what the hook array needs to be made with
    np.ctypeslib.as_array instead (the cost the binding's __array_interface__ view avoids)."""
    __slots__ = ("addr", "shape", "owner", "__weakref__")

    def __init__(self, addr, shape, readonly, owner, typestr="<f4"):
        self.addr, self.shape, self.owner = addr, shape, owner


def as_array_view(holder):
    return np.ctypeslib.as_array(ctypes.cast(holder.addr, ctypes.POINTER(ctypes.c_float)), holder.shape)


def hook_variants(tok):
    """{name: fn} for libcircuits: one model per variant, its hooks registered once (so the
    timed call is a plain forward), plus run_with_hooks (registration in the timed call)."""
    models = {}
    out = {}

    def model(name):
        m = circuits.Model.from_pretrained_no_processing(TINY)
        models[name] = m
        return m

    m = model("none")
    out["none"] = lambda: m(tok)
    for name, fn in (("noop", noop), ("edit", edit), ("replace", replace)):
        mm = model(name)
        mm.add_hook(lambda _: True, fn)
        out[name] = (lambda mm=mm: mm(tok))
    ma = model("noop_as_array")
    ma.add_hook(lambda _: True, noop)
    saved = (cm._Holder, cm._asarray)

    def set_as_array():  # the hook trampoline makes its array from _Holder through _asarray
        cm._Holder, cm._asarray = _AsArrayHolder, as_array_view

    def restore():
        cm._Holder, cm._asarray = saved

    out["noop_as_array"] = (lambda: ma(tok), set_as_array, restore)
    # the floor: a bare ctypes callback returning 0, registered at every point through C
    mb = model("bare")
    bare = N.HOOK_FN(lambda act, user: 0)
    models["_bare_fn"] = bare
    for hp in mb.hook_names():
        i = ctypes.c_int64()
        N.check(N.lib.circuits_context_add_hook(mb._ctx, hp.encode(), bare, None, ctypes.byref(i)))
    out["bare_ctypes"] = lambda: mb(tok)
    mr = model("rwh")
    out["run_with_hooks"] = lambda: mr.run_with_hooks(tok, fwd_hooks=[(lambda _: True, noop)])
    return out, models


def tl_hook_variants(tl, tok, names):
    """The same no-op hook at the same points in TransformerLens (its hook_dict also lists points
    that never fire in this configuration, e.g. hook_result: the predicate selects the ones that
    do). "registered once": add_hook before the timed loop, reset_hooks after it."""
    import torch

    t = torch.tensor(tok)
    names = set(names)
    pred = lambda n: n in names  # noqa: E731
    return {
        "tl_none": lambda: tl(t),
        "tl_noop": (lambda: tl(t), lambda: tl.add_hook(pred, noop), lambda: tl.reset_hooks()),
        "tl_run_with_hooks": lambda: tl.run_with_hooks(t, fwd_hooks=[(pred, noop)]),
    }


# ------------------------------------------------------------------------------ TL loading


def load_tl(path: str):
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    lm = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    h = lm.config
    cfg = HookedTransformerConfig(
        d_model=h.n_embd, d_head=h.n_embd // h.n_head, n_heads=h.n_head,
        d_mlp=h.n_inner if h.n_inner is not None else 4 * h.n_embd, n_layers=h.n_layer, n_ctx=h.n_positions,
        eps=h.layer_norm_epsilon, d_vocab=h.vocab_size, act_fn=h.activation_function,
        use_attn_scale=getattr(h, "scale_attn_weights", True), scale_attn_by_inverse_layer_idx=h.scale_attn_by_inverse_layer_idx,
        normalization_type="LN", original_architecture="GPT2LMHeadModel", device="cpu", dtype=torch.float32)
    tl = HookedTransformer(cfg)
    sd = {k: v.detach().clone().float() for k, v in convert_gpt2_weights(lm, cfg).items()}
    tl.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                   fold_value_biases=False, refactor_factored_attn_matrices=False)
    return tl.eval()


def make_big():
    if os.path.exists(os.path.join(BIG, "model.safetensors")):
        return
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).eval().save_pretrained(BIG, safe_serialization=True)


# ------------------------------------------------------------------------------ caches


def cache_compare(path: str, shape, reps: int, use_tl: bool, inner: int):
    m = circuits.Model.from_pretrained_no_processing(path)
    tok = np.random.default_rng(1).integers(0, m.cfg.d_vocab, shape)
    row = {"model": os.path.basename(path), "shape": shape, "points": len(m.hook_names())}
    pattern = lambda n: n.endswith("hook_pattern")  # noqa: E731
    variants = {
        "lc_forward": lambda: m(tok),
        "lc_cache": lambda: m.run_with_cache(tok),
        "lc_cache_pattern": lambda: m.run_with_cache(tok, names_filter=pattern),
    }
    logits, cache = m.run_with_cache(tok)
    row["cache_mb"] = cache.nbytes / 2**20
    if use_tl:
        import torch

        tl = load_tl(path)
        t = torch.tensor(tok)
        variants.update({
            "tl_forward": lambda: tl(t),
            "tl_cache": lambda: tl.run_with_cache(t),
            "tl_cache_pattern": lambda: tl.run_with_cache(t, names_filter=pattern),
        })
        tl_logits, tl_cache = tl.run_with_cache(t)
        assert list(tl_cache.keys()) == list(cache.keys()), "hook lists differ"
        d = 0.0
        for k in cache.keys():
            a, b = cache[k], tl_cache[k].numpy()
            fin = np.isfinite(b)
            d = max(d, float(np.abs(a[fin] - b[fin]).max()) if fin.any() else 0.0)
        row["max_diff"] = max(d, float(np.abs(logits - tl_logits.numpy()).max()))
        row["tl"] = tl
        del tl_cache
    del cache
    row.update(measure(variants, reps, inner))
    return row, m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-tl", action="store_true", help="skip TransformerLens (no torch needed)")
    ap.add_argument("--no-big", action="store_true", help="skip the GPT-2-small-shaped model")
    ap.add_argument("--json", help="also write the measurements to this file (bench/run.py's summary reads it)")
    a = ap.parse_args()
    use_tl = not a.no_tl
    circuits.set_num_threads(a.threads)
    CLOCK[0] = time.process_time if a.threads == 1 else time.perf_counter
    if use_tl:
        import torch

        warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
        torch.set_num_threads(a.threads)
        torch.set_grad_enabled(False)

    print(f"libcircuits {circuits.library_version()} ({circuits.library_path}), numpy {np.__version__}, "
          f"{a.threads} thread(s), best of {a.reps} interleaved repetitions, "
          f"{'process CPU time' if a.threads == 1 else 'wall-clock time'}")
    # the tiny model: TL loaded first so that hook costs of both are measured interleaved
    rows = []
    tiny_row, m_tiny = cache_compare(TINY, (1, 16), a.reps, use_tl, 50)
    rows.append(tiny_row)
    tok = np.random.default_rng(0).integers(0, m_tiny.cfg.d_vocab, (1, 16))
    names = m_tiny.hook_names()
    n = len(names)
    variants, models = hook_variants(tok)
    if use_tl:
        variants.update(tl_hook_variants(tiny_row["tl"], tok, names))
    h = measure(variants, a.reps, 100)
    per = lambda k, base="none": (h[k] - h[base]) / n * 1e3  # noqa: E731  (us per hook call)
    print()
    print(f"### Cost of one Python hook call (tiny GPT-2, tokens [1, 16], hooks at all {n} points)")
    print()
    print("| hook | forward ms | per hook call us |")
    print("|---|---:|---:|")
    print(f"| none | {h['none']:.3f} | |")
    print(f"| bare ctypes callback (returns 0; the floor of any ctypes hook) | {h['bare_ctypes']:.3f} | "
          f"{per('bare_ctypes'):.2f} |")
    print(f"| no-op Python hook | {h['noop']:.3f} | {per('noop'):.2f} |")
    print(f"| no-op, views made with np.ctypeslib.as_array instead | {h['noop_as_array']:.3f} | "
          f"{per('noop_as_array'):.2f} |")
    print(f"| editing in place (act *= 1) | {h['edit']:.3f} | {per('edit'):.2f} |")
    print(f"| returning a replacement (act * 1) | {h['replace']:.3f} | {per('replace'):.2f} |")
    print(f"| run_with_hooks(no-op at all points): hooks added and removed every run | {h['run_with_hooks']:.3f} | "
          f"{per('run_with_hooks'):.2f} |")
    if use_tl:
        print(f"| TransformerLens: no hooks | {h['tl_none']:.3f} | |")
        print(f"| TransformerLens: no-op hook, registered once | {h['tl_noop']:.3f} | {per('tl_noop', 'tl_none'):.2f} |")
        print(f"| TransformerLens: run_with_hooks(no-op at all points) | {h['tl_run_with_hooks']:.3f} | "
              f"{per('tl_run_with_hooks', 'tl_none'):.2f} |")
    for mm in models.values():
        if isinstance(mm, circuits.Model):
            mm.close()
    tiny_row.pop("tl", None)
    if not a.no_big:
        if use_tl:
            make_big()
        if os.path.exists(os.path.join(BIG, "model.safetensors")):
            for shape in ((1, 128), (4, 128)):
                r, mb = cache_compare(BIG, shape, max(3, a.reps // 3), use_tl, 2)
                r.pop("tl", None)
                mb.close()
                rows.append(r)
    print()
    print("### run_with_cache (every hook point) vs TransformerLens, same weights")
    print()
    hdr = "| model | tokens | cache MB | libcircuits forward ms | libcircuits run_with_cache ms | only hook_pattern ms"
    if use_tl:
        hdr += " | TL forward ms | TL run_with_cache ms | TL only hook_pattern ms | speed-up (cache) | max-abs diff"
    print(hdr + " |")
    print("|" + "---|" * (hdr.count("|")))
    for r in rows:
        line = (f"| {r['model']} | {list(r['shape'])} | {r['cache_mb']:.1f} | {r['lc_forward']:.2f} | "
                f"{r['lc_cache']:.2f} | {r['lc_cache_pattern']:.2f}")
        if use_tl:
            line += (f" | {r['tl_forward']:.2f} | {r['tl_cache']:.2f} | {r['tl_cache_pattern']:.2f} | "
                     f"{r['tl_cache'] / r['lc_cache']:.1f}x | {r['max_diff']:.1e}")
        print(line + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(threads=a.threads, reps=a.reps, hook_points=n, per_call_us={k: per(k) for k in h if k != "none"
                                                                                      and not k.startswith("tl_")},
                           tl_per_call_us={k: per(k, "tl_none") for k in h if k.startswith("tl_") and k != "tl_none"},
                           cache=[dict(r, shape=list(r["shape"])) for r in rows]), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
