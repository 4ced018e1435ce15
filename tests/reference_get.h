/* A tensor a committed reference file must hold: the test cannot go on without it (exit 2, a
 * broken reference, not a failed check). Used with a file opened by cx_st_open_file. */
#ifndef CIRCUITS_TESTS_REFERENCE_GET_H
#define CIRCUITS_TESTS_REFERENCE_GET_H

#include <stdio.h>
#include <stdlib.h>

#include "safetensors.h"

static cx_st_set *ref;

static const cx_st_tensor *get(const char *k)
{
    const cx_st_tensor *t = cx_st_find(ref, k);
    if (!t) {
        fprintf(stderr, "reference lacks %s\n", k);
        exit(2);
    }
    return t;
}

#endif
