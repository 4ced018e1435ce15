#!/usr/bin/env python3
"""Composition scores: libcircuits against TransformerLens's all_composition_scores, same weights,
same run.

Writes (once, cached under bench/.cache/, not committed) random attention-only models in the
TransformerLens layout with build/bench/bench_compose, then times
  - libcircuits: circuits_model_composition_scores for Q, K, V (bench_compose run)
  - TransformerLens: HookedTransformer.all_composition_scores(mode) on the same weights
    (skipped with --no-tl, and always for shapes TL cannot hold in memory)
and reports seconds, the fraction of the machine's sgemm peak (measured in the same run) that
libcircuits' GEMM work reaches, and the ratio to TransformerLens. Needs torch + transformer_lens
(the reference venv) for the TL column.
"""
import argparse, json, os, resource, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
EXE = os.path.join(os.path.dirname(HERE), "build", "bench", "bench_compose")  # --exe to change
SHAPES = {  # name: (n_layers, n_heads, d_model, d_head, d_vocab)
    "gpt2-small": (12, 12, 768, 64, 1000),
    "7b": (32, 32, 4096, 128, 1000),
}


def ensure(name):
    d = os.path.join(HERE, ".cache", "compose-" + name)
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        os.makedirs(d, exist_ok=True)
        subprocess.run([EXE, "make", d] + [str(x) for x in SHAPES[name]], check=True)
    return d


def run_circuits(d, reps, modes):
    out = subprocess.run([EXE, "run", d, str(reps), modes], check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines()]


def run_tl(d, reps, modes):
    import torch
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    cfg = json.load(open(os.path.join(d, "tl_config.json")))
    model = HookedTransformer(HookedTransformerConfig(**cfg, device="cpu"))
    model.load_state_dict(load_file(os.path.join(d, "model.safetensors")), strict=False)
    res = {}
    with torch.inference_mode():
        for m in modes:
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                model.all_composition_scores(m)
                best = min(best, time.perf_counter() - t0)
            res[m] = best
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return res


def emit_json(a):
    """One JSON line per measurement (bench/run.py folds them into its table)."""
    for name in a.shapes.split(","):
        d = ensure(name)
        for r in run_circuits(d, a.reps if name != "7b" else 1, a.modes):
            print(json.dumps(dict(r, shape=name)), flush=True)
        if not a.no_tl and name != "7b":
            tl = run_tl(d, a.reps, a.modes)
            for m in a.modes:
                print(json.dumps({"what": "tl_composition", "shape": name, "mode": m, "seconds": tl[m]}), flush=True)
            print(json.dumps({"what": "tl_composition_rss", "shape": name, "peak_rss_gb": tl["peak_rss_gb"]}), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="gpt2-small", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--modes", default="QKV")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-tl", action="store_true")
    ap.add_argument("--exe", help="the bench_compose executable (default: build/bench/bench_compose)")
    ap.add_argument("--json", action="store_true", help="JSON lines for bench/run.py instead of a table")
    a = ap.parse_args()
    if a.exe:
        global EXE
        EXE = a.exe
    if a.json:
        return emit_json(a)
    print("| shape | mode | libcircuits s | GEMM GFLOP | % of sgemm peak | TransformerLens s | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in a.shapes.split(","):
        d = ensure(name)
        rows = run_circuits(d, a.reps if name != "7b" else 1, a.modes)
        peak = next(r["gflops"] for r in rows if r["what"] == "peak")
        # TransformerLens materialises [L, H, L, H, d_model, d_head] products: impossible at 7B scale
        tl = run_tl(d, a.reps, a.modes) if not a.no_tl and name != "7b" else {}
        for r in rows:
            if r["what"] != "composition":
                continue
            frac = r["gemm_gflop"] / r["seconds"] / peak * 100
            t = tl.get(r["mode"])
            print(f"| {name} | {r['mode']} | {r['seconds']:.3f} | {r['gemm_gflop']:.0f} | {frac:.0f}% (peak {peak:.0f} GFLOP/s) | "
                  + (f"{t:.2f} | {t / r['seconds']:.1f}x |" if t else "not run | |"))
        if tl:
            print(f"\nTransformerLens peak RSS for {name}: {tl['peak_rss_gb']:.1f} GB")


if __name__ == "__main__":
    sys.exit(main())
