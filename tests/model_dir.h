/* Helpers of the tests that write model directories into a temporary directory: a fatal I/O
 * error (exit status 2: the test could not run), copying a file, removing a directory's files,
 * uniform random weights from a seed. */
#ifndef CIRCUITS_TESTS_MODEL_DIR_H
#define CIRCUITS_TESTS_MODEL_DIR_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void md_die(const char *what)
{
    fprintf(stderr, "FATAL: %s: %s\n", what, strerror(errno));
    exit(2);
}

static inline void md_copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out) md_die(from);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) md_die(to);
    if (ferror(in) || fclose(out) != 0) md_die(to);
    fclose(in);
}

/* n floats uniform in [-scale/2, scale/2) from an LCG seeded by *seed (advanced); exits if out of
 * memory. */
static inline float *md_randn(size_t n, uint32_t *seed, float scale)
{
    float *p = malloc(n * sizeof *p);
    if (!p) md_die("malloc");
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = scale * ((float)(*seed >> 8) / 16777216.0f - 0.5f);
    }
    return p;
}

/* Removes dir/name for each of the n names (those absent are skipped), then dir itself. */
static inline void md_remove(const char *dir, const char *const *names, size_t n)
{
    char p[4200];
    for (size_t i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    if (rmdir(dir) != 0) md_die(dir);
}

#endif
