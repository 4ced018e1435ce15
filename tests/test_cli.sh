#!/usr/bin/env bash
# test_cli.sh CIRCUITS_BIN SRC_DIR: drives the `circuits` tool as a user would (docs/cli.md):
# every subcommand on the bundled model, --help everywhere, --json output parsed by Python's
# json module and checked, the files `cache` writes read back, the progress bar, and every
# bad-argument path with its exit status (2 usage, 1 failure) and message.
# CIRCUITS_CLI_WRAPPER (e.g. "valgrind -q --error-exitcode=99") runs every invocation under a tool.
set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 CIRCUITS_BIN SRC_DIR" >&2
    exit 2
fi
bin=$1
src=$2
M=$src/examples/models/tiny-random-gpt2           # has a tokenizer
R=$src/tests/reference/cases/tl_attn_only_2l_none # no tokenizer, n_ctx 32, d_vocab 50
wrap=${CIRCUITS_CLI_WRAPPER:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export CIRCUITS_PROGRESS=never

checks=0
fails=0
fail() {
    fails=$((fails + 1))
    echo "FAIL: $*"
    echo "  stdout: $(head -c 400 "$tmp/out")"
    echo "  stderr: $(head -c 400 "$tmp/err")"
}

# run ARGS...: runs circuits, status in $code, output in $tmp/out and $tmp/err
run() {
    # shellcheck disable=SC2086
    $wrap "$bin" "$@" >"$tmp/out" 2>"$tmp/err"
    code=$?
}

# ok ARGS...: must succeed with something on stdout and nothing on stderr
ok() {
    run "$@"
    checks=$((checks + 1))
    if [ $code -ne 0 ] || [ ! -s "$tmp/out" ] || [ -s "$tmp/err" ]; then fail "circuits $* -> $code (want 0, quiet stderr)"; fi
}

# err CODE NEEDLE ARGS...: must exit with CODE, NEEDLE on stderr, nothing on stdout
err() {
    local want=$1 needle=$2
    shift 2
    run "$@"
    checks=$((checks + 1))
    if [ $code -ne "$want" ]; then
        fail "circuits $* -> $code, want $want"
    elif ! grep -qF -- "$needle" "$tmp/err"; then
        fail "circuits $*: stderr lacks '$needle'"
    elif [ -s "$tmp/out" ]; then
        fail "circuits $*: a failure printed to stdout"
    elif [ "$want" -eq 2 ] && ! grep -q -- "--help" "$tmp/err"; then
        fail "circuits $*: a usage error without a hint to --help"
    fi
}

# py 'PYTHON' ARGS...: runs circuits (must succeed), then PYTHON with d = json.load(stdout)
py() {
    local code_py=$1
    shift
    ok "$@"
    checks=$((checks + 1))
    if ! python3 -c "import json, sys
d = json.load(open(sys.argv[1]))
$code_py" "$tmp/out" 2>"$tmp/pyerr"; then
        fail "circuits $*: JSON check failed: $(tail -n 3 "$tmp/pyerr")"
    fi
}

# ---- help and top level ----
for cmd in info run cache heads compose generate diff steer-vector probe-fit job merge attn lens patch; do
    ok "$cmd" --help
    grep -q "usage: circuits $cmd" "$tmp/out" || fail "$cmd --help lacks its usage line"
    ok "$cmd" -h
    ok help "$cmd"
    grep -q "usage: circuits $cmd" "$tmp/out" || fail "help $cmd"
    ok "$cmd" "$M" --help
done
ok --help
grep -q "generate" "$tmp/out" || fail "--help lists the commands"
ok help
ok --version
grep -q "libcircuits" "$tmp/out" || fail "--version"
run
checks=$((checks + 1))
[ $code -eq 2 ] && grep -q "usage: circuits COMMAND" "$tmp/err" || fail "no arguments: usage on stderr, status 2"
err 2 "unknown command 'bogus'" bogus
err 2 "unknown option '--bogus'" --bogus
err 2 "no command 'bogus'" help bogus

# ---- info ----
ok info "$M"
grep -q "parameters 144264" "$tmp/out" || fail "info: parameter count"
grep -q "processing fold_ln center_writing_weights center_unembed fold_value_biases" "$tmp/out" || fail "info: processing"
grep -q "blocks.4.hook_resid_post  *\[1, 1, 32\]" "$tmp/out" || fail "info: hook shapes"
ok info "$M" --no-processing --pos 7 --batch 2
grep -q "processing none" "$tmp/out" || fail "info --no-processing"
grep -q "blocks.0.attn.hook_pattern  *\[2, 4, 7, 7\]" "$tmp/out" || fail "info --pos 7 --batch 2 shapes"
# a GGUF file is a MODEL too: the model of the directory it was converted from (whose losses and
# top-k logits `run` prints; the file has its own minimal vocabulary, the directory none)
G=$src/tests/reference/gguf/hf_tiny_random_gpt2.f32.gguf
ok info "$G"
grep -q "parameters 144264" "$tmp/out" || fail "info on a GGUF file: parameter count"
ok run "$G" --tokens 1,2,3 --top-k 3 --no-bos
sed -E "s/ *'.*'$//" "$tmp/out" >"$tmp/gguf_run"
ok run "$src/tests/reference/cases/hf_tiny_random_gpt2" --tokens 1,2,3 --top-k 3 --no-bos
sed -E "s/ *'.*'$//" "$tmp/out" | cmp -s - "$tmp/gguf_run" || fail "run on a GGUF file differs from its directory"
py '
assert d["config"]["n_layers"] == 5 and d["config"]["d_model"] == 32 and d["config"]["n_heads"] == 4
assert d["config"]["d_vocab"] == 1000 and d["config"]["n_ctx"] == 512 and d["format"] == "hf_gpt2"
assert d["n_params"] == 144264 and d["processing"][0] == "fold_ln"
assert d["tokenizer"]["vocab_size"] == 1000 and d["tokenizer"]["eos_id"] == 0
hp = {h["name"]: h["shape"] for h in d["hook_points"]}
assert len(hp) == 91, len(hp)
assert hp["blocks.2.attn.hook_q"] == [3, 5, 4, 8] and hp["blocks.2.attn.hook_pattern"] == [3, 4, 5, 5]
assert hp["unembed.hook_out"] == [3, 5, 1000]
' info "$M" --json --pos=5 --batch 3
py 'assert any(h["name"] == "blocks.0.attn.hook_result" for h in d["hook_points"])
assert d["tokenizer"] is None and d["format"] == "transformerlens" and d["processing"] == []' \
    info "$R" --attn-result --json --no-processing
err 2 "missing MODEL" info
err 2 "unknown option '--bogus'" info "$M" --bogus
err 2 "option '--pos' needs a value" info "$M" --pos
err 2 "--pos: 'abc' is not an integer" info "$M" --pos abc
err 2 "--pos: '3x' is not an integer" info "$M" --pos=3x
err 2 "--pos: 0 is out of range" info "$M" --pos 0
err 2 "--batch: '' is not an integer" info "$M" --batch=
err 2 "unexpected argument 'extra'" info "$M" extra
err 2 "option '--json' takes no value" info "$M" --json=1
err 1 "cannot load model '$tmp/none'" info "$tmp/none"
mkdir -p "$tmp/broken" && echo '{' >"$tmp/broken/config.json"
err 1 "cannot load model '$tmp/broken'" info "$tmp/broken"

# ---- run ----
ok run "$M" --prompt "Hello world"
grep -q "mean loss" "$tmp/out" && grep -q "top 5 next tokens" "$tmp/out" || fail "run: text output"
py '
t = d["tokens"]
assert t[0]["id"] == 0 and t[0]["loss"] is None and t[0]["text"] == "<|endoftext|>"   # BOS first
assert "".join(x["text"] for x in t[1:]) == "Hello world"
assert all(x["loss"] > 0 for x in t[1:])
assert abs(d["loss"] - sum(x["loss"] for x in t[1:]) / (len(t) - 1)) < 1e-4
p = [x["prob"] for x in d["top_k"]]
assert len(p) == 3 and p == sorted(p, reverse=True) and 0 < sum(p) <= 1
' run "$M" --prompt "Hello world" --top-k 3 --json
py 'assert [x["id"] for x in d["tokens"]] == [40, 416, 79] and d["tokens"][0]["loss"] is None' \
    run "$M" --prompt "Hello" --no-bos --json
py 'assert [x["id"] for x in d["tokens"]] == [1, 2, 3] and d["tokens"][0]["text"] is None and len(d["top_k"]) == 50' \
    run "$R" --tokens "1, 2,3" --top-k 100 --json
py 'assert d["loss"] is None and len(d["tokens"]) == 1' run "$R" --tokens 7 --json
err 2 "needs --prompt TEXT or --tokens IDS" run "$M"
err 2 "missing MODEL" run --prompt hi
err 2 "give --prompt or --tokens, not both" run "$M" --prompt hi --tokens 1
err 2 "option '--prompt' needs a value" run "$M" --prompt
err 2 "--prompt: the text is empty" run "$M" --prompt ""
err 2 "--tokens: '1,x' is not a list of token ids" run "$M" --tokens 1,x
err 2 "--tokens: '-3' is not a list of token ids" run "$M" --tokens=-3
err 2 "--tokens: no token ids given" run "$M" --tokens ,
err 2 "--top-k: 0 is out of range" run "$M" --prompt hi --top-k 0
err 2 "unknown option '--topk'" run "$M" --prompt hi --topk 3
err 1 "has no tokenizer" run "$R" --prompt hi
err 1 "outside the vocabulary" run "$M" --tokens 5000
err 1 "exceed the model's n_ctx" run "$R" --tokens "$(seq -s, 1 33 | sed 's/[0-9][0-9]*/1/g')"
err 1 "cannot load model" run "$tmp/none" --prompt hi

# ---- cache ----
ok cache "$M" --prompt "Hi there" --names pattern0 --out "$tmp/p.npy"
grep -q "blocks.0.attn.hook_pattern" "$tmp/out" || fail "cache: summary"
checks=$((checks + 1))
python3 - "$tmp/p.npy" <<'EOF' || fail "cache: the .npy file"
import ast, struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x93NUMPY\x01\x00"
n = struct.unpack("<H", b[8:10])[0]
assert (10 + n) % 64 == 0
h = ast.literal_eval(b[10:10 + n].decode("latin1"))
assert h == {"descr": "<f4", "fortran_order": False, "shape": (1, 4, 4, 4)}, h
x = struct.unpack("<64f", b[10 + n:])
assert len(b) == 10 + n + 256
for row in range(16):                        # [batch, head, q, k]: rows sum to 1, causal
    r = x[4 * row:4 * row + 4]
    assert abs(sum(r) - 1) < 1e-5 and all(r[k] == 0 for k in range(row % 4 + 1, 4))
EOF
ok cache "$M" --tokens 0,40,73 --names pattern0 'blocks.*.hook_resid_post' --names embed,unembed.hook_out --out "$tmp/a.safetensors" --no-processing
checks=$((checks + 1))
python3 - "$tmp/a.safetensors" <<'EOF' || fail "cache: the .safetensors file"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
assert n % 8 == 0
h = json.loads(b[8:8 + n])
meta = h.pop("__metadata__")
assert meta["tokens"] == "0,40,73" and meta["model"].endswith("tiny-random-gpt2"), meta
want = {"blocks.0.attn.hook_pattern": [1, 4, 3, 3], "hook_embed": [1, 3, 32], "unembed.hook_out": [1, 3, 1000]}
want.update({f"blocks.{l}.hook_resid_post": [1, 3, 32] for l in range(5)})
assert {k: v["shape"] for k, v in h.items()} == want, h
end = 0
for k, v in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"]):
    a, z = v["data_offsets"]
    assert v["dtype"] == "F32" and a == end and z - a == 4 * eval("*".join(map(str, v["shape"])))
    end = z
assert len(b) == 8 + n + end
EOF
err 2 "needs --names PATTERN" cache "$M" --prompt hi --out "$tmp/x.npy"
err 2 "needs --out FILE" cache "$M" --prompt hi --names pattern0
err 2 "option '--names' needs a value" cache "$M" --prompt hi --out "$tmp/x.npy" --names
err 2 "must end in .npy (one tensor) or .safetensors" cache "$M" --prompt hi --names pattern0 --out "$tmp/x.txt"
err 2 "needs --prompt TEXT or --tokens IDS" cache "$M" --names pattern0 --out "$tmp/x.npy"
err 2 "unknown option '--name'" cache "$M" --prompt hi --name pattern0 --out "$tmp/x.npy"
err 1 "a .npy file holds one tensor, but the names select 91" cache "$M" --prompt hi --names '*' --out "$tmp/x.npy"
err 1 "no hook point named 'nonsense'" cache "$M" --prompt hi --names nonsense --out "$tmp/x.npy"
err 1 "set use_attn_result" cache "$M" --prompt hi --names result0 --out "$tmp/x.npy"
err 1 "cannot create '$tmp/no/dir/x.npy'" cache "$M" --prompt hi --names pattern0 --out "$tmp/no/dir/x.npy"
err 1 "has no tokenizer" cache "$R" --prompt hi --names pattern0 --out "$tmp/x.npy"
checks=$((checks + 1))
[ ! -e "$tmp/x.npy" ] || fail "a failed cache left a file behind"

# ---- heads ----
ok heads "$M"
grep -q "layer  head      prev  induction  duplicate   copying" "$tmp/out" || fail "heads: table header"
[ "$(grep -cE '^ +[0-9]+ +[0-9]+ ' "$tmp/out")" -eq 20 ] || fail "heads: 20 rows"
py '
h = d["heads"]
assert len(h) == 20 and d["seq_len"] == 10 and d["batch"] == 2 and d["bos"] is True and d["copying"] == "full_ov"
for x in h:
    assert 0 <= x["prev"] <= 1 and 0 <= x["induction"] <= 1 and 0 <= x["duplicate"] <= 1 and -1 <= x["copying"] <= 1
ind = [x["induction"] for x in h]
assert ind == sorted(ind, reverse=True)
assert d["loss_first"] > 0 and d["loss_repeat"] > 0
' heads "$M" --seq-len 10 --batch 2 --sort induction --json
py 'assert len(d["heads"]) == 8 and d["bos"] is False and d["seq_len"] == 16' heads "$R" --json
err 2 "--sort: 'foo' is not a column" heads "$M" --sort foo
err 2 "--seq-len: 1 is out of range" heads "$M" --seq-len 1
err 2 "--batch: 'two' is not an integer" heads "$M" --batch two
err 2 "--seed: -1 is out of range" heads "$M" --seed -1
err 1 "--seq-len 300: the repeated sequence needs 601 positions, but the model's n_ctx is 512" heads "$M" --seq-len 300
err 1 "cannot load model" heads "$tmp/none"

# ---- compose ----
ok compose "$M" --top 4 --png "$tmp/c.png"
grep -q "K-composition, top 4 of 160 pairs" "$tmp/out" || fail "compose: table"
grep -q "random baseline" "$tmp/out" || fail "compose: baseline"
for m in q k v; do
    checks=$((checks + 1))
    head -c 8 "$tmp/c-$m.png" | od -An -c | grep -q "P   N   G" || fail "compose: $tmp/c-$m.png is not a PNG"
done
py '
assert d["n_layers"] == 5 and set(d["modes"]) == {"k"} and len(d["modes"]["k"]["top"]) == 10
s = d["modes"]["k"]["scores"]
assert len(s) == 400 and d["modes"]["k"]["shape"] == [5, 4, 5, 4]
top = d["modes"]["k"]["top"][0]
i = ((top["writer"]["layer"] * 4 + top["writer"]["head"]) * 5 + top["reader"]["layer"]) * 4 + top["reader"]["head"]
assert abs(s[i] - top["score"]) < 1e-6 and top["score"] == max(s)
assert d["baseline"]["samples"] == 0 and d["baseline"]["mean"] is None and d["png"] == [sys.argv[1].rsplit("/", 1)[0] + "/k.png"]
' compose "$M" --mode k --baseline-samples 0 --png "$tmp/k.png" --json
py 'assert set(d["modes"]) == {"q", "k", "v"} and all(any(x > 0 for x in m["scores"]) for m in d["modes"].values())' \
    compose "$R" --json
err 2 "--mode: 'x' is not q, k, v or all" compose "$M" --mode x
err 2 "--top: 0 is out of range" compose "$M" --top 0
err 2 "option '--png' needs a value" compose "$M" --png
err 1 "cannot write the heatmap" compose "$M" --mode q --png "$tmp/no/dir/c.png"

# ---- generate ----
ok generate "$M" --prompt "Hello world" --max-new 12 --seed 5
checks=$((checks + 1))
case "$(head -n 1 "$tmp/out")" in "Hello world"*) ;; *) fail "generate: the prompt starts the output" ;; esac
py '
s = d["samples"]
assert len(s) == 1 and len(s[0]["tokens"]) == 10 and d["prompt_tokens"][0] == 0 and d["prompt"] == "Hello world"
assert d["options"]["do_sample"] is False and d["options"]["use_kv_cache"] is True
' generate "$M" --prompt "Hello world" --max-new 10 --greedy --no-eos --json
cp "$tmp/out" "$tmp/greedy.json"
py '
a = json.load(open(sys.argv[1].rsplit("/", 1)[0] + "/greedy.json"))
assert d["samples"][0]["tokens"] == a["samples"][0]["tokens"], "cache and no cache differ"
assert d["options"]["use_kv_cache"] is False
' generate "$M" --prompt "Hello world" --max-new 10 --greedy --no-eos --no-cache --json
py '
s = d["samples"]
assert len(s) == 3 and all(len(x["tokens"]) <= 8 for x in s)
assert len({tuple(x["tokens"]) for x in s}) > 1, "three samples, all the same"
for x in s:
    assert x["finished"] == (0 in x["tokens"])
' generate "$M" --prompt "Once upon" --max-new 8 --samples 3 --seed 7 --temperature 1.5 --json
cp "$tmp/out" "$tmp/s7.json"
py 'assert d["samples"] == json.load(open(sys.argv[1].rsplit("/", 1)[0] + "/s7.json"))["samples"], "a seed reproduces"' \
    generate "$M" --prompt "Once upon" --max-new 8 --samples 3 --seed 7 --temperature 1.5 --json
py 'assert d["options"]["top_k"] == 5 and abs(d["options"]["top_p"] - 0.9) < 1e-6 and d["options"]["freq_penalty"] == 2' \
    generate "$M" --prompt hi --top-k 5 --top-p 0.9 --freq-penalty 2 --max-new 4 --json
py 'assert d["samples"][0]["text"] is None and len(d["samples"][0]["tokens"]) == 5 and d["options"]["stop_at_eos"] is False' \
    generate "$R" --tokens 1,2,3 --max-new 5 --json
py 'assert d["options"]["stop_at_eos"] is True and d["options"]["eos_token_id"] == 7' \
    generate "$R" --tokens 1,2,3 --max-new 5 --eos 7 --json
ok generate "$M" --prompt hi --max-new 0
err 2 "needs --prompt TEXT or --tokens IDS" generate "$M"
err 2 "--max-new: 'ten' is not an integer" generate "$M" --prompt hi --max-new ten
err 2 "--max-new: -1 is out of range" generate "$M" --prompt hi --max-new -1
err 2 "--temperature: -1 is out of range" generate "$M" --prompt hi --temperature -1
err 2 "--temperature: 'hot' is not a number" generate "$M" --prompt hi --temperature hot
err 2 "--temperature: 'nan' is not a number" generate "$M" --prompt hi --temperature nan
err 2 "--top-k: 0 is out of range" generate "$M" --prompt hi --top-k 0
err 2 "--top-p: 1.5 is out of range [0, 1]" generate "$M" --prompt hi --top-p 1.5
err 2 "--top-p: must be above 0" generate "$M" --prompt hi --top-p 0
err 2 "--freq-penalty: -1 is out of range" generate "$M" --prompt hi --freq-penalty -1
err 2 "--samples: 0 is out of range" generate "$M" --prompt hi --samples 0
err 2 "option '--seed' needs a value" generate "$M" --prompt hi --seed
err 2 "option '--greedy' takes no value" generate "$M" --prompt hi --greedy=yes
err 2 "unknown option '--temp'" generate "$M" --prompt hi --temp 1
err 1 "exceed the model's n_ctx = 512" generate "$M" --prompt hi --max-new 600
err 1 "has no tokenizer" generate "$R" --prompt hi
err 1 "outside the vocabulary" generate "$R" --tokens 60
err 1 "cannot load model" generate "$tmp/none" --prompt hi

# ---- steering: steer-vector, generate --steer / --control-vector (docs/steering.md) ----
printf 'I love this movie\n\nWhat a great day\n' >"$tmp/pos.txt"
printf 'I hate this movie\nWhat an awful day\n' >"$tmp/neg.txt"
py '
assert d["pairs"] == 2 and d["format"] == "npy" and d["d"] == 32 and len(d["points"]) == 1
assert d["points"][0]["name"] == "blocks.2.hook_resid_post" and d["points"][0]["norm"] > 0
' steer-vector "$M" --positive-file "$tmp/pos.txt" --negative-file "$tmp/neg.txt" --hook resid_post2 \
    --out "$tmp/v.npy" --json
checks=$((checks + 1))
python3 - "$tmp/v.npy" <<'PY' || fail "steer-vector --out: not a float32 (32,) .npy"
import ast, struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:6] == b"\x93NUMPY"
n = struct.unpack("<H", b[8:10])[0]
h = ast.literal_eval(b[10:10 + n].decode())
assert h["descr"] == "<f4" and h["shape"] == (32,) and not h["fortran_order"] and len(b) == 10 + n + 4 * 32
PY
ok steer-vector "$M" --positive "I love it" --negative "I hate it" --reduce mean --normalize --out "$tmp/all.npy"
grep -q "5 points x 32 (mean over 1 pair, normalized)" "$tmp/out" || fail "steer-vector: summary line"
py '
p = d["points"]
assert d["format"] == "control-vector-gguf" and len(p) == 5 and not p[0]["written"] and all(x["written"] for x in p[1:])
' steer-vector "$M" --positive "I love it" --negative "I hate it" --gguf "$tmp/cv.gguf" --model-hint gpt2 --json
checks=$((checks + 1))
head -c 4 "$tmp/cv.gguf" | grep -q GGUF || fail "steer-vector --gguf: not a GGUF file"
ok generate "$M" --prompt "Hello world" --max-new 10 --greedy --no-eos --json
cp "$tmp/out" "$tmp/plain.json"
py '
a = json.load(open(sys.argv[1].rsplit("/", 1)[0] + "/plain.json"))
assert d["samples"][0]["tokens"] != a["samples"][0]["tokens"], "--steer changed nothing"
' generate "$M" --prompt "Hello world" --max-new 10 --greedy --no-eos --json --steer "blocks.2.hook_resid_post=$tmp/v.npy:40"
cp "$tmp/out" "$tmp/steered.json"
py '
a = json.load(open(sys.argv[1].rsplit("/", 1)[0] + "/steered.json"))
assert d["samples"][0]["tokens"] == a["samples"][0]["tokens"], "steering with and without the KV cache differ"
' generate "$M" --prompt "Hello world" --max-new 10 --greedy --no-eos --json --no-cache --steer="resid_post2=$tmp/v.npy:40"
py '
a = json.load(open(sys.argv[1].rsplit("/", 1)[0] + "/plain.json"))
assert d["samples"][0]["tokens"] != a["samples"][0]["tokens"], "--control-vector changed nothing"
' generate "$M" --prompt "Hello world" --max-new 10 --greedy --no-eos --json --control-vector "$tmp/cv.gguf:30"
err 2 "--steer: 'v.npy' is not HOOK=VECTOR.npy[:SCALE]" generate "$M" --prompt hi --steer v.npy
err 2 "--steer: 'resid_post2=:3' names no file" generate "$M" --prompt hi --steer resid_post2=:3
err 1 "cannot open '$tmp/none.npy'" generate "$M" --prompt hi --steer "resid_post2=$tmp/none.npy"
err 1 "has a last axis of 128, the vector 32" generate "$M" --prompt hi --steer "blocks.0.mlp.hook_post=$tmp/v.npy"
err 1 "is not a NumPy .npy file" generate "$M" --prompt hi --steer "resid_post2=$tmp/cv.gguf"
err 1 "a steering vector is one-dimensional" generate "$M" --prompt hi --steer "resid_post2=$tmp/all.npy"
err 1 "is not a control vector" generate "$M" --prompt hi --control-vector "$src/tests/reference/gguf/hf_llama_gqa.f32.gguf"
err 1 "the model's d_model is 32" generate "$M" --prompt hi --control-vector "$src/tests/reference/control_vectors/full.gguf"
err 2 "needs one of --out VECTOR.npy and --gguf FILE.gguf" steer-vector "$M" --positive a --negative b
err 2 "1 positive and 0 negative prompts" steer-vector "$M" --positive a --out "$tmp/x.npy"
err 2 "--reduce: 'max' is not last or mean" steer-vector "$M" --positive a --negative b --out "$tmp/x.npy" --reduce max
err 2 "--hook is for --out" steer-vector "$M" --positive a --negative b --gguf "$tmp/x.gguf" --hook resid_post1
err 1 "cannot open '$tmp/none.txt'" steer-vector "$M" --positive-file "$tmp/none.txt" --negative b --out "$tmp/x.npy"
err 1 "has no tokenizer" steer-vector "$R" --positive a --negative b --out "$tmp/x.npy"
err 1 "is not [batch, pos, d] activations" steer-vector "$M" --positive a --negative b --out "$tmp/x.npy" --hook q0

# ---- diff ----
A=$src/tests/reference/cases/tl_f16          # two models of the same shapes (2 layers, d_model 16)
B=$src/tests/reference/cases/tl_attn_softcap
py '
e = d["entries"]
assert len(e) == 5 * 17 + 7 and e[-1]["name"] == "logits" and e[-1]["layer"] == -1, len(e)
assert all(x["rel_error"] == 0 and x["max_abs"] == 0 and abs(x["cosine"] - 1) < 1e-12 for x in e)
assert d["tokens"] == [0, 40, 73, 5] and d["png"] is None
' diff "$M" "$M" --tokens 0,40,73,5 --json
ok diff "$A" "$B" --tokens 1,2,3,4,5 --png "$tmp/d.png"
grep -q "relative error ||b - a|| / ||a|| by layer" "$tmp/out" || fail "diff: title"
grep -qE "^hook_resid_post +[0-9.e+-]+ +[0-9.e+-]+$" "$tmp/out" || fail "diff: a row per hook point, a column per layer"
grep -qE "^logits +[0-9.e+-]+ +[0-9.e+-]+ +-?[0-9.]+$" "$tmp/out" || fail "diff: logits row"
grep -q "wrote $tmp/d.png" "$tmp/out" || fail "diff: names the PNG"
checks=$((checks + 1))
head -c 8 "$tmp/d.png" | od -An -c | grep -q "P   N   G" || fail "diff: $tmp/d.png is not a PNG"
cp "$tmp/out" "$tmp/diff_table"
py '
import re
e = {x["name"]: x for x in d["entries"]}
assert all(x["rel_error"] > 0 for x in e.values() if x["name"] != "hook_tokens")
table = open(sys.argv[1].rsplit("/", 1)[0] + "/diff_table").read()
row = re.search(r"^hook_resid_post +(\S+) +(\S+)$", table, re.M)
for l in (0, 1):
    assert float(row.group(l + 1)) == float("%.3e" % e["blocks.%d.hook_resid_post" % l]["rel_error"])
' diff "$A" "$B" --tokens 1,2,3,4,5 --json
py '
assert [x["name"] for x in d["entries"]] == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "logits"]
' diff "$A" "$B" --tokens 1,2,3 --hooks 'embed,blocks.*.hook_resid_post' --json
py '
e = d["entries"]
heads = [x for x in e if x["head"] >= 0]
assert len(heads) == 2 * 2 * 2 and all(x["name"].endswith(("hook_z", "hook_pattern")) for x in heads), heads
assert [x["head"] for x in e[:3]] == [-1, 0, 1] and e[0]["name"] == e[1]["name"] == e[2]["name"]
' diff "$A" "$B" --tokens 1,2,3 --hooks 'blocks.*.attn.hook_z,blocks.*.attn.hook_pattern' --per-head --json
ok diff "$A" "$B" --tokens 1,2,3 --hooks 'blocks.*.attn.hook_z' --per-head
grep -q "heads, largest relative error first (4 of 4):" "$tmp/out" || fail "diff --per-head: the heads list"
ok diff "$A" "$A" --tokens 1,2,3 --png "$tmp/same.png"
grep -q "no chart: no hook point of a block drawn differs" "$tmp/out" || fail "diff --png of equal models: says why no chart"
checks=$((checks + 1))
[ ! -e "$tmp/same.png" ] || fail "diff --png of equal models wrote an empty chart"
ok diff "$A" "$B" --tokens 1,2,3 --measure cos
grep -q "cosine similarity by layer" "$tmp/out" || fail "diff --measure cos: title"
Q=$src/tests/reference/gguf/gpt2/Q4_0.gguf   # one quantized file, dequantized at load against kept quantized
py '
e = d["entries"]
assert len(e) > 30 and all(x["rel_error"] < 1e-5 for x in e) and any(x["rel_error"] > 0 for x in e)
' diff "$Q" "$Q" --tokens 1,2,3,4,5,6,7,8 --stored-b --no-processing --json
err 1 "fold_ln would rewrite 'blocks.0.attn.W_Q', kept in its stored dtype Q4_0" diff "$Q" "$Q" --tokens 1 --stored-a
err 2 "option '--stored-b' takes no value" diff "$Q" "$Q" --tokens 1 --stored-b=1
err 2 "needs two models: MODEL_A MODEL_B" diff "$A" --tokens 1
err 2 "needs --prompt TEXT or --tokens IDS" diff "$A" "$B"
err 2 "unexpected argument '$M'" diff "$A" "$B" "$M" --tokens 1
err 2 "--measure: 'x' is not rel, max or cos" diff "$A" "$B" --tokens 1 --measure x
err 2 "--hooks: 'embed,' has an empty name" diff "$A" "$B" --tokens 1 --hooks embed,
err 1 "the models differ in n_layers (5 and 2)" diff "$M" "$R" --tokens 1
err 1 "matches no hook point" diff "$A" "$B" --tokens 1 --hooks 'blocks.*.hook_nothing'
err 1 "outside the vocabulary" diff "$A" "$B" --tokens 60
err 1 "cannot load model '$tmp/none'" diff "$A" "$tmp/none" --tokens 1
err 1 "cannot write the chart" diff "$A" "$B" --tokens 1 --png "$tmp/no/dir/d.png"

# ---- --no-mmap: the weight files read into memory; every command gives the same output ----
same() { # ARGS...: stdout with --no-mmap equals stdout without it
    ok "$@"
    cp "$tmp/out" "$tmp/mapped"
    ok "$@" --no-mmap
    checks=$((checks + 1))
    cmp -s "$tmp/out" "$tmp/mapped" || fail "circuits $* --no-mmap: output differs from the mapped load's"
}
same info "$M" --json
same info "$R" --json --no-processing
same run "$M" --tokens 0,40,73,5 --json
same run "$M" --tokens 0,40,73,5 --json --no-processing
same heads "$M" --json
same compose "$R" --json --baseline-samples 2
same generate "$M" --tokens 0,40 --max-new 4 --json
ok cache "$M" --tokens 0,40,73 --names 'blocks.*.hook_resid_post' --out "$tmp/m.safetensors" --no-processing
ok cache "$M" --tokens 0,40,73 --names 'blocks.*.hook_resid_post' --out "$tmp/r.safetensors" --no-processing --no-mmap
checks=$((checks + 1))
cmp -s "$tmp/m.safetensors" "$tmp/r.safetensors" || fail "cache --no-mmap: the file differs from the mapped load's"
err 2 "option '--no-mmap' takes no value" run "$M" --tokens 1 --no-mmap=1
err 1 "cannot load model '$tmp/none'" info "$tmp/none" --no-mmap

# ---- progress bar: stderr only, and only when asked for (stderr is not a terminal here) ----
ok generate "$M" --prompt hi --max-new 3 --json
CIRCUITS_PROGRESS=always run generate "$M" --prompt hi --max-new 3 --json
checks=$((checks + 1))
[ $code -eq 0 ] && grep -q "generate \[" "$tmp/err" && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$tmp/out" ||
    fail "CIRCUITS_PROGRESS=always: a bar on stderr, clean JSON on stdout"
CIRCUITS_PROGRESS=always run run "$M" --prompt hi
checks=$((checks + 1))
[ $code -eq 0 ] && grep -q "run \[" "$tmp/err" || fail "run: progress bar"

# ---- the modern families: text in, text out (tests/reference/text/, ids from Hugging Face) ----
# Llama's SentencePiece tokenizer adds BOS itself (as --prompt does); Qwen2's adds none: --no-bos
ok generate "$src/tests/reference/text/llama_sp" --prompt "Hello, world! 123" --greedy --max-new 8 --no-eos --json
grep -q '"prompt_tokens":\[1,342,1044,297,999,959,984,977,985\]' "$tmp/out" || fail "generate llama: prompt ids"
grep -q '"tokens":\[792,657,1098,1007,1404,456,657,711\]' "$tmp/out" || fail "generate llama: greedy ids"
ok generate "$src/tests/reference/text/qwen2_bytes" --prompt "Hello, world! 123" --greedy --max-new 8 --no-eos --no-bos --json
grep -q '"prompt_tokens":\[325,306,14,310,3,223,19,20,21\]' "$tmp/out" || fail "generate qwen2: prompt ids"
grep -q '"tokens":\[940,738,609,493,270,609,493,680\]' "$tmp/out" || fail "generate qwen2: greedy ids"
ok generate "$src/tests/reference/text/gemma_sp" --prompt "The quick brown fox" --greedy --max-new 8 --no-eos
ok info "$src/tests/reference/text/gemma_sp"
grep -q "key/value heads" "$tmp/out" || fail "info gemma: GQA"
grep -q "rotary     8 of 8 dims" "$tmp/out" || fail "info gemma: rotary"

# ---- SAEs: sae-stats, sae-show, run/cache --sae (docs/saes.md "The command line") ----
# an SAE for tiny-random-gpt2 (d_model 32) as SAELens saves it, a token file and a text, with the stdlib
python3 - "$tmp" <<'EOF' || fail "sae: writing the fixtures"
import json, os, random, struct, sys
d = sys.argv[1]
os.makedirs(d + "/sae")
json.dump({"d_in": 32, "d_sae": 64, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "architecture": "standard",
           "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.1.hook_resid_post"}},
          open(d + "/sae/cfg.json", "w"))
rng = random.Random(5)
ts = [("W_dec", [64, 32]), ("W_enc", [32, 64]), ("b_dec", [32]), ("b_enc", [64])]
hdr, data, off = {}, b"", 0
for name, shape in ts:
    n = 1
    for x in shape:
        n *= x
    blob = struct.pack("<%df" % n, *[rng.uniform(-0.5, 0.5) for _ in range(n)])
    hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(blob)]}
    data += blob
    off += len(blob)
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(d + "/sae/sae_weights.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + data)
rows, pos = 6, 10
head = "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, pos)
head += " " * (-(len(head) + 11) % 64) + "\n"
ids = [(i * 37 + 11) % 1000 for i in range(rows * pos)]
open(d + "/tok.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode() +
                                  struct.pack("<%di" % len(ids), *ids))
open(d + "/text.txt", "w").write("The quick brown fox jumps over the lazy dog. " * 8)
EOF
ok sae-stats "$M" "$tmp/sae" "$tmp/tok.npy" --batch 4 --top-k 3 -o "$tmp/st.safetensors"
grep -q "^60 tokens (6 rows of 10), 64 latents" "$tmp/out" || fail "sae-stats: summary"
grep -q "wrote $tmp/st.safetensors" "$tmp/out" || fail "sae-stats: names the file"
ok sae-stats "$M" "$tmp/sae" "$tmp/tok.npy" --batch 1 --top-k 3 -o "$tmp/st1.safetensors"
checks=$((checks + 1))
cmp -s "$tmp/st.safetensors" "$tmp/st1.safetensors" || fail "sae-stats: --batch 1 and --batch 4 wrote different files"
ok sae-stats "$M" "$tmp/sae" --text "$tmp/text.txt" --pos 8 --skip-positions 1 --threshold 0.01
grep -q "rows of 8)" "$tmp/out" || fail "sae-stats --text: rows of --pos tokens"
ok sae-show "$tmp/st.safetensors"
grep -q "60 tokens, 64 latents, top 3 contexts of 11 tokens" "$tmp/out" || fail "sae-show: header"
grep -q "log10 firing frequency" "$tmp/out" && grep -q "densest latents" "$tmp/out" || fail "sae-show: histogram and densest"
ok sae-show "$tmp/st.safetensors" --model "$M" --latent 0,1 --latent 2 --top 2
grep -q "^latent 2: frequency" "$tmp/out" && grep -q ">>" "$tmp/out" || fail "sae-show --latent: contexts with the activating token"
ok sae-show "$tmp/st.safetensors" --latent 5
grep -q "row [0-9]* pos [0-9]*:  *[0-9]" "$tmp/out" || fail "sae-show without a model: token ids"
ok sae-show "$tmp/st.safetensors" --png "$tmp/h.png"
checks=$((checks + 1))
head -c 8 "$tmp/h.png" | od -An -c | grep -q "P   N   G" || fail "sae-show: $tmp/h.png is not a PNG"
ok sae-stats --help
ok sae-show --help
err 2 "needs MODEL and SAE_DIR" sae-stats "$M"
err 2 "needs the tokens" sae-stats "$M" "$tmp/sae"
err 2 "needs the tokens" sae-stats "$M" "$tmp/sae" "$tmp/tok.npy" --text "$tmp/text.txt"
err 2 "unknown option '--bogus'" sae-stats "$M" "$tmp/sae" "$tmp/tok.npy" --bogus
err 2 "--batch" sae-stats "$M" "$tmp/sae" "$tmp/tok.npy" --batch 0
err 1 "is not a NumPy .npy file" sae-stats "$M" "$tmp/sae" "$tmp/sae/cfg.json"
err 1 "cannot load the SAE" sae-stats "$M" "$tmp/nowhere" "$tmp/tok.npy"
err 1 "cannot read" sae-show "$tmp/tok.npy"
err 2 "needs STATS" sae-show
err 2 "--latent 9999: the statistics have latents 0 .. 63" sae-show "$tmp/st.safetensors" --latent 9999
err 1 "cannot write the picture" sae-show "$tmp/st.safetensors" --png "$tmp/no/dir/h.png"
ok run "$M" --tokens 1,2,3,4 --sae "$tmp/sae"
ok run "$M" --tokens 1,2,3,4 --sae "$tmp/sae" --sae-error-term
ok cache "$M" --tokens 1,2,3 --sae "$tmp/sae" --names blocks.1.hook_resid_post.hook_sae_acts_post --out "$tmp/acts.npy"
grep -q "blocks.1.hook_resid_post.hook_sae_acts_post *\[1, 3, 64\]" "$tmp/out" || fail "cache --sae: the SAE's point"
err 2 "--sae-error-term needs --sae" run "$M" --tokens 1 --sae-error-term
err 1 "cannot load the SAE" cache "$M" --tokens 1 --sae "$tmp/nowhere" --names embed --out "$tmp/x.npy"
# ---- probe-fit and generate --probe (docs/probes.md) ----
# npy FILE DTYPE SHAPE VALUES...: a .npy file written with Python's struct (no NumPy needed)
npy() {
    python3 - "$@" <<'PY'
import struct, sys
path, descr, shape, vals = sys.argv[1], sys.argv[2], tuple(int(x) for x in sys.argv[3].split(",")), sys.argv[4:]
h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(shape))
h += " " * (63 - (10 + len(h)) % 64) + "\n"
fmt = {"<f4": "f", "<i8": "q"}[descr]
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode())
    f.write(struct.pack("<%d%s" % (len(vals), fmt), *[float(v) if fmt == "f" else int(v) for v in vals]))
PY
}
PP="Hello world, hello again and again"
ok cache "$M" --prompt "$PP" --names resid_post1 --out "$tmp/acts.npy"
T=$(python3 -c 'import sys, ast; h = open(sys.argv[1], "rb").read(128).decode("latin1"); print(ast.literal_eval(h[h.index("{"):h.index("}") + 1])["shape"][1])' "$tmp/acts.npy")
labels=$(python3 -c "print(' '.join(str(i % 2) for i in range($T)))")
targets=$(python3 -c "print(' '.join(str(0.1 * i) + ' ' + str(i % 3) for i in range($T)))")
npy "$tmp/lab.npy" "<i8" "$T" $labels
npy "$tmp/lab_short.npy" "<i8" "3" 0 1 0
npy "$tmp/lab_frac.npy" "<f4" "$T" $(python3 -c "print(' '.join('0.5' for i in range($T)))")
npy "$tmp/reg.npy" "<f4" "$T,2" $targets
py "
assert d['kind'] == 'logistic' and d['n'] == $T and d['n_outputs'] == 2 and d['hook_name'] == 'blocks.1.hook_resid_post'
assert d['n_iter'] >= 1 and 0.5 <= d['train']['accuracy'] <= 1 and d['train']['log_loss'] > 0
" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/p.probe" --hook blocks.1.hook_resid_post --l2 0.5 --json
cp "$tmp/out" "$tmp/fit_acts.json"
checks=$((checks + 1))
[ -s "$tmp/p.probe" ] || fail "probe-fit: no probe file"
py '
a = json.load(open(sys.argv[1].rsplit("/", 1)[0] + "/fit_acts.json"))
assert d["n"] == a["n"] and d["n_iter"] == a["n_iter"] and d["train"] == a["train"], "a model run and its cached .npy fit alike"
' probe-fit "$M" --hook resid_post1 --prompt "$PP" --labels "$tmp/lab.npy" -o "$tmp/p2.probe" --l2 0.5 --json
py "assert d['kind'] == 'linear' and d['n_outputs'] == 2 and d['n_iter'] == 0 and d['train']['r2'] > 0.5" \
    probe-fit --acts "$tmp/acts.npy" --labels "$tmp/reg.npy" --kind linear --l2 0 -o "$tmp/r.probe" --json
ok probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/p3.probe" --no-intercept --max-iter 5 --tol 1e-4
grep -q "logistic probe: $T rows" "$tmp/out" || fail "probe-fit: summary"
py '
s = d["samples"][0]
assert len(s["probe"]) == len(s["tokens"]) == 4
assert all(len(r) == 2 and abs(sum(r) - 1) < 1e-5 and min(r) >= 0 for r in s["probe"])
' generate "$M" --prompt "$PP" --max-new 4 --greedy --no-eos --probe "$tmp/p.probe" --json
ok generate "$M" --prompt "$PP" --max-new 4 --greedy --no-eos --probe "$tmp/p.probe"
grep -q "probe .*p.probe at blocks.1.hook_resid_post (class probabilities, 2 outputs)" "$tmp/out" || fail "generate --probe: table"
[ "$(grep -cE '^ +[0-9]+  ' "$tmp/out")" -eq 4 ] || fail "generate --probe: one row per generated token"
ok generate "$M" --prompt "$PP" --max-new 3 --samples 2 --seed 1 --probe "$tmp/r.probe" --probe-hook resid_post1
grep -q "(linear, 2 outputs)" "$tmp/out" || fail "generate --probe linear: table"
err 2 "needs --labels Y.npy" probe-fit --acts "$tmp/acts.npy" -o "$tmp/x.probe"
err 2 "needs -o OUT" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy"
err 2 "give --acts or a MODEL, not both" probe-fit "$M" --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/x.probe"
err 2 "needs --acts X.npy, or a MODEL" probe-fit --labels "$tmp/lab.npy" -o "$tmp/x.probe"
err 2 "a MODEL needs --hook NAME" probe-fit "$M" --prompt hi --labels "$tmp/lab.npy" -o "$tmp/x.probe"
err 2 "--kind: 'svm' is not 'logistic' or 'linear'" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/x.probe" --kind svm
err 2 "--l2: -1 is out of range" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/x.probe" --l2 -1
err 2 "--max-iter: 0 is out of range" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/x.probe" --max-iter 0
err 2 "--prompt / --tokens need a MODEL" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/x.probe" --prompt hi
err 1 "must be [$T], one per row" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab_short.npy" -o "$tmp/x.probe"
err 1 "is not a class label" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab_frac.npy" -o "$tmp/x.probe"
err 1 "unpenalised logistic regression" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/x.probe" --l2 0
err 1 "is not a .npy file" probe-fit --acts "$tmp/p.probe" --labels "$tmp/lab.npy" -o "$tmp/x.probe"
err 1 "must be [n, d]" probe-fit --acts "$tmp/lab.npy" --labels "$tmp/lab.npy" -o "$tmp/x.probe"
err 1 "cannot open" probe-fit --acts "$tmp/none.npy" --labels "$tmp/lab.npy" -o "$tmp/x.probe"
err 1 "cannot create" probe-fit --acts "$tmp/acts.npy" --labels "$tmp/lab.npy" -o "$tmp/no/such/dir/x.probe"
err 1 "no hook point" probe-fit "$M" --hook blocks.99.hook_resid_post --prompt hi --labels "$tmp/lab.npy" -o "$tmp/x.probe"
checks=$((checks + 1))
[ ! -e "$tmp/x.probe" ] || fail "probe-fit: a failed fit wrote a file"
err 2 "--probe-hook needs --probe FILE" generate "$M" --prompt hi --probe-hook resid_post1
err 1 "--probe" generate "$M" --prompt hi --probe "$tmp/none.probe"
err 1 "--probe" generate "$M" --prompt hi --probe "$tmp/acts.npy"
err 1 "values per position" generate "$M" --prompt hi --probe "$tmp/p.probe" --probe-hook blocks.0.mlp.hook_post

# ---- attn, lens, patch: the picture commands (docs/cli.md; their numbers against the binding's:
# bindings/python/tests/test_cli_pictures.py) ----
P2="The cat sat on the mat. The cat sat on the mat."
# png_size FILE MINW MINH: a PNG whose IHDR size is at least MINW x MINH and at most 4000 x 4000
png_size() {
    checks=$((checks + 1))
    python3 - "$@" <<'PY' || fail "$1: not a PNG of a sane size"
import struct, sys
b = open(sys.argv[1], "rb").read(32)
assert b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR", b[:16]
w, h = struct.unpack(">II", b[16:24])
assert int(sys.argv[2]) <= w <= 4000 and int(sys.argv[3]) <= h <= 4000, (w, h)
PY
}
# the attention of chosen heads is the cached hook_pattern of those heads
ok cache "$M" --prompt "$P2" --names blocks.1.attn.hook_pattern --out "$tmp/pat.npy"
export PIC="$tmp/pat.npy"
py '
import ast, os, struct
b = open(os.environ["PIC"], "rb").read()
n = struct.unpack("<H", b[8:10])[0]
shape = ast.literal_eval(b[10:10 + n].decode("latin1"))["shape"]
x = struct.unpack("<%df" % (len(b[10 + n:]) // 4), b[10 + n:])
T = shape[2]
assert d["layer"] == 1 and d["heads"] == [3, 1] and len(d["tokens"]) == T and d["png"] == [] and d["html"] is None
for k, h in enumerate(d["heads"]):
    for q in range(T):
        row = d["patterns"][k][q]
        assert abs(sum(row) - 1) < 1e-5 and all(v == 0 for v in row[q + 1:])
        for j in range(T):
            assert abs(row[j] - x[(h * T + q) * T + j]) < 1e-6, (h, q, j)
' attn "$M" --prompt "$P2" --layer 1 --head 3 --head 1 --json
ok attn "$M" --prompt "$P2" --layer 0
[ "$(grep -c '^L0H' "$tmp/out")" -eq 4 ] || fail "attn: every head of the layer by default"
grep -q "query  token" "$tmp/out" || fail "attn: table"
# the logit lens's last row is the model's own prediction: minus `run`'s loss of each token
ok run "$M" --prompt "$P2" --json
cp "$tmp/out" "$tmp/run.json"
export PIC="$tmp/run.json"
py '
import os
r = json.load(open(os.environ["PIC"]))
assert d["kind"] == "logit_lens" and d["components"][0] == "0_pre" and d["components"][-1] == "final_post"
assert [t["id"] for t in d["tokens"]] == [t["id"] for t in r["tokens"]]
last = d["values"][-1]
assert len(last) == len(r["tokens"]) - 1
for p, v in enumerate(last):
    assert abs(v + r["tokens"][p + 1]["loss"]) < 1e-4, (p, v)
assert all(v <= 0 for row in d["values"] for v in row)
' lens "$M" --prompt "$P2" --json
# direct logit attribution: the components add up to the logit of the next token (GPT-2 has no b_U)
ok cache "$M" --prompt "$P2" --names unembed.hook_out --out "$tmp/logits.npy"
export PIC="$tmp/logits.npy"
py '
import ast, os, struct
b = open(os.environ["PIC"], "rb").read()
n = struct.unpack("<H", b[8:10])[0]
_, T, V = ast.literal_eval(b[10:10 + n].decode("latin1"))["shape"]
x = struct.unpack("<%df" % (T * V), b[10 + n:])
ids = [t["id"] for t in d["tokens"]]
assert d["kind"] == "dla" and d["components"][:2] == ["embed", "pos_embed"] and len(d["components"]) == 12
for p in range(T - 1):
    s = sum(row[p] for row in d["values"])
    assert abs(s - x[p * V + ids[p + 1]]) < 1e-3 * max(1, abs(s)), (p, s)
' lens "$M" --prompt "$P2" --dla --json
# patching resid_pre of layer 0 at the one position where the prompts differ makes the corrupted
# run the clean one (1); at the others it changes nothing (0)
CL=0,52,195,212,300,17
CO=0,52,7,212,300,17
py '
assert d["shape"] == [5, 6] and d["kind"] == "resid_pre" and d["clean_tokens"] == [0, 52, 195, 212, 300, 17]
row = d["values"][0]
assert abs(row[2] - 1) < 1e-3 and all(abs(row[j]) < 1e-3 for j in (0, 1, 3, 4, 5)), row
assert abs(d["logit_diff"][0][2] - d["clean_logit_diff"]) < 1e-4 and d["answer"]["id"] == 3 and d["wrong"]["id"] == 4
assert d["col_labels"][2].count("/") == 1 and d["png"] is None and d["html"] is None
' patch "$M" --clean-tokens $CL --corrupt-tokens $CO --answer-id 3 --wrong-id 4 --json
py 'assert d["shape"] == [5, 4] and d["col_labels"] == ["H0", "H1", "H2", "H3"] and d["rows"] == "layer"' \
    patch "$M" --clean-tokens $CL --corrupt-tokens $CO --answer-id 3 --wrong-id 4 --kind heads --json
ok patch "$M" --clean-tokens $CL --corrupt-tokens $CO --answer-id 3 --wrong-id 4 --kind mlp_out
grep -q "(patched - corrupted) / (clean - corrupted)" "$tmp/out" || fail "patch: says what a cell is"
# text arguments: --answer is one token of the tokenizer
ok patch "$M" --clean "The cat sat" --corrupt "The dog sat" --answer " on" --wrong " in"
err 1 "--answer: ' on the mat' is not one token of the vocabulary" \
    patch "$M" --clean "The cat sat" --corrupt "The dog sat" --answer " on the mat" --wrong " in"
# the pictures: PNGs of a sane size, pages that are self-contained and hold the views' roots
# (docs/pictures.md's DOM contract)
html_ok() {
    checks=$((checks + 1))
    python3 - "$@" <<'PY' || fail "$1: not a self-contained page with the views ${*:2}"
import re, sys
h = open(sys.argv[1], encoding="utf-8").read()
assert h.startswith("<!DOCTYPE html>") and h.rstrip().endswith("</html>")
assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", h, re.I), "an external URL"
assert not re.search(r"<script[^>]*\ssrc=|<link\b|@import|\bfetch\(|XMLHttpRequest", h, re.I), "fetches something"
roots = re.findall(r'<div[^>]*class="cv-view[^"]*"[^>]*data-view="(\w+)"', h)
assert roots == sys.argv[2:], roots
PY
}
ok attn "$M" --prompt "$P2" --layer 1 --head 0 --head 2 --png "$tmp/at.png" --html "$tmp/at.html"
grep -q "wrote $tmp/at-L1H0.png" "$tmp/out" && grep -q "wrote $tmp/at-L1H2.png" "$tmp/out" &&
    grep -q "wrote $tmp/at.html" "$tmp/out" || fail "attn: names the files it wrote"
png_size "$tmp/at-L1H0.png" 400 400
png_size "$tmp/at-L1H2.png" 400 400
html_ok "$tmp/at.html" attention
grep -q '"L1H2"' "$tmp/at.html" || fail "attn --html: the head names"
py 'assert d["png"] == [sys.argv[1].rsplit("/", 1)[0] + "/one.png"] and d["html"] is None' \
    attn "$M" --prompt "$P2" --layer 0 --head 1 --png "$tmp/one.png" --json
png_size "$tmp/one.png" 400 400
ok lens "$M" --prompt "$P2" --png "$tmp/lens.png" --html "$tmp/lens.html"
png_size "$tmp/lens.png" 500 200
html_ok "$tmp/lens.html" grid tokens
py 'assert d["png"].endswith("/dla.png") and d["html"].endswith("/dla.html")' \
    lens "$M" --prompt "$P2" --dla --png "$tmp/dla.png" --html "$tmp/dla.html" --json
png_size "$tmp/dla.png" 500 200
html_ok "$tmp/dla.html" grid tokens
ok patch "$M" --clean-tokens $CL --corrupt-tokens $CO --answer-id 3 --wrong-id 4 --png "$tmp/pa.png" --html "$tmp/pa.html"
png_size "$tmp/pa.png" 300 150
html_ok "$tmp/pa.html" grid
ok patch "$M" --clean-tokens $CL --corrupt-tokens $CO --answer-id 3 --wrong-id 4 --kind heads --png "$tmp/ph.png"
png_size "$tmp/ph.png" 300 150
# errors
err 2 "needs --layer L" attn "$M" --prompt hi
err 1 "--layer 5: the model has 5 layers (0 .. 4)" attn "$M" --prompt hi --layer 5
err 1 "--head 4: layer 0 has 4 heads (0 .. 3)" attn "$M" --prompt hi --layer 0 --head 4
err 2 "--head: 'x' is not an integer" attn "$M" --prompt hi --layer 0 --head x
err 1 "--tokens: token id 99999 at position 1 is outside the vocabulary [0, 1000)" attn "$M" --tokens 5,99999 --layer 0
err 1 "so --prompt cannot be used; pass --tokens IDS instead" attn "$R" --prompt hi --layer 0
err 1 "--tokens: 33 tokens, more than the model's n_ctx 32" attn "$R" --tokens "$(seq -s, 1 33)" --layer 0
err 1 "so --clean cannot be used; pass --clean-tokens IDS instead" patch "$R" --clean hi --corrupt ho --answer-id 1 --wrong-id 2
err 1 "--tokenizer: cannot load '$tmp/none.json'" attn "$M" --prompt hi --layer 0 --tokenizer "$tmp/none.json"
err 1 "--png: the directory '$tmp/no/dir' does not exist" attn "$M" --prompt hi --layer 0 --png "$tmp/no/dir/a.png"
err 1 "--html: the directory '$tmp/no/dir' does not exist" lens "$M" --prompt hi --html "$tmp/no/dir/a.html"
err 1 "--png: '$tmp/run.json' is not a directory" patch "$M" --clean-tokens 1,2 --corrupt-tokens 1,3 --answer-id 3 \
    --wrong-id 4 --png "$tmp/run.json/p.png"
err 2 "--png: the file name is empty" lens "$M" --prompt hi --png ""
err 1 "one token has no next token to predict" lens "$M" --tokens 5
err 2 "option '--dla' takes no value" lens "$M" --prompt hi --dla=1
err 2 "needs --prompt TEXT or --tokens IDS" lens "$M"
err 2 "needs --corrupt or --corrupt-tokens" patch "$M" --clean hi --answer-id 3 --wrong-id 4
err 2 "give --answer or --answer-id, not both" patch "$M" --clean hi --corrupt ho --answer a --answer-id 3 --wrong-id 4
err 2 "--kind: 'mlp' is not resid_pre, attn_out, mlp_out or heads" patch "$M" --clean hi --corrupt ho --answer-id 3 --wrong-id 4 --kind mlp
err 1 "the clean prompt has 3 tokens and the corrupted one 2" patch "$M" --clean-tokens 1,2,3 --corrupt-tokens 1,2 --answer-id 3 --wrong-id 4
err 1 "--answer and --wrong are the same token (3)" patch "$M" --clean-tokens 1,2 --corrupt-tokens 1,3 --answer-id 3 --wrong-id 3
err 1 "--answer-id: 1000 is outside the vocabulary [0, 1000)" patch "$M" --clean-tokens 1,2 --corrupt-tokens 1,3 --answer-id 1000 --wrong-id 3
err 1 "nothing to recover" patch "$M" --clean-tokens 1,2 --corrupt-tokens 1,2 --answer-id 3 --wrong-id 4
err 1 "--kind mlp_out: the model '$src/examples/models/attn-only-2l' is attention-only" \
    patch "$src/examples/models/attn-only-2l" --clean-tokens 1,2 --corrupt-tokens 1,3 --answer-id 3 --wrong-id 4 --kind mlp_out

echo "test_cli: $checks checks, $fails failed"
[ $fails -eq 0 ]
