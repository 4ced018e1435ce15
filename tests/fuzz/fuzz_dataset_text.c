/* libFuzzer harness: a text dataset (lib/io/dataset_text.c) read from a file: the first byte
 * chooses .txt or .jsonl (bit 0), prepend_bos (bit 1) and seq_len (2 + the rest mod 30), the
 * second max_rows (mod 8); the remaining bytes are the file, tokenized with hf-tiny-random-gpt2's
 * tokenizer.json (tests/tokenizer/data). A dataset that opens must have whole rows, each
 * starting with BOS when asked, and a digest. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_files.h"
#include "job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static circuits_tokenizer *tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    if (!tok && circuits_tokenizer_load(&tok, FUZZ_TOKENIZER_DATA "/tiny-random/tokenizer.json") != CIRCUITS_OK)
        abort(); /* harness setup */
    bool jsonl = data[0] & 1;
    circuits_dataset_options o;
    circuits_dataset_options_init(&o);
    o.tokenizer = tok;
    o.prepend_bos = (data[0] >> 1) & 1;
    o.seq_len = 2 + (data[0] >> 2) % 30;
    o.max_rows = data[1] % 8;
    const char *name = jsonl ? "d.jsonl" : "d.txt";
    fuzz_dir();
    fuzz_put(name, data + 2, size - 2);
    char path[128];
    fuzz_dir_path_of(path, sizeof path, name);
    circuits_dataset *ds = NULL;
    if (circuits_dataset_open(&ds, path, &o) != CIRCUITS_OK) return 0;
    int64_t n = 0, pos = 0;
    if (circuits_dataset_dims(ds, &n, &pos) || pos != o.seq_len || n < 1 || (o.max_rows && n > o.max_rows)) abort();
    const int32_t *v = NULL;
    if (circuits_dataset_column(ds, "tokens", &v, NULL)) abort();
    for (int64_t r = 0; r < n && o.prepend_bos; r++)
        if (v[r * pos] != circuits_tokenizer_bos_id(tok)) abort();
    char hex[65];
    if (circuits_dataset_digest(ds, hex)) abort();
    circuits_dataset_free(ds);
    return 0;
}
