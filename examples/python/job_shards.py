"""A dataset-scale job driven from Python as independent shard tasks, the way a Dask or Ray user
would (docs/jobs.md "Python"): each task opens the model and the dataset itself, runs its shard
of the units (``circuits.Job(..., shard=(i, n)).run()``) into its own directory and returns
that directory; then ``circuits.merge`` reduces them. The output is the single-process job's,
byte for byte (bindings/python/tests/test_jobs.py checks it).

    PYTHONPATH=bindings/python python3 examples/python/job_shards.py --shards 3 --out means.safetensors
    PYTHONPATH=bindings/python python3 examples/python/job_shards.py --scheduler dask ...   # needs dask

Tasks take paths, not objects: a circuits.Model or Dataset holds library memory and is not
picklable, and a worker process (or a cluster node) maps the weights itself (one copy in the
page cache per machine). Ray: ``ray.remote(run_shard).remote(...)`` per shard and ``ray.get``
the directories; the task is the same function.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import List, Sequence

import numpy as np

import circuits

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def run_shard(model_path: str, tokens_path: str, hooks: Sequence[str], unit_rows: int, batch_size: int,
              index: int, count: int, workdir: str) -> str:
    """One task: shard ``index`` of ``count`` into ``workdir/shard-<index>``. Re-running a task
    (a retry after a worker died) resumes: its finished units are kept."""
    d = os.path.join(workdir, f"shard-{index}")
    with circuits.Model.from_pretrained(model_path) as model, circuits.Dataset.open(tokens_path) as ds:
        job = circuits.Job(model, ds, kind="mean", hooks=list(hooks), unit_rows=unit_rows, batch_size=batch_size,
                           dir=d, shard=(index, count))
        job.run()
        job.close()
    return d


def run_processes(args: argparse.Namespace, workdir: str) -> List[str]:
    # spawn, not fork: a forked child would inherit the parent's library state (its thread pool)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_shard, args.model, args.tokens, args.hooks, args.unit_rows, args.batch_size, i,
                               args.shards, workdir) for i in range(args.shards)]
        return [f.result() for f in futures]


def run_dask(args: argparse.Namespace, workdir: str) -> List[str]:
    import dask

    tasks = [dask.delayed(run_shard)(args.model, args.tokens, args.hooks, args.unit_rows, args.batch_size, i,
                                     args.shards, workdir) for i in range(args.shards)]
    return list(dask.compute(*tasks, scheduler="processes", num_workers=args.workers))


def main(argv: Sequence[str] = ()) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join(REPO, "examples", "models", "tiny-random-gpt2"))
    p.add_argument("--tokens", help=".npy of token ids [n_rows, pos] (default: 64 random rows of 16 written to the "
                                    "work directory)")
    p.add_argument("--hooks", nargs="+", default=["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"])
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--unit-rows", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--scheduler", choices=("processes", "dask"), default="processes")
    p.add_argument("--workdir", help="where the shards' directories go (default: a new temporary directory)")
    p.add_argument("--out", default="means.safetensors")
    args = p.parse_args(list(argv) or None)
    workdir = args.workdir or tempfile.mkdtemp(prefix="job_shards.")
    os.makedirs(workdir, exist_ok=True)  # a job makes its own directory, not its parents
    if args.tokens is None:
        args.tokens = os.path.join(workdir, "tokens.npy")
        np.save(args.tokens, np.random.default_rng(0).integers(0, 1000, size=(64, 16), dtype=np.int32))
    dirs = run_dask(args, workdir) if args.scheduler == "dask" else run_processes(args, workdir)
    out = circuits.merge(args.out, dirs)
    res = circuits.load_job_output(out)
    prov = res.pop("provenance")
    print(f"{len(dirs)} shards merged into {out} ({prov.get('job', {}).get('kind', 'mean') if prov else '?'})")
    for name, a in sorted(res.items()):
        print(f"  {name}: {list(a.shape)} mean {float(np.mean(a)):.6f}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
