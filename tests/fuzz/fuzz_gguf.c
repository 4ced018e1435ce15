/* libFuzzer harness: a GGUF file (the whole input), loaded by circuits_tokenizer_load, then
 * used (fuzz_tok_use.h). Seeds: tests/fuzz/corpus/gguf/make_seeds.py. */
#include "fuzz_tok_use.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_tokenizer_file("t.gguf", data, size);
    return 0;
}
