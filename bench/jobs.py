#!/usr/bin/env python3
"""Dataset-scale jobs (issue 18, section 3): `circuits job` in one process against the same job
under mpirun at equal total cores, and the MPI layer's overhead.

    python3 bench/jobs.py [--exe build/examples/circuits] [--model DIR] [--rows 32] [--pos 64]
                          [--unit-rows 2] [--kind mean|export] [--reps 3] [--out bench/results/jobs-DATE.json]
    python3 bench/jobs.py --render bench/results/jobs-DATE.json

Model: the GPT-2-small-shaped random model (bench/.cache/gpt2-small-random, bench/make_model.py;
--model for another). Dataset: --rows rows of --pos deterministic token ids (.npy). Job: mean
activations of every blocks.*.hook_resid_post (or an export of them: --kind export), --unit-rows
rows per unit, a fresh job directory each run.

Configurations, all on --cores cores in total (default 2), interleaved, --reps times each:
  single   circuits job ... --threads 2                    one process, the pool's 2 threads
  mpi1x2   mpirun -np 1 circuits job ... --threads 2       the MPI driver, one rank of 2 threads
  mpi2x1   mpirun -np 2 circuits job ... --threads 1       two ranks of one thread each
Measured per run: the wall time of the whole command (mpirun, MPI_Init, the model mapped, the
units, the merge), the CPU time of the process tree (RUSAGE_CHILDREN), and the units' own time that
`circuits job` prints ("computed: N units ... in S s": from when every rank is ready to the last
unit checkpointed on rank 0). units/s = units / that time; medians of the reps. The MPI overhead
is mpi1x2 against single (the same threads, the same units: what the MPI driver adds); mpi2x1
against single is the scaling at equal cores (ranks instead of threads).
"""
import argparse, datetime, json, os, platform, re, resource, shutil, statistics, struct, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL = os.path.join(HERE, ".cache", "gpt2-small-random")
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]


def write_tokens(path, rows, pos, vocab):
    """An int32 .npy of deterministic ids (a linear congruential sequence), standard library only."""
    head = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, pos)
    head += " " * (63 - (10 + len(head)) % 64) + "\n"
    x, vals = 12345, []
    for _ in range(rows * pos):
        x = (1103515245 * x + 12345) % 2**31
        vals.append(x % vocab)
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode())
        f.write(struct.pack("<%di" % len(vals), *vals))


def run_once(cmd, env):
    """(wall s, CPU s of the process tree, units, units' s, units' CPU s, stdout) of one command."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    m = re.search(r"computed: (\d+) units.* in ([0-9.]+) s \(CPU ([0-9.]+) s\)", p.stdout)
    if not m:
        sys.exit(f"no 'computed:' line from {' '.join(cmd)}:\n{p.stdout}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, int(m.group(1)), float(m.group(2)), float(m.group(3)), p.stdout


def unit_sizes(job_dir):
    units = os.path.join(job_dir, "units")
    return sorted(os.path.getsize(os.path.join(units, f)) for f in os.listdir(units) if f.endswith(".safetensors"))


def measure(a):
    tmp = tempfile.mkdtemp(prefix="bench-jobs-")
    try:
        cfg = json.load(open(os.path.join(a.model, "config.json")))
        vocab = cfg.get("vocab_size", cfg.get("d_vocab", 1000))
        toks = os.path.join(tmp, "tokens.npy")
        write_tokens(toks, a.rows, a.pos, vocab)
        env = dict(os.environ, CIRCUITS_PROGRESS="never")
        env.pop("CIRCUITS_NUM_THREADS", None)
        base = [a.exe, "job", a.kind, a.model, toks, "--hooks", a.hooks, "--unit-rows", str(a.unit_rows),
                "--batch", str(a.batch)]
        c = a.cores
        configs = {
            "single": lambda out: base + ["--threads", str(c), "--out", out],
            "mpi1x%d" % c: lambda out: MPIRUN + ["-np", "1"] + base + ["--threads", str(c), "--out", out],
            "mpi%dx1" % c: lambda out: MPIRUN + ["-np", str(c)] + base + ["--threads", "1", "--out", out],
        }
        runs = {k: [] for k in configs}
        outputs = {}
        sizes = []
        for rep in range(a.reps):
            for name, make in configs.items():
                out = os.path.join(tmp, f"{name}-{rep}.out")
                wall, cpu, units, secs, ucpu, _ = run_once(make(out), env)
                runs[name].append(dict(wall_s=wall, cpu_s=cpu, units=units, units_s=secs, units_per_s=units / secs,
                                       units_cpu_s=ucpu, cpu_s_per_unit=ucpu / units))
                print(f"[jobs] {name} rep {rep}: {units} units in {secs:.3f} s ({units / secs:.3f}/s, CPU "
                      f"{ucpu:.2f} s), wall {wall:.2f} s, CPU {cpu:.2f} s", file=sys.stderr, flush=True)
                if not sizes:
                    sizes = unit_sizes(out + ".job")
                first = os.path.join(tmp, f"{name}-0.out")
                if rep == 0:
                    outputs[name] = first
                shutil.rmtree(out + ".job", ignore_errors=True)
        # every configuration's output has the same bits (a file; export: a directory)
        same = {}
        ref = outputs["single"]
        for name, path in outputs.items():
            if os.path.isdir(ref):
                same[name] = subprocess.run(["diff", "-r", "-q", ref, path], capture_output=True).returncode == 0
            else:
                same[name] = open(ref, "rb").read() == open(path, "rb").read()
        med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
        single = med["single"]
        ratios = {k: dict(units_per_s=m["units_per_s"] / single["units_per_s"], wall=m["wall_s"] / single["wall_s"],
                          cpu=m["cpu_s"] / single["cpu_s"],
                          cpu_per_unit=m["cpu_s_per_unit"] / single["cpu_s_per_unit"]) for k, m in med.items()}
        return dict(runs=runs, median=med, vs_single=ratios, identical=same, unit_bytes=sizes[:1] + sizes[-1:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def render(d):
    a = d["args"]
    lines = [f"`circuits job {a['kind']}` on {os.path.basename(a['model'])}: {a['rows']} rows of {a['pos']} tokens, "
             f"{a['unit_rows']} rows a unit, --batch {a['batch']}, {a['cores']} cores in total, median of {a['reps']} "
             f"(load average {d['machine']['load_before'][0]:.1f} before, {d['machine']['load_after'][0]:.1f} after).",
             "",
             "| run | units/s | units' wall s | units' CPU s per unit | whole command: wall s | CPU s | units/s vs single "
             "| CPU per unit vs single | wall vs single | same bits |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k, m in d["median"].items():
        r = d["vs_single"][k]
        lines.append(f"| {k} | {m['units_per_s']:.3f} | {m['units_s']:.2f} | {m['cpu_s_per_unit']:.3f} | {m['wall_s']:.2f} | "
                     f"{m['cpu_s']:.2f} | {r['units_per_s']:.3f} | {r['cpu_per_unit']:.3f} | {r['wall']:.3f} | "
                     f"{'yes' if d['identical'][k] else 'NO'} |")
    c = a["cores"]
    ov = 1 - d["vs_single"][f"mpi1x{c}"]["units_per_s"]
    ovc = d["vs_single"][f"mpi1x{c}"]["cpu_per_unit"] - 1
    lines += ["", f"MPI layer's overhead (mpi1x{c} against single): units/s {100 * ov:+.1f} %, CPU per unit "
              f"{100 * ovc:+.1f} % (goal <= 3 %). "
              f"Unit file: {d['unit_bytes'][0]} bytes (the last, shorter unit: {d['unit_bytes'][-1]})."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exe", default=os.path.join(ROOT, "build", "examples", "circuits"))
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--kind", default="mean", choices=["mean", "export"])
    ap.add_argument("--hooks", default="blocks.*.hook_resid_post")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--pos", type=int, default=64)
    ap.add_argument("--unit-rows", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="write the measurements (JSON) here")
    ap.add_argument("--render", metavar="JSON", help="only print the table of a saved run")
    a = ap.parse_args()
    if a.render:
        print(render(json.load(open(a.render))))
        return 0
    if not os.path.exists(os.path.join(a.model, "config.json")):
        sys.exit(f"no model in {a.model}: python bench/make_model.py {MODEL} (torch + transformers), or --model DIR")
    if not shutil.which("mpirun"):
        sys.exit("mpirun not found (Open MPI), and the circuits CLI must be built with MPI (meson option mpi)")
    load_before = os.getloadavg()
    d = measure(a)
    d["args"] = vars(a)
    d["machine"] = dict(cpu=next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                  if l.startswith("model name")), "?"), cores=os.cpu_count(),
                        kernel=platform.release(), load_before=load_before, load_after=os.getloadavg(),
                        date=datetime.datetime.now().isoformat(timespec="minutes"))
    print(render(d))
    if a.out:
        json.dump(d, open(a.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
