#!/usr/bin/env bash
# exports.sh LIB SRC_DIR: the shared library exports exactly the public API (docs/abi.md).
#   1. the functions the compiler sees declared in include/circuits.h (gcc -aux-info) are
#      exactly those marked CIRCUITS_API (a declaration without it would be hidden);
#   2. the defined dynamic symbols of LIB are exactly those functions, both ways;
#   3. every export carries a version node of lib/circuits.map (the version script was
#      applied), and those nodes are the only absolute symbols;
#   4. the SONAME is libcircuits.so.CIRCUITS_ABI_VERSION.
# Prints a diff of each failing set comparison and exits 1; 0 when all hold.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 LIB SRC_DIR" >&2
    exit 2
fi
lib=$1 src=$2
header=$src/include/circuits.h map=$src/lib/circuits.map
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

# compare NAME_A FILE_A NAME_B FILE_B: sorted sets must be equal; print what is only in one.
compare() {
    local only_a only_b
    only_a=$(comm -23 "$2" "$4") only_b=$(comm -13 "$2" "$4")
    if [ -n "$only_a" ]; then
        echo "FAIL: in $1 but not in $3:"; sed 's/^/  /' <<<"$only_a"; status=1
    fi
    if [ -n "$only_b" ]; then
        echo "FAIL: in $3 but not in $1:"; sed 's/^/  /' <<<"$only_b"; status=1
    fi
    if [ -z "$only_a$only_b" ]; then echo "ok: $1 == $3 ($(grep -c . "$2") names)"; fi
}

# Each CIRCUITS_API declaration (possibly several lines) joined up to its ';'; its name is the
# first identifier before '(' (a function) or, for an object, the last identifier.
awk '
    /^[[:space:]]*CIRCUITS_API[[:space:]]/ { decl = ""; inside = 1 }
    inside {
        decl = decl " " $0
        if (index($0, ";")) {
            inside = 0
            if (match(decl, /[A-Za-z_][A-Za-z0-9_]*[[:space:]]*\(/)) name = substr(decl, RSTART, RLENGTH - 1)
            else if (match(decl, /[A-Za-z_][A-Za-z0-9_]*[[:space:]]*(\[[^]]*\])?[[:space:]]*;/)) name = substr(decl, RSTART, RLENGTH - 1)
            sub(/[[:space:]\[;].*$/, "", name)
            print name
        }
    }
' "$header" | sort -u >"$tmp/marked"
[ -s "$tmp/marked" ] || { echo "FAIL: no CIRCUITS_API declarations found in $header"; exit 1; }

# The compiler's list of every function declared in the header, whatever the formatting.
echo '#include <circuits.h>' >"$tmp/tu.c"
gcc -std=c11 -I"$src/include" -fsyntax-only -aux-info "$tmp/aux" "$tmp/tu.c"
grep -F "/circuits.h:" "$tmp/aux" | sed -E 's/^.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*) \(.*$/\1/' | sort -u >"$tmp/declared"
compare "functions declared in circuits.h" "$tmp/declared" "declarations marked CIRCUITS_API" "$tmp/marked"

# Defined dynamic symbols: "ADDR TYPE NAME@@VERSION"; type A are the version nodes themselves.
nm -D --defined-only "$lib" >"$tmp/nm"
awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' "$tmp/nm" | sort -u >"$tmp/exported"
compare "symbols exported by $(basename "$lib")" "$tmp/exported" "CIRCUITS_API declarations" "$tmp/marked"

bad_prefix=$(grep -v '^circuits_' "$tmp/exported" || true)
if [ -n "$bad_prefix" ]; then echo "FAIL: exported names without the circuits_ prefix:"; sed 's/^/  /' <<<"$bad_prefix"; status=1; fi

# Version nodes declared in the map ("NAME {") are the absolute symbols, and every export is
# bound to one of them ("name@@NODE", the default version).
grep -oE '^[[:space:]]*[A-Za-z_][A-Za-z0-9_.]*[[:space:]]*\{' "$map" | tr -d '{[:space:]' | sort -u >"$tmp/nodes"
awk '$2 == "A" { print $3 }' "$tmp/nm" | sed 's/@.*//' | sort -u >"$tmp/absolute"
compare "version nodes in circuits.map" "$tmp/nodes" "absolute symbols of the library" "$tmp/absolute"
unversioned=$(awk '$2 != "A" && $3 !~ /@@/ { print $3 }' "$tmp/nm")
wrong_node=$(awk '$2 != "A" && $3 ~ /@@/ { sub(/^.*@@/, "", $3); print $3 }' "$tmp/nm" | sort -u | comm -23 - "$tmp/nodes")
if [ -n "$unversioned$wrong_node" ]; then
    echo "FAIL: the version script was not applied: unversioned exports or unknown version nodes:"
    printf '  %s\n' $unversioned $wrong_node; status=1
else
    echo "ok: every export is versioned $(tr '\n' ' ' <"$tmp/nodes")"
fi

abi=$(sed -nE 's/^#define CIRCUITS_ABI_VERSION ([0-9]+).*/\1/p' "$header")
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
if [ "$soname" != "libcircuits.so.$abi" ]; then
    echo "FAIL: SONAME is '$soname' but circuits.h says CIRCUITS_ABI_VERSION $abi (meson.build soversion must match)"
    status=1
else
    echo "ok: SONAME $soname matches CIRCUITS_ABI_VERSION"
fi
exit "$status"
