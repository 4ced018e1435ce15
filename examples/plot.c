/* PNG plots with cairo (see plot.h); without cairo, functions that say PNG output is unavailable. */
#include "plot.h"

#include <stdio.h>

#ifdef CIRCUITS_HAVE_CAIRO

#include <cairo.h>
#include <math.h>

int plot_available(void) { return 1; }

/* viridis-like sequential ramp, and blue-white-red for signed data */
static void colour(float t, int diverging, double *r, double *g, double *b)
{
    if (t != t) { *r = *g = *b = 0.5; return; } /* NaN: grey */
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    if (diverging) {
        if (t < 0.5f) { double s = t / 0.5; *r = 0.15 + 0.85 * s; *g = 0.3 + 0.7 * s; *b = 0.75 + 0.25 * s; }
        else { double s = (t - 0.5) / 0.5; *r = 1.0 - 0.25 * s; *g = 1.0 - 0.8 * s; *b = 1.0 - 0.85 * s; }
        return;
    }
    static const double stops[5][3] = {{0.27, 0.00, 0.33}, {0.23, 0.32, 0.55}, {0.13, 0.57, 0.55}, {0.37, 0.79, 0.38},
                                       {0.99, 0.91, 0.14}};
    double x = t * 4;
    int i = (int)x;
    if (i >= 4) i = 3;
    double f = x - i;
    *r = stops[i][0] + f * (stops[i + 1][0] - stops[i][0]);
    *g = stops[i][1] + f * (stops[i + 1][1] - stops[i][1]);
    *b = stops[i][2] + f * (stops[i + 1][2] - stops[i][2]);
}

static void text(cairo_t *cr, double x, double y, const char *s, double size, double align, int vertical)
{
    cairo_text_extents_t e;
    cairo_set_font_size(cr, size);
    cairo_text_extents(cr, s, &e);
    cairo_save(cr);
    cairo_move_to(cr, x, y);
    if (vertical) cairo_rotate(cr, -M_PI / 2);
    cairo_rel_move_to(cr, -align * e.width, e.height / 2);
    cairo_show_text(cr, s);
    cairo_restore(cr);
}

int plot_heatmap(const char *path, const char *title, const float *data, int rows, int cols, float vmin, float vmax,
                 const char *const *row_labels, const char *const *col_labels, const char *x_label, const char *y_label)
{
    int cell = rows > 60 || cols > 60 ? 4 : rows > 24 || cols > 24 ? 12 : 28;
    int left = 90, top = 50, right = 110, bottom = 80;
    int W = left + cols * cell + right, H = top + rows * cell + bottom;
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    int diverging = vmin < 0 && vmax > 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            double r, g, b;
            colour((data[i * cols + j] - vmin) / (vmax - vmin), diverging, &r, &g, &b);
            cairo_set_source_rgb(cr, r, g, b);
            cairo_rectangle(cr, left + j * cell, top + i * cell, cell, cell);
            cairo_fill(cr);
        }
    cairo_set_source_rgb(cr, 0, 0, 0);
    text(cr, W / 2.0, 20, title, 15, 0.5, 0);
    double fs = cell >= 20 ? 11 : 9;
    for (int i = 0; row_labels && i < rows; i++) text(cr, left - 6, top + i * cell + cell / 2.0, row_labels[i], fs, 1, 0);
    for (int j = 0; col_labels && j < cols; j++)
        text(cr, left + j * cell + cell / 2.0, top + rows * cell + 8, col_labels[j], fs, 1, 1);
    if (x_label) text(cr, left + cols * cell / 2.0, H - 14, x_label, 12, 0.5, 0);
    if (y_label) text(cr, 16, top + rows * cell / 2.0, y_label, 12, 0.5, 1);
    /* colour bar */
    int bx = left + cols * cell + 30, bh = rows * cell;
    for (int k = 0; k < bh; k++) {
        double r, g, b;
        colour(1.0f - (float)k / (float)(bh - 1 > 0 ? bh - 1 : 1), diverging, &r, &g, &b);
        cairo_set_source_rgb(cr, r, g, b);
        cairo_rectangle(cr, bx, top + k, 16, 1);
        cairo_fill(cr);
    }
    char buf[32];
    cairo_set_source_rgb(cr, 0, 0, 0);
    snprintf(buf, sizeof buf, "%.3g", vmax);
    text(cr, bx + 20, top, buf, 10, 0, 0);
    snprintf(buf, sizeof buf, "%.3g", vmin);
    text(cr, bx + 20, top + bh, buf, 10, 0, 0);
    cairo_status_t st = cairo_surface_write_to_png(s, path);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
    return st == CAIRO_STATUS_SUCCESS ? 0 : -1;
}

int plot_lines(const char *path, const char *title, const plot_series *series, int n_series, const char *x_label,
               const char *y_label)
{
    int W = 760, H = 440, left = 70, top = 45, right = 170, bottom = 60;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int k = 0; k < n_series; k++)
        for (int i = 0; i < series[k].n; i++) {
            double x = series[k].x[i], y = series[k].y[i];
            if (!isfinite(y)) continue;
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
        }
    if (!(x1 > x0)) x1 = x0 + 1;
    if (!(y1 > y0)) y1 = y0 + 1;
    double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    int pw = W - left - right, ph = H - top - bottom;
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, left, top, pw, ph);
    cairo_stroke(cr);
    char buf[32];
    for (int t = 0; t <= 4; t++) { /* ticks */
        double fx = left + pw * t / 4.0, fy = top + ph - ph * t / 4.0;
        snprintf(buf, sizeof buf, "%.3g", x0 + (x1 - x0) * t / 4.0);
        text(cr, fx, top + ph + 12, buf, 10, 0.5, 0);
        snprintf(buf, sizeof buf, "%.3g", y0 + (y1 - y0) * t / 4.0);
        text(cr, left - 6, fy, buf, 10, 1, 0);
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, left + 1, fy);
        cairo_line_to(cr, left + pw - 1, fy);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
    }
    static const double pal[6][3] = {{0.12, 0.47, 0.71}, {1.0, 0.5, 0.05}, {0.17, 0.63, 0.17},
                                     {0.84, 0.15, 0.16}, {0.58, 0.4, 0.74}, {0.55, 0.34, 0.29}};
    for (int k = 0; k < n_series; k++) {
        const double *c = pal[k % 6];
        cairo_set_source_rgb(cr, c[0], c[1], c[2]);
        cairo_set_line_width(cr, 1.8);
        int started = 0;
        for (int i = 0; i < series[k].n; i++) {
            double y = series[k].y[i];
            if (!isfinite(y)) continue;
            double px = left + pw * (series[k].x[i] - x0) / (x1 - x0), py = top + ph - ph * (y - y0) / (y1 - y0);
            if (!started) cairo_move_to(cr, px, py), started = 1;
            else cairo_line_to(cr, px, py);
        }
        cairo_stroke(cr);
        if (series[k].n <= 40)
            for (int i = 0; i < series[k].n; i++) {
                double y = series[k].y[i];
                if (!isfinite(y)) continue;
                cairo_arc(cr, left + pw * (series[k].x[i] - x0) / (x1 - x0), top + ph - ph * (y - y0) / (y1 - y0), 2.5, 0,
                          2 * M_PI);
                cairo_fill(cr);
            }
        cairo_rectangle(cr, left + pw + 12, top + 10 + 20 * k, 14, 4);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        text(cr, left + pw + 32, top + 12 + 20 * k, series[k].label, 11, 0, 0);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    text(cr, W / 2.0, 18, title, 15, 0.5, 0);
    if (x_label) text(cr, left + pw / 2.0, H - 16, x_label, 12, 0.5, 0);
    if (y_label) text(cr, 16, top + ph / 2.0, y_label, 12, 0.5, 1);
    cairo_status_t st = cairo_surface_write_to_png(s, path);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
    return st == CAIRO_STATUS_SUCCESS ? 0 : -1;
}

#else /* built without cairo */

int plot_available(void) { return 0; }

static int unavailable(const char *path)
{
    static int said;
    if (!said) fprintf(stderr, "%s (not written: %s)\n", PLOT_NO_CAIRO, path);
    said = 1;
    return -1;
}

int plot_heatmap(const char *path, const char *title, const float *data, int rows, int cols, float vmin, float vmax,
                 const char *const *row_labels, const char *const *col_labels, const char *x_label,
                 const char *y_label)
{
    (void)title, (void)data, (void)rows, (void)cols, (void)vmin, (void)vmax, (void)row_labels, (void)col_labels;
    (void)x_label, (void)y_label;
    return unavailable(path);
}

int plot_lines(const char *path, const char *title, const plot_series *series, int n_series, const char *x_label,
               const char *y_label)
{
    (void)title, (void)series, (void)n_series, (void)x_label, (void)y_label;
    return unavailable(path);
}

#endif /* CIRCUITS_HAVE_CAIRO */
