/* circuits_vis_grid: a grid of values (a patching grid: layer x position, head x layer) (vis.h). */
#include "vis.h"

/* cvGrid(root, data): data {rows, cols, row_title, col_title, value_title, values[row][col],
 * scale}. A table of coloured cells with the row and column labels (the values written in the
 * cells when the grid is small), the hovered cell's value, the legend. */
static const char grid_js[] =
    "function cvGrid(root, d) {\n"
    "  var R = d.rows.length, C = d.cols.length, small = C <= 24 && R <= 64, last = null;\n"
    "  var idle = 'Hover a cell for its value.';\n"
    "  var info = cvEl('div', 'cv-info', idle);\n"
    "  root.appendChild(info);\n"
    "  var table = cvEl('table', 'cv-grid' + (small ? '' : ' cv-compact') + (C > 12 ? ' cv-vertical' : ''));\n"
    "  if (d.col_title !== null) table.appendChild(cvEl('caption', null, cvShow(d.col_title) + ' \\u2192'));\n"
    "  var head = cvEl('tr');\n"
    "  head.appendChild(cvEl('th', 'cv-corner', d.row_title !== null ? cvShow(d.row_title) + ' \\u2193' : ''));\n"
    "  d.cols.forEach(function (c, j) {\n"
    "    var th = cvEl('th', 'cv-col', cvLabel(c));\n"
    "    th.setAttribute('data-col', j);\n"
    "    th.title = cvShow(c);\n"
    "    head.appendChild(th);\n"
    "  });\n"
    "  var thead = cvEl('thead'), tbody = cvEl('tbody');\n"
    "  thead.appendChild(head);\n"
    "  table.appendChild(thead);\n"
    "  d.values.forEach(function (row, r) {\n"
    "    var tr = cvEl('tr'), th = cvEl('th', 'cv-row', cvLabel(d.rows[r]));\n"
    "    th.setAttribute('data-row', r);\n"
    "    th.title = cvShow(d.rows[r]);\n"
    "    tr.appendChild(th);\n"
    "    row.forEach(function (v, c) {\n"
    "      var td = cvEl('td', 'cv-cell', small ? cvFmtShort(v) : '');\n"
    "      td.setAttribute('data-row', r);\n"
    "      td.setAttribute('data-col', c);\n"
    "      cvPaint(td, cvColor(d.scale, v));\n"
    "      td.addEventListener('mouseenter', function () {\n"
    "        if (last) last.classList.remove('cv-hovered');\n"
    "        td.classList.add('cv-hovered');\n"
    "        last = td;\n"
    "        info.textContent = cvLabel(d.rows[r]) + ', ' + cvLabel(d.cols[c]) + ': ' + cvFmt(v);\n"
    "      });\n"
    "      tr.appendChild(td);\n"
    "    });\n"
    "    tbody.appendChild(tr);\n"
    "  });\n"
    "  table.appendChild(tbody);\n"
    "  table.addEventListener('mouseleave', function () {\n"
    "    if (last) last.classList.remove('cv-hovered');\n"
    "    last = null;\n"
    "    info.textContent = idle;\n"
    "  });\n"
    "  var scroll = cvEl('div', 'cv-scroll');\n"
    "  scroll.appendChild(table);\n"
    "  root.appendChild(scroll);\n"
    "  root.appendChild(cvLegend(d.scale, d.value_title !== null ? cvShow(d.value_title) : 'value'));\n"
    "}\n";

static void json_title(cx_html *b, const char *key, const char *s)
{
    cx_html_printf(b, ",\n\"%s\":", key);
    if (s) cx_html_json_string(b, s);
    else cx_html_puts(b, "null");
}

int circuits_vis_grid(char **html, size_t *len, const float *values, int64_t rows, int64_t cols,
                      const char *const *row_labels, const char *const *col_labels, const char *row_title,
                      const char *col_title, const char *value_title, const circuits_vis_options *opts)
{
    const char *fn = "circuits_vis_grid";
    int rc = cx_vis_start(html, len, rows, "rows", cols, "cols", fn);
    if (rc) return rc;
    size_t cells;
    if (!cx_mul_size((size_t)rows, (size_t)cols, &cells) || cells > SIZE_MAX / 32)
        return cx_fail(CIRCUITS_E_RANGE, "%s: %lld x %lld cells is too large", fn, (long long)rows, (long long)cols);
    if (!values) return cx_fail(CIRCUITS_E_INVALID_ARGUMENT, "%s: values is NULL", fn);
    rc = cx_vis_check_names(row_labels, rows, true, "row_labels", fn);
    if (!rc) rc = cx_vis_check_names(col_labels, cols, true, "col_labels", fn);
    cx_vis_page pg;
    if (!rc) rc = cx_vis_options(&pg, opts, fn);
    if (rc) return rc;

    cx_vis_begin(&pg, "grid");
    cx_html *b = &pg.b;
    cx_html_puts(b, "{\"rows\":");
    cx_html_json_names(b, row_labels, rows, "");
    cx_html_puts(b, ",\n\"cols\":");
    cx_html_json_names(b, col_labels, cols, "");
    json_title(b, "row_title", row_title);
    json_title(b, "col_title", col_title);
    json_title(b, "value_title", value_title);
    cx_html_puts(b, ",\n\"scale\":");
    cx_vis_json_scale(b, values, cells);
    cx_html_puts(b, ",\n\"values\":[");
    for (size_t r = 0; r < (size_t)rows && !b->failed; r++) {
        cx_html_puts(b, r ? ",\n" : "\n");
        cx_html_json_numbers(b, values + r * (size_t)cols, cols);
    }
    cx_html_puts(b, "]}");
    return cx_vis_end(&pg, grid_js, "cvGrid", html, len);
}
