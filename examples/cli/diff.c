/* circuits diff MODEL_A MODEL_B: both models on the same tokens, each hook point's error of B
 * against A by layer (quantization as an intervention, docs/quantization.md), as a table and a
 * line chart PNG. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef CIRCUITS_CLI_CAIRO
#include "../plot.h"
#endif

static void usage(void)
{
    printf("usage: circuits diff MODEL_A MODEL_B (--prompt TEXT | --tokens IDS) [--hooks FILTERS]\n"
           "                     [--measure rel|max|cos] [--png FILE.png] [--per-head] [--stored-a] [--stored-b]\n"
           "                     [--no-bos] [--no-processing] [--no-mmap] [--json]\n"
           "\n"
           "Runs both models on the same tokens and compares every hook point's activation of\n"
           "MODEL_B with MODEL_A's: the relative error ||b - a|| / ||a|| (Frobenius), the largest\n"
           "absolute difference and the cosine similarity, and the same for the logits. The\n"
           "models must have the same shapes (e.g. an F32 GGUF file and its Q4_K quantization).\n"
           "Prints a table: one row per hook point of a block, one column per layer.\n"
           "\n"
           "  --prompt TEXT    text, tokenized with MODEL_A's tokenizer (BOS first unless --no-bos)\n"
           "  --tokens IDS     token ids instead, e.g. 464,3290,318\n"
           "  --hooks FILTERS  hook points to compare, comma-separated names or patterns as\n"
           "                   run_with_cache takes them (e.g. 'blocks.*.hook_resid_post,mlp_out');\n"
           "                   default: every hook point\n"
           "  --measure M      the table's measure: rel (default), max (max |b - a|) or cos\n"
           "  --png FILE.png   a line chart of log10 relative error against layer, one line per\n"
           "                   hook point kind (with --hooks: those selected; else the residual\n"
           "                   stream, attention and MLP outputs, hook_z and hook_pattern); no file\n"
           "                   when none of them differs\n"
           "  --stored-a, --stored-b\n"
           "                   load that model with its weight matrices kept in their stored type\n"
           "                   (keep_stored_dtype; with --no-processing): e.g. one GGUF file as both\n"
           "                   models, dequantized at load against kept quantized\n"
           "  --per-head       also compare each head's slice of the points with a head axis\n"
           "                   (hook_q, hook_z, hook_pattern, ...): the JSON lists them all, the\n"
           "                   table is followed by the 10 heads with the largest relative error\n"
           "  --no-bos         do not prepend the BOS token to --prompt\n"
           "  --no-processing  load both models' weights as stored (from_pretrained_no_processing)\n"
           "  --no-mmap        read the weight files into memory instead of mapping them\n"
           "  --json           one JSON object on stdout, every entry with all three measures\n");
}

/* The hook point kinds of a block in the order the diff lists them (its firing order). */
typedef struct kinds {
    const char **name;
    size_t n;
} kinds;

static size_t kind_index(kinds *k, const char *name, bool add)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->name[i], name) == 0) return i;
    if (add) k->name[k->n] = name;
    return add ? k->n++ : (size_t)-1;
}

static double measure_of(const circuits_diff_entry *e, char m)
{
    return m == 'm' ? e->max_abs : m == 'c' ? e->cosine : e->rel_error;
}

/* "a,b,c" into n_names pointers into a malloc'ed copy; NULL on out of memory. */
static char **split_names(const char *s, size_t *n_names, char **copy)
{
    *copy = strdup(s);
    size_t n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    char **v = malloc(n * sizeof *v);
    if (!*copy || !v) {
        free(*copy);
        free(v);
        return NULL;
    }
    size_t k = 0;
    for (char *tok = strtok(*copy, ","); tok; tok = strtok(NULL, ",")) v[k++] = tok;
    *n_names = k;
    return v;
}

#ifdef CIRCUITS_CLI_CAIRO
static const char *const default_png_kinds[] = {"hook_resid_post", "hook_attn_out", "hook_mlp_out", "attn.hook_z",
                                                "attn.hook_pattern"};

/* log10 of each drawn kind's relative error against layer (a zero error has no logarithm: the
 * line skips it). *drawn: false when no drawn kind has a nonzero error (nothing to plot: no file). */
static int draw(const char *path, const char *title, const char *subtitle, const kinds *k, const double *grid, int L,
                bool all_kinds, bool *drawn)
{
    plot_series *s = calloc(k->n ? k->n : 1, sizeof *s);
    float *x = malloc(sizeof(float) * (size_t)(L ? L : 1)), *y = malloc(sizeof(float) * (k->n * (size_t)L + 1));
    char **layer = calloc((size_t)(L ? L : 1), sizeof *layer);
    bool ok = s && x && y && layer;
    for (int l = 0; ok && l < L; l++) ok = (layer[l] = malloc(16)) != NULL;
    if (!ok) {
        for (int l = 0; layer && l < L; l++) free(layer[l]);
        free(s), free(x), free(y), free(layer);
        return failure("out of memory");
    }
    for (int l = 0; l < L; l++) x[l] = (float)l, snprintf(layer[l], 16, "%d", l);
    int n = 0;
    *drawn = false;
    for (size_t i = 0; i < k->n; i++) {
        bool wanted = all_kinds;
        for (size_t j = 0; !wanted && j < sizeof default_png_kinds / sizeof *default_png_kinds; j++)
            wanted = strcmp(k->name[i], default_png_kinds[j]) == 0;
        if (!wanted) continue;
        float *yi = y + (size_t)n * L;
        for (int l = 0; l < L; l++) {
            double v = grid[i * (size_t)L + l];
            yi[l] = v > 0 && isfinite(v) ? (float)log10(v) : NAN;
            *drawn = *drawn || yi[l] == yi[l];
        }
        s[n++] = (plot_series){.label = k->name[i], .x = x, .y = yi, .n = L};
    }
    /* the layers as categories (0, 1, ..), so that no tick falls between two layers */
    plot_lines_spec spec = {.title = title, .subtitle = subtitle, .series = s, .n_series = n, .x_label = "layer",
                            .y_label = "log10 relative error ||b - a|| / ||a||",
                            .x_tick_labels = (const char *const *)layer, .n_x_tick_labels = L};
    int r = *drawn ? plot_lines(path, &spec) : 0;
    for (int l = 0; l < L; l++) free(layer[l]);
    free(s), free(x), free(y), free(layer);
    return r ? failure("cannot write the chart '%s'", path) : 0;
}
#endif

static int by_rel_error(const void *x, const void *y)
{
    const circuits_diff_entry *a = *(const circuits_diff_entry *const *)x, *b = *(const circuits_diff_entry *const *)y;
    if (a->rel_error != b->rel_error) return a->rel_error > b->rel_error ? -1 : 1;
    return (a > b) - (a < b); /* ties: firing order */
}

/* The 10 per-head entries with the largest relative error. */
static void print_heads(const circuits_diff_entry *e, size_t n)
{
    const circuits_diff_entry **h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (e[i].head >= 0) h[m++] = &e[i];
    qsort(h, m, sizeof *h, by_rel_error);
    printf("\nheads, largest relative error first (%zu of %zu):\n", m < 10 ? m : 10, m);
    for (size_t i = 0; i < m && i < 10; i++)
        printf("  %-32s head %-3d  %10.3e  cosine %.6f\n", h[i]->name, h[i]->head, h[i]->rel_error, h[i]->cosine);
    free(h);
}

int cmd_diff(int argc, char **argv)
{
    common c = {0};
    const char *model_b = NULL, *hooks = NULL, *png = NULL;
    char measure = 'r';
    bool stored_a = false, stored_b = false, per_head = false;
    bool drawn = false; /* --png wrote its file */
    args a = {argc, argv, 1};
    for (; a.i < argc; a.i++) {
        const char *v;
        int r;
        if (is_help(argv[a.i])) return usage(), 0;
        if ((r = common_opt(&a, &c, true))) {
            if (r < 0) return EXIT_USAGE;
        } else if ((r = opt_value(&a, "--hooks", &v))) {
            if (r < 0) return EXIT_USAGE;
            hooks = v;
        } else if ((r = opt_value(&a, "--png", &v))) {
            if (r < 0) return EXIT_USAGE;
            png = v;
        } else if ((r = opt_flag(&a, "--per-head"))) {
            if (r < 0) return EXIT_USAGE;
            per_head = true;
        } else if ((r = opt_flag(&a, "--stored-a")) || (r = opt_flag(&a, "--stored-b"))) {
            if (r < 0) return EXIT_USAGE;
            if (strcmp(argv[a.i], "--stored-a") == 0) stored_a = true;
            else stored_b = true;
        } else if ((r = opt_value(&a, "--measure", &v))) {
            if (r < 0) return EXIT_USAGE;
            if (strcmp(v, "rel") == 0 || strcmp(v, "max") == 0 || strcmp(v, "cos") == 0) measure = v[0];
            else return usage_error("--measure: '%s' is not rel, max or cos", v);
        } else if (c.model && !model_b && argv[a.i][0] != '-') {
            model_b = argv[a.i];
        } else if (common_positional(&a, &c) < 0) {
            return EXIT_USAGE;
        }
    }
    int rc = common_check(&c, true);
    if (rc) return rc;
    if (!model_b) return usage_error("needs two models: MODEL_A MODEL_B");
    if (hooks && (!hooks[0] || strstr(hooks, ",,") || hooks[0] == ',' || hooks[strlen(hooks) - 1] == ','))
        return usage_error("--hooks: '%s' has an empty name", hooks);
#ifndef CIRCUITS_CLI_CAIRO
    if (png) return failure("--png: built without cairo: PNG output unavailable; install libcairo2-dev and rebuild");
#endif
    if (c.tokens) { /* a malformed list is a usage error, found before loading anything */
        int32_t *ids;
        int64_t n;
        if ((rc = parse_ids("--tokens", c.tokens, &ids, &n))) return rc;
        free(ids);
    }
    circuits_model *ma = NULL, *mb = NULL;
    circuits_config cfg, cfg_b;
    common ca = c, cb = c;
    ca.keep_stored = stored_a;
    cb.keep_stored = stored_b;
    cb.model = model_b;
    if ((rc = load_model(&ca, &ma, &cfg))) return rc;
    if ((rc = load_model(&cb, &mb, &cfg_b))) {
        circuits_model_free(ma);
        return rc;
    }
    int32_t *ids = NULL;
    int64_t T = 0;
    char *names_copy = NULL, **names = NULL;
    circuits_diff *d = NULL;
    kinds k = {0};
    double *grid = NULL;
    unsigned char *have = NULL; /* [kinds, layers]: the diff has that point */
    int L = cfg.n_layers;
    if ((rc = input_tokens(&c, ma, &ids, &T))) goto done;
    circuits_diff_options o;
    circuits_diff_options_init(&o);
    if (hooks) {
        if (!(names = split_names(hooks, &o.n_names, &names_copy))) {
            rc = failure("out of memory");
            goto done;
        }
        o.names = (const char *const *)names;
    }
    o.per_head = per_head;
    if (circuits_model_diff(ma, mb, ids, 1, T, &o, &d) != CIRCUITS_OK) {
        rc = lib_failure(NULL);
        goto done;
    }
    size_t n = circuits_diff_count(d);
    circuits_diff_entry *e = calloc(n ? n : 1, sizeof *e);
    k.name = calloc(n ? n : 1, sizeof *k.name);
    if (!e || !k.name) {
        free(e);
        rc = failure("out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        e[i].size = sizeof e[i];
        circuits_diff_at(d, i, &e[i]); /* i < count: cannot fail */
        if (e[i].layer >= 0 && e[i].head < 0) kind_index(&k, e[i].kind, true);
    }
    /* grid [kinds, layers] of the table's measure, and of the relative error for the chart */
    grid = malloc(sizeof(double) * (2 * k.n * (size_t)L + 1));
    have = calloc(k.n * (size_t)L + 1, 1);
    if (!grid || !have) {
        free(e);
        rc = failure("out of memory");
        goto done;
    }
    double *rel = grid + k.n * (size_t)L;
    for (size_t i = 0; i < 2 * k.n * (size_t)L; i++) grid[i] = NAN;
    for (size_t i = 0; i < n; i++)
        if (e[i].layer >= 0 && e[i].head < 0) {
            size_t r = kind_index(&k, e[i].kind, false);
            grid[r * L + (size_t)e[i].layer] = measure_of(&e[i], measure);
            rel[r * L + (size_t)e[i].layer] = e[i].rel_error;
            have[r * L + (size_t)e[i].layer] = 1;
        }
#ifdef CIRCUITS_CLI_CAIRO
    if (png) {
        char sub[1024];
        snprintf(sub, sizeof sub, "a: %s, b: %s; %lld tokens", c.model, model_b, (long long)T);
        rc = draw(png, "Relative error of each hook point, by layer", sub, &k, rel, L, hooks != NULL, &drawn);
        plot_release_fonts();
        if (rc) {
            free(e);
            goto done;
        }
    }
#endif
    if (c.json) {
        printf("{\"model_a\":");
        json_cstr(stdout, c.model);
        printf(",\"model_b\":");
        json_cstr(stdout, model_b);
        printf(",\"tokens\":[");
        for (int64_t i = 0; i < T; i++) printf("%s%d", i ? "," : "", ids[i]);
        printf("],\"entries\":[");
        for (size_t i = 0; i < n; i++) {
            printf("%s{\"name\":", i ? "," : "");
            json_cstr(stdout, e[i].name);
            printf(",\"kind\":");
            json_cstr(stdout, e[i].kind);
            printf(",\"layer\":%d,\"head\":%d,\"numel\":%lld,\"rel_error\":", e[i].layer, e[i].head,
                   (long long)e[i].numel);
            json_num(stdout, e[i].rel_error);
            printf(",\"max_abs\":");
            json_num(stdout, e[i].max_abs);
            printf(",\"cosine\":");
            json_num(stdout, e[i].cosine);
            printf("}");
        }
        printf("],\"png\":");
        if (drawn) json_cstr(stdout, png);
        else printf("null");
        printf("}\n");
    } else {
        static const char *const titles[] = {"relative error ||b - a|| / ||a||", "max |b - a|", "cosine similarity"};
        printf("%s (a) vs %s (b), %lld tokens: %s by layer\n\n", c.model, model_b, (long long)T,
               titles[measure == 'r' ? 0 : measure == 'm' ? 1 : 2]);
        int w = 16;
        for (size_t i = 0; i < n; i++) {
            int len = (int)strlen(e[i].layer >= 0 ? e[i].kind : e[i].name);
            w = len > w ? len : w;
        }
        if (k.n) {
            printf("%-*s", w, "hook point");
            for (int l = 0; l < L; l++) {
                char col[16];
                snprintf(col, sizeof col, "L%d", l);
                printf("  %10s", col);
            }
            printf("\n");
        }
        for (size_t i = 0; i < k.n; i++) {
            printf("%-*s", w, k.name[i]);
            for (int l = 0; l < L; l++) {
                double v = grid[i * L + (size_t)l];
                if (!have[i * L + (size_t)l]) printf("  %10s", "-");
                else printf("  %10.3e", v);
            }
            printf("\n");
        }
        bool outside = false;
        for (size_t i = 0; i < n; i++)
            if (e[i].layer < 0 && e[i].head < 0) {
                if (!outside) printf("%s%-*s  %10s  %10s  %10s\n", k.n ? "\n" : "", w, "outside blocks", "rel error",
                                     "max |b-a|", "cosine");
                outside = true;
                printf("%-*s  %10.3e  %10.3e  %10.6f\n", w, e[i].name, e[i].rel_error, e[i].max_abs, e[i].cosine);
            }
        if (per_head) print_heads(e, n);
        if (drawn) printf("\nwrote %s\n", png);
        else if (png) printf("\nno chart: no hook point of a block drawn differs (every relative error 0 or not finite)\n");
    }
    free(e);
done:
    free(grid);
    free(have);
    free(k.name);
    circuits_diff_free(d);
    free(names);
    free(names_copy);
    free(ids);
    circuits_model_free(mb);
    circuits_model_free(ma);
    return rc;
}
