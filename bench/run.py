#!/usr/bin/env python3
"""The benchmark suite, one command: libcircuits against PyTorch eager and TransformerLens on
the same weights, side by side in one run. docs/performance.md explains every row.

    python3 bench/run.py [--quick] [--reps N] [--threads N] [--out FILE] ...   (or bash bench/run.sh)

Steps: build the C drivers (meson, release, build-bench/); make the GPT-2-small-shaped random
model once (bench/.cache/, git-ignored); measure this machine's sgemm (peak and the rate of
every GEMM shape of the forward, through the OpenBLAS libcircuits links); then, per shape and
interleaved, each contender in its own process (so peak RSS is per configuration): forward,
forward with a no-op hook at every hook point, run_with_cache of every hook point; load times
warm and cold; composition scores. Prints a Markdown table (medians) with ratios and targets.

--family llama | pythia (issue 13; shapes in bench/families.py) measures a modern family instead:
forward only, at [1,128], [1,1024] and [8,128] by default, against PyTorch eager
(AutoModelForCausalLM) and TransformerLens (its own conversion of the same checkpoint), with
the GEMM-bound limit and the GFLOP-at-sgemm-peak bound of that family's products; the models
are made once into bench/.cache/ (--tiny: small models of the same families, to check the
suite in seconds). libcircuits loads the Hugging Face directory when it can, else the same
weights exported in the TL layout by TransformerLens's own conversion (--circuits-load).

Every contender gets the same thread count: circuits_set_num_threads / OPENBLAS_NUM_THREADS
for libcircuits, torch.set_num_threads / OMP_NUM_THREADS / MKL_NUM_THREADS for the peers.
The peers need torch, transformers and transformer_lens 3.x: /opt/refenv if present, else
bench/.venv (bench/run.sh creates it), or --python.
"""
import argparse, ast, datetime, json, os, platform, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import families  # noqa: E402
import gemm_limit  # noqa: E402
import report  # noqa: E402
import sections  # noqa: E402

MODEL = os.path.join(HERE, ".cache", "gpt2-small-random")
TARGETS = ["bench/bench_forward", "bench/bench_gemm", "bench/bench_compose", "bench/bench_pagecache"]


def build(build_dir):
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        subprocess.run(["meson", "setup", build_dir, "-Dbuildtype=release"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["meson", "compile", "-C", build_dir] + TARGETS, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(build_dir, "bench")


# OpenBLAS's kernel sets older than Haswell: on a CPU with AVX2 one of these means OpenBLAS did not
# know the CPU and fell back (docs/performance.md, "OpenBLAS kernels")
OLD_CORES = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine", "northwood", "banias"}


def choose_coretype(bin_dir):
    """Sets OPENBLAS_CORETYPE in this process's environment, which every process of the run
    inherits, when OpenBLAS fell back to old kernels on an AVX2 / AVX-512 CPU (Debian 12's
    0.3.21 picks Prescott on CPUs newer than itself: 4.5x slower sgemm). The note for the report."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        os.environ.setdefault("BENCH_CORETYPE_NOTE", f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} set by the caller")
        return os.environ["BENCH_CORETYPE_NOTE"]
    p = subprocess.run([os.path.join(bin_dir, "bench_gemm"), "1", "1"], input="", capture_output=True, text=True,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    core = next((json.loads(l)["corename"] for l in p.stdout.splitlines() if '"openblas"' in l), "?")
    flags = set(next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), []))
    if core.lower() not in OLD_CORES or "avx2" not in flags:
        return ""
    os.environ["OPENBLAS_CORETYPE"] = ct = "SkylakeX" if "avx512f" in flags else "Haswell"
    os.environ["BENCH_CORETYPE_NOTE"] = note = (
        f"OpenBLAS picked its {core} kernels on this CPU, which it does not know (it has "
        f"{'AVX-512F' if ct == 'SkylakeX' else 'AVX2'}): OPENBLAS_CORETYPE={ct} is set for every process of this run")
    return note


def find_python(explicit):
    """An interpreter with torch, transformers and transformer_lens, or None."""
    for py in [explicit, "/opt/refenv/bin/python", os.path.join(HERE, ".venv", "bin", "python"), sys.executable]:
        if py and os.path.exists(py) and subprocess.run(
                [py, "-c", "import torch, transformers, transformer_lens"], capture_output=True).returncode == 0:
            return py
    return None


class Runner:
    """Runs one configuration per process and collects its JSON lines."""

    def __init__(self, threads, verbose, log_path):
        self.env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                        MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1", TRANSFORMERS_VERBOSITY="error")
        self.verbose = verbose
        self.log = open(log_path, "w")  # every process's lines as they come: an interrupted run keeps its data

    def run(self, args, stdin=None, quiet=False):
        if self.verbose:
            print("+", " ".join(args), file=sys.stderr, flush=True)
        p = subprocess.run(args, env=self.env, input=stdin, capture_output=True, text=True, cwd=ROOT)
        if p.returncode and quiet:
            return []
        if p.returncode:
            print(f"FAILED ({p.returncode}): {' '.join(args)}\n{p.stderr[-2000:]}", file=sys.stderr)
            return []
        rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        self.log.write(json.dumps({"args": args, "rows": rows}) + "\n")
        self.log.flush()
        return rows


def machine(bin_dir, runner, threads):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    blas = runner.run([os.path.join(bin_dir, "bench_gemm"), str(threads), "1"], stdin="")
    return dict(cpu=cpu, cores=os.cpu_count(), threads=threads, kernel=platform.release(),
                openblas=blas[0] if blas else {}, load=os.getloadavg(), coretype_note=os.environ.get("BENCH_CORETYPE_NOTE", ""),
                date=datetime.datetime.now().isoformat(timespec="minutes"))


def gemm_rates(bin_dir, runner, threads, reps, lines):
    """bench_gemm on spec lines: ({(m, n, k, trans_b, count): GFLOP/s}, its JSON rows)."""
    rows = runner.run([os.path.join(bin_dir, "bench_gemm"), str(threads), str(reps)], stdin="\n".join(lines) + "\n")
    rows = [r for r in rows if r["what"] == "gemm"]
    return {(r["m"], r["n"], r["k"], r["trans_b"], r["count"]): r["gflops"] for r in rows}, rows


def measure_peak(a, bin_dir, runner):
    rates, rows = gemm_rates(bin_dir, runner, a.threads, a.gemm_reps, [f"peak {a.peak_n} {a.peak_n} {a.peak_n} 0 1"])
    return {"peak_gflops": rows[0]["gflops"], "forward": {}, "composition": {}, "shapes": rows}


def measure_composition_limit(a, bin_dir, runner, gemm):
    """The GEMM-bound limit of one mode's composition scores, measured just before them."""
    comp = gemm_limit.composition_gemms(12, 12, 768, 64)
    rates, rows = gemm_rates(bin_dir, runner, a.threads, a.gemm_reps, gemm_limit.spec_lines(comp))
    total = sum(gemm_limit.flops(x) for x in comp)
    gemm["shapes"] += rows
    gemm["composition"] = dict(gflop=total / 1e9, limit_s=gemm_limit.limit_seconds(comp, rates),
                               peak_s=total / (gemm["peak_gflops"] * 1e9))


def measure_forward_limit(a, bin_dir, runner, gemm, shape):
    """The GEMM-bound limit of a forward at shape, measured just before its contenders run (the
    load on a shared machine drifts; a rate measured minutes apart would not compare)."""
    g = gemm_limit.forward_gemms(*shape, **gemm_limit.GPT2_SMALL)
    rates, rows = gemm_rates(bin_dir, runner, a.threads, a.gemm_reps, gemm_limit.spec_lines(g))
    total = sum(gemm_limit.flops(x) for x in g)
    gemm["shapes"] += [dict(r, label=f"{r['label']} ({shape[0]}×{shape[1]})") for r in rows]
    gemm["forward"][shape] = dict(gflop=total / 1e9, limit_ms=gemm_limit.limit_seconds(g, rates) * 1e3,
                                  peak_ms=total / (gemm["peak_gflops"] * 1e9) * 1e3)


def measure_family_limit(a, bin_dir, runner, gemm, shape, fam):
    """measure_forward_limit for a family's products (gemm_limit.family_gemms)."""
    g = gemm_limit.family_gemms(*shape, **fam["gemm"])
    rates, rows = gemm_rates(bin_dir, runner, a.threads, a.gemm_reps, gemm_limit.spec_lines(g))
    total = sum(gemm_limit.flops(x) for x in g)
    gemm["shapes"] += [dict(r, label=f"{r['label']} ({shape[0]}×{shape[1]})") for r in rows]
    gemm["forward"][shape] = dict(gflop=total / 1e9, causal_gflop=gemm_limit.causal_flops(g) / 1e9,
                                  limit_ms=gemm_limit.limit_seconds(g, rates) * 1e3,
                                  peak_ms=total / (gemm["peak_gflops"] * 1e9) * 1e3)


def circuits_model_dir(a, bin_dir, runner, fam):
    """(directory, "hf" | "tl") libcircuits loads: the Hugging Face checkpoint if this build
    reads it (a zero-copy load is tried), else TransformerLens's conversion in the TL layout."""
    hf, tl = families.hf_dir(fam), families.tl_dir(fam)
    if a.circuits_load in ("auto", "hf"):
        ok = runner.run([os.path.join(bin_dir, "bench_forward"), hf, "--raw"], quiet=a.circuits_load == "auto")
        if ok or a.circuits_load == "hf":
            return hf, "hf"
        print("[bench] this libcircuits does not load the Hugging Face directory: measuring the TL-layout "
              "export of the same weights", file=sys.stderr)
    return tl, "tl"


def measure_family_forward(a, bin_dir, runner, py, gemm, fam, lc_dir):
    """The limits of every shape, then libcircuits, PyTorch, TransformerLens (plain forward).
    By default each contender loads once and runs every shape, smallest first, in one process
    (a Llama-shaped load costs 25 s in libcircuits and two minutes in TransformerLens); the peak
    RSS of a shape is then that process's so far. --process-per-shape: a process per shape and
    contender, interleaved per shape, as the GPT-2 suite runs."""
    fwd = os.path.join(bin_dir, "bench_forward")
    common = ["--threads", str(a.threads), "--reps", str(a.reps), "--warmup", str(a.warmup)]
    peer = lambda who, s: runner.run([py, os.path.join(HERE, "peers.py"), who, families.hf_dir(fam), "--family",
                                      a.family, "--mode", "forward", "--shape", s] + common) if py else []

    def circuits(shapes):
        rows = runner.run([fwd, lc_dir] + shapes + common)
        load = next((r for r in rows if r["what"] == "load"), None)
        return [dict(r, load_ms=load["median_ms"]) if load else r for r in rows]

    contenders = [("circuits", circuits)]
    contenders += [] if a.no_torch else [("torch", lambda shapes: peer("torch", ",".join(shapes)))]
    contenders += [] if a.no_tl else [("tl", lambda shapes: peer("tl", ",".join(shapes)))]
    keys = sorted(shapes_of(a), key=lambda k: (k[0] * k[1], k))
    groups = [[k] for k in keys] if a.process_per_shape else [keys]
    res = {}
    for group in groups:
        for key in group:
            measure_family_limit(a, bin_dir, runner, gemm, key, fam)
        for who, run in contenders:
            rows = run([f"{k[0]}:{k[1]}" for k in group])
            for key in group:
                res[(who, "plain", key)] = next((r for r in rows if r["what"] == "forward" and
                                                 (r["batch"], r["pos"]) == key), None)
    return res


def measure_forward(a, bin_dir, runner, py, gemm):
    """Per shape, interleaved: libcircuits, PyTorch, TransformerLens; plain, hooks, cache."""
    fwd = os.path.join(bin_dir, "bench_forward")
    common = ["--threads", str(a.threads), "--reps", str(a.reps), "--warmup", str(a.warmup)]
    peer = lambda who, mode, s: runner.run([py, os.path.join(HERE, "peers.py"), who, MODEL, "--mode", mode,
                                            "--shape", s] + common) if py else []
    res = {}
    for key in shapes_of(a):
        s = f"{key[0]}:{key[1]}"
        measure_forward_limit(a, bin_dir, runner, gemm, key)
        res[("circuits", "plain", key)] = runner.run([fwd, MODEL, s] + common)
        if not a.no_torch:
            res[("torch", "plain", key)] = peer("torch", "forward", s)
        if not a.no_tl:
            res[("tl", "plain", key)] = peer("tl", "forward", s)
            if key == (1, 128):  # autograd keeps every activation: only the smallest shape
                res[("tl", "autograd", key)] = peer("tl", "autograd", s)
        res[("circuits", "hooks", key)] = runner.run([fwd, MODEL, s, "--hooks"] + common)
        res[("circuits", "hooks_no_attn", key)] = runner.run([fwd, MODEL, s, "--hooks-no-attn"] + common)
        if not a.no_tl:
            res[("tl", "hooks", key)] = peer("tl", "hooks", s)
        res[("circuits", "cache", key)] = runner.run([fwd, MODEL, s, "--cache"] + common)
        if not a.no_tl:
            res[("tl", "cache", key)] = peer("tl", "cache", s)
        # the memory target in both load modes: weights as stored (zero-copy mapping) too
        res[("circuits", "cache_raw", key)] = runner.run([fwd, MODEL, s, "--cache", "--raw"] + common)
    return {k: forward_record(v) for k, v in res.items()}


def forward_record(rows):
    """The forward line of a run, with the hook count and the cache's memcpy time its driver
    printed (if any)."""
    rec = next((r for r in rows if r["what"] == "forward"), None)
    hooks = next((r for r in rows if r["what"] == "hooks"), None)
    copy = next((r for r in rows if r["what"] == "cache_copy"), None)
    if rec and hooks:
        rec.setdefault("registered", hooks["registered"])
    if rec and copy:
        rec.setdefault("copy_ms", copy["median_ms"])
    return rec


def shapes_of(a):
    return [tuple(int(x) for x in s.split(":")) for s in a.shapes.split(",")]


def measure_load(a, bin_dir, runner, py):
    fwd = os.path.join(bin_dir, "bench_forward")
    pc = os.path.join(bin_dir, "bench_pagecache")
    thr = ["--threads", str(a.threads)]
    out = {}
    for raw in (True, False):
        flag = ["--raw"] if raw else []
        warm = runner.run([fwd, MODEL, "--load-reps", str(a.load_reps)] + flag + thr)
        out[("circuits", raw, "warm")] = warm[0] if warm else None
        if not a.no_cold:
            cold = runner.run([fwd, MODEL, "--cold", "--reps", "1", "--warmup", "0", "1:128"] + flag + thr)
            out[("circuits", raw, "cold")] = next((r for r in cold if r["what"] == "load"), None)
            out[("circuits", raw, "first_forward")] = next((r for r in cold if r["what"] == "first_forward"), None)
            out[("circuits", raw, "second_forward")] = next((r for r in cold if r["what"] == "forward"), None)
    for who in ([] if a.no_torch else ["torch"]) + ([] if a.no_tl else ["tl"]):
        if not py:
            continue
        base = [py, os.path.join(HERE, "peers.py"), who, MODEL, "--mode", "load", "--load-reps", str(a.load_reps),
                "--pagecache", pc] + thr
        for temp, extra in (("warm", []), ("cold", ["--cold"])):
            if temp == "cold" and a.no_cold:
                continue
            for r in runner.run(base + extra):
                out[(who, r["step"], temp)] = r
    return out


def measure_composition(a, bin_dir, runner, py):
    args = [py or sys.executable, os.path.join(HERE, "composition.py"), "--json", "--exe",
            os.path.join(bin_dir, "bench_compose"), "--reps", str(a.compose_reps)]
    if a.no_tl_composition or a.no_tl or not py:
        args.append("--no-tl")
    return runner.run(args)


def jsonable(x):
    """Tuple keys (shapes, configurations) as strings, for --json."""
    if isinstance(x, dict):
        return {k if isinstance(k, str) else repr(k): jsonable(v) for k, v in x.items()}
    return [jsonable(v) for v in x] if isinstance(x, (list, tuple)) else x


def unjsonable(x):
    """jsonable's inverse for the dicts report.render reads."""
    if isinstance(x, dict):
        return {(ast.literal_eval(k) if k[:1] == "(" else k): unjsonable(v) for k, v in x.items()}
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="gpt2", choices=list(families.FAMILIES),
                    help="gpt2 (the full suite) or a modern family, forward only (bench/families.py)")
    ap.add_argument("--tiny", action="store_true", help="with --family llama|pythia: a small model of the family")
    ap.add_argument("--circuits-load", default="auto", choices=["auto", "hf", "tl"],
                    help="what libcircuits loads for a family: the HF directory (auto: if it can) or the TL export")
    ap.add_argument("--process-per-shape", action="store_true",
                    help="with --family: a process per shape and contender (default: one per contender)")
    ap.add_argument("--quick", action="store_true", help="check the suite end to end: T=128 only, 2 reps, no TL composition")
    ap.add_argument("--shapes", help="B:T,... (default: 1:128,1:512,1:1024,8:128; a family: 1:128,1:1024,8:128; "
                                     "--quick: 1:128)")
    ap.add_argument("--reps", type=int, default=10, help="timed forwards per configuration (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--load-reps", type=int, default=10)
    ap.add_argument("--compose-reps", type=int, default=3)
    ap.add_argument("--gemm-reps", type=int, default=7)
    ap.add_argument("--peak-n", type=int, default=3072, help="size of the square sgemm measuring the peak")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-tl", action="store_true", help="no TransformerLens at all")
    ap.add_argument("--no-tl-composition", action="store_true", help="skip TL's (slow) all_composition_scores")
    ap.add_argument("--no-composition", action="store_true")
    ap.add_argument("--no-cold", action="store_true", help="skip cold-page-cache loads")
    ap.add_argument("--sections", default="all",
                    help="capability sections after the main suite, comma-separated, 'all' or 'none': " +
                         ",".join(s[0] for s in sections.SECTIONS))
    ap.add_argument("--section-timeout", type=int, default=None,
                    help="seconds a section may take before it is stopped and reported (default 1800; --quick 900)")
    ap.add_argument("--python", help="interpreter with torch, transformers, transformer_lens")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--out", help="also write the Markdown to this file")
    ap.add_argument("--json", help="also write the raw measurements to this file")
    ap.add_argument("--render", metavar="JSON", help="only print the report of a run saved with --json")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each command")
    a = ap.parse_args()
    if a.render:
        d = json.load(open(a.render))
        if d["args"].get("family", "gpt2") != "gpt2":
            print(report.render_family(argparse.Namespace(**d["args"]), d["machine"], unjsonable(d["gemm"]),
                                       unjsonable(d["forward"]), d["lc_load"]))
            return 0
        if d.get("summary"):
            print(sections.render_summary(d["summary"], f"{d['machine']['cpu']} (saved run)"))
        print(report.render(argparse.Namespace(**d["args"]), d["machine"], unjsonable(d["gemm"]),
                            unjsonable(d["forward"]), unjsonable(d["load"]), d["composition"]))
        return 0
    if a.quick:
        a.reps, a.warmup, a.load_reps, a.compose_reps, a.gemm_reps = 2, 1, 3, 1, 3
        a.no_tl_composition = True
    default_shapes = "1:128,1:512,1:1024,8:128" if a.family == "gpt2" else "1:128,1:1024,8:128"
    a.shapes = a.shapes or ("1:128" if a.quick else default_shapes)

    bin_dir = build(a.build_dir)
    coretype_note = choose_coretype(bin_dir)
    if coretype_note:
        print(f"[bench] {coretype_note}", file=sys.stderr)
    py = find_python(a.python)
    if not py:
        print("no interpreter with torch + transformers + transformer_lens: measuring libcircuits alone "
              "(bash bench/run.sh makes bench/.venv)", file=sys.stderr)
    if a.family != "gpt2":
        return main_family(a, bin_dir, py)
    if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
        if not py:
            sys.exit("the benchmark model is generated with torch + transformers: see bash bench/run.sh")
        subprocess.run([py, os.path.join(HERE, "make_model.py"), MODEL], check=True)
    log = os.path.join(a.build_dir, "bench-log.jsonl")
    print(f"[bench] raw output of every process: {log}", file=sys.stderr)
    runner = Runner(a.threads, a.verbose, log)
    step = lambda what: print(f"[bench] {what}", file=sys.stderr, flush=True)

    step("machine and sgemm")
    m = machine(bin_dir, runner, a.threads)
    gemm = measure_peak(a, bin_dir, runner)
    step("forward, hooks, cache")
    fwd = measure_forward(a, bin_dir, runner, py, gemm)
    step("load")
    load = measure_load(a, bin_dir, runner, py)
    comp = []
    if not a.no_composition:
        step("composition")
        measure_composition_limit(a, bin_dir, runner, gemm)
        comp = measure_composition(a, bin_dir, runner, py)

    md = report.render(a, m, gemm, fwd, load, comp)
    names = {"all": [s[0] for s in sections.SECTIONS], "none": []}.get(a.sections, a.sections.split(","))
    unknown = set(names) - {s[0] for s in sections.SECTIONS}
    if unknown:
        sys.exit(f"--sections: unknown {', '.join(sorted(unknown))}")
    a.section_timeout = a.section_timeout or (900 if a.quick else 1800)
    ctx = sections.Ctx(a, py, a.build_dir, runner.env, dict(forward=fwd, composition=comp))
    srows, smd = sections.run_all(ctx, names)
    ob = m.get("openblas", {})
    md = (sections.render_summary(srows, f"{m['cpu']}, {m['threads']} threads; OpenBLAS core {ob.get('corename', '?')}"
                                  + (f" ({m['coretype_note']})" if m.get("coretype_note") else "") + "; "
                                  + ("--quick: small sizes, to check that everything runs (not for the numbers). "
                                     if a.quick else "") + "Times: each script's own clock (medians or best of its "
                                  "repetitions; the sections below say which).")
          + "\n## GPT-2 small: libcircuits, PyTorch eager, TransformerLens\n\n" + md
          + ("\n## Capability sections\n\n" + smd if smd else ""))
    print(md)
    if a.out:
        open(a.out, "w").write(md)
    if a.json:
        json.dump(jsonable(dict(args=vars(a), machine=m, gemm=gemm, forward=fwd, load=load, composition=comp,
                                summary=srows)), open(a.json, "w"), indent=1)
    return 0


def main_family(a, bin_dir, py):
    """--family llama | pythia: make the models once, then the forward table."""
    fam = families.get(a.family, a.tiny)
    if not all(os.path.exists(os.path.join(d, "model.safetensors")) for d in (families.hf_dir(fam), families.tl_dir(fam))):
        if not py:
            sys.exit("the family models are generated with torch + transformers + transformer_lens: see bash bench/run.sh")
        subprocess.run([py, os.path.join(HERE, "make_model.py"), "--family", a.family] + (["--tiny"] if a.tiny else []),
                       check=True)
    log = os.path.join(a.build_dir, f"bench-log-{a.family}.jsonl")
    print(f"[bench] raw output of every process: {log}", file=sys.stderr)
    runner = Runner(a.threads, a.verbose, log)
    step = lambda what: print(f"[bench] {what}", file=sys.stderr, flush=True)
    step("machine and sgemm")
    m = machine(bin_dir, runner, a.threads)
    gemm = measure_peak(a, bin_dir, runner)
    lc_dir, lc_load = circuits_model_dir(a, bin_dir, runner, fam)
    m["model"] = dict(family=a.family, tiny=a.tiny, hf_dir=os.path.relpath(families.hf_dir(fam), ROOT),
                      lc_dir=os.path.relpath(lc_dir, ROOT), weight_bytes=os.path.getsize(
                          os.path.join(families.hf_dir(fam), "model.safetensors")), **fam["gemm"])
    step(f"forward ({a.family}; libcircuits loads the {lc_load} directory)")
    fwd = measure_family_forward(a, bin_dir, runner, py, gemm, fam, lc_dir)
    md = report.render_family(a, m, gemm, fwd, lc_load)
    print(md)
    if a.out:
        open(a.out, "w").write(md)
    if a.json:
        json.dump(jsonable(dict(args=vars(a), machine=m, gemm=gemm, forward=fwd, lc_load=lc_load)),
                  open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
