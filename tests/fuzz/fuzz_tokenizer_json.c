/* libFuzzer harness: a Hugging Face tokenizer.json, loaded by circuits_tokenizer_load from a
 * file (the whole input), then used (fuzz_tok_use.h). Side files: see fuzz_vocab_merges.c. */
#include "fuzz_tok_use.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_tokenizer_file("tokenizer.json", data, size);
    return 0;
}
