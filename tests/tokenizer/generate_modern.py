#!/usr/bin/env python3
"""Small tokenizers of the modern families and the ids Hugging Face `tokenizers` gives for a
corpus: tests/tokenizer/data/modern/ and tests/tokenizer/expected_modern.jsonl, which
tests/test_tokenizer_modern.c checks libcircuits against, exactly. Deterministic and offline.

    /opt/refenv/bin/python tests/tokenizer/generate_modern.py

Tokenizers (trained here on text from generate.py's random corpus, vocabularies < 2k):
  sp.model            sentencepiece BPE with byte_fallback (what Llama 1/2, Mistral, Gemma use)
  llama2/             tokenizer.json by transformers' LlamaConverter, legacy (as the hub's Llama 2
                      and Mistral files: normalizer Prepend("▁") + Replace(" ", "▁"), no
                      pre-tokenizer, decoder Replace/ByteFallback/Fuse/Strip), with Llama 2's
                      post-processor ("<s> $A")
  llama_ms/           the same model, non-legacy (pre_tokenizer Metaspace prepend_scheme "first")
  llama_split/        the same with the older files' Metaspace (prepend_scheme always, split) and
                      Metaspace decoder (which has no ByteFallback: "<0xNN>" decodes as itself)
  gemma/              GemmaConverter (normalizer Replace only, Split(" ", merged_with_previous),
                      decoder without Strip), post-processor "<bos> $A", Gemma's special ids
  llama3/             tokenizers byte-level BPE with Llama 3's Split regex, ByteLevel(use_regex
                      false), ignore_merges, special tokens <|begin_of_text|> ..., "<|begin_of_text|> $A"
  qwen2/              the same with Qwen2's regex and NFC normalizer, no BOS
  added/              qwen2/ with added tokens: single_word, lstrip/rstrip, normalized (NFC), special
  llama2.gguf         the sentencepiece model as GGUF tokenizer.ggml.model "llama" (gguf package)
  llama3.gguf,        llama3/ and qwen2/ as GGUF tokenizer.ggml.model "gpt2" with tokenizer.ggml.pre
  qwen2.gguf          "llama-bpe" / "qwen2" (as llama.cpp's convert_hf_to_gguf.py names them)

Each line: {"t": text, kind: ids of tokenizer.encode(text) (add_special_tokens: the default, so
with the post-processor's BOS), "d": {kind: decode}} where "d" lists the decodes
(skip_special_tokens=False) of encode(text, add_special_tokens=False) that differ from t.
"""
import json
import os
import random
import shutil
import sys

import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:  # generate.py imports tiktoken for its own references; only its corpus functions are used here
    import tiktoken  # noqa: F401
except ImportError:
    import types
    sys.modules["tiktoken"] = types.ModuleType("tiktoken")
import generate as g  # noqa: E402

OUT = os.path.join(HERE, "data", "modern")
LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SOURCE = """Written by tests/tokenizer/generate_modern.py (deterministic, offline; run it with
/opt/refenv/bin/python): sentencepiece 0.2.3 BPE models trained on text from
tests/tokenizer/generate.py's corpus (sp.model; sp_gemma.model with Gemma's id layout), converted
to tokenizer.json by transformers 5.25's LlamaConverter (llama2: legacy, llama_ms: Metaspace) and
GemmaConverter (gemma); tokenizers 0.23.3 byte-level BPE with Llama 3's and Qwen2's Split regexes
(llama3, qwen2, added); GGUF files by the gguf 0.19.0 package (llama2.gguf: model "llama" with
scores; llama3.gguf, qwen2.gguf: model "gpt2" with pre llama-bpe / qwen2). No file comes from a
model hub.
"""

PROSE = ("The quick brown fox jumps over the lazy dog. Hello world! def main(): return 42 "
         "café naïve résumé 東京 こんにちは Привет мир 12345 don't I'm we'll they've")


def training_text(rng):
    lines = [PROSE] * 1000
    lines += [g.random_text(rng, rng.randint(3, 20)).replace("<|", "<") for _ in range(300)]
    return "\n".join(lines)


class SlowStandIn:
    """What transformers' converters read from a slow tokenizer."""

    pad_token, eos_token, bos_token = "<pad>", "<eos>", "<bos>"  # Gemma's, by position 0, 1, 2

    def __init__(self, path, legacy):
        self.vocab_file = path
        self.legacy = legacy
        self.add_prefix_space = True
        self.sp = spm.SentencePieceProcessor(model_file=path)

    def convert_ids_to_tokens(self, i):
        return self.sp.id_to_piece(i)


def sp_tokenizers(train_path):
    from transformers.convert_slow_tokenizer import GemmaConverter, LlamaConverter, generate_merges

    class Extractor:
        """transformers 5.25's SentencePieceExtractor.extract takes a model type now, and
        SpmConverter.tokenizer still passes it the scores (AttributeError); this is the extract of
        transformers 4.x: the vocabulary by id, merges ordered by the merged piece's score."""

        def __init__(self, path):
            self.sp = spm.SentencePieceProcessor(model_file=path)

        def extract(self, vocab_scores=None):
            vocab = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
            return vocab, generate_merges(vocab, vocab_scores)

    class GemmaExtractor(Extractor):
        """GemmaSentencePieceExtractor.extract (its self.sp is never set in 5.25): "\t" is
        <0x09>'s id when the model lacks it, as GemmaConverter.vocab renames that piece."""

        def extract(self, vocab_scores=None):
            vocab = {self.sp.id_to_piece(i): i for i in range(self.sp.get_piece_size())}
            if "\t" not in vocab:
                vocab["\t"] = vocab.get("<0x09>")
            return vocab, generate_merges(vocab, vocab_scores)

    class Llama(LlamaConverter):
        SpmExtractor = Extractor

    class Gemma(GemmaConverter):
        SpmExtractor = GemmaExtractor

    def train(prefix, **ids):
        spm.SentencePieceTrainer.train(
            input=train_path, model_prefix=prefix, vocab_size=1500, model_type="bpe", byte_fallback=True,
            character_coverage=0.98, num_threads=1, split_digits=True, allow_whitespace_only_pieces=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2, **ids)
        os.remove(prefix + ".vocab")

    prefix = os.path.join(OUT, "sp")
    train(prefix, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    # Gemma's layout: pad 0, eos 1, bos 2, unk 3
    train(os.path.join(OUT, "sp_gemma"), pad_id=0, eos_id=1, bos_id=2, unk_id=3)
    out = {}
    llama = Llama(SlowStandIn(prefix + ".model", True)).converted()
    llama.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                         special_tokens=[("<s>", 1)])
    # the hub's Llama 2 / Mistral files list <unk> among the special added tokens (transformers'
    # slow-to-fast conversion added it from special_tokens_map); 5.25's converter adds only the
    # control pieces <s> and </s>
    llama.add_special_tokens(["<unk>"])
    out["llama2"] = llama
    ms = Llama(SlowStandIn(prefix + ".model", False)).converted()
    ms.post_processor = llama.post_processor
    ms.add_special_tokens(["<unk>"])
    out["llama_ms"] = ms
    # the older files' form: Metaspace with split (and prepend_scheme always), Metaspace decoder
    old = Llama(SlowStandIn(prefix + ".model", False)).converted()
    old.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    old.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    old.post_processor = llama.post_processor
    old.add_special_tokens(["<unk>"])
    out["llama_split"] = old
    gem = Gemma(SlowStandIn(os.path.join(OUT, "sp_gemma.model"), True)).converted()
    gem.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", 2)])
    out["gemma"] = gem
    return out


def byte_level(train_path, pat, nfc, specials, bos, ignore_merges):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([train_path], tr)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def write_gguf_bpe(path, tok_json, pre, bos, eos, add_bos):
    """A byte-level tokenizer.json as GGUF tokenizer.ggml.model "gpt2" with llama.cpp's
    pre-tokenizer name (llama-bpe, qwen2), as convert_hf_to_gguf.py writes it."""
    import gguf

    j = json.load(open(tok_json, encoding="utf-8"))
    vocab = dict(j["model"]["vocab"])
    special = {a["content"]: a["id"] for a in j["added_tokens"] if a["special"]}
    vocab.update(special)
    toks = [None] * (max(vocab.values()) + 1)
    for k, v in vocab.items():
        toks[v] = k
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(toks)
    w.add_token_types([int(gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL) for t in toks])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]])
    if bos is not None:
        w.add_bos_token_id(vocab[bos])
    w.add_eos_token_id(vocab[eos])
    w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_gguf(path):
    import gguf

    sp = spm.SentencePieceProcessor(model_file=os.path.join(OUT, "sp.model"))
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    toks, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        toks.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        t = gguf.TokenType.NORMAL
        if sp.is_unknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.is_control(i):
            t = gguf.TokenType.CONTROL
        elif sp.is_byte(i):
            t = gguf.TokenType.BYTE
        types.append(int(t))
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


ADDED_TEXT = ["ab", " ab ", "<X>", " <X> ", "<|sep|>", "café", "cafe\u0301", "<tool>", " <tool> "]
SPECIAL_TEXT = ["<s>", "</s>", "<unk>", "<bos>", "<eos>", "<pad>", "<|begin_of_text|>", "<|end_of_text|>",
                "<|eot_id|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s", "<|im_start", "<0x41>", "▁"]


def corpus(rng):
    fixed = g.fixed_cases() + [
        "Hello", " Hello", "  Hello", "Hello world", "▁Hello▁world", "a▁b", "<s>Hello", "Hello<s>world",
        "<s> Hello</s>", " <s> ", "<|begin_of_text|>Hi<|eot_id|>", "<|im_start|>user\nHi<|im_end|>\n",
        "x<|endoftext|>y", "\u00e9\u0301 e\u0301", "ｶﾀｶﾅ ㍍", "I'M YOU'RE we'LL", "123456789 1234",
        "def f(x):\n    return x  # ok\n\n\tpass", "foo\r\n\r\n  bar", "  \n  \n", "a \n\n b", "!!!\n\n",
        "\u017fs 's", "x   \n", "😀" * 5, "\U0010fffd", "\u0300abc", "<0x41>", "\t\tindent",
        # the added tokens of "added": single_word "ab" and "<tool>", lstrip/rstrip "<X>", "<|sep|>"
        "ab", "xab", "ab x", " ab ", "_ab", "1ab", "-ab", "éab", "ab-", "abé", "ab_", "\u00a0ab", "中ab",
        "½ab", "Ⅻab", "‿ab", "\u200dab", "\u0903ab", "²ab", "٣ab", "ab½", "ab\u0301", "\u00adab",
        "e\u0301ab", "xab ab", "a\u00a0 <X> \u3000b", "a\t<X>\nb", "<X><X>", " <X>", "<X> ", "x <|sep|> y",
        "café cafe\u0301 caf\u00e9s", "<tool>x", "a <tool> b", "a<tool>", "  <tool>  ", "ab<X>ab",
    ]
    texts = fixed
    for _ in range(270):
        t = g.random_text(rng, rng.randint(1, 25))
        if rng.random() < 0.2:
            t = t + rng.choice(SPECIAL_TEXT + ADDED_TEXT) + g.random_text(rng, rng.randint(0, 4))
        texts.append(t)
    texts += [("the quick brown fox " * 150).strip(), g.from_ranges(rng, g.SCRIPTS["cjk"], 800),
              " " * 700 + "x", "".join(rng.choice(g.EMOJI) for _ in range(200))]
    return texts


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    with open(os.path.join(OUT, "SOURCE.txt"), "w") as f:
        f.write(SOURCE)
    rng = random.Random(20261204)
    train_path = os.path.join("/tmp", "circuits_modern_train.txt")
    with open(train_path, "w", encoding="utf-8") as f:
        f.write(training_text(rng))
    toks = sp_tokenizers(train_path)
    toks["llama3"] = byte_level(train_path, LLAMA3_PAT, False,
                                ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], "<|begin_of_text|>", True)
    toks["qwen2"] = byte_level(train_path, QWEN2_PAT, True, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                               None, False)
    # added tokens with every flag, on Qwen2's (NFC: "normalized" tokens match the normalized text)
    added = byte_level(train_path, QWEN2_PAT, True, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, False)
    added.add_tokens([AddedToken("ab", single_word=True, normalized=False),
                      AddedToken("<X>", lstrip=True, rstrip=True, normalized=False),
                      AddedToken("cafe\u0301", normalized=True),
                      AddedToken("<tool>", single_word=True, lstrip=True, normalized=False)])
    added.add_special_tokens([AddedToken("<|sep|>", lstrip=True, normalized=False)])
    toks["added"] = added
    cfg = {
        "llama2": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
                   "add_eos_token": False, "legacy": True},
        "llama_split": {"bos_token": "<s>", "eos_token": "</s>"},
        "llama_ms": {"bos_token": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "__type": "AddedToken"},
                     "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False, "legacy": False},
        "gemma": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "add_bos_token": True,
                  "add_eos_token": False},
        "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
        "qwen2": {"bos_token": None, "eos_token": "<|endoftext|>"},
        "added": {"bos_token": None, "eos_token": "<|endoftext|>"},
    }
    for name, tok in toks.items():
        d = os.path.join(OUT, name)
        os.makedirs(d)
        tok.save(os.path.join(d, "tokenizer.json"))
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(cfg[name], f, indent=1)
        if name == "llama_ms":  # the other merges form, "a b" (SentencePiece pieces have no spaces)
            j = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
            j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(j, f, ensure_ascii=False, indent=1)
        toks[name] = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))  # as the files say
    write_gguf(os.path.join(OUT, "llama2.gguf"))
    write_gguf_bpe(os.path.join(OUT, "llama3.gguf"), os.path.join(OUT, "llama3", "tokenizer.json"), "llama-bpe",
                   "<|begin_of_text|>", "<|end_of_text|>", True)
    write_gguf_bpe(os.path.join(OUT, "qwen2.gguf"), os.path.join(OUT, "qwen2", "tokenizer.json"), "qwen2",
                   None, "<|endoftext|>", False)

    texts = corpus(rng)
    counts = {k: 0 for k in toks}
    path = os.path.join(HERE, "expected_modern.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            rec = {"t": t}
            dec = {}
            for name, tok in toks.items():
                ids = tok.encode(t).ids
                rec[name] = ids
                d = tok.decode(tok.encode(t, add_special_tokens=False).ids, skip_special_tokens=False)
                if d != t:
                    dec[name] = d
                counts[name] += len(ids)
            if dec:
                rec["d"] = dec
            f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.remove(train_path)
    print(f"{len(texts)} texts -> {path} ({os.path.getsize(path)} bytes); tokens {counts}; vocab "
          + ", ".join(f"{k} {v.get_vocab_size()}" for k, v in toks.items()))


if __name__ == "__main__":
    main()
