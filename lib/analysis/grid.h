/* The activation-patching grids (TransformerLens's patching.py), shared by activation patching
 * (patch.c) and attribution patching (attribute.c) so the two lay out and slice their cells
 * alike: which hook point each circuits_patch_kind patches, the grid's cells in row-major order,
 * and the slice of the point's activation one cell covers. */
#ifndef CIRCUITS_GRID_H
#define CIRCUITS_GRID_H

#include "hooks.h"

/* How a grid indexes its hook point. */
typedef enum cx_grid { G_LAYER_POS, G_LAYER_POS_HEAD, G_LAYER_HEAD, G_LAYER_HEAD_DEST, G_LAYER_HEAD_DEST_SRC } cx_grid;

typedef struct cx_patch_kind {
    cx_hook_kind hook;
    cx_grid grid;
    const char *name; /* TransformerLens's activation_name */
} cx_patch_kind;

/* Kind `kind`'s row, or NULL if it is no circuits_patch_kind. */
const cx_patch_kind *cx_patch_kind_of(int32_t kind);

/* Heads of the grid's head axis: k and v index key/value heads (TransformerLens likewise). */
int64_t cx_grid_heads(const circuits_config *c, int32_t kind);

/* One cell's slice of the point's activation, the same for every batch row: positions t0 .. t1-1
 * (the dest axis of hook_pattern), and in each position's row the elements lo .. hi-1. A row is
 * the point's trailing axes [H * d_head] or [d_model] (non-pattern points [B, T, ...]), or the
 * source axis [T] of head `head` (hook_pattern [B, H, T, T]). */
typedef struct cx_grid_cell {
    int32_t layer;
    int64_t head, pos, src; /* the grid's indices (those it has) */
    bool pattern;
    int64_t t0, t1, lo, hi;
} cx_grid_cell;

/* The grid's cells for runs of T positions in row-major order (the order of its output) into
 * cells[] (room for the grid's numel: circuits_patch_grid_shape); returns how many. */
int64_t cx_grid_cells(const circuits_model *m, int32_t kind, int64_t T, cx_grid_cell *cells);

/* Where row t of cell c's slice starts (add lo .. hi-1) in batch row b of a contiguous activation
 * [B, T, rest] (non-pattern) or [B, H, T, T] (pattern). */
static inline int64_t cx_grid_at(const cx_grid_cell *c, int64_t b, int64_t t, int64_t T, int64_t rest, int64_t H)
{
    return c->pattern ? ((b * H + c->head) * T + t) * T : (b * T + t) * rest;
}

#endif
