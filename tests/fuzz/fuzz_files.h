/* Harness helper: the tokenizer loaders take paths, so a harness writes its input as files
 * into one scratch directory per process (in /dev/shm when there is one: no disk traffic per
 * execution), removed again at exit. */
#ifndef CIRCUITS_FUZZ_FILES_H
#define CIRCUITS_FUZZ_FILES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir_path[64];
static const char *const fuzz_dir_names[] = {"tokenizer.json", "vocab.json", "merges.txt", "encoder.json",
                                             "vocab.bpe", "tokenizer_config.json", "special_tokens_map.json",
                                             "t.gguf", "d.txt", "d.jsonl"};

static inline void fuzz_dir_path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", fuzz_dir_path, name);
}

static inline void fuzz_dir_remove(void)
{
    char p[128];
    for (size_t i = 0; i < sizeof fuzz_dir_names / sizeof fuzz_dir_names[0]; i++) {
        fuzz_dir_path_of(p, sizeof p, fuzz_dir_names[i]);
        unlink(p);
    }
    rmdir(fuzz_dir_path);
}

/* The scratch directory, emptied of every file a harness may write. */
static inline const char *fuzz_dir(void)
{
    if (!fuzz_dir_path[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/circuits-fuzz-XXXXXX", base);
        if (!mkdtemp(fuzz_dir_path)) abort(); /* harness setup, not library code */
        atexit(fuzz_dir_remove);
    }
    char p[128];
    for (size_t i = 0; i < sizeof fuzz_dir_names / sizeof fuzz_dir_names[0]; i++) {
        fuzz_dir_path_of(p, sizeof p, fuzz_dir_names[i]);
        unlink(p);
    }
    return fuzz_dir_path;
}

/* Writes name (one of fuzz_dir_names) in the scratch directory. */
static inline void fuzz_put(const char *name, const uint8_t *data, size_t n)
{
    char p[128];
    fuzz_dir_path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}

/* Splits a length-prefixed field off the input: [2 bytes little-endian n][n bytes]. */
static inline const uint8_t *fuzz_take(const uint8_t **data, size_t *size, size_t *n)
{
    if (*size < 2) { *n = 0; return *data; }
    size_t want = (size_t)(*data)[0] | (size_t)(*data)[1] << 8;
    *data += 2;
    *size -= 2;
    *n = want < *size ? want : *size;
    const uint8_t *field = *data;
    *data += *n;
    *size -= *n;
    return field;
}

#endif
