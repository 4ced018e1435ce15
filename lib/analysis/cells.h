/* How many cells of a patching grid share one run (patch.c, path_patch.c): small runs are bound by
 * reading the weights, so cells run as batch rows of one run, up to CX_CELL_ROWS token rows; their
 * logits are bounded by CX_CELL_LOGIT_FLOATS (64 MiB). One pair of limits for both kinds of grid. */
#ifndef CIRCUITS_CELLS_H
#define CIRCUITS_CELLS_H

#include <stdint.h>

#define CX_CELL_ROWS ((int64_t)2048)
#define CX_CELL_LOGIT_FLOATS ((int64_t)1 << 24)

#endif
