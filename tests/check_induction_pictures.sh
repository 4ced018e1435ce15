#!/usr/bin/env bash
# check_induction_pictures.sh CIRCUITS_INDUCTION: circuits-induction writes its four pictures and
# says so; a picture it cannot write (a directory in its place) is named on stderr, the
# "Pictures:" line is not printed, and the exit status is 1 (it once said all was written).
set -euo pipefail
exe=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "check_induction_pictures: $*" >&2; exit 1; }

mkdir "$tmp/ok"
"$exe" --out "$tmp/ok" >"$tmp/out" 2>"$tmp/err" || fail "exit status $? with a writable directory: $(cat "$tmp/err")"
grep -q "^Pictures: $tmp/ok/pattern_" "$tmp/out" || fail "no 'Pictures:' line"
[ "$(ls "$tmp/ok"/*.png | wc -l)" -eq 4 ] || fail "not four PNGs: $(ls "$tmp/ok")"

mkdir -p "$tmp/bad/loss_by_position.png"
rc=0
"$exe" --out "$tmp/bad" >"$tmp/out" 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "exit status $rc when a picture cannot be written, want 1"
grep -qx "circuits-induction: cannot write $tmp/bad/loss_by_position.png" "$tmp/err" || fail "stderr: $(cat "$tmp/err")"
grep -q "^Pictures:" "$tmp/out" && fail "'Pictures:' printed though one was not written"
echo "check_induction_pictures: 4 pictures written and listed; an unwritable one named, exit status 1"
