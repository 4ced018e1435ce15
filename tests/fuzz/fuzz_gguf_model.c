/* libFuzzer harness: a GGUF model file (the whole input) loaded by circuits_model_load, with
 * weight processing on and off, and with keep_stored_dtype (with and without processing); a
 * model that loads runs a forward pass on a few tokens. Seeds: tests/fuzz/corpus/gguf_model (written by
 * `build/tests/test_gguf_bad --write-seeds DIR`: a small llama, F32 and with a Q8_0 matrix). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "circuits.h"
#include "fuzz_run_model.h"

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
    for (int mode = 0; mode < 4; mode++) {
        circuits_load_options o;
        circuits_load_options_init(&o);
        /* keep_stored_dtype with the default processing is refused as soon as a matrix is kept
         * (fold_ln would rewrite it): mode 3 runs kept matrices through the product kernels */
        if (mode == 1 || mode == 3) o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
        if (mode >= 2) o.keep_stored_dtype = 1;
        fuzz_load_and_run(path, &o);
    }
    return 0;
}
