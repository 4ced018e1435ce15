/* The pictures of the examples and the CLI (plot.h), drawn on cairo in one style (docs/pictures.md
 * "Static pictures"): round ticks, tokens on position axes, a colour bar with its title, legends
 * beside the plot. Without cairo the plot functions say PNG output is unavailable; the tick and
 * label helpers work in both builds. */
#include "plot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- round ticks (both builds) ---------------- */

int plot_nice_ticks(double lo, double hi, int target, double *out, int max_ticks, int *decimals)
{
    if (decimals) *decimals = 0;
    if (!out || max_ticks < 1 || !isfinite(lo) || !isfinite(hi) || !(hi > lo) || !isfinite(hi - lo)) return 0;
    if (target < 2) target = 2;
    double raw = (hi - lo) / target;
    int e = (int)floor(log10(raw));
    static const int mult[] = {1, 2, 5};
    /* the smallest 1/2/5 x 10^e step at least raw/1.5 (the rounding of a nice-number labeller),
     * larger while the ticks would not fit max_ticks */
    for (int tries = 0; tries < 64; tries++) {
        for (int m = 0; m < 3; m++) {
            double step = mult[m] * pow(10.0, e);
            if (step < raw / 1.5 && tries == 0) continue;
            double k0 = ceil(lo / step - 1e-9), k1 = floor(hi / step + 1e-9);
            /* k counts in whole numbers only below 2^52: beyond, k++ stands still (a range
             * narrower than the doubles around it) and the loop would write past out */
            if (k1 - k0 + 1 > max_ticks || fmax(fabs(k0), fabs(k1)) > 0x1p52) continue;
            int n = 0;
            for (double k = k0; k <= k1; k++) {
                /* k x mult x 10^e as the double nearest the decimal: strtod rounds correctly,
                 * where pow(10, e) is inexact beyond 10^22 */
                char dec[48];
                snprintf(dec, sizeof dec, "%.0fe%d", k * mult[m], e);
                double v = strtod(dec, NULL);
                out[n++] = v == 0 ? 0.0 : v; /* no -0 */
            }
            if (decimals) *decimals = e < 0 ? -e : 0;
            return n;
        }
        e++;
    }
    return 0;
}

int plot_written(int rc, const char *prog, const char *path)
{
    if (rc == 0 || !plot_available()) return 0;
    fprintf(stderr, "%s: cannot write %s\n", prog, path);
    return 1;
}

/* ---------------- printable labels (both builds) ---------------- */

/* the length of the valid UTF-8 sequence at s (1-4), or 0 when it is not one */
static int utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80) return 1;
    int n = s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (n == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0))) return 0; /* overlong, surrogate */
    if (n == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))) return 0; /* overlong, > U+10FFFF */
    return n;
}

int plot_token_label(char *out, size_t n, const char *token)
{
    if (!out || !token || n == 0) return -1;
    size_t len = 0, w = 0; /* the whole label's length; bytes written */
    int cut = 0, leading = 1;
    for (const unsigned char *s = (const unsigned char *)token; *s;) {
        char piece[8];
        int k = utf8_len(s), adv = k ? k : 1;
        if (leading && *s == ' ') memcpy(piece, "\xe2\x90\xa3", 4); /* U+2423 */
        else if (*s == '\n') memcpy(piece, "\\n", 3);
        else if (*s == '\t') memcpy(piece, "\\t", 3);
        else if (*s == '\r') memcpy(piece, "\\r", 3);
        else if (*s < 0x20 || *s == 0x7f) snprintf(piece, sizeof piece, "\\x%02X", *s);
        else if (!k) memcpy(piece, "\xef\xbf\xbd", 4); /* U+FFFD */
        else {
            memcpy(piece, s, (size_t)k);
            piece[k] = 0;
        }
        leading = leading && *s == ' ';
        size_t pl = strlen(piece);
        if (!cut && w + pl < n) memcpy(out + w, piece, pl), w += pl;
        else cut = 1;
        len += pl;
        s += adv;
    }
    out[w] = 0;
    return len > INT32_MAX ? INT32_MAX : (int)len;
}

#ifdef CIRCUITS_HAVE_CAIRO

#include <cairo.h>
#ifdef CIRCUITS_HAVE_FONTCONFIG
#include <fontconfig/fontconfig.h>
#endif
#include <stdlib.h>

int plot_available(void) { return 1; }

void plot_release_fonts(void)
{
    cairo_debug_reset_static_data();
#ifdef CIRCUITS_HAVE_FONTCONFIG
    FcFini();
#endif
}

/* ---------------- style ---------------- */

#define PI 3.14159265358979323846
#define FONT "DejaVu Sans"
#define TITLE_PX 15.0
#define SUBTITLE_PX 11.0
#define LABEL_PX 12.0 /* axis titles */
#define TICK_PX 10.0  /* tick labels, legend */
#define MAX_LABEL 40  /* axis labels longer than this many bytes are cut with "…" */

static const double palette[8][3] = {{0.122, 0.467, 0.706}, {1.000, 0.498, 0.055}, {0.173, 0.627, 0.173},
                                     {0.839, 0.153, 0.157}, {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294},
                                     {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498}};

/* viridis at 0, 0.1, .., 1 (matplotlib's values) */
static const double viridis[11][3] = {
    {0.267004, 0.004874, 0.329415}, {0.282623, 0.140926, 0.457517}, {0.253935, 0.265254, 0.529983},
    {0.206756, 0.371758, 0.553117}, {0.163625, 0.471133, 0.558148}, {0.127568, 0.566949, 0.550556},
    {0.134692, 0.658636, 0.517649}, {0.266941, 0.748751, 0.440573}, {0.477504, 0.821444, 0.318195},
    {0.741388, 0.873449, 0.149561}, {0.993248, 0.906157, 0.143936}};
/* RdBu as TransformerLens's plots (plotly "RdBu") and CircuitsVis colour signed values: red low,
 * white middle, blue high, so a picture and its HTML view agree. ColorBrewer's 9 classes. */
static const double rdbu[9][3] = {{0.403922, 0.000000, 0.121569}, {0.839216, 0.376471, 0.301961},
                                  {0.956863, 0.647059, 0.509804}, {0.992157, 0.858824, 0.780392},
                                  {0.968627, 0.968627, 0.968627}, {0.572549, 0.772549, 0.870588},
                                  {0.262745, 0.576471, 0.764706}, {0.129412, 0.400000, 0.674510},
                                  {0.019608, 0.188235, 0.380392}};

/* t in [0, 1] (clamped) to a colour of the scale; NaN: grey */
static void colour_at(double t, int diverging, double rgb[3])
{
    if (t != t) {
        rgb[0] = rgb[1] = rgb[2] = 0.86;
        return;
    }
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    const double(*stops)[3] = diverging ? rdbu : viridis;
    int last = diverging ? 8 : 10;
    double x = t * last;
    int i = (int)x;
    if (i >= last) i = last - 1;
    double f = x - i;
    for (int c = 0; c < 3; c++) rgb[c] = stops[i][c] + f * (stops[i + 1][c] - stops[i][c]);
}

/* ---------------- text ---------------- */

static void font(cairo_t *cr, double px, int bold)
{
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, px);
}

/* s made printable and cut to MAX_LABEL bytes with "…" */
static const char *clean(char *buf, size_t n, const char *s)
{
    if (!s) s = "";
    int len = plot_token_label(buf, n < MAX_LABEL + 4 ? n : MAX_LABEL + 4, s);
    if (len >= (int)(n < MAX_LABEL + 4 ? n : MAX_LABEL + 4)) {
        size_t w = strlen(buf);
        while (w > MAX_LABEL - 3 || (w > 0 && ((unsigned char)buf[w] & 0xc0) == 0x80)) w--;
        memcpy(buf + w, "\xe2\x80\xa6", 4); /* … */
    }
    return buf;
}

static double text_w(cairo_t *cr, const char *s)
{
    char buf[MAX_LABEL + 8];
    cairo_text_extents_t e;
    cairo_text_extents(cr, clean(buf, sizeof buf, s), &e);
    return e.x_advance;
}

/* s anchored at (x, y), turned by angle (radians, counter-clockwise), ax of its width left of x
 * (0 left, 0.5 centre, 1 right) and ay of its height above y (0 top, 0.5 middle, 1 bottom) */
static void put(cairo_t *cr, double x, double y, const char *s, double ax, double ay, double angle)
{
    char buf[MAX_LABEL + 8];
    clean(buf, sizeof buf, s);
    cairo_font_extents_t fe;
    cairo_text_extents_t e;
    cairo_font_extents(cr, &fe);
    cairo_text_extents(cr, buf, &e);
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_rotate(cr, -angle);
    cairo_move_to(cr, -ax * e.x_advance, fe.ascent - ay * (fe.ascent + fe.descent));
    cairo_show_text(cr, buf);
    cairo_restore(cr);
}

/* a title or note (not cut to MAX_LABEL): ax of its width left of x, top at y */
static void put_full(cairo_t *cr, double x, double y, const char *s, double px, int bold, double grey, double ax)
{
    if (!s || !*s) return;
    size_t n = strlen(s) * 4 + 1;
    char *buf = malloc(n);
    if (!buf) return;
    plot_token_label(buf, n, s);
    font(cr, px, bold);
    cairo_text_extents_t e;
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    cairo_text_extents(cr, buf, &e);
    cairo_set_source_rgb(cr, grey, grey, grey);
    cairo_move_to(cr, x - ax * e.x_advance, y + fe.ascent);
    cairo_show_text(cr, buf);
    free(buf);
}

static double title_w(cairo_t *cr, const char *s, double px, int bold)
{
    if (!s || !*s) return 0;
    size_t n = strlen(s) * 4 + 1;
    char *buf = malloc(n);
    if (!buf) return 0;
    plot_token_label(buf, n, s);
    font(cr, px, bold);
    cairo_text_extents_t e;
    cairo_text_extents(cr, buf, &e);
    free(buf);
    return e.x_advance;
}

/* a tick as "%.*f" with its decimals, or for very small or large values in the shortest
 * exponent form that reads back as the same double */
static void fmt_tick(char *buf, size_t n, double v, int decimals)
{
    if (v != 0 && (decimals > 6 || fabs(v) >= 1e9)) {
        for (int p = 0; p <= 16; p++) {
            snprintf(buf, n, "%.*e", p, v);
            if (strtod(buf, NULL) == v) break;
        }
        return;
    }
    snprintf(buf, n, "%.*f", decimals, v);
    if (buf[0] == '-' && strspn(buf + 1, "0.") == strlen(buf + 1)) memmove(buf, buf + 1, strlen(buf)); /* no "-0" */
}

/* A surface for measuring text before the real one's size is known. */
typedef struct canvas {
    cairo_surface_t *s;
    cairo_t *cr;
} canvas;

static int canvas_open(canvas *c, int w, int h)
{
    c->s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    c->cr = cairo_create(c->s);
    if (cairo_status(c->cr) != CAIRO_STATUS_SUCCESS) {
        cairo_destroy(c->cr);
        cairo_surface_destroy(c->s);
        return -1;
    }
    cairo_set_source_rgb(c->cr, 1, 1, 1);
    cairo_paint(c->cr);
    return 0;
}

static int canvas_close(canvas *c, const char *path)
{
    cairo_status_t st = cairo_status(c->cr);
    if (path && st == CAIRO_STATUS_SUCCESS) st = cairo_surface_write_to_png(c->s, path);
    cairo_destroy(c->cr);
    cairo_surface_destroy(c->s);
    return path && st == CAIRO_STATUS_SUCCESS ? 0 : -1;
}

/* Categorical labels along an axis of n slots `slot` px apart: every k-th shown (k from 1, 2, 5,
 * 10, .. so positions stay round), horizontal when the widest fits its slot, else turned. */
typedef struct cat_axis {
    int k;         /* every k-th label */
    double angle;  /* 0, 45 or 90 degrees (x axis only) */
    double extent; /* px the labels need across the axis */
} cat_axis;

static int next_step(int k) /* 1, 2, 5, 10, 20, 50 .. */
{
    int m = 1;
    while (m * 10 <= k) m *= 10;
    return k < m * 2 ? m * 2 : k < m * 5 ? m * 5 : m * 10;
}

static const char *cat_label(char *buf, size_t n, const char *const *labels, int i)
{
    if (labels) return labels[i] ? labels[i] : "";
    snprintf(buf, n, "%d", i);
    return buf;
}

/* the smallest k of 1, 2, 5, 10, .. with k slots at least need px */
static int thin(double slot, double need, int n)
{
    int k = 1;
    while (k * slot < need && k < n) k = next_step(k);
    return k;
}

static cat_axis cat_layout(cairo_t *cr, const char *const *labels, int n, double slot, int x_axis)
{
    cat_axis a = {1, 0, 0};
    font(cr, TICK_PX, 0);
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    cairo_text_extents_t ink;
    cairo_text_extents(cr, "Ag", &ink); /* a label's ink: cap height and descender */
    double h = fe.ascent + fe.descent, wmax = 0;
    char num[16];
    for (int i = 0; i < n; i++) wmax = fmax(wmax, text_w(cr, cat_label(num, sizeof num, labels, i)));
    /* labels one above the other need their ink's height and a pixel between them */
    int k_up = thin(slot, ink.height + 1, n);
    if (!labels) { /* numbers: sparser, and never turned */
        a.k = x_axis ? thin(slot, wmax + 14, n) : thin(slot, 2.5 * ink.height, n);
        a.extent = x_axis ? h : wmax;
        return a;
    }
    if (!x_axis) {
        a.k = k_up, a.extent = wmax;
        return a;
    }
    int k_flat = thin(slot, wmax + 3, n);
    if (k_flat <= k_up) { /* horizontal, when that shows as many labels as upright would */
        a.k = k_flat, a.extent = h;
        return a;
    }
    if (wmax <= 48 && thin(slot, h * 1.45, n) <= k_up) { /* short labels slanted */
        a.k = k_up, a.angle = PI / 4;
        a.extent = (wmax + h) * 0.70710678118654752;
        return a;
    }
    a.k = k_up, a.angle = PI / 2, a.extent = wmax;
    return a;
}

/* ---------------- heatmap ---------------- */

/* the scale's ends: [lo, hi] and whether it is diverging */
static void heat_range(const plot_heatmap_spec *sp, double *lo, double *hi, int *div)
{
    double a = INFINITY, b = -INFINITY;
    if (sp->has_range) a = sp->vmin, b = sp->vmax;
    else
        for (int i = 0; i < sp->rows; i++)
            for (int j = 0; j < sp->cols; j++) {
                double v = sp->data[(size_t)i * sp->cols + j];
                if (isfinite(v) && !(sp->mask_upper && j > i)) a = fmin(a, v), b = fmax(b, v);
            }
    if (!(a <= b)) a = 0, b = 1; /* no finite value */
    double c = sp->centre;
    *div = sp->scale == PLOT_SCALE_DIVERGING || (sp->scale == PLOT_SCALE_AUTO && a < c && b > c);
    if (*div) {
        double ext = fmax(fabs(a - c), fabs(b - c));
        if (!(ext > 0)) ext = 1;
        a = c - ext, b = c + ext;
    }
    if (!(b > a)) { /* one value: a unit around it */
        a -= 0.5, b += 0.5;
    }
    *lo = a, *hi = b;
}

int plot_heatmap(const char *path, const plot_heatmap_spec *sp)
{
    if (!path || !sp || !sp->data || sp->rows < 1 || sp->cols < 1) return -1;
    const int R = sp->rows, C = sp->cols;
    double lo, hi;
    int div;
    heat_range(sp, &lo, &hi, &div);
    /* cells: each side about 600 px, each cell at most 48 px and at most 3 times as long as wide
     * (a grid of 3 layers x 46 positions is not 40 px high); whole pixels down to 2 px, fractions
     * below (a long axis stays 600 px, its labels thinned) */
    double cw = fmin(48, 600.0 / C), ch = fmin(48, 600.0 / R);
    cw = cw >= 2 ? floor(cw) : cw;
    ch = ch >= 2 ? floor(ch) : ch;
    cw = fmin(cw, 3 * ch), ch = fmin(ch, 3 * cw);
    /* a map of few rows grows its cells (still at most 3 times as tall as wide) towards the colour
     * bar's 160 px, so the bar does not hang below it */
    if (ch * R < 160) ch = fmax(ch, fmin(floor(160.0 / R), 3 * cw));
    double pw = cw * C, ph = ch * R;
    double bar_h = ph < 120 ? 120 : ph;

    canvas m;
    if (canvas_open(&m, 1, 1)) return -1;
    cat_axis ya = cat_layout(m.cr, sp->row_labels, R, ch, 0), xa = cat_layout(m.cr, sp->col_labels, C, cw, 1);
    double ticks[32];
    int dec, nt = plot_nice_ticks(lo, hi, 5, ticks, 32, &dec);
    double tw = 0;
    char buf[64];
    font(m.cr, TICK_PX, 0);
    for (int t = 0; t < nt; t++) {
        fmt_tick(buf, sizeof buf, ticks[t], dec);
        tw = fmax(tw, text_w(m.cr, buf));
    }
    double wt = fmax(title_w(m.cr, sp->title, TITLE_PX, 1), title_w(m.cr, sp->subtitle, SUBTITLE_PX, 0));
    char note[512]; /* under the picture, what the mark and the outlines are */
    snprintf(note, sizeof note, "cells above the %s (the black line on the colour bar)",
             sp->mark_label ? sp->mark_label : "mark");
    double wnote = sp->has_mark ? TICK_PX + 6 + title_w(m.cr, note, TICK_PX, 0) : 0;
    canvas_close(&m, NULL);

    double top = 14 + TITLE_PX + 6 + (sp->subtitle ? SUBTITLE_PX + 6 : 0) + 14;
    double left = 16 + (sp->y_label ? LABEL_PX + 10 : 0) + ya.extent + 6;
    double right = 24 + 16 + 5 + tw + 8 + (sp->value_label ? LABEL_PX + 8 : 0) + 16;
    double bottom = 6 + xa.extent + 10 + (sp->x_label ? LABEL_PX + 10 : 0) + (sp->has_mark ? TICK_PX + 12 : 0) + 12;
    double W = left + pw + right, H = top + fmax(ph, bar_h) + bottom;
    if (W < wt + 32) {
        double grow = wt + 32 - W;
        left += grow / 2, W += grow;
    }
    if (W < wnote + 32) {
        double grow = wnote + 32 - W;
        left += grow / 2, W += grow;
    }
    canvas c;
    if (canvas_open(&c, (int)ceil(W), (int)ceil(H))) return -1;
    cairo_t *cr = c.cr;
    put_full(cr, W / 2, 14, sp->title, TITLE_PX, 1, 0.0, 0.5);
    if (sp->subtitle) put_full(cr, W / 2, 14 + TITLE_PX + 6, sp->subtitle, SUBTITLE_PX, 0, 0.4, 0.5);

    /* cells */
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            if (sp->mask_upper && j > i) continue;
            double v = sp->data[(size_t)i * C + j], rgb[3];
            colour_at(isnan(v) ? v : (v - lo) / (hi - lo), div, rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, left + j * cw, top + i * ch, cw + 0.5, ch + 0.5);
            cairo_fill(cr);
        }
    if (sp->has_mark) /* outline the cells above the mark */
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++) {
                double v = sp->data[(size_t)i * C + j];
                if ((sp->mask_upper && j > i) || !(v > sp->mark)) continue;
                cairo_set_source_rgb(cr, 0, 0, 0);
                cairo_set_line_width(cr, fmin(cw, ch) >= 12 ? 1.5 : 1.0);
                cairo_rectangle(cr, left + j * cw + 1, top + i * ch + 1, cw - 2, ch - 2);
                cairo_stroke(cr);
            }
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, left - 0.5, top - 0.5, pw + 1, ph + 1);
    cairo_stroke(cr);

    /* row and column labels with their ticks */
    font(cr, TICK_PX, 0);
    char num[16];
    for (int i = 0; i < R; i += ya.k) {
        double y = top + (i + 0.5) * ch;
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        cairo_move_to(cr, left - 4, y);
        cairo_line_to(cr, left - 0.5, y);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        put(cr, left - 6, y, cat_label(num, sizeof num, sp->row_labels, i), 1, 0.5, 0);
    }
    for (int j = 0; j < C; j += xa.k) {
        double x = left + (j + 0.5) * cw, y = top + ph + 0.5;
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        cairo_move_to(cr, x, y);
        cairo_line_to(cr, x, y + 4);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        const char *s = cat_label(num, sizeof num, sp->col_labels, j);
        if (xa.angle == 0) put(cr, x, y + 6, s, 0.5, 0, 0);
        else if (xa.angle > 1.5) put(cr, x, y + 6, s, 1, 0.5, xa.angle);
        else put(cr, x + 3, y + 6, s, 1, 0.5, xa.angle);
    }
    font(cr, LABEL_PX, 0);
    cairo_set_source_rgb(cr, 0, 0, 0);
    if (sp->x_label) put(cr, left + pw / 2, top + ph + 6 + xa.extent + 10, sp->x_label, 0.5, 0, 0);
    if (sp->y_label) put(cr, left - 6 - ya.extent - 10, top + ph / 2, sp->y_label, 0.5, 1, PI / 2);

    /* colour bar: as tall as the map (at least 160 px), round ticks, its title turned */
    double bx = left + pw + 24, by = top, bw = 16;
    for (int k = 0; k < (int)bar_h; k++) {
        double rgb[3];
        colour_at(1.0 - (k + 0.5) / bar_h, div, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, bx, by + k, bw, 1.5);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, bx - 0.5, by - 0.5, bw + 1, bar_h + 1);
    cairo_stroke(cr);
    font(cr, TICK_PX, 0);
    for (int t = 0; t < nt; t++) {
        double y = by + bar_h * (hi - ticks[t]) / (hi - lo);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        cairo_move_to(cr, bx + bw, y);
        cairo_line_to(cr, bx + bw + 4, y);
        cairo_stroke(cr);
        fmt_tick(buf, sizeof buf, ticks[t], dec);
        cairo_set_source_rgb(cr, 0, 0, 0);
        put(cr, bx + bw + 6, y, buf, 0, 0.5, 0);
    }
    if (sp->value_label) {
        font(cr, LABEL_PX, 0);
        put(cr, bx + bw + 6 + tw + 8, by + bar_h / 2, sp->value_label, 0.5, 0, PI / 2);
    }
    if (sp->has_mark && sp->mark >= lo && sp->mark <= hi) {
        double y = by + bar_h * (hi - sp->mark) / (hi - lo);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_set_line_width(cr, 2);
        cairo_move_to(cr, bx - 5, y);
        cairo_line_to(cr, bx + bw, y);
        cairo_stroke(cr);
    }
    if (sp->has_mark) { /* the note under the picture says what the mark and the outlines are */
        double y = H - 12 - TICK_PX, x = 16;
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_set_line_width(cr, 1.5);
        cairo_rectangle(cr, x + 0.75, y + 0.75, TICK_PX - 1, TICK_PX - 1);
        cairo_stroke(cr);
        font(cr, TICK_PX, 0);
        put_full(cr, x + TICK_PX + 6, y - 1, note, TICK_PX, 0, 0.0, 0);
    }
    return canvas_close(&c, path);
}

/* ---------------- line charts ---------------- */

typedef struct range {
    double x0, x1, y0, y1;
} range;

static int finite_pt(const plot_series *s, int i) { return isfinite(s->x[i]) && isfinite(s->y[i]); }

static int lines_check(const plot_lines_spec *sp)
{
    if (!sp || sp->n_series < 0 || (sp->n_series > 0 && !sp->series) || sp->n_vlines < 0 ||
        (sp->n_vlines > 0 && !sp->vlines) || (sp->x_tick_labels && sp->n_x_tick_labels < 1))
        return -1;
    for (int k = 0; k < sp->n_series; k++)
        if (sp->series[k].n < 0 || (sp->series[k].n > 0 && (!sp->series[k].x || !sp->series[k].y))) return -1;
    return 0;
}

/* data ranges of a panel (x over its series and vlines), padded */
static void data_range(const plot_lines_spec *sp, range *r)
{
    r->x0 = r->y0 = INFINITY, r->x1 = r->y1 = -INFINITY;
    for (int k = 0; k < sp->n_series; k++)
        for (int i = 0; i < sp->series[k].n; i++)
            if (finite_pt(&sp->series[k], i)) {
                r->x0 = fmin(r->x0, sp->series[k].x[i]), r->x1 = fmax(r->x1, sp->series[k].x[i]);
                r->y0 = fmin(r->y0, sp->series[k].y[i]), r->y1 = fmax(r->y1, sp->series[k].y[i]);
            }
    for (int v = 0; v < sp->n_vlines; v++)
        if (isfinite(sp->vlines[v].x)) r->x0 = fmin(r->x0, sp->vlines[v].x), r->x1 = fmax(r->x1, sp->vlines[v].x);
    if (sp->x_tick_labels) r->x0 = fmin(r->x0, 0), r->x1 = fmax(r->x1, sp->n_x_tick_labels - 1);
    if (!(r->x0 <= r->x1)) r->x0 = 0, r->x1 = 1;
    if (!(r->y0 <= r->y1)) r->y0 = 0, r->y1 = 1;
}

static void pad_range(double *a, double *b, double frac)
{
    if (!(*b > *a)) {
        double u = *a != 0 ? fabs(*a) * 0.1 : 1;
        *a -= u, *b += u;
        return;
    }
    double p = (*b - *a) * frac;
    *a -= p, *b += p;
}

/* Everything a panel needs to be drawn in a box. */
typedef struct panel_box {
    double left, top, pw, ph;
    range r;
} panel_box;

static double ymap(const panel_box *b, double y) { return b->top + b->ph * (b->r.y1 - y) / (b->r.y1 - b->r.y0); }
static double xmap(const panel_box *b, double x) { return b->left + b->pw * (x - b->r.x0) / (b->r.x1 - b->r.x0); }

/* y tick labels' width of a panel */
static double ytick_w(cairo_t *cr, const range *r)
{
    double t[32], w = 0;
    int dec, n = plot_nice_ticks(r->y0, r->y1, 5, t, 32, &dec);
    char buf[64];
    font(cr, TICK_PX, 0);
    for (int i = 0; i < n; i++) {
        fmt_tick(buf, sizeof buf, t[i], dec);
        w = fmax(w, text_w(cr, buf));
    }
    return w;
}

static double legend_w(cairo_t *cr, const plot_lines_spec *sp)
{
    double w = 0;
    font(cr, TICK_PX, 0);
    for (int k = 0; k < sp->n_series; k++)
        if (sp->series[k].label) w = fmax(w, text_w(cr, sp->series[k].label));
    return w > 0 ? w + 34 : 0;
}

/* series 0-7 solid, 8-15 dashed, 16-23 dotted, .. (the palette has eight colours) */
static void series_dash(cairo_t *cr, int k)
{
    static const double dashed[] = {6, 3}, dotted[] = {1.5, 2.5}, dashdot[] = {6, 2.5, 1.5, 2.5};
    switch ((k / 8) % 4) {
    case 1: cairo_set_dash(cr, dashed, 2, 0); break;
    case 2: cairo_set_dash(cr, dotted, 2, 0); break;
    case 3: cairo_set_dash(cr, dashdot, 4, 0); break;
    default: cairo_set_dash(cr, NULL, 0, 0);
    }
}

/* boxes of placed point labels, so that the next one avoids them */
typedef struct placed {
    double x0, y0, x1, y1;
} placed;

static int overlaps(const placed *p, int n, placed q)
{
    for (int i = 0; i < n; i++)
        if (q.x0 < p[i].x1 && p[i].x0 < q.x1 && q.y0 < p[i].y1 && p[i].y0 < q.y1) return 1;
    return 0;
}

static void draw_point_labels(cairo_t *cr, const panel_box *b, const plot_series *s, const double col[3])
{
    int n = s->n;
    placed *p = calloc((size_t)2 * n + 1, sizeof *p);
    if (!p) return;
    int np = 0;
    for (int i = 0; i < n; i++) /* the markers themselves are obstacles */
        if (finite_pt(s, i)) {
            double x = xmap(b, s->x[i]), y = ymap(b, s->y[i]);
            p[np++] = (placed){x - 3, y - 3, x + 3, y + 3};
        }
    font(cr, 9.5, 0);
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    double h = fe.ascent + fe.descent;
    for (int i = 0; i < n; i++) {
        if (!s->point_labels[i] || !finite_pt(s, i)) continue;
        double x = xmap(b, s->x[i]), y = ymap(b, s->y[i]), w = text_w(cr, s->point_labels[i]);
        /* right, left, above, below, then the diagonals, farther out; the first that is free */
        static const double off[][2] = {{1, 0}, {-1, 0}, {0, -1}, {0, 1}, {1, -1}, {-1, -1}, {1, 1}, {-1, 1}};
        int done = 0;
        for (int ring = 1; ring <= 3 && !done; ring++)
            for (int o = 0; o < 8 && !done; o++) {
                double gap = 4 + (ring - 1) * 7;
                double cx = x + off[o][0] * (gap + w / 2), cy = y + off[o][1] * (gap + h / 2);
                if (off[o][0] == 0) cx = x;
                placed q = {cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2};
                if (q.x0 < b->left || q.x1 > b->left + b->pw || q.y0 < b->top || q.y1 > b->top + b->ph) continue;
                if (overlaps(p, np, q)) continue;
                p[np++] = q;
                if (ring > 1) { /* a leader from the point to a label set farther out */
                    double lx = fmin(fmax(x, q.x0), q.x1), ly = fmin(fmax(y, q.y0), q.y1);
                    cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
                    cairo_set_line_width(cr, 0.7);
                    cairo_move_to(cr, x, y);
                    cairo_line_to(cr, lx, ly);
                    cairo_stroke(cr);
                }
                cairo_set_source_rgb(cr, col[0] * 0.6, col[1] * 0.6, col[2] * 0.6);
                put(cr, cx, cy, s->point_labels[i], 0.5, 0.5, 0);
                done = 1;
            }
        /* no free place: the label is left out rather than drawn over another */
    }
    free(p);
}

/* One panel: grid, axes with round ticks (x tick labels when show_x; the x axis is xsp's, the
 * bottom panel's), series, vlines (labels when label_vlines), point labels. The legend goes right
 * of the box at legend_x. */
static void draw_panel(cairo_t *cr, const panel_box *b, const plot_lines_spec *sp, const plot_vline *vl, int nvl,
                       int show_x, int label_vlines, double legend_x, const plot_lines_spec *xsp, const cat_axis *xa)
{
    double t[64];
    int dec, n;
    char buf[64];
    /* y grid and ticks */
    n = plot_nice_ticks(b->r.y0, b->r.y1, 5, t, 64, &dec);
    font(cr, TICK_PX, 0);
    cairo_set_line_width(cr, 1);
    for (int i = 0; i < n; i++) {
        double y = floor(ymap(b, t[i])) + 0.5;
        cairo_set_source_rgb(cr, 0.91, 0.91, 0.91);
        cairo_move_to(cr, b->left, y);
        cairo_line_to(cr, b->left + b->pw, y);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        cairo_move_to(cr, b->left - 4, y);
        cairo_line_to(cr, b->left, y);
        cairo_stroke(cr);
        fmt_tick(buf, sizeof buf, t[i], dec);
        cairo_set_source_rgb(cr, 0, 0, 0);
        put(cr, b->left - 6, y, buf, 1, 0.5, 0);
    }
    /* x ticks: positions labelled by tokens, or round numbers */
    if (xsp->x_tick_labels) {
        for (int j = 0; j < xsp->n_x_tick_labels; j += xa->k) {
            double x = floor(xmap(b, j)) + 0.5, y = b->top + b->ph;
            cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
            cairo_move_to(cr, x, y);
            cairo_line_to(cr, x, y + 4);
            cairo_stroke(cr);
            if (!show_x) continue;
            cairo_set_source_rgb(cr, 0, 0, 0);
            const char *s = xsp->x_tick_labels[j] ? xsp->x_tick_labels[j] : "";
            if (xa->angle == 0) put(cr, x, y + 6, s, 0.5, 0, 0);
            else if (xa->angle > 1.5) put(cr, x, y + 6, s, 1, 0.5, xa->angle);
            else put(cr, x + 3, y + 6, s, 1, 0.5, xa->angle);
        }
    } else {
        n = plot_nice_ticks(b->r.x0, b->r.x1, (int)fmax(3, b->pw / 90), t, 64, &dec);
        for (int i = 0; i < n; i++) {
            double x = floor(xmap(b, t[i])) + 0.5, y = b->top + b->ph;
            cairo_set_source_rgb(cr, 0.91, 0.91, 0.91);
            cairo_move_to(cr, x, b->top);
            cairo_line_to(cr, x, y);
            cairo_stroke(cr);
            cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
            cairo_move_to(cr, x, y);
            cairo_line_to(cr, x, y + 4);
            cairo_stroke(cr);
            if (!show_x) continue;
            fmt_tick(buf, sizeof buf, t[i], dec);
            cairo_set_source_rgb(cr, 0, 0, 0);
            put(cr, x, y + 6, buf, 0.5, 0, 0);
        }
    }
    /* axes: left and bottom */
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_move_to(cr, b->left + 0.5, b->top);
    cairo_line_to(cr, b->left + 0.5, b->top + b->ph + 0.5);
    cairo_line_to(cr, b->left + b->pw, b->top + b->ph + 0.5);
    cairo_stroke(cr);
    /* vertical marks, dashed, under the data */
    for (int v = 0; v < nvl; v++) {
        if (!isfinite(vl[v].x)) continue;
        double x = xmap(b, vl[v].x);
        cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
        cairo_set_line_width(cr, 1.2);
        double dash[] = {5, 3};
        cairo_set_dash(cr, dash, 2, 0);
        cairo_move_to(cr, x, b->top);
        cairo_line_to(cr, x, b->top + b->ph);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        if (label_vlines && vl[v].label) {
            font(cr, TICK_PX, 0);
            double w = text_w(cr, vl[v].label);
            int right = x + 4 + w < b->left + b->pw;
            cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
            put(cr, right ? x + 4 : x - 4, b->top - 2, vl[v].label, right ? 0 : 1, 1, 0);
        }
    }
    /* the series, clipped to the box */
    cairo_save(cr);
    cairo_rectangle(cr, b->left, b->top - 4, b->pw + 4, b->ph + 8);
    cairo_clip(cr);
    for (int k = 0; k < sp->n_series; k++) {
        const plot_series *s = &sp->series[k];
        const double *col = palette[k % 8];
        cairo_set_source_rgb(cr, col[0], col[1], col[2]);
        if (!s->markers_only) {
            cairo_set_line_width(cr, 1.8);
            cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
            series_dash(cr, k);
            int pen = 0;
            for (int i = 0; i < s->n; i++) {
                if (!finite_pt(s, i)) {
                    pen = 0;
                    continue;
                }
                double x = xmap(b, s->x[i]), y = ymap(b, s->y[i]);
                if (pen) cairo_line_to(cr, x, y);
                else cairo_move_to(cr, x, y);
                pen = 1;
            }
            cairo_stroke(cr);
            cairo_set_dash(cr, NULL, 0, 0);
        }
        if (s->markers_only || s->n <= 60)
            for (int i = 0; i < s->n; i++)
                if (finite_pt(s, i)) {
                    cairo_arc(cr, xmap(b, s->x[i]), ymap(b, s->y[i]), s->markers_only ? 3.5 : 2.6, 0, 2 * PI);
                    cairo_fill(cr);
                }
    }
    cairo_restore(cr);
    for (int k = 0; k < sp->n_series; k++)
        if (sp->series[k].point_labels) draw_point_labels(cr, b, &sp->series[k], palette[k % 8]);
    /* legend right of the box */
    font(cr, TICK_PX, 0);
    double ly = b->top + 6;
    for (int k = 0; k < sp->n_series; k++) {
        if (!sp->series[k].label) continue;
        const double *col = palette[k % 8];
        cairo_set_source_rgb(cr, col[0], col[1], col[2]);
        cairo_set_line_width(cr, 2);
        if (!sp->series[k].markers_only) {
            series_dash(cr, k);
            cairo_move_to(cr, legend_x, ly);
            cairo_line_to(cr, legend_x + 22, ly);
            cairo_stroke(cr);
            cairo_set_dash(cr, NULL, 0, 0);
        }
        cairo_arc(cr, legend_x + 11, ly, 2.8, 0, 2 * PI);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        put(cr, legend_x + 28, ly, sp->series[k].label, 0, 0.5, 0);
        ly += 17;
    }
}

/* the panels' common x range (padded), each panel's y range (padded) */
static int draw_figure(const char *path, const char *title, const char *subtitle, const plot_lines_spec *panels, int np,
                       int equal_aspect)
{
    if (np < 1) return -1;
    for (int p = 0; p < np; p++)
        if (lines_check(&panels[p])) return -1;
    range *r = calloc((size_t)np, sizeof *r);
    panel_box *bx = calloc((size_t)np, sizeof *bx);
    if (!r || !bx) {
        free(r), free(bx);
        return -1;
    }
    double x0 = INFINITY, x1 = -INFINITY;
    for (int p = 0; p < np; p++) {
        data_range(&panels[p], &r[p]);
        x0 = fmin(x0, r[p].x0), x1 = fmax(x1, r[p].x1);
        pad_range(&r[p].y0, &r[p].y1, 0.06);
    }
    const plot_lines_spec *last = &panels[np - 1];
    if (last->x_tick_labels) x0 -= 0.5, x1 += 0.5;
    else pad_range(&x0, &x1, 0.03);
    for (int p = 0; p < np; p++) r[p].x0 = x0, r[p].x1 = x1;

    double pw = 640, ph = np > 1 ? 200 : 360;
    for (int p = 0; p < np; p++) /* tall enough for the legend beside it */
        ph = fmax(ph, 17.0 * panels[p].n_series + 12);
    canvas m;
    if (canvas_open(&m, 1, 1)) {
        free(r), free(bx);
        return -1;
    }
    double ytw = 0, lw = 0;
    for (int p = 0; p < np; p++) ytw = fmax(ytw, ytick_w(m.cr, &r[p])), lw = fmax(lw, legend_w(m.cr, &panels[p]));
    cat_axis xa = {1, 0, 0};
    if (last->x_tick_labels) xa = cat_layout(m.cr, last->x_tick_labels, last->n_x_tick_labels, pw / (x1 - x0), 1);
    else {
        font(m.cr, TICK_PX, 0);
        cairo_font_extents_t fe;
        cairo_font_extents(m.cr, &fe);
        xa.extent = fe.ascent + fe.descent;
    }
    double wt = fmax(title_w(m.cr, title, TITLE_PX, 1), title_w(m.cr, subtitle, SUBTITLE_PX, 0));
    canvas_close(&m, NULL);
    if (equal_aspect && np == 1) { /* one unit as long on both axes: widen the shorter range */
        double sx = pw / (x1 - x0), sy = ph / (r[0].y1 - r[0].y0);
        if (sx > sy) {
            double mid = (x0 + x1) / 2, half = pw / sy / 2;
            r[0].x0 = mid - half, r[0].x1 = mid + half;
        } else {
            double mid = (r[0].y0 + r[0].y1) / 2, half = ph / sx / 2;
            r[0].y0 = mid - half, r[0].y1 = mid + half;
        }
        ytw = 0;
        canvas_open(&m, 1, 1);
        ytw = ytick_w(m.cr, &r[0]);
        canvas_close(&m, NULL);
    }
    int any_ylabel = 0, any_vlabel = 0;
    for (int p = 0; p < np; p++) any_ylabel |= panels[p].y_label != NULL;
    for (int v = 0; v < panels[0].n_vlines; v++) any_vlabel |= panels[0].vlines[v].label != NULL;
    double top = 14 + TITLE_PX + 6 + (subtitle ? SUBTITLE_PX + 6 : 0) + 12 + (any_vlabel ? TICK_PX + 6 : 0);
    double left = 16 + (any_ylabel ? LABEL_PX + 10 : 0) + ytw + 8;
    double right = (lw > 0 ? 18 + lw : 0) + 20, gap = 18;
    double bottom = 6 + xa.extent + 10 + (last->x_label ? LABEL_PX + 10 : 0) + 8;
    double W = left + pw + right, H = top + np * ph + (np - 1) * gap + bottom;
    if (W < wt + 32) {
        double grow = wt + 32 - W;
        left += grow / 2, W += grow;
    }
    canvas c;
    if (canvas_open(&c, (int)ceil(W), (int)ceil(H))) {
        free(r), free(bx);
        return -1;
    }
    cairo_t *cr = c.cr;
    put_full(cr, W / 2, 14, title, TITLE_PX, 1, 0.0, 0.5);
    if (subtitle) put_full(cr, W / 2, 14 + TITLE_PX + 6, subtitle, SUBTITLE_PX, 0, 0.4, 0.5);
    for (int p = 0; p < np; p++) {
        bx[p] = (panel_box){left, top + p * (ph + gap), pw, ph, r[p]};
        draw_panel(cr, &bx[p], &panels[p], panels[0].vlines, panels[0].n_vlines, p == np - 1, p == 0, left + pw + 18,
                   last, &xa);
        if (panels[p].y_label) {
            font(cr, LABEL_PX, 0);
            cairo_set_source_rgb(cr, 0, 0, 0);
            put(cr, left - 8 - ytw - 10, bx[p].top + ph / 2, panels[p].y_label, 0.5, 1, PI / 2);
        }
    }
    if (last->x_label) {
        font(cr, LABEL_PX, 0);
        cairo_set_source_rgb(cr, 0, 0, 0);
        put(cr, left + pw / 2, top + np * ph + (np - 1) * gap + 6 + xa.extent + 10, last->x_label, 0.5, 0, 0);
    }
    free(r), free(bx);
    return canvas_close(&c, path);
}

int plot_lines(const char *path, const plot_lines_spec *spec)
{
    if (!path || !spec) return -1;
    return draw_figure(path, spec->title, spec->subtitle, spec, 1, spec->equal_aspect);
}

int plot_panels(const char *path, const char *title, const char *subtitle, const plot_lines_spec *panels,
                int n_panels)
{
    if (!path || !panels || n_panels < 1) return -1;
    return draw_figure(path, title, subtitle, panels, n_panels, 0);
}

#else /* built without cairo */

int plot_available(void) { return 0; }

void plot_release_fonts(void) {}

static int unavailable(const char *path)
{
    static int said;
    if (!said) fprintf(stderr, "%s (not written: %s)\n", PLOT_NO_CAIRO, path ? path : "(no path)");
    said = 1;
    return -1;
}

int plot_heatmap(const char *path, const plot_heatmap_spec *spec)
{
    (void)spec;
    return unavailable(path);
}

int plot_lines(const char *path, const plot_lines_spec *spec)
{
    (void)spec;
    return unavailable(path);
}

int plot_panels(const char *path, const char *title, const char *subtitle, const plot_lines_spec *panels,
                int n_panels)
{
    (void)title, (void)subtitle, (void)panels, (void)n_panels;
    return unavailable(path);
}

#endif /* CIRCUITS_HAVE_CAIRO */
