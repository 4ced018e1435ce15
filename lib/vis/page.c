/* The page around a view (vis.h): a whole document or a fragment (one div with its own style and
 * script), the style and the script every view shares, the options, and the public free / save. */
#include "vis.h"

#include "rng.h"
#include "st_save.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The shared style. Every selector starts with '&', which becomes "#<root id>": two fragments in
 * one page (a notebook) keep to their own roots. */
static const char css[] =
    "& { font-family: system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Arial, sans-serif; font-size: 13px;\n"
    "    color: #222; background: #fff; padding: 10px 12px; box-sizing: border-box; max-width: 100%; }\n"
    "& .cv-title { font-size: 16px; font-weight: 600; margin: 0 0 2px; }\n"
    "& .cv-subtitle { font-size: 12px; color: #666; margin: 0 0 8px; }\n"
    "& .cv-buttons { display: flex; flex-wrap: wrap; gap: 4px; margin: 4px 0 8px; }\n"
    "& button.cv-head, & button.cv-series { font: inherit; font-size: 12px; padding: 2px 10px; cursor: pointer;\n"
    "    border: 1px solid #b6c3d6; border-radius: 11px; background: #f4f6fa; color: #1d3557; }\n"
    "& button.cv-head:hover, & button.cv-series:hover { border-color: #2166ac; }\n"
    "& button.cv-selected { background: #2166ac; border-color: #2166ac; color: #fff; }\n"
    "& .cv-info { min-height: 1.4em; margin: 0 0 8px; padding: 4px 8px; border-radius: 4px; background: #f3f3f3;\n"
    "    font-family: 'DejaVu Sans Mono', ui-monospace, Menlo, Consolas, monospace; font-size: 12px;\n"
    "    white-space: pre-wrap; overflow-wrap: anywhere; }\n"
    "& .cv-tokens { max-width: 60em; line-height: 1.95; margin: 0 0 10px; }\n"
    "& .cv-token { display: inline-block; white-space: pre; min-width: 0.5em; margin: 0 1px; padding: 0 3px;\n"
    "    border: 1px solid #d8d8d8; border-radius: 3px; line-height: 1.45; cursor: default; color: #222;\n"
    "    font-family: 'DejaVu Sans Mono', ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }\n"
    "& .cv-token.cv-hovered { outline: 2px solid #e08214; outline-offset: 0; }\n"
    "& .cv-token.cv-locked { border-color: #2166ac; box-shadow: 0 0 0 1px #2166ac; }\n"
    "& .cv-plot { overflow-x: auto; max-width: 100%; }\n"
    "& canvas.cv-pattern { display: block; cursor: crosshair; }\n"
    "& .cv-legend { display: flex; align-items: center; gap: 6px; margin: 6px 0 2px; font-size: 11px; color: #444; }\n"
    "& .cv-legend-title { font-weight: 600; margin-right: 4px; }\n"
    "& .cv-legend-bar { display: inline-block; width: 160px; height: 10px; border: 1px solid #aaa; }\n"
    "& .cv-legend-nan { display: inline-block; padding: 0 5px; margin-left: 8px; border: 1px solid #aaa; }\n"
    "& .cv-scroll { overflow: auto; max-width: 100%; max-height: 80vh; }\n"
    "& table.cv-grid { border-collapse: collapse; font-size: 11px; }\n"
    "& table.cv-grid caption { caption-side: top; text-align: center; font-weight: 600; color: #444; padding: 2px; }\n"
    "& table.cv-grid th { font-weight: normal; color: #333; padding: 1px 4px; white-space: pre;\n"
    "    font-family: 'DejaVu Sans Mono', ui-monospace, Menlo, Consolas, monospace; }\n"
    "& table.cv-grid th.cv-row { text-align: right; }\n"
    "& table.cv-grid th.cv-row, & table.cv-grid th.cv-col { max-width: 14em; overflow: hidden; text-overflow: ellipsis; }\n"
    "& table.cv-grid th.cv-corner { font-family: inherit; font-weight: 600; text-align: right; color: #444; }\n"
    "& table.cv-grid.cv-vertical th.cv-col { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left;\n"
    "    max-width: none; max-height: 14em; }\n"
    "& td.cv-cell { min-width: 34px; height: 20px; padding: 0 3px; text-align: center; border: 1px solid #fff;\n"
    "    font-variant-numeric: tabular-nums; cursor: default; }\n"
    "& table.cv-compact td.cv-cell { min-width: 16px; height: 18px; padding: 0; }\n"
    "& td.cv-cell.cv-hovered { outline: 2px solid #e08214; outline-offset: -1px; }\n";

/* The shared script: colour scales, how a token is shown, small DOM builders. */
static const char common_js[] =
    "var CV_SEQ = [[255,255,255],[198,219,239],[107,174,214],[33,113,181],[8,48,107]]; /* white to blue */\n"
    "var CV_DIV = [[178,24,43],[239,138,98],[253,219,199],[247,247,247],[209,229,240],[103,169,207],[33,102,172]];\n"
    "var CV_NAN = [190,190,190];\n"
    "function cvRamp(stops, t) {\n"
    "  t = Math.min(1, Math.max(0, t));\n"
    "  var x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;\n"
    "  return [0, 1, 2].map(function (j) { return Math.round(stops[i][j] + (stops[i + 1][j] - stops[i][j]) * f); });\n"
    "}\n"
    "/* the colour of v on a scale {kind, lo, hi}: diverging is red below 0, white at 0, blue above */\n"
    "function cvColor(scale, v) {\n"
    "  if (v === null || v === undefined) return CV_NAN;\n"
    "  if (scale.kind === 'diverging') return cvRamp(CV_DIV, 0.5 + 0.5 * v / scale.hi);\n"
    "  return cvRamp(CV_SEQ, (v - scale.lo) / (scale.hi - scale.lo));\n"
    "}\n"
    "function cvCss(c) { return 'rgb(' + c.join(',') + ')'; }\n"
    "function cvPaint(el, c) {\n"
    "  el.style.background = cvCss(c);\n"
    "  el.style.color = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 140 ? '#fff' : '#222';\n"
    "}\n"
    "function cvFmt(v) {\n"
    "  if (v === null || v === undefined) return 'nan';\n"
    "  var a = Math.abs(v);\n"
    "  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);\n"
    "  return v.toFixed(a >= 100 ? 1 : 3);\n"
    "}\n"
    "function cvFmtShort(v) {\n"
    "  if (v === null || v === undefined) return 'nan';\n"
    "  return Math.abs(v) < 1000 ? v.toFixed(2) : v.toExponential(1);\n"
    "}\n"
    "/* a token as shown: line breaks, tabs and other control characters as escapes */\n"
    "function cvShow(t) {\n"
    "  var s = '';\n"
    "  for (var ch of t) {\n"
    "    var c = ch.codePointAt(0);\n"
    "    if (ch === '\\n') s += '\\\\n';\n"
    "    else if (ch === '\\t') s += '\\\\t';\n"
    "    else if (ch === '\\r') s += '\\\\r';\n"
    "    else if (c < 0x20 || c === 0x7f || (c >= 0x80 && c < 0xa0)) s += '\\\\x' + (c < 16 ? '0' : '') + c.toString(16);\n"
    "    else if (c === 0x2028 || c === 0x2029) s += '\\\\u' + c.toString(16);\n"
    "    else s += ch;\n"
    "  }\n"
    "  return s;\n"
    "}\n"
    "/* a token as an axis label: also leading spaces visible (U+2423) and the empty token as U+2205 */\n"
    "function cvLabel(t) {\n"
    "  var s = cvShow(t);\n"
    "  return s === '' ? '\\u2205' : s.replace(/^ +/, function (m) { return '\\u2423'.repeat(m.length); });\n"
    "}\n"
    "function cvQuote(t) { return '\"' + cvShow(t) + '\"'; }\n"
    "function cvEl(tag, cls, text) {\n"
    "  var e = document.createElement(tag);\n"
    "  if (cls) e.className = cls;\n"
    "  if (text !== undefined) e.textContent = text;\n"
    "  return e;\n"
    "}\n"
    "/* a row of buttons (class cls, attribute data-<key>), pick(i) on a click; select(i) marks one */\n"
    "function cvButtons(cls, key, names, pick) {\n"
    "  var bar = cvEl('div', 'cv-buttons');\n"
    "  var bs = names.map(function (name, i) {\n"
    "    var b = cvEl('button', cls, name);\n"
    "    b.type = 'button';\n"
    "    b.setAttribute('data-' + key, i);\n"
    "    b.addEventListener('click', function () { pick(i); });\n"
    "    bar.appendChild(b);\n"
    "    return b;\n"
    "  });\n"
    "  return { bar: bar, select: function (i) { bs.forEach(function (b, j) { b.classList.toggle('cv-selected', i === j); }); } };\n"
    "}\n"
    "/* div.cv-legend: the scale's title, its ends around the colour bar, and the colour of nan */\n"
    "function cvLegend(scale, title) {\n"
    "  var d = cvEl('div', 'cv-legend');\n"
    "  d.appendChild(cvEl('span', 'cv-legend-title', title));\n"
    "  d.appendChild(cvEl('span', 'cv-legend-lo', cvFmt(scale.lo)));\n"
    "  var bar = cvEl('span', 'cv-legend-bar');\n"
    "  bar.style.background = 'linear-gradient(to right,' + (scale.kind === 'diverging' ? CV_DIV : CV_SEQ).map(cvCss).join(',') + ')';\n"
    "  d.appendChild(bar);\n"
    "  d.appendChild(cvEl('span', 'cv-legend-hi', cvFmt(scale.hi)));\n"
    "  if (scale.kind === 'diverging') d.appendChild(cvEl('span', 'cv-legend-note', '(white: 0)'));\n"
    "  var nan = cvEl('span', 'cv-legend-nan', 'nan');\n"
    "  nan.style.background = cvCss(CV_NAN);\n"
    "  d.appendChild(nan);\n"
    "  return d;\n"
    "}\n";

void circuits_vis_options_init(circuits_vis_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->size = (uint32_t)sizeof *opts;
}

static const size_t vis_options_versions[] = {sizeof(circuits_vis_options)}; /* 0.10.0 */

int cx_vis_options(cx_vis_page *pg, const circuits_vis_options *opts, const char *fn)
{
    memset(pg, 0, sizeof *pg);
    pg->fn = fn;
    circuits_vis_options_init(&pg->o);
    if (opts) {
        int rc = cx_options_copy(&pg->o, opts, vis_options_versions, CX_COUNT(vis_options_versions), fn);
        if (rc) return rc;
    }
    if (pg->o.fragment != 0 && pg->o.fragment != 1)
        return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: opts->fragment is %d; it must be 0 (a document) or 1 (a fragment)",
                       fn, (int)pg->o.fragment);
    return CIRCUITS_OK;
}

int cx_vis_start(char **html, size_t *len, int64_t a, const char *a_name, int64_t b, const char *b_name, const char *fn)
{
    if (!html) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: html is NULL", fn);
    *html = NULL;
    if (len) *len = 0;
    if (a < 1) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s is %lld; it must be at least 1", fn, a_name, (long long)a);
    if (b < 1) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s is %lld; it must be at least 1", fn, b_name, (long long)b);
    return CIRCUITS_OK;
}

int cx_vis_check_names(const char *const *names, int64_t n, bool optional, const char *what, const char *fn)
{
    if (!names) return optional ? CIRCUITS_OK : cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s is NULL", fn, what);
    for (int64_t i = 0; i < n; i++)
        if (!names[i]) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: %s[%lld] is NULL", fn, what, (long long)i);
    return CIRCUITS_OK;
}

/* A root id no other call makes: a process-wide counter mixed with the process and the time, so
 * that fragments made by two processes (two kernels, two CLI runs) shown in one page differ too. */
static void make_id(char out[24])
{
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = atomic_fetch_add(&counter, 1) ^ (uint64_t)getpid() << 40 ^ (uint64_t)ts.tv_nsec << 20 ^
                 (uint64_t)ts.tv_sec;
    snprintf(out, 24, "cv%016llx", (unsigned long long)cx_splitmix64(&s));
}

void cx_vis_begin(cx_vis_page *pg, const char *view)
{
    cx_html *b = &pg->b;
    make_id(pg->id);
    if (!pg->o.fragment) {
        cx_html_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
        cx_html_text(b, pg->o.title ? pg->o.title : "libcircuits");
        cx_html_puts(b, "</title>\n</head>\n<body style=\"margin: 0; background: #fff\">\n");
    }
    cx_html_printf(b, "<div class=\"cv-view\" data-view=\"%s\" id=\"%s\">\n<style>\n", view, pg->id);
    for (const char *p = css; *p; p++) {
        if (*p == '&') cx_html_printf(b, "#%s", pg->id);
        else cx_html_put(b, p, 1);
    }
    cx_html_puts(b, "</style>\n");
    if (pg->o.title) {
        cx_html_puts(b, "<div class=\"cv-title\">");
        cx_html_text(b, pg->o.title);
        cx_html_puts(b, "</div>\n");
    }
    if (pg->o.subtitle) {
        cx_html_puts(b, "<div class=\"cv-subtitle\">");
        cx_html_text(b, pg->o.subtitle);
        cx_html_puts(b, "</div>\n");
    }
    cx_html_printf(b, "<script type=\"application/json\" id=\"%s-data\">", pg->id);
}

int cx_vis_end(cx_vis_page *pg, const char *view_js, const char *entry, char **html, size_t *len)
{
    cx_html *b = &pg->b;
    cx_html_puts(b, "</script>\n<script>\n(function () {\n\"use strict\";\n");
    cx_html_puts(b, common_js);
    cx_html_puts(b, view_js);
    cx_html_printf(b, "%s(document.getElementById(\"%s\"), JSON.parse(document.getElementById(\"%s-data\").textContent));\n",
                   entry, pg->id, pg->id);
    cx_html_puts(b, "})();\n</script>\n</div>\n");
    if (!pg->o.fragment) cx_html_puts(b, "</body>\n</html>\n");
    if (b->failed) {
        cx_free(b->p);
        return cx_fail(CIRCUITS_E_OUT_OF_MEMORY, "%s: out of memory", pg->fn);
    }
    *html = b->p;
    if (len) *len = b->len;
    return CIRCUITS_OK;
}

/* A scale's end with every digit of the float (%.9g reads back as the same float): ends that differ
 * past the values' 6 digits stay apart in the page, where lo == hi would make every colour NaN. */
static void scale_end(cx_html *b, float v) { cx_html_printf(b, "%.9g", (double)v); }

void cx_vis_json_scale(cx_html *b, const float *v, size_t n)
{
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            if (v[i] < lo) lo = v[i];
            if (v[i] > hi) hi = v[i];
        }
    if (lo > hi) {
        lo = 0, hi = 1; /* nothing finite */
    } else if (lo < 0 && hi > 0) {
        float m = fmaxf(-lo, hi);
        cx_html_puts(b, "{\"kind\":\"diverging\",\"lo\":");
        scale_end(b, -m);
        cx_html_puts(b, ",\"hi\":");
        scale_end(b, m);
        cx_html_puts(b, "}");
        return;
    } else if (lo == hi) { /* one value: a range from 0 to it (0 alone: 0..1) */
        if (lo > 0) lo = 0;
        else if (hi < 0) hi = 0;
        else hi = 1;
    }
    cx_html_puts(b, "{\"kind\":\"sequential\",\"lo\":");
    scale_end(b, lo);
    cx_html_puts(b, ",\"hi\":");
    scale_end(b, hi);
    cx_html_puts(b, "}");
}

void circuits_vis_free(char *html) { cx_free(html); }

int circuits_vis_save(const char *html, size_t len, const char *path)
{
    const char *fn = "circuits_vis_save";
    if (!html) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: html is NULL", fn);
    if (!path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: path is NULL", fn);
    if (!*path) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: path is empty", fn);
    return cx_write_atomic(path, html, len, fn);
}
