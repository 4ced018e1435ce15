/* libFuzzer harness: a Hugging Face tokenizer.json, loaded by circuits_tokenizer_load from a
 * file (the whole input), then used (fuzz_tok_use.h). Side files: see fuzz_vocab_merges.c. */
#include "fuzz_files.h"
#include "fuzz_tok_use.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[128];
    fuzz_dir();
    fuzz_put("tokenizer.json", data, size);
    fuzz_dir_path_of(path, sizeof path, "tokenizer.json");
    circuits_tokenizer *t = NULL;
    if (circuits_tokenizer_load(&t, path) == CIRCUITS_OK) fuzz_tok_use(t);
    else if (t) abort(); /* a failed load leaves *out NULL */
    circuits_tokenizer_free(t);
    return 0;
}
