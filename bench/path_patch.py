#!/usr/bin/env python3
"""Path patching on the GPT-2-small shape: libcircuits' sweeps against ARENA's implementation in
plain TransformerLens hooks (tests/reference/generate_path_patching.py's path_patch), in one
process, on the same weights, both on T threads (default 1).

    /opt/refenv/bin/python bench/path_patch.py MODEL_DIR [--shape B:T] [--threads T] [--cells N]

MODEL_DIR: GPT-2 small from bench/make_model.py. Grids: every head as the sender with the logits
as the receiver, and with the queries of heads 9.6 and 9.9 as receivers (the IOI paper's name
movers). TransformerLens runs the first --cells cells of each grid (in the grid's order, so
early layers: its per-cell cost does not depend on the layer) and is extrapolated to the grid;
libcircuits runs whole grids. Both grids are checked against each other on the cells both ran.
Prints one JSON line per measurement.
"""
import argparse, json, os, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
sys.path.insert(0, os.path.join(REPO, "bindings", "python"))

import numpy as np  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--shape", default="8:16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cells", type=int, default=12)
    a = ap.parse_args()
    B, T = map(int, a.shape.split(":"))

    import torch
    import generate_path_patching as GPP  # ARENA's hooks (sets 1 torch thread, no grad)
    import peers
    import circuits
    from circuits.path_patching import path_patch_sweep

    torch.set_num_threads(a.threads)
    circuits.set_num_threads(a.threads)
    tl = peers.load_tl(a.model)
    cm = circuits.Model.from_pretrained(a.model)
    L, H, V = tl.cfg.n_layers, tl.cfg.n_heads, tl.cfg.d_vocab
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, V, (B, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(0, V, (B,), generator=g)
    answer = torch.randint(0, V, (B,), generator=g)
    wrong = torch.randint(0, V, (B,), generator=g)
    metric = lambda lg: GPP.logit_diff(lg, answer, wrong)  # noqa: E731
    kw = dict(answer_tokens=answer.numpy(), wrong_tokens=wrong.numpy())
    receivers = [(9, 6, "q"), (9, 9, "q")]

    keep = lambda n: n.endswith("hook_z") or n.endswith("hook_mlp_out")  # noqa: E731
    t0 = time.perf_counter()
    _, orig_cache = tl.run_with_cache(clean, names_filter=keep)
    _, new_cache = tl.run_with_cache(corrupted, names_filter=keep)
    tl_step1 = time.perf_counter() - t0
    for name, recv in (("logits", None), ("heads_q_9.6_9.9", receivers)):
        cells = [(l, h) for l in range(L) for h in range(H)][: a.cells]
        tl_vals = []
        t0 = time.perf_counter()
        for l, h in cells:
            lg = GPP.path_patch(tl, clean, corrupted, [(l, h)], recv, False, new_cache, orig_cache)
            tl_vals.append(metric(lg).item())
        tl_cell = (time.perf_counter() - t0) / len(cells)
        # libcircuits: the whole grid, step 1 included, best of 3
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            grid = path_patch_sweep(cm, clean.numpy(), corrupted.numpy(), "logit_diff",
                                    receivers=None if recv is None else [r[:2] for r in recv], **kw)
            times.append(time.perf_counter() - t0)
        ours = min(times)
        n_ran = sum(1 for l in range(L) for h in range(H) if recv is None or l < max(r[0] for r in recv))
        tl_grid = tl_step1 + tl_cell * n_ran
        diff = max(abs(float(grid[l, h]) - v) for (l, h), v in zip(cells, tl_vals))
        print(json.dumps(dict(grid=name, shape=[B, T], threads=a.threads, cells_run=n_ran,
                              tl_ms_per_cell=round(tl_cell * 1e3, 2), tl_grid_s=round(tl_grid, 3),
                              circuits_grid_s=round(ours, 3), circuits_ms_per_cell=round(ours / n_ran * 1e3, 2),
                              speedup=round(tl_grid / ours, 2), max_abs_diff=diff)), flush=True)
    cm.close()


if __name__ == "__main__":
    main()
