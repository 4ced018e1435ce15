/* libFuzzer harness: a whole model directory through the public API. The input is
 *   [2 bytes little-endian: n] [1 byte: odd = TransformerLens layout] [n bytes: config JSON]
 *   [rest: model.safetensors]
 * A model that loads is run on a few tokens, with weight processing on and off. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "circuits.h"
#include "fuzz_run_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void put(const char *name, const uint8_t *p, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/circuits-fuzz-model-XXXXXX");
        if (!mkdtemp(dir)) abort(); /* harness setup, not library code */
    }
    if (size < 3) return 0;
    size_t n = (size_t)data[0] | (size_t)data[1] << 8;
    if (n > size - 3) n = size - 3;
    bool tl = data[2] & 1;
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, tl ? "config.json" : "tl_config.json");
    unlink(path); /* only one of the two configs */
    put(tl ? "tl_config.json" : "config.json", data + 3, n);
    put("model.safetensors", data + 3 + n, size - 3 - n);
    for (int raw = 0; raw < 2; raw++) {
        circuits_load_options o;
        circuits_load_options_init(&o);
        if (raw) o.fold_ln = o.center_writing_weights = o.center_unembed = o.fold_value_biases = 0;
        fuzz_load_and_run(dir, &o);
    }
    return 0;
}
