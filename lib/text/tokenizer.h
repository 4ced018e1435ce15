/* BPE tokenizer internals shared by lib/text/tokenizer*.c. Nothing here is public API.
 *
 *   tokenizer.c          tables (vocabulary, merges, added tokens), BPE, encode/decode, the API
 *   tokenizer_pretok.c   UTF-8 decoding, Unicode classes, GPT-2's pre-tokenizer scanner, NFC
 *   tokenizer_added.c    added tokens in text (leftmost-longest, lstrip/rstrip, single_word)
 *   tokenizer_split.c    the Llama 3 / Qwen2 Split regexes as a scanner
 *   tokenizer_sp.c       SentencePiece-style pieces: the "▁" normalizers and Metaspace, characters
 *                        to symbols with byte fallback, "<0xNN>" / "▁" decoding
 *   tokenizer_parts.c    tokenizer.json's normalizer, pre_tokenizer, decoder, post_processor
 *   tokenizer_load.c     tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe, side files
 *   tokenizer_gguf.c     GGUF metadata (tokenizer.ggml.*), models "gpt2" and "llama"
 *
 * Two kinds of model: byte-level (GPT-2's ByteLevel pre-tokenizer: pieces are bytes mapped to
 * characters) and character-level (no ByteLevel: SentencePiece-style, the vocabulary holds raw
 * UTF-8 with "▁" for the space, unknown characters fall back to "<0xNN>" byte tokens).
 *
 * A loader fills a tokenizer in this order: cx_tok_new, cx_tok_set_token for every vocabulary
 * entry, cx_tok_index (the string -> id table; rejects duplicate strings), cx_tok_add_merge in
 * rank order, cx_tok_add_added for added/special tokens, then cx_tok_finish. */
#ifndef CIRCUITS_TOKENIZER_H
#define CIRCUITS_TOKENIZER_H

#include "internal.h"

/* Limits applied to every (untrusted) tokenizer file. */
#define CX_TOK_MAX_VOCAB (1u << 24)        /* ids must be below this */
#define CX_TOK_MAX_TOKEN_BYTES (1u << 16)  /* longest token string */
#define CX_TOK_MAX_MERGES (1u << 24)
#define CX_TOK_MAX_ADDED (1u << 20)

/* Pre-tokenizers (besides ByteLevel, which is CX_PRE_BYTELEVEL with use_regex / split_regex). */
enum { CX_PRE_BYTELEVEL, CX_PRE_NONE, CX_PRE_METASPACE, CX_PRE_SPLIT_SPACE };
enum { CX_MS_NEVER, CX_MS_FIRST, CX_MS_ALWAYS };
enum { CX_SPLIT_NONE, CX_SPLIT_LLAMA3, CX_SPLIT_QWEN2 };

/* Symbol id of a byte that has no token (never part of a merge). */
#define CX_TOK_UNKNOWN (-2)

typedef struct cx_tok_added {
    uint32_t off, len;   /* content (raw UTF-8, as matched in text) in the arena */
    int32_t id;
    uint8_t special;     /* 1: not matched when parse_special is 0 */
    uint8_t normalized;  /* 1: matched in the normalized text (after NFC), else in the raw text */
    uint8_t lstrip, rstrip; /* 1: the match swallows whitespace on that side */
    uint8_t single_word;    /* 1: only matched with no word character (regex \w) beside it */
} cx_tok_added;

typedef struct cx_tok_merge_slot {
    uint64_t key;        /* (uint64)left << 32 | right; UINT64_MAX when empty */
    uint32_t rank;
    int32_t id;          /* the merged token */
} cx_tok_merge_slot;

struct circuits_tokenizer {
    /* per id, [cap_ids]: vocabulary string (byte-level form) and decoded bytes, in arena;
     * str_len[i] == UINT32_MAX marks an id with no vocabulary string, dec_len likewise */
    uint32_t *str_off, *str_len, *dec_off, *dec_len;
    size_t cap_ids;      /* ids accepted: [0, cap_ids) */
    size_t n_ids;        /* 1 + largest id used (the vocabulary size) */
    size_t n_strings;    /* vocabulary entries set */
    char *arena;
    size_t arena_len, arena_cap;

    int32_t *index;      /* open addressing: id or -1, keyed by vocabulary string */
    size_t index_mask;

    cx_tok_merge_slot *merges;
    size_t merge_mask, n_merges;

    cx_tok_added *added; /* sorted by (first byte, length descending) after finish */
    size_t n_added, cap_added;
    uint32_t added_first[257]; /* added[added_first[b] .. added_first[b + 1]) start with byte b */

    int32_t byte_tok[256]; /* token of each single byte, CX_TOK_UNKNOWN if none */
    int32_t bos, eos, unk; /* -1 if none */
    uint8_t nfc;           /* normalizer: NFC */
    uint8_t add_prefix_space; /* pre-tokenizer default */
    uint8_t use_regex;     /* 0: each segment is one piece (ByteLevel use_regex false) */
    uint8_t ignore_merges; /* a piece that is itself a token is used whole */
    uint8_t fuse_unk;      /* consecutive unknown bytes give one unk */
    /* character-level (SentencePiece-style) models: tokenizer_sp.c */
    uint8_t char_level;    /* BPE over UTF-8 characters, not over byte-level characters */
    uint8_t byte_fallback; /* a character without a token becomes its "<0xNN>" tokens */
    uint8_t norm_prepend;  /* normalizer Prepend("▁") */
    uint8_t norm_replace;  /* normalizer Replace(" ", "▁") */
    uint8_t pre;           /* CX_PRE_* */
    uint8_t ms_prepend;    /* Metaspace prepend_scheme: CX_MS_NEVER / FIRST / ALWAYS */
    uint8_t ms_split;      /* Metaspace split: pieces start at each "▁" */
    uint8_t split_regex;   /* CX_SPLIT_*: a Split regex before the ByteLevel pre-tokenizer */
    uint8_t dec_byte_fallback; /* decoder ByteFallback: "<0xNN>" decodes to the byte */
    uint8_t dec_strip;     /* decoder Strip(" ", n, 0): leading spaces removed */
    uint8_t dec_ms_first;  /* decoder Metaspace (prepend_scheme not never): the first token's "▁" dropped */
    uint8_t add_bos, add_eos; /* the post-processor's (encode's prepend_bos -1) */
    int32_t byte_fb[256];  /* "<0xNN>" token of each byte, -1 if none */
    char format[24];       /* "tokenizer.json", "vocab.json", "gguf", ... (messages) */
};

/* ---- building (tokenizer.c) ---- */
/* A tokenizer that accepts ids in [0, cap_ids). */
int cx_tok_new(circuits_tokenizer **out, size_t cap_ids, const char *format);
/* The vocabulary entry `id` <-> str (byte-level form, e.g. "Ġthe"). `src` names the file in
 * messages. Fails on a repeated id, an id out of range, an over-long string. */
int cx_tok_set_token(circuits_tokenizer *t, int64_t id, const char *str, size_t len, const char *src);
/* Builds the string -> id table; fails (CIRCUITS_E_FORMAT) if a string appears twice. */
int cx_tok_index(circuits_tokenizer *t, const char *src);
/* -1 if absent. */
int32_t cx_tok_lookup(const circuits_tokenizer *t, const char *str, size_t len);
/* The merge (a, b) with the given rank; a, b and a+b must be vocabulary strings. A repeated
 * pair keeps the later rank (as Hugging Face tokenizers does). */
int cx_tok_add_merge(circuits_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                     uint32_t rank, const char *src);
/* An added token: `content` is raw text. If `id` has no vocabulary string, content becomes it.
 * The token decodes to content. */
int cx_tok_add_added(circuits_tokenizer *t, int64_t id, const char *content, size_t len, int special,
                     int normalized, int lstrip, int rstrip, const char *src);
/* Marks the added token added last as single_word. */
void cx_tok_last_added_single_word(circuits_tokenizer *t);
/* The id of the added token with this content, or -1. */
int32_t cx_tok_find_added(const circuits_tokenizer *t, const char *content, size_t len);
/* Decoded bytes, byte table, added-token index; checks bos/eos/unk. */
int cx_tok_finish(circuits_tokenizer *t, const char *src);

/* ---- tokenizer_added.c ---- */
/* The leftmost-longest added token (normalized or not, special only if parse_special) in
 * s[from..n): its id and the span it takes (with lstrip/rstrip whitespace); false if none. */
bool cx_tok_find_match(const circuits_tokenizer *t, const uint8_t *s, size_t n, size_t from, int normalized,
                       int parse_special, size_t *mstart, size_t *mend, int32_t *id);

/* ---- loaders (tokenizer_load.c, tokenizer_gguf.c); each fills *out or leaves it NULL ---- */
int cx_tok_load_hf_json(circuits_tokenizer **out, const char *path, const char *dir);
int cx_tok_load_vocab_merges(circuits_tokenizer **out, const char *vocab_path, const char *merges_path,
                             const char *dir);
int cx_tok_load_gguf(circuits_tokenizer **out, const char *path);
/* The tokenizer of a parsed GGUF header (io/gguf.h: a model file's own metadata). */
struct cx_gguf;
int cx_tok_from_gguf(circuits_tokenizer **out, const struct cx_gguf *g);
/* Loads the tokenizer of a model directory if it has one: OK with *out NULL if it has none. */
int cx_tokenizer_load_optional(circuits_tokenizer **out, const char *dir);

/* ---- text (tokenizer_pretok.c) ---- */
/* Length of the UTF-8 sequence at s[0] (n >= 1 bytes available) and its code point; 0 if the
 * byte does not start a valid, shortest-form sequence of a scalar value. */
size_t cx_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
/* End of the GPT-2 pre-tokenizer match starting at s[i] (i < n). */
size_t cx_pretok_next(const uint8_t *s, size_t n, size_t i);
/* NFC of s[0..n): valid UTF-8 runs are normalized, other bytes pass through. *out is a new
 * cx_malloc'd buffer (NULL when s is already NFC-stable ASCII: then use s). */
int cx_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_len);

/* Unicode classes of the pre-tokenizer regexes, and the class and length of the unit at s[i]
 * (a valid UTF-8 character, or one invalid byte, of class "other"). */
enum { CX_CLS_L, CX_CLS_N, CX_CLS_WS, CX_CLS_O };
int cx_pretok_unit(const uint8_t *s, size_t n, size_t i, size_t *len);

/* Whether the character at s[i] is a word character for single_word added tokens: regex \w as
 * tokenizers matches it (letters, marks, Nd, Nl, connector punctuation, ZWNJ/ZWJ; not No). */
int cx_word_unit(const uint8_t *s, size_t n, size_t i);

/* ---- tokenizer_split.c ---- */
/* End of the Llama 3 (max_digits 3) or Qwen2 (max_digits 1) pre-tokenizer match at s[i]. */
size_t cx_split_next(const uint8_t *s, size_t n, size_t i, int max_digits);

/* ---- tokenizer_sp.c ---- */
/* s with every ' ' as "▁", and "▁" put first if `prepend` (and, when `only_if_missing`, s does
 * not already start with it). *out is cx_malloc'd. */
int cx_sp_escape(const uint8_t *s, size_t n, int prepend, int only_if_missing, uint8_t **out, size_t *out_len);
/* End of the piece at s[i] for the character-level pre-tokenizers (CX_PRE_METASPACE with
 * split: a piece starts at each "▁"; CX_PRE_SPLIT_SPACE: a piece ends after each ' '). */
size_t cx_sp_piece_next(const circuits_tokenizer *t, const uint8_t *s, size_t n, size_t i);
/* The initial symbols of a character-level piece into sym (room for n): each character's token,
 * else its bytes' "<0xNN>" tokens (byte_fallback), else CX_TOK_UNKNOWN (or nothing without an
 * unknown token). *m receives the count. */
void cx_sp_symbols(const circuits_tokenizer *t, const uint8_t *p, size_t n, int32_t *sym, size_t *m);
/* The decoded bytes of vocabulary string `id` of a character-level model ("▁" -> ' ', and with the
 * ByteFallback decoder "<0xNN>" -> the byte), at the arena's end. */
int cx_sp_decode_string(circuits_tokenizer *t, size_t id);
/* Merges from the pieces' scores, as transformers converts a SentencePiece BPE model
 * (scores[id] for every id). */
int cx_sp_merges_from_scores(circuits_tokenizer *t, const float *scores, const char *src);
/* Fills byte_fb from the vocabulary. */
void cx_sp_index_bytes(circuits_tokenizer *t);

/* Arena access for tokenizer_sp.c: n bytes appended, *off their offset. */
int cx_tok_arena_add(circuits_tokenizer *t, const void *s, size_t n, uint32_t *off);

/* The byte <-> character map of GPT-2's bytes_to_unicode. */
uint32_t cx_byte_to_char(uint8_t b);
/* -1 if c is not in the map. */
int cx_char_to_byte(uint32_t c);

/* Tests: pieces with at most this many bytes use the quadratic merge loop, longer ones the
 * heap (default 48). */
extern size_t cx_tok_bpe_linear_max;

#endif
