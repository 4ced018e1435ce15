#!/usr/bin/env bash
# check.sh LIB BASELINE HEADERS_DIR: compares LIB's ABI with the release baseline (docs/abi.md).
# BASELINE is an abidw dump or a directory holding exactly one (*.abi). Passes when nothing
# changed or when the only changes are added functions, variables or enumerators; fails on
# anything removed or changed (a function's signature, a public struct's layout, an
# enumerator's value), unless LIB's SONAME differs from the baseline's, i.e. the soversion was
# bumped for an incompatible release. Prints abidiff's report either way.
set -uo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 LIB BASELINE HEADERS_DIR" >&2
    exit 2
fi
lib=$1 baseline=$2 headers=$3
here=$(cd "$(dirname "$0")" && pwd)
if [ -d "$baseline" ]; then
    shopt -s nullglob
    found=("$baseline"/*.abi)
    if [ ${#found[@]} -ne 1 ]; then
        echo "FAIL: expected exactly one *.abi baseline in $baseline, found ${#found[@]}"
        exit 1
    fi
    baseline=${found[0]}
fi
[ -f "$baseline" ] || { echo "FAIL: no baseline $baseline"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bash "$here/dump.sh" "$lib" "$headers" "$tmp/current.abi" || { echo "FAIL: abidw could not read $lib"; exit 1; }
soname_of() { sed -nE "s/^<abi-corpus [^>]*soname='([^']*)'.*/\1/p" "$1" | head -n1; }
old_soname=$(soname_of "$baseline") new_soname=$(soname_of "$tmp/current.abi")

# Two comparisons: (1) the functions and variables with every type they reach (a changed
# parameter typedef, struct layout or enum there is a change); (2) the public headers' types no
# function reaches (circuits_status ...), with types defined outside the headers suppressed:
# abidw keeps some of the library's own structs (the thread pool's job structs, in .c files) as
# unreachable types, and those may come and go.
headers_list=$(cd "$headers" && ls *.h | paste -sd, -)
printf '[suppress_type]\n  source_location_not_in = %s\n' "$headers_list" >"$tmp/private.supp"
# Size-versioned structs (options, and the config the library fills) may grow at the end in a
# compatible release: the library accepts every size it ever published (docs/abi.md). A struct
# whose baseline members are all still there, first, with the same names, offsets and types
# (each type spelled out whole: a pointer's target, a callback's signature), only had fields
# appended: that is suppressed by name. Anything else done to it (abidiff's own
# has_data_member_inserted_at = end also hides a retyped last field) is still a change.
python3 - "$baseline" "$tmp/current.abi" >"$tmp/versioned.supp" <<'PY'
import re, sys
import xml.etree.ElementTree as ET
VERSIONED = re.compile(r"^(circuits|toy)_([a-z_]+_)?(options|config)$")
def structs(path):
    root = ET.parse(path).getroot()
    by_id = {e.get("id"): e for e in root.iter() if e.get("id")}
    def canon(tid, depth=0):
        # a type spelled out whole: pointers, qualifiers, typedefs (name and what they stand
        # for), function types (return and parameters), arrays, enums (their values); structs
        # and unions by name and size (their own changes are abidiff's to report)
        e = by_id.get(tid)
        if e is None or depth > 12: return "?" + str(tid)
        t, sub = e.tag, lambda x: canon(x, depth + 1)
        if t == "type-decl": return f"{e.get('name')}:{e.get('size-in-bits')}"
        if t == "pointer-type-def": return sub(e.get("type-id")) + "*"
        if t == "qualified-type-def":
            q = "".join(k + " " for k in ("const", "volatile", "restrict") if e.get(k) == "yes")
            return q + sub(e.get("type-id"))
        if t == "typedef-decl": return f"{e.get('name')}={sub(e.get('type-id'))}"
        if t == "function-type":
            ps = [sub(p.get("type-id")) if p.get("type-id") else "..." for p in e.findall("parameter")]
            r = [sub(x.get("type-id")) for x in e.findall("return")]
            return f"fn({','.join(ps)})->{r[0] if r else 'void'}"
        if t == "array-type-def":
            dims = ",".join(x.get("length", "?") for x in e.findall("subrange"))
            return f"{sub(e.get('type-id'))}[{dims}]"
        if t == "enum-decl":
            vals = ",".join(f"{x.get('name')}={x.get('value')}" for x in e.findall("enumerator"))
            return f"enum {e.get('name')}{{{vals}}}"
        if t in ("class-decl", "union-decl"): return f"{t} {e.get('name')}:{e.get('size-in-bits')}"
        return f"{t}:{e.get('name')}"
    out = {}
    for c in root.iter("class-decl"):
        n = c.get("name")
        if n and VERSIONED.match(n) and c.get("is-declaration-only") != "yes":
            out[n] = [(v.get("name"), m.get("layout-offset-in-bits"), canon(v.get("type-id")))
                      for m in c.findall("data-member") for v in m.findall("var-decl")]
    return out
old, new = structs(sys.argv[1]), structs(sys.argv[2])
for n, members in sorted(old.items()):
    now = new.get(n)
    if now is not None and len(now) > len(members) and now[:len(members)] == members:
        print(f"[suppress_type]\n  name = {n}\n  has_data_member_inserted_at = end\n")
PY
abidiff --suppressions "$tmp/versioned.supp" "$baseline" "$tmp/current.abi" >"$tmp/report" 2>&1
rc_reached=$?
abidiff --non-reachable-types --suppressions "$tmp/private.supp" --suppressions "$tmp/versioned.supp" \
    "$baseline" "$tmp/current.abi" >"$tmp/report-unreachable" 2>&1
rc_unreached=$?
grep -E '^Unreachable types summary' -A1000 "$tmp/report-unreachable" >>"$tmp/report" || true
rc=$((rc_reached | rc_unreached))
echo "abidiff $(basename "$baseline") $(basename "$lib"): exit $rc"
sed 's/^/  /' "$tmp/report"

# abidiff's exit status is a bit set: 1 error, 2 usage error, 4 ABI change, 8 incompatible
# ABI change. Anything else (a crash) is an error too.
if [ $rc -ge 16 ] || [ $((rc & 3)) -ne 0 ]; then
    echo "FAIL: abidiff did not run properly (exit $rc)"
    exit 1
fi
if [ "$old_soname" != "$new_soname" ]; then
    echo "PASS: the soname changed ($old_soname -> $new_soname): an incompatible release may change anything."
    echo "      Record the new baseline: bash tests/abi/update-baseline.sh"
    exit 0
fi
if [ $rc -eq 0 ]; then
    if grep -qE 'filtered out' "$tmp/report"; then
        echo "PASS: fields appended to size-versioned structs only (compatible); soname $new_soname stays"
    else
        echo "PASS: no ABI change against $old_soname"
    fi
    exit 0
fi
# Summary lines: "Functions changes summary: 0 Removed, 1 Changed (1 filtered out), 2 Added
# functions", the same for variables, symbols and unreachable types.
removed_or_changed=$(grep -E 'summary:' "$tmp/report" | grep -oE '\b[1-9][0-9]* ([Rr]emoved|[Cc]hanged)\b' || true)
added=$(grep -E 'summary:' "$tmp/report" | grep -oE '\b[1-9][0-9]* [Aa]dded\b' || true)
if [ $((rc & 8)) -eq 0 ] && [ -z "$removed_or_changed" ] && [ -n "$added" ]; then
    echo "PASS: compatible additions only ($(echo $added)); soname $new_soname stays"
    exit 0
fi
echo "FAIL: incompatible ABI change against the $old_soname baseline${removed_or_changed:+ (}$(echo $removed_or_changed)${removed_or_changed:+)}."
echo "      Either undo it, or make it an incompatible release: bump soversion in meson.build and"
echo "      CIRCUITS_ABI_VERSION in circuits.h, then bash tests/abi/update-baseline.sh (docs/abi.md)."
exit 1
