/* The plotting module of the examples and the CLI (examples/plot.c, docs/pictures.md): round ticks
 * (1, 2, 5 x 10^k, printed exactly) on many ranges, printable token labels, and the PNGs read back
 * with cairo (their size, and the colours the picture must hold: the scale's ends, NaN grey, the
 * series' colours). In a build without cairo: every plot function returns -1 and writes nothing.
 * Usage: test_plot TMPDIR */
#include "../examples/plot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef CIRCUITS_HAVE_CAIRO
#include <cairo.h>
#endif

static int failures, checks;
#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        checks++;                                                                                                      \
        if (!(cond)) {                                                                                                 \
            failures++;                                                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
        }                                                                                                              \
    } while (0)

/* ---------------- ticks ---------------- */

/* the step is m x 10^e with m in {1, 2, 5} */
static int round_step(double step)
{
    double e = floor(log10(step)), m = step / pow(10, e);
    return fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9 || fabs(m - 10) < 1e-9;
}

static void check_ticks(double lo, double hi, int target)
{
    double t[64];
    int dec = -1, n = plot_nice_ticks(lo, hi, target, t, 64, &dec);
    int tg = target < 2 ? 2 : target;
    /* at least 0.6 target - 1 ticks (the step is under 2.5 x range/target/1.5), at most 1.5 target + 1 */
    CHECK(n >= (int)ceil(0.6 * tg - 1) && n >= 1 && n <= (int)floor(1.5 * tg + 1), "[%g, %g] target %d: %d ticks", lo,
          hi, target, n);
    if (n < 1) return;
    double step = n > 1 ? t[1] - t[0] : 0;
    if (n > 1) { /* the round step the ticks were made of (their difference is inexact far from 0) */
        double e = floor(log10(step) + 1e-6);
        step = round(step / pow(10, e)) * pow(10, e);
    }
    for (int i = 0; i < n; i++) {
        CHECK(t[i] >= lo - 1e-9 * fabs(hi - lo) && t[i] <= hi + 1e-9 * fabs(hi - lo), "[%g, %g]: tick %.17g outside", lo,
              hi, t[i]);
        double tol = 1e-9 * step + 4e-16 * fabs(t[i]);
        if (i > 0) CHECK(fabs(t[i] - t[i - 1] - step) <= tol, "[%g, %g]: uneven steps at %d", lo, hi, i);
        /* printed with the decimals, the text reads back as the same double: exact */
        char buf[512];
        snprintf(buf, sizeof buf, "%.*f", dec, t[i]);
        CHECK(strtod(buf, NULL) == t[i], "[%g, %g]: tick %.17g printed as %s", lo, hi, t[i], buf);
        CHECK(!(t[i] == 0 && signbit(t[i])), "[%g, %g]: a tick is -0", lo, hi);
        /* a multiple of the step */
        if (n > 1) CHECK(fabs(t[i] - step * round(t[i] / step)) <= tol, "[%g, %g]: %.17g not on the step %g", lo, hi, t[i], step);
    }
    if (n > 1) {
        CHECK(round_step(step), "[%g, %g]: step %.17g is not 1, 2 or 5 x 10^k", lo, hi, step);
        /* covering: no gap of a whole step at either end */
        CHECK(t[0] - lo < step * (1 + 1e-9) && hi - t[n - 1] < step * (1 + 1e-9), "[%g, %g]: ticks %g..%g leave a gap", lo,
              hi, t[0], t[n - 1]);
        /* the fewest decimals that print the step */
        CHECK(dec == (step >= 1 ? 0 : (int)lround(-floor(log10(step) + 1e-9))), "[%g, %g]: %d decimals for step %g", lo, hi,
              dec, step);
    }
}

static void test_ticks(void)
{
    double t[64];
    int dec;
    /* the examples become round */
    int n = plot_nice_ticks(0, 0.0459, 5, t, 64, &dec);
    CHECK(n == 5 && t[0] == 0 && t[4] == 0.04 && dec == 2, "[0, 0.0459]: %d ticks, last %g, %d decimals", n, t[n - 1], dec);
    n = plot_nice_ticks(-0.653, 25.5, 5, t, 64, &dec);
    CHECK(n == 6 && t[0] == 0 && t[5] == 25 && dec == 0, "[-0.653, 25.5]: %d ticks from %g, %d decimals", n, t[0], dec);
    n = plot_nice_ticks(0, 2250, 5, t, 64, &dec);
    CHECK(n == 5 && t[1] == 500 && t[4] == 2000 && dec == 0, "[0, 2250]: %d ticks, step %g", n, t[1] - t[0]);
    n = plot_nice_ticks(0, 1, 5, t, 64, &dec);
    CHECK(n == 6 && t[1] == 0.2 && t[3] == 0.6 && dec == 1, "[0, 1]: %d ticks, t[3] %.17g", n, t[3]);
    n = plot_nice_ticks(-0.3, 0.3, 6, t, 64, &dec);
    CHECK(n == 7 && t[3] == 0 && !signbit(t[3]) && t[0] == -0.3, "[-0.3, 0.3]: %d ticks, t[0] %.17g", n, t[0]);
    /* many ranges: every magnitude, both signs, straddling zero, targets 2..10 */
    uint64_t s = 12345;
    for (int i = 0; i < 3000; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u1 = (double)(s >> 11) / 9007199254740992.0;
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u2 = (double)(s >> 11) / 9007199254740992.0;
        double scale = pow(10, -9 + 18 * u1), lo = (u2 - 0.7) * scale * 3, width = scale * (0.01 + 4 * u2 * u1 + u1);
        check_ticks(lo, lo + width, 2 + i % 9);
    }
    check_ticks(1000, 1000.001, 5);
    check_ticks(-1e12, 1e12, 5);
    check_ticks(1e-300, 2e-300, 5);
    check_ticks(0.1, 0.7, 1); /* target below 2 counts as 2 */
    /* degenerate and non-finite ranges: nothing */
    CHECK(plot_nice_ticks(1, 1, 5, t, 64, &dec) == 0 && dec == 0, "an empty range has ticks");
    CHECK(plot_nice_ticks(2, 1, 5, t, 64, &dec) == 0, "a reversed range has ticks");
    CHECK(plot_nice_ticks(NAN, 1, 5, t, 64, &dec) == 0 && plot_nice_ticks(0, INFINITY, 5, t, 64, &dec) == 0,
          "a non-finite range has ticks");
    CHECK(plot_nice_ticks(-1.5e308, 1.5e308, 5, t, 64, &dec) == 0, "a range wider than a double has ticks");
    CHECK(plot_nice_ticks(0, 1, 5, NULL, 64, &dec) == 0 && plot_nice_ticks(0, 1, 5, t, 0, &dec) == 0, "no room: ticks");
    /* max_ticks caps the count with a larger round step */
    n = plot_nice_ticks(0, 1, 10, t, 3, &dec);
    CHECK(n >= 1 && n <= 3 && round_step(n > 1 ? t[1] - t[0] : 1), "max_ticks 3: %d ticks", n);
    CHECK(plot_nice_ticks(0, 1, 5, t, 64, NULL) == 6, "decimals may be NULL");
    /* ranges a few doubles wide (a flat series padded by nothing): at most max_ticks, increasing,
     * inside the range; the multiples of the step once counted past 2^53 and wrote past out */
    const double narrow[][2] = {{1, 1 + 0x1p-52}, {1e17, 1e17 + 64}, {-1e17 - 64, -1e17}, {0.3, 0.3 + 4 * 0x1p-54}};
    for (size_t r = 0; r < sizeof narrow / sizeof narrow[0]; r++) {
        double lo = narrow[r][0], hi = narrow[r][1];
        n = plot_nice_ticks(lo, hi, 5, t, 8, &dec);
        CHECK(n >= 0 && n <= 8, "[%.17g, %.17g]: %d ticks for at most 8", lo, hi, n);
        for (int i = 0; i < n && i < 8; i++)
            CHECK(t[i] >= lo && t[i] <= hi && (i == 0 || t[i] > t[i - 1]), "[%.17g, %.17g]: tick %d is %.17g", lo, hi, i,
                  t[i]);
    }
}

/* ---------------- labels ---------------- */

static void label_is(const char *in, const char *want)
{
    char out[64];
    int n = plot_token_label(out, sizeof out, in);
    CHECK(n == (int)strlen(want) && strcmp(out, want) == 0, "label of \"%s\": \"%s\" (%d), want \"%s\"", in, out, n, want);
}

static void test_labels(void)
{
    label_is(" the", "\xe2\x90\xa3the");
    label_is("  x", "\xe2\x90\xa3\xe2\x90\xa3x");
    label_is("a b ", "a b ");
    label_is("\n", "\\n");
    label_is("a\tb\r", "a\\tb\\r");
    label_is("\x01\x1f\x7f", "\\x01\\x1F\\x7F");
    label_is("caf\xc3\xa9", "caf\xc3\xa9");
    label_is("\xe2\x96\x81x", "\xe2\x96\x81x"); /* SentencePiece's U+2581 stays */
    label_is("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");
    label_is("\xff", "\xef\xbf\xbd");
    label_is("a\xc3", "a\xef\xbf\xbd");                                    /* cut sequence */
    label_is("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd");                      /* overlong */
    label_is("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");      /* surrogate */
    label_is("\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* > U+10FFFF */
    label_is("", "");
    /* cut at a character boundary, the whole length returned */
    char out[8];
    memset(out, 'z', sizeof out);
    CHECK(plot_token_label(out, 3, " the") == 6 && out[0] == 0, "a 3-byte room holds no U+2423: \"%s\"", out);
    CHECK(plot_token_label(out, 4, " the") == 6 && strcmp(out, "\xe2\x90\xa3") == 0, "4 bytes: \"%s\"", out);
    CHECK(plot_token_label(out, 5, "ab\ncd") == 6 && strcmp(out, "ab\\n") == 0, "an escape that fits: \"%s\"", out);
    CHECK(plot_token_label(out, 4, "ab\ncd") == 6 && strcmp(out, "ab") == 0, "an escape is not split: \"%s\"", out);
    CHECK(plot_token_label(NULL, 4, "a") == -1 && plot_token_label(out, 4, NULL) == -1 && plot_token_label(out, 0, "a") == -1,
          "NULL or no room is -1");
    /* idempotent: a label of a label is itself (the plot functions clean every label they draw) */
    const char *tokens[] = {" x", "\n", "\xff", "a\\b"};
    for (int i = 0; i < 4; i++) {
        char a[32], b[32];
        plot_token_label(a, sizeof a, tokens[i]);
        plot_token_label(b, sizeof b, a);
        CHECK(strcmp(a, b) == 0, "label of label \"%s\" changed to \"%s\"", a, b);
    }
}

/* ---------------- pictures ---------------- */

static const float grid[] = {0.0f, 0.2f, 0.4f, 0.6f, 0.8f, 1.0f, NAN, 0.5f, 0.1f, 0.3f, 0.7f, 0.9f};
static const float signed_grid[] = {-2, -1, 0, 1, 0.5f, 0.25f};
static const char *const toks[] = {" the", " cat", "\n", "\xff", " sat", " on"};
static const float xs[] = {0, 1, 2, 3, 4}, ya[] = {1, 3, 2, 5, 4}, yb[] = {0.5f, 0.7f, NAN, 0.2f, 0.1f};

#ifdef CIRCUITS_HAVE_CAIRO
typedef struct image {
    int w, h, ok;
    cairo_surface_t *s;
} image;

static image load(const char *path)
{
    image im = {0, 0, 0, cairo_image_surface_create_from_png(path)};
    if (cairo_surface_status(im.s) == CAIRO_STATUS_SUCCESS) {
        im.ok = 1;
        im.w = cairo_image_surface_get_width(im.s);
        im.h = cairo_image_surface_get_height(im.s);
    }
    return im;
}

/* pixels within 6 of (r, g, b) in 0..1 */
static long count_colour(const image *im, double r, double g, double b)
{
    if (!im->ok) return 0;
    cairo_surface_flush(im->s);
    const unsigned char *d = cairo_image_surface_get_data(im->s);
    int stride = cairo_image_surface_get_stride(im->s);
    int R = (int)lround(r * 255), G = (int)lround(g * 255), B = (int)lround(b * 255);
    long n = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) {
            uint32_t p = *(const uint32_t *)(d + (size_t)y * stride + 4 * (size_t)x);
            int pr = (p >> 16) & 255, pg = (p >> 8) & 255, pb = p & 255;
            n += abs(pr - R) <= 6 && abs(pg - G) <= 6 && abs(pb - B) <= 6;
        }
    return n;
}

static void drop(image *im) { cairo_surface_destroy(im->s); }
#endif

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_pictures(const char *dir)
{
    char heat[4096], div[4096], lines[4096], panels[4096], bad[4096];
    snprintf(heat, sizeof heat, "%s/plot_heat.png", dir);
    snprintf(div, sizeof div, "%s/plot_div.png", dir);
    snprintf(lines, sizeof lines, "%s/plot_lines.png", dir);
    snprintf(panels, sizeof panels, "%s/plot_panels.png", dir);
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.png", dir);
    remove(heat), remove(div), remove(lines), remove(panels);
    plot_heatmap_spec hs = {.title = "Sequential", .subtitle = "test_plot", .data = grid, .rows = 2, .cols = 6,
                            .col_labels = toks, .x_label = "token", .y_label = "row", .value_label = "value"};
    plot_heatmap_spec ds = {.title = "Diverging", .data = signed_grid, .rows = 2, .cols = 3, .value_label = "signed",
                            .has_mark = 1, .mark = 0.3f, .mark_label = "baseline 0.3"};
    plot_series ser[2] = {{.label = "a", .x = xs, .y = ya, .n = 5}, {.label = "b", .x = xs, .y = yb, .n = 5}};
    plot_vline vl = {2.5f, "event"};
    plot_lines_spec ls = {.title = "Lines", .series = ser, .n_series = 2, .x_label = "x", .y_label = "y", .vlines = &vl,
                          .n_vlines = 1};
    plot_lines_spec ps[2] = {{.series = ser, .n_series = 1, .vlines = &vl, .n_vlines = 1},
                             {.series = ser + 1, .n_series = 1, .x_tick_labels = toks, .n_x_tick_labels = 5}};
    int rh = plot_heatmap(heat, &hs), rd = plot_heatmap(div, &ds), rl = plot_lines(lines, &ls);
    int rp = plot_panels(panels, "Panels", "two", ps, 2);
#ifdef CIRCUITS_HAVE_CAIRO
    CHECK(plot_available() == 1, "a cairo build says PNGs are unavailable");
    CHECK(rh == 0 && rd == 0 && rl == 0 && rp == 0, "plots failed: %d %d %d %d", rh, rd, rl, rp);
    image h = load(heat), d = load(div), l = load(lines), p = load(panels);
    CHECK(h.ok && d.ok && l.ok && p.ok, "a PNG does not read back");
    /* 6 columns at the 48 px cell cap: the map alone is 288 x 96, the colour bar at least 160 tall */
    CHECK(h.w > 288 && h.w < 900 && h.h > 160 && h.h < 600, "heatmap %d x %d", h.w, h.h);
    CHECK(count_colour(&h, 0.993248, 0.906157, 0.143936) > 48 * 40, "the heatmap has no cell of viridis' top");
    CHECK(count_colour(&h, 0.267004, 0.004874, 0.329415) > 48 * 40, "the heatmap has no cell of viridis' bottom");
    CHECK(count_colour(&h, 0.86, 0.86, 0.86) > 48 * 40, "the NaN cell is not grey");
    /* diverging and centred at 0 (red low, blue high): -2 is the reddest end, +1 only half way to blue;
     * the mark outlines 2 cells */
    CHECK(count_colour(&d, 0.403922, 0.0, 0.121569) > 48 * 40, "no cell at the red end");
    CHECK(count_colour(&d, 0.019608, 0.188235, 0.380392) < 48 * 10, "a cell reaches the blue end (the scale is not centred)");
    CHECK(count_colour(&d, 0.968627, 0.968627, 0.968627) > 48 * 40, "the 0 cell is not white");
    CHECK(count_colour(&d, 0, 0, 0) > 4 * 40, "no outline or mark");
    /* lines: both series' colours, and the panels figure is taller than one chart */
    CHECK(l.w >= 640 && l.h >= 360, "lines %d x %d", l.w, l.h);
    CHECK(count_colour(&l, 0.122, 0.467, 0.706) > 200 && count_colour(&l, 1.0, 0.498, 0.055) > 100, "a series is missing");
    CHECK(p.h > l.h && p.w >= 640, "panels %d x %d against lines %d x %d", p.w, p.h, l.w, l.h);
    drop(&h), drop(&d), drop(&l), drop(&p);
    /* bad arguments and paths: -1, nothing written */
    plot_heatmap_spec empty = hs;
    empty.rows = 0;
    CHECK(plot_heatmap(heat, NULL) == -1 && plot_heatmap(NULL, &hs) == -1 && plot_heatmap(heat, &empty) == -1,
          "bad heatmap arguments accepted");
    plot_lines_spec nolines = ls;
    nolines.n_series = 2, nolines.series = NULL;
    CHECK(plot_lines(lines, NULL) == -1 && plot_lines(lines, &nolines) == -1 && plot_panels(panels, "t", NULL, ps, 0) == -1,
          "bad line arguments accepted");
    CHECK(plot_heatmap(bad, &hs) == -1 && plot_lines(bad, &ls) == -1 && !exists(bad), "an unwritable path is not -1");
    remove(heat), remove(div), remove(lines), remove(panels);
    plot_release_fonts();
#else
    CHECK(plot_available() == 0, "a build without cairo says PNGs are available");
    CHECK(rh == -1 && rd == -1 && rl == -1 && rp == -1, "plots without cairo: %d %d %d %d", rh, rd, rl, rp);
    CHECK(!exists(heat) && !exists(div) && !exists(lines) && !exists(panels), "a build without cairo wrote a file");
    (void)bad;
#endif
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_plot TMPDIR\n");
        return 2;
    }
    test_ticks();
    test_labels();
    test_pictures(argv[1]);
    printf("%d checks, %d failures\n", checks, failures);
    return failures != 0;
}
