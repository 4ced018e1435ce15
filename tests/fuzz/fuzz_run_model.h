/* The fuzz harnesses' use of a model that loaded (fuzz_model.c, fuzz_gguf_model.c): a forward
 * pass on a few tokens, when the model is small enough to run quickly. */
#ifndef CIRCUITS_FUZZ_RUN_MODEL_H
#define CIRCUITS_FUZZ_RUN_MODEL_H

#include <stdint.h>

#include "circuits.h"

/* Loads path with o; on success runs it once and frees it. */
static inline void fuzz_load_and_run(const char *path, const circuits_load_options *o)
{
    circuits_model *m = NULL;
    if (circuits_model_load(&m, path, o) != CIRCUITS_OK) return;
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

#endif
