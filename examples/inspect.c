/* circuits-inspect: the main job on a model directory (default: the bundled model).
 *
 * Reports the model's config and hook points, then looks for induction behaviour the way
 * TransformerLens tutorials do: run a sequence of random tokens repeated twice, read every
 * head's attention pattern through a hook on blocks.*.attn.hook_pattern, and score
 *   previous-token: mean attention from position i to i-1
 *   induction:      mean attention from position i in the repeat to i-n+1 (the token after
 *                   the previous occurrence of the current token)
 * and compare the loss on the first half with the loss on the repeated half.
 * Usage: circuits-inspect [MODEL_DIR] [--seq N] [--batch B] [--seed S] */
#include <circuits.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DEFAULT_MODEL
#define DEFAULT_MODEL "examples/models/tiny-random-gpt2"
#endif

typedef struct scores {
    int n_layers, n_heads, half; /* half = length of the random sequence */
    double *prev, *induction;    /* [n_layers, n_heads] */
} scores;

/* pattern [batch, head, q, k] */
static int score_heads(const circuits_tensor *p, void *user_data)
{
    scores *s = user_data;
    int64_t B = p->shape[0], H = p->shape[1], T = p->shape[2];
    for (int64_t h = 0; h < H; h++) {
        double prev = 0, ind = 0;
        for (int64_t b = 0; b < B; b++) {
            const float *P = p->data + b * p->strides[0] + h * p->strides[1];
            for (int64_t q = 1; q < T; q++) prev += P[q * p->strides[2] + (q - 1)];
            for (int64_t q = s->half; q < T; q++) ind += P[q * p->strides[2] + (q - s->half + 1)];
        }
        s->prev[p->layer * H + h] = prev / (double)(B * (T - 1));
        s->induction[p->layer * H + h] = ind / (double)(B * (T - s->half));
    }
    return CIRCUITS_HOOK_CONTINUE;
}

static const char *act_name(int a)
{
    static const char *n[] = {"relu", "gelu", "gelu_new", "gelu_fast", "silu", "solu_ln"};
    return a >= 0 && a < 6 ? n[a] : "?";
}

static int fail(const char *what)
{
    fprintf(stderr, "circuits-inspect: %s: %s\n", what, circuits_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_MODEL;
    int half = 0, batch = 4;
    unsigned seed = 1234;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seq") == 0 && i + 1 < argc) half = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s [MODEL_DIR] [--seq N] [--batch B] [--seed S]\n", argv[0]);
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "circuits-inspect: unknown option %s (try --help)\n", argv[i]);
            return 2;
        } else path = argv[i];
    }
    if (batch < 1) {
        fprintf(stderr, "circuits-inspect: --batch must be at least 1\n");
        return 2;
    }
    printf("libcircuits %s\n", circuits_version_string());
    circuits_model *model;
    if (circuits_model_load(&model, path, NULL)) return fail("load");
    circuits_config c = {.size = sizeof c};
    circuits_model_config(model, &c);
    printf("model %s: %d layers, %d heads x d_head %d, d_model %d, d_mlp %d, vocab %d, n_ctx %d, %s, %s\n", path,
           c.n_layers, c.n_heads, c.d_head, c.d_model, c.d_mlp, c.d_vocab, c.n_ctx,
           c.attn_only ? "attention-only" : act_name(c.act_fn),
           c.normalization_type == CIRCUITS_NORM_LN       ? "LN"
           : c.normalization_type == CIRCUITS_NORM_LNPRE  ? "LNPre"
           : c.normalization_type == CIRCUITS_NORM_RMS    ? "RMS"
           : c.normalization_type == CIRCUITS_NORM_RMSPRE ? "RMSPre"
                                                          : "no norm");
    if (half <= 1) half = c.n_ctx / 2 < 50 ? c.n_ctx / 2 : 50;
    if (half < 2 || 2 * half > c.n_ctx) {
        fprintf(stderr, "circuits-inspect: --seq must be in [2, n_ctx/2 = %d]\n", c.n_ctx / 2);
        return 2;
    }
    circuits_context *ctx;
    if (circuits_context_create(&ctx, model, NULL)) return fail("context");
    printf("hook points: %zu (e.g.", circuits_context_hook_point_count(ctx));
    for (size_t i = 0; i < 4 && i < circuits_context_hook_point_count(ctx); i++) {
        circuits_tensor t;
        circuits_context_hook_point(ctx, i, 1, 1, &t);
        printf(" %s", t.name);
    }
    printf(" ...)\n");

    int T = 2 * half;
    int32_t *tokens = malloc(sizeof *tokens * (size_t)batch * (size_t)T);
    float *ptl = malloc(sizeof *ptl * (size_t)batch * (size_t)(T - 1));
    scores s = {c.n_layers, c.n_heads, half, calloc((size_t)(c.n_layers * c.n_heads), sizeof(double)),
                calloc((size_t)(c.n_layers * c.n_heads), sizeof(double))};
    srand(seed);
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < half; i++) tokens[b * T + i] = tokens[b * T + half + i] = rand() % c.d_vocab;
    float loss;
    if (circuits_context_add_hook(ctx, "blocks.*.attn.hook_pattern", score_heads, &s, NULL)) return fail("add_hook");
    if (circuits_context_forward(ctx, tokens, batch, T, NULL, &loss, ptl)) return fail("forward");

    double first = 0, second = 0;
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < T - 1; i++) {
            /* per_token_loss[b, i] predicts token i + 1 */
            if (i + 1 < half) first += ptl[b * (T - 1) + i];
            else if (i + 1 > half) second += ptl[b * (T - 1) + i];
        }
    first /= batch * (half - 1);
    second /= batch * (half - 1);
    printf("\n%d random tokens repeated twice, batch %d (seed %u):\n", half, batch, seed);
    printf("  loss on the first half   %.3f\n  loss on the repeated half %.3f  (in-context gain %.3f nats)\n", first,
           second, first - second);
    /* what a head attending uniformly over the causal window would score */
    double u_prev = 0, u_ind = 0;
    for (int q = 1; q < T; q++) u_prev += 1.0 / (q + 1);
    for (int q = half; q < T; q++) u_ind += 1.0 / (q + 1);
    printf("\nhead    prev-token  induction\n");
    printf("uniform %8.3f %10.3f   (baseline: attention spread evenly over the causal window)\n",
           u_prev / (T - 1), u_ind / (T - half));
    int best_p = 0, best_i = 0;
    for (int i = 0; i < c.n_layers * c.n_heads; i++) {
        printf("L%dH%-4d %8.3f %10.3f\n", i / c.n_heads, i % c.n_heads, s.prev[i], s.induction[i]);
        if (s.prev[i] > s.prev[best_p]) best_p = i;
        if (s.induction[i] > s.induction[best_i]) best_i = i;
    }
    printf("\nstrongest previous-token head: L%dH%d (%.3f); strongest induction head: L%dH%d (%.3f)\n",
           best_p / c.n_heads, best_p % c.n_heads, s.prev[best_p], best_i / c.n_heads, best_i % c.n_heads,
           s.induction[best_i]);
    free(tokens);
    free(ptl);
    free(s.prev);
    free(s.induction);
    circuits_context_free(ctx);
    circuits_model_free(model);
    return 0;
}
