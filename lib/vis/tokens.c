/* circuits_vis_colored_tokens: tokens coloured by a value (vis.h). */
#include "vis.h"

/* cvTokens(root, data): data {tokens, series, values[series][pos], scales[series]}. Series buttons
 * when there are several, the token boxes coloured by the chosen series on its own scale, the
 * value of the hovered token, the legend. */
static const char tokens_js[] =
    "function cvTokens(root, d) {\n"
    "  var series = 0, pos = -1, legend = null;\n"
    "  var idle = 'Hover a token for its value.';\n"
    "  var bs = null;\n"
    "  if (d.series.length > 1) {\n"
    "    bs = cvButtons('cv-series', 'series', d.series.map(cvShow), function (s) { series = s; update(); });\n"
    "    root.appendChild(bs.bar);\n"
    "  }\n"
    "  var info = cvEl('div', 'cv-info', idle);\n"
    "  root.appendChild(info);\n"
    "  var toks = cvEl('div', 'cv-tokens');\n"
    "  var spans = d.tokens.map(function (t, i) {\n"
    "    var s = cvEl('span', 'cv-token', cvShow(t));\n"
    "    s.setAttribute('data-pos', i);\n"
    "    s.addEventListener('mouseenter', function () { pos = i; update(); });\n"
    "    toks.appendChild(s);\n"
    "    return s;\n"
    "  });\n"
    "  toks.addEventListener('mouseleave', function () { pos = -1; update(); });\n"
    "  root.appendChild(toks);\n"
    "  var shown = -1;\n"
    "  function update() {\n"
    "    var sc = d.scales[series], v = d.values[series];\n"
    "    if (shown !== series) {\n"
    "      if (bs) bs.select(series);\n"
    "      spans.forEach(function (s, i) { cvPaint(s, cvColor(sc, v[i])); });\n"
    "      var l = cvLegend(sc, cvShow(d.series[series]));\n"
    "      if (legend) root.replaceChild(l, legend); else root.appendChild(l);\n"
    "      legend = l;\n"
    "      shown = series;\n"
    "    }\n"
    "    spans.forEach(function (s, i) { s.classList.toggle('cv-hovered', i === pos); });\n"
    "    info.textContent = pos < 0 ? idle :\n"
    "      cvQuote(d.tokens[pos]) + ' (position ' + pos + '): ' + cvShow(d.series[series]) + ' = ' + cvFmt(v[pos]);\n"
    "  }\n"
    "  update();\n"
    "}\n";

int circuits_vis_colored_tokens(char **html, size_t *len, const char *const *tokens, int64_t n_tokens,
                                const float *values, int64_t n_series, const char *const *series_names,
                                const circuits_vis_options *opts)
{
    const char *fn = "circuits_vis_colored_tokens";
    int rc = cx_vis_start(html, len, n_tokens, "n_tokens", n_series, "n_series", fn);
    if (rc) return rc;
    size_t cells;
    if (!cx_mul_size((size_t)n_tokens, (size_t)n_series, &cells) || cells > SIZE_MAX / 32)
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld series x %lld tokens is too large", fn, (long long)n_series,
                       (long long)n_tokens);
    if (!values) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: values is NULL", fn);
    rc = cx_vis_check_names(tokens, n_tokens, false, "tokens", fn);
    if (!rc) rc = cx_vis_check_names(series_names, n_series, true, "series_names", fn);
    cx_vis_page pg;
    if (!rc) rc = cx_vis_options(&pg, opts, fn);
    if (rc) return rc;

    cx_vis_begin(&pg, "tokens");
    cx_html *b = &pg.b;
    size_t nt = (size_t)n_tokens;
    cx_html_puts(b, "{\"tokens\":");
    cx_html_json_names(b, tokens, n_tokens, "");
    cx_html_puts(b, ",\n\"series\":");
    if (series_names || n_series > 1) cx_html_json_names(b, series_names, n_series, "Series ");
    else cx_html_puts(b, "[\"value\"]");
    cx_html_puts(b, ",\n\"scales\":[");
    for (size_t s = 0; s < (size_t)n_series; s++) {
        if (s) cx_html_puts(b, ",");
        cx_vis_json_scale(b, values + s * nt, nt);
    }
    cx_html_puts(b, "],\n\"values\":[");
    for (size_t s = 0; s < (size_t)n_series && !b->failed; s++) {
        cx_html_puts(b, s ? ",\n" : "\n");
        cx_html_json_numbers(b, values + s * nt, n_tokens);
    }
    cx_html_puts(b, "]}");
    return cx_vis_end(&pg, tokens_js, "cvTokens", html, len);
}
