/* Matching added tokens in text, as Hugging Face tokenizers' AddedVocabulary does:
 * leftmost-longest, lstrip/rstrip over Unicode White_Space, single_word at word boundaries. */
#include "tokenizer.h"

#include <string.h>

/* Start of the character that ends at s[end] (end > from); an invalid byte is one. */
static size_t char_before(const uint8_t *s, size_t from, size_t end)
{
    size_t p = end - 1;
    while (p > from && end - p < 4 && (s[p] & 0xC0) == 0x80) p--;
    uint32_t cp;
    return cx_utf8_decode(s + p, end - p, &cp) == end - p ? p : end - 1;
}

/* Whether the character at s[i] (i < n) is of class cls; its length in *len. */
static bool unit_is(const uint8_t *s, size_t n, size_t i, int cls, size_t *len)
{
    return cx_pretok_unit(s, n, i, len) == cls;
}

static bool word_at(const uint8_t *s, size_t n, size_t i) { return cx_word_unit(s, n, i) != 0; }

/* Finds the leftmost-longest added token (of the given kind) in s[from..n): its id, and the
 * span it takes (with lstrip/rstrip whitespace: Unicode White_Space, as tokenizers' trim).
 * A single_word match with a word character beside it is dropped and its span skipped, as
 * tokenizers does with its matches. Returns false if none. */
bool cx_tok_find_match(const circuits_tokenizer *t, const uint8_t *s, size_t n, size_t from, int normalized,
                       int parse_special, size_t *mstart, size_t *mend, int32_t *id)
{
    for (size_t i = from; i < n; i++) {
        uint32_t a = t->added_first[s[i]], b = t->added_first[s[i] + 1];
        for (uint32_t k = a; k < b; k++) { /* longest first */
            const cx_tok_added *x = &t->added[k];
            if (x->normalized != normalized || (x->special && !parse_special)) continue;
            const uint8_t *c = (const uint8_t *)t->arena + x->off;
            if (x->len > n - i || (x->len > 1 && c[1] != s[i + 1]) || memcmp(c, s + i, x->len) != 0) continue;
            size_t st = i, en = i + x->len, l;
            if (x->single_word && ((st > 0 && word_at(s, n, char_before(s, 0, st))) || (en < n && word_at(s, n, en)))) {
                i = en - 1; /* the match is consumed */
                break;
            }
            if (x->lstrip)
                while (st > from && unit_is(s, n, char_before(s, from, st), CX_CLS_WS, &l)) st = char_before(s, from, st);
            if (x->rstrip)
                while (en < n && unit_is(s, n, en, CX_CLS_WS, &l)) en += l;
            *mstart = st;
            *mend = en;
            *id = x->id;
            return true;
        }
    }
    return false;
}

