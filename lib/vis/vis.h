/* The HTML views (circuits_vis_*, docs/pictures.md "Interactive views"): each is one page, a
 * document or a fragment, written into a growable buffer. Files:
 *   html.c       the buffer, and the escaping of what goes into it (HTML text, JSON in <script>)
 *   page.c       the page around a view (document or fragment, scoped style, headings, the data
 *                script and the view's script), the shared CSS and JavaScript, options, free, save
 *   attention.c  circuits_vis_attention_patterns
 *   tokens.c     circuits_vis_colored_tokens
 *   grid.c       circuits_vis_grid
 * Safety rule: data reach the page as JSON inside <script type="application/json"> with <, >, &,
 * U+2028 and U+2029 escaped; the script puts strings into the DOM with textContent only. */
#ifndef CIRCUITS_VIS_H
#define CIRCUITS_VIS_H

#include "internal.h"

/* ---- html.c ---- */
/* A growable text buffer. After a failed allocation it stops growing and `failed` stays set:
 * writers need not check each append, the page checks once at the end. */
typedef struct cx_html {
    char *p;
    size_t len, cap;
    bool failed;
} cx_html;

void cx_html_put(cx_html *b, const char *s, size_t n);
void cx_html_puts(cx_html *b, const char *s);
void cx_html_printf(cx_html *b, const char *fmt, ...) CX_PRINTF(2, 3);
/* s as HTML text (&, <, >, ", ' as entities); invalid UTF-8 and control characters but tab and
 * newline become U+FFFD */
void cx_html_text(cx_html *b, const char *s);
/* s as a JSON string literal that cannot end a <script>: <, >, & as \u003c.., U+2028, U+2029 and
 * control characters escaped; invalid UTF-8 becomes U+FFFD (the WHATWG decoder's replacement:
 * one per maximal invalid subsequence, as Python's decode(errors="replace")) */
void cx_html_json_string(cx_html *b, const char *s);
/* a float as a JSON number with 6 significant digits; NaN and infinities as null */
void cx_html_json_number(cx_html *b, float v);
/* n strings as a JSON array: names[i], or (names NULL) prefix followed by i */
void cx_html_json_names(cx_html *b, const char *const *names, int64_t n, const char *prefix);
/* n floats as a JSON array */
void cx_html_json_numbers(cx_html *b, const float *v, int64_t n);

/* ---- page.c ---- */
typedef struct cx_vis_page {
    cx_html b;
    circuits_vis_options o;
    char id[24]; /* the root's id, unique per call: "cv" and 16 hex digits */
    const char *fn;
} cx_vis_page;

/* What every view checks first: html not NULL (then *html = NULL and *len = 0, so that every
 * failure leaves them so), and its two counts a and b (named so in messages) at least 1 */
int cx_vis_start(char **html, size_t *len, int64_t a, const char *a_name, int64_t b, const char *b_name, const char *fn);
/* opts (NULL: defaults) checked and copied into pg->o; nothing allocated */
int cx_vis_options(cx_vis_page *pg, const circuits_vis_options *opts, const char *fn);
/* names NULL or n strings none of which is NULL (what: the argument's name) */
int cx_vis_check_names(const char *const *names, int64_t n, bool optional, const char *what, const char *fn);
/* The page up to the data: document head or nothing, the root div.cv-view[data-view=view], its
 * style, the headings, and the opening of the data script; the caller then writes one JSON value */
void cx_vis_begin(cx_vis_page *pg, const char *view);
/* Closes the data script, writes the script that calls entry (a function of view_js taking the root
 * and the data) and closes the page; hands the text over or fails with E_OUT_OF_MEMORY. */
int cx_vis_end(cx_vis_page *pg, const char *view_js, const char *entry, char **html, size_t *len);
/* The colour scale of values as JSON {"kind":"diverging"|"sequential","lo":..,"hi":..}: diverging
 * over [-m, m] (m the greatest |v|) when some value is below 0 and some above, else sequential from
 * the least to the greatest finite value (lo == hi widened; none finite: 0..1); the ends with all
 * of the float's digits, so that they differ in the page whenever they differ here */
void cx_vis_json_scale(cx_html *b, const float *v, size_t n);

#endif
