/* circuits_vis_attention_patterns: heads' attention patterns with their tokens (vis.h). */
#include "vis.h"

#include <string.h>

/* cvAttention(root, data): data {tokens, heads, pattern[head][query][key <= query]}. Head buttons,
 * the token boxes, the pattern on a canvas with the tokens on its axes (query rows, key columns),
 * the legend. Hovering token q colours every token by the attention q pays to it (CircuitsVis's
 * attention_patterns); clicking a token keeps it as the query (until clicked again) while the
 * mouse moves on; hovering a cell shows its value; a head button redraws both. */
static const char attention_js[] =
    "function cvAttention(root, d) {\n"
    "  var n = d.tokens.length, head = 0, query = -1, key = -1, locked = -1;\n"
    "  var SCALE = { kind: 'sequential', lo: 0, hi: 1 };\n"
    "  var idle = 'Hover a token to colour the tokens by the attention it pays to each (click: keep it); hover the pattern for one value.';\n"
    "  var heads = cvButtons('cv-head', 'head', d.heads.map(cvShow), function (h) { head = h; heads.select(h); update(); });\n"
    "  heads.select(0);\n"
    "  root.appendChild(heads.bar);\n"
    "  var info = cvEl('div', 'cv-info', idle);\n"
    "  root.appendChild(info);\n"
    "  var toks = cvEl('div', 'cv-tokens');\n"
    "  var spans = d.tokens.map(function (t, i) {\n"
    "    var s = cvEl('span', 'cv-token', cvShow(t));\n"
    "    s.setAttribute('data-pos', i);\n"
    "    s.title = 'position ' + i;\n"
    "    s.addEventListener('mouseenter', function () { query = i; key = -1; update(); });\n"
    "    s.addEventListener('click', function () { locked = locked === i ? -1 : i; query = i; key = -1; update(); });\n"
    "    toks.appendChild(s);\n"
    "    return s;\n"
    "  });\n"
    "  toks.addEventListener('mouseleave', function () { query = locked; key = -1; update(); });\n"
    "  root.appendChild(toks);\n"
    "  var plot = cvEl('div', 'cv-plot'), cv = cvEl('canvas', 'cv-pattern');\n"
    "  plot.appendChild(cv);\n"
    "  root.appendChild(plot);\n"
    "  root.appendChild(cvLegend(SCALE, 'attention'));\n"
    "  /* geometry: cells of up to 36 px, the pattern at least 480 px wide up to 480 tokens, one px\n"
    "   * per token up to 720 tokens, then 720 px; labels thinned to every step-th token */\n"
    "  var ctx = cv.getContext('2d'), font = '11px ' + getComputedStyle(root).fontFamily;\n"
    "  ctx.font = font;\n"
    "  var cell = Math.min(36, Math.max(480 / n, Math.min(1, 720 / n)));\n"
    "  var step = Math.max(1, Math.ceil(13 / cell));\n"
    "  var labels = d.tokens.map(function (t) {\n"
    "    var s = cvLabel(t), a = Array.from(s);\n"
    "    if (ctx.measureText(s).width <= 120) return s;\n"
    "    while (a.length > 1 && ctx.measureText(a.join('') + '\\u2026').width > 120) a.pop();\n"
    "    return a.join('') + '\\u2026';\n"
    "  });\n"
    "  var lw = 0;\n"
    "  for (var i = 0; i < n; i += step) lw = Math.max(lw, Math.ceil(ctx.measureText(labels[i]).width));\n"
    "  var L = lw + 28, T = 8, P = n * cell, W = Math.ceil(L + P + 12), H = Math.ceil(T + P + lw + 28);\n"
    "  var dpr = window.devicePixelRatio || 1;\n"
    "  cv.width = Math.ceil(W * dpr);\n"
    "  cv.height = Math.ceil(H * dpr);\n"
    "  cv.style.width = W + 'px';\n"
    "  cv.style.height = H + 'px';\n"
    "  cv.setAttribute('data-left', L);\n"
    "  cv.setAttribute('data-top', T);\n"
    "  cv.setAttribute('data-cell', cell);\n"
    "  var images = [];\n"
    "  /* head h's pattern, one pixel per cell; keys after the query stay transparent (blank) */\n"
    "  function image(h) {\n"
    "    if (images[h]) return images[h];\n"
    "    var im = document.createElement('canvas');\n"
    "    im.width = n;\n"
    "    im.height = n;\n"
    "    var c2 = im.getContext('2d'), px = c2.createImageData(n, n);\n"
    "    for (var q = 0; q < n; q++)\n"
    "      for (var k = 0; k <= q; k++) {\n"
    "        var c = cvColor(SCALE, d.pattern[h][q][k]), o = 4 * (q * n + k);\n"
    "        px.data[o] = c[0]; px.data[o + 1] = c[1]; px.data[o + 2] = c[2]; px.data[o + 3] = 255;\n"
    "      }\n"
    "    c2.putImageData(px, 0, 0);\n"
    "    return images[h] = im;\n"
    "  }\n"
    "  function draw() {\n"
    "    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);\n"
    "    ctx.fillStyle = '#fff';\n"
    "    ctx.fillRect(0, 0, W, H);\n"
    "    ctx.imageSmoothingEnabled = false;\n"
    "    ctx.drawImage(image(head), L, T, P, P);\n"
    "    ctx.strokeStyle = '#999';\n"
    "    ctx.lineWidth = 1;\n"
    "    ctx.strokeRect(L - 0.5, T - 0.5, P + 1, P + 1);\n"
    "    ctx.font = font;\n"
    "    ctx.fillStyle = '#333';\n"
    "    ctx.textBaseline = 'middle';\n"
    "    ctx.textAlign = 'right';\n"
    "    for (var i = 0; i < n; i += step) {\n"
    "      ctx.fillText(labels[i], L - 4, T + (i + 0.5) * cell);\n"
    "      ctx.save();\n"
    "      ctx.translate(L + (i + 0.5) * cell, T + P + 4);\n"
    "      ctx.rotate(-Math.PI / 2);\n"
    "      ctx.fillText(labels[i], 0, 0);\n"
    "      ctx.restore();\n"
    "    }\n"
    "    ctx.fillStyle = '#555';\n"
    "    ctx.textAlign = 'center';\n"
    "    ctx.save();\n"
    "    ctx.translate(9, T + P / 2);\n"
    "    ctx.rotate(-Math.PI / 2);\n"
    "    ctx.fillText('query (destination) \\u2192', 0, 0);\n"
    "    ctx.restore();\n"
    "    ctx.fillText('key (source) \\u2192', L + P / 2, H - 9);\n"
    "    if (query >= 0) {\n"
    "      ctx.strokeStyle = '#e08214';\n"
    "      ctx.lineWidth = 2;\n"
    "      ctx.strokeRect(L - 1, T + query * cell - 1, Math.min(P, (query + 1) * cell) + 2, cell + 2);\n"
    "      if (key >= 0) {\n"
    "        ctx.strokeStyle = '#000';\n"
    "        ctx.strokeRect(L + key * cell - 1, T + query * cell - 1, cell + 2, cell + 2);\n"
    "      }\n"
    "    }\n"
    "  }\n"
    "  function update() {\n"
    "    draw();\n"
    "    var row = query >= 0 ? d.pattern[head][query] : null;\n"
    "    spans.forEach(function (s, k) {\n"
    "      s.classList.toggle('cv-hovered', k === query);\n"
    "      s.classList.toggle('cv-locked', k === locked);\n"
    "      if (row && k <= query) cvPaint(s, cvColor(SCALE, row[k]));\n"
    "      else { s.style.background = ''; s.style.color = ''; }\n"
    "    });\n"
    "    if (!row) { info.textContent = idle; return; }\n"
    "    var k = key, what = 'query ' + query + ' ' + cvQuote(d.tokens[query]);\n"
    "    if (k < 0) {\n"
    "      row.forEach(function (v, j) { if (v !== null && (k < 0 || v > row[k])) k = j; });\n"
    "      if (k < 0) { info.textContent = what + ': nan (no finite value)'; return; }\n"
    "    }\n"
    "    info.textContent = what + ' \\u2192 key ' + k + ' ' + cvQuote(d.tokens[k]) + ': ' +\n"
    "      (k > query ? 'blank (the key is after the query)' : cvFmt(row[k])) + (key < 0 ? ' (top)' : '');\n"
    "  }\n"
    "  cv.addEventListener('mousemove', function (e) {\n"
    "    var r = cv.getBoundingClientRect();\n"
    "    var k = Math.floor((e.clientX - r.left - L) / cell), q = Math.floor((e.clientY - r.top - T) / cell);\n"
    "    if (q < 0 || q >= n || k < 0 || k >= n) { q = locked; k = -1; }\n"
    "    if (q !== query || k !== key) { query = q; key = k; update(); }\n"
    "  });\n"
    "  cv.addEventListener('mouseleave', function () { query = locked; key = -1; update(); });\n"
    "  draw();\n"
    "}\n";

int circuits_vis_attention_patterns(char **html, size_t *len, const char *const *tokens, int64_t n_tokens,
                                    const float *pattern, int64_t n_heads, const char *const *head_names,
                                    const circuits_vis_options *opts)
{
    const char *fn = "circuits_vis_attention_patterns";
    int rc = cx_vis_start(html, len, n_tokens, "n_tokens", n_heads, "n_heads", fn);
    if (rc) return rc;
    size_t cells;
    if (!cx_mul_size((size_t)n_tokens, (size_t)n_tokens, &cells) || !cx_mul_size(cells, (size_t)n_heads, &cells) ||
        cells > SIZE_MAX / 32) /* each value takes up to 14 bytes of text */
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld heads x %lld x %lld tokens is too large", fn, (long long)n_heads,
                       (long long)n_tokens, (long long)n_tokens);
    if (!pattern) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: pattern is NULL", fn);
    rc = cx_vis_check_names(tokens, n_tokens, false, "tokens", fn);
    if (!rc) rc = cx_vis_check_names(head_names, n_heads, true, "head_names", fn);
    cx_vis_page pg;
    if (!rc) rc = cx_vis_options(&pg, opts, fn);
    if (rc) return rc;

    cx_vis_begin(&pg, "attention");
    cx_html *b = &pg.b;
    cx_html_puts(b, "{\"tokens\":");
    cx_html_json_names(b, tokens, n_tokens, "");
    cx_html_puts(b, ",\n\"heads\":");
    cx_html_json_names(b, head_names, n_heads, "Head ");
    cx_html_puts(b, ",\n\"pattern\":[");
    size_t nt = (size_t)n_tokens;
    for (size_t h = 0; h < (size_t)n_heads && !b->failed; h++) {
        cx_html_puts(b, h ? ",\n[" : "\n[");
        for (size_t q = 0; q < nt; q++) { /* keys 0..q: the rest is blank */
            if (q) cx_html_puts(b, ",");
            cx_html_json_numbers(b, pattern + (h * nt + q) * nt, (int64_t)q + 1);
        }
        cx_html_puts(b, "]");
    }
    cx_html_puts(b, "]}");
    return cx_vis_end(&pg, attention_js, "cvAttention", html, len);
}
