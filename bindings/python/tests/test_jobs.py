"""circuits.Dataset, circuits.Job, circuits.merge and circuits.load_job_output (docs/jobs.md
"Python"): a mean-activations job equals the direct calls (run_with_cache, mean_activations);
its output is byte-identical across thread counts, batch sizes, shards + merge, compute + store
and the example that drives shards from worker processes; a job resumes after unit files are
deleted without recomputing the others; provenance mismatches raise ProvenanceError; a stopped
job leaves whole units."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest

import circuits
from circuits.jobs import _read_safetensors
from conftest import REPO, TINY_GPT2
import safetensors_np

HOOKS = ["blocks.0.hook_resid_post", "blocks.2.attn.hook_z", "blocks.4.mlp.hook_post"]
N_ROWS, POS, UNIT = 37, 11, 8  # 5 units, the last one of 5 rows


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(11).integers(0, 1000, size=(N_ROWS, POS), dtype=np.int64)


@pytest.fixture(scope="module")
def model():
    m = circuits.Model.from_pretrained(TINY_GPT2)
    yield m
    m.close()


def _job(model, tokens, d=None, **kw):
    kw.setdefault("unit_rows", UNIT)
    ds = tokens if isinstance(tokens, circuits.Dataset) else circuits.Dataset.from_tokens(tokens)
    return circuits.Job(model, ds, kind="mean", hooks=HOOKS, dir=None if d is None else str(d), **kw)


def _run(model, tokens, d, **kw):
    job = _job(model, tokens, d, **kw)
    job.run()
    out = job.merge(str(d) + ".safetensors")
    job.close()
    return out


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _units(d):
    return sorted(glob.glob(os.path.join(str(d), "units", "*.safetensors")))


@pytest.fixture(scope="module")
def reference(model, tokens, tmp_path_factory):
    """The single-process, default-options output file."""
    return _run(model, tokens, tmp_path_factory.mktemp("ref") / "job")


# -- datasets ------------------------------------------------------------------------------


def test_dataset_from_tokens_columns_and_digest(tokens):
    ds = circuits.Dataset.from_tokens(tokens)
    assert ds.shape == (N_ROWS, POS) and ds.n_rows == N_ROWS and ds.pos == POS and len(ds) == N_ROWS
    t = ds.column("tokens")
    assert t.dtype == np.int32 and np.array_equal(t, tokens) and not t.flags.writeable
    d0 = ds.digest()
    assert len(d0) == 64 and int(d0, 16) >= 0
    assert circuits.Dataset.from_tokens(tokens.astype(np.int32)).digest() == d0
    assert circuits.Dataset.from_tokens(tokens[::-1]).digest() != d0
    ds.set_column("answer", np.arange(N_ROWS))
    assert ds.column("answer").shape == (N_ROWS, 1) and np.array_equal(ds.column("answer")[:, 0], np.arange(N_ROWS))
    d1 = ds.digest()
    assert d1 != d0
    ds.set_column("answer", np.arange(N_ROWS) + 1)
    assert ds.digest() != d1
    with pytest.raises(circuits.NotFoundError):
        ds.column("wrong")
    with ds:
        pass
    assert ds.closed
    with pytest.raises(circuits.ClosedError):
        ds.n_rows


def test_dataset_open_npy_and_safetensors(tokens, tmp_path):
    np.save(tmp_path / "t.npy", tokens.astype(np.int16))
    ds = circuits.Dataset.open(tmp_path / "t.npy")
    assert np.array_equal(ds.tokens, tokens) and ds.digest() == circuits.Dataset.from_tokens(tokens).digest()
    assert circuits.Dataset.open(tmp_path / "t.npy", max_rows=4).shape == (4, POS)
    corrupted = (tokens + 1) % 1000
    safetensors_np.save(str(tmp_path / "d.safetensors"), {
        "ids": tokens.astype(np.int32), "corrupted": corrupted.astype(np.int32),
        "answer": np.arange(N_ROWS, dtype=np.int32)[:, None]})
    ds = circuits.Dataset.open(tmp_path / "d.safetensors", tensor="ids")
    assert np.array_equal(ds.tokens, tokens)
    assert np.array_equal(ds.column("corrupted"), corrupted)
    assert np.array_equal(ds.column("answer")[:, 0], np.arange(N_ROWS))
    np.save(tmp_path / "w.npy", np.arange(N_ROWS, dtype=np.int64)[:, None] * 2)
    ds.load_column("wrong", tmp_path / "w.npy")
    assert np.array_equal(ds.column("wrong")[:, 0], np.arange(N_ROWS) * 2)


def test_dataset_open_text_with_the_models_tokenizer(model, tmp_path):
    docs = ["When John and Mary went to the shops, John gave the bag to Mary.",
            "The quick brown fox jumps over the lazy dog. " * 3, "short"]
    (tmp_path / "d.txt").write_text("\n".join(docs) + "\n")
    tok = model.tokenizer
    seq = 8
    ds = circuits.Dataset.open(tmp_path / "d.txt", model=model, seq_len=seq)
    rows = ds.tokens
    assert rows.shape[1] == seq and rows.shape[0] >= 1
    bos = tok.bos_token_id
    assert (rows[:, 0] == bos).all()
    # the rows after their BOS are the documents' tokens joined by EOS, in order (the last
    # partial row dropped)
    eos = tok.eos_token_id
    pieces = [tok.encode(d, prepend_bos=False).tolist() for d in docs]
    stream = rows[:, 1:].reshape(-1).tolist()
    joined_between = [t for i, p in enumerate(pieces) for t in ([eos] if i else []) + p]
    joined_after = [t for p in pieces for t in p + [eos]]
    assert stream in (joined_between[:len(stream)], joined_after[:len(stream)]), stream
    assert rows.shape[0] == len(joined_after) // (seq - 1) or rows.shape[0] == len(joined_between) // (seq - 1)
    with_tok = circuits.Dataset.open(tmp_path / "d.txt", tokenizer=model.tokenizer, seq_len=seq)
    assert np.array_equal(with_tok.tokens, rows)
    import json

    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs)))
    jl = circuits.Dataset.open(tmp_path / "d.jsonl", model=model, seq_len=seq, column="body")
    assert np.array_equal(jl.tokens, rows)
    assert circuits.Dataset.open(tmp_path / "d.jsonl", model=model, seq_len=seq, column="body", max_rows=1).shape \
        == (1, seq)
    with pytest.raises(circuits.CircuitsError):
        circuits.Dataset.open(tmp_path / "d.jsonl", model=model, seq_len=seq)  # no "text" field


# -- jobs equal the direct calls -----------------------------------------------------------


def test_mean_job_equals_run_with_cache_and_mean_activations(model, tokens, reference):
    res = circuits.load_job_output(reference)
    prov = res.pop("provenance")
    assert isinstance(prov, dict) and prov
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in HOOKS)
    direct = circuits.patching.mean_activations(model, tokens, HOOKS, batch_size=5)
    for h in HOOKS:
        assert h in res, sorted(res)
        want = np.asarray(cache[h], np.float64).mean(0)
        assert res[h].shape == want.shape, (h, res[h].shape, want.shape)
        assert np.allclose(res[h], want, rtol=1e-5, atol=1e-6), h
        assert np.allclose(res[h], direct[h], rtol=1e-5, atol=1e-6), h


def test_provenance_and_status(model, tokens, tmp_path):
    job = _job(model, tokens, tmp_path / "j", seed=7)
    p = job.provenance
    assert isinstance(p, dict) and job.provenance_json.startswith("{")
    text = job.provenance_json
    assert circuits.Dataset.from_tokens(tokens).digest() in text
    assert str(circuits.library_version()) in text
    assert job.status() == (5, 0, 5)
    assert not job.unit_done(0)
    job.run()
    assert job.status() == (5, 5, 5) and all(job.unit_done(u) for u in range(5))
    assert len(_units(tmp_path / "j")) == 5
    out = job.merge(tmp_path / "out.safetensors")
    assert circuits.load_job_output(out)["provenance"] == p
    assert p["job"]["seed"] in (7, "7")  # recorded (as a string: a uint64 is beyond JSON's exact integers)
    # batch size and shard are not recorded: they change no bit
    assert _job(model, tokens, batch_size=3, shard=(1, 2), seed=7).provenance == p
    assert _job(model, tokens, seed=8).provenance != p


# -- bit identity --------------------------------------------------------------------------


@pytest.mark.parametrize("threads,batch", [(1, 8), (2, 1), (2, 3), (1, 5)])
def test_bit_identical_for_threads_and_batch_sizes(model, tokens, reference, tmp_path, threads, batch):
    before = circuits.get_num_threads()
    circuits.set_num_threads(threads)
    try:
        out = _run(model, tokens, tmp_path / "j", batch_size=batch)
    finally:
        circuits.set_num_threads(before)
    assert _bytes(out) == _bytes(reference)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_shards_and_merge_are_bit_identical(model, tokens, reference, tmp_path, n):
    dirs = []
    for i in range(n):
        d = tmp_path / f"s{i}"
        job = _job(model, tokens, d, shard=(i, n), batch_size=1 + i % 3)
        st = job.run()
        assert st.n_mine == len(range(i, 5, n)), st
        dirs.append(str(d))
    # any order of the directories; one shared directory works too
    out = circuits.merge(tmp_path / "out.safetensors", dirs[::-1])
    assert _bytes(out) == _bytes(reference)
    shared = tmp_path / "shared"
    for i in range(n):
        _job(model, tokens, shared, shard=(i, n)).run()
    assert _bytes(circuits.merge(tmp_path / "o2.safetensors", [shared])) == _bytes(reference)


def test_compute_and_store_are_bit_identical(model, tokens, reference, tmp_path):
    worker = _job(model, tokens, batch_size=2)  # no directory: computes only
    got = worker.compute([4, 1, 3])
    assert [u for u, _ in got] == [4, 1, 3]
    streamed = []
    assert worker.compute(np.array([0, 2]), on_unit=lambda u, b: streamed.append((u, b))) == []
    store = _job(model, tokens, tmp_path / "j")
    for u, b in got + streamed:
        store.store(u, b)
    assert store.status().n_done == 5
    assert _bytes(store.merge(tmp_path / "out.safetensors")) == _bytes(reference)
    # a unit's bytes are its checkpoint file's
    assert _bytes(_units(tmp_path / "j")[4]) == got[0][1]


# -- resume, stop, provenance --------------------------------------------------------------


def test_resume_after_deleting_units(model, tokens, reference, tmp_path):
    d = tmp_path / "j"
    _job(model, tokens, d).run()
    files = _units(d)
    assert len(files) == 5
    kept = {f: os.stat(f).st_mtime_ns for f in files if f not in (files[1], files[3])}
    os.remove(files[1])
    os.remove(files[3])
    job = _job(model, tokens, d, batch_size=3)
    assert job.status() == (5, 3, 5)
    calls = []
    job.run(progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (5, 5) and all(done >= 3 for done, _ in calls), calls
    for f, t in kept.items():
        assert os.stat(f).st_mtime_ns == t, f"{f} was recomputed"
    assert _bytes(job.merge(tmp_path / "out.safetensors")) == _bytes(reference)


def test_progress_stop_leaves_whole_units_and_resumes(model, tokens, reference, tmp_path):
    d = tmp_path / "j"
    job = _job(model, tokens, d, unit_rows=2)  # 19 units

    def stop(done, total):
        if done >= 3:
            raise circuits.HookStopped("enough")

    # one thread: it computes every unit and reports after each (the progress callback runs on
    # the calling thread only, so with more threads the others may finish the job before it
    # reports again)
    before = circuits.get_num_threads()
    circuits.set_num_threads(1)
    try:
        with pytest.raises(circuits.HookStopped, match="enough"):
            job.run(progress=stop)
    finally:
        circuits.set_num_threads(before)
    st = job.status()
    assert st == (19, 3, 19), st
    for f in _units(d):
        _read_safetensors(f)  # every checkpoint is whole
    assert not glob.glob(os.path.join(str(d), "units", "*[!s]"))  # no temporary file left beside
    with pytest.raises(circuits.HookStopped):
        job.run(progress=lambda done, total: True)  # a true return stops too
    job.run(progress=True)
    assert job.status().n_done == 19
    ref = circuits.load_job_output(reference)
    got = circuits.load_job_output(job.merge(tmp_path / "out.safetensors"))
    for h in HOOKS:  # another unit_rows: another provenance, the same means
        assert np.allclose(got[h], ref[h], rtol=1e-5, atol=1e-6)


def test_progress_exception_is_reraised_as_itself(model, tokens, tmp_path):
    job = _job(model, tokens, tmp_path / "j")

    class Mine(Exception):
        pass

    err = Mine("from the callback")
    with pytest.raises(Mine) as e:
        job.run(progress=lambda done, total: (_ for _ in ()).throw(err))
    assert e.value is err
    job.run()
    assert job.status().n_done == 5


def test_provenance_refusals(model, tokens, tmp_path):
    d = tmp_path / "j"
    _job(model, tokens, d).run()
    with pytest.raises(circuits.ProvenanceError):
        circuits.Job(model, circuits.Dataset.from_tokens(tokens), kind="mean", hooks=HOOKS[:1], unit_rows=UNIT,
                     dir=str(d))
    with pytest.raises(circuits.ProvenanceError):
        _job(model, (tokens + 1) % 1000, d)  # another dataset
    with pytest.raises(circuits.ProvenanceError):
        _job(model, tokens, d, seed=1)
    other = tmp_path / "other"
    _job(model, tokens, other, unit_rows=4, shard=(1, 2)).run()
    with pytest.raises(circuits.ProvenanceError):
        circuits.merge(tmp_path / "o.safetensors", [d, other])
    assert not os.path.exists(tmp_path / "o.safetensors")
    part = tmp_path / "part"
    _job(model, tokens, part, shard=(0, 2)).run()
    with pytest.raises(circuits.NotFoundError, match="1"):
        circuits.merge(tmp_path / "o.safetensors", [part])
    assert not os.path.exists(tmp_path / "o.safetensors")
    unit = _job(model, tokens).compute([0])[0][1]
    with pytest.raises(circuits.ProvenanceError):
        _job(model, tokens, other, unit_rows=4).store(0, unit)


def test_closing_the_model_and_dataset_while_a_job_holds_them(tokens, reference, tmp_path):
    m = circuits.Model.from_pretrained(TINY_GPT2)
    ds = circuits.Dataset.from_tokens(tokens)
    job = _job(m, ds, tmp_path / "j")
    m.close()
    ds.close()
    with pytest.raises(circuits.ClosedError):
        _job(m, tokens)
    with pytest.raises(circuits.ClosedError):
        circuits.Job(circuits.Model.from_pretrained(TINY_GPT2), ds, hooks=HOOKS)
    job.run()
    assert _bytes(job.merge(tmp_path / "out.safetensors")) == _bytes(reference)
    job.close()
    with pytest.raises(circuits.ClosedError):
        job.status()


def test_dataset_columns_fixed_while_a_job_uses_it(model, tokens):
    ds = circuits.Dataset.from_tokens(tokens)
    job = _job(model, ds)
    with pytest.raises(circuits.InvalidArgumentError, match="in use"):
        ds.set_column("answer", np.zeros(N_ROWS, np.int32))
    job.close()
    del job
    import gc

    gc.collect()
    ds.set_column("answer", np.zeros(N_ROWS, np.int32))


# -- the example: shards from worker processes ---------------------------------------------


def test_example_job_shards_equals_a_single_process_job(model, tmp_path):
    tok = np.random.default_rng(4).integers(0, 1000, size=(29, 12), dtype=np.int32)
    np.save(tmp_path / "tokens.npy", tok)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    out = tmp_path / "shards.safetensors"
    env = dict(os.environ, PYTHONPATH=str(REPO / "bindings" / "python"))
    r = subprocess.run([sys.executable, str(REPO / "examples" / "python" / "job_shards.py"), "--tokens",
                        str(tmp_path / "tokens.npy"), "--hooks", *hooks, "--shards", "3", "--unit-rows", "4",
                        "--batch-size", "3", "--workdir", str(tmp_path / "work"), "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 shards merged" in r.stdout
    single = circuits.Job(model, circuits.Dataset.open(tmp_path / "tokens.npy"), kind="mean", hooks=hooks,
                          unit_rows=4, dir=str(tmp_path / "single"))
    single.run()
    want = single.merge(tmp_path / "single.safetensors")
    assert _bytes(out) == _bytes(want)


# -- the other kinds equal their direct calls ----------------------------------------------

SAE_DIR = REPO / "tests" / "reference" / "saes" / "hf_tiny_random_gpt2" / "standard"


def _sweep_dataset(n=6, pos=7, seed=2):
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 1000, size=(n, pos), dtype=np.int32)
    corrupted = clean.copy()
    corrupted[:, 2] = (clean[:, 2] + 17) % 1000
    answer, wrong = rng.integers(0, 1000, size=n), rng.integers(0, 1000, size=n)
    ds = circuits.Dataset.from_tokens(clean)
    ds.set_column("corrupted", corrupted).set_column("answer", answer).set_column("wrong", wrong)
    return ds, clean, corrupted, answer, wrong


def test_patch_sweep_rows_equal_the_patching_functions(model, tmp_path):
    from circuits import patching

    ds, clean, corrupted, answer, wrong = _sweep_dataset()
    job = circuits.Job(model, ds, kind="patch_sweep", patch_kind="resid_pre", metric="logit_diff", unit_rows=4,
                       dir=str(tmp_path / "j"))
    job.run()
    res = circuits.load_job_output(job.merge(tmp_path / "out.safetensors"))
    assert res["provenance"]["job"]["patch_kind"] == "resid_pre"
    assert res["grid"].shape == (6, model.cfg.n_layers, 7)
    for r in range(6):
        metric = patching.LogitDiff(answer[r:r + 1], wrong[r:r + 1])
        _, cache = model.run_with_cache(clean[r:r + 1])
        want = patching.get_act_patch_resid_pre(model, corrupted[r:r + 1], cache, metric)
        assert np.array_equal(res["grid"][r], want), r
        assert res["clean_metric"][r] == np.float32(metric(model(clean[r:r + 1])))
        assert res["corrupted_metric"][r] == np.float32(metric(model(corrupted[r:r + 1])))
    assert np.allclose(res["mean_grid"], res["grid"].astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)
    # the C name and circuits.patching's name of a kind are the same job
    same = circuits.Job(model, ds, kind="patch", patch_kind="head_z_by_pos", unit_rows=4)
    tl = circuits.Job(model, ds, kind="patch_sweep", patch_kind="attn_head_out_by_pos", unit_rows=4)
    assert same.provenance == tl.provenance


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_ablation_sweep_rows_equal_run_ablated(model, tmp_path, ablation):
    from circuits import patching

    ds, clean, _, answer, wrong = _sweep_dataset(n=5)
    kw = {}
    means = None
    if ablation == "mean":
        mj = circuits.Job(model, ds, kind="mean", hooks=["blocks.*.attn.hook_z"], unit_rows=2, dir=str(tmp_path / "m"))
        mj.run()
        kw["means"] = mj.merge(tmp_path / "means.safetensors")
        means = circuits.load_job_output(kw["means"])
    job = circuits.Job(model, ds, kind="ablation_sweep", ablation=ablation, unit_rows=2, dir=str(tmp_path / "j"), **kw)
    job.run()
    res = circuits.load_job_output(job.merge(tmp_path / "out.safetensors"))
    L, H = model.cfg.n_layers, model.cfg.n_heads
    assert res["grid"].shape == (5, L, H)
    for r in range(5):
        metric = patching.LogitDiff(answer[r:r + 1], wrong[r:r + 1])
        assert res["baseline_metric"][r] == np.float32(metric(model(clean[r:r + 1])))
        for layer in range(L):
            for head in range(H):
                hook = f"blocks.{layer}.attn.hook_z"
                a = patching.Ablation(hook, ablation, head=head, values=None if means is None else means[hook])
                got = metric(patching.run_ablated(model, clean[r:r + 1], [a]))
                # to rounding: the sweep computes the logits at the metric's position only,
                # run_ablated at every position, and OpenBLAS's bits for a row depend on its
                # place in the product (lib/run/kernels.c "products")
                assert abs(res["grid"][r, layer, head] - np.float32(got)) <= 1e-5 * max(1.0, abs(got)), (r, layer, head)


def test_feature_stats_job_equals_model_feature_stats(model, tokens, tmp_path):
    sae = circuits.SAE.load_from_disk(SAE_DIR)
    job = circuits.Job(model, tokens, kind="feature_stats", sae=sae, top_k=4, context_left=2, context_right=1,
                       skip_positions=1, unit_rows=UNIT, dir=str(tmp_path / "j"))
    job.run()
    out = job.merge(tmp_path / "stats.safetensors")
    got = circuits.FeatureStats.load(out)
    want = model.feature_stats(sae, tokens, top_k=4, context_left=2, context_right=1, skip_positions=1)
    assert got.n_tokens == want.n_tokens and got.options == want.options
    assert np.array_equal(got.frequency, want.frequency) and np.array_equal(got.max, want.max)
    assert np.allclose(got.mean, want.mean, rtol=1e-6, atol=1e-7)
    for j in range(0, got.d_sae, max(1, got.d_sae // 16)):
        g, w = got.top(j), want.top(j)
        assert np.array_equal(g.values, w.values) and np.array_equal(g.rows, w.rows), j
        assert np.array_equal(g.positions, w.positions) and np.array_equal(g.windows, w.windows), j
    assert circuits.load_job_output(out)["provenance"]["job"]["kind"] == "feature_stats"
    # a path names the same SAE: the same provenance
    assert circuits.Job(model, tokens, kind="feature_stats", sae=str(SAE_DIR), top_k=4, context_left=2,
                        context_right=1, skip_positions=1, unit_rows=UNIT).provenance == job.provenance


def test_export_job_equals_run_with_cache_of_each_row(model, tokens, tmp_path):
    hooks = ["hook_embed", "blocks.1.attn.hook_pattern", "blocks.3.hook_resid_post"]
    rows = tokens[:13]
    job = circuits.Job(model, rows, kind="export", hooks=hooks, unit_rows=4, batch_size=3, dir=str(tmp_path / "j"))
    job.run()
    out = job.merge(tmp_path / "export")
    res = circuits.load_job_output(out)
    assert os.path.isdir(out) and len(res["shards"]) == 4 and res["index"]["n_rows"] == 13
    assert res["provenance"] == job.provenance
    assert np.array_equal(res["tokens"], rows) and np.array_equal(res["rows"], np.arange(13))
    for r in range(13):
        _, cache = model.run_with_cache(rows[r:r + 1], names_filter=lambda n: n in hooks)
        for h in hooks:
            assert np.array_equal(res[h][r], cache[h][0]), (r, h)
