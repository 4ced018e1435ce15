#!/usr/bin/env bash
# dump.sh LIB HEADERS_DIR OUT: writes LIB's ABI (abidw's XML) to OUT, for check.sh and the
# baseline. Only types defined in HEADERS_DIR keep their definitions (--drop-private-types: the
# library's internal structs may change freely), but all of those are kept, even types no
# function mentions, such as enum circuits_status (--load-all-types). Paths are left out so
# the dump does not depend on where the tree is checked out, and DT_NEEDED (the libraries we
# link) is left out: it is not part of the ABI we promise.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 LIB HEADERS_DIR OUT" >&2
    exit 2
fi
lib=$1 headers=$2 out=$3
# abidw needs DWARF: without it every type would vanish from the dump. (No `| grep -q`: with
# pipefail, readelf killed by SIGPIPE would count as a failure.)
sections=$(readelf -S "$lib")
if ! grep -q '\.debug_info' <<<"$sections"; then
    echo "dump.sh: $lib has no debug info; build with -g (meson's default buildtype debugoptimized)" >&2
    exit 1
fi
abidw --headers-dir "$headers" --drop-private-types --load-all-types \
      --no-corpus-path --no-comp-dir-path --no-elf-needed --short-locs --out-file "$out" "$lib"
