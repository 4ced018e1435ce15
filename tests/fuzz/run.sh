#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan) and runs each for a bounded time.
# Usage: tests/fuzz/run.sh [SECONDS_PER_HARNESS (default 60)] [HARNESS ...]
# A crash or hang is copied into tests/fuzz/regressions/<harness>/, where the normal test suite
# replays it from then on (suite fuzz_regressions); commit it with the fix.
# FUZZ_RESULTS=FILE appends one line per harness, "<harness> OK|FAIL" (tests/run.sh counts them).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then # every harness: one seed corpus directory each
  for d in tests/fuzz/corpus/*/; do harnesses+=("$(basename "$d")"); done
fi
if ! command -v clang >/dev/null || ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C build-fuzz >/dev/null
status=0
for h in "${harnesses[@]}"; do
  work=build-fuzz/corpus-$h art=build-fuzz/artifacts-$h
  mkdir -p "$work" "$art"
  cp -n tests/fuzz/corpus/$h/* "$work"/ 2>/dev/null || true
  echo "fuzzing $h for ${secs}s"
  if ! UBSAN_OPTIONS=halt_on_error=1 ./build-fuzz/tests/fuzz_$h "$work" -max_total_time="$secs" -timeout=10 \
       -rss_limit_mb=4096 -artifact_prefix="$art/" -print_final_stats=1 2> "build-fuzz/fuzz-$h.log"; then
    status=1
    [ -z "${FUZZ_RESULTS:-}" ] || echo "$h FAIL" >> "$FUZZ_RESULTS"
    echo "fuzz_$h found a problem: see build-fuzz/fuzz-$h.log"
    for f in "$art"/*; do [ -f "$f" ] && cp "$f" tests/fuzz/regressions/$h/ && echo "  saved tests/fuzz/regressions/$h/$(basename "$f")"; done
  elif [ -n "${FUZZ_RESULTS:-}" ]; then
    echo "$h OK" >> "$FUZZ_RESULTS"
  fi
  grep -E "stat::number_of_executed_units|cov:" "build-fuzz/fuzz-$h.log" | tail -2 || true
done
exit $status
