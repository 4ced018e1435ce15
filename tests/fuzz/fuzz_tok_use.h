/* Harness helper: exercises a tokenizer that a fuzzed file produced. Encoding and decoding
 * must not crash whatever the vocabulary, merges and added tokens are, and every id encode
 * returns must decode. */
#ifndef CIRCUITS_FUZZ_TOK_USE_H
#define CIRCUITS_FUZZ_TOK_USE_H

#include <stdlib.h>
#include <string.h>

#include "circuits.h"
#include "fuzz_files.h"

static void fuzz_tok_use(const circuits_tokenizer *t)
{
    static const char *const texts[] = {
        "Hello world, it's 2024!  \n\tdone", "<|endoftext|>a<|endoftext|>", "  lower newer ", "\xff\xfe\xe2\x82 \xcc\x81",
        "caf\x65\xcc\x81 \xe4\xbd\xa0\xe5\xa5\xbd", "",
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++)
        for (int mode = 0; mode < 4; mode++) {
            circuits_encode_options o;
            circuits_encode_options_init(&o);
            o.parse_special = mode & 1;
            o.add_prefix_space = mode & 2 ? 1 : -1;
            o.prepend_bos = circuits_tokenizer_bos_id(t) >= 0;
            size_t len = strlen(texts[k]), n = 0;
            int32_t ids[128];
            if (circuits_tokenizer_encode(t, texts[k], len, &o, ids, 128, &n) != CIRCUITS_OK) abort();
            /* a token may be 64 KiB long: measure, then decode */
            size_t need = 0, got = 0;
            if (circuits_tokenizer_decode(t, ids, n, NULL, 0, &need) != CIRCUITS_E_RANGE || need < 1) abort();
            char *buf = malloc(need);
            if (!buf) abort();
            if (circuits_tokenizer_decode(t, ids, n, buf, need, &got) != CIRCUITS_OK || got + 1 != need) abort();
            for (size_t i = 0; i < n; i++)
                if (circuits_tokenizer_token(t, ids[i], buf, need, &got) != CIRCUITS_OK) abort();
            free(buf);
        }
    size_t v = circuits_tokenizer_vocab_size(t);
    char buf[16];
    size_t got;
    (void)circuits_tokenizer_token(t, (int32_t)(v ? v - 1 : 0), buf, sizeof buf, &got);
    (void)circuits_tokenizer_token(t, (int32_t)v, buf, sizeof buf, &got);
}

/* The single-file harnesses: the input as the file `name` in the scratch directory, loaded
 * by circuits_tokenizer_load, used if it loads; a failed load must leave *out NULL. */
static inline void fuzz_tokenizer_file(const char *name, const uint8_t *data, size_t size)
{
    char path[128];
    fuzz_dir();
    fuzz_put(name, data, size);
    fuzz_dir_path_of(path, sizeof path, name);
    circuits_tokenizer *t = NULL;
    if (circuits_tokenizer_load(&t, path) == CIRCUITS_OK) fuzz_tok_use(t);
    else if (t) abort();
    circuits_tokenizer_free(t);
}

#endif
