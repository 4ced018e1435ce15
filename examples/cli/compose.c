/* circuits compose MODEL: Q/K/V composition scores between heads, as a table of the top pairs
 * and as heatmap PNGs. */
#include "cli.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef CIRCUITS_CLI_CAIRO
#include "../plot.h"
#endif

static void usage(void)
{
    printf("usage: circuits compose MODEL [--mode q|k|v|all] [--top N] [--png FILE.png]\n"
           "                              [--baseline-samples N] [--no-processing] [--no-mmap] [--json]\n"
           "\n"
           "Composition scores of every pair of heads (TransformerLens's all_composition_scores):\n"
           "||W_OV(A) R(B)||_F / (||W_OV(A)||_F ||R(B)||_F) for a writer head A in an earlier layer\n"
           "than the reader head B, with R = W_Q W_K^T (q), W_K W_Q^T (k) or W_V W_O (v). Lists the\n"
           "top pairs of each mode next to the score of random matrices of the same shapes.\n"
           "\n"
           "  --mode M               q, k, v or all (default all)\n"
           "  --top N                pairs to list per mode (default 10)\n"
           "  --png FILE.png         heatmaps (writer heads x reader heads); with several modes,\n"
           "                         one file per mode: FILE-q.png, FILE-k.png, FILE-v.png\n"
           "  --baseline-samples N   random draws for the baseline (default 20; 0: none)\n"
           "  --no-processing        load the weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap              read the weight files into memory instead of mapping them\n"
           "  --json                 one JSON object on stdout (with every score)\n");
}

typedef struct pair {
    float score;
    int la, ha, lb, hb;
} pair;

static int by_score(const void *a, const void *b)
{
    const pair *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->la != y->la) return x->la - y->la;
    if (x->ha != y->ha) return x->ha - y->ha;
    if (x->lb != y->lb) return x->lb - y->lb;
    return x->hb - y->hb;
}

static const char *const mode_names[] = {"q", "k", "v"};

#ifdef CIRCUITS_CLI_CAIRO
/* writer heads (layers 0 .. L-2) down, reader heads (layers 1 .. L-1) across; pairs that cannot
 * compose (the reader not in a later layer) are NaN (grey). With a baseline: white at its mean,
 * red above, blue below, and the cells above it outlined. */
static int heatmap(const char *path, const char *model, const char *mode, const float *s, const circuits_config *cfg,
                   float base, long long samples)
{
    int L = cfg->n_layers, H = cfg->n_heads, n = (L - 1) * H;
    float *grid = malloc(sizeof(float) * (size_t)n * (size_t)n);
    char **labels = calloc((size_t)(2 * n), sizeof *labels);
    if (!grid || !labels) {
        free(grid);
        free(labels);
        return failure("out of memory");
    }
    for (int i = 0; i < n; i++)     /* writer: layers 0 .. L-2 */
        for (int j = 0; j < n; j++) { /* reader: layers 1 .. L-1 */
            int la = i / H, ha = i % H, lb = 1 + j / H, hb = j % H;
            grid[(size_t)i * n + j] = la < lb ? s[(((size_t)la * H + ha) * L + lb) * H + hb] : NAN;
        }
    bool labelled = true;
    for (int i = 0; labelled && i < n; i++) {
        labels[i] = malloc(32);
        labels[n + i] = malloc(32);
        if (!labels[i] || !labels[n + i]) labelled = false;
        else {
            snprintf(labels[i], 32, "L%dH%d", i / H, i % H);
            snprintf(labels[n + i], 32, "L%dH%d", 1 + i / H, i % H);
        }
    }
    char title[64], sub[512], mark[96], value[64];
    snprintf(title, sizeof title, "%s-composition scores between heads", mode[0] == 'q' ? "Q" : mode[0] == 'k' ? "K" : "V");
    snprintf(value, sizeof value, "%s-composition score", mode[0] == 'q' ? "Q" : mode[0] == 'k' ? "K" : "V");
    snprintf(mark, sizeof mark, "random baseline %.3f (%lld samples)", (double)base, samples);
    if (samples > 0)
        snprintf(sub, sizeof sub, "%s, from the weights; white: the score of random matrices of the same shapes", model);
    else snprintf(sub, sizeof sub, "%s, from the weights", model);
    plot_heatmap_spec hs = {.title = title, .subtitle = sub, .data = grid, .rows = n, .cols = n,
                            .row_labels = labelled ? (const char *const *)labels : NULL,
                            .col_labels = labelled ? (const char *const *)labels + n : NULL,
                            .x_label = "reader head (later layer)", .y_label = "writer head", .value_label = value};
    if (samples > 0) {
        hs.scale = PLOT_SCALE_DIVERGING, hs.centre = base;
        hs.has_mark = 1, hs.mark = base, hs.mark_label = mark;
    } else {
        hs.scale = PLOT_SCALE_SEQUENTIAL;
    }
    int r = plot_heatmap(path, &hs);
    for (int i = 0; i < 2 * n; i++) free(labels[i]);
    free(labels);
    free(grid);
    if (r) return failure("cannot write the heatmap '%s'", path);
    return 0;
}
#endif

int cmd_compose(int argc, char **argv)
{
    common c = {0};
    long long top = 10, samples = 20;
    int mode = -1; /* all */
    const char *png = NULL;
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, false))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--top", &v))) {
            if (r < 0 || parse_int("--top", v, 1, INT_MAX, &top)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--baseline-samples", &v))) {
            if (r < 0 || parse_int("--baseline-samples", v, 0, 100000, &samples)) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--png", &v))) {
            if (r < 0) return EXIT_USAGE;
            png = v;
        } else if ((r = opt_value(&a, "--mode", &v))) {
            if (r < 0) return EXIT_USAGE;
            if (strcmp(v, "all") == 0) mode = -1;
            else if (strcmp(v, "q") == 0 || strcmp(v, "Q") == 0) mode = CIRCUITS_COMPOSITION_Q;
            else if (strcmp(v, "k") == 0 || strcmp(v, "K") == 0) mode = CIRCUITS_COMPOSITION_K;
            else if (strcmp(v, "v") == 0 || strcmp(v, "V") == 0) mode = CIRCUITS_COMPOSITION_V;
            else return usage_error("--mode: '%s' is not q, k, v or all", v);
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    int rc = common_check(&c, false);
    if (rc) return rc;
#ifndef CIRCUITS_CLI_CAIRO
    if (png) return failure("--png: built without cairo: PNG output unavailable; install libcairo2-dev and rebuild");
#endif
    circuits_model *m;
    circuits_config cfg;
    if ((rc = load_model(&c, &m, &cfg))) return rc;
    int L = cfg.n_layers, H = cfg.n_heads;
    size_t n = (size_t)L * H * L * H;
    int first = mode < 0 ? 0 : mode, last = mode < 0 ? 2 : mode;
    float *scores[3] = {NULL, NULL, NULL};
    pair *pairs = malloc(sizeof(pair) * (n ? n : 1));
    float mean = NAN, sd = NAN;
    progress pg;
    progress_begin(&pg, "compose", (last - first + 1) + (samples > 0));
    if (!pairs) {
        rc = failure("out of memory");
        goto done;
    }
    for (int md = first; md <= last; md++) {
        if (!(scores[md] = malloc(sizeof(float) * n))) {
            rc = failure("out of memory");
            goto done;
        }
        if (circuits_model_composition_scores(m, md, scores[md]) != CIRCUITS_OK) {
            rc = lib_failure(NULL);
            goto done;
        }
        progress_set(&pg, md - first + 1);
    }
    if (samples > 0 && circuits_composition_baseline(cfg.d_model, cfg.d_head, 0, samples, 0, &mean, &sd) != CIRCUITS_OK) {
        rc = lib_failure("baseline");
        goto done;
    }
    progress_end(&pg);

    /* the pictures first, so that the output can name them */
    char pngs[3][4096];
    int n_png = 0;
#ifdef CIRCUITS_CLI_CAIRO
    for (int md = first; png && L >= 2 && md <= last; md++) {
        picture_path(pngs[n_png], sizeof pngs[n_png], png, first != last ? mode_names[md] : NULL);
        rc = heatmap(pngs[n_png], c.model, mode_names[md], scores[md], &cfg, mean, samples);
        if (rc) break;
        n_png++;
    }
    if (png && L >= 2) plot_release_fonts();
    if (rc) goto done;
#endif

    if (c.json) {
        printf("{\"model\":");
        json_cstr(stdout, c.model);
        printf(",\"n_layers\":%d,\"n_heads\":%d,\"baseline\":{\"samples\":%lld,\"mean\":", L, H, samples);
        json_num(stdout, mean);
        printf(",\"std\":");
        json_num(stdout, sd);
        printf("},\"modes\":{");
    } else {
        printf("composition scores of %s (%d layers x %d heads)\n", c.model, L, H);
        if (samples > 0) printf("random baseline: %.4f +- %.4f (%lld samples)\n", (double)mean, (double)sd, samples);
        if (L < 2) printf("a 1-layer model has no composition: every score is 0\n");
    }
    for (int md = first; md <= last; md++) {
        size_t k = 0;
        for (int la = 0; la < L; la++)
            for (int ha = 0; ha < H; ha++)
                for (int lb = la + 1; lb < L; lb++)
                    for (int hb = 0; hb < H; hb++)
                        pairs[k++] = (pair){scores[md][(((size_t)la * H + ha) * L + lb) * H + hb], la, ha, lb, hb};
        qsort(pairs, k, sizeof *pairs, by_score);
        size_t shown = (size_t)top < k ? (size_t)top : k;
        if (c.json) {
            printf("%s\"%s\":{\"top\":[", md > first ? "," : "", mode_names[md]);
            for (size_t i = 0; i < shown; i++) {
                printf("%s{\"writer\":{\"layer\":%d,\"head\":%d},\"reader\":{\"layer\":%d,\"head\":%d},\"score\":",
                       i ? "," : "", pairs[i].la, pairs[i].ha, pairs[i].lb, pairs[i].hb);
                json_num(stdout, pairs[i].score);
                printf("}");
            }
            printf("],\"shape\":[%d,%d,%d,%d],\"scores\":[", L, H, L, H);
            for (size_t i = 0; i < n; i++) {
                if (i) putchar(',');
                json_num(stdout, scores[md][i]);
            }
            printf("]}");
        } else if (shown) {
            printf("\n%s-composition, top %zu of %zu pairs:\n  writer  reader     score%s\n",
                   md == 0 ? "Q" : md == 1 ? "K" : "V", shown, k, samples > 0 ? "  x baseline" : "");
            for (size_t i = 0; i < shown; i++) {
                printf("  L%dH%-4d L%dH%-4d %8.4f", pairs[i].la, pairs[i].ha, pairs[i].lb, pairs[i].hb,
                       (double)pairs[i].score);
                if (samples > 0) printf("  %10.2f", (double)(pairs[i].score / mean));
                printf("\n");
            }
        }
    }
    if (c.json) {
        printf("},\"png\":[");
        for (int i = 0; i < n_png; i++) {
            if (i) putchar(',');
            json_cstr(stdout, pngs[i]);
        }
        printf("]}\n");
    } else {
        for (int i = 0; i < n_png; i++) printf("wrote %s\n", pngs[i]);
        if (png && L < 2) printf("no heatmap: a 1-layer model has no composition\n");
    }
done:
    progress_end(&pg);
    for (int md = 0; md < 3; md++) free(scores[md]);
    free(pairs);
    circuits_model_free(m);
    return rc;
}
