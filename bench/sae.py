#!/usr/bin/env python3
"""SAEs spliced into the forward pass (issue 17, section 5): the Python binding's
``run_with_saes`` / ``run_with_cache_with_saes`` against SAELens's HookedSAETransformer in the
same run.

    /opt/refenv/bin/python bench/sae.py [--threads N] [--reps 3] [--shapes 1:128,8:128,1:1024]
                                        [--tasks fwd,saes,cache_sae,cache_all] [--saes sparse,dense]
                                        [--out bench/results/sae-DATE.json]
    /opt/refenv/bin/python bench/sae.py --render bench/results/sae-DATE.json

Model: the GPT-2-small-shaped random model of bench/run.py (bench/.cache/gpt2-small-random,
made by bench/make_model.py on first use: 12 layers, d_model 768, vocab 50257). Both sides
load it with TransformerLens's from_pretrained processing (libcircuits: Model.from_pretrained's
defaults; SAELens: a HookedSAETransformer built from the checkpoint as bench/peers.py builds
TransformerLens's, load_and_process_state_dict with fold_ln, center_writing_weights,
center_unembed, fold_value_biases), so both compute the same function (the logits are checked
to agree, printed).

SAEs: standard (ReLU) SAEs with 24,576 latents at blocks.6.hook_resid_pre, random init, made
and saved by SAELens itself (StandardSAE(StandardSAEConfig(...)).save_model, torch seed 0;
bench/.cache/sae-gpt2-small-L6-24576-*); libcircuits loads them with circuits.SAE.load_from_disk,
SAELens with SAE.load_from_disk. Two of them:
  sparse  SAELens's init with b_enc set per latent to -(mean + 2.65 std) of its pre-activation
          over the model's activations at the hook ([1, 128] of the bench's tokens), so that about
          0.4 % of the latents fire: L0 ~ 100 per token, as trained GPT-2-small SAEs have (tens to
          a few hundred). The decoder's input is then sparse, and libcircuits decodes sparse rows
          by their non-zero latents (lib/sae/sae_math.c), SAELens with a dense GEMM.
  dense   SAELens's init as it is (b_enc = 0): half the latents fire on every token, the worst
          case for libcircuits (both decode with a dense GEMM).
The L0 measured at the last position is printed with the cache runs.

Tasks, each with tokens [batch, pos] (bench/peers.py's tokens), with and without the error term:
  fwd        the plain forward (model(tokens)), no SAE: the floor, for the SAE's own cost;
  saes       run_with_saes(tokens, saes=[sae], use_error_term=E): the spliced forward, logits
             (sparse and dense SAE);
  cache_sae  run_with_cache_with_saes(..., names_filter=the SAE's points): the latents and the
             other hook_sae_* values (what a feature analysis reads), logits (sparse SAE);
  cache_all  run_with_cache_with_saes(...) with the default names_filter: every hook point of the
             spliced model cached (the call as SAELens's docs use it; sparse SAE).
SAELens runs under torch.inference_mode(); the binding's calls are the public Python API (the
attach, run and detach of each call included on both sides).

Each side is its own process (this script with --worker circuits|saelens), fed one command at
a time so that repetitions interleave (libcircuits, SAELens, libcircuits, ...). One warm-up per
side and configuration, then --reps repetitions; the median is reported. Threads: --threads for
both (default: every core, as bench/run.py; circuits.set_num_threads; torch.set_num_threads with
OMP_WAIT_POLICY=PASSIVE). With one thread the clock is each process's CPU time, which other
processes competing for the cores do not inflate (the development machine is shared); with more
it is wall time. Both clocks are recorded.
"""
import argparse, datetime, json, os, platform, statistics, subprocess, sys, time, warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
MODEL = os.path.join(HERE, ".cache", "gpt2-small-random")
SAE_DIRS = {v: os.path.join(HERE, ".cache", "sae-gpt2-small-L6-24576-" + v) for v in ("sparse", "dense")}
HOOK = "blocks.6.hook_resid_pre"
D_SAE = 24576
TASKS = ("fwd", "saes", "cache_sae", "cache_all")


def make_saes():
    """The SAEs, made and saved by SAELens (once)."""
    if all(os.path.exists(os.path.join(d, "sae_weights.safetensors")) for d in SAE_DIRS.values()):
        return
    import torch
    import peers
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    torch.manual_seed(0)
    cfg = StandardSAEConfig(d_in=768, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK, model_name="gpt2-small-random"))
    sae = StandardSAE(cfg)
    sae.save_model(SAE_DIRS["dense"])
    model = load_hooked_sae_transformer(MODEL)
    with torch.no_grad():
        _, cache = model.run_with_cache(peers.tokens(torch, 1, 128, model.cfg.d_vocab), names_filter=HOOK)
        pre = (cache[HOOK][0] - sae.b_dec) @ sae.W_enc
        sae.b_enc.copy_(-(pre.mean(0) + 2.65 * pre.std(0)))
    sae.save_model(SAE_DIRS["sparse"])


def tokens_np(batch, pos, vocab):
    import numpy as np
    i = np.arange(batch * pos, dtype=np.int64)
    return ((i * 2654435761) % 2**32 % vocab).reshape(batch, pos)


def is_sae_point(name):
    return ".hook_sae_" in name


# ------------------------------------------------------------------------------ workers


class CircuitsWorker:
    def __init__(self, threads):
        sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
        import circuits
        self.circuits = circuits
        if threads > 0:
            circuits.set_num_threads(threads)
        self.threads = circuits.get_num_threads()
        t0 = time.perf_counter()
        self.model = circuits.Model.from_pretrained(MODEL)
        self.saes = {v: circuits.SAE.load_from_disk(d) for v, d in SAE_DIRS.items()}
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.vocab = self.model.cfg.d_vocab

    def run(self, task, B, T, err, variant):
        m, tok = self.model, tokens_np(B, T, self.vocab)
        sae = self.saes.get(variant)
        cache = None
        if task == "fwd":
            logits = m(tok)
        elif task == "saes":
            logits = m.run_with_saes(tok, saes=[sae], use_error_term=err)
        elif task == "cache_sae":
            logits, cache = m.run_with_cache_with_saes(tok, saes=[sae], use_error_term=err, names_filter=is_sae_point)
        else:
            logits, cache = m.run_with_cache_with_saes(tok, saes=[sae], use_error_term=err)
        info = {"logits_probe": [float(x) for x in logits[0, -1, :4]]}
        if cache is not None:
            acts = cache[HOOK + ".hook_sae_acts_post"]
            info.update(cache_entries=len(cache), acts_probe=[float(acts[0, -1].sum()), float((acts[0, -1] > 0).sum())])
        return info


class SaelensWorker:
    def __init__(self, threads):
        import torch
        self.torch = torch
        if threads > 0:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        t0 = time.perf_counter()
        self.model = load_hooked_sae_transformer(MODEL)
        from sae_lens import SAE
        self.saes = {v: SAE.load_from_disk(d) for v, d in SAE_DIRS.items()}
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.vocab = self.model.cfg.d_vocab

    def run(self, task, B, T, err, variant):
        import peers
        torch, m = self.torch, self.model
        sae = self.saes.get(variant)
        tok = peers.tokens(torch, B, T, self.vocab)
        cache = None
        with torch.inference_mode():
            if task == "fwd":
                logits = m(tok)
            elif task == "saes":
                logits = m.run_with_saes(tok, saes=[sae], use_error_term=err)
            elif task == "cache_sae":
                logits, cache = m.run_with_cache_with_saes(tok, saes=[sae], use_error_term=err,
                                                           names_filter=is_sae_point)
            else:
                logits, cache = m.run_with_cache_with_saes(tok, saes=[sae], use_error_term=err)
        info = {"logits_probe": [float(x) for x in logits[0, -1, :4]]}
        if cache is not None:
            acts = cache[HOOK + ".hook_sae_acts_post"]
            info.update(cache_entries=len(cache), acts_probe=[float(acts[0, -1].sum()), float((acts[0, -1] > 0).sum())])
        return info


def load_hooked_sae_transformer(path):
    """bench/peers.py's load_tl with HookedSAETransformer: TransformerLens's from_pretrained
    steps for the local checkpoint (no hub), default processing."""
    import gc
    import peers
    from sae_lens import HookedSAETransformer
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    hf = peers.load_hf(path)
    cfg = peers.tl_config(hf.config)
    sd = convert_gpt2_weights(hf, cfg)
    model = HookedSAETransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(sd, fold_ln=True, center_writing_weights=True, center_unembed=True,
                                      fold_value_biases=True)
    del hf, sd
    gc.collect()
    return model.eval()


def worker_main(peer, threads):
    warnings.filterwarnings("ignore")
    w = CircuitsWorker(threads) if peer == "circuits" else SaelensWorker(threads)
    print(json.dumps({"cmd": "ready", "load_ms": w.load_ms, "threads": w.threads}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        task, B, T, err, variant = parts[0], int(parts[1]), int(parts[2]), parts[3] == "1", parts[4]
        t0, c0 = time.perf_counter(), time.process_time()
        info = w.run(task, B, T, err, variant)
        rec = {"task": task, "batch": B, "pos": T, "error_term": err, "sae": variant, "ms": (time.perf_counter() - t0) * 1e3,
               "cpu_ms": (time.process_time() - c0) * 1e3}
        rec.update(info)
        print(json.dumps(rec), flush=True)


# ------------------------------------------------------------------------------ driver


class Peer:
    """A worker process running `script` (this file by default; bench/sae_stats.py passes its own)."""

    def __init__(self, name, threads, script=None):
        env = dict(os.environ)
        env["CIRCUITS_NUM_THREADS"] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)
        self.name = name
        self.p = subprocess.Popen([sys.executable, script or os.path.abspath(__file__), "--worker", name, "--threads",
                                   str(threads)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self.read()

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died")
        return json.loads(line)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass
        self.p.wait()


def configs(shapes, tasks, variants):
    for B, T in shapes:
        for task in tasks:
            for variant in ([v for v in variants if v in SAE_DIRS] if task == "saes" else ("sparse",)):
                for err in ((0,) if task == "fwd" else (0, 1)):
                    yield task, B, T, err, ("-" if task == "fwd" else variant)


def run(a):
    subprocess.run([sys.executable, os.path.join(HERE, "make_model.py"), MODEL], check=True)
    make_saes()
    shapes = [tuple(int(x) for x in s.split(":")) for s in a.shapes.split(",")]
    tasks = [t for t in a.tasks.split(",") if t]
    peers_ = [Peer("circuits", a.threads), Peer("saelens", a.threads)]
    clock = "cpu_ms" if a.threads == 1 else "ms"
    results = []
    for cfg in configs(shapes, tasks, a.saes.split(",")):
        cmd = "%s %d %d %d %s" % cfg
        recs = {p.name: [] for p in peers_}
        for p in peers_:  # warm-up
            p.ask(cmd)
        for _ in range(a.reps):
            for p in peers_:
                recs[p.name].append(p.ask(cmd))
        row = {"task": cfg[0], "batch": cfg[1], "pos": cfg[2], "error_term": bool(cfg[3]), "sae": cfg[4]}
        for name, rs in recs.items():
            row[name] = {"median_ms": statistics.median(r[clock] for r in rs),
                         "median_wall_ms": statistics.median(r["ms"] for r in rs),
                         "median_cpu_ms": statistics.median(r["cpu_ms"] for r in rs),
                         "runs": rs}
        c, s = recs["circuits"][-1], recs["saelens"][-1]
        row["logits_max_abs_diff_probe"] = max(abs(x - y) for x, y in zip(c["logits_probe"], s["logits_probe"]))
        if "acts_probe" in c:
            row["acts_probe"] = {"circuits": c["acts_probe"], "saelens": s["acts_probe"]}
            row["cache_entries"] = {"circuits": c["cache_entries"], "saelens": s["cache_entries"]}
        row["speedup"] = row["saelens"]["median_ms"] / row["circuits"]["median_ms"]
        results.append(row)
        print(line(row), flush=True)
    for p in peers_:
        p.close()
    git = lambda *args: subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True).stdout.strip()
    out = {"commit": git("rev-parse", "--short", "HEAD"), "lib_changes_uncommitted": git("status", "--porcelain", "lib"),
           "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "threads": a.threads, "clock": clock, "reps": a.reps, "hook": HOOK, "d_sae": D_SAE,
           "load_ms": {p.name: p.ready["load_ms"] for p in peers_}, "loadavg": os.getloadavg(), "results": results}
    path = a.out or os.path.join(HERE, "results", "sae-%s.json" % out["date"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)
    render(out)


def line(r):
    return "%-9s %-6s [%d, %4d] error_term=%d  circuits %8.1f ms  saelens %8.1f ms  x%.2f  (logits probe diff %.1e)" % (
        r["task"], r["sae"], r["batch"], r["pos"], r["error_term"], r["circuits"]["median_ms"],
        r["saelens"]["median_ms"], r["speedup"], r["logits_max_abs_diff_probe"]) + (
        "  L0 at the last position %d / %d" % (r["acts_probe"]["circuits"][1], r["acts_probe"]["saelens"][1])
        if "acts_probe" in r else "")


def render(out):
    clock = "process CPU time" if out["clock"] == "cpu_ms" else "wall time"
    print("\n%d thread(s), median of %d (%s), ms\n" % (out["threads"], out["reps"], clock))
    print("| task | SAE | tokens | error term | libcircuits | SAELens | SAELens / libcircuits |")
    print("|---|---|---|---|---:|---:|---:|")
    for r in out["results"]:
        print("| %s | %s | [%d, %d] | %s | %.1f | %.1f | %.2f |" % (
            r["task"], r.get("sae", "-"), r["batch"], r["pos"], "yes" if r["error_term"] else "no",
            r["circuits"]["median_ms"], r["saelens"]["median_ms"], r["speedup"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shapes", default="1:128,8:128,1:1024")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--saes", default="sparse,dense", help="the SAEs of the saes task")
    ap.add_argument("--out")
    ap.add_argument("--worker", choices=["circuits", "saelens"])
    ap.add_argument("--render")
    a = ap.parse_args()
    if a.worker:
        return worker_main(a.worker, a.threads)
    if a.render:
        with open(a.render) as f:
            return render(json.load(f))
    run(a)


if __name__ == "__main__":
    main()
