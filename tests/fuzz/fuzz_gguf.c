/* libFuzzer harness: a GGUF file (the whole input), loaded by circuits_tokenizer_load, then
 * used (fuzz_tok_use.h). Seeds: tests/fuzz/corpus/gguf/make_seeds.py. */
#include "fuzz_files.h"
#include "fuzz_tok_use.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[128];
    fuzz_dir();
    fuzz_put("t.gguf", data, size);
    fuzz_dir_path_of(path, sizeof path, "t.gguf");
    circuits_tokenizer *t = NULL;
    if (circuits_tokenizer_load(&t, path) == CIRCUITS_OK) fuzz_tok_use(t);
    else if (t) abort();
    circuits_tokenizer_free(t);
    return 0;
}
