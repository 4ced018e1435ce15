/* Which heads carry induction? Gradients answer in one backward pass what activation patching
 * answers in one run per head (docs/gradients.md).
 *
 * On the bundled 2-layer attention-only model: clean tokens are a random sequence repeated
 * (induction predicts the repeat), corrupted tokens repeat a different sequence in the second
 * half (random lowercase letters: the model reads bytes of text). The metric is the mean loss on
 * the clean tokens. For every head:
 *   - attribution patching: (corrupted z - clean z) . d loss / d z, from one forward + backward;
 *   - activation patching: the loss of the clean run with the head's z taken from the corrupted
 *     run, minus the clean loss (one run per head) — what attribution patching estimates.
 * Then the top edges of edge attribution patching, and integrated gradients at the embeddings
 * with their completeness check.
 * Usage: circuits-attribution [MODEL_DIR]   (default: examples/models/attn-only-2l) */
#include <circuits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DEFAULT_ATTRIBUTION_MODEL
#define DEFAULT_ATTRIBUTION_MODEL "examples/models/attn-only-2l"
#endif

enum { SEQ = 20, POS = 2 * SEQ + 1, TOP = 5 };

#define TRY(call)                                                                   \
    do {                                                                            \
        if ((call) != CIRCUITS_OK) {                                                \
            fprintf(stderr, "%s: %s\n", #call, circuits_last_error());              \
            return 1;                                                               \
        }                                                                           \
    } while (0)

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : DEFAULT_ATTRIBUTION_MODEL;
    circuits_model *model = NULL;
    circuits_context *ctx = NULL;
    TRY(circuits_model_load(&model, path, NULL));
    TRY(circuits_context_create(&ctx, model, NULL));
    circuits_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    TRY(circuits_model_config(model, &cfg));
    int L = cfg.n_layers, H = cfg.n_heads;

    /* clean: BOS, A, A; corrupted: BOS, A, B (same first half, another second half). The model
     * reads bytes of English text: the random tokens are lowercase letters */
    int32_t clean[POS], corrupted[POS], other[POS];
    TRY(circuits_repeated_tokens(1, SEQ, 26, 1, 0, clean));
    TRY(circuits_repeated_tokens(1, SEQ, 26, 2, 0, other));
    for (int i = 1; i < POS; i++) clean[i] += 'a', other[i] += 'a';
    clean[0] = other[0] = ' ';
    memcpy(corrupted, clean, sizeof clean);
    memcpy(corrupted + 1 + SEQ, other + 1 + SEQ, SEQ * sizeof(int32_t));

    circuits_metric loss;
    circuits_metric_init(&loss);
    loss.kind = CIRCUITS_METRIC_LOSS;
    loss.tokens = clean;

    /* the corrupted run's z in every layer: the source of both patchings */
    circuits_cache *cache = NULL;
    TRY(circuits_cache_create(&cache));
    const char *z_all[] = {"blocks.*.attn.hook_z"};
    TRY(circuits_context_run_with_cache(ctx, corrupted, 1, POS, z_all, 1, cache, NULL, NULL, NULL));
    const float **source = calloc((size_t)L, sizeof *source);
    for (int l = 0; l < L; l++) {
        char name[64];
        circuits_tensor z;
        snprintf(name, sizeof name, "blocks.%d.attn.hook_z", l);
        TRY(circuits_cache_get(cache, name, &z));
        source[l] = z.data;
    }

    float base = 0.0f, *attr = calloc((size_t)(L * H), sizeof(float)), *act = calloc((size_t)(L * H), sizeof(float));
    TRY(circuits_context_attribution_patch(ctx, CIRCUITS_PATCH_HEAD_Z_ALL_POS, clean, 1, POS,
                                           (const float *const *)source, &loss, &base, attr));
    /* activation patching runs the clean tokens with each head's z from the corrupted run */
    TRY(circuits_context_activation_patch(ctx, CIRCUITS_PATCH_HEAD_Z_ALL_POS, clean, 1, POS,
                                          (const float *const *)source, &loss, NULL, act));
    printf("clean loss %.4f on %d tokens (a random sequence of %d, repeated)\n\n", base, POS, SEQ);
    printf("change in loss when a head's output is corrupted: attribution patching (one backward) | "
           "activation patching (one run per head)\n");
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++)
            printf("  L%dH%d  %+8.4f | %+8.4f\n", l, h, attr[l * H + h], act[l * H + h] - base);

    /* edge attribution patching: the edges between heads, embeddings and logits that matter most */
    int64_t n_up = 0, n_down = 0;
    TRY(circuits_eap_graph(model, &n_up, &n_down));
    float *scores = calloc((size_t)(n_up * n_down), sizeof(float)), top_s[TOP];
    int64_t top_u[TOP], top_d[TOP];
    TRY(circuits_context_edge_attribution(ctx, clean, corrupted, 1, POS, &loss, NULL, scores));
    TRY(circuits_eap_top_edges(scores, n_up, n_down, TOP, top_u, top_d, top_s));
    printf("\nthe %d edges of largest |EAP score|:\n", TOP);
    for (int i = 0; i < TOP; i++) {
        char up[64], down[64];
        TRY(circuits_eap_node_name(model, 0, top_u[i], up, sizeof up));
        TRY(circuits_eap_node_name(model, 1, top_d[i], down, sizeof down));
        printf("  %-8s -> %-12s %+8.4f\n", up, down, top_s[i]);
    }

    /* integrated gradients at the token embeddings, from the corrupted tokens' */
    float *ig = calloc((size_t)POS * (size_t)cfg.d_model, sizeof(float)), completeness = 0.0f;
    TRY(circuits_context_integrated_gradients(ctx, "hook_embed", clean, corrupted, 1, POS, 32, &loss, ig, &completeness));
    double total = 0.0;
    for (int64_t i = 0; i < (int64_t)POS * cfg.d_model; i++) total += ig[i];
    printf("\nintegrated gradients at hook_embed (32 steps from the corrupted embeddings): sum %.4f, completeness "
           "error %.2e\n", total, completeness);

    free(ig);
    free(scores);
    free(attr);
    free(act);
    free(source);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_model_free(model);
    return 0;
}
