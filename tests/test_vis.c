/* The interactive views (lib/vis/, docs/pictures.md "Interactive views"), without a browser
 * (bindings/python/tests/test_vis_browser.py runs them in Chromium):
 *   - structure: a document or a fragment, the root div.cv-view[data-view] with its id, the style
 *     scoped to that id, exactly two scripts (the data and the code), no external URL;
 *   - the data: the JSON in the data script parses (jansson) and holds the tokens (invalid UTF-8 as
 *     U+FFFD, as Python's decode(errors="replace")), names, values (non-finite as null), the lower
 *     triangle of each pattern, the colour scale the rule gives;
 *   - escaping: hostile tokens and titles cannot close the script or add markup: no raw <, >, &,
 *     U+2028, U+2029 in the data; titles as HTML text;
 *   - every error path (named checks: docs/errors.md "Interactive views") leaves *html NULL;
 *   - every allocation failed in turn (this program links the fault-injection objects,
 *     lib/base/fault.h): E_OUT_OF_MEMORY, nothing leaked, and the first success is the same page;
 *   - saving: the bytes written, replaced whole, and the errors of an unwritable path.
 * Usage: test_vis [-v] */
#include "catalogue.h"
#include "testutil.h"

#include "../lib/base/fault.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static char g_tmp[] = "/tmp/circuits_vis_XXXXXX";

static const char *tmp_path(const char *name)
{
    static char bufs[4][600];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, 600, "%s/%s", g_tmp, name);
    return p;
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0, l = strlen(needle);
    for (const char *p = strstr(s, needle); p; p = strstr(p + l, needle)) n++;
    return n;
}

/* The root id: what follows id=" on the root div. */
static void root_id(const char *html, char *id, size_t n)
{
    id[0] = '\0';
    const char *p = strstr(html, "<div class=\"cv-view\" data-view=\"");
    p = p ? strstr(p, "id=\"") : NULL;
    if (!p) return;
    p += 4;
    size_t i = 0;
    while (p[i] && p[i] != '"' && i + 1 < n) id[i] = p[i], i++;
    id[i] = '\0';
}

/* The text of the data script (a copy), or NULL. */
static char *data_text(const char *html)
{
    const char *p = strstr(html, "<script type=\"application/json\"");
    if (!p || !(p = strchr(p, '>'))) return NULL;
    p++;
    const char *e = strstr(p, "</script>");
    if (!e) return NULL;
    char *t = malloc((size_t)(e - p) + 1);
    memcpy(t, p, (size_t)(e - p));
    t[e - p] = '\0';
    return t;
}

static json_t *data_json(const char *html)
{
    char *t = data_text(html);
    if (!t) return NULL;
    json_error_t err;
    json_t *j = json_loads(t, 0, &err);
    if (!j) fprintf(stderr, "data JSON: %s at %d: %.80s\n", err.text, err.position, t + (err.position > 20 ? err.position - 20 : 0));
    free(t);
    return j;
}

/* What every page holds, whatever the view: structure, scope, scripts, no URL, data escaped. */
static void check_page(const char *what, const char *html, size_t len, const char *view, bool fragment)
{
    CHECK(html && strlen(html) == len, "%s: len %zu vs strlen", what, len);
    if (!html) return;
    char id[64], want[200];
    root_id(html, id, sizeof id);
    CHECK(strlen(id) == 18 && strncmp(id, "cv", 2) == 0 && strspn(id + 2, "0123456789abcdef") == 16, "%s: root id '%s'",
          what, id);
    snprintf(want, sizeof want, "<div class=\"cv-view\" data-view=\"%s\" id=\"%s\">", view, id);
    if (fragment) {
        CHECK(strncmp(html, want, strlen(want)) == 0, "%s: a fragment starts with its root: %.80s", what, html);
        CHECK(len > 7 && strcmp(html + len - 7, "</div>\n") == 0, "%s: a fragment ends with its root", what);
        CHECK(!strstr(html, "<!DOCTYPE") && !strstr(html, "<html") && !strstr(html, "<body"), "%s: document tags in a fragment",
              what);
    } else {
        CHECK(strncmp(html, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">", 60) == 0,
              "%s: a document's head: %.80s", what, html);
        CHECK(strstr(html, want) != NULL, "%s: no root %s", what, want);
        CHECK(len > 16 && strcmp(html + len - 16, "</body>\n</html>\n") == 0, "%s: a document's end", what);
    }
    CHECK(count(html, "<div class=\"cv-view\"") == 1, "%s: one root", what);
    /* the style is scoped: every rule starts with the root's id */
    const char *st = strstr(html, "<style>\n"), *se = strstr(html, "</style>");
    CHECK(st && se && count(html, "<style") == 1, "%s: one style element", what);
    if (st && se) {
        snprintf(want, sizeof want, "#%s", id);
        for (const char *line = st + 8; line < se; line = strchr(line, '\n') + 1)
            CHECK(line[0] == ' ' || strncmp(line, want, strlen(want)) == 0, "%s: an unscoped rule: %.60s", what, line);
    }
    /* two scripts: the data and the code, whatever the tokens were */
    CHECK(count(html, "<script") == 2 && count(html, "</script") == 2, "%s: %zu <script, %zu </script", what,
          count(html, "<script"), count(html, "</script"));
    snprintf(want, sizeof want, "<script type=\"application/json\" id=\"%s-data\">", id);
    CHECK(strstr(html, want) != NULL, "%s: the data script", what);
    snprintf(want, sizeof want, "JSON.parse(document.getElementById(\"%s-data\").textContent)", id);
    CHECK(strstr(html, want) != NULL, "%s: the code reads its own data", what);
    CHECK(!strstr(html, "<!--"), "%s: a comment opener", what);
    /* self-contained: no URL, no fetched resource; tokens only through textContent */
    static const char *const banned[] = {"http:", "https:", "//cdn", "src=", "href=", "url(", "@import", "fetch(",
                                         "XMLHttpRequest", "innerHTML", "outerHTML", "insertAdjacentHTML",
                                         "document.write", "eval("};
    for (size_t i = 0; i < COUNT(banned); i++) CHECK(!strstr(html, banned[i]), "%s: contains %s", what, banned[i]);
    char *t = data_text(html);
    CHECK(t != NULL, "%s: no data script", what);
    if (t) {
        CHECK(!strpbrk(t, "<>&"), "%s: a raw <, > or & in the data", what);
        CHECK(!strstr(t, "\xe2\x80\xa8") && !strstr(t, "\xe2\x80\xa9"), "%s: a raw U+2028/U+2029 in the data", what);
        for (const unsigned char *p = (const unsigned char *)t; *p; p++)
            if (*p < 0x20 && *p != '\n') {
                CHECK(false, "%s: a raw control byte 0x%02x in the data", what, *p);
                break;
            }
    }
    free(t);
}

static bool json_num_is(json_t *j, float want)
{
    if (!isfinite(want)) return json_is_null(j);
    if (!json_is_number(j)) return false;
    double got = json_number_value(j);
    return fabs(got - want) <= 1e-5 * fabs(want) + 1e-30;
}

/* ---- the tokens every view is tried with ---- */
/* token, and what the data must hold for it (U+FFFD in place of invalid UTF-8) */
static const char *const hostile[][2] = {
    {"<|endoftext|>", "<|endoftext|>"},
    {"</script><script>alert(1)</script>", "</script><script>alert(1)</script>"},
    {"</SCRIPT >", "</SCRIPT >"},
    {"<!--", "<!--"},
    {" \"quoted\" 'single'", " \"quoted\" 'single'"},
    {"back\\slash\\", "back\\slash\\"},
    {"line\nbreak\r\t", "line\nbreak\r\t"},
    {"\xe2\x80\xa8sep\xe2\x80\xa9", "\xe2\x80\xa8sep\xe2\x80\xa9"},
    {"", ""},
    {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xe2\x82x", "\xef\xbf\xbdx"},
    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"a\xf0\x9f\x98", "a\xef\xbf\xbd"},
    {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xf0\x9f\x98\x80 caf\xc3\xa9", "\xf0\x9f\x98\x80 caf\xc3\xa9"},
    {"\x01\x1f\x7f", "\x01\x1f\x7f"},
    {"&amp;", "&amp;"},
};
#define N_HOSTILE ((int64_t)COUNT(hostile))

static void check_tokens(const char *what, json_t *arr, const char *const *tokens, int64_t n, const char *const (*want)[2])
{
    CHECK(json_is_array(arr) && (int64_t)json_array_size(arr) == n, "%s: %zu tokens", what, json_array_size(arr));
    for (int64_t i = 0; i < n && i < (int64_t)json_array_size(arr); i++) {
        const char *got = json_string_value(json_array_get(arr, (size_t)i));
        const char *exp = want ? want[i][1] : tokens[i];
        CHECK(got && strcmp(got, exp) == 0, "%s: token %lld is '%s', want '%s'", what, (long long)i, got ? got : "(none)", exp);
    }
}

/* A pattern [heads, n, n] of rows that sum to 1 over keys 0..q, with a NaN, an inf and values
 * written after the query (which the page leaves out). */
static float *make_pattern(int64_t heads, int64_t n)
{
    float *p = malloc((size_t)(heads * n * n) * sizeof *p);
    for (int64_t h = 0; h < heads; h++)
        for (int64_t q = 0; q < n; q++) {
            float s = 0;
            for (int64_t k = 0; k < n; k++) {
                float v = k <= q ? expf(-0.3f * (float)((q - k - h) * (q - k - h))) : 7.0f;
                p[(h * n + q) * n + k] = v;
                if (k <= q) s += v;
            }
            for (int64_t k = 0; k <= q; k++) p[(h * n + q) * n + k] /= s;
        }
    if (n > 3) {
        p[(0 * n + 3) * n + 1] = NAN;
        p[((heads - 1) * n + 3) * n + 2] = INFINITY;
    }
    return p;
}

static void test_attention(void)
{
    const char *tokens[N_HOSTILE];
    for (int64_t i = 0; i < N_HOSTILE; i++) tokens[i] = hostile[i][0];
    int64_t n = N_HOSTILE, H = 3;
    float *p = make_pattern(H, n);
    const char *names[] = {"L0H1", "L1H</script>", "L2H\xff"};
    circuits_vis_options o;
    circuits_vis_options_init(&o);
    CHECK(o.size == sizeof o && !o.title && !o.subtitle && o.fragment == 0, "options_init");
    o.title = "Attention <b>&\"'</b>";
    o.subtitle = "gpt2 on \"</script>\"";
    for (int fragment = 0; fragment <= 1; fragment++) {
        o.fragment = fragment;
        char *html = NULL;
        size_t len = 0;
        CHECK_OK(circuits_vis_attention_patterns(&html, &len, tokens, n, p, H, names, &o));
        const char *what = fragment ? "attention fragment" : "attention document";
        check_page(what, html, len, "attention", fragment);
        if (!html) continue;
        CHECK(strstr(html, "<div class=\"cv-title\">Attention &lt;b&gt;&amp;&quot;&#39;&lt;/b&gt;</div>") != NULL,
              "%s: the title as HTML text", what);
        CHECK(strstr(html, "<div class=\"cv-subtitle\">gpt2 on &quot;&lt;/script&gt;&quot;</div>") != NULL,
              "%s: the subtitle as HTML text", what);
        if (!fragment)
            CHECK(strstr(html, "<title>Attention &lt;b&gt;&amp;&quot;&#39;&lt;/b&gt;</title>") != NULL, "%s: <title>", what);
        json_t *d = data_json(html);
        CHECK(d != NULL, "%s: the data do not parse", what);
        if (d) {
            check_tokens(what, json_object_get(d, "tokens"), tokens, n, hostile);
            json_t *hn = json_object_get(d, "heads"), *pat = json_object_get(d, "pattern");
            CHECK(json_array_size(hn) == 3 && strcmp(json_string_value(json_array_get(hn, 1)), "L1H</script>") == 0 &&
                      strcmp(json_string_value(json_array_get(hn, 2)), "L2H\xef\xbf\xbd") == 0,
                  "%s: head names", what);
            CHECK(json_array_size(pat) == (size_t)H, "%s: %zu heads of pattern", what, json_array_size(pat));
            int bad = 0;
            for (int64_t h = 0; h < H && h < (int64_t)json_array_size(pat); h++)
                for (int64_t q = 0; q < n; q++) {
                    json_t *row = json_array_get(json_array_get(pat, (size_t)h), (size_t)q);
                    if (json_array_size(row) != (size_t)q + 1) { /* keys after the query are left out */
                        bad++;
                        continue;
                    }
                    for (int64_t k = 0; k <= q; k++)
                        if (!json_num_is(json_array_get(row, (size_t)k), p[(h * n + q) * n + k])) bad++;
                }
            CHECK(bad == 0, "%s: %d pattern values differ", what, bad);
            CHECK(json_is_null(json_array_get(json_array_get(json_array_get(pat, 0), 3), 1)), "%s: NaN is null", what);
            CHECK(json_is_null(json_array_get(json_array_get(json_array_get(pat, 2), 3), 2)), "%s: inf is null", what);
            json_decref(d);
        }
        circuits_vis_free(html);
    }
    /* defaults: no options, no names; one token, one head; ids differ per call */
    char *a = NULL, *b = NULL;
    const char *one[] = {"x"};
    float w = 1.0f;
    CHECK_OK(circuits_vis_attention_patterns(&a, NULL, one, 1, &w, 1, NULL, NULL));
    CHECK_OK(circuits_vis_attention_patterns(&b, NULL, one, 1, &w, 1, NULL, NULL));
    if (a && b) {
        check_page("attention, one token", a, strlen(a), "attention", false);
        char ida[64], idb[64];
        root_id(a, ida, sizeof ida);
        root_id(b, idb, sizeof idb);
        CHECK(strcmp(ida, idb) != 0, "two calls made the same id %s", ida);
        CHECK(!strstr(a, "cv-title") || !strstr(a, "<div class=\"cv-title\">"), "no title without one");
        CHECK(strstr(a, "<title>libcircuits</title>") != NULL, "the default <title>");
        json_t *d = data_json(a);
        CHECK(d && strcmp(json_string_value(json_array_get(json_object_get(d, "heads"), 0)), "Head 0") == 0,
              "default head name");
        json_decref(d);
    }
    circuits_vis_free(a);
    circuits_vis_free(b);
    circuits_vis_free(NULL);
    circuits_vis_options_init(NULL);
    free(p);

    /* a long sequence: 600 tokens, 2 heads */
    int64_t L = 600;
    float *big = make_pattern(2, L);
    const char **lt = malloc((size_t)L * sizeof *lt);
    char(*store)[16] = malloc((size_t)L * 16);
    for (int64_t i = 0; i < L; i++) {
        snprintf(store[i], 16, " t%lld", (long long)i);
        lt[i] = store[i];
    }
    char *h = NULL;
    size_t len = 0;
    CHECK_OK(circuits_vis_attention_patterns(&h, &len, lt, L, big, 2, NULL, NULL));
    if (h) {
        check_page("attention, 600 tokens", h, len, "attention", false);
        json_t *d = data_json(h);
        json_t *pat = d ? json_object_get(d, "pattern") : NULL;
        CHECK(pat && json_array_size(json_array_get(pat, 1)) == (size_t)L &&
                  json_array_size(json_array_get(json_array_get(pat, 1), (size_t)L - 1)) == (size_t)L,
              "600 tokens: the last row has 600 keys");
        json_decref(d);
    }
    circuits_vis_free(h);
    free(big);
    free(lt);
    free(store);
}

static void check_scale(const char *what, json_t *s, const char *kind, float lo, float hi)
{
    const char *k = json_string_value(json_object_get(s, "kind"));
    CHECK(k && strcmp(k, kind) == 0, "%s: scale kind %s, want %s", what, k ? k : "(none)", kind);
    CHECK(json_num_is(json_object_get(s, "lo"), lo) && json_num_is(json_object_get(s, "hi"), hi), "%s: scale %g..%g, want %g..%g",
          what, json_number_value(json_object_get(s, "lo")), json_number_value(json_object_get(s, "hi")), (double)lo, (double)hi);
}

static void test_colored_tokens(void)
{
    const char *tokens[N_HOSTILE];
    for (int64_t i = 0; i < N_HOSTILE; i++) tokens[i] = hostile[i][0];
    int64_t n = N_HOSTILE;
    /* series: signed (diverging, |max| 3), positive (sequential min..max), all equal, nothing finite */
    float *v = malloc((size_t)(4 * n) * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        v[i] = (float)i / (float)(n - 1) * 5.0f - 2.0f; /* -2 .. 3 */
        v[n + i] = 1.5f + (float)i;
        v[2 * n + i] = 2.0f;
        v[3 * n + i] = i % 2 ? NAN : -INFINITY;
    }
    v[4] = NAN;
    v[n + 2] = INFINITY;
    const char *names[] = {"attribution", "loss <nats>", "flat", "broken"};
    circuits_vis_options o;
    circuits_vis_options_init(&o);
    o.fragment = 1;
    char *html = NULL;
    size_t len = 0;
    CHECK_OK(circuits_vis_colored_tokens(&html, &len, tokens, n, v, 4, names, &o));
    check_page("colored tokens", html, len, "tokens", true);
    json_t *d = html ? data_json(html) : NULL;
    CHECK(d != NULL, "colored tokens: the data do not parse");
    if (d) {
        check_tokens("colored tokens", json_object_get(d, "tokens"), tokens, n, hostile);
        json_t *sc = json_object_get(d, "scales"), *vals = json_object_get(d, "values");
        check_scale("signed series", json_array_get(sc, 0), "diverging", -3.0f, 3.0f);
        check_scale("positive series", json_array_get(sc, 1), "sequential", 1.5f, 1.5f + (float)(n - 1));
        check_scale("constant series", json_array_get(sc, 2), "sequential", 0.0f, 2.0f);
        check_scale("no finite value", json_array_get(sc, 3), "sequential", 0.0f, 1.0f);
        int bad = 0;
        for (int64_t s = 0; s < 4; s++)
            for (int64_t i = 0; i < n; i++)
                if (!json_num_is(json_array_get(json_array_get(vals, (size_t)s), (size_t)i), v[s * n + i])) bad++;
        CHECK(bad == 0, "colored tokens: %d values differ", bad);
        json_t *sn = json_object_get(d, "series");
        CHECK(json_array_size(sn) == 4 && strcmp(json_string_value(json_array_get(sn, 1)), "loss <nats>") == 0, "series names");
        json_decref(d);
    }
    circuits_vis_free(html);
    /* names by default: "value" for one series, "Series i" for several; negative only: sequential */
    float neg[3] = {-3.0f, -1.0f, -2.0f};
    const char *t3[] = {"a", "b", "c"};
    CHECK_OK(circuits_vis_colored_tokens(&html, NULL, t3, 3, neg, 1, NULL, NULL));
    d = html ? data_json(html) : NULL;
    if (d) {
        CHECK(strcmp(json_string_value(json_array_get(json_object_get(d, "series"), 0)), "value") == 0, "one series: value");
        check_scale("negative series", json_array_get(json_object_get(d, "scales"), 0), "sequential", -3.0f, -1.0f);
        json_decref(d);
    }
    circuits_vis_free(html);
    CHECK_OK(circuits_vis_colored_tokens(&html, NULL, t3, 1, neg, 3, NULL, NULL));
    d = html ? data_json(html) : NULL;
    if (d) {
        json_t *sn = json_object_get(d, "series");
        CHECK(json_array_size(sn) == 3 && strcmp(json_string_value(json_array_get(sn, 2)), "Series 2") == 0, "Series 2");
        check_scale("one negative value", json_array_get(json_object_get(d, "scales"), 0), "sequential", -3.0f, 0.0f);
        json_decref(d);
    }
    circuits_vis_free(html);
    /* values that differ only past 6 significant digits: the scale's ends must still differ as
     * the page reads them, or the colour of (v - lo) / (hi - lo) is NaN and the script throws */
    float close[2] = {1.0000001f, 1.0000002f};
    CHECK_OK(circuits_vis_colored_tokens(&html, NULL, t3, 2, close, 1, NULL, NULL));
    d = html ? data_json(html) : NULL;
    if (d) {
        json_t *sc = json_array_get(json_object_get(d, "scales"), 0);
        double lo = json_number_value(json_object_get(sc, "lo")), hi = json_number_value(json_object_get(sc, "hi"));
        CHECK(lo < hi && (float)lo == close[0] && (float)hi == close[1],
              "close values: the scale %.9g..%.9g, want the floats %.9g..%.9g", lo, hi, (double)close[0], (double)close[1]);
        json_decref(d);
    }
    circuits_vis_free(html);
    free(v);
}

static void test_grid(void)
{
    enum { R = 4, C = 5 };
    float v[R * C];
    for (int i = 0; i < R * C; i++) v[i] = (float)(i % 7) - 2.5f;
    v[7] = NAN;
    const char *rows[R] = {"L0", "L1", "L2 <", "L3"};
    const char *cols[C] = {"<|endoftext|>", " When", "</script>", "\xff", " Mary"};
    char *html = NULL;
    size_t len = 0;
    CHECK_OK(circuits_vis_grid(&html, &len, v, R, C, rows, cols, "layer", "position", "logit diff", NULL));
    check_page("grid", html, len, "grid", false);
    json_t *d = html ? data_json(html) : NULL;
    CHECK(d != NULL, "grid: the data do not parse");
    if (d) {
        const char *const want_cols[C][2] = {{"", "<|endoftext|>"}, {"", " When"}, {"", "</script>"}, {"", "\xef\xbf\xbd"}, {"", " Mary"}};
        check_tokens("grid columns", json_object_get(d, "cols"), cols, C, want_cols);
        check_tokens("grid rows", json_object_get(d, "rows"), rows, R, NULL);
        CHECK(strcmp(json_string_value(json_object_get(d, "row_title")), "layer") == 0 &&
                  strcmp(json_string_value(json_object_get(d, "col_title")), "position") == 0 &&
                  strcmp(json_string_value(json_object_get(d, "value_title")), "logit diff") == 0,
              "grid titles");
        check_scale("grid", json_object_get(d, "scale"), "diverging", -3.5f, 3.5f);
        json_t *vals = json_object_get(d, "values");
        int bad = json_array_size(vals) != R;
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++)
                if (!json_num_is(json_array_get(json_array_get(vals, (size_t)r), (size_t)c), v[r * C + c])) bad++;
        CHECK(bad == 0, "grid: %d values differ", bad);
        json_decref(d);
    }
    circuits_vis_free(html);
    /* numbered labels and no titles; a 1 x 1 grid */
    float one = 0.25f;
    CHECK_OK(circuits_vis_grid(&html, &len, &one, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL));
    check_page("grid 1x1", html, len, "grid", false);
    d = html ? data_json(html) : NULL;
    if (d) {
        CHECK(strcmp(json_string_value(json_array_get(json_object_get(d, "rows"), 0)), "0") == 0 &&
                  json_is_null(json_object_get(d, "row_title")) && json_is_null(json_object_get(d, "value_title")),
              "grid defaults");
        check_scale("grid 1x1", json_object_get(d, "scale"), "sequential", 0.0f, 0.25f);
        json_decref(d);
    }
    circuits_vis_free(html);
}

/* ---- bad arguments (docs/errors.md "Interactive views") ---- */
static void test_errors(void)
{
    const char *tok[] = {"a", "b"}, *holey[] = {"a", NULL};
    float p[2 * 2 * 2] = {1, 0, 0.5f, 0.5f, 1, 0, 0.5f, 0.5f};
    char *html = (char *)1;
    size_t len = 5;
    circuits_vis_options o;
    circuits_vis_options_init(&o);

    CALL_FAILS("vis_html_null", circuits_vis_attention_patterns(NULL, &len, tok, 2, p, 2, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "html is NULL");
    CALL_FAILS("vis_n_tokens", circuits_vis_attention_patterns(&html, &len, tok, 0, p, 2, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "n_tokens is 0");
    CHECK(html == NULL && len == 0, "a failure leaves *html NULL and *len 0");
    CALL_FAILS("vis_n_heads", circuits_vis_attention_patterns(&html, &len, tok, 2, p, -1, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "n_heads is -1");
    CALL_FAILS("vis_attention_too_large", circuits_vis_attention_patterns(&html, &len, tok, INT64_C(1) << 31, p, 4, NULL, NULL),
               CIRCUITS_E_RANGE, "too large");
    CALL_FAILS("vis_pattern_null", circuits_vis_attention_patterns(&html, &len, tok, 2, NULL, 2, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "pattern is NULL");
    CALL_FAILS("vis_tokens_null", circuits_vis_attention_patterns(&html, &len, NULL, 2, p, 2, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "tokens is NULL");
    CALL_FAILS("vis_token_null", circuits_vis_attention_patterns(&html, &len, holey, 2, p, 2, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "tokens[1] is NULL");
    CALL_FAILS("vis_head_name_null", circuits_vis_attention_patterns(&html, &len, tok, 2, p, 2, holey, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "head_names[1] is NULL");
    o.size = 12;
    CALL_FAILS("vis_options_size", circuits_vis_attention_patterns(&html, &len, tok, 2, p, 2, NULL, &o),
               CIRCUITS_E_VERSION, "options size 12");
    o.size = sizeof o;
    o.fragment = 2;
    CALL_FAILS("vis_options_fragment", circuits_vis_attention_patterns(&html, &len, tok, 2, p, 2, NULL, &o),
               CIRCUITS_E_INVALID_ARGUMENT, "opts->fragment is 2");
    CHECK(html == NULL, "*html NULL after a failure");

    CALL_FAILS("vis_colored_html_null", circuits_vis_colored_tokens(NULL, NULL, tok, 2, p, 1, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "html is NULL");
    CALL_FAILS("vis_colored_n_tokens", circuits_vis_colored_tokens(&html, NULL, tok, -3, p, 1, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "n_tokens is -3");
    CALL_FAILS("vis_colored_n_series", circuits_vis_colored_tokens(&html, NULL, tok, 2, p, 0, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "n_series is 0");
    CALL_FAILS("vis_colored_too_large", circuits_vis_colored_tokens(&html, NULL, tok, INT64_MAX / 2, p, 4, NULL, NULL),
               CIRCUITS_E_RANGE, "too large");
    CALL_FAILS("vis_colored_values_null", circuits_vis_colored_tokens(&html, NULL, tok, 2, NULL, 1, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "values is NULL");
    CALL_FAILS("vis_colored_tokens_null", circuits_vis_colored_tokens(&html, NULL, NULL, 2, p, 1, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "tokens is NULL");
    CALL_FAILS("vis_colored_series_name_null", circuits_vis_colored_tokens(&html, NULL, tok, 2, p, 2, holey, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "series_names[1] is NULL");
    o.fragment = -1;
    CALL_FAILS("vis_colored_options_fragment", circuits_vis_colored_tokens(&html, NULL, tok, 2, p, 1, NULL, &o),
               CIRCUITS_E_INVALID_ARGUMENT, "opts->fragment is -1");
    CHECK(html == NULL, "*html NULL after a failure");

    CALL_FAILS("vis_grid_html_null", circuits_vis_grid(NULL, NULL, p, 2, 2, NULL, NULL, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "html is NULL");
    CALL_FAILS("vis_grid_rows", circuits_vis_grid(&html, NULL, p, 0, 2, NULL, NULL, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "rows is 0");
    CALL_FAILS("vis_grid_cols", circuits_vis_grid(&html, NULL, p, 2, -1, NULL, NULL, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "cols is -1");
    CALL_FAILS("vis_grid_too_large", circuits_vis_grid(&html, NULL, p, INT64_MAX / 4, 8, NULL, NULL, NULL, NULL, NULL, NULL),
               CIRCUITS_E_RANGE, "too large");
    CALL_FAILS("vis_grid_values_null", circuits_vis_grid(&html, NULL, NULL, 2, 2, NULL, NULL, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "values is NULL");
    CALL_FAILS("vis_grid_row_label_null", circuits_vis_grid(&html, NULL, p, 2, 2, holey, NULL, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "row_labels[1] is NULL");
    CALL_FAILS("vis_grid_col_label_null", circuits_vis_grid(&html, NULL, p, 2, 2, NULL, holey, NULL, NULL, NULL, NULL),
               CIRCUITS_E_INVALID_ARGUMENT, "col_labels[1] is NULL");
    o.size = sizeof o + 8;
    CALL_FAILS("vis_grid_options_size", circuits_vis_grid(&html, NULL, p, 2, 2, NULL, NULL, NULL, NULL, NULL, &o),
               CIRCUITS_E_VERSION, "is not one this library knows");
    CHECK(html == NULL, "*html NULL after a failure");

    CALL_FAILS("vis_save_html_null", circuits_vis_save(NULL, 0, tmp_path("x.html")), CIRCUITS_E_INVALID_ARGUMENT,
               "html is NULL");
    CALL_FAILS("vis_save_path_null", circuits_vis_save("<p>", 3, NULL), CIRCUITS_E_INVALID_ARGUMENT, "path is NULL");
    CALL_FAILS("vis_save_path_empty", circuits_vis_save("<p>", 3, ""), CIRCUITS_E_INVALID_ARGUMENT, "path is empty");
    CALL_FAILS("vis_save_no_directory", circuits_vis_save("<p>", 3, tmp_path("no/such/dir/view.html")), CIRCUITS_E_IO,
               "cannot create");
    CHECK(strstr(circuits_last_error(), tmp_path("no/such/dir/view.html")) != NULL, "the message names the path: %s",
          circuits_last_error());
    CALL_FAILS("vis_save_onto_directory", circuits_vis_save("<p>", 3, g_tmp), CIRCUITS_E_IO, "cannot write");
}

/* ---- saving ---- */
static void test_save(void)
{
    const char *tok[] = {"a", "b"};
    float v[2] = {1, 2};
    char *html = NULL;
    size_t len = 0;
    CHECK_OK(circuits_vis_colored_tokens(&html, &len, tok, 2, v, 1, NULL, NULL));
    if (!html) return;
    const char *path = tmp_path("view.html");
    CHECK_OK(circuits_vis_save("old, longer text that must go entirely", 38, path));
    CHECK_OK(circuits_vis_save(html, len, path));
    FILE *f = fopen(path, "rb");
    char *back = malloc(len + 16);
    size_t got = f ? fread(back, 1, len + 16, f) : 0;
    if (f) fclose(f);
    CHECK(got == len && memcmp(back, html, len) == 0, "saved %zu bytes, want the %zu of the page", got, len);
    free(back);
    /* nothing left beside the file (the write goes through a temporary renamed over it) */
    int entries = 0;
    DIR *dir = opendir(g_tmp);
    for (struct dirent *e; dir && (e = readdir(dir));) entries += e->d_name[0] != '.';
    if (dir) closedir(dir);
    CHECK(entries == 1, "%d files in the directory after saving, want the one", entries);
    circuits_vis_free(html);
    remove(path);
}

/* ---- every allocation failed in turn ---- */
/* the page with its root id replaced by a fixed one, so that two calls compare */
static char *normalised(const char *html)
{
    char id[64];
    root_id(html, id, sizeof id);
    size_t l = strlen(id);
    char *out = malloc(strlen(html) + 1), *o = out;
    for (const char *p = html; *p;) {
        if (l && strncmp(p, id, l) == 0) {
            memcpy(o, "cv0000000000000000", 18);
            o += 18, p += l;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

typedef int (*view_fn)(char **html, size_t *len);

static const char *const f_tokens[] = {" When", "</script>", "\xff", " Mary", "\n"};
static float f_values[2 * 5 * 5];
static int f_attention(char **h, size_t *l) { return circuits_vis_attention_patterns(h, l, f_tokens, 5, f_values, 2, NULL, NULL); }
static int f_tokens_view(char **h, size_t *l)
{
    circuits_vis_options o;
    circuits_vis_options_init(&o);
    o.fragment = 1;
    o.title = "t";
    return circuits_vis_colored_tokens(h, l, f_tokens, 5, f_values, 2, NULL, &o);
}
static int f_grid(char **h, size_t *l)
{
    return circuits_vis_grid(h, l, f_values, 5, 10, NULL, NULL, "layer", "position", "value", NULL);
}

static void fault_view(const char *what, view_fn fn)
{
    char *html = NULL;
    size_t len = 0;
    CHECK_OK(fn(&html, &len));
    char *want = html ? normalised(html) : NULL;
    circuits_vis_free(html);
    long k = 0;
    for (; k < 10000; k++) {
        long live = cx_live_allocations();
        long long bytes = cx_live_bytes();
        html = (char *)&k;
        len = 99;
        circuits_clear_error();
        cx_fault_fail_after(k, true);
        int rc = fn(&html, &len);
        long injected = cx_fault_injected();
        cx_fault_disarm();
        if (rc == CIRCUITS_OK) {
            char *got = html ? normalised(html) : NULL;
            CHECK(got && want && strcmp(got, want) == 0 && len == strlen(html), "%s: k=%ld: another page", what, k);
            free(got);
            circuits_vis_free(html);
            if (!injected) break;
            continue;
        }
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY, "%s: k=%ld: status %d (%s)", what, k, rc, circuits_last_error());
        CHECK(strstr(circuits_last_error(), "out of memory") != NULL, "%s: k=%ld: message '%s'", what, k, circuits_last_error());
        CHECK(html == NULL && len == 0, "%s: k=%ld: *html not NULL", what, k);
        CHECK(cx_live_allocations() == live && cx_live_bytes() == bytes, "%s: k=%ld: live %ld -> %ld", what, k, live,
              cx_live_allocations());
        if (tu_failures > 50) break;
    }
    CHECK(k > 0, "%s: no allocation to fail", what);
    printf("%-40s %6ld allocation sites\n", what, k);
    free(want);
}

static void fault_save(void)
{
    const char *path = tmp_path("fault.html");
    long k = 0;
    for (; k < 100; k++) {
        long live = cx_live_allocations();
        circuits_clear_error();
        cx_fault_fail_after(k, true);
        int rc = circuits_vis_save("<p>x</p>", 8, path);
        long injected = cx_fault_injected();
        cx_fault_disarm();
        if (rc == CIRCUITS_OK && !injected) break;
        CHECK(rc == CIRCUITS_E_OUT_OF_MEMORY && strstr(circuits_last_error(), "out of memory"), "save: k=%ld: %d (%s)", k, rc,
              circuits_last_error());
        CHECK(cx_live_allocations() == live, "save: k=%ld: leaked", k);
        CHECK(access(path, F_OK) != 0, "save: k=%ld: a file after a failure", k);
    }
    CHECK(k > 0 && access(path, F_OK) == 0, "save: never failed or never wrote");
    remove(path);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-v") == 0) cat_verbose = 1;
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 2;
    }
    cat_tmp = g_tmp;
    for (size_t i = 0; i < COUNT(f_values); i++) f_values[i] = (float)i / 50.0f - 0.3f;
    f_values[3] = NAN;
    test_attention();
    test_colored_tokens();
    test_grid();
    test_errors();
    test_save();
    fault_view("attention patterns", f_attention);
    fault_view("colored tokens (fragment)", f_tokens_view);
    fault_view("grid", f_grid);
    fault_save();
    rmdir(g_tmp);
    return tu_finish("test_vis");
}
