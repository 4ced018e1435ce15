#!/usr/bin/env bash
# The benchmark suite, one command (docs/performance.md):
#
#   bash bench/run.sh [--quick] [--out docs/performance-table.md] [bench/run.py options...]
#
# Installs the build dependencies (.ci/install-deps), finds a Python with torch, transformers
# and transformer_lens 3.x — /opt/refenv if present, else bench/.venv, created here with pip
# from the default package index, PyPI (torch's wheels there are several GB with their CUDA
# libraries, which the CPU benchmarks never load: never run this in CI) — then runs bench/run.py
# with it. Nothing here fetches from any other host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps
has_peers() { "$1" -c "import torch, transformers, transformer_lens, safetensors" 2>/dev/null; }
py=""
for cand in /opt/refenv/bin/python bench/.venv/bin/python; do
  if [ -x "$cand" ] && has_peers "$cand"; then py=$cand; break; fi
done
if [ -z "$py" ]; then
  echo "bench/run.sh: creating bench/.venv (torch, transformers, transformer_lens 3.9.0 from PyPI)" >&2
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q torch transformers safetensors 'transformer_lens==3.9.0'
  py=bench/.venv/bin/python
fi
exec "$py" bench/run.py --python "$py" "$@"
