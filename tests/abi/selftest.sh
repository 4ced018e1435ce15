#!/usr/bin/env bash
# selftest.sh LIB SRC_DIR: proves that the ABI checks can fail, on deliberately broken cases.
#   check.sh:   a toy library (toy/toy.h, toy/toy.c) is built as a baseline and as each
#               variant of a "next release"; additions must pass, every incompatible change
#               must fail, and the same break must pass once the soname is bumped.
#   exports.sh: the real LIB against mutated copies of circuits.h and circuits.map must fail.
set -uo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 LIB SRC_DIR" >&2
    exit 2
fi
lib=$1 src=$2
here=$src/tests/abi toy=$src/tests/abi/toy
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# toy NAME SONAME CFLAGS...: builds $tmp/NAME/libtoy.so with DWARF, as meson's debugoptimized does
toy() {
    local name=$1 soname=$2; shift 2
    mkdir -p "$tmp/$name"
    gcc -std=c11 -shared -fPIC -g -O2 "$@" -Wl,-soname,"$soname" "$toy/toy.c" -o "$tmp/$name/libtoy.so" ||
        { echo "FAIL: could not build toy variant $name"; failures=$((failures + 1)); }
}

# expect pass|fail NAME [TEXT]: runs check.sh on variant NAME; TEXT must appear in its output
expect() {
    local want=$1 name=$2 text=${3:-} out rc got
    out=$(bash "$here/check.sh" "$tmp/$name/libtoy.so" "$tmp/baseline.abi" "$toy" 2>&1)
    rc=$?
    got=pass; [ $rc -eq 0 ] || got=fail
    if [ "$got" != "$want" ] || { [ -n "$text" ] && ! grep -qF -- "$text" <<<"$out"; }; then
        echo "FAIL: check.sh on '$name': expected $want${text:+ mentioning '$text'}, got $got (exit $rc):"
        sed 's/^/    /' <<<"$out"
        failures=$((failures + 1))
    else
        echo "ok: check.sh on '$name' -> $got"
    fi
}

toy base libtoy.so.0
bash "$here/dump.sh" "$tmp/base/libtoy.so" "$toy" "$tmp/baseline.abi" || { echo "FAIL: dump.sh on the toy baseline"; exit 1; }

# compatible: nothing, additions, private details
toy same libtoy.so.0
toy function_added libtoy.so.0 -DTOY_FUNCTION_ADDED
toy enumerator_added libtoy.so.0 -DTOY_ENUMERATOR_ADDED
toy private_changed libtoy.so.0 -DTOY_PRIVATE_CHANGED
expect pass same "no ABI change"
expect pass function_added "toy_count"
expect pass enumerator_added
expect pass private_changed

# a field appended to a size-versioned struct: compatible (the size rule reads old sizes)
toy field_appended libtoy.so.0 -DTOY_FIELD_APPENDED
expect pass field_appended "size-versioned"

# incompatible: every other layout or signature change, removal, renumbering
toy field_retyped libtoy.so.0 -DTOY_FIELD_RETYPED
toy field_inserted libtoy.so.0 -DTOY_FIELD_INSERTED
toy appended_and_retyped libtoy.so.0 -DTOY_FIELD_APPENDED -DTOY_FIELD_RETYPED
toy appended_and_pointer_retyped libtoy.so.0 -DTOY_FIELD_APPENDED -DTOY_POINTER_RETYPED
toy appended_and_callback_changed libtoy.so.0 -DTOY_FIELD_APPENDED -DTOY_CALLBACK_CHANGED
toy point_appended libtoy.so.0 -DTOY_POINT_APPENDED
toy signature_changed libtoy.so.0 -DTOY_SIGNATURE_CHANGED
toy function_removed libtoy.so.0 -DTOY_FUNCTION_REMOVED
toy enumerator_renumbered libtoy.so.0 -DTOY_ENUMERATOR_RENUMBERED
toy added_and_appended libtoy.so.0 -DTOY_FUNCTION_ADDED -DTOY_POINT_APPENDED
expect fail field_retyped "struct toy_options"
expect fail field_inserted "struct toy_options"
expect fail appended_and_retyped "struct toy_options"
expect fail appended_and_pointer_retyped "toy_options"
expect fail appended_and_callback_changed "toy_"
expect fail point_appended "struct toy_point"
expect fail signature_changed "toy_run"
expect fail function_removed "toy_free"
expect fail enumerator_renumbered "TOY_E_BAD"
expect fail added_and_appended "struct toy_point"

# the same break in a release with a new soname is allowed
toy field_appended_new_soname libtoy.so.1 -DTOY_POINT_APPENDED
expect pass field_appended_new_soname "libtoy.so.0 -> libtoy.so.1"

# a library without DWARF cannot be checked: a failure, not a silent pass
mkdir -p "$tmp/no_debug_info"
gcc -std=c11 -shared -fPIC -O2 -Wl,-soname,libtoy.so.0 "$toy/toy.c" -o "$tmp/no_debug_info/libtoy.so"
expect fail no_debug_info "no debug info"

# exports.sh against mutated sources: MUTANT must fail, mentioning TEXT
mutant() {
    local name=$1 text=$2 out rc
    out=$(bash "$here/exports.sh" "$lib" "$tmp/$name" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] || ! grep -qF -- "$text" <<<"$out"; then
        echo "FAIL: exports.sh with $name: expected a failure mentioning '$text', got exit $rc:"
        sed 's/^/    /' <<<"$out"
        failures=$((failures + 1))
    else
        echo "ok: exports.sh with $name -> fail"
    fi
}
copy_src() { mkdir -p "$tmp/$1/include" "$tmp/$1/lib"; cp "$src/include/circuits.h" "$tmp/$1/include/"; cp "$src/lib/circuits.map" "$tmp/$1/lib/"; }

copy_src pristine
if bash "$here/exports.sh" "$lib" "$tmp/pristine" >/dev/null 2>&1; then echo "ok: exports.sh with unchanged copies -> pass"
else echo "FAIL: exports.sh fails on unchanged copies of the sources"; failures=$((failures + 1)); fi

# a declaration the library does not export, before the header's last #endif
copy_src declared_not_exported
awk '{ line[NR] = $0 } /^#endif/ { last = NR }
     END { for (i = 1; i <= NR; i++) { if (i == last) print "CIRCUITS_API int circuits_not_exported(void);"; print line[i] } }' \
    "$src/include/circuits.h" >"$tmp/declared_not_exported/include/circuits.h"
mutant declared_not_exported "circuits_not_exported"

# a declaration that lost its CIRCUITS_API marker (it would be hidden, but the library has it)
copy_src marker_dropped
awk '!done && /^CIRCUITS_API [^(]*\(.*\);$/ { sub(/^CIRCUITS_API /, ""); done = 1 } { print }' \
    "$src/include/circuits.h" >"$tmp/marker_dropped/include/circuits.h"
mutant marker_dropped "but not in declarations marked CIRCUITS_API"

# a version script whose node is not the one the exports carry
copy_src other_version_node
sed -E 's/^([[:space:]]*)CIRCUITS_0([[:space:]]*\{)/\1CIRCUITS_9\2/' "$src/lib/circuits.map" >"$tmp/other_version_node/lib/circuits.map"
mutant other_version_node "CIRCUITS_9"

# an ABI version that disagrees with the SONAME
copy_src abi_version_mismatch
sed -E 's/^#define CIRCUITS_ABI_VERSION [0-9]+/#define CIRCUITS_ABI_VERSION 99/' "$src/include/circuits.h" \
    >"$tmp/abi_version_mismatch/include/circuits.h"
mutant abi_version_mismatch "CIRCUITS_ABI_VERSION 99"

if [ $failures -ne 0 ]; then
    echo "$failures self-test case(s) failed"
    exit 1
fi
echo "all ABI-check self-test cases behaved"
