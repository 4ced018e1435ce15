/* Whole files for the tests that compare outputs byte for byte (the job tests): read, write,
 * compare, remove a tree. One copy, shared by test_job.c, test_job_kinds.c, test_job_sweeps.c. */
#ifndef CIRCUITS_TESTS_FILES_H
#define CIRCUITS_TESTS_FILES_H

#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The file's bytes (malloc'd, *n its size), or NULL when it cannot be read. */
static inline unsigned char *slurp(const char *path, size_t *n)
{
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = sz >= 0 ? malloc(sz > 0 ? (size_t)sz : 1) : NULL;
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) *n = (size_t)sz;
    return p;
}

/* Whether both files can be read and hold the same bytes. */
static inline bool same_bytes(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *pa = slurp(a, &na), *pb = slurp(b, &nb);
    bool same = pa && pb && na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return same;
}

/* Writes n bytes to path; a test that cannot write its own files stops (exit 2). */
static inline void spit(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

static inline int files_rm_one(const char *p, const struct stat *s, int flag, struct FTW *ftw)
{
    (void)s, (void)flag, (void)ftw;
    return remove(p);
}

/* rm -rf p (links not followed). */
static inline void rm_rf(const char *p) { nftw(p, files_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

#endif
