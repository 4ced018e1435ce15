/* circuits heads MODEL: behavioural scores of every head on repeated random tokens, and the OV
 * copying score from the weights. */
#include "cli.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("usage: circuits heads MODEL [--seq-len N] [--batch B] [--seed S] [--sort COLUMN]\n"
           "                            [--no-processing] [--no-mmap] [--json]\n"
           "\n"
           "Scores every head on B sequences of N random tokens repeated twice (after the\n"
           "tokenizer's BOS, if any), as TransformerLens's head detectors and Main Demo do:\n"
           "  prev       previous-token score (detect_head 'previous_token_head', mul)\n"
           "  induction  mean attention from each token to the one after its earlier occurrence\n"
           "  duplicate  duplicate-token score (detect_head 'duplicate_token_head', mul)\n"
           "  copying    Re(sum of eigenvalues) / sum |eigenvalues| of the full OV circuit\n"
           "             W_E W_V W_O W_U (of W_V W_O when d_vocab != d_vocab_out), from the weights\n"
           "and the mean loss on the first and the repeated half.\n"
           "\n"
           "  --seq-len N      random tokens per half (default 20, fewer if n_ctx is small)\n"
           "  --batch B        sequences (default 4)\n"
           "  --seed S         seed of the random tokens (default 0)\n"
           "  --sort COLUMN    order rows by prev, induction, duplicate or copying (descending)\n"
           "                   instead of by layer and head\n"
           "  --no-processing  load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap        read the weight files into memory instead of mapping them\n"
           "  --json           one JSON object on stdout\n");
}

static const char *const columns[] = {"prev", "induction", "duplicate", "copying"};

typedef struct row {
    int layer, head;
    float s[4];
} row;

static int sort_col;

static int by_col(const void *a, const void *b)
{
    const row *x = a, *y = b;
    float p = x->s[sort_col], q = y->s[sort_col];
    if (isnan(p) != isnan(q)) return isnan(p) ? 1 : -1;
    if (p != q && !isnan(p)) return p > q ? -1 : 1;
    return x->layer != y->layer ? x->layer - y->layer : x->head - y->head;
}

int cmd_heads(int argc, char **argv)
{
    common c = {0};
    long long seq = 0, batch = 4, seed = 0;
    int sort = -1;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, false))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--seq-len", &v))) {
            if (r < 0 || parse_int("--seq-len", v, 2, 1000000, &seq)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--batch", &v))) {
            if (r < 0 || parse_int("--batch", v, 1, 100000, &batch)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--seed", &v))) {
            if (r < 0 || parse_int("--seed", v, 0, LLONG_MAX, &seed)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--sort", &v))) {
            if (r < 0) return EXIT_USAGE;
            for (int k = 0; k < 4; k++)
                if (strcmp(v, columns[k]) == 0) sort = k;
            if (sort < 0) return usage_error("--sort: '%s' is not a column (prev, induction, duplicate, copying)", v);
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    int rc = common_check(&c, false);
    if (rc) return rc;
    circuits_model *m;
    circuits_config cfg;
    if ((rc = load_model(&c, &m, &cfg))) return rc;
    const circuits_tokenizer *tok = circuits_model_tokenizer(m);
    int32_t bos = tok ? circuits_tokenizer_bos_id(tok) : -1;
    int has_bos = bos >= 0;
    int64_t max_seq = (cfg.n_ctx - has_bos) / 2;
    circuits_context *ctx = NULL;
    int32_t *tokens = NULL;
    int64_t LH = (int64_t)cfg.n_layers * cfg.n_heads;
    float *sc = calloc((size_t)(4 * LH), sizeof *sc);
    row *rows = calloc((size_t)LH, sizeof *rows);
    if (!sc || !rows) {
        rc = failure("out of memory");
        goto done;
    }
    if (seq == 0) seq = max_seq < 20 ? max_seq : 20;
    if (seq < 2 || seq > max_seq) {
        rc = failure("--seq-len %lld: the repeated sequence needs %lld positions, but the model's n_ctx is %d "
                     "(at most --seq-len %lld)",
                     seq, 2 * seq + has_bos, cfg.n_ctx, (long long)max_seq);
        goto done;
    }
    int64_t T = 2 * seq + has_bos;
    tokens = malloc(sizeof(int32_t) * (size_t)(batch * T));
    if (!tokens) {
        rc = failure("out of memory");
        goto done;
    }
    if (circuits_repeated_tokens(batch, seq, cfg.d_vocab, (uint64_t)seed, bos, tokens) != CIRCUITS_OK ||
        circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK) {
        rc = lib_failure("setup");
        goto done;
    }
    progress pg;
    progress_begin(&pg, "heads", 3 * cfg.n_layers + 1);
    progress_hook_layers(ctx, &pg);
    float loss_first = NAN, loss_repeat = NAN;
    bool full = cfg.d_vocab == cfg.d_vocab_out;
    if (circuits_context_detect_heads(ctx, tokens, batch, T, CIRCUITS_HEAD_PREVIOUS_TOKEN, NULL, NULL, sc) ||
        circuits_context_induction_scores(ctx, tokens, batch, T, seq, sc + LH, &loss_first, &loss_repeat) ||
        circuits_context_detect_heads(ctx, tokens, batch, T, CIRCUITS_HEAD_DUPLICATE_TOKEN, NULL, NULL, sc + 2 * LH) ||
        circuits_model_copying_scores(m, full, sc + 3 * LH)) {
        progress_end(&pg);
        rc = lib_failure(NULL);
        goto done;
    }
    progress_end(&pg);
    for (int64_t k = 0; k < LH; k++) {
        rows[k].layer = (int)(k / cfg.n_heads);
        rows[k].head = (int)(k % cfg.n_heads);
        for (int col = 0; col < 4; col++) rows[k].s[col] = sc[col * LH + k];
    }
    if (sort >= 0) {
        sort_col = sort;
        qsort(rows, (size_t)LH, sizeof *rows, by_col);
    }
    if (c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"seq_len\":%lld,\"batch\":%lld,\"seed\":%lld,\"bos\":%s,\"copying\":\"%s\",\"loss_first\":", seq,
               batch, seed, has_bos ? "true" : "false", full ? "full_ov" : "ov");
        json_num(stdout, loss_first);
        printf(",\"loss_repeat\":");
        json_num(stdout, loss_repeat);
        printf(",\"heads\":[");
        for (int64_t k = 0; k < LH; k++) {
            printf("%s{\"layer\":%d,\"head\":%d", k ? "," : "", rows[k].layer, rows[k].head);
            for (int col = 0; col < 4; col++) {
                printf(",\"%s\":", columns[col]);
                json_num(stdout, rows[k].s[col]);
            }
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("%lld sequences of %lld random tokens repeated twice%s (seed %lld)\n", batch, seq,
               has_bos ? " after BOS" : "", seed);
        printf("loss: %.3f on the first half, %.3f on the repeat\n\n", (double)loss_first, (double)loss_repeat);
        printf("layer  head      prev  induction  duplicate   copying%s\n", full ? "" : " (OV)");
        for (int64_t k = 0; k < LH; k++)
            printf("%5d  %4d  %8.3f  %9.3f  %9.3f  %8.3f\n", rows[k].layer, rows[k].head, (double)rows[k].s[0],
                   (double)rows[k].s[1], (double)rows[k].s[2], (double)rows[k].s[3]);
    }
done:
    free(rows);
    free(sc);
    free(tokens);
    circuits_context_free(ctx);
    circuits_model_free(m);
    return rc;
}
