#!/usr/bin/env bash
# update-baseline.sh [BUILD_DIR]: the release step that records the ABI of the built library as
# the baseline tests/abi/check.sh compares against (docs/abi.md). Replaces the previous one.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
ninja -C "$build" >/dev/null
lib=$(readlink -f "$build/lib/libcircuits.so")
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
rm -f tests/abi/*.abi
bash tests/abi/dump.sh "$lib" include "tests/abi/$soname.abi"
echo "wrote tests/abi/$soname.abi ($(grep -c '<elf-symbol ' "tests/abi/$soname.abi") symbols); commit it"
