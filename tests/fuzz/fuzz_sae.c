/* libFuzzer harness: an SAE directory (lib/sae/sae_load.c) through the public API. The input is
 *   [2 bytes little-endian: c] [2 bytes little-endian: s] [c bytes: cfg.json]
 *   [s bytes: sparsity.safetensors, absent when s is 0] [rest: sae_weights.safetensors]
 * An SAE that loads is queried (info, every weight view) and, when small, encodes and decodes a
 * few rows. Seeds: test_sae --write-seeds DIR. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "circuits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void put(const char *name, const uint8_t *p, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static void remove_dir(void)
{
    const char *names[] = {"cfg.json", "sae_weights.safetensors", "sparsity.safetensors"};
    for (int i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void exercise(const circuits_sae *sae)
{
    circuits_sae_info info = {.size = sizeof info};
    if (circuits_sae_get_info(sae, &info)) abort(); /* a loaded SAE always has info */
    static const char *const names[] = {"W_enc", "W_dec", "b_enc", "b_dec", "b_gate", "b_mag", "r_mag", "threshold",
                                        "W_skip", "log_feature_sparsity"};
    volatile float sink = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        circuits_tensor t;
        if (circuits_sae_weight(sae, names[i], &t) == CIRCUITS_OK && t.shape[0] > 0) sink += t.data[0];
    }
    if (info.d_in * info.d_sae > (1 << 20) || info.d_sae * info.d_out > (1 << 20)) return;
    enum { N = 3 };
    float *x = malloc((size_t)(N * info.d_in) * sizeof *x), *pre = malloc((size_t)(N * info.d_sae) * sizeof *pre),
          *post = malloc((size_t)(N * info.d_sae) * sizeof *post), *out = malloc((size_t)(N * info.d_out) * sizeof *out);
    if (!x || !pre || !post || !out) abort();
    for (int64_t i = 0; i < N * info.d_in; i++) x[i] = (float)(i % 7) - 2.5f;
    if (circuits_sae_encode(sae, x, N, pre, post) == CIRCUITS_OK) circuits_sae_decode(sae, post, N, x, out);
    free(x);
    free(pre);
    free(post);
    free(out);
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof dir, "%s/circuits-fuzz-sae-XXXXXX", base);
        if (!mkdtemp(dir)) abort(); /* harness setup, not library code */
        atexit(remove_dir);
    }
    if (size < 4) return 0;
    size_t c = (size_t)data[0] | (size_t)data[1] << 8, s = (size_t)data[2] | (size_t)data[3] << 8;
    data += 4;
    size -= 4;
    if (c > size) c = size;
    if (s > size - c) s = size - c;
    put("cfg.json", data, c);
    char path[128];
    snprintf(path, sizeof path, "%s/sparsity.safetensors", dir);
    unlink(path);
    if (s) put("sparsity.safetensors", data + c, s);
    put("sae_weights.safetensors", data + c + s, size - c - s);
    circuits_sae *sae = NULL;
    if (circuits_sae_load(&sae, dir) == CIRCUITS_OK) {
        exercise(sae);
        circuits_sae_free(sae);
    } else if (sae) {
        abort(); /* a failed load leaves *out NULL */
    }
    return 0;
}
