#!/usr/bin/env bash
# test_jobs_cli.sh CIRCUITS_BIN SRC_DIR MPI: `circuits job` and `circuits merge` (docs/jobs.md
# "Running a job", "Faults and resuming"; docs/scale-out.md). MPI is "yes" when the build has the
# MPI driver (meson option mpi): then mpirun must be there and every MPI check runs.
#   - one process: the output, the same bits for --threads 1 / 2 and --batch 1 / 8 (mean; and
#     export, features, patch and ablate with shards and mpirun -np 2, 3)
#   - shards 0/3, 1/3, 2/3 in separate processes + circuits merge: the same bits
#   - mpirun -np 1, 2, 3: the same bits
#   - faults: a rank killed with SIGKILL mid-run (mpirun fails), a whole job stopped by SIGTERM
#     and by SIGKILL: the rerun resumes (resumed > 0), leaves the finished units' files alone
#     (inode and mtime), computes only the rest, and gives the same bits
#   - refusals: another --unit-rows or another model in the same directory (CIRCUITS_E_PROVENANCE),
#     merging directories of different jobs, bad command lines
set -u

if [ $# -ne 3 ]; then
    echo "usage: $0 CIRCUITS_BIN SRC_DIR yes|no" >&2
    exit 2
fi
bin=$1
src=$2
have_mpi=$3
M=$src/examples/models/tiny-random-gpt2
M2=$src/examples/models/mlp-2l
tmp=$(mktemp -d)
bgpid=
trap '[ -n "$bgpid" ] && kill -9 "$bgpid" 2>/dev/null; rm -rf "$tmp"' EXIT
export CIRCUITS_PROGRESS=never
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -x CIRCUITS_PROGRESS)
# A sanitizer build (tests/run.sh's build-asan): Open MPI's own allocations, made by components it
# dlopens and unloads, are reported as leaks in "<unknown module>" that no suppression can name;
# the ranks run with leak detection off (the single-process runs above keep it), the rest of
# AddressSanitizer and UBSan on.
if [ -n "${ASAN_OPTIONS:-}" ]; then MPIRUN+=(-x "ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0"); fi
if [ -n "${UBSAN_OPTIONS:-}" ]; then MPIRUN+=(-x UBSAN_OPTIONS); fi

checks=0
fails=0
fail() {
    fails=$((fails + 1))
    echo "FAIL: $*"
    echo "  stdout: $(head -c 600 "$tmp/out" 2>/dev/null)"
    echo "  stderr: $(head -c 600 "$tmp/err" 2>/dev/null)"
}
check() { # check CONDITION-STATUS MESSAGE
    checks=$((checks + 1))
    if [ "$1" -ne 0 ]; then fail "$2"; fi
}

# run ARGS...: circuits ARGS, status in $code
run() {
    "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
    code=$?
}
# ok ARGS...: must succeed
ok() {
    run "$@"
    checks=$((checks + 1))
    if [ $code -ne 0 ]; then fail "circuits $* -> $code (want 0)"; fi
}
# err CODE NEEDLE ARGS...: must exit with CODE and NEEDLE (grep -i) on stderr
err() {
    local want=$1 needle=$2
    shift 2
    run "$@"
    checks=$((checks + 1))
    if [ $code -ne "$want" ]; then fail "circuits $* -> $code, want $want";
    elif ! grep -qiF -- "$needle" "$tmp/err"; then fail "circuits $*: stderr lacks '$needle'"; fi
}
# same A B WHAT: the two outputs have the same bytes
same() {
    checks=$((checks + 1))
    if ! cmp -s "$1" "$2"; then fail "$3: $2 differs from $1"; fi
}
# resumed: the K of "resumed: K of N units already done" in $tmp/out
resumed() { sed -n 's/.*resumed: \([0-9]*\) of.*/\1/p' "$tmp/out" | head -n 1; }
computed() { sed -n 's/.*computed: \([0-9]*\) units.*/\1/p' "$tmp/out" | head -n 1; }
# unit files of a job directory with inode and mtime, one a line
stamps() { (cd "$1/units" && for f in u*.safetensors; do [ -e "$f" ] && stat -c '%n %i %Y.%y' "$f"; done) | sort; }
n_units_in() { ls "$1/units" 2>/dev/null | grep -c '^u.*\.safetensors$'; }

# ---- datasets: token ids (int32 .npy) written with Python's standard library ----
python3 - "$tmp" <<'EOF'
import struct, sys
def npy(path, rows, cols, values):
    head = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
    head += " " * (63 - (10 + len(head)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode() + struct.pack("<%di" % len(values), *values))
x = 12345
def rnd(n):
    global x
    out = []
    for _ in range(n):
        x = (1103515245 * x + 12345) % 2**31
        out.append(x % 1000)
    return out
npy(sys.argv[1] + "/small.npy", 40, 16, [v % 256 for v in rnd(40 * 16)])   # 10 units of 4 rows (mlp-2l: 256 ids)
npy(sys.argv[1] + "/corrupted.npy", 40, 16, [v % 256 for v in rnd(40 * 16)])
npy(sys.argv[1] + "/answer.npy", 40, 1, [v % 256 for v in rnd(40)])
npy(sys.argv[1] + "/wrong.npy", 40, 1, [v % 256 for v in rnd(40)])
npy(sys.argv[1] + "/big.npy", 64, 256, rnd(64 * 256))   # 64 units of 1 row: a run of seconds
EOF
check $? "writing the datasets"
S=$tmp/small.npy
B=$tmp/big.npy
HOOKS='blocks.*.hook_resid_post,hook_embed,blocks.0.attn.hook_pattern'

# ---- one process ----
ok job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --out "$tmp/ref.st"
check $(grep -q "resumed: 0 of 10 units already done" "$tmp/out"; echo $?) "first run: resumed 0 of 10"
check $(grep -q "computed: 10 units" "$tmp/out"; echo $?) "first run: computed 10"
check $([ -s "$tmp/ref.st" ]; echo $?) "the output exists"
check $([ "$(n_units_in "$tmp/ref.st.job")" -eq 10 ]; echo $?) "10 unit files in OUT.job"
ok job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --out "$tmp/t1.st" --threads 1 --batch 1
same "$tmp/ref.st" "$tmp/t1.st" "--threads 1 --batch 1"
ok job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --out "$tmp/t2.st" --threads 2 --batch 8
same "$tmp/ref.st" "$tmp/t2.st" "--threads 2 --batch 8"
ok job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --out "$tmp/t3.st" --threads 2 --batch 3
same "$tmp/ref.st" "$tmp/t3.st" "--threads 2 --batch 3"
# rerun of a finished job: everything resumed, nothing computed, the same bits
ok job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --out "$tmp/ref.st"
check $(grep -q "resumed: 10 of 10" "$tmp/out"; echo $?) "rerun: resumed 10 of 10"
check $([ "$(computed)" = 0 ]; echo $?) "rerun: computed 0"
# --progress on a non-terminal: plain lines with units, rate
CIRCUITS_PROGRESS= "$bin" job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --out "$tmp/p2.st" --progress >"$tmp/out" 2>"$tmp/err"
check $(grep -q "job: 10/10 units, .*/s" "$tmp/err"; echo $?) "--progress prints plain lines of units and rate"

# ---- the other kinds: --threads / --batch, shards + merge (and mpirun below) give the same bits ----
SAE=$src/tests/reference/saes/hf_tiny_random_gpt2/standard
COLS=(--answer "$tmp/answer.npy" --wrong "$tmp/wrong.npy")
KIND_NAMES=(export features patch ablate)
KIND_ARGS=("export --hooks blocks.*.hook_resid_post,blocks.1.attn.hook_z"
           "features --sae $SAE --top-k 3"
           "patch --corrupted $tmp/corrupted.npy --patch resid_pre"
           "ablate --metric logit_diff")
# same_out A B WHAT: files with cmp, directories (export) file by file
same_out() {
    checks=$((checks + 1))
    if [ -d "$1" ]; then
        if ! diff -r -q "$1" "$2" >/dev/null || [ "$(ls "$1" | wc -l)" -lt 2 ]; then fail "$3: $2 differs from $1"; fi
    elif ! cmp -s "$1" "$2"; then fail "$3: $2 differs from $1"; fi
}
for k in 0 1 2 3; do
    name=${KIND_NAMES[$k]}
    # shellcheck disable=SC2206
    ka=(${KIND_ARGS[$k]})
    ok job "${ka[@]}" "$M" "$S" "${COLS[@]}" --unit-rows 4 --out "$tmp/$name.ref"
    ok job "${ka[@]}" "$M" "$S" "${COLS[@]}" --unit-rows 4 --out "$tmp/$name.t1" --threads 1 --batch 1
    same_out "$tmp/$name.ref" "$tmp/$name.t1" "$name --threads 1 --batch 1 (against --threads 2 --batch 8)"
    for i in 0 1; do ok job "${ka[@]}" "$M" "$S" "${COLS[@]}" --unit-rows 4 --shard $i/2 --dir "$tmp/$name.sh$i"; done
    ok merge "$tmp/$name.merged" "$tmp/$name.sh1" "$tmp/$name.sh0"
    same_out "$tmp/$name.ref" "$tmp/$name.merged" "$name shards 0/2 1/2 + merge"
done

# ---- a text dataset (.jsonl, --column, --seq-len: tokenized with the model's tokenizer) ----
for i in $(seq 1 40); do echo "{\"body\": \"document $i: the quick brown fox $((i * 7)) jumps over the lazy dog\"}"; done >"$tmp/text.jsonl"
TEXT=(mean "$M" "$tmp/text.jsonl" --column body --seq-len 12 --hooks hook_embed,blocks.0.hook_resid_post --unit-rows 3)
ok job "${TEXT[@]}" --out "$tmp/text.ref"
check $(grep -q "resumed: 0 of" "$tmp/out" && [ -s "$tmp/text.ref" ]; echo $?) "text dataset: a job over a .jsonl"
for i in 0 1; do ok job "${TEXT[@]}" --shard $i/2 --dir "$tmp/text.sh$i"; done
ok merge "$tmp/text.merged" "$tmp/text.sh0" "$tmp/text.sh1"
same "$tmp/text.ref" "$tmp/text.merged" "text dataset: shards + merge"
err 1 "column" job mean "$M" "$tmp/text.jsonl" --column nope --seq-len 12 --hooks hook_embed --out "$tmp/x.st"

# ---- shards in separate processes, then merge ----
for i in 0 1 2; do
    ok job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --shard $i/3 --dir "$tmp/sh$i"
    check $([ ! -e "$tmp/sh$i.st" ]; echo $?) "a shard writes no output"
done
check $([ "$(n_units_in "$tmp/sh0")" -eq 4 ] && [ "$(n_units_in "$tmp/sh1")" -eq 3 ] && [ "$(n_units_in "$tmp/sh2")" -eq 3 ]; echo $?) \
    "shards hold 4, 3, 3 units"
ok merge "$tmp/merged.st" "$tmp/sh0" "$tmp/sh1" "$tmp/sh2"
same "$tmp/ref.st" "$tmp/merged.st" "shards 0/3 1/3 2/3 + merge"
ok merge "$tmp/merged2.st" "$tmp/sh2" "$tmp/sh0" "$tmp/sh1"
same "$tmp/ref.st" "$tmp/merged2.st" "merge in another order of directories"
err 1 "unit" merge "$tmp/m3.st" "$tmp/sh0" "$tmp/sh1"
check $([ ! -e "$tmp/m3.st" ]; echo $?) "a refused merge leaves no output"
# the default directory of a shard: OUT.job.I-of-N
ok job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --shard 1/2 --out "$tmp/d.st"
check $([ -d "$tmp/d.st.job.1-of-2" ]; echo $?) "--shard's default directory OUT.job.I-of-N"

# ---- refusals ----
err 1 "provenance" job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 8 --out "$tmp/x.st" --dir "$tmp/ref.st.job"
err 1 "provenance" job mean "$M2" "$S" --hooks "blocks.*.hook_resid_post" --unit-rows 4 --out "$tmp/x.st" --dir "$tmp/ref.st.job"
err 1 "provenance" job mean "$M" "$S" --hooks "hook_embed" --unit-rows 4 --out "$tmp/x.st" --dir "$tmp/ref.st.job"
check $([ ! -e "$tmp/x.st" ]; echo $?) "a refused job writes no output"
ok job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 8 --shard 0/3 --dir "$tmp/other"
err 1 "provenance" merge "$tmp/x.st" "$tmp/sh0" "$tmp/other" "$tmp/sh1" "$tmp/sh2"
err 2 "needs --hooks" job mean "$M" "$S" --out "$tmp/x.st"
err 2 "no such kind 'sweep'" job sweep "$M" "$S" --out "$tmp/x.st"
err 2 "--shard" job mean "$M" "$S" --hooks "$HOOKS" --out "$tmp/x.st" --shard 3/3
err 2 "--shard" job mean "$M" "$S" --hooks "$HOOKS" --out "$tmp/x.st" --shard 1
err 2 "needs --out" job mean "$M" "$S" --hooks "$HOOKS"
err 2 "--metric is for" job mean "$M" "$S" --hooks "$HOOKS" --out "$tmp/x.st" --metric loss
err 2 "--ablation mean needs --means" job ablate "$M" "$S" --out "$tmp/x.st" --ablation mean
err 2 "features needs --sae" job features "$M" "$S" --out "$tmp/x.st"
err 2 "needs OUT and at least one JOBDIR" merge "$tmp/x.st"
err 1 "cannot open the dataset" job mean "$M" "$tmp/nothing.npy" --hooks "$HOOKS" --out "$tmp/x.st"
err 1 "cannot load model" job mean "$tmp/nomodel" "$S" --hooks "$HOOKS" --out "$tmp/x.st"

# ---- a whole single-process job stopped (SIGTERM: clean stop; SIGKILL) and resumed ----
BIGARGS=(mean "$M" "$B" --hooks 'blocks.*.hook_resid_post,blocks.*.attn.hook_pattern' --unit-rows 1 --threads 1)
ok job "${BIGARGS[@]}" --out "$tmp/bigref.st" --dir "$tmp/bigref.job"
# wait_units DIR N PID: until DIR holds N unit files (or PID ended); 0 if it got there
wait_units() {
    local k=0
    while [ "$k" -lt 600 ]; do
        [ "$(n_units_in "$1")" -ge "$2" ] && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.02
        k=$((k + 1))
    done
    return 1
}
for sig in TERM KILL; do
    d=$tmp/stop$sig.job
    "$bin" job "${BIGARGS[@]}" --out "$tmp/stop$sig.st" --dir "$d" >"$tmp/out" 2>"$tmp/err" &
    bgpid=$!
    wait_units "$d" 5 $bgpid
    check $? "SIG$sig: the job made some units before the signal"
    kill -$sig $bgpid
    wait $bgpid 2>/dev/null
    code=$?
    bgpid=
    check $([ $code -ne 0 ]; echo $?) "SIG$sig: the stopped job fails (status $code)"
    if [ $sig = TERM ]; then
        check $(grep -q "stopped by a signal" "$tmp/err"; echo $?) "SIGTERM: the stop is reported"
    fi
    check $([ ! -e "$tmp/stop$sig.st" ]; echo $?) "SIG$sig: no output from a stopped job"
    stamps "$d" >"$tmp/before"
    nb=$(wc -l <"$tmp/before")
    ok job "${BIGARGS[@]}" --out "$tmp/stop$sig.st" --dir "$d"
    r=$(resumed)
    echo "SIG$sig: $nb unit files after the signal; the rerun: $(grep -E 'resumed|computed' "$tmp/out" | tr '\n' ' ')"
    check $([ -n "$r" ] && [ "$r" -gt 0 ] && [ "$r" -eq "$nb" ]; echo $?) "SIG$sig: resumed $r units (the $nb unit files there)"
    check $([ "$(computed)" -eq $((64 - nb)) ]; echo $?) "SIG$sig: computed only the $((64 - nb)) missing units"
    stamps "$d" | grep -F -x -f "$tmp/before" >"$tmp/after"
    check $(cmp -s "$tmp/before" "$tmp/after"; echo $?) "SIG$sig: the finished units' files were not rewritten"
    same "$tmp/bigref.st" "$tmp/stop$sig.st" "SIG$sig: resumed output"
done

# ---- MPI ----
if [ "$have_mpi" != yes ]; then
    echo "######## SKIPPED: the MPI checks (this circuits was built without MPI: meson option mpi;"
    echo "######## install Open MPI (libopenmpi-dev) and reconfigure). CI builds with it."
    echo "$checks checks, $fails failures (MPI SKIPPED)"
    [ $fails -eq 0 ] || exit 1
    exit 77
fi
if ! command -v mpirun >/dev/null; then
    echo "FAIL: the build has MPI but mpirun is not on PATH"
    exit 1
fi
for np in 1 2 3; do
    "${MPIRUN[@]}" -np $np "$bin" job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --out "$tmp/mpi$np.st" >"$tmp/out" 2>"$tmp/err"
    check $? "mpirun -np $np"
    same "$tmp/ref.st" "$tmp/mpi$np.st" "mpirun -np $np"
    check $(grep -q "computed: 10 units on $np ranks" "$tmp/out"; echo $?) "mpirun -np $np: rank 0 reports 10 units on $np ranks"
    check $([ "$(grep -c "resumed:" "$tmp/out")" -eq 1 ]; echo $?) "mpirun -np $np: only rank 0 prints"
done
for k in 0 1 2 3; do
    name=${KIND_NAMES[$k]}
    # shellcheck disable=SC2206
    ka=(${KIND_ARGS[$k]})
    for np in 2 3; do
        "${MPIRUN[@]}" -np $np "$bin" job "${ka[@]}" "$M" "$S" "${COLS[@]}" --unit-rows 4 --out "$tmp/$name.mpi$np" >"$tmp/out" 2>"$tmp/err"
        check $? "$name: mpirun -np $np"
        same_out "$tmp/$name.ref" "$tmp/$name.mpi$np" "$name: mpirun -np $np"
    done
done
"${MPIRUN[@]}" -np 2 "$bin" job "${TEXT[@]}" --out "$tmp/text.mpi2" >"$tmp/out" 2>"$tmp/err"
check $? "text dataset: mpirun -np 2"
same "$tmp/text.ref" "$tmp/text.mpi2" "text dataset: mpirun -np 2"
# --threads per rank and --batch change no bit
"${MPIRUN[@]}" -np 2 "$bin" job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 4 --threads 1 --batch 1 --out "$tmp/mpib.st" >"$tmp/out" 2>"$tmp/err"
check $? "mpirun -np 2 --threads 1 --batch 1"
same "$tmp/ref.st" "$tmp/mpib.st" "mpirun -np 2 --threads 1 --batch 1"
# an error on every rank: reported with the rank, status 1
"${MPIRUN[@]}" -np 2 "$bin" job mean "$M" "$tmp/nothing.npy" --hooks "$HOOKS" --out "$tmp/x.st" >"$tmp/out" 2>"$tmp/err"
code=$?
check $([ $code -ne 0 ] && grep -q "rank 1 of 2: cannot open the dataset" "$tmp/err"; echo $?) "mpirun: a rank's error names the rank"
# provenance refusal under MPI (rank 0's directory)
"${MPIRUN[@]}" -np 2 "$bin" job mean "$M" "$S" --hooks "$HOOKS" --unit-rows 8 --out "$tmp/x.st" --dir "$tmp/ref.st.job" >"$tmp/out" 2>"$tmp/err"
code=$?
check $([ $code -ne 0 ] && grep -q "rank 0 of 2: cannot start the job.*PROVENANCE" "$tmp/err"; echo $?) "mpirun: another --unit-rows in the directory is refused"
"${MPIRUN[@]}" -np 2 "$bin" job mean "$M" "$S" --hooks "$HOOKS" --out "$tmp/x.st" --shard 0/2 >"$tmp/out" 2>"$tmp/err"
code=$?
check $([ $code -ne 0 ] && grep -q "leave it out" "$tmp/err"; echo $?) "mpirun with --shard is a usage error"

# a rank killed with SIGKILL mid-run: mpirun fails; the rerun resumes and gives the same bits
d=$tmp/mpikill.job
"${MPIRUN[@]}" -np 3 "$bin" job "${BIGARGS[@]}" --out "$tmp/mpikill.st" --dir "$d" >"$tmp/out" 2>"$tmp/err" &
bgpid=$!
wait_units "$d" 6 $bgpid
check $? "mpirun -np 3: some units made before the kill"
victim=
for p in $(pgrep -f -- "--dir $d" || true); do
    [ "$p" = "$bgpid" ] && continue
    if tr '\0' '\n' </proc/"$p"/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then victim=$p; fi
done
check $([ -n "$victim" ]; echo $?) "found rank 1's process"
[ -n "$victim" ] && kill -KILL "$victim"
wait $bgpid
code=$?
bgpid=
check $([ $code -ne 0 ]; echo $?) "mpirun fails when a rank is killed (status $code)"
check $([ ! -e "$tmp/mpikill.st" ]; echo $?) "no output from the killed job"
stamps "$d" >"$tmp/before"
nb=$(wc -l <"$tmp/before")
check $([ "$nb" -lt 64 ]; echo $?) "the kill came before the end ($nb of 64 units there)"
"${MPIRUN[@]}" -np 2 "$bin" job "${BIGARGS[@]}" --out "$tmp/mpikill.st" --dir "$d" >"$tmp/out" 2>"$tmp/err"
check $? "mpirun -np 2: the rerun after the kill"
r=$(resumed)
echo "MPI kill: $nb unit files after rank 1 was killed; the rerun: $(grep -E 'resumed|computed' "$tmp/out" | tr '\n' ' ')"
check $([ -n "$r" ] && [ "$r" -gt 0 ] && [ "$r" -eq "$nb" ]; echo $?) "MPI kill: resumed $r units (the $nb unit files there)"
check $(grep -q "computed: $((64 - nb)) units on 2 ranks" "$tmp/out"; echo $?) "MPI kill: computed only the $((64 - nb)) missing units"
stamps "$d" | grep -F -x -f "$tmp/before" >"$tmp/after"
check $(cmp -s "$tmp/before" "$tmp/after"; echo $?) "MPI kill: the finished units' files were not rewritten"
same "$tmp/bigref.st" "$tmp/mpikill.st" "MPI kill: resumed output"

echo "$checks checks, $fails failures"
[ $fails -eq 0 ]
