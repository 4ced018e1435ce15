#!/usr/bin/env python3
"""Activation-patching sweeps: libcircuits against TransformerLens's patching functions in the
same process, on the same weights (issue 14, section 6).

    /opt/refenv/bin/python bench/patching.py [--pos 16] [--threads 1] [--no-tl] [--quick]

Model: the GPT-2-small-shaped random model of bench/run.py (bench/.cache/gpt2-small-random, made
on first use), loaded unprocessed by both (TransformerLens as bench/python_hooks.py loads it).
Tokens: clean [1, pos] random, corrupted = clean with two positions changed; metric: the logit
difference of two tokens at the last position (TransformerLens: a Python function of the
logits; libcircuits: the built-in LogitDiff, evaluated in C; also the same Python function
called from C, "py metric").

Sweeps: get_act_patch_resid_pre (layer x position, 12 x pos runs) and
get_act_patch_attn_head_all_pos_every (every head: z, q, k, v, pattern; 5 x 12 x 12 runs).
libcircuits runs each sweep four ways: whole re-runs one cell per run (TransformerLens's method,
in C), whole re-runs with several cells batched per run, incremental one cell per run, and
incremental batched (the default); plus the default with the metric as a Python function. Each grid is checked against TransformerLens's (max-abs
difference printed). One thread each by default: the clock is then the process's CPU time
(other processes on the machine do not inflate it). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (and its OpenMP) loads

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import python_hooks as ph  # noqa: E402  (puts bindings/python on the path; TL loading; the model)

import circuits  # noqa: E402
import circuits.patching as cp  # noqa: E402


def timed(clock, fn, reps):
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = clock()
        out = fn()
        best = min(best, clock() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pos", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-tl", action="store_true")
    ap.add_argument("--quick", action="store_true", help="resid_pre only")
    ap.add_argument("--json", help="also write the rows to this file (bench/run.py's summary reads it)")
    a = ap.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
    circuits.set_num_threads(a.threads) if hasattr(circuits, "set_num_threads") else \
        circuits._native.lib.circuits_set_num_threads(a.threads)
    clock = time.process_time if a.threads == 1 else time.perf_counter
    ph.make_big()
    model = circuits.Model.from_pretrained_no_processing(ph.BIG)
    cfg = model.cfg
    rng = np.random.default_rng(0)
    T = a.pos
    clean = rng.integers(0, cfg.d_vocab, (1, T))
    corrupted = clean.copy()
    corrupted[0, 2] = (clean[0, 2] + 7) % cfg.d_vocab
    corrupted[0, T // 2] = (clean[0, T // 2] + 11) % cfg.d_vocab
    answer, wrong = np.array([17]), np.array([42])
    _, cache = model.run_with_cache(clean)
    metric = cp.LogitDiff(answer, wrong)

    def py_metric(logits):
        return logits[0, -1, answer[0]] - logits[0, -1, wrong[0]]

    sweeps = [("resid_pre [layer x pos]", "get_act_patch_resid_pre")]
    if not a.quick:
        sweeps.append(("every head [5 x layer x head]", "get_act_patch_attn_head_all_pos_every"))
    tl = None
    if not a.no_tl:
        import torch
        from transformer_lens import patching as tp

        torch.set_num_threads(a.threads)
        tl = ph.load_tl(ph.BIG)
        _, tl_cache = tl.run_with_cache(torch.tensor(clean))
        tl_corrupted = torch.tensor(corrupted)

        def tl_metric(logits):
            return logits[0, -1, int(answer[0])] - logits[0, -1, int(wrong[0])]

    modes = [("whole, 1 cell/run", dict(incremental=False, cells_per_run=1)),
             ("whole, batched", dict(incremental=False)),
             ("incremental, 1 cell/run", dict(incremental=True, cells_per_run=1)),
             ("incremental, batched", dict())]
    rows = []
    for label, fn in sweeps:
        f = getattr(cp, fn)
        row = {"sweep": label, "t": {}}
        grids = {}
        for mode, kw in modes:
            row["t"][mode], grids[mode] = timed(clock, lambda: f(model, corrupted, cache, metric, **kw), a.reps)
        row["cells"] = grids[modes[0][0]].size
        row["t"]["py"], g_py = timed(clock, lambda: f(model, corrupted, cache, py_metric), a.reps)
        ref = grids[modes[0][0]]
        row["vs_whole"] = max(float(np.max(np.abs(g - ref))) for g in list(grids.values()) + [g_py])
        if tl is not None:
            with torch.no_grad():
                t_tl, g_tl = timed(clock, lambda: getattr(tp, fn)(tl, tl_corrupted, tl_cache, tl_metric), 1)
            g_tl = g_tl.numpy()
            row["t"]["tl"] = t_tl
            row["vs_tl"] = max(float(np.max(np.abs(g - g_tl))) for g in grids.values())
            row["scale"] = float(np.max(np.abs(g_tl)))
        rows.append(row)
        print(row, file=sys.stderr, flush=True)

    print(f"\nGPT-2-small shape (random weights), tokens [1, {T}], {a.threads} thread(s), "
          f"{'CPU' if a.threads == 1 else 'wall'} seconds per sweep (best of {a.reps}; TransformerLens once)\n")
    print("| sweep | runs | TransformerLens | " + " | ".join(f"libcircuits {m}" for m, _ in modes) +
          " | default, Python metric | TL / default | whole 1 cell / incremental 1 cell | whole batched / "
          "incremental batched | max diff vs TL |")
    print("|---|---:|" + "---:|" * (len(modes) + 6))
    for r in rows:
        t = r["t"]
        tlc = f"{t['tl']:.2f} s" if "tl" in t else "-"
        ratio = f"**{t['tl'] / t['incremental, batched']:.0f}x**" if "tl" in t else "-"
        diff = f"{r['vs_tl']:.1e} (grid max {r['scale']:.2f})" if "vs_tl" in r else "-"
        print(f"| {r['sweep']} | {r['cells']} | {tlc} | " + " | ".join(f"{t[m]:.2f} s" for m, _ in modes) +
              f" | {t['py']:.2f} s | {ratio} | **{t['whole, 1 cell/run'] / t['incremental, 1 cell/run']:.2f}x** | "
              f"**{t['whole, batched'] / t['incremental, batched']:.2f}x** | {diff} |")
    print(f"\nevery libcircuits grid vs whole re-runs of one cell, max |difference|: "
          f"{max(r['vs_whole'] for r in rows):.1e}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(pos=T, threads=a.threads, reps=a.reps, clock="cpu" if a.threads == 1 else "wall", rows=rows), f)
    model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
