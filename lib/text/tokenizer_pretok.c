/* Text handling for the tokenizer: UTF-8 decoding (invalid bytes are single units), the
 * Unicode classes of GPT-2's pre-tokenizer regex, the regex itself as a hand-written scanner,
 * GPT-2's byte <-> character map, and NFC (utf8proc). */
#include "tokenizer.h"

#include <string.h>
#include <utf8proc.h>

size_t cx_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    if (b < 0x80) { *cp = b; return 1; }
    size_t len;
    uint32_t c;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) { len = 2; c = b & 0x1F; }
    else if (b >= 0xE0 && b <= 0xEF) {
        len = 3; c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;       /* no overlong forms */
        else if (b == 0xED) hi = 0x9F;  /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4; c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        else if (b == 0xF4) hi = 0x8F;  /* <= U+10FFFF */
    } else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    c = (c << 6) | (s[1] & 0x3F);
    for (size_t k = 2; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[k] & 0x3F);
    }
    *cp = c;
    return len;
}

/* Classes of the regex 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
enum { C_L = CX_CLS_L, C_N = CX_CLS_N, C_WS = CX_CLS_WS, C_O = CX_CLS_O };

static inline int ascii_class(uint8_t c)
{
    if ((uint8_t)((c | 0x20) - 'a') < 26) return C_L;
    if ((uint8_t)(c - '0') < 10) return C_N;
    if (c == ' ' || (c >= 9 && c <= 13)) return C_WS;
    return C_O;
}

static int class_of(uint32_t cp)
{
    /* \s is Unicode White_Space: U+0009..000D, U+0085 and the categories Zs, Zl, Zp. */
    if (cp == 0x85) return C_WS;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return C_L;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return C_N;
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
        return C_WS;
    default:
        return C_O;
    }
}

/* Class of the unit at s[i] and its length: a valid UTF-8 character, or one invalid byte
 * (class "other"). */
static inline int unit_at(const uint8_t *s, size_t n, size_t i, size_t *len)
{
    if (s[i] < 0x80) { *len = 1; return ascii_class(s[i]); }
    uint32_t cp;
    size_t l = cx_utf8_decode(s + i, n - i, &cp);
    if (!l) { *len = 1; return C_O; }
    *len = l;
    return class_of(cp);
}

int cx_pretok_unit(const uint8_t *s, size_t n, size_t i, size_t *len) { return unit_at(s, n, i, len); }

static inline size_t run_end(const uint8_t *s, size_t n, size_t i, int cls)
{
    while (i < n) {
        size_t l;
        if (unit_at(s, n, i, &l) != cls) break;
        i += l;
    }
    return i;
}

size_t cx_pretok_next(const uint8_t *s, size_t n, size_t i)
{
    /* 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as in GPT-2) */
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t a = s[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            uint8_t b = s[i + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    size_t l0;
    int c0 = unit_at(s, n, i, &l0);
    /*  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+ */
    if (s[i] == ' ' && i + 1 < n) {
        size_t l1;
        int c1 = unit_at(s, n, i + 1, &l1);
        if (c1 != C_WS) return run_end(s, n, i + 1 + l1, c1);
    }
    if (c0 != C_WS) return run_end(s, n, i + l0, c0);
    /* \s+(?!\S) | \s+ : a whitespace run, less its last character when a non-space follows
     * and the run has more than one character. */
    size_t j = i, last = i;
    while (j < n) {
        size_t l;
        if (unit_at(s, n, j, &l) != C_WS) break;
        last = j;
        j += l;
    }
    if (j == n || last == i) return j;
    return last;
}

/* ---- GPT-2's bytes_to_unicode ---- */
static int byte_printable(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

uint32_t cx_byte_to_char(uint8_t b)
{
    if (byte_printable(b)) return b;
    /* the k-th non-printable byte (in byte order) maps to 256 + k */
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++) k += !byte_printable(x);
    return 256 + k;
}

int cx_char_to_byte(uint32_t c)
{
    if (c < 256) return byte_printable(c) ? (int)c : -1;
    if (c >= 256 + 68) return -1; /* 68 bytes are not printable */
    unsigned k = c - 256;
    for (unsigned x = 0; x < 256; x++)
        if (!byte_printable(x) && k-- == 0) return (int)x;
    return -1;
}

/* ---- NFC ---- */
static bool all_ascii(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0x80) return false;
    return true;
}

static int append(uint8_t **buf, size_t *len, size_t *cap, const void *src, size_t n)
{
    if (*len + n > *cap) {
        size_t nc = (*len + n) * 2;
        uint8_t *g = cx_realloc(*buf, nc);
        if (!g) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory normalizing text");
        *buf = g;
        *cap = nc;
    }
    memcpy(*buf + *len, src, n);
    *len += n;
    return CIRCUITS_OK;
}

/* Appends NFC(s[0..n)) (valid UTF-8) to buf at *len; *tmp (grown as needed) is scratch. */
static int nfc_run(const uint8_t *s, size_t n, uint8_t **buf, size_t *len, size_t *cap, utf8proc_int32_t **tmp,
                   size_t *tmp_cap)
{
    const utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    utf8proc_ssize_t need = utf8proc_decompose(s, (utf8proc_ssize_t)n, NULL, 0, opt);
    if (need < 0) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "NFC: %s", utf8proc_errmsg(need));
    if ((size_t)need + 1 > *tmp_cap) {
        size_t bytes;
        if (!cx_mul_size((size_t)need + 1, sizeof(utf8proc_int32_t), &bytes))
            return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "NFC: text too long");
        utf8proc_int32_t *g = cx_realloc(*tmp, bytes);
        if (!g) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory normalizing text");
        *tmp = g;
        *tmp_cap = (size_t)need + 1;
    }
    utf8proc_ssize_t got = utf8proc_decompose(s, (utf8proc_ssize_t)n, *tmp, need, opt);
    if (got < 0 || got > need) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "NFC: decomposition failed");
    utf8proc_ssize_t nb = utf8proc_reencode(*tmp, got, opt); /* the UTF-8 is written into tmp */
    if (nb < 0) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "NFC: %s", utf8proc_errmsg(nb));
    return append(buf, len, cap, *tmp, (size_t)nb);
}

/* NFC works region by region: an ASCII character never changes, never reorders and never
 * composes with what precedes it, so the text can be cut before any ASCII character. A region
 * is a run of non-ASCII characters with the ASCII character before it (which a combining mark
 * may join: e + U+0301). Bytes that are not UTF-8 are cut points too, and pass unchanged. */
int cx_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = n;
    if (all_ascii(s, n)) return CIRCUITS_OK;
    size_t cap = n + 16, len = 0, tmp_cap = 0;
    uint8_t *buf = cx_malloc(cap);
    utf8proc_int32_t *tmp = NULL;
    if (!buf) return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "out of memory normalizing text");
    size_t i = 0;
    int rc = CIRCUITS_OK;
    while (i < n && !rc) {
        size_t j = i, l;
        while (j < n && s[j] < 0x80) j++;
        if (j == n) {
            rc = append(&buf, &len, &cap, s + i, n - i);
            break;
        }
        size_t start = j > i ? j - 1 : j; /* the region takes the ASCII character before it */
        rc = append(&buf, &len, &cap, s + i, start - i);
        uint32_t cp;
        size_t k = j;
        while (k < n && s[k] >= 0x80 && (l = cx_utf8_decode(s + k, n - k, &cp)) != 0) k += l;
        if (!rc) rc = k > j ? nfc_run(s + start, k - start, &buf, &len, &cap, &tmp, &tmp_cap)
                            : append(&buf, &len, &cap, s + start, j - start);
        size_t m = k; /* bytes that are not UTF-8 */
        while (m < n && s[m] >= 0x80 && cx_utf8_decode(s + m, n - m, &cp) == 0) m++;
        if (!rc) rc = append(&buf, &len, &cap, s + k, m - k);
        i = m;
    }
    cx_free(tmp);
    if (rc) {
        cx_free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return CIRCUITS_OK;
}

/* ---- single_word added tokens ---- */
int cx_word_unit(const uint8_t *s, size_t n, size_t i)
{
    uint32_t cp;
    size_t l = cx_utf8_decode(s + i, n - i, &cp);
    if (!l) return 0;
    if (cp == 0x200C || cp == 0x200D) return 1; /* Join_Control */
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}
