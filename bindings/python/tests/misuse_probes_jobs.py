"""The misuse probes of datasets and jobs (0.9.0; circuits.Dataset, circuits.Job, circuits.merge,
docs/jobs.md "Python"), merged into misuse_probes.PROBES / AUDIT at the end of that module. Same
rules: each body runs after misuse_probes.PRELUDE in its own interpreter and must end with ok().

A job holds the addresses of its model and dataset (circuits_job_create: "model and ds must
outlive the job") and calls back into Python (progress, compute's on_unit), so the probes are
about owners (the model, the dataset or the job closed and dropped while the job runs or before
it does), callbacks (raising, re-entering, closing things, keeping the bytes they get), and
sizes crossing ctypes (tokens, columns, units, shard tuples, huge ints, bytes stored)."""

from __future__ import annotations

_DATA = r'''
import tempfile, glob
HOOKS = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
rng = np.random.default_rng(5)
JTOK = rng.integers(0, 1000, size=(21, 9))       # tiny-random-gpt2: d_vocab 1000; 3 units of 8

def ref_means(tokens=JTOK):
    """What the job computes, from a fresh model's run_with_cache (per-row, float64 mean)."""
    m = load()
    _, cache = m.run_with_cache(tokens, names_filter=lambda n: n in HOOKS)
    out = {h: np.asarray(cache[h], np.float64).mean(0) for h in HOOKS}
    m.close()
    return out

def check_means(path, tokens=JTOK):
    got = circuits.load_job_output(path)
    want = ref_means(tokens)
    for h in HOOKS:
        assert got[h].shape == want[h].shape, (h, got[h].shape, want[h].shape)
        assert np.allclose(got[h], want[h], rtol=1e-5, atol=1e-6), h
    return got

def new_job(m, ds, d=None, **kw):
    kw.setdefault("unit_rows", 8)
    return circuits.Job(m, ds, kind="mean", hooks=HOOKS, dir=d, **kw)

def units_in(d):
    return sorted(glob.glob(os.path.join(d, "units", "*.safetensors")))
'''

JOB_PROBES = {
    "owner_job_model_and_dataset_closed": ("owner", _DATA + '''
# the job holds the model's and the dataset's handles: both closed and dropped, collected and
# the heap churned before the job runs, it still reads a live model and dataset; a closed model
# or dataset is refused when making a job
m = load()
ds = circuits.Dataset.from_tokens(JTOK)
d = tempfile.mkdtemp()
job = new_job(m, ds, d)
m.close(); ds.close()
del m, ds
churn()
job.run()
out = job.merge(os.path.join(d, "out.safetensors"))
job.close(); del job; gc.collect()
check_means(out)
m = load(); ds = circuits.Dataset.from_tokens(JTOK)
m2 = load(); m2.close()
refused(lambda: new_job(m2, ds), circuits.ClosedError)
ds2 = circuits.Dataset.from_tokens(JTOK); ds2.close()
refused(lambda: new_job(m, ds2), circuits.ClosedError)
refused(lambda: ds2.column("tokens"), circuits.ClosedError)
refused(lambda: ds2.digest(), circuits.ClosedError)
m.close()
ok()
'''),
    "owner_job_closed_during_run": ("owner", _DATA + '''
# job.close(), model.close() and ds.close() from inside the progress callback, and job.close()
# from another thread while the job runs: each call holds the job's handle (and the job its
# model's and dataset's), so nothing is freed under the run; afterwards the job is closed
import time
d = tempfile.mkdtemp()
m = load(); ds = circuits.Dataset.from_tokens(JTOK)
job = new_job(m, ds, d, batch_size=2)
seen = []
def prog(done, total):
    seen.append(done)
    job.close(); m.close(); ds.close()
    gc.collect()
job.run(progress=prog)
assert seen and seen[-1] == 3, seen
assert job.closed and m.closed and ds.closed
refused(lambda: job.run(), circuits.ClosedError)
refused(lambda: job.status(), circuits.ClosedError)
del job, m, ds; churn()
out = circuits.merge(os.path.join(d, "out.safetensors"), [d])
check_means(out)
for it in range(6):
    d = tempfile.mkdtemp()
    m = load(); ds = circuits.Dataset.from_tokens(JTOK)
    job = new_job(m, ds, d, unit_rows=2, batch_size=1)
    errs = []
    def worker(job=job):
        try:
            job.run()
        except circuits.ClosedError:
            pass
        except BaseException as e:
            errs.append(e)
    th = threading.Thread(target=worker); th.start()
    time.sleep(0.002 * it)
    job.close(); m.close(); ds.close()
    del job, m, ds
    gc.collect()
    th.join()
    assert not errs, errs
ok()
'''),
    "owner_dataset_columns_fixed_while_used": ("owner", _DATA + '''
# a job reads the dataset's columns without a lock: while a job lives they cannot change
# (set_column / load_column refused); columns come out as read-only copies that outlive the
# dataset; once the job is gone the dataset can change again
m = load()
ds = circuits.Dataset.from_tokens(JTOK)
ds.set_column("answer", np.arange(21))
col = ds.column("answer"); tok = ds.column("tokens")
assert not col.flags.writeable and not tok.flags.writeable and col.shape == (21, 1)
job = new_job(m, ds)
refused(lambda: ds.set_column("answer", np.zeros(21, np.int64)), circuits.InvalidArgumentError)
refused(lambda: ds.set_column("wrong", np.zeros(21, np.int64)), circuits.InvalidArgumentError)
npy = os.path.join(tempfile.mkdtemp(), "c.npy"); np.save(npy, np.ones((21, 1), np.int32))
refused(lambda: ds.load_column("wrong", npy), circuits.InvalidArgumentError)
dig = ds.digest()
job.close(); del job; gc.collect()
ds.set_column("wrong", np.zeros(21, np.int64))
ds.load_column("position", npy)
assert ds.digest() != dig
ds.close(); del ds; churn()
same(col, np.arange(21)[:, None]); same(tok, JTOK)
refused(lambda: col.__setitem__(0, 5), ValueError)
m.close()
ok()
'''),
    "kept_job_unit_bytes": ("kept", _DATA + '''
# the bytes compute() hands out (list or on_unit) are copies: kept past the call, the job's
# close, other jobs and heap churn, they still store into a job of the same provenance and the
# merge equals a plain run
m = load(); ds = circuits.Dataset.from_tokens(JTOK)
job = new_job(m, ds)
got = job.compute([2, 0])
streamed = []
job.compute(np.array([1], np.uint8), on_unit=lambda u, b: streamed.append((u, b)))
job.close(); del job; churn(m)
assert [u for u, _ in got] == [2, 0] and streamed[0][0] == 1
d = tempfile.mkdtemp()
j2 = new_job(m, ds, d)
for u, b in got + streamed:
    assert isinstance(b, bytes) and len(b) > 8
    j2.store(u, b)
assert j2.status() == (3, 3, 3), j2.status()
out = j2.merge(os.path.join(d, "out.safetensors"))
d3 = tempfile.mkdtemp()
j3 = new_job(m, ds, d3); j3.run()
out3 = j3.merge(os.path.join(d3, "out.safetensors"))
assert open(out, "rb").read() == open(out3, "rb").read()
m.close()
ok()
'''),
    "kept_job_callbacks_raise_and_reenter": ("kept", _DATA + '''
# exceptions raised in callbacks reach the caller as themselves after the C call returns, with
# whole units checkpointed; a callback re-entering its own job is refused; returning True stops
# (HookStopped); the stopped job resumes to the same bits
class Boom(Exception):
    pass
m = load(); ds = circuits.Dataset.from_tokens(JTOK)
d = tempfile.mkdtemp()
job = new_job(m, ds, d, unit_rows=4, batch_size=3)
def boom(done, total):
    if done >= 2:
        raise Boom("stop here")
circuits.set_num_threads(1)  # the calling thread computes (and reports) every unit
e = refused(lambda: job.run(progress=boom), Boom)
circuits.set_num_threads(0)
st = job.status()
assert st.n_done == 2 and st.n_units == 6, st
for f in units_in(d):
    circuits.jobs._read_safetensors(f)  # whole files only
inner = []
def reenter(done, total):
    try:
        job.run()
    except circuits.InvalidArgumentError as e:
        inner.append(e)
    for call in (job.status, lambda: job.unit_done(0), lambda: job.provenance):
        try:
            call()
        except circuits.InvalidArgumentError as e:
            inner.append(e)
    return True
refused(lambda: job.run(progress=reenter), circuits.HookStopped)
assert len(inner) == 4, inner
refused(lambda: job.compute([0, 1], on_unit=lambda u, b: (_ for _ in ()).throw(Boom("unit"))), Boom)
refused(lambda: job.compute([0], on_unit=lambda u, b: job.compute([1])), circuits.InvalidArgumentError)
refused(lambda: job.run(progress=lambda d, t: 1 / 0), ZeroDivisionError)
refused(lambda: job.run(progress=42), TypeError)
job.run()
out = job.merge(os.path.join(d, "out.safetensors"))
check_means(out)
m.close()
ok()
'''),
    "size_dataset_inputs": ("size", _DATA + '''
# every array crossing into circuits_dataset_*: integer dtypes only, values checked against
# int32 before any cast, shapes checked, strided / Fortran / other-width arrays converted
ref = circuits.Dataset.from_tokens(JTOK.astype(np.int32))
for t in (JTOK.astype(np.int64), JTOK.astype(np.uint16), np.asfortranarray(JTOK),
          np.repeat(JTOK, 2, axis=1)[:, ::2]):
    ds = circuits.Dataset.from_tokens(t)
    same(ds.tokens, JTOK)
    assert ds.digest() == ref.digest()
assert circuits.Dataset.from_tokens(JTOK[0]).shape == (1, 9)
refused(lambda: circuits.Dataset.from_tokens(JTOK.astype(np.float32)), TypeError)
refused(lambda: circuits.Dataset.from_tokens(np.array(["a", "b"])), TypeError)
refused(lambda: circuits.Dataset.from_tokens(JTOK.reshape(3, 7, 9)), circuits.ShapeError)
refused(lambda: circuits.Dataset.from_tokens(np.array([[2**31]])), circuits.RangeError)
refused(lambda: circuits.Dataset.from_tokens(np.array([[2**64 - 1]], np.uint64)), circuits.RangeError)
refused(lambda: circuits.Dataset.from_tokens(np.array([[-2**40]])), circuits.RangeError)
refused(lambda: circuits.Dataset.from_tokens(np.zeros((0, 9), np.int32)), CircuitsError)
refused(lambda: circuits.Dataset.from_tokens(np.zeros((3, 0), np.int32)), CircuitsError)
refused(lambda: circuits.Dataset(), TypeError)
refused(lambda: ref.set_column("answer", np.zeros(20, np.int32)), circuits.ShapeError)
refused(lambda: ref.set_column("answer", np.zeros((21, 2, 2), np.int32)), circuits.ShapeError)
refused(lambda: ref.set_column("answer", np.zeros(21, np.float64)), TypeError)
refused(lambda: ref.set_column("answer", np.full(21, 2**33)), circuits.RangeError)
refused(lambda: ref.set_column("tokens", JTOK), CircuitsError)
refused(lambda: ref.set_column("a\\0b", np.zeros(21, np.int32)), ValueError)
refused(lambda: ref.set_column(3, np.zeros(21, np.int32)), TypeError)
refused(lambda: ref.column("missing"), circuits.NotFoundError)
d = tempfile.mkdtemp()
refused(lambda: ref.load_column("answer", os.path.join(d, "missing.npy")), circuits.CircuitsIOError)
np.save(os.path.join(d, "bad.npy"), np.zeros(20, np.int32))
refused(lambda: ref.load_column("answer", os.path.join(d, "bad.npy")), CircuitsError)
np.save(os.path.join(d, "f.npy"), np.zeros((21, 1), np.float32))
refused(lambda: ref.load_column("answer", os.path.join(d, "f.npy")), CircuitsError)
open(os.path.join(d, "trunc.npy"), "wb").write(b"\\x93NUMPY\\x01\\x00\\x76\\x00{'descr': '<i4'")
refused(lambda: circuits.Dataset.open(os.path.join(d, "trunc.npy")), CircuitsError)
refused(lambda: circuits.Dataset.open(os.path.join(d, "missing.npy")), circuits.CircuitsIOError)
open(os.path.join(d, "t.txt"), "w").write("hello world\\n")
refused(lambda: circuits.Dataset.open(os.path.join(d, "t.txt")), CircuitsError)
m = load()
refused(lambda: circuits.Dataset.open(os.path.join(d, "t.txt"), model=m, seq_len=2**70), OverflowError, ValueError)
refused(lambda: circuits.Dataset.open(os.path.join(d, "t.txt"), tokenizer=object()), TypeError)
refused(lambda: circuits.Dataset.open(os.path.join(d, "t.txt"), model=m, column="a\\0b"), ValueError)
np.save(os.path.join(d, "tok.npy"), JTOK)
ds = circuits.Dataset.open(os.path.join(d, "tok.npy"), max_rows=5)
same(ds.tokens, JTOK[:5])
m.close()
ok()
'''),
    "size_job_options_and_units": ("size", _DATA + '''
# job options crossing as a struct (huge ints, bad names, bad shard tuples), units as an int64
# array, bytes stored, directories merged
m = load(); ds = circuits.Dataset.from_tokens(JTOK)
for bad in ((1, 1), (-1, 2), (0, 0), (2, 2), (0, -3)):
    refused(lambda: new_job(m, ds, shard=bad), ValueError, CircuitsError)
for bad in ([0, 1], (0, 1, 2), (0,), "0/1", None, (0.5, 2), ("a", 2)):
    refused(lambda: new_job(m, ds, shard=bad), TypeError, ValueError)
for bad in ((0, 2**31), (2**40, 2**41)):
    refused(lambda: new_job(m, ds, shard=bad), OverflowError, ValueError)
refused(lambda: new_job(m, ds, unit_rows=2**70), OverflowError, ValueError)
refused(lambda: new_job(m, ds, unit_rows=0), CircuitsError)
refused(lambda: new_job(m, ds, unit_rows=-5), CircuitsError)
refused(lambda: new_job(m, ds, batch_size=2**63), OverflowError, ValueError)
refused(lambda: new_job(m, ds, batch_size=0), CircuitsError)
refused(lambda: new_job(m, ds, seed=-1), OverflowError, ValueError)
refused(lambda: new_job(m, ds, seed=2**64), OverflowError, ValueError)
refused(lambda: circuits.Job(m, ds, kind="nope", hooks=HOOKS), ValueError)
refused(lambda: circuits.Job(m, ds, kind=2**40, hooks=HOOKS), OverflowError, ValueError)
refused(lambda: circuits.Job(m, ds, kind=99, hooks=HOOKS), CircuitsError)
refused(lambda: circuits.Job(m, ds, kind="mean", hooks=["a\\0b"]), ValueError)
refused(lambda: circuits.Job(m, ds, kind="mean", hooks=[3]), TypeError)
refused(lambda: circuits.Job(m, ds, kind="mean", hooks=["blocks.9.hook_nope"]), CircuitsError)
refused(lambda: circuits.Job(m, ds, kind="mean", hooks=[]), CircuitsError)
refused(lambda: circuits.Job(object(), ds, kind="mean", hooks=HOOKS), TypeError)
refused(lambda: circuits.Job(m, "tokens", kind="mean", hooks=HOOKS), TypeError)
refused(lambda: circuits.Job(m, ds, kind="mean", hooks=HOOKS, dir="a\\0b"), ValueError)
refused(lambda: circuits.Job(m, ds, kind="patch_sweep", patch_kind="nope"), ValueError)
refused(lambda: circuits.Job(m, ds, kind="ablation_sweep", ablation="nope"), ValueError)
big = circuits.Dataset.from_tokens(np.full((2, 4), 5000))
refused(lambda: new_job(m, big).run(), circuits.RangeError, CircuitsError)  # at create or at run
job = new_job(m, ds)
refused(lambda: job.compute([3]), circuits.RangeError, CircuitsError)
refused(lambda: job.compute([-1]), circuits.RangeError, CircuitsError)
refused(lambda: job.compute(np.array([2**64 - 1], np.uint64)), circuits.RangeError)
refused(lambda: job.compute([0.5]), TypeError)
refused(lambda: job.compute([[0, 1]]), TypeError)
refused(lambda: job.compute(["0"]), TypeError)
assert job.compute([]) == []
refused(lambda: job.unit_done(2**70), OverflowError, ValueError)
refused(lambda: job.unit_done(7), circuits.RangeError, CircuitsError)
refused(lambda: job.store(0, job.compute([0])[0][1]), CircuitsError)  # no directory
d = tempfile.mkdtemp()
jd = new_job(m, ds, d)
unit0 = job.compute([0])[0][1]
refused(lambda: jd.store(1, unit0), circuits.ProvenanceError, CircuitsError)
refused(lambda: jd.store(0, b""), CircuitsError)
refused(lambda: jd.store(0, unit0[:-7]), CircuitsError)
refused(lambda: jd.store(0, b"\\xff" * 64), CircuitsError)
refused(lambda: jd.store(0, unit0[:8] + b"\\x00" * (len(unit0) - 8)), CircuitsError)
refused(lambda: jd.store(0, 12345), TypeError)
refused(lambda: jd.store(2**70, unit0), OverflowError, ValueError)
other = circuits.Job(m, ds, kind="mean", hooks=HOOKS[:1], unit_rows=8)
refused(lambda: jd.store(0, other.compute([0])[0][1]), circuits.ProvenanceError)
jd.store(0, memoryview(bytearray(unit0)))
assert jd.unit_done(0) and not jd.unit_done(1)
refused(lambda: circuits.merge(os.path.join(d, "o.safetensors"), [d]), circuits.NotFoundError, CircuitsError)
refused(lambda: circuits.merge(os.path.join(d, "o.safetensors"), ["a\\0b"]), ValueError)
refused(lambda: circuits.merge(os.path.join(d, "o.safetensors"), []), CircuitsError)
refused(lambda: circuits.merge(os.path.join(d, "o.safetensors"), [os.path.join(d, "none")]), CircuitsError)
refused(lambda: circuits.load_job_output(os.path.join(d, "none.safetensors")), OSError)
open(os.path.join(d, "junk.safetensors"), "wb").write(b"\\x10\\x00\\x00\\x00\\x00\\x00\\x00\\x00{}")
refused(lambda: circuits.load_job_output(os.path.join(d, "junk.safetensors")), CircuitsError, ValueError)
m.close()
ok()
'''),
}

JOB_AUDIT = {
    "circuits_dataset_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_dataset_open": ["size_dataset_inputs"],
    "circuits_dataset_from_tokens": ["size_dataset_inputs", "owner_job_model_and_dataset_closed"],
    "circuits_dataset_free": ["owner_job_model_and_dataset_closed", "owner_job_closed_during_run",
                              "owner_dataset_columns_fixed_while_used"],
    "circuits_dataset_set_column": ["size_dataset_inputs", "owner_dataset_columns_fixed_while_used"],
    "circuits_dataset_load_column": ["size_dataset_inputs", "owner_dataset_columns_fixed_while_used"],
    "circuits_dataset_dims": ["size_dataset_inputs"],
    "circuits_dataset_column": ["size_dataset_inputs", "owner_dataset_columns_fixed_while_used"],
    "circuits_dataset_digest": ["size_dataset_inputs", "owner_dataset_columns_fixed_while_used"],
    "circuits_job_options_init": "a struct of the binding's, sized by ctypes",
    "circuits_job_create": ["size_job_options_and_units", "owner_job_model_and_dataset_closed"],
    "circuits_job_free": ["owner_job_model_and_dataset_closed", "owner_job_closed_during_run"],
    "circuits_job_provenance": ["kept_job_callbacks_raise_and_reenter"],
    "circuits_job_status": ["kept_job_unit_bytes", "kept_job_callbacks_raise_and_reenter"],
    "circuits_job_unit_done": ["size_job_options_and_units", "kept_job_callbacks_raise_and_reenter"],
    "circuits_job_run": ["owner_job_closed_during_run", "kept_job_callbacks_raise_and_reenter"],
    "circuits_job_compute": ["kept_job_unit_bytes", "size_job_options_and_units",
                             "kept_job_callbacks_raise_and_reenter"],
    "circuits_job_store": ["kept_job_unit_bytes", "size_job_options_and_units"],
    "circuits_job_merge": ["kept_job_unit_bytes", "size_job_options_and_units", "owner_job_closed_during_run"],
}
