"""The misuse suite: every probe of misuse_probes.py in its own interpreter.

A probe passes only if its interpreter exits with status 0 (not a signal, not an uncaught
exception), prints ``PROBE OK`` as its last line, and its stderr holds no sanitizer report.
Under a sanitizer build (run_tests.sh with build-asan/ sets LD_PRELOAD, ASAN_OPTIONS and
CIRCUITS_LIBRARY) the subprocesses inherit that environment, so they run against the
instrumented library; tests/run.sh runs this file that way (docs/testing.md).

``MISUSE_PROBES=name,name`` runs only those probes; ``python3 test_misuse.py --list`` prints the
probes, ``python3 test_misuse.py NAME`` prints one probe's program.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import BINDING, REPO
from misuse_probes import AUDIT, PRELUDE, PROBES

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "SUMMARY: UndefinedBehavior")
TIMEOUT = float(os.environ.get("MISUSE_TIMEOUT", "300"))

_only = [n for n in os.environ.get("MISUSE_PROBES", "").split(",") if n]
NAMES = _only or sorted(PROBES)


def program(name: str) -> str:
    return PRELUDE + "\n# ---- probe: " + name + "\n" + PROBES[name][1]


def run_probe(name: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["MISUSE_BINDING"] = str(BINDING)
    env["MISUSE_REPO"] = str(REPO)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return subprocess.run([sys.executable, "-c", program(name)], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def test_there_are_enough_probes():
    cats = [c for c, _ in PROBES.values()]
    assert len(PROBES) >= 40, len(PROBES)
    assert cats.count("kept") >= 15 and cats.count("size") >= 15 and cats.count("owner") >= 5


def test_audit_covers_every_bound_function():
    """Every function of the binding's ctypes table is in the audit, with the probes that pin
    its sizes and pointers down (or why none crosses)."""
    from circuits import _native as N

    assert set(AUDIT) == set(N.FUNCTIONS), (set(N.FUNCTIONS) ^ set(AUDIT))
    for fn, entry in AUDIT.items():
        if isinstance(entry, str):
            assert entry.strip(), fn
        else:
            missing = [p for p in entry if p not in PROBES]
            assert entry and not missing, (fn, missing)


@pytest.mark.parametrize("name", NAMES)
def test_probe(name):
    r = run_probe(name)
    report = f"probe {name}: exit status {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-6000:]}"
    assert r.returncode == 0, report  # negative: killed by a signal
    for mark in SANITIZER_MARKS:
        assert mark not in r.stderr, report
    lines = r.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("PROBE OK"), report


SANITIZED = os.environ.get("CIRCUITS_TEST_SANITIZER") == "1"  # run_tests.sh with a sanitizer build

CANARY = PRELUDE + '''
# a deliberate stale view, made with the binding's internals (no owner): the memory it views is
# freed, then touched through libcircuits
f = circuits.FactoredMatrix(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))
t = N.Tensor(); ta = N.Tensor()
N.check(N.lib.circuits_factored_factors(f._ptr, t, ta))
stale = circuits._arrays.view(t.data, (64 * 64,))
f._h.close()
touch(stale)
ok("the sanitizer saw nothing")
'''


def _run(src: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MISUSE_BINDING=str(BINDING), MISUSE_REPO=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", src], env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.skipif(not SANITIZED, reason="needs the sanitizer build (run_tests.sh build-asan)")
def test_probes_run_under_the_sanitizer():
    """The probes' interpreters have the ASan runtime, and a stale view touched the way the
    probes touch kept arrays is reported (so a probe's pass under ASan means something)."""
    r = _run("print('libasan' in open('/proc/self/maps').read())")
    assert r.stdout.strip() == "True", (r.stdout, r.stderr[-2000:])
    r = _run(CANARY)
    assert r.returncode != 0 and "ERROR: AddressSanitizer: heap-use-after-free" in r.stderr, (r.returncode, r.stdout,
                                                                                             r.stderr[-3000:])


if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        for n in sorted(PROBES):
            print(PROBES[n][0], n)
    elif len(sys.argv) == 2:
        print(program(sys.argv[1]))
