/* Pictures for the examples and the CLI, drawn with cairo in one style (docs/pictures.md): heatmaps
 * with tokens or names on their axes and a colour bar, line charts with a legend, round ticks
 * (1, 2, 5 x 10^k), marks for a baseline or an event. Not part of the library, which keeps no
 * plotting dependency. Built without cairo (meson -Dcairo=disabled, or cairo not found), every
 * plot function draws nothing, prints PLOT_NO_CAIRO to stderr (once per process) and returns -1;
 * plot_available() tells which build this is. Specs are zero-initialised structs with designated
 * initialisers: every field left 0/NULL takes its default. */
#ifndef CIRCUITS_EXAMPLES_PLOT_H
#define CIRCUITS_EXAMPLES_PLOT_H

#include <stddef.h>

#define PLOT_NO_CAIRO "built without cairo: PNG output unavailable; install libcairo2-dev and rebuild"

/* 1 when PNGs can be drawn (built with cairo), else 0. */
int plot_available(void);

/* How values map to colours. AUTO: DIVERGING when the data (or [vmin, vmax]) has both signs,
 * else SEQUENTIAL. DIVERGING is centred: white at `centre` (default 0), the same distance to
 * either end (max |v - centre|), blue below, red above. SEQUENTIAL: viridis from vmin to vmax. */
enum plot_scale { PLOT_SCALE_AUTO = 0, PLOT_SCALE_SEQUENTIAL = 1, PLOT_SCALE_DIVERGING = 2 };

typedef struct plot_heatmap_spec {
    const char *title;                 /* what is shown, e.g. "Attention pattern of L1H0" */
    const char *subtitle;              /* for which model and input, e.g. "attn-only-2l, 40 random tokens repeated" */
    const float *data;                 /* [rows, cols] row-major; NaN cells are drawn grey */
    int rows, cols;
    const char *const *row_labels;     /* one per row (tokens, "L0H1", "0_attn_out"), or NULL: numbered */
    const char *const *col_labels;     /* one per column; long axes are thinned (every k-th label) and
                                        * column labels rotated when they would overlap */
    const char *x_label, *y_label;     /* axis titles ("key position (token)", "layer") */
    const char *value_label;           /* the colour bar's title ("attention", "logit diff recovered") */
    int scale;                         /* enum plot_scale */
    int has_range;                     /* 1: use [vmin, vmax]; 0: from the finite data */
    float vmin, vmax;
    float centre;                      /* DIVERGING's white (default 0) */
    int mask_upper;                    /* 1: cells above the diagonal (key > query) left blank (causal pattern) */
    int has_mark;                      /* 1: mark `mark` on the colour bar with a line labelled mark_label
                                        * (a baseline), and outline the cells whose value exceeds it */
    float mark;
    const char *mark_label;            /* e.g. "random baseline 0.21" */
} plot_heatmap_spec;

int plot_heatmap(const char *path, const plot_heatmap_spec *spec);

typedef struct plot_series {
    const char *label;                 /* legend entry */
    const float *x, *y;
    int n;
    const char *const *point_labels;   /* NULL, or n labels drawn beside the points (NULL entries skipped),
                                        * e.g. checkpoint steps on a trajectory */
    int markers_only;                  /* 1: points without the connecting line */
} plot_series;

typedef struct plot_vline {            /* a vertical mark across the plot, e.g. a phase change */
    float x;
    const char *label;                 /* drawn at the top of the line */
} plot_vline;

typedef struct plot_lines_spec {
    const char *title, *subtitle;
    const plot_series *series;
    int n_series;
    const char *x_label, *y_label;
    const plot_vline *vlines;          /* n_vlines marks (may be NULL) */
    int n_vlines;
    const char *const *x_tick_labels;  /* NULL: numeric round ticks; else the x values are 0..n-1
                                        * positions labelled by these (tokens), thinned when long */
    int n_x_tick_labels;
    int equal_aspect;                  /* 1: one unit is as long on both axes (a PCA plane) */
} plot_lines_spec;

int plot_lines(const char *path, const plot_lines_spec *spec);

/* Several line charts stacked with a shared x axis (e.g. loss above, ICL score below), each with
 * its own y axis; the vlines of panel 0 are drawn across every panel. */
int plot_panels(const char *path, const char *title, const char *subtitle, const plot_lines_spec *panels,
                int n_panels);

/* rc of a plot_* call that was to write path: 0 when it did (or when built without cairo, where
 * nothing is written by design); else 1 after "PROG: cannot write PATH" on stderr. For programs
 * writing several pictures: failed |= plot_written(plot_lines(file, &s), "prog", file). */
int plot_written(int rc, const char *prog, const char *path);

/* Frees cairo's and fontconfig's process-wide font caches, so that leak checkers (valgrind,
 * LeakSanitizer) see a clean exit. Call once, after the last picture; a no-op without cairo. */
void plot_release_fonts(void);

/* Round tick values for [lo, hi]: about `target` ticks at multiples of 1, 2 or 5 x 10^k inside the
 * range; writes at most max_ticks into out, returns how many (0 for an empty or non-finite range).
 * *decimals receives the number of decimals that prints them exactly ("%.*f"). Exposed for tests. */
int plot_nice_ticks(double lo, double hi, int target, double *out, int max_ticks, int *decimals);

/* A token (or any label) made printable for an axis: leading spaces as "␣" (U+2423), newline,
 * tab and carriage return as the two characters "\n", "\t", "\r", other control bytes as "\xNN",
 * invalid UTF-8 as U+FFFD. Writes at most n - 1 bytes and a NUL into out, cut at a character
 * boundary (never inside a UTF-8 sequence or an escape); returns the length of the whole label
 * (>= n: it was cut, as snprintf), or -1 when out or token is NULL or n is 0. */
int plot_token_label(char *out, size_t n, const char *token);

#endif
