"""The capability sections of bench/run.py (issue 19): each runs one capability's own script
(bench/patching.py, gguf.py, grad.py, ...) against its peer in the same run, reads the script's
JSON output, and returns its rows of the summary table plus the script's own tables.

A section that cannot run (a peer that is not installed, no mpirun, a script that fails or
overruns its time) becomes a "not measured" row that says why; it never stops the others.
bench/run.sh records why a peer could not be installed in bench/.cache/install-status, which
the rows quote. docs/performance.md ("Capabilities") describes every row and its goal.
"""
import ast, json, os, shutil, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL = os.path.join(HERE, ".cache", "gpt2-small-random")
STATUS = os.path.join(HERE, ".cache", "install-status")


class NotMeasured(Exception):
    """A section's prerequisite is missing: the reason is the row's text."""


def install_status():
    """{peer: why} from bench/run.sh's install step (absent when run.py runs alone)."""
    out = {}
    if os.path.exists(STATUS):
        for line in open(STATUS):
            k, _, v = line.partition(":")
            if v.strip():
                out[k.strip()] = v.strip()
    return out


class Ctx:
    """What every section needs: the suite's options, the interpreter with the peers, the
    release build, the environment every process gets, and a directory for the JSON files."""

    def __init__(self, a, py, build_dir, env, main):
        self.a, self.py, self.build_dir, self.env, self.main = a, py, build_dir, env, main
        self.quick = a.quick
        self.threads = a.threads
        self.out = os.path.join(build_dir, "sections")
        os.makedirs(self.out, exist_ok=True)
        self.lib = os.path.join(build_dir, "lib", "libcircuits.so.0")
        self.env = dict(env, CIRCUITS_LIBRARY=self.lib, PYTHONUNBUFFERED="1")
        self.status = install_status()
        self.timeout = a.section_timeout

    def json_path(self, name):
        p = os.path.join(self.out, name + ".json")
        if os.path.exists(p):
            os.remove(p)  # a stale file from an earlier run must not pass for this run's
        return p

    def need_python(self, *modules):
        """The peers' interpreter if it imports every module, else NotMeasured with the reason."""
        if not self.py:
            raise NotMeasured("no interpreter with torch, transformers and transformer_lens (bash bench/run.sh "
                              "installs them in bench/.venv)")
        missing = [m for m in modules if subprocess.run([self.py, "-c", f"import {m}"], capture_output=True,
                                                        env=self.env).returncode]
        if missing:
            why = "; ".join(self.status.get(m, f"`{m}` is not installed in {self.py}") for m in missing)
            raise NotMeasured(why)
        return self.py

    def run(self, args, timeout=None):
        """Runs a section's script; its stdout, or an exception with the end of its stderr."""
        print("[bench]   +", " ".join(os.path.relpath(x, ROOT) if x.startswith(ROOT) else x for x in args),
              file=sys.stderr, flush=True)
        try:
            p = subprocess.run(args, env=self.env, cwd=ROOT, capture_output=True, text=True,
                               timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"overran its {timeout or self.timeout} s (--section-timeout)") from None
        log = os.path.join(self.out, "log.txt")
        with open(log, "a") as f:
            f.write(f"$ {' '.join(args)}\n{p.stdout}\n{p.stderr}\n(exit {p.returncode})\n\n")
        if p.returncode:
            tail = [l for l in (p.stderr or p.stdout).strip().splitlines() if l.strip()][-1:] or ["no output"]
            raise RuntimeError(f"{os.path.basename(args[1] if len(args) > 1 else args[0])} exited with "
                               f"{p.returncode}: {tail[0][:200]} (whole output: {os.path.relpath(log, ROOT)})")
        return p.stdout


def row(cap, what, lc, peer, peer_t, goal="—", ok=None, note=""):
    """A summary row: lc and peer_t in seconds (None: not measured); ratio = peer / libcircuits,
    so above 1 libcircuits is faster. ok: True / False / None (no goal)."""
    return dict(cap=cap, what=what, lc=lc, peer=peer, peer_t=peer_t, goal=goal, ok=ok, note=note)


def ratio(r):
    return r["peer_t"] / r["lc"] if r.get("lc") and r.get("peer_t") else None


def fmt_s(x):
    if x is None:
        return "—"
    return f"{x * 1e6:.1f} µs" if x < 1e-3 else f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def at_least(x, goal):
    return None if x is None else x >= goal


# ---- the main suite's own rows (GPT-2 small: bench/run.py's tables above) --------------------

def main_rows(ctx):
    fwd, comp = ctx.main["forward"], ctx.main["composition"]
    rows = []
    shapes = sorted({k[2] for k in fwd if k[:2] == ("circuits", "plain")}, key=lambda s: s[0] * s[1])
    if shapes:
        s = shapes[0]
        c, t, tl = (fwd.get((w, "plain", s)) for w in ("circuits", "torch", "tl"))
        ms = lambda r: r["median_ms"] / 1e3 if r else None
        shp = f"[{s[0]}, {s[1]}]"
        why = lambda r: "" if r else ("no interpreter with torch + transformer_lens" if not ctx.py else
                                      "its process failed (build-bench/bench-log.jsonl)")
        rows.append(row("GPT-2 small (main tables)", f"forward {shp}", ms(c), "PyTorch eager", ms(t), "≥ 1.4× at [1, 128]",
                        at_least(ms(t) / ms(c), 1.4) if ms(t) and ms(c) and s == (1, 128) else None, why(t)))
        rows.append(row("GPT-2 small (main tables)", f"forward {shp}", ms(c), "TransformerLens", ms(tl), note=why(tl)))
        h, th = fwd.get(("circuits", "hooks", s)), fwd.get(("tl", "hooks", s))
        rows.append(row("GPT-2 small (main tables)", f"no-op hook at every point {shp}", ms(h), "TransformerLens "
                        "run_with_hooks", ms(th), note=why(th)))
    q = next((r for r in comp if r["what"] == "composition" and r["mode"] == "Q"), None)
    tlq = next((r for r in comp if r["what"] == "tl_composition" and r["mode"] == "Q"), None)
    if q and tlq:
        rows.append(row("GPT-2 small (main tables)", "composition scores (Q)", q["seconds"],
                        "TL all_composition_scores", tlq["seconds"], "≥ 10×", at_least(tlq["seconds"] / q["seconds"], 10)))
    elif q:
        why = ("--quick skips TransformerLens's all_composition_scores (minutes, 9 GB)" if ctx.quick or
               ctx.a.no_tl_composition else "TransformerLens's composition scores did not run (see the log)")
        rows.append(row("GPT-2 small (main tables)", "composition scores (Q)", q["seconds"], "TL all_composition_scores",
                        None, "≥ 10×", note=why))
    return rows, ""


# ---- model families (issue 13): bench/run.py --family, a process of its own ------------------

def family(name, label):
    def section(ctx):
        py = ctx.need_python("torch", "transformers", "transformer_lens")
        js = ctx.json_path(f"family-{name}")
        args = [py, os.path.join(HERE, "run.py"), "--family", name, "--python", py, "--build-dir", ctx.build_dir,
                "--threads", str(ctx.threads), "--json", js]
        args += ["--tiny", "--quick"] if ctx.quick else []
        ctx.run(args)
        md = ctx.run([py, os.path.join(HERE, "run.py"), "--render", js], timeout=120)
        d = json.load(open(js))
        fwd = {ast.literal_eval(k): v for k, v in d["forward"].items()}
        shapes = sorted({k[2] for k in fwd}, key=lambda s: s[0] * s[1])
        s = shapes[0]
        ms = lambda who: fwd.get((who, "plain", s)) and fwd[(who, "plain", s)]["median_ms"] / 1e3
        what = f"forward [{s[0]}, {s[1]}]" + (" (tiny model)" if ctx.quick else "")
        c, t = ms("circuits"), ms("torch")
        rows = [row(label, what, c, "PyTorch eager", t, "≥ 1.4× at [1, 128]",
                    at_least(t / c, 1.4) if c and t and not ctx.quick else None,
                    "tiny model: the goal is for the full-size one" if ctx.quick else ""),
                row(label, what, c, "TransformerLens", ms("tl"))]
        return rows, md
    return section


# ---- toolkit (issue 14): activation patching, path patching, tokenizer, Python hooks ---------

def patching(ctx):
    py = ctx.need_python("torch", "transformer_lens")
    js = ctx.json_path("patching")
    md = ctx.run([py, os.path.join(HERE, "patching.py"), "--json", js] +
                 (["--quick", "--pos", "4"] if ctx.quick else []))
    d = json.load(open(js))
    rows = []
    for r in d["rows"]:
        t = r["t"]
        what = f"activation patching, {r['sweep']}, [1, {d['pos']}]"
        rows.append(row("Toolkit", what, t["incremental, batched"], "TL patching functions", t.get("tl"), "≥ 10×",
                        at_least(t.get("tl", 0) / t["incremental, batched"], 10) if t.get("tl") else None))
        rows.append(row("Toolkit", what + ", incremental", t["incremental, batched"], "libcircuits whole re-runs",
                        t["whole, batched"], "≥ 2×", at_least(t["whole, batched"] / t["incremental, batched"], 2)))
    return rows, md


def path_patching(ctx):
    py = ctx.need_python("torch", "transformer_lens")
    shape, cells = ("1:8", "2") if ctx.quick else ("8:16", "12")
    out = ctx.run([py, os.path.join(HERE, "path_patch.py"), MODEL, "--shape", shape, "--cells", cells])
    rows = []
    md = ["| grid | tokens | cells | TL (ARENA hooks) s, extrapolated | libcircuits s | speed-up |",
          "|---|---|---:|---:|---:|---:|"]
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rows.append(row("Toolkit", f"path patching, every head → {r['grid']}, {r['shape']}", r["circuits_grid_s"],
                            "ARENA's path patching in TL", r["tl_grid_s"]))
            md.append(f"| {r['grid']} | {r['shape']} | {r['cells_run']} | {r['tl_grid_s']:.2f} | {r['circuits_grid_s']:.2f} "
                      f"| {r['speedup']:.1f}× |")
    return rows, "\n".join(md) + "\n"


def tokenizer(ctx):
    py = ctx.need_python("tokenizers")
    js = ctx.json_path("tokenizer")
    md = ctx.run([py, os.path.join(HERE, "tokenizer.py"), "--lib", ctx.lib, "--json", js] +
                 (["--mb", "0.5", "--repeat", "1"] if ctx.quick else []))
    d = json.load(open(js))
    get = lambda v, i, impl: next((r["seconds"] for r in d["rows"] if (r["vocab"], r["input"], r["impl"]) == (v, i, impl)),
                                  None)
    rows = [row("Toolkit", f"tokenizer {v}, {d['mb']:.1f} MB as {i}", get(v, i, "libcircuits"), "HF tokenizers",
                get(v, i, "tokenizers")) for v in ("gpt2", "neox") for i in ("one string", "documents")]
    return rows, "```\n" + md.strip() + "\n```\n"


def python_hooks(ctx):
    py = ctx.need_python("torch", "transformer_lens")
    js = ctx.json_path("python_hooks")
    md = ctx.run([py, os.path.join(HERE, "python_hooks.py"), "--json", js] +
                 (["--reps", "3", "--no-big"] if ctx.quick else []))
    d = json.load(open(js))
    us = lambda x: x and x * 1e-6
    rows = [row("Toolkit", "Python binding: one no-op hook call (tiny GPT-2)", us(d["per_call_us"].get("noop")),
                "TL hook, registered once", us(d["tl_per_call_us"].get("tl_noop")))]
    for r in d["cache"]:
        if "tl_cache" in r:
            rows.append(row("Toolkit", f"Python run_with_cache, every point, {r['model']} {r['shape']}", r["lc_cache"] / 1e3,
                            "TL run_with_cache", r["tl_cache"] / 1e3))
    return rows, md


# ---- GGUF (issue 15): libcircuits against llama.cpp on the same files -------------------------

def gguf(ctx):
    py = ctx.need_python("numpy", "gguf", "llama_cpp")
    gdir = os.environ.get("BENCH_GGUF_DIR", "/tmp/circuits-bench-gguf")
    mk = [py, os.path.join(HERE, "make_gguf_models.py"), gdir, "--threads", str(ctx.threads)]
    ctx.run(mk + (["--tiny"] if ctx.quick else []))
    js = ctx.json_path("gguf")
    args = [py, os.path.join(HERE, "gguf.py"), "--dir", gdir, "--threads", str(ctx.threads), "--python", py,
            "--lib", ctx.lib, "--json", js]
    if ctx.quick:
        args += ["--tiny", "--models", "q8_0,q4_k_m", "--tasks", "pp128,gen", "--configs", "none,hooks", "--reps", "1",
                 "--warmup", "0", "--gen", "16"]
    ctx.run(args)
    md = ctx.run([py, os.path.join(HERE, "gguf.py"), "--render", js], timeout=120)
    d = json.load(open(js))
    rows = []
    for key, res in d["models"].items():
        for task, rs in res["tasks"].items():
            c, ll = rs.get("libcircuits/none", {}), rs.get("llama.cpp/none", {})
            lim = 1.3 if task == "gen" else 1.2
            cs, ls = c.get("median_ms"), ll.get("median_ms")
            note = "; ".join(f"{n} failed: {(r['error'].strip().splitlines() or ['?'])[-1][:120]}" for n, r in rs.items()
                             if "error" in r)
            rows.append(row("GGUF", f"{key}{' (tiny)' if ctx.quick else ''} {task}", cs and cs / 1e3, "llama.cpp",
                            ls and ls / 1e3, f"≥ {1 / lim:.2f}× (time ≤ {lim}× llama.cpp's)",
                            at_least(ls / cs, 1 / lim) if cs and ls else None, note))
    if not rows:
        raise RuntimeError(f"gguf.py measured no model (are the files in {gdir}?)")
    return rows, md


# ---- gradients (issue 16) ---------------------------------------------------------------------

def gradients(ctx):
    py = ctx.need_python("torch", "transformers", "transformer_lens")
    js = ctx.json_path("grad")
    args = [py, os.path.join(HERE, "grad.py"), "--threads", str(ctx.threads), "--build", ctx.build_dir, "--python", py,
            "--out", js]
    if ctx.quick:
        args += ["--shapes", "64", "--reps", "1", "--patch-reps", "1", "--attr-pos", "32", "--by-pos-pos", "4",
                 "--mem-pos", "128"]
    md = ctx.run(args)
    d = json.load(open(js))
    rs = d["rows"]
    get = lambda task, who, pos: next((r for r in rs if r["task"] == task and r["who"] == who and r.get("pos") == pos), None)
    rows = []
    sec = lambda r: r and r["median_ms"] / 1e3
    for T in sorted({r["pos"] for r in rs if r["task"].startswith("bwd")}):
        for task, what in (("bwd_w", "(a) forward + backward, weight grads"), ("bwd_a", "(a') forward + backward, "
                                                                                          "activation grads")):
            c, t = get(task, "circuits", T), get(task, "torch", T)
            rows.append(row("Gradients", f"{what}, [1, {T}]", sec(c), "PyTorch autograd", sec(t), "≥ 1.3×",
                            at_least(sec(t) / sec(c), 1.3) if c and t else None))
        c, tl = get("bwd_c", "circuits", T), get("bwd_c", "tl", T)
        rows.append(row("Gradients", f"(b) gradient at every hook point, cached, [1, {T}]", sec(c),
                        "TL run_with_cache(incl_bwd)", sec(tl)))
    for T in sorted({r["pos"] for r in rs if r["task"] == "attr"}):
        f = [r for r in rs if r["task"] == "fwd" and r["who"] == "circuits" and r.get("pos") == T][-1]
        s = get("src", "circuits", T)
        at = next((r for r in rs if r["task"] == "attr" and r["kind"] == "z_all" and r["pos"] == T), None)
        pa = next((r for r in rs if r["task"] == "patch" and r["kind"] == "z_all" and r["pos"] == T), None)
        if at and s:
            tot = (at["median_ms"] + s["median_ms"]) / 1e3
            fe = tot / (f["median_ms"] / 1e3)
            rows.append(row("Gradients", f"attribution patching, every head, [1, {T}] ({fe:.2f} forward-equivalents)",
                            tot, "activation patching (libcircuits)", sec(pa), "≤ 3 forward-equivalents", fe <= 3))
    return rows, md


# ---- SAEs (issue 17) --------------------------------------------------------------------------

def saes(ctx):
    py = ctx.need_python("torch", "transformer_lens", "sae_lens")
    js = ctx.json_path("sae")
    args = [py, os.path.join(HERE, "sae.py"), "--threads", str(ctx.threads), "--out", js]
    if ctx.quick:
        args += ["--reps", "1", "--shapes", "1:64", "--tasks", "fwd,saes", "--saes", "sparse"]
    ctx.run(args)
    md = ctx.run([py, os.path.join(HERE, "sae.py"), "--render", js], timeout=120)
    d = json.load(open(js))
    clock = "CPU" if d["clock"] == "cpu_ms" else "wall"
    rows = []
    for r in d["results"]:
        if r["task"] == "fwd" or (r["task"] == "saes" and r["sae"] == "sparse"):
            what = ("plain forward (no SAE)" if r["task"] == "fwd" else
                    f"run_with_saes, sparse SAE{', error term' if r['error_term'] else ''}")
            c, s = r["circuits"]["median_ms"] / 1e3, r["saelens"]["median_ms"] / 1e3
            goal = "—" if r["task"] == "fwd" else "≥ 2×"
            rows.append(row("SAEs", f"{what}, [{r['batch']}, {r['pos']}] ({clock} time)", c, "SAELens", s, goal,
                            None if r["task"] == "fwd" else at_least(s / c, 2)))
    return rows, md


def sae_stats(ctx):
    py = ctx.need_python("torch", "transformer_lens", "sae_lens")
    js = ctx.json_path("sae_stats")
    args = [py, os.path.join(HERE, "sae_stats.py"), "--threads", str(ctx.threads), "--out", js]
    if ctx.quick:
        args += ["--tokens", "1024", "--batch", "4"]
    ctx.run(args)
    md = ctx.run([py, os.path.join(HERE, "sae_stats.py"), "--render", js], timeout=120)
    d = json.load(open(js))
    t = d["tasks"]
    s = lambda task, who: t[task][who]["ms"] / 1e3
    n = f"{d['tokens']:,} tokens"
    rows = [row("SAEs", f"feature statistics, {n}", s("stats", "circuits"), "SAELens + torch", s("stats", "saelens")),
            row("SAEs", f"feature statistics against the forward they need, {n}", s("stats", "circuits"),
                "libcircuits forward to the SAE's point", s("fwd_point", "circuits"), "≥ 0.9× (the forward's speed)",
                at_least(s("fwd_point", "circuits") / s("stats", "circuits"), 0.9))]
    return rows, md


# ---- dataset jobs (issue 18): one process against mpirun ranks --------------------------------

def jobs(ctx):
    if not shutil.which("mpirun"):
        raise NotMeasured("mpirun not found: install Open MPI (openmpi-bin, libopenmpi-dev; .ci/install-deps does)")
    exe = os.path.join(ctx.build_dir, "examples", "circuits")
    subprocess.run(["meson", "compile", "-C", ctx.build_dir, "examples/circuits"], cwd=ROOT, check=True,
                   capture_output=True)
    js = ctx.json_path("jobs")
    args = [sys.executable, os.path.join(HERE, "jobs.py"), "--exe", exe, "--model", MODEL, "--cores",
            str(ctx.threads), "--out", js] + (["--reps", "1", "--rows", "8", "--pos", "32"] if ctx.quick else [])
    md = ctx.run(args)
    d = json.load(open(js))
    m, c = d["median"], d["args"]["cores"]
    single = m["single"]["units_s"]
    same = "; every configuration's output has the same bits" if all(d["identical"].values()) else \
        "; **outputs differ**: " + ", ".join(k for k, v in d["identical"].items() if not v)
    rows = [row("Dataset jobs", f"`circuits job mean`, mpirun 1 rank × {c} threads (the MPI layer's overhead)",
                m[f"mpi1x{c}"]["units_s"], "one process, same threads", single, "≥ 0.97× (overhead ≤ 3 %)",
                at_least(single / m[f"mpi1x{c}"]["units_s"], 0.97), same.lstrip("; ")),
            row("Dataset jobs", f"`circuits job mean`, mpirun {c} ranks × 1 thread", m[f"mpi{c}x1"]["units_s"],
                "one process, same cores", single)]
    return rows, md


SECTIONS = [
    ("llama", "Llama-shaped model (issue 13)", family("llama", "Llama-shaped family"),
     "run.py --family llama"),
    ("pythia", "Pythia-shaped model (issue 13)", family("pythia", "Pythia-shaped family"),
     "run.py --family pythia"),
    ("patching", "Activation patching (issue 14)", patching, "patching.py"),
    ("path_patching", "Path patching (issue 14)", path_patching, "path_patch.py"),
    ("tokenizer", "Tokenizer (issue 14)", tokenizer, "tokenizer.py"),
    ("python_hooks", "Python binding's hooks and cache", python_hooks, "python_hooks.py"),
    ("gguf", "GGUF models against llama.cpp (issue 15)", gguf, "make_gguf_models.py, gguf.py"),
    ("gradients", "Gradients (issue 16)", gradients, "grad.py"),
    ("saes", "SAEs spliced into the forward (issue 17)", saes, "sae.py"),
    ("sae_stats", "SAE feature statistics (issue 17)", sae_stats, "sae_stats.py"),
    ("jobs", "Dataset jobs, one process against MPI ranks (issue 18)", jobs, "jobs.py"),
]
# what the section's row says it measures when it could not run
PEERS = {"llama": "PyTorch eager, TransformerLens", "pythia": "PyTorch eager, TransformerLens",
         "patching": "TL patching functions", "path_patching": "ARENA's path patching in TL", "tokenizer": "HF tokenizers",
         "python_hooks": "TransformerLens", "gguf": "llama.cpp (llama-cpp-python)", "gradients": "PyTorch, TransformerLens",
         "saes": "SAELens", "sae_stats": "SAELens", "jobs": "one process (mpirun)"}


def run_all(ctx, names):
    """Every selected section in turn; (summary rows, Markdown of the sections' own tables)."""
    rows, md = [], []
    try:
        rows += main_rows(ctx)[0]
    except Exception as e:  # noqa: BLE001  (the main tables stand on their own)
        rows.append(row("GPT-2 small (main tables)", "summary", None, "—", None, note=f"failed: {e}"))
    for name, title, fn, script in SECTIONS:
        if name not in names:
            rows.append(row(title, f"`{script}`", None, PEERS[name], None, note="not selected (--sections)"))
            continue
        print(f"[bench] section {name} ({script})", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            r, text = fn(ctx)
            rows += r
            md += [f"### {title}", "", f"`bench/{script}`{' (quick sizes)' if ctx.quick else ''}, "
                   f"{time.monotonic() - t0:.0f} s.", "", text.strip(), ""]
        except NotMeasured as e:
            rows.append(row(title, f"`{script}`", None, PEERS[name], None, note=f"not measured: {e}"))
        except Exception as e:  # noqa: BLE001  (one section failing must not stop the others)
            rows.append(row(title, f"`{script}`", None, PEERS[name], None, note=f"failed: {e}"))
            md += [f"### {title}", "", f"Failed after {time.monotonic() - t0:.0f} s: {e}", ""]
    return rows, "\n".join(md)


def render_summary(rows, header):
    """The one table: a row per measurement, and one per section that could not be measured."""
    out = ["## Summary: every capability against its peer, this run", "", header, "",
           "| capability | what | libcircuits | peer | peer time | peer / libcircuits | goal | |",
           "|---|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        x = ratio(r)
        if r["lc"] is None and r["peer_t"] is None:
            verdict = f"**{r['note']}**" if r["note"] else "—"
        else:
            verdict = {True: "met", False: "**not met**", None: "—"}[r["ok"]]
            if r["lc"] is None or r["peer_t"] is None:  # never a silent gap
                side = "peer" if r["peer_t"] is None else "libcircuits"
                verdict = f"{side} not measured: {r['note'] or 'see the tables below and build-bench/sections/log.txt'}"
            elif r["note"]:
                verdict += f" ({r['note']})"
        out.append(f"| {r['cap']} | {r['what']} | {fmt_s(r['lc'])} | {r['peer']} | {fmt_s(r['peer_t'])} | "
                   f"{'—' if x is None else f'{x:.2f}×'} | {r['goal']} | {verdict} |")
    return "\n".join(out) + "\n"
