#!/usr/bin/env python3
"""SAE feature statistics over a token dataset (issue 17, section 5): libcircuits'
model.feature_stats (circuits_context_feature_stats_add) against SAELens doing the same in the
same run, and against the forward passes the statistics need.

    /opt/refenv/bin/python bench/sae_stats.py [--threads N] [--tokens 100000] [--pos 128] [--batch 8]
                                              [--out bench/results/sae-stats-DATE.json]
    /opt/refenv/bin/python bench/sae_stats.py --render bench/results/sae-stats-DATE.json

Model: the GPT-2-small-shaped random model (bench/.cache/gpt2-small-random, bench/make_model.py),
loaded with TransformerLens's from_pretrained processing on both sides. SAE: the standard SAE of
bench/sae.py with 24,576 latents at blocks.6.hook_resid_pre, made and saved by SAELens (random
init, b_enc set so that about 0.4 % of the latents fire: L0 ~ 100, as trained GPT-2-small SAEs;
bench/.cache/sae-gpt2-small-L6-24576-sparse, made here as bench/sae.py makes it when absent).
Tokens: --tokens / --pos rows of --pos tokens (bench/sae.py's deterministic ids), fed --batch rows
at a time.

Tasks (each side is its own process, this script with --worker, fed one command at a time):
  fwd_point  the forward passes the statistics need, batched: libcircuits model(tok,
             stop_at_layer=6) (the residual stream before block 6, what hook_resid_pre 6 sees);
             SAELens's HookedSAETransformer the same call;
  fwd_full   the plain forward to the logits (return_type="loss"), batched, both sides;
  stats      the statistics: fire counts (acts_post > 0), sum (double), max, and the top 10
             contexts per latent with an 11-token window.
             libcircuits: model.feature_stats(sae, tokens, batch_size=--batch, top_k=10): each row
             runs alone through blocks 0-5 (hook_resid_pre 6 is read at blocks.5.hook_resid_post;
             docs/saes.md "Feature statistics"), then SAELens's encoder in chunks and the updates.
             SAELens: per batch run_with_cache(tok, names_filter=hook, stop_at_layer=7) (SAELens's
             own activation store stops at hook_layer + 1), sae.encode, then in torch: (acts > 0)
             summed, acts summed in float64, max, and the running top 10 per latent (topk over the
             batch's rows merged with the running one); the windows gathered from the tokens at
             the end. Both under torch.inference_mode / the library's threads.
The two sides' results are compared (frequencies equal, means and maxima close, top-1 contexts the
same) and printed. Ratios reported: our stats / our fwd_point (the goal: statistics at the speed of
the forward passes they need), our stats / our fwd_full, SAELens's stats / ours.

Threads: --threads for both (default every core); OMP_WAIT_POLICY=PASSIVE for torch. Wall and CPU
time are recorded; the shared machine's load average is recorded before and after.
"""
import argparse, datetime, json, os, platform, subprocess, sys, time, warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from sae import Peer, load_hooked_sae_transformer, tokens_np  # noqa: E402  (one copy: bench/sae.py)
MODEL = os.path.join(HERE, ".cache", "gpt2-small-random")
SAE_DIR = os.path.join(HERE, ".cache", "sae-gpt2-small-L6-24576-sparse")
HOOK, LAYER, D_SAE, TOP_K, LEFT, RIGHT = "blocks.6.hook_resid_pre", 6, 24576, 10, 8, 2


def make_sae():
    """bench/sae.py's sparse SAE (SAELens's init, b_enc = -(mean + 2.65 std) of the pre-activation)."""
    if os.path.exists(os.path.join(SAE_DIR, "sae_weights.safetensors")):
        return
    import torch
    import peers
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=768, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK,
                                                                                   model_name="gpt2-small-random")))
    model = load_hooked_sae_transformer(MODEL)
    with torch.no_grad():
        _, cache = model.run_with_cache(peers.tokens(torch, 1, 128, model.cfg.d_vocab), names_filter=HOOK)
        pre = (cache[HOOK][0] - sae.b_dec) @ sae.W_enc
        sae.b_enc.copy_(-(pre.mean(0) + 2.65 * pre.std(0)))
    sae.save_model(SAE_DIR)


# ------------------------------------------------------------------------------ workers


class CircuitsWorker:
    def __init__(self, threads):
        sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
        import circuits
        self.circuits = circuits
        if threads > 0:
            circuits.set_num_threads(threads)
        self.threads = circuits.get_num_threads()
        self.model = circuits.Model.from_pretrained(MODEL)
        sae_cls = getattr(circuits, "SAE", None)
        if sae_cls is not None:
            self.sae = sae_cls.load_from_disk(SAE_DIR)
        else:  # the binding's contract for an SAE (circuits/features.py): _live() gives its handle
            import ctypes
            from circuits import _native as N
            from circuits._arrays import Handle
            out = ctypes.c_void_p()
            N.check(N.lib.circuits_sae_load(ctypes.byref(out), N.cstr(SAE_DIR)))
            h = Handle(out.value, N.lib.circuits_sae_free)
            self.sae = type("SaeHandle", (), {"_live": lambda s: h})()
        self.vocab = self.model.cfg.d_vocab

    def run(self, task, rows, pos, batch):
        tok = tokens_np(rows, pos, self.vocab)
        m = self.model
        if task == "stats":
            t0, c0 = time.perf_counter(), time.process_time()
            st = m.feature_stats(self.sae, tok, batch_size=batch, top_k=TOP_K, context_left=LEFT, context_right=RIGHT)
            freq, mean, mx = st.frequency, st.mean, st.max
            core_ms, core_cpu = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3  # not the checks' reading below
            tops = [st.top(j) for j in range(D_SAE)]
            top1 = [(int(t.rows[0]), int(t.positions[0])) if len(t.values) else None for t in tops]
            return {"core_ms": core_ms, "core_cpu_ms": core_cpu,
                    "result": {"freq": freq.tolist(), "mean": mean.tolist(), "max": mx.tolist(), "top1": top1}}
        for r0 in range(0, rows, batch):
            if task == "fwd_point":
                m(tok[r0:r0 + batch], stop_at_layer=LAYER)
            else:
                m(tok[r0:r0 + batch], return_type="loss")
        return {}


class SaelensWorker:
    def __init__(self, threads):
        import torch
        self.torch = torch
        if threads > 0:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.model = load_hooked_sae_transformer(MODEL)
        from sae_lens import SAE
        self.sae = SAE.load_from_disk(SAE_DIR)
        self.vocab = self.model.cfg.d_vocab

    def run(self, task, rows, pos, batch):
        torch, m, sae = self.torch, self.model, self.sae
        tok = torch.from_numpy(tokens_np(rows, pos, self.vocab))
        with torch.inference_mode():
            if task != "stats":
                for r0 in range(0, rows, batch):
                    if task == "fwd_point":
                        m(tok[r0:r0 + batch], stop_at_layer=LAYER)
                    else:
                        m(tok[r0:r0 + batch], return_type="loss")
                return {}
            t0, c0 = time.perf_counter(), time.process_time()
            fires = torch.zeros(D_SAE, dtype=torch.int64)
            total = torch.zeros(D_SAE, dtype=torch.float64)
            mx = torch.full((D_SAE,), -float("inf"))
            top_v = torch.full((TOP_K, D_SAE), -float("inf"))
            top_i = torch.full((TOP_K, D_SAE), -1, dtype=torch.int64)
            for r0 in range(0, rows, batch):
                t = tok[r0:r0 + batch]
                _, cache = m.run_with_cache(t, names_filter=HOOK, stop_at_layer=LAYER + 1)
                acts = sae.encode(cache[HOOK].reshape(-1, 768))                  # [N, d_sae]
                fires += (acts > 0).sum(0)
                total += acts.sum(0, dtype=torch.float64)
                mx = torch.maximum(mx, acts.max(0).values)
                k = min(TOP_K, acts.shape[0])
                v, i = acts.topk(k, dim=0)                                        # [k, d_sae]
                i = i + r0 * pos                                                  # global token index
                v = torch.where(v > 0, v, torch.full_like(v, -float("inf")))      # only where it fired
                cv, ci = torch.cat([top_v, v]), torch.cat([top_i, i])
                top_v, sel = cv.topk(TOP_K, dim=0)
                top_i = ci.gather(0, sel)
            flat = tok.reshape(-1)
            row, p = top_i // pos, top_i % pos                                    # windows of the top contexts
            offs = torch.arange(-LEFT, RIGHT + 1)
            at = p[..., None] + offs
            ok = (top_i[..., None] >= 0) & (at >= 0) & (at < pos)
            windows = torch.where(ok, flat[(row[..., None] * pos + at.clamp(0, pos - 1)).clamp(0)], -1)
            n = rows * pos
            freq, mean = fires.double() / n, total / n
            core_ms, core_cpu = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3  # not the checks below
            top1 = [(int(row[0, j]), int(p[0, j])) if top_v[0, j] > -float("inf") else None for j in range(D_SAE)]
            del windows
        return {"core_ms": core_ms, "core_cpu_ms": core_cpu,
                "result": {"freq": freq.tolist(), "mean": mean.tolist(), "max": mx.tolist(), "top1": top1}}


def worker_main(peer, threads):
    warnings.filterwarnings("ignore")
    w = CircuitsWorker(threads) if peer == "circuits" else SaelensWorker(threads)
    print(json.dumps({"cmd": "ready", "threads": w.threads}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        task, rows, pos, batch = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        t0, c0 = time.perf_counter(), time.process_time()
        info = w.run(task, rows, pos, batch)
        rec = {"task": task, "rows": rows, "pos": pos, "batch": batch, "ms": (time.perf_counter() - t0) * 1e3,
               "cpu_ms": (time.process_time() - c0) * 1e3}
        rec.update(info)
        if "core_ms" in rec:  # the statistics alone; ms includes reading every result back for the checks
            rec["total_ms"], rec["ms"] = rec["ms"], rec["core_ms"]
            rec["total_cpu_ms"], rec["cpu_ms"] = rec["cpu_ms"], rec["core_cpu_ms"]
        print(json.dumps(rec), flush=True)


# ------------------------------------------------------------------------------ driver


def compare(c, s):
    import numpy as np
    fc, fs = np.array(c["freq"]), np.array(s["freq"])
    mc, ms = np.array(c["mean"]), np.array(s["mean"])
    xc, xs = np.array(c["max"]), np.array(s["max"])
    same_top = sum(a == (tuple(b) if b else None) for a, b in zip(map(lambda t: tuple(t) if t else None, c["top1"]),
                                                                 s["top1"]))
    return {"latents_fired": int((fc > 0).sum()), "mean_L0": float(fc.sum()),
            "freq_equal_fraction": float((fc == fs).mean()), "freq_max_abs_diff": float(np.abs(fc - fs).max()),
            "mean_max_abs_diff": float(np.abs(mc - ms).max()), "max_max_abs_diff": float(np.abs(xc - xs).max()),
            "top1_same_fraction": same_top / len(c["top1"])}


def run(a):
    subprocess.run([sys.executable, os.path.join(HERE, "make_model.py"), MODEL], check=True)
    make_sae()
    rows = max(1, a.tokens // a.pos)
    load_before = os.getloadavg()
    peers_ = [Peer(n, a.threads, script=os.path.abspath(__file__)) for n in ("circuits", "saelens")]
    warm = "%s %d %d %d" % ("{}", a.batch, a.pos, a.batch)
    res = {"tasks": {}}
    for task in ("fwd_point", "fwd_full", "stats"):
        for p in peers_:
            p.ask(warm.format(task))
        cmd = "%s %d %d %d" % (task, rows, a.pos, a.batch)
        recs = {}
        for p in peers_:
            recs[p.name] = p.ask(cmd)
            print(f"{task:10s} {p.name:9s} {recs[p.name]['ms'] / 1e3:8.1f} s wall {recs[p.name]['cpu_ms'] / 1e3:8.1f} s cpu",
                  flush=True)
        if task == "stats":
            res["agreement"] = compare(recs["circuits"].pop("result"), recs["saelens"].pop("result"))
            print("agreement:", json.dumps(res["agreement"]), flush=True)
        res["tasks"][task] = recs
    for p in peers_:
        p.close()
    t = res["tasks"]
    ms = lambda task, who: t[task][who]["ms"]
    cpu = lambda task, who: t[task][who]["cpu_ms"]
    res["cpu_ratios"] = {
        "ours_stats_over_ours_fwd_point": cpu("stats", "circuits") / cpu("fwd_point", "circuits"),
        "saelens_stats_over_ours_stats": cpu("stats", "saelens") / cpu("stats", "circuits"),
        "saelens_stats_over_saelens_fwd_point": cpu("stats", "saelens") / cpu("fwd_point", "saelens"),
    }
    res["ratios"] = {
        "ours_stats_over_ours_fwd_point": ms("stats", "circuits") / ms("fwd_point", "circuits"),
        "ours_stats_over_ours_fwd_full": ms("stats", "circuits") / ms("fwd_full", "circuits"),
        "saelens_stats_over_ours_stats": ms("stats", "saelens") / ms("stats", "circuits"),
        "saelens_stats_over_saelens_fwd_point": ms("stats", "saelens") / ms("fwd_point", "saelens"),
        "saelens_fwd_point_over_ours": ms("fwd_point", "saelens") / ms("fwd_point", "circuits"),
    }
    git = lambda *args: subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True).stdout.strip()
    res.update({"commit": git("rev-parse", "--short", "HEAD"), "date": datetime.date.today().isoformat(),
                "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "threads": {p.name: p.ready["threads"] for p in peers_}, "tokens": rows * a.pos, "rows": rows,
                "pos": a.pos, "batch": a.batch, "hook": HOOK, "d_sae": D_SAE, "top_k": TOP_K,
                "window": LEFT + 1 + RIGHT, "load_average_before": load_before, "load_average_after": os.getloadavg()})
    out = a.out or os.path.join(HERE, "results", f"sae-stats-{res['date']}.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(render(res))
    print("wrote", out)


def render(res):
    t = res["tasks"]
    s = lambda task, who: t[task][who]["ms"] / 1e3
    r, g = res["ratios"], res["agreement"]
    lines = [
        f"{res['tokens']:,} tokens ({res['rows']} rows of {res['pos']}, batches of {res['batch']}), SAE {res['d_sae']:,} "
        f"latents at {res['hook']}, top {res['top_k']}, window {res['window']}; threads {res['threads']}; load average "
        f"{res['load_average_before'][0]:.1f} before, {res['load_average_after'][0]:.1f} after",
        "",
        "| task | libcircuits s wall (cpu) | SAELens s wall (cpu) | SAELens / libcircuits wall (cpu) |",
        "|---|---:|---:|---:|",
    ]
    c = lambda task, who: t[task][who]["cpu_ms"] / 1e3
    for task, label in (("fwd_point", "forward to the SAE's point (stop_at_layer 6)"),
                        ("fwd_full", "forward to the logits"), ("stats", "feature statistics")):
        lines.append(f"| {label} | {s(task, 'circuits'):.1f} ({c(task, 'circuits'):.1f}) | {s(task, 'saelens'):.1f} "
                     f"({c(task, 'saelens'):.1f}) | {s(task, 'saelens') / s(task, 'circuits'):.2f} "
                     f"({c(task, 'saelens') / c(task, 'circuits'):.2f}) |")
    cr = res.get("cpu_ratios")
    lines += ["",
              f"statistics / the forward they need, wall: libcircuits {r['ours_stats_over_ours_fwd_point']:.2f}, SAELens "
              f"{r['saelens_stats_over_saelens_fwd_point']:.2f}"
              + (f"; cpu: libcircuits {cr['ours_stats_over_ours_fwd_point']:.2f}, SAELens "
                 f"{cr['saelens_stats_over_saelens_fwd_point']:.2f}" if cr else "")
              + f"; libcircuits statistics / its forward to the logits {r['ours_stats_over_ours_fwd_full']:.2f} (wall)",
              f"agreement: {g['latents_fired']} latents fired, L0 {g['mean_L0']:.1f}; frequencies equal for "
              f"{100 * g['freq_equal_fraction']:.2f}% of latents (max |diff| {g['freq_max_abs_diff']:.2g}), means within "
              f"{g['mean_max_abs_diff']:.2g}, maxima within {g['max_max_abs_diff']:.2g}, the same top context for "
              f"{100 * g['top1_same_fraction']:.2f}% of latents"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=("circuits", "saelens"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tokens", type=int, default=100000)
    ap.add_argument("--pos", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out")
    ap.add_argument("--render")
    a = ap.parse_args()
    if a.worker:
        return worker_main(a.worker, a.threads)
    if a.render:
        with open(a.render) as f:
            return print(render(json.load(f)))
    run(a)


if __name__ == "__main__":
    main()
