/* circuits run MODEL --prompt TEXT | --tokens IDS: top next tokens and per-token loss. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("usage: circuits run MODEL (--prompt TEXT | --tokens IDS) [--top-k K] [--no-bos]\n"
           "                          [--sae SAE_DIR ... [--sae-error-term]] [--no-processing] [--no-mmap] [--json]\n"
           "\n"
           "Runs the model on one sequence and prints each token with the loss of predicting it,\n"
           "the mean loss, and the K most likely next tokens after the last position.\n"
           "\n"
           "  --prompt TEXT    text, tokenized with the model's tokenizer (BOS first, as\n"
           "                   TransformerLens's to_tokens, unless --no-bos)\n"
           "  --tokens IDS     token ids instead, e.g. 464,3290,318 (no BOS is added)\n"
           "  --top-k K        next tokens to list (default 5)\n"
           "  --no-bos         do not prepend the BOS token to --prompt\n"
           "  --sae SAE_DIR    splice this SAE (SAELens's saved format) into the run at its hook point,\n"
           "                   as HookedSAETransformer.add_sae (repeat for several)\n"
           "  --sae-error-term the SAEs keep their error term (use_error_term: the output is unchanged)\n"
           "  --no-processing  load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap        read the weight files into memory instead of mapping them\n"
           "  --json           one JSON object on stdout\n");
}

typedef struct ranked {
    double p;
    int32_t id;
} ranked;

static int by_prob(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int cmd_run(int argc, char **argv)
{
    common c = {0};
    long long top_k = 5;
    char **sae_dirs = calloc((size_t)argc, sizeof *sae_dirs);
    size_t n_saes = 0;
    bool sae_error = false;
    if (!sae_dirs) return failure("out of memory");
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return free(sae_dirs), usage(), 0;
        if ((r = common_opt(&a, &c, true))) {
            if (r < 0) return free(sae_dirs), EXIT_USAGE;
        } else if ((r = opt_value(&a, "--top-k", &v))) {
            if (r < 0 || parse_int("--top-k", v, 1, 1000000, &top_k)) return free(sae_dirs), EXIT_USAGE;
        } else if ((r = opt_value(&a, "--sae", &v))) {
            if (r < 0) return free(sae_dirs), EXIT_USAGE;
            sae_dirs[n_saes++] = (char *)v;
        } else if ((r = opt_flag(&a, "--sae-error-term"))) {
            if (r < 0) return free(sae_dirs), EXIT_USAGE;
            sae_error = true;
        } else if (common_positional(&a, &c) < 0) {
            return free(sae_dirs), EXIT_USAGE;
        }
    }
    int rc = common_check(&c, true);
    if (!rc && sae_error && !n_saes) rc = usage_error("--sae-error-term needs --sae SAE_DIR");
    if (rc) return free(sae_dirs), rc;
    if (c.tokens) { /* a malformed list is a usage error, found before loading anything */
        int32_t *ids;
        int64_t n;
        if ((rc = parse_ids("--tokens", c.tokens, &ids, &n))) return free(sae_dirs), rc;
        free(ids);
    }
    circuits_model *m;
    circuits_config cfg;
    circuits_sae **saes = NULL;
    if ((rc = load_model(&c, &m, &cfg))) return free(sae_dirs), rc;
    int32_t *ids = NULL;
    int64_t T = 0;
    circuits_context *ctx = NULL;
    float *logits = NULL, *ptl = NULL;
    ranked *rk = NULL;
    if ((rc = input_tokens(&c, m, &ids, &T))) goto done;
    int64_t V = cfg.d_vocab_out;
    if (top_k > V) top_k = V;
    logits = malloc(sizeof(float) * (size_t)(T * V));
    ptl = malloc(sizeof(float) * (size_t)(T > 1 ? T - 1 : 1));
    rk = malloc(sizeof(ranked) * (size_t)V);
    if (!logits || !ptl || !rk) {
        rc = failure("out of memory");
        goto done;
    }
    if (circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK) {
        rc = lib_failure("context");
        goto done;
    }
    if (n_saes && (rc = attach_saes(ctx, sae_dirs, n_saes, sae_error, &saes))) goto done;
    progress pg;
    progress_begin(&pg, "run", cfg.n_layers);
    if (progress_hook_layers(ctx, &pg) != CIRCUITS_OK) {
        rc = lib_failure("progress hook");
        goto done;
    }
    float loss = NAN;
    int frc = circuits_context_forward(ctx, ids, 1, T, logits, T > 1 ? &loss : NULL, T > 1 ? ptl : NULL);
    progress_end(&pg);
    if (frc != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    const float *last = logits + (T - 1) * V;
    double mx = -INFINITY, z = 0;
    for (int64_t j = 0; j < V; j++) mx = fmax(mx, last[j]);
    for (int64_t j = 0; j < V; j++) z += exp((double)last[j] - mx);
    for (int64_t j = 0; j < V; j++) rk[j] = (ranked){exp((double)last[j] - mx) / z, (int32_t)j};
    qsort(rk, (size_t)V, sizeof *rk, by_prob);

    const circuits_tokenizer *tok = circuits_model_tokenizer(m);
    char shown[512], raw[256];
    if (c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"tokens\":[");
        for (int64_t i = 0; i < T; i++) {
            printf("%s{\"id\":%d,\"text\":", i ? "," : "", ids[i]);
            if (tok) json_str(stdout, raw, token_bytes(tok, ids[i], raw, sizeof raw));
            else printf("null");
            printf(",\"loss\":");
            if (i == 0) printf("null");
            else json_num(stdout, ptl[i - 1]);
            printf("}");
        }
        printf("],\"loss\":");
        json_num(stdout, T > 1 ? loss : NAN);
        printf(",\"top_k\":[");
        for (int64_t r = 0; r < top_k; r++) {
            printf("%s{\"id\":%d,\"text\":", r ? "," : "", rk[r].id);
            if (tok) json_str(stdout, raw, token_bytes(tok, rk[r].id, raw, sizeof raw));
            else printf("null");
            printf(",\"prob\":");
            json_num(stdout, rk[r].p);
            printf(",\"logit\":");
            json_num(stdout, last[rk[r].id]);
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("%lld tokens\n  pos  %8s  %9s  token\n", (long long)T, "id", "loss");
        for (int64_t i = 0; i < T; i++) {
            token_display(tok, ids[i], shown, sizeof shown);
            if (i == 0) printf("  %3lld  %8d  %9s  '%s'\n", (long long)i, ids[i], "-", shown);
            else printf("  %3lld  %8d  %9.4f  '%s'\n", (long long)i, ids[i], (double)ptl[i - 1], shown);
        }
        if (T > 1) printf("mean loss %.4f over %lld predictions\n", (double)loss, (long long)(T - 1));
        else printf("mean loss: needs at least 2 tokens\n");
        printf("\ntop %lld next tokens after position %lld:\n  rank  %8s  %8s  %9s  token\n", top_k, (long long)(T - 1),
               "id", "prob", "logit");
        for (int64_t r = 0; r < top_k; r++) {
            token_display(tok, rk[r].id, shown, sizeof shown);
            printf("  %4lld  %8d  %8.4f  %9.4f  '%s'\n", (long long)(r + 1), rk[r].id, rk[r].p,
                   (double)last[rk[r].id], shown);
        }
    }
done:
    free(rk);
    free(ptl);
    free(logits);
    free(ids);
    circuits_context_free(ctx);
    free_saes(saes, n_saes);
    free(sae_dirs);
    circuits_model_free(m);
    return rc;
}
