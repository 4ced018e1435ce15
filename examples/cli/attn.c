/* circuits attn MODEL: the attention patterns of chosen heads of one layer on a prompt, as a
 * table (each query's most attended key), JSON, heatmap PNGs with the tokens on both axes, and
 * an interactive HTML view. */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef CIRCUITS_CLI_CAIRO
#include "../plot.h"
#endif

static void usage(void)
{
    printf("usage: circuits attn MODEL (--prompt TEXT | --tokens IDS) --layer L [--head H ...]\n"
           "                           [--png FILE.png] [--html FILE.html] [--tokenizer FILE] [--no-bos]\n"
           "                           [--no-processing] [--no-mmap] [--json]\n"
           "\n"
           "The attention patterns (blocks.L.attn.hook_pattern) of heads of layer L on one sequence:\n"
           "for each query position, how much it attends to each key position. Prints each query's\n"
           "most attended key.\n"
           "\n"
           "  --layer L          the layer (0 .. n_layers - 1)\n"
           "  --head H           a head of that layer (repeatable; default: every head)\n"
           "  --png FILE.png     a heatmap (query x key, the tokens on both axes); with several\n"
           "                     heads one file per head: FILE-L1H0.png, FILE-L1H1.png, ...\n"
           "  --html FILE.html   an interactive view of every chosen head (hover a token to see\n"
           "                     where it attends; switch heads), self-contained\n"
           "  --tokenizer FILE   tokenize --prompt with this tokenizer instead of the model's\n"
           "                     (e.g. examples/train/tokenizer.json for the bundled byte-level models)\n"
           "  --no-bos           no BOS token before --prompt\n"
           "  --no-processing    load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap          read the weight files into memory instead of mapping them\n"
           "  --json             one JSON object on stdout (with every pattern)\n");
}

#ifdef CIRCUITS_CLI_CAIRO
static int draw(const char *path, const char *title, const char *subtitle, const float *pat, int64_t T,
                char *const *texts)
{
    plot_heatmap_spec s = {.title = title, .subtitle = subtitle, .data = pat, .rows = (int)T, .cols = (int)T,
                           .x_label = "key (attended to)", .y_label = "query (attending)",
                           .value_label = "attention", .scale = PLOT_SCALE_SEQUENTIAL, .has_range = 1,
                           .vmin = 0.0f, .vmax = 1.0f, .mask_upper = 1};
    return picture_heatmap(path, &s, texts, true);
}
#endif

int cmd_attn(int argc, char **argv)
{
    common c = {0};
    picture_opts po = {0};
    long long layer = -1;
    int given[256], *heads = given, n_heads = 0;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        long long h;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, true)) || (r = picture_opt(&a, &po))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--layer", &v))) {
            if (r < 0 || parse_int("--layer", v, 0, INT_MAX, &layer)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--head", &v))) {
            if (r < 0 || parse_int("--head", v, 0, INT_MAX, &h)) return EXIT_USAGE;
            if (n_heads == (int)(sizeof given / sizeof given[0])) return usage_error("--head: at most 256 heads");
            heads[n_heads++] = (int)h;
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    int rc = common_check(&c, true);
    if (rc) return rc;
    if (layer < 0) return usage_error("needs --layer L");
    if ((rc = picture_check(&po))) return rc;
    circuits_model *m;
    circuits_config cfg;
    if ((rc = load_model(&c, &m, &cfg))) return rc;
    circuits_tokenizer *own_tok = NULL;
    const circuits_tokenizer *tok = NULL;
    circuits_context *ctx = NULL;
    circuits_cache *cache = NULL;
    int32_t *ids = NULL;
    int64_t T = 0;
    char **texts = NULL;
    float *pat = NULL;
    char (*pngs)[4096] = NULL;
    int n_png = 0;
    if (layer >= cfg.n_layers) {
        rc = failure("--layer %lld: the model has %d layers (0 .. %d)", layer, cfg.n_layers, cfg.n_layers - 1);
        goto done;
    }
    for (int k = 0; k < n_heads; k++)
        if (heads[k] >= cfg.n_heads) {
            rc = failure("--head %d: layer %lld has %d heads (0 .. %d)", heads[k], layer, cfg.n_heads,
                         cfg.n_heads - 1);
            goto done;
        }
    if (n_heads == 0) { /* every head of the layer, however many */
        if (!(heads = malloc(sizeof *heads * (size_t)cfg.n_heads))) {
            heads = given;
            rc = failure("out of memory");
            goto done;
        }
        for (int h = 0; h < cfg.n_heads; h++) heads[n_heads++] = h;
    }
    if ((rc = picture_tokenizer(&po, m, &own_tok, &tok)) ||
        (rc = picture_tokens(c.model, &cfg, tok, !c.no_bos, "--prompt", c.prompt, "--tokens", c.tokens, &ids, &T)))
        goto done;
    if (!(texts = token_texts(tok, ids, T)) ||
        !(pat = malloc(sizeof(float) * (size_t)n_heads * (size_t)(T * T))) ||
        !(pngs = calloc((size_t)n_heads, sizeof *pngs))) {
        rc = failure("out of memory");
        goto done;
    }
    char hook[64];
    snprintf(hook, sizeof hook, "blocks.%lld.attn.hook_pattern", layer);
    const char *filter[] = {hook};
    circuits_tensor t;
    if (circuits_context_create(&ctx, m, NULL) != CIRCUITS_OK || circuits_cache_create(&cache) != CIRCUITS_OK ||
        circuits_context_run_with_cache(ctx, ids, 1, T, filter, 1, cache, NULL, NULL, NULL) != CIRCUITS_OK ||
        circuits_cache_get(cache, hook, &t) != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    /* [batch 1, head, query, key] into [chosen head, query, key] */
    for (int k = 0; k < n_heads; k++)
        for (int64_t q = 0; q < T; q++)
            for (int64_t j = 0; j < T; j++)
                pat[((size_t)k * T + q) * T + j] =
                    t.data[heads[k] * t.strides[1] + q * t.strides[2] + j * t.strides[3]];

    char subtitle[512];
    picture_subtitle(subtitle, sizeof subtitle, c.model, c.prompt, T);
#ifdef CIRCUITS_CLI_CAIRO
    for (int k = 0; po.png && k < n_heads; k++) {
        char name[32], title[96];
        snprintf(name, sizeof name, "L%lldH%d", layer, heads[k]);
        snprintf(title, sizeof title, "Attention pattern of head %s", name);
        picture_path(pngs[n_png], sizeof pngs[n_png], po.png, n_heads > 1 ? name : NULL);
        if ((rc = draw(pngs[n_png], title, subtitle, pat + (size_t)k * T * T, T, texts))) break;
        n_png++;
    }
    if (po.png) plot_release_fonts();
    if (rc) goto done;
#endif

    if (po.html) {
        char **names = calloc((size_t)n_heads, sizeof *names);
        for (int k = 0; names && k < n_heads; k++) {
            if (!(names[k] = malloc(32))) { /* else the library would call names[k] a NULL argument */
                free_texts(names, n_heads);
                names = NULL;
                break;
            }
            snprintf(names[k], 32, "L%lldH%d", layer, heads[k]);
        }
        char title[96];
        snprintf(title, sizeof title, "Attention patterns of layer %lld", layer);
        circuits_vis_options vo;
        circuits_vis_options_init(&vo);
        vo.title = title;
        vo.subtitle = subtitle;
        char *html = NULL;
        size_t len = 0;
        if (!names) rc = failure("out of memory");
        else if (circuits_vis_attention_patterns(&html, &len, (const char *const *)texts, T, pat, n_heads,
                                                 (const char *const *)names, &vo) != CIRCUITS_OK)
            rc = lib_failure("--html");
        else rc = write_page(po.html, html, len);
        free_texts(names, names ? n_heads : 0);
        if (rc) goto done;
    }

    char shown[512], shown2[512];
    if (c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"layer\":%lld,\"heads\":[", layer);
        for (int k = 0; k < n_heads; k++) printf("%s%d", k ? "," : "", heads[k]);
        printf("],\"tokens\":[");
        for (int64_t i = 0; i < T; i++) {
            printf("%s{\"id\":%d,\"text\":", i ? "," : "", ids[i]);
            if (tok) json_cstr(stdout, texts[i]);
            else printf("null");
            printf("}");
        }
        printf("],\"patterns\":[");
        for (int k = 0; k < n_heads; k++) {
            if (k) putchar(',');
            json_grid(pat + (size_t)k * T * T, T, T);
        }
        printf("],\"png\":[");
        for (int i = 0; i < n_png; i++) {
            if (i) putchar(',');
            json_cstr(stdout, pngs[i]);
        }
        printf("],\"html\":");
        if (po.html) json_cstr(stdout, po.html);
        else printf("null");
        printf("}\n");
    } else {
        printf("attention of layer %lld on %lld tokens: each query's most attended key\n", layer, (long long)T);
        for (int k = 0; k < n_heads; k++) {
            printf("\nL%lldH%d\n  query  token             key  token             attention\n", layer, heads[k]);
            for (int64_t q = 0; q < T; q++) {
                const float *row = pat + ((size_t)k * T + q) * T;
                int64_t best = 0;
                for (int64_t j = 1; j <= q; j++)
                    if (row[j] > row[best]) best = j;
                quoted(tok, ids[q], shown, sizeof shown);
                quoted(tok, ids[best], shown2, sizeof shown2);
                printf("  %5lld  %-16s  %5lld  %-16s  %9.4f\n", (long long)q, shown, (long long)best, shown2,
                       (double)row[best]);
            }
        }
        for (int i = 0; i < n_png; i++) printf("wrote %s\n", pngs[i]);
        if (po.html) printf("wrote %s\n", po.html);
    }
done:
    if (heads != given) free(heads);
    free(pngs);
    free(pat);
    free_texts(texts, T);
    free(ids);
    circuits_cache_free(cache);
    circuits_context_free(ctx);
    circuits_tokenizer_free(own_tok);
    circuits_model_free(m);
    return rc;
}
