/* The Split pre-tokenizer regexes of Llama 3 and Qwen2 as a hand-written scanner (no regex
 * engine), with the classes of tokenizer_pretok.c (invalid bytes are units of class "other"):
 *
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
 *   |\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * Qwen2's is the same with \p{N} for \p{N}{1,3}. The alternatives are tried in order at each
 * position, as Oniguruma (Hugging Face tokenizers' regex engine) does. */
#include "tokenizer.h"

static inline int unit(const uint8_t *s, size_t n, size_t i, size_t *len) { return cx_pretok_unit(s, n, i, len); }

static size_t run_of(const uint8_t *s, size_t n, size_t i, int cls)
{
    while (i < n) {
        size_t l;
        if (unit(s, n, i, &l) != cls) break;
        i += l;
    }
    return i;
}

static inline uint8_t fold(uint8_t c) { return (uint8_t)(c >= 'A' && c <= 'Z' ? c | 0x20 : c); }

/* Length of the contraction at s[i] (s[i] == '\''), 0 if none. Case-insensitive: Unicode case
 * folding also makes U+017F (long s) an 's'. */
static size_t contraction(const uint8_t *s, size_t n, size_t i)
{
    if (i + 1 >= n) return 0;
    uint8_t a = fold(s[i + 1]);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (s[i + 1] == 0xC5 && i + 2 < n && s[i + 2] == 0xBF) return 3; /* 'ſ */
    if (i + 2 < n) {
        uint8_t b = fold(s[i + 2]);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    return 0;
}

size_t cx_split_next(const uint8_t *s, size_t n, size_t i, int max_digits)
{
    if (s[i] == '\'') {
        size_t c = contraction(s, n, i);
        if (c) return i + c;
    }
    size_t l0;
    int c0 = unit(s, n, i, &l0);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c0 == CX_CLS_L) return run_of(s, n, i + l0, CX_CLS_L);
    if (c0 != CX_CLS_N && s[i] != '\r' && s[i] != '\n' && i + l0 < n) {
        size_t l1;
        if (unit(s, n, i + l0, &l1) == CX_CLS_L) return run_of(s, n, i + l0 + l1, CX_CLS_L);
    }
    /* \p{N}{1,max_digits} */
    if (c0 == CX_CLS_N) {
        size_t j = i + l0, l;
        for (int k = 1; k < max_digits && j < n && unit(s, n, j, &l) == CX_CLS_N; k++) j += l;
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t j = i;
    if (s[i] == ' ' && i + 1 < n) {
        size_t l1;
        if (unit(s, n, i + 1, &l1) == CX_CLS_O) j = i + 1;
    }
    size_t lj;
    if (unit(s, n, j, &lj) == CX_CLS_O) {
        j = run_of(s, n, j, CX_CLS_O);
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j;
    }
    /* c0 is whitespace. \s*[\r\n]+ : up to the run's last \r or \n, if it has one */
    size_t e = i, nl_end = 0, last = i;
    while (e < n) {
        size_t l;
        if (unit(s, n, e, &l) != CX_CLS_WS) break;
        if (s[e] == '\r' || s[e] == '\n') nl_end = e + 1;
        last = e;
        e += l;
    }
    if (nl_end) return nl_end;
    /* \s+(?!\S) | \s+ : the run, less its last character when a non-space follows */
    if (e == n || last == i) return e;
    return last;
}
