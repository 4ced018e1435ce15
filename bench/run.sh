#!/usr/bin/env bash
# The benchmark suite, one command (docs/performance.md):
#
#   bash bench/run.sh [--quick] [--install-only] [--out docs/performance-table.md] [bench/run.py options...]
#
# Installs what the suite needs on Debian 12 from the default indexes only, skipping what is
# there (every step is idempotent):
#   - the build dependencies, Open MPI included (.ci/install-deps: apt);
#   - a Python with torch, transformers, safetensors and transformer_lens 3.x: /opt/refenv if
#     present, --python PATH if given, else bench/.venv, created here with pip from PyPI
#     (torch's wheels are several GB with their CUDA libraries, which the CPU benchmarks never
#     load: never run this in CI);
#   - the peers of the capability sections, into that interpreter, each constrained to the
#     versions of torch, transformers, transformer_lens, safetensors, numpy and tokenizers
#     already installed (pip then fails rather than change them): sae-lens (SAEs), gguf and
#     llama-cpp-python (GGUF; it builds llama.cpp from source with cmake and a C++ compiler).
#     A peer that cannot be installed is recorded with the reason in bench/.cache/install-status,
#     and the report's summary says so in that section's row; a failed build is not retried
#     until its bench/.cache/install-MODULE.log.failed is deleted.
# then runs bench/run.py, the main suite and every capability section, with that interpreter.
# BENCH_PEERS (default "sae_lens gguf llama_cpp") limits which peers are installed.
set -uo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps || { echo "bench/run.sh: .ci/install-deps failed" >&2; exit 1; }

py="" install_only=0 args=()
while (($#)); do
  case "$1" in
    --install-only) install_only=1 ;;
    --python) py=$2; args+=("$1" "$2"); shift ;;
    --python=*) py=${1#--python=}; args+=("$1") ;;
    *) args+=("$1") ;;
  esac
  shift
done

has_base() { "$1" -c "import torch, transformers, transformer_lens, safetensors" 2>/dev/null; }
base=0  # 1: $py imports the peers' base (importing torch + transformer_lens takes ~10 s: once)
if [ -n "$py" ]; then
  has_base "$py" && base=1
else
  for cand in /opt/refenv/bin/python bench/.venv/bin/python; do
    if [ -x "$cand" ] && has_base "$cand"; then py=$cand base=1; break; fi
  done
fi
if [ -z "$py" ]; then
  echo "bench/run.sh: creating bench/.venv (torch, transformers, transformer_lens 3.9.0 from PyPI)" >&2
  { [ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv; } &&
    bench/.venv/bin/pip install -q torch transformers safetensors 'transformer_lens==3.9.0'
  py=bench/.venv/bin/python
  has_base "$py" && base=1 || echo "bench/run.sh: bench/.venv has no torch + transformer_lens: the peers' columns will be empty" >&2
fi

mkdir -p bench/.cache
status=bench/.cache/install-status
cons=bench/.cache/constraints.txt
: >"$status"
"$py" -m pip freeze 2>/dev/null | grep -iE '^(torch|transformers|transformer[-_]lens|safetensors|numpy|tokenizers)==' >"$cons"

# peer MODULE WHAT PIP-ARGS...: pip install PIP-ARGS unless MODULE imports; a failure is recorded
# in $status as "MODULE: why" (bench/sections.py quotes it in the summary's row)
peer() {
  local mod=$1 what=$2 log=bench/.cache/install-$1.log
  shift 2
  case " ${BENCH_PEERS:-sae_lens gguf llama_cpp} " in *" $mod "*) ;; *) return 0 ;; esac
  "$py" -c "import $mod" 2>/dev/null && return 0
  if [ -e "$log.failed" ]; then
    echo "$mod: $what could not be installed in an earlier run ($(cat "$log.failed"); $log; delete $log.failed to retry)" >>"$status"
    return 0
  fi
  echo "bench/run.sh: pip install $* (log: $log)" >&2
  if CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$py" -m pip install -c "$cons" "$@" >"$log" 2>&1 && "$py" -c "import $mod" 2>>"$log"; then
    return 0
  fi
  local why
  # the most specific line: cmake's error (and the line after it), else the compiler's, else pip's
  why=$(grep -m1 -A4 'CMake Error' "$log" | tr -s ' \n' ' ' | cut -c1-200)
  [ -n "$why" ] || why=$(grep -m1 -E ' error: |Cannot install|conflict|No matching distribution' "$log" | cut -c1-200)
  [ -n "$why" ] || why=$(grep -m1 -E '^ERROR:' "$log" | cut -c1-200)
  echo "${why:-see the log}" >"$log.failed"
  echo "$mod: $what could not be installed: ${why:-see the log} ($log)" >>"$status"
}
peer sae_lens "sae-lens (SAELens)" 'sae-lens==6.54.12'
peer gguf "gguf (gguf-py)" 'gguf==0.19.0'
peer llama_cpp "llama-cpp-python (builds llama.cpp from source with cmake)" 'llama-cpp-python==0.3.36'
if [ -s "$status" ]; then sed 's/^/bench\/run.sh: not installed: /' "$status" >&2; fi

((install_only)) && exit 0
((base)) || py=python3
exec "$py" bench/run.py --python "$py" "${args[@]}"
