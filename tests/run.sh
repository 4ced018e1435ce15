#!/usr/bin/env bash
# The test command: installs build dependencies, builds, and runs the whole C suite twice: a
# normal build (build/) and an AddressSanitizer + UndefinedBehaviorSanitizer build
# (build-asan/); the threads, api, kernels and jobs (thread pool) suites a third time under
# ThreadSanitizer (build-tsan/); then the C test programs under Valgrind memcheck (meson setup
# "valgrind", tests/meson.build); then a build without cairo (build-nocairo/,
# tests/check_nocairo.sh); then every fuzz harness for FUZZ_SECONDS (default 35) each
# (clang, build-fuzz/); then the Python binding's pytest suite, and its misuse suite again against
# the sanitizer build. Prints "N passed, N failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps || exit 1

configure() { # dir, extra meson args...
  local dir=$1; shift
  if [ -f "$dir/build.ninja" ]; then meson setup --reconfigure "$dir" "$@" >/dev/null
  else meson setup "$dir" "$@" >/dev/null; fi
}
setup() { configure "$@" && ninja -C "$1" >/dev/null; }
setup build || { echo "build failed"; exit 1; }
setup build-asan -Db_sanitize=address,undefined -Db_lundef=false || { echo "sanitizer build failed"; exit 1; }
# ThreadSanitizer: only the programs of the suites it runs are built, as meson lists them (the
# api suite is six programs, tests/meson.build)
tsan_suites=(threads api kernels jobs)
tsan_programs() { # the build-tsan targets of the tests in tsan_suites, one a line
  meson introspect build-tsan --tests | python3 -c '
import json, os, sys
suites = {"libcircuits:" + s for s in sys.argv[1:]}
for t in json.load(sys.stdin):
    if suites & set(t["suite"]): print(os.path.relpath(t["cmd"][0], "build-tsan"))' "${tsan_suites[@]}"
}
{ configure build-tsan -Db_sanitize=thread -Db_lundef=false && mapfile -t tsan_targets < <(tsan_programs) &&
  [ ${#tsan_targets[@]} -gt 0 ] && ninja -C build-tsan "${tsan_targets[@]}" >/dev/null; } || { echo "thread sanitizer build failed"; exit 1; }

status=0
meson test -C build --print-errorlogs || status=1
# normal build only: the install test links the installed .so into an unsanitized program, and
# the ABI that is checked (suite abi) is the normal build's
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --no-suite install --no-suite abi --print-errorlogs || status=1

# ThreadSanitizer on the suites that share objects between threads. No suppressions: it reports
# no race, in libcircuits or in OpenBLAS (which is not instrumented). Kernels with 32 bits of
# mmap randomisation break TSan's memory layout, so ASLR is turned off for the run when setarch can.
# TSan runs code 5-15x slower: the timeouts are 4x (grad_kernels took over its 30 s on a slower
# machine).
no_aslr=()
if setarch "$(uname -m)" -R true 2>/dev/null; then no_aslr=(setarch "$(uname -m)" -R); fi
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  "${no_aslr[@]}" meson test -C build-tsan --no-rebuild --timeout-multiplier 4 "${tsan_suites[@]/#/--suite=}" --print-errorlogs || status=1

# Valgrind memcheck over the C test programs of the normal build (not the shell-script suites)
meson test -C build --setup valgrind --print-errorlogs || status=1

# the library, examples and tests build without cairo (-Dcairo=disabled) and PNG output says it
# is unavailable: one counted check (tests/check_nocairo.sh)
nocairo_result=$(mktemp)
if bash tests/check_nocairo.sh . build-nocairo; then echo OK >"$nocairo_result"; else echo FAIL >"$nocairo_result"; status=1; fi

# every fuzz harness for a bounded time; a crash or hang fails the run (tests/fuzz/run.sh)
fuzz_results=$(mktemp)
FUZZ_RESULTS=$fuzz_results bash tests/fuzz/run.sh "${FUZZ_SECONDS:-35}" || status=1

# the Python binding (pytest), against the normal build; its summary line is folded into ours
py_log=$(mktemp)
bash bindings/python/run_tests.sh build 2>&1 | tee "$py_log" || status=1

# the misuse suite (bindings/python/tests/test_misuse.py: each probe a Python program in its own
# interpreter) against build-asan's libcircuits: the ASan and UBSan runtimes preloaded into the
# uninstrumented python3, leak checking off (CPython leaks by design), freed memory filled (a
# stale read outside instrumented code then sees garbage, not the old values). A probe whose
# stderr holds a sanitizer report, or that dies by a signal, fails.
misuse_log=$(mktemp)
asan_rt="$(gcc -print-file-name=libasan.so)"; ubsan_rt="$(gcc -print-file-name=libubsan.so)"
LD_PRELOAD="$asan_rt:$ubsan_rt" ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:max_free_fill_size=1073741824 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTEST_TESTS=tests/test_misuse.py \
  bash bindings/python/run_tests.sh build-asan 2>&1 | tee "$misuse_log" || status=1

python3 - build/meson-logs/testlog.json build-asan/meson-logs/testlog.json build-tsan/meson-logs/testlog.json \
  build/meson-logs/testlog-valgrind.json "$fuzz_results" "$py_log" "$misuse_log" "$nocairo_result" <<'PY'
import json, os, re, sys
passed = failed = 0
for path in sys.argv[1:5]:
    if not os.path.exists(path): failed += 1; print("FAILED: no test log", path); continue
    run = "valgrind" if "valgrind" in path else path.split("/")[0]
    for line in open(path):
        r = json.loads(line)
        if r["result"] == "OK": passed += 1
        else: failed += 1; print("FAILED:", run, r["name"])
# fuzzing: one line per harness (tests/fuzz/corpus/<harness>/); a missing one did not run
fuzz = dict(l.split() for l in open(sys.argv[5]) if l.strip())
for h in sorted(d for d in os.listdir("tests/fuzz/corpus") if os.path.isdir("tests/fuzz/corpus/" + d)):
    if fuzz.get(h) == "OK": passed += 1
    else: failed += 1; print("FAILED: fuzz", h, "(see build-fuzz/fuzz-%s.log)" % h if h in fuzz else "did not run")
# the build without cairo
if open(sys.argv[8]).read().strip() == "OK": passed += 1
else: failed += 1; print("FAILED: build without cairo (tests/check_nocairo.sh)")
# pytest's last line: "N passed, M skipped, K failed in Xs" (any order); the python suite, then
# the misuse suite under ASan+UBSan
skipped = 0
for what, path in (("python tests", sys.argv[6]), ("python misuse suite (build-asan)", sys.argv[7])):
    tail = open(path).read().strip().splitlines()[-1:] or [""]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", tail[0])}
    if not counts: failed += 1; print(f"FAILED: {what} printed no summary")
    if counts.get("failed", 0) or counts.get("error", 0) or counts.get("errors", 0): print(f"FAILED: {what}: {tail[0]}")
    passed += counts.get("passed", 0)
    failed += counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    skipped += counts.get("skipped", 0)
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
rm -f "$py_log" "$misuse_log" "$fuzz_results" "$nocairo_result"
exit $status
