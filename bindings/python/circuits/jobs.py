"""Token datasets and dataset-scale jobs (docs/jobs.md "Python", docs/python.md "Datasets and jobs").

    ds = circuits.Dataset.from_tokens(tokens)          # int [n_rows, pos]; or Dataset.open(path, ...)
    job = circuits.Job(model, ds, kind="mean", hooks=["blocks.0.hook_resid_post"], dir="job.d")
    job.run(progress=True)                              # checkpoints each unit in job.d/units/
    out = circuits.merge("means.safetensors", ["job.d"])
    res = circuits.load_job_output(out)                 # {"blocks.0.hook_resid_post": ..., "provenance": {...}}

Shards: ``Job(..., shard=(i, n)).run()`` in n independent processes (each its own directory or a
shared one), then ``circuits.merge(out, dirs)``: the same bits as one process
(examples/python/job_shards.py drives that from concurrent.futures or Dask).

Memory safety (docs/python.md "Memory safety"):

* A :class:`Dataset` owns its ``circuits_dataset`` through a :class:`_DatasetHandle`. A job holds
  that handle (and the model's handle) for its whole life: ``model.close()`` or ``ds.close()``
  while a job uses them only drops the Python object's reference; the C objects are freed after
  the job is. A dataset's columns are fixed while any job uses it (``set_column`` /
  ``load_column`` then raise InvalidArgumentError: the job reads them without a lock), and
  ``column()`` returns a read-only copy, never a view of the library's memory.
* A :class:`Job` owns its ``circuits_job`` through a :class:`_JobHandle` that also holds the
  model's and dataset's handles and every buffer its options point into; each call holds the
  handle for its C call, so ``job.close()`` (even from a callback) never frees it under a call.
  One C call at a time per job (a lock); a call made from inside the job's own callback is refused.
* Callbacks: the progress callback goes through one module-level C function pointer (alive for
  the process) that finds the job's state by key; ``compute``'s unit callback is a ctypes object
  held by the call's frame. Neither lets an exception reach C: it is stored, the callback stops
  the C call, and the exception is re-raised as itself after the call returns. Unit bytes are
  copied into a Python ``bytes`` before the callback sees them.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import struct
import sys
import threading
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native as N
from ._arrays import _Holder
from .errors import ClosedError, FormatError, InvalidArgumentError, RangeError, ShapeError

lib = N.lib

__all__ = ["Dataset", "Job", "JobStatus", "merge", "load_job_output", "JOB_KINDS"]

PathLike = Union[str, "os.PathLike[str]"]

#: Python names of circuits_job_kind (the provenance's names, and short forms).
JOB_KINDS: Dict[str, int] = {
    "mean": N.CIRCUITS_JOB_MEAN_ACTIVATIONS,
    "mean_activations": N.CIRCUITS_JOB_MEAN_ACTIVATIONS,
    "feature_stats": N.CIRCUITS_JOB_FEATURE_STATS,
    "features": N.CIRCUITS_JOB_FEATURE_STATS,
    "export": N.CIRCUITS_JOB_EXPORT,
    "patch_sweep": N.CIRCUITS_JOB_PATCH_SWEEP,
    "patch": N.CIRCUITS_JOB_PATCH_SWEEP,
    "ablation_sweep": N.CIRCUITS_JOB_ABLATION_SWEEP,
    "ablation": N.CIRCUITS_JOB_ABLATION_SWEEP,
}
_ABLATIONS = {"zero": N.CIRCUITS_ABLATE_ZERO, "mean": N.CIRCUITS_ABLATE_MEAN}

_I32 = np.iinfo(np.int32)


def _require() -> None:
    N.require("circuits_dataset_from_tokens", "circuits.Dataset")


def _int32_array(values: Any, what: str, ndim_1_as: str) -> np.ndarray:
    """values as a C-contiguous int32 [rows, cols] array: integer dtypes only, every value
    checked to fit int32 before the cast (a cast would wrap)."""
    a = np.asarray(values)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None, :] if ndim_1_as == "row" else a[:, None]
    elif a.ndim != 2:
        raise ShapeError(f"{what} must be 2-D [n_rows, width] (or 1-D); got shape {list(a.shape)}")
    if a.size and (int(a.min()) < _I32.min or int(a.max()) > _I32.max):
        raise RangeError(f"{what}: values must fit int32; got [{int(a.min())}, {int(a.max())}]")
    return np.ascontiguousarray(a, dtype=np.int32)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


class _DatasetHandle:
    """Owns a ``circuits_dataset``; freed once nothing (no Dataset, no job) refers to it.
    ``jobs`` counts the live jobs reading it (columns are fixed while it is non-zero); ``lock``
    serialises the calls that read or change columns."""

    __slots__ = ("ptr", "jobs", "lock", "keep", "_free", "__weakref__")

    def __init__(self, ptr: int, keep: Any = None):
        self.ptr: Optional[int] = ptr
        self.jobs = 0
        self.lock = threading.RLock()  # re-entrant: a job's finalizer may run inside a locked call (GC)
        self.keep = keep  # the tokenizer's owner, if the dataset was tokenized from text
        self._free = lib.circuits_dataset_free  # held: module globals may be gone at interpreter exit

    def close(self) -> None:
        p, self.ptr = self.ptr, None
        if p:
            self._free(p)

    def __del__(self) -> None:
        self.close()


class Dataset:
    """A token dataset (``circuits_dataset``): rows of ``pos`` token ids and optional per-row
    int32 columns a job reads ("corrupted" [n_rows, pos]; "answer", "wrong", "position"
    [n_rows, 1]). Make one with :meth:`from_tokens` or :meth:`open`. ``close()`` (or ``with``)
    drops this object's reference: jobs using it keep the library's dataset alive."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError("create a Dataset with Dataset.from_tokens(tokens) or Dataset.open(path)")

    @classmethod
    def _wrap(cls, h: _DatasetHandle, source: str) -> "Dataset":
        self = cls.__new__(cls)
        self._h: Optional[_DatasetHandle] = h
        self.source = source
        return self

    @classmethod
    def from_tokens(cls, tokens: Any) -> "Dataset":
        """A dataset of ``tokens`` (integer [n_rows, pos]; 1-D: one row), copied."""
        _require()
        tok = _int32_array(tokens, "tokens", "row")
        out = ctypes.c_void_p()
        N.check(lib.circuits_dataset_from_tokens(ctypes.byref(out), tok, tok.shape[0], tok.shape[1]),
                "Dataset.from_tokens")
        return cls._wrap(_DatasetHandle(out.value), "tokens")  # type: ignore[arg-type]

    @classmethod
    def open(cls, path: PathLike, tokenizer: Any = None, model: Any = None, seq_len: Optional[int] = None,
             column: Optional[str] = None, tensor: Optional[str] = None, prepend_bos: bool = True,
             max_rows: Optional[int] = None) -> "Dataset":
        """Opens ``path`` by extension (``circuits_dataset_open``): .npy (a 2-D integer array),
        .safetensors (tensor ``tensor``, default "tokens", and the named columns present), .txt /
        .jsonl (text, field ``column`` of each JSON line, tokenized with ``tokenizer`` or
        ``model``'s tokenizer into rows of ``seq_len`` tokens, BOS first unless
        ``prepend_bos=False``). ``max_rows``: at most that many rows."""
        _require()
        o = N.DatasetOptions()
        lib.circuits_dataset_options_init(ctypes.byref(o))
        keep: List[Any] = []  # everything o points into, alive through the call
        if tokenizer is None and model is not None:
            tokenizer = model._tok()
        tok_owner = None
        if tokenizer is not None:
            ptr = getattr(tokenizer, "_ptr", None)
            if not ptr:
                raise TypeError(f"tokenizer must be a circuits.Tokenizer, not {type(tokenizer).__name__}")
            tok_owner = tokenizer._owner
            keep.append(tokenizer)
            o.tokenizer = ptr
        for field, value in (("tensor", tensor), ("column", column)):
            if value is not None:
                b = ctypes.create_string_buffer(N.cstr(value))
                keep.append(b)
                setattr(o, field, ctypes.addressof(b))
        if seq_len is not None:
            o.seq_len = N.check_int(seq_len, ctypes.c_int64, "seq_len")
        o.prepend_bos = int(bool(prepend_bos))
        if max_rows is not None:
            o.max_rows = N.check_int(max_rows, ctypes.c_int64, "max_rows")
        p = os.fspath(path)
        out = ctypes.c_void_p()
        N.check(lib.circuits_dataset_open(ctypes.byref(out), N.cstr(p), ctypes.byref(o)))
        del keep
        return cls._wrap(_DatasetHandle(out.value, tok_owner), p)  # type: ignore[arg-type]

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return getattr(self, "_h", None) is None

    def close(self) -> None:
        """Drops this object's reference (idempotent); jobs using the dataset keep it alive."""
        self._h = None

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _live(self) -> _DatasetHandle:
        h = getattr(self, "_h", None)
        if h is None:
            raise ClosedError("this dataset is closed")
        return h

    # -- columns ----------------------------------------------------------------------------

    def _dims(self, h: _DatasetHandle) -> Tuple[int, int]:
        n, p = ctypes.c_int64(), ctypes.c_int64()
        N.check(lib.circuits_dataset_dims(h.ptr, ctypes.byref(n), ctypes.byref(p)))
        return n.value, p.value

    @property
    def n_rows(self) -> int:
        return self._dims(self._live())[0]

    @property
    def pos(self) -> int:
        return self._dims(self._live())[1]

    @property
    def shape(self) -> Tuple[int, int]:
        """(n_rows, pos): the "tokens" column's shape."""
        return self._dims(self._live())

    def __len__(self) -> int:
        return self.n_rows

    def _changing(self, what: str) -> _DatasetHandle:
        h = self._live()
        if h.jobs:
            raise InvalidArgumentError(f"Dataset.{what}: the dataset is in use by {h.jobs} job(s); its columns are "
                                       "fixed while a job reads them (make a new Dataset)")
        return h

    def set_column(self, name: str, values: Any) -> "Dataset":
        """Adds or replaces column ``name``: integer [n_rows, width] (1-D: [n_rows, 1]), copied.
        "tokens" cannot be replaced. Returns self."""
        v = _int32_array(values, f"column {name!r}", "column")
        cname = N.cstr(name)
        h = self._live()
        with h.lock:
            self._changing("set_column")
            N.check(lib.circuits_dataset_set_column(h.ptr, cname, v, v.shape[0], v.shape[1]))
        return self

    def load_column(self, name: str, path: PathLike, tensor: Optional[str] = None) -> "Dataset":
        """Reads column ``name`` from a .npy file or a .safetensors file (its tensor ``tensor``,
        default ``name``). Returns self."""
        cname, cpath = N.cstr(name), N.cstr(os.fspath(path))
        ct = None if tensor is None else N.cstr(tensor)
        h = self._live()
        with h.lock:
            self._changing("load_column")
            N.check(lib.circuits_dataset_load_column(h.ptr, cname, cpath, ct))
        return self

    def column(self, name: str = "tokens") -> np.ndarray:
        """Column ``name`` as a read-only int32 [n_rows, width] copy."""
        cname = N.cstr(name)
        h = self._live()
        with h.lock:
            n, _ = self._dims(h)
            addr, width = ctypes.c_void_p(), ctypes.c_int64()
            N.check(lib.circuits_dataset_column(h.ptr, cname, ctypes.byref(addr), ctypes.byref(width)))
            if n * width.value == 0 or not addr.value:
                a = np.zeros((n, width.value), np.int32)
            else:
                a = np.array(np.asarray(_Holder(addr.value, (n, width.value), True, h, "<i4")), copy=True)
        a.flags.writeable = False
        return a

    @property
    def tokens(self) -> np.ndarray:
        """The "tokens" column (a read-only copy)."""
        return self.column("tokens")

    def digest(self) -> str:
        """SHA-256 of the dataset's contents (every column, names and shapes included): 64 hex digits."""
        h = self._live()
        buf = ctypes.create_string_buffer(65)
        with h.lock:
            N.check(lib.circuits_dataset_digest(h.ptr, buf))
        return buf.value.decode("ascii")

    def __repr__(self) -> str:
        if self.closed:
            return "<circuits.Dataset closed>"
        n, p = self.shape
        return f"<circuits.Dataset {n} rows x {p} positions from {self.source}>"


def _as_dataset(ds: Any) -> Dataset:
    if isinstance(ds, Dataset):
        return ds
    if isinstance(ds, np.ndarray) or isinstance(ds, (list, tuple)):
        return Dataset.from_tokens(ds)
    raise TypeError(f"dataset must be a circuits.Dataset or an integer array of tokens, not {type(ds).__name__}")


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------


class JobStatus(NamedTuple):
    """Units in the whole job, checkpointed in its directory, and this process's share."""

    n_units: int
    n_done: int
    n_mine: int


class _JobState:
    """What the progress trampoline reaches through the job's key (no reference to the job)."""

    __slots__ = ("fn", "pending", "lock", "__weakref__")

    def __init__(self) -> None:
        self.fn: Optional[Callable[[int, int], Any]] = None
        self.pending: Optional[BaseException] = None
        self.lock = threading.Lock()  # one progress call at a time, should the pool's threads report


_STATES: "weakref.WeakValueDictionary[int, _JobState]" = weakref.WeakValueDictionary()
_KEYS = itertools.count(1)
_TLS = threading.local()  # .keys: the jobs whose callback this thread is inside


@contextmanager
def _in_callback(key: int) -> Iterator[None]:
    keys = getattr(_TLS, "keys", None)
    if keys is None:
        keys = _TLS.keys = []
    keys.append(key)
    try:
        yield
    finally:
        keys.pop()


def _progress_entry(done: int, total: int, key: Optional[int]) -> int:
    """The C progress callback of every Python job: calls the running call's progress function.
    Never lets an exception into C: it is stored for the caller and the job is stopped."""
    st = _STATES.get(key) if key else None
    if st is None:
        return 0
    with st.lock:
        fn = st.fn
        if st.pending is not None or fn is None:  # stopping already: the first exception wins
            return 1 if st.pending is not None else 0
        try:
            with _in_callback(key):
                r = fn(int(done), int(total))
            return 1 if (r is not None and r is not False and r != 0) else 0
        except BaseException as e:  # noqa: BLE001 -- must reach the caller, not C
            st.pending = e
            return 1


#: The one C function pointer for every job's progress (module-level: alive while C can call it).
_PROGRESS = N.JOB_PROGRESS_FN(_progress_entry)


class _JobHandle:
    """Owns a ``circuits_job`` and everything it points to: the model's and dataset's handles
    (freed after the job), the option buffers. Frees the job exactly once."""

    __slots__ = ("ptr", "model", "dataset", "keep", "_free", "__weakref__")

    def __init__(self, ptr: int, model: Any, dataset: _DatasetHandle, keep: List[Any]):
        self.ptr: Optional[int] = ptr
        self.model = model
        self.dataset = dataset
        self.keep = keep
        self._free = lib.circuits_job_free

    def close(self) -> None:
        p, self.ptr = self.ptr, None
        if p:
            self._free(p)
            ds = self.dataset
            if ds is not None:
                with ds.lock:
                    ds.jobs -= 1
        self.model = self.dataset = None  # after the job: it pointed into them
        self.keep = None

    def __del__(self) -> None:
        self.close()


class _TextBar:
    """progress=True: a plain text bar on stderr (no tqdm needed)."""

    def __init__(self, width: int = 30, stream: Any = None):
        self.width = width
        self.stream = stream if stream is not None else sys.stderr

    def __call__(self, done: int, total: int) -> None:
        filled = self.width * done // total if total > 0 else self.width
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} units")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _enum(value: Any, names: Dict[str, int], what: str) -> int:
    if isinstance(value, str):
        try:
            return names[value]
        except KeyError:
            raise ValueError(f"{what} must be one of {sorted(names)}, not {value!r}") from None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return N.check_int(int(value), ctypes.c_int32, what)
    raise TypeError(f"{what} must be a name (one of {sorted(names)}) or an int, not {type(value).__name__}")


def _patch_kinds() -> Dict[str, int]:
    """The provenance's names ("resid_pre", "head_z_by_pos": CIRCUITS_PATCH_* in lower case)
    and circuits.patching's get_act_patch_<name> names ("attn_head_out_by_pos")."""
    from .attribution import KINDS

    names = {k[len("CIRCUITS_PATCH_"):].lower(): v for k, v in vars(N).items() if k.startswith("CIRCUITS_PATCH_")}
    names.update((name, kind) for name, (kind, _) in KINDS.items())
    return names


def _metric_kinds() -> Dict[str, int]:
    from ._metric import KINDS

    return dict(KINDS)


class Job:
    """A dataset-scale job (``circuits_job``): ``kind`` over every row of ``dataset`` with
    ``model``, in units of ``unit_rows`` rows, checkpointed per unit in ``dir``.

    kind: "mean" (mean activations of ``hooks``), "feature_stats" (an SAE's, ``sae``: a path or
    a circuits.SAE; ``top_k``, ``context_left``, ``context_right``, ``threshold``,
    ``skip_positions``), "export" (``hooks``' activations), "patch_sweep" (``patch_kind``, a
    circuits.patching kind name such as "resid_pre", of each row into its "corrupted" row, with
    ``metric``), "ablation_sweep" (``ablation`` "zero" or "mean" with ``means``, a mean job's
    output file). ``seed`` is recorded. How it runs (never changes a bit): ``batch_size``,
    ``shard=(i, n)`` (this process computes the units u with u % n == i).

    The job holds the model's and dataset's library objects until it is closed and collected;
    a ``dir`` holding another job's units raises circuits.ProvenanceError."""

    def __init__(self, model: Any, dataset: Any, kind: Union[str, int] = "mean", hooks: Any = None, *,
                 dir: Optional[PathLike] = None, unit_rows: Optional[int] = None, batch_size: Optional[int] = None,
                 shard: Tuple[int, int] = (0, 1), seed: int = 0, patch_kind: Union[str, int, None] = None,
                 metric: Union[str, int, None] = None, ablation: Union[str, int, None] = None,
                 means: Optional[PathLike] = None, sae: Any = None, top_k: Optional[int] = None,
                 context_left: Optional[int] = None, context_right: Optional[int] = None,
                 threshold: Optional[float] = None, skip_positions: Optional[int] = None):
        N.require("circuits_job_create", "circuits.Job")
        live = getattr(model, "_live", None)
        if live is None or not hasattr(model, "_dims"):
            raise TypeError(f"model must be a circuits.Model, not {type(model).__name__}")
        ds = _as_dataset(dataset)
        o = N.JobOptions()
        lib.circuits_job_options_init(ctypes.byref(o))
        keep: List[Any] = []  # every buffer o points into: alive as long as the job
        o.kind = _enum(kind, JOB_KINDS, "kind")
        if hooks is not None:
            names = [hooks] if isinstance(hooks, str) else list(hooks)
            bufs = [N.cstr(h) for h in names]
            arr = (ctypes.c_char_p * max(len(bufs), 1))(*bufs)
            keep += [bufs, arr]
            o.hooks = ctypes.cast(arr, ctypes.c_void_p).value
            o.n_hooks = len(bufs)
        if unit_rows is not None:
            o.unit_rows = N.check_int(unit_rows, ctypes.c_int64, "unit_rows")
        if batch_size is not None:
            o.batch_size = N.check_int(batch_size, ctypes.c_int64, "batch_size")
        o.seed = N.check_int(seed, ctypes.c_uint64, "seed")
        if patch_kind is not None:
            o.patch_kind = _enum(patch_kind, _patch_kinds(), "patch_kind")
        if metric is not None:
            o.metric_kind = _enum(metric, _metric_kinds(), "metric")
        if means is not None and ablation is None:
            ablation = "mean"
        if ablation is not None:
            o.ablation_kind = _enum(ablation, _ABLATIONS, "ablation")
        for field, value in (("ablation_means", means), ("sae_path", getattr(sae, "path", sae))):
            if value is not None:
                b = ctypes.create_string_buffer(N.cstr(os.fspath(value)))
                keep.append(b)
                setattr(o, field, ctypes.addressof(b))
        fs = {k: v for k, v in (("top_k", top_k), ("context_left", context_left), ("context_right", context_right),
                                ("threshold", threshold), ("skip_positions", skip_positions)) if v is not None}
        if fs:
            f = N.FeatureStatsOptions()
            lib.circuits_feature_stats_options_init(ctypes.byref(f))
            for k, v in fs.items():
                setattr(f, k, float(v) if k == "threshold" else N.check_int(v, ctypes.c_int32, k))
            keep.append(f)
            o.feature_stats = ctypes.addressof(f)
        if not (isinstance(shard, tuple) and len(shard) == 2):
            raise TypeError(f"shard must be a tuple (index, count), not {shard!r}")
        si, sn = (N.check_int(v, ctypes.c_int32, "shard") for v in shard)
        if sn < 1 or not 0 <= si < sn:
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
        o.shard_index, o.shard_count = si, sn
        state = _JobState()
        key = next(_KEYS)
        _STATES[key] = state
        o.progress = ctypes.cast(_PROGRESS, ctypes.c_void_p).value
        o.progress_data = key
        cdir = None if dir is None else N.cstr(os.fspath(dir))
        mh = live()  # the model's handle: the job keeps the C model alive
        dh = ds._live()
        out = ctypes.c_void_p()
        with dh.lock:  # columns cannot change between create and the count below
            rc = lib.circuits_job_create(ctypes.byref(out), mh, dh.ptr, ctypes.byref(o), cdir)
            N.check(rc, "Job")
            dh.jobs += 1
        self._h: Optional[_JobHandle] = _JobHandle(out.value, mh, dh, keep)  # type: ignore[arg-type]
        self._state = state
        self._key = key
        self._lock = threading.RLock()
        self._busy = False
        self.dir = None if dir is None else os.fspath(dir)
        self.kind = kind
        self.shard = (si, sn)

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return getattr(self, "_h", None) is None

    def close(self) -> None:
        """Drops this object's reference to the library's job (idempotent): it is freed, and
        then the model and dataset are released, once no call is using it."""
        self._h = None

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _live(self) -> _JobHandle:
        h = getattr(self, "_h", None)
        if h is None:
            raise ClosedError("this job is closed")
        return h

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """The job's lock for one C call. A call from inside one of this job's callbacks is
        refused (the job is mid-call: on the calling thread the lock would let it re-enter, on
        a pool thread it would wait for the call it is part of)."""
        if self._key in (getattr(_TLS, "keys", None) or ()):
            raise InvalidArgumentError(f"Job.{what}: called from inside a callback of the same job")
        with self._lock:
            if self._busy:
                raise InvalidArgumentError(f"Job.{what}: called from inside a callback of the same job")
            yield

    def _call(self, what: str, fn: Callable[..., int], *args: Any, progress: Any = None) -> _JobHandle:
        """One C call on the job: under the job's lock, never from inside the job's own callback,
        holding the handle for the call; a callback's exception is re-raised as itself. Returns
        the handle used (alive, even if the job was closed meanwhile)."""
        with self._guard(what):
            h = self._live()
            st = self._state
            st.pending, st.fn = None, progress
            self._busy = True
            try:
                rc = fn(h.ptr, *args)
            finally:
                self._busy = False
                st.fn = None
            exc, st.pending = st.pending, None
            if exc is not None:
                try:
                    raise exc
                finally:
                    exc = None
            N.check(rc, f"Job.{what}")
            return h

    # -- reading ----------------------------------------------------------------------------

    @property
    def provenance_json(self) -> str:
        """The provenance as the library's canonical JSON text."""
        with self._guard("provenance"):
            h = self._live()
            s = lib.circuits_job_provenance(h.ptr)  # c_char_p: copied into bytes here
        return s.decode("utf-8") if s else ""

    @property
    def provenance(self) -> Dict[str, Any]:
        """The provenance (model files' SHA-256, library and hook-semantics versions, dataset
        digest, recorded options) as a dict."""
        return json.loads(self.provenance_json)

    def status(self) -> JobStatus:
        with self._guard("status"):
            return self._status(self._live())

    @staticmethod
    def _status(h: _JobHandle) -> JobStatus:
        n, d, m = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_int64()
        N.check(lib.circuits_job_status(h.ptr, ctypes.byref(n), ctypes.byref(d), ctypes.byref(m)), "Job.status")
        return JobStatus(n.value, d.value, m.value)

    def unit_done(self, unit: int) -> bool:
        u = N.check_int(unit, ctypes.c_int64, "unit")
        v = ctypes.c_int32()
        with self._guard("unit_done"):
            h = self._live()
            N.check(lib.circuits_job_unit_done(h.ptr, u, ctypes.byref(v)), "Job.unit_done")
        return bool(v.value)

    # -- running ----------------------------------------------------------------------------

    def run(self, progress: Union[None, bool, Callable[[int, int], Any]] = None) -> JobStatus:
        """Computes this process's share of the units not yet checkpointed (``circuits_job_run``).
        ``progress``: True for a text bar on stderr, or ``fn(done, total)`` called as units
        finish; raising (e.g. circuits.HookStopped) or returning a true value stops the job
        (finished units stay checkpointed; the raised exception, or HookStopped, reaches the
        caller). Returns the job's :meth:`status` after the run."""
        fn = _TextBar() if progress is True else (progress or None)
        if fn is not None and not callable(fn):
            raise TypeError(f"progress must be True, None or a callable fn(done, total), not {type(fn).__name__}")
        h = self._call("run", lib.circuits_job_run, progress=fn)
        with self._guard("run"):
            return self._status(h)  # h: the job's status even if a callback closed the Job

    def compute(self, units: Any, on_unit: Optional[Callable[[int, bytes], Any]] = None) -> List[Tuple[int, bytes]]:
        """Computes ``units`` without storing them (``circuits_job_compute``): each unit's
        result as the bytes of its checkpoint file, for a distributed driver to send and
        :meth:`store` elsewhere. With ``on_unit(unit, data)``, each is passed there as it
        finishes (in the order of ``units``) and the list is empty; an exception it raises
        stops the computation and is re-raised."""
        u = np.asarray(units)
        if u.ndim == 0:
            u = u[None]
        if u.size == 0:
            u = u.astype(np.int64)
        if u.dtype.kind not in "iu" or u.ndim != 1:
            raise TypeError(f"units must be a 1-D integer array or list, got dtype {u.dtype} shape {list(u.shape)}")
        if u.size and (u.dtype.kind == "u" and int(u.max()) > np.iinfo(np.int64).max):
            raise RangeError(f"units: {int(u.max())} does not fit int64")
        u = np.ascontiguousarray(u, dtype=np.int64)
        got: List[Tuple[int, bytes]] = []
        state, key = self._state, self._key

        def entry(unit: int, data: Optional[int], n: int, user: Any) -> int:
            try:
                b = ctypes.string_at(data, n) if n else b""  # copied before the callback returns
                if on_unit is None:
                    got.append((int(unit), b))
                else:
                    with _in_callback(key):
                        on_unit(int(unit), b)
                return 0
            except BaseException as e:  # noqa: BLE001 -- must reach the caller, not C
                state.pending = e
                return -1

        cb = N.JOB_UNIT_FN(entry)  # held by this frame through the call
        self._call("compute", lib.circuits_job_compute, u, u.size, cb, None)
        del cb
        return got

    def store(self, unit: int, data: Any) -> None:
        """Checkpoints unit ``unit`` computed elsewhere (bytes from :meth:`compute`), validated
        as hostile input: another job's bytes raise circuits.ProvenanceError."""
        uu = N.check_int(unit, ctypes.c_int64, "unit")
        try:
            b = memoryview(data).tobytes()
        except TypeError:
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}") from None
        buf = ctypes.create_string_buffer(b, max(len(b), 1))  # a copy of ours, alive through the call
        self._call("store", lib.circuits_job_store, uu, buf, len(b))

    def merge(self, out: PathLike) -> str:
        """:func:`merge` of this job's directory (a single-process job's finish)."""
        if self.dir is None:
            raise InvalidArgumentError("Job.merge: the job has no directory")
        return merge(out, [self.dir])

    def __repr__(self) -> str:
        if self.closed:
            return "<circuits.Job closed>"
        s = self.status()
        return (f"<circuits.Job {self.kind!r}: {s.n_done}/{s.n_units} units done, shard {self.shard[0]}/"
                f"{self.shard[1]}, dir {self.dir!r}>")


def merge(out: PathLike, dirs: Union[PathLike, Sequence[PathLike]]) -> str:
    """Reduces every unit of the job directories ``dirs`` in unit order (``circuits_job_merge``)
    into ``out`` (a safetensors file; an export job: a directory). Their provenances must agree
    (else circuits.ProvenanceError) and together hold every unit (else circuits.NotFoundError
    naming the first missing one). Returns ``out``."""
    N.require("circuits_job_merge", "circuits.merge")
    if isinstance(dirs, (str, bytes, os.PathLike)):
        dirs = [dirs]  # type: ignore[list-item]
    bufs = [N.cstr(os.fspath(d)) for d in dirs]  # type: ignore[arg-type]
    arr = (ctypes.c_char_p * max(len(bufs), 1))(*bufs)
    o = os.fspath(out)
    N.check(lib.circuits_job_merge(arr, len(bufs), N.cstr(o)), "merge")
    return o


# --------------------------------------------------------------------------------------------
# Reading outputs
# --------------------------------------------------------------------------------------------

_ST_DTYPES = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8", "F16": "<f2", "U8": "u1", "I8": "i1",
              "U32": "<u4", "U64": "<u8", "I16": "<i2", "U16": "<u2", "BOOL": "?"}


def _read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """A safetensors file's tensors (NumPy copies) and metadata, checked as untrusted input."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise FormatError(f"{path}: not a safetensors file (too short)")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise FormatError(f"{path}: header length {hlen} exceeds the file")
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    if not isinstance(header, dict):
        raise FormatError(f"{path}: the header is not a JSON object")
    body = memoryview(data)[8 + hlen:]
    meta = header.pop("__metadata__", None) or {}
    out: Dict[str, np.ndarray] = {}
    for name, t in header.items():
        dt = np.dtype(_ST_DTYPES[t["dtype"]])
        shape = tuple(int(s) for s in t["shape"])
        a, b = (int(x) for x in t["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not 0 <= a <= b <= len(body) or b - a != count * dt.itemsize:
            raise FormatError(f"{path}: tensor {name!r}: data_offsets {[a, b]} do not fit shape {list(shape)}")
        out[name] = np.frombuffer(body[a:b], dtype=dt).reshape(shape).copy()
    return out, {str(k): str(v) for k, v in meta.items()}


def load_job_output(path: PathLike) -> Dict[str, Any]:
    """A merged job output: the tensors of the safetensors file ``path`` by name (NumPy
    arrays) and ``"provenance"``, the parsed provenance it records (metadata "circuits_job").
    An export job's output directory: each tensor of its shards concatenated in row order (every
    hook's activations, ``"tokens"``, ``"rows"``: the whole export in memory), ``"index"`` (its
    index.json), ``"shards"`` (the shard files' paths, in order) and ``"provenance"``."""
    p = os.fspath(path)
    if os.path.isdir(p):
        with open(os.path.join(p, "index.json"), encoding="utf-8") as f:
            index = json.load(f)
        if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
            raise FormatError(f"{p}/index.json: not an export index (no \"shards\" list)")
        shards = [os.path.join(p, str(s["file"])) for s in index["shards"]]
        parts: Dict[str, List[np.ndarray]] = {}
        for f in shards:  # in row order: the index lists the shards so
            for name, a in _read_safetensors(f)[0].items():
                parts.setdefault(name, []).append(a)
        res = {name: np.concatenate(a) for name, a in parts.items()}
        prov = index.get("circuits_job")
        res.update(index=index, shards=shards, provenance=json.loads(prov) if isinstance(prov, str) else prov)
        return res
    tensors, meta = _read_safetensors(p)
    res: Dict[str, Any] = dict(tensors)
    prov = meta.get("circuits_job")
    res["provenance"] = json.loads(prov) if prov else None
    return res
