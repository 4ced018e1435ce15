#!/usr/bin/env python3
"""Writes the seed corpora of the tokenizer fuzz harnesses (tests/fuzz/corpus/{tokenizer_json,
vocab_merges,gguf,encode}/) from the real tokenizer files in tests/tokenizer/data and
examples/models. Seeds are small (cut-down vocabularies) so that libFuzzer's mutations stay
fast. Deterministic: rerunning rewrites the same files. Usage: python3 tests/fuzz/make_tokenizer_seeds.py"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = os.path.join(ROOT, "tests", "tokenizer", "data")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def read(*p, mode="r"):
    with open(os.path.join(*p), mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        return f.read()


def put(harness, name, data):
    os.makedirs(os.path.join(CORPUS, harness), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(CORPUS, harness, name), "wb") as f:
        f.write(data)


def cut(tok, n):
    """tokenizer.json cut to ids < n (merges among them kept); added tokens above n renumbered."""
    model = tok["model"]
    vocab = {s: i for s, i in model["vocab"].items() if i < n}
    merges = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    added = []
    nxt = n
    for a in tok["added_tokens"][:6]:
        a = dict(a)
        if a["id"] >= n:
            a["id"] = nxt
            nxt += 1
        vocab[a["content"]] = a["id"]
        added.append(a)
    out = dict(tok)
    out["model"] = dict(model, vocab=vocab, merges=merges)
    out["added_tokens"] = added
    return out


def small(tok):
    return json.dumps(tok, ensure_ascii=False, separators=(",", ":"))


# ---- tokenizer.json ----
gpt2 = json.loads(read(DATA, "gpt2-hf", "tokenizer.json"))
neox = json.loads(read(DATA, "neox", "20B_tokenizer.json"))
put("tokenizer_json", "tiny_random", read(ROOT, "examples", "models", "tiny-random-gpt2", "tokenizer.json"))
put("tokenizer_json", "gpt2_cut", small(cut(gpt2, 600)))
put("tokenizer_json", "neox_cut", small(cut(neox, 600)))
toy_vocab = json.loads(read(DATA, "toy", "vocab.json"))
toy_merges = [l.split(" ") for l in read(DATA, "toy", "merges.txt").splitlines() if l and not l.startswith("#")]
put("tokenizer_json", "toy_options", small({
    "version": "1.0",
    "added_tokens": [
        {"id": 20, "content": "<|endoftext|>", "special": True, "normalized": False, "lstrip": True, "rstrip": True,
         "single_word": False},
        {"id": 21, "content": "  ", "special": False, "normalized": True},
    ],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": True,
                                                             "use_regex": False}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": True, "ignore_merges": True,
              "byte_fallback": False, "continuing_subword_prefix": "", "end_of_word_suffix": None,
              "vocab": dict(toy_vocab, **{"  ": 21}), "merges": toy_merges},
}))

# ---- vocab.json + merges.txt (harness input: flags, u16-prefixed vocab, u16-prefixed side file, merges) ----
def field(b):
    b = b if isinstance(b, bytes) else b.encode("utf-8")
    assert len(b) < 65536
    return struct.pack("<H", len(b)) + b


def vm(flags, vocab, side, merges):
    return bytes([flags]) + field(vocab) + field(side) + (merges if isinstance(merges, bytes) else merges.encode())


tiny = os.path.join(DATA, "tiny-random")
put("vocab_merges", "tiny_random_dir", vm(0, read(tiny, "vocab.json"), read(tiny, "tokenizer_config.json"),
                                          read(tiny, "merges.txt")))
put("vocab_merges", "toy_openai_map", vm(1 | 4, read(DATA, "toy", "vocab.json"),
                                         read(DATA, "toy", "special_tokens_map.json"), read(DATA, "toy", "merges.txt")))
put("vocab_merges", "toy_config_path", vm(2, read(DATA, "toy", "vocab.json"),
                                          read(DATA, "toy", "tokenizer_config.json"),
                                          read(DATA, "toy", "merges.txt").replace("\n", "\r\n").rstrip("\r\n")))
g = cut(gpt2, 600)
gm = "#version: 0.2\n" + "\n".join(g["model"]["merges"]) + "\n"
put("vocab_merges", "gpt2_cut_openai_path", vm(3, small(g["model"]["vocab"]), "", gm))


# ---- GGUF ----
def gstr(s):
    b = s if isinstance(s, bytes) else s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY, T_U64 = 4, 5, 6, 7, 8, 9, 10


def kv(key, t, value):
    out = gstr(key) + struct.pack("<I", t)
    if t == T_STRING:
        return out + gstr(value)
    if t == T_ARRAY:
        et, items = value
        body = struct.pack("<IQ", et, len(items))
        for x in items:
            body += gstr(x) if et == T_STRING else struct.pack({T_U32: "<I", T_I32: "<i", T_F32: "<f"}[et], x)
        return out + body
    return out + struct.pack({T_U32: "<I", T_I32: "<i", T_F32: "<f", T_BOOL: "<?", T_U64: "<Q"}[t], value)


def gguf(version, kvs):
    return b"GGUF" + struct.pack("<IQQ", version, 0, len(kvs)) + b"".join(kvs)


def tokens_of(vocab):
    n = max(vocab.values()) + 1
    toks = [""] * n
    for s, i in vocab.items():
        toks[i] = s
    return toks


tv = json.loads(read(tiny, "vocab.json"))
tm = [l for l in read(tiny, "merges.txt").splitlines() if l and not l.startswith("#")]
tt = tokens_of(tv)
put("gguf", "tiny_random_v3", gguf(3, [
    kv("general.architecture", T_STRING, "gpt2"),
    kv("general.some_float", T_F32, 0.5),
    kv("tokenizer.ggml.model", T_STRING, "gpt2"),
    kv("tokenizer.ggml.pre", T_STRING, "gpt-2"),
    kv("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, tt)),
    kv("tokenizer.ggml.token_type", T_ARRAY, (T_I32, [3 if t == "<|endoftext|>" else 1 for t in tt])),
    kv("tokenizer.ggml.merges", T_ARRAY, (T_STRING, tm)),
    kv("tokenizer.ggml.bos_token_id", T_U32, tv["<|endoftext|>"]),
    kv("tokenizer.ggml.eos_token_id", T_U32, tv["<|endoftext|>"]),
]))
n = cut(neox, 400)
nt = tokens_of(n["model"]["vocab"])
spaces = {a["id"] for a in n["added_tokens"] if not a["special"]}
put("gguf", "neox_cut_v2", gguf(2, [
    kv("general.architecture", T_STRING, "gptneox"),
    kv("tokenizer.ggml.model", T_STRING, "gpt2"),
    kv("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, nt)),
    kv("tokenizer.ggml.token_type", T_ARRAY, (T_U32, [4 if i in spaces else 3 if i < 2 else 1
                                                      for i in range(len(nt))])),
    kv("tokenizer.ggml.merges", T_ARRAY, (T_STRING, n["model"]["merges"])),
    kv("tokenizer.ggml.bos_token_id", T_U64, 0),
    kv("tokenizer.ggml.eos_token_id", T_I32, 0),
    kv("tokenizer.ggml.unknown_token_id", T_U32, 0),
    kv("tokenizer.ggml.add_space_prefix", T_BOOL, False),
    kv("general.scores", T_ARRAY, (T_F32, [0.0, 1.0, 2.0])),
]))

# ---- encode (harness input: mode byte, text) ----
cases = [json.loads(l).get("t", "") for l in read(ROOT, "tests", "tokenizer", "expected.jsonl").split("\n") if l]
picked = [c for c in cases if 0 < len(c.encode("utf-8", "surrogateescape")) < 300][:: 97][:14]
for i, t in enumerate(picked):
    put("encode", "corpus_%02d" % i, bytes([i % 16]) + t.encode("utf-8", "surrogateescape"))
put("encode", "invalid_utf8", bytes([0]) + b"a\xff!b \xe2\x82 \xc0\xaf\xed\xa0\x80 \xf5x")
put("encode", "special_near_miss", bytes([2 | 4]) + b"<|endoftext|>x<|endoftext|<|endoftext|>>  y")
put("encode", "neox_spaces", bytes([1]) + b"a     b\t\t  \n\n  c" + "e\u0301 \u1100\u1161".encode())
put("encode", "long_word", bytes([0]) + b"x" * 5000)
put("encode", "long_text_cache", bytes([8]) + (("The cat's hat (1984) \u00e9t\u00e9 \u4f60\u597d\n" * 300).encode()))
# the modern tokenizers (mode bits 4-6: Llama 2, Gemma, Llama 3, Qwen2, Llama 2 GGUF)
modern = [json.loads(l)["t"] for l in read(ROOT, "tests", "tokenizer", "expected_modern.jsonl").split("\n") if l]
picked = [c for c in modern if 0 < len(c.encode("utf-8")) < 200][::41][:10]
for i, t in enumerate(picked):
    put("encode", "modern_%02d" % i, bytes([((i % 5) + 1) << 4 | (i % 4) << 1]) + t.encode("utf-8"))
put("encode", "modern_llama2_invalid", bytes([1 << 4]) + b"  \xff\xc3 <s>x\xe2\x96\x81 \xf0\x9f")
put("encode", "modern_llama3_splits", bytes([3 << 4]) + b"I'M  12345\r\n\n  (hello)\t\tworld \xff!")
put("encode", "modern_qwen2_nfc", bytes([4 << 4]) + "e\u0301 caf\u00e9 123 <|im_start|>".encode())

# ---- the modern tokenizer.json files and GGUF ----
MODERN = os.path.join(DATA, "modern")
for name in ("llama2", "llama_ms", "llama_split", "gemma", "llama3", "qwen2", "added"):
    put("tokenizer_json", "modern_" + name, small(cut(json.loads(read(MODERN, name, "tokenizer.json")), 400)))
put("gguf", "llama2_spm", read(MODERN, "llama2.gguf", mode="rb"))
