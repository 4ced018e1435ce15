/* libFuzzer property harness: encode and decode arbitrary bytes with real tokenizers, loaded
 * once (GPT-2's and GPT-NeoX's tokenizer.json from tests/tokenizer/data, and the modern ones of
 * tests/tokenizer/data/modern). The input is
 *   [1 byte mode] [rest: text]
 * mode bit 0: GPT-NeoX instead of GPT-2; bit 1: parse_special; bit 2: prepend_bos (the modern
 * tokenizers: -1, their post-processor's); bit 3: add_prefix_space 1 (else the tokenizer's
 * setting); bits 4-6: 1..5 for a modern tokenizer instead (Llama 2, Gemma, Llama 3, Qwen2
 * tokenizer.json, Llama 2 GGUF), whose decode(encode(x)) must be x (NFC(x) for Qwen2; "▁"
 * as ' ' for the character-level ones, as Hugging Face decodes it) without special tokens,
 * prefix-space option or BOS.
 * Properties (docs/tokenizer.md), any violation aborts:
 *   - measuring (cap 0) and encoding into exactly that capacity agree; one id less is E_RANGE;
 *   - without a prefix space, at most len + 1 ids;
 *   - the heap merge loop and the quadratic one give the same ids;
 *   - every id decodes, and decode(encode(x)) is x for GPT-2 (with "<|endoftext|>" first for
 *     BOS, and the prefix space put before each segment that lacks one), NFC(x) less the bytes
 *     without a token for GPT-NeoX (checked without parse_special: one segment). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "circuits.h"
#include "tokenizer.h"

#ifndef FUZZ_TOKENIZER_DATA
#error "FUZZ_TOKENIZER_DATA (tests/tokenizer/data) must be defined"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char eot[] = "<|endoftext|>";

static circuits_tokenizer *load_modern(int k)
{
    static const char *const path[6] = {NULL, FUZZ_TOKENIZER_DATA "/modern/llama2",
                                        FUZZ_TOKENIZER_DATA "/modern/gemma", FUZZ_TOKENIZER_DATA "/modern/llama3",
                                        FUZZ_TOKENIZER_DATA "/modern/qwen2", FUZZ_TOKENIZER_DATA "/modern/llama2.gguf"};
    static circuits_tokenizer *tok[6];
    if (!tok[k] && circuits_tokenizer_load(&tok[k], path[k]) != CIRCUITS_OK) {
        fprintf(stderr, "fuzz_encode: %s\n", circuits_last_error());
        abort(); /* harness setup: the test data must load */
    }
    return tok[k];
}

static circuits_tokenizer *load_once(int neox)
{
    static circuits_tokenizer *tok[2];
    if (!tok[neox]) {
        const char *path = neox ? FUZZ_TOKENIZER_DATA "/neox/20B_tokenizer.json"
                                : FUZZ_TOKENIZER_DATA "/gpt2-hf/tokenizer.json";
        if (circuits_tokenizer_load(&tok[neox], path) != CIRCUITS_OK) {
            fprintf(stderr, "fuzz_encode: %s\n", circuits_last_error());
            abort(); /* harness setup: the test data must load */
        }
    }
    return tok[neox];
}

/* ids for text (*n of them, malloc'd): measured with cap 0, then one id short (E_RANGE), then
 * into exactly the capacity measured; all three must agree on the count. */
static int32_t *encode(const circuits_tokenizer *t, const uint8_t *text, size_t len,
                       const circuits_encode_options *o, size_t *n)
{
    size_t need = 0, got = 0;
    int rc = circuits_tokenizer_encode(t, (const char *)text, len, o, NULL, 0, &need);
    if (!(rc == CIRCUITS_E_RANGE && need > 0) && !(rc == CIRCUITS_OK && need == 0)) abort();
    int32_t *ids = malloc((need + 1) * sizeof *ids);
    if (!ids) abort();
    if (need && (circuits_tokenizer_encode(t, (const char *)text, len, o, ids, need - 1, &got) != CIRCUITS_E_RANGE ||
                 got != need))
        abort();
    if (circuits_tokenizer_encode(t, (const char *)text, len, o, ids, need, &got) != CIRCUITS_OK || got != need)
        abort();
    *n = need;
    return ids;
}

/* The ids again with pieces of more than linear_max bytes through the heap merge loop: they
 * must equal want[0..n). */
static void same_with_merge_loop(const circuits_tokenizer *t, const uint8_t *text, size_t len,
                                 const circuits_encode_options *o, size_t linear_max, const int32_t *want, size_t n)
{
    size_t saved = cx_tok_bpe_linear_max, got = 0;
    cx_tok_bpe_linear_max = linear_max;
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    if (!ids) abort();
    if (circuits_tokenizer_encode(t, (const char *)text, len, o, ids, n + 1, &got) != CIRCUITS_OK || got != n ||
        memcmp(ids, want, n * sizeof *ids) != 0)
        abort();
    free(ids);
    cx_tok_bpe_linear_max = saved;
}

/* What decode(encode(text)) must give for GPT-2: text, with "<|endoftext|>" before it for BOS
 * and a space before each segment (the text between special tokens) that has none. */
static char *gpt2_expected(const uint8_t *s, size_t n, const circuits_encode_options *o, size_t *out_len)
{
    char *out = malloc(sizeof eot + 2 * n + 1), *w = out;
    if (!out) abort();
    if (o->prepend_bos) w += sprintf(w, "%s", eot);
    size_t pos = 0;
    while (pos <= n) {
        const uint8_t *hit = NULL;
        if (o->parse_special)
            for (size_t i = pos; i + sizeof eot - 1 <= n && !hit; i++)
                if (memcmp(s + i, eot, sizeof eot - 1) == 0) hit = s + i;
        size_t end = hit ? (size_t)(hit - s) : n;
        if (end > pos && o->add_prefix_space == 1 && s[pos] != ' ') *w++ = ' ';
        memcpy(w, s + pos, end - pos);
        w += end - pos;
        if (!hit) break;
        memcpy(w, eot, sizeof eot - 1);
        w += sizeof eot - 1;
        pos = end + sizeof eot - 1;
    }
    *out_len = (size_t)(w - out);
    return out;
}

/* ... for GPT-NeoX without parse_special: NFC(text) less the bytes that have no token */
static char *neox_expected(const circuits_tokenizer *t, const uint8_t *s, size_t n,
                           const circuits_encode_options *o, size_t *out_len)
{
    uint8_t *norm = NULL;
    size_t nn = n;
    if (cx_nfc(s, n, &norm, &nn) != CIRCUITS_OK) abort();
    const uint8_t *src = norm ? norm : s;
    char *out = malloc(sizeof eot + nn + 1), *w = out;
    if (!out) abort();
    if (o->prepend_bos) w += sprintf(w, "%s", eot);
    for (size_t i = 0; i < nn; i++)
        if (t->byte_tok[src[i]] != CX_TOK_UNKNOWN) *w++ = (char)src[i];
    cx_free(norm);
    *out_len = (size_t)(w - out);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t mode = data[0], *text = data + 1;
    const size_t len = size - 1;
    const int neox = mode & 1, modern = (mode >> 4) & 7;
    if (modern > 5) return 0;
    const circuits_tokenizer *t = modern ? load_modern(modern) : load_once(neox);
    circuits_encode_options o;
    circuits_encode_options_init(&o);
    o.parse_special = (mode >> 1) & 1;
    o.prepend_bos = (mode >> 2) & 1 ? (modern ? -1 : 1) : 0;
    o.add_prefix_space = mode & 8 ? 1 : -1;

    size_t n;
    int32_t *ids = encode(t, text, len, &o, &n);
    if (!modern && o.add_prefix_space != 1 && n > len + 1) abort();
    /* a "▁" is one character of three bytes: at most one id per byte of the escaped text */
    if (modern && n > 3 * len + 5) abort();
    same_with_merge_loop(t, text, len, &o, 0, ids, n);                  /* every piece: the heap */
    if (len <= 1024) same_with_merge_loop(t, text, len, &o, SIZE_MAX, ids, n); /* every piece: quadratic */

    size_t need = 0, got = 0;
    if (circuits_tokenizer_decode(t, ids, n, NULL, 0, &need) != CIRCUITS_E_RANGE) abort();
    char *dec = malloc(need);
    if (!dec || circuits_tokenizer_decode(t, ids, n, dec, need, &got) != CIRCUITS_OK || got + 1 != need) abort();
    char *want = NULL;
    size_t want_len = 0;
    bool plain = !o.parse_special && o.add_prefix_space != 1 && !o.prepend_bos;
    if (modern == 4) { /* Qwen2: NFC */
        if (plain) want = neox_expected(t, text, len, &o, &want_len);
    } else if (modern) {
        if (plain) { /* x, with the character-level models' "▁" in the text decoded as ' ' */
            want = malloc(len + 1);
            if (!want) abort();
            for (size_t i = 0; i < len;) {
                if (modern != 3 && i + 3 <= len && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
                    want[want_len++] = ' ';
                    i += 3;
                } else {
                    want[want_len++] = (char)text[i++];
                }
            }
        }
    } else if (!neox) want = gpt2_expected(text, len, &o, &want_len);
    else if (!o.parse_special && o.add_prefix_space != 1) want = neox_expected(t, text, len, &o, &want_len);
    if (want && (want_len != got || memcmp(want, dec, got) != 0)) {
        fprintf(stderr, "decode(encode(x)) != expected: %zu bytes vs %zu\n", got, want_len);
        abort();
    }
    free(want);
    free(dec);
    free(ids);
    return 0;
}
