#!/usr/bin/env bash
# check_nocairo.sh SRC_DIR BUILD_DIR: the library, the examples and the tests configure and build
# without cairo (meson -Dcairo=disabled), nothing built links cairo, and PNG output says clearly
# that it is unavailable. Run by tests/run.sh (one counted check); cheap enough to run alone:
#   bash tests/check_nocairo.sh . build-nocairo
set -uo pipefail
src=$1
build=$2
fail() { echo "check_nocairo: $*"; exit 1; }
mkdir -p "$build" || fail "cannot create $build"
log=$build/check_nocairo.log
if [ -f "$build/build.ninja" ]; then meson setup --reconfigure "$build" "$src" -Dcairo=disabled >"$log" 2>&1
else meson setup "$build" "$src" -Dcairo=disabled >"$log" 2>&1; fi || fail "configure failed (see $log)"
ninja -C "$build" >>"$log" 2>&1 || fail "build failed (see $log)"
for f in "$build"/lib/libcircuits.so "$build"/examples/circuits "$build"/examples/circuits-induction \
         "$build"/examples/circuits-icl; do
    [ -e "$f" ] || fail "$f was not built"
    if readelf -d "$f" | grep -q 'NEEDED.*cairo'; then fail "$f links cairo in a -Dcairo=disabled build"; fi
done
want="built without cairo: PNG output unavailable; install libcairo2-dev and rebuild"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$("$build/examples/circuits" compose "$src/examples/models/tiny-random-gpt2" --png "$tmp/c.png" 2>&1)
rc=$?
[ "$rc" -eq 1 ] || fail "circuits compose --png: exit $rc, expected 1 ($out)"
case "$out" in *"$want"*) ;; *) fail "circuits compose --png said '$out', not '$want'";; esac
[ ! -e "$tmp/c.png" ] || fail "circuits compose --png wrote a file"
# the examples still compute and print; their pictures say why there are none
out=$("$build/examples/circuits-induction" --out "$tmp" 2>&1) || fail "circuits-induction failed: $out"
case "$out" in *"$want"*) ;; *) fail "circuits-induction did not say '$want'";; esac
ls "$tmp"/*.png >/dev/null 2>&1 && fail "circuits-induction wrote PNGs without cairo"
echo "check_nocairo: built without cairo; compose --png and circuits-induction say PNG output is unavailable"
