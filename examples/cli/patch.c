/* circuits patch MODEL: activation patching of a clean prompt into a corrupted one, the logit
 * difference of an answer over a wrong token recovered per cell (layer x position, or layer x
 * head): a table, JSON, a heatmap PNG and an interactive HTML grid. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef CIRCUITS_CLI_CAIRO
#include "../plot.h"
#endif

static void usage(void)
{
    printf("usage: circuits patch MODEL (--clean TEXT | --clean-tokens IDS) (--corrupt TEXT | --corrupt-tokens IDS)\n"
           "                            (--answer TOKEN | --answer-id ID) (--wrong TOKEN | --wrong-id ID)\n"
           "                            [--kind resid_pre|attn_out|mlp_out|heads] [--png FILE.png] [--html FILE.html]\n"
           "                            [--tokenizer FILE] [--no-bos] [--no-processing] [--no-mmap] [--json]\n"
           "\n"
           "Activation patching (circuits_context_activation_patch; TransformerLens's patching module):\n"
           "the corrupted prompt is run once per cell with the cell's activation taken from the clean\n"
           "run, and the logit difference answer - wrong at the last position is measured. Each cell\n"
           "shows how much of the clean logit difference it restores:\n"
           "  (patched - corrupted) / (clean - corrupted)   (1: all of it, 0: none)\n"
           "The two prompts must have the same number of tokens.\n"
           "\n"
           "  --kind K           resid_pre (default), attn_out or mlp_out: one cell per layer and\n"
           "                     position; heads: one cell per layer and head (its hook_z at every position)\n"
           "  --answer TOKEN     the correct next token, as text that is one token (--answer-id: its id)\n"
           "  --wrong TOKEN      the token it is compared with (--wrong-id: its id)\n"
           "  --png FILE.png     the grid as a heatmap (centred at 0)\n"
           "  --html FILE.html   the grid as a self-contained page (hover a cell for its value)\n"
           "  --tokenizer FILE   tokenize the texts with this tokenizer instead of the model's\n"
           "  --no-bos           no BOS token before --clean and --corrupt\n"
           "  --no-processing    load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap          read the weight files into memory instead of mapping them\n"
           "  --json             one JSON object on stdout\n");
}

static const struct {
    const char *name, *hook, *what;
    int kind;
} kinds[] = {
    {"resid_pre", "blocks.%d.hook_resid_pre", "the residual stream (resid_pre)", CIRCUITS_PATCH_RESID_PRE},
    {"attn_out", "blocks.%d.hook_attn_out", "attention outputs (attn_out)", CIRCUITS_PATCH_ATTN_OUT},
    {"mlp_out", "blocks.%d.hook_mlp_out", "MLP outputs (mlp_out)", CIRCUITS_PATCH_MLP_OUT},
    {"heads", "blocks.%d.attn.hook_z", "head outputs (z, every position)", CIRCUITS_PATCH_HEAD_Z_ALL_POS},
};

/* One token from --answer TEXT (tokenized without BOS: exactly one token) or --answer-id ID. */
static int one_token(const char *model, const circuits_config *cfg, const circuits_tokenizer *tok, const char *opt,
                     const char *text, const char *id_opt, const char *id_text, int32_t *out)
{
    if (!text) {
        long long v;
        if (parse_int(id_opt, id_text, 0, INT32_MAX, &v)) return EXIT_USAGE;
        if (v >= cfg->d_vocab_out)
            return failure("%s: %lld is outside the vocabulary [0, %d)", id_opt, v, cfg->d_vocab_out);
        *out = (int32_t)v;
        return 0;
    }
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = tokenize_text(tok, model, opt, id_opt, text, false, &ids, &n);
    if (rc) return rc;
    if (n != 1) {
        char first[256];
        token_display(tok, ids[0], first, sizeof first);
        free(ids);
        return failure("%s: '%s' is not one token of the vocabulary: it tokenizes to %lld tokens ('%s', ...); "
                       "give one token or %s ID",
                       opt, text, (long long)n, first, id_opt);
    }
    *out = ids[0];
    free(ids);
    if (*out >= cfg->d_vocab_out)
        return failure("%s: token %d is outside the model's output vocabulary [0, %d)", opt, *out, cfg->d_vocab_out);
    return 0;
}

/* The logit difference of a plain run. */
static int logit_diff(circuits_context *ctx, const circuits_metric *mt, const int32_t *ids, int64_t T, int64_t V,
                      float *logits, float *out)
{
    if (circuits_context_forward(ctx, ids, 1, T, logits, NULL, NULL) != CIRCUITS_OK ||
        circuits_metric_eval(mt, logits, 1, T, V, out) != CIRCUITS_OK)
        return lib_failure(NULL);
    return 0;
}

#ifdef CIRCUITS_CLI_CAIRO
static int draw(const char *path, const char *title, const char *subtitle, const float *grid, int rows, int cols,
                const char *const *row_labels, char *const *col_texts, bool heads)
{
    /* 1 (all of the clean logit diff) is the full colour unless a cell goes beyond */
    float lim = 1.0f;
    for (int i = 0; i < rows * cols; i++)
        if (isfinite(grid[i])) lim = fmaxf(lim, fabsf(grid[i]));
    plot_heatmap_spec s = {.title = title, .subtitle = subtitle, .data = grid, .rows = rows, .cols = cols,
                           .row_labels = row_labels, .x_label = heads ? "head" : "position (clean/corrupted token)",
                           .y_label = "layer", .value_label = "logit diff recovered",
                           .scale = PLOT_SCALE_DIVERGING, .has_range = 1, .vmin = -lim, .vmax = lim};
    return picture_heatmap(path, &s, col_texts, false); /* head names "H0".. print as they are */
}
#endif

int cmd_patch(int argc, char **argv)
{
    common c = {0};
    picture_opts po = {0};
    const char *clean = NULL, *clean_ids = NULL, *corrupt = NULL, *corrupt_ids = NULL;
    const char *answer = NULL, *answer_id = NULL, *wrong = NULL, *wrong_id = NULL;
    int kd = 0;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, false)) || (r = picture_opt(&a, &po)) ||
            (r = opt_value(&a, "--clean", &clean)) || (r = opt_value(&a, "--clean-tokens", &clean_ids)) ||
            (r = opt_value(&a, "--corrupt", &corrupt)) || (r = opt_value(&a, "--corrupt-tokens", &corrupt_ids)) ||
            (r = opt_value(&a, "--answer", &answer)) || (r = opt_value(&a, "--answer-id", &answer_id)) ||
            (r = opt_value(&a, "--wrong", &wrong)) || (r = opt_value(&a, "--wrong-id", &wrong_id))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_flag(&a, "--no-bos"))) {
            if (r < 0) return EXIT_USAGE;
            c.no_bos = true;
        } else if ((r = opt_value(&a, "--kind", &v))) {
            if (r < 0) return EXIT_USAGE;
            kd = -1;
            for (int k = 0; k < 4; k++)
                if (strcmp(v, kinds[k].name) == 0) kd = k;
            if (kd < 0) return usage_error("--kind: '%s' is not resid_pre, attn_out, mlp_out or heads", v);
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    int rc = common_check(&c, false);
    if (rc) return rc;
    static const char *const pairs[][2] = {
        {"--clean", "--clean-tokens"}, {"--corrupt", "--corrupt-tokens"}, {"--answer", "--answer-id"}, {"--wrong", "--wrong-id"}};
    const char *given[][2] = {{clean, clean_ids}, {corrupt, corrupt_ids}, {answer, answer_id}, {wrong, wrong_id}};
    for (int k = 0; k < 4; k++) {
        if (given[k][0] && given[k][1]) return usage_error("give %s or %s, not both", pairs[k][0], pairs[k][1]);
        if (!given[k][0] && !given[k][1]) return usage_error("needs %s or %s", pairs[k][0], pairs[k][1]);
    }
    if ((rc = picture_check(&po))) return rc;
    circuits_model *m;
    circuits_config cfg;
    if ((rc = load_model(&c, &m, &cfg))) return rc;
    circuits_tokenizer *own_tok = NULL;
    const circuits_tokenizer *tok = NULL;
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    int32_t *cl = NULL, *co = NULL, ans = 0, wr = 0;
    int64_t T = 0, Tc = 0, V = cfg.d_vocab_out;
    char **cl_texts = NULL, **co_texts = NULL, **col_texts = NULL, **row_texts = NULL;
    const float **clean_acts = NULL;
    float *logits = NULL, *raw = NULL, *grid = NULL;
    int rows = cfg.n_layers, cols = 0;
    bool heads = kinds[kd].kind == CIRCUITS_PATCH_HEAD_Z_ALL_POS;
    if (kinds[kd].kind == CIRCUITS_PATCH_MLP_OUT && cfg.attn_only) {
        rc = failure("--kind mlp_out: the model '%s' is attention-only (it has no MLPs)", c.model);
        goto done;
    }
    if ((rc = picture_tokenizer(&po, m, &own_tok, &tok)) ||
        (rc = picture_tokens(c.model, &cfg, tok, !c.no_bos, "--clean", clean, "--clean-tokens", clean_ids, &cl, &T)) ||
        (rc = picture_tokens(c.model, &cfg, tok, !c.no_bos, "--corrupt", corrupt, "--corrupt-tokens", corrupt_ids, &co,
                             &Tc)) ||
        (rc = one_token(c.model, &cfg, tok, "--answer", answer, "--answer-id", answer_id, &ans)) ||
        (rc = one_token(c.model, &cfg, tok, "--wrong", wrong, "--wrong-id", wrong_id, &wr)))
        goto done;
    if (T != Tc) {
        rc = failure("the clean prompt has %lld tokens and the corrupted one %lld: patching needs the same number",
                     (long long)T, (long long)Tc);
        goto done;
    }
    if (ans == wr) {
        rc = failure("--answer and --wrong are the same token (%d): the logit difference is always 0", ans);
        goto done;
    }
    cols = heads ? cfg.n_heads : (int)T;
    if (!(cl_texts = token_texts(tok, cl, T)) || !(co_texts = token_texts(tok, co, T)) ||
        !(col_texts = calloc((size_t)cols, sizeof *col_texts)) || !(row_texts = calloc((size_t)rows, sizeof *row_texts)) ||
        !(clean_acts = calloc((size_t)rows, sizeof *clean_acts)) || !(logits = malloc(sizeof(float) * (size_t)(T * V))) ||
        !(raw = malloc(sizeof(float) * (size_t)rows * (size_t)cols)) ||
        !(grid = malloc(sizeof(float) * (size_t)rows * (size_t)cols))) {
        rc = failure("out of memory");
        goto done;
    }
    /* column labels: head names, or the clean token ("clean/corrupted" where the prompts differ) */
    for (int j = 0; j < cols; j++) {
        size_t n = heads ? 16 : strlen(cl_texts[j]) + strlen(co_texts[j]) + 2;
        if (!(col_texts[j] = malloc(n))) {
            rc = failure("out of memory");
            goto done;
        }
        if (heads) snprintf(col_texts[j], n, "H%d", j);
        else if (cl[j] == co[j]) snprintf(col_texts[j], n, "%s", cl_texts[j]);
        else snprintf(col_texts[j], n, "%s/%s", cl_texts[j], co_texts[j]);
    }
    for (int l = 0; l < rows; l++) {
        if (!(row_texts[l] = malloc(16))) {
            rc = failure("out of memory");
            goto done;
        }
        snprintf(row_texts[l], 16, "%d", l);
    }

    circuits_metric mt;
    circuits_metric_init(&mt);
    mt.kind = CIRCUITS_METRIC_LOGIT_DIFF;
    mt.answer = &ans;
    mt.wrong = &wr;
    float ld_clean = NAN, ld_corrupt = NAN;
    if (circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK || circuits_cache_create(&cache) != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    if ((rc = logit_diff(ctx, &mt, cl, T, V, logits, &ld_clean)) ||
        (rc = logit_diff(ctx, &mt, co, T, V, logits, &ld_corrupt)))
        goto done;
    if (!(fabsf(ld_clean - ld_corrupt) > 1e-6f * fmaxf(1.0f, fabsf(ld_clean)))) {
        rc = failure("the clean and the corrupted prompt give the same logit difference (%g): nothing to recover",
                     (double)ld_clean);
        goto done;
    }
    const char *star = strchr(kinds[kd].hook, '%');
    char filter_name[64];
    snprintf(filter_name, sizeof filter_name, "blocks.*%s", star + 2); /* blocks.*.hook_resid_pre */
    const char *filter[] = {filter_name};
    if (circuits_context_run_with_cache(ctx, cl, 1, T, filter, 1, cache, NULL, NULL, NULL) != CIRCUITS_OK) {
        rc = lib_failure("the clean run");
        goto done;
    }
    for (int l = 0; l < rows; l++) {
        char name[64];
        circuits_tensor t;
        snprintf(name, sizeof name, kinds[kd].hook, l);
        if (circuits_cache_get(cache, name, &t) != CIRCUITS_OK) {
            rc = lib_failure("the clean run");
            goto done;
        }
        clean_acts[l] = t.data; /* the cache holds each activation contiguous */
    }
    if (circuits_context_activation_patch(ctx, kinds[kd].kind, co, 1, T, clean_acts, &mt, NULL, raw) != CIRCUITS_OK) {
        rc = lib_failure("activation patching");
        goto done;
    }
    for (int i = 0; i < rows * cols; i++) grid[i] = (raw[i] - ld_corrupt) / (ld_clean - ld_corrupt);

    char subtitle[600], clean_sub[512], title[512];
    picture_subtitle(clean_sub, sizeof clean_sub, c.model, clean, T);
    char ans_s[128], wr_s[128];
    token_display(tok, ans, ans_s, sizeof ans_s);
    token_display(tok, wr, wr_s, sizeof wr_s);
    if (!tok) snprintf(ans_s, sizeof ans_s, "%d", ans), snprintf(wr_s, sizeof wr_s, "%d", wr);
    snprintf(title, sizeof title, "Patching %s: logit diff '%s' - '%s' recovered", kinds[kd].what, ans_s, wr_s);
    int n_diff = 0;
    for (int64_t i = 0; i < T; i++) n_diff += cl[i] != co[i];
    snprintf(subtitle, sizeof subtitle, "%s clean, corrupted at %d position%s", clean_sub, n_diff, n_diff == 1 ? "" : "s");
    bool drawn = false;
#ifdef CIRCUITS_CLI_CAIRO
    if (po.png) {
        rc = draw(po.png, title, subtitle, grid, rows, cols, (const char *const *)row_texts, col_texts, heads);
        plot_release_fonts();
        if (rc) goto done;
        drawn = true;
    }
#endif

    if (po.html) {
        circuits_vis_options vo;
        circuits_vis_options_init(&vo);
        vo.title = title;
        vo.subtitle = subtitle;
        char *html = NULL;
        size_t len = 0;
        if (circuits_vis_grid(&html, &len, grid, rows, cols, (const char *const *)row_texts,
                              (const char *const *)col_texts, "layer", heads ? "head" : "position (clean/corrupted token)",
                              "logit diff recovered", &vo) != CIRCUITS_OK)
            rc = lib_failure("--html");
        else rc = write_page(po.html, html, len);
        if (rc) goto done;
    }

    if (c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"kind\":\"%s\",\"metric\":\"logit_diff\",\"answer\":{\"id\":%d,\"text\":", kinds[kd].name, ans);
        char rawtok[256];
        if (tok) json_str(stdout, rawtok, token_bytes(tok, ans, rawtok, sizeof rawtok));
        else printf("null");
        printf("},\"wrong\":{\"id\":%d,\"text\":", wr);
        if (tok) json_str(stdout, rawtok, token_bytes(tok, wr, rawtok, sizeof rawtok));
        else printf("null");
        printf("},\"clean_tokens\":[");
        for (int64_t i = 0; i < T; i++) printf("%s%d", i ? "," : "", cl[i]);
        printf("],\"corrupt_tokens\":[");
        for (int64_t i = 0; i < T; i++) printf("%s%d", i ? "," : "", co[i]);
        printf("],\"clean_logit_diff\":");
        json_num(stdout, ld_clean);
        printf(",\"corrupt_logit_diff\":");
        json_num(stdout, ld_corrupt);
        printf(",\"rows\":\"layer\",\"cols\":\"%s\",\"col_labels\":[", heads ? "head" : "position");
        for (int j = 0; j < cols; j++) {
            if (j) putchar(',');
            json_cstr(stdout, col_texts[j]);
        }
        printf("],\"shape\":[%d,%d],\"values\":", rows, cols);
        json_grid(grid, rows, cols);
        printf(",\"logit_diff\":");
        json_grid(raw, rows, cols);
        json_outputs(drawn ? po.png : NULL, po.html);
    } else {
        printf("activation patching of %s, %lld positions: logit diff '%s' - '%s' at the last position\n",
               kinds[kd].name, (long long)T, ans_s, wr_s);
        printf("clean %.4f, corrupted %.4f; each cell: (patched - corrupted) / (clean - corrupted)\n",
               (double)ld_clean, (double)ld_corrupt);
        printf("\nlayer");
        for (int j = 0; j < cols; j++) {
            char shown[32];
            if (heads) snprintf(shown, sizeof shown, "H%d", j);
            else snprintf(shown, sizeof shown, "%d", j);
            printf(" %7s", shown);
        }
        printf("\n");
        for (int l = 0; l < rows; l++) {
            printf("%5d", l);
            for (int j = 0; j < cols; j++) printf(" %7.3f", (double)grid[l * cols + j]);
            printf("\n");
        }
        if (drawn) printf("wrote %s\n", po.png);
        if (po.html) printf("wrote %s\n", po.html);
    }
done:
    free(grid);
    free(raw);
    free(logits);
    free(clean_acts);
    free_texts(row_texts, rows);
    free_texts(col_texts, cols);
    free_texts(co_texts, T);
    free_texts(cl_texts, T);
    free(co);
    free(cl);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_tokenizer_free(own_tok);
    circuits_model_free(m);
    return rc;
}
