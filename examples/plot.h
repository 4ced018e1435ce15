/* Small PNG plots for the examples, drawn with cairo: heatmaps and line charts with titles and
 * axis labels. Not part of the library. Built without cairo (meson -Dcairo=disabled, or cairo not
 * found), every plot function draws nothing, prints PLOT_NO_CAIRO to stderr (once per process)
 * and returns -1; plot_available() tells which build this is. */
#ifndef CIRCUITS_EXAMPLES_PLOT_H
#define CIRCUITS_EXAMPLES_PLOT_H

#include <stddef.h>

#define PLOT_NO_CAIRO "built without cairo: PNG output unavailable; install libcairo2-dev and rebuild"

/* 1 when PNGs can be drawn (built with cairo), else 0. */
int plot_available(void);

/* A heatmap of data [rows, cols] (row-major) in a diverging (vmin < 0 < vmax) or sequential
 * colour map, with optional labels per row/column (may be NULL). Returns 0 on success. */
int plot_heatmap(const char *path, const char *title, const float *data, int rows, int cols, float vmin, float vmax,
                 const char *const *row_labels, const char *const *col_labels, const char *x_label,
                 const char *y_label);

typedef struct plot_series {
    const char *label;
    const float *x, *y;
    int n;
} plot_series;

/* Line chart of several series. */
int plot_lines(const char *path, const char *title, const plot_series *series, int n_series, const char *x_label,
               const char *y_label);

#endif
