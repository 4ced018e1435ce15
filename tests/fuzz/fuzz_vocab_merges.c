/* libFuzzer harness: the vocabulary + merges formats with their side file, loaded by
 * circuits_tokenizer_load from a model directory. The input is
 *   [1 byte flags] [2 bytes n][n bytes: vocab.json] [2 bytes n][n bytes: tokenizer_config.json]
 *   [rest: merges.txt]
 * flags bit 0: OpenAI's names (encoder.json + vocab.bpe); bit 1: load the vocabulary file by
 * path instead of the directory; bit 2: the side file is special_tokens_map.json instead;
 * an empty side field writes no side file. */
#include "fuzz_files.h"
#include "fuzz_tok_use.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t flags = data[0];
    data++, size--;
    size_t nv, ns;
    const uint8_t *vocab = fuzz_take(&data, &size, &nv);
    const uint8_t *side = fuzz_take(&data, &size, &ns);
    const char *vname = flags & 1 ? "encoder.json" : "vocab.json";
    fuzz_dir();
    fuzz_put(vname, vocab, nv);
    fuzz_put(flags & 1 ? "vocab.bpe" : "merges.txt", data, size);
    if (ns) fuzz_put(flags & 4 ? "special_tokens_map.json" : "tokenizer_config.json", side, ns);
    char path[128];
    if (flags & 2) fuzz_dir_path_of(path, sizeof path, vname);
    else snprintf(path, sizeof path, "%s", fuzz_dir_path);
    circuits_tokenizer *t = NULL;
    if (circuits_tokenizer_load(&t, path) == CIRCUITS_OK) fuzz_tok_use(t);
    else if (t) abort();
    circuits_tokenizer_free(t);
    return 0;
}
