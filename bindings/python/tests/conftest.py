"""Shared fixtures: the repository layout, the reference cases, and small models.

The package under test is the one in bindings/python (put first on sys.path); the shared
library is whatever it finds (run_tests.sh sets CIRCUITS_LIBRARY to the chosen build)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BINDING = HERE.parent
REPO = BINDING.parent.parent
sys.path.insert(0, str(BINDING))
sys.path.insert(0, str(HERE))

import safetensors_np  # noqa: E402

CASES_DIR = REPO / "tests" / "reference" / "cases"
HEADER = REPO / "include" / "circuits.h"
TINY_GPT2 = REPO / "examples" / "models" / "tiny-random-gpt2"

CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "case.json").is_file())
# Cases without processed.safetensors: TransformerLens 3.9's from_pretrained processing computes
# another function for them (tests/reference/generate_circuits.py TL_MISPROCESSES); their own
# test is test_circuits_reference.py::test_processing_without_tl_reference
NO_PROCESSED_REFERENCE = ("tl_final_rms_ln", "tl_gated_geglu_ln")
PROCESSED_CASES = [c for c in CASES if c not in NO_PROCESSED_REFERENCE]

# Tolerances: TransformerLens's own (as tests/test_reference.c and tests/test_circuits.c).
TOL_LOGITS = 5e-5
TOL_HOOK = 1e-4
TOL_LOSS = 4e-5
TOL_WEIGHT = 2e-5
TOL_SCORE = 1e-5


class Case:
    def __init__(self, name: str):
        self.name = name
        self.dir = CASES_DIR / name
        self.json = json.loads((self.dir / "case.json").read_text())
        self._expected = None
        self._processed = None

    @property
    def expected(self):
        if self._expected is None:
            self._expected = safetensors_np.load(str(self.dir / "expected.safetensors"))
        return self._expected

    @property
    def processed(self):
        if self._processed is None:
            p = self.dir / "processed.safetensors"
            self._processed = safetensors_np.load(str(p)) if p.exists() else {}
        return self._processed

    @property
    def use_attn_result(self) -> bool:
        return bool(self.json.get("use_attn_result"))


_case_cache = {}


def get_case(name: str) -> Case:
    if name not in _case_cache:
        _case_cache[name] = Case(name)
    return _case_cache[name]


@pytest.fixture(params=CASES)
def case(request) -> Case:
    return get_case(request.param)


@pytest.fixture(params=PROCESSED_CASES)
def processed_case(request) -> Case:
    c = get_case(request.param)
    assert (c.dir / "processed.safetensors").is_file(), f"{c.name}: processed.safetensors missing"
    return c


@pytest.fixture(scope="session")
def circuits_mod():
    import circuits

    return circuits


@pytest.fixture
def tiny(circuits_mod):
    """The bundled tiny GPT-2 (5 layers, d_model 32, 4 heads, vocab 1000), processed."""
    m = circuits_mod.Model.from_pretrained(TINY_GPT2)
    yield m
    m.close()


@pytest.fixture
def small(circuits_mod):
    """A 2-layer TL-layout model with MLPs (tl_2l_lnpre_gelu), unprocessed."""
    m = circuits_mod.Model.from_pretrained_no_processing(CASES_DIR / "tl_2l_lnpre_gelu")
    yield m
    m.close()


def max_diff(got, want) -> float:
    """Max |got - want|; equal infinities count as 0, NaN mismatches as inf."""
    import numpy as np

    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.size == 0:
        return 0.0
    same_inf = np.isinf(want) & (got == want)
    with np.errstate(invalid="ignore"):
        d = np.abs(got - want)
    d[same_inf] = 0.0
    nan_mismatch = np.isnan(got) != np.isnan(want)
    d[np.isnan(got) & np.isnan(want)] = 0.0
    d[nan_mismatch] = np.inf
    return float(d.max())
