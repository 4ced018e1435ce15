/* The views' text buffer and its escaping (vis.h). */
#include "vis.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static bool reserve(cx_html *b, size_t more)
{
    if (b->failed) return false;
    if (more > SIZE_MAX - b->len - 1) {
        b->failed = true;
        return false;
    }
    size_t need = b->len + more + 1; /* + the NUL kept after the text */
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = cx_realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void cx_html_put(cx_html *b, const char *s, size_t n)
{
    if (!reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cx_html_puts(cx_html *b, const char *s) { cx_html_put(b, s, strlen(s)); }

void cx_html_printf(cx_html *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        cx_html_put(b, small, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* One code point of UTF-8 at s (n > 0 bytes left): its value and the bytes it takes. An invalid
 * sequence is U+FFFD taking its maximal valid prefix, at least one byte (WHATWG's decoder). */
static uint32_t next_cp(const unsigned char *s, size_t n, size_t *used)
{
    unsigned b0 = s[0];
    *used = 1;
    if (b0 < 0x80) return b0;
    unsigned need, lo = 0x80, hi = 0xBF;
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) need = 1, cp = b0 & 0x1F;
    else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2, cp = b0 & 0x0F;
        if (b0 == 0xE0) lo = 0xA0;      /* overlong */
        else if (b0 == 0xED) hi = 0x9F; /* surrogates */
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3, cp = b0 & 0x07;
        if (b0 == 0xF0) lo = 0x90;      /* overlong */
        else if (b0 == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0xFFFD;
    }
    for (unsigned i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *used = i;
            return 0xFFFD;
        }
        cp = cp << 6 | (s[i] & 0x3F);
        lo = 0x80, hi = 0xBF;
    }
    *used = need + 1;
    return cp;
}

static void put_cp(cx_html *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3F)), u[2] = (char)(0x80 | (cp >> 6 & 0x3F)),
        u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    cx_html_put(b, u, n);
}

void cx_html_text(cx_html *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    while (n) {
        size_t used;
        uint32_t cp = next_cp(p, n, &used);
        p += used, n -= used;
        switch (cp) {
        case '&': cx_html_puts(b, "&amp;"); break;
        case '<': cx_html_puts(b, "&lt;"); break;
        case '>': cx_html_puts(b, "&gt;"); break;
        case '"': cx_html_puts(b, "&quot;"); break;
        case '\'': cx_html_puts(b, "&#39;"); break;
        default: put_cp(b, ((cp < 0x20 && cp != '\t' && cp != '\n') || cp == 0x7F) ? 0xFFFD : cp);
        }
    }
}

void cx_html_json_string(cx_html *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    cx_html_put(b, "\"", 1);
    while (n) {
        size_t used;
        uint32_t cp = next_cp(p, n, &used);
        p += used, n -= used;
        if (cp == '"') cx_html_puts(b, "\\\"");
        else if (cp == '\\') cx_html_puts(b, "\\\\");
        else if (cp == '\n') cx_html_puts(b, "\\n");
        /* < > & would let the text close the script or open a comment; U+2028/9 end a JS line */
        else if (cp < 0x20 || cp == '<' || cp == '>' || cp == '&' || cp == 0x2028 || cp == 0x2029)
            cx_html_printf(b, "\\u%04x", (unsigned)cp);
        else put_cp(b, cp);
    }
    cx_html_put(b, "\"", 1);
}

void cx_html_json_number(cx_html *b, float v)
{
    if (!isfinite(v)) cx_html_puts(b, "null");
    else cx_html_printf(b, "%.6g", (double)v);
}

void cx_html_json_names(cx_html *b, const char *const *names, int64_t n, const char *prefix)
{
    cx_html_put(b, "[", 1);
    for (int64_t i = 0; i < n; i++) {
        if (i) cx_html_put(b, ",", 1);
        if (names) cx_html_json_string(b, names[i]);
        else cx_html_printf(b, "\"%s%lld\"", prefix, (long long)i);
    }
    cx_html_put(b, "]", 1);
}

void cx_html_json_numbers(cx_html *b, const float *v, int64_t n)
{
    cx_html_put(b, "[", 1);
    for (int64_t i = 0; i < n; i++) {
        if (i) cx_html_put(b, ",", 1);
        cx_html_json_number(b, v[i]);
    }
    cx_html_put(b, "]", 1);
}
