/* libFuzzer harness: a GGUF model file (the whole input) loaded by circuits_model_load, with
 * weight processing on and off and with keep_stored_dtype; a model that loads runs a forward
 * pass on a few tokens. Seeds: tests/fuzz/corpus/gguf_model (written by
 * `build/tests/test_gguf_bad --write-seeds DIR`: a small llama, F32 and with a Q8_0 matrix). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "circuits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[96];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        char dir[] = "/tmp/circuits-fuzz-gguf-XXXXXX";
        if (!mkdtemp(dir)) abort(); /* harness setup, not library code */
        snprintf(path, sizeof path, "%s/m.gguf", dir);
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    for (int mode = 0; mode < 3; mode++) {
        circuits_load_options o;
        circuits_load_options_init(&o);
        if (mode == 1) o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
        if (mode == 2) o.keep_stored_dtype = 1;
        circuits_model *m = NULL;
        if (circuits_model_load(&m, path, &o) != CIRCUITS_OK) continue;
        circuits_config c = {.size = sizeof c};
        circuits_model_config(m, &c);
        circuits_context *ctx = NULL;
        if (c.d_model * (int64_t)c.d_vocab_out < (1 << 22) && circuits_context_create(&ctx, m, NULL) == CIRCUITS_OK) {
            int32_t tok[4] = {0, 1 % c.d_vocab, 2 % c.d_vocab, 0};
            float loss;
            int T = c.n_ctx < 4 ? c.n_ctx : 4;
            circuits_context_forward(ctx, tok, 1, T, NULL, T > 1 ? &loss : NULL, NULL);
        }
        circuits_context_free(ctx);
        circuits_model_free(m);
    }
    return 0;
}
