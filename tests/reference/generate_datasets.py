"""Reference files for text datasets and .npy reading (tests/test_dataset.c; docs/jobs.md "Datasets").

Run with the reference environment: /opt/refenv/bin/python tests/reference/generate_datasets.py
Writes into tests/reference/datasets/ (corpus.txt is committed by hand and only read here):
  corpus.jsonl               the corpus's lines as JSON objects {"id": i, "text": line}, with a
                             blank line and an object with another field order, for the .jsonl reader
  rows_*.npy                 the expected token rows ('<i4') of circuits_dataset_open on the corpus,
                             computed here with the Hugging Face tokenizer of
                             examples/models/tiny-random-gpt2 following libcircuits' rule: the lines
                             as Hugging Face datasets' "text" loader gives them (empty lines are
                             empty documents), each document encoded alone without special
                             tokens, documents joined by EOS, cut into rows of seq_len - 1 tokens
                             after a BOS (prepend_bos 1) or of seq_len tokens (prepend_bos 0), the
                             last partial row dropped
  tl_comparison.json         what TransformerLens's tokenize_and_concatenate gives on the same
                             documents, row by row against the rule (docs/differences.md)
  npy/*.npy                  small arrays written by numpy itself: every integer dtype in both byte
                             orders, format versions 1.0 / 2.0 / 3.0, a Fortran-ordered array, a
                             float array, a 1-D column and a value outside int32
"""
import json
import os
import warnings

import numpy as np

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "datasets")
MODEL = os.path.join(HERE, "..", "..", "examples", "models", "tiny-random-gpt2")


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


def hf_text_lines(path):
    """The documents of a .txt file as Hugging Face datasets' "text" loader gives them."""
    import datasets

    ds = datasets.load_dataset("text", data_files=path, split="train", cache_dir=os.path.join("/tmp", "circuits_hf_cache"))
    return list(ds["text"])


def rule_rows(tok, docs, seq_len, prepend_bos, max_rows=0):
    """libcircuits' rule (docs/jobs.md "Datasets")."""
    ids = []
    for i, d in enumerate(docs):
        if i:
            ids.append(tok.eos_token_id)
        ids.extend(tok(d, add_special_tokens=False)["input_ids"])
    width = seq_len - 1 if prepend_bos else seq_len
    n = len(ids) // width
    if max_rows:
        n = min(n, max_rows)
    rows = np.asarray(ids[: n * width], dtype=np.int64).reshape(n, width)
    if prepend_bos:
        rows = np.concatenate([np.full((n, 1), tok.bos_token_id), rows], axis=1)
    return rows.astype("<i4")


def tl_rows(docs, seq_len, prepend_bos):
    """TransformerLens's tokenize_and_concatenate on the same documents (a fresh tokenizer: it
    adds a pad token to the one it is given)."""
    import datasets
    from transformer_lens.utils import tokenize_and_concatenate

    ds = datasets.Dataset.from_dict({"text": docs})
    out = tokenize_and_concatenate(ds, tokenizer(), max_length=seq_len, add_bos_token=bool(prepend_bos), num_proc=None)
    return np.asarray(out["tokens"], dtype=np.int64)


def legacy_tl_rows(tok, docs, seq_len, prepend_bos, batch=1000):
    """TransformerLens before 3.x (utils.tokenize_and_concatenate up to 2.x), re-enacted here as its
    source read: per map batch of 1000 documents, the texts joined by the EOS *string*, cut into
    20 pieces of equal character length, each piece tokenized alone (tokens can change at the
    19 cuts), pad tokens removed, cut into rows, a BOS column prepended."""
    rows = []
    width = seq_len - 1 if prepend_bos else seq_len
    for b in range(0, len(docs), batch):
        full = tok.eos_token.join(docs[b:b + batch])
        if not full.strip():
            continue
        n_chunks = 20
        length = (len(full) - 1) // n_chunks + 1
        chunks = [full[i * length:(i + 1) * length] for i in range(n_chunks)]
        ids = [t for c in chunks for t in tok(c, add_special_tokens=False)["input_ids"]]
        n = len(ids) // width
        r = np.asarray(ids[: n * width], dtype=np.int64).reshape(n, width)
        if prepend_bos:
            r = np.concatenate([np.full((n, 1), tok.bos_token_id), r], axis=1)
        rows.append(r)
    return np.concatenate(rows) if rows else np.zeros((0, seq_len), dtype=np.int64)


def compare(ours, theirs):
    n = min(len(ours), len(theirs))
    differ = int(sum(1 for i in range(n) if not np.array_equal(ours[i], theirs[i])))
    first = next((i for i in range(n) if not np.array_equal(ours[i], theirs[i])), None)
    return {"rows_rule": int(len(ours)), "rows_tl": int(len(theirs)), "rows_compared": int(n),
            "rows_differ": differ, "first_differing_row": first}


def write_npy_cases():
    d = os.path.join(OUT, "npy")
    os.makedirs(d, exist_ok=True)
    r, c = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
    signed = (r * 5 + c) * 3 - 7          # -7 .. 35
    unsigned = (r * 5 + c) * 3            # 0 .. 42
    for kind, base in (("i", signed), ("u", unsigned)):
        for size in (1, 2, 4, 8):
            orders = ("|",) if size == 1 else ("<", ">")
            for o in orders:
                dt = np.dtype(f"{o}{kind}{size}")
                name = f"{kind}{size}_{'le' if o != '>' else 'be'}.npy"
                np.save(os.path.join(d, name), base.astype(dt))
    for v in ((2, 0), (3, 0)):
        with open(os.path.join(d, f"i4_v{v[0]}.npy"), "wb") as f:
            np.lib.format.write_array(f, signed.astype("<i4"), version=v)
    np.save(os.path.join(d, "fortran.npy"), np.asfortranarray(signed.astype("<i4")))
    np.save(os.path.join(d, "float32.npy"), signed.astype("<f4"))
    np.save(os.path.join(d, "column_1d.npy"), np.arange(3, dtype="<i8") * 11)
    big = signed.astype("<i8")
    big[1, 2] = 2 ** 31
    np.save(os.path.join(d, "i8_out_of_range.npy"), big)
    neg = unsigned.astype("<u8")
    neg[2, 4] = 2 ** 64 - 1
    np.save(os.path.join(d, "u8_out_of_range.npy"), neg)
    np.save(os.path.join(d, "three_d.npy"), np.zeros((2, 2, 2), dtype="<i4"))


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = tokenizer()
    corpus = os.path.join(OUT, "corpus.txt")
    docs = hf_text_lines(corpus)
    with open(corpus, encoding="utf-8") as f:
        raw = f.read()
    assert docs == raw.split("\n"), "the text loader's documents are the file's lines"

    # .jsonl: the same documents; a blank line (skipped) and keys in another order
    with open(os.path.join(OUT, "corpus.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for i, d in enumerate(docs):
            if i == 5:
                f.write("\n")
            obj = {"text": d, "id": i} if i % 7 == 3 else {"id": i, "text": d}
            f.write(json.dumps(obj, ensure_ascii=(i % 2 == 0)) + "\n")

    cases = {
        "rows_txt_s32_bos": (docs, 32, 1, 0),
        "rows_txt_s17_nobos": (docs, 17, 0, 0),
        "rows_jsonl_s24_bos": (docs, 24, 1, 0),
        "rows_txt_s32_bos_max5": (docs, 32, 1, 5),
    }
    for name, (dd, seq_len, bos, max_rows) in cases.items():
        rows = rule_rows(tok, dd, seq_len, bos, max_rows)
        np.save(os.path.join(OUT, name + ".npy"), rows)
        print(f"{name}: {rows.shape}")

    # TransformerLens: the corpus as it is (one map batch), and repeated past datasets' map batch
    # of 1000 documents, where TL joins and cuts each batch on its own
    comparison = {"tokenizer": "examples/models/tiny-random-gpt2", "transformer_lens": None, "cases": {}}
    from importlib.metadata import version

    comparison["transformer_lens"] = version("transformer_lens")
    for label, dd, seq_len, bos in (("corpus_s32_bos", docs, 32, 1), ("corpus_s17_nobos", docs, 17, 0),
                                     ("corpus_x40_s32_bos", docs * 40, 32, 1)):
        ours = rule_rows(tok, dd, seq_len, bos)
        theirs = tl_rows(dd, seq_len, bos)
        comparison["cases"][label] = {"documents": len(dd), "seq_len": seq_len, "prepend_bos": bos,
                                      **compare(ours, theirs),
                                      "legacy_20_chunks": compare(ours, legacy_tl_rows(tok, dd, seq_len, bos))}
        print(label, comparison["cases"][label])
    with open(os.path.join(OUT, "tl_comparison.json"), "w") as f:
        json.dump(comparison, f, indent=1)
        f.write("\n")
    write_npy_cases()


if __name__ == "__main__":
    main()
