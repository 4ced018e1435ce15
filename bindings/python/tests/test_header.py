"""The binding against include/circuits.h, parsed here: every CIRCUITS_API function is bound
(with argtypes/restype matching its C declaration) or deliberately listed as skipped; every
enum value and #define matches; every struct has the header's fields, types and (compiled with
the system C compiler, when there is one) offsets and size."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from ctypes import POINTER, c_char_p, c_double, c_float, c_int, c_int32, c_int64, c_size_t, c_uint, c_uint32, c_uint64, c_void_p

import pytest

from conftest import HEADER, REPO

import circuits
from circuits import _native as N


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


SRC = _strip_comments(HEADER.read_text())
# join line continuations, then split preprocessor lines from declarations
_JOINED = SRC.replace("\\\n", " ")
DEFINES = {}
for line in _JOINED.splitlines():
    m = re.match(r"\s*#\s*define\s+(CIRCUITS_\w+)\s+(.+?)\s*$", line)
    if m:
        DEFINES[m.group(1)] = m.group(2)
DECLS = "\n".join(l for l in _JOINED.splitlines() if not l.lstrip().startswith("#"))


def _eval_define(expr: str):
    expr = expr.strip()
    if expr.startswith('"'):
        return expr.strip('"')
    expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", expr)
    names = {k: _eval_define(v) for k, v in DEFINES.items() if k in expr and k != "CIRCUITS_API"}
    if not re.fullmatch(r"[\w\s()*+\-/]+", expr):
        raise ValueError(expr)
    return eval(expr, {"__builtins__": {}}, names)  # noqa: S307 -- a constant expression from our header


def header_functions():
    """{name: (return type, [param types])} for every CIRCUITS_API declaration."""
    out = {}
    for m in re.finditer(r"CIRCUITS_API\s+([^;(]*?)\b(circuits_\w+)\s*\(([^;]*?)\)\s*;", DECLS, re.S):
        ret = " ".join(m.group(1).split())
        params = " ".join(m.group(3).split())
        types = []
        if params != "void":
            for p in params.split(","):
                p = p.strip()
                pm = re.match(r"(.*?)\b(\w+)$", p)
                assert pm, p
                types.append(_norm(pm.group(1)))
        out[m.group(2)] = (_norm(ret), types)
    return out


def _norm(t: str) -> str:
    return " ".join(t.replace("*", " * ").split())


def header_enums():
    vals = {}
    for m in re.finditer(r"typedef\s+enum\s+\w*\s*\{(.*?)\}\s*\w+\s*;", DECLS, re.S):
        nxt = 0
        for entry in m.group(1).split(","):
            entry = entry.strip()
            if not entry:
                continue
            em = re.match(r"(\w+)\s*(?:=\s*(.+))?$", entry)
            name, val = em.group(1), em.group(2)
            v = int(eval(val, {"__builtins__": {}}, {})) if val is not None else nxt  # noqa: S307
            vals[name] = v
            nxt = v + 1
    return vals


def header_structs():
    """{struct name: [(field type, field name, array length or None)]}."""
    out = {}
    for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*\w+\s*;", DECLS, re.S):
        fields = []
        for decl in m.group(2).split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            fm = re.match(r"(.*?)\b(\w+)\s*(?:\[(\w+)\])?$", decl)
            n = fm.group(3)
            fields.append((_norm(fm.group(1)), fm.group(2), None if n is None else int(_eval_define(DEFINES.get(n, n)))))
        out[m.group(1)] = fields
    return out


HF = header_functions()

F32P, I32P, I64P = N.F32P, N.I32P, N.I64P
OPAQUE = ("circuits_model", "circuits_diff", "circuits_context", "circuits_cache", "circuits_factored", "circuits_tokenizer",
          "circuits_kv_cache", "circuits_run_memory", "circuits_sae", "circuits_feature_stats", "circuits_probe",
          "circuits_dataset", "circuits_job")
STRUCT_CLASSES = {
    "circuits_tensor": N.Tensor,
    "circuits_config": N.ConfigStruct,
    "circuits_load_options": N.LoadOptions,
    "circuits_context_options": N.ContextOptions,
    "circuits_detect_options": N.DetectOptions,
    "circuits_encode_options": N.EncodeOptions,
    "circuits_run_options": N.RunOptions,
    "circuits_generate_options": N.GenerateOptions,
    "circuits_metric": N.Metric,
    "circuits_ablation": N.Ablation,
    "circuits_patch_options": N.PatchOptions,
    "circuits_resid_options": N.ResidOptions,
    "circuits_path_head": N.PathHead,
    "circuits_path_patch_options": N.PathPatchOptions,
    "circuits_diff_options": N.DiffOptions,
    "circuits_diff_entry": N.DiffEntry,
    "circuits_backward_options": N.BackwardOptions,
    "circuits_eap_options": N.EapOptions,
    "circuits_sae_info": N.SaeInfo,
    "circuits_feature_stats_options": N.FeatureStatsOptions,
    "circuits_steering_options": N.SteeringOptions,
    "circuits_contrast_options": N.ContrastOptions,
    "circuits_probe_options": N.ProbeOptions,
    "circuits_probe_info": N.ProbeInfo,
    "circuits_probe_score": N.ProbeScore,
    "circuits_dataset_options": N.DatasetOptions,
    "circuits_vis_options": N.VisOptions,
    "circuits_job_options": N.JobOptions,
}
SCALARS = {
    "int": c_int,
    "unsigned": c_uint,
    "size_t": c_size_t,
    "int32_t": c_int32,
    "int64_t": c_int64,
    "uint32_t": c_uint32,
    "uint64_t": c_uint64,
    "float": c_float,
    "circuits_hook_id": c_int64,
    "circuits_hook_fn": N.HOOK_FN,
    "circuits_probe_fn": N.PROBE_FN,
    "circuits_job_unit_fn": N.JOB_UNIT_FN,
    "circuits_job_progress_fn": N.JOB_PROGRESS_FN,
}


def allowed(ctype: str):
    """The ctypes types that may declare a parameter/return of C type ``ctype``."""
    t = ctype.replace("const ", "").strip()
    if t == "void":
        return {None}
    if t in SCALARS:
        return {SCALARS[t], N.CHECKED_INTS.get(SCALARS[t], SCALARS[t])}
    base = t.rstrip("* ").strip()
    stars = t.count("*")
    if stars == 1 and base in OPAQUE:
        return {c_void_p}
    if stars == 2 and base in OPAQUE:
        return {POINTER(c_void_p)}
    if stars == 1 and base in STRUCT_CLASSES:
        return {POINTER(STRUCT_CLASSES[base])}
    if stars == 1 and base == "char":  # (a char * the library allocated goes back as an address)
        return {c_char_p} if "const" in ctype else {c_char_p, c_void_p}
    if stars == 2 and base == "char" and "const" not in ctype:  # char **: a string the library allocates
        return {POINTER(c_void_p)}
    if stars == 2 and base == "char":  # const char *const *
        return {POINTER(c_char_p)}
    if stars == 1 and base == "float":
        return {F32P}
    if stars == 2 and base == "float":  # (const) float *const *: arrays of addresses
        return {POINTER(c_void_p)}
    if stars == 2 and base == "int32_t":  # const int32_t **: an address written back
        return {POINTER(c_void_p)}
    if stars == 1 and base == "int32_t":
        return {I32P, POINTER(c_int32)}
    if stars == 1 and base == "int64_t":
        return {I64P, POINTER(c_int64)}
    if stars == 1 and base == "size_t":
        return {POINTER(c_size_t)}
    if stars == 1 and base == "circuits_hook_id":
        return {POINTER(c_int64)}
    if stars == 1 and base == "void":
        return {c_void_p}
    raise AssertionError(f"no ctypes mapping for C type {ctype!r}: extend the test")


def test_header_parses():
    assert len(HF) >= 70, sorted(HF)
    assert "circuits_context_forward" in HF
    assert HF["circuits_context_forward"] == (
        "int",
        ["circuits_context *", "const int32_t *", "int64_t", "int64_t", "float *", "float *", "float *"],
    )


def test_every_function_bound_or_skipped():
    bound, skipped = set(N.FUNCTIONS), set(N.SKIPPED)
    assert not bound & skipped, bound & skipped
    missing = set(HF) - bound - skipped
    assert not missing, f"public C functions neither bound nor listed in SKIPPED: {sorted(missing)}"
    extra = (bound | skipped) - set(HF)
    assert not extra, f"bound/skipped names that are not in the header: {sorted(extra)}"
    for name in skipped:
        assert N.SKIPPED[name].strip(), f"{name} is skipped without a reason"


@pytest.mark.parametrize("name", sorted(HF))
def test_function_types_match_header(name):
    if name in N.SKIPPED:
        pytest.skip(N.SKIPPED[name])
    ret, params = HF[name]
    restype, argtypes = N.FUNCTIONS[name]
    assert restype in allowed(ret), f"{name}: restype {restype} for C return type {ret!r}"
    assert len(argtypes) == len(params), f"{name}: {len(argtypes)} argtypes, header has {len(params)} parameters"
    for i, (a, p) in enumerate(zip(argtypes, params)):
        assert a in allowed(p), f"{name}: parameter {i} is {p!r} in C, declared {a}"
    if name in N.MISSING:
        assert name in N.OPTIONAL
        pytest.skip(f"{name} is optional and this library does not export it")
    fn = getattr(N.lib, name)
    assert fn.restype is restype and list(fn.argtypes) == list(argtypes), f"{name}: not declared from the table"


def test_hook_fn_type():
    cb = N.HOOK_FN
    assert cb._restype_ is c_int
    assert list(cb._argtypes_) == [POINTER(N.Tensor), c_void_p]


def test_enums_match_header():
    enums = header_enums()
    assert len(enums) >= 25
    for name, v in enums.items():
        assert hasattr(N, name), f"{name} missing from circuits._native"
        assert getattr(N, name) == v, f"{name}: binding {getattr(N, name)}, header {v}"


def test_defines_match_header():
    skip = {"CIRCUITS_API", "CIRCUITS_H"}
    checked = 0
    for name, expr in DEFINES.items():
        if name in skip or "__declspec" in expr or "visibility" in expr:
            continue
        v = _eval_define(expr)
        assert hasattr(N, name), f"#define {name} missing from circuits._native"
        assert getattr(N, name) == v, f"{name}: binding {getattr(N, name)!r}, header {v!r}"
        checked += 1
    assert checked >= 30


def test_status_classes_cover_every_status():
    for name, v in header_enums().items():
        if name.startswith("CIRCUITS_E_"):
            cls = circuits.errors.error_class(v)
            assert cls is not circuits.CircuitsError, name
            assert cls.status == v and cls.status_name == name
            assert issubclass(cls, circuits.CircuitsError)
    assert circuits.errors.error_class(-14) is circuits.HookStopped


_CT = {"uint32_t": c_uint32, "int32_t": c_int32, "int64_t": c_int64, "uint64_t": c_uint64, "float": c_float,
       "double": c_double, "size_t": c_size_t,
       "circuits_generate_fn": c_void_p, "circuits_metric_fn": c_void_p,
       "circuits_metric_grad_fn": c_void_p, "circuits_job_progress_fn": c_void_p}  # function pointers as addresses


def test_every_struct_declared_or_skipped():
    hs = set(header_structs())
    missing = hs - set(STRUCT_CLASSES) - set(N.SKIPPED_STRUCTS)
    assert not missing, f"header structs with no ctypes declaration: {sorted(missing)}"


@pytest.mark.parametrize("struct", sorted(STRUCT_CLASSES))
def test_struct_fields_match_header(struct):
    fields = header_structs()[struct]
    cls = STRUCT_CLASSES[struct]
    assert [f[1] for f in fields] == [f[0] for f in cls._fields_], struct
    for (ctype, name, n), (pname, ptype) in zip(fields, cls._fields_):
        if "*" in ctype:
            want = c_void_p
        else:
            want = _CT[ctype.replace("const ", "")]
        if n is not None:
            want = want * n
            assert ptype._type_ is want._type_ and ptype._length_ == n, (struct, name)
        else:
            assert ptype is want, (struct, name, ptype, want)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_struct_layout_matches_compiled_header(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    structs = header_structs()
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <circuits.h>", "int main(void) {"]
    for s, fields in structs.items():
        if s not in STRUCT_CLASSES:
            continue
        lines.append(f'printf("{s} sizeof %zu\\n", sizeof({s}));')
        for _, f, _ in fields:
            lines.append(f'printf("{s} {f} %zu\\n", offsetof({s}, {f}));')
    lines.append("return 0; }")
    c = tmp_path / "layout.c"
    c.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", str(REPO / "include"), str(c), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = {}
    for line in out.splitlines():
        s, f, v = line.split()
        got[(s, f)] = int(v)
    for s, cls in STRUCT_CLASSES.items():
        assert ctypes.sizeof(cls) == got[(s, "sizeof")], s
        for fname, _ in cls._fields_:
            assert getattr(cls, fname).offset == got[(s, fname)], (s, fname)


def test_abi_version():
    assert N.lib.circuits_abi_version() == N.CIRCUITS_ABI_VERSION == circuits.ABI_VERSION == 0


def test_optional_functions_may_be_missing(monkeypatch):
    """A libcircuits.so.0 built before the tokenizer was added still loads: the optional
    functions are recorded as missing; a missing required function is refused."""

    class Fn:
        pass

    class FakeLib:
        def __init__(self, names):
            for n in names:
                setattr(self, n, Fn())

    monkeypatch.setattr(N, "MISSING", set())
    required = [n for n in N.FUNCTIONS if n not in N.OPTIONAL]
    N._declare(FakeLib(required))
    assert N.MISSING == set(N.OPTIONAL) and N.OPTIONAL
    assert not N.has("circuits_tokenizer_encode") and N.has("circuits_context_forward")
    with pytest.raises(AttributeError):
        N._declare(FakeLib(required[1:]))
