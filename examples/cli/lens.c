/* circuits lens MODEL: the logit lens (how well the residual stream after each layer predicts the
 * next token) or, with --dla, the direct logit attribution of each component to the next token,
 * at every position: a table, JSON, a heatmap PNG and an interactive HTML page. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef CIRCUITS_CLI_CAIRO
#include "../plot.h"
#endif

static void usage(void)
{
    printf("usage: circuits lens MODEL (--prompt TEXT | --tokens IDS) [--dla] [--png FILE.png] [--html FILE.html]\n"
           "                           [--tokenizer FILE] [--no-bos] [--no-processing] [--no-mmap] [--json]\n"
           "\n"
           "The logit lens: the residual stream before each layer and after the last, through\n"
           "ln_final and the unembedding (circuits_logit_lens; TransformerLens's\n"
           "accumulated_resid(apply_ln=True) @ W_U), and the log-probability it gives the true next\n"
           "token at every position: a grid of layer x position.\n"
           "With --dla, the direct logit attribution instead (circuits_direct_logit_attribution of\n"
           "decompose_resid): each component's (embed, pos_embed, each layer's attn_out and mlp_out)\n"
           "contribution to the logit of the true next token, through ln_final's scale of the run.\n"
           "\n"
           "  --dla              direct logit attribution instead of the logit lens\n"
           "  --png FILE.png     the grid as a heatmap (components x positions, the next tokens on x)\n"
           "  --html FILE.html   the grid (hover for values) and the tokens coloured by the model's\n"
           "                     loss on each, in one self-contained page\n"
           "  --tokenizer FILE   tokenize --prompt with this tokenizer instead of the model's\n"
           "  --no-bos           no BOS token before --prompt\n"
           "  --no-processing    load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap          read the weight files into memory instead of mapping them\n"
           "  --json             one JSON object on stdout\n");
}

/* log_softmax(row)[t] in double */
static float log_prob(const float *row, int64_t V, int32_t t)
{
    double mx = -INFINITY, z = 0;
    for (int64_t j = 0; j < V; j++) mx = fmax(mx, row[j]);
    for (int64_t j = 0; j < V; j++) z += exp((double)row[j] - mx);
    return (float)((double)row[t] - mx - log(z));
}

/* labels "a\0b\0" into an array of pointers into buf */
static const char **split_labels(char *buf, int64_t n)
{
    const char **v = malloc(sizeof *v * (size_t)n);
    for (int64_t i = 0; v && i < n; i++) {
        v[i] = buf;
        buf += strlen(buf) + 1;
    }
    return v;
}

#ifdef CIRCUITS_CLI_CAIRO
static int draw(const char *path, bool dla, const char *subtitle, const float *grid, int64_t rows, int64_t cols,
                const char *const *row_labels, char *const *next_texts)
{
    plot_heatmap_spec s = {
        .title = dla ? "Direct logit attribution to the next token" : "Logit lens: log-prob of the next token",
        .subtitle = subtitle, .data = grid, .rows = (int)rows, .cols = (int)cols, .row_labels = row_labels,
        .x_label = "next token (the one predicted)", .y_label = dla ? "component" : "residual stream",
        .value_label = dla ? "logit contribution" : "log-prob",
        .scale = dla ? PLOT_SCALE_DIVERGING : PLOT_SCALE_SEQUENTIAL};
    return picture_heatmap(path, &s, next_texts, false);
}
#endif

/* The page: the grid, and the tokens coloured by the model's loss on each (the first has none). */
static int page(const char *path, bool dla, const char *model, const char *subtitle, const float *grid, int64_t rows,
                int64_t cols, const char *const *row_labels, char *const *texts, int64_t T, const float *ptl)
{
    float *loss = malloc(sizeof(float) * (size_t)T);
    if (!loss) return failure("out of memory");
    loss[0] = NAN;
    memcpy(loss + 1, ptl, sizeof(float) * (size_t)(T - 1));
    circuits_vis_options vo;
    circuits_vis_options_init(&vo);
    vo.fragment = 1;
    vo.subtitle = subtitle;
    char *views[2] = {NULL, NULL}, title[512];
    size_t lens[2] = {0, 0};
    const char *series[] = {"loss"};
    int rc = 0;
    vo.title = dla ? "Direct logit attribution to the next token" : "Logit lens: log-prob of the next token";
    if (circuits_vis_grid(&views[0], &lens[0], grid, rows, cols, row_labels, (const char *const *)texts + 1,
                          dla ? "component" : "residual stream", "next token (the one predicted)",
                          dla ? "logit contribution" : "log-prob", &vo) != CIRCUITS_OK)
        rc = lib_failure("--html");
    vo.title = "Loss of each token (predicting it from the ones before)";
    if (!rc && circuits_vis_colored_tokens(&views[1], &lens[1], (const char *const *)texts, T, loss, 1, series, &vo) !=
                   CIRCUITS_OK)
        rc = lib_failure("--html");
    if (!rc) {
        const char *name;
        int name_len = picture_model_name(model, &name);
        snprintf(title, sizeof title, "%s: %.*s", dla ? "Direct logit attribution" : "Logit lens", name_len, name);
        rc = write_views(path, title, views, lens, 2);
    }
    circuits_vis_free(views[0]);
    circuits_vis_free(views[1]);
    free(loss);
    return rc;
}

int cmd_lens(int argc, char **argv)
{
    common c = {0};
    picture_opts po = {0};
    bool dla = false;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        int r;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, true)) || (r = picture_opt(&a, &po))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_flag(&a, "--dla"))) {
            if (r < 0) return EXIT_USAGE;
            dla = true;
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    int rc = common_check(&c, true);
    if (rc) return rc;
    if ((rc = picture_check(&po))) return rc;
    circuits_model *m;
    circuits_config cfg;
    if ((rc = load_model(&c, &m, &cfg))) return rc;
    circuits_tokenizer *own_tok = NULL;
    const circuits_tokenizer *tok = NULL;
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    int32_t *ids = NULL;
    int64_t T = 0, n_comp = 0, V = cfg.d_vocab_out;
    char **texts = NULL, *label_buf = NULL;
    const char **labels = NULL;
    float *ptl = NULL, *lens = NULL, *grid = NULL;
    int64_t *positions = NULL;
    if ((rc = picture_tokenizer(&po, m, &own_tok, &tok)) ||
        (rc = picture_tokens(c.model, &cfg, tok, !c.no_bos, "--prompt", c.prompt, "--tokens", c.tokens, &ids, &T)))
        goto done;
    if (T < 2) {
        rc = failure("%s: one token has no next token to predict (give at least 2)", c.prompt ? "--prompt" : "--tokens");
        goto done;
    }
    int64_t P = T - 1; /* positions that predict a token of the input */
    if (!(texts = token_texts(tok, ids, T)) || !(ptl = malloc(sizeof(float) * (size_t)P)) ||
        !(positions = malloc(sizeof(int64_t) * (size_t)P))) {
        rc = failure("out of memory");
        goto done;
    }
    for (int64_t p = 0; p < P; p++) positions[p] = p;
    if (circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK || circuits_cache_create(&cache) != CIRCUITS_OK ||
        circuits_context_run_with_cache(ctx, ids, 1, T, NULL, 0, cache, NULL, NULL, ptl) != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    circuits_resid_options ro;
    circuits_resid_options_init(&ro);
    ro.positions = positions;
    ro.n_positions = P;
    int kind = dla ? CIRCUITS_RESID_DECOMPOSED : CIRCUITS_RESID_ACCUMULATED;
    int64_t shape[4];
    size_t need = 0;
    if (circuits_resid_shape(m, cache, kind, &ro, shape) != CIRCUITS_OK ||
        circuits_resid_labels(m, cache, kind, &ro, NULL, 0, &need) != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    n_comp = shape[0];
    if (!(label_buf = malloc(need)) || !(grid = malloc(sizeof(float) * (size_t)(n_comp * P)))) {
        rc = failure("out of memory");
        goto done;
    }
    if (circuits_resid_labels(m, cache, kind, &ro, label_buf, need, NULL) != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    if (!(labels = split_labels(label_buf, n_comp))) {
        rc = failure("out of memory");
        goto done;
    }
    if (dla) {
        if (circuits_direct_logit_attribution(m, cache, kind, &ro, ids + 1, NULL, P, grid, (size_t)(n_comp * P)) !=
            CIRCUITS_OK) {
            rc = lib_failure("direct logit attribution");
            goto done;
        }
    } else {
        /* one position at a time: the logits of every component at every position would be
         * n_comp x P x d_vocab floats (a quarter of a GB for GPT-2 on 100 tokens) */
        size_t n_lens = (size_t)(n_comp * V);
        if (!(lens = malloc(sizeof(float) * n_lens))) {
            rc = failure("out of memory");
            goto done;
        }
        ro.n_positions = 1;
        for (int64_t p = 0; p < P; p++) {
            ro.positions = positions + p;
            if (circuits_logit_lens(m, cache, &ro, lens, n_lens) != CIRCUITS_OK) {
                rc = lib_failure("logit lens");
                goto done;
            }
            for (int64_t k = 0; k < n_comp; k++) grid[k * P + p] = log_prob(lens + (size_t)k * V, V, ids[p + 1]);
        }
    }
    circuits_cache_free(cache); /* the run's activations are no longer needed */
    cache = NULL;

    char subtitle[512];
    picture_subtitle(subtitle, sizeof subtitle, c.model, c.prompt, T);
    bool drawn = false;
#ifdef CIRCUITS_CLI_CAIRO
    if (po.png) {
        rc = draw(po.png, dla, subtitle, grid, n_comp, P, labels, texts + 1);
        plot_release_fonts();
        if (rc) goto done;
        drawn = true;
    }
#endif

    if (po.html && (rc = page(po.html, dla, c.model, subtitle, grid, n_comp, P, labels, texts, T, ptl))) goto done;

    const char *what = dla ? "direct logit attribution" : "log_prob";
    char shown[512];
    if (c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"kind\":\"%s\",\"tokens\":[", dla ? "dla" : "logit_lens");
        for (int64_t i = 0; i < T; i++) {
            printf("%s{\"id\":%d,\"text\":", i ? "," : "", ids[i]);
            if (tok) json_cstr(stdout, texts[i]);
            else printf("null");
            printf(",\"loss\":");
            if (i == 0) printf("null");
            else json_num(stdout, ptl[i - 1]);
            printf("}");
        }
        printf("],\"components\":[");
        for (int64_t k = 0; k < n_comp; k++) {
            if (k) putchar(',');
            json_cstr(stdout, labels[k]);
        }
        printf("],\"positions\":[");
        for (int64_t p = 0; p < P; p++) printf("%s%lld", p ? "," : "", (long long)p);
        printf("],\"values\":");
        json_grid(grid, n_comp, P);
        json_outputs(drawn ? po.png : NULL, po.html);
    } else {
        printf("%s of the next token at each position (%lld positions), by %s\n", what, (long long)P,
               dla ? "component" : "layer (the residual stream before it; final_post: after the last)");
        printf("  pos  next token      ");
        for (int64_t k = 0; k < n_comp; k++) printf(" %10.10s", labels[k]);
        printf("\n");
        for (int64_t p = 0; p < P; p++) {
            quoted(tok, ids[p + 1], shown, sizeof shown);
            printf("  %3lld  %-16s", (long long)p, shown);
            for (int64_t k = 0; k < n_comp; k++) printf(" %10.4f", (double)grid[k * P + p]);
            printf("\n");
        }
        if (drawn) printf("wrote %s\n", po.png);
        if (po.html) printf("wrote %s\n", po.html);
    }
done:
    free(lens);
    free(grid);
    free(labels);
    free(label_buf);
    free(positions);
    free(ptl);
    free_texts(texts, T);
    free(ids);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_tokenizer_free(own_tok);
    circuits_model_free(m);
    return rc;
}
