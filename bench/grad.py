#!/usr/bin/env python3
"""Gradients (issue 16, section 5): libcircuits' backward pass against PyTorch eager autograd
(the transformers GPT2LMHeadModel) and TransformerLens (HookedTransformer) in the same run.

    /opt/refenv/bin/python bench/grad.py [--threads 2] [--reps 7] [--shapes 128,512]
                                         [--attr-pos 128] [--by-pos-pos 16] [--mem-pos 1024]
                                         [--out bench/results/grad-DATE.json] [--skip a,b,c,d]
    /opt/refenv/bin/python bench/grad.py --render bench/results/grad-DATE.json

Model: the GPT-2-small-shaped random model of bench/run.py (bench/.cache/gpt2-small-random:
transformers' GPT2Config defaults, seed 0, fp32; made on first use). Every contender runs it
unprocessed (libcircuits: no fold_ln / centering / value-bias folding; TransformerLens:
load_and_process_state_dict with every processing step off), so the three compute the same
function and their losses agree (printed). Tokens [1, T]: bench/peers.py's.

Each contender is its own process (libcircuits: build-bench/bench/grad_bench, a C driver calling
the library directly, so no binding overhead is measured; PyTorch and TransformerLens: this
script with --worker), fed one command at a time so that the repetitions interleave
(libcircuits, PyTorch, TransformerLens, libcircuits, ...): the load of the other sessions on a
shared machine hits every contender alike. One warm-up per contender and task, then --reps
repetitions; medians of wall time (the CPU time of each process is recorded too). Same thread
count everywhere: CIRCUITS_NUM_THREADS + circuits_set_num_threads for libcircuits (OpenBLAS
single-threaded inside its pool), torch.set_num_threads + OMP_NUM_THREADS for the peers, with
OMP_WAIT_POLICY=PASSIVE unless set (torch's threads spinning at barriers on a shared machine
made its forward at [1, 128] 2-3x slower than with PASSIVE; libcircuits' pool always sleeps).

What each task computes (metric: the mean next-token loss over the T-1 pairs, as
GPT2LMHeadModel(labels=tokens).loss, TransformerLens return_type="loss", CIRCUITS_METRIC_LOSS):
  (a) fwd+bwd, weight grads: the loss, the logits and d loss / d every weight.
      PyTorch: zero_grad(set_to_none), model(tok, labels=tok).loss.backward() (W_E and W_U are
      tied there: one gradient); TransformerLens: the same with return_type="loss" (untied:
      W_E and W_U separate, as in libcircuits); libcircuits: circuits_context_backward with
      weight_grads = 1, no cache.
  (a') fwd+bwd, activation grads: the loss, the logits and the gradient at every activation
      down to the embeddings, no weight gradient (the gradient attribution methods need).
      PyTorch: every parameter requires_grad False, inputs_embeds = wte(tok) a leaf that
      requires grad; TransformerLens: the same, hook_embed / hook_pos_embed made leaves by a
      forward hook; libcircuits: circuits_context_backward, weight_grads = 0, no cache. Nobody
      stores the gradients.
  (b) the gradient at every hook point, cached: TransformerLens run_with_cache(tok,
      return_type="loss", incl_bwd=True) (every activation and every gradient in the cache),
      with frozen weights as in (a') and also as TransformerLens runs it by default (weights
      require grad: their gradients are computed too); libcircuits: circuits_context_backward
      with a cache of every point (activations and "_grad" entries), without and with weight
      gradients. PyTorch's transformers model has no hook points: not in this row.
  (c) attribution patching over every head: circuits_context_attribution_patch (HEAD_Z_ALL_POS,
      HEAD_Z_BY_POS) against circuits_context_activation_patch of the same grid (default options:
      incremental, batched), both patching the clean run's hook_z into the corrupted tokens
      (positions 2 and T/2 changed), metric the logit difference of tokens 17 and 42 at the last
      position. In forward-equivalents: time / the median forward at the same shape. The
      attribution total counts the run that caches the source hook_z (the "one corrupted
      forward" of the method) and the call (one forward and backward and the products).
  (d) peak memory of one backward at [1, --mem-pos] ((a') and (a)), each contender in a fresh
      process: VmHWM reset to the current RSS after loading (/proc/self/clear_refs 5), so the
      peak is the backward's; the RSS after loading is reported beside it.
"""
import argparse, datetime, json, os, platform, resource, statistics, subprocess, sys, time, warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
MODEL = os.path.join(HERE, ".cache", "gpt2-small-random")
MB = 1024.0  # KiB per MiB


# ------------------------------------------------------------------------------ Python workers


def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def load_tl_unprocessed(path):
    """HookedTransformer from the checkpoint without a hub (bench/peers.py's steps), every
    processing step off: the arithmetic of the transformers model and of libcircuits' raw load."""
    import gc
    import peers
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    hf = peers.load_hf(path)
    cfg = peers.tl_config(hf.config)
    sd = {k: v.detach().clone() for k, v in convert_gpt2_weights(hf, cfg).items()}
    model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False, refactor_factored_attn_matrices=False)
    del hf, sd
    gc.collect()
    return model.eval()


class Worker:
    """PyTorch (peer "torch") or TransformerLens ("tl") answering grad_bench's commands."""

    def __init__(self, peer, threads):
        import torch
        import peers
        self.torch, self.peer = torch, peer
        if threads > 0:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        self.model = peers.load_hf(MODEL) if peer == "torch" else load_tl_unprocessed(MODEL)
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.vocab = self.model.config.vocab_size if peer == "torch" else self.model.cfg.d_vocab
        self.frozen = None
        self.leaf_hooks = False

    def tokens(self, T):
        import peers
        return peers.tokens(self.torch, 1, T, self.vocab)

    def freeze(self, frozen):
        """frozen: no parameter requires grad (TL: the embedding hooks' outputs become leaves)."""
        if self.frozen == frozen:
            return
        for p in self.model.parameters():
            p.requires_grad_(not frozen)
            p.grad = None
        if self.peer == "tl":
            if frozen and not self.leaf_hooks:
                leaf = lambda x, hook: x.detach().requires_grad_(True)
                for n in ("hook_embed", "hook_pos_embed"):
                    self.model.add_hook(n, leaf, is_permanent=True)
            elif not frozen and self.leaf_hooks:
                self.model.reset_hooks(including_permanent=True)
            self.leaf_hooks = frozen
        self.frozen = frozen

    def fwd(self, tok):
        with self.torch.inference_mode():
            out = self.model(tok)
        logits = out.logits if self.peer == "torch" else out
        return {"logits_probe": [float(x) for x in logits[0, -1, :4]]}

    def loss(self, tok):
        """The mean next-token loss with autograd on, from the tokens or (frozen torch) from a
        leaf inputs_embeds."""
        if self.peer == "tl":
            return self.model(tok, return_type="loss")
        if self.frozen:
            emb = self.model.transformer.wte(tok).detach().requires_grad_(True)
            return self.model(inputs_embeds=emb, labels=tok).loss
        return self.model(tok, labels=tok).loss

    def bwd(self, tok, mode):
        info = {}
        if mode in ("w", "a"):
            self.model.zero_grad(set_to_none=True)
            loss = self.loss(tok)
            loss.backward()
        elif self.peer == "tl":  # c, cw: run_with_cache(incl_bwd=True), TL's own call
            self.model.zero_grad(set_to_none=True)
            loss, cache = self.model.run_with_cache(tok, return_type="loss", incl_bwd=True)
            grads = [k for k in cache if k.endswith("_grad")]
            info.update(cache_entries=len(cache), grad_entries=len(grads),
                        cache_bytes=sum(v.numel() * v.element_size() for v in cache.values()),
                        resid_pre0_grad_probe=[float(x) for x in cache["blocks.0.hook_resid_pre_grad"][0, 0, :4]])
            del cache
        else:
            raise ValueError("torch has no hook points: modes w and a only")
        info["loss"] = float(loss)
        if mode in ("w", "cw"):
            ln = self.model.transformer.ln_f.weight if self.peer == "torch" else self.model.ln_final.w
            info["ln_final_w_grad_probe"] = [float(x) for x in ln.grad[:4]]
            info["weight_grads"] = sum(p.grad is not None for p in self.model.parameters())
        return info

    def handle(self, line):
        parts = line.split()
        cmd = parts[0]
        if cmd == "rss":
            return {"cmd": "rss", "hwm_kb": status_kb("VmHWM"), "rss_kb": status_kb("VmRSS")}
        T = int(parts[1])
        tok = self.tokens(T)
        self.freeze(cmd == "bwd" and parts[2] in ("a", "c"))
        t0, c0 = time.perf_counter(), time.process_time()
        info = self.fwd(tok) if cmd == "fwd" else self.bwd(tok, parts[2])
        ms, cpu = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
        rec = {"cmd": cmd, "pos": T, "ms": ms, "cpu_ms": cpu}
        if cmd == "bwd":
            rec["mode"] = parts[2]
        rec.update(info)
        return rec


def worker_main(peer, threads):
    warnings.filterwarnings("ignore")
    w = Worker(peer, threads)
    print(json.dumps({"cmd": "ready", "load_ms": w.load_ms, "threads": w.torch.get_num_threads(),
                      "attn_implementation": getattr(getattr(w.model, "config", None), "_attn_implementation", None)}),
          flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        if line.split()[0] == "quit":
            break
        if line.split()[0] == "clear_hwm":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            print(json.dumps({"cmd": "clear_hwm"}), flush=True)
            continue
        try:
            rec = w.handle(line)
        except Exception as e:  # reported, the driver stops
            rec = {"cmd": line.split()[0], "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(rec), flush=True)
    return 0


# ------------------------------------------------------------------------------ the driver


class Proc:
    """One contender's process, one command at a time."""

    def __init__(self, name, args, env):
        self.name = name
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.ready = self.read()

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: process ended (exit {self.p.wait()})")
        rec = json.loads(line)
        if "error" in rec:
            raise RuntimeError(f"{self.name}: {rec}")
        return rec

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        self.p.wait()


def build(build_dir):
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        subprocess.run(["meson", "setup", build_dir, "-Dbuildtype=release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", build_dir, "-j2", "bench/grad_bench"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(build_dir, "bench", "grad_bench")


def make_model():
    if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
        import make_model as mm
        mm.make_gpt2(MODEL)


def env_for(threads):
    return dict(os.environ, CIRCUITS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1", TQDM_DISABLE="1",
                # torch's OpenMP threads sleep rather than spin between parallel regions: on a shared,
                # oversubscribed machine spinning made its forward 2-3x slower (measured here)
                OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
                TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")


def start(a, exe, who):
    env = env_for(a.threads)
    if who == "circuits":
        return Proc(who, [exe, MODEL, "--threads", str(a.threads)], env)
    return Proc(who, [a.python, os.path.abspath(__file__), "--worker", who, "--threads", str(a.threads)], env)


def interleaved(procs, cmds, reps, log, warmup=1):
    """cmds: {who: command}; `warmup` untimed rounds, then reps rounds. Returns {who: [records]}."""
    out = {who: [] for who in cmds}
    for r in range(1 - warmup, reps + 1):
        for who, cmd in cmds.items():
            rec = procs[who].ask(cmd)
            rec["load1"] = os.getloadavg()[0]
            if r > 0:
                out[who].append(rec)
            log(f"  {who:9s} {cmd:28s} {rec['ms']:9.1f} ms{'  (warm-up)' if r <= 0 else ''}")
    return out


def summarize(recs):
    ms = [r["ms"] for r in recs]
    s = dict(recs[-1])
    s.update(median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms), reps=len(ms),
             median_cpu_ms=statistics.median(r["cpu_ms"] for r in recs) if "cpu_ms" in recs[0] else None,
             load1=statistics.mean(r["load1"] for r in recs))
    for k in ("ms", "cpu_ms"):
        s.pop(k, None)
    return s


def speed(a, exe, res, log):
    procs = {"circuits": start(a, exe, "circuits"), "torch": start(a, exe, "torch"), "tl": start(a, exe, "tl")}
    res["ready"] = {k: p.ready for k, p in procs.items()}
    try:
        for T in a.shapes:
            reps = a.reps if T <= 128 else max(3, a.reps - 2)
            log(f"[{T}] forward")
            for who, recs in interleaved(procs, {w: f"fwd {T}" for w in procs}, reps, log).items():
                res["rows"].append(dict(task="fwd", who=who, **summarize(recs)))
            for mode, who_list in (("w", ["circuits", "torch", "tl"]), ("a", ["circuits", "torch", "tl"]),
                                   ("c", ["circuits", "tl"]), ("cw", ["circuits", "tl"])):
                log(f"[{T}] backward {mode}")
                for who, recs in interleaved(procs, {w: f"bwd {T} {mode}" for w in who_list}, reps, log).items():
                    res["rows"].append(dict(task="bwd_" + mode, who=who, **summarize(recs)))
    finally:
        for p in procs.values():
            p.close()


def attribution(a, exe, res, log):
    """(c): libcircuits alone (attribution and activation patching are both its own calls)."""
    import numpy as np
    p = start(a, exe, "circuits")
    try:
        for T, kinds in ((a.attr_pos, ["z_all", "z_pos"]), (a.by_pos_pos, ["z_pos"])):
            if T is None:
                continue
            log(f"[{T}] forward, source run")
            for cmd in (f"fwd {T}", f"src {T}"):
                recs = interleaved({"circuits": p}, {"circuits": cmd}, a.reps, log)["circuits"]
                res["rows"].append(dict(task=cmd.split()[0], who="circuits", **summarize(recs)))
            for kind in kinds:
                f_attr, f_patch = f"/tmp/grad-bench-attr-{kind}-{T}.f32", f"/tmp/grad-bench-patch-{kind}-{T}.f32"
                log(f"[{T}] attribution {kind}")
                recs = interleaved({"circuits": p}, {"circuits": f"attr {kind} {T} {f_attr}"}, a.reps, log)["circuits"]
                res["rows"].append(dict(task="attr", who="circuits", **summarize(recs)))
                if kind == "z_pos" and T > a.by_pos_pos:
                    continue  # activation patching by position: only at the small shape (its cost grows with T^2)
                log(f"[{T}] activation patching {kind}")
                # no warm-up: the context is warm from the attribution runs, and a by-position grid costs minutes
                recs = interleaved({"circuits": p}, {"circuits": f"patch {kind} {T} {f_patch}"},
                                   max(1, a.patch_reps), log, warmup=0)["circuits"]
                row = dict(task="patch", who="circuits", **summarize(recs))
                x, y = np.fromfile(f_attr, np.float32), np.fromfile(f_patch, np.float32)
                row["corr_with_attr"] = float(np.corrcoef(x, y)[0, 1])
                row["max_abs_patch"], row["max_abs_attr"] = float(np.abs(y).max()), float(np.abs(x).max())
                res["rows"].append(row)
                for f in (f_attr, f_patch):
                    os.remove(f)
    finally:
        p.close()


def memory(a, exe, res, log):
    """(d): one backward at [1, mem_pos] in a fresh process per contender and mode. A forward of
    one token first (libcircuits maps its weights: the forward faults them in, so every
    contender starts with its weights resident), then VmHWM is reset to the current RSS: the
    peak that follows is the backward's, with the weights and the runtime already counted."""
    for who in ("circuits", "torch", "tl"):
        for mode in ("a", "w"):
            p = start(a, exe, who)
            try:
                p.ask("fwd 1")
                ready = p.ask("rss")
                p.ask("clear_hwm")
                rec = p.ask(f"bwd {a.mem_pos} {mode}")
                peak = p.ask("rss")
            finally:
                p.close()
            row = dict(task="mem_" + mode, who=who, pos=a.mem_pos, load_hwm_kb=ready["hwm_kb"],
                       rss_ready_kb=ready["rss_kb"], bwd_hwm_kb=peak["hwm_kb"], ms=rec["ms"], loss=rec.get("loss"))
            log(f"  mem {who:9s} {mode}: loaded {row['rss_ready_kb'] / MB:.0f} MiB (load's peak "
                f"{row['load_hwm_kb'] / MB:.0f}), peak in the backward {row['bwd_hwm_kb'] / MB:.0f} MiB "
                f"(+{(row['bwd_hwm_kb'] - row['rss_ready_kb']) / MB:.0f})")
            res["rows"].append(row)


# ------------------------------------------------------------------------------ report


def render(res):
    rows = res["rows"]

    def get(task, who, pos):
        return next((r for r in rows if r["task"] == task and r["who"] == who and r.get("pos") == pos), None)

    def med(r):
        return f"{r['median_ms']:.0f}" if r else "—"

    def rat(num, den):
        return f"**{num['median_ms'] / den['median_ms']:.2f}×**" if num and den else "—"

    def cpu_rat(num, den):
        return f"{num['median_cpu_ms'] / den['median_cpu_ms']:.2f}×" if num and den else "—"

    out = []
    m = res["machine"]
    out.append(f"GPT-2-small shape (random init, fp32, unprocessed), batch 1, {m['threads']} threads each; "
               f"medians of wall ms over {res['args']['reps']} interleaved repetitions (after a warm-up); "
               f"{m['date']}, load average {m['load_start'][0]:.1f} at the start.\n")
    shapes = sorted({r["pos"] for r in rows if r["task"].startswith("bwd")})
    if shapes:
        out.append("| task | T | libcircuits ms | PyTorch ms | TransformerLens ms | PyTorch / libcircuits | "
                   "TL / libcircuits | same, CPU time: PyTorch / lc, TL / lc |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    labels = {"fwd": "forward (no grad)", "bwd_w": "(a) fwd+bwd, loss + weight grads",
              "bwd_a": "(a') fwd+bwd, loss + activation grads (no weight grads)",
              "bwd_c": "(b) gradient at every hook point, cached (TL: incl_bwd, frozen weights)",
              "bwd_cw": "(b') same + weight grads (TL: run_with_cache(incl_bwd=True) as is)"}
    for T in shapes:
        for task in ("fwd", "bwd_w", "bwd_a", "bwd_c", "bwd_cw"):
            c, t, tl = get(task, "circuits", T), get(task, "torch", T), get(task, "tl", T)
            if not (c or t or tl):
                continue
            out.append(f"| {labels[task]} | {T} | {med(c)} | {med(t)} | {med(tl)} | {rat(t, c)} | {rat(tl, c)} | "
                       f"{cpu_rat(t, c)}, {cpu_rat(tl, c)} |")
    out.append("")
    checks = []
    for T in shapes:
        c, t, tl = get("bwd_w", "circuits", T), get("bwd_w", "torch", T), get("bwd_w", "tl", T)
        if c and t and tl and "ln_final_w_grad_probe" in c:
            checks.append(f"T={T}: loss {c['loss']:.6f} / {t['loss']:.6f} / {tl['loss']:.6f}, d loss / d ln_final.w[0] "
                          f"{c['ln_final_w_grad_probe'][0]:.4g} / {t['ln_final_w_grad_probe'][0]:.4g} / "
                          f"{tl['ln_final_w_grad_probe'][0]:.4g}")
        c, tl = get("bwd_c", "circuits", T), get("bwd_c", "tl", T)
        if c and tl and "resid_pre0_grad_probe" in c:
            checks.append(f"T={T}: cached gradients {c['grad_entries']} (libcircuits) / {tl['grad_entries']} (TL), "
                          f"d loss / d blocks.0.hook_resid_pre[0, 0, 0] {c['resid_pre0_grad_probe'][0]:.4g} / "
                          f"{tl['resid_pre0_grad_probe'][0]:.4g}")
    if checks:
        out.append("Same computation (libcircuits / PyTorch / TL): " + "; ".join(checks) + ".\n")

    attr = [r for r in rows if r["task"] in ("attr", "patch")]
    if attr:
        out.append("| grid | T | cells | forward ms | source run ms | attribution ms | attribution, fwd-eq "
                   "(call / + source run) | activation patching ms | activation patching, fwd-eq | "
                   "patching / attribution (with source) | corr(attr, patch) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for T in sorted({r["pos"] for r in attr}):
            # the forward measured beside the grids (the attribution step's own, the last one run)
            f = [r for r in rows if r["task"] == "fwd" and r["who"] == "circuits" and r.get("pos") == T][-1]
            s = get("src", "circuits", T)
            for kind in ("z_all", "z_pos"):
                at = next((r for r in attr if r["task"] == "attr" and r["kind"] == kind and r["pos"] == T), None)
                pa = next((r for r in attr if r["task"] == "patch" and r["kind"] == kind and r["pos"] == T), None)
                if not at:
                    continue
                fe, tot = at["median_ms"] / f["median_ms"], (at["median_ms"] + s["median_ms"]) / f["median_ms"]
                name = {"z_all": "HEAD_Z_ALL_POS", "z_pos": "HEAD_Z_BY_POS"}[kind]
                out.append(
                    f"| {name} | {T} | {at['cells']} | {f['median_ms']:.0f} | {s['median_ms']:.0f} | {at['median_ms']:.0f} | "
                    f"**{fe:.2f} / {tot:.2f}** | {med(pa)} | {pa['median_ms'] / f['median_ms']:.1f} | "
                    f"{pa['median_ms'] / (at['median_ms'] + s['median_ms']):.0f}× | {pa['corr_with_attr']:.3f} |"
                    if pa else
                    f"| {name} | {T} | {at['cells']} | {f['median_ms']:.0f} | {s['median_ms']:.0f} | {at['median_ms']:.0f} | "
                    f"**{fe:.2f} / {tot:.2f}** | — | — | — | — |")
        out.append("")
    mem = [r for r in rows if r["task"].startswith("mem_")]
    if mem:
        out.append(f"Peak memory of one backward at [1, {mem[0]['pos']}] (fresh process each: load, a forward of "
                   f"one token, VmHWM reset, the backward; MiB):\n")
        out.append("| contender | computes | RSS before the backward (weights, runtime) | peak RSS during the backward "
                   "| the backward's own (peak − before) | the load's peak |")
        out.append("|---|---|---:|---:|---:|---:|")
        names = {"circuits": "libcircuits", "torch": "PyTorch", "tl": "TransformerLens"}
        what = {"mem_a": "loss + activation grads", "mem_w": "loss + weight grads"}
        for r in mem:
            out.append(f"| {names[r['who']]} | {what[r['task']]} | {r['rss_ready_kb'] / MB:.0f} | "
                       f"**{r['bwd_hwm_kb'] / MB:.0f}** | {(r['bwd_hwm_kb'] - r['rss_ready_kb']) / MB:.0f} | "
                       f"{r['load_hwm_kb'] / MB:.0f} |")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["torch", "tl"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--patch-reps", type=int, default=3)
    ap.add_argument("--shapes", default="128,512")
    ap.add_argument("--attr-pos", type=int, default=128)
    ap.add_argument("--by-pos-pos", type=int, default=16, help="HEAD_Z_BY_POS activation patching's T")
    ap.add_argument("--mem-pos", type=int, default=1024)
    ap.add_argument("--skip", default="", help="comma-separated: speed, attr, mem")
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--exe", help="a grad_bench built elsewhere (default: built in --build)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out")
    ap.add_argument("--render")
    a = ap.parse_args()
    if a.worker:
        return worker_main(a.worker, a.threads)
    if a.render:
        print(render(json.load(open(a.render))))
        return 0
    a.shapes = [int(x) for x in a.shapes.split(",") if x]
    skip = set(a.skip.split(","))
    make_model()
    exe = a.exe or build(a.build)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    res = {"args": vars(a), "rows": [],
           "machine": dict(omp_wait_policy=env_for(a.threads)["OMP_WAIT_POLICY"], cpu=cpu, cores=os.cpu_count(), threads=a.threads, kernel=platform.release(), commit=commit,
                           date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                           load_start=os.getloadavg())}
    out = a.out or os.path.join(HERE, "results", f"grad-{datetime.date.today().isoformat()}.json")

    def save():
        res["machine"]["load_end"] = os.getloadavg()
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")

    try:
        for name, fn in (("speed", speed), ("attr", attribution), ("mem", memory)):
            if name not in skip:
                fn(a, exe, res, log)
                save()
    finally:
        save()
    print(render(res))
    log(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
