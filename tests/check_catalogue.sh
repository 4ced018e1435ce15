#!/usr/bin/env bash
# check_catalogue.sh SRC_DIR [BUILD_DIR]: the catalogue of bad input in docs/errors.md cannot rot.
#   1. every check name in the catalogue tables (the last cell of a row, `name`) is a named check
#      in the test sources (the first argument of a *_FAILS("name", ...) / *_fails("name", ...)
#      call in tests/*.c), and every named check there is a row: no row without a test, no test
#      without a row; no name twice;
#   2. the row count the document states ("The catalogue has N rows") is the number of rows;
#   3. with BUILD_DIR: each row's status and message are what the test prints in -v mode now
#      (a message the document cuts short with "…" must be a prefix of the real one).
# Exits 1 listing the problems, 0 when all hold.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 SRC_DIR [BUILD_DIR]" >&2
    exit 2
fi
src=$1
build=${2:-}
doc=$src/docs/errors.md
[ -f "$doc" ] || { echo "check_catalogue: $doc not found" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Rows: "| input | `STATUS` | `message` | `name` |"; '\|' inside a cell is an escaped bar.
python3 - "$doc" >"$tmp/doc_rows" <<'PY'
import re, sys
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if not line.startswith("|"):
        continue
    cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    if len(cells) < 4 or not re.fullmatch(r"`[a-z0-9_]+`", cells[-1]):
        continue
    status, msg = cells[-3], cells[-2]
    if msg.startswith("`") and msg.endswith("`"):
        msg = msg[1:-1]
    print("\t".join([cells[-1].strip("`"), status.strip("`"), msg]))
PY
cut -f1 "$tmp/doc_rows" | sort >"$tmp/doc_names"
grep -ohE '[A-Za-z_]*(_FAILS|_fails)\([[:space:]]*"[a-z0-9_]+"' "$src"/tests/*.c |
    sed -E 's/.*"([a-z0-9_]+)"$/\1/' | sort >"$tmp/src_names"

status=0
report() { # title, file of names
    if [ -s "$2" ]; then
        echo "check_catalogue: $1:"
        sed 's/^/  /' "$2"
        status=1
    fi
}
comm -23 <(sort -u "$tmp/doc_names") <(sort -u "$tmp/src_names") >"$tmp/no_test"
comm -13 <(sort -u "$tmp/doc_names") <(sort -u "$tmp/src_names") >"$tmp/no_row"
uniq -d "$tmp/doc_names" >"$tmp/dup_doc"
uniq -d "$tmp/src_names" >"$tmp/dup_src"
report "rows in docs/errors.md with no named check in tests/*.c" "$tmp/no_test"
report "named checks in tests/*.c with no row in docs/errors.md" "$tmp/no_row"
report "check names that are rows twice in docs/errors.md" "$tmp/dup_doc"
report "check names used twice in tests/*.c" "$tmp/dup_src"

n_rows=$(wc -l <"$tmp/doc_names")
stated=$(grep -oE 'The catalogue has [0-9]+ rows' "$doc" | grep -oE '[0-9]+' || true)
if [ "$stated" != "$n_rows" ]; then
    echo "check_catalogue: docs/errors.md says 'The catalogue has ${stated:-?} rows'; it has $n_rows"
    status=1
fi

if [ -n "$build" ]; then
    # the rows as the tests print them now
    {
        "$build/tests/test_bad_input" -v
        "$build/tests/test_gguf_bad" -v
        "$build/tests/test_misuse" "$src/examples/models/tiny-random-gpt2" \
            "$src/tests/reference/cases/tl_attn_only_1l_ln" -v
        "$build/tests/test_tokenizer" "$src/tests/tokenizer" -v
        "$build/tests/test_tokenizer_modern" "$src/tests/tokenizer" -v
        "$build/tests/test_metric" -v
        "$build/tests/test_resid" "$src/tests/reference/toolkit/resid" "$src/tests/reference/cases" -v
        "$build/tests/test_optional_hooks" "$src/tests/reference/cases" "$src/tests/reference/toolkit/optional_hooks" -v
        "$build/tests/test_patching" "$src/tests/reference/cases" "$src/tests/reference/toolkit/patching" -v
        "$build/tests/test_ablation" "$src/tests/reference/cases" -v
        "$build/tests/test_path_patching" -v "$src/tests/reference/toolkit/path_patching" "$src/tests/reference/cases"
        "$build/tests/test_diff" "$src/tests/reference/cases" -v
        "$build/tests/test_quant" "$src/tests/reference/quant" -v
        "$build/tests/test_stored" "$src/tests/reference/cases" "${TMPDIR:-/tmp}" -v
        "$build/tests/test_attribution" "$src/tests/reference/cases" "$src/tests/reference/attribution" -v
        "$build/tests/test_steering" "$src/tests/reference/cases" "$src/tests/reference/control_vectors" -v
        "$build/tests/test_probe" "$src/tests/reference/probes" "$src/examples/models/mlp-2l" -v
        "$build/tests/test_sae_splice" "$src/examples/models/mlp-2l" -v
        "$build/tests/test_sae" -v
        "$build/tests/test_features" "$src/examples/models/mlp-2l" -v
        "$build/tests/test_job_kinds" "$src/examples/models/tiny-random-gpt2" \
            "$src/tests/reference/saes/hf_tiny_random_gpt2" "$src/examples/models/mlp-2l" -v
        "$build/tests/test_dataset" "$src/tests/reference/datasets" "$src/examples/models/tiny-random-gpt2" -v
        "$build/tests/test_job" "$src/examples/models" -v
        "$build/tests/test_job_sweeps" "$src/examples/models/attn-only-2l" -v
        "$build/tests/test_vis" -v
    } 2>/dev/null | grep '^|' >"$tmp/printed" || true
    python3 - "$tmp/doc_rows" "$tmp/printed" <<'PY' || status=1
import re, sys
printed = {}
for line in open(sys.argv[2], encoding="utf-8", errors="replace"):
    cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.rstrip("\n"))[1:-1]]
    if len(cells) >= 4:
        printed[cells[-1].strip("`")] = (cells[-3].strip("`"), cells[-2][1:-1])
bad = 0
for line in open(sys.argv[1], encoding="utf-8"):
    name, status, msg = line.rstrip("\n").split("\t")
    if name not in printed:
        print(f"check_catalogue: {name}: the tests printed no row for it"); bad = 1; continue
    st, real = printed[name]
    ok = real.startswith(msg[:-1]) if msg.endswith("…") else real == msg
    if st != status or not ok:
        print(f"check_catalogue: {name}: docs say {status} '{msg}', the test prints {st} '{real}'"); bad = 1
sys.exit(bad)
PY
fi

if [ "$status" -eq 0 ]; then
    echo "check_catalogue: $n_rows rows, each a named check in tests/*.c${build:+, messages as printed}"
fi
exit "$status"
