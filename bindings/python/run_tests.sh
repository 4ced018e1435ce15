#!/usr/bin/env bash
# Runs the Python binding's tests against one build of libcircuits.
#
#   bash bindings/python/run_tests.sh [BUILD_DIR] [pytest args...]
#
# BUILD_DIR (default: build/, relative to the repository root or absolute) must hold
# lib/libcircuits.so.0; the tests load exactly that library (CIRCUITS_LIBRARY). Installs numpy,
# pytest, gguf and selenium (and meson-python, for test_pip_install.py) with pip if missing (no torch needed). A sanitizer build (build-asan/)
# works too: its runtime is preloaded and leak checking is left to the C suites (CPython's
# own allocations would be reported as leaks at exit). Prints pytest's summary line last and
# exits with pytest's status. PYTEST_TESTS (default: tests) names the test files or directories
# to run, e.g. PYTEST_TESTS=tests/test_misuse.py for the misuse suite alone.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="${1:-build}"
shift || true
case "$build" in /*) ;; *) build="$repo/$build" ;; esac
lib="$build/lib/libcircuits.so.0"
if [ ! -e "$lib" ]; then
  echo "run_tests.sh: $lib not found (build first: meson setup $build && ninja -C $build)" >&2
  exit 2
fi
PY="${PYTHON:-python3}"

if ! "$PY" -c "import numpy, pytest" >/dev/null 2>&1; then
  echo "installing numpy and pytest for $PY ..."
  "$PY" -m pip install --quiet numpy pytest || { echo "run_tests.sh: pip install numpy pytest failed" >&2; exit 2; }
fi

# gguf (llama.cpp's GGUF library, pure Python): tests/test_steering.py reads our control-vector
# files with it (the interop proof of docs/steering.md); required, never skipped.
if ! "$PY" -c "import gguf" >/dev/null 2>&1; then
  echo "installing gguf for $PY ..."
  "$PY" -m pip install --quiet gguf || { echo "run_tests.sh: pip install gguf failed" >&2; exit 2; }
fi

# selenium: tests/test_vis_browser.py drives Debian's chromium through chromedriver with it (the
# driver's path is given and SE_OFFLINE set: selenium never downloads a browser or driver);
# required, never skipped (the test fails saying what is missing).
if ! "$PY" -c "import selenium" >/dev/null 2>&1; then
  echo "installing selenium for $PY ..."
  "$PY" -m pip install --quiet selenium || { echo "run_tests.sh: pip install selenium failed" >&2; exit 2; }
fi

# meson-python: tests/test_pip_install.py builds the package with it (`pip install .`). --no-deps:
# the build uses the system's meson (PyPI's meson would shadow /usr/bin/meson on PATH).
if ! "$PY" -c "import mesonpy" >/dev/null 2>&1; then
  echo "installing meson-python for $PY ..."
  "$PY" -m pip install --quiet --no-deps meson-python pyproject-metadata packaging tomli ||
    echo "run_tests.sh: meson-python could not be installed: test_pip_install.py will be skipped" >&2
fi

export CIRCUITS_LIBRARY="$lib"
export PYTHONDONTWRITEBYTECODE=1
# An ASan/UBSan-instrumented library needs its runtimes loaded first into the (uninstrumented)
# interpreter.
preload=""
for rt in asan ubsan; do
  # (not grep -q: it would close the pipe early, and under pipefail ldd's SIGPIPE would make the
  # test fail at random, running a sanitizer build without its runtime)
  if ldd "$lib" 2>/dev/null | grep "lib$rt\.so" >/dev/null; then
    p="$(ldd "$lib" | awk -v r="lib$rt.so" 'index($1, r) == 1 {print $3}')"
    [ -z "$p" ] && p="$(gcc -print-file-name="lib$rt.so" 2>/dev/null)"
    [ -n "$p" ] && [ -e "$p" ] && preload="${preload:+$preload:}$p"
  fi
done
if [ -n "$preload" ]; then
  export LD_PRELOAD="$preload${LD_PRELOAD:+:$LD_PRELOAD}"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
  export CIRCUITS_TEST_SANITIZER=1  # RSS tests are skipped: ASan quarantines freed memory
  echo "sanitizer build: LD_PRELOAD=$LD_PRELOAD"
fi

cd "$here"
# shellcheck disable=SC2086 -- PYTEST_TESTS may name several paths
"$PY" -m pytest -q -p no:cacheprovider ${PYTEST_TESTS:-tests} "$@"
