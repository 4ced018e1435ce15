#!/usr/bin/env python3
"""Tokenizer throughput: libcircuits (through ctypes on build/lib/libcircuits.so.0) against
Hugging Face tokenizers (and tiktoken, if installed) on the same large text, in one run.

    python bench/tokenizer.py [--lib build/lib/libcircuits.so.0] [--mb 8] [--repeat 3]

The text is English prose (the licence texts under /usr/share/common-licenses, or the README
and docs if those are missing) mixed with the multilingual test corpus of
tests/tokenizer/expected.jsonl, repeated to --mb megabytes. Each tokenizer encodes it (1) as one
string and (2) as ~4 KB documents cut at blank lines, one call per document; all single-threaded
(TOKENIZERS_PARALLELISM=false; tokenizers' encode of one string does not use threads anyway).
The ids are checked to be identical. Reports the best of --repeat runs.
"""
import argparse
import ctypes
import glob
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "tokenizer", "data")


class Circuits:
    def __init__(self, lib, path):
        self.L = ctypes.CDLL(lib)
        self.L.circuits_last_error.restype = ctypes.c_char_p
        self.L.circuits_tokenizer_load.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        self.L.circuits_tokenizer_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p,
                                                     ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
                                                     ctypes.POINTER(ctypes.c_size_t)]
        self.L.circuits_tokenizer_free.argtypes = [ctypes.c_void_p]
        self.t = ctypes.c_void_p()
        if self.L.circuits_tokenizer_load(ctypes.byref(self.t), path.encode()) != 0:
            raise RuntimeError(self.L.circuits_last_error().decode())
        self.cap = 0

    def encode(self, data: bytes):
        """The ids (a view of a buffer the next call reuses) and their count."""
        if len(data) + 16 > self.cap:  # never more ids than bytes (+ BOS)
            self.cap = len(data) + 16
            self.ids = (ctypes.c_int32 * self.cap)()
        n = ctypes.c_size_t()
        rc = self.L.circuits_tokenizer_encode(self.t, data, len(data), None, self.ids, self.cap, ctypes.byref(n))
        if rc != 0:
            raise RuntimeError(self.L.circuits_last_error().decode())
        return self.ids, n.value

    def __del__(self):
        if getattr(self, "t", None):
            self.L.circuits_tokenizer_free(self.t)


def make_text(mb):
    parts = []
    for p in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(p):
            parts.append(open(p, encoding="utf-8", errors="replace").read())
    if not parts:
        for p in [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
            parts.append(open(p, encoding="utf-8").read())
    corpus = os.path.join(ROOT, "tests", "tokenizer", "expected.jsonl")
    if os.path.exists(corpus):
        for line in open(corpus, encoding="utf-8"):
            r = json.loads(line)
            if "t" in r:
                parts.append(r["t"])
    base = "\n".join(parts)
    reps = max(1, int(mb * 1e6 / len(base.encode())) + 1)
    text = (base + "\n") * reps
    return text[: int(mb * 1e6)]


def best(f, repeat):
    t_best, out = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        dt = time.perf_counter() - t0
        t_best = dt if t_best is None else min(t_best, dt)
    return t_best, out


def documents(text, size=4000):
    """The text cut at blank lines into documents of about `size` characters."""
    docs, cur, n = [], [], 0
    for para in text.split("\n\n"):
        cur.append(para)
        n += len(para) + 2
        if n >= size:
            docs.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        docs.append("\n\n".join(cur))
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(ROOT, "build", "lib", "libcircuits.so.0"))
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the rows to this file (bench/run.py's summary reads it)")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer
    try:
        sys.path.insert(0, os.path.join(ROOT, "tests", "tokenizer"))
        from generate import tiktoken_gpt2
        tik = tiktoken_gpt2()
    except ImportError:
        tik = None

    text = make_text(args.mb)
    data = text.encode()
    docs = documents(text)
    docs_b = [d.encode() for d in docs]
    print(f"text: {len(data) / 1e6:.1f} MB ({len(text)} characters; {len(docs)} documents of ~4 KB)")
    rows = []
    for name, path in [("gpt2", os.path.join(DATA, "gpt2-hf", "tokenizer.json")),
                       ("neox", os.path.join(DATA, "neox", "20B_tokenizer.json"))]:
        c = Circuits(args.lib, path)
        hf = Tokenizer.from_file(path)
        # one string
        t_c, (ids, n) = best(lambda: c.encode(data), args.repeat)
        t_h, enc = best(lambda: hf.encode(text), args.repeat)
        if list(ids[:n]) != enc.ids:
            print(f"WARNING: {name}: libcircuits and tokenizers disagree (one string)", file=sys.stderr)
        rows.append((name, "one string", "libcircuits", n, t_c))
        rows.append((name, "one string", "tokenizers", len(enc.ids), t_h))
        if name == "gpt2" and tik:
            t_t, tids = best(lambda: tik.encode(text, allowed_special="all"), args.repeat)
            rows.append((name, "one string", "tiktoken", len(tids), t_t))
        # documents, one call each
        t_c, counts = best(lambda: [c.encode(d)[1] for d in docs_b], args.repeat)
        t_h, encs = best(lambda: [hf.encode(d) for d in docs], args.repeat)
        if any(list(c.encode(d)[0][:k]) != e.ids for d, k, e in zip(docs_b, counts, encs)):
            print(f"WARNING: {name}: libcircuits and tokenizers disagree (documents)", file=sys.stderr)
        nd = sum(counts)
        rows.append((name, "documents", "libcircuits", nd, t_c))
        rows.append((name, "documents", "tokenizers", nd, t_h))
        if name == "gpt2" and tik:
            t_t, _ = best(lambda: [tik.encode(d, allowed_special="all") for d in docs], args.repeat)
            rows.append((name, "documents", "tiktoken", nd, t_t))
    print(f"{'vocab':<5} {'input':<10} {'implementation':<12} {'tokens':>9} {'seconds':>8} {'Mtok/s':>7} {'MB/s':>6}")
    for name, mode, impl, n, t in rows:
        print(f"{name:<5} {mode:<10} {impl:<12} {n:>9} {t:>8.3f} {n / t / 1e6:>7.2f} {len(data) / t / 1e6:>6.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(mb=len(data) / 1e6, repeat=args.repeat, rows=[dict(vocab=name, input=mode, impl=impl, tokens=n,
                                                                             seconds=t) for name, mode, impl, n, t in rows]), f)


if __name__ == "__main__":
    main()
